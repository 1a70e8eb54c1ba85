//! `hashsink bench-dashboard`: how long a change in the fleet takes to reach the dashboard.
//! This process hosts an emulated LuxOS fleet (on a runtime of its own) and plays the plant
//! (it POSTs a surplus above the fleet's nameplate every second); the daemon is `hashsink run`
//! in a child process with its ledger on and the fleet read every second, as a site would run
//! it for a live screen. Once every miner mines, the benchmark reads `/api/v1/stream` (the
//! bytes the dashboard's page reads) and measures:
//! - fleet change to dashboard: 1 % of the miners are rebooted in the emulator (their draw
//!   drops as they boot); from that moment to the first streamed status that counts them
//!   booting. This is the whole path: the next telemetry sweep, the control tick, the stream.
//! - daemon to dashboard: for every streamed status, its arrival less the daemon's time stamp
//!   (the daemon runs on the wall clock): the stream's own share.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};

use crate::bench_signals::{KillOnDrop, fleet_of, start_fleet, wait_port};

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
    change_ms: Vec<f64>,
    missed: usize,
    stream_ms: Vec<f64>,
}

async fn one_size(
    miners: u32,
    first_index: u32,
    trials: u32,
    dir: &std::path::Path,
) -> Result<Row> {
    let emulator = start_fleet(miners, first_index)?;
    let (nameplate, addresses) = fleet_of(&emulator, miners)?;
    let site = format!(
        "[site]\nname = \"bench\"\n\n[surplus]\nsource = \"http\"\n\n[io]\ntelemetry_interval_s = 1\n\n[ledger]\nurl = \"ledger-{miners}.db\"\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [{}]\n",
        addresses
    );
    let path = dir.join(format!("site-{miners}.toml"));
    std::fs::write(&path, site)?;
    let _daemon = KillOnDrop(
        Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(&path)
            .args(["--listen", API, "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                dir.join(format!("daemon-{miners}.log")),
            )?)
            .spawn()
            .context("start hashsink run")?,
    );
    wait_port(18934, "the daemon's API")?;
    // The plant: a surplus above the nameplate, every second.
    let plant = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            let _ = client
                .post(format!("http://{API}/surplus"))
                .body(format!("{{\"available_w\": {}}}", nameplate * 1.1))
                .send()
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(read_stream(tx));
    // Ready: every miner mining (the daemon wakes the fleet from sleep).
    let t0 = Instant::now();
    let mut last;
    loop {
        let (_, _, s) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .map_err(|_| anyhow!("no status streamed for 30 s"))?
            .ok_or_else(|| anyhow!("the stream ended"))?;
        let mining = s["mining"].as_u64().unwrap_or(0);
        last = s;
        if mining == u64::from(miners) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("the fleet did not come up in 300 s: {mining} of {miners} mining");
        }
    }
    let per_trial = (miners / 100).max(1);
    let mut change_ms = Vec::new();
    let mut stream_ms = Vec::new();
    let mut missed = 0;
    let mut next_miner = 0u32;
    for _ in 0..trials {
        // Let earlier statuses drain; note the daemon's count of booting miners.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        while let Ok((_, arrived_ms, s)) = rx.try_recv() {
            stream_ms.push((arrived_ms - s["now_ms"].as_i64().unwrap_or(arrived_ms)) as f64);
            last = s;
        }
        let booting_before = last["booting"].as_u64().unwrap_or(0);
        if next_miner + per_trial > miners {
            break;
        }
        let changed = Instant::now();
        for i in next_miner..next_miner + per_trial {
            emulator.reboot(i);
        }
        next_miner += per_trial;
        let mut seen = None;
        while changed.elapsed() < Duration::from_secs(10) {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some((arrived, arrived_ms, s))) => {
                    stream_ms
                        .push((arrived_ms - s["now_ms"].as_i64().unwrap_or(arrived_ms)) as f64);
                    let booting = s["booting"].as_u64().unwrap_or(0);
                    last = s;
                    if booting >= booting_before + u64::from(per_trial) {
                        seen = Some(arrived.duration_since(changed));
                        break;
                    }
                }
                _ => break,
            }
        }
        match seen {
            Some(d) => change_ms.push(d.as_secs_f64() * 1000.0),
            None => missed += 1,
        }
    }
    plant.abort();
    reader.abort();
    change_ms.sort_by(f64::total_cmp);
    stream_ms.sort_by(f64::total_cmp);
    Ok(Row {
        miners,
        sweep_ms: last["last_sweep_ms"].as_u64().unwrap_or(0),
        change_ms,
        missed,
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
        "Dashboard update latency (goal: under 2 s from a change in the fleet). The fleet is read every 1 s;\n\
         a change is 1 % of the miners rebooted in the emulator; shown = the first status on /api/v1/stream counting them.\n\n",
    );
    out += &format!(
        "{:>7} {:>9} {:>7} {:>14} {:>14} {:>14} {:>8} {:>16} {:>16}\n",
        "miners",
        "sweep ms",
        "trials",
        "change p50 ms",
        "change p95 ms",
        "change max ms",
        "missed",
        "stream p50 ms",
        "stream p95 ms"
    );
    for r in &rows {
        out += &format!(
            "{:>7} {:>9} {:>7} {:>14.0} {:>14.0} {:>14.0} {:>8} {:>16.0} {:>16.0}\n",
            r.miners,
            r.sweep_ms,
            r.change_ms.len() + r.missed,
            percentile(&r.change_ms, 0.5),
            percentile(&r.change_ms, 0.95),
            r.change_ms.last().copied().unwrap_or(f64::NAN),
            r.missed,
            percentile(&r.stream_ms, 0.5),
            percentile(&r.stream_ms, 0.95),
        );
    }
    out += "\nchange: from the reboot in the emulator to the streamed status (sweep + tick + stream). stream: a status's arrival\n\
            less the daemon's stamp on it. The page redraws on arrival (requestAnimationFrame); the browser test measures\n\
            a Shed press to the page showing it.\n";
    Ok(out)
}
