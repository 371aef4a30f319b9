//! Serves the status socket within bounds a hostile client cannot push past.
//!
//! `axum::serve` accepts every connection and keeps each as long as its client likes: 1,100
//! idle connections once took every descriptor of a node, and its status socket and peer
//! accept loop stopped. Here each connection is served by hyper's HTTP/1 server with its
//! own settings, and admitted only within two caps:
//!
//! - at most `max_connections` at once (a semaphore), and
//! - at most `per_ip` of them from one remote address, so one client cannot take every slot
//!   while others (the orchestrator, a joiner's checks) are refused.
//!
//! A connection over a cap is accepted and closed at once: it costs no descriptor beyond
//! that moment, and the kernel's accept queue never fills with sockets nobody will serve.
//! hyper's header-read timeout closes a connection whose request head has not arrived in
//! `header_timeout`; it runs from the moment the connection waits for a request, so it also
//! bounds how long a kept-alive connection may sit idle between requests. `request_timeout`
//! bounds a whole request (a body dribbled in, a handler stuck behind a busy driver).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// The status socket's bounds (flags `--status-*` of `peerlab node`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one remote IP address.
    pub per_ip: usize,
    /// Time to receive a request's head, counted from when the connection waits for one
    /// (so also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Time for one whole request, body and answer included.
    pub request_timeout: Duration,
}

/// Connections open per remote address; a [`Slot`] gives its entry back when dropped.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One admitted connection: its place under both caps until it is dropped.
struct Slot {
    table: Arc<PerIp>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr, all: &Arc<Semaphore>, per_ip: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= per_ip {
            return None;
        }
        let permit = all.clone().try_acquire_owned().ok()?;
        *n += 1;
        Some(Slot {
            table: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

/// Serves `app` on `listener` within `bounds` until `stop` turns true; open connections
/// then finish their request in flight (graceful shutdown) or are dropped after 500 ms.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    bounds: Bounds,
    mut stop: watch::Receiver<bool>,
) {
    let request_timeout = bounds.request_timeout;
    let app = app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| within(request_timeout, req, next),
    ));
    let all = Arc::new(Semaphore::new(bounds.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Some(slot) = per_ip.admit(remote.ip(), &all, bounds.per_ip) else {
                        debug!(%remote, "status connection refused: at its cap");
                        continue;
                    };
                    let service = TowerToHyperService::new(app.clone());
                    connections.spawn(connection(stream, remote, service, bounds, slot, stop.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "status socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

/// One connection under hyper's HTTP/1 settings; it keeps its `slot` until it ends.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    service: TowerToHyperService<Router>,
    bounds: Bounds,
    slot: Slot,
    mut stop: watch::Receiver<bool>,
) {
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%remote, error = %e, "status connection closed");
    }
}

/// Returns once the node stops (the guard `wait_for` returns is not held across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Answers 408 to a request that takes longer than `limit` in all.
async fn within(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_respect_both_caps_and_come_back() {
        let all = Arc::new(Semaphore::new(3));
        let table = Arc::new(PerIp::default());
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        let a1 = table.admit(a, &all, 2).expect("first from a");
        let _a2 = table.admit(a, &all, 2).expect("second from a");
        assert!(table.admit(a, &all, 2).is_none(), "per-IP cap");
        let _b1 = table.admit(b, &all, 2).expect("b has its own share");
        assert!(table.admit(b, &all, 2).is_none(), "total cap");
        drop(a1);
        assert!(
            table.admit(b, &all, 2).is_some(),
            "a dropped slot is free again"
        );
    }
}
