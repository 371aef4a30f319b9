//! The Docker runtime end to end: a 1 genesis + 3 peer network forms in containers, and
//! teardown leaves nothing behind. Requires a Docker engine: fails, not skips, without one.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveImageOptionsBuilder,
};
use peerlab::contract::NodeStatus;
use peerlab::runtime::docker::{DockerRuntime, list_runs, remove_leftovers};
use peerlab::runtime::{
    NetworkSpec, NodeAction, NodeEndpoint, NodeSpec, RUN_LABEL, RunPlan, Runtime,
};

const DEADLINE: Duration = Duration::from_secs(60);

fn unique_run_id(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{:x}",
        (std::process::id() as u64) << 32 ^ nanos as u64
    )
}

async fn docker() -> Docker {
    peerlab::runtime::docker::image::connect()
        .await
        .unwrap_or_else(|e| panic!("this test needs Docker: {e}"))
}

fn node(name: &str, genesis: bool, networks: &[&str], seed: u64) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        group: if genesis {
            "genesis".into()
        } else {
            "peers".into()
        },
        genesis,
        networks: networks.iter().map(|s| s.to_string()).collect(),
        start_after: Duration::ZERO,
        node_args: vec!["--degree".into(), "2".into()],
        seed,
    }
}

fn plan(
    run_id: &str,
    run_dir: &Path,
    image: &str,
    nodes: Vec<NodeSpec>,
    networks: Vec<NetworkSpec>,
) -> RunPlan {
    RunPlan {
        run_id: run_id.into(),
        run_dir: run_dir.into(),
        topology_name: "docker-test".into(),
        image: image.into(),
        networks,
        nodes,
        detach: false,
    }
}

/// Containers and networks still labelled with `run_id`.
async fn remaining(docker: &Docker, run_id: &str) -> (usize, usize) {
    let filters = HashMap::from([("label", vec![format!("{RUN_LABEL}={run_id}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    (containers.len(), networks.len())
}

/// Builds a test image from the cargo-built `peerlab`, runs `body`, then removes every
/// container and network of `run_id` and the image, even when `body` panicked.
async fn with_run<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Docker, String, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let docker = docker().await;
    let run_id = unique_run_id(prefix);
    let image = format!("peerlab-test:{run_id}");
    let binary = Path::new(env!("CARGO_BIN_EXE_peerlab"));
    peerlab::runtime::docker::image::build_image_from(&docker, &image, binary, |_| {})
        .await
        .unwrap();
    let outcome = tokio::spawn(body(docker.clone(), run_id.clone(), image.clone())).await;
    let cleanup = remove_leftovers(Some(&run_id)).await;
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    let _ = docker.remove_image(&image, Some(options), None).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    cleanup.unwrap();
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
        let expected: Vec<String> = endpoints.iter().map(|e| e.peer_addr.clone()).collect();
        loop {
            let mut views = Vec::new();
            for e in &endpoints {
                let s = status(&client, e).await;
                let mut members: Vec<String> = s.members.iter().map(|m| m.addr.clone()).collect();
                members.sort();
                views.push((e.name.clone(), s.name.clone(), members));
            }
            let mut want = expected.clone();
            want.sort();
            if views
                .iter()
                .all(|(name, shown, members)| Some(name) == shown.as_ref() && *members == want)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "membership did not converge to {want:?}: {views:?}"
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
        let networks = vec![
            NetworkSpec {
                name: "lan".into(),
                subnet: None,
            },
            NetworkSpec {
                name: "wan".into(),
                subnet: None,
            },
        ];
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
        runtime
            .act("peers-0", peerlab::runtime::NodeAction::Pause)
            .await
            .unwrap();
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
    let docker = docker().await;
    let run_id = unique_run_id("dkcs");
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
        let networks = vec![NetworkSpec {
            name: "core".into(),
            subnet: Some(subnet.into()),
        }];
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
