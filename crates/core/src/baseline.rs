//! The baseline to beat: how miners follow a surplus today with a Home Assistant automation.
//!
//! The common "solar surplus" recipe switches whole miners: when the export (surplus minus what
//! the miners draw) has stayed above one miner's power for `start_after` (5 minutes), turn miners
//! on; when the site has been importing for `stop_after` (1 minute), turn miners off. Miners run at
//! the one setting their owner gave them, the top of the fleet's envelope (nameplate, or 110 %
//! where the comparison allows every controller that: `Envelope`), in the order they are listed;
//! there is no trend, no margin, no check that a command took effect, and a surplus sensor that
//! goes silent keeps its last value.
//!
//! Generalised to a fleet: when the condition has held for its time, as many miners are switched
//! as the smallest spare power (or the current deficit) over that time covers, then the timer
//! restarts. It obeys the same command rate limit and operator shed as the hashsink controller.

use std::sync::Arc;
use std::time::Duration;

use hashsink_units::{Timestamp, Watts};

use crate::api::{Action, Command, FleetController, Input};
use crate::fleet::{Fleet, MinerId};
use crate::reference::{OperatorState, Outbox};

/// Settings of the baseline automation.
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineConfig {
    /// How often the automation evaluates (Home Assistant re-evaluates on sensor updates).
    pub cadence: Duration,
    pub start_after: Duration,
    pub stop_after: Duration,
    pub max_commands_per_s: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            cadence: Duration::from_secs(1),
            start_after: Duration::from_secs(300),
            stop_after: Duration::from_secs(60),
            max_commands_per_s: 10_000.0,
        }
    }
}

/// The Home Assistant style on/off automation.
pub struct Baseline {
    cfg: BaselineConfig,
    fleet: Arc<Fleet>,
    on: Vec<bool>,
    on_count: usize,
    /// Draw above standby of each miner at its one setting (its highest level).
    delta: Vec<Watts>,
    standby_total: Watts,
    load: Watts,
    surplus: Option<Watts>,
    spare_since: Option<(Timestamp, Watts)>,
    deficit_since: Option<Timestamp>,
    operator: OperatorState,
    next_tick: Timestamp,
    outbox: Outbox,
}

impl Baseline {
    pub fn new(fleet: Arc<Fleet>, cfg: BaselineConfig, start: Timestamp) -> Self {
        let delta: Vec<Watts> = fleet
            .miner_ids()
            .map(|m| {
                let spec = fleet.spec_of(m);
                spec.max_power() - spec.standby
            })
            .collect();
        let standby_total = fleet.miner_ids().map(|m| fleet.spec_of(m).standby).sum();
        Self {
            on: vec![false; fleet.len()],
            on_count: 0,
            delta,
            standby_total,
            load: standby_total,
            surplus: None,
            spare_since: None,
            deficit_since: None,
            operator: OperatorState::default(),
            next_tick: start,
            outbox: Outbox::new(cfg.max_commands_per_s, start),
            fleet,
            cfg,
        }
    }

    fn switch(&mut self, m: usize, on: bool) {
        if self.on[m] == on {
            return;
        }
        self.on[m] = on;
        if on {
            self.on_count += 1;
            self.load += self.delta[m];
            let level = self.fleet.spec_of(MinerId(m as u32)).max_level();
            self.outbox.queue(m as u32, Action::Wake(level));
        } else {
            self.on_count -= 1;
            self.load -= self.delta[m];
            self.outbox.queue(m as u32, Action::Sleep);
        }
    }

    fn tick(&mut self, now: Timestamp) {
        let Some(surplus) = self.surplus else {
            return;
        };
        let surplus = self.operator.limit(surplus);
        if self.operator.shed {
            while self.on_count > 0 {
                self.switch(self.on_count - 1, false);
            }
            return;
        }
        let spare = surplus - self.load;
        // Miners go on in list order and off in reverse, so the ones on are always the first
        // `on_count` of the list.
        let n = self.on.len();
        // Start rule: spare above one miner's power, held for `start_after`.
        if self.on_count < n && spare >= self.delta[self.on_count] {
            let (since, lowest) = self.spare_since.get_or_insert((now, spare));
            *lowest = lowest.min(spare);
            if now.saturating_since(*since) >= self.cfg.start_after {
                let mut room = *lowest;
                self.spare_since = None;
                while self.on_count < n && self.delta[self.on_count] <= room {
                    room -= self.delta[self.on_count];
                    self.switch(self.on_count, true);
                }
            }
        } else {
            self.spare_since = None;
        }
        // Stop rule: importing, held for `stop_after`.
        if spare < Watts::ZERO && self.on_count > 0 {
            let since = *self.deficit_since.get_or_insert(now);
            if now.saturating_since(since) >= self.cfg.stop_after {
                self.deficit_since = None;
                let mut deficit = -spare;
                while deficit > Watts::ZERO && self.on_count > 0 {
                    let m = self.on_count - 1;
                    deficit -= self.delta[m];
                    self.switch(m, false);
                }
            }
        } else {
            self.deficit_since = None;
        }
    }

    fn flush(&mut self, now: Timestamp) {
        self.outbox.flush(now, self.operator.reason(), |_, _| true);
    }

    /// Fleet power the automation believes it has switched on (standby included).
    pub fn believed_load(&self) -> Watts {
        self.load.max(self.standby_total)
    }
}

impl FleetController for Baseline {
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
        "baseline"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Catalogue, Envelope, FleetConfig};

    /// The levels the automation wakes its miners at, with surplus for the whole fleet held for
    /// ten minutes.
    fn wake_levels(fleet: Fleet) -> Vec<u8> {
        let fleet = Arc::new(fleet);
        let t0 = Timestamp::from_secs(1_767_225_600);
        let mut b = Baseline::new(fleet.clone(), BaselineConfig::default(), t0);
        let mut levels = Vec::new();
        for s in 0..600 {
            let now = t0 + Duration::from_secs(s);
            b.handle_input(
                now,
                Input::Surplus {
                    at: now,
                    available: fleet.max_power() * 2.0,
                },
            );
            b.handle_timeout(now);
            while let Some(cmd) = b.poll_command() {
                if let Action::Wake(level) = cmd.action {
                    levels.push(level);
                }
            }
        }
        levels
    }

    #[test]
    fn miners_run_at_the_top_of_the_envelope_they_are_given() {
        let full =
            FleetConfig::build_from_shorthand("s21:4:braiins-os", &Catalogue::bundled()).unwrap();
        let spec = full.specs[0].clone();
        assert!(spec.max_level() > spec.preferred_level);
        let at_full = wake_levels(full.clone());
        assert_eq!(at_full, vec![spec.max_level(); 4]);
        let at_nameplate = wake_levels(full.within(Envelope::Nameplate));
        assert_eq!(at_nameplate, vec![spec.preferred_level; 4]);
    }
}
