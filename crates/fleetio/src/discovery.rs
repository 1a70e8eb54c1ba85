//! Finding out what answers at the configured addresses, with asic-rs's identification (the
//! same probes its subnet scan uses: the web root and the cgminer `version` command).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use asic_rs::MinerFactory;
use futures::StreamExt;

use crate::firmwares::AsicRsMiner;

/// What asic-rs found at one address.
#[derive(Clone)]
pub struct Identified {
    pub ip: IpAddr,
    pub make: String,
    pub model: String,
    /// asic-rs's firmware name ("LuxOS", "Braiins", "Stock", ...).
    pub firmware: String,
    pub miner: AsicRsMiner,
}

impl std::fmt::Debug for Identified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} ({})",
            self.ip, self.make, self.model, self.firmware
        )
    }
}

/// The firmware families hashsink drives, as asic-rs names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    LuxOs,
    BraiinsOs,
    StockAntminer,
    Other,
}

impl Identified {
    pub fn family(&self) -> Family {
        family_of(&self.firmware)
    }
}

pub fn family_of(firmware: &str) -> Family {
    let f = firmware.to_ascii_lowercase();
    if f.contains("lux") {
        Family::LuxOs
    } else if f.contains("braiins") || f.contains("bos") {
        Family::BraiinsOs
    } else if f.contains("stock") || f.contains("antminer") || f.contains("bitmain") {
        Family::StockAntminer
    } else {
        Family::Other
    }
}

/// Identifies every address, at most `concurrency` at a time, each within `timeout`. The
/// result is aligned with `ips`; `None` means nothing identifiable answered.
pub async fn identify(
    ips: &[IpAddr],
    concurrency: usize,
    timeout: Duration,
) -> Vec<Option<Identified>> {
    hashsink_clock::raise_open_file_limit((concurrency as u64) * 8 + 1024);
    let factory = Arc::new(
        MinerFactory::new()
            .with_identification_timeout(timeout)
            .with_port_check(false),
    );
    let mut found: Vec<(usize, Option<Identified>)> =
        futures::stream::iter(ips.iter().copied().enumerate())
            .map(|(i, ip)| {
                let factory = factory.clone();
                async move {
                    let handle = tokio::spawn(async move { factory.get_miner(ip).await });
                    let miner = match handle.await {
                        Ok(Ok(Some(miner))) => miner,
                        _ => return (i, None),
                    };
                    let info = miner.get_device_info();
                    (
                        i,
                        Some(Identified {
                            ip,
                            make: info.make.to_string(),
                            model: info.model.to_string(),
                            firmware: info.firmware.to_string(),
                            miner: Arc::new(miner),
                        }),
                    )
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, m)| m).collect()
}
