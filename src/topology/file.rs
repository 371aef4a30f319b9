//! The topology file exactly as written: every value keeps where it came from.
//!
//! These types only describe the YAML syntax (and, through schemars, the JSON Schema that
//! editors use). Nothing here is checked beyond types; [`super::validate`] turns a
//! [`TopologyFile`] into the resolved [`super::Topology`] and reports every semantic problem
//! at the line and column of the offending value, which is why every field is [`Spanned`].

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Location;

use super::scenario_file::StepFile;

/// A value with the location of its YAML node, so that validation can point at it.
///
/// A local wrapper (rather than `serde_saphyr::Spanned` directly) so that the schema of
/// the file describes the plain value.
#[derive(Debug, Clone)]
pub(crate) struct Spanned<T> {
    pub value: T,
    pub at: Location,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Spanned {
            value: inner.value,
            at: inner.referenced,
        })
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A duration in humantime syntax (`500ms`, `3s`, `1m 30s`), parsed during validation so a
/// typo is reported with its location like any other problem.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct DurationText(pub String);

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration with a unit: `500ms`, `3s`, `1m 30s` (humantime syntax).",
            "examples": ["500ms", "3s"]
        })
    }
}

/// `network_key:` as written; checked during validation, so that a value that is not a
/// mode (a pasted secret, say) is reported at its line without being echoed.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct NetworkKeyText(pub String);

impl JsonSchema for NetworkKeyText {
    fn schema_name() -> Cow<'static, str> {
        "NetworkKeyMode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "enum": ["per-run", "from-env"],
            "description": "Where the network key comes from: `per-run` (a fresh random key each run) or `from-env` (`PEERLAB_NETWORK_KEY` in peerlab's environment). Never the key itself."
        })
    }
}

/// A whole topology file. See docs/topology.md for the meaning of every key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "peerlab topology",
    description = "A network run by `peerlab run FILE`: a genesis, groups of peers, their networks and the checks that prove the network formed."
)]
pub(crate) struct TopologyFile {
    /// Name of the topology: lowercase letters, digits and `-`; used in run ids and container names.
    pub name: Spanned<String>,
    /// Seed of node randomness and scenario choices (default 0). `peerlab run --seed` overrides it.
    #[serde(default)]
    pub seed: Option<Spanned<u64>>,
    /// Container image of the nodes (Docker runtime only). Default: the image built from this peerlab.
    #[serde(default)]
    pub image: Option<Spanned<String>>,
    /// A network-wide secret every node must hold to speak the protocol at all (default:
    /// none). `per-run`: a fresh random key for each run; `from-env`: the key in
    /// `PEERLAB_NETWORK_KEY` of peerlab's environment. Never the key itself: topology files
    /// are checked in.
    #[serde(default)]
    pub network_key: Option<Spanned<NetworkKeyText>>,
    /// Node settings applied to every node unless a group overrides them.
    #[serde(default)]
    pub defaults: Option<Spanned<SettingsFile>>,
    /// The nodes that start the network; every other node joins through them.
    pub genesis: Spanned<GenesisFile>,
    /// Groups of peers, started in order after the genesis.
    #[serde(default)]
    pub groups: Option<Spanned<Vec<GroupFile>>>,
    /// User-defined networks. None: every node sits on one default network.
    #[serde(default)]
    pub networks: Option<Spanned<Vec<NetworkFile>>>,
    /// Hosts the nodes are placed on: emulated on one machine by `local` and `docker`
    /// (shaped links between hosts, `partition: {host: ..}`), real swarm nodes on `swarm`.
    /// None: no hosts, no shaping.
    #[serde(default)]
    pub hosts: Option<Spanned<Vec<HostFile>>>,
    /// The network between hosts: one entry per pair of hosts (`between`), and at most one
    /// `default: true` entry for every pair not listed. Needs `hosts`.
    #[serde(default)]
    pub links: Option<Spanned<Vec<Spanned<LinkFile>>>>,
    /// What must hold for the run to pass.
    #[serde(default)]
    pub checks: Option<Spanned<ChecksFile>>,
    /// Fault steps played in order once the network formed (see docs/topology.md).
    #[serde(default)]
    pub scenario: Option<Spanned<Vec<Spanned<StepFile>>>>,
}

/// Settings of `peerlab node`; each maps to the flag of the same name.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsFile {
    /// `--degree`: neighbours each node tries to keep (default 4, at most the number of other nodes).
    #[serde(default)]
    pub degree: Option<Spanned<u32>>,
    /// `--max-peers`: most links a node keeps (default 16, at least `degree`).
    #[serde(default)]
    pub max_peers: Option<Spanned<u32>>,
    /// `--max-connections`: most inbound connections at once (default 128).
    #[serde(default)]
    pub max_connections: Option<Spanned<usize>>,
    /// `--heartbeat-interval`: how often a quiet link is pinged, or every whole
    /// number of intervals that fits in half the heartbeat timeout (default 500ms).
    #[serde(default)]
    pub heartbeat_interval: Option<Spanned<DurationText>>,
    /// `--heartbeat-timeout`: a link silent this long is dropped (default 1500ms).
    #[serde(default)]
    pub heartbeat_timeout: Option<Spanned<DurationText>>,
    /// `--suspect-timeout`: a suspect unreachable this long is declared dead (default 3s).
    #[serde(default)]
    pub suspect_timeout: Option<Spanned<DurationText>>,
    /// CPU and memory each node may use, e.g. `{cpu: 250m, memory: 64Mi}` (default:
    /// unlimited). Limits on `docker` and `swarm` and in the exports; requests and limits on
    /// Kubernetes; refused by `local`.
    #[serde(default)]
    pub resources: Option<Spanned<ResourcesFile>>,
}

/// `resources:` of node settings; each key may be given alone (the other stays as the
/// level below sets it).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourcesFile {
    /// CPUs: cores as a number (`0.5`, `2`) or thousandths with `m` (`250m`); at least `10m`.
    #[serde(default)]
    pub cpu: Option<Spanned<CpuQuantity>>,
    /// Memory: bytes, or a number with `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) or `k`, `M`,
    /// `G`, `T` (powers of 1000), e.g. `64Mi`; at least `6Mi`.
    #[serde(default)]
    pub memory: Option<Spanned<MemoryQuantity>>,
}

/// A quantity written as a YAML number or as text; checked during validation so a bad
/// value is reported with its location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Quantity {
    /// A plain number.
    Number(f64),
    /// Text such as `250m` or `64Mi`.
    Text(String),
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quantity such as `250m`, `0.5` or `64Mi`")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The CPU of `resources` (see [`ResourcesFile::cpu`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub(crate) struct CpuQuantity(pub Quantity);

impl JsonSchema for CpuQuantity {
    fn schema_name() -> Cow<'static, str> {
        "CpuQuantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "CPUs: cores as a number (`0.5`, `2`) or thousandths of a core with `m` (`250m`); at least `10m`.",
            "oneOf": [
                {"type": "number", "minimum": 0.01},
                {"type": "string", "pattern": "^\\s*([0-9]+m|[0-9]+(\\.[0-9]{1,3})?)\\s*$"}
            ],
            "examples": ["250m", 0.5]
        })
    }
}

/// The memory of `resources` (see [`ResourcesFile::memory`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub(crate) struct MemoryQuantity(pub Quantity);

impl JsonSchema for MemoryQuantity {
    fn schema_name() -> Cow<'static, str> {
        "MemoryQuantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Memory: bytes, or a whole number with `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) or `k`, `M`, `G`, `T` (powers of 1000); at least `6Mi`.",
            "oneOf": [
                {"type": "integer", "minimum": 6291456},
                {"type": "string", "pattern": "^\\s*[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?\\s*$"}
            ],
            "examples": ["64Mi", "1Gi"]
        })
    }
}

/// The genesis nodes, named `genesis-0`, `genesis-1`, ...
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenesisFile {
    /// How many genesis nodes (at least 1).
    pub count: Spanned<u32>,
    /// Node settings overriding `defaults` for the genesis nodes.
    #[serde(default)]
    pub settings: Option<Spanned<SettingsFile>>,
    /// Networks the genesis nodes are attached to (names from `networks`).
    #[serde(default)]
    pub networks: Option<Vec<Spanned<String>>>,
    /// A host name from `hosts`, or `spread` (round-robin over every host; the default
    /// when `hosts` exists).
    #[serde(default)]
    pub host: Option<Spanned<String>>,
}

/// A group of peers, named `<group>-0`, `<group>-1`, ...
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupFile {
    /// Unique group name (lowercase letters, digits, `-`; not `genesis`).
    pub name: Spanned<String>,
    /// How many peers (0 is allowed, e.g. to switch a group off).
    pub count: Spanned<u32>,
    /// When the group starts, counted from the start of the run (default 0s).
    #[serde(default)]
    pub start_delay: Option<Spanned<DurationText>>,
    /// Delay between two consecutive nodes of the group (default 0s).
    #[serde(default)]
    pub stagger: Option<Spanned<DurationText>>,
    /// Node settings overriding `defaults` for this group.
    #[serde(default)]
    pub settings: Option<Spanned<SettingsFile>>,
    /// Networks the group's nodes are attached to (names from `networks`).
    #[serde(default)]
    pub networks: Option<Vec<Spanned<String>>>,
    /// `auto` (default): started with the run; `manual`: started only by a scenario `join`.
    #[serde(default)]
    pub start: Option<Spanned<StartMode>>,
    /// A host name from `hosts`, or `spread`: node `i` of the group goes to host
    /// `i mod hosts` in the order of `hosts` (the default when `hosts` exists).
    #[serde(default)]
    pub host: Option<Spanned<String>>,
}

/// When a group's nodes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StartMode {
    Auto,
    Manual,
}

/// A user-defined network.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkFile {
    /// Unique network name (lowercase letters, digits, `-`).
    pub name: Spanned<String>,
    /// CIDR such as `10.77.1.0/24`. Default: chosen by the runtime.
    #[serde(default)]
    pub subnet: Option<Spanned<String>>,
}

/// A host of the topology: a machine on `swarm`, emulated on `local` and `docker`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostFile {
    /// Unique host name (lowercase letters, digits, `-`; not `spread`), as groups, links
    /// and `partition: {host: ..}` name it.
    pub name: Spanned<String>,
    /// `swarm` only: the swarm node this host is, by the value of its `peerlab.host` node
    /// label or by its hostname (default: the host's name). Ignored where hosts are emulated.
    #[serde(default)]
    pub label: Option<Spanned<String>>,
}

/// How the network between two hosts behaves, the same both ways: each side delays, drops
/// and throttles what it sends to the other (as netem on each host's uplink would).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkFile {
    /// The two hosts this link joins, e.g. `[eu, us]` (order does not matter).
    #[serde(default)]
    #[schemars(length(min = 2, max = 2))]
    pub between: Option<Spanned<Vec<Spanned<String>>>>,
    /// `default: true`: the link of every pair of hosts no `between` entry names.
    #[serde(default)]
    pub default: Option<Spanned<bool>>,
    /// One-way delay added to every frame crossing the link (default 0s; the round trip
    /// is twice this).
    #[serde(default)]
    pub latency: Option<Spanned<DurationText>>,
    /// Random variation of the delay, up to this much either way (default 0s).
    #[serde(default)]
    pub jitter: Option<Spanned<DurationText>>,
    /// Share of frames lost: a percentage such as `0.1%`, or a ratio from 0 to 1 (default 0).
    #[serde(default)]
    pub loss: Option<Spanned<Ratio>>,
    /// Rate limit of each connection across the link (one node here to one node there),
    /// such as `10mbit`, `512kbit`, `100kB` (per second; default unlimited).
    #[serde(default)]
    pub bandwidth: Option<Spanned<String>>,
}

/// A share written as a percentage (`0.1%`) or as a ratio (`0.001`); checked during
/// validation so a bad value is reported with its location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ratio {
    /// A plain number, meant as a ratio from 0 to 1.
    Number(f64),
    /// Text, meant as a percentage such as `0.1%`.
    Text(String),
}

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Ratio;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a percentage such as `0.1%` or a ratio from 0 to 1")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ratio, E> {
                Ok(Ratio::Number(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ratio, E> {
                Ok(Ratio::Number(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ratio, E> {
                Ok(Ratio::Number(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ratio, E> {
                Ok(Ratio::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Ratio {
    fn schema_name() -> Cow<'static, str> {
        "Ratio".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A percentage such as `0.1%`, or a ratio from 0 to 1.",
            "oneOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*%\\s*$"}
            ],
            "examples": ["0.1%", 0.001]
        })
    }
}

/// Checks run once the nodes are started.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChecksFile {
    /// Did the network form? Runs by default even when omitted.
    #[serde(default)]
    pub formation: Option<Spanned<FormationFile>>,
    /// Do broadcasts reach every node? Runs only when present.
    #[serde(default)]
    pub broadcast: Option<Spanned<BroadcastFile>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormationFile {
    /// Deadline, counted from the first node's start (default 30s).
    #[serde(default)]
    pub within: Option<Spanned<DurationText>>,
    /// Every node reports `joined` (default true).
    #[serde(default)]
    pub all_ready: Option<Spanned<bool>>,
    /// The overlay of neighbour links is one connected graph (default true).
    #[serde(default)]
    pub connected: Option<Spanned<bool>>,
    /// Every node has at least this many neighbours (default 1; 0 for a single node).
    #[serde(default)]
    pub min_degree: Option<Spanned<u32>>,
    /// No node has more than this many neighbours (default: no limit).
    #[serde(default)]
    pub max_degree: Option<Spanned<u32>>,
    /// Every node's member list equals the set of running nodes (default true).
    #[serde(default)]
    pub full_membership: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastFile {
    /// Messages to inject (default 1, at least 1).
    #[serde(default)]
    pub count: Option<Spanned<u32>>,
    /// Node names or globs (`peers-*`) to send from. Default: nodes chosen with the seed.
    #[serde(default)]
    pub from: Option<Vec<Spanned<String>>>,
    /// Each message must be delivered within this long (default 5s).
    #[serde(default)]
    pub deliver_within: Option<Spanned<DurationText>>,
    /// Required ratio of (message, node) deliveries, 0 to 1 (default 1.0).
    #[serde(default)]
    pub reliability: Option<Spanned<f64>>,
}
