//! The validated, resolved topology: defaults applied, durations parsed, names checked.
//!
//! Everything downstream (the orchestrator's plan, checks and reports) reads this model,
//! never the file, so it can rely on the invariants [`super::validate`] established. It
//! knows nothing of runtimes: `orchestrator::plan` turns it into what a runtime starts. It serializes into the
//! run report so that a report says exactly what ran.

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::scenario::Step;
use super::timeline::ShapeView;

/// Group name of the genesis nodes (and the prefix of their names).
pub const GENESIS: &str = "genesis";

/// A topology that passed validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    /// Name of the run's topology, used in run ids, reports and resource names.
    pub name: String,
    /// Seed of every random choice (scenario targets, broadcast senders), so a run can be replayed.
    pub seed: u64,
    /// Container image of the nodes (Docker runtime only).
    pub image: String,
    /// Where the run's network key comes from; `None`: the nodes need none (anyone who
    /// reaches a peer port may speak the protocol, as before keys existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_key: Option<NetworkKeyMode>,
    /// The genesis nodes, as a group named `genesis` that starts at once.
    pub genesis: Group,
    /// Peer groups, in start order.
    pub groups: Vec<Group>,
    /// User-defined networks; empty means one default network.
    pub networks: Vec<Network>,
    /// Hosts the nodes are placed on, in the file's order; empty: no hosts (one machine,
    /// no shaping), and every group's [`Group::host`] is `None`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<Host>,
    /// How the network between hosts behaves.
    #[serde(skip_serializing_if = "HostLinks::is_empty")]
    pub links: HostLinks,
    /// What the run must achieve to pass.
    pub checks: Checks,
    /// Fault steps played after formation; the report carries them resolved instead.
    #[serde(skip)]
    pub scenario: Vec<Step>,
}

/// `network_key:` of a topology: where the secret every node must hold comes from. The
/// secret itself is never in the topology (nor in anything serialized from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKeyMode {
    /// The orchestrator draws a fresh random key for each run.
    PerRun,
    /// The key is `PEERLAB_NETWORK_KEY` of peerlab's own environment (a run is refused
    /// before anything starts when it is unset or malformed); exports require the same
    /// variable of the shell that deploys them.
    FromEnv,
}

impl NetworkKeyMode {
    /// The mode as written in a topology file.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkKeyMode::PerRun => "per-run",
            NetworkKeyMode::FromEnv => "from-env",
        }
    }
}

/// A group of identical nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// Group name; node names are `<group>-<n>`.
    pub name: String,
    /// How many nodes the group starts.
    pub count: usize,
    /// Wait after the run starts before the group's first node starts.
    #[serde(serialize_with = "serialize_duration")]
    pub start_delay: Duration,
    /// Wait between two nodes of the group, to spread the join load.
    #[serde(serialize_with = "serialize_duration")]
    pub stagger: Duration,
    /// Effective settings: built-in defaults, then `defaults`, then the group's own.
    pub settings: NodeSettings,
    /// Networks the group's nodes attach to; empty means the default network.
    pub networks: Vec<String>,
    /// `start: manual`: not started with the run, only by a scenario `join`.
    pub manual: bool,
    /// Where the group's nodes are placed; `None` when the topology has no hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Placement>,
}

/// Where a group's nodes are placed when the topology has hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Round-robin: node `i` of the group on host `i mod hosts`, in the order of `hosts`.
    Spread,
    /// Every node of the group on this host.
    On(String),
}

/// A host of the topology (`hosts:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// Unique host name, as groups, links and scenarios name it.
    pub name: String,
    /// `swarm` only: the `peerlab.host` node label value or hostname of the swarm node this
    /// host is; `None`: the host's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The network between hosts (`links:`): a shape per named pair, and one for the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostLinks {
    /// Links of the pairs named with `between`, in file order.
    pub pairs: Vec<HostLink>,
    /// The link of every pair of hosts no entry of `pairs` names; `None`: unshaped.
    pub default: Option<ShapeView>,
}

impl HostLinks {
    /// True when no link is declared (nothing is shaped).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.default.is_none()
    }

    /// The link between hosts `a` and `b` (either order); `None` within one host, or when
    /// the pair has no entry and there is no default.
    pub fn between(&self, a: &str, b: &str) -> Option<ShapeView> {
        if a == b {
            return None;
        }
        self.pairs
            .iter()
            .find(|l| l.joins(a, b))
            .map(|l| l.shape)
            .or(self.default)
    }
}

/// The link between one pair of hosts, the same both ways.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostLink {
    /// The two hosts, as written.
    pub between: [String; 2],
    /// What each side's frames towards the other go through.
    pub shape: ShapeView,
}

impl HostLink {
    /// Whether this link joins `a` and `b`, in either order.
    pub fn joins(&self, a: &str, b: &str) -> bool {
        let [x, y] = &self.between;
        (x == a && y == b) || (x == b && y == a)
    }
}

/// Settings of `peerlab node`, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSettings {
    /// Neighbours a node aims to keep (`--degree`).
    pub degree: u32,
    /// Most neighbours a node accepts before refusing (`--max-peers`).
    pub max_peers: u32,
    /// Cap on open TCP connections, inbound and outbound (`--max-connections`).
    pub max_connections: usize,
    /// How often a node pings its quiet links, or every whole number of these that fits
    /// in half the heartbeat timeout (`--heartbeat-interval`).
    #[serde(serialize_with = "serialize_duration")]
    pub heartbeat_interval: Duration,
    /// Silence after which a neighbour is suspected (`--heartbeat-timeout`).
    #[serde(serialize_with = "serialize_duration")]
    pub heartbeat_timeout: Duration,
    /// How long a suspect may refute before it is declared dead (`--suspect-timeout`).
    #[serde(serialize_with = "serialize_duration")]
    pub suspect_timeout: Duration,
    /// CPU and memory each node may use (`resources`); `None`: unlimited. Not a flag of
    /// `peerlab node`: the runtime that starts the node applies it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// CPU and memory limits of a node (`resources` in node settings); each `None` leaves
/// that one unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Thousandths of a CPU (`250m` is 250).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Bytes of memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

impl NodeSettings {
    /// The `peerlab node` defaults (see `node::args::NodeArgs`); the degree is capped by the caller
    /// for topologies too small to offer four neighbours.
    pub const BUILT_IN: NodeSettings = NodeSettings {
        degree: 4,
        max_peers: 16,
        max_connections: 128,
        heartbeat_interval: Duration::from_millis(500),
        heartbeat_timeout: Duration::from_millis(1500),
        suspect_timeout: Duration::from_secs(3),
        resources: None,
    };

    /// Every setting as `peerlab node` flags. All are rendered, defaults included, so a node
    /// behaves the same whatever defaults the node binary was built with.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--degree".into(),
            self.degree.to_string(),
            "--max-peers".into(),
            self.max_peers.to_string(),
            "--max-connections".into(),
            self.max_connections.to_string(),
            "--heartbeat-interval".into(),
            duration_text(self.heartbeat_interval),
            "--heartbeat-timeout".into(),
            duration_text(self.heartbeat_timeout),
            "--suspect-timeout".into(),
            duration_text(self.suspect_timeout),
        ]
    }
}

/// A user-defined network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Network name, as groups refer to it.
    pub name: String,
    /// Normalised CIDR; `None` lets the runtime choose.
    pub subnet: Option<String>,
}

/// The checks a run must pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checks {
    /// Always present: a run that did not form has nothing else worth checking.
    pub formation: FormationChecks,
    /// Broadcast delivery check after formation, if the topology asks for one.
    pub broadcast: Option<BroadcastChecks>,
}

/// The formation check of `checks.formation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormationChecks {
    /// Deadline counted from the first node's start.
    #[serde(serialize_with = "serialize_duration")]
    pub within: Duration,
    /// Every node's `/ready` must answer 200.
    pub all_ready: bool,
    /// The overlay must be one connected component.
    pub connected: bool,
    /// Least neighbours every node must have; 0 disables the check.
    pub min_degree: usize,
    /// Most neighbours any node may have, if bounded.
    pub max_degree: Option<usize>,
    /// Every node must know every other live node.
    pub full_membership: bool,
}

impl FormationChecks {
    /// What the formed overlay must look like, in the form the checks evaluate.
    pub fn expectation(&self) -> FormationExpectation {
        FormationExpectation {
            all_ready: self.all_ready,
            connected: self.connected,
            components: None,
            min_degree: Some(self.min_degree).filter(|d| *d > 0),
            max_degree: self.max_degree,
            full_membership: self.full_membership,
            component_membership: false,
        }
    }
}

/// What a formed overlay must look like: the formation checks of `checks.formation` and of a
/// scenario's `expect` steps, declared once.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FormationExpectation {
    /// Every node's `/ready` must answer 200.
    pub all_ready: bool,
    /// The overlay must be one connected component.
    pub connected: bool,
    /// Exactly this many connected components over the answering nodes (a partition's
    /// halves, say); `connected` is the special case of one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<usize>,
    /// Least neighbours every node must have, if checked.
    pub min_degree: Option<usize>,
    /// Most neighbours any node may have, if checked.
    pub max_degree: Option<usize>,
    /// Every node's member ids equal the ids of all observed live nodes.
    pub full_membership: bool,
    /// Every node's member ids equal the ids of the nodes in its overlay component (each
    /// side of a partition knows exactly its side).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub component_membership: bool,
}

/// The broadcast check of `checks.broadcast`: messages injected after formation and how
/// they must spread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BroadcastChecks {
    /// How many messages to inject.
    pub count: usize,
    /// Node names or globs; each matches at least one node. Empty: nodes chosen with the seed.
    pub from: Vec<String>,
    /// How long each message may take to reach the nodes.
    #[serde(serialize_with = "serialize_duration")]
    pub deliver_within: Duration,
    /// Required delivery ratio in `0..=1`.
    pub reliability: f64,
}

impl Topology {
    /// Total number of nodes, genesis included.
    pub fn node_count(&self) -> usize {
        self.all_groups().map(|g| g.count).sum()
    }

    /// Node names in start order: `genesis-0..`, then `<group>-<i>` group by group.
    pub fn node_names(&self) -> Vec<String> {
        self.all_groups()
            .flat_map(|g| (0..g.count).map(move |i| node_name(&g.name, i)))
            .collect()
    }

    /// The genesis group, then the peer groups, in start order.
    pub fn all_groups(&self) -> impl Iterator<Item = &Group> {
        std::iter::once(&self.genesis).chain(&self.groups)
    }

    /// The host of node `index` of `group` (see [`Placement`]); `None` without hosts.
    /// The one definition of placement: the plan, the scenario and the lab all ask here.
    pub fn host_of<'a>(&'a self, group: &'a Group, index: usize) -> Option<&'a str> {
        match group.host.as_ref()? {
            Placement::On(host) => Some(host.as_str()),
            Placement::Spread => self
                .hosts
                .get(index % self.hosts.len().max(1))
                .map(|h| h.name.as_str()),
        }
    }

    /// Names of the nodes placed on `host`, in start order.
    pub fn nodes_on(&self, host: &str) -> Vec<String> {
        self.all_groups()
            .flat_map(|g| (0..g.count).map(move |i| (g, i)))
            .filter(|(g, i)| self.host_of(g, *i) == Some(host))
            .map(|(g, i)| node_name(&g.name, i))
            .collect()
    }
}

/// Name of the `index`-th node of `group`: `genesis-0`, `peers-3`.
pub fn node_name(group: &str, index: usize) -> String {
    format!("{group}-{index}")
}

/// A duration as the shortest exact humantime text without spaces (`3s`, `1500ms`), so it
/// stays a single shell word in flags and compose files.
pub fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_nanos().is_multiple_of(1_000) {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&duration_text(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_text_round_trips_through_humantime() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(3),
            Duration::from_millis(1500),
            Duration::from_micros(2500),
            Duration::from_nanos(7),
        ] {
            let text = duration_text(d);
            assert!(!text.contains(' '), "{text}");
            assert_eq!(humantime::parse_duration(&text).unwrap(), d);
        }
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
    }
}
