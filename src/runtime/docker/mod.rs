//! The Docker runtime: every node a container of the peerlab image on user-defined networks.
//!
//! Everything a run creates carries the `peerlab.run=<run_id>` label, and teardown (as well
//! as `peerlab down`) finds what to remove by that label rather than by its own
//! bookkeeping, so containers of a crashed orchestrator or a half-finished start are
//! removed too. The image is built when missing or stale, from the running executable or a
//! given `peerlab` binary, or used as prebuilt ([`NodeImage`]), and never pulled (see
//! [`image`]).
//!
//! Nodes address each other by container name (`<run_id>-<node>:7070`), which Docker's
//! embedded DNS resolves on every user-defined network the container is on; the node name
//! is also a network alias, so a topology's own names work inside the run too.
//!
//! - [`partition`]: how partitions are cut (iptables in the containers' namespaces through
//!   [`netfilter`], or the nodes' admin endpoints).
//! - [`image`]: the node image, built from a `peerlab` binary.
//! - `arp`: the host's neighbour table bound, warned about before large runs.

pub mod image;
pub mod netfilter;
pub mod partition;

mod arp;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Ipam, IpamConfig,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures::StreamExt;

use crate::contract::LinkShape;
use crate::runtime::container::{
    DEFAULT_NETWORK, PEER_PORT, STATUS_PORT, node_command, node_networks, node_secrets_env,
};
use crate::runtime::hosts::HostEmulation;
use crate::runtime::links::LinkFaults;
use crate::runtime::{
    Capabilities, NODE_LABEL, NetworkSpec, NodeAction, NodeEndpoint, NodeSpec, RUN_LABEL,
    RunListing, RunPlan, Runtime, RuntimeError, TeardownReport,
};
use partition::DockerPartitions;

/// How long a teardown of a start cut short keeps looking for containers whose create
/// request was already on its way (see `teardown`).
const LATE_CONTAINERS_WITHIN: Duration = Duration::from_secs(10);

const NAME: &str = "docker";
/// Seconds a graceful stop waits (the node floods a leave) before Docker kills it.
const STOP_GRACE_SECS: i32 = 5;
/// Containers saved and removed at once: enough to tear 300 nodes down quickly, few enough
/// not to swamp the engine with log streams.
const TEARDOWN_CONCURRENCY: usize = 16;
/// Longest hostname Docker and DNS accept.
const MAX_HOSTNAME: usize = 63;

/// Where the node image of a `peerlab:*` tag comes from when a run is prepared. Images of
/// any other repository are always used as they are (they must exist locally).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NodeImage {
    /// Built from the running executable when missing or stale: right for the `peerlab` CLI,
    /// wrong for any other program (a test binary cannot run a node).
    #[default]
    RunningExecutable,
    /// Built from this static `peerlab` binary when missing or stale; a cargo integration
    /// test passes `env!("CARGO_BIN_EXE_peerlab")`.
    Binary(PathBuf),
    /// Used as it is (made beforehand with `peerlab image build --tag TAG`): never built,
    /// never pulled, so preparing a run fails when the tag is missing.
    Prebuilt,
}

/// Runs a plan's nodes as containers; see the module docs.
pub struct DockerRuntime {
    docker: Docker,
    /// Where a `peerlab:*` node image comes from.
    node_image: NodeImage,
    plan: Option<RunPlan>,
    /// Node name to container name, for the nodes started so far.
    started: Mutex<BTreeMap<String, String>>,
    /// Endpoints of started nodes, for link faults through their admin endpoints.
    endpoints: Mutex<BTreeMap<String, NodeEndpoint>>,
    links: LinkFaults,
    /// Partitions: iptables in the containers' namespaces, or `links` as the fallback.
    partitions: DockerPartitions,
    /// The plan's hosts, emulated by shaping each node's links to other hosts' nodes.
    hosts: HostEmulation,
}

impl DockerRuntime {
    /// Connect to the engine (`DOCKER_HOST` or the local socket); fails with advice when
    /// none answers.
    pub async fn connect() -> Result<Self, RuntimeError> {
        Ok(Self::with_client(connect().await?))
    }

    /// Use an already connected client.
    pub fn with_client(docker: Docker) -> Self {
        DockerRuntime {
            docker,
            node_image: NodeImage::default(),
            plan: None,
            started: Mutex::new(BTreeMap::new()),
            endpoints: Mutex::new(BTreeMap::new()),
            links: LinkFaults::new(),
            partitions: DockerPartitions::default(),
            hosts: HostEmulation::default(),
        }
    }

    /// Where the node image comes from (default: [`NodeImage::RunningExecutable`]).
    pub fn with_node_image(mut self, node_image: NodeImage) -> Self {
        self.node_image = node_image;
        self
    }

    fn plan(&self) -> Result<&RunPlan, RuntimeError> {
        self.plan
            .as_ref()
            .ok_or_else(|| RuntimeError::Failed("the Docker runtime was not prepared".into()))
    }

    /// Node name to container name of every node started so far.
    fn started(&self) -> BTreeMap<String, String> {
        match self.started.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The status socket's URL as Docker publishes it now: an ephemeral host port, read
    /// back after every start because a container started again may get a new one.
    async fn status_url(&self, container: &str) -> Result<String, RuntimeError> {
        let status_port = format!("{STATUS_PORT}/tcp");
        let inspect = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(failed(format!("cannot inspect container {container}")))?;
        let host_port = inspect
            .network_settings
            .and_then(|s| s.ports)
            .and_then(|mut ports| ports.remove(&status_port))
            .flatten()
            .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                RuntimeError::Failed(format!(
                    "container {container} started but Docker published no port for its status \
                     socket ({status_port}); did it exit at once? see `docker logs {container}`"
                ))
            })?;
        Ok(format!("http://127.0.0.1:{host_port}"))
    }

    fn container_of(&self, node: &str) -> Result<String, RuntimeError> {
        let started = self.started.lock().map_err(|_| poisoned())?;
        started
            .get(node)
            .cloned()
            .ok_or_else(|| RuntimeError::Failed(format!("node `{node}` was not started")))
    }
}

/// Link faults go through the nodes' admin endpoints (see `docs/docker.md`): no NET_ADMIN,
/// no netem, and the same behaviour as the local runtime.
impl DockerRuntime {
    fn remember_endpoint(&self, endpoint: &NodeEndpoint) -> Result<(), RuntimeError> {
        self.endpoints
            .lock()
            .map_err(|_| poisoned())?
            .insert(endpoint.name.clone(), endpoint.clone());
        Ok(())
    }

    fn endpoints(&self, names: &[String]) -> Result<Vec<NodeEndpoint>, RuntimeError> {
        let known = self.endpoints.lock().map_err(|_| poisoned())?;
        names
            .iter()
            .map(|name| {
                known.get(name).cloned().ok_or_else(|| {
                    RuntimeError::Failed(format!("node `{name}` was not started in this run"))
                })
            })
            .collect()
    }

    fn all_endpoints(&self) -> Vec<NodeEndpoint> {
        match self.endpoints.lock() {
            Ok(known) => known.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        }
    }

    async fn clear_links(&self) -> Vec<String> {
        let left = self.links.clear_all(&self.all_endpoints()).await;
        if let Ok(mut known) = self.endpoints.lock() {
            known.clear();
        }
        left
    }
}

/// After `docker start`: the status socket may be published on a new host port, and a
/// partition in force needs rules in the container's new namespace.
impl DockerRuntime {
    async fn restarted(&self, node: &str, container: &str) -> Result<(), RuntimeError> {
        let status_url = self.status_url(container).await?;
        let changed = {
            let mut known = self.endpoints.lock().map_err(|_| poisoned())?;
            match known.get_mut(node) {
                Some(ep) if ep.status_url != status_url => {
                    ep.status_url = status_url.clone();
                    true
                }
                _ => false,
            }
        };
        if changed {
            tracing::debug!(node, %status_url, "status socket published on a new port");
        }
        self.partitions
            .after_start(&self.docker, &self.started())
            .await?;
        // Its host's shapes died with its last process.
        match self.endpoint(node) {
            Some(endpoint) => self.hosts.apply(&self.links, &endpoint).await,
            None => Ok(()),
        }
    }
}

/// Docker name of a node's container; also the host part of its peer address.
pub fn container_name(run_id: &str, node: &str) -> String {
    format!("{run_id}-{node}")
}

/// Docker name of a topology network in a run.
pub fn network_name(run_id: &str, network: &str) -> String {
    format!("{run_id}-{network}")
}

fn poisoned() -> RuntimeError {
    RuntimeError::Failed("internal state of the Docker runtime is poisoned".into())
}

fn failed(what: String) -> impl FnOnce(DockerError) -> RuntimeError {
    move |e| RuntimeError::Failed(format!("{what}: {e}"))
}

async fn connect() -> Result<Docker, RuntimeError> {
    image::connect().await.map_err(RuntimeError::Failed)
}

/// Docker object names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn valid_docker_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `image` names peerlab's own node image (`peerlab:*`), which the runtime builds
/// itself (see [`NodeImage`]) rather than expecting it to exist.
pub(crate) fn is_peerlab_image(image: &str) -> bool {
    let repository = image.rsplit_once(':').map_or(image, |(repo, _)| repo);
    repository == "peerlab" || image == crate::DEFAULT_IMAGE
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Everything: signals through the engine, partitions in the kernel or through the
    /// nodes, shaping through the nodes, and real networks.
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn check_support(&self, plan: &RunPlan) -> Result<(), RuntimeError> {
        let refuse = |reason: String| {
            Err(RuntimeError::Unsupported {
                runtime: NAME,
                reason,
            })
        };
        if !plan.nodes.iter().any(|n| n.genesis) {
            return refuse("the plan has no genesis node to start the network".into());
        }
        for node in &plan.nodes {
            let container = container_name(&plan.run_id, &node.name);
            if !valid_docker_name(&container) {
                return refuse(format!(
                    "container name `{container}` (run id + node name) is not a valid Docker \
                     name; use letters, digits, `_`, `.` and `-`"
                ));
            }
            if container.len() > MAX_HOSTNAME {
                return refuse(format!(
                    "container name `{container}` is longer than {MAX_HOSTNAME} characters, so \
                     other nodes cannot resolve it; shorten the topology or group name"
                ));
            }
            for net in &node.networks {
                if !plan.networks.iter().any(|n| &n.name == net) {
                    return refuse(format!(
                        "node `{}` is on network `{net}`, which the plan does not declare",
                        node.name
                    ));
                }
            }
        }
        for net in &plan.networks {
            if !valid_docker_name(&network_name(&plan.run_id, &net.name)) {
                return refuse(format!(
                    "network name `{}` is not a valid Docker name",
                    net.name
                ));
            }
        }
        Ok(())
    }

    async fn prepare(&mut self, plan: &RunPlan) -> Result<(), RuntimeError> {
        self.check_support(plan)?;
        // Only a local engine shares this host's table; a remote one has its own.
        let local_engine = std::env::var("DOCKER_HOST").map_or(true, |h| h.starts_with("unix://"));
        if local_engine
            && let Some(warning) = arp::table_warning(plan.nodes.len(), arp::host_table_bound())
        {
            tracing::warn!("{warning}");
        }
        self.plan = Some(plan.clone());
        self.links.use_token(plan.admin_token.clone());
        // Peers know a node by its advertised `container:port` before it starts.
        self.hosts = HostEmulation::new(plan, |n| {
            vec![format!(
                "{}:{PEER_PORT}",
                container_name(&plan.run_id, &n.name)
            )]
        });
        let build_from = match (&self.node_image, is_peerlab_image(&plan.image)) {
            (_, false) | (NodeImage::Prebuilt, true) => None,
            (NodeImage::Binary(binary), true) => Some(binary.clone()),
            (NodeImage::RunningExecutable, true) => Some(std::env::current_exe().map_err(|e| {
                RuntimeError::Failed(format!("cannot find the running peerlab executable: {e}"))
            })?),
        };
        if let Some(binary) = build_from {
            let built = image::ensure_image_from(&self.docker, &plan.image, &binary)
                .await
                .map_err(|e| RuntimeError::Failed(format!("{e:#}")))?;
            if built {
                tracing::info!(image = %plan.image, binary = %binary.display(), "built the node image");
            }
        } else {
            match self.docker.inspect_image(&plan.image).await {
                Ok(_) => {}
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    let remedy = if is_peerlab_image(&plan.image) {
                        format!(
                            "build it first with `peerlab image build --tag {}`",
                            plan.image
                        )
                    } else {
                        format!("`docker pull {}` or build it first", plan.image)
                    };
                    return Err(RuntimeError::Failed(format!(
                        "image {} is not present locally and peerlab never pulls; {remedy}",
                        plan.image
                    )));
                }
                Err(e) => return Err(failed(format!("cannot inspect image {}", plan.image))(e)),
            }
        }
        let labels = HashMap::from([(RUN_LABEL.to_string(), plan.run_id.clone())]);
        let default = [NetworkSpec {
            name: DEFAULT_NETWORK.into(),
            subnet: None,
        }];
        let networks = if plan.networks.is_empty() {
            &default[..]
        } else {
            &plan.networks[..]
        };
        for net in networks {
            let name = network_name(&plan.run_id, &net.name);
            let ipam = net.subnet.as_ref().map(|subnet| Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                ipam,
                labels: Some(labels.clone()),
                ..Default::default()
            };
            if let Err(e) = self.docker.create_network(request).await {
                let hint = match &net.subnet {
                    Some(subnet) => subnet_hint(&self.docker, subnet).await,
                    None => String::new(),
                };
                return Err(RuntimeError::Failed(format!(
                    "cannot create network {name}: {e}{hint}"
                )));
            }
        }
        Ok(())
    }

    async fn start(&self, node: &NodeSpec) -> Result<NodeEndpoint, RuntimeError> {
        let plan = self.plan()?;
        let container = container_name(&plan.run_id, &node.name);
        let networks = node_networks(node);
        let endpoint = |net: &str| {
            (
                network_name(&plan.run_id, net),
                EndpointSettings {
                    aliases: Some(vec![node.name.clone()]),
                    ..Default::default()
                },
            )
        };
        let status_port = format!("{STATUS_PORT}/tcp");
        let body = ContainerCreateBody {
            image: Some(plan.image.clone()),
            hostname: Some(node.name.clone()),
            cmd: Some(node_command(plan, node, |n| {
                container_name(&plan.run_id, &n.name)
            })),
            // The run's secrets, in the environment rather than the command line.
            env: Some(node_secrets_env(plan)),
            labels: Some(HashMap::from([
                (RUN_LABEL.to_string(), plan.run_id.clone()),
                (NODE_LABEL.to_string(), node.name.clone()),
            ])),
            exposed_ports: Some(vec![format!("{PEER_PORT}/tcp"), status_port.clone()]),
            // peerlab polls every status socket itself, so the image's HEALTHCHECK would only
            // repeat that work: one `docker exec` per container per second, which at 100
            // containers nearly doubled the time to start them (docs/docker.md).
            healthcheck: Some(HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    status_port.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                // The topology's `resources`: hard limits, as the exports write them.
                nano_cpus: node.resources.and_then(|r| r.nano_cpus()),
                memory: node
                    .resources
                    .and_then(|r| r.memory_bytes)
                    .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                ..Default::default()
            }),
            // API versions before 1.44 accept one network at create; the rest are connected below.
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([endpoint(&networks[0])])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&container)
            .build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(failed(format!("cannot create container {container}")))?;
        self.started
            .lock()
            .map_err(|_| poisoned())?
            .insert(node.name.clone(), container.clone());
        for net in &networks[1..] {
            let (name, settings) = endpoint(net);
            let request = NetworkConnectRequest {
                container: container.clone(),
                endpoint_config: Some(settings),
            };
            self.docker
                .connect_network(&name, request)
                .await
                .map_err(failed(format!(
                    "cannot connect {container} to network {name}"
                )))?;
        }
        self.docker
            .start_container(&container, None)
            .await
            .map_err(failed(format!("cannot start container {container}")))?;
        let endpoint = NodeEndpoint {
            name: node.name.clone(),
            peer_addr: format!("{container}:{PEER_PORT}"),
            status_url: self.status_url(&container).await?,
        };
        self.remember_endpoint(&endpoint)?;
        // A node that joins while a partition holds is cut like the rest of its side.
        self.partitions
            .after_start(&self.docker, &self.started())
            .await?;
        self.hosts.apply(&self.links, &endpoint).await?;
        Ok(endpoint)
    }

    async fn act(&self, node: &str, action: NodeAction) -> Result<(), RuntimeError> {
        let container = self.container_of(node)?;
        let what = format!("cannot {action:?} container {container}").to_lowercase();
        let result = match action {
            NodeAction::Kill => {
                let options = KillContainerOptionsBuilder::default()
                    .signal("SIGKILL")
                    .build();
                self.docker.kill_container(&container, Some(options)).await
            }
            NodeAction::Stop => {
                let options = StopContainerOptionsBuilder::default()
                    .t(STOP_GRACE_SECS)
                    .build();
                self.docker.stop_container(&container, Some(options)).await
            }
            NodeAction::Pause => self.docker.pause_container(&container).await,
            NodeAction::Resume => self.docker.unpause_container(&container).await,
            NodeAction::Start => self.docker.start_container(&container, None).await,
        };
        result.map_err(failed(what))?;
        if action == NodeAction::Start {
            self.restarted(node, &container).await?;
        }
        Ok(())
    }

    fn endpoint(&self, node: &str) -> Option<NodeEndpoint> {
        self.endpoints.lock().ok()?.get(node).cloned()
    }

    async fn partition(&self, sides: &[Vec<String>], one_way: bool) -> Result<(), RuntimeError> {
        self.partitions
            .partition(
                &self.docker,
                &self.started(),
                &self.links,
                &|names| self.endpoints(names),
                sides,
                one_way,
            )
            .await
    }

    async fn heal(&self) -> Result<(), RuntimeError> {
        self.partitions
            .heal(
                &self.docker,
                &self.started(),
                &self.links,
                &self.all_endpoints(),
            )
            .await
    }

    async fn shape(
        &self,
        nodes: &[String],
        peers: Option<&[String]>,
        shape: LinkShape,
    ) -> Result<(), RuntimeError> {
        self.links
            .shape_named(&|names| self.endpoints(names), nodes, peers, shape)
            .await
    }

    async fn teardown(&mut self) -> Result<TeardownReport, RuntimeError> {
        let Some(plan) = self.plan.as_ref() else {
            return Ok(TeardownReport::default());
        };
        // Before the containers go: their namespaces hold the partition rules.
        let mut leftovers = self
            .partitions
            .teardown(&self.docker, &self.started())
            .await;
        leftovers.extend(self.clear_links().await);
        let logs = plan.run_dir.join("logs");
        let mut report = remove_by_label(&self.docker, Some(&plan.run_id), Some(&logs)).await?;
        // A start cut short (Ctrl-C while containers were being created): a create request
        // already on its way completes in the engine after the listing above, and its
        // container would outlive the run (seen in CI). Look again until the engine has
        // shown none for a second, for at most 10 s.
        if self.started().len() < plan.nodes.len() {
            let deadline = tokio::time::Instant::now() + LATE_CONTAINERS_WITHIN;
            let mut quiet_since = tokio::time::Instant::now();
            while quiet_since.elapsed() < Duration::from_secs(1)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let late = remove_by_label(&self.docker, Some(&plan.run_id), Some(&logs)).await?;
                if late.containers_removed + late.networks_removed > 0 || !late.leftovers.is_empty()
                {
                    quiet_since = tokio::time::Instant::now();
                }
                report.absorb(late);
            }
        }
        report.leftovers.extend(leftovers);
        self.started.lock().map_err(|_| poisoned())?.clear();
        Ok(report)
    }

    async fn list_runs(&self) -> Result<Vec<RunListing>, RuntimeError> {
        Ok(RunListing::from_counts(
            NAME,
            runs_by_label(&self.docker).await?,
        ))
    }

    /// Removes the containers and networks labelled with the run, saving each container's
    /// output to `<logs_dir>/<node>.log` first when asked (a run of `peerlab up` has no other
    /// copy of its logs).
    async fn remove_run(
        &self,
        run: Option<&str>,
        logs_dir: Option<&Path>,
    ) -> Result<TeardownReport, RuntimeError> {
        remove_by_label(&self.docker, run, logs_dir).await
    }
}

/// Remove the containers and networks of one run (or of every run), found by label; what
/// [`Runtime::remove_run`] does, with its own connection. Safe to repeat: a second call
/// removes nothing.
pub async fn remove_leftovers(run_id: Option<&str>) -> Result<TeardownReport, RuntimeError> {
    remove_by_label(&connect().await?, run_id, None).await
}

/// Like [`remove_leftovers`] for one run, first saving each container's output to
/// `<logs_dir>/<node>.log` (for `peerlab down RUN` of a run started by `peerlab up`).
pub async fn remove_run_saving_logs(
    run_id: &str,
    logs_dir: &Path,
) -> Result<TeardownReport, RuntimeError> {
    remove_by_label(&connect().await?, Some(run_id), Some(logs_dir)).await
}

/// Runs that have containers or networks, with their number of containers (for `peerlab ps`).
pub async fn list_runs() -> Result<Vec<(String, usize)>, RuntimeError> {
    runs_by_label(&connect().await?).await
}

async fn runs_by_label(docker: &Docker) -> Result<Vec<(String, usize)>, RuntimeError> {
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for LabelledContainer { labels, .. } in labelled_containers(docker, None).await? {
        if let Some(run) = labels.get(RUN_LABEL) {
            *runs.entry(run.clone()).or_default() += 1;
        }
    }
    for (labels, _) in labelled_networks(docker, None).await? {
        if let Some(run) = labels.get(RUN_LABEL) {
            runs.entry(run.clone()).or_default();
        }
    }
    Ok(runs.into_iter().collect())
}

fn label_filter(run_id: Option<&str>) -> HashMap<&'static str, Vec<String>> {
    let label = match run_id {
        Some(run) => format!("{RUN_LABEL}={run}"),
        None => RUN_LABEL.to_string(),
    };
    HashMap::from([("label", vec![label])])
}

/// Label the kubelet's dockershim puts on every container of a pod.
const KUBERNETES_POD_LABEL: &str = "io.kubernetes.pod.uid";

/// (labels, id) of every container, running or not, with the run label, except those of
/// Kubernetes pods.
async fn labelled_containers(
    docker: &Docker,
    run_id: Option<&str>,
) -> Result<Vec<LabelledContainer>, RuntimeError> {
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&label_filter(run_id))
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(failed("cannot list containers".into()))?;
    Ok(containers
        .into_iter()
        // A Kubernetes pod's containers on this engine (a kubelet with dockershim, as in
        // the lab cluster) carry the pod's labels, `peerlab.run` included: they belong to
        // the kubernetes runtime, which removes them with their namespace.
        .filter(|c| {
            !c.labels
                .as_ref()
                .is_some_and(|l| l.contains_key(KUBERNETES_POD_LABEL))
        })
        .filter_map(|c| {
            let networks = c
                .network_settings
                .and_then(|n| n.networks)
                .map(|n| n.into_keys().collect())
                .unwrap_or_default();
            Some(LabelledContainer {
                id: c.id?,
                labels: c.labels.unwrap_or_default(),
                networks,
            })
        })
        .collect())
}

/// Why a fixed subnet may be taken, and what to do: names the network that holds exactly
/// that subnet, and for a peerlab run's network the command that removes it.
async fn subnet_hint(docker: &Docker, subnet: &str) -> String {
    let holder = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|n| {
            n.ipam
                .as_ref()
                .and_then(|i| i.config.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.subnet.as_deref() == Some(subnet)))
        });
    let Some(holder) = holder else {
        return format!(" (is {subnet} used by another network or the host?)");
    };
    let name = holder.name.unwrap_or_default();
    match holder.labels.unwrap_or_default().get(RUN_LABEL) {
        Some(run) => format!(
            " ({subnet} is held by network {name} of peerlab run {run}: `peerlab down {run}`; \
             if that reports active endpoints, restart the Docker daemon first)"
        ),
        None => format!(" ({subnet} is held by network {name}, which is not peerlab's)"),
    }
}

/// A container with the run label, as the engine lists it.
struct LabelledContainer {
    id: String,
    labels: HashMap<String, String>,
    /// Names of the networks it is attached to.
    networks: Vec<String>,
}

/// (labels, id) of every network with the run label.
async fn labelled_networks(
    docker: &Docker,
    run_id: Option<&str>,
) -> Result<Vec<(HashMap<String, String>, String)>, RuntimeError> {
    let options = ListNetworksOptionsBuilder::default()
        .filters(&label_filter(run_id))
        .build();
    let networks = docker
        .list_networks(Some(options))
        .await
        .map_err(failed("cannot list networks".into()))?;
    Ok(networks
        .into_iter()
        // A swarm's overlays (on a manager's engine) belong to the swarm runtime.
        .filter(|n| n.scope.as_deref() != Some("swarm"))
        .filter_map(|n| Some((n.labels.unwrap_or_default(), n.id?)))
        .collect())
}

async fn remove_by_label(
    docker: &Docker,
    run_id: Option<&str>,
    logs_dir: Option<&Path>,
) -> Result<TeardownReport, RuntimeError> {
    let mut report = TeardownReport::default();
    let containers = labelled_containers(docker, run_id).await?;
    if let Some(dir) = logs_dir.filter(|_| !containers.is_empty()) {
        std::fs::create_dir_all(dir)?;
        let targets: Vec<(String, std::path::PathBuf)> = containers
            .iter()
            .filter_map(|c| {
                let node = c.labels.get(NODE_LABEL)?;
                Some((c.id.clone(), dir.join(format!("{node}.log"))))
            })
            .collect();
        let saves = targets.into_iter().map(|(id, path)| async move {
            if let Err(e) = save_logs(docker, &id, &path).await {
                tracing::warn!(container = %id, "could not save logs: {e}");
            }
        });
        futures::stream::iter(saves)
            .buffer_unordered(TEARDOWN_CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }
    detach_one_at_a_time(docker, &containers).await;
    let removals = containers.into_iter().map(|c| async move {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&c.id, Some(options)).await {
            Ok(()) => Ok(true),
            // Removed meanwhile by a concurrent teardown: gone, but not by this one.
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(format!("container {}: {e}", c.id)),
        }
    });
    let mut results = futures::stream::iter(removals).buffer_unordered(TEARDOWN_CONCURRENCY);
    while let Some(result) = results.next().await {
        match result {
            Ok(removed) => report.containers_removed += usize::from(removed),
            Err(e) => report.leftovers.push(e),
        }
    }
    for (_, id) in labelled_networks(docker, run_id).await? {
        match remove_network(docker, &id).await {
            Ok(removed) => report.networks_removed += usize::from(removed),
            Err(e) => report.leftovers.push(format!("network {id}: {e}")),
        }
    }
    Ok(report)
}

/// Disconnects the containers from their networks before they are removed: one container at
/// a time on each network, the networks side by side.
///
/// Docker before 28.1 keeps a per-network endpoint count that concurrent updates can leave
/// too high (moby#42119); a network whose count never returns to zero cannot be removed
/// until the daemon restarts. Removing many containers of one network at once, which is
/// what a teardown did, is when that happened here (a CI run of 32 containers, and 100
/// removed by hand). Taking each network's endpoints away one by one keeps its count exact;
/// the removals that follow release no endpoint and can run concurrently.
async fn detach_one_at_a_time(docker: &Docker, containers: &[LabelledContainer]) {
    let mut by_network: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in containers {
        for net in &c.networks {
            by_network.entry(net).or_default().push(&c.id);
        }
    }
    let networks = by_network.into_iter().map(|(network, ids)| async move {
        for id in ids {
            let request = NetworkDisconnectRequest {
                container: id.to_string(),
                force: Some(true),
            };
            // Best effort: a container that is gone or already detached needs nothing.
            if let Err(e) = docker.disconnect_network(network, request).await {
                tracing::debug!(network, container = id, "disconnect before removal: {e}");
            }
        }
    });
    futures::future::join_all(networks).await;
}

/// Removes one network; `Ok(false)` when it was already gone.
///
/// The engine may still count the endpoints of just-removed containers for a moment, so
/// "has active endpoints" is retried briefly. An engine that keeps counting them (seen on
/// Docker 20.10 after many forced removals, with no container left on the network) only
/// lets go after a restart, which the error then says.
async fn remove_network(docker: &Docker, id: &str) -> Result<bool, String> {
    const ATTEMPTS: u64 = 5;
    let mut attempt = 1;
    loop {
        match docker.remove_network(id).await {
            Ok(()) => return Ok(true),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(false),
            Err(e) if e.to_string().contains("active endpoints") => {
                if attempt == ATTEMPTS {
                    return Err(format!(
                        "{e} (no container of the run is left on it: the engine kept stale \
                         endpoints; restart the Docker daemon, then `peerlab down --all`)"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn save_logs(docker: &Docker, container: &str, path: &Path) -> Result<(), String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(container, Some(options));
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?.into_bytes());
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_peerlab_images_are_built_locally() {
        assert!(is_peerlab_image("peerlab:0.1.0"));
        assert!(is_peerlab_image("peerlab"));
        assert!(!is_peerlab_image("registry.example:5000/other:1"));
        assert!(!is_peerlab_image("nginx:latest"));
    }

    #[test]
    fn docker_names() {
        assert!(valid_docker_name("quickstart-1a2b-genesis-0"));
        assert!(!valid_docker_name("-x"));
        assert!(!valid_docker_name("a b"));
        assert_eq!(container_name("r-1", "peers-2"), "r-1-peers-2");
        assert_eq!(network_name("r-1", "lan"), "r-1-lan");
    }
}
