//! `/admin/*` of the status socket: off unless the node has an admin token
//! ([`AdminToken`], `PEERLAB_ADMIN_TOKEN`), and then only for requests that carry it.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use crate::contract::token::{ADMIN_TOKEN_ENV, ADMIN_TOKEN_HEADER, AdminToken};

/// Middleware of `/admin/*` with a token configured: 401 unless the request carries it.
pub async fn require(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    if token.authorizes(request.headers()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(crate::contract::ApiError {
            error: "admin requests need the header Authorization: Bearer <admin token>".into(),
        }),
    )
        .into_response()
}

/// What `/admin/*` answers on a node without a token: 404, as for any path the node does
/// not serve. The API is not there at all (no credential could unlock it), so "forbidden"
/// (403) would suggest a credential that does not exist.
pub async fn off() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(crate::contract::ApiError {
            error: format!("the admin API is off on this node (start it with {ADMIN_TOKEN_ENV})"),
        }),
    )
        .into_response()
}
