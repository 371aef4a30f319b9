//! One TCP connection: a reader task and a writer task around the frame codec.
//!
//! The reader turns frames into [`Event`]s for the driver; the writer drains a bounded queue.
//! Both ends are bounded: a peer that sends garbage is cut off at its first bad frame, and
//! a peer too slow to read its queue is disconnected instead of growing our memory.

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
use super::machine::ConnId;
use super::metrics::WireCounters;
use super::wire::Message;

/// Frames queued for one connection before it counts as too slow.
pub const SEND_QUEUE: usize = 1024;

/// The driver's handle on a connection.
pub struct ConnectionHandle {
    pub outbox: mpsc::Sender<Message>,
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
    let (read_half, write_half) = stream.into_split();
    let (outbox, mut queue) = mpsc::channel::<Message>(SEND_QUEUE);

    let write_counters = counters.clone();
    writers.spawn(async move {
        let mut sink = FramedWrite::new(write_half, MessageCodec::default());
        while let Some(msg) = queue.recv().await {
            let before = sink.write_buffer().len();
            if let Err(e) = sink.feed(msg).await {
                debug!(conn, error = %e, "write failed");
                return;
            }
            let encoded = sink.write_buffer().len().saturating_sub(before);
            write_counters.frames_out.fetch_add(1, Ordering::Relaxed);
            write_counters
                .bytes_out
                .fetch_add(encoded as u64, Ordering::Relaxed);
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
                    warn!(conn, error = %e, "bad frame; closing this connection");
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
