//! The one harness of every integration test binary (`tests/node`, `tests/topology`,
//! `tests/local`, `tests/docker`, `tests/swarm`): each declares it with
//! `#[path = "../support/mod.rs"] mod support;` and uses the parts it needs.
//!
//! What lives here lives once: the binary under test ([`BIN`]), the repository root
//! ([`ROOT`]), polling with a deadline ([`POLL`], [`poll_until`], [`poll_until_blocking`]),
//! the turn that heavy runs take ([`heavy_turn`]), and in the submodules the process guards
//! ([`cluster`], [`cli`]), the Docker helpers ([`docker`]), the multi-host swarm lab ([`swarm`]), plan fixtures ([`fixtures`]),
//! "did the overlay form" judged by the orchestrator's own checks ([`formation`]) and the
//! fault topologies and their reports ([`reports`]).
//!
//! Every binary uses a part of it only, hence the `allow`.
#![allow(dead_code)]

pub mod cli;
pub mod cluster;
pub mod docker;
pub mod fixtures;
pub mod formation;
pub mod reports;
pub mod swarm;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The binary under test (built by cargo for integration tests).
pub const BIN: &str = env!("CARGO_BIN_EXE_peerlab");

/// The repository root: `topologies/`, `docker-compose.yml` and `tests/data/` live there.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

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
/// at once on two cores starve each other into false failures, and since the tests of one
/// binary run in parallel, the runs of one binary take turns here. A panicking holder
/// poisons the lock; its cleanup has run by then, so the next one goes ahead.
pub fn heavy_turn() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}
