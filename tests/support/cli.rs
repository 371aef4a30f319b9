//! The `peerlab` command line as a user runs it: one-shot commands ([`run_cli`]) and the
//! end-to-end tests of `peerlab run|up|ps|down` on the local runtime ([`Workspace`]).
//!
//! Every test gets its own [`Workspace`]: a tempdir holding its runs directory and its own
//! copy of a topology under a name no other test uses. Parallel tests therefore never see
//! each other's processes, and the workspace's `Drop` kills whatever a failing test left
//! behind (every process whose `PEERLAB_RUN` starts with `<name>-`), so no test leaks nodes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use peerlab::runtime::local::scan_processes;

use super::{BIN, POLL, topologies_dir};

/// Longest any single `peerlab` invocation may take before the test gives up on it.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(150);

/// What a finished `peerlab` invocation printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything printed, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// The run id from the `run <id> of ...` / `up <id> of ...` line on stderr.
    pub fn run_id(&self) -> Option<String> {
        self.stderr.lines().find_map(run_id_in_line)
    }
}

/// The run id of a `run <id> of ...` or `up <id> of ...` line.
pub fn run_id_in_line(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("run ")
        .or_else(|| line.strip_prefix("up "))?;
    let (id, tail) = rest.split_once(' ')?;
    tail.starts_with("of ").then(|| id.to_string())
}

/// A tempdir with a runs directory and the topologies of one test.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// Run ids of this workspace start with `<prefix>-`.
    prefix: String,
}

impl Workspace {
    /// `name` must be unique among the tests and not a prefix of another test's name.
    pub fn new(name: &str) -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
            prefix: format!("{name}-"),
        }
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Writes `yaml` as a topology file of this workspace.
    pub fn write(&self, file: &str, yaml: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, yaml).expect("write topology");
        path
    }

    /// Copies `topologies/<file>` into the workspace, renamed to this workspace's name.
    pub fn copy_topology(&self, file: &str) -> PathBuf {
        let source = std::fs::read_to_string(topologies_dir().join(file)).expect("read topology");
        let name = self.prefix.trim_end_matches('-');
        let mut renamed = false;
        let text: String = source
            .lines()
            .map(|line| {
                if !renamed && line.starts_with("name:") {
                    renamed = true;
                    format!("name: {name}")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(renamed, "{file} has no top-level name");
        self.write(file, &text)
    }

    /// `peerlab ARGS` with this workspace's runs dir, waited for with [`COMMAND_LIMIT`].
    pub fn peerlab(&self, args: &[&str]) -> Output {
        self.peerlab_with_env(args, &[])
    }

    /// [`Workspace::peerlab`] with extra environment variables.
    pub fn peerlab_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        Running::start(command).wait(COMMAND_LIMIT)
    }

    /// Starts `peerlab ARGS --runs-dir <runs>` without waiting.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::start(self.command(args))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("PEERLAB_RUNS_DIR", self.runs_dir())
            .env_remove("PEERLAB_RUN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Processes (pids) of runs started from this workspace.
    pub fn processes(&self) -> Vec<u32> {
        scan_processes()
            .into_iter()
            .filter(|p| p.run_id.starts_with(&self.prefix))
            .map(|p| p.pid)
            .collect()
    }

    /// Run directories created under the runs dir.
    pub fn run_dirs(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.runs_dir()) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        for pid in self.processes() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Processes of exactly this run still alive (a zombie has no readable environment).
pub fn processes_of(run_id: &str) -> Vec<u32> {
    scan_processes()
        .into_iter()
        .filter(|p| p.run_id == run_id)
        .map(|p| p.pid)
        .collect()
}

/// Polls until no process of `run_id` is left, or panics after `within`.
pub fn assert_gone_within(run_id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_of(run_id);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of run {run_id} still alive after {within:?}: {left:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// A `peerlab` invocation in flight; its output is collected on reader threads so pipes
/// never fill up. Dropping it kills the process.
pub struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: String,
}

impl Running {
    fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("start peerlab");
        let stdout = lines_of(child.stdout.take().expect("piped stdout"));
        let stderr = lines_of(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
            stderr_seen: String::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal peerlab");
    }

    /// Stderr printed so far (non-blocking).
    pub fn stderr_so_far(&mut self) -> &str {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push_str(&line);
            self.stderr_seen.push('\n');
        }
        &self.stderr_seen
    }

    /// Waits for exit, killing the process and panicking after `within`.
    pub fn wait(mut self, within: Duration) -> Output {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr_so_far().to_string();
                panic!("peerlab did not finish within {within:?}; stderr so far:\n{stderr}");
            }
            std::thread::sleep(POLL);
        };
        // The pipes close at exit; the reader threads then end their channels.
        let mut stdout = String::new();
        for line in self.stdout.iter() {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        for line in self.stderr.iter() {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Node log files in a run directory.
pub fn node_logs(run_dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(run_dir.join("logs")) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs `peerlab` with `args` and returns (exit status, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run peerlab");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
