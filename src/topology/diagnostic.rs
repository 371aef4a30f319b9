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

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one topology file; nothing may start while there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopologyError {
    /// Every problem, in file order, so one edit can fix them all.
    pub diagnostics: Vec<Diagnostic>,
}

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

    /// Records a problem at `at`; an unknown location (line 0) is kept as such.
    pub fn report(&mut self, at: Location, path: impl Into<String>, message: impl Into<String>) {
        let diagnostic = Diagnostic {
            file: self.file.to_string(),
            line: at.line() as usize,
            column: at.column() as usize,
            path: path.into(),
            message: message.into(),
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
