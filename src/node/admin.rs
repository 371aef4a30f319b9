//! The admin token: the one credential of the status socket's `/admin/*`.
//!
//! `/admin/*` can cut and shape a node's links, so it is off unless a token is configured
//! (`PEERLAB_ADMIN_TOKEN`), and then every admin request must carry
//! `Authorization: Bearer <token>`. The orchestrator generates one token per run
//! ([`AdminToken::generate`]) and hands it to its nodes in their environment, never on a
//! command line (`ps` shows those to every user).
//!
//! The token's text is kept out of everything that prints: `Debug` and `Display` say
//! `<redacted>`, and comparisons go through SHA-256 digests compared in constant time, so
//! neither the answer's timing nor an error message tells an attacker how much of a guess
//! was right.

use std::fmt;
use std::str::FromStr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable nodes read the token from (also `--admin-token`).
pub const ADMIN_TOKEN_ENV: &str = "PEERLAB_ADMIN_TOKEN";

/// A secret that unlocks `/admin/*`; see the module docs. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A fresh random token (256 bits from the OS's generator, as hex): one per run.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        AdminToken(hex::encode(bytes))
    }

    /// The empty token: `/admin/*` stays off (see [`FromStr`] below).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The token's text, for the one place that must send it: an environment variable of
    /// a node, or the `Authorization` header of an admin request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value that carries this token.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `headers` carry this token as `Authorization: Bearer <token>`. Both sides
    /// are hashed first, so the comparison takes the same time whatever the guess.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let given = Sha256::digest(given.trim().as_bytes());
        let expected = Sha256::digest(self.0.as_bytes());
        given.ct_eq(&expected).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl fmt::Display for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parses `--admin-token`; the error never echoes the value. An empty value (what a
/// compose file's `${PEERLAB_ADMIN_TOKEN:-}` gives when the variable is unset) is the
/// empty token, which [`AdminToken::is_empty`] tells apart: admin stays off.
impl FromStr for AdminToken {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(AdminToken(String::new()));
        }
        if s.len() < 16 {
            return Err("an admin token needs at least 16 characters");
        }
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err("an admin token is printable ASCII without spaces");
        }
        Ok(AdminToken(s.to_string()))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        h
    }

    #[test]
    fn only_the_right_bearer_token_authorizes() {
        let token = AdminToken::generate();
        assert!(token.authorizes(&headers(&token.bearer())));
        assert!(!token.authorizes(&HeaderMap::new()));
        assert!(!token.authorizes(&headers(token.expose())));
        assert!(!token.authorizes(&headers("Bearer wrong-token-0123456789")));
        let other = AdminToken::generate();
        assert_ne!(token, other);
        assert!(!token.authorizes(&headers(&other.bearer())));
    }

    #[test]
    fn the_token_never_prints() {
        let token: AdminToken = "s3cret-s3cret-s3cret".parse().expect("token");
        assert!(!format!("{token:?} {token}").contains("s3cret"));
        let short = "short".parse::<AdminToken>().expect_err("too short");
        assert!(!short.contains("short"));
        assert!("  ".parse::<AdminToken>().expect("empty").is_empty());
    }
}
