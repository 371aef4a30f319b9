//! The member table: every node this one believes is in the network, plus tombstones.
//!
//! Records about one member are ordered by incarnation, which only the member raises. At an
//! equal incarnation a death beats life, except when life is proven first-hand (a hello from
//! the member itself, or a revival flood sent by a node that had one). Tombstones of dead and
//! departed members are kept for a while so that a stale list cannot resurrect them.
//!
//! Each id is bound to the key of its records: a record that would change anything must
//! carry its subject's valid signature ([`MemberRecord::verify`]), and while a member lives
//! (suspected or not) a record with another key is refused. A new key takes an id over only
//! once its old holder is dead or has left: a node restarted without its key file gets back
//! in after failure detection has buried its old incarnation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::{MemberRecord, MemberState};

#[derive(Debug, Clone)]
pub struct Member {
    pub addr: String,
    pub incarnation: u64,
    pub state: MemberState,
    pub changed_at: Instant,
    /// The subject's key (hex): the key this id is bound to.
    pub key: String,
    /// The subject's signature of this record (of its alive record, for a death).
    pub sig: String,
    /// This node has heard from the member itself at this address (a hello on a link, a
    /// query or a probe answer). Only such members are offered to joiners; the others are
    /// hearsay that a hostile peer may have invented.
    pub direct: bool,
}

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// A member we did not know, or knew only as a tombstone, is alive.
    Added,
    /// A living member moved to a newer incarnation or address.
    Updated,
    /// A living member is now dead or gone.
    Removed,
    /// The table is full; the record was ignored.
    Full,
    /// The record would change something but its signature is not its subject's.
    BadSignature,
    /// The id belongs to a living member with another key.
    KeyConflict,
    /// A hello whose proof lacks this network's key (`--network-key`): its sender is not
    /// of this network, whatever its own key.
    NotOfNetwork,
}

impl Change {
    /// Was the record refused for its identity (a forgery, or an id held by another key)?
    pub fn refused(self) -> bool {
        matches!(
            self,
            Change::BadSignature | Change::KeyConflict | Change::NotOfNetwork
        )
    }
}

/// How sure we are of an `Alive` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Heard from someone else (a list, a flood).
    Hearsay,
    /// Proven by the member itself, or vouched for by a node that had that proof.
    FirstHand,
}

#[derive(Debug)]
pub struct Members {
    self_id: String,
    /// Ordered so that lists and iteration are the same from run to run.
    table: BTreeMap<String, Member>,
    max_members: usize,
    tombstone_ttl: Duration,
    /// Living members (us included), kept in step with `table`: asked on every tick of
    /// every node, and counting a table of thousands each time adds up across a machine.
    alive_count: usize,
    /// When the living membership (or an incarnation) last changed: anti-entropy waits for
    /// quiet, since comparing tables mid-flood finds differences the flood is about to fix.
    last_change: Instant,
    /// [`Members::digest`] since that change: it sorts and hashes the whole table.
    digest_cache: Option<String>,
    /// No tombstone is older than this (it may be older than the oldest one left, after
    /// a revival): the machine sweeps only when one expires.
    oldest_tombstone: Option<Instant>,
    /// When a living member last died or left: losses come in waves (a partition, a mass
    /// failure), and the machine keeps its fast random probes for a while after each one.
    last_loss: Option<Instant>,
}

impl Members {
    pub fn new(
        self_record: MemberRecord,
        now: Instant,
        max_members: usize,
        tombstone_ttl: Duration,
    ) -> Self {
        let mut table = BTreeMap::new();
        let self_id = self_record.id.clone();
        table.insert(
            self_record.id,
            Member {
                addr: self_record.addr,
                incarnation: self_record.incarnation,
                state: MemberState::Alive,
                changed_at: now,
                key: self_record.key,
                sig: self_record.sig,
                direct: true,
            },
        );
        Members {
            self_id,
            table,
            max_members: max_members.max(2),
            tombstone_ttl,
            alive_count: 1,
            last_change: now,
            digest_cache: None,
            oldest_tombstone: None,
            last_loss: None,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.table.get(id)
    }

    pub fn is_alive(&self, id: &str) -> bool {
        self.table
            .get(id)
            .is_some_and(|m| m.state == MemberState::Alive)
    }

    /// Living members, this node included.
    pub fn alive(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.table
            .iter()
            .filter(|(_, m)| m.state == MemberState::Alive)
    }

    pub fn alive_count(&self) -> usize {
        self.alive_count
    }

    /// The living members as records, for lists sent to other nodes.
    pub fn alive_records(&self) -> Vec<MemberRecord> {
        self.alive().map(|(id, m)| record(id, m)).collect()
    }

    pub fn record(&self, id: &str) -> Option<MemberRecord> {
        self.table.get(id).map(|m| record(id, m))
    }

    /// Is any living member (other than us) reachable at `addr`?
    pub fn alive_at(&self, addr: &str) -> bool {
        self.alive()
            .any(|(id, m)| m.addr == addr && *id != self.self_id)
    }

    /// Sets our own record (a new incarnation, after refuting a false death).
    pub fn set_self(&mut self, rec: &MemberRecord, now: Instant) {
        if let Some(me) = self.table.get_mut(&self.self_id) {
            me.incarnation = rec.incarnation;
            me.sig = rec.sig.clone();
            me.changed_at = now;
            self.touched(now);
        }
    }

    /// Would a hello or record for `id` with `key` be refused because a living member
    /// holds that id with another key?
    pub fn key_conflict(&self, id: &str, key: &str) -> bool {
        self.table
            .get(id)
            .is_some_and(|m| m.state == MemberState::Alive && m.key != key)
    }

    /// Applies a record about another member; records about ourselves are the caller's job.
    pub fn apply(&mut self, rec: &MemberRecord, evidence: Evidence, now: Instant) -> Change {
        if rec.id == self.self_id {
            return Change::Unchanged;
        }
        if !self.table.contains_key(&rec.id)
            && self.table.len() >= self.max_members
            && !(evidence == Evidence::FirstHand && self.evict_unverified(now))
        {
            return Change::Full;
        }
        let Some(known) = self.table.get_mut(&rec.id) else {
            if !rec.verify() {
                return Change::BadSignature;
            }
            self.table.insert(
                rec.id.clone(),
                Member {
                    addr: rec.addr.clone(),
                    incarnation: rec.incarnation,
                    state: rec.state,
                    changed_at: now,
                    key: rec.key.clone(),
                    sig: rec.sig.clone(),
                    direct: false,
                },
            );
            if rec.state == MemberState::Alive {
                self.alive_count += 1;
                self.touched(now);
            } else {
                self.oldest_tombstone.get_or_insert(now);
            }
            // A tombstone for a stranger is kept (it blocks stale revivals) but changes nothing.
            return if rec.state == MemberState::Alive {
                Change::Added
            } else {
                Change::Unchanged
            };
        };
        if known.key != rec.key {
            if known.state == MemberState::Alive {
                return Change::KeyConflict;
            }
            // The old holder is dead or gone: a new key may take the id, with a record of
            // its own life (a tombstone under another key tells us nothing).
            if rec.state != MemberState::Alive {
                return Change::Unchanged;
            }
            if !rec.verify() {
                return Change::BadSignature;
            }
            *known = Member {
                addr: rec.addr.clone(),
                incarnation: rec.incarnation,
                state: MemberState::Alive,
                changed_at: now,
                key: rec.key.clone(),
                sig: rec.sig.clone(),
                direct: false,
            };
            self.alive_count += 1;
            self.touched(now);
            return Change::Added;
        }
        let newer = rec.incarnation > known.incarnation;
        let same = rec.incarnation == known.incarnation;
        let was_alive = known.state == MemberState::Alive;
        let change = match rec.state {
            MemberState::Alive => {
                let revive =
                    same && known.state == MemberState::Dead && evidence == Evidence::FirstHand;
                if newer || revive {
                    if was_alive {
                        Change::Updated
                    } else {
                        Change::Added
                    }
                } else {
                    Change::Unchanged
                }
            }
            MemberState::Dead | MemberState::Left => {
                if (newer || same) && was_alive {
                    Change::Removed
                } else if newer {
                    // A newer tombstone over an older one: keep the newest word.
                    Change::Unchanged
                } else {
                    return Change::Unchanged;
                }
            }
        };
        if change != Change::Unchanged || newer {
            // Checked only now: most records repeat what we know, and a signature check
            // per record of every member list would cost more than the rest of the node.
            if !rec.verify() {
                return Change::BadSignature;
            }
            match (was_alive, rec.state == MemberState::Alive) {
                (true, false) => {
                    self.alive_count -= 1;
                    self.last_loss = Some(now);
                }
                (false, true) => self.alive_count += 1,
                _ => {}
            }
            if known.addr != rec.addr {
                // Heard from it at the old address only.
                known.direct = false;
            }
            known.addr = rec.addr.clone();
            known.incarnation = rec.incarnation;
            known.state = rec.state;
            known.changed_at = now;
            known.sig = rec.sig.clone();
            if rec.state != MemberState::Alive {
                self.oldest_tombstone.get_or_insert(now);
            }
            self.touched(now);
        }
        change
    }

    /// The member spoke to us itself, at the address we list for it.
    pub fn mark_direct(&mut self, id: &str, addr: &str) {
        if let Some(m) = self.table.get_mut(id)
            && m.addr == addr
        {
            m.direct = true;
        }
    }

    /// Living members known only by hearsay (never heard from directly).
    pub fn unverified(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.alive().filter(|(_, m)| !m.direct)
    }

    /// Forgets a living member known only by hearsay that did not answer us. It leaves a
    /// tombstone (a stale list cannot add it again at this incarnation; the member itself
    /// can) but no death is flooded: nobody else needs to hear that an invention was
    /// false. Returns whether it was removed.
    pub fn drop_unverified(&mut self, id: &str, now: Instant) -> bool {
        let Some(m) = self.table.get_mut(id) else {
            return false;
        };
        if m.state != MemberState::Alive || m.direct || id == self.self_id {
            return false;
        }
        m.state = MemberState::Dead;
        m.changed_at = now;
        self.alive_count -= 1;
        self.oldest_tombstone.get_or_insert(now);
        self.touched(now);
        true
    }

    /// Makes room for a member proven first-hand in a full table: the oldest tombstone
    /// goes first, else a living member known only by hearsay. Hearsay never evicts
    /// anything (a list of inventions cannot push out real members); first-hand evidence
    /// may push out hearsay. Returns whether room was made.
    fn evict_unverified(&mut self, now: Instant) -> bool {
        let tombstone = self
            .table
            .iter()
            .filter(|(_, m)| m.state != MemberState::Alive)
            .min_by_key(|(_, m)| m.changed_at)
            .map(|(id, _)| id.clone());
        let victim = tombstone.or_else(|| {
            self.table
                .iter()
                .filter(|(id, m)| {
                    m.state == MemberState::Alive && !m.direct && **id != self.self_id
                })
                .min_by_key(|(_, m)| m.changed_at)
                .map(|(id, _)| id.clone())
        });
        let Some(victim) = victim else {
            return false;
        };
        if let Some(m) = self.table.remove(&victim)
            && m.state == MemberState::Alive
        {
            self.alive_count -= 1;
            self.touched(now);
        }
        true
    }

    fn touched(&mut self, now: Instant) {
        self.last_change = now;
        self.digest_cache = None;
    }

    /// When the living membership (or an incarnation) last changed.
    pub fn changed_at(&self) -> Instant {
        self.last_change
    }

    /// When the oldest tombstone expires, if there is one: the next sweep worth doing.
    pub fn next_tombstone_expiry(&self) -> Option<Instant> {
        self.oldest_tombstone.map(|t| t + self.tombstone_ttl)
    }

    /// How long ago a living member last died or left; `None` if none ever did.
    pub fn since_last_loss(&self, now: Instant) -> Option<Duration> {
        self.last_loss.map(|t| now.saturating_duration_since(t))
    }

    /// How long the living membership has gone unchanged.
    pub fn stable_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_change)
    }

    /// Drops tombstones older than the TTL. Returns how many were dropped.
    pub fn expire_tombstones(&mut self, now: Instant) -> usize {
        let ttl = self.tombstone_ttl;
        let before = self.table.len();
        self.table.retain(|_, m| {
            m.state == MemberState::Alive || now.saturating_duration_since(m.changed_at) < ttl
        });
        self.oldest_tombstone = self
            .table
            .values()
            .filter(|m| m.state != MemberState::Alive)
            .map(|m| m.changed_at)
            .min();
        before - self.table.len()
    }

    /// Order-independent digest of the living membership, for cheap anti-entropy.
    pub fn digest(&mut self) -> String {
        if let Some(d) = &self.digest_cache {
            return d.clone();
        }
        let mut entries: Vec<String> = self
            .alive()
            .map(|(id, m)| format!("{id}@{}", m.incarnation))
            .collect();
        entries.sort();
        let parts: Vec<&str> = entries.iter().map(String::as_str).collect();
        let digest = super::wire::digest(&parts);
        self.digest_cache = Some(digest.clone());
        digest
    }
}

fn record(id: &str, m: &Member) -> MemberRecord {
    MemberRecord {
        id: id.to_string(),
        addr: m.addr.clone(),
        incarnation: m.incarnation,
        state: m.state,
        key: m.key.clone(),
        sig: m.sig.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::node::identity::Identity;

    /// A record signed by the subject's key (one per id, derived from its name).
    fn rec(id: &str, inc: u64, state: MemberState) -> MemberRecord {
        MemberRecord::unsigned(id, format!("{id}:7070"), inc, state).signed(&key_of(id, 0))
    }

    fn key_of(id: &str, generation: u8) -> Identity {
        let mut secret = [generation; 32];
        for (i, b) in id.bytes().enumerate().take(31) {
            secret[i + 1] = b;
        }
        Identity::from_secret(secret)
    }

    fn table(now: Instant) -> Members {
        Members::new(
            rec("me", 1, MemberState::Alive),
            now,
            100,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn death_beats_life_at_the_same_incarnation() {
        let now = Instant::now();
        let mut m = table(now);
        assert_eq!(
            m.apply(&rec("a", 5, MemberState::Alive), Evidence::Hearsay, now),
            Change::Added
        );
        assert_eq!(
            m.apply(&rec("a", 5, MemberState::Dead), Evidence::Hearsay, now),
            Change::Removed
        );
        assert!(!m.is_alive("a"));
        // A stale list cannot bring it back...
        assert_eq!(
            m.apply(&rec("a", 5, MemberState::Alive), Evidence::Hearsay, now),
            Change::Unchanged
        );
        // ...but proof from the member itself can, and so can a newer incarnation.
        assert_eq!(
            m.apply(&rec("a", 5, MemberState::Alive), Evidence::FirstHand, now),
            Change::Added
        );
        m.apply(&rec("a", 5, MemberState::Dead), Evidence::Hearsay, now);
        assert_eq!(
            m.apply(&rec("a", 6, MemberState::Alive), Evidence::Hearsay, now),
            Change::Added
        );
    }

    #[test]
    fn a_departure_is_final_for_its_incarnation() {
        let now = Instant::now();
        let mut m = table(now);
        m.apply(&rec("a", 5, MemberState::Alive), Evidence::Hearsay, now);
        assert_eq!(
            m.apply(&rec("a", 5, MemberState::Left), Evidence::Hearsay, now),
            Change::Removed
        );
        assert_eq!(
            m.apply(&rec("a", 5, MemberState::Alive), Evidence::FirstHand, now),
            Change::Unchanged
        );
    }

    #[test]
    fn unsigned_changes_are_refused() {
        let now = Instant::now();
        let mut m = table(now);
        let forged = |inc, state| MemberRecord::unsigned("a", "evil:1", inc, state);
        assert_eq!(
            m.apply(&forged(5, MemberState::Alive), Evidence::Hearsay, now),
            Change::BadSignature
        );
        assert!(m.get("a").is_none(), "a forgery adds nobody");
        m.apply(&rec("a", 5, MemberState::Alive), Evidence::Hearsay, now);
        // A forged leave, a forged death at u64::MAX, a forged move: none changes it.
        let mut left = rec("a", 5, MemberState::Left);
        left.sig = rec("a", 5, MemberState::Alive).sig;
        assert_eq!(m.apply(&left, Evidence::Hearsay, now), Change::BadSignature);
        let mut dead = rec("a", u64::MAX, MemberState::Dead);
        dead.sig = rec("a", 5, MemberState::Alive).sig;
        assert_eq!(m.apply(&dead, Evidence::Hearsay, now), Change::BadSignature);
        let mut moved = rec("a", 6, MemberState::Alive);
        moved.addr = "evil:1".into();
        assert_eq!(
            m.apply(&moved, Evidence::FirstHand, now),
            Change::BadSignature
        );
        let a = m.get("a").expect("still known");
        assert_eq!((a.addr.as_str(), a.incarnation), ("a:7070", 5));
        assert!(m.is_alive("a"));
    }

    #[test]
    fn an_id_is_bound_to_its_key_while_it_lives() {
        let now = Instant::now();
        let mut m = table(now);
        m.apply(&rec("a", 5, MemberState::Alive), Evidence::Hearsay, now);
        let thief = key_of("a", 9);
        let stolen =
            MemberRecord::unsigned("a", "evil:1", u64::MAX, MemberState::Alive).signed(&thief);
        assert!(stolen.verify());
        assert!(m.key_conflict("a", thief.public_hex()));
        assert_eq!(
            m.apply(&stolen, Evidence::FirstHand, now),
            Change::KeyConflict
        );
        assert_eq!(m.get("a").map(|a| a.addr.as_str()), Some("a:7070"));
        // Once the holder is dead, a new key (a restart without its key file) takes over.
        m.apply(&rec("a", 5, MemberState::Dead), Evidence::Hearsay, now);
        let reborn =
            MemberRecord::unsigned("a", "a:7071", 3, MemberState::Alive).signed(&key_of("a", 1));
        assert_eq!(m.apply(&reborn, Evidence::FirstHand, now), Change::Added);
        assert_eq!(m.get("a").map(|a| a.addr.as_str()), Some("a:7071"));
        // And the old key's stale records are refused from then on.
        assert_eq!(
            m.apply(&rec("a", 6, MemberState::Alive), Evidence::Hearsay, now),
            Change::KeyConflict
        );
    }

    #[test]
    fn old_deaths_do_not_kill_a_newer_incarnation() {
        let now = Instant::now();
        let mut m = table(now);
        m.apply(&rec("a", 7, MemberState::Alive), Evidence::Hearsay, now);
        assert_eq!(
            m.apply(&rec("a", 6, MemberState::Dead), Evidence::Hearsay, now),
            Change::Unchanged
        );
        assert!(m.is_alive("a"));
    }

    #[test]
    fn tombstones_expire_and_the_table_is_bounded() {
        let now = Instant::now();
        let mut m = Members::new(
            rec("me", 1, MemberState::Alive),
            now,
            3,
            Duration::from_secs(10),
        );
        m.apply(&rec("a", 1, MemberState::Alive), Evidence::Hearsay, now);
        m.apply(&rec("b", 1, MemberState::Dead), Evidence::Hearsay, now);
        assert_eq!(
            m.apply(&rec("c", 1, MemberState::Alive), Evidence::Hearsay, now),
            Change::Full
        );
        assert_eq!(m.expire_tombstones(now + Duration::from_secs(11)), 1);
        assert_eq!(
            m.apply(&rec("c", 1, MemberState::Alive), Evidence::Hearsay, now),
            Change::Added
        );
    }

    #[test]
    fn hearsay_never_evicts_but_first_hand_evicts_hearsay_only() {
        let now = Instant::now();
        let mut m = Members::new(
            rec("me", 1, MemberState::Alive),
            now,
            3,
            Duration::from_secs(10),
        );
        m.apply(
            &rec("real", 1, MemberState::Alive),
            Evidence::FirstHand,
            now,
        );
        m.mark_direct("real", "real:7070");
        m.apply(&rec("fake", 1, MemberState::Alive), Evidence::Hearsay, now);
        assert_eq!(
            m.apply(&rec("fake2", 1, MemberState::Alive), Evidence::Hearsay, now),
            Change::Full
        );
        assert_eq!(
            m.apply(&rec("new", 1, MemberState::Alive), Evidence::FirstHand, now),
            Change::Added
        );
        assert!(m.is_alive("real") && m.is_alive("new"));
        assert!(m.get("fake").is_none(), "the hearsay member made room");
        assert_eq!(m.alive_count(), 3);
        // Only first-hand members left: nothing to evict.
        m.mark_direct("new", "new:7070");
        assert_eq!(
            m.apply(
                &rec("newer", 1, MemberState::Alive),
                Evidence::FirstHand,
                now
            ),
            Change::Full
        );
        assert_eq!(m.unverified().count(), 0);
    }

    #[test]
    fn a_new_address_is_hearsay_until_heard_from_there() {
        let now = Instant::now();
        let mut m = table(now);
        m.apply(&rec("a", 1, MemberState::Alive), Evidence::Hearsay, now);
        assert_eq!(m.unverified().count(), 1);
        m.mark_direct("a", "elsewhere:1");
        assert_eq!(m.unverified().count(), 1, "not at the address we list");
        m.mark_direct("a", "a:7070");
        assert_eq!(m.unverified().count(), 0);
        let moved =
            MemberRecord::unsigned("a", "moved:1", 2, MemberState::Alive).signed(&key_of("a", 0));
        assert_eq!(m.apply(&moved, Evidence::Hearsay, now), Change::Updated);
        assert_eq!(m.unverified().count(), 1);
    }

    #[test]
    fn the_living_count_follows_every_change() {
        let now = Instant::now();
        let mut t = table(now);
        let check = |t: &Members| assert_eq!(t.alive_count(), t.alive().count());
        t.apply(&rec("x", 1, MemberState::Alive), Evidence::Hearsay, now);
        check(&t);
        t.apply(&rec("y", 1, MemberState::Dead), Evidence::Hearsay, now);
        check(&t);
        t.apply(&rec("x", 1, MemberState::Dead), Evidence::Hearsay, now);
        check(&t);
        t.apply(&rec("x", 1, MemberState::Alive), Evidence::FirstHand, now);
        check(&t);
        t.apply(&rec("x", 2, MemberState::Left), Evidence::Hearsay, now);
        check(&t);
        t.expire_tombstones(now + Duration::from_secs(3600));
        check(&t);
        assert_eq!(t.alive_count(), 1, "only ourselves");
    }

    #[test]
    fn digest_ignores_order_and_tracks_incarnations() {
        let now = Instant::now();
        let mut a = table(now);
        let mut b = table(now);
        a.apply(&rec("x", 1, MemberState::Alive), Evidence::Hearsay, now);
        a.apply(&rec("y", 1, MemberState::Alive), Evidence::Hearsay, now);
        b.apply(&rec("y", 1, MemberState::Alive), Evidence::Hearsay, now);
        b.apply(&rec("x", 1, MemberState::Alive), Evidence::Hearsay, now);
        assert_eq!(a.digest(), b.digest());
        b.apply(&rec("x", 2, MemberState::Alive), Evidence::Hearsay, now);
        assert_ne!(a.digest(), b.digest());
    }
}
