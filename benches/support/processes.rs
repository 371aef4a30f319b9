//! Nodes of any `peerlab` binary, this build or a baseline, started as plain processes on
//! loopback and watched through their ports files and status sockets: for the benches that
//! compare two binaries side by side in one run (`idle`, `auth`), where the library API
//! (which always runs this build) cannot start the baseline.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::Signal;

/// Pids of every node started, for the Ctrl-C handler.
pub type Registry = Arc<Mutex<Vec<u32>>>;

/// Kills every node process it holds when dropped (also on a panic).
pub struct Nodes {
    pub children: Vec<Child>,
    pub registry: Registry,
}

impl Nodes {
    /// The nodes' pids, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        if let Ok(mut pids) = self.registry.lock() {
            pids.clear();
        }
    }
}

/// Starts node `i` (`i == 0`: the genesis) with its ports file and log in `dir`.
pub fn spawn_node(
    bin: &Path,
    dir: &Path,
    i: usize,
    genesis: Option<&str>,
    settings: &[String],
    registry: &Registry,
) -> Child {
    let log = std::fs::File::create(dir.join(format!("n{i}.log"))).expect("a node log file");
    let mut cmd = Command::new(bin);
    cmd.arg("node")
        .args(["--listen", "127.0.0.1:0", "--status", "127.0.0.1:0"])
        .args(["--name", &format!("n{i:04}")])
        .args(["--seed", &i.to_string()])
        .args(settings)
        .arg("--ports-file")
        .arg(dir.join(format!("n{i}.json")))
        .env("PEERLAB_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(g) = genesis {
        cmd.args(["--genesis", g]);
    }
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    if let Ok(mut pids) = registry.lock() {
        pids.push(child.id());
    }
    child
}

pub struct Ports {
    pub listen: String,
    pub status: String,
}

/// Waits for node `i`'s ports file (written once it listens).
pub async fn read_ports(dir: &Path, i: usize, within: Duration) -> Option<Ports> {
    let path = dir.join(format!("n{i}.json"));
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let listen = v.get("listen")?.as_str()?.to_string();
            let status = v.get("status")?.as_str()?.to_string();
            return Some(Ports { listen, status });
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Why the network is not formed (every node answers, has joined and counts `n` members),
/// or `None` when it is.
pub async fn formation_problem(
    http: &reqwest::Client,
    status: &[String],
    n: usize,
) -> Option<String> {
    let asks = status.iter().map(|addr| async move {
        let url = format!("http://{addr}/status?members=false");
        let v: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        let joined = v.get("joined")?.as_bool()?;
        let count = v.get("member_count")?.as_u64()? as usize;
        Some((joined, count))
    });
    // At most 64 requests at once: a thousand connects at the same instant to a loaded
    // machine's nodes time out together, and the poll would say nothing answered.
    let answers: Vec<Option<(bool, usize)>> = futures::stream::iter(asks)
        .buffer_unordered(64)
        .collect()
        .await;
    let silent = answers.iter().filter(|a| a.is_none()).count();
    if silent > 0 {
        return Some(format!("{silent} node(s) did not answer"));
    }
    let unjoined = answers.iter().flatten().filter(|(j, _)| !j).count();
    if unjoined > 0 {
        return Some(format!("{unjoined} node(s) have not joined"));
    }
    let partial = answers.iter().flatten().filter(|(_, c)| *c != n).count();
    (partial > 0).then(|| format!("{partial} node(s) do not list all {n} members"))
}

/// The value of `--NAME VALUE` or `--NAME=VALUE`.
pub fn flag(name: &str) -> Option<String> {
    let long = format!("--{name}");
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == long {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{long}=")).map(str::to_string)
        }
    })
}

/// Network sizes given as bare numbers (flag values excluded), else `defaults`.
pub fn positional_sizes(defaults: &[usize]) -> Vec<usize> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.starts_with("--") {
            // `--bench` (from cargo) stands alone; the others take a value.
            if !a.contains('=') && a != "--bench" {
                i += 1;
            }
        } else if let Ok(n) = a.parse::<usize>() {
            if n >= 2 {
                sizes.push(n);
            } else {
                eprintln!("ignoring size {n}: a network needs at least 2 nodes");
            }
        }
        i += 1;
    }
    if sizes.is_empty() {
        defaults.to_vec()
    } else {
        sizes
    }
}

/// The node settings both binaries of a comparison run with: flags, and how a table names
/// them.
pub struct Settings {
    pub args: Vec<String>,
    pub label: String,
}

impl Settings {
    /// No flags: each binary's own defaults.
    pub fn built_in() -> Settings {
        Settings {
            args: Vec::new(),
            label: "each binary's built-in defaults (no flags)".into(),
        }
    }

    /// `built-in`, or a topology file (relative to the repository if not found here): the
    /// node settings of its first peer group, as flags.
    pub fn chosen(chosen: &str) -> Settings {
        if chosen == "built-in" {
            return Settings::built_in();
        }
        let mut path = PathBuf::from(chosen);
        if path.is_relative() && !path.exists() {
            path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(chosen);
        }
        let topology = peerlab::topology::load(&path)
            .unwrap_or_else(|e| panic!("--settings {}: {e}", path.display()));
        let group = topology.groups.first().unwrap_or(&topology.genesis).clone();
        let s = &group.settings;
        let label = format!(
            "`{}` (group `{}`): heartbeat {}, heartbeat timeout {}, suspect timeout {}, degree {}, max peers {}, max connections {}; the same flags for both binaries",
            chosen,
            group.name,
            peerlab::topology::duration_text(s.heartbeat_interval),
            peerlab::topology::duration_text(s.heartbeat_timeout),
            peerlab::topology::duration_text(s.suspect_timeout),
            s.degree,
            s.max_peers,
            s.max_connections,
        );
        Settings {
            args: s.to_args(),
            label,
        }
    }
}
