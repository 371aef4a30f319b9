//! The local runtime's partitions and shaping, through the nodes' admin endpoints.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use peerlab::client::StatusClient;
use peerlab::contract::FaultsReport;
use peerlab::contract::LinkShape;
use peerlab::runtime::local::LocalRuntime;
use peerlab::runtime::{NodeEndpoint, NodeSpec, RunPlan, Runtime};
use support::{BIN, FAST_TIMEOUTS, poll_until};

fn node(name: &str, genesis: bool, seed: u64) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        group: if genesis { "genesis" } else { "peers" }.into(),
        genesis,
        networks: Vec::new(),
        start_after: Duration::ZERO,
        node_args: FAST_TIMEOUTS.iter().map(|s| s.to_string()).collect(),
        seed,
    }
}

fn plan(dir: PathBuf, nodes: Vec<NodeSpec>) -> RunPlan {
    RunPlan {
        run_id: format!("links-{:x}", std::process::id()),
        run_dir: dir,
        topology_name: "links".into(),
        image: String::new(),
        networks: Vec::new(),
        nodes,
        detach: false,
    }
}

async fn faults(endpoint: &NodeEndpoint) -> FaultsReport {
    reqwest::get(format!("{}/admin/faults", endpoint.status_url))
        .await
        .expect("status socket answers")
        .json()
        .await
        .expect("a faults report")
}

/// Waits until each node's member list is exactly the names of its group.
async fn wait_members(endpoints: &[NodeEndpoint], groups: &[&[&str]], what: &str) {
    let clients: Vec<StatusClient> = endpoints
        .iter()
        .map(|e| StatusClient::new(&e.status_url, Duration::from_secs(5)).unwrap())
        .collect();
    poll_until(Duration::from_secs(30), what, || async {
        for (endpoint, client) in endpoints.iter().zip(&clients) {
            let status = client.status().await.ok()?;
            let group = groups
                .iter()
                .find(|g| g.contains(&endpoint.name.as_str()))?;
            let expected: BTreeSet<&str> = group.iter().copied().collect();
            let members: BTreeSet<&str> = status.members.iter().map(|m| m.id.as_str()).collect();
            if members != expected {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_partition_heals_and_teardown_leaves_no_fault() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["genesis-0", "peers-0", "peers-1", "peers-2"];
    let specs: Vec<NodeSpec> = names
        .iter()
        .enumerate()
        .map(|(i, n)| node(n, i == 0, i as u64 + 1))
        .collect();
    let mut runtime = LocalRuntime::with_executable(BIN.into());
    runtime
        .prepare(&plan(dir.path().into(), specs.clone()))
        .await
        .unwrap();
    let mut endpoints = Vec::new();
    for spec in &specs {
        endpoints.push(runtime.start(spec).await.unwrap());
    }
    wait_members(&endpoints, &[&names], "the four nodes formed one network").await;

    let sides = vec![
        vec!["genesis-0".to_string(), "peers-0".to_string()],
        vec!["peers-1".to_string(), "peers-2".to_string()],
    ];
    runtime.partition(&sides, false).await.unwrap();
    for e in &endpoints {
        assert_eq!(faults(e).await.blocked.len(), 4, "{} blocks", e.name);
    }
    wait_members(
        &endpoints,
        &[&names[..2], &names[2..]],
        "each side of the partition sees only itself",
    )
    .await;

    runtime.heal().await.unwrap();
    for e in &endpoints {
        assert!(faults(e).await.is_clear(), "{} still has faults", e.name);
    }
    wait_members(
        &endpoints,
        &[&names],
        "the partition healed into one network",
    )
    .await;

    // A shape left in force is cleared (and checked) by teardown.
    let shape = LinkShape {
        delay: Duration::from_millis(20),
        ..LinkShape::default()
    };
    runtime
        .shape(&["peers-0".to_string()], None, shape)
        .await
        .unwrap();
    assert!(!faults(&endpoints[1]).await.is_clear());
    let report = runtime.teardown().await.unwrap();
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert_eq!(report.processes_stopped, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_faults_refuse_unknown_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = LocalRuntime::with_executable(BIN.into());
    runtime
        .prepare(&plan(dir.path().into(), vec![node("genesis-0", true, 1)]))
        .await
        .unwrap();
    let sides = vec![vec!["nobody".to_string()], vec!["genesis-0".to_string()]];
    let err = runtime.partition(&sides, false).await.unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");
    let err = runtime
        .shape(&["nobody".to_string()], None, LinkShape::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");
    runtime.teardown().await.unwrap();
}
