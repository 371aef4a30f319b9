//! How a node of a plan runs in a container: the ports inside it, the network it joins when
//! the topology names none, and its `peerlab node` command line.
//!
//! The Docker runtime starts containers this way and the compose export writes the same
//! services, so both read it from here; neither depends on the other. The same holds for
//! Docker Swarm: the stack export (`peerlab compose --stack`) and the swarm runtime share
//! the labels, the identity variables and the overlay subnets below.

use ipnet::IpNet;

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

/// Swarm node label that names the host a node runs on (`docker node update --label-add
/// peerlab.host=h2 NODE`); placement constraints and spread preferences use it.
pub const HOST_LABEL: &str = "peerlab.host";

/// Service (and container) label with the peer group of a node (`genesis` for genesis nodes).
pub const GROUP_LABEL: &str = "peerlab.group";

/// Network alias of every node on a swarm overlay: `tasks.peerlab-nodes` (or
/// `peerlab-nodes`, with `dnsrr`) resolves to every node's address (what `peerlab check
/// --dns` wants).
pub const NODES_ALIAS: &str = "peerlab-nodes";

/// Address pool that overlay networks without a subnet in the topology are carved from.
pub const DEFAULT_POOL: &str = "10.200.0.0/16";

/// Addresses an overlay keeps free beyond its nodes: the gateway, one load-balancer
/// endpoint per swarm node that joins it, and one-shot tasks such as a `peerlab check`.
pub const SPARE_ADDRESSES: u64 = 64;

/// Addresses an overlay declared with a subnet must hold beyond its nodes (the gateway and
/// a few swarm endpoints); fewer is refused rather than left to fail at deploy time.
pub const MIN_SPARE_ADDRESSES: u64 = 8;

/// `PEERLAB_*` variables that make a swarm task a node (Swarm expands `{{.Task.Slot}}` in
/// environment and hostname, not in the command): name, advertised `host:PORT`, genesis
/// list, seed. Every node advertises a DNS name, never an address read from its
/// interfaces: every task also sits on `docker_gwbridge` with the same address everywhere.
pub fn identity_env(
    name: &str,
    host: &str,
    genesis: &[&str],
    seed: String,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PEERLAB_NAME".to_string(), name.to_string()),
        (
            "PEERLAB_ADVERTISE".to_string(),
            format!("{host}:{PEER_PORT}"),
        ),
    ];
    if !genesis.is_empty() {
        let list: Vec<String> = genesis.iter().map(|g| format!("{g}:{PEER_PORT}")).collect();
        env.push(("PEERLAB_GENESIS".to_string(), list.join(",")));
    }
    env.push(("PEERLAB_SEED".to_string(), seed));
    env
}

/// `NAME=value` entries of the run's secrets for a node's environment: the admin token, and
/// the network key when the topology asks for one. In the environment because a command
/// line is visible to every user of the machine (`ps`, `docker inspect` shows both, but
/// only to those who may already control the engine).
pub fn node_secrets_env(plan: &RunPlan) -> Vec<String> {
    let mut env = vec![format!(
        "{}={}",
        crate::contract::ADMIN_TOKEN_ENV,
        plan.admin_token.expose()
    )];
    if let Some(key) = &plan.network_key {
        env.push(format!(
            "{}={}",
            crate::contract::NETWORK_KEY_ENV,
            key.expose()
        ));
    }
    env
}

/// The overlay networks of a plan with their subnets, in plan order ([`DEFAULT_NETWORK`]
/// when it declares none): the topology's subnet, checked to hold its nodes and
/// [`MIN_SPARE_ADDRESSES`], else one sized for its nodes and [`SPARE_ADDRESSES`] carved
/// from [`DEFAULT_POOL`] (Swarm's default /24 holds only about 250 tasks). The error is a
/// sentence saying what to change.
pub fn overlay_subnets(plan: &RunPlan) -> Result<Vec<(String, IpNet)>, String> {
    let mut declared: Vec<(String, Option<IpNet>)> = Vec::new();
    if plan.networks.is_empty() {
        declared.push((DEFAULT_NETWORK.to_string(), None));
    } else {
        for n in &plan.networks {
            let subnet = match &n.subnet {
                Some(text) => Some(
                    text.parse::<IpNet>()
                        .map_err(|e| format!("network `{}`: subnet `{text}`: {e}", n.name))?,
                ),
                None => None,
            };
            declared.push((n.name.clone(), subnet));
        }
    }
    let mut taken: Vec<IpNet> = declared.iter().filter_map(|(_, s)| *s).collect();
    let mut out = Vec::new();
    for (name, subnet) in declared {
        let nodes = plan
            .nodes
            .iter()
            .filter(|n| node_networks(n).contains(&name))
            .count() as u64;
        let subnet = match subnet {
            Some(net) => {
                let room = addresses(&net);
                if room < nodes + MIN_SPARE_ADDRESSES {
                    return Err(format!(
                        "network `{name}` ({net}) holds {room} addresses but {nodes} nodes sit on it; \
                         a swarm overlay needs at least {MIN_SPARE_ADDRESSES} more (gateway, one \
                         endpoint per swarm node): give it a larger subnet"
                    ));
                }
                net
            }
            None => {
                let net = carve(nodes + SPARE_ADDRESSES, &taken).ok_or_else(|| {
                    format!(
                        "no free subnet in {DEFAULT_POOL} holds the {nodes} nodes of network \
                         `{name}`; give the network a subnet in the topology"
                    )
                })?;
                taken.push(net);
                net
            }
        };
        out.push((name, subnet));
    }
    Ok(out)
}

/// Usable addresses of a subnet (network and broadcast addresses excluded), saturating.
fn addresses(net: &IpNet) -> u64 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    if host_bits >= 63 {
        u64::MAX
    } else {
        (1u64 << host_bits).saturating_sub(2)
    }
}

/// The first subnet of [`DEFAULT_POOL`] holding `needed` addresses (at least a /24) that
/// overlaps none of `taken`.
fn carve(needed: u64, taken: &[IpNet]) -> Option<IpNet> {
    let pool: IpNet = DEFAULT_POOL.parse().ok()?;
    let prefix = (pool.prefix_len()..=24)
        .rev()
        .find(|&p| (1u64 << (32 - u32::from(p))) - 2 >= needed)?;
    let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
    pool.subnets(prefix)
        .ok()?
        .find(|candidate| !taken.iter().any(|t| overlaps(candidate, t)))
}
