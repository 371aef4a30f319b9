//! The layering rules of the crate, checked on its own sources: which module may name which
//! (`crate::…` paths outside comments). Dependencies point one way, from the front ends
//! through the orchestrator to the runtimes and the contract, so that the node can be built
//! and tested without the code that tests it, and a new runtime or exporter touches nothing
//! above it. `docs/architecture.md` draws the same picture.

use std::path::{Path, PathBuf};

/// (layer, what it may name besides itself). A layer is `src/<layer>/` and `src/<layer>.rs`.
const ALLOWED: &[(&str, &[&str])] = &[
    ("contract", &[]),
    ("node", &["contract"]),
    ("topology", &["contract", "DEFAULT_IMAGE"]),
    ("runtime", &["contract", "DEFAULT_IMAGE"]),
    ("export", &["contract", "runtime"]),
];

/// (layer, what it must not name): the orchestrator uses the runtime interface, never a
/// concrete runtime, and nothing of the front ends.
const FORBIDDEN: &[(&str, &[&str])] = &[(
    "orchestrator",
    &[
        "cli",
        "commands",
        "lab",
        "export",
        "runtime::local",
        "runtime::docker",
        "runtime::swarm",
    ],
)];

/// Every `crate::` path named in `source` outside comments, as its first two segments
/// (`runtime::docker`, `contract`); grouped imports (`crate::{a, b::{c, d}}`) give one per
/// item.
fn crate_paths(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let end = path_end(rest);
        found.extend(expand(&rest[..end]).iter().map(|p| two_segments(p)));
        rest = &rest[end..];
    }
    found.retain(|p| !p.is_empty());
    found
}

/// Length of the path (with any braced groups) at the start of `text`.
fn path_end(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            c if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') => return i,
            _ => {}
        }
    }
    text.len()
}

/// The paths a use tree names: `a::{b, c::{d}}` gives `a::b` and `a::c::d`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let prefix = &tree[..open];
    let inner = tree[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&tree[open + 1..]);
    let mut items = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in inner.chars().chain([',']) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    items
        .iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|i| expand(i))
        .map(|p| format!("{prefix}{p}"))
        .collect()
}

/// The first two segments of a path (`runtime::docker` of `runtime::docker::image::x`).
fn two_segments(path: &str) -> String {
    path.split("::").take(2).collect::<Vec<_>>().join("::")
}

fn sources_of(layer: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let single = src.join(format!("{layer}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let mut dirs = vec![src.join(layer)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

fn first_segment(path: &str) -> &str {
    path.split("::").next().unwrap_or(path)
}

#[test]
fn layers_name_only_the_layers_below_them() {
    let mut wrong = Vec::new();
    for (layer, allowed) in ALLOWED {
        let files = sources_of(layer);
        assert!(!files.is_empty(), "no sources found for layer {layer}");
        for file in files {
            let source = std::fs::read_to_string(&file).expect("a readable source file");
            for path in crate_paths(&source) {
                let top = first_segment(&path);
                if top != *layer && !allowed.contains(&top) {
                    wrong.push(format!("{} names crate::{path}", file.display()));
                }
            }
        }
    }
    for (layer, forbidden) in FORBIDDEN {
        for file in sources_of(layer) {
            let source = std::fs::read_to_string(&file).expect("a readable source file");
            for path in crate_paths(&source) {
                if forbidden
                    .iter()
                    .any(|f| path == *f || first_segment(&path) == *f)
                {
                    wrong.push(format!("{} names crate::{path}", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn crate_paths_are_found_in_code_and_groups_but_not_comments() {
    let source = "use crate::runtime::docker::DockerRuntime;\n\
                  // crate::cli is only mentioned\n\
                  /// see [`crate::orchestrator`]\n\
                  use crate::{contract::LinkShape, runtime::{NodeSpec, RunPlan}};\n\
                  let x = crate::DEFAULT_IMAGE; // crate::commands\n";
    assert_eq!(
        crate_paths(source),
        [
            "runtime::docker",
            "contract::LinkShape",
            "runtime::NodeSpec",
            "runtime::RunPlan",
            "DEFAULT_IMAGE"
        ]
    );
}
