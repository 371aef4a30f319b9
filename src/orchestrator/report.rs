//! The run report: one JSON document with a top-level `passed`, so scripts need read one field.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

use super::broadcast::BroadcastStats;
use super::graph::{Overlay, OverlaySummary};
use super::model::{CheckResult, NodeObservation};
use super::text::short_id;
use crate::topology::ResolvedStep;

/// Facts about the run that the checks do not compute.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// Id of the run, so the report can be matched to its nodes and logs.
    pub run_id: String,
    /// Name of the topology that was run.
    pub topology: String,
    /// Which runtime ran the nodes (`local`, `docker`).
    pub runtime: String,
    /// Seed of the run, to replay it.
    pub seed: u64,
    /// When the first node was started.
    pub started_at: SystemTime,
    /// Time until every node was ready (see [`super::formation_time`]).
    pub formation_time: Option<Duration>,
}

/// What one node looked like at check time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// Node name from the plan.
    pub name: String,
    /// The node's protocol id, when its status socket answered.
    pub id: Option<String>,
    /// Address the node advertises to peers, when known.
    pub addr: Option<String>,
    /// Topology group the node belongs to.
    pub group: String,
    /// Whether it is a genesis node.
    pub genesis: bool,
    /// Whether its `/ready` answered 200.
    pub ready: bool,
    /// How many neighbours it had.
    pub degree: usize,
    /// Neighbour names; a neighbour that is not an observed node shows as its short id.
    pub neighbours: Vec<String>,
    /// How many members it knew.
    pub member_count: usize,
    /// Seconds from the run's start until it was ready, if it ever was.
    pub ready_after_secs: Option<f64>,
    /// Where its status socket was polled, to reproduce what the check saw.
    pub status_url: String,
    /// Why the status socket did not answer.
    pub error: Option<String>,
}

/// The outcome of a run: every check, every node and the overlay, written as JSON for tools and CI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every check passed.
    pub passed: bool,
    /// Id of the run.
    pub run_id: String,
    /// Name of the topology that was run.
    pub topology: String,
    /// Which runtime ran the nodes.
    pub runtime: String,
    /// Seed of the run, to replay it.
    pub seed: u64,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Start time as Unix seconds, for tools that do arithmetic on it.
    pub started_at_unix: f64,
    /// Seconds until every node was ready; `null` when some node never was.
    pub formation_secs: Option<f64>,
    /// Every check, passed or not, in the order they ran.
    pub checks: Vec<CheckResult>,
    /// Every node as it looked at check time.
    pub nodes: Vec<NodeView>,
    /// Broadcast delivery statistics, when a broadcast check ran.
    pub broadcast: Option<BroadcastStats>,
    /// Shape of the overlay (components, degrees).
    pub overlay: OverlaySummary,
    /// The fault timeline as resolved for this run's seed; empty without a scenario.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scenario: Vec<ResolvedStep>,
}

impl Report {
    /// Builds the report from what was observed; `passed` follows the checks.
    pub fn new(
        meta: RunMeta,
        observations: &[NodeObservation],
        overlay: &Overlay,
        checks: Vec<CheckResult>,
        broadcast: Option<BroadcastStats>,
    ) -> Report {
        let name_of: HashMap<&str, &str> = observations
            .iter()
            .filter_map(|o| o.status.as_ref().map(|s| (s.id.as_str(), o.name.as_str())))
            .collect();
        let nodes = observations
            .iter()
            .zip(&overlay.nodes)
            .map(|(o, v)| NodeView {
                name: o.name.clone(),
                id: v.id.clone(),
                addr: v.addr.clone(),
                group: v.group.clone(),
                genesis: v.genesis,
                ready: v.ready,
                degree: v.degree,
                neighbours: o.status.as_ref().map_or_else(Vec::new, |s| {
                    s.neighbours
                        .iter()
                        .map(|p| {
                            name_of
                                .get(p.id.as_str())
                                .map_or_else(|| short_id(&p.id).to_string(), |n| n.to_string())
                        })
                        .collect()
                }),
                member_count: v.member_count,
                ready_after_secs: o.ready_after.map(|d| d.as_secs_f64()),
                status_url: o.status_url.clone(),
                error: o.error.clone(),
            })
            .collect();
        let started_at_unix = meta
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut report = Report {
            passed: false,
            run_id: meta.run_id,
            topology: meta.topology,
            runtime: meta.runtime,
            seed: meta.seed,
            started_at: humantime::format_rfc3339_millis(meta.started_at).to_string(),
            started_at_unix,
            formation_secs: meta.formation_time.map(|d| d.as_secs_f64()),
            checks: Vec::new(),
            nodes,
            broadcast,
            overlay: overlay.summary(),
            scenario: Vec::new(),
        };
        report.add_checks(checks);
        report
    }

    /// Adds checks computed later (fault scenarios) and keeps `passed` true to them.
    pub fn add_checks(&mut self, checks: impl IntoIterator<Item = CheckResult>) {
        self.checks.extend(checks);
        self.passed = self.checks.iter().all(|c| c.passed);
    }

    /// The checks that failed, for the summary and the exit code.
    pub fn failed_checks(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The report as pretty JSON, the format `--report` writes.
    pub fn to_json(&self) -> anyhow::Result<String> {
        serde_json::to_string_pretty(self).context("serialising the report")
    }

    /// Writes the pretty JSON report, creating parent directories.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        write_text(path, &self.to_json()?)
    }
}

/// Writes a report file, creating its directory; errors name the path.
pub fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating directory {} for {}",
                dir.display(),
                path.display()
            )
        })?;
    }
    std::fs::write(path, text)
        .with_context(|| format!("writing {}: check the path is writable", path.display()))
}
