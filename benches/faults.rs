//! Fault benchmark (issue 5): how fast a local network of N `peerlab node` processes heals.
//!
//! Run: `cargo bench --bench faults` (N = 100), `cargo bench --bench faults -- 50` or
//! `PEERLAB_BENCH_NODES=50` for another size, `-- --only mass|frozen|partition` (comma
//! lists allowed) for some scenarios only. Prints a markdown table and writes it to
//! `target/bench/faults.md`; `PEERLAB_BENCH_KEEP_LOGS=1` keeps node logs under
//! `target/bench/runs/`.
//!
//! Each scenario gets a fresh network (a [`Lab`] on the local runtime) of one genesis and
//! N-1 peers with the built-in node settings, formed until the topology's formation checks
//! hold: every node ready, one component, every degree >= 2, full membership.
//! Then, with the time counted from the fault's instant to the end of the first polling
//! round of the lab's observer (every live node asked at once: every 150 ms up to N=50,
//! 3 ms per node beyond, at most 1 s) that saw the condition hold:
//! - mass: SIGKILL half of the nodes at once, all peers (seeded choice; the genesis
//!   survives): survivors one component, degree >= 2, members = survivors (goal 10 s); then
//!   5 broadcasts from different survivors must reach every other survivor (goal 100%).
//! - frozen: SIGSTOP one peer: first listed as a suspect by any node (goal 3 s), in no live
//!   node's member list (goal 10 s); then SIGCONT and the time until it is back everywhere.
//! - partition: cut the nodes into two halves of N/2 (the genesis and N/2-1 peers against
//!   the other peers) through the nodes' admin endpoints, hold until each half lists only
//!   itself, heal: one component with identical member lists of all N (goal 30 s).
//!
//! A condition not reached within 60 s is recorded as "not reached" and the bench goes on.
//! Faults are the lab's (`kill`, `pause`, `resume`, `partition`, `heal`), waits are the
//! lab's (`wait_formed`, `wait_until`, `wait_delivered`), and whether the overlay holds is
//! decided by the orchestrator's checks, as a topology's `expect` would decide it.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use peerlab::lab::{FormationExpectation, Lab, NodeObservation};
use peerlab::orchestrator::observer::poll_interval;
use peerlab::orchestrator::{BroadcastExpectation, evaluate_broadcast};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use support::lab::{failing_checks, local_lab, run_pids, shutdown};

/// Seed of the victim choices and of the topology (node randomness).
const SEED: u64 = 5;
/// How long a network may take to form before the scenario is given up.
const FORM_WITHIN: Duration = Duration::from_secs(120);
/// How long any condition after a fault is waited for.
const DEADLINE: Duration = Duration::from_secs(60);
/// Broadcasts injected after the mass failure, each from a different survivor.
const BROADCASTS: usize = 5;
/// How long the broadcasts may take to reach every survivor.
const DELIVER_WITHIN: Duration = Duration::from_secs(15);
/// The smallest network where half can die and the survivors still keep degree >= 2.
const MIN_NODES: usize = 8;

const MASS_GOAL: Duration = Duration::from_secs(10);
const SUSPECT_GOAL: Duration = Duration::from_secs(3);
const REMOVED_GOAL: Duration = Duration::from_secs(10);
const HEAL_GOAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Mass,
    Frozen,
    Partition,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::Mass, Scenario::Frozen, Scenario::Partition];

    fn key(self) -> &'static str {
        match self {
            Scenario::Mass => "mass",
            Scenario::Frozen => "frozen",
            Scenario::Partition => "partition",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::Mass => "mass failure",
            Scenario::Frozen => "frozen node",
            Scenario::Partition => "partition heal",
        }
    }
}

enum Value {
    /// From the fault; `None`: not reached within [`DEADLINE`].
    Time(Option<Duration>),
    Delivery {
        delivered: usize,
        expected: usize,
    },
    /// The step could not be carried out (see the notes).
    Failed,
}

enum Goal {
    AtMost(Duration),
    AllDelivered,
    None,
}

struct Row {
    nodes: usize,
    scenario: Scenario,
    what: String,
    value: Value,
    goal: Goal,
}

/// Rows and the notes that explain them (what was done, what failed, how busy the host was).
struct Section {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Teardown problems: node processes or faults left behind.
    leftovers: Option<String>,
    /// The scenario's run, once its lab started.
    run_id: Option<String>,
}

impl Section {
    fn row(&mut self, n: usize, scenario: Scenario, what: &str, value: Value, goal: Goal) {
        self.rows.push(Row {
            nodes: n,
            scenario,
            what: what.to_string(),
            value,
            goal,
        });
    }
}

/// One genesis and N-1 peers, built-in node settings, all peers started at once; formed
/// means the topology's formation checks hold: every node ready, one component, every
/// degree >= 2, full membership.
fn topology_yaml(scenario: Scenario, n: usize) -> String {
    format!(
        "name: faults-{}-{n}\nseed: {SEED}\ngenesis:\n  count: 1\n\
         groups:\n  - name: peers\n    count: {}\n\
         checks:\n  formation:\n    within: {}s\n    min_degree: 2\n",
        scenario.key(),
        n - 1,
        FORM_WITHIN.as_secs()
    )
}

fn shuffled(mut names: Vec<String>, salt: u64) -> Vec<String> {
    names.shuffle(&mut StdRng::seed_from_u64(SEED ^ salt));
    names
}

/// Every node of the run, genesis first.
fn all(lab: &Lab) -> Vec<String> {
    lab.node_names()
}

/// The peers of the run: every node but the genesis ones, which the plan lists first.
fn peers(lab: &Lab) -> Vec<String> {
    let mut names = lab.node_names();
    names.split_off(lab.topology().genesis.count.min(names.len()))
}

fn without(all: &[String], gone: &[String]) -> Vec<String> {
    all.iter().filter(|n| !gone.contains(n)).cloned().collect()
}

/// Node ids by name, from a round where every node answered.
fn ids(observations: &[NodeObservation]) -> HashMap<String, String> {
    observations
        .iter()
        .filter_map(|o| o.status.as_ref().map(|s| (o.name.clone(), s.id.clone())))
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Waits until the network formed ([`Lab::wait_formed`]); returns the formation time,
/// counted from the start of the run, and the ids.
async fn form(lab: &Lab) -> Result<(Duration, HashMap<String, String>), String> {
    let formation = lab
        .wait_formed(FORM_WITHIN)
        .await
        .map_err(|e| e.to_string())?;
    match formation.formed_at {
        Some(t) => Ok((t, ids(&formation.observations))),
        None => {
            let failures: Vec<String> = formation
                .failures()
                .iter()
                .map(|c| format!("{}: {}", c.name, c.message.as_ref().unwrap_or(&c.measured)))
                .collect();
            Err(format!(
                "the network of {} nodes did not form within {FORM_WITHIN:?}: {}",
                formation.observations.len(),
                failures.join("; ")
            ))
        }
    }
}

/// What a wait after a fault saw.
struct Since {
    /// From the fault to the end of the first round that saw the condition hold; `None`:
    /// it did not within [`DEADLINE`].
    after: Option<Duration>,
    /// Why the condition did not hold in the last round.
    problem: Option<String>,
}

/// Polls the live nodes with [`Lab::wait_until`] until `check` holds, at most until
/// [`DEADLINE`] after `fault`. `check` hears every round's observations and the time since
/// the fault at the end of that round, and says why the condition does not hold yet.
async fn wait_since<F>(lab: &Lab, fault: Instant, mut check: F) -> Since
where
    F: FnMut(&[NodeObservation], Duration) -> Option<String> + Send,
{
    let mut held = None;
    let waited = lab
        .wait_until(DEADLINE.saturating_sub(fault.elapsed()), |obs| {
            let at = fault.elapsed();
            let problem = check(obs, at);
            if problem.is_none() {
                held = Some(at);
            }
            problem
        })
        .await;
    match waited {
        Ok(w) => Since {
            after: held.filter(|_| w.held()),
            problem: w.problem,
        },
        Err(e) => Since {
            after: None,
            problem: Some(e.to_string()),
        },
    }
}

/// Waits until the orchestrator's formation checks of `expectation` hold over the live
/// nodes and tells, for each check, the last round that saw it fail: which one the recovery
/// waited for.
async fn watch_overlay(
    lab: &Lab,
    fault: Instant,
    expectation: &FormationExpectation,
) -> (Since, String) {
    let mut last_failed: BTreeMap<String, Duration> = BTreeMap::new();
    let since = wait_since(lab, fault, |obs, at| {
        let failures = failing_checks(obs, expectation);
        for (name, _) in &failures {
            last_failed.insert(name.clone(), at);
        }
        failures
            .into_iter()
            .next()
            .map(|(name, why)| format!("{name}: {why}"))
    })
    .await;
    let mut last: Vec<(String, Duration)> = last_failed.into_iter().collect();
    last.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
    let text = if last.is_empty() {
        "held at the first poll".to_string()
    } else {
        let listed: Vec<String> = last
            .iter()
            .map(|(name, at)| format!("{name} at {}", secs(*at)))
            .collect();
        format!("last seen failing: {}", listed.join(", "))
    };
    (since, text)
}

/// The topology's formation checks: every node ready, one component, degree >= 2, full
/// membership (of the live nodes).
fn formed(lab: &Lab) -> FormationExpectation {
    lab.topology().checks.formation.expectation()
}

/// Kills half of the nodes, all of them peers, at once; times the survivors' repair, then
/// the delivery of broadcasts among them.
async fn mass(lab: &Lab, n: usize, section: &mut Section) {
    let s = Scenario::Mass;
    let victims: Vec<String> = shuffled(peers(lab), n as u64)
        .into_iter()
        .take(n / 2)
        .collect();
    let survivors = without(&all(lab), &victims);
    section.notes.push(format!(
        "mass failure: SIGKILL {} of the {} peers at once (seed {SEED}; the genesis survives), \
         {} survivors",
        victims.len(),
        n - 1,
        survivors.len()
    ));
    let t0 = Instant::now();
    for v in &victims {
        if let Err(e) = lab.kill(v).await {
            section
                .notes
                .push(format!("mass failure: killing {v} failed: {e}"));
        }
    }
    let (waited, last) = watch_overlay(lab, t0, &formed(lab)).await;
    section.notes.push(format!("mass failure: repair {last}"));
    if let Some(p) = &waited.problem {
        section
            .notes
            .push(format!("mass failure: after {DEADLINE:?}: {p}"));
    }
    section.row(
        n,
        s,
        "survivors: 1 component, degree >= 2, members = survivors",
        Value::Time(waited.after),
        Goal::AtMost(MASS_GOAL),
    );

    let senders: Vec<String> = shuffled(survivors.clone(), 0x6272_6f61)
        .into_iter()
        .take(BROADCASTS)
        .collect();
    let (injected, failed) = lab.observer().inject(&senders, "faults bench").await;
    for f in failed {
        section.notes.push(format!("mass failure: {f}"));
    }
    let ids: Vec<String> = injected.iter().map(|b| b.id.clone()).collect();
    let delivered = match lab.wait_delivered(&ids, DELIVER_WITHIN).await {
        Ok(d) => d.delivered,
        Err(e) => {
            section.notes.push(format!(
                "mass failure: following the broadcasts failed: {e}"
            ));
            BTreeMap::new()
        }
    };
    let expect = BroadcastExpectation {
        deliver_within: DELIVER_WITHIN,
        reliability: 1.0,
    };
    let (stats, _) = evaluate_broadcast(&injected, &delivered, &expect, &survivors);
    // Broadcasts that could not even be injected count as delivered to nobody.
    let per_message = survivors.len() - 1;
    let expected = senders.len() * per_message;
    let got: usize = stats.messages.iter().map(|m| m.delivered).sum();
    let missing: BTreeSet<&str> = stats
        .messages
        .iter()
        .flat_map(|m| m.missing.iter().map(String::as_str))
        .collect();
    section.notes.push(format!(
        "mass failure: {} broadcasts from different survivors, slowest delivery {}, \
         {} duplicate deliveries{}",
        injected.len(),
        stats
            .max_latency_secs
            .map_or("-".to_string(), |l| format!("{:.0} ms", l * 1000.0)),
        stats.duplicate_deliveries,
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                ", missed by {}",
                missing.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
    ));
    section.row(
        n,
        s,
        &format!(
            "broadcast delivery afterwards ({} broadcasts x {per_message} other survivors)",
            senders.len()
        ),
        Value::Delivery {
            delivered: got,
            expected,
        },
        Goal::AllDelivered,
    );
}

/// Pauses one peer; times its suspicion and its removal everywhere, then its return.
async fn frozen(lab: &Lab, n: usize, ids: &HashMap<String, String>, section: &mut Section) {
    let s = Scenario::Frozen;
    let Some(victim) = shuffled(peers(lab), n as u64 + 1).into_iter().next() else {
        return;
    };
    let Some(victim_id) = ids.get(&victim).cloned() else {
        section
            .notes
            .push(format!("frozen node: no id known for {victim}"));
        return;
    };
    section.notes.push(format!(
        "frozen node: SIGSTOP {victim} (seed {SEED}), watched from the other {} nodes",
        n - 1
    ));
    let t0 = Instant::now();
    if let Err(e) = lab.pause(&victim).await {
        section
            .notes
            .push(format!("frozen node: pausing {victim} failed: {e}"));
        section.row(n, s, "SIGSTOP", Value::Failed, Goal::None);
        return;
    }
    // The lab observes live nodes only: the paused one is left out from here on.
    let mut suspected = None;
    let waited = wait_since(lab, t0, |obs, at| {
        let lists = |o: &NodeObservation, members: bool| {
            o.status.as_ref().is_some_and(|st| {
                let list = if members { &st.members } else { &st.suspects };
                list.iter().any(|p| p.id == victim_id)
            })
        };
        if suspected.is_none() && obs.iter().any(|o| lists(o, false)) {
            suspected = Some(at);
        }
        let silent = obs.iter().filter(|o| o.status.is_none()).count();
        let listing = obs.iter().filter(|o| lists(o, true)).count();
        match (silent, listing) {
            (0, 0) => None,
            (0, k) => Some(format!("{k} live node(s) still list {victim} as a member")),
            (k, _) => Some(format!("{k} live node(s) did not answer")),
        }
    })
    .await;
    if suspected.is_none() {
        section.notes.push(format!(
            "frozen node: no poll saw {victim} among any node's suspects"
        ));
    }
    if let Some(p) = &waited.problem {
        section
            .notes
            .push(format!("frozen node: after {DEADLINE:?}: {p}"));
    }
    section.row(
        n,
        s,
        "suspected by a node (`suspects`)",
        Value::Time(suspected),
        Goal::AtMost(SUSPECT_GOAL),
    );
    section.row(
        n,
        s,
        "in no live node's member list",
        Value::Time(waited.after),
        Goal::AtMost(REMOVED_GOAL),
    );

    let t1 = Instant::now();
    if let Err(e) = lab.resume(&victim).await {
        section
            .notes
            .push(format!("frozen node: resuming {victim} failed: {e}"));
        section.row(n, s, "SIGCONT", Value::Failed, Goal::None);
        return;
    }
    let (back, last) = watch_overlay(lab, t1, &formed(lab)).await;
    section
        .notes
        .push(format!("frozen node: after SIGCONT, {last}"));
    if let Some(p) = &back.problem {
        section
            .notes
            .push(format!("frozen node: after SIGCONT and {DEADLINE:?}: {p}"));
    }
    section.row(
        n,
        s,
        "after SIGCONT: all N, 1 component, degree >= 2, full membership",
        Value::Time(back.after),
        Goal::None,
    );
}

/// Why the nodes do not each list exactly their own half; `None` when they do.
fn halves_problem(
    obs: &[NodeObservation],
    side_of: &HashMap<String, usize>,
    side_ids: &[BTreeSet<String>; 2],
) -> Option<String> {
    let mut wrong = 0;
    for o in obs {
        let Some(st) = &o.status else {
            return Some(format!("{} did not answer", o.name));
        };
        let side = side_of.get(&o.name).copied().unwrap_or(0);
        let members: BTreeSet<String> = st.members.iter().map(|p| p.id.clone()).collect();
        if members != side_ids[side] {
            wrong += 1;
        }
    }
    (wrong > 0).then(|| format!("{wrong} node(s) list members beyond their own half"))
}

/// Splits the network in two halves, waits until each sees only itself, heals, and times
/// the merge.
async fn partition(lab: &Lab, n: usize, ids: &HashMap<String, String>, section: &mut Section) {
    let s = Scenario::Partition;
    let genesis: Vec<String> = without(&all(lab), &peers(lab));
    let mut side_a = genesis.clone();
    let mut rest = shuffled(peers(lab), n as u64 + 2);
    let take = (n / 2).saturating_sub(side_a.len());
    side_a.extend(rest.drain(..take.min(rest.len())));
    let sides = [side_a, rest];
    section.notes.push(format!(
        "partition heal: {} nodes (the genesis and {take} peers, seed {SEED}) cut from the other \
         {} through /admin/block, both ways",
        sides[0].len(),
        sides[1].len()
    ));
    let side_of: HashMap<String, usize> = sides
        .iter()
        .enumerate()
        .flat_map(|(i, side)| side.iter().map(move |name| (name.clone(), i)))
        .collect();
    let side_ids: [BTreeSet<String>; 2] = [0, 1].map(|i| {
        sides[i]
            .iter()
            .filter_map(|name| ids.get(name).cloned())
            .collect()
    });
    let t0 = Instant::now();
    if let Err(e) = lab.partition(sides.clone()).await {
        section
            .notes
            .push(format!("partition heal: the partition failed: {e}"));
        section.row(n, s, "partition", Value::Failed, Goal::None);
        return;
    }
    let split = wait_since(lab, t0, |obs, _| halves_problem(obs, &side_of, &side_ids)).await;
    if let Some(p) = &split.problem {
        section.notes.push(format!(
            "partition heal: healed anyway after {DEADLINE:?} of partition: {p}"
        ));
    }
    section.row(
        n,
        s,
        "partitioned: each half lists only itself",
        Value::Time(split.after),
        Goal::None,
    );

    let t1 = Instant::now();
    if let Err(e) = lab.heal().await {
        section
            .notes
            .push(format!("partition heal: the heal failed: {e}"));
        section.row(n, s, "heal", Value::Failed, Goal::None);
        return;
    }
    // Merged: every node ready, one component, identical member lists; any degree.
    let merged_overlay = FormationExpectation {
        min_degree: None,
        ..formed(lab)
    };
    let (merged, last) = watch_overlay(lab, t1, &merged_overlay).await;
    section
        .notes
        .push(format!("partition heal: after the heal, {last}"));
    if let Some(p) = &merged.problem {
        section
            .notes
            .push(format!("partition heal: after {DEADLINE:?}: {p}"));
    }
    section.row(
        n,
        s,
        "after heal: all N, 1 component, identical member lists",
        Value::Time(merged.after),
        Goal::AtMost(HEAL_GOAL),
    );
}

/// A fresh network for one scenario, the scenario, and a teardown that proves no process
/// is left (also when formation failed).
async fn run(scenario: Scenario, n: usize, runs_dir: &Path) -> Section {
    let mut section = Section {
        rows: Vec::new(),
        notes: Vec::new(),
        leftovers: None,
        run_id: None,
    };
    let load_before = support::load_average();
    let lab = match local_lab(&topology_yaml(scenario, n), runs_dir)
        .start()
        .await
    {
        Ok(lab) => lab,
        Err(e) => {
            section.notes.push(format!(
                "{}: starting {n} nodes failed: {e}",
                scenario.title()
            ));
            section.row(n, scenario, "start", Value::Failed, Goal::None);
            return section;
        }
    };
    section.run_id = Some(lab.run_id().to_string());
    match form(&lab).await {
        Ok((formed, ids)) => {
            section.notes.push(format!(
                "{}: network formed in {} (load average {load_before})",
                scenario.title(),
                secs(formed)
            ));
            match scenario {
                Scenario::Mass => mass(&lab, n, &mut section).await,
                Scenario::Frozen => frozen(&lab, n, &ids, &mut section).await,
                Scenario::Partition => partition(&lab, n, &ids, &mut section).await,
            }
        }
        Err(e) => {
            section.notes.push(format!("{}: {e}", scenario.title()));
            section.row(n, scenario, "formation", Value::Failed, Goal::None);
        }
    }
    let load_after = support::load_average();
    section.leftovers = shutdown(lab).await.err();
    section.notes.push(format!(
        "{}: load average at the end {load_after}",
        scenario.title()
    ));
    section
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Time(Some(d)) => secs(*d),
        Value::Time(None) => format!("not reached in {} s", DEADLINE.as_secs()),
        Value::Delivery {
            delivered,
            expected,
        } => {
            let pct = if *expected == 0 {
                0.0
            } else {
                100.0 * *delivered as f64 / *expected as f64
            };
            format!("{pct:.1}% ({delivered}/{expected})")
        }
        Value::Failed => "failed".to_string(),
    }
}

fn goal_text(g: &Goal) -> String {
    match g {
        Goal::AtMost(d) => format!("<= {} s", d.as_secs()),
        Goal::AllDelivered => "100%".to_string(),
        Goal::None => "-".to_string(),
    }
}

fn verdict(v: &Value, g: &Goal) -> &'static str {
    let met = match (g, v) {
        (Goal::None, _) => return "-",
        (Goal::AtMost(goal), Value::Time(Some(d))) => d <= goal,
        (
            Goal::AllDelivered,
            Value::Delivery {
                delivered,
                expected,
            },
        ) => *expected > 0 && delivered == expected,
        _ => false,
    };
    if met { "met" } else { "MISSED" }
}

/// How often the observer polled at each size (it polls larger networks less often).
fn poll_rates(sections: &[Section]) -> String {
    let sizes: BTreeSet<usize> = sections
        .iter()
        .flat_map(|s| s.rows.iter().map(|r| r.nodes))
        .collect();
    let rates: Vec<String> = sizes
        .into_iter()
        .map(|n| format!("every {} ms at N={n}", poll_interval(n).as_millis()))
        .collect();
    rates.join(", ")
}

fn table(sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fault recovery of local `peerlab node` networks ({}; one genesis and N-1 peers, \
         built-in node settings). Times run from the fault to the end of the first status \
         poll round of the lab's observer (all live nodes at once, {}) that saw the \
         condition hold.\n",
        support::build_line(),
        poll_rates(sections)
    );
    let _ = writeln!(out, "| N | scenario | condition | measured | goal | met |");
    let _ = writeln!(out, "|---:|---|---|---:|---:|---|");
    for r in sections.iter().flat_map(|s| &s.rows) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.nodes,
            r.scenario.title(),
            r.what,
            value_text(&r.value),
            goal_text(&r.goal),
            verdict(&r.value, &r.goal)
        );
    }
    out.push('\n');
    for note in sections.iter().flat_map(|s| &s.notes) {
        let _ = writeln!(out, "- {note}");
    }
    for problem in sections.iter().filter_map(|s| s.leftovers.as_ref()) {
        let _ = writeln!(out, "- TEARDOWN LEFT SOMETHING: {problem}");
    }
    out
}

/// `--only mass,frozen` (or repeated); every scenario when absent. Exits 2 on a typo.
fn scenarios() -> Vec<Scenario> {
    let wanted = support::flag_values("only");
    if wanted.is_empty() {
        return Scenario::ALL.to_vec();
    }
    let mut chosen = Vec::new();
    for w in &wanted {
        match Scenario::ALL.iter().find(|s| s.key() == w) {
            Some(s) if !chosen.contains(s) => chosen.push(*s),
            Some(_) => {}
            None => {
                eprintln!("unknown scenario {w:?} in --only; choose from mass, frozen, partition");
                std::process::exit(2);
            }
        }
    }
    chosen
}

fn main() {
    let chosen = scenarios();
    let sizes: Vec<usize> = support::sizes(&[100])
        .into_iter()
        .filter(|n| {
            let ok = *n >= MIN_NODES;
            if !ok {
                eprintln!("skipping N={n}: the fault scenarios need at least {MIN_NODES} nodes");
            }
            ok
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runs = support::RunsDir::new();
    let mut sections = Vec::new();
    for &n in &sizes {
        for &scenario in &chosen {
            eprintln!("{n} nodes: {}...", scenario.title());
            sections.push(runtime.block_on(run(scenario, n, runs.path())));
        }
    }
    drop(runtime);
    runs.announce();
    support::publish("faults.md", &table(&sections));
    let left: Vec<u32> = sections
        .iter()
        .filter_map(|s| s.run_id.as_deref())
        .flat_map(run_pids)
        .collect();
    assert!(
        left.is_empty() && sections.iter().all(|s| s.leftovers.is_none()),
        "node processes left behind: {left:?}; see the notes above"
    );
}
