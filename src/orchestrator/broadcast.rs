//! Broadcast checks: did every injected broadcast reach the live nodes, in time, once?
//!
//! The origin delivers its own broadcast at hop 0, which proves nothing about the overlay,
//! so it is left out of every ratio and latency: only the other live nodes count.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::json;

use super::model::{BroadcastExpectation, CheckResult, InjectedBroadcast};
use super::text::{name_list, short_id};
use crate::contract::DeliveredMessage;

/// A node that delivered the same broadcast more than once (the flood's dedup failed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateDelivery {
    /// Name of the node that delivered it more than once.
    pub node: String,
    /// How many times it delivered it.
    pub copies: usize,
}

/// How one injected broadcast spread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageStats {
    /// Id of the broadcast, as `/messages` lists it.
    pub id: String,
    /// Node name it was injected at.
    pub from: String,
    /// When it was injected, as Unix seconds.
    pub sent_at_unix: f64,
    /// Live nodes other than the origin.
    pub expected_receivers: usize,
    /// How many of them delivered it.
    pub delivered: usize,
    /// `delivered / expected_receivers` (1 when there is nobody else to reach).
    pub ratio: f64,
    /// Seconds from sending to the first and the last delivery.
    pub first_latency_secs: Option<f64>,
    /// Seconds from sending to the last delivery.
    pub last_latency_secs: Option<f64>,
    /// Most links any copy crossed.
    pub max_hops: Option<u32>,
    /// Mean links crossed over the deliveries.
    pub avg_hops: Option<f64>,
    /// Live nodes that never delivered it.
    pub missing: Vec<String>,
    /// Nodes that delivered it after the deadline.
    pub late: Vec<String>,
    /// Nodes that delivered it more than once.
    pub duplicates: Vec<DuplicateDelivery>,
}

/// How all injected broadcasts spread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BroadcastStats {
    /// Each injected message.
    pub messages: Vec<MessageStats>,
    /// Worst and mean delivery ratio over the messages.
    pub min_ratio: f64,
    /// Mean delivery ratio over the messages.
    pub mean_ratio: f64,
    /// Slowest delivery of any message, in seconds.
    pub max_latency_secs: Option<f64>,
    /// Extra copies delivered, summed over nodes and messages.
    pub duplicate_deliveries: usize,
}

/// Computes per-message statistics and the three broadcast checks: reliability,
/// deadline and duplicates.
///
/// `delivered` maps node names to their `GET /messages`; a live node missing from the map
/// (its messages could not be fetched) counts as not having delivered anything.
pub fn evaluate_broadcast(
    injected: &[InjectedBroadcast],
    delivered: &BTreeMap<String, Vec<DeliveredMessage>>,
    expect: &BroadcastExpectation,
    live: &[String],
) -> (BroadcastStats, Vec<CheckResult>) {
    let deadline = expect.deliver_within.as_secs_f64();
    let messages: Vec<MessageStats> = injected
        .iter()
        .map(|b| message_stats(b, delivered, deadline, live))
        .collect();
    let ratios = messages.iter().map(|m| m.ratio);
    let min_ratio = ratios.clone().fold(f64::INFINITY, f64::min);
    let min_ratio = if min_ratio.is_finite() {
        min_ratio
    } else {
        0.0
    };
    let mean_ratio = if messages.is_empty() {
        0.0
    } else {
        ratios.sum::<f64>() / messages.len() as f64
    };
    let max_latency_secs = messages
        .iter()
        .filter_map(|m| m.last_latency_secs)
        .fold(None, |acc: Option<f64>, l| {
            Some(acc.map_or(l, |a| a.max(l)))
        });
    let duplicate_deliveries = messages
        .iter()
        .flat_map(|m| &m.duplicates)
        .map(|d| d.copies - 1)
        .sum();
    let stats = BroadcastStats {
        messages,
        min_ratio,
        mean_ratio,
        max_latency_secs,
        duplicate_deliveries,
    };
    let checks = vec![
        reliability_check(&stats, expect.reliability),
        deadline_check(&stats, expect),
        duplicate_check(&stats),
    ];
    (stats, checks)
}

fn message_stats(
    b: &InjectedBroadcast,
    delivered: &BTreeMap<String, Vec<DeliveredMessage>>,
    deadline: f64,
    live: &[String],
) -> MessageStats {
    // Per node: copies and the first delivery.
    let mut per_node: HashMap<&str, (usize, &DeliveredMessage)> = HashMap::new();
    for (node, msgs) in delivered {
        for m in msgs.iter().filter(|m| m.id == b.id) {
            per_node
                .entry(node.as_str())
                .and_modify(|(copies, first)| {
                    *copies += 1;
                    if m.received_at < first.received_at {
                        *first = m;
                    }
                })
                .or_insert((1, m));
        }
    }
    let receivers: Vec<&String> = live.iter().filter(|n| **n != b.from).collect();
    let mut missing = Vec::new();
    let mut late = Vec::new();
    let mut latencies = Vec::new();
    let mut hops = Vec::new();
    for node in &receivers {
        match per_node.get(node.as_str()) {
            None => missing.push((*node).clone()),
            Some((_, m)) => {
                // Clocks of different hosts can disagree slightly; a delivery is never
                // earlier than its sending.
                let latency = (m.received_at - b.sent_at_unix).max(0.0);
                if latency > deadline {
                    late.push((*node).clone());
                }
                latencies.push(latency);
                hops.push(m.hops);
            }
        }
    }
    let mut duplicates: Vec<DuplicateDelivery> = per_node
        .iter()
        .filter(|(_, (copies, _))| *copies > 1)
        .map(|(node, (copies, _))| DuplicateDelivery {
            node: node.to_string(),
            copies: *copies,
        })
        .collect();
    duplicates.sort_by(|a, b| a.node.cmp(&b.node));
    let delivered_count = latencies.len();
    let expected_receivers = receivers.len();
    MessageStats {
        id: b.id.clone(),
        from: b.from.clone(),
        sent_at_unix: b.sent_at_unix,
        expected_receivers,
        delivered: delivered_count,
        ratio: if expected_receivers == 0 {
            1.0
        } else {
            delivered_count as f64 / expected_receivers as f64
        },
        first_latency_secs: latencies.iter().copied().reduce(f64::min),
        last_latency_secs: latencies.iter().copied().reduce(f64::max),
        max_hops: hops.iter().copied().max(),
        avg_hops: (!hops.is_empty())
            .then(|| hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len() as f64),
        missing,
        late,
        duplicates,
    }
}

fn reliability_check(stats: &BroadcastStats, reliability: f64) -> CheckResult {
    let failing: Vec<&MessageStats> = stats
        .messages
        .iter()
        .filter(|m| m.ratio < reliability)
        .collect();
    let failure = if stats.messages.is_empty() {
        Some("no broadcast was injected: every POST /broadcast failed, see the run log".to_string())
    } else {
        (!failing.is_empty()).then(|| {
            failing
                .iter()
                .map(|m| {
                    format!(
                        "message {} from {} reached {}/{} nodes, missing {}",
                        short_id(&m.id),
                        m.from,
                        m.delivered,
                        m.expected_receivers,
                        name_list(&m.missing)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    };
    CheckResult::new(
        format!("broadcast reliability >= {reliability}"),
        format!(
            "each broadcast reaches >= {:.1}% of live nodes",
            reliability * 100.0
        ),
        format!(
            "worst {:.1}%, mean {:.1}% over {} broadcast(s)",
            stats.min_ratio * 100.0,
            stats.mean_ratio * 100.0,
            stats.messages.len()
        ),
        failure,
        json!({
            "min_ratio": stats.min_ratio,
            "mean_ratio": stats.mean_ratio,
            "messages": stats.messages.iter().map(|m| json!({
                "id": m.id, "ratio": m.ratio, "missing": m.missing,
            })).collect::<Vec<_>>(),
        }),
    )
}

fn deadline_check(stats: &BroadcastStats, expect: &BroadcastExpectation) -> CheckResult {
    let within = humantime::format_duration(expect.deliver_within).to_string();
    let late: Vec<&MessageStats> = stats
        .messages
        .iter()
        .filter(|m| !m.late.is_empty())
        .collect();
    let anyone_to_reach = stats.messages.iter().any(|m| m.expected_receivers > 0);
    let failure = if !late.is_empty() {
        Some(
            late.iter()
                .map(|m| {
                    format!(
                        "message {} from {} was late at {} (last after {:.2}s)",
                        short_id(&m.id),
                        m.from,
                        name_list(&m.late),
                        m.last_latency_secs.unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else if stats.max_latency_secs.is_none() && anyone_to_reach {
        Some("no broadcast was delivered to any other node, so none arrived in time".to_string())
    } else {
        None
    };
    CheckResult::new(
        format!("delivered within {within}"),
        format!("every delivery <= {within} after sending"),
        match stats.max_latency_secs {
            Some(l) => format!("slowest delivery {l:.3}s"),
            None => "no deliveries".to_string(),
        },
        failure,
        json!({
            "deadline_secs": expect.deliver_within.as_secs_f64(),
            "max_latency_secs": stats.max_latency_secs,
            "late": late.iter().map(|m| json!({"id": m.id, "nodes": m.late})).collect::<Vec<_>>(),
        }),
    )
}

fn duplicate_check(stats: &BroadcastStats) -> CheckResult {
    let dups: Vec<String> = stats
        .messages
        .iter()
        .flat_map(|m| {
            m.duplicates
                .iter()
                .map(move |d| format!("{} got {} {} times", d.node, short_id(&m.id), d.copies))
        })
        .collect();
    let failure = (!dups.is_empty()).then(|| {
        format!(
            "{} duplicate deliveries (a node delivered a broadcast it had already seen): {}",
            stats.duplicate_deliveries,
            name_list(&dups)
        )
    });
    CheckResult::new(
        "no duplicate deliveries",
        "each node delivers each broadcast once",
        format!("{} duplicate deliveries", stats.duplicate_deliveries),
        failure,
        json!({ "duplicates": stats.duplicate_deliveries, "detail": dups }),
    )
}
