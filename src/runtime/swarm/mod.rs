//! Docker Swarm: a topology deployed across the hosts of a swarm (issue 14).
//!
//! - [`tunnel`]: the orchestrator's way into the overlay, TCP over `docker exec` into a
//!   relay container, so status sockets are read from wherever the Docker API reaches.

pub mod tunnel;
