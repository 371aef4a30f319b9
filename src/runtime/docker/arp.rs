//! The host's neighbour (ARP) table, which every container on the host shares.
//!
//! Linux keeps one neighbour table for all network namespaces, bounded by
//! `net.ipv4.neigh.default.gc_thresh3` (1,024 by default). Containers of a run talk to each
//! other (links, probes), so N containers can need up to N x N entries; past the bound the
//! kernel logs "neighbor table overflow!" and new connections between containers, and from
//! the host to their published ports, fail. Measured here: 32 containers form, 100 fall
//! apart within seconds of the table filling. The run cannot fix a host setting, so it says
//! what to change before anything starts.

use std::path::Path;

const GC_THRESH3: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";

/// The bound on the host, when this process can read it (a local Docker engine).
pub fn host_table_bound() -> Option<u64> {
    read_bound(Path::new(GC_THRESH3))
}

fn read_bound(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A warning when `containers` may need more neighbour entries than `bound` allows.
pub fn table_warning(containers: usize, bound: Option<u64>) -> Option<String> {
    let bound = bound?;
    let needed = (containers as u64).saturating_mul(containers as u64);
    if needed <= bound {
        return None;
    }
    let suggested = needed.next_power_of_two().max(4096);
    Some(format!(
        "{containers} containers can need up to {needed} neighbour (ARP) entries, but the host \
         allows {bound} (net.ipv4.neigh.default.gc_thresh3, shared by every container): once \
         it overflows, connections between containers fail and the network will not form. \
         Raise it on the Docker host first: sudo sysctl -w \
         net.ipv4.neigh.default.gc_thresh3={suggested} \
         net.ipv4.neigh.default.gc_thresh2={} net.ipv4.neigh.default.gc_thresh1={}",
        suggested / 2,
        suggested / 4
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_fit_the_default_table() {
        assert_eq!(table_warning(32, Some(1024)), None);
        assert_eq!(
            table_warning(100, None),
            None,
            "unknown bound: nothing to say"
        );
    }

    #[test]
    fn a_hundred_containers_on_the_default_table_are_told_what_to_raise() {
        let w = table_warning(100, Some(1024)).expect("a warning");
        assert!(w.contains("up to 10000"), "{w}");
        assert!(w.contains("allows 1024"), "{w}");
        assert!(w.contains("gc_thresh3=16384"), "{w}");
        assert_eq!(table_warning(100, Some(16384)), None);
    }

    #[test]
    fn the_bound_is_read_from_procfs_text() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gc_thresh3");
        std::fs::write(&file, "1024\n").unwrap();
        assert_eq!(read_bound(&file), Some(1024));
        assert_eq!(read_bound(&dir.path().join("missing")), None);
    }
}
