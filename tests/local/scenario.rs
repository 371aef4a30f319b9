//! Fault scenarios end to end on local processes: `peerlab run` plays a topology's
//! scenario and the report says whether the network recovered.
//!
//! Each test runs the real binary with its runs directory in a tempdir. The orchestrator's
//! node processes die with it (PR_SET_PDEATHSIG), and [`Run`] kills the orchestrator on
//! drop, so a failing test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, POLL, Turn, heavy_turn};

/// Heartbeats fast enough that a death is noticed in about two seconds, and a generous
/// formation deadline: these machines are shared with compilers.
const FAST: &str = "defaults:\n  heartbeat_interval: 200ms\n  heartbeat_timeout: 1s\n  suspect_timeout: 1s\nchecks: {formation: {within: 60s}}\n";

/// A run in flight. One at a time ([`heavy_turn`]): each starts up to twenty processes with
/// one-second timeouts, and several at once on two cores starve each other into false
/// failures.
struct Run {
    child: Child,
    dir: tempfile::TempDir,
    _turn: Turn,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Outcome {
    code: i32,
    report: serde_json::Value,
    output: String,
}

fn start(yaml: &str, extra: &[&str]) -> Run {
    let turn = heavy_turn();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.yaml");
    std::fs::write(&file, yaml).unwrap();
    let child = Command::new(BIN)
        .arg("run")
        .arg(&file)
        .args(["--runtime", "local", "--runs-dir"])
        .arg(dir.path().join("runs"))
        .arg("--report")
        .arg(dir.path().join("report.json"))
        .args(extra)
        .stdout(Stdio::from(
            std::fs::File::create(dir.path().join("out.txt")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("err.txt")).unwrap(),
        ))
        .spawn()
        .unwrap();
    Run {
        child,
        dir,
        _turn: turn,
    }
}

/// Waits for the run to end (polling, with a deadline) and reads its report.
fn finish(mut run: Run, within: Duration) -> Outcome {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "run still going after {within:?}:\n{}",
            text(run.dir.path())
        );
        std::thread::sleep(POLL);
    };
    let output = text(run.dir.path());
    let report = std::fs::read_to_string(run.dir.path().join("report.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null);
    Outcome {
        code: status.code().unwrap_or(-1),
        report,
        output,
    }
}

fn text(dir: &Path) -> String {
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    format!(
        "{}\n{}",
        read(dir.join("out.txt")),
        read(dir.join("err.txt"))
    )
}

fn run(yaml: &str) -> Outcome {
    finish(start(yaml, &[]), Duration::from_secs(150))
}

fn checks(o: &Outcome) -> Vec<(String, bool)> {
    o.report["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or("").to_string(),
                        c["passed"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_passed(o: &Outcome, expect_checks: &[&str]) {
    let checks = checks(o);
    for name in expect_checks {
        assert!(
            checks.iter().any(|(n, ok)| n.starts_with(name) && *ok),
            "no passing check named `{name}...`; checks {checks:?}\n{}",
            o.output
        );
    }
    assert_eq!(o.code, 0, "run failed:\n{}", o.output);
}

fn scenario_nodes(o: &Outcome, step: usize) -> Vec<String> {
    o.report["scenario"][step - 1]["action"]["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_one_node_then_the_rest_stay_connected_and_forget_it() {
    let o = run(&format!(
        "name: kill-one\n{FAST}genesis: {{count: 1}}\ngroups:\n  - {{name: peers, count: 5}}\nscenario:\n  - kill: peers-2\n  - expect: {{within: 20s, connected: true, full_membership: true}}\n"
    ));
    assert_passed(
        &o,
        &[
            "expect#2 overlay connected after kill peers-2",
            "expect#2 full membership after kill peers-2",
        ],
    );
    assert!(o.output.contains("5/5 nodes match"), "{}", o.output);
}

#[test]
fn a_stopped_node_leaves_and_a_restarted_one_rejoins_on_its_address() {
    let o = run(&format!(
        "name: stop-restart\n{FAST}genesis: {{count: 1}}\ngroups:\n  - {{name: peers, count: 4}}\nscenario:\n  - stop: peers-0\n  - expect: {{within: 20s, connected: true, full_membership: true}}\n  - start: peers-0\n  - expect: {{within: 20s, all_ready: true, connected: true, full_membership: true}}\n  - restart: peers-1\n  - expect: {{within: 20s, all_ready: true, connected: true, full_membership: true}}\n"
    ));
    assert_passed(
        &o,
        &[
            "expect#2 full membership after stop peers-0",
            "expect#4 full membership after start peers-0",
            "expect#6 full membership after restart peers-1",
        ],
    );
    // The orchestrator keeps the endpoints it learnt at the first start, so these checks
    // could only see peers-0 and peers-1 again because they came back on the same address.
    assert!(o.output.contains("5/5 nodes match (held"), "{}", o.output);
}

#[test]
fn a_frozen_node_is_removed_and_comes_back_after_resume() {
    let o = run(&format!(
        "name: frozen\n{FAST}genesis: {{count: 1}}\ngroups:\n  - {{name: peers, count: 5}}\nscenario:\n  - pause: peers-3\n  - expect: {{within: 20s, connected: true, full_membership: true}}\n  - resume: peers-3\n  - expect: {{within: 20s, all_ready: true, connected: true, full_membership: true}}\n"
    ));
    assert_passed(
        &o,
        &[
            "expect#2 full membership after pause peers-3",
            "expect#4 full membership after resume peers-3",
        ],
    );
    assert!(
        o.output.contains("5/5 nodes match") && o.output.contains("6/6 nodes match"),
        "{}",
        o.output
    );
}

#[test]
fn half_of_twenty_nodes_killed_at_once() {
    let o = run(&format!(
        "name: mass\n{FAST}genesis: {{count: 2}}\ngroups:\n  - {{name: peers, count: 18}}\nscenario:\n  - kill: 50%\n  - expect: {{within: 40s, connected: true, full_membership: true, broadcast: {{count: 1}}}}\n"
    ));
    assert_eq!(scenario_nodes(&o, 1).len(), 10, "{}", o.report["scenario"]);
    assert_passed(
        &o,
        &["expect#2 overlay connected", "expect#2 full membership"],
    );
    assert!(o.output.contains("10/10 nodes match"), "{}", o.output);
}

#[test]
fn new_nodes_join_after_a_genesis_is_lost() {
    let o = run(&format!(
        "name: genesis-loss\n{FAST}genesis: {{count: 2}}\ngroups:\n  - {{name: peers, count: 3}}\n  - {{name: late, count: 2, start: manual}}\nscenario:\n  - kill: genesis-0\n  - expect: {{within: 20s, connected: true, full_membership: true}}\n  - join: {{group: late}}\n  - expect: {{within: 20s, all_ready: true, connected: true, full_membership: true}}\n"
    ));
    assert_eq!(scenario_nodes(&o, 3), vec!["late-0", "late-1"]);
    assert_passed(
        &o,
        &[
            "expect#4 all nodes ready after join late-0, late-1",
            "expect#4 full membership",
        ],
    );
    assert!(o.output.contains("6/6 nodes match"), "{}", o.output);
}

#[test]
fn the_same_seed_replays_the_same_timeline() {
    let yaml = format!(
        "name: replay\n{FAST}genesis: {{count: 1}}\ngroups:\n  - {{name: peers, count: 6}}\nscenario:\n  - kill: random 2 of peers\n"
    );
    let a = finish(start(&yaml, &["--seed", "5"]), Duration::from_secs(120));
    // `a` has ended and released its turn by now.
    let b = finish(start(&yaml, &["--seed", "5"]), Duration::from_secs(120));
    assert_eq!(a.code, 0, "{}", a.output);
    assert_eq!(scenario_nodes(&a, 1).len(), 2);
    assert_eq!(scenario_nodes(&a, 1), scenario_nodes(&b, 1));
    assert!(a.output.contains("scenario (seed 5):"), "{}", a.output);
}
