//! The contract between a node and everything that drives or checks it: what the status
//! socket serves and accepts (`docs/status-api.md`), and the digests both sides compute.
//!
//! The node, the orchestrator, the runtimes and the `peerlab status` client all use these
//! types, and this module uses none of theirs: it is the bottom layer, so the node never
//! depends on the code that tests it, and any other node image that serves the same JSON can
//! be tested by peerlab too. Fields are only ever added, never renamed.
//!
//! - [`status`]: `GET /status`, `GET /messages`, `POST /broadcast`.
//! - [`admin`]: `/admin/*` (blocks, shaping, the faults report) and [`LinkShape`].
//! - [`digest`]: the length-prefixed SHA-256 digests (message ids, member sets).
//! - [`token`]: the admin token that unlocks `/admin/*` ([`AdminToken`]).
//! - [`network_key`]: the network key every node of a run needs ([`NetworkSecret`]).

pub mod admin;
pub mod digest;
pub mod network_key;
pub mod status;
pub mod token;

pub use admin::{
    ALL_LINKS, BlockRequest, Direction, FaultsReport, LinkShape, ShapeRequest, UnblockRequest,
};
pub use digest::members_digest;
pub use network_key::{NETWORK_KEY_ENV, NetworkSecret};
pub use status::{
    ApiError, BroadcastAccepted, BroadcastRequest, Counters, DeliveredMessage, NodeStatus, PeerRef,
    default_title,
};
pub use token::{ADMIN_TOKEN_ENV, ADMIN_TOKEN_HEADER, AdminToken};
