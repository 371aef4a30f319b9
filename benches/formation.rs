//! Formation benchmark: how long N local nodes take to form a network, and what an idle
//! node costs in memory once it has.
//!
//! Run: `cargo bench --bench formation` (N = 10 and 100), or choose sizes with
//! `cargo bench --bench formation -- 10 50 200` or `PEERLAB_BENCH_NODES=10,200`.
//! Prints a markdown table and writes it to `target/bench/formation.md`.
//! `PEERLAB_BENCH_KEEP_LOGS=1` keeps every node's log and prints where.
//!
//! Formation time runs from spawning the genesis to every node being joined, knowing all
//! N members, and the overlay being connected with symmetric links. It includes process
//! start-up and the status polling that observes it, as an orchestrator would see it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Cluster, Spec, Starting, spawn};

/// Idle memory goal for one node in a 100-node network.
const GOAL_RSS_KIB: u64 = 8 * 1024;
/// Quiet time after formation before memory is read, so join traffic has drained.
const SETTLE: Duration = Duration::from_secs(3);

struct Row {
    nodes: usize,
    formation: Duration,
    rss_avg_kib: u64,
    rss_max_kib: u64,
    degree_min: usize,
    degree_avg: f64,
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
    vec![10, 100]
}

async fn measure(n: usize) -> Row {
    assert!(n >= 2, "a network needs at least 2 nodes");
    let mut cluster = Cluster::new();
    let started = Instant::now();
    let genesis = cluster.start(Spec::new("g0")).await;
    let genesis_addr = cluster.nodes[genesis].addr();
    let starting: Vec<Starting> = (1..n)
        .map(|i| {
            spawn(
                cluster.dir.path(),
                Spec::new(&format!("p{i:03}")).genesis(&genesis_addr),
            )
        })
        .collect();
    for s in starting {
        let node = s.ready(Duration::from_secs(60)).await;
        cluster.nodes.push(node);
    }
    let statuses = cluster.wait_formed(1, Duration::from_secs(180)).await;
    let formation = started.elapsed();

    // Not synchronisation: a measurement of the idle state, so it waits on purpose.
    tokio::time::sleep(SETTLE).await;
    let rss: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| node.rss_kib().unwrap_or(0))
        .collect();
    let degrees: Vec<usize> = statuses.iter().map(|s| s.neighbours.len()).collect();
    if std::env::var_os("PEERLAB_BENCH_KEEP_LOGS").is_some() {
        eprintln!("node logs kept in {}", cluster.keep_logs().display());
    }
    Row {
        nodes: n,
        formation,
        rss_avg_kib: rss.iter().sum::<u64>() / rss.len() as u64,
        rss_max_kib: rss.iter().copied().max().unwrap_or(0),
        degree_min: degrees.iter().copied().min().unwrap_or(0),
        degree_avg: degrees.iter().sum::<usize>() as f64 / degrees.len() as f64,
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
        "Formation of local `peerlab node` networks ({profile} build, {} CPUs, default node flags)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "| nodes | formation | RSS avg (idle) | RSS max (idle) | degree min | degree avg |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} s | {:.1} MB | {:.1} MB | {} | {:.1} |",
            r.nodes,
            r.formation.as_secs_f64(),
            r.rss_avg_kib as f64 / 1024.0,
            r.rss_max_kib as f64 / 1024.0,
            r.degree_min,
            r.degree_avg
        );
    }
    if let Some(r) = rows.iter().find(|r| r.nodes == 100) {
        let verdict = if r.rss_max_kib <= GOAL_RSS_KIB {
            "met"
        } else {
            "NOT met"
        };
        let _ = writeln!(
            out,
            "\nGoal: an idle node at N=100 uses <= 8 MB RSS: {verdict} (max {:.1} MB).",
            r.rss_max_kib as f64 / 1024.0
        );
    }
    out
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rows = Vec::new();
    for n in sizes() {
        eprintln!("forming a network of {n} nodes...");
        rows.push(runtime.block_on(measure(n)));
    }
    let text = table(&rows);
    print!("{text}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let path = dir.join("formation.md");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &text)) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
