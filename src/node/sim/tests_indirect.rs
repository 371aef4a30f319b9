//! Indirect probes: a member one node cannot reach, but others can, is not declared dead;
//! a dead member still is, whatever a hostile helper answers; probe requests are bounded.

use std::time::Duration;

use super::fixtures::{Stranger, declared_dead, forgotten, formed, listed_everywhere, until};
use super::{Sim, TICK, addr_of, node_config};
use crate::node::identity::verify_hello_proof;
use crate::node::machine::{Config, RELAYS_AT_ONCE, RELAYS_PER_LINK};
use crate::node::wire::{Intent, Message, ProbeProof};

/// A raw client that has linked to `node` as `id`, with a key of its own (`secret`).
fn raw_link(sim: &mut Sim, node: &str, id: &str, secret: u8) -> (Stranger, u64) {
    let stranger = Stranger::new(id, &addr_of(id), 1, secret);
    let pipe = stranger.handshake(sim, node, Intent::Link);
    assert!(!sim.raw_closed(pipe), "{node} accepted the link of {id}");
    assert!(sim.neighbours(node).contains(&id.to_string()));
    (stranger, pipe)
}

/// The nonces of the probe requests about `member` that `node` sent on a raw link.
fn requests_about(sim: &Sim, pipe: u64, member: &str) -> Vec<String> {
    sim.raw_received(pipe)
        .iter()
        .filter_map(|m| match m {
            Message::ProbeRequest {
                member: m, nonce, ..
            } if m == member => Some(nonce.clone()),
            _ => None,
        })
        .collect()
}

/// A neighbour of `node` that is not the genesis.
fn neighbour_of(sim: &Sim, node: &str) -> String {
    sim.neighbours(node)
        .into_iter()
        .find(|n| n != "n00")
        .expect("a neighbour besides the genesis")
}

/// A 10-node network where a neighbour of `n03` (returned) is cut off from `n03` only:
/// both directions, or only what it sends `n03`; after 20 s.
fn cut_off_from_one_node(tweak: impl Fn(&mut Config), both_ways: bool) -> (Sim, String) {
    let mut sim = formed(10, tweak);
    let member = neighbour_of(&sim, "n03");
    sim.cut(&member, "n03");
    if both_ways {
        sim.cut("n03", &member);
    }
    sim.run_for(Duration::from_secs(20));
    (sim, member)
}

#[test]
fn a_member_cut_off_from_one_node_only_is_saved_by_its_neighbours_probes() {
    for both_ways in [false, true] {
        let (sim, member) = cut_off_from_one_node(|_| {}, both_ways);
        listed_everywhere(&sim, &member).unwrap();
        listed_everywhere(&sim, "n03").unwrap();
        assert_eq!(declared_dead(&sim), 0, "nobody declared anyone dead");
        assert!(
            sim.counters("n03").indirect_probe_saves >= 1,
            "a neighbour told n03 that {member} lives (both ways: {both_ways}): {:?}",
            sim.counters("n03")
        );
        assert!(sim.counters("n03").indirect_probes_sent >= 1);
        sim.check_formed(2).unwrap();
    }
}

#[test]
fn without_indirect_probes_the_same_cut_costs_a_false_death() {
    // The control: what the test above would see if neighbours were not asked.
    let (sim, member) = cut_off_from_one_node(|cfg| cfg.indirect_probes = 0, true);
    assert!(
        sim.counters("n03").members_declared_dead + sim.counters(&member).members_declared_dead
            >= 1,
        "one of the two took the other for dead"
    );
    assert_eq!(sim.counters("n03").indirect_probes_sent, 0);
}

#[test]
fn a_crashed_member_is_still_declared_dead_everywhere_within_the_suspicion_timeout() {
    let mut sim = formed(12, |_| {});
    let cfg = node_config("x", &[]);
    let neighbours = sim.neighbours("n05");
    sim.kill("n05");
    sim.deliver_due();
    let removed = until(&mut sim, "n05 removed", |s| forgotten(s, "n05"));
    // As without indirect probes: a refused dial fails the helpers' probes at once.
    assert!(removed >= cfg.suspect_timeout, "removed after {removed:?}");
    assert!(
        removed <= cfg.suspect_timeout + Duration::from_secs(1),
        "removed after {removed:?}"
    );
    for n in &neighbours {
        let c = sim.counters(n);
        assert!(c.indirect_probes_sent >= 1, "{n} asked its neighbours");
        assert_eq!(c.indirect_probe_saves, 0, "{n}: nobody reached a dead node");
    }
    let served: u64 = sim
        .running()
        .iter()
        .map(|n| sim.counters(n).probe_requests_served)
        .sum();
    assert!(served >= 1, "neighbours probed n05 for each other");
}

#[test]
fn a_frozen_member_is_declared_dead_although_its_probes_hang_until_their_timeout() {
    let mut sim = formed(12, |_| {});
    let cfg = node_config("x", &[]);
    sim.freeze("n05");
    let removed = until(&mut sim, "n05 removed", |s| forgotten(s, "n05"));
    // Silence, then the suspicion; the helpers' probes wait their short limit meanwhile.
    let bound = cfg.heartbeat_timeout + cfg.suspect_timeout + Duration::from_secs(1);
    assert!(
        removed <= bound,
        "removed after {removed:?}, bound {bound:?}"
    );
    assert_eq!(
        sim.running()
            .iter()
            .map(|n| sim.counters(n).indirect_probe_saves)
            .sum::<u64>(),
        0
    );
}

/// A network where `n02` asks every neighbour, among them the raw client `mallory`; one
/// of n02's neighbours is killed and `answer` is what mallory says to n02's request.
/// Returns the network and the dead member, once n02 has no more use for mallory.
fn hostile_helper(answer: impl Fn(&str, &str) -> Option<Message>) -> (Sim, String) {
    let mut sim = formed(8, |cfg| cfg.indirect_probes = 16);
    let dead = neighbour_of(&sim, "n02");
    let (_mallory, pipe) = raw_link(&mut sim, "n02", "mallory", 9);
    sim.kill(&dead);
    sim.deliver_due();
    let asked = sim.run_until(Duration::from_secs(2), |s| {
        !requests_about(s, pipe, &dead).is_empty()
    });
    assert!(asked.is_some(), "n02 asked mallory to probe {dead}");
    let nonce = requests_about(&sim, pipe, &dead)[0].clone();
    if let Some(msg) = answer(&dead, &nonce) {
        sim.send_raw(pipe, msg);
    }
    (sim, dead)
}

/// `dead`'s own signature over `nonce`, as its hello proof to a query.
fn proof_by(signer: &str, member: &str, nonce: &str) -> ProbeProof {
    let identity = node_config(signer, &[]).identity;
    let incarnation = node_config(member, &[]).incarnation;
    ProbeProof {
        addr: addr_of(member),
        incarnation,
        intent: Intent::Query,
        sig: identity.hello_proof(nonce, member, &addr_of(member), incarnation, "query"),
    }
}

fn alive_answer(member: &str, nonce: &str, proof: ProbeProof) -> Option<Message> {
    Some(Message::ProbeAnswer {
        member: member.to_string(),
        nonce: nonce.to_string(),
        proof: Some(proof),
    })
}

/// The dead member is gone from n02 in time, nobody saved it, and `refused` lies were
/// caught as such.
fn still_declared_dead(mut sim: Sim, dead: &str, refused: u64) {
    let cfg = node_config("x", &[]);
    let took = until(&mut sim, "the dead member removed by n02", |s| {
        match s.members("n02").iter().any(|m| m == dead) {
            true => Err(format!("n02 still lists {dead}")),
            false => Ok(()),
        }
    });
    assert!(
        took <= cfg.suspect_timeout + Duration::from_secs(2),
        "removed {took:?} after the answer"
    );
    let c = sim.counters("n02");
    assert_eq!(c.indirect_probe_saves, 0, "{c:?}");
    assert_eq!(c.indirect_answers_refused, refused, "{c:?}");
}

#[test]
fn a_hostile_helper_cannot_keep_a_dead_member_alive_with_its_own_signature() {
    let (sim, dead) = hostile_helper(|dead, nonce| {
        // Our nonce and the dead member's id and fields, signed well, but with a key that
        // is not the member's.
        alive_answer(dead, nonce, proof_by("mallory", dead, nonce))
    });
    still_declared_dead(sim, &dead, 1);
}

#[test]
fn a_hostile_helper_cannot_keep_a_dead_member_alive_with_a_replayed_proof() {
    let (sim, dead) = hostile_helper(|dead, nonce| {
        // The member's real signature, from a handshake of long ago with another nonce.
        let old = "ffeeddccbbaa99887766554433221100";
        assert_ne!(old, nonce);
        alive_answer(dead, nonce, proof_by(dead, dead, old))
    });
    still_declared_dead(sim, &dead, 1);
}

#[test]
fn a_hostile_helper_cannot_keep_a_dead_member_alive_with_an_answer_to_another_nonce() {
    let (sim, dead) = hostile_helper(|dead, _| {
        // A genuine proof, genuinely over the nonce it names: not the nonce n02 asked with.
        let other = "ffeeddccbbaa99887766554433221100";
        alive_answer(dead, other, proof_by(dead, dead, other))
    });
    // Not even weighed: an answer nobody asked for.
    still_declared_dead(sim, &dead, 0);
}

#[test]
fn a_helper_that_never_answers_only_delays_the_death_to_its_wait() {
    let (sim, dead) = hostile_helper(|_, _| None);
    still_declared_dead(sim, &dead, 0);
}

#[test]
fn probe_requests_from_one_peer_are_bounded_and_never_aim_a_dial_elsewhere() {
    let mut sim = formed(8, |_| {});
    let helper = "n02";
    let members: Vec<String> = sim
        .members(helper)
        .into_iter()
        .filter(|m| m != helper)
        .collect();
    let (_, mallory) = raw_link(&mut sim, helper, "mallory", 9);
    let (_, trudy) = raw_link(&mut sim, helper, "trudy", 10);
    let (_, eve) = raw_link(&mut sim, helper, "eve", 11);
    // Requests arrive a step later, all at once: the helper's dials are in flight together.
    sim.set_latency_ticks(1);
    let dials_before = sim.dials_from(helper).len();
    let refused_before = sim.counters(helper).probe_requests_refused;
    let nonce = |i: usize| format!("{i:032x}");
    let mut sent = 0;
    for pipe in [mallory, trudy, eve] {
        for (i, m) in members.iter().cycle().take(20).enumerate() {
            sim.send_raw(
                pipe,
                Message::ProbeRequest {
                    member: m.clone(),
                    addr: addr_of(m),
                    nonce: nonce(i),
                },
            );
            sent += 1;
        }
    }
    // Nothing that makes the helper dial an address its table does not hold for that id.
    let strays = [
        ("ghost", addr_of("ghost")),
        ("n03", "10.0.0.1:22".to_string()),
        (members[0].as_str(), addr_of("ghost")),
    ];
    for (m, a) in &strays {
        sim.send_raw(
            mallory,
            Message::ProbeRequest {
                member: m.to_string(),
                addr: a.clone(),
                nonce: nonce(99),
            },
        );
    }
    sim.send_raw(
        mallory,
        Message::ProbeRequest {
            member: members[1].clone(),
            addr: addr_of(&members[1]),
            nonce: "not hex".into(),
        },
    );
    sim.run_for(TICK * 2);
    let c = sim.counters(helper);
    assert!(
        c.probe_requests_served <= RELAYS_AT_ONCE as u64,
        "at most {RELAYS_AT_ONCE} served at once: {c:?}"
    );
    assert_eq!(
        c.probe_requests_served + c.probe_requests_refused - refused_before,
        sent + strays.len() as u64 + 1,
        "every request was served or refused and counted: {c:?}"
    );
    let dials = sim.dials_from(helper)[dials_before..].to_vec();
    assert!(dials.len() <= RELAYS_AT_ONCE, "no dial storm: {dials:?}");
    for d in &dials {
        assert!(
            members.iter().any(|m| addr_of(m) == *d),
            "{helper} dialed {d}, which is no member's address"
        );
    }
    for pipe in [mallory, trudy, eve] {
        let asked: Vec<&Message> = sim
            .raw_received(pipe)
            .iter()
            .filter(|m| matches!(m, Message::ProbeRequest { .. }))
            .collect();
        assert!(asked.is_empty(), "the helper asked nothing of its askers");
    }
    let served_on = |pipe: u64| {
        sim.raw_received(pipe)
            .iter()
            .filter(|m| matches!(m, Message::ProbeAnswer { proof: Some(_), .. }))
            .count()
    };
    for pipe in [mallory, trudy, eve] {
        assert!(served_on(pipe) <= RELAYS_PER_LINK, "per link cap");
    }
    // What a served request gets back is the member's own proof over the asker's nonce.
    sim.run_for(Duration::from_secs(1));
    let mut proofs = 0;
    for pipe in [mallory, trudy, eve] {
        for m in sim.raw_received(pipe) {
            if let Message::ProbeAnswer {
                member,
                nonce,
                proof: Some(p),
            } = m
            {
                let key = node_config(member, &[]).identity.public_hex().to_string();
                assert!(verify_hello_proof(
                    nonce,
                    member,
                    &key,
                    &p.addr,
                    p.incarnation,
                    p.intent.name(),
                    &p.sig
                ));
                proofs += 1;
            }
        }
    }
    assert!(proofs >= 1, "served requests were answered with proofs");
    sim.run_for(Duration::from_secs(5));
    for d in &sim.dials_from(helper)[dials_before..] {
        assert!(
            *d != addr_of("ghost") && *d != "10.0.0.1:22",
            "{helper} dialed {d} for a request"
        );
    }
}
