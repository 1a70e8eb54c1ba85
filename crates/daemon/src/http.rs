//! The daemon's small HTTP endpoint: the plant (or an operator) POSTs the current surplus, and
//! may shed, curtail or resume the fleet; `GET /status` says what the daemon sees,
//! `GET /metrics` the same for Prometheus, `/api/v1/intervals` and `/api/v1/events` what the
//! ledger recorded; `/api/v1/openapi.json` describes it all. Bodies are
//! JSON, bounded in size; anything malformed gets a 4xx with the reason and changes nothing.
//! With `[[api.token]]`s configured every request needs a bearer token: reads a viewer's,
//! actions an operator's (`auth.rs`), and each action is recorded with who made it.

use std::net::SocketAddr;
use std::sync::Arc;

use super::auth::{Denied, Role, Tokens};
use super::live::History;
use crate::Handle;
use crate::site::TlsFiles;
use axum::Extension;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hashsink_clock::ScaledClock;
use hashsink_core::OperatorCommand;
use hashsink_units::{Timestamp, Watts};
use serde::Deserialize;
use serde_json::json;

#[derive(Clone)]
struct Api {
    handle: Handle,
    clock: ScaledClock,
    tokens: Arc<Tokens>,
    /// The ledger's URL and the site's name in it, if the site keeps one.
    ledger: Option<(String, String)>,
    history: Arc<History>,
    /// One permit per open status stream (`MAX_STREAMS`).
    streams: Arc<tokio::sync::Semaphore>,
}

/// Status streams open at once: each holds a task and a socket for as long as its client
/// stays; past this a new one is refused (503) rather than starving the rest.
pub const MAX_STREAMS: usize = 256;
/// Connections open at once; past this a new one is closed at accept, so that idle sockets
/// cannot take the descriptors the miners and the plant need.
pub const MAX_CONNECTIONS: usize = 1024;
/// A client has this long to send a request's headers.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The range of a ledger query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    from: String,
    to: String,
}

/// The range asked for, or why it is not one (a 400).
fn range_of(r: &Range) -> Result<(Timestamp, Timestamp), String> {
    let parse = |name: &str, text: &str| {
        hashsink_units::parse_time(text).map_err(|e| format!("{name}: {e}"))
    };
    let (from, to) = (parse("from", &r.from)?, parse("to", &r.to)?);
    let span = to.secs_since(from);
    if !(span > 0.0 && span <= 31.0 * 86_400.0) {
        return Err("`to` must be after `from`, at most 31 days later".into());
    }
    Ok((from, to))
}

/// An error answer: the status and `{"error": message}`.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({"error": message.to_string()}))).into_response()
}

fn bad_request(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// Runs a ledger read on a blocking thread with its own connection (SQLite WAL lets it read
/// while the daemon writes).
async fn ledger_read(
    api: &Api,
    read: impl FnOnce(
        &mut dyn hashsink_ledger::Store,
        &str,
    ) -> hashsink_ledger::Result<serde_json::Value>
    + Send
    + 'static,
) -> Response {
    let Some((url, site)) = api.ledger.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "this site keeps no ledger ([ledger] enabled = false)",
        );
    };
    let result = tokio::task::spawn_blocking(move || {
        let mut store = hashsink_ledger::open(&url)?;
        read(store.as_mut(), &site)
    })
    .await;
    match result {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ledger read failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the ledger could not be read; see the daemon's log",
            )
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "ledger read aborted"),
    }
}

/// The ledger's rows in `range` as a JSON array: `rows` reads them, `row` writes each.
async fn ranged_read<T, R, W>(api: &Api, range: &Range, rows: R, row: W) -> Response
where
    R: FnOnce(
            &mut dyn hashsink_ledger::Store,
            &str,
            Timestamp,
            Timestamp,
        ) -> hashsink_ledger::Result<Vec<T>>
        + Send
        + 'static,
    W: Fn(T) -> serde_json::Value + Send + 'static,
{
    let (from, to) = match range_of(range) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    ledger_read(api, move |store, site| {
        let rows = rows(store, site, from, to)?;
        Ok(serde_json::Value::Array(
            rows.into_iter().map(row).collect(),
        ))
    })
    .await
}

async fn get_intervals(State(api): State<Api>, Query(range): Query<Range>) -> Response {
    let read = |store: &mut dyn hashsink_ledger::Store, site: &str, from, to| {
        store.intervals(site, from, to)
    };
    ranged_read(&api, &range, read, |i| {
        json!({
            "start_ms": i.start.as_millis(),
            "end_ms": i.end.as_millis(),
            "surplus_wh": i.surplus_wh,
            "fleet_wh": i.fleet_wh,
            "import_wh": i.import_wh,
            "hashes_th": i.hashes_th,
            "expected_sat": i.expected_sat,
            "mining": i.mining,
            "asleep": i.asleep,
            "faulted": i.faulted,
        })
    })
    .await
}

/// Every site in the ledger (the daemons of a region share one), each with its totals over
/// the range, this daemon's marked; then all of them together.
async fn get_sites(State(api): State<Api>, Query(range): Query<Range>) -> Response {
    let (from, to) = match range_of(&range) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    ledger_read(&api, move |store, this| {
        let mut all = hashsink_ledger::statement::all_sites(store, from, to)?;
        let total = |rows: Vec<hashsink_ledger::statement::Statement>| rows.into_iter().last();
        let region = all.pop().and_then(|(_, rows)| total(rows));
        let sites: Vec<serde_json::Value> = (all.into_iter())
            .map(|(site, rows)| json!({"site": site, "this": site == this, "total": total(rows)}))
            .collect();
        Ok(json!({"sites": sites, "all": region}))
    })
    .await
}

async fn get_events(State(api): State<Api>, Query(range): Query<Range>) -> Response {
    let read =
        |store: &mut dyn hashsink_ledger::Store, site: &str, from, to| store.events(site, from, to);
    ranged_read(&api, &range, read, |e| {
        json!({"at_ms": e.at.as_millis(), "kind": e.kind, "actor": e.actor, "detail": e.detail})
    })
    .await
}

/// Who made the request, as the audit log names them, and their role.
#[derive(Clone)]
struct Actor(String, Role);

/// The dashboard's page and its assets: public (they hold no data; the page asks for a token
/// when the data needs one).
fn is_public_asset(path: &str) -> bool {
    matches!(
        path,
        "/" | "/assets/dashboard.js" | "/assets/dashboard.css" | "/favicon.ico"
    )
}

/// The role a request needs: reads a viewer, entering coins an admin, other actions an operator.
fn role_needed(method: &axum::http::Method, path: &str) -> Role {
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        Role::Viewer
    } else if path == "/api/v1/payouts" || path == "/api/v1/sales" {
        Role::Admin
    } else {
        Role::Operator
    }
}

/// Reads need a viewer, actions an operator (coins an admin); the actor goes with the request.
async fn authorize(
    State(api): State<Api>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if is_public_asset(request.uri().path()) && request.method() == axum::http::Method::GET {
        return next.run(request).await;
    }
    if api.tokens.is_empty()
        && let Some(why) = open_mode_refusal(&request)
    {
        return error(StatusCode::FORBIDDEN, why);
    }
    let needs = role_needed(request.method(), request.uri().path());
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    match api.tokens.caller(header, needs) {
        Ok((actor, role)) => {
            request.extensions_mut().insert(Actor(actor, role));
            next.run(request).await
        }
        Err(Denied::Unauthenticated) => (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({"error": "a valid bearer token is needed: Authorization: Bearer <token> (see `hashsink token`)"})),
        )
            .into_response(),
        Err(Denied::Forbidden { name, role }) => error(StatusCode::FORBIDDEN, format!("{name} is a {role:?}; this needs {needs:?} or above")),
    }
}

/// In open mode (no tokens, so the endpoint listens on loopback only) a browser on this host
/// could be made to send an action by any page it visits (CSRF), or reach the endpoint under
/// another name that resolves to 127.0.0.1 (DNS rebinding). So an action must come as JSON
/// (another origin can only send that after a CORS preflight, which this endpoint never
/// grants), addressed to a loopback name, and, when the browser says where it comes from, from
/// this very origin. Returns why a request fails that, if it does.
pub fn open_mode_refusal(request: &axum::extract::Request) -> Option<String> {
    use axum::http::{Method, header};
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let headers = request.headers();
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let json = text(header::CONTENT_TYPE).is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if !json {
        return Some("an action needs Content-Type: application/json".into());
    }
    let host = text(header::HOST).unwrap_or("");
    if !is_loopback_name(host) {
        return Some(format!(
            "Host {host:?} is not a loopback name (localhost, 127.0.0.1, [::1]): with no tokens \
             the endpoint answers actions only on loopback"
        ));
    }
    match text(header::ORIGIN) {
        Some(origin) if origin != "null" => {
            let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
            (authority != host)
                .then(|| format!("Origin {origin:?} is not this endpoint ({host}): refused (CSRF)"))
        }
        _ => None,
    }
}

/// Whether a Host header names this machine: `localhost` or a loopback address, any port.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How long a request with a body (POST and the like) may take, body included, before it is
/// answered 408: a client that trickles its body cannot hold a connection and a handler. A GET
/// has no body to trickle (the header timeout covers its headers), and a long ledger export or
/// the status stream must not be cut.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

async fn request_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} s (body included): send it whole",
                REQUEST_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// Headers every answer carries: no sniffing, no framing, no referrer, and a page that runs
/// only its own script.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::HeaderValue;
    use axum::http::header;
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    response
}

/// A dashboard asset with its type.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The miners view filtered by `q` (address, model or firmware contain it) and `state`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MinersQuery {
    q: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Miner `i` of the view as the API shows it.
fn miner_json(view: &super::live::MinersView, i: usize) -> serde_json::Value {
    let entry = &view.directory[i];
    let mut v = serde_json::to_value(entry).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        // The last command it failed, in the firmware's words (null once one succeeds).
        obj.insert("last_refusal".into(), json!(view.refusals.get(&entry.id)));
    }
    if let (Some(obj), Some(l)) = (v.as_object_mut(), view.live.get(i)) {
        obj.insert("state".into(), json!(l.state));
        obj.insert("power_w".into(), json!(l.power_w));
        obj.insert("hashrate_ths".into(), json!(l.hashrate_ths));
        obj.insert("fault".into(), json!(l.fault));
        obj.insert(
            "excluded".into(),
            json!(l.fault == Some(hashsink_core::FaultKind::Excluded)),
        );
        // How the controller uses it (levels, on_off, none) and why.
        obj.insert("control".into(), json!(l.control));
        obj.insert("control_why".into(), json!(view.control_why(i)));
    }
    v
}

async fn get_miners(State(api): State<Api>, Query(q): Query<MinersQuery>) -> Response {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return bad_request(format!("limit = {limit} must be between 1 and 1000"));
    }
    let needle = q.q.unwrap_or_default().to_lowercase();
    if needle.len() > 100 {
        return bad_request("q is longer than 100 characters".into());
    }
    use super::live::LiveState;
    /// Which miners a `state` filter keeps (parsed once, not per miner).
    enum Keep {
        All,
        Excluded,
        Faulted,
        State(LiveState),
    }
    let keep = match q.state.as_deref() {
        None | Some("") | Some("any") => Keep::All,
        Some("excluded") => Keep::Excluded,
        Some("faulted") => Keep::Faulted,
        Some("mining") => Keep::State(LiveState::Mining),
        Some("booting") => Keep::State(LiveState::Booting),
        Some("asleep") => Keep::State(LiveState::Asleep),
        Some("unreachable") => Keep::State(LiveState::Unreachable),
        Some(other) => {
            return bad_request(format!(
                "state {other:?} is not one of mining, booting, asleep, unreachable, faulted, excluded"
            ));
        }
    };
    let view = api.handle.miners.borrow().clone();
    let matched: Vec<serde_json::Value> = view
        .directory
        .iter()
        .zip(view.live.iter())
        .enumerate()
        .filter(|(_, (e, l))| {
            (needle.is_empty()
                || e.address.to_lowercase().contains(&needle)
                || e.model.to_lowercase().contains(&needle)
                || e.firmware.to_lowercase().contains(&needle)
                || e.id.to_string() == needle)
                && match keep {
                    Keep::All => true,
                    Keep::Excluded => l.fault == Some(hashsink_core::FaultKind::Excluded),
                    Keep::Faulted => l.fault.is_some(),
                    Keep::State(s) => l.state == s,
                }
        })
        .map(|(i, _)| miner_json(&view, i))
        .collect();
    let total = matched.len();
    let page: Vec<serde_json::Value> = matched
        .into_iter()
        .skip(q.offset.unwrap_or(0))
        .take(limit)
        .collect();
    axum::Json(json!({
        "at_ms": view.at_ms,
        "fleet": view.directory.len(),
        "matched": total,
        "miners": page,
    }))
    .into_response()
}

/// The miner with this id, or a 404 that says how many there are.
fn find_miner(api: &Api, id: u32) -> Result<(Arc<super::live::MinersView>, usize), Box<Response>> {
    let view = api.handle.miners.borrow().clone();
    if view.directory.is_empty() {
        Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is starting: no miner is known yet",
        )))
    } else if (id as usize) < view.directory.len() {
        Ok((view, id as usize))
    } else {
        Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "no miner {id}: ids run from 0 to {}",
                view.directory.len().saturating_sub(1)
            ),
        )))
    }
}

/// One miner: its state now, and from the ledger its commands and totals of the last day.
async fn get_miner(State(api): State<Api>, Path(id): Path<u32>) -> Response {
    let (view, i) = match find_miner(&api, id) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let now = json!({"miner": miner_json(&view, i)});
    if api.ledger.is_none() {
        return axum::Json(now).into_response();
    }
    let to = api.clock.now();
    let from = to - std::time::Duration::from_secs(86_400);
    let current = now.clone();
    ledger_read(&api, move |store, site| {
        let commands: Vec<serde_json::Value> = store
            .audit(site, from, to)?
            .into_iter()
            .filter(|a| a.command.miner == Some(id))
            .rev()
            .take(50)
            .map(|a| {
                json!({
                    "at_ms": a.command.at.as_millis(),
                    "action": a.command.action,
                    "reason": a.command.reason,
                    "actor": a.command.actor,
                    "outcome": a.outcome.map(|o| o.1),
                })
            })
            .collect();
        let totals = store
            .miner_totals(site, from, to)?
            .into_iter()
            .find(|t| t.miner == id);
        let mut v = current;
        v["last_day"] = json!({
            "energy_kwh": totals.as_ref().map_or(0.0, |t| t.energy_wh / 1e3),
            "hashes_ph": totals.as_ref().map_or(0.0, |t| t.hashes_th / 1e3),
            "commands": commands,
        });
        Ok(v)
    })
    .await
}

async fn post_exclude(
    State(api): State<Api>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<u32>,
) -> Response {
    if let Err(r) = find_miner(&api, id) {
        return *r;
    }
    operator(
        &api,
        actor,
        OperatorCommand::Exclude(hashsink_core::MinerId(id)),
    )
    .await
}

async fn post_include(
    State(api): State<Api>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<u32>,
) -> Response {
    let (view, i) = match find_miner(&api, id) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if view.live.get(i).and_then(|l| l.fault) != Some(hashsink_core::FaultKind::Excluded) {
        return error(StatusCode::CONFLICT, format!("miner {id} is not excluded"));
    }
    operator(
        &api,
        actor,
        OperatorCommand::Include(hashsink_core::MinerId(id)),
    )
    .await
}

/// A model's firmware, miners per state, load and hashrate.
type ModelTally<'a> = (std::collections::BTreeSet<&'a str>, [u32; 6], f64, f64);

/// The fleet by state and by model.
async fn get_fleet(State(api): State<Api>) -> Response {
    use super::live::LiveState;
    let view = api.handle.miners.borrow().clone();
    let mut by_state: std::collections::BTreeMap<&'static str, u32> = [
        ("mining", 0),
        ("booting", 0),
        ("asleep", 0),
        ("unreachable", 0),
        ("faulted", 0),
        ("excluded", 0),
    ]
    .into();
    // model -> (firmware set, count, per state, power, hashrate)
    let mut by_model: std::collections::BTreeMap<&str, ModelTally> = Default::default();
    for (e, l) in view.directory.iter().zip(view.live.iter()) {
        let key = match (l.fault, l.state) {
            (Some(hashsink_core::FaultKind::Excluded), _) => 5,
            (Some(_), _) => 4,
            (None, LiveState::Mining) => 0,
            (None, LiveState::Booting) => 1,
            (None, LiveState::Asleep) => 2,
            (None, LiveState::Unreachable) => 3,
        };
        let name = [
            "mining",
            "booting",
            "asleep",
            "unreachable",
            "faulted",
            "excluded",
        ][key];
        *by_state.entry(name).or_default() += 1;
        let m = by_model.entry(e.model.as_str()).or_default();
        m.0.insert(e.firmware.as_str());
        m.1[key] += 1;
        m.2 += l.power_w;
        m.3 += l.hashrate_ths;
    }
    let models: Vec<serde_json::Value> = by_model
        .into_iter()
        .map(|(model, (firmware, n, power, hash))| {
            json!({
                "model": model,
                "firmware": firmware.into_iter().collect::<Vec<_>>(),
                "miners": n.iter().sum::<u32>(),
                "mining": n[0], "booting": n[1], "asleep": n[2], "unreachable": n[3], "faulted": n[4], "excluded": n[5],
                "power_w": power,
                "hashrate_ths": hash,
            })
        })
        .collect();
    axum::Json(json!({"at_ms": view.at_ms, "by_state": by_state, "by_model": models}))
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    span: String,
}

async fn get_history(State(api): State<Api>, Query(q): Query<HistoryQuery>) -> Response {
    let day = match q.span.as_str() {
        "hour" => false,
        "day" => true,
        other => return bad_request(format!("span {other:?} must be hour or day")),
    };
    axum::Json(json!({
        "span": q.span,
        "bucket_s": if day { 60 } else { 5 },
        "points": api.history.points(day),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn get_recent_events(State(api): State<Api>, Query(q): Query<RecentQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    axum::Json(json!({"events": api.handle.recent.after(q.after.unwrap_or(0), limit)}))
        .into_response()
}

/// Server-sent events: the status each time it changes, at most four times a second.
async fn get_stream(State(api): State<Api>) -> Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let Ok(permit) = api.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} status streams are open: try again later"),
        );
    };
    let status = api.handle.status.clone();
    // The first status at once; then each change, at most one every 250 ms (a change that
    // comes sooner waits out the rest of the 250 ms; one that comes later goes at once).
    let stream = futures::stream::unfold(
        (status, None::<tokio::time::Instant>),
        |(mut rx, last_sent)| async move {
            if let Some(sent) = last_sent {
                rx.changed().await.ok()?;
                tokio::time::sleep_until(sent + std::time::Duration::from_millis(250)).await;
            }
            let body = serde_json::to_string(&*rx.borrow_and_update()).ok()?;
            Some((
                Ok::<_, std::convert::Infallible>(SseEvent::default().event("status").data(body)),
                (rx, Some(tokio::time::Instant::now())),
            ))
        },
    );
    // The permit goes with the stream and is given back when the client goes.
    let stream = futures::StreamExt::map(stream, move |event| {
        let _held = &permit;
        event
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutBody {
    time: String,
    reference: String,
    /// BTC as a decimal string ("0.01234567"): exact, no float rounding.
    btc: String,
    #[serde(default)]
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaleBody {
    time: String,
    reference: String,
    btc: String,
    /// Fiat received as a decimal string ("1234.56").
    fiat: String,
    currency: String,
}

/// Parses a JSON array of records, each checked; the first bad one is named by its index.
fn records<T: serde::de::DeserializeOwned, R>(
    body: &[u8],
    check: impl Fn(&T) -> Result<R, String>,
) -> Result<Vec<R>, Box<Response>> {
    let items: Vec<T> = parse(body)?;
    if items.is_empty() || items.len() > 1000 {
        return Err(Box::new(bad(
            "send 1 to 1000 records in a JSON array".into()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| check(item).map_err(|e| Box::new(bad(format!("record {i}: {e}")))))
        .collect()
}

/// Writes records to the ledger on a blocking thread; answers how many were new.
async fn ledger_write(
    api: &Api,
    actor: Actor,
    what: &'static str,
    write: impl FnOnce(&mut dyn hashsink_ledger::Store, &str) -> hashsink_ledger::Result<(usize, usize)>
    + Send
    + 'static,
) -> Response {
    let response = ledger_read(api, move |store, site| {
        let (new, sent) = write(store, site)?;
        Ok(json!({"new": new, "already_there": sent - new}))
    })
    .await;
    if response.status().is_success() {
        let now = api.clock.now();
        api.handle
            .recent
            .push(now.as_millis(), what, &actor.0, "entered through the API");
    }
    response
}

async fn post_payouts(
    State(api): State<Api>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let payouts = match records(&body, |p: &PayoutBody| {
        hashsink_ledger::coins::payout_of(&p.time, &p.reference, &p.btc, &p.source)
    }) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    ledger_write(&api, actor, "payouts", move |store, site| {
        Ok((store.add_payouts(site, &payouts)?, payouts.len()))
    })
    .await
}

async fn post_sales(
    State(api): State<Api>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let sales = match records(&body, |s: &SaleBody| {
        hashsink_ledger::coins::sale_of(&s.time, &s.reference, &s.btc, &s.fiat, &s.currency)
    }) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    ledger_write(&api, actor, "sales", move |store, site| {
        Ok((store.add_sales(site, &sales)?, sales.len()))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SurplusBody {
    /// Power available to the fleet now, in watts.
    available_w: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CurtailBody {
    max_w: f64,
}

fn bad(message: String) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, message)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(bad(format!("invalid JSON body: {e}"))))
}

async fn post_surplus(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    let body: SurplusBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if !(body.available_w.is_finite() && body.available_w >= 0.0 && body.available_w < 1e11) {
        return bad(format!(
            "available_w = {} must be a finite number of watts, 0 or more",
            body.available_w
        ));
    }
    let now = api.clock.now();
    if api
        .handle
        .push_surplus(now, Watts(body.available_w))
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    axum::Json(json!({"accepted_w": body.available_w, "at_ms": now.as_millis()})).into_response()
}

async fn operator(api: &Api, actor: Actor, cmd: OperatorCommand) -> Response {
    if cmd == OperatorCommand::Resume
        && let Some(held) = api.handle.held_by_plant()
    {
        return error(
            StatusCode::CONFLICT,
            format!(
                "the plant's protection holds the fleet ({held}): a resume cannot lift it; it \
                 lifts when the plant clears its trip"
            ),
        );
    }
    if api.handle.operator(cmd, actor.0).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    axum::Json(json!({"accepted": format!("{cmd:?}")})).into_response()
}

async fn post_curtail(
    State(api): State<Api>,
    Extension(actor): Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let body: CurtailBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if !(body.max_w.is_finite() && body.max_w >= 0.0) {
        return bad(format!(
            "max_w = {} must be a finite number of watts, 0 or more",
            body.max_w
        ));
    }
    operator(&api, actor, OperatorCommand::CurtailTo(Watts(body.max_w))).await
}

/// What the endpoint serves from: the daemon's handles, the clock, who may call, the ledger.
pub struct ApiSetup {
    pub handle: Handle,
    pub clock: ScaledClock,
    pub tokens: Arc<Tokens>,
    /// The ledger's URL and the site's name in it, if the site keeps one.
    pub ledger: Option<(String, String)>,
}

pub fn router(setup: ApiSetup) -> Router {
    let history = Arc::new(History::default());
    history.follow(setup.handle.status.clone());
    let api = Api {
        handle: setup.handle,
        clock: setup.clock,
        tokens: setup.tokens,
        ledger: setup.ledger,
        history,
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
    };
    let shed = |State(api): State<Api>, Extension(actor): Extension<Actor>| async move {
        operator(&api, actor, OperatorCommand::ShedAll).await
    };
    let resume = |State(api): State<Api>, Extension(actor): Extension<Actor>| async move {
        operator(&api, actor, OperatorCommand::Resume).await
    };
    let reprobe = |State(api): State<Api>, Extension(actor): Extension<Actor>| async move {
        operator(&api, actor, OperatorCommand::Reprobe).await
    };
    let status =
        |State(api): State<Api>| async move { axum::Json(api.handle.status.borrow().clone()) };
    // Entering coins takes a larger body (up to 1,000 records).
    let coins = Router::new()
        .route("/api/v1/payouts", post(post_payouts))
        .route("/api/v1/sales", post(post_sales))
        .layer(DefaultBodyLimit::max(256 * 1024));
    Router::new()
        .route(
            "/",
            get(|| async {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("dashboard/index.html"),
                )
            }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("dashboard/dashboard.js"),
                )
            }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async {
                asset(
                    "text/css; charset=utf-8",
                    include_str!("dashboard/dashboard.css"),
                )
            }),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/surplus", post(post_surplus))
        .route("/shed", post(shed))
        .route("/resume", post(resume))
        .route("/curtail", post(post_curtail))
        .route("/status", get(status))
        .route("/api/v1/shed", post(shed))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/curtail", post(post_curtail))
        .route("/api/v1/status", get(status))
        .route(
            "/api/v1/whoami",
            get(|Extension(actor): Extension<Actor>| async move {
                axum::Json(json!({"actor": actor.0, "role": actor.1}))
            }),
        )
        .route(
            "/api/v1/kpis",
            get(|State(api): State<Api>| async move {
                let k = api.handle.status.borrow().kpis.clone();
                axum::Json(json!({
                    "kpis": k,
                    "absorption": k.absorption(),
                    "import_share": k.import_share(),
                }))
            }),
        )
        .route("/api/v1/fleet", get(get_fleet))
        .route("/api/v1/miners", get(get_miners))
        .route("/api/v1/miners/reprobe", post(reprobe))
        .route("/api/v1/miners/{id}", get(get_miner))
        .route("/api/v1/miners/{id}/exclude", post(post_exclude))
        .route("/api/v1/miners/{id}/include", post(post_include))
        .route("/api/v1/history", get(get_history))
        .route("/api/v1/stream", get(get_stream))
        .route("/api/v1/events/recent", get(get_recent_events))
        .route("/api/v1/intervals", get(get_intervals))
        .route("/api/v1/sites", get(get_sites))
        .route("/api/v1/events", get(get_events))
        .route(
            "/api/v1/openapi.json",
            get(|| async { asset("application/json", include_str!("openapi.json")) }),
        )
        .route(
            "/metrics",
            get(|State(api): State<Api>| async move {
                let body = super::metrics::render(&api.handle.status.borrow());
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }),
        )
        .layer(DefaultBodyLimit::max(4096))
        .merge(coins)
        .layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .layer(axum::middleware::from_fn(request_deadline))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(api)
}

/// Binds the endpoint's address (port 0 picks one), before anything is built to serve it.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the API and dashboard: {e}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `router` on a bound listener (over TLS when `tls` is given) until the process ends.
/// Returns the address served.
pub async fn serve(
    std_listener: std::net::TcpListener,
    router: Router,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<SocketAddr> {
    let bound = std_listener.local_addr()?;
    let table = Arc::new(ConnectionTable::new(MAX_CONNECTIONS));
    match tls {
        None => {
            let mut server = axum_server::from_tcp(std_listener)?.acceptor(CappedAcceptor {
                inner: axum_server::accept::DefaultAcceptor,
                table,
            });
            limit_header_time(server.http_builder());
            tokio::spawn(async move {
                let _ = server.serve(router.into_make_service()).await;
            });
        }
        Some(files) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "[api] TLS: cannot use {} and {}: {e} (PEM certificate chain and PEM private key)",
                        files.cert.display(),
                        files.key.display()
                    )
                })?;
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(config);
            let mut server =
                axum_server::from_tcp(std_listener)?.acceptor(CappedAcceptor { inner: tls, table });
            limit_header_time(server.http_builder());
            tokio::spawn(async move {
                let _ = server.serve(router.into_make_service()).await;
            });
        }
    }
    Ok(bound)
}

/// A client has `HEADER_READ_TIMEOUT` to send its headers (a slow-loris socket is closed).
fn limit_header_time(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
}

/// Accepts at most `MAX_CONNECTIONS` connections at once (through `inner`, TLS or not). At the
/// cap, one connection is closed to make room: the oldest of those that never sent a byte, else
/// the one quiet for longest. So a flood of idle sockets cannot lock the operator out of
/// `POST /shed` (each new connection pushes out the oldest idle one), nor push out the status
/// streams, which have sent their request. The permit travels with the connection's stream.
#[derive(Clone)]
struct CappedAcceptor<A> {
    inner: A,
    table: Arc<ConnectionTable>,
}

/// The open connections, for eviction at the cap.
struct ConnectionTable {
    permits: Arc<tokio::sync::Semaphore>,
    open: std::sync::Mutex<Vec<std::sync::Weak<Liveness>>>,
    started: std::time::Instant,
}

/// One connection's last activity, and the flag that closes it.
#[derive(Default)]
struct Liveness {
    /// Milliseconds since the table started, at the last byte read or written.
    active_ms: std::sync::atomic::AtomicU64,
    /// Whether the client has sent anything at all.
    spoke: std::sync::atomic::AtomicBool,
    evicted: std::sync::atomic::AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl ConnectionTable {
    fn new(cap: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(cap)),
            open: std::sync::Mutex::new(Vec::new()),
            started: std::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A permit for one more connection, pushing out the idlest if the table is full; None if
    /// none came free within a second.
    async fn admit(&self) -> Option<(tokio::sync::OwnedSemaphorePermit, Arc<Liveness>)> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.evict_idlest();
                tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    self.permits.clone().acquire_owned(),
                )
                .await
                .ok()?
                .ok()?
            }
        };
        let live = Arc::new(Liveness::default());
        live.active_ms
            .store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&live));
        Some((permit, live))
    }

    /// Closes the oldest connection that never spoke, else the one quiet for longest (its next
    /// read or write fails).
    fn evict_idlest(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = open
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|l| !l.evicted.load(Relaxed))
            .min_by_key(|l| (l.spoke.load(Relaxed), l.active_ms.load(Relaxed)));
        if let Some(l) = idlest {
            l.evicted.store(true, Relaxed);
            l.waker.wake();
        }
    }
}

impl<I, S, A> axum_server::accept::Accept<I, S> for CappedAcceptor<A>
where
    I: Send + 'static,
    S: Send + 'static,
    A: axum_server::accept::Accept<Counted<I>, S> + Clone + Send + Sync + 'static,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send,
        >,
    >;

    /// The socket is counted before `inner` (TLS) sees it, so that an eviction also ends a
    /// handshake that never finishes, and every byte, encrypted or not, marks it active.
    fn accept(&self, stream: I, service: S) -> Self::Future {
        let (table, inner) = (self.table.clone(), self.inner.clone());
        Box::pin(async move {
            let Some((permit, live)) = table.admit().await else {
                drop(stream);
                return Err(std::io::Error::other(format!(
                    "{MAX_CONNECTIONS} connections open and none would close: refused"
                )));
            };
            let counted = Counted {
                inner: stream,
                live,
                table,
                _permit: permit,
            };
            inner.accept(counted, service).await
        })
    }
}

/// A connection's socket with its permit (given back when the socket is dropped) and its
/// liveness: every byte marks it active; once evicted, reads and writes fail.
struct Counted<S> {
    inner: S,
    live: Arc<Liveness>,
    table: Arc<ConnectionTable>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<S> Counted<S> {
    /// Err once evicted; registers the task so an eviction wakes it.
    fn check(&self, cx: &std::task::Context<'_>) -> std::io::Result<()> {
        self.live.waker.register(cx.waker());
        if self.live.evicted.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            ));
        }
        Ok(())
    }

    fn touch(&self) {
        self.live
            .active_ms
            .store(self.table.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.check(cx)?;
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
            self.live
                .spoke
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.check(cx)?;
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
