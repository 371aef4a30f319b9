//! Identity (issue 11): forged records and stolen ids change nothing; incarnations never
//! wrap; a restarted node gets back in with a new key once its old incarnation is dead,
//! and at once with its old key.

use std::time::Duration;

use super::fixtures::{Stranger, formed, name, until, until_formed};
use super::{Sim, addr_of, node_config};
use crate::node::identity::Identity;
use crate::node::wire::{
    Flood, Intent, MemberEvent, MemberRecord, MemberState, Message, PROTOCOL_VERSION,
};

/// Every running node lists `id` at its own address.
fn everyone_knows(sim: &Sim, id: &str) -> Result<(), String> {
    for node in sim.running() {
        if node == id {
            continue;
        }
        let members = sim.machine(&node).members();
        match members.iter().find(|m| m.id == id) {
            Some(m) if m.addr == addr_of(id) => {}
            Some(m) => return Err(format!("{node} has {id} at {}", m.addr)),
            None => return Err(format!("{node} lost {id}")),
        }
    }
    Ok(())
}

fn refused(sim: &Sim) -> u64 {
    sim.running()
        .iter()
        .map(|n| sim.counters(n).identity_refused)
        .sum()
}

/// The genuine alive record of simulated node `id`, at `incarnation`.
fn genuine(id: &str, incarnation: u64, state: MemberState) -> MemberRecord {
    MemberRecord::unsigned(id, addr_of(id), incarnation, state)
        .signed(&node_config(id, &[]).identity)
}

#[test]
fn a_forged_leave_of_a_live_member_is_refused_everywhere() {
    let mut sim = formed(6, |_| {});
    let via = sim.neighbours("n02")[0].clone();
    // Unsigned, then with the victim's own alive signature: neither is its leave.
    let unsigned = MemberRecord::unsigned("n04", addr_of("n04"), 1, MemberState::Left);
    let replayed = MemberRecord {
        state: MemberState::Left,
        ..genuine("n04", 1, MemberState::Alive)
    };
    let mut ids = Vec::new();
    for member in [unsigned, replayed] {
        let flood = Flood::membership(MemberEvent::Left { member }, &via, 0.0);
        ids.push(flood.id.clone());
        assert!(sim.inject(&via, "n02", Message::Broadcast(flood)));
    }
    sim.run_for(Duration::from_secs(5));
    everyone_knows(&sim, "n04").unwrap();
    sim.check_formed(2).unwrap();
    assert!(sim.counters("n02").identity_refused >= 2);
    // Both forgeries have one flood id (the event's); only the two injected frames ever
    // carried it.
    let injected = ids.len() as u64;
    ids.dedup();
    let frames: u64 = ids.iter().map(|id| sim.flood_frames(id)).sum();
    assert_eq!(frames, injected, "the forgeries went no further");
    // The member's own leave, same flood id as the first forgery, still counts.
    sim.leave("n04");
    until(&mut sim, "n04 gone everywhere", |s| {
        match s
            .running()
            .iter()
            .find(|n| s.members(n).contains(&"n04".into()))
        {
            Some(n) => Err(format!("{n} still lists n04")),
            None => Ok(()),
        }
    });
}

#[test]
fn a_hello_with_a_stolen_id_changes_no_address() {
    let mut sim = formed(5, |_| {});
    let thief = Stranger::new("n03", "evil:1", u64::MAX, 9);
    for intent in [Intent::Query, Intent::Link] {
        let pipe = sim.connect_raw("n01");
        sim.send_raw(pipe, thief.hello(PROTOCOL_VERSION, intent));
        assert!(sim.raw_closed(pipe), "refused");
        assert!(
            matches!(sim.raw_received(pipe), [Message::Disconnect { .. }]),
            "with a reason and nothing else: {:?}",
            sim.raw_received(pipe)
        );
    }
    // Its signed join, flooded by a neighbour, is refused too: the id lives with another key.
    let stolen = MemberRecord::unsigned("n03", "evil:1", u64::MAX, MemberState::Alive)
        .signed(&thief.identity);
    let via = sim.neighbours("n01")[0].clone();
    let flood = Flood::membership(MemberEvent::Joined { member: stolen }, &via, 0.0);
    assert!(sim.inject(&via, "n01", Message::Broadcast(flood)));
    sim.run_for(Duration::from_secs(5));
    everyone_knows(&sim, "n03").unwrap();
    assert!(sim.counters("n01").identity_refused >= 3);
    // The real n03 is unaffected: it still leaves, and is heard.
    sim.leave("n03");
    until(&mut sim, "n03 gone", |s| {
        if s.members("n01").contains(&"n03".into()) {
            Err("n01 still lists n03".into())
        } else {
            Ok(())
        }
    });
}

#[test]
fn a_stranger_with_its_own_key_completes_the_handshake() {
    let mut sim = formed(3, |_| {});
    let stranger = Stranger::new("s", "s:1", 1, 5);
    let pipe = stranger.handshake(&mut sim, "n01", Intent::Query);
    sim.send_raw(pipe, Message::GiveNodesInNetwork);
    assert!(
        matches!(sim.raw_received(pipe).last(), Some(Message::NodesInNetwork { members, .. }) if members.len() == 3 && members.iter().all(MemberRecord::verify)),
        "a proven query is answered with signed records"
    );
    // A proof for another nonce (or by another key) closes the connection.
    let liar = Stranger::new("l", "l:1", 1, 6);
    let pipe = sim.connect_raw("n01");
    sim.send_raw(pipe, liar.hello(PROTOCOL_VERSION, Intent::Query));
    let mut theirs = match sim.raw_received(pipe) {
        [Message::Hello(h), Message::HelloProof { .. }] => h.clone(),
        other => panic!("unexpected answer {other:?}"),
    };
    theirs.nonce = "ffff".into();
    sim.send_raw(pipe, liar.proof(&theirs, Intent::Query));
    assert!(sim.raw_closed(pipe));
    assert!(matches!(
        sim.raw_received(pipe).last(),
        Some(Message::Disconnect { .. })
    ));
}

#[test]
fn a_forged_death_at_the_last_incarnation_is_refused() {
    let mut sim = formed(5, |_| {});
    let via = sim.neighbours("n02")[0].clone();
    let forged = MemberRecord {
        incarnation: u64::MAX,
        state: MemberState::Dead,
        ..genuine("n03", 1, MemberState::Alive)
    };
    let flood = Flood::membership(MemberEvent::Dead { member: forged }, &via, 0.0);
    assert!(sim.inject(&via, "n02", Message::Broadcast(flood)));
    sim.run_for(Duration::from_secs(5));
    everyone_knows(&sim, "n03").unwrap();
    assert_eq!(sim.machine("n03").incarnation(), 1, "nothing to refute");
    assert!(refused(&sim) >= 1);
}

#[test]
fn a_refutation_at_the_last_incarnation_does_not_wrap() {
    let mut sim = formed(5, |cfg| {
        if cfg.id == "n03" {
            cfg.incarnation = u64::MAX;
        }
    });
    let via = sim
        .neighbours("n02")
        .into_iter()
        .find(|n| n != "n03")
        .expect("a neighbour other than n03");
    // A genuine-looking death (a false suspicion) at n03's own, last incarnation.
    let death = genuine("n03", u64::MAX, MemberState::Dead);
    let flood = Flood::membership(MemberEvent::Dead { member: death }, &via, 0.0);
    assert!(sim.inject(&via, "n02", Message::Broadcast(flood)));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.machine("n03").incarnation(), u64::MAX, "no wrap");
    until(&mut sim, "n03 back everywhere", |s| {
        everyone_knows(s, "n03")
    });
    sim.run_for(Duration::from_secs(10));
    everyone_knows(&sim, "n03").unwrap();
    sim.check_formed(2).unwrap();
}

#[test]
fn a_restart_with_a_new_key_gets_in_once_the_old_incarnation_is_dead() {
    let mut sim = formed(5, |_| {});
    sim.kill("n03");
    let mut cfg = node_config("n03", &["n00"]);
    cfg.identity = Identity::from_secret([42; 32]);
    cfg.incarnation = 2;
    sim.restart(cfg);
    sim.run_for(Duration::from_secs(1));
    assert!(
        refused(&sim) >= 1,
        "the new key is refused while the old one lives"
    );
    until(&mut sim, "n03 back with its new key", |s| {
        everyone_knows(s, "n03")?;
        s.check_formed(2)
    });
    let declared: u64 = sim
        .running()
        .iter()
        .map(|n| sim.counters(n).members_declared_dead)
        .sum();
    assert!(declared >= 1, "it got in after its old incarnation died");
}

#[test]
fn a_restart_with_the_same_key_gets_in_at_once() {
    let mut sim = formed(5, |_| {});
    sim.kill("n03");
    let mut cfg = node_config("n03", &["n00"]);
    cfg.incarnation = 2;
    sim.restart(cfg);
    let took = until(&mut sim, "n03 back", |s| {
        everyone_knows(s, "n03")?;
        s.check_formed(2)
    });
    assert_eq!(refused(&sim), 0, "its key is the one its id is bound to");
    assert!(
        took < node_config("x", &[]).suspect_timeout,
        "back before failure detection could bury it: {took:?}"
    );
}

#[test]
fn a_network_forms_with_signed_records_only() {
    let mut sim = Sim::new();
    for i in 0..8 {
        let genesis: &[&str] = if i == 0 { &[] } else { &["n00"] };
        sim.spawn(&name(i), genesis);
    }
    until_formed(&mut sim, 2);
    assert_eq!(refused(&sim), 0);
}

#[test]
fn without_the_network_key_a_node_cannot_join() {
    use crate::node::identity::NetworkKey;
    let secret = NetworkKey::parse("the network's secret").expect("a passphrase");
    let mut sim = Sim::new();
    for i in 0..4 {
        let genesis: &[&str] = if i == 0 { &[] } else { &["n00"] };
        let mut cfg = node_config(&name(i), genesis);
        cfg.network_key = Some(secret.clone());
        sim.spawn_with(cfg);
    }
    until_formed(&mut sim, 2);
    // An outsider: a valid key pair of its own, no network key (then a wrong one).
    sim.spawn("outsider", &["n00"]);
    let mut cfg = node_config("guesser", &["n01"]);
    cfg.network_key = Some(NetworkKey::parse("a guess").expect("a passphrase"));
    sim.spawn_with(cfg);
    sim.run_for(Duration::from_secs(20));
    for outsider in ["outsider", "guesser"] {
        assert!(!sim.joined(outsider), "{outsider} joined");
        assert!(sim.neighbours(outsider).is_empty());
    }
    for i in 0..4 {
        let members = sim.members(&name(i));
        assert_eq!(members.len(), 4, "{}: {members:?}", name(i));
    }
    assert!(refused(&sim) >= 2);
}
