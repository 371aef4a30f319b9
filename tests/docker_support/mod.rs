//! Helpers for Docker end-to-end tests and the Docker benchmark: drive the built `peerlab`
//! binary, the `docker` and `docker-compose` clients, and prove nothing is left behind.
//!
//! Everything goes through the command-line clients, as a user would, so the tests exercise
//! the same paths as the documentation. Guards remove what a test started even when it
//! panics, so a failing test does not leave containers for the next one.
//!
//! Shared by `tests/docker_e2e.rs` and `benches/docker.rs`; not every item is used by each.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peerlab::contract::NodeStatus;
use sha2::{Digest, Sha256};

/// The binary under test (built by cargo for integration tests and benches).
pub const BIN: &str = env!("CARGO_BIN_EXE_peerlab");
/// The repository root: topologies and the top-level docker-compose.yml live there.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Interval between polls; every poll loop has its own deadline.
pub const POLL: Duration = Duration::from_millis(250);

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

pub fn peerlab() -> Command {
    Command::new(BIN)
}

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

/// Make sure `peerlab:<version>` holds the binary under test, building it once per process
/// with `peerlab image build` (as a user would) only when it is missing or stale. Parallel
/// tests wait for the one build instead of racing to build the same tag.
pub fn ensure_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
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

/// Polls `addr` until its node lists `members` members; fails at the deadline with the
/// last answer.
pub fn wait_members(addr: &str, members: usize, deadline: Instant) {
    loop {
        let last = match status(addr) {
            Ok(s) if s.members.len() == members => return,
            Ok(s) => format!("{} members", s.members.len()),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{addr} did not list {members} members in time; last answer: {last}"
        );
        std::thread::sleep(POLL);
    }
}
