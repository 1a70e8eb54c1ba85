//! `hashsink emulate`: an emulated fleet on loopback for trying `hashsink run`, pyasic or
//! asic-rs against, until Ctrl-C.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use hashsink_clock::ScaledClock;
use hashsink_core::{Catalogue, FleetConfig};
use hashsink_emulator::{Binding, Dialect, Emulator, Fault, Listen, subnets_for};

#[derive(Args, Debug, Clone)]
pub struct EmulateArgs {
    /// The fleet: MODEL:COUNT:FIRMWARE groups, comma separated. Firmware: luxos, braiins-os or
    /// stock-antminer.
    #[arg(long, default_value = DEMO_MIX)]
    pub mix: String,
    /// Clock speed: 60 plays an hour of miner dynamics (boot, ramps) in a minute.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Misbehaving miners, as percentages of the fleet: `hang=5,garbage=5,ignore=2,slow=2`
    /// (hang: never answers; garbage: malformed JSON; ignore: acknowledges commands and does not
    /// carry them out; slow: answers after 0.3 s; atm: LuxOS with ATM on, which refuses
    /// `profileset` and obeys `curtail`; tenfold: reports ten times the power it draws).
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Quirks of real firmware, as percentages of the miners of that firmware: atm (LuxOS with
    /// ATM on: says so, refuses `profileset`, obeys `curtail`), locked (Braiins OS with its
    /// tuner locked: refuses a power target, obeys pause and resume), session (LuxOS session
    /// expires every 3 minutes), nopower (stock firmware reports no draw); or of the whole
    /// fleet: slowwake (wakes at 3x the firmware's delay), badread (draw reported as "nan",
    /// "inf", negative or 10x in turn), asleepdraw (told to sleep, says so and keeps hashing),
    /// mining (already mining at start). E.g. `atm=30,locked=20`. Placed after `--faults`,
    /// never on a miner that has one.
    #[arg(long, default_value = "")]
    pub quirks: String,
    /// cgminer API port.
    #[arg(long, default_value_t = 4028)]
    pub rpc_port: u16,
    /// Web port.
    #[arg(long, default_value_t = 80)]
    pub web_port: u16,
    /// Start at this miner index of 127.1.0.0/16 (to run several emulators side by side).
    #[arg(long, default_value_t = 0)]
    pub first_index: u32,
    /// How the ports are bound: a listener per miner and port (several emulators can share a
    /// port on distinct addresses), or one per port on the wildcard address (descriptors follow
    /// open connections, not miners; the ports are then this emulator's). Auto: per miner up to
    /// 5,000 miners, wildcard above.
    #[arg(long, value_enum, default_value_t = BindArg::Auto)]
    pub bind: BindArg,
    /// Start every miner mining at its default level (they boot first, at the firmware's wake
    /// delay) instead of asleep.
    #[arg(long)]
    pub mining: bool,
}

/// `--bind`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindArg {
    Auto,
    PerMiner,
    Wildcard,
}

impl BindArg {
    fn binding(self, miners: usize) -> Binding {
        match self {
            BindArg::Auto => Binding::for_fleet(miners),
            BindArg::PerMiner => Binding::PerMiner,
            BindArg::Wildcard => Binding::Wildcard,
        }
    }
}

pub const DEMO_MIX: &str = "s19xp:40:luxos,s21:30:braiins-os,s19jpro:30:stock-antminer";

/// Starts an emulated fleet; faults are placed deterministically (every k-th miner).
pub async fn start(args: &EmulateArgs, clock: ScaledClock) -> Result<Emulator> {
    let fleet =
        FleetConfig::build_from_shorthand(&args.mix, &Catalogue::bundled()).context("--mix")?;
    let listen = Listen {
        rpc_port: args.rpc_port,
        web_port: args.web_port,
        first_index: args.first_index,
        binding: args.bind.binding(fleet.len()),
    };
    let emulator = Emulator::start(Arc::new(fleet), clock, listen).await?;
    place_faults(&emulator, &parse_faults(&args.faults)?);
    place_quirks(&emulator, &parse_quirks(&args.quirks)?);
    if args.mining {
        emulator.wake_all();
    }
    Ok(emulator)
}

/// `NAME=PERCENT` pairs, comma separated, as `flag` takes them.
fn percentages<'a>(flag: &str, spec: &'a str) -> Result<Vec<(&'a str, f64)>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, pct) = part
            .split_once('=')
            .with_context(|| format!("{flag}: {part:?} is not NAME=PERCENT (e.g. hang=5)"))?;
        let pct: f64 = pct
            .trim()
            .parse()
            .ok()
            .filter(|p: &f64| (0.0..=100.0).contains(p))
            .with_context(|| {
                format!("{flag}: {pct:?} in {part:?} is not a percentage between 0 and 100")
            })?;
        out.push((name.trim(), pct));
    }
    Ok(out)
}

/// A quirk of real firmware that the emulator can give a share of its miners.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quirk {
    /// A standing misbehaviour of the miners of one firmware (`None`: any firmware).
    Fault(Fault, Option<Dialect>),
    /// Already mining when the daemon starts.
    Mining,
}

/// The quirks `--quirks` takes: its name, what it is, and what `--help` says of it.
pub const QUIRKS: [(&str, Quirk); 8] = [
    ("atm", Quirk::Fault(Fault::AtmOn, Some(Dialect::LuxOs))),
    (
        "locked",
        Quirk::Fault(Fault::TunerLocked, Some(Dialect::BraiinsOs)),
    ),
    (
        "session",
        Quirk::Fault(Fault::SessionExpires, Some(Dialect::LuxOs)),
    ),
    (
        "nopower",
        Quirk::Fault(Fault::NoPowerField, Some(Dialect::StockAntminer)),
    ),
    ("slowwake", Quirk::Fault(Fault::SlowWake, None)),
    ("badread", Quirk::Fault(Fault::BadReadings, None)),
    ("asleepdraw", Quirk::Fault(Fault::AsleepDrawing, None)),
    ("mining", Quirk::Mining),
];

/// Parses `atm=30,locked=20` into (quirk, percent of the miners it applies to).
pub fn parse_quirks(spec: &str) -> Result<Vec<(Quirk, f64)>> {
    let mut out = Vec::new();
    for (name, pct) in percentages("--quirks", spec)? {
        let Some(&(_, quirk)) = QUIRKS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = QUIRKS.iter().map(|(n, _)| *n).collect();
            anyhow::bail!("--quirks: unknown quirk {name:?}; use {}", names.join(", "));
        };
        out.push((quirk, pct));
    }
    Ok(out)
}

/// Gives each quirk to its share of the miners it applies to (its firmware's, or all), spread
/// evenly through them; a misbehaviour never goes to a miner that already has one.
/// Deterministic.
pub fn place_quirks(emulator: &Emulator, quirks: &[(Quirk, f64)]) {
    for &(quirk, pct) in quirks {
        let theirs: Vec<u32> = (0..emulator.len() as u32)
            .filter(|&i| match quirk {
                Quirk::Fault(_, dialect) => {
                    dialect.is_none_or(|d| emulator.dialect(i) == d)
                        && emulator.fault(i) == Fault::None
                }
                Quirk::Mining => true,
            })
            .collect();
        let count = (theirs.len() as f64 * pct / 100.0).round() as usize;
        for j in 0..count {
            let index = theirs[j * theirs.len() / count];
            match quirk {
                Quirk::Fault(fault, _) => emulator.set_fault(index, fault),
                Quirk::Mining => emulator.wake(index),
            }
        }
    }
}

/// Parses `hang=5,garbage=5,ignore=2,slow=2` into (fault, percent) pairs.
pub fn parse_faults(spec: &str) -> Result<Vec<(Fault, f64)>> {
    let mut out = Vec::new();
    for (name, pct) in percentages("--faults", spec)? {
        let fault = match name {
            "hang" => Fault::Hang,
            "garbage" => Fault::Garbage,
            "ignore" => Fault::IgnoresCommands,
            "slow" => Fault::Slow(std::time::Duration::from_millis(300)),
            "atm" => Fault::AtmOn,
            "tenfold" => Fault::TenfoldPower,
            other => anyhow::bail!(
                "--faults: unknown fault {other:?}; use hang, garbage, ignore, slow, atm or tenfold"
            ),
        };
        out.push((fault, pct));
    }
    if out.iter().map(|(_, p)| p).sum::<f64>() > 100.0 {
        anyhow::bail!("--faults: the percentages add up to more than 100");
    }
    Ok(out)
}

/// Makes the given shares of the miners faulty, each kind spread evenly through the fleet and
/// never two faults on one miner. Deterministic: the same spec picks the same miners.
pub fn place_faults(emulator: &Emulator, faults: &[(Fault, f64)]) {
    let n = emulator.len() as u32;
    let mut taken = vec![false; n as usize];
    for (k, &(fault, pct)) in faults.iter().enumerate() {
        let count = ((n as f64) * pct / 100.0).round() as u32;
        for j in 0..count {
            let mut index = ((j as u64 * n as u64 / count as u64) as u32 + k as u32) % n;
            while taken[index as usize] {
                index = (index + 1) % n;
            }
            taken[index as usize] = true;
            emulator.set_fault(index, fault);
        }
    }
}

pub async fn run(args: EmulateArgs) -> Result<()> {
    let emulator = start(
        &args,
        ScaledClock::starting_at(ScaledClock::wall().now(), args.speed),
    )
    .await?;
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
    let binding = match emulator.listen().binding {
        Binding::PerMiner => "a listener per miner",
        Binding::Wildcard => "one wildcard listener per port",
    };
    let subnets = subnets_for(args.first_index, emulator.len() as u32);
    let shown = match subnets.as_slice() {
        [first, .., last] if subnets.len() > 8 => {
            format!("{} subnets, {first} .. {last}", subnets.len())
        }
        all => all.join(" "),
    };
    println!("{binding}; subnets: {shown}");
    println!(
        "every miner starts {}. Ctrl-C to stop.",
        if args.mining { "booting" } else { "asleep" }
    );
    tokio::signal::ctrl_c().await?;
    emulator.shutdown().await;
    Ok(())
}
