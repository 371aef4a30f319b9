//! Fault scenarios on Docker, end to end through the built `peerlab` binary: every fault
//! topology of `topologies/` passes on containers, a partition really cuts traffic in the
//! kernel (iptables in the containers' network namespaces) and leaves no rule behind, and
//! the admin-endpoint fallback still partitions. Requires Docker: fails, never skips, when
//! no engine answers. Reading a container's rules needs root (`nsenter`), as the runtime's
//! kernel partitions do.
//!
//! The tests take turns ([`heavy_turn`]): each runs up to twenty containers with
//! one-second failure detection, and two such runs on two cores starve each other.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerlab::runtime::docker::netfilter::{mentions_chain, rules_in};

use crate::support::docker::*;
use crate::support::reports::{
    FAULT_TOPOLOGIES, fault_topologies, file_name, read_report, report_problems,
};
use crate::support::{ROOT, Turn, heavy_turn};

/// One run of a fault topology on containers: formation plus the scenario's deadlines.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// How long a scenario step may take to be reached.
const STEP_LIMIT: Duration = Duration::from_secs(120);

fn turn() -> Turn {
    heavy_turn()
}

/// `peerlab run --runtime docker` in flight, its stderr collected on a thread. Dropping it
/// kills the orchestrator; the run's [`RunGuard`] then removes what it left.
struct DockerRun {
    child: Child,
    stderr: Arc<Mutex<String>>,
    run_id: String,
    _guard: RunGuard,
}

impl DockerRun {
    fn start(file: &Path, runs_dir: &Path, report: &Path, env: &[(&str, &str)]) -> DockerRun {
        let mut command = peerlab();
        command
            .args(["run", "--runtime", "docker"])
            .arg(file)
            .arg("--runs-dir")
            .arg(runs_dir)
            .arg("--report")
            .arg(report)
            .env_remove("PEERLAB_DOCKER_PARTITIONS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start peerlab run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap_or_else(|p| p.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let run_id = loop {
            let text = stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(id) = announced_run_id(&text) {
                break id;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("{} announced no run id:\n{text}", file.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        DockerRun {
            child,
            stderr,
            _guard: RunGuard {
                run_id: run_id.clone(),
                runs_dir: runs_dir.to_path_buf(),
            },
            run_id,
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Polls until stderr shows `text` (a progress line such as `step 3:`).
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + STEP_LIMIT;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "run {} never printed `{text}`:\n{}",
                self.run_id,
                self.stderr()
            );
            std::thread::sleep(DOCKER_POLL);
        }
    }

    /// Waits for the exit (the stderr thread then drains); returns the exit code and stderr.
    fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "run {} still going after {RUN_LIMIT:?}:\n{}",
                    self.run_id,
                    self.stderr()
                );
            }
            std::thread::sleep(DOCKER_POLL);
        };
        // The pipe closed at exit; give the reader a moment to take the last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.stderr().contains("teardown of") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (status.code().unwrap_or(-1), self.stderr())
    }
}

impl Drop for DockerRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Problems with a finished run's report on Docker (see [`report_problems`]).
fn docker_report_problems(report_path: &Path) -> Vec<String> {
    match read_report(report_path) {
        Ok(report) => report_problems(&report, "docker"),
        Err(e) => vec![e],
    }
}

#[test]
fn every_fault_topology_passes_on_docker_and_leaves_nothing() {
    require_engine();
    ensure_image();
    let _turn = turn();
    let files = fault_topologies();
    let names: Vec<String> = files.iter().map(|p| file_name(p)).collect();
    for expected in FAULT_TOPOLOGIES {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} is missing from {names:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    // One after another: each is up to twenty containers on two cores.
    for file in &files {
        let report = dir.path().join(format!(
            "{}.json",
            file.file_stem().unwrap().to_string_lossy()
        ));
        let run = DockerRun::start(file, &dir.path().join("runs"), &report, &[]);
        let run_id = run.run_id.clone();
        let (code, stderr) = run.finish();
        // Checked before the guard could clean up: the orchestrator's own teardown must.
        let (containers, networks) = run_leftovers(&run_id);
        let mut problems = docker_report_problems(&report);
        if code != 0 {
            problems.insert(0, format!("exit {code}"));
        }
        if !containers.is_empty() || !networks.is_empty() {
            problems.push(format!(
                "left containers {containers:?} and networks {networks:?}"
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} (run {run_id}): {}\n{stderr}",
                file.display(),
                problems.join("; ")
            ));
        }
    }
    if !failures.is_empty() {
        // Kept for the node logs of the failing runs (`runs/<run-id>/logs`).
        let kept = dir.keep();
        panic!(
            "runs kept in {}:\n{}",
            kept.display(),
            failures.join("\n\n")
        );
    }
}

/// Host pid of a running container.
fn pid_of(container: &str) -> u32 {
    let out = must(docker().args(["inspect", "--format", "{{.State.Pid}}", container]));
    out.trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or_else(|| panic!("{container} has no process (pid `{}`)", out.trim()))
}

/// The container's addresses on its networks.
fn ips_of(container: &str) -> Vec<String> {
    must(docker().args([
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        container,
    ]))
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// The container's filter table, read in its network namespace from the host.
fn filter_table(container: &str) -> String {
    let pid = pid_of(container).to_string();
    let out = output(&mut nsenter_filter_save(&pid));
    assert!(
        out.status.success(),
        "cannot read {container}'s iptables from the host (these tests run as root, with \
         nsenter and iptables installed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nsenter_filter_save(pid: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.args(["-t", pid, "-n", "iptables-save", "-t", "filter"]);
    cmd
}

/// Asserts that `container` drops traffic from (and, unless `inbound_only`, to) every
/// address in `cut_from`.
fn assert_cut(container: &str, cut_from: &[String], inbound_only: bool) {
    let table = filter_table(container);
    let rules = rules_in(&table);
    assert!(
        table.contains("-A INPUT -j PEERLAB") && table.contains("-A OUTPUT -j PEERLAB"),
        "{container}: chain PEERLAB is not hooked into INPUT and OUTPUT:\n{table}"
    );
    for ip in cut_from {
        let inbound = format!("-A PEERLAB -s {ip}/32 -j DROP");
        let outbound = format!("-A PEERLAB -d {ip}/32 -j DROP");
        assert!(
            rules.contains(&inbound.as_str()),
            "{container} does not drop {ip}:\n{table}"
        );
        assert!(
            inbound_only || rules.contains(&outbound.as_str()),
            "{container} does not drop packets to {ip}:\n{table}"
        );
    }
}

const PARTITION_TOPOLOGY: &str = "\
name: NAME
seed: 3
defaults: {heartbeat_interval: 200ms, heartbeat_timeout: 1s, suspect_timeout: 1s}
checks: {formation: {within: 90s}}
genesis: {count: 2}
groups:
  - {name: east, count: 2}
  - {name: west, count: 2}
scenario:
  - at: 1s
    partition: {sides: [\"genesis-0, east\", \"genesis-1, west\"]}
  - expect: {within: 30s, components: 2, component_membership: true}
  - restart: east-0
  - expect: {within: 30s, all_ready: true, components: 2, component_membership: true}
  - wait: 4s
  - heal: true
  - wait: 4s
  - expect: {within: 30s, connected: true, full_membership: true, broadcast: {count: 1}}
";

#[test]
fn a_docker_partition_cuts_traffic_in_the_kernel_and_leaves_no_rule() {
    require_engine();
    ensure_image();
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dkcut.yaml");
    std::fs::write(&file, PARTITION_TOPOLOGY.replace("NAME", &unique("dkcut"))).unwrap();
    let report = dir.path().join("report.json");
    let run = DockerRun::start(&file, &dir.path().join("runs"), &report, &[]);
    let container = |node: &str| container_name(&run.run_id, node);

    // Step 1 (the partition) is done once step 2 starts.
    run.wait_for("step 2:");
    assert!(
        run.stderr().contains("partitions: iptables DROP rules"),
        "the runtime did not partition with iptables:\n{}",
        run.stderr()
    );
    let west: Vec<String> = ["genesis-1", "west-0", "west-1"]
        .iter()
        .flat_map(|n| ips_of(&container(n)))
        .collect();
    let east0_before = pid_of(&container("east-0"));
    assert_cut(&container("east-0"), &west, false);
    assert_cut(&container("genesis-0"), &west, false);
    assert_cut(&container("west-1"), &ips_of(&container("east-1")), false);

    // Step 3 restarted east-0: a new process and namespace, with the rules set again, and
    // the other side drops its (possibly new) address.
    run.wait_for("step 4:");
    let east0_after = pid_of(&container("east-0"));
    assert_ne!(east0_before, east0_after, "east-0 was not restarted");
    assert_cut(&container("east-0"), &west, false);
    assert_cut(&container("west-0"), &ips_of(&container("east-0")), false);

    // Step 6 healed: the chains are still there (hooked) but hold no rule.
    run.wait_for("step 7:");
    for node in ["genesis-0", "east-0", "west-0"] {
        let table = filter_table(&container(node));
        assert!(
            rules_in(&table).is_empty(),
            "{node} keeps rules after heal:\n{table}"
        );
    }

    let run_id = run.run_id.clone();
    let (code, stderr) = run.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "removed iptables chain PEERLAB from 6 container network namespace(s); verified none is left"
        ),
        "teardown did not verify the chains are gone:\n{stderr}"
    );
    assert!(
        docker_report_problems(&report).is_empty(),
        "{:?}",
        docker_report_problems(&report)
    );
    assert_run_gone(&run_id);
}

#[test]
fn with_partitions_through_the_nodes_docker_still_splits_and_heals() {
    require_engine();
    ensure_image();
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let file = Path::new(ROOT).join("topologies/partition-heal.yaml");
    let run = DockerRun::start(
        &file,
        &dir.path().join("runs"),
        &report,
        &[("PEERLAB_DOCKER_PARTITIONS", "nodes")],
    );
    let run_id = run.run_id.clone();
    // No rule in the kernel: the nodes cut their own links.
    run.wait_for("step 2:");
    let table = filter_table(&container_name(&run_id, "east-0"));
    assert!(!mentions_chain(&table), "iptables used anyway:\n{table}");
    let (code, stderr) = run.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("partitions: through the nodes' admin endpoints"),
        "{stderr}"
    );
    assert!(!stderr.contains("removed iptables chain"), "{stderr}");
    assert!(
        docker_report_problems(&report).is_empty(),
        "{:?}",
        docker_report_problems(&report)
    );
    assert_run_gone(&run_id);
}

fn container_name(run_id: &str, node: &str) -> String {
    peerlab::runtime::docker::container_name(run_id, node)
}
