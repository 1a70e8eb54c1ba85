//! `hashsink-bench restart`: the daemon restarted under full load. An emulated LuxOS fleet in a
//! separate process mines at its default level; a first daemon follows a constant surplus a
//! little above the fleet's draw, stops with `safe_state = "leave"`, and a second daemon starts
//! on the same fleet at once (the documented upgrade path). A separate reader sweeps the
//! fleet's reported draw every half second through both runs and the gap between them. The goal
//! (issue 15): the draw never falls below 97 % of what it was, and never rises above the
//! surplus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hashsink_clock::ScaledClock;
use hashsink_core::{Catalogue, ControllerConfig, Fleet, FleetConfig};
use hashsink_fleetio::MinerState;
use hashsink_fleetio::firmwares::CallSettings;
use hashsink_fleetio::fleet::FleetIo;
use hashsink_twin::Profile;
use hashsink_units::Watts;

use hashsink_daemon::{Daemon, OnStop, Setup, SurplusSource};

const FIRST_INDEX: u32 = 30_000;

pub async fn run(sizes: &[u32], secs: u64) -> Result<String> {
    let mut out = String::from(
        "| miners | draw before restart | lowest during restart | lowest / before | highest / surplus | commands by the second daemon |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for &n in sizes {
        let row = one_size(n, secs).await?;
        out += &row;
    }
    Ok(out)
}

async fn one_size(n: u32, secs: u64) -> Result<String> {
    let mix = format!("s19xp:{n}:luxos");
    let mut emulator = start_emulator(&mix)?;
    let fleet = Arc::new(FleetConfig::build_from_shorthand(
        &mix,
        &Catalogue::bundled(),
    )?);
    let io = connect(&fleet, n).await?;
    let before = wait_all_mining(&io, n).await?;
    // A surplus the mining fleet fits under with the margin and a little to spare.
    let cfg = ControllerConfig::default();
    let margin = cfg.margin.max(fleet.max_power() * cfg.margin_fraction);
    let surplus = before + margin + Watts::from_kw(1.0);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample(io.clone(), sampling.clone()));
    let first =
        daemon(&fleet, &io, surplus, &cfg).run(tokio::time::sleep(Duration::from_secs(secs)));
    first.await?;
    let second = daemon(&fleet, &io, surplus, &cfg)
        .run(tokio::time::sleep(Duration::from_secs(secs)))
        .await?;
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await?;
    let _ = emulator.kill();
    let _ = emulator.wait();
    let lowest = samples
        .iter()
        .copied()
        .fold(Watts(f64::INFINITY), Watts::min);
    let highest = samples.iter().copied().fold(Watts::ZERO, Watts::max);
    Ok(format!(
        "| {n} | {:.1} kW | {:.1} kW | {:.1} % | {:.1} % | {} |\n",
        before.w() / 1000.0,
        lowest.w() / 1000.0,
        100.0 * lowest.w() / before.w(),
        100.0 * highest.w() / surplus.w(),
        second.commands,
    ))
}

fn start_emulator(mix: &str) -> Result<std::process::Child> {
    let first = FIRST_INDEX.to_string();
    crate::product::emulate(&[
        "--mining",
        "--speed",
        "1",
        "--first-index",
        &first,
        "--mix",
        mix,
    ])
}

async fn connect(fleet: &Arc<Fleet>, n: u32) -> Result<Arc<FleetIo>> {
    let addrs: Vec<std::net::IpAddr> = (0..n)
        .map(|i| hashsink_emulator::miner_address(FIRST_INDEX + i).into())
        .collect();
    let settings = CallSettings {
        timeout: Duration::from_secs(3),
        ..CallSettings::default()
    };
    let inventory = hashsink_daemon::connect::connect(
        fleet,
        &addrs,
        settings,
        1024,
        Duration::from_secs(5),
        true,
    )
    .await?;
    let io = Arc::new(FleetIo::new(
        inventory.drivers,
        1024,
        Duration::from_secs(3),
    ));
    io.prepare_all().await;
    Ok(io)
}

/// Waits until every miner reports mining and the fleet's draw has settled (the firmware ramps
/// to its level after booting); returns the fleet's draw then.
async fn wait_all_mining(io: &FleetIo, n: u32) -> Result<Watts> {
    let started = Instant::now();
    let mut last = Watts::ZERO;
    loop {
        let sweep = io.sweep().await;
        let mining: Vec<Watts> = (sweep.results.iter())
            .filter_map(|r| r.as_ref().ok())
            .filter(|t| t.state == MinerState::Mining)
            .map(|t| t.power)
            .collect();
        let total: Watts = mining.iter().copied().sum();
        if mining.len() == n as usize && (total - last).abs() <= total * 0.001 {
            return Ok(total);
        }
        last = total;
        if started.elapsed() > Duration::from_secs(900) {
            bail!("{} of {n} miners mining after 15 minutes", mining.len());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// A daemon on `io` following a constant `surplus` for an hour, reading the fleet every 5 s,
/// leaving the miners as they are when it stops.
pub(crate) fn daemon(
    fleet: &Arc<Fleet>,
    io: &Arc<FleetIo>,
    surplus: Watts,
    cfg: &ControllerConfig,
) -> Daemon {
    let clock = ScaledClock::wall();
    let profile = Profile::constant(surplus, clock.now(), Duration::from_secs(3600));
    let (daemon, _handle) = Daemon::start(Setup {
        fleet: fleet.clone(),
        io: io.clone(),
        controller: cfg.clone(),
        clock,
        surplus: SurplusSource::Replay {
            profile: Arc::new(profile),
            offset: Duration::ZERO,
        },
        meter: None,
        telemetry_interval: Duration::from_secs(5),
        on_stop: OnStop::Leave,
        ledger: None,
    });
    daemon
}

/// The fleet's reported draw, every half second, until told to stop.
async fn sample(io: Arc<FleetIo>, going: Arc<AtomicBool>) -> Vec<Watts> {
    let mut out = Vec::new();
    while going.load(Ordering::Relaxed) {
        let sweep = io.sweep().await;
        let answered = sweep.results.iter().filter(|r| r.is_ok()).count();
        if answered == sweep.results.len() {
            out.push(sweep.results.iter().flatten().map(|t| t.power).sum());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out
}
