//! `hashsink-bench dashboard`: how long a change in the fleet takes to reach the dashboard.
//! This process hosts an emulated LuxOS fleet (on a runtime of its own) and plays the plant
//! (it POSTs twice the fleet's nameplate as the surplus every second, so that the fleet settles at
//! its top level); the daemon is `hashsink run`
//! in a child process with its ledger on and the fleet read every second, as a site would run
//! it for a live screen. Once every miner mines, the benchmark reads `/api/v1/stream` (the
//! bytes the dashboard's page reads) and measures:
//! - fleet change to dashboard: from a settled fleet, 1 % of the miners are rebooted in the
//!   emulator; from that moment to the first streamed status whose fleet load has fallen by a
//!   third of their draw, and to the first that counts them all booting. This is the whole path:
//!   the next telemetry sweep, the control tick, the stream.
//! - daemon to dashboard: for every streamed status, its arrival less the daemon's time stamp
//!   (the daemon runs on the wall clock): the stream's own share.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};

use crate::product::KillOnDrop;
use crate::signals::{fleet_of, start_fleet};

const API: &str = "127.0.0.1:18934";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The streamed statuses, each with when it arrived.
async fn read_stream(tx: tokio::sync::mpsc::UnboundedSender<(Instant, i64, serde_json::Value)>) {
    let Ok(mut reply) = reqwest::get(format!("http://{API}/api/v1/stream")).await else {
        return;
    };
    let mut buffer = String::new();
    while let Ok(Some(chunk)) = reply.chunk().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(cut) = buffer.find("\n\n") {
            let block: String = buffer.drain(..cut + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            if let Ok(v) = serde_json::from_str(&data) {
                if tx.send((Instant::now(), epoch_ms(), v)).is_err() {
                    return;
                }
            }
        }
    }
}

struct Row {
    miners: u32,
    sweep_ms: u64,
    /// From the change to the first streamed status whose fleet load shows it.
    load_ms: Vec<f64>,
    /// From the change to the first streamed status that counts every rebooted miner booting.
    state_ms: Vec<f64>,
    /// Changes not shown within 15 s, by load and by states.
    missed_load: usize,
    missed_states: usize,
    stream_ms: Vec<f64>,
}

/// Streamed statuses: when each arrived (wall), its arrival in ms since the epoch, the status.
type Statuses = tokio::sync::mpsc::UnboundedReceiver<(Instant, i64, serde_json::Value)>;

/// The next streamed status, or why there is none.
async fn next_status(rx: &mut Statuses) -> Result<(Instant, i64, serde_json::Value)> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .map_err(|_| anyhow!("no status streamed for 30 s"))?
        .ok_or_else(|| anyhow!("the stream ended"))
}

/// How late a status reached the stream's reader: its arrival less its own time, ms.
fn stream_delay(arrived_ms: i64, s: &serde_json::Value) -> f64 {
    (arrived_ms - s["now_ms"].as_i64().unwrap_or(arrived_ms)) as f64
}

/// `hashsink run` on the emulated fleet, its API at `API`, its log in `dir`.
fn start_daemon(miners: u32, addresses: &str, dir: &std::path::Path) -> Result<KillOnDrop> {
    let site = format!(
        "[site]\nname = \"bench\"\n\n[surplus]\nsource = \"http\"\n\n[io]\ntelemetry_interval_s = 1\n\n[ledger]\nurl = \"ledger-{miners}.db\"\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [{}]\n",
        addresses
    );
    let path = dir.join(format!("site-{miners}.toml"));
    std::fs::write(&path, site)?;
    let log = dir.join(format!("daemon-{miners}.log"));
    crate::product::run_daemon(&path, API, &log, "warn", &[])
}

/// Waits for every miner mining (the daemon wakes the fleet from sleep); the last status.
async fn all_mining(rx: &mut Statuses, miners: u32) -> Result<serde_json::Value> {
    let t0 = Instant::now();
    loop {
        let (_, _, s) = next_status(rx).await?;
        let mining = s["mining"].as_u64().unwrap_or(0);
        if mining == u64::from(miners) {
            return Ok(s);
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("the fleet did not come up in 300 s: {mining} of {miners} mining");
        }
    }
}

/// Each change starts from a settled fleet: every miner mining, none booting (the last change's
/// miners have booted again), the load steady within 0.02 % over 4 statuses (a fleet still
/// ramping up would hide the drop). Returns the settled load, with the queue drained so that
/// the next status read is a fresh one.
async fn settled_load(rx: &mut Statuses, miners: u32, stream_ms: &mut Vec<f64>) -> Result<f64> {
    let settle = Instant::now();
    let mut steady = 0;
    let mut previous = f64::NAN;
    loop {
        let (_, arrived_ms, s) = next_status(rx).await?;
        stream_ms.push(stream_delay(arrived_ms, &s));
        let fleet = s["fleet_w"].as_f64().unwrap_or(0.0);
        let settled = s["mining"].as_u64() == Some(u64::from(miners))
            && s["booting"] == 0
            && (fleet - previous).abs() <= fleet * 0.0002;
        previous = fleet;
        steady = if settled { steady + 1 } else { 0 };
        if steady >= 4 {
            let mut fleet = fleet;
            while let Ok((_, _, s)) = rx.try_recv() {
                fleet = s["fleet_w"].as_f64().unwrap_or(fleet);
            }
            return Ok(fleet);
        }
        if settle.elapsed() > Duration::from_secs(300) {
            bail!("the fleet did not settle in 300 s (every miner mining at a steady load)");
        }
    }
}

/// From a change to the first status whose load shows it (`visible_drop` gone) and the first
/// that counts `rebooted` miners booting, ms; none if not within 15 s.
async fn watch_change(
    rx: &mut Statuses,
    changed: Instant,
    fleet_before: f64,
    visible_drop: f64,
    rebooted: u32,
    stream_ms: &mut Vec<f64>,
) -> (Option<f64>, Option<f64>) {
    let (mut load_seen, mut state_seen) = (None, None);
    while changed.elapsed() < Duration::from_secs(15) && state_seen.is_none() {
        let Ok(Some((arrived, arrived_ms, s))) =
            tokio::time::timeout(Duration::from_secs(15), rx.recv()).await
        else {
            break;
        };
        stream_ms.push(stream_delay(arrived_ms, &s));
        let since = arrived.duration_since(changed).as_secs_f64() * 1000.0;
        if load_seen.is_none()
            && s["fleet_w"].as_f64().unwrap_or(f64::MAX) <= fleet_before - visible_drop
        {
            load_seen = Some(since);
        }
        if s["booting"].as_u64().unwrap_or(0) >= u64::from(rebooted) {
            state_seen = Some(since);
        }
    }
    (load_seen, state_seen)
}

async fn one_size(
    miners: u32,
    first_index: u32,
    trials: u32,
    dir: &std::path::Path,
) -> Result<Row> {
    let emulator = start_fleet(miners, first_index)?;
    let (nameplate, addresses) = fleet_of(&emulator, miners)?;
    let _daemon = start_daemon(miners, &addresses, dir)?;
    // The plant: a surplus above the nameplate, every second.
    let plant = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            let _ = client
                .post(format!("http://{API}/surplus"))
                .header("Content-Type", "application/json")
                .body(format!("{{\"available_w\": {}}}", nameplate * 2.0))
                .send()
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(read_stream(tx));
    let last = all_mining(&mut rx, miners).await?;
    let per_trial = (miners / 100).max(1);
    let (mut load_ms, mut state_ms, mut stream_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut missed_load, mut missed_states) = (0, 0);
    let mut next_miner = 0u32;
    let mut pause: u64 = 0x5eed;
    for _ in 0..trials {
        if next_miner + per_trial > miners {
            break;
        }
        let mut fleet_before = settled_load(&mut rx, miners, &mut stream_ms).await?;
        // A change comes at any moment, not just after a status: a pseudo-random pause first.
        pause = pause
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis((pause >> 33) % 1500)).await;
        while let Ok((_, _, s)) = rx.try_recv() {
            fleet_before = s["fleet_w"].as_f64().unwrap_or(fleet_before);
        }
        // A third of the rebooted miners' draw gone is a change the chart and KPIs show.
        let visible_drop = fleet_before / f64::from(miners) * f64::from(per_trial) / 3.0;
        let changed = Instant::now();
        for i in next_miner..next_miner + per_trial {
            emulator.reboot(i);
        }
        next_miner += per_trial;
        let (load_seen, state_seen) = watch_change(
            &mut rx,
            changed,
            fleet_before,
            visible_drop,
            per_trial,
            &mut stream_ms,
        )
        .await;
        match load_seen {
            Some(l) => load_ms.push(l),
            None => missed_load += 1,
        }
        match state_seen {
            Some(st) => state_ms.push(st),
            None => missed_states += 1,
        }
    }
    plant.abort();
    reader.abort();
    load_ms.sort_by(f64::total_cmp);
    state_ms.sort_by(f64::total_cmp);
    stream_ms.sort_by(f64::total_cmp);
    Ok(Row {
        miners,
        sweep_ms: last["last_sweep_ms"].as_u64().unwrap_or(0),
        load_ms,
        state_ms,
        missed_load,
        missed_states,
        stream_ms,
    })
}

pub async fn run(sizes: &[u32], trials: u32) -> Result<String> {
    if sizes.is_empty() || sizes.contains(&0) || trials == 0 {
        bail!("--miners needs sizes of at least 1 and --trials at least 1");
    }
    let dir = std::env::temp_dir().join(format!("hashsink-bench-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    // Each size on addresses of its own (an emulator keeps its sockets until the process ends).
    let mut first_index = 60_000;
    for &miners in sizes {
        eprintln!("{miners} miners: starting the fleet and the daemon ...");
        rows.push(one_size(miners, first_index, trials, &dir).await?);
        first_index += miners;
    }
    std::fs::remove_dir_all(&dir).ok();
    let mut out = String::from(
        "Dashboard update latency (goal: under 2 s from a change in the fleet). The fleet is read every 1 s; a change\n\
         is 1 % of the miners rebooted in the emulator, from a settled fleet; ms from the change to the first status\n\
         on /api/v1/stream (what the page draws) that shows it.\n\n",
    );
    out += &format!(
        "{:>7} {:>9} {:>7} {:>7} {:>12} {:>12} {:>12} {:>13} {:>13} {:>13} {:>13}\n",
        "miners",
        "sweep ms",
        "trials",
        "missed",
        "load p50",
        "load p95",
        "load max",
        "states p50",
        "states p95",
        "stream p50",
        "stream p95"
    );
    for r in &rows {
        out += &format!(
            "{:>7} {:>9} {:>7} {:>7} {:>12.0} {:>12.0} {:>12.0} {:>13.0} {:>13.0} {:>13.0} {:>13.0}\n",
            r.miners,
            r.sweep_ms,
            r.load_ms.len() + r.missed_load,
            format!("{}/{}", r.missed_load, r.missed_states),
            percentile(&r.load_ms, 0.5),
            percentile(&r.load_ms, 0.95),
            r.load_ms.last().copied().unwrap_or(f64::NAN),
            percentile(&r.state_ms, 0.5),
            percentile(&r.state_ms, 0.95),
            percentile(&r.stream_ms, 0.5),
            percentile(&r.stream_ms, 0.95),
        );
    }
    out += "\nmissed: changes not shown within 15 s (load/states).\n\
            load: the fleet load streamed has fallen by a third of the rebooted miners' draw (the chart and KPIs show it);\n\
            states: every rebooted miner counted booting (the emulated firmware reports hashrate while its power ramps\n\
            down, then booting); stream: a status's arrival less the daemon's stamp on it (the stream's own share).\n";
    Ok(out)
}
