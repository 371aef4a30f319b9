//! Log-safe rendering of strings that came from elsewhere (a peer, a user, a message).
//!
//! The pretty log format writes `%`-formatted fields as they are: a broadcast whose text
//! holds a newline then prints a second line that looks like the node's own (a forged log
//! line), and a 500 KB message prints 500 KB of log on every node it reaches. [`clip`]
//! is the one helper every log line that shows such a string goes through: control
//! characters (and the Unicode line separators and direction overrides that reorder a
//! terminal line) are escaped the way Rust escapes them (`\n`, `\u{1b}`), and the text is
//! cut to a short prefix with its full length noted, so one log line stays one short line.

use std::fmt;

/// Characters of the string shown before it is cut.
pub const LOG_PREFIX_CHARS: usize = 64;

/// Characters of an error message shown before it is cut: errors about a peer's frame
/// (serde's "unknown variant ...") quote part of it, but need more room to say what failed.
pub const ERROR_CHARS: usize = 240;

/// `s`, escaped and cut to [`LOG_PREFIX_CHARS`] characters, for a log field
/// (`message = %clip(&msg.message)`).
pub fn clip(s: &str) -> Clipped<'_> {
    clip_to(s, LOG_PREFIX_CHARS)
}

/// `s`, escaped and cut to `chars` characters.
pub fn clip_to(s: &str, chars: usize) -> Clipped<'_> {
    Clipped { s, chars }
}

/// A string as [`clip`] shows it; formats lazily, so a disabled log level costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct Clipped<'a> {
    s: &'a str,
    chars: usize,
}

/// Characters that could make one log line look like several, or reorder what a terminal
/// shows: C0/C1 controls (newline, carriage return, escape...), the Unicode line and
/// paragraph separators, and bidirectional overrides.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.s.chars().enumerate() {
            if shown == self.chars {
                return write!(f, "…({} bytes)", self.s.len());
            }
            if needs_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_new_line() {
        let forged = "hi\n2026-01-01T00:00:00Z  INFO member left member=n3\r\u{1b}[2K\u{2028}";
        let shown = clip(forged).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown}");
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{2028}'));
        assert!(shown.starts_with("hi\\n2026-01-01"), "{shown}");
    }

    #[test]
    fn long_text_is_cut_with_its_length_noted() {
        let long = "é".repeat(500_000);
        let shown = clip(&long).to_string();
        assert_eq!(
            shown,
            format!("{}…(1000000 bytes)", "é".repeat(LOG_PREFIX_CHARS))
        );
    }

    #[test]
    fn short_plain_text_is_unchanged() {
        assert_eq!(
            clip("hello, twenty nodes").to_string(),
            "hello, twenty nodes"
        );
        let exact = "x".repeat(LOG_PREFIX_CHARS);
        assert_eq!(clip(&exact).to_string(), exact);
        assert_eq!(clip("").to_string(), "");
    }

    #[test]
    fn bidirectional_overrides_are_escaped() {
        assert_eq!(clip("a\u{202e}b").to_string(), "a\\u{202e}b");
    }
}
