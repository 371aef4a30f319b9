//! Run plans written by hand, for the tests that drive a runtime or an exporter directly
//! without a topology file.

use std::path::Path;
use std::time::Duration;

use peerlab::runtime::{NetworkSpec, NodeSpec, RunPlan};

/// A node of group `genesis` or `peers`, on the run's default network, started at once,
/// with `args` as its `peerlab node` flags.
pub fn node_spec(name: &str, genesis: bool, seed: u64, args: &[&str]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        group: if genesis { "genesis" } else { "peers" }.into(),
        genesis,
        networks: Vec::new(),
        start_after: Duration::ZERO,
        node_args: args.iter().map(|a| a.to_string()).collect(),
        seed,
        host: None,
        resources: None,
    }
}

/// [`node_spec`] on the named networks.
pub fn on_networks(spec: NodeSpec, networks: &[&str]) -> NodeSpec {
    NodeSpec {
        networks: networks.iter().map(|n| n.to_string()).collect(),
        ..spec
    }
}

/// A network with an engine-chosen subnet (`None`) or a fixed one.
pub fn network(name: &str, subnet: Option<&str>) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        subnet: subnet.map(str::to_string),
    }
}

/// A plan of `nodes` on `networks`, run in the foreground.
pub fn run_plan(
    run_id: &str,
    run_dir: &Path,
    topology_name: &str,
    image: &str,
    nodes: Vec<NodeSpec>,
    networks: Vec<NetworkSpec>,
) -> RunPlan {
    RunPlan {
        run_id: run_id.into(),
        run_dir: run_dir.into(),
        topology_name: topology_name.into(),
        image: image.into(),
        networks,
        nodes,
        hosts: Vec::new(),
        detach: false,
        admin_token: super::ADMIN_TOKEN.parse().expect("a valid admin token"),
        network_key: None,
    }
}
