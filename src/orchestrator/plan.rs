//! The run plan: a topology and a seed turned into the nodes and networks a runtime starts.
//!
//! This is the one place a [`RunPlan`] is built from a topology (`peerlab run`/`up`, the
//! compose export, the library API and the benches all come here), so a seed means the same
//! nodes, names, flags and per-node seeds wherever a topology runs. The topology stays a pure
//! model that knows no runtime; the runtimes see only the plan.

use std::path::Path;

use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::contract::LinkShape;
use crate::contract::{AdminToken, NETWORK_KEY_ENV, NetworkSecret};
use crate::runtime::{HostSpec, NetworkSpec, NodeResources, NodeSpec, RunPlan};
use crate::topology::{GENESIS, NetworkKeyMode, Topology, node_name};

/// A fresh run id, `<topology>-<6 hex digits>`: runs of one topology side by side (and
/// their containers, networks and log directories) do not collide.
pub fn fresh_run_id(topology: &Topology) -> String {
    let suffix: u32 = rand::rng().random::<u32>() & 0xff_ffff;
    format!("{}-{suffix:06x}", topology.name)
}

/// The plan of one run of `topology`. `seed` is the run's seed (the topology's unless
/// overridden); logs and state go to `<runs_dir>/<run_id>`; `detach` leaves the nodes
/// running after the orchestrator exits (`peerlab up`).
///
/// Fails (bad input: nothing has started) only when the topology takes its network key
/// from the environment (`network_key: from-env`) and `PEERLAB_NETWORK_KEY` is unset or
/// malformed; the error says what to set.
pub fn build(
    topology: &Topology,
    seed: u64,
    run_id: &str,
    runs_dir: &Path,
    detach: bool,
) -> Result<RunPlan, String> {
    let network_key = run_network_key(topology.network_key, || std::env::var_os(NETWORK_KEY_ENV))?;
    Ok(RunPlan {
        network_key,
        ..layout(topology, seed, run_id, runs_dir, detach)
    })
}

/// The plan an export writes ([`build`] without reading any key): an exported file holds
/// no secret, but requires one from whoever deploys it, so its plan carries a key drawn
/// here only to say that the nodes need one. No exporter writes it out.
pub fn build_for_export(topology: &Topology, seed: u64, name: &str, runs_dir: &Path) -> RunPlan {
    RunPlan {
        network_key: topology.network_key.map(|_| NetworkSecret::generate()),
        ..layout(topology, seed, name, runs_dir, true)
    }
}

/// The network key of one run: drawn for `per-run`, read (through `env`, which gives
/// `PEERLAB_NETWORK_KEY`) for `from-env`.
pub fn run_network_key(
    mode: Option<NetworkKeyMode>,
    env: impl FnOnce() -> Option<std::ffi::OsString>,
) -> Result<Option<NetworkSecret>, String> {
    match mode {
        None => Ok(None),
        Some(NetworkKeyMode::PerRun) => Ok(Some(NetworkSecret::generate())),
        Some(NetworkKeyMode::FromEnv) => NetworkSecret::from_env_value(env()).map(Some),
    }
}

fn layout(topology: &Topology, seed: u64, run_id: &str, runs_dir: &Path, detach: bool) -> RunPlan {
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
        network_key: None,
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

        let plan = build(&topology, 7, "plan-0a0b0c", Path::new("/runs"), true).unwrap();
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

    #[test]
    fn the_network_key_is_drawn_per_run_read_from_the_environment_or_absent() {
        assert_eq!(run_network_key(None, || panic!("not read")), Ok(None));
        let first = run_network_key(Some(NetworkKeyMode::PerRun), || panic!("not read"));
        let second = run_network_key(Some(NetworkKeyMode::PerRun), || panic!("not read"));
        let (first, second) = (first.unwrap().unwrap(), second.unwrap().unwrap());
        assert_ne!(first, second, "a fresh key for every run");
        let given = "0123456789abcdef0123456789abcdef";
        let read = run_network_key(Some(NetworkKeyMode::FromEnv), || Some(given.into()));
        assert_eq!(read.unwrap().unwrap().expose(), given);
        let unset = run_network_key(Some(NetworkKeyMode::FromEnv), || None).unwrap_err();
        assert!(unset.contains("PEERLAB_NETWORK_KEY is not set"), "{unset}");
    }

    #[test]
    fn an_export_plan_needs_a_key_exactly_when_the_topology_asks_for_one() {
        let keyed = format!("{TWO_GROUPS}network_key: from-env\n");
        let keyed = crate::topology::parse_str(&keyed, "keyed.yaml").unwrap();
        let plain = crate::topology::parse_str(TWO_GROUPS, "plain.yaml").unwrap();
        // No environment is read for an export: a file is written, not run.
        assert!(
            build_for_export(&keyed, 1, "keyed", Path::new("/runs"))
                .network_key
                .is_some()
        );
        assert!(
            build_for_export(&plain, 1, "plain", Path::new("/runs"))
                .network_key
                .is_none()
        );
    }
}
