//! Exports: a run plan written out for other tools to run, apart from the runtimes that run
//! plans themselves.
//!
//! - [`compose`]: a docker-compose file (`peerlab compose`).
//! - [`stack`]: a Docker Swarm stack file (`peerlab compose --stack`).
//! - [`kubernetes`]: Kubernetes objects (`peerlab export kubernetes`), the same the
//!   Kubernetes runtime creates.
//!
//! An exporter reads the plan types of [`crate::runtime`] (and what a container runtime and
//! an exporter share, [`crate::runtime::container`]); no runtime imports an exporter.

pub mod compose;
pub mod kubernetes;
pub mod stack;
