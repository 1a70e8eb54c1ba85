//! Fleet I/O: everything between the controller and real miners on a network.
//!
//! * [`clock`]: wall time, or a sped-up clock shared with the emulator.
//! * [`driver`]: the project's own miner trait ([`driver::MinerDriver`]) and its vocabulary.
//! * [`cgminer`]: the cgminer-style JSON API client (one request per connection, with timeouts).
//! * [`firmwares`]: one driver per firmware; control goes through asic-rs where it has it
//!   (Braiins OS power target and pause/resume, Antminer sleep/normal), and is native where
//!   asic-rs lacks it (LuxOS watts via profiles, Antminer low/high modes) or where one round trip
//!   beats its many (telemetry, LuxOS curtail with a kept session).
//! * [`discovery`]: asic-rs identification of configured addresses, reporting what did not answer.
//! * [`fleet`]: sweeps and command execution over the whole fleet with per-call timeouts and
//!   bounded concurrency, so a hung or malformed miner never stalls the others.

pub mod cgminer;
pub mod clock;
pub mod discovery;
pub mod driver;
pub mod firmwares;
pub mod fleet;

pub use driver::{Control, DriverError, MinerDriver, MinerState, Telemetry};

/// Raises the open-file limit towards `wanted` (a sweep of 10,000 miners holds thousands of
/// sockets at once). Best effort: without the privilege to raise it, the old limit stays.
pub fn raise_open_file_limit(wanted: u64) {
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < wanted
        && rlimit::Resource::NOFILE
            .set(wanted, hard.max(wanted))
            .is_err()
    {
        let _ = rlimit::Resource::NOFILE.set(hard.min(wanted), hard);
    }
}
