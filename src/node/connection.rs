//! One TCP connection: a reader task and a writer task around the frame codec.
//!
//! The reader turns frames into [`Event`]s for the driver; the writer drains a bounded queue.
//! Both ends are bounded: a peer that sends garbage is cut off at its first bad frame, and
//! a peer too slow to read its queue is disconnected instead of growing our memory.
//! Shaped frames (see [`super::faults`]) wait in the same bounded queue for their release
//! time and the link's token bucket, so shaping costs no extra memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{debug, warn};

use super::codec::{CodecError, MessageCodec};
use super::driver::Event;
use super::faults::{DelayLine, TokenBucket};
use super::logsafe::{ERROR_CHARS, clip_to};
use super::machine::ConnId;
use super::metrics::WireCounters;
use super::wire::Message;

/// Frames queued for one connection before it counts as too slow.
pub const SEND_QUEUE: usize = 1024;

/// One frame to send, with the shaping the driver decided for it.
#[derive(Debug)]
pub struct Outgoing {
    pub msg: Message,
    /// Held back until then (delay and jitter); `None` sends at once.
    pub not_before: Option<std::time::Instant>,
    /// The link's rate in bytes/s, when limited.
    pub rate: Option<u64>,
}

impl From<Message> for Outgoing {
    fn from(msg: Message) -> Self {
        Outgoing {
            msg,
            not_before: None,
            rate: None,
        }
    }
}

/// The driver's handle on a connection.
pub struct ConnectionHandle {
    pub outbox: mpsc::Sender<Outgoing>,
    reader: AbortHandle,
}

impl ConnectionHandle {
    /// Stops reading at once; the writer flushes what is queued, then closes the socket.
    pub fn close(self) {
        self.reader.abort();
    }
}

pub fn spawn(
    conn: ConnId,
    stream: TcpStream,
    events: mpsc::Sender<Event>,
    counters: Arc<WireCounters>,
    writers: &mut tokio::task::JoinSet<()>,
) -> ConnectionHandle {
    let _ = stream.set_nodelay(true);
    // For log lines about this connection's frames (the machine knows only `conn`).
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let write_peer = peer.clone();
    let (read_half, write_half) = stream.into_split();
    let (outbox, mut queue) = mpsc::channel::<Outgoing>(SEND_QUEUE);

    let write_counters = counters.clone();
    writers.spawn(async move {
        let mut sink = FramedWrite::new(write_half, MessageCodec::default());
        let mut line = DelayLine::default();
        let mut bucket: Option<TokenBucket> = None;
        while let Some(out) = queue.recv().await {
            if let Some(due) = out.not_before {
                let at = line.release(due);
                if at > std::time::Instant::now() {
                    // What is already encoded must not wait behind this frame's delay.
                    if sink.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
            }
            let before = sink.write_buffer().len();
            let kind = out.msg.kind();
            match sink.feed(out.msg).await {
                Ok(()) => {}
                Err(e @ CodecError::TooBig { .. }) => {
                    // Our own frame would break the protocol: say so instead of letting the
                    // link fall silently (the peer would refuse it anyway).
                    warn!(conn, peer = %write_peer, kind, error = %e, "frame not sent; closing this connection");
                    return;
                }
                Err(e) => {
                    debug!(conn, error = %e, "write failed");
                    return;
                }
            }
            let encoded = sink.write_buffer().len().saturating_sub(before);
            write_counters.frames_out.fetch_add(1, Ordering::Relaxed);
            write_counters
                .bytes_out
                .fetch_add(encoded as u64, Ordering::Relaxed);
            if let Some(rate) = out.rate {
                let now = std::time::Instant::now();
                let wait = bucket
                    .get_or_insert_with(|| TokenBucket::new(now, rate))
                    .charge(now, encoded, rate);
                if !wait.is_zero() {
                    if sink.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
            // Flush when nothing else is waiting, so bursts go out in few syscalls.
            if queue.is_empty() && sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.flush().await;
    });

    let reader = tokio::spawn(async move {
        let mut frames = FramedRead::new(read_half, MessageCodec::default());
        loop {
            match frames.next().await {
                Some(Ok((msg, bytes))) => {
                    counters.frames_in.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
                    if events.send(Event::Frame { conn, msg }).await.is_err() {
                        return;
                    }
                }
                Some(Err(CodecError::Io(e))) if is_disconnect(&e) => {
                    let _ = events.send(Event::Closed { conn }).await;
                    return;
                }
                Some(Err(e)) => {
                    warn!(conn, peer = %peer, error = %clip_to(&e.to_string(), ERROR_CHARS), "bad frame; closing this connection");
                    let _ = events.send(Event::BadFrame { conn }).await;
                    return;
                }
                None => {
                    let _ = events.send(Event::Closed { conn }).await;
                    return;
                }
            }
        }
    })
    .abort_handle();

    ConnectionHandle { outbox, reader }
}

/// Errors that mean the peer went away, not that it sent something wrong.
fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | TimedOut
    )
}
