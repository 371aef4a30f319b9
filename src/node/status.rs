//! The status socket: HTTP/1.1 + JSON (contract in `docs/status-api.md`).
//!
//! Handlers never touch protocol state directly: they ask the driver through a command
//! channel, so the state machine stays single-threaded and the answer is one consistent view.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::admin::{self, AdminToken};
use super::machine::BroadcastError;
use super::metrics;
use crate::contract::admin::{BlockRequest, Direction, FaultsReport, ShapeRequest, UnblockRequest};
use crate::contract::{
    ApiError, BroadcastAccepted, BroadcastRequest, DeliveredMessage, NodeStatus,
};

/// Largest broadcast payload accepted over HTTP (a frame must stay under 1 MiB).
const MAX_BODY: usize = 512 * 1024;

/// What the status socket asks of the driver.
pub enum Command {
    /// The node's view; `members: false` leaves the member list out (count and digest stay).
    Status {
        members: bool,
        reply: oneshot::Sender<NodeStatus>,
    },
    Messages(oneshot::Sender<Vec<DeliveredMessage>>),
    /// A local broadcast; refused (with the reason) when over `--max-message-bytes`.
    Broadcast {
        request: BroadcastRequest,
        reply: oneshot::Sender<Result<String, BroadcastError>>,
    },
    Leave,
    /// Link faults (`/admin/*`): applied by the driver, answered with what is in force.
    Faults {
        change: FaultChange,
        reply: oneshot::Sender<Result<FaultsReport, String>>,
    },
}

/// One change to the node's link faults; `Report` changes nothing.
pub enum FaultChange {
    Block(BlockRequest),
    Unblock(UnblockRequest),
    Shape(ShapeRequest),
    ClearShape,
    Report,
}

/// The status socket's routes. `/admin/*` is served only with an `admin` token, and then
/// only to requests that carry it (see [`super::admin`]); without one it answers 404.
pub fn router(commands: mpsc::Sender<Command>, admin: Option<AdminToken>) -> Router {
    let admin_routes = match admin {
        Some(token) => Router::new()
            .route("/admin/block", post(admin_block))
            .route("/admin/unblock", post(admin_unblock))
            .route("/admin/shape", post(admin_shape).delete(admin_clear_shape))
            .route("/admin/faults", get(admin_faults))
            .route_layer(axum::middleware::from_fn_with_state(token, admin::require)),
        None => Router::new().route("/admin/{*rest}", any(admin::off)),
    };
    Router::new()
        .route("/health", get(health))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/messages", get(messages))
        .route("/metrics", get(metrics_text))
        .route("/broadcast", post(broadcast))
        .merge(admin_routes)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(commands)
}

type Commands = State<mpsc::Sender<Command>>;

fn unavailable() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down")
}

fn error(code: StatusCode, msg: &str) -> Response {
    (
        code,
        Json(ApiError {
            error: msg.to_string(),
        }),
    )
        .into_response()
}

async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).await.ok()?;
    rx.await.ok()
}

async fn health() -> &'static str {
    "ok\n"
}

/// Liveness: the node's loop answers, joined or not (what `peerlab health --live` and the
/// Kubernetes liveness probe ask). Unlike `/health`, a wedged loop fails it.
async fn live(State(commands): Commands) -> Response {
    match ask(&commands, brief).await {
        Some(_) => (StatusCode::OK, "live\n").into_response(),
        None => unavailable(),
    }
}

/// The status socket of a held node (`--hold`): alive, so an orchestrator's liveness probe
/// does not restart it, and nothing else. `/ready`, `/status` and every other path answer
/// 503, so an observer sees a node that is down.
pub fn held_router() -> Router {
    Router::new()
        .route("/health", get(held))
        .route("/live", get(held))
        .fallback(|| async {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "held by the orchestrator: the node has not started",
            )
        })
}

async fn held() -> &'static str {
    "held\n"
}

/// Sizes only: `/ready` and `/metrics` never need the member list itself.
fn brief(reply: oneshot::Sender<NodeStatus>) -> Command {
    Command::Status {
        members: false,
        reply,
    }
}

async fn ready(State(commands): Commands) -> Response {
    match ask(&commands, brief).await {
        Some(s) if s.joined => (StatusCode::OK, "ready\n").into_response(),
        Some(_) => error(StatusCode::SERVICE_UNAVAILABLE, "not joined yet"),
        None => unavailable(),
    }
}

/// `GET /status?members=false`: what a checker polling many nodes asks for.
#[derive(serde::Deserialize)]
struct StatusQuery {
    #[serde(default = "listed")]
    members: bool,
}

fn listed() -> bool {
    true
}

async fn status(State(commands): Commands, Query(query): Query<StatusQuery>) -> Response {
    let members = query.members;
    match ask(&commands, |reply| Command::Status { members, reply }).await {
        Some(s) => Json(s).into_response(),
        None => unavailable(),
    }
}

async fn messages(State(commands): Commands) -> Response {
    match ask(&commands, Command::Messages).await {
        Some(m) => Json(m).into_response(),
        None => unavailable(),
    }
}

async fn metrics_text(State(commands): Commands) -> Response {
    match ask(&commands, brief).await {
        Some(s) => (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            metrics::render(&s),
        )
            .into_response(),
        None => unavailable(),
    }
}

async fn broadcast(
    State(commands): Commands,
    body: Result<Json<BroadcastRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        // An oversized body keeps its 413 (Payload Too Large); other faults are 400.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a broadcast request is at most {MAX_BODY} bytes"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected a JSON body {{\"title\": ..., \"message\": ...}}: {e}"),
            );
        }
    };
    match ask(&commands, |reply| Command::Broadcast { request, reply }).await {
        Some(Ok(id)) => Json(BroadcastAccepted { id }).into_response(),
        Some(Err(refused)) => error(StatusCode::PAYLOAD_TOO_LARGE, &refused.to_string()),
        None => unavailable(),
    }
}

/// Parses an admin body; an empty body means `T::default()` where `allow_empty` says so.
fn admin_body<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
    allow_empty: bool,
    shape: &str,
) -> Result<T, Box<Response>> {
    if allow_empty && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("expected a JSON body {shape}: {e}"),
        ))
    })
}

async fn apply_faults(commands: &mpsc::Sender<Command>, change: FaultChange) -> Response {
    match ask(commands, |reply| Command::Faults { change, reply }).await {
        Some(Ok(report)) => Json(report).into_response(),
        Some(Err(msg)) => error(StatusCode::BAD_REQUEST, &msg),
        None => unavailable(),
    }
}

#[derive(Default, serde::Deserialize)]
struct BlockBody {
    peers: Option<Vec<String>>,
    #[serde(default)]
    direction: Direction,
}

async fn admin_block(State(commands): Commands, body: Bytes) -> Response {
    const SHAPE: &str = r#"{"peers": ["id or host:port", ...], "direction": "both"|"in"|"out"}"#;
    let req = match admin_body::<BlockBody>(&body, false, SHAPE) {
        Ok(BlockBody {
            peers: Some(peers),
            direction,
        }) if !peers.is_empty() => BlockRequest { peers, direction },
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("name the peers to block: {SHAPE}"),
            );
        }
        Err(resp) => return *resp,
    };
    apply_faults(&commands, FaultChange::Block(req)).await
}

async fn admin_unblock(State(commands): Commands, body: Bytes) -> Response {
    match admin_body::<UnblockRequest>(&body, true, r#"{"peers": [...]} or none for all"#) {
        Ok(req) => apply_faults(&commands, FaultChange::Unblock(req)).await,
        Err(resp) => *resp,
    }
}

async fn admin_shape(State(commands): Commands, body: Bytes) -> Response {
    const SHAPE: &str = r#"{"delay_ms": 100, "jitter_ms": 10, "loss": 0.1, "rate_bytes_per_sec": 100000, "peers": [...]}"#;
    match admin_body::<ShapeRequest>(&body, false, SHAPE) {
        Ok(req) => apply_faults(&commands, FaultChange::Shape(req)).await,
        Err(resp) => *resp,
    }
}

async fn admin_clear_shape(State(commands): Commands) -> Response {
    apply_faults(&commands, FaultChange::ClearShape).await
}

async fn admin_faults(State(commands): Commands) -> Response {
    apply_faults(&commands, FaultChange::Report).await
}
