//! What the checks read (observations, expectations) and what they produce ([`CheckResult`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::NodeStatus;

/// What the orchestrator learned from one node's status socket at check time.
#[derive(Debug, Clone)]
pub struct NodeObservation {
    /// Topology node name, e.g. `peers-3`.
    pub name: String,
    /// Where its status socket was polled, for messages and reproduction.
    pub status_url: String,
    /// `None` when the status socket did not answer.
    pub status: Option<NodeStatus>,
    /// Why the status socket did not answer.
    pub error: Option<String>,
    /// Time from run start until `/ready` first answered 200.
    pub ready_after: Option<Duration>,
}

impl NodeObservation {
    /// Ready means it answered `/ready` once and still answers `/status` as joined: a node
    /// that became ready and then died is not ready any more.
    pub fn is_ready(&self) -> bool {
        self.ready_after.is_some() && self.status.as_ref().is_some_and(|s| s.joined)
    }

    /// Why this node is not ready, in words a person can act on; `None` when it is ready.
    pub fn unready_reason(&self) -> Option<String> {
        match (&self.status, self.ready_after) {
            (None, _) => Some(match &self.error {
                Some(e) => format!("status socket {} did not answer: {e}", self.status_url),
                None => format!("status socket {} did not answer", self.status_url),
            }),
            (Some(s), _) if !s.joined => Some("has not completed its join".to_string()),
            (Some(_), None) => Some("never answered /ready with 200".to_string()),
            (Some(_), Some(_)) => None,
        }
    }
}

pub use crate::topology::FormationExpectation;

/// How broadcasts must spread.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastExpectation {
    /// Every delivery must happen at most this long after the broadcast was sent.
    pub deliver_within: Duration,
    /// Fraction (0..=1) of the live nodes each broadcast must reach.
    pub reliability: f64,
}

/// A broadcast the orchestrator injected through a node's `POST /broadcast`.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedBroadcast {
    /// The id the node answered with.
    pub id: String,
    /// Name of the node it was injected at.
    pub from: String,
    /// Unix seconds when the orchestrator sent it.
    pub sent_at_unix: f64,
}

/// The outcome of one check: what was expected, what was seen, and why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Short name of the check, the JUnit test-case name.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What it required, in words.
    pub expected: String,
    /// What was seen, in words.
    pub measured: String,
    /// Why it failed, naming nodes; `None` when it passed.
    pub message: Option<String>,
    /// The measurement in machine-readable form.
    pub value: serde_json::Value,
}

impl CheckResult {
    /// A check that passes exactly when `failure` is `None`.
    pub fn new(
        name: impl Into<String>,
        expected: impl Into<String>,
        measured: impl Into<String>,
        failure: Option<String>,
        value: serde_json::Value,
    ) -> Self {
        CheckResult {
            name: name.into(),
            passed: failure.is_none(),
            expected: expected.into(),
            measured: measured.into(),
            message: failure,
            value,
        }
    }
}
