//! Semantic validation: turns a parsed [`TopologyFile`] into a [`Topology`], reporting every
//! problem (not just the first) at the location of the value that causes it.
//!
//! Each part of the file has its own checker: [`networks`], node [`settings`] and [`checks`];
//! this module walks the file and assembles the model.

mod checks;
mod hosts;
mod networks;
mod scenario;
mod settings;

use std::collections::HashSet;
use std::time::Duration;

use super::MAX_NODES;
use super::diagnostic::{Sink, TopologyError};
use super::file::{
    DurationText, GenesisFile, GroupFile, NetworkKeyText, Spanned, StartMode, TopologyFile,
};
use super::model::{
    Checks, FormationChecks, GENESIS, Group, Host, NetworkKeyMode, Placement, Topology,
};
use checks::checks;
use networks::{network_refs, networks, reachability};
use settings::Layers;

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
    let network_key = file.network_key.as_ref().and_then(|m| network_key(s, m));

    let networks = networks(s, file.networks.as_ref());
    let declared: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
    let hosts = hosts::hosts(s, file.hosts.as_ref());
    let places = Places {
        hosts: &hosts,
        declared: file.hosts.is_some(),
    };
    let links = hosts::links(s, file.links.as_ref(), &hosts, places.declared);

    let group_files: &[GroupFile] = file.groups.as_ref().map_or(&[], |g| &g.value);
    // Everything below sizes something by the counts (names, plans, timelines), so a
    // topology over the cap stops here, with what was found so far.
    let Some(total) = node_total(s, &file.genesis.value, group_files) else {
        return Err(TopologyError {
            diagnostics: sink.diagnostics,
        });
    };

    let layers = Layers::new(s, file.defaults.as_ref(), total);
    let genesis = genesis(s, &file.genesis.value, &layers, &declared, &places);
    let groups = groups(s, group_files, &layers, &declared, &places);
    reachability(s, &file, &genesis, &groups);

    let mut topology = Topology {
        name: file.name.value.clone(),
        seed: file.seed.as_ref().map_or(0, |seed| seed.value),
        image,
        network_key,
        genesis,
        groups,
        networks,
        hosts,
        links,
        scenario: Vec::new(),
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

    topology.scenario = scenario::scenario(s, file.scenario.as_ref(), &topology);

    sink.into_result(topology)
}

/// `network_key:`: one of the two modes. Anything else is reported without its value: a
/// value that is not a mode is most likely the secret itself, pasted where it does not
/// belong, and diagnostics end up in terminals, CI logs and issue reports.
fn network_key(s: &mut Sink, mode: &Spanned<NetworkKeyText>) -> Option<NetworkKeyMode> {
    match mode.value.0.trim() {
        "per-run" => Some(NetworkKeyMode::PerRun),
        "from-env" => Some(NetworkKeyMode::FromEnv),
        _ => {
            s.report(
                mode.at,
                "network_key",
                "is not a network key mode (the value is not repeated here: it may be a secret); expected `per-run` (a fresh key for each run) or `from-env` (the key in PEERLAB_NETWORK_KEY of peerlab's environment). The key itself never goes in a topology file, which is checked in and shared",
            );
            None
        }
    }
}

/// The number of nodes, or `None` (reported at the `count` that goes over) when the
/// genesis and the groups together declare more than [`MAX_NODES`]. Summed in `u64`: a
/// few `count: 4294967295` cannot overflow it.
fn node_total(s: &mut Sink, genesis: &GenesisFile, groups: &[GroupFile]) -> Option<usize> {
    let counts = std::iter::once((&genesis.count, "genesis.count".to_string())).chain(
        groups
            .iter()
            .enumerate()
            .map(|(i, g)| (&g.count, format!("groups[{i}].count"))),
    );
    let mut total: u64 = 0;
    for (count, path) in counts {
        let before = total;
        total += u64::from(count.value);
        if total > MAX_NODES as u64 {
            let left = MAX_NODES as u64 - before;
            s.report(
                count.at,
                path,
                format!(
                    "{} nodes bring the topology to {total} nodes, over the limit of {MAX_NODES} nodes per topology (genesis and every group together; a node keeps at most {MAX_NODES} members); expected at most {left} here",
                    count.value
                ),
            );
            return None;
        }
    }
    usize::try_from(total).ok()
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

/// The declared hosts, for the placement of the genesis and the groups.
struct Places<'a> {
    hosts: &'a [Host],
    /// `hosts:` is in the file (even if empty or wrong), so `host:` keys are meaningful.
    declared: bool,
}

impl Places<'_> {
    fn place(&self, s: &mut Sink, host: Option<&Spanned<String>>, path: &str) -> Option<Placement> {
        hosts::placement(s, host, path, self.hosts, self.declared)
    }
}

fn genesis(
    s: &mut Sink,
    file: &GenesisFile,
    layers: &Layers,
    declared: &[&str],
    places: &Places,
) -> Group {
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
        manual: false,
        host: places.place(s, file.host.as_ref(), "genesis.host"),
    }
}

fn groups(
    s: &mut Sink,
    files: &[GroupFile],
    layers: &Layers,
    declared: &[&str],
    places: &Places,
) -> Vec<Group> {
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
            manual: file
                .start
                .as_ref()
                .is_some_and(|m| m.value == StartMode::Manual),
            host: places.place(s, file.host.as_ref(), &format!("{path}.host")),
        });
    }
    out
}

/// How many other nodes each node can link to.
fn others(total: usize) -> usize {
    total.saturating_sub(1)
}
