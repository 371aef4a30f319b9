//! A topology written in code, for tests that do not want a YAML file next to them.
//!
//! The builder renders what it was given as a topology document and loads it through the
//! same parser and validation as a file ([`crate::topology::parse_str`]), so a topology
//! built here obeys exactly the rules of `docs/topology.md` and its errors read the same.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::LabError;
use crate::contract::LinkShape;
use crate::topology::{NetworkKeyMode, NodeSettings, Topology, duration_text, parse_str};

/// A group of identical peers for [`TopologyBuilder::group`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    name: String,
    count: usize,
    start_delay: Option<Duration>,
    stagger: Option<Duration>,
    settings: Option<NodeSettings>,
    manual: bool,
    host: Option<String>,
}

impl GroupSpec {
    /// `count` peers named `<name>-0`, `<name>-1`, ...
    pub fn new(name: impl Into<String>, count: usize) -> Self {
        GroupSpec {
            name: name.into(),
            count,
            start_delay: None,
            stagger: None,
            settings: None,
            manual: false,
            host: None,
        }
    }

    /// Start the group this long after the run starts.
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = Some(delay);
        self
    }

    /// Start the group's nodes this far apart.
    pub fn stagger(mut self, stagger: Duration) -> Self {
        self.stagger = Some(stagger);
        self
    }

    /// Node settings of this group (instead of the topology's defaults).
    pub fn settings(mut self, settings: NodeSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Do not start the group with the run; [`super::Lab::join`] starts its nodes.
    pub fn manual(mut self) -> Self {
        self.manual = true;
        self
    }

    /// Place the group's nodes on this host of [`TopologyBuilder::host`] (or `"spread"`,
    /// the default when the topology has hosts: round-robin over them).
    pub fn on_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }
}

impl From<(&str, usize)> for GroupSpec {
    fn from((name, count): (&str, usize)) -> Self {
        GroupSpec::new(name, count)
    }
}

/// Builds a [`Topology`] in code; see the module docs. Only what is set is written, so
/// everything else takes the documented defaults.
///
/// ```
/// use std::time::Duration;
/// use peerlab::lab::{GroupSpec, TopologyBuilder};
///
/// let topology = TopologyBuilder::new("smoke")
///     .genesis(1)
///     .group(GroupSpec::new("peers", 4).stagger(Duration::from_millis(50)))
///     .formation_within(Duration::from_secs(20))
///     .build()
///     .expect("a valid topology");
/// assert_eq!(topology.node_count(), 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyBuilder {
    name: String,
    seed: Option<u64>,
    genesis: usize,
    defaults: Option<NodeSettings>,
    groups: Vec<GroupSpec>,
    within: Option<Duration>,
    min_degree: Option<usize>,
    broadcast: Option<(usize, Duration)>,
    hosts: Vec<String>,
    genesis_host: Option<String>,
    /// `(Some([a, b]), shape)` for a pair, `(None, shape)` for the default link.
    links: Vec<(Option<[String; 2]>, LinkShape)>,
    network_key: Option<NetworkKeyMode>,
}

impl TopologyBuilder {
    /// A topology named `name` (1 to 24 of `a-z`, `0-9`, `-`) with one genesis node.
    pub fn new(name: impl Into<String>) -> Self {
        TopologyBuilder {
            name: name.into(),
            seed: None,
            genesis: 1,
            defaults: None,
            groups: Vec::new(),
            within: None,
            min_degree: None,
            broadcast: None,
            hosts: Vec::new(),
            genesis_host: None,
            links: Vec::new(),
            network_key: None,
        }
    }

    /// Adds a host (`hosts:`): on `local` and `docker` emulated on this machine, with the
    /// links of [`TopologyBuilder::link`] between hosts; groups spread over the hosts
    /// unless placed with [`GroupSpec::on_host`].
    pub fn host(mut self, name: impl Into<String>) -> Self {
        self.hosts.push(name.into());
        self
    }

    /// Place the genesis nodes on this host (default: spread over the hosts).
    pub fn genesis_host(mut self, host: impl Into<String>) -> Self {
        self.genesis_host = Some(host.into());
        self
    }

    /// The link between hosts `a` and `b`, the same both ways; its `delay` is the one-way
    /// latency.
    pub fn link(mut self, a: impl Into<String>, b: impl Into<String>, shape: LinkShape) -> Self {
        self.links.push((Some([a.into(), b.into()]), shape));
        self
    }

    /// The link of every pair of hosts [`TopologyBuilder::link`] does not name.
    pub fn default_link(mut self, shape: LinkShape) -> Self {
        self.links.push((None, shape));
        self
    }

    /// `network_key:`: every node of a run must hold a network key to speak the protocol,
    /// drawn for each run ([`NetworkKeyMode::PerRun`]) or read from `PEERLAB_NETWORK_KEY`
    /// ([`NetworkKeyMode::FromEnv`]).
    pub fn network_key(mut self, mode: NetworkKeyMode) -> Self {
        self.network_key = Some(mode);
        self
    }

    /// The topology's seed (node randomness, scenario choices).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How many genesis nodes start the network (`genesis-0`, ...).
    pub fn genesis(mut self, count: usize) -> Self {
        self.genesis = count;
        self
    }

    /// Node settings of every node (a group's own settings override them). Start from
    /// [`NodeSettings::BUILT_IN`] and change what matters.
    pub fn node_settings(mut self, settings: NodeSettings) -> Self {
        self.defaults = Some(settings);
        self
    }

    /// Adds a peer group, started after the genesis nodes and the groups added before it:
    /// `.group(("peers", 4))` or `.group(GroupSpec::new("peers", 4).stagger(...))`.
    pub fn group(mut self, group: impl Into<GroupSpec>) -> Self {
        self.groups.push(group.into());
        self
    }

    /// The formation checks must hold this long after the first node started.
    pub fn formation_within(mut self, within: Duration) -> Self {
        self.within = Some(within);
        self
    }

    /// Every node must have at least this many neighbours to count as formed.
    pub fn min_degree(mut self, degree: usize) -> Self {
        self.min_degree = Some(degree);
        self
    }

    /// Adds the broadcast check: `count` broadcasts from nodes chosen with the seed, each
    /// delivered to every live node within `deliver_within`.
    pub fn broadcast_check(mut self, count: usize, deliver_within: Duration) -> Self {
        self.broadcast = Some((count, deliver_within));
        self
    }

    /// The topology document this builder describes (JSON, which is YAML too).
    pub fn to_document(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("name".into(), json!(self.name));
        if let Some(seed) = self.seed {
            doc.insert("seed".into(), json!(seed));
        }
        if let Some(mode) = self.network_key {
            doc.insert("network_key".into(), json!(mode.as_str()));
        }
        if let Some(defaults) = &self.defaults {
            doc.insert("defaults".into(), settings_value(defaults));
        }
        let mut genesis = json!({ "count": self.genesis });
        if let Some(host) = &self.genesis_host {
            genesis["host"] = json!(host);
        }
        doc.insert("genesis".into(), genesis);
        if !self.hosts.is_empty() {
            let hosts: Vec<Value> = self.hosts.iter().map(|h| json!({ "name": h })).collect();
            doc.insert("hosts".into(), Value::Array(hosts));
        }
        if !self.links.is_empty() {
            let links: Vec<Value> = self
                .links
                .iter()
                .map(|(pair, shape)| link_value(pair.as_ref(), shape))
                .collect();
            doc.insert("links".into(), Value::Array(links));
        }
        let groups: Vec<Value> = self.groups.iter().map(group_value).collect();
        if !groups.is_empty() {
            doc.insert("groups".into(), Value::Array(groups));
        }
        let mut formation = Map::new();
        if let Some(within) = self.within {
            formation.insert("within".into(), json!(duration_text(within)));
        }
        if let Some(degree) = self.min_degree {
            formation.insert("min_degree".into(), json!(degree));
        }
        let mut checks = Map::new();
        if !formation.is_empty() {
            checks.insert("formation".into(), Value::Object(formation));
        }
        if let Some((count, within)) = self.broadcast {
            checks.insert(
                "broadcast".into(),
                json!({ "count": count, "deliver_within": duration_text(within) }),
            );
        }
        if !checks.is_empty() {
            doc.insert("checks".into(), Value::Object(checks));
        }
        Value::Object(doc)
    }

    /// Validates the topology as if it were a file named `<name>.yaml`.
    pub fn build(&self) -> Result<Topology, LabError> {
        let text = serde_json::to_string_pretty(&self.to_document())
            .map_err(|e| LabError::State(format!("cannot render the topology: {e}")))?;
        Ok(parse_str(
            &text,
            &format!("{}.yaml (built in code)", self.name),
        )?)
    }
}

fn group_value(g: &GroupSpec) -> Value {
    let mut v = Map::new();
    v.insert("name".into(), json!(g.name));
    v.insert("count".into(), json!(g.count));
    if let Some(d) = g.start_delay {
        v.insert("start_delay".into(), json!(duration_text(d)));
    }
    if let Some(d) = g.stagger {
        v.insert("stagger".into(), json!(duration_text(d)));
    }
    if let Some(s) = &g.settings {
        v.insert("settings".into(), settings_value(s));
    }
    if g.manual {
        v.insert("start".into(), json!("manual"));
    }
    if let Some(host) = &g.host {
        v.insert("host".into(), json!(host));
    }
    Value::Object(v)
}

/// A `links:` entry: `between` a pair, or the `default`.
fn link_value(pair: Option<&[String; 2]>, shape: &LinkShape) -> Value {
    let mut v = Map::new();
    match pair {
        Some(pair) => v.insert("between".into(), json!(pair)),
        None => v.insert("default".into(), json!(true)),
    };
    v.insert("latency".into(), json!(duration_text(shape.delay)));
    v.insert("jitter".into(), json!(duration_text(shape.jitter)));
    v.insert("loss".into(), json!(shape.loss));
    if let Some(rate) = shape.rate {
        v.insert("bandwidth".into(), json!(format!("{rate}B")));
    }
    Value::Object(v)
}

fn settings_value(s: &NodeSettings) -> Value {
    let mut v = json!({
        "degree": s.degree,
        "max_peers": s.max_peers,
        "max_connections": s.max_connections,
        "heartbeat_interval": duration_text(s.heartbeat_interval),
        "heartbeat_timeout": duration_text(s.heartbeat_timeout),
        "suspect_timeout": duration_text(s.suspect_timeout),
    });
    if let Some(r) = s.resources {
        let mut resources = serde_json::Map::new();
        if let Some(cpu) = r.cpu_millis {
            resources.insert("cpu".into(), json!(format!("{cpu}m")));
        }
        if let Some(memory) = r.memory_bytes {
            resources.insert("memory".into(), json!(memory));
        }
        v["resources"] = Value::Object(resources);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Placement;

    #[test]
    fn a_built_topology_is_validated_like_a_file() {
        let t = TopologyBuilder::new("smoke")
            .seed(7)
            .genesis(2)
            .node_settings(NodeSettings {
                degree: 2,
                ..NodeSettings::BUILT_IN
            })
            .group(("peers", 3))
            .group(GroupSpec::new("late", 2).manual())
            .formation_within(Duration::from_secs(12))
            .min_degree(1)
            .broadcast_check(2, Duration::from_secs(4))
            .build()
            .expect("valid");
        assert_eq!(t.name, "smoke");
        assert_eq!(t.seed, 7);
        assert_eq!(t.node_count(), 7);
        assert_eq!(t.genesis.settings.degree, 2);
        assert!(t.groups[1].manual);
        assert_eq!(t.checks.formation.within, Duration::from_secs(12));
        assert_eq!(t.checks.formation.min_degree, 1);
        let bc = t.checks.broadcast.expect("broadcast check");
        assert_eq!((bc.count, bc.deliver_within), (2, Duration::from_secs(4)));
    }

    #[test]
    fn hosts_links_and_placement_are_written_as_a_file_would() {
        let ms = Duration::from_millis;
        let far = LinkShape {
            delay: ms(80),
            jitter: ms(10),
            loss: 0.001,
            rate: Some(125_000),
        };
        let t = TopologyBuilder::new("hosts")
            .host("eu")
            .host("us")
            .host("asia")
            .genesis_host("eu")
            .link("eu", "asia", far)
            .default_link(LinkShape {
                delay: ms(40),
                ..LinkShape::default()
            })
            .group(GroupSpec::new("peers", 3))
            .group(GroupSpec::new("edge", 2).on_host("asia"))
            .build()
            .expect("valid");
        let hosts: Vec<&str> = t.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(hosts, ["eu", "us", "asia"]);
        assert_eq!(t.genesis.host, Some(Placement::On("eu".into())));
        assert_eq!(t.groups[0].host, Some(Placement::Spread));
        assert_eq!(t.groups[1].host, Some(Placement::On("asia".into())));
        assert_eq!(
            t.links.between("asia", "eu").map(LinkShape::from),
            Some(far)
        );
        assert_eq!(t.links.between("us", "asia").map(|s| s.delay), Some(ms(40)));
        let err = TopologyBuilder::new("hosts")
            .host("eu")
            .group(GroupSpec::new("peers", 1).on_host("mars"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("unknown host `mars`"), "{err}");
    }

    #[test]
    fn a_bad_name_is_reported_as_a_topology_error() {
        let err = TopologyBuilder::new("Not Valid").build().unwrap_err();
        assert!(matches!(err, LabError::Topology(_)), "{err}");
        assert!(err.is_bad_input());
    }
}
