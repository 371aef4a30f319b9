//! Command-line interface: every subcommand and flag, with help that teaches.
//!
//! Node flags can also be given as `PEERLAB_*` environment variables, which is how the
//! compose file and the Docker runtime configure containers.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::node::args::NodeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "peerlab",
    version,
    about = "A testbed for peer-to-peer networks",
    long_about = "peerlab runs a p2p node with a status socket, and an orchestrator that brings up \
                  whole networks from a YAML topology (as local processes or Docker containers), \
                  checks that they formed, injects faults and reports.",
    after_help = concat!(
        "Start here:\n",
        "  peerlab run topologies/quickstart.yaml   run a genesis + 4 peers end to end\n",
        "  peerlab node --help                      run one node by hand\n",
        "  peerlab status 127.0.0.1:7071            what a node sees\n",
        "  peerlab check --dns tasks.peer           check a network peerlab did not start\n",
        "\nDocs: README.md, docs/topology.md, docs/status-api.md, docs/protocol.md"
    )
)]
/// The parsed command line of `peerlab`.
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `peerlab` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one p2p node (the daemon every process and container of a testbed runs).
    Node(NodeArgs),
    /// Exit 0 only when the node at the status address is ready (joined); for healthchecks.
    Health(HealthArgs),
    /// Show what a node sees: neighbours, members, counters.
    Status(StatusArgs),
    /// Inside a relay container: copy stdin to a TCP connection to HOST:PORT and the
    /// connection to stdout (the far end of the Swarm runtime's exec tunnel).
    #[command(hide = true)]
    Pipe(PipeArgs),
    /// Stay up doing nothing until stopped: the Swarm runtime's relay container on the
    /// overlay, which the orchestrator runs `peerlab pipe` in.
    #[command(hide = true)]
    Relay,
    /// Run a topology end to end: start it, check it, report, tear it down.
    #[command(
        after_help = "Exit codes: 0 every check passed, 1 a check failed, 2 bad input or usage \
                            (nothing was started), 3 the runtime failed, 130 interrupted.\n\
                            Example: peerlab run topologies/fifty.yaml --runtime local --report r.json --graph overlay.svg"
    )]
    Run(RunArgs),
    /// Start a topology and leave it running; prints how to reach every node.
    Up(UpArgs),
    /// Check a running network peerlab did not start (compose, a stack, by hand, any hosts).
    #[command(
        long_about = "Check a network that is already running, wherever it runs, with the same \
                      formation and broadcast checks, reports and exit codes as `peerlab run`. \
                      Its nodes are found through exactly one of --endpoint, --dns or \
                      --compose-project; what they must show comes from a topology file's \
                      `checks:` and node count, or from the flags. Without either: every node \
                      found ready, the overlay connected and every node knowing every other, \
                      within 60s. Nothing is started or changed, except the broadcasts that \
                      --broadcast injects. See docs/check.md.",
        after_help = "Exit codes: 0 every check passed, 1 a check failed (also: no node found in time), \
                      2 bad input or usage (nothing was checked), 3 the source could not be asked \
                      (no Docker engine for --compose-project) or a report could not be written.\n\
                      Examples:\n  \
                      peerlab check --endpoint 127.0.0.1:7071,127.0.0.1:7073 --expect-nodes 2\n  \
                      peerlab check topologies/quickstart.yaml --compose-project quickstart --junit junit.xml\n  \
                      peerlab check --dns tasks.peer --status-port 7071 --within 2m --broadcast 3\n\
                      In a swarm overlay, as a one-shot service of peerlab's image (docs/check.md):\n  \
                      docker service create --network NET --restart-condition none --no-healthcheck \\\n    \
                      --entrypoint /peerlab peerlab:0.1.0 check --dns tasks.SERVICE --status-port 7071"
    )]
    Check(CheckArgs),
    /// List runs that are still up (started by `peerlab up`, or left over); local runs of
    /// other users are not listed.
    Ps(PsArgs),
    /// Stop and remove a run (or every run with --all), including leftovers.
    Down(DownArgs),
    /// Check topology files without starting anything.
    Validate(ValidateArgs),
    /// Print the JSON Schema of topology files (for editors).
    Schema,
    /// Export a topology as a docker-compose.yml (Compose Specification), or with --stack
    /// as a Docker Swarm stack file.
    #[command(after_help = "Examples:\n  \
                      peerlab compose topologies/quickstart.yaml -o docker-compose.yml\n  \
                      peerlab compose topologies/three-hosts.yaml --stack -o stack.yml   (placed by its hosts:)\n  \
                      peerlab compose topologies/quickstart.yaml --stack --place genesis=h1 --place peers='*'\n  \
                      docker stack deploy --resolve-image never -c stack.yml three-hosts   (see docs/multi-host.md)")]
    Compose(ComposeArgs),
    /// Export a topology for another tool to run (`export kubernetes`).
    Export(ExportArgs),
    /// Build the node's container image from this very executable.
    Image(ImageArgs),
}

/// Arguments of `peerlab pipe`.
#[derive(Debug, Clone, Args)]
pub struct PipeArgs {
    /// Where to connect, as this container resolves it.
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
}

/// Flags of `peerlab health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Status socket to ask.
    #[arg(
        long,
        env = "PEERLAB_STATUS",
        default_value = "127.0.0.1:7071",
        value_name = "HOST:PORT"
    )]
    pub status: String,
    /// Give up after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Healthy as soon as the node answers, joined or not (liveness rather than
    /// readiness). For orchestrators that kill unhealthy containers or hide them from DNS,
    /// as Docker Swarm does: a node still joining a slow network must not be killed, and
    /// its peers must be able to resolve it meanwhile.
    #[arg(long)]
    pub live: bool,
}

/// Flags of `peerlab status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Status socket of the node (HOST:PORT or http://HOST:PORT).
    #[arg(default_value = "127.0.0.1:7071")]
    pub addr: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also list the last delivered broadcasts.
    #[arg(long)]
    pub messages: bool,
}

/// Where `run` and `up` start nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// Docker when an engine answers, local processes otherwise.
    Auto,
    /// Child processes of this executable on 127.0.x.y addresses.
    Local,
    /// Docker containers on user-defined networks.
    Docker,
    /// Services of a Docker Swarm across its hosts, through a manager (DOCKER_HOST, or the
    /// local engine); PEERLAB_SWARM_ENGINES=h1=unix:///...,h2=tcp://... names the hosts'
    /// engines the image is loaded into (docs/multi-host.md).
    Swarm,
    /// Pods of a Kubernetes cluster (the current kubeconfig, or --kubeconfig/--context), a
    /// namespace per run (docs/kubernetes.md).
    Kubernetes,
}

/// Where the Kubernetes runtime finds its cluster (`run`, `up`, `ps`, `down`).
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Kubeconfig of the cluster (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// Where a Kubernetes run goes (`run`, `up`).
#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// With --runtime kubernetes: the run's namespace (default: `peerlab-<run id>`). It must
    /// not exist yet: the run creates and labels it, and deletes it at the end.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
}

impl KubeArgs {
    /// The runtime's options.
    pub fn options(&self) -> crate::lab::KubeOptions {
        crate::lab::KubeOptions {
            kubeconfig: self.cluster.kubeconfig.clone(),
            context: self.cluster.context.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

impl ClusterArgs {
    /// The runtime's options (no namespace: runs are found by label).
    pub fn options(&self) -> crate::lab::KubeOptions {
        crate::lab::KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: None,
        }
    }
}

/// Flags of `peerlab run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Topology file (YAML); see docs/topology.md and `peerlab schema`.
    pub file: PathBuf,
    /// Where to start the nodes.
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeChoice,
    /// Override the topology's seed (node randomness, scenario choices).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the JSON report here (top-level `passed`, checks, per-node views).
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write JUnit XML here so CI systems list each check as a test case.
    #[arg(long, value_name = "FILE.xml")]
    pub junit: Option<PathBuf>,
    /// Draw the overlay the nodes formed (.dot or .svg).
    #[arg(long, value_name = "FILE.svg|FILE.dot")]
    pub graph: Option<PathBuf>,
    /// Leave the nodes running after the checks (then `peerlab down RUN`).
    #[arg(long)]
    pub keep: bool,
    /// Where runs keep logs and state.
    #[arg(long, env = "PEERLAB_RUNS_DIR", default_value = ".peerlab/runs")]
    pub runs_dir: PathBuf,
    /// The Kubernetes cluster and namespace.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Flags of `peerlab up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Topology file (YAML); see docs/topology.md and `peerlab schema`.
    pub file: PathBuf,
    /// Where to start the nodes.
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeChoice,
    /// Override the topology's seed (node randomness, scenario choices).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where runs keep logs and state.
    #[arg(long, env = "PEERLAB_RUNS_DIR", default_value = ".peerlab/runs")]
    pub runs_dir: PathBuf,
    /// The Kubernetes cluster and namespace.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Flags of `peerlab check`.
#[derive(Debug, Clone, Args)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .args(["endpoint", "dns", "compose_project"]),
))]
pub struct CheckArgs {
    /// Topology file whose `checks:` (formation, deadline, broadcast) and node count the
    /// network must meet; its scenario is not played. The flags below override it.
    pub file: Option<PathBuf>,
    /// Status socket of a node, HOST:PORT or http://HOST:PORT (the node's `--status`);
    /// repeat it or separate with commas, and give every node's.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub endpoint: Vec<String>,
    /// A DNS name whose every address is a node, re-resolved while waiting (in a Docker
    /// Swarm overlay: `tasks.<service>`); repeat it or separate with commas for several
    /// services. The status socket is at --status-port of each address.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// Every running container of this Docker Compose project (the label
    /// com.docker.compose.project), reached at the host port that publishes its container
    /// port --status-port (as files of `peerlab compose` and the repository's
    /// docker-compose.yml publish it), else at its address on its network.
    #[arg(long, value_name = "PROJECT")]
    pub compose_project: Option<String>,
    /// The nodes' status port: on every address of --dns, inside the containers of
    /// --compose-project. peerlab's image listens on 7071.
    #[arg(long, value_name = "PORT", default_value_t = crate::lab::CONTAINER_STATUS_PORT)]
    pub status_port: u16,
    /// Exactly this many nodes must be found (default: the topology's count, else any).
    #[arg(long, value_name = "N")]
    pub expect_nodes: Option<usize>,
    /// How long to wait for the checks to hold (default: the topology's formation
    /// deadline, else 60s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub within: Option<Duration>,
    /// Every node must have at least N neighbours (0: no degree check).
    #[arg(long, value_name = "N")]
    pub min_degree: Option<usize>,
    /// Once formed, inject N broadcasts at random nodes and check every node delivers each
    /// once, in time (0: none, even if the topology asks).
    #[arg(long, value_name = "N")]
    pub broadcast: Option<usize>,
    /// How long each broadcast may take to reach every node (default: the topology's, else 5s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub deliver_within: Option<Duration>,
    /// Seed of the choice of broadcast senders (default: the topology's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the JSON report here (top-level `passed`, checks, per-node views).
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write JUnit XML here so CI systems list each check as a test case.
    #[arg(long, value_name = "FILE.xml")]
    pub junit: Option<PathBuf>,
    /// Draw the overlay the nodes formed (.dot or .svg).
    #[arg(long, value_name = "FILE.svg|FILE.dot")]
    pub graph: Option<PathBuf>,
}

/// Flags of `peerlab ps`.
#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    /// Where runs keep logs and state.
    #[arg(long, env = "PEERLAB_RUNS_DIR", default_value = ".peerlab/runs")]
    pub runs_dir: PathBuf,
    /// The Kubernetes cluster whose runs to list too (when a kubeconfig exists).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Flags of `peerlab down`.
#[derive(Debug, Clone, Args)]
pub struct DownArgs {
    /// Run id to take down (see `peerlab ps`); local node processes of another user are
    /// never signalled.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub run: Option<String>,
    /// Take down every run. Local runtime: only the node processes owned by this user
    /// (found by their PEERLAB_RUN variable, whatever directory their run was started
    /// from); other users' processes are never signalled, even by root. Docker, swarm and
    /// Kubernetes: everything labelled peerlab.run that this daemon or cluster access
    /// reaches, whoever started it (they have no notion of local users).
    #[arg(long)]
    pub all: bool,
    /// Where runs keep logs and state.
    #[arg(long, env = "PEERLAB_RUNS_DIR", default_value = ".peerlab/runs")]
    pub runs_dir: PathBuf,
    /// The Kubernetes cluster whose runs to remove too (when a kubeconfig exists).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Flags of `peerlab validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Topology files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Flags of `peerlab compose`.
#[derive(Debug, Clone, Args)]
pub struct ComposeArgs {
    /// Topology file to export.
    pub file: PathBuf,
    /// Where to write the compose file (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Override the topology's seed (node randomness).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Export groups with a `start_delay` anyway, starting them at once (compose cannot delay).
    #[arg(long)]
    pub drop_delays: bool,
    /// Write a Docker Swarm stack file (`docker stack deploy --resolve-image never`): one
    /// service per group (per group and host when spread) with `deploy:` replicas, `dnsrr`,
    /// overlay networks with subnets, placed by the topology's hosts on the swarm nodes
    /// labelled peerlab.host. See docs/multi-host.md.
    #[arg(long)]
    pub stack: bool,
    /// With --stack: pin GROUP's replicas to the swarm nodes labelled peerlab.host=HOST, or
    /// spread them over the labelled nodes with GROUP=*, instead of the topology's `hosts:`
    /// placement; repeat for each group (`genesis` places the genesis nodes).
    #[arg(long, value_name = "GROUP=HOST", requires = "stack", value_parser = crate::export::stack::parse_place)]
    pub place: Vec<(String, crate::export::stack::Placement)>,
}

/// Flags of `peerlab export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// What to export to.
    #[command(subcommand)]
    pub command: ExportCommand,
}

/// Subcommands of `peerlab export`.
#[derive(Debug, Clone, Subcommand)]
pub enum ExportCommand {
    /// Write a topology as Kubernetes objects (YAML) to apply with kubectl, Helm or Argo.
    #[command(
        long_about = "Write a topology as Kubernetes objects, the same the Kubernetes runtime \
                      creates: the run's namespace (labelled peerlab.run), and per group (the \
                      genesis nodes are one) a headless Service and a StatefulSet whose pods are \
                      named as the topology names its nodes (genesis-0, peers-0, ...). Pods find \
                      the genesis by DNS (<pod>.<group>.<namespace>.svc.cluster.local), advertise \
                      their pod IP, are Ready once joined, and get the topology's node settings \
                      and resources. Every pod starts at once: start delays are not honoured. \
                      See docs/kubernetes.md.",
        after_help = "The cluster must be able to run the image: build it with `peerlab image build \
                      --tag peerlab:0.1.0`, then `kind load docker-image peerlab:0.1.0`, `k3d image \
                      import peerlab:0.1.0`, or push it to a registry the cluster pulls from \
                      (and pass --image REGISTRY/peerlab:TAG).\n\
                      Examples:\n  \
                      peerlab export kubernetes topologies/quickstart.yaml -o quickstart.k8s.yaml\n  \
                      kubectl apply -f quickstart.k8s.yaml\n  \
                      kubectl -n peerlab-quickstart get pods -w            (Ready = joined)\n  \
                      kubectl get --raw /api/v1/namespaces/peerlab-quickstart/pods/genesis-0:7071/proxy/status\n  \
                      kubectl delete namespace peerlab-quickstart"
    )]
    Kubernetes(KubernetesExportArgs),
}

/// Flags of `peerlab export kubernetes`.
#[derive(Debug, Clone, Args)]
pub struct KubernetesExportArgs {
    /// Topology file to export.
    pub file: PathBuf,
    /// Where to write the YAML; `-` (the default) is standard output.
    #[arg(long, short, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,
    /// Namespace of the objects (created by the file). Default: `peerlab-<topology name>`.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The nodes' image. Default: the topology's `image` (what the Docker runtime runs).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// imagePullPolicy of the nodes: IfNotPresent uses an image loaded into the cluster;
    /// Always pulls from a registry on every start.
    #[arg(long, value_name = "POLICY", default_value = "IfNotPresent", value_parser = ["IfNotPresent", "Never", "Always"])]
    pub pull_policy: String,
    /// Override the topology's seed (the nodes' randomness).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Flags of `peerlab image`.
#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// What to do with the image.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// Subcommands of `peerlab image`.
#[derive(Debug, Clone, Subcommand)]
pub enum ImageCommand {
    /// Build the image from this executable through the Docker API (no cargo, no registry).
    Build {
        /// Tag to give the image.
        #[arg(long, default_value_t = crate::DEFAULT_IMAGE.to_string())]
        tag: String,
    },
}
