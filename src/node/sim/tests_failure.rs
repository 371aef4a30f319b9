//! Nodes that leave, freeze, die or lose links; false deaths; protocol violations.

use std::time::Duration;

use super::fixtures::{Stranger, declared_dead, forgotten, formed, until, until_formed};
use super::{addr_of, node_config};
use crate::node::wire::{
    Flood, Intent, MemberEvent, MemberRecord, MemberState, Message, PROTOCOL_VERSION,
};

#[test]
fn a_node_that_leaves_is_forgotten_at_once_and_its_neighbours_repair() {
    let mut sim = formed(12, |_| {});
    let before = sim.neighbours("n05");
    assert!(before.len() >= 2);
    sim.leave("n05");
    // The leave is flooded before the connections close: no waiting for timeouts, only
    // for membership floods to hop on with the ticks.
    let took = until(&mut sim, "n05 forgotten", |s| forgotten(s, "n05"));
    assert!(took <= Duration::from_secs(1), "forgotten after {took:?}");
    for n in &before {
        assert!(!sim.neighbours(n).contains(&"n05".to_string()), "{n}");
        assert!(
            sim.suspects(n).is_empty(),
            "{n} suspects {:?}",
            sim.suspects(n)
        );
    }
    assert_eq!(sim.running().len(), 11);
    until_formed(&mut sim, 2);
    assert_eq!(declared_dead(&sim), 0, "a leave is not a death");
}

#[test]
fn a_frozen_neighbour_is_suspected_then_declared_dead_and_routed_around() {
    let mut sim = formed(12, |_| {});
    let cfg = node_config("x", &[]);
    // Silence is counted from the last frame n05 sent, up to one heartbeat before it froze.
    let silent_for = cfg.heartbeat_timeout - cfg.heartbeat_interval;
    let (hb_timeout, suspect_timeout) = (cfg.heartbeat_timeout, cfg.suspect_timeout);
    let neighbours = sim.neighbours("n05");
    sim.freeze("n05");

    let suspected = until(&mut sim, "a suspicion of n05", |s| {
        match neighbours
            .iter()
            .any(|n| s.suspects(n).contains(&"n05".into()))
        {
            true => Ok(()),
            false => Err("no neighbour suspects n05".into()),
        }
    });
    assert!(
        suspected >= silent_for && suspected <= hb_timeout + Duration::from_millis(200),
        "suspected after {suspected:?}, the heartbeat timeout is {hb_timeout:?}"
    );
    let removed = suspected + until(&mut sim, "n05 removed", |s| forgotten(s, "n05"));
    assert!(
        removed >= suspected + suspect_timeout,
        "removed after {removed:?}: before the suspicion could time out"
    );
    assert!(
        removed <= suspected + suspect_timeout + Duration::from_secs(1),
        "removed {removed:?} suspected {suspected:?}"
    );
    until_formed(&mut sim, 2);
    assert!(declared_dead(&sim) >= 1);
}

#[test]
fn a_node_stalled_past_its_heartbeat_timeout_does_not_blame_its_neighbours() {
    let mut sim = formed(10, |_| {});
    let neighbours = sim.neighbours("n04");
    let timeout = node_config("n04", &[]).heartbeat_timeout;
    // Long enough for every link of n04 to look silent from n04's side, short enough that
    // its neighbours (which kept running) do not give up on it.
    sim.freeze("n04");
    sim.run_for(timeout + Duration::from_millis(500));
    sim.tick_while_frozen("n04");
    assert!(
        sim.suspects("n04").is_empty(),
        "n04 suspected {:?} for its own stall",
        sim.suspects("n04")
    );
    sim.thaw("n04");
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.counters("n04").members_declared_dead, 0);
    assert_eq!(sim.neighbours("n04"), neighbours, "no link was dropped");
    sim.check_formed(2).unwrap();
}

#[test]
fn a_slow_neighbour_that_speaks_again_is_cleared_without_a_new_link() {
    let mut sim = formed(10, |_| {});
    let timeout = node_config("n04", &[]).heartbeat_timeout;
    let watcher = sim.neighbours("n04")[0].clone();
    sim.freeze("n04");
    until(&mut sim, "n04 suspected by a neighbour", |s| {
        if s.suspects(&watcher).contains(&"n04".to_string()) {
            Ok(())
        } else {
            Err(format!("{watcher} suspects {:?}", s.suspects(&watcher)))
        }
    });
    assert!(
        sim.neighbours(&watcher).contains(&"n04".to_string()),
        "the silent link is kept while n04 is only a suspect"
    );
    sim.thaw("n04");
    sim.run_for(timeout);
    assert!(sim.suspects(&watcher).is_empty(), "n04 spoke again");
    assert!(sim.neighbours(&watcher).contains(&"n04".to_string()));
    assert_eq!(declared_dead(&sim), 0, "a slow node is not a dead one");
}

#[test]
fn in_a_bigger_network_a_suspect_gets_longer_to_answer() {
    // 64 members, scaled from 32: log2(64) / log2(32) = 1.2 times --suspect-timeout.
    let mut sim = formed(64, |cfg| cfg.suspicion_scale_from = 32);
    let scaled = node_config("x", &[]).suspect_timeout.mul_f64(1.2);
    sim.kill("n05");
    sim.deliver_due();
    let removed = until(&mut sim, "n05 removed", |s| forgotten(s, "n05"));
    assert!(
        removed >= scaled,
        "removed after {removed:?}, before {scaled:?}"
    );
    assert!(
        removed <= scaled + Duration::from_secs(1),
        "removed after {removed:?}"
    );
}

#[test]
fn a_killed_node_is_suspected_at_once_and_declared_dead_after_the_suspicion_timeout() {
    let mut sim = formed(12, |_| {});
    let suspect_timeout = node_config("x", &[]).suspect_timeout;
    let neighbours = sim.neighbours("n05");
    sim.kill("n05");
    sim.deliver_due();
    for n in &neighbours {
        assert_eq!(sim.suspects(n), ["n05"], "{n} saw the connection close");
        assert!(sim.members(n).contains(&"n05".to_string()), "not dead yet");
    }
    let removed = until(&mut sim, "n05 removed", |s| forgotten(s, "n05"));
    assert!(removed >= suspect_timeout, "removed after {removed:?}");
    assert!(removed <= suspect_timeout + Duration::from_secs(1));
    until_formed(&mut sim, 2);
}

#[test]
fn links_lost_to_faults_are_redialed_up_to_the_target_degree() {
    let mut sim = formed(12, |_| {});
    let degree = sim.machine("n03").target_degree();
    for peer in sim.neighbours("n03") {
        assert!(sim.break_link("n03", &peer));
    }
    assert!(sim.neighbours("n03").is_empty());
    until(&mut sim, "degrees back at target", |s| {
        s.check_degrees(degree)
    });
    until_formed(&mut sim, degree);
    assert_eq!(declared_dead(&sim), 0, "lost links are not deaths");
    assert!(sim.neighbours("n03").len() >= degree);
}

#[test]
fn a_node_wrongly_declared_dead_refutes_with_a_higher_incarnation() {
    let mut sim = formed(8, |_| {});
    // A death report is only a suspicion to the nodes that can still reach n04 (see
    // tests_hostile), so the lie is told to n04 itself, as a node that wrongly
    // confirmed its death would flood it.
    let via = sim.neighbours("n04")[0].clone();
    let lie = Flood::membership(
        MemberEvent::Dead {
            // A death names the member's own signed record (see `MemberRecord`).
            member: MemberRecord::unsigned("n04", addr_of("n04"), 1, MemberState::Dead)
                .signed(&node_config("n04", &[]).identity),
        },
        &via,
        0.0,
    );
    assert!(sim.inject(&via, "n04", Message::Broadcast(lie)));
    sim.run_for(Duration::from_secs(2));

    let events = sim.member_events();
    let dead_at = events
        .iter()
        .position(|e| matches!(&e.event, MemberEvent::Dead { member } if member.id == "n04"))
        .expect("the lie was flooded");
    let refuted = events.iter().skip(dead_at).find_map(|e| match &e.event {
        MemberEvent::Joined { member } if member.id == "n04" => Some((e, member.incarnation)),
        _ => None,
    });
    let (refutation, incarnation) = refuted.expect("n04 refuted");
    assert_eq!(refutation.origin, "n04", "refuted by the node itself");
    assert_eq!(incarnation, 2);
    until_formed(&mut sim, 2);
    // And it stays alive: no one probes it to death again.
    sim.run_for(Duration::from_secs(20));
    sim.check_formed(2).unwrap();
}

#[test]
fn a_frame_before_hello_closes_only_that_connection() {
    let mut sim = formed(5, |_| {});
    let neighbours = sim.neighbours("n02");
    let bad = sim.counters("n02").bad_frames;

    let raw = sim.connect_raw("n02");
    assert!(!sim.raw_closed(raw));
    sim.send_raw(raw, Message::GiveNodesInNetwork);
    assert!(sim.raw_closed(raw), "a question before hello is refused");
    assert!(sim.raw_received(raw).is_empty(), "and not answered");
    assert_eq!(sim.counters("n02").bad_frames, bad + 1);

    assert_eq!(sim.neighbours("n02"), neighbours, "the links are untouched");
    sim.run_for(Duration::from_secs(5));
    sim.check_formed(2).unwrap();
}

#[test]
fn a_query_connection_cannot_flood_and_a_wrong_version_is_refused() {
    let mut sim = formed(5, |_| {});
    let stranger = Stranger::new("stranger", "stranger:1", 1, 1);
    let hello = |version, intent| stranger.hello(version, intent);
    let query = stranger.handshake(&mut sim, "n02", Intent::Query);
    assert!(matches!(sim.raw_received(query), [Message::Hello(h), ..] if h.id == "n02"));
    sim.send_raw(query, Message::GiveNodesInNetwork);
    assert!(
        matches!(sim.raw_received(query).last(), Some(Message::NodesInNetwork { members, more: false }) if members.len() == 5)
    );
    let id = "f".repeat(64);
    let flood = Flood {
        id: id.clone(),
        title: "#BROADCAST".into(),
        message: "spam".into(),
        time: 0.0,
        origin: "stranger".into(),
        hops: 0,
        event: None,
    };
    sim.send_raw(query, Message::Broadcast(flood));
    assert!(sim.raw_closed(query));
    assert!(sim.delivered("n02").iter().all(|m| m.id != id));

    let old = sim.connect_raw("n03");
    sim.send_raw(old, hello(PROTOCOL_VERSION + 1, Intent::Link));
    assert!(sim.raw_closed(old));
    assert!(matches!(
        sim.raw_received(old),
        [Message::Disconnect { .. }]
    ));
    assert!(!sim.neighbours("n03").contains(&"stranger".into()));
    sim.check_formed(2).unwrap();
}

#[test]
fn a_connection_that_never_says_hello_is_closed_after_the_hello_timeout() {
    let mut sim = formed(3, |_| {});
    let hello_timeout = node_config("x", &[]).hello_timeout;
    let raw = sim.connect_raw("n01");
    let took = until(&mut sim, "the silent connection closed", |s| {
        match s.raw_closed(raw) {
            true => Ok(()),
            false => Err("still open".into()),
        }
    });
    assert!(took >= hello_timeout && took <= hello_timeout + Duration::from_millis(200));
}

#[test]
fn a_member_that_dies_with_all_its_neighbours_in_a_quiet_network_is_found_by_random_probes() {
    // Nobody is linked to n07 once its neighbours die with it: only random probes can
    // find it. The network was quiet (random probes at their slow pace); the neighbours'
    // deaths bring SWIM's pace back, and the fault bench's goal (a mass failure healed
    // within 10 s) holds.
    let mut sim = formed(24, |_| {});
    let cfg = node_config("x", &[]);
    sim.run_for(cfg.sync_interval * 2);
    let mut gone = sim.neighbours("n07");
    gone.push("n07".to_string());
    for n in &gone {
        sim.kill(n);
    }
    let took = until(&mut sim, "the dead forgotten", |s| s.check_members());
    assert!(
        took <= Duration::from_secs(10),
        "{} dead nodes forgotten only after {took:?}",
        gone.len()
    );
    until_formed(&mut sim, 2);
}
