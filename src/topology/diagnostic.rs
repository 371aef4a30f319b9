//! Problems found in a topology file, each pointing at `file:line:column` and a key path.

use std::fmt;

use serde::Serialize;
use serde_saphyr::Location;

/// One problem in a topology file.
///
/// `line` and `column` are 1-based; both are 0 when the problem has no place in the file
/// (the file could not be read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The topology file it is in.
    pub file: String,
    /// 1-based line, 0 when it has no place in the file.
    pub line: usize,
    /// 1-based column, 0 when it has no place in the file.
    pub column: usize,
    /// Key path such as `groups[1].settings.degree`; empty for the document as a whole.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Always one line: a control character anywhere (a newline in a file name, in a key, in
/// an echoed value) is written escaped, so one diagnostic can never pass for two.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", escape_controls(&self.file))?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", escape_controls(&self.message))
        } else {
            write!(
                f,
                ": {}: {}",
                escape_controls(&self.path),
                escape_controls(&self.message)
            )
        }
    }
}

/// Most characters of a value quoted in a message; longer values end in `…`.
pub(crate) const ECHO_CHARS: usize = 60;

/// A value as messages quote it: control characters escaped (`\n`, `\u{1b}`), and cut
/// to [`ECHO_CHARS`] characters, so a hostile value can neither break the line nor flood
/// the terminal.
pub(crate) fn echo(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == ECHO_CHARS {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// Applies [`echo`] to every backtick-quoted part of `message`: messages quote the values
/// they echo in backticks, so this bounds every echoed value in one place.
pub(crate) fn bound_echoes(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(&echo(part));
        } else {
            out.push_str(&escape_controls(part));
        }
    }
    out
}

fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    std::borrow::Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// Every problem found in one topology file; nothing may start while there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopologyError {
    /// Every problem, in file order, so one edit can fix them all.
    pub diagnostics: Vec<Diagnostic>,
}

/// One diagnostic per line, lines separated by `\n` with none after the last (print it
/// with `println!`/`eprintln!` so that the output ends with a newline).
impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TopologyError {}

/// Collects diagnostics for one file while validation walks it.
pub(crate) struct Sink<'a> {
    file: &'a str,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a str) -> Self {
        Sink {
            file,
            diagnostics: Vec::new(),
        }
    }

    /// Records a problem at `at`; an unknown location (line 0) is kept as such. Values
    /// quoted in backticks are bounded by [`bound_echoes`].
    pub fn report(&mut self, at: Location, path: impl Into<String>, message: impl Into<String>) {
        let diagnostic = Diagnostic {
            file: self.file.to_string(),
            line: at.line() as usize,
            column: at.column() as usize,
            path: path.into(),
            message: bound_echoes(&message.into()),
        };
        if !self.diagnostics.contains(&diagnostic) {
            self.diagnostics.push(diagnostic);
        }
    }

    pub fn into_result<T>(self, value: T) -> Result<T, TopologyError> {
        if self.diagnostics.is_empty() {
            Ok(value)
        } else {
            Err(TopologyError {
                diagnostics: self.diagnostics,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ECHO_CHARS, bound_echoes, echo};

    #[test]
    fn echoes_are_escaped_and_cut() {
        assert_eq!(echo("a\nb\u{1b}[0m"), "a\\nb\\u{1b}[0m");
        let long = "x".repeat(ECHO_CHARS + 10);
        let cut = echo(&long);
        assert_eq!(cut.chars().count(), ECHO_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(echo("peers-1"), "peers-1");
    }

    #[test]
    fn every_quoted_value_of_a_message_is_bounded() {
        let long = "y".repeat(500);
        let message = format!("`{long}` is not a duration; expected `3s`\nnext");
        let bounded = bound_echoes(&message);
        assert!(bounded.len() < 120, "{bounded}");
        assert!(bounded.ends_with("expected `3s`\\nnext"), "{bounded}");
        assert!(!bounded.contains('\n'));
    }
}
