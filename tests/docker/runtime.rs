//! The Docker runtime end to end: a 1 genesis + 3 peer network forms in containers, and
//! teardown leaves nothing behind. Requires a Docker engine: fails, not skips, without one.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use peerlab::contract::NodeStatus;
use peerlab::runtime::Runtime;
use peerlab::runtime::docker::{DockerRuntime, list_runs, remove_leftovers};
use peerlab::runtime::{NetworkSpec, NodeAction, NodeEndpoint, NodeSpec, RUN_LABEL, RunPlan};

use crate::support::docker::{connect, remaining, unique, with_run};
use crate::support::fixtures::{network, node_spec, on_networks, run_plan};
use crate::support::formation::{self, observation};

const DEADLINE: Duration = Duration::from_secs(60);

fn node(name: &str, genesis: bool, networks: &[&str], seed: u64) -> NodeSpec {
    on_networks(node_spec(name, genesis, seed, &["--degree", "2"]), networks)
}

fn plan(
    run_id: &str,
    run_dir: &Path,
    image: &str,
    nodes: Vec<NodeSpec>,
    networks: Vec<NetworkSpec>,
) -> RunPlan {
    run_plan(run_id, run_dir, "docker-test", image, nodes, networks)
}

/// Polls `url` until it answers 2xx, or fails at the deadline with the last answer.
async fn wait_ok(client: &reqwest::Client, url: &str, deadline: Instant) {
    let mut last = String::new();
    while Instant::now() < deadline {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} not ready by the deadline; last answer: {last}");
}

async fn status(client: &reqwest::Client, endpoint: &NodeEndpoint) -> NodeStatus {
    let url = format!("{}/status", endpoint.status_url);
    client.get(&url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn four_nodes_form_a_network_and_teardown_leaves_nothing() {
    with_run("dkrt", |docker, run_id, image| async move {
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec![
            node("genesis-0", true, &[], 1),
            node("peers-0", false, &[], 2),
            node("peers-1", false, &[], 3),
            node("peers-2", false, &[], 4),
        ];
        let plan = plan(&run_id, dir.path(), &image, nodes.clone(), vec![]);
        let mut runtime = DockerRuntime::with_client(docker.clone());
        runtime.check_support(&plan).unwrap();
        runtime.prepare(&plan).await.unwrap();
        assert_eq!(
            remaining(&docker, &run_id).await,
            (0, 1),
            "one default network"
        );

        let genesis = runtime.start(&nodes[0]).await.unwrap();
        assert_eq!(genesis.peer_addr, format!("{run_id}-genesis-0:7070"));
        // Peers start concurrently, as the orchestrator does.
        let peers = futures::future::join_all(nodes[1..].iter().map(|n| runtime.start(n))).await;
        let mut endpoints = vec![genesis];
        endpoints.extend(peers.into_iter().map(Result::unwrap));
        assert!(runs_contain(&run_id, 4).await);

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        for e in &endpoints {
            assert!(e.status_url.starts_with("http://127.0.0.1:"), "{e:?}");
            wait_ok(&client, &format!("{}/ready", e.status_url), deadline).await;
        }
        // Formed as the orchestrator's full-membership check judges it, every node under its
        // own name and every member known by the address the runtime gave it.
        let mut want: Vec<String> = endpoints.iter().map(|e| e.peer_addr.clone()).collect();
        want.sort();
        loop {
            let mut observations = Vec::new();
            let mut views = Vec::new();
            for e in &endpoints {
                let s = status(&client, e).await;
                let mut members: Vec<String> = s.members.iter().map(|m| m.addr.clone()).collect();
                members.sort();
                views.push((e.name.clone(), s.name.clone(), members));
                observations.push(observation(&e.name, &e.status_url, Ok(s), true));
            }
            let problem = formation::problem(&observations, &formation::full_membership());
            if problem.is_none()
                && views
                    .iter()
                    .all(|(name, shown, members)| Some(name) == shown.as_ref() && *members == want)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "membership did not converge to {want:?}: {problem:?} {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let report = runtime.teardown().await.unwrap();
        assert_eq!(
            (report.containers_removed, report.networks_removed),
            (4, 1),
            "{report:?}"
        );
        assert!(report.leftovers.is_empty(), "{report:?}");
        for n in &nodes {
            let log = dir.path().join("logs").join(format!("{}.log", n.name));
            let saved = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                saved.contains("node starting"),
                "no node log saved at {}",
                log.display()
            );
        }
        assert_eq!(remaining(&docker, &run_id).await, (0, 0));
        assert!(!runs_contain(&run_id, 0).await);
        let again = runtime.teardown().await.unwrap();
        assert_eq!(
            (again.containers_removed, again.networks_removed),
            (0, 0),
            "teardown is idempotent"
        );
    })
    .await;
}

async fn runs_contain(run_id: &str, containers: usize) -> bool {
    list_runs()
        .await
        .unwrap()
        .contains(&(run_id.to_string(), containers))
}

#[tokio::test]
async fn nodes_join_every_network_they_are_on_and_leftovers_are_found_by_label() {
    with_run("dkls", |docker, run_id, image| async move {
        let dir = tempfile::tempdir().unwrap();
        // Both networks with engine-chosen subnets: fixed ones could clash with parallel tests.
        let networks = vec![network("lan", None), network("wan", None)];
        let nodes = vec![
            node("genesis-0", true, &["lan", "wan"], 1),
            node("peers-0", false, &["wan"], 2),
        ];
        let plan = plan(&run_id, dir.path(), &image, nodes.clone(), networks);
        let mut runtime = DockerRuntime::with_client(docker.clone());
        runtime.prepare(&plan).await.unwrap();
        for n in &nodes {
            runtime.start(n).await.unwrap();
        }
        let inspect = docker
            .inspect_container(&format!("{run_id}-genesis-0"), None)
            .await
            .unwrap();
        let attached = inspect.network_settings.unwrap().networks.unwrap();
        let mut names: Vec<&String> = attached.keys().collect();
        names.sort();
        assert_eq!(names, [&format!("{run_id}-lan"), &format!("{run_id}-wan")]);
        for endpoint in attached.values() {
            assert!(
                endpoint
                    .aliases
                    .as_ref()
                    .unwrap()
                    .contains(&"genesis-0".to_string())
            );
        }
        runtime.act("peers-0", NodeAction::Pause).await.unwrap();
        let paused = docker
            .inspect_container(&format!("{run_id}-peers-0"), None)
            .await
            .unwrap();
        assert_eq!(paused.state.unwrap().paused, Some(true));

        runtime.act("peers-0", NodeAction::Resume).await.unwrap();
        let state = |name: &str| {
            let docker = docker.clone();
            let container = format!("{run_id}-{name}");
            async move {
                docker
                    .inspect_container(&container, None)
                    .await
                    .unwrap()
                    .state
                    .unwrap()
            }
        };
        assert_eq!(state("peers-0").await.paused, Some(false));
        runtime.act("peers-0", NodeAction::Kill).await.unwrap();
        let killed = state("peers-0").await;
        assert_eq!((killed.running, killed.exit_code), (Some(false), Some(137)));
        // A graceful stop: the node, PID 1 in its container, handles SIGTERM and exits 0
        // instead of being killed after the grace period.
        runtime.act("genesis-0", NodeAction::Stop).await.unwrap();
        let stopped = state("genesis-0").await;
        assert_eq!((stopped.running, stopped.exit_code), (Some(false), Some(0)));

        // The orchestrator "crashes": its runtime is gone, `peerlab down RUN` must still clean up.
        drop(runtime);
        let report = remove_leftovers(Some(&run_id)).await.unwrap();
        assert_eq!(
            (report.containers_removed, report.networks_removed),
            (2, 2),
            "{report:?}"
        );
        assert_eq!(remaining(&docker, &run_id).await, (0, 0));
    })
    .await;
}

#[tokio::test]
async fn check_support_refuses_undeclared_networks_before_anything_starts() {
    let docker = connect().await;
    let run_id = unique("dkcs");
    let dir = tempfile::tempdir().unwrap();
    let nodes = vec![node("genesis-0", true, &["nowhere"], 1)];
    let runtime = DockerRuntime::with_client(docker.clone());
    let err = runtime
        .check_support(&plan(&run_id, dir.path(), "peerlab:0.1.0", nodes, vec![]))
        .unwrap_err();
    assert!(err.to_string().contains("`nowhere`"), "{err}");
    assert_eq!(remaining(&docker, &run_id).await, (0, 0));
}

#[tokio::test]
async fn a_taken_subnet_names_the_network_holding_it_and_how_to_free_it() {
    with_run("dksub", |docker, run_id, image| async move {
        // A leftover of another (pretend) peerlab run holds the subnet this run asks for.
        let holder_run = format!("{run_id}-old");
        let subnet = "10.77.99.0/24";
        let request = bollard::models::NetworkCreateRequest {
            name: format!("{holder_run}-core"),
            driver: Some("bridge".into()),
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some(subnet.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([(RUN_LABEL.to_string(), holder_run.clone())])),
            ..Default::default()
        };
        docker.create_network(request).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec![node("genesis-0", true, &["core"], 1)];
        let networks = vec![network("core", Some(subnet))];
        let mut runtime = DockerRuntime::with_client(docker.clone());
        let result = runtime
            .prepare(&plan(&run_id, dir.path(), &image, nodes, networks))
            .await;
        let freed = remove_leftovers(Some(&holder_run)).await.unwrap();
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains(&format!("{holder_run}-core"))
                && err.contains(&format!("peerlab down {holder_run}")),
            "{err}"
        );
        assert_eq!(freed.networks_removed, 1);
        assert_eq!(remaining(&docker, &run_id).await, (0, 0));
    })
    .await;
}

#[tokio::test]
async fn resources_become_the_containers_cpu_and_memory_limits() {
    with_run("dkres", |docker, run_id, image| async move {
        let dir = tempfile::tempdir().unwrap();
        let limited = NodeSpec {
            resources: Some(peerlab::runtime::NodeResources {
                cpu_millis: Some(250),
                memory_bytes: Some(64 << 20),
            }),
            ..node("genesis-0", true, &[], 1)
        };
        let free = node("peers-0", false, &[], 2);
        let plan = plan(
            &run_id,
            dir.path(),
            &image,
            vec![limited.clone(), free.clone()],
            vec![],
        );
        let mut runtime = DockerRuntime::with_client(docker.clone());
        runtime.check_support(&plan).unwrap();
        runtime.prepare(&plan).await.unwrap();
        runtime.start(&limited).await.unwrap();
        runtime.start(&free).await.unwrap();
        let host_config = |name: &str| {
            let docker = docker.clone();
            let container = format!("{run_id}-{name}");
            async move {
                docker
                    .inspect_container(&container, None)
                    .await
                    .unwrap()
                    .host_config
                    .unwrap_or_default()
            }
        };
        let limits = host_config("genesis-0").await;
        assert_eq!(limits.nano_cpus, Some(250_000_000));
        assert_eq!(limits.memory, Some(64 << 20));
        let unlimited = host_config("peers-0").await;
        assert!(
            unlimited.nano_cpus.unwrap_or(0) == 0 && unlimited.memory.unwrap_or(0) == 0,
            "a node without resources is unlimited: {unlimited:?}"
        );
        let report = runtime.teardown().await.unwrap();
        assert!(report.leftovers.is_empty(), "{report:?}");
    })
    .await;
}
