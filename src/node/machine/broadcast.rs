//! Flooding: user broadcasts and membership events go to every neighbour once, copies
//! are dropped by id, user broadcasts are kept in a ring of delivered messages, and the
//! membership floods of a busy moment wait to travel together.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::info;

use super::membership::EventFate;
use super::{Config, ConnId, Machine};
use crate::contract::DeliveredMessage;
use crate::node::seen::SeenSet;
use crate::node::wire::{Flood, MemberEvent, MemberRecord, MemberState, Message, digest};

/// The flooding part's state.
pub(super) struct Flooding {
    pub seen: SeenSet,
    pub delivered: VecDeque<DeliveredMessage>,
    broadcast_seq: u64,
    /// Membership floods waiting for the next timer instant, with the links that already
    /// sent each one to us (they need no copy back).
    pending_forwards: Vec<(Flood, Vec<ConnId>)>,
    /// When the first of them was queued: they go at the next grid instant after it.
    pending_since: Option<Instant>,
}

impl Flooding {
    pub fn new(cfg: &Config) -> Self {
        Flooding {
            seen: SeenSet::new(cfg.seen_capacity, cfg.seen_max_age),
            delivered: VecDeque::new(),
            broadcast_seq: 0,
            pending_forwards: Vec::new(),
            pending_since: None,
        }
    }
}

impl Machine {
    /// Batched membership floods go out at the next grid instant.
    pub(super) fn flood_deadline(&self) -> Option<Instant> {
        self.flood.pending_since.map(|t| self.grid_after(t))
    }

    /// Floods a user broadcast; returns its id. Delivered locally too (0 hops).
    pub fn broadcast(&mut self, now: Instant, title: &str, message: &str) -> String {
        self.notice_stall(now);
        self.flood.broadcast_seq += 1;
        let time = self.unix(now);
        let id = digest(&[
            &self.cfg.id,
            &self.incarnation.to_string(),
            &self.flood.broadcast_seq.to_string(),
            &time.to_string(),
            title,
            message,
        ]);
        let flood = Flood {
            id: id.clone(),
            title: title.to_string(),
            message: message.to_string(),
            time,
            origin: self.cfg.id.clone(),
            hops: 0,
            event: None,
        };
        self.flood.seen.insert(&id, now);
        self.deliver(now, &flood);
        self.forward(now, &flood, None);
        self.refresh_deadline(now);
        id
    }

    /// Floods our own leave, at once (the driver exits right after).
    pub(super) fn flood_leave(&mut self, now: Instant) {
        // A leave only counts when its subject signs it.
        let me = MemberRecord::unsigned(
            self.cfg.id.clone(),
            self.cfg.addr.clone(),
            self.incarnation,
            MemberState::Left,
        )
        .signed(&self.cfg.identity);
        let flood = Flood::membership(
            MemberEvent::Left { member: me },
            &self.cfg.id,
            self.unix(now),
        );
        self.flood.seen.insert(&flood.id, now);
        self.flush_forwards();
        self.forward_now(&flood, &[]);
        info!(
            neighbours = self.links.neighbours.len(),
            "leaving the network"
        );
    }

    pub(super) fn on_flood(&mut self, now: Instant, from: ConnId, mut flood: Flood) {
        if !self.flood.seen.insert(&flood.id, now) {
            self.counters.duplicates_dropped += 1;
            // A neighbour that sent us a flood we have yet to pass on has it already.
            if let Some((_, skip)) = self
                .flood
                .pending_forwards
                .iter_mut()
                .find(|(pending, _)| pending.id == flood.id)
            {
                skip.push(from);
            }
            return;
        }
        flood.hops = flood.hops.saturating_add(1);
        let relay = match flood.event.clone() {
            None => {
                self.deliver(now, &flood);
                true
            }
            Some(event) => match self.apply_event(now, from, event) {
                EventFate::Relay => true,
                EventFate::Kept => false,
                EventFate::Refused => {
                    // A forgery stops here: not passed on, and its id stays free for the
                    // genuine event.
                    self.flood.seen.forget(&flood.id);
                    false
                }
            },
        };
        if relay {
            self.forward(now, &flood, Some(from));
        }
    }

    pub(super) fn flood_event(&mut self, now: Instant, event: MemberEvent) {
        let flood = Flood::membership(event, &self.cfg.id, self.unix(now));
        if self.flood.seen.insert(&flood.id, now) {
            self.forward(now, &flood, None);
        }
    }

    fn deliver(&mut self, now: Instant, flood: &Flood) {
        self.counters.delivered += 1;
        if self.flood.delivered.len() >= self.cfg.delivered_capacity {
            self.flood.delivered.pop_front();
        }
        let received_at = self.unix(now);
        self.flood.delivered.push_back(DeliveredMessage {
            id: flood.id.clone(),
            title: flood.title.clone(),
            message: flood.message.clone(),
            origin: flood.origin.clone(),
            time: flood.time,
            hops: flood.hops,
            received_at,
        });
    }

    /// Floods to every neighbour but `except`. User broadcasts go at once; membership
    /// events wait for the next grid instant, so that the events of a busy moment
    /// (hundreds of joins) travel together: a neighbour then wakes once per instant to
    /// read them all instead of once per event, and on a machine running many nodes it is
    /// the wake-ups, not the bytes, that cost. Each hop adds at most one grid step
    /// (`--heartbeat-interval` / 4) to a membership change.
    ///
    /// Waiting has a second gain: copies of the same event that arrive from other
    /// neighbours meanwhile mark those links as served, so the flood costs fewer frames
    /// than one per link in each direction.
    pub(super) fn forward(&mut self, now: Instant, flood: &Flood, except: Option<ConnId>) {
        let skip: Vec<ConnId> = except.into_iter().collect();
        if flood.event.is_some() {
            self.flood.pending_forwards.push((flood.clone(), skip));
            self.flood.pending_since.get_or_insert(now);
        } else {
            self.forward_now(flood, &skip);
        }
    }

    pub(super) fn flush_forwards(&mut self) {
        self.flood.pending_since = None;
        for (flood, skip) in std::mem::take(&mut self.flood.pending_forwards) {
            self.forward_now(&flood, &skip);
        }
    }

    fn forward_now(&mut self, flood: &Flood, skip: &[ConnId]) {
        let targets: Vec<ConnId> = self
            .links
            .neighbours
            .values()
            .copied()
            .filter(|c| !skip.contains(c))
            .collect();
        for conn in targets {
            self.send(conn, Message::Broadcast(flood.clone()));
        }
    }
}
