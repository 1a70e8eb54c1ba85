//! The daemon's one loop: [`Daemon`] owns the controller, the plant signals' judge, the ledger
//! recorder and the status, and nothing else touches them. Everything outside reaches it as a
//! message on one of three channels: operator commands (read first), the plant's signal sources,
//! and the daemon's own I/O tasks (telemetry, command outcomes) plus pushed inputs. Each message
//! is handled by `on_*`; `on_tick` publishes and feeds the surplus at the cadence; `dispatch`
//! hands the controller's commands to the drivers, each in its own task under a timeout.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hashsink_clock::ScaledClock;
use hashsink_core::api::{Refusal, TransportError};
use hashsink_core::{
    Action, CommandOutcome, ControlUse, Controller, ControllerConfig, FaultKind, Fleet,
    FleetController, Input, MinerId, MinerReport, MinerStatus, OperatorCommand, Reason,
};
use hashsink_fleetio::fleet::FleetIo;
use hashsink_fleetio::{Control, DriverError, MinerState, Telemetry};
use hashsink_plantio::{FleetReport, SignalEvent};
use hashsink_twin::Profile;
use hashsink_units::{HashRate, Timestamp, Watts};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::live::{self, MinerEntry, MinersView, RecentEvents};
use crate::readings::{self, Malformed};
use crate::recorder::Recorder;
use crate::signals::{Protection, SignalAction, SignalDesk, SignalsSetup, start_sources};
use crate::status::{FaultedMiner, FleetCount, Status};

/// Where the surplus reading comes from.
pub enum SurplusSource {
    /// A profile played on the daemon's clock, `offset` behind it (the demo starts the replay
    /// where it meant to although identification took a while on the sped-up clock).
    Replay {
        profile: Arc<Profile>,
        offset: Duration,
    },
    /// The latest value pushed through [`Handle::push_surplus`] (`POST /surplus`), stamped when
    /// it arrived.
    Pushed,
    /// Plant signals: the daemon starts the sources and judges their readings in its loop; no
    /// reading when none is trusted.
    Signals(SignalsSetup),
}

/// The site meter: the fleet's measured draw and hashrate now (the demo reads the emulator's
/// model).
pub type Meter = Arc<dyn Fn() -> (Watts, HashRate) + Send + Sync>;

/// What the daemon leaves the miners doing when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStop {
    Sleep,
    Leave,
}

/// Everything a daemon is built from: `hashsink run`, the demo and the benchmarks each make one.
pub struct Setup {
    pub fleet: Arc<Fleet>,
    pub io: Arc<FleetIo>,
    pub controller: ControllerConfig,
    pub clock: ScaledClock,
    pub surplus: SurplusSource,
    pub meter: Option<Meter>,
    /// How often to read every miner (simulated time).
    pub telemetry_interval: Duration,
    pub on_stop: OnStop,
    /// The ledger, if the site keeps one.
    pub ledger: Option<Recorder>,
}

/// What reaches the loop from outside besides operator commands and plant signals.
#[derive(Debug)]
enum Pushed {
    /// A surplus reading from the HTTP endpoint.
    Surplus(Timestamp, Watts),
    /// The plant's day-ahead schedule, (re)loaded.
    Schedule(Vec<(Timestamp, Watts)>),
}

/// What the daemon's own I/O tasks report.
#[derive(Debug)]
enum IoEvent {
    Telemetry {
        miner: u32,
        at: Timestamp,
        result: Result<Telemetry, DriverError>,
    },
    /// A command's outcome, with what the firmware or the transport said when it failed.
    Outcome(CommandOutcome, Option<String>),
    SweepDone {
        took: Duration,
        answered: usize,
    },
}

/// The loop has stopped; nothing sent now would be acted on.
#[derive(Debug, thiserror::Error)]
#[error("the daemon is stopping")]
pub struct Stopped;

/// A running daemon's handles: what the API, the signal handlers and the views hold.
#[derive(Clone)]
pub struct Handle {
    operator: mpsc::UnboundedSender<(OperatorCommand, String)>,
    pushed: mpsc::UnboundedSender<Pushed>,
    pub status: watch::Receiver<Status>,
    pub miners: watch::Receiver<Arc<MinersView>>,
    pub recent: Arc<RecentEvents>,
}

impl Handle {
    /// An operator command, and who or what gave it ("http", "operator:alice", "signal:SIGUSR1").
    pub fn operator(&self, command: OperatorCommand, actor: String) -> Result<(), Stopped> {
        self.operator.send((command, actor)).map_err(|_| Stopped)
    }

    /// The plant's trip that holds the fleet, as last published ("tripped by SOURCE"): a
    /// resume cannot lift it, so the API and SIGUSR2 refuse one while it holds.
    pub fn held_by_plant(&self) -> Option<String> {
        self.status.borrow().protection.clone()
    }

    /// The surplus now, as the plant pushed it (used when the site's source is `http`).
    pub fn push_surplus(&self, at: Timestamp, available: Watts) -> Result<(), Stopped> {
        self.pushed
            .send(Pushed::Surplus(at, available))
            .map_err(|_| Stopped)
    }

    /// The plant's day-ahead schedule, replacing the last one.
    pub fn schedule(&self, blocks: Vec<(Timestamp, Watts)>) -> Result<(), Stopped> {
        self.pushed
            .send(Pushed::Schedule(blocks))
            .map_err(|_| Stopped)
    }

    /// Whether the loop has stopped.
    pub fn is_closed(&self) -> bool {
        self.operator.is_closed()
    }
}

/// The surplus as the loop reads it.
enum SurplusFeed {
    Replay {
        profile: Arc<Profile>,
        offset: Duration,
    },
    Pushed(Option<(Timestamp, Watts)>),
    Judged(Box<SignalDesk>),
}

impl SurplusFeed {
    fn reading(&self, now: Timestamp) -> Option<(Timestamp, Watts)> {
        match self {
            SurplusFeed::Replay { profile, offset } => Some((now, profile.at(now - *offset))),
            SurplusFeed::Pushed(latest) => *latest,
            SurplusFeed::Judged(desk) => desk.verdict(now).available,
        }
    }
}

/// The receiving ends, apart from the daemon so that the loop can wait on them while it changes
/// the daemon's state.
struct Inbox {
    operator: mpsc::UnboundedReceiver<(OperatorCommand, String)>,
    signals: mpsc::UnboundedReceiver<SignalEvent>,
    io: mpsc::UnboundedReceiver<IoEvent>,
    pushed: mpsc::UnboundedReceiver<Pushed>,
}

impl Inbox {
    /// What waits in each queue.
    fn lengths(&self) -> std::collections::BTreeMap<&'static str, usize> {
        [
            ("operator", self.operator.len()),
            ("signals", self.signals.len()),
            ("io", self.io.len()),
            ("pushed", self.pushed.len()),
        ]
        .into()
    }
}

/// What the daemon publishes.
struct Publisher {
    status: watch::Sender<Status>,
    miners: watch::Sender<Arc<MinersView>>,
    recent: Arc<RecentEvents>,
    fleet_report: watch::Sender<FleetReport>,
    /// Every miner's address, model and firmware (fixed for the run).
    directory: Arc<Vec<MinerEntry>>,
    /// When the miners' view was last published (at most once a wall second, and at once after
    /// an operator's command).
    miners_at: Option<Instant>,
    /// The fleet's capacity by efficiency for the `FleetReport`, counted with the miners' view
    /// (once a wall second), not at every tick.
    tiers: Arc<[hashsink_core::region::Tier]>,
    /// Telemetry arrived since the status was last published, and when that was: new readings
    /// are published within `PUBLISH_EVERY` (wall), not only at the next tick.
    telemetry_unpublished: bool,
    status_at: Instant,
}

/// New telemetry is shown within this much wall time.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// The miners' view is published at most this often (wall).
const MINERS_VIEW_EVERY: Duration = Duration::from_secs(1);
/// The ledger's pending records are handed to its writer at least this often (wall).
const LEDGER_FLUSH_EVERY: Duration = Duration::from_secs(5);
/// The loop sleeps at least this long between wake-ups (wall), however close the next timer.
const MIN_WALL_SLEEP: Duration = Duration::from_millis(20);
/// How many faulted miners the status lists by name.
const FAULTED_LISTED: usize = 100;

/// The daemon: the controller on a fixed cadence, fed by the surplus and the fleet's telemetry,
/// its commands carried out by the drivers. The loop never waits on a miner.
pub struct Daemon {
    fleet: Arc<Fleet>,
    io: Arc<FleetIo>,
    clock: ScaledClock,
    ctl: Controller,
    cadence: Duration,
    surplus: SurplusFeed,
    meter: Option<Meter>,
    telemetry_interval: Duration,
    on_stop: OnStop,
    ledger: Option<Recorder>,
    /// Write commands whose outcome the ledger still awaits (read-backs are not audited).
    audited: HashSet<u64>,
    ledger_flushed: Instant,
    publish: Publisher,
    /// Each miner's last report.
    last: Vec<MinerStatus>,
    /// Each miner's last failed command, in the firmware's words (until one succeeds); copied
    /// into the miners' view when it is published, if it changed.
    refusals: std::collections::BTreeMap<u32, String>,
    /// Why each miner used on/off is: the firmware's refusal of a level (until a re-probe
    /// gives it levels again). Published with `refusals`.
    on_off_why: std::collections::BTreeMap<u32, String>,
    /// Miners whose firmware says it sets its own level (LuxOS ATM on), read at each sweep.
    owned_level: HashSet<u32>,
    refusals_changed: bool,
    /// The malformed reading last logged per miner (logged again when the reason changes).
    malformed_logged: Vec<Option<Malformed>>,
    status: Status,
    /// What the whole fleet draws asleep.
    standby: Watts,
    /// Under an operator's shed or curtailment (the KPIs leave that time out).
    overridden: bool,
    /// Who gave the last operator command (the actor of the commands it causes).
    operator_actor: String,
    /// Miners routed around for a fault at the last tick (a rise is recorded).
    faulted_before: u32,
    next_tick: Timestamp,
    next_sweep: Timestamp,
    sweeping: bool,
    last_kpi_at: Timestamp,
    /// An operator or emergency shed being sent: when it started and the command count then.
    shed_timer: Option<(Instant, u64)>,
    /// Ticks of the loop so far: the plant's heartbeat (`FleetReport::heartbeat`).
    heartbeat: u64,
    /// This run's number in the reports a region's coordinator reads (a fresh one at every
    /// start: two runs under one id are two daemons configured alike).
    run_id: u64,
    /// systemd's watchdog, petted on every turn of the loop.
    watchdog: crate::watchdog::Watchdog,
    /// Commands in flight: reaped as they finish, awaited at stop so that none lands after it.
    inflight: tokio::task::JoinSet<()>,
    io_tx: mpsc::UnboundedSender<IoEvent>,
    inbox: Option<Inbox>,
}

impl Daemon {
    /// Builds the daemon and its handle, and starts the plant's signal sources if it has any.
    /// Call [`Daemon::run`] to drive the fleet.
    pub fn start(setup: Setup) -> (Daemon, Handle) {
        let Setup {
            fleet,
            io,
            controller,
            clock,
            surplus,
            meter,
            telemetry_interval,
            on_stop,
            ledger,
        } = setup;
        let (operator_tx, operator) = mpsc::unbounded_channel();
        let (signals_tx, signals) = mpsc::unbounded_channel();
        let (io_tx, io_rx) = mpsc::unbounded_channel();
        let (pushed_tx, pushed) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = watch::channel(FleetReport::default());
        let surplus = match surplus {
            SurplusSource::Replay { profile, offset } => SurplusFeed::Replay { profile, offset },
            SurplusSource::Pushed => SurplusFeed::Pushed(None),
            SurplusSource::Signals(signals) => {
                info!(sources = signals.sources.len(), policy = ?signals.trust.policy, "plant signals");
                start_sources(&signals, clock, report_rx, signals_tx);
                SurplusFeed::Judged(Box::new(SignalDesk::new(signals.trust)))
            }
        };
        let start = clock.now();
        let last = vec![MinerStatus::Unreachable; fleet.len()];
        let directory = Arc::new(directory(&fleet, &io));
        let (status_tx, status) = watch::channel(Status::default());
        let (miners_tx, miners) = watch::channel(Arc::new(MinersView {
            at_ms: start.as_millis(),
            directory: directory.clone(),
            live: last
                .iter()
                .map(|s| live_of(s, None, ControlUse::Levels))
                .collect(),
            refusals: Arc::default(),
            on_off_why: Arc::default(),
        }));
        let recent = Arc::new(RecentEvents::default());
        let handle = Handle {
            operator: operator_tx,
            pushed: pushed_tx,
            status,
            miners,
            recent: recent.clone(),
        };
        let standby = fleet.miner_ids().map(|m| fleet.spec_of(m).standby).sum();
        let daemon = Daemon {
            ctl: Controller::new(fleet.clone(), controller.clone(), start),
            cadence: controller.cadence,
            fleet,
            io,
            clock,
            surplus,
            meter,
            telemetry_interval,
            on_stop,
            ledger,
            audited: HashSet::new(),
            ledger_flushed: Instant::now(),
            publish: Publisher {
                status: status_tx,
                miners: miners_tx,
                recent,
                fleet_report: report_tx,
                directory,
                miners_at: None,
                tiers: Arc::from([]),
                telemetry_unpublished: false,
                status_at: Instant::now(),
            },
            malformed_logged: vec![None; last.len()],
            refusals: Default::default(),
            on_off_why: Default::default(),
            owned_level: HashSet::new(),
            refusals_changed: false,
            last,
            status: Status {
                mode: "follow",
                ..Status::default()
            },
            standby,
            overridden: false,
            operator_actor: "operator".into(),
            faulted_before: 0,
            next_tick: start,
            next_sweep: start,
            sweeping: false,
            last_kpi_at: start,
            shed_timer: None,
            watchdog: crate::watchdog::Watchdog::from_env(),
            heartbeat: 0,
            run_id: run_id(),
            inflight: tokio::task::JoinSet::new(),
            io_tx,
            inbox: Some(Inbox {
                operator,
                signals,
                io: io_rx,
                pushed,
            }),
        };
        (daemon, handle)
    }

    /// Runs until `stop` resolves, then puts the fleet in its safe state. Returns the final
    /// status.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<Status> {
        let mut inbox = self.inbox.take().expect("a daemon runs once");
        tokio::pin!(stop);
        info!(
            miners = self.fleet.len(),
            speed = self.clock.speed(),
            "daemon started"
        );
        self.adopt_fleet().await;
        // What came in while the fleet was read (seconds, for a large one) is taken in before
        // the first tick, oldest first, so that the tick judges the newest reading: judged on
        // the oldest, as old as the adoption, the fleet just adopted would be shed.
        while let Ok((command, actor)) = inbox.operator.try_recv() {
            self.on_operator(command, actor);
        }
        while let Ok(event) = inbox.signals.try_recv() {
            self.on_signal(event);
        }
        while let Ok(pushed) = inbox.pushed.try_recv() {
            self.on_pushed(pushed);
        }
        self.watchdog.ready();
        let stall = test_stall_after();
        let started = Instant::now();
        loop {
            if stall.is_some_and(|after| started.elapsed() >= after) {
                // The test hook: the loop hangs (blocking its thread), as a deadlock would.
                warn!("test hook: the loop stalls now");
                std::thread::sleep(Duration::from_secs(3600));
            }
            let next_tick = self.next_tick;
            let wake_at = self
                .ctl
                .poll_timeout()
                .map_or(next_tick, |t| t.min(next_tick));
            let pet_in = self.watchdog.due_in();
            // Operator commands first: a flood of readings cannot delay a shed.
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some((command, actor)) = inbox.operator.recv() => self.on_operator(command, actor),
                Some(event) = inbox.signals.recv() => self.on_signal(event),
                Some(event) = inbox.io.recv() => self.on_io(event),
                Some(pushed) = inbox.pushed.recv() => self.on_pushed(pushed),
                Some(_) = self.inflight.join_next(), if !self.inflight.is_empty() => {}
                _ = sleep_until(&self.clock, wake_at) => {}
                _ = tokio::time::sleep(pet_in.unwrap_or_default()), if pet_in.is_some() => {}
            }
            let now = self.clock.now();
            if self.publish.telemetry_unpublished
                && self.publish.status_at.elapsed() >= PUBLISH_EVERY
            {
                self.next_tick = self.next_tick.min(now);
            }
            if now >= self.next_tick {
                self.status.queues = inbox.lengths();
                self.on_tick(now);
            }
            if self.ctl.poll_timeout().is_some_and(|t| t <= now) {
                self.ctl.handle_timeout(now);
            }
            self.dispatch();
            self.watchdog.pet();
        }
        self.watchdog.stopping();
        self.stop().await
    }

    fn on_operator(&mut self, command: OperatorCommand, actor: String) {
        let now = self.clock.now();
        info!(?command, %actor, "operator command");
        let (n, io) = (self.fleet.len(), &self.io);
        let (kind, detail) = describe_operator(command, &|m| {
            if m.index() < n {
                io.driver(m.index()).address().to_string()
            } else {
                "no such miner".into()
            }
        });
        self.note(now, kind, &actor, detail);
        if let Some(l) = self.ledger.as_mut() {
            // An operator's action is on record at once, not at the next interval.
            l.flush();
        }
        self.publish.miners_at = None;
        self.operator_actor = actor;
        let status = &mut self.status;
        match command {
            OperatorCommand::Exclude(_) | OperatorCommand::Include(_) => {}
            OperatorCommand::Reprobe => {
                self.on_off_why.clear();
                self.refusals_changed = true;
            }
            OperatorCommand::Resume => {
                self.overridden = false;
                (status.mode, status.curtail_w) = ("follow", None);
                status.mode_by.clear();
                if let Some(held) = &status.protection {
                    warn!(protection = %held, "resume: the operator's shed or curtailment is lifted; the plant's trip still holds the fleet");
                }
            }
            OperatorCommand::ShedAll => {
                self.overridden = true;
                (status.mode, status.curtail_w) = ("shed", None);
                status.mode_by = self.operator_actor.clone();
                self.shed_timer = Some((Instant::now(), status.commands));
            }
            OperatorCommand::CurtailTo(w) => {
                self.overridden = true;
                (status.mode, status.curtail_w) = ("curtail", Some(w.w()));
                status.mode_by = self.operator_actor.clone();
            }
        }
        self.ctl.handle_input(now, Input::Operator(command));
    }

    fn on_signal(&mut self, event: SignalEvent) {
        let now = self.clock.now();
        let SurplusFeed::Judged(desk) = &mut self.surplus else {
            return;
        };
        match desk.on_event(now, event) {
            SignalAction::None => {}
            // Acted on now (a fall reaches the miners within milliseconds).
            SignalAction::FeedNow => {
                if let Some((at, available)) = desk.verdict(now).available {
                    self.ctl.handle_input(now, Input::Surplus { at, available });
                }
            }
            SignalAction::Protection(protection) => self.on_protection(now, protection),
        }
    }

    /// The plant's trips changed: the controller holds the fleet at nothing while one is
    /// asserted, at the fail-safe load while one cannot be read, and an operator's resume
    /// lifts neither; recorded at once with the sources.
    fn on_protection(&mut self, now: Timestamp, protection: Protection) {
        let (kind, cap) = match &protection {
            Protection::Tripped(_) => ("trip", Some(Watts::ZERO)),
            Protection::Unknown(_) => ("trip-unreadable", Some(self.ctl.config().failsafe_load)),
            Protection::Clear => ("trip-clear", None),
        };
        let detail = protection
            .describe()
            .unwrap_or_else(|| "every trip clear: the fleet may come back (staggered)".into());
        self.note(now, kind, "plant", detail);
        if let Some(l) = self.ledger.as_mut() {
            l.flush();
        }
        if let Protection::Tripped(sources) = &protection {
            self.operator_actor = format!("plant:{}", sources.join(","));
            self.shed_timer = Some((Instant::now(), self.status.commands));
        }
        self.status.protection = protection.describe();
        self.ctl.handle_input(now, Input::Protection(cap));
    }

    fn on_pushed(&mut self, pushed: Pushed) {
        match pushed {
            Pushed::Surplus(at, available) => {
                if let SurplusFeed::Pushed(latest) = &mut self.surplus {
                    *latest = Some((at, available));
                }
            }
            Pushed::Schedule(blocks) => {
                info!(blocks = blocks.len(), "day-ahead schedule loaded");
                self.status.schedule_blocks = blocks.len();
                self.ctl
                    .handle_input(self.clock.now(), Input::Forecast(blocks));
            }
        }
    }

    fn on_io(&mut self, event: IoEvent) {
        let now = self.clock.now();
        match event {
            IoEvent::Telemetry { miner, at, result } => {
                if let Err(e) = &result {
                    let address = self.io.driver(miner as usize).address();
                    debug!(miner, %address, error = %e, "no telemetry");
                }
                if let Err(why) = self.admit(miner, &result) {
                    // A reading it cannot use is no answer to the controller; the status and
                    // the ledger keep the miner's last good one.
                    let status = MinerStatus::Unreachable;
                    let report = MinerReport {
                        miner: MinerId(miner),
                        at,
                        status,
                    };
                    self.ctl.handle_input(now, Input::Miner(report));
                    self.note_malformed(miner, why);
                    return;
                }
                self.malformed_logged[miner as usize] = None;
                match &result {
                    Ok(t) if t.level_owned => self.level_owned(now, MinerId(miner)),
                    Ok(_) if self.owned_level.remove(&miner) => self.level_given_back(now, miner),
                    _ => {}
                }
                let status = to_status(&result);
                self.last[miner as usize] = status;
                self.publish.telemetry_unpublished = true;
                let report = MinerReport {
                    miner: MinerId(miner),
                    at,
                    status,
                };
                self.ctl.handle_input(now, Input::Miner(report));
            }
            IoEvent::Outcome(outcome, why) => self.on_outcome(now, outcome, why),
            IoEvent::SweepDone { took, answered } => {
                self.sweeping = false;
                self.status.last_sweep_ms = took.as_millis() as u64;
                debug!(
                    took_ms = took.as_millis() as u64,
                    answered, "telemetry sweep"
                );
                // Publish the sweep's last readings now, not at the next tick.
                self.next_tick = self.next_tick.min(now);
                // The controller keeps its fleet sums incrementally; once a sweep they are
                // checked against its miners (O(miners), as the sweep itself).
                if let Err(drift) = self.ctl.check_accounting() {
                    error!(%drift, "controller: its running sums disagree with its miners' states (a bug; please report it with this log)");
                }
            }
        }
    }

    /// Reads every miner once and hands what they are doing to the controller as its plan
    /// (`Controller::adopt`), so that a restart under load does not sleep a running fleet. A
    /// reading refused at the door counts as no answer (that miner is told to sleep).
    async fn adopt_fleet(&mut self) {
        let at = self.clock.now();
        let mut read = vec![MinerStatus::Unreachable; self.fleet.len()];
        let (mut refused, mut owned) = (Vec::new(), Vec::new());
        let took = self
            .io
            .sweep_each(|miner, result| match self.admit(miner as u32, &result) {
                Ok(()) => {
                    read[miner] = to_status(&result);
                    if result.is_ok_and(|t| t.level_owned) {
                        owned.push(MinerId(miner as u32));
                    }
                }
                Err(why) => refused.push((miner as u32, why)),
            })
            .await;
        for (miner, why) in refused {
            self.note_malformed(miner, why);
        }
        let adopted = self.ctl.adopt(at, &read);
        for miner in owned {
            self.level_owned(at, miner);
        }
        let count = FleetCount::of(&read);
        self.last = read;
        self.publish.telemetry_unpublished = true;
        let detail = format!(
            "taken over as found: {} mining ({:.1} kW above standby kept), {} asleep, {} booting \
             or silent (told to sleep); read in {} ms",
            count.mining,
            adopted.w() / 1000.0,
            count.asleep,
            count.booting + count.unreachable,
            took.as_millis()
        );
        info!(
            mining = count.mining,
            asleep = count.asleep,
            kw = adopted.w() / 1000.0,
            "fleet adopted"
        );
        self.note(at, "adopt", "daemon", detail);
    }

    /// A command's outcome: to the ledger's audit, and when it failed, with the firmware's or
    /// the transport's own words, to the log, the miner's view and the counts by reason.
    fn on_outcome(&mut self, now: Timestamp, outcome: CommandOutcome, why: Option<String>) {
        let mut text = outcome_text(&outcome.result);
        let miner = outcome.miner.0;
        match failure_kind(&outcome.result) {
            None => self.refusals_changed |= self.refusals.remove(&miner).is_some(),
            Some(kind) => {
                let why = why.unwrap_or_default();
                let address = self.io.driver(outcome.miner.index()).address();
                warn!(miner, %address, result = kind, %why, "command failed");
                *self
                    .status
                    .command_failures
                    .entry(kind.to_string())
                    .or_default() += 1;
                text = format!("{text}: {why}");
                self.refusals.insert(miner, text.clone());
                self.refusals_changed = true;
            }
        }
        if let Some(l) = self.ledger.as_mut()
            && self.audited.remove(&outcome.id.0)
        {
            l.outcome(hashsink_ledger::Outcome {
                id: outcome.id.0,
                at: now,
                result: text.clone(),
            });
        }
        let level_refused = outcome.result == Ok(Err(Refusal::LevelRefused));
        let was = self.ctl.control_of(outcome.miner);
        self.ctl.handle_input(now, Input::Outcome(outcome));
        if level_refused && was == ControlUse::Levels {
            self.on_degraded(now, outcome.miner, text);
        }
    }

    /// A miner says its firmware sets its own level (LuxOS with ATM on): used on/off before a
    /// level is ever refused.
    fn level_owned(&mut self, now: Timestamp, miner: MinerId) {
        self.owned_level.insert(miner.0);
        if self.ctl.control_of(miner) == ControlUse::Levels {
            self.ctl.use_on_off(miner, now);
            let why = "reports that its firmware sets its own level (LuxOS ATM on)".to_string();
            self.on_degraded(now, miner, why);
        }
    }

    /// A miner's firmware no longer says it owns its level (ATM turned off): levels again.
    fn level_given_back(&mut self, now: Timestamp, miner: u32) {
        self.ctl.offer_levels(MinerId(miner));
        self.on_off_why.remove(&miner);
        self.refusals_changed = true;
        let address = self.io.driver(miner as usize).address();
        info!(miner, %address, "miner's firmware no longer sets its own level: levels offered again");
        let detail = format!(
            "miner {miner} ({address}) no longer reports that its firmware sets its own level: levels offered again"
        );
        self.note(now, "levels", "controller", detail);
    }

    /// A miner refused a power level and the controller now uses it on/off: said once, in the
    /// log, the event log and the miner's view.
    fn on_degraded(&mut self, now: Timestamp, miner: MinerId, text: String) {
        if self.ctl.control_of(miner) != ControlUse::OnOff {
            return;
        }
        let address = self.io.driver(miner.index()).address();
        let every = self.ctl.config().reprobe;
        info!(miner = miner.0, %address, why = %text, reprobe_s = every.as_secs(),
            "miner refuses power levels: used on/off at the level its firmware holds");
        let detail = format!(
            "miner {} ({address}) {text}: used on/off at the level its firmware holds; \
             levels offered again every {} s or on request",
            miner.0,
            every.as_secs()
        );
        self.note(now, "on-off", "controller", detail);
        self.on_off_why.insert(miner.0, text);
        self.refusals_changed = true;
    }

    /// Checks a reading at the door (`readings::admit`).
    fn admit(&self, miner: u32, result: &Result<Telemetry, DriverError>) -> Result<(), Malformed> {
        match result {
            Ok(t) => readings::admit(self.fleet.spec_of(MinerId(miner)), t),
            Err(_) => Ok(()),
        }
    }

    /// Counts a malformed reading by reason, and logs it once per miner until the reason changes
    /// or a good reading comes.
    fn note_malformed(&mut self, miner: u32, why: Malformed) {
        *self
            .status
            .malformed_readings
            .entry(why.key().to_string())
            .or_default() += 1;
        if self.malformed_logged[miner as usize] != Some(why) {
            self.malformed_logged[miner as usize] = Some(why);
            let address = self.io.driver(miner as usize).address();
            warn!(miner, %address, reason = %why, "malformed reading set aside: the miner's last good reading stands");
        }
    }

    /// The cadence's work: feed the surplus and the meter, count, record, publish, and start a
    /// telemetry sweep when one is due.
    fn on_tick(&mut self, now: Timestamp) {
        self.publish.telemetry_unpublished = false;
        self.publish.status_at = Instant::now();
        let reading = self.read_surplus(now);
        if let Some((at, available)) = reading {
            self.ctl.handle_input(now, Input::Surplus { at, available });
        }
        let metered = self.meter.as_ref().map(|m| m());
        if let Some((measured, _)) = metered {
            self.ctl
                .handle_input(now, Input::FleetPower { at: now, measured });
        }
        self.count(now, reading.map(|r| r.1), metered);
        self.record(now);
        self.publish_views(now);
        self.next_tick = now + self.cadence;
        if now >= self.next_sweep && !self.sweeping {
            self.start_sweep(now);
        }
    }

    /// The surplus now; for plant signals one verdict per tick gives both the reading and the
    /// sources' standing in the status.
    fn read_surplus(&mut self, now: Timestamp) -> Option<(Timestamp, Watts)> {
        let SurplusFeed::Judged(desk) = &mut self.surplus else {
            return self.surplus.reading(now);
        };
        let verdict = desk.verdict(now);
        if let Some((kind, why)) = desk.show(&verdict, &mut self.status) {
            self.note(now, kind, "signals", why);
        }
        verdict.available
    }

    /// The miners' counts, the fleet's draw and the run's KPIs.
    fn count(
        &mut self,
        now: Timestamp,
        surplus: Option<Watts>,
        metered: Option<(Watts, HashRate)>,
    ) {
        let count = FleetCount::of(&self.last);
        let (fleet, hashrate) = metered.unwrap_or((count.power, count.hashrate));
        let dt = now.saturating_since(self.last_kpi_at);
        self.last_kpi_at = now;
        let followed = surplus.filter(|_| !self.overridden);
        self.status
            .kpis
            .integrate(dt, fleet, hashrate, followed, self.standby);
        self.status
            .show_fleet(&count, fleet, hashrate, self.ctl.faulted() as u32);
        self.status.now_ms = now.as_millis();
        self.status.surplus_w = surplus.map(|s| s.w());
        self.status.allowed_w = self.ctl.allowed().w();
        self.status.planned_w = self.ctl.planned_load().w();
        self.status.ahead_w = self.ctl.allowed_ahead().w();
        self.status.plan = self.ctl.breakdown();
    }

    /// The tick in the ledger, handed to its writer every few seconds.
    fn record(&mut self, now: Timestamp) {
        let Some(l) = self.ledger.as_mut() else {
            return;
        };
        (self.status.ledger_set_aside, self.status.ledger_lost) = l.set_aside();
        let ctl = &self.ctl;
        l.tick(
            now,
            &self.last,
            Watts(self.status.fleet_w),
            self.status.surplus_w.map(Watts),
            self.standby,
            &|i| ctl.fault_of(MinerId(i as u32)).is_some(),
        );
        if self.ledger_flushed.elapsed() >= LEDGER_FLUSH_EVERY && l.has_pending() {
            l.flush();
            self.ledger_flushed = Instant::now();
        }
    }

    /// The miners' view (at most once a second), the plant's report, the faulted miners, and
    /// the status.
    fn publish_views(&mut self, now: Timestamp) {
        if self
            .publish
            .miners_at
            .is_none_or(|t| t.elapsed() >= MINERS_VIEW_EVERY)
        {
            self.publish.miners_at = Some(Instant::now());
            self.publish.tiers = self.capacity_tiers();
            let live: Vec<live::MinerLive> = (self.last.iter().enumerate())
                .map(|(i, s)| {
                    let m = MinerId(i as u32);
                    live_of(s, self.ctl.fault_of(m), self.ctl.control_of(m))
                })
                .collect();
            self.status.miners_by_control.clear();
            for l in &live {
                *self
                    .status
                    .miners_by_control
                    .entry(l.control.label())
                    .or_default() += 1;
            }
            let (refusals, on_off_why) = if std::mem::take(&mut self.refusals_changed) {
                (
                    Arc::new(self.refusals.clone()),
                    Arc::new(self.on_off_why.clone()),
                )
            } else {
                let view = self.publish.miners.borrow();
                (view.refusals.clone(), view.on_off_why.clone())
            };
            self.publish.miners.send_replace(Arc::new(MinersView {
                at_ms: now.as_millis(),
                directory: self.publish.directory.clone(),
                live,
                refusals,
                on_off_why,
            }));
        }
        self.heartbeat = self.heartbeat.wrapping_add(1);
        let healthy = self.status.surplus_w.is_some() && self.status.protection.is_none();
        self.publish.fleet_report.send_replace(FleetReport {
            heartbeat: self.heartbeat,
            load: Watts(self.status.fleet_w),
            setpoint: self.ctl.allowed(),
            run: self.run_id,
            tiers: self.publish.tiers.clone(),
            following: self.status.surplus_w.map(Watts),
            healthy,
        });
        self.list_faulted();
        // Exclusions are the operator's, not faults.
        let faults = self.status.faulted - self.status.excluded;
        if faults > self.faulted_before {
            let detail = format!(
                "{faults} miners routed around (was {})",
                self.faulted_before
            );
            self.note(now, "miner-fault", "controller", detail);
        }
        self.faulted_before = faults;
        self.status.tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let _ = self.publish.status.send(self.status.clone());
    }

    /// What the fleet can draw by spec, most efficient first: its miners not routed around, at
    /// their top levels (what a region's coordinator shares a surplus out by).
    fn capacity_tiers(&self) -> Arc<[hashsink_core::region::Tier]> {
        let mut watts = vec![0.0; self.fleet.specs.len()];
        for m in self.fleet.miner_ids() {
            if self.ctl.fault_of(m).is_none() {
                let spec = self.fleet.miner_spec[m.index()].0 as usize;
                watts[spec] += self.fleet.specs[spec].max_power().w();
            }
        }
        self.fleet
            .specs_by_efficiency()
            .into_iter()
            .filter(|&s| watts[s] > 0.0)
            .map(|s| hashsink_core::region::Tier {
                watts: Watts(watts[s]),
                j_per_th: self.fleet.specs[s].nameplate_efficiency().j_per_th(),
            })
            .collect()
    }

    fn list_faulted(&mut self) {
        let status = &mut self.status;
        status.faulted_miners.clear();
        status.excluded = 0;
        if status.faulted == 0 {
            return;
        }
        for m in self.fleet.miner_ids() {
            match self.ctl.fault_of(m) {
                Some(FaultKind::Excluded) => status.excluded += 1,
                Some(fault) if status.faulted_miners.len() < FAULTED_LISTED => {
                    status.faulted_miners.push(FaultedMiner {
                        address: self.io.driver(m.index()).address().to_string(),
                        fault,
                    });
                }
                _ => {}
            }
        }
    }

    /// Reads every miner in a task of its own; each result comes back as it lands (what a fast
    /// miner reports is seen while slow ones are still being read).
    fn start_sweep(&mut self, now: Timestamp) {
        self.sweeping = true;
        self.next_sweep = now + self.telemetry_interval;
        let (io, tx, clock) = (self.io.clone(), self.io_tx.clone(), self.clock);
        tokio::spawn(async move {
            // Stamped with the sweep's start: each miner's state is no older than that, and a
            // slow miner's reply may be much older than the sweep's end.
            let at = clock.now();
            let mut answered = 0;
            let took = io
                .sweep_each(|miner, result| {
                    answered += usize::from(result.is_ok());
                    let miner = miner as u32;
                    let _ = tx.send(IoEvent::Telemetry { miner, at, result });
                })
                .await;
            let _ = tx.send(IoEvent::SweepDone { took, answered });
        });
    }

    /// Hands every command the controller has to the drivers, each in a task of its own.
    fn dispatch(&mut self) {
        while let Some(command) = self.ctl.poll_command() {
            self.status.commands += 1;
            let miner = command.miner;
            let control = match command.action {
                Action::Query => {
                    self.read_back(miner);
                    continue;
                }
                Action::Sleep => Control::Sleep,
                Action::Resume => Control::Resume,
                Action::Wake(level) => Control::Run {
                    level,
                    watts: self.fleet.spec_of(miner).level_power(level),
                },
                // The miner was last told a level (it hashes or boots): the level alone.
                Action::SetLevel(level) => Control::Level {
                    level,
                    watts: self.fleet.spec_of(miner).level_power(level),
                },
            };
            debug!(miner = miner.0, ?control, reason = ?command.reason, "command");
            self.audit(&command, control);
            let (apply, tx, id) = (
                self.io.apply(miner.index(), control),
                self.io_tx.clone(),
                command.id,
            );
            self.inflight.spawn(async move {
                let applied = apply.await;
                let why = applied.as_ref().err().map(ToString::to_string);
                let result = to_outcome(applied);
                let _ = tx.send(IoEvent::Outcome(CommandOutcome { id, miner, result }, why));
            });
        }
        if let Some((started, before)) = self.shed_timer.take() {
            info!(
                commands = self.status.commands - before,
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "shed: commands sent to the fleet"
            );
        }
    }

    /// A read-back: the miner read now; its report answers the controller's query, whose grace
    /// for the miner then counts from when it returned, not from when the read was sent.
    fn read_back(&mut self, miner: MinerId) {
        let (read, tx, at) = (
            self.io.read(miner.index()),
            self.io_tx.clone(),
            self.clock.now(),
        );
        self.inflight.spawn(async move {
            // The report answers the read-back (a failed read reports the miner unreachable).
            let result = read.await;
            let _ = tx.send(IoEvent::Telemetry {
                miner: miner.0,
                at,
                result,
            });
        });
    }

    /// A write command in the ledger's audit log (read-backs are not audited).
    fn audit(&mut self, command: &hashsink_core::Command, control: Control) {
        let Some(l) = self.ledger.as_mut() else {
            return;
        };
        self.audited.insert(command.id.0);
        l.command(hashsink_ledger::CommandRecord {
            id: command.id.0,
            at: self.clock.now(),
            miner: Some(command.miner.0),
            action: match (command.action, control) {
                (Action::Wake(l), _) => format!("wake level {l}"),
                (_, Control::Run { level, .. } | Control::Level { level, .. }) => {
                    format!("level {level}")
                }
                (_, Control::Resume) => "wake at its own level".into(),
                (_, Control::Sleep) => "sleep".into(),
            },
            reason: format!("{:?}", command.reason).to_lowercase(),
            actor: if command.reason == Reason::Operator {
                self.operator_actor.clone()
            } else {
                "controller".into()
            },
        });
    }

    /// Lets every command already sent land (each is bounded by its call timeout) before the
    /// safe state, so that a late wake cannot undo it; then the safe state and the ledger's last
    /// records.
    async fn stop(mut self) -> Result<Status> {
        while self.inflight.join_next().await.is_some() {}
        if self.on_stop == OnStop::Sleep {
            self.sleep_all().await;
        }
        if let Some(l) = self.ledger.take() {
            let ctl = &self.ctl;
            l.stop(self.clock.now(), &self.last, &|i| {
                ctl.fault_of(MinerId(i as u32)).is_some()
            });
            info!("ledger: flushed and closed");
        }
        Ok(self.status)
    }

    async fn sleep_all(&mut self) {
        info!("stopping: putting every miner to sleep");
        let detail = "every miner told to sleep at stop".to_string();
        self.note(self.clock.now(), "safe-state", "daemon", detail);
        let all: Vec<usize> = (0..self.fleet.len()).collect();
        let results = self.io.apply_all(&all, Control::Sleep).await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
            .map(|(i, e)| format!("{} ({e})", self.io.driver(*i).address()))
            .collect();
        if failed.is_empty() {
            info!(miners = all.len(), "every miner accepted sleep");
        } else {
            warn!(failed = failed.len(), first = %failed[0], "some miners did not accept sleep: check them by hand");
        }
    }

    /// An event, to the in-memory log the dashboard shows and to the ledger if there is one.
    fn note(&mut self, at: Timestamp, kind: &str, actor: &str, detail: String) {
        self.publish
            .recent
            .push(at.as_millis(), kind, actor, &detail);
        if let Some(l) = self.ledger.as_mut() {
            l.event(at, kind, actor, detail);
        }
    }
}

fn directory(fleet: &Fleet, io: &FleetIo) -> Vec<MinerEntry> {
    fleet
        .miner_ids()
        .map(|m| {
            let spec = fleet.spec_of(m);
            MinerEntry {
                id: m.0,
                address: io.driver(m.index()).address().to_string(),
                model: spec.model.clone(),
                firmware: spec.firmware.key().to_string(),
            }
        })
        .collect()
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
        OperatorCommand::Reprobe => (
            "reprobe",
            "power levels offered again to every miner used on/off".into(),
        ),
    }
}

fn live_of(s: &MinerStatus, fault: Option<FaultKind>, control: ControlUse) -> live::MinerLive {
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
        control,
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
        Err(DriverError::LevelRefused(_)) => Ok(Err(Refusal::LevelRefused)),
        Err(DriverError::Unsupported(_)) => Ok(Err(Refusal::Unsupported)),
        Err(DriverError::Timeout(_)) => Err(TransportError::Timeout),
        Err(DriverError::Connect(_)) => Err(TransportError::Refused),
        Err(DriverError::Malformed(_)) => Err(TransportError::Malformed),
    }
}

/// A failed outcome's kind, as the counts by reason label it (none: it was applied).
fn failure_kind(r: &Result<Result<(), Refusal>, TransportError>) -> Option<&'static str> {
    match r {
        Ok(Ok(())) => None,
        Ok(Err(Refusal::Rejected)) => Some("rejected"),
        Ok(Err(Refusal::LevelRefused)) => Some("level_refused"),
        Ok(Err(Refusal::Unsupported)) => Some("unsupported"),
        Ok(Err(Refusal::Busy)) => Some("busy"),
        Err(TransportError::Timeout) => Some("timeout"),
        Err(TransportError::Refused) => Some("connection_refused"),
        Err(TransportError::Malformed) => Some("malformed_reply"),
    }
}

/// An outcome as the audit log writes it.
fn outcome_text(r: &Result<Result<(), Refusal>, TransportError>) -> String {
    match r {
        Ok(Ok(())) => "applied".into(),
        Ok(Err(refusal)) => format!("refused: {refusal:?}").to_lowercase(),
        Err(e) => format!("failed: {e:?}").to_lowercase(),
    }
}

async fn sleep_until(clock: &ScaledClock, t: Timestamp) {
    let wall = clock.wall_duration(t.saturating_since(clock.now()));
    tokio::time::sleep(wall.max(MIN_WALL_SLEEP)).await;
}

/// A test hook, in debug builds only: `HASHSINK_TEST_STALL_LOOP_AFTER_S` makes the loop hang
/// that long after it starts, so a test can see the watchdog's pets stop.
fn test_stall_after() -> Option<Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var("HASHSINK_TEST_STALL_LOOP_AFTER_S")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
}

/// A number for this run: the process id and the wall clock's nanoseconds.
fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (u64::from(std::process::id()) << 32) | u64::from(nanos)
}
