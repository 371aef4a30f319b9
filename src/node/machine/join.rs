//! Joining: ask a genesis for a random member, ask that member for nodes to connect to,
//! link to them (following redirects from full nodes, within a budget), flood "joined" and
//! fetch the member list; back off between failed attempts. The answers a node gives to
//! candidates (a random member, nodes to connect to, redirects) live here too.

use std::collections::HashSet;
use std::time::Instant;

use rand::RngExt;
use rand::seq::{IndexedRandom, SliceRandom};
use tracing::{debug, info, warn};

use super::links::Purpose;
use super::{Config, ConnId, Machine};
use crate::node::logsafe::clip;
use crate::node::members::Evidence;
use crate::node::wire::{MemberEvent, MemberRecord, Message};

/// Redirected link attempts per join attempt.
const MAX_REDIRECTS: usize = 4;
/// Quick re-asks after a join found only full nodes; then the usual back-off, so that a
/// network with no room at all is not asked again and again.
const QUICK_REJOINS: u32 = 3;

#[derive(Debug)]
pub(super) enum Join {
    /// We started the network.
    Genesis,
    Waiting {
        next: Instant,
    },
    AskingRandom,
    AskingNodes,
    Linking {
        pending: HashSet<ConnId>,
        deadline: Instant,
    },
    Syncing {
        deadline: Instant,
    },
    Joined,
}

/// The joining part's state.
pub(super) struct Joining {
    pub state: Join,
    attempt: u32,
    /// Attempts of this join that ended only because every node offered was full: they
    /// are retried at once and do not lengthen the back-off of real failures.
    full_refusals: u32,
    /// Set when a node refused one of this attempt's links for lack of room.
    pub refused_for_room: bool,
    genesis_cursor: usize,
    /// Redirected link attempts still allowed in this join attempt: full nodes redirect to
    /// each other, and without a budget a crowded region would bounce a candidate forever.
    redirects_left: usize,
}

impl Joining {
    pub fn new(cfg: &Config, now: Instant) -> Self {
        let own = &cfg.addr;
        let genesis = cfg.genesis.iter().any(|g| g != own);
        Joining {
            state: if genesis {
                Join::Waiting { next: now }
            } else {
                Join::Genesis
            },
            attempt: 0,
            full_refusals: 0,
            refused_for_room: false,
            genesis_cursor: 0,
            redirects_left: 0,
        }
    }

    pub fn is_joined(&self) -> bool {
        matches!(self.state, Join::Genesis | Join::Joined)
    }
}

impl Machine {
    /// The next step of a join in progress, or a rejoin check for a node left alone.
    pub(super) fn join_deadline(&self, now: Instant) -> Option<Instant> {
        match &self.join.state {
            Join::Waiting { next } => Some(*next),
            Join::Linking { pending, deadline } => {
                Some(if pending.is_empty() { now } else { *deadline })
            }
            Join::Syncing { deadline } => Some(*deadline),
            Join::Joined if self.alone() => Some(now),
            _ => None,
        }
    }

    /// Joined, yet no neighbour, no other member and no link being made: only the
    /// genesis can bring this node back.
    fn alone(&self) -> bool {
        !self.is_genesis()
            && self.links.neighbours.is_empty()
            && self.members.alive_count() <= 1
            && self.links.pending_links() == 0
    }

    pub(super) fn advance_join(&mut self, now: Instant) {
        match &self.join.state {
            Join::Waiting { next } if now >= *next => {
                let addr =
                    self.cfg.genesis[self.join.genesis_cursor % self.cfg.genesis.len()].clone();
                self.join.genesis_cursor += 1;
                self.join.attempt += 1;
                self.join.redirects_left = MAX_REDIRECTS;
                self.join.refused_for_room = false;
                info!(attempt = self.join.attempt, genesis = %addr, "asking genesis for a random peer");
                self.dial(now, addr, Purpose::AskRandom);
                self.join.state = Join::AskingRandom;
            }
            Join::Linking { pending, deadline } if pending.is_empty() || now >= *deadline => {
                self.finish_linking(now);
            }
            Join::Syncing { deadline } if now >= *deadline => {
                self.join_complete();
            }
            _ => {}
        }
        if matches!(self.join.state, Join::Joined) && self.alone() {
            warn!("lost every neighbour and knows no member; joining again through the genesis");
            self.join.state = Join::Waiting { next: now };
            self.join.attempt = 0;
            self.join.full_refusals = 0;
        }
    }

    fn join_failed(&mut self, now: Instant, why: &str) {
        let exp = self
            .join
            .attempt
            .saturating_sub(self.join.full_refusals)
            .min(16);
        let base = self
            .cfg
            .join_backoff_base
            .saturating_mul(1u32 << exp.min(10));
        let capped = base.min(self.cfg.join_backoff_max);
        let jitter = capped.mul_f64(self.rng.random_range(0.0..0.5));
        let wait = capped + jitter;
        warn!(attempt = self.join.attempt, retry_in = ?wait, "join failed: {why}");
        self.join.state = Join::Waiting { next: now + wait };
    }

    /// A connection of the join's questions closed before it was answered.
    pub(super) fn join_query_lost(&mut self, now: Instant, purpose: Option<&Purpose>) {
        match purpose {
            Some(Purpose::AskRandom) if matches!(self.join.state, Join::AskingRandom) => {
                self.join_failed(now, "genesis did not answer");
            }
            Some(Purpose::AskNodes) if matches!(self.join.state, Join::AskingNodes) => {
                self.join_failed(now, "the suggested peer did not answer");
            }
            _ => {}
        }
    }

    pub(super) fn on_random_node(
        &mut self,
        now: Instant,
        conn: ConnId,
        node: Option<MemberRecord>,
    ) {
        if !matches!(self.join.state, Join::AskingRandom)
            || self.links.purpose(conn) != Some(Purpose::AskRandom)
        {
            return;
        }
        let genesis = self.links.conns.get(&conn).and_then(|c| c.dialed.clone());
        let node = node.filter(|n| self.record_within_limits(conn, "random-node answer", n));
        self.send(conn, Message::disconnect("thanks"));
        self.close_quietly(conn);
        match (node, genesis) {
            (Some(node), _) if node.id != self.cfg.id => {
                debug!(peer = %clip(&node.id), "genesis suggested a peer");
                self.dial(now, node.addr, Purpose::AskNodes);
                self.join.state = Join::AskingNodes;
            }
            (_, Some(genesis)) => {
                // The network is only the genesis: become its neighbour.
                let link = self.dial(now, genesis, Purpose::Link);
                self.join.state = Join::Linking {
                    pending: HashSet::from([link]),
                    deadline: now + self.cfg.hello_timeout * 2,
                };
            }
            (_, None) => self.join_failed(now, "no genesis address"),
        }
    }

    pub(super) fn on_nodes_to_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        nodes: Vec<MemberRecord>,
    ) {
        if !matches!(self.join.state, Join::AskingNodes)
            || self.links.purpose(conn) != Some(Purpose::AskNodes)
        {
            return;
        }
        let nodes = self.valid_records(conn, "nodes-to-connect answer", nodes);
        self.send(conn, Message::disconnect("thanks"));
        self.close_quietly(conn);
        let mut pending = HashSet::new();
        let own_id = self.cfg.id.clone();
        let most = self.cfg.max_peers;
        for node in nodes.into_iter().filter(|n| n.id != own_id).take(most) {
            self.members.apply(&node, Evidence::Hearsay, now);
            pending.insert(self.dial(now, node.addr, Purpose::Link));
        }
        if pending.is_empty() {
            self.join_failed(now, "the peer offered no nodes to connect to");
            return;
        }
        self.join.state = Join::Linking {
            pending,
            deadline: now + self.cfg.hello_timeout * 2,
        };
    }

    /// Is `conn` one of the links our join is waiting for?
    pub(super) fn is_joining_link(&self, conn: ConnId) -> bool {
        matches!(&self.join.state, Join::Linking { pending, .. } if pending.contains(&conn))
    }

    /// A full node refused our join link and suggested its neighbours: try two of them.
    pub(super) fn on_redirect(&mut self, now: Instant, conn: ConnId, nodes: Vec<MemberRecord>) {
        let nodes = self.valid_records(conn, "redirect", nodes);
        let dialing = self.links.dialed_addrs();
        let fresh: Vec<MemberRecord> = nodes
            .into_iter()
            .filter(|n| {
                n.id != self.cfg.id
                    && !self.links.neighbours.contains_key(&n.id)
                    && !dialing.contains(&n.addr)
            })
            .take(2.min(self.join.redirects_left))
            .collect();
        self.join.redirects_left -= fresh.len();
        for node in fresh {
            debug!(peer = %clip(&node.id), "redirected; linking");
            let link = self.dial(now, node.addr, Purpose::Link);
            if let Join::Linking { pending, .. } = &mut self.join.state {
                pending.insert(link);
            }
        }
    }

    /// Up to `degree` random neighbours other than `except`, for a redirect.
    pub(super) fn redirect_candidates(&mut self, except: &str) -> Vec<MemberRecord> {
        let mut ids: Vec<String> = self
            .links
            .neighbours
            .keys()
            .filter(|id| id.as_str() != except)
            .cloned()
            .collect();
        ids.shuffle(&mut self.rng);
        ids.truncate(self.cfg.degree.max(2));
        ids.iter()
            .filter_map(|id| self.members.record(id))
            .collect()
    }

    /// A link attempt of the join finished (either way).
    pub(super) fn after_link_attempt(&mut self, now: Instant, conn: ConnId) {
        if let Join::Linking { pending, .. } = &mut self.join.state {
            pending.remove(&conn);
            if pending.is_empty() {
                self.finish_linking(now);
            }
        }
    }

    fn finish_linking(&mut self, now: Instant) {
        let quick = self.join.full_refusals < QUICK_REJOINS;
        if self.links.neighbours.is_empty() && self.join.refused_for_room && quick {
            // The network answered; the nodes we were pointed at were full. That is no
            // sign of trouble worth backing off for (early in a fast start, the first
            // nodes fill up): ask the genesis again for another random member, soon.
            self.join.full_refusals += 1;
            let wait = self
                .cfg
                .join_backoff_base
                .mul_f64(self.rng.random_range(0.25..0.75));
            debug!(retry_in = ?wait, "every node offered was full; asking again");
            self.join.state = Join::Waiting { next: now + wait };
            return;
        }
        if self.links.neighbours.is_empty() {
            self.join_failed(now, "could not link to any node");
            return;
        }
        let me = self.self_record();
        self.flood_event(now, MemberEvent::Joined { member: me });
        let first = self.links.neighbours.values().copied().min();
        if let Some(conn) = first {
            self.send(conn, Message::GiveNodesInNetwork);
        }
        self.join.state = Join::Syncing {
            deadline: now + self.cfg.hello_timeout,
        };
    }

    /// The member list arrived: a join waiting for it is complete.
    pub(super) fn member_list_received(&mut self) {
        if matches!(self.join.state, Join::Syncing { .. }) {
            self.join_complete();
        }
    }

    fn join_complete(&mut self) {
        if !matches!(self.join.state, Join::Joined) {
            info!(
                neighbours = self.links.neighbours.len(),
                members = self.members.alive_count(),
                "joined the network"
            );
        }
        self.join.state = Join::Joined;
        self.join.attempt = 0;
        self.join.full_refusals = 0;
    }

    /// A random living member for a candidate to join through (never ourselves nor the
    /// asker). The seed protocol picks among the genesis's own neighbours, but they are the
    /// oldest nodes and the first to be full: late candidates all land on the same crowded
    /// core, are refused there again and again, and the genesis neighbourhood is where every
    /// link gets made. Any member spreads joins, and links, over the whole network.
    ///
    /// Any member, that is, that this node has heard from itself: members known only from
    /// lists and floods may be a hostile peer's inventions, and a joiner sent to one never
    /// joins. Each answer also queues a probe of one hearsay member, so that the members
    /// a genesis can offer grow with the demand for them.
    pub(super) fn random_member_except(&mut self, except: Option<&str>) -> Option<MemberRecord> {
        let own = self.cfg.id.as_str();
        let candidates: Vec<&String> = self
            .members
            .alive()
            .filter(|(_, m)| m.direct)
            .map(|(id, _)| id)
            .filter(|id| id.as_str() != own && Some(id.as_str()) != except)
            .collect();
        let pick = candidates.choose(&mut self.rng).map(|id| id.to_string());
        let hearsay: Vec<(String, String)> = self
            .members
            .unverified()
            .map(|(id, m)| (id.clone(), m.addr.clone()))
            .collect();
        if let Some((id, addr)) = hearsay.choose(&mut self.rng).cloned() {
            self.queue_probe(id, addr);
        }
        self.members.record(&pick?)
    }

    /// A random subset of our neighbours plus ourselves: at least two where we can.
    pub(super) fn nodes_to_connect(&mut self, except: Option<&str>) -> Vec<MemberRecord> {
        let mut ids: Vec<String> = self
            .links
            .neighbours
            .keys()
            .filter(|id| Some(id.as_str()) != except)
            .cloned()
            .collect();
        ids.sort();
        ids.shuffle(&mut self.rng);
        let want = self.cfg.degree.max(2).saturating_sub(1);
        // A full node would only refuse the link it offers.
        let full = self.links.neighbours.len() >= self.cfg.max_peers;
        let mut nodes = if full {
            Vec::new()
        } else {
            vec![self.self_record()]
        };
        nodes.extend(
            ids.iter()
                .take(want)
                .filter_map(|id| self.members.record(id)),
        );
        nodes
    }
}
