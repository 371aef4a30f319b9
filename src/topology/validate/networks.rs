//! Networks: names, subnets, references from groups, and whether peers can reach a genesis.

use crate::topology::diagnostic::Sink;
use crate::topology::file::{NetworkFile, Spanned, TopologyFile};
use crate::topology::model::{Group, Network};

use super::check_name;

pub(super) fn networks(s: &mut Sink, file: Option<&Spanned<Vec<NetworkFile>>>) -> Vec<Network> {
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

pub(super) fn network_refs(
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

/// Peers join through a genesis node, so every group must share a network with the genesis,
/// and a declared network nobody is attached to is almost certainly a typo elsewhere.
pub(super) fn reachability(s: &mut Sink, file: &TopologyFile, genesis: &Group, groups: &[Group]) {
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
