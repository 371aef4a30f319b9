//! A hostile peer lies about membership to real `peerlab node` processes over raw TCP: a
//! forged death of a live member, 10,000 invented members in one frame, ids and addresses
//! out of bounds, and a frame over the size cap. The network keeps its full and correct
//! membership, a new node still joins, a broadcast reaches every node, memory stays bounded.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::attacker::{Attacker, membership_flood, read_frame, send, signed_record};
use crate::support::cluster::{Cluster, FAST_TIMEOUTS, Node, Spec};
use crate::support::poll_until;
use peerlab::node::identity::Identity;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORMATION: Duration = Duration::from_secs(60);

/// Faster than the node's hello timeout, so a close within it is the node's reaction.
const REACTION: Duration = crate::support::attacker::HANDSHAKE_WAIT;

/// Bound on the genesis's resident memory after the attack (10,000 invented members
/// offered, at most one budget of them kept for a while).
const MAX_RSS_KIB: u64 = 96 * 1024;

/// An address where nothing listens: probes of it fail at once.
const NOWHERE: &str = "127.0.0.1:1";

/// The attacker's handshake as `id` at `addr`: the open stream, or `None` if refused.
async fn attacker_handshake(
    node: SocketAddr,
    id: &str,
    addr: &str,
    intent: &str,
) -> Option<TcpStream> {
    Attacker::new(id, addr).try_handshake(node, intent).await
}

/// The victim's own signed record, as any member of the network holds it: asked of the
/// node on the attacker's link (`give-nodes-in-network`).
async fn genuine_record(link: &mut TcpStream, victim: &str) -> Value {
    send(link, &json!({"type": "give-nodes-in-network"})).await;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = read_frame(link).await {
            if frame["type"] != "nodes-in-network" {
                continue;
            }
            let members = frame["members"].as_array().cloned().unwrap_or_default();
            if let Some(rec) = members.into_iter().find(|m| m["id"] == victim) {
                return Some(rec);
            }
        }
        None
    })
    .await;
    found
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the node's member list names {victim}"))
}

fn flood(title: &str, kind: &str, member: Value, n: u32) -> Value {
    membership_flood(&format!("{n:064x}"), "mallory", title, kind, member)
}

async fn counters(node: &Node) -> peerlab::contract::Counters {
    node.status().await.expect("/status answers").counters
}

/// Log lines of `node` that contain every one of `words`.
fn log_lines(node: &Node, words: &[&str]) -> Vec<String> {
    node.log_text()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_lie_members_in_or_out() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(4, &FAST_TIMEOUTS).await;
    cluster.wait_formed(2, FORMATION).await;
    let genesis = cluster.nodes[0].ports.listen;
    let victim = cluster.nodes[2].id().to_string();
    let victim_addr = cluster.nodes[2].addr();

    // Ids and addresses out of bounds: each hello is refused and counted.
    let target = &cluster.nodes[0];
    let long_id = "i".repeat(100_000);
    let bad_hellos = [
        ("", ""),
        (long_id.as_str(), NOWHERE),
        ("two words", NOWHERE),
        ("line\nbreak", NOWHERE),
        ("fine", "no-port"),
        ("fine", &"a".repeat(300)),
    ];
    for (id, addr) in bad_hellos {
        let before = counters(target).await.refused_records;
        let refused = attacker_handshake(genesis, id, addr, "link").await;
        let case = format!(
            "{:?} / {:?}",
            &id[..id.len().min(20)],
            &addr[..addr.len().min(20)]
        );
        assert!(refused.is_none(), "hello {case} accepted");
        let what = format!("refused_records to move for {case}");
        let after = poll_until(Duration::from_secs(5), &what, || async {
            let n = target.status().await?.counters.refused_records;
            (n > before).then_some(n)
        })
        .await;
        assert_eq!(after, before + 1, "one refused hello, one count");
    }

    // A link as "mallory", then the lies.
    let mut mallory = attacker_handshake(genesis, "mallory", NOWHERE, "link")
        .await
        .expect("mallory's link accepted");
    // The worst death a peer can report: the victim's own signed record, replayed as dead
    // (one at a higher incarnation, u64::MAX say, cannot be signed: see hostile_identity).
    let mut death = genuine_record(&mut mallory, &victim).await;
    assert_eq!(death["addr"], victim_addr.as_str());
    death["state"] = json!("dead");
    send(&mut mallory, &flood("#DEAD", "dead", death, 1)).await;
    let inventor = Identity::generate();
    let mut members: Vec<Value> = (0..10_000)
        .map(|i| signed_record(&inventor, &format!("fake-{i:05}"), NOWHERE, 1, "alive"))
        .collect();
    members.push(signed_record(&inventor, "", "", 1, "alive"));
    members.push(signed_record(&inventor, &long_id, NOWHERE, 1, "alive"));
    members.push(signed_record(&inventor, "x\ny", NOWHERE, 1, "alive"));
    // Signed records are about 330 bytes: in chunks under the 1 MiB frame cap, as a node
    // would send them.
    let chunks: Vec<&[Value]> = members.chunks(1_500).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let more = i + 1 < chunks.len();
        send(
            &mut mallory,
            &json!({"type": "nodes-in-network", "members": chunk, "more": more}),
        )
        .await;
    }
    let garbage = signed_record(&inventor, &"g".repeat(1000), "", 1, "alive");
    send(&mut mallory, &flood("#JOINED", "joined", garbage, 2)).await;

    // A frame over the cap: refused from its length, and the log says why.
    let mut oversize = attacker_handshake(genesis, "oversize", NOWHERE, "query")
        .await
        .expect("query accepted");
    oversize
        .write_all(&(2u32 * 1024 * 1024).to_be_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(REACTION, async {
        while let Ok(n) = oversize.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the oversized frame closed the connection");

    let after = poll_until(Duration::from_secs(10), "the lies handled", || async {
        let c = target.status().await?.counters;
        (c.capped_members >= 8_000 && c.refused_records >= 6 + 4).then_some(c)
    })
    .await;
    eprintln!("genesis counters after the attack: {after:?}");
    let status = target.status().await.expect("status");
    let cap = 1_250;
    assert!(
        status.member_count.unwrap_or(0) <= 6 + cap,
        "{:?} members",
        status.member_count
    );
    assert!(
        !log_lines(target, &["death reported", &victim]).is_empty(),
        "the forged death was taken as a report to check"
    );
    assert!(
        !log_lines(target, &["over the cap", "2097152"]).is_empty(),
        "the oversized frame is logged with its size:\n{}",
        target.log_text()
    );
    let rss = target.rss_kib().expect("VmRSS");
    eprintln!("genesis RSS after the attack: {rss} KiB");
    assert!(rss < MAX_RSS_KIB, "RSS {rss} KiB");
    drop(mallory);

    // The membership is exactly the real nodes again (mallory and the inventions gone),
    // and the victim was never taken for dead.
    cluster.wait_formed(2, FORMATION).await;
    for node in &cluster.nodes {
        assert!(
            log_lines(node, &["declaring it dead", &victim]).is_empty(),
            "{} declared {victim} dead",
            node.name
        );
        assert!(
            log_lines(node, &["refuting"]).is_empty(),
            "{} had to refute a death",
            node.name
        );
    }

    // A new node still joins, and a broadcast reaches everyone.
    let genesis_addr = cluster.nodes[0].addr();
    cluster
        .start(Spec::new("late").genesis(&genesis_addr).args(FAST_TIMEOUTS))
        .await;
    cluster.wait_formed(2, FORMATION).await;
    let id = cluster.nodes[5]
        .client
        .broadcast("#BROADCAST", "after the attack")
        .await
        .expect("broadcast accepted");
    poll_until(
        Duration::from_secs(10),
        "the broadcast everywhere",
        || async {
            for node in &cluster.nodes {
                if !node.messages().await?.iter().any(|m| m.id == id) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}
