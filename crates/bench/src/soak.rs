//! `hashsink-bench soak`: the daemon over a long run with everything that goes wrong at a site
//! (issue 16). An emulated LuxOS fleet with 5 % of its miners misbehaving (hanging, answering
//! garbage, slow, ignoring commands), mosquitto as the plant's broker, the ledger on PostgreSQL
//! (Debian's, started by `.ci/postgres.sh`) or, without it, SQLite, and `hashsink run` in a child
//! process. Each minute: the broker is killed for 15 s every third minute (a flapping source),
//! PostgreSQL is restarted every tenth, and for 30 s this process opens idle sockets, reads
//! status streams and floods the broker with readings, sheds the fleet through the API in the
//! middle of it (timed to the last running miner's sleep), and resumes. At the end of each
//! minute the daemon's resident memory, open descriptors, threads, runtime tasks and inbound
//! queues are sampled: flat is the goal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hashsink_emulator::Fault;

use crate::flood;
use crate::product::KillOnDrop;
use crate::signals::{fleet_of, start_fleet};

const FIRST_INDEX: u32 = 50_000;
const MQTT_PORT: u16 = 18943;
const PG_PORT: u16 = 55439;

/// One minute's sample.
struct Sample {
    minute: u32,
    rss_mib: f64,
    fds: usize,
    threads: usize,
    tasks: u64,
    queued: u64,
    shed: Option<Duration>,
    events: String,
}

/// The daemon's resident memory (MiB), open descriptors and threads, from /proc.
fn process_sample(pid: u32) -> (f64, usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (field("VmRSS:") / 1024.0, fds, field("Threads:") as usize)
}

fn broker() -> Result<KillOnDrop> {
    crate::product::mosquitto(MQTT_PORT)
}

/// A throwaway PostgreSQL through `.ci/postgres.sh`: (data folder, URL), or None without it.
fn postgres() -> Option<(String, String)> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/postgres.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(PG_PORT.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (data, url) = text.trim().split_once(' ')?;
    out.status
        .success()
        .then(|| (data.to_string(), url.to_string()))
}

fn pg_ctl(data: &str, action: &str) -> bool {
    let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).max())
    else {
        return false;
    };
    std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("bin/pg_ctl"))
        .args(["-D", data, "-m", "immediate", "-w", action])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub async fn run(miners: u32, minutes: u32, load: flood::Flood) -> Result<String> {
    if miners < 20 || minutes == 0 {
        bail!("--miners must be at least 20 and --minutes at least 1");
    }
    hashsink_clock::raise_open_file_limit(u64::from(miners) * 3 + u64::from(load.idle) + 10_000);
    let dir = std::env::temp_dir().join(format!("hashsink-bench-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let emulator = start_fleet(miners, FIRST_INDEX)?;
    // 5 % misbehave, spread over the fleet.
    let faults = [
        Fault::Hang,
        Fault::Garbage,
        Fault::Slow(Duration::from_millis(300)),
        Fault::IgnoresCommands,
    ];
    let mut misbehaving = 0;
    for i in (0..miners).step_by(20) {
        emulator.set_fault(i, faults[(i / 20) as usize % faults.len()]);
        misbehaving += 1;
    }
    let mut broker_proc = Some(broker()?);
    let pg = postgres();
    let ledger_url = match &pg {
        Some((_, url)) => url.clone(),
        None => dir.join("ledger.db").display().to_string(),
    };
    let mut opts = rumqttc::MqttOptions::new("bench-plant", "127.0.0.1", MQTT_PORT);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10_000);
    let pump = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let (nameplate, addresses) = fleet_of(&emulator, miners)?;
    let surplus = nameplate * 1.05;
    let stop_meter = Arc::new(AtomicBool::new(false));
    let meter = flood::publish_readings(
        client.clone(),
        10,
        surplus,
        stop_meter.clone(),
        Arc::new(AtomicU64::new(0)),
        flood::SURPLUS_TOPIC,
    );
    let site = format!(
        "[surplus]\nsource = \"signals\"\n\n[[signal]]\nname = \"plant broker\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{MQTT_PORT}\"\ntopic = \"plant/surplus\"\nunit = \"kw\"\nmax_mw = {}\nmax_age_s = 10\n\n[controller]\nfailsafe_load_w = 0\nmin_on_s = 10\nmin_off_s = 10\n\n[io]\ntelemetry_interval_s = {}\n\n[ledger]\nurl = \"{ledger_url}\"\ninterval_s = 60\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [{addresses}]\n",
        nameplate * 1.5 / 1e6,
        flood::TELEMETRY_S,
    );
    let (daemon, log) = flood::start_daemon(&dir, &site, &[])?;
    let pid = daemon.0.id();
    let started = Instant::now();
    let mut samples = Vec::new();
    let bar = indicatif::ProgressBar::new(u64::from(minutes));
    for minute in 1..=minutes {
        let minute_start = Instant::now();
        let mut events = Vec::new();
        if minute % 3 == 0 {
            broker_proc = None;
            events.push("broker down 15 s");
        }
        if minute % 10 == 5
            && let Some((data, _)) = &pg
        {
            events.push(if pg_ctl(data, "restart") {
                "PostgreSQL restarted"
            } else {
                "PostgreSQL restart failed"
            });
        }
        // 30 s of flood, with the operator's shed 20 s in.
        let t0 = Instant::now();
        let idle = flood::IdleSockets::open(load.idle)?;
        let (streams, _) = flood::open_streams(load.streams, t0);
        let stop = Arc::new(AtomicBool::new(false));
        let readings = flood::publish_readings(
            client.clone(),
            load.mqtt_rate,
            surplus,
            stop.clone(),
            Arc::new(AtomicU64::new(0)),
            flood::SURPLUS_TOPIC,
        );
        tokio::time::sleep(Duration::from_secs(15)).await;
        if broker_proc.is_none() {
            broker_proc = Some(broker()?);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let shed = match flood::timed_shed(&emulator).await {
            Ok(s) if s.running > 0 => s.last_sleep,
            _ => {
                events.push("no miner running at the shed");
                None
            }
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.store(true, Ordering::Relaxed);
        let _ = readings.await;
        streams.iter().for_each(tokio::task::JoinHandle::abort);
        let _ = idle.close();
        let _ = flood::post("/api/v1/resume").await;
        // The rest of the minute quiet, then the sample.
        tokio::time::sleep(Duration::from_secs(60).saturating_sub(minute_start.elapsed())).await;
        let (rss_mib, fds, threads) = process_sample(pid);
        let status = flood::status().await.unwrap_or_default();
        let queued = status["queues"]
            .as_object()
            .map_or(0, |q| q.values().filter_map(|v| v.as_u64()).sum());
        samples.push(Sample {
            minute,
            rss_mib,
            fds,
            threads,
            tasks: status["tasks"].as_u64().unwrap_or(0),
            queued,
            shed,
            events: events.join(", "),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    stop_meter.store(true, Ordering::Relaxed);
    let _ = meter.await;
    pump.abort();
    drop(daemon);
    drop(broker_proc);
    if let Some((data, _)) = &pg {
        pg_ctl(data, "stop");
        let _ = std::fs::remove_dir_all(data);
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let panics = log_text.matches("panicked").count();
    std::fs::remove_dir_all(&dir).ok();
    Ok(table(
        miners,
        misbehaving,
        &load,
        pg.is_some(),
        started.elapsed(),
        &samples,
        panics,
    ))
}

fn table(
    miners: u32,
    misbehaving: u32,
    load: &flood::Flood,
    postgres: bool,
    took: Duration,
    samples: &[Sample],
    panics: usize,
) -> String {
    let mut out = format!(
        "{miners} emulated S19 XP (LuxOS), {misbehaving} misbehaving; ledger on {}; each minute 30 s of {} idle sockets, {} streams, {} MQTT readings/s and a shed; {:.0} min in all\n\n| minute | RSS MiB | descriptors | threads | tasks | queued | shed to last sleep | events |\n|---:|---:|---:|---:|---:|---:|---:|---|\n",
        if postgres {
            "PostgreSQL (restarted every 10th minute)"
        } else {
            "SQLite (no PostgreSQL here: no restart)"
        },
        load.idle,
        load.streams,
        load.mqtt_rate,
        took.as_secs_f64() / 60.0
    );
    for s in samples {
        out += &format!(
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} |\n",
            s.minute,
            s.rss_mib,
            s.fds,
            s.threads,
            s.tasks,
            s.queued,
            s.shed.map_or("not reached".into(), |d| format!(
                "{:.3} s",
                d.as_secs_f64()
            )),
            s.events
        );
    }
    // Flat: after a warm-up of a third of the run, the last sample against the first.
    let warm = samples.len() / 3;
    if let (Some(first), Some(last)) = (samples.get(warm), samples.last())
        && samples.len() >= 3
    {
        let change = |a: f64, b: f64| if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 };
        out += &format!(
            "\nafter the warm-up (minute {} to {}): RSS {:+.1} %, descriptors {:+.1} %, tasks {:+.1} % (goal: within 5 %)\n",
            first.minute,
            last.minute,
            change(first.rss_mib, last.rss_mib),
            change(first.fds as f64, last.fds as f64),
            change(first.tasks as f64, last.tasks as f64),
        );
    }
    let sheds: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.shed.map(|d| d.as_secs_f64()))
        .collect();
    if !sheds.is_empty() {
        out += &format!(
            "sheds under flood: {} of {}, slowest {:.3} s\n",
            sheds.len(),
            samples.len(),
            sheds.iter().copied().fold(0.0, f64::max)
        );
    }
    out += &format!("panics in the daemon's log: {panics}\n");
    out
}
