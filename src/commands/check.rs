//! `peerlab check`: flags to a [`NetworkCheck`], the report printed and written, the exit
//! code. The work is the lab's ([`crate::lab::NetworkCheck`]).

use crate::cli::CheckArgs;
use crate::exit;
use crate::lab::{LabReport, NetworkCheck, NodeSource, graph_format};

use super::{interrupted, load_topology};

/// Exit code after Ctrl-C / SIGTERM, as `run` gives.
const INTERRUPTED: u8 = super::INTERRUPTED;

pub(super) async fn check(args: CheckArgs) -> u8 {
    if let Some(graph) = &args.graph
        && graph_format(graph).is_none()
    {
        eprintln!(
            "error: --graph {} must end in .svg or .dot",
            graph.display()
        );
        return exit::BAD_INPUT;
    }
    let source = if let Some(project) = &args.compose_project {
        NodeSource::ComposeProject {
            project: project.clone(),
            status_port: args.status_port,
        }
    } else if !args.dns.is_empty() {
        NodeSource::Dns {
            names: args.dns.clone(),
            status_port: args.status_port,
        }
    } else {
        NodeSource::Endpoints(args.endpoint.clone())
    };
    let mut check = NetworkCheck::new(source).progress(true);
    if let Some(file) = &args.file {
        match load_topology(file) {
            Ok(t) => check = check.topology(t),
            Err(code) => return code,
        }
    }
    if let Some(n) = args.expect_nodes {
        check = check.expect_nodes(n);
    }
    if let Some(within) = args.within {
        check = check.within(within);
    }
    if let Some(n) = args.min_degree {
        check = check.min_degree(n);
    }
    if let Some(n) = args.broadcast {
        check = check.broadcast(n);
    }
    if let Some(within) = args.deliver_within {
        check = check.deliver_within(within);
    }
    if let Some(seed) = args.seed {
        check = check.seed(seed);
    }
    let expect = check.expectation();
    eprintln!(
        "check of {}: {} within {}{}",
        expect.name,
        match expect.nodes {
            Some(n) => format!("{n} nodes"),
            None => "every node found".to_string(),
        },
        humantime::format_duration(expect.within),
        match &expect.broadcast {
            Some(bc) => format!(", then {} broadcast(s)", bc.count),
            None => String::new(),
        }
    );
    let report = tokio::select! {
        result = check.run() => match result {
            Ok(report) => report,
            Err(e) => {
                eprintln!("error: {e}");
                return if e.is_bad_input() {
                    exit::BAD_INPUT
                } else {
                    exit::RUNTIME_FAILED
                };
            }
        },
        _ = interrupted() => {
            eprintln!("\ninterrupted; nothing was started, nothing to tear down");
            return INTERRUPTED;
        }
    };
    println!("{}", report.summary());
    let mut code = if report.passed() {
        exit::PASSED
    } else {
        exit::CHECK_FAILED
    };
    if let Err(e) = write_outputs(&report, &args) {
        eprintln!("error: {e:#}");
        code = exit::RUNTIME_FAILED;
    }
    code
}

fn write_outputs(report: &LabReport, args: &CheckArgs) -> Result<(), crate::lab::LabError> {
    super::write_requested(
        report,
        args.report.as_deref(),
        args.junit.as_deref(),
        args.graph.as_deref(),
    )
}
