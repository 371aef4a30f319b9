//! The checks of a run over a [`Session`]: wait until the network formed, inject the
//! topology's broadcasts and follow their delivery, play the scenario, and build the report.
//!
//! Teardown is the caller's ([`crate::lab::Lab`]), so that it happens however this ends.
//! Every poll goes through the session's [`super::observer::Observer`]; every fault of the
//! scenario through the session's operations ([`super::scenario`]).

use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::observer::Observer;
use super::progress::Progress;
use super::scenario;
use super::session::Session;
use super::{
    BroadcastExpectation, BroadcastStats, CheckResult, Overlay, Report, RunMeta, evaluate_broadcast,
};
use crate::runtime::{NodeEndpoint, RuntimeError};
use crate::topology::{ResolvedStep, Topology, resolve};

/// Set in the environment, a run panics once its nodes are up: how the tests prove that a
/// panicking orchestrator still tears everything down. Not for users.
pub const PANIC_AFTER_START: &str = "PEERLAB_PANIC_AFTER_START";

/// What a finished run hands back.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The checks and per-node views.
    pub report: Report,
    /// The overlay the nodes formed, for the graph writers.
    pub overlay: Overlay,
    /// Where every started node is reached.
    pub endpoints: Vec<NodeEndpoint>,
}

/// Whether to go on after formation (`run`) or stop there (`up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The formation checks only.
    FormationOnly,
    /// Formation, broadcast and the scenario.
    AllChecks,
}

/// Resolves the topology's scenario for `seed`, before anything starts: a timeline that
/// cannot be resolved is bad input (the runtime error says so).
pub fn resolve_timeline(
    topology: &Topology,
    seed: u64,
    runtime: &'static str,
) -> Result<Vec<ResolvedStep>, RuntimeError> {
    resolve(topology, seed).map_err(|e| RuntimeError::Unsupported {
        runtime,
        reason: format!(
            "scenario step {} (line {}) cannot be resolved with seed {seed}: {}",
            e.step, e.line, e.message
        ),
    })
}

/// Starts the run's initial nodes (see [`Session::start_initial`]) and says how long it took.
pub async fn start(session: &Session, progress: &mut Progress) -> Result<(), RuntimeError> {
    session.start_initial(progress).await?;
    let within = session.topology().checks.formation.within;
    progress.line(&format!(
        "{} started {} nodes in {:.1}s; waiting for the network to form (deadline {:?})",
        session.runtime().name(),
        session.initial_nodes().len(),
        session.observer().started_at().elapsed().as_secs_f64(),
        within
    ));
    Ok(())
}

/// Checks what the started nodes formed: readiness, the formation checks within the
/// topology's deadline (counted from the start of the run), and with [`Stage::AllChecks`]
/// the broadcast checks and the scenario `timeline`.
///
/// `formed_before` is when the network was already seen formed, counted from the start of
/// the run (a lab's user waited for it before checking). The deadline check then judges
/// that time, and the formation checks get a fresh `within` from now to hold again: faults
/// a test played in between must not make a formed network fail its deadline.
pub async fn check(
    session: &Session,
    stage: Stage,
    timeline: &[ResolvedStep],
    formed_before: Option<Duration>,
    progress: &mut Progress,
) -> Result<RunOutcome, RuntimeError> {
    let started_at = SystemTime::now() - session.observer().started_at().elapsed();
    let topology = session.topology();
    let observer = session.observer();
    let nodes = session.live_nodes();
    let total = nodes.len();
    let within = topology.checks.formation.within;
    let formed_before = formed_before.filter(|t| *t <= within);
    let deadline = match formed_before {
        Some(_) => Instant::now() + within,
        None => observer.started_at() + within,
    };

    progress.phase("ready", total as u64);
    loop {
        let ready = observer.poll_ready().await;
        progress.update(ready as u64, &format!("{ready}/{total} nodes ready"));
        if ready >= total || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(super::observer::poll_interval(total)).await;
    }

    let expectation = topology.checks.formation.expectation();
    progress.phase("forming", 1);
    let formation = observer
        .wait_formed(&nodes, &expectation, deadline, &mut |passing, all| {
            progress.update(
                passing as u64,
                &format!("{passing}/{all} formation checks hold"),
            )
        })
        .await;
    let formed_at = formation.formed_at.map(|now| formed_before.unwrap_or(now));
    match formed_at {
        Some(t) => progress.line(&format!("network formed in {:.2}s", t.as_secs_f64())),
        None => progress.line(&format!("network did not form within {within:?}")),
    }
    let mut checks = formation.checks;
    checks.insert(0, formation_deadline_check(formed_at, within));
    let observations = formation.observations;

    let mut broadcast_stats: Option<BroadcastStats> = None;
    if stage == Stage::AllChecks {
        if let Some(bc) = &topology.checks.broadcast {
            let live: Vec<String> = observations
                .iter()
                .filter(|o| o.status.is_some())
                .map(|o| o.name.clone())
                .collect();
            progress.phase("broadcast", bc.count as u64);
            let (stats, results) = check_broadcast(session, bc, &live, progress).await;
            broadcast_stats = Some(stats);
            checks.extend(results);
        }
        if !timeline.is_empty() {
            if formed_at.is_some() {
                checks.extend(scenario::play(session, timeline, progress).await?);
            } else {
                progress.line("scenario skipped: the network never formed");
            }
        }
    }

    let meta = RunMeta {
        run_id: session.plan().run_id.clone(),
        topology: topology.name.clone(),
        runtime: session.runtime().name().to_string(),
        seed: session.seed(),
        started_at,
        formation_time: formed_at,
    };
    let overlay = Overlay::build(&observations);
    let mut report = Report::new(meta, &observations, &overlay, checks, broadcast_stats);
    report.scenario = timeline.to_vec();
    progress.finish();
    Ok(RunOutcome {
        report,
        overlay,
        endpoints: observer.endpoints(),
    })
}

pub(crate) fn formation_deadline_check(
    formed_at: Option<Duration>,
    within: Duration,
) -> CheckResult {
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

/// Picks senders (seeded), injects the broadcasts, and follows `/messages` until every live
/// node has every message or the deadline passes.
async fn check_broadcast(
    session: &Session,
    bc: &crate::topology::BroadcastChecks,
    live: &[String],
    progress: &mut Progress,
) -> (BroadcastStats, Vec<CheckResult>) {
    let plan = session.plan();
    let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
    let label = format!("peerlab check {}", plan.run_id);
    broadcast_checks(
        session.observer(),
        bc,
        &names,
        live,
        session.seed(),
        &label,
        progress,
    )
    .await
}

/// The broadcast checks over any observed nodes (a run's, or a network `peerlab check`
/// found): picks `bc.count` senders among the `live` nodes of `names` that match `bc.from`
/// (seeded by `seed`), injects one broadcast at each (labelled `label`), and follows
/// `/messages` until every live node has every message or `bc.deliver_within` passes.
pub(crate) async fn broadcast_checks(
    observer: &Observer,
    bc: &crate::topology::BroadcastChecks,
    names: &[String],
    live: &[String],
    seed: u64,
    label: &str,
    progress: &mut Progress,
) -> (BroadcastStats, Vec<CheckResult>) {
    let candidates = senders_matching(&bc.from, names, live);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6272_6f61_6463_6173);
    let senders: Vec<String> = if candidates.is_empty() {
        Vec::new()
    } else {
        (0..bc.count)
            .map(|_| candidates[rng.random_range(0..candidates.len())].clone())
            .collect()
    };
    let (injected, failed) = observer.inject(&senders, label).await;
    for line in &failed {
        progress.line(line);
    }
    progress.update(injected.len() as u64, "broadcasts injected");
    let expect = BroadcastExpectation {
        deliver_within: bc.deliver_within,
        reliability: bc.reliability,
    };
    let ids: Vec<String> = injected.iter().map(|b| b.id.clone()).collect();
    let deadline = Instant::now() + bc.deliver_within;
    progress.phase("delivery", live.len() as u64);
    let delivered = observer
        .wait_delivered(&ids, live, deadline, &mut |complete, all| {
            progress.update(
                complete as u64,
                &format!("{complete}/{all} nodes have every broadcast"),
            )
        })
        .await;
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
