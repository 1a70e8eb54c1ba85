//! The surplus-following controller: an I/O-free state machine.
//!
//! ## How it dispatches
//!
//! Every `cadence` it computes the power the fleet may draw now (`allowed`): the surplus reading,
//! lowered by a safety margin and, when the surplus is falling, by where the trend says it will be
//! `lookahead` plus the slowest firmware's reaction time from now; capped by an operator
//! curtailment; driven to the fail-safe load when no trusted reading remains; and limited in how
//! fast it may rise (staggered reconnection) from what the fleet really draws.
//!
//! A surplus that moves in steps (an event starts, a block changes, a unit runs back) is taken
//! as steps: a jump the trend does not explain is a new level, not a slope, and is learnt as a
//! slope only if the next reading goes on the same way; a fall is acted on at once, not at the
//! next tick. A fall that comes back within `short_dip` is a dip: the allowed load returns at
//! once to where it was, and the miners the dip put to sleep may be woken inside `min_off`
//! (once per `min_off`, with [`Reason::Rewake`]); a sleep that has not landed yet (stock
//! firmware's 40 s mode change) is taken back rather than slept through.
//!
//! It then moves the fleet's *plan* toward that power in tiers, so that a miner wakes only when
//! the others already run at nameplate and sleeps only when the others already run at their
//! minimum. This headroom is the hysteresis that keeps miners from cycling:
//!
//! * cut: lower the miners above nameplate, then lower toward the minimum level (the step with the
//!   least hashrate per watt first), then put miners to sleep (least efficient model first, the
//!   longest awake first; a miner inside its minimum on-time is only slept when nothing else is
//!   left, and that command is tagged [`Reason::Protect`]). An urgent cut (more than the margin
//!   at once) takes fast-reacting firmware first: a stock mode change takes 40 s to land;
//! * raise (only beyond a deadband): raise miners below nameplate (the step with the most hashrate
//!   per watt first), wake sleeping miners once spare power has persisted for `wake_confirm`
//!   (most efficient model first, the longest asleep first, never inside `min_off`), waking ahead of
//!   a rising surplus or forecast by the model's wake delay, and last raise miners above nameplate.
//!
//! The deadband is the configured share of fleet power or eight times the reading's jitter (its
//! step-to-step change that the trend does not explain), whichever is larger, so that a noisy
//! meter does not make the fleet chase its noise.
//!
//! Plan changes become commands through an outbox under a token bucket (`max_commands_per_s`):
//! cuts are sent before raises, and a raise is held back while cuts that would make room for it are
//! still unsent. Every write is checked: the miner's next report must show the wanted state within
//! the modelled settle time plus a grace; otherwise the controller reads it back (`Action::Query`),
//! sends the command once more, and then routes around the miner, counting its last known draw as
//! load it cannot control. A miner that drifts from its commanded state (rebooted into mining, say)
//! is put back; one that keeps drifting is routed around too.
//!
//! Power sums are kept as deltas above the standby draw of the whole fleet, which is always there.

mod config;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hashsink_units::{Timestamp, Watts};
use serde::Serialize;

pub use config::{ControllerConfig, ControllerSettings, SettingsError};

use crate::api::{
    Action, Command, CommandId, FleetController, Input, MinerStatus, OperatorCommand, Reason,
    Refusal,
};
use crate::fleet::{Fleet, MinerId};
use crate::rate_limit::TokenBucket;

/// Miners whose cut takes effect within this time take urgent cuts first: a cut on a slow miner
/// (stock firmware changes modes through a web page in 20-60 s) leaves the fleet above the
/// surplus for that long.
const FAST_REACTION: Duration = Duration::from_secs(5);

/// How many queued miners a wake looks through to see what a more efficient model could still
/// take (bounded, so that a tick stays cheap on a fleet of 100,000).
const WAKEABLE_SCAN: usize = 4096;

/// Smoothing of the reading's jitter estimate, in seconds.
const JITTER_TIME_CONSTANT_S: f64 = 300.0;
/// How long past its settle time an unacknowledged write is left to its transport before the
/// controller reads the miner back anyway.
const MAX_ACK_WAIT: Duration = Duration::from_secs(600);

/// The deadband is at least this many times the reading's jitter: a noisy meter does not make
/// the fleet chase its noise.
const JITTER_DEADBAND_FACTOR: f64 = 8.0;

/// A miner reported asleep is believed asleep while it draws at most this many times its
/// modelled standby plus `ASLEEP_SLACK` (fans and control boards vary from unit to unit; a
/// miner that still hashes draws far more).
const ASLEEP_STANDBY_FACTOR: f64 = 2.0;
const ASLEEP_SLACK: Watts = Watts(50.0);
/// A mining miner is at its level while its draw is within this share of the level plus
/// `LEVEL_SLACK` (the firmware's own regulation and the PSU's reading error), and draws too
/// much above it.
const LEVEL_TOLERANCE: f64 = 0.1;
const LEVEL_SLACK: Watts = Watts(100.0);
/// Drifts from a confirmed command are counted over this window...
const DRIFT_WINDOW: Duration = Duration::from_secs(3600);
/// ... and this many in it mark the miner disobedient (one drift is a firmware's autotuner
/// or a reboot; three an hour is a miner that does not keep what it is told).
const DRIFTS_TO_FAULT: u8 = 3;
/// A write whose effect no report shows after its settle time, a read-back and this many
/// attempts marks the miner disobedient (it answers but does not act).
const UNCONFIRMED_ATTEMPTS: u8 = 2;
/// A write the transport fails or the firmware refuses this many times marks the miner
/// unreachable or refusing (one more than for an unconfirmed write: a network blip is common).
const FAILED_ATTEMPTS: u8 = 3;
/// A miner that reports booting after a wake is on its way, however slowly: its firmware may
/// take several times the table's wake delay (3x is seen on real units). It is judged again a
/// wake delay later, up to this many wake delays after the command.
const SLOW_WAKE_DELAYS: u32 = 5;
/// Added to a slow model's gain in an urgent cut so that every fast model steps down first:
/// larger than any hashrate-per-watt gain.
const SLOW_PENALTY: f64 = 1e9;

/// The reason a sleep carries: a dispatch sleep inside the miner's minimum on-time is forced
/// ([`Reason::Protect`]); operator, fail-safe and reconcile sleeps keep their own reason.
fn sleep_reason(reason: Reason, voluntary: bool) -> Reason {
    if voluntary || reason != Reason::Dispatch {
        reason
    } else {
        Reason::Protect
    }
}

/// The level running miners of `spec` are filled to before another miner is woken: the highest
/// at or below `fraction` of nameplate (the spec's own nameplate level at 1), never below the
/// lowest.
fn fill_level(spec: &crate::fleet::MinerSpec, fraction: f64) -> u8 {
    if fraction >= 1.0 {
        return spec.preferred_level;
    }
    let limit = spec.nameplate_power * fraction * 1.0001;
    spec.levels
        .iter()
        .rposition(|&p| p <= limit)
        .unwrap_or(0)
        .min(spec.preferred_level as usize) as u8
}

/// What the controller intends for one miner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Asleep,
    Waking(u8),
    Running(u8),
    /// Routed around: not dispatched, its draw counted as uncontrollable.
    Faulted,
}

/// What the controller last told a miner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Sleep,
    Level(u8),
}

/// How a miner is used, as learnt from what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlUse {
    /// Every rung of its power ladder.
    Levels,
    /// Asleep or hashing at whatever level its firmware holds: its firmware has one level, or
    /// refused the levels (an autotuner owns them) and obeys sleep and wake.
    OnOff,
    /// Not used: routed around (see [`FaultKind`]).
    None,
}

impl ControlUse {
    pub const ALL: [ControlUse; 3] = [ControlUse::Levels, ControlUse::OnOff, ControlUse::None];

    pub fn label(self) -> &'static str {
        match self {
            ControlUse::Levels => "levels",
            ControlUse::OnOff => "on_off",
            ControlUse::None => "none",
        }
    }
}

/// Why a miner is routed around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FaultKind {
    /// Did not answer for `silent_after`.
    Unreachable,
    /// Accepted commands but did not do what they said, or kept drifting from them.
    Disobedient,
    /// Refused or failed commands repeatedly.
    Refusing,
    /// Taken out of control by an operator; only an operator brings it back.
    Excluded,
}

#[derive(Clone, Debug)]
struct Slot {
    spec: u16,
    plan: Plan,
    commanded: Option<Target>,
    /// Bumped on every plan change; FIFO entries carrying an older epoch are stale.
    epoch: u32,
    /// When the miner last went to sleep or was woken (dwell).
    since: Timestamp,
    ready_at: Timestamp,
    /// Index in its running bucket.
    pos: u32,
    /// In the cut queue (every changed miner goes there first).
    queued: bool,
    /// In the raise queue (a change that adds load, waiting for room).
    in_raise_queue: bool,
    reason: Reason,
    pending: Option<CommandId>,
    queried: bool,
    /// The read-back sent for the pending command while it has not been answered (a report
    /// read no earlier than `query_sent` answers it).
    query: Option<CommandId>,
    query_sent: Timestamp,
    /// The pending command is not judged before this time. It starts at the send and moves to
    /// the acknowledgement when one arrives, so that the time a command spends on the wire (a
    /// slow web interface, a sped-up replay) does not count against the miner.
    verify_after: Timestamp,
    /// The pending write's settle time plus the grace.
    verify_window: Duration,
    /// When the pending write was sent, and whether its acknowledgement has come.
    sent_at: Timestamp,
    acked: bool,
    /// Reports of state read before this time say nothing about the last write (they may have
    /// been read before the miner applied it): `Timestamp::MAX` while a write is on the wire,
    /// its acknowledgement time after.
    reports_count_from: Timestamp,
    attempts: u8,
    drifts: u8,
    drift_window_start: Timestamp,
    unreachable_since: Option<Timestamp>,
    last_power: Option<Watts>,
    fault: Option<FaultKind>,
    /// Draw above standby assumed for a faulted miner.
    assumed: Watts,
    /// When the miner was last woken early after a short dip (at most once per `min_off`).
    rewoken_at: Option<Timestamp>,
    /// The wake planned for this miner is such an early one (its command says so).
    rewake: bool,
    /// The most it may draw above standby as far as commands go: what it was last told, or
    /// more while a cut from a higher level is not yet confirmed (stock firmware takes 40 s).
    may_draw: Watts,
    /// The last target a report confirmed (none: not known).
    settled: Option<Target>,
    /// When it was last moved to on/off use (it refused a level).
    on_off_since: Timestamp,
}

#[derive(Debug)]
struct SpecState {
    /// Running miners by plan level.
    running: Vec<Vec<u32>>,
    /// (miner, epoch), in the order they were woken.
    run_order: VecDeque<(u32, u32)>,
    /// (miner, epoch), in the order they fell asleep.
    asleep: VecDeque<(u32, u32)>,
    /// (miner, epoch) of the miners a fall of the surplus put to sleep, in that order: the ones
    /// a short dip may wake early.
    dipped: VecDeque<(u32, u32)>,
    /// (miner, epoch), in the order they will be ready.
    waking: VecDeque<(u32, u32)>,
    /// Draw above standby at each level.
    delta: Vec<f64>,
    /// Hashrate per watt gained going from level l to l + 1.
    gain_up: Vec<f64>,
    preferred: u8,
    standby: Watts,
    wake_delay: Duration,
    /// Whether a cut on this spec takes effect within the fast-reaction limit.
    fast: bool,
    /// The fleet's spec these miners are (a model's on/off state shares its model's spec).
    model: u16,
    /// For a model with several levels: the state its miners move to when they refuse levels,
    /// one level at the model's nameplate power ("whatever the firmware holds").
    on_off: Option<u16>,
    /// For such an on/off state: the model's full state, where a re-probe moves them back.
    full: Option<u16>,
    /// The most a miner of this model draws (its top level).
    max_power: Watts,
}

impl SpecState {
    fn lowest_below(&self, limit: u8) -> Option<u8> {
        (0..limit).find(|&l| !self.running[l as usize].is_empty())
    }
    fn highest_above(&self, floor: u8) -> Option<u8> {
        (floor + 1..self.running.len() as u8)
            .rev()
            .find(|&l| !self.running[l as usize].is_empty())
    }
}

/// The state of the surplus signal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum SignalState {
    /// Never had a reading.
    Waiting,
    Good,
    /// No trusted reading since `since`; the fleet is being driven to the fail-safe load.
    Lost {
        since: Timestamp,
    },
    /// Trusted readings again since `since`; held at the fail-safe load until `resume_after`.
    Recovering {
        since: Timestamp,
    },
}

/// Miners in one plan state: how many, what the plan counts them at, and what they last said
/// they draw (for diagnostics: a part whose reports run above its plan is load the plan misses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PlanPart {
    pub miners: u32,
    /// Standby included; a faulted miner at the draw assumed for it.
    pub planned_w: f64,
    /// The sum of their last reports (a miner never read counts 0).
    pub reported_w: f64,
    /// Miners with a write on the wire, not yet confirmed.
    pub pending: u32,
}

/// The plan split by state against the miners' reports ([`Controller::breakdown`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PlanBreakdown {
    pub running: PlanPart,
    pub waking: PlanPart,
    pub asleep: PlanPart,
    pub faulted: PlanPart,
    /// Miners (not routed around) whose last report is above what the plan counts them at by
    /// more than a level's tolerance.
    pub above_plan: u32,
    /// The first few of those, described ([`Controller::describe_miner`]).
    pub above_plan_examples: Vec<String>,
}

/// Counters for reports and tests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ControllerStats {
    pub commands: u64,
    pub queries: u64,
    pub dispatch_commands: u64,
    pub protect_commands: u64,
    pub operator_commands: u64,
    pub failsafe_commands: u64,
    pub reconcile_commands: u64,
    /// Wakes inside the minimum off-time after a short dip.
    pub rewake_commands: u64,
    /// Readings taken as a step of the surplus (a jump the trend does not explain).
    pub steps: u64,
    pub verified: u64,
    pub faults: u64,
    pub recoveries: u64,
    pub rejected_readings: u64,
    pub signal_losses: u64,
    /// Miners moved to on/off use because they refused a power level.
    pub degraded: u64,
}

/// A fall of the surplus that may yet prove short (see `ControllerConfig::short_dip`).
#[derive(Clone, Copy, Debug)]
struct Dip {
    /// The allowed load before the fall.
    before: Watts,
    since: Timestamp,
}

#[derive(Clone, Copy, Debug)]
struct Reading {
    at: Timestamp,
    value: Watts,
    changed_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Verify {
        miner: u32,
        id: u64,
    },
    Retry {
        miner: u32,
        epoch: u32,
    },
    /// A miner used on/off since `since` is offered levels again.
    Reprobe {
        miner: u32,
        since: Timestamp,
    },
}

/// The surplus-following controller. See the module documentation.
pub struct Controller {
    cfg: ControllerConfig,
    fleet: Arc<Fleet>,
    specs: Vec<SpecState>,
    /// Spec indices, most efficient first.
    by_efficiency: Vec<usize>,
    /// Spec indices in the order miners are put to sleep in an urgent cut: fast-reacting first,
    /// then least efficient first.
    urgent_cut_order: Vec<usize>,
    /// The same for a routine cut: least efficient first.
    routine_cut_order: Vec<usize>,
    slots: Vec<Slot>,
    fleet_max: Watts,
    margin: Watts,
    deadband: Watts,
    /// Mean step-to-step jitter of the surplus reading that the trend does not explain (W).
    jitter_w: f64,
    max_rise_w_per_s: f64,
    /// The slowest time from a cut command to the miner's draw having come down (setpoint delay
    /// plus ramp from maximum to standby), over all specs.
    reaction: Duration,
    /// How long before its wake delay is over a waking miner joins the running plan: long
    /// enough for a cut to land before it draws (cuts go to fast-reacting miners when there are
    /// any, else the fleet's slowest reaction applies).
    promotion_lead: Duration,
    /// The longest wake delay of the fleet.
    max_wake_delay: Duration,
    /// The smallest draw (above standby) a woken miner adds.
    smallest_wake_delta: Watts,
    /// Miners routed around.
    faulted: usize,
    base_standby: Watts,
    plan_run: Watts,
    plan_wake: Watts,
    committed: Watts,
    /// Sum of every miner's `may_draw`: raises go only into room that cuts have really freed,
    /// and metered load above it is load the controller cannot explain.
    drawable: Watts,
    uncontrollable: Watts,
    phantom: Watts,
    reading: Option<Reading>,
    trend_w_per_s: f64,
    /// A step of the reading (change in W, over seconds) not yet learnt as a slope: see
    /// `learn_trend`.
    held_step: Option<(f64, f64)>,
    dip: Option<Dip>,
    signal: SignalState,
    allowed_at_loss: Watts,
    /// A running fleet taken over at start: when, and the load it drew (see `adopt`).
    adopted: Option<(Timestamp, Watts)>,
    forecast: Vec<(Timestamp, Watts)>,
    meter: Option<(Timestamp, Watts)>,
    excess_since: Option<Timestamp>,
    curtail: Option<Watts>,
    shed: bool,
    /// The plant's protection limit (`Input::Protection`): held until the plant lifts it.
    protection: Option<Watts>,
    allowed_now: Watts,
    allowed_ahead: Watts,
    limited_allowed: Watts,
    wake_ok_since: Option<Timestamp>,
    tokens: TokenBucket,
    cut_queue: VecDeque<u32>,
    raise_queue: VecDeque<u32>,
    out: VecDeque<Command>,
    deadlines: BinaryHeap<Reverse<(Timestamp, Deadline)>>,
    next_id: u64,
    next_tick: Timestamp,
    last_now: Timestamp,
    stats: ControllerStats,
}

impl SpecState {
    /// A model's state with none of its miners placed yet.
    fn new(s: &crate::fleet::MinerSpec, model: u16, fill_fraction: f64) -> Self {
        let delta: Vec<f64> = s.levels.iter().map(|p| (*p - s.standby).w()).collect();
        let gain_up = (0..s.levels.len())
            .map(|l| match s.levels.get(l + 1) {
                Some(next) => {
                    (s.level_hashrate[l + 1] - s.level_hashrate[l]).ths()
                        / (*next - s.levels[l]).w()
                }
                None => 0.0,
            })
            .collect();
        SpecState {
            running: vec![Vec::new(); s.levels.len()],
            run_order: VecDeque::new(),
            asleep: VecDeque::new(),
            dipped: VecDeque::new(),
            waking: VecDeque::new(),
            delta,
            gain_up,
            preferred: fill_level(s, fill_fraction),
            standby: s.standby,
            wake_delay: s.wake_delay,
            fast: s.cut_reaction() <= FAST_REACTION,
            model,
            on_off: None,
            full: None,
            max_power: s.max_power(),
        }
    }

    /// The on/off state of a model with several levels: its one level is the model's nameplate
    /// level, which is what a firmware that owns its level runs near, and where a re-probe
    /// puts the miner back on the full ladder without a change of plan.
    fn on_off_of(&self, s: &crate::fleet::MinerSpec, full: u16) -> Self {
        let np = s.preferred_level as usize;
        SpecState {
            running: vec![Vec::new()],
            run_order: VecDeque::new(),
            asleep: VecDeque::new(),
            dipped: VecDeque::new(),
            waking: VecDeque::new(),
            delta: vec![self.delta[np]],
            gain_up: vec![0.0],
            preferred: 0,
            on_off: None,
            full: Some(full),
            ..*self
        }
    }

    /// Power at `level`.
    fn level_power(&self, level: u8) -> Watts {
        self.standby + Watts(self.delta[level as usize])
    }
}

impl Slot {
    /// A miner believed asleep since `since` (long enough ago to be woken at once), its state
    /// unconfirmed, so that the first plan change always sends a command.
    fn asleep(spec: u16, since: Timestamp, start: Timestamp) -> Self {
        Slot {
            spec,
            plan: Plan::Asleep,
            commanded: None,
            epoch: 0,
            since,
            ready_at: start,
            pos: 0,
            queued: false,
            in_raise_queue: false,
            reason: Reason::Dispatch,
            pending: None,
            queried: false,
            query: None,
            query_sent: start,
            verify_after: start,
            verify_window: Duration::ZERO,
            sent_at: start,
            acked: false,
            reports_count_from: start,
            attempts: 0,
            drifts: 0,
            drift_window_start: start,
            unreachable_since: None,
            last_power: None,
            fault: None,
            assumed: Watts::ZERO,
            rewoken_at: None,
            rewake: false,
            may_draw: Watts::ZERO,
            settled: None,
            on_off_since: start,
        }
    }
}

impl Controller {
    /// A controller for `fleet`, all miners assumed asleep and unverified until they report.
    pub fn new(fleet: Arc<Fleet>, cfg: ControllerConfig, start: Timestamp) -> Self {
        let mut specs: Vec<SpecState> = (fleet.specs.iter().enumerate())
            .map(|(i, s)| SpecState::new(s, i as u16, cfg.fill_fraction))
            .collect();
        for (i, spec) in fleet.specs.iter().enumerate() {
            if spec.levels.len() > 1 {
                let on_off = specs[i].on_off_of(spec, i as u16);
                specs[i].on_off = Some(specs.len() as u16);
                specs.push(on_off);
            }
        }
        // A model's on/off state sits right after it in every order: same efficiency, same
        // reaction.
        let by_efficiency: Vec<usize> = (fleet.specs_by_efficiency().into_iter())
            .flat_map(|s| std::iter::once(s).chain(specs[s].on_off.map(usize::from)))
            .collect();
        let mut routine_cut_order = by_efficiency.clone();
        routine_cut_order.reverse();
        let mut urgent_cut_order = routine_cut_order.clone();
        urgent_cut_order.sort_by_key(|&s| !specs[s].fast);
        // A miner is assumed asleep since long ago, so it may be woken at once; its state is not
        // known, so the first plan change always sends a command.
        let long_ago = start - (cfg.min_off + Duration::from_secs(1));
        let mut slots = Vec::with_capacity(fleet.len());
        let mut base_standby = Watts::ZERO;
        for (i, spec_id) in fleet.miner_spec.iter().enumerate() {
            let spec = &mut specs[spec_id.0 as usize];
            spec.asleep.push_back((i as u32, 0));
            base_standby += spec.standby;
            slots.push(Slot::asleep(spec_id.0, long_ago, start));
        }
        let fleet_max = fleet.max_power();
        let margin = cfg.margin.max(fleet_max * cfg.margin_fraction);
        let deadband = fleet_max * cfg.deadband_fraction;
        let max_rise_w_per_s = fleet_max.w() * cfg.max_rise_fraction_per_s;
        let reaction = fleet
            .specs
            .iter()
            .map(|s| s.cut_reaction())
            .max()
            .unwrap_or_default();

        let cut_reaction = if specs.iter().any(|s| s.fast) {
            FAST_REACTION
        } else {
            reaction
        };
        let promotion_lead = cfg.cadence + cut_reaction + Duration::from_secs(1);
        let max_wake_delay = specs.iter().map(|s| s.wake_delay).max().unwrap_or_default();
        let smallest_wake_delta = Watts(
            specs
                .iter()
                .map(|s| s.delta[0])
                .fold(f64::INFINITY, f64::min),
        );
        let mut controller = Self {
            tokens: TokenBucket::new(cfg.max_commands_per_s, cfg.command_burst, start),
            specs,
            by_efficiency,
            urgent_cut_order,
            routine_cut_order,
            slots,
            fleet_max,
            margin,
            deadband,
            jitter_w: 0.0,
            max_rise_w_per_s,
            reaction,
            promotion_lead,
            max_wake_delay,
            smallest_wake_delta,
            faulted: 0,
            base_standby,
            plan_run: Watts::ZERO,
            plan_wake: Watts::ZERO,
            committed: Watts::ZERO,
            drawable: Watts::ZERO,
            uncontrollable: Watts::ZERO,
            phantom: Watts::ZERO,
            reading: None,
            trend_w_per_s: 0.0,
            held_step: None,
            dip: None,
            signal: SignalState::Waiting,
            allowed_at_loss: Watts::ZERO,
            adopted: None,
            forecast: Vec::new(),
            meter: None,
            excess_since: None,
            curtail: None,
            shed: false,
            protection: None,
            allowed_now: Watts::ZERO,
            allowed_ahead: Watts::ZERO,
            limited_allowed: Watts::ZERO,
            wake_ok_since: None,
            cut_queue: VecDeque::new(),
            raise_queue: VecDeque::new(),
            out: VecDeque::new(),
            deadlines: BinaryHeap::new(),
            next_id: 1,
            next_tick: start,
            last_now: start,
            stats: ControllerStats::default(),
            fleet,
            cfg,
        };
        // Put every miner into a known state: asleep. Until then nothing is woken.
        for m in 0..controller.slots.len() as u32 {
            controller.mark(m, Reason::Reconcile);
        }
        controller
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// Takes over a running fleet: each miner's state as read at `now` (a restart, an
    /// upgrade) becomes its plan and its confirmed command, so nothing is sent to a miner
    /// already where the plan wants it. A mining miner is planned at the level nearest its
    /// draw; one that did not answer is still told to sleep. Until the first trusted reading
    /// of the surplus the adopted load is held, falling to the fail-safe load within
    /// `failsafe_within` (as if the signal had been lost at `now`); from then on the fleet is
    /// corrected within the usual rise and fall limits. Returns the adopted load above
    /// standby.
    pub fn adopt(&mut self, now: Timestamp, reports: &[MinerStatus]) -> Watts {
        assert!(
            self.signal == SignalState::Waiting && self.stats.commands == 0,
            "a fleet is adopted before the controller has acted"
        );
        for (m, status) in reports.iter().enumerate().take(self.slots.len()) {
            match *status {
                MinerStatus::Mining { power, .. } => self.adopt_running(m as u32, now, power),
                MinerStatus::Asleep { .. } => {
                    let slot = &mut self.slots[m];
                    slot.commanded = Some(Target::Sleep);
                    slot.settled = Some(Target::Sleep);
                }
                // Booting or silent: told to sleep (their draw is not known yet).
                MinerStatus::Booting { .. } | MinerStatus::Unreachable => {}
            }
        }
        self.adopted = Some((now, self.planned_load()));
        self.plan_run
    }

    fn adopt_running(&mut self, m: u32, now: Timestamp, power: Watts) {
        let s = self.slots[m as usize].spec as usize;
        let level = (0..self.specs[s].delta.len())
            .min_by(|&a, &b| {
                let d = |l: usize| (self.specs[s].level_power(l as u8) - power).abs();
                d(a).w().total_cmp(&d(b).w())
            })
            .unwrap_or(0) as u8;
        let delta = Watts(self.specs[s].delta[level as usize]);
        let standby = self.specs[s].standby;
        let slot = &mut self.slots[m as usize];
        slot.plan = Plan::Running(level);
        slot.commanded = Some(Target::Level(level));
        slot.settled = Some(Target::Level(level));
        // Running for long enough: it may be slept at once if the surplus needs it.
        slot.since = now - (self.cfg.min_on + Duration::from_secs(1));
        slot.epoch = slot.epoch.wrapping_add(1);
        let epoch = slot.epoch;
        self.plan_run += delta;
        self.committed += delta;
        self.bucket_push(m, level);
        self.specs[s].run_order.push_back((m, epoch));
        self.set_may_draw(m, delta.max((power - standby).positive_part()));
    }
    pub fn stats(&self) -> &ControllerStats {
        &self.stats
    }
    pub fn signal(&self) -> SignalState {
        self.signal
    }
    /// The fleet power the controller aimed for at its last tick (standby included).
    pub fn allowed(&self) -> Watts {
        self.allowed_now
    }
    /// The fleet power the controller expects to be allowed by the time a miner woken now is
    /// ready (the surplus's trend and forecast ahead): sleeping miners are woken into this.
    pub fn allowed_ahead(&self) -> Watts {
        self.allowed_ahead
    }
    /// The slowest modelled reaction of any miner to a cut (setpoint delay plus ramp down).
    pub fn reaction(&self) -> Duration {
        self.reaction
    }
    /// The safety margin in force.
    pub fn margin(&self) -> Watts {
        self.margin
    }
    /// The fleet power the current plan adds up to (standby and uncontrollable load included).
    pub fn planned_load(&self) -> Watts {
        self.base_standby + self.plan_run + self.uncontrollable
    }
    /// Miners currently routed around.
    pub fn faulted(&self) -> usize {
        self.faulted
    }
    /// A miner's plan, commanded target and pending command, for diagnostics.
    pub fn describe_miner(&self, miner: MinerId) -> String {
        let s = &self.slots[miner.index()];
        let ms = |t: Timestamp| {
            if t == Timestamp::MAX {
                "never".to_string()
            } else {
                format!("{}", t.as_millis() - self.last_now.as_millis())
            }
        };
        format!(
            "miner {} plan {:?} commanded {:?} settled {:?} pending {:?} acked {} queried {} \
             queued {} attempts {} drifts {} last {:?} sent {} ms, reports count from {} ms, \
             ready {} ms",
            miner.0,
            s.plan,
            s.commanded,
            s.settled,
            s.pending,
            s.acked,
            s.queried,
            s.queued,
            s.attempts,
            s.drifts,
            s.last_power,
            ms(s.sent_at),
            ms(s.reports_count_from),
            ms(s.ready_at)
        )
    }

    /// The plan split by state against what each miner last reported (O(miners)).
    pub fn breakdown(&self) -> PlanBreakdown {
        let mut b = PlanBreakdown::default();
        for (m, slot) in self.slots.iter().enumerate() {
            let spec = &self.specs[slot.spec as usize];
            let (part, planned) = match slot.plan {
                Plan::Running(l) => (&mut b.running, spec.delta[l as usize]),
                Plan::Waking(l) => (&mut b.waking, spec.delta[l as usize]),
                Plan::Asleep => (&mut b.asleep, 0.0),
                Plan::Faulted => (&mut b.faulted, slot.assumed.w()),
            };
            part.miners += 1;
            part.planned_w += spec.standby.w() + planned;
            let reported = slot.last_power.map_or(0.0, Watts::w);
            part.reported_w += reported;
            part.pending += u32::from(slot.pending.is_some());
            let limit = (spec.standby.w() + planned) * (1.0 + LEVEL_TOLERANCE) + LEVEL_SLACK.w();
            if slot.plan != Plan::Faulted && reported > limit {
                b.above_plan += 1;
                if b.above_plan_examples.len() < 5 {
                    b.above_plan_examples
                        .push(self.describe_miner(MinerId(m as u32)));
                }
            }
        }
        b
    }

    /// Recomputes the running sums from the miners and compares them with the ones kept
    /// incrementally (O(miners); for tests and diagnostics).
    pub fn check_accounting(&self) -> Result<(), String> {
        let (mut run, mut wake, mut committed, mut faulted) = (0.0, 0.0, 0.0, 0);
        let mut drawable = 0.0;
        let mut wrong = Vec::new();
        for (m, slot) in self.slots.iter().enumerate() {
            let delta = &self.specs[slot.spec as usize].delta;
            match slot.plan {
                Plan::Running(l) => run += delta[l as usize],
                Plan::Waking(l) => wake += delta[l as usize],
                Plan::Faulted => faulted += 1,
                Plan::Asleep => {}
            }
            committed += self.commanded_delta(m as u32).w();
            drawable += slot.may_draw.w();
            if slot.may_draw + Watts(1e-6) < self.commanded_delta(m as u32) {
                wrong.push(format!("miner {m} may draw less than it was told"));
            }
        }
        // Sums kept by millions of additions and subtractions drift by rounding: a year of a
        // stock fleet ends some 1e-4 W off. A milliwatt per 100 MW of fleet is far above that
        // and far below any miner's draw.
        let tolerance = 1e-3 + 1e-11 * self.fleet_max.w();
        let close = |a: f64, b: Watts| (a - b.w()).abs() <= tolerance + 1e-9 * a.abs();
        if !close(drawable, self.drawable) {
            wrong.push(format!("drawable {} vs {drawable}", self.drawable));
        }
        if !close(run, self.plan_run) {
            wrong.push(format!("plan_run {} vs {run}", self.plan_run));
        }
        if !close(wake, self.plan_wake) {
            wrong.push(format!("plan_wake {} vs {wake}", self.plan_wake));
        }
        if !close(committed, self.committed) {
            wrong.push(format!("committed {} vs {committed}", self.committed));
        }
        if faulted != self.faulted {
            wrong.push(format!("faulted {} vs {faulted}", self.faulted));
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }

    /// Whether a miner is routed around, and why.
    pub fn fault_of(&self, miner: MinerId) -> Option<FaultKind> {
        self.slots[miner.index()].fault
    }

    fn spec_delta(&self, m: u32, level: u8) -> Watts {
        Watts(self.specs[self.slots[m as usize].spec as usize].delta[level as usize])
    }

    // ----- plan changes ---------------------------------------------------------------------

    /// Queue a miner whose plan changed, with the reason its command will carry.
    fn mark(&mut self, m: u32, reason: Reason) {
        let slot = &mut self.slots[m as usize];
        if !slot.queued || reason != Reason::Dispatch {
            slot.reason = reason;
        }
        if !slot.queued {
            slot.queued = true;
            self.cut_queue.push_back(m);
        }
    }

    fn bucket_remove(&mut self, m: u32, level: u8) {
        let spec = &mut self.specs[self.slots[m as usize].spec as usize];
        let bucket = &mut spec.running[level as usize];
        let pos = self.slots[m as usize].pos as usize;
        debug_assert_eq!(bucket[pos], m);
        bucket.swap_remove(pos);
        if let Some(&moved) = bucket.get(pos) {
            self.slots[moved as usize].pos = pos as u32;
        }
    }

    fn bucket_push(&mut self, m: u32, level: u8) {
        let spec = &mut self.specs[self.slots[m as usize].spec as usize];
        let bucket = &mut spec.running[level as usize];
        self.slots[m as usize].pos = bucket.len() as u32;
        bucket.push(m);
    }

    /// Move the last miner of `spec`'s bucket `from` to level `to`.
    fn step(&mut self, spec: usize, from: u8, to: u8, reason: Reason) -> Watts {
        let m = self.specs[spec].running[from as usize]
            .pop()
            .expect("caller checked the bucket");
        let change =
            Watts(self.specs[spec].delta[to as usize] - self.specs[spec].delta[from as usize]);
        self.bucket_push(m, to);
        self.slots[m as usize].plan = Plan::Running(to);
        self.plan_run += change;
        self.mark(m, reason);
        change
    }

    fn put_to_sleep(&mut self, m: u32, now: Timestamp, reason: Reason) {
        let s = self.slots[m as usize].spec as usize;
        match self.slots[m as usize].plan {
            Plan::Running(l) => {
                self.bucket_remove(m, l);
                self.plan_run -= Watts(self.specs[s].delta[l as usize]);
            }
            Plan::Waking(l) => self.plan_wake -= Watts(self.specs[s].delta[l as usize]),
            Plan::Asleep | Plan::Faulted => return,
        }
        let slot = &mut self.slots[m as usize];
        slot.plan = Plan::Asleep;
        slot.rewake = false;
        slot.since = now;
        slot.epoch = slot.epoch.wrapping_add(1);
        let epoch = slot.epoch;
        self.specs[s].asleep.push_back((m, epoch));
        if matches!(reason, Reason::Dispatch | Reason::Protect) {
            self.specs[s].dipped.push_back((m, epoch));
        }
        self.mark(m, reason);
    }

    /// The level a miner told to sleep still runs at, while that sleep has not been confirmed
    /// (stock firmware takes 40 s to apply it).
    fn still_running_at(&self, m: u32) -> Option<u8> {
        let slot = &self.slots[m as usize];
        match (slot.pending, slot.commanded, slot.settled) {
            (Some(_), Some(Target::Sleep), Some(Target::Level(l))) => Some(l),
            _ => None,
        }
    }

    fn wake(&mut self, m: u32, level: u8, now: Timestamp, reason: Reason) {
        let s = self.slots[m as usize].spec as usize;
        let still_running = self.still_running_at(m) == Some(level);
        let slot = &mut self.slots[m as usize];
        debug_assert_eq!(slot.plan, Plan::Asleep);
        slot.since = now;
        slot.epoch = slot.epoch.wrapping_add(1);
        let epoch = slot.epoch;
        let delta = Watts(self.specs[s].delta[level as usize]);
        if still_running {
            // Taking back a sleep that has not landed: the miner runs on, so it is planned as
            // running now, not as booting (it would draw while the plan thought it could not).
            slot.plan = Plan::Running(level);
            slot.ready_at = now;
            self.bucket_push(m, level);
            self.specs[s].run_order.push_back((m, epoch));
            self.plan_run += delta;
        } else {
            slot.plan = Plan::Waking(level);
            slot.ready_at = now + self.specs[s].wake_delay;
            self.specs[s].waking.push_back((m, epoch));
            self.plan_wake += delta;
        }
        if reason == Reason::Rewake {
            self.slots[m as usize].rewake = true;
        }
        self.mark(m, Reason::Dispatch);
    }

    /// Waking miners join the running plan a little before their wake delay is over, so that a
    /// surplus that fell meanwhile is met by a cut that lands before they draw.
    fn promote_ready(&mut self, now: Timestamp) {
        let horizon = now + self.promotion_lead;
        for s in 0..self.specs.len() {
            // Every entry is looked at, not only the front: the queue is in the order the
            // miners were woken, and a miner moved here from another state keeps its own ready
            // time. It holds only miners waking now, so the walk is short.
            let mut ready = Vec::new();
            let slots = &self.slots;
            self.specs[s].waking.retain(|&(m, epoch)| {
                let slot = &slots[m as usize];
                if slot.epoch != epoch || !matches!(slot.plan, Plan::Waking(_)) {
                    return false;
                }
                if slot.ready_at > horizon {
                    return true;
                }
                ready.push((m, epoch));
                false
            });
            for (m, epoch) in ready {
                let Plan::Waking(level) = self.slots[m as usize].plan else {
                    unreachable!("kept only waking miners");
                };
                let d = Watts(self.specs[s].delta[level as usize]);
                self.plan_wake -= d;
                self.plan_run += d;
                self.slots[m as usize].plan = Plan::Running(level);
                self.bucket_push(m, level);
                self.specs[s].run_order.push_back((m, epoch));
            }
        }
    }

    /// The front of a FIFO after dropping stale entries.
    fn live_front(
        slots: &[Slot],
        queue: &mut VecDeque<(u32, u32)>,
        want: fn(Plan) -> bool,
    ) -> Option<u32> {
        while let Some(&(m, epoch)) = queue.front() {
            let slot = &slots[m as usize];
            if slot.epoch == epoch && want(slot.plan) {
                return Some(m);
            }
            queue.pop_front();
        }
        None
    }

    // ----- the control step -----------------------------------------------------------------

    fn tick(&mut self, now: Timestamp) {
        self.promote_ready(now);
        self.update_meter(now);
        let (allowed, ahead) = self.compute_allowed(now);
        self.allowed_now = allowed;
        self.allowed_ahead = ahead;
        let capped = |cap: Option<Watts>| cap.is_some_and(|c| c < allowed + self.margin);
        let reason = if self.shed || capped(self.curtail) || capped(self.protection) {
            Reason::Operator
        } else if matches!(self.signal, SignalState::Good) {
            Reason::Dispatch
        } else {
            Reason::FailSafe
        };
        let fixed = self.base_standby + self.uncontrollable + self.phantom;
        let budget = allowed - fixed - self.plan_run;
        let floor = self.base_standby + self.uncontrollable;
        let band = self
            .deadband
            .max(Watts(JITTER_DEADBAND_FACTOR * self.jitter_w));
        if allowed <= floor && ahead <= floor {
            self.sleep_all(now, reason);
        } else if budget < Watts::ZERO {
            // Cut half a deadband deeper than needed, and raise to half a deadband short of the
            // room: the fleet then moves once per half deadband of surplus, not every tick.
            self.cut(-budget + band * 0.5, now, reason);
            // A forecast rise may still need slow miners woken now.
            if self.forecast.is_empty() {
                self.wake_ok_since = None;
            } else {
                self.wake_some(now);
            }
        } else {
            let raise_budget = budget - self.plan_wake;
            if raise_budget > band {
                let left = self.raise(raise_budget - band * 0.5, |spec| spec.preferred);
                let woke = self.wake_some(now);
                if !woke && left > self.deadband && !self.any_asleep_available(now) {
                    self.raise(left, |spec| (spec.running.len() - 1) as u8);
                }
            } else {
                self.wake_ok_since = None;
            }
        }
        self.flush(now);
    }

    fn compute_allowed(&mut self, now: Timestamp) -> (Watts, Watts) {
        let fresh = self.reading.filter(|r| {
            now.saturating_since(r.at) <= self.cfg.max_reading_age
                && self
                    .cfg
                    .frozen_after
                    .is_none_or(|f| now.saturating_since(r.changed_at) <= f)
        });
        let current_load = self.planned_load();
        self.signal = match (self.signal, fresh.is_some()) {
            (SignalState::Waiting, true) => SignalState::Good,
            (SignalState::Waiting, false) => SignalState::Waiting,
            (SignalState::Good, true) => SignalState::Good,
            (SignalState::Good | SignalState::Recovering { .. }, false) => {
                self.stats.signal_losses += 1;
                self.allowed_at_loss =
                    current_load.min(self.allowed_now.max(self.cfg.failsafe_load));
                SignalState::Lost { since: now }
            }
            (SignalState::Lost { .. }, true) => SignalState::Recovering { since: now },
            (SignalState::Lost { since }, false) => SignalState::Lost { since },
            // Resume only on a live signal: with frozen-meter detection on, the value must also
            // have changed since the signal came back (a meter that returns frozen looks fresh
            // for `frozen_after` otherwise).
            (SignalState::Recovering { since }, true)
                if now.saturating_since(since) >= self.cfg.resume_after
                    && (self.cfg.frozen_after.is_none()
                        || fresh.is_some_and(|r| r.changed_at > since)) =>
            {
                SignalState::Good
            }
            (recovering @ SignalState::Recovering { .. }, true) => recovering,
        };
        let failsafe = self.cfg.failsafe_load;
        let (mut allowed, mut ahead) = match self.signal {
            // An adopted fleet is held, then brought to the fail-safe load, as after a loss.
            SignalState::Waiting => match self.adopted {
                Some((since, load)) => {
                    let a = self.towards_failsafe(now, since, load);
                    (a, a)
                }
                None => (Watts::ZERO, Watts::ZERO),
            },
            SignalState::Good => {
                let r = fresh.expect("good signal has a reading");
                let age = now.secs_since(r.at).max(0.0);
                let falling = self.trend_w_per_s.min(0.0);
                let horizon = age + self.cfg.lookahead.as_secs_f64() + self.reaction.as_secs_f64();
                let now_value = r.value + Watts(falling * horizon);
                let allowed = now_value - self.margin;
                let ahead = self.ahead_value(now, r.value, age, self.max_wake_delay) - self.margin;
                (allowed, ahead)
            }
            SignalState::Lost { since } => {
                let a = self.towards_failsafe(now, since, self.allowed_at_loss);
                (a, a)
            }
            SignalState::Recovering { .. } => {
                let a = failsafe.min(self.allowed_now.max(Watts::ZERO));
                (a, a)
            }
        };
        let restore = self.track_dip(now, allowed);
        for cap in [self.curtail, self.protection].into_iter().flatten() {
            allowed = allowed.min(cap);
            ahead = ahead.min(cap);
        }
        if self.shed {
            allowed = Watts::ZERO;
            ahead = Watts::ZERO;
        }
        allowed = allowed.max(Watts::ZERO);
        // Staggered reconnection: the allowed load may rise only so fast, from what the fleet
        // really draws; after a short dip it may return at once to where it was before.
        let dt = self.cfg.cadence.as_secs_f64();
        let mut rise_cap = self.limited_allowed.max(self.drawn(now).min(allowed))
            + Watts(self.max_rise_w_per_s * dt);
        if let Some(before) = restore {
            rise_cap = rise_cap.max(before);
        }
        allowed = allowed.min(rise_cap);
        self.limited_allowed = allowed;
        let max_wake = self.max_wake_delay.as_secs_f64();
        ahead = ahead.min(allowed + Watts(self.max_rise_w_per_s * max_wake.max(dt)));
        (allowed, ahead)
    }

    /// The load allowed `now` on the way from `from` (at `since`) to the fail-safe load, which
    /// is reached `failsafe_within` after `since`.
    fn towards_failsafe(&self, now: Timestamp, since: Timestamp, from: Watts) -> Watts {
        let failsafe = self.cfg.failsafe_load;
        let within = self.cfg.failsafe_within.as_secs_f64();
        let progress = if within > 0.0 {
            (now.secs_since(since) / within).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let target = from + (failsafe - from) * progress;
        target.max(failsafe).min(from.max(failsafe))
    }

    /// Keeps `dip` up to date with the surplus-driven allowed load of this tick (before any
    /// operator cap) and returns the load the fleet may return to at once: a fall opens a dip
    /// that remembers the allowed load before it; the dip ends once the surplus is back there,
    /// after `short_dip`, or when the controller stops following the surplus (signal lost,
    /// shed).
    fn track_dip(&mut self, now: Timestamp, following: Watts) -> Option<Watts> {
        if self.signal != SignalState::Good || self.shed || self.cfg.short_dip.is_zero() {
            self.dip = None;
            return None;
        }
        if let Some(dip) = self.dip {
            if now.saturating_since(dip.since) > self.cfg.short_dip {
                self.dip = None;
            } else if following >= dip.before {
                // Back: this tick may return to where the fleet was, and the dip is over.
                self.dip = None;
                return Some(dip.before);
            }
        }
        let band = self.deadband.max(self.margin);
        if self.dip.is_none() && following < self.limited_allowed - band {
            self.dip = Some(Dip {
                before: self.limited_allowed,
                since: now,
            });
        }
        self.dip.map(|d| d.before)
    }

    /// What the fleet draws: the plan, or the fresh metered draw where that is higher (cuts
    /// not landed yet).
    fn drawn(&self, now: Timestamp) -> Watts {
        let planned = self.planned_load();
        match self.meter {
            Some((at, measured)) if now.saturating_since(at) <= self.cfg.max_reading_age => {
                measured.max(planned)
            }
            _ => planned,
        }
    }

    /// Where the surplus is expected to be `horizon` from now: the forecast if there is one,
    /// else the trend.
    fn ahead_value(&self, now: Timestamp, value: Watts, age: f64, horizon: Duration) -> Watts {
        let trend = self.trend_w_per_s;
        // A falling trend counts in full until the woken miners could be cut again; a rising one
        // by half: waking ahead on a rise that does not continue costs a cycle.
        let by_trend = if trend < 0.0 {
            value + Watts(trend * (horizon + self.reaction).as_secs_f64())
        } else {
            value + Watts(0.5 * trend * (horizon.as_secs_f64() - age).max(0.0))
        };
        match self.forecast_at(now + horizon) {
            Some(f) => by_trend.max(f),
            None => by_trend,
        }
    }

    /// The fleet power allowed by the time a miner of spec `s` woken now would be ready.
    fn spec_ahead(&self, now: Timestamp, s: usize) -> Watts {
        let Some(r) = self.reading.filter(|_| self.signal == SignalState::Good) else {
            return self.allowed_now;
        };
        let wake = self.specs[s].wake_delay;
        let age = now.secs_since(r.at).max(0.0);
        // Look as far ahead as the miner joins the plan, not as it starts hashing: a miner woken
        // for a forecast rise must not be counted (and cut) before the rise is there.
        let horizon = wake.saturating_sub(self.promotion_lead);
        let mut ahead = self.ahead_value(now, r.value, age, horizon) - self.margin;
        if let Some(cap) = self.curtail {
            ahead = ahead.min(cap);
        }
        let rise =
            Watts(self.max_rise_w_per_s * wake.as_secs_f64().max(self.cfg.cadence.as_secs_f64()));
        ahead.min(self.allowed_now + rise).min(self.allowed_ahead)
    }

    fn forecast_at(&self, t: Timestamp) -> Option<Watts> {
        let i = self.forecast.partition_point(|(start, _)| *start <= t);
        (i > 0).then(|| self.forecast[i - 1].1)
    }

    fn update_meter(&mut self, now: Timestamp) {
        let Some((at, measured)) = self.meter else {
            return;
        };
        if now.saturating_since(at) > self.cfg.max_reading_age {
            self.excess_since = None;
            return;
        }
        // Against what the miners may still draw: a cut is not believed until a report confirms
        // it (stock firmware takes 40 s, and cuts on a stepped surplus follow each other faster).
        let believed = self.base_standby + self.drawable + self.uncontrollable;
        let excess = measured - believed;
        let tolerance = self.fleet_max * self.cfg.meter_tolerance_fraction;
        if excess > tolerance {
            let since = *self.excess_since.get_or_insert(now);
            if now.saturating_since(since) >= self.cfg.meter_grace + self.reaction {
                self.phantom = excess;
            }
        } else {
            self.excess_since = None;
            self.phantom = self.phantom.min(excess.positive_part());
        }
    }

    fn sleep_all(&mut self, now: Timestamp, reason: Reason) {
        self.wake_ok_since = None;
        for s in 0..self.specs.len() {
            for l in 0..self.specs[s].running.len() {
                while let Some(&m) = self.specs[s].running[l].last() {
                    let voluntary =
                        now.saturating_since(self.slots[m as usize].since) >= self.cfg.min_on;
                    self.put_to_sleep(m, now, sleep_reason(reason, voluntary));
                }
            }
            while let Some(m) = Self::live_front(&self.slots, &mut self.specs[s].waking, |p| {
                matches!(p, Plan::Waking(_))
            }) {
                // Cancelling a wake is never a voluntary sleep.
                self.put_to_sleep(m, now, sleep_reason(reason, false));
            }
        }
    }

    /// Takes `amount` off the plan. An urgent cut (the fleet is already above what is allowed by
    /// more than the margin: a cliff, a shed, a lost signal) goes to fast-reacting miners first;
    /// a routine cut (the trend projection asked for it ahead of time) goes to the least
    /// efficient miners first, whatever their firmware.
    fn cut(&mut self, amount: Watts, now: Timestamp, reason: Reason) {
        let urgent = amount > self.margin + self.deadband || reason != Reason::Dispatch;
        let mut left = amount;
        // A cut deeper than all level headroom needs sleeps anyway: do those first, so that a
        // collapse of the surplus costs one command per miner rather than one per level step.
        let mut headroom: f64 = self
            .specs
            .iter()
            .map(|spec| {
                spec.running
                    .iter()
                    .zip(&spec.delta)
                    .map(|(b, d)| b.len() as f64 * (d - spec.delta[0]))
                    .sum::<f64>()
            })
            .sum();
        while left.w() > headroom {
            let Some((m, voluntary)) = self.sleep_candidate(now, urgent) else {
                break;
            };
            let Plan::Running(l) = self.slots[m as usize].plan else {
                unreachable!("candidate is running")
            };
            let spec = &self.specs[self.slots[m as usize].spec as usize];
            headroom -= spec.delta[l as usize] - spec.delta[0];
            left -= self.spec_delta(m, l);
            self.put_to_sleep(m, now, sleep_reason(reason, voluntary));
        }
        // Tiers A and B: step levels down, above nameplate first, least hashrate per watt first.
        for floor_is_preferred in [true, false] {
            while left > Watts::ZERO {
                let mut best: Option<(f64, usize, u8)> = None;
                for (s, spec) in self.specs.iter().enumerate() {
                    let floor = if floor_is_preferred {
                        spec.preferred
                    } else {
                        0
                    };
                    if let Some(l) = spec.highest_above(floor) {
                        // Fast-reacting specs first, then the least hashrate per watt.
                        let slow_penalty = if urgent && !spec.fast {
                            SLOW_PENALTY
                        } else {
                            0.0
                        };
                        let gain = spec.gain_up[l as usize - 1] + slow_penalty;
                        if best.is_none_or(|(g, _, _)| gain < g) {
                            best = Some((gain, s, l));
                        }
                    }
                }
                let Some((_, s, l)) = best else { break };
                let spec = &self.specs[s];
                let floor = if floor_is_preferred {
                    spec.preferred
                } else {
                    0
                };
                let lowest = floor.max(l.saturating_sub(self.cfg.max_levels_per_command));
                // Just deep enough to cover what is left, no deeper than allowed.
                let to = (lowest..l)
                    .rev()
                    .find(|&to| spec.delta[l as usize] - spec.delta[to as usize] >= left.w())
                    .unwrap_or(lowest);
                left += self.step(s, l, to, reason);
            }
        }
        // Tiers C and D: sleep miners, least efficient model first, the longest awake first;
        // those inside their minimum on-time only if nothing else is left.
        while left > Watts::ZERO {
            let Some((m, voluntary)) = self.sleep_candidate(now, urgent) else {
                break;
            };
            let Plan::Running(l) = self.slots[m as usize].plan else {
                unreachable!("front is running")
            };
            left -= self.spec_delta(m, l);
            self.put_to_sleep(m, now, sleep_reason(reason, voluntary));
        }
    }

    /// The miner to put to sleep next: (in an urgent cut, fast-reacting models first, then)
    /// least efficient model first, the longest awake first, preferring one past its minimum
    /// on-time (`true`) over one inside it (`false`).
    fn sleep_candidate(&mut self, now: Timestamp, urgent: bool) -> Option<(u32, bool)> {
        let mut chosen: Option<(u32, bool)> = None;
        let order = if urgent {
            &self.urgent_cut_order
        } else {
            &self.routine_cut_order
        };
        for &s in order {
            let slots = &self.slots;
            let Some(m) = Self::live_front(slots, &mut self.specs[s].run_order, |p| {
                matches!(p, Plan::Running(_))
            }) else {
                continue;
            };
            if now.saturating_since(slots[m as usize].since) >= self.cfg.min_on {
                return Some((m, true));
            }
            chosen.get_or_insert((m, false));
        }
        chosen
    }

    /// Raise running miners below `limit(spec)` while the budget allows; returns what is left.
    fn raise(&mut self, budget: Watts, limit: fn(&SpecState) -> u8) -> Watts {
        let mut left = budget;
        loop {
            let mut best: Option<(f64, usize, u8)> = None;
            for (s, spec) in self.specs.iter().enumerate() {
                if let Some(l) = spec.lowest_below(limit(spec)) {
                    let gain = spec.gain_up[l as usize];
                    let cost = spec.delta[l as usize + 1] - spec.delta[l as usize];
                    if cost <= left.w() && best.is_none_or(|(g, _, _)| gain > g) {
                        best = Some((gain, s, l));
                    }
                }
            }
            let Some((_, s, l)) = best else { return left };
            let spec = &self.specs[s];
            let highest = limit(spec).min(l.saturating_add(self.cfg.max_levels_per_command));
            let to = (l + 1..=highest)
                .rev()
                .find(|&to| spec.delta[to as usize] - spec.delta[l as usize] <= left.w())
                .unwrap_or(l + 1);
            left -= self.step(s, l, to, Reason::Dispatch);
        }
    }

    fn any_asleep_available(&mut self, now: Timestamp) -> bool {
        (0..self.specs.len())
            .any(|s| self.next_rested(s, now).is_some() || self.next_dipped(s, now).is_some())
    }

    /// The miner of spec `s` asleep the longest, if it is past its minimum off-time.
    fn next_rested(&mut self, s: usize, now: Timestamp) -> Option<u32> {
        let m = Self::live_front(&self.slots, &mut self.specs[s].asleep, |p| {
            p == Plan::Asleep
        })?;
        (now.saturating_since(self.slots[m as usize].since) >= self.cfg.min_off).then_some(m)
    }

    /// The first miner of spec `s` that a dip put to sleep and that may be woken early: asleep
    /// for no longer than `short_dip`, and not woken early within the last `min_off`. Miners
    /// that no longer qualify leave the queue for good.
    fn next_dipped(&mut self, s: usize, now: Timestamp) -> Option<u32> {
        loop {
            let m = Self::live_front(&self.slots, &mut self.specs[s].dipped, |p| {
                p == Plan::Asleep
            })?;
            if self.may_wake_early(&self.slots[m as usize], now) {
                return Some(m);
            }
            self.specs[s].dipped.pop_front();
        }
    }

    /// The short-dip rule for a miner a fall put to sleep: asleep for no longer than
    /// `short_dip`, and not woken early within the last `min_off`.
    fn may_wake_early(&self, slot: &Slot, now: Timestamp) -> bool {
        let rewoken_lately = slot
            .rewoken_at
            .is_some_and(|r| now.saturating_since(r) < self.cfg.min_off);
        now.saturating_since(slot.since) <= self.cfg.short_dip && !rewoken_lately
    }

    /// Wake sleeping miners into the room expected by the time they are ready. Miners a short
    /// dip put to sleep come back at once; others once the room has persisted for
    /// `wake_confirm`. Returns whether any miner was woken.
    fn wake_some(&mut self, now: Timestamp) -> bool {
        let fixed = self.base_standby + self.uncontrollable + self.phantom;
        let room = (0..self.specs.len())
            .map(|s| self.spec_ahead(now, s))
            .fold(Watts(f64::NEG_INFINITY), Watts::max)
            - fixed
            - self.plan_run
            - self.plan_wake;
        if room < self.smallest_wake_delta + self.deadband {
            self.wake_ok_since = None;
            return false;
        }
        let since = *self.wake_ok_since.get_or_insert(now);
        let confirmed = now.saturating_since(since) >= self.cfg.wake_confirm;
        let mut woke = false;
        // Room a more efficient model can still fill is not room for a less efficient one. A
        // slow waker looks further ahead (its wake delay), so under the rise limit it sees more
        // room than a fast one: without this, stock miners would be woken before the fast,
        // efficient ones that could take the same power a little later, and stay up.
        let mut reserved = Watts::ZERO;
        for i in 0..self.by_efficiency.len() {
            let s = self.by_efficiency[i];
            let cap = self.spec_ahead(now, s) - fixed - reserved;
            woke |= self.wake_into(s, cap, now, true);
            if confirmed {
                woke |= self.wake_into(s, cap, now, false);
            }
            // Only a later model that looks further ahead can take this model's room.
            let later_looks_further = self.by_efficiency[i + 1..]
                .iter()
                .any(|&later| self.specs[later].wake_delay > self.specs[s].wake_delay);
            if later_looks_further {
                let want = room + self.smallest_wake_delta - reserved;
                reserved += self.wakeable_draw(s, now, confirmed, want);
            }
        }
        woke
    }

    /// What the miners of spec `s` that could be woken now would draw at nameplate, counted up
    /// to `limit`. The walk is bounded: past `WAKEABLE_SCAN` queue entries the rest is taken as
    /// wakeable (the cautious side: a less efficient model waits).
    fn wakeable_draw(&self, s: usize, now: Timestamp, rested_too: bool, limit: Watts) -> Watts {
        let spec = &self.specs[s];
        let each = Watts(spec.delta[spec.preferred as usize]);
        if limit <= Watts::ZERO || each <= Watts::ZERO {
            return Watts::ZERO;
        }
        let live = |&(m, epoch): &(u32, u32)| {
            let slot = &self.slots[m as usize];
            (slot.epoch == epoch && slot.plan == Plan::Asleep).then_some(slot)
        };
        let mut scanned = 0;
        let mut total = Watts::ZERO;
        for slot in spec.dipped.iter().filter_map(live) {
            scanned += 1;
            if self.may_wake_early(slot, now) {
                total += each;
            }
            if total >= limit || scanned >= WAKEABLE_SCAN {
                return limit;
            }
        }
        if rested_too {
            // Longest asleep first: the rested ones are a prefix of the live entries.
            for slot in spec.asleep.iter().filter_map(live) {
                scanned += 1;
                if now.saturating_since(slot.since) < self.cfg.min_off {
                    break;
                }
                total += each;
                if total >= limit || scanned >= WAKEABLE_SCAN {
                    return limit;
                }
            }
        }
        total
    }

    /// Wakes miners of spec `s` while `cap` (fleet power above the fixed load) has room for
    /// one at some level up to nameplate: those a dip put to sleep (`dipped`), or those past
    /// their minimum off-time.
    fn wake_into(&mut self, s: usize, cap: Watts, now: Timestamp, dipped: bool) -> bool {
        let mut woke = false;
        loop {
            let left = cap - self.plan_run - self.plan_wake;
            let spec = &self.specs[s];
            let Some(level) = (0..=spec.preferred)
                .rev()
                .find(|&l| spec.delta[l as usize] <= left.w())
            else {
                break;
            };
            let next = if dipped {
                self.next_dipped(s, now)
            } else {
                self.next_rested(s, now)
            };
            let Some(m) = next else {
                break;
            };
            // A miner whose sleep has not landed comes back at the level it still runs at.
            let level = match self.still_running_at(m) {
                Some(l) if self.specs[s].delta[l as usize] <= left.w() => l,
                _ => level,
            };
            let rested = now.saturating_since(self.slots[m as usize].since) >= self.cfg.min_off;
            let reason = if rested {
                Reason::Dispatch
            } else {
                Reason::Rewake
            };
            self.wake(m, level, now, reason);
            woke = true;
        }
        woke
    }

    // ----- commands -------------------------------------------------------------------------

    fn action_for(&self, m: u32) -> Option<Action> {
        let slot = &self.slots[m as usize];
        match (slot.plan, slot.commanded) {
            (Plan::Faulted, _) => None,
            (Plan::Asleep, Some(Target::Sleep)) => None,
            (Plan::Asleep, _) => Some(Action::Sleep),
            (Plan::Waking(l) | Plan::Running(l), Some(Target::Level(c))) if c == l => None,
            (Plan::Waking(l) | Plan::Running(l), Some(Target::Level(_))) => {
                Some(Action::SetLevel(l))
            }
            (Plan::Waking(l) | Plan::Running(l), Some(Target::Sleep) | None) => {
                if self.specs[slot.spec as usize].full.is_some() {
                    Some(Action::Resume)
                } else {
                    Some(Action::Wake(l))
                }
            }
        }
    }

    /// Draw above standby the miner was last told to have.
    fn commanded_delta(&self, m: u32) -> Watts {
        match self.slots[m as usize].commanded {
            Some(Target::Level(l)) => self.spec_delta(m, l),
            _ => Watts::ZERO,
        }
    }

    fn flush(&mut self, now: Timestamp) {
        self.tokens.refill(now);
        while self.tokens.available() {
            let Some(m) = self.cut_queue.pop_front() else {
                break;
            };
            self.slots[m as usize].queued = false;
            let Some(action) = self.action_for(m) else {
                continue;
            };
            if self.is_increase(m, action) {
                if !self.slots[m as usize].in_raise_queue {
                    self.slots[m as usize].in_raise_queue = true;
                    self.raise_queue.push_back(m);
                }
                continue;
            }
            self.send(m, action, now);
        }
        // Raises go only once the cuts they depend on are out, and only into room that the
        // commands already sent leave.
        if !self.cut_queue.is_empty() {
            return;
        }
        let fixed = self.base_standby + self.uncontrollable + self.phantom;
        // A raise waits until the miner's previous command is confirmed: stock firmware restarts
        // its 20-60 s mode change on every new request, so a raise sent on top of a cut that has
        // not landed yet would keep the miner where it was.
        let mut waiting = self.raise_queue.len();
        while self.tokens.available() {
            let Some(&m) = self.raise_queue.front() else {
                break;
            };
            let action = match self.action_for(m) {
                // Already sent, or its plan turned into a cut (sent from the cut queue).
                Some(a) if self.is_increase(m, a) => a,
                _ => {
                    self.raise_queue.pop_front();
                    self.slots[m as usize].in_raise_queue = false;
                    continue;
                }
            };
            // A raise back to the state the miner is confirmed in (a cut not yet landed, then
            // the surplus came back) cancels the cut: it goes at once, and slow firmware that
            // restarts its change on every request stays where it is.
            let cancels = match action {
                Action::Wake(l) | Action::SetLevel(l) => {
                    self.slots[m as usize].settled == Some(Target::Level(l))
                }
                Action::Resume => self.slots[m as usize].settled == Some(Target::Level(0)),
                _ => false,
            };
            if self.slots[m as usize].pending.is_some() && !cancels {
                if waiting == 0 {
                    break;
                }
                waiting -= 1;
                self.raise_queue.pop_front();
                self.raise_queue.push_back(m);
                continue;
            }
            let (limit, new) = match action {
                Action::Wake(l) => (self.allowed_ahead, self.spec_delta(m, l)),
                Action::Resume => (self.allowed_ahead, self.spec_delta(m, 0)),
                Action::SetLevel(l) => (self.allowed_now + self.plan_wake, self.spec_delta(m, l)),
                _ => (Watts(f64::INFINITY), Watts::ZERO),
            };
            // Against what the miners may still draw: a slow miner's cut that has not landed
            // has not freed its room yet.
            let may_draw = self.slots[m as usize].may_draw;
            let after = self.drawable - may_draw + new.max(may_draw);
            if fixed + after > limit + Watts(1e-6) {
                break;
            }
            self.raise_queue.pop_front();
            self.slots[m as usize].in_raise_queue = false;
            self.send(m, action, now);
        }
    }

    /// Whether sending `action` to `m` would add load.
    fn is_increase(&self, m: u32, action: Action) -> bool {
        match action {
            Action::SetLevel(l) | Action::Wake(l) => {
                self.spec_delta(m, l) > self.commanded_delta(m)
            }
            Action::Resume => self.spec_delta(m, 0) > self.commanded_delta(m),
            _ => false,
        }
    }

    fn send(&mut self, m: u32, action: Action, now: Timestamp) {
        let id = CommandId(self.next_id);
        self.next_id += 1;
        let old = self.commanded_delta(m);
        let state = &self.specs[self.slots[m as usize].spec as usize];
        let spec = &self.fleet.specs[state.model as usize];
        let (target, settle) = match action {
            Action::Sleep => {
                let from = self.slots[m as usize]
                    .last_power
                    .unwrap_or(spec.max_power());
                (
                    Some(Target::Sleep),
                    spec.setpoint_delay + spec.ramp_time(from, spec.standby),
                )
            }
            Action::Wake(_) | Action::Resume => {
                let l = match action {
                    Action::Wake(l) => l,
                    _ => 0,
                };
                // A wake sent again to a miner planned as waking (the first was lost, or its
                // answer was) keeps the first one's time: that one may have landed, and the
                // waking queue, ordered by this time, must not stall behind a late resend and
                // keep the miners woken after it out of the running plan (where cuts look).
                let slot = &mut self.slots[m as usize];
                let ready = now + spec.wake_delay;
                slot.ready_at = match slot.plan {
                    Plan::Waking(_) => slot.ready_at.min(ready),
                    _ => ready,
                };
                (
                    Some(Target::Level(l)),
                    spec.wake_delay + spec.ramp_time(spec.standby, state.level_power(l)),
                )
            }
            Action::SetLevel(l) => {
                let from = self.slots[m as usize]
                    .last_power
                    .unwrap_or(spec.max_power());
                // A miner still booting takes the setting when it is up: it is not judged before.
                let boot_left = self.slots[m as usize].ready_at.saturating_since(now);
                (
                    Some(Target::Level(l)),
                    boot_left + spec.setpoint_delay + spec.ramp_time(from, state.level_power(l)),
                )
            }
            Action::Query => (self.slots[m as usize].commanded, Duration::ZERO),
        };
        let slot = &mut self.slots[m as usize];
        let reason = match action {
            Action::Query => Reason::Reconcile,
            a if a.wakes() && slot.rewake && slot.reason == Reason::Dispatch => Reason::Rewake,
            _ => slot.reason,
        };
        if action.wakes() {
            slot.rewake = false;
            if reason == Reason::Rewake {
                slot.rewoken_at = Some(now);
            }
        }
        // Dwell counts from when the miner was actually told, not from when it was planned.
        // A re-sent sleep (start-up, drift) does not restart the off-time; any wake restarts the
        // on-time, since it may really start the machine.
        if action.wakes() || (action == Action::Sleep && reason != Reason::Reconcile) {
            slot.since = now;
        }
        if action.is_write() {
            slot.commanded = target;
            slot.pending = Some(id);
            slot.queried = false;
            slot.reason = Reason::Dispatch;
            self.tokens.take();
            self.stats.commands += 1;
            match reason {
                Reason::Dispatch => self.stats.dispatch_commands += 1,
                Reason::Protect => self.stats.protect_commands += 1,
                Reason::Operator => self.stats.operator_commands += 1,
                Reason::FailSafe => self.stats.failsafe_commands += 1,
                Reason::Reconcile => self.stats.reconcile_commands += 1,
                Reason::Rewake => self.stats.rewake_commands += 1,
            }
            let new = self.commanded_delta(m);
            self.committed += new - old;
            self.set_may_draw(m, self.slots[m as usize].may_draw.max(new));
            let window = settle + self.cfg.verify_grace;
            let slot = &mut self.slots[m as usize];
            slot.verify_window = window;
            slot.verify_after = now + window;
            slot.query = None;
            slot.sent_at = now;
            slot.acked = false;
            slot.reports_count_from = Timestamp::MAX;
            self.deadlines.push(Reverse((
                now + window,
                Deadline::Verify { miner: m, id: id.0 },
            )));
        } else {
            self.stats.queries += 1;
            let slot = &mut self.slots[m as usize];
            slot.query = Some(id);
            slot.query_sent = now;
            slot.verify_after = slot.verify_after.max(now + self.cfg.verify_grace);
        }
        self.out.push_back(Command {
            id,
            miner: MinerId(m),
            action,
            reason,
        });
    }

    // ----- faults and verification ----------------------------------------------------------

    /// Moves the pending command's verification to `after` if that is later.
    fn verify_no_earlier_than(&mut self, m: u32, pending: CommandId, after: Timestamp) {
        let slot = &mut self.slots[m as usize];
        if after > slot.verify_after {
            slot.verify_after = after;
            self.deadlines.push(Reverse((
                after,
                Deadline::Verify {
                    miner: m,
                    id: pending.0,
                },
            )));
        }
    }

    fn fault(&mut self, m: u32, kind: FaultKind, now: Timestamp) {
        let slot = &self.slots[m as usize];
        if slot.plan == Plan::Faulted {
            return;
        }
        let s = slot.spec as usize;
        match slot.plan {
            Plan::Running(l) => {
                self.bucket_remove(m, l);
                self.plan_run -= Watts(self.specs[s].delta[l as usize]);
            }
            Plan::Waking(l) => self.plan_wake -= Watts(self.specs[s].delta[l as usize]),
            Plan::Asleep | Plan::Faulted => {}
        }
        let standby = self.specs[s].standby;
        let reported = self.slots[m as usize]
            .last_power
            .map(|p| (p - standby).positive_part());
        let assumed = reported.unwrap_or(Watts::ZERO).max(self.commanded_delta(m));
        self.committed -= self.commanded_delta(m);
        self.set_may_draw(m, Watts::ZERO);
        let slot = &mut self.slots[m as usize];
        slot.plan = Plan::Faulted;
        slot.rewake = false;
        slot.settled = None;
        slot.fault = Some(kind);
        slot.commanded = None;
        slot.pending = None;
        slot.epoch = slot.epoch.wrapping_add(1);
        slot.assumed = assumed;
        let epoch = slot.epoch;
        self.uncontrollable += assumed;
        self.faulted += 1;
        if kind != FaultKind::Excluded {
            self.stats.faults += 1;
        }
        self.deadlines.push(Reverse((
            now + self.cfg.fault_retry,
            Deadline::Retry { miner: m, epoch },
        )));
    }

    /// Moves a miner between its model's full state and its on/off state, keeping its plan, its
    /// command and the running sums: a level maps to the on/off level and back to the model's
    /// nameplate level, which draws the same.
    fn switch_state(&mut self, m: u32, to: u16) {
        let from = self.slots[m as usize].spec as usize;
        let nameplate = self.fleet.specs[self.specs[from].model as usize].preferred_level;
        let old_committed = self.commanded_delta(m);
        match self.slots[m as usize].plan {
            Plan::Running(l) => {
                self.bucket_remove(m, l);
                self.plan_run -= Watts(self.specs[from].delta[l as usize]);
            }
            Plan::Waking(l) => self.plan_wake -= Watts(self.specs[from].delta[l as usize]),
            Plan::Asleep | Plan::Faulted => {}
        }
        let level = if self.specs[to as usize].full.is_some() {
            0
        } else {
            nameplate
        };
        let retarget = |t: Option<Target>| match t {
            Some(Target::Level(_)) => Some(Target::Level(level)),
            other => other,
        };
        let slot = &mut self.slots[m as usize];
        slot.spec = to;
        slot.epoch = slot.epoch.wrapping_add(1);
        slot.commanded = retarget(slot.commanded);
        slot.settled = retarget(slot.settled);
        let epoch = slot.epoch;
        let to = to as usize;
        match slot.plan {
            Plan::Running(_) => {
                slot.plan = Plan::Running(level);
                self.plan_run += Watts(self.specs[to].delta[level as usize]);
                self.bucket_push(m, level);
                self.specs[to].run_order.push_back((m, epoch));
            }
            Plan::Waking(_) => {
                slot.plan = Plan::Waking(level);
                self.plan_wake += Watts(self.specs[to].delta[level as usize]);
                self.specs[to].waking.push_back((m, epoch));
            }
            Plan::Asleep => self.specs[to].asleep.push_back((m, epoch)),
            Plan::Faulted => {}
        }
        let committed = self.commanded_delta(m);
        self.committed += committed - old_committed;
        let may_draw = self.slots[m as usize].may_draw.max(committed);
        self.set_may_draw(m, may_draw);
    }

    /// The miner refused a power level: from now on it is used on/off at whatever level its
    /// firmware holds (until a re-probe offers it levels again).
    /// With `timer`, levels are offered again after `reprobe`; without, the caller does (a
    /// firmware that says it owns its level is re-read at every sweep).
    fn degrade_to_on_off(&mut self, m: u32, now: Timestamp, timer: bool) {
        let Some(on_off) = self.specs[self.slots[m as usize].spec as usize].on_off else {
            return;
        };
        self.switch_state(m, on_off);
        self.slots[m as usize].on_off_since = now;
        self.stats.degraded += 1;
        if timer && !self.cfg.reprobe.is_zero() {
            let deadline = Deadline::Reprobe {
                miner: m,
                since: now,
            };
            self.deadlines
                .push(Reverse((now + self.cfg.reprobe, deadline)));
        }
    }

    /// Offers levels again to every miner used on/off: its next level change tries them, and a
    /// refusal puts it back on/off.
    fn reprobe(&mut self) {
        for m in 0..self.slots.len() as u32 {
            self.reprobe_one(m);
        }
    }

    fn reprobe_one(&mut self, m: u32) {
        if let Some(full) = self.specs[self.slots[m as usize].spec as usize].full {
            self.switch_state(m, full);
        }
    }

    /// Uses a miner on/off from now on because its firmware says it sets its own level (read,
    /// not refused: LuxOS reports ATM on). Its reads are its re-probe: the caller offers levels
    /// again (`offer_levels`) once they stop saying so.
    pub fn use_on_off(&mut self, miner: MinerId, now: Timestamp) {
        let m = miner.0;
        if self
            .slots
            .get(m as usize)
            .is_some_and(|s| s.plan != Plan::Faulted)
        {
            self.degrade_to_on_off(m, now, false);
        }
    }

    /// Offers levels again to a miner used on/off (its firmware no longer owns its level).
    pub fn offer_levels(&mut self, miner: MinerId) {
        if miner.index() < self.slots.len() {
            self.reprobe_one(miner.0);
        }
    }

    /// How a miner is used now.
    pub fn control_of(&self, miner: MinerId) -> ControlUse {
        let slot = &self.slots[miner.index()];
        let spec = &self.specs[slot.spec as usize];
        if slot.plan == Plan::Faulted {
            ControlUse::None
        } else if spec.full.is_some() || spec.delta.len() == 1 {
            ControlUse::OnOff
        } else {
            ControlUse::Levels
        }
    }

    fn recover(&mut self, m: u32, now: Timestamp) {
        let s = self.slots[m as usize].spec as usize;
        let slot = &mut self.slots[m as usize];
        let was_fault = slot.fault != Some(FaultKind::Excluded);
        self.uncontrollable -= slot.assumed;
        slot.assumed = Watts::ZERO;
        slot.fault = None;
        slot.plan = Plan::Asleep;
        slot.commanded = Some(Target::Sleep);
        // Its reports count from now: a command on the wire when it was routed around left
        // this at "never" (its outcome no longer matches), and a late wake landing after this
        // would go unseen.
        slot.reports_count_from = now;
        slot.since = now;
        slot.drifts = 0;
        slot.attempts = 0;
        slot.epoch = slot.epoch.wrapping_add(1);
        let epoch = slot.epoch;
        self.specs[s].asleep.push_back((m, epoch));
        self.faulted -= 1;
        if was_fault {
            self.stats.recoveries += 1;
        }
    }

    fn matches(&self, m: u32, status: &MinerStatus) -> bool {
        let slot = &self.slots[m as usize];
        let spec = &self.specs[slot.spec as usize];
        match (slot.commanded, status) {
            (Some(Target::Sleep), MinerStatus::Asleep { power }) => {
                *power <= spec.standby * ASLEEP_STANDBY_FACTOR + ASLEEP_SLACK
            }
            // Used on/off: hashing at whatever level its firmware chose is what it was told.
            (Some(Target::Level(_)), MinerStatus::Mining { power, .. }) if spec.full.is_some() => {
                *power <= spec.max_power * (1.0 + LEVEL_TOLERANCE) + LEVEL_SLACK
            }
            (Some(Target::Level(l)), MinerStatus::Mining { power, .. }) => {
                let want = spec.level_power(l);
                (*power - want).abs() <= want * LEVEL_TOLERANCE + LEVEL_SLACK
            }
            _ => false,
        }
    }

    /// A settled miner's report that shows it drawing more than it was told to.
    fn draws_too_much(&self, m: u32, status: &MinerStatus) -> bool {
        let slot = &self.slots[m as usize];
        let spec = &self.specs[slot.spec as usize];
        match (slot.commanded, status) {
            (Some(Target::Sleep), MinerStatus::Mining { .. }) => true,
            (Some(Target::Sleep), MinerStatus::Asleep { power }) => {
                *power > spec.standby * ASLEEP_STANDBY_FACTOR + ASLEEP_SLACK
            }
            (Some(Target::Level(_)), MinerStatus::Mining { power, .. }) if spec.full.is_some() => {
                *power > spec.max_power * (1.0 + LEVEL_TOLERANCE) + LEVEL_SLACK
            }
            (Some(Target::Level(l)), MinerStatus::Mining { power, .. }) => {
                *power > spec.level_power(l) * (1.0 + LEVEL_TOLERANCE) + LEVEL_SLACK
            }
            (Some(Target::Level(_)), MinerStatus::Asleep { .. }) => true,
            _ => false,
        }
    }

    /// A miner's state as read at `at` (when the read was sent: the state is no older).
    fn on_report(&mut self, now: Timestamp, at: Timestamp, m: u32, status: MinerStatus) {
        let slot = &mut self.slots[m as usize];
        if slot.query.is_some() && at >= slot.query_sent {
            // The read-back's answer, or a read as fresh: the state it asked for is in. The
            // miner gets a grace from now, not from when the read was sent.
            slot.query = None;
            if let Some(pending) = slot.pending {
                self.verify_no_earlier_than(m, pending, now + self.cfg.verify_grace);
            }
        }
        if status == MinerStatus::Unreachable {
            let slot = &mut self.slots[m as usize];
            let since = *slot.unreachable_since.get_or_insert(now);
            if now.saturating_since(since) >= self.cfg.silent_after {
                self.fault(m, FaultKind::Unreachable, now);
            }
            return;
        }
        let slot = &mut self.slots[m as usize];
        slot.unreachable_since = None;
        slot.last_power = status.power();
        if slot.plan == Plan::Faulted {
            // Back only on a sleep it really is in: one that says it sleeps and still draws
            // (a firmware that reports curtailed while hashing) stays routed around.
            let standby = self.specs[slot.spec as usize].standby;
            let asleep = matches!(status, MinerStatus::Asleep { power }
                if power <= standby * ASLEEP_STANDBY_FACTOR + ASLEEP_SLACK);
            if asleep && slot.fault != Some(FaultKind::Excluded) {
                self.recover(m, now);
            } else if let Some(p) = status.power() {
                let standby = self.specs[slot.spec as usize].standby;
                let assumed = (p - standby).positive_part().max(slot.assumed);
                self.uncontrollable += assumed - slot.assumed;
                slot.assumed = assumed;
            }
            return;
        }
        if let (MinerStatus::Booting { .. }, Some(pending), Some(Target::Level(_))) =
            (status, slot.pending, slot.commanded)
        {
            let wake = self.specs[slot.spec as usize].wake_delay;
            let limit = slot.sent_at + wake * SLOW_WAKE_DELAYS + slot.verify_window;
            self.verify_no_earlier_than(m, pending, (now + wake).min(limit));
        }
        if self.matches(m, &status) {
            let slot = &mut self.slots[m as usize];
            if slot.pending.take().is_some() {
                slot.settled = slot.commanded;
                let told = self.commanded_delta(m);
                self.set_may_draw(m, told);
                let slot = &mut self.slots[m as usize];
                slot.attempts = 0;
                self.stats.verified += 1;
                // The write had taken effect when this state was read.
                slot.reports_count_from = slot.reports_count_from.min(at);
            }
            return;
        }
        // A state read before the last write was acknowledged may predate it (a slow miner's
        // sweep reply): it can confirm the write, not accuse the miner of drifting from it.
        let slot = &self.slots[m as usize];
        let settled = slot.pending.is_none() && at >= slot.reports_count_from;
        if settled && self.draws_too_much(m, &status) {
            let slot = &mut self.slots[m as usize];
            if now.saturating_since(slot.drift_window_start) > DRIFT_WINDOW {
                slot.drift_window_start = now;
                slot.drifts = 0;
            }
            slot.drifts += 1;
            if slot.drifts >= DRIFTS_TO_FAULT {
                self.fault(m, FaultKind::Disobedient, now);
            } else {
                self.forget_command(m);
            }
        }
    }

    fn set_may_draw(&mut self, m: u32, value: Watts) {
        let slot = &mut self.slots[m as usize];
        self.drawable += value - slot.may_draw;
        slot.may_draw = value;
    }

    /// The miner's state no longer matches what it was told (a failed command, a drift): forget
    /// the command, so that the wanted state is sent again. `committed` stays the sum of what
    /// the miners were told.
    fn forget_command(&mut self, m: u32) {
        self.committed -= self.commanded_delta(m);
        self.slots[m as usize].commanded = None;
        self.slots[m as usize].settled = None;
        self.mark(m, Reason::Reconcile);
    }

    fn on_deadline(&mut self, now: Timestamp, deadline: Deadline) {
        match deadline {
            Deadline::Verify { miner, id } => {
                let slot = &self.slots[miner as usize];
                if slot.pending != Some(CommandId(id)) || now < slot.verify_after {
                    // Settled, superseded, or acknowledged late: a later deadline is queued.
                    return;
                }
                // Still on the wire: the I/O layer answers every write within its own timeout,
                // so wait for that (bounded, in case it never does).
                if !slot.acked && !slot.queried {
                    let latest = slot.sent_at + slot.verify_window + MAX_ACK_WAIT;
                    if now < latest {
                        self.deadlines
                            .push(Reverse((latest, Deadline::Verify { miner, id })));
                        return;
                    }
                }
                if !slot.queried {
                    self.slots[miner as usize].queried = true;
                    self.send(miner, Action::Query, now);
                    self.deadlines.push(Reverse((
                        now + self.cfg.verify_grace,
                        Deadline::Verify { miner, id },
                    )));
                    return;
                }
                // The read-back is still on the wire (a long sweep holds the connections): wait
                // for it, bounded, as for the acknowledgement; its answer sets the next deadline.
                // The daemon's own slow I/O is not the miner disobeying.
                if slot.query.is_some() {
                    let latest = slot.sent_at + slot.verify_window + MAX_ACK_WAIT;
                    if now < latest {
                        self.deadlines
                            .push(Reverse((latest, Deadline::Verify { miner, id })));
                        return;
                    }
                }
                let slot = &mut self.slots[miner as usize];
                slot.attempts += 1;
                slot.pending = None;
                slot.reports_count_from = slot.reports_count_from.min(now);
                if slot.attempts >= UNCONFIRMED_ATTEMPTS {
                    self.fault(miner, FaultKind::Disobedient, now);
                } else {
                    self.forget_command(miner);
                }
            }
            Deadline::Reprobe { miner, since } => {
                // Not if it has been offered levels (and refused them) again since.
                if self.slots[miner as usize].on_off_since == since {
                    self.reprobe_one(miner);
                }
            }
            Deadline::Retry { miner, epoch } => {
                let slot = &self.slots[miner as usize];
                if slot.epoch != epoch
                    || slot.plan != Plan::Faulted
                    || slot.fault == Some(FaultKind::Excluded)
                {
                    return;
                }
                // Ask it to sleep (the command is checked like any other, with a read-back); a
                // report of sleep brings it back.
                self.slots[miner as usize].reason = Reason::Reconcile;
                self.send(miner, Action::Sleep, now);
                self.deadlines.push(Reverse((
                    now + self.cfg.fault_retry,
                    Deadline::Retry { miner, epoch },
                )));
            }
        }
    }

    fn accept_surplus(&mut self, now: Timestamp, at: Timestamp, value: Watts) {
        if !value.is_finite() || at > now + self.cfg.max_future_skew {
            self.stats.rejected_readings += 1;
            return;
        }
        let value = value.positive_part();
        // A surplus that no longer covers what the fleet is planned to draw (with the margin
        // kept below it) is acted on now, not at the next cadence tick: a plant signal that
        // drops reaches the miners within milliseconds.
        if value - self.margin < self.planned_load() && now < self.next_tick {
            self.next_tick = now;
        }
        match self.reading {
            Some(prev) if at <= prev.at => {
                self.stats.rejected_readings += 1;
            }
            Some(prev) => {
                let dt = at.secs_since(prev.at);
                let change = (value - prev.value).w();
                self.learn_trend(change, dt);
                let changed_at = if value != prev.value {
                    at
                } else {
                    prev.changed_at
                };
                self.reading = Some(Reading {
                    at,
                    value,
                    changed_at,
                });
            }
            None => {
                self.reading = Some(Reading {
                    at,
                    value,
                    changed_at: at,
                })
            }
        }
    }

    /// A change of the reading the trend does not explain by more than this is a step.
    fn step_threshold(&self) -> f64 {
        self.margin.w().max(JITTER_DEADBAND_FACTOR * self.jitter_w)
    }

    /// Updates the trend and the jitter with a change of the reading over `dt` seconds. A step
    /// (a jump of more than the step threshold that the trend does not explain either) is the
    /// surplus at a new level, not a slope: it is held back, and learnt only if the next reading
    /// departs from the trend the same way (then it was the start of a fast ramp). A step learnt
    /// as a slope would have the controller act, for the trend's time constant, on a surplus far
    /// below the new level (issue 13: a cap of 100 kW read as a fall to 31 kW).
    fn learn_trend(&mut self, change: f64, dt: f64) {
        let threshold = self.step_threshold();
        let residual = change - self.trend_w_per_s * dt;
        let is_step = residual.abs() > threshold && change.abs() > threshold;
        match self.held_step.take() {
            Some((first, first_dt)) => {
                let first_residual = first - self.trend_w_per_s * first_dt;
                let goes_on = residual * first_residual > 0.0 && residual.abs() > 0.5 * threshold;
                if goes_on {
                    self.learn_slope(first, first_dt);
                    self.learn_slope(change, dt);
                } else {
                    self.hold_or_learn(is_step, change, dt);
                }
            }
            None => self.hold_or_learn(is_step, change, dt),
        }
    }

    fn hold_or_learn(&mut self, is_step: bool, change: f64, dt: f64) {
        if is_step {
            self.stats.steps += 1;
            self.held_step = Some((change, dt));
        } else {
            self.learn_slope(change, dt);
        }
    }

    fn learn_slope(&mut self, change: f64, dt: f64) {
        // Step-to-step jitter the trend does not explain: measurement noise, mostly.
        let residual = (change - self.trend_w_per_s * dt).abs();
        let jitter_alpha = 1.0 - (-dt / JITTER_TIME_CONSTANT_S).exp();
        self.jitter_w += jitter_alpha * (residual - self.jitter_w);
        let alpha = 1.0 - (-dt / self.cfg.trend_time_constant.as_secs_f64()).exp();
        self.trend_w_per_s += alpha * (change / dt - self.trend_w_per_s);
    }
}

impl FleetController for Controller {
    fn handle_input(&mut self, now: Timestamp, input: Input) {
        let now = now.max(self.last_now);
        self.last_now = now;
        match input {
            Input::Surplus { at, available } => self.accept_surplus(now, at, available),
            Input::Forecast(mut blocks) => {
                blocks.retain(|(_, w)| w.is_finite());
                blocks.sort_by_key(|(t, _)| *t);
                self.forecast = blocks;
            }
            Input::FleetPower { at, measured } => {
                if measured.is_finite() && at <= now + self.cfg.max_future_skew {
                    self.meter = Some((at, measured));
                }
            }
            Input::Miner(report) => {
                if report.miner.index() < self.slots.len() {
                    self.on_report(now, report.at, report.miner.0, report.status);
                }
            }
            Input::Outcome(outcome) => {
                let m = outcome.miner.0;
                let Some(slot) = self.slots.get_mut(m as usize) else {
                    return;
                };
                // A read-back's outcome, if the I/O side sends one, says nothing more: its
                // report answered it (`on_report`). Only the pending write's outcome counts.
                let Some(pending) = slot.pending else {
                    return;
                };
                if pending != outcome.id {
                    return;
                }
                slot.reports_count_from = now;
                if outcome.result == Ok(Ok(())) {
                    // Acknowledged: the settle time counts from now.
                    slot.acked = true;
                    let after = now + slot.verify_window;
                    self.verify_no_earlier_than(m, pending, after);
                    return;
                }
                let spec = &self.specs[slot.spec as usize];
                if outcome.result == Ok(Err(Refusal::LevelRefused)) && spec.on_off.is_some() {
                    // It keeps its level to itself but may obey sleep and wake: use it so,
                    // and send the wanted state again as a wake without a level.
                    slot.pending = None;
                    self.forget_command(m);
                    self.degrade_to_on_off(m, now, true);
                    return;
                }
                if outcome.result != Ok(Ok(())) {
                    slot.attempts += 1;
                    slot.pending = None;
                    if slot.attempts >= FAILED_ATTEMPTS {
                        let kind = if outcome.result.is_err() {
                            FaultKind::Unreachable
                        } else {
                            FaultKind::Refusing
                        };
                        self.fault(m, kind, now);
                    } else {
                        self.forget_command(m);
                    }
                }
            }
            Input::Protection(cap) => {
                self.protection = cap.map(Watts::positive_part);
                // A trip is acted on now, not at the next tick.
                if cap.is_some() {
                    self.tick(now);
                }
            }
            Input::Operator(cmd) => match cmd {
                OperatorCommand::CurtailTo(w) => self.curtail = Some(w.positive_part()),
                OperatorCommand::ShedAll => {
                    self.shed = true;
                    // Act now, not at the next tick.
                    self.tick(now);
                }
                OperatorCommand::Resume => {
                    self.shed = false;
                    self.curtail = None;
                }
                OperatorCommand::Exclude(miner) if miner.index() < self.slots.len() => {
                    let m = miner.0;
                    if self.slots[m as usize].plan == Plan::Faulted {
                        // Already routed around: only the kind changes (no more retries).
                        self.slots[m as usize].fault = Some(FaultKind::Excluded);
                    } else {
                        self.fault(m, FaultKind::Excluded, now);
                    }
                    // Told to sleep once, checked like any command; never retried.
                    self.slots[m as usize].reason = Reason::Operator;
                    self.send(m, Action::Sleep, now);
                }
                OperatorCommand::Include(miner)
                    if miner.index() < self.slots.len()
                        && self.slots[miner.index()].fault == Some(FaultKind::Excluded) =>
                {
                    let m = miner.0;
                    // Back as asleep, and told so, so that a miner left running during its
                    // exclusion is brought to what the plan believes.
                    self.recover(m, now);
                    self.slots[m as usize].reason = Reason::Reconcile;
                    self.send(m, Action::Sleep, now);
                }
                OperatorCommand::Exclude(_) | OperatorCommand::Include(_) => {}
                OperatorCommand::Reprobe => self.reprobe(),
            },
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        let now = now.max(self.last_now);
        self.last_now = now;
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, deadline)) = self.deadlines.pop().expect("peeked");
            self.on_deadline(now, deadline);
        }
        if now >= self.next_tick {
            self.tick(now);
            let cadence = self.cfg.cadence.as_millis() as i64;
            let behind = (now.as_millis() - self.next_tick.as_millis()) / cadence;
            self.next_tick =
                Timestamp::from_millis(self.next_tick.as_millis() + (behind + 1) * cadence);
        } else {
            self.flush(now);
        }
    }

    fn poll_command(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let deadline = self.deadlines.peek().map(|Reverse((t, _))| *t);
        let mut next = deadline.map_or(self.next_tick, |d| d.min(self.next_tick));
        // Cuts held back by the command rate go as soon as a token is there, not at the next
        // tick: a shed of a large fleet is not held up by the cadence.
        if !self.cut_queue.is_empty() {
            next = next.min(self.tokens.next_token_at());
        }
        Some(next)
    }

    fn name(&self) -> &'static str {
        "hashsink"
    }
}

#[cfg(test)]
mod tests;
