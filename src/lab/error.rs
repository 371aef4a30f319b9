//! What can go wrong with a lab, sorted so that callers (the CLI's exit codes, a test's
//! failure message) can tell bad input from a runtime that failed.

use crate::runtime::RuntimeError;
use crate::topology::TopologyError;

/// An error of a [`super::Lab`] operation.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The topology is invalid; nothing was started. The diagnostics name file, line and
    /// column of each problem.
    #[error("{0}")]
    Topology(TopologyError),
    /// The runtime cannot do what was asked (a fault outside its capabilities, a topology
    /// it cannot honour) or failed doing it.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// No node of that name is in the run.
    #[error("no node named {name} in run {run_id} (its nodes: {known})")]
    UnknownNode {
        /// The name asked for.
        name: String,
        /// The run asked.
        run_id: String,
        /// The run's node names, abbreviated for large runs.
        known: String,
    },
    /// A node's status socket did not answer, or refused.
    #[error("{node}: {message}")]
    Node {
        /// The node asked.
        node: String,
        /// What went wrong.
        message: String,
    },
    /// A report file could not be written.
    #[error("{0:#}")]
    Output(anyhow::Error),
    /// What was asked is wrong (a malformed address, a compose project with no
    /// container); nothing was done.
    #[error("{0}")]
    Input(String),
    /// The operation does not fit the lab's state (a lab that was never started, say).
    #[error("{0}")]
    State(String),
}

impl LabError {
    /// Bad input rather than a failing runtime: an invalid topology, or one (or a fault)
    /// the chosen runtime cannot honour. The CLI exits 2 for these, 3 for the others.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            LabError::Topology(_)
                | LabError::Input(_)
                | LabError::UnknownNode { .. }
                | LabError::Runtime(RuntimeError::Unsupported { .. })
        )
    }
}

impl From<TopologyError> for LabError {
    fn from(e: TopologyError) -> Self {
        LabError::Topology(e)
    }
}
