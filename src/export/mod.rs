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

/// The nodes' admin token in an exported file: compose variable interpolation, so the file
/// holds no secret and `/admin/*` stays off unless `PEERLAB_ADMIN_TOKEN` is set in the
/// shell that deploys it (an empty value leaves the admin API off).
pub const ADMIN_TOKEN_INTERPOLATION: &str = "${PEERLAB_ADMIN_TOKEN:-}";

/// The header lines of a compose or stack file on turning link faults on.
const ADMIN_TOKEN_HEADER: &str = "\
# Link faults (/admin/*) are off unless PEERLAB_ADMIN_TOKEN is set (16+ characters) in the
# shell that deploys this file; the file holds no token. To turn them on:
#   export PEERLAB_ADMIN_TOKEN=\"$(openssl rand -hex 32)\"
# and send it with each admin request: Authorization: Bearer $PEERLAB_ADMIN_TOKEN
";

pub mod compose;
pub mod kubernetes;
pub mod stack;
