//! The machine's own deadlines: an idle node wakes rarely, only when it asked to, and its
//! heartbeats, probes and floods still keep the network whole.

use std::time::Duration;

use super::fixtures::{formed, name};
use super::{Sim, TICK};

/// Wake-ups of `node` over `d` of virtual time, each checked against the deadline the node
/// asked for before it: the simulator runs timers only when due, so every wake-up must
/// come within one step of that deadline, never before it.
fn wakeups_over(sim: &mut Sim, node: &str, d: Duration) -> u64 {
    let before = sim.wakeups(node);
    let steps = d.as_nanos().div_ceil(TICK.as_nanos());
    for _ in 0..steps {
        let asked = sim.machine(node).poll_timeout();
        let woke = sim.wakeups(node);
        sim.run_for(TICK);
        if sim.wakeups(node) > woke {
            let asked = asked.expect("a node that woke had asked for a deadline");
            let now = sim.now();
            assert!(asked <= now, "{node} woke before its deadline");
            assert!(
                now - asked < TICK,
                "{node} woke {:?} after its deadline: the simulator missed it",
                now - asked
            );
        }
    }
    sim.wakeups(node) - before
}

#[test]
fn an_idle_node_wakes_about_once_per_heartbeat_round_and_only_at_its_deadlines() {
    let mut sim = formed(12, |_| {});
    let window = Duration::from_secs(60);
    let rounds = (window.as_millis() / 500) as u64;
    for n in ["n00", "n05", "n11"] {
        let woke = wakeups_over(&mut sim, n, window);
        // One wake-up per heartbeat round: probes and anti-entropy ride on rounds, and the
        // rounds of all nodes fall on the same instants. The fixed tick of old woke four
        // times per round (480 times here).
        assert!(
            woke <= rounds + rounds / 10,
            "{n} woke {woke} times in {window:?} of idleness ({rounds} heartbeat rounds)"
        );
        assert!(
            woke >= rounds / 2,
            "{n} woke only {woke} times in {window:?}: are its heartbeats still sent?"
        );
    }
    sim.check_formed(2)
        .unwrap_or_else(|why| panic!("the idle network came apart: {why}"));
    for n in sim.running() {
        assert!(
            sim.suspects(&n).is_empty(),
            "{n} suspects someone while idle"
        );
        assert_eq!(sim.counters(&n).members_declared_dead, 0);
    }
}

#[test]
fn after_its_timers_run_a_machine_never_asks_to_wake_in_the_past() {
    // The simulator asserts it after every wake-up; here under churn, floods and faults,
    // where most deadlines are in play at once (joins, suspicions, probes, retries).
    let mut sim = formed(10, |_| {});
    sim.broadcast("n03", "hello");
    sim.kill("n04");
    sim.freeze("n07");
    sim.run_for(Duration::from_secs(3));
    sim.spawn("n10", &["n00"]);
    sim.run_for(Duration::from_secs(3));
    sim.thaw("n07");
    sim.run_for(Duration::from_secs(20));
    for n in sim.running() {
        let now = sim.now();
        if let Some(next) = sim.machine(&n).poll_timeout() {
            assert!(next > now, "{n} asks to wake in the past");
        }
    }
    let alive: Vec<String> = (0..11).filter(|i| *i != 4).map(name).collect();
    assert_eq!(sim.running(), alive);
}

#[test]
fn a_lone_genesis_sleeps_until_something_happens() {
    let mut sim = Sim::new();
    sim.spawn("n00", &[]);
    let woke = wakeups_over(&mut sim, "n00", Duration::from_secs(30));
    // Nothing to watch, nobody to ping: no timer at all.
    assert!(woke <= 1, "a lone genesis woke {woke} times in 30 s");
    assert_eq!(sim.machine("n00").poll_timeout(), None);
}
