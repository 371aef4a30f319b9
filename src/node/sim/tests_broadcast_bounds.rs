//! Broadcast bounds against a hostile neighbour: oversize floods, flood storms over a
//! link's rate, and the byte budget of the delivered ring.

use std::time::Duration;

use super::Sim;
use super::fixtures::formed;
use crate::node::machine::{BroadcastError, LinkDrops};
use crate::node::wire::{Flood, Message, TITLE_BROADCAST};

/// A user broadcast as a hostile neighbour would forge it.
fn forged(id: &str, message: String) -> Flood {
    Flood {
        id: id.to_string(),
        title: TITLE_BROADCAST.to_string(),
        message,
        time: 0.0,
        origin: "mallory".to_string(),
        hops: 0,
        event: None,
    }
}

fn drops_from(sim: &Sim, target: &str, peer: &str) -> LinkDrops {
    sim.machine(target)
        .link_drops()
        .into_iter()
        .find(|(id, _)| id == peer)
        .map(|(_, d)| d)
        .unwrap_or_default()
}

fn delivered_anywhere(sim: &Sim, id: &str) -> Vec<String> {
    sim.running()
        .into_iter()
        .filter(|n| sim.delivered(n).iter().any(|m| m.id == id))
        .collect()
}

#[test]
fn an_oversize_flood_is_dropped_counted_and_not_relayed() {
    let max = 1_000;
    let mut sim = formed(6, |cfg| cfg.max_message_bytes = max);
    let target = "n02";
    let via = sim.neighbours(target)[0].clone();

    // Title (10 bytes) and message together one byte over.
    let big = forged("big-1", "x".repeat(max - TITLE_BROADCAST.len() + 1));
    assert!(sim.inject(&via, target, Message::Broadcast(big)));
    let big2 = forged("big-2", "y".repeat(500_000));
    assert!(sim.inject(&via, target, Message::Broadcast(big2)));
    sim.run_for(Duration::from_secs(1));

    assert_eq!(sim.counters(target).oversize_dropped, 2);
    assert_eq!(
        drops_from(&sim, target, &via),
        LinkDrops {
            oversize: 2,
            rate_limited: 0
        }
    );
    for id in ["big-1", "big-2"] {
        assert!(delivered_anywhere(&sim, id).is_empty(), "{id} delivered");
        assert_eq!(sim.flood_frames(id), 1, "{id} went further than the target");
    }
    // An overlong id is refused the same way, whatever the message.
    let long_id = forged(&"i".repeat(4096), "short".into());
    assert!(sim.inject(&via, target, Message::Broadcast(long_id)));
    assert_eq!(sim.counters(target).oversize_dropped, 3);

    // One exactly at the bound is a broadcast like any other.
    let fits = forged("fits", "z".repeat(max - TITLE_BROADCAST.len()));
    assert!(sim.inject(&via, target, Message::Broadcast(fits)));
    sim.run_for(Duration::from_secs(1));
    // (The injecting neighbour never saw it either: it gets it back from the others.)
    assert_eq!(delivered_anywhere(&sim, "fits").len(), sim.running().len());
    // The hostile link was kept: dropping is not disconnecting.
    assert!(sim.neighbours(target).contains(&via));
}

#[test]
fn a_local_broadcast_over_the_bound_is_refused_with_its_size() {
    let mut sim = formed(3, |cfg| cfg.max_message_bytes = 100);
    let refused = sim.try_broadcast("n01", &"a".repeat(91));
    assert_eq!(
        refused,
        Err(BroadcastError::TooLarge {
            bytes: 101,
            max: 100
        })
    );
    let text = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("--max-message-bytes"), "{text}");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.counters("n01").delivered, 0);
    assert!(sim.try_broadcast("n01", &"a".repeat(90)).is_ok());
}

#[test]
fn a_storm_over_the_link_rate_is_dropped_per_link_while_other_traffic_arrives() {
    let rate = 50;
    let tweak = |cfg: &mut crate::node::machine::Config| cfg.flood_rate_messages = rate;
    let mut sim = formed(8, tweak);
    let target = "n03";
    let attacker = sim.neighbours(target)[0].clone();
    let mut calm = formed(8, tweak);

    // 500 new floods at one instant on one link: one second's worth (the burst) passes.
    for i in 0..500 {
        let flood = forged(&format!("storm-{i}"), format!("storm {i}"));
        assert!(sim.inject(&attacker, target, Message::Broadcast(flood)));
    }
    let counters = sim.counters(target);
    assert_eq!(counters.rate_limited, 500 - rate);
    assert_eq!(
        drops_from(&sim, target, &attacker),
        LinkDrops {
            oversize: 0,
            rate_limited: 500 - rate
        }
    );
    for (peer, drops) in sim.machine(target).link_drops() {
        if peer != attacker {
            assert_eq!(drops, LinkDrops::default(), "{peer} sent nothing hostile");
        }
    }
    // What passed was relayed within the neighbours' own rates: nobody else dropped any.
    for n in sim.running() {
        if n != target {
            assert_eq!(sim.counters(&n).rate_limited, 0, "{n}");
        }
    }

    // Ordinary traffic meanwhile: a broadcast from a node that is not the attacker
    // reaches every node, the target included.
    let origin = sim
        .running()
        .into_iter()
        .find(|n| n != target && *n != attacker)
        .expect("another node");
    let id = sim.broadcast(&origin, "ordinary");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(delivered_anywhere(&sim, &id).len(), sim.running().len());
    // And the attacker's own link recovers at the rate: a second later it may speak again.
    sim.run_for(Duration::from_secs(1));
    let later = forged("later", "after the storm".into());
    assert!(sim.inject(&attacker, target, Message::Broadcast(later)));
    assert!(sim.delivered(target).iter().any(|m| m.id == "later"));

    // The limit has no timer of its own: the target woke no more often than in the same
    // network without a storm.
    let stormy = sim.wakeups(target);
    let id = calm.broadcast(&origin, "ordinary");
    calm.run_for(Duration::from_secs(2));
    assert_eq!(delivered_anywhere(&calm, &id).len(), calm.running().len());
    assert!(
        stormy <= calm.wakeups(target),
        "the storm made {target} wake {stormy} times, {} without it",
        calm.wakeups(target)
    );
}

#[test]
fn the_delivered_ring_keeps_to_its_byte_budget_oldest_first() {
    let budget = 8_000;
    let mut sim = formed(4, |cfg| cfg.delivered_max_bytes = budget);
    let ids: Vec<String> = (0..40)
        .map(|i| sim.broadcast("n01", &format!("{i:03}{}", "m".repeat(500))))
        .collect();
    sim.run_for(Duration::from_secs(1));
    for n in sim.running() {
        let machine = sim.machine(&n);
        let ring = sim.delivered(&n);
        assert!(
            machine.delivered_bytes() <= budget,
            "{n}: {} bytes kept",
            machine.delivered_bytes()
        );
        assert!(
            ring.len() < ids.len(),
            "{n} kept all {} messages",
            ring.len()
        );
        assert!(ring.len() >= 5, "{n} kept only {}", ring.len());
        // The newest, in order: the oldest were evicted first.
        let kept: Vec<&String> = ring.iter().map(|m| &m.id).collect();
        let newest: Vec<&String> = ids[ids.len() - ring.len()..].iter().collect();
        assert_eq!(kept, newest, "{n}");
        assert_eq!(sim.counters(&n).delivered, ids.len() as u64, "{n}");
    }
}
