//! A way into an overlay network that the orchestrator's machine cannot route to: TCP
//! port forwarding over `docker exec`, as `kubectl port-forward` does over the Kubernetes
//! API.
//!
//! A Swarm's overlay addresses are reachable only from its tasks (and, on a real cluster,
//! the manager may be another machine altogether); what the orchestrator can always reach
//! is the Docker API of a manager. So the runtime keeps one relay container on the overlay
//! (`peerlab relay`, which does nothing) and, for every node, a listener on 127.0.0.1: each
//! connection accepted there becomes one exec of `peerlab pipe ADDR` in the relay, whose
//! stdin and stdout carry the bytes to and from the node's status socket. The observer and
//! the admin calls then use plain `http://127.0.0.1:PORT` URLs, unchanged. HTTP clients
//! keep their connections alive, so an exec is made per connection, not per request.

use std::io;
use std::net::SocketAddr;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::debug;

/// Where the `peerlab` executable sits in the node image.
pub const IMAGE_BINARY: &str = "/peerlab";

/// A local port that reaches `target` inside the overlay through the relay container.
/// Dropping it stops accepting; connections already open end with their exec.
#[derive(Debug)]
pub struct ExecTunnel {
    local: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl ExecTunnel {
    /// Listens on 127.0.0.1 (a port the kernel picks) and forwards every connection to
    /// `target` (`ADDR:PORT` as the relay resolves it) by an exec in `relay`.
    pub async fn open(docker: Docker, relay: String, target: String) -> io::Result<ExecTunnel> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = listener.local_addr()?;
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors and similar: the observer sees the node as
                    // unreachable and retries; nothing to do here but keep accepting.
                    tokio::task::yield_now().await;
                    continue;
                };
                let (docker, relay, target) = (docker.clone(), relay.clone(), target.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward(&docker, &relay, &target, stream).await {
                        debug!(%relay, %target, error = %e, "tunnelled connection ended");
                    }
                });
            }
        });
        Ok(ExecTunnel { local, accept_loop })
    }

    /// The local address to connect to, e.g. for `http://127.0.0.1:PORT`.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for ExecTunnel {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// One connection: an exec of `peerlab pipe target` in the relay, bytes copied both ways
/// until either side ends.
async fn forward(docker: &Docker, relay: &str, target: &str, stream: TcpStream) -> io::Result<()> {
    let exec = docker
        .create_exec(
            relay,
            CreateExecOptions {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                // No TTY: a TTY would rewrite the bytes (line endings) and merge stderr.
                tty: Some(false),
                cmd: Some(vec![IMAGE_BINARY, "pipe", target]),
                ..Default::default()
            },
        )
        .await
        .map_err(io::Error::other)?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(&exec.id, None)
        .await
        .map_err(io::Error::other)?
    else {
        return Err(io::Error::other("the exec started detached"));
    };
    let (mut from_client, mut to_client) = stream.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                // The client is done sending: end the pipe's stdin so it half-closes too.
                input.shutdown().await?;
                return Ok::<(), io::Error>(());
            }
            input.write_all(&buf[..n]).await?;
            input.flush().await?;
        }
    };
    let downstream = async {
        while let Some(chunk) = output.next().await {
            match chunk.map_err(io::Error::other)? {
                LogOutput::StdOut { message } => to_client.write_all(&message).await?,
                LogOutput::StdErr { message } => {
                    debug!(%target, stderr = %String::from_utf8_lossy(&message).trim(), "pipe")
                }
                _ => {}
            }
        }
        to_client.shutdown().await
    };
    // The response side decides when the connection is over: the client half-closing
    // its side (HTTP/1.1 never does while keeping the connection alive) must not cut
    // the answer short.
    let (_, down) = tokio::join!(upstream, downstream);
    down
}

/// The relay's end of a tunnel (`peerlab pipe ADDR`): stdin to a TCP connection to `target`,
/// the connection to stdout, until the connection ends.
pub async fn pipe(target: &str) -> io::Result<()> {
    let stream = TcpStream::connect(target).await?;
    let (mut from_node, mut to_node) = stream.into_split();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let upstream = async {
        tokio::io::copy(&mut stdin, &mut to_node).await?;
        to_node.shutdown().await
    };
    let downstream = async {
        tokio::io::copy(&mut from_node, &mut stdout).await?;
        stdout.flush().await
    };
    tokio::pin!(upstream, downstream);
    // Done when the node closes its side. The client may half-close first (its stdin
    // ends), and the answer must still come; or stdin may stay open for ever (a kept-alive
    // HTTP connection), so waiting for both is no way to end.
    tokio::select! {
        done = &mut downstream => done,
        sent = &mut upstream => {
            sent?;
            downstream.await
        }
    }
}

/// The relay's own process (`peerlab relay`): nothing to do but stay up, on the overlay,
/// until the runtime removes it (SIGTERM) or Ctrl-C.
pub async fn relay() -> io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        interrupted = tokio::signal::ctrl_c() => interrupted,
    }
}
