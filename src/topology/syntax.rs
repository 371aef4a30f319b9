//! The first step of loading: YAML syntax and types, via serde-saphyr.
//!
//! serde-saphyr stops at the first syntax or type error and gives its location but not the
//! key path, so [`path_at`] replays the parser's events to name the key at that location;
//! every diagnostic then reads the same (`file:line:col: path: message`).

use std::borrow::Cow;

use serde_saphyr::granit_parser::{Event, Parser};
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};

use super::diagnostic::{Diagnostic, TopologyError};
use super::file::TopologyFile;

pub(crate) fn parse(source: &str, file_label: &str) -> Result<TopologyFile, TopologyError> {
    // Strict booleans: `yes`/`no`/`on` are strings in YAML 1.2, and a misread `no` would
    // silently flip a check.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    };
    if source.trim().is_empty() {
        return Err(single(
            file_label,
            (0, 0),
            "",
            "the file is empty; expected a topology with at least `name` and `genesis` (see topologies/quickstart.yaml)",
        ));
    }
    serde_saphyr::from_str_with_options::<TopologyFile>(source, options).map_err(|err| {
        let err = err.without_snippet();
        let message: String = DefaultMessageFormatter
            .format_message(err)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let (line, column) = err
            .location()
            .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
        let mut path = if line > 0 {
            path_at(source, line, column)
        } else {
            String::new()
        };
        if message.starts_with("missing field") {
            // The location is the mapping that lacks the key, which is also where its first
            // key starts: name the mapping, not that key.
            path = parent(&path).to_string();
        }
        single(file_label, (line, column), &path, &hint(&message))
    })
}

fn single(file: &str, (line, column): (usize, usize), path: &str, message: &str) -> TopologyError {
    TopologyError {
        diagnostics: vec![Diagnostic {
            file: file.to_string(),
            line,
            column,
            path: path.to_string(),
            message: message.to_string(),
        }],
    }
}

/// Adds what to do next to the parser's wording where it only says what went wrong.
fn hint(message: &str) -> Cow<'_, str> {
    if message.contains("unknown field") {
        Cow::Owned(format!(
            "{message} (check the spelling; every key is listed in docs/topology.md)"
        ))
    } else if message.starts_with("missing field") {
        Cow::Owned(format!("{message}; add it (see docs/topology.md)"))
    } else if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest);
        Cow::Owned(format!(
            "`{key}` appears twice in the same mapping; expected each key once"
        ))
    } else if ["invalid u32", "invalid u64", "invalid usize"].contains(&message) {
        Cow::Owned(format!("{message}; expected a whole number, 0 or more"))
    } else if message.starts_with("invalid f64") || message.starts_with("invalid floating") {
        Cow::Owned(format!("{message}; expected a number such as 0.99"))
    } else {
        Cow::Borrowed(message)
    }
}

/// `groups[1].settings` for `groups[1].settings.degree`, `groups` for `groups[1]`.
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// One open mapping or sequence while replaying events.
struct Frame {
    path: String,
    /// Mapping: the key whose value comes next (`None`: a key comes next). Sequence: unused.
    key: Option<String>,
    /// Sequence: index of the next item. `None` for mappings.
    next: Option<usize>,
}

/// Key path (`groups[1].settings.degree`) of the innermost node starting at or before
/// `line:column` (1-based). Best effort: a syntax error ends the replay where it occurs.
fn path_at(source: &str, line: usize, column: usize) -> String {
    let target = (line, column);
    let mut frames: Vec<Frame> = Vec::new();
    let mut best = String::new();
    for item in Parser::new_from_str(source) {
        let Ok((event, span)) = item else { break };
        let at = (span.start.line(), span.start.col() + 1);
        if at > target {
            break;
        }
        match event {
            Event::Scalar(value, ..) => {
                if let Some(top) = frames.last_mut()
                    && top.next.is_none()
                    && top.key.is_none()
                {
                    best = join_key(&top.path, &value);
                    top.key = Some(value.into_owned());
                } else {
                    best = child_path(&frames);
                    complete(&mut frames);
                }
            }
            Event::Alias(_) => {
                best = child_path(&frames);
                complete(&mut frames);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = child_path(&frames);
                best = path.clone();
                let is_seq = matches!(event, Event::SequenceStart(..));
                frames.push(Frame {
                    path,
                    key: None,
                    next: is_seq.then_some(0),
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                frames.pop();
                complete(&mut frames);
            }
            _ => {}
        }
    }
    best
}

fn child_path(frames: &[Frame]) -> String {
    match frames.last() {
        None => String::new(),
        Some(Frame {
            path,
            next: Some(i),
            ..
        }) => format!("{path}[{i}]"),
        Some(Frame {
            path, key: Some(k), ..
        }) => join_key(path, k),
        Some(Frame { path, .. }) => path.clone(),
    }
}

/// Marks the current child of the innermost collection as done.
fn complete(frames: &mut [Frame]) {
    if let Some(top) = frames.last_mut() {
        match &mut top.next {
            Some(i) => *i += 1,
            None => top.key = None,
        }
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::path_at;

    const DOC: &str =
        "name: x\ngroups:\n  - name: a\n    settings: {degree: 3}\n  - name: b\n    count: [1]\n";

    #[test]
    fn path_at_names_keys_values_and_items() {
        assert_eq!(path_at(DOC, 1, 1), "name");
        assert_eq!(path_at(DOC, 1, 7), "name");
        assert_eq!(path_at(DOC, 4, 15), "groups[0].settings");
        assert_eq!(path_at(DOC, 4, 16), "groups[0].settings.degree");
        assert_eq!(path_at(DOC, 4, 24), "groups[0].settings.degree");
        assert_eq!(path_at(DOC, 5, 7), "groups[1].name");
        assert_eq!(path_at(DOC, 6, 12), "groups[1].count");
    }
}
