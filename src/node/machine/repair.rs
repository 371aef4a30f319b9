//! Repair: keep the degree (link to random members when links are lost), and retry dead
//! members and genesis addresses with back-off so that networks that split merge again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use tracing::debug;

use super::links::Purpose;
use super::{Config, Machine};
use crate::node::logsafe::clip;

#[derive(Debug)]
pub(super) struct Retry {
    pub next: Instant,
    pub backoff: Duration,
    /// `None`: a genesis address, retried for as long as the node runs.
    pub until: Option<Instant>,
    pub in_flight: bool,
}

/// What a degree repair looked at: while none of it changes, another attempt would find
/// the same candidates (none), so the machine does not wake for one.
type RepairView = (Instant, usize, usize, usize);

/// The repair part's state.
pub(super) struct Repair {
    /// Address -> its retry.
    pub retries: BTreeMap<String, Retry>,
    /// Addresses we dialed that turned out to be another name of a member (genesis aliases).
    pub aliases: BTreeMap<String, String>,
    /// Members recently refused or failed as link targets: not tried again before the instant.
    pub link_cooldown: BTreeMap<String, Instant>,
    /// The view of the last degree repair.
    last_view: Option<RepairView>,
}

impl Repair {
    pub fn new(cfg: &Config, now: Instant) -> Self {
        let mut retries = BTreeMap::new();
        for g in &cfg.genesis {
            retries.insert(
                g.clone(),
                Retry {
                    next: now + cfg.retry_backoff_max,
                    backoff: cfg.join_backoff_base,
                    until: None,
                    in_flight: false,
                },
            );
        }
        Repair {
            retries,
            aliases: BTreeMap::new(),
            link_cooldown: BTreeMap::new(),
            last_view: None,
        }
    }
}

impl Machine {
    /// Once joined: a degree repair when under the target and something changed since the
    /// last one (or a cooldown ends), and the next due retry.
    pub(super) fn repair_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.is_joined() {
            return None;
        }
        let under =
            self.links.neighbours.len() + self.links.pending_links() < self.effective_degree();
        let repair = if !under {
            None
        } else if self.repair.last_view != Some(self.repair_view()) {
            Some(now)
        } else {
            self.repair.link_cooldown.values().min().copied()
        };
        let retries = self
            .repair
            .retries
            .values()
            .filter(|r| !r.in_flight)
            .map(|r| r.until.map_or(r.next, |until| r.next.min(until)))
            .min();
        [repair, retries].into_iter().flatten().min()
    }

    fn repair_view(&self) -> RepairView {
        (
            self.members.changed_at(),
            self.links.neighbours.len(),
            self.detector.suspects.len(),
            self.links.conns.len(),
        )
    }

    /// The degree to keep: `--degree`, but never below 2 once the network has three or more
    /// nodes, so that no single lost link cuts a node off.
    fn effective_degree(&self) -> usize {
        if self.members.alive_count() >= 3 {
            self.cfg.degree.max(2)
        } else {
            self.cfg.degree
        }
    }

    pub(super) fn repair_degree(&mut self, now: Instant) {
        let have = self.links.neighbours.len() + self.links.pending_links();
        let target = self.effective_degree();
        if have >= target {
            return;
        }
        let dialing = self.links.dialed_addrs();
        let mut candidates: Vec<(String, String)> = self
            .members
            .alive()
            .filter(|(id, m)| {
                **id != self.cfg.id
                    && !self.links.neighbours.contains_key(*id)
                    && !self.detector.suspects.contains_key(*id)
                    && !self.repair.link_cooldown.contains_key(*id)
                    && !dialing.contains(&m.addr)
            })
            .map(|(id, m)| (id.clone(), m.addr.clone()))
            .collect();
        candidates.sort();
        candidates.shuffle(&mut self.rng);
        for (id, addr) in candidates.into_iter().take(target - have) {
            debug!(peer = %clip(&id), "under target degree; linking");
            self.repair
                .link_cooldown
                .insert(id, now + self.cfg.hello_timeout * 2);
            self.dial(now, addr, Purpose::Link);
        }
        self.repair.last_view = Some(self.repair_view());
    }

    pub(super) fn add_retry(&mut self, now: Instant, addr: String) {
        if self.repair.retries.len() >= self.cfg.max_retries
            && !self.repair.retries.contains_key(&addr)
        {
            return;
        }
        self.repair.retries.entry(addr).or_insert(Retry {
            next: now + self.cfg.join_backoff_base,
            backoff: self.cfg.join_backoff_base,
            until: Some(now + self.cfg.retry_for),
            in_flight: false,
        });
    }

    /// A retry's connection ended: it may be tried again when next due.
    pub(super) fn retry_ended(&mut self, addr: &str) {
        if let Some(r) = self.repair.retries.get_mut(addr) {
            r.in_flight = false;
        }
    }

    pub(super) fn run_retries(&mut self, now: Instant) {
        self.repair
            .retries
            .retain(|_, r| r.until.is_none_or(|until| now < until));
        let due: Vec<String> = self
            .repair
            .retries
            .iter()
            .filter(|(_, r)| !r.in_flight && now >= r.next)
            .map(|(addr, _)| addr.clone())
            .collect();
        let mut blocked = Vec::new();
        for addr in due {
            if self.reachable_member_at(&addr) {
                // A living member answers there: nothing to merge. Look again later rather
                // than on every wake-up (finding it is a scan of the whole member table).
                let later = self.round_near(now, self.cfg.retry_backoff_max);
                if let Some(r) = self.repair.retries.get_mut(&addr) {
                    r.next = later;
                }
                continue;
            }
            if self.links.neighbours.len() >= self.cfg.max_peers {
                blocked.push(addr);
                continue;
            }
            if let Some(r) = self.repair.retries.get_mut(&addr) {
                r.in_flight = true;
                r.next = now + r.backoff;
                r.backoff = (r.backoff * 2).min(self.cfg.retry_backoff_max);
            }
            debug!(addr = %clip(&addr), "retrying a dead member or genesis address");
            self.dial(now, addr, Purpose::Retry);
        }
        // Full: look again at the next grid instant, as the fixed tick did.
        let again = self.grid_after(now);
        for addr in blocked {
            if let Some(r) = self.repair.retries.get_mut(&addr) {
                r.next = again;
            }
        }
    }

    /// Is a living member known at this address (or at the alias we dialed it by)?
    fn reachable_member_at(&self, addr: &str) -> bool {
        self.members.alive_at(addr)
            || self
                .repair
                .aliases
                .get(addr)
                .is_some_and(|id| self.members.is_alive(id))
    }
}
