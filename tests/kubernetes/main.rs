//! The Kubernetes runtime end to end against a real cluster: the one `KUBECONFIG` names
//! (in CI the repository's lab cluster: `eval "$(../shared/k8s-lab/lab env)"`). Without a
//! cluster that answers these tests FAIL, naming KUBECONFIG; they never skip.
//!
//! Every test that starts pods takes its turn (`support::heavy_turn`): a handful of pods at
//! a time on a two-core machine that also runs the cluster. After each run the test asserts
//! that no namespace labelled with the run's id is left.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod runtime;
