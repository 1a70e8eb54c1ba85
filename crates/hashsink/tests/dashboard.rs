//! The web dashboard in a real headless Chromium (Debian's), driven by playwright-core from
//! npm (`tests/peers/dashboard_browser.cjs`): the daemon drives an emulated fleet on a replayed
//! surplus; the page asks for a token, shows the chart moving and the KPIs, the fleet by model,
//! finds miners with the search box, and an operator's Shed (cancelled once, then confirmed)
//! reaches the fleet and the event log under the operator's name.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Where playwright-core is installed (`.ci/run` puts it in target/browser-peer), if it is.
fn playwright() -> Option<PathBuf> {
    let dir = std::env::var_os("HASHSINK_PLAYWRIGHT_NODE_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("target/browser-peer/node_modules"));
    let ok = dir.join("playwright-core").is_dir()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        && Command::new("chromium")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("HASHSINK_REQUIRE_CHROMIUM").is_none(),
            "HASHSINK_REQUIRE_CHROMIUM is set but node, chromium or playwright-core in {} is missing (.ci/run installs them: apt-get install chromium nodejs npm; npm install --prefix target/browser-peer playwright-core)",
            dir.display()
        );
        hashsink_units::note_skipped_peer(
            "node, Chromium and playwright-core",
            "apt-get install chromium nodejs npm; npm install --prefix target/browser-peer playwright-core; .ci/run does",
        );
        return None;
    }
    Some(dir)
}

/// The chromium executable on the PATH (playwright wants a path).
fn chromium() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .expect("chromium on the PATH")
}

fn hex_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A second site in the ledger, as a region's shared ledger has: 0.3 MWh drawn this UTC day.
fn seed_a_neighbour(ledger: &std::path::Path) {
    use hashsink_ledger::{Batch, Interval};
    use hashsink_units::Timestamp;
    let mut store = hashsink_ledger::open(ledger.to_str().unwrap()).unwrap();
    let now = Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let day = now.as_millis() - now.as_millis() % 86_400_000;
    store.migrate(now).unwrap();
    let interval = Interval {
        start: Timestamp::from_millis(day),
        end: Timestamp::from_millis(day + 60_000),
        surplus_wh: Some(300_000.0),
        fleet_wh: 300_000.0,
        import_wh: 0.0,
        hashes_th: 1.0e6,
        expected_sat: 100.0,
        difficulty: None,
        mining: 1,
        asleep: 0,
        faulted: 0,
        miners: Vec::new(),
    };
    let batch = Batch {
        miners: Vec::new(),
        intervals: vec![interval],
        commands: Vec::new(),
        outcomes: Vec::new(),
        events: Vec::new(),
    };
    store.write("neighbour", day, &batch).unwrap();
}

#[test]
fn the_dashboard_updates_live_and_sheds_from_a_real_browser() {
    let Some(node_path) = playwright() else {
        return;
    };
    let _emulator = common::emulate(&[
        "--first-index",
        "6000",
        "--mix",
        "s19xp:10:luxos,s21:10:braiins-os",
        "--speed",
        "60",
    ]);
    let dir = std::env::temp_dir().join(format!("hashsink-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A surplus that swings between 20 and 60 kW every 20 minutes, for 4 hours.
    let mut csv = String::from("timestamp,surplus_mw\n");
    for i in 0..=24 {
        let mw = if i % 2 == 0 { 0.02 } else { 0.06 };
        csv += &format!("2026-05-01T{:02}:{:02}:00Z,{mw}\n", i / 6, (i % 6) * 10);
    }
    std::fs::write(dir.join("surplus.csv"), csv).unwrap();
    let operator = "hs_dashboard_operator_token";
    let listen = "127.0.0.1:18088";
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        format!(
            "[site]\nname = \"dashboard test\"\nsafe_state = \"leave\"\n\n[surplus]\nsource = \"replay\"\nprofile = \"surplus.csv\"\n\n[io]\ntelemetry_interval_s = 5\n\n[ledger]\nurl = \"ledger.db\"\ninterval_s = 60\n\n[api]\nlisten = \"{listen}\"\n\n[[api.token]]\nname = \"alice\"\nrole = \"operator\"\nsha256 = \"{}\"\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.24.1-127.1.24.10\"]\n\n[[group]]\nmodel = \"S21\"\nfirmware = \"braiins-os\"\naddresses = [\"127.1.24.11-127.1.24.20\"]\n",
            hex_sha256(operator)
        ),
    )
    .unwrap();
    seed_a_neighbour(&dir.join("ledger.db"));
    let daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hashsink"))
            .args(["run", "--config"])
            .arg(&site)
            .args(["--speed", "60", "--for-secs", "14400", "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    common::wait_listening(18088, "the daemon's dashboard");
    let screenshot = dir.join("dashboard.png");
    let t0 = Instant::now();
    let out = Command::new("node")
        .arg(common::repo_root().join("crates/hashsink/tests/peers/dashboard_browser.cjs"))
        .arg(format!("http://{listen}/"))
        .arg(operator)
        .arg(chromium())
        .arg(&screenshot)
        .env("NODE_PATH", &node_path)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser check failed after {:?}:\n{stdout}\n{stderr}",
        t0.elapsed()
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("the browser saw: {seen}");
    // The token was asked for and taken.
    assert_eq!(seen["whoami"], "operator:alice (operator)", "{seen}");
    // The chart moved on while the page was open, and has points.
    let chart = &seen["chart"];
    assert!(
        chart["later"]["t"].as_f64() > chart["first"]["t"].as_f64(),
        "{chart}"
    );
    assert!(chart["later"]["points"].as_u64() >= Some(2), "{chart}");
    assert!(chart["later"]["d"].as_u64() > Some(20), "{chart}");
    // The fleet by model, and the search box narrows the miner table.
    assert_eq!(
        seen["models"],
        serde_json::json!(["Antminer S19 XP", "Antminer S21"]),
        "{seen}"
    );
    // The ledger holds a neighbour site too: the site view lists both and their sum.
    let sites = seen["sites"].as_array().expect("the site view's rows");
    let cell = |row: usize, col: usize| sites[row][col].as_str().unwrap_or_default();
    assert_eq!(sites.len(), 3, "{seen}");
    assert_eq!(cell(0, 0), "dashboard test (this site)", "{seen}");
    assert_eq!((cell(1, 0), cell(1, 1)), ("neighbour", "0.300"), "{seen}");
    assert_eq!(cell(2, 0), "All sites", "{seen}");
    let mwh = |row: usize| cell(row, 1).parse::<f64>().unwrap();
    assert!((mwh(2) - mwh(0) - mwh(1)).abs() < 0.002, "the sum: {seen}");
    assert_eq!(seen["search"]["all"], 20, "{seen}");
    assert_eq!(seen["search"]["s21"], 10, "{seen}");
    // Cancelling the confirmation did nothing; confirming shed, under the operator's name.
    assert_eq!(seen["mode_after_cancel"], "follow", "{seen}");
    assert!(
        seen["mode_text"]
            .as_str()
            .unwrap()
            .contains("shed by operator:alice"),
        "{seen}"
    );
    assert!(
        seen["shed_event"]
            .as_str()
            .unwrap()
            .contains("operator:alice"),
        "{seen}"
    );
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 50_000,
        "the screenshot is nearly empty"
    );
    // The shed reached the fleet: the daemon reads every miner asleep within 30 s.
    let t0 = Instant::now();
    loop {
        let mut s = std::net::TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        use std::io::Write;
        write!(
            s,
            "GET /api/v1/fleet HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {operator}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        let fleet: serde_json::Value = reply
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or_default();
        if fleet["by_state"]["mining"] == 0 && fleet["by_state"]["asleep"] == 20 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the fleet did not go to sleep: {reply}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(daemon);
    std::fs::remove_dir_all(&dir).ok();
}
