//! The orchestrator end to end on the local runtime: `peerlab run|up|ps|down|validate|check`
//! as a user runs them, fault scenarios played by `peerlab run`, and every fault topology of
//! `topologies/`, with real node processes on loopback.
//!
//! Heavy runs (fault scenarios with one-second failure detection) take turns through
//! `support::heavy_turn`, since the tests of this binary run in parallel.

#[path = "../support/mod.rs"]
mod support;

mod check;
mod down_scope;
mod fault_topologies;
mod hosts;
mod lab;
mod network_key;
mod orchestrator;
mod scenario;
