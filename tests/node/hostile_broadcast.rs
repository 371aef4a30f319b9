//! Broadcast bounds against real nodes: a neighbour that floods 200 broadcasts of 500 KB
//! and one whose message holds a newline. The nodes drop the large ones where they enter
//! (counted, logged once), stay within a memory bound, write little log, no forged log
//! line, and ordinary broadcasts still reach everyone.

use std::time::Duration;

use crate::support::attacker::{Attacker, frame};
use crate::support::cluster::{Cluster, Node};
use crate::support::poll_until;
use peerlab::contract::ApiError;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Floods the attacker sends, each of [`FLOOD_BYTES`]: the 100 MB.
const FLOODS: usize = 200;
const FLOOD_BYTES: usize = 500_000;

/// Memory a node may gain while the 100 MB pass through it. Whatever it kept of them would
/// show as tens of MB (the issue measured about 100 MB per node); what it may keep is the
/// codec's buffer of one frame (up to 1 MiB) and a decoded message per worker thread,
/// plus what the allocator keeps of freed buffers in its per-thread arenas. 24 MiB leaves
/// room for those and is a quarter of what passed through.
const MAX_GROWTH_KIB: u64 = 24 * 1024;

/// Log a node may write over the whole attack: a handful of lines (one drop warning, the
/// attacker's link and member lines, a few deliveries), where logging every message in
/// full would be 100 MB.
const MAX_LOG_GROWTH: u64 = 32 * 1024;

/// The text a forged log line would start with.
const FORGED: &str = "FORGED-LINE member left";

/// The attacker's whole handshake: dial `node`'s peer port and become its neighbour.
async fn attacker_link(node: &Node, id: &str) -> TcpStream {
    Attacker::new(id, "127.0.0.1:1")
        .handshake(node.ports.listen, "link")
        .await
}

fn flood(id: &str, origin: &str, message: &str) -> serde_json::Value {
    json!({
        "type": "broadcast", "id": id, "title": "#BROADCAST", "message": message,
        "time": 0.0, "origin": origin, "hops": 0,
    })
}

fn log_len(node: &Node) -> u64 {
    std::fs::metadata(&node.log).map(|m| m.len()).unwrap_or(0)
}

/// `Pss:` of `/proc/<pid>/smaps_rollup`, in KiB, for the record next to RSS.
fn pss_kib(node: &Node) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", node.pid())).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn delivered_everywhere(cluster: &Cluster, id: &str) -> Option<()> {
    for node in &cluster.nodes {
        let messages = node.messages().await?;
        if !messages.iter().any(|m| m.id == id) {
            return None;
        }
    }
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_broadcasts_is_dropped_at_the_edge_and_logs_stay_honest() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(2, &[]).await;
    cluster.wait_formed(2, Duration::from_secs(30)).await;
    let target = &cluster.nodes[0];

    let before: Vec<(u64, u64)> = cluster
        .nodes
        .iter()
        .map(|n| (n.rss_kib().expect("VmRSS"), log_len(n)))
        .collect();

    let mut attacker = attacker_link(target, "mallory").await;
    // Drain what the node sends (its pings, relayed floods) so its writer never blocks.
    let (mut reader, mut writer) = attacker.split();
    let drain = async {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let attack = async {
        let body = "x".repeat(FLOOD_BYTES);
        for i in 0..FLOODS {
            let bytes = frame(&flood(&format!("big-{i:03}"), "mallory", &body));
            writer.write_all(&bytes).await.expect("send a large flood");
        }
        // Small enough to pass: a message that tries to start a log line of its own.
        let forged = format!("innocent\n{FORGED} member=genesis-0\r\n{FORGED}");
        let bytes = frame(&flood("newline-1", "mallory", &forged));
        writer
            .write_all(&bytes)
            .await
            .expect("send the newline flood");
    };
    tokio::select! {
        () = drain => panic!("the node closed the attacker's link during the attack"),
        () = attack => {}
    }

    let counted = poll_until(
        Duration::from_secs(30),
        "the target to count every large flood",
        || async {
            let n = target.status().await?.counters.oversize_dropped;
            (n >= FLOODS as u64).then_some(n)
        },
    )
    .await;
    assert_eq!(counted, FLOODS as u64, "each large flood counted once");
    let metrics = reqwest::get(format!("http://{}/metrics", target.status_addr()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains(&format!("peerlab_oversize_dropped_total {FLOODS}")),
        "{metrics}"
    );
    poll_until(
        Duration::from_secs(15),
        "the newline flood to reach every node",
        || delivered_everywhere(&cluster, "newline-1"),
    )
    .await;

    // An ordinary broadcast from another node still reaches every node.
    let id = cluster.nodes[1]
        .client
        .broadcast("#BROADCAST", "ordinary, after the attack")
        .await
        .expect("broadcast");
    poll_until(
        Duration::from_secs(15),
        "an ordinary broadcast to reach every node",
        || delivered_everywhere(&cluster, &id),
    )
    .await;

    for (node, (rss_before, log_before)) in cluster.nodes.iter().zip(&before) {
        let status = node.status().await.expect("status");
        if node.name != target.name {
            assert_eq!(
                status.counters.oversize_dropped, 0,
                "{}: the target relayed a large flood",
                node.name
            );
        }
        let messages = node.messages().await.expect("messages");
        assert!(
            messages.iter().all(|m| !m.id.starts_with("big-")),
            "{} delivered a large flood",
            node.name
        );
        let rss = node.rss_kib().expect("VmRSS");
        let growth = rss.saturating_sub(*rss_before);
        let log_growth = log_len(node) - log_before;
        eprintln!(
            "{}: RSS {rss_before} -> {rss} KiB (+{growth}), PSS now {:?} KiB, log +{log_growth} bytes",
            node.name,
            pss_kib(node)
        );
        assert!(
            growth < MAX_GROWTH_KIB,
            "{}: RSS grew by {growth} KiB",
            node.name
        );
        assert!(
            log_growth < MAX_LOG_GROWTH,
            "{}: log grew by {log_growth} bytes",
            node.name
        );
        let log = node.log_text();
        for line in log.lines() {
            assert!(
                !line.trim_start().starts_with("FORGED"),
                "{}: forged log line {line:?}",
                node.name
            );
        }
        assert!(
            log.contains("innocent\\nFORGED-LINE"),
            "{}: the newline message is logged escaped",
            node.name
        );
        assert!(
            !log.contains(&"x".repeat(100)),
            "{}: a large message's text reached the log",
            node.name
        );
    }
    let warnings = target
        .log_text()
        .lines()
        .filter(|l| l.contains("--max-message-bytes dropped"))
        .count();
    assert_eq!(warnings, 1, "one warning for the link, however many floods");

    // The real peers are still the target's neighbours.
    let status = target.status().await.expect("status");
    for peer in &cluster.nodes[1..] {
        assert!(
            status.neighbours.iter().any(|n| n.id == peer.id()),
            "{} is no longer a neighbour",
            peer.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_broadcast_over_the_bound_is_refused_with_a_clear_error() {
    let mut cluster = Cluster::new();
    cluster
        .genesis_and_peers(1, &["--max-message-bytes", "1000"])
        .await;
    cluster.wait_formed(1, Duration::from_secs(30)).await;
    let node = &cluster.nodes[0];
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("http://{}/broadcast", node.status_addr()))
        .json(&json!({"title": "#BROADCAST", "message": "y".repeat(1000)}))
        .send()
        .await
        .expect("POST /broadcast");
    assert_eq!(resp.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let error: ApiError = resp.json().await.expect("an error body");
    assert!(
        error.error.contains("1010 bytes") && error.error.contains("--max-message-bytes"),
        "{}",
        error.error
    );
    assert!(node.messages().await.expect("messages").is_empty());
    // Within the bound it goes out as usual.
    node.client
        .broadcast("#BROADCAST", &"y".repeat(990))
        .await
        .expect("a broadcast at the bound");
}
