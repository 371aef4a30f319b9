//! A run: start every node of a plan, wait until the network formed, inject broadcasts,
//! observe, and build the report. Teardown is the caller's (see `commands::run`), so that
//! it happens however this ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Mutex;

use super::progress::Progress;
use super::scenario;
use super::{
    BroadcastExpectation, BroadcastStats, CheckResult, FormationExpectation, InjectedBroadcast,
    NodeObservation, Overlay, Report, RunMeta, evaluate_broadcast, evaluate_formation,
};
use crate::client::StatusClient;
use crate::contract::DeliveredMessage;
use crate::runtime::{NodeEndpoint, NodeSpec, RunPlan, Runtime, RuntimeError};
use crate::topology::{Topology, resolve};

/// Nodes started at once.
const START_CONCURRENCY: usize = 16;
/// Set in the environment, a run panics once its nodes are up: how the tests prove that a
/// panicking orchestrator still tears everything down. Not for users.
pub const PANIC_AFTER_START: &str = "PEERLAB_PANIC_AFTER_START";
/// Status sockets asked at once.
const POLL_CONCURRENCY: usize = 64;
/// Polling cadence: quick for small runs, gentler for large ones, where hundreds of status
/// requests a round would otherwise compete with the nodes for the CPU.
pub(super) fn poll_interval(nodes: usize) -> Duration {
    Duration::from_millis((nodes as u64 * 3).clamp(150, 1000))
}
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What a finished run hands back.
pub struct RunOutcome {
    pub report: Report,
    pub overlay: Overlay,
    pub endpoints: Vec<NodeEndpoint>,
}

/// Whether to go on after formation (`run`) or stop there (`up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    FormationOnly,
    AllChecks,
}

/// How much of each node's view a poll fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detail {
    /// Member counts and digests only: what repeated polling needs to decide a check. A
    /// thousand nodes' full lists would be a thousand lists of a thousand members a round,
    /// serialised by nodes that are busy forming the network.
    Brief,
    /// Everything, member lists included: for the report and for saying what differs.
    Listed,
}

pub(super) struct Observer {
    http: reqwest::Client,
    t0: Instant,
    /// Started nodes, in the order they came up.
    pub(super) endpoints: Mutex<Vec<NodeEndpoint>>,
    ready_after: Mutex<HashMap<String, Duration>>,
}

impl Observer {
    pub(super) async fn endpoint_map(&self) -> HashMap<String, NodeEndpoint> {
        self.endpoints
            .lock()
            .await
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }

    pub(super) fn client(&self, ep: &NodeEndpoint) -> StatusClient {
        StatusClient::with_http(&ep.status_url, self.http.clone())
    }

    /// Asks `/ready` of every started node not yet ready; records when each first was.
    pub(super) async fn poll_ready(&self) {
        let pending: Vec<NodeEndpoint> = {
            let ready = self.ready_after.lock().await;
            self.endpoints
                .lock()
                .await
                .iter()
                .filter(|e| !ready.contains_key(&e.name))
                .cloned()
                .collect()
        };
        let answers: Vec<(String, bool)> = futures::stream::iter(pending)
            .map(|ep| async move {
                let ok = self.client(&ep).ready().await.unwrap_or(false);
                (ep.name, ok)
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .collect()
            .await;
        let at = self.t0.elapsed();
        let mut ready = self.ready_after.lock().await;
        for (name, ok) in answers {
            if ok {
                ready.entry(name).or_insert(at);
            }
        }
    }

    /// Observes the given nodes only: a killed or paused node elsewhere in the run costs
    /// nothing (a paused one would hold every poll for the request timeout).
    pub(super) async fn observe(&self, specs: &[NodeSpec], detail: Detail) -> Vec<NodeObservation> {
        let endpoints: HashMap<String, NodeEndpoint> = self
            .endpoints
            .lock()
            .await
            .iter()
            .filter(|e| specs.iter().any(|s| s.name == e.name))
            .map(|e| (e.name.clone(), e.clone()))
            .collect();
        let ready = self.ready_after.lock().await.clone();
        let fetched: HashMap<String, Result<crate::contract::NodeStatus, String>> =
            futures::stream::iter(endpoints.values().cloned())
                .map(|ep| async move {
                    let client = self.client(&ep);
                    let status = match detail {
                        Detail::Listed => client.status().await,
                        Detail::Brief => client.status_brief().await,
                    };
                    let status = status.map_err(|e| e.to_string());
                    (ep.name, status)
                })
                .buffer_unordered(POLL_CONCURRENCY)
                .collect()
                .await;
        specs
            .iter()
            .map(|spec| {
                let url = endpoints
                    .get(&spec.name)
                    .map(|e| e.status_url.clone())
                    .unwrap_or_default();
                let (status, error) = match fetched.get(&spec.name) {
                    Some(Ok(s)) => (Some(s.clone()), None),
                    Some(Err(e)) => (None, Some(e.clone())),
                    None => (None, Some("the node was not started".to_string())),
                };
                NodeObservation {
                    name: spec.name.clone(),
                    status_url: url,
                    status,
                    error,
                    ready_after: ready.get(&spec.name).copied(),
                }
            })
            .collect()
    }
}

/// Starts the plan's nodes on the prepared runtime and checks what they form.
pub async fn execute(
    runtime: &dyn Runtime,
    plan: &RunPlan,
    topology: &Topology,
    seed: u64,
    stage: Stage,
    progress: &mut Progress,
) -> Result<RunOutcome, RuntimeError> {
    let started_at = SystemTime::now();
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(1)
        .build()
        .map_err(|e| RuntimeError::Failed(format!("cannot build an HTTP client: {e}")))?;
    let observer = Arc::new(Observer {
        http,
        t0: Instant::now(),
        endpoints: Mutex::new(Vec::new()),
        ready_after: Mutex::new(HashMap::new()),
    });
    let timeline = resolve(topology, seed).map_err(|e| RuntimeError::Unsupported {
        runtime: runtime.name(),
        reason: format!(
            "scenario step {} (line {}) cannot be resolved with seed {seed}: {}",
            e.step, e.line, e.message
        ),
    })?;
    if stage == Stage::AllChecks {
        scenario::check_support(runtime, &timeline).await?;
    }
    // Nodes of `start: manual` groups wait for a scenario `join`.
    let initial: Vec<NodeSpec> = plan
        .nodes
        .iter()
        .filter(|n| {
            !topology
                .groups
                .iter()
                .any(|g| g.manual && g.name == n.group)
        })
        .cloned()
        .collect();
    let total = initial.len();
    let within = topology.checks.formation.within;
    let deadline = observer.t0 + within;

    // Start the nodes while watching them become ready, so each time-to-ready is honest.
    progress.phase("starting", total as u64);
    let start_all = start_nodes(runtime, &initial, &observer, progress);
    let watch = async {
        loop {
            observer.poll_ready().await;
            tokio::time::sleep(poll_interval(total)).await;
        }
    };
    tokio::select! {
        started = start_all => started?,
        _ = watch => {}
    }
    if std::env::var_os(PANIC_AFTER_START).is_some() {
        panic!("{PANIC_AFTER_START} is set");
    }
    progress.line(&format!(
        "{} started {total} nodes in {:.1}s; waiting for the network to form (deadline {:?})",
        runtime.name(),
        observer.t0.elapsed().as_secs_f64(),
        within
    ));

    progress.phase("ready", total as u64);
    loop {
        observer.poll_ready().await;
        let ready = observer.ready_after.lock().await.len();
        progress.update(ready as u64, &format!("{ready}/{total} nodes ready"));
        if ready == total || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(poll_interval(total)).await;
    }

    let expectation = topology.checks.formation.expectation();
    progress.phase("forming", 1);
    let (observations, mut checks, formed_at) =
        wait_for_formation(&observer, &initial, &expectation, deadline, progress).await;
    match formed_at {
        Some(t) => progress.line(&format!("network formed in {:.2}s", t.as_secs_f64())),
        None => progress.line(&format!("network did not form within {within:?}")),
    }
    checks.insert(0, formation_deadline_check(formed_at, within));

    let mut broadcast_stats: Option<BroadcastStats> = None;
    if stage == Stage::AllChecks {
        if let Some(bc) = &topology.checks.broadcast {
            let live: Vec<String> = observations
                .iter()
                .filter(|o| o.status.is_some())
                .map(|o| o.name.clone())
                .collect();
            progress.phase("broadcast", bc.count as u64);
            let (stats, results) =
                check_broadcast(&observer, plan, bc, &live, seed, progress).await;
            broadcast_stats = Some(stats);
            checks.extend(results);
        }
        if !timeline.is_empty() {
            if formed_at.is_some() {
                checks.extend(scenario::play(runtime, &observer, plan, &timeline, progress).await?);
            } else {
                progress.line("scenario skipped: the network never formed");
            }
        }
    }

    let meta = RunMeta {
        run_id: plan.run_id.clone(),
        topology: topology.name.clone(),
        runtime: runtime.name().to_string(),
        seed,
        started_at,
        formation_time: formed_at,
    };
    let overlay = Overlay::build(&observations);
    let mut report = Report::new(meta, &observations, &overlay, checks, broadcast_stats);
    report.scenario = timeline;
    let endpoints = observer.endpoints.lock().await.clone();
    progress.finish();
    Ok(RunOutcome {
        report,
        overlay,
        endpoints,
    })
}

/// Polls brief views until every formation check holds or the deadline passes, then takes
/// one full view for the report (and, on failure, for saying exactly what differs).
async fn wait_for_formation(
    observer: &Observer,
    nodes: &[NodeSpec],
    expectation: &FormationExpectation,
    deadline: Instant,
    progress: &mut Progress,
) -> (Vec<NodeObservation>, Vec<CheckResult>, Option<Duration>) {
    let all_hold = |checks: &[CheckResult]| checks.iter().all(|c| c.passed);
    loop {
        // A round that began after the deadline cannot show the network formed within it.
        let in_time = Instant::now() <= deadline;
        let observations = observer.observe(nodes, Detail::Brief).await;
        let checks = evaluate_formation(&observations, expectation);
        let passing = checks.iter().filter(|c| c.passed).count();
        progress.update(
            passing as u64,
            &format!("{passing}/{} formation checks hold", checks.len()),
        );
        let formed_at = (in_time && all_hold(&checks)).then(|| observer.t0.elapsed());
        if formed_at.is_some() || Instant::now() >= deadline {
            let observations = observer.observe(nodes, Detail::Listed).await;
            let checks = evaluate_formation(&observations, expectation);
            // The network changed between the two views (a node left, say): poll on.
            if formed_at.is_some() && !all_hold(&checks) && Instant::now() < deadline {
                continue;
            }
            let formed_at = formed_at.filter(|_| all_hold(&checks));
            return (observations, checks, formed_at);
        }
        tokio::time::sleep(poll_interval(nodes.len())).await;
    }
}

fn formation_deadline_check(formed_at: Option<Duration>, within: Duration) -> CheckResult {
    let measured = match formed_at {
        Some(t) => format!("{:.2}s", t.as_secs_f64()),
        None => "not formed".to_string(),
    };
    let failure = match formed_at {
        Some(_) => None,
        None => Some(format!(
            "the formation checks did not all hold within {within:?}; see the failing checks below"
        )),
    };
    CheckResult::new(
        "formed within deadline",
        format!("<= {:.1}s", within.as_secs_f64()),
        measured,
        failure,
        serde_json::json!({ "formation_secs": formed_at.map(|t| t.as_secs_f64()), "within_secs": within.as_secs_f64() }),
    )
}

async fn start_nodes(
    runtime: &dyn Runtime,
    nodes: &[NodeSpec],
    observer: &Observer,
    progress: &mut Progress,
) -> Result<(), RuntimeError> {
    let mut done = 0u64;
    // Genesis nodes one by one: everyone else needs their addresses.
    for spec in nodes.iter().filter(|n| n.genesis) {
        let ep = runtime.start(spec).await?;
        observer.endpoints.lock().await.push(ep);
        done += 1;
        progress.update(done, &format!("started {}", spec.name));
    }
    let t0 = observer.t0;
    let mut starts = futures::stream::iter(nodes.iter().filter(|n| !n.genesis))
        .map(|spec| async move {
            tokio::time::sleep_until((t0 + spec.start_after).into()).await;
            (spec.name.clone(), runtime.start(spec).await)
        })
        // Unordered: a node slow to come up must not hold the slots of those behind it.
        .buffer_unordered(START_CONCURRENCY);
    while let Some((name, result)) = starts.next().await {
        let ep = result?;
        observer.endpoints.lock().await.push(ep);
        done += 1;
        progress.update(done, &format!("started {name}"));
    }
    Ok(())
}

/// Picks senders (seeded), injects the broadcasts, and follows `/messages` until every live
/// node has every message or the deadline passes.
async fn check_broadcast(
    observer: &Observer,
    plan: &RunPlan,
    bc: &crate::topology::BroadcastChecks,
    live: &[String],
    seed: u64,
    progress: &mut Progress,
) -> (BroadcastStats, Vec<CheckResult>) {
    let endpoints: HashMap<String, NodeEndpoint> = observer
        .endpoints
        .lock()
        .await
        .iter()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    let candidates = senders_matching(&bc.from, &names, live);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6272_6f61_6463_6173);
    let mut injected = Vec::new();
    for i in 0..bc.count {
        if candidates.is_empty() {
            break;
        }
        let from = candidates[rng.random_range(0..candidates.len())].clone();
        let Some(ep) = endpoints.get(&from) else {
            continue;
        };
        let message = format!("peerlab check {} #{i} from {from}", plan.run_id);
        let sent_at_unix = unix_now();
        match observer.client(ep).broadcast("#BROADCAST", &message).await {
            Ok(id) => injected.push(InjectedBroadcast {
                id,
                from: from.clone(),
                sent_at_unix,
            }),
            Err(e) => progress.line(&format!("broadcast from {from} failed: {e}")),
        }
        progress.update(injected.len() as u64, "broadcasts injected");
    }
    let expect = BroadcastExpectation {
        deliver_within: bc.deliver_within,
        reliability: bc.reliability,
    };
    let ids: Vec<String> = injected.iter().map(|b| b.id.clone()).collect();
    let deadline = Instant::now() + bc.deliver_within;
    progress.phase("delivery", live.len() as u64);
    let delivered = loop {
        let delivered: BTreeMap<String, Vec<DeliveredMessage>> =
            futures::stream::iter(live.iter().filter_map(|n| endpoints.get(n).cloned()))
                .map(|ep| async move {
                    let msgs = observer.client(&ep).messages().await.ok();
                    (ep.name, msgs)
                })
                .buffer_unordered(POLL_CONCURRENCY)
                .filter_map(|(name, msgs)| async move { msgs.map(|m| (name, m)) })
                .collect()
                .await;
        let complete = delivered
            .values()
            .filter(|msgs| ids.iter().all(|id| msgs.iter().any(|m| &m.id == id)))
            .count();
        progress.update(
            complete as u64,
            &format!("{complete}/{} nodes have every broadcast", live.len()),
        );
        if complete == live.len() || Instant::now() >= deadline {
            break delivered;
        }
        tokio::time::sleep(poll_interval(live.len())).await;
    };
    evaluate_broadcast(&injected, &delivered, &expect, live)
}

/// Names matching any of the patterns (names or globs) that are live; all live nodes when
/// no pattern is given.
fn senders_matching(patterns: &[String], names: &[String], live: &[String]) -> Vec<String> {
    let compiled: Vec<glob::Pattern> = patterns
        .iter()
        .filter_map(|p| glob::Pattern::new(p).ok())
        .collect();
    names
        .iter()
        .filter(|n| live.contains(n))
        .filter(|n| compiled.is_empty() || compiled.iter().any(|p| p.matches(n)))
        .cloned()
        .collect()
}

pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_follow_patterns_and_liveness() {
        let names: Vec<String> = ["genesis-0", "peers-0", "peers-1", "edge-0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let live: Vec<String> = names[..3].to_vec();
        let picked = senders_matching(&["peers-*".into(), "edge-0".into()], &names, &live);
        assert_eq!(picked, vec!["peers-0".to_string(), "peers-1".to_string()]);
        assert_eq!(senders_matching(&[], &names, &live).len(), 3);
    }

    #[test]
    fn a_missed_deadline_is_a_failed_check() {
        let failed = formation_deadline_check(None, Duration::from_secs(5));
        assert!(!failed.passed);
        let ok =
            formation_deadline_check(Some(Duration::from_millis(1500)), Duration::from_secs(5));
        assert!(ok.passed);
        assert_eq!(ok.measured, "1.50s");
    }
}
