//! The Docker side end to end: the node image, the Docker runtime through its API, and
//! `peerlab run|up|ps|down|compose|check` with containers, fault scenarios included. Requires a
//! Docker engine: fails, never skips, without one.
//!
//! The tests share one node image of the binary under test (`support::docker::ensure_image`,
//! built at most once per run of this binary) except those that test image building itself.
//! Runs of many containers take turns (`support::heavy_turn`), since the tests of this
//! binary run in parallel on two cores.

#[path = "../support/mod.rs"]
mod support;

mod check;
mod e2e;
mod image;
mod lab;
mod runtime;
mod scenarios;
/// `peerlab::testcontainers` (only built with the `testcontainers` feature, as CI does).
#[cfg(feature = "testcontainers")]
mod testcontainers;
mod tunnel;
