//! The swarm objects of a run, built from its plan: pure functions, so what the runtime
//! asks the manager for is unit-tested without a swarm.
//!
//! - **One service per node** (`<run>-<node>`, one replica, `endpoint_mode: dnsrr`). A
//!   node's identity is exactly its plan name (`PEERLAB_NAME`, hostname and a network alias
//!   on each of its networks), as the runtime's faults need: partitions name nodes by name
//!   and advertised address, and a replica named by its slot (`peers-1` for the plan's
//!   `peers-0`) would make such a key cut the wrong node. It is also what lets a group be
//!   spread over hosts node by node (`host: spread` places `peers-0`, `peers-1`, ... round
//!   the hosts), a node be stopped and started on its own (its service scaled to 0 and 1
//!   through the manager) and a node start at its own time (stagger). The identity
//!   variables, labels and subnets are the stack export's (`runtime::container`).
//! - **Advertised by name**: a node advertises `<node>:7070`, the alias the overlay's DNS
//!   resolves on every host, never an address read from its interfaces (every task also
//!   sits on `docker_gwbridge`, with the same address in every container).
//! - **Restart policy `none`**: a node that exits (killed, crashed, left) stays down, as on
//!   the other runtimes; the runtime starts it again when a scenario says so.
//! - **The relay** (`<run>-relay`): `peerlab relay` on every network of the run, pinned to
//!   the manager the runtime talks to, so that `docker exec` on that engine reaches it (see
//!   `tunnel`).

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Ipam, IpamConfig, Limit,
    NetworkAttachmentConfig, NetworkCreateRequest, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use ipnet::IpNet;

use crate::runtime::container::{
    GROUP_LABEL, HOST_LABEL, NODES_ALIAS, PEER_PORT, genesis_targets, identity_env, node_networks,
};
use crate::runtime::{NODE_LABEL, NodeSpec, RUN_LABEL, RunPlan};

use super::tunnel::IMAGE_BINARY;

/// Service label saying what a service of a run is: [`ROLE_NODE`] or [`ROLE_RELAY`].
pub const ROLE_LABEL: &str = "peerlab.role";
/// [`ROLE_LABEL`] of a node's service.
pub const ROLE_NODE: &str = "node";
/// [`ROLE_LABEL`] of the relay's service.
pub const ROLE_RELAY: &str = "relay";
/// Seconds a graceful stop waits (the node floods a leave) before the engine kills it.
pub const STOP_GRACE_SECS: i64 = 5;

/// Docker name of a node's service: `<run>-<node>`.
pub fn service_name(run_id: &str, node: &str) -> String {
    format!("{run_id}-{node}")
}

/// Docker name of the run's relay service.
pub fn relay_name(run_id: &str) -> String {
    format!("{run_id}-relay")
}

/// Docker name of a topology network of the run.
pub fn network_name(run_id: &str, network: &str) -> String {
    format!("{run_id}-{network}")
}

/// The placement constraint that puts a node on the swarm node of a host: by its
/// `peerlab.host` label when a swarm node carries `value`, else by hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `node.labels.peerlab.host == value`.
    Label(String),
    /// `node.hostname == value`.
    Hostname(String),
}

impl HostMatch {
    /// The constraint as Swarm reads it.
    pub fn constraint(&self) -> String {
        match self {
            HostMatch::Label(v) => format!("node.labels.{HOST_LABEL} == {v}"),
            HostMatch::Hostname(v) => format!("node.hostname == {v}"),
        }
    }
}

/// Labels of every service of a run.
fn run_labels(plan: &RunPlan, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (RUN_LABEL.to_string(), plan.run_id.clone()),
        (ROLE_LABEL.to_string(), role.to_string()),
    ])
}

fn no_healthcheck() -> HealthConfig {
    // peerlab polls every status socket itself; the image's HEALTHCHECK would only repeat
    // that work, and with one a dnsrr task enters the overlay's DNS only once healthy.
    HealthConfig {
        test: Some(vec!["NONE".into()]),
        ..Default::default()
    }
}

/// The service of one node (see the module docs); `host` places it.
pub fn node_service(plan: &RunPlan, node: &NodeSpec, host: Option<&HostMatch>) -> ServiceSpec {
    let genesis: Vec<&str> = genesis_targets(plan, node)
        .into_iter()
        .map(|g| g.name.as_str())
        .collect();
    let mut env: Vec<String> =
        identity_env(&node.name, &node.name, &genesis, node.seed.to_string())
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
    // The run's secrets: in the task's environment, never in its command line.
    env.extend(crate::runtime::container::node_secrets_env(plan));
    let mut labels = run_labels(plan, ROLE_NODE);
    labels.insert(NODE_LABEL.to_string(), node.name.clone());
    labels.insert(GROUP_LABEL.to_string(), node.group.clone());
    let networks = node_networks(node)
        .into_iter()
        .map(|net| NetworkAttachmentConfig {
            target: Some(network_name(&plan.run_id, &net)),
            aliases: Some(vec![node.name.clone(), NODES_ALIAS.to_string()]),
            ..Default::default()
        })
        .collect();
    ServiceSpec {
        name: Some(service_name(&plan.run_id, &node.name)),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(plan.image.clone()),
                hostname: Some(node.name.clone()),
                args: Some(node.node_args.clone()),
                env: Some(env),
                // Not `peerlab.run`: the Docker runtime lists containers by that label, and
                // a task's container belongs to its service, which carries it.
                labels: Some(HashMap::from([
                    (NODE_LABEL.to_string(), node.name.clone()),
                    (GROUP_LABEL.to_string(), node.group.clone()),
                ])),
                health_check: Some(no_healthcheck()),
                stop_grace_period: Some(STOP_GRACE_SECS * 1_000_000_000),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            // The topology's `resources`, as limits (what the stack export writes too).
            resources: node.resources.map(|r| TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: r.nano_cpus(),
                    memory_bytes: r.memory_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            placement: host.map(|h| TaskSpecPlacement {
                constraints: Some(vec![h.constraint()]),
                ..Default::default()
            }),
            networks: Some(networks),
            ..Default::default()
        }),
        mode: Some(replicated(1)),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `replicated` mode with `n` replicas.
pub fn replicated(n: i64) -> ServiceSpecMode {
    ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(n) }),
        ..Default::default()
    }
}

/// The relay service: `peerlab relay` on every network of the run, on the swarm node
/// `manager_node` (the engine the runtime execs into).
pub fn relay_service(plan: &RunPlan, networks: &[String], manager_node: &str) -> ServiceSpec {
    ServiceSpec {
        name: Some(relay_name(&plan.run_id)),
        labels: Some(run_labels(plan, ROLE_RELAY)),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(plan.image.clone()),
                command: Some(vec![IMAGE_BINARY.to_string()]),
                args: Some(vec!["relay".to_string()]),
                health_check: Some(no_healthcheck()),
                stop_grace_period: Some(1_000_000_000),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(vec![format!("node.id == {manager_node}")]),
                ..Default::default()
            }),
            networks: Some(
                networks
                    .iter()
                    .map(|n| NetworkAttachmentConfig {
                        target: Some(network_name(&plan.run_id, n)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        mode: Some(replicated(1)),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An attachable overlay network of the run with an explicit subnet.
pub fn overlay_network(plan: &RunPlan, network: &str, subnet: &IpNet) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: network_name(&plan.run_id, network),
        driver: Some("overlay".into()),
        attachable: Some(true),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        labels: Some(HashMap::from([(
            RUN_LABEL.to_string(),
            plan.run_id.clone(),
        )])),
        ..Default::default()
    }
}

/// The advertised peer address of a node (its alias on the overlay).
pub fn peer_addr(node: &str) -> String {
    format!("{node}:{PEER_PORT}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::{HostSpec, NetworkSpec};

    fn node(name: &str, group: &str, host: Option<&str>) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            group: group.into(),
            genesis: group == "genesis",
            networks: vec![],
            start_after: Duration::ZERO,
            node_args: vec!["--degree".into(), "3".into()],
            seed: 42,
            host: host.map(str::to_string),
            resources: None,
        }
    }

    fn plan() -> RunPlan {
        RunPlan {
            run_id: "demo-abcd".into(),
            run_dir: "/tmp/demo".into(),
            topology_name: "demo".into(),
            image: "peerlab:0.1.0".into(),
            networks: vec![],
            nodes: vec![
                node("genesis-0", "genesis", Some("eu")),
                node("genesis-1", "genesis", Some("us")),
                node("peers-0", "peers", Some("eu")),
                node("peers-1", "peers", Some("us")),
            ],
            hosts: vec![
                HostSpec {
                    name: "eu".into(),
                    label: Some("h1".into()),
                    links: Default::default(),
                },
                HostSpec {
                    name: "us".into(),
                    label: None,
                    links: Default::default(),
                },
            ],
            detach: false,
            admin_token: crate::contract::AdminToken::generate(),
            network_key: None,
        }
    }

    fn env(spec: &ServiceSpec) -> Vec<String> {
        spec.task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }

    #[test]
    fn a_keyed_run_gives_every_task_its_network_key_in_the_environment_only() {
        let key = crate::contract::NetworkSecret::generate();
        let p = RunPlan {
            network_key: Some(key.clone()),
            ..plan()
        };
        for node in &p.nodes {
            let spec = node_service(&p, node, None);
            let expected = format!("PEERLAB_NETWORK_KEY={}", key.expose());
            assert_eq!(
                env(&spec).iter().filter(|e| **e == expected).count(),
                1,
                "{}",
                node.name
            );
            let container = spec
                .task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .expect("container spec");
            let argv = [container.command.clone(), container.args.clone()]
                .into_iter()
                .flatten()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            assert!(!argv.contains(key.expose()), "the key on a command line");
        }
        let unkeyed = node_service(&plan(), &plan().nodes[0], None);
        assert!(
            env(&unkeyed)
                .iter()
                .all(|e| !e.starts_with("PEERLAB_NETWORK_KEY"))
        );
    }

    #[test]
    fn resources_become_the_tasks_limits() {
        let mut p = plan();
        p.nodes[2].resources = Some(crate::runtime::NodeResources {
            cpu_millis: Some(500),
            memory_bytes: Some(32 << 20),
        });
        let limited = node_service(&p, &p.nodes[2], None);
        let limits = limited
            .task_template
            .as_ref()
            .and_then(|t| t.resources.as_ref())
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits.nano_cpus, Some(500_000_000));
        assert_eq!(limits.memory_bytes, Some(32 << 20));
        let free = node_service(&p, &p.nodes[3], None);
        assert!(
            free.task_template
                .as_ref()
                .is_some_and(|t| t.resources.is_none())
        );
    }

    #[test]
    fn a_node_service_carries_its_exact_identity_placement_and_labels() {
        let p = plan();
        let host = HostMatch::Label("h2".into());
        let spec = node_service(&p, &p.nodes[3], Some(&host));
        assert_eq!(spec.name.as_deref(), Some("demo-abcd-peers-1"));
        assert_eq!(
            env(&spec),
            vec![
                "PEERLAB_NAME=peers-1".to_string(),
                "PEERLAB_ADVERTISE=peers-1:7070".to_string(),
                "PEERLAB_GENESIS=genesis-0:7070,genesis-1:7070".to_string(),
                "PEERLAB_SEED=42".to_string(),
                format!("PEERLAB_ADMIN_TOKEN={}", p.admin_token.expose()),
            ]
        );
        let labels = spec.labels.clone().unwrap_or_default();
        assert_eq!(labels[RUN_LABEL], "demo-abcd");
        assert_eq!(labels[NODE_LABEL], "peers-1");
        assert_eq!(labels[GROUP_LABEL], "peers");
        assert_eq!(labels[ROLE_LABEL], ROLE_NODE);
        let task = spec.task_template.as_ref().expect("task template");
        let container = task.container_spec.as_ref().expect("container spec");
        assert_eq!(container.hostname.as_deref(), Some("peers-1"));
        assert_eq!(
            container.args,
            Some(vec!["--degree".to_string(), "3".to_string()])
        );
        // Task containers do not carry the run label (the Docker runtime lists by it).
        assert!(
            !container
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(RUN_LABEL))
        );
        assert_eq!(
            task.placement.as_ref().and_then(|p| p.constraints.clone()),
            Some(vec!["node.labels.peerlab.host == h2".to_string()])
        );
        assert_eq!(
            task.restart_policy.as_ref().and_then(|r| r.condition),
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        let net = &task.networks.as_ref().expect("networks")[0];
        assert_eq!(net.target.as_deref(), Some("demo-abcd-net"));
        assert_eq!(
            net.aliases,
            Some(vec!["peers-1".to_string(), NODES_ALIAS.to_string()])
        );
        assert_eq!(
            spec.endpoint_spec.and_then(|e| e.mode),
            Some(EndpointSpecModeEnum::DNSRR)
        );
        assert_eq!(
            spec.mode
                .and_then(|m| m.replicated)
                .and_then(|r| r.replicas),
            Some(1)
        );
    }

    #[test]
    fn genesis_nodes_join_earlier_ones_and_unplaced_nodes_have_no_constraint() {
        let p = plan();
        let first = node_service(&p, &p.nodes[0], None);
        assert!(!env(&first).iter().any(|e| e.starts_with("PEERLAB_GENESIS")));
        assert!(
            first
                .task_template
                .as_ref()
                .is_some_and(|t| t.placement.is_none())
        );
        let second = node_service(&p, &p.nodes[1], Some(&HostMatch::Hostname("swl-h2".into())));
        assert!(env(&second).contains(&"PEERLAB_GENESIS=genesis-0:7070".to_string()));
        assert_eq!(
            second
                .task_template
                .and_then(|t| t.placement)
                .and_then(|p| p.constraints),
            Some(vec!["node.hostname == swl-h2".to_string()])
        );
    }

    #[test]
    fn the_relay_is_pinned_to_the_manager_on_every_network() {
        let p = plan();
        let spec = relay_service(&p, &["a".into(), "b".into()], "NODEID");
        assert_eq!(spec.name.as_deref(), Some("demo-abcd-relay"));
        let task = spec.task_template.expect("task");
        assert_eq!(
            task.placement.and_then(|p| p.constraints),
            Some(vec!["node.id == NODEID".to_string()])
        );
        let targets: Vec<String> = task
            .networks
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.target)
            .collect();
        assert_eq!(targets, vec!["demo-abcd-a", "demo-abcd-b"]);
        let container = task.container_spec.expect("container");
        assert_eq!(container.command, Some(vec!["/peerlab".to_string()]));
        assert_eq!(container.args, Some(vec!["relay".to_string()]));
        assert_eq!(spec.labels.unwrap_or_default()[ROLE_LABEL], ROLE_RELAY);
    }

    #[test]
    fn networks_are_attachable_labelled_overlays_with_their_subnet() {
        let mut p = plan();
        p.networks = vec![NetworkSpec {
            name: "lan".into(),
            subnet: Some("10.77.0.0/24".into()),
        }];
        let subnet: IpNet = "10.77.0.0/24".parse().expect("subnet");
        let net = overlay_network(&p, "lan", &subnet);
        assert_eq!(net.name, "demo-abcd-lan");
        assert_eq!(net.driver.as_deref(), Some("overlay"));
        assert_eq!(net.attachable, Some(true));
        assert_eq!(net.labels.unwrap_or_default()[RUN_LABEL], "demo-abcd");
        assert_eq!(
            net.ipam
                .and_then(|i| i.config)
                .and_then(|c| c[0].subnet.clone()),
            Some("10.77.0.0/24".to_string())
        );
    }
}
