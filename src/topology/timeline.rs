//! Timeline resolution: a scenario's symbolic steps become concrete node names at planned
//! offsets, for one seed.
//!
//! Resolution walks the steps in order and tracks what each node is (not started, up,
//! paused, down), so a target only picks nodes that the step can act on: `random 2 of
//! peers` after a kill never picks the dead node. One random generator, seeded once, walks
//! the whole timeline, so a seed gives the same timeline on every run and every machine.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Serialize, Serializer};

use super::model::{FormationExpectation, Topology, duration_text, node_name};
use super::scenario::{Action, Expectation, Fault, Selector, Target, TargetPart, When};
use crate::contract::LinkShape;

/// Keeps scenario choices apart from every other use of the run seed.
const SCENARIO_SALT: u64 = 0x7363_656e_6172_696f;

/// A step with its nodes chosen and its planned offset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedStep {
    /// 1-based position in the scenario.
    pub index: usize,
    /// Planned offset from the moment the network formed. Steps never run earlier; an
    /// `expect` that takes a while pushes the steps placed `after` it back.
    #[serde(serialize_with = "as_text")]
    pub at: Duration,
    /// Set when the step was placed relative to the previous one.
    #[serde(serialize_with = "opt_as_text")]
    pub after: Option<Duration>,
    /// What the step does, with its targets resolved to node names.
    pub action: ResolvedAction,
    /// One line for people: `kill peers-2, peers-5`.
    pub text: String,
}

/// A scenario step's action with targets resolved to node names for one seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum ResolvedAction {
    /// Apply a process-level fault to these nodes.
    Fault {
        /// Which fault.
        fault: Fault,
        /// The nodes it hits.
        nodes: Vec<String>,
    },
    /// Separate these sets of nodes from each other.
    Partition {
        /// The node sets; each only reaches its own side.
        sides: Vec<Vec<String>>,
        /// Block only traffic from the first side to the others.
        one_way: bool,
        /// Set when the step cut a host off (`partition: {host: ..}`): the first side is
        /// that host's nodes, the second every other node.
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Remove every partition (link shapes stay).
    Heal,
    /// Degrade the links of these nodes.
    Shape {
        /// The nodes whose links are shaped.
        nodes: Vec<String>,
        /// Only the links to these peers; all links when absent.
        peers: Option<Vec<String>>,
        /// The delay, loss and rate to apply.
        shape: ShapeView,
    },
    /// Start new nodes mid-run.
    Join {
        /// Names of the nodes to start.
        nodes: Vec<String>,
    },
    /// One sender per message.
    Broadcast {
        /// Sender of each message, in order.
        from: Vec<String>,
    },
    /// Do nothing for a while.
    Wait {
        /// How long to wait.
        #[serde(serialize_with = "as_text")]
        duration: Duration,
    },
    /// Poll the live nodes until the expectation holds or the deadline passes.
    Expect(ResolvedExpect),
}

/// An `expect` with the live nodes it is evaluated over.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedExpect {
    /// Deadline after which the step fails.
    #[serde(serialize_with = "as_text")]
    pub within: Duration,
    /// What the live nodes' overlay must look like.
    #[serde(flatten)]
    pub formation: FormationExpectation,
    /// Senders of the broadcasts to inject, one per message; empty: no broadcast check.
    pub broadcast_from: Vec<String>,
    /// Share (0..=1) of messages each live node must have received.
    pub reliability: f64,
    /// Nodes up at this point of the timeline (not killed, stopped, paused or not joined).
    pub live: Vec<String>,
}

/// [`LinkShape`] as the report shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShapeView {
    /// Added latency per packet.
    #[serde(serialize_with = "as_text")]
    pub delay: Duration,
    /// Random variation added to `delay`.
    #[serde(serialize_with = "as_text")]
    pub jitter: Duration,
    /// Share (0..=1) of packets dropped.
    pub loss: f64,
    /// Bytes per second.
    pub rate: Option<u64>,
}

impl From<ShapeView> for LinkShape {
    fn from(v: ShapeView) -> LinkShape {
        LinkShape {
            delay: v.delay,
            jitter: v.jitter,
            loss: v.loss,
            rate: v.rate,
        }
    }
}

/// A step that cannot be resolved (for this seed), with its position for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    /// 1-based step index.
    pub step: usize,
    /// Line of the step in the topology file.
    pub line: usize,
    /// Column of the step in the topology file.
    pub column: usize,
    /// Why the step cannot be resolved.
    pub message: String,
    /// The key of the step at fault, such as `partition.sides[1]`, when the problem is
    /// in one of its values rather than in the step as a whole.
    pub key: Option<String>,
}

/// Why one step cannot be resolved, before it gets the step's position.
struct StepError {
    key: Option<String>,
    message: String,
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        StepError { key: None, message }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Up,
    Paused,
    Down,
}

struct Node {
    name: String,
    group: String,
    /// The host it is placed on, if the topology has hosts.
    host: Option<String>,
    state: State,
}

/// Resolves the topology's scenario for `seed` (the topology's, or `--seed`).
pub fn resolve(topology: &Topology, seed: u64) -> Result<Vec<ResolvedStep>, ResolveError> {
    let mut nodes: Vec<Node> = std::iter::once(&topology.genesis)
        .chain(&topology.groups)
        .flat_map(|g| {
            (0..g.count).map(move |i| Node {
                name: node_name(&g.name, i),
                group: g.name.clone(),
                host: topology.host_of(g, i).map(str::to_string),
                state: if g.manual {
                    State::NotStarted
                } else {
                    State::Up
                },
            })
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed ^ SCENARIO_SALT);
    let mut cursor = Duration::ZERO;
    let mut out = Vec::with_capacity(topology.scenario.len());
    for (i, step) in topology.scenario.iter().enumerate() {
        let fail = |e: StepError| ResolveError {
            step: i + 1,
            line: step.line,
            column: step.column,
            message: e.message,
            key: e.key,
        };
        let (at, after) = match step.when {
            When::At(at) if at < cursor => {
                return Err(fail(StepError::from(format!(
                    "`at: {}` comes before the previous step, planned at {}; expected steps in time order (use `after` for relative times)",
                    duration_text(at),
                    duration_text(cursor)
                ))));
            }
            When::At(at) => (at, None),
            When::After(d) => (cursor + d, Some(d)),
        };
        let mut resolver = Resolver {
            nodes: &mut nodes,
            rng: &mut rng,
        };
        let action = resolver.action(&step.action).map_err(fail)?;
        cursor = match &action {
            ResolvedAction::Wait { duration } => at + *duration,
            _ => at,
        };
        out.push(ResolvedStep {
            index: i + 1,
            at,
            after,
            text: describe(&action),
            action,
        });
    }
    Ok(out)
}

/// The first node found on two sides of a partition, reported at the later side: a
/// node cannot be cut off from itself, and the runtimes would block it both ways at once.
fn overlap(targets: &[Target], sides: &[Vec<String>]) -> Option<StepError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (j, side) in sides.iter().enumerate() {
        let mut both: Vec<&str> = Vec::new();
        let mut other = None;
        for name in side {
            match seen.get(name.as_str()) {
                Some(&i) if i != j && other.is_none_or(|o| o == i) => {
                    other = Some(i);
                    both.push(name.as_str());
                }
                Some(_) => {}
                None => {
                    seen.insert(name.as_str(), j);
                }
            }
        }
        if let Some(i) = other {
            const SHOWN: usize = 5;
            let mut names = both[..both.len().min(SHOWN)].join(", ");
            if both.len() > SHOWN {
                names.push_str(&format!(" and {} more", both.len() - SHOWN));
            }
            let text = |k: usize| targets.get(k).map_or("", |t| t.text.as_str());
            return Some(StepError {
                key: Some(format!("partition.sides[{j}]")),
                message: format!(
                    "side {j} (`{}`) and side {i} (`{}`) both hold {names}; a node is on one side of a partition, so expected sides with no node in common",
                    text(j),
                    text(i)
                ),
            });
        }
    }
    None
}

struct Resolver<'a> {
    nodes: &'a mut Vec<Node>,
    rng: &'a mut StdRng,
}

impl Resolver<'_> {
    fn action(&mut self, action: &Action) -> Result<ResolvedAction, StepError> {
        use State::*;
        Ok(match action {
            Action::Fault { fault, target } => {
                let (eligible, after): (&[State], State) = match fault {
                    Fault::Kill | Fault::Stop => (&[Up, Paused], Down),
                    Fault::Start => (&[Down], Up),
                    Fault::Restart => (&[Up], Up),
                    Fault::Pause => (&[Up], Paused),
                    Fault::Resume => (&[Paused], Up),
                };
                let nodes = self.pick(target, eligible, fault.keyword())?;
                self.set(&nodes, after);
                ResolvedAction::Fault {
                    fault: *fault,
                    nodes,
                }
            }
            Action::Partition { sides, one_way } => {
                let picked: Vec<Vec<String>> = sides
                    .iter()
                    .map(|s| self.pick(s, &[Up, Paused, Down], "partition"))
                    .collect::<Result<_, _>>()?;
                if let Some(e) = overlap(sides, &picked) {
                    return Err(e);
                }
                ResolvedAction::Partition {
                    sides: picked,
                    one_way: *one_way,
                    host: None,
                }
            }
            Action::CutHost { host, one_way } => ResolvedAction::Partition {
                sides: self.host_sides(host)?,
                one_way: *one_way,
                host: Some(host.clone()),
            },
            Action::Heal => ResolvedAction::Heal,
            Action::Shape {
                nodes,
                peers,
                shape,
            } => ResolvedAction::Shape {
                nodes: self.pick(nodes, &[Up, Paused, Down], "shape")?,
                peers: peers
                    .as_ref()
                    .map(|p| self.pick(p, &[Up, Paused, Down], "shape"))
                    .transpose()?,
                shape: ShapeView {
                    delay: shape.delay,
                    jitter: shape.jitter,
                    loss: shape.loss,
                    rate: shape.rate,
                },
            },
            Action::Join { group, count } => {
                let waiting: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| &n.group == group && n.state == NotStarted)
                    .map(|n| n.name.clone())
                    .collect();
                let wanted = count.unwrap_or(waiting.len());
                if wanted == 0 || wanted > waiting.len() {
                    return Err(format!(
                        "join of {wanted} node(s) of `{group}`, but {} of its nodes are still waiting to start; expected a count from 1 to {} (or a larger `count` on the group)",
                        waiting.len(),
                        waiting.len()
                    )
                    .into());
                }
                let nodes = waiting[..wanted].to_vec();
                self.set(&nodes, Up);
                ResolvedAction::Join { nodes }
            }
            Action::Broadcast { count, from } => ResolvedAction::Broadcast {
                from: self.senders(*count, from.as_ref())?,
            },
            Action::Wait(d) => ResolvedAction::Wait { duration: *d },
            Action::Expect(e) => ResolvedAction::Expect(self.expect(e)?),
        })
    }

    fn expect(&mut self, e: &Expectation) -> Result<ResolvedExpect, String> {
        let live = self.in_states(&[State::Up]);
        if live.is_empty() {
            return Err("expect runs when no node is up; expected at least one live node (start or resume some first)".into());
        }
        if let Some(n) = e.formation.components
            && n > live.len()
        {
            return Err(format!(
                "expect components: {n}, but only {} node(s) are live at this step, and each component holds at least one; expected at most {}",
                live.len(),
                live.len()
            ));
        }
        let (broadcast_from, reliability) = match &e.broadcast {
            Some(b) => (self.senders(b.count, b.from.as_ref())?, b.reliability),
            None => (Vec::new(), 1.0),
        };
        Ok(ResolvedExpect {
            within: e.within,
            formation: e.formation.clone(),
            broadcast_from,
            reliability,
            live,
        })
    }

    fn senders(&mut self, count: usize, from: Option<&Target>) -> Result<Vec<String>, String> {
        let candidates = match from {
            Some(t) => self.pick(t, &[State::Up], "broadcast")?,
            None => self.in_states(&[State::Up]),
        };
        if candidates.is_empty() {
            return Err("no node is up to broadcast from; expected at least one live node".into());
        }
        Ok((0..count)
            .map(|_| candidates[self.rng.random_range(0..candidates.len())].clone())
            .collect())
    }

    /// The started nodes on `host`, and every other started node: the sides that cut the
    /// host off.
    fn host_sides(&self, host: &str) -> Result<Vec<Vec<String>>, String> {
        let (on, off): (Vec<&Node>, Vec<&Node>) = self
            .nodes
            .iter()
            .filter(|n| n.state != State::NotStarted)
            .partition(|n| n.host.as_deref() == Some(host));
        if on.is_empty() || off.is_empty() {
            let side = if on.is_empty() { "on" } else { "off" };
            return Err(format!(
                "cutting host `{host}` off needs nodes on both sides, but no started node is {side} it at this point; place a group on it (`host: {host}`) or check the earlier steps"
            ));
        }
        let names = |nodes: Vec<&Node>| nodes.into_iter().map(|n| n.name.clone()).collect();
        Ok(vec![names(on), names(off)])
    }

    fn in_states(&self, states: &[State]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| states.contains(&n.state))
            .map(|n| n.name.clone())
            .collect()
    }

    fn set(&mut self, names: &[String], state: State) {
        for n in self.nodes.iter_mut().filter(|n| names.contains(&n.name)) {
            n.state = state;
        }
    }

    /// Nodes in `eligible` states selected by `target`, in start order.
    fn pick(
        &mut self,
        target: &Target,
        eligible: &[State],
        verb: &str,
    ) -> Result<Vec<String>, String> {
        let mut chosen: Vec<usize> = Vec::new();
        for part in &target.parts {
            let of = match part {
                TargetPart::Every(s)
                | TargetPart::Share { of: s, .. }
                | TargetPart::Random { of: s, .. } => s,
            };
            let pool: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    let n = &self.nodes[i];
                    eligible.contains(&n.state)
                        && of.matches(&n.name, &n.group)
                        && !chosen.contains(&i)
                })
                .collect();
            let wanted = match part {
                TargetPart::Every(_) => pool.len(),
                TargetPart::Share { percent, .. } => ((pool.len() * *percent as usize + 50) / 100)
                    .max(1)
                    .min(pool.len()),
                TargetPart::Random { count, .. } => {
                    if *count > pool.len() {
                        return Err(format!(
                            "`{}` asks for {count} node(s) but only {} are eligible for `{verb}` at this point ({}); expected at most {}",
                            target.text,
                            pool.len(),
                            self.describe_pool(of),
                            pool.len()
                        ));
                    }
                    *count
                }
            };
            if wanted == pool.len() {
                chosen.extend(pool);
            } else {
                let mut picked: Vec<usize> = rand::seq::index::sample(self.rng, pool.len(), wanted)
                    .into_iter()
                    .map(|k| pool[k])
                    .collect();
                picked.sort_unstable();
                chosen.extend(picked);
            }
        }
        if chosen.is_empty() {
            return Err(format!(
                "`{}` selects no node eligible for `{verb}` at this point ({}); check the earlier steps and the node names",
                target.text,
                self.describe_all(target)
            ));
        }
        chosen.sort_unstable();
        Ok(chosen
            .into_iter()
            .map(|i| self.nodes[i].name.clone())
            .collect())
    }

    fn describe_pool(&self, of: &Selector) -> String {
        let states: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| of.matches(&n.name, &n.group))
            .map(|n| format!("{} {}", n.name, state_word(n.state)))
            .take(8)
            .collect();
        if states.is_empty() {
            "it matches no node".into()
        } else {
            states.join(", ")
        }
    }

    fn describe_all(&self, target: &Target) -> String {
        let mut parts = Vec::new();
        for part in &target.parts {
            let (TargetPart::Every(s)
            | TargetPart::Share { of: s, .. }
            | TargetPart::Random { of: s, .. }) = part;
            parts.push(self.describe_pool(s));
        }
        parts.join("; ")
    }
}

fn state_word(state: State) -> &'static str {
    match state {
        State::NotStarted => "not started",
        State::Up => "up",
        State::Paused => "paused",
        State::Down => "down",
    }
}

/// One line per step for progress lines and the summary.
pub fn describe(action: &ResolvedAction) -> String {
    match action {
        ResolvedAction::Fault { fault, nodes } => {
            format!("{} {}", fault.keyword(), nodes.join(", "))
        }
        ResolvedAction::Partition {
            sides,
            one_way,
            host,
        } => {
            let sides: Vec<String> = sides
                .iter()
                .map(|s| format!("[{}]", s.join(", ")))
                .collect();
            let sep = if *one_way { " -/-> " } else { " | " };
            let what = host
                .as_ref()
                .map_or_else(String::new, |h| format!("host {h} off: "));
            format!("partition {what}{}", sides.join(sep))
        }
        ResolvedAction::Heal => "heal".into(),
        ResolvedAction::Shape {
            nodes,
            peers,
            shape,
        } => format!(
            "shape {}{}: delay {} jitter {} loss {} rate {}",
            nodes.join(", "),
            peers
                .as_ref()
                .map_or_else(String::new, |p| format!(" towards {}", p.join(", "))),
            duration_text(shape.delay),
            duration_text(shape.jitter),
            shape.loss,
            shape
                .rate
                .map_or_else(|| "unlimited".into(), |r| format!("{r}B/s"))
        ),
        ResolvedAction::Join { nodes } => format!("join {}", nodes.join(", ")),
        ResolvedAction::Broadcast { from } => {
            format!("broadcast {} from {}", from.len(), from.join(", "))
        }
        ResolvedAction::Wait { duration } => format!("wait {}", duration_text(*duration)),
        ResolvedAction::Expect(e) => {
            let mut what = Vec::new();
            let f = &e.formation;
            if f.all_ready {
                what.push("all ready".to_string());
            }
            if f.connected {
                what.push("connected".to_string());
            }
            if let Some(n) = f.components {
                what.push(format!("{n} component(s)"));
            }
            if let Some(d) = f.min_degree {
                what.push(format!("min degree {d}"));
            }
            if let Some(d) = f.max_degree {
                what.push(format!("max degree {d}"));
            }
            if f.full_membership {
                what.push("full membership".to_string());
            }
            if f.component_membership {
                what.push("membership per component".to_string());
            }
            if !e.broadcast_from.is_empty() {
                what.push(format!("{} broadcast(s) delivered", e.broadcast_from.len()));
            }
            format!(
                "expect {} over {} live nodes within {}",
                what.join(", "),
                e.live.len(),
                duration_text(e.within)
            )
        }
    }
}

fn as_text<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&duration_text(*d))
}

fn opt_as_text<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&duration_text(*d)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHURN: &str = "name: t\nseed: 7\ngenesis: {count: 2}\ngroups:\n  - {name: peers, count: 10}\n  - {name: late, count: 3, start: manual}\nscenario:\n  - at: 5s\n    kill: random 3 of peers\n  - after: 2s\n    kill: random 3 of peers\n  - wait: 1s\n  - start: 50% of peers\n  - join: {group: late, count: 2}\n  - expect: {connected: true, broadcast: {count: 2}}\n";

    fn timeline(seed: u64) -> Vec<ResolvedStep> {
        let topology = crate::topology::parse_str(CHURN, "t.yaml").unwrap();
        resolve(&topology, seed).unwrap()
    }

    fn killed(steps: &[ResolvedStep], i: usize) -> Vec<String> {
        match &steps[i].action {
            ResolvedAction::Fault { nodes, .. } => nodes.clone(),
            other => panic!("not a fault: {other:?}"),
        }
    }

    #[test]
    fn same_seed_same_timeline_other_seed_other_choices() {
        assert_eq!(timeline(7), timeline(7));
        let differs = (8..20).any(|seed| timeline(seed) != timeline(7));
        assert!(differs, "twelve other seeds all chose the same nodes");
    }

    #[test]
    fn offsets_and_liveness_follow_the_steps() {
        let steps = timeline(7);
        let at: Vec<Duration> = steps.iter().map(|s| s.at).collect();
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(
            at,
            vec![secs(5), secs(7), secs(7), secs(8), secs(8), secs(8)]
        );
        let first = killed(&steps, 0);
        let second = killed(&steps, 1);
        assert_eq!((first.len(), second.len()), (3, 3));
        assert!(
            first.iter().all(|n| !second.contains(n)),
            "{first:?} {second:?}"
        );
        // 50% of the six dead peers, all of them among the killed ones.
        let restarted = killed(&steps, 3);
        assert_eq!(restarted.len(), 3);
        assert!(
            restarted
                .iter()
                .all(|n| first.contains(n) || second.contains(n))
        );
        let ResolvedAction::Expect(e) = &steps[5].action else {
            panic!("not an expect");
        };
        // 2 genesis + 4 peers never killed + 3 restarted + 2 joined.
        assert_eq!(e.live.len(), 11);
        assert!(e.live.contains(&"late-1".to_string()) && !e.live.contains(&"late-2".to_string()));
        assert_eq!(e.broadcast_from.len(), 2);
        assert!(e.broadcast_from.iter().all(|n| e.live.contains(n)));
    }
}
