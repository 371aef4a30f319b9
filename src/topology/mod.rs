//! Topology files: the YAML format of `peerlab run FILE` (docs/topology.md) and its
//! validation. A pure model: it imports nothing of the orchestrator or the runtimes
//! (`orchestrator::plan` expands it into the nodes and networks a runtime starts).
//!
//! Loading happens in two steps so that users see every problem at once: serde-saphyr parses
//! the file into span-carrying types ([`file`]), stopping at the first syntax or type error;
//! then `validate` checks the meaning of every value and reports all problems, each at the
//! `file:line:column` of the value at fault.

mod diagnostic;
mod file;
mod model;
mod scenario;
mod scenario_file;
mod source;
mod syntax;
mod timeline;
mod validate;

use std::path::Path;

pub use diagnostic::{Diagnostic, TopologyError};
pub use model::{
    BroadcastChecks, Checks, FormationChecks, FormationExpectation, GENESIS, Group, Host, HostLink,
    HostLinks, Network, NetworkKeyMode, NodeSettings, Placement, Resources, Topology,
    duration_text, node_name,
};
pub use scenario::{
    Action, ExpectBroadcast, Expectation, Fault, Selector, Step, Target, TargetPart, When,
};
pub use source::MAX_FILE_BYTES;
pub use timeline::{
    ResolveError, ResolvedAction, ResolvedExpect, ResolvedStep, ShapeView, describe, resolve,
};

/// Most nodes one topology may declare, genesis and every group together (`count` of a
/// `start: manual` group included). A node keeps at most 10,000 members
/// (`max_members` of the node), so a larger network could never reach full membership;
/// and validation counts the nodes from the parsed `count`s before it names, plans or
/// times any of them, so an absurd count is refused at its line without being allocated.
pub const MAX_NODES: usize = 10_000;

/// Most broadcasts one check or one scenario step may inject (`count` of
/// `checks.broadcast`, of a `broadcast` step, of an `expect` with `broadcast`): every
/// message gets its sender chosen and tracked up front, so the count is bounded like the
/// node count. 10,000 messages is far more than a delivery check needs.
pub const MAX_BROADCASTS: usize = 10_000;

/// Reads, parses and validates a topology file. A file that cannot be read (missing, not a
/// regular file, over [`MAX_FILE_BYTES`], not UTF-8) is reported as a diagnostic too, so
/// callers have one error type to print; at most `MAX_FILE_BYTES + 1` bytes are ever read.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let label = path.display().to_string();
    match source::read_bounded(path) {
        Ok(source) => parse_str(&source, &label),
        Err(message) => Err(TopologyError {
            diagnostics: vec![Diagnostic {
                file: label,
                line: 0,
                column: 0,
                path: String::new(),
                message,
            }],
        }),
    }
}

/// Parses and validates topology YAML; `file_label` is the file name used in diagnostics.
/// Text over [`MAX_FILE_BYTES`] is refused before it is parsed, as [`load`] refuses such a
/// file.
pub fn parse_str(source: &str, file_label: &str) -> Result<Topology, TopologyError> {
    let file = syntax::parse(source, file_label)?;
    validate::validate(file, file_label)
}

/// JSON Schema (draft 2020-12) of topology files, for editors and `peerlab schema`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(file::TopologyFile);
    schema.to_value()
}
