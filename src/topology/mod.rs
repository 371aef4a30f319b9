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
mod syntax;
mod timeline;
mod validate;

use std::path::Path;

pub use diagnostic::{Diagnostic, TopologyError};
pub use model::{
    BroadcastChecks, Checks, FormationChecks, FormationExpectation, GENESIS, Group, Host, HostLink,
    HostLinks, Network, NodeSettings, Placement, Resources, Topology, duration_text, node_name,
};
pub use scenario::{
    Action, ExpectBroadcast, Expectation, Fault, Selector, Step, Target, TargetPart, When,
};
pub use timeline::{
    ResolveError, ResolvedAction, ResolvedExpect, ResolvedStep, ShapeView, describe, resolve,
};

/// Reads, parses and validates a topology file. A file that cannot be read is reported as a
/// diagnostic too, so callers have one error type to print.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let label = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => parse_str(&source, &label),
        Err(e) => Err(TopologyError {
            diagnostics: vec![Diagnostic {
                file: label,
                line: 0,
                column: 0,
                path: String::new(),
                message: format!(
                    "cannot read the topology file: {e}; check the path (examples are in topologies/)"
                ),
            }],
        }),
    }
}

/// Parses and validates topology YAML; `file_label` is the file name used in diagnostics.
pub fn parse_str(source: &str, file_label: &str) -> Result<Topology, TopologyError> {
    let file = syntax::parse(source, file_label)?;
    validate::validate(file, file_label)
}

/// JSON Schema (draft 2020-12) of topology files, for editors and `peerlab schema`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(file::TopologyFile);
    schema.to_value()
}
