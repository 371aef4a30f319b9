//! Partitions and link shaping through the nodes' own admin endpoints (`/admin/*`).
//!
//! Every runtime can reach every node's status socket, and the node can cut and shape its
//! own links, so this works everywhere: no NET_ADMIN, no netem, no iptables. Runtimes keep
//! one [`LinkFaults`] and give it the nodes' endpoints; it remembers which nodes carry
//! faults, so `heal` and teardown undo them all and verify, through `GET /admin/faults`,
//! that nothing is left.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;

use super::{NodeEndpoint, RuntimeError};
use crate::contract::AdminToken;
use crate::contract::LinkShape;
use crate::contract::admin::{BlockRequest, Direction, FaultsReport, ShapeRequest, UnblockRequest};

/// How long one admin call may take (a paused node never answers).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Nodes carrying faults this run applied.
#[derive(Debug, Default)]
struct Applied {
    blocked: BTreeSet<String>,
    shaped: BTreeSet<String>,
}

/// A partition by node name, as the runtime was asked for it.
type NamedPartition = (Vec<Vec<String>>, bool);

/// Link faults applied through the nodes; see the module docs.
#[derive(Debug)]
pub struct LinkFaults {
    http: reqwest::Client,
    applied: Mutex<Applied>,
    /// The partition in force by name ([`LinkFaults::partition_named`] until a heal): a node
    /// that starts anew lost its blocks with its process, and [`LinkFaults::recut_named`]
    /// cuts them again.
    in_force: Mutex<Option<NamedPartition>>,
    /// The run's admin token ([`LinkFaults::use_token`]), sent with every call.
    token: Mutex<Option<AdminToken>>,
}

impl Default for LinkFaults {
    fn default() -> Self {
        Self::new()
    }
}

/// What the blocks of one node name: every name and address of the nodes it is cut from.
fn peer_keys(peers: &[&NodeEndpoint]) -> Vec<String> {
    peers
        .iter()
        .flat_map(|p| [p.name.clone(), p.peer_addr.clone()])
        .collect()
}

/// A lock whose holder panicked still guards plain bookkeeping: take it anyway.
fn relock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Looks nodes up by name in a runtime's bookkeeping, refusing names it did not start.
pub type Lookup<'a> = &'a (dyn Fn(&[String]) -> Result<Vec<NodeEndpoint>, RuntimeError> + Sync);

/// The same faults addressed by node name: what both runtimes' trait methods need.
impl LinkFaults {
    /// Partitions nodes given by name: each side only reaches its own (`one_way`: only the
    /// first side's traffic to the others is cut).
    /// The partition is remembered until [`LinkFaults::heal_all`], for
    /// [`LinkFaults::recut_named`].
    pub async fn partition_named(
        &self,
        lookup: Lookup<'_>,
        sides: &[Vec<String>],
        one_way: bool,
    ) -> Result<(), RuntimeError> {
        *relock(&self.in_force) = Some((sides.to_vec(), one_way));
        self.cut_named(lookup, sides, one_way).await
    }

    /// After a node started anew: the partition in force, if any, cut again, leaving out
    /// the nodes in `down` (they cannot answer). Blocks are idempotent, so the whole
    /// partition is posted again to the nodes that are up.
    pub async fn recut_named(
        &self,
        lookup: Lookup<'_>,
        down: &BTreeSet<String>,
    ) -> Result<(), RuntimeError> {
        let Some((sides, one_way)) = relock(&self.in_force).clone() else {
            return Ok(());
        };
        let sides: Vec<Vec<String>> = sides
            .into_iter()
            .map(|side| side.into_iter().filter(|n| !down.contains(n)).collect())
            .collect();
        self.cut_named(lookup, &sides, one_way).await
    }

    async fn cut_named(
        &self,
        lookup: Lookup<'_>,
        sides: &[Vec<String>],
        one_way: bool,
    ) -> Result<(), RuntimeError> {
        let sides: Vec<Vec<NodeEndpoint>> = sides
            .iter()
            .map(|side| lookup(side))
            .collect::<Result<_, _>>()?;
        let refs: Vec<Vec<&NodeEndpoint>> = sides.iter().map(|s| s.iter().collect()).collect();
        self.partition(&refs, one_way).await
    }

    /// Shapes the links of nodes given by name (towards `peers` only, when given).
    pub async fn shape_named(
        &self,
        lookup: Lookup<'_>,
        nodes: &[String],
        peers: Option<&[String]>,
        shape: LinkShape,
    ) -> Result<(), RuntimeError> {
        let nodes = lookup(nodes)?;
        let peers = peers.map(lookup).transpose()?;
        let node_refs: Vec<&NodeEndpoint> = nodes.iter().collect();
        let peer_refs: Option<Vec<&NodeEndpoint>> = peers.as_ref().map(|p| p.iter().collect());
        self.shape(&node_refs, peer_refs.as_deref(), shape).await
    }

    /// Lifts every partition and shape on these nodes; no partition is in force after it.
    pub async fn heal_all(&self, all: &[NodeEndpoint]) -> Result<(), RuntimeError> {
        *relock(&self.in_force) = None;
        self.heal(&all.iter().collect::<Vec<_>>()).await
    }

    /// Undoes every fault on these nodes; returns what could not be undone.
    pub async fn clear_all(&self, all: &[NodeEndpoint]) -> Vec<String> {
        self.clear(&all.iter().collect::<Vec<_>>()).await
    }
}

impl LinkFaults {
    /// A fault applier with its own short-timeout HTTP client.
    pub fn new() -> Self {
        LinkFaults {
            http: reqwest::Client::builder()
                .timeout(ADMIN_TIMEOUT)
                .pool_idle_timeout(crate::contract::status::CLIENT_IDLE)
                .build()
                .unwrap_or_default(),
            applied: Mutex::new(Applied::default()),
            in_force: Mutex::new(None),
            token: Mutex::new(None),
        }
    }

    /// Sends `token` (the run's, which its nodes were started with) with every admin call.
    pub fn use_token(&self, token: AdminToken) {
        *relock(&self.token) = Some(token);
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        relock(&self.applied)
    }

    /// Cuts every pair of sides. Both ways: each node blocks the other sides' nodes in both
    /// directions. `one_way`: traffic from `sides[0]` to the others is dropped (they block it
    /// `in`, and `sides[0]` blocks them `out`, so its dials to them time out too), while their
    /// frames still reach `sides[0]`. TCP needs both ways, so in practice only connections
    /// already open carry the B-to-A traffic, as with a real one-way drop.
    pub async fn partition(
        &self,
        sides: &[Vec<&NodeEndpoint>],
        one_way: bool,
    ) -> Result<(), RuntimeError> {
        if sides.len() < 2 {
            return Err(RuntimeError::Failed(
                "a partition needs at least two sides".into(),
            ));
        }
        let mut requests = Vec::new();
        for (i, side) in sides.iter().enumerate() {
            let (others, direction): (Vec<&NodeEndpoint>, Direction) = if !one_way {
                let others = sides
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, s)| s.iter().copied())
                    .collect();
                (others, Direction::Both)
            } else if i == 0 {
                let others = sides[1..].iter().flatten().copied().collect();
                (others, Direction::Out)
            } else {
                (sides[0].clone(), Direction::In)
            };
            let request = BlockRequest {
                peers: peer_keys(&others),
                direction,
            };
            for node in side {
                self.applied().blocked.insert(node.name.clone());
                requests.push((*node, request.clone()));
            }
        }
        let calls = requests
            .iter()
            .map(|(node, request)| self.post(node, "/admin/block", Some(request)));
        first_error(join_all(calls).await)
    }

    /// Lifts every block this run applied, and checks that none is left.
    pub async fn heal(&self, nodes: &[&NodeEndpoint]) -> Result<(), RuntimeError> {
        let blocked = std::mem::take(&mut self.applied().blocked);
        let targets: Vec<&NodeEndpoint> = nodes
            .iter()
            .copied()
            .filter(|n| blocked.contains(&n.name))
            .collect();
        let unblock = UnblockRequest::default();
        let results = join_all(
            targets
                .iter()
                .map(|n| self.post(n, "/admin/unblock", Some(&unblock))),
        )
        .await;
        let mut problems = Vec::new();
        for (node, result) in targets.iter().zip(results) {
            match result {
                Ok(report) if report.blocked.is_empty() => {}
                Ok(report) => problems.push(format!(
                    "{} still blocks {:?}",
                    node.name,
                    report.blocked.keys()
                )),
                Err(e) => {
                    self.applied().blocked.insert(node.name.clone());
                    problems.push(e.to_string());
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Failed(format!(
                "could not heal the partition: {}",
                problems.join("; ")
            )))
        }
    }

    /// Shapes the outgoing links of `nodes` (towards `peers` only, when given). The
    /// default [`LinkShape`] (no delay, loss or limit) clears every shape on those nodes.
    pub async fn shape(
        &self,
        nodes: &[&NodeEndpoint],
        peers: Option<&[&NodeEndpoint]>,
        shape: LinkShape,
    ) -> Result<(), RuntimeError> {
        if shape == LinkShape::default() {
            let results = join_all(nodes.iter().map(|n| self.delete_shape(n))).await;
            let mut applied = self.applied();
            for n in nodes {
                applied.shaped.remove(&n.name);
            }
            drop(applied);
            return first_error(results);
        }
        let request = ShapeRequest::new(shape, peers.map(peer_keys));
        for n in nodes {
            self.applied().shaped.insert(n.name.clone());
        }
        let results = join_all(
            nodes
                .iter()
                .map(|n| self.post(n, "/admin/shape", Some(&request))),
        )
        .await;
        first_error(results)
    }

    /// Shapes `node`'s links towards the peers named by `keys` (ids, addresses or bare IPs,
    /// which may belong to nodes not started yet), waiting up to `patience` for a node that
    /// just started to answer: a container runs before its node listens.
    pub async fn shape_keys(
        &self,
        node: &NodeEndpoint,
        keys: Vec<String>,
        shape: LinkShape,
        patience: Duration,
    ) -> Result<(), RuntimeError> {
        let deadline = tokio::time::Instant::now() + patience;
        let request = ShapeRequest::new(shape, Some(keys));
        self.applied().shaped.insert(node.name.clone());
        loop {
            match self.post(node, "/admin/shape", Some(&request)).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_unreachable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(RuntimeError::Failed(e.to_string())),
            }
        }
    }

    /// Undoes every fault this run applied; returns what is left (for the teardown report).
    /// A node that no longer answers took its faults with it: they lived in its process.
    pub async fn clear(&self, nodes: &[&NodeEndpoint]) -> Vec<String> {
        let (blocked, shaped) = {
            let mut applied = self.applied();
            (
                std::mem::take(&mut applied.blocked),
                std::mem::take(&mut applied.shaped),
            )
        };
        let targets: Vec<&NodeEndpoint> = nodes
            .iter()
            .copied()
            .filter(|n| blocked.contains(&n.name) || shaped.contains(&n.name))
            .collect();
        let results = join_all(targets.iter().map(|n| self.clear_one(n))).await;
        results.into_iter().flatten().collect()
    }

    async fn clear_one(&self, node: &NodeEndpoint) -> Option<String> {
        let unblock = UnblockRequest::default();
        if let Err(e) = self.post(node, "/admin/unblock", Some(&unblock)).await {
            return (!e.is_unreachable()).then(|| e.to_string());
        }
        match self.delete_shape(node).await {
            Ok(report) if report.is_clear() => None,
            Ok(report) => Some(format!(
                "{}: link faults left in force: {:?} {:?}",
                node.name,
                report.blocked.keys(),
                report.shaped.keys()
            )),
            Err(e) if e.is_unreachable() => None,
            Err(e) => Some(e.to_string()),
        }
    }

    async fn post<T: serde::Serialize>(
        &self,
        node: &NodeEndpoint,
        path: &str,
        body: Option<&T>,
    ) -> Result<FaultsReport, AdminError> {
        let mut request = self.http.post(format!("{}{path}", node.status_url));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(node, path, request).await
    }

    async fn delete_shape(&self, node: &NodeEndpoint) -> Result<FaultsReport, AdminError> {
        let request = self.http.delete(format!("{}/admin/shape", node.status_url));
        self.send(node, "/admin/shape", request).await
    }

    async fn send(
        &self,
        node: &NodeEndpoint,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<FaultsReport, AdminError> {
        let token = relock(&self.token).clone();
        let request = match token {
            Some(token) => request.header(reqwest::header::AUTHORIZATION, token.bearer()),
            None => request,
        };
        let response = request.send().await.map_err(|e| AdminError::Unreachable {
            node: node.name.clone(),
            path: path.to_string(),
            error: error_chain(&e),
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(AdminError::Refused {
                node: node.name.clone(),
                path: path.to_string(),
                error: format!("{status}: {}", text.trim()),
            });
        }
        response
            .json::<FaultsReport>()
            .await
            .map_err(|e| AdminError::Refused {
                node: node.name.clone(),
                path: path.to_string(),
                error: format!("unexpected answer: {e}"),
            })
    }
}

#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("{node} did not answer {path} ({error}); is it running (not paused or killed)?")]
    Unreachable {
        node: String,
        path: String,
        error: String,
    },
    #[error("{node} refused {path}: {error}")]
    Refused {
        node: String,
        path: String,
        error: String,
    },
}

impl AdminError {
    fn is_unreachable(&self) -> bool {
        matches!(self, AdminError::Unreachable { .. })
    }
}

fn first_error(results: Vec<Result<FaultsReport, AdminError>>) -> Result<(), RuntimeError> {
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Failed(errors.join("; ")))
    }
}

/// reqwest's message hides the cause (refused, timed out); show the whole chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
