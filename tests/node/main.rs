//! `peerlab node` as real child processes on loopback: networks that form and heal, link
//! faults through the admin endpoints, hostile input, and the local runtime's partitions.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod faults;
mod hold;
mod hostile_broadcast;
mod hostile_identity;
mod hostile_membership;
mod hostile_sockets;
mod links;
mod network;
