//! `peerlab compose --stack` writes files that follow the Compose Specification (its own
//! JSON Schema, tests/data/compose-spec.json) and carry what `docker stack deploy` needs:
//! `deploy:` with replicas, `dnsrr`, placement, overlay networks with subnets, per-replica
//! identity through templates in hostname and environment only.

use std::path::Path;

use peerlab::export::compose::ExportOptions;
use peerlab::export::stack::{Placement, StackOptions, export};
use peerlab::runtime::{NetworkSpec, NodeSpec, RunPlan};
use serde_json::Value;

use crate::support::docker::{must, peerlab};
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

fn plan(nodes: Vec<NodeSpec>, networks: Vec<NetworkSpec>) -> RunPlan {
    run_plan(
        "stack-0f1e",
        Path::new("/tmp/stack-0f1e"),
        "stack",
        "peerlab:0.1.0",
        nodes,
        networks,
    )
}

fn node(name: &str, group: &str, genesis: bool, networks: &[&str]) -> NodeSpec {
    NodeSpec {
        group: group.into(),
        ..on_networks(node_spec(name, genesis, 7, &["--degree", "2"]), networks)
    }
}

#[test]
fn the_three_host_stack_of_the_swarm_test_is_valid_and_placed() {
    let file = Path::new(ROOT).join("tests/swarm/three-hosts.yaml");
    let yaml = must(peerlab().arg("compose").arg(&file).arg("--stack"));
    assert_eq!(violations(&yaml), Vec::<String>::new(), "\n{yaml}");
    let v: Value = serde_saphyr::from_str(&yaml).unwrap();
    let services = v["services"].as_object().unwrap();
    let mut names: Vec<&String> = services.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["edge", "genesis-0", "peers-a", "peers-b", "peers-c"]
    );
    // In plan order in the file (serde_json's map sorts them).
    let at = |s: &str| yaml.find(&format!("\n  {s}:\n")).unwrap();
    let order = ["genesis-0", "peers-a", "peers-b", "peers-c", "edge"].map(at);
    assert!(order.is_sorted(), "{order:?}\n{yaml}");
    // Hosts a, b, c carry the swarm labels h1, h2, h3; `peers` is spread, one service per host.
    for (name, replicas, host) in [
        ("genesis-0", 1, "h1"),
        ("peers-a", 2, "h1"),
        ("peers-b", 2, "h2"),
        ("peers-c", 2, "h3"),
        ("edge", 2, "h3"),
    ] {
        let s = &services[name];
        assert_eq!(s["deploy"]["replicas"], replicas, "{name}");
        assert_eq!(s["deploy"]["endpoint_mode"], "dnsrr", "{name}");
        assert_eq!(
            s["deploy"]["placement"]["constraints"],
            serde_json::json!([format!("node.labels.peerlab.host == {host}")]),
            "{name}"
        );
        assert!(s.get("ports").is_none(), "Swarm refuses ports with dnsrr");
        assert!(
            s.get("depends_on").is_none(),
            "`docker stack deploy` ignores it"
        );
        assert_eq!(
            s["healthcheck"],
            serde_json::json!({"disable": true}),
            "no healthcheck: Swarm would kill joining nodes and hide them from DNS"
        );
        assert_eq!(
            s["networks"]["net"]["aliases"],
            serde_json::json!(["peerlab-nodes"])
        );
    }
    let peers = &services["peers-b"];
    assert_eq!(peers["hostname"], "peers-b-{{.Task.Slot}}");
    assert_eq!(
        peers["environment"]["PEERLAB_NAME"],
        "peers-b-{{.Task.Slot}}"
    );
    assert_eq!(
        peers["environment"]["PEERLAB_ADVERTISE"],
        "peers-b-{{.Task.Slot}}:7070"
    );
    assert_eq!(peers["environment"]["PEERLAB_GENESIS"], "genesis-0:7070");
    // Templates are not expanded in `command`: nothing per replica may sit there.
    assert!(
        !peers["command"].to_string().contains("{{"),
        "{}",
        peers["command"]
    );
    assert_eq!(v["networks"]["net"]["driver"], "overlay");
    assert_eq!(v["networks"]["net"]["attachable"], true);
    assert_eq!(
        v["networks"]["net"]["ipam"]["config"][0]["subnet"],
        "10.200.0.0/24"
    );
}

#[test]
fn place_pins_or_spreads_a_whole_group() {
    let file = Path::new(ROOT).join("tests/swarm/three-hosts.yaml");
    let yaml = must(
        peerlab()
            .arg("compose")
            .arg(&file)
            .args(["--stack", "--place", "peers=h2", "--place", "edge=*"]),
    );
    assert_eq!(violations(&yaml), Vec::<String>::new(), "\n{yaml}");
    let v: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(v["services"]["peers"]["deploy"]["replicas"], 6);
    assert_eq!(
        v["services"]["peers"]["deploy"]["placement"]["constraints"],
        serde_json::json!(["node.labels.peerlab.host == h2"])
    );
    assert!(v["services"].get("peers-a").is_none());
    assert_eq!(
        v["services"]["edge"]["deploy"]["placement"],
        serde_json::json!({"preferences": [{"spread": "node.labels.peerlab.host"}]})
    );
}

#[test]
fn shipped_topologies_export_as_valid_stacks() {
    for file in [
        "quickstart.yaml",
        "fifty.yaml",
        "three-hundred.yaml",
        "three-hosts.yaml",
    ] {
        let path = topologies_dir().join(file);
        let out = must(
            peerlab()
                .arg("compose")
                .arg(&path)
                .args(["--stack", "--drop-delays"]),
        );
        assert_eq!(violations(&out), Vec::<String>::new(), "{file}:\n{out}");
    }
}

#[test]
fn stacks_with_several_genesis_networks_and_spread_groups_are_valid() {
    let nodes = vec![
        node("genesis-0", "genesis", true, &["lan", "wan"]),
        node("genesis-1", "genesis", true, &["lan"]),
        node("edge-0", "edge", false, &["wan"]),
        node("edge-1", "edge", false, &["wan"]),
    ];
    let networks = vec![network("lan", Some("10.77.1.0/24")), network("wan", None)];
    let options = StackOptions {
        compose: ExportOptions::default(),
        placement: vec![
            ("genesis".into(), Placement::Host("h1".into())),
            ("edge".into(), Placement::Spread),
        ],
    };
    let yaml = export(&plan(nodes, networks), &options).unwrap();
    assert_eq!(violations(&yaml), Vec::<String>::new(), "\n{yaml}");
    let v: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(
        v["services"]["genesis-1"]["environment"]["PEERLAB_GENESIS"],
        "genesis-0:7070"
    );
    assert_eq!(
        v["services"]["edge"]["environment"]["PEERLAB_GENESIS"],
        "genesis-0:7070,genesis-1:7070"
    );
    assert_eq!(
        v["services"]["edge"]["deploy"]["placement"]["preferences"][0]["spread"],
        "node.labels.peerlab.host"
    );
    assert_eq!(
        v["networks"]["lan"]["ipam"]["config"][0]["subnet"],
        "10.77.1.0/24"
    );
    assert_eq!(
        v["networks"]["wan"]["ipam"]["config"][0]["subnet"],
        "10.200.0.0/24"
    );
}

#[test]
fn the_schema_rejects_what_a_stack_must_not_say() {
    // Guards the guard: a validator that accepted any `deploy:` would pass the tests above.
    let bad = "services:\n  a:\n    image: x\n    deploy:\n      replicas: three\n      endpoint_mode: 7\n      nonsense: 1\n";
    let found = violations(bad);
    assert!(found.len() >= 2, "{found:?}");
}

#[test]
fn place_without_stack_and_unknown_groups_are_bad_input() {
    let file = Path::new(ROOT).join("tests/swarm/three-hosts.yaml");
    let out = crate::support::docker::output(
        peerlab()
            .arg("compose")
            .arg(&file)
            .args(["--place", "west=h1"]),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = crate::support::docker::output(
        peerlab()
            .arg("compose")
            .arg(&file)
            .args(["--stack", "--place", "north=h1"]),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("group `north`"), "{stderr}");
}
