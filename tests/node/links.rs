//! The local runtime's partitions and shaping, through the nodes' admin endpoints.

use std::path::Path;
use std::time::Duration;

use peerlab::client::StatusClient;
use peerlab::contract::FaultsReport;
use peerlab::contract::LinkShape;
use peerlab::runtime::local::LocalRuntime;
use peerlab::runtime::{NodeEndpoint, NodeSpec, RunPlan, Runtime};

use crate::support::cluster::FAST_TIMEOUTS;
use crate::support::fixtures::{node_spec, run_plan};
use crate::support::formation::{self, observation};
use crate::support::{BIN, admin_bearer, poll_until};

fn node(name: &str, genesis: bool, seed: u64) -> NodeSpec {
    node_spec(name, genesis, seed, &FAST_TIMEOUTS)
}

fn plan(dir: &Path, nodes: Vec<NodeSpec>) -> RunPlan {
    let run_id = format!("links-{:x}", std::process::id());
    run_plan(&run_id, dir, "links", "", nodes, Vec::new())
}

async fn faults(endpoint: &NodeEndpoint) -> FaultsReport {
    reqwest::Client::new()
        .get(format!("{}/admin/faults", endpoint.status_url))
        .header(reqwest::header::AUTHORIZATION, admin_bearer())
        .send()
        .await
        .expect("status socket answers")
        .json()
        .await
        .expect("a faults report")
}

/// Waits until each group's member lists are exactly the group, as the orchestrator's
/// full-membership check judges it over the group's nodes (a node's id is its name on the
/// local runtime, which is checked too).
async fn wait_members(endpoints: &[NodeEndpoint], groups: &[&[&str]], what: &str) {
    let clients: Vec<StatusClient> = endpoints
        .iter()
        .map(|e| StatusClient::new(&e.status_url, Duration::from_secs(5)).unwrap())
        .collect();
    poll_until(Duration::from_secs(30), what, || async {
        for group in groups {
            let mut observations = Vec::new();
            for (endpoint, client) in endpoints.iter().zip(&clients) {
                if !group.contains(&endpoint.name.as_str()) {
                    continue;
                }
                let status = client.status().await.ok()?;
                if status.id != endpoint.name {
                    return None;
                }
                observations.push(observation(
                    &endpoint.name,
                    &endpoint.status_url,
                    Ok(status),
                    false,
                ));
            }
            if observations.len() != group.len()
                || formation::problem(&observations, &formation::full_membership()).is_some()
            {
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
        .prepare(&plan(dir.path(), specs.clone()))
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
        .prepare(&plan(dir.path(), vec![node("genesis-0", true, 1)]))
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
