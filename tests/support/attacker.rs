//! A hostile peer that speaks the node's wire protocol over raw TCP (issue 11's tests).
//!
//! It is written by hand, not with the node's own codec and machine, on purpose: an
//! attacker sends what it likes, including frames the node would never send. Only the
//! signing uses the crate's public identity code, so that the attacker can prove a key of
//! its own and get past the handshake; what the tests then check is what a node does
//! with the lies that follow.

use std::net::SocketAddr;
use std::time::Duration;

use peerlab::node::PROTOCOL_VERSION;
use peerlab::node::identity::Identity;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The nonce the attacker's hello asks the node to sign (any 32 hex characters do).
const NONCE: &str = "0123456789abcdef0123456789abcdef";

/// How long the attacker waits for each frame of the node's side of the handshake.
pub const HANDSHAKE_WAIT: Duration = Duration::from_millis(1500);

/// One frame: a 4-byte big-endian length, then JSON (src/node/codec.rs).
pub fn frame(msg: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(msg).expect("serialise");
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Writes one frame; a node that closed the connection makes this panic.
pub async fn send(stream: &mut TcpStream, msg: &Value) {
    stream.write_all(&frame(msg)).await.expect("write a frame");
}

/// The next frame; `None` at EOF, on an error, or for a frame that is not JSON.
pub async fn read_frame(stream: &mut TcpStream) -> Option<Value> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload).await.ok()?;
    serde_json::from_slice(&payload).ok()
}

/// The next frame within `within`; `None` if the node closed the connection, or was silent.
pub async fn read_frame_within(stream: &mut TcpStream, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, read_frame(stream))
        .await
        .ok()
        .flatten()
}

/// Frames until the node closes the connection (each within 10 s, or the test fails).
pub async fn until_closed(stream: &mut TcpStream) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), read_frame(stream)).await {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return frames,
            Err(_) => panic!("the node neither answers nor closes within 10 s: {frames:?}"),
        }
    }
}

/// A membership flood as a node would send it; `flood_id` only has to be new to the node.
pub fn membership_flood(
    flood_id: &str,
    origin: &str,
    title: &str,
    kind: &str,
    member: Value,
) -> Value {
    json!({
        "type": "broadcast", "id": flood_id, "title": title, "message": "", "time": 0.0,
        "origin": origin, "hops": 0, "event": {"kind": kind, "member": member},
    })
}

/// A member record signed by `key`. Signed by a key the attacker made up, it passes the
/// signature check for a member nobody knew, so the limits and the per-source budget must
/// stop it; for a known member it is a forgery (the key is not the member's).
pub fn signed_record(key: &Identity, id: &str, addr: &str, incarnation: u64, state: &str) -> Value {
    json!({
        "id": id, "addr": addr, "incarnation": incarnation, "state": state,
        "key": key.public_hex(), "sig": key.sign_record(id, addr, incarnation, state),
    })
}

/// Who the attacker claims to be: an id and an address, with a key of its own.
pub struct Attacker {
    pub key: Identity,
    pub id: String,
    pub addr: String,
    pub incarnation: u64,
}

impl Attacker {
    /// An attacker with a fresh key, at incarnation 1.
    pub fn new(id: &str, addr: &str) -> Self {
        Attacker::with_key(Identity::generate(), id, addr)
    }

    pub fn with_key(key: Identity, id: &str, addr: &str) -> Self {
        Attacker {
            key,
            id: id.to_string(),
            addr: addr.to_string(),
            incarnation: 1,
        }
    }

    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = incarnation;
        self
    }

    /// The hello frame the attacker opens with.
    pub fn hello(&self, intent: &str) -> Value {
        json!({
            "type": "hello", "version": PROTOCOL_VERSION, "id": self.id, "addr": self.addr,
            "incarnation": self.incarnation, "intent": intent, "key": self.key.public_hex(),
            "nonce": NONCE,
            "sig": self.key.sign_record(&self.id, &self.addr, self.incarnation, "alive"),
        })
    }

    /// The whole handshake with `node`'s peer port: our hello, the node's hello and proof,
    /// then our proof of the key. The open connection, or `None` when the node refused
    /// (closed the connection or answered something else).
    pub async fn try_handshake(&self, node: SocketAddr, intent: &str) -> Option<TcpStream> {
        let mut stream = TcpStream::connect(node)
            .await
            .expect("connect to the peer port");
        // A node may close on a hello it refuses before the whole of it is written.
        stream.write_all(&frame(&self.hello(intent))).await.ok()?;
        let theirs = read_frame_within(&mut stream, HANDSHAKE_WAIT).await?;
        if theirs["type"] != "hello" {
            return None;
        }
        let proof = read_frame_within(&mut stream, HANDSHAKE_WAIT).await?;
        if proof["type"] != "hello-proof" {
            return None;
        }
        let nonce = theirs["nonce"].as_str().unwrap_or_default();
        let sig = self
            .key
            .hello_proof(nonce, &self.id, &self.addr, self.incarnation, intent);
        let ours = json!({"type": "hello-proof", "sig": sig});
        stream.write_all(&frame(&ours)).await.ok()?;
        Some(stream)
    }

    /// [`Attacker::try_handshake`] where the node must accept.
    pub async fn handshake(&self, node: SocketAddr, intent: &str) -> TcpStream {
        self.try_handshake(node, intent).await.unwrap_or_else(|| {
            panic!(
                "{node} refused the attacker's {intent} handshake as {:?}",
                self.id
            )
        })
    }
}
