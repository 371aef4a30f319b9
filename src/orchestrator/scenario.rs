//! Plays a resolved fault timeline against a run once the network formed.
//!
//! Steps run in order, each no earlier than its planned offset; an `expect` polls until
//! its checks hold over the live nodes or its deadline passes, and becomes check results
//! in the report. Every fault goes through the [`Session`]'s operations, the same ones
//! [`crate::lab::Lab`] offers, and every poll through its [`super::observer::Observer`].
//! A runtime that cannot do a step ends the run with an [`RuntimeError::Unsupported`] naming
//! the step (exit 2), though [`check_support`] catches this before any node starts where it
//! can.

use std::time::{Duration, Instant};

use super::progress::Progress;
use super::session::Session;
use super::{BroadcastExpectation, CheckResult, FormationExpectation, evaluate_broadcast};
use crate::runtime::{Capabilities, NodeAction, Runtime, RuntimeError};
use crate::topology::{Fault, ResolvedAction, ResolvedExpect, ResolvedStep};

/// Refuses, before anything starts, a timeline with a step the runtime declares it cannot
/// play (its [`Capabilities`]): a kill, pause, partition or shape it does not support.
pub async fn check_support(
    runtime: &dyn Runtime,
    timeline: &[ResolvedStep],
) -> Result<(), RuntimeError> {
    let can = runtime.capabilities();
    for step in timeline {
        if let Some(missing) = missing_capability(&can, &step.action) {
            let e = RuntimeError::Unsupported {
                runtime: runtime.name(),
                reason: format!("it cannot {missing}"),
            };
            return Err(name_step(e, step));
        }
    }
    Ok(())
}

/// What `action` needs that a runtime with `can` lacks, as the words after "it cannot".
fn missing_capability(can: &Capabilities, action: &ResolvedAction) -> Option<&'static str> {
    match action {
        ResolvedAction::Fault { fault, .. } => {
            let (needs, what): (&[NodeAction], &str) = match fault {
                Fault::Kill => (&[NodeAction::Kill], "kill nodes"),
                Fault::Stop => (&[NodeAction::Stop], "stop nodes"),
                Fault::Start => (&[NodeAction::Start], "start nodes again"),
                Fault::Restart => (&[NodeAction::Stop, NodeAction::Start], "restart nodes"),
                Fault::Pause => (&[NodeAction::Pause], "pause nodes"),
                Fault::Resume => (&[NodeAction::Resume], "resume nodes"),
            };
            (!needs.iter().all(|a| can.supports(*a))).then_some(what)
        }
        ResolvedAction::Partition { one_way, .. } => {
            if !can.partition {
                Some("partition")
            } else if *one_way && !can.one_way_partition {
                Some("partition one way")
            } else {
                None
            }
        }
        ResolvedAction::Heal => (!can.partition).then_some("partition (or heal)"),
        ResolvedAction::Shape { .. } => (!can.shape).then_some("shape links"),
        ResolvedAction::Join { .. }
        | ResolvedAction::Broadcast { .. }
        | ResolvedAction::Wait { .. }
        | ResolvedAction::Expect(_) => None,
    }
}

/// Says which step a runtime error came from, keeping its kind (and so its exit code).
fn name_step(e: RuntimeError, step: &ResolvedStep) -> RuntimeError {
    let at = format!("scenario step {} ({})", step.index, step.text);
    match e {
        RuntimeError::Unsupported { runtime, reason } => RuntimeError::Unsupported {
            runtime,
            reason: format!("{at}: {reason}"),
        },
        other => RuntimeError::Failed(format!("{at}: {other}")),
    }
}

/// Plays every step; returns the check results of the `expect` steps.
pub async fn play(
    session: &Session,
    timeline: &[ResolvedStep],
    progress: &mut Progress,
) -> Result<Vec<CheckResult>, RuntimeError> {
    let t0 = Instant::now();
    let mut previous_end = t0;
    let mut last_fault = "formation".to_string();
    let mut checks = Vec::new();
    progress.phase("scenario", timeline.len() as u64);
    for step in timeline {
        let due = match step.after {
            Some(after) => previous_end + after,
            None => t0 + step.at,
        };
        tokio::time::sleep_until(due.into()).await;
        progress.line(&format!(
            "[{:>6.1}s] step {}: {}",
            t0.elapsed().as_secs_f64(),
            step.index,
            step.text
        ));
        match &step.action {
            ResolvedAction::Expect(e) => {
                let results = expect(session, e, progress).await;
                for mut r in results {
                    r.name = format!("expect#{} {} after {last_fault}", step.index, r.name);
                    progress.line(&format!(
                        "           {} {}: {}",
                        if r.passed { "ok  " } else { "FAIL" },
                        r.name,
                        r.measured
                    ));
                    checks.push(r);
                }
            }
            action => {
                apply(session, action)
                    .await
                    .map_err(|e| name_step(e, step))?;
                if !matches!(
                    action,
                    ResolvedAction::Wait { .. } | ResolvedAction::Broadcast { .. }
                ) {
                    last_fault = step.text.clone();
                }
            }
        }
        previous_end = Instant::now();
        progress.update(step.index as u64, &step.text);
    }
    Ok(checks)
}

async fn apply(session: &Session, action: &ResolvedAction) -> Result<(), RuntimeError> {
    match action {
        ResolvedAction::Fault { fault, nodes } => {
            for node in nodes {
                session.act(node, *fault).await?;
            }
        }
        ResolvedAction::Partition { sides, one_way, .. } => {
            session.partition(sides, *one_way).await?
        }
        ResolvedAction::Heal => session.heal().await?,
        ResolvedAction::Shape {
            nodes,
            peers,
            shape,
        } => {
            session
                .shape(nodes, peers.as_deref(), (*shape).into())
                .await?
        }
        ResolvedAction::Join { nodes } => {
            for name in nodes {
                session.join(name).await?;
            }
        }
        ResolvedAction::Broadcast { from } => {
            inject(session, from).await;
        }
        ResolvedAction::Wait { duration } => tokio::time::sleep(*duration).await,
        ResolvedAction::Expect(_) => {}
    }
    Ok(())
}

/// Polls the formation checks over the live nodes until they hold or the deadline passes,
/// then (when asked) injects broadcasts and waits for their delivery within what is left.
async fn expect(
    session: &Session,
    e: &ResolvedExpect,
    progress: &mut Progress,
) -> Vec<CheckResult> {
    let observer = session.observer();
    let started = Instant::now();
    let deadline = started + e.within;
    // The live nodes in plan order, as the report lists them.
    let live: Vec<String> = session
        .plan()
        .nodes
        .iter()
        .filter(|n| e.live.contains(&n.name))
        .map(|n| n.name.clone())
        .collect();
    let formation = &e.formation;
    let mut results = Vec::new();
    if *formation != FormationExpectation::default() {
        let seen = observer
            .wait_formed(&live, formation, deadline, &mut |_, _| {})
            .await;
        let mut checks = seen.checks;
        let took = started.elapsed().as_secs_f64();
        for c in &mut checks {
            if c.passed {
                c.measured = format!("{} (held after {took:.1}s)", c.measured);
            } else if let Some(m) = &mut c.message {
                *m = format!(
                    "{m} (still failing after {took:.1}s, deadline {:?})",
                    e.within
                );
            }
        }
        results.extend(checks);
    }
    if !e.broadcast_from.is_empty() {
        let injected = inject(session, &e.broadcast_from).await;
        let names: Vec<String> = e.live.clone();
        let ids: Vec<String> = injected.iter().map(|b| b.id.clone()).collect();
        // Whole seconds: the deadline is part of the check's name in every report.
        let remaining = Duration::from_secs(
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .max(1),
        );
        let until = Instant::now() + remaining;
        let delivered = observer
            .wait_delivered(&ids, &names, until, &mut |_, _| {})
            .await;
        let expectation = BroadcastExpectation {
            deliver_within: remaining,
            reliability: e.reliability,
        };
        let (_, checks) = evaluate_broadcast(&injected, &delivered, &expectation, &names);
        results.extend(checks);
    }
    progress.update(0, "expect done");
    results
}

async fn inject(session: &Session, from: &[String]) -> Vec<super::InjectedBroadcast> {
    let label = format!("peerlab scenario {}", session.plan().run_id);
    let (injected, _failed) = session.observer().inject(from, &label).await;
    injected
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::runtime::{NodeEndpoint, NodeSpec, RunListing, RunPlan, TeardownReport};

    /// A runtime that only declares capabilities: `check_support` must decide from them
    /// alone, so every other method fails the test if it is called.
    struct Declares(Capabilities);

    #[async_trait]
    impl Runtime for Declares {
        fn name(&self) -> &'static str {
            "declares"
        }
        fn capabilities(&self) -> Capabilities {
            self.0
        }
        fn check_support(&self, _: &RunPlan) -> Result<(), RuntimeError> {
            unreachable!("not part of the scenario check")
        }
        async fn prepare(&mut self, _: &RunPlan) -> Result<(), RuntimeError> {
            unreachable!("nothing starts")
        }
        async fn start(&self, _: &NodeSpec) -> Result<NodeEndpoint, RuntimeError> {
            unreachable!("nothing starts")
        }
        async fn act(&self, _: &str, _: NodeAction) -> Result<(), RuntimeError> {
            unreachable!("capabilities are read, not probed")
        }
        async fn heal(&self) -> Result<(), RuntimeError> {
            unreachable!("capabilities are read, not probed")
        }
        async fn teardown(&mut self) -> Result<TeardownReport, RuntimeError> {
            unreachable!("nothing starts")
        }
        async fn list_runs(&self) -> Result<Vec<RunListing>, RuntimeError> {
            unreachable!("not part of the scenario check")
        }
        async fn remove_run(
            &self,
            _: Option<&str>,
            _: Option<&Path>,
        ) -> Result<TeardownReport, RuntimeError> {
            unreachable!("not part of the scenario check")
        }
    }

    fn step(index: usize, action: ResolvedAction, text: &str) -> ResolvedStep {
        ResolvedStep {
            index,
            at: Duration::ZERO,
            after: None,
            action,
            text: text.into(),
        }
    }

    fn timeline() -> Vec<ResolvedStep> {
        vec![
            step(
                1,
                ResolvedAction::Wait {
                    duration: Duration::from_secs(1),
                },
                "wait 1s",
            ),
            step(
                2,
                ResolvedAction::Fault {
                    fault: Fault::Restart,
                    nodes: vec!["peers-0".into()],
                },
                "restart peers-0",
            ),
            step(
                3,
                ResolvedAction::Partition {
                    sides: vec![vec!["peers-0".into()], vec!["peers-1".into()]],
                    one_way: true,
                    host: None,
                },
                "partition peers-0 | peers-1 (one way)",
            ),
        ]
    }

    #[tokio::test]
    async fn a_runtime_that_declares_everything_plays_every_step() {
        check_support(&Declares(Capabilities::ALL), &timeline())
            .await
            .expect("every step is supported");
    }

    #[tokio::test]
    async fn a_missing_capability_is_refused_naming_the_step() {
        let no_start = Capabilities {
            start: false,
            ..Capabilities::ALL
        };
        let err = check_support(&Declares(no_start), &timeline())
            .await
            .unwrap_err();
        let RuntimeError::Unsupported { runtime, reason } = err else {
            panic!("a missing capability is bad input, not a failure: {err}");
        };
        assert_eq!(runtime, "declares");
        assert_eq!(
            reason,
            "scenario step 2 (restart peers-0): it cannot restart nodes"
        );

        let two_way_only = Capabilities {
            one_way_partition: false,
            ..Capabilities::ALL
        };
        let err = check_support(&Declares(two_way_only), &timeline())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("scenario step 3 (partition peers-0 | peers-1 (one way)): it cannot partition one way"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cutting_a_host_off_needs_partitions() {
        let cut = vec![step(
            1,
            ResolvedAction::Partition {
                sides: vec![vec!["us-0".into()], vec!["eu-0".into()]],
                one_way: false,
                host: Some("us".into()),
            },
            "partition host us off: [us-0] | [eu-0]",
        )];
        let no_partition = Capabilities {
            partition: false,
            ..Capabilities::ALL
        };
        let err = check_support(&Declares(no_partition), &cut)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RuntimeError::Unsupported { reason, .. }
                if reason == "scenario step 1 (partition host us off: [us-0] | [eu-0]): it cannot partition"),
            "{err}"
        );
        check_support(&Declares(Capabilities::ALL), &cut)
            .await
            .expect("a runtime with partitions cuts hosts off");
    }
}
