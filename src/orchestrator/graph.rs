//! The overlay the nodes actually formed, rebuilt from their neighbour lists.
//!
//! Each node reports its own neighbours, so one link can be seen by both ends (symmetric)
//! or by one end only (asymmetric: a half-open or half-closed link, worth reporting because
//! broadcasts then flow one way only). Connectivity uses every link either end reports.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::Serialize;

use super::model::NodeObservation;

/// One vertex: a node of the run, whether or not its status socket answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverlayNode {
    /// Node name from the plan.
    pub name: String,
    /// From `/status`; `None` when the node did not answer.
    pub id: Option<String>,
    /// Address the node advertises, when it answered.
    pub addr: Option<String>,
    /// The topology group, from the name (`peers-3` is in `peers`).
    pub group: String,
    /// Whether it is a genesis node.
    pub genesis: bool,
    /// The status socket answered.
    pub answered: bool,
    /// Whether its `/ready` answered 200.
    pub ready: bool,
    /// Distinct neighbours this node itself reports (its own view, what it floods to).
    pub degree: usize,
    /// How many members it knows, itself included.
    pub member_count: usize,
}

/// An undirected link between two vertices (indices into [`Overlay::nodes`], `a < b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// Index of the lower end.
    pub a: usize,
    /// Index of the higher end.
    pub b: usize,
    /// `a` lists `b` among its neighbours.
    pub seen_by_a: bool,
    /// `b` lists `a` among its neighbours.
    pub seen_by_b: bool,
}

impl Edge {
    /// Both ends list each other.
    pub fn is_symmetric(&self) -> bool {
        self.seen_by_a && self.seen_by_b
    }
}

/// A neighbour entry naming a node that is not among the observed live nodes (a dead node
/// still listed, or a stranger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DanglingLink {
    /// Name of the node that lists the stranger.
    pub from: String,
    /// Protocol id of the listed neighbour.
    pub to_id: String,
    /// Address of the listed neighbour, to find out what it was.
    pub to_addr: String,
}

/// The overlay graph of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// Every node of the run, answering or not, in plan order.
    pub nodes: Vec<OverlayNode>,
    /// Every link some node reports, once per pair.
    pub edges: Vec<Edge>,
    /// Neighbour entries that point outside the observed nodes.
    pub dangling: Vec<DanglingLink>,
    adjacency: Vec<Vec<usize>>,
}

/// Shape of the overlay, for reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverlaySummary {
    /// Nodes in the run.
    pub nodes: usize,
    /// Nodes whose status socket answered; connectivity and degrees are over these.
    pub answering: usize,
    /// Distinct links between nodes.
    pub links: usize,
    /// Links reported by one end only, as `[reporting node, silent node]`.
    pub asymmetric_links: Vec<[String; 2]>,
    /// Neighbour entries naming nodes that are not live.
    pub dangling_links: Vec<DanglingLink>,
    /// Sizes of the connected components, largest first.
    pub component_sizes: Vec<usize>,
    /// Node names of each component, largest first.
    pub components: Vec<Vec<String>>,
    /// Fewest neighbours of an answering node.
    pub min_degree: usize,
    /// Mean neighbours over the answering nodes.
    pub avg_degree: f64,
    /// Most neighbours of an answering node.
    pub max_degree: usize,
    /// Longest shortest path, in links; `None` when the overlay is not connected.
    pub diameter: Option<usize>,
}

/// `peers-12` -> `peers`; names without an index are their own group.
pub fn group_of(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((group, index))
            if !group.is_empty()
                && !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit()) =>
        {
            group.to_string()
        }
        _ => name.to_string(),
    }
}

impl Overlay {
    /// Builds the graph from what every node reported.
    pub fn build(observations: &[NodeObservation]) -> Overlay {
        let mut index_of_id: HashMap<&str, usize> = HashMap::new();
        for (i, o) in observations.iter().enumerate() {
            if let Some(s) = &o.status {
                index_of_id.entry(s.id.as_str()).or_insert(i);
            }
        }
        let mut nodes = Vec::with_capacity(observations.len());
        // (low, high) -> reported by low, reported by high
        let mut reported: HashMap<(usize, usize), (bool, bool)> = HashMap::new();
        let mut dangling = Vec::new();
        for (i, o) in observations.iter().enumerate() {
            let mut degree = 0;
            if let Some(s) = &o.status {
                let distinct: BTreeSet<&str> = s
                    .neighbours
                    .iter()
                    .map(|p| p.id.as_str())
                    .filter(|id| *id != s.id)
                    .collect();
                degree = distinct.len();
                for p in s.neighbours.iter().filter(|p| p.id != s.id) {
                    match index_of_id.get(p.id.as_str()) {
                        Some(&j) if j != i => {
                            let key = (i.min(j), i.max(j));
                            let seen = reported.entry(key).or_insert((false, false));
                            if i < j {
                                seen.0 = true;
                            } else {
                                seen.1 = true;
                            }
                        }
                        Some(_) => {}
                        None => dangling.push(DanglingLink {
                            from: o.name.clone(),
                            to_id: p.id.clone(),
                            to_addr: p.addr.clone(),
                        }),
                    }
                }
            }
            nodes.push(OverlayNode {
                name: o.name.clone(),
                id: o.status.as_ref().map(|s| s.id.clone()),
                addr: o.status.as_ref().map(|s| s.addr.clone()),
                group: group_of(&o.name),
                genesis: o.status.as_ref().is_some_and(|s| s.genesis),
                answered: o.status.is_some(),
                ready: o.is_ready(),
                degree,
                member_count: o.status.as_ref().map_or(0, |s| s.member_total()),
            });
        }
        dangling.dedup();
        let mut edges: Vec<Edge> = reported
            .into_iter()
            .map(|((a, b), (seen_by_a, seen_by_b))| Edge {
                a,
                b,
                seen_by_a,
                seen_by_b,
            })
            .collect();
        edges.sort_by_key(|e| (e.a, e.b));
        let mut adjacency = vec![Vec::new(); nodes.len()];
        for e in &edges {
            adjacency[e.a].push(e.b);
            adjacency[e.b].push(e.a);
        }
        Overlay {
            nodes,
            edges,
            dangling,
            adjacency,
        }
    }

    /// Vertices adjacent to `i` by any link, symmetric or not.
    pub fn neighbours(&self, i: usize) -> &[usize] {
        self.adjacency.get(i).map_or(&[], Vec::as_slice)
    }

    /// Connected components of the answering nodes, largest first (ties: first node first).
    pub fn components(&self) -> Vec<Vec<usize>> {
        let mut seen = vec![false; self.nodes.len()];
        let mut comps = Vec::new();
        for start in 0..self.nodes.len() {
            if seen[start] || !self.nodes[start].answered {
                continue;
            }
            seen[start] = true;
            let mut comp = vec![start];
            let mut queue = VecDeque::from([start]);
            while let Some(v) = queue.pop_front() {
                for &w in self.neighbours(v) {
                    if !seen[w] {
                        seen[w] = true;
                        comp.push(w);
                        queue.push_back(w);
                    }
                }
            }
            comp.sort_unstable();
            comps.push(comp);
        }
        comps.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
        comps
    }

    /// Longest shortest path when the answering nodes form one component. A BFS from
    /// every node is O(n·(n+m)): instant at the few hundred nodes a testbed runs.
    pub fn diameter(&self) -> Option<usize> {
        let comps = self.components();
        if comps.len() != 1 {
            return None;
        }
        let mut best = 0;
        for &start in &comps[0] {
            let mut dist = vec![usize::MAX; self.nodes.len()];
            dist[start] = 0;
            let mut queue = VecDeque::from([start]);
            while let Some(v) = queue.pop_front() {
                for &w in self.neighbours(v) {
                    if dist[w] == usize::MAX {
                        dist[w] = dist[v] + 1;
                        best = best.max(dist[w]);
                        queue.push_back(w);
                    }
                }
            }
        }
        Some(best)
    }

    /// Indices of the nodes whose status socket answered.
    pub fn answering(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].answered)
    }

    /// `(min, avg, max)` degree over the answering nodes; zeros when none answered.
    pub fn degree_stats(&self) -> (usize, f64, usize) {
        let degrees: Vec<usize> = self.answering().map(|i| self.nodes[i].degree).collect();
        if degrees.is_empty() {
            return (0, 0.0, 0);
        }
        let min = degrees.iter().copied().min().unwrap_or(0);
        let max = degrees.iter().copied().max().unwrap_or(0);
        let avg = degrees.iter().sum::<usize>() as f64 / degrees.len() as f64;
        (min, avg, max)
    }

    /// The overlay's shape (components, degrees, odd links), as the report shows it.
    pub fn summary(&self) -> OverlaySummary {
        let comps = self.components();
        let (min_degree, avg_degree, max_degree) = self.degree_stats();
        let asymmetric_links = self
            .edges
            .iter()
            .filter(|e| !e.is_symmetric())
            .map(|e| {
                let (a, b) = (&self.nodes[e.a], &self.nodes[e.b]);
                if e.seen_by_a {
                    [a.name.clone(), b.name.clone()]
                } else {
                    [b.name.clone(), a.name.clone()]
                }
            })
            .collect();
        OverlaySummary {
            nodes: self.nodes.len(),
            answering: self.answering().count(),
            links: self.edges.len(),
            asymmetric_links,
            dangling_links: self.dangling.clone(),
            component_sizes: comps.iter().map(Vec::len).collect(),
            components: comps
                .iter()
                .map(|c| c.iter().map(|&i| self.nodes[i].name.clone()).collect())
                .collect(),
            min_degree,
            avg_degree,
            max_degree,
            diameter: self.diameter(),
        }
    }
}
