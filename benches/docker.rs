//! Docker benchmark: how long N containers take to form a network with
//! `peerlab run --runtime docker`, side by side with `docker-compose up --scale` of the same
//! image (the top-level docker-compose.yml) until every container is healthy.
//!
//! Run: `cargo bench --bench docker` (N = 10, 50, 100), or choose sizes with
//! `cargo bench --bench docker -- 10 50` or `PEERLAB_BENCH_NODES=10,50`. Needs a Docker
//! engine and `docker-compose`. Prints a markdown table and writes it to
//! `target/bench/docker.md`.
//!
//! What is measured, so the two columns mean comparable things:
//! - peerlab: `formed` is the run's own formation time (first container start until every
//!   node is ready, knows all N members and the overlay is connected), `total` is the whole
//!   command: image check, networks, creating and starting N containers, checks, and
//!   teardown.
//! - compose: `healthy` runs from `up -d` until `docker inspect` shows every container
//!   healthy (healthy = joined: a weaker condition than peerlab's full membership),
//!   including container creation; `down` is `down -v`.
//!
//! Goals: 100 containers formed and checked in at most 30 s; peerlab no slower than compose.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::docker::*;

/// Time allowed for one size to form, in either tool, before the benchmark gives up.
const DEADLINE: Duration = Duration::from_secs(300);
/// Goal for 100 containers, formed and checked.
const GOAL_100: Duration = Duration::from_secs(30);

struct Row {
    nodes: usize,
    peerlab_formed: Option<f64>,
    peerlab_total: f64,
    compose_healthy: Option<f64>,
    compose_down: f64,
}

/// One genesis and N-1 peers on the run's default network, all starting at once, as the
/// compose file starts them.
fn topology(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("bench-{n}.yaml"));
    let text = format!(
        "name: bench-{n}\nseed: {n}\ngenesis:\n  count: 1\ngroups:\n  - name: peers\n    count: {}\n\
         checks:\n  formation:\n    within: {}s\n    min_degree: 1\n",
        n - 1,
        DEADLINE.as_secs()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn bench_peerlab(dir: &Path, n: usize) -> (Option<f64>, f64) {
    let file = topology(dir, n);
    let report = dir.join(format!("report-{n}.json"));
    let runs_dir = dir.join("runs");
    let t0 = Instant::now();
    let out = output(
        peerlab()
            .args(["run", "--runtime", "docker"])
            .arg(&file)
            .arg("--runs-dir")
            .arg(&runs_dir)
            .arg("--report")
            .arg(&report),
    );
    let total = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(run_id) = announced_run_id(&stderr) {
        // Removes whatever a failed teardown left, so the next size starts clean.
        drop(RunGuard {
            run_id,
            runs_dir: runs_dir.clone(),
        });
    }
    if !out.status.success() {
        eprintln!(
            "peerlab run of {n} nodes failed ({}):\n{stderr}",
            out.status
        );
        return (None, total);
    }
    let formed = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|r| r["formation_secs"].as_f64());
    (formed, total)
}

/// Health of every container of the project, by `docker inspect`.
fn all_healthy(project: &ComposeProject, n: usize) -> bool {
    let ids = labelled(
        "container",
        &format!("com.docker.compose.project={}", project.name),
    );
    if ids.len() < n {
        return false;
    }
    let out = output(
        docker()
            .args(["inspect", "--format", "{{.State.Health.Status}}"])
            .args(&ids),
    );
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .all(|l| l.trim() == "healthy")
}

fn bench_compose(n: usize) -> (Option<f64>, f64) {
    let project = ComposeProject::new("plbench", &Path::new(ROOT).join("docker-compose.yml"));
    let t0 = Instant::now();
    let up = output(project.command().args([
        "up",
        "-d",
        "--no-build",
        "--scale",
        &format!("peer={}", n - 1),
    ]));
    let mut healthy = None;
    if up.status.success() {
        while t0.elapsed() < DEADLINE {
            if all_healthy(&project, n) {
                healthy = Some(t0.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(POLL);
        }
    } else {
        eprintln!(
            "docker-compose up of {n} containers failed:\n{}",
            String::from_utf8_lossy(&up.stderr)
        );
    }
    let t1 = Instant::now();
    project.down();
    (healthy, t1.elapsed().as_secs_f64())
}

fn secs(v: Option<f64>) -> String {
    v.map_or("failed".to_string(), |s| format!("{s:.1}"))
}

fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "Formation of N containers ({}, built-in node settings)\n\n",
        support::build_line()
    );
    out.push_str(
        "| containers | peerlab formed (s) | peerlab run total (s) | compose healthy (s) | compose down (s) |\n\
         |---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {:.1} |",
            r.nodes,
            secs(r.peerlab_formed),
            r.peerlab_total,
            secs(r.compose_healthy),
            r.compose_down
        );
    }
    out.push_str(
        "\nformed: first container start to every node ready, knowing all members, overlay \
         connected (the run's report). total: the whole `peerlab run`, teardown included. \
         healthy: `docker-compose up -d` until every container's healthcheck (joined) passes.\n",
    );
    if let Some(r) = rows.iter().find(|r| r.nodes == 100) {
        let ok = r
            .peerlab_formed
            .is_some_and(|f| f <= GOAL_100.as_secs_f64());
        let _ = writeln!(
            out,
            "\nGoal: 100 containers formed and checked in <= {} s: {}.",
            GOAL_100.as_secs(),
            if ok { "met" } else { "NOT met" }
        );
    }
    for r in rows {
        if let (Some(p), Some(c)) = (r.peerlab_formed, r.compose_healthy) {
            let verdict = if p <= c {
                "no slower than"
            } else {
                "SLOWER than"
            };
            let _ = writeln!(
                out,
                "N={}: peerlab ({p:.1} s) is {verdict} compose ({c:.1} s).",
                r.nodes
            );
        }
    }
    out
}

fn main() {
    require_engine();
    ensure_image();
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for n in support::sizes(&[10, 50, 100]) {
        eprintln!("{n} containers: peerlab run --runtime docker ...");
        let (peerlab_formed, peerlab_total) = bench_peerlab(dir.path(), n);
        eprintln!(
            "{n} containers: docker-compose up --scale peer={} ...",
            n - 1
        );
        let (compose_healthy, compose_down) = bench_compose(n);
        rows.push(Row {
            nodes: n,
            peerlab_formed,
            peerlab_total,
            compose_healthy,
            compose_down,
        });
    }
    support::publish("docker.md", &table(&rows));
}
