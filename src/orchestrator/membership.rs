//! Membership checks: does every node's member list hold exactly the nodes it should?
//!
//! `full_membership` compares each list with every live node; `component_membership` with
//! the nodes of the node's own overlay component, which is what each side of a partition
//! must converge to while the cut holds (and the same as full membership once it healed).

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use super::graph::Overlay;
use super::model::{CheckResult, NodeObservation};
use super::text::{name_list, short_id};
use crate::contract::members_digest;

/// How many disagreeing nodes a membership failure describes in full.
const MEMBERSHIP_DETAILS: usize = 3;

/// Every answering node's member ids equal the ids of all answering nodes.
pub(super) fn full_membership(observations: &[NodeObservation]) -> CheckResult {
    let live_ids: BTreeSet<&str> = observations
        .iter()
        .filter_map(|o| o.status.as_ref().map(|s| s.id.as_str()))
        .collect();
    let total = live_ids.len();
    membership(
        observations,
        &[live_ids],
        |_| 0,
        Wording {
            name: "full membership",
            expected: format!("every node knows exactly the {total} live nodes"),
            against: "the live set",
        },
    )
}

/// Every answering node's member ids equal the ids of its overlay component.
pub(super) fn component_membership(
    observations: &[NodeObservation],
    overlay: &Overlay,
) -> CheckResult {
    let mut component_of: HashMap<usize, usize> = HashMap::new();
    let comps = overlay.components();
    for (c, members) in comps.iter().enumerate() {
        for &i in members {
            component_of.insert(i, c);
        }
    }
    let mut ids: Vec<BTreeSet<&str>> = comps
        .iter()
        .map(|members| {
            members
                .iter()
                .filter_map(|&i| observations.get(i)?.status.as_ref())
                .map(|s| s.id.as_str())
                .collect()
        })
        .collect();
    // A node in no component (it cannot happen for an answering node) expects nothing.
    let nowhere = ids.len();
    ids.push(BTreeSet::new());
    membership(
        observations,
        &ids,
        |i| component_of.get(&i).copied().unwrap_or(nowhere),
        Wording {
            name: "membership per component",
            expected: format!(
                "every node knows exactly the nodes of its component ({} component(s))",
                comps.len()
            ),
            against: "their overlay component",
        },
    )
}

/// Members a node lists but should not.
#[derive(PartialEq)]
struct Extra {
    /// Live nodes (of another component).
    live: Vec<String>,
    /// Ids no live node has (dead nodes, strangers), as `short-id@addr`.
    strangers: Vec<String>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.strangers.is_empty()
    }
}

/// How one node's members differ from what it should know.
#[derive(PartialEq)]
enum Mismatch<'a> {
    /// From its list: who is missing, who is extra.
    Listed(Vec<&'a str>, Extra),
    /// Only counts were fetched: (known, expected).
    Count(usize, usize),
    /// The node's served digest disagrees with its own list.
    Digest,
}

impl Mismatch<'_> {
    fn describe(&self) -> String {
        match self {
            Mismatch::Listed(missing, extra) => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("missing {}", name_list(missing)));
                }
                if !extra.live.is_empty() {
                    parts.push(format!(
                        "extra {} (of another component)",
                        name_list(&extra.live)
                    ));
                }
                if !extra.strangers.is_empty() {
                    parts.push(format!(
                        "extra {} (not a live node)",
                        name_list(&extra.strangers)
                    ));
                }
                parts.join(", ")
            }
            Mismatch::Count(known, expected) if known == expected => {
                format!("knows {known} members, but not the expected ones (digests differ)")
            }
            Mismatch::Count(known, expected) => {
                format!("knows {known} members, {expected} expected")
            }
            Mismatch::Digest => "serves a members_digest that does not match its list".into(),
        }
    }

    fn json(&self, node: &str) -> serde_json::Value {
        match self {
            Mismatch::Listed(missing, extra) => json!({
                "node": node,
                "missing": missing,
                "extra": extra.live.iter().chain(&extra.strangers).collect::<Vec<_>>(),
            }),
            Mismatch::Count(known, expected) => {
                json!({ "node": node, "known": known, "expected": expected })
            }
            Mismatch::Digest => json!({ "node": node, "digest_mismatch": true }),
        }
    }
}

struct Wording {
    name: &'static str,
    expected: String,
    /// What the disagreeing nodes disagree with, for the failure message.
    against: &'static str,
}

/// Compares each answering node's members (observation `i`) with `sets[set_of(i)]`.
///
/// Digests decide (a poll may have fetched counts and digests only); the lists, where they
/// were fetched, say what differs.
fn membership(
    observations: &[NodeObservation],
    sets: &[BTreeSet<&str>],
    set_of: impl Fn(usize) -> usize,
    wording: Wording,
) -> CheckResult {
    let digests: Vec<String> = sets
        .iter()
        .map(|set| members_digest(set.iter().copied()))
        .collect();
    let name_of: HashMap<&str, &str> = observations
        .iter()
        .filter_map(|o| o.status.as_ref().map(|s| (s.id.as_str(), o.name.as_str())))
        .collect();
    let mut mismatches = Vec::new();
    let mut total = 0;
    for (i, o) in observations.iter().enumerate() {
        let Some(s) = &o.status else { continue };
        total += 1;
        let set = set_of(i);
        let Some(expected) = sets.get(set) else {
            continue;
        };
        if digests
            .get(set)
            .is_some_and(|d| *d == s.membership_digest())
        {
            continue;
        }
        if s.members.is_empty() && s.member_total() > 0 {
            // Only the count was fetched: say how far off it is.
            mismatches.push((
                o.name.as_str(),
                Mismatch::Count(s.member_total(), expected.len()),
            ));
            continue;
        }
        let members: BTreeSet<&str> = s.members.iter().map(|p| p.id.as_str()).collect();
        let missing: Vec<&str> = expected
            .difference(&members)
            .map(|id| name_of.get(id).copied().unwrap_or(id))
            .collect();
        let unexpected = s
            .members
            .iter()
            .filter(|p| !expected.contains(p.id.as_str()));
        // A live node of another component is named; anything else is no live node.
        let (other, stranger): (Vec<_>, Vec<_>) =
            unexpected.partition(|p| name_of.contains_key(p.id.as_str()));
        let extra = Extra {
            live: other
                .iter()
                .filter_map(|p| name_of.get(p.id.as_str()).map(|n| n.to_string()))
                .collect(),
            strangers: stranger
                .iter()
                .map(|p| format!("{}@{}", short_id(&p.id), p.addr))
                .collect(),
        };
        let mismatch = if missing.is_empty() && extra.is_empty() {
            Mismatch::Digest
        } else {
            Mismatch::Listed(missing, extra)
        };
        mismatches.push((o.name.as_str(), mismatch));
    }
    let matching = total - mismatches.len();
    let failure = (!mismatches.is_empty() || total == 0).then(|| {
        if total == 0 {
            return "no node answered its status socket, so no membership could be seen".into();
        }
        // Nodes that disagree the same way (say, all still list one dead node) are told once.
        let mut groups: Vec<(Vec<&str>, &Mismatch)> = Vec::new();
        for (name, mismatch) in &mismatches {
            match groups.iter_mut().find(|(_, m)| *m == mismatch) {
                Some((names, _)) => names.push(name),
                None => groups.push((vec![name], mismatch)),
            }
        }
        let details: Vec<String> = groups
            .iter()
            .take(MEMBERSHIP_DETAILS)
            .map(|(names, mismatch)| {
                let who = match names.as_slice() {
                    [one] => one.to_string(),
                    many => format!("{} nodes ({})", many.len(), name_list(many)),
                };
                format!("{who}: {}", mismatch.describe())
            })
            .collect();
        let more = groups.len().saturating_sub(MEMBERSHIP_DETAILS);
        format!(
            "{} of {total} nodes disagree with {}: {}{}",
            mismatches.len(),
            wording.against,
            details.join("; "),
            if more > 0 {
                format!("; and {more} more disagreements")
            } else {
                String::new()
            }
        )
    });
    CheckResult::new(
        wording.name,
        wording.expected,
        format!("{matching}/{total} nodes match"),
        failure,
        json!({
            "matching": matching,
            "total": total,
            "mismatches": mismatches.iter().map(|(n, m)| m.json(n)).collect::<Vec<_>>(),
        }),
    )
}
