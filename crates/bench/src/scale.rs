//! `hashsink-bench scale`: one daemon and a very large emulated fleet (100,000 S21 on Braiins OS
//! by default) on this machine. The emulator runs in this process (one wildcard listener per
//! port, each connection handed to the miner whose address it was made to), `hashsink run` in a
//! child process with a SQLite ledger and its surplus pushed over HTTP every second (the
//! fleet's nameplate and a fifth). Measured:
//! - startup: from the process's start to its endpoint listening (asic-rs identification of
//!   every address), then until half the fleet or more mines and no command went out for 10 s;
//! - the telemetry sweeps once the fleet is up: their durations as the daemon reports them, and
//!   the daemon's CPU time per sweep over the same window;
//! - a shed (`POST /api/v1/shed`): time to the last running miner taking its sleep command (the
//!   emulator's receipt; the acknowledgement follows it), and until the daemon's own sweeps
//!   confirm the fleet asleep;
//! - the ledger: rows and write time of each one-minute interval the daemon committed;
//! - the daemon's peak resident memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hashsink_emulator::{Binding, Emulator, Listen, miner_address};

use crate::product::KillOnDrop;

const LISTEN: &str = "127.0.0.1:18962";
const FIRST_INDEX: u32 = 0;
const TELEMETRY_S: u64 = 5;

/// What one run measured.
struct Measured {
    miners: u32,
    startup: Duration,
    up: Duration,
    sweeps_ms: Vec<u64>,
    cpu_per_sweep_s: f64,
    running: usize,
    shed_last_sleep: Option<Duration>,
    shed_confirmed: Option<Duration>,
    /// CPU time (s) from the POST to the last sleep taken: the daemon's, and this process's
    /// (the emulator, and the benchmark's polling).
    shed_cpu: (f64, f64),
    /// The daemon's own time to hand the shed's commands to the drivers (its log).
    shed_sent_ms: Option<f64>,
    ledger: Vec<(u64, f64)>,
    peak_rss_mb: f64,
}

pub async fn run(miners: u32, firmware: &str, sweeps: u32, commands_per_s: f64) -> Result<String> {
    if miners == 0 || sweeps == 0 {
        bail!("--miners and --sweeps must be at least 1");
    }
    hashsink_clock::raise_open_file_limit(1 << 20);
    let dir = std::env::temp_dir().join(format!("hashsink-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let listen = Listen {
        first_index: FIRST_INDEX,
        binding: Binding::Wildcard,
        ..Listen::default()
    };
    let mix = format!("s21:{miners}:{firmware}");
    // Every miner asleep at the start, as after a curtailment: the daemon wakes them.
    let emulator = crate::product::start_emulator(&mix, listen)?;
    let nameplate = hashsink_core::FleetConfig::build_from_shorthand(
        &mix,
        &hashsink_core::Catalogue::bundled(),
    )?
    .max_power()
    .w();
    let site = site_file(miners, firmware, commands_per_s, &dir);
    let path = dir.join("site.toml");
    std::fs::write(&path, site)?;
    let log = dir.join("daemon.log");
    crate::product::hashsink()?;
    let started = Instant::now();
    eprintln!(
        "scale: {miners} miners on {firmware}: starting the daemon (it identifies every address)"
    );
    let daemon = crate::product::run_daemon(&path, LISTEN, &log, "info", &[])?;
    let startup = started.elapsed();
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = push_surplus(nameplate * 1.2, stop.clone());
    let measured = measure(&emulator, &daemon, miners, sweeps, startup, started, &log).await;
    stop.store(true, Ordering::Relaxed);
    let _ = pusher.await;
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
    Ok(table(&measured?, firmware, commands_per_s))
}

/// The site: the fleet as one /24 range per 250 miners, surplus over HTTP, a SQLite ledger, the
/// command rate given.
fn site_file(miners: u32, firmware: &str, commands_per_s: f64, dir: &std::path::Path) -> String {
    let ranges: Vec<String> = (0..miners.div_ceil(250))
        .map(|s| {
            let first = FIRST_INDEX + s * 250;
            let last = (first + 249).min(FIRST_INDEX + miners - 1);
            format!("\"{}-{}\"", miner_address(first), miner_address(last))
        })
        .collect();
    format!(
        "[site]\nname = \"scale\"\n\n[surplus]\nsource = \"http\"\n\n[ledger]\nurl = \"{}\"\n\n[controller]\nmax_commands_per_s = {commands_per_s}\ncommand_burst = {commands_per_s}\n\n[io]\ntelemetry_interval_s = {TELEMETRY_S}\nidentify_timeout_ms = 10000\n\n[[group]]\nmodel = \"S21\"\nfirmware = \"{firmware}\"\naddresses = [{}]\n",
        dir.join("ledger.sqlite").display(),
        ranges.join(", ")
    )
}

/// POSTs the surplus every second until `stop`.
fn push_surplus(watts: f64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        while !stop.load(Ordering::Relaxed) {
            let _ = client
                .post(format!("http://{LISTEN}/surplus"))
                .header("content-type", "application/json")
                .body(format!("{{\"available_w\": {watts}}}"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn status() -> Option<serde_json::Value> {
    crate::product::status(LISTEN).await
}

async fn measure(
    emulator: &Emulator,
    daemon: &KillOnDrop,
    miners: u32,
    sweeps: u32,
    startup: Duration,
    started: Instant,
    log: &std::path::Path,
) -> Result<Measured> {
    let pid = daemon.0.id();
    // Up: half the fleet or more mining (the controller runs miners at their top levels before
    // it wakes more, so not all of them), and no command for 10 s.
    let up_by = Instant::now() + Duration::from_secs(600);
    let mut commands = None;
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let s = status().await.unwrap_or_default();
        let now = s["commands"].as_u64();
        if s["mining"].as_u64().unwrap_or(0) >= u64::from(miners) / 2 && now == commands {
            break;
        }
        commands = now;
        if Instant::now() > up_by {
            bail!("the fleet was not up and quiet after 10 minutes: {s}");
        }
    }
    let up = started.elapsed();
    eprintln!(
        "scale: the fleet is up after {:.0} s; timing {sweeps} sweeps",
        up.as_secs_f64()
    );
    let (sweeps_ms, cpu_per_sweep_s) = time_sweeps(pid, sweeps).await?;
    let shed = timed_shed(emulator, pid).await?;
    let shed_sent_ms = shed_sent_ms(log)?;
    let (peak_rss_mb, _) = crate::product::process_usage(pid)?;
    Ok(Measured {
        miners,
        startup,
        up,
        sweeps_ms,
        cpu_per_sweep_s,
        running: shed.running,
        shed_last_sleep: shed.last_sleep,
        shed_confirmed: shed.confirmed,
        shed_cpu: shed.cpu,
        shed_sent_ms,
        ledger: ledger_intervals(log)?,
        peak_rss_mb,
    })
}

/// The next `sweeps` sweeps' durations (each change of the status's `last_sweep_ms` after the
/// first), and the daemon's CPU time between the first change and the last over their count.
async fn time_sweeps(pid: u32, sweeps: u32) -> Result<(Vec<u64>, f64)> {
    let sweep_at = || async {
        status()
            .await
            .and_then(|s| Some((s["last_sweep_ms"].as_u64()?, s["now_ms"].as_i64()?)))
    };
    let mut last = sweep_at().await;
    let mut seen = Vec::new();
    let mut cpu_from = None;
    let give_up = Instant::now() + Duration::from_secs(60 + 30 * u64::from(sweeps));
    while seen.len() < sweeps as usize {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sweep_at().await;
        // A new sweep is a new duration (the status's clock moves on every tick, the duration
        // once per sweep; two sweeps of the same length are missed, which only shortens the
        // sample).
        if now.map(|n| n.0) != last.map(|l| l.0) {
            match cpu_from {
                None => cpu_from = Some(crate::product::process_usage(pid)?.1),
                Some(_) => seen.extend(now.map(|n| n.0)),
            }
            last = now;
        }
        if Instant::now() > give_up {
            bail!("only {} sweeps ended in time", seen.len());
        }
    }
    let cpu = crate::product::process_usage(pid)?.1 - cpu_from.unwrap_or_default();
    Ok((seen, cpu / f64::from(sweeps)))
}

/// A shed, timed from its POST.
struct Shed {
    running: usize,
    /// The last running miner's sleep taken (the emulator's receipt).
    last_sleep: Option<Duration>,
    /// The daemon's status showing none mining.
    confirmed: Option<Duration>,
    /// CPU time (s) from the POST until the poll (every 100 ms) that saw the last sleep
    /// taken: the daemon's, this process's.
    cpu: (f64, f64),
}

/// POST /api/v1/shed, then wait for every running miner to take its sleep, and for the
/// daemon's sweeps to show it.
async fn timed_shed(emulator: &Emulator, daemon: u32) -> Result<Shed> {
    let awake = emulator.awake();
    let running: Vec<u32> = (0..awake.len() as u32)
        .filter(|&i| awake[i as usize])
        .collect();
    let cpu_now = || -> Result<(f64, f64)> {
        Ok((
            crate::product::process_usage(daemon)?.1,
            crate::product::process_usage(std::process::id())?.1,
        ))
    };
    let cpu_from = cpu_now()?;
    eprintln!("scale: shedding {} running miners", running.len());
    let posted = Instant::now();
    let (code, _) = crate::product::post(LISTEN, "/api/v1/shed").await?;
    if code != 200 {
        bail!("POST /api/v1/shed answered {code}");
    }
    let mut last_sleep = None;
    let mut cpu = (f64::NAN, f64::NAN);
    let mut pending: Vec<u32> = running.clone();
    let mut latest = posted;
    while posted.elapsed() < Duration::from_secs(60) && last_sleep.is_none() {
        pending.retain(|&i| match emulator.sleep_received_at(i) {
            Some(t) if t >= posted => {
                latest = latest.max(t);
                false
            }
            _ => true,
        });
        if pending.is_empty() {
            last_sleep = Some(latest - posted);
            let to = cpu_now()?;
            cpu = (to.0 - cpu_from.0, to.1 - cpu_from.1);
        }
        // Each receipt carries its own time: polling less often costs the shed less CPU.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut confirmed = None;
    while posted.elapsed() < Duration::from_secs(90) {
        if status()
            .await
            .is_some_and(|s| s["mining"].as_u64() == Some(0))
        {
            confirmed = Some(posted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Shed {
        running: running.len(),
        last_sleep,
        confirmed,
        cpu,
    })
}

/// A value `key=...` in a line of the daemon's log.
fn log_field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// The daemon's time (ms) to hand its last shed's commands to the drivers, from its log.
fn shed_sent_ms(log: &std::path::Path) -> Result<Option<f64>> {
    let text = std::fs::read_to_string(log)?;
    Ok(text
        .lines()
        .filter(|l| l.contains("shed: commands sent to the fleet"))
        .filter_map(|l| log_field(l, "ms"))
        .next_back())
}

/// (rows, write ms) of every ledger interval in the daemon's log.
fn ledger_intervals(log: &std::path::Path) -> Result<Vec<(u64, f64)>> {
    let text = std::fs::read_to_string(log)?;
    Ok(text
        .lines()
        .filter(|l| l.contains("ledger: interval committed"))
        .filter_map(|l| Some((log_field(l, "rows")? as u64, log_field(l, "write_ms")?)))
        .collect())
}

fn table(m: &Measured, firmware: &str, commands_per_s: f64) -> String {
    let mut sorted = m.sweeps_ms.clone();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let max = sorted.last().copied().unwrap_or(0);
    let secs = |d: Option<Duration>| {
        d.map_or("not within 60 s".into(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        })
    };
    let ledger = if m.ledger.is_empty() {
        "none committed".to_string()
    } else {
        let worst = m.ledger.iter().map(|l| l.1).fold(0.0, f64::max);
        format!(
            "{} intervals of {} rows, slowest write {worst:.0} ms",
            m.ledger.len(),
            m.ledger[0].0
        )
    };
    format!(
        "| miners (S21) | startup (identification) | up and quiet (10 s without a command) | sweep median / max ({} sweeps) | daemon CPU per sweep | shed ({} running, {commands_per_s:.0} commands/s): last sleep taken | shed confirmed by the daemon's sweeps | ledger (one-minute intervals) | daemon peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---|---:|\n| {} on {firmware} | {:.1} s | {:.1} s | {:.2} s / {:.2} s | {:.2} s | {} | {} | {ledger} | {:.0} MB |\n",
        m.sweeps_ms.len(),
        m.running,
        m.miners,
        m.startup.as_secs_f64(),
        m.up.as_secs_f64(),
        median as f64 / 1000.0,
        max as f64 / 1000.0,
        m.cpu_per_sweep_s,
        secs(m.shed_last_sleep),
        secs(m.shed_confirmed),
        m.peak_rss_mb,
    ) + &format!(
        "\nThe shed: the daemon handed its commands to the drivers in {}; CPU time from the POST to the last sleep taken (two cores): the daemon {:.2} s, the emulator (this process) {:.2} s.\n",
        m.shed_sent_ms
            .map_or("(not in the log)".into(), |ms| format!("{ms:.0} ms")),
        m.shed_cpu.0,
        m.shed_cpu.1
    )
}
