//! Shared set-ups for the simulator tests.

use std::time::Duration;

use super::{Sim, node_config};
use crate::node::identity::{Identity, verify_hello_proof};
use crate::node::machine::Config;
use crate::node::wire::{Hello, Intent, MemberRecord, MemberState, Message, PROTOCOL_VERSION};

/// Generous virtual bound for a network to form or heal; tests fail past it.
pub const LIMIT: Duration = Duration::from_secs(60);

pub fn name(i: usize) -> String {
    format!("n{i:02}")
}

/// Runs until `check` passes, or panics with what it last reported.
pub fn until(sim: &mut Sim, what: &str, check: impl Fn(&Sim) -> Result<(), String>) -> Duration {
    match sim.run_until(LIMIT, |s| check(s).is_ok()) {
        Some(took) => took,
        None => match check(sim) {
            Err(why) => panic!("{what} not reached within {LIMIT:?}: {why}"),
            Ok(()) => panic!("{what} reached only at the limit"),
        },
    }
}

/// Runs until the network is formed with every degree at least `min_degree`.
pub fn until_formed(sim: &mut Sim, min_degree: usize) -> Duration {
    until(sim, "a formed network", |s| s.check_formed(min_degree))
}

/// A formed network of `n` nodes `n00..`, `n00` the genesis, each configuration adjusted
/// by `tweak`; the joins are over (no flood in flight) when it returns.
pub fn formed(n: usize, tweak: impl Fn(&mut Config)) -> Sim {
    let mut sim = Sim::new();
    for i in 0..n {
        let genesis: &[&str] = if i == 0 { &[] } else { &["n00"] };
        let mut cfg = node_config(&name(i), genesis);
        tweak(&mut cfg);
        sim.spawn_with(cfg);
        sim.run_for(Duration::from_millis(300));
    }
    until_formed(&mut sim, 2.min(n - 1));
    sim.run_for(Duration::from_secs(5));
    sim.check_formed(2.min(n - 1))
        .unwrap_or_else(|why| panic!("the network came apart while settling: {why}"));
    sim
}

/// A client of the simulator that is no node: it speaks the handshake with a key of its
/// own (an attacker, or a test probing the protocol).
pub struct Stranger {
    pub identity: Identity,
    pub id: String,
    pub addr: String,
    pub incarnation: u64,
}

impl Stranger {
    /// A stranger claiming `id` at `addr`, with a key from `secret`.
    pub fn new(id: &str, addr: &str, incarnation: u64, secret: u8) -> Self {
        Stranger {
            identity: Identity::from_secret([secret; 32]),
            id: id.into(),
            addr: addr.into(),
            incarnation,
        }
    }

    /// Its hello: its own key, a fixed nonce, its record signed.
    pub fn hello(&self, version: u32, intent: Intent) -> Message {
        let me = MemberRecord::unsigned(
            self.id.clone(),
            self.addr.clone(),
            self.incarnation,
            MemberState::Alive,
        )
        .signed(&self.identity);
        Message::Hello(Hello {
            version,
            id: me.id,
            addr: me.addr,
            incarnation: me.incarnation,
            intent,
            key: me.key,
            nonce: NONCE.into(),
            sig: me.sig,
        })
    }

    /// Its proof of key in answer to the node's hello `theirs`.
    pub fn proof(&self, theirs: &Hello, intent: Intent) -> Message {
        Message::HelloProof {
            mac: None,
            sig: self.identity.hello_proof(
                &theirs.nonce,
                &self.id,
                &self.addr,
                self.incarnation,
                intent.name(),
            ),
        }
    }

    /// Connects to `node` and completes the handshake, checking the node's own proof.
    /// Returns the pipe.
    pub fn handshake(&self, sim: &mut Sim, node: &str, intent: Intent) -> u64 {
        let pipe = sim.connect_raw(node);
        sim.send_raw(pipe, self.hello(PROTOCOL_VERSION, intent));
        let theirs = match sim.raw_received(pipe) {
            [Message::Hello(h), Message::HelloProof { sig, .. }] => {
                assert!(
                    verify_hello_proof(
                        NONCE,
                        &h.id,
                        &h.key,
                        &h.addr,
                        h.incarnation,
                        h.intent.name(),
                        sig
                    ),
                    "{node} proves its key"
                );
                h.clone()
            }
            other => panic!("{node} answered the hello with {other:?}"),
        };
        sim.send_raw(pipe, self.proof(&theirs, intent));
        pipe
    }
}

/// The nonce strangers send (the node's proof must sign it).
const NONCE: &str = "00112233445566778899aabbccddeeff";

/// Every running node lists `who` as a member.
pub fn listed_everywhere(sim: &Sim, who: &str) -> Result<(), String> {
    match sim
        .running()
        .into_iter()
        .find(|n| !sim.members(n).iter().any(|m| m == who))
    {
        Some(n) => Err(format!("{n} does not list {who}")),
        None => Ok(()),
    }
}

/// Deaths declared so far, summed over the running nodes.
pub fn declared_dead(sim: &Sim) -> u64 {
    sim.running()
        .iter()
        .map(|n| sim.counters(n).members_declared_dead)
        .sum()
}

/// Nobody running lists `gone` as a member.
pub fn forgotten(sim: &Sim, gone: &str) -> Result<(), String> {
    match sim
        .running()
        .into_iter()
        .find(|n| sim.members(n).iter().any(|m| m == gone))
    {
        Some(n) => Err(format!("{n} still lists {gone}")),
        None => Ok(()),
    }
}
