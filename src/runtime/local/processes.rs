//! The processes of local runs, found on this machine by the `PEERLAB_RUN` variable every
//! node process carries, so `peerlab ps` and `peerlab down` find them whatever directory a run
//! was started from and even when its orchestrator died.

use std::path::Path;
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

/// Every process of this user that a local run started (for `ps` and `down`), whatever
/// directory the run was started from and even if its orchestrator died.
///
/// Only processes whose real uid is this process's real uid are listed: `down --all` (and
/// `down RUN`) must never signal another user's runs, which root could otherwise see and
/// kill, and another user's environment is none of our business (it is not even read).
pub fn scan_processes() -> Vec<RunProcess> {
    // Our own uid as `/proc` reports it, read the same way as every other process's: if
    // it cannot be read, nothing is anybody's, and nothing is signalled.
    let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| real_uid(&status))
    else {
        return Vec::new();
    };
    scan_processes_in(Path::new("/proc"), uid)
}

/// [`scan_processes`] over a `/proc`-like directory, for the processes of `uid`.
pub(crate) fn scan_processes_in(proc: &Path, uid: u32) -> Vec<RunProcess> {
    let Ok(entries) = std::fs::read_dir(proc) else {
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
        let owner = std::fs::read_to_string(entry.path().join("status"))
            .ok()
            .and_then(|status| real_uid(&status));
        if owner != Some(uid) {
            continue;
        }
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

/// The real uid of a process from its `/proc/PID/status` (`Uid: real effective saved fs`).
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Marks every process of a run, so leftovers can be found without any state file.
pub const RUN_ENV: &str = "PEERLAB_RUN=";

/// Stops every process of the given run (or of all runs) of this user (see
/// [`scan_processes`]): SIGTERM, then SIGKILL after the grace.
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{RunProcess, scan_processes_in};

    fn process(proc: &Path, pid: u32, uid: u32, environ: &[&str]) {
        let dir = proc.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("status"),
            format!(
                "Name:\tpeerlab\nState:\tS\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n"
            ),
        )
        .unwrap();
        let mut env = environ.join("\0");
        env.push('\0');
        std::fs::write(dir.join("environ"), env).unwrap();
    }

    #[test]
    fn only_this_users_run_processes_are_found() {
        let proc = tempfile::tempdir().unwrap();
        process(proc.path(), 100, 1000, &["HOME=/h", "PEERLAB_RUN=mine-1"]);
        process(proc.path(), 101, 1001, &["PEERLAB_RUN=theirs-1"]);
        process(proc.path(), 102, 1000, &["HOME=/h"]);
        // A process whose status cannot be read is not ours to signal.
        std::fs::create_dir_all(proc.path().join("103")).unwrap();
        std::fs::write(proc.path().join("103/environ"), "PEERLAB_RUN=unknown\0").unwrap();
        std::fs::create_dir_all(proc.path().join("self")).unwrap();

        let mine = scan_processes_in(proc.path(), 1000);
        assert_eq!(
            mine,
            vec![RunProcess {
                pid: 100,
                run_id: "mine-1".into()
            }]
        );
        let theirs = scan_processes_in(proc.path(), 1001);
        assert_eq!(theirs.len(), 1);
        assert_eq!(theirs[0].run_id, "theirs-1");
        assert!(scan_processes_in(proc.path(), 0).is_empty());
    }
}
