//! Formation checks: did the nodes become ready and form the overlay the topology expects?
//!
//! Every failure says what was expected, what was seen and which nodes are at fault, so the
//! person reading a red CI run knows where to look without opening the JSON.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;

use super::graph::Overlay;
use super::model::{CheckResult, FormationExpectation, NodeObservation};
use super::text::{MAX_LISTED, name_list};

/// How many disagreeing nodes a membership failure describes in full.
const MEMBERSHIP_DETAILS: usize = 3;

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
    if let Some(min) = expect.min_degree {
        results.push(degree_bound(&overlay, min, Bound::Min));
    }
    if let Some(max) = expect.max_degree {
        results.push(degree_bound(&overlay, max, Bound::Max));
    }
    if expect.full_membership {
        results.push(full_membership(observations));
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

fn connected(overlay: &Overlay) -> CheckResult {
    let comps = overlay.components();
    let names: Vec<Vec<&str>> = comps
        .iter()
        .map(|c| c.iter().map(|&i| overlay.nodes[i].name.as_str()).collect())
        .collect();
    let sizes: Vec<usize> = comps.iter().map(Vec::len).collect();
    let silent: Vec<&str> = overlay
        .nodes
        .iter()
        .filter(|n| !n.answered)
        .map(|n| n.name.as_str())
        .collect();
    let measured = match sizes.as_slice() {
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
    };
    let failure = match comps.len() {
        0 => Some("no node answered its status socket, so no overlay could be seen".to_string()),
        1 => None,
        n => Some(format!(
            "the overlay is split into {n} parts with no link between them: {}",
            names
                .iter()
                .map(|c| format!("[{}]", name_list(c)))
                .collect::<Vec<_>>()
                .join(" | ")
        )),
    };
    let failure = failure.map(|f| {
        if silent.is_empty() {
            f
        } else {
            format!(
                "{f} (not counted, status did not answer: {})",
                name_list(&silent)
            )
        }
    });
    CheckResult::new(
        "overlay connected",
        "1 component",
        measured,
        failure,
        json!({ "components": comps.len(), "sizes": sizes, "members": names, "not_answering": silent }),
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

fn full_membership(observations: &[NodeObservation]) -> CheckResult {
    let live: Vec<(&str, &str)> = observations
        .iter()
        .filter_map(|o| o.status.as_ref().map(|s| (s.id.as_str(), o.name.as_str())))
        .collect();
    let name_of: HashMap<&str, &str> = live.iter().copied().collect();
    let live_ids: BTreeSet<&str> = live.iter().map(|(id, _)| *id).collect();
    let mut mismatches = Vec::new();
    for o in observations {
        let Some(s) = &o.status else { continue };
        let members: BTreeSet<&str> = s.members.iter().map(|p| p.id.as_str()).collect();
        let missing: Vec<&str> = live_ids
            .difference(&members)
            .map(|id| name_of.get(id).copied().unwrap_or(id))
            .collect();
        let extra: Vec<String> = s
            .members
            .iter()
            .filter(|p| !live_ids.contains(p.id.as_str()))
            .map(|p| format!("{}@{}", super::text::short_id(&p.id), p.addr))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            mismatches.push((o.name.as_str(), missing, extra));
        }
    }
    let total = live.len();
    let matching = total - mismatches.len();
    let failure = (!mismatches.is_empty() || total == 0).then(|| {
        if total == 0 {
            return "no node answered its status socket, so no membership could be seen".into();
        }
        // Nodes that disagree the same way (say, all still list one dead node) are told once.
        let mut groups: Vec<(Vec<&str>, &Vec<&str>, &Vec<String>)> = Vec::new();
        for (name, missing, extra) in &mismatches {
            match groups
                .iter_mut()
                .find(|(_, m, e)| *m == missing && *e == extra)
            {
                Some((names, _, _)) => names.push(name),
                None => groups.push((vec![name], missing, extra)),
            }
        }
        let details: Vec<String> = groups
            .iter()
            .take(MEMBERSHIP_DETAILS)
            .map(|(names, missing, extra)| {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("missing {}", name_list(missing)));
                }
                if !extra.is_empty() {
                    parts.push(format!("extra {} (not a live node)", name_list(extra)));
                }
                let who = match names.as_slice() {
                    [one] => one.to_string(),
                    many => format!("{} nodes ({})", many.len(), name_list(many)),
                };
                format!("{who}: {}", parts.join(", "))
            })
            .collect();
        let more = groups.len().saturating_sub(MEMBERSHIP_DETAILS);
        format!(
            "{} of {total} nodes disagree with the live set: {}{}",
            mismatches.len(),
            details.join("; "),
            if more > 0 {
                format!("; and {more} more disagreements")
            } else {
                String::new()
            }
        )
    });
    CheckResult::new(
        "full membership",
        format!("every node knows exactly the {total} live nodes"),
        format!("{matching}/{total} nodes match"),
        failure,
        json!({
            "matching": matching,
            "total": total,
            "mismatches": mismatches.iter().map(|(n, missing, extra)| json!({
                "node": n, "missing": missing, "extra": extra,
            })).collect::<Vec<_>>(),
        }),
    )
}
