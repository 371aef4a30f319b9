//! Nine nodes on a three-host swarm (tests/swarm/three-hosts.yaml: the genesis and `west`
//! on h1, `centre` on h2, `east` on h3), deployed as a user would: `peerlab compose --stack
//! --place ...`, the image loaded on every host (no registry), `docker stack deploy
//! --resolve-image never`. Everything is judged from inside the overlay, where the status
//! sockets are: `peerlab status` run in a task (through `docker exec` on that task's host).
//!
//! It checks that the nodes form one network across the hosts; that when h2 is cut off (its
//! VXLAN and gossip traffic dropped) the other six form a network of their own, closed, h2's
//! three do too, and h2's nodes no longer answer from h1; that after the heal all nine form
//! one network again (polled: after a heal, cross-host traffic can take 30-40 s to come
//! back); and that removing the stack and the lab leaves nothing (`lab down` verifies no
//! daemon, namespace, cgroup, rule or file is left). A failure or panic anywhere still takes
//! the lab down (the guards).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use peerlab::orchestrator::NodeObservation;

use crate::support::ROOT;
use crate::support::docker::{DOCKER_POLL, ensure_image, must, peerlab, require_engine};
use crate::support::formation::{closed_problem, formed};
use crate::support::swarm::{Stack, SwarmLab};

/// The stack's name: its services are `three-hosts_<service>`, its network `three-hosts_net`.
const STACK: &str = "three-hosts";
/// Status port of every node (the image's default).
const STATUS_PORT: u16 = 7071;
/// Service, replicas, host: the topology's groups and where `--place` puts them.
const LAYOUT: [(&str, usize, &str); 4] = [
    ("genesis-0", 1, "h1"),
    ("west", 2, "h1"),
    ("centre", 3, "h2"),
    ("east", 3, "h3"),
];
/// Tasks running and the first formation, from the deploy (measured: about 10-15 s).
const DEPLOY_WITHIN: Duration = Duration::from_secs(90);
/// Formation of each side after a cut (failure detection: a few seconds).
const SPLIT_WITHIN: Duration = Duration::from_secs(60);
/// Full formation after the heal: cross-host traffic came back 0.1-3 s after a heal in most
/// of the lab's runs, 27-42 s in about one in four (the lab's README).
const HEAL_WITHIN: Duration = Duration::from_secs(120);

/// Node names of a service: the genesis keeps its name, replicas are `<group>-<slot>`.
fn node_names(service: &str, replicas: usize) -> Vec<String> {
    if service.starts_with("genesis") {
        vec![service.to_string()]
    } else {
        (1..=replicas).map(|s| format!("{service}-{s}")).collect()
    }
}

/// Node names per host.
fn names_by_host() -> BTreeMap<&'static str, Vec<String>> {
    let mut by_host: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (service, replicas, host) in LAYOUT {
        by_host
            .entry(host)
            .or_default()
            .extend(node_names(service, replicas));
    }
    by_host
}

/// Polls until the nodes `names`, asked from a task of `service` on `host`, form one closed
/// network of exactly themselves (all joined, connected, every member list exactly these
/// nodes, no link leading elsewhere); fails after `within` with the last problem.
fn wait_closed(
    stack: &Stack,
    host: &str,
    service: &str,
    names: &[String],
    within: Duration,
    what: &str,
) -> Duration {
    let start = Instant::now();
    let mut last: Vec<NodeObservation>;
    loop {
        last = stack.observe(host, service, names, STATUS_PORT);
        let problem = closed_problem(&last, &formed(1));
        match problem {
            None => return start.elapsed(),
            Some(p) if start.elapsed() >= within => {
                panic!("{what}: not formed after {within:?}; last problem: {p}\n{last:#?}")
            }
            Some(_) => std::thread::sleep(DOCKER_POLL),
        }
    }
}

#[test]
fn nodes_on_three_hosts_form_split_when_a_host_is_cut_and_merge_after_the_heal() {
    require_engine();
    ensure_image();
    let image = peerlab::DEFAULT_IMAGE;
    let begun = Instant::now();
    let lab = SwarmLab::up(3);
    lab.load(image);
    let up = begun.elapsed();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.yml");
    let topology = Path::new(ROOT).join("tests/swarm/three-hosts.yaml");
    let mut export = peerlab();
    export.arg("compose").arg(&topology).arg("--stack");
    for (service, _, host) in LAYOUT {
        let group = if service.starts_with("genesis") {
            "genesis"
        } else {
            service
        };
        export.args(["--place", &format!("{group}={host}")]);
    }
    must(export.arg("-o").arg(&file));

    let deployed = Instant::now();
    let stack = Stack::deploy(&lab, STACK, &file);
    let total: usize = LAYOUT.iter().map(|(_, n, _)| n).sum();
    let tasks = stack.wait_running(total, DEPLOY_WITHIN);
    // Placement: every task on the host its group was placed on.
    for task in &tasks {
        let service = task.service(STACK);
        let (_, _, host) = LAYOUT
            .iter()
            .find(|(s, _, _)| *s == service)
            .unwrap_or_else(|| panic!("unexpected task {task:?}"));
        assert_eq!(
            lab.host_of_node(&task.node).as_deref(),
            Some(*host),
            "{task:?} runs on the wrong host"
        );
    }

    let by_host = names_by_host();
    let all: Vec<String> = by_host.values().flatten().cloned().collect();
    let formed_in = wait_closed(
        &stack,
        "h1",
        "genesis-0",
        &all,
        DEPLOY_WITHIN,
        "all nine nodes across three hosts",
    );
    let formed_after_deploy = deployed.elapsed();

    // Cut h2 off: h1 and h3 form without it, h2's nodes form among themselves.
    lab.cut("h2");
    let cut = Instant::now();
    let rest: Vec<String> = ["h1", "h3"]
        .iter()
        .flat_map(|h| by_host[h].clone())
        .collect();
    wait_closed(
        &stack,
        "h1",
        "genesis-0",
        &rest,
        SPLIT_WITHIN,
        "h1 + h3 while h2 is cut off",
    );
    wait_closed(
        &stack,
        "h2",
        "centre",
        &by_host["h2"],
        SPLIT_WITHIN,
        "h2's nodes while cut off",
    );
    let split_in = cut.elapsed();
    // And from h1, none of h2's nodes answers.
    let h2_seen_from_h1 = stack.observe("h1", "genesis-0", &by_host["h2"], STATUS_PORT);
    let answered: Vec<&str> = h2_seen_from_h1
        .iter()
        .filter(|o| o.status.is_some())
        .map(|o| o.name.as_str())
        .collect();
    assert!(
        answered.is_empty(),
        "h2 is cut off, yet {answered:?} answered from h1"
    );
    // The control plane was not cut: Swarm rescheduled nothing.
    assert_eq!(stack.tasks().len(), total);

    lab.heal("h2");
    let healed = Instant::now();
    wait_closed(
        &stack,
        "h1",
        "genesis-0",
        &all,
        HEAL_WITHIN,
        "all nine after the heal",
    );
    let merged_in = healed.elapsed();
    let before: Vec<(String, String)> = tasks
        .iter()
        .map(|t| (t.name.clone(), t.node.clone()))
        .collect();
    let mut after: Vec<(String, String)> = stack
        .tasks()
        .into_iter()
        .map(|t| (t.name, t.node))
        .collect();
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "tasks moved or were replaced during the cut");

    stack.remove(Duration::from_secs(60));
    let down = lab.down();
    eprintln!(
        "swarm test: lab up + load {up:.1?}; tasks formed {formed_after_deploy:.1?} after deploy \
         (last poll {formed_in:.1?}); split formed {split_in:.1?} after the cut; merged \
         {merged_in:.1?} after the heal; {down}; total {:.1?}",
        begun.elapsed()
    );
}
