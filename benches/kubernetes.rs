//! Kubernetes benchmark: N nodes as pods of StatefulSets on the cluster `KUBECONFIG` names
//! (the repository's lab cluster: `eval "$(../shared/k8s-lab/lab env)"`).
//!
//! ```text
//! cargo bench --bench kubernetes [-- 30 100]
//! ```
//!
//! Every size is one run of `peerlab::Lab` with `RuntimeKind::Kubernetes` (one genesis, one
//! group of N-1 peers), timed from the moment its objects are applied (the runtime creates
//! the namespace, the headless Services and the StatefulSets, all pods at once):
//!
//! - `all pods Running`: until the API lists all N pods `Running`, polled by this bench
//!   next to the run; what applying the same StatefulSets with `kubectl apply` gives you;
//! - `formed`: until the lab's formation checks hold (every node joined, the overlay
//!   connected, every node with a neighbour), read through the runtime's pod proxy.
//!
//! Goal (issue 15): formed within 1.5 times all-pods-Running. The node image is built from
//! this build's release binary into the local Docker engine, which the lab's kubelet uses.

mod support;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use peerlab::Lab;
use peerlab::lab::RuntimeKind;
use peerlab::runtime::kubernetes::objects::namespace_for;
use support::docker::{must, output, peerlab};

/// The node image this bench builds from its own release binary.
const IMAGE: &str = "peerlab-bench:kubernetes";
/// How long one size may take to form.
const DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(200);

struct Row {
    nodes: usize,
    running: Option<f64>,
    formed: Option<f64>,
    load: String,
}

/// Seconds from `t0` until all `n` pods of `namespace` are Running; `None` past the deadline.
async fn all_running(client: Client, namespace: String, n: usize, t0: Instant) -> Option<f64> {
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    while t0.elapsed() < DEADLINE {
        if let Ok(list) = pods.list(&ListParams::default()).await {
            let running = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            if running >= n {
                return Some(t0.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

async fn measure(client: &Client, n: usize) -> Row {
    let runs = tempfile::tempdir().expect("a temp dir");
    let mut lab = Lab::builder(format!("kbench{n}"))
        .genesis(1)
        .group(("peers", n - 1))
        .formation_within(DEADLINE)
        .min_degree(1)
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Kubernetes)
        .image(IMAGE)
        .runs_dir(runs.path())
        .plan()
        .await
        .unwrap_or_else(|e| panic!("N={n}: the kubernetes runtime refused the run: {e}"));
    let namespace = namespace_for(lab.run_id());
    let t0 = Instant::now();
    let watcher = tokio::spawn(all_running(client.clone(), namespace, n, t0));
    lab.start_nodes()
        .await
        .unwrap_or_else(|e| panic!("N={n}: the pods did not start: {e}"));
    let formation = lab.wait_formed(DEADLINE).await.expect("started");
    let formed = formation.formed().then(|| t0.elapsed().as_secs_f64());
    let load = support::load_average();
    let running = watcher.await.unwrap_or(None);
    eprintln!("N={n}: all pods Running {running:?} s, formed {formed:?} s; tearing down");
    let removed = lab.shutdown().await.expect("teardown");
    assert!(
        removed.leftovers.is_empty(),
        "N={n}: teardown left {:?}",
        removed.leftovers
    );
    Row {
        nodes: n,
        running,
        formed,
        load,
    }
}

fn main() {
    let sizes = support::sizes(&[30, 100]);
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_default();
    assert!(
        !kubeconfig.is_empty(),
        "KUBECONFIG is not set: this bench runs on a real cluster; bring the lab up and \
         `eval \"$(../shared/k8s-lab/lab env)\"`"
    );
    must(peerlab().args(["image", "build", "--tag", IMAGE]));
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let rows: Vec<Row> = rt.block_on(async {
        let client = Client::try_default()
            .await
            .unwrap_or_else(|e| panic!("KUBECONFIG={kubeconfig} gives no client: {e}"));
        let mut rows = Vec::new();
        for n in sizes {
            eprintln!("N={n}: applying");
            rows.push(measure(&client, n).await);
        }
        rows
    });
    let _ = output(Command::new("docker").args(["image", "rm", IMAGE]));

    let mut t = String::new();
    let _ = writeln!(
        t,
        "Kubernetes formation on the lab cluster, one node ({})\n",
        support::build_line()
    );
    let _ = writeln!(
        t,
        "| N | all pods Running | peerlab: formed | formed / running | load average (1/5/15 min) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    let secs = |v: Option<f64>| v.map_or("not within 300 s".to_string(), |s| format!("{s:.1} s"));
    for r in &rows {
        let ratio = match (r.formed, r.running) {
            (Some(f), Some(run)) if run > 0.0 => format!("{:.2}", f / run),
            _ => "-".into(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {ratio} | {} |",
            r.nodes,
            secs(r.running),
            secs(r.formed),
            r.load
        );
    }
    support::publish("kubernetes.md", &t);
}
