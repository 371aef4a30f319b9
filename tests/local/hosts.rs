//! Hosts emulated on local processes (`topologies/three-hosts.yaml`: three hosts 40 ms
//! apart, four nodes each): every node shapes its links to the nodes of the other hosts,
//! and only those (its `/admin/faults` says so, and a broadcast takes at least the link's
//! latency to cross a host boundary); a restarted node gets its shapes back; cutting a host
//! off (`Lab::cut_host`) splits the overlay into that host and the rest, and healing merges
//! it again.
//!
//! Every wait is a poll with a deadline, never a sleep. The run takes a heavy turn: twelve
//! nodes with one-second failure detection.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use peerlab::Lab;
use peerlab::contract::admin::FaultsReport;
use peerlab::lab::{FormationExpectation, LabError, RuntimeKind};

use crate::support::{BIN, heavy_turn, topologies_dir};

const FORM_WITHIN: Duration = Duration::from_secs(40);
/// The default link of the file: 40ms +-5ms each way, 10mbit (1,250,000 bytes/s).
const LATENCY_MS: u64 = 40;
const JITTER_MS: u64 = 5;
const RATE: u64 = 1_250_000;

/// The loopback IP of a local node, from its advertised `ip:port`.
fn ip_of(peer_addr: &str) -> String {
    peer_addr
        .rsplit_once(':')
        .map_or(peer_addr, |(ip, _)| ip)
        .to_string()
}

/// Checks that `node` shapes exactly the nodes of the other hosts, with the file's link;
/// returns what is in force on it.
async fn assert_shaped_towards_other_hosts(
    lab: &Lab,
    node: &str,
    host_of: &BTreeMap<String, String>,
    ips: &BTreeMap<String, String>,
) -> FaultsReport {
    let faults = lab
        .node(node)
        .expect("a handle")
        .faults()
        .await
        .unwrap_or_else(|e| panic!("{node}: /admin/faults: {e}"));
    let here = &host_of[node];
    let expected: BTreeSet<&String> = host_of
        .iter()
        .filter(|(_, h)| *h != here)
        .map(|(n, _)| &ips[n])
        .collect();
    let shaped: BTreeSet<&String> = faults.shaped.keys().collect();
    assert_eq!(
        shaped, expected,
        "{node} (on {here}) must shape exactly the other hosts' nodes: {faults:?}"
    );
    for (peer, shape) in &faults.shaped {
        assert_eq!(
            (shape.delay_ms, shape.jitter_ms, shape.rate_bytes_per_sec),
            (LATENCY_MS, JITTER_MS, Some(RATE)),
            "{node} towards {peer}"
        );
    }
    faults
}

// The turn is held on purpose for the whole run (see `heavy_turn`); the test's runtime is
// current-thread, so the guard never crosses threads.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn emulated_hosts_shape_cross_host_links_and_a_cut_host_splits_and_heals() {
    let _turn = heavy_turn();
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = Lab::from_file(topologies_dir().join("three-hosts.yaml"))
        .expect("the file validates")
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs.path())
        .start()
        .await
        .expect("the lab starts");
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());

    let host_of: BTreeMap<String, String> = ["eu", "us", "asia"]
        .iter()
        .flat_map(|h| lab.nodes_on(h).into_iter().map(|n| (n, h.to_string())))
        .collect();
    assert_eq!(host_of.len(), 12, "every node is on a host: {host_of:?}");
    for host in ["eu", "us", "asia"] {
        assert_eq!(lab.nodes_on(host).len(), 4, "{host}: {host_of:?}");
    }
    let ips: BTreeMap<String, String> = lab
        .endpoints()
        .into_iter()
        .map(|e| (e.name.clone(), ip_of(&e.peer_addr)))
        .collect();
    for node in host_of.keys() {
        let faults = assert_shaped_towards_other_hosts(&lab, node, &host_of, &ips).await;
        assert!(faults.blocked.is_empty(), "{node}: {faults:?}");
    }

    // The shapes are in force: a broadcast from eu reaches every node on another host no
    // sooner than one crossing (latency minus jitter) after it was sent.
    let id = lab
        .broadcast("genesis-0", "across the hosts")
        .await
        .expect("accepted");
    let delivery = lab
        .wait_delivered(std::slice::from_ref(&id), Duration::from_secs(15))
        .await
        .expect("started");
    assert!(delivery.complete(), "missing at {:?}", delivery.missing());
    let floor = (LATENCY_MS - JITTER_MS) as f64 / 1000.0;
    for (node, messages) in &delivery.delivered {
        if host_of[node] == "eu" {
            continue;
        }
        let m = messages.iter().find(|m| m.id == id).expect("delivered");
        let took = m.received_at - m.time;
        assert!(
            took >= floor,
            "{node} (on {}) got it {took:.3}s after it was sent, less than one crossing",
            host_of[node]
        );
    }

    // A restarted node lost its shapes with its process: it gets them back.
    lab.restart("peers-1").await.expect("restarted");
    let back = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(back.formed(), "{:#?}", back.failures());
    assert_shaped_towards_other_hosts(&lab, "peers-1", &host_of, &ips).await;

    // Cut `us` off: its nodes link only among themselves, everyone else only elsewhere,
    // and each side knows exactly its own nodes.
    lab.cut_host("us").await.expect("the host is cut off");
    let split = FormationExpectation {
        components: Some(2),
        component_membership: true,
        ..FormationExpectation::default()
    };
    let seen = lab
        .wait_for(&split, Duration::from_secs(20))
        .await
        .expect("started");
    assert!(seen.formed(), "{:#?}", seen.failures());
    let name_of: BTreeMap<String, String> = lab
        .endpoints()
        .into_iter()
        .map(|e| (e.peer_addr, e.name))
        .collect();
    let crossing = lab
        .wait_until(Duration::from_secs(10), |nodes| {
            let mut crossing = Vec::new();
            for o in nodes {
                let Some(status) = &o.status else {
                    return Some(format!("{} did not answer", o.name));
                };
                let on_us = host_of[&o.name] == "us";
                for n in &status.neighbours {
                    let peer = name_of.get(&n.addr).map_or(n.addr.as_str(), String::as_str);
                    if host_of.get(peer).is_none_or(|h| (h == "us") != on_us) {
                        crossing.push(format!("{} - {peer}", o.name));
                    }
                }
            }
            (!crossing.is_empty()).then(|| format!("links across the cut: {crossing:?}"))
        })
        .await
        .expect("started");
    assert!(crossing.held(), "{:?}", crossing.problem);
    // The cut blocks the other hosts' nodes and leaves the host links shaped.
    let faults = assert_shaped_towards_other_hosts(&lab, "genesis-1", &host_of, &ips).await;
    assert!(faults.blocked.contains_key("genesis-0"), "{faults:?}");

    lab.heal().await.expect("healed");
    let healed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(healed.formed(), "{:#?}", healed.failures());
    let id = lab
        .broadcast("peers-1", "us is back")
        .await
        .expect("accepted");
    let delivery = lab
        .wait_delivered(std::slice::from_ref(&id), Duration::from_secs(15))
        .await
        .expect("started");
    assert!(delivery.complete(), "missing at {:?}", delivery.missing());

    let report = lab.shutdown().await.expect("torn down");
    assert!(report.leftovers.is_empty(), "{report:?}");
}

#[tokio::test]
async fn cutting_an_unknown_host_or_without_hosts_is_refused() {
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = Lab::builder("no-hosts")
        .genesis(1)
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs.path())
        .start()
        .await
        .expect("the lab starts");
    match lab.cut_host("us").await {
        Err(LabError::State(message)) => {
            assert!(message.contains("no host named us"), "{message}");
            assert!(message.contains("declare them under `hosts:`"), "{message}");
        }
        other => panic!("a cut of an unknown host must be refused, got {other:?}"),
    }
    assert!(lab.nodes_on("us").is_empty());
    lab.shutdown().await.expect("torn down");
    assert!(Path::new(runs.path()).exists());
}
