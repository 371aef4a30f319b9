//! Formation benchmark: how long N local nodes take to form a network, and what an idle
//! node costs in memory once it has.
//!
//! Run: `cargo bench --bench formation` (N = 10 and 100), or choose sizes with
//! `cargo bench --bench formation -- 10 50 200` or `PEERLAB_BENCH_NODES=10,200`.
//! Prints a markdown table and writes it to `target/bench/formation.md`.
//! `PEERLAB_BENCH_KEEP_LOGS=1` keeps every node's log under `target/bench/runs/`.
//!
//! The nodes are started as the local runtime starts them (one genesis, then every peer as
//! fast as it takes them), with built-in node settings. Formation time runs from starting the
//! genesis to every node being joined, knowing all N members, and the overlay being connected
//! with symmetric links. It includes process start-up and the status polling that observes
//! it, as an orchestrator would see it.

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use peerlab::orchestrator::{NodeObservation, Overlay};
use support::net::{LocalNet, overlay_problem, run_pids};

/// Idle memory goal for one node in a 100-node network.
const GOAL_RSS_KIB: u64 = 8 * 1024;
/// Quiet time after formation before memory is read, so join traffic has drained.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a network may take to form.
const FORM_WITHIN: Duration = Duration::from_secs(180);

struct Row {
    nodes: usize,
    formation: Option<Duration>,
    rss_avg_kib: u64,
    rss_max_kib: u64,
    degree_min: usize,
    degree_avg: f64,
}

/// Formed: the orchestrator's checks (connected, degree >= 1, full membership) and every
/// link seen by both ends.
fn formation_problem(observations: &[NodeObservation]) -> Option<String> {
    overlay_problem(observations, 1).or_else(|| {
        let overlay = Overlay::build(observations);
        let one_way = overlay.edges.iter().filter(|e| !e.is_symmetric()).count();
        (one_way > 0).then(|| format!("{one_way} link(s) seen by one end only"))
    })
}

async fn measure(n: usize, runs_dir: &Path) -> Row {
    let yaml = format!(
        "name: formation-{n}\nseed: {n}\ngenesis:\n  count: 1\n\
         groups:\n  - name: peers\n    count: {}\n",
        n - 1
    );
    let mut net =
        LocalNet::prepare(&yaml, runs_dir, &support::run_id(&format!("formation-{n}"))).await;
    let started = Instant::now();
    let mut row = Row {
        nodes: n,
        formation: None,
        rss_avg_kib: 0,
        rss_max_kib: 0,
        degree_min: 0,
        degree_avg: 0.0,
    };
    match net.start_all().await {
        Ok(()) => {
            let names = net.names();
            let waited = net
                .wait_until(&names, started, FORM_WITHIN, |obs, _| {
                    formation_problem(obs)
                })
                .await;
            row.formation = waited.after;
            if let Some(p) = waited.problem {
                eprintln!("{n} nodes did not form within {FORM_WITHIN:?}: {p}");
            }
            let degrees: Vec<usize> = waited
                .observations
                .iter()
                .filter_map(|o| o.status.as_ref().map(|s| s.neighbours.len()))
                .collect();
            row.degree_min = degrees.iter().copied().min().unwrap_or(0);
            row.degree_avg = degrees.iter().sum::<usize>() as f64 / degrees.len().max(1) as f64;
            // Not synchronisation: a measurement of the idle state, so it waits on purpose.
            tokio::time::sleep(SETTLE).await;
            let rss: Vec<u64> = run_pids(&net.plan.run_id)
                .into_iter()
                .filter_map(support::rss_kib)
                .collect();
            row.rss_avg_kib = rss.iter().sum::<u64>() / rss.len().max(1) as u64;
            row.rss_max_kib = rss.iter().copied().max().unwrap_or(0);
        }
        Err(e) => eprintln!("starting {n} nodes failed: {e}"),
    }
    if let Err(e) = net.teardown().await {
        panic!("teardown of the {n}-node network left something: {e}");
    }
    row
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Formation of local `peerlab node` networks ({}, built-in node settings)\n",
        support::build_line()
    );
    let _ = writeln!(
        out,
        "| nodes | formation | RSS avg (idle) | RSS max (idle) | degree min | degree avg |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} MB | {:.1} MB | {} | {:.1} |",
            r.nodes,
            r.formation.map_or("not formed".to_string(), |f| format!(
                "{:.2} s",
                f.as_secs_f64()
            )),
            r.rss_avg_kib as f64 / 1024.0,
            r.rss_max_kib as f64 / 1024.0,
            r.degree_min,
            r.degree_avg
        );
    }
    if let Some(r) = rows.iter().find(|r| r.nodes == 100) {
        let verdict = if r.formation.is_some() && r.rss_max_kib <= GOAL_RSS_KIB {
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
    let runs = support::RunsDir::new();
    let mut rows = Vec::new();
    for n in support::sizes(&[10, 100]) {
        eprintln!("forming a network of {n} nodes...");
        rows.push(runtime.block_on(measure(n, runs.path())));
    }
    runs.announce();
    support::publish("formation.md", &table(&rows));
}
