//! Process-level tests of `peerlab node`: real networks of child processes on loopback.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use peerlab::contract::{NodeStatus, members_digest};
use support::{Cluster, FAST_TIMEOUTS, Spec, poll_until, run_cli};

const FORMATION: Duration = Duration::from_secs(30);

/// Ids of the messages with `id` in a node's /messages.
async fn count_delivered(node: &support::Node, id: &str) -> Option<usize> {
    let messages = node.messages().await?;
    Some(messages.iter().filter(|m| m.id == id).count())
}

/// Waits until every node of the cluster delivered the broadcast `id`.
async fn wait_delivered_everywhere(cluster: &Cluster, id: &str) {
    poll_until(
        Duration::from_secs(10),
        &format!("broadcast {id} delivered at every node"),
        || async {
            for node in &cluster.nodes {
                if count_delivered(node, id).await? == 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_form_a_connected_overlay_and_deliver_a_broadcast_once() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(19, &FAST_TIMEOUTS).await;
    assert_eq!(cluster.nodes.len(), 20);
    let statuses = cluster.wait_formed(2, FORMATION).await;
    let ids: BTreeSet<&str> = statuses.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 20, "node ids must be unique");
    for node in &cluster.nodes {
        assert!(node.is_ready().await, "{} not ready", node.name);
    }

    let origin = &cluster.nodes[10];
    let first = origin
        .client
        .broadcast("#BROADCAST", "hello, twenty nodes")
        .await
        .expect("broadcast accepted");
    wait_delivered_everywhere(&cluster, &first).await;
    // A second flood sent after the first reached everyone: each node forwarded the first
    // before the second on every link, so late duplicates of the first have arrived by now.
    let second = cluster.nodes[3]
        .client
        .broadcast("#BROADCAST", "second")
        .await
        .expect("broadcast accepted");
    wait_delivered_everywhere(&cluster, &second).await;

    for node in &cluster.nodes {
        let messages = node.messages().await.expect("messages");
        let copies: Vec<_> = messages.iter().filter(|m| m.id == first).collect();
        assert_eq!(
            copies.len(),
            1,
            "{} delivered {first} {} times",
            node.name,
            copies.len()
        );
        let m = copies[0];
        assert_eq!(m.message, "hello, twenty nodes");
        assert_eq!(m.title, "#BROADCAST");
        assert_eq!(m.origin, origin.id());
        let expected_hops_zero = node.id() == origin.id();
        assert_eq!(
            m.hops == 0,
            expected_hops_zero,
            "{}: hops {}",
            node.name,
            m.hops
        );
    }
    let statuses = cluster.statuses().await.expect("statuses");
    let dropped: u64 = statuses.iter().map(|s| s.counters.duplicates_dropped).sum();
    assert!(
        dropped > 0,
        "flooding over a graph with cycles must have dropped duplicates"
    );
}

/// Asserts the rest of the network forgets `gone` and stays connected with degree >= 2.
async fn assert_network_heals_without(cluster: &Cluster, gone: &str, within: Duration) {
    let statuses: Vec<NodeStatus> = cluster.wait_formed(2, within).await;
    for s in &statuses {
        assert!(
            !s.members.iter().any(|m| m.id == gone),
            "{} still lists {gone}",
            s.id
        );
        assert!(!s.neighbours.iter().any(|m| m.id == gone));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_exits_zero_and_leaves_every_member_list() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(19, &FAST_TIMEOUTS).await;
    cluster.wait_formed(2, FORMATION).await;

    let mut leaver = cluster.take(7);
    let gone = leaver.id().to_string();
    let started = Instant::now();
    leaver.signal(Signal::SIGTERM);
    let status = leaver
        .wait_exit(Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{gone} still running 2 s after SIGTERM"));
    assert!(
        status.success(),
        "{gone} exited with {status} after SIGTERM"
    );
    assert!(leaver.log_text().contains("left the network"));

    // A graceful leave is flooded: it must not wait for failure detection.
    assert_network_heals_without(&cluster, &gone, Duration::from_secs(10)).await;
    // Unrelated false suspicions on a busy machine are possible; declaring *this* node dead is not.
    let needle = format!("member={gone}");
    for node in &cluster.nodes {
        let log = node.log_text();
        let wrongly = log
            .lines()
            .any(|l| l.contains("declaring it dead") && l.contains(&needle));
        assert!(
            !wrongly,
            "{} declared {gone} dead {:?} after a graceful SIGTERM",
            node.name,
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_is_declared_dead_and_forgotten() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(19, &FAST_TIMEOUTS).await;
    cluster.wait_formed(2, FORMATION).await;

    let mut victim = cluster.take(12);
    let gone = victim.id().to_string();
    victim.signal(Signal::SIGKILL);
    victim
        .wait_exit(Duration::from_secs(2))
        .expect("SIGKILL ends the process");
    // heartbeat timeout 1 s + suspicion 1 s + flooding; generous for a busy machine.
    assert_network_heals_without(&cluster, &gone, Duration::from_secs(10)).await;
    let statuses = cluster.statuses().await.expect("statuses");
    assert!(
        statuses
            .iter()
            .any(|s| s.counters.members_declared_dead > 0),
        "someone must have declared {gone} dead"
    );
    let needle = format!("member={gone}");
    let declared_by = cluster
        .nodes
        .iter()
        .filter(|n| {
            n.log_text()
                .lines()
                .any(|l| l.contains("declaring it dead") && l.contains(&needle))
        })
        .count();
    assert!(declared_by > 0, "no log declares {gone} dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_started_before_its_genesis_retries_then_joins() {
    let mut cluster = Cluster::new();
    // A loopback address no other test uses, so the reserved port stays free.
    let reserve = std::net::TcpListener::bind("127.0.83.1:0").expect("reserve a port");
    let genesis_addr = reserve.local_addr().expect("local addr").to_string();
    drop(reserve);

    let peer = cluster
        .start(
            Spec::new("early")
                .genesis(&genesis_addr)
                .args(FAST_TIMEOUTS),
        )
        .await;
    poll_until(
        Duration::from_secs(10),
        "two failed join attempts in the log",
        || async {
            let log = cluster.nodes[peer].log_text();
            (log.matches("join failed").count() >= 2).then_some(())
        },
    )
    .await;
    let status = cluster.nodes[peer].status().await.expect("status");
    assert!(!status.joined, "joined without a genesis");
    assert!(
        !cluster.nodes[peer].is_ready().await,
        "/ready before joining"
    );
    assert_eq!(
        run_cli(&["health", "--status", &cluster.nodes[peer].status_addr()])
            .0
            .code(),
        Some(1),
        "health must fail while the node has not joined"
    );

    let mut spec = Spec::new("late-genesis").args(FAST_TIMEOUTS);
    spec.listen = Some(genesis_addr.clone());
    cluster.start(spec).await;
    // Back-off is capped at 5 s plus up to 50% jitter.
    cluster.wait_formed(1, Duration::from_secs(15)).await;
    assert!(cluster.nodes[peer].is_ready().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_health_commands_report_the_node() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(2, &FAST_TIMEOUTS).await;
    let statuses = cluster.wait_formed(2, FORMATION).await;
    let node = &cluster.nodes[1];
    let addr = node.status_addr();

    let (code, table, err) = run_cli(&["status", &addr]);
    assert!(code.success(), "peerlab status failed: {err}");
    for member in &statuses[0].members {
        assert!(
            table.contains(&member.id) && table.contains(&member.addr),
            "table lacks member {member:?}:\n{table}"
        );
    }
    assert!(
        table.contains("self") && table.contains("neighbour"),
        "{table}"
    );

    let (code, json, err) = run_cli(&["status", &addr, "--json"]);
    assert!(code.success(), "peerlab status --json failed: {err}");
    let parsed: NodeStatus = serde_json::from_str(&json).expect("--json prints a NodeStatus");
    assert_eq!(parsed.id, node.id());
    assert_eq!(parsed.members.len(), 3);
    assert_eq!(parsed.member_count, Some(3));

    // The brief view a checker polls: no list, the same count and digest.
    let brief = node.status_brief().await.expect("brief status");
    assert!(brief.members.is_empty(), "{brief:?}");
    assert_eq!(brief.member_total(), 3);
    assert_eq!(brief.membership_digest(), parsed.membership_digest());
    assert_eq!(
        parsed.members_digest.as_deref(),
        Some(members_digest(parsed.members.iter().map(|m| m.id.as_str()))).as_deref(),
        "the served digest is the documented one"
    );

    let (code, _, err) = run_cli(&["health", "--status", &addr]);
    assert!(code.success(), "health of a ready node failed: {err}");

    let mut down = cluster.take(1);
    down.signal(Signal::SIGKILL);
    down.wait_exit(Duration::from_secs(2)).expect("killed");
    let (code, _, err) = run_cli(&["health", "--status", &addr, "--timeout", "1s"]);
    assert!(!code.success(), "health must fail when the socket is down");
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, err) = run_cli(&["status", &addr]);
    assert!(!code.success());
    assert!(err.contains("Is a node running there?"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_lines_are_broadcast_and_exit_leaves() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(2, &FAST_TIMEOUTS).await;
    let genesis = cluster.nodes[0].addr();
    let mut spec = Spec::new("typist")
        .genesis(&genesis)
        .args(FAST_TIMEOUTS)
        .args(["--stdin"]);
    spec.piped_stdin = true;
    let typist = cluster.start(spec).await;
    cluster.wait_formed(2, FORMATION).await;

    cluster.nodes[typist].write_stdin("hello from stdin\n\n");
    let typist_id = cluster.nodes[typist].id().to_string();
    for node in cluster.nodes.iter().filter(|n| n.id() != typist_id) {
        let typed = poll_until(
            Duration::from_secs(10),
            &format!("{} to deliver the typed line", node.name),
            || async {
                let messages = node.messages().await?;
                let typed: Vec<_> = messages
                    .iter()
                    .filter(|m| m.origin == typist_id && m.title == "#BROADCAST")
                    .collect();
                match typed.as_slice() {
                    [] => None,
                    [m] => Some(m.message.clone()),
                    more => panic!("blank lines must not be broadcast: {more:?}"),
                }
            },
        )
        .await;
        assert_eq!(typed, "hello from stdin", "at {}", node.name);
    }

    let mut node = cluster.take(typist);
    node.write_stdin("exit\n");
    let status = node
        .wait_exit(Duration::from_secs(3))
        .expect("`exit` on stdin ends the node");
    assert!(status.success(), "exited with {status}");
    assert_network_heals_without(&cluster, &typist_id, Duration::from_secs(10)).await;
}

#[test]
fn a_panicking_test_leaves_no_node_process_behind() {
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let mut cluster = Cluster::new();
            let g = cluster.start(Spec::new("doomed")).await;
            pid_tx.send(cluster.nodes[g].pid()).expect("send pid");
            panic!("a test failing with a node running");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread was meant to panic");
    let pid = pid_rx.recv().expect("the node had started");
    // The guard reaps the child, so its /proc entry is gone (or reused by another program).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("peerlab"),
        "node {pid} survived the panic"
    );
}
