//! Forming networks: alone, in pairs, one by one and all at once, and joining while no
//! genesis answers.

use std::time::Duration;

use super::Sim;
use super::fixtures::{name, until_formed};

#[test]
fn a_genesis_alone_is_joined_and_alone() {
    let mut sim = Sim::new();
    sim.spawn("g", &[]);
    sim.run_for(Duration::from_secs(10));
    assert!(sim.joined("g"));
    assert!(sim.neighbours("g").is_empty());
    assert_eq!(sim.members("g"), ["g"]);
}

#[test]
fn the_first_candidate_becomes_the_genesis_neighbour() {
    let mut sim = Sim::new();
    sim.spawn("g", &[]);
    sim.spawn("a", &["g"]);
    assert!(!sim.joined("a"), "nothing happened yet, a cannot be joined");
    until_formed(&mut sim, 1);
    assert_eq!(sim.neighbours("g"), ["a"]);
    assert_eq!(sim.neighbours("a"), ["g"]);
    assert_eq!(sim.members("a"), ["a", "g"]);
    assert_eq!(
        sim.open_pipes_between("a", "g"),
        1,
        "one link, queries hung up"
    );
    // Stays so: heartbeats keep an idle link alive.
    sim.run_for(Duration::from_secs(30));
    sim.check_formed(1).unwrap();
    assert_eq!(sim.counters("a").members_declared_dead, 0);
}

#[test]
fn a_third_node_links_to_both() {
    let mut sim = Sim::new();
    sim.spawn("g", &[]);
    sim.spawn("a", &["g"]);
    until_formed(&mut sim, 1);
    sim.spawn("b", &["g"]);
    until_formed(&mut sim, 2);
    assert_eq!(sim.neighbours("b"), ["a", "g"]);
}

#[test]
fn fifty_nodes_joining_one_by_one_form_one_overlay() {
    let mut sim = Sim::new();
    sim.spawn("n00", &[]);
    for i in 1..50 {
        sim.spawn(&name(i), &["n00"]);
        sim.run_for(Duration::from_millis(500));
    }
    until_formed(&mut sim, 2);
    assert_eq!(sim.running().len(), 50);
    // The genesis holds no special place: it is not everyone's neighbour.
    assert!(sim.neighbours("n00").len() < 49);
    assert_eq!(
        sim.counters("n00").members_declared_dead,
        0,
        "nobody died, nobody may be declared dead"
    );
    for n in sim.running() {
        for m in sim.running() {
            assert!(sim.open_pipes_between(&n, &m) <= 1, "{n} and {m}");
        }
    }
}

#[test]
fn fifty_nodes_joining_at_once_form_one_overlay() {
    let mut sim = Sim::new();
    sim.set_latency_ticks(1);
    sim.spawn("n00", &[]);
    for i in 1..50 {
        sim.spawn(&name(i), &["n00"]);
    }
    until_formed(&mut sim, 2);
    // Formed is stable: nothing is torn down once the joins are over.
    sim.run_for(Duration::from_secs(20));
    sim.check_formed(2).unwrap();
    let declared: u64 = sim
        .running()
        .iter()
        .map(|n| sim.counters(n).members_declared_dead)
        .sum();
    assert_eq!(declared, 0);
}

#[test]
fn a_candidate_retries_with_back_off_until_the_genesis_comes_up() {
    let mut sim = Sim::new();
    sim.spawn("a", &["g"]);
    sim.run_for(Duration::from_secs(20));
    assert!(
        !sim.joined("a"),
        "no genesis answered, a must not claim to be joined"
    );
    assert!(sim.neighbours("a").is_empty());
    let attempts = sim.dials_from("a").len();
    // Back-off: from 200 ms doubling to a 5 s ceiling (+ jitter up to half) gives a handful
    // of attempts in 20 s, not one per tick (200).
    assert!(
        (4..=15).contains(&attempts),
        "{attempts} join attempts in 20 s"
    );
    sim.spawn("g", &[]);
    until_formed(&mut sim, 1);
    assert_eq!(sim.neighbours("a"), ["g"]);
}

#[test]
fn seeded_runs_repeat_exactly() {
    let run = || {
        let mut sim = Sim::new();
        sim.set_latency_ticks(1);
        sim.spawn("n00", &[]);
        for i in 1..25 {
            sim.spawn(&name(i), &["n00"]);
        }
        sim.run_for(Duration::from_secs(15));
        let left: Vec<String> = (0..12).map(name).collect();
        sim.partition(&[&left]);
        sim.run_for(Duration::from_secs(15));
        sim.heal();
        sim.kill("n07");
        sim.run_for(Duration::from_secs(15));
        let dials: Vec<Vec<String>> = sim.running().iter().map(|n| sim.dials_from(n)).collect();
        let events: Vec<String> = sim
            .member_events()
            .iter()
            .map(|e| format!("{:?} {} {:?}", e.at, e.origin, e.event))
            .collect();
        (sim.graph(), dials, events)
    };
    let first = run();
    assert!(first.2.len() >= 25, "joins and a death were flooded");
    assert!(first == run(), "the same seeds gave a different run");
}

#[test]
fn a_full_node_refuses_a_link_but_points_at_its_neighbours() {
    use super::node_config;
    use crate::node::wire::{Intent, Message, PROTOCOL_VERSION};
    let mut sim = Sim::new();
    let mut genesis = node_config("g", &[]);
    genesis.degree = 2;
    genesis.max_peers = 2;
    sim.spawn_with(genesis);
    sim.spawn("a", &["g"]);
    until_formed(&mut sim, 1);
    sim.spawn("b", &["g"]);
    until_formed(&mut sim, 2);
    assert_eq!(sim.neighbours("g"), ["a", "b"], "g is full");

    let pipe = sim.connect_raw("g");
    sim.send_raw(
        pipe,
        super::fixtures::Stranger::new("z", "z:1", 1, 1).hello(PROTOCOL_VERSION, Intent::Link),
    );
    let got = sim.raw_received(pipe);
    let offered: Vec<String> = got
        .iter()
        .find_map(|m| match m {
            Message::NodesToConnect { nodes } => Some(nodes.iter().map(|n| n.id.clone()).collect()),
            _ => None,
        })
        .expect("a redirect before the refusal");
    let mut offered = offered;
    offered.sort();
    assert_eq!(offered, ["a", "b"]);
    assert!(
        matches!(got.last(), Some(Message::Disconnect { .. })),
        "then a refusal: {got:?}"
    );
    assert!(sim.raw_closed(pipe));
    assert_eq!(
        sim.neighbours("g"),
        ["a", "b"],
        "the refusal changed nothing"
    );
    assert_eq!(
        sim.members("g"),
        ["a", "b", "g"],
        "a refused stranger is no member"
    );
}

#[test]
fn no_node_ever_holds_more_links_than_max_peers() {
    use super::node_config;
    let mut sim = Sim::new();
    for i in 0..30 {
        let genesis: &[&str] = if i == 0 { &[] } else { &["n00"] };
        let mut cfg = node_config(&name(i), genesis);
        cfg.degree = 3;
        cfg.max_peers = 5;
        sim.spawn_with(cfg);
    }
    let mut worst = 0;
    for _ in 0..300 {
        sim.run_for(Duration::from_millis(100));
        for n in sim.running() {
            worst = worst.max(sim.neighbours(&n).len());
        }
    }
    assert!(worst <= 5, "a node held {worst} links with max_peers 5");
    until_formed(&mut sim, 2);
}

#[test]
fn a_degree_of_one_still_gives_every_node_two_links_in_a_network_of_three_or_more() {
    use super::node_config;
    let mut sim = Sim::new();
    for i in 0..6 {
        let genesis: &[&str] = if i == 0 { &[] } else { &["n00"] };
        let mut cfg = node_config(&name(i), genesis);
        cfg.degree = 1;
        sim.spawn_with(cfg);
        sim.run_for(Duration::from_millis(300));
    }
    until_formed(&mut sim, 2);
    // Cut one node down to a single link: repair must bring it back to two, not stop at one.
    let lonely = name(5);
    let mut links = sim.neighbours(&lonely);
    while links.len() > 1 {
        let other = links.pop().expect("a neighbour");
        assert!(sim.break_link(&lonely, &other));
    }
    sim.run_for(Duration::from_secs(10));
    assert!(
        sim.neighbours(&lonely).len() >= 2,
        "{lonely} stayed at {:?}",
        sim.neighbours(&lonely)
    );
}

#[test]
fn a_candidate_offered_only_full_nodes_asks_again_soon_but_backs_off_if_all_stay_full() {
    use super::{addr_of, node_config};
    let mut sim = Sim::new();
    for (name, genesis) in [("g", &[][..]), ("a", &["g"][..]), ("b", &["g"][..])] {
        let mut cfg = node_config(name, genesis);
        cfg.degree = 2;
        cfg.max_peers = 2;
        sim.spawn_with(cfg);
        sim.run_for(Duration::from_millis(300));
    }
    until_formed(&mut sim, 2);
    assert_eq!(sim.neighbours("g"), ["a", "b"], "every node is full");

    sim.spawn("c", &["g"]);
    let asks = |sim: &Sim| {
        sim.dials_from("c")
            .iter()
            .filter(|a| **a == addr_of("g"))
            .count()
    };
    // Each attempt dials the genesis to ask, and again if it is among the nodes offered.
    sim.run_for(Duration::from_secs(1));
    let first_second = asks(&sim);
    assert!(
        first_second >= 10,
        "refused only for lack of room, the candidate asks again at once \
         ({first_second} dials of the genesis in 1 s)"
    );
    sim.run_for(Duration::from_secs(9));
    let next_nine = asks(&sim) - first_second;
    assert!(
        next_nine < first_second * 3,
        "a network with no room at all is asked with back-off, not in a loop \
         ({first_second} dials in the first second, {next_nine} in the next nine)"
    );
    assert!(!sim.joined("c"));
}
