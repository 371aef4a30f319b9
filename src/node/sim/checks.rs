//! Whole-network invariants over the running nodes of a [`Sim`], as `Result`s so that a
//! test can poll them until they hold and then report the one that does not.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::Sim;

impl Sim {
    /// The neighbour graph of the running nodes (edges to others are left out).
    pub fn graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let running: BTreeSet<String> = self.running().into_iter().collect();
        running
            .iter()
            .map(|n| {
                let adj = self
                    .neighbours(n)
                    .into_iter()
                    .filter(|p| running.contains(p))
                    .collect();
                (n.clone(), adj)
            })
            .collect()
    }

    /// Hop distances from `from` in the neighbour graph.
    pub fn distances(&self, from: &str) -> BTreeMap<String, u32> {
        let graph = self.graph();
        let mut dist = BTreeMap::from([(from.to_string(), 0u32)]);
        let mut queue = VecDeque::from([from.to_string()]);
        while let Some(n) = queue.pop_front() {
            let d = dist[&n];
            for m in graph.get(&n).into_iter().flatten() {
                if !dist.contains_key(m) {
                    dist.insert(m.clone(), d + 1);
                    queue.push_back(m.clone());
                }
            }
        }
        dist
    }

    /// Every running node lists exactly the running nodes as members.
    pub fn check_members(&self) -> Result<(), String> {
        let running: Vec<String> = self.running();
        for n in &running {
            let members = self.members(n);
            if members != running {
                return Err(format!(
                    "{n} lists members {members:?}, the running nodes are {running:?}"
                ));
            }
        }
        Ok(())
    }

    /// Links are symmetric and each pair shares one connection: A lists B iff B lists A,
    /// over the same pipe.
    pub fn check_links(&self) -> Result<(), String> {
        for n in self.running() {
            for (peer, conn) in self.machine(&n).link_conns() {
                let Some((other, other_conn)) = self.peer_end(&n, conn) else {
                    return Err(format!("{n}'s link to {peer} is not an open connection"));
                };
                if other != peer {
                    return Err(format!("{n}'s link to {peer} ends at {other}"));
                }
                let back = self.machine(&peer).link_conns();
                if !back.iter().any(|(id, c)| *id == n && *c == other_conn) {
                    return Err(format!(
                        "{n} lists {peer} as a neighbour but {peer} does not hold that link \
                         (its links: {back:?})"
                    ));
                }
            }
        }
        Ok(())
    }

    /// One connected component over the running nodes.
    pub fn check_connected(&self) -> Result<(), String> {
        let running = self.running();
        let Some(first) = running.first() else {
            return Ok(());
        };
        let reached = self.distances(first);
        let missing: Vec<&String> = running
            .iter()
            .filter(|n| !reached.contains_key(*n))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not reachable from {first}: {missing:?}"))
        }
    }

    /// Every running node has at least `min` running neighbours.
    pub fn check_degrees(&self, min: usize) -> Result<(), String> {
        for (n, adj) in self.graph() {
            if adj.len() < min {
                return Err(format!("{n} has degree {} (< {min}): {adj:?}", adj.len()));
            }
        }
        Ok(())
    }

    /// Every running node has joined.
    pub fn check_joined(&self) -> Result<(), String> {
        let waiting: Vec<String> = self
            .running()
            .into_iter()
            .filter(|n| !self.joined(n))
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("not joined: {waiting:?}"))
        }
    }

    /// The network is formed: everyone joined, connected, at degree `min_degree` or more,
    /// with symmetric links and identical, complete member lists.
    pub fn check_formed(&self, min_degree: usize) -> Result<(), String> {
        self.check_joined()?;
        self.check_links()?;
        self.check_connected()?;
        self.check_degrees(min_degree)?;
        self.check_members()
    }
}
