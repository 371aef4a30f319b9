//! The first step of loading: YAML syntax and types, via serde-saphyr.
//!
//! serde-saphyr stops at the first syntax or type error and gives its location but not the
//! key path, so [`replay`] replays the parser's events to name the key at that location
//! (and the value found there, and the mapping around it); every diagnostic then reads the
//! same (`file:line:col: path: message`), on one line, in words rather than the library's
//! advice to its callers.

use std::borrow::Cow;

use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::granit_parser::{Event, Parser};
use serde_saphyr::{DefaultMessageFormatter, Error, MessageFormatter};

use super::diagnostic::{Diagnostic, TopologyError, bound_echoes, echo};
use super::file::TopologyFile;
use super::source::{MAX_FILE_BYTES, too_large};

/// Most aliases (`*name`) a topology file may use: a handful is what a real file needs (a
/// settings block shared by groups), and the cap keeps an alias bomb from expanding.
const MAX_ALIASES: usize = 1_000;
/// Most parser events replayed through aliases, and most kept for anchors, across the
/// whole file: an alias bomb (anchors of lists of aliases of anchors...) hits it long
/// before it takes real memory.
const MAX_ALIAS_EVENTS: usize = 100_000;
/// Most YAML nodes (scalars, lists, mappings) in a file; a topology of 10,000 nodes in a
/// handful of groups and a long scenario has a few thousand.
const MAX_YAML_NODES: usize = 200_000;
/// Deepest nesting of lists and mappings; a topology nests about 6 deep.
const MAX_DEPTH: usize = 32;

fn options() -> serde_saphyr::Options {
    // Strict booleans: `yes`/`no`/`on` are strings in YAML 1.2, and a misread `no` would
    // silently flip a check. The budget bounds what a hostile file can make the parser
    // do (serde-saphyr checks it while it parses, before anything is built).
    let mut options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_aliases: MAX_ALIASES,
            max_nodes: MAX_YAML_NODES,
            max_depth: MAX_DEPTH,
            max_documents: 2,
            max_recorded_anchor_events: MAX_ALIAS_EVENTS,
        },
    };
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    options
}

pub(crate) fn parse(source: &str, file_label: &str) -> Result<TopologyFile, TopologyError> {
    if source.len() as u64 > MAX_FILE_BYTES {
        return Err(single(
            file_label,
            (0, 0),
            "",
            &too_large(source.len() as u64),
        ));
    }
    if source.trim().is_empty() {
        return Err(single(
            file_label,
            (0, 0),
            "",
            "the file is empty; expected a topology with at least `name` and `genesis` (see topologies/quickstart.yaml)",
        ));
    }
    serde_saphyr::from_str_with_options::<TopologyFile>(source, options())
        .map_err(|err| diagnose(source, file_label, err.without_snippet()))
}

/// One diagnostic for the parser's error: at its location, with the key path there, in
/// words that say what to do (never the library's advice to its own callers).
fn diagnose(source: &str, file_label: &str, err: &Error) -> TopologyError {
    let (line, column) = err
        .location()
        .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
    if let Error::MultipleDocuments { .. }
    | Error::Budget {
        breach: BudgetBreach::Documents { .. },
        ..
    } = err
    {
        let second = second_document_line(source);
        return single(
            file_label,
            (
                second.unwrap_or(line),
                if second.is_some() { 1 } else { column },
            ),
            "",
            &format!(
                "a topology file holds one YAML document; found a second at line {}; remove the `---` and what follows it, or put each topology in its own file",
                second.unwrap_or(line)
            ),
        );
    }
    let found = if line > 0 {
        replay(source, line, column)
    } else {
        Found::default()
    };
    if let Some(message) = limit_message(err) {
        return single(file_label, (line, column), &found.path, &message);
    }
    if let Error::SerdeMissingField { field, .. } = err {
        // Reported at the mapping that lacks the key (its parent key, or where it
        // starts), whichever of its keys the parser was at when it noticed.
        let (path, at) = found.mapping.unwrap_or_default();
        let at = if at.0 > 0 { at } else { (line, column) };
        return single(
            file_label,
            at,
            &path,
            &format!("missing field `{field}`; add it (see docs/topology.md)"),
        );
    }
    let message = match (err, &found.value) {
        (Error::InvalidScalar { ty, .. }, value) => {
            let expected = match *ty {
                "u32" => "a whole number from 0 to 4294967295",
                "u64" | "usize" => "a whole number, 0 or more",
                t if t.starts_with('f') => "a number such as 0.99",
                _ => "a value of another type (see docs/topology.md)",
            };
            format!("invalid {ty}: found {}; expected {expected}", shown(value))
        }
        (Error::InvalidBooleanStrict { .. }, value) => {
            format!(
                "invalid boolean: found {}; expected true or false",
                shown(value)
            )
        }
        (
            Error::SerdeInvalidType { expected, .. } | Error::SerdeInvalidValue { expected, .. },
            value,
        ) => {
            format!("invalid type: found {}, expected {expected}", shown(value))
        }
        (Error::Unexpected { expected, .. }, value @ Some(_)) => {
            format!("expected {expected}, found {}", shown(value))
        }
        (Error::NullIntoString { .. }, _) => {
            "has no value (null); expected a string, in quotes if it could read as something else"
                .to_string()
        }
        _ => {
            let text = DefaultMessageFormatter.format_message(err);
            hint(&text).into_owned()
        }
    };
    single(file_label, (line, column), &found.path, &message)
}

/// Words for a limit of the parser's budget, or `None` when `err` is not one.
fn limit_message(err: &Error) -> Option<String> {
    const WHAT_TO_DO: &str = "write the values out instead (a topology needs few aliases), or check that this is the right file";
    let alias = |what: String| {
        Some(format!(
            "the file expands aliases (`*name`) beyond what a topology needs: {what}; {WHAT_TO_DO}"
        ))
    };
    match err {
        Error::AliasReplayLimitExceeded {
            max_total_replayed_events,
            ..
        } => alias(format!(
            "over {max_total_replayed_events} values repeated through aliases"
        )),
        Error::AliasExpansionLimitExceeded {
            max_expansions_per_anchor,
            ..
        } => alias(format!(
            "one anchor used more than {max_expansions_per_anchor} times"
        )),
        Error::AliasReplayStackDepthExceeded { max_depth, .. } => {
            alias(format!("aliases nested more than {max_depth} deep"))
        }
        Error::AliasReplayCounterOverflow { .. } => alias("too many values repeated".into()),
        Error::Budget { breach, .. } => Some(match breach {
            BudgetBreach::Aliases { .. } => {
                alias(format!("more than {MAX_ALIASES} aliases")).unwrap_or_default()
            }
            BudgetBreach::AliasAnchorRatio { aliases, anchors } => alias(format!(
                "{aliases} aliases for {anchors} anchors (`&name`), more than 10 uses per anchor"
            ))
            .unwrap_or_default(),
            BudgetBreach::RecordedAnchorEvents { .. }
            | BudgetBreach::RecordedAnchorBytes { .. } => alias(format!(
                "anchors that nest aliases hold over {MAX_ALIAS_EVENTS} values"
            ))
            .unwrap_or_default(),
            BudgetBreach::Depth { .. } => format!(
                "lists and mappings nest more than {MAX_DEPTH} deep, far deeper than a topology does; check the indentation"
            ),
            BudgetBreach::Nodes { .. } => format!(
                "the file holds more than {MAX_YAML_NODES} YAML values, far more than a topology needs; check that this is the right file"
            ),
            other => format!(
                "the file is beyond what a topology file may hold ({}); check that this is the right file",
                breach_words(other)
            ),
        }),
        _ => None,
    }
}

/// A short phrase for a budget breach without Rust debug formatting.
fn breach_words(breach: &BudgetBreach) -> &'static str {
    match breach {
        BudgetBreach::Events { .. } => "too many YAML events",
        BudgetBreach::Anchors { .. } => "too many anchors (`&name`)",
        BudgetBreach::ScalarBytes { .. } => "too much text in values",
        BudgetBreach::Documents { .. } => "more than one YAML document",
        BudgetBreach::MergeKeys { .. } => "too many merge keys (`<<`)",
        _ => "a limit of the YAML parser",
    }
}

/// How a message shows the value found at an error: quoted (escaped and cut by
/// [`echo`]), or what kind of collection it is.
fn shown(value: &Option<Node>) -> String {
    match value {
        Some(Node::Scalar(text)) => format!("`{}`", echo(text)),
        Some(Node::Sequence) => "a list".to_string(),
        Some(Node::Mapping) => "a mapping".to_string(),
        None => "another value".to_string(),
    }
}

/// Line of the second document's start (`---`, or its first content).
fn second_document_line(source: &str) -> Option<usize> {
    Parser::new_from_str(source)
        .map_while(Result::ok)
        .filter(|(event, _)| matches!(event, Event::DocumentStart(..)))
        .nth(1)
        .map(|(_, span)| span.start.line())
}

fn single(file: &str, (line, column): (usize, usize), path: &str, message: &str) -> TopologyError {
    TopologyError {
        diagnostics: vec![Diagnostic {
            file: file.to_string(),
            line,
            column,
            path: path.to_string(),
            message: bound_echoes(message),
        }],
    }
}

/// Adds what to do next to the parser's wording where it only says what went wrong.
fn hint(message: &str) -> Cow<'_, str> {
    if message.contains("unknown field") {
        Cow::Owned(format!(
            "{message} (check the spelling; every key is listed in docs/topology.md)"
        ))
    } else if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest);
        Cow::Owned(format!(
            "`{key}` appears twice in the same mapping; expected each key once"
        ))
    } else if message.starts_with("duplicate mapping key") {
        Cow::Borrowed("a key appears twice in the same mapping; expected each key once")
    } else {
        Cow::Borrowed(message)
    }
}

/// A node of the file, as an error message describes it.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Scalar(String),
    Sequence,
    Mapping,
}

/// What [`replay`] found at a location.
#[derive(Debug, Default)]
struct Found {
    /// Key path (`groups[1].settings.degree`) of the innermost node starting at or before
    /// the location.
    path: String,
    /// That node when it is a value (not a key).
    value: Option<Node>,
    /// The innermost mapping open at the location: its key path, and the place to report
    /// it at (the key it is the value of, or where it starts).
    mapping: Option<(String, (usize, usize))>,
}

/// One open mapping or sequence while replaying events.
struct Frame {
    path: String,
    /// Where a problem of the whole collection is reported: the key it is the value of,
    /// else its first character (1-based line and column).
    at: (usize, usize),
    /// Mapping: the key whose value comes next (`None`: a key comes next). Sequence: unused.
    key: Option<String>,
    /// Mapping: where that key is written.
    key_at: (usize, usize),
    /// Sequence: index of the next item. `None` for mappings.
    next: Option<usize>,
}

/// Replays the parser's events up to `line:column` (1-based) to name the node there.
/// Best effort: a syntax error ends the replay where it occurs.
fn replay(source: &str, line: usize, column: usize) -> Found {
    let target = (line, column);
    let mut frames: Vec<Frame> = Vec::new();
    let mut found = Found::default();
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
                    found.path = join_key(&top.path, &value);
                    found.value = None;
                    top.key = Some(value.into_owned());
                    top.key_at = at;
                } else {
                    found.path = child_path(&frames);
                    found.value = Some(Node::Scalar(value.into_owned()));
                    complete(&mut frames);
                }
            }
            Event::Alias(_) => {
                found.path = child_path(&frames);
                found.value = None;
                complete(&mut frames);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = child_path(&frames);
                let report_at = match frames.last() {
                    Some(parent) if parent.next.is_none() && parent.key.is_some() => parent.key_at,
                    _ => at,
                };
                found.path = path.clone();
                let is_seq = matches!(event, Event::SequenceStart(..));
                found.value = Some(if is_seq {
                    Node::Sequence
                } else {
                    Node::Mapping
                });
                frames.push(Frame {
                    path,
                    at: report_at,
                    key: None,
                    key_at: at,
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
    found.mapping = frames
        .iter()
        .rev()
        .find(|f| f.next.is_none())
        .map(|f| (f.path.clone(), f.at));
    found
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

/// `parent.key`, with the key as messages quote values (a hostile key stays short and
/// on one line).
fn join_key(parent: &str, key: &str) -> String {
    let key = echo(key);
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::replay;

    fn path_at(source: &str, line: usize, column: usize) -> String {
        replay(source, line, column).path
    }

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
