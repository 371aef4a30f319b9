//! How the Docker runtime partitions: iptables in the containers' network namespaces
//! ([`super::netfilter`]) when the host allows it, else the nodes' own admin endpoints
//! ([`crate::runtime::links`]), as `docs/docker.md` describes.
//!
//! The choice is made once per run, at its first partition, by probing one container's
//! namespace: entering it needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `nsenter` and
//! `iptables` on the host. `PEERLAB_DOCKER_PARTITIONS` overrides the probe: `iptables`
//! requires the kernel path (a run fails when it is unavailable), `nodes` always uses the
//! admin endpoints, `auto` (the default) probes and falls back, saying so on stderr.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bollard::Docker;
use futures::StreamExt;
use tokio::sync::Mutex;

use super::netfilter::{CHAIN, Cut, Netfilter, Netns};
use crate::runtime::RuntimeError;
use crate::runtime::links::{LinkFaults, Lookup};

/// Environment variable choosing how Docker partitions: `auto`, `iptables` or `nodes`.
pub const MODE_VAR: &str = "PEERLAB_DOCKER_PARTITIONS";
/// Containers inspected at once.
const INSPECT_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// DROP rules in each container's namespace.
    Kernel,
    /// `/admin/block` on every node.
    Nodes,
}

/// The Docker runtime's partitions; see the module docs.
#[derive(Debug, Default)]
pub struct DockerPartitions {
    netfilter: Netfilter,
    mode: Mutex<Option<Mode>>,
    /// Held from inspecting the containers until their rules are written, so that two
    /// starts at once cannot write rules from an older inspection over newer ones.
    serial: Mutex<()>,
}

/// Node name to container name, for the nodes started so far.
pub type Started = BTreeMap<String, String>;

impl DockerPartitions {
    /// Cuts the network between the sides, so each only reaches its own (`one_way`: only
    /// the first side's traffic to the others), by iptables or the nodes' admin endpoints.
    pub async fn partition(
        &self,
        docker: &Docker,
        started: &Started,
        links: &LinkFaults,
        lookup: Lookup<'_>,
        sides: &[Vec<String>],
        one_way: bool,
    ) -> Result<(), RuntimeError> {
        for name in sides.iter().flatten() {
            if !started.contains_key(name) {
                return Err(RuntimeError::Failed(format!(
                    "node `{name}` was not started in this run"
                )));
            }
        }
        let _serial = self.serial.lock().await;
        let nets = inspect_all(docker, started).await;
        match self.mode(&nets).await? {
            Mode::Kernel => {
                let cut = Cut {
                    sides: sides.to_vec(),
                    one_way,
                };
                self.netfilter.partition(&nets, cut).await
            }
            Mode::Nodes => links.partition_named(lookup, sides, one_way).await,
        }
    }

    /// Ends every partition, whichever way it was made.
    pub async fn heal(
        &self,
        docker: &Docker,
        started: &Started,
        links: &LinkFaults,
        all: &[crate::runtime::NodeEndpoint],
    ) -> Result<(), RuntimeError> {
        if self.current().await == Some(Mode::Kernel) {
            let _serial = self.serial.lock().await;
            let nets = inspect_all(docker, started).await;
            self.netfilter.heal(&nets).await?;
        }
        links.heal_all(all).await
    }

    /// After a container started (again, or for the first time while a partition holds):
    /// its namespace is new and its address may have changed, so every chain is rebuilt.
    pub async fn after_start(
        &self,
        docker: &Docker,
        started: &Started,
    ) -> Result<(), RuntimeError> {
        if self.current().await != Some(Mode::Kernel) || !self.netfilter.holds().await {
            return Ok(());
        }
        let _serial = self.serial.lock().await;
        let nets = inspect_all(docker, started).await;
        self.netfilter.reapply(&nets).await
    }

    /// Removes the chain from every container that still has a namespace and verifies it
    /// is gone; returns what is left. Runs before the containers are removed.
    /// A second teardown does nothing.
    pub async fn teardown(&self, docker: &Docker, started: &Started) -> Vec<String> {
        if self.mode.lock().await.take() != Some(Mode::Kernel) {
            return Vec::new();
        }
        let _serial = self.serial.lock().await;
        let nets = inspect_all(docker, started).await;
        let (cleaned, leftovers) = self.netfilter.teardown(&nets).await;
        if leftovers.is_empty() {
            tracing::info!(
                "partitions: removed iptables chain {CHAIN} from {cleaned} container network namespace(s); verified none is left"
            );
        }
        leftovers
    }

    async fn current(&self) -> Option<Mode> {
        *self.mode.lock().await
    }

    /// The run's way of partitioning, decided at the first partition.
    async fn mode(&self, nets: &[Netns]) -> Result<Mode, RuntimeError> {
        let mut mode = self.mode.lock().await;
        if let Some(m) = *mode {
            return Ok(m);
        }
        let wanted = std::env::var(MODE_VAR).unwrap_or_default();
        let probe = || async {
            match nets.iter().find(|n| n.pid.is_some()) {
                Some(ns) => self.netfilter.probe(ns).await,
                None => Err("no container of the run is running".to_string()),
            }
        };
        let decided = match wanted.trim() {
            "nodes" => {
                tracing::info!("partitions: through the nodes' admin endpoints ({MODE_VAR}=nodes)");
                Mode::Nodes
            }
            "iptables" => match probe().await {
                Ok(()) => Mode::Kernel,
                Err(e) => {
                    return Err(RuntimeError::Failed(format!(
                        "{MODE_VAR}=iptables, but iptables cannot be used in the containers' network namespaces: {e}; run as root with nsenter and iptables installed, or set {MODE_VAR}=auto"
                    )));
                }
            },
            "" | "auto" => match probe().await {
                Ok(()) => Mode::Kernel,
                Err(e) => {
                    tracing::warn!(
                        "partitions: cannot use iptables in the containers' network namespaces ({e}); falling back to the nodes' admin endpoints (run as root with nsenter and iptables for kernel-level cuts)"
                    );
                    Mode::Nodes
                }
            },
            other => {
                return Err(RuntimeError::Failed(format!(
                    "{MODE_VAR}={other} is not a partition mode; expected auto, iptables or nodes"
                )));
            }
        };
        if decided == Mode::Kernel {
            tracing::info!(
                "partitions: iptables DROP rules in each container's network namespace (chain {CHAIN}, set with nsenter)"
            );
        }
        *mode = Some(decided);
        Ok(decided)
    }
}

/// Pid and addresses of every started container; one that cannot be inspected or is not
/// running has neither (and so no namespace to change).
async fn inspect_all(docker: &Docker, started: &Started) -> Vec<Netns> {
    // Owned pairs: a stream of borrowed ones trips the compiler's check that the runtime's
    // futures are `Send` for every lifetime (async_trait).
    let pairs: Vec<(String, String)> = started.clone().into_iter().collect();
    futures::stream::iter(pairs)
        .map(|(node, container)| async move {
            let inspected = docker.inspect_container(&container, None).await.ok();
            let state = inspected.as_ref().and_then(|i| i.state.as_ref());
            let running = state.and_then(|s| s.running).unwrap_or(false);
            let pid = state
                .and_then(|s| s.pid)
                .filter(|p| running && *p > 0)
                .and_then(|p| u32::try_from(p).ok());
            let ips: Vec<IpAddr> = match pid {
                None => Vec::new(),
                Some(_) => inspected
                    .as_ref()
                    .and_then(|i| i.network_settings.as_ref())
                    .and_then(|s| s.networks.as_ref())
                    .map(|nets| {
                        nets.values()
                            .filter_map(|e| e.ip_address.as_deref())
                            .filter_map(|ip| ip.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            Netns { node, pid, ips }
        })
        .buffer_unordered(INSPECT_CONCURRENCY)
        .collect()
        .await
}
