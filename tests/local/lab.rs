//! The library API (`peerlab::Lab`) on the local runtime: start, wait for formation, node
//! handles, broadcasts, faults (kill, start, partition, heal), checks, and every way a lab
//! ends (shutdown, drop, a panicking test body, keep-on-failure) leaving no process behind.
//!
//! Each test runs its own topology name and runs directory, and nodes bind port 0 on
//! their own loopback addresses, so the tests run in parallel. Every wait is a poll with a
//! deadline ([`Lab::wait_formed`] and friends), never a sleep.

use std::path::Path;
use std::time::{Duration, Instant};

use peerlab::Lab;
use peerlab::lab::{
    FormationExpectation, GroupSpec, Keep, LabBuilder, LabError, NodeSettings, RuntimeKind,
};
use peerlab::runtime::local::{scan_processes, stop_processes};

use crate::support::BIN;

/// How long formation may take on a loaded 2-core machine.
const FORM_WITHIN: Duration = Duration::from_secs(40);

/// Pids of the run's node processes.
fn processes_of(run_id: &str) -> Vec<u32> {
    scan_processes()
        .into_iter()
        .filter(|p| p.run_id == run_id)
        .map(|p| p.pid)
        .collect()
}

/// Quick failure detection, so the fault tests take seconds.
fn fast_settings() -> NodeSettings {
    NodeSettings {
        degree: 2,
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(1),
        suspect_timeout: Duration::from_secs(1),
        ..NodeSettings::BUILT_IN
    }
}

/// A lab of `genesis` genesis nodes and `peers` peers named `name`, on local processes
/// started from the test build, with its runs directory in `runs`.
fn lab(name: &str, genesis: usize, peers: usize, runs: &Path) -> LabBuilder {
    Lab::builder(name)
        .genesis(genesis)
        .node_settings(fast_settings())
        .group(GroupSpec::new("peers", peers).stagger(Duration::from_millis(20)))
        .formation_within(FORM_WITHIN)
        .min_degree(1)
        .broadcast_check(2, Duration::from_secs(10))
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs)
}

#[tokio::test]
async fn a_lab_forms_answers_and_delivers_a_broadcast_everywhere() {
    let runs = tempfile::tempdir().expect("tempdir");
    let mut lab = lab("lab-basic", 1, 4, runs.path())
        .start()
        .await
        .expect("the lab starts");
    let run_id = lab.run_id().to_string();
    assert_eq!(processes_of(&run_id).len(), 5, "every node runs");
    assert_eq!(lab.endpoints().len(), 5);

    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    assert_eq!(formed.observations.len(), 5);

    let genesis = lab.node("genesis-0").expect("a handle");
    assert_eq!(genesis.name(), "genesis-0");
    assert!(genesis.status_url().starts_with("http://127."));
    assert!(genesis.ready().await.expect("ready answers"));
    let status = genesis.status().await.expect("status answers");
    assert!(status.joined);
    assert_eq!(status.members.len(), 5, "full membership: {status:?}");
    assert!(!status.neighbours.is_empty());
    let metrics = genesis.metrics().await.expect("metrics answer");
    assert!(metrics.contains("peerlab_delivered"), "{metrics}");

    let id = lab
        .broadcast("peers-2", "hello from a library test")
        .await
        .expect("the broadcast is accepted");
    let delivery = lab
        .wait_delivered(std::slice::from_ref(&id), Duration::from_secs(15))
        .await
        .expect("started");
    assert!(delivery.complete(), "missing at {:?}", delivery.missing());
    assert_eq!(delivery.delivered.len(), 5);
    // A condition of the test's own: every node counts the delivery in its status.
    let counted = lab
        .wait_until(Duration::from_secs(10), |nodes| {
            let behind: Vec<&str> = nodes
                .iter()
                .filter(|o| o.status.as_ref().is_none_or(|s| s.counters.delivered < 1))
                .map(|o| o.name.as_str())
                .collect();
            (!behind.is_empty()).then(|| format!("no delivery counted at {behind:?}"))
        })
        .await
        .expect("started");
    assert!(counted.held(), "{:?}", counted.problem);
    assert_eq!(counted.observations.len(), 5);
    for node in lab.nodes() {
        let messages = node.messages().await.expect("messages answer");
        let got = messages.iter().find(|m| m.id == id);
        assert!(got.is_some(), "{} lacks {id}", node.name());
        assert_eq!(
            got.map(|m| m.message.as_str()),
            Some("hello from a library test")
        );
    }

    match lab.node("nobody-7") {
        Err(e @ LabError::UnknownNode { .. }) => {
            assert!(e.to_string().contains("genesis-0"), "{e}")
        }
        other => panic!("an unknown node must be refused, got {other:?}"),
    }
    assert!(lab.kill("nobody-7").await.is_err());

    let report = lab.check().await.expect("the checks run");
    assert!(report.passed(), "{}", report.summary());
    assert!(report.checks.len() >= 4, "{:?}", report.checks);
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json().expect("json")).expect("valid JSON");
    assert_eq!(json["passed"], true);
    assert!(report.junit().expect("junit").contains("<testcase"));
    assert_eq!(report.svg().matches("<circle").count(), 5);
    assert!(report.dot().contains("genesis-0"));
    let graph = runs.path().join("overlay.svg");
    report.write_graph(&graph).expect("graph written");
    assert!(graph.is_file());

    let removed = lab.shutdown().await.expect("teardown");
    assert_eq!(removed.processes_stopped, 5, "{removed:?}");
    assert!(removed.leftovers.is_empty(), "{removed:?}");
    assert!(processes_of(&run_id).is_empty(), "shutdown left processes");
}

#[tokio::test]
async fn a_killed_node_is_detected_and_a_restarted_one_rejoins() {
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = lab("lab-kill", 1, 4, runs.path())
        .start()
        .await
        .expect("the lab starts");
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    let victim_id = lab
        .node("peers-1")
        .expect("handle")
        .status()
        .await
        .expect("status")
        .id;

    lab.kill("peers-1").await.expect("kill");
    assert!(!lab.live_nodes().contains(&"peers-1".to_string()));
    // Formed again over the live nodes: full membership means every survivor dropped it.
    let detected = lab
        .wait_formed(Duration::from_secs(30))
        .await
        .expect("started");
    assert!(detected.formed(), "{:#?}", detected.failures());
    assert_eq!(detected.observations.len(), 4);
    for o in &detected.observations {
        let members = &o.status.as_ref().expect("a live node answers").members;
        assert!(
            members.iter().all(|m| m.id != victim_id),
            "{} still lists the killed node",
            o.name
        );
    }

    lab.start("peers-1").await.expect("start again");
    assert!(lab.live_nodes().contains(&"peers-1".to_string()));
    let rejoined = lab
        .wait_formed(Duration::from_secs(30))
        .await
        .expect("started");
    assert!(rejoined.formed(), "{:#?}", rejoined.failures());
    assert_eq!(rejoined.observations.len(), 5);

    let run_id = lab.run_id().to_string();
    let removed = lab.shutdown().await.expect("teardown");
    assert!(removed.leftovers.is_empty(), "{removed:?}");
    assert!(processes_of(&run_id).is_empty());
}

#[tokio::test]
async fn a_partition_splits_the_overlay_and_a_heal_merges_it() {
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = lab("lab-cut", 2, 4, runs.path())
        .start()
        .await
        .expect("the lab starts");
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());

    lab.partition([
        vec!["genesis-0", "peers-0", "peers-1"],
        vec!["genesis-1", "peers-2", "peers-3"],
    ])
    .await
    .expect("partition");
    let halves = FormationExpectation {
        components: Some(2),
        component_membership: true,
        ..FormationExpectation::default()
    };
    let split = lab
        .wait_for(&halves, Duration::from_secs(30))
        .await
        .expect("started");
    assert!(split.formed(), "{:#?}", split.failures());

    lab.heal().await.expect("heal");
    let merged = lab
        .wait_formed(Duration::from_secs(40))
        .await
        .expect("started");
    assert!(merged.formed(), "{:#?}", merged.failures());

    let run_id = lab.run_id().to_string();
    lab.shutdown().await.expect("teardown");
    assert!(processes_of(&run_id).is_empty());
}

#[tokio::test]
async fn a_dropped_lab_leaves_no_process() {
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = lab("lab-drop", 1, 2, runs.path())
        .start()
        .await
        .expect("the lab starts");
    let run_id = lab.run_id().to_string();
    assert_eq!(processes_of(&run_id).len(), 3);
    drop(lab);
    // Drop returns once its teardown thread removed the run.
    assert!(processes_of(&run_id).is_empty(), "drop left processes");
}

#[test]
fn a_panicking_test_body_with_a_lab_tears_down() {
    let runs = tempfile::tempdir().expect("tempdir");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let body = std::panic::catch_unwind(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let lab = lab("lab-panic", 1, 2, runs.path())
                .start()
                .await
                .expect("the lab starts");
            let run_id = lab.run_id().to_string();
            assert_eq!(processes_of(&run_id).len(), 3);
            tx.send(run_id).expect("send");
            panic!("the test body fails with its lab still up");
        })
    });
    assert!(body.is_err(), "the body panicked");
    let run_id = rx.recv().expect("the run id was sent before the panic");
    assert!(
        processes_of(&run_id).is_empty(),
        "the panicking test left processes"
    );
}

#[tokio::test]
async fn a_failed_check_keeps_the_nodes_under_keep_on_failure() {
    let runs = tempfile::tempdir().expect("tempdir");
    // A deadline that has passed before the checks begin: formation cannot pass in time.
    let topology = Lab::builder("lab-keep")
        .genesis(1)
        .node_settings(fast_settings())
        .group(("peers", 2))
        .formation_within(Duration::from_millis(1))
        .build()
        .expect("a valid topology");
    let mut lab = Lab::from_topology(topology)
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs.path())
        .keep(Keep::OnFailure)
        .start()
        .await
        .expect("the lab starts");
    let run_id = lab.run_id().to_string();
    let report = lab.check().await.expect("the checks run");
    assert!(!report.passed(), "{}", report.summary());
    assert!(
        report
            .failures()
            .iter()
            .any(|c| c.name == "formed within deadline"),
        "{}",
        report.summary()
    );
    drop(lab);
    let kept = processes_of(&run_id);
    // Take them down before asserting, so a failure leaves nothing behind either.
    let stopped = stop_processes(Some(&run_id)).await;
    assert_eq!(kept.len(), 3, "the failed run's nodes are kept running");
    assert_eq!(stopped.processes_stopped, 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_of(&run_id).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(processes_of(&run_id).is_empty());
}

#[tokio::test]
async fn a_lab_that_is_not_started_refuses_faults_and_leaves_nothing() {
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = lab("lab-plan", 1, 2, runs.path())
        .plan()
        .await
        .expect("the plan is accepted");
    assert_eq!(lab.node_names(), ["genesis-0", "peers-0", "peers-1"]);
    assert!(matches!(lab.kill("peers-0").await, Err(LabError::State(_))));
    assert!(lab.wait_formed(Duration::from_millis(10)).await.is_err());
    let run_id = lab.run_id().to_string();
    drop(lab);
    assert!(processes_of(&run_id).is_empty());
}

/// The blocks a node applies (its `/admin/faults`), as the runtime's partition set them.
async fn blocks(lab: &Lab, node: &str) -> Vec<peerlab::contract::Direction> {
    let report: peerlab::contract::FaultsReport = lab
        .node(node)
        .expect("a handle")
        .faults()
        .await
        .expect("the admin endpoint answers with a faults report");
    report.blocked.into_values().collect()
}

#[tokio::test]
async fn a_one_way_partition_blocks_one_direction_and_heal_lifts_it() {
    use peerlab::contract::Direction;
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = lab("lab-oneway", 1, 2, runs.path())
        .start()
        .await
        .expect("the lab starts");
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    assert!(lab.capabilities().one_way_partition);

    lab.partition_one_way(["peers-0"], ["genesis-0", "peers-1"])
        .await
        .expect("one-way partition");
    // The sender side drops what it sends to the others; they drop what comes from it.
    // (A node blocks each peer under every name it may see it by: id and address.)
    let sender = blocks(&lab, "peers-0").await;
    assert!(sender.len() >= 2, "{sender:?}");
    assert!(sender.iter().all(|d| *d == Direction::Out), "{sender:?}");
    for receiver in ["genesis-0", "peers-1"] {
        let seen = blocks(&lab, receiver).await;
        assert!(!seen.is_empty(), "{receiver} blocks nothing");
        assert!(
            seen.iter().all(|d| *d == Direction::In),
            "{receiver}: {seen:?}"
        );
    }

    lab.heal().await.expect("heal");
    for node in ["peers-0", "genesis-0", "peers-1"] {
        assert!(blocks(&lab, node).await.is_empty(), "{node} still blocks");
    }
    let merged = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(merged.formed(), "{:#?}", merged.failures());
    let run_id = lab.run_id().to_string();
    lab.shutdown().await.expect("teardown");
    assert!(processes_of(&run_id).is_empty());
}

/// Compiles only if a lab and the futures of its operations can cross threads, so a test
/// can `tokio::spawn` work that uses a lab (never called; the compiler is the test).
#[allow(dead_code)]
fn labs_and_their_futures_are_send(mut lab: Lab) {
    fn send<T: Send + Sync>(_: &T) {}
    fn send_future<T: Send>(_: &T) {}
    send(&lab);
    send_future(&lab.wait_formed(Duration::ZERO));
    send_future(&lab.kill("genesis-0"));
    send_future(&lab.partition([["genesis-0"], ["peers-0"]]));
    send_future(&lab.check());
    send_future(&lab.shutdown());
}

#[tokio::test]
async fn docker_from_a_test_binary_without_a_binary_or_image_is_refused_and_auto_stays_local() {
    let runs = tempfile::tempdir().expect("tempdir");
    // Neither `node_binary` nor `image`: the node image would be built from the running
    // executable, and a test binary cannot run a node. The advice names what to pass.
    let unbound = |name: &str| {
        Lab::builder(name)
            .genesis(1)
            .group(("peers", 2))
            .into_lab()
            .expect("a valid topology")
            .runs_dir(runs.path())
    };
    let refused = unbound("lab-docker")
        .runtime(RuntimeKind::Docker)
        .plan()
        .await;
    match refused {
        Err(e @ LabError::State(_)) => {
            let advice = e.to_string();
            for what in [
                "LabBuilder::node_binary",
                "env!(\"CARGO_BIN_EXE_peerlab\")",
                "LabBuilder::image",
                "peerlab image build",
                "RuntimeKind::Local",
            ] {
                assert!(advice.contains(what), "the advice lacks {what}: {advice}");
            }
        }
        Err(other) => panic!("expected the advice to pass a binary or an image, got {other}"),
        Ok(_) => {
            panic!("a Docker lab from a test binary without a binary or image must be refused")
        }
    }
    // Auto without them stays on local processes (found next to the test binary), whether
    // or not an engine answers, and says why.
    let auto = unbound("lab-auto")
        .runtime(RuntimeKind::Auto)
        .plan()
        .await
        .expect("auto falls back to local processes");
    assert_eq!(auto.runtime_name(), "local");
    assert!(
        auto.runtime_note()
            .is_some_and(|n| n.contains("local processes") && n.contains("node_binary")),
        "{:?}",
        auto.runtime_note()
    );
    // The local runtime ignores the image; an empty tag is refused before anything starts.
    match unbound("lab-notag").image(" ").plan().await {
        Err(e @ LabError::State(_)) => assert!(e.to_string().contains("empty tag"), "{e}"),
        Err(other) => panic!("expected the empty tag to be named, got {other}"),
        Ok(_) => panic!("an empty image tag must be refused"),
    }
}

#[tokio::test]
async fn a_check_after_the_formation_deadline_judges_the_formation_seen_in_time() {
    let runs = tempfile::tempdir().expect("tempdir");
    let within = Duration::from_secs(8);
    let topology = Lab::builder("lab-late")
        .genesis(1)
        .node_settings(fast_settings())
        .group(("peers", 3))
        .formation_within(within)
        .min_degree(1)
        .build()
        .expect("a valid topology");
    let mut lab = Lab::from_topology(topology)
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs.path())
        .start()
        .await
        .expect("the lab starts");
    let formed = lab.wait_formed(within).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    lab.kill("peers-2").await.expect("kill");
    let detected = lab
        .wait_formed(Duration::from_secs(30))
        .await
        .expect("started");
    assert!(detected.formed(), "{:#?}", detected.failures());
    // The test's faults took it past the formation deadline (waiting for a deadline to
    // pass is the point here, not synchronisation).
    tokio::time::sleep_until((lab.observer().started_at() + within).into()).await;

    let report = lab.check().await.expect("the checks run");
    assert!(report.passed(), "{}", report.summary());
    let first = formed.formed_at.expect("formed").as_secs_f64();
    assert_eq!(report.formation_secs, Some(first));
    let run_id = lab.run_id().to_string();
    lab.shutdown().await.expect("teardown");
    assert!(processes_of(&run_id).is_empty());
}

#[test]
fn a_lab_dropped_after_its_tokio_runtime_is_gone_still_tears_down() {
    let runs = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let lab = rt
        .block_on(lab("lab-noruntime", 1, 2, runs.path()).start())
        .expect("the lab starts");
    let run_id = lab.run_id().to_string();
    assert_eq!(processes_of(&run_id).len(), 3);
    drop(rt);
    drop(lab);
    assert!(processes_of(&run_id).is_empty(), "drop left processes");
}
