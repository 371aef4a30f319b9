//! Topology files: the shipped examples validate, bad files are reported at the right line
//! with the right key path, and valid files expand into the expected node specs.

use std::path::PathBuf;
use std::time::Duration;

use peerlab::orchestrator::plan;
use peerlab::topology::{self, Diagnostic, TopologyError};

use crate::support::topologies_dir;

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(topologies_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn errors(source: &str) -> Vec<Diagnostic> {
    match topology::parse_str(source, "bad.yaml") {
        Ok(t) => panic!("expected errors, got a valid topology: {t:?}"),
        Err(TopologyError { diagnostics }) => diagnostics,
    }
}

#[test]
fn every_shipped_topology_validates() {
    let files = example_files();
    for required in [
        "quickstart.yaml",
        "ten.yaml",
        "fifty.yaml",
        "three-hundred.yaml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(required)),
            "topologies/{required} is missing"
        );
    }
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        assert!(
            source.starts_with('#'),
            "{} must start with a comment on what it shows",
            file.display()
        );
        if let Err(e) = topology::load(file) {
            panic!("{} does not validate:\n{e}", file.display());
        }
    }
    let sizes: Vec<(String, usize)> = files
        .iter()
        .map(|f| {
            let t = topology::load(f).unwrap();
            (t.name.clone(), t.node_count())
        })
        .collect();
    for (name, count) in [
        ("quickstart", 5),
        ("ten", 10),
        ("fifty", 50),
        ("three-hundred", 300),
    ] {
        assert!(
            sizes.contains(&(name.to_string(), count)),
            "{name} should have {count} nodes: {sizes:?}"
        );
    }
}

/// A valid document; each bad case below changes one part of it.
const HEAD: &str = "name: demo\ngenesis:\n  count: 1\n";

#[test]
fn bad_files_are_reported_at_their_line_with_path_and_expectation() {
    // (what, source, line, column or 0 for any, path, message fragment)
    let cases: &[(&str, String, usize, usize, &str, &str)] = &[
        (
            "unknown key",
            format!("{HEAD}  degre: 3\n"),
            4,
            3,
            "genesis.degre",
            "unknown field `degre`",
        ),
        (
            "wrong type",
            "name: demo\ngenesis:\n  count: one\n".into(),
            3,
            10,
            "genesis.count",
            "invalid u32",
        ),
        (
            "missing genesis",
            "name: demo\n".into(),
            1,
            1,
            "",
            "missing field `genesis`",
        ),
        (
            "genesis count 0",
            "name: demo\ngenesis:\n  count: 0\ngroups:\n  - {name: p, count: 2}\n".into(),
            3,
            10,
            "genesis.count",
            "expected at least 1",
        ),
        (
            "degree above nodes-1",
            format!(
                "{HEAD}groups:\n  - name: a\n    count: 2\n  - name: b\n    count: 2\n    settings:\n      max_peers: 12\n      degree: 9\n"
            ),
            11,
            15,
            "groups[1].settings.degree",
            "9 is more than the 4 other nodes; expected at most 4",
        ),
        (
            "degree 0",
            format!("{HEAD}defaults:\n  degree: 0\n"),
            5,
            11,
            "defaults.degree",
            "expected at least 1",
        ),
        (
            "max_peers below degree",
            format!(
                "{HEAD}groups:\n  - name: a\n    count: 9\n    settings: {{degree: 5, max_peers: 4}}\n"
            ),
            7,
            0,
            "groups[0].settings.max_peers",
            "4 is less than the degree 5; expected at least 5",
        ),
        (
            "duplicate group",
            format!("{HEAD}groups:\n  - {{name: a, count: 1}}\n  - {{name: a, count: 1}}\n"),
            6,
            12,
            "groups[1].name",
            "group `a` is declared twice",
        ),
        (
            "group named genesis",
            format!("{HEAD}groups:\n  - name: genesis\n    count: 1\n"),
            5,
            11,
            "groups[0].name",
            "`genesis` is reserved",
        ),
        (
            "duplicate network",
            "name: demo\ngenesis:\n  count: 1\n  networks: [a]\nnetworks:\n  - name: a\n  - name: a\n"
                .into(),
            7,
            11,
            "networks[1].name",
            "network `a` is declared twice",
        ),
        (
            "unknown network",
            format!(
                "{HEAD}  networks: [lan]\ngroups:\n  - name: p\n    count: 1\n    networks: [lan, wan]\nnetworks:\n  - name: lan\n"
            ),
            8,
            21,
            "groups[0].networks[1]",
            "unknown network `wan`; expected one of: lan",
        ),
        (
            "bad subnet",
            format!(
                "{HEAD}  networks: [lan]\nnetworks:\n  - name: lan\n    subnet: 10.77.1.0/33\n"
            ),
            7,
            13,
            "networks[0].subnet",
            "is not a CIDR subnet",
        ),
        (
            "subnet with host bits",
            format!(
                "{HEAD}  networks: [lan]\nnetworks:\n  - name: lan\n    subnet: 10.77.1.5/24\n"
            ),
            7,
            13,
            "networks[0].subnet",
            "expected the network address `10.77.1.0/24`",
        ),
        (
            "reliability above 1",
            format!("{HEAD}checks:\n  broadcast:\n    reliability: 1.5\n"),
            6,
            18,
            "checks.broadcast.reliability",
            "expected a number from 0 to 1",
        ),
        (
            "min_degree above max_degree",
            format!(
                "{HEAD}groups:\n  - {{name: p, count: 5}}\nchecks:\n  formation:\n    max_degree: 2\n    min_degree: 3\n"
            ),
            9,
            17,
            "checks.formation.min_degree",
            "3 is more than max_degree 2",
        ),
        (
            "min_degree above nodes-1",
            format!(
                "{HEAD}groups:\n  - {{name: p, count: 2}}\nchecks:\n  formation:\n    min_degree: 3\n"
            ),
            8,
            17,
            "checks.formation.min_degree",
            "3 is more than the 2 other nodes",
        ),
        (
            "broadcast from names no node",
            format!(
                "{HEAD}groups:\n  - {{name: peers, count: 2}}\nchecks:\n  broadcast:\n    from:\n      - genesis-0\n      - \"peer-*\"\n"
            ),
            10,
            9,
            "checks.broadcast.from[1]",
            "`peer-*` names no node; expected a node name or glob matching genesis-0, peers-0..peers-1",
        ),
        (
            "bad name syntax",
            "name: Demo_1\ngenesis:\n  count: 1\n".into(),
            1,
            7,
            "name",
            "lowercase letters, digits and `-`",
        ),
        (
            "bad duration",
            format!("{HEAD}groups:\n  - name: p\n    count: 1\n    stagger: fast\n"),
            7,
            14,
            "groups[0].stagger",
            "is not a duration",
        ),
        (
            "duplicate key",
            format!("{HEAD}name: again\n"),
            4,
            1,
            "name",
            "appears twice",
        ),
        (
            "group unreachable from genesis",
            format!(
                "{HEAD}  networks: [a]\ngroups:\n  - name: p\n    count: 1\n    networks: [b]\nnetworks:\n  - name: a\n  - name: b\n"
            ),
            8,
            16,
            "groups[0].networks",
            "shares no network with the genesis nodes",
        ),
        (
            "yes is not a boolean",
            format!("{HEAD}checks:\n  formation:\n    connected: yes\n"),
            6,
            16,
            "checks.formation.connected",
            "invalid boolean",
        ),
    ];
    let mut failures = Vec::new();
    for (what, source, line, column, path, fragment) in cases {
        let diagnostics = errors(source);
        let found = diagnostics.iter().any(|d| {
            d.file == "bad.yaml"
                && d.line == *line
                && (*column == 0 || d.column == *column)
                && d.path == *path
                && d.message.contains(fragment)
        });
        if !found {
            let got: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{what}: expected line {line} col {column} `{path}` containing {fragment:?}\n  got: {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let source = "\
name: demo
genesis:
  count: 1
groups:
  - name: genesis
    count: 2
  - name: peers
    count: 2
    settings:
      degree: 7
networks:
  - name: lan
    subnet: nonsense
checks:
  broadcast:
    reliability: -0.5
";
    let diagnostics = errors(source);
    let at: Vec<(usize, &str)> = diagnostics
        .iter()
        .map(|d| (d.line, d.path.as_str()))
        .collect();
    for expected in [
        (5, "groups[0].name"),
        (10, "groups[1].settings.degree"),
        (12, "networks[0].name"),
        (13, "networks[0].subnet"),
        (16, "checks.broadcast.reliability"),
    ] {
        assert!(at.contains(&expected), "{expected:?} missing from {at:?}");
    }
    let rendered = TopologyError { diagnostics }.to_string();
    assert!(
        rendered
            .lines()
            .any(|l| l == "bad.yaml:10:15: groups[1].settings.degree: 7 is more than the 4 other nodes; expected at most 4"),
        "{rendered}"
    );
}

#[test]
fn defaults_are_reported_once_not_per_group() {
    let source = format!(
        "{HEAD}defaults:\n  degree: 9\ngroups:\n  - {{name: a, count: 1}}\n  - {{name: b, count: 1}}\n"
    );
    let diagnostics = errors(&source);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].path, "defaults.degree");
    assert_eq!(diagnostics[0].line, 5);
}

#[test]
fn unreadable_file_is_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let err = topology::load(&missing).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1);
    assert!(err.diagnostics[0].message.contains("cannot read"));
    assert!(err.to_string().starts_with(&missing.display().to_string()));
}

#[test]
fn load_labels_diagnostics_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, "name: x\ngenesis:\n  count: 0\n").unwrap();
    let err = topology::load(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3:10: genesis.count: 0 genesis nodes leaves nothing to join; expected at least 1",
            file.display()
        )
    );
}

const EXPANSION: &str = "\
name: expand
seed: 7
defaults:
  degree: 2
  heartbeat_timeout: 2s
genesis:
  count: 2
  networks: [lan]
groups:
  - name: early
    count: 3
    stagger: 100ms
    networks: [lan]
  - name: late
    count: 2
    start_delay: 1s
    stagger: 250ms
    settings:
      degree: 3
      max_peers: 8
    networks: [lan, wan]
networks:
  - name: lan
    subnet: 10.77.1.0/24
  - name: wan
";

#[test]
fn node_specs_expand_names_order_timing_and_flags() {
    let t = topology::parse_str(EXPANSION, "expand.yaml").unwrap();
    assert_eq!(t.node_count(), 7);
    let names = t.node_names();
    assert_eq!(
        names,
        [
            "genesis-0",
            "genesis-1",
            "early-0",
            "early-1",
            "early-2",
            "late-0",
            "late-1"
        ]
    );
    let specs = plan::node_specs(&t, t.seed);
    assert_eq!(
        specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        names
    );
    assert!(specs[0].genesis && specs[1].genesis && !specs[2].genesis);
    assert_eq!(specs[2].group, "early");
    assert_eq!(specs[6].group, "late");
    assert_eq!(specs[0].start_after, Duration::ZERO);
    assert_eq!(specs[4].start_after, Duration::from_millis(200));
    assert_eq!(specs[6].start_after, Duration::from_millis(1250));
    assert_eq!(specs[0].networks, ["lan"]);
    assert_eq!(specs[6].networks, ["lan", "wan"]);

    let flags = |i: usize| specs[i].node_args.join(" ");
    assert_eq!(
        flags(2),
        "--degree 2 --max-peers 16 --max-connections 128 --heartbeat-interval 500ms \
         --heartbeat-timeout 2s --suspect-timeout 3s"
    );
    assert!(
        flags(6).starts_with("--degree 3 --max-peers 8 "),
        "{}",
        flags(6)
    );
    assert!(flags(6).contains("--heartbeat-timeout 2s"), "{}", flags(6));

    // Seeds: deterministic for a seed, distinct per node, different for another seed.
    let again = plan::node_specs(&t, t.seed);
    assert_eq!(specs, again);
    let mut seeds: Vec<u64> = specs.iter().map(|s| s.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), specs.len());
    let other = plan::node_specs(&t, t.seed + 1);
    assert!(specs.iter().zip(&other).all(|(a, b)| a.seed != b.seed));

    let networks = plan::network_specs(&t);
    assert_eq!(networks.len(), 2);
    assert_eq!(networks[0].name, "lan");
    assert_eq!(networks[0].subnet.as_deref(), Some("10.77.1.0/24"));
    assert_eq!(networks[1].subnet, None);
}

#[test]
fn rendered_flags_are_accepted_by_peerlab_node() {
    use clap::Parser;
    let t = topology::parse_str(EXPANSION, "expand.yaml").unwrap();
    for spec in plan::node_specs(&t, 1) {
        let mut argv = vec!["peerlab".to_string(), "node".to_string()];
        argv.extend(spec.node_args.clone());
        let cli = peerlab::cli::Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{argv:?} rejected: {e}"));
        let peerlab::cli::Command::Node(args) = cli.command else {
            panic!("not a node command");
        };
        let settings = if spec.group == "late" {
            &t.groups[1].settings
        } else {
            &t.genesis.settings
        };
        assert_eq!(args.degree, settings.degree);
        assert_eq!(args.max_peers, settings.max_peers);
        assert_eq!(args.heartbeat_timeout, settings.heartbeat_timeout);
    }
}

#[test]
fn small_topologies_get_a_degree_they_can_satisfy() {
    let t = topology::parse_str(
        "name: pair\ngenesis:\n  count: 1\ngroups:\n  - {name: p, count: 1}\n",
        "pair.yaml",
    )
    .unwrap();
    assert_eq!(t.groups[0].settings.degree, 1);
    assert_eq!(t.checks.formation.min_degree, 1);
    assert_eq!(t.checks.formation.within, Duration::from_secs(30));
    assert!(t.checks.broadcast.is_none());
}

#[test]
fn topology_serializes_durations_as_text() {
    let t = topology::parse_str(EXPANSION, "expand.yaml").unwrap();
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(json["groups"][1]["stagger"], "250ms");
    assert_eq!(json["groups"][1]["settings"]["heartbeat_timeout"], "2s");
    assert_eq!(json["name"], "expand");
}

#[test]
fn schema_is_valid_json_schema_and_accepts_the_examples() {
    let schema = topology::json_schema();
    let text = serde_json::to_string_pretty(&schema).unwrap();
    let reparsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reparsed, schema);
    let properties = schema["properties"].as_object().unwrap();
    for key in [
        "name", "seed", "image", "defaults", "genesis", "groups", "networks", "checks", "scenario",
    ] {
        assert!(properties.contains_key(key), "schema lacks `{key}`");
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["name", "genesis"]);
    assert_eq!(schema["additionalProperties"], false);

    jsonschema::meta::validate(&schema).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for file in example_files() {
        let source = std::fs::read_to_string(&file).unwrap();
        let instance: serde_json::Value = serde_saphyr::from_str(&source).unwrap();
        let problems: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{}: {problems:?}", file.display());
    }
    let typo: serde_json::Value =
        serde_json::json!({"name": "x", "genesis": {"count": 1}, "nme": 1});
    assert!(!validator.is_valid(&typo));
}

#[test]
fn resources_layer_over_defaults_and_reach_the_plan() {
    let source = "name: res\ngenesis: {count: 1}\ndefaults:\n  resources: {cpu: 250m, memory: 64Mi}\ngroups:\n  - name: peers\n    count: 2\n    settings:\n      resources: {cpu: 0.5}\n  - name: free\n    count: 1\n";
    let t = topology::parse_str(source, "res.yaml").expect("valid");
    let nodes = plan::node_specs(&t, 1);
    let of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.resources)
            .expect("resources")
    };
    assert_eq!(of("genesis-0").cpu_millis, Some(250));
    assert_eq!(of("genesis-0").memory_bytes, Some(64 << 20));
    // A group's own key overrides the default; the key it does not set is inherited.
    assert_eq!(of("peers-1").cpu_millis, Some(500));
    assert_eq!(of("peers-1").memory_bytes, Some(64 << 20));
    assert_eq!(of("free-0").cpu_millis, Some(250));
    let none = topology::parse_str("name: r\ngenesis: {count: 1}\n", "r.yaml").unwrap();
    assert!(plan::node_specs(&none, 1)[0].resources.is_none());
}

#[test]
fn malformed_resources_are_reported_at_their_key() {
    let source = "name: res\ngenesis: {count: 1}\ndefaults:\n  resources: {cpu: 250m, memory: 64m}\ngroups:\n  - name: peers\n    count: 2\n    settings:\n      resources:\n        cpu: lots\n";
    let errs = errors(source);
    assert_eq!(errs.len(), 2, "{errs:?}");
    let memory = &errs[0];
    assert_eq!(
        (memory.line, memory.path.as_str()),
        (4, "defaults.resources.memory")
    );
    assert!(memory.message.contains("`64Mi`"), "{}", memory.message);
    let cpu = &errs[1];
    assert_eq!(
        (cpu.line, cpu.path.as_str()),
        (10, "groups[0].settings.resources.cpu")
    );
    assert!(cpu.message.contains("`250m`"), "{}", cpu.message);
    let unknown =
        errors("name: res\ngenesis:\n  count: 1\n  settings:\n    resources: {cpus: 1}\n");
    assert!(
        unknown[0].message.contains("cpus"),
        "an unknown key is named: {unknown:?}"
    );
}

#[test]
fn the_schema_checks_resources() {
    let schema = topology::json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let with = |resources: serde_json::Value| serde_json::json!({"name": "x", "genesis": {"count": 1}, "defaults": {"resources": resources}});
    assert!(validator.is_valid(&with(serde_json::json!({"cpu": "250m", "memory": "64Mi"}))));
    assert!(validator.is_valid(&with(serde_json::json!({"cpu": 0.5}))));
    assert!(!validator.is_valid(&with(serde_json::json!({"cpu": "lots"}))));
    assert!(!validator.is_valid(&with(serde_json::json!({"memory": "1.5Gi"}))));
    assert!(!validator.is_valid(&with(serde_json::json!({"cpus": 1}))));
}
