//! Peer-port connections that have not completed their hello, counted per remote IP.
//!
//! The node caps its inbound connections (`--max-connections`); before this table, one
//! client re-opening 500 idle connections (each closed only at the hello timeout) kept the
//! peer port at that cap, and a joiner was refused. A connection counts against its IP's
//! share from its accept until its hello identifies it (or it closes), so a client that
//! never says hello holds at most `cap` slots. The cap is a share of the total rather than a
//! small number because in a local network every node connects from 127.0.0.1, and a
//! hundred of them may join one genesis at once.

use std::collections::HashMap;
use std::net::IpAddr;

use super::machine::ConnId;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Pending {
    cap: usize,
    by_ip: HashMap<IpAddr, usize>,
    of_conn: HashMap<ConnId, IpAddr>,
}

impl Pending {
    /// A table letting each IP hold at most `cap` connections before their hello.
    pub fn new(cap: usize) -> Self {
        Pending {
            cap,
            ..Pending::default()
        }
    }

    /// Whether another connection from `ip` stays within its share.
    pub fn admits(&self, ip: IpAddr) -> bool {
        self.by_ip.get(&ip).copied().unwrap_or(0) < self.cap
    }

    /// Counts an accepted connection until [`Pending::settle`].
    pub fn add(&mut self, conn: ConnId, ip: IpAddr) {
        *self.by_ip.entry(ip).or_default() += 1;
        self.of_conn.insert(conn, ip);
    }

    /// The connection said hello or closed: it no longer counts (idempotent).
    pub fn settle(&mut self, conn: ConnId) {
        let Some(ip) = self.of_conn.remove(&conn) else {
            return;
        };
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ip_holds_at_most_its_share_until_hellos_settle() {
        let attacker: IpAddr = "127.0.0.2".parse().expect("ip");
        let joiner: IpAddr = "127.0.0.1".parse().expect("ip");
        let mut pending = Pending::new(2);
        pending.add(1, attacker);
        pending.add(2, attacker);
        assert!(!pending.admits(attacker));
        assert!(pending.admits(joiner));
        pending.settle(1);
        pending.settle(1);
        assert!(pending.admits(attacker));
        pending.add(3, attacker);
        assert!(!pending.admits(attacker));
        pending.settle(2);
        pending.settle(3);
        assert!(pending.by_ip.is_empty() && pending.of_conn.is_empty());
    }
}
