//! The processes of local runs, found on this machine by the `PEERLAB_RUN` variable every
//! node process carries, so `peerlab ps` and `peerlab down` find them whatever directory a run
//! was started from and even when its orchestrator died.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::STOP_GRACE;
use crate::runtime::TeardownReport;

/// A `peerlab node` process started by some run, found through its `PEERLAB_RUN` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunProcess {
    /// Process id, to stop it.
    pub pid: u32,
    /// The run it belongs to, from its `PEERLAB_RUN` variable.
    pub run_id: String,
}

/// Every process on this machine that a local run started (for `ps` and `down`), whatever
/// directory the run was started from and even if its orchestrator died.
pub fn scan_processes() -> Vec<RunProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let run = environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(RUN_ENV.as_bytes()));
        if let Some(run) = run {
            found.push(RunProcess {
                pid,
                run_id: String::from_utf8_lossy(run).into_owned(),
            });
        }
    }
    found
}

/// Marks every process of a run, so leftovers can be found without any state file.
pub const RUN_ENV: &str = "PEERLAB_RUN=";

/// Stops every process of the given run (or of all runs): SIGTERM, then SIGKILL after the grace.
pub async fn stop_processes(run_id: Option<&str>) -> TeardownReport {
    let targets: Vec<RunProcess> = scan_processes()
        .into_iter()
        .filter(|p| run_id.is_none_or(|r| p.run_id == r))
        .collect();
    for p in &targets {
        let pid = Pid::from_raw(p.pid as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
    }
    let still_there = |p: &RunProcess| scan_processes().contains(p);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && targets.iter().any(still_there) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut report = TeardownReport::default();
    for p in &targets {
        if still_there(p) {
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
        }
        report.processes_stopped += 1;
    }
    report
}
