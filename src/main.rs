//! The `peerlab` executable: one static binary for the node, the orchestrator and the image.

use std::process::ExitCode;

use clap::Parser;
use peerlab::cli::{Cli, Command};
use peerlab::exit;
use peerlab::node::args::LogFormat;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (log_format, single_thread) = match &cli.command {
        // One thread per node keeps hundreds of local nodes cheap (memory and context switches).
        Command::Node(args) => (args.log_format, true),
        _ => (LogFormat::Pretty, false),
    };
    init_tracing(log_format);
    let mut builder = if single_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let msg = format!("cannot start the async runtime: {e}");
            return fail(exit::RUNTIME_FAILED, &msg);
        }
    };
    match cli.command {
        Command::Node(args) => match runtime.block_on(peerlab::node::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(exit::RUNTIME_FAILED, &format!("{e:#}")),
        },
        command => ExitCode::from(runtime.block_on(peerlab::commands::dispatch(command))),
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // kube's client logs every failed connection as an error of its own; the Kubernetes
    // runtime turns those failures into its own sentences (or, for `peerlab ps` on a machine
    // whose kubeconfig names a cluster that is down, deliberately says nothing).
    let filter = EnvFilter::try_from_env("PEERLAB_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client=off"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}
