//! Connections and links: what the machine knows of each connection, the hello handshake
//! that tells who is behind one, and the links (connections both sides keep as
//! neighbours). Dialing, sending and closing go through here, and so does the reaction to
//! a lost connection, which each purpose hands back to its part.
//!
//! # The handshake
//!
//! The dialer sends `hello` (id, address, incarnation, intent, key, a fresh nonce, and its
//! signed alive record). The other side checks it (version, key binding, room) and answers
//! with its own `hello` and a `hello-proof`: its signature over the dialer's nonce and its
//! own hello fields. The dialer verifies that proof, sends its own proof of the other
//! side's nonce, and only then acts on the connection (asks its question, links). The
//! other side opens the connection when the dialer's proof verifies. A bad or missing proof
//! closes the connection with a logged reason; a connection counts as identified, and its
//! hello as evidence of life, only after the proof.

use std::collections::BTreeMap;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::{ConnId, Machine, Output};
use crate::node::identity::{self, verify_hello_proof};
use crate::node::logsafe::clip;
use crate::node::members::Change;
use crate::node::wire::{Hello, Intent, Message, PROTOCOL_VERSION};

/// Why we opened an outbound connection.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Purpose {
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
    /// Is this member alive? asks the neighbour on `requester` (a `probe-request`): our
    /// hello carries its `nonce`, so that the member's proof is one it can check.
    Relay {
        requester: ConnId,
        member: String,
        nonce: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Dialing,
    /// Connected; waiting for the other side's hello.
    Handshaking,
    /// Its hello was accepted; waiting for its proof of key (`hello-proof`).
    Proving,
    Open,
}

#[derive(Debug)]
pub(super) struct Conn {
    /// `None` for inbound connections.
    pub purpose: Option<Purpose>,
    /// Address we dialed (outbound only).
    pub dialed: Option<String>,
    pub phase: Phase,
    pub intent: Option<Intent>,
    pub peer: Option<Hello>,
    /// The peer's hello, until the driver admits it ([`Output::Identified`]).
    pub held_hello: Option<Hello>,
    /// The nonce of our hello on this connection, which the peer's proof must sign.
    pub nonce: String,
    /// The peer's admitted hello, until its proof verifies.
    pub unproven: Option<Hello>,
    pub opened_at: Instant,
    pub last_heard: Instant,
    /// When we last pinged it (or, for a fresh link, when it was made).
    pub last_ping: Instant,
}

impl Conn {
    fn new(purpose: Option<Purpose>, dialed: Option<String>, phase: Phase, now: Instant) -> Self {
        Conn {
            purpose,
            dialed,
            phase,
            intent: None,
            peer: None,
            held_hello: None,
            nonce: String::new(),
            unproven: None,
            opened_at: now,
            last_heard: now,
            last_ping: now,
        }
    }

    pub fn is_link(&self) -> bool {
        self.phase == Phase::Open && self.intent == Some(Intent::Link)
    }
}

/// The connection table and the neighbour index over it.
pub(super) struct Links {
    next_conn: ConnId,
    pub conns: BTreeMap<ConnId, Conn>,
    /// Neighbour id -> its link connection.
    pub neighbours: BTreeMap<String, ConnId>,
    pub next_nonce: u64,
}

impl Links {
    pub fn new() -> Self {
        Links {
            next_conn: 1,
            conns: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            next_nonce: 1,
        }
    }

    fn alloc(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        id
    }

    /// Registers an accepted connection.
    pub fn accept(&mut self, now: Instant) -> ConnId {
        let conn = self.alloc();
        self.conns
            .insert(conn, Conn::new(None, None, Phase::Handshaking, now));
        conn
    }

    /// Inbound links accepted at their hello and waiting for the dialer's proof.
    pub fn proving_inbound_links(&self) -> usize {
        self.conns
            .values()
            .filter(|c| {
                c.purpose.is_none() && c.phase == Phase::Proving && c.intent == Some(Intent::Link)
            })
            .count()
    }

    /// Link attempts not yet open.
    pub fn pending_links(&self) -> usize {
        self.conns
            .values()
            .filter(|c| c.phase != Phase::Open && matches!(c.purpose, Some(Purpose::Link)))
            .count()
    }

    pub fn purpose(&self, conn: ConnId) -> Option<Purpose> {
        self.conns.get(&conn).and_then(|c| c.purpose.clone())
    }

    pub fn peer_id(&self, conn: ConnId) -> Option<String> {
        self.conns
            .get(&conn)
            .and_then(|c| c.peer.as_ref())
            .map(|p| p.id.clone())
    }

    /// Addresses of our outbound connections.
    pub fn dialed_addrs(&self) -> std::collections::HashSet<String> {
        self.conns
            .values()
            .filter_map(|c| c.dialed.clone())
            .collect()
    }
}

impl Machine {
    /// Handshakes and queries are short; a socket that lingers is closed. The earliest
    /// such deadline, the next round at which a link is due a ping, and silences.
    pub(super) fn links_deadline(&self) -> Option<Instant> {
        let stale = self
            .links
            .conns
            .values()
            .filter(|c| !c.is_link())
            .map(|c| c.opened_at + self.handshake_limit(c))
            .min();
        let pings = self
            .links
            .conns
            .values()
            .filter(|c| c.is_link())
            .map(|c| self.ping_due(c))
            .min();
        [stale, pings, self.silence_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn handshake_limit(&self, c: &Conn) -> std::time::Duration {
        match (&c.phase, &c.purpose) {
            (Phase::Open, _) => self.cfg.hello_timeout * 3,
            (_, Some(Purpose::Probe { id, .. })) => self.probe_limit(id),
            (_, Some(Purpose::Relay { .. })) => self.short_probe_limit(),
            _ => self.cfg.hello_timeout,
        }
    }

    pub(super) fn connected(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.links.conns.get_mut(&conn) else {
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
        // A probe made for a neighbour asks with the neighbour's nonce: the member's
        // proof then convinces the neighbour itself, not only us.
        let nonce = match &c.purpose {
            Some(Purpose::Relay { nonce, .. }) => nonce.clone(),
            _ => identity::nonce(),
        };
        c.nonce = nonce.clone();
        // The question waits for the other side's proof: until then we do not know whom
        // we would be asking.
        let hello = self.hello(intent, nonce);
        self.send(conn, hello);
    }

    /// One frame, on a connection we know.
    pub(super) fn frame(&mut self, now: Instant, conn: ConnId, msg: Message) {
        let Some(c) = self.links.conns.get_mut(&conn) else {
            return;
        };
        c.last_heard = now;
        if c.is_link()
            && let Some(peer) = c.peer.as_ref().map(|p| p.id.clone())
            && self.detector.suspects.remove(&peer).is_some()
        {
            info!(member = %clip(&peer), "suspected neighbour spoke again; alive");
        }
        let Some(c) = self.links.conns.get(&conn) else {
            return;
        };
        let phase = c.phase;
        if phase != Phase::Open {
            match msg {
                Message::Hello(hello)
                    if phase == Phase::Handshaking && !self.hello_within_limits(conn, &hello) =>
                {
                    self.refuse(now, conn, Message::disconnect("id or address refused"));
                }
                Message::Hello(hello) if phase == Phase::Handshaking => {
                    // Tell the driver who this is before acting on it: its faults may
                    // drop this peer's frames, this hello included.
                    self.out.push_back(Output::Identified {
                        conn,
                        id: hello.id.clone(),
                        addr: hello.addr.clone(),
                    });
                    if let Some(c) = self.links.conns.get_mut(&conn) {
                        c.held_hello = Some(hello);
                    }
                }
                Message::HelloProof { sig, mac } if phase == Phase::Proving => {
                    self.on_hello_proof(now, conn, &sig, mac.as_deref());
                }
                Message::Disconnect { reason, full } => {
                    debug!(conn, reason = %clip(&reason), "refused");
                    if full && self.is_joining_link(conn) {
                        self.join.refused_for_room = true;
                    }
                    self.close(now, conn);
                }
                Message::NodesToConnect { nodes } if self.is_joining_link(conn) => {
                    self.on_redirect(now, conn, nodes);
                }
                Message::NodesToConnect { .. } if self.links.purpose(conn).is_some() => {
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
            Message::Hello(_) | Message::HelloProof { .. } => {
                warn!(
                    conn,
                    kind = msg.kind(),
                    "second handshake frame; closing connection"
                );
                self.counters.bad_frames += 1;
                self.close(now, conn);
            }
            Message::Disconnect { reason, .. } => {
                debug!(conn, reason = %clip(&reason), "peer disconnects");
                self.close(now, conn);
            }
            Message::Ping { nonce } => self.on_ping(now, conn, nonce),
            Message::Pong { .. } => {}
            Message::AskRandomNode => {
                let node = self.random_member_except(self.links.peer_id(conn).as_deref());
                self.send(conn, Message::RandomNode { node });
            }
            Message::AskNodesToConnect => {
                let nodes = self.nodes_to_connect(self.links.peer_id(conn).as_deref());
                self.send(conn, Message::NodesToConnect { nodes });
            }
            Message::GiveNodesInNetwork => self.send_member_list(conn),
            Message::RandomNode { node } => self.on_random_node(now, conn, node),
            Message::NodesToConnect { nodes } => self.on_nodes_to_connect(now, conn, nodes),
            Message::NodesInNetwork { members, more } if is_link => {
                self.on_member_list(now, conn, members, more);
            }
            Message::NodesInNetwork { .. } => {
                // Lists are pushed on links only (anti-entropy, a merge); a stranger's
                // query connection has no say in our membership.
                debug!(conn, "member list on a query connection; ignored");
            }
            Message::MembersDigest { digest, .. } => self.on_digest(now, conn, digest),
            Message::ProbeRequest {
                member,
                addr,
                nonce,
            } => self.on_probe_request(now, conn, member, addr, nonce),
            Message::ProbeAnswer {
                member,
                nonce,
                proof,
            } => self.on_probe_answer(now, conn, member, nonce, proof),
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

    // ----- handshake ---------------------------------------------------------------------

    pub(super) fn on_hello(&mut self, now: Instant, conn: ConnId, hello: Hello) {
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
        // Its own record must be signed by the key it names, and that key must be the one
        // the id is bound to while the id lives.
        if !hello.record().verify() {
            warn!(conn, peer = %hello.id, "hello with a bad record signature; closing connection");
            self.note_refusal(&hello.id, Change::BadSignature);
            self.refuse(now, conn, Message::disconnect("bad record signature"));
            return;
        }
        if self.members.key_conflict(&hello.id, &hello.key) {
            self.note_refusal(&hello.id, Change::KeyConflict);
            self.refuse(
                now,
                conn,
                Message::disconnect("this id belongs to a living member with another key"),
            );
            return;
        }
        let outbound = self
            .links
            .conns
            .get(&conn)
            .is_some_and(|c| c.purpose.is_some());
        if outbound {
            // Prove our key in answer to its nonce; act once it has proven its own.
            let proof = self.proof_for(conn, &hello);
            self.send(conn, proof);
            if let Some(c) = self.links.conns.get_mut(&conn) {
                c.phase = Phase::Proving;
                c.unproven = Some(hello);
            }
        } else {
            self.on_hello_inbound(now, conn, hello);
        }
    }

    /// Our `hello-proof` for the peer whose hello is `theirs`, on `conn`.
    fn proof_for(&self, conn: ConnId, theirs: &Hello) -> Message {
        let intent = self
            .links
            .conns
            .get(&conn)
            .and_then(|c| c.intent)
            .unwrap_or(theirs.intent);
        Message::HelloProof {
            mac: self
                .cfg
                .network_key
                .as_ref()
                .map(|k| k.mac(&theirs.nonce, &self.cfg.id)),
            sig: self.cfg.identity.hello_proof(
                &theirs.nonce,
                &self.cfg.id,
                &self.cfg.addr,
                self.incarnation,
                intent.name(),
            ),
        }
    }

    /// The peer's proof of its key: verified against the nonce we sent, it opens the
    /// connection; anything else closes it.
    fn on_hello_proof(&mut self, now: Instant, conn: ConnId, sig: &str, mac: Option<&str>) {
        let Some(c) = self.links.conns.get_mut(&conn) else {
            return;
        };
        let Some(hello) = c.unproven.take() else {
            return;
        };
        let valid = verify_hello_proof(
            &c.nonce,
            &hello.id,
            &hello.key,
            &hello.addr,
            hello.incarnation,
            hello.intent.name(),
            sig,
        );
        let member = match (&self.cfg.network_key, mac) {
            (None, _) => true,
            (Some(key), Some(mac)) => key.verify(&c.nonce, &hello.id, mac),
            (Some(_), None) => false,
        };
        if valid && !member {
            warn!(conn, peer = %hello.id, "hello proof without this network's key; closing connection");
            self.note_refusal(&hello.id, Change::NotOfNetwork);
            self.refuse(
                now,
                conn,
                Message::disconnect("not of this network (network key)"),
            );
            return;
        }
        if !valid {
            warn!(conn, peer = %hello.id, "hello proof does not verify; closing connection");
            self.note_refusal(&hello.id, Change::BadSignature);
            self.refuse(now, conn, Message::disconnect("bad hello proof"));
            return;
        }
        let outbound = c.purpose.is_some();
        if outbound {
            // The node itself says it is alive: the strongest evidence there is.
            self.learn_first_hand(now, &hello);
            if matches!(self.links.purpose(conn), Some(Purpose::Relay { .. })) {
                self.relay_answered(conn, &hello, sig);
                return;
            }
            let question = match self.links.purpose(conn) {
                Some(Purpose::AskRandom) => Some(Message::AskRandomNode),
                Some(Purpose::AskNodes) => Some(Message::AskNodesToConnect),
                _ => None,
            };
            if let Some(q) = question {
                self.send(conn, q);
            }
            self.on_hello_answer(now, conn, hello);
        } else {
            self.open_inbound(now, conn, hello);
        }
    }

    fn on_hello_inbound(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        if hello.intent == Intent::Link {
            if self.links.neighbours.contains_key(&hello.id) {
                self.refuse(now, conn, Message::disconnect("already linked"));
                return;
            }
            // Both dialed at once: keep the connection opened by the smaller id.
            let crossing = self.links.conns.iter().find_map(|(id, c)| {
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
            // Links still proving their key hold a slot: a proof that finds the node full
            // would tear down a link its dialer already counts.
            if self.links.neighbours.len() + self.links.proving_inbound_links()
                >= self.cfg.max_peers
            {
                // Point the candidate at our neighbours: the nodes near the genesis fill up
                // first, and a redirect saves it a whole new join attempt.
                let nodes = self.redirect_candidates(&hello.id);
                self.send(conn, Message::NodesToConnect { nodes });
                self.refuse(now, conn, Message::no_room());
                return;
            }
        }
        // Accepted so far: answer with our hello and our proof, and wait for its proof.
        let nonce = identity::nonce();
        let answer = self.hello(hello.intent, nonce.clone());
        if let Some(c) = self.links.conns.get_mut(&conn) {
            c.intent = Some(hello.intent);
            c.nonce = nonce;
        }
        self.send(conn, answer);
        let proof = self.proof_for(conn, &hello);
        self.send(conn, proof);
        if let Some(c) = self.links.conns.get_mut(&conn) {
            c.phase = Phase::Proving;
            c.unproven = Some(hello);
        }
    }

    /// An inbound connection whose peer proved its key.
    fn open_inbound(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        if hello.intent == Intent::Link {
            // The table may have moved while it proved itself.
            if self.links.neighbours.contains_key(&hello.id) {
                self.refuse(now, conn, Message::disconnect("already linked"));
                return;
            }
        }
        // Only now does its hello count as evidence (a refused stranger is no member).
        self.learn_first_hand(now, &hello);
        if let Some(c) = self.links.conns.get_mut(&conn) {
            c.phase = Phase::Open;
            c.intent = Some(hello.intent);
        }
        if hello.intent == Intent::Link {
            self.add_link(now, conn, hello);
        } else if let Some(c) = self.links.conns.get_mut(&conn) {
            c.peer = Some(hello);
        }
    }

    fn on_hello_answer(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        let Some(c) = self.links.conns.get_mut(&conn) else {
            return;
        };
        c.phase = Phase::Open;
        let purpose = c.purpose.clone();
        match purpose {
            Some(Purpose::Link | Purpose::Retry) => {
                if let Some(dialed) = c.dialed.clone()
                    && dialed != hello.addr
                {
                    self.repair.aliases.insert(dialed, hello.id.clone());
                }
                // Our own dials respect the cap as much as what others ask of us: several
                // links (joins, repairs, retries) may complete at once.
                let full = self.links.neighbours.len() >= self.cfg.max_peers;
                if full || self.links.neighbours.contains_key(&hello.id) {
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
                    self.send_member_list(conn);
                    self.send(conn, Message::GiveNodesInNetwork);
                }
                self.after_link_attempt(now, conn);
            }
            Some(Purpose::Probe { id, .. }) => self.on_probe_answered(now, conn, &id),
            // Answered in `on_hello_proof`, which closes it.
            Some(Purpose::Relay { .. }) => {}
            Some(Purpose::AskRandom | Purpose::AskNodes) => {
                if let Some(c) = self.links.conns.get_mut(&conn) {
                    c.peer = Some(hello);
                }
            }
            None => {}
        }
    }

    fn add_link(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        let id = hello.id.clone();
        if let Some(c) = self.links.conns.get_mut(&conn) {
            c.intent = Some(Intent::Link);
            c.peer = Some(hello.clone());
            c.last_ping = now;
        }
        self.links.neighbours.insert(id.clone(), conn);
        self.detector.suspects.remove(&id);
        self.repair.retries.remove(&hello.addr);
        info!(peer = %clip(&id), addr = %clip(&hello.addr), degree = self.links.neighbours.len(), "linked");
    }

    pub(super) fn hello(&self, intent: Intent, nonce: String) -> Message {
        let me = self.self_record();
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            id: me.id,
            addr: me.addr,
            incarnation: me.incarnation,
            intent,
            key: me.key,
            nonce,
            sig: me.sig,
        })
    }

    // ----- plumbing ----------------------------------------------------------------------

    pub(super) fn dial(&mut self, now: Instant, addr: String, purpose: Purpose) -> ConnId {
        let conn = self.links.alloc();
        self.links.conns.insert(
            conn,
            Conn::new(Some(purpose), Some(addr.clone()), Phase::Dialing, now),
        );
        let known_as = self
            .members
            .alive()
            .filter(|(_, m)| m.addr == addr)
            .map(|(id, _)| id.clone())
            .collect();
        self.out.push_back(Output::Dial {
            conn,
            addr,
            known_as,
        });
        conn
    }

    pub(super) fn send(&mut self, conn: ConnId, msg: Message) {
        self.out.push_back(Output::Send { conn, msg });
    }

    pub(super) fn refuse(&mut self, now: Instant, conn: ConnId, refusal: Message) {
        self.send(conn, refusal);
        self.close(now, conn);
    }

    /// Closes a connection on our initiative and handles the consequences.
    pub(super) fn close(&mut self, now: Instant, conn: ConnId) {
        if self.links.conns.contains_key(&conn) {
            self.out.push_back(Output::Close { conn });
        }
        self.forget(now, conn, false);
    }

    /// Closes a connection that finished its job; nothing else follows from it.
    pub(super) fn close_quietly(&mut self, conn: ConnId) {
        self.forget_bounds(conn);
        if self.links.conns.remove(&conn).is_some() {
            self.out.push_back(Output::Close { conn });
        }
    }

    /// Drops the bookkeeping of a connection that is gone, and reacts to its loss.
    pub(super) fn forget(&mut self, now: Instant, conn: ConnId, superseded: bool) {
        let Some(c) = self.links.conns.remove(&conn) else {
            return;
        };
        self.forget_bounds(conn);
        let peer_id = c.peer.as_ref().map(|p| p.id.clone());
        if let Some(id) = &peer_id
            && self.links.neighbours.get(id) == Some(&conn)
        {
            self.links.neighbours.remove(id);
            info!(peer = %clip(id), degree = self.links.neighbours.len(), "link lost");
            if !self.leaving {
                self.suspect(now, id);
            }
        }
        if let (Some(Purpose::Link), true) = (&c.purpose, c.phase != Phase::Open) {
            self.after_link_attempt(now, conn);
        }
        if c.is_link() {
            self.indirect_helper_gone(now, conn);
        }
        if superseded {
            return;
        }
        match c.purpose {
            Some(Purpose::AskRandom | Purpose::AskNodes) => {
                self.join_query_lost(now, c.purpose.as_ref());
            }
            Some(Purpose::Retry) => {
                if let Some(addr) = &c.dialed {
                    self.retry_ended(addr);
                }
            }
            Some(Purpose::Probe { id, .. }) if c.phase != Phase::Open || c.peer.is_none() => {
                self.probe_failed(now, &id);
            }
            Some(Purpose::Relay {
                requester,
                member,
                nonce,
            }) => self.relay_failed(requester, member, nonce),
            _ => {}
        }
    }
}
