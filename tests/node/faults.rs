//! Link faults the node applies to itself (`/admin/*`): partitions that heal, shaping.

use std::time::Duration;

use crate::support::cluster::{Cluster, FAST_TIMEOUTS, Node};
use crate::support::formation::{self, observation};
use crate::support::{admin_bearer, poll_until};
use peerlab::contract::FaultsReport;
use peerlab::orchestrator::FormationExpectation;
use serde_json::{Value, json};

const FORMATION: Duration = Duration::from_secs(30);

async fn admin(node: &Node, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let (code, value) = admin_raw(node, method, path, body).await;
    assert!(code.is_success(), "{path} on {}: {code} {value}", node.name);
    value
}

async fn admin_raw(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let url = format!("http://{}{path}", node.status_addr());
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header(reqwest::header::AUTHORIZATION, admin_bearer());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("status socket answers");
    let code = response.status();
    (code, response.json().await.expect("a JSON answer"))
}

async fn faults(node: &Node) -> FaultsReport {
    let v = admin(node, reqwest::Method::GET, "/admin/faults", None).await;
    serde_json::from_value(v).expect("a faults report")
}

/// Ids and addresses of `nodes`, as blocks name peers.
fn keys(nodes: &[&Node]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| [n.id().to_string(), n.addr()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_split_forms_two_overlays_and_heals_after_unblock() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(9, &FAST_TIMEOUTS).await;
    cluster.wait_formed(1, FORMATION).await;
    let (left, right) = cluster.nodes.split_at(5);
    let left: Vec<&Node> = left.iter().collect();
    let right: Vec<&Node> = right.iter().collect();
    for (side, other) in [(&left, &right), (&right, &left)] {
        for node in side.iter() {
            let body = json!({"peers": keys(other), "direction": "both"});
            let report = admin(node, reqwest::Method::POST, "/admin/block", Some(body)).await;
            assert_eq!(report["blocked"].as_object().map(|o| o.len()), Some(10));
        }
    }

    // Each half, judged by the orchestrator's checks: connected, every member list exactly
    // the half, and no link left to the other half.
    let half = FormationExpectation {
        connected: true,
        full_membership: true,
        ..FormationExpectation::default()
    };
    for (side, name) in [(&left, "left"), (&right, "right")] {
        poll_until(
            Duration::from_secs(30),
            &format!("the {name} half sees only itself and stays connected"),
            || async {
                let mut observations = Vec::new();
                for node in side.iter() {
                    let status = node.client.status().await.map_err(|e| e.to_string());
                    let url = format!("http://{}", node.status_addr());
                    observations.push(observation(&node.name, &url, status, false));
                }
                formation::closed_problem(&observations, &half)
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    }
    let report = faults(left[0]).await;
    assert!(report.dropped_out + report.dials_blocked > 0, "{report:?}");

    for node in &cluster.nodes {
        let report = admin(node, reqwest::Method::POST, "/admin/unblock", None).await;
        assert_eq!(report["blocked"], json!({}));
    }
    // One component again, every member list the whole cluster.
    cluster.wait_formed(1, FORMATION).await;
    for node in &cluster.nodes {
        assert!(faults(node).await.is_clear());
    }
}

/// Latency of broadcast `id` at `node`: its receive time minus the origin's send time.
async fn latency(node: &Node, id: &str) -> f64 {
    let message = poll_until(Duration::from_secs(10), "broadcast delivered", || async {
        node.messages().await?.into_iter().find(|m| m.id == id)
    })
    .await;
    message.received_at - message.time
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_shape_slows_delivery_and_clears() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(1, &FAST_TIMEOUTS).await;
    cluster.wait_formed(1, FORMATION).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);

    let id = a.client.broadcast("#BROADCAST", "fast").await.unwrap();
    let baseline = latency(b, &id).await;

    let body = json!({"delay_ms": 100, "jitter_ms": 0, "loss": 0.0});
    admin(a, reqwest::Method::POST, "/admin/shape", Some(body)).await;
    assert!(faults(a).await.shaped.contains_key("*"));
    let id = a.client.broadcast("#BROADCAST", "slow").await.unwrap();
    let slow = latency(b, &id).await;
    // Each node derives wall time from its own start, a few ms apart: allow 10 ms.
    assert!(
        slow >= 0.09,
        "a 100 ms delay must hold the frame: {slow:.3}s"
    );
    assert!(
        slow >= baseline + 0.05,
        "shaped {slow:.3}s, baseline {baseline:.3}s"
    );

    admin(a, reqwest::Method::DELETE, "/admin/shape", None).await;
    assert!(faults(a).await.is_clear());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_loss_towards_a_peer_gets_the_node_suspected() {
    let args = [
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "1s",
        "--suspect-timeout",
        "3s",
    ];
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(2, &args).await;
    cluster.wait_formed(1, FORMATION).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);

    let body = json!({"loss": 1.0, "peers": [b.id()]});
    admin(a, reqwest::Method::POST, "/admin/shape", Some(body)).await;
    poll_until(
        Duration::from_secs(15),
        "the peer that hears nothing suspects the lossy node (or declared it dead)",
        || async {
            let s = b.status().await?;
            let suspected = s.suspects.iter().any(|p| p.id == a.id());
            let gone = !s.members.iter().any(|p| p.id == a.id());
            (suspected || gone).then_some(())
        },
    )
    .await;
    assert!(faults(a).await.lost > 0);
    admin(a, reqwest::Method::DELETE, "/admin/shape", None).await;
    assert!(faults(a).await.is_clear());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_are_validated_with_advice() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(0, &[]).await;
    let a = &cluster.nodes[0];
    let cases = [
        ("/admin/block", json!({"peers": []})),
        (
            "/admin/block",
            json!({"peers": ["x"], "direction": "sideways"}),
        ),
        ("/admin/shape", json!({"loss": 1.5})),
        ("/admin/shape", json!({"rate_bytes_per_sec": 0})),
    ];
    for (path, body) in cases {
        let (code, answer) = admin_raw(a, reqwest::Method::POST, path, Some(body.clone())).await;
        assert_eq!(code, reqwest::StatusCode::BAD_REQUEST, "{path} {body}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(faults(a).await.is_clear());
}

/// A one-way block from A to X (A's frames and dials towards X are dropped, X's reach A)
/// while everyone else reaches both: each of the two cannot reach the other itself, and
/// only the neighbours' indirect probes can tell it the other lives. Nobody may take
/// either for dead, for longer than a whole suspicion timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_block_between_two_nodes_removes_neither_of_them() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(5, &FAST_TIMEOUTS).await;
    cluster.wait_formed(2, FORMATION).await;
    let (a, x) = (&cluster.nodes[1], &cluster.nodes[2]);
    let body = json!({"peers": keys(&[x]), "direction": "out"});
    admin(a, reqwest::Method::POST, "/admin/block", Some(body)).await;

    let blocked_at = std::time::Instant::now();
    // Watched for 12 s (twelve suspicion timeouts), and until a neighbour's probe has
    // vouched for one of the two: at every look, both are members everywhere.
    let nodes = &cluster.nodes;
    let saves = poll_until(
        Duration::from_secs(30),
        "12 s watched and an indirect probe's save seen",
        || async {
            let mut saves = 0;
            for node in nodes {
                let s = node.status().await?;
                for who in [a, x] {
                    assert!(
                        s.members.iter().any(|p| p.id == who.id()),
                        "{} dropped {} after {:?} of a one-way block between {} and {}",
                        node.name,
                        who.name,
                        blocked_at.elapsed(),
                        a.name,
                        x.name
                    );
                }
                saves += s.counters.indirect_probe_saves;
            }
            (saves > 0 && blocked_at.elapsed() >= Duration::from_secs(12)).then_some(saves)
        },
    )
    .await;
    assert!(saves > 0);
    assert!(faults(a).await.dropped_out + faults(a).await.dials_blocked > 0);
    admin(a, reqwest::Method::POST, "/admin/unblock", None).await;
}
