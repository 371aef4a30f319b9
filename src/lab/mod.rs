//! The run lifecycle as a library: start a topology, wait until it formed, look at and
//! hurt its nodes, check it, and tear it down, from a test or a program. `peerlab run` and
//! `peerlab up` are thin commands over this API.
//!
//! ```no_run
//! use std::time::Duration;
//! use peerlab::Lab;
//!
//! # async fn example() -> Result<(), peerlab::lab::LabError> {
//! let lab = Lab::from_file("topologies/quickstart.yaml")?.start().await?;
//! let formed = lab.wait_formed(Duration::from_secs(30)).await?;
//! assert!(formed.formed(), "{:?}", formed.failures());
//!
//! let id = lab.node("peers-0")?.broadcast("hello", "from a test").await?;
//! let delivered = lab.wait_delivered(&[id], Duration::from_secs(5)).await?;
//! assert!(delivered.complete());
//!
//! lab.kill("peers-1").await?;
//! let report = lab.shutdown().await?;
//! assert!(report.leftovers.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # Lifecycle
//!
//! [`Lab::from_file`], [`Lab::from_topology`] or [`Lab::builder`] describe the run;
//! [`LabBuilder`] picks the runtime, seed, what to keep and where runs live;
//! [`LabBuilder::start`] prepares the runtime and starts the nodes (genesis first, then the
//! peers concurrently at their planned offsets). A started [`Lab`] offers node handles
//! ([`Lab::node`]), waits ([`Lab::wait_formed`], [`Lab::wait_delivered`],
//! [`Lab::wait_until`]), faults ([`Lab::kill`], [`Lab::partition`], [`Lab::shape`], ...)
//! and the topology's checks ([`Lab::check`]), which give a [`LabReport`] with the JSON,
//! JUnit and graph writers.
//!
//! # Teardown
//!
//! [`Lab::shutdown`] tears down and returns what it removed. A lab dropped without it (the
//! test returned early, or panicked) tears down in `Drop`: on a thread of its own, with its
//! own tokio runtime and a fresh connection, it removes every process or container
//! carrying the run's id, so it works even while the test's runtime is blocked or gone.
//! With [`Keep::OnFailure`] a lab whose checks failed is left running for inspection, and
//! says how to take it down (`peerlab down RUN`).
//!
//! # A network peerlab did not start
//!
//! [`NetworkCheck`] (and its shorthand [`check_endpoints`]) runs the same formation and
//! broadcast checks over a network that is already running, found by its status
//! endpoints, a DNS name or a compose project: what `peerlab check` does.
//!
//! See `docs/library.md` for a complete `#[tokio::test]`.

#![warn(missing_docs)]

mod check;
mod error;
mod node;
mod report;
mod runtimes;
mod topology;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::contract::LinkShape;
pub use crate::contract::{DeliveredMessage, NodeStatus};
pub use crate::orchestrator::observer::{Detail, Formation, Observer, Waited};
pub use crate::orchestrator::{CheckResult, FormationExpectation, NodeObservation, Report};
pub use crate::runtime::kubernetes::KubeOptions;
pub use crate::runtime::{Capabilities, NodeEndpoint, RuntimeError, TeardownReport};
pub use crate::topology::{NetworkKeyMode, NodeSettings, Topology};
pub use check::{
    COMPOSE_PROJECT_LABEL, CONTAINER_STATUS_PORT, DEFAULT_DELIVER_WITHIN, DEFAULT_WITHIN,
    NetworkCheck, NodeSource, check_endpoints,
};
pub use error::LabError;
pub use node::NodeHandle;
pub use report::{GraphFormat, LabReport, graph_format};
pub use runtimes::{BIN_ENV, RuntimeKind, every_runtime, every_runtime_with, node_binary};
pub use topology::{GroupSpec, TopologyBuilder};

use crate::orchestrator::plan;
use crate::orchestrator::progress::Progress;
use crate::orchestrator::run::{self, Stage};
use crate::orchestrator::scenario;
use crate::orchestrator::session::Session;
use crate::topology::{Fault, ResolvedStep};
use runtimes::Chosen;

/// Where runs keep logs, state and reports unless told otherwise (as the CLI).
pub const DEFAULT_RUNS_DIR: &str = ".peerlab/runs";

/// What happens to the nodes when the lab is done with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Keep {
    /// Tear down on [`Lab::shutdown`] or drop, whatever happened.
    #[default]
    Never,
    /// Leave the nodes running when [`Lab::check`] fails, and print how to take them down;
    /// tear down otherwise.
    OnFailure,
    /// Never tear down on drop: the nodes outlive the program until `peerlab down RUN`
    /// (what `peerlab up` and `peerlab run --keep` do). [`Lab::shutdown`] still tears down.
    Always,
}

/// A run of a topology: its nodes, faults, checks and teardown. The associated functions
/// [`Lab::from_file`], [`Lab::from_topology`] and [`Lab::builder`] are where one begins;
/// see the module docs.
pub struct Lab {
    session: Session,
    /// The topology's scenario resolved for the run's seed (in every report).
    timeline: Vec<ResolvedStep>,
    /// Whether [`Lab::check`] plays `timeline`.
    play_scenario: bool,
    chosen: Chosen,
    keep: Keep,
    note: Option<String>,
    show_progress: bool,
    progress: Option<Progress>,
    /// The initial nodes were started.
    started: bool,
    /// Torn down, or left running on purpose: `Drop` has nothing to do.
    done: bool,
    /// A check failed under [`Keep::OnFailure`]: `Drop` leaves the nodes running.
    kept: bool,
    /// When [`Lab::wait_formed`] first saw the topology's formation checks hold, counted
    /// from the start of the run: what [`Lab::check`] judges the formation deadline by.
    formed_at: std::sync::Mutex<Option<Duration>>,
}

impl Lab {
    /// A lab of the topology file at `path`, validated now (nothing starts yet).
    pub fn from_file(path: impl AsRef<Path>) -> Result<LabBuilder, LabError> {
        Ok(LabBuilder::new(crate::topology::load(path.as_ref())?))
    }

    /// A lab of an already loaded (or built) topology.
    pub fn from_topology(topology: Topology) -> LabBuilder {
        LabBuilder::new(topology)
    }

    /// A topology written in code, named `name`; finish it with
    /// [`TopologyBuilder::into_lab`].
    pub fn builder(name: impl Into<String>) -> TopologyBuilder {
        TopologyBuilder::new(name)
    }
}

impl TopologyBuilder {
    /// Validates the topology and makes a lab of it.
    pub fn into_lab(self) -> Result<LabBuilder, LabError> {
        Ok(LabBuilder::new(self.build()?))
    }
}

/// How a lab runs: runtime, seed, what to keep, where runs live. Made by the [`Lab`]
/// entry points; [`LabBuilder::start`] starts it.
#[derive(Debug, Clone)]
pub struct LabBuilder {
    topology: Topology,
    runtime: RuntimeKind,
    seed: Option<u64>,
    keep: Keep,
    runs_dir: PathBuf,
    node_binary: Option<PathBuf>,
    /// [`LabBuilder::image`] named the topology's image: use it as it is.
    prebuilt_image: bool,
    progress: bool,
    scenario: bool,
    kube: KubeOptions,
}

impl LabBuilder {
    fn new(topology: Topology) -> Self {
        LabBuilder {
            topology,
            runtime: RuntimeKind::default(),
            seed: None,
            keep: Keep::default(),
            runs_dir: PathBuf::from(DEFAULT_RUNS_DIR),
            node_binary: None,
            prebuilt_image: false,
            progress: false,
            scenario: true,
            kube: KubeOptions::default(),
        }
    }

    /// Where the nodes live (default: [`RuntimeKind::Local`]).
    pub fn runtime(mut self, runtime: RuntimeKind) -> Self {
        self.runtime = runtime;
        self
    }

    /// Overrides the topology's seed (node randomness, broadcast senders, scenario choices).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// What happens to the nodes when the lab is done (default: [`Keep::Never`]).
    pub fn keep(mut self, keep: Keep) -> Self {
        self.keep = keep;
        self
    }

    /// Shorthand for [`Keep::OnFailure`]: leave the nodes running when a check fails.
    pub fn keep_on_failure(self) -> Self {
        self.keep(Keep::OnFailure)
    }

    /// Where the run keeps its logs, state and reports (default: `.peerlab/runs`, relative
    /// to the working directory); the run's own directory is `<runs_dir>/<run id>`.
    pub fn runs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runs_dir = dir.into();
        self
    }

    /// The `peerlab` executable local nodes run (default: see [`node_binary`]), and the one
    /// a Docker lab builds its node image from when the image is missing or was built from
    /// another binary (default: the running executable, which only the `peerlab` CLI can
    /// use). A test passes `env!("CARGO_BIN_EXE_peerlab")`; it must be the static build
    /// (this repository's `.cargo/config.toml`), since the image has nothing else in it.
    pub fn node_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.node_binary = Some(path.into());
        self
    }

    /// Docker labs run this image as it is, made beforehand (`peerlab image build --tag
    /// TAG`, or any image whose entrypoint is `peerlab node`): never built, never pulled, so
    /// the start fails when it is missing. Replaces the topology's `image:`; local labs
    /// ignore it. What a program that is not `peerlab` passes instead of
    /// [`LabBuilder::node_binary`] to skip the image build.
    pub fn image(mut self, tag: impl Into<String>) -> Self {
        self.topology.image = tag.into();
        self.prebuilt_image = true;
        self
    }

    /// Where a [`RuntimeKind::Kubernetes`] lab finds its cluster (kubeconfig, context) and
    /// which namespace it runs in (default: the current kubeconfig and context, namespace
    /// `peerlab-<run id>`); other runtimes ignore it.
    pub fn kubernetes(mut self, options: KubeOptions) -> Self {
        self.kube = options;
        self
    }

    /// Show progress as `peerlab run` does (bars on a terminal, lines otherwise). Off by
    /// default: a test's output stays the test harness's; progress goes to `tracing`.
    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// Whether [`Lab::check`] plays the topology's scenario (default: yes). Without it the
    /// runtime is not asked whether it can play it either (`peerlab up` does this); reports
    /// still list the resolved scenario.
    pub fn scenario(mut self, play: bool) -> Self {
        self.scenario = play;
        self
    }

    /// The topology this lab will run.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Connects the runtime and plans the run without starting anything: the runtime has
    /// refused what it cannot honour, and the run has its id. [`Lab::start_nodes`] starts
    /// it; dropping it before then leaves nothing behind.
    pub async fn plan(self) -> Result<Lab, LabError> {
        let seed = self.seed.unwrap_or(self.topology.seed);
        if self.topology.image.trim().is_empty() {
            return Err(LabError::State(
                "LabBuilder::image was given an empty tag; name an image such as `peerlab:0.1.0`"
                    .into(),
            ));
        }
        let image = runtimes::ImageSource {
            tag: &self.topology.image,
            prebuilt: self.prebuilt_image,
            binary: self.node_binary.as_deref(),
        };
        // Nodes of `start: manual` groups wait for a `join`: a runtime that creates every
        // node's pod up front (Kubernetes) creates theirs held.
        let held_at_start = self
            .topology
            .groups
            .iter()
            .filter(|g| g.manual)
            .flat_map(|g| (0..g.count).map(|i| crate::topology::node_name(&g.name, i)))
            .collect();
        let kube = runtimes::KubeSetup {
            options: self.kube.clone(),
            held_at_start,
        };
        // Planned before a runtime is chosen: a missing `network_key: from-env` key is bad
        // input, refused before an engine is contacted or an image built.
        let detach = self.keep != Keep::Never;
        let run_id = plan::fresh_run_id(&self.topology);
        let plan = plan::build(&self.topology, seed, &run_id, &self.runs_dir, detach)
            .map_err(LabError::Input)?;
        let (runtime, chosen, note) = runtimes::select(self.runtime, image, kube).await?;
        runtime.check_support(&plan)?;
        let timeline = run::resolve_timeline(&self.topology, seed, runtime.name())?;
        let session = Session::new(runtime, plan, self.topology, seed)?;
        Ok(Lab {
            session,
            timeline,
            play_scenario: self.scenario,
            chosen,
            keep: self.keep,
            note,
            show_progress: self.progress,
            progress: None,
            started: false,
            done: false,
            kept: false,
            formed_at: std::sync::Mutex::new(None),
        })
    }

    /// Plans the run and starts its nodes (see [`Lab::start_nodes`]). When a node fails to
    /// start, everything started is torn down before the error is returned.
    pub async fn start(self) -> Result<Lab, LabError> {
        let mut lab = self.plan().await?;
        if let Err(e) = lab.start_nodes().await {
            let _ = lab.teardown().await;
            return Err(e);
        }
        Ok(lab)
    }
}

/// Messages seen by [`Lab::wait_delivered`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The broadcast ids waited for.
    pub ids: Vec<String>,
    /// The live nodes asked.
    pub nodes: Vec<String>,
    /// Each answering node's delivered messages.
    pub delivered: BTreeMap<String, Vec<DeliveredMessage>>,
}

impl Delivery {
    /// Live nodes that have not delivered every id (or did not answer).
    pub fn missing(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| {
                self.delivered
                    .get(*n)
                    .is_none_or(|msgs| !self.ids.iter().all(|id| msgs.iter().any(|m| &m.id == id)))
            })
            .cloned()
            .collect()
    }

    /// Every live node delivered every id.
    pub fn complete(&self) -> bool {
        self.missing().is_empty()
    }
}

impl Lab {
    /// The run's id (`<topology>-<hex>`), which labels every process and container of it.
    pub fn run_id(&self) -> &str {
        &self.session.plan().run_id
    }

    /// The run's directory: node logs in `logs/`, runtime state, `report.json`.
    pub fn run_dir(&self) -> &Path {
        &self.session.plan().run_dir
    }

    /// The runtime's name (`local`, `docker`).
    pub fn runtime_name(&self) -> &'static str {
        self.session.runtime().name()
    }

    /// What the runtime can do to nodes and links; a fault outside these is refused with
    /// [`LabError::Runtime`] holding [`crate::runtime::RuntimeError::Unsupported`].
    pub fn capabilities(&self) -> Capabilities {
        self.session.runtime().capabilities()
    }

    /// What [`RuntimeKind::Auto`] chose and why; `None` when the runtime was named.
    pub fn runtime_note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.session.seed()
    }

    /// The topology being run.
    pub fn topology(&self) -> &Topology {
        self.session.topology()
    }

    /// Every node of the plan, in start order (a `start: manual` group's too).
    pub fn node_names(&self) -> Vec<String> {
        self.session
            .plan()
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// Started nodes that are not killed, stopped or paused, in plan order: what
    /// [`Lab::wait_formed`] and the checks observe.
    pub fn live_nodes(&self) -> Vec<String> {
        self.session.live_nodes()
    }

    /// Where every started node is reached, in the order they started.
    pub fn endpoints(&self) -> Vec<NodeEndpoint> {
        self.session.observer().endpoints()
    }

    /// The poller of this run's status sockets, for waits the lab does not offer.
    pub fn observer(&self) -> &Observer {
        self.session.observer()
    }

    /// Prepares the runtime and starts the nodes that start with the run (all but those of
    /// `start: manual` groups): genesis nodes one by one, then the peers concurrently at
    /// their planned offsets. Returns once every node is up (its sockets bound), not once
    /// the network formed: see [`Lab::wait_formed`].
    pub async fn start_nodes(&mut self) -> Result<(), LabError> {
        if self.started {
            return Err(LabError::State(format!(
                "the nodes of {} were already started",
                self.run_id()
            )));
        }
        self.session.prepare().await?;
        if self.session.plan().detach {
            self.keep_secrets()?;
        }
        if self.play_scenario && !self.timeline.is_empty() {
            scenario::check_support(self.session.runtime(), &self.timeline).await?;
        }
        let progress = self.progress.insert(if self.show_progress {
            Progress::new()
        } else {
            Progress::quiet()
        });
        self.started = true;
        run::start(&self.session, progress).await?;
        Ok(())
    }

    /// Nodes that outlive this process (`peerlab up`, `run --keep`) keep their admin API:
    /// the run's token is written to `<run dir>/admin-token`, readable by this user only
    /// (mode 0600), for `curl -H "Authorization: Bearer $(cat .../admin-token)"`. A run with
    /// a network key keeps it the same way in `<run dir>/network-key`, so that a node
    /// started by hand (`PEERLAB_NETWORK_KEY="$(cat .../network-key)" peerlab node ..`)
    /// can join it.
    fn keep_secrets(&self) -> Result<(), LabError> {
        let plan = self.session.plan();
        self.keep_secret("admin-token", "admin token", plan.admin_token.expose())?;
        if let Some(key) = &plan.network_key {
            self.keep_secret("network-key", "network key", key.expose())?;
        }
        Ok(())
    }

    fn keep_secret(&self, file: &str, what: &str, secret: &str) -> Result<(), LabError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.run_dir();
        let path = dir.join(file);
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(file, "{secret}")
        });
        written.map_err(|e| {
            LabError::State(format!(
                "cannot write the run's {what} to {}: {e}",
                path.display()
            ))
        })
    }

    /// A handle on a started node.
    pub fn node(&self, name: &str) -> Result<NodeHandle, LabError> {
        self.known(name)?;
        let endpoint = self.session.observer().endpoint(name).ok_or_else(|| {
            LabError::State(format!(
                "{name} has not been started (a node of a `start: manual` group starts with Lab::join)"
            ))
        })?;
        Ok(NodeHandle::new(
            endpoint,
            self.session.observer().http().clone(),
            Some(self.session.plan().admin_token.clone()),
        ))
    }

    /// Handles on every started node, in the order they started.
    pub fn nodes(&self) -> Vec<NodeHandle> {
        let http = self.session.observer().http().clone();
        let token = &self.session.plan().admin_token;
        self.endpoints()
            .into_iter()
            .map(|ep| NodeHandle::new(ep, http.clone(), Some(token.clone())))
            .collect()
    }

    /// Polls the live nodes until the topology's formation checks hold over them, or
    /// `within` passes. The checks come back either way: see [`Formation::formed`] and
    /// [`Formation::failures`]. After a kill, this is how a test waits for the failure to
    /// be detected: the live nodes' member lists hold exactly the live nodes again.
    pub async fn wait_formed(&self, within: Duration) -> Result<Formation, LabError> {
        let expectation = self.topology().checks.formation.expectation();
        let formation = self.wait_for(&expectation, within).await?;
        if let Some(at) = formation.formed_at {
            let mut first = self.formed_at.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(at);
        }
        Ok(formation)
    }

    /// Like [`Lab::wait_formed`] with other expectations (two components during a
    /// partition, say, with `component_membership`).
    pub async fn wait_for(
        &self,
        expectation: &FormationExpectation,
        within: Duration,
    ) -> Result<Formation, LabError> {
        self.require_started()?;
        let live = self.live_nodes();
        Ok(self
            .session
            .observer()
            .wait_formed(&live, expectation, Instant::now() + within, &mut |_, _| {})
            .await)
    }

    /// Polls the live nodes' full status until `check` says the condition holds (returns
    /// `None`) or `within` passes; `check` otherwise says why not, which the result keeps
    /// for the test's failure message. For conditions of a test's own:
    ///
    /// ```no_run
    /// # async fn f(lab: &peerlab::Lab) -> Result<(), peerlab::lab::LabError> {
    /// # use std::time::Duration;
    /// let waited = lab
    ///     .wait_until(Duration::from_secs(10), |nodes| {
    ///         let lonely = nodes.iter().filter(|o| {
    ///             o.status.as_ref().is_none_or(|s| s.neighbours.len() < 2)
    ///         });
    ///         let lonely: Vec<&str> = lonely.map(|o| o.name.as_str()).collect();
    ///         (!lonely.is_empty()).then(|| format!("fewer than 2 neighbours: {lonely:?}"))
    ///     })
    ///     .await?;
    /// assert!(waited.held(), "{:?}", waited.problem);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_until<F>(&self, within: Duration, check: F) -> Result<Waited, LabError>
    where
        F: FnMut(&[NodeObservation]) -> Option<String> + Send,
    {
        self.require_started()?;
        let live = self.live_nodes();
        Ok(self
            .session
            .observer()
            .wait_until(&live, Detail::Listed, Instant::now() + within, check)
            .await)
    }

    /// Broadcasts `message` from the named node; returns its id.
    pub async fn broadcast(&self, from: &str, message: &str) -> Result<String, LabError> {
        self.node(from)?.broadcast("#BROADCAST", message).await
    }

    /// Polls the live nodes' `/messages` until each delivered every one of `ids`, or
    /// `within` passes; [`Delivery::complete`] says which.
    pub async fn wait_delivered(
        &self,
        ids: &[String],
        within: Duration,
    ) -> Result<Delivery, LabError> {
        self.require_started()?;
        let nodes = self.live_nodes();
        let delivered = self
            .session
            .observer()
            .wait_delivered(ids, &nodes, Instant::now() + within, &mut |_, _| {})
            .await;
        Ok(Delivery {
            ids: ids.to_vec(),
            nodes,
            delivered,
        })
    }

    /// SIGKILL / `docker kill`: the node vanishes without a word.
    pub async fn kill(&self, node: &str) -> Result<(), LabError> {
        self.fault(node, Fault::Kill).await
    }

    /// Graceful stop (SIGTERM / `docker stop`): the node tells the network it leaves.
    pub async fn stop(&self, node: &str) -> Result<(), LabError> {
        self.fault(node, Fault::Stop).await
    }

    /// Starts a killed or stopped node again, on the same address.
    pub async fn start(&self, node: &str) -> Result<(), LabError> {
        self.fault(node, Fault::Start).await
    }

    /// Stops the node gracefully and starts it again.
    pub async fn restart(&self, node: &str) -> Result<(), LabError> {
        self.fault(node, Fault::Restart).await
    }

    /// Freezes the node (SIGSTOP / `docker pause`): its sockets stay open but it answers
    /// nothing, the hardest failure to detect.
    pub async fn pause(&self, node: &str) -> Result<(), LabError> {
        self.fault(node, Fault::Pause).await
    }

    /// Thaws a paused node.
    pub async fn resume(&self, node: &str) -> Result<(), LabError> {
        self.fault(node, Fault::Resume).await
    }

    /// Starts a node that did not start with the run (one of a `start: manual` group).
    pub async fn join(&self, node: &str) -> Result<NodeHandle, LabError> {
        self.require_started()?;
        self.known(node)?;
        let endpoint = self.session.join(node).await?;
        Ok(NodeHandle::new(
            endpoint,
            self.session.observer().http().clone(),
            Some(self.session.plan().admin_token.clone()),
        ))
    }

    /// Cuts every link between nodes of different sides, both ways:
    /// `lab.partition([vec!["genesis-0", "peers-0"], vec!["peers-1", "peers-2"]])`.
    pub async fn partition(
        &self,
        sides: impl IntoIterator<Item = impl IntoIterator<Item = impl Into<String>>>,
    ) -> Result<(), LabError> {
        self.cut(names_of_sides(sides), false).await
    }

    /// Drops traffic from the nodes of `from` to those of `to` only; the other direction
    /// still flows.
    pub async fn partition_one_way(
        &self,
        from: impl IntoIterator<Item = impl Into<String>>,
        to: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<(), LabError> {
        self.cut(vec![names(from), names(to)], true).await
    }

    /// Cuts every started node placed on `host` (a host of the topology's `hosts:`) off
    /// from every other started node, both ways, as if the host's network went down; the
    /// links between hosts stay shaped. [`Lab::heal`] brings the host back.
    pub async fn cut_host(&self, host: &str) -> Result<(), LabError> {
        self.require_started()?;
        let hosts: Vec<&str> = self
            .session
            .plan()
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        if !hosts.contains(&host) {
            return Err(LabError::State(format!(
                "no host named {host} in run {} (its hosts: {})",
                self.run_id(),
                if hosts.is_empty() {
                    "none; declare them under `hosts:`".to_string()
                } else {
                    hosts.join(", ")
                }
            )));
        }
        let started: Vec<String> = self.endpoints().into_iter().map(|e| e.name).collect();
        let on = self.nodes_on(host);
        let (inside, outside): (Vec<String>, Vec<String>) = self
            .node_names()
            .into_iter()
            .filter(|n| started.contains(n))
            .partition(|n| on.contains(n));
        if inside.is_empty() || outside.is_empty() {
            return Err(LabError::State(format!(
                "cutting host {host} off needs started nodes on it and off it; on it: {}, off it: {}",
                inside.len(),
                outside.len()
            )));
        }
        self.cut(vec![inside, outside], false).await
    }

    /// Names of the nodes placed on `host`, in plan order (empty for an unknown host, or
    /// a topology without `hosts:`).
    pub fn nodes_on(&self, host: &str) -> Vec<String> {
        self.session
            .plan()
            .nodes
            .iter()
            .filter(|n| n.host.as_deref() == Some(host))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Undoes every partition.
    pub async fn heal(&self) -> Result<(), LabError> {
        self.require_started()?;
        Ok(self.session.heal().await?)
    }

    /// Delays, drops or throttles every link of `nodes`.
    pub async fn shape(
        &self,
        nodes: impl IntoIterator<Item = impl Into<String>>,
        shape: LinkShape,
    ) -> Result<(), LabError> {
        self.shape_links(names(nodes), None, shape).await
    }

    /// Delays, drops or throttles the links of `nodes` towards `peers` only.
    pub async fn shape_towards(
        &self,
        nodes: impl IntoIterator<Item = impl Into<String>>,
        peers: impl IntoIterator<Item = impl Into<String>>,
        shape: LinkShape,
    ) -> Result<(), LabError> {
        self.shape_links(names(nodes), Some(names(peers)), shape)
            .await
    }

    /// Runs the topology's checks: formation within its deadline (counted from the start
    /// of the run; when [`Lab::wait_formed`] already saw the network formed in time, that
    /// time counts, and the formation checks get a fresh deadline to hold again now), the
    /// broadcast check, and the scenario with its `expect` steps. A failed
    /// check is a report that did not pass, not an error; errors are runtime failures.
    /// Under [`Keep::OnFailure`] a failed report leaves the nodes running.
    pub async fn check(&mut self) -> Result<LabReport, LabError> {
        self.checks(Stage::AllChecks).await
    }

    /// The formation checks only (what `peerlab up` reports).
    pub async fn check_formation(&mut self) -> Result<LabReport, LabError> {
        self.checks(Stage::FormationOnly).await
    }

    async fn checks(&mut self, stage: Stage) -> Result<LabReport, LabError> {
        self.require_started()?;
        let progress = self.progress.get_or_insert_with(Progress::quiet);
        let formed_before = *self.formed_at.lock().unwrap_or_else(|p| p.into_inner());
        let play: &[ResolvedStep] = if self.play_scenario {
            &self.timeline
        } else {
            &[]
        };
        let mut outcome = run::check(&self.session, stage, play, formed_before, progress).await?;
        outcome.report.scenario = self.timeline.clone();
        let min_degree = self.topology().checks.formation.expectation().min_degree;
        let report = LabReport::new(outcome.report, outcome.overlay, min_degree);
        if !report.passed() && self.keep == Keep::OnFailure && !self.kept {
            self.kept = true;
            eprintln!(
                "{}: a check failed; its {} nodes are left running for inspection (logs in {}); \
                 take them down with `peerlab down {}`",
                self.run_id(),
                self.endpoints().len(),
                self.run_dir().join("logs").display(),
                self.run_id()
            );
        }
        Ok(report)
    }

    /// Tears the run down now and returns what was removed. Use this rather than relying
    /// on `Drop`, which can only print what it removed.
    pub async fn shutdown(mut self) -> Result<TeardownReport, LabError> {
        self.teardown().await
    }

    /// Leaves the nodes running and gives up the lab; returns the run id, which
    /// `peerlab down RUN` takes. Only a lab built with [`Keep::OnFailure`] or
    /// [`Keep::Always`] can: otherwise local nodes die with this process.
    pub fn detach(mut self) -> Result<String, LabError> {
        if !self.session.plan().detach {
            return Err(LabError::State(
                "only a lab built with Keep::OnFailure or Keep::Always can be left running \
                 (its local nodes would die with this process otherwise)"
                    .into(),
            ));
        }
        self.done = true;
        Ok(self.run_id().to_string())
    }

    async fn teardown(&mut self) -> Result<TeardownReport, LabError> {
        if let Some(progress) = &self.progress {
            progress.finish();
        }
        let report = self.session.teardown().await?;
        self.done = true;
        Ok(report)
    }

    async fn fault(&self, node: &str, fault: Fault) -> Result<(), LabError> {
        self.require_started()?;
        self.known(node)?;
        Ok(self.session.act(node, fault).await?)
    }

    async fn cut(&self, sides: Vec<Vec<String>>, one_way: bool) -> Result<(), LabError> {
        self.require_started()?;
        for name in sides.iter().flatten() {
            self.known(name)?;
        }
        Ok(self.session.partition(&sides, one_way).await?)
    }

    async fn shape_links(
        &self,
        nodes: Vec<String>,
        peers: Option<Vec<String>>,
        shape: LinkShape,
    ) -> Result<(), LabError> {
        self.require_started()?;
        for name in nodes.iter().chain(peers.iter().flatten()) {
            self.known(name)?;
        }
        Ok(self.session.shape(&nodes, peers.as_deref(), shape).await?)
    }

    fn known(&self, name: &str) -> Result<(), LabError> {
        match self.session.spec(name) {
            Ok(_) => Ok(()),
            Err(_) => {
                let names = self.node_names();
                let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
                let more = names.len().saturating_sub(shown.len());
                Err(LabError::UnknownNode {
                    name: name.to_string(),
                    run_id: self.run_id().to_string(),
                    known: if more > 0 {
                        format!("{}, ... and {more} more", shown.join(", "))
                    } else {
                        shown.join(", ")
                    },
                })
            }
        }
    }

    fn require_started(&self) -> Result<(), LabError> {
        if self.started {
            Ok(())
        } else {
            Err(LabError::State(format!(
                "the nodes of {} are not started yet (Lab::start_nodes)",
                self.run_id()
            )))
        }
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("run_id", &self.run_id())
            .field("runtime", &self.runtime_name())
            .field("started", &self.started)
            .field("live_nodes", &self.live_nodes().len())
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.done || !self.session.prepared() {
            return;
        }
        let run_id = self.run_id().to_string();
        if self.kept || self.keep == Keep::Always {
            eprintln!("{run_id} is left running; take it down with `peerlab down {run_id}`");
            return;
        }
        if let Some(progress) = &self.progress {
            progress.finish();
        }
        let logs = self.run_dir().join("logs");
        match runtimes::remove_on_fresh_thread(self.chosen.clone(), run_id.clone(), logs) {
            Ok(report) if report.leftovers.is_empty() => {
                tracing::info!(
                    "lab {run_id} dropped without shutdown(): removed {} processes, {} containers, {} networks",
                    report.processes_stopped,
                    report.containers_removed,
                    report.networks_removed
                );
            }
            Ok(report) => eprintln!(
                "warning: lab {run_id} dropped; left behind: {} (try `peerlab down {run_id}`)",
                report.leftovers.join("; ")
            ),
            Err(e) => eprintln!(
                "warning: lab {run_id} dropped and its teardown failed: {e}; run `peerlab down {run_id}`"
            ),
        }
    }
}

fn names(list: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    list.into_iter().map(Into::into).collect()
}

fn names_of_sides(
    sides: impl IntoIterator<Item = impl IntoIterator<Item = impl Into<String>>>,
) -> Vec<Vec<String>> {
    sides.into_iter().map(names).collect()
}
