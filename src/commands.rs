//! The subcommands other than `node`: each returns a process exit code (see [`crate::exit`]).

use std::time::Duration;

use crate::cli::{Command, HealthArgs, StatusArgs};
use crate::client::{StatusClient, render_status};
use crate::exit;

pub async fn dispatch(command: Command) -> u8 {
    match command {
        Command::Node(_) => {
            eprintln!("error: `node` is run by main directly");
            exit::BAD_INPUT
        }
        Command::Health(args) => health(args).await,
        Command::Status(args) => status(args).await,
        _ => {
            eprintln!("error: this subcommand is not available in this build yet");
            exit::BAD_INPUT
        }
    }
}

/// Exit 0 only when the node is ready; used by Docker's exec-form HEALTHCHECK.
async fn health(args: HealthArgs) -> u8 {
    let client = match StatusClient::new(&args.status, args.timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    match client.ready().await {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("not ready: the node has not joined yet");
            1
        }
        Err(e) => {
            eprintln!(
                "unhealthy: cannot reach the status socket at {}: {e}",
                client.base()
            );
            1
        }
    }
}

async fn status(args: StatusArgs) -> u8 {
    let client = match StatusClient::new(&args.addr, Duration::from_secs(3)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::RUNTIME_FAILED;
        }
    };
    let status = match client.status().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot read {}/status: {e}\nIs a node running there? Its status socket is set with `peerlab node --status HOST:PORT`.",
                client.base()
            );
            return exit::RUNTIME_FAILED;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::RUNTIME_FAILED;
            }
        }
        return exit::PASSED;
    }
    let messages = if args.messages {
        client.messages().await.ok()
    } else {
        None
    };
    print!("{}", render_status(&status, messages.as_deref()));
    exit::PASSED
}
