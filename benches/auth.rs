//! The cost of authentication (issue 11): formation time of N local nodes and broadcast
//! throughput at 10 nodes, for this build (ed25519 hello proofs and signed member records)
//! and a baseline binary without them, side by side in one run.
//!
//! ```text
//! cargo bench --bench auth -- --baseline PATH [100 1000] [--rounds 2] [--messages 300]
//!     [--large-settings topologies/thousand.yaml] [--publish]
//! ```
//!
//! Each round runs every measurement once per binary, the binaries alternating (the
//! baseline first in odd rounds, this build first in even ones), so that a machine getting
//! busier during the run does not favour one of them. Both run with their built-in
//! defaults (no flags: the baseline knows none of the new ones), except formations of
//! [`LARGE_FROM`] nodes or more, which both run with the node settings of
//! `--large-settings` (flags both binaries know).
//!
//! - Formation: a genesis and N-1 peers on loopback (port 0, ports read from each node's
//!   ports file), from the first spawn until every node has joined and lists all N members
//!   (polled on every status socket).
//! - Throughput: a formed network of 10 nodes; `--messages` broadcasts posted to one node
//!   as fast as its status socket takes them; from the first post until every node has
//!   delivered them all (its `delivered` counter). Messages per second.
//!
//! The table (median of the rounds, and every round's figure) goes to stdout,
//! `target/bench/auth.md` and, with `--publish`, into `docs/benchmarks.md` under
//! "## Authentication cost". Every node started is killed when the bench ends, also on a
//! panic (a guard) or if the bench is killed (parent-death signal).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{build_line, load_average};

mod support;

use support::processes::{
    Nodes, Registry, Settings, flag, formation_problem, positional_sizes, read_ports, spawn_node,
};

/// The build under test (release under `cargo bench`).
const BIN: &str = env!("CARGO_BIN_EXE_peerlab");
/// How long formation may take before the round is reported as not formed.
const FORMATION_LIMIT: Duration = Duration::from_secs(300);
/// How long the broadcasts may take to reach every node.
const DELIVERY_LIMIT: Duration = Duration::from_secs(120);
/// Nodes of the throughput network (the issue's figure).
const THROUGHPUT_NODES: usize = 10;
/// From this size on, formation runs with the node settings of `--large-settings` (by default
/// topologies/thousand.yaml's, as the orchestrator bench does from 200 nodes): a thousand
/// processes at the built-in 500 ms heartbeats overload two cores, and nodes that cannot
/// answer their status sockets make the figure a measure of the overload, for both binaries.
const LARGE_FROM: usize = 200;
/// The section of docs/benchmarks.md this bench owns.
const SECTION: &str = "## Authentication cost (`auth`)";

/// One measurement of one binary.
#[derive(Clone, Copy)]
enum Measure {
    /// Formation of this many nodes.
    Formation(usize),
    /// Broadcasts per second at [`THROUGHPUT_NODES`].
    Throughput,
}

fn main() {
    let sizes = positional_sizes(&[100]);
    let rounds: usize = flag("rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let messages: u64 = flag("messages")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .max(1);
    let baseline = PathBuf::from(flag("baseline").expect(
        "--baseline PATH: the binary to compare with (a build of the commit before authentication)",
    ));
    assert!(
        baseline.is_file(),
        "--baseline {} is not a file (build the baseline first)",
        baseline.display()
    );
    let binaries = [
        (format!("baseline (`{}`)", baseline.display()), baseline),
        ("this build (authenticated)".to_string(), PathBuf::from(BIN)),
    ];
    let large = Settings::chosen(
        &flag("large-settings").unwrap_or_else(|| "topologies/thousand.yaml".into()),
    );
    let small = Settings::built_in();
    let registry: Registry = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let mut measures: Vec<Measure> = sizes.iter().map(|&n| Measure::Formation(n)).collect();
    measures.push(Measure::Throughput);
    // results[measure][binary] = one figure per round (None: failed).
    let mut results = vec![vec![Vec::new(); 2]; measures.len()];
    for round in 0..rounds {
        for (m, measure) in measures.iter().enumerate() {
            let order: [usize; 2] = if round.is_multiple_of(2) {
                [0, 1]
            } else {
                [1, 0]
            };
            for b in order {
                let (label, path) = &binaries[b];
                let figure = runtime.block_on(async {
                    match *measure {
                        Measure::Formation(n) => {
                            let settings = if n >= LARGE_FROM { &large } else { &small };
                            formation(path, n, &settings.args, &registry)
                                .await
                                .map(|d| d.as_secs_f64())
                        }
                        Measure::Throughput => {
                            throughput(path, messages, &small.args, &registry).await
                        }
                    }
                });
                eprintln!(
                    "round {}: {label}: {} -> {}",
                    round + 1,
                    name(*measure),
                    figure.map_or("failed".to_string(), |v| format!("{v:.2}"))
                );
                results[m][b].push(figure);
            }
        }
    }

    let mut table = format!(
        "{}, {} round(s), binaries alternating; load average (1/5/15 min) at the end: {}\n\n\
         Node settings: below N={LARGE_FROM} and for throughput, {}; from N={LARGE_FROM}, {}.\n\n",
        build_line(),
        rounds,
        load_average(),
        small.label,
        large.label,
    );
    table
        .push_str("| measure | baseline | this build | change | rounds (baseline; this build) |\n");
    table.push_str("|---|---|---|---|---|\n");
    for (m, measure) in measures.iter().enumerate() {
        let base = median(&results[m][0]);
        let this = median(&results[m][1]);
        let unit = match measure {
            Measure::Formation(_) => "s",
            Measure::Throughput => "msg/s",
        };
        // Slower is a longer formation or a lower throughput.
        let change = match (base, this, measure) {
            (Some(b), Some(t), Measure::Formation(_)) => {
                format!("{:+.1}% time", (t / b - 1.0) * 100.0)
            }
            (Some(b), Some(t), Measure::Throughput) => {
                format!("{:+.1}% rate", (t / b - 1.0) * 100.0)
            }
            _ => "-".into(),
        };
        let show = |v: Option<f64>| v.map_or("failed".to_string(), |v| format!("{v:.2} {unit}"));
        let all = |rs: &[Option<f64>]| {
            rs.iter()
                .map(|r| r.map_or("failed".to_string(), |v| format!("{v:.2}")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {}; {} |\n",
            name(*measure),
            show(base),
            show(this),
            change,
            all(&results[m][0]),
            all(&results[m][1]),
        ));
    }
    support::publish("auth.md", &table);
    if std::env::args().any(|a| a == "--publish") {
        publish_in_docs(&table);
    }
}

fn name(measure: Measure) -> String {
    match measure {
        Measure::Formation(n) => format!("formation, N={n}"),
        Measure::Throughput => format!("broadcast throughput, N={THROUGHPUT_NODES}"),
    }
}

/// The median of the rounds that succeeded; `None` if any failed (a failure is news).
fn median(figures: &[Option<f64>]) -> Option<f64> {
    let mut ok: Vec<f64> = figures.iter().copied().collect::<Option<Vec<_>>>()?;
    if ok.is_empty() {
        return None;
    }
    ok.sort_by(f64::total_cmp);
    let mid = ok.len() / 2;
    Some(if ok.len().is_multiple_of(2) {
        (ok[mid - 1] + ok[mid]) / 2.0
    } else {
        ok[mid]
    })
}

/// Replaces the body of [`SECTION`] in docs/benchmarks.md (up to the next `## `) with the
/// text before the table (kept as written) and the new table.
fn publish_in_docs(table: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let Ok(doc) = std::fs::read_to_string(&path) else {
        eprintln!("cannot read {}", path.display());
        return;
    };
    let Some(start) = doc.find(SECTION) else {
        eprintln!("{} has no section {SECTION:?}; not updated", path.display());
        return;
    };
    let body_start = start + SECTION.len();
    let end = doc[body_start..]
        .find("\n## ")
        .map_or(doc.len(), |i| body_start + i + 1);
    let body = &doc[body_start..end];
    // The prose stays; the measured part starts at the marker.
    let marker = "<!-- auth bench table -->";
    let prose = body.split(marker).next().unwrap_or(body).trim_end();
    let new = format!(
        "{}{prose}\n\n{marker}\n{table}\n{}",
        &doc[..body_start],
        &doc[end..]
    );
    match std::fs::write(&path, new) {
        Ok(()) => eprintln!("updated {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

/// Starts a genesis and `n - 1` peers; returns them with their status addresses once all
/// have written their ports.
async fn start(
    bin: &Path,
    n: usize,
    settings: &[String],
    dir: &Path,
    registry: &Registry,
) -> Option<(Nodes, Vec<String>)> {
    let mut nodes = Nodes {
        children: Vec::new(),
        registry: registry.clone(),
    };
    nodes
        .children
        .push(spawn_node(bin, dir, 0, None, settings, registry));
    let genesis = read_ports(dir, 0, Duration::from_secs(20)).await?;
    for i in 1..n {
        nodes.children.push(spawn_node(
            bin,
            dir,
            i,
            Some(&genesis.listen),
            settings,
            registry,
        ));
    }
    let mut status = vec![genesis.status.clone()];
    for i in 1..n {
        status.push(read_ports(dir, i, Duration::from_secs(60)).await?.status);
    }
    Some((nodes, status))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("peerlab-auth-")
        .tempdir()
        .expect("a tempdir for the nodes' ports files and logs")
}

/// Seconds from the first spawn until every node has joined and lists all `n` members.
async fn formation(
    bin: &Path,
    n: usize,
    settings: &[String],
    registry: &Registry,
) -> Option<Duration> {
    let dir = tempdir();
    let started = Instant::now();
    let (nodes, status) = start(bin, n, settings, dir.path(), registry).await?;
    let http = http();
    loop {
        let problem = formation_problem(&http, &status, n).await;
        if problem.is_none() {
            let took = started.elapsed();
            drop(nodes);
            return Some(took);
        }
        if started.elapsed() > FORMATION_LIMIT {
            eprintln!("not formed after {FORMATION_LIMIT:?}: {problem:?}");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Broadcasts per second through a formed network of [`THROUGHPUT_NODES`].
async fn throughput(
    bin: &Path,
    messages: u64,
    settings: &[String],
    registry: &Registry,
) -> Option<f64> {
    let dir = tempdir();
    let started = Instant::now();
    let (nodes, status) = start(bin, THROUGHPUT_NODES, settings, dir.path(), registry).await?;
    let http = http();
    while formation_problem(&http, &status, THROUGHPUT_NODES)
        .await
        .is_some()
    {
        if started.elapsed() > FORMATION_LIMIT {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = delivered(&http, &status).await?;
    let t0 = Instant::now();
    let origin = format!("http://{}/broadcast", status[0]);
    for i in 0..messages {
        let body = serde_json::json!({"message": format!("auth bench message {i}")});
        let ok = http
            .post(&origin)
            .json(&body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            eprintln!("broadcast {i} refused");
            return None;
        }
    }
    loop {
        let now = delivered(&http, &status).await?;
        if now.iter().zip(&before).all(|(a, b)| a - b >= messages) {
            let rate = messages as f64 / t0.elapsed().as_secs_f64();
            drop(nodes);
            return Some(rate);
        }
        if t0.elapsed() > DELIVERY_LIMIT {
            eprintln!("broadcasts not delivered everywhere after {DELIVERY_LIMIT:?}");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every node's `delivered` counter.
async fn delivered(http: &reqwest::Client, status: &[String]) -> Option<Vec<u64>> {
    let asks = status.iter().map(|addr| async move {
        let url = format!("http://{addr}/status?members=false");
        let v: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        v.get("counters")?.get("delivered")?.as_u64()
    });
    futures::future::join_all(asks).await.into_iter().collect()
}
