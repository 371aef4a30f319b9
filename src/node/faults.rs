//! Link faults the node applies to itself when told to (`/admin/*` on the status socket).
//!
//! Kernel netem is missing on many machines and iptables needs privileges, so the node can cut
//! and shape its own links. Faults are applied in the driver and connection layer, by peer,
//! never inside the protocol: the state machine sees exactly what a real network would show
//! it (silence, timeouts, late frames), so failure detection and healing are tested as they are.
//!
//! - Blocks drop frames silently in the blocked direction and make dials time out.
//! - Shaping delays (with jitter, order kept), loses (seeded) and rate-limits outgoing frames.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::contract::admin::{
    ALL_LINKS, BlockRequest, Direction, FaultsReport, LinkShape, ShapeRequest, UnblockRequest,
};

/// What the driver knows of the peer behind a connection. Inbound connections are known by
/// their first frame (the hello); before that only by the remote IP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerIdentity {
    pub dialed: Option<String>,
    pub remote_ip: Option<IpAddr>,
    pub id: Option<String>,
    pub addr: Option<String>,
}

impl PeerIdentity {
    pub fn dialed(addr: &str) -> Self {
        PeerIdentity {
            dialed: Some(addr.to_string()),
            ..Default::default()
        }
    }

    pub fn accepted(remote: SocketAddr) -> Self {
        PeerIdentity {
            remote_ip: Some(remote.ip()),
            ..Default::default()
        }
    }

    /// Every block/shape key (id, `host:port`, or bare IP in [`canonical_key`] form)
    /// that names this peer. Looking these up in the fault tables costs a few map lookups
    /// per frame, where trying every key of a table against the peer would cost one per
    /// key: a node placed on one of several emulated hosts shapes every node of the other
    /// hosts, hundreds of keys in a big run.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = [&self.dialed, &self.id, &self.addr]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let ips = [&self.dialed, &self.addr]
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .chain(self.remote_ip);
        for ip in ips {
            let ip = ip.to_string();
            if !keys.contains(&ip) {
                keys.push(ip);
            }
        }
        keys
    }

    /// Whether a block/shape key (id, `host:port`, or bare IP) names this peer.
    #[cfg(test)]
    pub fn matches(&self, key: &str) -> bool {
        let named = [&self.dialed, &self.id, &self.addr]
            .into_iter()
            .flatten()
            .any(|k| k == key);
        if named {
            return true;
        }
        let Ok(ip) = key.parse::<IpAddr>() else {
            return false;
        };
        self.remote_ip == Some(ip)
            || [&self.dialed, &self.addr]
                .into_iter()
                .flatten()
                .filter_map(|a| a.parse::<SocketAddr>().ok())
                .any(|a| a.ip() == ip)
    }
}

/// A key as the fault tables hold it: a bare IP in its one canonical text (so that a
/// peer's address, printed the same way, finds it by lookup), anything else as given.
fn canonical_key(key: &str) -> String {
    key.parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| key.to_string())
}

/// How the driver must treat one outgoing frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SendPlan {
    /// No fault: queue it as usual.
    Now,
    /// Dropped silently (blocked or lost).
    Drop,
    /// Queue it with its own release time and the link's rate.
    Shaped {
        not_before: Instant,
        rate: Option<u64>,
    },
}

/// Faults in force on one node, and their counters. Owned by the driver.
#[derive(Debug)]
pub struct Faults {
    blocked: BTreeMap<String, Direction>,
    shaped: BTreeMap<String, LinkShape>,
    rng: StdRng,
    report: FaultsReport,
}

impl Faults {
    /// `seed` is the node's seed, so loss and jitter repeat with the run.
    pub fn new(seed: u64) -> Self {
        Faults {
            blocked: BTreeMap::new(),
            shaped: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x6c69_6e6b),
            report: FaultsReport::default(),
        }
    }

    pub fn block(&mut self, req: &BlockRequest) -> Result<(), String> {
        if req.peers.iter().any(|p| p.trim().is_empty()) {
            return Err("a peer to block is empty; name peers by id, host:port or IP".into());
        }
        for peer in &req.peers {
            let peer = canonical_key(peer);
            let direction = match self.blocked.get(&peer) {
                Some(d) => d.merge(req.direction),
                None => req.direction,
            };
            self.blocked.insert(peer, direction);
        }
        Ok(())
    }

    pub fn unblock(&mut self, req: &UnblockRequest) {
        match &req.peers {
            None => self.blocked.clear(),
            Some(peers) => {
                for p in peers {
                    self.blocked.remove(&canonical_key(p));
                }
            }
        }
    }

    pub fn set_shape(&mut self, req: &ShapeRequest) -> Result<(), String> {
        if !(0.0..=1.0).contains(&req.loss) {
            return Err(format!("loss must be within 0..=1, got {}", req.loss));
        }
        if req.rate_bytes_per_sec == Some(0) {
            return Err("rate_bytes_per_sec must be above 0 (block the peer to cut it)".into());
        }
        let shape = req.shape();
        match &req.peers {
            None => {
                self.shaped.insert(ALL_LINKS.to_string(), shape);
            }
            Some(peers) => {
                for p in peers {
                    self.shaped.insert(canonical_key(p), shape);
                }
            }
        }
        Ok(())
    }

    pub fn clear_shape(&mut self) {
        self.shaped.clear();
    }

    pub fn report(&self) -> FaultsReport {
        FaultsReport {
            blocked: self.blocked.clone(),
            shaped: self
                .shaped
                .iter()
                .map(|(k, s)| (k.clone(), ShapeRequest::new(*s, None)))
                .collect(),
            ..self.report.clone()
        }
    }

    /// Whether frames from this peer must be dropped (counts the drop).
    pub fn drop_incoming(&mut self, peer: &PeerIdentity) -> bool {
        let drop = self.direction_for(peer).is_some_and(Direction::drops_in);
        if drop {
            self.report.dropped_in += 1;
        }
        drop
    }

    /// Whether a dial to `addr` (a member known as `known_ids`) must time out (counts it).
    pub fn blocks_dial(&mut self, addr: &str, known_ids: &[String]) -> bool {
        if self.blocked.is_empty() {
            return false;
        }
        let mut peer = PeerIdentity::dialed(addr);
        let blocked = std::iter::once(None)
            .chain(known_ids.iter().map(Some))
            .any(|id| {
                peer.id = id.cloned();
                self.direction_for(&peer).is_some_and(Direction::drops_out)
            });
        if blocked {
            self.report.dials_blocked += 1;
        }
        blocked
    }

    /// Decides the fate of one outgoing frame to `peer`.
    pub fn plan_send(&mut self, now: Instant, peer: &PeerIdentity) -> SendPlan {
        if self.direction_for(peer).is_some_and(Direction::drops_out) {
            self.report.dropped_out += 1;
            return SendPlan::Drop;
        }
        let Some(shape) = self.shape_for(peer) else {
            return SendPlan::Now;
        };
        if shape.loss > 0.0 && self.rng.random_bool(shape.loss.min(1.0)) {
            self.report.lost += 1;
            return SendPlan::Drop;
        }
        let mut delay = shape.delay;
        if !shape.jitter.is_zero() {
            let j = shape.jitter.as_secs_f64();
            let offset = self.rng.random_range(-j..=j);
            delay = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
        }
        SendPlan::Shaped {
            not_before: now + delay,
            rate: shape.rate,
        }
    }

    /// Counts a frame dropped because a shaped link's queue was full.
    pub fn count_tail_drop(&mut self) {
        self.report.lost += 1;
    }

    fn direction_for(&self, peer: &PeerIdentity) -> Option<Direction> {
        if self.blocked.is_empty() {
            return None;
        }
        peer.keys()
            .iter()
            .filter_map(|key| self.blocked.get(key))
            .copied()
            .reduce(Direction::merge)
    }

    /// The shape of the first key (in table order) naming the peer, else the shape of
    /// every link.
    fn shape_for(&self, peer: &PeerIdentity) -> Option<LinkShape> {
        if self.shaped.is_empty() {
            return None;
        }
        peer.keys()
            .iter()
            .filter(|key| key.as_str() != ALL_LINKS)
            .filter_map(|key| self.shaped.get_key_value(key))
            .min_by(|a, b| a.0.cmp(b.0))
            .or_else(|| self.shaped.get_key_value(ALL_LINKS))
            .map(|(_, s)| *s)
    }
}

/// Keeps a link's frames in order: a frame never leaves before the one queued ahead of it,
/// whatever jitter it drew (as netem does without reordering).
#[derive(Debug, Default)]
pub struct DelayLine {
    last: Option<Instant>,
}

impl DelayLine {
    /// When the next frame, due at `due`, may leave.
    pub fn release(&mut self, due: Instant) -> Instant {
        let at = match self.last {
            Some(last) if last > due => last,
            _ => due,
        };
        self.last = Some(at);
        at
    }
}

/// A token bucket on bytes. Frames are sent first and paid after: a frame larger than the
/// bucket still goes out, and the link then stays quiet until the debt is repaid, so the
/// average rate holds for any frame size.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Burst allowance: a tenth of a second of traffic, at least one typical MTU.
    fn burst(rate: u64) -> f64 {
        (rate as f64 / 10.0).max(1500.0)
    }

    pub fn new(now: Instant, rate: u64) -> Self {
        TokenBucket {
            tokens: Self::burst(rate),
            last: now,
        }
    }

    /// Charges `bytes` sent at `now` at `rate` bytes/s; returns how long the link must stay
    /// quiet before its next frame.
    pub fn charge(&mut self, now: Instant, bytes: usize, rate: u64) -> Duration {
        let rate = rate.max(1);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate as f64).min(Self::burst(rate));
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delay_line_keeps_order_despite_jitter() {
        let t0 = Instant::now();
        let mut line = DelayLine::default();
        assert_eq!(line.release(t0 + ms(100)), t0 + ms(100));
        // Drew less jitter than the frame ahead: waits for it.
        assert_eq!(line.release(t0 + ms(60)), t0 + ms(100));
        assert_eq!(line.release(t0 + ms(130)), t0 + ms(130));
    }

    #[test]
    fn token_bucket_holds_the_rate_after_the_burst() {
        let t0 = Instant::now();
        let rate = 10_000; // burst 1,500 bytes
        let mut bucket = TokenBucket::new(t0, rate);
        assert_eq!(bucket.charge(t0, 1_000, rate), Duration::ZERO);
        // 500 left; 1,500 more puts the link 1,000 bytes in debt: 100 ms at 10 kB/s.
        assert_eq!(bucket.charge(t0, 1_500, rate), ms(100));
        // After repaying, the next frame of 1,000 bytes leaves 100 ms of debt again.
        assert_eq!(bucket.charge(t0 + ms(100), 1_000, rate), ms(100));
        // A long quiet spell refills only up to the burst.
        assert_eq!(bucket.charge(t0 + ms(10_000), 1_500, rate), Duration::ZERO);
        assert_eq!(bucket.charge(t0 + ms(10_000), 100, rate), ms(10));
    }

    #[test]
    fn token_bucket_lets_a_huge_frame_through_then_waits() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0, 1_000_000);
        let wait = bucket.charge(t0, 1_100_000, 1_000_000);
        assert_eq!(wait, Duration::from_secs(1));
    }

    fn peer(id: &str, addr: &str) -> PeerIdentity {
        PeerIdentity {
            id: Some(id.into()),
            addr: Some(addr.into()),
            ..Default::default()
        }
    }

    #[test]
    fn blocks_match_ids_addresses_and_ips_by_direction() {
        let mut f = Faults::new(1);
        let b = peer("b", "10.0.0.2:7000");
        let c = peer("c", "10.0.0.3:7000");
        f.block(&BlockRequest {
            peers: vec!["b".into()],
            direction: Direction::Out,
        })
        .unwrap();
        assert_eq!(f.plan_send(Instant::now(), &b), SendPlan::Drop);
        assert!(!f.drop_incoming(&b));
        assert_eq!(f.plan_send(Instant::now(), &c), SendPlan::Now);
        // Out then in on the same peer: both.
        f.block(&BlockRequest {
            peers: vec!["b".into()],
            direction: Direction::In,
        })
        .unwrap();
        assert!(f.drop_incoming(&b));
        f.block(&BlockRequest {
            peers: vec!["10.0.0.3".into()],
            direction: Direction::Both,
        })
        .unwrap();
        assert!(f.drop_incoming(&c));
        assert!(f.blocks_dial("10.0.0.3:7000", &[]));
        assert!(f.blocks_dial("10.0.0.9:7000", &["b".into()]));
        assert!(!f.blocks_dial("10.0.0.9:7000", &["d".into()]));
        let report = f.report();
        assert_eq!(report.dropped_out, 1);
        assert_eq!(report.dropped_in, 2);
        assert_eq!(report.dials_blocked, 2);
        f.unblock(&UnblockRequest {
            peers: Some(vec!["b".into()]),
        });
        assert_eq!(f.plan_send(Instant::now(), &b), SendPlan::Now);
        assert!(f.drop_incoming(&c));
        f.unblock(&UnblockRequest::default());
        assert!(f.report().is_clear());
    }

    #[test]
    fn an_inbound_connection_is_known_by_ip_before_its_hello() {
        let p = PeerIdentity::accepted("10.0.0.7:53211".parse().unwrap());
        assert!(p.matches("10.0.0.7"));
        assert!(!p.matches("10.0.0.7:53211x"));
        assert!(!p.matches("10.0.0.8"));
    }

    #[test]
    fn the_keys_a_peer_is_looked_up_by_are_exactly_the_keys_that_match_it() {
        let peers = [
            PeerIdentity::accepted("10.0.0.7:53211".parse().unwrap()),
            peer("b", "10.0.0.2:7000"),
            PeerIdentity {
                dialed: Some("[::1]:7000".into()),
                id: Some("v6".into()),
                ..Default::default()
            },
            PeerIdentity::dialed("node-3:7070"),
        ];
        let candidates = [
            "10.0.0.7",
            "10.0.0.2",
            "10.0.0.2:7000",
            "b",
            "::1",
            "0:0::1",
            "[::1]:7000",
            "v6",
            "node-3:7070",
            "node-3",
            "10.0.0.8",
            "*",
        ];
        for p in &peers {
            let keys = p.keys();
            for key in candidates {
                assert_eq!(
                    p.matches(key),
                    keys.contains(&canonical_key(key)),
                    "{p:?} and key {key}: keys() = {keys:?}"
                );
            }
        }
    }

    #[test]
    fn shaping_is_seeded_per_peer_and_validated() {
        let b = peer("b", "10.0.0.2:7000");
        let c = peer("c", "10.0.0.3:7000");
        let plans = |seed| {
            let mut f = Faults::new(seed);
            f.set_shape(&ShapeRequest {
                delay_ms: 100,
                jitter_ms: 20,
                loss: 0.3,
                peers: Some(vec!["b".into()]),
                ..Default::default()
            })
            .unwrap();
            let t0 = Instant::now();
            let out: Vec<Option<Duration>> = (0..200)
                .map(|_| match f.plan_send(t0, &b) {
                    SendPlan::Shaped { not_before, .. } => Some(not_before - t0),
                    SendPlan::Drop => None,
                    SendPlan::Now => panic!("b is shaped"),
                })
                .collect();
            assert_eq!(f.plan_send(t0, &c), SendPlan::Now);
            out
        };
        let a = plans(7);
        assert_eq!(a, plans(7), "same seed, same losses and jitter");
        let lost = a.iter().filter(|p| p.is_none()).count();
        assert!((30..=90).contains(&lost), "lost {lost} of 200 at 30 %");
        for d in a.iter().flatten() {
            assert!(*d >= ms(80) && *d <= ms(120), "{d:?} outside 100±20 ms");
        }
        let mut f = Faults::new(1);
        assert!(
            f.set_shape(&ShapeRequest {
                loss: 1.5,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            f.set_shape(&ShapeRequest {
                rate_bytes_per_sec: Some(0),
                ..Default::default()
            })
            .is_err()
        );
        f.set_shape(&ShapeRequest {
            loss: 1.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.plan_send(Instant::now(), &c), SendPlan::Drop);
        assert!(f.report().shaped.contains_key(ALL_LINKS));
        f.clear_shape();
        assert!(f.report().is_clear());
        assert_eq!(f.report().lost, 1);
    }
}
