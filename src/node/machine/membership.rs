//! Membership and failure detection: the member table as first-hand evidence and lists
//! update it, heartbeat rounds on links, suspicion with direct probes (and indirect ones,
//! see `indirect`) before a death is declared and flooded, refutation by incarnation,
//! random probes of non-neighbours and anti-entropy digests.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::seq::IndexedRandom;
use tracing::{debug, info, warn};

use super::indirect::IndirectRound;
use super::links::Purpose;
use super::{Config, ConnId, Machine};
use crate::node::logsafe::clip;
use crate::node::members::{Change, Evidence};
use crate::node::wire::{Flood, Hello, Intent, MemberEvent, MemberRecord, MemberState, Message};

/// The suspicion timeout never grows beyond this multiple of `--suspect-timeout`.
const SUSPICION_SCALE_MAX: f64 = 3.0;

#[derive(Debug)]
pub(super) struct Suspicion {
    pub since: Instant,
    pub addr: String,
    pub next_probe: Instant,
    /// Started by another node's death report rather than by our own observation: the
    /// first failed probe of ours, and of the neighbours we ask, confirms it (see
    /// [`Machine::suspect_on_report`]).
    pub reported: bool,
    /// Neighbours probing it for us (see `indirect`), if we are waiting for them.
    pub indirect: Option<IndirectRound>,
    /// A round of indirect probes was tried during this suspicion: a suspicion of our own
    /// runs one (its direct probes go on meanwhile), and ends in a death only after it.
    pub indirect_tried: bool,
    /// A probe of ours failed during this suspicion.
    pub direct_failed: bool,
}

/// The failure detector's state.
pub(super) struct Detector {
    pub suspects: BTreeMap<String, Suspicion>,
    /// Members to probe: (id, addr).
    pub probe_queue: VecDeque<(String, String)>,
    /// Next anti-entropy digest.
    pub next_sync: Instant,
    /// Next probe of a random non-neighbour at the fast pace (SWIM's protocol period:
    /// two heartbeats); while the network is quiet, see [`Machine::random_probe_due`].
    pub next_random_probe: Instant,
    /// When the last random probe was queued.
    pub last_random_probe: Instant,
}

impl Detector {
    pub fn new(cfg: &Config, now: Instant) -> Self {
        Detector {
            suspects: BTreeMap::new(),
            probe_queue: VecDeque::new(),
            next_sync: now + cfg.sync_interval,
            next_random_probe: now + cfg.heartbeat_interval * 2,
            last_random_probe: now,
        }
    }
}

/// What becomes of a membership flood once this node has applied it (see
/// [`Machine::apply_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventFate {
    /// Passed on to the other links.
    Relay,
    /// Taken in, not passed on: a death report this node checks first, or a death of its
    /// own that its refutation answers.
    Kept,
    /// Refused: a forgery or a record over the limits. Forgotten, so that the genuine
    /// event with the same id is not taken for a duplicate.
    Refused,
}

impl Machine {
    /// Suspicions to advance, probes to start, and (once joined) the random probe and
    /// the anti-entropy digest.
    pub(super) fn detector_deadline(&self, now: Instant) -> Option<Instant> {
        let timeout = self.suspect_timeout();
        let suspicions = self
            .detector
            .suspects
            .values()
            .map(|s| {
                let death = s.since + timeout;
                match &s.indirect {
                    // Past its timeout, a suspicion waits for its helpers only.
                    Some(r) if death <= now => r.until,
                    Some(r) => death.min(s.next_probe).min(r.until),
                    None => death.min(s.next_probe),
                }
            })
            .min();
        let probes = self.probes_startable().then_some(now);
        // Anti-entropy needs a neighbour to ask, a random probe a member that is not one
        // (a lone genesis has neither, and sleeps).
        let joined = self.is_joined();
        let linked = !self.links.neighbours.is_empty();
        let sync = (joined && linked).then_some(self.detector.next_sync);
        let unlinked = self.members.alive_count() > self.links.neighbours.len() + 1;
        // Due in the past: the network just stopped being quiet; the next round will do
        // (rounds are wake-ups anyway, an instant off them would be one more).
        let random = (joined && unlinked).then(|| {
            let due = self.random_probe_due(now);
            if due <= now {
                self.round_after(now)
            } else {
                due
            }
        });
        [suspicions, probes, sync, random]
            .into_iter()
            .flatten()
            .min()
    }

    /// When a link falls silent long enough to suspect its peer: links whose peer is
    /// already a suspect are the suspicion's business.
    pub(super) fn silence_deadline(&self) -> Option<Instant> {
        self.links
            .conns
            .values()
            .filter(|c| c.is_link())
            .filter(|c| {
                c.peer
                    .as_ref()
                    .is_some_and(|p| !self.detector.suspects.contains_key(&p.id))
            })
            .map(|c| c.last_heard + self.cfg.heartbeat_timeout)
            .min()
    }

    // ----- heartbeats --------------------------------------------------------------------

    /// Silent links, lingering handshakes, and the heartbeats of links due one.
    ///
    /// Heartbeats go out in rounds, at multiples of the heartbeat interval of the Unix
    /// clock: every link due a ping is pinged at once, so a node wakes once per round for
    /// all of its links, and its neighbours (whose rounds fall on the same instants) ping
    /// it at the same moment. Two pings that cross answer each other (see
    /// [`Machine::on_ping`]), so an idle link carries one frame each way per ping, as one
    /// ping-pong did before, without a wake-up for the pong. How many rounds apart a
    /// quiet link's pings are is [`Machine::ping_rounds`].
    pub(super) fn check_connections(&mut self, now: Instant) {
        let mut silent = Vec::new();
        let mut stale = Vec::new();
        let mut pings = Vec::new();
        for (id, c) in &self.links.conns {
            if c.is_link() {
                let quiet = now.saturating_duration_since(c.last_heard);
                if quiet >= self.cfg.heartbeat_timeout {
                    silent.push(*id);
                }
                if self.ping_due(c) <= now {
                    pings.push(*id);
                }
            } else if now.saturating_duration_since(c.opened_at) >= self.handshake_limit(c) {
                stale.push(*id);
            }
        }
        if !pings.is_empty() {
            self.counters.heartbeat_rounds += 1;
        }
        for conn in pings {
            let nonce = self.links.next_nonce;
            self.links.next_nonce += 1;
            if let Some(c) = self.links.conns.get_mut(&conn) {
                c.last_ping = now;
            }
            self.send(conn, Message::Ping { nonce });
        }
        // A silent link is kept open while its peer is a suspect: a slow peer that speaks
        // again clears the suspicion without a new link and without any flood. The link
        // is closed when the suspicion ends in a death, or when a probe finds the peer
        // alive but this link still silent (a broken connection, see on_probe_answered).
        for conn in silent {
            let Some(peer) = self.links.peer_id(conn) else {
                continue;
            };
            if !self.members.is_alive(&peer) {
                // Declared dead or gone by others, and silent here too: nothing to wait for.
                debug!(peer = %clip(&peer), "silent link to a member no longer alive; closing it");
                self.close(now, conn);
            } else if !self.detector.suspects.contains_key(&peer) {
                warn!(peer = %clip(&peer), timeout = ?self.cfg.heartbeat_timeout, "neighbour stopped answering heartbeats");
                self.suspect(now, &peer);
            }
        }
        for conn in stale {
            debug!(conn, "connection timed out before completing");
            self.close(now, conn);
        }
    }

    /// How many heartbeat rounds apart a quiet link is pinged: as many as fit in half
    /// the heartbeat timeout, at least one. A link is TCP, so a ping is never lost, only
    /// late; one every half timeout leaves half the timeout as margin for a late one,
    /// and pinging more often buys nothing but frames (each one a wake-up and a trip
    /// through both kernels' TCP stacks, the bulk of an idle node's cost). With the
    /// defaults (interval 500 ms, timeout 1.5 s) that is every round.
    pub(super) fn ping_rounds(&self) -> u32 {
        let interval = self.cfg.heartbeat_interval.as_nanos().max(1);
        let fit = self.cfg.heartbeat_timeout.as_nanos() / (2 * interval);
        fit.clamp(1, u128::from(u32::MAX)) as u32
    }

    /// The round at which link `c` is next due a ping: the first round, of those every
    /// `ping_rounds` rounds on the Unix clock, at least half a round after we last heard
    /// from the peer or pinged it. Any frame from the peer proves it alive, its pings
    /// included. The rounds are on one grid for all links and all nodes, so that a node
    /// wakes once for all of its links and two neighbours' pings cross; half a round of
    /// slack lets a ping heard a little late still count for its round.
    pub(super) fn ping_due(&self, c: &super::links::Conn) -> Instant {
        let interval = self.cfg.heartbeat_interval;
        let after = c.last_heard.max(c.last_ping) + interval / 2;
        self.align_up(after, interval * self.ping_rounds())
    }

    /// A ping is answered, unless our own ping on this link crossed it: that ping, sent
    /// within the last half interval, already told the peer we are alive.
    pub(super) fn on_ping(&mut self, now: Instant, conn: ConnId, nonce: u64) {
        let half = self.cfg.heartbeat_interval / 2;
        let crossed = self
            .links
            .conns
            .get(&conn)
            .is_some_and(|c| c.is_link() && now.saturating_duration_since(c.last_ping) < half);
        if !crossed {
            self.send(conn, Message::Pong { nonce });
        }
    }

    /// Once joined: the random probe of a non-neighbour and the anti-entropy digest, each
    /// on a round.
    pub(super) fn periodic_membership(&mut self, now: Instant) {
        if now >= self.detector.next_sync {
            // Digests repair tables that missed an event; while nothing changes they
            // only confirm agreement, so a quiet network confirms it a third as often.
            let period = if self.network_quiet(now) {
                self.cfg.sync_interval * 3
            } else {
                self.cfg.sync_interval
            };
            self.detector.next_sync = self.round_near(now, period);
            if self.members_settled(now) {
                self.send_digest();
            }
        }
        if now >= self.random_probe_due(now) {
            self.detector.next_random_probe = self.round_near(now, self.cfg.heartbeat_interval * 2);
            self.detector.last_random_probe = now;
            self.probe_random_member();
        }
    }

    /// When the next random probe is due. SWIM's pace (one every two heartbeat rounds)
    /// is for when something is happening; in a quiet network a probe costs a TCP
    /// connection on both sides and finds nothing, since the links' heartbeats already
    /// watch every member that has a neighbour. Random probes exist for members that
    /// died with all their neighbours, and such a death is never quiet: their
    /// neighbours' other links fall silent, suspicions start, deaths are flooded, and
    /// every node is back at the fast pace for as long as its member table keeps
    /// changing (and `sync_interval` after). So a quiet node probes every
    /// `quiet_probe_rounds` rounds, and at SWIM's pace again from the first change.
    pub(super) fn random_probe_due(&self, now: Instant) -> Instant {
        let fast = self.detector.next_random_probe;
        if !self.network_quiet(now) {
            return fast;
        }
        let period = self.cfg.heartbeat_interval * self.cfg.quiet_probe_rounds.max(2);
        fast.max(self.round_near(self.detector.last_random_probe, period))
    }

    /// Nothing has changed for a while: the member table has been stable for
    /// `sync_interval`, nobody died or left for `quiet_after_loss`, nobody is suspected
    /// and no probe is waiting. The loss window matters after a partition or a mass
    /// failure: the last members across a cut, those nobody here has a link to, are found
    /// only by random probes, and their deaths can be seconds apart, longer than
    /// `sync_interval`; slowing down then would stretch that tail fivefold.
    fn network_quiet(&self, now: Instant) -> bool {
        let loss_is_old = self
            .members
            .since_last_loss(now)
            .is_none_or(|ago| ago >= self.cfg.quiet_after_loss);
        loss_is_old
            && self.members.stable_for(now) >= self.cfg.sync_interval
            && self.detector.suspects.is_empty()
            && self.detector.probe_queue.is_empty()
    }

    /// The round nearest to `period` after `now` (a wake-up a little after its round
    /// must not push the next one a whole round later).
    pub(super) fn round_near(&self, now: Instant, period: Duration) -> Instant {
        let half = self.cfg.heartbeat_interval / 2;
        self.round_after(now + period.saturating_sub(half))
    }

    // ----- suspicion ---------------------------------------------------------------------

    pub(super) fn suspect(&mut self, now: Instant, id: &str) {
        if id == self.cfg.id || self.leaving || !self.members.is_alive(id) {
            return;
        }
        let Some(addr) = self.members.get(id).map(|m| m.addr.clone()) else {
            return;
        };
        if !self.detector.suspects.contains_key(id) {
            info!(member = %clip(id), "suspecting member");
            self.detector.suspects.insert(
                id.to_string(),
                Suspicion {
                    since: now,
                    addr,
                    next_probe: now,
                    reported: false,
                    indirect: None,
                    indirect_tried: false,
                    direct_failed: false,
                },
            );
        }
    }

    /// Another node says a member we believe alive is dead. Anyone can send that frame,
    /// so it is not believed: the member becomes a suspect here and we probe it at once.
    /// If our probe fails (the dial is refused, or no hello comes back within
    /// [`Machine::probe_limit`]), we ask a few neighbours to probe it too (see
    /// `indirect`); if none of them reaches it either, that confirms the report and we
    /// declare the death ourselves, and only then flood it; a member that answers stays,
    /// and the report goes no further. A real crash so costs each node one probe and one
    /// round of indirect probes more than before; a forged report costs the network one
    /// probe per node that heard it (only from the forger's neighbours, as nobody relays it).
    pub(super) fn suspect_on_report(&mut self, now: Instant, id: &str) {
        self.suspect(now, id);
        let mut ask_others = false;
        if let Some(s) = self.detector.suspects.get_mut(id) {
            s.reported = true;
            s.next_probe = now;
            ask_others = !s.indirect_tried;
        }
        if let Some(addr) = self.members.get(id).map(|m| m.addr.clone()) {
            self.queue_probe(id.to_string(), addr);
        }
        // The report's author has waited out a whole suspicion already: our neighbours
        // probe alongside our own probe rather than after it, so that checking a frozen
        // member's death takes one short probe, not two in a row.
        if ask_others {
            self.start_indirect_round(now, id);
        }
    }

    /// How long a probe waits for the member's hello and key proof. A reported death is
    /// checked with a short wait ([`Machine::short_probe_limit`]): a living node answers
    /// in far less (a link that stays silent for a heartbeat timeout is suspected anyway),
    /// and the report's author has already waited out a whole suspicion.
    pub(super) fn probe_limit(&self, id: &str) -> Duration {
        match self.detector.suspects.get(id) {
            Some(s) if s.reported => self.short_probe_limit(),
            _ => self.cfg.hello_timeout,
        }
    }

    pub(super) fn advance_suspicions(&mut self, now: Instant) {
        if self.detector.suspects.is_empty() {
            return;
        }
        self.expire_indirect_rounds(now);
        let timeout = self.suspect_timeout();
        let mut dead = Vec::new();
        let mut ask_others = Vec::new();
        let mut probe = Vec::new();
        for (id, s) in &mut self.detector.suspects {
            if now.saturating_duration_since(s.since) >= timeout {
                // Never dead on our word alone while neighbours could still reach it.
                if s.indirect.is_some() {
                    continue;
                }
                if s.indirect_tried {
                    dead.push(id.clone());
                } else {
                    ask_others.push(id.clone());
                }
            } else if now >= s.next_probe {
                s.next_probe = now + self.cfg.heartbeat_interval;
                probe.push((id.clone(), s.addr.clone()));
            }
        }
        for (id, addr) in probe {
            self.queue_probe(id, addr);
        }
        for id in ask_others {
            if !self.start_indirect_round(now, &id) {
                dead.push(id);
            }
        }
        for id in dead {
            self.declare_dead(now, &id);
        }
    }

    pub(super) fn declare_dead(&mut self, now: Instant, id: &str) {
        let Some(s) = self.detector.suspects.remove(id) else {
            return;
        };
        let Some(mut rec) = self.members.record(id) else {
            return;
        };
        if rec.state != MemberState::Alive {
            return;
        }
        rec.state = MemberState::Dead;
        warn!(member = %clip(id), after = ?self.suspect_timeout(), "member unreachable; declaring it dead");
        self.counters.members_declared_dead += 1;
        self.members.apply(&rec, Evidence::Hearsay, now);
        if let Some(conn) = self.links.neighbours.get(id).copied() {
            self.close(now, conn);
        }
        self.add_retry(now, s.addr);
        // Not `flood_event`: a report of this death may have reached us first (its id is
        // then seen, and we did not relay it); our own confirmation goes out regardless.
        let flood = Flood::membership(
            MemberEvent::Dead { member: rec },
            &self.cfg.id,
            self.unix(now),
        );
        self.flood.seen.insert(&flood.id, now);
        self.forward(now, &flood, None);
    }

    /// How long a suspect has to answer before it is declared dead. As SWIM's Lifeguard
    /// does, the timeout grows with the logarithm of the network's size: in a big network
    /// more nodes watch each member, a false death costs a flood to every node and its
    /// refutation another, and loaded machines (many nodes on few cores) answer late.
    pub(super) fn suspect_timeout(&self) -> Duration {
        let n = self.members.alive_count().max(1) as f64;
        let from = self.cfg.suspicion_scale_from.max(2) as f64;
        let scale = (n.log2() / from.log2()).clamp(1.0, SUSPICION_SCALE_MAX);
        self.cfg.suspect_timeout.mul_f64(scale)
    }

    // ----- probes ------------------------------------------------------------------------

    fn probes_in_flight(&self) -> usize {
        self.links
            .conns
            .values()
            .filter(|c| matches!(c.purpose, Some(Purpose::Probe { .. })))
            .count()
    }

    /// Queued probes that may start now (in-flight ones below the cap).
    fn probes_startable(&self) -> bool {
        !self.detector.probe_queue.is_empty() && self.probes_in_flight() < self.cfg.max_probes
    }

    pub(super) fn queue_probe(&mut self, id: String, addr: String) {
        let queued = self.detector.probe_queue.iter().any(|(q, _)| *q == id);
        let in_flight = self
            .links
            .conns
            .values()
            .any(|c| matches!(&c.purpose, Some(Purpose::Probe { id: p, .. }) if *p == id));
        if !queued && !in_flight && self.detector.probe_queue.len() < self.cfg.max_members {
            self.detector.probe_queue.push_back((id, addr));
        }
    }

    pub(super) fn run_probes(&mut self, now: Instant) {
        let mut in_flight = self.probes_in_flight();
        while in_flight < self.cfg.max_probes {
            let Some((id, addr)) = self.detector.probe_queue.pop_front() else {
                break;
            };
            self.dial(now, addr.clone(), Purpose::Probe { id, addr });
            in_flight += 1;
        }
    }

    /// Members are otherwise watched only through links, so a member with no link into our
    /// part of a split network (or that died while only linked across the split) would stay
    /// listed forever. Every two heartbeat intervals, probe a random non-neighbour, as SWIM
    /// does each protocol period: if it cannot be reached it becomes a suspect like any
    /// other. After a mass failure, members whose every neighbour died too are found this
    /// way; with one probe per node per period, the survivors find them within seconds.
    /// (Found by the simulator's partition test: each half kept the other's unlinked
    /// members alive indefinitely.)
    fn probe_random_member(&mut self) {
        // Half the time among the members only heard of: a hostile peer's inventions are
        // found out (and removed) sooner, and the genesis learns more members it may
        // offer to joiners.
        let hearsay_only = self.rng.random_bool(0.5) && self.members.unverified().next().is_some();
        let mut others: Vec<(String, String)> = self
            .members
            .alive()
            .filter(|(_, m)| !hearsay_only || !m.direct)
            .filter(|(id, _)| {
                **id != self.cfg.id
                    && !self.links.neighbours.contains_key(*id)
                    && !self.detector.suspects.contains_key(*id)
            })
            .map(|(id, m)| (id.clone(), m.addr.clone()))
            .collect();
        others.sort();
        if let Some((id, addr)) = others.choose(&mut self.rng).cloned() {
            self.queue_probe(id, addr);
        }
    }

    /// A probe's hello came back: the member is alive.
    pub(super) fn on_probe_answered(&mut self, now: Instant, conn: ConnId, id: &str) {
        self.doubt_cleared(id);
        if self.detector.suspects.remove(id).is_some() {
            info!(member = %clip(id), "suspect answered; alive");
        }
        self.replace_silent_link(now, id);
        self.send(conn, Message::disconnect("probe done"));
        self.close_quietly(conn);
    }

    /// `id` proved itself alive, yet our link to it says nothing: that connection is
    /// broken (a half-open socket, a cut in one direction). Drop it; repair links anew.
    pub(super) fn replace_silent_link(&mut self, now: Instant, id: &str) {
        let broken = self.links.neighbours.get(id).copied().filter(|link| {
            self.links.conns.get(link).is_some_and(|l| {
                now.saturating_duration_since(l.last_heard) >= self.cfg.heartbeat_timeout
            })
        });
        if let Some(link) = broken {
            info!(peer = %clip(id), "link silent although its peer answers; replacing it");
            self.close(now, link);
            self.detector.suspects.remove(id);
        }
    }

    pub(super) fn probe_failed(&mut self, now: Instant, id: &str) {
        if self.doubt_failed(now, id) {
            return;
        }
        if let Some(s) = self.detector.suspects.get_mut(id) {
            s.direct_failed = true;
            // Our own probe failed: before anyone is declared dead, neighbours try (once
            // per suspicion; a round already out is waited for).
            if s.indirect.is_some() {
                return;
            }
            let reported = s.reported;
            if !s.indirect_tried && self.start_indirect_round(now, id) {
                return;
            }
            // A death reported by another node, and every check failed too: confirmed.
            if reported {
                self.declare_dead(now, id);
            }
            return;
        }
        // An alive member we cannot reach becomes a suspect; a dead one stays dead.
        if self.members.is_alive(id) && !self.links.neighbours.contains_key(id) {
            self.suspect(now, id);
        }
    }

    // ----- the member table --------------------------------------------------------------

    /// Life proven by the member itself: add or revive it, and tell the network if that
    /// changed our view (a revival after a split, a restart on the same address).
    pub(super) fn learn_first_hand(&mut self, now: Instant, hello: &Hello) {
        // A query from a stranger is a candidate, not a member yet.
        let known = self.members.get(&hello.id).is_some();
        if hello.intent == Intent::Query && !known {
            return;
        }
        let rec = hello.record();
        let was_dead = known && !self.members.is_alive(&hello.id);
        let change = self.members.apply(&rec, Evidence::FirstHand, now);
        self.note_refusal(&rec.id, change);
        self.members.mark_direct(&hello.id, &hello.addr);
        if change == Change::Added && was_dead {
            info!(member = %clip(&hello.id), "dead member is back; telling the network");
            let flood = Flood::revival(rec, &self.cfg.id, self.unix(now));
            if self.flood.seen.insert(&flood.id, now) {
                self.forward(now, &flood, None);
            }
        }
        self.detector.suspects.remove(&hello.id);
    }

    /// One chunk of a member list (the whole list when `more` is false and no chunk came
    /// before). Dead records are ignored: a list cannot kill anyone.
    pub(super) fn on_member_list(
        &mut self,
        now: Instant,
        conn: ConnId,
        list: Vec<MemberRecord>,
        more: bool,
    ) {
        let list = self.valid_records(conn, "member list", list);
        if let Some(theirs) = self.list_chunk(conn, &list, more) {
            self.probe_absent(conn, &theirs);
        }
        for rec in list {
            if rec.state != MemberState::Alive {
                continue;
            }
            if rec.id == self.cfg.id {
                continue;
            }
            let known_dead = self
                .members
                .get(&rec.id)
                .is_some_and(|m| m.state == MemberState::Dead && m.incarnation == rec.incarnation);
            if known_dead {
                // They think it alive, we think it dead: ask it ourselves.
                self.queue_probe(rec.id.clone(), rec.addr.clone());
                continue;
            }
            if !self.may_add(now, conn, &rec.id) {
                continue;
            }
            let change = self.members.apply(&rec, Evidence::Hearsay, now);
            self.note_refusal(&rec.id, change);
            if change == Change::Added {
                debug!(member = %clip(&rec.id), "learned member from a list");
            }
        }
        if !more {
            self.member_list_received();
        }
    }

    /// Members we believe alive that the whole list (`theirs`) lacks: verify them ourselves.
    fn probe_absent(&mut self, conn: ConnId, theirs: &HashSet<String>) {
        let peer = self.links.peer_id(conn);
        let absent: Vec<(String, String)> = self
            .members
            .alive()
            .filter(|(id, _)| **id != self.cfg.id && !theirs.contains(id.as_str()))
            .filter(|(id, _)| peer.as_deref() != Some(id.as_str()))
            .filter(|(id, _)| !self.links.neighbours.contains_key(*id))
            .map(|(id, m)| (id.clone(), m.addr.clone()))
            .collect();
        for (id, addr) in absent {
            self.queue_probe(id, addr);
        }
    }

    /// A membership event from a flood that arrived on `from`, and what becomes of the
    /// flood: relayed; kept but not relayed (a death report we have yet to confirm
    /// ourselves, a death of ours that our refutation answers); or refused (a record that
    /// breaks the limits or the connection's budget, or that its subject did not sign).
    pub(super) fn apply_event(
        &mut self,
        now: Instant,
        from: ConnId,
        event: MemberEvent,
    ) -> EventFate {
        let member = match &event {
            MemberEvent::Joined { member }
            | MemberEvent::Left { member }
            | MemberEvent::Dead { member } => member,
        };
        if !self.record_within_limits(from, "membership flood", member) {
            return EventFate::Refused;
        }
        if member.id != self.cfg.id && !self.may_add(now, from, &member.id) {
            return EventFate::Refused;
        }
        match event {
            MemberEvent::Joined { member } => {
                if member.id == self.cfg.id {
                    return EventFate::Relay;
                }
                // A join flood is sent by the member itself, or by a node that just heard
                // from it: first-hand evidence.
                let change = self.members.apply(&member, Evidence::FirstHand, now);
                self.note_refusal(&member.id, change);
                if change == Change::Added {
                    debug!(member = %clip(&member.id), "member joined");
                    self.detector.suspects.remove(&member.id);
                    self.repair.retries.remove(&member.addr);
                }
                if change.refused() {
                    return EventFate::Refused;
                }
            }
            MemberEvent::Left { member } | MemberEvent::Dead { member }
                if member.id == self.cfg.id =>
            {
                // Only a death that names our own signed record is worth refuting (and
                // passing on): a forged one convinces nobody.
                let ours = member.key == self.cfg.identity.public_hex() && member.verify();
                if !ours {
                    self.note_refusal(&member.id, Change::BadSignature);
                    return EventFate::Refused;
                }
                if member.incarnation >= self.incarnation && member.state == MemberState::Dead {
                    self.refute(now, member.incarnation);
                }
                // Our refutation (or nothing, for a stale lie) is all the network needs.
                return EventFate::Kept;
            }
            MemberEvent::Left { member } => {
                let change = self.members.apply(&member, Evidence::Hearsay, now);
                self.note_refusal(&member.id, change);
                if change.refused() {
                    return EventFate::Refused;
                }
                if change == Change::Removed {
                    info!(member = %clip(&member.id), "member left");
                }
                self.detector.suspects.remove(&member.id);
                self.repair.retries.remove(&member.addr);
            }
            MemberEvent::Dead { member } => {
                // Only the subject's own signed record, under the key its id is bound to,
                // names a member that may be dead; anything else is a forgery.
                if !member.verify() || self.members.key_conflict(&member.id, &member.key) {
                    self.note_refusal(&member.id, Change::BadSignature);
                    return EventFate::Refused;
                }
                let believed_alive = self
                    .members
                    .get(&member.id)
                    .is_some_and(|m| m.state == MemberState::Alive);
                if believed_alive {
                    let current = self
                        .members
                        .get(&member.id)
                        .is_some_and(|m| member.incarnation >= m.incarnation);
                    if current {
                        info!(member = %clip(&member.id), "death reported by another node; checking it");
                        self.suspect_on_report(now, &member.id);
                    }
                    // Relayed once (and if) our own probe confirms it.
                    return EventFate::Kept;
                }
                // A stranger's or a known death: a tombstone, no one alive is touched.
                let change = self.members.apply(&member, Evidence::Hearsay, now);
                self.note_refusal(&member.id, change);
                if change.refused() {
                    return EventFate::Refused;
                }
            }
        }
        EventFate::Relay
    }

    /// Declared dead at `dead_at`: come back one incarnation higher, signed. Incarnations
    /// never wrap: at `u64::MAX` the refutation stays there, and life proven by the member
    /// itself beats a death at the same incarnation.
    fn refute(&mut self, now: Instant, dead_at: u64) {
        let saturated = dead_at == u64::MAX;
        self.incarnation = dead_at.saturating_add(1).max(self.incarnation);
        let me = MemberRecord::unsigned(
            self.cfg.id.clone(),
            self.cfg.addr.clone(),
            self.incarnation,
            MemberState::Alive,
        )
        .signed(&self.cfg.identity);
        self.members.set_self(&me, now);
        warn!(
            incarnation = self.incarnation,
            "declared dead by the network; refuting"
        );
        let mut flood = Flood::membership(
            MemberEvent::Joined { member: me },
            &self.cfg.id,
            self.unix(now),
        );
        if saturated {
            // The same incarnation again: a flood id of its own, or it would be taken for
            // the earlier refutation and dropped as a duplicate.
            flood.id =
                crate::node::wire::digest(&[&flood.id, "refuted-at", &flood.time.to_string()]);
        }
        if self.flood.seen.insert(&flood.id, now) {
            self.forward(now, &flood, None);
        }
    }

    /// Counts a hello or record refused for its identity, and logs it once per id (a
    /// flood of forgeries must not become a flood of log lines).
    pub(super) fn note_refusal(&mut self, id: &str, change: Change) {
        if !change.refused() {
            return;
        }
        self.counters.identity_refused += 1;
        if self.refused_logged.len() < self.cfg.max_members
            && self.refused_logged.insert(id.to_string())
        {
            let why = match change {
                Change::KeyConflict => "the id belongs to a living member with another key",
                Change::NotOfNetwork => "its hello lacks this network's key",
                _ => "not signed by its subject",
            };
            warn!(member = %id, why, "refused a record or hello (logged once per id)");
        }
    }

    // ----- anti-entropy ------------------------------------------------------------------

    /// Anti-entropy repairs what floods missed; while members are still joining or
    /// leaving, tables differ because floods are still travelling, and comparing them
    /// would trade whole member lists (at 1,000 nodes, hundreds of KB a second per node)
    /// for differences that settle by themselves. So both sides wait for quiet.
    fn members_settled(&self, now: Instant) -> bool {
        self.members.stable_for(now) >= self.cfg.sync_interval / 2
    }

    fn send_digest(&mut self) {
        let links: Vec<ConnId> = self.links.neighbours.values().copied().collect();
        if let Some(conn) = links.choose(&mut self.rng).copied() {
            let msg = Message::MembersDigest {
                digest: self.members.digest(),
                count: self.members.alive_count(),
            };
            self.send(conn, msg);
        }
    }

    pub(super) fn on_digest(&mut self, now: Instant, conn: ConnId, digest: String) {
        // Our own table still moving: the floods in flight will settle it, and a
        // full exchange now would be a thousand records each way for nothing.
        if self.members_settled(now) && digest != self.members.digest() {
            self.send_member_list(conn);
            self.send(conn, Message::GiveNodesInNetwork);
        }
    }
}
