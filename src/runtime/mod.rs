//! Runtimes: where the nodes of a run live (local processes, Docker containers).
//!
//! The topology model knows nothing of runtimes; the orchestrator turns a topology into a
//! [`RunPlan`] and hands it to one [`Runtime`]. Each runtime implements this one small
//! interface and refuses, in [`Runtime::check_support`], anything it cannot honour, before
//! anything starts (as containerlab does).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::contract::LinkShape;

pub mod container;
pub mod docker;
pub mod links;
pub mod local;

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
}

/// A user-defined network of the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
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
    pub topology_name: String,
    /// Container image (Docker runtime only).
    pub image: String,
    pub networks: Vec<NetworkSpec>,
    /// Genesis nodes first, then peers in start order.
    pub nodes: Vec<NodeSpec>,
    /// Leave everything running after the orchestrator exits (`peerlab up`).
    pub detach: bool,
}

/// How a started node is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEndpoint {
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

/// What teardown removed, so callers can prove nothing is left behind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeardownReport {
    pub processes_stopped: usize,
    pub containers_removed: usize,
    pub networks_removed: usize,
    /// Anything that could not be removed, with the reason.
    pub leftovers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The topology asks for something this runtime cannot do; nothing was started.
    #[error("the {runtime} runtime cannot run this topology: {reason}")]
    Unsupported {
        runtime: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A place where nodes run. Implementations keep their own bookkeeping behind `&self`
/// so that the orchestrator can start nodes concurrently.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Short name shown to users: `local`, `docker`.
    fn name(&self) -> &'static str;
    /// Refuse, before anything starts, a plan with features this runtime cannot honour.
    fn check_support(&self, plan: &RunPlan) -> Result<(), RuntimeError>;
    /// Create run-wide resources (run directory, networks, image, address allocation).
    async fn prepare(&mut self, plan: &RunPlan) -> Result<(), RuntimeError>;
    /// Start one node of the prepared plan.
    async fn start(&self, node: &NodeSpec) -> Result<NodeEndpoint, RuntimeError>;
    /// Apply a process-level action to a started node.
    async fn act(&self, node: &str, action: NodeAction) -> Result<(), RuntimeError>;
    /// Cut the links between every pair of sides (node names per side). With `one_way`,
    /// only traffic from `sides[0]` to the others is dropped.
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
    /// Shape the links of `nodes` (towards `peers` only, when given).
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
}
