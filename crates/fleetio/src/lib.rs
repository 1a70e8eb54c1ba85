//! Fleet I/O: everything between the controller and real miners on a network.
//!
//! * [`driver`]: the project's own miner trait ([`driver::MinerDriver`]) and its vocabulary.
//! * [`cgminer`]: the cgminer-style JSON API client (one request per connection, with timeouts).
//! * [`firmwares`]: one driver per firmware; control goes through asic-rs where it has it
//!   (Braiins OS power target and pause/resume, Antminer sleep/normal), and is native where
//!   asic-rs lacks it (LuxOS watts via profiles, Antminer low/high modes) or where one round trip
//!   beats its many (telemetry, LuxOS curtail with a kept session).
//! * [`discovery`]: asic-rs identification of configured addresses, reporting what did not answer.
//! * [`fleet`]: sweeps and command execution over the whole fleet with per-call timeouts and
//!   bounded concurrency, so a hung or malformed miner never stalls the others.

#![forbid(unsafe_code)]

pub mod cgminer;
pub mod discovery;
pub mod driver;
pub mod firmwares;
pub mod fleet;

pub use driver::{Control, DriverError, MinerDriver, MinerState, Telemetry};
