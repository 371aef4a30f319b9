//! How a node of a plan runs in a container: the ports inside it, the network it joins when
//! the topology names none, and its `peerlab node` command line.
//!
//! The Docker runtime starts containers this way and the compose export writes the same
//! services, so both read it from here; neither depends on the other.

use super::{NodeSpec, RunPlan};

/// Peer-protocol port inside every container.
pub const PEER_PORT: u16 = 7070;
/// Status-socket port inside every container.
pub const STATUS_PORT: u16 = 7071;
/// Network used when the topology declares none (the Docker runtime's `<run_id>-net`).
pub const DEFAULT_NETWORK: &str = "net";

/// Topology networks of a node: its own, or the run's [`DEFAULT_NETWORK`] when it names none.
pub fn node_networks(node: &NodeSpec) -> Vec<String> {
    if node.networks.is_empty() {
        vec![DEFAULT_NETWORK.to_string()]
    } else {
        node.networks.clone()
    }
}

/// The `--genesis` list of `node`: every genesis for a peer; for a genesis node the genesis
/// nodes before it (the first one starts the network, later ones join it).
pub fn genesis_targets<'a>(plan: &'a RunPlan, node: &NodeSpec) -> Vec<&'a NodeSpec> {
    plan.nodes
        .iter()
        .filter(|n| n.genesis)
        .take_while(|n| !node.genesis || n.name != node.name)
        .collect()
}

/// `peerlab node` arguments of one node, given how other nodes address `host` names.
pub fn node_command(
    plan: &RunPlan,
    node: &NodeSpec,
    address_of: impl Fn(&NodeSpec) -> String,
) -> Vec<String> {
    let mut args = vec![
        "--name".to_string(),
        node.name.clone(),
        "--advertise".to_string(),
        format!("{}:{PEER_PORT}", address_of(node)),
        "--seed".to_string(),
        node.seed.to_string(),
    ];
    let genesis: Vec<String> = genesis_targets(plan, node)
        .into_iter()
        .map(|g| format!("{}:{PEER_PORT}", address_of(g)))
        .collect();
    if !genesis.is_empty() {
        args.push("--genesis".to_string());
        args.push(genesis.join(","));
    }
    args.extend(node.node_args.iter().cloned());
    args
}
