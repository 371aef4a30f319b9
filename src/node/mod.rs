//! The p2p node (`peerlab node`).
//!
//! - [`args`]: the flags of `peerlab node`.
//! - [`machine`]: join, membership, failure detection, repair and flooding as a sans-IO
//!   state machine that says when it next needs to wake; `members` and `seen` are its
//!   bounded tables.
//! - `sim` (with the cargo feature `sim`): a deterministic in-memory network of machines.
//! - `wire` and `codec`: messages and length-delimited JSON frames.
//! - `driver` and `connection`: the thin tokio layer that runs the machine over TCP.
//! - `faults`: partitions and link shaping the node applies to itself (`/admin/*`).
//! - `status`: the HTTP status socket the orchestrator checks.
//!
//! Modules named without a link are internal to the crate: the node's public surface is
//! [`run`], its flags and (for simulations) the machine.

pub mod args;
pub(crate) mod codec;
pub(crate) mod connection;
pub(crate) mod driver;
pub(crate) mod faults;
pub mod machine;
pub(crate) mod members;
pub(crate) mod metrics;
mod resolver;
pub(crate) mod seen;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub(crate) mod status;
mod timer;
pub(crate) mod wire;

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
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let id = match &args.name {
        Some(name) => name.clone(),
        None => format!("n-{:08x}", rand::rng().random::<u32>()),
    };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = Instant::now();
    let mut cfg = Config::new(id.clone(), advertise.clone());
    cfg.genesis = args.genesis.clone();
    cfg.degree = args.degree as usize;
    cfg.max_peers = args.max_peers as usize;
    cfg.heartbeat_interval = args.heartbeat_interval;
    cfg.heartbeat_timeout = args.heartbeat_timeout;
    cfg.suspect_timeout = args.suspect_timeout;
    cfg.hello_timeout = cfg_hello_timeout(&args);
    // Every wake-up costs the process (context switches, with hundreds of nodes on a few
    // cores), so deadlines are rounded as coarsely as the heartbeat allows: a quarter of
    // its interval, between 20 ms and 500 ms (the fixed tick this replaced).
    cfg.timer_granularity =
        (args.heartbeat_interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
    cfg.incarnation = wall.as_millis() as u64;
    cfg.unix_start = wall.as_secs_f64();
    cfg.seed = seed;
    let machine = Machine::new(cfg, now);
    let role = if machine.is_genesis() {
        "genesis (starts the network)"
    } else {
        "candidate"
    };
    info!(%id, %advertise, listen = %listen_addr, status = %status_addr, genesis = ?args.genesis, seed, "node starting as {role}");

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
    let status_shutdown = shutdown.clone();
    let status_server = tokio::spawn(async move {
        let app = status::router(commands_tx);
        let mut stop = status_shutdown;
        let serve = axum::serve(status_listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            warn!(error = %e, "status socket stopped");
        }
    });

    let signal_tx = shutdown_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("signal received; leaving");
        let _ = signal_tx.send(true);
    });

    let opts = DriverOptions {
        name: args.name.clone(),
        max_connections: args.max_connections,
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
        if let Ok(id) = answer.await {
            eprintln!("broadcast {}", &id[..12.min(id.len())]);
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
