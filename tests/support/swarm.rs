//! A real multi-host Docker Swarm on the test machine: three (or N) Docker hosts, each a
//! `dockerd` in a network namespace of its own joined over a virtual L2 network, built and
//! removed by the shared swarm lab (`../shared/swarm-lab/lab`, see its README), and the
//! peerlab stacks deployed on it.
//!
//! - [`SwarmLab`]: `lab up N` under a prefix of its own (`p<pid hex><letter>`), so
//!   concurrent tests and runs do not collide; `lab load`, `lab cut`/`heal`, the Docker client of each
//!   host; `lab down` on [`SwarmLab::down`] (which asserts that nothing is left) or, when the
//!   test failed or panicked first, on drop. A lab left by a killed run is removed by the
//!   next run (its prefix names a process that no longer exists).
//! - [`Stack`]: `docker stack deploy --resolve-image never` of a stack file, its tasks,
//!   nodes observed from inside the overlay (`docker exec` of `peerlab status` in a task of
//!   a chosen host), one-shot services (`peerlab check` on the overlay), `docker stack rm`.
//!
//! Missing Docker, a missing lab script or no root make the test fail, never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use peerlab::contract::NodeStatus;
use peerlab::orchestrator::NodeObservation;

use super::docker::{DOCKER_POLL, must, output};
use super::formation::observation;

/// Environment variable naming the lab script (default: `../shared/swarm-lab/lab` next to
/// the repository, else `/work/shared/swarm-lab/lab`).
pub const LAB_ENV: &str = "PEERLAB_SWARM_LAB";

/// Prefix of this crate's lab names, before the test process id in hex and a letter per lab
/// (at most 8 characters, the lab's limit), so a lab is found again by the process that
/// owns it.
const PREFIX: &str = "p";

/// Labs brought up by this process so far: each gets its own prefix, so tests of one binary
/// running in parallel never share (and never take down) each other's lab.
static LABS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// `p<pid hex><one letter g..z>`: at most 8 characters (pids stay below 0x400000), and the
/// letter, never a hex digit, ends the pid.
fn lab_prefix() -> String {
    let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 20;
    format!("{PREFIX}{:x}{}", std::process::id(), char::from(b'g' + n))
}

/// The process a lab prefix names, for a prefix of [`lab_prefix`]'s form.
fn prefix_pid(prefix: &str) -> Option<u32> {
    let hex = prefix.strip_prefix(PREFIX)?;
    let (pid, letter) = hex.split_at(hex.len().checked_sub(1)?);
    if !matches!(letter.as_bytes(), [b'g'..=b'z']) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

/// The lab script: [`LAB_ENV`], else the first of the default places that exists; fails the
/// test (never skips) when there is none.
pub fn lab_script() -> PathBuf {
    if let Ok(path) = std::env::var(LAB_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{LAB_ENV}={} does not name the swarm lab script",
            path.display()
        );
        return path;
    }
    let beside = Path::new(super::ROOT).join("../shared/swarm-lab/lab");
    let fixed = PathBuf::from("/work/shared/swarm-lab/lab");
    for path in [beside.clone(), fixed.clone()] {
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "the swarm tests need the swarm lab script (shared/swarm-lab/lab): not found at {} nor {}; \
         set {LAB_ENV} to its path",
        beside.display(),
        fixed.display()
    );
}

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// `h1`, `h2`, ... (the value of its `peerlab.host` node label).
    pub name: String,
    /// Its daemon's socket, `unix:///tmp/swarm-lab-<prefix>/dN.sock`.
    pub socket: String,
}

/// A running swarm lab of this process (see the module docs).
pub struct SwarmLab {
    script: PathBuf,
    prefix: String,
    hosts: Vec<LabHost>,
    manager: String,
    down: bool,
}

impl SwarmLab {
    /// `lab up N`: N hosts, h1 the manager, every node labelled `peerlab.host=hN`. First
    /// removes labs that earlier, killed runs of these tests left (see the module docs).
    pub fn up(hosts: usize) -> SwarmLab {
        let script = lab_script();
        sweep_stale(&script);
        let prefix = lab_prefix();
        let mut lab = SwarmLab {
            script,
            prefix,
            hosts: Vec::new(),
            manager: String::new(),
            down: false,
        };
        let out = output(lab.lab().args(["up", &hosts.to_string()]));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`lab up {hosts}` failed ({}); the swarm tests need root, network namespaces and \
             the Docker engine:\n{}\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let var = |key: &str| {
            stdout.lines().find_map(|l| {
                let rest = l
                    .strip_prefix("export ")?
                    .strip_prefix(key)?
                    .strip_prefix('=')?;
                Some(rest.trim_matches('"').to_string())
            })
        };
        lab.manager = var("SWARM_LAB_MANAGER")
            .unwrap_or_else(|| panic!("`lab up` printed no SWARM_LAB_MANAGER:\n{stdout}"));
        lab.hosts = var("SWARM_LAB_HOSTS")
            .unwrap_or_else(|| panic!("`lab up` printed no SWARM_LAB_HOSTS:\n{stdout}"))
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(name, socket)| LabHost {
                name: name.to_string(),
                socket: socket.to_string(),
            })
            .collect();
        assert_eq!(lab.hosts.len(), hosts, "`lab up {hosts}` printed {stdout}");
        lab
    }

    /// The lab script with this lab's prefix.
    fn lab(&self) -> Command {
        lab_command(&self.script, &self.prefix)
    }

    /// The lab's prefix (names of its namespaces and swarm node hostnames).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hosts, h1 first.
    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    /// The swarm node hostname of host `host` (`<prefix>-h2`), as `docker node ls` and
    /// `docker service ps` show it.
    pub fn node_hostname(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// The host (`h2`) whose swarm node hostname is `node`.
    pub fn host_of_node(&self, node: &str) -> Option<String> {
        node.strip_prefix(&self.prefix)?
            .strip_prefix('-')
            .map(str::to_string)
    }

    /// `docker` against host `host`'s daemon.
    pub fn docker(&self, host: &str) -> Command {
        let socket = self
            .hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.socket.clone())
            .unwrap_or_else(|| panic!("the lab has no host {host}"));
        let mut cmd = Command::new("docker");
        cmd.env_remove("DOCKER_HOST").env_remove("DOCKER_CONTEXT");
        cmd.args(["-H", &socket]);
        cmd
    }

    /// `docker` against the manager (h1).
    pub fn manager(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env_remove("DOCKER_HOST").env_remove("DOCKER_CONTEXT");
        cmd.args(["-H", &self.manager]);
        cmd
    }

    /// `lab load IMAGE`: copies the image from the main engine to every host (no registry).
    pub fn load(&self, image: &str) {
        must(self.lab().args(["load", image]));
    }

    /// `lab cut HOST`: drops the host's overlay (VXLAN) and gossip traffic both ways; the
    /// control plane stays up, so Swarm reschedules nothing.
    pub fn cut(&self, host: &str) {
        must(self.lab().args(["cut", host]));
    }

    /// `lab heal HOST`.
    pub fn heal(&self, host: &str) {
        must(self.lab().args(["heal", host]));
    }

    /// `lab down`, asserting that it succeeded (it verifies that no process, namespace,
    /// cgroup, file or main-engine change is left); returns its report line.
    pub fn down(mut self) -> String {
        self.down = true;
        let out = output(self.lab().arg("down"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "`lab down` left something behind ({}):\n{stderr}",
            out.status
        );
        // Nothing runs any more; the logs `lab down` keeps are only worth keeping on failure.
        let _ = std::fs::remove_dir_all(lab_dir(&self.prefix));
        stderr
            .lines()
            .rfind(|l| l.contains("down in"))
            .unwrap_or("lab down: done")
            .to_string()
    }
}

impl Drop for SwarmLab {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        // The test failed or panicked before its own `down`: remove everything anyway.
        match self.lab().arg("down").output() {
            Ok(out) if out.status.success() => eprintln!(
                "swarm lab {}: taken down after the failure; its daemons' logs are in {}/logs",
                self.prefix,
                lab_dir(&self.prefix).display()
            ),
            Ok(out) => eprintln!(
                "swarm lab {}: `lab down` failed ({}):\n{}",
                self.prefix,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("swarm lab {}: cannot run `lab down`: {e}", self.prefix),
        }
    }
}

/// The lab's directory (sockets, data, logs): `/tmp/swarm-lab-<prefix>`, set explicitly so
/// a `SWARM_LAB_DIR` in the environment cannot make two labs share one.
fn lab_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/swarm-lab-{prefix}"))
}

/// The lab script for the lab `prefix`.
fn lab_command(script: &Path, prefix: &str) -> Command {
    let mut cmd = Command::new(script);
    cmd.env("SWARM_LAB_PREFIX", prefix)
        .env("SWARM_LAB_DIR", lab_dir(prefix));
    cmd
}

/// Takes down labs of this crate's prefix whose process is gone (a run killed before its
/// guard could), so they do not pile up, and removes the logs that failed runs kept: the lab
/// directory `/tmp/swarm-lab-p<pid hex><letter>`.
fn sweep_stale(script: &Path) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(prefix) = name.strip_prefix("swarm-lab-") else {
            continue;
        };
        let Some(pid) = prefix_pid(prefix) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // `lab status` exits 3 when nothing of the lab runs: only the logs of a failed run
        // are left, which that run has reported; remove them.
        let status = lab_command(script, prefix).arg("status").output();
        if status.is_ok_and(|s| s.status.code() == Some(3)) {
            let _ = std::fs::remove_dir_all(lab_dir(prefix));
            continue;
        }
        eprintln!("swarm lab {prefix}: left by process {pid}, which is gone; taking it down");
        let _ = lab_command(script, prefix).arg("down").output();
    }
}

/// One task of a stack as `docker stack ps` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// `<stack>_<service>.<slot>`.
    pub name: String,
    /// The swarm node hostname it runs on.
    pub node: String,
    /// `Running 3 seconds ago`, `Starting ...`, ...
    pub state: String,
}

impl Task {
    /// The service (without the stack prefix).
    pub fn service(&self, stack: &str) -> &str {
        let name = self.name.strip_prefix(stack).unwrap_or(&self.name);
        let name = name.strip_prefix('_').unwrap_or(name);
        name.rsplit_once('.').map_or(name, |(s, _)| s)
    }
}

/// What a one-shot service printed and how it ended.
#[derive(Debug)]
pub struct OneShot {
    /// The task container's exit code (`None` when the task never ran).
    pub exit_code: Option<i64>,
    /// Its final state and error (`Complete`, `Failed ... non-zero exit (1)`).
    pub state: String,
    /// Its standard output and error, through `docker service logs`.
    pub logs: String,
}

/// A stack deployed on a [`SwarmLab`]; removed (best effort) when dropped.
pub struct Stack<'a> {
    lab: &'a SwarmLab,
    /// The stack's name (`docker stack deploy ... NAME`).
    pub name: String,
    removed: bool,
    oneshots: usize,
}

impl<'a> Stack<'a> {
    /// `docker stack deploy --resolve-image never -c FILE NAME` against the manager.
    pub fn deploy(lab: &'a SwarmLab, name: &str, file: &Path) -> Stack<'a> {
        Stack::deploy_with_env(lab, name, file, &[])
    }

    /// [`Stack::deploy`] with `env` set for the `docker` client, which fills the stack
    /// file's `${VAR}`s (a network key, say) from it.
    pub fn deploy_with_env(
        lab: &'a SwarmLab,
        name: &str,
        file: &Path,
        env: &[(&str, &str)],
    ) -> Stack<'a> {
        let stack = Stack {
            lab,
            name: name.to_string(),
            removed: false,
            oneshots: 0,
        };
        must(
            lab.manager()
                .args(["stack", "deploy", "--resolve-image", "never", "-c"])
                .arg(file)
                .arg(name)
                .envs(env.iter().copied()),
        );
        stack
    }

    /// The stack's network `network` as Swarm names it (`<stack>_<network>`).
    pub fn network(&self, network: &str) -> String {
        format!("{}_{network}", self.name)
    }

    /// Tasks that should be running (`desired-state=running`).
    pub fn tasks(&self) -> Vec<Task> {
        let out = must(self.lab.manager().args([
            "stack",
            "ps",
            &self.name,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Name}}\t{{.Node}}\t{{.CurrentState}}",
        ]));
        out.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some(Task {
                    name: f.next()?.to_string(),
                    node: f.next()?.to_string(),
                    state: f.next()?.to_string(),
                })
            })
            .collect()
    }

    /// Polls until `count` tasks run, failing after `within` with the tasks last seen.
    pub fn wait_running(&self, count: usize, within: Duration) -> Vec<Task> {
        let deadline = Instant::now() + within;
        loop {
            let tasks = self.tasks();
            let running = tasks
                .iter()
                .filter(|t| t.state.starts_with("Running"))
                .count();
            if running == count && tasks.len() == count {
                return tasks;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} tasks of stack {} running after {within:?}: {tasks:#?}",
                running,
                self.name
            );
            std::thread::sleep(DOCKER_POLL);
        }
    }

    /// A running container of service `service` on host `host`, if any.
    pub fn container_on(&self, host: &str, service: &str) -> Option<String> {
        let out = output(self.lab.docker(host).args([
            "ps",
            "-q",
            "--filter",
            &format!(
                "label=com.docker.swarm.service.name={}_{service}",
                self.name
            ),
        ]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string)
    }

    /// What node `node` (a name the overlay's DNS resolves) shows, asked from inside the
    /// overlay: `peerlab status NODE:PORT --json` run in `container` on host `host`.
    pub fn status_via(
        &self,
        host: &str,
        container: &str,
        node: &str,
        port: u16,
    ) -> Result<NodeStatus, String> {
        let out = self
            .lab
            .docker(host)
            .args(["exec", container, "/peerlab", "status"])
            .arg(format!("{node}:{port}"))
            .arg("--json")
            .output()
            .map_err(|e| format!("cannot run docker exec: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad status JSON of {node}: {e}"))
    }

    /// The nodes `names` as seen from a task of `service` on `host` (every status asked at
    /// once), as observations for the orchestrator's formation checks.
    pub fn observe(
        &self,
        host: &str,
        service: &str,
        names: &[String],
        port: u16,
    ) -> Vec<NodeObservation> {
        let Some(container) = self.container_on(host, service) else {
            return names
                .iter()
                .map(|n| {
                    let error = format!("no running task of {service} on {host} to ask from");
                    observation(n, n, Err(error), false)
                })
                .collect();
        };
        std::thread::scope(|scope| {
            let asked: Vec<_> = names
                .iter()
                .map(|name| {
                    let container = &container;
                    scope.spawn(move || {
                        let status = self.status_via(host, container, name, port);
                        let ready = status.as_ref().is_ok_and(|s| s.joined);
                        observation(name, &format!("http://{name}:{port}"), status, ready)
                    })
                })
                .collect();
            asked
                .into_iter()
                .zip(names)
                .map(|(handle, name)| {
                    handle.join().unwrap_or_else(|_| {
                        observation(name, name, Err("the asking thread panicked".into()), false)
                    })
                })
                .collect()
        })
    }

    /// Runs `/peerlab ARGS` as a one-shot service on `network` (attachable), pinned to the
    /// manager, and waits up to `within` for it to end; the service is removed afterwards.
    pub fn oneshot(
        &mut self,
        image: &str,
        network: &str,
        args: &[&str],
        within: Duration,
    ) -> OneShot {
        self.oneshots += 1;
        let name = format!("{}-oneshot-{}", self.name, self.oneshots);
        must(
            self.lab
                .manager()
                .args(["service", "create", "--detach", "--name", &name])
                .args(["--network", network])
                .args(["--restart-condition", "none", "--no-resolve-image"])
                // The image's HEALTHCHECK asks a node's status socket, which a one-shot
                // command does not serve: Swarm would kill it as unhealthy.
                .arg("--no-healthcheck")
                .args(["--constraint", "node.role==manager"])
                .args(["--label", &format!("peerlab.oneshot={}", self.name)])
                .args(["--entrypoint", "/peerlab", image])
                .args(args),
        );
        let deadline = Instant::now() + within;
        let (task, state) = loop {
            let out = output(self.lab.manager().args([
                "service",
                "ps",
                &name,
                "--no-trunc",
                "--format",
                "{{.ID}}\t{{.CurrentState}}\t{{.Error}}",
            ]));
            let line = String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let mut f = line.split('\t');
            let (id, state, error) = (
                f.next().unwrap_or_default().to_string(),
                f.next().unwrap_or_default().to_string(),
                f.next().unwrap_or_default().to_string(),
            );
            let ended = ["Complete", "Failed", "Rejected", "Shutdown", "Orphaned"]
                .iter()
                .any(|s| state.starts_with(s));
            if ended {
                break (id, format!("{state} {error}").trim().to_string());
            }
            if Instant::now() >= deadline {
                let logs = self.logs(&name);
                let _ = output(self.lab.manager().args(["service", "rm", &name]));
                panic!(
                    "one-shot `peerlab {}` did not end within {within:?} (last state `{state}`):\n{logs}",
                    args.join(" ")
                );
            }
            std::thread::sleep(DOCKER_POLL);
        };
        let code = output(self.lab.manager().args([
            "inspect",
            "--type",
            "task",
            "--format",
            "{{.Status.ContainerStatus.ExitCode}}",
            &task,
        ]));
        let exit_code = String::from_utf8_lossy(&code.stdout).trim().parse().ok();
        let logs = self.logs(&name);
        must(self.lab.manager().args(["service", "rm", &name]));
        OneShot {
            exit_code,
            state,
            logs,
        }
    }

    fn logs(&self, service: &str) -> String {
        // Logs of a finished task can lag its end by a moment: ask until they are there.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = output(
                self.lab
                    .manager()
                    .args(["service", "logs", "--raw", service]),
            );
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !text.trim().is_empty() || Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(DOCKER_POLL);
        }
    }

    /// `docker stack rm`, then waits until no task container is left on any host and the
    /// stack's networks are gone from the manager; fails with what remains after `within`.
    ///
    /// Swarm removes a stack's services and networks in one go, and a network whose last
    /// task is still shutting down is refused ("is in use by task"): the services are then
    /// gone and the network stays. That one refusal is expected, and `stack rm` is repeated
    /// once the tasks are gone; any other failure fails the test.
    pub fn remove(mut self, within: Duration) {
        self.removed = true;
        let first = output(self.lab.manager().args(["stack", "rm", &self.name]));
        let stderr = String::from_utf8_lossy(&first.stderr);
        assert!(
            first.status.success() || stderr.contains("is in use by task"),
            "`docker stack rm {}` failed: {stderr}",
            self.name
        );
        let label = format!("com.docker.stack.namespace={}", self.name);
        let deadline = Instant::now() + within;
        loop {
            let mut left = Vec::new();
            for host in self.lab.hosts() {
                let out = must(self.lab.docker(&host.name).args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label={label}"),
                ]));
                left.extend(
                    out.lines()
                        .map(|c| format!("container {c} on {}", host.name)),
                );
            }
            let networks = must(self.lab.manager().args([
                "network",
                "ls",
                "-q",
                "--filter",
                &format!("label={label}"),
            ]));
            left.extend(networks.lines().map(|n| format!("network {n}")));
            let services = must(self.lab.manager().args(["service", "ls", "-q"]));
            left.extend(services.lines().map(|s| format!("service {s}")));
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`docker stack rm {}` left after {within:?}: {left:?}",
                self.name
            );
            if left.iter().all(|l| l.starts_with("network ")) {
                // Only the networks a task still held at the first `stack rm`.
                let _ = output(self.lab.manager().args(["stack", "rm", &self.name]));
            }
            std::thread::sleep(DOCKER_POLL);
        }
    }
}

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        if !self.removed {
            // `lab down` removes it too; this only makes a failed test's teardown shorter.
            let _ = self
                .lab
                .manager()
                .args(["stack", "rm", &self.name])
                .output();
        }
    }
}
