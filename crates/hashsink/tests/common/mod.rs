//! Helpers shared by the command-line tests: run the built `hashsink`, read JSON numbers.
#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the built `hashsink` from the repository root.
pub fn hashsink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run hashsink")
}

/// The number at `path` in `v`, or a panic that names the path.
pub fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for key in path {
        cur = &cur[key];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {cur}"))
}

/// A child process (an emulator, a protocol peer, a daemon), killed on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            print_log_tail(&mut self.0);
        }
    }
}

/// On a failed test, prints the last lines of a killed child's piped stderr (a daemon's log), so
/// that a failure seen once in CI can be read afterwards.
fn print_log_tail(child: &mut Child) {
    use std::io::Read;
    let Some(mut stderr) = child.stderr.take() else {
        return;
    };
    let mut log = String::new();
    let _ = stderr.read_to_string(&mut log);
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(60)..];
    eprintln!("--- the last {} lines of the child's log ---", tail.len());
    for line in tail {
        eprintln!("{line}");
    }
}

/// Starts `hashsink emulate` with `args` and waits until its miners listen.
pub fn emulate(args: &[&str]) -> KillOnDrop {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .arg("emulate")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hashsink emulate");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("Ctrl-C") => break,
            Some(Ok(_)) => continue,
            _ => panic!("the emulator stopped before it was ready"),
        }
    }
    KillOnDrop(child)
}

/// Writes `site` to a fresh temporary site file and starts `hashsink run` on it at 10x for
/// `for_secs` of the daemon's clock, with `extra` arguments and stdout/stderr piped. Returns the
/// daemon and the folder to remove afterwards.
pub fn run_daemon(tag: &str, site: &str, for_secs: u32, extra: &[&str]) -> (Child, PathBuf) {
    run_daemon_at(tag, site, 10.0, for_secs, extra)
}

/// [`run_daemon`] with the daemon's clock at `speed` (1: the wall clock).
pub fn run_daemon_at(
    tag: &str,
    site: &str,
    speed: f64,
    for_secs: u32,
    extra: &[&str],
) -> (Child, PathBuf) {
    let dir = std::env::temp_dir().join(format!("hashsink-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let path = dir.join("site.toml");
    std::fs::write(&path, site).expect("write the site file");
    let child = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(["run", "--config", path.to_str().expect("utf-8 path")])
        .args([
            "--speed",
            &speed.to_string(),
            "--for-secs",
            &for_secs.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hashsink run");
    (child, dir)
}

/// Whether the Python package `module` (a test peer from PyPI) is importable. Without it the
/// caller skips, unless `HASHSINK_REQUIRE_<MODULE>` is set (CI sets it), which fails the test.
#[allow(dead_code)]
pub fn python_peer(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    let require = format!("HASHSINK_REQUIRE_{}", module.to_ascii_uppercase());
    if !ok {
        assert!(
            std::env::var_os(&require).is_none(),
            "{require} is set but `python3 -c 'import {module}'` failed (pip install {module}; .ci/run does)"
        );
        hashsink_units::note_skipped_peer(module, &format!("pip install {module}; .ci/run does"));
    }
    ok
}

/// Waits until something listens on 127.0.0.1:`port` (a peer the test started), or fails
/// naming `what` after 20 s.
#[allow(dead_code)]
pub fn wait_listening(port: u16, what: &str) {
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "{what} did not start on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A throwaway CA (`ca.pem`), a server certificate for 127.0.0.1 signed by it (`server.pem`,
/// `server.key`) and an unrelated CA (`other-ca.pem`), made in `dir` with the openssl command.
#[allow(dead_code)]
pub fn make_certificates(dir: &std::path::Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    // Two self-signed CAs: the one that signs the server's certificate, and a stranger.
    let ca = |key: &str, pem: &str, subject: &str| {
        run(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", pem, "-days",
            "2", "-subj", subject,
        ])
    };
    ca("ca.key", "ca.pem", "/CN=test plant CA")
        && ca("other.key", "other-ca.pem", "/CN=someone else")
        && run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])
        && run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ])
}

/// The whole HTTP reply (status line and headers lower-cased) to a GET of `path`.
pub fn http_get(listen: &str, path: &str) -> String {
    http(listen, "GET", path)
}

/// The whole HTTP reply (status line and headers lower-cased) to `method` on `path`.
pub fn http(listen: &str, method: &str, path: &str) -> String {
    try_http(listen, method, path).unwrap_or_else(|e| panic!("{method} {path} at {listen}: {e}"))
}

/// [`http`], with the failure to reach the endpoint as an error (a daemon that was killed).
pub fn try_http(listen: &str, method: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(listen)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {listen}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(match reply.split_once("\r\n\r\n") {
        Some((head, body)) => format!("{}\r\n\r\n{body}", head.to_ascii_lowercase()),
        None => reply,
    })
}

pub fn status(listen: &str) -> Value {
    let reply = http_get(listen, "/status");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("status JSON: {e}: {reply}"))
}

/// The daemon's status, or None where it does not answer with one.
pub fn try_status(listen: &str) -> Option<Value> {
    let reply = try_http(listen, "GET", "/status").ok()?;
    serde_json::from_str(reply.split("\r\n\r\n").nth(1)?).ok()
}

/// A fresh mosquitto on `port`, once it listens.
pub fn start_broker(port: u16) -> KillOnDrop {
    let broker = KillOnDrop(
        Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto"),
    );
    wait_listening(port, "mosquitto");
    broker
}

pub fn mosquitto_available() -> bool {
    let ok = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("HASHSINK_REQUIRE_MOSQUITTO").is_none(),
            "HASHSINK_REQUIRE_MOSQUITTO is set but mosquitto is not installed"
        );
        hashsink_units::note_skipped_peer("mosquitto", "apt-get install mosquitto");
    }
    ok
}

/// Sends a Unix signal (`-USR1`, `-9`, ...) to a process the test started.
pub fn signal(process: &KillOnDrop, which: &str) {
    let ok = Command::new("kill")
        .args([which, &process.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill {which} {}", process.0.id());
}

/// A client of the local broker on `port` as `id` (5 s keep-alive, room for 64 requests).
pub fn mqtt_client(id: &str, port: u16) -> (rumqttc::Client, rumqttc::Connection) {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    rumqttc::Client::new(opts, 64)
}

/// Hands every message the broker delivers on `connection` to `each`, on a thread of its own,
/// until `stop` is set (a lost broker is retried every 200 ms).
pub fn on_publishes(
    mut connection: rumqttc::Connection,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut each: impl FnMut(rumqttc::Publish) + Send + 'static,
) {
    std::thread::spawn(move || {
        for event in connection.iter() {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => each(p),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
}
