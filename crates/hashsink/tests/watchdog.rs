//! The dead-man chain's first link: the daemon tells systemd it is ready and pets the watchdog
//! from its loop only, so the pets stop when the loop stalls while the process lives on.
//! A `NOTIFY_SOCKET` of the test's own stands in for systemd.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_loop_pets_the_watchdog_and_a_stalled_loop_does_not() {
    let dir = std::env::temp_dir().join(format!("hashsink-watchdog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        "[surplus]\nsource = \"http\"\nlisten = \"127.0.0.1:18095\"\n\n[ledger]\nenabled = false\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.250.6\"]\n",
    )
    .unwrap();
    let mut daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hashsink"))
            .args(["run", "--config"])
            .arg(&site)
            .args(["--for-secs", "60"])
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000")
            .env("HASHSINK_TEST_STALL_LOOP_AFTER_S", "5")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Every message, with when it came.
    let mut got: Vec<(Instant, String)> = Vec::new();
    let t0 = Instant::now();
    let mut ready_at = None;
    while t0.elapsed() < Duration::from_secs(20) {
        let mut buf = [0u8; 512];
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if ready_at.is_none() && text.contains("READY=1") {
                ready_at = Some(Instant::now());
            }
            got.push((Instant::now(), text));
        }
        // Stop once the loop has been stalled for a while.
        if ready_at.is_some_and(|r| r.elapsed() > Duration::from_secs(9)) {
            break;
        }
    }
    let ready = ready_at.expect("READY=1 from the daemon");
    let pets = |from: Duration, to: Duration| {
        (got.iter())
            .filter(|(at, m)| m.contains("WATCHDOG=1") && *at >= ready + from && *at < ready + to)
            .count()
    };
    // Half the 1 s interval: about two pets a second while the loop runs...
    let running = pets(Duration::ZERO, Duration::from_secs(4));
    assert!(
        running >= 6,
        "{running} pets in the loop's first 4 s: {got:?}"
    );
    // ... and none once it stalls, though the process and its other tasks live on.
    let stalled = pets(Duration::from_secs(6), Duration::from_secs(9));
    assert_eq!(stalled, 0, "pets from a stalled loop: {got:?}");
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon died");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_unit_file_runs_the_daemon_under_the_watchdog() {
    let unit = std::fs::read_to_string(common::repo_root().join("deploy/hashsink.service"))
        .expect("deploy/hashsink.service");
    for line in [
        "Type=notify",
        "Restart=always",
        "ExecStart=/usr/local/bin/hashsink run --config /etc/hashsink/site.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    let watchdog: f64 = (unit.lines())
        .find_map(|l| l.strip_prefix("WatchdogSec="))
        .and_then(|v| v.parse().ok())
        .expect("WatchdogSec= in seconds");
    // The loop turns at least every cadence (1 s) and pets every half interval.
    assert!(
        watchdog >= 4.0,
        "WatchdogSec={watchdog} is too short for the loop"
    );
}
