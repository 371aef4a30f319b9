//! Hosts in a topology (`hosts:`, `links:`, `host:` of the genesis and groups, and
//! `partition: {host: ..}`): the plan places every node on the host the file says (by name
//! or spread round-robin), carries each pair's link shape, and every mistake is reported at
//! its line and key path.

use std::path::Path;
use std::time::Duration;

use peerlab::contract::LinkShape;
use peerlab::orchestrator::plan;
use peerlab::topology::{self, Diagnostic, ResolvedAction, TopologyError};

const THREE: &str = "\
name: three
hosts:
  - {name: eu, label: node-1}
  - {name: us}
  - {name: asia}
links:
  - {between: [asia, eu], latency: 80ms, loss: 0.1%, bandwidth: 10mbit}
  - {between: [us, asia]}
  - {default: true, latency: 40ms, jitter: 5ms}
genesis: {count: 2, host: eu}
groups:
  - {name: peers, count: 4}
  - {name: far, count: 2, host: asia}
  - {name: wide, count: 1, host: spread}
";

fn hosts_of(yaml: &str) -> Vec<(String, Option<String>)> {
    let topology = topology::parse_str(yaml, "three.yaml").unwrap_or_else(|e| panic!("{e}"));
    plan::node_specs(&topology, 1)
        .into_iter()
        .map(|n| (n.name, n.host))
        .collect()
}

fn errors(source: &str) -> Vec<Diagnostic> {
    match topology::parse_str(source, "bad.yaml") {
        Ok(t) => panic!("expected errors, got a valid topology: {t:?}"),
        Err(TopologyError { diagnostics }) => diagnostics,
    }
}

#[test]
fn nodes_are_placed_by_name_and_spread_round_robin_by_default() {
    let placed = hosts_of(THREE);
    let expected = [
        ("genesis-0", "eu"),
        ("genesis-1", "eu"),
        // No `host:`: spread, node i on host i mod 3 in the order of `hosts`.
        ("peers-0", "eu"),
        ("peers-1", "us"),
        ("peers-2", "asia"),
        ("peers-3", "eu"),
        ("far-0", "asia"),
        ("far-1", "asia"),
        ("wide-0", "eu"),
    ];
    let expected: Vec<(String, Option<String>)> = expected
        .iter()
        .map(|(n, h)| (n.to_string(), Some(h.to_string())))
        .collect();
    assert_eq!(placed, expected);
}

#[test]
fn without_hosts_no_node_has_a_host_and_the_plan_has_none() {
    let yaml = "name: flat\ngenesis: {count: 1}\ngroups:\n  - {name: peers, count: 2}\n";
    assert!(hosts_of(yaml).iter().all(|(_, h)| h.is_none()));
    let topology = topology::parse_str(yaml, "flat.yaml").unwrap();
    let plan = plan::build(&topology, 1, "flat-000000", Path::new("/runs"), false).unwrap();
    assert!(plan.hosts.is_empty());
}

#[test]
fn the_plan_carries_each_pairs_link_both_ways_and_the_swarm_label() {
    let topology = topology::parse_str(THREE, "three.yaml").unwrap();
    let plan = plan::build(&topology, 1, "three-000000", Path::new("/runs"), false).unwrap();
    let names: Vec<&str> = plan.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["eu", "us", "asia"]);
    assert_eq!(plan.hosts[0].label.as_deref(), Some("node-1"));
    assert_eq!(plan.hosts[1].label, None);

    let ms = Duration::from_millis;
    let asia_eu = LinkShape {
        delay: ms(80),
        jitter: Duration::ZERO,
        loss: 0.001,
        rate: Some(1_250_000),
    };
    assert_eq!(plan.host_link("eu", "asia"), Some(asia_eu));
    assert_eq!(plan.host_link("asia", "eu"), Some(asia_eu));
    let default = LinkShape {
        delay: ms(40),
        jitter: ms(5),
        ..LinkShape::default()
    };
    assert_eq!(plan.host_link("eu", "us"), Some(default));
    assert_eq!(plan.host_link("us", "eu"), Some(default));
    // A pair listed without any shape overrides the default: unshaped.
    assert_eq!(plan.host_link("us", "asia"), None);
    assert!(!plan.hosts[1].links.contains_key("asia"));
    // Within one host, nothing.
    assert_eq!(plan.host_link("eu", "eu"), None);
}

#[test]
fn cutting_a_host_off_partitions_its_nodes_from_the_rest() {
    let yaml = format!(
        "{THREE}scenario:\n  - partition: {{host: asia}}\n  - heal: true\n  - partition: {{host: us, one_way: true}}\n"
    );
    let topology = topology::parse_str(&yaml, "three.yaml").unwrap_or_else(|e| panic!("{e}"));
    let steps = topology::resolve(&topology, 1).unwrap();
    let ResolvedAction::Partition {
        sides,
        one_way,
        host,
    } = &steps[0].action
    else {
        panic!("not a partition: {:?}", steps[0].action);
    };
    assert_eq!(host.as_deref(), Some("asia"));
    assert!(!one_way);
    assert_eq!(sides[0], ["peers-2", "far-0", "far-1"]);
    assert_eq!(
        sides[1],
        [
            "genesis-0",
            "genesis-1",
            "peers-0",
            "peers-1",
            "peers-3",
            "wide-0"
        ]
    );
    assert!(
        steps[0]
            .text
            .starts_with("partition host asia off: [peers-2"),
        "{}",
        steps[0].text
    );
    let ResolvedAction::Partition { sides, one_way, .. } = &steps[2].action else {
        panic!("not a partition: {:?}", steps[2].action);
    };
    assert!(one_way);
    assert_eq!(sides[0], ["peers-1"]);
}

#[test]
fn cutting_off_a_host_without_nodes_is_refused_at_its_step() {
    let yaml = "\
name: empty-host
hosts: [{name: a}, {name: b}]
genesis: {count: 1, host: a}
groups:
  - {name: peers, count: 2, host: a}
scenario:
  - at: 1s
    partition: {host: b}
";
    let diagnostics = errors(yaml);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!((d.line, d.path.as_str()), (8, "scenario[0]"), "{d}");
    assert!(
        d.message.contains("no started node is on it"),
        "{}",
        d.message
    );
}

#[test]
fn host_mistakes_are_reported_at_their_line_with_path_and_expectation() {
    const HOSTS: &str = "name: demo\nhosts:\n  - {name: eu}\n  - {name: us}\n";
    // (what, source, line, column, path, message fragment)
    let cases: &[(&str, String, usize, usize, &str, &str)] = &[
        (
            "duplicate host",
            format!("{HOSTS}  - {{name: eu}}\ngenesis: {{count: 1}}\n"),
            5,
            12,
            "hosts[2].name",
            "declared twice",
        ),
        (
            "host named spread",
            format!("{HOSTS}  - {{name: spread}}\ngenesis: {{count: 1}}\n"),
            5,
            12,
            "hosts[2].name",
            "expected another host name",
        ),
        (
            "bad host name",
            format!("{HOSTS}  - {{name: Mars}}\ngenesis: {{count: 1}}\n"),
            5,
            12,
            "hosts[2].name",
            "lowercase",
        ),
        (
            "empty label",
            format!("{HOSTS}  - {{name: mars, label: ''}}\ngenesis: {{count: 1}}\n"),
            5,
            25,
            "hosts[2].label",
            "is empty",
        ),
        (
            "unknown genesis host",
            format!("{HOSTS}genesis: {{count: 1, host: moon}}\n"),
            5,
            27,
            "genesis.host",
            "unknown host `moon`; expected one of: eu, us, or `spread`",
        ),
        (
            "unknown group host",
            format!(
                "{HOSTS}genesis: {{count: 1}}\ngroups:\n  - {{name: p, count: 1, host: eu-1}}\n"
            ),
            7,
            31,
            "groups[0].host",
            "unknown host `eu-1`",
        ),
        (
            "host without hosts",
            "name: demo\ngenesis: {count: 1, host: eu}\n".into(),
            2,
            27,
            "genesis.host",
            "no `hosts` are declared",
        ),
        (
            "links without hosts",
            "name: demo\nlinks:\n  - {default: true, latency: 1ms}\ngenesis: {count: 1}\n".into(),
            3,
            3,
            "links",
            "no `hosts` are declared",
        ),
        (
            "link to an unknown host",
            format!(
                "{HOSTS}links:\n  - {{between: [eu, mars], latency: 1ms}}\ngenesis: {{count: 1}}\n"
            ),
            6,
            20,
            "links[0].between[1]",
            "unknown host `mars`; expected one of: eu, us",
        ),
        (
            "link to self",
            format!("{HOSTS}links:\n  - {{between: [us, us]}}\ngenesis: {{count: 1}}\n"),
            6,
            20,
            "links[0].between[1]",
            "to itself",
        ),
        (
            "three hosts in a link",
            format!("{HOSTS}links:\n  - {{between: [eu, us, eu]}}\ngenesis: {{count: 1}}\n"),
            6,
            15,
            "links[0].between",
            "expected exactly two",
        ),
        (
            "a pair twice, in the other order",
            format!(
                "{HOSTS}links:\n  - {{between: [eu, us]}}\n  - {{between: [us, eu]}}\ngenesis: {{count: 1}}\n"
            ),
            7,
            15,
            "links[1].between",
            "declared twice",
        ),
        (
            "two defaults",
            format!(
                "{HOSTS}links:\n  - {{default: true}}\n  - {{default: true}}\ngenesis: {{count: 1}}\n"
            ),
            7,
            15,
            "links[1].default",
            "at most one",
        ),
        (
            "between and default",
            format!(
                "{HOSTS}links:\n  - {{between: [eu, us], default: true}}\ngenesis: {{count: 1}}\n"
            ),
            6,
            34,
            "links[0].default",
            "not both",
        ),
        (
            "a link naming nothing",
            format!("{HOSTS}links:\n  - {{latency: 3ms}}\ngenesis: {{count: 1}}\n"),
            6,
            5,
            "links[0]",
            "names no hosts",
        ),
        (
            "loss over 100%",
            format!("{HOSTS}links:\n  - {{default: true, loss: 150%}}\ngenesis: {{count: 1}}\n"),
            6,
            27,
            "links[0].loss",
            "expected 0% to 100%",
        ),
        (
            "loss as a ratio over 1",
            format!("{HOSTS}links:\n  - {{default: true, loss: 5}}\ngenesis: {{count: 1}}\n"),
            6,
            27,
            "links[0].loss",
            "expected 0% to 100%",
        ),
        (
            "loss that is no number",
            format!("{HOSTS}links:\n  - {{default: true, loss: some}}\ngenesis: {{count: 1}}\n"),
            6,
            27,
            "links[0].loss",
            "expected a percentage such as `0.1%`",
        ),
        (
            "bad latency",
            format!("{HOSTS}links:\n  - {{default: true, latency: 40}}\ngenesis: {{count: 1}}\n"),
            6,
            30,
            "links[0].latency",
            "not a duration",
        ),
        (
            "bad bandwidth",
            format!(
                "{HOSTS}links:\n  - {{default: true, bandwidth: fast}}\ngenesis: {{count: 1}}\n"
            ),
            6,
            32,
            "links[0].bandwidth",
            "not a bandwidth",
        ),
        (
            "unknown key in a host",
            format!("{HOSTS}  - {{name: x, lable: y}}\ngenesis: {{count: 1}}\n"),
            5,
            0,
            "hosts[2].lable",
            "unknown field `lable`",
        ),
        (
            "partition of an unknown host",
            format!("{HOSTS}genesis: {{count: 2}}\nscenario:\n  - partition: {{host: mars}}\n"),
            7,
            23,
            "scenario[0].partition.host",
            "unknown host `mars`; expected one of: eu, us",
        ),
        (
            "partition of a host without hosts",
            "name: demo\ngenesis: {count: 2}\nscenario:\n  - partition: {host: eu}\n".into(),
            4,
            23,
            "scenario[0].partition.host",
            "no `hosts` are declared",
        ),
        (
            "partition with sides and a host",
            format!(
                "{HOSTS}genesis: {{count: 2}}\nscenario:\n  - partition: {{host: eu, sides: [genesis-0, genesis-1]}}\n"
            ),
            7,
            23,
            "scenario[0].partition.host",
            "not both",
        ),
        (
            "partition with neither",
            format!("{HOSTS}genesis: {{count: 2}}\nscenario:\n  - partition: {{one_way: true}}\n"),
            7,
            16,
            "scenario[0].partition",
            "expected one of them",
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
fn the_schema_describes_hosts_links_and_placement() {
    let schema = topology::json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let instance: serde_json::Value = serde_saphyr::from_str(THREE).unwrap();
    let problems: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| e.to_string())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    for bad in [
        serde_json::json!({"name": "x", "genesis": {"count": 1}, "hosts": [{"nam": "a"}]}),
        serde_json::json!({"name": "x", "genesis": {"count": 1}, "links": [{"default": true, "loss": 2}]}),
        serde_json::json!({"name": "x", "genesis": {"count": 1}, "links": [{"default": true, "loss": "lots"}]}),
        serde_json::json!({"name": "x", "genesis": {"count": 1}, "links": [{"default": true, "latenc": "1ms"}]}),
        serde_json::json!({"name": "x", "genesis": {"count": 1}, "links": [{"between": ["a", "b", "c"]}]}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
    let schema_text = schema.to_string();
    for doc in ["round-robin", "peerlab.host", "One-way delay"] {
        assert!(schema_text.contains(doc), "the schema lacks {doc:?}");
    }
}
