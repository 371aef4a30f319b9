//! `peerlab check --compose-project` against a network brought up by `docker-compose` from
//! a file `peerlab compose` exported: peerlab did not start it, and finds its nodes through
//! the Docker API by the project's label and the ports that publish their status sockets.
//! The project is taken down (`down -v`) by its guard, also when the test fails.

use crate::support::docker::{
    ComposeProject, ensure_image, must, output, peerlab, require_engine, unique,
};

/// Three nodes on the default network (no fixed subnet, so parallel tests do not clash);
/// generous deadlines for containers on two busy cores.
const TOPOLOGY: &str = "\
name: NAME
genesis: {count: 1}
groups:
  - {name: peers, count: 2, settings: {degree: 2}}
checks:
  formation: {within: 90s, all_ready: true, connected: true, min_degree: 1, full_membership: true}
  broadcast: {count: 2, deliver_within: 10s}
";

#[test]
fn check_passes_on_a_compose_project_it_did_not_start() {
    require_engine();
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = unique("plchk");
    let topology = dir.path().join("topology.yaml");
    std::fs::write(&topology, TOPOLOGY.replace("NAME", &name)).expect("write topology");
    let file = dir.path().join("compose.yml");
    must(peerlab().arg("compose").arg(&topology).arg("-o").arg(&file));
    let project = ComposeProject::new("plchk", &file);
    must(project.command().args(["up", "-d", "--no-build"]));

    let report = dir.path().join("report.json");
    let out = output(
        peerlab()
            .arg("check")
            .arg(&topology)
            .args(["--compose-project", &project.name, "--report"])
            .arg(&report),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
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
    assert_eq!(names, ["genesis-0", "peers-0", "peers-1"], "{json:#}");
    assert!(
        json["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["status_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:"))),
        "status sockets are reached through their published ports: {json:#}"
    );
    assert_eq!(
        json["broadcast"]["messages"].as_array().map(Vec::len),
        Some(2)
    );

    project.down();
    let (containers, networks) = project.leftovers();
    assert!(
        containers.is_empty() && networks.is_empty(),
        "compose project {} left {containers:?} {networks:?}",
        project.name
    );
}

#[test]
fn check_of_a_compose_project_that_does_not_exist_is_bad_input() {
    require_engine();
    let missing = unique("plnone");
    let out = output(peerlab().args(["check", "--compose-project", &missing]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("com.docker.compose.project={missing}")),
        "stderr:\n{stderr}"
    );
}
