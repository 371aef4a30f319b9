//! The node's protocol logic as a sans-IO state machine.
//!
//! Nothing here touches a socket, a clock or a thread: the driver feeds in events (a
//! connection opened, a frame arrived, a deadline passed) with the current [`Instant`], and
//! drains [`Output`]s (dial, send, close, exit). That makes join, membership, failure
//! detection, repair and flooding testable deterministically (see `node::sim`), in the
//! style of foca and quinn-proto.
//!
//! The shape of the network follows the seed: a candidate asks a genesis for a random peer,
//! asks that peer for nodes to connect to, links to them, floods "joined" and fetches the
//! member list. On top of that: heartbeats on every link, suspicion with direct and
//! indirect probes before a death is declared and flooded, refutation by incarnation,
//! degree repair, and retries of dead members and genesis addresses so that split
//! networks merge again.
//!
//! # Parts
//!
//! One [`Machine`] composes parts that each own their state, the way iroh-gossip composes
//! HyParView and Plumtree and quinn-proto splits its connection into streams, spaces and
//! timers. Each part's file holds its state struct and the machine's logic for that
//! concern; the logic sits on [`Machine`] because every concern reads the others' tables
//! (a death closes a link, a link lost starts a suspicion, a join floods an event):
//!
//! - `links`: connections, the hello handshake (who is behind a connection), links;
//! - `join`: joining through a genesis, redirects, back-off, answering candidates;
//! - `membership`: the member table, heartbeats, suspicion, probes, refutation, sync;
//! - `indirect`: indirect probes (neighbours probe a suspect for us before a death);
//! - `broadcast`: flooding, de-duplication, the delivered ring, batched membership floods;
//! - `repair`: degree repair, retries of dead members and genesis addresses;
//! - `bounds`: limits on ids and addresses, the per-connection cap on new members, and
//!   member lists in chunks of bounded size.
//!
//! # Time
//!
//! There is no fixed tick. After every call the machine knows when it next needs to run
//! ([`Machine::poll_timeout`], the earliest deadline of all parts) and the driver calls
//! [`Machine::handle_timeout`] then, or earlier when an event arrives. Deadlines are
//! coalesced so that an idle node wakes rarely: heartbeats go out in rounds (every link's
//! at one instant, at multiples of the heartbeat interval of the Unix clock, so that the
//! nodes of one host ping each other at the same moment and each ping also answers the
//! other side's), random probes and anti-entropy ride on rounds, every other deadline is
//! rounded up to [`Config::timer_granularity`] so that several fire in one wake-up, and the
//! tables are swept only when something in them expires.

mod bounds;
mod broadcast;
mod flood_guard;
mod indirect;
mod join;
mod links;
mod membership;
mod repair;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tracing::debug;

use super::identity::{Identity, NetworkKey};
use super::logsafe::clip;
use super::members::Members;
use super::wire::{MemberRecord, MemberState, Message};
use crate::contract::{DeliveredMessage, PeerRef};
use bounds::Bounds;
pub use broadcast::BroadcastError;
use broadcast::Flooding;
pub use flood_guard::{DEFAULT_MAX_MESSAGE_BYTES, LinkDrops};
#[cfg(test)]
pub(crate) use indirect::{RELAYS_AT_ONCE, RELAYS_PER_LINK};
use join::Joining;
use links::Links;
use membership::Detector;
use repair::Repair;

/// How often the seen-ids and tombstone tables may be swept (only when something expires).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// Identifies one connection between the driver and the machine.
pub type ConnId = u64;

/// Tunables of the protocol. [`Config::new`] gives the defaults the CLI uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (unique in the network).
    pub id: String,
    /// The address others dial to reach this node.
    pub addr: String,
    /// Genesis addresses to join through (our own address removed). Empty: we start the network.
    pub genesis: Vec<String>,
    /// Links to keep.
    pub degree: usize,
    /// Links to accept at most.
    pub max_peers: usize,
    /// The heartbeat pace: a quiet link is pinged every this long, or every whole number
    /// of these that fits in half of `heartbeat_timeout` (see `Machine::ping_rounds`).
    pub heartbeat_interval: Duration,
    /// A link silent for this long makes its peer a suspect.
    pub heartbeat_timeout: Duration,
    /// A suspect not reached again in this long (scaled with the network's size) is dead.
    pub suspect_timeout: Duration,
    /// A connection that has not completed its hello (or a query not answered) in this time is closed.
    pub hello_timeout: Duration,
    /// The shortest wait for a probe checking a reported death, and for a probe made for
    /// another node (see `Machine::short_probe_limit`): the handshake is two round trips
    /// with signatures, and a node that was only slow (200 ms on a loaded machine) was
    /// taken for dead.
    pub reported_probe_floor: Duration,
    /// When our own probe of a suspect fails, this many neighbours are asked to probe it
    /// for us (SWIM's indirect probe) before we declare it dead (`--indirect-probes`).
    /// 0: our own probe decides.
    pub indirect_probes: usize,
    /// First wait after a failed join; doubles per failure.
    pub join_backoff_base: Duration,
    /// Longest wait between join attempts.
    pub join_backoff_max: Duration,
    /// Ceiling of the back-off between retries of dead members and genesis addresses.
    pub retry_backoff_max: Duration,
    /// Dead members are retried for this long, then forgotten.
    pub retry_for: Duration,
    /// Addresses retried at most at once.
    pub max_retries: usize,
    /// Anti-entropy: a digest of the member table to a random neighbour this often (three
    /// times as long while the network is quiet, see `quiet_probe_rounds`).
    pub sync_interval: Duration,
    /// Flood ids remembered for de-duplication (count bound).
    pub seen_capacity: usize,
    /// Flood ids remembered for de-duplication (age bound).
    pub seen_max_age: Duration,
    /// Delivered broadcasts kept for `GET /messages`.
    pub delivered_capacity: usize,
    /// Bytes the delivered broadcasts kept for `GET /messages` may take (their strings and
    /// bookkeeping); the oldest go first. The newest is always kept.
    pub delivered_max_bytes: usize,
    /// Largest broadcast (title and message, in bytes) this node sends or carries; larger
    /// floods from peers are dropped and counted, larger local broadcasts refused.
    pub max_message_bytes: usize,
    /// User broadcasts per second one link may forward to us (bursts of one second's
    /// worth); more are dropped and counted. 0: no limit.
    pub flood_rate_messages: u64,
    /// Bytes of user broadcasts per second one link may forward to us (bursts of one
    /// second's worth); more are dropped and counted. 0: no limit.
    pub flood_rate_bytes: u64,
    /// Members (tombstones included) kept at most.
    pub max_members: usize,
    /// How long a dead or left member's tombstone blocks stale revivals.
    pub tombstone_ttl: Duration,
    /// Probe connections open at once at most.
    pub max_probes: usize,
    /// While the network is quiet (member table unchanged for `sync_interval`, nobody
    /// suspected), the random probe of a non-neighbour runs every this many heartbeat
    /// rounds instead of every two; anything that changes brings the fast pace back.
    pub quiet_probe_rounds: u32,
    /// The network is not quiet for this long after a member died or left (see
    /// `quiet_probe_rounds`): losses come in waves whose tail only random probes find.
    pub quiet_after_loss: Duration,
    /// Up to this many members the suspicion timeout is `suspect_timeout` as given; beyond,
    /// it grows with log2(members) / log2(this), up to three times.
    pub suspicion_scale_from: usize,
    /// Deadlines (silence, suspicion, joining, batched floods) are rounded up to multiples
    /// of this, so that those close together fire in one wake-up; the old fixed tick.
    pub timer_granularity: Duration,
    /// New members one connection may add per `sync_interval` (from lists, join answers
    /// and floods); the rest is ignored. The default, an eighth of `max_members` (1,250),
    /// lets a joiner take in the whole list of a 1,000-node network from one neighbour,
    /// while one hostile connection cannot fill the table: it would need eight windows,
    /// and members proven first-hand evict hearsay ones from a full table anyway.
    pub new_members_per_source: usize,
    /// Member lists go in `nodes-in-network` frames of about this many bytes at most
    /// (estimated, see `limits::RECORD_BYTES_ESTIMATE`); the default is half a frame's cap.
    pub member_list_chunk_bytes: usize,
    /// Raised on every start (wall-clock millis) so a restarted node outranks its old death.
    pub incarnation: u64,
    /// Seeds every random choice (peers, back-off jitter).
    pub seed: u64,
    /// Unix time (seconds) at the `now` given to [`Machine::new`].
    pub unix_start: f64,
    /// The node's key pair: its id is bound to the public key, its hellos and its own
    /// member records are signed with it.
    pub identity: Identity,
    /// A network-wide secret: with one, only nodes that hold it complete a handshake.
    pub network_key: Option<NetworkKey>,
}

impl Config {
    /// The defaults the CLI uses, for a node `id` listening at `addr`.
    pub fn new(id: impl Into<String>, addr: impl Into<String>) -> Self {
        Config {
            id: id.into(),
            addr: addr.into(),
            genesis: Vec::new(),
            degree: 4,
            max_peers: 16,
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_millis(1500),
            suspect_timeout: Duration::from_secs(3),
            hello_timeout: Duration::from_secs(2),
            reported_probe_floor: Duration::from_millis(500),
            indirect_probes: 3,
            join_backoff_base: Duration::from_millis(200),
            join_backoff_max: Duration::from_secs(5),
            retry_backoff_max: Duration::from_secs(10),
            retry_for: Duration::from_secs(600),
            max_retries: 64,
            sync_interval: Duration::from_secs(5),
            seen_capacity: 50_000,
            seen_max_age: Duration::from_secs(600),
            delivered_capacity: 1000,
            delivered_max_bytes: 8 * 1024 * 1024,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            flood_rate_messages: 2_000,
            flood_rate_bytes: 16 * 1024 * 1024,
            max_members: 10_000,
            tombstone_ttl: Duration::from_secs(60),
            max_probes: 8,
            quiet_probe_rounds: 30,
            quiet_after_loss: Duration::from_secs(60),
            suspicion_scale_from: 100,
            timer_granularity: Duration::from_millis(125),
            new_members_per_source: 10_000 / 8,
            member_list_chunk_bytes: crate::node::limits::MEMBER_LIST_CHUNK_BYTES,
            incarnation: 1,
            seed: 0,
            unix_start: 0.0,
            identity: Identity::generate(),
            network_key: None,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a TCP connection; answer with [`Machine::on_connected`] or [`Machine::on_dial_failed`].
    Dial {
        /// The id the connection will have.
        conn: ConnId,
        /// Where to dial (`host:port`).
        addr: String,
        /// Ids of the living members known at `addr` (the driver's blocks may name them).
        known_as: Vec<String>,
    },
    /// Queue a frame on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        msg: Message,
    },
    /// Close after flushing what was sent before. No `on_closed` is expected for it.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// The peer on `conn` says (in its hello) that it is `id`, listening at `addr`. The
    /// machine holds that hello until the driver calls [`Machine::admit_hello`]; a driver
    /// that drops the peer's frames (a blocked link) does not, and the handshake times out
    /// exactly as if the hello had been lost on the wire.
    Identified {
        /// The connection.
        conn: ConnId,
        /// The peer's node id.
        id: String,
        /// The peer's advertised address.
        addr: String,
    },
    /// The leave was flooded: flush every connection and exit.
    Exit,
}

/// Machine-side counters (the driver adds frames and bytes).
#[derive(Debug, Default, Clone)]
pub struct MachineCounters {
    /// Broadcasts delivered here (our own included).
    pub delivered: u64,
    /// Flood copies dropped as already seen.
    pub duplicates_dropped: u64,
    /// Floods from peers dropped for their size (`Config::max_message_bytes`).
    pub oversize_dropped: u64,
    /// User broadcasts from peers dropped over their link's rate.
    pub rate_limited: u64,
    /// Frames that broke the protocol (the connection was closed).
    pub bad_frames: u64,
    /// Members this node declared dead.
    pub members_declared_dead: u64,
    /// Hellos and records refused for their identity (bad signature or proof, or an id
    /// held by a living member with another key).
    pub identity_refused: u64,
    /// Calls of [`Machine::handle_timeout`]: how often the node woke for its timers.
    pub timer_wakeups: u64,
    /// Heartbeat rounds run with at least one link: after each, the neighbours' pings
    /// of the same round are on their way (the driver gathers them, see `driver`).
    pub heartbeat_rounds: u64,
    /// Member ids or addresses refused for their length or syntax (hellos, records).
    pub refused_records: u64,
    /// New members ignored because their connection used up its budget
    /// ([`Config::new_members_per_source`]).
    pub capped_members: u64,
    /// Probe requests sent to neighbours about our suspects (indirect probes).
    pub indirect_probes_sent: u64,
    /// Suspects found alive through a neighbour's probe after our own had failed.
    pub indirect_probe_saves: u64,
    /// Answers to our probe requests that claimed life with a proof that does not verify
    /// (a forgery, a replay, another nonce or another key).
    pub indirect_answers_refused: u64,
    /// Probe requests from neighbours served (a dial made for them).
    pub probe_requests_served: u64,
    /// Probe requests from neighbours refused: over the caps, for an unknown member or
    /// another address, or malformed.
    pub probe_requests_refused: u64,
}

/// The clock side of the machine: the deadline last handed to the driver, and the grid
/// deadlines are aligned to.
struct Timers {
    /// What [`Machine::poll_timeout`] returns; recomputed at the end of every call.
    deadline: Option<Instant>,
    /// Unix time at `Machine::start`, in nanoseconds: grids are aligned to the Unix epoch
    /// so that the nodes of one host share their rounds.
    epoch_ns: u128,
}

/// Tables are `BTreeMap`s, not `HashMap`s: iteration order decides the order of dials and
/// sends, and a per-process random hash order would make seeded runs (the simulator's
/// tests) differ from one run to the next.
pub struct Machine {
    cfg: Config,
    start: Instant,
    rng: StdRng,
    incarnation: u64,
    members: Members,
    links: Links,
    join: Joining,
    detector: Detector,
    flood: Flooding,
    repair: Repair,
    bounds: Bounds,
    timers: Timers,
    leaving: bool,
    /// Ids whose refusal for identity was logged (once per id; as many as members).
    refused_logged: std::collections::BTreeSet<String>,
    counters: MachineCounters,
    out: VecDeque<Output>,
}

impl Machine {
    /// A machine for `cfg`, started at `now`.
    pub fn new(mut cfg: Config, now: Instant) -> Self {
        let own = cfg.addr.clone();
        cfg.genesis.retain(|g| *g != own);
        cfg.degree = cfg.degree.max(1);
        cfg.max_peers = cfg.max_peers.max(cfg.degree);
        cfg.timer_granularity = cfg.timer_granularity.max(Duration::from_millis(1));
        cfg.heartbeat_interval = cfg.heartbeat_interval.max(Duration::from_millis(1));
        let incarnation = cfg.incarnation;
        let me = MemberRecord::unsigned(
            cfg.id.clone(),
            cfg.addr.clone(),
            incarnation,
            MemberState::Alive,
        )
        .signed(&cfg.identity);
        let epoch_ns = (cfg.unix_start.max(0.0) * 1e9) as u128;
        let mut machine = Machine {
            members: Members::new(me, now, cfg.max_members, cfg.tombstone_ttl),
            rng: StdRng::seed_from_u64(cfg.seed),
            links: Links::new(),
            join: Joining::new(&cfg, now),
            detector: Detector::new(&cfg, now),
            flood: Flooding::new(&cfg),
            repair: Repair::new(&cfg, now),
            bounds: Bounds::default(),
            timers: Timers {
                deadline: None,
                epoch_ns,
            },
            start: now,
            incarnation,
            leaving: false,
            refused_logged: std::collections::BTreeSet::new(),
            counters: MachineCounters::default(),
            out: VecDeque::new(),
            cfg,
        };
        machine.refresh_deadline(now);
        machine
    }

    // ----- what the driver reads -------------------------------------------------------

    /// The next thing the driver must do, if any. Drain it after every call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Machine::handle_timeout`] must run next; `None`: only an event wakes it.
    /// Never earlier than the next instant of the timer grid after the last call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.deadline
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// This node's public key (ed25519, hex).
    pub fn public_key(&self) -> &str {
        self.cfg.identity.public_hex()
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This node's advertised address.
    pub fn addr(&self) -> &str {
        &self.cfg.addr
    }

    /// Did this node start the network (no genesis to join through)?
    pub fn is_genesis(&self) -> bool {
        self.cfg.genesis.is_empty()
    }

    /// Has the node joined (or started) the network?
    pub fn is_joined(&self) -> bool {
        self.join.is_joined()
    }

    /// The `--degree` asked for.
    pub fn target_degree(&self) -> usize {
        self.cfg.degree
    }

    /// Counters of what the machine did.
    pub fn counters(&self) -> &MachineCounters {
        &self.counters
    }

    /// Linked neighbours, sorted.
    pub fn neighbours(&self) -> Vec<PeerRef> {
        let mut list: Vec<PeerRef> = self
            .links
            .neighbours
            .iter()
            .filter_map(|(id, conn)| {
                let peer = self.links.conns.get(conn)?.peer.as_ref()?;
                Some(PeerRef {
                    id: id.clone(),
                    addr: peer.addr.clone(),
                })
            })
            .collect();
        list.sort();
        list
    }

    /// Living members, ourselves included.
    pub fn member_count(&self) -> usize {
        self.members.alive_count()
    }

    /// Ids of the living members, ourselves included, without building the list.
    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.alive().map(|(id, _)| id.as_str())
    }

    /// Living members, ourselves included, sorted.
    pub fn members(&self) -> Vec<PeerRef> {
        let mut list: Vec<PeerRef> = self
            .members
            .alive()
            .map(|(id, m)| PeerRef {
                id: id.clone(),
                addr: m.addr.clone(),
            })
            .collect();
        list.sort();
        list
    }

    /// Members suspected of having failed, sorted.
    pub fn suspects(&self) -> Vec<PeerRef> {
        let mut list: Vec<PeerRef> = self
            .detector
            .suspects
            .iter()
            .map(|(id, s)| PeerRef {
                id: id.clone(),
                addr: s.addr.clone(),
            })
            .collect();
        list.sort();
        list
    }

    /// The last delivered broadcasts, oldest first.
    pub fn delivered(&self) -> impl Iterator<Item = &DeliveredMessage> {
        self.flood.delivered.iter()
    }

    /// Bytes the delivered ring takes, as its `Config::delivered_max_bytes` counts them.
    pub fn delivered_bytes(&self) -> usize {
        self.flood.delivered_bytes
    }

    /// What each open link's floods lost to the size and rate bounds, by peer id.
    pub fn link_drops(&self) -> Vec<(String, LinkDrops)> {
        let mut list: Vec<(String, LinkDrops)> = self
            .flood
            .guards
            .iter()
            .filter_map(|(conn, g)| Some((self.links.peer_id(*conn)?, g.drops)))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Each neighbour with the connection of its link, so that tests can check that both
    /// ends of a link are one connection.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn link_conns(&self) -> Vec<(String, ConnId)> {
        let mut list: Vec<(String, ConnId)> = self
            .links
            .neighbours
            .iter()
            .map(|(id, c)| (id.clone(), *c))
            .collect();
        list.sort();
        list
    }

    /// Connections the machine tracks (bounded by the driver's caps).
    pub fn connection_count(&self) -> usize {
        self.links.conns.len()
    }

    // ----- events ------------------------------------------------------------------------

    /// An inbound connection was accepted; returns its id.
    pub fn on_accepted(&mut self, now: Instant) -> ConnId {
        self.notice_stall(now);
        let conn = self.links.accept(now);
        self.refresh_deadline(now);
        conn
    }

    /// A dial we asked for is connected: open with our hello (and the question, if any).
    pub fn on_connected(&mut self, now: Instant, conn: ConnId) {
        self.notice_stall(now);
        self.connected(now, conn);
        self.refresh_deadline(now);
    }

    /// A dial we asked for failed.
    pub fn on_dial_failed(&mut self, now: Instant, conn: ConnId, error: &str) {
        self.notice_stall(now);
        if let Some(c) = self.links.conns.get(&conn) {
            debug!(
                conn,
                addr = %clip(c.dialed.as_deref().unwrap_or("")),
                error = %clip(error),
                "dial failed"
            );
        }
        self.forget(now, conn, false);
        self.refresh_deadline(now);
    }

    /// The other side closed, or the connection failed.
    pub fn on_closed(&mut self, now: Instant, conn: ConnId) {
        self.notice_stall(now);
        self.forget(now, conn, false);
        self.refresh_deadline(now);
    }

    /// A frame the driver could not decode (malformed, oversized): it closed the connection.
    pub fn on_bad_frame(&mut self, now: Instant, conn: ConnId) {
        self.notice_stall(now);
        self.counters.bad_frames += 1;
        self.forget(now, conn, false);
        self.refresh_deadline(now);
    }

    /// A frame arrived on `conn`.
    pub fn on_frame(&mut self, now: Instant, conn: ConnId, msg: Message) {
        if self.leaving {
            return;
        }
        self.notice_stall(now);
        self.frame(now, conn, msg);
        self.refresh_deadline(now);
    }

    /// The driver lets in the hello it was told of by [`Output::Identified`].
    pub fn admit_hello(&mut self, now: Instant, conn: ConnId) {
        if self.leaving {
            return;
        }
        self.notice_stall(now);
        let held = self
            .links
            .conns
            .get_mut(&conn)
            .and_then(|c| c.held_hello.take());
        if let Some(hello) = held {
            self.on_hello(now, conn, hello);
        }
        self.refresh_deadline(now);
    }

    /// A deadline passed (or the driver woke for another reason): heartbeats, timeouts,
    /// suspicion, joining, repair, retries, anti-entropy, batched floods, housekeeping;
    /// each only when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.counters.timer_wakeups += 1;
        self.notice_stall(now);
        self.check_connections(now);
        self.advance_join(now);
        self.advance_suspicions(now);
        if self.is_joined() {
            self.repair_degree(now);
            self.run_retries(now);
            self.periodic_membership(now);
        }
        // After everything that queues probes, so that they start in this wake-up.
        self.run_probes(now);
        self.housekeeping(now);
        self.repair.link_cooldown.retain(|_, until| *until > now);
        self.flush_forwards();
        self.refresh_deadline(now);
    }

    /// Graceful leave: flood it, then ask the driver to flush and exit.
    pub fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.flood_leave(now);
        self.leaving = true;
        let conns: Vec<ConnId> = self.links.conns.keys().copied().collect();
        for conn in conns {
            self.out.push_back(Output::Close { conn });
        }
        self.links.conns.clear();
        self.links.neighbours.clear();
        self.timers.deadline = None;
        self.out.push_back(Output::Exit);
    }

    // ----- time --------------------------------------------------------------------------

    /// Lifeguard's lesson (SWIM's successor): a node that was itself starved of CPU, or
    /// frozen, sees every link as silent when it wakes up, and would blame its neighbours
    /// for its own pause. When the machine is called later than the deadline it asked for
    /// by more than half a heartbeat interval, the time it was away is not counted against
    /// anyone: silence clocks, handshake clocks and suspicions all move forward by the
    /// stall. On a loaded machine this is what keeps a slow node from declaring half the
    /// network dead, and the network from refuting it all again. Any call measures it (a
    /// thawed driver may read a frame before its timer fires).
    fn notice_stall(&mut self, now: Instant) {
        let Some(asked) = self.timers.deadline else {
            return;
        };
        let stall = now.saturating_duration_since(asked);
        if stall <= self.cfg.heartbeat_interval / 2 {
            return;
        }
        debug!(
            ?stall,
            "this node was stalled; not counting it against its links"
        );
        // Measured once: the next call compares with a deadline from now on.
        self.timers.deadline = Some(now);
        for c in self.links.conns.values_mut() {
            c.last_heard = (c.last_heard + stall).min(now);
            c.opened_at = (c.opened_at + stall).min(now);
        }
        for s in self.detector.suspects.values_mut() {
            s.since = (s.since + stall).min(now);
            // Our helpers' answers may be waiting, unread, in the socket buffers.
            if let Some(r) = &mut s.indirect {
                r.until += stall;
            }
        }
    }

    /// Recomputes the deadline handed to the driver: the earliest of every part's, never
    /// before the next grid instant after `now` (work due now waits for it, as it waited
    /// for the next tick), rounded up to the grid.
    fn refresh_deadline(&mut self, now: Instant) {
        if self.leaving {
            self.timers.deadline = None;
            return;
        }
        let parts = [
            self.links_deadline(),
            self.join_deadline(now),
            self.detector_deadline(now),
            self.flood_deadline(),
            self.repair_deadline(now),
            self.housekeeping_deadline(),
        ];
        let earliest = parts.into_iter().flatten().min();
        let soonest = self.grid_after(now);
        self.timers.deadline =
            earliest.map(|d| self.align_up(d, self.cfg.timer_granularity).max(soonest));
    }

    /// The first instant at or after `t` whose Unix time is a multiple of `grid`.
    fn align_up(&self, t: Instant, grid: Duration) -> Instant {
        let g = grid.as_nanos().max(1);
        let u = self.timers.epoch_ns + t.saturating_duration_since(self.start).as_nanos();
        let up = u.div_ceil(g) * g;
        t + Duration::from_nanos((up - u) as u64)
    }

    /// The first instant of the timer grid strictly after `t`.
    fn grid_after(&self, t: Instant) -> Instant {
        self.align_up(t + Duration::from_nanos(1), self.cfg.timer_granularity)
    }

    /// The first heartbeat-round instant strictly after `t`: a round at which quiet links
    /// are pinged (every `ping_rounds` heartbeat intervals), so that work riding on rounds
    /// (random probes, anti-entropy, retries) shares their wake-up.
    fn round_after(&self, t: Instant) -> Instant {
        let grid = self.cfg.heartbeat_interval * self.ping_rounds();
        self.align_up(t + Duration::from_nanos(1), grid)
    }

    /// Sweeps the seen-ids and tombstone tables when something in them has expired.
    fn housekeeping(&mut self, now: Instant) {
        if self.housekeeping_deadline().is_some_and(|d| d <= now) {
            self.flood.seen.expire(now);
            self.members.expire_tombstones(now);
        }
    }

    /// When the oldest seen id or tombstone expires, on a one-second grid.
    fn housekeeping_deadline(&self) -> Option<Instant> {
        let next = [
            self.flood.seen.next_expiry(),
            self.members.next_tombstone_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(self.align_up(next, HOUSEKEEPING_EVERY))
    }

    fn unix(&self, now: Instant) -> f64 {
        self.cfg.unix_start + now.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Our own record as the table holds it, signed at the current incarnation.
    fn self_record(&self) -> MemberRecord {
        self.members.record(&self.cfg.id).unwrap_or_else(|| {
            MemberRecord::unsigned(
                self.cfg.id.clone(),
                self.cfg.addr.clone(),
                self.incarnation,
                MemberState::Alive,
            )
            .signed(&self.cfg.identity)
        })
    }
}
