//! The daemon's small HTTP endpoint: the plant (or an operator) POSTs the current surplus, and
//! may shed, curtail or resume the fleet; `GET /status` says what the daemon sees and
//! `GET /metrics` the same for Prometheus. Bodies are
//! JSON, bounded in size; anything malformed gets a 4xx with the reason and changes nothing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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

use super::{Event, Status};

#[derive(Clone)]
struct Api {
    latest: Arc<Mutex<Option<(Timestamp, Watts)>>>,
    events: mpsc::UnboundedSender<Event>,
    status: watch::Receiver<Status>,
    clock: ScaledClock,
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

async fn operator(api: &Api, cmd: OperatorCommand) -> Response {
    if api
        .events
        .send(Event::Operator(cmd, "http".into()))
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "the daemon is stopping"})),
        )
            .into_response();
    }
    axum::Json(json!({"accepted": format!("{cmd:?}")})).into_response()
}

async fn post_curtail(State(api): State<Api>, body: axum::body::Bytes) -> Response {
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
    operator(&api, OperatorCommand::CurtailTo(Watts(body.max_w))).await
}

pub fn router(
    latest: Arc<Mutex<Option<(Timestamp, Watts)>>>,
    events: mpsc::UnboundedSender<Event>,
    status: watch::Receiver<Status>,
    clock: ScaledClock,
) -> Router {
    let api = Api {
        latest,
        events,
        status,
        clock,
    };
    Router::new()
        .route("/surplus", post(post_surplus))
        .route("/shed", post(|State(api): State<Api>| async move { operator(&api, OperatorCommand::ShedAll).await }))
        .route("/resume", post(|State(api): State<Api>| async move { operator(&api, OperatorCommand::Resume).await }))
        .route("/curtail", post(post_curtail))
        .route("/status", get(|State(api): State<Api>| async move { axum::Json(api.status.borrow().clone()) }))
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
