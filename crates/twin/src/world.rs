//! The deterministic world: a virtual clock that jumps from one deadline to the next, the
//! simulated fleet, the surplus profile and its meter, seeded noise and faults, the controller
//! under test, KPIs, and invariants checked at every sample.
//!
//! Telemetry is event-driven: a miner reports when a ramp ends or when it is read back
//! (`Action::Query`), and a silent miner is reported unreachable every poll interval, as the
//! daemon's poller would. Successful command acknowledgements are implied; failures are
//! delivered as [`CommandOutcome`]s.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hashsink_core::api::TransportError;
use hashsink_core::{
    Action, Baseline, BaselineConfig, Command, CommandOutcome, Controller, ControllerConfig,
    ControllerStats, Fleet, FleetController, Input, MinerId, MinerReport, MinerStatus,
    OperatorCommand, Reason, Setpoint, SetpointConfig,
};
use hashsink_units::{Timestamp, Watts};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::disturb::{Disturbance, IdealFollower, IdealKpis, MeterSettings};
use crate::faults::{Fault, FaultPlan};
use crate::kpi::{KpiAccumulator, Kpis};
use crate::miners::{Mode, SimFleet};
use crate::profile::Profile;

/// Which controller drives the fleet.
#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "built a few times per run, never in a hot loop"
)]
pub enum ControllerChoice {
    Hashsink(ControllerConfig),
    /// The on/off automation (`core::baseline`).
    Baseline(BaselineConfig),
    /// The 5 s proportional setpoint dispatch of fleet managers (`core::setpoint`).
    Setpoint(SetpointConfig),
}

impl ControllerChoice {
    pub fn name(&self) -> &'static str {
        match self {
            ControllerChoice::Hashsink(_) => "hashsink",
            ControllerChoice::Baseline(_) => "baseline",
            ControllerChoice::Setpoint(_) => "setpoint",
        }
    }
}

/// Everything that defines a run. Same scenario, same report, bit for bit.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub fleet: Arc<Fleet>,
    pub profile: Arc<Profile>,
    pub start: Timestamp,
    pub duration: Duration,
    pub controller: ControllerChoice,
    pub seed: u64,
    /// Measurement noise on the surplus reading: AR(1) with a 60 s correlation time, sigma as a
    /// share of the profile's peak. Zero for none.
    pub noise_fraction: f64,
    pub faults: FaultPlan,
    /// Scripted operator commands.
    pub operator: Vec<(Timestamp, OperatorCommand)>,
    /// How often the surplus and fleet meters are read, and the KPI integration step.
    pub sample_period: Duration,
    /// How often the daemon's poller would read each miner (used for silent miners).
    pub poll_interval: Duration,
    /// Tracking tolerance for the 5-minute interval KPI, as a share of fleet capacity.
    pub tolerance_fraction: f64,
    pub check_invariants: bool,
    /// Record a trace row this often (none if `None`).
    pub trace_every: Option<Duration>,
    /// Integrate energy and hashes into consecutive buckets of this length from `start` (none
    /// if `None`): the study's hourly dispatch series.
    pub energy_buckets: Option<Duration>,
    /// Steps and dips on top of the profile (a factor on it; none by default).
    pub disturbance: Arc<Disturbance>,
    /// The surplus meter the controller reads (perfect by default).
    pub meter: MeterSettings,
}

impl Scenario {
    /// A plain run of `profile` from its start for `duration`.
    pub fn new(
        fleet: Arc<Fleet>,
        profile: Arc<Profile>,
        controller: ControllerChoice,
        duration: Duration,
    ) -> Self {
        let start = profile.start();
        Self {
            fleet,
            profile,
            start,
            duration,
            controller,
            seed: 0,
            noise_fraction: 0.0,
            faults: FaultPlan::none(),
            operator: Vec::new(),
            sample_period: Duration::from_secs(1),
            poll_interval: Duration::from_secs(10),
            tolerance_fraction: 0.02,
            check_invariants: true,
            trace_every: None,
            energy_buckets: None,
            disturbance: Arc::new(Disturbance::none()),
            meter: MeterSettings::default(),
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub controller: String,
    pub kpis: Kpis,
    pub surplus_drops_per_day: f64,
    /// The first invariant violations (at most 20), with their times.
    pub violations: Vec<String>,
    pub violation_count: u64,
    /// Shed measurements: seconds from each operator shed to 95 % of running load gone.
    pub shed_times_s: Vec<f64>,
    /// Commands by kind.
    pub command_counts: CommandCounts,
    /// Miner events the twin processed.
    pub events: u64,
    /// Miners times simulated seconds: the work a step-by-step simulation would do.
    pub miner_seconds: f64,
    pub stats: Option<ControllerStats>,
    /// Sampled time series, when the scenario asked for one.
    pub trace: Vec<TraceRow>,
    /// Energy and hashes per bucket, when the scenario asked for them.
    pub buckets: Vec<EnergyBucket>,
    /// The step-following ideal on the same profile, disturbance and meter.
    pub ideal: IdealKpis,
}

/// Energy and work integrated over one bucket of a run (exact sums of the samples inside it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct EnergyBucket {
    /// Surplus that was available, MWh.
    pub surplus_mwh: f64,
    /// Fleet load covered by the surplus, MWh.
    pub absorbed_mwh: f64,
    /// Fleet load above the surplus (imported), MWh.
    pub import_mwh: f64,
    /// Hashes computed, in PH/s-hours (PH/s times hours).
    pub ph_hours: f64,
}

/// One sample of a run's time series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TraceRow {
    pub t: Timestamp,
    pub surplus_mw: f64,
    /// What the controller aimed for (hashsink only; NaN for the baseline).
    pub allowed_mw: f64,
    pub running_mw: f64,
    pub standby_mw: f64,
    pub hashrate_phs: f64,
    /// Miners the controller routes around (hashsink only).
    pub faulted: u32,
    /// The fleet power the controller's plan adds up to (hashsink only; NaN for the baseline).
    pub planned_mw: f64,
}

/// Commands sent, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CommandCounts {
    pub set_level: u64,
    pub wake: u64,
    pub sleep: u64,
    pub query: u64,
}

enum Driver {
    Hashsink(Box<Controller>),
    Baseline(Box<Baseline>),
    Setpoint(Box<Setpoint>),
}

impl Driver {
    fn controller(&mut self) -> &mut dyn FleetController {
        match self {
            Driver::Hashsink(c) => c.as_mut(),
            Driver::Baseline(b) => b.as_mut(),
            Driver::Setpoint(p) => p.as_mut(),
        }
    }
}

/// Limits the invariant checks allow, derived from the controller's settings and the fleet.
#[derive(Clone, Copy)]
struct Bounds {
    /// Window over which the load may lag a fall of the surplus in normal operation.
    normal: Duration,
    /// The same while, or shortly after, the surplus signal was faulty.
    signal: Duration,
    /// Time a miner stays "faulty" after its fault episode ends.
    miner_recover: Duration,
    failsafe_after: Duration,
    failsafe_load: Watts,
    shed_within: Duration,
    epsilon: Watts,
    max_per_second: u64,
    min_on: Duration,
    min_off: Duration,
    short_dip: Duration,
}

impl Bounds {
    /// `meter`: its worst lag (period, delay and jitter together) widens the reaction window,
    /// and half its resolution, an error of the reading the controller cannot see, the
    /// tolerance.
    fn new(
        cfg: &ControllerConfig,
        controller: &Controller,
        fleet: &Fleet,
        noise: Watts,
        meter: &MeterSettings,
    ) -> Self {
        let meter_lag = meter.worst_lag();
        let fanout = Duration::from_secs_f64(fleet.len() as f64 / cfg.max_commands_per_s);
        let slack = Duration::from_secs(2);
        let normal = cfg.cadence * 2 + fanout + controller.reaction() + slack + meter_lag;
        let frozen = cfg.frozen_after.unwrap_or_default();
        let failsafe_after = cfg.max_reading_age + frozen + cfg.failsafe_within + normal;
        Self {
            normal,
            signal: failsafe_after + cfg.resume_after + normal,
            miner_recover: cfg.silent_after
                + (cfg.verify_grace + controller.reaction()) * 4
                + cfg.fault_retry
                + normal,
            failsafe_after,
            failsafe_load: cfg.failsafe_load,
            shed_within: normal,
            // "Import bounded by the margin": the margin is the tolerance, plus five sigma of
            // measurement noise when the run adds noise, plus half the meter's resolution.
            epsilon: controller.margin() + noise * 5.0 + meter.resolution * 0.5,
            max_per_second: (cfg.command_burst + cfg.max_commands_per_s).ceil() as u64,
            min_on: cfg.min_on,
            min_off: cfg.min_off,
            short_dip: cfg.short_dip,
        }
    }
}

/// Sliding maximum of the true surplus over a time window.
struct WindowMax {
    samples: VecDeque<(Timestamp, f64)>,
}

impl WindowMax {
    fn push(&mut self, t: Timestamp, v: f64) {
        while self.samples.back().is_some_and(|&(_, x)| x <= v) {
            self.samples.pop_back();
        }
        self.samples.push_back((t, v));
    }
    fn max_since(&mut self, since: Timestamp, keep: Timestamp) -> f64 {
        while self.samples.len() > 1 && self.samples[0].0 < keep && self.samples[1].0 <= keep {
            self.samples.pop_front();
        }
        self.samples
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|s| s.1)
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

struct Checker {
    bounds: Bounds,
    window: WindowMax,
    last_sleep: Vec<Option<(Timestamp, Reason)>>,
    last_wake: Vec<Option<Timestamp>>,
    last_rewake: Vec<Option<Timestamp>>,
    second: i64,
    in_second: u64,
    last_good_reading: Timestamp,
    signal_fault_until: Timestamp,
    shed_deadline: Option<Timestamp>,
    violations: Vec<String>,
    count: u64,
}

impl Checker {
    fn new(bounds: Bounds, miners: usize, start: Timestamp) -> Self {
        Self {
            bounds,
            window: WindowMax {
                samples: VecDeque::new(),
            },
            last_sleep: vec![None; miners],
            last_wake: vec![None; miners],
            last_rewake: vec![None; miners],
            second: i64::MIN,
            in_second: 0,
            last_good_reading: start,
            signal_fault_until: Timestamp(i64::MIN / 2),
            shed_deadline: None,
            violations: Vec::new(),
            count: 0,
        }
    }

    fn violate(&mut self, at: Timestamp, what: String) {
        self.count += 1;
        if self.violations.len() < 20 {
            self.violations
                .push(format!("{}: {what}", hashsink_units::format_time(at)));
        }
    }

    fn on_command(&mut self, now: Timestamp, cmd: &Command, max_level: u8) {
        if !cmd.action.is_write() {
            return;
        }
        let sec = now.as_millis().div_euclid(1000);
        if sec != self.second {
            self.second = sec;
            self.in_second = 0;
        }
        self.in_second += 1;
        if self.in_second == self.bounds.max_per_second + 1 {
            self.violate(
                now,
                format!(
                    "command rate above {} in one second",
                    self.bounds.max_per_second
                ),
            );
        }
        let m = cmd.miner.index();
        match cmd.action {
            Action::Wake(level) | Action::SetLevel(level) if level > max_level => {
                self.violate(
                    now,
                    format!("miner {m}: level {level} outside its envelope (max {max_level})"),
                );
            }
            _ => {}
        }
        match cmd.action {
            Action::Wake(_) => {
                if let Some((slept, why)) = self.last_sleep[m] {
                    let asleep = now.saturating_since(slept);
                    let early = asleep < self.bounds.min_off;
                    // The short-dip rule: a miner a fall of the surplus put to sleep may be
                    // woken early, once per `min_off`. (The controller decides it within
                    // `short_dip` of the sleep; the command may wait longer in the outbox for
                    // room, on stock firmware for minutes.)
                    let rewoken_lately = self.last_rewake[m]
                        .is_some_and(|r| now.saturating_since(r) < self.bounds.min_off);
                    let short_dip_rewake = cmd.reason == Reason::Rewake
                        && matches!(why, Reason::Dispatch | Reason::Protect)
                        && !self.bounds.short_dip.is_zero()
                        && !rewoken_lately;
                    // Only the first wake after a sleep starts a cycle: one sent again (the
                    // first was lost or not carried out) repeats a decision already checked.
                    let repeated = self.last_wake[m].is_some_and(|w| w >= slept);
                    if early && !short_dip_rewake && !repeated {
                        self.violate(
                            now,
                            format!(
                                "miner {m} woken {:.0} s after it was put to sleep ({why:?}), \
                                 sent as {:?}",
                                asleep.as_secs_f64(),
                                cmd.reason
                            ),
                        );
                    }
                    if early && cmd.reason == Reason::Rewake {
                        self.last_rewake[m] = Some(now);
                    }
                }
                self.last_wake[m] = Some(now);
            }
            Action::Sleep => {
                if cmd.reason == Reason::Dispatch {
                    if let Some(woken) = self.last_wake[m] {
                        if now.saturating_since(woken) < self.bounds.min_on {
                            self.violate(
                                now,
                                format!(
                                    "miner {m} voluntarily slept {:.0} s after waking",
                                    now.secs_since(woken)
                                ),
                            );
                        }
                    }
                }
                if cmd.reason != Reason::Reconcile {
                    self.last_sleep[m] = Some((now, cmd.reason));
                }
            }
            _ => {}
        }
    }

    fn on_sample(
        &mut self,
        now: Timestamp,
        surplus: Watts,
        running_controllable: Watts,
        standby: Watts,
    ) {
        self.window.push(now, surplus.w());
        let b = self.bounds;
        let window = if now < self.signal_fault_until + b.signal {
            b.signal
        } else {
            b.normal
        };
        let max_surplus = self.window.max_since(now - window, now - b.signal);
        let allowance = Watts((max_surplus - standby.w()).max(0.0)) + b.epsilon;
        if running_controllable > allowance {
            let what = format!(
                "running load {:.3} MW above the highest surplus of the last {} s less standby ({:.3} MW)",
                running_controllable.mw(),
                window.as_secs(),
                (allowance - b.epsilon).mw()
            );
            self.violate(now, what);
        }
        if now.saturating_since(self.last_good_reading) > b.failsafe_after
            && running_controllable > b.failsafe_load + b.epsilon
        {
            let what = format!(
                "no good surplus reading for {:.0} s but running load is {:.3} MW (fail-safe {:.3} MW)",
                now.secs_since(self.last_good_reading),
                running_controllable.mw(),
                b.failsafe_load.mw()
            );
            self.violate(now, what);
        }
        if let Some(deadline) = self.shed_deadline {
            if now >= deadline {
                self.shed_deadline = None;
                if running_controllable > b.epsilon {
                    self.violate(
                        now,
                        format!(
                            "{:.3} MW still running after a shed command",
                            running_controllable.mw()
                        ),
                    );
                }
            }
        }
    }
}

fn status_of(fleet: &SimFleet, m: u32, now: Timestamp) -> MinerStatus {
    let r = fleet.reading(m, now);
    match r.mode {
        Mode::Asleep => MinerStatus::Asleep { power: r.power },
        Mode::Booting => MinerStatus::Booting { power: r.power },
        Mode::Mining => MinerStatus::Mining {
            power: r.power,
            hashrate: r.hashrate,
        },
    }
}

/// A surplus reading on its way from the meter to the controller.
struct InFlight {
    arrival: Timestamp,
    value: Watts,
    /// False for a reading a signal fault has made wrong (frozen, clock-stepped).
    good: bool,
    clock_offset_ms: i64,
}

/// Per-miner fault flags (counts, since episodes may overlap).
#[derive(Clone, Copy, Default)]
struct MinerFaults {
    silent: u8,
    ignores: u8,
    faulty_until: Timestamp,
}

/// Runs a scenario; `progress` is called with the share done, now and then.
pub fn run(scenario: &Scenario, progress: &mut dyn FnMut(f64)) -> RunReport {
    let sc = scenario;
    let end = sc.start + sc.duration;
    let fleet = sc.fleet.clone();
    let mut sim = SimFleet::new(fleet.clone(), sc.start);
    let mut driver = match &sc.controller {
        ControllerChoice::Hashsink(cfg) => Driver::Hashsink(Box::new(Controller::new(
            fleet.clone(),
            cfg.clone(),
            sc.start,
        ))),
        ControllerChoice::Baseline(cfg) => Driver::Baseline(Box::new(Baseline::new(
            fleet.clone(),
            cfg.clone(),
            sc.start,
        ))),
        ControllerChoice::Setpoint(cfg) => Driver::Setpoint(Box::new(Setpoint::new(
            fleet.clone(),
            cfg.clone(),
            sc.start,
        ))),
    };
    let peak = sc.profile.peak();
    let noise_sigma = peak * sc.noise_fraction;
    let mut checker = match (&driver, sc.check_invariants) {
        (Driver::Hashsink(c), true) => {
            let ControllerChoice::Hashsink(cfg) = &sc.controller else {
                unreachable!()
            };
            Some(Checker::new(
                Bounds::new(cfg, c, &fleet, noise_sigma, &sc.meter),
                fleet.len(),
                sc.start,
            ))
        }
        _ => None,
    };
    let max_level: Vec<u8> = fleet.specs.iter().map(|s| s.max_level()).collect();
    let mut kpi = KpiAccumulator::new(fleet.max_power(), fleet.max_power() * sc.tolerance_fraction);
    let mut rng = ChaCha8Rng::seed_from_u64(sc.seed);
    let meter_period = sc.meter.period.unwrap_or(sc.sample_period);
    let phi = (-meter_period.as_secs_f64() / 60.0).exp();
    let innovation = (1.0 - phi * phi).sqrt();
    let mut noise = 0.0f64;
    let mut truth_at = {
        let mut profile = sc.profile.cursor();
        let mut steps = sc.disturbance.cursor();
        // The true surplus: the profile with its steps and dips (read at non-decreasing times).
        move |t: Timestamp| profile.at(t) * steps.factor(t)
    };
    let mut next_meter = sc.start;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut last_arrival = sc.start;
    let mut ideal = IdealFollower::new(&fleet);
    let mut miner_faults = vec![MinerFaults::default(); fleet.len()];
    let mut faulty: Vec<u32> = Vec::new();
    // Fault boundaries as (time, episode index, starting?)
    let mut boundaries: Vec<(Timestamp, usize, bool)> = Vec::new();
    for (i, e) in sc.faults.episodes.iter().enumerate() {
        boundaries.push((e.start, i, true));
        boundaries.push((e.end(), i, false));
    }
    boundaries.sort_by_key(|b| (b.0, !b.2, b.1));
    let mut next_boundary = 0;
    let mut active_signal: Vec<usize> = Vec::new();
    let mut frozen_value: Option<Watts> = None;
    let mut meter_stale: Option<(Timestamp, Watts)> = None;
    let mut meter_stale_count = 0u32;
    let mut operator: Vec<(Timestamp, OperatorCommand)> = sc.operator.clone();
    operator.sort_by_key(|o| o.0);
    let mut next_op = 0;
    let mut next_sample = sc.start;
    let mut next_poll = sc.start + sc.poll_interval;
    let mut counts = CommandCounts::default();
    let mut shed_open: Option<(Timestamp, Watts)> = None;
    let mut shed_times = Vec::new();
    let total_samples = (sc.duration.as_secs_f64() / sc.sample_period.as_secs_f64()).max(1.0);
    let progress_every = ((total_samples / 200.0) as u64).max(1);
    let mut samples = 0u64;
    let mut reports: Vec<(Timestamp, MinerReport)> = Vec::new();
    let mut outcomes: Vec<(Timestamp, CommandOutcome)> = Vec::new();
    let mut trace = Vec::new();
    let mut next_trace = sc.start;
    let mut buckets: Vec<EnergyBucket> = match sc.energy_buckets {
        Some(b) => vec![
            EnergyBucket::default();
            (sc.duration.as_secs_f64() / b.as_secs_f64())
                .ceil()
                .max(1.0) as usize
        ],
        None => Vec::new(),
    };

    loop {
        let mut now = next_sample;
        if let Some(t) = sim.next_event_time() {
            now = now.min(t);
        }
        if let Some(t) = driver.controller().poll_timeout() {
            now = now.min(t);
        }
        if let Some(&(t, ..)) = boundaries.get(next_boundary) {
            now = now.min(t);
        }
        if let Some(&(t, _)) = operator.get(next_op) {
            now = now.min(t);
        }
        now = now.min(next_meter);
        if let Some(r) = in_flight.front() {
            now = now.min(r.arrival);
        }
        if now > end {
            break;
        }

        // 1. Miner physics up to now; reports from finished ramps.
        while let Some(done) = sim.process_next(now) {
            if let Some(m) = done {
                if miner_faults[m as usize].silent == 0 {
                    reports.push((
                        now,
                        MinerReport {
                            miner: MinerId(m),
                            at: now,
                            status: status_of(&sim, m, now),
                        },
                    ));
                }
            }
        }
        for (t, r) in reports.drain(..) {
            driver.controller().handle_input(t, Input::Miner(r));
        }

        // 2. Fault episodes starting or ending now.
        while let Some(&(t, i, starting)) = boundaries.get(next_boundary) {
            if t > now {
                break;
            }
            next_boundary += 1;
            let episode = &sc.faults.episodes[i];
            match episode.fault {
                Fault::MinerSilent | Fault::MinerIgnores | Fault::MinerReboot => {
                    for &m in &episode.miners {
                        let f = &mut miner_faults[m as usize];
                        match (episode.fault, starting) {
                            (Fault::MinerSilent, true) => f.silent += 1,
                            (Fault::MinerSilent, false) => f.silent -= 1,
                            (Fault::MinerIgnores, true) => f.ignores += 1,
                            (Fault::MinerIgnores, false) => f.ignores -= 1,
                            (Fault::MinerReboot, true)
                                if sim.miners[m as usize].mode != Mode::Booting =>
                            {
                                sim.reboot(m, now)
                            }
                            _ => {}
                        }
                        if f.faulty_until < now {
                            faulty.push(m);
                        }
                        let recover = checker
                            .as_ref()
                            .map_or(Duration::ZERO, |c| c.bounds.miner_recover);
                        f.faulty_until = f.faulty_until.max(episode.end() + recover);
                    }
                }
                Fault::MeterStale => {
                    if starting {
                        meter_stale_count += 1;
                    } else {
                        meter_stale_count -= 1;
                    }
                    if meter_stale_count == 0 {
                        meter_stale = None;
                    }
                }
                _ => {
                    if starting {
                        active_signal.push(i);
                        if episode.fault == Fault::SurplusFrozen {
                            frozen_value.get_or_insert(truth_at(now) + Watts(noise));
                        }
                    } else {
                        active_signal.retain(|&j| j != i);
                        if !active_signal
                            .iter()
                            .any(|&j| sc.faults.episodes[j].fault == Fault::SurplusFrozen)
                        {
                            frozen_value = None;
                        }
                    }
                    if let Some(c) = checker.as_mut() {
                        c.signal_fault_until =
                            c.signal_fault_until.max(if starting { end } else { now });
                        if !starting && !active_signal.is_empty() {
                            c.signal_fault_until = end;
                        }
                    }
                }
            }
        }

        // 3. Operator commands.
        while let Some(&(t, cmd)) = operator.get(next_op) {
            if t > now {
                break;
            }
            next_op += 1;
            if cmd == OperatorCommand::ShedAll {
                shed_open = Some((now, sim.running_power(now)));
                if let Some(c) = checker.as_mut() {
                    c.shed_deadline = Some(now + c.bounds.shed_within);
                }
            }
            driver.controller().handle_input(now, Input::Operator(cmd));
        }

        // 4. The surplus meter: a measurement every meter period, delivered after its delay.
        if now >= next_meter {
            let truth = truth_at(now);
            if noise_sigma.w() > 0.0 {
                let z: f64 = StandardNormal.sample(&mut rng);
                noise = phi * noise + noise_sigma.w() * innovation * z;
            }
            let mut value = Some(sc.meter.quantise(truth + Watts(noise)));
            let mut good = true;
            let mut clock_offset_ms = 0;
            for &i in &active_signal {
                let e = &sc.faults.episodes[i];
                match e.fault {
                    Fault::SignalLoss => value = None,
                    // Off for 15 s, on for 15 s.
                    Fault::SignalFlapping
                        if (now.saturating_since(e.start).as_secs() / 15) % 2 == 0 =>
                    {
                        value = None
                    }
                    Fault::SurplusFrozen => {
                        value = value.map(|_| frozen_value.unwrap_or(Watts::ZERO));
                        good = false;
                    }
                    Fault::ClockStep(offset) => {
                        clock_offset_ms = offset * 1000;
                        good = false;
                    }
                    _ => {}
                }
            }
            if let Some(value) = value {
                let jitter = if sc.meter.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    let ms = sc.meter.jitter.as_millis() as f64;
                    Duration::from_millis((rng.random::<f64>() * ms) as u64)
                };
                // Readings never overtake each other.
                let arrival = (now + sc.meter.delay + jitter).max(last_arrival);
                last_arrival = arrival;
                in_flight.push_back(InFlight {
                    arrival,
                    value,
                    good,
                    clock_offset_ms,
                });
            }
            next_meter = now + meter_period;
        }
        // Readings reach the controller stamped on arrival (as a Modbus or IEC 104 reading is:
        // neither carries its measurement time), plus any clock step of the source.
        while in_flight.front().is_some_and(|r| r.arrival <= now) {
            let r = in_flight.pop_front().expect("peeked");
            if r.good {
                if let Some(c) = checker.as_mut() {
                    c.last_good_reading = now;
                }
            }
            ideal.reading(now, r.value);
            driver.controller().handle_input(
                now,
                Input::Surplus {
                    at: Timestamp(now.as_millis() + r.clock_offset_ms),
                    available: r.value,
                },
            );
        }

        // 5. The fleet meter, KPIs and invariants.
        if now == next_sample {
            let truth = truth_at(now);
            let running = sim.running_power(now);
            let standby = sim.standby_power(now);
            let measured = running + standby;
            let meter = if meter_stale_count > 0 {
                *meter_stale.get_or_insert((now, measured))
            } else {
                (now, measured)
            };
            driver.controller().handle_input(
                now,
                Input::FleetPower {
                    at: meter.0,
                    measured: meter.1,
                },
            );

            let hashrate = sim.hashrate(now);
            if let Some(every) = sc.trace_every {
                if now >= next_trace {
                    let (allowed, planned, faulted) = match &driver {
                        Driver::Hashsink(c) => {
                            (c.allowed().mw(), c.planned_load().mw(), c.faulted() as u32)
                        }
                        Driver::Baseline(_) | Driver::Setpoint(_) => (f64::NAN, f64::NAN, 0),
                    };
                    trace.push(TraceRow {
                        t: now,
                        surplus_mw: truth.mw(),
                        allowed_mw: allowed,
                        running_mw: running.mw(),
                        standby_mw: standby.mw(),
                        hashrate_phs: hashrate.phs(),
                        faulted,
                        planned_mw: planned,
                    });
                    next_trace = now + every;
                }
            }
            kpi.add(sc.sample_period, truth, running, standby, hashrate);
            ideal.add(now, sc.sample_period, truth);
            if let Some(len) = sc.energy_buckets {
                let i = (now.secs_since(sc.start) / len.as_secs_f64()) as usize;
                if let Some(b) = buckets.get_mut(i) {
                    let hours = sc.sample_period.as_secs_f64() / 3600.0;
                    let load = running + standby;
                    b.surplus_mwh += truth.mw() * hours;
                    b.absorbed_mwh += load.min(truth).mw() * hours;
                    b.import_mwh += (load - truth).positive_part().mw() * hours;
                    b.ph_hours += hashrate.phs() * hours;
                }
            }
            faulty.retain(|&m| miner_faults[m as usize].faulty_until >= now);
            if let Some(c) = checker.as_mut() {
                let faulty_running: Watts = faulty
                    .iter()
                    .filter(|&&m| sim.miners[m as usize].mode != Mode::Asleep)
                    .map(|&m| sim.miner_power(m, now))
                    .sum();
                c.on_sample(
                    now,
                    truth,
                    (running - faulty_running).positive_part(),
                    standby,
                );
            }
            samples += 1;
            if samples % progress_every == 0 {
                progress(now.secs_since(sc.start) / sc.duration.as_secs_f64());
            }
            next_sample = now + sc.sample_period;
        }

        // Silent miners: the poller finds them unreachable.
        if now >= next_poll {
            for &m in &faulty {
                if miner_faults[m as usize].silent > 0 {
                    driver.controller().handle_input(
                        now,
                        Input::Miner(MinerReport {
                            miner: MinerId(m),
                            at: now,
                            status: MinerStatus::Unreachable,
                        }),
                    );
                }
            }
            next_poll = now + sc.poll_interval;
        }

        // 6. The controller's own deadlines and cadence.
        if driver.controller().poll_timeout().is_some_and(|t| t <= now) {
            driver.controller().handle_timeout(now);
        }

        // 7. Commands meet the miners.
        loop {
            while let Some(cmd) = driver.controller().poll_command() {
                let m = cmd.miner.0;
                if let Some(c) = checker.as_mut() {
                    c.on_command(
                        now,
                        &cmd,
                        max_level[fleet.miner_spec[m as usize].0 as usize],
                    );
                }
                match cmd.action {
                    Action::SetLevel(_) => counts.set_level += 1,
                    Action::Wake(_) => counts.wake += 1,
                    Action::Sleep => counts.sleep += 1,
                    Action::Query => counts.query += 1,
                }
                let f = miner_faults[m as usize];
                if f.silent > 0 {
                    if cmd.action == Action::Query {
                        reports.push((
                            now,
                            MinerReport {
                                miner: cmd.miner,
                                at: now,
                                status: MinerStatus::Unreachable,
                            },
                        ));
                    } else {
                        outcomes.push((
                            now,
                            CommandOutcome {
                                id: cmd.id,
                                miner: cmd.miner,
                                result: Err(TransportError::Timeout),
                            },
                        ));
                    }
                    continue;
                }
                if cmd.action.is_write() {
                    // The transport delivered it: every write gets an outcome, as in the daemon.
                    outcomes.push((
                        now,
                        CommandOutcome {
                            id: cmd.id,
                            miner: cmd.miner,
                            result: Ok(Ok(())),
                        },
                    ));
                }
                let settled = match cmd.action {
                    Action::Query => true,
                    _ if f.ignores > 0 => false,
                    Action::Sleep => sim.command_sleep(m, now),
                    Action::Wake(l) => sim.command_wake(m, l, now),
                    Action::SetLevel(l) => sim.command_level(m, l, now),
                };
                if settled {
                    reports.push((
                        now,
                        MinerReport {
                            miner: cmd.miner,
                            at: now,
                            status: status_of(&sim, m, now),
                        },
                    ));
                }
            }
            if reports.is_empty() && outcomes.is_empty() {
                break;
            }
            for (t, r) in reports.drain(..) {
                driver.controller().handle_input(t, Input::Miner(r));
            }
            for (t, o) in outcomes.drain(..) {
                driver.controller().handle_input(t, Input::Outcome(o));
            }
        }

        if let Some((t0, load0)) = shed_open {
            if sim.running_power(now) <= load0 * 0.05 {
                shed_times.push(now.secs_since(t0));
                shed_open = None;
            }
        }
    }
    progress(1.0);
    if std::env::var_os("HASHSINK_TWIN_DUMP").is_some() {
        if let Driver::Hashsink(c) = &driver {
            for m in 0..fleet.len() as u32 {
                if sim.miners[m as usize].mode != Mode::Asleep {
                    eprintln!(
                        "miner {m}: twin {:?} {:.0} W; controller {}",
                        sim.miners[m as usize].mode,
                        sim.miner_power(m, end).w(),
                        c.describe_miner(MinerId(m))
                    );
                }
            }
        }
    }

    if let (Some(c), Driver::Hashsink(ctrl)) = (checker.as_mut(), &driver) {
        if let Err(e) = ctrl.check_accounting() {
            c.violate(end, format!("controller accounting drifted: {e}"));
        }
    }
    let wakes: u64 = sim.miners.iter().map(|m| m.wakes as u64).sum();
    let shed95 = if shed_times.is_empty() {
        None
    } else {
        Some(shed_times.iter().cloned().fold(0.0, f64::max))
    };
    let stats = match &driver {
        Driver::Hashsink(c) => Some(c.stats().clone()),
        Driver::Baseline(_) | Driver::Setpoint(_) => None,
    };
    let (violations, violation_count) =
        checker.map(|c| (c.violations, c.count)).unwrap_or_default();
    let kpis = kpi.finish(
        wakes,
        fleet.len(),
        counts.set_level + counts.wake + counts.sleep,
        shed95,
    );
    RunReport {
        ideal: ideal.finish(kpis.reachable_mwh),
        controller: sc.controller.name().to_string(),
        kpis,
        command_counts: counts,
        surplus_drops_per_day: kpi.surplus_drops_per_day(),
        violations,
        violation_count,
        shed_times_s: shed_times,
        events: sim.events_processed,
        miner_seconds: fleet.len() as f64 * sc.duration.as_secs_f64(),
        stats,
        trace,
        buckets,
    }
}

/// A shed drill: the fleet at full load on an ample surplus, then an operator shed. Returns the
/// seconds until 95 % of the running load was gone.
pub fn shed_drill(fleet: Arc<Fleet>, controller: ControllerChoice, seed: u64) -> Option<f64> {
    let start = Timestamp::from_secs(1_700_000_000);
    let warm = Duration::from_secs(3600);
    let profile = Arc::new(Profile::constant(fleet.max_power() * 1.5, start, warm * 2));
    let mut scenario = Scenario::new(fleet, profile, controller, warm + Duration::from_secs(600));
    scenario.seed = seed;
    scenario.operator = vec![(start + warm, OperatorCommand::ShedAll)];
    run(&scenario, &mut |_| {}).kpis.shed95_s
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashsink_core::{Catalogue, CommandId, FleetConfig};

    fn checker() -> Checker {
        let fleet = FleetConfig::build_from_shorthand("s21:100", &Catalogue::bundled()).unwrap();
        let cfg = ControllerConfig::default();
        let controller = Controller::new(
            Arc::new(fleet.clone()),
            cfg.clone(),
            Timestamp::from_secs(0),
        );
        Checker::new(
            Bounds::new(
                &cfg,
                &controller,
                &fleet,
                Watts::ZERO,
                &MeterSettings::default(),
            ),
            fleet.len(),
            Timestamp::from_secs(0),
        )
    }

    #[test]
    fn load_may_lag_a_fall_only_for_the_reaction_window() {
        let mut c = checker();
        let kw = Watts::from_kw;
        for s in 0..100 {
            c.last_good_reading = Timestamp::from_secs(s);
            c.on_sample(Timestamp::from_secs(s), kw(200.0), kw(150.0), Watts::ZERO);
        }
        // The surplus falls to 100 kW; the load stays at 150 kW.
        for s in 100..103 {
            c.last_good_reading = Timestamp::from_secs(s);
            c.on_sample(Timestamp::from_secs(s), kw(100.0), kw(150.0), Watts::ZERO);
        }
        assert_eq!(c.count, 0, "inside the window: {:?}", c.violations);
        for s in 103..120 {
            c.last_good_reading = Timestamp::from_secs(s);
            c.on_sample(Timestamp::from_secs(s), kw(100.0), kw(150.0), Watts::ZERO);
        }
        assert!(c.count > 0);
        assert!(
            c.violations[0].contains("above the highest surplus"),
            "{:?}",
            c.violations
        );
    }

    #[test]
    fn lost_signal_must_end_at_the_failsafe_load() {
        let mut c = checker();
        for s in 0..200 {
            c.on_sample(
                Timestamp::from_secs(s),
                Watts::from_mw(1.0),
                Watts::from_kw(100.0),
                Watts::ZERO,
            );
        }
        assert!(
            c.violations
                .iter()
                .any(|v| v.contains("no good surplus reading")),
            "{:?}",
            c.violations
        );
    }

    #[test]
    fn dwell_and_rate_are_checked() {
        let mut c = checker();
        let cmd = |m: u32, action, reason| Command {
            id: CommandId(1),
            miner: MinerId(m),
            action,
            reason,
        };
        c.on_command(
            Timestamp::from_secs(10),
            &cmd(1, Action::Sleep, Reason::Dispatch),
            13,
        );
        c.on_command(
            Timestamp::from_secs(20),
            &cmd(1, Action::Wake(3), Reason::Dispatch),
            13,
        );
        assert!(
            c.violations.iter().any(|v| v.contains("woken 10 s after")),
            "{:?}",
            c.violations
        );
        c.on_command(
            Timestamp::from_secs(30),
            &cmd(1, Action::Sleep, Reason::Dispatch),
            13,
        );
        assert!(
            c.violations.iter().any(|v| v.contains("voluntarily slept")),
            "{:?}",
            c.violations
        );
        c.on_command(
            Timestamp::from_secs(40),
            &cmd(2, Action::SetLevel(20), Reason::Dispatch),
            13,
        );
        assert!(
            c.violations
                .iter()
                .any(|v| v.contains("outside its envelope")),
            "{:?}",
            c.violations
        );
        let before = c.count;
        for _ in 0..c.bounds.max_per_second + 1 {
            c.on_command(
                Timestamp::from_secs(50),
                &cmd(3, Action::SetLevel(1), Reason::Dispatch),
                13,
            );
        }
        assert_eq!(c.count, before + 1, "{:?}", c.violations.last());
    }
}
