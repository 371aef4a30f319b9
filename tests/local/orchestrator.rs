//! End-to-end tests of the orchestrator on the local runtime: `peerlab run|up|ps|down|validate`
//! as a user runs them, with real node processes on loopback.
//!
//! Each test uses its own workspace and topology name (see `support::cli`), so the tests run
//! in parallel and a failing one cannot leave nodes behind.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::cli::{
    Output, Workspace, assert_gone_within, node_logs, processes_of, run_id_in_line,
};
use crate::support::{poll_until_blocking, topologies_dir};

/// Teardown stops nodes with SIGTERM and a grace period; allow for a loaded machine.
const GONE_WITHIN: Duration = Duration::from_secs(10);

fn report_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

/// Runs a topology to its end and checks that it left no process behind.
fn run_to_end(ws: &Workspace, topology: &std::path::Path, extra: &[&str]) -> Output {
    let topology = topology.to_str().expect("utf-8 path");
    let mut args = vec!["run", topology, "--runtime", "local"];
    args.extend_from_slice(extra);
    let out = ws.peerlab(&args);
    let run_id = out
        .run_id()
        .unwrap_or_else(|| panic!("no `run <id> of` line on stderr:\n{}", out.dump()));
    let left = processes_of(&run_id);
    assert!(
        left.is_empty(),
        "run {run_id} ended but its processes {left:?} remain\n{}",
        out.dump()
    );
    out
}

#[test]
fn quickstart_passes_with_report_junit_and_svg() {
    let ws = Workspace::new("qs-svg");
    let topology = ws.copy_topology("quickstart.yaml");
    let (report, junit, svg) = (ws.path("r.json"), ws.path("j.xml"), ws.path("g.svg"));
    let out = run_to_end(
        &ws,
        &topology,
        &[
            "--report",
            report.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--graph",
            svg.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code(), Some(0), "{}", out.dump());

    let json = report_json(&report);
    assert_eq!(json["passed"], true, "{json:#}");
    let checks = json["checks"].as_array().expect("checks is a list");
    assert!(
        checks.len() >= 3,
        "formation and broadcast checks: {checks:?}"
    );
    for check in checks {
        assert!(check["name"].is_string(), "{check}");
        assert_eq!(check["passed"], true, "{check}");
    }
    let nodes = json["nodes"].as_array().expect("nodes is a list");
    assert_eq!(nodes.len(), 5);
    for node in nodes {
        assert_eq!(node["ready"], true, "{node}");
        assert!(node["degree"].as_u64().unwrap_or(0) >= 2, "{node}");
        assert!(!node["neighbours"].as_array().unwrap().is_empty(), "{node}");
    }

    let xml = std::fs::read_to_string(&junit).expect("junit written");
    let testcases = xml_elements(&xml, "testcase");
    assert_eq!(testcases, checks.len(), "one testcase per check:\n{xml}");
    assert_eq!(xml_elements(&xml, "failure"), 0, "{xml}");

    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    assert_eq!(
        xml_elements(&svg_text, "svg"),
        1,
        "one svg root:\n{svg_text}"
    );
    assert_eq!(
        xml_elements(&svg_text, "circle"),
        5,
        "one circle per node:\n{svg_text}"
    );
}

/// Counts `<name` elements after checking the document is well formed: every element
/// opened is closed in order, and nothing follows the root.
fn xml_elements(xml: &str, name: &str) -> usize {
    let mut stack: Vec<String> = Vec::new();
    let mut count = 0;
    let mut roots = 0;
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>').expect("every tag is closed with '>'");
        let tag = &after[..close];
        rest = &after[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(end) = tag.strip_prefix('/') {
            let top = stack.pop().expect("a closing tag without an opening one");
            assert_eq!(top, end.trim(), "mismatched closing tag");
            continue;
        }
        let element = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        if stack.is_empty() {
            roots += 1;
        }
        if element == name {
            count += 1;
        }
        if !tag.ends_with('/') {
            stack.push(element.to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert_eq!(roots, 1, "an XML document has one root element");
    count
}

#[test]
fn quickstart_graph_as_dot() {
    let ws = Workspace::new("qs-dot");
    let topology = ws.copy_topology("quickstart.yaml");
    let dot = ws.path("g.dot");
    let out = run_to_end(&ws, &topology, &["--graph", dot.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{}", out.dump());
    let text = std::fs::read_to_string(&dot).expect("dot written");
    let trimmed = text.trim();
    assert!(
        trimmed.starts_with("graph") || trimmed.starts_with("strict graph"),
        "{text}"
    );
    assert!(trimmed.ends_with('}'), "{text}");
    for name in ["genesis-0", "peers-0", "peers-3"] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        text.contains("--"),
        "an undirected graph has edges:\n{text}"
    );
}

#[test]
fn fifty_passes_end_to_end() {
    let ws = Workspace::new("fifty-e2e");
    let topology = ws.copy_topology("fifty.yaml");
    let report = ws.path("r.json");
    let out = run_to_end(&ws, &topology, &["--report", report.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{}", out.dump());
    let json = report_json(&report);
    assert_eq!(json["passed"], true);
    assert_eq!(json["nodes"].as_array().map(Vec::len), Some(50));
}

#[test]
fn impossible_expectation_fails_and_names_the_check() {
    let ws = Workspace::new("impossible");
    // Nodes dial until they have two neighbours; a connected 5-node overlay cannot have
    // every degree <= 1 anyway.
    let topology = ws.write(
        "impossible.yaml",
        "name: impossible\nseed: 7\ndefaults:\n  degree: 2\ngenesis:\n  count: 1\n\
         groups:\n  - name: peers\n    count: 4\n\
         checks:\n  formation:\n    within: 4s\n    min_degree: 1\n    max_degree: 1\n",
    );
    let report = ws.path("r.json");
    let out = run_to_end(&ws, &topology, &["--report", report.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "{}", out.dump());
    let failing: Vec<&str> = out.stdout.lines().filter(|l| l.contains("FAIL")).collect();
    assert!(
        failing.iter().any(|l| l.contains("max degree <= 1")),
        "the failing check is named on a FAIL line:\n{}",
        out.dump()
    );
    let json = report_json(&report);
    assert_eq!(json["passed"], false);
    let failed: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(failed.contains(&"max degree <= 1"), "{failed:?}");
}

#[test]
fn invalid_topology_is_refused_before_anything_starts() {
    let ws = Workspace::new("badinput");
    let topology = ws.write(
        "bad.yaml",
        "name: badinput\ngenesis:\n  count: 1\n  degre: 3\n",
    );
    let out = ws.peerlab(&["run", topology.to_str().unwrap(), "--runtime", "local"]);
    assert_eq!(out.code(), Some(2), "{}", out.dump());
    let location = format!("{}:4:3", topology.display());
    assert!(
        out.stderr.contains(&location),
        "stderr names {location}:\n{}",
        out.dump()
    );
    assert!(ws.processes().is_empty(), "a node was started");
    assert!(ws.run_dirs().is_empty(), "a run directory was created");
}

#[test]
fn unknown_graph_format_is_refused_before_anything_starts() {
    let ws = Workspace::new("pnggraph");
    let topology = ws.copy_topology("quickstart.yaml");
    let png = ws.path("g.png");
    let out = ws.peerlab(&[
        "run",
        topology.to_str().unwrap(),
        "--runtime",
        "local",
        "--graph",
        png.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), Some(2), "{}", out.dump());
    assert!(out.stderr.contains(".svg or .dot"), "{}", out.dump());
    assert!(
        out.run_id().is_none(),
        "a run was announced:\n{}",
        out.dump()
    );
    assert!(ws.processes().is_empty(), "a node was started");
    assert!(ws.run_dirs().is_empty(), "a run directory was created");
    assert!(!png.exists());
}

#[test]
fn sigint_while_forming_tears_everything_down() {
    let ws = Workspace::new("sigint");
    // Slow enough to form that the signal lands mid-run: peers trickle in for seconds.
    let topology = ws.write(
        "sigint.yaml",
        "name: sigint\nseed: 3\ngenesis:\n  count: 1\n\
         groups:\n  - name: peers\n    count: 30\n    stagger: 300ms\n\
         checks:\n  formation:\n    within: 60s\n",
    );
    let mut running = ws.spawn(&["run", topology.to_str().unwrap(), "--runtime", "local"]);
    let run_id = poll_until_blocking(Duration::from_secs(30), "the run id on stderr", || {
        running.stderr_so_far().lines().find_map(run_id_in_line)
    });
    let run_dir = ws.runs_dir().join(&run_id);
    poll_until_blocking(Duration::from_secs(30), "node logs of the run", || {
        (node_logs(&run_dir).len() >= 2).then_some(())
    });
    assert!(
        !processes_of(&run_id).is_empty(),
        "nodes are running before the signal"
    );
    running.signal(Signal::SIGINT);
    let out = running.wait(Duration::from_secs(60));
    assert_eq!(out.code(), Some(130), "{}", out.dump());
    let left = processes_of(&run_id);
    assert!(
        left.is_empty(),
        "interrupted run {run_id} left {left:?}\n{}",
        out.dump()
    );
}

#[test]
fn a_panicking_orchestrator_tears_everything_down() {
    let ws = Workspace::new("panic");
    let topology = ws.copy_topology("quickstart.yaml");
    let out = ws.peerlab_with_env(
        &["run", topology.to_str().unwrap(), "--runtime", "local"],
        &[(peerlab::orchestrator::run::PANIC_AFTER_START, "1")],
    );
    assert_eq!(out.code(), Some(3), "{}", out.dump());
    assert!(
        out.stderr.contains("internal error (panic)"),
        "{}",
        out.dump()
    );
    let run_id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.dump()));
    let run_dir = ws.runs_dir().join(&run_id);
    assert_eq!(node_logs(&run_dir).len(), 5, "every node had started");
    let left = processes_of(&run_id);
    assert!(left.is_empty(), "panicked run {run_id} left {left:?}");
}

#[test]
fn up_ps_down() {
    let ws = Workspace::new("updown");
    let topology = ws.copy_topology("quickstart.yaml");
    let out = ws.peerlab(&["up", topology.to_str().unwrap(), "--runtime", "local"]);
    assert_eq!(out.code(), Some(0), "{}", out.dump());
    let run_id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.dump()));
    assert!(
        out.stdout.contains(&format!("peerlab down {run_id}")),
        "{}",
        out.dump()
    );
    for node in ["genesis-0", "peers-0", "peers-3"] {
        assert!(out.stdout.contains(node), "node table lists {node}");
    }
    assert_eq!(
        processes_of(&run_id).len(),
        5,
        "the run stays up after `up`"
    );

    let ps = ws.peerlab(&["ps"]);
    assert_eq!(ps.code(), Some(0), "{}", ps.dump());
    let row = ps
        .stdout
        .lines()
        .find(|l| l.starts_with(&run_id))
        .unwrap_or_else(|| panic!("ps lists {run_id}:\n{}", ps.dump()));
    assert!(row.split_whitespace().any(|w| w == "5"), "5 nodes: {row}");

    let down = ws.peerlab(&["down", &run_id]);
    assert_eq!(down.code(), Some(0), "{}", down.dump());
    // `down` SIGKILLs stragglers without reaping them (they are not its children).
    assert_gone_within(&run_id, GONE_WITHIN);

    let ps = ws.peerlab(&["ps"]);
    assert_eq!(ps.code(), Some(0), "{}", ps.dump());
    assert!(
        !ps.stdout.contains(&run_id),
        "ps still lists {run_id}:\n{}",
        ps.dump()
    );
}

#[test]
fn validate_accepts_every_shipped_topology_and_refuses_a_bad_one() {
    let mut files: Vec<String> = std::fs::read_dir(topologies_dir())
        .expect("topologies/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let ws = Workspace::new("validate");
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = ws.peerlab(&args);
    assert_eq!(out.code(), Some(0), "{}", out.dump());
    assert_eq!(
        out.stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        files.len(),
        "{}",
        out.dump()
    );

    let bad = ws.write("bad.yaml", "name: validate\ngenesis:\n  count: many\n");
    let out = ws.peerlab(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.code(), Some(2), "{}", out.dump());
    assert!(
        out.stderr.contains(&format!("{}:3:", bad.display())),
        "{}",
        out.dump()
    );
}
