//! The status socket's JSON contract (`docs/status-api.md`).
//!
//! These types are shared by the node that serves them, the `peerlab status` client and
//! the orchestrator that checks whole networks. Keeping one definition means the node and
//! its checker cannot drift apart; any other node image that serves the same JSON can be
//! tested by peerlab too. Fields are only ever added, never renamed.

use serde::{Deserialize, Serialize};

use super::digest::members_digest;

/// Status sockets a checker (peerlab's observer) asks at once. Part of the contract because
/// what carries the requests has to take that many: the Kubernetes runtime sizes its check
/// of the API server's pace on it.
pub const POLL_CONCURRENCY: usize = 64;

/// How long a client of status sockets keeps an idle connection for reuse. A node closes a
/// keep-alive connection after 5 s without a request (`--status-header-timeout`); a client
/// that reused one as the node closed it got "connection closed before message completed"
/// (a swarm run's heal, 4 s after its partition through an exec tunnel). Well under the
/// node's idle close, so that the client is always the one to let go.
pub const CLIENT_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// A reference to another node: its stable id and the address others dial.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerRef {
    /// Stable node id, to match the same node across views.
    pub id: String,
    /// Address other nodes dial to reach it.
    pub addr: String,
}

/// `GET /status`: what one node sees of the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Stable identifier of this node (unique in the network).
    pub id: String,
    /// Human name given with `--name` (the topology's node name), if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Advertised peer-protocol address (what other nodes dial).
    pub addr: String,
    /// True when this node started the network (it had no genesis to contact).
    pub genesis: bool,
    /// True once the node has completed its join (a genesis is joined from the start).
    pub joined: bool,
    /// Nodes with an established link to this one.
    pub neighbours: Vec<PeerRef>,
    /// Every node this one believes is in the network, itself included. Left out (empty)
    /// when asked for `GET /status?members=false`; `member_count` and `members_digest`
    /// still describe it.
    #[serde(default)]
    pub members: Vec<PeerRef>,
    /// How many members this node knows, itself included.
    #[serde(default)]
    pub member_count: Option<usize>,
    /// [`members_digest`] of the member ids: two nodes with the same digest know the same
    /// members. It lets a checker compare the views of a thousand nodes without moving a
    /// thousand lists of a thousand members every round.
    #[serde(default)]
    pub members_digest: Option<String>,
    /// Members suspected of failure but not yet confirmed dead.
    #[serde(default)]
    pub suspects: Vec<PeerRef>,
    /// The degree this node tries to keep.
    #[serde(default)]
    pub target_degree: usize,
    /// Traffic and fault counters, for checks and benchmarks.
    #[serde(default)]
    pub counters: Counters,
    /// Seconds since the node started.
    pub uptime_secs: f64,
    /// peerlab version of the node (informational).
    #[serde(default)]
    pub version: String,
    /// The node's public key (ed25519, hex): the key its id is bound to in the network.
    /// Empty from nodes that predate signed identities.
    #[serde(default)]
    pub public_key: String,
}

impl NodeStatus {
    /// How many members the node knows, whether or not the list was served.
    pub fn member_total(&self) -> usize {
        self.member_count.unwrap_or(self.members.len())
    }

    /// The digest of the node's member ids: the one it served, or computed from the list
    /// (a node image that serves only the list is checked the same way).
    pub fn membership_digest(&self) -> String {
        match &self.members_digest {
            Some(d) => d.clone(),
            None => members_digest(self.members.iter().map(|m| m.id.as_str())),
        }
    }
}

/// Monotonic counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Broadcasts delivered to this node (each at most once).
    pub delivered: u64,
    /// Flooded messages dropped because their id was already seen.
    pub duplicates_dropped: u64,
    /// Protocol frames received.
    pub frames_in: u64,
    /// Protocol frames sent.
    pub frames_out: u64,
    /// Bytes received on peer links.
    pub bytes_in: u64,
    /// Bytes sent on peer links.
    pub bytes_out: u64,
    /// Connections closed because of a malformed, oversized or out-of-order frame.
    #[serde(default)]
    pub bad_frames: u64,
    /// Inbound connections refused because a cap was reached.
    #[serde(default)]
    pub connections_refused: u64,
    /// Members this node declared dead.
    #[serde(default)]
    pub members_declared_dead: u64,
    /// Hellos and member records refused for their identity: a bad signature or proof,
    /// or an id that a living member holds with another key.
    #[serde(default)]
    pub identity_refused: u64,
    /// Member ids or addresses from peers refused for their length or syntax.
    #[serde(default)]
    pub refused_records: u64,
    /// New members from peers ignored because their connection sent more than it may add.
    #[serde(default)]
    pub capped_members: u64,
    /// Floods from peers dropped for their size (over `--max-message-bytes`).
    #[serde(default)]
    pub oversize_dropped: u64,
    /// User broadcasts from peers dropped because their link was over its rate
    /// (`--flood-rate`, `--flood-rate-bytes`).
    #[serde(default)]
    pub rate_limited: u64,
    /// Probe requests this node sent to neighbours about its suspects (indirect probes).
    #[serde(default)]
    pub indirect_probes_sent: u64,
    /// Suspects this node found alive through a neighbour's probe after its own had failed.
    #[serde(default)]
    pub indirect_probe_saves: u64,
    /// Answers to this node's probe requests that claimed life with a proof that does not
    /// verify (forged, replayed, another nonce or key).
    #[serde(default)]
    pub indirect_answers_refused: u64,
    /// Probe requests from neighbours this node served (it dialed the member for them).
    #[serde(default)]
    pub probe_requests_served: u64,
    /// Probe requests from neighbours refused: over the caps, for a member unknown here or
    /// at another address, or malformed.
    #[serde(default)]
    pub probe_requests_refused: u64,
}

/// `POST /broadcast` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BroadcastRequest {
    /// Defaults to `#BROADCAST`, the seed's title for a user broadcast.
    #[serde(default = "default_title")]
    pub title: String,
    /// Text to broadcast.
    pub message: String,
}

/// The title a broadcast gets when the request names none.
pub fn default_title() -> String {
    "#BROADCAST".to_string()
}

/// `POST /broadcast` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BroadcastAccepted {
    /// Id of the broadcast, to find it later in other nodes' `/messages`.
    pub id: String,
}

/// One entry of `GET /messages`: a broadcast delivered to this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveredMessage {
    /// SHA-256 hex digest identifying the broadcast network-wide.
    pub id: String,
    /// Title the sender gave it.
    pub title: String,
    /// Text of the broadcast.
    pub message: String,
    /// Id of the node that originated it.
    pub origin: String,
    /// Unix seconds (fractional) when the origin sent it.
    pub time: f64,
    /// Links it crossed to get here (0 at the origin).
    pub hops: u32,
    /// Unix seconds (fractional) when this node delivered it.
    pub received_at: f64,
}

/// Error body of any non-2xx answer of the status socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for people.
    pub error: String,
}
