//! The `checks` section: formation and broadcast checks.

use std::time::Duration;

use crate::topology::MAX_BROADCASTS;
use crate::topology::diagnostic::Sink;
use crate::topology::file::{BroadcastFile, ChecksFile, FormationFile};
use crate::topology::model::{BroadcastChecks, Checks, FormationChecks, Topology, node_name};

use super::{duration, others};

pub(super) fn checks(
    s: &mut Sink,
    file: Option<&ChecksFile>,
    total: usize,
    names: &[String],
    topology: &Topology,
) -> Checks {
    let formation_file = file.and_then(|f| f.formation.as_ref());
    let formation = formation(s, formation_file.map(|f| &f.value), total);
    let broadcast = file
        .and_then(|f| f.broadcast.as_ref())
        .map(|b| broadcast(s, &b.value, names, topology));
    Checks {
        formation,
        broadcast,
    }
}

fn formation(s: &mut Sink, file: Option<&FormationFile>, total: usize) -> FormationChecks {
    let empty = FormationFile::default();
    let file = file.unwrap_or(&empty);
    let base = "checks.formation";
    let within = file
        .within
        .as_ref()
        .and_then(|w| {
            let d = duration(s, w, &format!("{base}.within"))?;
            if d.is_zero() {
                s.report(
                    w.at,
                    format!("{base}.within"),
                    "0s leaves no time to form; expected a deadline such as `30s`",
                );
            }
            Some(d)
        })
        .unwrap_or(Duration::from_secs(30));
    let others = others(total);
    let min_degree = file.min_degree.as_ref();
    let max_degree = file.max_degree.as_ref();
    if let Some(min) = min_degree
        && min.value as usize > others
    {
        s.report(
            min.at,
            format!("{base}.min_degree"),
            format!(
                "{} is more than the {others} other nodes; expected at most {others}",
                min.value
            ),
        );
    }
    if let (Some(min), Some(max)) = (min_degree, max_degree)
        && min.value > max.value
    {
        s.report(
            min.at,
            format!("{base}.min_degree"),
            format!(
                "{} is more than max_degree {}; expected at most {}",
                min.value, max.value, max.value
            ),
        );
    }
    FormationChecks {
        within,
        all_ready: file.all_ready.as_ref().is_none_or(|v| v.value),
        connected: file.connected.as_ref().is_none_or(|v| v.value),
        min_degree: min_degree.map_or(others.min(1), |v| v.value as usize),
        max_degree: max_degree.map(|v| v.value as usize),
        full_membership: file.full_membership.as_ref().is_none_or(|v| v.value),
    }
}

fn broadcast(
    s: &mut Sink,
    file: &BroadcastFile,
    names: &[String],
    topology: &Topology,
) -> BroadcastChecks {
    let base = "checks.broadcast";
    if let Some(count) = &file.count {
        if count.value == 0 {
            s.report(
                count.at,
                format!("{base}.count"),
                "0 messages would check nothing; expected at least 1, or remove `broadcast`",
            );
        } else if count.value as usize > MAX_BROADCASTS {
            s.report(
                count.at,
                format!("{base}.count"),
                format!(
                    "{} messages are over the limit of {MAX_BROADCASTS} per check; expected 1 to {MAX_BROADCASTS}",
                    count.value
                ),
            );
        }
    }
    let mut from = Vec::new();
    for (i, pattern) in file.from.iter().flatten().enumerate() {
        let path = format!("{base}.from[{i}]");
        match glob::Pattern::new(&pattern.value) {
            Err(e) => s.report(
                pattern.at,
                path,
                format!(
                    "`{}` is not a valid glob ({e}); expected a node name or a pattern such as `peers-*`",
                    pattern.value
                ),
            ),
            Ok(glob) if !names.iter().any(|n| glob.matches(n)) => s.report(
                pattern.at,
                path,
                format!(
                    "`{}` names no node; expected a node name or glob matching {}",
                    pattern.value,
                    describe_nodes(topology)
                ),
            ),
            Ok(_) => from.push(pattern.value.clone()),
        }
    }
    let deliver_within = file
        .deliver_within
        .as_ref()
        .and_then(|d| {
            let value = duration(s, d, &format!("{base}.deliver_within"))?;
            if value.is_zero() {
                s.report(
                    d.at,
                    format!("{base}.deliver_within"),
                    "0s leaves no time to deliver; expected a deadline such as `5s`",
                );
            }
            Some(value)
        })
        .unwrap_or(Duration::from_secs(5));
    let reliability = file.reliability.as_ref().map_or(1.0, |r| {
        if !(0.0..=1.0).contains(&r.value) {
            s.report(
                r.at,
                format!("{base}.reliability"),
                format!(
                    "{} is not a ratio; expected a number from 0 to 1 (1.0: every node gets every message)",
                    r.value
                ),
            );
        }
        r.value
    });
    BroadcastChecks {
        count: file
            .count
            .as_ref()
            .map_or(1, |c| (c.value as usize).clamp(1, MAX_BROADCASTS)),
        from,
        deliver_within,
        reliability,
    }
}

/// `genesis-0, peers-0..peers-3`: the node names, compactly, for error messages.
fn describe_nodes(topology: &Topology) -> String {
    let parts: Vec<String> = std::iter::once(&topology.genesis)
        .chain(&topology.groups)
        .filter(|g| g.count > 0)
        .map(|g| match g.count {
            1 => node_name(&g.name, 0),
            n => format!("{}..{}", node_name(&g.name, 0), node_name(&g.name, n - 1)),
        })
        .collect();
    if parts.is_empty() {
        "no nodes (the topology has none)".to_string()
    } else {
        parts.join(", ")
    }
}
