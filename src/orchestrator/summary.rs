//! The human summary printed at the end of a run: a node table and every check, readable
//! at a glance. Long runs show their worst nodes only, because 300 healthy rows hide the
//! one that matters.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::report::{NodeView, Report};
use super::text::{secs, short_id};

/// Above this many nodes the table shows only the worst [`WORST_SHOWN`].
const FULL_TABLE_MAX: usize = 25;
const WORST_SHOWN: usize = 20;
/// Broadcast lines shown before "and N more".
const MESSAGES_SHOWN: usize = 10;
/// Longest error text shown in the state column.
const STATE_MAX: usize = 60;

/// The report as the text `peerlab run` prints: checks, failures and a node table.
pub fn summary_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {} (topology {}, runtime {}, seed {})",
        report.run_id, report.topology, report.runtime, report.seed
    );
    let formed = match report.formation_secs {
        Some(s) => format!("all {} nodes ready after {s:.2}s", report.nodes.len()),
        None => "not every node became ready".to_string(),
    };
    let o = &report.overlay;
    let _ = writeln!(
        out,
        "started {}; {formed}; {} links, {} component(s), degree min {} / avg {:.1} / max {}{}",
        report.started_at,
        o.links,
        o.component_sizes.len(),
        o.min_degree,
        o.avg_degree,
        o.max_degree,
        o.diameter
            .map_or_else(String::new, |d| format!(", diameter {d}"))
    );
    if !o.asymmetric_links.is_empty() {
        let _ = writeln!(
            out,
            "{} link(s) seen by one end only, e.g. {} lists {} but not the reverse",
            o.asymmetric_links.len(),
            o.asymmetric_links[0][0],
            o.asymmetric_links[0][1]
        );
    }
    out.push('\n');
    node_table(&mut out, &report.nodes, &degree_offenders(report));
    if let Some(b) = &report.broadcast {
        out.push('\n');
        broadcast_table(&mut out, b);
    }
    if !report.scenario.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "scenario (seed {}):", report.seed);
        for step in &report.scenario {
            let _ = writeln!(
                out,
                "  {:>3}. {:>8}  {}",
                step.index,
                format!("+{}", crate::topology::duration_text(step.at)),
                step.text
            );
        }
    }
    out.push('\n');
    check_list(&mut out, report);
    out
}

/// Nodes a degree check named, so the table can say which rows broke it.
fn degree_offenders(report: &Report) -> HashSet<String> {
    report
        .checks
        .iter()
        .filter(|c| c.name.starts_with("min degree") || c.name.starts_with("max degree"))
        .filter_map(|c| c.value.get("offenders").and_then(|o| o.as_array()))
        .flatten()
        .filter_map(|o| o.get("node").and_then(|n| n.as_str()).map(str::to_string))
        .collect()
}

/// Bigger is worse: silent, then unready, then degree out of bounds, then fewest
/// neighbours, then slowest to ready.
fn badness(
    n: &NodeView,
    offenders: &HashSet<String>,
) -> (bool, bool, bool, std::cmp::Reverse<usize>, u64) {
    let slow = n.ready_after_secs.map_or(u64::MAX, |s| (s * 1000.0) as u64);
    (
        n.error.is_some() || n.id.is_none(),
        !n.ready,
        offenders.contains(&n.name),
        std::cmp::Reverse(n.degree),
        slow,
    )
}

fn state(n: &NodeView, offenders: &HashSet<String>) -> String {
    let s = if n.id.is_none() {
        format!(
            "NO STATUS: {}",
            n.error.as_deref().unwrap_or("did not answer")
        )
    } else if !n.ready {
        "NOT READY".to_string()
    } else if n.degree == 0 {
        "ISOLATED".to_string()
    } else if offenders.contains(&n.name) {
        "DEGREE OUT OF BOUNDS".to_string()
    } else {
        "ok".to_string()
    };
    if s.chars().count() > STATE_MAX {
        format!("{}...", s.chars().take(STATE_MAX).collect::<String>())
    } else {
        s
    }
}

fn node_table(out: &mut String, nodes: &[NodeView], offenders: &HashSet<String>) {
    let shown: Vec<&NodeView> = if nodes.len() <= FULL_TABLE_MAX {
        nodes.iter().collect()
    } else {
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(badness(&nodes[i], offenders)));
        let mut worst: Vec<usize> = order.into_iter().take(WORST_SHOWN).collect();
        worst.sort_unstable();
        worst.into_iter().map(|i| &nodes[i]).collect()
    };
    let mut rows = vec![row([
        "NODE",
        "ADDRESS",
        "DEGREE",
        "MEMBERS",
        "READY AFTER",
        "STATE",
    ])];
    for n in &shown {
        rows.push(vec![
            format!("{}{}", n.name, if n.genesis { " *" } else { "" }),
            n.addr.clone().unwrap_or_else(|| "-".into()),
            n.degree.to_string(),
            n.member_count.to_string(),
            secs(n.ready_after_secs),
            state(n, offenders),
        ]);
    }
    out.push_str(&table(&rows, &[false, false, true, true, true, false]));
    if shown.len() < nodes.len() {
        let rest: Vec<&NodeView> = nodes
            .iter()
            .filter(|n| !shown.iter().any(|s| std::ptr::eq(*s, *n)))
            .collect();
        let ready = rest.iter().filter(|n| n.ready).count();
        let dmin = rest.iter().map(|n| n.degree).min().unwrap_or(0);
        let dmax = rest.iter().map(|n| n.degree).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "(the {} worst of {} nodes; the other {}: {ready} ready, degree {dmin}-{dmax}; full list in the JSON report)",
            shown.len(),
            nodes.len(),
            rest.len()
        );
    }
    if nodes.iter().any(|n| n.genesis) {
        out.push_str("* genesis\n");
    }
}

fn broadcast_table(out: &mut String, b: &super::broadcast::BroadcastStats) {
    let mut rows = vec![row([
        "BROADCAST",
        "FROM",
        "REACHED",
        "FIRST",
        "LAST",
        "MAX HOPS",
        "DUPLICATES",
    ])];
    for m in b.messages.iter().take(MESSAGES_SHOWN) {
        rows.push(vec![
            short_id(&m.id).to_string(),
            m.from.clone(),
            format!("{}/{}", m.delivered, m.expected_receivers),
            secs(m.first_latency_secs),
            secs(m.last_latency_secs),
            m.max_hops.map_or_else(|| "-".into(), |h| h.to_string()),
            m.duplicates
                .iter()
                .map(|d| d.copies - 1)
                .sum::<usize>()
                .to_string(),
        ]);
    }
    out.push_str(&table(&rows, &[false, false, true, true, true, true, true]));
    if b.messages.len() > MESSAGES_SHOWN {
        let _ = writeln!(
            out,
            "(and {} more broadcasts)",
            b.messages.len() - MESSAGES_SHOWN
        );
    }
}

fn check_list(out: &mut String, report: &Report) {
    let mut rows = vec![row(["", "CHECK", "MEASURED", "EXPECTED"])];
    let mut messages = Vec::new();
    for c in &report.checks {
        rows.push(vec![
            if c.passed { "PASS" } else { "FAIL" }.to_string(),
            c.name.clone(),
            c.measured.clone(),
            c.expected.clone(),
        ]);
        if let Some(m) = &c.message {
            messages.push(format!("  {}: {m}", c.name));
        }
    }
    out.push_str(&table(&rows, &[false, false, false, false]));
    if !messages.is_empty() {
        out.push_str("\nWhy it failed:\n");
        for m in messages {
            let _ = writeln!(out, "{m}");
        }
    }
    let failed = report.checks.iter().filter(|c| !c.passed).count();
    let _ = writeln!(
        out,
        "\n{}: {} of {} checks passed",
        if report.passed { "PASSED" } else { "FAILED" },
        report.checks.len() - failed,
        report.checks.len()
    );
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Aligned columns separated by two spaces; the last column is never padded.
fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let last = c + 1 == r.len();
            if c > 0 {
                line.push_str("  ");
            }
            let w = widths[c];
            if right.get(c).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>w$}");
            } else if last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let rows = vec![
            row(["A", "B", "C"]),
            row(["long name", "1", "x"]),
            row(["b", "100", "y"]),
        ];
        let t = table(&rows, &[false, true, false]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A            B  C");
        assert_eq!(lines[1], "long name    1  x");
        assert_eq!(lines[2], "b          100  y");
    }
}
