//! What a smooth profile does not have: a surplus that moves in steps, and a plant meter that
//! reports it late, coarsely and now and then.
//!
//! * [`StepSettings`] -> [`Disturbance`]: seeded lasting steps (a plant's compressor starts, a
//!   unit runs back, a day-ahead block changes) and short dips (an event, a trip elsewhere), as a
//!   factor on any profile;
//! * [`MeterSettings`]: the surplus meter's update period, delay, jitter and resolution;
//! * [`IdealFollower`]: the step-following ideal, a fleet whose every model moves to
//!   min(reading, capacity) as fast as its firmware can (setpoint delay, then its ramps), from the
//!   readings the controller was given. Its absorption is the most a controller could reach on
//!   that meter, and its import is the physical floor: what no controller could avoid.

use std::collections::VecDeque;
use std::time::Duration;

use hashsink_core::Fleet;
use hashsink_units::{Timestamp, Watts};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Seeded step disturbances on top of a profile. Ranges are drawn uniformly.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepSettings {
    /// Share of the surplus a dip takes away (0.10..0.45 takes 10 to 45 %).
    pub dip_depth: (f64, f64),
    pub dip_length: (Duration, Duration),
    /// Time from the end of one dip to the start of the next.
    pub dip_gap: (Duration, Duration),
    /// A lasting step sets the surplus to this share of the profile (0.7..1.0).
    pub step_level: (f64, f64),
    /// Time between lasting steps.
    pub step_gap: (Duration, Duration),
}

impl Default for StepSettings {
    /// The stepped surplus: dips of 10-45 % for 5-60 s and lasting steps, each every
    /// 5-30 minutes.
    fn default() -> Self {
        Self {
            dip_depth: (0.10, 0.45),
            dip_length: (Duration::from_secs(5), Duration::from_secs(60)),
            dip_gap: (Duration::from_secs(300), Duration::from_secs(1800)),
            step_level: (0.70, 1.0),
            step_gap: (Duration::from_secs(300), Duration::from_secs(1800)),
        }
    }
}

impl StepSettings {
    /// Checks the ranges; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let (d0, d1) = self.dip_depth;
        if !(0.0..=1.0).contains(&d0) || !(d0..=1.0).contains(&d1) {
            return Err(format!(
                "dip depth {d0}..{d1} must lie within 0..1, low first"
            ));
        }
        let (l0, l1) = self.step_level;
        if !(0.0..=1.0).contains(&l0) || !(l0..=1.0).contains(&l1) {
            return Err(format!(
                "step level {l0}..{l1} must lie within 0..1, low first"
            ));
        }
        for (name, (a, b)) in [
            ("dip length", self.dip_length),
            ("dip gap", self.dip_gap),
            ("step gap", self.step_gap),
        ] {
            if a > b || b.is_zero() {
                return Err(format!("{name} {a:?}..{b:?}: low first, and not zero"));
            }
        }
        Ok(())
    }
}

fn draw_duration(rng: &mut ChaCha8Rng, (a, b): (Duration, Duration)) -> Duration {
    let ms = rng.random_range(a.as_millis() as u64..=b.as_millis() as u64);
    // Whole seconds: the twin samples every second, and a step between samples would be seen
    // late by every controller alike.
    Duration::from_secs(ms.div_ceil(1000).max(1))
}

fn draw(rng: &mut ChaCha8Rng, (a, b): (f64, f64)) -> f64 {
    if a == b { a } else { rng.random_range(a..=b) }
}

/// A drawn disturbance: a piecewise-constant factor on the profile.
#[derive(Clone, Debug, Default)]
pub struct Disturbance {
    /// (from, level): the lasting level from this time on.
    levels: Vec<(Timestamp, f64)>,
    /// (start, end, kept share) of each dip.
    dips: Vec<(Timestamp, Timestamp, f64)>,
}

impl Disturbance {
    /// No disturbance: a factor of 1 everywhere.
    pub fn none() -> Self {
        Self::default()
    }

    /// Draws the steps and dips of `[start, start + duration)` from `seed`.
    pub fn draw(settings: &StepSettings, seed: u64, start: Timestamp, duration: Duration) -> Self {
        let end = start + duration;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5745_5053_5445_5053);
        let mut levels = vec![(start, 1.0)];
        let mut t = start + draw_duration(&mut rng, settings.step_gap);
        while t < end {
            levels.push((t, draw(&mut rng, settings.step_level)));
            t += draw_duration(&mut rng, settings.step_gap);
        }
        let mut dips = Vec::new();
        let mut t = start + draw_duration(&mut rng, settings.dip_gap);
        while t < end {
            let len = draw_duration(&mut rng, settings.dip_length);
            let kept = 1.0 - draw(&mut rng, settings.dip_depth);
            dips.push((t, t + len, kept));
            t = t + len + draw_duration(&mut rng, settings.dip_gap);
        }
        Self { levels, dips }
    }

    pub fn dips(&self) -> usize {
        self.dips.len()
    }
    pub fn steps(&self) -> usize {
        self.levels.len().saturating_sub(1)
    }

    /// A forward-only reader.
    pub fn cursor(&self) -> DisturbanceCursor<'_> {
        DisturbanceCursor {
            d: self,
            level: 0,
            dip: 0,
        }
    }
}

/// Reads a [`Disturbance`] at non-decreasing times.
pub struct DisturbanceCursor<'a> {
    d: &'a Disturbance,
    level: usize,
    dip: usize,
}

impl DisturbanceCursor<'_> {
    /// The factor on the profile at `t` (1 with no disturbance).
    pub fn factor(&mut self, t: Timestamp) -> f64 {
        let levels = &self.d.levels;
        while self.level + 1 < levels.len() && levels[self.level + 1].0 <= t {
            self.level += 1;
        }
        let level = levels
            .get(self.level)
            .filter(|l| l.0 <= t)
            .map_or(1.0, |l| l.1);
        let dips = &self.d.dips;
        while self.dip < dips.len() && dips[self.dip].1 <= t {
            self.dip += 1;
        }
        let kept = dips.get(self.dip).filter(|d| d.0 <= t).map_or(1.0, |d| d.2);
        level * kept
    }
}

/// The plant meter the controller reads the surplus from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MeterSettings {
    /// How often the meter updates (Modbus polls about every second, SCADA every 2-4 s). `None`:
    /// every twin sample.
    pub period: Option<Duration>,
    /// From the measurement to its arrival at the controller.
    pub delay: Duration,
    /// A further delay drawn uniformly from zero to this, per reading (readings never overtake
    /// each other).
    pub jitter: Duration,
    /// The reading is rounded to a multiple of this (zero: exact).
    pub resolution: Watts,
}

impl Default for MeterSettings {
    /// A perfect meter: read every sample, at once, exactly.
    fn default() -> Self {
        Self {
            period: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            resolution: Watts::ZERO,
        }
    }
}

impl MeterSettings {
    /// The longest from a change of the surplus to a reading of it reaching the controller.
    pub fn worst_lag(&self) -> Duration {
        self.period.unwrap_or_default() + self.delay + self.jitter
    }

    pub fn quantise(&self, value: Watts) -> Watts {
        let r = self.resolution.w();
        if r > 0.0 {
            Watts((value.w() / r).round() * r)
        } else {
            value
        }
    }
}

/// One model's share of the step-following ideal.
struct IdealGroup {
    /// This group's share of the fleet's maximum power.
    share: f64,
    capacity: Watts,
    setpoint_delay: Duration,
    /// The group's ramp rates, all its miners together (W/s).
    ramp_up: f64,
    ramp_down: f64,
    load: Watts,
}

impl IdealGroup {
    /// Moves the load toward `aim` for `secs` seconds at the ramp rates.
    fn advance(&mut self, aim: Watts, secs: f64) {
        let change = aim - self.load;
        self.load += if change >= Watts::ZERO {
            change.min(Watts(self.ramp_up * secs))
        } else {
            change.max(Watts(-self.ramp_down * secs))
        };
    }
}

/// The step-following ideal (see the module documentation). Fed once per twin sample.
pub struct IdealFollower {
    groups: Vec<IdealGroup>,
    capacity: Watts,
    /// Readings the controller was given, (arrival, value), kept as long as the longest
    /// setpoint delay needs.
    readings: VecDeque<(Timestamp, Watts)>,
    keep: Duration,
    absorbed_wh: f64,
    import_wh: f64,
}

/// The ideal's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct IdealKpis {
    /// The ideal's absorption, % of reachable surplus (same denominator as the run's).
    pub absorption_pct: f64,
    pub absorbed_mwh: f64,
    /// The physical floor: the ideal's import, MWh.
    pub floor_import_mwh: f64,
    /// The floor as a share of the ideal's absorbed energy, %.
    pub floor_import_pct_of_absorbed: f64,
}

impl IdealFollower {
    pub fn new(fleet: &Fleet) -> Self {
        let capacity = fleet.max_power();
        let mut groups: Vec<IdealGroup> = fleet
            .specs
            .iter()
            .map(|s| IdealGroup {
                share: 0.0,
                capacity: Watts::ZERO,
                setpoint_delay: s.setpoint_delay,
                ramp_up: 0.0,
                ramp_down: 0.0,
                load: Watts::ZERO,
            })
            .collect();
        for id in &fleet.miner_spec {
            let spec = &fleet.specs[id.0 as usize];
            let g = &mut groups[id.0 as usize];
            g.capacity += spec.max_power();
            g.ramp_up += spec.ramp_up_w_per_s;
            g.ramp_down += spec.ramp_down_w_per_s;
        }
        groups.retain(|g| g.capacity > Watts::ZERO);
        for g in &mut groups {
            g.share = g.capacity / capacity;
        }
        let keep = groups
            .iter()
            .map(|g| g.setpoint_delay)
            .max()
            .unwrap_or_default();
        Self {
            groups,
            capacity,
            readings: VecDeque::new(),
            keep,
            absorbed_wh: 0.0,
            import_wh: 0.0,
        }
    }

    /// A reading the controller was given at `at`.
    pub fn reading(&mut self, at: Timestamp, value: Watts) {
        self.readings.push_back((at, value));
    }

    /// Advances the ideal to `now`, one sample of length `dt` after the last, and integrates
    /// that sample with the true surplus (as the run's KPIs do: the load at `now` held for `dt`).
    ///
    /// A model's load moves toward min(reading, capacity), its share of it, from its setpoint
    /// delay after each reading's arrival, at its ramp rates. A reading that arrives at `now`
    /// has had no time to act: the load at `now` is still the old one, as a real miner's is
    /// when the command goes out at `now`.
    pub fn add(&mut self, now: Timestamp, dt: Duration, truth: Watts) {
        let from = now - dt;
        let mut load = Watts::ZERO;
        let capacity = self.capacity;
        for g in &mut self.groups {
            let share = g.share;
            let target = |value: Watts| value.positive_part().min(capacity) * share;
            // The reading in force at `from`, then each one that takes over before `now`.
            let first = self
                .readings
                .partition_point(|(at, _)| *at + g.setpoint_delay <= from);
            let mut t = from;
            let mut aim = first
                .checked_sub(1)
                .map_or(Watts::ZERO, |i| target(self.readings[i].1));
            for &(at, value) in self.readings.range(first..) {
                let takes_over = at + g.setpoint_delay;
                if takes_over >= now {
                    break;
                }
                g.advance(aim, takes_over.secs_since(t));
                t = takes_over;
                aim = target(value);
            }
            g.advance(aim, now.secs_since(t));
            load += g.load;
        }
        let hours = dt.as_secs_f64() / 3600.0;
        self.absorbed_wh += load.min(truth).w() * hours;
        self.import_wh += (load - truth).positive_part().w() * hours;
        // Keep one reading older than the longest delay: it is the one in force then.
        let horizon = now - self.keep;
        while self.readings.len() > 1 && self.readings[1].0 <= horizon {
            self.readings.pop_front();
        }
    }

    /// Totals, with the run's reachable energy (MWh) as the absorption denominator.
    pub fn finish(&self, reachable_mwh: f64) -> IdealKpis {
        let absorbed_mwh = self.absorbed_wh / 1e6;
        let floor_import_mwh = self.import_wh / 1e6;
        IdealKpis {
            absorption_pct: if reachable_mwh > 0.0 {
                100.0 * absorbed_mwh.min(reachable_mwh) / reachable_mwh
            } else {
                100.0
            },
            absorbed_mwh,
            floor_import_mwh,
            floor_import_pct_of_absorbed: if absorbed_mwh > 0.0 {
                100.0 * floor_import_mwh / absorbed_mwh
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashsink_core::{Catalogue, FleetConfig};

    fn s(x: i64) -> Timestamp {
        Timestamp::from_secs(1_000_000 + x)
    }

    #[test]
    fn the_same_seed_draws_the_same_steps() {
        let set = StepSettings::default();
        let day = Duration::from_secs(86_400);
        let a = Disturbance::draw(&set, 7, s(0), day);
        let b = Disturbance::draw(&set, 7, s(0), day);
        let c = Disturbance::draw(&set, 8, s(0), day);
        assert_eq!(a.levels, b.levels);
        assert_eq!(a.dips, b.dips);
        assert_ne!(a.dips, c.dips);
        // 5-30 min gaps over a day: between 48 and 288 of each.
        assert!((40..=290).contains(&a.dips()), "{}", a.dips());
        assert!((40..=290).contains(&a.steps()), "{}", a.steps());
        for &(start, end, kept) in &a.dips {
            let len = end.secs_since(start);
            assert!((5.0..=60.0).contains(&len), "{len}");
            assert!((0.55..=0.90).contains(&kept), "{kept}");
        }
    }

    #[test]
    fn the_factor_is_the_level_times_the_dip() {
        let d = Disturbance {
            levels: vec![(s(0), 1.0), (s(100), 0.8)],
            dips: vec![(s(50), s(60), 0.5), (s(110), s(115), 0.5)],
        };
        let mut c = d.cursor();
        let got: Vec<f64> = [0, 49, 50, 59, 60, 100, 110, 114, 115]
            .iter()
            .map(|&x| c.factor(s(x)))
            .collect();
        assert_eq!(got, [1.0, 1.0, 0.5, 0.5, 1.0, 0.8, 0.4, 0.4, 0.8]);
    }

    #[test]
    fn bad_ranges_are_named() {
        let set = StepSettings {
            dip_depth: (0.5, 0.2),
            ..Default::default()
        };
        assert!(set.validate().unwrap_err().contains("dip depth"));
        let set = StepSettings {
            step_gap: (Duration::ZERO, Duration::ZERO),
            ..Default::default()
        };
        assert!(set.validate().unwrap_err().contains("step gap"));
    }

    #[test]
    fn the_ideal_follows_a_step_after_the_firmware_delay_and_ramp() {
        // 10 stock S19j Pro: 40 s setpoint delay, 3000 W/s down each (the fleet's 30 kW/s take
        // it from full to half within one second).
        let fleet =
            FleetConfig::build_from_shorthand("s19jpro:10:stock", &Catalogue::bundled()).unwrap();
        let cap = fleet.max_power();
        let mut ideal = IdealFollower::new(&fleet);
        let one = Duration::from_secs(1);
        // Readings arrive every second; the surplus is the capacity, then half of it from 100 s.
        for x in 0..300 {
            let truth = if x < 100 { cap } else { cap * 0.5 };
            ideal.reading(s(x), truth);
            ideal.add(s(x), one, truth);
        }
        // The fall is read at 100 s and acted on 40 s later, at 140 s: the samples 100..=140
        // (41 of them) see the fleet at full power over half of it.
        let expected_wh = 0.5 * cap.w() * 41.0 / 3600.0;
        let k = ideal.finish(ideal.absorbed_wh / 1e6);
        assert!(
            (k.floor_import_mwh * 1e6 - expected_wh).abs() < 1e-6 * expected_wh,
            "{} Wh, expected {expected_wh}",
            k.floor_import_mwh * 1e6
        );
    }

    #[test]
    fn the_ideal_ramps_between_samples_and_waits_for_late_readings() {
        // 10 S21 on Braiins OS: no setpoint delay, 2000 W/s down and 200 W/s up each.
        let fleet =
            FleetConfig::build_from_shorthand("s21:10:braiins-os", &Catalogue::bundled()).unwrap();
        let cap = fleet.max_power();
        let mut ideal = IdealFollower::new(&fleet);
        let one = Duration::from_secs(1);
        // Full surplus until 10 s; a fall to a tenth, read 1.5 s late (at 11.5 s).
        ideal.reading(s(0), cap);
        for x in 0..10 {
            ideal.add(s(x), one, cap);
        }
        // Ramping up from zero at 2 kW/s in all: after 10 samples (0 s .. 9 s) it has had 9 s.
        assert!(
            (ideal.groups[0].load.w() - 18_000.0).abs() < 1e-6,
            "{}",
            ideal.groups[0].load
        );
        for x in 10..40 {
            ideal.add(s(x), one, cap);
        }
        assert_eq!(ideal.groups[0].load, cap);
        let before = ideal.import_wh;
        ideal.reading(Timestamp::from_millis(s(41).as_millis() + 500), cap * 0.1);
        for x in 40..60 {
            ideal.add(s(x), one, cap * 0.1);
        }
        // Samples 40 and 41 at full power; at 42 it has ramped down for 0.5 s at 20 kW/s, at
        // 43 for 1.5 s; by 44 it is at a tenth.
        let over = cap.w() * 0.9;
        let expected = (2.0 * over + (over - 10_000.0) + (over - 30_000.0).max(0.0)) / 3600.0;
        assert!(
            (ideal.import_wh - before - expected).abs() < 1e-6,
            "{} Wh, expected {expected}",
            ideal.import_wh - before
        );
    }
}
