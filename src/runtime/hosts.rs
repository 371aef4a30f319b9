//! Hosts emulated on one machine: the `local` and `docker` runtimes run every host of a
//! plan here, so what makes hosts differ is the network between them. Each node shapes its
//! own frames towards the nodes of every other host with the link of that pair of hosts
//! (through its `/admin/shape`, see [`super::links`]), as a WAN between real hosts would
//! delay, drop and throttle them; nodes on one host talk unshaped.
//!
//! Peers are named by keys known before they start (a loopback IP, a container name), so a
//! node is shaped once, right after it starts (and again after every restart, since its
//! shapes live in its process), towards nodes that may start later too.

use std::collections::HashMap;
use std::time::Duration;

use super::links::LinkFaults;
use super::{NodeEndpoint, NodeSpec, RunPlan, RuntimeError};
use crate::contract::LinkShape;

/// How long a started node's status socket may take to answer before its shaping fails
/// (a container's node is still starting when the engine says it runs).
const ADMIN_PATIENCE: Duration = Duration::from_secs(30);

/// The shapes each node of a plan applies towards the nodes of the other hosts.
#[derive(Debug, Default)]
pub struct HostEmulation {
    /// Node name -> (link shape, keys of the peers it applies to), one entry per other host
    /// whose link is shaped.
    shapes: HashMap<String, Vec<(LinkShape, Vec<String>)>>,
}

impl HostEmulation {
    /// The emulation of `plan`'s hosts; `keys_of` gives the keys by which a node knows a
    /// peer before that peer starts (its address or IP, as the runtime assigns it). Empty
    /// when the plan has no hosts or no shaped link.
    pub fn new(plan: &RunPlan, keys_of: impl Fn(&NodeSpec) -> Vec<String>) -> Self {
        let mut shapes: HashMap<String, Vec<(LinkShape, Vec<String>)>> = HashMap::new();
        for node in &plan.nodes {
            let Some(here) = node.host.as_deref() else {
                continue;
            };
            let mut towards = Vec::new();
            for host in plan.hosts.iter().filter(|h| h.name != here) {
                let Some(shape) = plan.host_link(here, &host.name) else {
                    continue;
                };
                let keys: Vec<String> = plan
                    .nodes
                    .iter()
                    .filter(|p| p.host.as_deref() == Some(host.name.as_str()))
                    .flat_map(&keys_of)
                    .collect();
                if !keys.is_empty() {
                    towards.push((shape, keys));
                }
            }
            if !towards.is_empty() {
                shapes.insert(node.name.clone(), towards);
            }
        }
        HostEmulation { shapes }
    }

    /// What `node` applies: per other host, the link shape and the keys of that host's nodes.
    pub fn shapes_of(&self, node: &str) -> &[(LinkShape, Vec<String>)] {
        self.shapes.get(node).map_or(&[], Vec::as_slice)
    }

    /// Shapes a node that just started (or started again) towards the other hosts' nodes,
    /// waiting for its status socket to answer.
    pub async fn apply(&self, links: &LinkFaults, node: &NodeEndpoint) -> Result<(), RuntimeError> {
        for (shape, keys) in self.shapes_of(&node.name) {
            links
                .shape_keys(node, keys.clone(), *shape, ADMIN_PATIENCE)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::runtime::HostSpec;

    fn node(name: &str, host: Option<&str>) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            group: "g".into(),
            genesis: false,
            networks: Vec::new(),
            start_after: Duration::ZERO,
            node_args: Vec::new(),
            seed: 0,
            host: host.map(str::to_string),
            resources: None,
        }
    }

    fn host(name: &str, links: &[(&str, u64)]) -> HostSpec {
        HostSpec {
            name: name.into(),
            label: None,
            links: links
                .iter()
                .map(|(to, ms)| {
                    let shape = LinkShape {
                        delay: Duration::from_millis(*ms),
                        ..LinkShape::default()
                    };
                    (to.to_string(), shape)
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn plan(nodes: Vec<NodeSpec>, hosts: Vec<HostSpec>) -> RunPlan {
        RunPlan {
            run_id: "t-000000".into(),
            run_dir: PathBuf::from("/nonexistent"),
            topology_name: "t".into(),
            image: "peerlab".into(),
            networks: Vec::new(),
            nodes,
            hosts,
            detach: false,
            admin_token: crate::contract::AdminToken::generate(),
            network_key: None,
        }
    }

    #[test]
    fn nodes_shape_towards_other_hosts_only_with_their_pair_link() {
        let plan = plan(
            vec![
                node("a-0", Some("a")),
                node("a-1", Some("a")),
                node("b-0", Some("b")),
                node("c-0", Some("c")),
            ],
            vec![
                host("a", &[("b", 40), ("c", 80)]),
                host("b", &[("a", 40)]),
                host("c", &[("a", 80)]),
            ],
        );
        let emulation = HostEmulation::new(&plan, |n| vec![format!("ip-of-{}", n.name)]);
        let delays = |node: &str| -> Vec<(u128, Vec<String>)> {
            emulation
                .shapes_of(node)
                .iter()
                .map(|(s, k)| (s.delay.as_millis(), k.clone()))
                .collect()
        };
        assert_eq!(
            delays("a-0"),
            [
                (40, vec!["ip-of-b-0".to_string()]),
                (80, vec!["ip-of-c-0".to_string()])
            ]
        );
        assert_eq!(delays("a-1"), delays("a-0"));
        assert_eq!(
            delays("b-0"),
            [(40, vec!["ip-of-a-0".to_string(), "ip-of-a-1".to_string()])]
        );
        // b and c have no shaped link: c-0 shapes only towards a.
        assert_eq!(delays("c-0").len(), 1);
    }

    #[test]
    fn a_plan_without_hosts_shapes_nothing() {
        let plan = plan(vec![node("a-0", None), node("b-0", None)], Vec::new());
        let emulation = HostEmulation::new(&plan, |n| vec![n.name.clone()]);
        assert!(emulation.shapes_of("a-0").is_empty());
        assert!(emulation.shapes.is_empty());
    }
}
