//! Simulated miners: the physics a command meets.
//!
//! Each miner is asleep, booting or mining. A setpoint or sleep command takes effect after the
//! firmware's setpoint delay and then ramps at the spec's ramp rate; a wake command boots the
//! miner for its wake delay and then ramps up. Hashrate follows the spec's `h(p)` at the ends of
//! a ramp and moves linearly between them. The fleet's totals (running power, standby power,
//! hashrate) are kept as aggregates that change only at events, so the cost of a simulated second
//! does not grow with the number of miners.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashsink_core::{Fleet, MinerSpec};
use hashsink_units::{HashRate, Timestamp, Watts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Asleep,
    Booting,
    Mining,
}

/// A linear trajectory `value(t) = v0 + slope * (t - t0)`.
#[derive(Clone, Copy, Debug, Default)]
struct Linear {
    v0: f64,
    slope: f64,
}

#[derive(Clone, Debug)]
pub struct SimMiner {
    pub spec: u16,
    pub mode: Mode,
    /// Level the miner runs at (or will, once booted).
    pub level: u8,
    t0: Timestamp,
    power: Linear,
    hash: Linear,
    ramp_end: Timestamp,
    /// Where the current ramp ends: power (W) and hashrate (TH/s).
    target: (f64, f64),
    /// Bumped whenever the trajectory changes; heap entries of older generations are stale.
    generation: u32,
    /// A command waiting out the setpoint delay.
    queued: Option<Queued>,
    /// Wakes that actually started the machine (for cycle counts).
    pub wakes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queued {
    /// A setpoint waiting out the setpoint delay.
    Level(u8),
    /// A sleep waiting out the setpoint delay.
    Sleep,
    /// Ramping down to standby; asleep when the ramp ends.
    Sleeping,
}

/// What happens to a miner at a point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// A ramp reached its end: the miner reports.
    RampEnd,
    /// Boot finished: start ramping to the level.
    Booted,
    /// A queued command's setpoint delay is over.
    Apply,
}

/// The simulated fleet.
pub struct SimFleet {
    pub fleet: std::sync::Arc<Fleet>,
    pub miners: Vec<SimMiner>,
    events: BinaryHeap<Reverse<(Timestamp, u32, u32, EventKind)>>,
    agg_t: Timestamp,
    running: Linear,
    standby: Linear,
    hash: Linear,
    pub events_processed: u64,
}

/// What a miner would tell a reader right now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub mode: Mode,
    pub power: Watts,
    pub hashrate: HashRate,
}

impl SimFleet {
    /// Every miner asleep at `start`.
    pub fn new(fleet: std::sync::Arc<Fleet>, start: Timestamp) -> Self {
        let mut standby = 0.0;
        let miners = fleet
            .miner_spec
            .iter()
            .map(|s| {
                let spec = &fleet.specs[s.0 as usize];
                standby += spec.standby.w();
                SimMiner {
                    spec: s.0,
                    mode: Mode::Asleep,
                    level: spec.preferred_level,
                    t0: start,
                    power: Linear {
                        v0: spec.standby.w(),
                        slope: 0.0,
                    },
                    hash: Linear::default(),
                    ramp_end: start,
                    target: (spec.standby.w(), 0.0),
                    generation: 0,
                    queued: None,
                    wakes: 0,
                }
            })
            .collect();
        Self {
            fleet,
            miners,
            events: BinaryHeap::new(),
            agg_t: start,
            running: Linear::default(),
            standby: Linear {
                v0: standby,
                slope: 0.0,
            },
            hash: Linear::default(),
            events_processed: 0,
        }
    }

    fn spec(&self, m: u32) -> &MinerSpec {
        &self.fleet.specs[self.miners[m as usize].spec as usize]
    }

    fn advance_aggregates(&mut self, now: Timestamp) {
        let dt = now.secs_since(self.agg_t);
        if dt != 0.0 {
            for agg in [&mut self.running, &mut self.standby, &mut self.hash] {
                agg.v0 += agg.slope * dt;
            }
            self.agg_t = now;
        }
    }

    /// Power of the miners that are booting or mining.
    pub fn running_power(&mut self, now: Timestamp) -> Watts {
        self.advance_aggregates(now);
        Watts(self.running.v0.max(0.0))
    }
    /// Standby power of the sleeping miners.
    pub fn standby_power(&mut self, now: Timestamp) -> Watts {
        self.advance_aggregates(now);
        Watts(self.standby.v0.max(0.0))
    }
    pub fn hashrate(&mut self, now: Timestamp) -> HashRate {
        self.advance_aggregates(now);
        HashRate(self.hash.v0.max(0.0))
    }

    /// A miner's own power at `now`.
    pub fn miner_power(&self, m: u32, now: Timestamp) -> Watts {
        let miner = &self.miners[m as usize];
        if now >= miner.ramp_end {
            return Watts(miner.target.0);
        }
        Watts(miner.power.v0 + miner.power.slope * now.secs_since(miner.t0))
    }

    fn miner_hash(&self, m: u32, now: Timestamp) -> f64 {
        let miner = &self.miners[m as usize];
        if now >= miner.ramp_end {
            return miner.target.1;
        }
        miner.hash.v0 + miner.hash.slope * now.secs_since(miner.t0)
    }

    pub fn reading(&self, m: u32, now: Timestamp) -> Reading {
        Reading {
            mode: self.miners[m as usize].mode,
            power: self.miner_power(m, now),
            hashrate: HashRate(self.miner_hash(m, now)),
        }
    }

    /// Sets a miner's trajectory from `now`: from its current power to `target` (W) at the
    /// spec's ramp rate, hashrate moving to `target_hash`; `mode` from now on.
    fn retarget(&mut self, m: u32, now: Timestamp, mode: Mode, target: f64, target_hash: f64) {
        if self.miners[m as usize].ramp_end <= now {
            self.settle(m, now);
        }
        self.advance_aggregates(now);
        let p_now = self.miner_power(m, now).w();
        let h_now = self.miner_hash(m, now);
        let spec = self.spec(m);
        let rate = if target >= p_now {
            spec.ramp_up_w_per_s
        } else {
            spec.ramp_down_w_per_s
        };
        let secs = (target - p_now).abs() / rate;
        let ramp_end = now + std::time::Duration::from_secs_f64(secs);
        let (p_slope, h_slope) = if secs > 0.0 {
            ((target - p_now) / secs, (target_hash - h_now) / secs)
        } else {
            (0.0, 0.0)
        };
        let miner = &self.miners[m as usize];
        let old_mode = miner.mode;
        let old_p_slope = miner.power.slope;
        let old_h_slope = miner.hash.slope;
        // Remove the old contribution, add the new.
        let old_agg = if old_mode == Mode::Asleep {
            &mut self.standby
        } else {
            &mut self.running
        };
        old_agg.v0 -= p_now;
        old_agg.slope -= old_p_slope;
        self.hash.v0 -= h_now;
        self.hash.slope -= old_h_slope;
        let new_agg = if mode == Mode::Asleep {
            &mut self.standby
        } else {
            &mut self.running
        };
        new_agg.v0 += p_now;
        new_agg.slope += p_slope;
        self.hash.v0 += h_now;
        self.hash.slope += h_slope;
        let miner = &mut self.miners[m as usize];
        miner.mode = mode;
        miner.t0 = now;
        miner.power = Linear {
            v0: p_now,
            slope: p_slope,
        };
        miner.hash = Linear {
            v0: h_now,
            slope: h_slope,
        };
        miner.ramp_end = ramp_end;
        miner.target = (target, target_hash);
        miner.generation = miner.generation.wrapping_add(1);
        self.events
            .push(Reverse((ramp_end, m, miner.generation, EventKind::RampEnd)));
    }

    /// Stops a finished ramp exactly at its target, so that the aggregates carry no slope.
    fn settle(&mut self, m: u32, now: Timestamp) {
        if self.miners[m as usize].power.slope == 0.0 && self.miners[m as usize].hash.slope == 0.0 {
            return;
        }
        self.advance_aggregates(now);
        let miner = &self.miners[m as usize];
        // The aggregate ran on to `now` with the slope: replace that with the exact target.
        let elapsed = now.secs_since(miner.t0);
        let (p_end, h_end) = miner.target;
        let agg = if miner.mode == Mode::Asleep {
            &mut self.standby
        } else {
            &mut self.running
        };
        agg.v0 += p_end - (miner.power.v0 + miner.power.slope * elapsed);
        agg.slope -= miner.power.slope;
        self.hash.v0 += h_end - (miner.hash.v0 + miner.hash.slope * elapsed);
        self.hash.slope -= miner.hash.slope;
        let miner = &mut self.miners[m as usize];
        miner.power = Linear {
            v0: p_end,
            slope: 0.0,
        };
        miner.hash = Linear {
            v0: h_end,
            slope: 0.0,
        };
        miner.t0 = now;
        miner.ramp_end = now;
    }

    fn level_target(&self, m: u32, level: u8) -> (f64, f64) {
        let spec = self.spec(m);
        (
            spec.level_power(level).w(),
            spec.level_hashrate[level as usize].ths(),
        )
    }

    fn start_sleep(&mut self, m: u32, now: Timestamp) {
        let standby = self.spec(m).standby.w();
        // Hashing stops as the power comes down; the miner counts as running until asleep.
        let mode = if self.miners[m as usize].mode == Mode::Asleep {
            Mode::Asleep
        } else {
            Mode::Mining
        };
        self.retarget(m, now, mode, standby, 0.0);
        self.miners[m as usize].queued = Some(Queued::Sleeping);
    }

    /// Applies a command. Returns whether the miner's state already matches it (the caller then
    /// reports at once, as a real miner's read-back would show).
    pub fn command_sleep(&mut self, m: u32, now: Timestamp) -> bool {
        let miner = &self.miners[m as usize];
        match miner.mode {
            Mode::Asleep if miner.queued.is_none() => true,
            Mode::Asleep => false,
            Mode::Booting => {
                // Abort the boot: straight back to standby.
                let standby = self.spec(m).standby.w();
                self.retarget(m, now, Mode::Asleep, standby, 0.0);
                self.miners[m as usize].queued = None;
                false
            }
            Mode::Mining => {
                let delay = self.spec(m).setpoint_delay;
                if delay.is_zero() {
                    self.start_sleep(m, now);
                } else {
                    self.delay(m, now, delay, Queued::Sleep);
                }
                false
            }
        }
    }

    fn delay(&mut self, m: u32, now: Timestamp, delay: std::time::Duration, what: Queued) {
        let miner = &mut self.miners[m as usize];
        miner.queued = Some(what);
        miner.generation = miner.generation.wrapping_add(1);
        // Keep the current trajectory: re-register its end under the new generation.
        let generation = miner.generation;
        if miner.ramp_end > now {
            self.events
                .push(Reverse((miner.ramp_end, m, generation, EventKind::RampEnd)));
        }
        self.events
            .push(Reverse((now + delay, m, generation, EventKind::Apply)));
    }

    pub fn command_level(&mut self, m: u32, level: u8, now: Timestamp) -> bool {
        let miner = &self.miners[m as usize];
        match miner.mode {
            Mode::Asleep | Mode::Booting => {
                // The firmware stores the setting; it applies when the miner hashes.
                self.miners[m as usize].level = level;
                false
            }
            Mode::Mining if matches!(miner.queued, Some(Queued::Sleep | Queued::Sleeping)) => {
                // Told to sleep and not there yet: the sleep stands, the setting is stored for
                // the next wake (only a wake calls a sleep off).
                self.miners[m as usize].level = level;
                false
            }
            Mode::Mining => {
                if miner.level == level
                    && miner.queued.is_none()
                    && self.miner_power(m, now) == Watts(self.level_target(m, level).0)
                {
                    return true;
                }
                let delay = self.spec(m).setpoint_delay;
                self.miners[m as usize].level = level;
                if delay.is_zero() {
                    let (p, h) = self.level_target(m, level);
                    self.miners[m as usize].queued = None;
                    self.retarget(m, now, Mode::Mining, p, h);
                } else {
                    self.delay(m, now, delay, Queued::Level(level));
                }
                false
            }
        }
    }

    pub fn command_wake(&mut self, m: u32, level: u8, now: Timestamp) -> bool {
        let miner = &self.miners[m as usize];
        match miner.mode {
            Mode::Asleep => {
                self.boot(m, level, now);
                false
            }
            Mode::Booting => {
                self.miners[m as usize].level = level;
                false
            }
            Mode::Mining if matches!(miner.queued, Some(Queued::Sleep | Queued::Sleeping)) => {
                // Changed its mind while ramping down: go back up.
                self.miners[m as usize].level = level;
                let (p, h) = self.level_target(m, level);
                self.miners[m as usize].queued = None;
                self.retarget(m, now, Mode::Mining, p, h);
                false
            }
            Mode::Mining => self.command_level(m, level, now),
        }
    }

    /// Boot: standby draw for the wake delay, then ramp to `level`.
    fn boot(&mut self, m: u32, level: u8, now: Timestamp) {
        let standby = self.spec(m).standby.w();
        let wake_delay = self.spec(m).wake_delay;
        self.retarget(m, now, Mode::Booting, standby, 0.0);
        let miner = &mut self.miners[m as usize];
        miner.level = level;
        miner.queued = None;
        miner.wakes += 1;
        self.events.push(Reverse((
            now + wake_delay,
            m,
            miner.generation,
            EventKind::Booted,
        )));
    }

    /// A reboot: the miner drops to standby, boots, and comes back at its firmware default.
    pub fn reboot(&mut self, m: u32, now: Timestamp) {
        let preferred = self.spec(m).preferred_level;
        self.boot(m, preferred, now);
        self.miners[m as usize].wakes -= 1;
    }

    /// The time of the next miner event.
    pub fn next_event_time(&self) -> Option<Timestamp> {
        self.events.peek().map(|Reverse((t, ..))| *t)
    }

    /// Processes the next event if it is due at or before `now`. Returns the miner that should
    /// report (a ramp ended), if any.
    pub fn process_next(&mut self, now: Timestamp) -> Option<Option<u32>> {
        let &Reverse((t, m, generation, kind)) = self.events.peek()?;
        if t > now {
            return None;
        }
        self.events.pop();
        if self.miners[m as usize].generation != generation {
            return Some(None);
        }
        self.events_processed += 1;
        match kind {
            EventKind::RampEnd => {
                self.settle(m, t);
                let miner = &self.miners[m as usize];
                if miner.queued == Some(Queued::Sleeping) && miner.mode == Mode::Mining {
                    // Ramped down: now asleep.
                    self.advance_aggregates(t);
                    let p = self.miner_power(m, t).w();
                    self.running.v0 -= p;
                    self.standby.v0 += p;
                    let miner = &mut self.miners[m as usize];
                    miner.mode = Mode::Asleep;
                    miner.queued = None;
                } else if miner.queued == Some(Queued::Sleeping) {
                    self.miners[m as usize].queued = None;
                }
                if self.miners[m as usize].mode == Mode::Booting {
                    return Some(None);
                }
                Some(Some(m))
            }
            EventKind::Booted => {
                let level = self.miners[m as usize].level;
                let (p, h) = self.level_target(m, level);
                self.retarget(m, t, Mode::Mining, p, h);
                Some(None)
            }
            EventKind::Apply => {
                match self.miners[m as usize].queued {
                    Some(Queued::Sleep) => self.start_sleep(m, t),
                    Some(Queued::Level(l)) => {
                        let (p, h) = self.level_target(m, l);
                        self.miners[m as usize].queued = None;
                        self.retarget(m, t, Mode::Mining, p, h);
                    }
                    None | Some(Queued::Sleeping) => {}
                }
                Some(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashsink_core::{Catalogue, FleetConfig};
    use std::sync::Arc;

    fn fleet(spec: &str) -> SimFleet {
        let fleet = FleetConfig::build_from_shorthand(spec, &Catalogue::bundled()).unwrap();
        SimFleet::new(Arc::new(fleet), Timestamp::from_secs(0))
    }

    fn run_until(f: &mut SimFleet, t: Timestamp) -> Vec<u32> {
        let mut reports = Vec::new();
        while let Some(r) = f.process_next(t) {
            reports.extend(r);
        }
        reports
    }

    #[test]
    fn wake_boots_then_ramps_and_aggregates_follow() {
        let mut f = fleet("s21:2:braiins-os");
        let t = Timestamp::from_secs;
        assert_eq!(f.standby_power(t(0)), Watts(40.0));
        let preferred = f.fleet.specs[0].preferred_level;
        f.command_wake(0, preferred, t(0));
        // Booting for 30 s at standby draw.
        assert_eq!(run_until(&mut f, t(29)), Vec::<u32>::new());
        assert_eq!(f.running_power(t(29)), Watts(20.0));
        assert!(run_until(&mut f, t(30)).is_empty());
        // Ramping 20 W -> 3500 W at 200 W/s takes 17.4 s.
        let mid = f.running_power(t(40));
        assert!((mid.w() - (20.0 + 200.0 * 10.0)).abs() < 1e-6, "{mid}");
        assert_eq!(run_until(&mut f, t(48)), vec![0]);
        assert!((f.running_power(t(100)).w() - 3500.0).abs() < 1e-6);
        assert!((f.hashrate(t(100)).ths() - 200.0).abs() < 1e-6);
        assert_eq!(f.standby_power(t(100)), Watts(20.0));
        assert_eq!(f.miners[0].wakes, 1);
    }

    #[test]
    fn stock_firmware_waits_out_its_setpoint_delay_before_sleeping() {
        let mut f = fleet("s19jpro:1:stock");
        let t = Timestamp::from_secs;
        f.command_wake(0, 1, t(0));
        run_until(&mut f, t(1000));
        let full = f.running_power(t(1000));
        assert!((full.w() - 3068.0).abs() < 1e-6);
        f.command_sleep(0, t(1000));
        run_until(&mut f, t(1039));
        assert_eq!(
            f.running_power(t(1039)),
            full,
            "still at full power inside the 40 s delay"
        );
        let reports = run_until(&mut f, t(1045));
        assert_eq!(reports, vec![0]);
        assert_eq!(f.miners[0].mode, Mode::Asleep);
        assert!(f.running_power(t(1045)).w().abs() < 1e-6);
        assert!((f.standby_power(t(1045)).w() - 15.0).abs() < 1e-6);
    }

    #[test]
    fn reboot_comes_back_hashing_at_default() {
        let mut f = fleet("s21:1:luxos");
        let t = Timestamp::from_secs;
        f.reboot(0, t(10));
        run_until(&mut f, t(100));
        assert_eq!(f.miners[0].mode, Mode::Mining);
        let fleet = f.fleet.clone();
        let spec = &fleet.specs[0];
        assert!(
            (f.running_power(t(100)) - spec.level_power(spec.preferred_level))
                .w()
                .abs()
                < 1e-6
        );
        assert_eq!(f.miners[0].wakes, 0, "a reboot is not a controller wake");
    }

    #[test]
    fn a_level_given_while_a_sleep_waits_out_its_delay_is_stored_and_the_miner_still_sleeps() {
        let mut f = fleet("s19jpro:1:stock");
        let t = Timestamp::from_secs;
        f.command_wake(0, 1, t(0));
        run_until(&mut f, t(1000));
        f.command_sleep(0, t(1000));
        f.command_level(0, 0, t(1010));
        run_until(&mut f, t(1100));
        assert_eq!(f.miners[0].mode, Mode::Asleep, "the sleep stands");
        assert!(f.running_power(t(1100)).w().abs() < 1e-6);
        assert_eq!(
            f.miners[0].level, 0,
            "the setting is kept for the next wake"
        );
    }
}
