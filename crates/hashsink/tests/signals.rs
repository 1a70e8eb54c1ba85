//! Plant signals end to end: a real Modbus TCP server (pymodbus, from PyPI) holds the plant's
//! surplus, which the test writes as the plant would; the daemon polls it, judges it and drives
//! an emulated fleet. A changing surplus moves the fleet; garbage (a NaN float) is rejected and
//! logged without a crash; the fleet's load is written back; killing the server takes the fleet
//! to the fail-safe load. Runs as root for the emulated miners' ports (CI does).

mod common;

use common::{
    KillOnDrop, emulate, http, http_get, mosquitto_available, run_daemon, start_broker, status,
};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_modbus::client::sync::{Reader, Writer};

fn modbus_server(port: u16) -> KillOnDrop {
    let child = Command::new("python3")
        .arg(common::repo_root().join("tests/peers/modbus_server.py"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the pymodbus server");
    common::wait_listening(port, "pymodbus");
    KillOnDrop(child)
}

/// Ten emulated S19 XP on LuxOS at 10x, from address index `first_index`.
fn ten_luxos_miners(first_index: u32) -> KillOnDrop {
    emulate(&[
        "--speed",
        "10",
        "--first-index",
        &first_index.to_string(),
        "--mix",
        "s19xp:10:luxos",
    ])
}

/// The plant writes its surplus (kW, f32, big-endian words) into holding registers 0-1.
fn write_surplus_kw(addr: SocketAddr, kw: f32) {
    let bits = kw.to_bits();
    write_words(addr, 0, &[(bits >> 16) as u16, bits as u16]);
}

fn write_words(addr: SocketAddr, at: u16, words: &[u16]) {
    let mut ctx = tokio_modbus::client::sync::tcp::connect(addr).expect("connect to pymodbus");
    ctx.write_multiple_registers(at, words)
        .expect("transport")
        .expect("no exception");
}

fn read_u32(addr: SocketAddr, at: u16) -> u32 {
    let mut ctx = tokio_modbus::client::sync::tcp::connect(addr).expect("connect to pymodbus");
    let w = ctx
        .read_holding_registers(at, 2)
        .expect("transport")
        .expect("no exception");
    (u32::from(w[0]) << 16) | u32::from(w[1])
}

/// Polls the daemon's status until `ok` holds, or fails with `what` after `limit`.
fn wait_for(listen: &str, limit: Duration, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let s = status(listen);
        if ok(&s) {
            return s;
        }
        assert!(t0.elapsed() < limit, "{what}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon on 10 emulated S19 XP (LuxOS) at 127.1.`subnet`.1-10 with one `[[signal]]` table,
/// its status endpoint on `listen`.
fn start_daemon(
    tag: &str,
    signal: &str,
    subnet: u8,
    listen: &str,
) -> (KillOnDrop, std::path::PathBuf) {
    let schedule = common::repo_root().join("examples/day-ahead.csv");
    let schedule = schedule.display();
    let (daemon, dir) = run_daemon(
        tag,
        &format!(
            "[surplus]\nsource = \"signals\"\nschedule = \"{schedule}\"\n\n[[signal]]\n{signal}\n[io]\ntelemetry_interval_s = 2\n\n# Short dwell, so that the fleet comes back within the test after a shed.\n[controller]\nmin_on_s = 20\nmin_off_s = 20\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.{subnet}.1-127.1.{subnet}.10\"]\n"
        ),
        600,
        &["--listen", listen, "--log", "info"],
    );
    let port = listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    common::wait_listening(port.expect("host:port"), "the daemon's endpoint");
    (KillOnDrop(daemon), dir)
}

/// Waits until the fleet runs near `kw` of surplus, and returns the status. Rising to it (from a
/// lower surplus) the fleet must never be above it.
fn follows(listen: &str, kw: f64, rising: bool) -> Value {
    let limit = kw * 1000.0 + 300.0;
    wait_for(
        listen,
        Duration::from_secs(30),
        &format!("the fleet follows {kw} kW"),
        |s| {
            let w = s["fleet_w"].as_f64().unwrap();
            assert!(!rising || w <= limit, "above the surplus: {s}");
            w <= limit && s["mining"].as_u64().unwrap_or(0) >= 1 && w > limit - 6_500.0
        },
    )
}

/// Waits until no miner runs, within 6 s of wall time (the miners' own ramp down at 10x).
fn sheds(listen: &str, what: &str) {
    let t0 = Instant::now();
    wait_for(listen, Duration::from_secs(10), what, |s| {
        s["mining"].as_u64() == Some(0) && s["booting"].as_u64() == Some(0)
    });
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "{what}: took {:?}",
        t0.elapsed()
    );
}

/// Waits until the source is distrusted and no miner runs (the fail-safe load is 0 W).
fn fails_safe(listen: &str, what: &str) -> Value {
    wait_for(listen, Duration::from_secs(20), what, |s| {
        s["signals"][0]["trusted"] == false
            && s["mining"].as_u64() == Some(0)
            && s["booting"].as_u64() == Some(0)
    })
}

/// Kills the signal's peer and checks that the fleet fails safe within 10 s of wall time: the
/// controller's reading age + fail-safe time (10 s + 5 s of the daemon's clock, 1.5 s of wall
/// time at 10x) plus the miners' own reaction.
fn peer_dies_and_the_fleet_fails_safe(listen: &str, peer: KillOnDrop, what: &str) {
    drop(peer);
    let lost = Instant::now();
    fails_safe(listen, what);
    assert!(
        lost.elapsed() < Duration::from_secs(10),
        "{what}: fail-safe took {:?}",
        lost.elapsed()
    );
}

/// Stops the daemon and checks that its log gives every `reason`.
fn log_says(mut daemon: KillOnDrop, dir: std::path::PathBuf, reasons: &[&str]) {
    use std::io::Read;
    // A peer killed just before may not be noticed yet when the fleet was already fail-safe.
    std::thread::sleep(Duration::from_secs(2));
    let _ = daemon.0.kill();
    let mut log = String::new();
    daemon
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    for expected in reasons {
        assert!(log.contains(expected), "the log lacks {expected:?}:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_modbus_meter_drives_the_fleet_garbage_is_rejected_and_losing_it_fails_safe() {
    if !common::python_peer("pymodbus") {
        return;
    }
    let port = 15020;
    let meter: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = modbus_server(port);
    write_surplus_kw(meter, 15.0);
    let _emulator = ten_luxos_miners(4500);
    let listen = "127.0.0.1:18078";
    let (daemon, dir) = start_daemon(
        "modbus",
        &format!(
            "name = \"export meter\"\nkind = \"modbus\"\naddress = \"{meter}\"\npoll_ms = 100\ntimeout_ms = 300\nmax_age_s = 5\nmax_mw = 0.05\nsurplus = {{ address = 0, type = \"f32\", unit = \"kw\" }}\nwrite_fleet_load = {{ address = 10, type = \"u32\", unit = \"w\" }}\nwrite_setpoint = {{ address = 12, type = \"u32\", unit = \"w\" }}\nwrite_heartbeat = {{ address = 16 }}\ntrip = {{ address = 20 }}\n"
        ),
        18,
        listen,
    );
    // 15 kW of surplus: about half of the 10 x 3010 W fleet runs, never above it.
    let s = follows(listen, 15.0, true);
    assert_eq!(
        s["schedule_blocks"], 4,
        "the day-ahead schedule is loaded: {s}"
    );
    assert_eq!(s["signals"][0]["trusted"], true, "{s}");
    assert!(
        (s["signals"][0]["mw"].as_f64().unwrap() - 0.015).abs() < 1e-6,
        "{s}"
    );
    // The same for Prometheus, at /metrics.
    let metrics = http_get(listen, "/metrics");
    assert!(
        metrics.contains("content-type: application/openmetrics-text"),
        "{metrics}"
    );
    for line in [
        "hashsink_signal_trusted{source=\"export meter\"} 1",
        "hashsink_surplus_power_watts 15000.0",
        "# TYPE hashsink_fleet_energy_joules counter",
    ] {
        assert!(
            metrics.contains(line),
            "no {line:?} in /metrics:\n{metrics}"
        );
    }
    // The daemon writes the fleet's load and its setpoint back for the plant.
    let written = wait_for(listen, Duration::from_secs(5), "write-back", |s| {
        let load = f64::from(read_u32(meter, 10));
        (load - s["fleet_w"].as_f64().unwrap()).abs() < 3_500.0 && load > 0.0
    });
    // The heartbeat register counts the loop's turns: the plant's interlock watches it.
    let beat = read_u32(meter, 16) >> 16;
    std::thread::sleep(Duration::from_millis(1500));
    let later = read_u32(meter, 16) >> 16;
    assert!(
        later > beat,
        "heartbeat {beat} then {later}: it does not beat"
    );
    let setpoint = f64::from(read_u32(meter, 12));
    assert!(
        setpoint > 0.0 && setpoint <= 15_000.0,
        "setpoint {setpoint} W: {written}"
    );
    // The plant's trip flag (register 20) sheds the fleet and holds it: an operator's resume
    // is refused, naming the source; an operator's shed given meanwhile outlives the trip's
    // clearing; the operator's resume then brings the fleet back.
    write_words(meter, 20, &[1]);
    sheds(listen, "the trip register sheds the fleet");
    wait_for(
        listen,
        Duration::from_secs(5),
        "the trip in the status",
        |s| s["protection"] == "tripped by export meter",
    );
    let refused = http(listen, "POST", "/resume");
    assert!(
        refused.starts_with("http/1.1 409") && refused.contains("tripped by export meter"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_secs(2));
    sheds(listen, "the fleet stays shed under a trip");
    assert!(http(listen, "POST", "/shed").starts_with("http/1.1 200"));
    write_words(meter, 20, &[0]);
    wait_for(listen, Duration::from_secs(5), "the trip cleared", |s| {
        s["protection"].is_null()
    });
    std::thread::sleep(Duration::from_secs(3));
    sheds(listen, "an operator's shed outlives the trip's clearing");
    assert!(http(listen, "POST", "/resume").starts_with("http/1.1 200"));
    follows(listen, 15.0, true);
    // SIGUSR1 is the same emergency path from the operator's shell; SIGUSR2 resumes.
    common::signal(&daemon, "-USR1");
    sheds(listen, "SIGUSR1 sheds the fleet");
    common::signal(&daemon, "-USR2");
    follows(listen, 15.0, true);
    // The surplus falls to 6 kW: the fleet follows it down.
    write_surplus_kw(meter, 6.0);
    follows(listen, 6.0, false);
    // Garbage: a NaN where the surplus should be. Rejected (logged), never used; once the last
    // good reading is stale the source is distrusted and the fleet fails safe.
    write_words(meter, 0, &[0x7FC0, 0x0000]);
    let s = fails_safe(listen, "the fleet fails safe on garbage");
    assert!(
        s["signals"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("stale"),
        "{s}"
    );
    // A good value again: trusted, the fleet comes back.
    write_surplus_kw(meter, 12.0);
    follows(listen, 12.0, true);
    // The meter goes away: the fleet goes to the fail-safe load (0 W here).
    peer_dies_and_the_fleet_fails_safe(listen, server, "the fleet fails safe when the meter dies");
    log_says(
        daemon,
        dir,
        &[
            "emergency shed: the plant's trip flag is set",
            // The meter gone: its trip register cannot be read either.
            "the plant's trip point cannot be read",
            "SIGUSR1: emergency shed",
            "SIGUSR2: resume",
            "shed: commands sent to the fleet",
            "reading rejected: not a number",
            "no trusted surplus signal",
            "source failed",
        ],
    );
}

/// The plant's side of the broker: publishes `payload` to `plant/surplus` every 100 ms, and
/// keeps what the daemon publishes on `hashsink/fleet`.
struct Plant {
    client: rumqttc::Client,
    payload: std::sync::Arc<std::sync::Mutex<String>>,
    fleet: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Plant {
    fn start(port: u16, payload: &str) -> Plant {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let (client, connection) = common::mqtt_client("the-plant", port);
        let plant = Plant {
            client: client.clone(),
            payload: Arc::new(Mutex::new(payload.to_string())),
            fleet: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        client
            .subscribe("hashsink/fleet", rumqttc::QoS::AtMostOnce)
            .unwrap();
        client
            .subscribe("hashsink/fleet/status", rumqttc::QoS::AtLeastOnce)
            .unwrap();
        let fleet = plant.fleet.clone();
        common::on_publishes(connection, plant.stop.clone(), move |p| {
            if p.topic.ends_with("/status") {
                let text = String::from_utf8_lossy(&p.payload).to_string();
                fleet
                    .lock()
                    .unwrap()
                    .push(serde_json::json!({ "status": text }));
            } else if let Ok(v) = serde_json::from_slice(&p.payload) {
                fleet.lock().unwrap().push(v);
            }
        });
        let payload = plant.payload.clone();
        let stop = plant.stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let body = payload.lock().unwrap().clone();
                let _ = client.try_publish("plant/surplus", rumqttc::QoS::AtMostOnce, false, body);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        plant
    }

    fn publish(&self, payload: &str) {
        *self.payload.lock().unwrap() = payload.to_string();
    }

    /// The plant's trip flag, once.
    fn trip(&self, payload: &str) {
        self.client
            .try_publish("plant/trip", rumqttc::QoS::AtLeastOnce, false, payload)
            .unwrap();
    }
}

impl Drop for Plant {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn an_mqtt_topic_drives_the_fleet_garbage_is_rejected_and_losing_the_broker_fails_safe() {
    if !mosquitto_available() {
        return;
    }
    let port = 18830;
    let broker = start_broker(port);
    let plant = Plant::start(port, r#"{"available_kw": 15}"#);
    let _emulator = ten_luxos_miners(4750);
    let listen = "127.0.0.1:18079";
    let (daemon, dir) = start_daemon(
        "mqtt",
        &format!(
            "name = \"plant broker\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{port}\"\ntopic = \"plant/surplus\"\nfield = \"available_kw\"\nunit = \"kw\"\nmax_age_s = 5\nmax_mw = 0.05\npublish_topic = \"hashsink/fleet\"\npublish_ms = 200\ntrip_topic = \"plant/trip\"\n"
        ),
        19,
        listen,
    );
    let s = follows(listen, 15.0, true);
    assert_eq!(s["signals"][0]["trusted"], true, "{s}");
    // The daemon publishes the fleet's load for the plant.
    let t1 = Instant::now();
    loop {
        let seen = plant.fleet.lock().unwrap().last().cloned();
        if let Some(v) = seen.filter(|v| v["fleet_w"].as_f64().unwrap_or(0.0) > 0.0) {
            assert!(v["setpoint_w"].as_f64().unwrap() <= 15_000.0, "{v}");
            // The heartbeat the plant's interlock watches, and the daemon's "online" (its
            // last will says "offline").
            assert!(v["heartbeat"].as_u64().unwrap_or(0) > 0, "{v}");
            // What a region's coordinator reads: the capacity of the ten S19 XP by
            // efficiency, the surplus followed, the daemon's health.
            let report = hashsink_plantio::region::parse_report(v.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{e}: {v}"));
            let fleet = hashsink_core::FleetConfig::build_from_shorthand(
                "s19xp:10:luxos",
                &hashsink_core::Catalogue::bundled(),
            )
            .unwrap();
            assert_eq!(report.tiers.len(), 1, "{v}");
            assert!(
                (report.capacity().w() - fleet.max_power().w()).abs() < 1.0,
                "{v}"
            );
            assert_eq!(report.cap, Some(hashsink_units::Watts(15_000.0)), "{v}");
            assert!(report.healthy, "{v}");
            let seen = plant.fleet.lock().unwrap().clone();
            assert!(
                seen.iter().any(|m| m["status"] == "online"),
                "no online status: {seen:?}"
            );
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "nothing published on hashsink/fleet"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The plant trips: every miner is told to sleep at once, whatever the surplus says.
    plant.trip("1");
    sheds(listen, "the trip topic sheds the fleet");
    plant.trip("clear");
    follows(listen, 15.0, true);
    plant.publish(r#"{"available_kw": 6}"#);
    follows(listen, 6.0, false);
    // Garbage payloads: rejected, logged; the source goes stale and the fleet fails safe.
    plant.publish(r#"{"available_kw": "lots"}"#);
    fails_safe(listen, "the fleet fails safe on garbage");
    plant.publish(r#"{"available_kw": 12}"#);
    follows(listen, 12.0, true);
    // The broker dies: the fleet fails safe.
    peer_dies_and_the_fleet_fails_safe(listen, broker, "the fleet fails safe without the broker");
    log_says(
        daemon,
        dir,
        &[
            "mqtt connected",
            "emergency shed: the plant's trip flag is set",
            "shed: commands sent to the fleet",
            "trip flag cleared",
            "reading rejected: field \"available_kw\" is not a number",
            "no trusted surplus signal",
            "source failed",
        ],
    );
}

/// The last link the plant can watch over MQTT: the daemon's `status` topic says `online` while it
/// lives; killed with SIGKILL (no goodbye), the broker publishes its last will, `offline`.
#[test]
fn the_brokers_last_will_says_offline_when_the_daemon_is_killed() {
    if !mosquitto_available() {
        return;
    }
    let port = 18831;
    let _broker = start_broker(port);
    let plant = Plant::start(port, r#"{"available_kw": 5}"#);
    let _emulator = ten_luxos_miners(11750);
    let listen = "127.0.0.1:18096";
    let (mut daemon, dir) = start_daemon(
        "mqtt-will",
        &format!(
            "name = \"plant broker\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{port}\"\ntopic = \"plant/surplus\"\nfield = \"available_kw\"\nunit = \"kw\"\nmax_age_s = 5\nmax_mw = 0.05\npublish_topic = \"hashsink/fleet\"\npublish_ms = 200\n"
        ),
        47,
        listen,
    );
    let last_status = || {
        plant
            .fleet
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|m| m["status"].as_str().map(str::to_string))
    };
    let t0 = Instant::now();
    while last_status().as_deref() != Some("online") {
        assert!(t0.elapsed() < Duration::from_secs(20), "never online");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.0.kill().expect("SIGKILL the daemon");
    daemon.0.wait().ok();
    let killed = Instant::now();
    while last_status().as_deref() != Some("offline") {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no last will {:?} after the kill",
            last_status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A Python peer from tests/peers steered by JSON lines on its stdin, telling what it saw as
/// lines on its stdout (the OpenADR VTN, the IEC 104 station).
struct LinePeer {
    child: KillOnDrop,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LinePeer {
    fn start(script: &str, args: &[&str]) -> LinePeer {
        let mut child = Command::new("python3")
            .arg(common::repo_root().join("tests/peers").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = LinePeer {
            child: KillOnDrop(child),
            lines,
            seen: Vec::new(),
        };
        peer.expect("ready", Duration::from_secs(20));
        peer
    }

    fn send(&mut self, command: Value) {
        use std::io::Write;
        let stdin = self.child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a line starting with `prefix` and returns it.
    fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        if let Some(i) = self.seen.iter().position(|l| l.starts_with(prefix)) {
            return self.seen.remove(i);
        }
        let t0 = Instant::now();
        loop {
            let left = limit.saturating_sub(t0.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("the peer never said {prefix:?}; it said {:?}", self.seen),
            }
        }
    }

    /// The VTN adds an event; returns its id.
    fn event(&mut self, signal: &str, kind: &str, intervals: Value) -> String {
        self.send(
            serde_json::json!({"event": {"signal": signal, "type": kind, "intervals": intervals}}),
        );
        let line = self.expect("event ", Duration::from_secs(5));
        line["event ".len()..].to_string()
    }
}

#[test]
fn openadr_events_from_a_real_vtn_drive_the_fleet_at_their_start_and_losing_it_fails_safe() {
    if !common::python_peer("openleadr") {
        return;
    }
    let port = 18081;
    let mut vtn = LinePeer::start(
        "openadr_vtn.py",
        &["--port", &port.to_string(), "--poll-s", "1"],
    );
    let _emulator = ten_luxos_miners(5000);
    let listen = "127.0.0.1:18082";
    // Readings are stamped on the daemon's 10x clock: 30 s of it is 3 s of wall time, three polls.
    let (daemon, dir) = start_daemon(
        "openadr",
        &format!(
            "name = \"utility VTN\"\nkind = \"openadr\"\naddress = \"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b\"\nven_name = \"minerfleet1\"\nmax_age_s = 30\nmax_mw = 0.05\nno_event_mw = 0.015\nunit = \"kw\"\n"
        ),
        20,
        listen,
    );
    assert_eq!(
        vtn.expect("registered ", Duration::from_secs(20)),
        "registered ven_minerfleet1"
    );
    // No event: the programme's normal allowance, 15 kW.
    follows(listen, 15.0, true);
    // The VEN reports the fleet's load to the VTN every second.
    let t0 = Instant::now();
    loop {
        let line = vtn.expect("report ", Duration::from_secs(10));
        let w: f64 = line["report ".len()..].parse().unwrap();
        if w > 6_000.0 {
            assert!(w <= 15_300.0, "{line}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no load reported");
    }
    // A LOAD_DISPATCH setpoint of 6 kW that starts in 3 s: opted in, and not acted on before
    // its start, then followed.
    let dispatch = vtn.event(
        "LOAD_DISPATCH",
        "setpoint",
        serde_json::json!([[3, 600, 6]]),
    );
    let added = Instant::now();
    assert_eq!(
        vtn.expect(&format!("opt {dispatch}"), Duration::from_secs(5)),
        format!("opt {dispatch} optIn")
    );
    let s = status(listen);
    if added.elapsed() < Duration::from_millis(2500) {
        assert!(
            (s["signals"][0]["mw"].as_f64().unwrap() - 0.015).abs() < 1e-9,
            "acted on before its start: {s}"
        );
    }
    wait_for(
        listen,
        Duration::from_secs(6),
        "the setpoint at its start",
        |s| (s["signals"][0]["mw"].as_f64().unwrap() - 0.006).abs() < 1e-9,
    );
    assert!(
        added.elapsed() >= Duration::from_millis(2900),
        "the setpoint was acted on {:?} after it was sent, before its start",
        added.elapsed()
    );
    follows(listen, 6.0, false);
    // A price event without a configured ceiling: opted out, ignored.
    let price = vtn.event(
        "ELECTRICITY_PRICE",
        "price",
        serde_json::json!([[0, 600, 0.4]]),
    );
    assert_eq!(
        vtn.expect(&format!("opt {price}"), Duration::from_secs(5)),
        format!("opt {price} optOut")
    );
    // SIMPLE level 2 starting now: the fleet sheds (level 2 maps to 0 MW by default).
    let simple = vtn.event("SIMPLE", "level", serde_json::json!([[0, 600, 2]]));
    sheds(listen, "a SIMPLE level 2 event sheds the fleet");
    // Both cancelled: the fleet comes back to the allowance.
    vtn.send(serde_json::json!({"cancel": simple}));
    vtn.send(serde_json::json!({"cancel": dispatch}));
    follows(listen, 15.0, true);
    // Garbage from the VTN: rejected, logged, the source distrusted, the fleet fails safe.
    vtn.send(serde_json::json!({"garbage": true}));
    fails_safe(listen, "the fleet fails safe on malformed XML");
    vtn.send(serde_json::json!({"garbage": false}));
    follows(listen, 15.0, true);
    // The VTN goes away: the fleet fails safe.
    peer_dies_and_the_fleet_fails_safe(listen, vtn.child, "the fleet fails safe without the VTN");
    log_says(
        daemon,
        dir,
        &[
            "openadr: registered with the VTN",
            "openadr: event received, opted in, starts in",
            "openadr: event opted out: ELECTRICITY_PRICE needs `price_ceiling`",
            "openadr: events active, the fleet may draw 0.006 MW",
            "reading rejected: VTN reply to OadrPoll: malformed XML",
            "no trusted surplus signal",
            "source failed",
        ],
    );
}

/// Issue 13's case, on the wall clock: a programme's no-event allowance of 300 kW over 70
/// emulated miners (35 S21 XP on LuxOS, 35 S21 on Braiins OS), then two overlapping
/// LOAD_DISPATCH events from a real VTN: 120 kW for 60 s and, 15 s into it, 40 kW for 20 s. From
/// 10 s after each step of the cap the fleet draws between 85 % of the cap and the cap; a cap
/// that the running miners fit under at their lowest levels puts none to sleep, a lower one only
/// those that do not fit; and the fleet returns to the 120 kW cap at once when the 40 kW one
/// ends (with the default ten minutes off, the miners slept for it come back early: the dip
/// was short). (The issue's first cap was 100 kW; at 100 kW the 70 miners' lowest levels, less
/// the margin, just miss fitting, so 120 kW shows the no-sleep case.)
#[test]
fn overlapping_openadr_events_step_the_cap_and_the_fleet_holds_between_85_percent_and_the_cap() {
    if !common::python_peer("openleadr") {
        return;
    }
    let port = 18091;
    let mut vtn = LinePeer::start(
        "openadr_vtn.py",
        &["--port", &port.to_string(), "--poll-s", "1"],
    );
    let _emulator = emulate(&[
        "--first-index",
        "8000",
        "--mix",
        "s21xp:35:luxos,s21:35:braiins-os",
    ]);
    let listen = "127.0.0.1:18092";
    let site = format!(
        "[surplus]\nsource = \"signals\"\n\n[[signal]]\nname = \"utility VTN\"\nkind = \"openadr\"\naddress = \"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b\"\nven_name = \"stepfleet\"\nmax_age_s = 30\nmax_mw = 0.4\nno_event_mw = 0.3\nunit = \"kw\"\n\n[io]\ntelemetry_interval_s = 1\n\n[ledger]\nenabled = false\n\n# Default dwell (ten minutes on and off); a quick start for the test.\n[controller]\nwake_confirm_s = 3\nmax_rise_fraction_per_s = 0.05\n\n[[group]]\nmodel = \"S21 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.32.1-127.1.32.35\"]\n\n[[group]]\nmodel = \"S21\"\nfirmware = \"braiins-os\"\naddresses = [\"127.1.32.36-127.1.32.70\"]\n"
    );
    let (daemon, dir) =
        common::run_daemon_at("openadr-steps", &site, 1.0, 400, &["--listen", listen]);
    let daemon = KillOnDrop(daemon);
    common::wait_listening(18092, "the daemon's endpoint");
    vtn.expect("registered ", Duration::from_secs(30));
    // The fleet fills the no-event allowance.
    let before = wait_for(
        listen,
        Duration::from_secs(120),
        "the fleet near 300 kW",
        |s| s["fleet_w"].as_f64().unwrap() > 240_000.0,
    );
    let running_before = before["mining"].as_u64().unwrap();
    let kw = 1000.0;
    vtn.event(
        "LOAD_DISPATCH",
        "setpoint",
        serde_json::json!([[3, 60, 120]]),
    );
    vtn.event(
        "LOAD_DISPATCH",
        "setpoint",
        serde_json::json!([[18, 20, 40]]),
    );
    let sent = Instant::now();
    // (from, to, cap): checked from 10 s after each step to just before the next.
    let windows = [
        (13.0, 17.5, 120.0 * kw),
        (28.0, 37.5, 40.0 * kw),
        (48.0, 62.5, 120.0 * kw),
    ];
    let mut samples = 0;
    while sent.elapsed() < Duration::from_secs_f64(62.5) {
        let t = sent.elapsed().as_secs_f64();
        let s = status(listen);
        let w = s["fleet_w"].as_f64().unwrap();
        if let Some(&(_, _, cap)) = windows.iter().find(|(a, b, _)| (*a..*b).contains(&t)) {
            samples += 1;
            assert!(
                w <= cap && w >= 0.85 * cap,
                "{t:.1} s after the events were sent: {w} W, the cap is {cap} W: {s}"
            );
            let mining = s["mining"].as_u64().unwrap();
            if cap == 120.0 * kw && t < 18.0 {
                // 300 to 120 kW: all 70 fit at their lowest levels (55 + 45 kW): none sleeps.
                assert_eq!(
                    mining, running_before,
                    "{t:.1} s: only modulated down at 120 kW: {s}"
                );
            }
            if cap == 40.0 * kw {
                // At 40 kW only what does not fit sleeps, the least efficient first: every S21
                // (1.6 kW at its lowest) and 5 S21 XP; 30 S21 XP run at 1.3 kW (38 kW).
                assert!(
                    (29..=31).contains(&mining),
                    "{t:.1} s: {mining} mining at 40 kW, 30 fit: {s}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(samples > 60, "{samples} samples");
    // Both events over: the fleet climbs back toward the allowance (waking miners takes the
    // wake confirmation and the rise limit), never above it.
    wait_for(
        listen,
        Duration::from_secs(30),
        "the fleet climbing back",
        |s| {
            let w = s["fleet_w"].as_f64().unwrap();
            assert!(w <= 300.0 * kw, "above the allowance: {s}");
            w > 150_000.0
        },
    );
    drop(vtn);
    log_says(
        daemon,
        dir,
        &["openadr: events active, the fleet may draw 0.040 MW"],
    );
}

#[test]
fn an_iec104_station_drives_the_fleet_bad_points_are_rejected_and_losing_it_fails_safe() {
    if !common::python_peer("c104") {
        return;
    }
    let port = 12404;
    let mut station = LinePeer::start("iec104_server.py", &["--port", &port.to_string()]);
    station.send(serde_json::json!({"surplus_kw": 15}));
    station.expect("ok", Duration::from_secs(5));
    let _emulator = ten_luxos_miners(5250);
    let listen = "127.0.0.1:18083";
    let (daemon, dir) = start_daemon(
        "iec104",
        &format!(
            "name = \"plant SCADA\"\nkind = \"iec104\"\naddress = \"127.0.0.1:{port}\"\ncommon_address = 47\nsurplus_ioa = 11\ntrip_ioa = 20\nunit = \"kw\"\npoll_ms = 1000\nmax_age_s = 5\nmax_mw = 0.05\n"
        ),
        21,
        listen,
    );
    follows(listen, 15.0, true);
    // The station's trip flag sheds the fleet; clearing it lets the fleet back.
    station.send(serde_json::json!({"trip": true}));
    sheds(listen, "the trip point sheds the fleet");
    station.send(serde_json::json!({"trip": false}));
    follows(listen, 15.0, true);
    station.send(serde_json::json!({"surplus_kw": 6}));
    follows(listen, 6.0, false);
    // A value flagged invalid is rejected; the source goes stale and the fleet fails safe.
    station.send(serde_json::json!({"invalid": true}));
    fails_safe(listen, "the fleet fails safe on an invalid value");
    station.send(serde_json::json!({"invalid": false}));
    station.send(serde_json::json!({"surplus_kw": 12}));
    follows(listen, 12.0, true);
    // The surplus point turns into a single point: the wrong type, rejected.
    station.send(serde_json::json!({"wrong_type": true}));
    fails_safe(listen, "the fleet fails safe on a point of the wrong type");
    // The station goes away: the fleet stays at the fail-safe load; the source failed.
    peer_dies_and_the_fleet_fails_safe(
        listen,
        station.child,
        "the fleet fails safe without the station",
    );
    log_says(
        daemon,
        dir,
        &[
            "iec104 connected to 127.0.0.1:12404",
            "emergency shed: the plant's trip flag is set",
            "trip flag cleared",
            "reading rejected: IOA 11: quality flags: invalid",
            "reading rejected: IOA 11: the surplus point carries M_SP_NA_1",
            "no trusted surplus signal",
            "source failed",
        ],
    );
}

#[test]
fn an_mqtt_broker_over_tls_drives_the_fleet_and_a_wrong_ca_is_never_trusted() {
    if !mosquitto_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hashsink-mqtt-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        common::make_certificates(&dir),
        "the openssl command could not make test certificates"
    );
    // mosquitto started as root drops to its own user, which must read the key.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (plain, tls) = (18844, 18843);
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!(
            "listener {plain} 127.0.0.1\nallow_anonymous true\n\nlistener {tls} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let _broker = KillOnDrop(
        Command::new("mosquitto")
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto"),
    );
    for port in [plain, tls] {
        common::wait_listening(port, "mosquitto");
    }
    // The plant publishes on the plain loopback listener; the daemon reads over TLS.
    let _plant = Plant::start(plain, r#"{"available_kw": 15}"#);
    let _emulator = ten_luxos_miners(5500);
    let listen = "127.0.0.1:18084";
    let d = dir.display();
    let (daemon, site_dir) = start_daemon(
        "mqtt-tls",
        &format!(
            "name = \"plant broker (TLS)\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{tls}\"\ntls = true\nca_file = \"{d}/ca.pem\"\ntopic = \"plant/surplus\"\nfield = \"available_kw\"\nmax_age_s = 5\nmax_mw = 0.05\n\n[[signal]]\nname = \"impostor check\"\nkind = \"mqtt\"\naddress = \"127.0.0.1:{tls}\"\ntls = true\nca_file = \"{d}/other-ca.pem\"\ntopic = \"plant/surplus\"\nfield = \"available_kw\"\nmax_age_s = 5\nmax_mw = 0.05\n"
        ),
        22,
        listen,
    );
    let s = follows(listen, 15.0, true);
    assert_eq!(s["signals"][0]["trusted"], true, "{s}");
    assert_eq!(
        s["signals"][1]["trusted"], false,
        "a broker whose certificate the CA did not sign is trusted: {s}"
    );
    log_says(
        daemon,
        site_dir,
        &[
            "mqtt connected",
            "source failed",
            "certificate verify failed",
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The surplus the plant pushed while the daemon read its fleet at start (a large fleet's
/// adoption takes seconds: 14 s for 100,000 miners) is taken in before the first tick: that
/// tick judges the newest reading, not the oldest, which is older than a reading is trusted for
/// and, the adoption being longer than `failsafe_within`, would shed the fleet just adopted
/// (seen with 100,000 miners: 75,110 adopted mining, all slept as a fail-safe, then kept asleep
/// for `min_off`).
#[test]
fn readings_that_arrive_while_the_fleet_is_adopted_do_not_shed_it() {
    // Ten miners mining at start, each answering after 0.3 s, read one at a time: the adoption
    // takes about 3 s, longer than the 2 s a reading is trusted for and the 1 s the fleet is
    // held without one.
    let _emulator = emulate(&[
        "--speed",
        "1",
        "--first-index",
        "12750",
        "--mix",
        "s19xp:10:luxos",
        "--faults",
        "slow=100",
        "--mining",
    ]);
    let listen = "127.0.0.1:18098";
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pusher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut s) = std::net::TcpStream::connect(listen) {
                    use std::io::Write;
                    let body = r#"{"available_w": 45000}"#;
                    let _ = write!(
                        s,
                        "POST /surplus HTTP/1.1\r\nHost: {listen}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // The miners boot (LuxOS wakes in seconds at 1x) before the daemon starts.
    std::thread::sleep(Duration::from_secs(8));
    let (daemon, _dir) = common::run_daemon_at(
        "adopt-pushed",
        "[surplus]\nsource = \"http\"\n\n[io]\nconcurrency = 1\ntelemetry_interval_s = 2\n\n[controller]\nmax_reading_age_ms = 2000\nfailsafe_within_ms = 1000\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.51.1-127.1.51.10\"]\n",
        1.0,
        120,
        &["--listen", listen, "--log", "info"],
    );
    let _daemon = KillOnDrop(daemon);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let adopted = wait_for(listen, Duration::from_secs(60), "adopted", |s| {
        s["mining"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(adopted["mining"], 10, "{adopted}");
    // For 15 s (past min_on's grace for a fail-safe, seven sweeps): all ten keep mining.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        let s = status(listen);
        assert_eq!(s["mining"], 10, "the adopted fleet was shed: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = pusher.join();
}
