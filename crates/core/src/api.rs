//! The vocabulary between a controller and the world: inputs in, miner commands out.
//!
//! A controller is a state machine in the style of quinn-proto: the caller hands it inputs and the
//! current time, asks it when it next wants to be woken, and drains the commands it produced. The
//! daemon does this with real sockets and a real clock; the twin with simulated miners and a
//! virtual clock. Nothing here performs I/O.

use hashsink_units::{HashRate, Timestamp, Watts};
use serde::Serialize;

use crate::fleet::MinerId;

/// What happened in the world.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A reading of the power available to the fleet (the plant's surplus), stamped by its source.
    Surplus { at: Timestamp, available: Watts },
    /// A forecast or schedule of the surplus: `(start, power)` blocks, each valid until the next.
    /// Replaces any earlier forecast. Used to wake slow miners ahead of a rise.
    Forecast(Vec<(Timestamp, Watts)>),
    /// The fleet's total draw as measured by a meter.
    FleetPower { at: Timestamp, measured: Watts },
    /// What one miner said about itself (or that it did not answer).
    Miner(MinerReport),
    /// The answer to a command the controller sent.
    Outcome(CommandOutcome),
    /// An operator's instruction.
    Operator(OperatorCommand),
    /// The plant's protection: the most the fleet may draw while a trip is asserted (zero) or
    /// a trip point cannot be read (the fail-safe load); `None` once every trip is clear. It
    /// is held until the plant lifts it: an operator's resume does not.
    Protection(Option<Watts>),
}

/// An operator's instruction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum OperatorCommand {
    /// Keep the fleet at or below this power, whatever the surplus.
    CurtailTo(Watts),
    /// Put every miner to sleep now.
    ShedAll,
    /// Lift a curtailment or shed.
    Resume,
    /// Take a miner out of control (maintenance, a suspect unit): it is told to sleep once and
    /// then left alone; whatever it still reports drawing is counted as load the rest of the
    /// fleet makes room for.
    Exclude(MinerId),
    /// Put an excluded miner back under control (it starts asleep).
    Include(MinerId),
    /// Offer power levels again to every miner used on/off because it refused them (an
    /// operator turned an autotuner off, say): the next level change tries them.
    Reprobe,
}

/// A miner's state as read from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinerReport {
    pub miner: MinerId,
    pub at: Timestamp,
    pub status: MinerStatus,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinerStatus {
    /// The miner did not answer (timeout, refused connection, garbage).
    Unreachable,
    /// Not hashing, drawing standby power.
    Asleep { power: Watts },
    /// Starting up: hashboards initialising.
    Booting { power: Watts },
    /// Hashing.
    Mining { power: Watts, hashrate: HashRate },
}

impl MinerStatus {
    pub fn power(&self) -> Option<Watts> {
        match *self {
            MinerStatus::Unreachable => None,
            MinerStatus::Asleep { power }
            | MinerStatus::Booting { power }
            | MinerStatus::Mining { power, .. } => Some(power),
        }
    }
}

/// Identifies one command for its outcome and for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CommandId(pub u64);

/// Why a command was sent: kept in the audit log and used by the twin's invariant checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// Following the surplus.
    Dispatch,
    /// The fleet drew more than allowed and had to come down now, dwell or not.
    Protect,
    /// Operator shed or curtailment.
    Operator,
    /// The surplus signal was lost or untrusted.
    FailSafe,
    /// Re-sending the wanted state to a miner that drifted from it (rebooted, lost a command).
    Reconcile,
    /// Woken inside its minimum off-time because the surplus came back within `short_dip_s` of
    /// the dip that put it to sleep (at most once per `min_off_s`; counted as a cycle).
    Rewake,
}

/// What to do to a miner. Levels index the spec's power ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run at this level (a watt target, a profile or a mode, depending on firmware).
    SetLevel(u8),
    /// Stop hashing, keep the control board up.
    Sleep,
    /// Start hashing at this level.
    Wake(u8),
    /// Start hashing at whatever level the firmware holds, without setting one: how a miner
    /// that refuses power levels (an autotuner owns them) is used, on/off.
    Resume,
    /// Read the miner's state now (check-after-write). Not a write; not rate-limited.
    Query,
}

impl Action {
    pub fn is_write(self) -> bool {
        !matches!(self, Action::Query)
    }

    /// Whether the action starts a sleeping miner hashing.
    pub fn wakes(self) -> bool {
        matches!(self, Action::Wake(_) | Action::Resume)
    }
}

/// A command for one miner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Command {
    pub id: CommandId,
    pub miner: MinerId,
    pub action: Action,
    pub reason: Reason,
}

/// The miner's answer to a command: transport failure, or the miner's own yes or no.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CommandOutcome {
    pub id: CommandId,
    pub miner: MinerId,
    pub result: Result<Result<(), Refusal>, TransportError>,
}

/// The miner answered and said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unsupported,
    Busy,
    Rejected,
    /// The miner refused the power level (a profile, a power target, a mode) but may still
    /// obey sleep and wake: an autotuner or a locked tuner owns its level.
    LevelRefused,
}

/// The miner could not be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    Timeout,
    Refused,
    Malformed,
}

/// A controller as the twin and the daemon drive it.
///
/// Contract with the I/O side: every write command gets an [`Input::Outcome`] once the transport
/// is done with it (success, the miner's refusal, or a transport error within the call timeout);
/// the controller starts judging whether the miner obeyed from that acknowledgement, so time on
/// the wire is not held against the miner. A read-back (`Action::Query`) is answered by an
/// [`Input::Miner`] report (a failed read reports the miner unreachable); no outcome is needed
/// for it, and one sent is ignored.
pub trait FleetController {
    /// Feed one input observed at `now`.
    fn handle_input(&mut self, now: Timestamp, input: Input);
    /// Called at or after the time [`FleetController::poll_timeout`] returned.
    fn handle_timeout(&mut self, now: Timestamp);
    /// The next command to send, if any.
    fn poll_command(&mut self) -> Option<Command>;
    /// When the controller next wants `handle_timeout`.
    fn poll_timeout(&self) -> Option<Timestamp>;
    /// A short name for reports.
    fn name(&self) -> &'static str;
}
