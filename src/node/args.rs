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
    /// Log format.
    #[arg(long, env = "PEERLAB_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// After binding, write `{"listen": ..., "status": ..., "advertise": ...}` here (useful with port 0).
    #[arg(long, env = "PEERLAB_PORTS_FILE", value_name = "FILE")]
    pub ports_file: Option<PathBuf>,
    /// Broadcast every line typed on standard input (as the seed did); `exit` or EOF leaves.
    #[arg(long)]
    pub stdin: bool,
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
