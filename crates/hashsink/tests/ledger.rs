//! The ledger end to end: the daemon records intervals, commands and events in its SQLite file
//! while it drives an emulated fleet; a kill -9 at any moment loses no interval it had reported
//! committed and leaves the file sound, and the runs' intervals never overlap; a run stopped in
//! order records its last partial interval,
//! its safe state and its stop. Runs as root for the emulated miners' ports (CI does).

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hashsink_ledger::Store;
use hashsink_ledger::sqlite::SqliteStore;
use hashsink_units::Timestamp;

/// Starts the daemon on `site`; returns it and a channel of the interval starts it reports
/// committed.
fn start(site: &std::path::Path, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<i64>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(["run", "--config"])
        .arg(site)
        .args(["--log", "info"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hashsink run");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line
                .split("ledger: interval committed")
                .nth(1)
                .and_then(|r| r.split("start_ms=").nth(1))
            {
                let ms: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(ms) = ms.parse() {
                    let _ = tx.send(ms);
                }
            }
        }
    });
    (child, rx)
}

/// `hashsink run` on a PostgreSQL ledger (`HASHSINK_TEST_POSTGRES`; CI starts one): the daemon
/// starts (opening the ledger used to panic inside the daemon's runtime), records its
/// intervals, and stops in order.
#[test]
fn the_daemon_keeps_its_ledger_on_postgresql() {
    let Some(url) = hashsink_ledger::postgres::test_database_url() else {
        return;
    };
    let _emulator = common::emulate(&["--first-index", "12000", "--mix", "s19xp:10:luxos"]);
    let dir = std::env::temp_dir().join(format!("hashsink-ledger-pg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site_name = format!("pg daemon test {}", std::process::id());
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        format!("[site]\nname = \"{site_name}\"\n\n[surplus]\nsource = \"http\"\nlisten = \"127.0.0.1:18097\"\n\n[ledger]\nurl = \"{url}\"\ninterval_s = 1\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.48.1-127.1.48.10\"]\n"),
    )
    .unwrap();
    let (mut child, rx) = start(&site, &["--for-secs", "4"]);
    let status = child.wait().unwrap();
    let committed: Vec<i64> = rx.try_iter().collect();
    assert!(status.success(), "the daemon failed on a PostgreSQL ledger");
    assert!(!committed.is_empty(), "no interval committed");
    let mut store = hashsink_ledger::open(&url).unwrap();
    let rows = store
        .intervals(
            &site_name,
            Timestamp::from_millis(0),
            Timestamp::from_millis(i64::MAX),
        )
        .unwrap();
    assert!(rows.len() >= committed.len(), "{} rows", rows.len());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn kill_9_at_any_moment_loses_no_committed_interval() {
    // The miners start mining: the daemon adopts them and, with no surplus pushed, brings them
    // to the fail-safe load, so the controller has commands for the audit log.
    let _emulator = common::emulate(&[
        "--mining",
        "--first-index",
        "5750",
        "--mix",
        "s19xp:10:luxos",
    ]);
    let dir = std::env::temp_dir().join(format!("hashsink-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        "[site]\nname = \"kill test\"\n\n[surplus]\nsource = \"http\"\nlisten = \"127.0.0.1:18085\"\n\n[io]\ntelemetry_interval_s = 2\n\n[ledger]\nurl = \"ledger.db\"\ninterval_s = 1\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.23.1-127.1.23.10\"]\n",
    )
    .unwrap();
    let db = dir.join("ledger.db");
    let mut committed: Vec<i64> = Vec::new();
    // Wall time (speed 1), so that runs follow each other on the clock as on a real site. A
    // fixed sequence of kill times, 2 to 4.5 s after start; intervals close every second.
    let mut seed: u64 = 0x5eed;
    for round in 0..6 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let after = Duration::from_millis(2000 + (seed >> 33) % 2500);
        let (mut child, rx) = start(&site, &[]);
        let t0 = Instant::now();
        let mut seen = 0;
        while t0.elapsed() < after {
            if let Ok(ms) = rx.recv_timeout(Duration::from_millis(5)) {
                committed.push(ms);
                seen += 1;
            }
        }
        child.kill().expect("kill -9"); // SIGKILL
        child.wait().unwrap();
        // Lines already written before the kill are still in the pipe.
        while let Ok(ms) = rx.recv_timeout(Duration::from_millis(200)) {
            committed.push(ms);
            seen += 1;
        }
        assert!(
            seen > 0,
            "round {round}: no interval committed in {after:?}"
        );
        let mut store = SqliteStore::open(&db).expect("the ledger opens after a kill -9");
        assert_eq!(store.integrity_check().unwrap(), "ok", "round {round}");
        let rows = store
            .intervals(
                "kill test",
                Timestamp::from_millis(0),
                Timestamp::from_millis(i64::MAX),
            )
            .unwrap();
        let starts: std::collections::HashSet<i64> =
            rows.iter().map(|r| r.start.as_millis()).collect();
        for ms in &committed {
            assert!(
                starts.contains(ms),
                "round {round}: interval {ms} was reported committed and is gone"
            );
        }
        // Intervals never overlap, across runs too.
        for w in rows.windows(2) {
            assert!(w[0].end <= w[1].start, "overlapping intervals: {w:?}");
        }
    }
    // A run stopped in order: its last partial interval, the safe state and the stop are there,
    // and the audit log has the controller's commands with their outcomes.
    let (mut child, _rx) = start(&site, &["--for-secs", "4"]);
    // An operator shed through the HTTP endpoint, on record with its actor.
    common::wait_listening(18085, "the daemon's endpoint");
    post("127.0.0.1:18085", "/shed");
    assert!(child.wait().unwrap().success());
    let mut store = SqliteStore::open(&db).unwrap();
    let all = (Timestamp::from_millis(0), Timestamp::from_millis(i64::MAX));
    let events = store.events("kill test", all.0, all.1).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "start").count(),
        7,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"safe-state") && kinds.ends_with(&["stop"]),
        "{kinds:?}"
    );
    let audit = store.audit("kill test", all.0, all.1).unwrap();
    assert!(
        audit.iter().any(|a| a.command.actor == "controller"
            && a.outcome.as_ref().is_some_and(|o| o.1 == "applied")),
        "no applied controller command in the audit log"
    );
    let totals = store.miner_totals("kill test", all.0, all.1).unwrap();
    assert_eq!(totals.len(), 10);
    assert!(totals.iter().all(|t| t.energy_wh > 0.0), "{totals:?}");
    let miners = store.miners("kill test").unwrap();
    assert_eq!(miners[0].address, "127.1.23.1");
    assert!(
        events.iter().any(|e| e.kind == "shed" && e.actor == "http"),
        "{events:?}"
    );
    let intervals = store.intervals("kill test", all.0, all.1).unwrap();
    let energy_mwh: f64 = intervals.iter().map(|i| i.fleet_wh).sum::<f64>() / 1e6;

    // Actual coins, from CSV files; a second import of the same file adds nothing.
    let payouts = dir.join("payouts.csv");
    std::fs::write(
        &payouts,
        "time,reference,btc,source\n2026-11-20T00:00:00Z,pool-1,0.00120000,ocean\n2026-11-21T00:00:00Z,pool-2,0.0008,ocean\n",
    )
    .unwrap();
    let sales = dir.join("sales.csv");
    std::fs::write(
        &sales,
        "time,reference,btc,fiat,currency\n2026-11-22T00:00:00Z,otc-1,0.002,190.00,usd\n",
    )
    .unwrap();
    let hashsink = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hashsink"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let config = site.to_str().unwrap();
    let (ok, said, err) = hashsink(&[
        "ledger",
        "import-payouts",
        "--config",
        config,
        payouts.to_str().unwrap(),
    ]);
    assert!(ok && said.contains("2 new payouts"), "{said}{err}");
    let (_, said, _) = hashsink(&[
        "ledger",
        "import-payouts",
        "--config",
        config,
        payouts.to_str().unwrap(),
    ]);
    assert!(said.contains("0 new payouts"), "{said}");
    let (ok, said, err) = hashsink(&[
        "ledger",
        "import-sales",
        "--config",
        config,
        sales.to_str().unwrap(),
    ]);
    assert!(ok && said.contains("1 new sales"), "{said}{err}");
    // A bad amount names the file and line, and enters nothing.
    std::fs::write(&sales, "time,reference,btc,fiat,currency\n2026-11-23T00:00:00Z,otc-2,0.001,90.00,USD\n2026-11-23T01:00:00Z,otc-3,lots,1.00,USD\n").unwrap();
    let (ok, _, err) = hashsink(&[
        "ledger",
        "import-sales",
        "--config",
        config,
        sales.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("sales.csv:3") && err.contains("\"lots\""),
        "{err}"
    );

    // The statement: the month's energy is the intervals', the coins are what was entered.
    let (ok, csv, err) = hashsink(&[
        "report",
        "--config",
        config,
        "--from",
        "2000-01-01",
        "--to",
        "2100-01-01",
        "--format",
        "csv",
        "--miners",
    ]);
    assert!(ok, "{err}");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let total: Vec<String> = csv
        .lines()
        .find(|l| l.starts_with("total,"))
        .expect("a total row")
        .split(',')
        .map(str::to_string)
        .collect();
    let col = |name: &str| {
        let i = header.iter().position(|h| *h == name).unwrap();
        total[i].parse::<f64>().unwrap()
    };
    assert!((col("energy_mwh") - energy_mwh).abs() < 1e-3, "{csv}");
    assert_eq!(col("paid_btc"), 0.002);
    assert_eq!(col("sold_btc"), 0.002);
    assert_eq!(col("curtailments"), 1.0);
    assert!(csv.contains("190.00 USD"), "{csv}");
    assert!(csv.contains("127.1.23.10"), "the miners' section: {csv}");
    let page = dir.join("report.html");
    let (ok, _, err) = hashsink(&[
        "report",
        "--config",
        config,
        "--from",
        "2000-01-01",
        "--to",
        "2100-01-01",
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<h1>kill test</h1>") && html.contains("<td>total</td>"),
        "{html}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// POSTs an empty body to the daemon's endpoint.
fn post(addr: &str, path: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
