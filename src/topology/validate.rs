//! Semantic validation: turns a parsed [`TopologyFile`] into a [`Topology`], reporting every
//! problem (not just the first) at the location of the value that causes it.

use std::collections::HashSet;
use std::time::Duration;

use serde_saphyr::Location;

use super::diagnostic::{Sink, TopologyError};
use super::file::{
    BroadcastFile, ChecksFile, DurationText, FormationFile, GenesisFile, GroupFile, NetworkFile,
    SettingsFile, Spanned, TopologyFile,
};
use super::model::{
    BroadcastChecks, Checks, FormationChecks, GENESIS, Group, Network, NodeSettings, Topology,
    node_name,
};

/// Longest name accepted, so that `<topology>-<hex>-<group>-<index>` stays a valid
/// container/host name (63 characters).
const MAX_NAME_LEN: usize = 24;

pub(crate) fn validate(file: TopologyFile, label: &str) -> Result<Topology, TopologyError> {
    let mut sink = Sink::new(label);
    let s = &mut sink;

    check_name(s, &file.name, "name", "topology name");
    let image = match &file.image {
        Some(image) if image.value.trim().is_empty() => {
            s.report(image.at, "image", "is empty; expected an image reference such as `peerlab:0.1.0`, or remove the key to use the default");
            crate::DEFAULT_IMAGE.to_string()
        }
        Some(image) => image.value.clone(),
        None => crate::DEFAULT_IMAGE.to_string(),
    };

    let networks = networks(s, file.networks.as_ref());
    let declared: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();

    let group_files: &[GroupFile] = file.groups.as_ref().map_or(&[], |g| &g.value);
    let total = file.genesis.value.count.value as usize
        + group_files
            .iter()
            .map(|g| g.count.value as usize)
            .sum::<usize>();

    let layers = Layers::new(s, file.defaults.as_ref(), total);
    let genesis = genesis(s, &file.genesis.value, &layers, &declared);
    let groups = groups(s, group_files, &layers, &declared);
    reachability(s, &file, &genesis, &groups);

    let mut topology = Topology {
        name: file.name.value.clone(),
        seed: file.seed.as_ref().map_or(0, |seed| seed.value),
        image,
        genesis,
        groups,
        networks,
        checks: Checks {
            formation: FormationChecks {
                within: Duration::ZERO,
                all_ready: true,
                connected: true,
                min_degree: 0,
                max_degree: None,
                full_membership: true,
            },
            broadcast: None,
        },
    };
    let names = topology.node_names();
    topology.checks = checks(
        s,
        file.checks.as_ref().map(|c| &c.value),
        total,
        &names,
        &topology,
    );

    if let Some(scenario) = &file.scenario
        && !scenario.value.is_empty()
    {
        s.report(
            scenario.at,
            "scenario",
            "fault scenarios are not supported yet; expected an empty list (`scenario: []`) or no `scenario` key",
        );
    }

    sink.into_result(topology)
}

/// Checks a name used in node, container and network names.
fn check_name(s: &mut Sink, name: &Spanned<String>, path: &str, what: &str) {
    let value = &name.value;
    let problem = if value.is_empty() {
        Some("is empty".to_string())
    } else if value.len() > MAX_NAME_LEN {
        Some(format!(
            "`{value}` has {} characters, too long for container names",
            value.len()
        ))
    } else if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        Some(format!("`{value}` contains {bad:?}"))
    } else if value.starts_with('-') || value.ends_with('-') {
        Some(format!("`{value}` starts or ends with `-`"))
    } else {
        None
    };
    if let Some(problem) = problem {
        s.report(
            name.at,
            path,
            format!(
                "{problem}; expected a {what} of 1 to {MAX_NAME_LEN} lowercase letters, digits and `-` (not first or last), e.g. `quick-start`"
            ),
        );
    }
}

fn duration(s: &mut Sink, text: &Spanned<DurationText>, path: &str) -> Option<Duration> {
    match humantime::parse_duration(text.value.0.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            s.report(
                text.at,
                path,
                format!(
                    "`{}` is not a duration ({e}); expected a number with a unit such as `500ms`, `3s` or `1m 30s`",
                    text.value.0
                ),
            );
            None
        }
    }
}

fn networks(s: &mut Sink, file: Option<&Spanned<Vec<NetworkFile>>>) -> Vec<Network> {
    let Some(file) = file else {
        return Vec::new();
    };
    let mut out: Vec<Network> = Vec::new();
    let mut parsed: Vec<(ipnet::IpNet, String)> = Vec::new();
    for (i, net) in file.value.iter().enumerate() {
        let path = format!("networks[{i}]");
        check_name(s, &net.name, &format!("{path}.name"), "network name");
        if out.iter().any(|n| n.name == net.name.value) {
            s.report(
                net.name.at,
                format!("{path}.name"),
                format!(
                    "network `{}` is declared twice; expected unique network names",
                    net.name.value
                ),
            );
        }
        let subnet = net
            .subnet
            .as_ref()
            .and_then(|subnet| self::subnet(s, subnet, &format!("{path}.subnet"), &parsed));
        if let Some(subnet) = subnet {
            parsed.push((subnet, net.name.value.clone()));
        }
        out.push(Network {
            name: net.name.value.clone(),
            subnet: subnet.map(|n| n.to_string()),
        });
    }
    out
}

/// Parses a CIDR; it must name a network (no host bits) that overlaps no earlier one, as
/// Docker refuses both.
fn subnet(
    s: &mut Sink,
    text: &Spanned<String>,
    path: &str,
    earlier: &[(ipnet::IpNet, String)],
) -> Option<ipnet::IpNet> {
    let net: ipnet::IpNet = match text.value.trim().parse() {
        Ok(net) => net,
        Err(_) => {
            s.report(
                text.at,
                path,
                format!(
                    "`{}` is not a CIDR subnet; expected an address and prefix length such as `10.77.1.0/24`",
                    text.value
                ),
            );
            return None;
        }
    };
    if net.trunc() != net {
        s.report(
            text.at,
            path,
            format!(
                "`{net}` has host bits set; expected the network address `{}`",
                net.trunc()
            ),
        );
        return None;
    }
    if let Some((_, other)) = earlier
        .iter()
        .find(|(other, _)| other.contains(&net) || net.contains(other))
    {
        s.report(
            text.at,
            path,
            format!("`{net}` overlaps the subnet of network `{other}`; expected disjoint subnets"),
        );
    }
    Some(net)
}

fn network_refs(
    s: &mut Sink,
    refs: Option<&Vec<Spanned<String>>>,
    path: &str,
    declared: &[&str],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, name) in refs.into_iter().flatten().enumerate() {
        let item = format!("{path}[{i}]");
        if !declared.contains(&name.value.as_str()) {
            let expected = if declared.is_empty() {
                "no networks are declared; add it under `networks:` or remove this list".to_string()
            } else {
                format!("expected one of: {}", declared.join(", "))
            };
            s.report(
                name.at,
                item,
                format!("unknown network `{}`; {expected}", name.value),
            );
        } else if out.contains(&name.value) {
            s.report(
                name.at,
                item,
                format!(
                    "network `{}` is listed twice; expected each network once",
                    name.value
                ),
            );
        } else {
            out.push(name.value.clone());
        }
    }
    out
}

fn genesis(s: &mut Sink, file: &GenesisFile, layers: &Layers, declared: &[&str]) -> Group {
    if file.count.value == 0 {
        s.report(
            file.count.at,
            "genesis.count",
            "0 genesis nodes leaves nothing to join; expected at least 1",
        );
    }
    Group {
        name: GENESIS.to_string(),
        count: file.count.value as usize,
        start_delay: Duration::ZERO,
        stagger: Duration::ZERO,
        settings: layers.resolve(s, file.settings.as_ref(), "genesis.settings"),
        networks: network_refs(s, file.networks.as_ref(), "genesis.networks", declared),
    }
}

fn groups(s: &mut Sink, files: &[GroupFile], layers: &Layers, declared: &[&str]) -> Vec<Group> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let path = format!("groups[{i}]");
        let name = file.name.value.as_str();
        check_name(s, &file.name, &format!("{path}.name"), "group name");
        if name == GENESIS {
            s.report(
                file.name.at,
                format!("{path}.name"),
                "`genesis` is reserved for the genesis nodes; expected another group name",
            );
        } else if !seen.insert(name) {
            s.report(
                file.name.at,
                format!("{path}.name"),
                format!("group `{name}` is declared twice; expected unique group names"),
            );
        }
        let start_delay = file
            .start_delay
            .as_ref()
            .and_then(|d| duration(s, d, &format!("{path}.start_delay")));
        let stagger = file
            .stagger
            .as_ref()
            .and_then(|d| duration(s, d, &format!("{path}.stagger")));
        out.push(Group {
            name: name.to_string(),
            count: file.count.value as usize,
            start_delay: start_delay.unwrap_or_default(),
            stagger: stagger.unwrap_or_default(),
            settings: layers.resolve(s, file.settings.as_ref(), &format!("{path}.settings")),
            networks: network_refs(
                s,
                file.networks.as_ref(),
                &format!("{path}.networks"),
                declared,
            ),
        });
    }
    out
}

/// Peers join through a genesis node, so every group must share a network with the genesis,
/// and a declared network nobody is attached to is almost certainly a typo elsewhere.
fn reachability(s: &mut Sink, file: &TopologyFile, genesis: &Group, groups: &[Group]) {
    let on = |g: &Group, net: &str| {
        if g.networks.is_empty() {
            net.is_empty()
        } else {
            g.networks.iter().any(|n| n == net)
        }
    };
    let genesis_nets: Vec<&str> = if genesis.networks.is_empty() {
        vec![""]
    } else {
        genesis.networks.iter().map(String::as_str).collect()
    };
    let describe = |nets: &[String]| {
        if nets.is_empty() {
            "the default network".to_string()
        } else {
            nets.join(", ")
        }
    };
    for (i, (group, group_file)) in groups
        .iter()
        .zip(file.groups.iter().flat_map(|g| &g.value))
        .enumerate()
    {
        if group.count == 0 || genesis_nets.iter().any(|n| on(group, n)) {
            continue;
        }
        let (at, path) = match group_file.networks.as_ref().and_then(|n| n.first()) {
            Some(first) => (first.at, format!("groups[{i}].networks")),
            None => (group_file.name.at, format!("groups[{i}]")),
        };
        s.report(
            at,
            path,
            format!(
                "group `{}` (on {}) shares no network with the genesis nodes (on {}), so it could not join; expected at least one of the genesis networks",
                group.name,
                describe(&group.networks),
                describe(&genesis.networks)
            ),
        );
    }
    for (i, net) in file.networks.iter().flat_map(|n| &n.value).enumerate() {
        let name = net.name.value.as_str();
        if !on(genesis, name) && !groups.iter().any(|g| on(g, name)) {
            s.report(
                net.name.at,
                format!("networks[{i}].name"),
                format!(
                    "no node is attached to network `{name}`; expected it in some `networks:` list of the genesis or a group, or remove it"
                ),
            );
        }
    }
}

/// A setting's value with the place it was written, to report conflicts where they arise.
#[derive(Clone)]
struct Set<T> {
    value: T,
    at: Location,
    path: String,
}

/// Settings written at one level (`defaults`, or a group's `settings`), durations parsed.
#[derive(Clone, Default)]
struct Layer {
    degree: Option<Set<u32>>,
    max_peers: Option<Set<u32>>,
    max_connections: Option<Set<usize>>,
    heartbeat_interval: Option<Set<Duration>>,
    heartbeat_timeout: Option<Set<Duration>>,
    suspect_timeout: Option<Set<Duration>>,
}

impl Layer {
    fn parse(s: &mut Sink, file: &SettingsFile, base: &str) -> Layer {
        fn plain<T: Copy>(v: &Option<Spanned<T>>, path: String) -> Option<Set<T>> {
            v.as_ref().map(|v| Set {
                value: v.value,
                at: v.at,
                path,
            })
        }
        let mut time = |v: &Option<Spanned<DurationText>>, key: &str| {
            let path = format!("{base}.{key}");
            let d = v.as_ref()?;
            let value = duration(s, d, &path)?;
            Some(Set {
                value,
                at: d.at,
                path,
            })
        };
        Layer {
            heartbeat_interval: time(&file.heartbeat_interval, "heartbeat_interval"),
            heartbeat_timeout: time(&file.heartbeat_timeout, "heartbeat_timeout"),
            suspect_timeout: time(&file.suspect_timeout, "suspect_timeout"),
            degree: plain(&file.degree, format!("{base}.degree")),
            max_peers: plain(&file.max_peers, format!("{base}.max_peers")),
            max_connections: plain(&file.max_connections, format!("{base}.max_connections")),
        }
    }

    /// `self` where set, else `under`.
    fn over(&self, under: &Layer) -> Layer {
        Layer {
            degree: self.degree.clone().or_else(|| under.degree.clone()),
            max_peers: self.max_peers.clone().or_else(|| under.max_peers.clone()),
            max_connections: self
                .max_connections
                .clone()
                .or_else(|| under.max_connections.clone()),
            heartbeat_interval: self
                .heartbeat_interval
                .clone()
                .or_else(|| under.heartbeat_interval.clone()),
            heartbeat_timeout: self
                .heartbeat_timeout
                .clone()
                .or_else(|| under.heartbeat_timeout.clone()),
            suspect_timeout: self
                .suspect_timeout
                .clone()
                .or_else(|| under.suspect_timeout.clone()),
        }
    }
}

/// Built-in defaults and the topology's `defaults`, under which each group's settings sit.
struct Layers {
    defaults: Layer,
    /// Built-in settings; the degree is capped so small topologies work without settings.
    built_in: NodeSettings,
    total: usize,
}

impl Layers {
    fn new(s: &mut Sink, defaults: Option<&Spanned<SettingsFile>>, total: usize) -> Layers {
        let mut built_in = NodeSettings::BUILT_IN;
        built_in.degree = built_in.degree.min(others(total) as u32).max(1);
        let layers = Layers {
            defaults: defaults
                .map_or_else(Layer::default, |d| Layer::parse(s, &d.value, "defaults")),
            built_in,
            total,
        };
        // Problems in `defaults` are reported once, at `defaults`, not once per group.
        layers.check(s, &layers.defaults, &layers.defaults);
        layers
    }

    /// Effective settings of a group whose own settings are `own` (at `base`).
    fn resolve(
        &self,
        s: &mut Sink,
        own: Option<&Spanned<SettingsFile>>,
        base: &str,
    ) -> NodeSettings {
        let own = own.map_or_else(Layer::default, |o| Layer::parse(s, &o.value, base));
        let effective = own.over(&self.defaults);
        self.check(s, &own, &effective);
        let b = &self.built_in;
        NodeSettings {
            degree: effective.degree.map_or(b.degree, |v| v.value),
            max_peers: effective.max_peers.map_or(b.max_peers, |v| v.value),
            max_connections: effective
                .max_connections
                .map_or(b.max_connections, |v| v.value),
            heartbeat_interval: effective
                .heartbeat_interval
                .map_or(b.heartbeat_interval, |v| v.value),
            heartbeat_timeout: effective
                .heartbeat_timeout
                .map_or(b.heartbeat_timeout, |v| v.value),
            suspect_timeout: effective
                .suspect_timeout
                .map_or(b.suspect_timeout, |v| v.value),
        }
    }

    /// Reports problems involving at least one value written in `own`; `effective` is `own`
    /// over the defaults.
    fn check(&self, s: &mut Sink, own: &Layer, effective: &Layer) {
        let others = others(self.total);
        if let Some(degree) = &own.degree {
            if degree.value == 0 {
                s.report(
                    degree.at,
                    &degree.path,
                    "0 neighbours would leave the node alone; expected at least 1",
                );
            } else if degree.value as usize > others {
                s.report(
                    degree.at,
                    &degree.path,
                    format!(
                        "{} is more than the {others} other nodes; expected at most {others}",
                        degree.value
                    ),
                );
            }
        }
        if let Some(max_peers) = &own.max_peers
            && max_peers.value < 2
        {
            s.report(
                max_peers.at,
                &max_peers.path,
                format!(
                    "{} is too few links to take part in the overlay; expected at least 2",
                    max_peers.value
                ),
            );
        }
        let degree = effective
            .degree
            .as_ref()
            .map_or(self.built_in.degree, |d| d.value);
        let max_peers = effective
            .max_peers
            .as_ref()
            .map_or(self.built_in.max_peers, |m| m.value);
        if max_peers < degree {
            if let Some(m) = &own.max_peers {
                s.report(
                    m.at,
                    &m.path,
                    format!(
                        "{max_peers} is less than the degree {degree}; expected at least {degree}"
                    ),
                );
            } else if let Some(d) = &own.degree {
                s.report(
                    d.at,
                    &d.path,
                    format!(
                        "{degree} is more than max_peers ({max_peers}); expected at most {max_peers}, or raise max_peers"
                    ),
                );
            }
        }
        for d in [&own.heartbeat_interval, &own.suspect_timeout]
            .into_iter()
            .flatten()
        {
            if d.value.is_zero() {
                s.report(
                    d.at,
                    &d.path,
                    "0s is not a usable period; expected more than 0s",
                );
            }
        }
        let interval = effective
            .heartbeat_interval
            .as_ref()
            .map_or(self.built_in.heartbeat_interval, |v| v.value);
        let timeout = effective
            .heartbeat_timeout
            .as_ref()
            .map_or(self.built_in.heartbeat_timeout, |v| v.value);
        if timeout <= interval && !interval.is_zero() {
            let text = super::model::duration_text;
            if let Some(t) = &own.heartbeat_timeout {
                s.report(
                    t.at,
                    &t.path,
                    format!(
                        "{} would drop links between two heartbeats; expected more than the heartbeat_interval {}",
                        text(timeout),
                        text(interval)
                    ),
                );
            } else if let Some(i) = &own.heartbeat_interval {
                s.report(
                    i.at,
                    &i.path,
                    format!(
                        "{} is not shorter than the heartbeat_timeout {}; expected less than {}",
                        text(interval),
                        text(timeout),
                        text(timeout)
                    ),
                );
            }
        }
    }
}

/// How many other nodes each node can link to.
fn others(total: usize) -> usize {
    total.saturating_sub(1)
}

fn checks(
    s: &mut Sink,
    file: Option<&ChecksFile>,
    total: usize,
    names: &[String],
    topology: &Topology,
) -> Checks {
    let formation_file = file.and_then(|f| f.formation.as_ref());
    let formation = formation(s, formation_file.map(|f| &f.value), total);
    let broadcast = file
        .and_then(|f| f.broadcast.as_ref())
        .map(|b| broadcast(s, &b.value, names, topology));
    Checks {
        formation,
        broadcast,
    }
}

fn formation(s: &mut Sink, file: Option<&FormationFile>, total: usize) -> FormationChecks {
    let empty = FormationFile::default();
    let file = file.unwrap_or(&empty);
    let base = "checks.formation";
    let within = file
        .within
        .as_ref()
        .and_then(|w| {
            let d = duration(s, w, &format!("{base}.within"))?;
            if d.is_zero() {
                s.report(
                    w.at,
                    format!("{base}.within"),
                    "0s leaves no time to form; expected a deadline such as `30s`",
                );
            }
            Some(d)
        })
        .unwrap_or(Duration::from_secs(30));
    let others = others(total);
    let min_degree = file.min_degree.as_ref();
    let max_degree = file.max_degree.as_ref();
    if let Some(min) = min_degree
        && min.value as usize > others
    {
        s.report(
            min.at,
            format!("{base}.min_degree"),
            format!(
                "{} is more than the {others} other nodes; expected at most {others}",
                min.value
            ),
        );
    }
    if let (Some(min), Some(max)) = (min_degree, max_degree)
        && min.value > max.value
    {
        s.report(
            min.at,
            format!("{base}.min_degree"),
            format!(
                "{} is more than max_degree {}; expected at most {}",
                min.value, max.value, max.value
            ),
        );
    }
    FormationChecks {
        within,
        all_ready: file.all_ready.as_ref().is_none_or(|v| v.value),
        connected: file.connected.as_ref().is_none_or(|v| v.value),
        min_degree: min_degree.map_or(others.min(1), |v| v.value as usize),
        max_degree: max_degree.map(|v| v.value as usize),
        full_membership: file.full_membership.as_ref().is_none_or(|v| v.value),
    }
}

fn broadcast(
    s: &mut Sink,
    file: &BroadcastFile,
    names: &[String],
    topology: &Topology,
) -> BroadcastChecks {
    let base = "checks.broadcast";
    if let Some(count) = &file.count
        && count.value == 0
    {
        s.report(
            count.at,
            format!("{base}.count"),
            "0 messages would check nothing; expected at least 1, or remove `broadcast`",
        );
    }
    let mut from = Vec::new();
    for (i, pattern) in file.from.iter().flatten().enumerate() {
        let path = format!("{base}.from[{i}]");
        match glob::Pattern::new(&pattern.value) {
            Err(e) => s.report(
                pattern.at,
                path,
                format!(
                    "`{}` is not a valid glob ({e}); expected a node name or a pattern such as `peers-*`",
                    pattern.value
                ),
            ),
            Ok(glob) if !names.iter().any(|n| glob.matches(n)) => s.report(
                pattern.at,
                path,
                format!(
                    "`{}` names no node; expected a node name or glob matching {}",
                    pattern.value,
                    describe_nodes(topology)
                ),
            ),
            Ok(_) => from.push(pattern.value.clone()),
        }
    }
    let deliver_within = file
        .deliver_within
        .as_ref()
        .and_then(|d| {
            let value = duration(s, d, &format!("{base}.deliver_within"))?;
            if value.is_zero() {
                s.report(
                    d.at,
                    format!("{base}.deliver_within"),
                    "0s leaves no time to deliver; expected a deadline such as `5s`",
                );
            }
            Some(value)
        })
        .unwrap_or(Duration::from_secs(5));
    let reliability = file.reliability.as_ref().map_or(1.0, |r| {
        if !(0.0..=1.0).contains(&r.value) {
            s.report(
                r.at,
                format!("{base}.reliability"),
                format!(
                    "{} is not a ratio; expected a number from 0 to 1 (1.0: every node gets every message)",
                    r.value
                ),
            );
        }
        r.value
    });
    BroadcastChecks {
        count: file.count.as_ref().map_or(1, |c| c.value as usize),
        from,
        deliver_within,
        reliability,
    }
}

/// `genesis-0, peers-0..peers-3`: the node names, compactly, for error messages.
fn describe_nodes(topology: &Topology) -> String {
    let parts: Vec<String> = std::iter::once(&topology.genesis)
        .chain(&topology.groups)
        .filter(|g| g.count > 0)
        .map(|g| match g.count {
            1 => node_name(&g.name, 0),
            n => format!("{}..{}", node_name(&g.name, 0), node_name(&g.name, n - 1)),
        })
        .collect();
    if parts.is_empty() {
        "no nodes (the topology has none)".to_string()
    } else {
        parts.join(", ")
    }
}
