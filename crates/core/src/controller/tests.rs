//! Unit tests of the controller against an ideal, instant fleet driven by hand.
//! The twin's tests cover dynamics, faults and whole-year behaviour.

use std::sync::Arc;
use std::time::Duration;

use hashsink_units::{HashRate, Timestamp, Watts};

use super::*;
use crate::api::{CommandOutcome, MinerReport, TransportError};
use crate::catalogue::Catalogue;
use crate::fleet::FleetConfig;

const T0: i64 = 1_000_000;

fn t(s: i64) -> Timestamp {
    Timestamp::from_secs(T0 + s)
}

/// A fleet whose miners do at once what they are told, unless listed as disobedient.
struct Harness {
    fleet: Arc<Fleet>,
    ctrl: Controller,
    power: Vec<Watts>,
    disobedient: Vec<u32>,
    silent: Vec<u32>,
    /// Miners whose firmware owns its level (LuxOS with ATM on): a level is refused, a wake
    /// without one runs at the nameplate level, sleep works.
    own_level: Vec<u32>,
    /// Miners that refuse every write.
    refusing: Vec<u32>,
    /// Miners that take three times their wake delay to boot, reporting booting every second.
    slow_wake: Vec<u32>,
    sent: Vec<(Timestamp, Command)>,
    /// Wakes in progress: (miner, ready at, power).
    booting: Vec<(u32, Timestamp, Watts)>,
}

impl Harness {
    fn new(spec: &str, cfg: ControllerConfig) -> Self {
        let fleet =
            Arc::new(FleetConfig::build_from_shorthand(spec, &Catalogue::bundled()).unwrap());
        let power = fleet
            .miner_ids()
            .map(|m| fleet.spec_of(m).standby)
            .collect();
        let ctrl = Controller::new(fleet.clone(), cfg, t(0));
        Self {
            fleet,
            ctrl,
            power,
            disobedient: Vec::new(),
            silent: Vec::new(),
            own_level: Vec::new(),
            refusing: Vec::new(),
            slow_wake: Vec::new(),
            sent: Vec::new(),
            booting: Vec::new(),
        }
    }

    fn load(&self) -> Watts {
        self.power.iter().copied().sum()
    }

    /// Feeds a surplus reading at `now`, ticks, and applies every command.
    fn step(&mut self, now: Timestamp, surplus: Option<Watts>) {
        let (ready, still): (Vec<_>, Vec<_>) =
            self.booting.iter().partition(|(_, at, _)| *at <= now);
        self.booting = still;
        for &(m, _, _) in &self.booting {
            if self.slow_wake.contains(&m) {
                let status = MinerStatus::Booting {
                    power: self.power[m as usize],
                };
                let report = MinerReport {
                    miner: MinerId(m),
                    at: now,
                    status,
                };
                self.ctrl.handle_input(now, Input::Miner(report));
            }
        }
        for (m, _, p) in ready {
            self.power[m as usize] = p;
            let status = MinerStatus::Mining {
                power: p,
                hashrate: HashRate(1.0),
            };
            self.ctrl.handle_input(
                now,
                Input::Miner(MinerReport {
                    miner: MinerId(m),
                    at: now,
                    status,
                }),
            );
        }
        if let Some(s) = surplus {
            self.ctrl.handle_input(
                now,
                Input::Surplus {
                    at: now,
                    available: s,
                },
            );
        }
        self.ctrl.handle_timeout(now);
        self.apply(now);
        if let Err(e) = self.ctrl.check_accounting() {
            panic!("at {}: {e}", now.as_millis() / 1000 - T0);
        }
    }

    fn apply(&mut self, now: Timestamp) {
        while let Some(cmd) = self.ctrl.poll_command() {
            self.sent.push((now, cmd));
            let m = cmd.miner.0;
            if self.silent.contains(&m) {
                let outcome = CommandOutcome {
                    id: cmd.id,
                    miner: cmd.miner,
                    result: Err(TransportError::Timeout),
                };
                self.ctrl.handle_input(now, Input::Outcome(outcome));
                continue;
            }
            let refusal = match cmd.action {
                _ if self.refusing.contains(&m) && cmd.action.is_write() => Some(Refusal::Rejected),
                Action::SetLevel(_) | Action::Wake(_) if self.own_level.contains(&m) => {
                    Some(Refusal::LevelRefused)
                }
                _ => None,
            };
            if let Some(refusal) = refusal {
                let outcome = CommandOutcome {
                    id: cmd.id,
                    miner: cmd.miner,
                    result: Ok(Err(refusal)),
                };
                self.ctrl.handle_input(now, Input::Outcome(outcome));
                continue;
            }
            let cmd = match cmd.action {
                // Its firmware's own level: the nameplate one here.
                Action::Resume => Command {
                    action: Action::Wake(self.fleet.spec_of(cmd.miner).preferred_level),
                    ..cmd
                },
                _ => cmd,
            };
            if cmd.action.is_write() {
                // Delivered: every write gets an outcome (the daemon's and the twin's contract).
                let outcome = CommandOutcome {
                    id: cmd.id,
                    miner: cmd.miner,
                    result: Ok(Ok(())),
                };
                self.ctrl.handle_input(now, Input::Outcome(outcome));
            }
            let spec = self.fleet.spec_of(cmd.miner).clone();
            if !self.disobedient.contains(&m) {
                match cmd.action {
                    Action::Sleep => {
                        self.booting.retain(|b| b.0 != m);
                        self.power[m as usize] = spec.standby;
                    }
                    Action::Wake(l) | Action::SetLevel(l)
                        if self.booting.iter().any(|b| b.0 == m) =>
                    {
                        // Still booting: the new setting applies once it is up.
                        for b in self.booting.iter_mut().filter(|b| b.0 == m) {
                            b.2 = spec.level_power(l);
                        }
                        continue;
                    }
                    Action::Wake(l) if self.power[m as usize] <= spec.standby => {
                        let delay = if self.slow_wake.contains(&m) {
                            spec.wake_delay * 3
                        } else {
                            spec.wake_delay
                        };
                        self.booting.push((m, now + delay, spec.level_power(l)));
                        continue;
                    }
                    Action::Wake(l) | Action::SetLevel(l) => {
                        self.power[m as usize] = spec.level_power(l)
                    }
                    Action::Query | Action::Resume => {}
                }
            }
            let p = self.power[m as usize];
            let status = if p > spec.standby {
                MinerStatus::Mining {
                    power: p,
                    hashrate: HashRate(1.0),
                }
            } else {
                MinerStatus::Asleep { power: p }
            };
            self.ctrl.handle_input(
                now,
                Input::Miner(MinerReport {
                    miner: cmd.miner,
                    at: now,
                    status,
                }),
            );
        }
    }

    fn run(&mut self, from: i64, to: i64, surplus: impl Fn(i64) -> Option<Watts>) {
        for s in from..to {
            self.step(t(s), surplus(s));
        }
    }
}

fn quick() -> ControllerConfig {
    ControllerSettings {
        min_on_s: 60.0,
        min_off_s: 60.0,
        wake_confirm_s: 5.0,
        ..Default::default()
    }
    .validate()
    .unwrap()
}

#[test]
fn follows_the_surplus_without_exceeding_it() {
    let mut h = Harness::new("s21:100", quick());
    let surplus = |s: i64| Watts::from_kw(150.0 + 100.0 * ((s as f64) / 600.0).sin());
    for s in 0..3600 {
        h.step(t(s), Some(surplus(s)));
        assert!(
            h.load() <= surplus(s) + Watts(1.0),
            "at {s}: load {} above surplus {}",
            h.load(),
            surplus(s)
        );
    }
    // After settling it uses most of the surplus.
    let last = surplus(3599);
    assert!(
        h.load() > last * 0.95,
        "load {} far below surplus {last}",
        h.load()
    );
}

#[test]
fn most_efficient_model_wakes_first() {
    // S19j Pro (29.5 J/TH) listed first, S21 XP (13.5 J/TH) second.
    let mut h = Harness::new("s19jpro:10,s21xp:10", quick());
    h.run(0, 300, |_| Some(Watts::from_kw(30.0)));
    let running: Vec<usize> = (0..20).filter(|&m| h.power[m] > Watts(100.0)).collect();
    assert!(!running.is_empty());
    assert!(
        running.iter().all(|&m| m >= 10),
        "only S21 XP should run: {running:?}"
    );
}

#[test]
fn shed_puts_every_miner_to_sleep_at_once() {
    let mut h = Harness::new("s21:50", quick());
    h.run(0, 600, |_| Some(Watts::from_mw(1.0)));
    assert!(h.load() > Watts::from_kw(150.0));
    h.ctrl
        .handle_input(t(600), Input::Operator(OperatorCommand::ShedAll));
    h.apply(t(600));
    let standby: Watts = (0..50).map(|_| Watts(20.0)).sum();
    assert_eq!(h.load(), standby);
    assert!(
        h.sent
            .iter()
            .filter(|(at, _)| *at == t(600))
            .all(|(_, c)| c.reason == Reason::Operator)
    );
    // It stays shed until resumed, then comes back.
    h.run(601, 700, |_| Some(Watts::from_mw(1.0)));
    assert_eq!(h.load(), standby);
    h.ctrl
        .handle_input(t(700), Input::Operator(OperatorCommand::Resume));
    h.run(700, 1500, |_| Some(Watts::from_mw(1.0)));
    assert!(h.load() > Watts::from_kw(150.0));
}

#[test]
fn curtailment_caps_the_fleet() {
    let mut h = Harness::new("s21:50", quick());
    h.ctrl.handle_input(
        t(0),
        Input::Operator(OperatorCommand::CurtailTo(Watts::from_kw(40.0))),
    );
    h.run(0, 900, |_| Some(Watts::from_mw(1.0)));
    assert!(h.load() <= Watts::from_kw(40.0), "{}", h.load());
    assert!(h.load() > Watts::from_kw(35.0), "{}", h.load());
}

#[test]
fn stale_signal_drives_the_fleet_to_the_failsafe_load_in_time() {
    let cfg = ControllerSettings {
        failsafe_within_ms: 5_000,
        max_reading_age_ms: 10_000,
        min_on_s: 0.0,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let mut h = Harness::new("s21:50", cfg);
    h.run(0, 900, |_| Some(Watts::from_mw(1.0)));
    assert!(h.load() > Watts::from_kw(150.0));
    // Readings stop at 900: stale at 910, fail-safe load (zero) reached by 915 at the latest.
    h.run(900, 930, |_| None);
    assert_eq!(h.load(), Watts(50.0 * 20.0));
    assert!(matches!(h.ctrl.signal(), SignalState::Lost { .. }));
    assert!(h.sent.iter().any(|(_, c)| c.reason == Reason::FailSafe));
}

#[test]
fn readings_from_the_future_are_rejected() {
    let mut h = Harness::new("s21:5", quick());
    for s in 0..60 {
        let reading = Input::Surplus {
            at: t(s + 3600),
            available: Watts::from_mw(1.0),
        };
        h.ctrl.handle_input(t(s), reading);
        h.step(t(s), None);
    }
    assert_eq!(h.load(), Watts(100.0));
    assert_eq!(h.ctrl.stats().rejected_readings, 60);
}

#[test]
fn never_exceeds_the_command_rate() {
    let cfg = ControllerSettings {
        max_commands_per_s: 100.0,
        command_burst: 100.0,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let mut h = Harness::new("s21:2000", cfg);
    h.run(0, 120, |_| Some(Watts::from_mw(10.0)));
    let mut per_second = std::collections::BTreeMap::new();
    for (at, c) in &h.sent {
        if c.action.is_write() {
            *per_second.entry(at.as_millis() / 1000).or_insert(0) += 1;
        }
    }
    assert!(per_second.values().all(|&n| n <= 200), "{per_second:?}");
    assert!(
        per_second.values().any(|&n| n >= 100),
        "the limit should be reached in this test"
    );
}

#[test]
fn a_miner_that_does_not_obey_is_routed_around() {
    let mut h = Harness::new("s21:20", quick());
    h.disobedient.push(3);
    // Miner 3 "is" mining at full power whatever it is told.
    h.power[3] = Watts(3500.0);
    h.run(0, 400, |_| Some(Watts::from_kw(10.0)));
    let to_3: Vec<_> = h
        .sent
        .iter()
        .filter(|(_, c)| c.miner.0 == 3)
        .map(|(at, c)| (at.as_millis() / 1000 - T0, c.action))
        .collect();
    assert_eq!(
        h.ctrl.fault_of(MinerId(3)),
        Some(FaultKind::Disobedient),
        "{to_3:?}"
    );
    // Its draw is counted: the others keep the total under the surplus.
    assert!(h.load() <= Watts::from_kw(10.0), "{}", h.load());
    assert!(h.load() > Watts::from_kw(6.0), "{}", h.load());
}

#[test]
fn a_silent_miner_is_routed_around() {
    let mut h = Harness::new("s21:20", quick());
    h.silent.push(5);
    h.run(0, 400, |_| Some(Watts::from_kw(40.0)));
    assert_eq!(h.ctrl.fault_of(MinerId(5)), Some(FaultKind::Unreachable));
    assert!(h.load() <= Watts::from_kw(40.0));
}

#[test]
fn a_slept_miner_is_not_woken_inside_its_off_time() {
    // Without the short-dip rule (see `a_dip_shorter_than_min_off_costs_no_more_mining_than_the_dip`
    // for it).
    let cfg = ControllerSettings {
        short_dip_s: 0.0,
        ..Default::default()
    };
    let cfg = ControllerSettings {
        min_on_s: 60.0,
        min_off_s: 60.0,
        wake_confirm_s: 5.0,
        ..cfg
    }
    .validate()
    .unwrap();
    let mut h = Harness::new("s21:10", cfg);
    // Surplus for 5 min, gone for 20 s, back.
    h.run(0, 1200, |s| {
        Some(if (300..320).contains(&s) {
            Watts::ZERO
        } else {
            Watts::from_kw(20.0)
        })
    });
    let mut last_sleep: std::collections::HashMap<u32, Timestamp> = Default::default();
    for (at, c) in &h.sent {
        match c.action {
            Action::Sleep if c.reason != Reason::Reconcile => {
                last_sleep.insert(c.miner.0, *at);
            }
            Action::Wake(_) => {
                if let Some(slept) = last_sleep.get(&c.miner.0) {
                    assert!(
                        at.saturating_since(*slept) >= Duration::from_secs(60),
                        "miner {} woke too soon",
                        c.miner.0
                    );
                }
            }
            _ => {}
        }
    }
    assert!(
        h.load() > Watts::from_kw(15.0),
        "the fleet came back: {}",
        h.load()
    );
}

#[test]
fn unexplained_metered_load_is_shed() {
    let mut h = Harness::new("s21:20", quick());
    h.run(0, 300, |_| Some(Watts::from_kw(40.0)));
    let before = h.load();
    // A meter shows 10 kW more than the miners account for (an unlisted machine, a liar).
    for s in 300..400 {
        let measured = h.load() + Watts::from_kw(10.0);
        h.ctrl
            .handle_input(t(s), Input::FleetPower { at: t(s), measured });
        h.step(t(s), Some(Watts::from_kw(40.0)));
    }
    assert!(
        h.load() + Watts::from_kw(10.0) <= Watts::from_kw(40.0),
        "{} vs {before}",
        h.load()
    );
}

#[test]
fn a_forecast_wakes_slow_miners_ahead_of_the_surplus() {
    // Stock firmware takes 180 s to wake. The surplus arrives at t = 1000.
    let surplus = |s: i64| {
        Some(if s < 1000 {
            Watts::ZERO
        } else {
            Watts::from_kw(50.0)
        })
    };
    let ready_at = |with_forecast: bool| {
        let mut h = Harness::new("s19jpro:20:stock-antminer", quick());
        if with_forecast {
            h.ctrl.handle_input(
                t(0),
                Input::Forecast(vec![(t(0), Watts::ZERO), (t(1000), Watts::from_kw(50.0))]),
            );
        }
        (0..2000).find(|&s| {
            h.step(t(s), surplus(s));
            assert!(
                h.load() <= surplus(s).unwrap().max(Watts(20.0 * 15.0)) + Watts(1.0),
                "at {s}: {}",
                h.load()
            );
            h.load() > Watts::from_kw(30.0)
        })
    };
    let with = ready_at(true).expect("fleet came up with a forecast");
    let without = ready_at(false).expect("fleet came up without a forecast");
    assert!(
        with < 1060,
        "with a forecast the fleet is up soon after the surplus arrives: {with}"
    );
    assert!(
        without > with + 120,
        "without one it waits for the surplus, then for the boot: {without} vs {with}"
    );
}

/// A command that spends a minute on the wire (a slow web interface, a sped-up replay) is judged
/// from its acknowledgement: the miner is not read back, re-sent or blamed while it is still
/// within its settle time counted from the acknowledgement.
#[test]
fn verification_counts_from_the_acknowledgement() {
    for ack_delay in [0i64, 60] {
        let fleet = Arc::new(
            FleetConfig::build_from_shorthand("s19xp:2:luxos", &Catalogue::bundled()).unwrap(),
        );
        let spec = fleet.spec_of(MinerId(0)).clone();
        let mut ctrl = Controller::new(fleet.clone(), quick(), t(0));
        let mut power = [spec.standby; 2];
        // The first wake, held back: (sent at, command).
        let mut held: Option<(i64, Command)> = None;
        let mut to_held_miner: Vec<(i64, Action)> = Vec::new();
        let report = |ctrl: &mut Controller, s: i64, m: u32, p: Watts| {
            let status = if p > spec.standby {
                MinerStatus::Mining {
                    power: p,
                    hashrate: HashRate(1.0),
                }
            } else {
                MinerStatus::Asleep { power: p }
            };
            ctrl.handle_input(
                t(s),
                Input::Miner(MinerReport {
                    miner: MinerId(m),
                    at: t(s),
                    status,
                }),
            );
        };
        for s in 0..400 {
            ctrl.handle_input(
                t(s),
                Input::Surplus {
                    at: t(s),
                    available: spec.max_power() * 1.2,
                },
            );
            ctrl.handle_timeout(t(s));
            while let Some(c) = ctrl.poll_command() {
                let m = c.miner.0;
                if held.is_some_and(|(_, h)| h.miner == c.miner)
                    || (held.is_none() && matches!(c.action, Action::Wake(_)))
                {
                    to_held_miner.push((s, c.action));
                }
                if held.is_none() && matches!(c.action, Action::Wake(_)) {
                    held = Some((s, c));
                    continue;
                }
                match c.action {
                    Action::Sleep => power[m as usize] = spec.standby,
                    Action::Wake(l) | Action::SetLevel(l) => {
                        power[m as usize] = spec.level_power(l)
                    }
                    Action::Query | Action::Resume => {}
                }
                ctrl.handle_input(
                    t(s),
                    Input::Outcome(CommandOutcome {
                        id: c.id,
                        miner: c.miner,
                        result: Ok(Ok(())),
                    }),
                );
                report(&mut ctrl, s, m, power[m as usize]);
            }
            if let Some((sent, c)) = held {
                let m = c.miner.0;
                if s == sent + ack_delay {
                    if let Action::Wake(l) = c.action {
                        power[m as usize] = spec.level_power(l);
                    }
                    ctrl.handle_input(
                        t(s),
                        Input::Outcome(CommandOutcome {
                            id: c.id,
                            miner: c.miner,
                            result: Ok(Ok(())),
                        }),
                    );
                }
                // The miner reports once booted and ramped: well inside its settle time from the
                // acknowledgement, well outside it from the send when the ack was late.
                if s == sent + ack_delay + 12 {
                    report(&mut ctrl, s, m, power[m as usize]);
                }
            }
            ctrl.check_accounting().unwrap();
        }
        let (sent, c) = held.expect("the controller woke a miner");
        let early: Vec<_> = to_held_miner
            .iter()
            .filter(|(s, a)| *s > sent && *s <= sent + ack_delay + 12 && *a == Action::Query)
            .collect();
        assert!(
            early.is_empty(),
            "ack after {ack_delay} s: read back before it could settle: {to_held_miner:?}"
        );
        assert_eq!(
            ctrl.fault_of(c.miner),
            None,
            "ack after {ack_delay} s: {to_held_miner:?}"
        );
    }
}

#[test]
fn a_state_read_before_the_write_landed_does_not_count_as_drift() {
    // A slow miner's sweep reply carries its state from when the read began: a miner woken and
    // verified may still be reported asleep by a read sent before the wake. Those reports must
    // not add up to "disobedient". The control: a miner that really stops is still found.
    for stale in [true, false] {
        let mut h = Harness::new("s21:1", quick());
        let surplus = |_| Some(Watts::from_kw(10.0));
        h.run(0, 300, surplus);
        assert!(h.power[0] > Watts(1000.0), "the miner runs");
        let woken_at = h
            .sent
            .iter()
            .rev()
            .find(|(_, c)| c.action.is_write())
            .map(|(at, _)| *at)
            .expect("the miner was told something");
        if !stale {
            // It stops by itself and ignores every command from now on.
            h.disobedient.push(0);
            h.power[0] = h.fleet.spec_of(MinerId(0)).standby;
        }
        for s in 300..1500 {
            if s % 10 == 0 {
                let now = t(s);
                let at = if stale {
                    woken_at - Duration::from_secs(1)
                } else {
                    now
                };
                h.ctrl.handle_input(
                    now,
                    Input::Miner(MinerReport {
                        miner: MinerId(0),
                        at,
                        status: MinerStatus::Asleep { power: Watts(10.0) },
                    }),
                );
            }
            h.step(t(s), surplus(s));
        }
        let faults = h.ctrl.stats().faults;
        if stale {
            assert_eq!(faults, 0, "stale reports blamed the miner");
            assert!(h.power[0] > Watts(1000.0), "the miner still runs");
        } else {
            // Found, routed around; its sleep retry finds it asleep and takes it back, and the
            // cycle repeats: the count shows it.
            assert!(
                faults >= 2,
                "a miner that stopped was never blamed ({faults})"
            );
        }
    }
}

#[test]
fn a_falling_surplus_is_acted_on_before_the_next_tick() {
    let mut h = Harness::new("s21:10", quick());
    h.run(0, 300, |_| Some(Watts::from_kw(20.0)));
    assert!(h.load() > Watts::from_kw(15.0), "{}", h.load());
    // Between ticks (299.4 s; the last was at 299 s), the surplus halves: cuts go out at once,
    // not at 300 s.
    let now = Timestamp::from_millis(t(299).as_millis() + 400);
    h.ctrl.handle_input(
        now,
        Input::Surplus {
            at: now,
            available: Watts::from_kw(10.0),
        },
    );
    assert!(
        h.ctrl.poll_timeout().is_some_and(|d| d <= now),
        "no immediate tick"
    );
    h.ctrl.handle_timeout(now);
    let mut cuts = 0;
    while let Some(c) = h.ctrl.poll_command() {
        if matches!(c.action, Action::Sleep | Action::SetLevel(_)) {
            cuts += 1;
        }
    }
    assert!(cuts > 0, "no cut sent at once");
    // A rise waits for the tick, as before.
    let mut h = Harness::new("s21:10", quick());
    h.run(0, 300, |_| Some(Watts::from_kw(10.0)));
    h.ctrl.handle_input(
        now,
        Input::Surplus {
            at: now,
            available: Watts::from_kw(20.0),
        },
    );
    assert!(
        h.ctrl.poll_timeout().is_some_and(|d| d > now),
        "a rise does not need an early tick"
    );
}

#[test]
fn an_excluded_miner_sleeps_and_stays_out_until_included() {
    let mut h = Harness::new("s21:20", quick());
    h.run(0, 600, |_| Some(Watts::from_mw(1.0)));
    let running = (0..20).filter(|&m| h.power[m] > Watts(100.0)).count();
    assert_eq!(running, 20, "a surplus above the fleet runs every miner");
    h.ctrl.handle_input(
        t(600),
        Input::Operator(OperatorCommand::Exclude(MinerId(3))),
    );
    h.apply(t(600));
    assert_eq!(h.ctrl.fault_of(MinerId(3)), Some(FaultKind::Excluded));
    assert!(h.power[3] <= Watts(20.0), "told to sleep: {}", h.power[3]);
    // Asleep reports do not bring it back, and retries never wake it.
    h.run(601, 2400, |_| Some(Watts::from_mw(1.0)));
    assert!(h.power[3] <= Watts(20.0));
    assert_eq!(h.ctrl.fault_of(MinerId(3)), Some(FaultKind::Excluded));
    assert!(
        !h.sent
            .iter()
            .any(|(at, c)| *at > t(600) && c.miner == MinerId(3) && c.action.is_write()),
        "no command to an excluded miner after its sleep"
    );
    assert_eq!(h.ctrl.stats().faults, 0, "an exclusion is not a fault");
    h.ctrl.handle_input(
        t(2400),
        Input::Operator(OperatorCommand::Include(MinerId(3))),
    );
    h.run(2400, 3600, |_| Some(Watts::from_mw(1.0)));
    assert_eq!(h.ctrl.fault_of(MinerId(3)), None);
    assert!(h.power[3] > Watts(100.0), "back under control, it runs");
    // An exclusion of a miner that does not exist changes nothing.
    h.ctrl.handle_input(
        t(3600),
        Input::Operator(OperatorCommand::Exclude(MinerId(999))),
    );
    assert_eq!(h.ctrl.faulted(), 0);
}

#[test]
fn an_excluded_miner_left_running_is_made_room_for() {
    // A miner that ignores the sleep (a technician runs it) keeps drawing: the rest of the
    // fleet makes room so that the total stays under the surplus.
    let mut h = Harness::new("s21:20", quick());
    h.run(0, 600, |_| Some(Watts::from_kw(50.0)));
    let m = (0..20).find(|&m| h.power[m] > Watts(100.0)).unwrap() as u32;
    h.disobedient.push(m);
    h.ctrl.handle_input(
        t(600),
        Input::Operator(OperatorCommand::Exclude(MinerId(m))),
    );
    h.run(600, 1800, |_| Some(Watts::from_kw(50.0)));
    assert!(h.power[m as usize] > Watts(100.0));
    assert!(h.load() <= Watts::from_kw(50.0), "{}", h.load());
}

// ----- steps of the surplus (issue 13) -----------------------------------------------------------

/// Every firmware kind, on the same model.
const FIRMWARES: [&str; 6] = [
    "braiins-os",
    "whatsminer-v3",
    "vnish",
    "luxos",
    "stock-antminer",
    "on-off",
];

/// 40 S21 on `firmware`, settled on a surplus of `share` of the fleet's maximum, with the
/// default settings (ten minutes on and off).
fn settled(firmware: &str, share: f64) -> (Harness, Watts) {
    let mut h = Harness::new(&format!("s21:40:{firmware}"), ControllerConfig::default());
    let surplus = h.fleet.max_power() * share;
    h.run(0, 1800, |_| Some(surplus));
    assert!(
        h.load() > surplus * 0.9 && h.load() <= surplus,
        "{firmware}: settled at {} on {surplus}",
        h.load()
    );
    (h, surplus)
}

/// Miners drawing more than their standby.
fn running(h: &Harness) -> Vec<u32> {
    h.fleet
        .miner_ids()
        .filter(|&m| h.power[m.index()] > h.fleet.spec_of(m).standby)
        .map(|m| m.0)
        .collect()
}

/// Sleep commands sent at or after `from` that followed the surplus (not operator, fail-safe or
/// reconcile).
fn dispatch_sleeps(h: &Harness, from: Timestamp) -> usize {
    h.sent
        .iter()
        .filter(|(at, c)| {
            *at >= from
                && c.action == Action::Sleep
                && matches!(c.reason, Reason::Dispatch | Reason::Protect)
        })
        .count()
}

/// Draw of `miners` at their lowest level, above standby, plus the fleet's standby.
fn at_minimum(h: &Harness, miners: &[u32]) -> Watts {
    let standby: Watts = h
        .fleet
        .miner_ids()
        .map(|m| h.fleet.spec_of(m).standby)
        .sum();
    standby
        + miners
            .iter()
            .map(|&m| {
                let spec = h.fleet.spec_of(MinerId(m));
                spec.min_power() - spec.standby
            })
            .sum::<Watts>()
}

#[test]
fn a_fall_is_taken_at_its_new_level_within_one_tick_on_every_firmware() {
    for fw in FIRMWARES {
        let (mut h, before) = settled(fw, 0.8);
        let cap = before * 0.5;
        let was_running = running(&h);
        h.step(t(1800), Some(cap));
        let margin = h.ctrl.margin();
        // The allowed load is the new level less the margin: not below it (a step is not a
        // trend), and at once.
        let allowed = h.ctrl.allowed();
        assert!(
            (allowed - (cap - margin)).abs() < Watts(1.0),
            "{fw}: allowed {allowed} after a fall to {cap} (margin {margin})"
        );
        assert!(h.load() <= cap, "{fw}: {} above {cap}", h.load());
        // Only what does not fit at the lowest levels sleeps.
        let slept = dispatch_sleeps(&h, t(1800));
        if at_minimum(&h, &was_running) <= allowed {
            assert_eq!(slept, 0, "{fw}: the running set fits at its minimum");
        } else {
            assert!(slept > 0, "{fw}: something had to sleep");
            let still = running(&h);
            let one_more = {
                let mut v = still.clone();
                v.push(*was_running.iter().find(|m| !still.contains(m)).unwrap());
                v
            };
            assert!(
                at_minimum(&h, &one_more) > allowed - h.ctrl.deadband,
                "{fw}: slept more than needed ({slept} of {})",
                was_running.len()
            );
        }
        // It stays there: no further fall while the surplus holds.
        let settled_load = h.load();
        h.run(1801, 1900, |_| Some(cap));
        assert!(
            h.load() >= settled_load * 0.99 && h.load() <= cap,
            "{fw}: {} after holding at {cap} (was {settled_load})",
            h.load()
        );
    }
}

#[test]
fn overlapping_caps_keep_the_fleet_between_85_percent_of_the_cap_and_the_cap() {
    // The OpenADR case: no-event cap 300 kW on a fleet running 251 kW, a 100 kW cap,
    // then an overlapping 40 kW cap for 20 s, then the 100 kW cap alone, then no event.
    for fw in FIRMWARES {
        let mut h = Harness::new(&format!("s21:80:{fw}"), ControllerConfig::default());
        let kw = Watts::from_kw;
        let cap = |s: i64| match s {
            ..1800 => kw(251.0),
            1800..1815 => kw(100.0),
            1815..1835 => kw(40.0),
            1835..1860 => kw(100.0),
            _ => kw(251.0),
        };
        // From 10 s after each step (the harness's fleet is instant), and after a rise also
        // the wake delay of the miners the cap before it slept.
        let wake = h.fleet.specs[0].wake_delay.as_secs() as i64;
        let checked_from = |step: i64| {
            if step == 1835 {
                step + 10 + wake
            } else {
                step + 10
            }
        };
        for s in 0..1900 {
            h.step(t(s), Some(cap(s)));
            let c = cap(s);
            assert!(h.load() <= c, "{fw} at {s}: {} above the cap {c}", h.load());
            let last_step = [1800, 1815, 1835].into_iter().filter(|&x| x <= s).max();
            if last_step.is_some_and(|x| s >= checked_from(x)) && s < 1860 {
                assert!(
                    h.load() >= c * 0.85,
                    "{fw} at {s}: {} below 85 % of {c}",
                    h.load()
                );
            }
        }
        // After the events the fleet is back near the no-event cap within the wake
        // confirmation and the firmware's wake delay.
        let confirm = ControllerConfig::default().wake_confirm.as_secs() as i64;
        h.run(1900, 1880 + confirm + wake, |_| Some(kw(251.0)));
        assert!(h.load() >= kw(251.0) * 0.85, "{fw}: back to {}", h.load());
    }
}

#[test]
fn a_dip_shorter_than_min_off_costs_no_more_mining_than_the_dip() {
    for fw in FIRMWARES {
        let (mut h, before) = settled(fw, 0.8);
        let load_before = h.load();
        let count_before = running(&h).len();
        // 20 s at 30 % of the level, then back.
        h.run(1800, 1820, |_| Some(before * 0.3));
        let slept = dispatch_sleeps(&h, t(1800));
        assert!(slept > 0, "{fw}: a dip to 30 % sleeps some miners");
        h.run(1820, 1821, |_| Some(before));
        // Back at once: the running miners are raised in this tick, the slept ones woken early
        // (counted as a cycle, with their own reason).
        let rewakes: Vec<u32> = h
            .sent
            .iter()
            .filter(|(at, c)| *at >= t(1820) && matches!(c.action, Action::Wake(_)))
            .map(|(_, c)| {
                assert_eq!(c.reason, Reason::Rewake, "{fw}: an early wake says so");
                c.miner.0
            })
            .collect();
        assert_eq!(
            rewakes.len(),
            slept,
            "{fw}: every miner the dip slept is woken"
        );
        // Once booted (the firmware's wake delay), the fleet draws what it drew before.
        let wake = h.fleet.specs[0].wake_delay.as_secs() as i64;
        h.run(1821, 1822 + wake, |_| Some(before));
        assert!(
            h.load() >= load_before * 0.99,
            "{fw}: {} after the dip, {load_before} before",
            h.load()
        );
        assert_eq!(running(&h).len(), count_before, "{fw}");
        // A second dip within ten minutes sleeps miners again, but a miner woken early once is
        // not woken early again within min_off: no chattering.
        h.run(1822 + wake, 2100, |_| Some(before));
        h.run(2100, 2120, |_| Some(before * 0.3));
        h.run(2120, 2400, |_| Some(before));
        let mut early: std::collections::HashMap<u32, usize> = Default::default();
        for (_, c) in h.sent.iter().filter(|(_, c)| c.reason == Reason::Rewake) {
            *early.entry(c.miner.0).or_default() += 1;
        }
        assert!(
            early.values().all(|&n| n == 1),
            "{fw}: a miner woken early twice in ten minutes"
        );
    }
}

#[test]
fn without_short_dips_a_slept_miner_rests_min_off() {
    let cfg = ControllerSettings {
        short_dip_s: 0.0,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let mut h = Harness::new("s21:40:braiins-os", cfg);
    let before = h.fleet.max_power() * 0.8;
    h.run(0, 1800, |_| Some(before));
    h.run(1800, 1820, |_| Some(before * 0.3));
    h.run(1820, 2300, |_| Some(before));
    assert!(dispatch_sleeps(&h, t(1800)) > 0);
    let slept: Vec<u32> = h
        .sent
        .iter()
        .filter(|(at, c)| *at >= t(1800) && c.action == Action::Sleep)
        .map(|(_, c)| c.miner.0)
        .collect();
    assert!(
        h.sent.iter().all(|(at, c)| !(*at >= t(1800)
            && *at < t(2400)
            && matches!(c.action, Action::Wake(_))
            && slept.contains(&c.miner.0))),
        "a miner the dip slept woke within min_off"
    );
    assert!(h.sent.iter().all(|(_, c)| c.reason != Reason::Rewake));
    // The running miners still come back at once (no rise limit within a short dip's time).
    assert!(h.load() >= at_minimum(&h, &running(&h)), "{}", h.load());
}

#[test]
fn a_fall_then_a_partial_rise_climbs_from_what_the_fleet_draws() {
    for fw in FIRMWARES {
        let (mut h, before) = settled(fw, 0.8);
        h.run(1800, 1830, |_| Some(before * 0.4));
        let low = h.load();
        h.step(t(1830), Some(before * 0.6));
        // The allowed load climbs from the fleet's draw: it is at once at least what the fleet
        // draws, never back at a depressed value.
        assert!(
            h.ctrl.allowed() >= low,
            "{fw}: allowed {} under the draw {low}",
            h.ctrl.allowed()
        );
        let wake = h.fleet.specs[0].wake_delay.as_secs() as i64;
        h.run(1831, 1840 + wake, |_| Some(before * 0.6));
        let want = before * 0.6 - h.ctrl.margin();
        assert!(
            h.load() >= want * 0.95 && h.load() <= before * 0.6,
            "{fw}: {} after a partial rise to {}",
            h.load(),
            before * 0.6
        );
    }
}

#[test]
fn a_rise_during_a_dip_returns_at_once_then_climbs_at_the_rise_limit() {
    for fw in FIRMWARES {
        let (mut h, before) = settled(fw, 0.5);
        let allowed_before = h.ctrl.allowed();
        h.run(1800, 1820, |_| Some(before * 0.4));
        // The surplus comes back above where it was.
        h.step(t(1820), Some(before * 1.6));
        let rise = h.fleet.max_power() * ControllerConfig::default().max_rise_fraction_per_s;
        assert!(
            h.ctrl.allowed() >= allowed_before,
            "{fw}: {} back below {allowed_before}",
            h.ctrl.allowed()
        );
        assert!(
            h.ctrl.allowed() <= allowed_before + rise + Watts(1.0),
            "{fw}: {} beyond the pre-dip level plus one tick's rise",
            h.ctrl.allowed()
        );
        h.run(1821, 1900, |_| Some(before * 1.6));
        assert!(
            h.ctrl.allowed() > allowed_before + rise * 20.0,
            "{fw}: it climbs on"
        );
    }
}

#[test]
fn a_slow_inefficient_model_is_not_woken_for_room_a_fast_efficient_one_can_take() {
    // 10 S19j Pro on stock firmware (29.5 J/TH, 3 minutes to wake) listed before 20 S21 XP on
    // LuxOS (13.5 J/TH, 5 s). Under the rise limit the stock miners' three-minute horizon sees
    // far more room than the LuxOS miners' five seconds; the room is the S21 XPs' all the same.
    let mut h = Harness::new(
        "s19jpro:10:stock-antminer,s21xp:20:luxos",
        ControllerConfig::default(),
    );
    h.run(0, 900, |_| Some(Watts::from_kw(50.0)));
    let woken_stock = h
        .sent
        .iter()
        .filter(|(_, c)| c.miner.0 < 10 && matches!(c.action, Action::Wake(_)))
        .count();
    assert_eq!(
        woken_stock, 0,
        "stock miners woken for room the S21 XP could take"
    );
    assert!(h.load() > Watts::from_kw(45.0), "{}", h.load());
}

#[test]
fn cuts_held_by_the_command_rate_go_when_a_token_is_back_not_at_the_next_tick() {
    let cfg = ControllerSettings {
        max_commands_per_s: 10.0,
        command_burst: 10.0,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let mut h = Harness::new("s21:50", cfg);
    h.run(0, 1200, |_| Some(Watts::from_mw(1.0)));
    let now = Timestamp::from_millis(t(1200).as_millis() + 300);
    h.ctrl
        .handle_input(now, Input::Operator(OperatorCommand::ShedAll));
    h.apply(now);
    let first = h.sent.iter().filter(|(at, _)| *at == now).count();
    assert_eq!(first, 10, "the burst");
    // The next token is 100 ms away, the next tick 700 ms: the controller asks to be woken for
    // the token.
    let token = Timestamp::from_millis(now.as_millis() + 100);
    let wake = h.ctrl.poll_timeout().unwrap();
    assert!(
        wake <= token,
        "woken at {wake:?}, the token is at {token:?}"
    );
    h.ctrl.handle_timeout(token);
    h.apply(token);
    assert_eq!(h.sent.iter().filter(|(at, _)| *at == token).count(), 1);
    assert!(h.ctrl.poll_timeout().unwrap() <= Timestamp::from_millis(token.as_millis() + 100));
}

#[test]
fn a_lower_fill_fraction_runs_more_miners_at_a_lower_power() {
    let run = |fill: f64| {
        let cfg = ControllerSettings {
            fill_fraction: fill,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let mut h = Harness::new("s21:40:braiins-os", cfg);
        let surplus = h.fleet.max_power() * 0.5;
        h.run(0, 1800, |_| Some(surplus));
        let running = running(&h);
        let top = running
            .iter()
            .map(|&m| h.power[m as usize])
            .fold(Watts::ZERO, Watts::max);
        (running.len(), top, h.load(), surplus)
    };
    let (n_full, top_full, load_full, surplus) = run(1.0);
    let (n_fill, top_fill, load_fill, _) = run(0.8);
    assert!(
        n_fill > n_full,
        "{n_fill} running at 80 % against {n_full} at nameplate"
    );
    assert!(top_full >= Watts(3400.0), "filled to nameplate: {top_full}");
    assert!(
        top_fill <= Watts(3500.0 * 0.8 + 1.0),
        "filled to 80 %: {top_fill}"
    );
    for load in [load_full, load_fill] {
        assert!(
            load <= surplus && load > surplus * 0.95,
            "{load} of {surplus}"
        );
    }
    let bad = ControllerSettings {
        fill_fraction: 1.5,
        ..Default::default()
    };
    assert_eq!(bad.validate().unwrap_err().field, "fill_fraction");
}

#[test]
fn a_miner_that_refuses_levels_is_used_on_off() {
    let mut h = Harness::new("s19xp:10:luxos", quick());
    h.own_level = vec![1, 4, 7];
    let nameplate = h.fleet.specs[0].nameplate_power;
    // Room for every miner at nameplate, then for about half the fleet at some level.
    let full = nameplate * 10.0 + Watts::from_kw(5.0);
    let half = nameplate * 5.3;
    h.run(0, 300, |_| Some(full));
    for m in 0..10 {
        let want = if h.own_level.contains(&m) {
            ControlUse::OnOff
        } else {
            ControlUse::Levels
        };
        assert_eq!(h.ctrl.control_of(MinerId(m)), want, "miner {m}");
        assert_eq!(h.ctrl.fault_of(MinerId(m)), None, "miner {m}");
        assert!(
            h.power[m as usize] > nameplate * 0.9,
            "miner {m} is not mining"
        );
    }
    assert!(h.ctrl.stats().degraded >= 3);
    let resumes = |h: &Harness, m: u32| {
        (h.sent.iter())
            .filter(|(_, c)| c.miner.0 == m && c.action == Action::Resume)
            .count()
    };
    assert!(resumes(&h, 1) >= 1 && resumes(&h, 0) == 0);
    // A fall: the fleet follows it, the on/off miners by sleeping, never above the surplus.
    for s in 300..900 {
        h.step(t(s), Some(half));
        if s > 310 {
            assert!(h.load() <= half, "at {s}: {} above {half}", h.load());
        }
    }
    assert!(h.load() > half * 0.8, "{} far below {half}", h.load());
    for m in &h.own_level {
        let sent = h.sent.iter().filter(|(_, c)| c.miner.0 == *m);
        assert!(
            sent.clone()
                .all(|(at, c)| *at < t(300) || !matches!(c.action, Action::SetLevel(_))),
            "miner {m} was sent a level after it refused one"
        );
    }
}

#[test]
fn levels_are_offered_again_on_request_and_on_a_timer() {
    let cfg = ControllerSettings {
        min_on_s: 60.0,
        min_off_s: 60.0,
        wake_confirm_s: 5.0,
        reprobe_s: 600.0,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let mut h = Harness::new("s19xp:4:luxos", cfg);
    h.own_level = vec![2];
    let nameplate = h.fleet.specs[0].nameplate_power;
    h.run(0, 200, |_| Some(nameplate * 4.0 + Watts::from_kw(1.0)));
    assert_eq!(h.ctrl.control_of(MinerId(2)), ControlUse::OnOff);
    // The operator turned ATM off and asks: levels again, and they are taken.
    h.own_level.clear();
    h.ctrl
        .handle_input(t(200), Input::Operator(OperatorCommand::Reprobe));
    assert_eq!(h.ctrl.control_of(MinerId(2)), ControlUse::Levels);
    h.run(200, 500, |s| {
        Some(nameplate * (3.0 + (s % 100) as f64 / 100.0))
    });
    assert_eq!(h.ctrl.control_of(MinerId(2)), ControlUse::Levels);
    // ATM on again: refused at the next level change, on/off again; the timer offers levels
    // again 600 s after that refusal, and the next level change tries one.
    h.own_level = vec![2];
    let varying = |s: i64| Some(nameplate * (2.5 + (s % 50) as f64 / 50.0));
    h.run(500, 800, varying);
    assert_eq!(h.ctrl.control_of(MinerId(2)), ControlUse::OnOff);
    assert_eq!(h.ctrl.fault_of(MinerId(2)), None);
    h.run(800, 1600, varying);
    let level_tries: Vec<i64> = (h.sent.iter())
        .filter(|(at, c)| {
            c.miner.0 == 2
                && *at >= t(500)
                && matches!(c.action, Action::SetLevel(_) | Action::Wake(_))
        })
        .map(|(at, _)| at.as_millis() / 1000 - T0)
        .collect();
    assert!(
        level_tries.len() >= 2 && level_tries[level_tries.len() - 1] >= level_tries[0] + 600,
        "levels tried at {level_tries:?}: none 600 s after the refusal"
    );
    assert!(
        level_tries.windows(2).all(|w| w[1] >= w[0] + 600),
        "levels tried more often than every 600 s: {level_tries:?}"
    );
}

#[test]
fn a_miner_that_refuses_wake_too_is_faulted() {
    let mut h = Harness::new("s19xp:4:luxos", quick());
    h.own_level = vec![3];
    h.refusing = vec![3];
    let nameplate = h.fleet.specs[0].nameplate_power;
    h.run(0, 300, |_| Some(nameplate * 4.0 + Watts::from_kw(1.0)));
    assert_eq!(h.ctrl.fault_of(MinerId(3)), Some(FaultKind::Refusing));
    assert_eq!(h.ctrl.control_of(MinerId(3)), ControlUse::None);
}

/// A harness whose miners all mine at their nameplate level, taken over by a new controller.
fn adopted(spec: &str) -> (Harness, Watts) {
    let mut h = Harness::new(spec, quick());
    let reports: Vec<MinerStatus> = (h.fleet.miner_ids())
        .map(|m| {
            let s = h.fleet.spec_of(m);
            MinerStatus::Mining {
                power: s.level_power(s.preferred_level),
                hashrate: HashRate(1.0),
            }
        })
        .collect();
    for (m, r) in reports.iter().enumerate() {
        h.power[m] = r.power().unwrap();
    }
    h.ctrl.adopt(t(0), &reports);
    let load = h.load();
    (h, load)
}

#[test]
fn a_running_fleet_is_taken_over_without_a_bump() {
    let (mut h, load) = adopted("s21:20,s19jpro:10:stock-antminer");
    // The surplus is what the fleet draws plus the margin: nothing needs to move.
    let surplus = load + h.ctrl.margin() + Watts(10.0);
    for s in 0..600 {
        h.step(t(s), Some(surplus));
        assert!(h.load() >= load * 0.97, "at {s}: {} from {load}", h.load());
    }
    assert!(
        h.sent.iter().all(|(_, c)| c.action == Action::Query),
        "commands to an adopted fleet that needed none: {:?}",
        &h.sent[..h.sent.len().min(5)]
    );
    // A fall: the fleet follows it down at once, modulating first.
    let lower = load * 0.8;
    for s in 600..700 {
        h.step(t(s), Some(lower));
    }
    assert!(h.load() <= lower && h.load() > lower * 0.9, "{}", h.load());
}

#[test]
fn an_adopted_fleet_without_a_surplus_reading_goes_to_the_failsafe_load_in_time() {
    let (mut h, load) = adopted("s21:20");
    let within = h.ctrl.config().failsafe_within.as_secs() as i64;
    let failsafe = h.ctrl.config().failsafe_load;
    let standby: Watts = h
        .fleet
        .miner_ids()
        .map(|m| h.fleet.spec_of(m).standby)
        .sum();
    // Not shed at once: brought down over `failsafe_within`, as after a lost signal.
    h.step(t(1), None);
    let step = (load - failsafe) * (2.0 / within as f64);
    assert!(
        h.load() >= load - step,
        "not held at first: {} from {load}",
        h.load()
    );
    h.run(2, within + 2, |_| None);
    assert!(
        h.load() <= failsafe.max(standby) + Watts(1.0),
        "{} above the fail-safe load {failsafe} after {within} s",
        h.load()
    );
}

#[test]
fn a_miner_that_boots_three_times_slower_than_its_table_is_not_faulted() {
    // Stock firmware: 180 s in the table, 540 s for these two. They report booting meanwhile.
    let mut h = Harness::new("s19jpro:6:stock-antminer", quick());
    h.slow_wake = vec![1, 4];
    let nameplate = h.fleet.specs[0].nameplate_power;
    h.run(0, 1200, |_| Some(nameplate * 6.0 + Watts::from_kw(2.0)));
    for m in 0..6 {
        assert_eq!(h.ctrl.fault_of(MinerId(m)), None, "miner {m}");
        assert!(
            h.power[m as usize] > nameplate * 0.9,
            "miner {m} is not mining"
        );
    }
    let wakes = (h.sent.iter())
        .filter(|(_, c)| c.miner.0 == 1 && c.action.wakes())
        .count();
    assert_eq!(wakes, 1, "the slow miner was woken again: {:?}", h.sent);
}

#[test]
fn a_plant_trip_holds_the_fleet_whatever_the_operator_says() {
    let mut h = Harness::new("s21:20", quick());
    let surplus = |_| Some(Watts::from_kw(40.0));
    h.run(0, 300, surplus);
    assert!(h.load() > Watts::from_kw(30.0), "{}", h.load());
    let standby: Watts = h
        .fleet
        .miner_ids()
        .map(|m| h.fleet.spec_of(m).standby)
        .sum();
    let shed = |h: &Harness| h.load() <= standby + Watts(1.0);
    // The trip sheds at once; an operator's resume does not lift it.
    h.ctrl
        .handle_input(t(300), Input::Protection(Some(Watts::ZERO)));
    h.apply(t(300));
    assert!(shed(&h), "a trip sheds at once: {}", h.load());
    h.ctrl
        .handle_input(t(301), Input::Operator(OperatorCommand::Resume));
    h.run(301, 600, surplus);
    assert!(shed(&h), "a resume lifted the trip: {}", h.load());
    // An operator's shed given during the trip outlives the trip's clearing.
    h.ctrl
        .handle_input(t(600), Input::Operator(OperatorCommand::ShedAll));
    h.ctrl.handle_input(t(601), Input::Protection(None));
    h.run(601, 900, surplus);
    assert!(
        shed(&h),
        "the trip's clearing undid an operator's shed: {}",
        h.load()
    );
    // The operator resumes: the fleet comes back.
    h.ctrl
        .handle_input(t(900), Input::Operator(OperatorCommand::Resume));
    h.run(900, 1300, surplus);
    assert!(h.load() > Watts::from_kw(30.0), "{}", h.load());
    // A trip point that cannot be read holds the fleet at the fail-safe load (here 10 kW).
    h.ctrl
        .handle_input(t(1300), Input::Protection(Some(Watts::from_kw(10.0))));
    h.run(1300, 1400, surplus);
    assert!(h.load() <= Watts::from_kw(10.0), "{}", h.load());
    assert!(h.load() > Watts::from_kw(5.0), "{}", h.load());
}

/// Feeds `input` at `now`, runs the controller's deadlines due, and returns its commands.
fn feed(ctrl: &mut Controller, now: Timestamp, input: Option<Input>) -> Vec<Command> {
    if let Some(input) = input {
        ctrl.handle_input(now, input);
    }
    ctrl.handle_timeout(now);
    std::iter::from_fn(|| ctrl.poll_command()).collect()
}

fn report(s: i64, status: MinerStatus) -> Option<Input> {
    Some(Input::Miner(MinerReport {
        miner: MinerId(0),
        at: t(s),
        status,
    }))
}

#[test]
fn a_miner_faulted_with_a_command_on_the_wire_is_watched_again_once_it_recovers() {
    // Overload: a wake goes out and no answer comes; the miner's reads fail too, long enough to
    // route it around. Its next read finds it asleep, and it is taken back. Then the wake that
    // was on the wire lands: the miner hashes although the controller wants it asleep (the
    // surplus is gone). Its reports must count: it is told to sleep again.
    let mut ctrl = Controller::new(
        Arc::new(FleetConfig::build_from_shorthand("s21:1", &Catalogue::bundled()).unwrap()),
        quick(),
        t(0),
    );
    let surplus = |s: i64, kw: f64| {
        Some(Input::Surplus {
            at: t(s),
            available: Watts::from_kw(kw),
        })
    };
    let standby = MinerStatus::Asleep { power: Watts(10.0) };
    let mut woken_at = None;
    for s in 0..60 {
        for c in feed(&mut ctrl, t(s), surplus(s, 10.0)) {
            if c.action.wakes() {
                woken_at = Some(s);
                continue;
            }
            // Anything before the wake is answered, and the miner read asleep.
            let outcome = CommandOutcome {
                id: c.id,
                miner: c.miner,
                result: Ok(Ok(())),
            };
            feed(&mut ctrl, t(s), Some(Input::Outcome(outcome)));
            feed(&mut ctrl, t(s), report(s, standby));
        }
        if woken_at.is_some() {
            break;
        }
    }
    // No outcome for the wake; the reads fail until it is routed around.
    let mut s = woken_at.expect("the miner was woken") + 1;
    while ctrl.fault_of(MinerId(0)).is_none() {
        assert!(s < 400, "a silent miner was never routed around");
        feed(&mut ctrl, t(s), surplus(s, 0.0));
        feed(&mut ctrl, t(s), report(s, MinerStatus::Unreachable));
        s += 1;
    }
    feed(&mut ctrl, t(s), report(s, standby));
    assert_eq!(
        ctrl.fault_of(MinerId(0)),
        None,
        "taken back on a read of sleep"
    );
    // The late wake lands: it hashes at full power, read after it was taken back.
    let mut told = Vec::new();
    for s in s + 1..s + 120 {
        feed(&mut ctrl, t(s), surplus(s, 0.0));
        let hashing = MinerStatus::Mining {
            power: Watts(3500.0),
            hashrate: HashRate::from_ths(200.0),
        };
        told.extend(feed(&mut ctrl, t(s), report(s, hashing)));
    }
    assert!(
        told.iter().any(|c| c.action == Action::Sleep),
        "a miner hashing against its plan was never told to sleep: {told:?}"
    );
}

#[test]
fn a_wake_sent_again_does_not_hold_back_the_miners_woken_after_it() {
    // Overload: the first miner woken loses its wake twice and gets it on the third try. The
    // one woken with it boots on time and hashes. When the surplus then falls to nothing, it is
    // cut as a running miner: the late wake of the first must not keep it out of the running
    // plan (where a cut looks) until its own boot is over.
    let spec = "s21:4:braiins-os";
    let (start, first) = {
        let mut dry = Harness::new(spec, quick());
        dry.run(0, 20, |_| Some(Watts::from_kw(100.0)));
        let wakes: Vec<(Timestamp, u32)> = (dry.sent.iter())
            .filter(|(_, c)| c.action.wakes())
            .map(|(at, c)| (*at, c.miner.0))
            .collect();
        assert!(wakes.len() >= 2, "two are woken at once: {wakes:?}");
        assert_eq!(wakes[1].0, wakes[0].0, "at once: {wakes:?}");
        ((wakes[0].0.as_millis() / 1000 - T0), wakes[0].1)
    };
    let mut h = Harness::new(spec, quick());
    let wake = h.fleet.specs[0].wake_delay.as_secs() as i64;
    let nameplate = h.fleet.specs[0].nameplate_power;
    assert!(wake >= 30, "the test needs a slow boot: {wake} s");
    let plenty = |_| Some(Watts::from_kw(100.0));
    h.run(0, start, plenty);
    h.silent.push(first);
    h.step(t(start), plenty(0));
    h.step(t(start + wake / 3), plenty(0));
    h.silent.clear();
    let booted = start + wake + 2;
    h.run(start + 2 * wake / 3, booted, plenty);
    let hashing = (0..4).filter(|&m| h.power[m as usize] > nameplate * 0.3);
    assert!(hashing.count() >= 1, "the others hash: {:?}", h.power);
    assert!(
        h.power[first as usize] < nameplate * 0.1,
        "miner {first} still boots"
    );
    let fallen = h.load() * 0.6;
    h.run(booted, booted + 6, |_| Some(fallen));
    assert!(
        h.load() <= fallen,
        "{} drawn on a {fallen} surplus 6 s after it fell; sent: {:?}",
        h.load(),
        h.sent
    );
}

#[test]
fn a_read_back_slower_than_the_grace_is_waited_for_not_held_against_the_miner() {
    // Overload: a wake is acknowledged, and the read-back that should confirm it waits behind
    // a long sweep. The daemon's slow I/O is not the miner disobeying: no write is sent again
    // and the miner is not routed around while the read is on the wire; its answer settles it.
    let fleet =
        Arc::new(FleetConfig::build_from_shorthand("s21:1", &Catalogue::bundled()).unwrap());
    let cfg = quick();
    let grace = cfg.verify_grace.as_secs() as i64;
    let mut ctrl = Controller::new(fleet.clone(), cfg, t(0));
    let surplus = |s: i64| {
        Some(Input::Surplus {
            at: t(s),
            available: Watts::from_kw(10.0),
        })
    };
    let answer = |c: &Command| {
        Some(Input::Outcome(CommandOutcome {
            id: c.id,
            miner: c.miner,
            result: Ok(Ok(())),
        }))
    };
    let standby = MinerStatus::Asleep { power: Watts(10.0) };
    let mut woken = None;
    let mut s = 0;
    while woken.is_none() {
        assert!(s < 60, "never woken");
        for c in feed(&mut ctrl, t(s), surplus(s)) {
            feed(&mut ctrl, t(s), answer(&c));
            match c.action {
                Action::Wake(level) => woken = Some(level),
                _ => {
                    feed(&mut ctrl, t(s), report(s, standby));
                }
            }
        }
        s += 1;
    }
    let level = woken.unwrap();
    // The miner obeys; nothing reads it until the read-back's answer.
    let mut queried_at = None;
    while queried_at.is_none() {
        assert!(s < 400, "no read-back was sent");
        for c in feed(&mut ctrl, t(s), surplus(s)) {
            assert_eq!(c.action, Action::Query, "at {s}: {c:?}");
            queried_at = Some(s);
        }
        s += 1;
    }
    let answered_at = queried_at.unwrap() + 3 * grace;
    for s in s..answered_at {
        let sent = feed(&mut ctrl, t(s), surplus(s));
        assert!(
            sent.is_empty(),
            "at {s}, the read-back on the wire: {sent:?}"
        );
        assert_eq!(ctrl.fault_of(MinerId(0)), None, "at {s}");
    }
    let hashing = MinerStatus::Mining {
        power: fleet.spec_of(MinerId(0)).level_power(level),
        hashrate: HashRate::from_ths(200.0),
    };
    let mut later = feed(&mut ctrl, t(answered_at), report(answered_at, hashing));
    for s in answered_at + 1..answered_at + 3 * grace {
        later.extend(feed(&mut ctrl, t(s), surplus(s)));
    }
    assert!(
        later
            .iter()
            .all(|c| !c.action.wakes() && c.reason != Reason::Reconcile),
        "the answer confirmed the wake: {later:?}"
    );
    assert_eq!(ctrl.fault_of(MinerId(0)), None);
}
