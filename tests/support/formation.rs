//! "Did the overlay form?", decided by the orchestrator's own checks
//! ([`evaluate_formation`] over [`NodeObservation`]s), so a test waits for exactly what a
//! topology's `checks: formation` or a scenario's `expect` would demand, and a change to what
//! "formed" means changes the tests with it.
//!
//! The tests add two demands the orchestrator leaves to its report: every observed node
//! answers, and (for [`closed_problem`]) every link is reported by both ends and leads to an
//! observed node, which is what tells one half of a partition from a half still linked to
//! the other.

use std::time::Duration;

use peerlab::contract::NodeStatus;
use peerlab::orchestrator::{FormationExpectation, NodeObservation, Overlay, evaluate_formation};

/// One node as a test saw it: its `/status` (or why there was none) and whether `/ready`
/// answered 200 (a ready node gets a zero `ready_after`: tests do not time formation).
pub fn observation(
    name: &str,
    status_url: &str,
    status: Result<NodeStatus, String>,
    ready: bool,
) -> NodeObservation {
    let (status, error) = match status {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    NodeObservation {
        name: name.to_string(),
        status_url: status_url.to_string(),
        status,
        error,
        ready_after: ready.then_some(Duration::ZERO),
    }
}

/// A formed overlay of exactly the observed nodes: all ready (joined and answering
/// `/ready`), connected, every degree at least `min_degree`, every member list the observed
/// nodes' ids.
pub fn formed(min_degree: usize) -> FormationExpectation {
    FormationExpectation {
        all_ready: true,
        connected: true,
        min_degree: Some(min_degree),
        full_membership: true,
        ..FormationExpectation::default()
    }
}

/// Every member list is exactly the observed nodes' ids; nothing else is demanded.
pub fn full_membership() -> FormationExpectation {
    FormationExpectation {
        full_membership: true,
        ..FormationExpectation::default()
    }
}

/// Why `observations` do not meet `expect`, if they don't: a node that did not answer, or
/// the first of the orchestrator's failing checks with its message.
pub fn problem(observations: &[NodeObservation], expect: &FormationExpectation) -> Option<String> {
    if let Some(silent) = observations.iter().find(|o| o.status.is_none()) {
        return Some(format!(
            "{} did not answer /status: {}",
            silent.name,
            silent.error.as_deref().unwrap_or("no answer")
        ));
    }
    evaluate_formation(observations, expect)
        .into_iter()
        .find(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.message.unwrap_or(c.measured)))
}

/// [`problem`], and the overlay is closed: no link is reported by one end only, and no link
/// leads to a node outside the observed set.
pub fn closed_problem(
    observations: &[NodeObservation],
    expect: &FormationExpectation,
) -> Option<String> {
    if let Some(p) = problem(observations, expect) {
        return Some(p);
    }
    let overlay = Overlay::build(observations);
    if let Some([a, b]) = overlay.summary().asymmetric_links.first() {
        return Some(format!("link {a} -> {b} is reported by one end only"));
    }
    overlay.dangling.first().map(|d| {
        format!(
            "{} links to {}@{}, which is not an observed node",
            d.from, d.to_id, d.to_addr
        )
    })
}
