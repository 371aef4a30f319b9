//! A held node (`PEERLAB_HOLD` lists its name), as the Kubernetes runtime keeps one pod of
//! a StatefulSet down: it opens no peer port, its status socket says only that it is alive
//! (so a liveness probe does not restart it), it says so once, and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::BIN;

const HELD_LINE: &str = "held by the orchestrator: waiting for SIGTERM";

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe socket");
    probe.local_addr().expect("probe address").port()
}

/// The status line of `GET path` on `addr`, over a plain HTTP/1.0 request.
fn http_status_line(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("send request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_held_node_opens_no_peer_port_answers_only_liveness_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports_file = dir.path().join("ports.json");
    let status = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args([
            "node", "--name", "peers-1", "--listen", &listen, "--status", &status,
        ])
        .arg("--ports-file")
        .arg(&ports_file)
        .env("PEERLAB_HOLD", "peers-0,peers-1")
        .env("PEERLAB_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peerlab node");
    let stderr = child.stderr.take().expect("stderr pipe");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // The node says it is held: by then it would have bound its sockets if it were not.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains(HELD_LINE)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no `{HELD_LINE}` line within 20s; stderr:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "a held node keeps running until told to stop"
    );
    assert!(
        TcpStream::connect(listen.as_str()).is_err(),
        "a held node must not listen for peers on {listen}"
    );
    assert!(
        !ports_file.exists(),
        "a held node has no peer port, so writes no ports file"
    );
    // Alive for a liveness probe; down for everything an observer or readiness probe asks.
    let live = crate::support::poll_until_blocking(
        Duration::from_secs(10),
        "the held node's status socket to answer /live",
        || {
            TcpStream::connect(status.as_str())
                .ok()
                .map(|_| http_status_line(&status, "/live"))
        },
    );
    assert!(live.contains(" 200 "), "/live of a held node: {live}");
    for path in ["/ready", "/status", "/status?members=false", "/messages"] {
        let line = http_status_line(&status, path);
        assert!(line.contains(" 503 "), "{path} of a held node: {line}");
    }

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("try_wait") {
            break exit;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("a held node did not exit within 10s of SIGTERM");
        }
        std::thread::sleep(crate::support::POLL);
    };
    assert_eq!(exit.code(), Some(0), "held node's exit: {exit:?}");
    let held_lines = seen.iter().filter(|l| l.contains(HELD_LINE)).count();
    assert_eq!(held_lines, 1, "one line says why it waits: {seen:?}");
}

#[test]
fn a_node_not_listed_in_the_hold_list_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports_file = dir.path().join("ports.json");
    let mut child = Command::new(BIN)
        .args([
            "node",
            "--name",
            "peers-2",
            "--listen",
            "127.0.0.1:0",
            "--status",
            "127.0.0.1:0",
        ])
        .arg("--ports-file")
        .arg(&ports_file)
        .env("PEERLAB_HOLD", "peers-0,peers-1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn peerlab node");
    let started = crate::support::poll_until_blocking(
        Duration::from_secs(20),
        "the node not held to write its ports file",
        || {
            std::fs::read_to_string(&ports_file)
                .ok()
                .filter(|t| t.contains("status"))
        },
    );
    let ports: serde_json::Value = serde_json::from_str(&started).expect("ports file is JSON");
    let status = ports["status"]
        .as_str()
        .expect("status address")
        .to_string();
    let live = http_status_line(&status, "/live");
    let _ = child.kill();
    let _ = child.wait();
    assert!(started.contains("peers-2"), "{started}");
    assert!(live.contains(" 200 "), "/live of a running node: {live}");
}
