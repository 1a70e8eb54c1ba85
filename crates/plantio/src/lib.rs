//! Plant and grid signal sources for the daemon: each runs as its own task, reads the power the
//! fleet may use from the plant's systems, and reports readings and failures as
//! [`SignalEvent`]s; the daemon's `hashsink_signals::Judge` decides what to trust. Sources:
//! Modbus TCP ([`modbus`]), MQTT ([`mqtt`]), an OpenADR 2.0b VEN ([`openadr`]), IEC 60870-5-104
//! ([`iec104`]).

#![forbid(unsafe_code)]

pub mod iec104;
pub mod modbus;
pub mod mqtt;
pub mod openadr;

use hashsink_signals::{Reading, SourceId};
use hashsink_units::Watts;
use serde::Deserialize;

/// What a source task reports.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalEvent {
    Reading(Reading),
    /// The source could not be read (connection, protocol), with why.
    Failed(SourceId, String),
    /// The source sent something that is not a reading (a malformed payload), with why.
    Rejected(SourceId, String),
    /// The plant's trip flag as last read.
    Trip(SourceId, TripFlag),
}

/// A plant trip point as a source read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TripFlag {
    /// Asserted: the whole fleet sheds now and stays shed while it is.
    Set,
    Clear,
    /// The point could not be read (a failed register read, a lost link), with why: the
    /// protection it gives is not known, so the fleet goes to its fail-safe load.
    Unknown(String),
}

impl TripFlag {
    pub fn of(set: bool) -> Self {
        if set { TripFlag::Set } else { TripFlag::Clear }
    }
}

/// The unit a plant system gives power in (a register's, a payload's).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PowerUnit {
    W,
    #[default]
    Kw,
    Mw,
}

impl PowerUnit {
    /// Watts per unit.
    pub fn watts(self) -> f64 {
        match self {
            PowerUnit::W => 1.0,
            PowerUnit::Kw => 1e3,
            PowerUnit::Mw => 1e6,
        }
    }
}

/// What the daemon publishes for the plant: fleet load and setpoint, W.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FleetReport {
    pub load: Watts,
    pub setpoint: Watts,
    /// Turns of the daemon's control loop (one a tick): the heartbeat the plant watches. It
    /// stops when the loop stalls, even while the source tasks go on writing.
    pub heartbeat: u64,
}
