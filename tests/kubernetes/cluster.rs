//! The cluster the tests run against, and what a run left in it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, Client};

/// How long the API server may take to answer a test's first request.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Environment variable naming the k8s lab script (default: `../shared/k8s-lab/lab` next to
/// the repository, else `/work/shared/k8s-lab/lab`), as `.ci/run` finds it.
const LAB_ENV: &str = "PEERLAB_K8S_LAB";

/// Makes sure `KUBECONFIG` names a cluster: when it is unset, brings the shared k8s lab up
/// (a no-op of half a second when it already is; its first build takes minutes) and takes
/// its exports, so that the README's test command needs no set-up of its own. The lab is
/// left up for the next test and run; `.ci/run` takes it down at the end, and by hand
/// `../shared/k8s-lab/lab down` does. Call it before the test starts threads of its own:
/// it sets environment variables.
pub fn ensure_cluster() {
    static DONE: Once = Once::new();
    DONE.call_once(|| {
        if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
            return;
        }
        let lab = lab_script();
        // Test processes run side by side: one brings the lab up, the others wait (the lab
        // takes a lock of its own too, this only keeps its progress lines apart).
        let _turn = crate::support::engine_turn("k8s-lab-up");
        let up = Command::new(&lab)
            .arg("up")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} up: {e}", lab.display()));
        assert!(
            up.status.success(),
            "KUBECONFIG is not set and `{} up` failed (the Kubernetes tests need a cluster): {}",
            lab.display(),
            String::from_utf8_lossy(&up.stderr)
        );
        let env = Command::new(&lab)
            .arg("env")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} env: {e}", lab.display()));
        for line in String::from_utf8_lossy(&env.stdout).lines() {
            let Some((key, value)) = line
                .trim()
                .strip_prefix("export ")
                .and_then(|kv| kv.split_once('='))
            else {
                continue;
            };
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            // SAFETY: called at the start of a test, before it starts threads of its own
            // (each test is a process of its own under nextest, and `Once` orders the
            // threads of a `cargo test` binary).
            unsafe { std::env::set_var(key, value) };
        }
        assert!(
            std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()),
            "`{} env` exported no KUBECONFIG",
            lab.display()
        );
    });
}

/// The k8s lab script: `$PEERLAB_K8S_LAB`, else the shared one next to the repository.
fn lab_script() -> PathBuf {
    if let Some(path) = std::env::var_os(LAB_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{LAB_ENV}={} does not name the k8s lab script",
            path.display()
        );
        return path;
    }
    let beside = Path::new(crate::support::ROOT).join("../shared/k8s-lab/lab");
    let fixed = PathBuf::from("/work/shared/k8s-lab/lab");
    for path in [&beside, &fixed] {
        if path.is_file() {
            return path.clone();
        }
    }
    panic!(
        "KUBECONFIG is not set and the k8s lab script (shared/k8s-lab/lab) is not at {} nor {}: \
         point KUBECONFIG at a cluster, or set {LAB_ENV} to the lab script",
        beside.display(),
        fixed.display()
    );
}

/// A client of the cluster `KUBECONFIG` names (the lab's, brought up by [`ensure_cluster`]
/// when it is unset); panics, saying what to do, when the cluster does not answer.
pub async fn client() -> Client {
    ensure_cluster();
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_default();
    assert!(
        !kubeconfig.is_empty(),
        "KUBECONFIG is not set: the Kubernetes tests run against a real cluster. Bring the lab \
         up (`sudo ../shared/k8s-lab/lab up`) and `eval \"$(../shared/k8s-lab/lab env)\"`, or \
         point KUBECONFIG at a cluster of your own"
    );
    let client = Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("KUBECONFIG={kubeconfig} gives no usable client: {e}"));
    match tokio::time::timeout(ANSWER_WITHIN, client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => panic!("the cluster of KUBECONFIG={kubeconfig} does not answer: {e}"),
        Err(_) => panic!(
            "the cluster of KUBECONFIG={kubeconfig} did not answer within {ANSWER_WITHIN:?}; is \
             it up (`../shared/k8s-lab/lab status`)?"
        ),
    }
}

/// The namespaces labelled with `run_id` (terminating ones included).
pub async fn namespaces_of(client: &Client, run_id: &str) -> Vec<String> {
    Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("peerlab.run={run_id}")))
        .await
        .expect("list namespaces")
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect()
}

/// Panics when anything labelled with `run_id` is left in the cluster.
pub async fn assert_nothing_left(client: &Client, run_id: &str) {
    let left = namespaces_of(client, run_id).await;
    assert!(
        left.is_empty(),
        "run {run_id} left namespaces {left:?} behind"
    );
}

/// [`client`] and [`assert_nothing_left`] for tests that are not async.
pub fn assert_nothing_left_blocking(run_id: &str) {
    block_on(async {
        let client = client().await;
        assert_nothing_left(&client, run_id).await;
    });
}

/// Fails the test when no cluster answers (for tests that are not async).
pub fn require_cluster() {
    block_on(async {
        client().await;
    });
}

/// Runs `work` on a runtime of its own.
pub fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(work)
}
