//! A session: one run's runtime, plan and observer, and every operation on the run's nodes
//! (start, faults, partitions, shaping, teardown).
//!
//! The scenario player and [`crate::lab::Lab`] both act through a session, so a fault played
//! from a topology file and one a user's test calls are the same code, with the same
//! bookkeeping of which nodes are up (what the checks observe).

use std::collections::HashSet;
use std::sync::Mutex;

use futures::StreamExt;

use super::observer::{Observer, lock, poll_interval};
use super::progress::Progress;
use crate::contract::LinkShape;
use crate::runtime::{
    NodeAction, NodeEndpoint, NodeSpec, RunPlan, Runtime, RuntimeError, TeardownReport,
};
use crate::topology::{Fault, Topology};

/// Nodes started at once.
const START_CONCURRENCY: usize = 16;

/// One run on one runtime; see the module docs. Every fault is checked against the
/// runtime's [`crate::runtime::Capabilities`] first, and refused with
/// [`RuntimeError::Unsupported`] when they do not include it: nothing is half-done.
pub struct Session {
    runtime: Box<dyn Runtime>,
    plan: RunPlan,
    topology: Topology,
    seed: u64,
    observer: Observer,
    /// Killed or stopped and not started again.
    down: Mutex<HashSet<String>>,
    /// Paused and not resumed: observing them would hold a poll for the request timeout.
    paused: Mutex<HashSet<String>>,
    /// `prepare` ran (the runtime may hold resources even if it failed half-way).
    prepared: bool,
}

impl Session {
    /// A session of `plan` (built from `topology` and `seed`) on `runtime`; nothing is
    /// prepared or started yet. The observer's clock starts at [`Session::prepare`].
    pub fn new(
        runtime: Box<dyn Runtime>,
        plan: RunPlan,
        topology: Topology,
        seed: u64,
    ) -> Result<Session, RuntimeError> {
        Ok(Session {
            runtime,
            plan,
            topology,
            seed,
            observer: new_observer()?,
            down: Mutex::new(HashSet::new()),
            paused: Mutex::new(HashSet::new()),
            prepared: false,
        })
    }

    /// The runtime the nodes live on.
    pub fn runtime(&self) -> &dyn Runtime {
        self.runtime.as_ref()
    }

    /// The plan of the run (its id, directory, nodes).
    pub fn plan(&self) -> &RunPlan {
        &self.plan
    }

    /// The topology the plan was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The run's seed (the topology's unless overridden).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The poller of this run's status sockets.
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Whether [`Session::prepare`] was called: from then on there may be something to
    /// tear down.
    pub fn prepared(&self) -> bool {
        self.prepared
    }

    /// Lets the runtime create run-wide resources (run directory, networks, image); the
    /// observer's clock (readiness and formation times) starts here.
    pub async fn prepare(&mut self) -> Result<(), RuntimeError> {
        self.prepared = true;
        self.observer = new_observer()?;
        self.runtime.prepare(&self.plan).await
    }

    /// Names of the nodes that start with the run: all but those of `start: manual`
    /// groups, which wait for a `join`.
    pub fn initial_nodes(&self) -> Vec<String> {
        self.plan
            .nodes
            .iter()
            .filter(|n| {
                !self
                    .topology
                    .groups
                    .iter()
                    .any(|g| g.manual && g.name == n.group)
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// Started nodes that are neither down nor paused, in plan order: what checks observe.
    pub fn live_nodes(&self) -> Vec<String> {
        let started: HashSet<String> = self
            .observer
            .endpoints()
            .into_iter()
            .map(|e| e.name)
            .collect();
        let down = lock(&self.down);
        let paused = lock(&self.paused);
        self.plan
            .nodes
            .iter()
            .map(|n| &n.name)
            .filter(|n| started.contains(*n) && !down.contains(*n) && !paused.contains(*n))
            .cloned()
            .collect()
    }

    /// The plan's spec of a node, or an error naming the nodes there are.
    pub fn spec(&self, name: &str) -> Result<&NodeSpec, RuntimeError> {
        self.plan
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.plan.nodes.iter().map(|n| n.name.as_str()).collect();
                RuntimeError::Failed(format!(
                    "no node named {name} in run {} (its nodes: {})",
                    self.plan.run_id,
                    abbreviated(&known)
                ))
            })
    }

    /// Starts the initial nodes (see [`Session::initial_nodes`]) while watching them
    /// become ready, so that each time-to-ready is honest: genesis nodes one by one
    /// (everyone else needs their addresses), then the peers at their planned offsets,
    /// up to 16 at once.
    pub async fn start_initial(&self, progress: &mut Progress) -> Result<(), RuntimeError> {
        let names = self.initial_nodes();
        let nodes: Vec<&NodeSpec> = self
            .plan
            .nodes
            .iter()
            .filter(|n| names.contains(&n.name))
            .collect();
        let total = nodes.len();
        progress.phase("starting", total as u64);
        let watch = async {
            loop {
                self.observer.poll_ready().await;
                tokio::time::sleep(poll_interval(total)).await;
            }
        };
        tokio::select! {
            started = self.start_nodes(&nodes, progress) => started,
            _ = watch => Ok(()),
        }
    }

    async fn start_nodes(
        &self,
        nodes: &[&NodeSpec],
        progress: &mut Progress,
    ) -> Result<(), RuntimeError> {
        let mut done = 0u64;
        for spec in nodes.iter().filter(|n| n.genesis) {
            let ep = self.runtime.start(spec).await?;
            self.observer.add(ep);
            done += 1;
            progress.update(done, &format!("started {}", spec.name));
        }
        let t0 = self.observer.started_at();
        let runtime = self.runtime.as_ref();
        let mut starts = futures::stream::iter(nodes.iter().filter(|n| !n.genesis))
            .map(|spec| async move {
                tokio::time::sleep_until((t0 + spec.start_after).into()).await;
                (spec.name.clone(), runtime.start(spec).await)
            })
            // Unordered: a node slow to come up must not hold the slots of those behind it.
            .buffer_unordered(START_CONCURRENCY);
        while let Some((name, result)) = starts.next().await {
            self.observer.add(result?);
            done += 1;
            progress.update(done, &format!("started {name}"));
        }
        Ok(())
    }

    /// Starts a node that did not start with the run (a `start: manual` group's node).
    pub async fn join(&self, name: &str) -> Result<NodeEndpoint, RuntimeError> {
        let spec = self.spec(name)?;
        if self.observer.endpoint(name).is_some() {
            return Err(RuntimeError::Failed(format!(
                "{name} was already started; use start or restart to bring it back"
            )));
        }
        let ep = self.runtime.start(spec).await?;
        self.observer.add(ep.clone());
        Ok(ep)
    }

    /// Applies a process fault to one started node and keeps the books of which nodes are
    /// up. A node started again may be reached elsewhere now (a container's status socket
    /// can get a new published port): the observer follows it.
    pub async fn act(&self, node: &str, fault: Fault) -> Result<(), RuntimeError> {
        self.spec(node)?;
        let needs: &[NodeAction] = match fault {
            Fault::Kill => &[NodeAction::Kill],
            Fault::Stop => &[NodeAction::Stop],
            Fault::Start => &[NodeAction::Start],
            Fault::Restart => &[NodeAction::Stop, NodeAction::Start],
            Fault::Pause => &[NodeAction::Pause],
            Fault::Resume => &[NodeAction::Resume],
        };
        let can = self.runtime.capabilities();
        if !needs.iter().all(|a| can.supports(*a)) {
            return Err(self.unsupported(&format!("{} nodes", fault.keyword())));
        }
        if self.observer.endpoint(node).is_none() {
            return Err(RuntimeError::Failed(format!(
                "{node} was never started (a node of a `start: manual` group starts with join)"
            )));
        }
        match fault {
            Fault::Kill => self.runtime.act(node, NodeAction::Kill).await?,
            Fault::Stop => self.runtime.act(node, NodeAction::Stop).await?,
            Fault::Start => self.runtime.act(node, NodeAction::Start).await?,
            Fault::Pause => self.runtime.act(node, NodeAction::Pause).await?,
            Fault::Resume => self.runtime.act(node, NodeAction::Resume).await?,
            Fault::Restart => {
                self.runtime.act(node, NodeAction::Stop).await?;
                self.runtime.act(node, NodeAction::Start).await?;
            }
        }
        let (mut down, mut paused) = (lock(&self.down), lock(&self.paused));
        match fault {
            Fault::Kill | Fault::Stop => {
                down.insert(node.to_string());
                paused.remove(node);
            }
            Fault::Start | Fault::Restart => {
                down.remove(node);
                paused.remove(node);
            }
            Fault::Pause => {
                paused.insert(node.to_string());
            }
            Fault::Resume => {
                paused.remove(node);
            }
        }
        drop((down, paused));
        if matches!(fault, Fault::Start | Fault::Restart)
            && let Some(now) = self.runtime.endpoint(node)
        {
            self.observer.add(now);
        }
        Ok(())
    }

    /// Cuts the links between every pair of sides (node names per side); with `one_way`,
    /// only traffic from the first side to the others.
    pub async fn partition(
        &self,
        sides: &[Vec<String>],
        one_way: bool,
    ) -> Result<(), RuntimeError> {
        let can = self.runtime.capabilities();
        if !can.partition {
            return Err(self.unsupported("partition"));
        }
        if one_way && !can.one_way_partition {
            return Err(self.unsupported("partition one way"));
        }
        for name in sides.iter().flatten() {
            self.spec(name)?;
        }
        self.runtime.partition(sides, one_way).await
    }

    /// Undoes every partition.
    pub async fn heal(&self) -> Result<(), RuntimeError> {
        if !self.runtime.capabilities().partition {
            return Err(self.unsupported("partition (or heal)"));
        }
        self.runtime.heal().await
    }

    /// Shapes the links of `nodes` (towards `peers` only, when given).
    pub async fn shape(
        &self,
        nodes: &[String],
        peers: Option<&[String]>,
        shape: LinkShape,
    ) -> Result<(), RuntimeError> {
        if !self.runtime.capabilities().shape {
            return Err(self.unsupported("shape links"));
        }
        for name in nodes.iter().chain(peers.unwrap_or_default()) {
            self.spec(name)?;
        }
        self.runtime.shape(nodes, peers, shape).await
    }

    /// The refusal of something the runtime's capabilities do not include.
    fn unsupported(&self, what: &str) -> RuntimeError {
        RuntimeError::Unsupported {
            runtime: self.runtime.name(),
            reason: format!("it cannot {what} (see its capabilities)"),
        }
    }

    /// Removes everything the run created. Safe to call more than once.
    pub async fn teardown(&mut self) -> Result<TeardownReport, RuntimeError> {
        self.runtime.teardown().await
    }

    /// Gives the runtime up, for a teardown that must happen elsewhere (a fresh thread when
    /// a lab is dropped).
    pub fn into_runtime(self) -> Box<dyn Runtime> {
        self.runtime
    }
}

fn new_observer() -> Result<Observer, RuntimeError> {
    Observer::new().map_err(|e| RuntimeError::Failed(e.to_string()))
}

/// The first few names and how many more, for error messages about large runs.
fn abbreviated(names: &[&str]) -> String {
    const SHOWN: usize = 8;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{}, ... and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use async_trait::async_trait;

    use super::*;
    use crate::runtime::{Capabilities, RunListing};

    /// A runtime that can only kill: every other fault must be refused from its
    /// capabilities, before the runtime is asked (which would fail the test).
    struct KillOnly;

    #[async_trait]
    impl Runtime for KillOnly {
        fn name(&self) -> &'static str {
            "kill-only"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                kill: true,
                ..Capabilities::default()
            }
        }
        fn check_support(&self, _: &RunPlan) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn prepare(&mut self, _: &RunPlan) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn start(&self, node: &NodeSpec) -> Result<NodeEndpoint, RuntimeError> {
            Ok(NodeEndpoint {
                name: node.name.clone(),
                peer_addr: "127.0.0.1:1".into(),
                status_url: "http://127.0.0.1:2".into(),
            })
        }
        async fn act(&self, _: &str, action: NodeAction) -> Result<(), RuntimeError> {
            assert_eq!(
                action,
                NodeAction::Kill,
                "only a kill may reach the runtime"
            );
            Ok(())
        }
        async fn partition(&self, _: &[Vec<String>], _: bool) -> Result<(), RuntimeError> {
            unreachable!("refused from the capabilities")
        }
        async fn heal(&self) -> Result<(), RuntimeError> {
            unreachable!("refused from the capabilities")
        }
        async fn teardown(&mut self) -> Result<TeardownReport, RuntimeError> {
            Ok(TeardownReport::default())
        }
        async fn list_runs(&self) -> Result<Vec<RunListing>, RuntimeError> {
            Ok(Vec::new())
        }
        async fn remove_run(
            &self,
            _: Option<&str>,
            _: Option<&Path>,
        ) -> Result<TeardownReport, RuntimeError> {
            Ok(TeardownReport::default())
        }
    }

    fn session() -> Session {
        let topology = crate::topology::parse_str(
            "name: caps\ngenesis: {count: 1}\ngroups:\n  - {name: peers, count: 1}\n",
            "caps.yaml",
        )
        .expect("valid");
        let plan = crate::orchestrator::plan::build(
            &topology,
            1,
            "caps-000001",
            Path::new("/nonexistent"),
            false,
        )
        .expect("a plan");
        Session::new(Box::new(KillOnly), plan, topology, 1).expect("a session")
    }

    #[tokio::test]
    async fn faults_outside_the_capabilities_are_refused_up_front() {
        let s = session();
        s.join("peers-0").await.expect("a start");
        s.act("peers-0", Fault::Kill)
            .await
            .expect("kill is declared");
        assert_eq!(s.live_nodes(), Vec::<String>::new());
        for (result, what) in [
            (s.act("peers-0", Fault::Restart).await, "restart nodes"),
            (s.act("peers-0", Fault::Pause).await, "pause nodes"),
            (
                s.partition(&[vec!["genesis-0".into()], vec!["peers-0".into()]], false)
                    .await,
                "partition",
            ),
            (s.heal().await, "partition (or heal)"),
            (
                s.shape(&["peers-0".into()], None, LinkShape::default())
                    .await,
                "shape links",
            ),
        ] {
            match result {
                Err(RuntimeError::Unsupported { runtime, reason }) => {
                    assert_eq!(runtime, "kill-only");
                    assert!(reason.contains(&format!("it cannot {what}")), "{reason}");
                }
                other => panic!("{what}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_unknown_node_is_named_with_the_known_ones() {
        let s = session();
        let err = s.act("nobody", Fault::Kill).await.unwrap_err();
        assert!(err.to_string().contains("genesis-0, peers-0"), "{err}");
    }
}
