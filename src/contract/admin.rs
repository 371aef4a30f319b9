//! The admin part of the status socket (`/admin/*`, `docs/status-api.md`): the requests that
//! cut and shape a node's links, and the report of what is in force.
//!
//! The node serves these, and the runtimes send them when they partition or shape through
//! the nodes themselves (kernel netem and iptables are missing or forbidden on many
//! machines). [`LinkShape`] is the runtime-neutral description of link conditions that
//! topologies, runtimes and the node all speak.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Link conditions applied to a node's links (by the node itself, or by the kernel where
/// the runtime can): kernel netem is missing on many machines, so every runtime must be able
/// to fall back to the node's own shaping.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkShape {
    /// Added to every outgoing frame.
    pub delay: Duration,
    /// The delay varies by up to this much either way, drawn per frame (order is kept).
    pub jitter: Duration,
    /// Probability in 0..=1 that a frame is dropped.
    pub loss: f64,
    /// Bytes per second, `None` for unlimited.
    pub rate: Option<u64>,
}

/// Which traffic a block drops, seen from the node that applies it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Nothing flows either way.
    #[default]
    Both,
    /// Frames from the peer are dropped; ours still reach it.
    In,
    /// Frames to the peer are dropped and dials to it time out; its frames still arrive.
    Out,
}

impl Direction {
    /// True when frames to the peer are dropped.
    pub fn drops_out(self) -> bool {
        matches!(self, Direction::Both | Direction::Out)
    }

    /// True when frames from the peer are dropped.
    pub fn drops_in(self) -> bool {
        matches!(self, Direction::Both | Direction::In)
    }

    /// Blocking one direction on top of the other blocks both.
    pub fn merge(self, other: Direction) -> Direction {
        if self == other { self } else { Direction::Both }
    }
}

/// `POST /admin/block`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRequest {
    /// Node ids, advertised `host:port` addresses, or bare IPs.
    pub peers: Vec<String>,
    /// Which traffic to drop; both ways by default.
    #[serde(default)]
    pub direction: Direction,
}

/// `POST /admin/unblock`; no `peers` lifts every block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnblockRequest {
    /// The peers to unblock; every blocked peer when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
}

/// `POST /admin/shape`: applies to links towards `peers`, or to every link without it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShapeRequest {
    /// Delay added to every outgoing frame, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Up to this much random variation of the delay, in milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability in 0..=1 that an outgoing frame is dropped.
    #[serde(default)]
    pub loss: f64,
    /// Bandwidth cap; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bytes_per_sec: Option<u64>,
    /// The peers whose links are shaped; every link when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
}

impl ShapeRequest {
    /// The request that applies `shape` (towards `peers` only, when given).
    pub fn new(shape: LinkShape, peers: Option<Vec<String>>) -> Self {
        ShapeRequest {
            delay_ms: shape.delay.as_millis() as u64,
            jitter_ms: shape.jitter.as_millis() as u64,
            loss: shape.loss,
            rate_bytes_per_sec: shape.rate,
            peers,
        }
    }

    /// The link conditions this request asks for (milliseconds back to durations).
    pub fn shape(&self) -> LinkShape {
        LinkShape {
            delay: Duration::from_millis(self.delay_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            loss: self.loss,
            rate: self.rate_bytes_per_sec,
        }
    }
}

/// `GET /admin/faults` (and the answer of every other admin call): what is in force now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultsReport {
    /// Blocked peer -> direction.
    pub blocked: BTreeMap<String, Direction>,
    /// Shapes in force: one per peer, and `"*"` for every other link.
    pub shaped: BTreeMap<String, ShapeRequest>,
    /// Outgoing frames dropped by blocks.
    pub dropped_out: u64,
    /// Incoming frames dropped by blocks.
    pub dropped_in: u64,
    /// Dials made to time out by blocks.
    pub dials_blocked: u64,
    /// Outgoing frames dropped by shaping (loss, or a full delay queue).
    pub lost: u64,
}

impl FaultsReport {
    /// True when no fault is in force (counters are history, not faults).
    pub fn is_clear(&self) -> bool {
        self.blocked.is_empty() && self.shaped.is_empty()
    }
}

/// Key of the shape that applies to every link without its own.
pub const ALL_LINKS: &str = "*";
