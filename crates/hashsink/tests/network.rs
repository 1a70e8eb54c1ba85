//! The fleet over real sockets: the emulator, asic-rs discovery, the drivers and the daemon, and
//! pyasic (from PyPI) as a third-party client. Each test takes its own block of 127.1.x.y
//! addresses so that they run in parallel. Binding port 80 needs root (CI runs as root).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An emulator process, killed on drop.
struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn emulate(args: &[&str]) -> Emulator {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .arg("emulate")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hashsink emulate");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("Ctrl-C") => break,
            Some(Ok(_)) => continue,
            _ => panic!("the emulator stopped before it was ready"),
        }
    }
    Emulator(child)
}

fn demo_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .arg("demo")
        .args(args)
        .arg("--json")
        .current_dir(repo_root())
        .output()
        .expect("run hashsink demo");
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("demo JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn pyasic_identifies_and_reads_the_emulated_miners() {
    let have = Command::new("python3").args(["-c", "import pyasic"]).status().is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("HASHSINK_REQUIRE_PYASIC").is_none(),
            "pyasic is required (HASHSINK_REQUIRE_PYASIC is set) but `python3 -c 'import pyasic'` failed"
        );
        eprintln!("skipped: pyasic is not installed (pip install pyasic==0.79.0; .ci/run does)");
        return;
    }
    // Miners 1000.. are 127.1.4.1..; they boot at once at 100x so that they hash when read.
    let _emulator = emulate(&["--mining", "--speed", "100", "--first-index", "1000", "--mix", "s19xp:2:luxos,s21:2:braiins-os,s19jpro:2:stock-antminer"]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = Command::new("python3")
        .arg(repo_root().join("tests/pyasic/identify.py"))
        .args([
            "127.1.4.1=luxos",
            "127.1.4.2=luxos",
            "127.1.4.3=braiins-os",
            "127.1.4.4=braiins-os",
            "127.1.4.5=stock-antminer",
            "127.1.4.6=stock-antminer",
        ])
        .output()
        .expect("run the pyasic check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pyasic check failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches(" OK").count(), 6, "{text}");
}

#[test]
fn daemon_follows_the_replayed_surplus_and_a_shed_empties_the_fleet() {
    // Three hours of the nuclear evening at 600x: 18 s.
    let report = demo_json(&["--speed", "600", "--hours", "3", "--first-index", "2000"]);
    let kpis = &report["status"]["kpis"];
    let surplus = kpis["surplus_kwh"].as_f64().unwrap();
    let absorbed = kpis["absorbed_kwh"].as_f64().unwrap();
    let import = kpis["import_kwh"].as_f64().unwrap();
    assert!(surplus > 100.0, "the window has surplus: {report}");
    assert!(absorbed / surplus > 0.9, "absorbed {absorbed} of {surplus} kWh: {report}");
    assert!(import / surplus < 0.01, "import {import} kWh of {surplus}: {report}");
    let miners = report["miners"].as_u64().unwrap();
    assert_eq!(report["shed_confirmed_asleep"].as_u64().unwrap(), miners, "{report}");
    assert_eq!(report["mining_after_shed"].as_u64().unwrap(), 0, "{report}");
    assert!(report["shed_fan_out_ms"].as_u64().unwrap() < 1000, "{report}");
}

#[test]
fn hung_and_garbled_miners_are_routed_around() {
    let report = demo_json(&["--speed", "600", "--hours", "2", "--first-index", "3000", "--faulty-pct", "10"]);
    let status = &report["status"];
    let miners = report["miners"].as_u64().unwrap();
    // 5 hang and 5 answer garbage: the daemon sees them as not answering.
    assert_eq!(status["unreachable"].as_u64().unwrap(), 10, "{report}");
    // A sweep waits for at most one call timeout (1.5 s) on the hung ones, never longer.
    assert!(status["last_sweep_ms"].as_u64().unwrap() < 2500, "{report}");
    let kpis = &status["kpis"];
    let surplus = kpis["surplus_kwh"].as_f64().unwrap();
    // A tenth of the fleet's capacity is gone, so the peak (90 % of the whole fleet) cannot all
    // be absorbed.
    assert!(kpis["absorbed_kwh"].as_f64().unwrap() / surplus > 0.8, "{report}");
    assert!((kpis["seconds"].as_f64().unwrap() - 7200.0).abs() < 120.0, "two hours replayed: {report}");
    assert!(kpis["import_kwh"].as_f64().unwrap() / surplus < 0.01, "{report}");
    // The 90 that answer are confirmed asleep after the shed.
    assert_eq!(report["shed_confirmed_asleep"].as_u64().unwrap(), miners - 10, "{report}");
}

#[test]
fn example_site_runs_against_the_emulator() {
    let _emulator = emulate(&["--speed", "60"]);
    let out = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(["run", "--config", "examples/site.toml", "--speed", "60", "--for-secs", "600", "--log", "warn"])
        .current_dir(repo_root())
        .output()
        .expect("run hashsink run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).expect("run prints its final status as JSON");
    assert_eq!(status["unreachable"].as_u64().unwrap(), 0, "{status}");
    assert!(status["mining"].as_u64().unwrap() > 0, "the fleet follows the surplus: {status}");
    assert!(status["kpis"]["absorbed_kwh"].as_f64().unwrap() > 0.0, "{status}");
}

#[test]
fn run_reports_a_bad_site_file_before_starting() {
    let dir = std::env::temp_dir().join(format!("hashsink-site-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("site.toml");
    std::fs::write(&path, "[surplus]\nsource = \"replay\"\nprofile = \"nuclear\"\n[[group]]\nmodel = \"S21\"\nfirmware = \"luxos\"\naddresses = [\"10.0.0.1\"]\ntimeout = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("site.toml:") && err.contains("timeout"), "{err}");
}
