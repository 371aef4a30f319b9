//! Hostile sockets (issue 11, point 3): the status socket under idle floods, slowloris and
//! oversized bodies; `/admin/*` off without a token and guarded with one; idle connections
//! from one address on the peer port. Attackers connect from 127.0.0.2, so the node tells
//! them from the test's own clients and joiners on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::support::cluster::{Cluster, Node, Spec};
use crate::support::{admin_bearer, poll_until};

/// Where attackers connect from: another loopback address than the test's clients.
const ATTACKER_IP: &str = "127.0.0.2";

/// The status socket's idle flood of the issue: it once took every descriptor of a node.
const STATUS_FLOOD: usize = 1_100;

/// The peer-port flood of the issue: it once kept the port at its cap of 128.
const PEER_FLOOD: usize = 500;

/// Descriptors a node may hold while flooded: its status caps per IP (64) and its own
/// sockets and files (a few dozen), far from the flood's size.
const MAX_FDS_UNDER_FLOOD: usize = 200;

const FORMATION: Duration = Duration::from_secs(30);

/// Lets this test process hold a flood of sockets (the soft limit may be 1,024).
fn raise_own_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
    }
}

/// A connection to `to` from [`ATTACKER_IP`].
async fn attacker_connect(to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ATTACKER_IP.parse().expect("an IP"), 0))?;
    socket.connect(to).await
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(usize::MAX)
}

/// Reads until the peer closes (EOF or reset); the time it took, or `None` after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let wait = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// The status code of the first answer on `stream`, read within 10 s.
async fn status_code(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> u16 {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_of_the_status_socket_leaves_it_answering_and_joins_working() {
    raise_own_fd_limit();
    let mut cluster = Cluster::new();
    let g = cluster.start(Spec::new("g0")).await;
    let (status, pid) = (cluster.nodes[g].ports.status, cluster.nodes[g].pid());
    let baseline = open_fds(pid);

    // Connections over the caps are accepted and closed at once: some connects of the
    // flood may be refused or reset, which is the point.
    let mut flood = Vec::with_capacity(STATUS_FLOOD);
    for _ in 0..STATUS_FLOOD {
        if let Ok(stream) = attacker_connect(status).await {
            flood.push(stream);
        }
    }

    let answered = poll_until(
        Duration::from_secs(10),
        "/status to answer a new client while the flood is open",
        || cluster.nodes[g].status(),
    )
    .await;
    assert_eq!(answered.name.as_deref(), Some("g0"));
    let fds = open_fds(pid);
    assert!(
        fds <= baseline + MAX_FDS_UNDER_FLOOD,
        "the node holds {fds} descriptors (baseline {baseline}) under a flood of {STATUS_FLOOD}"
    );

    let genesis = cluster.nodes[g].addr();
    cluster.start(Spec::new("p1").genesis(&genesis)).await;
    cluster.wait_formed(1, FORMATION).await;
    let fds = open_fds(pid);
    assert!(
        fds <= baseline + MAX_FDS_UNDER_FLOOD,
        "{fds} descriptors after a join under the flood (baseline {baseline})"
    );
    drop(flood);
}

#[tokio::test]
async fn slow_and_idle_status_connections_are_closed_at_the_header_timeout() {
    let mut cluster = Cluster::new();
    let g = cluster
        .start(Spec::new("g0").args(["--status-header-timeout", "1s"]))
        .await;
    let status = cluster.nodes[g].ports.status;

    // Slowloris: a request head dribbled one header every 200 ms, never finished.
    let mut slow = TcpStream::connect(status).await.expect("connect");
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: node\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let closed = loop {
        tick.tick().await;
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break started.elapsed();
        }
        // A closed connection shows on a read before the writes start to fail.
        if let Some(took) = closed_within(&mut slow, Duration::from_millis(1)).await {
            break started.elapsed().max(took);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a dribbled request head is still being read after 5 s (header timeout 1 s)"
        );
    };
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );

    // Idle: connected, nothing sent, and after a served request (keep-alive).
    let mut idle = TcpStream::connect(status).await.expect("connect");
    let took = closed_within(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle connection is closed within 5 s (header timeout 1 s)");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    let mut kept = TcpStream::connect(status).await.expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: node\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(status_code(&mut kept).await, 200);
    closed_within(&mut kept, Duration::from_secs(5))
        .await
        .expect("a kept-alive connection left idle is closed within 5 s");

    // The node still serves.
    assert!(cluster.nodes[g].status().await.is_some());
}

#[tokio::test]
async fn a_ten_megabyte_body_gets_413() {
    let mut cluster = Cluster::new();
    let g = cluster.start(Spec::new("g0")).await;
    let status = cluster.nodes[g].ports.status;
    const SIZE: usize = 10 * 1024 * 1024;
    for (path, auth) in [
        ("/broadcast", String::new()),
        (
            "/admin/block",
            format!("Authorization: {}\r\n", admin_bearer()),
        ),
    ] {
        let stream = TcpStream::connect(status).await.expect("connect");
        let (mut read, mut write) = stream.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n{auth}Content-Length: {SIZE}\r\n\r\n"
        );
        // The body is sent while the answer is read: the node answers once it has read
        // more than its cap, and may close before the rest is sent (writes then fail).
        let writer = tokio::spawn(async move {
            write.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..SIZE / chunk.len() {
                write.write_all(&chunk).await?;
            }
            std::io::Result::Ok(())
        });
        assert_eq!(status_code(&mut read).await, 413, "{path}");
        writer.abort();
    }
    let st = cluster.nodes[g].status().await.expect("still answers");
    assert_eq!(st.counters.delivered, 0, "nothing was broadcast");
}

async fn admin_code(node: &Node, method: reqwest::Method, path: &str, auth: Option<&str>) -> u16 {
    let url = format!("http://{}{path}", node.status_addr());
    let mut request = reqwest::Client::new().request(method.clone(), url);
    if method == reqwest::Method::POST {
        request = request.json(&serde_json::json!({"peers": ["nobody:1"]}));
    }
    if let Some(auth) = auth {
        request = request.header(reqwest::header::AUTHORIZATION, auth);
    }
    request
        .send()
        .await
        .expect("the status socket answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn admin_is_off_without_a_token() {
    let mut cluster = Cluster::new();
    let spec = Spec {
        admin_off: true,
        ..Spec::new("g0")
    };
    let g = cluster.start(spec).await;
    let node = &cluster.nodes[g];
    for (method, path) in [
        (reqwest::Method::GET, "/admin/faults"),
        (reqwest::Method::POST, "/admin/block"),
        (reqwest::Method::POST, "/admin/unblock"),
        (reqwest::Method::DELETE, "/admin/shape"),
    ] {
        for auth in [None, Some(admin_bearer())] {
            let code = admin_code(node, method.clone(), path, auth.as_deref()).await;
            assert_eq!(code, 404, "{method} {path} (auth {})", auth.is_some());
        }
    }
    let log = poll_until(Duration::from_secs(5), "the admin-off line", || async {
        let log = node.log_text();
        log.contains("admin API off").then_some(log)
    })
    .await;
    assert_eq!(log.matches("admin API off").count(), 1, "{log}");
}

#[tokio::test]
async fn admin_needs_its_token_which_never_shows() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let token = format!("hostile-sockets-{:x}-{nanos:x}", std::process::id());
    let mut cluster = Cluster::new();
    let g = cluster
        .start(Spec {
            admin_off: true,
            ..Spec::new("g0")
        })
        .await;
    let genesis = cluster.nodes[g].addr();
    // The token from the environment, as runtimes pass it.
    cluster
        .start(Spec {
            admin_off: true,
            env: vec![("PEERLAB_ADMIN_TOKEN".into(), token.clone())],
            ..Spec::new("p1").genesis(&genesis)
        })
        .await;
    cluster.wait_formed(1, FORMATION).await;
    let node = cluster.by_name("p1");

    let right = format!("Bearer {token}");
    let wrong = format!("Bearer {token}x");
    for (method, path) in [
        (reqwest::Method::GET, "/admin/faults"),
        (reqwest::Method::POST, "/admin/block"),
    ] {
        assert_eq!(admin_code(node, method.clone(), path, None).await, 401);
        assert_eq!(
            admin_code(node, method.clone(), path, Some(&wrong)).await,
            401
        );
        assert_eq!(
            admin_code(node, method.clone(), path, Some(&token)).await,
            401
        );
        assert_eq!(
            admin_code(node, method.clone(), path, Some(&right)).await,
            200,
            "{method} {path}"
        );
    }
    assert_eq!(
        admin_code(node, reqwest::Method::POST, "/admin/unblock", Some(&right)).await,
        200
    );

    let status = reqwest::get(format!("http://{}/status", node.status_addr()))
        .await
        .expect("/status")
        .text()
        .await
        .expect("a body");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", node.pid())).expect("cmdline");
    let log = node.log_text();
    assert!(!log.contains("admin API off"), "{log}");
    for (what, text) in [
        ("/status", status),
        ("ps", String::from_utf8_lossy(&cmdline).into_owned()),
        ("the log", log),
    ] {
        assert!(!text.contains(&token), "the admin token shows in {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_peer_connections_from_one_address_do_not_block_a_join() {
    raise_own_fd_limit();
    let mut cluster = Cluster::new();
    let g = cluster.start(Spec::new("g0")).await;
    let listen = cluster.nodes[g].ports.listen;

    // The attacker holds PEER_FLOOD connections and re-opens each as the node closes it
    // (at the hello timeout, or at once when refused).
    let mut attackers = JoinSet::new();
    for _ in 0..PEER_FLOOD {
        attackers.spawn(async move {
            loop {
                if let Ok(mut stream) = attacker_connect(listen).await {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        });
    }
    poll_until(
        Duration::from_secs(10),
        "the node to refuse the attacker's connections over its share",
        || async {
            let st = cluster.nodes[g].status().await?;
            (st.counters.connections_refused > 0).then_some(())
        },
    )
    .await;

    let genesis = cluster.nodes[g].addr();
    cluster.start(Spec::new("p1").genesis(&genesis)).await;
    cluster.start(Spec::new("p2").genesis(&genesis)).await;
    cluster.wait_formed(1, FORMATION).await;
    attackers.abort_all();
}
