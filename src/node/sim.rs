//! A deterministic in-memory network for testing [`Machine`]s together.
//!
//! The machine is sans-IO, so a whole network of them can run inside one test: this module
//! is the switch between them. It plays the driver's part for every node: `Dial` becomes a
//! pipe (`on_connected` on the dialer, `on_accepted` on the target) or `on_dial_failed`;
//! `Send` becomes `on_frame` on the other end; `Close` becomes `on_closed` there; an
//! `Identified` hello is admitted at once. Time is virtual (a fixed `Instant` plus an
//! offset, stepped in steps of [`TICK`]); at each step a node runs
//! [`Machine::handle_timeout`] only if its [`Machine::poll_timeout`] has come, as the real
//! driver does. Events are kept in one queue ordered by (time, sequence number), nodes are
//! visited in address order and every seed is fixed, so a run repeats exactly and a
//! failing test fails every time.
//!
//! Outside the crate's own tests it is available with the cargo feature `sim`, for
//! simulation runtimes and users' tests of the protocol:
//!
//! ```ignore
//! use peerlab::node::sim::Sim;
//! let mut sim = Sim::new();
//! sim.spawn("n00", &[]);
//! sim.spawn("n01", &["n00"]);
//! sim.run_until(std::time::Duration::from_secs(30), |s| s.check_formed(1).is_ok());
//! ```
//!
//! Faults mimic what the real driver can see: a killed node's peers get their connections
//! closed; a frozen node behaves like a paused process (the kernel still accepts dials and
//! buffers frames, nothing is answered until it is thawed); partitions drop
//! frames, FINs and dials across them, like a black-holing network; a one-way cut
//! ([`Sim::cut`]) drops what one node sends another, and their dials.

mod checks;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests_broadcast;
#[cfg(test)]
mod tests_broadcast_bounds;
#[cfg(test)]
mod tests_failure;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod tests_identity;
#[cfg(test)]
mod tests_indirect;
#[cfg(test)]
mod tests_join;
#[cfg(test)]
mod tests_partition;
#[cfg(test)]
mod tests_timers;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::identity::Identity;
use super::machine::{Config, ConnId, Machine, MachineCounters, Output};
use super::wire::{MemberEvent, Message};
use crate::contract::DeliveredMessage;

/// The simulator's time step: events due within one step are delivered together, and
/// nodes whose deadline has come run their timers at its end.
pub const TICK: Duration = Duration::from_millis(100);

/// Events one delivery round may process before we call it a storm (a protocol loop).
const STORM_LIMIT: usize = 2_000_000;

/// Address of the far end of raw connections: a client that is not a simulated node.
const RAW: &str = "raw-client";

/// The listen address the simulator gives the node called `name`.
pub fn addr_of(name: &str) -> String {
    format!("{name}:7070")
}

/// A node's configuration with the defaults, a seed fixed by its name and `genesis` given
/// as node names.
pub fn node_config(name: &str, genesis: &[&str]) -> Config {
    let mut cfg = Config::new(name, addr_of(name));
    cfg.genesis = genesis.iter().map(|g| addr_of(g)).collect();
    // FNV-1a of the name: a fixed, distinct seed per node.
    cfg.seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // The key from the seed too, so that a run repeats byte for byte.
    cfg.identity = Identity::from_rng(&mut StdRng::seed_from_u64(cfg.seed));
    cfg
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Paused: events wait in its backlog, its timers do not run.
    Frozen,
    /// Killed or left: dials fail, frames are dropped.
    Gone,
}

struct Node {
    machine: Machine,
    state: State,
    /// Partition group; nodes talk only within one group.
    group: u32,
    backlog: VecDeque<Event>,
}

/// Index into a pipe's ends.
const DIALER: usize = 0;
const TARGET: usize = 1;

struct End {
    addr: String,
    /// The machine's id for this end; `None` until the target accepts.
    conn: Option<ConnId>,
    open: bool,
    /// Delivery time of the last event queued towards this end (keeps each direction FIFO).
    last: Duration,
}

struct Pipe {
    ends: [End; 2],
}

enum Event {
    Connected {
        pipe: u64,
    },
    Accept {
        pipe: u64,
    },
    DialFailed {
        conn: ConnId,
    },
    /// Boxed: a hello with its key, nonce and signature is far larger than other events.
    Frame {
        pipe: u64,
        to: usize,
        msg: Box<Message>,
    },
    Closed {
        pipe: u64,
        to: usize,
    },
}

/// A membership event seen on the wire for the first time.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    /// Virtual time since the simulation started.
    pub at: Duration,
    /// Name of the node that put it on the wire first.
    pub origin: String,
    /// What happened.
    pub event: MemberEvent,
}

/// A simulated network: nodes (machines), the pipes between them, a virtual clock and the
/// faults in force. See the module docs.
pub struct Sim {
    base: Instant,
    elapsed: Duration,
    latency: Duration,
    /// Keyed by listen address.
    nodes: BTreeMap<String, Node>,
    names: HashMap<String, String>,
    pipes: BTreeMap<u64, Pipe>,
    ends: HashMap<(String, ConnId), (u64, usize)>,
    queue: BTreeMap<(Duration, u64), (String, Event)>,
    seq: u64,
    next_pipe: u64,
    flood_ids: HashSet<String>,
    /// Broadcast frames received per flood id (first receipts and duplicates).
    flood_frames: HashMap<String, u64>,
    events: Vec<SeenEvent>,
    /// Addresses each node (by address) dialed, in order.
    dials: HashMap<String, Vec<String>>,
    /// Frames sent to each raw connection.
    raw_inbox: HashMap<u64, Vec<Message>>,
    /// One-way cuts (from address, to address): nothing from the first reaches the second.
    cuts: HashSet<(String, String)>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Sim {
    /// An empty network at virtual time zero, without latency.
    pub fn new() -> Self {
        Sim {
            base: Instant::now(),
            elapsed: Duration::ZERO,
            latency: Duration::ZERO,
            nodes: BTreeMap::new(),
            names: HashMap::new(),
            pipes: BTreeMap::new(),
            ends: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            next_pipe: 1,
            flood_ids: HashSet::new(),
            flood_frames: HashMap::new(),
            events: Vec::new(),
            dials: HashMap::new(),
            raw_inbox: HashMap::new(),
            cuts: HashSet::new(),
        }
    }

    /// Every frame, dial and close takes this many steps to arrive from now on.
    pub fn set_latency_ticks(&mut self, ticks: u32) {
        self.latency = TICK * ticks;
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// Starts a node with the default configuration; returns its name.
    pub fn spawn(&mut self, name: &str, genesis: &[&str]) -> String {
        self.spawn_with(node_config(name, genesis))
    }

    /// Starts a node; its id is its name in every other call.
    pub fn spawn_with(&mut self, cfg: Config) -> String {
        let name = cfg.id.clone();
        let addr = cfg.addr.clone();
        assert!(
            !self.nodes.contains_key(&addr),
            "two nodes at {addr}: give each node its own name"
        );
        let machine = Machine::new(cfg, self.now());
        self.names.insert(name.clone(), addr.clone());
        self.nodes.insert(
            addr.clone(),
            Node {
                machine,
                state: State::Up,
                group: 0,
                backlog: VecDeque::new(),
            },
        );
        self.pump(&addr);
        name
    }

    // ----- time --------------------------------------------------------------------------

    /// Steps virtual time by `d` (rounded up to whole steps); every running node whose
    /// deadline comes runs its timers.
    pub fn run_for(&mut self, d: Duration) {
        let ticks = d.as_nanos().div_ceil(TICK.as_nanos());
        for _ in 0..ticks {
            self.step();
        }
    }

    /// Steps until `done` holds, for at most `limit` of virtual time. Returns the virtual
    /// time it took, or `None` when the limit passed first.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let start = self.elapsed;
        loop {
            if done(self) {
                return Some(self.elapsed - start);
            }
            if self.elapsed - start >= limit {
                return None;
            }
            self.step();
        }
    }

    fn step(&mut self) {
        self.elapsed += TICK;
        self.deliver_due();
        let now = self.now();
        let running: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.state == State::Up)
            .map(|(a, _)| a.clone())
            .collect();
        for addr in running {
            let Some(node) = self.nodes.get_mut(&addr) else {
                continue;
            };
            if node.machine.poll_timeout().is_some_and(|at| at <= now) {
                node.machine.handle_timeout(now);
                // The contract every driver relies on: after its timers ran, a machine never
                // asks to be woken in the past (a driver would spin).
                if let Some(next) = node.machine.poll_timeout() {
                    assert!(
                        next > now,
                        "{addr} asked to wake at {:?}, before now ({:?}), right after its timers ran",
                        next - self.base,
                        self.elapsed
                    );
                }
                self.pump(&addr);
            }
        }
        self.deliver_due();
    }

    /// Delivers every queued event due by now, including those the deliveries cause.
    pub fn deliver_due(&mut self) {
        let mut handled = 0usize;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.elapsed {
                break;
            }
            let (to, event) = entry.remove();
            self.dispatch(&to, event);
            handled += 1;
            assert!(
                handled < STORM_LIMIT,
                "over {STORM_LIMIT} events without time passing: a protocol loop"
            );
        }
    }

    // ----- faults ------------------------------------------------------------------------

    /// The node vanishes: its connections close (peers see it), dials to it fail.
    pub fn kill(&mut self, name: &str) {
        let addr = self.addr(name);
        if let Some(node) = self.nodes.get_mut(&addr) {
            node.state = State::Gone;
            node.backlog.clear();
        }
        self.close_all(&addr);
    }

    /// A killed node's process starts again with `cfg` (same name and address; a new
    /// key unless `cfg` keeps the old one, a new incarnation as a real restart has).
    pub fn restart(&mut self, cfg: Config) {
        let addr = cfg.addr.clone();
        let machine = Machine::new(cfg, self.now());
        match self.nodes.get_mut(&addr) {
            Some(node) if node.state == State::Gone => {
                node.machine = machine;
                node.state = State::Up;
                node.backlog.clear();
            }
            _ => panic!("only a killed node restarts ({addr})"),
        }
        self.pump(&addr);
    }

    /// The node stops processing and answering; dials to it still connect.
    pub fn freeze(&mut self, name: &str) {
        let addr = self.addr(name);
        if let Some(node) = self.nodes.get_mut(&addr)
            && node.state == State::Up
        {
            node.state = State::Frozen;
        }
    }

    /// A frozen node resumes: it handles what arrived meanwhile, then ticks again.
    pub fn thaw(&mut self, name: &str) {
        let addr = self.addr(name);
        let backlog = match self.nodes.get_mut(&addr) {
            Some(node) if node.state == State::Frozen => {
                node.state = State::Up;
                std::mem::take(&mut node.backlog)
            }
            _ => return,
        };
        for event in backlog {
            self.dispatch(&addr, event);
        }
        self.deliver_due();
    }

    /// A frozen node's timer fires before it reads anything that arrived meanwhile: what a
    /// tokio driver does when its timer wins the race after a long stall. It stays frozen
    /// otherwise, so a test can look at what that one wake-up did.
    pub fn tick_while_frozen(&mut self, name: &str) {
        let addr = self.addr(name);
        let now = self.now();
        match self.nodes.get_mut(&addr) {
            Some(node) if node.state == State::Frozen => node.machine.handle_timeout(now),
            _ => return,
        }
        self.pump(&addr);
    }

    /// Graceful leave, as on SIGTERM.
    pub fn leave(&mut self, name: &str) {
        let addr = self.addr(name);
        let now = self.now();
        if let Some(node) = self.nodes.get_mut(&addr) {
            node.machine.leave(now);
        }
        self.pump(&addr);
        self.deliver_due();
    }

    /// Splits the network: each group talks only within itself; nodes in no group form
    /// one more group. Existing connections across stay open but carry nothing.
    pub fn partition(&mut self, groups: &[&[String]]) {
        for node in self.nodes.values_mut() {
            node.group = 0;
        }
        for (i, group) in groups.iter().enumerate() {
            for name in *group {
                let addr = self.addr(name);
                if let Some(node) = self.nodes.get_mut(&addr) {
                    node.group = i as u32 + 1;
                }
            }
        }
    }

    /// Removes every partition and every cut.
    pub fn heal(&mut self) {
        for node in self.nodes.values_mut() {
            node.group = 0;
        }
        self.cuts.clear();
    }

    /// A one-way cut: from now on nothing `from` sends reaches `to` (frames and FINs are
    /// lost), while `to`'s frames still reach `from`. A dial between them fails either
    /// way, as a TCP handshake needs both directions. Everyone else reaches both.
    pub fn cut(&mut self, from: &str, to: &str) {
        let pair = (self.addr(from), self.addr(to));
        self.cuts.insert(pair);
    }

    /// Closes the connection `from` holds as its link to `to`, as a network fault would:
    /// both sides see it closed.
    pub fn break_link(&mut self, from: &str, to: &str) -> bool {
        let addr = self.addr(from);
        let Some(conn) = self.link_conn(from, to) else {
            return false;
        };
        let now = self.now();
        if let Some(node) = self.nodes.get_mut(&addr) {
            node.machine.on_closed(now, conn);
        }
        if let Some((pipe, side)) = self.ends.remove(&(addr.clone(), conn)) {
            self.close_end(pipe, side);
        }
        self.pump(&addr);
        self.deliver_due();
        true
    }

    /// Sends `msg` to `to` over the link `from` holds to it, as if `from` had sent it.
    pub fn inject(&mut self, from: &str, to: &str, msg: Message) -> bool {
        let addr = self.addr(from);
        let Some(conn) = self.link_conn(from, to) else {
            return false;
        };
        self.on_send(&addr, conn, msg);
        self.deliver_due();
        true
    }

    /// Asks a node to flood a user broadcast; returns its id. Panics if the node refuses
    /// it (see [`Sim::try_broadcast`]).
    pub fn broadcast(&mut self, name: &str, message: &str) -> String {
        self.try_broadcast(name, message)
            .unwrap_or_else(|e| panic!("{name} refused the broadcast: {e}"))
    }

    /// Asks a node to flood a user broadcast; its id, or why the node refused it.
    pub fn try_broadcast(
        &mut self,
        name: &str,
        message: &str,
    ) -> Result<String, super::machine::BroadcastError> {
        let addr = self.addr(name);
        let now = self.now();
        let sent = match self.nodes.get_mut(&addr) {
            Some(node) => node
                .machine
                .broadcast(now, super::wire::TITLE_BROADCAST, message),
            None => panic!("no node called {name}"),
        };
        self.pump(&addr);
        self.deliver_due();
        sent
    }

    // ----- raw clients -------------------------------------------------------------------

    /// Opens a connection to `name` from a client that is not a node, so a test can speak
    /// the protocol badly. Returns the connection's handle.
    pub fn connect_raw(&mut self, name: &str) -> u64 {
        let target = self.addr(name);
        let pipe = self.next_pipe;
        self.next_pipe += 1;
        let end = |addr: &str| End {
            addr: addr.to_string(),
            conn: None,
            open: true,
            last: Duration::ZERO,
        };
        self.pipes.insert(
            pipe,
            Pipe {
                ends: [end(RAW), end(&target)],
            },
        );
        self.raw_inbox.insert(pipe, Vec::new());
        self.enqueue_on(pipe, TARGET, Event::Accept { pipe });
        self.deliver_due();
        pipe
    }

    /// Sends a frame to the node on a raw connection.
    pub fn send_raw(&mut self, pipe: u64, msg: Message) {
        self.enqueue_on(
            pipe,
            TARGET,
            Event::Frame {
                pipe,
                to: TARGET,
                msg: Box::new(msg),
            },
        );
        self.deliver_due();
    }

    /// Did the node close the raw connection?
    pub fn raw_closed(&self, pipe: u64) -> bool {
        self.pipes.get(&pipe).is_none_or(|p| !p.ends[TARGET].open)
    }

    /// What the node sent on the raw connection.
    pub fn raw_received(&self, pipe: u64) -> &[Message] {
        self.raw_inbox.get(&pipe).map_or(&[], Vec::as_slice)
    }

    // ----- views -------------------------------------------------------------------------

    /// Names of the nodes that run (not frozen, killed or gone).
    pub fn running(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.state == State::Up)
            .map(|n| n.machine.id().to_string())
            .collect()
    }

    /// The machine of the node called `name` (panics if there is none).
    pub fn machine(&self, name: &str) -> &Machine {
        let addr = self.addr(name);
        match self.nodes.get(&addr) {
            Some(node) => &node.machine,
            None => panic!("no node called {name}"),
        }
    }

    /// Ids of the node's neighbours, sorted.
    pub fn neighbours(&self, name: &str) -> Vec<String> {
        self.machine(name)
            .neighbours()
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    /// Ids of the node's living members (itself included), sorted.
    pub fn members(&self, name: &str) -> Vec<String> {
        self.machine(name)
            .members()
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    /// Ids of the members the node suspects, sorted.
    pub fn suspects(&self, name: &str) -> Vec<String> {
        self.machine(name)
            .suspects()
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    /// Has the node joined (or started) the network?
    pub fn joined(&self, name: &str) -> bool {
        self.machine(name).is_joined()
    }

    /// Broadcasts the node delivered, oldest first.
    pub fn delivered(&self, name: &str) -> Vec<DeliveredMessage> {
        self.machine(name).delivered().cloned().collect()
    }

    /// The node's counters.
    pub fn counters(&self, name: &str) -> MachineCounters {
        self.machine(name).counters().clone()
    }

    /// How often the node ran its timers ([`Machine::handle_timeout`]).
    pub fn wakeups(&self, name: &str) -> u64 {
        self.machine(name).counters().timer_wakeups
    }

    /// Addresses the node has dialed so far, in order.
    pub fn dials_from(&self, name: &str) -> Vec<String> {
        self.dials
            .get(&self.addr(name))
            .cloned()
            .unwrap_or_default()
    }

    /// Broadcast frames nodes received carrying this flood id.
    pub fn flood_frames(&self, id: &str) -> u64 {
        self.flood_frames.get(id).copied().unwrap_or(0)
    }

    /// Membership events in the order they first appeared on the wire.
    pub fn member_events(&self) -> &[SeenEvent] {
        &self.events
    }

    /// Open connections between two nodes, counted once per pipe.
    pub fn open_pipes_between(&self, a: &str, b: &str) -> usize {
        let (a, b) = (self.addr(a), self.addr(b));
        self.pipes
            .values()
            .filter(|p| p.ends.iter().all(|e| e.open))
            .filter(|p| {
                (p.ends[0].addr == a && p.ends[1].addr == b)
                    || (p.ends[0].addr == b && p.ends[1].addr == a)
            })
            .count()
    }

    /// The connection `from` uses as its link to `to`.
    fn link_conn(&self, from: &str, to: &str) -> Option<ConnId> {
        self.machine(from)
            .link_conns()
            .into_iter()
            .find(|(id, _)| id == to)
            .map(|(_, conn)| conn)
    }

    /// The node (name) and connection at the other end of `name`'s connection `conn`.
    fn peer_end(&self, name: &str, conn: ConnId) -> Option<(String, ConnId)> {
        let (pipe, side) = self.ends.get(&(self.addr(name), conn))?;
        let other = &self.pipes.get(pipe)?.ends[1 - side];
        let node = self.nodes.get(&other.addr)?;
        Some((node.machine.id().to_string(), other.conn?))
    }

    fn addr(&self, name: &str) -> String {
        match self.names.get(name) {
            Some(addr) => addr.clone(),
            None => panic!("no node called {name}"),
        }
    }

    // ----- the switch --------------------------------------------------------------------

    /// Does what `a` sends reach `b`?
    fn reachable(&self, a: &str, b: &str) -> bool {
        let group = |addr: &str| self.nodes.get(addr).map(|n| n.group);
        let same_side = match (group(a), group(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        };
        same_side && !self.cuts.contains(&(a.to_string(), b.to_string()))
    }

    /// Queues an event towards one end of a pipe, after anything already queued to it.
    fn enqueue_on(&mut self, pipe: u64, to: usize, event: Event) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let end = &mut p.ends[to];
        let at = (self.elapsed + self.latency).max(end.last);
        end.last = at;
        let addr = end.addr.clone();
        self.enqueue_at(at, addr, event);
    }

    fn enqueue_at(&mut self, at: Duration, addr: String, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (addr, event));
    }

    /// Carries out what a node asked for, until it asks for nothing more.
    fn pump(&mut self, addr: &str) {
        loop {
            let mut outputs = Vec::new();
            if let Some(node) = self.nodes.get_mut(addr) {
                while let Some(out) = node.machine.poll_output() {
                    outputs.push(out);
                }
            }
            if outputs.is_empty() {
                return;
            }
            self.carry_out(addr, outputs);
        }
    }

    fn carry_out(&mut self, addr: &str, outputs: Vec<Output>) {
        let now = self.now();
        for out in outputs {
            match out {
                Output::Dial {
                    conn, addr: target, ..
                } => self.on_dial(addr, conn, target),
                Output::Identified { conn, .. } => {
                    // The simulator's faults are in its switch, not by peer: admit it.
                    if let Some(node) = self.nodes.get_mut(addr) {
                        node.machine.admit_hello(now, conn);
                    }
                }
                Output::Send { conn, msg } => self.on_send(addr, conn, msg),
                Output::Close { conn } => {
                    if let Some((pipe, side)) = self.ends.remove(&(addr.to_string(), conn)) {
                        self.close_end(pipe, side);
                    }
                }
                Output::Exit => {
                    if let Some(node) = self.nodes.get_mut(addr) {
                        node.state = State::Gone;
                    }
                    self.close_all(addr);
                }
            }
        }
    }

    fn on_dial(&mut self, from: &str, conn: ConnId, target: String) {
        self.dials
            .entry(from.to_string())
            .or_default()
            .push(target.clone());
        let up = self
            .nodes
            .get(&target)
            .is_some_and(|n| n.state != State::Gone);
        if !up || !self.reachable(from, &target) || !self.reachable(&target, from) {
            let at = self.elapsed + self.latency;
            self.enqueue_at(at, from.to_string(), Event::DialFailed { conn });
            return;
        }
        let pipe = self.next_pipe;
        self.next_pipe += 1;
        let end = |addr: &str, conn| End {
            addr: addr.to_string(),
            conn,
            open: true,
            last: Duration::ZERO,
        };
        self.pipes.insert(
            pipe,
            Pipe {
                ends: [end(from, Some(conn)), end(&target, None)],
            },
        );
        self.ends.insert((from.to_string(), conn), (pipe, DIALER));
        self.enqueue_on(pipe, TARGET, Event::Accept { pipe });
        self.enqueue_on(pipe, DIALER, Event::Connected { pipe });
    }

    fn on_send(&mut self, from: &str, conn: ConnId, msg: Message) {
        let Some(&(pipe, side)) = self.ends.get(&(from.to_string(), conn)) else {
            return;
        };
        let Some(p) = self.pipes.get(&pipe) else {
            return;
        };
        let to = 1 - side;
        let dest = p.ends[to].addr.clone();
        if dest == RAW {
            if p.ends[to].open {
                self.raw_inbox.entry(pipe).or_default().push(msg);
            }
            return;
        }
        if !p.ends[to].open || !self.reachable(from, &dest) {
            return;
        }
        self.enqueue_on(
            pipe,
            to,
            Event::Frame {
                pipe,
                to,
                msg: Box::new(msg),
            },
        );
    }

    /// Our end of a pipe closed: the other end hears of it if the network carries the FIN.
    fn close_end(&mut self, pipe: u64, side: usize) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.ends[side].open = false;
        let (from, to) = (p.ends[side].addr.clone(), p.ends[1 - side].addr.clone());
        let other_open = p.ends[1 - side].open;
        if !other_open {
            self.pipes.remove(&pipe);
            return;
        }
        if self.reachable(&from, &to) {
            self.enqueue_on(pipe, 1 - side, Event::Closed { pipe, to: 1 - side });
        }
    }

    fn close_all(&mut self, addr: &str) {
        let mine: Vec<(u64, usize)> = self
            .pipes
            .iter()
            .flat_map(|(id, p)| {
                (0..2)
                    .filter(|s| p.ends[*s].addr == addr && p.ends[*s].open)
                    .map(move |s| (*id, s))
            })
            .collect();
        self.ends.retain(|(a, _), _| a != addr);
        for (pipe, side) in mine {
            self.close_end(pipe, side);
        }
    }

    fn dispatch(&mut self, addr: &str, event: Event) {
        let Some(node) = self.nodes.get_mut(addr) else {
            return;
        };
        match node.state {
            State::Gone => return,
            State::Frozen => {
                node.backlog.push_back(event);
                return;
            }
            State::Up => {}
        }
        let now = self.base + self.elapsed;
        match event {
            Event::Connected { pipe } => {
                let end = self.pipes.get(&pipe).map(|p| &p.ends[DIALER]);
                if let Some(End {
                    conn: Some(conn),
                    open: true,
                    ..
                }) = end
                {
                    node.machine.on_connected(now, *conn);
                }
            }
            Event::Accept { pipe } => {
                let Some(p) = self.pipes.get_mut(&pipe) else {
                    return;
                };
                if !p.ends[TARGET].open {
                    return;
                }
                let conn = node.machine.on_accepted(now);
                p.ends[TARGET].conn = Some(conn);
                self.ends.insert((addr.to_string(), conn), (pipe, TARGET));
            }
            Event::DialFailed { conn } => {
                node.machine
                    .on_dial_failed(now, conn, "connection refused (simulated)");
            }
            Event::Frame { pipe, to, msg } => {
                let Some(p) = self.pipes.get(&pipe) else {
                    return;
                };
                let End {
                    conn: Some(conn),
                    open: true,
                    ..
                } = p.ends[to]
                else {
                    return;
                };
                if let Message::Broadcast(flood) = &*msg {
                    *self.flood_frames.entry(flood.id.clone()).or_default() += 1;
                    if let Some(event) = &flood.event
                        && self.flood_ids.insert(flood.id.clone())
                    {
                        self.events.push(SeenEvent {
                            at: self.elapsed,
                            origin: flood.origin.clone(),
                            event: event.clone(),
                        });
                    }
                }
                node.machine.on_frame(now, conn, *msg);
            }
            Event::Closed { pipe, to } => {
                let Some(p) = self.pipes.get_mut(&pipe) else {
                    return;
                };
                let end = &mut p.ends[to];
                if !end.open {
                    return;
                }
                end.open = false;
                let conn = end.conn;
                if !p.ends[1 - to].open {
                    self.pipes.remove(&pipe);
                }
                if let Some(conn) = conn {
                    self.ends.remove(&(addr.to_string(), conn));
                    node.machine.on_closed(now, conn);
                }
            }
        }
        self.pump(addr);
    }
}
