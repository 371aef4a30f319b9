//! Length and syntax limits on what peers tell us about members: node ids and addresses.
//!
//! Every id and address that enters from the network (a hello, a member record in a list
//! or an answer, a membership flood) is checked here before the machine stores or relays
//! it. Without limits a 1 MB id became a member and was flooded everywhere, and an empty
//! id and address were accepted as a link. The bounds also make the size of one member
//! record bounded, which is what lets member lists be cut into frames of bounded size
//! (see [`MEMBER_LIST_CHUNK_BYTES`]).

use std::fmt;

use super::wire::MAX_FRAME_BYTES;

/// Longest node id, in bytes. Topology names are at most a few dozen characters
/// (`group-index`), and `--name` is chosen by people: 64 leaves room for both.
pub const MAX_ID_BYTES: usize = 64;

/// Longest address (`host:port`), in bytes: a DNS name is at most 253 characters, plus
/// `:65535` would not fit a full-length name, so the cap is the usual 255.
pub const MAX_ADDR_BYTES: usize = 255;

/// Member lists are cut into `nodes-in-network` frames of at most about this many bytes:
/// half of [`MAX_FRAME_BYTES`], so that a chunk is far from the cap even if a record is
/// larger than estimated (see [`RECORD_BYTES_ESTIMATE`]).
pub const MEMBER_LIST_CHUNK_BYTES: usize = MAX_FRAME_BYTES / 2;

/// What one member record costs in a list, on top of its id and address: the JSON keys,
/// the incarnation, the state, and room for fields records may gain (a key, a signature).
pub const RECORD_BYTES_ESTIMATE: usize = 512;

/// Characters of a refused value shown in a log line.
const SHOWN_CHARS: usize = 48;

/// Why an id or address was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Empty.
    Empty,
    /// Longer than its cap (the length, the cap).
    TooLong(usize, usize),
    /// A byte outside the allowed set.
    BadChar(char),
    /// Not `host:port` with a port from 1 to 65535.
    NotHostPort,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Empty => write!(f, "empty"),
            Invalid::TooLong(len, cap) => write!(f, "{len} bytes, over the cap of {cap}"),
            Invalid::BadChar(c) => write!(f, "contains {c:?}"),
            Invalid::NotHostPort => write!(f, "not host:port with a port from 1 to 65535"),
        }
    }
}

/// A node id: 1 to [`MAX_ID_BYTES`] printable ASCII characters, no space, no control
/// character, and no `"` or `\` (so JSON never escapes an id and its size on the wire is
/// its length). Topology names (`genesis-0`, `peers-12`) and the default `n-1a2b3c4d` fit.
pub fn check_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err(Invalid::Empty);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Invalid::TooLong(id.len(), MAX_ID_BYTES));
    }
    match id
        .chars()
        .find(|c| !c.is_ascii_graphic() || *c == '"' || *c == '\\')
    {
        Some(c) => Err(Invalid::BadChar(c)),
        None => Ok(()),
    }
}

/// An address: `host:port`, at most [`MAX_ADDR_BYTES`], the host a DNS name or IPv4
/// address (letters, digits, `.`, `-`, `_`) or a bracketed IPv6 address, the port 1 to
/// 65535.
pub fn check_addr(addr: &str) -> Result<(), Invalid> {
    if addr.is_empty() {
        return Err(Invalid::Empty);
    }
    if addr.len() > MAX_ADDR_BYTES {
        return Err(Invalid::TooLong(addr.len(), MAX_ADDR_BYTES));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(Invalid::NotHostPort);
    };
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(Invalid::NotHostPort);
    }
    let (host, allowed): (&str, fn(char) -> bool) =
        match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => (v6, |c| c.is_ascii_hexdigit() || c == ':' || c == '.'),
            None => (host, |c| c.is_ascii_alphanumeric() || ".-_".contains(c)),
        };
    if host.is_empty() {
        return Err(Invalid::NotHostPort);
    }
    match host.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(Invalid::BadChar(c)),
        None => Ok(()),
    }
}

/// Both checks, for a member: which field failed and why.
pub fn check_member(id: &str, addr: &str) -> Result<(), (&'static str, Invalid)> {
    check_id(id).map_err(|e| ("id", e))?;
    check_addr(addr).map_err(|e| ("addr", e))
}

/// A refused value as a log line may show it: escaped (no newline or control character
/// can forge a line) and truncated, with its full length.
pub fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if value.chars().count() > SHOWN_CHARS {
        out.push_str(&format!("... ({} bytes)", value.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_topologies_and_defaults_pass() {
        for id in [
            "genesis-0",
            "peers-12",
            "n-1a2b3c4d",
            "n00",
            "node_1.eu",
            &"a".repeat(64),
        ] {
            assert_eq!(check_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        assert_eq!(check_id(""), Err(Invalid::Empty));
        assert_eq!(check_id(&"a".repeat(65)), Err(Invalid::TooLong(65, 64)));
        assert_eq!(check_id("a b"), Err(Invalid::BadChar(' ')));
        assert_eq!(check_id("a\nb"), Err(Invalid::BadChar('\n')));
        assert_eq!(check_id("a\"b"), Err(Invalid::BadChar('"')));
        assert_eq!(check_id("é"), Err(Invalid::BadChar('é')));
    }

    #[test]
    fn addresses_are_host_port() {
        for a in [
            "127.0.0.1:7070",
            "genesis-0:7070",
            "[::1]:1",
            "n00:7070",
            "a.b_c:65535",
        ] {
            assert_eq!(check_addr(a), Ok(()), "{a}");
        }
        assert_eq!(check_addr(""), Err(Invalid::Empty));
        assert_eq!(check_addr("host"), Err(Invalid::NotHostPort));
        assert_eq!(check_addr(":7070"), Err(Invalid::NotHostPort));
        assert_eq!(check_addr("h:0"), Err(Invalid::NotHostPort));
        assert_eq!(check_addr("h:70000"), Err(Invalid::NotHostPort));
        assert_eq!(check_addr("h/x:1"), Err(Invalid::BadChar('/')));
        assert_eq!(check_addr("[::g]:1"), Err(Invalid::BadChar('g')));
        let long = format!("{}:1", "a".repeat(300));
        assert_eq!(check_addr(&long), Err(Invalid::TooLong(302, 255)));
    }

    #[test]
    fn shown_values_cannot_forge_lines_and_are_short() {
        assert_eq!(shown("a\nb"), "a\\nb");
        let long = "x".repeat(1_000_000);
        let s = shown(&long);
        assert!(s.len() < 100, "{s}");
        assert!(s.ends_with("(1000000 bytes)"));
    }
}
