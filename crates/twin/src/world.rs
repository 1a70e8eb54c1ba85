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
use hashsink_units::{HashRate, Timestamp, Watts};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::disturb::{Disturbance, DisturbanceCursor, IdealFollower, IdealKpis, MeterSettings};
use crate::faults::{Fault, FaultPlan};
use crate::kpi::{KpiAccumulator, Kpis};
use crate::miners::{Mode, SimFleet};
use crate::profile::{Profile, ProfileCursor};

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
    /// The name the report gives its controller (default: the controller's own name).
    pub label: Option<&'static str>,
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
            label: None,
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
    fn new(choice: &ControllerChoice, fleet: &Arc<Fleet>, start: Timestamp) -> Self {
        let fleet = fleet.clone();
        match choice {
            ControllerChoice::Hashsink(cfg) => {
                Driver::Hashsink(Box::new(Controller::new(fleet, cfg.clone(), start)))
            }
            ControllerChoice::Baseline(cfg) => {
                Driver::Baseline(Box::new(Baseline::new(fleet, cfg.clone(), start)))
            }
            ControllerChoice::Setpoint(cfg) => {
                Driver::Setpoint(Box::new(Setpoint::new(fleet, cfg.clone(), start)))
            }
        }
    }

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
            Action::Wake(_) | Action::Resume => {
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
    let mut world = World::new(scenario);
    while let Some(now) = world.next_time() {
        world.step(now, progress);
    }
    progress(1.0);
    world.finish()
}

/// The true surplus: the profile with its steps and dips, read at non-decreasing times.
struct Truth<'a> {
    profile: ProfileCursor<'a>,
    steps: DisturbanceCursor<'a>,
}

impl Truth<'_> {
    fn at(&mut self, t: Timestamp) -> Watts {
        self.profile.at(t) * self.steps.factor(t)
    }
}

/// The surplus meter: its AR(1) noise and the readings on their way to the controller.
struct SurplusMeter {
    period: Duration,
    /// The noise's correlation from one reading to the next, and its innovation's share.
    phi: f64,
    innovation: f64,
    sigma: Watts,
    noise: f64,
    next: Timestamp,
    in_flight: VecDeque<InFlight>,
    /// Readings never overtake each other.
    last_arrival: Timestamp,
}

/// The fault episodes in force.
struct FaultState {
    miners: Vec<MinerFaults>,
    /// Miners a fault has touched recently (the checker leaves their draw out).
    faulty: Vec<u32>,
    /// Episode boundaries as (time, episode index, starting?), in order.
    boundaries: Vec<(Timestamp, usize, bool)>,
    next_boundary: usize,
    /// Signal faults in force (episode indices).
    active_signal: Vec<usize>,
    frozen_value: Option<Watts>,
    meter_stale: Option<(Timestamp, Watts)>,
    meter_stale_count: u32,
}

impl FaultState {
    fn new(plan: &FaultPlan, miners: usize) -> Self {
        let mut boundaries: Vec<(Timestamp, usize, bool)> = Vec::new();
        for (i, e) in plan.episodes.iter().enumerate() {
            boundaries.push((e.start, i, true));
            boundaries.push((e.end(), i, false));
        }
        boundaries.sort_by_key(|b| (b.0, !b.2, b.1));
        Self {
            miners: vec![MinerFaults::default(); miners],
            faulty: Vec::new(),
            boundaries,
            next_boundary: 0,
            active_signal: Vec::new(),
            frozen_value: None,
            meter_stale: None,
            meter_stale_count: 0,
        }
    }

    fn next_boundary_time(&self) -> Option<Timestamp> {
        self.boundaries.get(self.next_boundary).map(|b| b.0)
    }
}

/// What the run records as it goes.
struct Record {
    kpi: KpiAccumulator,
    ideal: IdealFollower,
    counts: CommandCounts,
    /// An operator shed under way: when, and the running load then.
    shed_open: Option<(Timestamp, Watts)>,
    shed_times: Vec<f64>,
    trace: Vec<TraceRow>,
    next_trace: Timestamp,
    buckets: Vec<EnergyBucket>,
    samples: u64,
    progress_every: u64,
}

/// A run in progress: the fleet, the controller under test, the meters, the faults and what is
/// recorded. [`World::step`] handles everything due at one instant, in a fixed order.
struct World<'a> {
    sc: &'a Scenario,
    end: Timestamp,
    fleet: Arc<Fleet>,
    sim: SimFleet,
    driver: Driver,
    checker: Option<Checker>,
    max_level: Vec<u8>,
    rng: ChaCha8Rng,
    truth: Truth<'a>,
    meter: SurplusMeter,
    faults: FaultState,
    operator: Vec<(Timestamp, OperatorCommand)>,
    next_op: usize,
    next_sample: Timestamp,
    next_poll: Timestamp,
    /// Reports and outcomes waiting for the controller.
    reports: Vec<(Timestamp, MinerReport)>,
    outcomes: Vec<(Timestamp, CommandOutcome)>,
    record: Record,
}

impl<'a> World<'a> {
    fn new(sc: &'a Scenario) -> Self {
        let fleet = sc.fleet.clone();
        let driver = Driver::new(&sc.controller, &fleet, sc.start);
        let sigma = sc.profile.peak() * sc.noise_fraction;
        let checker = match (&driver, &sc.controller, sc.check_invariants) {
            (Driver::Hashsink(c), ControllerChoice::Hashsink(cfg), true) => Some(Checker::new(
                Bounds::new(cfg, c, &fleet, sigma, &sc.meter),
                fleet.len(),
                sc.start,
            )),
            _ => None,
        };
        let period = sc.meter.period.unwrap_or(sc.sample_period);
        let phi = (-period.as_secs_f64() / 60.0).exp();
        let mut operator = sc.operator.clone();
        operator.sort_by_key(|o| o.0);
        let total_samples = (sc.duration.as_secs_f64() / sc.sample_period.as_secs_f64()).max(1.0);
        let buckets = match sc.energy_buckets {
            Some(b) => {
                let n = (sc.duration.as_secs_f64() / b.as_secs_f64())
                    .ceil()
                    .max(1.0);
                vec![EnergyBucket::default(); n as usize]
            }
            None => Vec::new(),
        };
        let tolerance = fleet.max_power() * sc.tolerance_fraction;
        Self {
            sc,
            end: sc.start + sc.duration,
            sim: SimFleet::new(fleet.clone(), sc.start),
            driver,
            checker,
            max_level: fleet.specs.iter().map(|s| s.max_level()).collect(),
            rng: ChaCha8Rng::seed_from_u64(sc.seed),
            truth: Truth {
                profile: sc.profile.cursor(),
                steps: sc.disturbance.cursor(),
            },
            meter: SurplusMeter {
                period,
                phi,
                innovation: (1.0 - phi * phi).sqrt(),
                sigma,
                noise: 0.0,
                next: sc.start,
                in_flight: VecDeque::new(),
                last_arrival: sc.start,
            },
            faults: FaultState::new(&sc.faults, fleet.len()),
            operator,
            next_op: 0,
            next_sample: sc.start,
            next_poll: sc.start + sc.poll_interval,
            reports: Vec::new(),
            outcomes: Vec::new(),
            record: Record {
                kpi: KpiAccumulator::new(fleet.max_power(), tolerance),
                ideal: IdealFollower::new(&fleet),
                counts: CommandCounts::default(),
                shed_open: None,
                shed_times: Vec::new(),
                trace: Vec::new(),
                next_trace: sc.start,
                buckets,
                samples: 0,
                progress_every: ((total_samples / 200.0) as u64).max(1),
            },
            fleet,
        }
    }

    /// The next instant something is due, or none once the run is over.
    fn next_time(&mut self) -> Option<Timestamp> {
        let due = [
            Some(self.next_sample),
            self.sim.next_event_time(),
            self.driver.controller().poll_timeout(),
            self.faults.next_boundary_time(),
            self.operator.get(self.next_op).map(|o| o.0),
            Some(self.meter.next),
            self.meter.in_flight.front().map(|r| r.arrival),
        ];
        let now = due
            .into_iter()
            .flatten()
            .min()
            .expect("the next sample is always due");
        (now <= self.end).then_some(now)
    }

    /// Everything due at `now`, in order: miner physics, faults, operator commands, the surplus
    /// meter, the fleet meter with KPIs and invariants, the poller, the controller's deadlines,
    /// and its commands carried out.
    fn step(&mut self, now: Timestamp, progress: &mut dyn FnMut(f64)) {
        self.advance_miners(now);
        self.apply_faults(now);
        self.apply_operator(now);
        if now >= self.meter.next {
            self.read_surplus(now);
        }
        self.deliver_readings(now);
        if now == self.next_sample {
            self.sample(now, progress);
        }
        if now >= self.next_poll {
            self.poll_silent(now);
        }
        if self
            .driver
            .controller()
            .poll_timeout()
            .is_some_and(|t| t <= now)
        {
            self.driver.controller().handle_timeout(now);
        }
        self.carry_out_commands(now);
        if let Some((t0, load0)) = self.record.shed_open
            && self.sim.running_power(now) <= load0 * 0.05
        {
            self.record.shed_times.push(now.secs_since(t0));
            self.record.shed_open = None;
        }
    }

    /// Miner physics up to now; reports from finished ramps.
    fn advance_miners(&mut self, now: Timestamp) {
        while let Some(done) = self.sim.process_next(now) {
            if let Some(m) = done
                && self.faults.miners[m as usize].silent == 0
            {
                self.report(now, m);
            }
        }
        for (t, r) in self.reports.drain(..) {
            self.driver.controller().handle_input(t, Input::Miner(r));
        }
    }

    fn report(&mut self, now: Timestamp, m: u32) {
        let status = status_of(&self.sim, m, now);
        let report = MinerReport {
            miner: MinerId(m),
            at: now,
            status,
        };
        self.reports.push((now, report));
    }

    /// Fault episodes starting or ending now.
    fn apply_faults(&mut self, now: Timestamp) {
        while let Some(&(t, i, starting)) = self.faults.boundaries.get(self.faults.next_boundary) {
            if t > now {
                break;
            }
            self.faults.next_boundary += 1;
            let episode = &self.sc.faults.episodes[i];
            match episode.fault {
                Fault::MinerSilent | Fault::MinerIgnores | Fault::MinerReboot => {
                    self.miner_fault(now, i, starting)
                }
                Fault::MeterStale => {
                    let f = &mut self.faults;
                    if starting {
                        f.meter_stale_count += 1;
                    } else {
                        f.meter_stale_count -= 1;
                    }
                    if f.meter_stale_count == 0 {
                        f.meter_stale = None;
                    }
                }
                _ => self.signal_fault(now, i, starting),
            }
        }
    }

    fn miner_fault(&mut self, now: Timestamp, i: usize, starting: bool) {
        let episode = &self.sc.faults.episodes[i];
        let recover = (self.checker.as_ref()).map_or(Duration::ZERO, |c| c.bounds.miner_recover);
        for &m in &episode.miners {
            let f = &mut self.faults.miners[m as usize];
            match (episode.fault, starting) {
                (Fault::MinerSilent, true) => f.silent += 1,
                (Fault::MinerSilent, false) => f.silent -= 1,
                (Fault::MinerIgnores, true) => f.ignores += 1,
                (Fault::MinerIgnores, false) => f.ignores -= 1,
                (Fault::MinerReboot, true) if self.sim.miners[m as usize].mode != Mode::Booting => {
                    self.sim.reboot(m, now)
                }
                _ => {}
            }
            if f.faulty_until < now {
                self.faults.faulty.push(m);
            }
            f.faulty_until = f.faulty_until.max(episode.end() + recover);
        }
    }

    fn signal_fault(&mut self, now: Timestamp, i: usize, starting: bool) {
        let episodes = &self.sc.faults.episodes;
        let f = &mut self.faults;
        if starting {
            f.active_signal.push(i);
            if episodes[i].fault == Fault::SurplusFrozen {
                let noise = Watts(self.meter.noise);
                f.frozen_value.get_or_insert(self.truth.at(now) + noise);
            }
        } else {
            f.active_signal.retain(|&j| j != i);
            let frozen = |&j: &usize| episodes[j].fault == Fault::SurplusFrozen;
            if !f.active_signal.iter().any(frozen) {
                f.frozen_value = None;
            }
        }
        if let Some(c) = self.checker.as_mut() {
            c.signal_fault_until = c
                .signal_fault_until
                .max(if starting { self.end } else { now });
            if !starting && !f.active_signal.is_empty() {
                c.signal_fault_until = self.end;
            }
        }
    }

    /// Scripted operator commands due now.
    fn apply_operator(&mut self, now: Timestamp) {
        while let Some(&(t, cmd)) = self.operator.get(self.next_op) {
            if t > now {
                break;
            }
            self.next_op += 1;
            if cmd == OperatorCommand::ShedAll {
                self.record.shed_open = Some((now, self.sim.running_power(now)));
                if let Some(c) = self.checker.as_mut() {
                    c.shed_deadline = Some(now + c.bounds.shed_within);
                }
            }
            self.driver
                .controller()
                .handle_input(now, Input::Operator(cmd));
        }
    }

    /// The surplus meter takes a reading (with noise and any signal fault) and sends it on its
    /// way, to arrive after its delay.
    fn read_surplus(&mut self, now: Timestamp) {
        let truth = self.truth.at(now);
        let m = &mut self.meter;
        if m.sigma.w() > 0.0 {
            let z: f64 = StandardNormal.sample(&mut self.rng);
            m.noise = m.phi * m.noise + m.sigma.w() * m.innovation * z;
        }
        let mut value = Some(self.sc.meter.quantise(truth + Watts(m.noise)));
        let mut good = true;
        let mut clock_offset_ms = 0;
        for &i in &self.faults.active_signal {
            let e = &self.sc.faults.episodes[i];
            match e.fault {
                Fault::SignalLoss => value = None,
                // Off for 15 s, on for 15 s.
                Fault::SignalFlapping
                    if (now.saturating_since(e.start).as_secs() / 15) % 2 == 0 =>
                {
                    value = None
                }
                Fault::SurplusFrozen => {
                    value = value.map(|_| self.faults.frozen_value.unwrap_or(Watts::ZERO));
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
            let jitter = if self.sc.meter.jitter.is_zero() {
                Duration::ZERO
            } else {
                let ms = self.sc.meter.jitter.as_millis() as f64;
                Duration::from_millis((self.rng.random::<f64>() * ms) as u64)
            };
            let arrival = (now + self.sc.meter.delay + jitter).max(m.last_arrival);
            m.last_arrival = arrival;
            m.in_flight.push_back(InFlight {
                arrival,
                value,
                good,
                clock_offset_ms,
            });
        }
        m.next = now + m.period;
    }

    /// Readings reach the controller stamped on arrival (as a Modbus or IEC 104 reading is:
    /// neither carries its measurement time), plus any clock step of the source.
    fn deliver_readings(&mut self, now: Timestamp) {
        while self
            .meter
            .in_flight
            .front()
            .is_some_and(|r| r.arrival <= now)
        {
            let r = self.meter.in_flight.pop_front().expect("peeked");
            if r.good
                && let Some(c) = self.checker.as_mut()
            {
                c.last_good_reading = now;
            }
            self.record.ideal.reading(now, r.value);
            let at = Timestamp(now.as_millis() + r.clock_offset_ms);
            let reading = Input::Surplus {
                at,
                available: r.value,
            };
            self.driver.controller().handle_input(now, reading);
        }
    }

    /// The fleet meter, the KPIs, the trace and buckets, and the invariants.
    fn sample(&mut self, now: Timestamp, progress: &mut dyn FnMut(f64)) {
        let truth = self.truth.at(now);
        let running = self.sim.running_power(now);
        let standby = self.sim.standby_power(now);
        let measured = running + standby;
        let f = &mut self.faults;
        let (at, measured) = if f.meter_stale_count > 0 {
            *f.meter_stale.get_or_insert((now, measured))
        } else {
            (now, measured)
        };
        let fleet_power = Input::FleetPower { at, measured };
        self.driver.controller().handle_input(now, fleet_power);
        let hashrate = self.sim.hashrate(now);
        self.trace(now, truth, running, standby, hashrate);
        let (sc, record) = (self.sc, &mut self.record);
        record
            .kpi
            .add(sc.sample_period, truth, running, standby, hashrate);
        record.ideal.add(now, sc.sample_period, truth);
        if let Some(len) = sc.energy_buckets {
            let i = (now.secs_since(sc.start) / len.as_secs_f64()) as usize;
            if let Some(b) = record.buckets.get_mut(i) {
                let hours = sc.sample_period.as_secs_f64() / 3600.0;
                let load = running + standby;
                b.surplus_mwh += truth.mw() * hours;
                b.absorbed_mwh += load.min(truth).mw() * hours;
                b.import_mwh += (load - truth).positive_part().mw() * hours;
                b.ph_hours += hashrate.phs() * hours;
            }
        }
        self.check(now, truth, running, standby);
        self.record.samples += 1;
        if self.record.samples % self.record.progress_every == 0 {
            progress(now.secs_since(sc.start) / sc.duration.as_secs_f64());
        }
        self.next_sample = now + sc.sample_period;
    }

    fn trace(
        &mut self,
        now: Timestamp,
        truth: Watts,
        running: Watts,
        standby: Watts,
        hashrate: HashRate,
    ) {
        let Some(every) = self.sc.trace_every else {
            return;
        };
        if now < self.record.next_trace {
            return;
        }
        let (allowed, planned, faulted) = match &self.driver {
            Driver::Hashsink(c) => (c.allowed().mw(), c.planned_load().mw(), c.faulted() as u32),
            Driver::Baseline(_) | Driver::Setpoint(_) => (f64::NAN, f64::NAN, 0),
        };
        self.record.trace.push(TraceRow {
            t: now,
            surplus_mw: truth.mw(),
            allowed_mw: allowed,
            running_mw: running.mw(),
            standby_mw: standby.mw(),
            hashrate_phs: hashrate.phs(),
            faulted,
            planned_mw: planned,
        });
        self.record.next_trace = now + every;
    }

    /// The invariants at this sample, leaving out what faulty miners draw.
    fn check(&mut self, now: Timestamp, truth: Watts, running: Watts, standby: Watts) {
        let f = &mut self.faults;
        f.faulty
            .retain(|&m| f.miners[m as usize].faulty_until >= now);
        let Some(c) = self.checker.as_mut() else {
            return;
        };
        let sim = &self.sim;
        let faulty_running: Watts = (f.faulty.iter())
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

    /// Silent miners: the poller finds them unreachable.
    fn poll_silent(&mut self, now: Timestamp) {
        for &m in &self.faults.faulty {
            if self.faults.miners[m as usize].silent > 0 {
                let report = MinerReport {
                    miner: MinerId(m),
                    at: now,
                    status: MinerStatus::Unreachable,
                };
                self.driver
                    .controller()
                    .handle_input(now, Input::Miner(report));
            }
        }
        self.next_poll = now + self.sc.poll_interval;
    }

    /// Commands meet the miners; what they answer goes back to the controller, whose further
    /// commands are carried out in turn, until it has nothing more to say.
    fn carry_out_commands(&mut self, now: Timestamp) {
        loop {
            while let Some(cmd) = self.driver.controller().poll_command() {
                self.carry_out(now, cmd);
            }
            if self.reports.is_empty() && self.outcomes.is_empty() {
                break;
            }
            for (t, r) in self.reports.drain(..) {
                self.driver.controller().handle_input(t, Input::Miner(r));
            }
            for (t, o) in self.outcomes.drain(..) {
                self.driver.controller().handle_input(t, Input::Outcome(o));
            }
        }
    }

    fn carry_out(&mut self, now: Timestamp, cmd: Command) {
        let m = cmd.miner.0;
        if let Some(c) = self.checker.as_mut() {
            let model = self.fleet.miner_spec[m as usize].0 as usize;
            c.on_command(now, &cmd, self.max_level[model]);
        }
        let counts = &mut self.record.counts;
        match cmd.action {
            Action::SetLevel(_) => counts.set_level += 1,
            Action::Wake(_) | Action::Resume => counts.wake += 1,
            Action::Sleep => counts.sleep += 1,
            Action::Query => counts.query += 1,
        }
        let outcome = |result| {
            let (id, miner) = (cmd.id, cmd.miner);
            (now, CommandOutcome { id, miner, result })
        };
        let f = self.faults.miners[m as usize];
        if f.silent > 0 {
            if cmd.action == Action::Query {
                let status = MinerStatus::Unreachable;
                let report = MinerReport {
                    miner: cmd.miner,
                    at: now,
                    status,
                };
                self.reports.push((now, report));
            } else {
                self.outcomes.push(outcome(Err(TransportError::Timeout)));
            }
            return;
        }
        if cmd.action.is_write() {
            // The transport delivered it: every write gets an outcome, as in the daemon.
            self.outcomes.push(outcome(Ok(Ok(()))));
        }
        let settled = match cmd.action {
            Action::Query => true,
            _ if f.ignores > 0 => false,
            Action::Sleep => self.sim.command_sleep(m, now),
            Action::Wake(l) => self.sim.command_wake(m, l, now),
            Action::Resume => {
                let held = self.sim.miners[m as usize].level;
                self.sim.command_wake(m, held, now)
            }
            Action::SetLevel(l) => self.sim.command_level(m, l, now),
        };
        if settled {
            self.report(now, m);
        }
    }

    /// The report: KPIs, the ideal, the invariants (with the controller's own accounting
    /// checked at the end), the shed times.
    fn finish(mut self) -> RunReport {
        let (sc, end, fleet) = (self.sc, self.end, self.fleet.clone());
        if std::env::var_os("HASHSINK_TWIN_DUMP").is_some() {
            self.dump_running(end);
        }
        if let (Some(c), Driver::Hashsink(ctrl)) = (self.checker.as_mut(), &self.driver)
            && let Err(e) = ctrl.check_accounting()
        {
            c.violate(end, format!("controller accounting drifted: {e}"));
        }
        let wakes: u64 = self.sim.miners.iter().map(|m| m.wakes as u64).sum();
        let record = self.record;
        let shed95 = (!record.shed_times.is_empty())
            .then(|| record.shed_times.iter().cloned().fold(0.0, f64::max));
        let stats = match &self.driver {
            Driver::Hashsink(c) => Some(c.stats().clone()),
            Driver::Baseline(_) | Driver::Setpoint(_) => None,
        };
        let (violations, violation_count) = self
            .checker
            .map(|c| (c.violations, c.count))
            .unwrap_or_default();
        let counts = record.counts;
        let commands = counts.set_level + counts.wake + counts.sleep;
        let kpis = record.kpi.finish(wakes, fleet.len(), commands, shed95);
        RunReport {
            ideal: record.ideal.finish(kpis.reachable_mwh),
            controller: sc.label.unwrap_or(sc.controller.name()).to_string(),
            kpis,
            command_counts: counts,
            surplus_drops_per_day: record.kpi.surplus_drops_per_day(),
            violations,
            violation_count,
            shed_times_s: record.shed_times,
            events: self.sim.events_processed,
            miner_seconds: fleet.len() as f64 * sc.duration.as_secs_f64(),
            stats,
            trace: record.trace,
            buckets: record.buckets,
        }
    }

    /// Every miner still drawing at the end, as the twin and the controller see it (debugging:
    /// `HASHSINK_TWIN_DUMP=1`).
    fn dump_running(&self, end: Timestamp) {
        let Driver::Hashsink(c) = &self.driver else {
            return;
        };
        for m in 0..self.fleet.len() as u32 {
            let miner = &self.sim.miners[m as usize];
            if miner.mode != Mode::Asleep {
                eprintln!(
                    "miner {m}: twin {:?} {:.0} W; controller {}",
                    miner.mode,
                    self.sim.miner_power(m, end).w(),
                    c.describe_miner(MinerId(m))
                );
            }
        }
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
