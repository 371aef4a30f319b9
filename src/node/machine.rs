//! The node's protocol logic as a sans-IO state machine.
//!
//! Nothing here touches a socket, a clock or a thread: the driver feeds in events (a
//! connection opened, a frame arrived, time passed) with the current [`Instant`], and drains
//! [`Output`]s (dial, send, close, exit). That makes join, membership, failure detection,
//! repair and flooding testable deterministically (see the tests at the bottom), in the
//! style of foca and quinn-proto.
//!
//! The shape of the network follows the seed: a candidate asks a genesis for a random peer,
//! asks that peer for nodes to connect to, links to them, floods "joined" and fetches the
//! member list. On top of that: heartbeats on every link, suspicion with direct probes
//! before a death is declared and flooded, refutation by incarnation, degree repair, and
//! retries of dead members and genesis addresses so that split networks merge again.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};
use tracing::{debug, info, warn};

use super::members::{Change, Evidence, Members};
use super::seen::SeenSet;
use super::wire::{
    Flood, Hello, Intent, MemberEvent, MemberRecord, MemberState, Message, PROTOCOL_VERSION, digest,
};
use crate::contract::{DeliveredMessage, PeerRef};

/// Redirected link attempts per join attempt.
const MAX_REDIRECTS: usize = 4;
/// Quick re-asks after a join found only full nodes; then the usual back-off, so that a
/// network with no room at all is not asked again and again.
const QUICK_REJOINS: u32 = 3;
/// How often the seen-ids and tombstone tables are swept.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);
/// The suspicion timeout never grows beyond this multiple of `--suspect-timeout`.
const SUSPICION_SCALE_MAX: f64 = 3.0;

/// Identifies one connection between the driver and the machine.
pub type ConnId = u64;

/// Tunables of the protocol. [`Config::new`] gives the defaults the CLI uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: String,
    pub addr: String,
    /// Genesis addresses to join through (our own address removed). Empty: we start the network.
    pub genesis: Vec<String>,
    pub degree: usize,
    pub max_peers: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub suspect_timeout: Duration,
    /// A connection that has not completed its hello (or a query not answered) in this time is closed.
    pub hello_timeout: Duration,
    pub join_backoff_base: Duration,
    pub join_backoff_max: Duration,
    /// Ceiling of the back-off between retries of dead members and genesis addresses.
    pub retry_backoff_max: Duration,
    /// Dead members are retried for this long, then forgotten.
    pub retry_for: Duration,
    pub max_retries: usize,
    pub sync_interval: Duration,
    pub seen_capacity: usize,
    pub seen_max_age: Duration,
    pub delivered_capacity: usize,
    pub max_members: usize,
    pub tombstone_ttl: Duration,
    pub max_probes: usize,
    /// Up to this many members the suspicion timeout is `suspect_timeout` as given; beyond,
    /// it grows with log2(members) / log2(this), up to three times.
    pub suspicion_scale_from: usize,
    /// Raised on every start (wall-clock millis) so a restarted node outranks its old death.
    pub incarnation: u64,
    pub seed: u64,
    /// Unix time (seconds) at the `now` given to [`Machine::new`].
    pub unix_start: f64,
}

impl Config {
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
            join_backoff_base: Duration::from_millis(200),
            join_backoff_max: Duration::from_secs(5),
            retry_backoff_max: Duration::from_secs(10),
            retry_for: Duration::from_secs(600),
            max_retries: 64,
            sync_interval: Duration::from_secs(5),
            seen_capacity: 50_000,
            seen_max_age: Duration::from_secs(600),
            delivered_capacity: 1000,
            max_members: 10_000,
            tombstone_ttl: Duration::from_secs(60),
            max_probes: 8,
            suspicion_scale_from: 100,
            incarnation: 1,
            seed: 0,
            unix_start: 0.0,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a TCP connection; answer with [`Machine::on_connected`] or [`Machine::on_dial_failed`].
    Dial {
        conn: ConnId,
        addr: String,
    },
    Send {
        conn: ConnId,
        msg: Message,
    },
    /// Close after flushing what was sent before. No `on_closed` is expected for it.
    Close {
        conn: ConnId,
    },
    /// The leave was flooded: flush every connection and exit.
    Exit,
}

/// Why we opened an outbound connection.
#[derive(Debug, Clone, PartialEq)]
enum Purpose {
    AskRandom,
    AskNodes,
    /// A link we want as part of joining or to repair our degree.
    Link,
    /// A link to a dead member or genesis address, to merge networks that split.
    Retry,
    /// Is this member alive? A hello answer says yes.
    Probe {
        id: String,
        addr: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Dialing,
    /// Connected; waiting for the other side's hello.
    Handshaking,
    Open,
}

#[derive(Debug)]
struct Conn {
    /// `None` for inbound connections.
    purpose: Option<Purpose>,
    /// Address we dialed (outbound only).
    dialed: Option<String>,
    phase: Phase,
    intent: Option<Intent>,
    peer: Option<Hello>,
    opened_at: Instant,
    last_heard: Instant,
    last_ping: Instant,
}

impl Conn {
    fn is_link(&self) -> bool {
        self.phase == Phase::Open && self.intent == Some(Intent::Link)
    }
}

#[derive(Debug)]
enum Join {
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

#[derive(Debug)]
struct Suspicion {
    since: Instant,
    addr: String,
    next_probe: Instant,
}

#[derive(Debug)]
struct Retry {
    next: Instant,
    backoff: Duration,
    /// `None`: a genesis address, retried for as long as the node runs.
    until: Option<Instant>,
    in_flight: bool,
}

/// Machine-side counters (the driver adds frames and bytes).
#[derive(Debug, Default, Clone)]
pub struct MachineCounters {
    pub delivered: u64,
    pub duplicates_dropped: u64,
    pub bad_frames: u64,
    pub members_declared_dead: u64,
}

/// Tables are `BTreeMap`s, not `HashMap`s: iteration order decides the order of dials and
/// sends, and a per-process random hash order would make seeded runs (the simulator's
/// tests) differ from one run to the next.
pub struct Machine {
    cfg: Config,
    start: Instant,
    rng: StdRng,
    incarnation: u64,
    next_conn: ConnId,
    conns: BTreeMap<ConnId, Conn>,
    /// Neighbour id -> its link connection.
    neighbours: BTreeMap<String, ConnId>,
    members: Members,
    join: Join,
    join_attempt: u32,
    /// Attempts of this join that ended only because every node offered was full: they
    /// are retried at once and do not lengthen the back-off of real failures.
    join_full_refusals: u32,
    /// Set when a node refused one of this attempt's links for lack of room.
    refused_for_room: bool,
    genesis_cursor: usize,
    seen: SeenSet,
    delivered: VecDeque<DeliveredMessage>,
    suspects: BTreeMap<String, Suspicion>,
    /// Members to probe: (id, addr).
    probe_queue: VecDeque<(String, String)>,
    retries: BTreeMap<String, Retry>,
    /// Redirected link attempts still allowed in this join attempt: full nodes redirect to
    /// each other, and without a budget a crowded region would bounce a candidate forever.
    redirects_left: usize,
    /// Addresses we dialed that turned out to be another name of a member (genesis aliases).
    aliases: BTreeMap<String, String>,
    /// Members recently refused or failed as link targets: not tried again before the instant.
    link_cooldown: BTreeMap<String, Instant>,
    next_sync: Instant,
    /// Next probe of a random non-neighbour (SWIM's protocol period: two heartbeats).
    next_random_probe: Instant,
    /// When `tick` last ran: a late tick means this node was starved of CPU (or frozen),
    /// and that silence is ours, not our neighbours'.
    last_tick: Instant,
    /// Next sweep of the seen-ids and tombstone tables (once a second is plenty).
    next_housekeeping: Instant,
    next_nonce: u64,
    broadcast_seq: u64,
    leaving: bool,
    /// Membership floods waiting for the next tick, with the links that already sent
    /// each one to us (they need no copy back).
    pending_forwards: Vec<(Flood, Vec<ConnId>)>,
    counters: MachineCounters,
    out: VecDeque<Output>,
}

impl Machine {
    pub fn new(mut cfg: Config, now: Instant) -> Self {
        let own = cfg.addr.clone();
        cfg.genesis.retain(|g| *g != own);
        cfg.degree = cfg.degree.max(1);
        cfg.max_peers = cfg.max_peers.max(cfg.degree);
        let incarnation = cfg.incarnation;
        let me = MemberRecord {
            id: cfg.id.clone(),
            addr: cfg.addr.clone(),
            incarnation,
            state: MemberState::Alive,
        };
        let join = if cfg.genesis.is_empty() {
            Join::Genesis
        } else {
            Join::Waiting { next: now }
        };
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
        Machine {
            members: Members::new(me, now, cfg.max_members, cfg.tombstone_ttl),
            seen: SeenSet::new(cfg.seen_capacity, cfg.seen_max_age),
            rng: StdRng::seed_from_u64(cfg.seed),
            next_sync: now + cfg.sync_interval,
            next_random_probe: now + cfg.heartbeat_interval * 2,
            last_tick: now,
            next_housekeeping: now + HOUSEKEEPING_EVERY,
            start: now,
            incarnation,
            next_conn: 1,
            conns: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            join,
            join_attempt: 0,
            join_full_refusals: 0,
            refused_for_room: false,
            genesis_cursor: 0,
            delivered: VecDeque::new(),
            suspects: BTreeMap::new(),
            probe_queue: VecDeque::new(),
            retries,
            aliases: BTreeMap::new(),
            redirects_left: 0,
            link_cooldown: BTreeMap::new(),
            next_nonce: 1,
            broadcast_seq: 0,
            leaving: false,
            pending_forwards: Vec::new(),
            counters: MachineCounters::default(),
            out: VecDeque::new(),
            cfg,
        }
    }

    // ----- what the driver reads -------------------------------------------------------

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    pub fn addr(&self) -> &str {
        &self.cfg.addr
    }

    pub fn is_genesis(&self) -> bool {
        self.cfg.genesis.is_empty()
    }

    pub fn is_joined(&self) -> bool {
        matches!(self.join, Join::Genesis | Join::Joined)
    }

    pub fn target_degree(&self) -> usize {
        self.cfg.degree
    }

    pub fn counters(&self) -> &MachineCounters {
        &self.counters
    }

    pub fn neighbours(&self) -> Vec<PeerRef> {
        let mut list: Vec<PeerRef> = self
            .neighbours
            .iter()
            .filter_map(|(id, conn)| {
                let peer = self.conns.get(conn)?.peer.as_ref()?;
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

    pub fn suspects(&self) -> Vec<PeerRef> {
        let mut list: Vec<PeerRef> = self
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

    pub fn delivered(&self) -> impl Iterator<Item = &DeliveredMessage> {
        self.delivered.iter()
    }

    /// Each neighbour with the connection of its link, so that tests can check that both
    /// ends of a link are one connection.
    #[cfg(test)]
    pub(crate) fn link_conns(&self) -> Vec<(String, ConnId)> {
        let mut list: Vec<(String, ConnId)> = self
            .neighbours
            .iter()
            .map(|(id, c)| (id.clone(), *c))
            .collect();
        list.sort();
        list
    }

    /// Connections the machine tracks (bounded by the driver's caps).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    // ----- events ------------------------------------------------------------------------

    /// An inbound connection was accepted; returns its id.
    pub fn on_accepted(&mut self, now: Instant) -> ConnId {
        let conn = self.alloc_conn();
        self.conns.insert(
            conn,
            Conn {
                purpose: None,
                dialed: None,
                phase: Phase::Handshaking,
                intent: None,
                peer: None,
                opened_at: now,
                last_heard: now,
                last_ping: now,
            },
        );
        conn
    }

    /// A dial we asked for is connected: open with our hello (and the question, if any).
    pub fn on_connected(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            self.out.push_back(Output::Close { conn });
            return;
        };
        c.phase = Phase::Handshaking;
        c.last_heard = now;
        let intent = match c.purpose {
            Some(Purpose::Link | Purpose::Retry) => Intent::Link,
            _ => Intent::Query,
        };
        c.intent = Some(intent);
        let question = match c.purpose {
            Some(Purpose::AskRandom) => Some(Message::AskRandomNode),
            Some(Purpose::AskNodes) => Some(Message::AskNodesToConnect),
            _ => None,
        };
        let hello = self.hello(intent);
        self.send(conn, hello);
        if let Some(q) = question {
            self.send(conn, q);
        }
    }

    pub fn on_dial_failed(&mut self, now: Instant, conn: ConnId, error: &str) {
        if let Some(c) = self.conns.get(&conn) {
            debug!(
                conn,
                addr = c.dialed.as_deref().unwrap_or(""),
                error,
                "dial failed"
            );
        }
        self.forget(now, conn, false);
    }

    /// The other side closed, or the connection failed.
    pub fn on_closed(&mut self, now: Instant, conn: ConnId) {
        self.forget(now, conn, false);
    }

    /// A frame the driver could not decode (malformed, oversized): it closed the connection.
    pub fn on_bad_frame(&mut self, now: Instant, conn: ConnId) {
        self.counters.bad_frames += 1;
        self.forget(now, conn, false);
    }

    pub fn on_frame(&mut self, now: Instant, conn: ConnId, msg: Message) {
        if self.leaving {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_heard = now;
        if c.is_link() {
            if let Some(peer) = c.peer.as_ref().map(|p| p.id.clone()) {
                if self.suspects.remove(&peer).is_some() {
                    info!(member = %peer, "suspected neighbour spoke again; alive");
                }
            }
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.phase != Phase::Open {
            match msg {
                Message::Hello(hello) => self.on_hello(now, conn, hello),
                Message::Disconnect { reason, full } => {
                    debug!(conn, reason, "refused");
                    if full && self.is_joining_link(conn) {
                        self.refused_for_room = true;
                    }
                    self.close(now, conn);
                }
                Message::NodesToConnect { nodes } if self.is_joining_link(conn) => {
                    self.on_redirect(now, nodes);
                }
                Message::NodesToConnect { .. } if self.purpose(conn).is_some() => {
                    // A redirect for a repair link, or for a join that has moved on: the
                    // refusal that follows closes this connection; nothing to do.
                    debug!(conn, "redirect outside a join; ignored");
                }
                other => {
                    warn!(
                        conn,
                        kind = other.kind(),
                        "frame before hello; closing connection"
                    );
                    self.counters.bad_frames += 1;
                    self.close(now, conn);
                }
            }
            return;
        }
        let is_link = c.is_link();
        match msg {
            Message::Hello(_) => {
                warn!(conn, "second hello; closing connection");
                self.counters.bad_frames += 1;
                self.close(now, conn);
            }
            Message::Disconnect { reason, .. } => {
                debug!(conn, reason, "peer disconnects");
                self.close(now, conn);
            }
            Message::Ping { nonce } => self.send(conn, Message::Pong { nonce }),
            Message::Pong { .. } => {}
            Message::AskRandomNode => {
                let node = self.random_member_except(self.peer_id(conn).as_deref());
                self.send(conn, Message::RandomNode { node });
            }
            Message::AskNodesToConnect => {
                let nodes = self.nodes_to_connect(self.peer_id(conn).as_deref());
                self.send(conn, Message::NodesToConnect { nodes });
            }
            Message::GiveNodesInNetwork => {
                let members = self.members.alive_records();
                self.send(conn, Message::NodesInNetwork { members });
            }
            Message::RandomNode { node } => self.on_random_node(now, conn, node),
            Message::NodesToConnect { nodes } => self.on_nodes_to_connect(now, conn, nodes),
            Message::NodesInNetwork { members } => self.on_member_list(now, conn, members),
            Message::MembersDigest { digest, .. } => {
                // Our own table still moving: the floods in flight will settle it, and a
                // full exchange now would be a thousand records each way for nothing.
                if self.members_settled(now) && digest != self.members.digest() {
                    let members = self.members.alive_records();
                    self.send(conn, Message::NodesInNetwork { members });
                    self.send(conn, Message::GiveNodesInNetwork);
                }
            }
            Message::Broadcast(flood) => {
                if is_link {
                    self.on_flood(now, conn, flood);
                } else {
                    warn!(conn, "broadcast on a query connection; closing connection");
                    self.counters.bad_frames += 1;
                    self.close(now, conn);
                }
            }
        }
    }

    /// Time passed: heartbeats, timeouts, suspicion, joining, repair, retries, anti-entropy.
    pub fn tick(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.forgive_own_stall(now);
        self.check_connections(now);
        self.advance_join(now);
        self.advance_suspicions(now);
        self.run_probes(now);
        if self.is_joined() {
            self.repair_degree(now);
            self.run_retries(now);
            if now >= self.next_sync {
                self.next_sync = now + self.cfg.sync_interval;
                if self.members_settled(now) {
                    self.send_digest();
                }
            }
            if now >= self.next_random_probe {
                self.next_random_probe = now + self.cfg.heartbeat_interval * 2;
                self.probe_random_member();
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_EVERY;
            self.seen.expire(now);
            self.members.expire_tombstones(now);
        }
        self.link_cooldown.retain(|_, until| *until > now);
        self.flush_forwards();
    }

    /// Lifeguard's lesson (SWIM's successor): a node that was itself starved of CPU, or
    /// frozen, sees every link as silent when it wakes up, and would blame its neighbours
    /// for its own pause. When ticks arrive late, the time we were away is not counted
    /// against anyone: silence clocks, handshake clocks and suspicions all move forward
    /// by the stall. On a loaded machine this is what keeps a slow node from declaring
    /// half the network dead, and the network from refuting it all again.
    fn forgive_own_stall(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        let expected = self.cfg.heartbeat_interval / 2;
        if gap <= self.cfg.heartbeat_interval {
            return;
        }
        let stall = gap - expected;
        debug!(
            ?stall,
            "this node was stalled; not counting it against its links"
        );
        for c in self.conns.values_mut() {
            c.last_heard = (c.last_heard + stall).min(now);
            c.opened_at = (c.opened_at + stall).min(now);
        }
        for s in self.suspects.values_mut() {
            s.since = (s.since + stall).min(now);
        }
    }

    /// How long a suspect has to answer before it is declared dead. As SWIM's Lifeguard
    /// does, the timeout grows with the logarithm of the network's size: in a big network
    /// more nodes watch each member, a false death costs a flood to every node and its
    /// refutation another, and loaded machines (many nodes on few cores) answer late.
    fn suspect_timeout(&self) -> Duration {
        let n = self.members.alive_count().max(1) as f64;
        let from = self.cfg.suspicion_scale_from.max(2) as f64;
        let scale = (n.log2() / from.log2()).clamp(1.0, SUSPICION_SCALE_MAX);
        self.cfg.suspect_timeout.mul_f64(scale)
    }

    /// Floods a user broadcast; returns its id. Delivered locally too (0 hops).
    pub fn broadcast(&mut self, now: Instant, title: &str, message: &str) -> String {
        self.broadcast_seq += 1;
        let time = self.unix(now);
        let id = digest(&[
            &self.cfg.id,
            &self.incarnation.to_string(),
            &self.broadcast_seq.to_string(),
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
        self.seen.insert(&id, now);
        self.deliver(now, &flood);
        self.forward(&flood, None);
        id
    }

    /// Graceful leave: flood it, then ask the driver to flush and exit.
    pub fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        let me = self.self_record();
        let flood = Flood::membership(
            MemberEvent::Left {
                member: MemberRecord {
                    state: MemberState::Left,
                    ..me
                },
            },
            &self.cfg.id,
            self.unix(now),
        );
        self.seen.insert(&flood.id, now);
        self.flush_forwards();
        self.forward_now(&flood, &[]);
        info!(neighbours = self.neighbours.len(), "leaving the network");
        self.leaving = true;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.out.push_back(Output::Close { conn });
        }
        self.conns.clear();
        self.neighbours.clear();
        self.out.push_back(Output::Exit);
    }

    // ----- handshake ---------------------------------------------------------------------

    fn on_hello(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        if hello.version != PROTOCOL_VERSION {
            warn!(
                conn,
                version = hello.version,
                "protocol version mismatch; closing connection"
            );
            self.refuse(now, conn, Message::disconnect("protocol version mismatch"));
            return;
        }
        if hello.id == self.cfg.id {
            self.refuse(now, conn, Message::disconnect("connected to itself"));
            return;
        }
        let outbound = self.conns.get(&conn).is_some_and(|c| c.purpose.is_some());
        if outbound {
            // The node itself says it is alive: the strongest evidence there is.
            self.learn_first_hand(now, &hello);
            self.on_hello_answer(now, conn, hello);
        } else {
            self.on_hello_inbound(now, conn, hello);
        }
    }

    fn on_hello_inbound(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        if hello.intent == Intent::Link {
            if self.neighbours.contains_key(&hello.id) {
                self.refuse(now, conn, Message::disconnect("already linked"));
                return;
            }
            // Both dialed at once: keep the connection opened by the smaller id.
            let crossing = self.conns.iter().find_map(|(id, c)| {
                (c.phase != Phase::Open
                    && matches!(c.purpose, Some(Purpose::Link | Purpose::Retry))
                    && c.dialed.as_deref() == Some(hello.addr.as_str()))
                .then_some(*id)
            });
            if let Some(mine) = crossing {
                if self.cfg.id < hello.id {
                    self.refuse(
                        now,
                        conn,
                        Message::disconnect("simultaneous link; keeping mine"),
                    );
                    return;
                }
                self.out.push_back(Output::Close { conn: mine });
                self.forget(now, mine, true);
            }
            if self.neighbours.len() >= self.cfg.max_peers {
                // Point the candidate at our neighbours: the nodes near the genesis fill up
                // first, and a redirect saves it a whole new join attempt.
                let nodes = self.redirect_candidates(&hello.id);
                self.send(conn, Message::NodesToConnect { nodes });
                self.refuse(now, conn, Message::no_room());
                return;
            }
        }
        // Accepted: only now does its hello count as evidence (a refused stranger is no member).
        self.learn_first_hand(now, &hello);
        let answer = self.hello(hello.intent);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Open;
            c.intent = Some(hello.intent);
        }
        self.send(conn, answer);
        if hello.intent == Intent::Link {
            self.add_link(now, conn, hello);
        } else if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(hello);
        }
    }

    fn on_hello_answer(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.phase = Phase::Open;
        let purpose = c.purpose.clone();
        match purpose {
            Some(Purpose::Link | Purpose::Retry) => {
                if let Some(dialed) = c.dialed.clone() {
                    if dialed != hello.addr {
                        self.aliases.insert(dialed, hello.id.clone());
                    }
                }
                // Our own dials respect the cap as much as what others ask of us: several
                // links (joins, repairs, retries) may complete at once.
                let full = self.neighbours.len() >= self.cfg.max_peers;
                if full || self.neighbours.contains_key(&hello.id) {
                    let refusal = if full {
                        Message::no_room()
                    } else {
                        Message::disconnect("already linked")
                    };
                    self.send(conn, refusal);
                    self.close_quietly(conn);
                    self.after_link_attempt(now, conn);
                    return;
                }
                let retry = purpose == Some(Purpose::Retry);
                self.add_link(now, conn, hello);
                if retry {
                    // Two networks may be meeting: push-pull the member lists.
                    let members = self.members.alive_records();
                    self.send(conn, Message::NodesInNetwork { members });
                    self.send(conn, Message::GiveNodesInNetwork);
                }
                self.after_link_attempt(now, conn);
            }
            Some(Purpose::Probe { id, .. }) => {
                if self.suspects.remove(&id).is_some() {
                    info!(member = %id, "suspect answered; alive");
                }
                // Alive, yet our link to it says nothing: that connection is broken (a
                // half-open socket, a cut in one direction). Drop it; repair links anew.
                let broken = self.neighbours.get(&id).copied().filter(|link| {
                    self.conns.get(link).is_some_and(|l| {
                        now.saturating_duration_since(l.last_heard) >= self.cfg.heartbeat_timeout
                    })
                });
                if let Some(link) = broken {
                    info!(peer = %id, "link silent although its peer answers; replacing it");
                    self.close(now, link);
                    self.suspects.remove(&id);
                }
                self.send(conn, Message::disconnect("probe done"));
                self.close_quietly(conn);
            }
            Some(Purpose::AskRandom | Purpose::AskNodes) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.peer = Some(hello);
                }
            }
            None => {}
        }
    }

    fn add_link(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        let id = hello.id.clone();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.intent = Some(Intent::Link);
            c.peer = Some(hello.clone());
            c.last_ping = now;
        }
        self.neighbours.insert(id.clone(), conn);
        self.suspects.remove(&id);
        self.retries.remove(&hello.addr);
        info!(peer = %id, addr = %hello.addr, degree = self.neighbours.len(), "linked");
    }

    /// Life proven by the member itself: add or revive it, and tell the network if that
    /// changed our view (a revival after a split, a restart on the same address).
    fn learn_first_hand(&mut self, now: Instant, hello: &Hello) {
        // A query from a stranger is a candidate, not a member yet.
        let known = self.members.get(&hello.id).is_some();
        if hello.intent == Intent::Query && !known {
            return;
        }
        let rec = MemberRecord {
            id: hello.id.clone(),
            addr: hello.addr.clone(),
            incarnation: hello.incarnation,
            state: MemberState::Alive,
        };
        let was_dead = known && !self.members.is_alive(&hello.id);
        if self.members.apply(&rec, Evidence::FirstHand, now) == Change::Added && was_dead {
            info!(member = %hello.id, "dead member is back; telling the network");
            let flood = Flood::revival(rec, &self.cfg.id, self.unix(now));
            if self.seen.insert(&flood.id, now) {
                self.forward(&flood, None);
            }
        }
        self.suspects.remove(&hello.id);
    }

    // ----- joining -----------------------------------------------------------------------

    fn advance_join(&mut self, now: Instant) {
        match &self.join {
            Join::Waiting { next } if now >= *next => {
                let addr = self.cfg.genesis[self.genesis_cursor % self.cfg.genesis.len()].clone();
                self.genesis_cursor += 1;
                self.join_attempt += 1;
                self.redirects_left = MAX_REDIRECTS;
                self.refused_for_room = false;
                info!(attempt = self.join_attempt, genesis = %addr, "asking genesis for a random peer");
                self.dial(now, addr, Purpose::AskRandom);
                self.join = Join::AskingRandom;
            }
            Join::Linking { pending, deadline } if pending.is_empty() || now >= *deadline => {
                self.finish_linking(now);
            }
            Join::Syncing { deadline } if now >= *deadline => {
                self.join_complete();
            }
            _ => {}
        }
        if matches!(self.join, Join::Joined) && !self.is_genesis() && self.neighbours.is_empty() {
            let others = self.members.alive_count().saturating_sub(1);
            let dialing = self.pending_links() > 0;
            if others == 0 && !dialing {
                warn!(
                    "lost every neighbour and knows no member; joining again through the genesis"
                );
                self.join = Join::Waiting { next: now };
                self.join_attempt = 0;
                self.join_full_refusals = 0;
            }
        }
    }

    fn join_failed(&mut self, now: Instant, why: &str) {
        let exp = self
            .join_attempt
            .saturating_sub(self.join_full_refusals)
            .min(16);
        let base = self
            .cfg
            .join_backoff_base
            .saturating_mul(1u32 << exp.min(10));
        let capped = base.min(self.cfg.join_backoff_max);
        let jitter = capped.mul_f64(self.rng.random_range(0.0..0.5));
        let wait = capped + jitter;
        warn!(attempt = self.join_attempt, retry_in = ?wait, "join failed: {why}");
        self.join = Join::Waiting { next: now + wait };
    }

    fn on_random_node(&mut self, now: Instant, conn: ConnId, node: Option<MemberRecord>) {
        if !matches!(self.join, Join::AskingRandom)
            || self.purpose(conn) != Some(Purpose::AskRandom)
        {
            return;
        }
        let genesis = self.conns.get(&conn).and_then(|c| c.dialed.clone());
        self.send(conn, Message::disconnect("thanks"));
        self.close_quietly(conn);
        match (node, genesis) {
            (Some(node), _) if node.id != self.cfg.id => {
                debug!(peer = %node.id, "genesis suggested a peer");
                self.dial(now, node.addr, Purpose::AskNodes);
                self.join = Join::AskingNodes;
            }
            (_, Some(genesis)) => {
                // The network is only the genesis: become its neighbour.
                let link = self.dial(now, genesis, Purpose::Link);
                self.join = Join::Linking {
                    pending: HashSet::from([link]),
                    deadline: now + self.cfg.hello_timeout * 2,
                };
            }
            (_, None) => self.join_failed(now, "no genesis address"),
        }
    }

    fn on_nodes_to_connect(&mut self, now: Instant, conn: ConnId, nodes: Vec<MemberRecord>) {
        if !matches!(self.join, Join::AskingNodes) || self.purpose(conn) != Some(Purpose::AskNodes)
        {
            return;
        }
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
        self.join = Join::Linking {
            pending,
            deadline: now + self.cfg.hello_timeout * 2,
        };
    }

    /// Is `conn` one of the links our join is waiting for?
    fn is_joining_link(&self, conn: ConnId) -> bool {
        matches!(&self.join, Join::Linking { pending, .. } if pending.contains(&conn))
    }

    /// A full node refused our join link and suggested its neighbours: try two of them.
    fn on_redirect(&mut self, now: Instant, nodes: Vec<MemberRecord>) {
        let dialing: HashSet<String> = self
            .conns
            .values()
            .filter_map(|c| c.dialed.clone())
            .collect();
        let fresh: Vec<MemberRecord> = nodes
            .into_iter()
            .filter(|n| {
                n.id != self.cfg.id
                    && !self.neighbours.contains_key(&n.id)
                    && !dialing.contains(&n.addr)
            })
            .take(2.min(self.redirects_left))
            .collect();
        self.redirects_left -= fresh.len();
        for node in fresh {
            debug!(peer = %node.id, "redirected; linking");
            let link = self.dial(now, node.addr, Purpose::Link);
            if let Join::Linking { pending, .. } = &mut self.join {
                pending.insert(link);
            }
        }
    }

    /// Up to `degree` random neighbours other than `except`, for a redirect.
    fn redirect_candidates(&mut self, except: &str) -> Vec<MemberRecord> {
        let mut ids: Vec<String> = self
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
    fn after_link_attempt(&mut self, now: Instant, conn: ConnId) {
        if let Join::Linking { pending, .. } = &mut self.join {
            pending.remove(&conn);
            if pending.is_empty() {
                self.finish_linking(now);
            }
        }
    }

    fn finish_linking(&mut self, now: Instant) {
        let quick = self.join_full_refusals < QUICK_REJOINS;
        if self.neighbours.is_empty() && self.refused_for_room && quick {
            // The network answered; the nodes we were pointed at were full. That is no
            // sign of trouble worth backing off for (early in a fast start, the first
            // nodes fill up): ask the genesis again for another random member, soon.
            self.join_full_refusals += 1;
            let wait = self
                .cfg
                .join_backoff_base
                .mul_f64(self.rng.random_range(0.25..0.75));
            debug!(retry_in = ?wait, "every node offered was full; asking again");
            self.join = Join::Waiting { next: now + wait };
            return;
        }
        if self.neighbours.is_empty() {
            self.join_failed(now, "could not link to any node");
            return;
        }
        let me = self.self_record();
        self.flood_event(now, MemberEvent::Joined { member: me });
        let first = self.neighbours.values().copied().min();
        if let Some(conn) = first {
            self.send(conn, Message::GiveNodesInNetwork);
        }
        self.join = Join::Syncing {
            deadline: now + self.cfg.hello_timeout,
        };
    }

    fn join_complete(&mut self) {
        if !matches!(self.join, Join::Joined) {
            info!(
                neighbours = self.neighbours.len(),
                members = self.members.alive_count(),
                "joined the network"
            );
        }
        self.join = Join::Joined;
        self.join_attempt = 0;
        self.join_full_refusals = 0;
    }

    // ----- membership --------------------------------------------------------------------

    fn on_member_list(&mut self, now: Instant, conn: ConnId, list: Vec<MemberRecord>) {
        let theirs: HashSet<&str> = list.iter().map(|r| r.id.as_str()).collect();
        // Members we believe alive that they do not know: verify them ourselves.
        let peer = self.peer_id(conn);
        let absent: Vec<(String, String)> = self
            .members
            .alive()
            .filter(|(id, _)| **id != self.cfg.id && !theirs.contains(id.as_str()))
            .filter(|(id, _)| peer.as_deref() != Some(id.as_str()))
            .filter(|(id, _)| !self.neighbours.contains_key(*id))
            .map(|(id, m)| (id.clone(), m.addr.clone()))
            .collect();
        for (id, addr) in absent {
            self.queue_probe(id, addr);
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
            if self.members.apply(&rec, Evidence::Hearsay, now) == Change::Added {
                debug!(member = %rec.id, "learned member from a list");
            }
        }
        if matches!(self.join, Join::Syncing { .. }) {
            self.join_complete();
        }
    }

    fn on_flood(&mut self, now: Instant, from: ConnId, mut flood: Flood) {
        if !self.seen.insert(&flood.id, now) {
            self.counters.duplicates_dropped += 1;
            // A neighbour that sent us a flood we have yet to pass on has it already.
            if let Some((_, skip)) = self
                .pending_forwards
                .iter_mut()
                .find(|(pending, _)| pending.id == flood.id)
            {
                skip.push(from);
            }
            return;
        }
        flood.hops = flood.hops.saturating_add(1);
        match flood.event.clone() {
            None => self.deliver(now, &flood),
            Some(event) => self.apply_event(now, event),
        }
        self.forward(&flood, Some(from));
    }

    fn apply_event(&mut self, now: Instant, event: MemberEvent) {
        match event {
            MemberEvent::Joined { member } => {
                if member.id == self.cfg.id {
                    return;
                }
                // A join flood is sent by the member itself, or by a node that just heard
                // from it: first-hand evidence.
                if self.members.apply(&member, Evidence::FirstHand, now) == Change::Added {
                    debug!(member = %member.id, "member joined");
                    self.suspects.remove(&member.id);
                    self.retries.remove(&member.addr);
                }
            }
            MemberEvent::Left { member } | MemberEvent::Dead { member }
                if member.id == self.cfg.id =>
            {
                if member.incarnation >= self.incarnation && member.state == MemberState::Dead {
                    self.incarnation = member.incarnation + 1;
                    self.members.set_self_incarnation(self.incarnation, now);
                    warn!(
                        incarnation = self.incarnation,
                        "declared dead by the network; refuting"
                    );
                    let me = self.self_record();
                    self.flood_event(now, MemberEvent::Joined { member: me });
                }
            }
            MemberEvent::Left { member } => {
                if self.members.apply(&member, Evidence::Hearsay, now) == Change::Removed {
                    info!(member = %member.id, "member left");
                }
                self.suspects.remove(&member.id);
                self.retries.remove(&member.addr);
            }
            MemberEvent::Dead { member } => {
                if self.members.apply(&member, Evidence::Hearsay, now) == Change::Removed {
                    info!(member = %member.id, "member declared dead");
                }
                self.suspects.remove(&member.id);
            }
        }
    }

    fn flood_event(&mut self, now: Instant, event: MemberEvent) {
        let flood = Flood::membership(event, &self.cfg.id, self.unix(now));
        if self.seen.insert(&flood.id, now) {
            self.forward(&flood, None);
        }
    }

    fn deliver(&mut self, now: Instant, flood: &Flood) {
        self.counters.delivered += 1;
        if self.delivered.len() >= self.cfg.delivered_capacity {
            self.delivered.pop_front();
        }
        self.delivered.push_back(DeliveredMessage {
            id: flood.id.clone(),
            title: flood.title.clone(),
            message: flood.message.clone(),
            origin: flood.origin.clone(),
            time: flood.time,
            hops: flood.hops,
            received_at: self.unix(now),
        });
    }

    /// Floods to every neighbour but `except`. User broadcasts go at once; membership
    /// events wait for the next tick, so that the events of a busy moment (hundreds of
    /// joins) travel together: a neighbour then wakes once per tick to read them all
    /// instead of once per event, and on a machine running many nodes it is the wake-ups,
    /// not the bytes, that cost. Each hop adds at most one tick to a membership change.
    ///
    /// Waiting has a second gain: copies of the same event that arrive from other
    /// neighbours meanwhile mark those links as served, so the flood costs fewer frames
    /// than one per link in each direction.
    fn forward(&mut self, flood: &Flood, except: Option<ConnId>) {
        let skip: Vec<ConnId> = except.into_iter().collect();
        if flood.event.is_some() {
            self.pending_forwards.push((flood.clone(), skip));
        } else {
            self.forward_now(flood, &skip);
        }
    }

    fn flush_forwards(&mut self) {
        for (flood, skip) in std::mem::take(&mut self.pending_forwards) {
            self.forward_now(&flood, &skip);
        }
    }

    fn forward_now(&mut self, flood: &Flood, skip: &[ConnId]) {
        let targets: Vec<ConnId> = self
            .neighbours
            .values()
            .copied()
            .filter(|c| !skip.contains(c))
            .collect();
        for conn in targets {
            self.send(conn, Message::Broadcast(flood.clone()));
        }
    }

    /// Anti-entropy repairs what floods missed; while members are still joining or
    /// leaving, tables differ because floods are still travelling, and comparing them
    /// would trade whole member lists (at 1,000 nodes, hundreds of KB a second per node)
    /// for differences that settle by themselves. So both sides wait for quiet.
    fn members_settled(&self, now: Instant) -> bool {
        self.members.stable_for(now) >= self.cfg.sync_interval / 2
    }

    fn send_digest(&mut self) {
        let links: Vec<ConnId> = self.neighbours.values().copied().collect();
        if let Some(conn) = links.choose(&mut self.rng).copied() {
            let msg = Message::MembersDigest {
                digest: self.members.digest(),
                count: self.members.alive_count(),
            };
            self.send(conn, msg);
        }
    }

    // ----- failure detection -------------------------------------------------------------

    fn check_connections(&mut self, now: Instant) {
        let mut silent = Vec::new();
        let mut stale = Vec::new();
        let mut pings = Vec::new();
        for (id, c) in &self.conns {
            if c.is_link() {
                let quiet = now.saturating_duration_since(c.last_heard);
                if quiet >= self.cfg.heartbeat_timeout {
                    silent.push(*id);
                }
                // Any frame from the peer proves it alive, its pings included: ping only a
                // link that has been quiet, so a link carries one ping-pong per interval
                // (the side whose clock runs out first asks) rather than one from each side.
                if quiet >= self.cfg.heartbeat_interval
                    && now.saturating_duration_since(c.last_ping) >= self.cfg.heartbeat_interval
                {
                    pings.push(*id);
                }
            } else {
                // Handshakes and queries are short; a socket that lingers is closed.
                let limit = match c.phase {
                    Phase::Open => self.cfg.hello_timeout * 3,
                    _ => self.cfg.hello_timeout,
                };
                if now.saturating_duration_since(c.opened_at) >= limit {
                    stale.push(*id);
                }
            }
        }
        for conn in pings {
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            if let Some(c) = self.conns.get_mut(&conn) {
                c.last_ping = now;
            }
            self.send(conn, Message::Ping { nonce });
        }
        // A silent link is kept open while its peer is a suspect: a slow peer that speaks
        // again clears the suspicion without a new link and without any flood. The link
        // is closed when the suspicion ends in a death, or when a probe finds the peer
        // alive but this link still silent (a broken connection, see on_hello_answer).
        for conn in silent {
            let Some(peer) = self.peer_id(conn) else {
                continue;
            };
            if !self.members.is_alive(&peer) {
                // Declared dead or gone by others, and silent here too: nothing to wait for.
                debug!(peer = %peer, "silent link to a member no longer alive; closing it");
                self.close(now, conn);
            } else if !self.suspects.contains_key(&peer) {
                warn!(peer = %peer, timeout = ?self.cfg.heartbeat_timeout, "neighbour stopped answering heartbeats");
                self.suspect(now, &peer);
            }
        }
        for conn in stale {
            debug!(conn, "connection timed out before completing");
            self.close(now, conn);
        }
    }

    fn suspect(&mut self, now: Instant, id: &str) {
        if id == self.cfg.id || self.leaving || !self.members.is_alive(id) {
            return;
        }
        let Some(addr) = self.members.get(id).map(|m| m.addr.clone()) else {
            return;
        };
        if !self.suspects.contains_key(id) {
            info!(member = %id, "suspecting member");
            self.suspects.insert(
                id.to_string(),
                Suspicion {
                    since: now,
                    addr,
                    next_probe: now,
                },
            );
        }
    }

    fn advance_suspicions(&mut self, now: Instant) {
        if self.suspects.is_empty() {
            return;
        }
        let timeout = self.suspect_timeout();
        let mut dead = Vec::new();
        let mut probe = Vec::new();
        for (id, s) in &mut self.suspects {
            if now.saturating_duration_since(s.since) >= timeout {
                dead.push(id.clone());
            } else if now >= s.next_probe {
                s.next_probe = now + self.cfg.heartbeat_interval;
                probe.push((id.clone(), s.addr.clone()));
            }
        }
        for (id, addr) in probe {
            self.queue_probe(id, addr);
        }
        for id in dead {
            self.declare_dead(now, &id);
        }
    }

    fn declare_dead(&mut self, now: Instant, id: &str) {
        let Some(s) = self.suspects.remove(id) else {
            return;
        };
        let Some(mut rec) = self.members.record(id) else {
            return;
        };
        if rec.state != MemberState::Alive {
            return;
        }
        rec.state = MemberState::Dead;
        warn!(member = %id, after = ?self.suspect_timeout(), "member unreachable; declaring it dead");
        self.counters.members_declared_dead += 1;
        self.members.apply(&rec, Evidence::Hearsay, now);
        if let Some(conn) = self.neighbours.get(id).copied() {
            self.close(now, conn);
        }
        self.add_retry(now, s.addr);
        self.flood_event(now, MemberEvent::Dead { member: rec });
    }

    fn queue_probe(&mut self, id: String, addr: String) {
        let queued = self.probe_queue.iter().any(|(q, _)| *q == id);
        let in_flight = self
            .conns
            .values()
            .any(|c| matches!(&c.purpose, Some(Purpose::Probe { id: p, .. }) if *p == id));
        if !queued && !in_flight && self.probe_queue.len() < self.cfg.max_members {
            self.probe_queue.push_back((id, addr));
        }
    }

    fn run_probes(&mut self, now: Instant) {
        let mut in_flight = self
            .conns
            .values()
            .filter(|c| matches!(c.purpose, Some(Purpose::Probe { .. })))
            .count();
        while in_flight < self.cfg.max_probes {
            let Some((id, addr)) = self.probe_queue.pop_front() else {
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
    /// way; with one probe per node per period, the survivors find them within seconds. (Found by the simulator's partition
    /// test: each half kept the other's unlinked members alive indefinitely.)
    fn probe_random_member(&mut self) {
        let mut others: Vec<(String, String)> = self
            .members
            .alive()
            .filter(|(id, _)| {
                **id != self.cfg.id
                    && !self.neighbours.contains_key(*id)
                    && !self.suspects.contains_key(*id)
            })
            .map(|(id, m)| (id.clone(), m.addr.clone()))
            .collect();
        others.sort();
        if let Some((id, addr)) = others.choose(&mut self.rng).cloned() {
            self.queue_probe(id, addr);
        }
    }

    fn probe_failed(&mut self, now: Instant, id: &str) {
        // An alive member we cannot reach becomes a suspect; a dead one stays dead.
        if self.members.is_alive(id) && !self.neighbours.contains_key(id) {
            self.suspect(now, id);
        }
    }

    // ----- repair and re-merge -----------------------------------------------------------

    fn pending_links(&self) -> usize {
        self.conns
            .values()
            .filter(|c| c.phase != Phase::Open && matches!(c.purpose, Some(Purpose::Link)))
            .count()
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

    fn repair_degree(&mut self, now: Instant) {
        let have = self.neighbours.len() + self.pending_links();
        let target = self.effective_degree();
        if have >= target {
            return;
        }
        let dialing: HashSet<String> = self
            .conns
            .values()
            .filter_map(|c| c.dialed.clone())
            .collect();
        let mut candidates: Vec<(String, String)> = self
            .members
            .alive()
            .filter(|(id, m)| {
                **id != self.cfg.id
                    && !self.neighbours.contains_key(*id)
                    && !self.suspects.contains_key(*id)
                    && !self.link_cooldown.contains_key(*id)
                    && !dialing.contains(&m.addr)
            })
            .map(|(id, m)| (id.clone(), m.addr.clone()))
            .collect();
        candidates.sort();
        candidates.shuffle(&mut self.rng);
        for (id, addr) in candidates.into_iter().take(target - have) {
            debug!(peer = %id, "under target degree; linking");
            self.link_cooldown
                .insert(id, now + self.cfg.hello_timeout * 2);
            self.dial(now, addr, Purpose::Link);
        }
    }

    fn add_retry(&mut self, now: Instant, addr: String) {
        if self.retries.len() >= self.cfg.max_retries && !self.retries.contains_key(&addr) {
            return;
        }
        self.retries.entry(addr).or_insert(Retry {
            next: now + self.cfg.join_backoff_base,
            backoff: self.cfg.join_backoff_base,
            until: Some(now + self.cfg.retry_for),
            in_flight: false,
        });
    }

    fn run_retries(&mut self, now: Instant) {
        self.retries
            .retain(|_, r| r.until.is_none_or(|until| now < until));
        let due: Vec<String> = self
            .retries
            .iter()
            .filter(|(_, r)| !r.in_flight && now >= r.next)
            .map(|(addr, _)| addr.clone())
            .collect();
        for addr in due {
            if self.reachable_member_at(&addr) {
                // A living member answers there: nothing to merge. Look again later rather
                // than on every tick (finding it is a scan of the whole member table).
                if let Some(r) = self.retries.get_mut(&addr) {
                    r.next = now + self.cfg.retry_backoff_max;
                }
                continue;
            }
            if self.neighbours.len() >= self.cfg.max_peers {
                break;
            }
            if let Some(r) = self.retries.get_mut(&addr) {
                r.in_flight = true;
                r.next = now + r.backoff;
                r.backoff = (r.backoff * 2).min(self.cfg.retry_backoff_max);
            }
            debug!(addr = %addr, "retrying a dead member or genesis address");
            self.dial(now, addr, Purpose::Retry);
        }
    }

    // ----- plumbing ----------------------------------------------------------------------

    fn alloc_conn(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        id
    }

    fn dial(&mut self, now: Instant, addr: String, purpose: Purpose) -> ConnId {
        let conn = self.alloc_conn();
        self.conns.insert(
            conn,
            Conn {
                purpose: Some(purpose),
                dialed: Some(addr.clone()),
                phase: Phase::Dialing,
                intent: None,
                peer: None,
                opened_at: now,
                last_heard: now,
                last_ping: now,
            },
        );
        self.out.push_back(Output::Dial { conn, addr });
        conn
    }

    fn send(&mut self, conn: ConnId, msg: Message) {
        self.out.push_back(Output::Send { conn, msg });
    }

    fn refuse(&mut self, now: Instant, conn: ConnId, refusal: Message) {
        self.send(conn, refusal);
        self.close(now, conn);
    }

    /// Closes a connection on our initiative and handles the consequences.
    fn close(&mut self, now: Instant, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.out.push_back(Output::Close { conn });
        }
        self.forget(now, conn, false);
    }

    /// Closes a connection that finished its job; nothing else follows from it.
    fn close_quietly(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.out.push_back(Output::Close { conn });
        }
    }

    /// Drops the bookkeeping of a connection that is gone, and reacts to its loss.
    fn forget(&mut self, now: Instant, conn: ConnId, superseded: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let peer_id = c.peer.as_ref().map(|p| p.id.clone());
        if let Some(id) = &peer_id {
            if self.neighbours.get(id) == Some(&conn) {
                self.neighbours.remove(id);
                info!(peer = %id, degree = self.neighbours.len(), "link lost");
                if !self.leaving {
                    self.suspect(now, id);
                }
            }
        }
        if let (Some(Purpose::Link), true) = (&c.purpose, c.phase != Phase::Open) {
            self.after_link_attempt(now, conn);
        }
        if superseded {
            return;
        }
        match c.purpose {
            Some(Purpose::AskRandom) if matches!(self.join, Join::AskingRandom) => {
                self.join_failed(now, "genesis did not answer");
            }
            Some(Purpose::AskNodes) if matches!(self.join, Join::AskingNodes) => {
                self.join_failed(now, "the suggested peer did not answer");
            }
            Some(Purpose::Retry) => {
                if let Some(addr) = &c.dialed {
                    if let Some(r) = self.retries.get_mut(addr) {
                        r.in_flight = false;
                    }
                }
            }
            Some(Purpose::Probe { id, .. }) if c.phase != Phase::Open || c.peer.is_none() => {
                self.probe_failed(now, &id);
            }
            _ => {}
        }
    }

    /// Is a living member known at this address (or at the alias we dialed it by)?
    fn reachable_member_at(&self, addr: &str) -> bool {
        self.members.alive_at(addr)
            || self
                .aliases
                .get(addr)
                .is_some_and(|id| self.members.is_alive(id))
    }

    fn purpose(&self, conn: ConnId) -> Option<Purpose> {
        self.conns.get(&conn).and_then(|c| c.purpose.clone())
    }

    fn peer_id(&self, conn: ConnId) -> Option<String> {
        self.conns
            .get(&conn)
            .and_then(|c| c.peer.as_ref())
            .map(|p| p.id.clone())
    }

    fn hello(&self, intent: Intent) -> Message {
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            id: self.cfg.id.clone(),
            addr: self.cfg.addr.clone(),
            incarnation: self.incarnation,
            intent,
        })
    }

    fn self_record(&self) -> MemberRecord {
        MemberRecord {
            id: self.cfg.id.clone(),
            addr: self.cfg.addr.clone(),
            incarnation: self.incarnation,
            state: MemberState::Alive,
        }
    }

    /// A random living member for a candidate to join through (never ourselves nor the
    /// asker). The seed protocol picks among the genesis's own neighbours, but they are the
    /// oldest nodes and the first to be full: late candidates all land on the same crowded
    /// core, are refused there again and again, and the genesis neighbourhood is where every
    /// link gets made. Any member spreads joins, and links, over the whole network.
    fn random_member_except(&mut self, except: Option<&str>) -> Option<MemberRecord> {
        let own = self.cfg.id.as_str();
        let candidates: Vec<&String> = self
            .members
            .alive()
            .map(|(id, _)| id)
            .filter(|id| id.as_str() != own && Some(id.as_str()) != except)
            .collect();
        let id = candidates.choose(&mut self.rng)?;
        self.members.record(id)
    }

    /// A random subset of our neighbours plus ourselves: at least two where we can.
    fn nodes_to_connect(&mut self, except: Option<&str>) -> Vec<MemberRecord> {
        let mut ids: Vec<String> = self
            .neighbours
            .keys()
            .filter(|id| Some(id.as_str()) != except)
            .cloned()
            .collect();
        ids.sort();
        ids.shuffle(&mut self.rng);
        let want = self.cfg.degree.max(2).saturating_sub(1);
        // A full node would only refuse the link it offers.
        let full = self.neighbours.len() >= self.cfg.max_peers;
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

    fn unix(&self, now: Instant) -> f64 {
        self.cfg.unix_start + now.saturating_duration_since(self.start).as_secs_f64()
    }
}
