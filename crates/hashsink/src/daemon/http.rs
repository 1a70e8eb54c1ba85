//! The daemon's small HTTP endpoint: the plant (or an operator) POSTs the current surplus, and
//! may shed, curtail or resume the fleet; `GET /status` says what the daemon sees and
//! `GET /metrics` the same for Prometheus. Bodies are
//! JSON, bounded in size; anything malformed gets a 4xx with the reason and changes nothing.
//! With `[[api.token]]`s configured every request needs a bearer token: reads a viewer's,
//! actions an operator's (`auth.rs`), and each action is recorded with who made it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
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
) -> Router {
    let api = Api {
        latest,
        events,
        status,
        clock,
        tokens,
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
