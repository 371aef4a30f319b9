//! Flags of `peerlab node`, also readable as `PEERLAB_*` environment variables (how the
//! compose file and the Docker runtime configure containers).
//!
//! They live with the node rather than in the CLI module so that the node depends on nothing
//! above it; the CLI embeds them as its `node` subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// How the node writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)] // the variants' plain comments say it; see below
pub enum LogFormat {
    // Human-readable lines. (Plain comments: doc comments would change `--help`.)
    Pretty,
    // One JSON object per line, for log collectors.
    Json,
}

/// Flags of `peerlab node`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Peer-protocol address to listen on.
    #[arg(
        long,
        env = "PEERLAB_LISTEN",
        default_value = "0.0.0.0:7070",
        value_name = "HOST:PORT"
    )]
    pub listen: String,
    /// Status socket (HTTP, JSON) address.
    #[arg(
        long,
        env = "PEERLAB_STATUS",
        default_value = "0.0.0.0:7071",
        value_name = "HOST:PORT"
    )]
    pub status: String,
    /// Genesis node to join through; repeat for fallbacks. None: this node starts the network.
    /// An entry naming this node itself (its --name, alone or as the first label of a DNS
    /// name) ends the list: nodes sharing one list (the pods of a Kubernetes StatefulSet)
    /// each join only the genesis nodes before them, and the first starts the network.
    #[arg(
        long,
        env = "PEERLAB_GENESIS",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub genesis: Vec<String>,
    /// Address other nodes dial to reach this one. Default: the listen address, or this
    /// machine's hostname with the listen port when listening on 0.0.0.0 (right inside a container).
    #[arg(long, env = "PEERLAB_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Human name shown in status and logs (the topology's node name). Default: the id.
    #[arg(long, env = "PEERLAB_NAME")]
    pub name: Option<String>,
    /// Target number of neighbours; the node dials members until it has this many.
    #[arg(long, env = "PEERLAB_DEGREE", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub degree: u32,
    /// Most links this node keeps; further link requests are refused.
    #[arg(long, env = "PEERLAB_MAX_PEERS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_peers: u32,
    /// Most inbound connections at once (links, joins and not-yet-identified sockets).
    #[arg(long, env = "PEERLAB_MAX_CONNECTIONS", default_value_t = 128)]
    pub max_connections: usize,
    /// Seed of the node's randomness (peer choice, ids). Default: from --seed-base, else
    /// from the OS.
    #[arg(long, env = "PEERLAB_SEED")]
    pub seed: Option<u64>,
    /// Without --seed: derive the seed from this base and the node's --name, so nodes
    /// started from one template (a StatefulSet's pods) get distinct, reproducible seeds.
    #[arg(long, env = "PEERLAB_SEED_BASE", value_name = "N")]
    pub seed_base: Option<u64>,
    /// Names of held nodes, comma-separated. A node whose --name is listed starts nothing
    /// (no peer or status socket) and waits for SIGTERM or Ctrl-C, then exits 0: how an
    /// orchestrator keeps one pod of a Kubernetes StatefulSet down.
    #[arg(
        long,
        env = "PEERLAB_HOLD",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    pub hold: Vec<String>,
    /// How often a quiet link is pinged; when half of --heartbeat-timeout holds several
    /// intervals, every that many whole intervals (TCP pings are never lost, only late).
    #[arg(long, env = "PEERLAB_HEARTBEAT_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// A link silent for this long makes its node a suspect (a frozen node still accepts TCP).
    #[arg(long, env = "PEERLAB_HEARTBEAT_TIMEOUT", default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// A suspect that cannot be reached again for this long is declared dead network-wide.
    /// Grows with the network beyond 100 members (1.5 times at 1,000; at most 3 times).
    #[arg(long, env = "PEERLAB_SUSPECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub suspect_timeout: Duration,
    /// When this node's own probe of a suspect fails, ask this many neighbours to probe it
    /// (SWIM's indirect probe) before declaring it dead. 0: only its own probe decides.
    #[arg(long, env = "PEERLAB_INDIRECT_PROBES", default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub indirect_probes: u16,
    /// Log format.
    #[arg(long, env = "PEERLAB_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// After binding, write `{"listen": ..., "status": ..., "advertise": ...}` here (useful with port 0).
    #[arg(long, env = "PEERLAB_PORTS_FILE", value_name = "FILE")]
    pub ports_file: Option<PathBuf>,
    /// Broadcast every line typed on standard input (as the seed did); `exit` or EOF leaves.
    #[arg(long)]
    pub stdin: bool,
    /// Keep the node's ed25519 key (its identity) in this file: read it, or create it
    /// with mode 0600 when absent. A restarted node with the same file keeps its key and is
    /// let back in at once; without one every start makes a new key, and the network lets
    /// the node back in only once failure detection has declared its old incarnation dead.
    #[arg(long, env = "PEERLAB_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// A network-wide secret (64 hex characters, or a passphrase whose SHA-256 is used):
    /// every hello proof must then carry an HMAC under it, so a process without it cannot
    /// speak the protocol to this node. All nodes of a network need the same one. Prefer
    /// the environment variable: a command line is visible to every user of the machine.
    #[arg(
        long,
        env = "PEERLAB_NETWORK_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub network_key: Option<String>,
    /// Largest broadcast, in bytes of title and message, this node sends or relays. A
    /// larger one from a peer is dropped and counted (`oversize_dropped`), a larger local
    /// one refused. 64 KiB: chat-sized text with room to spare, and even escaped as JSON
    /// at its worst (6 bytes a character) well under the 1 MiB frame cap.
    #[arg(long, env = "PEERLAB_MAX_MESSAGE_BYTES", default_value_t = crate::node::machine::DEFAULT_MAX_MESSAGE_BYTES, value_name = "BYTES")]
    pub max_message_bytes: usize,
    /// User broadcasts per second that one link may forward to this node, in bursts of one
    /// second's worth; more are dropped and counted (`rate_limited`). 0: no limit.
    #[arg(
        long,
        env = "PEERLAB_FLOOD_RATE",
        default_value_t = 2_000,
        value_name = "PER_SEC"
    )]
    pub flood_rate: u64,
    /// Bytes of user broadcasts per second that one link may forward to this node, in bursts
    /// of one second's worth; more are dropped and counted (`rate_limited`). 0: no limit.
    #[arg(
        long,
        env = "PEERLAB_FLOOD_RATE_BYTES",
        default_value_t = 16 * 1024 * 1024,
        value_name = "BYTES_PER_SEC"
    )]
    pub flood_rate_bytes: u64,
    /// Bytes that the delivered broadcasts kept for `GET /messages` may take, besides their
    /// count (1,000); the oldest go first.
    #[arg(
        long,
        env = "PEERLAB_MESSAGES_MAX_BYTES",
        default_value_t = 8 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub messages_max_bytes: usize,
    /// Most connections the status socket serves at once; more are closed as they arrive.
    #[arg(long, env = "PEERLAB_STATUS_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub status_max_connections: u32,
    /// Most status-socket connections from one IP address, so one client cannot take every slot.
    #[arg(long, env = "PEERLAB_STATUS_MAX_PER_IP", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub status_max_per_ip: u32,
    /// A status-socket connection that has not sent a whole request head this long after it
    /// opened, or after its previous answer (keep-alive idle), is closed.
    #[arg(long, env = "PEERLAB_STATUS_HEADER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub status_header_timeout: Duration,
    /// Longest a status-socket request may take in all (body and answer); then 408.
    #[arg(long, env = "PEERLAB_STATUS_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub status_request_timeout: Duration,
    /// Most peer-port connections from one IP address that have not completed their hello.
    /// Default: three quarters of --max-connections, so one client re-opening idle
    /// connections leaves the rest for joiners, while the nodes of a local network (all on
    /// 127.0.0.1) can still join a genesis in a crowd.
    #[arg(long, env = "PEERLAB_MAX_PENDING_PER_IP", value_name = "N")]
    pub max_pending_per_ip: Option<usize>,
    /// Turns on `/admin/*` (link faults) and is the credential it requires
    /// (`Authorization: Bearer <token>`, at least 16 characters). Without it `/admin/*`
    /// answers 404. Prefer the environment variable: a flag is visible to every user in `ps`.
    #[arg(
        long,
        env = "PEERLAB_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<super::admin::AdminToken>,
}
