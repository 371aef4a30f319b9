//! Deterministic node positions for drawing the overlay.
//!
//! Small graphs get a force-directed layout (Fruchterman-Reingold) started from a circle,
//! so the same overlay always draws the same picture and diffs of runs are comparable.
//! Large graphs get a circle ordered by group, where a force layout would only produce a
//! hairball and cost O(n²) per step.

use std::f64::consts::TAU;

use super::graph::Overlay;

/// Above this many nodes the circle layout is used.
pub const FORCE_MAX_NODES: usize = 150;
const ITERATIONS: usize = 300;
/// Pull towards the centre, proportional to distance. Repulsion summed over all nodes is
/// about 1/d (k² = 1/n), so a node with no links settles near 1/sqrt(GRAVITY) from the
/// centre: separate components and lone nodes stay in view next to the rest.
const GRAVITY: f64 = 3.0;

/// Positions in the unit square, one per node of `overlay`, in node order.
pub fn layout(overlay: &Overlay) -> Vec<(f64, f64)> {
    let n = overlay.nodes.len();
    match n {
        0 => Vec::new(),
        1 => vec![(0.5, 0.5)],
        _ if n > FORCE_MAX_NODES => circle(overlay),
        _ => normalise(force_directed(overlay)),
    }
}

/// Nodes on a circle, grouped by group then in node order, so groups form arcs.
fn circle(overlay: &Overlay) -> Vec<(f64, f64)> {
    let n = overlay.nodes.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let (na, nb) = (&overlay.nodes[a], &overlay.nodes[b]);
        nb.genesis
            .cmp(&na.genesis)
            .then(na.group.cmp(&nb.group))
            .then(a.cmp(&b))
    });
    let mut pos = vec![(0.0, 0.0); n];
    for (slot, &i) in order.iter().enumerate() {
        let angle = TAU * slot as f64 / n as f64 - TAU / 4.0;
        pos[i] = (0.5 + 0.5 * angle.cos(), 0.5 + 0.5 * angle.sin());
    }
    pos
}

fn force_directed(overlay: &Overlay) -> Vec<(f64, f64)> {
    let n = overlay.nodes.len();
    let mut pos = circle(overlay);
    let k = (1.0 / n as f64).sqrt();
    for step in 0..ITERATIONS {
        let temperature = 0.1 * (1.0 - step as f64 / ITERATIONS as f64);
        let mut disp = vec![(0.0f64, 0.0f64); n];
        for i in 0..n {
            for j in (i + 1)..n {
                let (dx, dy) = (pos[i].0 - pos[j].0, pos[i].1 - pos[j].1);
                let d = (dx * dx + dy * dy).sqrt().max(1e-6);
                let f = k * k / d;
                let (fx, fy) = (dx / d * f, dy / d * f);
                disp[i].0 += fx;
                disp[i].1 += fy;
                disp[j].0 -= fx;
                disp[j].1 -= fy;
            }
        }
        for e in &overlay.edges {
            let (dx, dy) = (pos[e.a].0 - pos[e.b].0, pos[e.a].1 - pos[e.b].1);
            let d = (dx * dx + dy * dy).sqrt().max(1e-6);
            let f = d * d / k;
            let (fx, fy) = (dx / d * f, dy / d * f);
            disp[e.a].0 -= fx;
            disp[e.a].1 -= fy;
            disp[e.b].0 += fx;
            disp[e.b].1 += fy;
        }
        for (p, d) in pos.iter_mut().zip(&mut disp) {
            d.0 += (0.5 - p.0) * GRAVITY;
            d.1 += (0.5 - p.1) * GRAVITY;
            let len = (d.0 * d.0 + d.1 * d.1).sqrt().max(1e-9);
            let step = len.min(temperature);
            p.0 += d.0 / len * step;
            p.1 += d.1 / len * step;
        }
    }
    pos
}

/// Scales positions into the unit square, keeping the aspect ratio.
fn normalise(pos: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in &pos {
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let span = (x1 - x0).max(y1 - y0).max(1e-9);
    let (ox, oy) = (
        (1.0 - (x1 - x0) / span) / 2.0,
        (1.0 - (y1 - y0) / span) / 2.0,
    );
    pos.into_iter()
        .map(|(x, y)| (ox + (x - x0) / span, oy + (y - y0) / span))
        .collect()
}
