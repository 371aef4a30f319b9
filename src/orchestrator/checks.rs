//! Formation checks: did the nodes become ready and form the overlay the topology expects?
//!
//! Every failure says what was expected, what was seen and which nodes are at fault, so the
//! person reading a red CI run knows where to look without opening the JSON.

use std::time::Duration;

use serde_json::json;

use super::graph::Overlay;
use super::membership::{component_membership, full_membership};
use super::model::{CheckResult, FormationExpectation, NodeObservation};
use super::text::{MAX_LISTED, name_list};

/// One [`CheckResult`] per expectation that is switched on, in a fixed order.
pub fn evaluate_formation(
    observations: &[NodeObservation],
    expect: &FormationExpectation,
) -> Vec<CheckResult> {
    let overlay = Overlay::build(observations);
    let mut results = Vec::new();
    if expect.all_ready {
        results.push(all_ready(observations));
    }
    if expect.connected {
        results.push(connected(&overlay));
    }
    if let Some(n) = expect.components {
        results.push(component_count(&overlay, n));
    }
    if let Some(min) = expect.min_degree {
        results.push(degree_bound(&overlay, min, Bound::Min));
    }
    if let Some(max) = expect.max_degree {
        results.push(degree_bound(&overlay, max, Bound::Max));
    }
    if expect.full_membership {
        results.push(full_membership(observations));
    }
    if expect.component_membership {
        results.push(component_membership(observations, &overlay));
    }
    results
}

/// Time until the last node became ready; `None` while any node never did.
pub fn formation_time(observations: &[NodeObservation]) -> Option<Duration> {
    observations
        .iter()
        .map(|o| o.ready_after)
        .try_fold(Duration::ZERO, |acc, r| r.map(|r| acc.max(r)))
}

fn all_ready(observations: &[NodeObservation]) -> CheckResult {
    let unready: Vec<(&str, String)> = observations
        .iter()
        .filter_map(|o| o.unready_reason().map(|r| (o.name.as_str(), r)))
        .collect();
    let total = observations.len();
    let ready = total - unready.len();
    let failure = (!unready.is_empty() || total == 0).then(|| {
        if total == 0 {
            return "no node was observed: the run started nothing".to_string();
        }
        let listed: Vec<String> = unready
            .iter()
            .take(MAX_LISTED)
            .map(|(n, r)| format!("{n} ({r})"))
            .collect();
        let more = unready.len().saturating_sub(MAX_LISTED);
        format!(
            "{} of {total} nodes not ready: {}{}; see their logs in the run directory",
            unready.len(),
            listed.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    });
    CheckResult::new(
        "all nodes ready",
        format!("{total}/{total} ready"),
        format!("{ready}/{total} ready"),
        failure,
        json!({
            "ready": ready,
            "total": total,
            "unready": unready.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        }),
    )
}

/// The overlay's components as the `connected` and `components` checks describe them.
struct Components<'a> {
    names: Vec<Vec<&'a str>>,
    sizes: Vec<usize>,
    /// Nodes whose status socket did not answer: in no component.
    silent: Vec<&'a str>,
}

impl<'a> Components<'a> {
    fn of(overlay: &'a Overlay) -> Self {
        let comps = overlay.components();
        Components {
            names: comps
                .iter()
                .map(|c| c.iter().map(|&i| overlay.nodes[i].name.as_str()).collect())
                .collect(),
            sizes: comps.iter().map(Vec::len).collect(),
            silent: overlay
                .nodes
                .iter()
                .filter(|n| !n.answered)
                .map(|n| n.name.as_str())
                .collect(),
        }
    }

    fn count(&self) -> usize {
        self.sizes.len()
    }

    fn measured(&self) -> String {
        match self.sizes.as_slice() {
            [] => "no node answered".to_string(),
            [one] => format!("1 component of {one} nodes"),
            many => format!(
                "{} components (sizes {})",
                many.len(),
                many.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// `[a, b] | [c, d]`.
    fn listed(&self) -> String {
        self.names
            .iter()
            .map(|c| format!("[{}]", name_list(c)))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// A failure message, with the nodes that were not counted because they were silent.
    fn with_silent(&self, failure: String) -> String {
        if self.silent.is_empty() {
            failure
        } else {
            format!(
                "{failure} (not counted, status did not answer: {})",
                name_list(&self.silent)
            )
        }
    }

    fn value(&self) -> serde_json::Value {
        json!({
            "components": self.count(),
            "sizes": self.sizes,
            "members": self.names,
            "not_answering": self.silent,
        })
    }
}

fn connected(overlay: &Overlay) -> CheckResult {
    let c = Components::of(overlay);
    let failure = match c.count() {
        0 => Some("no node answered its status socket, so no overlay could be seen".to_string()),
        // A live node that does not answer cannot be shown to be linked to anyone: the
        // overlay of the others may be whole, the network is not (seen on Docker, where a
        // restarted container's process comes up a moment after `docker start` returns).
        1 if !c.silent.is_empty() => Some(format!(
            "{} live node(s) did not answer their status socket, so they cannot be shown connected: {}",
            c.silent.len(),
            name_list(&c.silent)
        )),
        1 => None,
        n => Some(format!(
            "the overlay is split into {n} parts with no link between them: {}",
            c.listed()
        )),
    };
    CheckResult::new(
        "overlay connected",
        "1 component",
        c.measured(),
        failure.map(|f| c.with_silent(f)),
        c.value(),
    )
}

/// Exactly `want` components: what a partition must show while it holds (each side one
/// component, no link across), or `1` once it healed.
fn component_count(overlay: &Overlay, want: usize) -> CheckResult {
    let c = Components::of(overlay);
    let have = c.count();
    let failure = if have == 0 {
        Some("no node answered its status socket, so no overlay could be seen".to_string())
    } else if have < want {
        Some(format!(
            "the overlay has {have} component(s), fewer than {want}: links still cross the cut, or a side is not up; seen {}",
            c.listed()
        ))
    } else if have > want {
        Some(format!(
            "the overlay is split into {have} parts, more than {want}: {}",
            c.listed()
        ))
    } else {
        None
    };
    let plural = if want == 1 { "" } else { "s" };
    CheckResult::new(
        format!("overlay has {want} component{plural}"),
        format!("{want} component{plural}"),
        c.measured(),
        failure.map(|f| c.with_silent(f)),
        c.value(),
    )
}

#[derive(Clone, Copy)]
enum Bound {
    Min,
    Max,
}

fn degree_bound(overlay: &Overlay, bound: usize, kind: Bound) -> CheckResult {
    let (min, avg, max) = overlay.degree_stats();
    let mut offenders: Vec<(&str, usize)> = overlay
        .nodes
        .iter()
        .filter(|n| n.answered)
        .filter(|n| match kind {
            Bound::Min => n.degree < bound,
            Bound::Max => n.degree > bound,
        })
        .map(|n| (n.name.as_str(), n.degree))
        .collect();
    // Worst first: the most isolated (or most crowded) node is the one to look at.
    match kind {
        Bound::Min => offenders.sort_by_key(|&(_, d)| d),
        Bound::Max => offenders.sort_by_key(|&(_, d)| std::cmp::Reverse(d)),
    }
    let (name, expected, relation) = match kind {
        Bound::Min => (
            format!("min degree >= {bound}"),
            format!(">= {bound} neighbours each"),
            "fewer",
        ),
        Bound::Max => (
            format!("max degree <= {bound}"),
            format!("<= {bound} neighbours each"),
            "more",
        ),
    };
    let measured = format!("min {min}, avg {avg:.1}, max {max}");
    let listed: Vec<String> = offenders
        .iter()
        .map(|(n, d)| format!("{n} ({d})"))
        .collect();
    let failure = (!offenders.is_empty()).then(|| {
        format!(
            "{} node(s) have {relation} than {bound} neighbours: {}",
            offenders.len(),
            name_list(&listed)
        )
    });
    CheckResult::new(
        name,
        expected,
        measured,
        failure,
        json!({
            "min": min, "avg": avg, "max": max, "bound": bound,
            "offenders": offenders.iter().map(|(n, d)| json!({"node": n, "degree": d})).collect::<Vec<_>>(),
        }),
    )
}
