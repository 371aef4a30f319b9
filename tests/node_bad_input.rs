//! Hostile input against one running node with two peers: each case asserts the node's
//! reaction (it closes the connection, a counter moves), and that it keeps serving.

mod support;

use std::time::{Duration, Instant};

use peerlab::contract::NodeStatus;
use support::{Cluster, Node, poll_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Faster than the node's hello timeout (2 s with default heartbeat flags), so a close
/// within this bound is the node reacting to the input, not a handshake timing out.
const REACTION: Duration = Duration::from_millis(1500);

/// Idle sockets opened at once; well above the default cap of 128 connections.
const IDLE_CONNECTIONS: usize = 500;

/// Bound on the target's resident memory while under load.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// Reads until the node closes the connection (EOF or reset); `Err` with the elapsed time
/// if it is still open after `within`.
async fn closed_by_node(stream: &mut TcpStream, within: Duration) -> Result<Duration, Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    match tokio::time::timeout(within, wait).await {
        Ok(()) => Ok(started.elapsed()),
        Err(_) => Err(started.elapsed()),
    }
}

async fn status_of(node: &Node) -> NodeStatus {
    node.status().await.expect("the node answers /status")
}

/// Sends `bytes` on a fresh connection (then half-closes if `finish`), and asserts the node
/// closes it promptly and counts exactly one more bad frame.
async fn assert_rejected(node: &Node, case: &str, bytes: &[u8], finish: bool) {
    let before = status_of(node).await.counters.bad_frames;
    let mut stream = TcpStream::connect(node.ports.listen)
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    if finish {
        stream.shutdown().await.expect("half-close");
    }
    let took = closed_by_node(&mut stream, REACTION)
        .await
        .unwrap_or_else(|t| panic!("{case}: connection still open after {t:?}"));
    let after = poll_until(
        Duration::from_secs(5),
        &format!("{case}: bad_frames to move"),
        || async {
            let n = node.status().await?.counters.bad_frames;
            (n > before).then_some(n)
        },
    )
    .await;
    assert_eq!(after, before + 1, "{case}: one bad frame, one count");
    eprintln!("{case}: closed by the node after {took:?}");
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_cut_off_counted_and_bounded() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(2, &[]).await;
    cluster.wait_formed(2, Duration::from_secs(30)).await;
    let target = &cluster.nodes[0];
    let peer_ids: Vec<String> = cluster.nodes[1..]
        .iter()
        .map(|n| n.id().to_string())
        .collect();

    // Random bytes: whatever length the first four announce, the rest is not a message.
    let noise: [u8; 256] = rand::random();
    assert_rejected(target, "random bytes", &noise, true).await;

    // 2 GiB announced: refused from the header alone, nothing buffered.
    let mut huge = vec![0x80, 0, 0, 0];
    huge.extend_from_slice(&[b'{'; 64]);
    assert_rejected(target, "2 GiB length prefix", &huge, false).await;

    assert_rejected(
        target,
        "invalid JSON",
        &frame(b"{\"type\": \"ping\", nonce"),
        false,
    )
    .await;

    assert_rejected(
        target,
        "valid frame before hello",
        &frame(br#"{"type":"ping","nonce":1}"#),
        false,
    )
    .await;

    idle_connections_are_refused_or_timed_out(target).await;

    let status = status_of(target).await;
    assert_eq!(status.counters.bad_frames, 4, "one per hostile case");
    for id in &peer_ids {
        assert!(
            status.neighbours.iter().any(|n| &n.id == id),
            "{id} is no longer a neighbour: {:?}",
            status.neighbours
        );
    }
    for peer in &cluster.nodes[1..] {
        let s = status_of(peer).await;
        assert!(s.neighbours.iter().any(|n| n.id == target.id()));
        assert_eq!(s.counters.bad_frames, 0, "peers saw nothing hostile");
    }
}

/// Opens many idle sockets: the node refuses those above its cap at once, times out the
/// rest, keeps answering /status meanwhile, and its memory stays bounded.
async fn idle_connections_are_refused_or_timed_out(target: &Node) {
    let before = status_of(target).await.counters;
    let mut sockets = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        sockets.push(
            TcpStream::connect(target.ports.listen)
                .await
                .expect("the kernel accepts the connection"),
        );
    }

    let status = tokio::time::timeout(Duration::from_secs(2), target.status())
        .await
        .expect("/status answers within 2 s while 500 sockets are open")
        .expect("/status answers");
    let rss = target.rss_kib().expect("VmRSS");
    eprintln!("RSS with {IDLE_CONNECTIONS} idle sockets: {rss} KiB");
    assert!(rss < MAX_RSS_KIB, "RSS {rss} KiB >= {MAX_RSS_KIB} KiB");

    // Every socket ends: refused at once above the cap, closed at the hello timeout below it.
    let closes = futures::future::join_all(
        sockets
            .iter_mut()
            .map(|s| closed_by_node(s, Duration::from_secs(15))),
    )
    .await;
    let open = closes.iter().filter(|c| c.is_err()).count();
    assert_eq!(open, 0, "{open} idle sockets were never closed by the node");

    let after = status_of(target).await.counters;
    let refused = after.connections_refused - before.connections_refused;
    assert!(
        refused >= (IDLE_CONNECTIONS - 128) as u64,
        "only {refused} of {IDLE_CONNECTIONS} refused with a cap of 128 (status while open: {:?})",
        status.counters
    );
    assert_eq!(
        after.bad_frames, before.bad_frames,
        "silence is not a bad frame"
    );
}
