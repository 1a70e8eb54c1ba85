//! From a site's inventory to drivers: identify every configured address with asic-rs, report
//! what did not answer or answered as another firmware, and build one driver per miner.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use hashsink_core::{FirmwareKind, Fleet, MinerId};
use hashsink_fleetio::MinerDriver;
use hashsink_fleetio::discovery::{Family, Identified, identify};
use hashsink_fleetio::firmwares::{AntminerDriver, BraiinsDriver, CallSettings, LuxOsDriver};

/// What identification found, for the startup report.
pub struct Inventory {
    pub drivers: Vec<Arc<dyn MinerDriver>>,
    /// Addresses that did not answer as any miner.
    pub unreachable: Vec<IpAddr>,
    /// Addresses that answered as another firmware than configured: (address, found).
    pub mismatched: Vec<(IpAddr, String)>,
}

fn family(kind: FirmwareKind) -> Family {
    match kind {
        FirmwareKind::Luxos => Family::LuxOs,
        FirmwareKind::BraiinsOs => Family::BraiinsOs,
        FirmwareKind::StockAntminer => Family::StockAntminer,
        _ => Family::Other,
    }
}

/// Identifies `addresses` (aligned with the fleet's miners) and builds their drivers. A miner
/// that does not answer still gets a driver for its configured firmware: the controller counts
/// it unreachable, routes around it, and picks it up when it answers.
pub async fn connect(
    fleet: &Fleet,
    addresses: &[IpAddr],
    settings: CallSettings,
    concurrency: usize,
    identify_timeout: Duration,
    require_all: bool,
) -> Result<Inventory> {
    let found = identify(addresses, concurrency.min(2048), identify_timeout).await;
    let web_miners = fleet
        .miner_ids()
        .filter(|&m| family(fleet.spec_of(m).firmware) != Family::LuxOs)
        .count();
    // No compressed replies: asic-rs switches reqwest's gzip on for every client in the
    // build, and a miner has no reason to compress (the 1 MiB cap on a reply counts the
    // decompressed bytes either way).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .no_gzip()
        .build()?;
    let settings = CallSettings {
        keep_alive: settings.keep_alive
            && keep_alive_fits(web_miners, hashsink_clock::open_file_limit()),
        ..settings
    };
    let mut inventory = Inventory {
        drivers: Vec::with_capacity(addresses.len()),
        unreachable: vec![],
        mismatched: vec![],
    };
    for (i, (ip, identified)) in addresses.iter().zip(found).enumerate() {
        let spec = fleet.spec_of(MinerId(i as u32));
        let wanted = family(spec.firmware);
        let asic = match identified {
            Some(Identified { ref firmware, .. })
                if hashsink_fleetio::discovery::family_of(firmware) != wanted =>
            {
                inventory.mismatched.push((*ip, format!("{identified:?}")));
                None
            }
            Some(id) => Some(id.miner),
            None => {
                inventory.unreachable.push(*ip);
                None
            }
        };
        let s = settings.clone();
        let driver: Arc<dyn MinerDriver> = match wanted {
            Family::LuxOs => Arc::new(LuxOsDriver::new(*ip, asic, s)),
            Family::BraiinsOs => Arc::new(BraiinsDriver::new(*ip, s, http.clone())),
            Family::StockAntminer => {
                Arc::new(AntminerDriver::new(*ip, asic, s, http.clone(), spec))
            }
            Family::Other => bail!("no driver for firmware {}", spec.firmware.key()),
        };
        inventory.drivers.push(driver);
    }
    if require_all && !(inventory.unreachable.is_empty() && inventory.mismatched.is_empty()) {
        bail!(
            "{} configured miners did not answer and {} answered as another firmware (require_all_miners = true): first unreachable {:?}, first mismatch {:?}",
            inventory.unreachable.len(),
            inventory.mismatched.len(),
            inventory.unreachable.first(),
            inventory.mismatched.first()
        );
    }
    Ok(inventory)
}

/// Whether the web drivers may keep each miner's connection open between calls: while one per
/// miner fits in a quarter of the descriptor limit. Past that (tens of thousands of miners)
/// each call closes its connection, or the idle ones would take every descriptor the process
/// has.
fn keep_alive_fits(web_miners: usize, fd_limit: u64) -> bool {
    web_miners as u64 <= fd_limit / 4
}

impl Inventory {
    /// One paragraph for the log and the terminal.
    pub fn report(&self) -> String {
        let total = self.drivers.len();
        let mut out = format!(
            "{} of {total} miners identified as configured",
            total - self.unreachable.len() - self.mismatched.len()
        );
        if !self.unreachable.is_empty() {
            let shown: Vec<String> = self
                .unreachable
                .iter()
                .take(5)
                .map(|ip| ip.to_string())
                .collect();
            out += &format!(
                "; {} did not answer ({}{})",
                self.unreachable.len(),
                shown.join(", "),
                if self.unreachable.len() > 5 {
                    ", ..."
                } else {
                    ""
                }
            );
        }
        for (ip, found) in self.mismatched.iter().take(5) {
            out += &format!(
                "; {ip} answered as {found}, not the configured firmware: its control uses the configured firmware's native calls"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::keep_alive_fits;

    #[test]
    fn idle_connections_stay_within_a_quarter_of_the_descriptors() {
        assert!(keep_alive_fits(100, 20_000));
        assert!(keep_alive_fits(5_000, 20_000));
        assert!(!keep_alive_fits(5_001, 20_000));
        assert!(!keep_alive_fits(100_000, 20_000));
    }
}
