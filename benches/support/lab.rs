//! Local networks for benchmarks, through the library API: a bench describes its topology
//! in YAML, starts it as a [`Lab`] on the local runtime from the `peerlab` that cargo built,
//! and watches it with the lab's own waits ([`Lab::wait_formed`], [`Lab::wait_until`],
//! [`Lab::wait_delivered`]). Nothing here polls a status socket or decides whether an
//! overlay formed: the lab's observer and the orchestrator's checks do, so a bench measures
//! exactly what a topology's `checks` and a user's test would.
//!
//! What is left is what only a bench needs: the processes of a run (for memory and CPU
//! readings from /proc), and a shutdown that proves from /proc that none of them is left.
//! A bench that panics leaves nothing either: a dropped lab tears its run down.

use std::path::Path;

use peerlab::lab::{
    CheckResult, FormationExpectation, Lab, LabBuilder, NodeObservation, RuntimeKind,
};
use peerlab::orchestrator::evaluate_formation;
use peerlab::runtime::local::scan_processes;
use peerlab::topology;

/// The release (or test) build of `peerlab` that cargo built for this bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_peerlab");

/// A lab of the bench's topology `yaml` on local processes of [`BIN`], its run directory
/// under `runs_dir`; nothing is started yet. The run id is `<topology name>-<hex>`.
pub fn local_lab(yaml: &str, runs_dir: &Path) -> LabBuilder {
    let topology = topology::parse_str(yaml, "bench.yaml")
        .unwrap_or_else(|e| panic!("the bench topology is invalid:\n{e}"));
    Lab::from_topology(topology)
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs_dir)
}

/// Pids of the run's live node processes (for memory and CPU readings).
pub fn run_pids(run_id: &str) -> Vec<u32> {
    scan_processes()
        .into_iter()
        .filter(|p| p.run_id == run_id)
        .map(|p| p.pid)
        .collect()
}

/// Tears the lab down, then proves from /proc that none of the run's processes is left;
/// `Err` says what was.
pub async fn shutdown(lab: Lab) -> Result<(), String> {
    let run_id = lab.run_id().to_string();
    let report = lab.shutdown().await.map_err(|e| e.to_string())?;
    let mut problems = report.leftovers;
    let left = run_pids(&run_id);
    if !left.is_empty() {
        problems.push(format!(
            "{} node processes of {run_id} still run: {left:?}",
            left.len()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The orchestrator's formation checks of `expectation` that fail over `observations`, each
/// as (check name, why): what a recovery is still waiting for, round by round.
pub fn failing_checks(
    observations: &[NodeObservation],
    expectation: &FormationExpectation,
) -> Vec<(String, String)> {
    evaluate_formation(observations, expectation)
        .into_iter()
        .filter(|c| !c.passed)
        .map(|c: CheckResult| {
            let why = c.message.unwrap_or(c.measured);
            (c.name, why)
        })
        .collect()
}
