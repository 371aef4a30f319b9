//! Swarm benchmark: N nodes spread over three Docker Swarm hosts, deployed with the stack
//! that `peerlab compose --stack` writes, against the bare `docker stack deploy` of that
//! same stack file.
//!
//! ```text
//! cargo bench --bench swarm [-- 30 100 300]
//! ```
//!
//! Needs root, a Docker engine and the shared swarm lab (`../shared/swarm-lab/lab`, or
//! `PEERLAB_SWARM_LAB`): the bench brings up a three-host lab of its own (prefix `pb`), loads
//! the node image of this build into every host, and takes the lab down at the end, also on
//! a panic. Every size is one deploy, timed from the `docker stack deploy` command:
//!
//! - `tasks running`: until `docker stack ps` shows all N tasks running, what the bare
//!   `docker stack deploy` gives you;
//! - `formed`: until `peerlab check` (a one-shot service on the overlay, created right after
//!   the deploy, so it waits for nodes to appear) has seen every node joined, knowing all N
//!   members, the overlay connected; it is what a user who deployed with peerlab waits for.
//!   Its end is read from the task's own timestamp, not from this bench's polling.
//!
//! Goal (issue 14): 100 nodes formed in at most 30 s, and within 1.5 times the bare deploy.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use support::docker::{ROOT, must, output, peerlab};

/// The lab's name prefix for this bench (at most 8 characters).
const PREFIX: &str = "pb";
/// The node image this bench builds from its own release binary and loads into the lab.
const IMAGE: &str = "peerlab-bench:swarm";
/// How long one size may take to form.
const DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(200);

/// The lab script: `PEERLAB_SWARM_LAB`, else `../shared/swarm-lab/lab` next to the
/// checkout, else `/work/shared/swarm-lab/lab`.
fn lab_script() -> PathBuf {
    if let Ok(path) = std::env::var("PEERLAB_SWARM_LAB") {
        return PathBuf::from(path);
    }
    let beside = Path::new(ROOT).join("../shared/swarm-lab/lab");
    if beside.is_file() {
        return beside;
    }
    PathBuf::from("/work/shared/swarm-lab/lab")
}

/// A three-host lab, taken down when dropped (also on a panic).
struct Lab {
    script: PathBuf,
    manager: String,
}

impl Lab {
    fn command(script: &Path) -> Command {
        let mut cmd = Command::new(script);
        cmd.env("SWARM_LAB_PREFIX", PREFIX)
            .env("SWARM_LAB_DIR", format!("/tmp/swarm-lab-{PREFIX}"));
        cmd
    }

    fn up(hosts: usize) -> Lab {
        let script = lab_script();
        let stdout = must(Lab::command(&script).args(["up", &hosts.to_string()]));
        let manager = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export SWARM_LAB_MANAGER="))
            .map(|m| m.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("`lab up` printed no SWARM_LAB_MANAGER:\n{stdout}"));
        Lab { script, manager }
    }

    fn load(&self, image: &str) {
        must(Lab::command(&self.script).args(["load", image]));
    }

    /// `docker` against the manager.
    fn manager(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(["-H", &self.manager]);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = output(Lab::command(&self.script).arg("down"));
        if out.status.success() {
            // Nothing of the lab runs any more: its directory holds only the daemons' logs.
            let _ = std::fs::remove_dir_all(format!("/tmp/swarm-lab-{PREFIX}"));
        } else {
            eprintln!(
                "`lab down` left something behind:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A topology of `n` nodes: a genesis on h1, the peers spread over h1..h3.
fn topology(n: usize) -> String {
    format!(
        "name: swarm-bench-{n}\nseed: 1\nimage: {IMAGE}\n\
         defaults: {{degree: 4, max_peers: 16, max_connections: 256}}\n\
         hosts: [{{name: h1}}, {{name: h2}}, {{name: h3}}]\n\
         genesis: {{count: 1, host: h1}}\n\
         groups:\n  - {{name: peers, count: {}}}\n",
        n - 1
    )
}

/// Seconds from `t0` to a Docker timestamp (RFC 3339, nanoseconds, UTC).
fn since(t0: SystemTime, stamp: &str) -> Option<f64> {
    let at = humantime::parse_rfc3339_weak(stamp.trim()).ok()?;
    Some(match at.duration_since(t0) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    })
}

struct Row {
    nodes: usize,
    running: Option<f64>,
    formed: Option<f64>,
    load: String,
}

fn measure(lab: &Lab, n: usize, dir: &Path) -> Row {
    let name = format!("swarm-bench-{n}");
    let topo = dir.join(format!("{name}.yaml"));
    std::fs::write(&topo, topology(n)).expect("the bench's temp dir is writable");
    let stack = dir.join(format!("{name}.stack.yml"));
    must(
        peerlab()
            .args(["compose", "--stack", "-o"])
            .arg(&stack)
            .arg(&topo),
    );

    let t0 = SystemTime::now();
    let started = Instant::now();
    must(
        lab.manager()
            .args(["stack", "deploy", "--resolve-image", "never", "-c"])
            .arg(&stack)
            .arg(&name),
    );
    let check = format!("{name}-check");
    must(
        lab.manager()
            .args(["service", "create", "--detach", "--name", &check])
            .args(["--network", &format!("{name}_net")])
            .args([
                "--restart-condition",
                "none",
                "--no-resolve-image",
                "--no-healthcheck",
            ])
            .args([
                "--constraint",
                "node.role==manager",
                "--entrypoint",
                "/peerlab",
                IMAGE,
            ])
            .args([
                "check",
                "--dns",
                "tasks.peerlab-nodes",
                "--status-port",
                "7071",
            ])
            .args(["--expect-nodes", &n.to_string(), "--within", "280s"]),
    );

    let mut running = None;
    let mut formed = None;
    while started.elapsed() < DEADLINE && formed.is_none() {
        if running.is_none() {
            let ps = output(lab.manager().args([
                "stack",
                "ps",
                &name,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
            ]));
            let text = String::from_utf8_lossy(&ps.stdout);
            if text.lines().filter(|l| l.starts_with("Running")).count() == n {
                running = Some(started.elapsed().as_secs_f64());
            }
        }
        let state = output(lab.manager().args([
            "service",
            "ps",
            &check,
            "--no-trunc",
            "--format",
            "{{.ID}} {{.CurrentState}}",
        ]));
        let line = String::from_utf8_lossy(&state.stdout).to_string();
        if let Some((task, state)) = line.lines().next().and_then(|l| l.split_once(' ')) {
            if state.starts_with("Complete") {
                let at = must(lab.manager().args([
                    "inspect",
                    "--type",
                    "task",
                    "--format",
                    "{{.Status.Timestamp}}",
                    task,
                ]));
                formed = since(t0, &at).or(Some(started.elapsed().as_secs_f64()));
            } else if state.starts_with("Failed") || state.starts_with("Rejected") {
                let logs = output(lab.manager().args(["service", "logs", "--raw", &check]));
                eprintln!(
                    "N={n}: the check failed ({state}):\n{}",
                    String::from_utf8_lossy(&logs.stdout)
                );
                break;
            }
        }
        std::thread::sleep(POLL);
    }
    let load = support::load_average();
    if formed.is_none() {
        // Say why: how far the tasks got, and what the check saw last.
        let ps = output(lab.manager().args([
            "stack",
            "ps",
            &name,
            "--format",
            "{{.CurrentState}} {{.Error}}",
        ]));
        let mut states: std::collections::BTreeMap<String, usize> = Default::default();
        for line in String::from_utf8_lossy(&ps.stdout).lines() {
            let state = line.split(" (").next().unwrap_or(line).to_string();
            let state: String = state.split_whitespace().take(1).collect();
            *states
                .entry(
                    format!("{state} {}", line.split(") ").nth(1).unwrap_or(""))
                        .trim()
                        .to_string(),
                )
                .or_default() += 1;
        }
        let logs = output(
            lab.manager()
                .args(["service", "logs", "--raw", "--tail", "15", &check]),
        );
        eprintln!(
            "N={n}: not formed; task states {states:?}; the check's last lines:\n{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
    eprintln!("N={n}: tasks running {running:?} s, formed {formed:?} s; removing the stack");
    let _ = output(lab.manager().args(["service", "rm", &check]));
    // The next size starts on an empty swarm. `stack rm` cannot remove the network while
    // the check's task still leaves it, and says so; repeating it removes what is left.
    let gone = Instant::now() + Duration::from_secs(120);
    loop {
        let rm = output(lab.manager().args(["stack", "rm", &name]));
        let left = output(lab.manager().args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={name}"),
        ]));
        if rm.status.success() && left.stdout.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        assert!(
            Instant::now() < gone,
            "stack {name} not removed within 120 s: {}",
            String::from_utf8_lossy(&rm.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    Row {
        nodes: n,
        running,
        formed,
        load,
    }
}

fn main() {
    let sizes = support::sizes(&[30, 100, 300]);
    // The node image of this build's own release binary, under a tag of the bench's own.
    must(peerlab().args(["image", "build", "--tag", IMAGE]));
    let lab = Lab::up(3);
    lab.load(IMAGE);
    let dir = tempfile::tempdir().expect("a temp dir");

    let mut rows = Vec::new();
    for n in sizes {
        eprintln!("N={n}: deploying over 3 hosts");
        rows.push(measure(&lab, n, dir.path()));
    }
    drop(lab);
    let _ = output(Command::new("docker").args(["image", "rm", IMAGE]));

    let mut t = String::new();
    let _ = writeln!(
        t,
        "Swarm formation over 3 hosts ({})\n",
        support::build_line()
    );
    let _ = writeln!(
        t,
        "| N | docker stack deploy: tasks running | peerlab: formed | formed / running | load average (1/5/15 min) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    let secs = |v: Option<f64>| v.map_or("not within 300 s".to_string(), |s| format!("{s:.1} s"));
    for r in &rows {
        let ratio = match (r.formed, r.running) {
            (Some(f), Some(run)) if run > 0.0 => format!("{:.2}", f / run),
            _ => "-".into(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {ratio} | {} |",
            r.nodes,
            secs(r.running),
            secs(r.formed),
            r.load
        );
    }
    support::publish("swarm.md", &t);
}
