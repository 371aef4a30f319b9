//! The network key as the orchestrator holds it: the text of the secret every node of a
//! run needs to speak the protocol (the node's side is `node::identity::NetworkKey`). It
//! lives in the contract because both sides hold it: the runtimes draw or read it and hand
//! it to their nodes in the environment (never on a command line: `ps` shows those to
//! every user), and the nodes check every hello against it.
//!
//! Like the admin token, its text is kept out of everything that prints: `Debug` and
//! `Display` say `<redacted>`, and the reasons [`NetworkSecret::from_env_value`] gives
//! never quote it.

use std::fmt;

use rand::RngExt;

/// The environment variable nodes read the network key from (also `--network-key`), and
/// the one `network_key: from-env` reads in peerlab's own environment.
pub const NETWORK_KEY_ENV: &str = "PEERLAB_NETWORK_KEY";

/// Fewest characters of a network key taken from the environment: a short passphrase can
/// be guessed offline from one recorded handshake, which is all the key protects.
pub const MIN_NETWORK_KEY_CHARS: usize = 16;

/// The text of a run's network key; see the module docs. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkSecret(String);

impl NetworkSecret {
    /// A fresh random key (256 bits from the OS's generator, as 64 hex characters, which
    /// the node takes as the key itself): one per run for `network_key: per-run`.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        NetworkSecret(hex::encode(bytes))
    }

    /// The key of `network_key: from-env`: the value of [`NETWORK_KEY_ENV`] in peerlab's
    /// environment. `None` (unset) and malformed values are refused with a reason that
    /// says what to do and never quotes the value.
    pub fn from_env_value(value: Option<std::ffi::OsString>) -> Result<Self, String> {
        let hint = "set it to the network's secret, e.g. `export PEERLAB_NETWORK_KEY=\"$(openssl rand -hex 32)\"`";
        let Some(value) = value else {
            return Err(format!(
                "the topology sets `network_key: from-env` but {NETWORK_KEY_ENV} is not set; {hint}"
            ));
        };
        let Some(text) = value.to_str() else {
            return Err(format!("{NETWORK_KEY_ENV} is not UTF-8; {hint}"));
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("{NETWORK_KEY_ENV} is empty; {hint}"));
        }
        if text.chars().any(char::is_control) {
            return Err(format!(
                "{NETWORK_KEY_ENV} holds a control character (a newline?); {hint}"
            ));
        }
        let chars = text.chars().count();
        if chars < MIN_NETWORK_KEY_CHARS {
            return Err(format!(
                "{NETWORK_KEY_ENV} has {chars} characters, fewer than the {MIN_NETWORK_KEY_CHARS} a network key needs (64 hex characters are the key itself, other text is a passphrase); {hint}"
            ));
        }
        Ok(NetworkSecret(text.to_string()))
    }

    /// The key's text, for the one place that must send it: a node's environment (or the
    /// Kubernetes Secret its pods read).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkSecret(<redacted>)")
    }
}

impl fmt::Display for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(text: &str) -> Result<NetworkSecret, String> {
        NetworkSecret::from_env_value(Some(text.into()))
    }

    #[test]
    fn unset_empty_short_and_multi_line_keys_are_refused_without_being_quoted() {
        let unset = NetworkSecret::from_env_value(None).expect_err("unset");
        assert!(unset.contains("is not set") && unset.contains("openssl rand -hex 32"));
        assert!(from("   ").expect_err("empty").contains("is empty"));
        let short = from("hunter2").expect_err("short");
        assert!(
            short.contains("7 characters") && !short.contains("hunter2"),
            "{short}"
        );
        let lines = from("first-line-secret\nsecond-line").expect_err("newline");
        assert!(
            lines.contains("control") && !lines.contains("first-line"),
            "{lines}"
        );
    }

    #[test]
    fn a_good_key_is_kept_trimmed_and_never_prints() {
        let key = from("  correct horse battery staple \n").expect("a passphrase");
        assert_eq!(key.expose(), "correct horse battery staple");
        assert!(!format!("{key:?} {key}").contains("horse"));
        let fresh = NetworkSecret::generate();
        assert_eq!(fresh.expose().len(), 64);
        assert!(fresh.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fresh, NetworkSecret::generate());
        assert_eq!(from(fresh.expose()).expect("hex"), fresh);
    }
}
