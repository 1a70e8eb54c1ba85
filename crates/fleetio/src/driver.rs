//! The project's miner trait: what the daemon needs from any miner, whatever its firmware.

use std::net::IpAddr;

use async_trait::async_trait;
use hashsink_units::{HashRate, Watts};

/// What a miner is doing, as its firmware reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinerState {
    /// Hashing.
    Mining,
    /// Told to mine, not hashing yet.
    Booting,
    /// Sleeping (curtailed, paused, sleep mode); control board up.
    Asleep,
}

/// One reading of one miner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Telemetry {
    pub state: MinerState,
    pub power: Watts,
    /// The firmware does not report its draw (older stock Antminer firmware): `power` is the
    /// rated draw of its work mode (or standby), not a measurement.
    pub power_estimated: bool,
    /// The firmware says it sets its own power level (LuxOS with ATM on: `IsAtmEnabled` in
    /// its `config`): a level written to it would be refused.
    pub level_owned: bool,
    pub hashrate: HashRate,
    pub board_temp_c: Option<f64>,
    pub chip_temp_c: Option<f64>,
    pub fan_rpm: Option<u32>,
}

/// A power instruction for one miner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    /// Stop hashing.
    Sleep,
    /// Hash at this rung of the miner's power ladder (`watts` is the rung's power; `level` its
    /// index, which is what mode-based firmware needs), waking it if it sleeps.
    Run { level: u8, watts: Watts },
    /// Move a miner that hashes (or boots) to this rung, without the wake `Run` adds: one
    /// request instead of two on firmware whose level and wake are separate calls (LuxOS,
    /// Braiins OS). A miner that turns out asleep stays asleep with the rung stored; the
    /// controller reads that back and wakes it.
    Level { level: u8, watts: Watts },
    /// Start hashing at whatever level the firmware holds, without setting one (a miner whose
    /// level an autotuner owns, used on/off).
    Resume,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("the miner refused: {0}")]
    Rejected(String),
    /// The miner refused the power level (profile, power target, mode); it may still obey
    /// sleep and wake.
    #[error("the miner refused the power level: {0}")]
    LevelRefused(String),
    #[error("not supported by this firmware: {0}")]
    Unsupported(String),
}

impl DriverError {
    /// Transport failures, as opposed to the miner answering "no".
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            DriverError::Timeout(_) | DriverError::Connect(_) | DriverError::Malformed(_)
        )
    }
}

/// A miner the daemon can read and command. Implementations must be cheap to call concurrently
/// and must not hold locks across awaits that another miner's call needs.
#[async_trait]
pub trait MinerDriver: Send + Sync {
    fn address(&self) -> IpAddr;
    /// The firmware this driver speaks ("LuxOS", "Braiins OS", "stock Antminer").
    fn firmware(&self) -> &'static str;
    async fn telemetry(&self) -> Result<Telemetry, DriverError>;
    /// Gets ready for commands ahead of need (log on, read the profile list), so that a shed is
    /// one round trip per miner. Failures are not fatal: commands retry what they need.
    async fn prepare(&self) -> Result<(), DriverError> {
        Ok(())
    }
    /// Sends a power instruction. `Ok` means the firmware accepted it, not that it took
    /// effect: the caller reads back (check-after-write).
    async fn apply(&self, control: Control) -> Result<(), DriverError>;
}
