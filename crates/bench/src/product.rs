//! The product binary that the process benchmarks drive (the daemon, the emulator): `hashsink`,
//! built beside this one, so that what is measured is what ships; and the processes around it
//! (mosquitto, the daemon's status, waiting for a fleet to settle), started and stopped one way
//! for every benchmark.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};

/// The `hashsink` binary of this build profile. Run through cargo (`cargo hashsink-bench`), it is
/// built first (a no-op when it is up to date); otherwise it must be there already.
pub fn hashsink() -> Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(locate).clone().map_err(|e| anyhow!(e))
}

fn locate() -> Result<PathBuf, String> {
    let here = std::env::current_exe().map_err(|e| format!("where am I: {e}"))?;
    let exe = here.with_file_name("hashsink");
    let release = !cfg!(debug_assertions);
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "hashsink", "--bin", "hashsink"]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .map_err(|e| format!("cargo build -p hashsink: {e}"))?;
        if !status.success() {
            return Err("cargo build -p hashsink failed (see above)".into());
        }
    }
    if exe.is_file() {
        Ok(exe)
    } else {
        let flag = if release { " --release" } else { "" };
        Err(format!(
            "{} is missing: build it with `cargo build{flag} -p hashsink`",
            exe.display()
        ))
    }
}

/// Starts `hashsink emulate ARGS` in a process of its own and waits until its miners listen.
pub fn emulate(args: &[&str]) -> Result<std::process::Child> {
    use std::io::{BufRead, BufReader};
    let mut emulator = Command::new(hashsink()?)
        .arg("emulate")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow!("start the emulator: {e}"))?;
    let stdout = emulator
        .stdout
        .take()
        .ok_or_else(|| anyhow!("the emulator's output"))?;
    for line in BufReader::new(stdout).lines() {
        if line?.contains("Ctrl-C") {
            return Ok(emulator);
        }
    }
    Err(anyhow!("the emulator did not start"))
}

/// An emulated fleet of `mix` (`MODEL:COUNT:FIRMWARE,...`) on a runtime of its own (two
/// workers) in this process, every miner asleep (as the emulator starts them).
pub fn start_emulator(
    mix: &str,
    listen: hashsink_emulator::Listen,
) -> Result<std::sync::Arc<hashsink_emulator::Emulator>> {
    start_emulator_at(mix, listen, hashsink_clock::ScaledClock::wall())
}

/// [`start_emulator`] on `clock` (one faster than the wall makes boots and ramps shorter).
pub fn start_emulator_at(
    mix: &str,
    listen: hashsink_emulator::Listen,
    clock: hashsink_clock::ScaledClock,
) -> Result<std::sync::Arc<hashsink_emulator::Emulator>> {
    use hashsink_core::{Catalogue, FleetConfig};
    let fleet = std::sync::Arc::new(FleetConfig::build_from_shorthand(
        mix,
        &Catalogue::bundled(),
    )?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(anyhow!("emulator runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            match hashsink_emulator::Emulator::start(fleet, clock, listen).await {
                Ok(e) => {
                    let e = std::sync::Arc::new(e);
                    let _ = tx.send(Ok(e.clone()));
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(anyhow!("emulator: {e}")));
                }
            }
        });
    });
    rx.recv().map_err(|_| anyhow!("the emulator thread died"))?
}

/// A process's peak resident memory (MB) and the CPU time it has used (user + system, s), from
/// /proc.
pub fn process_usage(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM for process {pid}"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|t| t.parse::<f64>().ok());
    let (user, system) = ticks(11)
        .zip(ticks(12))
        .ok_or_else(|| anyhow!("no CPU times for process {pid}"))?;
    // Clock ticks of 1/100 s (USER_HZ on Linux).
    Ok((peak_kb / 1024.0, (user + system) / 100.0))
}

/// A child process that is killed (and reaped) when this goes out of scope, so that a failed
/// benchmark leaves no daemon, broker or emulator behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (20 s at most) until something listens on 127.0.0.1:`port`.
pub fn wait_port(port: u16, what: &str) -> Result<()> {
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > std::time::Duration::from_secs(20) {
            return Err(anyhow!("{what} did not start on port {port}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// Whether mosquitto (the plant's broker in the signal benchmarks) is installed.
pub fn mosquitto_installed() -> bool {
    Command::new("mosquitto")
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// mosquitto on 127.0.0.1:`port`, listening when this returns.
pub fn mosquitto(port: u16) -> Result<KillOnDrop> {
    let child = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow!("start mosquitto ({e}): apt-get install mosquitto"))?;
    let broker = KillOnDrop(child);
    wait_port(port, "mosquitto")?;
    Ok(broker)
}

/// `hashsink run --config SITE --listen LISTEN --log LEVEL EXTRA...` in a process of its own,
/// its log in `log`; returns once the endpoint listens.
pub fn run_daemon(
    site: &std::path::Path,
    listen: &str,
    log: &std::path::Path,
    level: &str,
    extra: &[&str],
) -> Result<KillOnDrop> {
    let port: u16 = listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("{listen} has no port"))?;
    let mut daemon = KillOnDrop(
        Command::new(hashsink()?)
            .args(["run", "--config"])
            .arg(site)
            .args(["--listen", listen, "--log", level])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| anyhow!("start hashsink run: {e}"))?,
    );
    // Identification comes before the endpoint: a minute or so for 100,000 miners.
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(exit) = daemon.0.try_wait()? {
            return Err(anyhow!(
                "hashsink run stopped ({exit}): see {}",
                log.display()
            ));
        }
        if t0.elapsed() > std::time::Duration::from_secs(600) {
            return Err(anyhow!(
                "the daemon's endpoint did not start on port {port} within 10 minutes"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(daemon)
}

/// `POST {}` to the daemon at `listen`: the reply's status code and how long it took.
pub async fn post(listen: &str, path: &str) -> Result<(u16, std::time::Duration)> {
    let sent = std::time::Instant::now();
    let reply = reqwest::Client::new()
        .post(format!("http://{listen}{path}"))
        .header("content-type", "application/json")
        .body("{}")
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| anyhow!("POST {path}: {e}"))?;
    Ok((reply.status().as_u16(), sent.elapsed()))
}

/// The daemon's status at `listen` (None while it does not answer).
pub async fn status(listen: &str) -> Option<serde_json::Value> {
    reqwest::get(format!("http://{listen}/api/v1/status"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until every one of `miners` is awake in the emulated fleet, the daemon at `listen`
/// reports them all mining and `ready` holds (within `limit`), then until no command has reached
/// the fleet for 3 s (within a minute more): the fleet is up and settled. The emulator's own
/// state is asked too, because the daemon's status is as old as its last sweep: right after a
/// shed and a resume it still counts the fleet mining while every miner sleeps.
pub async fn wait_settled(
    listen: &str,
    emulator: &hashsink_emulator::Emulator,
    miners: u32,
    ready: fn(&serde_json::Value) -> bool,
    what: &str,
    limit: std::time::Duration,
) -> Result<()> {
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    loop {
        let awake = emulator.awake().iter().filter(|&&a| a).count();
        if awake == miners as usize
            && let Some(s) = status(listen).await
            && s["mining"].as_u64() == Some(u64::from(miners))
            && ready(&s)
        {
            break;
        }
        if t0.elapsed() > limit {
            return Err(anyhow!(
                "{what}: the fleet was not all mining within {} s: {}",
                limit.as_secs(),
                status(listen).await.unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        emulator.mark_commands();
        tokio::time::sleep(Duration::from_secs(3)).await;
        if emulator.first_command_since_mark().is_none() {
            return Ok(());
        }
        if t0.elapsed() > limit + Duration::from_secs(60) {
            return Err(anyhow!("{what}: the daemon kept sending commands"));
        }
    }
}
