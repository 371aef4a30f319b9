//! Kubernetes end to end against a real cluster: the one `KUBECONFIG` names (in CI the
//! repository's lab cluster: `eval "$(../shared/k8s-lab/lab env)"`), whose nodes run images
//! of the local Docker engine. Without a cluster that answers these tests FAIL, naming
//! KUBECONFIG; they never skip.
//!
//! - [`export`]: the objects of `peerlab export kubernetes` applied with kubectl form a
//!   network.
//! - [`runtime`]: `--runtime kubernetes` and `RuntimeKind::Kubernetes`: quickstart, two
//!   groups with broadcasts, a fault scenario, `up`/`ps`/`down`, an unreachable cluster.
//!
//! Every test that starts pods takes its turn (`support::kubernetes_turn`): a handful of pods at
//! a time on a two-core machine that also runs the cluster. After each run the tests
//! assert that nothing labelled with the run is left in the cluster.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod export;
mod runtime;
