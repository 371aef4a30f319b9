//! Wire counters shared by connection tasks, and the Prometheus exposition of a status.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::contract::NodeStatus;

/// Counted by the connection tasks, lock-free.
#[derive(Debug, Default)]
pub struct WireCounters {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections_refused: AtomicU64,
}

impl WireCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Renders a status as Prometheus text exposition (`GET /metrics`).
pub fn render(status: &NodeStatus) -> String {
    let mut registry = Registry::with_prefix("peerlab");
    let counters = [
        (
            "delivered",
            "Broadcasts delivered to this node",
            status.counters.delivered,
        ),
        (
            "duplicates_dropped",
            "Flooded messages dropped as duplicates",
            status.counters.duplicates_dropped,
        ),
        ("frames_in", "Frames received", status.counters.frames_in),
        ("frames_out", "Frames sent", status.counters.frames_out),
        (
            "bytes_in",
            "Bytes received on the peer protocol",
            status.counters.bytes_in,
        ),
        (
            "bytes_out",
            "Bytes sent on the peer protocol",
            status.counters.bytes_out,
        ),
        (
            "bad_frames",
            "Connections closed for a bad frame",
            status.counters.bad_frames,
        ),
        (
            "connections_refused",
            "Inbound connections refused at the cap",
            status.counters.connections_refused,
        ),
        (
            "oversize_dropped",
            "Floods from peers dropped for their size",
            status.counters.oversize_dropped,
        ),
        (
            "rate_limited",
            "Broadcasts from peers dropped over their link's rate",
            status.counters.rate_limited,
        ),
        (
            "members_declared_dead",
            "Members this node declared dead",
            status.counters.members_declared_dead,
        ),
        (
            "identity_refused",
            "Hellos and member records refused for a bad signature or a key conflict",
            status.counters.identity_refused,
        ),
        (
            "refused_records",
            "Member ids or addresses refused for their length or syntax",
            status.counters.refused_records,
        ),
        (
            "capped_members",
            "New members ignored over a connection's budget",
            status.counters.capped_members,
        ),
        (
            "indirect_probes_sent",
            "Probe requests sent to neighbours about suspects",
            status.counters.indirect_probes_sent,
        ),
        (
            "indirect_probe_saves",
            "Suspects found alive through a neighbour's probe",
            status.counters.indirect_probe_saves,
        ),
        (
            "indirect_answers_refused",
            "Probe answers whose proof of life did not verify",
            status.counters.indirect_answers_refused,
        ),
        (
            "probe_requests_served",
            "Probe requests from neighbours served",
            status.counters.probe_requests_served,
        ),
        (
            "probe_requests_refused",
            "Probe requests from neighbours refused",
            status.counters.probe_requests_refused,
        ),
    ];
    for (name, help, value) in counters {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        registry.register(name, help, counter);
    }
    let gauges = [
        (
            "neighbours",
            "Established links",
            status.neighbours.len() as i64,
        ),
        (
            "members",
            "Members this node believes alive, itself included",
            status.member_total() as i64,
        ),
        (
            "suspects",
            "Members suspected of failure",
            status.suspects.len() as i64,
        ),
        (
            "joined",
            "1 once the node has joined",
            i64::from(status.joined),
        ),
    ];
    for (name, help, value) in gauges {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    uptime.set(status.uptime_secs);
    registry.register("uptime_seconds", "Seconds since the node started", uptime);
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text.clear();
    }
    text
}
