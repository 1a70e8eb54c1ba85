//! The web interfaces on port 80: Braiins OS's REST API and GraphQL endpoint, and the stock
//! Antminer's digest-protected CGI pages.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::serve::IncomingStream;
use axum::{Extension, Router};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::HANG_FOR;
use crate::model::{Dialect, Fault, Shared};
use crate::rpc::{BOS_VERSION, braiins_level, mac, type_name};

#[derive(Clone)]
struct Miner {
    shared: Arc<Shared>,
    index: u32,
}

/// The address a connection was made to: which miner it is for.
#[derive(Clone, Copy, Debug)]
struct MinerAddress(IpAddr);

impl Connected<IncomingStream<'_, TcpListener>> for MinerAddress {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        let local = stream.io().local_addr().map(|a| a.ip());
        MinerAddress(local.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
    }
}

/// Each dialect's web interface, with the faults in front.
#[derive(Clone)]
struct Interfaces {
    shared: Arc<Shared>,
    braiins: Router,
    antminer: Router,
}

/// Serves a listener of one miner or of the whole fleet (wildcard): each request goes to the
/// web interface of the miner whose address its connection was made to.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let with_faults = |router: Router| router.layer(axum::middleware::from_fn(faults));
    let interfaces = Interfaces {
        shared,
        braiins: with_faults(braiins_router()),
        antminer: with_faults(antminer_router()),
    };
    let app = Router::new().fallback(to_miner).with_state(interfaces);
    let _ = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<MinerAddress>(),
    )
    .await;
}

/// Hands a request to its miner's interface; 404 where no miner of the fleet has a web one.
async fn to_miner(
    State(interfaces): State<Interfaces>,
    ConnectInfo(MinerAddress(address)): ConnectInfo<MinerAddress>,
    mut request: axum::extract::Request,
) -> Response {
    let shared = interfaces.shared;
    let Some(index) = shared.index_at(address) else {
        return (StatusCode::NOT_FOUND, "no emulated miner at this address").into_response();
    };
    let router = match shared.dialect(index) {
        Dialect::BraiinsOs => interfaces.braiins,
        Dialect::StockAntminer => interfaces.antminer,
        Dialect::LuxOs => {
            return (StatusCode::NOT_FOUND, "LuxOS has no web interface here").into_response();
        }
    };
    request.extensions_mut().insert(Miner { shared, index });
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Injected faults apply to the web interface as to the RPC port.
async fn faults(
    Extension(miner): Extension<Miner>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match miner.shared.fault(miner.index) {
        Fault::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Fault::HugeReply => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            " ".repeat(8 << 20),
        )
            .into_response(),
        Fault::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"miner_stats\": {\"real_hashrate\": [\u{1}",
        )
            .into_response(),
        Fault::None
        | Fault::IgnoresCommands
        | Fault::AtmOn
        | Fault::TenfoldPower
        | Fault::TunerLocked
        | Fault::SessionExpires
        | Fault::NoPowerField
        | Fault::SlowWake
        | Fault::BadReadings
        | Fault::AsleepDrawing => next.run(request).await,
    }
}

// ---- Braiins OS -------------------------------------------------------------------------------

const BRAIINS_PAGE: &str = "<!doctype html><html><head><title>Braiins OS</title></head><body><div id=\"root\">Braiins OS</div></body></html>";

fn braiins_router() -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Html(BRAIINS_PAGE) }))
        .route("/graphql", post(braiins_graphql))
        .route("/api/v1/auth/login", post(braiins_login))
        .route("/api/v1/miner/details", get(braiins_details))
        .route("/api/v1/miner/stats", get(braiins_stats))
        .route(
            "/api/v1/performance/power-target",
            put(braiins_power_target),
        )
        .route("/api/v1/actions/pause", put(braiins_pause))
        .route("/api/v1/actions/resume", put(braiins_resume))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"message": "Not Found"})),
            )
        })
}

fn bos_full_version() -> String {
    format!("2025-07-15-0-1a2b3c4d-{BOS_VERSION}-plus")
}

async fn braiins_graphql(Extension(miner): Extension<Miner>, body: Bytes) -> Response {
    let query = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let model = type_name(&miner.shared.spec(miner.index).model);
    let data = if query.contains("modelName") {
        json!({"bosminer": {"info": {"modelName": model}}})
    } else if query.contains("version") {
        json!({"bos": {"info": {"version": {"full": bos_full_version()}}}})
    } else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"errors": [{"message": "unsupported query"}]})),
        )
            .into_response();
    };
    axum::Json(json!({ "data": data })).into_response()
}

const BRAIINS_TOKEN: &str = "emulated-bos-token";

async fn braiins_login(body: Bytes) -> Response {
    let login: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let user = login.get("username").and_then(Value::as_str);
    let password = login.get("password").and_then(Value::as_str);
    if user == Some("root") && matches!(password, Some("root") | Some("")) {
        axum::Json(json!({"token": BRAIINS_TOKEN, "timeout_s": 3600})).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Invalid credentials"})),
        )
            .into_response()
    }
}

fn braiins_authorised(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.contains(BRAIINS_TOKEN))
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "Unauthorized"})),
    )
        .into_response()
}

async fn braiins_details(Extension(miner): Extension<Miner>, headers: HeaderMap) -> Response {
    if !braiins_authorised(&headers) {
        return unauthorised();
    }
    let spec = miner.shared.spec(miner.index);
    let (world, now) = miner.shared.world();
    let snap = world.snapshot(spec, miner.index, now);
    // bos.v1 MinerStatus: 1 not started, 2 normal, 3 paused, 4 suspended.
    let status = if snap.sleep_requested { 3 } else { 2 };
    axum::Json(json!({
        "uid": format!("emu{:08x}", miner.index),
        "miner_identity": {"brand": 1, "name": type_name(&spec.model), "miner_model": type_name(&spec.model)},
        "platform": 1,
        "bos_mode": 1,
        "bos_version": {"current": bos_full_version(), "major": BOS_VERSION},
        "hostname": format!("bos-{}", miner.index),
        "mac_address": mac(miner.index),
        "system_uptime_s": snap.uptime_s,
        "sticker_hashrate": {"gigahash_per_second": spec.nameplate_hashrate.ths() * 1000.0},
        "status": status,
    }))
    .into_response()
}

async fn braiins_stats(Extension(miner): Extension<Miner>, headers: HeaderMap) -> Response {
    if !braiins_authorised(&headers) {
        return unauthorised();
    }
    let spec = miner.shared.spec(miner.index);
    let (world, now) = miner.shared.world();
    let snap = world.snapshot(spec, miner.index, now);
    let ghs = snap.ghs();
    axum::Json(json!({
        "miner_stats": {
            "real_hashrate": {"last_5s": {"gigahash_per_second": ghs}, "last_1m": {"gigahash_per_second": ghs}},
            "nominal_hashrate": {"gigahash_per_second": spec.level_hashrate[snap.level as usize].ths() * 1000.0},
        },
        "power_stats": {
            "approximated_consumption": {"watt": snap.watts_json()},
            "efficiency": {"joule_per_terahash": if ghs > 0.0 { snap.watts() / (ghs / 1000.0) } else { 0.0 }},
        },
        "pool_stats": {"accepted_shares": 0, "rejected_shares": 0},
    }))
    .into_response()
}

async fn braiins_power_target(
    Extension(miner): Extension<Miner>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !braiins_authorised(&headers) {
        return unauthorised();
    }
    let spec = miner.shared.spec(miner.index);
    let Some(watt) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("watt").and_then(Value::as_f64))
    else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": "body must be {\"watt\": <number>}"})),
        )
            .into_response();
    };
    if miner.shared.fault(miner.index) == Fault::TunerLocked {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"message": crate::model::TUNER_LOCKED_REFUSAL})),
        )
            .into_response();
    }
    let (min, max) = (spec.min_power().w(), spec.max_power().w());
    if !(min..=max).contains(&watt) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"message": format!("power target {watt} W outside {min:.0}..{max:.0} W")}),
            ),
        )
            .into_response();
    }
    let level = braiins_level(spec, watt);
    let (mut world, now) = miner.shared.world();
    world.set_level(miner.index, level, now);
    if world.side[miner.index as usize].fault != Fault::IgnoresCommands {
        world.side[miner.index as usize].power_target = Some(watt);
    }
    axum::Json(json!({"watt": watt})).into_response()
}

async fn braiins_pause(Extension(miner): Extension<Miner>, headers: HeaderMap) -> Response {
    if !braiins_authorised(&headers) {
        return unauthorised();
    }
    let (mut world, now) = miner.shared.world();
    world.sleep(miner.index, now);
    axum::Json(json!({})).into_response()
}

async fn braiins_resume(Extension(miner): Extension<Miner>, headers: HeaderMap) -> Response {
    if !braiins_authorised(&headers) {
        return unauthorised();
    }
    let (mut world, now) = miner.shared.world();
    let level = world.sim.miners[miner.index as usize].level;
    world.wake(miner.index, level, now);
    axum::Json(json!({})).into_response()
}

// ---- stock Antminer ---------------------------------------------------------------------------

const ANTMINER_REALM: &str = "antMiner Configuration";
const ANTMINER_USER: &str = "root";
const ANTMINER_PASSWORD: &str = "root";

fn antminer_router() -> Router {
    Router::new()
        .route("/", any(antminer_page))
        .route("/cgi-bin/{page}", any(antminer_cgi))
}

fn md5_hex(text: &str) -> String {
    let digest = Md5::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn challenge(index: u32) -> Response {
    let nonce = md5_hex(&format!("hashsink-emulator-{index}"));
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            format!("Digest realm=\"{ANTMINER_REALM}\", nonce=\"{nonce}\", qop=\"auth\""),
        )],
        "401 Unauthorized",
    )
        .into_response()
}

/// Checks an RFC 7616 (MD5, qop=auth) digest response against root/root.
fn digest_ok(method: &Method, headers: &HeaderMap) -> bool {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let Some(params) = auth.strip_prefix("Digest ") else {
        return false;
    };
    let field = |name: &str| -> Option<String> {
        params.split(',').find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
        field("username"),
        field("realm"),
        field("nonce"),
        field("uri"),
        field("response"),
    ) else {
        return false;
    };
    if user != ANTMINER_USER || realm != ANTMINER_REALM {
        return false;
    }
    let ha1 = md5_hex(&format!("{user}:{realm}:{ANTMINER_PASSWORD}"));
    let ha2 = md5_hex(&format!("{}:{uri}", method.as_str()));
    let expected = match (field("qop"), field("nc"), field("cnonce")) {
        (Some(qop), Some(nc), Some(cnonce)) => {
            md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
        }
        _ => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    };
    expected == response
}

async fn antminer_page(
    Extension(miner): Extension<Miner>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if !digest_ok(&method, &headers) {
        return challenge(miner.index);
    }
    axum::response::Html(
        "<html><head><title>Antminer</title></head><body>antMiner Configuration</body></html>",
    )
    .into_response()
}

fn work_mode(sleep_requested: bool, level: u8) -> &'static str {
    match (sleep_requested, level) {
        (true, _) => "1",
        (false, 0) => "3",
        (false, 2) => "2",
        _ => "0",
    }
}

async fn antminer_cgi(
    Extension(miner): Extension<Miner>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    axum::extract::Path(page): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let _ = uri;
    if !digest_ok(&method, &headers) {
        return challenge(miner.index);
    }
    let spec = miner.shared.spec(miner.index);
    let kind = type_name(&spec.model);
    let (mut world, now) = miner.shared.world();
    let snap = world.snapshot(spec, miner.index, now);
    let body = match page.as_str() {
        "get_system_info.cgi" => json!({
            "minertype": kind, "nettype": "DHCP", "netdevice": "eth0",
            "macaddr": mac(miner.index).to_uppercase(), "hostname": format!("Antminer-{}", miner.index),
            "ipaddress": crate::miner_address(miner.shared.first_index + miner.index).to_string(),
            "system_mode": "GNU/Linux", "system_kernel_version": "Linux 4.9.38",
            "system_filesystem_version": "Thu Jun 29 17:08:24 CST 2023",
            "firmware_type": "Release", "serinum": format!("EMU{:010}", miner.index),
        }),
        "miner_type.cgi" => {
            json!({"miner_type": kind, "subtype": "", "fw_version": "Thu Jun 29 17:08:24 CST 2023"})
        }
        "get_miner_conf.cgi" => json!({
            "pools": [{"url": "stratum+tcp://pool.invalid:3333", "user": "hashsink.emulated", "pass": "x"}],
            "api-listen": true, "api-network": true, "api-groups": "A:stats:pools:devs:summary:version",
            "api-allow": "A:0/0,W:*", "bitmain-fan-ctrl": false, "bitmain-fan-pwm": "100",
            "bitmain-use-vil": true, "bitmain-freq": "", "bitmain-voltage": "1400", "bitmain-ccdelay": "0",
            "bitmain-pwth": "0", "bitmain-work-mode": work_mode(snap.sleep_requested, snap.level), "bitmain-freq-level": "100",
        }),
        "set_miner_conf.cgi" if method == Method::POST => {
            let conf: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mode = conf
                .get("miner-mode")
                .or_else(|| conf.get("bitmain-work-mode"))
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                });
            match mode.as_deref() {
                Some("1") => world.sleep(miner.index, now),
                Some(m @ ("0" | "2" | "3")) => {
                    let level = match m {
                        "3" => 0,
                        "2" => spec.max_level(),
                        _ => spec.preferred_level,
                    };
                    world.wake(miner.index, level, now);
                }
                _ => {
                    return (
                        StatusCode::OK,
                        axum::Json(
                            json!({"stats": "error", "code": "M001", "msg": "Illegal work mode"}),
                        ),
                    )
                        .into_response();
                }
            }
            json!({"stats": "success", "code": "M000", "msg": "OK!"})
        }
        "summary.cgi" => json!({
            "STATUS": {"STATUS": "S", "when": snap.unix_secs(), "Msg": "summary", "api_version": "1.0.0"},
            "INFO": {"miner_version": "uart_trans.1.3", "CompileTime": "", "type": kind},
            "SUMMARY": [{"elapsed": snap.uptime_s, "rate_5s": snap.ghs(), "rate_avg": snap.ghs(),
                         "rate_ideal": spec.level_hashrate[snap.level as usize].ths() * 1000.0, "rate_unit": "GH/s",
                         "hw_all": 0, "bestshare": 0, "status": []}],
        }),
        "stats.cgi" => json!({
            "STATUS": {"STATUS": "S", "when": snap.unix_secs(), "Msg": "stats", "api_version": "1.0.0"},
            "INFO": {"miner_version": "uart_trans.1.3", "type": kind},
            "STATS": [{"elapsed": snap.uptime_s, "rate_5s": snap.ghs(), "rate_avg": snap.ghs(), "rate_unit": "GH/s",
                       "chain_num": 3, "fan_num": 4, "fan": vec![snap.fan_rpm; 4],
                       "chain": (0..3).map(|i| json!({"index": i, "rate_real": snap.ghs() / 3.0, "asic_num": 77,
                           "temp_pcb": vec![snap.board_temp_c as i64; 4], "temp_chip": vec![snap.chip_temp_c as i64; 4]})).collect::<Vec<_>>()}],
        }),
        _ => return (StatusCode::NOT_FOUND, "Not Found").into_response(),
    };
    axum::Json(body).into_response()
}
