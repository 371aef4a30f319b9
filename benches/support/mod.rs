//! What every benchmark shares: reading sizes and flags from the command line, the table
//! header, writing the table under `target/bench/`, keeping run directories on request, and
//! reading a process's memory and CPU from /proc. [`lab`] starts local networks as
//! `peerlab::Lab`s (the library API: its waits, faults and checks, nothing of its own),
//! [`docker`] drives Docker and docker-compose; [`processes`] starts nodes of any binary (a
//! baseline too) as plain processes.
//!
//! Each bench is its own crate and uses part of this module only, hence the `allow`.
#![allow(dead_code)]

pub mod docker;
pub mod lab;
pub mod processes;

use std::path::{Path, PathBuf};

/// Network sizes from the command line (`cargo bench --bench NAME -- 10 100`), else from
/// `PEERLAB_BENCH_NODES=10,100`, else `defaults`. Sizes below 2 are dropped with a warning:
/// a network needs a genesis and a peer.
pub fn sizes(defaults: &[usize]) -> Vec<usize> {
    // cargo passes `--bench` to harness-less benches; flags and their values are not sizes.
    let from_args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let chosen = if !from_args.is_empty() {
        from_args
    } else if let Ok(list) = std::env::var("PEERLAB_BENCH_NODES") {
        let parsed: Vec<usize> = list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if parsed.is_empty() {
            eprintln!(
                "PEERLAB_BENCH_NODES={list:?} is not a list of sizes like 10,100; using defaults"
            );
            defaults.to_vec()
        } else {
            parsed
        }
    } else {
        defaults.to_vec()
    };
    let (ok, too_small): (Vec<usize>, Vec<usize>) = chosen.into_iter().partition(|n| *n >= 2);
    if !too_small.is_empty() {
        eprintln!("ignoring sizes {too_small:?}: a network needs at least 2 nodes");
    }
    ok
}

/// Values of `--NAME VALUE` or `--NAME=VALUE`, comma lists split, in order.
pub fn flag_values(name: &str) -> Vec<String> {
    let long = format!("--{name}");
    let with_eq = format!("{long}=");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut values = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == long {
            if let Some(v) = args.get(i + 1) {
                values.push(v.clone());
            }
            i += 2;
            continue;
        }
        if let Some(v) = args[i].strip_prefix(&with_eq) {
            values.push(v.to_string());
        }
        i += 1;
    }
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// `release build, 2 CPUs`: what every table's first line states, since both change the
/// numbers more than any code change does.
pub fn build_line() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!(
        "{profile} build, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

/// The 1, 5 and 15 minute load averages, so a table says how busy the machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// `target/bench/` of this checkout.
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench")
}

/// Prints the table and writes it to `target/bench/<file>`.
pub fn publish(file: &str, text: &str) {
    print!("{text}");
    let dir = bench_dir();
    let path = dir.join(file);
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// Where runs put their node logs: a tempdir removed at the end, or `target/bench/runs/`
/// with `PEERLAB_BENCH_KEEP_LOGS=1`, for a post-mortem of a slow or failed run.
pub struct RunsDir {
    pub path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl RunsDir {
    pub fn new() -> RunsDir {
        if std::env::var_os("PEERLAB_BENCH_KEEP_LOGS").is_some() {
            return RunsDir {
                path: bench_dir().join("runs"),
                _temp: None,
            };
        }
        let temp = tempfile::Builder::new()
            .prefix("peerlab-bench-")
            .tempdir()
            .expect("create a tempdir for the bench's run directories");
        RunsDir {
            path: temp.path().to_path_buf(),
            _temp: Some(temp),
        }
    }

    pub fn kept(&self) -> bool {
        self._temp.is_none()
    }

    /// Tells where the logs are when they are kept.
    pub fn announce(&self) {
        if self.kept() {
            eprintln!("run directories kept in {}", self.path.display());
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// VmRSS of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in clock ticks ([`USER_HZ`] per second).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// /proc counts CPU time in USER_HZ, which the kernel ABI fixes at 100 on x86_64.
pub const USER_HZ: u64 = 100;
