//! Export a run plan as a Docker Swarm stack file, for `peerlab compose --stack` and
//! `docker stack deploy --resolve-image never`.
//!
//! The file follows the Compose Specification (checked against its JSON Schema in the
//! tests) and what `docker stack deploy` accepts; it differs from the plain
//! [`compose`](super::compose) form where Swarm differs from one engine:
//!
//! - **One service per genesis node, one per peer group.** A group is one service with
//!   `replicas` = its count, so scaling a group is `docker service scale`. Genesis nodes keep
//!   their plan names (`genesis-0`), which the peers join through.
//! - **Per-replica identity from templates.** Swarm expands `{{.Task.Slot}}` in `hostname` and
//!   `environment`, not in `command` (moby#33364), so a replica's name, advertised address
//!   and seed come through `PEERLAB_NAME`, `PEERLAB_ADVERTISE` and `PEERLAB_SEED`, and the
//!   group's node settings through `command`. Replicas are named `<group>-<slot>`: slots
//!   count from 1, so a stack's `peers-1`..`peers-4` are a run's `peers-0`..`peers-3`.
//! - **Advertised by name.** Every node advertises its hostname, which Swarm adds as a DNS
//!   alias of the task on each of its networks, resolvable from every host of the swarm once
//!   the task runs (or is healthy, with a healthcheck; see below). Never an address the
//!   node reads from its interfaces: every task also sits on `docker_gwbridge` with the
//!   same address in every container.
//! - **No healthcheck** (`healthcheck: {disable: true}`, overriding the image's). Swarm
//!   kills an unhealthy task and keeps it out of the overlay's DNS until healthy, and a
//!   healthcheck is an exec in the container: measured on the three-host lab with 100
//!   nodes, readiness checks killed nodes still joining, and liveness checks every second
//!   (100 execs a second on 2 cores) timed out and killed them too. Whether the network
//!   formed is what `peerlab check` answers, from inside the overlay.
//! - **`endpoint_mode: dnsrr`** everywhere: no virtual IP (hosts without IPVS cannot serve
//!   one), the service name and `tasks.<service>` resolve to every task. Every node also
//!   carries the network alias [`NODES_ALIAS`], so `tasks.peerlab-nodes` names the whole
//!   network at once (what `peerlab check --dns` wants) when the stack has one network; Docker's
//!   DNS answers a name from one of a container's networks only, so across several the
//!   header's check names every service instead.
//! - **Overlay networks** (`driver: overlay`, `attachable: true`, so a one-shot checker or a
//!   user's container can join them) with an explicit subnet: the topology's, or one sized
//!   for the nodes on it carved from [`DEFAULT_POOL`] (Swarm's default /24 holds about 250
//!   tasks).
//! - **Placement** by the swarm node label [`HOST_LABEL`], from the topology's `hosts:`: a
//!   node on host `b` (whose `label` is `h2`, else its name) runs where `node.labels.peerlab.host
//!   == h2`. A group on one host is one service pinned there; a group spread over several hosts
//!   is one service per host, `<group>-<host>`, so each host runs exactly its nodes. A
//!   `--place GROUP=HOST` ([`StackOptions::placement`]) overrides a group's placement: pinned
//!   to that label value, or with `*` spread evenly over the label's values ([`Placement`]).
//!   Links between hosts are not emulated: on a swarm the hosts' own network is the link.
//! - **No published ports**: Swarm refuses them with `dnsrr` (and its routing mesh needs
//!   IPVS). Status sockets are read from inside the overlay.
//! - **No start order**: Swarm has no `depends_on`; a peer retries its join until the
//!   genesis answers, and a node is in Swarm's DNS once its task runs. Start delays are
//!   refused or dropped as in the compose form.

use std::collections::BTreeMap;

use serde::Serialize;

use super::compose::{ExportOptions, Ordered, check, unsupported};
use crate::runtime::container::{STATUS_PORT, identity_env, node_networks, overlay_subnets};
use crate::runtime::{NODE_LABEL, NodeSpec, RUN_LABEL, RunPlan, RuntimeError};

pub use crate::runtime::container::{DEFAULT_POOL, GROUP_LABEL, HOST_LABEL, NODES_ALIAS};

/// Where the replicas of a service may run, by the swarm node label [`HOST_LABEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Only on swarm nodes whose [`HOST_LABEL`] is this value.
    Host(String),
    /// Spread evenly over the values of [`HOST_LABEL`] (Swarm's spread preference).
    Spread,
}

impl Placement {
    /// `HOST` pins to a host, `*` spreads (the value of `peerlab compose --place GROUP=...`).
    pub fn parse(text: &str) -> Result<Placement, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Placement::Spread);
        }
        let valid = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(Placement::Host(text.to_string()))
        } else {
            Err(format!(
                "`{text}` is not a host label value: use letters, digits, `.`, `_` and `-`, or `*` to spread"
            ))
        }
    }
}

/// `GROUP=HOST` or `GROUP=*` (a `--place` flag) as a group and its placement.
pub fn parse_place(text: &str) -> Result<(String, Placement), String> {
    let Some((group, place)) = text.split_once('=') else {
        return Err(format!(
            "`{text}`: expected GROUP=HOST (pin the group to the swarm nodes labelled \
             {HOST_LABEL}=HOST) or GROUP=* (spread it over them)"
        ));
    };
    let group = group.trim();
    if group.is_empty() {
        return Err(format!("`{text}`: the group name is empty"));
    }
    Ok((group.to_string(), Placement::parse(place)?))
}

/// Choices of the stack form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackOptions {
    /// What compose cannot express, as in the plain form (start delays).
    pub compose: ExportOptions,
    /// Placement of groups by group name (`genesis` places every genesis node), over the
    /// topology's hosts. Groups not named here are placed by the topology's hosts, or run
    /// wherever Swarm schedules them when it has none.
    pub placement: Vec<(String, Placement)>,
}

/// Export `plan` as a Swarm stack file (see the module docs).
pub fn export(plan: &RunPlan, options: &StackOptions) -> Result<String, RuntimeError> {
    check(plan, options.compose)?;
    let services = services(plan, options)?;
    let networks = networks(plan)?;
    let expected = plan.nodes.len();
    let stack = &plan.topology_name;
    // The checker joins every network, so it reaches nodes that share none with the first.
    let attach: Vec<String> = networks
        .iter()
        .map(|n| format!("--network {stack}_{}", n.0))
        .collect();
    let attach = attach.join(" ");
    // Docker's DNS answers a name from the first of a container's networks that knows it:
    // across several networks, the alias of every node names only one network's nodes.
    let dns = if networks.len() > 1 {
        let names: Vec<String> = services
            .iter()
            .map(|s| format!("tasks.{}", s.name))
            .collect();
        names.join(",")
    } else {
        format!("tasks.{NODES_ALIAS}")
    };
    let file = StackFile {
        services: Ordered(services.into_iter().map(|n| (n.name, n.service)).collect()),
        networks: Ordered(networks),
    };
    let yaml = serde_saphyr::to_string(&file)
        .map_err(|e| RuntimeError::Failed(format!("cannot write the stack file: {e}")))?;
    let links = if plan.hosts.iter().any(|h| !h.links.is_empty()) {
        "# The topology's links between hosts (latency, loss, bandwidth) are not emulated: on a\n\
         # swarm the hosts' own network is the link.\n"
    } else {
        ""
    };
    let dropped = if plan.nodes.iter().any(|n| !n.start_after.is_zero()) {
        "# Start delays (stagger, start_delay) are dropped: Swarm cannot delay a start; peers\n\
         # retry their join until a genesis node answers.\n"
    } else {
        ""
    };
    Ok(format!(
        "# Swarm stack for topology `{topology}` (run {run}, {expected} nodes), written by `peerlab compose --stack`.\n\
         # Deploy (from a manager):  docker stack deploy --resolve-image never -c FILE {stack}\n\
         # Every swarm node needs the image {image} (`docker save {image} | docker -H NODE load`\n\
         # without a registry). Nodes are named <group>-<slot>, slots counting from 1.\n\
         # Check it from inside the overlay (status sockets are not published):\n\
         #   docker service create --name {stack}-check {attach} --restart-condition none \\\n\
         #     --no-resolve-image --no-healthcheck --entrypoint /peerlab {image} \\\n\
         #     check --dns {dns} --status-port {STATUS_PORT} --expect-nodes {expected}\n\
         #   docker service logs {stack}-check\n\
         {admin}{links}{dropped}{yaml}",
        admin = super::secrets_header(plan),
        topology = plan.topology_name,
        run = plan.run_id,
        image = plan.image,
    ))
}

/// One service of the stack and its name.
struct Named {
    name: String,
    service: Service,
}

fn services(plan: &RunPlan, options: &StackOptions) -> Result<Vec<Named>, RuntimeError> {
    for (group, _) in &options.placement {
        if !plan.nodes.iter().any(|n| &n.group == group) {
            let mut groups: Vec<&str> = plan.nodes.iter().map(|n| n.group.as_str()).collect();
            groups.dedup();
            return Err(unsupported(format!(
                "--place names group `{group}`, which has no nodes in the topology (groups: {})",
                groups.join(", ")
            )));
        }
    }
    let chosen = |group: &str| {
        options
            .placement
            .iter()
            .rev()
            .find(|(g, _)| g == group)
            .map(|(_, p)| p.clone())
    };
    // A topology host maps to the swarm nodes labelled with its `label`, else its name.
    let on_host = |host: &str| {
        let label = plan
            .hosts
            .iter()
            .find(|h| h.name == host)
            .and_then(|h| h.label.clone());
        Placement::Host(label.unwrap_or_else(|| host.to_string()))
    };
    let genesis: Vec<&NodeSpec> = plan.nodes.iter().filter(|n| n.genesis).collect();
    let mut out = Vec::new();
    for (i, node) in genesis.iter().enumerate() {
        let targets: Vec<&str> = genesis[..i].iter().map(|g| g.name.as_str()).collect();
        let env = identity(
            plan,
            &node.name,
            &node.name,
            &targets,
            node.seed.to_string(),
        );
        let placement = chosen(&node.group).or_else(|| node.host.as_deref().map(on_host));
        out.push(Named {
            name: node.name.clone(),
            service: service(plan, node, node.name.clone(), env, 1, placement),
        });
    }
    let all_genesis: Vec<&str> = genesis.iter().map(|g| g.name.as_str()).collect();
    for (group, nodes) in peer_groups(plan)? {
        for (name, nodes, placement) in split_by_host(group, nodes, chosen(group), &on_host) {
            let first = nodes[0];
            let hostname = format!("{name}-{{{{.Task.Slot}}}}");
            // No arithmetic in Swarm templates: the slot in front of the first node's seed
            // (12 digits) gives every replica its own seed, the same in every deploy.
            let seed = format!("{{{{.Task.Slot}}}}{:012}", first.seed % 1_000_000_000_000);
            let env = identity(plan, &hostname, &hostname, &all_genesis, seed);
            out.push(Named {
                name,
                service: service(plan, first, hostname, env, nodes.len(), placement),
            });
        }
    }
    check_names(&out, &genesis)?;
    Ok(out)
}

/// The services of one peer group: the group itself when `chosen` (its `--place`) says
/// where it goes or when its nodes share one host (or none); else one service per host its
/// nodes are placed on (a group spread over hosts), named `<group>-<host>` and pinned there,
/// so each host runs exactly the nodes the topology puts on it.
fn split_by_host<'a>(
    group: &str,
    nodes: Vec<&'a NodeSpec>,
    chosen: Option<Placement>,
    on_host: &dyn Fn(&str) -> Placement,
) -> Vec<(String, Vec<&'a NodeSpec>, Option<Placement>)> {
    let mut hosts: Vec<(Option<&str>, Vec<&'a NodeSpec>)> = Vec::new();
    for node in &nodes {
        let host = node.host.as_deref();
        match hosts.iter_mut().find(|(h, _)| *h == host) {
            Some((_, on)) => on.push(node),
            None => hosts.push((host, vec![node])),
        }
    }
    if chosen.is_some() || hosts.len() <= 1 {
        let placement = chosen.or_else(|| nodes[0].host.as_deref().map(on_host));
        return vec![(group.to_string(), nodes, placement)];
    }
    hosts
        .into_iter()
        .map(|(host, on)| match host {
            Some(host) => (format!("{group}-{host}"), on, Some(on_host(host))),
            None => (group.to_string(), on, None),
        })
        .collect()
}

/// Peer groups in plan order with their nodes; a group is one service, so its nodes must
/// share their settings and networks (the plan builds them so).
fn peer_groups(plan: &RunPlan) -> Result<Vec<(&str, Vec<&NodeSpec>)>, RuntimeError> {
    let mut groups: Vec<(&str, Vec<&NodeSpec>)> = Vec::new();
    for node in plan.nodes.iter().filter(|n| !n.genesis) {
        match groups.iter_mut().find(|(g, _)| *g == node.group) {
            Some((_, nodes)) => {
                let first = nodes[0];
                if first.node_args != node.node_args || first.networks != node.networks {
                    return Err(unsupported(format!(
                        "nodes `{}` and `{}` of group `{}` differ in settings or networks, \
                         but a group is one service of identical replicas in a stack",
                        first.name, node.name, node.group
                    )));
                }
                nodes.push(node);
            }
            None => groups.push((&node.group, vec![node])),
        }
    }
    Ok(groups)
}

/// `PEERLAB_*` variables that make a task a node (shared with the swarm runtime).
/// The secrets come from the deploying shell ([`super::secrets_env`]).
fn identity(
    plan: &RunPlan,
    name: &str,
    host: &str,
    genesis: &[&str],
    seed: String,
) -> Ordered<String> {
    let mut env = identity_env(name, host, genesis, seed);
    env.extend(super::secrets_env(plan));
    Ordered(env)
}

fn service(
    plan: &RunPlan,
    node: &NodeSpec,
    hostname: String,
    environment: Ordered<String>,
    replicas: usize,
    placement: Option<Placement>,
) -> Service {
    let mut labels = vec![(RUN_LABEL.to_string(), plan.run_id.clone())];
    if node.genesis {
        labels.push((NODE_LABEL.to_string(), node.name.clone()));
    }
    labels.push((GROUP_LABEL.to_string(), node.group.clone()));
    let deploy_labels = vec![
        (RUN_LABEL.to_string(), plan.run_id.clone()),
        (GROUP_LABEL.to_string(), node.group.clone()),
    ];
    let networks = node_networks(node)
        .into_iter()
        .map(|n| {
            (
                n,
                ServiceNetwork {
                    aliases: vec![NODES_ALIAS.to_string()],
                },
            )
        })
        .collect();
    Service {
        image: plan.image.clone(),
        hostname,
        command: node.node_args.clone(),
        environment,
        labels: Ordered(labels),
        networks: Ordered(networks),
        healthcheck: NoHealthcheck { disable: true },
        deploy: Deploy {
            mode: "replicated",
            replicas,
            endpoint_mode: "dnsrr",
            labels: Ordered(deploy_labels),
            restart_policy: RestartPolicy {
                condition: "on-failure",
                delay: "1s",
                max_attempts: 3,
            },
            resources: node.resources.map(|r| Resources {
                limits: Limits {
                    cpus: r.cpus_text(),
                    memory: r.memory_text(),
                },
            }),
            placement: placement.map(|p| match p {
                Placement::Host(host) => PlacementSpec {
                    constraints: vec![format!("node.labels.{HOST_LABEL} == {host}")],
                    preferences: vec![],
                },
                Placement::Spread => PlacementSpec {
                    constraints: vec![],
                    preferences: vec![Preference {
                        spread: format!("node.labels.{HOST_LABEL}"),
                    }],
                },
            }),
        },
    }
}

/// Service names, hostnames and the nodes alias share the overlay's DNS: each must name one
/// thing (group `a` slot 1 is `a-1`, which a group `a-1` would also claim).
fn check_names(services: &[Named], genesis: &[&NodeSpec]) -> Result<(), RuntimeError> {
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    claimed.insert(
        NODES_ALIAS.to_string(),
        "the alias of every node".to_string(),
    );
    let mut claim = |name: String, by: String| match claimed.get(&name) {
        Some(other) if *other != by => Err(unsupported(format!(
            "`{name}` would name both {other} and {by} in the stack's DNS; rename a group"
        ))),
        _ => {
            claimed.insert(name, by);
            Ok(())
        }
    };
    for node in genesis {
        claim(node.name.clone(), format!("genesis node `{}`", node.name))?;
    }
    let groups = services
        .iter()
        .filter(|s| !genesis.iter().any(|g| g.name == s.name));
    for s in groups {
        let by = format!("group `{}`", s.name);
        claim(s.name.clone(), by.clone())?;
        for slot in 1..=s.service.deploy.replicas {
            claim(format!("{}-{slot}", s.name), by.clone())?;
        }
    }
    Ok(())
}

/// The stack's networks with their subnets: the topology's, else sized for their nodes
/// (shared with the swarm runtime: [`overlay_subnets`]).
fn networks(plan: &RunPlan) -> Result<Vec<(String, Network)>, RuntimeError> {
    Ok(overlay_subnets(plan)
        .map_err(unsupported)?
        .into_iter()
        .map(|(name, subnet)| {
            (
                name,
                Network {
                    driver: "overlay",
                    attachable: true,
                    labels: Ordered(vec![(RUN_LABEL.to_string(), plan.run_id.clone())]),
                    ipam: Ipam {
                        config: vec![IpamConfig {
                            subnet: subnet.to_string(),
                        }],
                    },
                },
            )
        })
        .collect())
}

#[derive(Serialize)]
struct StackFile {
    services: Ordered<Service>,
    networks: Ordered<Network>,
}

#[derive(Serialize)]
struct Service {
    image: String,
    hostname: String,
    command: Vec<String>,
    environment: Ordered<String>,
    labels: Ordered<String>,
    networks: Ordered<ServiceNetwork>,
    healthcheck: NoHealthcheck,
    deploy: Deploy,
}

/// `healthcheck: {disable: true}`: see the module docs for why a stack's nodes have none.
#[derive(Serialize)]
struct NoHealthcheck {
    disable: bool,
}

#[derive(Serialize)]
struct ServiceNetwork {
    aliases: Vec<String>,
}

#[derive(Serialize)]
struct Deploy {
    mode: &'static str,
    replicas: usize,
    endpoint_mode: &'static str,
    labels: Ordered<String>,
    restart_policy: RestartPolicy,
    /// The topology's `resources`, as limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Resources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<PlacementSpec>,
}

#[derive(Serialize)]
struct Resources {
    limits: Limits,
}

#[derive(Serialize)]
struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
}

/// A node that crashes is started again, a few times; one that exits cleanly (left the
/// network) stays down.
#[derive(Serialize)]
struct RestartPolicy {
    condition: &'static str,
    delay: &'static str,
    max_attempts: u32,
}

#[derive(Serialize)]
struct PlacementSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    preferences: Vec<Preference>,
}

#[derive(Serialize)]
struct Preference {
    spread: String,
}

#[derive(Serialize)]
struct Network {
    driver: &'static str,
    attachable: bool,
    labels: Ordered<String>,
    ipam: Ipam,
}

#[derive(Serialize)]
struct Ipam {
    config: Vec<IpamConfig>,
}

#[derive(Serialize)]
struct IpamConfig {
    subnet: String,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::{HostSpec, NetworkSpec};

    fn node(name: &str, group: &str, networks: &[&str]) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            group: group.into(),
            genesis: group == "genesis",
            networks: networks.iter().map(|s| s.to_string()).collect(),
            start_after: Duration::ZERO,
            node_args: vec!["--degree".into(), "3".into()],
            seed: 1_234_567_890_123_456,
            host: None,
            resources: None,
        }
    }

    fn plan(nodes: Vec<NodeSpec>, networks: Vec<NetworkSpec>) -> RunPlan {
        RunPlan {
            run_id: "demo-abcd".into(),
            run_dir: "/tmp/demo".into(),
            topology_name: "demo".into(),
            image: "peerlab:0.1.0".into(),
            networks,
            nodes,
            hosts: Vec::new(),
            detach: false,
            admin_token: crate::contract::AdminToken::generate(),
            network_key: None,
        }
    }

    fn group(name: &str, count: usize) -> Vec<NodeSpec> {
        (0..count)
            .map(|i| node(&format!("{name}-{i}"), name, &[]))
            .collect()
    }

    fn parse(yaml: &str) -> serde_json::Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn export_plain(p: &RunPlan) -> serde_json::Value {
        parse(&export(p, &StackOptions::default()).unwrap())
    }

    #[test]
    fn a_group_is_one_service_of_replicas_named_by_slot() {
        let mut nodes = group("genesis", 1);
        nodes.extend(group("peers", 4));
        let v = export_plain(&plan(nodes, vec![]));
        let peers = &v["services"]["peers"];
        assert_eq!(peers["deploy"]["replicas"], 4);
        assert_eq!(peers["deploy"]["mode"], "replicated");
        assert_eq!(peers["deploy"]["endpoint_mode"], "dnsrr");
        assert_eq!(peers["hostname"], "peers-{{.Task.Slot}}");
        let env = &peers["environment"];
        assert_eq!(env["PEERLAB_NAME"], "peers-{{.Task.Slot}}");
        assert_eq!(env["PEERLAB_ADVERTISE"], "peers-{{.Task.Slot}}:7070");
        assert_eq!(env["PEERLAB_GENESIS"], "genesis-0:7070");
        // The slot in front of the first node's seed (last 12 digits): a u64 per replica.
        assert_eq!(env["PEERLAB_SEED"], "{{.Task.Slot}}567890123456");
        assert_eq!(peers["command"], serde_json::json!(["--degree", "3"]));
        assert_eq!(peers["labels"]["peerlab.run"], "demo-abcd");
        assert_eq!(peers["labels"]["peerlab.group"], "peers");
        assert_eq!(peers["deploy"]["labels"]["peerlab.run"], "demo-abcd");
        assert!(peers.get("ports").is_none());
        assert!(peers["deploy"].get("placement").is_none());

        let genesis = &v["services"]["genesis-0"];
        assert_eq!(genesis["deploy"]["replicas"], 1);
        assert_eq!(genesis["hostname"], "genesis-0");
        assert_eq!(
            genesis["environment"]["PEERLAB_ADVERTISE"],
            "genesis-0:7070"
        );
        assert_eq!(genesis["environment"]["PEERLAB_SEED"], "1234567890123456");
        assert!(genesis["environment"].get("PEERLAB_GENESIS").is_none());
        assert_eq!(genesis["labels"]["peerlab.node"], "genesis-0");
    }

    #[test]
    fn later_genesis_nodes_join_earlier_ones_and_peers_join_all() {
        let mut nodes = group("genesis", 3);
        nodes.extend(group("peers", 2));
        let v = export_plain(&plan(nodes, vec![]));
        let genesis = |s: &str| v["services"][s]["environment"]["PEERLAB_GENESIS"].clone();
        assert!(
            v["services"]["genesis-0"]["environment"]
                .get("PEERLAB_GENESIS")
                .is_none()
        );
        assert_eq!(genesis("genesis-1"), "genesis-0:7070");
        assert_eq!(genesis("genesis-2"), "genesis-0:7070,genesis-1:7070");
        assert_eq!(
            genesis("peers"),
            "genesis-0:7070,genesis-1:7070,genesis-2:7070"
        );
    }

    #[test]
    fn placement_pins_to_the_host_label_or_spreads_over_it() {
        let mut nodes = group("genesis", 1);
        nodes.extend(group("west", 2));
        nodes.extend(group("wide", 3));
        let options = StackOptions {
            placement: vec![
                ("genesis".into(), Placement::Host("h1".into())),
                ("west".into(), Placement::Host("h3".into())),
                ("west".into(), Placement::Host("h2".into())),
                ("wide".into(), Placement::Spread),
            ],
            ..StackOptions::default()
        };
        let v = parse(&export(&plan(nodes, vec![]), &options).unwrap());
        let placement = |s: &str| v["services"][s]["deploy"]["placement"].clone();
        assert_eq!(
            placement("genesis-0"),
            serde_json::json!({"constraints": ["node.labels.peerlab.host == h1"]})
        );
        // The last --place of a group wins.
        assert_eq!(
            placement("west"),
            serde_json::json!({"constraints": ["node.labels.peerlab.host == h2"]})
        );
        assert_eq!(
            placement("wide"),
            serde_json::json!({"preferences": [{"spread": "node.labels.peerlab.host"}]})
        );
    }

    fn on_hosts(mut nodes: Vec<NodeSpec>, hosts: &[&str]) -> Vec<NodeSpec> {
        for (i, n) in nodes.iter_mut().enumerate() {
            n.host = Some(hosts[i % hosts.len()].to_string());
        }
        nodes
    }

    fn host(name: &str, label: Option<&str>) -> HostSpec {
        HostSpec {
            name: name.into(),
            label: label.map(str::to_string),
            links: Default::default(),
        }
    }

    #[test]
    fn topology_hosts_place_nodes_by_label_and_split_spread_groups() {
        let mut nodes = on_hosts(group("genesis", 2), &["eu", "us"]);
        nodes.extend(on_hosts(group("peers", 5), &["eu", "us", "asia"]));
        nodes.extend(on_hosts(group("edge", 2), &["asia"]));
        let mut p = plan(nodes, vec![]);
        p.hosts = vec![
            host("eu", Some("h1")),
            host("us", None),
            host("asia", Some("h3")),
        ];
        let v = export_plain(&p);
        let constraint =
            |s: &str| v["services"][s]["deploy"]["placement"]["constraints"][0].clone();
        let replicas = |s: &str| v["services"][s]["deploy"]["replicas"].clone();
        assert_eq!(constraint("genesis-0"), "node.labels.peerlab.host == h1");
        assert_eq!(constraint("genesis-1"), "node.labels.peerlab.host == us");
        // peers-0, -3 on eu; -1, -4 on us; -2 on asia: one service per host.
        for (service, count, label) in [
            ("peers-eu", 2, "h1"),
            ("peers-us", 2, "us"),
            ("peers-asia", 1, "h3"),
        ] {
            assert_eq!(replicas(service), count, "{service}");
            assert_eq!(
                constraint(service),
                format!("node.labels.peerlab.host == {label}")
            );
            assert_eq!(
                v["services"][service]["hostname"],
                format!("{service}-{{{{.Task.Slot}}}}")
            );
        }
        assert!(v["services"].get("peers").is_none());
        assert_eq!(replicas("edge"), 2);
        assert_eq!(constraint("edge"), "node.labels.peerlab.host == h3");

        // --place overrides: the group is one service again.
        let options = StackOptions {
            placement: vec![("peers".into(), Placement::Spread)],
            ..StackOptions::default()
        };
        let v = parse(&export(&p, &options).unwrap());
        assert_eq!(v["services"]["peers"]["deploy"]["replicas"], 5);
        assert!(v["services"].get("peers-eu").is_none());
    }

    #[test]
    fn host_links_are_noted_as_not_emulated() {
        let mut p = plan(on_hosts(group("genesis", 1), &["eu"]), vec![]);
        p.hosts = vec![host("eu", None), host("us", None)];
        let plain = export(&p, &StackOptions::default()).unwrap();
        assert!(!plain.contains("not emulated"), "{plain}");
        p.hosts[0]
            .links
            .insert("us".into(), crate::contract::LinkShape::default());
        let noted = export(&p, &StackOptions::default()).unwrap();
        assert!(
            noted.contains("links between hosts (latency, loss, bandwidth) are not emulated"),
            "{noted}"
        );
    }

    #[test]
    fn place_flags_parse_and_refuse_bad_values() {
        assert_eq!(
            parse_place("west=h2").unwrap(),
            ("west".to_string(), Placement::Host("h2".into()))
        );
        assert_eq!(
            parse_place("west=*").unwrap(),
            ("west".to_string(), Placement::Spread)
        );
        assert!(parse_place("west").unwrap_err().contains("GROUP=HOST"));
        assert!(parse_place("=h1").unwrap_err().contains("empty"));
        assert!(
            parse_place("west=h 2")
                .unwrap_err()
                .contains("not a host label")
        );
        assert!(
            parse_place("west=")
                .unwrap_err()
                .contains("not a host label")
        );
    }

    #[test]
    fn placing_an_unknown_group_is_refused() {
        let mut nodes = group("genesis", 1);
        nodes.extend(group("peers", 2));
        let options = StackOptions {
            placement: vec![("north".into(), Placement::Host("h1".into()))],
            ..StackOptions::default()
        };
        let err = export(&plan(nodes, vec![]), &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("group `north`"), "{err}");
        assert!(err.contains("genesis, peers"), "{err}");
    }

    #[test]
    fn names_that_would_share_the_overlay_dns_are_refused() {
        // Group `a` slot 1 is `a-1`, the name of group `a-1`'s service.
        let mut nodes = group("genesis", 1);
        nodes.extend(group("a", 2));
        nodes.extend(group("a-1", 1));
        let err = export(&plan(nodes, vec![]), &StackOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a-1` would name both"), "{err}");
        let mut nodes = group("genesis", 1);
        nodes.extend(group("peerlab-nodes", 1));
        let err = export(&plan(nodes, vec![]), &StackOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`peerlab-nodes`"), "{err}");
    }

    #[test]
    fn networks_are_attachable_overlays_with_subnets_sized_for_their_nodes() {
        let mut nodes = group("genesis", 1);
        nodes.extend(group("peers", 9));
        let v = export_plain(&plan(nodes.clone(), vec![]));
        let net = &v["networks"]["net"];
        assert_eq!(net["driver"], "overlay");
        assert_eq!(net["attachable"], true);
        assert_eq!(net["labels"]["peerlab.run"], "demo-abcd");
        assert_eq!(net["ipam"]["config"][0]["subnet"], "10.200.0.0/24");
        assert_eq!(
            v["services"]["peers"]["networks"],
            serde_json::json!({"net": {"aliases": ["peerlab-nodes"]}})
        );

        // 300 nodes and the spare addresses need a /23.
        let mut big = group("genesis", 1);
        big.extend(group("peers", 299));
        let v = export_plain(&plan(big, vec![]));
        assert_eq!(
            v["networks"]["net"]["ipam"]["config"][0]["subnet"],
            "10.200.0.0/23"
        );

        // Declared subnets stay; undeclared ones avoid them.
        let on = |mut n: NodeSpec, nets: &[&str]| {
            n.networks = nets.iter().map(|s| s.to_string()).collect();
            n
        };
        let nodes = vec![
            on(node("genesis-0", "genesis", &[]), &["a", "b"]),
            on(node("peers-0", "peers", &[]), &["b"]),
        ];
        let networks = vec![
            NetworkSpec {
                name: "a".into(),
                subnet: Some("10.200.0.0/24".into()),
            },
            NetworkSpec {
                name: "b".into(),
                subnet: None,
            },
        ];
        let v = export_plain(&plan(nodes, networks));
        assert_eq!(
            v["networks"]["a"]["ipam"]["config"][0]["subnet"],
            "10.200.0.0/24"
        );
        assert_eq!(
            v["networks"]["b"]["ipam"]["config"][0]["subnet"],
            "10.200.1.0/24"
        );
    }

    #[test]
    fn a_declared_subnet_too_small_for_its_nodes_is_refused() {
        let mut nodes = group("genesis", 1);
        nodes.extend(group("peers", 9));
        for n in &mut nodes {
            n.networks = vec!["lan".into()];
        }
        let networks = vec![NetworkSpec {
            name: "lan".into(),
            subnet: Some("10.77.1.0/28".into()),
        }];
        let err = export(&plan(nodes, networks), &StackOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("network `lan` (10.77.1.0/28) holds 14 addresses but 10 nodes"),
            "{err}"
        );
    }

    #[test]
    fn start_delays_are_refused_unless_dropped_and_noted() {
        let mut nodes = group("genesis", 1);
        let mut late = group("late", 2);
        for n in &mut late {
            n.start_after = Duration::from_secs(5);
        }
        nodes.extend(late);
        let p = plan(nodes, vec![]);
        let err = export(&p, &StackOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("group `late` starts 5s after"), "{err}");
        let options = StackOptions {
            compose: ExportOptions {
                drop_start_delays: true,
            },
            ..StackOptions::default()
        };
        let yaml = export(&p, &options).unwrap();
        assert!(
            yaml.contains("# Start delays (stagger, start_delay) are dropped"),
            "{yaml}"
        );
        assert_eq!(parse(&yaml)["services"]["late"]["deploy"]["replicas"], 2);
    }

    #[test]
    fn across_several_networks_the_check_names_every_service() {
        let mut nodes = group("genesis", 1);
        nodes[0].networks = vec!["a".into(), "b".into()];
        let mut peers = group("peers", 2);
        for n in &mut peers {
            n.networks = vec!["b".into()];
        }
        nodes.extend(peers);
        let networks = ["a", "b"]
            .map(|n| NetworkSpec {
                name: n.into(),
                subnet: None,
            })
            .to_vec();
        let yaml = export(&plan(nodes, networks), &StackOptions::default()).unwrap();
        assert!(yaml.contains("--network demo_a --network demo_b"), "{yaml}");
        assert!(
            yaml.contains("check --dns tasks.genesis-0,tasks.peers --status-port"),
            "{yaml}"
        );
    }

    #[test]
    fn the_header_says_how_to_deploy_and_check() {
        let mut nodes = group("genesis", 1);
        nodes.extend(group("peers", 2));
        let yaml = export(&plan(nodes, vec![]), &StackOptions::default()).unwrap();
        assert!(
            yaml.contains("docker stack deploy --resolve-image never -c FILE demo"),
            "{yaml}"
        );
        assert!(
            yaml.contains("--network demo_net --restart-condition none"),
            "{yaml}"
        );
        assert!(
            yaml.contains("check --dns tasks.peerlab-nodes --status-port 7071 --expect-nodes 3"),
            "{yaml}"
        );
    }
}
