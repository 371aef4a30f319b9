//! The run plan: a topology and a seed turned into the nodes and networks a runtime starts.
//!
//! This is the one place a [`RunPlan`] is built from a topology (`peerlab run`/`up`, the
//! compose export, the library API and the benches all come here), so a seed means the same
//! nodes, names, flags and per-node seeds wherever a topology runs. The topology stays a pure
//! model that knows no runtime; the runtimes see only the plan.

use std::path::Path;

use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::contract::AdminToken;
use crate::contract::LinkShape;
use crate::runtime::{HostSpec, NetworkSpec, NodeResources, NodeSpec, RunPlan};
use crate::topology::{GENESIS, Topology, node_name};

/// A fresh run id, `<topology>-<6 hex digits>`: runs of one topology side by side (and
/// their containers, networks and log directories) do not collide.
pub fn fresh_run_id(topology: &Topology) -> String {
    let suffix: u32 = rand::rng().random::<u32>() & 0xff_ffff;
    format!("{}-{suffix:06x}", topology.name)
}

/// The plan of one run of `topology`. `seed` is the run's seed (the topology's unless
/// overridden); logs and state go to `<runs_dir>/<run_id>`; `detach` leaves the nodes
/// running after the orchestrator exits (`peerlab up`).
pub fn build(
    topology: &Topology,
    seed: u64,
    run_id: &str,
    runs_dir: &Path,
    detach: bool,
) -> RunPlan {
    RunPlan {
        run_id: run_id.to_string(),
        run_dir: runs_dir.join(run_id),
        topology_name: topology.name.clone(),
        image: topology.image.clone(),
        networks: network_specs(topology),
        nodes: node_specs(topology, seed),
        hosts: host_specs(topology),
        detach,
        admin_token: AdminToken::generate(),
    }
}

/// Every node to start, genesis first, then groups in order. Each node's seed is derived
/// from `seed` and the node's index, so the same seed gives the same run. Manual groups are
/// in the plan too (a runtime allocates them), started only by a scenario's `join`.
pub fn node_specs(topology: &Topology, seed: u64) -> Vec<NodeSpec> {
    let mut specs = Vec::with_capacity(topology.node_count());
    for group in topology.all_groups() {
        let args = group.settings.to_args();
        for i in 0..group.count {
            let index = specs.len() as u64;
            let host = topology.host_of(group, i).map(str::to_string);
            specs.push(NodeSpec {
                name: node_name(&group.name, i),
                group: group.name.clone(),
                genesis: group.name == GENESIS,
                networks: group.networks.clone(),
                start_after: group.start_delay + group.stagger * i as u32,
                node_args: args.clone(),
                seed: node_seed(seed, index),
                host,
                resources: group.settings.resources.map(|r| NodeResources {
                    cpu_millis: r.cpu_millis,
                    memory_bytes: r.memory_bytes,
                }),
            });
        }
    }
    specs
}

/// The topology's hosts with the link from each to every other; a pair whose link is not
/// shaped (no entry, no default, or an entry that shapes nothing) is left out.
pub fn host_specs(topology: &Topology) -> Vec<HostSpec> {
    topology
        .hosts
        .iter()
        .map(|host| HostSpec {
            name: host.name.clone(),
            label: host.label.clone(),
            links: topology
                .hosts
                .iter()
                .filter_map(|other| {
                    let shape = LinkShape::from(topology.links.between(&host.name, &other.name)?);
                    (shape != LinkShape::default()).then(|| (other.name.clone(), shape))
                })
                .collect(),
        })
        .collect()
}

/// The topology's own networks (empty: the runtime creates one default network).
pub fn network_specs(topology: &Topology) -> Vec<NetworkSpec> {
    topology
        .networks
        .iter()
        .map(|n| NetworkSpec {
            name: n.name.clone(),
            subnet: n.subnet.clone(),
        })
        .collect()
}

/// A node's seed: a hash of the run seed and the node index, so neighbouring indices and
/// neighbouring run seeds still give unrelated randomness.
fn node_seed(seed: u64, index: u64) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"peerlab node seed\0")
        .chain_update(seed.to_le_bytes())
        .chain_update(index.to_le_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_GROUPS: &str =
        "name: plan\nseed: 7\ngenesis: {count: 1}\ngroups:\n  - {name: peers, count: 2}\n";

    #[test]
    fn node_seeds_differ_by_index_and_seed() {
        assert_eq!(node_seed(1, 0), node_seed(1, 0));
        assert_ne!(node_seed(1, 0), node_seed(1, 1));
        assert_ne!(node_seed(1, 0), node_seed(2, 0));
    }

    #[test]
    fn a_plan_names_its_run_and_places_its_files_under_the_runs_dir() {
        let topology = crate::topology::parse_str(TWO_GROUPS, "plan.yaml").unwrap();
        let run_id = fresh_run_id(&topology);
        let (name, suffix) = run_id.rsplit_once('-').unwrap();
        assert_eq!(name, "plan");
        assert_eq!(suffix.len(), 6);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()), "{run_id}");

        let plan = build(&topology, 7, "plan-0a0b0c", Path::new("/runs"), true);
        assert_eq!(plan.run_id, "plan-0a0b0c");
        assert_eq!(plan.run_dir, Path::new("/runs/plan-0a0b0c"));
        assert_eq!(plan.topology_name, "plan");
        assert!(plan.detach);
        assert_eq!(plan.nodes, node_specs(&topology, 7));
        assert_eq!(
            plan.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            ["genesis-0", "peers-0", "peers-1"]
        );
        assert!(plan.networks.is_empty());
    }
}
