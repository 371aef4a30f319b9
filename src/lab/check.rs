//! Checking a running network that peerlab did not start: [`NetworkCheck`], what
//! `peerlab check` is built on.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use rand::RngExt;

use super::{LabError, LabReport};
use crate::orchestrator::discover::{Discover, DiscoverError, Discovered, Found};
use crate::orchestrator::progress::Progress;
use crate::orchestrator::{DnsNames, Endpoints, NetworkExpectation, check_network};
use crate::runtime::RuntimeError;
use crate::topology::{BroadcastChecks, Topology};

/// The port a peerlab node's status socket listens on inside its container (the image's,
/// the compose files', a swarm service's): what `--status-port` defaults to.
pub const CONTAINER_STATUS_PORT: u16 = crate::runtime::container::STATUS_PORT;

/// How long a check waits for the network to form unless told otherwise.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(60);

/// How long each injected broadcast may take to reach every node unless told otherwise.
pub const DEFAULT_DELIVER_WITHIN: Duration = Duration::from_secs(5);

/// Label Docker Compose (v1 and v2) puts on every container of a project.
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";

/// Where a [`NetworkCheck`] finds the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSource {
    /// These status sockets (`HOST:PORT` or `http://HOST:PORT`), every node's.
    Endpoints(Vec<String>),
    /// Every address these DNS names resolve to is a node (Docker Swarm's
    /// `tasks.<service>`), serving its status socket on `status_port`.
    Dns {
        /// The names, resolved again while the check waits.
        names: Vec<String>,
        /// The status port of every node.
        status_port: u16,
    },
    /// Every running container of this compose project, reached through the host port
    /// that publishes its container port `status_port` (or, unpublished, its address on
    /// its first network).
    ComposeProject {
        /// The project name (`docker-compose -p NAME`, by default the directory's name).
        project: String,
        /// The status port inside the containers.
        status_port: u16,
    },
}

/// Checks a network that is already running (brought up by `docker compose up`, a stack,
/// by hand, on any hosts) with the formation and broadcast checks of a run, and reports
/// the same way. Its nodes are found through a [`NodeSource`]; what they must show comes
/// from a topology ([`NetworkCheck::topology`]) or the builder's methods, and by default
/// is: every node found ready, the overlay connected, every node knowing every other,
/// within 60 s.
///
/// ```no_run
/// # async fn f() -> Result<(), peerlab::lab::LabError> {
/// use std::time::Duration;
/// use peerlab::lab::NetworkCheck;
///
/// let report = NetworkCheck::endpoints(["127.0.0.1:7071", "127.0.0.1:7073"])
///     .expect_nodes(2)
///     .within(Duration::from_secs(30))
///     .broadcast(3)
///     .run()
///     .await?;
/// assert!(report.passed(), "{}", report.summary());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct NetworkCheck {
    source: NodeSource,
    topology: Option<Topology>,
    nodes: Option<usize>,
    within: Option<Duration>,
    min_degree: Option<usize>,
    broadcast: Option<usize>,
    deliver_within: Option<Duration>,
    seed: Option<u64>,
    progress: bool,
}

impl NetworkCheck {
    /// A check of the nodes at `source`.
    pub fn new(source: NodeSource) -> Self {
        NetworkCheck {
            source,
            topology: None,
            nodes: None,
            within: None,
            min_degree: None,
            broadcast: None,
            deliver_within: None,
            seed: None,
            progress: false,
        }
    }

    /// A check of the nodes whose status sockets are at `endpoints` (`HOST:PORT` or
    /// `http://HOST:PORT`; give every node's).
    pub fn endpoints(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::new(NodeSource::Endpoints(
            endpoints.into_iter().map(Into::into).collect(),
        ))
    }

    /// A check of every address `name` resolves to, each serving its status socket on
    /// `status_port`.
    pub fn dns(name: impl Into<String>, status_port: u16) -> Self {
        Self::new(NodeSource::Dns {
            names: vec![name.into()],
            status_port,
        })
    }

    /// A check of every running container of a compose project, whose status sockets
    /// listen on [`CONTAINER_STATUS_PORT`] inside the containers.
    pub fn compose_project(project: impl Into<String>) -> Self {
        Self::new(NodeSource::ComposeProject {
            project: project.into(),
            status_port: CONTAINER_STATUS_PORT,
        })
    }

    /// Expectations from a topology: its `checks:` (formation, its deadline, broadcast)
    /// and its node count (the nodes of `start: manual` groups left out); its scenario is
    /// not played. The other methods override it.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Exactly `n` nodes must be found.
    pub fn expect_nodes(mut self, n: usize) -> Self {
        self.nodes = Some(n);
        self
    }

    /// How long to wait for the checks to hold (default: the topology's formation
    /// deadline, or [`DEFAULT_WITHIN`]).
    pub fn within(mut self, within: Duration) -> Self {
        self.within = Some(within);
        self
    }

    /// Every node must have at least `n` neighbours (0 switches the check off).
    pub fn min_degree(mut self, n: usize) -> Self {
        self.min_degree = Some(n);
        self
    }

    /// Once formed, inject `count` broadcasts at random nodes and check that every node
    /// delivers each, once, in time (0 switches the check off).
    pub fn broadcast(mut self, count: usize) -> Self {
        self.broadcast = Some(count);
        self
    }

    /// How long each broadcast may take to reach every node (default: the topology's, or
    /// [`DEFAULT_DELIVER_WITHIN`]).
    pub fn deliver_within(mut self, within: Duration) -> Self {
        self.deliver_within = Some(within);
        self
    }

    /// Seeds the choice of broadcast senders (default: the topology's seed, or 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Show progress as `peerlab check` does (bars on a terminal, lines otherwise); off by
    /// default, when progress goes to `tracing` only.
    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// What the network must show, from the topology and the builder's methods.
    pub fn expectation(&self) -> NetworkExpectation {
        let mut expect = match &self.topology {
            Some(t) => NetworkExpectation {
                name: t.name.clone(),
                nodes: Some(t.all_groups().filter(|g| !g.manual).map(|g| g.count).sum()),
                within: t.checks.formation.within,
                formation: t.checks.formation.expectation(),
                broadcast: t.checks.broadcast.clone(),
                seed: t.seed,
            },
            None => NetworkExpectation::formed_within(DEFAULT_WITHIN),
        };
        if let Some(n) = self.nodes {
            expect.nodes = Some(n);
        }
        if let Some(within) = self.within {
            expect.within = within;
        }
        if let Some(min) = self.min_degree {
            expect.formation.min_degree = Some(min).filter(|m| *m > 0);
        }
        if let Some(seed) = self.seed {
            expect.seed = seed;
        }
        match self.broadcast {
            Some(0) => expect.broadcast = None,
            Some(count) => {
                let mut bc = expect.broadcast.take().unwrap_or(BroadcastChecks {
                    count,
                    from: Vec::new(),
                    deliver_within: DEFAULT_DELIVER_WITHIN,
                    reliability: 1.0,
                });
                bc.count = count;
                expect.broadcast = Some(bc);
            }
            None => {}
        }
        if let (Some(within), Some(bc)) = (self.deliver_within, expect.broadcast.as_mut()) {
            bc.deliver_within = within;
        }
        expect
    }

    /// Finds the nodes, waits until the checks hold or the deadline passes, injects the
    /// broadcasts, and reports. A failed check is a report that did not pass; an error
    /// means nothing could be checked: a source that is wrong ([`LabError::is_bad_input`]:
    /// a malformed address, a compose project with no container) or that cannot be asked
    /// (no Docker engine).
    pub async fn run(self) -> Result<LabReport, LabError> {
        let expect = self.expectation();
        let source = self.discoverer().await?;
        let mut progress = if self.progress {
            Progress::new()
        } else {
            Progress::quiet()
        };
        if let Some(t) = self.topology.as_ref().filter(|t| !t.scenario.is_empty()) {
            progress.line(&format!(
                "the scenario of {} is not played: `check` only observes",
                t.name
            ));
        }
        let suffix: u32 = rand::rng().random::<u32>() & 0xff_ffff;
        let run_id = match expect.name.as_str() {
            "check" => format!("check-{suffix:06x}"),
            name => format!("{name}-check-{suffix:06x}"),
        };
        let outcome = check_network(source.as_ref(), &expect, &run_id, &mut progress)
            .await
            .map_err(|e| match e {
                DiscoverError::BadInput(reason) => LabError::Input(reason),
                DiscoverError::Failed(reason) => LabError::Runtime(RuntimeError::Failed(reason)),
            })?;
        Ok(LabReport::new(
            outcome.report,
            outcome.overlay,
            expect.formation.min_degree,
        ))
    }

    async fn discoverer(&self) -> Result<Box<dyn Discover>, LabError> {
        let bad = LabError::Input;
        Ok(match &self.source {
            NodeSource::Endpoints(list) => Box::new(Endpoints::parse(list).map_err(bad)?),
            NodeSource::Dns { names, status_port } => {
                Box::new(DnsNames::new(names, *status_port).map_err(bad)?)
            }
            NodeSource::ComposeProject {
                project,
                status_port,
            } => Box::new(ComposeProject::connect(project, *status_port).await?),
        })
    }
}

/// Checks the network whose nodes' status sockets are at `endpoints` (every node's): every
/// node ready, the overlay connected, every node knowing every other, within `within`.
/// The shorthand of [`NetworkCheck::endpoints`] with [`NetworkCheck::within`].
pub async fn check_endpoints(
    endpoints: impl IntoIterator<Item = impl Into<String>>,
    within: Duration,
) -> Result<LabReport, LabError> {
    NetworkCheck::endpoints(endpoints)
        .within(within)
        .run()
        .await
}

/// The running containers of a compose project, found through the Docker API.
struct ComposeProject {
    docker: Docker,
    project: String,
    port: u16,
}

impl ComposeProject {
    async fn connect(project: &str, port: u16) -> Result<Self, LabError> {
        let project = project.trim();
        if project.is_empty() {
            return Err(LabError::Input(
                "--compose-project needs a project name".into(),
            ));
        }
        let docker = crate::runtime::docker::image::connect()
            .await
            .map_err(|e| {
                // The engine's hint ends by suggesting the local runtime, which a check
                // of containers cannot use.
                let e = e.replace("; or run without Docker with `--runtime local`.", ".");
                LabError::Runtime(RuntimeError::Failed(format!(
                    "cannot list the containers of compose project {project}: {e}"
                )))
            })?;
        Ok(ComposeProject {
            docker,
            project: project.to_string(),
            port,
        })
    }
}

#[async_trait::async_trait]
impl Discover for ComposeProject {
    fn describe(&self) -> String {
        format!(
            "compose project {} (container port {})",
            self.project, self.port
        )
    }

    fn advice(&self) -> String {
        format!(
            "check the project's name (`docker ps --filter label={COMPOSE_PROJECT_LABEL}={}`) \
             and that its services publish their status port {} (as `peerlab compose` files do: \
             `ports: [\"127.0.0.1::{}\"]`); give --status-port when the nodes listen elsewhere",
            self.project, self.port, self.port
        )
    }

    async fn discover(&self) -> Result<Discovered, DiscoverError> {
        let filters = std::collections::HashMap::from([(
            "label",
            vec![format!("{COMPOSE_PROJECT_LABEL}={}", self.project)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DiscoverError::Failed(format!("cannot list containers: {e}")))?;
        if containers.is_empty() {
            return Err(DiscoverError::BadInput(format!(
                "no container carries the label {COMPOSE_PROJECT_LABEL}={}; is the project \
                 up (`docker-compose -p {} ps`), and is that its name? Compose names a project \
                 after the directory of its file unless given `-p NAME`",
                self.project, self.project
            )));
        }
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for c in containers {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .or_else(|| c.id.clone())
                .unwrap_or_default();
            let running = c
                .state
                .as_ref()
                .is_some_and(|s| matches!(s.to_string().as_str(), "running" | "paused"));
            if !running {
                continue;
            }
            let published = c.ports.iter().flatten().find(|p| {
                p.private_port == self.port
                    && p.public_port.is_some()
                    && p.ip.as_deref().is_none_or(|ip| !ip.contains(':'))
            });
            let url = match published {
                Some(p) => {
                    let ip = match p.ip.as_deref() {
                        None | Some("") | Some("0.0.0.0") => "127.0.0.1",
                        Some(ip) => ip,
                    };
                    p.public_port.map(|port| format!("http://{ip}:{port}"))
                }
                None => c
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref())
                    .and_then(|n| {
                        let mut ips: Vec<&String> = n
                            .values()
                            .filter_map(|e| e.ip_address.as_ref())
                            .filter(|ip| !ip.is_empty())
                            .collect();
                        ips.sort();
                        ips.first().map(|ip| format!("http://{ip}:{}", self.port))
                    }),
            };
            match url {
                Some(status_url) => found.push(Found {
                    status_url,
                    hint: Some(name),
                }),
                None => problems.push(format!(
                    "container {name} neither publishes port {} nor has a network address",
                    self.port
                )),
            }
        }
        Ok(Discovered { found, problems })
    }
}
