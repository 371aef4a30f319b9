//! The `scenario:` section exactly as written (see [`super::file`] for why every value is
//! [`Spanned`]). A step is one mapping with a time (`at` or `after`) and exactly one action
//! key; which one is checked during validation so that a missing or doubled action is
//! reported with its line like every other problem.

use schemars::JsonSchema;
use serde::Deserialize;

use super::file::{DurationText, Spanned};

/// One step of a fault scenario. Targets are comma-separated expressions: a node name, a
/// glob (`peers-*`), a group name, `all`, a share (`30%`, `30% of peers`) or
/// `random N of GROUP`; shares and random picks come from the seed.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StepFile {
    /// When the step runs, counted from the moment the network formed.
    #[serde(default)]
    pub at: Option<Spanned<DurationText>>,
    /// When the step runs, counted from the end of the previous step (default 0s).
    #[serde(default)]
    pub after: Option<Spanned<DurationText>>,
    /// SIGKILL / docker kill the target nodes.
    #[serde(default)]
    pub kill: Option<Spanned<String>>,
    /// Stop the target nodes gracefully (they flood a leave first).
    #[serde(default)]
    pub stop: Option<Spanned<String>>,
    /// Start again killed or stopped nodes, on the same address.
    #[serde(default)]
    pub start: Option<Spanned<String>>,
    /// Stop then start the target nodes.
    #[serde(default)]
    pub restart: Option<Spanned<String>>,
    /// Freeze the target nodes (SIGSTOP / docker pause).
    #[serde(default)]
    pub pause: Option<Spanned<String>>,
    /// Unfreeze paused nodes.
    #[serde(default)]
    pub resume: Option<Spanned<String>>,
    /// Cut the links between groups of nodes (`sides`), or cut one host off from the
    /// others (`host`).
    #[serde(default)]
    pub partition: Option<Spanned<PartitionFile>>,
    /// Undo every partition (`heal: true`).
    #[serde(default)]
    pub heal: Option<Spanned<bool>>,
    /// Degrade the links of some nodes.
    #[serde(default)]
    pub shape: Option<Spanned<ShapeFile>>,
    /// Start nodes of a `start: manual` group.
    #[serde(default)]
    pub join: Option<Spanned<JoinFile>>,
    /// Inject broadcasts (checked by a later `expect` with `broadcast`, or just sent).
    #[serde(default)]
    pub broadcast: Option<Spanned<BroadcastStepFile>>,
    /// Do nothing for this long.
    #[serde(default)]
    pub wait: Option<Spanned<DurationText>>,
    /// Checks that must hold over the live nodes within a deadline.
    #[serde(default)]
    pub expect: Option<Spanned<ExpectFile>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartitionFile {
    /// Two or more sides, each a target expression (`peers`, `genesis, edge-*`).
    #[serde(default)]
    pub sides: Option<Vec<Spanned<String>>>,
    /// Instead of `sides`: a host of `hosts`, whose nodes are cut from every other node
    /// (the host's network goes down; `heal: true` brings it back).
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    /// Only traffic from the first side (or from the host) to the others is dropped
    /// (default false).
    #[serde(default)]
    pub one_way: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShapeFile {
    /// Nodes whose links are shaped (target expression).
    pub nodes: Spanned<String>,
    /// Only the links towards these nodes (default: every link).
    #[serde(default)]
    pub peers: Option<Spanned<String>>,
    /// One-way delay added to every frame (default 0s).
    #[serde(default)]
    pub delay: Option<Spanned<DurationText>>,
    /// Random extra delay, up to this much (default 0s).
    #[serde(default)]
    pub jitter: Option<Spanned<DurationText>>,
    /// Probability 0 to 1 that a frame is dropped (default 0).
    #[serde(default)]
    pub loss: Option<Spanned<f64>>,
    /// Rate limit such as `1mbit`, `512kbit`, `100kB` (per second; default unlimited).
    #[serde(default)]
    pub bandwidth: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinFile {
    /// A group declared with `start: manual`.
    pub group: Spanned<String>,
    /// How many of its not yet started nodes (default: all of them).
    #[serde(default)]
    pub count: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastStepFile {
    /// Messages to inject (default 1).
    #[serde(default)]
    pub count: Option<Spanned<u32>>,
    /// Target expression of the senders (default: any live node, chosen with the seed).
    #[serde(default)]
    pub from: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpectFile {
    /// Deadline for every check to hold together (default 30s).
    #[serde(default)]
    pub within: Option<Spanned<DurationText>>,
    /// Every live node reports joined.
    #[serde(default)]
    pub all_ready: Option<Spanned<bool>>,
    /// The live nodes form one connected overlay.
    #[serde(default)]
    pub connected: Option<Spanned<bool>>,
    /// The overlay of the live nodes has exactly this many connected components (at least
    /// 1): `components: 2` asserts that a partition really split the network.
    #[serde(default)]
    pub components: Option<Spanned<u32>>,
    /// Every live node has at least this many neighbours.
    #[serde(default)]
    pub min_degree: Option<Spanned<u32>>,
    /// No live node has more than this many neighbours.
    #[serde(default)]
    pub max_degree: Option<Spanned<u32>>,
    /// Every live node's member list is exactly the live nodes.
    #[serde(default)]
    pub full_membership: Option<Spanned<bool>>,
    /// Every live node's member list is exactly the nodes of its own overlay component:
    /// each side of a partition knows exactly its side.
    #[serde(default)]
    pub component_membership: Option<Spanned<bool>>,
    /// Inject broadcasts now and require their delivery to the live nodes.
    #[serde(default)]
    pub broadcast: Option<Spanned<ExpectBroadcastFile>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpectBroadcastFile {
    /// Messages to inject (default 1).
    #[serde(default)]
    pub count: Option<Spanned<u32>>,
    /// Target expression of the senders (default: any live node, chosen with the seed).
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// Required ratio of (message, live node) deliveries, 0 to 1 (default 1.0).
    #[serde(default)]
    pub reliability: Option<Spanned<f64>>,
}
