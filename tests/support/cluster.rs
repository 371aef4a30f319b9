//! `peerlab node` child processes on loopback, started one by one or as a [`Cluster`].
//!
//! Every node binds port 0 and reports its ports through `--ports-file`, so tests run in
//! parallel without colliding. Each node's stderr goes to a log file in the cluster's
//! tempdir (printed when a wait times out). Dropping a [`Node`] SIGKILLs and reaps its
//! process, so a panicking test never leaves a `peerlab node` behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use peerlab::client::StatusClient;
use peerlab::contract::{DeliveredMessage, NodeStatus};

use super::formation::{self, observation};
use super::{ADMIN_TOKEN, BIN, POLL, poll_until};

/// Flags for fast failure detection (the SIGKILL cases), loose enough for a busy 2-core box.
pub const FAST_TIMEOUTS: [&str; 6] = [
    "--heartbeat-interval",
    "200ms",
    "--heartbeat-timeout",
    "1s",
    "--suspect-timeout",
    "1s",
];

/// What a node writes to `--ports-file` after binding.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Ports {
    pub listen: SocketAddr,
    pub status: SocketAddr,
    pub advertise: String,
    pub id: String,
}

/// One `peerlab node` child process. Dropping it SIGKILLs and reaps the process.
pub struct Node {
    pub name: String,
    pub ports: Ports,
    pub log: PathBuf,
    pub client: StatusClient,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// How to start one node.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub name: String,
    /// Genesis addresses (`--genesis`); empty for a genesis node.
    pub genesis: Vec<String>,
    /// Where to listen; default `127.0.0.1:0`.
    pub listen: Option<String>,
    /// Extra flags (timeouts, degree, `--stdin`).
    pub args: Vec<String>,
    /// Keep a pipe to the node's stdin (for `--stdin`).
    pub piped_stdin: bool,
    /// Start without an admin token (`/admin/*` off); by default nodes get [`ADMIN_TOKEN`].
    pub admin_off: bool,
    /// Extra environment variables of the process.
    pub env: Vec<(String, String)>,
    /// Variables of the test's own environment the process must not inherit.
    pub env_removed: Vec<String>,
}

impl Spec {
    pub fn new(name: &str) -> Self {
        Spec {
            name: name.to_string(),
            ..Spec::default()
        }
    }

    pub fn genesis(mut self, addr: &str) -> Self {
        self.genesis.push(addr.to_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }
}

/// A child that has been spawned but has not written its ports file yet.
pub struct Starting {
    spec: Spec,
    child: Child,
    ports_file: PathBuf,
    log: PathBuf,
}

/// Spawns `peerlab node` for `spec`, logging to `<dir>/<name>.log`. Does not wait.
pub fn spawn(dir: &Path, spec: Spec) -> Starting {
    let ports_file = dir.join(format!("{}.ports.json", spec.name));
    let log = dir.join(format!("{}.log", spec.name));
    let log_file = std::fs::File::create(&log).expect("create log file");
    let mut cmd = Command::new(BIN);
    cmd.arg("node")
        .arg("--listen")
        .arg(spec.listen.as_deref().unwrap_or("127.0.0.1:0"))
        .arg("--status")
        .arg("127.0.0.1:0")
        .arg("--ports-file")
        .arg(&ports_file)
        .arg("--name")
        .arg(&spec.name);
    if !spec.genesis.is_empty() {
        cmd.arg("--genesis").arg(spec.genesis.join(","));
    }
    if spec.admin_off {
        cmd.env_remove("PEERLAB_ADMIN_TOKEN");
    } else {
        cmd.env("PEERLAB_ADMIN_TOKEN", ADMIN_TOKEN);
    }
    for name in &spec.env_removed {
        cmd.env_remove(name);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.args(&spec.args)
        .env("PEERLAB_LOG", "info")
        .stdin(if spec.piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(log_file);
    let child = cmd.spawn().expect("spawn peerlab node");
    Starting {
        spec,
        child,
        ports_file,
        log,
    }
}

impl Starting {
    /// Waits for the ports file (the node has bound its sockets).
    pub async fn ready(mut self, within: Duration) -> Node {
        let what = format!("{} to write its ports file", self.spec.name);
        let ports = poll_until(within, &what, || {
            let exited = self.child.try_wait().ok().flatten();
            let ports = std::fs::read_to_string(&self.ports_file)
                .ok()
                .and_then(|text| serde_json::from_str::<Ports>(&text).ok());
            if let (None, Some(status)) = (&ports, exited) {
                panic!(
                    "{} exited ({status}) before binding; log:\n{}",
                    self.spec.name,
                    read_log(&self.log)
                );
            }
            async move { ports }
        })
        .await;
        let client = StatusClient::new(&ports.status.to_string(), Duration::from_secs(5))
            .expect("status client");
        let stdin = self.child.stdin.take();
        Node {
            name: self.spec.name,
            ports,
            log: self.log,
            client,
            child: self.child,
            stdin,
        }
    }
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read log: {e})"))
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn id(&self) -> &str {
        &self.ports.id
    }

    pub fn addr(&self) -> String {
        self.ports.advertise.clone()
    }

    pub fn status_addr(&self) -> String {
        self.ports.status.to_string()
    }

    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, signal).expect("signal the node");
    }

    /// Polls for the process to exit; `None` when it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes to the node's stdin (spawned with `piped_stdin`).
    pub fn write_stdin(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("node spawned with piped stdin");
        stdin.write_all(text.as_bytes()).expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// VmRSS in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.child.id())
    }

    pub async fn status(&self) -> Option<NodeStatus> {
        self.client.status().await.ok()
    }

    /// `GET /status?members=false`.
    pub async fn status_brief(&self) -> Option<NodeStatus> {
        self.client.status_brief().await.ok()
    }

    pub async fn messages(&self) -> Option<Vec<DeliveredMessage>> {
        self.client.messages().await.ok()
    }

    pub async fn is_ready(&self) -> bool {
        self.client.ready().await.unwrap_or(false)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A set of nodes sharing a tempdir for ports files and logs. Nodes are dropped (killed)
/// before the tempdir; on panic the tempdir path is kept in the message of failed waits.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    pub fn new() -> Self {
        Cluster {
            nodes: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("peerlab-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// Starts one node and waits for its ports; returns its index.
    pub async fn start(&mut self, spec: Spec) -> usize {
        let node = spawn(self.dir.path(), spec)
            .ready(Duration::from_secs(10))
            .await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts a genesis and `peers` peers joining it, the peers all at once.
    pub async fn genesis_and_peers(&mut self, peers: usize, args: &[&str]) {
        let g = self.start(Spec::new("g0").args(args)).await;
        let genesis = self.nodes[g].addr();
        let starting: Vec<Starting> = (1..=peers)
            .map(|i| {
                spawn(
                    self.dir.path(),
                    Spec::new(&format!("p{i:03}")).genesis(&genesis).args(args),
                )
            })
            .collect();
        for s in starting {
            let node = s.ready(Duration::from_secs(20)).await;
            self.nodes.push(node);
        }
    }

    pub fn by_name(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// Removes a node from the cluster (to kill or stop it); the caller owns it now.
    pub fn take(&mut self, index: usize) -> Node {
        self.nodes.remove(index)
    }

    /// Status of every node, or `None` if any does not answer.
    pub async fn statuses(&self) -> Option<Vec<NodeStatus>> {
        let all = futures::future::join_all(self.nodes.iter().map(|n| n.status())).await;
        all.into_iter().collect()
    }

    /// What every node's `/status` and `/ready` say now, as the orchestrator's checks read it.
    pub async fn observe(&self) -> Vec<peerlab::orchestrator::NodeObservation> {
        let asks = self.nodes.iter().map(|n| async move {
            let (status, ready) = futures::join!(n.client.status(), n.is_ready());
            let url = format!("http://{}", n.status_addr());
            observation(&n.name, &url, status.map_err(|e| e.to_string()), ready)
        });
        futures::future::join_all(asks).await
    }

    /// Waits until the overlay of exactly the cluster's nodes is formed, as the
    /// orchestrator's checks judge it ([`formation::formed`]), and closed: links reported by
    /// both ends, none to a node outside the cluster. Returns the final statuses.
    pub async fn wait_formed(&self, min_degree: usize, within: Duration) -> Vec<NodeStatus> {
        let expect = formation::formed(min_degree);
        let deadline = Instant::now() + within;
        loop {
            let observations = self.observe().await;
            let Some(last_problem) = formation::closed_problem(&observations, &expect) else {
                return observations.into_iter().filter_map(|o| o.status).collect();
            };
            if Instant::now() >= deadline {
                panic!(
                    "overlay not formed after {within:?}: {last_problem}\nlogs in {}",
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Keeps the tempdir (logs) after the test, for a post-mortem.
    pub fn keep_logs(self) -> PathBuf {
        let Cluster { nodes, dir } = self;
        drop(nodes);
        dir.keep()
    }
}
