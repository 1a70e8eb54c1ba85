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
pub mod region;

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

/// What the daemon publishes for the plant (fleet load and setpoint, W) and, on MQTT, for a
/// region's coordinator (its capacity by efficiency, the cap it follows, its health: see
/// [`region`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetReport {
    pub load: Watts,
    pub setpoint: Watts,
    /// Turns of the daemon's control loop (one a tick): the heartbeat the plant watches. It
    /// stops when the loop stalls, even while the source tasks go on writing.
    pub heartbeat: u64,
    /// This run of the daemon (a fresh number at every start); 0 until the daemon's loop has
    /// published its first report, and nothing is published on its behalf before.
    pub run: u64,
    /// What the fleet can draw, by efficiency: its miners not routed around, at their top
    /// levels.
    pub tiers: std::sync::Arc<[hashsink_core::region::Tier]>,
    /// The surplus (or cap) the daemon follows now.
    pub following: Option<Watts>,
    /// It follows a trusted surplus (false: in its fail-safe, or held by the plant's
    /// protection).
    pub healthy: bool,
}

/// Whether the daemon's control loop still turns, judged from the heartbeats a source task sees
/// (`FleetReport::heartbeat`). A source whose peer cannot read a counter (OpenADR) stops its
/// reports once the loop has not turned for `stale`, so the VTN sees them stop.
#[derive(Clone, Copy, Debug)]
pub struct LoopPulse {
    stale: std::time::Duration,
    last: Option<(u64, std::time::Instant)>,
}

impl LoopPulse {
    /// The plant's interlock opens the feeder after 5 s without a change (README).
    pub const STALE: std::time::Duration = std::time::Duration::from_secs(5);

    pub fn new(stale: std::time::Duration) -> LoopPulse {
        LoopPulse { stale, last: None }
    }

    /// Notes the heartbeat seen at `now`; true while it changed within `stale` (or this is the
    /// first look).
    pub fn alive(&mut self, heartbeat: u64, now: std::time::Instant) -> bool {
        match self.last {
            Some((seen, since)) if seen == heartbeat => now.duration_since(since) < self.stale,
            _ => {
                self.last = Some((heartbeat, now));
                true
            }
        }
    }
}

#[cfg(test)]
mod pulse_tests {
    use super::LoopPulse;
    use std::time::{Duration, Instant};

    #[test]
    fn a_heartbeat_that_stops_changing_goes_stale_after_the_limit_and_lives_again_on_a_change() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut pulse = LoopPulse::new(Duration::from_secs(5));
        assert!(pulse.alive(7, at(0)), "the first look is alive");
        assert!(pulse.alive(17, at(10)), "a changed heartbeat is alive");
        assert!(pulse.alive(17, at(14)), "unchanged for 4 s: still alive");
        assert!(!pulse.alive(17, at(15)), "unchanged for 5 s: stale");
        assert!(!pulse.alive(17, at(60)), "still stale");
        assert!(pulse.alive(18, at(61)), "the loop turns again");
    }
}
