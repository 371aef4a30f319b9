//! `peerlab check` against networks it did not start: a network started with the library
//! (`peerlab::Lab`) is checked by the `peerlab` binary through its status endpoints, the
//! way a user checks a network brought up by other means; and the library's own
//! [`NetworkCheck`]. Every wait is the checker's own polling with its deadline.

use std::path::Path;
use std::time::Duration;

use peerlab::Lab;
use peerlab::lab::{GroupSpec, LabBuilder, NetworkCheck, NodeSettings, RuntimeKind};

use crate::support::BIN;
use crate::support::cluster::{Spec, spawn};

/// How long formation may take on a loaded 2-core machine.
const FORM_WITHIN: Duration = Duration::from_secs(40);
/// Longest a `peerlab check` invocation may take before the test gives up on it.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A genesis and `peers` peers on local processes, named `name`.
fn lab(name: &str, peers: usize, runs: &Path) -> LabBuilder {
    Lab::builder(name)
        .genesis(1)
        .node_settings(NodeSettings {
            degree: 2,
            ..NodeSettings::BUILT_IN
        })
        .group(GroupSpec::new("peers", peers).stagger(Duration::from_millis(20)))
        .formation_within(FORM_WITHIN)
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs)
}

/// `peerlab ARGS`: (exit code, stdout, stderr).
async fn peerlab(args: &[&str]) -> (Option<i32>, String, String) {
    let run = tokio::process::Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(COMMAND_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("peerlab {args:?} did not finish within {COMMAND_LIMIT:?}"))
        .expect("run peerlab");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dump(out: &(Option<i32>, String, String)) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.0, out.1, out.2
    )
}

/// The status addresses of every node of a started lab, comma-separated.
fn endpoints_of(lab: &Lab) -> String {
    lab.endpoints()
        .iter()
        .map(|e| e.status_url.clone())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn check_passes_on_a_running_network_and_reports_like_run() {
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = lab("check-ok", 3, runs.path())
        .start()
        .await
        .expect("the lab starts");
    let endpoints = endpoints_of(&lab);
    let report = runs.path().join("out/report.json");
    let junit = runs.path().join("out/junit.xml");
    let graph = runs.path().join("out/overlay.svg");
    let out = peerlab(&[
        "check",
        "--endpoint",
        &endpoints,
        "--expect-nodes",
        "4",
        "--min-degree",
        "1",
        "--broadcast",
        "2",
        "--within",
        "40s",
        "--report",
        report.to_str().expect("utf-8 path"),
        "--junit",
        junit.to_str().expect("utf-8 path"),
        "--graph",
        graph.to_str().expect("utf-8 path"),
    ])
    .await;
    assert_eq!(out.0, Some(0), "{}", dump(&out));
    assert!(out.1.contains("PASSED"), "{}", dump(&out));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
            .expect("report is JSON");
    assert_eq!(json["passed"], true, "{json:#}");
    let mut names: Vec<&str> = json["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["genesis-0", "peers-0", "peers-1", "peers-2"]);
    let checks: Vec<&str> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for wanted in [
        "nodes found",
        "formed within deadline",
        "all nodes ready",
        "overlay connected",
        "min degree >= 1",
        "full membership",
        "no duplicate deliveries",
    ] {
        assert!(checks.contains(&wanted), "{wanted} missing from {checks:?}");
    }
    assert_eq!(
        json["broadcast"]["messages"].as_array().map(Vec::len),
        Some(2)
    );
    let junit = std::fs::read_to_string(&junit).expect("junit written");
    assert!(junit.contains("nodes found"), "{junit}");
    assert!(
        std::fs::read_to_string(&graph)
            .expect("graph written")
            .contains("<svg")
    );
    lab.shutdown().await.expect("teardown");
}

#[tokio::test]
async fn check_fails_when_the_network_is_not_the_expected_size() {
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = lab("check-size", 2, runs.path())
        .start()
        .await
        .expect("the lab starts");
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    let endpoints = endpoints_of(&lab);
    let out = peerlab(&[
        "check",
        "--endpoint",
        &endpoints,
        "--expect-nodes",
        "5",
        "--within",
        "2s",
    ])
    .await;
    assert_eq!(out.0, Some(1), "{}", dump(&out));
    assert!(
        out.1.contains("expected 5 nodes but found 3"),
        "{}",
        dump(&out)
    );
    assert!(out.1.contains("FAIL  nodes found"), "{}", dump(&out));

    // Two of the three endpoints: the nodes know a member the check was not given.
    let partial: Vec<&str> = endpoints.split(',').take(2).collect();
    let out = peerlab(&["check", "--endpoint", &partial.join(","), "--within", "2s"]).await;
    assert_eq!(out.0, Some(1), "{}", dump(&out));
    assert!(out.1.contains("FAIL  full membership"), "{}", dump(&out));
    assert!(
        out.1.contains("the nodes know up to 3 members"),
        "{}",
        dump(&out)
    );
    lab.shutdown().await.expect("teardown");
}

#[tokio::test]
async fn check_says_clearly_when_no_endpoint_answers() {
    // Port 1 on loopback: nothing listens there, so every request is refused.
    let out = peerlab(&["check", "--endpoint", "127.0.0.1:1", "--within", "1s"]).await;
    assert_eq!(out.0, Some(1), "{}", dump(&out));
    assert!(
        out.1
            .contains("none of the 1 nodes found answered its status socket"),
        "{}",
        dump(&out)
    );
    assert!(out.1.contains("127.0.0.1:1"), "{}", dump(&out));
}

#[tokio::test]
async fn check_refuses_bad_input_before_checking() {
    let out = peerlab(&["check", "--endpoint", "127.0.0.1"]).await;
    assert_eq!(out.0, Some(2), "{}", dump(&out));
    assert!(out.2.contains("has no port"), "{}", dump(&out));

    // No source, and two sources: usage errors.
    let out = peerlab(&["check"]).await;
    assert_eq!(out.0, Some(2), "{}", dump(&out));
    let out = peerlab(&["check", "--endpoint", "127.0.0.1:1", "--dns", "localhost"]).await;
    assert_eq!(out.0, Some(2), "{}", dump(&out));

    let missing = "/nonexistent/topology.yaml";
    let out = peerlab(&["check", missing, "--endpoint", "127.0.0.1:1"]).await;
    assert_eq!(out.0, Some(2), "{}", dump(&out));
    assert!(out.2.contains("not a valid topology"), "{}", dump(&out));
}

#[tokio::test]
async fn check_finds_a_node_through_dns() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A lone genesis on 127.0.0.1, where `localhost` resolves.
    let node = spawn(dir.path(), Spec::new("lone"))
        .ready(FORM_WITHIN)
        .await;
    let port = node.ports.status.port().to_string();
    let out = peerlab(&[
        "check",
        "--dns",
        "localhost",
        "--status-port",
        &port,
        "--expect-nodes",
        "1",
        "--within",
        "20s",
    ])
    .await;
    assert_eq!(out.0, Some(0), "{}", dump(&out));
    assert!(out.1.contains("lone"), "{}", dump(&out));
    assert!(out.1.contains("DNS localhost"), "{}", dump(&out));
}

#[tokio::test]
async fn the_library_checks_a_network_it_did_not_start() {
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = lab("check-lib", 2, runs.path())
        .start()
        .await
        .expect("the lab starts");
    let endpoints: Vec<String> = lab.endpoints().into_iter().map(|e| e.status_url).collect();
    let report = NetworkCheck::endpoints(endpoints)
        .topology(lab.topology().clone())
        .within(FORM_WITHIN)
        .broadcast(1)
        .run()
        .await
        .expect("checked");
    assert!(report.passed(), "{}", report.summary());
    assert_eq!(report.nodes.len(), 3);
    assert_eq!(report.topology, "check-lib");
    lab.shutdown().await.expect("teardown");
}

#[tokio::test]
async fn check_waits_for_a_node_that_starts_after_it() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    // A free loopback port for the late node's status socket.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let mut check = tokio::process::Command::new(BIN)
        .args(["check", "--dns", "localhost", "--status-port", &port])
        .args(["--expect-nodes", "1", "--within", "40s"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start peerlab check");
    let stderr = check.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    // The check has polled the address and found nothing answering there yet.
    let mut seen = String::new();
    let waited = tokio::time::timeout(COMMAND_LIMIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("formation checks hold over 1 nodes") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(waited, Ok(true), "stderr so far:\n{seen}");

    let mut node = tokio::process::Command::new(BIN)
        .args(["node", "--listen", "127.0.0.1:0", "--status"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--name", "late"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the late node");
    // Drain stderr so the check never blocks on a full pipe.
    let drain = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    let status = tokio::time::timeout(COMMAND_LIMIT, check.wait())
        .await
        .expect("the check ends")
        .expect("wait for the check");
    let mut stdout = String::new();
    if let Some(mut out) = check.stdout.take() {
        use tokio::io::AsyncReadExt;
        let _ = out.read_to_string(&mut stdout).await;
    }
    let rest = drain.await.unwrap_or_default();
    let _ = node.kill().await;
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{seen}{rest}"
    );
    assert!(stdout.contains("late"), "stdout:\n{stdout}");
}
