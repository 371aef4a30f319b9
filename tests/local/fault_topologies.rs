//! Every fault topology shipped in `topologies/` (a file with a non-empty `scenario:`)
//! passes end to end on local processes: `peerlab run FILE --runtime local --report ...`
//! on the real file exits 0, every `expect` step of its scenario produced checks that all
//! passed, and no node process of the run is left afterwards.
//!
//! One test per file, so a failure names the topology; [`COVERED`] lists them and
//! `every_fault_topology_has_a_test` fails when a file with a scenario is added to
//! `topologies/` without a test here. Runs take turns: each starts up to twenty nodes with
//! one-second timeouts, and two at once on two cores starve each other into false failures
//! (`support::heavy_turn`, shared with the scenario tests).

use std::time::Duration;

use crate::support::cli::{Workspace, assert_gone_within, processes_of};
use crate::support::reports::{
    FAULT_TOPOLOGIES, assert_report_passed, fault_topologies, file_name,
};
use crate::support::{heavy_turn, topologies_dir};

/// The fault topologies with a test below.
const COVERED: &[&str] = FAULT_TOPOLOGIES;

/// How long one run may take: formation plus the scenario's deadlines, on busy cores.
const RUN_LIMIT: Duration = Duration::from_secs(150);

#[test]
fn every_fault_topology_has_a_test() {
    let found: Vec<String> = fault_topologies().iter().map(|p| file_name(p)).collect();
    assert_eq!(
        found, COVERED,
        "topologies/ files with a scenario differ from the ones tested here; add a test (and \
         an entry in COVERED) for each new file"
    );
}

/// Runs `topologies/<file>` as it is and checks the run end to end; returns the report.
fn passes_on_local_processes(file: &str) -> serde_json::Value {
    let _turn = heavy_turn();
    let stem = file.trim_end_matches(".yaml");
    // Run ids start with the topology's name, never with this prefix: the workspace's
    // cleanup cannot touch another test's run.
    let ws = Workspace::new(&format!("faultfile{stem}"));
    let path = topologies_dir().join(file);
    let report_path = ws.path("report.json");
    let out = ws
        .spawn(&[
            "run",
            path.to_str().unwrap(),
            "--runtime",
            "local",
            "--report",
            report_path.to_str().unwrap(),
        ])
        .wait(RUN_LIMIT);
    let run_id = out
        .run_id()
        .unwrap_or_else(|| panic!("{file}: no run id announced\n{}", out.dump()));
    // The orchestrator has exited; its nodes must be gone with it.
    assert_gone_within(&run_id, Duration::from_secs(10));
    assert!(processes_of(&run_id).is_empty());
    assert_eq!(out.code(), Some(0), "{file} failed:\n{}", out.dump());
    assert_report_passed(file, &report_path, "local", &out.dump())
}

#[test]
fn churn_passes_on_local_processes() {
    passes_on_local_processes("churn.yaml");
}

#[test]
fn frozen_node_passes_on_local_processes() {
    passes_on_local_processes("frozen-node.yaml");
}

#[test]
fn genesis_loss_passes_on_local_processes() {
    passes_on_local_processes("genesis-loss.yaml");
}

#[test]
fn mass_failure_passes_on_local_processes() {
    passes_on_local_processes("mass-failure.yaml");
}

#[test]
fn partition_heal_passes_on_local_processes() {
    let report = passes_on_local_processes("partition-heal.yaml");
    // The split itself was seen, not only the merge after the heal.
    let split = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.contains("overlay has 2 components after partition"))
        })
        .unwrap_or_else(|| panic!("no components check in {}", report["checks"]));
    assert_eq!(split["value"]["components"], 2, "{split}");
}

#[test]
fn shaped_links_passes_on_local_processes() {
    passes_on_local_processes("shaped-links.yaml");
}

#[test]
fn three_hosts_passes_on_local_processes() {
    let report = passes_on_local_processes("three-hosts.yaml");
    // The host was really cut off: the overlay split in two before the heal.
    let split = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.contains("overlay has 2 components after partition host us off"))
        })
        .unwrap_or_else(|| panic!("no components check in {}", report["checks"]));
    assert_eq!(split["value"]["components"], 2, "{split}");
}
