//! The daemon: the controller on a fixed cadence, fed by a surplus source and by the fleet's
//! telemetry, its commands carried out by the drivers.
//!
//! One task owns the controller (it is a plain state machine, see `hashsink_core::api`). Every
//! network call runs in its own task with a timeout and reports back through a channel, so the
//! control loop never waits on a miner. `hashsink run` and `hashsink demo` both run this loop.

pub mod auth;
pub mod connect;
pub mod http;
pub mod ledger;
pub mod live;
pub mod metrics;
pub mod signals;
pub mod site;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hashsink_clock::ScaledClock;
use hashsink_core::api::{Refusal, TransportError};
use hashsink_core::{
    Action, CommandOutcome, Controller, ControllerConfig, Fleet, FleetController, Input, MinerId,
    MinerReport, MinerStatus, OperatorCommand,
};
use hashsink_fleetio::fleet::FleetIo;
use hashsink_fleetio::{Control, DriverError, MinerState, Telemetry};
use hashsink_twin::Profile;
use hashsink_units::{HashRate, Timestamp, Watts};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Where the surplus reading comes from.
#[derive(Clone)]
pub enum SurplusFeed {
    /// A profile played on the daemon's clock, `offset` behind it (the demo starts the replay
    /// where it meant to although identification took a while on the sped-up clock).
    Replay {
        profile: Arc<Profile>,
        offset: Duration,
    },
    /// The latest value POSTed to the HTTP endpoint, stamped when it arrived.
    Pushed(Arc<std::sync::Mutex<Option<(Timestamp, Watts)>>>),
    /// Plant signals, judged and combined; no reading when none is trusted.
    Judged(Arc<std::sync::Mutex<hashsink_signals::Judge>>),
}

impl SurplusFeed {
    fn reading(&self, now: Timestamp) -> Option<(Timestamp, Watts)> {
        match self {
            SurplusFeed::Replay { profile, offset } => Some((now, profile.at(now - *offset))),
            SurplusFeed::Pushed(latest) => *latest.lock().unwrap_or_else(|p| p.into_inner()),
            SurplusFeed::Judged(judge) => {
                judge
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .verdict(now)
                    .available
            }
        }
    }
}

/// Something that happened outside the control loop.
#[derive(Debug)]
pub enum Event {
    Telemetry {
        miner: u32,
        at: Timestamp,
        result: Result<Telemetry, DriverError>,
    },
    Outcome {
        outcome: CommandOutcome,
    },
    /// An operator command and who or what gave it ("http", "plant:SOURCE", "signal:SIGUSR1").
    Operator(OperatorCommand, String),
    /// A plant signal source has a new trusted reading: feed the verdict now, not at the tick.
    SignalUpdate,
    /// The plant's day-ahead schedule, (re)loaded.
    Schedule(Vec<(Timestamp, Watts)>),
    SweepDone {
        took: Duration,
        answered: usize,
    },
}

/// What the daemon shows: the live view, `GET /status`, the end-of-run table.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    pub now_ms: i64,
    pub surplus_w: Option<f64>,
    /// Fleet draw: the site meter's where there is one, else the sum of miner reports.
    pub fleet_w: f64,
    pub hashrate_ths: f64,
    pub mining: u32,
    pub booting: u32,
    pub asleep: u32,
    pub unreachable: u32,
    /// Miners routed around: faults and operator exclusions.
    pub faulted: u32,
    /// Of those, the ones an operator excluded.
    pub excluded: u32,
    /// The miners routed around for a fault, with why (the first 100).
    pub faulted_miners: Vec<FaultedMiner>,
    pub commands: u64,
    pub last_sweep_ms: u64,
    pub kpis: RunKpis,
    /// Plant signal sources and whether each is trusted (source = "signals").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<SignalStatus>,
    /// What the controller allows the fleet to draw now, W.
    pub allowed_w: f64,
    /// Blocks in the day-ahead schedule last loaded (0: none).
    pub schedule_blocks: usize,
    /// What the operator last asked: "follow" (the surplus), "shed" or "curtail".
    pub mode: &'static str,
    /// The operator's cap while curtailed, W.
    pub curtail_w: Option<f64>,
    /// Who gave the operator command in force ("" while following the surplus).
    pub mode_by: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SignalStatus {
    pub name: String,
    pub trusted: bool,
    pub mw: Option<f64>,
    /// Why it is not trusted.
    pub reason: Option<String>,
}

/// Fills the status with each source's standing and logs when the combined verdict appears or
/// goes away (`had_verdict` keeps the previous state).
fn signal_status(
    status: &mut Status,
    verdict: &hashsink_signals::Verdict,
    names: &[String],
    had_verdict: &mut Option<bool>,
) {
    status.signals = names
        .iter()
        .cloned()
        .zip(&verdict.standings)
        .map(|(name, standing)| match standing {
            hashsink_signals::Standing::Trusted { watts, .. } => SignalStatus {
                name,
                trusted: true,
                mw: Some(watts / 1e6),
                reason: None,
            },
            hashsink_signals::Standing::Distrusted(d) => SignalStatus {
                name,
                trusted: false,
                mw: None,
                reason: Some(d.to_string()),
            },
        })
        .collect();
    let has = verdict.available.is_some();
    if *had_verdict != Some(has) {
        if has {
            info!(sources = ?status.signals.iter().filter(|s| s.trusted).map(|s| &s.name).collect::<Vec<_>>(), "surplus signal trusted");
        } else {
            warn!(
                reasons = ?status.signals.iter().map(|s| format!("{}: {}", s.name, s.reason.as_deref().unwrap_or("-"))).collect::<Vec<_>>(),
                "no trusted surplus signal: the fleet goes to the fail-safe load"
            );
        }
        *had_verdict = Some(has);
    }
    if let Some((a, b, gap)) = verdict.disagreement {
        debug!(
            low = %status.signals[a.0 as usize].name,
            high = %status.signals[b.0 as usize].name,
            gap_mw = gap.mw(),
            "signal sources disagree"
        );
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FaultedMiner {
    pub address: String,
    pub fault: hashsink_core::FaultKind,
}

/// Running totals since the daemon started, while it followed the surplus (time under an
/// operator's shed or curtailment is left out: not absorbing then is the operator's choice).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunKpis {
    pub seconds: f64,
    /// Energy the fleet drew, with or without a surplus reading.
    pub fleet_kwh: f64,
    pub surplus_kwh: f64,
    pub absorbed_kwh: f64,
    /// Fleet draw above the surplus (or above the fleet's standby draw, whichever is higher):
    /// what control let through.
    pub import_kwh: f64,
    /// Standby draw of sleeping miners while there was less surplus than that.
    pub standby_import_kwh: f64,
    pub hashes_eh: f64,
    pub max_import_w: f64,
}

impl RunKpis {
    pub fn absorption(&self) -> f64 {
        if self.surplus_kwh > 0.0 {
            self.absorbed_kwh / self.surplus_kwh
        } else {
            0.0
        }
    }
    pub fn import_share(&self) -> f64 {
        if self.surplus_kwh > 0.0 {
            self.import_kwh / self.surplus_kwh
        } else {
            0.0
        }
    }
}

/// What the daemon leaves the miners doing when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStop {
    Sleep,
    Leave,
}

pub struct DaemonSetup {
    pub fleet: Arc<Fleet>,
    pub io: Arc<FleetIo>,
    pub controller: ControllerConfig,
    pub clock: ScaledClock,
    pub surplus: SurplusFeed,
    /// The site meter, if any (the demo reads the emulator's model as its meter).
    pub meter: Option<Arc<dyn Fn() -> (Watts, HashRate) + Send + Sync>>,
    /// How often to read every miner (simulated time).
    pub telemetry_interval: Duration,
    pub on_stop: OnStop,
    /// Where the fleet's load and the controller's setpoint are published for the plant (the
    /// Modbus write-back), if anywhere.
    pub fleet_report: Option<watch::Sender<hashsink_plantio::FleetReport>>,
    /// The ledger, if the site keeps one.
    pub ledger: Option<ledger::Recorder>,
}

/// A running daemon's handles.
#[derive(Clone)]
pub struct DaemonHandle {
    pub events: mpsc::UnboundedSender<Event>,
    pub status: watch::Receiver<Status>,
    pub miners: watch::Receiver<Arc<live::MinersView>>,
    pub recent: Arc<live::RecentEvents>,
}

/// The daemon's side of the handles: what it publishes.
pub struct Publisher {
    pub status: watch::Sender<Status>,
    pub miners: watch::Sender<Arc<live::MinersView>>,
    pub recent: Arc<live::RecentEvents>,
}

pub fn channels() -> (DaemonHandle, mpsc::UnboundedReceiver<Event>, Publisher) {
    let (events, rx) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(Status::default());
    let (miners_tx, miners) = watch::channel(Arc::new(live::MinersView::default()));
    let recent = Arc::new(live::RecentEvents::default());
    (
        DaemonHandle {
            events,
            status,
            miners,
            recent: recent.clone(),
        },
        rx,
        Publisher {
            status: status_tx,
            miners: miners_tx,
            recent,
        },
    )
}

/// What an operator command is called in the event log, and what it did (`address` names a
/// miner).
pub fn describe_operator(
    cmd: OperatorCommand,
    address: &dyn Fn(MinerId) -> String,
) -> (&'static str, String) {
    match cmd {
        OperatorCommand::ShedAll => ("shed", "every miner told to sleep".to_string()),
        OperatorCommand::Resume => ("resume", "the fleet may follow the surplus again".into()),
        OperatorCommand::CurtailTo(w) => ("curtail", format!("at most {:.0} W", w.w())),
        OperatorCommand::Exclude(m) => (
            "exclude",
            format!(
                "miner {} ({}) taken out of control: told to sleep once, then left alone",
                m.0,
                address(m)
            ),
        ),
        OperatorCommand::Include(m) => (
            "include",
            format!("miner {} ({}) back under control", m.0, address(m)),
        ),
    }
}

/// An event, to the in-memory log the dashboard shows and to the ledger if there is one.
fn note(
    ledger: &mut Option<ledger::Recorder>,
    recent: &live::RecentEvents,
    at: Timestamp,
    kind: &str,
    actor: &str,
    detail: String,
) {
    recent.push(at.as_millis(), kind, actor, &detail);
    if let Some(l) = ledger.as_mut() {
        l.event(at, kind, actor, detail);
    }
}

fn live_of(s: &MinerStatus, fault: Option<hashsink_core::FaultKind>) -> live::MinerLive {
    let (state, power_w, hashrate_ths) = match s {
        MinerStatus::Mining { power, hashrate } => {
            (live::LiveState::Mining, power.w(), hashrate.ths())
        }
        MinerStatus::Booting { power } => (live::LiveState::Booting, power.w(), 0.0),
        MinerStatus::Asleep { power } => (live::LiveState::Asleep, power.w(), 0.0),
        MinerStatus::Unreachable => (live::LiveState::Unreachable, 0.0, 0.0),
    };
    live::MinerLive {
        state,
        power_w,
        hashrate_ths,
        fault,
    }
}

fn to_status(t: &Result<Telemetry, DriverError>) -> MinerStatus {
    match t {
        Ok(t) => match t.state {
            MinerState::Mining => MinerStatus::Mining {
                power: t.power,
                hashrate: t.hashrate,
            },
            MinerState::Booting => MinerStatus::Booting { power: t.power },
            MinerState::Asleep => MinerStatus::Asleep { power: t.power },
        },
        Err(_) => MinerStatus::Unreachable,
    }
}

fn to_outcome(r: Result<(), DriverError>) -> Result<Result<(), Refusal>, TransportError> {
    match r {
        Ok(()) => Ok(Ok(())),
        Err(DriverError::Rejected(_)) => Ok(Err(Refusal::Rejected)),
        Err(DriverError::Unsupported(_)) => Ok(Err(Refusal::Unsupported)),
        Err(DriverError::Timeout(_)) => Err(TransportError::Timeout),
        Err(DriverError::Connect(_)) => Err(TransportError::Refused),
        Err(DriverError::Malformed(_)) => Err(TransportError::Malformed),
    }
}

/// Runs until `stop` resolves, then puts the fleet in its safe state. Returns the final status.
pub async fn run(
    setup: DaemonSetup,
    handle_events: mpsc::UnboundedSender<Event>,
    mut events: mpsc::UnboundedReceiver<Event>,
    publish: Publisher,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Status> {
    let Publisher {
        status: status_tx,
        miners: miners_tx,
        recent,
    } = publish;
    let DaemonSetup {
        fleet,
        io,
        controller,
        clock,
        surplus,
        meter,
        telemetry_interval,
        on_stop,
        fleet_report,
        mut ledger,
    } = setup;
    // Who gave the last operator command (the actor of the commands it causes).
    let mut operator_actor = String::from("operator");
    // Write commands whose outcome the ledger still awaits (read-backs are not audited).
    let mut audited: std::collections::HashSet<u64> = Default::default();
    let mut last_ledger_flush = std::time::Instant::now();
    let mut faulted_before = 0u32;
    let cadence = controller.cadence;
    let start = clock.now();
    let mut ctl = Controller::new(fleet.clone(), controller, start);
    let n = fleet.len();
    let standby_w: f64 = fleet
        .miner_ids()
        .map(|m| fleet.spec_of(m).standby.w())
        .sum();
    let mut last: Vec<MinerStatus> = vec![MinerStatus::Unreachable; n];
    let directory: Arc<Vec<live::MinerEntry>> = Arc::new(
        fleet
            .miner_ids()
            .map(|m| {
                let spec = fleet.spec_of(m);
                live::MinerEntry {
                    id: m.0,
                    address: io.driver(m.index()).address().to_string(),
                    model: spec.model.clone(),
                    firmware: spec.firmware.key().to_string(),
                }
            })
            .collect(),
    );
    // The miners' view is published at once (nobody read yet) and then at most once a wall
    // second (and at once after an operator's command).
    miners_tx.send_replace(Arc::new(live::MinersView {
        at_ms: start.as_millis(),
        directory: directory.clone(),
        live: last.iter().map(|s| live_of(s, None)).collect(),
    }));
    let mut miners_published: Option<std::time::Instant> = None;
    let mut status = Status {
        mode: "follow",
        ..Status::default()
    };
    let mut next_tick = start;
    let mut next_sweep = start;
    let mut sweeping = false;
    let mut last_kpi_t = start;
    let mut overridden = false;
    let mut signal_state: Option<bool> = None;
    // The plant signal sources' names, in the judge's order (fixed for the run).
    let signal_names: Vec<String> = match &surplus {
        SurplusFeed::Judged(judge) => judge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .config()
            .sources
            .iter()
            .map(|s| s.name.clone())
            .collect(),
        _ => Vec::new(),
    };
    // An operator or emergency shed being sent: when it started and the command count then.
    let mut shed_timer: Option<(std::time::Instant, u64)> = None;
    // Commands in flight: reaped as they finish, awaited at stop so that none lands after it.
    let mut inflight: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    let tick_wall_min = Duration::from_millis(20);
    // Telemetry that arrived since the status was last published, and when that was: new
    // readings are published within `PUBLISH_EVERY` (wall), not only at the next tick.
    const PUBLISH_EVERY: Duration = Duration::from_millis(250);
    let mut telemetry_unpublished = false;
    let mut published_at = std::time::Instant::now();
    tokio::pin!(stop);
    info!(miners = n, speed = clock.speed(), "daemon started");
    loop {
        let wake_at = ctl.poll_timeout().map_or(next_tick, |t| t.min(next_tick));
        tokio::select! {
            _ = &mut stop => break,
            Some(event) = events.recv() => {
                let now = clock.now();
                match event {
                    Event::Telemetry { miner, at, result } => {
                        if let Err(e) = &result {
                            debug!(miner, address = %io.driver(miner as usize).address(), error = %e, "no telemetry");
                        }
                        let s = to_status(&result);
                        last[miner as usize] = s;
                        telemetry_unpublished = true;
                        ctl.handle_input(now, Input::Miner(MinerReport { miner: MinerId(miner), at, status: s }));
                    }
                    Event::Outcome { outcome } => {
                        if let Some(l) = ledger.as_mut() {
                            if audited.remove(&outcome.id.0) {
                                l.outcome(hashsink_ledger::Outcome {
                                    id: outcome.id.0,
                                    at: now,
                                    result: outcome_text(&outcome.result),
                                });
                            }
                        }
                        if outcome.result != Ok(Ok(())) {
                            warn!(miner = outcome.miner.0, address = %io.driver(outcome.miner.index()).address(), result = ?outcome.result, "command failed");
                        }
                        ctl.handle_input(now, Input::Outcome(outcome));
                    }
                    Event::Operator(cmd, actor) => {
                        info!(?cmd, %actor, "operator command");
                        let (kind, detail) = describe_operator(cmd, &|m| {
                            if m.index() < n { io.driver(m.index()).address().to_string() } else { "no such miner".into() }
                        });
                        note(&mut ledger, &recent, now, kind, &actor, detail);
                        if let Some(l) = ledger.as_mut() {
                            // An operator's action is on record at once, not at the next interval.
                            l.flush();
                        }
                        miners_published = None;
                        operator_actor = actor;
                        match cmd {
                            OperatorCommand::Exclude(_) | OperatorCommand::Include(_) => {}
                            OperatorCommand::Resume => {
                                overridden = false;
                                (status.mode, status.curtail_w) = ("follow", None);
                                status.mode_by.clear();
                            }
                            OperatorCommand::ShedAll => {
                                overridden = true;
                                (status.mode, status.curtail_w) = ("shed", None);
                                status.mode_by = operator_actor.clone();
                            }
                            OperatorCommand::CurtailTo(w) => {
                                overridden = true;
                                (status.mode, status.curtail_w) = ("curtail", Some(w.w()));
                                status.mode_by = operator_actor.clone();
                            }
                        }
                        if cmd == OperatorCommand::ShedAll {
                            shed_timer = Some((std::time::Instant::now(), status.commands));
                        }
                        ctl.handle_input(now, Input::Operator(cmd));
                    }
                    Event::Schedule(blocks) => {
                        info!(blocks = blocks.len(), "day-ahead schedule loaded");
                        status.schedule_blocks = blocks.len();
                        ctl.handle_input(now, Input::Forecast(blocks));
                    }
                    Event::SignalUpdate => {
                        if let Some((at, available)) = surplus.reading(now) {
                            ctl.handle_input(now, Input::Surplus { at, available });
                        }
                    }
                    Event::SweepDone { took, answered } => {
                        sweeping = false;
                        status.last_sweep_ms = took.as_millis() as u64;
                        debug!(took_ms = took.as_millis() as u64, answered, "telemetry sweep");
                        // Publish the sweep's last readings now, not at the next tick.
                        next_tick = next_tick.min(now);
                    }
                }
            }
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            _ = sleep_until(&clock, wake_at, tick_wall_min) => {}
        }
        let now = clock.now();
        if telemetry_unpublished && published_at.elapsed() >= PUBLISH_EVERY {
            next_tick = next_tick.min(now);
        }
        if now >= next_tick {
            telemetry_unpublished = false;
            published_at = std::time::Instant::now();
            // One verdict per tick for plant signals: it gives both the reading and the status.
            let reading = match &surplus {
                SurplusFeed::Judged(judge) => {
                    let verdict = judge.lock().unwrap_or_else(|p| p.into_inner()).verdict(now);
                    let had = signal_state;
                    signal_status(&mut status, &verdict, &signal_names, &mut signal_state);
                    if had.is_some() && had != signal_state {
                        {
                            let why: Vec<String> = status
                                .signals
                                .iter()
                                .map(|s| {
                                    format!(
                                        "{}: {}",
                                        s.name,
                                        s.reason.as_deref().unwrap_or("trusted")
                                    )
                                })
                                .collect();
                            let kind = if signal_state == Some(true) {
                                "signal-back"
                            } else {
                                "signal-lost"
                            };
                            note(&mut ledger, &recent, now, kind, "signals", why.join("; "));
                        }
                    }
                    verdict.available
                }
                _ => surplus.reading(now),
            };
            if let Some((at, available)) = reading {
                ctl.handle_input(now, Input::Surplus { at, available });
            }
            let (metered, metered_hash) = match &meter {
                Some(m) => {
                    let (p, h) = m();
                    ctl.handle_input(
                        now,
                        Input::FleetPower {
                            at: now,
                            measured: p,
                        },
                    );
                    (Some(p), Some(h))
                }
                None => (None, None),
            };
            update_status(
                &mut status,
                &last,
                &ctl,
                now,
                reading.map(|r| r.1).filter(|_| !overridden),
                metered,
                metered_hash,
                &mut last_kpi_t,
                standby_w,
            );
            status.surplus_w = reading.map(|r| r.1.w());
            status.allowed_w = ctl.allowed().w();
            if let Some(l) = ledger.as_mut() {
                l.tick(
                    now,
                    &last,
                    status.fleet_w,
                    reading.map(|r| r.1.w()),
                    standby_w,
                    &|i| ctl.fault_of(MinerId(i as u32)).is_some(),
                );
                if last_ledger_flush.elapsed() >= Duration::from_secs(5) && l.has_pending() {
                    l.flush();
                    last_ledger_flush = std::time::Instant::now();
                }
            }
            if miners_published.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                miners_published = Some(std::time::Instant::now());
                let live = last
                    .iter()
                    .enumerate()
                    .map(|(i, s)| live_of(s, ctl.fault_of(MinerId(i as u32))))
                    .collect();
                miners_tx.send_replace(Arc::new(live::MinersView {
                    at_ms: now.as_millis(),
                    directory: directory.clone(),
                    live,
                }));
            }
            if let Some(report) = &fleet_report {
                report.send_replace(hashsink_plantio::FleetReport {
                    load: Watts(status.fleet_w),
                    setpoint: ctl.allowed(),
                });
            }
            status.faulted_miners.clear();
            status.excluded = 0;
            if status.faulted > 0 {
                for m in fleet.miner_ids() {
                    match ctl.fault_of(m) {
                        Some(hashsink_core::FaultKind::Excluded) => status.excluded += 1,
                        Some(fault) if status.faulted_miners.len() < 100 => {
                            status.faulted_miners.push(FaultedMiner {
                                address: io.driver(m.index()).address().to_string(),
                                fault,
                            });
                        }
                        _ => {}
                    }
                }
            }
            // Exclusions are the operator's, not faults.
            let faults = status.faulted - status.excluded;
            if faults > faulted_before {
                note(
                    &mut ledger,
                    &recent,
                    now,
                    "miner-fault",
                    "controller",
                    format!("{faults} miners routed around (was {faulted_before})"),
                );
            }
            faulted_before = faults;
            let _ = status_tx.send(status.clone());
            next_tick = now + cadence;
            if now >= next_sweep && !sweeping {
                sweeping = true;
                next_sweep = now + telemetry_interval;
                let io = io.clone();
                let tx = handle_events.clone();
                tokio::spawn(async move {
                    // Stamped with the sweep's start: each miner's state is no older than that,
                    // and a slow miner's reply may be much older than the sweep's end.
                    let at = clock.now();
                    // Each result goes to the loop as it lands: what a fast miner reports is
                    // seen while slow ones are still being read.
                    let mut answered = 0;
                    let took = io
                        .sweep_each(|miner, result| {
                            answered += usize::from(result.is_ok());
                            let _ = tx.send(Event::Telemetry {
                                miner: miner as u32,
                                at,
                                result,
                            });
                        })
                        .await;
                    let _ = tx.send(Event::SweepDone { took, answered });
                });
            }
        }
        if ctl.poll_timeout().is_some_and(|t| t <= now) {
            ctl.handle_timeout(now);
        }
        while let Some(command) = ctl.poll_command() {
            status.commands += 1;
            let miner = command.miner;
            let spec = fleet.spec_of(miner);
            let tx = handle_events.clone();
            let control = match command.action {
                Action::Query => {
                    let read = io.read(miner.index());
                    let id = command.id;
                    let at = clock.now();
                    inflight.spawn(async move {
                        let result = read.await;
                        let ok = result.is_ok();
                        let _ = tx.send(Event::Telemetry {
                            miner: miner.0,
                            at,
                            result,
                        });
                        // The read-back's own outcome, after its report: the controller's grace
                        // for the miner counts from here, not from when the read was sent.
                        if ok {
                            let _ = tx.send(Event::Outcome {
                                outcome: CommandOutcome {
                                    id,
                                    miner,
                                    result: Ok(Ok(())),
                                },
                            });
                        }
                    });
                    continue;
                }
                Action::Sleep => Control::Sleep,
                Action::SetLevel(level) | Action::Wake(level) => Control::Run {
                    level,
                    watts: spec.level_power(level),
                },
            };
            debug!(miner = miner.0, ?control, reason = ?command.reason, "command");
            if let Some(l) = ledger.as_mut() {
                audited.insert(command.id.0);
                l.command(hashsink_ledger::CommandRecord {
                    id: command.id.0,
                    at: clock.now(),
                    miner: Some(miner.0),
                    // (Read-backs, `Action::Query`, left the loop above: they are not audited.)
                    action: match (command.action, control) {
                        (Action::Wake(l), _) => format!("wake level {l}"),
                        (_, Control::Run { level, .. }) => format!("level {level}"),
                        (_, Control::Sleep) => "sleep".into(),
                    },
                    reason: format!("{:?}", command.reason).to_lowercase(),
                    actor: if command.reason == hashsink_core::Reason::Operator {
                        operator_actor.clone()
                    } else {
                        "controller".into()
                    },
                });
            }
            let apply = io.apply(miner.index(), control);
            let id = command.id;
            inflight.spawn(async move {
                let result = to_outcome(apply.await);
                let _ = tx.send(Event::Outcome {
                    outcome: CommandOutcome { id, miner, result },
                });
            });
        }
        if let Some((started, before)) = shed_timer.take() {
            info!(
                commands = status.commands - before,
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "shed: commands sent to the fleet"
            );
        }
    }
    // Let every command already sent land (each is bounded by its call timeout) before the
    // safe state, so that a late wake cannot undo it.
    while inflight.join_next().await.is_some() {}
    if on_stop == OnStop::Sleep {
        info!("stopping: putting every miner to sleep");
        note(
            &mut ledger,
            &recent,
            clock.now(),
            "safe-state",
            "daemon",
            "every miner told to sleep at stop".into(),
        );
        let all: Vec<usize> = (0..n).collect();
        let results = io.apply_all(&all, Control::Sleep).await;
        let failed: Vec<String> = results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(i, r)| {
                format!(
                    "{} ({})",
                    io.driver(*i).address(),
                    r.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
                )
            })
            .collect();
        if failed.is_empty() {
            info!(miners = n, "every miner accepted sleep");
        } else {
            warn!(failed = failed.len(), first = %failed[0], "some miners did not accept sleep: check them by hand");
        }
    }
    if let Some(l) = ledger {
        l.stop(clock.now(), &last, &|i| {
            ctl.fault_of(MinerId(i as u32)).is_some()
        });
        info!("ledger: flushed and closed");
    }
    Ok(status)
}

/// An outcome as the audit log writes it.
fn outcome_text(r: &Result<Result<(), Refusal>, TransportError>) -> String {
    match r {
        Ok(Ok(())) => "applied".into(),
        Ok(Err(refusal)) => format!("refused: {refusal:?}").to_lowercase(),
        Err(e) => format!("failed: {e:?}").to_lowercase(),
    }
}

async fn sleep_until(clock: &ScaledClock, t: Timestamp, min_wall: Duration) {
    let now = clock.now();
    let wall = clock.wall_duration(t.saturating_since(now));
    tokio::time::sleep(wall.max(min_wall)).await;
}

#[allow(clippy::too_many_arguments)]
fn update_status(
    status: &mut Status,
    last: &[MinerStatus],
    ctl: &Controller,
    now: Timestamp,
    surplus: Option<Watts>,
    metered: Option<Watts>,
    metered_hash: Option<HashRate>,
    last_t: &mut Timestamp,
    standby_w: f64,
) {
    let (mut mining, mut booting, mut asleep, mut unreachable) = (0, 0, 0, 0);
    let (mut power, mut hash) = (0.0, 0.0);
    for s in last {
        match s {
            MinerStatus::Mining { power: p, hashrate } => {
                mining += 1;
                power += p.w();
                hash += hashrate.ths();
            }
            MinerStatus::Booting { power: p } => {
                booting += 1;
                power += p.w();
            }
            MinerStatus::Asleep { power: p } => {
                asleep += 1;
                power += p.w();
            }
            MinerStatus::Unreachable => unreachable += 1,
        }
    }
    let fleet_w = metered.map_or(power, |m| m.w());
    let hash = metered_hash.map_or(hash, |h| h.ths());
    let dt = now.secs_since(*last_t).max(0.0);
    *last_t = now;
    status.kpis.fleet_kwh += fleet_w * dt / 3.6e6;
    if let Some(s) = surplus {
        let k = &mut status.kpis;
        k.seconds += dt;
        k.surplus_kwh += s.w() * dt / 3.6e6;
        k.absorbed_kwh += fleet_w.min(s.w()) * dt / 3.6e6;
        let import = (fleet_w - s.w().max(standby_w)).max(0.0);
        k.import_kwh += import * dt / 3.6e6;
        k.standby_import_kwh += (fleet_w.min(standby_w) - s.w()).max(0.0) * dt / 3.6e6;
        k.max_import_w = k.max_import_w.max(import);
        k.hashes_eh += hash * dt / 1e6;
    }
    status.now_ms = now.as_millis();
    status.surplus_w = surplus.map(|s| s.w());
    status.fleet_w = fleet_w;
    status.hashrate_ths = hash;
    status.mining = mining;
    status.booting = booting;
    status.asleep = asleep;
    status.unreachable = unreachable;
    status.faulted = ctl.faulted() as u32;
}
