//! The result of [`super::Lab::check`]: the report and the overlay, with every writer.

use std::ops::Deref;
use std::path::Path;

use crate::orchestrator::report::write_text;
use crate::orchestrator::{
    CheckResult, Overlay, RenderOptions, Report, junit, summary_text, to_dot_with, to_svg_with,
};

use super::LabError;

/// A run's [`Report`] (checks, per-node views; it derefs to it) and the [`Overlay`] the
/// nodes formed, with the writers of `peerlab run --report/--junit/--graph`.
#[derive(Debug, Clone)]
pub struct LabReport {
    /// The checks and per-node views, as `report.json` holds them.
    pub report: Report,
    /// Who is linked to whom, for the graph writers.
    pub overlay: Overlay,
    /// Title and degree threshold of the drawings.
    render: RenderOptions,
}

impl LabReport {
    pub(crate) fn new(report: Report, overlay: Overlay, min_degree: Option<usize>) -> Self {
        let render = RenderOptions {
            title: Some(format!("{} {}", report.topology, report.run_id)),
            min_degree,
        };
        LabReport {
            report,
            overlay,
            render,
        }
    }

    /// Every check passed.
    pub fn passed(&self) -> bool {
        self.report.passed
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.report.failed_checks().collect()
    }

    /// The human summary `peerlab run` prints: one line per check, and why any failed.
    pub fn summary(&self) -> String {
        summary_text(&self.report)
    }

    /// The report as pretty JSON (top-level `passed`, checks, per-node views).
    pub fn to_json(&self) -> Result<String, LabError> {
        self.report.to_json().map_err(LabError::Output)
    }

    /// Writes the JSON report, creating parent directories.
    pub fn write_json(&self, path: &Path) -> Result<(), LabError> {
        self.report.write_json(path).map_err(LabError::Output)
    }

    /// The checks as JUnit XML, one test case per check.
    pub fn junit(&self) -> Result<String, LabError> {
        junit(&self.report).map_err(LabError::Output)
    }

    /// Writes the JUnit XML, creating parent directories.
    pub fn write_junit(&self, path: &Path) -> Result<(), LabError> {
        crate::orchestrator::write_junit(&self.report, path).map_err(LabError::Output)
    }

    /// The overlay as Graphviz DOT.
    pub fn dot(&self) -> String {
        to_dot_with(&self.overlay, &self.render)
    }

    /// The overlay drawn as SVG (no Graphviz needed).
    pub fn svg(&self) -> String {
        to_svg_with(&self.overlay, &self.render)
    }

    /// Writes the overlay as SVG or DOT, by the file's extension (`.svg`, `.dot`, `.gv`).
    pub fn write_graph(&self, path: &Path) -> Result<(), LabError> {
        let text = match graph_format(path) {
            Some(GraphFormat::Dot) => self.dot(),
            Some(GraphFormat::Svg) => self.svg(),
            None => {
                return Err(LabError::State(format!(
                    "{} must end in .svg or .dot",
                    path.display()
                )));
            }
        };
        write_text(path, &text).map_err(LabError::Output)
    }
}

impl Deref for LabReport {
    type Target = Report;
    fn deref(&self) -> &Report {
        &self.report
    }
}

/// The drawings [`LabReport::write_graph`] can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz DOT (`.dot`, `.gv`).
    Dot,
    /// SVG (`.svg`).
    Svg,
}

/// The drawing a graph file's extension asks for, if any.
pub fn graph_format(path: &Path) -> Option<GraphFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => Some(GraphFormat::Svg),
        Some("dot") | Some("gv") => Some(GraphFormat::Dot),
        _ => None,
    }
}
