//! The daemon's HTTP endpoint with tokens: each role can do exactly what it should,
//! unauthenticated, malformed and hostile requests get a 4xx and change nothing, actions are in
//! the ledger with who made them, and an open endpoint is refused anywhere but on loopback.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use hashsink_ledger::Store;
use sha2::{Digest, Sha256};

fn hex_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One raw HTTP request; returns the status code and the reply.
fn request(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("the daemon's endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let code = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, reply)
}

#[test]
fn each_role_does_exactly_what_it_should_and_hostile_requests_get_a_4xx() {
    let dir = std::env::temp_dir().join(format!("hashsink-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (viewer, operator, admin) = (
        "hs_viewer_test_token",
        "hs_operator_test_token",
        "hs_admin_test_token",
    );
    let listen = "127.0.0.1:18086";
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        format!(
            "[site]\nname = \"api test\"\n\n[surplus]\nsource = \"http\"\nlisten = \"{listen}\"\n\n[ledger]\nurl = \"ledger.db\"\ninterval_s = 1\n\n[[api.token]]\nname = \"screen\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\n[[api.token]]\nname = \"alice\"\nrole = \"operator\"\nsha256 = \"{}\"\n\n[[api.token]]\nname = \"carol\"\nrole = \"admin\"\nsha256 = \"{}\"\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.250.1-127.1.250.2\"]\n",
            hex_sha256(viewer),
            hex_sha256(operator),
            hex_sha256(admin)
        ),
    )
    .unwrap();
    let daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hashsink"))
            .args(["run", "--config"])
            .arg(&site)
            .args(["--for-secs", "15", "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    common::wait_listening(18086, "the daemon's endpoint");
    // Reads: a viewer may, nobody else.
    let (code, reply) = request(listen, "GET", "/status", None, "");
    assert_eq!(code, 401, "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{reply}"
    );
    assert_eq!(
        request(listen, "GET", "/status", Some("hs_wrong"), "").0,
        401
    );
    assert_eq!(request(listen, "GET", "/status", Some(viewer), "").0, 200);
    assert_eq!(request(listen, "GET", "/metrics", Some(viewer), "").0, 200);
    assert_eq!(request(listen, "GET", "/status", Some(operator), "").0, 200);
    // Actions: an operator may, a viewer may not.
    let (code, reply) = request(listen, "POST", "/shed", Some(viewer), "");
    assert_eq!(code, 403, "{reply}");
    assert!(reply.contains("screen is a Viewer"), "{reply}");
    assert_eq!(request(listen, "POST", "/shed", None, "").0, 401);
    assert_eq!(
        request(
            listen,
            "POST",
            "/surplus",
            Some(viewer),
            r#"{"available_w": 1000}"#
        )
        .0,
        403
    );
    let (code, reply) = request(listen, "POST", "/shed", Some(operator), "");
    assert_eq!(code, 200, "{reply}");
    // Malformed and hostile: a 4xx, nothing done.
    for (path, body, want) in [
        ("/curtail", "{not json", 422),
        ("/curtail", r#"{"max_w": 5, "sudo": true}"#, 422),
        ("/curtail", r#"{"max_w": -5}"#, 422),
        ("/surplus", r#"{"available_w": 1e400}"#, 422),
        (
            "/surplus",
            &format!(r#"{{"available_w": 1, "pad": "{}"}}"#, "x".repeat(8000)),
            413,
        ),
    ] {
        let (code, reply) = request(listen, "POST", path, Some(operator), body);
        assert_eq!(
            code,
            want,
            "{path} {}: {reply}",
            &body[..body.len().min(40)]
        );
    }
    for path in [
        "/../status",
        "/status/../../etc/passwd",
        "/%2e%2e/status",
        "/shed%00",
    ] {
        let (code, reply) = request(listen, "GET", path, Some(operator), "");
        assert!((400..500).contains(&code), "{path}: {reply}");
    }
    // The dashboard's page is public (it holds no data) and runs only its own script.
    let (code, reply) = request(listen, "GET", "/", None, "");
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains("/assets/dashboard.js"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{reply}"
    );
    assert_eq!(
        request(listen, "GET", "/assets/dashboard.js", None, "").0,
        200
    );
    assert_eq!(request(listen, "GET", "/api/v1/miners", None, "").0, 401);
    // The daemon publishes its miners once its loop runs.
    let t0 = std::time::Instant::now();
    while !request(listen, "GET", "/api/v1/miners", Some(viewer), "")
        .1
        .contains(r#""fleet":2"#)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no miners published"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Reads for the dashboard: a viewer may.
    let (code, reply) = request(listen, "GET", "/api/v1/whoami", Some(viewer), "");
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains(r#""role":"viewer""#), "{reply}");
    for path in [
        "/api/v1/status",
        "/api/v1/kpis",
        "/api/v1/fleet",
        "/api/v1/history?span=hour",
        "/api/v1/history?span=day",
        "/api/v1/events/recent?after=0",
        "/api/v1/miners/1",
    ] {
        let (code, reply) = request(listen, "GET", path, Some(viewer), "");
        assert_eq!(code, 200, "{path}: {reply}");
    }
    let (code, reply) = request(
        listen,
        "GET",
        "/api/v1/miners?q=127.1.250.2",
        Some(viewer),
        "",
    );
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains(r#""matched":1"#), "{reply}");
    for bad in [
        "/api/v1/miners?limit=0",
        "/api/v1/miners?limit=5000",
        "/api/v1/miners?state=sideways",
        "/api/v1/miners?sort=id",
        "/api/v1/history?span=week",
        "/api/v1/miners/abc",
    ] {
        let (code, reply) = request(listen, "GET", bad, Some(viewer), "");
        assert_eq!(code, 400, "{bad}: {reply}");
    }
    assert_eq!(
        request(listen, "GET", "/api/v1/miners/2", Some(viewer), "").0,
        404
    );
    // The stream: server-sent events.
    {
        let mut s = std::net::TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {viewer}\r\n\r\n"
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("event: status") {
            let n = s.read(&mut buf).expect("the stream sends a status");
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.contains("content-type: text/event-stream"), "{text}");
    }
    // Excluding a miner: an operator may, a viewer may not; including one not excluded is a
    // conflict; a miner that does not exist is a 404.
    assert_eq!(
        request(listen, "POST", "/api/v1/miners/1/exclude", Some(viewer), "").0,
        403
    );
    assert_eq!(
        request(
            listen,
            "POST",
            "/api/v1/miners/0/include",
            Some(operator),
            ""
        )
        .0,
        409
    );
    assert_eq!(
        request(
            listen,
            "POST",
            "/api/v1/miners/7/exclude",
            Some(operator),
            ""
        )
        .0,
        404
    );
    assert_eq!(
        request(
            listen,
            "POST",
            "/api/v1/miners/1/exclude",
            Some(operator),
            ""
        )
        .0,
        200
    );
    let t0 = std::time::Instant::now();
    loop {
        let (_, reply) = request(
            listen,
            "GET",
            "/api/v1/miners?state=excluded",
            Some(viewer),
            "",
        );
        if reply.contains(r#""matched":1"#) && reply.contains(r#""control":"none""#) {
            // Not used, and why.
            assert!(
                reply.contains(r#""control_why":"routed around (Excluded)"#),
                "{reply}"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // No miner answers here: the others are routed around as unreachable, and say so.
    let (_, reply) = request(listen, "GET", "/api/v1/miners/0", Some(viewer), "");
    assert!(
        reply.contains(r#""control_why":"routed around (Unreachable); last refusal: failed"#),
        "{reply}"
    );
    // Offering levels again to the miners used on/off: an operator's action.
    for (token, code) in [(viewer, 403), (operator, 200)] {
        let (got, reply) = request(listen, "POST", "/api/v1/miners/reprobe", Some(token), "");
        assert_eq!(got, code, "{reply}");
    }
    // Coins: only an admin enters them; each record is checked; a reference counts once.
    let payout = r#"[{"time": "2026-11-02T00:00:00Z", "reference": "pool-tx-1", "btc": "0.00120000", "source": "ocean"}]"#;
    assert_eq!(
        request(listen, "POST", "/api/v1/payouts", Some(operator), payout).0,
        403
    );
    let (code, reply) = request(listen, "POST", "/api/v1/payouts", Some(admin), payout);
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains(r#""new":1"#), "{reply}");
    let (_, reply) = request(listen, "POST", "/api/v1/payouts", Some(admin), payout);
    assert!(reply.contains(r#""already_there":1"#), "{reply}");
    let sale = r#"[{"time": "2026-11-03", "reference": "otc-9", "btc": "0.001", "fiat": "91.20", "currency": "usd"}]"#;
    let (code, reply) = request(listen, "POST", "/api/v1/sales", Some(admin), sale);
    assert_eq!(code, 200, "{reply}");
    for (path, body) in [
        (
            "/api/v1/payouts",
            r#"[{"time": "2026-11-02", "reference": "x", "btc": "0.000000001"}]"#,
        ),
        (
            "/api/v1/payouts",
            r#"[{"time": "2026-11-02", "reference": "", "btc": "1"}]"#,
        ),
        (
            "/api/v1/payouts",
            r#"{"time": "2026-11-02", "reference": "x", "btc": "1"}"#,
        ),
        ("/api/v1/payouts", "[]"),
        (
            "/api/v1/sales",
            r#"[{"time": "2026-11-02", "reference": "y", "btc": "1", "fiat": "1", "currency": "dollars"}]"#,
        ),
        (
            "/api/v1/sales",
            r#"[{"time": "2026-11-02", "reference": "y", "btc": "1", "fiat": "1", "currency": "USD", "note": 1}]"#,
        ),
    ] {
        let (code, reply) = request(listen, "POST", path, Some(admin), body);
        assert_eq!(code, 422, "{path} {body}: {reply}");
    }
    // The ledger through the API: the shed is there with who asked for it.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, reply) = request(
        listen,
        "GET",
        "/api/v1/events?from=2000-01-01&to=2000-01-20",
        Some(viewer),
        "",
    );
    assert_eq!(code, 200, "{reply}");
    let today = reply.len();
    let now = hashsink_units::Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let (from, to) = (now.as_millis() - 3_600_000, now.as_millis() + 3_600_000);
    let iso = |ms: i64| hashsink_units::format_time(hashsink_units::Timestamp(ms));
    let (code, reply) = request(
        listen,
        "GET",
        &format!("/api/v1/events?from={}&to={}", iso(from), iso(to)),
        Some(viewer),
        "",
    );
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply.len() > today && reply.contains("\"actor\":\"operator:alice\""),
        "{reply}"
    );
    let (code, reply) = request(
        listen,
        "GET",
        &format!("/api/v1/intervals?from={}&to={}", iso(from), iso(to)),
        Some(viewer),
        "",
    );
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains("\"start_ms\""), "{reply}");
    for bad in [
        "/api/v1/intervals?from=yesterday&to=2026-01-01",
        "/api/v1/intervals?from=2026-01-01&to=2026-03-01",
        "/api/v1/intervals?from=2026-01-02&to=2026-01-01",
        "/api/v1/events?from=2026-01-01",
        "/api/v1/events?from=2026-01-01&to=2026-01-02&drop=table",
    ] {
        let (code, reply) = request(listen, "GET", bad, Some(viewer), "");
        assert_eq!(code, 400, "{bad}: {reply}");
    }
    assert_eq!(
        request(
            listen,
            "GET",
            "/api/v1/events?from=2026-01-01&to=2026-01-02",
            None,
            ""
        )
        .0,
        401
    );
    let (code, reply) = request(listen, "GET", "/api/v1/openapi.json", Some(viewer), "");
    assert_eq!(code, 200, "{reply}");
    let mut daemon = daemon;
    assert!(daemon.0.wait().unwrap().success());
    let mut log = String::new();
    daemon
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(!log.contains("panicked"), "{log}");
    // The shed is on record with who asked for it, once.
    let mut ledger = hashsink_ledger::sqlite::SqliteStore::open(&dir.join("ledger.db")).unwrap();
    let all = (
        hashsink_units::Timestamp::from_millis(0),
        hashsink_units::Timestamp::from_millis(i64::MAX),
    );
    let sheds: Vec<_> = ledger
        .events("api test", all.0, all.1)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "shed" || e.kind == "curtail")
        .collect();
    assert_eq!(sheds.len(), 1, "{sheds:?}");
    assert_eq!(sheds[0].actor, "operator:alice");
    let excluded: Vec<_> = ledger
        .events("api test", all.0, all.1)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "exclude")
        .collect();
    assert_eq!(excluded.len(), 1, "{excluded:?}");
    assert_eq!(excluded[0].actor, "operator:alice");
    assert!(excluded[0].detail.contains("127.1.250.2"), "{excluded:?}");
    let payouts = ledger.payouts("api test", all.0, all.1).unwrap();
    assert_eq!(payouts.len(), 1, "{payouts:?}");
    assert_eq!(payouts[0].sat, 120_000);
    let sales = ledger.sales("api test", all.0, all.1).unwrap();
    assert_eq!(
        (sales[0].fiat_minor, sales[0].currency.as_str()),
        (9_120, "USD")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_open_endpoint_is_refused_off_loopback() {
    let dir = std::env::temp_dir().join(format!("hashsink-api-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        "[surplus]\nsource = \"http\"\nlisten = \"0.0.0.0:18087\"\n\n[ledger]\nenabled = false\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.250.3\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(["run", "--config"])
        .arg(&site)
        .args(["--for-secs", "2"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("[[api.token]]") && err.contains("127.0.0.1"),
        "{err}"
    );
}

#[test]
fn tokens_off_loopback_need_tls_unless_the_site_trusts_its_network() {
    let dir = std::env::temp_dir().join(format!("hashsink-api-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site = dir.join("site.toml");
    let token = format!(
        "[[api.token]]\nname = \"alice\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
        hex_sha256("a-token-of-alice")
    );
    let run = |api: &str| {
        std::fs::write(
            &site,
            format!("[surplus]\nsource = \"http\"\nlisten = \"0.0.0.0:18093\"\n\n[ledger]\nenabled = false\n\n[api]\n{api}\n{token}\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.250.4\"]\n"),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_hashsink"))
            .args(["run", "--config"])
            .arg(&site)
            .args(["--for-secs", "1"])
            .output()
            .unwrap()
    };
    let refused = run("");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("tls_cert") && err.contains("allow_plain_http"),
        "{err}"
    );
    let trusted = run("allow_plain_http = true");
    let err = String::from_utf8_lossy(&trusted.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(trusted.status.success(), "{err}");
    assert!(err.contains("tokens travel in clear"), "{err}");
}

#[test]
fn the_openapi_description_names_every_route() {
    let spec: serde_json::Value =
        serde_json::from_str(include_str!("../../daemon/src/openapi.json")).expect("OpenAPI JSON");
    assert_eq!(spec["openapi"], "3.1.0");
    let router = include_str!("../../daemon/src/http.rs");
    let mut routes = 0;
    for line in router.lines() {
        if let Some(path) = line
            .trim()
            .strip_prefix(".route(\"")
            .and_then(|r| r.split('"').next())
        {
            routes += 1;
            // The dashboard's page and assets are not API.
            if path == "/" || path.starts_with("/assets/") || path == "/favicon.ico" {
                continue;
            }
            assert!(
                spec["paths"][path].is_object(),
                "{path} is not in openapi.json"
            );
        }
    }
    // Routes written over several lines: `.route(` then the path on the next line.
    let mut lines = router.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == ".route(" {
            let path = lines
                .peek()
                .unwrap()
                .trim()
                .trim_end_matches(',')
                .trim_matches('"');
            routes += 1;
            if path == "/" || path.starts_with("/assets/") || path == "/favicon.ico" {
                continue;
            }
            assert!(
                spec["paths"][path].is_object(),
                "{path} is not in openapi.json"
            );
        }
    }
    assert!(routes >= 25, "{routes} routes found");
}

#[test]
fn the_endpoint_serves_https_when_the_site_gives_a_certificate() {
    let dir = std::env::temp_dir().join(format!("hashsink-api-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        common::make_certificates(&dir),
        "the openssl command could not make test certificates"
    );
    let token = "hs_tls_viewer_token";
    let site = |cert: &str| {
        format!(
            "[site]\nname = \"tls test\"\n\n[surplus]\nsource = \"http\"\n\n[ledger]\nenabled = false\n\n[api]\nlisten = \"127.0.0.1:18089\"\ntls_cert = \"{cert}\"\ntls_key = \"server.key\"\n\n[[api.token]]\nname = \"screen\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.250.4\"]\n",
            hex_sha256(token)
        )
    };
    // A key given as the certificate: refused before anything runs, naming the files.
    std::fs::write(dir.join("bad.toml"), site("server.key")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(["run", "--config"])
        .arg(dir.join("bad.toml"))
        .args(["--for-secs", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("TLS") && err.contains("server.key"), "{err}");
    std::fs::write(dir.join("site.toml"), site("server.pem")).unwrap();
    let _daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hashsink"))
            .args(["run", "--config"])
            .arg(dir.join("site.toml"))
            .args(["--for-secs", "20", "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_listening(18089, "the daemon's HTTPS endpoint");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let reply = client
            .get("https://127.0.0.1:18089/api/v1/whoami")
            .bearer_auth(token)
            .send()
            .await
            .expect("an HTTPS answer");
        assert_eq!(reply.status(), 200);
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["actor"], "operator:screen");
        // Without the token, still a 401 over TLS.
        let reply = client
            .get("https://127.0.0.1:18089/status")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 401);
        // A client that does not trust the certificate gets no answer.
        let untrusting = reqwest::Client::new();
        assert!(
            untrusting
                .get("https://127.0.0.1:18089/status")
                .send()
                .await
                .is_err()
        );
    });
    // Plain HTTP on the TLS port gets no HTTP answer.
    // (The server may close before the request is written: a write error is that answer too.)
    let mut plain = std::net::TcpStream::connect("127.0.0.1:18089").unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = write!(
        plain,
        "GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(b"HTTP/"),
        "plain HTTP on the TLS port got an HTTP answer: {}",
        String::from_utf8_lossy(&reply)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn idle_sockets_slow_headers_and_stream_floods_are_bounded() {
    use std::net::TcpStream;
    hashsink_clock::raise_open_file_limit(8192);
    let dir = std::env::temp_dir().join(format!("hashsink-api-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let site = dir.join("site.toml");
    std::fs::write(
        &site,
        "[surplus]\nsource = \"http\"\nlisten = \"127.0.0.1:18094\"\n\n[ledger]\nenabled = false\n\n[[group]]\nmodel = \"S19 XP\"\nfirmware = \"luxos\"\naddresses = [\"127.1.250.5\"]\n",
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_hashsink"))
        .args(["run", "--config"])
        .arg(&site)
        .args(["--for-secs", "120"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listen = "127.0.0.1:18094";
    common::wait_listening(18094, "the daemon's endpoint");
    let status_ok = || request(listen, "GET", "/status", None, "").0 == 200;
    assert!(status_ok());
    // Status streams past the cap are refused with a 503; the others go on.
    let mut streams = Vec::new();
    for _ in 0..hashsink_daemon::http::MAX_STREAMS {
        let mut s = TcpStream::connect(listen).unwrap();
        write!(s, "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        streams.push(s);
    }
    // Each stream's first answer, so that all of them hold their permit.
    for s in &mut streams {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        assert!(s.read(&mut buf).unwrap() > 0);
    }
    let (code, reply) = request(listen, "GET", "/api/v1/stream", None, "");
    assert_eq!(code, 503, "{reply}");
    // A flood of idle sockets up to the connection cap, on top of the open streams, does not
    // lock the operator out: each new connection past the cap closes the oldest that never
    // sent a byte, so a request still gets through, and idle sockets are the ones closed.
    let mut idle: Vec<TcpStream> = (0..hashsink_daemon::http::MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(listen).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(status_ok(), "locked out by idle sockets");
    assert!(status_ok(), "locked out by idle sockets");
    let t0 = std::time::Instant::now();
    let closed = loop {
        let closed = idle
            .iter_mut()
            .filter(|s| {
                let mut s: &TcpStream = s;
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 16];
                match s.read(&mut buf) {
                    Ok(0) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                    Ok(_) => false,
                }
            })
            .count();
        if closed >= 1 || t0.elapsed() > Duration::from_secs(5) {
            break closed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(closed >= 1, "no idle socket was closed to make room");
    // The streams, which sent their request, were not the ones pushed out: each still gets
    // its updates.
    for s in &mut streams {
        let mut buf = [0u8; 4096];
        assert!(s.read(&mut buf).unwrap() > 0, "a status stream was closed");
    }
    drop(streams);
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    assert!(status_ok(), "the endpoint serves on");
    // A client that trickles its body is answered 408 after the request timeout.
    let mut slow_body = TcpStream::connect(listen).unwrap();
    write!(
        slow_body,
        "POST /api/v1/curtail HTTP/1.1\r\nHost: {listen}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kw\": "
    )
    .unwrap();
    let slow_body_at = std::time::Instant::now();
    // A client that never finishes its headers is closed after the header timeout.
    let mut slow = TcpStream::connect(listen).unwrap();
    write!(slow, "GET /status HTTP/1.1\r\nHost: x\r\n").unwrap();
    let limit = hashsink_daemon::http::HEADER_READ_TIMEOUT + Duration::from_secs(5);
    slow.set_read_timeout(Some(limit)).unwrap();
    let t0 = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        t0.elapsed() < limit,
        "a slow client held its socket for {:?}",
        t0.elapsed()
    );
    let limit = hashsink_daemon::http::REQUEST_TIMEOUT + Duration::from_secs(5);
    slow_body.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let _ = slow_body.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        slow_body_at.elapsed() >= hashsink_daemon::http::REQUEST_TIMEOUT
            && slow_body_at.elapsed() < limit,
        "answered after {:?}",
        slow_body_at.elapsed()
    );
    assert!(status_ok(), "the endpoint serves on");
    let _ = daemon.kill();
    let _ = daemon.wait();
    std::fs::remove_dir_all(&dir).ok();
}
