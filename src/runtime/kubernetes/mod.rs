//! Kubernetes: a topology deployed to a cluster through its API (kube-rs; no `kubectl`),
//! with the current kubeconfig or the one and context given (`--kubeconfig`, `--context`).
//!
//! What a run creates, everything labelled `peerlab.run=<run>` and found again by that
//! label (teardown, `peerlab ps`, `peerlab down`):
//! - a **namespace** of its own, `peerlab-<run>` ([`objects::namespace_for`]) or the one
//!   `--namespace` names (created by the run, never an existing one);
//! - per genesis and per group a **StatefulSet** (`podManagementPolicy: Parallel`,
//!   `updateStrategy: OnDelete`) and its headless **Service**, built by [`objects`]: pod
//!   names are the plan's node names, so a node is found by name (DNS, the pod proxy).
//!
//! Before anything is created, [`capacity`] checks that the cluster's nodes take the run's
//! pods (allocatable pods, pod subnet). The node image is built into the local Docker engine
//! as the Docker runtime does (a single-node cluster on that engine, such as the lab's or
//! one with dockershim, uses it as it is; kind and k3d need `kind load docker-image` or
//! `k3d image import`), and used with `imagePullPolicy: IfNotPresent`; a prebuilt `--image`
//! is used as given, from the cluster's registry.
//!
//! The orchestrator reads the nodes' status sockets through [`proxy`]: one local HTTP
//! proxy into the API server's pod proxy. Faults:
//! - **kill**: the node is added to the StatefulSet's held set (`PEERLAB_HOLD` in the pod
//!   template; a pod whose name is in it starts nothing), then its pod is deleted with
//!   grace period 0: the controller recreates it at once, held. **stop** is the same with
//!   the pod's grace period (SIGTERM: the node floods its leave first). **start** takes it
//!   out of the held set and deletes the held pod: the new one runs the node, under the
//!   same name and DNS record (with a new address).
//! - **pause**/**resume** are refused: the API cannot freeze a container.
//! - **partition**, **heal** and **shape** go through the nodes' admin API
//!   ([`crate::runtime::links`]) over the proxy.
//!
//! Nodes that must not start with the run (a `start: manual` group, named by the lab, or
//! one whose `start_delay`/`stagger` puts it [`DELAY_RESOLUTION`] or more after the start)
//! are created held and started the same way.
//! Teardown deletes the namespace and waits until it is gone.

pub mod capacity;
pub mod objects;
pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::contract::LinkShape;
use crate::runtime::container::{HOST_LABEL, PEER_PORT};
use crate::runtime::docker::{NodeImage, image as docker_image, is_peerlab_image};
use crate::runtime::links::LinkFaults;
use crate::runtime::{
    Capabilities, NodeAction, NodeEndpoint, NodeSpec, RUN_LABEL, RunListing, RunPlan, Runtime,
    RuntimeError, TeardownReport,
};
use proxy::PodProxy;

/// The runtime's name, as users pick it (`--runtime kubernetes`).
pub const NAME: &str = "kubernetes";
/// How long the API server may take to answer the first request of a run.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// How long `peerlab ps`/`down` wait for a cluster before counting it absent.
pub const PROBE_WITHIN: Duration = Duration::from_secs(2);
/// How long a pod may take to run after it was asked for (scheduling, sandbox, a hundred
/// pods starting at once on a small machine).
const POD_WITHIN: Duration = Duration::from_secs(240);
/// How long a namespace may take to go (its pods end first, each within its grace period).
const NAMESPACE_WITHIN: Duration = Duration::from_secs(240);
/// Pause between two looks at pods or a namespace being deleted.
const POLL: Duration = Duration::from_millis(400);
/// How long a node's logs may take to fetch when a run is removed.
const LOGS_WITHIN: Duration = Duration::from_secs(10);
/// Start delays shorter than this are below what pod start-up resolves (scheduling, the
/// sandbox, the container: seconds): such nodes start with the run. Longer ones are held
/// until the orchestrator starts them.
pub const DELAY_RESOLUTION: Duration = Duration::from_secs(2);
/// Longest name a namespace (a DNS label) may have.
const MAX_NAME: usize = 63;
/// Waiting reasons of a container that no amount of waiting fixes.
const HOPELESS: &[&str] = &[
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
];

/// Where the cluster is and where a run goes; every field defaults to the kubeconfig's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeOptions {
    /// The kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`, else the
    /// in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    pub context: Option<String>,
    /// The namespace of a run (default: `peerlab-<run id>`). It must not exist: the run
    /// creates it, labels it and deletes it at teardown.
    pub namespace: Option<String>,
}

impl KubeOptions {
    /// Where the configuration comes from, for messages.
    fn source(&self) -> String {
        let file = match &self.kubeconfig {
            Some(path) => path.display().to_string(),
            None => match std::env::var("KUBECONFIG") {
                Ok(v) if !v.is_empty() => format!("KUBECONFIG={v}"),
                _ => "~/.kube/config (KUBECONFIG is not set)".to_string(),
            },
        };
        match &self.context {
            Some(c) => format!("{file}, context {c}"),
            None => file,
        }
    }

    /// Whether a kubeconfig could be found at all, without reading it: what decides if
    /// `peerlab ps` asks a cluster.
    pub fn kubeconfig_exists(&self) -> bool {
        if let Some(path) = &self.kubeconfig {
            return path.is_file();
        }
        if let Some(paths) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
            return std::env::split_paths(&paths).any(|p| p.is_file());
        }
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".kube").join("config"))
            .is_some_and(|p| p.is_file())
            || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    }
}

/// A client of the cluster `options` name, once its API server has answered within
/// `within`; the error says what to do. Returns the client and the server's URL.
pub async fn connect(
    options: &KubeOptions,
    within: Duration,
) -> Result<(Client, String), RuntimeError> {
    let source = options.source();
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..KubeConfigOptions::default()
    };
    let loaded = match &options.kubeconfig {
        Some(path) => match Kubeconfig::read_from(path) {
            Ok(file) => Config::from_custom_kubeconfig(file, &kube_options)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        None => match Config::from_kubeconfig(&kube_options).await {
            Ok(config) => Ok(config),
            // Inside a pod without a kubeconfig: its service account.
            Err(e) if options.context.is_none() => Config::incluster().map_err(|_| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    let mut config = loaded.map_err(|e| {
        RuntimeError::Failed(format!(
            "no usable kubeconfig ({source}): {e}. Point KUBECONFIG or --kubeconfig at the \
             cluster's kubeconfig (for the repository's lab cluster: eval \"$(../shared/k8s-lab/lab env)\"), \
             and --context at one of its contexts"
        ))
    })?;
    config.connect_timeout = Some(within);
    config.read_timeout = Some(Duration::from_secs(60));
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| {
        RuntimeError::Failed(format!(
            "cannot make a client of the cluster at {url} ({source}): {e}"
        ))
    })?;
    let answered = tokio::time::timeout(within, client.apiserver_version()).await;
    match answered {
        Ok(Ok(_)) => Ok((client, url)),
        Ok(Err(e)) => Err(RuntimeError::Failed(format!(
            "the Kubernetes API server at {url} ({source}) did not answer: {e}. Is the \
             cluster up (`kubectl --kubeconfig ... get nodes`)? Point KUBECONFIG, --kubeconfig \
             or --context at one that runs"
        ))),
        Err(_) => Err(RuntimeError::Failed(format!(
            "no Kubernetes API server answered at {url} ({source}) within {}s. Is the cluster \
             up? Point KUBECONFIG, --kubeconfig or --context at one that runs",
            within.as_secs()
        ))),
    }
}

/// What the Kubernetes runtime can do: kill, stop and start through the API, partitions
/// and shaping through the nodes; no pause (the API cannot freeze a container), and one
/// flat pod network.
pub fn capabilities() -> Capabilities {
    Capabilities {
        kill: true,
        stop: true,
        start: true,
        pause: false,
        partition: true,
        one_way_partition: true,
        shape: true,
        isolated_networks: false,
    }
}

/// The pods of the run's namespace, listed at most once per [`POLL`] however many nodes
/// wait for theirs: a hundred starts must not become a hundred requests per poll.
#[derive(Default)]
struct PodCache {
    at: Option<Instant>,
    pods: Arc<BTreeMap<String, Pod>>,
}

/// Runs a plan's nodes as pods of StatefulSets; see the module docs.
pub struct KubernetesRuntime {
    client: Client,
    /// The API server's URL, for messages.
    url: String,
    options: KubeOptions,
    node_image: NodeImage,
    /// Nodes the lab starts later (`start: manual` groups): created held.
    held_at_start: BTreeSet<String>,
    plan: Option<RunPlan>,
    /// The run's namespace, once created by this runtime (teardown deletes it).
    namespace: Option<String>,
    proxy: Option<PodProxy>,
    /// Nodes held (their pods start nothing); changed under this lock, which also orders
    /// the StatefulSet patches that carry it.
    held: tokio::sync::Mutex<BTreeSet<String>>,
    pods: tokio::sync::Mutex<PodCache>,
    endpoints: Mutex<BTreeMap<String, NodeEndpoint>>,
    links: LinkFaults,
    /// Nodes killed or stopped and not started again.
    down: Mutex<BTreeSet<String>>,
}

impl KubernetesRuntime {
    /// Connects to the cluster `options` name (see [`connect`]).
    pub async fn connect(options: KubeOptions) -> Result<Self, RuntimeError> {
        Self::connect_within(options, CONNECT_WITHIN).await
    }

    /// Connects, counting the cluster absent when it does not answer within `within`.
    pub async fn connect_within(
        options: KubeOptions,
        within: Duration,
    ) -> Result<Self, RuntimeError> {
        let (client, url) = connect(&options, within).await?;
        Ok(KubernetesRuntime {
            client,
            url,
            options,
            node_image: NodeImage::default(),
            held_at_start: BTreeSet::new(),
            plan: None,
            namespace: None,
            proxy: None,
            held: tokio::sync::Mutex::new(BTreeSet::new()),
            pods: tokio::sync::Mutex::new(PodCache::default()),
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

    /// Nodes that do not start with the run (a `start: manual` group's): their pods are
    /// created held, and [`Runtime::start`] releases them.
    pub fn with_held_at_start(mut self, nodes: impl IntoIterator<Item = String>) -> Self {
        self.held_at_start = nodes.into_iter().collect();
        self
    }

    /// The namespace a plan runs in.
    pub fn namespace_of(&self, plan: &RunPlan) -> String {
        self.options
            .namespace
            .clone()
            .unwrap_or_else(|| objects::namespace_for(&plan.run_id))
    }

    fn plan(&self) -> Result<&RunPlan, RuntimeError> {
        self.plan
            .as_ref()
            .ok_or_else(|| RuntimeError::Failed("the kubernetes runtime was not prepared".into()))
    }

    fn ns(&self) -> Result<&str, RuntimeError> {
        self.namespace
            .as_deref()
            .ok_or_else(|| RuntimeError::Failed("the kubernetes runtime was not prepared".into()))
    }

    fn pods_api(&self) -> Result<Api<Pod>, RuntimeError> {
        Ok(Api::namespaced(self.client.clone(), self.ns()?))
    }

    fn object_options(
        &self,
        held: BTreeSet<String>,
    ) -> Result<objects::ObjectOptions, RuntimeError> {
        let plan = self.plan()?;
        Ok(objects::ObjectOptions {
            namespace: self.ns()?.to_string(),
            image: plan.image.clone(),
            pull_policy: objects::DEFAULT_PULL_POLICY.to_string(),
            held,
        })
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

    /// The node image in the local Docker engine, built as the Docker runtime builds it,
    /// unless it is prebuilt or not peerlab's.
    async fn ensure_image(&self, plan: &RunPlan) -> Result<(), RuntimeError> {
        let build_from = match (&self.node_image, is_peerlab_image(&plan.image)) {
            (_, false) | (NodeImage::Prebuilt, true) => None,
            (NodeImage::Binary(binary), true) => Some(binary.clone()),
            (NodeImage::RunningExecutable, true) => Some(std::env::current_exe().map_err(|e| {
                RuntimeError::Failed(format!("cannot find the running peerlab executable: {e}"))
            })?),
        };
        let Some(binary) = build_from else {
            return Ok(());
        };
        let docker = docker_image::connect().await.map_err(|e| {
            RuntimeError::Failed(format!(
                "the node image {} is built in the local Docker engine, which the cluster's \
                 nodes then use (kind: `kind load docker-image`, k3d: `k3d image import`), and \
                 no engine answered: {e}. Or push an image to the cluster's registry and pass \
                 it as prebuilt (LabBuilder::image, the topology's `image:` with a registry)",
                plan.image
            ))
        })?;
        let built = docker_image::ensure_image_from(&docker, &plan.image, &binary)
            .await
            .map_err(|e| RuntimeError::Failed(format!("{e:#}")))?;
        if built {
            tracing::info!(image = %plan.image, "built the node image in the local engine");
        }
        Ok(())
    }

    /// Refuses hosts no cluster node is labelled for (their pods would stay Pending).
    async fn check_hosts(&self, plan: &RunPlan) -> Result<(), RuntimeError> {
        if plan.hosts.is_empty() {
            return Ok(());
        }
        let nodes = match Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!("cannot list the cluster's nodes, hosts not checked: {e}");
                return Ok(());
            }
        };
        let labelled: BTreeSet<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.labels.as_ref()?.get(HOST_LABEL).cloned())
            .collect();
        for host in &plan.hosts {
            let value = host.label.clone().unwrap_or_else(|| host.name.clone());
            if !labelled.contains(&value) {
                return Err(RuntimeError::Unsupported {
                    runtime: NAME,
                    reason: format!(
                        "host `{}` is placed on the cluster nodes labelled {HOST_LABEL}={value}, \
                         and none is (labelled: [{}]); label one with `kubectl label node NODE \
                         {HOST_LABEL}={value}`, or give the host `label:` in the topology",
                        host.name,
                        labelled.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// Creates the run's namespace, labelled; refuses one that exists already (not ours to
    /// fill or delete).
    async fn create_namespace(
        &mut self,
        namespace: Namespace,
        name: &str,
    ) -> Result<(), RuntimeError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &namespace).await {
            Ok(_) => {
                self.namespace = Some(name.to_string());
                Ok(())
            }
            Err(e) if is_status(&e, 409) => Err(RuntimeError::Unsupported {
                runtime: NAME,
                reason: format!(
                    "namespace {name} exists already; a run creates its namespace and deletes it \
                     at the end, so it must be a new one: name another with --namespace, or \
                     leave it out (peerlab-<run id>)"
                ),
            }),
            Err(e) => Err(api_failed(&format!("cannot create namespace {name}"), &e)),
        }
    }

    /// The run's pods by name, listed at most once per `POLL`.
    async fn pods(&self) -> Result<Arc<BTreeMap<String, Pod>>, RuntimeError> {
        let mut cache = self.pods.lock().await;
        if cache.at.is_some_and(|at| at.elapsed() < POLL) {
            return Ok(cache.pods.clone());
        }
        let list = self
            .pods_api()?
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                api_failed(
                    &format!("cannot list the pods of {}", self.ns().unwrap_or("?")),
                    &e,
                )
            })?;
        let pods: BTreeMap<String, Pod> = list
            .items
            .into_iter()
            .filter_map(|p| Some((p.metadata.name.clone()?, p)))
            .collect();
        cache.pods = Arc::new(pods);
        cache.at = Some(Instant::now());
        Ok(cache.pods.clone())
    }

    /// Forgets the listed pods: the next look lists them again (after a deletion).
    async fn invalidate(&self) {
        self.pods.lock().await.at = None;
    }

    /// Polls until `node`'s pod (another one than `not_uid`) runs with an address; a pod
    /// that cannot run (no image, crash loop) ends it at once with the reason.
    async fn wait_running(&self, node: &str, not_uid: Option<&str>) -> Result<Pod, RuntimeError> {
        let deadline = Instant::now() + POD_WITHIN;
        let mut last = "no pod yet".to_string();
        loop {
            let pods = self.pods().await?;
            if let Some(pod) = pods.get(node).filter(|p| uid(p).as_deref() != not_uid) {
                if let Some(reason) = hopeless(pod) {
                    return Err(RuntimeError::Failed(format!(
                        "node {node}: its pod cannot run: {reason}{}",
                        self.hint(&reason)
                    )));
                }
                let status = pod.status.as_ref();
                let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
                let ip = status.and_then(|s| s.pod_ip.as_deref());
                match (phase, ip) {
                    ("Running", Some(_)) if pod.metadata.deletion_timestamp.is_none() => {
                        return Ok(pod.clone());
                    }
                    ("Failed" | "Succeeded", _) => {
                        return Err(RuntimeError::Failed(format!(
                            "node {node}: its pod ended ({phase}: {}); see `kubectl -n {} logs {node}`",
                            describe(pod),
                            self.ns().unwrap_or("?")
                        )));
                    }
                    _ => last = format!("{phase}: {}", describe(pod)),
                }
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "node {node}: its pod is not running after {}s (last: {last}); see `kubectl \
                     -n {} describe pod {node}`",
                    POD_WITHIN.as_secs(),
                    self.ns().unwrap_or("?")
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until the pod `uid` of `node` is gone from the API.
    async fn wait_gone(&self, node: &str, old: &str, within: Duration) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + within;
        loop {
            self.invalidate().await;
            let pods = self.pods().await?;
            if pods.get(node).and_then(uid).as_deref() != Some(old) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "node {node}: its pod is still there {}s after its deletion; see `kubectl -n \
                     {} describe pod {node}`",
                    within.as_secs(),
                    self.ns().unwrap_or("?")
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What to do about a hopeless pod's reason.
    fn hint(&self, reason: &str) -> String {
        let image = self.plan.as_ref().map(|p| p.image.as_str()).unwrap_or("?");
        if reason.contains("ImageNeverPull") || reason.contains("ImagePull") {
            format!(
                ". The cluster's nodes do not have image {image} and cannot pull it: on a \
                 cluster that uses this machine's Docker engine it is built there; for kind run \
                 `kind load docker-image {image}`, for k3d `k3d image import {image}`; on a real \
                 cluster push it to a registry the nodes reach and pass that name as a prebuilt \
                 image"
            )
        } else {
            format!(
                "; see `kubectl -n {} describe pod` and `kubectl logs`",
                self.ns().unwrap_or("?")
            )
        }
    }

    /// Puts `node` in the held set or takes it out, and writes the set into the pod
    /// template of its StatefulSet (pods created from now on read it; with `OnDelete` the
    /// others are untouched). Returns whether the set changed.
    async fn set_held(&self, node: &str, hold: bool) -> Result<bool, RuntimeError> {
        let plan = self.plan()?;
        let mut held = self.held.lock().await;
        let mut next = held.clone();
        let changed = if hold {
            next.insert(node.to_string())
        } else {
            next.remove(node)
        };
        if !changed {
            return Ok(false);
        }
        let objects = objects::build(plan, &self.object_options(next.clone())?)?;
        let set = set_of(&objects.stateful_sets, node).ok_or_else(|| {
            RuntimeError::Failed(format!(
                "node `{node}` belongs to no StatefulSet of this run"
            ))
        })?;
        let name = set.metadata.name.clone().unwrap_or_default();
        let template = set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .ok_or_else(|| RuntimeError::Failed(format!("StatefulSet {name} has no spec")))?;
        let patch = serde_json::json!({ "spec": { "template": template } });
        Api::<StatefulSet>::namespaced(self.client.clone(), self.ns()?)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_failed(&format!("cannot update StatefulSet {name}"), &e))?;
        *held = next;
        Ok(true)
    }

    /// Deletes `node`'s pod (grace `grace` seconds; `None`: the pod's own) and returns the
    /// deleted pod's uid, `None` when there was none.
    async fn delete_pod(
        &self,
        node: &str,
        grace: Option<u32>,
    ) -> Result<Option<String>, RuntimeError> {
        self.invalidate().await;
        let Some(old) = self.pods().await?.get(node).and_then(uid) else {
            return Ok(None);
        };
        let mut params = DeleteParams::default();
        if let Some(g) = grace {
            params = params.grace_period(g);
        }
        // Only the pod that was looked at: a recreated one must not go too.
        params.preconditions = Some(kube::api::Preconditions {
            uid: Some(old.clone()),
            resource_version: None,
        });
        match self.pods_api()?.delete(node, &params).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(api_failed(&format!("cannot delete pod {node}"), &e)),
        }
        self.invalidate().await;
        Ok(Some(old))
    }

    /// Runs `node` in a fresh pod: out of the held set, its held pod replaced, then waited
    /// for until it runs and its status socket answers. Returns its endpoint.
    async fn release(&self, node: &str) -> Result<NodeEndpoint, RuntimeError> {
        // A node that is not held runs already (a start of a node that was never stopped):
        // its pod must not be replaced.
        let old = if self.set_held(node, false).await? {
            self.delete_pod(node, Some(0)).await?
        } else {
            None
        };
        let pod = self.wait_running(node, old.as_deref()).await?;
        let endpoint = self.endpoint_of(node, &pod)?;
        self.wait_answers(&endpoint).await?;
        Ok(endpoint)
    }

    fn endpoint_of(&self, node: &str, pod: &Pod) -> Result<NodeEndpoint, RuntimeError> {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .ok_or_else(|| RuntimeError::Failed(format!("pod {node} has no address")))?;
        let proxy = self.proxy.as_ref().ok_or_else(|| {
            RuntimeError::Failed("the kubernetes runtime was not prepared".into())
        })?;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        Ok(NodeEndpoint {
            name: node.to_string(),
            peer_addr: format!("{host}:{PEER_PORT}"),
            status_url: proxy.url_of(node),
        })
    }

    /// Polls until the node's status socket answers anything through the proxy.
    async fn wait_answers(&self, endpoint: &NodeEndpoint) -> Result<(), RuntimeError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_idle_timeout(crate::contract::status::CLIENT_IDLE)
            .build()
            .map_err(|e| RuntimeError::Failed(format!("cannot build an HTTP client: {e}")))?;
        let deadline = Instant::now() + POD_WITHIN;
        loop {
            let url = format!("{}/health", endpoint.status_url);
            if http.get(&url).send().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "node {}: its pod runs but its status socket did not answer within {}s; see \
                     `kubectl -n {} logs {}`",
                    endpoint.name,
                    POD_WITHIN.as_secs(),
                    self.ns().unwrap_or("?"),
                    endpoint.name
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// After `node` started anew: the partition in force cut again in it (its blocks lived
    /// in the process that ended).
    async fn recut(&self, node: &str) -> Result<(), RuntimeError> {
        let down = lock(&self.down).clone();
        self.links
            .recut_named(&|names| self.endpoints(names), &down)
            .await
            .map_err(|e| {
                RuntimeError::Failed(format!(
                    "{node} started again, but the partition in force could not be cut in it: {e}"
                ))
            })
    }
}

/// The StatefulSet whose pods include `node` (`<set>-<ordinal>`, ordinal below replicas).
fn set_of<'a>(sets: &'a [StatefulSet], node: &str) -> Option<&'a StatefulSet> {
    sets.iter().find(|set| {
        let (Some(name), Some(spec)) = (set.metadata.name.as_deref(), set.spec.as_ref()) else {
            return false;
        };
        node.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|ordinal| ordinal.parse::<i32>().ok())
            .is_some_and(|ordinal| ordinal < spec.replicas.unwrap_or(1))
    })
}

fn uid(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}

/// The reason a pod will never run, if it is one of [`HOPELESS`].
fn hopeless(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        HOPELESS.contains(&reason).then(|| {
            format!(
                "{reason}: {}",
                waiting.message.as_deref().unwrap_or("no message")
            )
        })
    })
}

/// A pod's state in a few words: why it is not scheduled, or its container's state.
fn describe(pod: &Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "no status yet".into();
    };
    if let Some(c) = status.conditions.as_ref().and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status != "True")
    }) {
        return format!(
            "not scheduled ({}: {})",
            c.reason.as_deref().unwrap_or("?"),
            c.message.as_deref().unwrap_or("")
        );
    }
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref());
    match container {
        Some(state) => {
            if let Some(w) = &state.waiting {
                format!(
                    "container waiting ({}: {})",
                    w.reason.as_deref().unwrap_or("?"),
                    w.message.as_deref().unwrap_or("")
                )
            } else if let Some(t) = &state.terminated {
                format!(
                    "container exited with {} ({})",
                    t.exit_code,
                    t.reason.as_deref().unwrap_or("?")
                )
            } else {
                "container running".into()
            }
        }
        None => status
            .message
            .clone()
            .unwrap_or_else(|| "no container yet".into()),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

/// An API error as a sentence, with what RBAC must allow when it is a refusal.
fn api_failed(what: &str, e: &kube::Error) -> RuntimeError {
    let rbac = if is_status(e, 403) {
        " (the kubeconfig's user lacks a permission: peerlab needs namespaces, statefulsets, \
         services, pods, pods/proxy and pods/log; see docs/kubernetes.md)"
    } else {
        ""
    };
    RuntimeError::Failed(format!("{what}: {e}{rbac}"))
}

/// The label selector of one run's namespaces, or of every run's.
fn run_selector(run: Option<&str>) -> String {
    match run {
        Some(run) => format!("{RUN_LABEL}={run}"),
        None => RUN_LABEL.to_string(),
    }
}

/// (namespace, run id) of every namespace labelled with the run (every run with `None`).
async fn run_namespaces(
    client: &Client,
    run: Option<&str>,
) -> Result<Vec<(String, String)>, RuntimeError> {
    let list = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&run_selector(run)))
        .await
        .map_err(|e| api_failed("cannot list namespaces", &e))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|ns| {
            let run = ns.metadata.labels.as_ref()?.get(RUN_LABEL)?.clone();
            Some((ns.metadata.name?, run))
        })
        .collect())
}

/// Saves the output of every pod of `namespace` to `<dir>/<pod>.log`, each within
/// [`LOGS_WITHIN`]; failures are warnings (the removal goes on).
async fn save_logs(client: &Client, namespace: &str, dir: &Path) {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(pods) = api.list(&ListParams::default()).await else {
        return;
    };
    let names: Vec<String> = pods
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    if names.is_empty() {
        return;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!("cannot create {}: {e}", dir.display());
        return;
    }
    let api = &api;
    futures::stream::iter(names)
        .map(|pod| async move {
            let path = dir.join(format!("{pod}.log"));
            match tokio::time::timeout(LOGS_WITHIN, api.logs(&pod, &LogParams::default())).await {
                Ok(Ok(text)) => {
                    if let Err(e) = std::fs::write(&path, text) {
                        tracing::warn!("cannot write {}: {e}", path.display());
                    }
                }
                Ok(Err(e)) => tracing::warn!(pod = %pod, "could not save logs: {e}"),
                Err(_) => tracing::warn!(pod = %pod, "no logs within {LOGS_WITHIN:?}"),
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

/// Deletes the namespaces (their pods first: foreground) and waits until every one is
/// gone, saying how it goes every few seconds. Pods count as containers in the report and
/// namespaces as networks (the run's network scope).
async fn remove_namespaces(
    client: &Client,
    namespaces: &[String],
    logs_dir: Option<&Path>,
) -> Result<TeardownReport, RuntimeError> {
    let mut report = TeardownReport::default();
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        if let Some(dir) = logs_dir {
            save_logs(client, ns, dir).await;
        }
        let pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        match api.delete(ns, &DeleteParams::foreground()).await {
            Ok(_) => {
                report.containers_removed += pods;
                report.networks_removed += 1;
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => report.leftovers.push(format!("namespace {ns}: {e}")),
        }
        // The pods would each get their grace period (a run is over: no leave to flood),
        // and a terminating namespace takes no new ones, so nothing recreates them.
        let _ = Api::<Pod>::namespaced(client.clone(), ns)
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default(),
            )
            .await;
    }
    let started = Instant::now();
    let mut told = Instant::now();
    let mut left: Vec<String> = namespaces.to_vec();
    while !left.is_empty() {
        let mut still = Vec::new();
        for ns in &left {
            match api.get_opt(ns).await {
                Ok(None) => {}
                Ok(Some(_)) => still.push(ns.clone()),
                Err(e) => {
                    report.leftovers.push(format!("namespace {ns}: {e}"));
                }
            }
        }
        left = still;
        if left.is_empty() {
            break;
        }
        if started.elapsed() >= NAMESPACE_WITHIN {
            report.leftovers.extend(left.iter().map(|ns| {
                format!(
                    "namespace {ns}: still terminating after {}s (`kubectl get ns {ns} -o yaml` \
                     says what holds it; `peerlab down` again later)",
                    NAMESPACE_WITHIN.as_secs()
                )
            }));
            break;
        }
        if told.elapsed() >= Duration::from_secs(5) {
            tracing::info!(
                "waiting for namespace {} to go ({}s)",
                left.join(", "),
                started.elapsed().as_secs()
            );
            told = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(report)
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Kill, stop and start through the API; partitions and shaping through the nodes; no
    /// pause; one flat pod network.
    fn capabilities(&self) -> Capabilities {
        capabilities()
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
        let namespace = self.namespace_of(plan);
        if !objects::dns_1123(&namespace) {
            return refuse(format!(
                "namespace `{namespace}` is not a DNS label (lower-case letters, digits and `-`, \
                 at most {MAX_NAME}): shorten the topology's name or give --namespace"
            ));
        }
        for node in &plan.nodes {
            if !objects::dns_1123(&node.name) {
                return refuse(format!(
                    "node name `{}` is not a DNS label (lower-case letters, digits and `-`, at \
                     most {MAX_NAME}): pods are named after nodes; rename the group",
                    node.name
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
        }
        // One flat pod network: nodes whose networks do not meet cannot be kept apart.
        for (i, a) in plan.nodes.iter().enumerate() {
            for b in &plan.nodes[i + 1..] {
                let share = a.networks.is_empty()
                    || b.networks.is_empty()
                    || a.networks.iter().any(|n| b.networks.contains(n));
                if !share {
                    return refuse(format!(
                        "{} and {} share no network, and a cluster's pods all sit on one pod \
                         network; use --runtime docker for isolated networks",
                        a.name, b.name
                    ));
                }
            }
        }
        Ok(())
    }

    async fn prepare(&mut self, plan: &RunPlan) -> Result<(), RuntimeError> {
        self.check_support(plan)?;
        // Everything that can refuse does so before anything is created.
        capacity::check(&self.client, plan.nodes.len()).await?;
        capacity::check_pace(&self.client, plan.nodes.len()).await?;
        self.check_hosts(plan).await?;
        self.ensure_image(plan).await?;
        let namespace = self.namespace_of(plan);
        let held: BTreeSet<String> = plan
            .nodes
            .iter()
            .filter(|n| {
                self.held_at_start.contains(&n.name)
                    || (!n.genesis && n.start_after >= DELAY_RESOLUTION)
            })
            .map(|n| n.name.clone())
            .collect();
        let options = objects::ObjectOptions {
            namespace: namespace.clone(),
            image: plan.image.clone(),
            pull_policy: objects::DEFAULT_PULL_POLICY.to_string(),
            held: held.clone(),
        };
        let objects = objects::build(plan, &options)?;
        std::fs::create_dir_all(plan.run_dir.join("logs"))?;
        self.create_namespace(objects.namespace.clone(), &namespace)
            .await?;
        // Before the StatefulSets: a pod that starts without it has `/admin/*` off.
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), &namespace)
            .create(
                &PostParams::default(),
                &objects::admin_secret(&namespace, &plan.admin_token),
            )
            .await
            .map_err(|e| {
                api_failed(
                    &format!("cannot create the admin Secret in {namespace}"),
                    &e,
                )
            })?;
        if let Some(key) = &plan.network_key {
            // Before the StatefulSets too: their pods do not start without it.
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), &namespace)
                .create(
                    &PostParams::default(),
                    &objects::network_key_secret(&namespace, key),
                )
                .await
                .map_err(|e| {
                    api_failed(
                        &format!("cannot create the network key Secret in {namespace}"),
                        &e,
                    )
                })?;
        }
        self.plan = Some(plan.clone());
        self.links.use_token(plan.admin_token.clone());
        *self.held.get_mut() = held;
        self.proxy = Some(PodProxy::start(self.client.clone(), namespace.clone()).await?);
        let services: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
        for service in &objects.services {
            let name = service.metadata.name.clone().unwrap_or_default();
            services
                .create(&PostParams::default(), service)
                .await
                .map_err(|e| {
                    api_failed(&format!("cannot create Service {name} in {namespace}"), &e)
                })?;
        }
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &namespace);
        for set in &objects.stateful_sets {
            let name = set.metadata.name.clone().unwrap_or_default();
            sets.create(&PostParams::default(), set)
                .await
                .map_err(|e| {
                    api_failed(
                        &format!("cannot create StatefulSet {name} in {namespace}"),
                        &e,
                    )
                })?;
        }
        tracing::info!(
            cluster = %self.url,
            namespace = %namespace,
            "created {} StatefulSets",
            objects.stateful_sets.len()
        );
        Ok(())
    }

    async fn start(&self, node: &NodeSpec) -> Result<NodeEndpoint, RuntimeError> {
        self.plan()?;
        let held = self.held.lock().await.contains(&node.name);
        let endpoint = if held {
            self.release(&node.name).await?
        } else {
            let pod = self.wait_running(&node.name, None).await?;
            self.endpoint_of(&node.name, &pod)?
        };
        lock(&self.endpoints).insert(node.name.clone(), endpoint.clone());
        Ok(endpoint)
    }

    async fn act(&self, node: &str, action: NodeAction) -> Result<(), RuntimeError> {
        self.plan()?;
        if !lock(&self.endpoints).contains_key(node) {
            return Err(RuntimeError::Failed(format!(
                "node `{node}` was not started in this run"
            )));
        }
        match action {
            NodeAction::Kill | NodeAction::Stop => {
                self.set_held(node, true).await?;
                lock(&self.down).insert(node.to_string());
                let grace = (action == NodeAction::Kill).then_some(0);
                if let Some(old) = self.delete_pod(node, grace).await? {
                    // A stopped node has its grace period to flood its leave.
                    self.wait_gone(node, &old, Duration::from_secs(120)).await?;
                }
                Ok(())
            }
            NodeAction::Start => {
                let endpoint = self.release(node).await?;
                lock(&self.endpoints).insert(node.to_string(), endpoint);
                lock(&self.down).remove(node);
                self.recut(node).await
            }
            NodeAction::Pause | NodeAction::Resume => Err(RuntimeError::Unsupported {
                runtime: NAME,
                reason: "pods cannot be paused through the Kubernetes API; use kill or stop".into(),
            }),
        }
    }

    fn endpoint(&self, node: &str) -> Option<NodeEndpoint> {
        lock(&self.endpoints).get(node).cloned()
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
        let Some(namespace) = self.namespace.clone() else {
            return Ok(TeardownReport::default());
        };
        let logs = self.plan.as_ref().map(|p| p.run_dir.join("logs"));
        let report = remove_namespaces(
            &self.client,
            std::slice::from_ref(&namespace),
            logs.as_deref(),
        )
        .await?;
        // The nodes and their faults went with the namespace.
        lock(&self.endpoints).clear();
        self.proxy = None;
        if report.leftovers.is_empty() {
            self.namespace = None;
        }
        Ok(report)
    }

    async fn list_runs(&self) -> Result<Vec<RunListing>, RuntimeError> {
        let mut runs: BTreeMap<String, usize> = BTreeMap::new();
        for (ns, run) in run_namespaces(&self.client, None).await? {
            let pods = Api::<Pod>::namespaced(self.client.clone(), &ns)
                .list(&ListParams::default().labels(RUN_LABEL))
                .await
                .map(|l| l.items.len())
                .unwrap_or(0);
            *runs.entry(run).or_default() += pods;
        }
        Ok(RunListing::from_counts(NAME, runs))
    }

    /// Deletes the namespaces labelled with the run, saving each pod's output to
    /// `<logs_dir>/<pod>.log` first when asked, and waits until they are gone.
    async fn remove_run(
        &self,
        run: Option<&str>,
        logs_dir: Option<&Path>,
    ) -> Result<TeardownReport, RuntimeError> {
        let namespaces: Vec<String> = run_namespaces(&self.client, run)
            .await?
            .into_iter()
            .map(|(ns, _)| ns)
            .collect();
        remove_namespaces(&self.client, &namespaces, logs_dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn set(name: &str, replicas: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }

    #[test]
    fn a_node_belongs_to_the_stateful_set_named_by_its_prefix() {
        let sets = [set("genesis", 1), set("peers", 3), set("peers-extra", 2)];
        let name = |node: &str| set_of(&sets, node).and_then(|s| s.metadata.name.clone());
        assert_eq!(name("genesis-0").as_deref(), Some("genesis"));
        assert_eq!(name("peers-2").as_deref(), Some("peers"));
        assert_eq!(name("peers-extra-1").as_deref(), Some("peers-extra"));
        assert_eq!(name("peers-3"), None);
        assert_eq!(name("other-0"), None);
    }

    #[test]
    fn pods_that_cannot_run_are_told_at_once() {
        let waiting = |reason: &str| Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some("details".into()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            hopeless(&waiting("ErrImageNeverPull")).as_deref(),
            Some("ErrImageNeverPull: details")
        );
        assert_eq!(hopeless(&waiting("ContainerCreating")), None);
        assert!(describe(&waiting("ContainerCreating")).contains("ContainerCreating"));
    }

    #[test]
    fn pause_is_refused_and_the_network_is_flat() {
        let caps = capabilities();
        assert!(caps.kill && caps.stop && caps.start);
        assert!(caps.partition && caps.one_way_partition && caps.shape);
        assert!(!caps.supports(NodeAction::Pause));
        assert!(!caps.isolated_networks);
    }

    #[test]
    fn names_must_be_dns_labels() {
        assert!(objects::dns_1123("peerlab-quickstart-0a1b2c"));
        assert!(!objects::dns_1123("Peers"));
        assert!(!objects::dns_1123(&"a".repeat(64)));
        assert_eq!(run_selector(Some("q-1")), "peerlab.run=q-1");
        assert_eq!(run_selector(None), "peerlab.run");
    }
}
