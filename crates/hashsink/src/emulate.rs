//! `hashsink emulate`: an emulated fleet on loopback for trying `hashsink run`, pyasic or
//! asic-rs against, until Ctrl-C.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use hashsink_core::{Catalogue, FleetConfig};
use hashsink_emulator::{Emulator, Fault, Listen, subnets_for};
use hashsink_fleetio::clock::ScaledClock;

#[derive(Args, Debug, Clone)]
pub struct EmulateArgs {
    /// The fleet: MODEL:COUNT:FIRMWARE groups, comma separated. Firmware: luxos, braiins-os or
    /// stock-antminer.
    #[arg(long, default_value = DEMO_MIX)]
    pub mix: String,
    /// Clock speed: 60 plays an hour of miner dynamics (boot, ramps) in a minute.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Share of miners that misbehave, split evenly between hanging and answering garbage.
    #[arg(long, default_value_t = 0.0)]
    pub faulty_pct: f64,
    /// cgminer API port.
    #[arg(long, default_value_t = 4028)]
    pub rpc_port: u16,
    /// Web port.
    #[arg(long, default_value_t = 80)]
    pub web_port: u16,
    /// Start at this miner index of 127.1.0.0/16 (to run several emulators side by side).
    #[arg(long, default_value_t = 0)]
    pub first_index: u32,
    /// Start every miner mining at its default level (they boot first, at the firmware's wake
    /// delay) instead of asleep.
    #[arg(long)]
    pub mining: bool,
}

pub const DEMO_MIX: &str = "s19xp:40:luxos,s21:30:braiins-os,s19jpro:30:stock-antminer";

/// Starts an emulated fleet; faults are placed deterministically (every k-th miner).
pub async fn start(args: &EmulateArgs, clock: ScaledClock) -> Result<Emulator> {
    let fleet = FleetConfig::build_from_shorthand(&args.mix, &Catalogue::bundled()).context("--mix")?;
    let listen = Listen { rpc_port: args.rpc_port, web_port: args.web_port, first_index: args.first_index };
    let emulator = Emulator::start(Arc::new(fleet), clock, listen).await?;
    place_faults(&emulator, args.faulty_pct);
    if args.mining {
        emulator.wake_all();
    }
    Ok(emulator)
}

/// Makes `pct` % of the miners faulty, spread through the fleet: alternately hanging and
/// answering malformed JSON.
pub fn place_faults(emulator: &Emulator, pct: f64) {
    if !(pct > 0.0) {
        return;
    }
    let n = emulator.len() as u32;
    let faulty = ((n as f64) * pct / 100.0).round() as u32;
    if faulty == 0 {
        return;
    }
    for k in 0..faulty {
        let index = (k as u64 * n as u64 / faulty as u64) as u32;
        emulator.set_fault(index, if k % 2 == 0 { Fault::Hang } else { Fault::Garbage });
    }
}

pub async fn run(args: EmulateArgs) -> Result<()> {
    let emulator = start(&args, ScaledClock::starting_at(ScaledClock::wall().now(), args.speed)).await?;
    let addrs = emulator.addresses();
    println!(
        "emulating {} miners on {} .. {} (cgminer API :{}, web :{}), clock x{}",
        emulator.len(),
        addrs.first().map(|a| a.to_string()).unwrap_or_default(),
        addrs.last().map(|a| a.to_string()).unwrap_or_default(),
        args.rpc_port,
        args.web_port,
        args.speed
    );
    println!("subnets: {}", subnets_for(args.first_index + emulator.len() as u32).join(" "));
    println!("every miner starts {}. Ctrl-C to stop.", if args.mining { "booting" } else { "asleep" });
    tokio::signal::ctrl_c().await?;
    emulator.shutdown().await;
    Ok(())
}
