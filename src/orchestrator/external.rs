//! Checking a network that peerlab did not start (`peerlab check`): its nodes are found
//! through a [`Discover`] source, watched by the one [`Observer`], and judged by the same
//! formation and broadcast checks as a run, into the same [`Report`].
//!
//! The checker polls until the formation checks hold over every node found (and, when a
//! node count is expected, until that many were found), or the deadline passes. A source
//! that changes (DNS, a compose project) is asked again between short slices of polling,
//! since nodes that are still starting appear late; the network counts as formed only
//! when one more round of discovery finds the same nodes.
//!
//! Nodes are named by what they report (`peerlab node --name`), else by the source's name
//! for them (a container's), else by their status address. A node that has not answered
//! yet goes by the fallback until it does.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde_json::json;

use super::discover::{Discover, DiscoverError, Found, address_of};
use super::observer::{Formation, Observer, POLL_CONCURRENCY, poll_interval};
use super::progress::Progress;
use super::run::{RunOutcome, broadcast_checks, formation_deadline_check};
use super::{BroadcastStats, CheckResult, Overlay, Report, RunMeta};
use crate::runtime::NodeEndpoint;
use crate::topology::{BroadcastChecks, FormationExpectation};

/// Polling between two discovery rounds of a source that changes, at least.
const SLICE: Duration = Duration::from_secs(3);

/// What a network found by discovery must show.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkExpectation {
    /// Named in the report as its topology (a topology file's name, or `check`).
    pub name: String,
    /// Exactly this many nodes must be found; `None`: at least one.
    pub nodes: Option<usize>,
    /// How long to wait for the checks to hold, counted from the start of the check.
    pub within: Duration,
    /// The formation checks.
    pub formation: FormationExpectation,
    /// Broadcasts to inject once formed, and how they must spread.
    pub broadcast: Option<BroadcastChecks>,
    /// Picks the broadcast senders.
    pub seed: u64,
}

impl NetworkExpectation {
    /// Every node found ready, the overlay connected, every node knowing every other,
    /// within `within`, and no broadcast: what `peerlab check` checks without a topology.
    pub fn formed_within(within: Duration) -> Self {
        NetworkExpectation {
            name: "check".to_string(),
            nodes: None,
            within,
            formation: FormationExpectation {
                all_ready: true,
                connected: true,
                full_membership: true,
                ..FormationExpectation::default()
            },
            broadcast: None,
            seed: 0,
        }
    }
}

/// A node found, and what it is called.
#[derive(Debug, Clone)]
struct Member {
    status_url: String,
    hint: Option<String>,
    name: String,
    /// The node answered `/status`: its name is final.
    identified: bool,
}

/// The nodes found so far, each registered with the observer under its name.
#[derive(Debug, Default)]
struct Roster {
    members: Vec<Member>,
}

impl Roster {
    /// Takes in one round's findings: drops nodes no longer found (unless `keep`), adds
    /// new ones, names the nodes that answer, and registers them with the observer.
    async fn update(&mut self, found: Vec<Found>, observer: &Observer, keep: bool) {
        let before: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        if !keep {
            self.members
                .retain(|m| found.iter().any(|f| f.status_url == m.status_url));
        }
        for f in found {
            if !self.members.iter().any(|m| m.status_url == f.status_url) {
                let name = f
                    .hint
                    .clone()
                    .unwrap_or_else(|| address_of(&f.status_url).to_string());
                self.members.push(Member {
                    status_url: f.status_url,
                    hint: f.hint,
                    name,
                    identified: false,
                });
            }
        }
        let pending: Vec<(usize, NodeEndpoint)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.identified)
            .map(|(i, m)| (i, endpoint(&m.name, &m.status_url)))
            .collect();
        let answers: Vec<(usize, Option<String>, bool)> = futures::stream::iter(pending)
            .map(|(i, ep)| async move {
                match observer.client_for(&ep).status_brief().await {
                    Ok(s) => (i, s.name.filter(|n| !n.trim().is_empty()), true),
                    Err(_) => (i, None, false),
                }
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .collect()
            .await;
        let taken: BTreeSet<String> = self
            .members
            .iter()
            .filter(|m| m.identified)
            .map(|m| m.name.clone())
            .collect();
        let mut taken = taken;
        let mut answers = answers;
        answers.sort_by_key(|(i, _, _)| *i);
        for (i, reported, answered) in answers {
            let m = &mut self.members[i];
            if !answered {
                continue;
            }
            let wanted = reported
                .or_else(|| m.hint.clone())
                .unwrap_or_else(|| address_of(&m.status_url).to_string());
            m.name = if taken.contains(&wanted) {
                format!("{wanted}@{}", address_of(&m.status_url))
            } else {
                wanted
            };
            m.identified = true;
            taken.insert(m.name.clone());
        }
        // A node not identified yet must not take the name another node reported.
        for m in self.members.iter_mut().filter(|m| !m.identified) {
            if taken.contains(&m.name) {
                m.name = address_of(&m.status_url).to_string();
            }
        }
        // Names no longer in use (a node gone, or renamed once it answered) are not asked
        // again: a vanished address would hold every round for the request timeout.
        for gone in before
            .iter()
            .filter(|n| !self.members.iter().any(|m| &m.name == *n))
        {
            observer.remove(gone);
        }
        for m in &self.members {
            observer.add(endpoint(&m.name, &m.status_url));
        }
    }

    /// The names of the nodes found, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        names
    }

    fn all_identified(&self) -> bool {
        self.members.iter().all(|m| m.identified)
    }
}

fn endpoint(name: &str, status_url: &str) -> NodeEndpoint {
    NodeEndpoint {
        name: name.to_string(),
        peer_addr: String::new(),
        status_url: status_url.to_string(),
    }
}

/// Finds the network's nodes through `source`, waits until `expect` holds over them (or
/// its deadline passes), injects its broadcasts and returns the report, as a run would.
/// A failed check is a report that did not pass; an error means nothing could be checked
/// (a source that is wrong, or cannot be asked).
pub async fn check_network(
    source: &dyn Discover,
    expect: &NetworkExpectation,
    run_id: &str,
    progress: &mut Progress,
) -> Result<RunOutcome, DiscoverError> {
    let started_at = SystemTime::now();
    let observer = Observer::new().map_err(|e| DiscoverError::Failed(format!("{e:#}")))?;
    let deadline = observer.started_at() + expect.within;
    let fixed = source.is_static();
    let mut roster = Roster::default();
    let mut problems: Vec<String>;
    let mut shown_problems: Vec<String> = Vec::new();
    let mut last: Option<(Vec<String>, Formation)> = None;
    // The nodes seen formed, waiting for one more discovery round to find the same.
    let mut confirming: Option<Vec<String>> = None;
    let mut rounds = 0usize;
    progress.line(&format!(
        "checking the network at {} (deadline {})",
        source.describe(),
        humantime::format_duration(expect.within)
    ));
    progress.phase("forming", 1);
    loop {
        rounds += 1;
        match source.discover().await {
            Ok(d) => {
                problems = d.problems;
                roster.update(d.found, &observer, fixed).await;
            }
            // Wrong from the start: say so at once rather than after the deadline.
            Err(e @ DiscoverError::BadInput(_)) if rounds == 1 => return Err(e),
            Err(e @ DiscoverError::Failed(_)) if rounds == 1 => return Err(e),
            Err(e) => problems = vec![e.to_string()],
        }
        if problems != shown_problems {
            for p in &problems {
                progress.line(&format!("discovery: {p}"));
            }
            shown_problems = problems.clone();
        }
        let names = roster.names();
        if let Some(seen) = confirming.take() {
            if seen == names {
                break;
            }
            progress.line(&format!(
                "the nodes changed ({} found now, {} before); polling on",
                names.len(),
                seen.len()
            ));
        }
        let count_ok = match expect.nodes {
            _ if names.is_empty() => false,
            Some(n) => fixed || names.len() == n,
            None => true,
        };
        if names.is_empty() {
            progress.update(0, "no node found yet");
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(poll_interval(0)).await;
            continue;
        }
        let slice_end = if fixed && roster.all_identified() {
            deadline
        } else {
            // Large networks are polled more slowly; give each slice a few rounds.
            deadline.min(Instant::now() + SLICE.max(poll_interval(names.len()) * 4))
        };
        let found = names.len();
        let formation = observer
            .wait_formed(&names, &expect.formation, slice_end, &mut |passing, all| {
                progress.update(
                    passing as u64,
                    &format!("{passing}/{all} formation checks hold over {found} nodes"),
                )
            })
            .await;
        let formed = formation.formed();
        last = Some((names.clone(), formation));
        if formed && count_ok {
            if fixed {
                break;
            }
            confirming = Some(names);
            continue;
        }
        if Instant::now() >= deadline {
            break;
        }
    }

    let (names, formation) = match last {
        Some((names, formation)) => (names, Some(formation)),
        None => (Vec::new(), None),
    };
    let formed_at = formation.as_ref().and_then(|f| f.formed_at);
    let observations = formation
        .as_ref()
        .map(|f| f.observations.clone())
        .unwrap_or_default();
    match formed_at {
        Some(t) => progress.line(&format!(
            "the {} nodes formed the network after {:.2}s",
            names.len(),
            t.as_secs_f64()
        )),
        None if names.is_empty() => progress.line(&format!(
            "no node found at {} within {}",
            source.describe(),
            humantime::format_duration(expect.within)
        )),
        None => progress.line(&format!(
            "the {} nodes found did not pass the formation checks within {}",
            names.len(),
            humantime::format_duration(expect.within)
        )),
    }

    let mut checks = vec![nodes_found(source, expect.nodes, &observations, &problems)];
    checks.push(formation_deadline_check(formed_at, expect.within));
    if let Some(f) = &formation {
        checks.extend(f.checks.iter().cloned());
    }

    let mut broadcast_stats: Option<BroadcastStats> = None;
    if let Some(bc) = &expect.broadcast {
        let live: Vec<String> = observations
            .iter()
            .filter(|o| o.status.is_some())
            .map(|o| o.name.clone())
            .collect();
        if live.is_empty() {
            progress.line("broadcast check skipped: no node answered");
        } else {
            progress.phase("broadcast", bc.count as u64);
            let label = format!("peerlab check {run_id}");
            let (stats, results) =
                broadcast_checks(&observer, bc, &names, &live, expect.seed, &label, progress).await;
            broadcast_stats = Some(stats);
            checks.extend(results);
        }
    }

    let meta = RunMeta {
        run_id: run_id.to_string(),
        topology: expect.name.clone(),
        runtime: format!("external ({})", source.describe()),
        seed: expect.seed,
        started_at,
        formation_time: formed_at,
    };
    let overlay = Overlay::build(&observations);
    let report = Report::new(meta, &observations, &overlay, checks, broadcast_stats);
    progress.finish();
    let endpoints = observer
        .endpoints()
        .into_iter()
        .filter(|e| names.contains(&e.name))
        .collect();
    Ok(RunOutcome {
        report,
        overlay,
        endpoints,
    })
}

/// Did discovery find the nodes it should: at least one, or exactly `expected`. The
/// measurement also says how many members the nodes themselves know, which is how many
/// nodes the network has.
fn nodes_found(
    source: &dyn Discover,
    expected: Option<usize>,
    observations: &[crate::orchestrator::NodeObservation],
    problems: &[String],
) -> CheckResult {
    let found = observations.len();
    let answering = observations.iter().filter(|o| o.status.is_some()).count();
    let known = observations
        .iter()
        .filter_map(|o| o.status.as_ref().map(|s| s.member_total()))
        .max();
    let mut measured = format!("{found} found, {answering} answering");
    if let Some(k) = known {
        measured.push_str(&format!("; the nodes know up to {k} members"));
    }
    let last_problem = if problems.is_empty() {
        String::new()
    } else {
        format!(" ({})", problems.join("; "))
    };
    let failure = if found == 0 {
        Some(format!(
            "no node was found at {}{last_problem}; {}",
            source.describe(),
            source.advice()
        ))
    } else if let Some(n) = expected.filter(|n| *n != found) {
        Some(format!(
            "expected {n} nodes but found {found} at {}{last_problem}; {}",
            source.describe(),
            if found < n {
                source.advice()
            } else {
                "more nodes run than expected: check --expect-nodes (or the topology's counts)"
                    .to_string()
            }
        ))
    } else if answering == 0 {
        Some(format!(
            "none of the {found} nodes found answered its status socket; {}",
            source.advice()
        ))
    } else {
        None
    };
    CheckResult::new(
        "nodes found",
        match expected {
            Some(n) => format!("{n} nodes"),
            None => "at least 1 node".to_string(),
        },
        measured,
        failure,
        json!({
            "source": source.describe(),
            "expected": expected,
            "found": found,
            "answering": answering,
            "known_members": known,
            "problems": problems,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::discover::Endpoints;

    #[tokio::test]
    async fn nodes_that_do_not_answer_keep_their_address_as_name() {
        let observer = Observer::new().expect("an observer");
        let mut roster = Roster::default();
        let found = vec![
            Found {
                status_url: "http://127.0.0.1:1".into(),
                hint: None,
            },
            Found {
                status_url: "http://127.0.0.1:2".into(),
                hint: Some("proj_peer_1".into()),
            },
        ];
        roster.update(found.clone(), &observer, false).await;
        assert_eq!(roster.names(), ["127.0.0.1:1", "proj_peer_1"]);
        assert!(!roster.all_identified());
        roster.update(found[..1].to_vec(), &observer, false).await;
        assert_eq!(roster.names(), ["127.0.0.1:1"]);
        let asked: Vec<String> = observer.endpoints().into_iter().map(|e| e.name).collect();
        assert_eq!(
            asked,
            ["127.0.0.1:1"],
            "a node no longer found is not asked"
        );
    }

    #[tokio::test]
    async fn nothing_answering_fails_with_advice() {
        let source = Endpoints::parse(["127.0.0.1:1"]).expect("valid");
        let mut expect = NetworkExpectation::formed_within(Duration::from_millis(300));
        expect.nodes = Some(2);
        let outcome = check_network(&source, &expect, "t-1", &mut Progress::quiet())
            .await
            .expect("checked");
        let report = outcome.report;
        assert!(!report.passed);
        let found = &report.checks[0];
        assert_eq!(found.name, "nodes found");
        let message = found.message.as_deref().unwrap_or_default();
        assert!(
            message.contains("expected 2 nodes but found 1"),
            "{message}"
        );
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.name == "all nodes ready" && !c.passed),
            "{:?}",
            report.checks
        );
    }
}
