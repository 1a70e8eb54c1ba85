//! An emulated ASIC fleet on loopback, for the demo, the tests and the benchmarks.
//!
//! Every miner gets its own address in 127.0.0.0/8 and answers on the real firmware ports (4028
//! for the cgminer-style JSON API, 80 for the web interface), so real clients (asic-rs, pyasic,
//! the hashsink drivers) find and drive it as they would a miner on a farm network. A small
//! fleet binds a listener per miner and port; a large one ([`Binding::Wildcard`]) binds one per
//! port on the wildcard address and hands each connection to the miner whose address it was
//! made to, so that its file descriptors follow open connections, not miners. Three
//! firmware dialects are spoken, shaped after responses recorded from real machines:
//!
//! * LuxOS: cgminer API with `curtail sleep|wakeup`, frequency `profiles` and `profileset`,
//!   session logon for privileged commands.
//! * Braiins OS: cgminer API (BOSer) plus the REST API (`/api/v1`, bearer token, power target,
//!   pause/resume) and the GraphQL endpoint used for identification.
//! * Stock Antminer: cgminer API plus the digest-protected CGI web interface whose
//!   `bitmain-work-mode` puts the miner to sleep or back to normal/low/high.
//!
//! Behind all of them sits one [`hashsink_twin::miners::SimFleet`]: the same envelope, ramp,
//! wake delay and hashrate curve as the twin, advanced to the shared clock's time whenever a
//! request arrives. One model, two front ends. Faults (slow reply, no reply, malformed JSON,
//! ignored commands, reboot) are injected per miner.

#![forbid(unsafe_code)]

mod model;
mod rpc;
mod web;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashsink_clock::ScaledClock;
use hashsink_core::{FirmwareKind, Fleet};
use hashsink_units::{HashRate, Watts};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use model::Shared;
pub use model::{ATM_REFUSAL, Dialect, Fault, SESSION_LIFETIME, TUNER_LOCKED_REFUSAL};

/// Where the emulated miners listen.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    pub rpc_port: u16,
    pub web_port: u16,
    /// Index of the first miner's address (see [`miner_address`]); lets several emulated
    /// fleets share the machine without sharing addresses.
    pub first_index: u32,
    pub binding: Binding,
}

/// How the miners' ports are bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Binding {
    /// A listener per miner per port (two file descriptors a miner): several emulators can
    /// share a port on distinct addresses. Up to [`PER_MINER_LIMIT`] miners.
    #[default]
    PerMiner,
    /// One listener per port on 0.0.0.0; a connection is served by the miner whose address it
    /// was made to, and closed when no miner of this fleet has that address. The port is then
    /// this emulator's alone.
    Wildcard,
}

/// The largest fleet [`Binding::for_fleet`] binds per miner.
pub const PER_MINER_LIMIT: usize = 5_000;

impl Binding {
    /// Per miner for a fleet of up to [`PER_MINER_LIMIT`], wildcard above.
    pub fn for_fleet(miners: usize) -> Self {
        if miners <= PER_MINER_LIMIT {
            Binding::PerMiner
        } else {
            Binding::Wildcard
        }
    }
}

impl Default for Listen {
    /// The real firmware ports (binding port 80 needs root or CAP_NET_BIND_SERVICE).
    fn default() -> Self {
        Self {
            rpc_port: 4028,
            web_port: 80,
            first_index: 0,
            binding: Binding::PerMiner,
        }
    }
}

/// The first address of the emulated fleet; miners fill 127.1.0.1..=127.1.0.250, then
/// 127.1.1.1.., skipping .0 and .251-.255 so that every /24 scans like a farm subnet.
pub const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);
const HOSTS_PER_SUBNET: u32 = 250;

/// The address of miner `index`.
pub fn miner_address(index: u32) -> Ipv4Addr {
    let subnet = index / HOSTS_PER_SUBNET;
    let host = index % HOSTS_PER_SUBNET + 1;
    assert!(
        subnet < 255 * 256,
        "too many emulated miners for 127.1.0.0/16..127.255.255.0/24"
    );
    Ipv4Addr::new(
        127,
        1 + (subnet / 256) as u8,
        (subnet % 256) as u8,
        host as u8,
    )
}

/// The index of the miner at `address`: the inverse of [`miner_address`].
pub fn miner_index(address: Ipv4Addr) -> Option<u32> {
    let [a, b, c, host] = address.octets();
    if a != 127 || b == 0 || host == 0 || u32::from(host) > HOSTS_PER_SUBNET {
        return None;
    }
    let subnet = u32::from(b - 1) * 256 + u32::from(c);
    Some(subnet * HOSTS_PER_SUBNET + u32::from(host) - 1)
}

/// The /24 subnets that hold miners `first_index..first_index + miners`.
pub fn subnets_for(first_index: u32, miners: u32) -> Vec<String> {
    let first = first_index / HOSTS_PER_SUBNET;
    let last = (first_index + miners.max(1) - 1) / HOSTS_PER_SUBNET;
    (first..=last)
        .map(|s| {
            let a = miner_address(s * HOSTS_PER_SUBNET);
            format!("{}.{}.{}.0/24", a.octets()[0], a.octets()[1], a.octets()[2])
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(
        "the emulator cannot emulate {firmware} miners (group {model}); it speaks LuxOS, Braiins OS and stock Antminer"
    )]
    UnsupportedFirmware {
        firmware: &'static str,
        model: String,
    },
    #[error("cannot listen on {addr}: {source}. {hint}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
}

/// A running emulated fleet. Dropping it stops every listener.
pub struct Emulator {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    listen: Listen,
}

impl Emulator {
    /// Binds every miner's listeners and starts serving. All miners start asleep, as after a
    /// curtailment; the fleet model starts at the clock's current reading.
    pub async fn start(
        fleet: Arc<Fleet>,
        clock: ScaledClock,
        listen: Listen,
    ) -> Result<Self, EmulatorError> {
        let mut dialects = Vec::with_capacity(fleet.len());
        for id in fleet.miner_ids() {
            let spec = fleet.spec_of(id);
            let dialect = match spec.firmware {
                FirmwareKind::Luxos => Dialect::LuxOs,
                FirmwareKind::BraiinsOs => Dialect::BraiinsOs,
                FirmwareKind::StockAntminer => Dialect::StockAntminer,
                other => {
                    return Err(EmulatorError::UnsupportedFirmware {
                        firmware: other.key(),
                        model: spec.model.clone(),
                    });
                }
            };
            dialects.push(dialect);
        }
        let shared = Arc::new(Shared::new(fleet, clock, dialects, listen.first_index));
        let mut tasks = JoinSet::new();
        match listen.binding {
            Binding::PerMiner => {
                hashsink_clock::raise_open_file_limit(shared.len() as u64 * 3 + 4096);
                for index in 0..shared.len() as u32 {
                    let ip = miner_address(listen.first_index + index);
                    let rpc = bind(SocketAddr::from((ip, listen.rpc_port))).await?;
                    tasks.spawn(rpc::serve(rpc, shared.clone()));
                    if shared.dialect(index).has_web() {
                        let web_listener = bind(SocketAddr::from((ip, listen.web_port))).await?;
                        tasks.spawn(web::serve(web_listener, shared.clone()));
                    }
                }
            }
            Binding::Wildcard => {
                // Each connection in flight holds a descriptor: allow as many as the system does.
                hashsink_clock::raise_open_file_limit(1 << 20);
                let any = Ipv4Addr::UNSPECIFIED;
                let rpc = bind(SocketAddr::from((any, listen.rpc_port))).await?;
                tasks.spawn(rpc::serve(rpc, shared.clone()));
                if (0..shared.len() as u32).any(|i| shared.dialect(i).has_web()) {
                    let web_listener = bind(SocketAddr::from((any, listen.web_port))).await?;
                    tasks.spawn(web::serve(web_listener, shared.clone()));
                }
            }
        }
        Ok(Self {
            shared,
            tasks,
            listen,
        })
    }

    pub fn len(&self) -> usize {
        self.shared.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn listen(&self) -> Listen {
        self.listen
    }

    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        (0..self.len() as u32)
            .map(|i| miner_address(self.listen.first_index + i))
            .collect()
    }

    pub fn dialect(&self, index: u32) -> Dialect {
        self.shared.dialect(index)
    }

    /// How miner `index` misbehaves (`Fault::None`: it does not).
    pub fn fault(&self, index: u32) -> Fault {
        self.shared.fault(index)
    }

    /// Makes miner `index` misbehave from now on.
    pub fn set_fault(&self, index: u32, fault: Fault) {
        self.shared.set_fault(index, fault);
    }

    /// Power-cycles miner `index`: it boots and comes back mining at its firmware default,
    /// forgetting any sleep it was told.
    pub fn reboot(&self, index: u32) {
        self.shared.reboot(index);
    }

    /// Wakes every miner at its firmware's default level, as if an operator had.
    pub fn wake_all(&self) {
        self.shared.wake_all();
    }

    /// Wakes miner `index` at its firmware's default level, as if an operator had.
    pub fn wake(&self, index: u32) {
        self.shared.wake_one(index);
    }

    /// What the fleet draws and hashes right now, by the model (the site meter's view).
    pub fn totals(&self) -> FleetTotals {
        self.shared.totals()
    }

    /// Which miners are awake (mining or booting) now, by index.
    pub fn awake(&self) -> Vec<bool> {
        self.shared.awake()
    }

    /// Wall instant at which miner `index` last accepted a sleep command.
    pub fn sleep_received_at(&self, index: u32) -> Option<Instant> {
        self.shared.sleep_received_at(index)
    }

    /// Starts watching for the next command any miner takes (sleep, wake, level); returns now.
    pub fn mark_commands(&self) -> Instant {
        self.shared.mark_commands()
    }

    /// Wall instant of the first command a miner took since `mark_commands`.
    pub fn first_command_since_mark(&self) -> Option<Instant> {
        self.shared.first_command_since_mark()
    }

    /// Wall instant of the first command one of the miners `indices` took since
    /// `mark_commands` (a shard's, say).
    pub fn first_command_since_mark_among(&self, indices: std::ops::Range<u32>) -> Option<Instant> {
        self.shared.first_command_since_mark_among(indices)
    }

    /// Stops listening; connections in flight are dropped.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The fleet as the site meter sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FleetTotals {
    pub power: Watts,
    pub hashrate: HashRate,
    pub mining: u32,
    pub booting: u32,
    pub asleep: u32,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|source| EmulatorError::Bind {
        addr,
        source,
        hint: "",
    })?;
    let _ = socket.set_reuseaddr(true);
    socket
        .bind(addr)
        .and_then(|()| socket.listen(1024))
        .map_err(|source| {
            let hint = match source.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    "Ports below 1024 need root or CAP_NET_BIND_SERVICE; run as root or pass other ports (--rpc-port/--web-port)."
                }
                std::io::ErrorKind::AddrInUse if addr.ip().is_unspecified() => {
                    "A large fleet binds the wildcard address, so its ports are its own: give each emulator its own ports (--rpc-port/--web-port), or stop what listens there."
                }
                std::io::ErrorKind::AddrInUse => "Another emulator (or a real service) already listens there.",
                _ if source.raw_os_error() == Some(24) => {
                    "Too many open files: raise the limit (ulimit -n) or emulate fewer miners."
                }
                _ => "",
            };
            EmulatorError::Bind { addr, source, hint }
        })
}

/// How long a hung miner keeps a connection open without answering.
pub(crate) const HANG_FOR: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_maps_back_to_its_miner() {
        for index in [
            0,
            1,
            249,
            250,
            251,
            63_999,
            64_000,
            100_000,
            250 * (255 * 256 - 1) + 249,
        ] {
            assert_eq!(miner_index(miner_address(index)), Some(index), "{index}");
        }
        for stranger in [
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(127, 1, 0, 0),
            Ipv4Addr::new(127, 1, 0, 251),
            Ipv4Addr::new(10, 1, 0, 1),
        ] {
            assert_eq!(miner_index(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn a_large_fleet_binds_the_wildcard_address() {
        assert_eq!(Binding::for_fleet(PER_MINER_LIMIT), Binding::PerMiner);
        assert_eq!(Binding::for_fleet(PER_MINER_LIMIT + 1), Binding::Wildcard);
    }
}
