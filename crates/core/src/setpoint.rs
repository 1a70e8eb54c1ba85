//! The stronger reference: the setpoint dispatch of commercial fleet managers.
//!
//! Fleet managers that take a site power target (a curtailment programme's setpoint, a site
//! meter's export limit) share it out proportionally: every `cadence` (5 s) they read the
//! setpoint, the surplus reading less a margin, and give every running miner the same fraction
//! of its maximum power, over the firmware's whole range (up to its highest level, above
//! nameplate where the firmware allows). On a ladder of discrete levels the fraction is met
//! on average: some miners of a model take the level below it and some the level above, so that
//! the model's total is its share. When the running miners at their lowest levels would still
//! draw more than the setpoint, the least efficient are put to sleep until the rest fit; when
//! every running miner is at its highest level and a sleeping miner would fit at its lowest,
//! spare power that has held for `wake_confirm` wakes the most efficient rested ones.
//!
//! It keeps the same margin, minimum off-time and wake confirmation as the hashsink
//! controller, so that a comparison runs on equal terms. It has no trend, no step handling, no
//! check that a command took effect, and acts only at its cadence; a surplus signal that goes
//! silent keeps its last value.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hashsink_units::{Timestamp, Watts};

use crate::api::{Action, Command, FleetController, Input};
use crate::controller::ControllerConfig;
use crate::fleet::Fleet;
use crate::reference::{OperatorState, Outbox};

/// Settings of the setpoint dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct SetpointConfig {
    /// How often the setpoint is read and shared out.
    pub cadence: Duration,
    /// Kept below the surplus: the larger of an absolute margin and a share of fleet power.
    pub margin: Watts,
    pub margin_fraction: f64,
    /// A slept miner rests at least this long.
    pub min_off: Duration,
    /// Spare power must persist this long before miners are woken.
    pub wake_confirm: Duration,
    pub max_commands_per_s: f64,
}

impl Default for SetpointConfig {
    fn default() -> Self {
        Self::same_terms_as(&ControllerConfig::default())
    }
}

impl SetpointConfig {
    /// A 5 s setpoint dispatch with the hashsink controller's margin, dwell, wake
    /// confirmation and command rate.
    pub fn same_terms_as(cfg: &ControllerConfig) -> Self {
        Self {
            cadence: Duration::from_secs(5),
            margin: cfg.margin,
            margin_fraction: cfg.margin_fraction,
            min_off: cfg.min_off,
            wake_confirm: cfg.wake_confirm,
            max_commands_per_s: cfg.max_commands_per_s,
        }
    }
}

/// One model's running miners and the levels they were given.
#[derive(Clone, Debug, Default)]
struct Group {
    /// Miners of this spec that are awake (or waking), in the order they were woken.
    awake: Vec<u32>,
    /// Miners of this spec asleep, longest asleep first: (miner, asleep since).
    asleep: VecDeque<(u32, Timestamp)>,
}

/// The setpoint dispatch (see the module documentation).
pub struct Setpoint {
    cfg: SetpointConfig,
    fleet: Arc<Fleet>,
    groups: Vec<Group>,
    /// Spec indices, most efficient first.
    by_efficiency: Vec<usize>,
    /// The level each miner was last told (`None`: asleep).
    level: Vec<Option<u8>>,
    margin: Watts,
    standby_total: Watts,
    surplus: Option<Watts>,
    spare_since: Option<Timestamp>,
    operator: OperatorState,
    next_tick: Timestamp,
    outbox: Outbox,
}

impl Setpoint {
    /// Every miner is taken as asleep since long ago and told so at the first tick.
    pub fn new(fleet: Arc<Fleet>, cfg: SetpointConfig, start: Timestamp) -> Self {
        let long_ago = start - (cfg.min_off + Duration::from_secs(1));
        let mut groups = vec![Group::default(); fleet.specs.len()];
        let mut outbox = Outbox::new(cfg.max_commands_per_s, start);
        for m in fleet.miner_ids() {
            let spec = fleet.miner_spec[m.index()].0 as usize;
            groups[spec].asleep.push_back((m.0, long_ago));
            outbox.queue(m.0, Action::Sleep);
        }
        let by_efficiency = fleet.specs_by_efficiency();
        let max = fleet.max_power();
        Self {
            margin: cfg.margin.max(max * cfg.margin_fraction),
            standby_total: fleet.miner_ids().map(|m| fleet.spec_of(m).standby).sum(),
            level: vec![None; fleet.len()],
            groups,
            by_efficiency,
            surplus: None,
            spare_since: None,
            operator: OperatorState::default(),
            next_tick: start,
            outbox,
            fleet,
            cfg,
        }
    }

    /// Power above standby of spec `s` at `level`.
    fn delta(&self, s: usize, level: u8) -> Watts {
        let spec = &self.fleet.specs[s];
        spec.level_power(level) - spec.standby
    }

    /// What the running miners may draw above the fleet's standby.
    fn setpoint(&self) -> Option<Watts> {
        let target = self.operator.limit(self.surplus? - self.margin);
        Some((target - self.standby_total).positive_part())
    }

    /// Sum over running miners of their power above standby at the lowest and highest level.
    fn running_range(&self) -> (Watts, Watts) {
        let mut low = Watts::ZERO;
        let mut high = Watts::ZERO;
        for (s, g) in self.groups.iter().enumerate() {
            let n = g.awake.len() as f64;
            let top = self.fleet.specs[s].max_level();
            low += self.delta(s, 0) * n;
            high += self.delta(s, top) * n;
        }
        (low, high)
    }

    fn tick(&mut self, now: Timestamp) {
        let Some(target) = self.setpoint() else {
            return;
        };
        // Sleep the least efficient until the running miners fit at their lowest levels.
        let (mut low, _) = self.running_range();
        for i in (0..self.by_efficiency.len()).rev() {
            let s = self.by_efficiency[i];
            while low > target {
                let Some(m) = self.groups[s].awake.pop() else {
                    break;
                };
                low -= self.delta(s, 0);
                self.groups[s].asleep.push_back((m, now));
                self.level[m as usize] = None;
                self.outbox.queue(m, Action::Sleep);
            }
        }
        let (_, high) = self.running_range();
        self.wake_into(now, target - high);
        let (low, high) = self.running_range();
        // Share the target out: every running miner the same fraction of its maximum.
        let max_sum: Watts = (0..self.groups.len())
            .map(|s| self.fleet.specs[s].max_power() * self.groups[s].awake.len() as f64)
            .sum();
        if max_sum <= Watts::ZERO {
            return;
        }
        let share = target.min(high).max(low);
        let fraction = ((share + self.standby_of_awake()) / max_sum).clamp(0.0, 1.0);
        for s in 0..self.groups.len() {
            self.assign_levels(s, fraction);
        }
    }

    fn standby_of_awake(&self) -> Watts {
        (0..self.groups.len())
            .map(|s| self.fleet.specs[s].standby * self.groups[s].awake.len() as f64)
            .sum()
    }

    /// Wakes rested miners, most efficient first, into `spare` (power left with every running
    /// miner at its highest level), once spare power has held for `wake_confirm`.
    fn wake_into(&mut self, now: Timestamp, spare: Watts) {
        let smallest = (0..self.groups.len())
            .filter(|&s| !self.groups[s].asleep.is_empty())
            .map(|s| self.delta(s, 0))
            .fold(Watts(f64::INFINITY), Watts::min);
        if spare < smallest {
            self.spare_since = None;
            return;
        }
        let since = *self.spare_since.get_or_insert(now);
        if now.saturating_since(since) < self.cfg.wake_confirm {
            return;
        }
        let mut left = spare;
        for i in 0..self.by_efficiency.len() {
            let s = self.by_efficiency[i];
            let need = self.delta(s, 0);
            while left >= need {
                let Some(&(m, since)) = self.groups[s].asleep.front() else {
                    break;
                };
                if now.saturating_since(since) < self.cfg.min_off {
                    break;
                }
                self.groups[s].asleep.pop_front();
                self.groups[s].awake.push(m);
                left -= need;
                // Woken at the lowest level; the share-out below sets its level.
                self.level[m as usize] = Some(0);
                self.outbox.queue(m, Action::Wake(0));
            }
        }
        self.spare_since = None;
    }

    /// Gives the running miners of spec `s` levels whose total is `fraction` of their maximum:
    /// each the level at or below it, and as many as the remainder pays for one level up.
    fn assign_levels(&mut self, s: usize, fraction: f64) {
        let spec = &self.fleet.specs[s];
        let n = self.groups[s].awake.len();
        if n == 0 {
            return;
        }
        let want = (spec.max_power() * fraction).max(spec.min_power());
        let below = (0..=spec.max_level())
            .rev()
            .find(|&l| spec.level_power(l) <= want)
            .unwrap_or(0);
        let above = (below + 1).min(spec.max_level());
        let step = spec.level_power(above) - spec.level_power(below);
        let extra = if step > Watts::ZERO {
            let total = (want - spec.level_power(below)) * n as f64;
            ((total / step).floor() as usize).min(n)
        } else {
            0
        };
        for i in 0..n {
            let m = self.groups[s].awake[i];
            let level = if i < extra { above } else { below };
            match self.level[m as usize] {
                Some(l) if l == level => {}
                _ => {
                    self.level[m as usize] = Some(level);
                    self.outbox.queue(m, Action::SetLevel(level));
                }
            }
        }
    }

    fn flush(&mut self, now: Timestamp) {
        let reason = self.operator.reason();
        // A level queued before the miner was slept, or a sleep before it was woken again, is
        // stale.
        let level = &self.level;
        self.outbox
            .flush(now, reason, |m, action| match (action, level[m as usize]) {
                (Action::SetLevel(l), Some(now_l)) => l == now_l,
                (Action::SetLevel(_) | Action::Wake(_), None) => false,
                (Action::Sleep, Some(_)) => false,
                _ => true,
            });
    }
}

impl FleetController for Setpoint {
    fn handle_input(&mut self, now: Timestamp, input: Input) {
        match input {
            Input::Surplus { available, .. } if available.is_finite() => {
                self.surplus = Some(available.positive_part())
            }
            Input::Operator(cmd) => {
                let shed = self.operator.take(cmd);
                // A shed is acted on at once.
                if shed {
                    self.tick(now);
                    self.flush(now);
                }
            }
            // A trip is acted on at once.
            Input::Protection(cap) => {
                self.operator.protection = cap.map(Watts::positive_part);
                if cap.is_some() {
                    self.tick(now);
                    self.flush(now);
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + self.cfg.cadence;
        }
        self.flush(now);
    }

    fn poll_command(&mut self) -> Option<Command> {
        self.outbox.poll()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        Some(self.outbox.wake_at(self.next_tick))
    }

    fn name(&self) -> &'static str {
        "setpoint"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;
    use crate::fleet::FleetConfig;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(1_000_000 + s)
    }

    /// Runs the dispatch on `surplus(s)` and returns every miner's power (instant miners).
    fn run(
        spec: &str,
        secs: std::ops::Range<i64>,
        surplus: impl Fn(i64) -> Watts,
        sp: &mut Option<Setpoint>,
        power: &mut Vec<Watts>,
        sent: &mut Vec<(i64, Command)>,
    ) -> Arc<Fleet> {
        let fleet =
            Arc::new(FleetConfig::build_from_shorthand(spec, &Catalogue::bundled()).unwrap());
        let sp = sp.get_or_insert_with(|| {
            *power = fleet
                .miner_ids()
                .map(|m| fleet.spec_of(m).standby)
                .collect();
            Setpoint::new(fleet.clone(), SetpointConfig::default(), t(secs.start))
        });
        for s in secs {
            let now = t(s);
            sp.handle_input(
                now,
                Input::Surplus {
                    at: now,
                    available: surplus(s),
                },
            );
            sp.handle_timeout(now);
            while let Some(c) = sp.poll_command() {
                let spec = fleet.spec_of(c.miner);
                power[c.miner.index()] = match c.action {
                    Action::Sleep => spec.standby,
                    Action::Wake(l) | Action::SetLevel(l) => spec.level_power(l),
                    Action::Query | Action::Resume => power[c.miner.index()],
                };
                sent.push((s, c));
            }
        }
        fleet
    }

    #[test]
    fn shares_the_setpoint_out_evenly_and_wakes_only_into_spare_power() {
        let (mut sp, mut power, mut sent) = (None, Vec::new(), Vec::new());
        let kw = Watts::from_kw;
        // 20 S21 on Braiins OS (1.6 to 3.85 kW): 40 kW is more than the minimum of all and
        // less than their maximum.
        let fleet = run(
            "s21:20:braiins-os",
            0..120,
            |_| kw(40.0),
            &mut sp,
            &mut power,
            &mut sent,
        );
        let load: Watts = power.iter().copied().sum();
        let margin = fleet.max_power() * ControllerConfig::default().margin_fraction;
        assert!(load <= kw(40.0) - margin + Watts(1.0), "{load}");
        assert!(
            load >= kw(40.0) - margin - kw(0.2),
            "{load}: the dithered levels meet it"
        );
        let running: Vec<Watts> = power
            .iter()
            .copied()
            .filter(|p| *p > Watts(100.0))
            .collect();
        // Woken only once spare power held for the confirmation, and then all at once.
        assert!(
            sent.iter()
                .filter(|(_, c)| matches!(c.action, Action::Wake(_)))
                .all(|(s, _)| *s >= 30)
        );
        let (lo, hi) = running
            .iter()
            .fold((kw(99.0), Watts::ZERO), |(a, b), p| (a.min(*p), b.max(*p)));
        assert!(
            hi - lo <= kw(0.2),
            "the same fraction for every miner: {lo}..{hi}"
        );
    }

    #[test]
    fn a_setpoint_below_the_running_minimum_sleeps_the_least_efficient_and_they_rest() {
        let (mut sp, mut power, mut sent) = (None, Vec::new(), Vec::new());
        let kw = Watts::from_kw;
        // 10 S19j Pro (29.5 J/TH) listed before 10 S21 (17.5 J/TH), all running at 60 kW.
        let spec = "s19jpro:10:braiins-os,s21:10:braiins-os";
        let fleet = run(spec, 0..100, |_| kw(60.0), &mut sp, &mut power, &mut sent);
        assert!(power.iter().all(|p| *p > Watts(100.0)), "all run at 60 kW");
        run(spec, 100..110, |_| kw(20.0), &mut sp, &mut power, &mut sent);
        let load: Watts = power.iter().copied().sum();
        assert!(load <= kw(20.0), "{load}");
        let asleep: Vec<usize> = (0..20).filter(|&m| power[m] < Watts(100.0)).collect();
        assert!(
            !asleep.is_empty() && asleep.iter().all(|&m| m < 10),
            "S19j Pro first: {asleep:?}"
        );
        // Back to 60 kW: the slept miners rest ten minutes before they are woken again.
        run(spec, 110..700, |_| kw(60.0), &mut sp, &mut power, &mut sent);
        for &m in &asleep {
            assert!(power[m] < Watts(100.0), "miner {m} woken inside min_off");
        }
        run(spec, 700..800, |_| kw(60.0), &mut sp, &mut power, &mut sent);
        assert!(
            asleep.iter().all(|&m| power[m] > Watts(100.0)),
            "and then they are"
        );
        assert_eq!(fleet.len(), 20);
    }
}
