//! `--runtime kubernetes` and `RuntimeKind::Kubernetes` against the cluster: a run forms
//! and passes its checks, faults play, detached runs are listed and removed, and nothing
//! labelled with a run is left in the cluster afterwards.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use peerlab::Lab;
use peerlab::lab::{GroupSpec, NetworkKeyMode, NodeSettings, RuntimeKind};

use crate::cluster::{
    assert_nothing_left, assert_nothing_left_blocking, block_on, client, namespaces_of,
    require_cluster,
};
use crate::support::cli::{Output, Workspace};
use crate::support::docker::ensure_image;
use crate::support::kubernetes_turn;

/// How long a handful of pods may take to form on a loaded two-core machine that also
/// runs the cluster (image checks, sandboxes, the API server's pod proxy).
const FORM_WITHIN: Duration = Duration::from_secs(120);

fn fast_settings() -> NodeSettings {
    NodeSettings {
        degree: 2,
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(1),
        suspect_timeout: Duration::from_secs(1),
        ..NodeSettings::BUILT_IN
    }
}

/// `peerlab run FILE --runtime kubernetes` in `ws`, and the run id it announced; fails the
/// test unless the run exited 0 with every check passed.
fn run_passing(ws: &Workspace, file: &std::path::Path) -> (Output, String) {
    let out = ws.peerlab(&[
        "run",
        file.to_str().expect("utf-8 path"),
        "--runtime",
        "kubernetes",
    ]);
    let run_id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.dump()));
    assert_eq!(out.code(), Some(0), "{}", out.dump());
    assert!(out.stdout.contains("PASSED"), "{}", out.dump());
    (out, run_id)
}

#[test]
fn quickstart_runs_on_kubernetes_and_leaves_no_namespace() {
    require_cluster();
    ensure_image();
    let _turn = kubernetes_turn();
    let ws = Workspace::new("kquick");
    let file = ws.copy_topology("quickstart.yaml");
    // Pods took 28 s to become ready while CI ran the Docker and swarm tests beside this
    // one: the quickstart's 30 s is for a quiet machine.
    let text = std::fs::read_to_string(&file).expect("read topology");
    assert!(
        text.contains("    within: 30s\n"),
        "quickstart.yaml's formation deadline moved"
    );
    std::fs::write(
        &file,
        text.replace("    within: 30s\n", "    within: 120s\n"),
    )
    .expect("write topology");
    let (out, run_id) = run_passing(&ws, &file);
    assert!(
        out.stderr.contains("on the kubernetes runtime"),
        "{}",
        out.dump()
    );
    assert_nothing_left_blocking(&run_id);
    let log = ws
        .runs_dir()
        .join(&run_id)
        .join("logs")
        .join("genesis-0.log");
    assert!(
        log.is_file(),
        "the teardown saves each pod's log, {} is missing",
        log.display()
    );
}

// The turn is held on purpose for the whole run (see `kubernetes_turn`); the test's runtime is
// current-thread, so the guard never crosses threads.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_lab_of_two_groups_forms_joins_a_held_node_stops_starts_broadcasts_and_leaves_nothing() {
    let client = client().await;
    tokio::task::spawn_blocking(ensure_image)
        .await
        .expect("the node image");
    let _turn = kubernetes_turn();
    let runs = tempfile::tempdir().expect("tempdir");
    let mut lab = Lab::builder("klab")
        .genesis(1)
        .node_settings(fast_settings())
        .group(("alpha", 2))
        .group(("beta", 2))
        .group(GroupSpec::new("late", 1).manual())
        .formation_within(FORM_WITHIN)
        .min_degree(1)
        .broadcast_check(2, Duration::from_secs(10))
        .network_key(NetworkKeyMode::PerRun)
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Kubernetes)
        .image(peerlab::DEFAULT_IMAGE)
        .runs_dir(runs.path())
        .start()
        .await
        .expect("a Kubernetes lab starts");
    assert_eq!(lab.runtime_name(), "kubernetes");
    let run_id = lab.run_id().to_string();
    assert_eq!(
        namespaces_of(&client, &run_id).await,
        vec![format!("peerlab-{run_id}")],
        "one namespace per run, labelled with it"
    );
    assert!(!lab.capabilities().pause, "pods cannot be paused");
    assert_network_key_from_secret(&client, &format!("peerlab-{run_id}")).await;

    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    // The manual group's pod exists but is held: no member knows it.
    assert_eq!(formed.observations.len(), 5);
    lab.join("late-0").await.expect("the held pod starts");
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    assert_eq!(formed.observations.len(), 6);

    // A graceful stop (SIGTERM: the node floods its leave) and a start of the same node.
    lab.stop("alpha-1").await.expect("stop");
    assert!(!lab.live_nodes().contains(&"alpha-1".to_string()));
    lab.start("alpha-1").await.expect("start");
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());
    assert_eq!(formed.observations.len(), 6);

    let report = lab.check().await.expect("checks run");
    assert!(report.passed(), "{}", report.summary());

    let removed = lab.shutdown().await.expect("teardown");
    assert!(removed.leftovers.is_empty(), "{removed:?}");
    assert_eq!(removed.containers_removed, 6, "{removed:?}");
    assert_nothing_left(&client, &run_id).await;
}

/// The run's network key is in the Secret `peerlab-network-key`, and every pod reads it
/// from there (never a literal in the pod spec). The network forming at all then shows that
/// every node holds the same key.
async fn assert_network_key_from_secret(client: &kube::Client, namespace: &str) {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get("peerlab-network-key")
        .await
        .expect("the run's network key Secret");
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("key"))
        .expect("the Secret holds `key`");
    assert_eq!(key.0.len(), 64, "a 64-hex-character key");
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
        .expect("the run's pods");
    assert_eq!(pods.items.len(), 6, "every node's pod, the held one too");
    for pod in pods.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let env = pod
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.env)
            .unwrap_or_default();
        let var = env
            .iter()
            .find(|v| v.name == "PEERLAB_NETWORK_KEY")
            .unwrap_or_else(|| panic!("{name} has no PEERLAB_NETWORK_KEY"));
        assert!(var.value.is_none(), "{name} holds the key as a literal");
        let from = var
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .unwrap_or_else(|| panic!("{name} does not read the key from a Secret"));
        assert_eq!(from.name, "peerlab-network-key", "{name}");
        assert_eq!(from.key, "key", "{name}");
    }
}

/// Kill and start of a peer, then a partition and its heal, played by the orchestrator's
/// scenario over two groups; the last step broadcasts.
const FAULTS: &str = "\
name: kfaults
seed: 7
network_key: per-run
defaults:
  heartbeat_interval: 200ms
  heartbeat_timeout: 1s
  suspect_timeout: 1s
genesis: {count: 2}
groups:
  - {name: east, count: 3}
  - {name: west, count: 3}
checks:
  formation: {within: 120s, connected: true}
scenario:
  - kill: east-1
  - expect: {within: 30s, connected: true, full_membership: true}
  - start: east-1
  - expect: {within: 90s, all_ready: true, connected: true, full_membership: true}
  - partition: {sides: [\"genesis-0, east\", \"genesis-1, west\"]}
  - expect: {within: 30s, components: 2, component_membership: true}
  - heal: true
  - expect: {within: 60s, connected: true, full_membership: true, broadcast: {count: 2}}
";

#[test]
fn a_fault_scenario_kills_starts_partitions_and_heals_pods() {
    require_cluster();
    ensure_image();
    let _turn = kubernetes_turn();
    let ws = Workspace::new("kfaults");
    let file = ws.write("kfaults.yaml", FAULTS);
    let (_, run_id) = run_passing(&ws, &file);
    assert_nothing_left_blocking(&run_id);
}

#[test]
fn ps_lists_a_detached_run_and_down_removes_it() {
    require_cluster();
    ensure_image();
    let _turn = kubernetes_turn();
    let ws = Workspace::new("kdetach");
    let file = ws.write(
        "kdetach.yaml",
        "name: kdetach\ngenesis: {count: 1}\ngroups:\n  - {name: peers, count: 2}\n\
         checks:\n  formation: {within: 120s}\n",
    );
    let up = ws.peerlab(&[
        "up",
        file.to_str().expect("utf-8 path"),
        "--runtime",
        "kubernetes",
    ]);
    let run_id = up
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", up.dump()));
    // Whatever happens next, the run must not outlive the test.
    struct Down<'a>(&'a Workspace, &'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            self.0.peerlab(&["down", self.1]);
        }
    }
    let _down = Down(&ws, &run_id);
    assert_eq!(up.code(), Some(0), "{}", up.dump());
    assert_eq!(
        block_on(async { namespaces_of(&client().await, &run_id).await }).len(),
        1,
        "the detached run's namespace is up"
    );

    let ps = ws.peerlab(&["ps"]);
    assert_eq!(ps.code(), Some(0), "{}", ps.dump());
    let line = ps
        .stdout
        .lines()
        .find(|l| l.starts_with(&run_id))
        .unwrap_or_else(|| panic!("ps does not list {run_id}:\n{}", ps.dump()));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.get(1), Some(&"kubernetes"), "{line}");
    assert_eq!(fields.get(2), Some(&"3"), "three pods: {line}");
    assert_eq!(
        ps.stdout.lines().filter(|l| l.starts_with(&run_id)).count(),
        1,
        "the pods' containers on the engine are not listed as a Docker run too:\n{}",
        ps.stdout
    );

    let down = ws.peerlab(&["down", &run_id]);
    assert_eq!(down.code(), Some(0), "{}", down.dump());
    assert!(
        down.stderr.contains("removed 3 containers"),
        "{}",
        down.dump()
    );
    assert_nothing_left_blocking(&run_id);
    let log = ws.runs_dir().join(&run_id).join("logs").join("peers-1.log");
    assert!(
        log.is_file(),
        "down saves the pods' logs: {} is missing",
        log.display()
    );
    let ps = ws.peerlab(&["ps"]);
    assert!(!ps.stdout.contains(&run_id), "{}", ps.dump());
}

#[test]
fn a_cluster_that_does_not_answer_fails_the_run_loudly() {
    let ws = Workspace::new("knone");
    let file = ws.copy_topology("quickstart.yaml");
    let file = file.to_str().expect("utf-8 path");
    // Nothing listens on port 1: the API server does not answer.
    let kubeconfig = ws.write(
        "kubeconfig",
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\nclusters:\n- name: nowhere\n  \
         cluster: {server: \"https://127.0.0.1:1\"}\ncontexts:\n- name: nowhere\n  context: \
         {cluster: nowhere, user: nobody}\nusers:\n- name: nobody\n  user: {token: x}\n",
    );
    let out = ws.peerlab(&[
        "run",
        file,
        "--runtime",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.code(), Some(3), "{}", out.dump());
    assert!(out.stderr.contains("127.0.0.1:1"), "{}", out.dump());
    assert!(out.stderr.contains("KUBECONFIG"), "{}", out.dump());
    let missing = ws.peerlab(&[
        "run",
        file,
        "--runtime",
        "kubernetes",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert_eq!(missing.code(), Some(3), "{}", missing.dump());
    assert!(
        missing.stderr.contains("no usable kubeconfig"),
        "{}",
        missing.dump()
    );
}

/// Ctrl-C while the pods run, and a panic of the orchestrator: each removes the run's
/// namespace before the process exits (130 and 3), as on the other runtimes.
#[test]
fn ctrl_c_and_a_panic_remove_the_run_namespace() {
    use nix::sys::signal::Signal;

    use crate::support::cli::run_id_in_line;
    use crate::support::poll_until_blocking;

    require_cluster();
    ensure_image();
    let _turn = kubernetes_turn();
    let ws = Workspace::new("kint");
    let file = ws.write(
        "kint.yaml",
        "name: kint\ngenesis: {count: 1}\ngroups:\n  - {name: peers, count: 2}\n\
         checks:\n  formation: {within: 120s}\n",
    );
    let file = file.to_str().expect("utf-8 path");

    let mut running = ws.spawn(&["run", file, "--runtime", "kubernetes"]);
    let run_id = poll_until_blocking(Duration::from_secs(60), "the run id on stderr", || {
        running.stderr_so_far().lines().find_map(run_id_in_line)
    });
    // Interrupted once its pods exist: the namespace holds them.
    poll_until_blocking(FORM_WITHIN, "the run's pods to be created", || {
        block_on(async {
            use k8s_openapi::api::core::v1::Pod;
            let client = client().await;
            let namespaces = namespaces_of(&client, &run_id).await;
            let ns = namespaces.first()?;
            let pods = kube::Api::<Pod>::namespaced(client, ns)
                .list(&Default::default())
                .await
                .ok()?;
            (pods.items.len() == 3).then_some(())
        })
    });
    running.signal(Signal::SIGINT);
    let out = running.wait(Duration::from_secs(120));
    assert_eq!(out.code(), Some(130), "{}", out.dump());
    assert_nothing_left_blocking(&run_id);

    let out = ws.peerlab_with_env(
        &["run", file, "--runtime", "kubernetes"],
        &[(peerlab::orchestrator::run::PANIC_AFTER_START, "1")],
    );
    assert_eq!(out.code(), Some(3), "{}", out.dump());
    assert!(
        out.stderr.contains("internal error (panic)"),
        "{}",
        out.dump()
    );
    let run_id = out
        .run_id()
        .unwrap_or_else(|| panic!("no run id:\n{}", out.dump()));
    assert_nothing_left_blocking(&run_id);
}
