//! Runtimes: where the nodes of a run live (local processes, Docker containers).
//!
//! The topology model knows nothing of runtimes; the orchestrator turns a topology into a
//! [`RunPlan`] (`orchestrator::plan`) and hands it to one [`Runtime`]. Each runtime
//! implements this one small interface, declares what it can do ([`Runtime::capabilities`],
//! read before anything starts rather than probed), refuses in [`Runtime::check_support`]
//! any plan it cannot honour (as containerlab does), and lists and removes its runs, those
//! of `peerlab up` and those left over by a crashed orchestrator ([`Runtime::list_runs`],
//! [`Runtime::remove_run`]).
//!
//! - [`local`]: child processes of this executable on loopback addresses.
//! - [`docker`]: containers on user-defined networks (partitions, netfilter, the image).
//! - [`links`]: partitions and shaping through the nodes' `/admin` API, shared by both.
//! - [`hosts`]: hosts emulated on one machine (shaped links between their nodes).
//! - [`container`]: how a node runs in a container, shared with the compose export.
//! - [`swarm`]: a Docker Swarm across hosts: a service per node, reached through a tunnel
//!   into its overlay.
//! - [`kubernetes`]: a Kubernetes cluster: a namespace per run, a StatefulSet per group,
//!   status read through the API server's pod proxy.
//!
//! Runtimes import the plan types here and [`crate::contract`]; never the orchestrator, the
//! topology model or an exporter.

use crate::contract::AdminToken;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::contract::LinkShape;

pub mod container;
pub mod docker;
pub mod hosts;
pub mod kubernetes;
pub mod links;
pub mod local;
pub mod swarm;

/// Label (Docker) / marker (local) that ties every resource to its run.
pub const RUN_LABEL: &str = "peerlab.run";
/// Label carrying the node name inside a run.
pub const NODE_LABEL: &str = "peerlab.node";

/// One node to start, as the topology describes it; runtime-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Unique within the run: `genesis-0`, `<group>-<index>`.
    pub name: String,
    /// `genesis` for genesis nodes, else the peer group's name.
    pub group: String,
    /// Whether it starts the network (gets no `--genesis` to join).
    pub genesis: bool,
    /// Topology networks this node is attached to (empty: the run's default network).
    pub networks: Vec<String>,
    /// When to start, counted from the start of the run (group delay + stagger).
    pub start_after: Duration,
    /// Extra `peerlab node` flags from the topology's node settings (degree, timeouts, ...).
    /// The runtime adds `--name`, `--listen`, `--status`, `--advertise`, `--genesis`, `--seed`.
    pub node_args: Vec<String>,
    /// This node's randomness, derived from the topology seed.
    pub seed: u64,
    /// The host of [`RunPlan::hosts`] the node is placed on; `None` when the topology has no
    /// `hosts:`. Emulated on one machine by `local` and `docker` (shaped links to nodes on
    /// other hosts); a swarm places the node on that host's swarm node.
    pub host: Option<String>,
    /// CPU and memory limits from the topology's `resources`; `None`: unlimited. Container
    /// runtimes and exports apply them; the local runtime refuses them.
    pub resources: Option<NodeResources>,
}

/// CPU and memory a node may use (the topology's `resources`), in the units every
/// consumer converts from; each `None` leaves that one unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeResources {
    /// Thousandths of a CPU (`250` is a quarter of a core).
    pub cpu_millis: Option<u32>,
    /// Bytes of memory.
    pub memory_bytes: Option<u64>,
}

impl NodeResources {
    /// Docker's `NanoCpus` (billionths of a CPU).
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpu_millis.map(|m| i64::from(m) * 1_000_000)
    }

    /// CPUs as a decimal number (`0.25`), as compose's `cpus` takes it.
    pub fn cpus(&self) -> Option<f64> {
        self.cpu_millis.map(|m| f64::from(m) / 1000.0)
    }

    /// CPUs as decimal text without rounding (`0.25`, `2`), as a stack's `deploy.resources`
    /// takes it.
    pub fn cpus_text(&self) -> Option<String> {
        self.cpu_millis.map(|m| {
            if m % 1000 == 0 {
                (m / 1000).to_string()
            } else {
                let text = format!("{}.{:03}", m / 1000, m % 1000);
                text.trim_end_matches('0').to_string()
            }
        })
    }

    /// The CPU as a Kubernetes quantity: `250m`, or whole cores (`2`).
    pub fn cpu_quantity(&self) -> Option<String> {
        self.cpu_millis.map(|m| {
            if m % 1000 == 0 {
                (m / 1000).to_string()
            } else {
                format!("{m}m")
            }
        })
    }

    /// The memory as a Kubernetes quantity in the largest binary unit that divides it
    /// (`64Mi`), else in bytes.
    pub fn memory_quantity(&self) -> Option<String> {
        self.memory_bytes.map(|b| {
            for (unit, size) in [
                ("Ti", 1u64 << 40),
                ("Gi", 1 << 30),
                ("Mi", 1 << 20),
                ("Ki", 1 << 10),
            ] {
                if b >= size && b % size == 0 {
                    return format!("{}{unit}", b / size);
                }
            }
            b.to_string()
        })
    }

    /// The memory in Docker's byte units (`64m` is 64 MiB), as compose's `mem_limit` and
    /// a stack's `deploy.resources` take it.
    pub fn memory_text(&self) -> Option<String> {
        self.memory_bytes.map(|b| {
            for (unit, size) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
                if b >= size && b % size == 0 {
                    return format!("{}{unit}", b / size);
                }
            }
            format!("{b}b")
        })
    }
}

/// A host of the topology: a machine of its own, or one emulated on this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    /// Host name, as [`NodeSpec::host`] names it.
    pub name: String,
    /// The swarm node this host maps to: the value of its `peerlab.host` node label, or
    /// its hostname; `None` means the host's name. Runtimes that emulate hosts ignore it.
    pub label: Option<String>,
    /// The link from this host to each other host, by host name: what every frame a node
    /// here sends to a node there goes through. A host missing from the map is reached
    /// unshaped; links are symmetric, so the other host lists this one with the same shape.
    pub links: BTreeMap<String, LinkShape>,
}

/// A user-defined network of the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    /// Network name, as node specs refer to it.
    pub name: String,
    /// CIDR, e.g. `10.77.1.0/24`; `None` lets the runtime choose.
    pub subnet: Option<String>,
}

/// Everything a runtime needs to bring a topology up.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// `<topology>-<hex>`; labels every resource of the run.
    pub run_id: String,
    /// Where logs, the report and runtime state of this run are written.
    pub run_dir: PathBuf,
    /// Name of the topology, for labels and listings.
    pub topology_name: String,
    /// Container image (Docker runtime only).
    pub image: String,
    /// Networks to create before any node starts.
    pub networks: Vec<NetworkSpec>,
    /// Genesis nodes first, then peers in start order.
    pub nodes: Vec<NodeSpec>,
    /// The topology's hosts, in its order; empty when it has none (every
    /// [`NodeSpec::host`] is then `None`).
    pub hosts: Vec<HostSpec>,
    /// Leave everything running after the orchestrator exits (`peerlab up`).
    pub detach: bool,
    /// This run's credential for the nodes' `/admin/*`: runtimes that apply link faults
    /// give it to their nodes as `PEERLAB_ADMIN_TOKEN` (never on a command line) and send
    /// it with every admin call. Exports never write it into a file.
    pub admin_token: AdminToken,
    /// The run's network key (`network_key:` of the topology), which every node must hold
    /// to complete a handshake; `None`: the nodes need none. Runtimes give it to their
    /// nodes as `PEERLAB_NETWORK_KEY` (environment or a Kubernetes Secret, never a command
    /// line); exports only require it of the deploying shell and never write it.
    pub network_key: Option<crate::contract::NetworkSecret>,
}

impl RunPlan {
    /// The shape of frames from host `from` to host `to`; `None` on one host, or when the
    /// hosts' link is not shaped.
    pub fn host_link(&self, from: &str, to: &str) -> Option<LinkShape> {
        self.hosts
            .iter()
            .find(|h| h.name == from)?
            .links
            .get(to)
            .copied()
    }
}

/// How a started node is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEndpoint {
    /// Node name from the plan.
    pub name: String,
    /// Advertised peer-protocol address (as other nodes dial it).
    pub peer_addr: String,
    /// Base URL of the status socket as reachable from the orchestrator, e.g. `http://127.0.0.1:49153`.
    pub status_url: String,
}

/// Faults a runtime applies to one node (fault scenarios build on these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// SIGKILL / docker kill.
    Kill,
    /// Graceful stop (SIGTERM / docker stop): the node floods a leave first.
    Stop,
    /// SIGSTOP / docker pause.
    Pause,
    /// SIGCONT / docker unpause.
    Resume,
    /// Start again a node that was killed or stopped, on the same address.
    Start,
}

/// What a runtime can do to started nodes and their links. The orchestrator reads it before
/// anything starts, so a scenario the runtime cannot play is refused up front (exit 2)
/// instead of failing half-way through a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// [`NodeAction::Kill`].
    pub kill: bool,
    /// [`NodeAction::Stop`] (graceful: the node floods a leave).
    pub stop: bool,
    /// [`NodeAction::Start`] of a node that was killed or stopped.
    pub start: bool,
    /// [`NodeAction::Pause`] and [`NodeAction::Resume`].
    pub pause: bool,
    /// [`Runtime::partition`] and [`Runtime::heal`].
    pub partition: bool,
    /// [`Runtime::partition`] with `one_way`.
    pub one_way_partition: bool,
    /// [`Runtime::shape`].
    pub shape: bool,
    /// Nodes whose networks do not meet cannot reach each other (separate networks are
    /// real); without it every node shares one network and such plans are refused.
    pub isolated_networks: bool,
}

impl Capabilities {
    /// Everything a runtime can declare.
    pub const ALL: Capabilities = Capabilities {
        kill: true,
        stop: true,
        start: true,
        pause: true,
        partition: true,
        one_way_partition: true,
        shape: true,
        isolated_networks: true,
    };

    /// Whether [`Runtime::act`] supports `action`.
    pub fn supports(&self, action: NodeAction) -> bool {
        match action {
            NodeAction::Kill => self.kill,
            NodeAction::Stop => self.stop,
            NodeAction::Start => self.start,
            NodeAction::Pause | NodeAction::Resume => self.pause,
        }
    }
}

/// What teardown removed, so callers can prove nothing is left behind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeardownReport {
    /// Node processes that were stopped.
    pub processes_stopped: usize,
    /// Containers that were removed.
    pub containers_removed: usize,
    /// Networks that were removed.
    pub networks_removed: usize,
    /// Anything that could not be removed, with the reason.
    pub leftovers: Vec<String>,
}

impl TeardownReport {
    /// Adds what `other` removed and left behind to this report.
    pub fn absorb(&mut self, other: TeardownReport) {
        self.processes_stopped += other.processes_stopped;
        self.containers_removed += other.containers_removed;
        self.networks_removed += other.networks_removed;
        self.leftovers.extend(other.leftovers);
    }
}

/// A run that still has something up in one runtime (for `peerlab ps`): started by
/// `peerlab up`, kept with `--keep`, or left over by an orchestrator that died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunListing {
    /// Id of the run, for `peerlab down`.
    pub run_id: String,
    /// The runtime's [`Runtime::name`].
    pub runtime: &'static str,
    /// Its nodes that are up (processes, or containers running or not); 0 when only
    /// run-wide resources such as networks are left.
    pub nodes: usize,
}

impl RunListing {
    /// The listings of `runtime` from its count of nodes up per run id, in the counts' order.
    pub fn from_counts(
        runtime: &'static str,
        counts: impl IntoIterator<Item = (String, usize)>,
    ) -> Vec<RunListing> {
        counts
            .into_iter()
            .map(|(run_id, nodes)| RunListing {
                run_id,
                runtime,
                nodes,
            })
            .collect()
    }
}

/// Why a runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The topology asks for something this runtime cannot do; nothing was started.
    #[error("the {runtime} runtime cannot run this topology: {reason}")]
    Unsupported {
        /// Name of the runtime that refused.
        runtime: &'static str,
        /// What it cannot do.
        reason: String,
    },
    /// The runtime tried and failed (a process or Docker error), with the reason.
    #[error("{0}")]
    Failed(String),
    /// A file or process operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A place where nodes run. Implementations keep their own bookkeeping behind `&self`
/// so that the orchestrator can start nodes concurrently.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Short name shown to users: `local`, `docker`.
    fn name(&self) -> &'static str;
    /// What this runtime can do; callers read it instead of trying an action to find out.
    fn capabilities(&self) -> Capabilities;
    /// Refuse, before anything starts, a plan with features this runtime cannot honour.
    fn check_support(&self, plan: &RunPlan) -> Result<(), RuntimeError>;
    /// Create run-wide resources (run directory, networks, image, address allocation).
    async fn prepare(&mut self, plan: &RunPlan) -> Result<(), RuntimeError>;
    /// Start one node of the prepared plan.
    async fn start(&self, node: &NodeSpec) -> Result<NodeEndpoint, RuntimeError>;
    /// Apply a process-level action to a started node.
    async fn act(&self, node: &str, action: NodeAction) -> Result<(), RuntimeError>;
    /// Cut the links between every pair of sides (node names per side). With `one_way`,
    /// only traffic from `sides[0]` to the others is dropped. A runtime that declares
    /// [`Capabilities::partition`] overrides this and [`Runtime::heal`]; the default refuses.
    async fn partition(&self, sides: &[Vec<String>], one_way: bool) -> Result<(), RuntimeError> {
        let _ = (sides, one_way);
        Err(RuntimeError::Unsupported {
            runtime: self.name(),
            reason: "partitions are not implemented by this runtime yet".into(),
        })
    }
    /// Undo every partition.
    async fn heal(&self) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported {
            runtime: self.name(),
            reason: "partitions are not implemented by this runtime yet".into(),
        })
    }
    /// Shape the links of `nodes` (towards `peers` only, when given). A runtime that declares
    /// [`Capabilities::shape`] overrides this; the default refuses.
    async fn shape(
        &self,
        nodes: &[String],
        peers: Option<&[String]>,
        shape: LinkShape,
    ) -> Result<(), RuntimeError> {
        let _ = (nodes, peers, shape);
        Err(RuntimeError::Unsupported {
            runtime: self.name(),
            reason: "link shaping is not implemented by this runtime yet".into(),
        })
    }
    /// Where a started node is reached now. A runtime whose nodes can come back elsewhere
    /// after a `Start` (a container may get a new published port) answers with the new
    /// endpoint; `None` means the endpoint [`Runtime::start`] returned still holds.
    fn endpoint(&self, node: &str) -> Option<NodeEndpoint> {
        let _ = node;
        None
    }
    /// Remove everything this run created. Must be safe to call more than once.
    async fn teardown(&mut self) -> Result<TeardownReport, RuntimeError>;
    /// Every run that has something up in this runtime on this machine, whoever started it;
    /// found from the runtime's own markers (process environment, labels), not from the
    /// bookkeeping of this instance, so it needs no [`Runtime::prepare`].
    async fn list_runs(&self) -> Result<Vec<RunListing>, RuntimeError>;
    /// Remove everything of run `run` (every run with `None`) that is up in this runtime,
    /// found as [`Runtime::list_runs`] finds it. With `logs_dir`, the nodes' output is saved
    /// there first (`<logs_dir>/<node>.log`) by a runtime that does not already write it to
    /// disk. Safe to repeat: a second call removes nothing.
    async fn remove_run(
        &self,
        run: Option<&str>,
        logs_dir: Option<&Path>,
    ) -> Result<TeardownReport, RuntimeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_answer_for_each_node_action() {
        let all = Capabilities::ALL;
        for action in [
            NodeAction::Kill,
            NodeAction::Stop,
            NodeAction::Start,
            NodeAction::Pause,
            NodeAction::Resume,
        ] {
            assert!(all.supports(action), "{action:?}");
            assert!(!Capabilities::default().supports(action), "{action:?}");
        }
        let no_pause = Capabilities {
            pause: false,
            ..Capabilities::ALL
        };
        assert!(!no_pause.supports(NodeAction::Pause));
        assert!(!no_pause.supports(NodeAction::Resume));
        assert!(no_pause.supports(NodeAction::Kill));
    }

    #[test]
    fn resources_convert_to_each_consumers_units() {
        let quarter = NodeResources {
            cpu_millis: Some(250),
            memory_bytes: Some(64 << 20),
        };
        assert_eq!(quarter.nano_cpus(), Some(250_000_000));
        assert_eq!(quarter.cpus(), Some(0.25));
        assert_eq!(quarter.cpus_text().as_deref(), Some("0.25"));
        assert_eq!(quarter.cpu_quantity().as_deref(), Some("250m"));
        assert_eq!(quarter.memory_quantity().as_deref(), Some("64Mi"));
        assert_eq!(quarter.memory_text().as_deref(), Some("64m"));
        let odd = NodeResources {
            cpu_millis: Some(2000),
            memory_bytes: Some(1_000_000),
        };
        assert_eq!(odd.cpus_text().as_deref(), Some("2"));
        assert_eq!(odd.cpu_quantity().as_deref(), Some("2"));
        assert_eq!(odd.memory_quantity().as_deref(), Some("1000000"));
        assert_eq!(odd.memory_text().as_deref(), Some("1000000b"));
        let gib = NodeResources {
            cpu_millis: Some(1500),
            memory_bytes: Some(3 << 30),
        };
        assert_eq!(gib.cpus_text().as_deref(), Some("1.5"));
        assert_eq!(gib.memory_quantity().as_deref(), Some("3Gi"));
        assert_eq!(gib.memory_text().as_deref(), Some("3g"));
        assert_eq!(NodeResources::default().nano_cpus(), None);
        assert_eq!(NodeResources::default().memory_quantity(), None);
    }

    #[test]
    fn reports_add_up() {
        let mut total = TeardownReport {
            processes_stopped: 2,
            ..TeardownReport::default()
        };
        total.absorb(TeardownReport {
            containers_removed: 3,
            networks_removed: 1,
            leftovers: vec!["network x: busy".into()],
            ..TeardownReport::default()
        });
        assert_eq!(
            total,
            TeardownReport {
                processes_stopped: 2,
                containers_removed: 3,
                networks_removed: 1,
                leftovers: vec!["network x: busy".into()],
            }
        );
    }
}
