//! The subcommands other than `node`: each returns a process exit code (see [`crate::exit`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;

use crate::cli::{
    Command, DownArgs, HealthArgs, PsArgs, RunArgs, RuntimeChoice, StatusArgs, UpArgs, ValidateArgs,
};
use crate::cli::{ComposeArgs, ImageArgs, ImageCommand};
use crate::client::{StatusClient, render_status};
use crate::exit;
use crate::orchestrator::plan;
use crate::orchestrator::progress::Progress;
use crate::orchestrator::run::{RunOutcome, Stage, execute};
use crate::orchestrator::{RenderOptions, summary_text, to_dot_with, to_svg_with, write_junit};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::local::LocalRuntime;
use crate::runtime::{RunPlan, Runtime, RuntimeError, TeardownReport};
use crate::topology::{self, Topology};

/// Exit code after Ctrl-C / SIGTERM (128 + SIGINT), as shells expect.
const INTERRUPTED: u8 = 130;

pub async fn dispatch(command: Command) -> u8 {
    match command {
        Command::Node(_) => {
            eprintln!("error: `node` is run by main directly");
            exit::BAD_INPUT
        }
        Command::Health(args) => health(args).await,
        Command::Status(args) => status(args).await,
        Command::Run(args) => run(args).await,
        Command::Up(args) => up(args).await,
        Command::Ps(args) => ps(args).await,
        Command::Down(args) => down(args).await,
        Command::Validate(args) => validate(args),
        Command::Schema => schema(),
        Command::Compose(args) => compose(args),
        Command::Image(args) => image(args).await,
    }
}

// ----- node inspection ----------------------------------------------------------------------

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

// ----- topology files -----------------------------------------------------------------------

fn validate(args: ValidateArgs) -> u8 {
    let mut code = exit::PASSED;
    for file in &args.files {
        match topology::load(file) {
            Ok(t) => println!(
                "ok: {} ({} nodes: {} genesis, {} peer groups)",
                file.display(),
                t.node_count(),
                t.genesis.count,
                t.groups.len()
            ),
            Err(e) => {
                eprint!("{e}");
                code = exit::BAD_INPUT;
            }
        }
    }
    code
}

fn schema() -> u8 {
    match serde_json::to_string_pretty(&topology::json_schema()) {
        Ok(text) => {
            println!("{text}");
            exit::PASSED
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::RUNTIME_FAILED
        }
    }
}

fn load_topology(file: &Path) -> Result<Topology, u8> {
    topology::load(file).map_err(|e| {
        eprint!("{e}");
        eprintln!(
            "error: {} is not a valid topology; nothing was started (see docs/topology.md)",
            file.display()
        );
        exit::BAD_INPUT
    })
}

// ----- runs ---------------------------------------------------------------------------------

/// Picks the runtime; `auto` prefers Docker when an engine answers.
async fn select_runtime(choice: RuntimeChoice) -> Result<Box<dyn Runtime>, RuntimeError> {
    match choice {
        RuntimeChoice::Local => Ok(Box::new(LocalRuntime::new()?)),
        RuntimeChoice::Docker => Ok(Box::new(DockerRuntime::connect().await?)),
        RuntimeChoice::Auto => match DockerRuntime::connect().await {
            Ok(docker) => {
                eprintln!(
                    "runtime: docker (auto: an engine answered; --runtime local to use processes)"
                );
                Ok(Box::new(docker))
            }
            Err(_) => {
                eprintln!("runtime: local processes (auto: no Docker engine answered)");
                Ok(Box::new(LocalRuntime::new()?))
            }
        },
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

enum Ended {
    Finished(Box<RunOutcome>),
    Failed(RuntimeError),
    Panicked(String),
    Interrupted,
}

/// Prepares the runtime and executes the plan; Ctrl-C, SIGTERM and panics all come back as
/// an [`Ended`] so that the caller always tears down.
async fn drive(
    runtime: &mut dyn Runtime,
    plan: &RunPlan,
    topology: &Topology,
    seed: u64,
    stage: Stage,
) -> Ended {
    let work = async {
        runtime.prepare(plan).await?;
        let mut progress = Progress::new();
        execute(&*runtime, plan, topology, seed, stage, &mut progress).await
    };
    tokio::select! {
        result = std::panic::AssertUnwindSafe(work).catch_unwind() => match result {
            Ok(Ok(outcome)) => Ended::Finished(Box::new(outcome)),
            Ok(Err(e)) => Ended::Failed(e),
            Err(panic) => Ended::Panicked(panic_text(&panic)),
        },
        _ = interrupted() => Ended::Interrupted,
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
}

async fn teardown(runtime: &mut dyn Runtime, run_id: &str) -> bool {
    match runtime.teardown().await {
        Ok(TeardownReport {
            processes_stopped,
            containers_removed,
            networks_removed,
            leftovers,
        }) => {
            let mut parts = Vec::new();
            if processes_stopped > 0 {
                parts.push(format!("{processes_stopped} processes"));
            }
            if containers_removed > 0 {
                parts.push(format!("{containers_removed} containers"));
            }
            if networks_removed > 0 {
                parts.push(format!("{networks_removed} networks"));
            }
            if parts.is_empty() {
                parts.push("nothing was running".to_string());
            }
            eprintln!("teardown of {run_id}: removed {}", parts.join(", "));
            for l in &leftovers {
                eprintln!("warning: left behind: {l} (try `peerlab down {run_id}`)");
            }
            leftovers.is_empty()
        }
        Err(e) => {
            eprintln!("error: teardown of {run_id} failed: {e}; run `peerlab down {run_id}`");
            false
        }
    }
}

fn graph_format(path: &Path) -> Option<&'static str> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => Some("svg"),
        Some("dot") | Some("gv") => Some("dot"),
        _ => None,
    }
}

/// A run about to start: topology loaded, runtime chosen, plan accepted by the runtime.
struct Started {
    topology: Topology,
    seed: u64,
    runtime: Box<dyn Runtime>,
    plan: RunPlan,
}

/// What `run` and `up` share before anything starts; an `Err` is the exit code.
async fn begin(
    verb: &str,
    file: &Path,
    choice: RuntimeChoice,
    seed: Option<u64>,
    runs_dir: &Path,
    detach: bool,
) -> Result<Started, u8> {
    let topology = load_topology(file)?;
    let seed = seed.unwrap_or(topology.seed);
    let runtime = select_runtime(choice).await.map_err(|e| {
        eprintln!("error: {e}");
        exit::RUNTIME_FAILED
    })?;
    let plan = plan::build(
        &topology,
        seed,
        &plan::fresh_run_id(&topology),
        runs_dir,
        detach,
    );
    if let Err(e) = runtime.check_support(&plan) {
        eprintln!("error: {e}");
        return Err(exit::BAD_INPUT);
    }
    eprintln!(
        "{verb} {} of {}: {} nodes on the {} runtime, seed {seed}; logs in {}",
        plan.run_id,
        file.display(),
        plan.nodes.len(),
        runtime.name(),
        plan.run_dir.join("logs").display()
    );
    Ok(Started {
        topology,
        seed,
        runtime,
        plan,
    })
}

async fn run(args: RunArgs) -> u8 {
    if let Some(graph) = &args.graph
        && graph_format(graph).is_none()
    {
        eprintln!(
            "error: --graph {} must end in .svg or .dot",
            graph.display()
        );
        return exit::BAD_INPUT;
    }
    let Started {
        topology,
        seed,
        mut runtime,
        plan,
    } = match begin(
        "run",
        &args.file,
        args.runtime,
        args.seed,
        &args.runs_dir,
        args.keep,
    )
    .await
    {
        Ok(s) => s,
        Err(code) => return code,
    };
    let ended = drive(runtime.as_mut(), &plan, &topology, seed, Stage::AllChecks).await;
    let outcome = match ended {
        Ended::Finished(outcome) => outcome,
        other => return abort(runtime.as_mut(), &plan, other).await,
    };
    let passed = outcome.report.passed;
    println!("{}", summary_text(&outcome.report));
    let mut code = if passed {
        exit::PASSED
    } else {
        exit::CHECK_FAILED
    };
    if let Err(e) = write_outputs(&outcome, &plan, &args, &topology) {
        eprintln!("error: {e:#}");
        code = exit::RUNTIME_FAILED;
    }
    if args.keep {
        print_endpoints(&outcome, &plan);
    } else if !teardown(runtime.as_mut(), &plan.run_id).await && code == exit::PASSED {
        code = exit::RUNTIME_FAILED;
    }
    code
}

async fn abort(runtime: &mut dyn Runtime, plan: &RunPlan, ended: Ended) -> u8 {
    let code = match ended {
        Ended::Interrupted => {
            eprintln!("\ninterrupted; tearing down {}", plan.run_id);
            INTERRUPTED
        }
        Ended::Failed(RuntimeError::Unsupported { runtime, reason }) => {
            eprintln!("error: the {runtime} runtime cannot run this topology: {reason}");
            exit::BAD_INPUT
        }
        Ended::Failed(e) => {
            eprintln!("error: {e}");
            exit::RUNTIME_FAILED
        }
        Ended::Panicked(msg) => {
            eprintln!("error: internal error (panic): {msg}; tearing down");
            exit::RUNTIME_FAILED
        }
        Ended::Finished(_) => exit::PASSED,
    };
    teardown(runtime, &plan.run_id).await;
    code
}

fn write_outputs(
    outcome: &RunOutcome,
    plan: &RunPlan,
    args: &RunArgs,
    topology: &Topology,
) -> anyhow::Result<()> {
    let report = &outcome.report;
    report.write_json(&plan.run_dir.join("report.json"))?;
    if let Some(path) = &args.report {
        report.write_json(path)?;
        eprintln!("report: {}", path.display());
    }
    if let Some(path) = &args.junit {
        write_junit(report, path)?;
        eprintln!("junit: {}", path.display());
    }
    if let Some(path) = &args.graph {
        let opts = RenderOptions {
            title: Some(format!("{} {}", topology.name, plan.run_id)),
            min_degree: topology.checks.formation.expectation().min_degree,
        };
        let text = match graph_format(path) {
            Some("dot") => to_dot_with(&outcome.overlay, &opts),
            _ => to_svg_with(&outcome.overlay, &opts),
        };
        crate::orchestrator::report::write_text(path, &text)?;
        eprintln!("graph: {}", path.display());
    }
    Ok(())
}

fn print_endpoints(outcome: &RunOutcome, plan: &RunPlan) {
    println!(
        "\nrun {} is up ({} nodes):",
        plan.run_id,
        outcome.endpoints.len()
    );
    let width = outcome
        .endpoints
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4);
    println!(
        "  {:<width$}  {:<24}  status socket",
        "node", "peer address"
    );
    for ep in &outcome.endpoints {
        println!(
            "  {:<width$}  {:<24}  {}",
            ep.name, ep.peer_addr, ep.status_url
        );
    }
    if let Some(first) = outcome.endpoints.first() {
        println!("\nlook inside:  peerlab status {}", first.status_url);
    }
    println!("take it down: peerlab down {}", plan.run_id);
}

async fn up(args: UpArgs) -> u8 {
    let Started {
        topology,
        seed,
        mut runtime,
        plan,
    } = match begin(
        "up",
        &args.file,
        args.runtime,
        args.seed,
        &args.runs_dir,
        true,
    )
    .await
    {
        Ok(s) => s,
        Err(code) => return code,
    };
    let outcome = match drive(
        runtime.as_mut(),
        &plan,
        &topology,
        seed,
        Stage::FormationOnly,
    )
    .await
    {
        Ended::Finished(outcome) => outcome,
        other => return abort(runtime.as_mut(), &plan, other).await,
    };
    let _ = outcome.report.write_json(&plan.run_dir.join("report.json"));
    print_endpoints(&outcome, &plan);
    if outcome.report.passed {
        exit::PASSED
    } else {
        eprintln!(
            "warning: the network did not pass its formation checks; it is left running for inspection"
        );
        exit::CHECK_FAILED
    }
}

/// Every runtime that can have runs on this machine, for `ps` and `down`: local processes
/// always, Docker when an engine answers (no engine simply means no Docker runs).
async fn every_runtime() -> Vec<Box<dyn Runtime>> {
    // Listing and removing runs start nothing, so a missing executable path does not matter.
    let local =
        LocalRuntime::new().unwrap_or_else(|_| LocalRuntime::with_executable("peerlab".into()));
    let mut runtimes: Vec<Box<dyn Runtime>> = vec![Box::new(local)];
    if let Ok(docker) = DockerRuntime::connect().await {
        runtimes.push(Box::new(docker));
    }
    runtimes
}

async fn ps(args: PsArgs) -> u8 {
    // (run id, runtime) -> nodes
    let mut runs: std::collections::BTreeMap<(String, &str), usize> =
        std::collections::BTreeMap::new();
    for runtime in every_runtime().await {
        // An engine that stops answering between connect and list has nothing to show.
        let Ok(listed) = runtime.list_runs().await else {
            continue;
        };
        for run in listed {
            *runs.entry((run.run_id, run.runtime)).or_default() += run.nodes;
        }
    }
    if runs.is_empty() {
        println!("no runs are up");
        return exit::PASSED;
    }
    println!("{:<32}  {:<8}  {:>5}  logs", "run", "runtime", "nodes");
    for ((run, runtime), count) in &runs {
        let logs: PathBuf = args.runs_dir.join(run).join("logs");
        println!("{run:<32}  {runtime:<8}  {count:>5}  {}", logs.display());
    }
    println!("\ntake one down with `peerlab down RUN`, all of them with `peerlab down --all`");
    exit::PASSED
}

async fn down(args: DownArgs) -> u8 {
    let target = if args.all { None } else { args.run.as_deref() };
    // One run's container output is saved next to its other logs (a run of `peerlab up` has
    // no other copy); `--all` removes without saving.
    let logs = target.map(|run| args.runs_dir.join(run).join("logs"));
    let mut code = exit::PASSED;
    let mut removed = TeardownReport::default();
    for runtime in every_runtime().await {
        match runtime.remove_run(target, logs.as_deref()).await {
            Ok(report) => removed.absorb(report),
            Err(e) => {
                let what = match runtime.name() {
                    "docker" => "containers".to_string(),
                    "local" => "node processes".to_string(),
                    other => format!("the nodes of the {other} runtime"),
                };
                eprintln!("error: removing {what} failed: {e}");
                code = exit::RUNTIME_FAILED;
            }
        }
    }
    let stopped = removed.processes_stopped;
    let containers = removed.containers_removed;
    let networks = removed.networks_removed;
    if stopped + containers + networks == 0 {
        match target {
            Some(run) => eprintln!("nothing of run {run} is up (see `peerlab ps`)"),
            None => eprintln!("nothing to take down"),
        }
    } else {
        eprintln!(
            "stopped {stopped} node processes, removed {containers} containers and {networks} networks"
        );
    }
    for l in removed.leftovers {
        eprintln!("warning: could not remove {l}");
        code = exit::RUNTIME_FAILED;
    }
    code
}

fn compose(args: ComposeArgs) -> u8 {
    let topology = match load_topology(&args.file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let seed = args.seed.unwrap_or(topology.seed);
    // A compose project is named after the topology, not after one run.
    let plan = plan::build(
        &topology,
        seed,
        &topology.name,
        Path::new(".peerlab/runs"),
        true,
    );
    let options = crate::export::compose::ExportOptions {
        drop_start_delays: args.drop_delays,
    };
    let text = match crate::export::compose::export_with(&plan, options) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    match &args.output {
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => {
                eprintln!(
                    "wrote {}; start it with `docker-compose -f {} up -d` (or `docker compose`)",
                    path.display(),
                    path.display()
                );
                exit::PASSED
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                exit::RUNTIME_FAILED
            }
        },
        None => {
            print!("{text}");
            exit::PASSED
        }
    }
}

async fn image(args: ImageArgs) -> u8 {
    let ImageCommand::Build { tag } = args.command;
    let docker = match crate::runtime::docker::image::connect().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::RUNTIME_FAILED;
        }
    };
    eprintln!(
        "building {tag} from {}",
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    match crate::runtime::docker::image::build_image(&docker, &tag, |line| eprintln!("  {line}"))
        .await
    {
        Ok(()) => {
            eprintln!("built {tag}; `peerlab run --runtime docker FILE` uses it");
            exit::PASSED
        }
        Err(e) => {
            eprintln!("error: building {tag} failed: {e:#}");
            exit::RUNTIME_FAILED
        }
    }
}
