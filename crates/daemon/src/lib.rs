//! The daemon: the controller on a fixed cadence, fed by the surplus and the fleet's telemetry,
//! its commands carried out by the drivers.
//!
//! [`Daemon`] (`event_loop.rs`) is one loop that owns the controller (a plain state machine, see
//! `hashsink_core::api`), the plant signals' judge, the ledger recorder and the status; sources,
//! the API and signal handlers reach it through its [`Handle`]. Every network call runs in its
//! own task with a timeout and reports back through a channel, so the loop never waits on a
//! miner. `hashsink run`, `hashsink demo` and the benchmarks build a [`Setup`] and start it.
//!
//! Around it: the site file (`site.rs`), identification of the configured miners (`connect.rs`),
//! the plant signals' configuration and desk (`signals.rs`), the ledger's recorder
//! (`recorder.rs`), and the HTTP API with the dashboard (`http.rs`, `auth.rs`, `live.rs`,
//! `metrics.rs`). Beside it, the region's coordinator (`coordinator/`, `hashsink coordinate`):
//! a second loop around the same signal sources and desk, sharing a surplus out among daemons.

#![forbid(unsafe_code)]

pub mod auth;
pub mod connect;
pub mod coordinator;
mod event_loop;
pub mod http;
pub mod live;
pub mod metrics;
pub mod readings;
pub mod recorder;
pub mod signals;
pub mod site;
mod status;
pub mod watchdog;

pub use event_loop::{
    Daemon, Handle, Meter, OnStop, Setup, Stopped, SurplusSource, describe_operator,
};
pub use status::{FaultedMiner, FleetCount, RunKpis, SignalStatus, Status};
