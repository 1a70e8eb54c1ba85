//! `hashsink-bench flood`: the endpoint under attack while the plant needs the fleet shed
//! (issue 16's goal). An emulated LuxOS fleet on a runtime of this process, mosquitto as the
//! plant's broker and `hashsink run` in a child process, as in the `signals` benchmark. Once the
//! whole fleet runs, the operator's `POST /api/v1/shed` is timed twice on the same fleet: once
//! quiet, once while this process holds `--idle` idle sockets open to the endpoint (each opened
//! and then left silent), reads `--streams` status streams and publishes `--mqtt-rate` surplus
//! readings a second on the broker. Measured each time: the reply to the POST, and the time
//! from the POST to the last running miner taking its sleep command (its acknowledgement); and
//! whether the daemon's miner sweeps saw any error meanwhile (command failures, faulted or
//! unreachable miners, a sweep later than twice its interval).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hashsink_emulator::Emulator;
use serde_json::Value;

use crate::product::KillOnDrop;
use crate::signals::{fleet_of, start_fleet};

const FIRST_INDEX: u32 = 50_000;
const MQTT_PORT: u16 = 18941;
pub(crate) const LISTEN: &str = "127.0.0.1:18942";
pub(crate) const TELEMETRY_S: u64 = 5;
pub(crate) const SURPLUS_TOPIC: &str = "plant/surplus";

/// The load this process puts on the daemon while the shed is timed.
pub struct Flood {
    pub idle: u32,
    pub streams: u32,
    pub mqtt_rate: u32,
}

/// One timed shed.
pub(crate) struct Shed {
    pub(crate) running: usize,
    reply: Duration,
    code: u16,
    pub(crate) last_sleep: Option<Duration>,
    sweep_errors: Vec<String>,
    /// The most that waited in the daemon's inbound queues at a tick, over the trial.
    max_queued: u64,
    /// Idle sockets the daemon had closed by the end (to make room), of those opened.
    idle_closed: Option<(usize, usize)>,
    streams_alive: Option<(usize, usize)>,
    readings_per_s: u64,
}

/// The daemon's status (None while it does not answer).
pub(crate) async fn status() -> Option<Value> {
    crate::product::status(LISTEN).await
}

pub(crate) async fn post(path: &str) -> Result<(u16, Duration)> {
    crate::product::post(LISTEN, path).await
}

/// Waits (30 s at most) until no miner that takes commands is awake in the emulated fleet.
async fn wait_all_asleep(emulator: &Emulator) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let awake =
            emulator.awake().iter().enumerate().any(|(i, &a)| {
                a && matches!(emulator.fault(i as u32), hashsink_emulator::Fault::None)
            });
        if !awake {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What in the status says a miner sweep went wrong: command failures, faulted or unreachable
/// miners, or a sweep that took longer than the telemetry interval.
fn sweep_errors(s: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(f) = s["command_failures"].as_object().filter(|f| !f.is_empty()) {
        errors.push(format!("command failures {f:?}"));
    }
    for key in ["faulted", "unreachable"] {
        if s[key].as_u64().unwrap_or(0) > 0 {
            errors.push(format!("{key} {}", s[key]));
        }
    }
    let took = s["last_sweep_ms"].as_u64().unwrap_or(0);
    if took > 1000 * TELEMETRY_S {
        errors.push(format!("a sweep took {took} ms"));
    }
    errors
}

/// Reads the status every 0.5 s until `stop`, keeping every sweep error seen, and the largest
/// inbound queue.
fn watch_sweeps(
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(std::collections::BTreeSet<String>, u64)> {
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        let mut queued = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(s) = status().await {
                seen.extend(sweep_errors(&s));
                let q = s["queues"]
                    .as_object()
                    .map_or(0, |q| q.values().filter_map(Value::as_u64).sum());
                queued = queued.max(q);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (seen, queued)
    })
}

/// Times one shed: POST /api/v1/shed, then the last running miner's sleep.
pub(crate) async fn timed_shed(emulator: &Emulator) -> Result<Shed> {
    // A misbehaving miner (the soak's) may never take the command: those are not waited for.
    let awake: Vec<bool> = emulator
        .awake()
        .iter()
        .enumerate()
        .map(|(i, &a)| a && matches!(emulator.fault(i as u32), hashsink_emulator::Fault::None))
        .collect();
    let running = awake.iter().filter(|&&a| a).count();
    let posted = Instant::now();
    let (code, reply) = post("/api/v1/shed").await?;
    let mut last_sleep = None;
    while posted.elapsed() < Duration::from_secs(30) {
        let mut last = None::<Instant>;
        let mut all = true;
        for (i, _) in awake.iter().enumerate().filter(|(_, a)| **a) {
            match emulator.sleep_received_at(i as u32) {
                Some(t) if t >= posted => last = Some(last.map_or(t, |l| l.max(t))),
                _ => {
                    all = false;
                    break;
                }
            }
        }
        if all {
            last_sleep = last.map(|l| l.saturating_duration_since(posted));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Shed {
        running,
        reply,
        code,
        last_sleep,
        sweep_errors: Vec::new(),
        max_queued: 0,
        idle_closed: None,
        streams_alive: None,
        readings_per_s: 0,
    })
}

/// `n` idle sockets to the endpoint, held by a child process (`hashsink-bench hold-idle`): with
/// the emulated fleet's listeners, one process would pass this machine's descriptor limit.
pub(crate) struct IdleSockets {
    child: KillOnDrop,
    opened: usize,
}

impl IdleSockets {
    pub(crate) fn open(n: u32) -> Result<IdleSockets> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["hold-idle", "--to", LISTEN, "--count", &n.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("start hold-idle")?;
        let stdout = child.stdout.take().context("hold-idle's output")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let opened = line
            .trim()
            .strip_prefix("opened ")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("hold-idle said {line:?}"))?;
        child.stdout = None;
        Ok(IdleSockets {
            child: KillOnDrop(child),
            opened,
        })
    }

    /// (closed by the daemon, opened), then the sockets are let go.
    pub(crate) fn close(mut self) -> Result<(usize, usize)> {
        use std::io::Write;
        let out = std::env::temp_dir().join(format!("hold-idle-{}", self.child.0.id()));
        let mut stdin = self.child.0.stdin.take().context("hold-idle's input")?;
        writeln!(stdin, "{}", out.display())?;
        drop(stdin);
        let _ = self.child.0.wait();
        let closed = std::fs::read_to_string(&out)?.trim().parse()?;
        std::fs::remove_file(&out).ok();
        Ok((closed, self.opened))
    }
}

/// The `hold-idle` child: opens `count` sockets to `to`, says how many, and holds them silent
/// until a file name arrives on stdin; writes there how many the server has closed.
pub fn hold_idle(to: &str, count: u32) -> Result<()> {
    use std::io::{BufRead, Read, Write};
    hashsink_clock::raise_open_file_limit(u64::from(count) + 100);
    let sockets: Vec<std::net::TcpStream> = (0..count)
        .filter_map(|_| std::net::TcpStream::connect(to).ok())
        .collect();
    println!("opened {}", sockets.len());
    std::io::stdout().flush()?;
    let mut path = String::new();
    std::io::stdin().lock().read_line(&mut path)?;
    let closed = sockets
        .iter()
        .filter(|s| {
            let mut s: &std::net::TcpStream = s;
            let _ = s.set_nonblocking(true);
            let mut buf = [0u8; 1];
            match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            }
        })
        .count();
    std::fs::write(path.trim(), closed.to_string())?;
    Ok(())
}

/// `n` status streams, each read continuously; each task counts its stream alive while data
/// arrives. Returns the tasks and, per stream, the time of its last chunk (ms since `t0`).
pub(crate) fn open_streams(
    n: u32,
    t0: Instant,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<Vec<AtomicU64>>) {
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let client = reqwest::Client::new();
    let tasks = (0..n as usize)
        .map(|i| {
            let (last, client) = (last.clone(), client.clone());
            tokio::spawn(async move {
                let Ok(mut reply) = client
                    .get(format!("http://{LISTEN}/api/v1/stream"))
                    .send()
                    .await
                else {
                    return;
                };
                while let Ok(Some(_)) = reply.chunk().await {
                    last[i].store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (tasks, last)
}

/// Publishes `rate` surplus readings a second (`watts`, as kW) until `stop`; counts them.
pub(crate) fn publish_readings(
    client: rumqttc::AsyncClient,
    rate: u32,
    watts: f64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    topic: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let per_tick = (rate / 100).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let payload = format!("{}", watts / 1000.0);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..per_tick {
                if client
                    .try_publish(topic, rumqttc::QoS::AtMostOnce, false, payload.clone())
                    .is_ok()
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

/// Writes `site` to `dir` and starts `hashsink run` on it with the API on [`LISTEN`] (and
/// `extra` arguments), its log in `dir`; returns once the endpoint listens.
pub(crate) fn start_daemon(
    dir: &std::path::Path,
    site: &str,
    extra: &[&str],
) -> Result<(KillOnDrop, std::path::PathBuf)> {
    let path = dir.join("site.toml");
    std::fs::write(&path, site)?;
    let log = dir.join("daemon.log");
    let daemon = crate::product::run_daemon(&path, LISTEN, &log, "info", extra)?;
    Ok((daemon, log))
}

pub async fn run(miners: u32, flood: Flood, trials: u32) -> Result<String> {
    if miners == 0 || trials == 0 {
        bail!("--miners and --trials must be at least 1");
    }
    if !crate::product::mosquitto_installed() {
        bail!("mosquitto is not installed (apt-get install mosquitto): the plant's broker");
    }
    hashsink_clock::raise_open_file_limit(u64::from(miners) * 3 + u64::from(flood.idle) + 10_000);
    let dir = std::env::temp_dir().join(format!("hashsink-bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let emulator = start_fleet(miners, FIRST_INDEX)?;
    let _broker = crate::product::mosquitto(MQTT_PORT)?;
    let mut opts = rumqttc::MqttOptions::new("bench-plant", "127.0.0.1", MQTT_PORT);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10_000);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let (nameplate, addresses) = fleet_of(&emulator, miners)?;
    let surplus = nameplate * 1.05;
    // The plant's meter: ten readings a second, always.
    let stop_meter = Arc::new(AtomicBool::new(false));
    let meter = publish_readings(
        client.clone(),
        10,
        surplus,
        stop_meter.clone(),
        Arc::new(AtomicU64::new(0)),
        SURPLUS_TOPIC,
    );
    let site = format!(
        "[surplus]\nsource = \"signals\"\n\n[[signal]]\nname = \"plant broker\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{MQTT_PORT}\"\ntopic = \"plant/surplus\"\nunit = \"kw\"\nmax_mw = {}\nmax_age_s = 10\n\n[controller]\nfailsafe_load_w = 0\nmin_on_s = 20\nmin_off_s = 20\n\n[io]\ntelemetry_interval_s = {TELEMETRY_S}\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [{addresses}]\n",
        nameplate * 1.5 / 1e6,
    );
    let (daemon, _log) = start_daemon(&dir, &site, &["--no-ledger"])?;
    let mut rows = Vec::new();
    // Quiet and flooded in turn, so that both meet the same fleet and the same moments.
    for trial in 0..trials * 2 {
        let flooded = trial % 2 == 1;
        let what = if flooded { "flooded" } else { "quiet" };
        crate::product::wait_settled(
            LISTEN,
            &emulator,
            miners,
            |_| true,
            what,
            Duration::from_secs(400),
        )
        .await?;
        let watching = Arc::new(AtomicBool::new(false));
        let watcher = watch_sweeps(watching.clone());
        let t0 = Instant::now();
        let (idle, streams, sender) = if flooded {
            let idle = Some(IdleSockets::open(flood.idle)?);
            let (tasks, last) = open_streams(flood.streams, t0);
            let stop = Arc::new(AtomicBool::new(false));
            let sent = Arc::new(AtomicU64::new(0));
            let since = Instant::now();
            let task = publish_readings(
                client.clone(),
                flood.mqtt_rate,
                surplus,
                stop.clone(),
                sent.clone(),
                SURPLUS_TOPIC,
            );
            (idle, Some((tasks, last)), Some((task, stop, sent, since)))
        } else {
            (None, None, None)
        };
        // The same 5 s before the shed either way (the flood settles in).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut shed = timed_shed(&emulator).await?;
        if let Some((task, stop, sent, since)) = sender {
            stop.store(true, Ordering::Relaxed);
            let _ = task.await;
            shed.readings_per_s =
                (sent.load(Ordering::Relaxed) as f64 / since.elapsed().as_secs_f64()) as u64;
        }
        if let Some(idle) = idle {
            shed.idle_closed = Some(idle.close()?);
        }
        if let Some((tasks, last)) = streams {
            let now = t0.elapsed().as_millis() as u64;
            let alive = last
                .iter()
                .filter(|l| now.saturating_sub(l.load(Ordering::Relaxed)) < 3_000)
                .count();
            shed.streams_alive = Some((alive, tasks.len()));
            tasks.iter().for_each(tokio::task::JoinHandle::abort);
        }
        watching.store(true, Ordering::Relaxed);
        let (errors, queued) = watcher.await?;
        shed.sweep_errors = errors.into_iter().collect();
        shed.max_queued = queued;
        rows.push((what, shed));
        // The fleet down before the resume, so that the next trial waits for it to come back
        // up rather than meeting miners still ramping down from this shed.
        wait_all_asleep(&emulator).await;
        let (code, _) = post("/api/v1/resume").await?;
        if code != 200 {
            bail!("POST /api/v1/resume answered {code}");
        }
    }
    stop_meter.store(true, Ordering::Relaxed);
    let _ = meter.await;
    pump.abort();
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
    Ok(table(miners, &flood, &rows))
}

fn table(miners: u32, flood: &Flood, rows: &[(&str, Shed)]) -> String {
    let mut out = format!(
        "{miners} emulated S19 XP (LuxOS), daemon `hashsink run` in a child process; flood: {} idle sockets, {} status streams, {} MQTT readings/s asked\n\n| endpoint | running at shed | POST /api/v1/shed answered | POST to last miner's sleep (goal < 1.5 s) | miner sweep errors | most queued at a tick | idle sockets closed by the daemon | streams alive | MQTT readings/s sent |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n",
        flood.idle, flood.streams, flood.mqtt_rate
    );
    for (what, s) in rows {
        out += &format!(
            "| {what} | {} | {} in {:.0} ms | {} | {} | {} | {} | {} | {} |\n",
            s.running,
            s.code,
            s.reply.as_secs_f64() * 1000.0,
            s.last_sleep
                .map_or("not reached in 30 s".into(), |d| format!(
                    "{:.3} s",
                    d.as_secs_f64()
                )),
            if s.sweep_errors.is_empty() {
                "none".to_string()
            } else {
                s.sweep_errors.join("; ")
            },
            s.max_queued,
            s.idle_closed
                .map_or("-".into(), |(c, n)| format!("{c} of {n}")),
            s.streams_alive
                .map_or("-".into(), |(a, n)| format!("{a} of {n}")),
            if s.readings_per_s > 0 {
                s.readings_per_s.to_string()
            } else {
                "-".into()
            },
        );
    }
    out
}
