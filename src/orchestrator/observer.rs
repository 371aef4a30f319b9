//! The one poller of status sockets: readiness, views for the formation checks, delivered
//! broadcasts, and the broadcasts the orchestrator injects.
//!
//! A run, the scenario player, [`crate::lab::Lab`], the benches and the tests all watch
//! nodes through an [`Observer`], so "poll until the overlay formed, then take one full
//! view" and "inject broadcasts, then poll `/messages` until they arrived" exist once, and
//! every caller decides with the same checks ([`super::evaluate_formation`]).
//!
//! Polling is cheap on purpose: rounds ask at most [`POLL_CONCURRENCY`] sockets at once,
//! repeated rounds fetch brief views (counts and digests, no member lists) and the pause
//! between rounds grows with the network ([`poll_interval`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use super::{
    CheckResult, FormationExpectation, InjectedBroadcast, NodeObservation, evaluate_formation,
};
use crate::client::StatusClient;
use crate::contract::{DeliveredMessage, NodeStatus};
use crate::runtime::NodeEndpoint;

pub use crate::contract::status::POLL_CONCURRENCY;
/// How long one status request may take. Only a paused node takes that long, and callers
/// leave paused nodes out of what they observe.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between two polling rounds over `nodes` nodes: quick for small runs, gentler for
/// large ones, where hundreds of status requests a round would otherwise compete with the
/// nodes for the CPU.
pub fn poll_interval(nodes: usize) -> Duration {
    Duration::from_millis((nodes as u64 * 3).clamp(150, 1000))
}

/// How much of each node's view a poll fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Member counts and digests only: what repeated polling needs to decide a check. A
    /// thousand nodes' full lists would be a thousand lists of a thousand members a round,
    /// serialised by nodes that are busy forming the network.
    Brief,
    /// Everything, member lists included: for the report and for saying what differs.
    Listed,
}

/// What [`Observer::wait_formed`] saw: the last full view and the checks over it.
#[derive(Debug, Clone)]
pub struct Formation {
    /// One full ([`Detail::Listed`]) view of the observed nodes, taken at the end.
    pub observations: Vec<NodeObservation>,
    /// The formation checks over `observations`.
    pub checks: Vec<CheckResult>,
    /// When every check held, counted from [`Observer::started_at`]; `None` when they did
    /// not all hold before the deadline.
    pub formed_at: Option<Duration>,
}

impl Formation {
    /// Every formation check held before the deadline.
    pub fn formed(&self) -> bool {
        self.formed_at.is_some()
    }

    /// The checks that failed, for a test's failure message.
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }
}

/// What [`Observer::wait_until`] saw.
#[derive(Debug, Clone)]
pub struct Waited {
    /// From the call to the end of the first round that saw the condition hold (so it surely
    /// held by then); `None` when it never did before the deadline.
    pub held_after: Option<Duration>,
    /// Why the condition did not hold in the last round; `None` when it held.
    pub problem: Option<String>,
    /// The last round's observations.
    pub observations: Vec<NodeObservation>,
    /// Polling rounds made.
    pub rounds: usize,
}

impl Waited {
    /// The condition held before the deadline.
    pub fn held(&self) -> bool {
        self.held_after.is_some()
    }
}

/// Watches the nodes of one run through their status sockets; see the module docs.
///
/// Endpoints are added as nodes start (and replaced when a node comes back elsewhere), so
/// the observer always asks a node where it is now. Every method takes `&self`: a run starts
/// nodes while the same observer watches them become ready.
#[derive(Debug)]
pub struct Observer {
    http: reqwest::Client,
    t0: Instant,
    /// Started nodes, in the order they came up.
    endpoints: Mutex<Vec<NodeEndpoint>>,
    /// When each node first answered `/ready`, counted from `t0`.
    ready_after: Mutex<HashMap<String, Duration>>,
}

impl Observer {
    /// An observer whose clock (readiness and formation times) starts now.
    pub fn new() -> anyhow::Result<Observer> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(crate::contract::status::CLIENT_IDLE)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {e}"))?;
        Ok(Observer {
            http,
            t0: Instant::now(),
            endpoints: Mutex::new(Vec::new()),
            ready_after: Mutex::new(HashMap::new()),
        })
    }

    /// An observer of nodes that are already running.
    pub fn with_endpoints(
        endpoints: impl IntoIterator<Item = NodeEndpoint>,
    ) -> anyhow::Result<Self> {
        let observer = Observer::new()?;
        for ep in endpoints {
            observer.add(ep);
        }
        Ok(observer)
    }

    /// When this observer's clock started: readiness and formation times count from here.
    pub fn started_at(&self) -> Instant {
        self.t0
    }

    /// Records where a node is reached, replacing what was known of a node of that name
    /// (a container started again can get a new published port).
    pub fn add(&self, endpoint: NodeEndpoint) {
        let mut endpoints = lock(&self.endpoints);
        match endpoints.iter_mut().find(|e| e.name == endpoint.name) {
            Some(known) => *known = endpoint,
            None => endpoints.push(endpoint),
        }
    }

    /// Forgets a node: it is no longer asked anything (a node `peerlab check` no longer
    /// finds, or found again under another name).
    pub fn remove(&self, name: &str) {
        lock(&self.endpoints).retain(|e| e.name != name);
        lock(&self.ready_after).remove(name);
    }

    /// Every known endpoint, in the order the nodes started.
    pub fn endpoints(&self) -> Vec<NodeEndpoint> {
        lock(&self.endpoints).clone()
    }

    /// Where the named node is reached, if it was started.
    pub fn endpoint(&self, name: &str) -> Option<NodeEndpoint> {
        lock(&self.endpoints)
            .iter()
            .find(|e| e.name == name)
            .cloned()
    }

    /// A client of the named node's status socket, sharing this observer's connection pool.
    pub fn client(&self, name: &str) -> Option<StatusClient> {
        self.endpoint(name).map(|ep| self.client_for(&ep))
    }

    /// A client of one endpoint's status socket, sharing this observer's connection pool.
    pub fn client_for(&self, endpoint: &NodeEndpoint) -> StatusClient {
        StatusClient::with_http(&endpoint.status_url, self.http.clone())
    }

    /// The HTTP client every request of this observer goes through.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// How many started nodes have answered `/ready` at least once.
    pub fn ready_count(&self) -> usize {
        lock(&self.ready_after).len()
    }

    /// When the named node first answered `/ready`, counted from [`Self::started_at`].
    pub fn ready_after(&self, name: &str) -> Option<Duration> {
        lock(&self.ready_after).get(name).copied()
    }

    /// Asks `/ready` of every started node not yet ready, and records when each first was;
    /// returns how many started nodes have been ready.
    pub async fn poll_ready(&self) -> usize {
        let pending: Vec<NodeEndpoint> = {
            let ready = lock(&self.ready_after);
            lock(&self.endpoints)
                .iter()
                .filter(|e| !ready.contains_key(&e.name))
                .cloned()
                .collect()
        };
        let answers: Vec<(String, bool)> = futures::stream::iter(pending)
            .map(|ep| async move {
                let ok = self.client_for(&ep).ready().await.unwrap_or(false);
                (ep.name, ok)
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .collect()
            .await;
        let at = self.t0.elapsed();
        let mut ready = lock(&self.ready_after);
        for (name, ok) in answers {
            if ok {
                ready.entry(name).or_insert(at);
            }
        }
        ready.len()
    }

    /// Observes the named nodes only, in the order given: a killed or paused node elsewhere
    /// in the run costs nothing (a paused one would hold every poll for the request timeout).
    /// A name that was never started is an observation without status that says so.
    pub async fn observe(&self, names: &[String], detail: Detail) -> Vec<NodeObservation> {
        let endpoints: HashMap<String, NodeEndpoint> = lock(&self.endpoints)
            .iter()
            .filter(|e| names.contains(&e.name))
            .map(|e| (e.name.clone(), e.clone()))
            .collect();
        let fetched: HashMap<String, Result<NodeStatus, String>> =
            futures::stream::iter(endpoints.values().cloned())
                .map(|ep| async move {
                    let client = self.client_for(&ep);
                    let status = match detail {
                        Detail::Listed => client.status().await,
                        Detail::Brief => client.status_brief().await,
                    };
                    (ep.name, status.map_err(|e| e.to_string()))
                })
                .buffer_unordered(POLL_CONCURRENCY)
                .collect()
                .await;
        let ready = lock(&self.ready_after).clone();
        names
            .iter()
            .map(|name| {
                let url = endpoints
                    .get(name)
                    .map(|e| e.status_url.clone())
                    .unwrap_or_default();
                let (status, error) = match fetched.get(name) {
                    Some(Ok(s)) => (Some(s.clone()), None),
                    Some(Err(e)) => (None, Some(e.clone())),
                    None => (None, Some("the node was not started".to_string())),
                };
                NodeObservation {
                    name: name.clone(),
                    status_url: url,
                    status,
                    error,
                    ready_after: ready.get(name).copied(),
                }
            })
            .collect()
    }

    /// Polls brief views of `names` until every check of `expectation` holds or `deadline`
    /// passes, then takes one full view for the result (and, on failure, for saying exactly
    /// what differs). Readiness is polled in every round too. `on_round` hears after each
    /// round how many checks hold, of how many.
    ///
    /// A round that began after the deadline cannot show the network formed in time; a
    /// network that changed between the brief and the full view (a node left) is polled on
    /// while there is time.
    pub async fn wait_formed(
        &self,
        names: &[String],
        expectation: &FormationExpectation,
        deadline: Instant,
        on_round: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Formation {
        let all_hold = |checks: &[CheckResult]| checks.iter().all(|c| c.passed);
        loop {
            let in_time = Instant::now() <= deadline;
            self.poll_ready().await;
            let observations = self.observe(names, Detail::Brief).await;
            let checks = evaluate_formation(&observations, expectation);
            let passing = checks.iter().filter(|c| c.passed).count();
            on_round(passing, checks.len());
            let formed_at = (in_time && all_hold(&checks)).then(|| self.t0.elapsed());
            if formed_at.is_some() || Instant::now() >= deadline {
                let observations = self.observe(names, Detail::Listed).await;
                let checks = evaluate_formation(&observations, expectation);
                if formed_at.is_some() && !all_hold(&checks) && Instant::now() < deadline {
                    continue;
                }
                let formed_at = formed_at.filter(|_| all_hold(&checks));
                return Formation {
                    observations,
                    checks,
                    formed_at,
                };
            }
            tokio::time::sleep(poll_interval(names.len())).await;
        }
    }

    /// Polls `names` at `detail` until `check` says the condition holds (returns `None`) or
    /// `deadline` passes; `check` otherwise says why not (`Some(reason)`). For conditions the
    /// formation checks do not express (a benchmark's, a test's own).
    pub async fn wait_until<F>(
        &self,
        names: &[String],
        detail: Detail,
        deadline: Instant,
        mut check: F,
    ) -> Waited
    where
        F: FnMut(&[NodeObservation]) -> Option<String> + Send,
    {
        let from = Instant::now();
        let mut rounds = 0;
        loop {
            let observations = self.observe(names, detail).await;
            rounds += 1;
            let problem = check(&observations);
            if problem.is_none() || Instant::now() >= deadline {
                return Waited {
                    held_after: problem.is_none().then(|| from.elapsed()),
                    problem,
                    observations,
                    rounds,
                };
            }
            tokio::time::sleep(poll_interval(names.len())).await;
        }
    }

    /// Every named node's `GET /messages`; a node that does not answer is left out (and so
    /// counts as having delivered nothing).
    pub async fn messages(&self, names: &[String]) -> BTreeMap<String, Vec<DeliveredMessage>> {
        let targets: Vec<NodeEndpoint> = lock(&self.endpoints)
            .iter()
            .filter(|e| names.contains(&e.name))
            .cloned()
            .collect();
        futures::stream::iter(targets)
            .map(|ep| async move {
                let msgs = self.client_for(&ep).messages().await.ok();
                (ep.name, msgs)
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .filter_map(|(name, msgs)| async move { msgs.map(|m| (name, m)) })
            .collect()
            .await
    }

    /// Injects one broadcast at each sender in turn (a name may repeat), with the message
    /// `"{label} #{i} from {sender}"`. Returns what the nodes accepted, and one line per
    /// broadcast that failed (a sender not started, or one that refused).
    pub async fn inject(
        &self,
        senders: &[String],
        label: &str,
    ) -> (Vec<InjectedBroadcast>, Vec<String>) {
        let mut injected = Vec::new();
        let mut failed = Vec::new();
        for (i, sender) in senders.iter().enumerate() {
            let Some(client) = self.client(sender) else {
                failed.push(format!(
                    "broadcast from {sender} failed: it was not started"
                ));
                continue;
            };
            let message = format!("{label} #{i} from {sender}");
            let sent_at_unix = unix_now();
            match client.broadcast("#BROADCAST", &message).await {
                Ok(id) => injected.push(InjectedBroadcast {
                    id,
                    from: sender.clone(),
                    sent_at_unix,
                }),
                Err(e) => failed.push(format!("broadcast from {sender} failed: {e}")),
            }
        }
        (injected, failed)
    }

    /// Polls `/messages` of `names` until each has delivered every one of `ids`, or the
    /// deadline passes; returns the last messages seen. `on_round` hears after each round
    /// how many nodes have every message, of how many.
    pub async fn wait_delivered(
        &self,
        ids: &[String],
        names: &[String],
        deadline: Instant,
        on_round: &mut (dyn FnMut(usize, usize) + Send),
    ) -> BTreeMap<String, Vec<DeliveredMessage>> {
        loop {
            let delivered = self.messages(names).await;
            let complete = delivered
                .values()
                .filter(|msgs| ids.iter().all(|id| msgs.iter().any(|m| &m.id == id)))
                .count();
            on_round(complete, names.len());
            if complete == names.len() || Instant::now() >= deadline {
                return delivered;
            }
            tokio::time::sleep(poll_interval(names.len())).await;
        }
    }
}

/// Seconds since the Unix epoch, as the broadcast checks compare them with the nodes'.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Locks a mutex that is never held across an await, ignoring poisoning: a panic elsewhere
/// must not stop the teardown that follows it from reading the endpoints.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, port: u16) -> NodeEndpoint {
        NodeEndpoint {
            name: name.into(),
            peer_addr: format!("127.0.0.1:{port}"),
            status_url: format!("http://127.0.0.1:{}", port + 1),
        }
    }

    #[test]
    fn a_node_started_again_replaces_its_endpoint() {
        let observer = Observer::new().expect("an observer");
        observer.add(ep("a", 1000));
        observer.add(ep("b", 2000));
        observer.add(ep("a", 3000));
        let names: Vec<String> = observer.endpoints().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            observer.endpoint("a").map(|e| e.status_url),
            Some("http://127.0.0.1:3001".to_string())
        );
    }

    #[tokio::test]
    async fn a_node_never_started_is_observed_as_such() {
        let observer = Observer::new().expect("an observer");
        let seen = observer
            .observe(&["ghost".to_string()], Detail::Brief)
            .await;
        assert_eq!(seen.len(), 1);
        assert!(seen[0].status.is_none());
        assert_eq!(seen[0].error.as_deref(), Some("the node was not started"));
    }

    #[test]
    fn polling_slows_down_with_size() {
        assert_eq!(poll_interval(5), Duration::from_millis(150));
        assert_eq!(poll_interval(200), Duration::from_millis(600));
        assert_eq!(poll_interval(5000), Duration::from_millis(1000));
    }
}
