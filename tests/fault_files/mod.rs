//! The fault topologies of `topologies/` (those with a scenario), shared by the test that
//! runs them on local processes and the one that runs them on Docker.

use std::path::PathBuf;

/// The fault topologies the tests know about: a new one needs a test in both runtimes.
pub const FAULT_TOPOLOGIES: &[&str] = &[
    "churn.yaml",
    "frozen-node.yaml",
    "genesis-loss.yaml",
    "mass-failure.yaml",
    "partition-heal.yaml",
    "shaped-links.yaml",
];

/// Files of `topologies/` whose scenario has at least one step, sorted.
pub fn fault_topologies() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("topologies");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read topologies/") {
        let path = entry.expect("read topologies/").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read topology");
        let topology = peerlab::topology::parse_str(&text, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{} does not validate: {e}", path.display()));
        if !topology.scenario.is_empty() {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The file name of a topology path.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}
