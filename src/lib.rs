//! peerlab: a testbed for peer-to-peer networks.
//!
//! - [`node`]: the p2p node. Protocol logic is a sans-IO state machine ([`node::machine`]);
//!   a thin tokio driver runs it over TCP and serves the status socket.
//! - [`contract`]: what the status socket serves and accepts (status JSON, admin requests,
//!   link shapes, digests): the one definition node, orchestrator and runtimes share.
//! - [`client`]: an HTTP client of the status socket.
//! - [`topology`]: the YAML topology model and its validation (pure, runtime-neutral).
//! - [`orchestrator`]: turns a topology into a run plan ([`orchestrator::plan`]), drives it
//!   through the [`runtime::Runtime`] trait, checks what formed, reports.
//! - [`runtime`]: where nodes live, behind one trait: [`runtime::local`] (processes) and
//!   [`runtime::docker`] (containers).
//! - [`export`]: plans written out for other tools (a compose file), apart from the runtimes.
//! - [`lab`]: the run lifecycle as a library ([`Lab`]): start a topology from a test, wait
//!   for it to form, inject faults, check, tear down. The CLI is built on it.
//! - [`cli`] and [`commands`]: the `peerlab` command line, thin commands over [`lab`].
//! - `testcontainers` (cargo feature `testcontainers`): the node image as a testcontainers
//!   `Image`, for tests that start a genesis and peers with testcontainers.
//!
//! Dependencies point one way: `cli`/`commands` -> `lab` (which also picks the concrete
//! runtime) -> `orchestrator` -> `topology` and the runtime interface; runtimes and
//! exporters -> the plan types in [`runtime`]; everything -> [`contract`], which depends on nothing. The node uses only [`contract`]. A unit test
//! (`src/layers.rs`) keeps it that way.

#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod contract;
pub mod export;
pub mod lab;
#[cfg(test)]
mod layers;
pub mod node;
pub mod orchestrator;
pub mod runtime;
#[cfg(feature = "testcontainers")]
pub mod testcontainers;
pub mod topology;

pub use lab::Lab;

/// Tag of the node image built from this executable.
pub const DEFAULT_IMAGE: &str = concat!("peerlab:", env!("CARGO_PKG_VERSION"));

/// Process exit codes shared by every subcommand.
pub mod exit {
    /// Every check passed.
    pub const PASSED: u8 = 0;
    /// A check failed (the run itself worked).
    pub const CHECK_FAILED: u8 = 1;
    /// Bad input or usage: nothing was started.
    pub const BAD_INPUT: u8 = 2;
    /// The runtime failed (could not start nodes, Docker missing, ...).
    pub const RUNTIME_FAILED: u8 = 3;
}
