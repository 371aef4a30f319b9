//! The cluster the tests run against, and what a run left in it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, Client};

/// How long the API server may take to answer a test's first request.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A client of the cluster `KUBECONFIG` names; panics, saying what to do, when it is not
/// set or the cluster does not answer.
pub async fn client() -> Client {
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
