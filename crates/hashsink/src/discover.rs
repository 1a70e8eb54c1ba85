//! `hashsink discover`: scan addresses with asic-rs and print what answered, with `[[group]]`
//! tables to paste into a site file.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use hashsink_core::Catalogue;
use hashsink_fleetio::discovery::{Family, identify};

use hashsink_daemon::site::expand_addresses;

#[derive(Args, Debug, Clone)]
pub struct DiscoverArgs {
    /// Addresses to scan: CIDR blocks (10.0.1.0/24), ranges (10.0.1.10-10.0.1.60) or single IPs.
    #[arg(required = true)]
    pub addresses: Vec<String>,
    /// Identifications in flight at once.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// Limit on identifying one address.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

pub async fn run(args: DiscoverArgs) -> Result<()> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in &args.addresses {
        ips.extend(expand_addresses(a).map_err(|e| anyhow!("{e}"))?);
    }
    if ips.is_empty() {
        bail!("no addresses to scan");
    }
    let started = Instant::now();
    let found = identify(
        &ips,
        args.concurrency,
        Duration::from_millis(args.timeout_ms),
    )
    .await;
    let catalogue = Catalogue::bundled();
    let mut groups: BTreeMap<(String, &'static str), Vec<IpAddr>> = BTreeMap::new();
    let mut answered = 0;
    for m in found.iter().flatten() {
        answered += 1;
        println!("{:<16} {:<10} {:<22} {}", m.ip, m.make, m.model, m.firmware);
        let firmware = match m.family() {
            Family::LuxOs => "luxos",
            Family::BraiinsOs => "braiins-os",
            Family::StockAntminer => "stock-antminer",
            Family::Other => "unsupported",
        };
        groups
            .entry((m.model.clone(), firmware))
            .or_default()
            .push(m.ip);
    }
    eprintln!(
        "{answered} of {} addresses answered as miners ({:.1} s)",
        ips.len(),
        started.elapsed().as_secs_f64()
    );
    if groups.is_empty() {
        return Ok(());
    }
    println!("\n# [[group]] tables for a site file (hashsink run --config site.toml):");
    for ((model, firmware), addrs) in groups {
        let known = catalogue.find(&model).is_ok();
        println!("\n[[group]]");
        println!(
            "model = {model:?}{}",
            if known {
                ""
            } else {
                "   # not in the bundled catalogue: use the nearest model"
            }
        );
        println!(
            "firmware = {firmware:?}{}",
            if firmware == "unsupported" {
                "   # hashsink run has no driver for this firmware yet"
            } else {
                ""
            }
        );
        let list: Vec<String> = ranges(&addrs).iter().map(|r| format!("{r:?}")).collect();
        println!("addresses = [{}]", list.join(", "));
    }
    Ok(())
}

/// Consecutive IPv4 addresses as "a-b" ranges, others one by one.
fn ranges(addrs: &[IpAddr]) -> Vec<String> {
    let mut v4: Vec<u32> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v) => Some(u32::from(*v)),
            IpAddr::V6(_) => None,
        })
        .collect();
    v4.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v4.len() {
        let mut j = i;
        while j + 1 < v4.len() && v4[j + 1] == v4[j] + 1 {
            j += 1;
        }
        let (a, b) = (
            std::net::Ipv4Addr::from(v4[i]),
            std::net::Ipv4Addr::from(v4[j]),
        );
        out.push(if i == j {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
        i = j + 1;
    }
    out.extend(addrs.iter().filter(|a| a.is_ipv6()).map(|a| a.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_addresses_become_ranges() {
        let ips: Vec<IpAddr> = ["10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ranges(&ips), ["10.0.0.1-10.0.0.3", "10.0.0.9"]);
    }
}
