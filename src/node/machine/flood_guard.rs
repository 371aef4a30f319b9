//! What one link may make this node carry: a size bound on every flood and a rate bound
//! on the user broadcasts a link forwards to us.
//!
//! Flooding multiplies whatever enters it: one frame from one hostile peer becomes a copy
//! on every link of every node, a delivery in every node's ring and a log line on every
//! node. Both bounds are checked where a flood enters, per link, before it is marked seen:
//! a copy dropped here can still arrive through an honest neighbour.
//!
//! The rate is a pair of token buckets (messages and bytes per second, bursts of one
//! second's worth) filled lazily from the `now` of each arrival: no timer of its own, so
//! a rate limit never makes the node wake more often.

use std::time::Instant;

use crate::node::wire::Flood;

/// Bytes that a flood's id and origin may take together: a flood id is a 64-character
/// hex digest and a node id is short; anything much longer is not a flood we sent.
pub const MAX_FLOOD_ID_BYTES: usize = 512;

/// The default of `--max-message-bytes`, see [`super::Config::max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The bytes a flood's text takes: title and message, what `--max-message-bytes` bounds.
pub fn content_bytes(title: &str, message: &str) -> usize {
    title.len().saturating_add(message.len())
}

/// Every string a flood carries, for the byte rate.
pub fn flood_bytes(flood: &Flood) -> usize {
    content_bytes(&flood.title, &flood.message)
        .saturating_add(flood.id.len())
        .saturating_add(flood.origin.len())
}

/// A token bucket refilled from the times it is asked at. `rate` 0 lets everything pass.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(now: Instant, rate: u64) -> Self {
        Bucket {
            tokens: rate as f64,
            last: now,
        }
    }

    /// Refills for the time since the last call, capped at one second's worth.
    fn refill(&mut self, now: Instant, rate: u64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
    }

    fn has(&self, rate: u64, amount: f64) -> bool {
        rate == 0 || self.tokens >= amount
    }
}

/// Per-link state: the buckets and what was dropped.
#[derive(Debug, Clone)]
pub(super) struct LinkGuard {
    messages: Bucket,
    bytes: Bucket,
    pub drops: LinkDrops,
}

/// What one link's floods lost to the bounds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkDrops {
    /// Floods over `--max-message-bytes` (or with an overlong id or origin).
    pub oversize: u64,
    /// User broadcasts over the link's rate.
    pub rate_limited: u64,
}

/// Why a flood was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Its content (or id and origin) is over the bound; the sizes are for the log.
    Oversize { bytes: usize },
    /// The link is over its rate.
    RateLimited,
}

/// The rate bounds, from [`super::Config`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Rates {
    pub messages_per_sec: u64,
    pub bytes_per_sec: u64,
}

impl LinkGuard {
    pub fn new(now: Instant, rates: Rates) -> Self {
        LinkGuard {
            messages: Bucket::new(now, rates.messages_per_sec),
            bytes: Bucket::new(now, rates.bytes_per_sec),
            drops: LinkDrops::default(),
        }
    }

    /// Admits a user broadcast if both buckets have room, and charges it; else counts a drop.
    pub fn admit_rate(&mut self, now: Instant, rates: Rates, bytes: usize) -> bool {
        self.messages.refill(now, rates.messages_per_sec);
        self.bytes.refill(now, rates.bytes_per_sec);
        // A flood larger than the whole byte burst could never pass; it is bounded by
        // the size limit instead, so charge it as if it were the burst.
        let bytes = (bytes as f64).min(rates.bytes_per_sec as f64);
        if self.messages.has(rates.messages_per_sec, 1.0)
            && self.bytes.has(rates.bytes_per_sec, bytes)
        {
            self.messages.tokens -= 1.0;
            self.bytes.tokens -= bytes;
            true
        } else {
            self.drops.rate_limited += 1;
            false
        }
    }
}

/// Is the flood within the size bounds? `Err` with its size when not.
pub(super) fn check_size(flood: &Flood, max_message_bytes: usize) -> Result<(), Refusal> {
    let content = content_bytes(&flood.title, &flood.message);
    let ids = flood.id.len().saturating_add(flood.origin.len());
    if content > max_message_bytes || ids > MAX_FLOOD_ID_BYTES {
        Err(Refusal::Oversize {
            bytes: flood_bytes(flood),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RATES: Rates = Rates {
        messages_per_sec: 10,
        bytes_per_sec: 1_000,
    };

    #[test]
    fn a_burst_of_one_second_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut guard = LinkGuard::new(t0, RATES);
        let passed = (0..25).filter(|_| guard.admit_rate(t0, RATES, 10)).count();
        assert_eq!(passed, 10, "one second's worth of messages");
        assert_eq!(guard.drops.rate_limited, 15);
        // Half a second later: five more.
        let later = t0 + Duration::from_millis(500);
        let passed = (0..25)
            .filter(|_| guard.admit_rate(later, RATES, 10))
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn the_byte_rate_bounds_large_messages() {
        let t0 = Instant::now();
        let mut guard = LinkGuard::new(t0, RATES);
        assert!(guard.admit_rate(t0, RATES, 600));
        assert!(!guard.admit_rate(t0, RATES, 600), "1,200 bytes > 1,000/s");
        assert!(guard.admit_rate(t0 + Duration::from_secs(1), RATES, 600));
    }

    #[test]
    fn a_zero_rate_lets_everything_through() {
        let t0 = Instant::now();
        let open = Rates {
            messages_per_sec: 0,
            bytes_per_sec: 0,
        };
        let mut guard = LinkGuard::new(t0, open);
        assert!((0..10_000).all(|_| guard.admit_rate(t0, open, 1 << 20)));
    }

    #[test]
    fn size_counts_title_and_message_and_bounds_ids() {
        let flood = |title: &str, message: &str, id: &str| Flood {
            id: id.into(),
            title: title.into(),
            message: message.into(),
            time: 0.0,
            origin: "n1".into(),
            hops: 0,
            event: None,
        };
        assert!(check_size(&flood("ab", "cde", "x"), 5).is_ok());
        assert_eq!(
            check_size(&flood("ab", "cdef", "x"), 5),
            Err(Refusal::Oversize { bytes: 9 })
        );
        let long_id = "i".repeat(MAX_FLOOD_ID_BYTES);
        assert!(check_size(&flood("", "", &long_id), 5).is_err());
    }
}
