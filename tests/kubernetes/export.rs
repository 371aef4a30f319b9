//! `peerlab export kubernetes` applied to a real cluster with `kubectl apply`: every pod
//! becomes Ready, the nodes form one network (read through the API server's pod proxy,
//! judged by the orchestrator's own formation checks), and deleting the namespace removes
//! everything.

use std::process::Command;
use std::time::Duration;

use peerlab::contract::NodeStatus;
use serde_json::Value;

use crate::support::docker::{DOCKER_POLL, must, output, peerlab, unique};
use crate::support::formation::{formed, observation, problem};
use crate::support::{BIN, poll_until_blocking, topologies_dir};

/// The node image of the binary under test, under a name of this test's own (never
/// `:latest`, which a cluster would try to pull).
const IMAGE: &str = "peerlab-test:kubernetes-export";
/// From `kubectl apply` to every pod Ready and the network formed, on a busy 2-core machine.
const FORM_WITHIN: Duration = Duration::from_secs(180);
/// From `kubectl delete namespace` to the namespace gone: pods get 10 s to leave, and the
/// namespace controller of a busy 1.20 cluster retries with a backoff (13 s to 94 s seen).
const GONE_WITHIN: Duration = Duration::from_secs(240);

/// `kubectl`: the lab's own (matching the API server) when `K8S_LAB_KUBECTL` names it.
fn kubectl() -> Command {
    let program = std::env::var("K8S_LAB_KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    Command::new(program)
}

/// Fails (never skips) when no cluster answers: this test exists to run on one.
fn require_cluster() {
    crate::cluster::ensure_cluster();
    let config = std::env::var("KUBECONFIG").unwrap_or_else(|_| "(unset: ~/.kube/config)".into());
    let out = kubectl()
        .args(["get", "--raw", "/readyz", "--request-timeout", "10s"])
        .output();
    let why = match out {
        Ok(out) if out.status.success() => return,
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(e) => format!("cannot run kubectl: {e}"),
    };
    panic!(
        "these tests need a Kubernetes cluster, and the one of KUBECONFIG={config} does not \
         answer: {why}\nBring the lab up and point at it: \
         `sudo ../shared/k8s-lab/lab up && eval \"$(../shared/k8s-lab/lab env)\"`"
    );
}

/// [`IMAGE`] holds the binary under test: built (without a registry) unless it already does.
fn ensure_image() {
    use sha2::{Digest, Sha256};
    // The export tests run in processes of their own (nextest): one builds, the other waits.
    let _tag = crate::support::engine_turn("kubernetes-export-image");
    let digest = hex::encode(Sha256::digest(std::fs::read(BIN).expect("read the binary")));
    let label = output(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"peerlab.binary.sha256\"}}",
        IMAGE,
    ]));
    if label.status.success() && String::from_utf8_lossy(&label.stdout).trim() == digest {
        return;
    }
    must(peerlab().args(["image", "build", "--tag", IMAGE]));
}

/// Deletes the namespace when the test ends, passed or not (without waiting: a failing
/// test must not hang on it).
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl()
            .args([
                "delete",
                "namespace",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// `kubectl get --raw PATH`: the body, or why there was none.
fn raw(path: &str) -> Result<String, String> {
    let out = kubectl()
        .args(["get", "--raw", path, "--request-timeout", "5s"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Every pod of `ns`: its name, whether its Ready condition is true, and its IP.
fn pods(ns: &str) -> Vec<(String, bool, String)> {
    let out = output(kubectl().args(["-n", ns, "get", "pods", "-o", "json"]));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| {
                    let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                    let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                    let ip = p["status"]["podIP"].as_str().unwrap_or("").to_string();
                    (name, ready, ip)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What `kubectl` says about the namespace's pods, for failure messages.
fn describe(ns: &str) -> String {
    let pods = output(kubectl().args(["-n", ns, "get", "pods", "-o", "wide"]));
    let events = output(kubectl().args(["-n", ns, "get", "events"]));
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&pods.stdout),
        String::from_utf8_lossy(&events.stdout)
    )
}

/// Exports `topology` into a fresh namespace, applies it, waits until the pods `expected`
/// (sorted) are all Ready and form one network, checks each node's identity, then deletes
/// the namespace and waits until it is gone.
fn apply_and_form(test: &str, topology: &std::path::Path, expected: &[&str]) -> Vec<Value> {
    require_cluster();
    ensure_image();
    let started = std::time::Instant::now();
    let ns = unique(&format!("{test}-"));
    let guard = Namespace(ns.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("objects.yaml");
    must(
        peerlab()
            .args(["export", "kubernetes"])
            .arg(topology)
            .args(["--namespace", &ns, "--image", IMAGE, "-o"])
            .arg(&file),
    );
    must(kubectl().arg("apply").arg("-f").arg(&file));
    eprintln!("{ns}: applied after {:?}", started.elapsed());

    let deadline = std::time::Instant::now() + FORM_WITHIN;
    let (observations, seen) = loop {
        let seen = pods(&ns);
        let mut names: Vec<&str> = seen.iter().map(|(n, _, _)| n.as_str()).collect();
        names.sort();
        let why = if names != expected || seen.iter().any(|(_, ready, _)| !ready) {
            format!("pods (name, Ready, IP): {seen:?}")
        } else {
            let observations: Vec<_> = seen
                .iter()
                .map(|(pod, ready, _)| {
                    let url = format!("/api/v1/namespaces/{ns}/pods/{pod}:7071/proxy/status");
                    let status = raw(&url).and_then(|body| {
                        serde_json::from_str::<NodeStatus>(&body).map_err(|e| e.to_string())
                    });
                    observation(pod, &url, status, *ready)
                })
                .collect();
            match problem(&observations, &formed(1)) {
                Some(p) => p,
                None => break (observations, seen),
            }
        };
        assert!(
            std::time::Instant::now() < deadline,
            "not formed within {FORM_WITHIN:?}: {why}\n{}",
            describe(&ns)
        );
        std::thread::sleep(DOCKER_POLL);
    };
    eprintln!(
        "{ns}: every pod Ready and formed after {:?}",
        started.elapsed()
    );
    // The nodes know each other by the plan's names, and advertise their pod addresses.
    for o in &observations {
        let status = o.status.as_ref().expect("answered");
        assert_eq!(status.id, o.name, "node name from the pod name");
        assert_eq!(status.name.as_deref(), Some(o.name.as_str()));
        let ip = seen
            .iter()
            .find(|(pod, _, _)| *pod == o.name)
            .map(|(_, _, ip)| ip.clone())
            .unwrap_or_default();
        assert_eq!(
            status.addr,
            format!("{ip}:7070"),
            "{} advertises its pod IP",
            o.name
        );
    }
    let pod_specs = output(kubectl().args(["-n", &ns, "get", "pods", "-o", "json"]));
    let pod_specs: Value = serde_json::from_slice(&pod_specs.stdout).unwrap_or(Value::Null);
    let statuses = observations
        .iter()
        .filter_map(|o| serde_json::to_value(o.status.as_ref()?).ok())
        .collect::<Vec<_>>();

    must(kubectl().args(["delete", "namespace", &ns, "--wait=false"]));
    poll_until_blocking(GONE_WITHIN, "the namespace to be gone", || {
        let out =
            output(kubectl().args(["get", "namespace", &ns, "--ignore-not-found", "-o", "name"]));
        (out.status.success() && out.stdout.is_empty()).then_some(())
    });
    eprintln!("{ns}: namespace gone after {:?}", started.elapsed());
    drop(guard);
    let mut out = vec![pod_specs];
    out.extend(statuses);
    out
}

#[test]
fn exported_quickstart_applies_to_the_cluster_and_forms() {
    let topology = topologies_dir().join("quickstart.yaml");
    apply_and_form(
        "k1-export",
        &topology,
        &["genesis-0", "peers-0", "peers-1", "peers-2", "peers-3"],
    );
}

#[test]
fn two_genesis_nodes_and_resource_limits_run_on_the_cluster() {
    // genesis-1 shares genesis-0's template and list: it must join through genesis-0 rather
    // than start a second network; the limits must be accepted as requests and limits.
    let dir = tempfile::tempdir().expect("tempdir");
    let topology = dir.path().join("two-genesis.yaml");
    std::fs::write(
        &topology,
        "name: two-genesis\nseed: 5\ngenesis: {count: 2}\n\
         defaults:\n  degree: 2\n  resources: {cpu: 200m, memory: 48Mi}\n\
         groups:\n  - {name: peers, count: 2}\n",
    )
    .expect("write the topology");
    let found = apply_and_form(
        "k1-genesis",
        &topology,
        &["genesis-0", "genesis-1", "peers-0", "peers-1"],
    );
    let statuses = &found[1..];
    let started_network: Vec<&str> = statuses
        .iter()
        .filter(|s| s["genesis"] == true)
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(
        started_network,
        ["genesis-0"],
        "one network, started by genesis-0"
    );
    let pods = found[0]["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len(), 4);
    for pod in &pods {
        let resources = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(resources["limits"]["cpu"], "200m", "{resources}");
        assert_eq!(resources["limits"]["memory"], "48Mi", "{resources}");
        assert_eq!(resources["requests"], resources["limits"]);
    }
}
