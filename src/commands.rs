//! The subcommands other than `node`: each returns a process exit code (see [`crate::exit`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;

mod check;

use crate::cli::{
    Command, DownArgs, HealthArgs, PsArgs, RunArgs, RuntimeChoice, StatusArgs, UpArgs, ValidateArgs,
};
use crate::cli::{ComposeArgs, ExportArgs, ExportCommand, ImageArgs, ImageCommand};
use crate::client::{StatusClient, render_status};
use crate::exit;
use crate::lab::{Keep, Lab, LabBuilder, LabError, LabReport, RuntimeKind, graph_format};
use crate::orchestrator::plan;
use crate::orchestrator::run::{PANIC_AFTER_START, Stage};
use crate::runtime::{RunPlan, RuntimeError, TeardownReport};
use crate::topology::{self, Topology};

/// Exit code after Ctrl-C / SIGTERM (128 + SIGINT), as shells expect.
const INTERRUPTED: u8 = 130;

/// Runs one parsed subcommand and returns the process exit code (see [`crate::exit`]).
pub async fn dispatch(command: Command) -> u8 {
    match command {
        Command::Node(_) => {
            eprintln!("error: `node` is run by main directly");
            exit::BAD_INPUT
        }
        Command::Health(args) => health(args).await,
        Command::Status(args) => status(args).await,
        Command::Pipe(args) => match crate::runtime::swarm::tunnel::pipe(&args.target).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: pipe to {}: {e}", args.target);
                1
            }
        },
        Command::Relay => match crate::runtime::swarm::tunnel::relay().await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: relay: {e}");
                1
            }
        },
        Command::Run(args) => run(args).await,
        Command::Up(args) => up(args).await,
        Command::Check(args) => check::check(args).await,
        Command::Ps(args) => ps(args).await,
        Command::Down(args) => down(args).await,
        Command::Validate(args) => validate(args),
        Command::Schema => schema(),
        Command::Compose(args) => compose(args),
        Command::Export(args) => export(args),
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
    if args.live {
        return match client.live().await {
            Ok(_) => 0,
            Err(e) => {
                eprintln!(
                    "unhealthy: the status socket at {} does not answer: {e}",
                    client.base()
                );
                1
            }
        };
    }
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
                eprintln!("{e}");
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
        eprintln!("{e}");
        eprintln!(
            "error: {} is not a valid topology; nothing was started (see docs/topology.md)",
            file.display()
        );
        exit::BAD_INPUT
    })
}

// ----- runs ---------------------------------------------------------------------------------
//
// `run` and `up` are thin: parse, ask the lab (crate::lab), print, pick the exit code. The
// lab does the work; this module adds what only a command line has: Ctrl-C and SIGTERM,
// the catching of panics (both still tear down), and the messages users read.

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
    Finished(Box<LabReport>),
    Failed(LabError),
    Panicked(String),
    Interrupted,
}

/// Starts the lab's nodes and runs its checks; Ctrl-C, SIGTERM and panics all come back as
/// an [`Ended`] so that the caller always tears down.
async fn drive(lab: &mut Lab, stage: Stage) -> Ended {
    let work = async {
        lab.start_nodes().await?;
        if std::env::var_os(PANIC_AFTER_START).is_some() {
            panic!("{PANIC_AFTER_START} is set");
        }
        match stage {
            Stage::AllChecks => lab.check().await,
            Stage::FormationOnly => lab.check_formation().await,
        }
    };
    tokio::select! {
        result = std::panic::AssertUnwindSafe(work).catch_unwind() => match result {
            Ok(Ok(report)) => Ended::Finished(Box::new(report)),
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

/// Tears the lab down and says what was removed; false when something was left behind.
async fn teardown(lab: Lab) -> bool {
    let run_id = lab.run_id().to_string();
    match lab.shutdown().await {
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

/// What `run` and `up` share before anything starts: the topology loaded, the runtime
/// chosen and the plan accepted by it, announced. An `Err` is the exit code.
async fn begin(
    verb: &str,
    file: &Path,
    choice: RuntimeChoice,
    seed: Option<u64>,
    runs_dir: &Path,
    kube: &crate::cli::KubeArgs,
    shape: impl FnOnce(LabBuilder) -> LabBuilder,
) -> Result<Lab, u8> {
    let topology = load_topology(file)?;
    let mut builder = Lab::from_topology(topology)
        .runtime(match choice {
            RuntimeChoice::Auto => RuntimeKind::Auto,
            RuntimeChoice::Local => RuntimeKind::Local,
            RuntimeChoice::Docker => RuntimeKind::Docker,
            RuntimeChoice::Swarm => RuntimeKind::Swarm,
            RuntimeChoice::Kubernetes => RuntimeKind::Kubernetes,
        })
        .kubernetes(kube.options())
        .runs_dir(runs_dir)
        .progress(true);
    if let Some(seed) = seed {
        builder = builder.seed(seed);
    }
    let lab = shape(builder).plan().await.map_err(|e| {
        eprintln!("error: {e}");
        if e.is_bad_input() {
            exit::BAD_INPUT
        } else {
            exit::RUNTIME_FAILED
        }
    })?;
    if let Some(note) = lab.runtime_note() {
        eprintln!("{note}");
    }
    eprintln!(
        "{verb} {} of {}: {} nodes on the {} runtime, seed {}; logs in {}",
        lab.run_id(),
        file.display(),
        lab.node_names().len(),
        lab.runtime_name(),
        lab.seed(),
        lab.run_dir().join("logs").display()
    );
    Ok(lab)
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
    let keep = if args.keep { Keep::Always } else { Keep::Never };
    let mut lab = match begin(
        "run",
        &args.file,
        args.runtime,
        args.seed,
        &args.runs_dir,
        &args.kube,
        |b| b.keep(keep),
    )
    .await
    {
        Ok(lab) => lab,
        Err(code) => return code,
    };
    let report = match drive(&mut lab, Stage::AllChecks).await {
        Ended::Finished(report) => report,
        other => return abort(lab, other).await,
    };
    println!("{}", report.summary());
    let mut code = if report.passed() {
        exit::PASSED
    } else {
        exit::CHECK_FAILED
    };
    if let Err(e) = write_outputs(&report, &lab, &args) {
        eprintln!("error: {e:#}");
        code = exit::RUNTIME_FAILED;
    }
    if args.keep {
        print_endpoints(&lab);
        leave_running(lab);
    } else if !teardown(lab).await && code == exit::PASSED {
        code = exit::RUNTIME_FAILED;
    }
    code
}

/// Gives the lab up with its nodes running (`up`, `run --keep`); they were started
/// detached for this.
fn leave_running(lab: Lab) {
    if let Err(e) = lab.detach() {
        eprintln!("error: {e}");
    }
}

async fn abort(lab: Lab, ended: Ended) -> u8 {
    let run_id = lab.run_id().to_string();
    let code = match ended {
        Ended::Interrupted => {
            eprintln!("\ninterrupted; tearing down {run_id}");
            INTERRUPTED
        }
        Ended::Failed(LabError::Runtime(RuntimeError::Unsupported { runtime, reason })) => {
            eprintln!("error: the {runtime} runtime cannot run this topology: {reason}");
            exit::BAD_INPUT
        }
        Ended::Failed(e) => {
            eprintln!("error: {e}");
            if e.is_bad_input() {
                exit::BAD_INPUT
            } else {
                exit::RUNTIME_FAILED
            }
        }
        Ended::Panicked(msg) => {
            eprintln!("error: internal error (panic): {msg}; tearing down");
            exit::RUNTIME_FAILED
        }
        Ended::Finished(_) => exit::PASSED,
    };
    teardown(lab).await;
    code
}

fn write_outputs(report: &LabReport, lab: &Lab, args: &RunArgs) -> Result<(), LabError> {
    report.write_json(&lab.run_dir().join("report.json"))?;
    write_requested(
        report,
        args.report.as_deref(),
        args.junit.as_deref(),
        args.graph.as_deref(),
    )
}

/// Writes the report files the user asked for (`--report`, `--junit`, `--graph`), saying
/// where each went; shared by `run` and `check`.
fn write_requested(
    report: &LabReport,
    json: Option<&std::path::Path>,
    junit: Option<&std::path::Path>,
    graph: Option<&std::path::Path>,
) -> Result<(), LabError> {
    if let Some(path) = json {
        report.write_json(path)?;
        eprintln!("report: {}", path.display());
    }
    if let Some(path) = junit {
        report.write_junit(path)?;
        eprintln!("junit: {}", path.display());
    }
    if let Some(path) = graph {
        report.write_graph(path)?;
        eprintln!("graph: {}", path.display());
    }
    Ok(())
}

fn print_endpoints(lab: &Lab) {
    let endpoints = lab.endpoints();
    println!("\nrun {} is up ({} nodes):", lab.run_id(), endpoints.len());
    let width = endpoints.iter().map(|e| e.name.len()).max().unwrap_or(4);
    println!(
        "  {:<width$}  {:<24}  status socket",
        "node", "peer address"
    );
    for ep in &endpoints {
        println!(
            "  {:<width$}  {:<24}  {}",
            ep.name, ep.peer_addr, ep.status_url
        );
    }
    if let Some(first) = endpoints.first() {
        println!("\nlook inside:  peerlab status {}", first.status_url);
    }
    println!("take it down: peerlab down {}", lab.run_id());
}

async fn up(args: UpArgs) -> u8 {
    let mut lab = match begin(
        "up",
        &args.file,
        args.runtime,
        args.seed,
        &args.runs_dir,
        &args.kube,
        |b| b.keep(Keep::Always).scenario(false),
    )
    .await
    {
        Ok(lab) => lab,
        Err(code) => return code,
    };
    let report = match drive(&mut lab, Stage::FormationOnly).await {
        Ended::Finished(report) => report,
        other => return abort(lab, other).await,
    };
    let _ = report.write_json(&lab.run_dir().join("report.json"));
    print_endpoints(&lab);
    leave_running(lab);
    if report.passed() {
        exit::PASSED
    } else {
        eprintln!(
            "warning: the network did not pass its formation checks; it is left running for inspection"
        );
        exit::CHECK_FAILED
    }
}

async fn ps(args: PsArgs) -> u8 {
    // (run id, runtime) -> nodes
    let mut runs: std::collections::BTreeMap<(String, &str), usize> =
        std::collections::BTreeMap::new();
    for runtime in crate::lab::every_runtime_with(&args.cluster.options()).await {
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
    println!("{:<32}  {:<10}  {:>5}  logs", "run", "runtime", "nodes");
    for ((run, runtime), count) in &runs {
        let logs: PathBuf = args.runs_dir.join(run).join("logs");
        println!("{run:<32}  {runtime:<10}  {count:>5}  {}", logs.display());
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
    for runtime in crate::lab::every_runtime_with(&args.cluster.options()).await {
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

/// The topology file and the plan an export writes: named after the topology rather than
/// one run (a compose project, a namespace), so that applying the file again updates what
/// it made instead of adding a second network.
fn export_plan(file: &Path, seed: Option<u64>) -> Result<(Topology, RunPlan), u8> {
    let topology = load_topology(file)?;
    let seed = seed.unwrap_or(topology.seed);
    let plan = plan::build_for_export(&topology, seed, &topology.name, Path::new(".peerlab/runs"));
    Ok((topology, plan))
}

fn compose(args: ComposeArgs) -> u8 {
    let (topology, plan) = match export_plan(&args.file, args.seed) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let options = crate::export::compose::ExportOptions {
        drop_start_delays: args.drop_delays,
    };
    let exported = if args.stack {
        let stack = crate::export::stack::StackOptions {
            compose: options,
            placement: args.place.clone(),
        };
        crate::export::stack::export(&plan, &stack)
    } else {
        crate::export::compose::export_with(&plan, options)
    };
    let text = match exported {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    match &args.output {
        Some(path) => match std::fs::write(path, text) {
            Ok(()) if args.stack => {
                eprintln!(
                    "wrote {}; deploy it from a swarm manager with \
                     `docker stack deploy --resolve-image never -c {} {}`",
                    path.display(),
                    path.display(),
                    topology.name
                );
                exit::PASSED
            }
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

fn export(args: ExportArgs) -> u8 {
    let ExportCommand::Kubernetes(args) = args.command;
    let (topology, plan) = match export_plan(&args.file, args.seed) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| crate::runtime::kubernetes::objects::namespace_for(&topology.name));
    let mut options = crate::runtime::kubernetes::objects::ObjectOptions::new(
        namespace.clone(),
        args.image.clone().unwrap_or_else(|| topology.image.clone()),
    );
    options.pull_policy = args.pull_policy.clone();
    let text = match crate::export::kubernetes::export(&plan, &options) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    if args.output.as_os_str() == "-" {
        print!("{text}");
        return exit::PASSED;
    }
    match std::fs::write(&args.output, text) {
        Ok(()) => {
            eprintln!(
                "wrote {}; apply it with `kubectl apply -f {}` (the cluster needs the image {}), \
                 remove it with `kubectl delete namespace {namespace}`",
                args.output.display(),
                args.output.display(),
                options.image
            );
            exit::PASSED
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", args.output.display());
            exit::RUNTIME_FAILED
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
