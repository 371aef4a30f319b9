//! The p2p node (`peerlab node`).
//!
//! - [`args`]: the flags of `peerlab node`.
//! - [`machine`]: join, membership, failure detection, repair and flooding as a sans-IO
//!   state machine that says when it next needs to wake; `members` and `seen` are its
//!   bounded tables.
//! - `sim` (with the cargo feature `sim`): a deterministic in-memory network of machines.
//! - `wire` and `codec`: messages and length-delimited JSON frames.
//! - [`identity`]: the node's ed25519 key, its hello proofs and signed member records.
//! - `driver` and `connection`: the thin tokio layer that runs the machine over TCP.
//! - `limits`: length and syntax limits on ids and addresses from the network.
//! - `faults`: partitions and link shaping the node applies to itself (`/admin/*`).
//! - `status`: the HTTP status socket the orchestrator checks; `serve` keeps its
//!   connections within caps and timeouts, and [`admin`] guards its `/admin/*`.
//!
//! Modules named without a link are internal to the crate: the node's public surface is
//! [`run`], its flags and (for simulations) the machine.

pub mod admin;
pub mod args;
pub(crate) mod codec;
pub(crate) mod connection;
pub(crate) mod driver;
pub(crate) mod faults;
pub mod identity;
pub(crate) mod limits;
pub(crate) mod logsafe;
pub mod machine;
pub(crate) mod members;
pub(crate) mod metrics;
mod pending;
mod resolver;
pub(crate) mod seen;
mod serve;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub(crate) mod status;
mod timer;
pub(crate) mod wire;

/// The version a node's hello carries; a hello with another is refused. Public for tests
/// and other implementations that speak the protocol (docs/protocol.md).
pub use wire::PROTOCOL_VERSION;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rand::RngExt;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use args::NodeArgs;
use driver::DriverOptions;
use machine::{Config, Machine};
use status::Command;

/// Words that end an interactive session, as the seed's disconnect word did.
const LEAVE_WORDS: [&str; 3] = ["exit", "quit", "disconnect"];

/// Runs a node until it is told to leave. Returns once the leave has been flooded.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    if args.max_peers < args.degree {
        bail!(
            "--max-peers ({}) must be at least --degree ({})",
            args.max_peers,
            args.degree
        );
    }
    if let Some(name) = held(&args) {
        return hold(name, &args).await;
    }
    let admin_token = args.admin_token.clone().filter(|t| !t.is_empty());
    if let Some(token) = &admin_token {
        token.check().map_err(|reason| {
            anyhow::anyhow!(
                "the admin token ({}) is not usable: {reason}",
                admin::ADMIN_TOKEN_ENV
            )
        })?;
    }
    let caps = Caps::within_descriptors(&args);
    let listener = TcpListener::bind(&args.listen).await.with_context(|| {
        format!(
            "cannot listen for peers on {} (is another node using it? pick another --listen)",
            args.listen
        )
    })?;
    let listen_addr = listener.local_addr()?;
    let status_listener = TcpListener::bind(&args.status).await.with_context(|| {
        format!(
            "cannot open the status socket on {} (pick another --status)",
            args.status
        )
    })?;
    let status_addr = status_listener.local_addr()?;
    let advertise = match &args.advertise {
        Some(a) => a.clone(),
        None => default_advertise(listen_addr),
    };
    let id = match &args.name {
        Some(name) => name.clone(),
        None => format!("n-{:08x}", rand::rng().random::<u32>()),
    };
    // Peers refuse ids and addresses outside these limits: a node that breaks them
    // could never be a member, so say so now.
    if let Err((what, why)) = limits::check_member(&id, &advertise) {
        bail!("this node's {what} is refused by the peer protocol: {why}");
    }
    let seed = match (args.seed, args.seed_base) {
        (Some(seed), _) => seed,
        (None, Some(base)) => seed_from_base(base, &id),
        (None, None) => rand::rng().random(),
    };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = Instant::now();
    let mut cfg = Config::new(id.clone(), advertise.clone());
    cfg.genesis = genesis_before(&args.genesis, args.name.as_deref());
    cfg.degree = args.degree as usize;
    cfg.max_peers = args.max_peers as usize;
    cfg.heartbeat_interval = args.heartbeat_interval;
    cfg.heartbeat_timeout = args.heartbeat_timeout;
    cfg.suspect_timeout = args.suspect_timeout;
    cfg.hello_timeout = cfg_hello_timeout(&args);
    cfg.indirect_probes = usize::from(args.indirect_probes);
    // Every wake-up costs the process (context switches, with hundreds of nodes on a few
    // cores), so deadlines are rounded as coarsely as the heartbeat allows: a quarter of
    // its interval, between 20 ms and 500 ms (the fixed tick this replaced).
    cfg.timer_granularity =
        (args.heartbeat_interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
    cfg.incarnation = wall.as_millis() as u64;
    cfg.unix_start = wall.as_secs_f64();
    cfg.seed = seed;
    if let Some(path) = &args.key_file {
        cfg.identity = identity::Identity::load_or_create(path)?;
    }
    if let Some(secret) = &args.network_key {
        cfg.network_key = Some(identity::NetworkKey::parse(secret).context("--network-key")?);
    }
    let public_key = cfg.identity.public_hex().to_string();
    cfg.max_message_bytes = args.max_message_bytes;
    cfg.flood_rate_messages = args.flood_rate;
    cfg.flood_rate_bytes = args.flood_rate_bytes;
    cfg.delivered_max_bytes = args.messages_max_bytes;
    let machine = Machine::new(cfg, now);
    let role = if machine.is_genesis() {
        "genesis (starts the network)"
    } else {
        "candidate"
    };
    info!(%id, %advertise, listen = %listen_addr, status = %status_addr, genesis = ?args.genesis, seed, %public_key, "node starting as {role}");

    if let Some(path) = &args.ports_file {
        let ports = serde_json::json!({
            "listen": listen_addr.to_string(),
            "status": status_addr.to_string(),
            "advertise": advertise,
            "id": id,
        });
        std::fs::write(path, ports.to_string())
            .with_context(|| format!("cannot write the ports file {}", path.display()))?;
    }

    let (commands_tx, commands) = mpsc::channel::<Command>(256);
    let (shutdown_tx, shutdown) = watch::channel(false);

    if args.stdin {
        tokio::spawn(read_stdin(commands_tx.clone()));
    }
    if admin_token.is_none() {
        info!(
            "admin API off: /admin/* answers 404 (set {} to turn it on)",
            admin::ADMIN_TOKEN_ENV
        );
    }
    let app = status::router(commands_tx, admin_token);
    let status_server = tokio::spawn(serve::serve(
        status_listener,
        app,
        caps.status,
        shutdown.clone(),
    ));

    let signal_tx = shutdown_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("signal received; leaving");
        let _ = signal_tx.send(true);
    });

    let opts = DriverOptions {
        name: args.name.clone(),
        max_connections: caps.peer,
        max_pending_per_ip: caps.pending_per_ip,
        // A dial covers name resolution too: on Docker, a busy embedded DNS server with a
        // hundred containers can take over a second, and a join or probe that gives up
        // then turns slowness into a failed join or a suspicion. Match the handshake bound.
        connect_timeout: cfg_hello_timeout(&args),
        echo_deliveries: args.stdin,
        seed,
        round_gather: round_gather(args.heartbeat_interval),
    };
    driver::drive(machine, listener, commands, shutdown, opts).await;
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_millis(500), status_server).await;
    Ok(())
}

/// The connection caps in force, kept well below the descriptor limit.
struct Caps {
    /// Peer-port connections at once (`--max-connections`).
    peer: usize,
    /// Peer-port connections per IP before their hello (`--max-pending-per-ip`).
    pending_per_ip: usize,
    /// The status socket's bounds.
    status: serve::Bounds,
}

impl Caps {
    /// Raises the soft descriptor limit to the hard one (a node at its caps then never
    /// runs out), and lowers the caps when even that limit is small: both sockets' caps
    /// together stay under half the limit, the rest left for dials, logs and the runtime.
    fn within_descriptors(args: &NodeArgs) -> Caps {
        let limit = raise_nofile_limit();
        let mut peer = args.max_connections.max(1);
        let mut status = args.status_max_connections as usize;
        if let Some(limit) = limit {
            let budget = (limit / 2).max(2) as usize;
            if peer + status > budget {
                let scaled = |n: usize| (n * budget / (peer + status)).max(1);
                let (p, s) = (scaled(peer), scaled(status));
                warn!(
                    limit,
                    max_connections = p,
                    status_max_connections = s,
                    "the descriptor limit is low: connection caps lowered to fit in half of it"
                );
                (peer, status) = (p, s);
            }
        }
        let pending_per_ip = args
            .max_pending_per_ip
            .unwrap_or(peer * 3 / 4)
            .clamp(1, peer);
        Caps {
            peer,
            pending_per_ip,
            status: serve::Bounds {
                max_connections: status,
                per_ip: (args.status_max_per_ip as usize).clamp(1, status),
                header_timeout: args.status_header_timeout,
                request_timeout: args.status_request_timeout,
            },
        }
    }
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
fn raise_nofile_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// A held node: nothing but waiting for SIGTERM or Ctrl-C. It opens no peer port; its
/// status socket only says that it is alive (`/live`, for a Kubernetes liveness probe, which
/// would otherwise restart the pod every minute and a half) and answers 503 to the rest. The
/// signal handlers are installed before the line is logged, so a signal sent as soon as the
/// line appears ends the process with exit 0 rather than killing it.
async fn hold(name: &str, args: &NodeArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    // A status address that cannot be bound is not worth failing a held node over: it only
    // waits, and the orchestrator ends it.
    // Bounded like a running node's: a held node is as reachable.
    let (_keep_serving, stop) = watch::channel(false);
    match TcpListener::bind(&args.status).await {
        Ok(listener) => {
            let bounds = Caps::within_descriptors(args).status;
            tokio::spawn(serve::serve(listener, status::held_router(), bounds, stop));
        }
        Err(e) => {
            warn!(error = %e, status = %args.status, "held node cannot open its status socket")
        }
    }
    info!(name, "held by the orchestrator: waiting for SIGTERM");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("signal received; exiting without having started");
    Ok(())
}

/// The node's name when `--hold` lists it: it must start nothing.
fn held(args: &NodeArgs) -> Option<&str> {
    let name = args.name.as_deref()?;
    args.hold.iter().any(|h| h.trim() == name).then_some(name)
}

/// A node's seed from a shared base and its name (`--seed-base`): a hash, so names that
/// differ in one character still get unrelated randomness.
pub fn seed_from_base(base: u64, name: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"peerlab seed base\0")
        .chain_update(base.to_le_bytes())
        .chain_update(name.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The genesis list up to (not including) the first entry that names this node itself,
/// by its name alone or as the first label of a DNS name (`genesis-1.genesis.ns.svc...`).
/// Pods of one StatefulSet share one list, so `genesis-0` finds itself first and starts
/// the network, and `genesis-1` joins through `genesis-0` only, as a runtime that gives
/// each node its own list would have it.
fn genesis_before(genesis: &[String], name: Option<&str>) -> Vec<String> {
    let Some(name) = name else {
        return genesis.to_vec();
    };
    let is_self = |entry: &str| {
        let host = entry.rsplit_once(':').map_or(entry, |(host, _)| host);
        host == name
            || host
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    genesis
        .iter()
        .take_while(|entry| !is_self(entry))
        .cloned()
        .collect()
}

/// The advertised address when none is given: the listen address, or the hostname with the
/// listen port when listening on every interface (inside a container the hostname is what
/// the other containers resolve).
fn default_advertise(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        match nix::unistd::gethostname() {
            Ok(host) => format!("{}:{}", host.to_string_lossy(), listen.port()),
            Err(_) => format!("127.0.0.1:{}", listen.port()),
        }
    } else {
        listen.to_string()
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn read_stdin(commands: mpsc::Sender<Command>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    eprintln!("type a line to broadcast it; `exit` leaves the network");
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        if LEAVE_WORDS.contains(&line.as_str()) {
            break;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = crate::contract::BroadcastRequest {
            title: crate::contract::default_title(),
            message: line,
        };
        if commands
            .send(Command::Broadcast { request, reply })
            .await
            .is_err()
        {
            return;
        }
        match answer.await {
            Ok(Ok(id)) => eprintln!("broadcast {}", &id[..12.min(id.len())]),
            Ok(Err(refused)) => eprintln!("not sent: {refused}"),
            Err(_) => {}
        }
    }
    let _ = commands.send(Command::Leave).await;
}

/// How long the driver gathers a heartbeat round's pings (see `driver::DriverOptions`):
/// a sixteenth of the interval (6% of the time), at most 60 ms. Measured at 300 idle
/// nodes on 2 cores with a 1 s heartbeat: 2.9 wake-ups per node and second without it,
/// 2.8 with 25 ms, 2.3 with 60 ms.
fn round_gather(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval / 16).min(Duration::from_millis(60))
}

/// How long a handshake (and a dial) may take: a heartbeat timeout and interval, at least 1 s.
fn cfg_hello_timeout(args: &NodeArgs) -> Duration {
    (args.heartbeat_timeout + args.heartbeat_interval).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_from_one_base_differ_by_name_and_repeat_for_a_name() {
        assert_eq!(seed_from_base(7, "peers-0"), seed_from_base(7, "peers-0"));
        assert_ne!(seed_from_base(7, "peers-0"), seed_from_base(7, "peers-1"));
        assert_ne!(seed_from_base(7, "peers-0"), seed_from_base(8, "peers-0"));
    }

    #[test]
    fn a_node_joins_only_the_genesis_nodes_listed_before_itself() {
        let list: Vec<String> = [
            "genesis-0.genesis.ns.svc.cluster.local:7070",
            "genesis-1.genesis.ns.svc.cluster.local:7070",
            "genesis-10:7070",
        ]
        .map(String::from)
        .to_vec();
        assert!(genesis_before(&list, Some("genesis-0")).is_empty());
        assert_eq!(genesis_before(&list, Some("genesis-1")), list[..1]);
        // `genesis-1` is not a prefix match of `genesis-10`, and peers keep the whole list.
        assert_eq!(genesis_before(&list, Some("genesis-10")), list[..2]);
        assert_eq!(genesis_before(&list, Some("peers-3")), list);
        assert_eq!(genesis_before(&list, None), list);
        let bare = vec!["genesis-0".to_string(), "10.0.0.1:7070".to_string()];
        assert!(genesis_before(&bare, Some("genesis-0")).is_empty());
    }

    #[test]
    fn only_a_listed_name_is_held() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            node: NodeArgs,
        }
        let parse = |args: &[&str]| {
            Cli::parse_from(std::iter::once("node").chain(args.iter().copied())).node
        };
        let held_args = parse(&["--name", "peers-1", "--hold", "peers-0,peers-1"]);
        assert_eq!(held(&held_args), Some("peers-1"));
        assert_eq!(
            held(&parse(&["--name", "peers-2", "--hold", "peers-0,peers-1"])),
            None
        );
        assert_eq!(
            held(&parse(&["--hold", "peers-1"])),
            None,
            "a node without a name is never held"
        );
    }
}
