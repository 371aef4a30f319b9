//! A hostile peer lies about membership to real `peerlab node` processes over raw TCP: a
//! forged death of a live member, 10,000 invented members in one frame, ids and addresses
//! out of bounds, and a frame over the size cap. The network keeps its full and correct
//! membership, a new node still joins, a broadcast reaches every node, memory stays bounded.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::cluster::{Cluster, FAST_TIMEOUTS, Node, Spec};
use crate::support::poll_until;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORMATION: Duration = Duration::from_secs(60);

/// Faster than the node's hello timeout, so a close within it is the node's reaction.
const REACTION: Duration = Duration::from_millis(1500);

/// Bound on the genesis's resident memory after the attack (10,000 invented members
/// offered, at most one budget of them kept for a while).
const MAX_RSS_KIB: u64 = 96 * 1024;

/// An address where nothing listens: probes of it fail at once.
const NOWHERE: &str = "127.0.0.1:1";

fn frame(msg: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(msg).expect("serialise");
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

async fn send(stream: &mut TcpStream, msg: &Value) {
    stream.write_all(&frame(msg)).await.expect("write a frame");
}

/// Reads one frame; `None` at EOF or on an error.
async fn read_frame(stream: &mut TcpStream) -> Option<Value> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload).await.ok()?;
    serde_json::from_slice(&payload).ok()
}

/// The attacker's side of the handshake, in one place: it says hello as `id` at `addr`
/// with `intent` and, if the node accepts, reads the node's hello. Returns the stream,
/// or `None` if the node closed it instead.
async fn attacker_handshake(
    node: SocketAddr,
    id: &str,
    addr: &str,
    intent: &str,
) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(node).await.expect("connect");
    let hello = json!({
        "type": "hello", "version": 1, "id": id, "addr": addr,
        "incarnation": 1, "intent": intent,
    });
    send(&mut stream, &hello).await;
    let answer = tokio::time::timeout(REACTION, read_frame(&mut stream))
        .await
        .ok()
        .flatten()?;
    (answer["type"] == "hello").then_some(stream)
}

fn record(id: &str, addr: &str, incarnation: u64, state: &str) -> Value {
    json!({"id": id, "addr": addr, "incarnation": incarnation, "state": state})
}

/// A membership flood as a node would send it (the id only has to be new).
fn flood(title: &str, kind: &str, member: Value, n: u32) -> Value {
    json!({
        "type": "broadcast", "id": format!("{n:064x}"), "title": title,
        "message": "", "time": 0.0, "origin": "mallory", "hops": 0,
        "event": {"kind": kind, "member": member},
    })
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
    let death = record(&victim, &victim_addr, u64::MAX, "dead");
    send(&mut mallory, &flood("#DEAD", "dead", death, 1)).await;
    let mut members: Vec<Value> = (0..10_000)
        .map(|i| record(&format!("fake-{i:05}"), NOWHERE, 1, "alive"))
        .collect();
    members.push(record("", "", 1, "alive"));
    members.push(record(&long_id, NOWHERE, 1, "alive"));
    members.push(record("x\ny", NOWHERE, 1, "alive"));
    send(
        &mut mallory,
        &json!({"type": "nodes-in-network", "members": members}),
    )
    .await;
    let garbage = record(&"g".repeat(1000), "", 1, "alive");
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
