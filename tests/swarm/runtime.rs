//! `--runtime swarm` on a three-host swarm lab (one `dockerd` per network namespace):
//! topologies/three-hosts.yaml (12 nodes, three genesis and nine peers spread over three
//! hosts, a scenario that cuts host `us` off and heals it), its hosts mapped to the lab's
//! swarm nodes by label. The runtime is driven as a user drives it: `peerlab` with
//! `DOCKER_HOST` at the lab's manager and `PEERLAB_SWARM_ENGINES` naming every host's
//! engine, the image only in the main engine (the runtime loads it on every host).
//!
//! 1. `peerlab run` exits 0: formed across the hosts, the scenario's host cut and heal
//!    passed; afterwards nothing of the run is left on the manager (services, networks) nor
//!    on any host (task containers).
//! 2. `peerlab up`: every node's task runs on the swarm node of the host the topology
//!    places it on; `peerlab ps` lists the run as a swarm run of 12 nodes; `peerlab down
//!    RUN` removes it, and again nothing is left.
//! 3. Node faults across two hosts ([`FAULTS`]): a killed node leaves the membership and
//!    comes back when started (a new task of its service), a restarted one (stop, start)
//!    too, a paused one is dropped and rejoins when resumed; a node of the cut-off host h2
//!    restarted while the cut holds stays on its side (the cut is applied to it again);
//!    then nothing is left.
//!
//! Requires root, the Docker engine and the lab script: fails, never skips, without them.

use std::time::{Duration, Instant};

use crate::support::cli::{Output, Workspace};
use crate::support::docker::{DOCKER_POLL, ensure_image, must, require_engine};
use crate::support::swarm::SwarmLab;

/// The topology's hosts and the lab hosts they map to (`label:`).
const HOSTS: [(&str, &str); 3] = [("eu", "h1"), ("us", "h2"), ("asia", "h3")];
/// Removed services' tasks leave their hosts within the stop grace period and a little.
const GONE_WITHIN: Duration = Duration::from_secs(60);

/// The formation deadline of the test's runs, counted from the first start: the lab's three
/// daemons share this machine's cores with whatever else runs (12 services took 10 s to
/// start on a quiet machine, 37 s at a load average of 100).
const FORMATION: &str = "\nchecks:\n  formation:\n    within: 120s\n";

/// Six nodes on hosts h1 and h2 (the lab's labels; a genesis on each, so that a node of
/// either side can join its own side), every process fault the runtime offers.
const FAULTS: &str = "\
name: swarmrt-faults
seed: 7
defaults: {heartbeat_interval: 200ms, heartbeat_timeout: 1s, suspect_timeout: 1s}
hosts:
  - {name: h1}
  - {name: h2}
genesis: {count: 2, host: spread}
groups:
  - {name: peers, count: 4, host: spread}
scenario:
  - at: 1s
    kill: random 1 of peers
  - expect: {within: 20s, connected: true, full_membership: true}
  - start: all
  - expect: {within: 30s, all_ready: true, connected: true, full_membership: true}
  - restart: random 1 of peers
  - expect: {within: 30s, all_ready: true, connected: true, full_membership: true}
  - pause: random 1 of peers
  - expect: {within: 20s, connected: true, full_membership: true}
  - resume: peers
  - expect: {within: 30s, all_ready: true, connected: true, full_membership: true, broadcast: {count: 2}}
  - partition: {host: h2}
  - expect: {within: 20s, components: 2, component_membership: true}
  - restart: peers-1
  - expect: {within: 30s, all_ready: true, components: 2, component_membership: true}
  - heal: true
  - expect: {within: 30s, connected: true, full_membership: true}
";

/// topologies/three-hosts.yaml with each host given the label of its lab host.
fn topology(ws: &Workspace) -> std::path::PathBuf {
    let path = ws.copy_topology("three-hosts.yaml");
    let mut text = std::fs::read_to_string(&path).expect("read topology");
    for (host, lab) in HOSTS {
        let plain = format!("{{name: {host}}}");
        assert!(text.contains(&plain), "three-hosts.yaml has no `{plain}`");
        text = text.replace(&plain, &format!("{{name: {host}, label: {lab}}}"));
    }
    assert!(
        !text.contains("\nchecks:"),
        "three-hosts.yaml now has checks: merge them"
    );
    text.push_str(FORMATION);
    // A keyed network across hosts: the key reaches every task through its environment.
    assert!(
        !text.contains("network_key:"),
        "three-hosts.yaml now has a network key"
    );
    text.push_str("network_key: per-run\n");
    std::fs::write(&path, text).expect("write topology");
    path
}

/// The environment that points peerlab at the lab: its manager and every host's engine.
fn lab_env(lab: &SwarmLab) -> Vec<(String, String)> {
    let manager = lab.hosts()[0].socket.clone();
    let engines: Vec<String> = lab
        .hosts()
        .iter()
        .map(|h| format!("{}={}", h.name, h.socket))
        .collect();
    vec![
        ("DOCKER_HOST".to_string(), manager),
        ("PEERLAB_SWARM_ENGINES".to_string(), engines.join(",")),
    ]
}

fn peerlab(ws: &Workspace, lab: &SwarmLab, args: &[&str]) -> Output {
    let env = lab_env(lab);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ws.peerlab_with_env(args, &env)
}

/// Services and networks of `run` on the manager, and task containers of its nodes on
/// every host.
fn leftovers(lab: &SwarmLab, run: &str) -> Vec<String> {
    let label = format!("label=peerlab.run={run}");
    let mut left = Vec::new();
    let services = must(
        lab.manager()
            .args(["service", "ls", "-q", "--filter", &label]),
    );
    left.extend(services.lines().map(|s| format!("service {s}")));
    let networks = must(
        lab.manager()
            .args(["network", "ls", "-q", "--filter", &label]),
    );
    left.extend(networks.lines().map(|n| format!("network {n}")));
    for host in lab.hosts() {
        let containers = must(lab.docker(&host.name).args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.swarm.service.name={run}-relay"),
        ]));
        left.extend(
            containers
                .lines()
                .map(|c| format!("relay {c} on {}", host.name)),
        );
        let nodes = must(
            lab.docker(&host.name)
                .args(["ps", "-a", "--format", "{{.Names}}"]),
        );
        left.extend(
            nodes
                .lines()
                .filter(|n| n.starts_with(&format!("{run}-")))
                .map(|n| format!("container {n} on {}", host.name)),
        );
    }
    left
}

/// Polls until nothing of `run` is left anywhere, failing with what remains.
fn assert_nothing_left(lab: &SwarmLab, run: &str) {
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let left = leftovers(lab, run);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} left after {GONE_WITHIN:?}: {left:?}"
        );
        std::thread::sleep(DOCKER_POLL);
    }
}

/// Where the topology places node `name` (`genesis: {host: spread}`, peers spread): the
/// lab host of host number `index % 3`.
fn expected_host(name: &str) -> &'static str {
    let index: usize = name
        .rsplit_once('-')
        .and_then(|(_, i)| i.parse().ok())
        .unwrap_or_else(|| panic!("node name {name} has no index"));
    HOSTS[index % HOSTS.len()].1
}

#[test]
fn a_topology_runs_on_three_swarm_hosts_survives_a_host_cut_and_leaves_nothing() {
    require_engine();
    ensure_image();
    let begun = Instant::now();
    let lab = SwarmLab::up(3);
    let ws = Workspace::new("swarmrt");
    let file = topology(&ws);
    let file = file.to_str().expect("utf-8 path");
    let report = ws.path("report.json");

    // 1. run: formation across hosts, the host cut and heal of the scenario, teardown.
    let ran = Instant::now();
    let out = peerlab(
        &ws,
        &lab,
        &[
            "run",
            file,
            "--runtime",
            "swarm",
            "--report",
            report.to_str().expect("utf-8 path"),
        ],
    );
    let run_took = ran.elapsed();
    assert_eq!(out.code(), Some(0), "peerlab run failed:\n{}", out.dump());
    eprintln!("{}", out.stderr);
    let run = out.run_id().expect("the run announces its id");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
            .expect("report is JSON");
    assert_eq!(json["passed"], true, "{json:#}");
    let text = json.to_string();
    assert!(
        text.contains("genesis-2") && text.contains("peers-8"),
        "the report covers every node: {json:#}"
    );
    assert_nothing_left(&lab, &run);

    // 2. up: placement, ps, down.
    let out = peerlab(&ws, &lab, &["up", file, "--runtime", "swarm"]);
    assert_eq!(out.code(), Some(0), "peerlab up failed:\n{}", out.dump());
    let up = out.run_id().expect("up announces its run id");
    let services = must(lab.manager().args([
        "service",
        "ls",
        "--filter",
        "label=peerlab.role=node",
        "--filter",
        &format!("label=peerlab.run={up}"),
        "--format",
        "{{.Name}}",
    ]));
    let names: Vec<&str> = services.lines().collect();
    assert_eq!(names.len(), 12, "one service per node: {names:?}");
    for service in names {
        let node = service
            .strip_prefix(&format!("{up}-"))
            .unwrap_or_else(|| panic!("service {service} is not named after run {up}"));
        let placed = must(lab.manager().args([
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}",
            service,
        ]));
        let swarm_node = placed.lines().next().unwrap_or_default().to_string();
        assert_eq!(
            lab.host_of_node(&swarm_node).as_deref(),
            Some(expected_host(node)),
            "{node} runs on {swarm_node}"
        );
    }
    let ps = peerlab(&ws, &lab, &["ps"]);
    assert_eq!(ps.code(), Some(0), "{}", ps.dump());
    let line = ps
        .stdout
        .lines()
        .find(|l| l.starts_with(&up))
        .unwrap_or_else(|| panic!("ps does not list {up}:\n{}", ps.dump()));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.get(1), Some(&"swarm"), "{line}");
    assert_eq!(fields.get(2), Some(&"12"), "{line}");
    let down = peerlab(&ws, &lab, &["down", &up]);
    assert_eq!(down.code(), Some(0), "{}", down.dump());
    assert_nothing_left(&lab, &up);
    let again = peerlab(&ws, &lab, &["down", &up]);
    assert_eq!(
        again.code(),
        Some(0),
        "a second down is harmless: {}",
        again.dump()
    );

    // 3. kill, start, restart, pause, resume across hosts.
    let faults = ws.write("faults.yaml", &format!("{FAULTS}{FORMATION}"));
    let faulted = Instant::now();
    let out = peerlab(
        &ws,
        &lab,
        &[
            "run",
            faults.to_str().expect("utf-8 path"),
            "--runtime",
            "swarm",
        ],
    );
    let faults_took = faulted.elapsed();
    assert_eq!(
        out.code(),
        Some(0),
        "the fault scenario failed:\n{}",
        out.dump()
    );
    eprintln!("{}", out.stderr);
    for step in [
        "step 1: kill peers-",
        "step 3: start",
        "step 5: restart peers-",
        "step 7: pause peers-",
        "step 9: resume",
        "step 11: partition host h2",
        "step 13: restart peers-1",
    ] {
        assert!(
            out.stderr.contains(step),
            "the fault run did not play `{step}`:\n{}",
            out.dump()
        );
    }
    let run = out.run_id().expect("the run announces its id");
    assert_nothing_left(&lab, &run);

    let lab_down = lab.down();
    eprintln!(
        "swarm runtime test: run {run_took:.1?}; faults {faults_took:.1?}; {lab_down}; total {:.1?}",
        begun.elapsed()
    );
}
