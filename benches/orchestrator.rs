//! Orchestrator benchmark: how long `peerlab run` takes to form networks of N local nodes,
//! driving the library exactly as `peerlab run --runtime local` does (a [`Lab`]: plan,
//! start, check, shutdown) with nodes started from the release `peerlab` binary.
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

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use peerlab::lab::{Lab, RuntimeKind};
use peerlab::topology;
use support::lab::{BIN, run_pids};
use support::{USER_HZ, cpu_ticks, rss_kib};

/// Goals on a 2-core machine, by network size.
const GOALS: [(usize, Duration); 2] = [
    (100, Duration::from_secs(3)),
    (1000, Duration::from_secs(30)),
];
/// How often node memory and CPU are sampled. Each sample reads three /proc files per
/// process (a thousand nodes: three thousand reads), so sampling more often would take
/// from the nodes a noticeable share of the CPU whose use it measures.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

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

/// Node settings of large networks, as in topologies/thousand.yaml: a thousand processes on
/// two cores pay for every wake-up and every copy of a flood, so heartbeats go every 2 s
/// and each node keeps 3 links rather than 4 (with the built-in 500ms/1500ms/3s timeouts a
/// CPU-starved host misses heartbeats at a few hundred nodes).
const LARGE_SETTINGS: &str = "defaults:\n  degree: 3\n  max_connections: 256\n  \
                              heartbeat_interval: 2s\n  heartbeat_timeout: 6s\n  \
                              suspect_timeout: 8s\n";
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
            let mut rounds = 0u32;
            let mut cpu: HashMap<u32, u64> = HashMap::new();
            while !flag.load(Ordering::Relaxed) {
                let pids = run_pids(&run_id);
                peak = peak.max(pids.iter().filter_map(|p| rss_kib(*p)).sum());
                for pid in pids {
                    if let Some(t) = cpu_ticks(pid) {
                        cpu.insert(pid, t);
                    }
                }
                // Often at first, so that a run of under a second is seen at all.
                rounds += 1;
                std::thread::sleep(SAMPLE_EVERY.min(Duration::from_millis(100) * rounds));
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

async fn measure(n: usize, runs_dir: &Path) -> Row {
    assert!(n >= 2, "a network needs at least 2 nodes");
    let topology = topology::parse_str(&topology_yaml(n), &format!("bench-{n}.yaml"))
        .unwrap_or_else(|e| panic!("the bench topology is invalid:\n{e}"));
    let mut lab = Lab::from_topology(topology)
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs_dir)
        .progress(true)
        .plan()
        .await
        .unwrap_or_else(|e| panic!("the local runtime refused the bench topology: {e}"));

    let sampler = Sampler::start(lab.run_id().to_string());
    let started = Instant::now();
    let outcome = async {
        lab.start_nodes().await?;
        lab.check().await
    }
    .await;
    let (peak_rss_kib, node_cpu) = sampler.finish();
    let run_dir = lab.run_dir().to_path_buf();
    let teardown = lab.shutdown().await;
    let wall = started.elapsed();
    let report = outcome.unwrap_or_else(|e| panic!("the run of {n} nodes failed: {e}"));
    if let Ok(t) = &teardown {
        assert!(t.leftovers.is_empty(), "teardown left {:?}", t.leftovers);
    }
    let _ = report.write_json(&run_dir.join("report.json"));
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
    let _ = writeln!(
        out,
        "`peerlab run --runtime local` formation ({}, no stagger; built-in node settings \
         below {LARGE} nodes, topologies/thousand.yaml's from {LARGE} on)\n",
        support::build_line()
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
    let runs = support::RunsDir::new();
    let mut rows = Vec::new();
    for n in support::sizes(&[10, 100, 300]) {
        eprintln!("running a network of {n} nodes...");
        rows.push(runtime.block_on(measure(n, runs.path())));
    }
    runs.announce();
    support::publish("orchestrator.md", &table(&rows));
}
