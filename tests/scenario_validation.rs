//! Validation of `scenario:` steps: every problem at its line and column, with its key
//! path and what to write instead, all reported at once.

use peerlab::orchestrator::plan;
use peerlab::topology::{self, Diagnostic, TopologyError};

const HEAD: &str = "name: demo\nseed: 1\ngenesis: {count: 1}\ngroups:\n  - {name: peers, count: 4}\n  - {name: late, count: 2, start: manual}\nscenario:\n";

fn errors(steps: &str) -> Vec<Diagnostic> {
    match topology::parse_str(&format!("{HEAD}{steps}"), "bad.yaml") {
        Ok(t) => panic!("expected errors, got a valid topology: {t:?}"),
        Err(TopologyError { diagnostics }) => diagnostics,
    }
}

#[test]
fn good_scenarios_validate() {
    let good = "  - at: 5s\n    kill: random 2 of peers\n  - after: 1s\n    start: all\n  - pause: peers-0\n  - resume: peers-*\n  - restart: 25% of peers\n  - stop: genesis-0\n  - partition: {sides: [\"peers-0, peers-1\", \"peers-2\"], one_way: true}\n  - heal: true\n  - shape: {nodes: peers, peers: genesis, delay: 50ms, jitter: 5ms, loss: 0.01, bandwidth: 1mbit}\n  - join: {group: late, count: 1}\n  - broadcast: {count: 2, from: peers}\n  - wait: 2s\n  - expect: {within: 10s, connected: true, min_degree: 1, full_membership: true, broadcast: {count: 1, reliability: 0.9}}\n  - expect: {within: 10s, components: 2, component_membership: true}\n";
    let t = topology::parse_str(&format!("{HEAD}{good}"), "good.yaml").unwrap();
    assert_eq!(t.scenario.len(), 14);
    assert!(t.groups[1].manual);
    // Manual groups are in the plan (so runtimes allocate them) but wait for the join.
    assert_eq!(plan::node_specs(&t, 1).len(), 7);
}

#[test]
fn bad_steps_are_reported_at_their_line_with_path_and_expectation() {
    // (what, steps, line, column, path, message fragment); steps start on line 8.
    let cases: &[(&str, &str, usize, usize, &str, &str)] = &[
        (
            "unknown key",
            "  - kil: peers-0\n",
            8,
            5,
            "scenario[0].kil",
            "unknown field `kil`",
        ),
        (
            "no action",
            "  - at: 1s\n",
            8,
            5,
            "scenario[0]",
            "has no action",
        ),
        (
            "two actions",
            "  - kill: peers-0\n    pause: peers-1\n",
            9,
            12,
            "scenario[0].pause",
            "split it into two steps",
        ),
        (
            "at and after",
            "  - at: 1s\n    after: 2s\n    kill: peers-0\n",
            9,
            12,
            "scenario[0].after",
            "not both",
        ),
        (
            "bad duration",
            "  - after: soon\n    kill: peers-0\n",
            8,
            12,
            "scenario[0].after",
            "is not a duration",
        ),
        (
            "bad random",
            "  - kill: random two of peers\n",
            8,
            11,
            "scenario[0].kill",
            "`two` is not a count",
        ),
        (
            "bad share",
            "  - kill: 150%\n",
            8,
            11,
            "scenario[0].kill",
            "expected 1% to 100%",
        ),
        (
            "too many random",
            "  - kill: random 5 of peers\n",
            8,
            11,
            "scenario[0]",
            "only 4 are eligible for `kill`",
        ),
        (
            "kill twice",
            "  - kill: peers-1\n  - kill: peers-1\n",
            9,
            11,
            "scenario[1]",
            "selects no node eligible for `kill`",
        ),
        (
            "resume a running node",
            "  - resume: peers-1\n",
            8,
            13,
            "scenario[0]",
            "peers-1 up",
        ),
        (
            "join a started group",
            "  - join: {group: peers}\n",
            8,
            19,
            "scenario[0].join.group",
            "add `start: manual`",
        ),
        (
            "join too many",
            "  - join: {group: late, count: 3}\n",
            8,
            11,
            "scenario[0]",
            "expected a count from 1 to 2",
        ),
        (
            "time goes back",
            "  - at: 5s\n    kill: peers-0\n  - at: 2s\n    kill: peers-1\n",
            11,
            11,
            "scenario[1]",
            "comes before the previous step",
        ),
        (
            "one-sided partition",
            "  - partition: {sides: [peers]}\n",
            8,
            16,
            "scenario[0].partition.sides",
            "two or more sides",
        ),
        (
            "bad loss",
            "  - shape: {nodes: peers, loss: 2}\n",
            8,
            33,
            "scenario[0].shape.loss",
            "not a probability",
        ),
        (
            "bad bandwidth",
            "  - shape: {nodes: peers, bandwidth: fast}\n",
            8,
            38,
            "scenario[0].shape.bandwidth",
            "not a bandwidth",
        ),
        (
            "empty expect",
            "  - expect: {within: 5s}\n",
            8,
            13,
            "scenario[0].expect",
            "checks nothing",
        ),
        (
            "zero components",
            "  - expect: {components: 0}\n",
            8,
            26,
            "scenario[0].expect.components",
            "expected at least 1",
        ),
        (
            "components contradict connected",
            "  - expect: {connected: true, components: 2}\n",
            8,
            25,
            "scenario[0].expect.connected",
            "contradicts `components: 2`",
        ),
        (
            "more components than live nodes",
            "  - kill: peers\n  - expect: {components: 3}\n",
            9,
            13,
            "scenario[1]",
            "only 1 node(s) are live",
        ),
        (
            "heal false",
            "  - heal: false\n",
            8,
            11,
            "scenario[0].heal",
            "does nothing",
        ),
    ];
    let mut failures = Vec::new();
    for (what, steps, line, column, path, fragment) in cases {
        let diagnostics = errors(steps);
        let found = diagnostics.iter().any(|d| {
            d.line == *line
                && d.column == *column
                && d.path == *path
                && d.message.contains(fragment)
        });
        if !found {
            let got: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{what}: expected {line}:{column} `{path}` containing {fragment:?}\n  got: {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_step_problem_is_reported_at_once() {
    let d = errors(
        "  - kill: random x of peers\n  - shape: {nodes: peers, loss: 3}\n  - join: {group: nobody}\n",
    );
    let lines: Vec<usize> = d.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![8, 9, 10], "{d:#?}");
}
