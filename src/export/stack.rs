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
//!   the task is healthy. Never an address the node reads from its interfaces: every task
//!   also sits on `docker_gwbridge` with the same address in every container.
//! - **`endpoint_mode: dnsrr`** everywhere: no virtual IP (hosts without IPVS cannot serve
//!   one), the service name and `tasks.<service>` resolve to every task. Every node also
//!   carries the network alias [`NODES_ALIAS`], so `tasks.peerlab-nodes` names the whole
//!   network at once (what `peerlab check --dns` wants).
//! - **Overlay networks** (`driver: overlay`, `attachable: true`, so a one-shot checker or a
//!   user's container can join them) with an explicit subnet: the topology's, or one sized
//!   for the nodes on it carved from [`DEFAULT_POOL`] (Swarm's default /24 holds about 250
//!   tasks).
//! - **Placement** by the swarm node label [`HOST_LABEL`]: a group pinned to host `h2` gets
//!   the constraint `node.labels.peerlab.host == h2`; a group spread over the hosts gets a
//!   spread preference over that label ([`Placement`]).
//! - **No published ports**: Swarm refuses them with `dnsrr` (and its routing mesh needs
//!   IPVS). Status sockets are read from inside the overlay.
//! - **No start order**: Swarm has no `depends_on`; a peer retries its join until the
//!   genesis answers, and a node is in Swarm's DNS only once its healthcheck (joined)
//!   passes. Start delays are refused or dropped as in the compose form.

use std::collections::BTreeMap;

use serde::Serialize;

use super::compose::{ExportOptions, Healthcheck, Ordered, check, unsupported};
use crate::runtime::container::{
    DEFAULT_NETWORK, STATUS_PORT, identity_env, node_networks, overlay_subnets,
};
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
    /// Placement of groups by group name (`genesis` places every genesis node). Groups not
    /// named here run wherever Swarm schedules them.
    pub placement: Vec<(String, Placement)>,
}

/// Export `plan` as a Swarm stack file (see the module docs).
pub fn export(plan: &RunPlan, options: &StackOptions) -> Result<String, RuntimeError> {
    check(plan, options.compose)?;
    let services = services(plan, options)?;
    let networks = networks(plan)?;
    let expected = plan.nodes.len();
    let stack = &plan.topology_name;
    let first_network = networks
        .first()
        .map_or(DEFAULT_NETWORK.to_string(), |n| n.0.clone());
    let file = StackFile {
        services: Ordered(services.into_iter().map(|n| (n.name, n.service)).collect()),
        networks: Ordered(networks),
    };
    let yaml = serde_saphyr::to_string(&file)
        .map_err(|e| RuntimeError::Failed(format!("cannot write the stack file: {e}")))?;
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
         #   docker service create --name {stack}-check --network {stack}_{first_network} --restart-condition none \\\n\
         #     --no-resolve-image --no-healthcheck --entrypoint /peerlab {image} \\\n\
         #     check --dns tasks.{NODES_ALIAS} --status-port {STATUS_PORT} --expect-nodes {expected}\n\
         #   docker service logs {stack}-check\n\
         {dropped}{yaml}",
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
    let placement = |group: &str| {
        options
            .placement
            .iter()
            .rev()
            .find(|(g, _)| g == group)
            .map(|(_, p)| p.clone())
    };
    let genesis: Vec<&NodeSpec> = plan.nodes.iter().filter(|n| n.genesis).collect();
    let mut out = Vec::new();
    for (i, node) in genesis.iter().enumerate() {
        let targets: Vec<&str> = genesis[..i].iter().map(|g| g.name.as_str()).collect();
        let env = identity(&node.name, &node.name, &targets, node.seed.to_string());
        out.push(Named {
            name: node.name.clone(),
            service: service(
                plan,
                node,
                node.name.clone(),
                env,
                1,
                placement(&node.group),
            ),
        });
    }
    let all_genesis: Vec<&str> = genesis.iter().map(|g| g.name.as_str()).collect();
    for (group, nodes) in peer_groups(plan)? {
        let first = nodes[0];
        let hostname = format!("{group}-{{{{.Task.Slot}}}}");
        // No arithmetic in Swarm templates: the slot in front of the first node's seed (12
        // digits) gives every replica its own seed, the same in every deploy of this file.
        let seed = format!("{{{{.Task.Slot}}}}{:012}", first.seed % 1_000_000_000_000);
        let env = identity(&hostname, &hostname, &all_genesis, seed);
        out.push(Named {
            name: group.to_string(),
            service: service(plan, first, hostname, env, nodes.len(), placement(group)),
        });
    }
    check_names(&out, &genesis)?;
    Ok(out)
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
fn identity(name: &str, host: &str, genesis: &[&str], seed: String) -> Ordered<String> {
    Ordered(identity_env(name, host, genesis, seed))
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
        healthcheck: {
            // Joining across hosts can take longer than on one engine; a probe that
            // succeeds ends the start period at once, so a long one costs nothing.
            let mut h = Healthcheck::default();
            h.start_period = "60s";
            h
        },
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
    healthcheck: Healthcheck,
    deploy: Deploy,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<PlacementSpec>,
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
    use crate::runtime::NetworkSpec;

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
            hosts: vec![],
            detach: false,
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
