//! Plant signals end to end: a real Modbus TCP server (pymodbus, from PyPI) holds the plant's
//! surplus, which the test writes as the plant would; the daemon polls it, judges it and drives
//! an emulated fleet. A changing surplus moves the fleet; garbage (a NaN float) is rejected and
//! logged without a crash; the fleet's load is written back; killing the server takes the fleet
//! to the fail-safe load. Runs as root for the emulated miners' ports (CI does).

mod common;

use common::{KillOnDrop, emulate, run_daemon};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_modbus::client::sync::{Reader, Writer};

fn pymodbus_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pymodbus"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("HASHSINK_REQUIRE_PYMODBUS").is_none(),
            "HASHSINK_REQUIRE_PYMODBUS is set but pymodbus is not installed"
        );
        eprintln!("skipping: pymodbus is not installed (pip install pymodbus)");
    }
    ok
}

fn modbus_server(port: u16) -> KillOnDrop {
    let child = Command::new("python3")
        .arg(common::repo_root().join("tests/peers/modbus_server.py"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the pymodbus server");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "pymodbus did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    KillOnDrop(child)
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

fn status(listen: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(listen).expect("daemon endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("status JSON: {e}: {reply}"))
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

#[test]
fn a_modbus_meter_drives_the_fleet_garbage_is_rejected_and_losing_it_fails_safe() {
    if !pymodbus_available() {
        return;
    }
    let port = 15020;
    let meter: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = modbus_server(port);
    write_surplus_kw(meter, 15.0);
    let _emulator = emulate(&[
        "--speed",
        "10",
        "--first-index",
        "4500",
        "--mix",
        "s19xp:10:luxos",
    ]);
    let listen = "127.0.0.1:18078";
    let (daemon, dir) = run_daemon(
        "signals",
        &format!(
            "[surplus]\nsource = \"signals\"\n\n[[signal]]\nname = \"export meter\"\nkind = \"modbus\"\naddress = \"{meter}\"\npoll_ms = 100\ntimeout_ms = 300\nmax_age_s = 5\nmax_mw = 0.05\nsurplus = {{ address = 0, type = \"f32\", unit = \"kw\" }}\nwrite_fleet_load = {{ address = 10, type = \"u32\", unit = \"w\" }}\nwrite_setpoint = {{ address = 12, type = \"u32\", unit = \"w\" }}\n\n[io]\ntelemetry_interval_s = 2\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.18.1-127.1.18.10\"]\n"
        ),
        600,
        &["--listen", listen, "--log", "info"],
    );
    let daemon = KillOnDrop(daemon);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 15 kW of surplus: about half of the 10 x 3010 W fleet runs, never above it.
    let s = wait_for(
        listen,
        Duration::from_secs(30),
        "the fleet follows 15 kW",
        |s| {
            assert!(
                s["fleet_w"].as_f64().unwrap() <= 15_000.0 + 300.0,
                "above the surplus: {s}"
            );
            s["mining"].as_u64().unwrap_or(0) >= 3 && s["fleet_w"].as_f64().unwrap() > 9_000.0
        },
    );
    assert_eq!(s["signals"][0]["trusted"], true, "{s}");
    assert!(
        (s["signals"][0]["mw"].as_f64().unwrap() - 0.015).abs() < 1e-6,
        "{s}"
    );
    // The daemon writes the fleet's load and its setpoint back for the plant.
    let written = wait_for(listen, Duration::from_secs(5), "write-back", |s| {
        let load = f64::from(read_u32(meter, 10));
        (load - s["fleet_w"].as_f64().unwrap()).abs() < 3_500.0 && load > 0.0
    });
    let setpoint = f64::from(read_u32(meter, 12));
    assert!(
        setpoint > 0.0 && setpoint <= 15_000.0,
        "setpoint {setpoint} W: {written}"
    );
    // The surplus falls to 6 kW: the fleet follows it down.
    write_surplus_kw(meter, 6.0);
    wait_for(
        listen,
        Duration::from_secs(15),
        "the fleet follows 6 kW",
        |s| {
            s["fleet_w"].as_f64().unwrap() <= 6_000.0 + 300.0
                && s["mining"].as_u64().unwrap_or(0) >= 1
        },
    );
    // Garbage: a NaN where the surplus should be. Rejected (logged), never used; once the last
    // good reading is stale the source is distrusted and the fleet fails safe.
    write_words(meter, 0, &[0x7FC0, 0x0000]);
    let s = wait_for(
        listen,
        Duration::from_secs(20),
        "NaN distrusts the source",
        |s| s["signals"][0]["trusted"] == false,
    );
    assert!(
        s["signals"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("stale"),
        "{s}"
    );
    wait_for(
        listen,
        Duration::from_secs(20),
        "the fleet fails safe on garbage",
        |s| s["mining"].as_u64() == Some(0) && s["booting"].as_u64() == Some(0),
    );
    // A good value again: trusted, the fleet comes back.
    write_surplus_kw(meter, 12.0);
    wait_for(listen, Duration::from_secs(30), "the fleet returns", |s| {
        s["signals"][0]["trusted"] == true && s["mining"].as_u64().unwrap_or(0) >= 2
    });
    // The meter goes away: the fleet goes to the fail-safe load (0 W here) within the
    // controller's reading age + fail-safe time (10 s + 5 s of the daemon's clock, 1.5 s of wall
    // time at 10x) plus the miners' own reaction.
    drop(server);
    let lost = Instant::now();
    let s = wait_for(
        listen,
        Duration::from_secs(20),
        "the fleet fails safe when the meter dies",
        |s| s["mining"].as_u64() == Some(0) && s["booting"].as_u64() == Some(0),
    );
    assert_eq!(s["signals"][0]["trusted"], false, "{s}");
    let took = lost.elapsed();
    assert!(took < Duration::from_secs(10), "fail-safe took {took:?}");
    // The log says why, every time.
    let mut daemon = daemon;
    let _ = daemon.0.kill();
    let mut log = String::new();
    use std::io::Read;
    daemon
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    for expected in [
        "reading rejected: not a number",
        "no trusted surplus signal",
        "source failed",
    ] {
        assert!(log.contains(expected), "the log lacks {expected:?}:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}
