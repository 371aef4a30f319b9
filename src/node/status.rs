//! The status socket: HTTP/1.1 + JSON (contract in `docs/status-api.md`).
//!
//! Handlers never touch protocol state directly: they ask the driver through a command
//! channel, so the state machine stays single-threaded and the answer is one consistent view.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot};

use super::metrics;
use crate::status_api::{
    ApiError, BroadcastAccepted, BroadcastRequest, DeliveredMessage, NodeStatus,
};

/// Largest broadcast payload accepted over HTTP (a frame must stay under 1 MiB).
const MAX_BODY: usize = 512 * 1024;

/// What the status socket asks of the driver.
pub enum Command {
    Status(oneshot::Sender<NodeStatus>),
    Messages(oneshot::Sender<Vec<DeliveredMessage>>),
    Broadcast {
        request: BroadcastRequest,
        reply: oneshot::Sender<String>,
    },
    Leave,
}

pub fn router(commands: mpsc::Sender<Command>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/messages", get(messages))
        .route("/metrics", get(metrics_text))
        .route("/broadcast", post(broadcast))
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

async fn ready(State(commands): Commands) -> Response {
    match ask(&commands, Command::Status).await {
        Some(s) if s.joined => (StatusCode::OK, "ready\n").into_response(),
        Some(_) => error(StatusCode::SERVICE_UNAVAILABLE, "not joined yet"),
        None => unavailable(),
    }
}

async fn status(State(commands): Commands) -> Response {
    match ask(&commands, Command::Status).await {
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
    match ask(&commands, Command::Status).await {
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
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected a JSON body {{\"title\": ..., \"message\": ...}}: {e}"),
            );
        }
    };
    match ask(&commands, |reply| Command::Broadcast { request, reply }).await {
        Some(id) => Json(BroadcastAccepted { id }).into_response(),
        None => unavailable(),
    }
}
