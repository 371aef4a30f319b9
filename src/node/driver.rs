//! The tokio driver: sockets, timers and signals around the sans-IO [`Machine`].
//!
//! One task owns the machine. Everything else (accepting, dialing, connection readers, the
//! status socket, stdin) talks to it through channels, and every output the machine emits
//! is carried out here. Keeping this loop thin is what keeps the protocol testable: the
//! driver never reads a protocol message, the machine tells it what it needs to know
//! (who is behind a connection, who lives at a dialed address).
//! Link faults ([`Faults`]) filter what goes in and out here, by peer, so the machine sees
//! a cut or slow link exactly as a real network would show it.
//!
//! There is no ticker: the loop sleeps until the machine's deadline
//! ([`Machine::poll_timeout`]) or until an event, and asks for the deadline again after
//! each event. An idle node thus wakes only when its heartbeat round (or another timer)
//! is due.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::connection::{self, ConnectionHandle, Outgoing};
use super::faults::{Faults, PeerIdentity, SendPlan};
use super::logsafe::clip;
use super::machine::{ConnId, Machine, Output};
use super::metrics::WireCounters;
use super::pending::Pending;
use super::resolver::Resolver;
use super::status::{Command, FaultChange};
use super::timer::DeadlineTimer;
use super::wire::Message;
use crate::contract::{Counters, NodeStatus, members_digest};

/// What the tasks around the machine report.
pub enum Event {
    Dialed {
        conn: ConnId,
        result: std::io::Result<TcpStream>,
    },
    Frame {
        conn: ConnId,
        msg: Message,
    },
    BadFrame {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
    },
}

pub struct DriverOptions {
    pub name: Option<String>,
    pub max_connections: usize,
    /// Most connections from one IP that have not said hello yet (see [`Pending`]).
    pub max_pending_per_ip: usize,
    pub connect_timeout: Duration,
    /// Print delivered broadcasts on stdout (interactive `--stdin` mode).
    pub echo_deliveries: bool,
    /// The node's seed: link loss and jitter draw from it.
    pub seed: u64,
    /// After a heartbeat round, how long the thread sleeps before it next waits for
    /// events, so that the neighbours' pings of the round are read in one wake-up
    /// (see [`gather_round`]). Zero: no gathering.
    pub round_gather: Duration,
}

/// The connections and what is known of the peer behind each.
#[derive(Default)]
struct Links {
    handles: HashMap<ConnId, ConnectionHandle>,
    peers: HashMap<ConnId, PeerIdentity>,
    /// Addresses of dials in flight, so a connected dial knows its peer.
    dialing: HashMap<ConnId, String>,
    /// Accepted connections without a hello yet, per remote IP.
    pending: Pending,
    resolver: Resolver,
}

impl Links {
    fn insert(&mut self, conn: ConnId, handle: ConnectionHandle, peer: PeerIdentity) {
        self.handles.insert(conn, handle);
        self.peers.insert(conn, peer);
    }

    /// Closes a connection; false when it was already gone.
    fn close(&mut self, conn: ConnId) -> bool {
        self.peers.remove(&conn);
        self.pending.settle(conn);
        match self.handles.remove(&conn) {
            Some(handle) => {
                handle.close();
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.handles.len()
    }
}

/// Runs the node until it leaves (a signal, `Command::Leave`, or stdin's end).
pub async fn drive(
    mut machine: Machine,
    listener: TcpListener,
    mut commands: mpsc::Receiver<Command>,
    mut shutdown: watch::Receiver<bool>,
    opts: DriverOptions,
) {
    let started = Instant::now();
    let counters = Arc::new(WireCounters::default());
    let (events_tx, mut events) = mpsc::channel::<Event>(4096);
    let mut links = Links {
        pending: Pending::new(opts.max_pending_per_ip),
        ..Links::default()
    };
    let mut faults = Faults::new(opts.seed);
    let mut writers = JoinSet::new();
    let mut printed = 0u64;
    let mut rounds = machine.counters().heartbeat_rounds;
    // One timer, re-armed only when the machine's deadline moves.
    let mut timer = DeadlineTimer::new();

    loop {
        timer.set(machine.poll_timeout());
        // Time is read as each event is handled, not before waiting for one: a `now` taken
        // before the wait would stamp frames and broadcasts too early.
        tokio::select! {
            () = timer.fired(), if timer.armed().is_some() => {
                machine.handle_timeout(Instant::now());
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    if links.len() >= opts.max_connections {
                        counters.connections_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        debug!(%remote, "connection refused: at the connection cap");
                        drop(stream);
                    } else if !links.pending.admits(remote.ip()) {
                        counters.connections_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        debug!(%remote, "connection refused: its address holds its share of connections without a hello");
                        drop(stream);
                    } else {
                        let conn = machine.on_accepted(Instant::now());
                        let handle = connection::spawn(conn, stream, events_tx.clone(), counters.clone(), &mut writers);
                        links.insert(conn, handle, PeerIdentity::accepted(remote));
                        links.pending.add(conn, remote.ip());
                    }
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(event) = events.recv() => match event {
                Event::Dialed { conn, result: Ok(stream) } => {
                    let addr = links.dialing.remove(&conn).unwrap_or_default();
                    let handle = connection::spawn(conn, stream, events_tx.clone(), counters.clone(), &mut writers);
                    links.insert(conn, handle, PeerIdentity::dialed(&addr));
                    machine.on_connected(Instant::now(), conn);
                }
                Event::Dialed { conn, result: Err(e) } => {
                    links.dialing.remove(&conn);
                    machine.on_dial_failed(Instant::now(), conn, &e.to_string());
                }
                Event::Frame { conn, msg } => {
                    if let Some(peer) = links.peers.get(&conn) {
                        // A blocked peer's frames vanish, as on a cut link.
                        if !faults.drop_incoming(peer) {
                            machine.on_frame(Instant::now(), conn, msg);
                        }
                    }
                }
                Event::BadFrame { conn } => {
                    links.close(conn);
                    machine.on_bad_frame(Instant::now(), conn);
                }
                Event::Closed { conn } => {
                    links.close(conn);
                    machine.on_closed(Instant::now(), conn);
                }
            },
            Some(command) = commands.recv() => match command {
                Command::Status { members, reply } => {
                    let view = snapshot(&machine, &counters, opts.name.clone(), started, members);
                    let _ = reply.send(view);
                }
                Command::Messages(reply) => {
                    let _ = reply.send(machine.delivered().cloned().collect());
                }
                Command::Broadcast { request, reply } => {
                    let sent = machine.broadcast(Instant::now(), &request.title, &request.message);
                    if let Err(refused) = &sent {
                        info!(%refused, "local broadcast refused");
                    }
                    let _ = reply.send(sent);
                }
                Command::Leave => machine.leave(Instant::now()),
                Command::Faults { change, reply } => {
                    let _ = reply.send(change_faults(&mut faults, change));
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    machine.leave(Instant::now());
                }
            }
        }

        // A deadline that passed while events kept the loop busy is not left waiting for
        // the select to pick the timer.
        let now = Instant::now();
        if machine.poll_timeout().is_some_and(|at| at <= now) {
            machine.handle_timeout(now);
        }
        if opts.echo_deliveries || tracing::enabled!(tracing::Level::INFO) {
            printed = report_deliveries(&machine, printed, opts.echo_deliveries);
        }
        if apply_outputs(&mut machine, &mut links, &mut faults, &events_tx, &opts) {
            break;
        }
        let ran = machine.counters().heartbeat_rounds;
        if ran != rounds {
            rounds = ran;
            gather_round(opts.round_gather);
        }
    }

    // Leaving: closing every outbox lets each writer flush the leave flood, then exit.
    for (_, handle) in links.handles.drain() {
        handle.close();
    }
    let flush = async { while writers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(1), flush)
        .await
        .is_err()
    {
        warn!("some connections did not flush within 1 s");
    }
    info!("left the network");
}

/// Receive-side batching of a heartbeat round. The nodes of a host ping each other at
/// the same instant of the Unix clock, but a few cores run them one after the other, so
/// a node's neighbours' pings trickle in over the next milliseconds, and a node waiting
/// in `epoll_wait` is woken (a context switch each) for every one of them: up to one
/// wake-up per link and round where one would do. A task queued behind the connection
/// writers (which send this round's pings first) puts the whole thread to sleep for
/// `gather`: a thread that is not in `epoll_wait` is not woken by a socket becoming
/// readable, so the pings that arrive meanwhile wait in their sockets and are read
/// together in the next wake-up. The cost is at most `gather` of delay for whatever
/// arrives in that window, once per round (a few per cent of the time).
fn gather_round(gather: Duration) {
    if gather.is_zero() {
        return;
    }
    // Blocking on purpose: the point is that the runtime does not wait for events.
    tokio::spawn(async move { std::thread::sleep(gather) });
}

fn change_faults(
    faults: &mut Faults,
    change: FaultChange,
) -> Result<crate::contract::FaultsReport, String> {
    match change {
        FaultChange::Block(req) => {
            faults.block(&req)?;
            info!(peers = ?req.peers, direction = ?req.direction, "links blocked");
        }
        FaultChange::Unblock(req) => {
            faults.unblock(&req);
            info!(peers = ?req.peers, "links unblocked");
        }
        FaultChange::Shape(req) => {
            faults.set_shape(&req)?;
            info!(?req, "links shaped");
        }
        FaultChange::ClearShape => {
            faults.clear_shape();
            info!("link shaping cleared");
        }
        FaultChange::Report => {}
    }
    Ok(faults.report())
}

/// Carries out what the machine asked for. Returns true when the node must exit.
fn apply_outputs(
    machine: &mut Machine,
    links: &mut Links,
    faults: &mut Faults,
    events: &mpsc::Sender<Event>,
    opts: &DriverOptions,
) -> bool {
    let mut exit = false;
    while let Some(output) = machine.poll_output() {
        match output {
            Output::Dial {
                conn,
                addr,
                known_as,
            } => {
                let events = events.clone();
                let timeout = opts.connect_timeout;
                if faults.blocks_dial(&addr, &known_as) {
                    // A cut link: the SYN goes unanswered until the dial times out.
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        let result = Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        ));
                        let _ = events.send(Event::Dialed { conn, result }).await;
                    });
                    continue;
                }
                links.dialing.insert(conn, addr.clone());
                let resolver = links.resolver.clone();
                tokio::spawn(async move {
                    let dial = async {
                        let to = resolver.resolve(&addr).await?;
                        TcpStream::connect(to).await
                    };
                    let result = match tokio::time::timeout(timeout, dial).await {
                        Ok(r) => r,
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        )),
                    };
                    if result.is_err() {
                        resolver.forget(&addr);
                    }
                    let _ = events.send(Event::Dialed { conn, result }).await;
                });
            }
            Output::Send { conn, msg } => {
                let (Some(handle), Some(peer)) = (links.handles.get(&conn), links.peers.get(&conn))
                else {
                    continue;
                };
                let now = Instant::now();
                let (out, shaped) = match faults.plan_send(now, peer) {
                    SendPlan::Drop => continue,
                    SendPlan::Now => (Outgoing::from(msg), false),
                    SendPlan::Shaped { not_before, rate } => (
                        Outgoing {
                            msg,
                            not_before: Some(not_before),
                            rate,
                        },
                        true,
                    ),
                };
                if handle.outbox.try_send(out).is_err() {
                    if shaped {
                        // A shaped link's full queue drops at the tail, as a router would.
                        faults.count_tail_drop();
                        continue;
                    }
                    warn!(conn, "peer is not reading its frames; disconnecting it");
                    links.close(conn);
                    machine.on_closed(now, conn);
                }
            }
            Output::Close { conn } => {
                links.close(conn);
            }
            Output::Identified { conn, id, addr } => {
                links.pending.settle(conn);
                let Some(peer) = links.peers.get_mut(&conn) else {
                    continue;
                };
                peer.id = Some(id);
                peer.addr = Some(addr);
                // A blocked peer's hello vanishes like its other frames: the machine never
                // sees it, and the handshake times out.
                if !faults.drop_incoming(peer) {
                    machine.admit_hello(Instant::now(), conn);
                }
            }
            Output::Exit => exit = true,
        }
    }
    exit
}

fn report_deliveries(machine: &Machine, printed: u64, echo: bool) -> u64 {
    let total = machine.counters().delivered;
    if total == printed {
        return printed;
    }
    let new = (total - printed) as usize;
    let list: Vec<_> = machine.delivered().collect();
    for msg in list.iter().skip(list.len().saturating_sub(new)) {
        info!(id = %clip(&msg.id), origin = %clip(&msg.origin), hops = msg.hops, title = %clip(&msg.title), message = %clip(&msg.message), "broadcast delivered");
        if echo && msg.origin != machine.id() {
            println!("[{} via {} hops] {}", msg.origin, msg.hops, msg.message);
        }
    }
    total
}

fn snapshot(
    machine: &Machine,
    wire: &WireCounters,
    name: Option<String>,
    started: Instant,
    list_members: bool,
) -> NodeStatus {
    let c = machine.counters();
    // A brief view (what checkers poll) never builds the list: count and digest suffice.
    let members = if list_members {
        machine.members()
    } else {
        Vec::new()
    };
    NodeStatus {
        id: machine.id().to_string(),
        name,
        addr: machine.addr().to_string(),
        genesis: machine.is_genesis(),
        joined: machine.is_joined(),
        neighbours: machine.neighbours(),
        members,
        member_count: Some(machine.member_count()),
        members_digest: Some(members_digest(machine.member_ids())),
        suspects: machine.suspects(),
        target_degree: machine.target_degree(),
        counters: Counters {
            delivered: c.delivered,
            duplicates_dropped: c.duplicates_dropped,
            frames_in: WireCounters::get(&wire.frames_in),
            frames_out: WireCounters::get(&wire.frames_out),
            bytes_in: WireCounters::get(&wire.bytes_in),
            bytes_out: WireCounters::get(&wire.bytes_out),
            oversize_dropped: c.oversize_dropped,
            rate_limited: c.rate_limited,
            bad_frames: c.bad_frames,
            connections_refused: WireCounters::get(&wire.connections_refused),
            members_declared_dead: c.members_declared_dead,
            identity_refused: c.identity_refused,
            refused_records: c.refused_records,
            capped_members: c.capped_members,
            indirect_probes_sent: c.indirect_probes_sent,
            indirect_probe_saves: c.indirect_probe_saves,
            indirect_answers_refused: c.indirect_answers_refused,
            probe_requests_served: c.probe_requests_served,
            probe_requests_refused: c.probe_requests_refused,
        },
        uptime_secs: started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        public_key: machine.public_key().to_string(),
    }
}
