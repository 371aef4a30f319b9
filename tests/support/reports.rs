//! The fault topologies of `topologies/` (those with a scenario), run on local processes by
//! `tests/local` and on containers by `tests/docker`, and what their run reports must show.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::topologies_dir;

/// The fault topologies the tests know about: a new one needs a test in both runtimes.
pub const FAULT_TOPOLOGIES: &[&str] = &[
    "churn.yaml",
    "frozen-node.yaml",
    "genesis-loss.yaml",
    "mass-failure.yaml",
    "partition-heal.yaml",
    "shaped-links.yaml",
    "three-hosts.yaml",
];

/// Files of `topologies/` whose scenario has at least one step, sorted.
pub fn fault_topologies() -> Vec<PathBuf> {
    let dir = topologies_dir();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read topologies/") {
        let path = entry.expect("read topologies/").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read topology");
        let topology = peerlab::topology::parse_str(&text, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{} does not validate: {e}", path.display()));
        if !topology.scenario.is_empty() {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The file name of a topology path.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}

/// Problems with a finished run's JSON report (empty when there is none): it did not pass,
/// ran on another runtime than `runtime`, has no scenario or no `expect` step, an `expect`
/// step produced no check or a failing one, or any other check failed.
pub fn report_problems(report: &Value, runtime: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if report["passed"] != true {
        problems.push("report says passed: false".to_string());
    }
    if report["runtime"] != runtime {
        problems.push(format!("ran on {}, not {runtime}", report["runtime"]));
    }
    let steps = report["scenario"].as_array().cloned().unwrap_or_default();
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    if steps.is_empty() {
        problems.push("the report has no scenario".to_string());
    }
    let expects: Vec<&Value> = steps
        .iter()
        .filter(|s| s["action"]["step"] == "expect")
        .collect();
    if !steps.is_empty() && expects.is_empty() {
        problems.push("a fault topology should expect something".to_string());
    }
    for step in expects {
        let prefix = format!("expect#{} ", step["index"]);
        let mine: Vec<&Value> = checks
            .iter()
            .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
            .collect();
        if mine.is_empty() {
            problems.push(format!("step {} produced no check", step["text"]));
        }
        for c in mine.iter().filter(|c| c["passed"] != true) {
            problems.push(format!("{} failed: {}", c["name"], c["message"]));
        }
    }
    for c in checks.iter().filter(|c| c["passed"] != true) {
        let name = c["name"].as_str().unwrap_or("");
        if !name.starts_with("expect#") {
            problems.push(format!("check {} failed: {}", c["name"], c["message"]));
        }
    }
    problems
}

/// The report at `path`, or why there is none.
pub fn read_report(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("no report at {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("report is not JSON: {e}"))
}

/// Reads the report of `file`'s run and asserts [`report_problems`] finds none; returns it.
/// `dump` (the run's output) goes into the failure message.
pub fn assert_report_passed(file: &str, path: &Path, runtime: &str, dump: &str) -> Value {
    let report = read_report(path).unwrap_or_else(|e| panic!("{file}: {e}\n{dump}"));
    let problems = report_problems(&report, runtime);
    assert!(
        problems.is_empty(),
        "{file}: {}\n{dump}",
        problems.join("; ")
    );
    report
}
