//! The local runtime: every node is a child process of this same executable (`peerlab node`).
//!
//! Each node gets its own loopback address (127.a.b.c), so addresses differ as hosts do, and
//! binds port 0, reporting its ports through a ports file, so runs and tests never collide.
//! Children of an attached run die with the orchestrator (PR_SET_PDEATHSIG), whatever way it
//! ends; a detached run (`peerlab up`) records its pids in `state.json` for `peerlab down`.
//! Every node process carries `PEERLAB_RUN=<run id>`, which is how [`scan_processes`] lists and
//! removes runs without any state file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::hosts::HostEmulation;
use super::links::LinkFaults;
use super::{
    Capabilities, NodeAction, NodeEndpoint, NodeSpec, RunListing, RunPlan, Runtime, RuntimeError,
    TeardownReport,
};
use crate::contract::LinkShape;
use crate::contract::{ADMIN_TOKEN_ENV, NETWORK_KEY_ENV};

mod processes;

pub use processes::{RUN_ENV, RunProcess, scan_processes, stop_processes};

/// How long a node may take to bind and write its ports file.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node may take to leave after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What `peerlab ps` / `peerlab down` read back for a local run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalState {
    /// Id of the run.
    pub run_id: String,
    /// Name of the topology that was run.
    pub topology: String,
    /// Whether the run was left running on purpose (`peerlab up`, `--keep`).
    pub detached: bool,
    /// Node name -> (pid, status URL).
    pub nodes: BTreeMap<String, LocalNode>,
}

/// How to reach one node of a local run after the orchestrator exited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalNode {
    /// Process id, to stop the node.
    pub pid: u32,
    /// Base URL of its status socket.
    pub status_url: String,
    /// Address other nodes dial.
    pub peer_addr: String,
}

#[derive(Debug, Deserialize)]
struct PortsFile {
    listen: String,
    status: String,
    advertise: String,
}

struct Started {
    child: Child,
    endpoint: NodeEndpoint,
    /// Bound peer and status addresses, reused when the node is started again so that
    /// its neighbours and the orchestrator find it where it was.
    listen: String,
    status: String,
}

/// The local runtime: every node is a child process of this executable on a loopback
/// address, so a run needs no Docker.
pub struct LocalRuntime {
    executable: PathBuf,
    plan: Option<RunPlan>,
    /// Loopback address of each node.
    addresses: HashMap<String, String>,
    nodes: Mutex<HashMap<String, Started>>,
    /// Genesis peer addresses, known once the genesis nodes have started.
    genesis: Mutex<Vec<(String, String)>>,
    /// Partitions and shaping applied through the nodes' admin endpoints.
    links: LinkFaults,
    /// The plan's hosts, emulated by shaping each node's links to other hosts' nodes.
    hosts: HostEmulation,
}

impl LocalRuntime {
    /// A runtime that starts nodes with the current executable (`peerlab node`).
    pub fn new() -> Result<Self, RuntimeError> {
        let executable = std::env::current_exe().map_err(|e| {
            RuntimeError::Failed(format!(
                "cannot find this executable to start nodes with: {e}"
            ))
        })?;
        Ok(Self::with_executable(executable))
    }

    /// Starts nodes from another `peerlab` binary (tests use the freshly built one).
    pub fn with_executable(executable: PathBuf) -> Self {
        LocalRuntime {
            executable,
            plan: None,
            addresses: HashMap::new(),
            nodes: Mutex::new(HashMap::new()),
            genesis: Mutex::new(Vec::new()),
            links: LinkFaults::new(),
            hosts: HostEmulation::default(),
        }
    }

    fn plan(&self) -> Result<&RunPlan, RuntimeError> {
        self.plan
            .as_ref()
            .ok_or_else(|| RuntimeError::Failed("the local runtime was not prepared".into()))
    }

    fn write_state(&self) {
        let Ok(plan) = self.plan() else { return };
        let nodes = match self.nodes.lock() {
            Ok(n) => n,
            Err(p) => p.into_inner(),
        };
        let state = LocalState {
            run_id: plan.run_id.clone(),
            topology: plan.topology_name.clone(),
            detached: plan.detach,
            nodes: nodes
                .iter()
                .filter_map(|(name, s)| {
                    Some((
                        name.clone(),
                        LocalNode {
                            pid: s.child.id()?,
                            status_url: s.endpoint.status_url.clone(),
                            peer_addr: s.endpoint.peer_addr.clone(),
                        },
                    ))
                })
                .collect(),
        };
        if let Ok(text) = serde_json::to_string_pretty(&state) {
            let _ = std::fs::write(plan.run_dir.join("state.json"), text);
        }
    }
}

/// Link faults: the nodes cut and shape their own links (loopback has no other way).
impl LocalRuntime {
    /// Endpoints of the named nodes, refusing names that are not running in this run.
    fn endpoints(&self, names: &[String]) -> Result<Vec<NodeEndpoint>, RuntimeError> {
        let nodes = lock(&self.nodes);
        names
            .iter()
            .map(|name| {
                nodes.get(name).map(|s| s.endpoint.clone()).ok_or_else(|| {
                    RuntimeError::Failed(format!("no node named {name} was started in this run"))
                })
            })
            .collect()
    }

    fn all_endpoints(&self) -> Vec<NodeEndpoint> {
        lock(&self.nodes)
            .values()
            .map(|s| s.endpoint.clone())
            .collect()
    }

    /// Undoes every link fault before the processes go; returns what could not be undone.
    async fn clear_links(&self) -> Vec<String> {
        self.links.clear_all(&self.all_endpoints()).await
    }
}

/// Loopback addresses for a run: 127.a.b.c with a, b from the run id, c from 1 to 250.
fn allocate_addresses(run_id: &str, names: &[String]) -> HashMap<String, String> {
    let hash = crate::contract::digest::digest(&[run_id]);
    let bytes = hex::decode(&hash[..4]).unwrap_or_else(|_| vec![1, 1]);
    let a = 1 + (bytes[0] % 250) as usize;
    let b = bytes[1] as usize;
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let third = (b + i / 250) % 256;
            let fourth = 1 + i % 250;
            (name.clone(), format!("127.{a}.{third}.{fourth}"))
        })
        .collect()
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    /// Every fault (signals, and link faults through the nodes' admin endpoints), but one
    /// network: loopback cannot keep nodes on separate networks apart.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            isolated_networks: false,
            ..Capabilities::ALL
        }
    }

    fn check_support(&self, plan: &RunPlan) -> Result<(), RuntimeError> {
        // A child process has no cgroup of its own to limit, and a limit silently not
        // applied would make a run mean something else than its topology says.
        if let Some(node) = plan.nodes.iter().find(|n| n.resources.is_some()) {
            return Err(RuntimeError::Unsupported {
                runtime: "local",
                reason: format!(
                    "group `{}` sets `resources` (CPU/memory limits), which local processes                      cannot be held to; use --runtime docker (or swarm, kubernetes), or remove                      `resources` from the topology to run it locally unlimited",
                    node.group
                ),
            });
        }
        // Loopback is one network: nodes on networks that do not meet cannot be kept apart.
        let everyone: Vec<&NodeSpec> = plan.nodes.iter().collect();
        for (i, a) in everyone.iter().enumerate() {
            for b in &everyone[i + 1..] {
                let share = a.networks.is_empty()
                    || b.networks.is_empty()
                    || a.networks.iter().any(|n| b.networks.contains(n));
                if !share {
                    return Err(RuntimeError::Unsupported {
                        runtime: "local",
                        reason: format!(
                            "{} and {} share no network, and local processes all sit on loopback; \
                             use --runtime docker for isolated networks",
                            a.name, b.name
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    async fn prepare(&mut self, plan: &RunPlan) -> Result<(), RuntimeError> {
        std::fs::create_dir_all(plan.run_dir.join("logs"))?;
        std::fs::create_dir_all(plan.run_dir.join("ports"))?;
        let names: Vec<String> = plan.nodes.iter().map(|n| n.name.clone()).collect();
        self.addresses = allocate_addresses(&plan.run_id, &names);
        // A node's peers know it by its loopback IP before it starts: its ports are not
        // chosen yet, but the IP is its own and every frame to or from it carries it.
        let addresses = &self.addresses;
        self.hosts = HostEmulation::new(plan, |n| {
            addresses.get(&n.name).cloned().into_iter().collect()
        });
        self.links.use_token(plan.admin_token.clone());
        self.plan = Some(plan.clone());
        self.write_state();
        Ok(())
    }

    async fn start(&self, node: &NodeSpec) -> Result<NodeEndpoint, RuntimeError> {
        let ip = self
            .addresses
            .get(&node.name)
            .ok_or_else(|| RuntimeError::Failed(format!("{} is not in the plan", node.name)))?;
        let any = format!("{ip}:0");
        let endpoint = self.spawn(node, &any, &any, false).await?;
        self.hosts.apply(&self.links, &endpoint).await?;
        Ok(endpoint)
    }

    async fn act(&self, node: &str, action: NodeAction) -> Result<(), RuntimeError> {
        if action == NodeAction::Start {
            return self.start_again(node).await;
        }
        let pid = {
            let nodes = lock(&self.nodes);
            let started = nodes
                .get(node)
                .ok_or_else(|| RuntimeError::Failed(format!("no node named {node} in this run")))?;
            started
                .child
                .id()
                .ok_or_else(|| RuntimeError::Failed(format!("{node} is not running")))?
        };
        let signal = match action {
            NodeAction::Kill | NodeAction::Start => Signal::SIGKILL,
            NodeAction::Stop => Signal::SIGTERM,
            NodeAction::Pause => Signal::SIGSTOP,
            NodeAction::Resume => Signal::SIGCONT,
        };
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| RuntimeError::Failed(format!("cannot signal {node}: {e}")))?;
        Ok(())
    }

    async fn partition(&self, sides: &[Vec<String>], one_way: bool) -> Result<(), RuntimeError> {
        self.links
            .partition_named(&|names| self.endpoints(names), sides, one_way)
            .await
    }

    async fn heal(&self) -> Result<(), RuntimeError> {
        self.links.heal_all(&self.all_endpoints()).await
    }

    async fn shape(
        &self,
        nodes: &[String],
        peers: Option<&[String]>,
        shape: LinkShape,
    ) -> Result<(), RuntimeError> {
        self.links
            .shape_named(&|names| self.endpoints(names), nodes, peers, shape)
            .await
    }

    async fn teardown(&mut self) -> Result<TeardownReport, RuntimeError> {
        // Faults first: a node must not be left blocked or shaped if teardown stops early.
        let mut report = TeardownReport {
            leftovers: self.clear_links().await,
            ..TeardownReport::default()
        };
        let started: Vec<(String, Started)> = lock(&self.nodes).drain().collect();
        let mut waiting = Vec::new();
        for (name, mut s) in started {
            if let Some(pid) = s.child.id() {
                // A stopped (paused) node cannot handle SIGTERM until it is continued.
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            waiting.push(async move {
                match tokio::time::timeout(STOP_GRACE, s.child.wait()).await {
                    Ok(_) => Ok(()),
                    Err(_) => {
                        let _ = s.child.start_kill();
                        match tokio::time::timeout(Duration::from_secs(2), s.child.wait()).await {
                            Ok(_) => Ok(()),
                            Err(_) => Err(format!("{name}: process did not exit")),
                        }
                    }
                }
            });
        }
        for outcome in futures::future::join_all(waiting).await {
            match outcome {
                Ok(()) => report.processes_stopped += 1,
                Err(e) => report.leftovers.push(e),
            }
        }
        if let Some(plan) = &self.plan {
            let _ = std::fs::remove_file(plan.run_dir.join("state.json"));
        }
        Ok(report)
    }

    async fn list_runs(&self) -> Result<Vec<RunListing>, RuntimeError> {
        let mut runs: BTreeMap<String, usize> = BTreeMap::new();
        for p in scan_processes() {
            *runs.entry(p.run_id).or_default() += 1;
        }
        Ok(RunListing::from_counts(self.name(), runs))
    }

    /// Stops the run's processes; their logs are already in the run directory, so
    /// `logs_dir` is not needed.
    async fn remove_run(
        &self,
        run: Option<&str>,
        _logs_dir: Option<&Path>,
    ) -> Result<TeardownReport, RuntimeError> {
        Ok(stop_processes(run).await)
    }
}

impl LocalRuntime {
    /// Starts a killed or stopped node again on the addresses it had bound, once its old
    /// process is gone (a stopped node may still be flooding its leave).
    async fn start_again(&self, name: &str) -> Result<(), RuntimeError> {
        let spec = self
            .plan()?
            .nodes
            .iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| RuntimeError::Failed(format!("no node named {name} in this run")))?;
        let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(2);
        let (listen, status) = loop {
            {
                let mut nodes = lock(&self.nodes);
                let started = nodes.get_mut(name).ok_or_else(|| {
                    RuntimeError::Failed(format!(
                        "{name} was never started, so it cannot be started again"
                    ))
                })?;
                if let Ok(Some(_)) = started.child.try_wait() {
                    break (started.listen.clone(), started.status.clone());
                }
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "{name} is still running; kill or stop it before starting it again"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let endpoint = self.spawn(&spec, &listen, &status, true).await?;
        // Its shapes died with its last process.
        self.hosts.apply(&self.links, &endpoint).await
    }

    /// Spawns `peerlab node` for `node` and waits for its ports file. `append` keeps the
    /// log of an earlier life of the node.
    async fn spawn(
        &self,
        node: &NodeSpec,
        listen: &str,
        status: &str,
        append: bool,
    ) -> Result<NodeEndpoint, RuntimeError> {
        let plan = self.plan()?;
        let ports_path = plan
            .run_dir
            .join("ports")
            .join(format!("{}.json", node.name));
        let _ = std::fs::remove_file(&ports_path);
        let log_path = plan.run_dir.join("logs").join(format!("{}.log", node.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log_path)?;
        let log_err = log.try_clone()?;
        // The node's key lives in the run directory: a restarted node keeps its identity.
        let keys = plan.run_dir.join("keys");
        std::fs::create_dir_all(&keys)?;
        let key_path = keys.join(format!("{}.key", node.name));

        let genesis: Vec<String> = {
            let known = lock(&self.genesis);
            known
                .iter()
                .filter(|(name, _)| *name != node.name)
                .map(|(_, addr)| addr.clone())
                .collect()
        };
        let mut cmd = Command::new(&self.executable);
        cmd.arg("node")
            .arg("--name")
            .arg(&node.name)
            .arg("--listen")
            .arg(listen)
            .arg("--status")
            .arg(status)
            .arg("--ports-file")
            .arg(&ports_path)
            .arg("--key-file")
            .arg(&key_path)
            .arg("--seed")
            .arg(node.seed.to_string())
            .args(&node.node_args)
            .env_remove("PEERLAB_GENESIS")
            .env(RUN_ENV.trim_end_matches('='), &plan.run_id)
            .env("PEERLAB_LOG_FORMAT", "pretty")
            // In the environment, not on the command line: `ps` shows arguments to all.
            .env(ADMIN_TOKEN_ENV, plan.admin_token.expose())
            // The topology alone decides whether the nodes need a network key: one in
            // peerlab's own environment is not inherited by a run that asks for none.
            .env_remove(NETWORK_KEY_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(!plan.detach);
        if let Some(key) = &plan.network_key {
            cmd.env(NETWORK_KEY_ENV, key.expose());
        }
        // Genesis nodes start one by one, so a later genesis joins through the earlier ones.
        if !genesis.is_empty() {
            cmd.arg("--genesis").arg(genesis.join(","));
        }
        let detach = plan.detach;
        // SAFETY: only async-signal-safe calls (prctl, setsid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if detach {
                    nix::unistd::setsid().map_err(std::io::Error::from)?;
                } else {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                        .map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            RuntimeError::Failed(format!(
                "cannot start {} ({}): {e}",
                node.name,
                self.executable.display()
            ))
        })?;

        let deadline = Instant::now() + START_TIMEOUT;
        let ports: PortsFile = loop {
            if let Ok(text) = std::fs::read_to_string(&ports_path)
                && let Ok(p) = serde_json::from_str(&text)
            {
                break p;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(RuntimeError::Failed(format!(
                    "{} exited ({status}) before it was up; last log lines:\n{}",
                    node.name,
                    log_tail(&log_path, 8)
                )));
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(RuntimeError::Failed(format!(
                    "{} did not open its sockets within {:?}; see {}",
                    node.name,
                    START_TIMEOUT,
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let endpoint = NodeEndpoint {
            name: node.name.clone(),
            peer_addr: ports.advertise.clone(),
            status_url: format!("http://{}", ports.status),
        };
        if node.genesis {
            let mut known = lock(&self.genesis);
            if !known.iter().any(|(n, _)| *n == node.name) {
                known.push((node.name.clone(), ports.advertise));
            }
        }
        lock(&self.nodes).insert(
            node.name.clone(),
            Started {
                child,
                endpoint: endpoint.clone(),
                listen: ports.listen,
                status: ports.status,
            },
        );
        self.write_state();
        Ok(endpoint)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::NodeResources;

    #[test]
    fn addresses_are_distinct_loopback_hosts() {
        let names: Vec<String> = (0..600).map(|i| format!("n{i}")).collect();
        let addrs = allocate_addresses("quickstart-abc123", &names);
        let distinct: std::collections::HashSet<&String> = addrs.values().collect();
        assert_eq!(distinct.len(), 600);
        for a in addrs.values() {
            let ip: std::net::Ipv4Addr = a.parse().expect("an IPv4 address");
            assert!(ip.is_loopback(), "{a} is not loopback");
            assert_ne!(ip.octets()[3], 0);
            assert_ne!(ip.octets()[3], 255);
        }
    }

    #[test]
    fn resource_limits_are_refused_with_what_to_do_instead() {
        let node = |name: &str, resources: Option<NodeResources>| NodeSpec {
            name: name.into(),
            group: name.split('-').next().unwrap_or(name).into(),
            genesis: name.starts_with("genesis"),
            networks: Vec::new(),
            start_after: std::time::Duration::ZERO,
            node_args: Vec::new(),
            seed: 1,
            host: None,
            resources,
        };
        let plan = |nodes: Vec<NodeSpec>| RunPlan {
            run_id: "res-000001".into(),
            run_dir: "/tmp/unused".into(),
            topology_name: "res".into(),
            image: "peerlab:test".into(),
            networks: Vec::new(),
            nodes,
            hosts: Vec::new(),
            detach: false,
            admin_token: crate::contract::AdminToken::generate(),
            network_key: None,
        };
        let runtime = LocalRuntime::new().expect("local runtime");
        let free = plan(vec![node("genesis-0", None), node("peers-0", None)]);
        assert!(runtime.check_support(&free).is_ok());
        let limited = plan(vec![
            node("genesis-0", None),
            node(
                "peers-0",
                Some(NodeResources {
                    cpu_millis: Some(250),
                    memory_bytes: None,
                }),
            ),
        ]);
        let reason = runtime
            .check_support(&limited)
            .expect_err("limits cannot be applied to processes")
            .to_string();
        assert!(
            reason.contains("`peers`") && reason.contains("--runtime docker"),
            "{reason}"
        );
    }
}
