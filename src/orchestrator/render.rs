//! Drawings of the overlay: Graphviz DOT for tools, and a standalone SVG for people.
//!
//! The SVG needs no `dot` binary: positions come from [`super::layout`]. Colour says what a
//! reader looks for first: red is a node in trouble (silent, unready, too few neighbours),
//! gold a genesis, other colours the topology groups; dashed links are seen by one end only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::graph::{Overlay, OverlayNode};
use super::layout::layout;
use super::text::xml_escape;

const GROUP_COLOURS: [&str; 8] = [
    "#4e79a7", "#59a14f", "#b07aa1", "#76b7b2", "#9c755f", "#f28e2b", "#bab0ac", "#17becf",
];
const GENESIS_COLOUR: &str = "#f1c232";
const TROUBLE_COLOUR: &str = "#d62728";
const LINK_COLOUR: &str = "#888888";
const ASYMMETRIC_COLOUR: &str = "#e377c2";
/// Up to this many nodes, names are written next to them (larger graphs use hover titles).
const LABEL_MAX_NODES: usize = 40;

/// What the drawing cannot know from the overlay alone.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Shown above the counts, e.g. the topology and run id.
    pub title: Option<String>,
    /// Nodes with fewer neighbours are drawn as in trouble.
    pub min_degree: Option<usize>,
}

fn in_trouble(n: &OverlayNode, opts: &RenderOptions) -> bool {
    !n.answered || !n.ready || opts.min_degree.is_some_and(|m| n.degree < m)
}

fn state(n: &OverlayNode, opts: &RenderOptions) -> &'static str {
    if !n.answered {
        "status did not answer"
    } else if !n.ready {
        "not ready"
    } else if opts.min_degree.is_some_and(|m| n.degree < m) {
        "too few neighbours"
    } else {
        "ok"
    }
}

/// Colour of each group, in order of first appearance (genesis nodes have their own).
fn group_colours(overlay: &Overlay) -> BTreeMap<&str, &'static str> {
    let mut colours = BTreeMap::new();
    for n in overlay.nodes.iter().filter(|n| !n.genesis) {
        let next = GROUP_COLOURS[colours.len() % GROUP_COLOURS.len()];
        colours.entry(n.group.as_str()).or_insert(next);
    }
    colours
}

fn fill<'a>(n: &OverlayNode, opts: &RenderOptions, groups: &BTreeMap<&str, &'a str>) -> &'a str {
    if in_trouble(n, opts) {
        TROUBLE_COLOUR
    } else if n.genesis {
        GENESIS_COLOUR
    } else {
        groups
            .get(n.group.as_str())
            .copied()
            .unwrap_or(GROUP_COLOURS[0])
    }
}

fn headline(overlay: &Overlay) -> String {
    let s = overlay.summary();
    format!(
        "{} nodes ({} answering), {} links ({} one-sided), {} component(s), degree {}/{:.1}/{} min/avg/max",
        s.nodes,
        s.answering,
        s.links,
        s.asymmetric_links.len(),
        s.component_sizes.len(),
        s.min_degree,
        s.avg_degree,
        s.max_degree
    )
}

/// Graphviz DOT (undirected); render with `dot -Tsvg` or any DOT viewer.
pub fn to_dot(overlay: &Overlay) -> String {
    to_dot_with(overlay, &RenderOptions::default())
}

/// The overlay as Graphviz DOT, with a title and colours from `opts`.
pub fn to_dot_with(overlay: &Overlay, opts: &RenderOptions) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let groups = group_colours(overlay);
    let label = match &opts.title {
        Some(t) => format!("{t}\\n{}", headline(overlay)),
        None => headline(overlay),
    };
    let mut out = String::from("graph overlay {\n");
    let _ = writeln!(
        out,
        "  graph [label={}, labelloc=t];",
        q(&label).replace("\\\\n", "\\n")
    );
    out.push_str("  node [shape=circle, style=filled, fontsize=10];\n");
    for n in &overlay.nodes {
        let tooltip = format!(
            "{} {} degree {} members {} ({})",
            n.name,
            n.addr.as_deref().unwrap_or("-"),
            n.degree,
            n.member_count,
            state(n, opts)
        );
        let _ = writeln!(
            out,
            "  {} [fillcolor={}, group={}, tooltip={}{}];",
            q(&n.name),
            q(fill(n, opts, &groups)),
            q(&n.group),
            q(&tooltip),
            if n.genesis { ", penwidth=2" } else { "" }
        );
    }
    for e in &overlay.edges {
        let _ = writeln!(
            out,
            "  {} -- {}{};",
            q(&overlay.nodes[e.a].name),
            q(&overlay.nodes[e.b].name),
            if e.is_symmetric() {
                ""
            } else {
                " [style=dashed]"
            }
        );
    }
    out.push_str("}\n");
    out
}

/// A standalone SVG drawing of the overlay.
pub fn to_svg(overlay: &Overlay) -> String {
    to_svg_with(overlay, &RenderOptions::default())
}

/// The overlay as a standalone SVG (no Graphviz needed), with a title and colours from `opts`.
pub fn to_svg_with(overlay: &Overlay, opts: &RenderOptions) -> String {
    let n = overlay.nodes.len();
    let labels = n <= LABEL_MAX_NODES;
    let plot = if n <= LABEL_MAX_NODES { 640.0 } else { 900.0 };
    let margin = if labels { 70.0 } else { 30.0 };
    let header = 60.0;
    let groups = group_colours(overlay);
    let legend_rows = groups.len() + 4;
    let legend_h = 20.0 * legend_rows as f64 + 20.0;
    let width = plot + 2.0 * margin;
    let height = header + plot + 2.0 * margin + legend_h;
    let radius: f64 = if n <= 40 {
        9.0
    } else if n <= 150 {
        6.0
    } else {
        4.0
    };
    let pos: Vec<(f64, f64)> = layout(overlay)
        .into_iter()
        .map(|(x, y)| (margin + x * plot, header + margin + y * plot))
        .collect();

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let title = opts
        .title
        .clone()
        .unwrap_or_else(|| "peerlab overlay".to_string());
    let _ = writeln!(
        out,
        r#"<text x="{margin:.0}" y="28" font-size="18" font-weight="bold">{}</text>"#,
        xml_escape(&title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{margin:.0}" y="48" font-size="12" fill="#444444">{}</text>"##,
        xml_escape(&headline(overlay))
    );

    out.push_str("<g id=\"links\">\n");
    for e in &overlay.edges {
        let ((x1, y1), (x2, y2)) = (pos[e.a], pos[e.b]);
        let style = if e.is_symmetric() {
            format!(r#"stroke="{LINK_COLOUR}" stroke-width="1.2""#)
        } else {
            format!(r#"stroke="{ASYMMETRIC_COLOUR}" stroke-width="1.6" stroke-dasharray="5 3""#)
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
        );
    }
    out.push_str("</g>\n<g id=\"nodes\">\n");
    for (node, &(x, y)) in overlay.nodes.iter().zip(&pos) {
        let (stroke, stroke_w) = if node.genesis {
            ("#000000", 2.5)
        } else {
            ("#333333", 1.0)
        };
        let tip = format!(
            "{} ({})\naddress {}\ndegree {}, members {}\n{}",
            node.name,
            node.group,
            node.addr.as_deref().unwrap_or("-"),
            node.degree,
            node.member_count,
            state(node, opts)
        );
        let _ = writeln!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{radius}" fill="{}" stroke="{stroke}" stroke-width="{stroke_w}"><title>{}</title></circle>"#,
            fill(node, opts, &groups),
            xml_escape(&tip)
        );
        if labels {
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#222222">{}</text>"##,
                x + radius + 3.0,
                y + 4.0,
                xml_escape(&node.name)
            );
        }
    }
    out.push_str("</g>\n");
    legend(
        &mut out,
        overlay,
        opts,
        &groups,
        margin,
        header + plot + 2.0 * margin,
    );
    out.push_str("</svg>\n");
    out
}

/// Swatches are squares, so that every `<circle>` in the drawing is a node.
fn legend(
    out: &mut String,
    overlay: &Overlay,
    opts: &RenderOptions,
    groups: &BTreeMap<&str, &str>,
    x: f64,
    top: f64,
) {
    let count =
        |pred: &dyn Fn(&OverlayNode) -> bool| overlay.nodes.iter().filter(|n| pred(n)).count();
    let mut entries: Vec<(String, String, bool)> = Vec::new();
    let genesis = count(&|n| n.genesis && !in_trouble(n, opts));
    entries.push((GENESIS_COLOUR.into(), format!("genesis ({genesis})"), false));
    for (group, colour) in groups {
        let c = count(&|n| !n.genesis && n.group == *group && !in_trouble(n, opts));
        entries.push(((*colour).into(), format!("{group} ({c})"), false));
    }
    let trouble = count(&|n| in_trouble(n, opts));
    let what = if opts.min_degree.is_some() {
        "silent, not ready or too few neighbours"
    } else {
        "silent or not ready"
    };
    entries.push((TROUBLE_COLOUR.into(), format!("{what} ({trouble})"), false));
    entries.push((LINK_COLOUR.into(), "link seen by both ends".into(), true));
    let one_sided = overlay.edges.iter().filter(|e| !e.is_symmetric()).count();
    entries.push((
        ASYMMETRIC_COLOUR.into(),
        format!("link seen by one end only ({one_sided})"),
        true,
    ));
    let _ = writeln!(out, r#"<g id="legend" font-size="12">"#);
    for (row, (colour, text, is_line)) in entries.iter().enumerate() {
        let y = top + 20.0 * row as f64;
        if *is_line {
            let dash = if colour == ASYMMETRIC_COLOUR {
                r#" stroke-dasharray="5 3""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<line x1="{x:.0}" y1="{:.0}" x2="{:.0}" y2="{:.0}" stroke="{colour}" stroke-width="2"{dash}/>"#,
                y + 6.0,
                x + 14.0,
                y + 6.0
            );
        } else {
            let _ = writeln!(
                out,
                r##"<rect x="{x:.0}" y="{y:.0}" width="12" height="12" fill="{colour}" stroke="#333333"/>"##
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.0}" y="{:.0}">{}</text>"#,
            x + 22.0,
            y + 11.0,
            xml_escape(text)
        );
    }
    out.push_str("</g>\n");
}
