//! JUnit XML, so CI systems list each check of a run as a test case.

use std::path::Path;

use anyhow::Context;
use chrono::DateTime;
use quick_junit::{
    NonSuccessKind, Property, Report as JunitReport, TestCase, TestCaseStatus, TestSuite,
};

use super::report::{Report, write_text};

/// One `<testsuite>` for the run, one `<testcase>` per check; failed checks carry a
/// `<failure>` whose message says why, naming nodes.
pub fn junit(report: &Report) -> anyhow::Result<String> {
    let mut suite = TestSuite::new(format!("peerlab {} ({})", report.topology, report.run_id));
    suite.add_properties([
        Property::new("run_id", report.run_id.as_str()),
        Property::new("topology", report.topology.as_str()),
        Property::new("runtime", report.runtime.as_str()),
        Property::new("seed", report.seed.to_string()),
    ]);
    let started = DateTime::from_timestamp_millis((report.started_at_unix * 1000.0) as i64);
    if let Some(ts) = started {
        suite.set_timestamp(ts.fixed_offset());
    }
    for check in &report.checks {
        let detail = format!("expected: {}\nmeasured: {}", check.expected, check.measured);
        let status = if check.passed {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status
                .set_message(check.message.as_deref().unwrap_or("check failed"))
                .set_type("check failed")
                .set_description(detail.as_str());
            status
        };
        let mut case = TestCase::new(check.name.as_str(), status);
        case.set_classname(format!("peerlab.{}", report.topology));
        if check.passed {
            case.set_system_out(detail);
        }
        suite.add_test_case(case);
    }
    let mut out = JunitReport::new("peerlab");
    out.add_test_suite(suite);
    out.to_string().context("serialising the JUnit report")
}

/// Writes [`junit`] to `path`, creating its directory.
pub fn write_junit(report: &Report, path: &Path) -> anyhow::Result<()> {
    write_text(path, &junit(report)?)
}
