//! The one harness of every integration test binary (`tests/node`, `tests/topology`,
//! `tests/local`, `tests/docker`, `tests/swarm`): each declares it with
//! `#[path = "../support/mod.rs"] mod support;` and uses the parts it needs.
//!
//! What lives here lives once: the binary under test ([`BIN`]), the repository root
//! ([`ROOT`]), polling with a deadline ([`POLL`], [`poll_until`], [`poll_until_blocking`]),
//! the turns that heavy runs and users of engine-wide names take ([`heavy_turn`],
//! [`engine_turn`]), and in the submodules the hostile peer of the node tests ([`attacker`]), the process guards
//! ([`cluster`], [`cli`]), the Docker helpers ([`docker`]), the multi-host swarm lab ([`swarm`]), plan fixtures ([`fixtures`]),
//! "did the overlay form" judged by the orchestrator's own checks ([`formation`]) and the
//! fault topologies and their reports ([`reports`]).
//!
//! Every binary uses a part of it only, hence the `allow`.
#![allow(dead_code)]

pub mod attacker;
pub mod cli;
pub mod cluster;
pub mod docker;
pub mod fixtures;
pub mod formation;
pub mod reports;
pub mod swarm;

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

/// The binary under test (built by cargo for integration tests).
pub const BIN: &str = env!("CARGO_BIN_EXE_peerlab");

/// The repository root: `topologies/`, `docker-compose.yml` and `tests/data/` live there.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The admin token of the nodes tests start (`cluster` nodes and hand-written plans): a
/// fixed one, so a test can send it; runs of the orchestrator generate their own.
pub const ADMIN_TOKEN: &str = "peerlab-test-admin-token-0123456789";

/// The `Authorization` header value that carries [`ADMIN_TOKEN`].
pub fn admin_bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// Interval between polls. Every poll carries a deadline; the interval only limits CPU use.
pub const POLL: Duration = Duration::from_millis(50);

/// The repository's topology directory.
pub fn topologies_dir() -> PathBuf {
    PathBuf::from(ROOT).join("topologies")
}

/// Polls `check` every [`POLL`] until it returns `Some`, or panics after `within` with `what`.
pub async fn poll_until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Blocking twin of [`poll_until`] for tests that are not async.
pub fn poll_until_blocking<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Held for the whole of a heavy run: a fault scenario with one-second failure detection
/// (up to twenty nodes or containers) or a run of thirty containers and more. Two such runs
/// at once on two cores starve each other into false failures, so they take turns: across
/// the threads of one test binary and across the test binaries of one build, since a runner
/// such as cargo-nextest runs each test in a process of its own and several binaries at
/// once. The lock file lives in this build's target directory (`CARGO_TARGET_TMPDIR`): the
/// runs of one `cargo test`/`cargo nextest run` take turns, other checkouts are not waited
/// for. The lock goes with the guard, or with the process when it dies.
pub fn heavy_turn() -> Turn {
    Turn::take(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("peerlab-heavy-turn.lock"))
}

/// Held by the Kubernetes tests that start pods: one run at a time on the cluster (a
/// handful of pods beside the cluster's own control plane on two cores). A turn of its own
/// rather than [`heavy_turn`], so that the cluster tests run beside the Docker ones instead
/// of queueing behind them.
pub fn kubernetes_turn() -> Turn {
    Turn::take(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("peerlab-kubernetes-turn.lock"))
}

/// Held while a test uses something the whole Docker engine shares under a fixed name
/// (`name`: the node image tag, quickstart.yaml's pinned subnet): the lock file is in the
/// machine's temporary directory, so the test processes of every test binary and checkout
/// on this engine take turns.
pub fn engine_turn(name: &str) -> Turn {
    Turn::take(&std::env::temp_dir().join(format!("peerlab-engine-{name}.lock")))
}

/// An exclusive `flock` on a lock file, released on drop (or when the process dies, so a
/// panicking or killed holder never blocks the next test). Two guards of one process
/// conflict too (each opens the file anew), so it also orders the threads of a binary.
#[must_use = "the turn ends when the guard is dropped"]
pub struct Turn {
    _lock: Flock<File>,
}

impl Turn {
    /// Blocks until the lock on `path` (created when missing) is ours.
    pub fn take(path: &Path) -> Turn {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open the lock file {}: {e}", path.display()));
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("cannot lock {}: {e}", path.display()));
        Turn { _lock: lock }
    }
}
