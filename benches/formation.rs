//! Formation benchmark: how long N local nodes take to form a network, and what an idle
//! node costs in memory once it has.
//!
//! Run: `cargo bench --bench formation` (N = 10 and 100), or choose sizes with
//! `cargo bench --bench formation -- 10 50 200` or `PEERLAB_BENCH_NODES=10,200`.
//! Prints a markdown table and writes it to `target/bench/formation.md`.
//! `PEERLAB_BENCH_KEEP_LOGS=1` keeps every node's log under `target/bench/runs/`.
//!
//! The network is a [`Lab`] on the local runtime (one genesis, then every peer as fast as it
//! takes them), with built-in node settings. Formation time is the lab's own: from the start
//! of the run to the first status poll round in which the topology's formation checks hold
//! (every node ready, knowing all N members, the overlay connected, degree >= 1) and every
//! link is seen by both ends. It includes process start-up and the status polling that
//! observes it, as `peerlab run` sees it.

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use peerlab::lab::{FormationExpectation, Lab, NodeObservation};
use peerlab::orchestrator::Overlay;
use support::lab::{failing_checks, local_lab, run_pids, shutdown};

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

/// One genesis and N-1 peers, built-in node settings; the formation check is the
/// topology's: every node ready, connected, degree >= 1, full membership.
fn topology_yaml(n: usize) -> String {
    format!(
        "name: formation-{n}\nseed: {n}\ngenesis:\n  count: 1\n\
         groups:\n  - name: peers\n    count: {}\n\
         checks:\n  formation:\n    within: {}s\n    min_degree: 1\n",
        n - 1,
        FORM_WITHIN.as_secs()
    )
}

/// Links seen by one end only; `None` when every link is seen by both.
fn one_way_links(observations: &[NodeObservation]) -> Option<String> {
    let overlay = Overlay::build(observations);
    let one_way = overlay.edges.iter().filter(|e| !e.is_symmetric()).count();
    (one_way > 0).then(|| format!("{one_way} link(s) seen by one end only"))
}

/// Formed: the topology's formation checks hold ([`Lab::wait_formed`]) and every link is
/// seen by both ends. Returns the time from the start of the run to the first poll round
/// that saw both, and that round's observations.
async fn wait_formed(lab: &Lab) -> (Option<Duration>, Vec<NodeObservation>) {
    let formation = match lab.wait_formed(FORM_WITHIN).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("waiting for formation failed: {e}");
            return (None, Vec::new());
        }
    };
    let Some(formed_at) = formation.formed_at else {
        let why: Vec<String> = failing_checks(
            &formation.observations,
            &lab.topology().checks.formation.expectation(),
        )
        .into_iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect();
        eprintln!(
            "{} nodes did not form within {FORM_WITHIN:?}: {}",
            formation.observations.len(),
            why.join("; ")
        );
        return (None, formation.observations);
    };
    if one_way_links(&formation.observations).is_none() {
        return (Some(formed_at), formation.observations);
    }
    // Formed with a link still half-open: poll on until the checks and symmetry both hold.
    let expectation: FormationExpectation = lab.topology().checks.formation.expectation();
    let run_start = lab.observer().started_at();
    let mut held_at = None;
    let waited = lab
        .wait_until(FORM_WITHIN.saturating_sub(formed_at), |obs| {
            let problem = failing_checks(obs, &expectation)
                .into_iter()
                .next()
                .map(|(name, why)| format!("{name}: {why}"))
                .or_else(|| one_way_links(obs));
            if problem.is_none() {
                held_at = Some(run_start.elapsed());
            }
            problem
        })
        .await;
    match waited {
        Ok(w) => {
            if let Some(p) = &w.problem {
                eprintln!("the network did not form within {FORM_WITHIN:?}: {p}");
            }
            (held_at, w.observations)
        }
        Err(e) => {
            eprintln!("waiting for symmetric links failed: {e}");
            (None, formation.observations)
        }
    }
}

async fn measure(n: usize, runs_dir: &Path) -> Row {
    let mut row = Row {
        nodes: n,
        formation: None,
        rss_avg_kib: 0,
        rss_max_kib: 0,
        degree_min: 0,
        degree_avg: 0.0,
    };
    let lab = match local_lab(&topology_yaml(n), runs_dir).start().await {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("starting {n} nodes failed: {e}");
            return row;
        }
    };
    let (formation, observations) = wait_formed(&lab).await;
    row.formation = formation;
    let degrees: Vec<usize> = observations
        .iter()
        .filter_map(|o| o.status.as_ref().map(|s| s.neighbours.len()))
        .collect();
    row.degree_min = degrees.iter().copied().min().unwrap_or(0);
    row.degree_avg = degrees.iter().sum::<usize>() as f64 / degrees.len().max(1) as f64;
    // Not synchronisation: a measurement of the idle state, so it waits on purpose.
    tokio::time::sleep(SETTLE).await;
    let rss: Vec<u64> = run_pids(lab.run_id())
        .into_iter()
        .filter_map(support::rss_kib)
        .collect();
    row.rss_avg_kib = rss.iter().sum::<u64>() / rss.len().max(1) as u64;
    row.rss_max_kib = rss.iter().copied().max().unwrap_or(0);
    if let Err(e) = shutdown(lab).await {
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
