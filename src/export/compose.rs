//! Export a run plan as a compose file (Compose Specification), for `peerlab compose`.
//!
//! The file means what the Docker runtime does with the same plan: one service per node,
//! named after the node (so service names are the peer addresses), the topology's networks
//! with their subnets, every peer waiting for the genesis to be healthy (joined) before it
//! starts, and the same `peerlab.run` / `peerlab.node` labels so `peerlab down` finds the
//! containers too. It uses only what both `docker-compose` 1.29 and `docker compose` v2
//! accept, and it is checked against the specification's JSON Schema in the tests.
//!
//! Compose has no way to delay a service's start by a fixed time, and a scratch image has
//! no shell to `sleep` in. Two kinds of delay reach a plan, with different weight:
//! - a group's `start_delay` (a late wave, a test of joining a formed network) changes
//!   what the run means, so [`export`] refuses it rather than silently changing it;
//!   [`export_with`] and [`ExportOptions::drop_start_delays`] export it anyway;
//! - `stagger` (tens of milliseconds between the nodes of a group) only paces the start so
//!   the genesis is not flooded; compose paces starts itself (bounded parallelism), so it is
//!   dropped, and the file's header says so.
//!
//! Without delays every peer starts as soon as the genesis nodes are healthy.

use std::time::Duration;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::runtime::container::{
    DEFAULT_NETWORK, STATUS_PORT, genesis_targets, node_command, node_networks,
};
use crate::runtime::{NODE_LABEL, RUN_LABEL, RunPlan, RuntimeError};

/// Choices for what compose cannot express.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Export plans whose groups have a `start_delay` by dropping the delays (peers then start
    /// as soon as the genesis nodes are healthy) instead of refusing them.
    pub drop_start_delays: bool,
}

/// Export `plan` as compose YAML; refuses groups with a `start_delay` (see the module docs).
pub fn export(plan: &RunPlan) -> Result<String, RuntimeError> {
    export_with(plan, ExportOptions::default())
}

/// Export `plan` as compose YAML with explicit choices for what compose cannot express.
pub fn export_with(plan: &RunPlan, options: ExportOptions) -> Result<String, RuntimeError> {
    check(plan, options)?;
    let file = compose_file(plan);
    let yaml = serde_saphyr::to_string(&file)
        .map_err(|e| RuntimeError::Failed(format!("cannot write the compose file: {e}")))?;
    let dropped = if plan.nodes.iter().any(|n| !n.start_after.is_zero()) {
        "# Start delays (stagger, start_delay) are dropped: compose cannot delay a start; every\n\
         # peer starts as soon as the genesis nodes are healthy.\n"
    } else {
        ""
    };
    Ok(format!(
        "# Compose file for topology `{}` (run {}), written by `peerlab compose`.\n\
         # Start: docker-compose up -d   (or: docker compose up -d)\n\
         # Needs the image {}: `peerlab image build --tag {}` builds it without a registry.\n\
         {}{dropped}{yaml}",
        plan.topology_name,
        plan.run_id,
        plan.image,
        plan.image,
        super::secrets_header(plan),
    ))
}

pub(super) fn unsupported(reason: String) -> RuntimeError {
    RuntimeError::Unsupported {
        runtime: "compose",
        reason,
    }
}

/// What neither form can export: no nodes, no genesis, names compose rejects, and (unless
/// `options` drop them) groups with a start delay.
pub(super) fn check(plan: &RunPlan, options: ExportOptions) -> Result<(), RuntimeError> {
    if plan.nodes.is_empty() {
        return Err(unsupported("the plan has no nodes".into()));
    }
    if !plan.nodes.iter().any(|n| n.genesis) {
        return Err(unsupported(
            "the plan has no genesis node to start the network".into(),
        ));
    }
    for name in plan
        .nodes
        .iter()
        .map(|n| &n.name)
        .chain(plan.networks.iter().map(|n| &n.name))
    {
        if !valid_name(name) {
            return Err(unsupported(format!(
                "`{name}` is not a valid compose service or network name; \
                 use letters, digits, `.`, `_` and `-`, starting with a letter or digit"
            )));
        }
    }
    if !options.drop_start_delays
        && let Some((group, delay)) = group_delays(plan).into_iter().find(|(_, d)| !d.is_zero())
    {
        return Err(unsupported(format!(
            "compose cannot delay a service's start, but group `{group}` starts {} after the \
                 run starts (its start_delay); set it to 0s, or export anyway dropping the delay \
                 (its nodes then start as soon as the genesis is healthy)",
            humantime::format_duration(delay)
        )));
    }
    Ok(())
}

/// Compose service and network names: `[a-zA-Z0-9][a-zA-Z0-9._-]*`.
pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Each group's start delay (its earliest node's `start_after`), in plan order; the rest
/// of a node's `start_after` is its stagger.
fn group_delays(plan: &RunPlan) -> Vec<(&str, Duration)> {
    let mut groups: Vec<(&str, Duration)> = Vec::new();
    for node in &plan.nodes {
        match groups.iter_mut().find(|(g, _)| *g == node.group) {
            Some((_, delay)) => *delay = (*delay).min(node.start_after),
            None => groups.push((&node.group, node.start_after)),
        }
    }
    groups
}

fn compose_file(plan: &RunPlan) -> ComposeFile {
    let labels = |node: Option<&str>| {
        let mut l = Ordered(vec![(RUN_LABEL.to_string(), plan.run_id.clone())]);
        if let Some(node) = node {
            l.0.push((NODE_LABEL.to_string(), node.to_string()));
        }
        l
    };
    let networks = if plan.networks.is_empty() {
        Ordered(vec![(
            DEFAULT_NETWORK.to_string(),
            Network {
                labels: labels(None),
                ipam: None,
            },
        )])
    } else {
        Ordered(
            plan.networks
                .iter()
                .map(|n| {
                    let ipam = n.subnet.as_ref().map(|subnet| Ipam {
                        config: vec![IpamConfig {
                            subnet: subnet.clone(),
                        }],
                    });
                    (
                        n.name.clone(),
                        Network {
                            labels: labels(None),
                            ipam,
                        },
                    )
                })
                .collect(),
        )
    };
    let services = plan
        .nodes
        .iter()
        .map(|node| {
            let depends_on = Ordered(
                genesis_targets(plan, node)
                    .into_iter()
                    .map(|g| {
                        (
                            g.name.clone(),
                            DependsOn {
                                condition: "service_healthy",
                            },
                        )
                    })
                    .collect(),
            );
            let networks = node_networks(node);
            let service = Service {
                image: plan.image.clone(),
                hostname: node.name.clone(),
                command: node_command(plan, node, |n| n.name.clone()),
                environment: Ordered(super::secrets_env(plan)),
                labels: labels(Some(&node.name)),
                networks,
                ports: vec![format!("127.0.0.1::{STATUS_PORT}")],
                healthcheck: Healthcheck::default(),
                depends_on: (!depends_on.0.is_empty()).then_some(depends_on),
                cpus: node.resources.and_then(|r| r.cpus()),
                mem_limit: node.resources.and_then(|r| r.memory_text()),
            };
            (node.name.clone(), service)
        })
        .collect();
    ComposeFile {
        services: Ordered(services),
        networks,
    }
}

/// A map that keeps insertion order (plan order reads better than alphabetical order).
pub(super) struct Ordered<V>(pub(super) Vec<(String, V)>);

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct ComposeFile {
    services: Ordered<Service>,
    networks: Ordered<Network>,
}

#[derive(Serialize)]
struct Service {
    image: String,
    hostname: String,
    command: Vec<String>,
    /// `PEERLAB_ADMIN_TOKEN` from the shell ([`super::ADMIN_TOKEN_INTERPOLATION`]), and
    /// `PEERLAB_NETWORK_KEY` when the topology asks for a key.
    environment: Ordered<String>,
    labels: Ordered<String>,
    networks: Vec<String>,
    /// The status socket on an ephemeral loopback port (`docker-compose port SERVICE 7071`),
    /// in the short form because docker-compose 1.29 rejects `host_ip` in the long one.
    ports: Vec<String>,
    healthcheck: Healthcheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    depends_on: Option<Ordered<DependsOn>>,
    /// The topology's CPU limit in cores (`resources.cpu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<f64>,
    /// The topology's memory limit in Docker's units (`resources.memory`).
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_limit: Option<String>,
}

/// Same probe as the image's HEALTHCHECK, spelled out so the file stands on its own.
#[derive(Serialize)]
pub(super) struct Healthcheck {
    test: &'static [&'static str],
    interval: &'static str,
    timeout: &'static str,
    retries: u32,
    pub(super) start_period: &'static str,
}

impl Default for Healthcheck {
    fn default() -> Self {
        Healthcheck {
            test: &["CMD", "/peerlab", "health"],
            interval: "1s",
            timeout: "2s",
            retries: 3,
            start_period: "10s",
        }
    }
}

#[derive(Serialize)]
struct DependsOn {
    condition: &'static str,
}

#[derive(Serialize)]
struct Network {
    labels: Ordered<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<Ipam>,
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
    use crate::runtime::{NetworkSpec, NodeSpec};

    fn node(name: &str, genesis: bool, networks: &[&str]) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            group: if genesis {
                "genesis".into()
            } else {
                "peers".into()
            },
            genesis,
            networks: networks.iter().map(|s| s.to_string()).collect(),
            start_after: Duration::ZERO,
            node_args: vec!["--degree".into(), "3".into()],
            seed: 42,
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

    fn parse(yaml: &str) -> serde_json::Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn peers_join_every_genesis_and_later_genesis_join_earlier_ones() {
        let p = plan(
            vec![
                node("genesis-0", true, &[]),
                node("genesis-1", true, &[]),
                node("peers-0", false, &[]),
            ],
            vec![],
        );
        let v = parse(&export(&p).unwrap());
        let cmd = |s: &str| v["services"][s]["command"].clone();
        assert_eq!(
            cmd("genesis-0"),
            serde_json::json!([
                "--name",
                "genesis-0",
                "--advertise",
                "genesis-0:7070",
                "--seed",
                "42",
                "--degree",
                "3"
            ])
        );
        assert_eq!(cmd("genesis-1")[7], "genesis-0:7070");
        assert_eq!(cmd("peers-0")[7], "genesis-0:7070,genesis-1:7070");
        assert!(v["services"]["genesis-0"].get("depends_on").is_none());
        assert_eq!(
            v["services"]["peers-0"]["depends_on"],
            serde_json::json!({
                "genesis-0": {"condition": "service_healthy"},
                "genesis-1": {"condition": "service_healthy"}
            })
        );
        assert_eq!(
            v["services"]["peers-0"]["labels"]["peerlab.node"],
            "peers-0"
        );
        assert_eq!(
            v["services"]["peers-0"]["labels"]["peerlab.run"],
            "demo-abcd"
        );
        assert_eq!(
            v["services"]["peers-0"]["networks"],
            serde_json::json!(["net"])
        );
        assert_eq!(v["networks"]["net"]["labels"]["peerlab.run"], "demo-abcd");
    }

    #[test]
    fn networks_keep_their_subnets() {
        let p = plan(
            vec![
                node("genesis-0", true, &["lan", "wan"]),
                node("peers-0", false, &["wan"]),
            ],
            vec![
                NetworkSpec {
                    name: "lan".into(),
                    subnet: Some("10.77.1.0/24".into()),
                },
                NetworkSpec {
                    name: "wan".into(),
                    subnet: None,
                },
            ],
        );
        let v = parse(&export(&p).unwrap());
        assert_eq!(
            v["networks"]["lan"]["ipam"]["config"][0]["subnet"],
            "10.77.1.0/24"
        );
        assert!(v["networks"]["wan"].get("ipam").is_none());
        assert!(v["networks"].get("net").is_none());
        assert_eq!(
            v["services"]["genesis-0"]["networks"],
            serde_json::json!(["lan", "wan"])
        );
    }

    #[test]
    fn stagger_is_dropped_with_a_note() {
        let staggered: Vec<NodeSpec> = (0..3)
            .map(|i| {
                let mut n = node(&format!("peers-{i}"), false, &[]);
                n.start_after = Duration::from_millis(50 * i);
                n
            })
            .collect();
        let mut nodes = vec![node("genesis-0", true, &[])];
        nodes.extend(staggered);
        let yaml = export(&plan(nodes, vec![])).unwrap();
        assert!(
            yaml.contains("# Start delays (stagger, start_delay) are dropped"),
            "{yaml}"
        );
        assert!(parse(&yaml)["services"].get("peers-2").is_some());
        let plain = export(&plan(vec![node("genesis-0", true, &[])], vec![])).unwrap();
        assert!(!plain.contains("are dropped"), "{plain}");
    }

    #[test]
    fn a_group_start_delay_is_refused_unless_dropped() {
        let mut late = vec![node("late-0", false, &[]), node("late-1", false, &[])];
        late[0].group = "late".into();
        late[1].group = "late".into();
        late[0].start_after = Duration::from_secs(3);
        late[1].start_after = Duration::from_millis(3040);
        let mut nodes = vec![node("genesis-0", true, &[]), node("peers-0", false, &[])];
        nodes.extend(late);
        let p = plan(nodes, vec![]);
        let err = export(&p).unwrap_err().to_string();
        assert!(err.contains("group `late` starts 3s after"), "{err}");
        let options = ExportOptions {
            drop_start_delays: true,
        };
        let yaml = export_with(&p, options).unwrap();
        assert!(parse(&yaml)["services"].get("late-1").is_some());
    }

    #[test]
    fn plans_without_genesis_or_with_bad_names_are_refused() {
        let err = export(&plan(vec![node("peers-0", false, &[])], vec![])).unwrap_err();
        assert!(err.to_string().contains("no genesis"), "{err}");
        let err = export(&plan(vec![node("genesis 0", true, &[])], vec![])).unwrap_err();
        assert!(err.to_string().contains("`genesis 0`"), "{err}");
    }
}
