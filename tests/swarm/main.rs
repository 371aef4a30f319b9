//! Docker Swarm across real hosts: the stack form of `peerlab compose` against the Compose
//! Specification, and a stack deployed on a three-host swarm built on this machine (the
//! shared swarm lab: one `dockerd` per network namespace), formed, cut, healed and checked
//! from inside the overlay. Requires root, the Docker engine and the lab script: fails,
//! never skips, without them (see `support::swarm`).

#[path = "../support/mod.rs"]
mod support;

mod multi_host;
mod runtime;
mod schema;
