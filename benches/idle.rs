//! Idle cost of a node: CPU per node per second and memory (PSS) per node of N local
//! `peerlab node` processes that have formed their network and have nothing to do, for
//! this build and, side by side in the same run, for a baseline binary.
//!
//! ```text
//! cargo bench --bench idle [-- 300] [-- --baseline /work/baseline/peerlab]
//!     [-- --window 20] [-- --settle 10] [-- --settings topologies/three-hundred.yaml | built-in]
//! ```
//!
//! The nodes run with the node settings of a topology file (`--settings`, by default
//! `topologies/three-hundred.yaml`, the topology the issue's figure of "about 1.1 ms/s" at
//! N=300 was taken with: heartbeat 1 s, timeout 4 s, degree 4), passed to both binaries as
//! the same flags, or with each binary's own built-in defaults (`--settings built-in`,
//! heartbeat 500 ms). The table says which.
//!
//! Each binary in turn: a genesis and N-1 peers on loopback (port 0, ports read from each
//! node's ports file), formation awaited by polling every status socket (everyone joined,
//! every member list complete), `--settle` seconds for the joins' floods to die down, then
//! CPU (utime + stime from /proc/PID/stat) over a `--window` of seconds in which nothing
//! polls the nodes, wake-ups (voluntary context switches of all the process's threads,
//! from /proc/PID/task/*/status: each is the process going to sleep) over the same
//! window, and PSS from /proc/PID/smaps_rollup. After the window every node must
//! still list all N members, so that a cheap node is not a broken one.
//!
//! The bench is self-contained (no orchestrator) so that both binaries are started the same
//! way, whatever their version. Every node it starts is killed when the bench ends, also
//! on a panic or Ctrl-C: children are killed by a guard when dropped, by a Ctrl-C handler,
//! and by the kernel (parent-death signal) if the bench itself is killed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{build_line, cpu_ticks, load_average};

mod support;

use support::processes::{
    Nodes, Registry, Settings, flag, formation_problem, positional_sizes, read_ports, spawn_node,
};

/// The build under test (release under `cargo bench`).
const BIN: &str = env!("CARGO_BIN_EXE_peerlab");
/// /proc counts CPU time in USER_HZ, which the kernel ABI fixes at 100 on x86_64.
const USER_HZ: u64 = 100;
/// How long formation may take before the run is reported as not formed.
const FORMATION_LIMIT: Duration = Duration::from_secs(180);

/// One row of the table.
struct Row {
    binary: String,
    nodes: usize,
    formed_after: Option<Duration>,
    cpu_ms_per_s: Option<f64>,
    wakeups_per_s: Option<f64>,
    pss_mb: Option<f64>,
    load: String,
    still_formed: String,
}

fn main() {
    let sizes = positional_sizes(&[300]);
    let window = Duration::from_secs(flag("window").and_then(|v| v.parse().ok()).unwrap_or(20));
    let settle = Duration::from_secs(flag("settle").and_then(|v| v.parse().ok()).unwrap_or(10));
    let settings = node_settings();
    let mut binaries = vec![("this build".to_string(), PathBuf::from(BIN))];
    if let Some(path) = flag("baseline") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "--baseline {} is not a file (build the baseline first)",
            path.display()
        );
        binaries.insert(0, (format!("baseline ({})", path.display()), path));
    }

    let registry: Registry = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    {
        let registry = registry.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                if let Ok(pids) = registry.lock() {
                    for pid in pids.iter() {
                        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
                    }
                }
                eprintln!("interrupted; every node killed");
                std::process::exit(130);
            }
        });
    }

    let mut rows = Vec::new();
    for &n in &sizes {
        for (label, path) in &binaries {
            eprintln!("{label}: {n} nodes");
            let row = runtime.block_on(measure(
                label, path, n, window, settle, &settings, &registry,
            ));
            rows.push(row);
        }
    }

    let mut table = String::new();
    table.push_str(&format!(
        "Idle cost per node ({}, window {} s after {} s of settling)\n\nNode settings: {}\n\n",
        build_line(),
        window.as_secs(),
        settle.as_secs(),
        settings.label
    ));
    table.push_str("| binary | N | formed in | CPU ms/s per node | wake-ups/s per node | PSS MB per node | load average (1/5/15 min) | still formed after the window |\n");
    table.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.binary,
            r.nodes,
            r.formed_after.map_or("not formed".to_string(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
            r.cpu_ms_per_s
                .map_or("-".to_string(), |v| format!("{v:.3}")),
            r.wakeups_per_s
                .map_or("-".to_string(), |v| format!("{v:.1}")),
            r.pss_mb.map_or("-".to_string(), |v| format!("{v:.2}")),
            r.load,
            r.still_formed,
        ));
    }
    print!("{table}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let path = dir.join("idle.md");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &table)) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

async fn measure(
    label: &str,
    bin: &Path,
    n: usize,
    window: Duration,
    settle: Duration,
    settings: &Settings,
    registry: &Registry,
) -> Row {
    let dir = tempfile::Builder::new()
        .prefix("peerlab-idle-")
        .tempdir()
        .expect("a tempdir for the nodes' ports files and logs");
    let mut row = Row {
        binary: label.to_string(),
        nodes: n,
        formed_after: None,
        cpu_ms_per_s: None,
        wakeups_per_s: None,
        pss_mb: None,
        load: String::new(),
        still_formed: "-".to_string(),
    };
    let mut nodes = Nodes {
        children: Vec::new(),
        registry: registry.clone(),
    };
    let started = Instant::now();
    nodes.children.push(spawn_node(
        bin,
        dir.path(),
        0,
        None,
        &settings.args,
        registry,
    ));
    let Some(genesis) = read_ports(dir.path(), 0, Duration::from_secs(20)).await else {
        row.load = load_average();
        row.still_formed = "the genesis did not start".into();
        return row;
    };
    for i in 1..n {
        nodes.children.push(spawn_node(
            bin,
            dir.path(),
            i,
            Some(&genesis.listen),
            &settings.args,
            registry,
        ));
    }
    let mut status = vec![String::new(); n];
    status[0] = genesis.status.clone();
    for (i, slot) in status.iter_mut().enumerate().skip(1) {
        match read_ports(dir.path(), i, Duration::from_secs(60)).await {
            Some(p) => *slot = p.status,
            None => {
                row.load = load_average();
                row.still_formed = format!("node {i} did not start");
                return row;
            }
        }
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    let formed = loop {
        let problem = formation_problem(&http, &status, n).await;
        if problem.is_none() {
            break true;
        }
        if started.elapsed() > FORMATION_LIMIT {
            row.still_formed = problem.unwrap_or_default();
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if !formed {
        row.load = load_average();
        return row;
    }
    row.formed_after = Some(started.elapsed());
    tokio::time::sleep(settle).await;

    let pids = nodes.pids();
    let before: Vec<Option<u64>> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let switches_before: Vec<Option<u64>> = pids.iter().map(|p| sleeps(*p)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let after: Vec<Option<u64>> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let switches_after: Vec<Option<u64>> = pids.iter().map(|p| sleeps(*p)).collect();
    let elapsed = t0.elapsed().as_secs_f64();
    let woke: Vec<u64> = switches_before
        .iter()
        .zip(&switches_after)
        .filter_map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?)))
        .collect();
    if !woke.is_empty() {
        row.wakeups_per_s = Some(woke.iter().sum::<u64>() as f64 / woke.len() as f64 / elapsed);
    }
    row.load = load_average();
    let ticks: u64 = before
        .iter()
        .zip(&after)
        .filter_map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?)))
        .sum();
    let measured = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.is_some() && a.is_some())
        .count();
    if measured > 0 {
        let ms = ticks as f64 * 1000.0 / USER_HZ as f64;
        row.cpu_ms_per_s = Some(ms / measured as f64 / elapsed);
    }
    let pss: Vec<u64> = pids.iter().filter_map(|p| pss_kib(*p)).collect();
    if !pss.is_empty() {
        row.pss_mb = Some(pss.iter().sum::<u64>() as f64 / pss.len() as f64 / 1024.0);
    }
    row.still_formed = match formation_problem(&http, &status, n).await {
        None => "yes".into(),
        Some(why) => format!("no: {why}"),
    };
    drop(nodes);
    row
}

/// `--settings FILE` (default `topologies/three-hundred.yaml`) or `--settings built-in`.
fn node_settings() -> Settings {
    Settings::chosen(&flag("settings").unwrap_or_else(|| "topologies/three-hundred.yaml".into()))
}

/// Voluntary context switches of a process (all its threads): each is the process going
/// to sleep, so each is one wake-up after it.
fn sleeps(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
        total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Proportional set size of a process in KiB: shared pages (the binary's text) are split
/// among the processes that map them, so the sum over nodes is what they cost together.
fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
