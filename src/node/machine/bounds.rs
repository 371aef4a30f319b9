//! Bounds on what a peer can make this node believe: ids and addresses within their
//! limits (`node::limits`), a cap on the new members one connection may add per interval,
//! and member lists sent in chunks of bounded size and read back whole.
//!
//! One `nodes-in-network` frame of 10,000 invented members used to fill the member table of
//! the genesis (and, by anti-entropy, of its neighbours); a 1 MB id became a member and was
//! flooded everywhere; a member list larger than one frame tore links down. The checks here
//! run wherever such records enter: hellos, lists, join answers and membership floods.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use tracing::{debug, warn};

use super::{ConnId, Machine};
use crate::node::limits::{self, MEMBER_LIST_CHUNK_BYTES, RECORD_BYTES_ESTIMATE};
use crate::node::wire::{Hello, MemberRecord, Message};

/// New members one connection added in the current window.
#[derive(Debug)]
struct Budget {
    since: Instant,
    /// Ids added in this window (at most `new_members_per_source`).
    added: Vec<String>,
    /// The connection sent more than its budget in this window.
    over: bool,
}

/// The bounds part's state: per-connection budgets and lists being received in chunks.
#[derive(Default)]
pub(super) struct Bounds {
    budgets: BTreeMap<ConnId, Budget>,
    /// Ids of a chunked list received so far on a connection, until its last chunk.
    partial_lists: BTreeMap<ConnId, HashSet<String>>,
    /// Members added by a connection that then went over its budget: not passed on in
    /// our lists, and probed; if a probe fails they are dropped here without a flood
    /// (see [`Machine::doubt_failed`]). At most `max_members`.
    doubtful: HashSet<String>,
}

impl Machine {
    /// Is this hello's id and address acceptable? If not, it is counted and logged, and
    /// the caller refuses the connection.
    pub(super) fn hello_within_limits(&mut self, conn: ConnId, hello: &Hello) -> bool {
        match limits::check_member(&hello.id, &hello.addr) {
            Ok(()) => true,
            Err((field, why)) => {
                self.counters.refused_records += 1;
                warn!(
                    conn,
                    id = %limits::shown(&hello.id),
                    addr = %limits::shown(&hello.addr),
                    "hello refused: its {field} is {why}"
                );
                false
            }
        }
    }

    /// Is this record's id and address acceptable? Counted and logged if not.
    pub(super) fn record_within_limits(
        &mut self,
        conn: ConnId,
        what: &str,
        rec: &MemberRecord,
    ) -> bool {
        self.within_limits(conn, what, std::slice::from_ref(rec)) == 1
    }

    /// Keeps the records whose ids and addresses are acceptable. The refused ones are
    /// counted one by one and logged in one line per frame (the first of them shown).
    pub(super) fn valid_records(
        &mut self,
        conn: ConnId,
        what: &str,
        records: Vec<MemberRecord>,
    ) -> Vec<MemberRecord> {
        if self.within_limits(conn, what, &records) == records.len() {
            return records;
        }
        records
            .into_iter()
            .filter(|r| limits::check_member(&r.id, &r.addr).is_ok())
            .collect()
    }

    /// How many of `records` are within the limits; logs the refused ones once.
    fn within_limits(&mut self, conn: ConnId, what: &str, records: &[MemberRecord]) -> usize {
        let mut refused = 0;
        let mut first = None;
        for r in records {
            if let Err((field, why)) = limits::check_member(&r.id, &r.addr) {
                refused += 1;
                first.get_or_insert((field, why, r));
            }
        }
        if let Some((field, why, r)) = first {
            self.counters.refused_records += refused as u64;
            warn!(
                conn,
                refused,
                of = records.len(),
                id = %limits::shown(&r.id),
                addr = %limits::shown(&r.addr),
                "member records refused in a {what}: the first one's {field} is {why}"
            );
        }
        records.len() - refused
    }

    /// May a record received on `conn` add `id` to the table? Known ids always may; a new
    /// one uses up the connection's budget of `new_members_per_source` per
    /// `sync_interval`. Records over it are dropped (counted, logged once per window):
    /// one connection cannot fill the table, whatever it sends.
    pub(super) fn may_add(&mut self, now: Instant, conn: ConnId, id: &str) -> bool {
        if self.members.get(id).is_some() {
            return true;
        }
        let window = self.cfg.sync_interval;
        let cap = self.cfg.new_members_per_source;
        let budget = self.bounds.budgets.entry(conn).or_insert(Budget {
            since: now,
            added: Vec::new(),
            over: false,
        });
        if now.saturating_duration_since(budget.since) >= window {
            budget.since = now;
            budget.added.clear();
            budget.over = false;
        }
        if budget.added.len() < cap && !budget.over {
            budget.added.push(id.to_string());
            return true;
        }
        self.counters.capped_members += 1;
        if !budget.over {
            budget.over = true;
            let added = std::mem::take(&mut budget.added);
            warn!(
                conn,
                peer = %limits::shown(&self.links.peer_id(conn).unwrap_or_default()),
                cap,
                ?window,
                "a peer sent more new members than it may add; ignoring the rest and checking those it added"
            );
            self.doubt(added);
        }
        false
    }

    /// Members added by a source that went over its budget: a legitimate network larger
    /// than the budget does that too (a joiner's first list), so they are not dropped,
    /// but each is probed; those that answer become first-hand members, the others go.
    fn doubt(&mut self, ids: Vec<String>) {
        for id in ids {
            if self.bounds.doubtful.len() >= self.cfg.max_members {
                break;
            }
            let Some(m) = self.members.get(&id) else {
                continue;
            };
            if m.direct || m.state != crate::node::wire::MemberState::Alive {
                continue;
            }
            let addr = m.addr.clone();
            self.bounds.doubtful.insert(id.clone());
            self.queue_probe(id, addr);
        }
    }

    /// A probe of `id` answered: no longer in doubt.
    pub(super) fn doubt_cleared(&mut self, id: &str) {
        self.bounds.doubtful.remove(id);
    }

    /// A probe of `id` failed. If it was in doubt (added by a source over its budget)
    /// and nobody vouched for it since, it is dropped here, quietly; returns whether it was.
    pub(super) fn doubt_failed(&mut self, now: Instant, id: &str) -> bool {
        if !self.bounds.doubtful.remove(id) {
            return false;
        }
        if self.members.drop_unverified(id, now) {
            debug!(member = %limits::shown(id), "member in doubt did not answer; dropped");
            self.detector.suspects.remove(id);
            return true;
        }
        false
    }

    /// Sends our living members on `conn` in frames of at most about
    /// `member_list_chunk_bytes` (by default [`MEMBER_LIST_CHUNK_BYTES`]), every one but
    /// the last marked `more`.
    pub(super) fn send_member_list(&mut self, conn: ConnId) {
        let limit = self
            .cfg
            .member_list_chunk_bytes
            .min(MEMBER_LIST_CHUNK_BYTES);
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut records = self.members.alive_records();
        records.retain(|r| !self.bounds.doubtful.contains(&r.id));
        for rec in records {
            let size = rec.id.len() + rec.addr.len() + RECORD_BYTES_ESTIMATE;
            if !chunk.is_empty() && bytes + size > limit {
                let members = std::mem::take(&mut chunk);
                self.send(
                    conn,
                    Message::NodesInNetwork {
                        members,
                        more: true,
                    },
                );
                bytes = 0;
            }
            bytes += size;
            chunk.push(rec);
        }
        self.send(
            conn,
            Message::NodesInNetwork {
                members: chunk,
                more: false,
            },
        );
    }

    /// One chunk of a member list arrived: remembers its ids and, on the last chunk,
    /// returns every id of the list (bounded by `max_members`).
    pub(super) fn list_chunk(
        &mut self,
        conn: ConnId,
        chunk: &[MemberRecord],
        more: bool,
    ) -> Option<HashSet<String>> {
        let cap = self.cfg.max_members;
        let ids = self.bounds.partial_lists.entry(conn).or_default();
        for r in chunk {
            if ids.len() >= cap {
                break;
            }
            ids.insert(r.id.clone());
        }
        if more {
            debug!(conn, so_far = ids.len(), "member list chunk; more to come");
            return None;
        }
        self.bounds.partial_lists.remove(&conn)
    }

    /// A connection is gone: its budget and any half-received list go with it.
    pub(super) fn forget_bounds(&mut self, conn: ConnId) {
        self.bounds.budgets.remove(&conn);
        self.bounds.partial_lists.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Instant;

    use super::super::{Config, Machine, Output};
    use crate::node::limits::{MAX_ADDR_BYTES, MAX_ID_BYTES};
    use crate::node::members::Evidence;
    use crate::node::wire::{MAX_FRAME_BYTES, MemberRecord, MemberState, Message};

    /// The only way these tests build a member record: signed, as every record must be.
    fn record(id: String, addr: String) -> MemberRecord {
        thread_local! {
            static KEY: crate::node::identity::Identity =
                crate::node::identity::Identity::from_secret([7; 32]);
        }
        KEY.with(|key| MemberRecord::unsigned(id, addr, u64::MAX, MemberState::Alive).signed(key))
    }

    #[test]
    fn the_largest_member_list_goes_in_frames_under_the_cap() {
        let now = Instant::now();
        let mut cfg = Config::new("me", "me:1");
        cfg.max_members = 12_000;
        let mut m = Machine::new(cfg, now);
        // Ids and addresses at their longest: the worst case a list can be.
        for i in 0..11_999 {
            let id = format!("{i:0width$}", width = MAX_ID_BYTES);
            let host = format!("{i:0width$}", width = MAX_ADDR_BYTES - 6);
            m.members
                .apply(&record(id, format!("{host}:65535")), Evidence::Hearsay, now);
        }
        assert_eq!(m.members.alive_count(), 12_000);
        while m.poll_output().is_some() {}
        m.send_member_list(7);
        let mut ids = HashSet::new();
        let mut flags = Vec::new();
        while let Some(out) = m.poll_output() {
            let Output::Send { conn: 7, msg } = out else {
                panic!("unexpected {out:?}");
            };
            let size = serde_json::to_vec(&msg).expect("serialise").len();
            assert!(size <= MAX_FRAME_BYTES / 2, "a chunk of {size} bytes");
            let Message::NodesInNetwork { members, more } = msg else {
                panic!("not a list");
            };
            ids.extend(members.into_iter().map(|r| r.id));
            flags.push(more);
        }
        assert!(flags.len() >= 8, "{} chunks", flags.len());
        assert_eq!(flags.pop(), Some(false));
        assert!(flags.iter().all(|more| *more));
        assert_eq!(ids.len(), 12_000, "every member once");
    }
}
