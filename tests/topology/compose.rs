//! The shipped docker-compose.yml and `peerlab compose` output follow the Compose
//! Specification (its own JSON Schema, copied to tests/data with its NOTICE), so both
//! docker-compose 1.29 and `docker compose` v2 read them.

use std::path::Path;
use std::time::Duration;

use peerlab::export::compose::{ExportOptions, export, export_with};
use peerlab::runtime::{NetworkSpec, NodeSpec, RunPlan};
use serde_json::Value;

use crate::support::fixtures::{network, node_spec, on_networks, run_plan};
use crate::support::{ROOT, topologies_dir};

fn schema() -> Value {
    let path = Path::new(ROOT).join("tests/data/compose-spec.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every schema violation of `yaml`, one per line (empty when valid).
fn violations(yaml: &str) -> Vec<String> {
    let instance: Value = serde_saphyr::from_str(yaml).unwrap();
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn node(name: &str, genesis: bool, networks: &[&str], start_after: Duration) -> NodeSpec {
    let args = ["--degree", "2", "--heartbeat-interval", "500ms"];
    NodeSpec {
        start_after,
        ..on_networks(node_spec(name, genesis, 7, &args), networks)
    }
}

fn plan(nodes: Vec<NodeSpec>, networks: Vec<NetworkSpec>) -> RunPlan {
    let dir = Path::new("/tmp/schema-0f1e");
    run_plan(
        "schema-0f1e",
        dir,
        "schema",
        "peerlab:0.1.0",
        nodes,
        networks,
    )
}

#[test]
fn shipped_compose_file_is_valid() {
    let path = Path::new(ROOT).join("docker-compose.yml");
    let yaml = std::fs::read_to_string(path).unwrap();
    assert_eq!(violations(&yaml), Vec::<String>::new());
    let file: Value = serde_saphyr::from_str(&yaml).unwrap();
    let peer = &file["services"]["peer"];
    assert_eq!(
        peer["depends_on"]["genesis"]["condition"],
        "service_healthy"
    );
    assert!(
        peer["environment"].get("PEERLAB_ADVERTISE").is_none(),
        "replicas must advertise their own hostname"
    );
    assert_eq!(file["services"]["genesis"]["healthcheck"]["test"][0], "CMD");
}

#[test]
fn exported_plan_with_default_network_is_valid() {
    let zero = Duration::ZERO;
    let yaml = export(&plan(
        vec![
            node("genesis-0", true, &[], zero),
            node("peers-0", false, &[], zero),
            node("peers-1", false, &[], zero),
        ],
        vec![],
    ))
    .unwrap();
    assert_eq!(violations(&yaml), Vec::<String>::new(), "\n{yaml}");
}

#[test]
fn exported_plan_with_subnets_several_genesis_and_dropped_delays_is_valid() {
    let nodes = vec![
        node("genesis-0", true, &["lan", "wan"], Duration::ZERO),
        node("genesis-1", true, &["lan"], Duration::ZERO),
        node("edge-0", false, &["wan"], Duration::from_secs(2)),
    ];
    let networks = vec![network("lan", Some("10.77.1.0/24")), network("wan", None)];
    let yaml = export_with(
        &plan(nodes, networks),
        ExportOptions {
            drop_start_delays: true,
        },
    )
    .unwrap();
    assert_eq!(violations(&yaml), Vec::<String>::new(), "\n{yaml}");
    let file: Value = serde_saphyr::from_str(&yaml).unwrap();
    // The seed stays a string argument, not a YAML number.
    assert_eq!(file["services"]["edge-0"]["command"][5], "7");
}

#[test]
fn the_schema_rejects_what_compose_rejects() {
    // Guards the guard: a validator that accepted everything would pass the tests above.
    let bad = "services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: sometimes\n    nonsense: 1\n";
    let found = violations(bad);
    assert!(found.len() >= 2, "{found:?}");
}

/// The run plan of a shipped topology, as the orchestrator builds it.
fn topology_plan(file: &str) -> RunPlan {
    let path = topologies_dir().join(file);
    let topology = peerlab::topology::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let run_id = format!("{}-0f1e", topology.name);
    peerlab::orchestrator::plan::build_for_export(
        &topology,
        topology.seed,
        &run_id,
        Path::new("/tmp/unused"),
    )
}

#[test]
fn every_shipped_topology_exports_to_a_valid_file() {
    let dir = topologies_dir();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let plan = topology_plan(&file);
        let yaml = export_with(
            &plan,
            ExportOptions {
                drop_start_delays: true,
            },
        )
        .unwrap();
        assert_eq!(violations(&yaml), Vec::<String>::new(), "{file}");
        let services: Value = serde_saphyr::from_str(&yaml).unwrap();
        let count = services["services"].as_object().unwrap().len();
        assert_eq!(count, plan.nodes.len(), "{file}: one service per node");
    }
}

#[test]
fn staggered_topologies_export_and_late_waves_are_refused() {
    // quickstart only staggers its peers: pacing that compose does itself.
    assert!(export(&topology_plan("quickstart.yaml")).is_ok());
    // fifty starts a second wave 3s late: dropping that changes the run, so it needs consent.
    let err = export(&topology_plan("fifty.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("start_delay"), "{err}");
}

/// A plan whose peers have the topology's `resources`.
fn limited_plan() -> RunPlan {
    let limited = |spec: NodeSpec| NodeSpec {
        resources: Some(peerlab::runtime::NodeResources {
            cpu_millis: Some(250),
            memory_bytes: Some(64 << 20),
        }),
        ..spec
    };
    plan(
        vec![
            node("genesis-0", true, &[], Duration::ZERO),
            limited(node("peers-0", false, &[], Duration::ZERO)),
        ],
        vec![],
    )
}

#[test]
fn resources_become_compose_limits_and_the_file_stays_valid() {
    let yaml = export(&limited_plan()).unwrap();
    assert_eq!(violations(&yaml), Vec::<String>::new(), "\n{yaml}");
    let file: Value = serde_saphyr::from_str(&yaml).unwrap();
    let peer = &file["services"]["peers-0"];
    assert_eq!(peer["cpus"], 0.25, "\n{yaml}");
    assert_eq!(peer["mem_limit"], "64m", "\n{yaml}");
    let genesis = &file["services"]["genesis-0"];
    assert!(genesis.get("cpus").is_none() && genesis.get("mem_limit").is_none());
}

#[test]
fn resources_become_stack_limits_and_the_file_stays_valid() {
    let yaml = peerlab::export::stack::export(&limited_plan(), &Default::default()).expect("stack");
    assert_eq!(violations(&yaml), Vec::<String>::new(), "\n{yaml}");
    let file: Value = serde_saphyr::from_str(&yaml).unwrap();
    let limits = &file["services"]["peers"]["deploy"]["resources"]["limits"];
    assert_eq!(limits["cpus"], "0.25", "\n{yaml}");
    assert_eq!(limits["memory"], "64m", "\n{yaml}");
    assert!(
        file["services"]["genesis-0"]["deploy"]
            .get("resources")
            .is_none()
    );
}
