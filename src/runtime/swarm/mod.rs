//! Docker Swarm: a topology deployed across the hosts of a swarm, reached through the
//! Docker API of a manager (`DOCKER_HOST`, or the local engine when it is one).
//!
//! What a run creates, all labelled `peerlab.run=<run>` and found again by that label
//! (teardown, `peerlab ps`, `peerlab down`):
//! - one attachable **overlay network** per topology network, with an explicit subnet sized
//!   for its nodes (`runtime::container::overlay_subnets`, shared with the stack export);
//! - the **relay** service, pinned to the manager the runtime talks to, on every network:
//!   the orchestrator reads each node's status socket through a local port forwarded over
//!   `docker exec` into it ([`tunnel`]), so nothing is published and nothing needs IPVS;
//! - **one service per node** (see [`services`] for why not one per group), `dnsrr`,
//!   restart policy `none`, placed on its host's swarm node (`node.labels.peerlab.host ==
//!   <label>`, else `node.hostname == <label>`).
//!
//! The image is copied onto every swarm host whose engine the runtime can reach ([`image`]).
//! Partitions (both ways and one way), heals and shaping go through the nodes' admin API
//! ([`crate::runtime::links`]) over the tunnels, so cutting a whole host off
//! (`partition: {host: h2}`) works across real hosts; a node is stopped and started
//! through the manager (its service scaled to 0 and back to 1: the node floods its leave
//! on SIGTERM, and comes back under the same name and alias, maybe with a new address).
//! Killing and pausing a node need the engine of the host its task runs on, which the
//! manager's API does not reach: with [`image::ENGINES_ENV`] naming the hosts' engines they
//! go there (a killed node is started again as a new task of its service); without it they
//! are declared unsupported, so scenarios using them are refused before anything starts. The topology's host links are not
//! emulated: the hosts of a swarm are real, and so is the network between them.

pub mod image;
pub mod services;
pub mod tunnel;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{LocalNodeState, TaskState};
use bollard::query_parameters::{
    InspectServiceOptions, KillContainerOptionsBuilder, ListNetworksOptionsBuilder,
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, LogsOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use futures::StreamExt;

use crate::contract::LinkShape;
use crate::runtime::container::{HOST_LABEL, STATUS_PORT, overlay_subnets};
use crate::runtime::docker::NodeImage;
use crate::runtime::docker::{image as docker_image, is_peerlab_image};
use crate::runtime::links::LinkFaults;
use crate::runtime::{
    Capabilities, NODE_LABEL, NodeAction, NodeEndpoint, NodeSpec, RUN_LABEL, RunListing, RunPlan,
    Runtime, RuntimeError, TeardownReport,
};
use services::{HostMatch, ROLE_LABEL, ROLE_NODE};
use tunnel::ExecTunnel;

const NAME: &str = "swarm";
/// How long a node's task may take to run after its service is created (image checks,
/// scheduling, network attachment on a busy host).
const TASK_WITHIN: Duration = Duration::from_secs(120);
/// Pause between two looks at a task or a network being removed.
const POLL: Duration = Duration::from_millis(200);
/// How long teardown waits for the tasks of removed services to leave the networks.
const NETWORKS_WITHIN: Duration = Duration::from_secs(60);
/// Longest Docker object name (services, hostnames).
const MAX_NAME: usize = 63;

/// What the swarm runtime can do: partitions, shaping and stop/start across hosts through
/// the manager, real overlay networks; kill and pause only with the hosts' engines (see
/// the module docs).
pub fn capabilities(with_engines: bool) -> Capabilities {
    Capabilities {
        kill: with_engines,
        stop: true,
        start: true,
        pause: with_engines,
        partition: true,
        one_way_partition: true,
        shape: true,
        isolated_networks: true,
    }
}

/// Runs a plan's nodes as services of a Docker Swarm; see the module docs.
pub struct SwarmRuntime {
    /// The manager's API.
    manager: Docker,
    /// Where the manager answers, for messages.
    manager_url: String,
    /// The swarm node id of that manager (the relay is pinned to it).
    manager_node: String,
    /// Where the node image comes from (as for the Docker runtime).
    node_image: NodeImage,
    plan: Option<RunPlan>,
    /// Placement of each host of the plan.
    hosts: BTreeMap<String, HostMatch>,
    /// The relay task's container on the manager's engine.
    relay: Option<String>,
    /// `(host, engine URL)` of each swarm host whose engine the runtime may use
    /// ([`image::ENGINES_ENV`]): the image is loaded there, and nodes running there can be
    /// killed and paused.
    engine_urls: Vec<(String, String)>,
    /// Those engines, connected by [`Runtime::prepare`].
    engines: Vec<image::Engine>,
    /// Each started node's task: (container id, swarm node id), for kill and pause.
    tasks: Mutex<BTreeMap<String, (String, String)>>,
    tunnels: Mutex<BTreeMap<String, ExecTunnel>>,
    endpoints: Mutex<BTreeMap<String, NodeEndpoint>>,
    links: LinkFaults,
    /// Nodes killed or stopped and not started again: left out when a partition is cut
    /// again (they cannot answer; they get theirs when they start).
    down: Mutex<BTreeSet<String>>,
}

/// Connects to the manager: `DOCKER_HOST`, else the local engine; refuses an engine that is
/// not a swarm manager, saying what to do. Returns the client, its address and its swarm
/// node id.
pub async fn connect_manager() -> Result<(Docker, String, String), RuntimeError> {
    let url = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = docker_image::connect()
        .await
        .map_err(RuntimeError::Failed)?;
    let info = docker
        .info()
        .await
        .map_err(|e| RuntimeError::Failed(format!("cannot ask the engine at {url}: {e}")))?;
    let swarm = info.swarm.unwrap_or_default();
    let state = swarm.local_node_state.unwrap_or(LocalNodeState::INACTIVE);
    let node = swarm.node_id.unwrap_or_default();
    if state != LocalNodeState::ACTIVE || swarm.control_available != Some(true) || node.is_empty() {
        let what = if state == LocalNodeState::ACTIVE {
            "a swarm worker, not a manager".to_string()
        } else {
            format!("not in a swarm (state: {state})")
        };
        return Err(RuntimeError::Failed(format!(
            "the Docker engine at {url} is {what}: the swarm runtime deploys through a manager. \
             Run `docker swarm init` there (one host), or point DOCKER_HOST at a manager of \
             your swarm (e.g. DOCKER_HOST=tcp://manager:2376)"
        )));
    }
    Ok((docker, url, node))
}

impl SwarmRuntime {
    /// Connects to a swarm manager (see [`connect_manager`]).
    pub async fn connect() -> Result<Self, RuntimeError> {
        let (manager, manager_url, manager_node) = connect_manager().await?;
        Ok(SwarmRuntime {
            manager,
            manager_url,
            manager_node,
            node_image: NodeImage::default(),
            plan: None,
            hosts: BTreeMap::new(),
            relay: None,
            // A malformed list is reported by `prepare`, not here: listing runs needs none.
            engine_urls: image::parse_engines(&image::engines_text()).unwrap_or_default(),
            engines: Vec::new(),
            tasks: Mutex::new(BTreeMap::new()),
            tunnels: Mutex::new(BTreeMap::new()),
            endpoints: Mutex::new(BTreeMap::new()),
            links: LinkFaults::new(),
            down: Mutex::new(BTreeSet::new()),
        })
    }

    /// Where the node image comes from (default: [`NodeImage::RunningExecutable`]).
    pub fn with_node_image(mut self, node_image: NodeImage) -> Self {
        self.node_image = node_image;
        self
    }

    fn plan(&self) -> Result<&RunPlan, RuntimeError> {
        self.plan
            .as_ref()
            .ok_or_else(|| RuntimeError::Failed("the swarm runtime was not prepared".into()))
    }

    fn endpoints(&self, names: &[String]) -> Result<Vec<NodeEndpoint>, RuntimeError> {
        let known = lock(&self.endpoints);
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
        lock(&self.endpoints).values().cloned().collect()
    }

    /// Which swarm node each host of the plan is: a node whose `peerlab.host` label is the
    /// host's label (or name), else one with that hostname; refuses a host no node matches.
    async fn place_hosts(
        &self,
        plan: &RunPlan,
    ) -> Result<BTreeMap<String, HostMatch>, RuntimeError> {
        let mut placed = BTreeMap::new();
        if plan.hosts.is_empty() {
            return Ok(placed);
        }
        let nodes = self
            .manager
            .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
            .await
            .map_err(failed("cannot list the swarm's nodes".into()))?;
        let labelled: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.spec.as_ref()?.labels.as_ref()?.get(HOST_LABEL).cloned())
            .collect();
        let hostnames: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.description.as_ref()?.hostname.clone())
            .collect();
        for host in &plan.hosts {
            let value = host.label.clone().unwrap_or_else(|| host.name.clone());
            let found = if labelled.contains(&value) {
                HostMatch::Label(value)
            } else if hostnames.contains(&value) {
                HostMatch::Hostname(value)
            } else {
                return Err(RuntimeError::Unsupported {
                    runtime: NAME,
                    reason: format!(
                        "host `{}` is placed on the swarm node labelled {HOST_LABEL}={value} \
                         or named {value}, and the swarm has none (labels: [{}], hostnames: \
                         [{}]); label one with `docker node update --label-add \
                         {HOST_LABEL}={value} NODE`, or give the host `label:` in the topology",
                        host.name,
                        labelled.join(", "),
                        hostnames.join(", ")
                    ),
                });
            };
            placed.insert(host.name.clone(), found);
        }
        Ok(placed)
    }

    /// The node image on every swarm host the runtime reaches (see [`image`]).
    async fn image_everywhere(&self, plan: &RunPlan) -> Result<(), RuntimeError> {
        let engines = self.engines.clone();
        // The image comes from the local engine (where `peerlab image build` puts it), or
        // from the manager when there is no local engine.
        let local = image::connect_to("unix:///var/run/docker.sock").await.ok();
        let source = local.as_ref().unwrap_or(&self.manager);
        let build_from = match (&self.node_image, is_peerlab_image(&plan.image)) {
            (_, false) | (NodeImage::Prebuilt, true) => None,
            (NodeImage::Binary(binary), true) => Some(binary.clone()),
            (NodeImage::RunningExecutable, true) => Some(std::env::current_exe().map_err(|e| {
                RuntimeError::Failed(format!("cannot find the running peerlab executable: {e}"))
            })?),
        };
        if let Some(binary) = build_from {
            docker_image::ensure_image_from(source, &plan.image, &binary)
                .await
                .map_err(|e| RuntimeError::Failed(format!("{e:#}")))?;
        }
        let targets: Vec<(String, Docker)> = if engines.is_empty() {
            vec![(self.manager_url.clone(), self.manager.clone())]
        } else {
            engines.into_iter().map(|e| (e.host, e.docker)).collect()
        };
        match image::image_id(source, &plan.image).await? {
            Some(_) => {
                let loaded = image::distribute(source, &plan.image, &targets).await?;
                if !loaded.is_empty() {
                    tracing::info!(image = %plan.image, hosts = ?loaded, "loaded the node image");
                }
            }
            // Not here at all: it must come from a registry every host can pull from.
            None => tracing::info!(
                image = %plan.image,
                "the image is not on this machine's engine; the swarm hosts pull it"
            ),
        }
        Ok(())
    }

    /// Polls until the service's task runs; returns its container id and swarm node id. A task that failed or
    /// was rejected (no such image, no node matching the placement) ends it with the reason.
    async fn wait_running(
        &self,
        service: &str,
        what: &str,
    ) -> Result<(String, String), RuntimeError> {
        let deadline = Instant::now() + TASK_WITHIN;
        let filters = HashMap::from([
            ("service", vec![service.to_string()]),
            ("desired-state", vec!["running".to_string()]),
        ]);
        let mut last = String::from("no task yet");
        loop {
            let options = ListTasksOptionsBuilder::default().filters(&filters).build();
            let tasks = self
                .manager
                .list_tasks(Some(options))
                .await
                .map_err(failed(format!(
                    "cannot list the tasks of service {service}"
                )))?;
            // With restart policy `none` an ended task keeps desired state `running`; the
            // newest one is the one that counts.
            let newest = tasks.into_iter().max_by_key(|t| {
                t.created_at
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            });
            if let Some(task) = newest {
                let status = task.status.unwrap_or_default();
                let state = status.state.unwrap_or(TaskState::NEW);
                let err = status.err.unwrap_or_default();
                match state {
                    TaskState::RUNNING => {
                        if let Some(id) = status.container_status.and_then(|c| c.container_id) {
                            return Ok((id, task.node_id.unwrap_or_default()));
                        }
                    }
                    TaskState::FAILED
                    | TaskState::REJECTED
                    | TaskState::COMPLETE
                    | TaskState::SHUTDOWN
                    | TaskState::ORPHANED => {
                        let hint = if err.contains("No such image") {
                            format!(
                                "; the swarm host has no image {} and no registry offers it: name \
                                 every host's engine in {} (peerlab loads the image there), or \
                                 `docker save {0} | docker -H HOST load` on each host",
                                self.plan().map(|p| p.image.as_str()).unwrap_or("?"),
                                image::ENGINES_ENV
                            )
                        } else {
                            format!("; see `docker service ps --no-trunc {service}`")
                        };
                        return Err(RuntimeError::Failed(format!(
                            "{what}: its task ended ({state}: {err}){hint}"
                        )));
                    }
                    _ => {
                        last = format!("{state} {} {err}", status.message.unwrap_or_default());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "{what}: its task is not running after {}s (last: {}); see `docker service \
                     ps --no-trunc {service}` (a placement no node meets stays pending)",
                    TASK_WITHIN.as_secs(),
                    last.trim()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until no task of `service` runs (after it was scaled to 0).
    async fn wait_stopped(&self, service: &str) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + Duration::from_secs(services::STOP_GRACE_SECS as u64 + 30);
        let filters = HashMap::from([("service", vec![service.to_string()])]);
        loop {
            let options = ListTasksOptionsBuilder::default().filters(&filters).build();
            let tasks = self
                .manager
                .list_tasks(Some(options))
                .await
                .map_err(failed(format!(
                    "cannot list the tasks of service {service}"
                )))?;
            let up = tasks.iter().any(|t| {
                let state = t.status.as_ref().and_then(|s| s.state);
                matches!(
                    state,
                    Some(
                        TaskState::RUNNING
                            | TaskState::STARTING
                            | TaskState::PREPARING
                            | TaskState::READY
                            | TaskState::ASSIGNED
                            | TaskState::ACCEPTED
                    )
                )
            });
            if !up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "service {service} still has a running task after it was scaled to 0; see \
                     `docker service ps {service}`"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sets the replicas of a node's service (0: stop, 1: start).
    async fn scale(&self, service: &str, replicas: i64) -> Result<(), RuntimeError> {
        let current = self
            .manager
            .inspect_service(service, None::<InspectServiceOptions>)
            .await
            .map_err(failed(format!("cannot inspect service {service}")))?;
        let version = current.version.and_then(|v| v.index).unwrap_or_default();
        let mut spec = current.spec.unwrap_or_default();
        spec.mode = Some(services::replicated(replicas));
        if replicas > 0
            && let Some(task) = spec.task_template.as_mut()
        {
            // A new task even when the replica count does not change (after a kill).
            task.force_update = Some(task.force_update.unwrap_or_default() + 1);
        }
        let options = UpdateServiceOptionsBuilder::default()
            .version(version as i32)
            .build();
        self.manager
            .update_service(service, spec, options, None)
            .await
            .map_err(failed(format!(
                "cannot scale service {service} to {replicas}"
            )))?;
        Ok(())
    }
}

impl SwarmRuntime {
    /// After `node` started anew: the partition in force, if any, cut again in it (its
    /// blocks lived in the process that ended). Blocks are idempotent, so the whole
    /// partition is posted again to the nodes that are up; the node must answer first, so it
    /// is waited for.
    async fn recut(&self, node: &str) -> Result<(), RuntimeError> {
        let down = lock(&self.down).clone();
        let deadline = Instant::now() + TASK_WITHIN;
        loop {
            match self
                .links
                .recut_named(&|names| self.endpoints(names), &down)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(RuntimeError::Failed(format!(
                        "{node} started again, but the partition in force could not be cut in \
                         it: {e}"
                    )));
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The engine of the host `node`'s task runs on, and its container there: the task's
    /// swarm node, by its `peerlab.host` label or hostname, among [`image::ENGINES_ENV`].
    async fn engine_of(&self, node: &str) -> Result<(Docker, String), RuntimeError> {
        let (container, node_id) = lock(&self.tasks).get(node).cloned().ok_or_else(|| {
            RuntimeError::Failed(format!("node `{node}` has no running task in this run"))
        })?;
        let swarm_node = self
            .manager
            .inspect_node(&node_id)
            .await
            .map_err(failed(format!("cannot inspect swarm node {node_id}")))?;
        let label = swarm_node
            .spec
            .and_then(|s| s.labels)
            .and_then(|l| l.get(HOST_LABEL).cloned());
        let hostname = swarm_node.description.and_then(|d| d.hostname);
        let engine = self
            .engines
            .iter()
            .find(|e| Some(&e.host) == label.as_ref() || Some(&e.host) == hostname.as_ref())
            .ok_or_else(|| {
                RuntimeError::Failed(format!(
                    "node {node} runs on swarm node {} ({HOST_LABEL}={}), whose engine {} does \
                     not name; add it (HOST=unix:///… or tcp://…) to kill or pause nodes there",
                    hostname.as_deref().unwrap_or(&node_id),
                    label.as_deref().unwrap_or("-"),
                    image::ENGINES_ENV
                ))
            })?;
        Ok((engine.docker.clone(), container))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn failed(what: String) -> impl FnOnce(DockerError) -> RuntimeError {
    move |e| RuntimeError::Failed(format!("{what}: {e}"))
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// DNS labels: `[a-z0-9-]`, not starting or ending with `-`.
fn valid_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[async_trait]
impl Runtime for SwarmRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Partitions, shaping and stop/start across hosts; real overlay networks. Kill and
    /// pause need the engine of the task's host (see the module docs).
    fn capabilities(&self) -> Capabilities {
        capabilities(!self.engine_urls.is_empty())
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
            if !valid_dns_label(&node.name) {
                return refuse(format!(
                    "node name `{}` is not a DNS label (lower-case letters, digits and `-`, \
                     at most {MAX_NAME}): nodes are found by name on the overlay; rename the group",
                    node.name
                ));
            }
            let service = services::service_name(&plan.run_id, &node.name);
            if service.len() > MAX_NAME {
                return refuse(format!(
                    "service name `{service}` (run id + node name) is longer than {MAX_NAME} \
                     characters; shorten the topology or group name"
                ));
            }
            if let Some(host) = &node.host
                && !plan.hosts.iter().any(|h| &h.name == host)
            {
                return refuse(format!(
                    "node `{}` is placed on host `{host}`, which the plan does not declare",
                    node.name
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
        overlay_subnets(plan).map_err(|reason| RuntimeError::Unsupported {
            runtime: NAME,
            reason,
        })?;
        Ok(())
    }

    async fn prepare(&mut self, plan: &RunPlan) -> Result<(), RuntimeError> {
        self.check_support(plan)?;
        // Everything that can refuse does so before anything is created.
        self.hosts = self.place_hosts(plan).await?;
        self.engines = image::engines_from_env().await?;
        self.image_everywhere(plan).await?;
        self.plan = Some(plan.clone());
        self.links.use_token(plan.admin_token.clone());
        let subnets = overlay_subnets(plan).map_err(RuntimeError::Failed)?;
        for (name, subnet) in &subnets {
            let request = services::overlay_network(plan, name, subnet);
            let docker_name = request.name.clone();
            self.manager.create_network(request).await.map_err(|e| {
                RuntimeError::Failed(format!(
                    "cannot create overlay network {docker_name} ({subnet}): {e} (is {subnet} \
                     used by another network of the swarm? `docker network ls --filter \
                     driver=overlay`; a run of peerlab is removed with `peerlab down RUN`)"
                ))
            })?;
        }
        let networks: Vec<String> = subnets.into_iter().map(|(n, _)| n).collect();
        let relay = services::relay_service(plan, &networks, &self.manager_node);
        self.manager
            .create_service(relay, None)
            .await
            .map_err(failed("cannot create the relay service".into()))?;
        let relay_service = services::relay_name(&plan.run_id);
        let (container, _) = self
            .wait_running(&relay_service, "the relay service")
            .await?;
        self.relay = Some(container);
        Ok(())
    }

    async fn start(&self, node: &NodeSpec) -> Result<NodeEndpoint, RuntimeError> {
        let plan = self.plan()?;
        let relay = self
            .relay
            .clone()
            .ok_or_else(|| RuntimeError::Failed("the swarm runtime was not prepared".into()))?;
        let host = node.host.as_ref().and_then(|h| self.hosts.get(h));
        let spec = services::node_service(plan, node, host);
        let service = services::service_name(&plan.run_id, &node.name);
        self.manager
            .create_service(spec, None)
            .await
            .map_err(failed(format!("cannot create service {service}")))?;
        let task = self
            .wait_running(&service, &format!("node {}", node.name))
            .await?;
        lock(&self.tasks).insert(node.name.clone(), task);
        // The relay resolves the node's alias on the overlay at every connection, so the
        // tunnel keeps working when the node comes back elsewhere after a stop and start.
        let tunnel = ExecTunnel::open(
            self.manager.clone(),
            relay,
            format!("{}:{STATUS_PORT}", node.name),
        )
        .await?;
        let endpoint = NodeEndpoint {
            name: node.name.clone(),
            peer_addr: services::peer_addr(&node.name),
            status_url: format!("http://{}", tunnel.local_addr()),
        };
        lock(&self.tunnels).insert(node.name.clone(), tunnel);
        lock(&self.endpoints).insert(node.name.clone(), endpoint.clone());
        Ok(endpoint)
    }

    async fn act(&self, node: &str, action: NodeAction) -> Result<(), RuntimeError> {
        let plan = self.plan()?;
        if !lock(&self.endpoints).contains_key(node) {
            return Err(RuntimeError::Failed(format!(
                "node `{node}` was not started in this run"
            )));
        }
        let service = services::service_name(&plan.run_id, node);
        match action {
            NodeAction::Stop => {
                self.scale(&service, 0).await?;
                lock(&self.down).insert(node.to_string());
                self.wait_stopped(&service).await
            }
            NodeAction::Start => {
                // Replicas back to 1 after a stop; a new task after a kill (restart policy
                // `none` leaves the killed one failed, and nothing replaces it).
                self.scale(&service, 1).await?;
                let task = self.wait_running(&service, &format!("node {node}")).await?;
                lock(&self.tasks).insert(node.to_string(), task);
                lock(&self.down).remove(node);
                self.recut(node).await
            }
            NodeAction::Kill | NodeAction::Pause | NodeAction::Resume => {
                let (engine, container) = self.engine_of(node).await?;
                let what =
                    format!("cannot {action:?} node {node} (container {container})").to_lowercase();
                let result = match action {
                    NodeAction::Kill => {
                        let options = KillContainerOptionsBuilder::default()
                            .signal("SIGKILL")
                            .build();
                        lock(&self.down).insert(node.to_string());
                        engine.kill_container(&container, Some(options)).await
                    }
                    NodeAction::Pause => engine.pause_container(&container).await,
                    _ => engine.unpause_container(&container).await,
                };
                result.map_err(failed(what))
            }
        }
    }

    async fn partition(&self, sides: &[Vec<String>], one_way: bool) -> Result<(), RuntimeError> {
        self.links
            .partition_named(&|names| self.endpoints(names), sides, one_way)
            .await
    }

    async fn heal(&self) -> Result<(), RuntimeError> {
        self.links.heal_all(&self.all_endpoints()).await
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
        let Some(plan) = self.plan.clone() else {
            return Ok(TeardownReport::default());
        };
        // Faults live in the nodes: undo them while the tunnels still reach them.
        let leftovers = self.links.clear_all(&self.all_endpoints()).await;
        lock(&self.endpoints).clear();
        lock(&self.tunnels).clear();
        self.relay = None;
        let logs = plan.run_dir.join("logs");
        let mut report = remove_by_label(&self.manager, Some(&plan.run_id), Some(&logs)).await?;
        report.leftovers.extend(leftovers);
        Ok(report)
    }

    async fn list_runs(&self) -> Result<Vec<RunListing>, RuntimeError> {
        let mut runs: BTreeMap<String, usize> = BTreeMap::new();
        for (labels, _) in labelled_services(&self.manager, None).await? {
            if let Some(run) = labels.get(RUN_LABEL) {
                let nodes = runs.entry(run.clone()).or_default();
                if labels.get(ROLE_LABEL).map(String::as_str) == Some(ROLE_NODE) {
                    *nodes += 1;
                }
            }
        }
        for (labels, _) in labelled_networks(&self.manager, None).await? {
            if let Some(run) = labels.get(RUN_LABEL) {
                runs.entry(run.clone()).or_default();
            }
        }
        Ok(RunListing::from_counts(NAME, runs))
    }

    /// Removes the services (nodes and relay) and overlay networks labelled with the run,
    /// saving each node's output to `<logs_dir>/<node>.log` first when asked. Services count
    /// as containers in the report (one task each).
    async fn remove_run(
        &self,
        run: Option<&str>,
        logs_dir: Option<&Path>,
    ) -> Result<TeardownReport, RuntimeError> {
        remove_by_label(&self.manager, run, logs_dir).await
    }
}

fn label_filter(run_id: Option<&str>) -> HashMap<&'static str, Vec<String>> {
    let label = match run_id {
        Some(run) => format!("{RUN_LABEL}={run}"),
        None => RUN_LABEL.to_string(),
    };
    HashMap::from([("label", vec![label])])
}

/// (labels, id) of every service with the run label.
async fn labelled_services(
    docker: &Docker,
    run_id: Option<&str>,
) -> Result<Vec<(HashMap<String, String>, String)>, RuntimeError> {
    let options = ListServicesOptionsBuilder::default()
        .filters(&label_filter(run_id))
        .build();
    let found = docker
        .list_services(Some(options))
        .await
        .map_err(failed("cannot list the swarm's services".into()))?;
    Ok(found
        .into_iter()
        .filter_map(|s| {
            let labels = s.spec.and_then(|sp| sp.labels).unwrap_or_default();
            Some((labels, s.id?))
        })
        .collect())
}

/// (labels, id) of every swarm-scoped network with the run label.
async fn labelled_networks(
    docker: &Docker,
    run_id: Option<&str>,
) -> Result<Vec<(HashMap<String, String>, String)>, RuntimeError> {
    let mut filters = label_filter(run_id);
    filters.insert("scope", vec!["swarm".to_string()]);
    let options = ListNetworksOptionsBuilder::default()
        .filters(&filters)
        .build();
    let networks = docker
        .list_networks(Some(options))
        .await
        .map_err(failed("cannot list networks".into()))?;
    Ok(networks
        .into_iter()
        .filter(|n| n.scope.as_deref() == Some("swarm"))
        .filter_map(|n| Some((n.labels.unwrap_or_default(), n.id?)))
        .collect())
}

async fn remove_by_label(
    docker: &Docker,
    run_id: Option<&str>,
    logs_dir: Option<&Path>,
) -> Result<TeardownReport, RuntimeError> {
    let mut report = TeardownReport::default();
    let services = labelled_services(docker, run_id).await?;
    if let Some(dir) = logs_dir {
        let nodes: Vec<(String, String)> = services
            .iter()
            .filter_map(|(labels, id)| Some((id.clone(), labels.get(NODE_LABEL)?.clone())))
            .collect();
        if !nodes.is_empty() {
            std::fs::create_dir_all(dir)?;
        }
        let saves = nodes.into_iter().map(|(id, node)| async move {
            let path = dir.join(format!("{node}.log"));
            if let Err(e) = save_logs(docker, &id, &path).await {
                tracing::warn!(service = %id, "could not save logs: {e}");
            }
        });
        futures::stream::iter(saves)
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    }
    for (labels, id) in &services {
        match docker.delete_service(id).await {
            Ok(()) => {
                if labels.get(ROLE_LABEL).map(String::as_str) == Some(ROLE_NODE) {
                    report.containers_removed += 1;
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => report.leftovers.push(format!("service {id}: {e}")),
        }
    }
    // The tasks of removed services leave the networks on their own time (SIGTERM, the
    // grace period, then the network detach on each host): a network is busy until then.
    let deadline = Instant::now() + NETWORKS_WITHIN;
    for (_, id) in labelled_networks(docker, run_id).await? {
        loop {
            match docker.remove_network(&id).await {
                Ok(()) => {
                    report.networks_removed += 1;
                    break;
                }
                Err(e) if is_not_found(&e) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(network = %id, "network not removable yet: {e}");
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    report.leftovers.push(format!(
                        "network {id}: {e} (tasks still attached after {}s: `docker service ls`, \
                         then `peerlab down --all`)",
                        NETWORKS_WITHIN.as_secs()
                    ));
                    break;
                }
            }
        }
    }
    // A removed overlay stays listed on the manager until its last task there has left it;
    // callers (and `peerlab ps` right after) must find nothing.
    loop {
        let left = labelled_networks(docker, run_id).await?;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            report.leftovers.extend(left.into_iter().map(|(_, id)| {
                format!(
                    "network {id}: still listed {}s after its removal",
                    NETWORKS_WITHIN.as_secs()
                )
            }));
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(report)
}

/// A service's output (every task of it) to `path`, within a bounded time: a host that
/// does not answer must not hold the teardown.
async fn save_logs(docker: &Docker, service: &str, path: &Path) -> Result<(), String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let collect = async {
        let mut stream = docker.service_logs(service, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| e.to_string())?.into_bytes());
        }
        Ok::<_, String>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .map_err(|_| "no logs within 10s".to_string())??;
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_must_be_dns_labels() {
        assert!(valid_dns_label("peers-3"));
        assert!(valid_dns_label("genesis-0"));
        assert!(!valid_dns_label("Peers-3"));
        assert!(!valid_dns_label("peers_3"));
        assert!(!valid_dns_label("-x"));
        assert!(!valid_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn kill_and_pause_need_the_hosts_engines() {
        let caps = capabilities(false);
        assert!(!caps.supports(NodeAction::Kill));
        assert!(!caps.supports(NodeAction::Pause));
        assert!(caps.supports(NodeAction::Stop));
        assert!(caps.supports(NodeAction::Start));
        assert!(caps.partition && caps.one_way_partition && caps.shape);
        assert_eq!(capabilities(true), Capabilities::ALL);
    }
}
