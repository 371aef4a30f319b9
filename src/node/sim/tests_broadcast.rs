//! Flooding: exactly-once delivery, duplicate accounting, hop counts and the bounds of the
//! seen set.

use std::time::Duration;

use super::Sim;
use super::fixtures::formed;
use crate::node::wire::{Flood, Message};

/// How often each running node delivered the message `id`.
fn deliveries(sim: &Sim, id: &str) -> Vec<(String, usize)> {
    sim.running()
        .into_iter()
        .map(|n| {
            let count = sim.delivered(&n).iter().filter(|m| m.id == id).count();
            (n, count)
        })
        .collect()
}

fn total_duplicates(sim: &Sim) -> u64 {
    sim.running()
        .iter()
        .map(|n| sim.counters(n).duplicates_dropped)
        .sum()
}

fn edges(sim: &Sim) -> u64 {
    sim.graph().values().map(|a| a.len() as u64).sum::<u64>() / 2
}

/// The flood `id` as `origin` delivered it, for replaying it.
fn replay_of(sim: &Sim, origin: &str, id: &str) -> Flood {
    let m = sim
        .delivered(origin)
        .into_iter()
        .find(|m| m.id == id)
        .expect("the origin delivered its own broadcast");
    Flood {
        id: m.id,
        title: m.title,
        message: m.message,
        time: m.time,
        origin: m.origin,
        hops: 0,
        event: None,
    }
}

#[test]
fn a_broadcast_reaches_everyone_exactly_once_along_shortest_paths() {
    let mut sim = formed(20, |_| {});
    let dups_before = total_duplicates(&sim);
    let id = sim.broadcast("n07", "hello world");
    sim.run_for(Duration::from_secs(1));

    for (n, count) in deliveries(&sim, &id) {
        assert_eq!(count, 1, "{n} delivered it {count} times");
    }
    // With equal latencies the first copy to arrive took a shortest path.
    let dist = sim.distances("n07");
    for n in sim.running() {
        let got = sim.delivered(&n);
        let m = got.iter().find(|m| m.id == id).unwrap();
        assert_eq!(m.hops, dist[&n], "hops at {n}");
        assert_eq!(m.origin, "n07");
        assert_eq!(m.message, "hello world");
    }
    // Flooding over a static graph: the origin sends on each of its links, every other
    // node forwards on all links but the one it heard it on. So 2E - N + 1 frames carry it,
    // of which N - 1 are first copies and the rest are counted as duplicates.
    let (e, n) = (edges(&sim), sim.running().len() as u64);
    assert_eq!(sim.flood_frames(&id), 2 * e - n + 1);
    assert_eq!(total_duplicates(&sim) - dups_before, 2 * (e - n + 1));
    assert!(e > n - 1, "degree >= 2 means cycles, so duplicates exist");
}

#[test]
fn concurrent_broadcasts_with_latency_are_each_delivered_once() {
    let mut sim = formed(15, |_| {});
    sim.set_latency_ticks(2);
    let ids: Vec<String> = ["n00", "n03", "n09", "n14"]
        .iter()
        .map(|o| sim.broadcast(o, &format!("from {o}")))
        .collect();
    sim.run_for(Duration::from_secs(3));
    for id in &ids {
        for (n, count) in deliveries(&sim, id) {
            assert_eq!(count, 1, "{n} delivered {id} {count} times");
        }
    }
    for n in sim.running() {
        assert_eq!(sim.delivered(&n).len(), ids.len(), "{n}");
    }
}

#[test]
fn the_seen_set_forgets_beyond_its_capacity() {
    let mut sim = formed(5, |cfg| cfg.seen_capacity = 4);
    let ids: Vec<String> = (0..10)
        .map(|i| sim.broadcast("n01", &format!("m{i}")))
        .collect();
    sim.run_for(Duration::from_secs(1));
    let target = "n02";
    let via = sim.neighbours(target)[0].clone();

    // The newest id is still known: a replay is a duplicate.
    let dups = sim.counters(target).duplicates_dropped;
    let newest = replay_of(&sim, "n01", &ids[9]);
    assert!(sim.inject(&via, target, Message::Broadcast(newest)));
    assert_eq!(sim.counters(target).duplicates_dropped, dups + 1);
    assert_eq!(deliveries(&sim, &ids[9])[2], (target.to_string(), 1));

    // The oldest fell out of a 4-entry set: a replay is delivered again.
    let oldest = replay_of(&sim, "n01", &ids[0]);
    assert!(sim.inject(&via, target, Message::Broadcast(oldest)));
    let again = sim
        .delivered(target)
        .iter()
        .filter(|m| m.id == ids[0])
        .count();
    assert_eq!(again, 2, "a 4-entry seen set cannot remember 10 ids");
}

#[test]
fn the_seen_set_forgets_ids_older_than_its_max_age() {
    let mut sim = formed(5, |cfg| cfg.seen_max_age = Duration::from_secs(5));
    let id = sim.broadcast("n01", "old news");
    sim.run_for(Duration::from_secs(1));
    let via = sim.neighbours("n02")[0].clone();
    let flood = replay_of(&sim, "n01", &id);

    assert!(sim.inject(&via, "n02", Message::Broadcast(flood.clone())));
    assert_eq!(deliveries(&sim, &id)[2].1, 1, "remembered within its age");

    sim.run_for(Duration::from_secs(6));
    assert!(sim.inject(&via, "n02", Message::Broadcast(flood)));
    assert_eq!(deliveries(&sim, &id)[2].1, 2, "forgotten after its age");
}
