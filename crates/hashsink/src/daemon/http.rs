//! The daemon's small HTTP endpoint: the plant (or an operator) POSTs the current surplus, and
//! may shed, curtail or resume the fleet; `GET /status` says what the daemon sees,
//! `GET /metrics` the same for Prometheus, `/api/v1/intervals` and `/api/v1/events` what the
//! ledger recorded; `/api/v1/openapi.json` describes it all. Bodies are
//! JSON, bounded in size; anything malformed gets a 4xx with the reason and changes nothing.
//! With `[[api.token]]`s configured every request needs a bearer token: reads a viewer's,
//! actions an operator's (`auth.rs`), and each action is recorded with who made it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hashsink_core::OperatorCommand;
use hashsink_fleetio::clock::ScaledClock;
use hashsink_units::{Timestamp, Watts};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::auth::{Denied, Role, Tokens};
use super::{Event, Status};

#[derive(Clone)]
struct Api {
    latest: Arc<Mutex<Option<(Timestamp, Watts)>>>,
    events: mpsc::UnboundedSender<Event>,
    status: watch::Receiver<Status>,
    clock: ScaledClock,
    tokens: Arc<Tokens>,
    /// The ledger's URL and the site's name in it, if the site keeps one.
    ledger: Option<(String, String)>,
}

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
        hashsink_twin::profile::parse_time(text).map_err(|e| format!("{name}: {e}"))
    };
    let (from, to) = (parse("from", &r.from)?, parse("to", &r.to)?);
    let span = to.secs_since(from);
    if !(span > 0.0 && span <= 31.0 * 86_400.0) {
        return Err("`to` must be after `from`, at most 31 days later".into());
    }
    Ok((from, to))
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message})),
    )
        .into_response()
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
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "this site keeps no ledger ([ledger] enabled = false)"})),
        )
            .into_response();
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
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": "the ledger could not be read; see the daemon's log"})),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": "ledger read aborted"})),
        )
            .into_response(),
    }
}

async fn get_intervals(State(api): State<Api>, Query(range): Query<Range>) -> Response {
    let (from, to) = match range_of(&range) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    ledger_read(&api, move |store, site| {
        Ok(serde_json::Value::Array(
            store
                .intervals(site, from, to)?
                .into_iter()
                .map(|i| {
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
                .collect(),
        ))
    })
    .await
}

async fn get_events(State(api): State<Api>, Query(range): Query<Range>) -> Response {
    let (from, to) = match range_of(&range) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    ledger_read(&api, move |store, site| {
        Ok(serde_json::Value::Array(
            store
                .events(site, from, to)?
                .into_iter()
                .map(|e| json!({"at_ms": e.at.as_millis(), "kind": e.kind, "actor": e.actor, "detail": e.detail}))
                .collect(),
        ))
    })
    .await
}

/// Who made the request, as the audit log names them.
#[derive(Clone)]
struct Actor(String);

/// Reads need a viewer, actions an operator; the actor goes with the request.
async fn authorize(
    State(api): State<Api>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let needs = if request.method() == axum::http::Method::GET {
        Role::Viewer
    } else {
        Role::Operator
    };
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    match api.tokens.check(header, needs) {
        Ok(actor) => {
            request.extensions_mut().insert(Actor(actor));
            next.run(request).await
        }
        Err(Denied::Unauthenticated) => (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({"error": "a valid bearer token is needed: Authorization: Bearer <token> (see `hashsink token`)"})),
        )
            .into_response(),
        Err(Denied::Forbidden { name, role }) => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": format!("{name} is a {role:?}; this needs {needs:?} or above")})),
        )
            .into_response(),
    }
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
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"error": message})),
    )
        .into_response()
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
    *api.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, Watts(body.available_w)));
    axum::Json(json!({"accepted_w": body.available_w, "at_ms": now.as_millis()})).into_response()
}

async fn operator(api: &Api, actor: Actor, cmd: OperatorCommand) -> Response {
    if api.events.send(Event::Operator(cmd, actor.0)).is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "the daemon is stopping"})),
        )
            .into_response();
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

pub fn router(
    latest: Arc<Mutex<Option<(Timestamp, Watts)>>>,
    events: mpsc::UnboundedSender<Event>,
    status: watch::Receiver<Status>,
    clock: ScaledClock,
    tokens: Arc<Tokens>,
    ledger: Option<(String, String)>,
) -> Router {
    let api = Api {
        latest,
        events,
        status,
        clock,
        tokens,
        ledger,
    };
    Router::new()
        .route("/surplus", post(post_surplus))
        .route(
            "/shed",
            post(
                |State(api): State<Api>, Extension(actor): Extension<Actor>| async move {
                    operator(&api, actor, OperatorCommand::ShedAll).await
                },
            ),
        )
        .route(
            "/resume",
            post(
                |State(api): State<Api>, Extension(actor): Extension<Actor>| async move {
                    operator(&api, actor, OperatorCommand::Resume).await
                },
            ),
        )
        .route("/curtail", post(post_curtail))
        .route(
            "/status",
            get(|State(api): State<Api>| async move { axum::Json(api.status.borrow().clone()) }),
        )
        .route("/api/v1/intervals", get(get_intervals))
        .route("/api/v1/events", get(get_events))
        .route(
            "/api/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    include_str!("openapi.json"),
                )
            }),
        )
        .route(
            "/metrics",
            get(|State(api): State<Api>| async move {
                let body = super::metrics::render(&api.status.borrow());
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }),
        )
        .layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .layer(DefaultBodyLimit::max(4096))
        .with_state(api)
}

pub async fn serve(
    addr: SocketAddr,
    router: Router,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the surplus endpoint: {e}"))?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }))
}
