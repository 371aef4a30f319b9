//! The Docker side end to end, through the built `peerlab` binary and the `docker` and
//! `docker-compose` clients: runs, failures, interruption, `up`/`ps`/`down`, the top-level
//! docker-compose.yml and exported compose files. Every test proves that nothing it started
//! is left behind. Requires Docker: fails, never skips, when no engine answers.
//!
//! Which topologies are "meant for Docker": `topologies/quickstart.yaml` plus every
//! `topologies/docker-*.yaml` (see docs/docker.md). The others (`fifty`, `three-hundred`,
//! ...) are sized for local processes and are not run here.
//!
//! Tests run in parallel on one engine, so names are unique. `quickstart.yaml` pins the
//! subnet 10.77.1.0/24, which two networks cannot share: the tests that create networks
//! from it take turns ([`quickstart_lock`], a lock of the whole engine, since test
//! processes and binaries run at once under cargo-nextest).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::docker::*;
use crate::support::{ROOT, Turn, engine_turn, heavy_turn, topologies_dir};

/// Generous for containers starting on 2 cores shared with other tests.
const FORM_DEADLINE: Duration = Duration::from_secs(90);

/// Held by tests that create networks with quickstart.yaml's fixed subnet. A panicking
/// holder releases it after its cleanup has run, when the subnet is free again.
fn quickstart_lock() -> Turn {
    engine_turn("quickstart-subnet")
}

/// The topologies meant for Docker: quickstart.yaml and every docker-*.yaml, sorted.
fn docker_topologies() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(topologies_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name == "quickstart.yaml" || (name.starts_with("docker-") && name.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    files
}

/// A small topology without fixed subnets (so parallel tests cannot clash), written to `dir`.
fn small_topology(dir: &Path, name: &str, peers: u32, checks: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\nseed: 7\ngenesis:\n  count: 1\ngroups:\n  - name: peers\n    count: {peers}\n    stagger: 20ms\n    settings:\n      degree: 2\n{checks}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `peerlab run --runtime docker FILE` with its own runs dir; returns (exit code, run id,
/// stderr), with the run's leftovers removed by a guard whatever happens.
fn run_docker(file: &Path, runs_dir: &Path, extra: &[&str]) -> (i32, String, String) {
    run_docker_with_env(file, runs_dir, extra, &[])
}

/// [`run_docker`] with extra environment variables.
fn run_docker_with_env(
    file: &Path,
    runs_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let out = output(
        peerlab()
            .args(["run", "--runtime", "docker"])
            .arg(file)
            .arg("--runs-dir")
            .arg(runs_dir)
            .args(extra)
            .envs(env.iter().copied()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let run_id = announced_run_id(&stderr)
        .unwrap_or_else(|| panic!("{} announced no run id:\n{stderr}", file.display()));
    let _guard = RunGuard {
        run_id: run_id.clone(),
        runs_dir: runs_dir.to_path_buf(),
    };
    let code = out.status.code().unwrap_or(-1);
    // Checked before the guard could clean up: the orchestrator's own teardown must do it.
    let (containers, networks) = run_leftovers(&run_id);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "run {run_id} of {} (exit {code}) left containers {containers:?} and networks {networks:?}\n{stderr}",
        file.display()
    );
    (code, run_id, stderr)
}

#[test]
fn every_docker_topology_runs_passes_and_leaves_nothing() {
    require_engine();
    ensure_image();
    let files = docker_topologies();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"quickstart.yaml".into()) && names.contains(&"docker-thirty.yaml".into()),
        "the Docker topology rule lost a file: {names:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    // docker-thirty.yaml is thirty containers: not alongside a fault scenario's twenty.
    let _turn = heavy_turn();
    let _subnet = quickstart_lock();
    for file in &files {
        let report_path = dir.path().join("r.json");
        let _ = std::fs::remove_file(&report_path);
        let (code, run_id, stderr) = run_docker(
            file,
            &dir.path().join("runs"),
            &["--report", report_path.to_str().unwrap()],
        );
        assert_eq!(
            code,
            0,
            "{} did not pass on Docker:\n{stderr}",
            file.display()
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
        assert_eq!(report["passed"], true, "{}", file.display());
        assert_eq!(report["runtime"], "docker", "{}", file.display());
        assert_eq!(report["run_id"], run_id.as_str());
    }
}

#[test]
fn an_impossible_expectation_exits_1_and_leaves_nothing() {
    require_engine();
    ensure_image();
    let dir = tempfile::tempdir().unwrap();
    // No network of containers forms within a millisecond.
    let file = small_topology(
        dir.path(),
        "dkfail",
        2,
        "checks:\n  formation:\n    within: 1ms\n",
    );
    let (code, _, stderr) = run_docker(&file, &dir.path().join("runs"), &[]);
    assert_eq!(code, 1, "expected a failed check:\n{stderr}");
    assert!(stderr.contains("teardown of"), "{stderr}");
}

#[test]
fn a_panicking_docker_run_exits_3_and_leaves_nothing() {
    require_engine();
    ensure_image();
    let dir = tempfile::tempdir().unwrap();
    let file = small_topology(dir.path(), "dkpanic", 2, "");
    let runs_dir = dir.path().join("runs");
    // run_docker_with_env checks that the orchestrator's own teardown removed everything.
    let (code, run_id, stderr) = run_docker_with_env(
        &file,
        &runs_dir,
        &[],
        &[(peerlab::orchestrator::run::PANIC_AFTER_START, "1")],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("internal error (panic)"), "{stderr}");
    let logs = runs_dir.join(&run_id).join("logs");
    assert_eq!(
        std::fs::read_dir(&logs).map(|d| d.count()).unwrap_or(0),
        3,
        "every container had started and its log was saved:\n{stderr}"
    );
}

/// Reads the child's stderr on a thread and hands back the announced run id.
fn watch_run_id(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(id) = announced_run_id(&line) {
                let _ = tx.send(id);
            }
        }
    });
    rx
}

#[test]
fn sigint_during_a_docker_run_exits_130_and_leaves_nothing() {
    require_engine();
    ensure_image();
    let dir = tempfile::tempdir().unwrap();
    // Six nodes and a long deadline: the run is surely still going when interrupted.
    let file = small_topology(
        dir.path(),
        "dkint",
        5,
        "checks:\n  formation:\n    within: 120s\n",
    );
    let runs_dir = dir.path().join("runs");
    let mut child = peerlab()
        .args(["run", "--runtime", "docker"])
        .arg(&file)
        .arg("--runs-dir")
        .arg(&runs_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_id = watch_run_id(&mut child)
        .recv_timeout(Duration::from_secs(60))
        .expect("the run announced no run id");
    let _guard = RunGuard {
        run_id: run_id.clone(),
        runs_dir: runs_dir.clone(),
    };
    // Interrupt once containers exist, so teardown has something to remove.
    let deadline = Instant::now() + Duration::from_secs(60);
    while run_leftovers(&run_id).0.is_empty() {
        assert!(
            Instant::now() < deadline,
            "run {run_id} started no container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the orchestrator did not exit within 60s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "{status}");
    assert_run_gone(&run_id);
}

#[test]
fn up_is_listed_by_ps_and_down_removes_it() {
    require_engine();
    ensure_image();
    let dir = tempfile::tempdir().unwrap();
    let runs_dir = dir.path().join("runs");
    let file = small_topology(
        dir.path(),
        "dkup",
        2,
        "checks:\n  formation:\n    within: 90s\n",
    );
    let out = output(
        peerlab()
            .args(["up", "--runtime", "docker"])
            .arg(&file)
            .arg("--runs-dir")
            .arg(&runs_dir),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let run_id = announced_run_id(&stderr).unwrap_or_else(|| panic!("no run id:\n{stderr}"));
    let _guard = RunGuard {
        run_id: run_id.clone(),
        runs_dir: runs_dir.clone(),
    };
    assert_eq!(out.status.code(), Some(0), "up failed:\n{stderr}");
    let (containers, networks) = run_leftovers(&run_id);
    assert_eq!((containers.len(), networks.len()), (3, 1), "while up");

    let listed = must(peerlab().arg("ps").arg("--runs-dir").arg(&runs_dir));
    let row = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(run_id.as_str()))
        .unwrap_or_else(|| panic!("ps does not list {run_id}:\n{listed}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..3], ["docker", "3"], "{row}");

    must(
        peerlab()
            .args(["down", &run_id, "--runs-dir"])
            .arg(&runs_dir),
    );
    assert_run_gone(&run_id);
    let listed = must(peerlab().arg("ps").arg("--runs-dir").arg(&runs_dir));
    assert!(
        !listed.contains(&run_id),
        "still listed after down:\n{listed}"
    );
    // `down` saved each container's output before removing it.
    let log = runs_dir.join(&run_id).join("logs").join("genesis-0.log");
    assert!(log.exists(), "no log saved at {}", log.display());
}

/// Publishes 127.0.0.1:7071 for the genesis: only this test uses the top-level file, and
/// it holds the machine's turn of that port, which the checkouts on this machine share.
#[test]
fn top_level_compose_file_forms_a_network_of_six() {
    require_engine();
    ensure_image();
    let _port = engine_turn("host-port-7071");
    let project = ComposeProject::new("pltop", &Path::new(ROOT).join("docker-compose.yml"));
    must(
        project
            .command()
            .args(["up", "-d", "--no-build", "--scale", "peer=5"]),
    );
    let deadline = Instant::now() + FORM_DEADLINE;
    let mut addrs = vec!["127.0.0.1:7071".to_string()];
    addrs.extend((1..=5).map(|index| project.port("peer", index, 7071)));
    wait_members(&addrs, 6, deadline);
    project.down();
    let (containers, networks) = project.leftovers();
    assert!(
        containers.is_empty() && networks.is_empty(),
        "compose project {} left {containers:?} {networks:?}",
        project.name
    );
}

#[test]
fn exported_quickstart_forms_under_compose() {
    require_engine();
    ensure_image();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.yml");
    must(
        peerlab()
            .arg("compose")
            .arg(Path::new(ROOT).join("topologies/quickstart.yaml"))
            .arg("-o")
            .arg(&file),
    );
    let _subnet = quickstart_lock();
    let project = ComposeProject::new("plexp", &file);
    must(project.command().args(["up", "-d", "--no-build"]));
    let deadline = Instant::now() + FORM_DEADLINE;
    let addrs: Vec<String> = ["genesis-0", "peers-0", "peers-1", "peers-2", "peers-3"]
        .iter()
        .map(|service| project.port(service, 1, 7071))
        .collect();
    wait_members(&addrs, 5, deadline);
    project.down();
    let (containers, networks) = project.leftovers();
    assert!(
        containers.is_empty() && networks.is_empty(),
        "compose project {} left {containers:?} {networks:?}",
        project.name
    );
}
