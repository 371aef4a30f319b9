//! The Kubernetes objects of a run, built from its plan without I/O: what the Kubernetes
//! runtime creates through the API and what `peerlab export kubernetes` writes as YAML.
//!
//! One run is one namespace ([`namespace_for`] names it after the run id unless the user
//! chooses one), holding per peer group (and one for the genesis nodes):
//!
//! - **a StatefulSet named after the group**, so its pods are named exactly as the plan
//!   names the nodes (`genesis-0`, `peers-3`: ordinals count from 0, as the plan does).
//!   `podManagementPolicy: Parallel` starts every pod at once (a group's `start_delay` and
//!   `stagger` are not honoured: peers retry their join until a genesis node answers), and
//!   `updateStrategy: OnDelete` keeps a template change (a held node, see below) from
//!   rolling every pod: only a deleted pod comes back with the new template.
//! - **a headless Service of the same name** (`clusterIP: None`) with
//!   `publishNotReadyAddresses: true`, which gives every pod the DNS name
//!   `<pod>.<group>.<namespace>.svc.cluster.local` as soon as it has an address, ready or not:
//!   a genesis node is ready only once it runs, and a joining peer must reach it before.
//!
//! All pods of a StatefulSet share one template, so a node's identity comes from the pod
//! itself: its name from `metadata.name` (the downward API), the address it advertises
//! from `status.podIP` (never an address read from its interfaces), and its seed from
//! `PEERLAB_SEED_BASE` (the group's first node's seed in the plan) mixed with its name by the
//! node. Every node gets every genesis node's DNS name in order; a genesis node's list ends
//! where it finds itself (`peerlab node --genesis`), so `genesis-0` starts the network and
//! later genesis nodes join through the ones before them, as on the other runtimes.
//!
//! **Held nodes** ([`ObjectOptions::held`]): a StatefulSet cannot leave one ordinal out, so
//! a node the orchestrator keeps down is listed in `PEERLAB_HOLD` of its group's template;
//! its pod runs `peerlab node`, which starts nothing and waits for SIGTERM. A held pod is
//! never Ready; its status socket answers only the liveness probe (`/live`), so the kubelet
//! leaves it alone.
//!
//! Probes are on the status socket: readiness on `/ready` (joined), liveness on the
//! endpoint `peerlab health --live` uses, generous enough (a minute and a half before the
//! first restart) that a node still joining a busy network is never killed; a Swarm
//! healthcheck that killed joining nodes at 100 nodes on two cores is why.
//!
//! Placement follows the topology's `hosts:`: a group on one host gets a `nodeSelector` on
//! the node label [`HOST_LABEL`] (the host's `label`, else its name); every group is spread
//! over the cluster's nodes (`kubernetes.io/hostname`) as far as the scheduler can
//! (`ScheduleAnyway`). Only fields stable in Kubernetes 1.20 are set.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, Service,
    ServicePort, ServiceSpec, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::runtime::container::{GROUP_LABEL, HOST_LABEL, PEER_PORT, STATUS_PORT};
use crate::runtime::{NodeSpec, RUN_LABEL, RunPlan, RuntimeError};

/// Label with the topology's name, on every object of a run.
pub const TOPOLOGY_LABEL: &str = "peerlab.topology";
/// Prefix of the namespaces [`namespace_for`] names.
pub const NAMESPACE_PREFIX: &str = "peerlab-";
/// The cluster's DNS domain, in the genesis nodes' names (Kubernetes' default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Name of the node's container in every pod.
pub const CONTAINER_NAME: &str = "node";
/// Variable listing the held nodes of a StatefulSet (see the module docs).
pub const HOLD_ENV: &str = "PEERLAB_HOLD";
/// Default `imagePullPolicy`: a locally loaded image (kind, k3d, a lab) is used as is.
pub const DEFAULT_PULL_POLICY: &str = "IfNotPresent";
/// Node label that spreads pods over machines.
pub const HOSTNAME_TOPOLOGY_KEY: &str = "kubernetes.io/hostname";
/// Longest DNS label (namespace, pod and service names).
const MAX_LABEL: usize = 63;
/// Longest StatefulSet name: its pods carry a `controller-revision-hash` label of the name
/// plus 11 characters, and a label value holds 63.
const MAX_STATEFUL_SET: usize = 52;

/// What [`build`] needs beyond the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOptions {
    /// The run's namespace (see [`namespace_for`]).
    pub namespace: String,
    /// The nodes' image; the cluster must be able to pull or already hold it.
    pub image: String,
    /// `imagePullPolicy` of the node containers: `IfNotPresent`, `Never` or `Always`.
    pub pull_policy: String,
    /// Nodes to keep down (by plan name): listed in `PEERLAB_HOLD` of their group.
    pub held: BTreeSet<String>,
}

impl ObjectOptions {
    /// Options for `namespace` and `image`, pulled only if not present, nothing held.
    pub fn new(namespace: impl Into<String>, image: impl Into<String>) -> Self {
        ObjectOptions {
            namespace: namespace.into(),
            image: image.into(),
            pull_policy: DEFAULT_PULL_POLICY.to_string(),
            held: BTreeSet::new(),
        }
    }
}

/// The objects of one run, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeObjects {
    /// The run's namespace, labelled with the run id ([`RUN_LABEL`]).
    pub namespace: Namespace,
    /// One headless Service per StatefulSet, same name, in plan order.
    pub services: Vec<Service>,
    /// One StatefulSet per group, genesis first, in plan order.
    pub stateful_sets: Vec<StatefulSet>,
}

/// The namespace of run `run_id`: `peerlab-<run id>`, lowercased, anything but letters,
/// digits and `-` turned into `-`, and shortened to a DNS label (63 characters) with a
/// hash of the whole id kept at the end, so two long ids still get two namespaces.
pub fn namespace_for(run_id: &str) -> String {
    let mut cleaned: String = run_id
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    cleaned = cleaned.trim_matches('-').to_string();
    if cleaned.is_empty() {
        cleaned = "run".to_string();
    }
    let name = format!("{NAMESPACE_PREFIX}{cleaned}");
    if name.len() <= MAX_LABEL {
        return name;
    }
    let digest = Sha256::digest(run_id.as_bytes());
    let hash: String = digest[..3].iter().map(|b| format!("{b:02x}")).collect();
    let keep = MAX_LABEL - hash.len() - 1;
    format!("{}-{hash}", name[..keep].trim_end_matches('-'))
}

/// `text` as a valid label value: at most 63 characters of letters, digits, `-`, `_` and
/// `.`, starting and ending with a letter or digit (others become `-`; empty stays empty).
pub fn label_value(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The DNS name of pod `pod` of StatefulSet `group` in `namespace`, as its headless
/// Service publishes it.
pub fn pod_dns_name(pod: &str, group: &str, namespace: &str) -> String {
    format!("{pod}.{group}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// The StatefulSet (its group) and ordinal of plan node `node`: `peers-3` is pod 3 of
/// `peers`. `None` when the name is not `<group>-<ordinal>` of a group of the plan.
pub fn stateful_set_of<'a>(plan: &'a RunPlan, node: &str) -> Option<(&'a str, u32)> {
    let spec = plan.nodes.iter().find(|n| n.name == node)?;
    let ordinal = node
        .strip_prefix(spec.group.as_str())?
        .strip_prefix('-')?
        .parse()
        .ok()?;
    Some((spec.group.as_str(), ordinal))
}

/// The `PEERLAB_HOLD` value of `group`'s StatefulSet: its held nodes, sorted and
/// comma-separated; `None` when none of them is held (the variable is then left out).
pub fn hold_value(plan: &RunPlan, group: &str, held: &BTreeSet<String>) -> Option<String> {
    let names: Vec<&str> = held
        .iter()
        .filter(|name| {
            plan.nodes
                .iter()
                .any(|n| &n.name == *name && n.group == group)
        })
        .map(String::as_str)
        .collect();
    (!names.is_empty()).then(|| names.join(","))
}

/// Labels selecting the pods of `group` in run `run_id` (a Service's and a StatefulSet's
/// selector).
pub fn selector_labels(run_id: &str, group: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUN_LABEL.to_string(), label_value(run_id)),
        (GROUP_LABEL.to_string(), label_value(group)),
    ])
}

/// The objects of `plan` in `options.namespace` (see the module docs). Refuses, before
/// anything is created, a plan Kubernetes cannot run as planned.
pub fn build(plan: &RunPlan, options: &ObjectOptions) -> Result<KubeObjects, RuntimeError> {
    check(plan, options)?;
    let groups = groups(plan)?;
    let genesis: Vec<String> = plan
        .nodes
        .iter()
        .filter(|n| n.genesis)
        .map(|g| {
            format!(
                "{}:{PEER_PORT}",
                pod_dns_name(&g.name, &g.group, &options.namespace)
            )
        })
        .collect();
    let mut services = Vec::new();
    let mut stateful_sets = Vec::new();
    for (group, nodes) in &groups {
        services.push(service(plan, options, group));
        stateful_sets.push(stateful_set(plan, options, group, nodes, &genesis));
    }
    let mut labels = BTreeMap::from([(RUN_LABEL.to_string(), label_value(&plan.run_id))]);
    labels.insert(TOPOLOGY_LABEL.to_string(), label_value(&plan.topology_name));
    Ok(KubeObjects {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(options.namespace.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        },
        services,
        stateful_sets,
    })
}

/// The objects as one multi-document YAML file in apply order: the namespace, the
/// services, the StatefulSets (each with its `apiVersion` and `kind`).
pub fn to_yaml(objects: &KubeObjects) -> Result<String, RuntimeError> {
    fn doc<T: serde::Serialize>(object: &T) -> Result<String, RuntimeError> {
        serde_saphyr::to_string(object).map_err(|e| {
            RuntimeError::Failed(format!("cannot write the Kubernetes objects as YAML: {e}"))
        })
    }
    let mut docs = vec![doc(&objects.namespace)?];
    for s in &objects.services {
        docs.push(doc(s)?);
    }
    for s in &objects.stateful_sets {
        docs.push(doc(s)?);
    }
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(d.strip_prefix("---\n").unwrap_or(&d));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

fn unsupported(reason: String) -> RuntimeError {
    RuntimeError::Unsupported {
        runtime: "kubernetes",
        reason,
    }
}

/// A DNS-1035 label (what a Service name must be): lowercase letters, digits and `-`,
/// starting with a letter, ending with a letter or digit, at most 63 characters.
fn dns_1035(name: &str) -> bool {
    name.len() <= MAX_LABEL
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A DNS-1123 label (what a namespace and a pod's hostname must be): `[a-z0-9-]`, at most
/// 63 characters, not starting or ending with `-`.
pub(crate) fn dns_1123(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check(plan: &RunPlan, options: &ObjectOptions) -> Result<(), RuntimeError> {
    if !dns_1123(&options.namespace) {
        return Err(unsupported(format!(
            "`{}` is not a valid namespace name; use at most {MAX_LABEL} lowercase letters, \
             digits and `-` (not first or last)",
            options.namespace
        )));
    }
    if !plan.nodes.iter().any(|n| n.genesis) {
        return Err(unsupported(
            "the plan has no genesis node to start the network".into(),
        ));
    }
    if options.image.trim().is_empty() {
        return Err(unsupported(
            "the image is empty; name the nodes' image".into(),
        ));
    }
    if !matches!(
        options.pull_policy.as_str(),
        "IfNotPresent" | "Never" | "Always"
    ) {
        return Err(unsupported(format!(
            "`{}` is not an image pull policy; use IfNotPresent, Never or Always",
            options.pull_policy
        )));
    }
    for name in &options.held {
        if !plan.nodes.iter().any(|n| &n.name == name) {
            return Err(unsupported(format!(
                "held node `{name}` is not a node of the plan"
            )));
        }
    }
    // Every pod sits on the one pod network, so nodes the topology keeps on networks that
    // do not meet would reach each other anyway.
    for (i, a) in plan.nodes.iter().enumerate() {
        for b in &plan.nodes[i + 1..] {
            let share = a.networks.is_empty()
                || b.networks.is_empty()
                || a.networks.iter().any(|n| b.networks.contains(n));
            if !share {
                return Err(unsupported(format!(
                    "{} and {} share no network, but every pod of a cluster sits on one pod \
                     network; use --runtime docker for isolated networks",
                    a.name, b.name
                )));
            }
        }
    }
    Ok(())
}

/// The plan's groups in plan order with their nodes, checked to be what one StatefulSet
/// can run: named `<group>-0`, `<group>-1`, ... in order, with one set of node settings and
/// resources, on one host or spread.
fn groups(plan: &RunPlan) -> Result<Vec<(String, Vec<&NodeSpec>)>, RuntimeError> {
    let mut groups: Vec<(String, Vec<&NodeSpec>)> = Vec::new();
    for node in &plan.nodes {
        match groups.iter_mut().find(|(g, _)| *g == node.group) {
            Some((_, nodes)) => nodes.push(node),
            None => groups.push((node.group.clone(), vec![node])),
        }
    }
    for (group, nodes) in &groups {
        if !dns_1035(group) || group.len() > MAX_STATEFUL_SET {
            return Err(unsupported(format!(
                "group `{group}` names a StatefulSet and its Service, which must start with a \
                 letter and hold at most {MAX_STATEFUL_SET} lowercase letters, digits and `-`; \
                 rename the group"
            )));
        }
        let first = nodes[0];
        for (ordinal, node) in nodes.iter().enumerate() {
            let pod = format!("{group}-{ordinal}");
            if node.name != pod {
                return Err(unsupported(format!(
                    "node `{}` would be pod `{pod}` of StatefulSet `{group}`: a StatefulSet \
                     names its pods <name>-0, <name>-1, ..., so a group's nodes must be named so",
                    node.name
                )));
            }
            if !dns_1123(&pod) {
                return Err(unsupported(format!(
                    "pod name `{pod}` is longer than {MAX_LABEL} characters; shorten the group name"
                )));
            }
            if node.node_args != first.node_args
                || node.resources != first.resources
                || node.genesis != first.genesis
            {
                return Err(unsupported(format!(
                    "nodes `{}` and `{}` of group `{group}` differ in settings, but a group is \
                     one StatefulSet of identical pods",
                    first.name, node.name
                )));
            }
        }
    }
    Ok(groups)
}

fn object_labels(plan: &RunPlan, group: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(&plan.run_id, group);
    labels.insert(TOPOLOGY_LABEL.to_string(), label_value(&plan.topology_name));
    labels
}

fn metadata(plan: &RunPlan, options: &ObjectOptions, group: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(group.to_string()),
        namespace: Some(options.namespace.clone()),
        labels: Some(object_labels(plan, group)),
        ..Default::default()
    }
}

fn ports<T>(make: impl Fn(&str, u16) -> T) -> Vec<T> {
    vec![make("peer", PEER_PORT), make("status", STATUS_PORT)]
}

fn service(plan: &RunPlan, options: &ObjectOptions, group: &str) -> Service {
    Service {
        metadata: metadata(plan, options, group),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&plan.run_id, group)),
            ports: Some(ports(|name, port| ServicePort {
                name: Some(name.into()),
                port: i32::from(port),
                target_port: Some(IntOrString::Int(i32::from(port))),
                protocol: Some("TCP".into()),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// `PEERLAB_ADMIN_TOKEN` from key `token` of the Secret [`ADMIN_SECRET`], optional: the
/// runtime creates that Secret with its run's token, an exported file leaves it to the
/// user, and without it the pods start with `/admin/*` off. A Secret rather than a value
/// in the pod template: whoever may read the StatefulSet need not read the token.
fn admin_token_env() -> EnvVar {
    EnvVar {
        name: crate::contract::ADMIN_TOKEN_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: ADMIN_SECRET.into(),
                key: ADMIN_SECRET_KEY.into(),
                optional: Some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Secret of a run's namespace that holds the nodes' admin token; pods read it as
/// `PEERLAB_ADMIN_TOKEN`, optionally (without it, `/admin/*` is off).
pub const ADMIN_SECRET: &str = "peerlab-admin";
/// The key of the token in [`ADMIN_SECRET`].
pub const ADMIN_SECRET_KEY: &str = "token";

/// The Secret holding a run's admin token, created by the runtime in the run's namespace.
pub fn admin_secret(namespace: &str, token: &crate::contract::AdminToken) -> Secret {
    secret(namespace, ADMIN_SECRET, ADMIN_SECRET_KEY, token.expose())
}

/// The Secret of a run's namespace that holds the network key, when the topology asks for
/// one (`network_key:`); pods read it as `PEERLAB_NETWORK_KEY`, and do not start without it.
pub const NETWORK_KEY_SECRET: &str = "peerlab-network-key";
/// The key of the network key in [`NETWORK_KEY_SECRET`].
pub const NETWORK_KEY_SECRET_KEY: &str = "key";

/// The Secret holding a run's network key, created by the runtime in the run's namespace.
pub fn network_key_secret(namespace: &str, key: &crate::contract::NetworkSecret) -> Secret {
    secret(
        namespace,
        NETWORK_KEY_SECRET,
        NETWORK_KEY_SECRET_KEY,
        key.expose(),
    )
}

fn secret(namespace: &str, name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        string_data: Some(std::collections::BTreeMap::from([(
            key.to_string(),
            value.to_string(),
        )])),
        ..Default::default()
    }
}

/// `PEERLAB_NETWORK_KEY` from [`NETWORK_KEY_SECRET`], required: a pod without the key
/// could never join, so Kubernetes holds it (`CreateContainerConfigError`, naming the
/// Secret) until the Secret exists rather than starting a node that only fails.
fn network_key_env() -> EnvVar {
    EnvVar {
        name: crate::contract::NETWORK_KEY_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: NETWORK_KEY_SECRET.into(),
                key: NETWORK_KEY_SECRET_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn env_field(name: &str, field: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The identity variables of a group's pods (see the module docs).
fn environment(
    plan: &RunPlan,
    options: &ObjectOptions,
    group: &str,
    first: &NodeSpec,
    genesis: &[String],
) -> Vec<EnvVar> {
    let mut vars = vec![
        env_field("PEERLAB_NAME", "metadata.name"),
        // Declared before PEERLAB_ADVERTISE, which refers to it: Kubernetes expands
        // `$(VAR)` only from variables defined earlier in the list.
        env_field("POD_IP", "status.podIP"),
        env("PEERLAB_ADVERTISE", format!("$(POD_IP):{PEER_PORT}")),
        env("PEERLAB_LISTEN", format!("0.0.0.0:{PEER_PORT}")),
        env("PEERLAB_STATUS", format!("0.0.0.0:{STATUS_PORT}")),
        env("PEERLAB_GENESIS", genesis.join(",")),
        env("PEERLAB_SEED_BASE", first.seed.to_string()),
        admin_token_env(),
    ];
    if plan.network_key.is_some() {
        vars.push(network_key_env());
    }
    if let Some(held) = hold_value(plan, group, &options.held) {
        vars.push(env(HOLD_ENV, held));
    }
    vars
}

fn http_probe(path: &str) -> Option<HTTPGetAction> {
    Some(HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(i32::from(STATUS_PORT)),
        ..Default::default()
    })
}

/// Resource requests and limits, the same: a node gets what the topology gives it.
fn resources(node: &NodeSpec) -> Option<ResourceRequirements> {
    let r = node.resources?;
    let mut amounts = BTreeMap::new();
    if let Some(cpu) = r.cpu_quantity() {
        amounts.insert("cpu".to_string(), Quantity(cpu));
    }
    if let Some(memory) = r.memory_quantity() {
        amounts.insert("memory".to_string(), Quantity(memory));
    }
    Some(ResourceRequirements {
        limits: Some(amounts.clone()),
        requests: Some(amounts),
        ..Default::default()
    })
}

/// Where a group's pods may run: a `nodeSelector` when all its nodes are on one host of
/// the topology; `None` without hosts or when the group is spread over several.
fn node_selector(plan: &RunPlan, nodes: &[&NodeSpec]) -> Option<BTreeMap<String, String>> {
    let host = nodes[0].host.as_deref()?;
    if nodes.iter().any(|n| n.host.as_deref() != Some(host)) {
        return None;
    }
    let value = plan
        .hosts
        .iter()
        .find(|h| h.name == host)
        .and_then(|h| h.label.clone())
        .unwrap_or_else(|| host.to_string());
    Some(BTreeMap::from([(
        HOST_LABEL.to_string(),
        label_value(&value),
    )]))
}

fn stateful_set(
    plan: &RunPlan,
    options: &ObjectOptions,
    group: &str,
    nodes: &[&NodeSpec],
    genesis: &[String],
) -> StatefulSet {
    let first = nodes[0];
    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(options.image.clone()),
        image_pull_policy: Some(options.pull_policy.clone()),
        // The image's entrypoint is `peerlab node`; the topology's settings are its flags.
        args: Some(first.node_args.clone()),
        env: Some(environment(plan, options, group, first, genesis)),
        ports: Some(ports(|name, port| ContainerPort {
            name: Some(name.into()),
            container_port: i32::from(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        })),
        readiness_probe: Some(Probe {
            http_get: http_probe("/ready"),
            period_seconds: Some(2),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        // What `peerlab health --live` asks: the node's loop answers, joined or not (a held
        // node answers it too, so it is not restarted while held).
        liveness_probe: Some(Probe {
            http_get: http_probe("/live"),
            initial_delay_seconds: Some(30),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        resources: resources(first),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        // The run's own variables only: no `<SERVICE>_PORT_...` for every group's Service.
        enable_service_links: Some(false),
        // A node floods its leave on SIGTERM within a second or two.
        termination_grace_period_seconds: Some(10),
        node_selector: node_selector(plan, nodes),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: HOSTNAME_TOPOLOGY_KEY.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&plan.run_id, group)),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    StatefulSet {
        metadata: metadata(plan, options, group),
        spec: Some(StatefulSetSpec {
            service_name: Some(group.to_string()),
            replicas: Some(i32::try_from(nodes.len()).unwrap_or(i32::MAX)),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&plan.run_id, group)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(object_labels(plan, group)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::{HostSpec, NodeResources};

    fn node(name: &str, group: &str, seed: u64) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            group: group.into(),
            genesis: group == "genesis",
            networks: vec![],
            start_after: Duration::ZERO,
            node_args: vec!["--degree".into(), "2".into()],
            seed,
            host: None,
            resources: None,
        }
    }

    fn plan(nodes: Vec<NodeSpec>) -> RunPlan {
        RunPlan {
            run_id: "demo-0a0b0c".into(),
            run_dir: "/tmp/unused".into(),
            topology_name: "demo".into(),
            image: "peerlab:0.1.0".into(),
            networks: vec![],
            nodes,
            hosts: vec![],
            detach: false,
            admin_token: crate::contract::AdminToken::generate(),
            network_key: None,
        }
    }

    /// genesis-0, genesis-1, peers-0..2.
    fn two_groups() -> RunPlan {
        plan(vec![
            node("genesis-0", "genesis", 11),
            node("genesis-1", "genesis", 12),
            node("peers-0", "peers", 13),
            node("peers-1", "peers", 14),
            node("peers-2", "peers", 15),
        ])
    }

    fn options() -> ObjectOptions {
        ObjectOptions::new("peerlab-demo-0a0b0c", "peerlab:test-1")
    }

    fn pod_spec(set: &StatefulSet) -> &PodSpec {
        set.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn container(set: &StatefulSet) -> &Container {
        &pod_spec(set).containers[0]
    }

    fn env_of<'a>(set: &'a StatefulSet, name: &str) -> Option<&'a EnvVar> {
        container(set).env.as_ref()?.iter().find(|e| e.name == name)
    }

    fn value_of(set: &StatefulSet, name: &str) -> Option<String> {
        env_of(set, name).and_then(|e| e.value.clone())
    }

    #[test]
    fn one_stateful_set_and_headless_service_per_group_whose_pods_are_the_plan_nodes() {
        let p = two_groups();
        let objects = build(&p, &options()).expect("objects");
        let names: Vec<&str> = objects
            .stateful_sets
            .iter()
            .map(|s| s.metadata.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(names, ["genesis", "peers"]);
        let service_names: Vec<&str> = objects
            .services
            .iter()
            .map(|s| s.metadata.name.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(service_names, names);
        // A StatefulSet names its pods <name>-<ordinal> from 0: exactly the plan's names.
        let mut pods = Vec::new();
        for set in &objects.stateful_sets {
            let spec = set.spec.as_ref().expect("spec");
            let name = set.metadata.name.clone().unwrap_or_default();
            assert_eq!(spec.service_name.as_deref(), Some(name.as_str()));
            assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
            assert_eq!(
                spec.update_strategy
                    .as_ref()
                    .and_then(|u| u.type_.as_deref()),
                Some("OnDelete")
            );
            let selector = spec.selector.match_labels.as_ref().expect("selector");
            let template = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref());
            for (k, v) in selector {
                assert_eq!(
                    template.and_then(|t| t.get(k)),
                    Some(v),
                    "template matches {k}"
                );
            }
            for ordinal in 0..spec.replicas.unwrap_or(0) {
                pods.push(format!("{name}-{ordinal}"));
            }
        }
        let planned: Vec<String> = p.nodes.iter().map(|n| n.name.clone()).collect();
        assert_eq!(pods, planned);
        assert_eq!(stateful_set_of(&p, "peers-2"), Some(("peers", 2)));
        assert_eq!(stateful_set_of(&p, "genesis-0"), Some(("genesis", 0)));
        assert_eq!(stateful_set_of(&p, "peers-9"), None);
        for service in &objects.services {
            let spec = service.spec.as_ref().expect("spec");
            assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
            assert_eq!(spec.publish_not_ready_addresses, Some(true));
            let group = service.metadata.name.clone().unwrap_or_default();
            assert_eq!(
                spec.selector.as_ref(),
                Some(&selector_labels("demo-0a0b0c", &group))
            );
        }
    }

    #[test]
    fn the_network_key_comes_from_a_required_secret_only_when_the_run_has_one() {
        let secret_ref = |set: &StatefulSet| {
            env_of(set, "PEERLAB_NETWORK_KEY")
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.clone())
        };
        let plain = build(&two_groups(), &options()).expect("objects");
        assert!(plain.stateful_sets.iter().all(|s| secret_ref(s).is_none()));

        let key = crate::contract::NetworkSecret::generate();
        let keyed_plan = RunPlan {
            network_key: Some(key.clone()),
            ..two_groups()
        };
        let keyed = build(&keyed_plan, &options()).expect("objects");
        for set in &keyed.stateful_sets {
            let found = secret_ref(set).expect("PEERLAB_NETWORK_KEY from a Secret");
            assert_eq!(found.name, NETWORK_KEY_SECRET);
            assert_eq!(found.key, NETWORK_KEY_SECRET_KEY);
            assert_eq!(found.optional, Some(false), "no pod starts without it");
        }
        // The key is in the Secret the runtime creates, never in the objects themselves.
        let yaml = to_yaml(&keyed).expect("yaml");
        assert!(!yaml.contains(key.expose()));
        let secret = network_key_secret("ns", &key);
        assert_eq!(
            secret.string_data.expect("data")[NETWORK_KEY_SECRET_KEY],
            key.expose()
        );
    }

    #[test]
    fn identity_comes_from_the_pod_and_every_node_knows_every_genesis_by_dns() {
        let objects = build(&two_groups(), &options()).expect("objects");
        let [genesis, peers] = &objects.stateful_sets[..] else {
            panic!("two StatefulSets");
        };
        let field = |set: &StatefulSet, name: &str| {
            env_of(set, name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.clone())
        };
        for set in [genesis, peers] {
            assert_eq!(field(set, "PEERLAB_NAME").as_deref(), Some("metadata.name"));
            assert_eq!(field(set, "POD_IP").as_deref(), Some("status.podIP"));
            assert_eq!(
                value_of(set, "PEERLAB_ADVERTISE").as_deref(),
                Some("$(POD_IP):7070")
            );
            // `$(POD_IP)` expands only from a variable defined before it.
            let names: Vec<&str> = container(set)
                .env
                .iter()
                .flatten()
                .map(|e| e.name.as_str())
                .collect();
            let at = |n: &str| names.iter().position(|x| *x == n);
            assert!(at("POD_IP") < at("PEERLAB_ADVERTISE"), "{names:?}");
            assert_eq!(
                value_of(set, "PEERLAB_GENESIS").as_deref(),
                Some(
                    "genesis-0.genesis.peerlab-demo-0a0b0c.svc.cluster.local:7070,\
                     genesis-1.genesis.peerlab-demo-0a0b0c.svc.cluster.local:7070"
                )
            );
            assert_eq!(
                value_of(set, "PEERLAB_LISTEN").as_deref(),
                Some("0.0.0.0:7070")
            );
            assert_eq!(
                value_of(set, "PEERLAB_STATUS").as_deref(),
                Some("0.0.0.0:7071")
            );
            assert!(env_of(set, HOLD_ENV).is_none(), "nothing held, no variable");
            assert_eq!(
                container(set).args.as_deref(),
                Some(&["--degree".to_string(), "2".to_string()][..])
            );
            assert_eq!(container(set).image.as_deref(), Some("peerlab:test-1"));
            assert_eq!(
                container(set).image_pull_policy.as_deref(),
                Some("IfNotPresent")
            );
        }
        // The seed base is the group's first node's seed: per-pod seeds are derived from the
        // topology seed, and the groups' bases differ.
        assert_eq!(
            value_of(genesis, "PEERLAB_SEED_BASE").as_deref(),
            Some("11")
        );
        assert_eq!(value_of(peers, "PEERLAB_SEED_BASE").as_deref(), Some("13"));
        let mut never = options();
        never.pull_policy = "Never".into();
        let objects = build(&two_groups(), &never).expect("objects");
        assert_eq!(
            container(&objects.stateful_sets[0])
                .image_pull_policy
                .as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn probes_read_the_status_socket_and_never_kill_a_joining_node_early() {
        let objects = build(&two_groups(), &options()).expect("objects");
        for set in &objects.stateful_sets {
            let c = container(set);
            let ready = c.readiness_probe.as_ref().expect("readiness");
            let get = ready.http_get.as_ref().expect("httpGet");
            assert_eq!(get.path.as_deref(), Some("/ready"));
            assert_eq!(get.port, IntOrString::Int(7071));
            let live = c.liveness_probe.as_ref().expect("liveness");
            let get = live.http_get.as_ref().expect("httpGet");
            assert_eq!(get.path.as_deref(), Some("/live"));
            assert_eq!(get.port, IntOrString::Int(7071));
            assert_eq!(live.period_seconds, Some(10));
            assert_eq!(live.failure_threshold, Some(6));
            let grace = live.initial_delay_seconds.unwrap_or(0)
                + live.period_seconds.unwrap_or(10) * live.failure_threshold.unwrap_or(3);
            assert!(grace >= 90, "{grace}s before the first restart");
        }
    }

    #[test]
    fn held_nodes_are_listed_sorted_in_their_own_group_only() {
        let mut o = options();
        o.held = BTreeSet::from(["peers-2".to_string(), "peers-0".to_string()]);
        let objects = build(&two_groups(), &o).expect("objects");
        assert!(env_of(&objects.stateful_sets[0], HOLD_ENV).is_none());
        assert_eq!(
            value_of(&objects.stateful_sets[1], HOLD_ENV).as_deref(),
            Some("peers-0,peers-2")
        );
        o.held.insert("genesis-1".into());
        let objects = build(&two_groups(), &o).expect("objects");
        assert_eq!(
            value_of(&objects.stateful_sets[0], HOLD_ENV).as_deref(),
            Some("genesis-1")
        );
        o.held.insert("ghost-0".into());
        let err = build(&two_groups(), &o)
            .expect_err("unknown node")
            .to_string();
        assert!(err.contains("ghost-0"), "{err}");
    }

    #[test]
    fn resources_are_requests_and_limits_alike() {
        let mut p = two_groups();
        for n in p.nodes.iter_mut().filter(|n| n.group == "peers") {
            n.resources = Some(NodeResources {
                cpu_millis: Some(250),
                memory_bytes: Some(64 << 20),
            });
        }
        let objects = build(&p, &options()).expect("objects");
        assert!(container(&objects.stateful_sets[0]).resources.is_none());
        let r = container(&objects.stateful_sets[1])
            .resources
            .as_ref()
            .expect("resources");
        let limits = r.limits.as_ref().expect("limits");
        assert_eq!(limits.get("cpu"), Some(&Quantity("250m".into())));
        assert_eq!(limits.get("memory"), Some(&Quantity("64Mi".into())));
        assert_eq!(r.requests.as_ref(), Some(limits));
        // A group's nodes share one template: different limits inside a group are refused.
        p.nodes[4].resources = None;
        let err = build(&p, &options()).expect_err("mixed").to_string();
        assert!(err.contains("peers-2"), "{err}");
    }

    #[test]
    fn a_group_on_one_host_is_pinned_by_label_and_every_group_is_spread() {
        let mut p = two_groups();
        p.hosts = vec![
            HostSpec {
                name: "a".into(),
                label: None,
                links: Default::default(),
            },
            HostSpec {
                name: "b".into(),
                label: Some("h2".into()),
                links: Default::default(),
            },
        ];
        for n in p.nodes.iter_mut() {
            n.host = Some(if n.genesis { "b" } else { "a" }.into());
        }
        // peers-1 on another host: the group is spread, so it cannot be pinned.
        let mut spread = p.clone();
        spread.nodes[3].host = Some("b".into());
        let objects = build(&p, &options()).expect("objects");
        let selector = |set: &StatefulSet| pod_spec(set).node_selector.clone();
        assert_eq!(
            selector(&objects.stateful_sets[0]),
            Some(BTreeMap::from([(
                "peerlab.host".to_string(),
                "h2".to_string()
            )]))
        );
        assert_eq!(
            selector(&objects.stateful_sets[1]),
            Some(BTreeMap::from([(
                "peerlab.host".to_string(),
                "a".to_string()
            )]))
        );
        let objects = build(&spread, &options()).expect("objects");
        assert_eq!(selector(&objects.stateful_sets[1]), None);
        let objects = build(&two_groups(), &options()).expect("objects");
        for set in &objects.stateful_sets {
            assert_eq!(pod_spec(set).node_selector, None);
            let spread = &pod_spec(set)
                .topology_spread_constraints
                .as_ref()
                .expect("spread")[0];
            assert_eq!(spread.topology_key, "kubernetes.io/hostname");
            assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway");
            let group = set.metadata.name.clone().unwrap_or_default();
            assert_eq!(
                spread
                    .label_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref()),
                Some(&selector_labels("demo-0a0b0c", &group))
            );
        }
    }

    #[test]
    fn every_object_carries_the_run_group_and_topology_labels() {
        let mut p = two_groups();
        p.topology_name = "Demo Topology!".into();
        let objects = build(&p, &options()).expect("objects");
        let ns = objects.namespace.metadata.labels.as_ref().expect("labels");
        assert_eq!(ns.get(RUN_LABEL).map(String::as_str), Some("demo-0a0b0c"));
        assert_eq!(
            ns.get(TOPOLOGY_LABEL).map(String::as_str),
            Some("Demo-Topology")
        );
        assert_eq!(
            objects.namespace.metadata.name.as_deref(),
            Some("peerlab-demo-0a0b0c")
        );
        let metas = objects
            .services
            .iter()
            .map(|s| &s.metadata)
            .chain(objects.stateful_sets.iter().map(|s| &s.metadata));
        for meta in metas {
            let labels = meta.labels.as_ref().expect("labels");
            let name = meta.name.clone().unwrap_or_default();
            assert_eq!(
                labels.get(RUN_LABEL).map(String::as_str),
                Some("demo-0a0b0c")
            );
            assert_eq!(labels.get(GROUP_LABEL), Some(&name));
            assert_eq!(
                labels.get(TOPOLOGY_LABEL).map(String::as_str),
                Some("Demo-Topology")
            );
            assert_eq!(meta.namespace.as_deref(), Some("peerlab-demo-0a0b0c"));
        }
    }

    #[test]
    fn namespaces_are_dns_labels_named_after_the_run() {
        assert_eq!(
            namespace_for("quickstart-1a2b3c"),
            "peerlab-quickstart-1a2b3c"
        );
        assert_eq!(namespace_for("My_Run.1"), "peerlab-my-run-1");
        assert_eq!(namespace_for("--x--"), "peerlab-x");
        assert_eq!(namespace_for(""), "peerlab-run");
        let long_a = format!("{}-a", "x".repeat(80));
        let long_b = format!("{}-b", "x".repeat(80));
        for id in [&long_a, &long_b, &"y-".repeat(40)] {
            let ns = namespace_for(id);
            assert!(dns_1123(&ns), "{ns}");
            assert!(ns.starts_with(NAMESPACE_PREFIX), "{ns}");
        }
        assert_ne!(namespace_for(&long_a), namespace_for(&long_b));
        assert_eq!(namespace_for(&long_a), namespace_for(&long_a));
        assert_eq!(label_value("a b/c"), "a-b-c");
        assert_eq!(label_value(&"z".repeat(70)).len(), 63);
        assert_eq!(label_value("-_x_-"), "x");
    }

    #[test]
    fn yaml_has_one_document_per_object_in_apply_order() {
        let objects = build(&two_groups(), &options()).expect("objects");
        let yaml = to_yaml(&objects).expect("yaml");
        let docs: Vec<&str> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .collect();
        assert_eq!(docs.len(), 5, "{yaml}");
        let kinds: Vec<(String, String)> = docs
            .iter()
            .map(|d| {
                let v: serde_json::Value = serde_saphyr::from_str(d).expect("a YAML document");
                (
                    v["apiVersion"].as_str().unwrap_or("").to_string(),
                    v["kind"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let expected = [
            ("v1", "Namespace"),
            ("v1", "Service"),
            ("v1", "Service"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "StatefulSet"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, k)| (a.to_string(), k.to_string()))
            .collect();
        assert_eq!(kinds, expected);
        // Round trip: the documents are the objects, values that look like numbers included.
        let back: StatefulSet = serde_saphyr::from_str(docs[4]).expect("a StatefulSet");
        assert_eq!(back, objects.stateful_sets[1]);
    }

    #[test]
    fn plans_a_cluster_cannot_run_as_planned_are_refused() {
        let refused =
            |p: &RunPlan, o: &ObjectOptions| build(p, o).expect_err("refused").to_string();
        let mut digit = two_groups();
        for n in digit.nodes.iter_mut().filter(|n| n.group == "peers") {
            n.group = "1st".into();
            n.name = n.name.replace("peers", "1st");
        }
        assert!(refused(&digit, &options()).contains("`1st`"));
        let mut apart = two_groups();
        apart.nodes[0].networks = vec!["a".into()];
        apart.nodes[2].networks = vec!["b".into()];
        assert!(refused(&apart, &options()).contains("share no network"));
        let mut settings = two_groups();
        settings.nodes[3].node_args = vec!["--degree".into(), "3".into()];
        assert!(refused(&settings, &options()).contains("differ in settings"));
        let bad_ns = ObjectOptions::new("Not_A_Namespace", "peerlab:x");
        assert!(refused(&two_groups(), &bad_ns).contains("namespace"));
        let no_genesis = plan(vec![node("peers-0", "peers", 1)]);
        assert!(refused(&no_genesis, &options()).contains("genesis"));
        let mut gap = two_groups();
        gap.nodes[4].name = "peers-7".into();
        assert!(refused(&gap, &options()).contains("peers-7"));
    }
}
