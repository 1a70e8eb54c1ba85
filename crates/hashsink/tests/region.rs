//! A region end to end, with real parts: mosquitto, `hashsink coordinate`, three `hashsink run`
//! daemons (two shards of one site, one other site) on emulated fleets of three efficiencies,
//! and, where one is given (`HASHSINK_TEST_POSTGRES`; CI starts one), one PostgreSQL ledger
//! for them all. The test plays the grid on the broker: a national surplus and the north
//! site's local one. It checks the rules of `hashsink_core::region` as they run: the sum
//! follows the surplus and never exceeds it, the most efficient fleet is filled first within
//! its site's limit, a daemon killed keeps its room and is adopted when it comes back, a
//! coordinator restarted at once changes no cap, and one gone for good leaves every daemon
//! to its fail-safe load. Runs as root for the emulated miners' ports (CI does).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, emulate, mosquitto_available, run_daemon_at, start_broker, status, try_status,
};
use serde_json::Value;

const BROKER: u16 = 18835;

/// The daemons: id, site, model, their miners' addresses (127.1.52.x from index 13000), and
/// where each serves its status.
const DAEMONS: [(&str, &str, &str, &str, &str); 3] = [
    (
        "s21",
        "north",
        "S21",
        "127.1.52.1-127.1.52.10",
        "127.0.0.1:18111",
    ),
    (
        "xp",
        "north",
        "S19 XP",
        "127.1.52.11-127.1.52.20",
        "127.0.0.1:18112",
    ),
    (
        "jpro",
        "south",
        "S19j Pro",
        "127.1.52.21-127.1.52.30",
        "127.0.0.1:18113",
    ),
];

/// The grid's side of the broker: the national surplus and the north site's, every 200 ms;
/// the coordinator's allocation as last published.
struct Grid {
    national_kw: Arc<Mutex<f64>>,
    north_kw: Arc<Mutex<f64>>,
    allocation: Arc<Mutex<Option<Value>>>,
    stop: Arc<AtomicBool>,
}

impl Grid {
    fn start(national_kw: f64, north_kw: f64) -> Grid {
        let (client, connection) = common::mqtt_client("the-grid", BROKER);
        let grid = Grid {
            national_kw: Arc::new(Mutex::new(national_kw)),
            north_kw: Arc::new(Mutex::new(north_kw)),
            allocation: Arc::new(Mutex::new(None)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        client
            .subscribe("hashsink/coordinator/allocation", rumqttc::QoS::AtMostOnce)
            .unwrap();
        let allocation = grid.allocation.clone();
        common::on_publishes(connection, grid.stop.clone(), move |p| {
            if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                *allocation.lock().unwrap() = Some(v);
            }
        });
        let (national, north, stop) = (
            grid.national_kw.clone(),
            grid.north_kw.clone(),
            grid.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (topic, kw) in [("grid/surplus", &national), ("north/surplus", &north)] {
                    let body = format!("{{\"available_kw\": {}}}", *kw.lock().unwrap());
                    let _ = client.try_publish(topic, rumqttc::QoS::AtMostOnce, false, body);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        grid
    }

    fn national(&self, kw: f64) {
        *self.national_kw.lock().unwrap() = kw;
    }

    fn national_kw(&self) -> f64 {
        *self.national_kw.lock().unwrap()
    }

    fn allocation(&self) -> Option<Value> {
        self.allocation.lock().unwrap().clone()
    }

    /// The allocation's entry for daemon `id`.
    fn daemon(&self, id: &str) -> Option<Value> {
        let a = self.allocation()?;
        let daemons = a["daemons"].as_array()?;
        daemons.iter().find(|d| d["id"] == id).cloned()
    }

    fn cap_kw(&self, id: &str) -> Option<f64> {
        Some(self.daemon(id)?["cap_w"].as_f64()? / 1000.0)
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn region_file() -> String {
    let mut text = format!(
        "[coordinator]\nbroker = \"127.0.0.1:{BROKER}\"\nclient_id = \"region-test-coordinator\"\npublish_ms = 500\nsilent_after_s = 2\nadopt_for_s = 6\n\n\
         [[signal]]\nname = \"grid\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{BROKER}\"\ntopic = \"grid/surplus\"\nfield = \"available_kw\"\nmax_age_s = 3\nmax_mw = 1\n\n\
         [[site]]\nname = \"north\"\n[[site.signal]]\nname = \"north meter\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{BROKER}\"\ntopic = \"north/surplus\"\nfield = \"available_kw\"\nmax_age_s = 3\nmax_mw = 1\n\n"
    );
    for (id, site, ..) in DAEMONS {
        text += &format!(
            "[[daemon]]\nid = \"{id}\"\nsite = \"{site}\"\ncapacity_mw = 0.05\nfailsafe_after_s = 20\n\n"
        );
    }
    text
}

/// Daemon `id`'s site file: it follows its cap from the coordinator, reports, and keeps its
/// ledger in `ledger` (a PostgreSQL URL) if one is given.
fn site_file(k: usize, ledger: Option<&str>, tag: &str) -> String {
    let (id, _, model, addresses, _) = DAEMONS[k];
    let ledger = match ledger {
        Some(url) => format!("url = \"{url}\"\ninterval_s = 5\n"),
        None => "enabled = false\n".into(),
    };
    format!(
        "[site]\nname = \"region {id} {tag}\"\n\n[surplus]\nsource = \"signals\"\n\n\
         [[signal]]\nname = \"coordinator\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{BROKER}\"\ntopic = \"hashsink/{id}/cap\"\nfield = \"cap_w\"\ntime_field = \"at_ms\"\nunit = \"w\"\nmax_mw = 0.05\nmax_age_s = 4\npublish_topic = \"hashsink/{id}/report\"\npublish_ms = 500\n\n\
         [io]\ntelemetry_interval_s = 1\n\n\
         [controller]\nmin_on_s = 5\nmin_off_s = 5\nwake_confirm_s = 1\nresume_after_s = 2\nmax_rise_fraction_per_s = 0.5\nmax_reading_age_ms = 4000\nfailsafe_within_ms = 2000\n\n\
         [ledger]\n{ledger}\n\
         [[group]]\nmodel = \"{model}\"\nfirmware = \"luxos\"\naddresses = [\"{addresses}\"]\n"
    )
}

fn start_daemon(k: usize, ledger: Option<&str>, tag: &str) -> (KillOnDrop, std::path::PathBuf) {
    let (id, .., listen) = DAEMONS[k];
    let (child, dir) = run_daemon_at(
        &format!("region-{id}-{tag}"),
        &site_file(k, ledger, tag),
        1.0,
        900,
        &["--listen", listen, "--log", "info"],
    );
    let port = listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    common::wait_listening(port.expect("host:port"), "the daemon's endpoint");
    (KillOnDrop(child), dir)
}

fn start_coordinator(path: &std::path::Path, log: &std::path::Path) -> KillOnDrop {
    let log = std::fs::File::create(log).expect("coordinator log");
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hashsink"))
            .args(["coordinate", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hashsink coordinate"),
    )
}

/// Each daemon's load, kW (None: it does not answer).
fn loads() -> [Option<f64>; 3] {
    DAEMONS.map(|(.., listen)| Some(try_status(listen)?["fleet_w"].as_f64()? / 1000.0))
}

/// How long after a fall of the surplus the fleet may still draw above it (it sheds).
const SHED_WINDOW: Duration = Duration::from_secs(12);

/// Polls until `ok(loads, grid)` holds, or fails with `what` after `limit`. At every poll but
/// those within `SHED_WINDOW` of the last fall (`fell`), the sum must be within the national
/// surplus and north within its own, with 0.5 kW of slack; a silent daemon counts as the room
/// the coordinator keeps for it.
fn until(
    grid: &Grid,
    what: &str,
    limit: Duration,
    fell: Option<Instant>,
    ok: impl Fn(&[Option<f64>; 3], &Grid) -> bool,
) {
    let t0 = Instant::now();
    loop {
        let l = loads();
        let kw = |k: usize| l[k].unwrap_or(0.0);
        if fell.is_none_or(|f| f.elapsed() > SHED_WINDOW) {
            let room = grid.daemon("s21").and_then(|d| d["assumed_w"].as_f64());
            let s21 = l[0].or(room.map(|w| w / 1000.0)).unwrap_or(0.0);
            let sum = s21 + kw(1) + kw(2);
            assert!(
                sum <= grid.national_kw() + 0.5,
                "{what}: the region draws {sum:.1} kW of {} kW: {l:?} {:?}",
                grid.national_kw(),
                grid.allocation()
            );
            assert!(
                s21 + kw(1) <= 50.5,
                "{what}: north draws over its 50 kW: {l:?}"
            );
        }
        if ok(&l, grid) {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: {l:?}; allocation {:?}",
            grid.allocation()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn sum(l: &[Option<f64>; 3]) -> f64 {
    l.iter().map(|v| v.unwrap_or(0.0)).sum()
}

fn read_log(path: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

#[test]
fn a_region_of_three_daemons_follows_the_surplus_and_survives_a_killed_daemon_and_coordinator() {
    if !mosquitto_available() {
        return;
    }
    let pg = hashsink_ledger::postgres::test_database_url();
    let tag = std::process::id().to_string();
    let _broker = start_broker(BROKER);
    let grid = Grid::start(80.0, 50.0);
    let _emulator = emulate(&[
        "--speed",
        "10",
        "--first-index",
        "13000",
        "--mix",
        "s21:10:luxos,s19xp:10:luxos,s19jpro:10:luxos",
    ]);
    let dir = std::env::temp_dir().join(format!("hashsink-region-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let region = dir.join("region.toml");
    std::fs::write(&region, region_file()).unwrap();
    let coordinator_log = dir.join("coordinator.log");
    let mut coordinator = start_coordinator(&region, &coordinator_log);
    let mut daemons: Vec<(KillOnDrop, std::path::PathBuf)> = (0..3)
        .map(|k| start_daemon(k, pg.as_deref(), &tag))
        .collect();

    // 80 kW nationally, 50 in the north: the S21s (17.5 J/TH) fill first (44 kW at their top
    // level), the S19 XPs (21.5) get what the north has left (6), the S19j Pros (29.5) the
    // rest (30).
    until(
        &grid,
        "the region fills",
        Duration::from_secs(90),
        None,
        |l, g| sum(l) > 60.0 && g.cap_kw("s21").is_some_and(|c| c > 40.0),
    );
    let caps = ["s21", "xp", "jpro"].map(|id| grid.cap_kw(id).unwrap());
    assert!(
        caps[0] > 40.0 && caps[1] < 7.0 && caps[2] > 25.0,
        "caps {caps:?}"
    );
    assert!(caps.iter().sum::<f64>() <= 80.01, "caps {caps:?}");

    // The surplus falls to 45 kW: every daemon comes down within 12 s, the S21s stay first.
    grid.national(45.0);
    let fell = Instant::now();
    until(
        &grid,
        "the region follows a fall",
        Duration::from_secs(12),
        Some(fell),
        |l, _| sum(l) <= 45.5,
    );
    eprintln!(
        "the region was within 45 kW {:?} after the fall",
        fell.elapsed()
    );
    until(
        &grid,
        "the region settles at 45 kW",
        Duration::from_secs(30),
        Some(fell),
        |l, g| sum(l) > 35.0 && g.cap_kw("s21").is_some_and(|c| c > 30.0),
    );

    // The S21s' daemon is killed: its miners run on. The coordinator keeps their room (their
    // last load) and gives the others only the rest.
    let s21_load = loads()[0].unwrap();
    common::signal(&daemons[0].0, "-9");
    let killed = Instant::now();
    until(
        &grid,
        "the killed daemon is silent",
        Duration::from_secs(6),
        Some(fell),
        |_, g| g.daemon("s21").is_some_and(|d| d["standing"] == "silent"),
    );
    let room = grid.daemon("s21").unwrap()["assumed_w"].as_f64().unwrap() / 1000.0;
    assert!(
        room >= s21_load - 0.5,
        "room {room} kW for a load of {s21_load} kW"
    );
    let others: f64 = ["xp", "jpro"].iter().filter_map(|id| grid.cap_kw(id)).sum();
    assert!(
        others + room <= 45.01,
        "caps {others} kW beside {room} kW kept"
    );
    // Restarted (as systemd would), it adopts its running miners and takes its cap again.
    daemons[0] = start_daemon(0, pg.as_deref(), &tag);
    until(
        &grid,
        "the restarted daemon is adopted",
        Duration::from_secs(30),
        Some(fell),
        |l, g| {
            let follows =
                try_status(DAEMONS[0].4).is_some_and(|s| s["signals"][0]["trusted"] == true);
            g.daemon("s21").is_some_and(|d| d["standing"] == "active")
                && follows
                && l[0].is_some_and(|w| w > 30.0)
        },
    );
    eprintln!(
        "the restarted daemon followed its cap again {:?} after it was killed",
        killed.elapsed()
    );
    // It shed nothing it adopted: a miner put to sleep stays asleep for min_off_s (5 s).
    let s21 = status(DAEMONS[0].4);
    assert_eq!(
        (s21["asleep"].as_u64(), s21["booting"].as_u64()),
        (Some(0), Some(0)),
        "{s21}"
    );

    // The coordinator is killed and restarted at once: it holds until every daemon has
    // reported, then sends the caps it sent before; no daemon loses its cap meanwhile.
    let before = ["s21", "xp", "jpro"].map(|id| grid.cap_kw(id).unwrap());
    common::signal(&coordinator, "-9");
    coordinator = start_coordinator(&region, &coordinator_log.with_extension("2.log"));
    let restarted = Instant::now();
    let mut after = None;
    while restarted.elapsed() < Duration::from_secs(8) {
        for (.., listen) in DAEMONS {
            let s = status(listen);
            assert_eq!(
                s["signals"][0]["trusted"], true,
                "a daemon lost its cap: {s}"
            );
        }
        let a = grid.allocation().unwrap();
        if a["at_ms"].as_i64().unwrap() > 0
            && a["holding"] == false
            && restarted.elapsed() > Duration::from_secs(1)
        {
            after = Some(["s21", "xp", "jpro"].map(|id| grid.cap_kw(id).unwrap()));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = after.expect("the restarted coordinator sent no caps within 8 s");
    for k in 0..3 {
        assert!(
            (after[k] - before[k]).abs() < 2.0,
            "caps before {before:?}, after {after:?}"
        );
    }

    // The coordinator gone for good: each daemon holds its cap for 4 s, then goes to its
    // fail-safe load (0 W).
    drop(coordinator);
    let gone = Instant::now();
    // Asleep, a miner draws 25 W.
    until(
        &grid,
        "every daemon fails safe",
        Duration::from_secs(20),
        Some(fell),
        |l, _| sum(l) < 1.0,
    );
    let took = gone.elapsed();
    assert!(
        took > Duration::from_secs(3),
        "the caps were not held: {took:?}"
    );
    eprintln!("every daemon was at its fail-safe load {took:?} after the coordinator died");

    let log = read_log(&coordinator_log);
    assert!(log.contains("daemon silent"), "{log}");
    assert!(log.contains("adopted: caps go out"), "{log}");

    // One ledger for every site: the statement of all of them, site by site and together.
    if let Some(url) = &pg {
        for (daemon, _) in &mut daemons {
            common::signal(daemon, "-TERM");
            let _ = daemon.0.wait();
        }
        let report = common::hashsink(&[
            "report",
            "--all-sites",
            "--ledger",
            url,
            "--from",
            "2026-01-01",
            "--to",
            "2100-01-01",
            "--format",
            "csv",
        ]);
        let text = String::from_utf8_lossy(&report.stdout);
        assert!(
            report.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&report.stderr)
        );
        for (id, ..) in DAEMONS {
            assert!(text.contains(&format!("region {id} {tag}")), "{text}");
        }
        assert!(text.contains("all sites"), "{text}");
    }
    for (_, dir) in &daemons {
        std::fs::remove_dir_all(dir).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A coordinator stopped in order (SIGTERM, as systemd stops it) leaves `offline` on its state
/// topic, retained, where it said `online`: a daemon's operator reading the topic sees the
/// coordinator gone, not a stale `online`. (Its own broker and topics: it runs beside the
/// region test.)
#[test]
fn a_coordinator_stopped_in_order_leaves_offline_on_its_state_topic() {
    if !mosquitto_available() {
        return;
    }
    let port = 18836;
    let _broker = start_broker(port);
    let dir = std::env::temp_dir().join(format!("hashsink-region-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let path = dir.join("region.toml");
    std::fs::write(
        &path,
        format!(
            "[coordinator]\nbroker = \"127.0.0.1:{port}\"\nclient_id = \"stop-test\"\ntopic_prefix = \"stoptest\"\n\n\
             [[signal]]\nname = \"grid\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{port}\"\ntopic = \"grid/surplus\"\nfield = \"available_kw\"\nmax_age_s = 3\nmax_mw = 1\n\n\
             [[site]]\nname = \"plant\"\n[[site.signal]]\nname = \"plant meter\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{port}\"\ntopic = \"plant/surplus\"\nfield = \"available_kw\"\nmax_age_s = 3\nmax_mw = 1\n\n\
             [[daemon]]\nid = \"only\"\nsite = \"plant\"\ncapacity_mw = 0.05\nfailsafe_after_s = 20\n"
        ),
    )
    .expect("write the region file");
    let states = Arc::new(Mutex::new(Vec::<String>::new()));
    let (client, connection) = common::mqtt_client("stop-watcher", port);
    client
        .subscribe("stoptest/coordinator/state", rumqttc::QoS::AtLeastOnce)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = states.clone();
    common::on_publishes(connection, stop.clone(), move |p| {
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&p.payload).into_owned());
    });
    let log = dir.join("coordinator.log");
    let mut coordinator = start_coordinator(&path, &log);
    let said = |word: &str, limit: Duration| {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if states.lock().unwrap().last().is_some_and(|s| s == word) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(
        said("online", Duration::from_secs(10)),
        "{states:?}\n{}",
        read_log(&log)
    );
    common::signal(&coordinator, "-TERM");
    let t0 = Instant::now();
    let exit = loop {
        if let Some(exit) = coordinator.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    assert!(
        said("offline", Duration::from_secs(5)),
        "{states:?}\n{}",
        read_log(&log)
    );
    stop.store(true, Ordering::Relaxed);
    drop(client);
    std::fs::remove_dir_all(&dir).ok();
}
