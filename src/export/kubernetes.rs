//! Export a run plan as Kubernetes objects (YAML), for `peerlab export kubernetes` and
//! users who apply with their own tools (`kubectl apply -f`, Helm, Argo).
//!
//! The objects are exactly those the Kubernetes runtime creates
//! ([`crate::runtime::kubernetes::objects`]): the run's namespace, a headless Service and a
//! StatefulSet per group. This module only adds a header that says how to apply, check and
//! remove them, and what of the topology a cluster does not honour.

use crate::runtime::kubernetes::objects::{self, ObjectOptions};
use crate::runtime::{RunPlan, RuntimeError};

/// The plan's objects as one multi-document YAML file (namespace, services, StatefulSets),
/// after a comment header on applying, checking and removing them.
pub fn export(plan: &RunPlan, options: &ObjectOptions) -> Result<String, RuntimeError> {
    let built = objects::build(plan, options)?;
    let yaml = objects::to_yaml(&built)?;
    let ns = &options.namespace;
    let nodes = plan.nodes.len();
    let first = plan
        .nodes
        .iter()
        .find(|n| n.genesis)
        .map_or("genesis-0", |n| n.name.as_str());
    let mut notes = String::new();
    if plan.nodes.iter().any(|n| !n.start_after.is_zero()) {
        notes.push_str(
            "# Start delays (start_delay, stagger) are not honoured: every pod starts at once\n\
             # (podManagementPolicy: Parallel) and peers retry their join until a genesis answers.\n",
        );
    }
    if plan.hosts.iter().any(|h| !h.links.is_empty()) {
        notes.push_str(
            "# The topology's links between hosts (latency, loss, bandwidth) are not emulated:\n\
             # the cluster's own network is the link.\n",
        );
    }
    if plan.network_key.is_some() {
        notes.push_str(&format!(
            "# The topology sets network_key: every pod reads PEERLAB_NETWORK_KEY from the Secret\n\
             # {secret} (key `{key}`) and does not start without it (no key is written here).\n\
             # Create it before applying, with the same key for every pod of the network:\n\
             #   kubectl create namespace {ns}\n\
             #   kubectl -n {ns} create secret generic {secret} --from-literal={key}=\"$(openssl rand -hex 32)\"\n",
            secret = objects::NETWORK_KEY_SECRET,
            key = objects::NETWORK_KEY_SECRET_KEY,
        ));
    }
    Ok(format!(
        "# Kubernetes objects for topology `{topology}` (run {run}, {nodes} nodes), written by\n\
         # `peerlab export kubernetes`: namespace {ns}, a headless Service and a StatefulSet per group.\n\
         # Apply:  kubectl apply -f FILE\n\
         # The cluster must have the image {image} (imagePullPolicy {pull}): load it with\n\
         # `kind load docker-image {image}`, `k3d image import {image}`, or push it to a registry.\n\
         # Watch:  kubectl -n {ns} get pods -w       (Ready = joined the network)\n\
         # Check:  kubectl get --raw /api/v1/namespaces/{ns}/pods/{first}:7071/proxy/status\n\
         # Remove: kubectl delete namespace {ns}\n\
         # Link faults (/admin/*) are off unless the pods find the Secret {secret}, read at start\n\
         # as PEERLAB_ADMIN_TOKEN (no token is written here). To turn them on, before applying:\n\
         #   kubectl create namespace {ns}\n\
         #   kubectl -n {ns} create secret generic {secret} --from-literal={key}=\"$(openssl rand -hex 32)\"\n\
         {notes}{yaml}",
        topology = plan.topology_name,
        run = plan.run_id,
        image = options.image,
        pull = options.pull_policy,
        secret = objects::ADMIN_SECRET,
        key = objects::ADMIN_SECRET_KEY,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::NodeSpec;

    fn plan(start_after: Duration) -> RunPlan {
        let node = |name: &str, group: &str| NodeSpec {
            name: name.into(),
            group: group.into(),
            genesis: group == "genesis",
            networks: vec![],
            start_after,
            node_args: vec![],
            seed: 1,
            host: None,
            resources: None,
        };
        RunPlan {
            run_id: "demo".into(),
            run_dir: "/tmp/unused".into(),
            topology_name: "demo".into(),
            image: "peerlab:0.1.0".into(),
            networks: vec![],
            nodes: vec![node("genesis-0", "genesis"), node("peers-0", "peers")],
            hosts: vec![],
            detach: false,
            admin_token: crate::contract::AdminToken::generate(),
            network_key: None,
        }
    }

    #[test]
    fn the_header_says_how_to_apply_check_and_remove() {
        let text = export(
            &plan(Duration::ZERO),
            &ObjectOptions::new("peerlab-demo", "peerlab:7"),
        )
        .expect("export");
        for needle in [
            "kubectl apply -f FILE",
            "kind load docker-image peerlab:7",
            "k3d image import peerlab:7",
            "/api/v1/namespaces/peerlab-demo/pods/genesis-0:7071/proxy/status",
            "kubectl delete namespace peerlab-demo",
            "kind: StatefulSet",
        ] {
            assert!(text.contains(needle), "`{needle}` missing:\n{text}");
        }
        assert!(!text.contains("not honoured"), "no delays, no note");
        let delayed = export(
            &plan(Duration::from_secs(2)),
            &ObjectOptions::new("peerlab-demo", "peerlab:7"),
        )
        .expect("export");
        assert!(delayed.contains("Start delays"), "{delayed}");
        assert!(
            !text.contains("PEERLAB_NETWORK_KEY"),
            "no key asked for:\n{text}"
        );
    }

    #[test]
    fn a_keyed_plan_says_how_to_create_the_network_key_secret_and_holds_no_key() {
        let key = crate::contract::NetworkSecret::generate();
        let keyed = RunPlan {
            network_key: Some(key.clone()),
            ..plan(Duration::ZERO)
        };
        let text =
            export(&keyed, &ObjectOptions::new("peerlab-demo", "peerlab:7")).expect("export");
        assert!(
            text.contains(
                "kubectl -n peerlab-demo create secret generic peerlab-network-key --from-literal=key="
            ),
            "{text}"
        );
        assert!(text.contains("name: PEERLAB_NETWORK_KEY"), "{text}");
        assert!(!text.contains(key.expose()), "the key is never written");
    }
}
