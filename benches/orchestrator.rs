//! Orchestrator benchmark: how long `peerlab run` takes to form networks of N local nodes,
//! driving the library exactly as `peerlab run --runtime local` does (plan, prepare,
//! execute, teardown) with nodes started from the release `peerlab` binary.
//!
//! Run: `cargo bench --bench orchestrator` (N = 10, 100, 300), or choose sizes with
//! `cargo bench --bench orchestrator -- 10 1000` or `PEERLAB_BENCH_NODES=10,1000`.
//! Writes a markdown table to `target/bench/orchestrator.md`.
//! `PEERLAB_BENCH_KEEP_LOGS=1` keeps each run directory (node logs, report.json) under
//! `target/bench/runs/` for investigation.
//!
//! Formation time is the orchestrator's own: from the start of the run to every formation
//! check holding (all ready, connected, min degree, full membership), as polled over the
//! status sockets. Wall time covers prepare, start, formation, broadcast checks and teardown.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use peerlab::orchestrator::progress::Progress;
use peerlab::orchestrator::run::{Stage, execute};
use peerlab::runtime::local::{LocalRuntime, scan_processes};
use peerlab::runtime::{RunPlan, Runtime};
use peerlab::topology;

const BIN: &str = env!("CARGO_BIN_EXE_peerlab");
/// Goals on a 2-core machine, by network size.
const GOALS: [(usize, Duration); 2] = [
    (100, Duration::from_secs(3)),
    (1000, Duration::from_secs(30)),
];
/// How often node memory and CPU are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

struct Row {
    nodes: usize,
    formation: Option<Duration>,
    checks_passed: usize,
    checks_total: usize,
    failed: Vec<String>,
    wall: Duration,
    peak_rss_kib: u64,
    node_cpu: Duration,
}

fn sizes() -> Vec<usize> {
    let from_args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    if !from_args.is_empty() {
        return from_args;
    }
    if let Ok(list) = std::env::var("PEERLAB_BENCH_NODES") {
        let parsed: Vec<usize> = list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if !parsed.is_empty() {
            return parsed;
        }
        eprintln!(
            "PEERLAB_BENCH_NODES={list:?} is not a list of sizes like 10,100; using defaults"
        );
    }
    vec![10, 100, 300]
}

/// Node settings of large networks, as in topologies/three-hundred.yaml: with the built-in
/// 500ms/1500ms/3s timeouts, a CPU-starved 2-core host misses heartbeats at a few hundred
/// nodes and false deaths snowball (see the report of the 1000-node run).
const LARGE_SETTINGS: &str = "defaults:\n  max_connections: 256\n  heartbeat_interval: 1s\n  \
                              heartbeat_timeout: 4s\n  suspect_timeout: 8s\n";
/// From this size on, the bench uses three genesis nodes and [`LARGE_SETTINGS`].
const LARGE: usize = 200;

/// The topology a user would write for N nodes: peers started as fast as the runtime
/// allows, a formation check and a broadcast check.
fn topology_yaml(n: usize) -> String {
    let (genesis, settings) = if n >= LARGE {
        (3, LARGE_SETTINGS)
    } else {
        (1, "")
    };
    let within = 30 + n as u64 / 10;
    format!(
        "name: bench-{n}\nseed: {n}\n{settings}genesis:\n  count: {genesis}\n\
         groups:\n  - name: peers\n    count: {peers}\n\
         checks:\n  formation:\n    within: {within}s\n    min_degree: 2\n\
         \x20 broadcast:\n    count: 3\n    deliver_within: 15s\n    reliability: 1.0\n",
        peers = n - genesis,
    )
}

/// Peak summed RSS and last CPU time of a run's processes, sampled from /proc.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, Duration)>,
}

impl Sampler {
    fn start(run_id: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0u64;
            let mut cpu: HashMap<u32, u64> = HashMap::new();
            while !flag.load(Ordering::Relaxed) {
                let pids: Vec<u32> = scan_processes()
                    .into_iter()
                    .filter(|p| p.run_id == run_id)
                    .map(|p| p.pid)
                    .collect();
                peak = peak.max(pids.iter().filter_map(|p| rss_kib(*p)).sum());
                for pid in pids {
                    if let Some(t) = cpu_ticks(pid) {
                        cpu.insert(pid, t);
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            let total: u64 = cpu.values().sum();
            (peak, Duration::from_secs_f64(total as f64 / USER_HZ as f64))
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// /proc counts CPU time in USER_HZ, which the kernel ABI fixes at 100 on x86_64.
const USER_HZ: u64 = 100;

async fn measure(n: usize, runs_dir: &Path) -> Row {
    assert!(n >= 2, "a network needs at least 2 nodes");
    let yaml = topology_yaml(n);
    let topology = topology::parse_str(&yaml, &format!("bench-{n}.yaml"))
        .unwrap_or_else(|e| panic!("the bench topology is invalid:\n{e}"));
    let seed = topology.seed;
    let run_id = format!("bench-{n}-{:06x}", std::process::id() & 0xff_ffff);
    let plan = RunPlan {
        run_dir: runs_dir.join(&run_id),
        run_id: run_id.clone(),
        topology_name: topology.name.clone(),
        image: topology.image.clone(),
        networks: topology.network_specs(),
        nodes: topology.node_specs(seed),
        detach: false,
    };
    let mut runtime = LocalRuntime::with_executable(PathBuf::from(BIN));
    runtime
        .check_support(&plan)
        .expect("the local runtime supports the bench topology");

    let sampler = Sampler::start(run_id.clone());
    let started = Instant::now();
    runtime.prepare(&plan).await.expect("prepare the run");
    let mut progress = Progress::new();
    let outcome = execute(
        &runtime,
        &plan,
        &topology,
        seed,
        Stage::AllChecks,
        &mut progress,
    )
    .await;
    let (peak_rss_kib, node_cpu) = sampler.finish();
    let teardown = runtime.teardown().await;
    let wall = started.elapsed();
    let outcome = outcome.unwrap_or_else(|e| panic!("the run of {n} nodes failed: {e}"));
    if let Ok(t) = &teardown {
        assert!(t.leftovers.is_empty(), "teardown left {:?}", t.leftovers);
    }
    let report = outcome.report;
    let _ = report.write_json(&plan.run_dir.join("report.json"));
    Row {
        nodes: n,
        formation: report.formation_secs.map(Duration::from_secs_f64),
        checks_passed: report.checks.iter().filter(|c| c.passed).count(),
        checks_total: report.checks.len(),
        failed: report
            .failed_checks()
            .map(|c| format!("{}: {}", c.name, c.measured))
            .collect(),
        wall,
        peak_rss_kib,
        node_cpu,
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let _ = writeln!(
        out,
        "`peerlab run --runtime local` formation ({profile} build, {} CPUs, no stagger; \
         built-in node settings below {LARGE} nodes, topologies/three-hundred.yaml's from {LARGE} on)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "| nodes | formation | goal | checks passed | wall time | peak RSS (all nodes) | node CPU |"
    );
    let _ = writeln!(out, "|---:|---:|---|---:|---:|---:|---:|");
    for r in rows {
        let formation = r.formation.map_or("not formed".to_string(), |f| {
            format!("{:.2} s", f.as_secs_f64())
        });
        let goal = GOALS
            .iter()
            .find(|(n, _)| *n == r.nodes)
            .map_or("-".to_string(), |(_, g)| match r.formation {
                Some(f) if f <= *g => format!("<= {} s: met", g.as_secs()),
                _ => format!("<= {} s: NOT met", g.as_secs()),
            });
        let _ = writeln!(
            out,
            "| {} | {formation} | {goal} | {}/{} | {:.1} s | {:.0} MB | {:.1} s |",
            r.nodes,
            r.checks_passed,
            r.checks_total,
            r.wall.as_secs_f64(),
            r.peak_rss_kib as f64 / 1024.0,
            r.node_cpu.as_secs_f64()
        );
    }
    for r in rows.iter().filter(|r| !r.failed.is_empty()) {
        let _ = writeln!(out, "\nN={} failed: {}", r.nodes, r.failed.join("; "));
    }
    out
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let keep = std::env::var_os("PEERLAB_BENCH_KEEP_LOGS").is_some();
    let temp = tempfile::tempdir().expect("tempdir");
    let runs_dir = if keep {
        bench_dir.join("runs")
    } else {
        temp.path().to_path_buf()
    };
    let mut rows = Vec::new();
    for n in sizes() {
        eprintln!("running a network of {n} nodes...");
        rows.push(runtime.block_on(measure(n, &runs_dir)));
    }
    if keep {
        eprintln!("run directories kept in {}", runs_dir.display());
    }
    let text = table(&rows);
    print!("{text}");
    let path = bench_dir.join("orchestrator.md");
    match std::fs::create_dir_all(&bench_dir).and_then(|()| std::fs::write(&path, &text)) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
