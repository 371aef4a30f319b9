//! The library API (`peerlab::Lab`) on the Docker runtime from a test binary, as a user's
//! `#[tokio::test]` would use it: the node image comes from the `peerlab` binary cargo built
//! for this test (`LabBuilder::node_binary`), or is taken as prebuilt (`LabBuilder::image`).
//!
//! The image is the one every test of this binary shares (`support::docker::ensure_image`):
//! the lab finds it built from the same binary and does not build it again.

use std::time::Duration;

use peerlab::Lab;
use peerlab::lab::{GroupSpec, LabError, NetworkKeyMode, NodeSettings, RuntimeKind};

use crate::support::BIN;
use crate::support::docker::{
    connect, docker, ensure_image, must, remaining, run_leftovers, unique,
};
use crate::support::heavy_turn;

/// How long formation may take for four containers on a loaded 2-core machine.
const FORM_WITHIN: Duration = Duration::from_secs(60);

/// Quick failure detection, so the kill is noticed in seconds.
fn fast_settings() -> NodeSettings {
    NodeSettings {
        degree: 2,
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(1),
        suspect_timeout: Duration::from_secs(1),
        ..NodeSettings::BUILT_IN
    }
}

/// Builds the shared node image of [`BIN`] once per process (off the async threads).
async fn shared_image() {
    tokio::task::spawn_blocking(ensure_image)
        .await
        .expect("build the node image");
}

// The turn is held on purpose for the whole run (see `heavy_turn`); the test's runtime is
// current-thread, so the guard never crosses threads.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_docker_lab_from_a_test_binary_forms_notices_a_kill_and_leaves_nothing() {
    shared_image().await;
    let _turn = heavy_turn();
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = Lab::builder("dlab")
        .genesis(1)
        .node_settings(fast_settings())
        .group(GroupSpec::new("peers", 3).stagger(Duration::from_millis(50)))
        .formation_within(FORM_WITHIN)
        .min_degree(1)
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Docker)
        .node_binary(BIN)
        .runs_dir(runs.path())
        .start()
        .await
        .expect("a Docker lab starts from a test binary given the peerlab binary");
    assert_eq!(lab.runtime_name(), "docker");
    let run_id = lab.run_id().to_string();
    assert_eq!(
        run_leftovers(&run_id).0.len(),
        4,
        "one container per node, labelled with the run"
    );

    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    assert_eq!(formed.observations.len(), 4);
    let victim_id = lab
        .node("peers-1")
        .expect("handle")
        .status()
        .await
        .expect("status")
        .id;

    lab.kill("peers-1").await.expect("kill");
    assert!(!lab.live_nodes().contains(&"peers-1".to_string()));
    let gone = lab
        .wait_until(Duration::from_secs(30), |nodes| {
            let still: Vec<&str> = nodes
                .iter()
                .filter(|o| {
                    o.status
                        .as_ref()
                        .is_none_or(|s| s.members.iter().any(|m| m.id == victim_id))
                })
                .map(|o| o.name.as_str())
                .collect();
            (!still.is_empty()).then(|| format!("{still:?} still list peers-1 (or did not answer)"))
        })
        .await
        .expect("started");
    assert!(gone.held(), "{:?}", gone.problem);
    assert_eq!(gone.observations.len(), 3);

    let removed = lab.shutdown().await.expect("teardown");
    assert_eq!(removed.containers_removed, 4, "{removed:?}");
    assert!(removed.leftovers.is_empty(), "{removed:?}");
    let (containers, networks) = run_leftovers(&run_id);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "run {run_id} left containers {containers:?} and networks {networks:?}"
    );
}

/// `PEERLAB_NETWORK_KEY` of a container's environment, and whether `key` is anywhere in
/// its command.
fn container_key(container: &str, key: Option<&str>) -> (Option<String>, bool) {
    let text = must(docker().args([
        "container",
        "inspect",
        "--format",
        "{{json .Config.Env}}\n{{json .Config.Cmd}}",
        container,
    ]));
    let mut lines = text.lines();
    let env: Vec<String> =
        serde_json::from_str(lines.next().unwrap_or("[]")).expect("the environment as JSON");
    let cmd = lines.next().unwrap_or_default();
    let found = env
        .iter()
        .find_map(|e| e.strip_prefix("PEERLAB_NETWORK_KEY="))
        .map(str::to_string);
    (found, key.is_some_and(|k| cmd.contains(k)))
}

// The turn is held on purpose for the whole run (see `heavy_turn`).
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_keyed_docker_lab_forms_with_one_key_in_every_containers_environment_only() {
    shared_image().await;
    let _turn = heavy_turn();
    let runs = tempfile::tempdir().expect("tempdir");
    let lab = Lab::builder("dlab-key")
        .genesis(1)
        .node_settings(fast_settings())
        .group(("peers", 2))
        .network_key(NetworkKeyMode::PerRun)
        .formation_within(FORM_WITHIN)
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Docker)
        .node_binary(BIN)
        .runs_dir(runs.path())
        .start()
        .await
        .expect("a keyed Docker lab starts");
    let run_id = lab.run_id().to_string();
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    let (containers, _) = run_leftovers(&run_id);
    let keys: Vec<Option<String>> = containers
        .iter()
        .map(|c| container_key(c, None).0)
        .collect();
    let key = keys.first().cloned().flatten().unwrap_or_default();
    let in_command: Vec<bool> = containers
        .iter()
        .map(|c| container_key(c, Some(&key)).1)
        .collect();
    // Taken down before asserting, so a failure leaves nothing behind.
    let removed = lab.shutdown().await.expect("teardown");
    assert!(formed.formed(), "{:#?}", formed.failures());
    assert_eq!(keys.len(), 3, "one container per node");
    assert_eq!(key.len(), 64, "a drawn key, in the environment: {keys:?}");
    assert!(
        keys.iter().all(|k| k.as_deref() == Some(key.as_str())),
        "one key for all"
    );
    assert_eq!(in_command, vec![false; 3], "the key on a command line");
    assert!(removed.leftovers.is_empty(), "{removed:?}");
}

#[tokio::test]
async fn a_missing_prebuilt_image_is_named_never_built_and_leaves_nothing() {
    let runs = tempfile::tempdir().expect("tempdir");
    // A `peerlab:*` tag that does not exist: as prebuilt it must be refused, not built
    // from anything (and never pulled).
    let tag = format!("peerlab:{}", unique("missing"));
    let mut lab = Lab::builder("dlab-missing")
        .genesis(1)
        .group(("peers", 1))
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Docker)
        .image(&tag)
        .runs_dir(runs.path())
        .plan()
        .await
        .expect("a prebuilt image needs no peerlab binary to plan");
    let run_id = lab.run_id().to_string();
    match lab.start_nodes().await {
        Err(e @ LabError::Runtime(_)) => {
            let message = e.to_string();
            assert!(message.contains(&tag), "{message}");
            assert!(
                message.contains(&format!("peerlab image build --tag {tag}")),
                "{message}"
            );
        }
        Err(other) => panic!("expected the runtime to name the missing image, got {other}"),
        Ok(()) => panic!("a missing prebuilt image must not start"),
    }
    let docker = connect().await;
    assert!(
        docker.inspect_image(&tag).await.is_err(),
        "{tag} was built although it was named as prebuilt"
    );
    lab.shutdown().await.expect("teardown");
    assert_eq!(remaining(&docker, &run_id).await, (0, 0));
}
