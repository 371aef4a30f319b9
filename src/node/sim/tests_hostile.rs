//! A hostile peer lies about membership: forged deaths, invented members, ids and
//! addresses out of bounds, and member lists too large for one frame.

use std::collections::BTreeSet;
use std::time::Duration;

use super::fixtures::{
    Stranger, declared_dead, forgotten, formed, listed_everywhere, until, until_formed,
};
use super::{Sim, addr_of, node_config};
use crate::node::limits::{MAX_ADDR_BYTES, MAX_ID_BYTES};
use crate::node::wire::{
    Flood, Intent, MemberEvent, MemberRecord, MemberState, Message, PROTOCOL_VERSION,
};

/// The only way these tests build a member record: signed with the key the simulator
/// gives a node of that name, so it is the subject's own (a death carries the subject's
/// signature of its alive record: any node holding that record can replay it as a death).
fn record(id: &str, addr: &str, incarnation: u64, state: MemberState) -> MemberRecord {
    MemberRecord::unsigned(id, addr, incarnation, state).signed(&node_config(id, &[]).identity)
}

/// The incarnation a simulated node announces.
fn incarnation_of(id: &str) -> u64 {
    node_config(id, &[]).incarnation
}

/// A raw client with a key of its own: its hello alone (what limits refuse before any proof).
/// The worst lie a peer can still tell: the victim's own signed record, replayed as a
/// death at its current incarnation (one at a higher incarnation cannot be signed).
fn replayed_death(victim: &str, origin: &str) -> Flood {
    let member = record(
        victim,
        &addr_of(victim),
        incarnation_of(victim),
        MemberState::Dead,
    );
    Flood::membership(MemberEvent::Dead { member }, origin, 0.0)
}

fn hello(id: &str, addr: &str, intent: Intent) -> Message {
    Stranger::new(id, addr, 1, 9).hello(PROTOCOL_VERSION, intent)
}

/// A raw client that has completed the handshake with `node` as `id`.
fn handshake(sim: &mut Sim, node: &str, id: &str, addr: &str, intent: Intent) -> u64 {
    Stranger::new(id, addr, 1, 9).handshake(sim, node, intent)
}

/// A raw client that links to `name` as the member `id` (the node dials it back at an
/// address where nobody listens, which changes nothing here).
fn attacker_link(sim: &mut Sim, name: &str, id: &str) -> u64 {
    let raw = handshake(sim, name, id, &addr_of(id), Intent::Link);
    assert!(!sim.raw_closed(raw), "the attacker's link was accepted");
    raw
}

#[test]
fn a_forged_death_of_a_live_member_leaves_it_on_every_node_and_is_not_relayed() {
    let mut sim = formed(12, |_| {});
    let victim = "n04";
    let target = sim
        .running()
        .into_iter()
        .find(|n| n != victim && !sim.neighbours(n).contains(&victim.to_string()))
        .expect("a node that is not the victim's neighbour");
    let via = sim.neighbours(&target)[0].clone();
    let dials_before = sim.dials_from(&target).len();
    let lie = replayed_death(victim, &via);
    let lie_id = lie.id.clone();
    assert!(sim.inject(&via, &target, Message::Broadcast(lie)));
    // Its neighbours, asked alongside its own probe, may clear it at once.
    assert!(
        sim.suspects(&target).contains(&victim.to_string())
            || sim.counters(&target).indirect_probe_saves == 1,
        "the report makes the victim a suspect, no more"
    );
    sim.run_for(Duration::from_secs(20));

    listed_everywhere(&sim, victim).unwrap();
    assert_eq!(declared_dead(&sim), 0, "nobody confirmed the lie");
    assert_eq!(sim.flood_frames(&lie_id), 1, "the lie went no further");
    assert!(
        sim.dials_from(&target)[dials_before..].contains(&addr_of(victim)),
        "{target} checked the victim itself"
    );
    assert!(sim.suspects(&target).is_empty());
    sim.check_formed(2).unwrap();
}

#[test]
fn a_forged_death_from_a_raw_link_removes_nobody() {
    let mut sim = formed(8, |_| {});
    let raw = attacker_link(&mut sim, "n02", "mallory");
    for victim in ["n03", "n05", "n06"] {
        let lie = replayed_death(victim, "mallory");
        sim.send_raw(raw, Message::Broadcast(lie));
    }
    sim.run_for(Duration::from_secs(15));
    for victim in ["n03", "n05", "n06"] {
        listed_everywhere(&sim, victim).unwrap();
    }
    // Mallory itself never answers a probe (nobody listens at its address): it is the
    // only one to go.
    until(&mut sim, "mallory forgotten", |s| forgotten(s, "mallory"));
    for victim in ["n03", "n05", "n06"] {
        listed_everywhere(&sim, victim).unwrap();
    }
}

#[test]
fn a_real_crash_is_still_detected_everywhere_within_one_probe_of_the_suspicion() {
    let mut sim = formed(12, |_| {});
    let cfg = node_config("x", &[]);
    let neighbours = sim.neighbours("n05");
    sim.kill("n05");
    sim.deliver_due();
    for n in &neighbours {
        assert_eq!(sim.suspects(n), ["n05"]);
    }
    let removed = until(&mut sim, "n05 removed", |s| forgotten(s, "n05"));
    assert!(removed >= cfg.suspect_timeout, "removed after {removed:?}");
    assert!(
        removed <= cfg.suspect_timeout + Duration::from_secs(1),
        "removed after {removed:?}"
    );
    // Every node confirmed it itself: its neighbours by their links, the others by a probe.
    assert!(declared_dead(&sim) >= neighbours.len() as u64);
    until_formed(&mut sim, 2);
}

#[test]
fn ten_thousand_invented_members_from_one_source_do_not_fill_the_table_and_a_new_node_joins() {
    let mut sim = formed(6, |_| {});
    let cap = node_config("x", &[]).new_members_per_source;
    let raw = attacker_link(&mut sim, "n00", "mallory");
    let fakes: Vec<MemberRecord> = (0..10_000)
        .map(|i| {
            let id = format!("fake-{i:05}");
            record(&id, &addr_of(&id), 1, MemberState::Alive)
        })
        .collect();
    sim.send_raw(
        raw,
        Message::NodesInNetwork {
            members: fakes,
            more: false,
        },
    );
    // Six nodes, mallory and at most one budget of inventions.
    let listed = sim.members("n00").len();
    assert!(listed <= 7 + cap, "{listed} members listed");
    assert!(sim.counters("n00").capped_members >= (10_000 - cap) as u64);

    // The genesis never sends a joiner to an invention.
    let asker = handshake(&mut sim, "n00", "asker", "asker:7070", Intent::Query);
    for _ in 0..50 {
        sim.send_raw(asker, Message::AskRandomNode);
    }
    // (Mallory linked to it: first-hand, as good as any member for an answer.)
    let real: BTreeSet<String> = (0..6).map(|i| format!("n{i:02}")).collect();
    let mut answers = 0;
    for answer in sim.raw_received(asker) {
        if let Message::RandomNode { node: Some(node) } = answer {
            answers += 1;
            assert!(!node.id.starts_with("fake-"), "offered {}", node.id);
        }
    }
    assert_eq!(answers, 50);

    // A new node still joins, and links only to real nodes.
    sim.spawn("late", &["n00"]);
    until(&mut sim, "late joined and linked", |s| {
        match s.joined("late") && !s.neighbours("late").is_empty() {
            true => Ok(()),
            false => Err(format!("late: {:?}", s.neighbours("late"))),
        }
    });
    for n in sim.neighbours("late") {
        assert!(real.contains(&n), "late linked to {n}");
    }
    until(&mut sim, "late listed everywhere", |s| {
        listed_everywhere(s, "late")
    });
    for n in sim.running() {
        let count = sim.members(&n).len();
        assert!(count <= 8 + cap, "{n} lists {count}");
    }
    // Mallory went over its budget: what it added is checked, fails, and goes, without
    // a flood of deaths; then the membership is exactly the real nodes again.
    until(&mut sim, "the inventions dropped", |s| s.check_members());
    assert!(sim.members("n00").iter().all(|m| !m.starts_with("fake-")));
    assert!(
        declared_dead(&sim) < 20,
        "{} deaths declared",
        declared_dead(&sim)
    );
}

#[test]
fn a_network_larger_than_the_per_source_budget_still_converges() {
    // A budget of 8 new members per connection and window, in a network of 20: every
    // joiner's first list goes over it. Those members are probed, answer, and stay.
    let mut sim = formed(20, |cfg| cfg.new_members_per_source = 8);
    until(&mut sim, "every table complete", |s| s.check_members());
    assert!(sim.counters("n19").capped_members > 0, "the budget was hit");
    assert_eq!(declared_dead(&sim), 0);
}

#[test]
fn oversized_empty_and_garbage_ids_and_addresses_are_refused() {
    let mut sim = formed(5, |_| {});
    let neighbours = sim.neighbours("n02");
    let huge = "x".repeat(1_000_000);
    let long_id = "i".repeat(MAX_ID_BYTES + 1);
    let long_addr = format!("{}:1", "a".repeat(MAX_ADDR_BYTES));
    let bad_hellos = [
        ("", ""),
        ("", "e:1"),
        (huge.as_str(), "h:1"),
        (long_id.as_str(), "h:1"),
        ("ok", long_addr.as_str()),
        ("new\nline", "h:1"),
        ("space id", "h:1"),
        ("ok", "no-port"),
        ("ok", "h:0"),
    ];
    for (i, (id, addr)) in bad_hellos.iter().enumerate() {
        let before = sim.counters("n02").refused_records;
        let raw = sim.connect_raw("n02");
        sim.send_raw(raw, hello(id, addr, Intent::Link));
        assert!(sim.raw_closed(raw), "hello {i} refused");
        assert!(
            matches!(sim.raw_received(raw), [Message::Disconnect { .. }]),
            "hello {i}: {:?}",
            sim.raw_received(raw)
        );
        assert_eq!(sim.counters("n02").refused_records, before + 1, "hello {i}");
    }
    assert_eq!(sim.neighbours("n02"), neighbours);

    // Records in a list and in floods, from a peer that is otherwise well-behaved.
    let raw = attacker_link(&mut sim, "n02", "mallory");
    let before = sim.counters("n02").refused_records;
    let list = vec![
        record(&huge, "h:1", 1, MemberState::Alive),
        record("", "", 1, MemberState::Alive),
        record("ctl\u{7}", "h:1", 1, MemberState::Alive),
        record("fine", "fine:7070", 1, MemberState::Alive),
    ];
    sim.send_raw(
        raw,
        Message::NodesInNetwork {
            members: list,
            more: false,
        },
    );
    assert_eq!(sim.counters("n02").refused_records, before + 3);
    assert!(sim.members("n02").contains(&"fine".to_string()));
    let joined = Flood::membership(
        MemberEvent::Joined {
            member: record(&huge, "h:1", 1, MemberState::Alive),
        },
        "mallory",
        0.0,
    );
    let joined_id = joined.id.clone();
    sim.send_raw(raw, Message::Broadcast(joined));
    assert_eq!(sim.counters("n02").refused_records, before + 4);
    assert_eq!(sim.flood_frames(&joined_id), 1, "received, not relayed");
    for n in sim.running() {
        assert!(
            sim.members(&n)
                .iter()
                .all(|m| m.len() <= MAX_ID_BYTES && !m.is_empty()),
            "{n}"
        );
    }
    sim.run_for(Duration::from_secs(5));
    sim.check_formed(2).unwrap();
}

#[test]
fn a_membership_larger_than_one_chunk_is_exchanged_in_chunks_and_converges() {
    // Chunks of about 4 KB: seven records each, so 30 members take five frames.
    let tweak = |cfg: &mut crate::node::machine::Config| cfg.member_list_chunk_bytes = 4096;
    let mut sim = formed(30, tweak);
    sim.check_members().unwrap();

    let asker = handshake(&mut sim, "n07", "asker", "asker:7070", Intent::Query);
    sim.send_raw(asker, Message::GiveNodesInNetwork);
    let chunks: Vec<(usize, bool)> = sim
        .raw_received(asker)
        .iter()
        .filter_map(|m| match m {
            Message::NodesInNetwork { members, more } => Some((members.len(), *more)),
            _ => None,
        })
        .collect();
    assert!(chunks.len() >= 4, "{chunks:?}");
    let (last, firsts) = chunks.split_last().unwrap();
    assert!(
        !last.1 && firsts.iter().all(|(_, more)| *more),
        "{chunks:?}"
    );
    assert_eq!(chunks.iter().map(|(n, _)| n).sum::<usize>(), 30);

    // A newcomer takes in the whole list chunk by chunk, and anti-entropy agrees.
    let mut cfg = node_config("late", &["n00"]);
    tweak(&mut cfg);
    sim.spawn_with(cfg);
    until(&mut sim, "every table complete", |s| s.check_members());
    assert_eq!(sim.members("late").len(), 31);
    sim.run_for(Duration::from_secs(12));
    sim.check_members().unwrap();
}
