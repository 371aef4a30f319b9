//! Kubernetes end to end, against a real cluster (in CI, the lab of `../shared/k8s-lab`):
//! the objects of `peerlab export kubernetes` applied with kubectl form a network.
//!
//! Requires a reachable cluster (`KUBECONFIG`, e.g. `eval "$(../shared/k8s-lab/lab env)"`)
//! whose nodes run images of the local Docker engine: fails, never skips, without one.

#[path = "../support/mod.rs"]
mod support;

mod export;
