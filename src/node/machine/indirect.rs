//! Indirect probes (SWIM's ping-req): before this node declares a suspect dead, a few of
//! its neighbours probe the suspect for it.
//!
//! Our own probe tells us only that *we* cannot reach a member: a slow path, a cut in one
//! direction or a loaded link between us and it looks exactly like a crash. So when our
//! direct probe of a suspect fails (a suspicion of our own or a death someone reported),
//! up to `Config::indirect_probes` neighbours get a `probe-request` with a nonce we chose.
//! Each dials the member at the address in *its own* table, with our nonce as its hello
//! nonce, and relays the member's `hello-proof` in a `probe-answer`. We believe "alive"
//! only when that proof verifies under the key we hold for the member, over our nonce: a
//! helper cannot keep a dead member alive, whatever it answers. "Unreachable", a forged
//! proof and silence all count as no answer; the death is declared once our own probe and
//! every indirect probe failed, or the wait for them ran out.
//!
//! Serving requests is bounded: a few at a time per link and overall (the rest are refused
//! and counted), only for members we know as alive at the address the asker names, and only
//! at our own table's address, so that requests cannot turn a node into a port scanner.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tracing::{debug, info, warn};

use super::links::Purpose;
use super::{ConnId, Machine};
use crate::node::identity::{self, NONCE_BYTES, verify_hello_proof};
use crate::node::limits;
use crate::node::logsafe::clip;
use crate::node::wire::{Hello, Message, ProbeProof};

/// Probe requests one link may have us serve at once; more are refused. A neighbour asks
/// at most one per suspect and round, and suspects are few at a time.
pub(crate) const RELAYS_PER_LINK: usize = 2;

/// Probe requests served at once over all links; more are refused.
pub(crate) const RELAYS_AT_ONCE: usize = 4;

/// One round of indirect probes of a suspect: the nonce our helpers' probes carry, the
/// links we still wait for, and until when.
#[derive(Debug)]
pub(super) struct IndirectRound {
    pub nonce: String,
    pub waiting: BTreeSet<ConnId>,
    pub until: Instant,
}

impl Machine {
    /// How long a probe waits for its answer when it must be short: the check of a
    /// reported death, and a probe made for a neighbour (which waits for it in turn). A
    /// heartbeat interval, at least `reported_probe_floor`, at most the hello timeout: a
    /// living node answers in far less, and whoever waits on it has waited a while already.
    pub(super) fn short_probe_limit(&self) -> Duration {
        self.cfg
            .heartbeat_interval
            .max(self.cfg.reported_probe_floor)
            .min(self.cfg.hello_timeout)
    }

    /// How long we wait for our helpers: their probe's wait, and as long again for the
    /// request and the answer to cross our links and for the helper to get to it.
    pub(super) fn indirect_wait(&self) -> Duration {
        self.short_probe_limit() * 2
    }

    /// Asks up to `indirect_probes` neighbours (not the suspect, none suspected itself) to
    /// probe the suspect `id`. Returns whether a round started: without helpers, our own
    /// probe is all there is.
    pub(super) fn start_indirect_round(&mut self, now: Instant, id: &str) -> bool {
        if self.cfg.indirect_probes == 0 || self.leaving {
            return false;
        }
        let Some(addr) = self.detector.suspects.get(id).map(|s| s.addr.clone()) else {
            return false;
        };
        let mut helpers: Vec<ConnId> = self
            .links
            .neighbours
            .iter()
            .filter(|(n, _)| n.as_str() != id && !self.detector.suspects.contains_key(*n))
            .filter(|(_, c)| self.links.conns.get(c).is_some_and(|c| c.is_link()))
            .map(|(_, c)| *c)
            .collect();
        helpers.shuffle(&mut self.rng);
        helpers.truncate(self.cfg.indirect_probes);
        if let Some(s) = self.detector.suspects.get_mut(id) {
            s.indirect_tried = true;
        }
        if helpers.is_empty() {
            return false;
        }
        let nonce = identity::nonce();
        for conn in &helpers {
            self.send(
                *conn,
                Message::ProbeRequest {
                    member: id.to_string(),
                    addr: addr.clone(),
                    nonce: nonce.clone(),
                },
            );
        }
        self.counters.indirect_probes_sent += helpers.len() as u64;
        debug!(member = %clip(id), helpers = helpers.len(), "our probe failed; asking neighbours to probe it");
        let until = now + self.indirect_wait();
        if let Some(s) = self.detector.suspects.get_mut(id) {
            s.indirect = Some(IndirectRound {
                nonce,
                waiting: helpers.into_iter().collect(),
                until,
            });
        }
        true
    }

    /// Rounds whose wait ran out end as failed.
    pub(super) fn expire_indirect_rounds(&mut self, now: Instant) {
        let over: Vec<String> = self
            .detector
            .suspects
            .iter()
            .filter(|(_, s)| s.indirect.as_ref().is_some_and(|r| r.until <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in over {
            self.indirect_round_failed(now, &id);
        }
    }

    /// Nobody reached the suspect for us. A reported death is confirmed now, if our own
    /// probe (which runs alongside) failed too; a suspicion of our own ends in a death
    /// only once its timeout has passed as well (until then our own probes go on).
    fn indirect_round_failed(&mut self, now: Instant, id: &str) {
        let timeout = self.suspect_timeout();
        let Some(s) = self.detector.suspects.get_mut(id) else {
            return;
        };
        s.indirect = None;
        let due =
            (s.reported && s.direct_failed) || now.saturating_duration_since(s.since) >= timeout;
        debug!(member = %clip(id), "no neighbour reached the suspect either");
        if due {
            self.declare_dead(now, id);
        }
    }

    /// A link we were waiting on for indirect probes is gone: it will not answer.
    pub(super) fn indirect_helper_gone(&mut self, now: Instant, conn: ConnId) {
        let mut emptied = Vec::new();
        for (id, s) in &mut self.detector.suspects {
            if let Some(r) = &mut s.indirect
                && r.waiting.remove(&conn)
                && r.waiting.is_empty()
            {
                emptied.push(id.clone());
            }
        }
        for id in emptied {
            self.indirect_round_failed(now, &id);
        }
    }

    /// A neighbour's answer to our probe request. Only an answer we are waiting for, on the
    /// link we asked, with our nonce, counts; and only a proof that verifies under the key
    /// we hold for the member, over our nonce, says it is alive.
    pub(super) fn on_probe_answer(
        &mut self,
        now: Instant,
        conn: ConnId,
        member: String,
        nonce: String,
        proof: Option<ProbeProof>,
    ) {
        let expected = self.detector.suspects.get_mut(&member).and_then(|s| {
            let r = s.indirect.as_mut()?;
            (r.nonce == nonce && r.waiting.remove(&conn)).then_some(r.waiting.is_empty())
        });
        let Some(last) = expected else {
            debug!(conn, member = %limits::shown(&member), "probe answer not asked for (stale or unsolicited); ignored");
            return;
        };
        if let Some(p) = proof {
            let key = self
                .members
                .get(&member)
                .map(|m| m.key.clone())
                .unwrap_or_default();
            let valid = !key.is_empty()
                && verify_hello_proof(
                    &nonce,
                    &member,
                    &key,
                    &p.addr,
                    p.incarnation,
                    p.intent.name(),
                    &p.sig,
                );
            if valid {
                self.indirect_saved(now, conn, &member);
                return;
            }
            self.counters.indirect_answers_refused += 1;
            warn!(
                conn,
                helper = %clip(&self.links.peer_id(conn).unwrap_or_default()),
                member = %clip(&member),
                "a neighbour's probe answer claims life with a proof that does not verify; ignored"
            );
        }
        if last {
            self.indirect_round_failed(now, &member);
        }
    }

    /// A neighbour reached the suspect for us: it is alive, only not from here.
    fn indirect_saved(&mut self, now: Instant, conn: ConnId, id: &str) {
        self.counters.indirect_probe_saves += 1;
        info!(
            member = %clip(id),
            via = %clip(&self.links.peer_id(conn).unwrap_or_default()),
            "suspect answered a neighbour's probe; alive"
        );
        self.doubt_cleared(id);
        self.detector.suspects.remove(id);
        self.replace_silent_link(now, id);
    }

    // ----- serving requests --------------------------------------------------------------

    fn relays_in_flight(&self, from: Option<ConnId>) -> usize {
        self.links
            .conns
            .values()
            .filter(|c| match &c.purpose {
                Some(Purpose::Relay { requester, .. }) => from.is_none_or(|f| f == *requester),
                _ => false,
            })
            .count()
    }

    /// A neighbour asks us to probe `member` at `addr` with its `nonce`.
    pub(super) fn on_probe_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        member: String,
        addr: String,
        nonce: String,
    ) {
        let is_link = self.links.conns.get(&conn).is_some_and(|c| c.is_link());
        let nonce_ok = nonce.len() == NONCE_BYTES * 2
            && nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_link || !nonce_ok || limits::check_id(&member).is_err() {
            // Not worth an answer: nobody of ours asked like that.
            self.counters.probe_requests_refused += 1;
            debug!(conn, "malformed probe request, or not on a link; ignored");
            return;
        }
        let requester = self.links.peer_id(conn);
        let ours = self
            .members
            .get(&member)
            .filter(|m| m.state == crate::node::wire::MemberState::Alive)
            .map(|m| m.addr.clone());
        let duplicate = self.links.conns.values().any(|c| {
            matches!(&c.purpose, Some(Purpose::Relay { requester: r, member: m, .. })
                if *r == conn && *m == member)
        });
        let refusal = if member == self.cfg.id || requester.as_deref() == Some(member.as_str()) {
            Some("about itself or the asker")
        } else if ours.as_deref() != Some(addr.as_str()) {
            // Unknown here, dead here, or known at another address: we dial only what our
            // own table says, so a request cannot aim us at an arbitrary address.
            Some("unknown member or another address")
        } else if duplicate {
            Some("already probing it for this neighbour")
        } else if self.relays_in_flight(Some(conn)) >= RELAYS_PER_LINK
            || self.relays_in_flight(None) >= RELAYS_AT_ONCE
        {
            Some("too many probe requests at once")
        } else {
            None
        };
        if let Some(why) = refusal {
            self.counters.probe_requests_refused += 1;
            debug!(conn, member = %clip(&member), why, "probe request refused");
            self.send(
                conn,
                Message::ProbeAnswer {
                    member,
                    nonce,
                    proof: None,
                },
            );
            return;
        }
        self.counters.probe_requests_served += 1;
        self.dial(
            now,
            addr,
            Purpose::Relay {
                requester: conn,
                member,
                nonce,
            },
        );
    }

    /// The member we probed for a neighbour proved itself over the neighbour's nonce:
    /// relay that proof. Someone else at the address is no answer.
    pub(super) fn relay_answered(&mut self, conn: ConnId, hello: &Hello, sig: &str) {
        let Some(Purpose::Relay {
            requester,
            member,
            nonce,
        }) = self.links.purpose(conn)
        else {
            return;
        };
        let proof = (hello.id == member).then(|| ProbeProof {
            addr: hello.addr.clone(),
            incarnation: hello.incarnation,
            intent: hello.intent,
            sig: sig.to_string(),
        });
        self.answer_requester(requester, member, nonce, proof);
        self.send(conn, Message::disconnect("probe done"));
        self.close_quietly(conn);
    }

    /// A probe made for a neighbour failed: tell it so, rather than let it wait.
    pub(super) fn relay_failed(&mut self, requester: ConnId, member: String, nonce: String) {
        self.answer_requester(requester, member, nonce, None);
    }

    fn answer_requester(
        &mut self,
        requester: ConnId,
        member: String,
        nonce: String,
        proof: Option<ProbeProof>,
    ) {
        if self
            .links
            .conns
            .get(&requester)
            .is_some_and(|c| c.is_link())
        {
            self.send(
                requester,
                Message::ProbeAnswer {
                    member,
                    nonce,
                    proof,
                },
            );
        }
    }
}
