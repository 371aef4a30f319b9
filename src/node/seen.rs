//! The de-duplication set of flooded message ids, bounded by count and by age.
//!
//! The seed kept the last 50,000 ids and nothing else; an id older than `max_age` is also
//! forgotten so that memory tracks the recent message rate rather than the node's lifetime.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct SeenSet {
    ids: HashSet<String>,
    order: VecDeque<(Instant, String)>,
    capacity: usize,
    max_age: Duration,
}

impl SeenSet {
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        SeenSet {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            max_age,
        }
    }

    /// Records `id`; returns false when it was already there (a duplicate).
    pub fn insert(&mut self, id: &str, now: Instant) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_string());
        self.order.push_back((now, id.to_string()));
        self.expire(now);
        true
    }

    /// Forgets `id`, so that a later copy is not taken for a duplicate: a forged
    /// membership flood must not stop the genuine event that has the same id.
    pub fn forget(&mut self, id: &str) {
        self.ids.remove(id);
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Forgets ids over the count bound or older than `max_age`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((at, id)) = self.order.front() {
            let too_many = self.order.len() > self.capacity;
            let too_old = now.saturating_duration_since(*at) > self.max_age;
            if !(too_many || too_old) {
                break;
            }
            self.ids.remove(id);
            self.order.pop_front();
        }
    }

    /// When the oldest id ages out (just past `max_age`): the next sweep worth doing.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.order
            .front()
            .map(|(at, _)| *at + self.max_age + std::time::Duration::from_nanos(1))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_detected() {
        let now = Instant::now();
        let mut seen = SeenSet::new(10, Duration::from_secs(60));
        assert!(seen.insert("a", now));
        assert!(!seen.insert("a", now));
        assert!(seen.insert("b", now));
    }

    #[test]
    fn bounded_by_count() {
        let now = Instant::now();
        let mut seen = SeenSet::new(3, Duration::from_secs(60));
        for id in ["a", "b", "c", "d"] {
            seen.insert(id, now);
        }
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains("a"));
        assert!(seen.contains("d"));
    }

    #[test]
    fn bounded_by_age() {
        let start = Instant::now();
        let mut seen = SeenSet::new(100, Duration::from_secs(10));
        seen.insert("old", start);
        seen.insert("new", start + Duration::from_secs(8));
        seen.expire(start + Duration::from_secs(11));
        assert!(!seen.contains("old"));
        assert!(seen.contains("new"));
    }
}
