//! The machine's own deadlines: an idle node wakes rarely, only when it asked to, and its
//! heartbeats, probes and floods still keep the network whole.

use std::time::Duration;

use super::fixtures::{formed, name, until_formed};
use super::{Sim, TICK, node_config};

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

/// Dials `node` makes over `d`: in an idle network with no fault, only random probes.
fn dials_over(sim: &mut Sim, node: &str, d: Duration) -> usize {
    let before = sim.dials_from(node).len();
    sim.run_for(d);
    sim.dials_from(node).len() - before
}

#[test]
fn a_quiet_network_probes_random_members_slowly_and_at_swims_pace_again_after_a_change() {
    let mut sim = formed(12, |_| {});
    let cfg = node_config("x", &[]);
    let quiet_period = cfg.heartbeat_interval * cfg.quiet_probe_rounds;
    let fast_period = cfg.heartbeat_interval * 2;
    // Quiet: the member table has not changed for `sync_interval`.
    sim.run_for(cfg.sync_interval);
    let window = Duration::from_secs(30);
    let before: Vec<usize> = sim
        .running()
        .iter()
        .map(|n| sim.dials_from(n).len())
        .collect();
    sim.run_for(window);
    let quiet_most = (window.as_millis() / quiet_period.as_millis()) as usize + 1;
    for (n, before) in sim.running().iter().zip(before) {
        let probes = sim.dials_from(n).len() - before;
        assert!(
            probes <= quiet_most,
            "{n} made {probes} random probes in {window:?} of quiet (at most {quiet_most} expected)"
        );
        assert!(
            probes >= quiet_most / 2,
            "{n} made only {probes} random probes in {window:?}: does it still probe at all?"
        );
    }
    sim.check_formed(2).unwrap();

    // A change (a node joins): every member table changes, and the old nodes probe at
    // SWIM's pace again for as long as things move and `sync_interval` after.
    sim.spawn("n12", &["n00"]);
    let window = cfg.sync_interval;
    let old: Vec<String> = (0..12).map(name).collect();
    let mut probes = 0;
    let before: Vec<usize> = old.iter().map(|n| sim.dials_from(n).len()).collect();
    sim.run_for(window);
    for (n, before) in old.iter().zip(before) {
        probes += sim.dials_from(n).len() - before;
    }
    let fast = old.len() * (window.as_millis() / fast_period.as_millis()) as usize;
    let slow = old.len() * ((window.as_millis() / quiet_period.as_millis()) as usize + 1);
    assert!(
        probes >= fast / 2 && probes > slow,
        "the old nodes made {probes} probes in the {window:?} after a join \
         (SWIM's pace: about {fast}; the quiet pace: at most {slow})"
    );
    until_formed(&mut sim, 2);
    let quiet = dials_over(&mut sim, "n05", window);
    assert!(
        quiet <= 5,
        "n05 still probes fast once things settled: {quiet}"
    );
}

#[test]
fn after_a_loss_random_probes_keep_swims_pace_even_while_the_table_is_still() {
    let mut sim = formed(12, |_| {});
    let cfg = node_config("x", &[]);
    let fast_period = cfg.heartbeat_interval * 2;
    let quiet_period = cfg.heartbeat_interval * cfg.quiet_probe_rounds;
    sim.run_for(cfg.sync_interval);
    // A member leaves: a loss. Once the leave has spread, the member tables stay still
    // for longer than `sync_interval`, but a wave of losses (a partition's tail) may
    // still be under way, so the pace stays fast for `quiet_after_loss`.
    sim.leave("n07");
    until_formed(&mut sim, 2);
    sim.run_for(cfg.sync_interval * 2);
    let window = Duration::from_secs(20);
    assert!(cfg.sync_interval * 2 + window < cfg.quiet_after_loss);
    let nodes: Vec<String> = sim.running().iter().map(|n| n.to_string()).collect();
    let before: Vec<usize> = nodes.iter().map(|n| sim.dials_from(n).len()).collect();
    sim.run_for(window);
    let probes: usize = nodes
        .iter()
        .zip(before)
        .map(|(n, before)| sim.dials_from(n).len() - before)
        .sum();
    let fast = nodes.len() * (window.as_millis() / fast_period.as_millis()) as usize;
    let slow = nodes.len() * ((window.as_millis() / quiet_period.as_millis()) as usize + 1);
    assert!(
        probes >= fast / 2 && probes > slow,
        "{probes} random probes in the {window:?} after a loss settled (SWIM's pace: about \
         {fast}; the quiet pace: at most {slow})"
    );
}

#[test]
fn with_a_long_timeout_quiet_links_are_pinged_every_half_timeout_and_deaths_still_found_in_time() {
    // The settings of topologies/three-hundred.yaml: a ping per round would be four per
    // timeout; two per timeout are enough on TCP (late, never lost).
    let slow = |c: &mut crate::node::machine::Config| {
        c.heartbeat_interval = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(4);
    };
    let mut sim = formed(12, slow);
    sim.run_for(Duration::from_secs(10));
    let window = Duration::from_secs(60);
    let before: Vec<(String, u64, u64)> = sim
        .running()
        .into_iter()
        .map(|n| {
            let c = sim.counters(&n);
            (n, c.heartbeat_rounds, c.timer_wakeups)
        })
        .collect();
    sim.run_for(window);
    for (n, rounds, wakeups) in before {
        let pinged = sim.counters(&n).heartbeat_rounds - rounds;
        let woke = sim.counters(&n).timer_wakeups - wakeups;
        // One ping round every 2 s, and no wake-up in between but the rare probe.
        assert!(
            (25..=35).contains(&pinged),
            "{n} pinged its links in {pinged} rounds of {window:?} (every 2 s: about 30)"
        );
        assert!(woke <= 40, "{n} woke {woke} times in {window:?}");
        assert!(
            sim.suspects(&n).is_empty(),
            "{n} suspects someone while idle"
        );
        assert_eq!(sim.counters(&n).members_declared_dead, 0);
    }

    // Sparser pings do not make detection slower: a dead neighbour is suspected within
    // the heartbeat timeout (plus a round) of its death.
    let victim = "n05";
    let watchers = sim.neighbours(victim);
    assert!(!watchers.is_empty());
    sim.kill(victim);
    let found = sim.run_until(Duration::from_secs(6), |s| {
        watchers.iter().all(|w| {
            s.suspects(w).iter().any(|x| x == victim) || !s.members(w).iter().any(|m| m == victim)
        })
    });
    let took = found.expect("the victim's neighbours did not suspect it within 6 s");
    assert!(
        took <= Duration::from_secs(5),
        "suspected {took:?} after the death (heartbeat timeout 4 s)"
    );
}
