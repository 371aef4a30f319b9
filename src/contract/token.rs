//! The admin token: the one credential of a node's `/admin/*` (see `node::admin` for how
//! the node serves it, and `docs/security.md`). It lives in the contract because both
//! sides hold it: the node checks it, and the runtimes generate it, hand it to their nodes
//! in the environment (never on a command line: `ps` shows those to every user) and send it.
//!
//! The token's text is kept out of everything that prints: `Debug` and `Display` say
//! `<redacted>`, and comparisons go through SHA-256 digests compared in constant time, so
//! neither the answer's timing nor an error message tells an attacker how much of a guess
//! was right.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, header};
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header that carries the bare token where `Authorization` cannot reach the node: a
/// proxy that authenticates its own caller by `Authorization` (the Kubernetes API server's
/// pod proxy) takes that header for itself.
pub const ADMIN_TOKEN_HEADER: &str = "x-peerlab-admin-token";

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

    /// Whether the token is fit to guard `/admin/*`; the reason never quotes it.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.0.len() < 16 {
            return Err("an admin token needs at least 16 characters");
        }
        if !self.0.chars().all(|c| c.is_ascii_graphic()) {
            return Err("an admin token is printable ASCII without spaces");
        }
        Ok(())
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

    /// Whether `headers` carry this token as `Authorization: Bearer <token>` (or, behind
    /// a proxy that keeps `Authorization`, as [`ADMIN_TOKEN_HEADER`]). Both sides are
    /// hashed first, so the comparison takes the same time whatever the guess.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let bare = || {
            headers
                .get(ADMIN_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
        };
        let Some(given) = bearer.or_else(bare) else {
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

/// Reads `--admin-token` / `PEERLAB_ADMIN_TOKEN`. It never fails: a parse error of the
/// argument parser would quote the value, so [`AdminToken::check`] judges it afterwards.
/// An empty value (what a compose file's `${PEERLAB_ADMIN_TOKEN:-}` gives when the
/// variable is unset) is the empty token, [`AdminToken::is_empty`]: admin stays off.
impl FromStr for AdminToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(AdminToken(s.trim().to_string()))
    }
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
        let mut bare = HeaderMap::new();
        bare.insert(ADMIN_TOKEN_HEADER, token.expose().parse().expect("value"));
        assert!(token.authorizes(&bare), "the proxies' header");
        let other = AdminToken::generate();
        assert_ne!(token, other);
        assert!(!token.authorizes(&headers(&other.bearer())));
    }

    #[test]
    fn the_token_never_prints() {
        let token: AdminToken = "s3cret-s3cret-s3cret".parse().expect("token");
        assert!(!format!("{token:?} {token}").contains("s3cret"));
        let short: AdminToken = "short".parse().expect("parsed");
        let reason = short.check().expect_err("too short");
        assert!(!reason.contains("short"));
        assert!(token.check().is_ok() && AdminToken::generate().check().is_ok());
        assert!("  ".parse::<AdminToken>().expect("empty").is_empty());
    }
}
