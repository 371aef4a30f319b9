//! The `scenario` section: each step's time, its one action and its targets; then the
//! whole timeline is resolved once with the topology's seed, so a step that can select no
//! node (a second kill of the same node, a join of a group that is not `start: manual`)
//! is reported at its line before anything starts.

use std::time::Duration;

use serde_saphyr::Location;

use crate::contract::LinkShape;
use crate::topology::MAX_BROADCASTS;
use crate::topology::diagnostic::Sink;
use crate::topology::file::{DurationText, Spanned};
use crate::topology::model::{FormationExpectation, Topology};
use crate::topology::scenario::{Action, ExpectBroadcast, Expectation, Fault, Step, Target, When};
use crate::topology::scenario_file::{ExpectFile, PartitionFile, ShapeFile, StepFile};
use crate::topology::timeline::resolve;

use super::duration;

const ACTIONS: &str = "kill, stop, start, restart, pause, resume, partition, heal, shape, join, broadcast, wait or expect";

pub(super) fn scenario(
    s: &mut Sink,
    file: Option<&Spanned<Vec<Spanned<StepFile>>>>,
    topology: &Topology,
) -> Vec<Step> {
    let Some(file) = file else {
        return Vec::new();
    };
    let groups: Vec<String> = std::iter::once(&topology.genesis)
        .chain(&topology.groups)
        .map(|g| g.name.clone())
        .collect();
    let before = s.diagnostics.len();
    let mut steps = Vec::new();
    let mut places = Vec::new();
    for (i, step) in file.value.iter().enumerate() {
        let mut v = StepCheck {
            s: &mut *s,
            path: format!("scenario[{i}]"),
            groups: &groups,
            topology,
        };
        if let Some((action, at)) = v.step(&step.value, step.at) {
            steps.push(Step {
                when: v.when(&step.value),
                action,
                line: at.line() as usize,
                column: at.column() as usize,
            });
            places.push(at);
        }
    }
    // Resolve only a scenario whose steps are all well formed: otherwise the indices of
    // the resolved steps would not match the file.
    if s.diagnostics.len() == before {
        let mut probe = topology.clone();
        probe.scenario = steps.clone();
        if let Err(e) = resolve(&probe, topology.seed) {
            let step = e.step - 1;
            let mut at = places.get(step).copied().unwrap_or(file.at);
            let mut path = format!("scenario[{step}]");
            if let Some(key) = &e.key
                && let Some(value_at) = file.value.get(step).and_then(|f| key_at(&f.value, key))
            {
                at = value_at;
                path = format!("{path}.{key}");
            }
            s.report(at, path, format!("{} (seed {})", e.message, topology.seed));
        }
    }
    steps
}

/// Where the value of `key` (as [`resolve`] names it: `partition.sides[N]`) is written.
fn key_at(step: &StepFile, key: &str) -> Option<Location> {
    let index = key
        .strip_prefix("partition.sides[")?
        .strip_suffix(']')?
        .parse::<usize>()
        .ok()?;
    let sides = step.partition.as_ref()?.value.sides.as_ref()?;
    sides.get(index).map(|side| side.at)
}

struct StepCheck<'a, 'b> {
    s: &'a mut Sink<'b>,
    path: String,
    groups: &'a [String],
    topology: &'a Topology,
}

impl StepCheck<'_, '_> {
    fn when(&mut self, step: &StepFile) -> When {
        match (&step.at, &step.after) {
            (Some(at), _) => When::At(self.duration(at, "at").unwrap_or_default()),
            (None, Some(after)) => When::After(self.duration(after, "after").unwrap_or_default()),
            (None, None) => When::After(Duration::ZERO),
        }
    }

    fn duration(&mut self, d: &Spanned<DurationText>, key: &str) -> Option<Duration> {
        duration(self.s, d, &format!("{}.{key}", self.path))
    }

    fn report(&mut self, at: Location, key: &str, message: impl Into<String>) {
        let path = if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        };
        self.s.report(at, path, message);
    }

    /// The step's action and where it is written; `None` when it is unusable.
    fn step(&mut self, step: &StepFile, at: Location) -> Option<(Action, Location)> {
        if let (Some(_), Some(after)) = (&step.at, &step.after) {
            self.report(
                after.at,
                "after",
                "a step has `at` (from formation) or `after` (from the previous step), not both; remove one",
            );
        }
        let faults = [
            (&step.kill, Fault::Kill, "kill"),
            (&step.stop, Fault::Stop, "stop"),
            (&step.start, Fault::Start, "start"),
            (&step.restart, Fault::Restart, "restart"),
            (&step.pause, Fault::Pause, "pause"),
            (&step.resume, Fault::Resume, "resume"),
        ];
        let mut present: Vec<(&str, Location)> = faults
            .iter()
            .filter_map(|(v, _, k)| v.as_ref().map(|v| (*k, v.at)))
            .collect();
        let others = [
            ("partition", step.partition.as_ref().map(|v| v.at)),
            ("heal", step.heal.as_ref().map(|v| v.at)),
            ("shape", step.shape.as_ref().map(|v| v.at)),
            ("join", step.join.as_ref().map(|v| v.at)),
            ("broadcast", step.broadcast.as_ref().map(|v| v.at)),
            ("wait", step.wait.as_ref().map(|v| v.at)),
            ("expect", step.expect.as_ref().map(|v| v.at)),
        ];
        present.extend(others.iter().filter_map(|(k, at)| at.map(|at| (*k, at))));
        match present.as_slice() {
            [] => {
                self.report(
                    at,
                    "",
                    format!("the step has no action; expected one of {ACTIONS}"),
                );
                return None;
            }
            [_, second, ..] => {
                let first = present[0].0;
                self.report(
                    second.1,
                    second.0,
                    format!(
                        "a step does one thing, and this one already has `{first}`; split it into two steps"
                    ),
                );
                return None;
            }
            [_] => {}
        }
        let place = present[0].1;
        for (value, fault, key) in faults {
            if let Some(text) = value {
                let target = self.target(text, key)?;
                return Some((Action::Fault { fault, target }, place));
            }
        }
        if let Some(p) = &step.partition {
            return self.partition(p).map(|a| (a, place));
        }
        if let Some(heal) = &step.heal {
            if !heal.value {
                self.report(
                    heal.at,
                    "heal",
                    "`heal: false` does nothing; expected `heal: true`, or remove the step",
                );
            }
            return Some((Action::Heal, place));
        }
        if let Some(shape) = &step.shape {
            return self.shape(&shape.value).map(|a| (a, place));
        }
        if let Some(join) = &step.join {
            let name = &join.value.group;
            match self.topology.groups.iter().find(|g| g.name == name.value) {
                None => self.report(
                    name.at,
                    "join.group",
                    format!(
                        "`{}` is not a group; expected one of the groups declared with `start: manual`",
                        name.value
                    ),
                ),
                Some(g) if !g.manual => self.report(
                    name.at,
                    "join.group",
                    format!(
                        "group `{}` starts with the run; add `start: manual` to it so that its nodes wait for this join",
                        name.value
                    ),
                ),
                Some(_) => {}
            }
            let count = join.value.count.as_ref().map(|c| c.value as usize);
            return Some((
                Action::Join {
                    group: name.value.clone(),
                    count,
                },
                place,
            ));
        }
        if let Some(b) = &step.broadcast {
            let count = self.count(b.value.count.as_ref(), "broadcast.count");
            let from = match &b.value.from {
                Some(f) => Some(self.target(f, "broadcast.from")?),
                None => None,
            };
            return Some((Action::Broadcast { count, from }, place));
        }
        if let Some(w) = &step.wait {
            return Some((Action::Wait(self.duration(w, "wait")?), place));
        }
        if let Some(e) = &step.expect {
            return self.expect(&e.value, e.at).map(|a| (a, place));
        }
        None
    }

    /// `partition: {sides: [..]}` or `partition: {host: h}`, exactly one of them.
    fn partition(&mut self, p: &Spanned<PartitionFile>) -> Option<Action> {
        let one_way = p.value.one_way.as_ref().is_some_and(|v| v.value);
        match (&p.value.sides, &p.value.host) {
            (Some(_), Some(host)) => {
                self.report(
                    host.at,
                    "partition.host",
                    "a partition has `sides` or cuts one `host` off, not both; remove one",
                );
                None
            }
            (None, None) => {
                self.report(
                    p.at,
                    "partition",
                    "says what to cut with `sides: [peers, edge]` or `host: HOST`; expected one of them",
                );
                None
            }
            (None, Some(host)) => {
                let hosts = &self.topology.hosts;
                if !hosts.iter().any(|h| h.name == host.value) {
                    let expected = if hosts.is_empty() {
                        "no `hosts` are declared; add them, or partition by `sides`".to_string()
                    } else {
                        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
                        format!("expected one of: {}", names.join(", "))
                    };
                    self.report(
                        host.at,
                        "partition.host",
                        format!("unknown host `{}`; {expected}", host.value),
                    );
                    return None;
                }
                Some(Action::CutHost {
                    host: host.value.clone(),
                    one_way,
                })
            }
            (Some(sides_file), None) => {
                let mut sides = Vec::new();
                for (k, side) in sides_file.iter().enumerate() {
                    sides.push(self.target(side, &format!("partition.sides[{k}]")));
                }
                if sides_file.len() < 2 {
                    self.report(
                        p.at,
                        "partition.sides",
                        "a partition needs two or more sides; expected e.g. `sides: [peers, edge]`",
                    );
                    return None;
                }
                let sides: Option<Vec<Target>> = sides.into_iter().collect();
                Some(Action::Partition {
                    sides: sides?,
                    one_way,
                })
            }
        }
    }

    fn count(&mut self, count: Option<&Spanned<u32>>, key: &str) -> usize {
        match count {
            Some(c) if c.value == 0 => {
                self.report(
                    c.at,
                    key,
                    "0 messages would do nothing; expected at least 1",
                );
                1
            }
            Some(c) if c.value as usize > MAX_BROADCASTS => {
                self.report(
                    c.at,
                    key,
                    format!(
                        "{} messages are over the limit of {MAX_BROADCASTS} per step; expected 1 to {MAX_BROADCASTS}",
                        c.value
                    ),
                );
                MAX_BROADCASTS
            }
            Some(c) => c.value as usize,
            None => 1,
        }
    }

    fn target(&mut self, text: &Spanned<String>, key: &str) -> Option<Target> {
        match Target::parse(&text.value, self.groups) {
            Ok(t) => Some(t),
            Err(e) => {
                self.report(text.at, key, e);
                None
            }
        }
    }

    fn shape(&mut self, f: &ShapeFile) -> Option<Action> {
        let nodes = self.target(&f.nodes, "shape.nodes");
        let peers = match &f.peers {
            Some(p) => Some(self.target(p, "shape.peers")?),
            None => None,
        };
        let delay = f
            .delay
            .as_ref()
            .and_then(|d| self.duration(d, "shape.delay"));
        let jitter = f
            .jitter
            .as_ref()
            .and_then(|d| self.duration(d, "shape.jitter"));
        let loss = f.loss.as_ref().map_or(0.0, |l| {
            if !(0.0..=1.0).contains(&l.value) {
                self.report(
                    l.at,
                    "shape.loss",
                    format!(
                        "{} is not a probability; expected a number from 0 to 1, e.g. 0.05 for 5%",
                        l.value
                    ),
                );
            }
            l.value
        });
        let rate = match &f.bandwidth {
            Some(b) => match parse_bandwidth(&b.value) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.report(b.at, "shape.bandwidth", e);
                    None
                }
            },
            None => None,
        };
        Some(Action::Shape {
            nodes: nodes?,
            peers,
            shape: LinkShape {
                delay: delay.unwrap_or_default(),
                jitter: jitter.unwrap_or_default(),
                loss,
                rate,
            },
        })
    }

    fn expect(&mut self, f: &ExpectFile, at: Location) -> Option<Action> {
        let within = f
            .within
            .as_ref()
            .and_then(|w| self.duration(w, "expect.within"))
            .unwrap_or(Duration::from_secs(30));
        let on = |v: &Option<Spanned<bool>>| v.as_ref().is_some_and(|v| v.value);
        if let (Some(min), Some(max)) = (&f.min_degree, &f.max_degree)
            && min.value > max.value
        {
            self.report(
                min.at,
                "expect.min_degree",
                format!(
                    "{} is more than max_degree {}; expected at most {}",
                    min.value, max.value, max.value
                ),
            );
        }
        if let Some(c) = &f.components {
            if c.value == 0 {
                self.report(
                    c.at,
                    "expect.components",
                    "0 components means no live node; expected at least 1 (2 for a network split in two)",
                );
            } else if c.value > 1
                && let Some(connected) = f.connected.as_ref().filter(|v| v.value)
            {
                self.report(
                    connected.at,
                    "expect.connected",
                    format!(
                        "`connected: true` (one component) contradicts `components: {}`; remove one of them",
                        c.value
                    ),
                );
            }
        }
        let broadcast = match &f.broadcast {
            Some(b) => {
                let count = self.count(b.value.count.as_ref(), "expect.broadcast.count");
                let from = match &b.value.from {
                    Some(t) => Some(self.target(t, "expect.broadcast.from")?),
                    None => None,
                };
                let reliability = b.value.reliability.as_ref().map_or(1.0, |r| {
                    if !(0.0..=1.0).contains(&r.value) {
                        self.report(
                            r.at,
                            "expect.broadcast.reliability",
                            format!("{} is not a ratio; expected a number from 0 to 1", r.value),
                        );
                    }
                    r.value
                });
                Some(ExpectBroadcast {
                    count,
                    from,
                    reliability,
                })
            }
            None => None,
        };
        let formation = FormationExpectation {
            all_ready: on(&f.all_ready),
            connected: on(&f.connected),
            components: f
                .components
                .as_ref()
                .filter(|c| c.value > 0)
                .map(|c| c.value as usize),
            min_degree: f.min_degree.as_ref().map(|v| v.value as usize),
            max_degree: f.max_degree.as_ref().map(|v| v.value as usize),
            full_membership: on(&f.full_membership),
            component_membership: on(&f.component_membership),
        };
        let checks_something = formation != FormationExpectation::default()
            || f.components.is_some()
            || broadcast.is_some();
        if !checks_something {
            self.report(
                at,
                "expect",
                "checks nothing; expected at least one of all_ready, connected, components, min_degree, max_degree, full_membership, component_membership or broadcast",
            );
            return None;
        }
        Some(Action::Expect(Expectation {
            within,
            formation,
            broadcast,
        }))
    }
}

/// `1mbit`, `512kbit`, `100kB`, `2MB` (per second; `/s` allowed) as bytes per second.
pub(super) fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("/s")
        .or_else(|| t.strip_suffix("ps"))
        .unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bits_per_unit: f64 = match unit.trim() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "B" => 8.0,
        "kB" | "KB" => 8e3,
        "MB" => 8e6,
        "GB" => 8e9,
        _ => f64::NAN,
    };
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    let bytes = value * bits_per_unit / 8.0;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!(
            "`{text}` is not a bandwidth; expected a rate with a unit such as `1mbit`, `512kbit`, `100kB` or `2MB` (per second)"
        ));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bandwidth;

    #[test]
    fn bandwidths_in_bits_and_bytes() {
        assert_eq!(parse_bandwidth("1mbit"), Ok(125_000));
        assert_eq!(parse_bandwidth("512kbit/s"), Ok(64_000));
        assert_eq!(parse_bandwidth("100kB"), Ok(100_000));
        assert_eq!(parse_bandwidth("2MBps"), Ok(2_000_000));
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("10 furlongs").is_err());
        assert!(parse_bandwidth("0bit").is_err());
    }
}
