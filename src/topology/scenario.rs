//! Fault scenarios, validated: steps with their time and action, targets still symbolic.
//!
//! Targets stay expressions (`random 2 of peers`) until [`super::timeline::resolve`] turns
//! them into node names for one seed, because which nodes are eligible depends on what the
//! earlier steps did (a killed node cannot be killed again).

use std::time::Duration;

use serde::Serialize;

use super::model::FormationExpectation;
use crate::contract::LinkShape;

/// A scenario step as the topology describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When the step runs, so the player can schedule it.
    pub when: When,
    /// What the step does to the network.
    pub action: Action,
    /// Where the step's action is in the topology file, for messages about it.
    pub line: usize,
    /// Column of the action, paired with `line`.
    pub column: usize,
}

/// When a step runs: on an absolute clock or relative to the previous step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Counted from the moment the network formed.
    At(Duration),
    /// Counted from the end of the previous step.
    After(Duration),
}

/// What a process-level step does to its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL the process: no leave is flooded, peers must detect the failure.
    Kill,
    /// Stop the node gracefully, so it floods a leave first.
    Stop,
    /// Start a node that was stopped or killed.
    Start,
    /// Stop then start again, to test rejoining under the same name.
    Restart,
    /// Freeze the process (SIGSTOP): it stays connected but answers nothing.
    Pause,
    /// Thaw a paused process.
    Resume,
}

impl Fault {
    /// The word the topology file uses for this fault, for messages and reports.
    pub fn keyword(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Start => "start",
            Fault::Restart => "restart",
            Fault::Pause => "pause",
            Fault::Resume => "resume",
        }
    }
}

/// What one scenario step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Apply a process-level fault to the targeted nodes.
    Fault {
        /// Which fault.
        fault: Fault,
        /// Which nodes it hits.
        target: Target,
    },
    /// Cut the network between the sides so each only reaches its own side.
    Partition {
        /// The node sets to separate; a node not named by any side is left alone.
        sides: Vec<Target>,
        /// Block only traffic from the first side to the others, to test asymmetric links.
        one_way: bool,
    },
    /// Cut every node placed on a host from every node elsewhere: the host's network
    /// goes down (a `partition` with the host's nodes as the first side).
    CutHost {
        /// The host of the topology's `hosts`.
        host: String,
        /// Block only traffic from the host's nodes to the others.
        one_way: bool,
    },
    /// Remove every partition, restoring the full network (link shapes stay).
    Heal,
    /// Degrade links (delay, loss, bandwidth) to test the protocol under bad networks.
    Shape {
        /// The nodes whose links are shaped.
        nodes: Target,
        /// Only the links to these peers; all links when absent.
        peers: Option<Target>,
        /// The delay, loss and rate to apply.
        shape: LinkShape,
    },
    /// Start new nodes of a group mid-run, to test joining a running network.
    Join {
        /// The topology group the new nodes belong to.
        group: String,
        /// How many nodes to add; the group's count when absent.
        count: Option<usize>,
    },
    /// Inject broadcasts, so an `expect` step can check how they spread.
    Broadcast {
        /// How many messages to send.
        count: usize,
        /// Who sends them; random live nodes when absent.
        from: Option<Target>,
    },
    /// Do nothing for this long, letting the network settle or fail.
    Wait(Duration),
    /// Poll the live nodes until the expectation holds or its deadline passes.
    Expect(Expectation),
}

/// Checks an `expect` step polls for over the live nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// Deadline after which the step fails.
    pub within: Duration,
    /// What the live nodes' overlay must look like.
    pub formation: FormationExpectation,
    /// Broadcasts to inject and how well they must spread, if any.
    pub broadcast: Option<ExpectBroadcast>,
}

/// Broadcasts an `expect` step injects, and the share of live nodes that must receive them.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectBroadcast {
    /// How many messages to inject.
    pub count: usize,
    /// Who sends them; random live nodes when absent.
    pub from: Option<Target>,
    /// Share (0..=1) of messages each live node must have received for the step to pass.
    pub reliability: f64,
}

/// Comma-separated target expressions; a node is targeted when any part selects it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// As written, for messages and the report.
    pub text: String,
    /// The parts, each selecting nodes; the target is their union.
    pub parts: Vec<TargetPart>,
}

/// One part of a target expression.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetPart {
    /// Every eligible node the selector matches.
    Every(Selector),
    /// This share (percent, rounded, at least one) of the eligible matching nodes.
    Share {
        /// Percentage of the eligible nodes to pick.
        percent: u32,
        /// Which nodes are eligible.
        of: Selector,
    },
    /// This many of the eligible matching nodes.
    Random {
        /// How many nodes to pick.
        count: usize,
        /// Which nodes are eligible.
        of: Selector,
    },
}

/// Which nodes a target part may pick from.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Every node of the run.
    All,
    /// The nodes of one topology group.
    Group(String),
    /// A node name or a glob over node names.
    Glob(glob::Pattern),
}

impl Selector {
    /// Whether the node `name` of group `group` is selected.
    pub fn matches(&self, name: &str, group: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Group(g) => g == group,
            Selector::Glob(p) => p.matches(name),
        }
    }
}

impl Target {
    /// Parses `peers-1, random 2 of peers, 30% of edge`; `groups` are the group names.
    /// The error says what is wrong and what is expected.
    pub fn parse(text: &str, groups: &[String]) -> Result<Target, String> {
        let mut parts = Vec::new();
        for raw in text.split(',') {
            let part = raw.trim();
            if part.is_empty() {
                return Err(format!(
                    "`{text}` has an empty target; expected comma-separated node names, globs, groups, `30%` or `random N of GROUP`"
                ));
            }
            parts.push(parse_part(part, groups)?);
        }
        Ok(Target {
            text: text.trim().to_string(),
            parts,
        })
    }
}

fn parse_part(part: &str, groups: &[String]) -> Result<TargetPart, String> {
    if let Some(rest) = part.strip_prefix("random ") {
        let (count, of) = match rest.split_once(" of ") {
            Some((n, of)) => (n.trim(), selector(of.trim(), groups)?),
            None => (rest.trim(), Selector::All),
        };
        let count: usize = count.parse().map_err(|_| {
            format!("`{part}`: `{count}` is not a count; expected `random N of GROUP` with N a whole number, e.g. `random 2 of peers`")
        })?;
        if count == 0 {
            return Err(format!(
                "`{part}` picks no node; expected at least `random 1`"
            ));
        }
        return Ok(TargetPart::Random { count, of });
    }
    let (head, of) = match part.split_once(" of ") {
        Some((h, of)) => (h.trim(), Some(of.trim())),
        None => (part, None),
    };
    if let Some(number) = head.strip_suffix('%') {
        let percent: u32 = number
            .trim()
            .parse()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| {
                format!("`{part}`: `{head}` is not a share; expected 1% to 100%, e.g. `30%` or `30% of peers`")
            })?;
        let of = match of {
            Some(of) => selector(of, groups)?,
            None => Selector::All,
        };
        return Ok(TargetPart::Share { percent, of });
    }
    if of.is_some() {
        return Err(format!(
            "`{part}` is not a target; expected `random N of GROUP` or `N% of GROUP`"
        ));
    }
    Ok(TargetPart::Every(selector(part, groups)?))
}

fn selector(text: &str, groups: &[String]) -> Result<Selector, String> {
    if text == "all" {
        return Ok(Selector::All);
    }
    if groups.iter().any(|g| g == text) {
        return Ok(Selector::Group(text.to_string()));
    }
    glob::Pattern::new(text).map(Selector::Glob).map_err(|e| {
        format!("`{text}` is not a valid glob ({e}); expected a node name, a group or a pattern such as `peers-*`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<String> {
        vec!["genesis".into(), "peers".into()]
    }

    #[test]
    fn parses_every_kind_of_target() {
        let t = Target::parse(
            "peers-1, random 2 of peers, 30%, 50% of genesis, all",
            &groups(),
        )
        .unwrap();
        assert_eq!(t.parts.len(), 5);
        assert!(matches!(&t.parts[0], TargetPart::Every(Selector::Glob(_))));
        assert!(
            matches!(&t.parts[1], TargetPart::Random { count: 2, of: Selector::Group(g) } if g == "peers")
        );
        assert!(matches!(
            &t.parts[2],
            TargetPart::Share {
                percent: 30,
                of: Selector::All
            }
        ));
        assert!(matches!(&t.parts[3], TargetPart::Share { percent: 50, .. }));
        assert!(matches!(&t.parts[4], TargetPart::Every(Selector::All)));
    }

    #[test]
    fn rejects_bad_targets_with_what_to_write() {
        for bad in [
            "random x of peers",
            "random 0 of peers",
            "150%",
            "peers,",
            "2 of peers",
            "[x",
        ] {
            let err = Target::parse(bad, &groups()).unwrap_err();
            assert!(err.contains("expected"), "{bad}: {err}");
        }
    }
}
