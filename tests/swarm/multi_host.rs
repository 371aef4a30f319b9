//! Nine nodes on a three-host swarm (tests/swarm/three-hosts.yaml: hosts a, b, c labelled
//! h1, h2, h3; the genesis on h1, `peers` spread two per host, `edge` on h3), deployed as a
//! user would: `peerlab compose --stack`, the image loaded on every host (no registry),
//! `docker stack deploy --resolve-image never`. Everything is judged from inside the overlay, where the status
//! sockets are: `peerlab status` run in a task (through `docker exec` on that task's host).
//!
//! It checks that the nodes form one network across the hosts; that when h2 is cut off (its
//! VXLAN and gossip traffic dropped) the other seven form a network of their own, closed, h2's
//! two do too, and h2's nodes no longer answer from h1; that after the heal all nine form
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
use crate::support::swarm::{OneShot, Stack, SwarmLab};

/// The stack's name: its services are `three-hosts_<service>`, its network `three-hosts_net`.
const STACK: &str = "three-hosts";
/// Status port of every node (the image's default).
const STATUS_PORT: u16 = 7071;
/// Service, replicas, swarm host: the stack the topology's `hosts:` placement gives.
const LAYOUT: [(&str, usize, &str); 5] = [
    ("genesis-0", 1, "h1"),
    ("peers-a", 2, "h1"),
    ("peers-b", 2, "h2"),
    ("peers-c", 2, "h3"),
    ("edge", 2, "h3"),
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

/// `peerlab ARGS` as a one-shot service on the stack's overlay, pinned to the manager (h1):
/// what docs/multi-host.md has users run, since the status sockets are not published.
fn in_overlay(stack: &mut Stack, image: &str, args: &[&str]) -> OneShot {
    let network = stack.network("net");
    stack.oneshot(image, &network, args, Duration::from_secs(180))
}

/// [`in_overlay`] `peerlab check` of every node (`tasks.peerlab-nodes`), which must pass.
fn check_passes(stack: &mut Stack, image: &str, expect: usize, within: &str, broadcasts: usize) {
    let (expect, broadcasts) = (expect.to_string(), broadcasts.to_string());
    let args = [
        "check",
        "--dns",
        "tasks.peerlab-nodes",
        "--status-port",
        "7071",
        "--expect-nodes",
        &expect,
        "--within",
        within,
        "--broadcast",
        &broadcasts,
    ];
    let shot = in_overlay(stack, image, &args);
    assert_eq!(
        shot.exit_code,
        Some(0),
        "`peerlab {}` in the overlay did not pass ({}):\n{}",
        args.join(" "),
        shot.state,
        shot.logs
    );
    assert!(shot.logs.contains("PASSED"), "{}", shot.logs);
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
    must(
        peerlab()
            .arg("compose")
            .arg(&topology)
            .arg("--stack")
            .arg("-o")
            .arg(&file),
    );

    // The topology asks for a network key: the stack file requires it at deploy time...
    let unkeyed = lab
        .manager()
        .args(["stack", "deploy", "--resolve-image", "never", "-c"])
        .arg(&file)
        .arg(STACK)
        .env_remove("PEERLAB_NETWORK_KEY")
        .output()
        .expect("run docker stack deploy");
    let said = String::from_utf8_lossy(&unkeyed.stderr);
    assert!(
        !unkeyed.status.success() && said.contains("PEERLAB_NETWORK_KEY"),
        "a deploy without the network key must fail naming it: {said}"
    );
    // ...and every node gets the one the deployer gives.
    let key = "5e".repeat(32);
    let deployed = Instant::now();
    let mut stack = Stack::deploy_with_env(&lab, STACK, &file, &[("PEERLAB_NETWORK_KEY", &key)]);
    for (service, _, _) in LAYOUT {
        let env = must(lab.manager().args([
            "service",
            "inspect",
            &format!("{STACK}_{service}"),
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        ]));
        assert!(
            env.contains(&format!("PEERLAB_NETWORK_KEY={key}")),
            "{service} runs without the deployer's network key: {env}"
        );
    }
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
    // The user's way: `peerlab check` inside the overlay, broadcasts across the hosts.
    check_passes(&mut stack, image, total, "60s", 3);

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
        "peers-b",
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
    // `peerlab check` sees the split: all nine cannot be found, the seven form and broadcast.
    let split = in_overlay(
        &mut stack,
        image,
        &[
            "check",
            "--dns",
            "tasks.peerlab-nodes",
            "--expect-nodes",
            "9",
            "--within",
            "5s",
        ],
    );
    assert_eq!(
        split.exit_code,
        Some(1),
        "the check of nine nodes must fail while h2 is cut off ({}):\n{}",
        split.state,
        split.logs
    );
    check_passes(&mut stack, image, rest.len(), "60s", 2);

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
    check_passes(&mut stack, image, total, "60s", 3);
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
