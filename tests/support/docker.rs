//! Docker helpers: drive the built `peerlab` binary, the `docker` and `docker-compose`
//! clients (as a user would, so the tests exercise the same paths as the documentation), or
//! the engine's API through bollard for the runtime's own tests; build the node image once
//! per test process; and prove nothing is left behind.
//!
//! Guards remove what a test started even when it panics, so a failing test does not leave
//! containers for the next one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveImageOptionsBuilder,
};
use peerlab::contract::NodeStatus;
use peerlab::runtime::RUN_LABEL;
use peerlab::runtime::docker::remove_leftovers;
use sha2::{Digest, Sha256};

use super::formation::{self, observation};
use super::{BIN, engine_turn};

/// Interval between polls that start a process (`peerlab status`, `docker inspect`) or
/// watch a run's progress: slower than [`super::POLL`] to spare the cores the containers
/// need. Every poll loop has its own deadline.
pub const DOCKER_POLL: Duration = Duration::from_millis(250);

/// Run a command to completion, failing the test with its output when it cannot start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command that must succeed; returns its standard output.
pub fn must(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `peerlab`, the binary under test.
pub fn peerlab() -> Command {
    Command::new(BIN)
}

/// The `docker` client.
pub fn docker() -> Command {
    Command::new("docker")
}

/// Fails (never skips) when no Docker engine answers: these tests exist to run on Docker.
pub fn require_engine() {
    let out = docker()
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "these tests need a Docker engine and `docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("these tests need the `docker` client and a Docker engine: {e}"),
    }
}

/// A name no other test, process or earlier run uses: `<prefix><pid><nanos>`, lower-case
/// alphanumerics only (valid as a compose project and inside Docker names).
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{:x}{:x}",
        std::process::id(),
        nanos & 0xff_ffff_ffff
    )
}

/// Make sure `peerlab:<version>` holds the binary under test, building it with `peerlab
/// image build` (as a user would) only when it is missing or stale. Parallel tests wait for
/// the one build instead of racing to build the same tag: the threads of a process here, the
/// test processes of every binary (cargo-nextest runs a process per test) on the engine's
/// lock of the tag; a process checks once.
pub fn ensure_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let _tag = engine_turn("node-image");
        let bytes = std::fs::read(BIN).unwrap();
        let digest = hex::encode(Sha256::digest(&bytes));
        let image = peerlab::DEFAULT_IMAGE;
        let label = output(docker().args([
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"peerlab.binary.sha256\"}}",
            image,
        ]));
        let inspected = String::from_utf8_lossy(&label.stdout).trim().to_string();
        if label.status.success() && inspected == digest {
            return;
        }
        // `image build` removes the image it replaces: no dangling leftovers.
        must(peerlab().args(["image", "build", "--tag", image]));
    });
}

/// A second name of the node image of the binary under test, for tests that hand an image
/// to the Docker runtime themselves. The runtime rebuilds any `peerlab:*` image from the
/// running executable, which in a test process is the test binary, so these tests need a
/// name outside `peerlab`.
pub const RUNTIME_TEST_IMAGE: &str = "peerlab-test:runtime";

/// [`ensure_image`], then [`RUNTIME_TEST_IMAGE`] names the same image: a tag, not a second
/// build. The image an earlier binary left under that name is removed (when nothing else
/// names or uses it), so runs leave no image behind but `peerlab:<version>` and this tag.
/// A tag that already names the image stays: another test process may be starting
/// containers from it right now.
pub fn runtime_test_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        ensure_image();
        let _tag = engine_turn("node-image");
        let id = |image: &str| {
            let out = output(docker().args(["image", "inspect", "--format", "{{.Id}}", image]));
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let tagged = id(RUNTIME_TEST_IMAGE);
        if tagged.is_some() && tagged == id(peerlab::DEFAULT_IMAGE) {
            return;
        }
        let _ = output(docker().args(["image", "rm", RUNTIME_TEST_IMAGE]));
        must(docker().args(["tag", peerlab::DEFAULT_IMAGE, RUNTIME_TEST_IMAGE]));
    });
    RUNTIME_TEST_IMAGE
}

/// IDs listed by `docker <what> ls -q` (all containers, or networks) with a label filter.
pub fn labelled(what: &str, label: &str) -> Vec<String> {
    let mut cmd = docker();
    cmd.args([what, "ls", "-q", "--filter", &format!("label={label}")]);
    if what == "container" {
        cmd.arg("--all");
    }
    must(&mut cmd)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Containers and networks still labelled `peerlab.run=<run_id>`.
pub fn run_leftovers(run_id: &str) -> (Vec<String>, Vec<String>) {
    let label = format!("peerlab.run={run_id}");
    (labelled("container", &label), labelled("network", &label))
}

/// Asserts that nothing of `run_id` remains.
pub fn assert_run_gone(run_id: &str) {
    let (containers, networks) = run_leftovers(run_id);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "run {run_id} left containers {containers:?} and networks {networks:?}"
    );
}

/// The run id the orchestrator announces on stderr (`run <id> of ...` / `up <id> of ...`).
pub fn announced_run_id(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("run" | "up"), Some(id), Some("of")) => Some(id.to_string()),
            _ => None,
        }
    })
}

/// Takes a run down with `peerlab down` when dropped, so a failing test cleans up too.
pub struct RunGuard {
    pub run_id: String,
    pub runs_dir: PathBuf,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let (containers, networks) = run_leftovers(&self.run_id);
        if containers.is_empty() && networks.is_empty() {
            return;
        }
        let _ = peerlab()
            .args(["down", &self.run_id, "--runs-dir"])
            .arg(&self.runs_dir)
            .output();
    }
}

/// A compose project started by a test or the benchmark; `down -v` when dropped.
pub struct ComposeProject {
    pub name: String,
    pub file: PathBuf,
}

impl ComposeProject {
    pub fn new(prefix: &str, file: &Path) -> Self {
        ComposeProject {
            name: unique(prefix),
            file: file.to_path_buf(),
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-f")
            .arg(&self.file)
            .args(["-p", &self.name, "--ansi", "never"]);
        cmd
    }

    /// Host address (`127.0.0.1:PORT`) where replica `index` (from 1) of `service`
    /// publishes `port`.
    pub fn port(&self, service: &str, index: usize, port: u16) -> String {
        let out = must(self.command().args([
            "port",
            &format!("--index={index}"),
            service,
            &port.to_string(),
        ]));
        let addr = out.trim().to_string();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "{service} #{index} publishes {port} at `{addr}`; expected 127.0.0.1:PORT"
        );
        addr
    }

    pub fn down(&self) {
        must(self.command().args(["down", "-v", "--timeout", "2"]));
    }

    /// Containers and networks of this project that still exist.
    pub fn leftovers(&self) -> (Vec<String>, Vec<String>) {
        let label = format!("com.docker.compose.project={}", self.name);
        (labelled("container", &label), labelled("network", &label))
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let (containers, networks) = self.leftovers();
        if !containers.is_empty() || !networks.is_empty() {
            let _ = self
                .command()
                .args(["down", "-v", "--timeout", "2"])
                .output();
        }
    }
}

/// The node's view through `peerlab status ADDR --json`, or why there is none yet.
pub fn status(addr: &str) -> Result<NodeStatus, String> {
    let out = output(peerlab().args(["status", addr, "--json"]));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad status JSON from {addr}: {e}"))
}

/// Polls the nodes at `addrs` (through `peerlab status`) until each lists `members` members
/// and, as the orchestrator's full-membership check judges it, they all know exactly each
/// other; fails at the deadline with the last problem.
pub fn wait_members(addrs: &[String], members: usize, deadline: Instant) {
    loop {
        let observations: Vec<_> = addrs
            .iter()
            .map(|addr| {
                let url = format!("http://{addr}");
                observation(addr, &url, status(addr), false)
            })
            .collect();
        let counted = observations.iter().find_map(|o| {
            let s = o.status.as_ref()?;
            (s.member_total() != members)
                .then(|| format!("{} lists {} members", o.name, s.member_total()))
        });
        let last = match counted {
            Some(p) => p,
            None => match formation::problem(&observations, &formation::full_membership()) {
                None => return,
                Some(p) => p,
            },
        };
        assert!(
            Instant::now() < deadline,
            "{addrs:?} did not list {members} members in time; last problem: {last}"
        );
        std::thread::sleep(DOCKER_POLL);
    }
}

/// The engine's API, failing the test (never skipping it) without an engine.
pub async fn connect() -> Docker {
    peerlab::runtime::docker::image::connect()
        .await
        .unwrap_or_else(|e| panic!("this test needs Docker: {e}"))
}

/// Removes `tag` (forced); a missing tag is no error.
pub async fn remove_image(docker: &Docker, tag: &str) {
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    let _ = docker.remove_image(tag, Some(options), None).await;
}

/// Runs `body` with the engine and a fresh tag `<prefix><unique>:test`, then removes that
/// tag even when `body` panicked.
pub async fn with_tag<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Docker, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let docker = connect().await;
    let tag = format!("{}:test", unique(prefix));
    let outcome = tokio::spawn(body(docker.clone(), tag.clone())).await;
    remove_image(&docker, &tag).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Containers and networks still labelled with `run_id`, counted through the API.
pub async fn remaining(docker: &Docker, run_id: &str) -> (usize, usize) {
    let filters = HashMap::from([("label", vec![format!("{RUN_LABEL}={run_id}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    (containers.len(), networks.len())
}

/// Runs `body` with the engine, a fresh run id `<prefix><unique>` and the node image of the
/// binary under test ([`runtime_test_image`], shared by every test of the process), then
/// removes every container and network of the run, even when `body` panicked.
pub async fn with_run<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Docker, String, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let docker = connect().await;
    let run_id = unique(prefix);
    let image = tokio::task::spawn_blocking(runtime_test_image)
        .await
        .expect("build the node image")
        .to_string();
    let outcome = tokio::spawn(body(docker.clone(), run_id.clone(), image)).await;
    let cleanup = remove_leftovers(Some(&run_id)).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    cleanup.unwrap();
}
