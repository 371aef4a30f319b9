//! The peer protocol's messages (see `docs/protocol.md`).
//!
//! Every frame is one JSON object tagged by `type`. Commands keep the seed's names
//! (ask-random-node, ask-nodes-to-connect, give-nodes-in-network, broadcast, disconnect) so a
//! reader of the seed recognises them; `hello`, `ping`/`pong` and member state are ours.

use serde::{Deserialize, Serialize};

use super::identity::{Identity, verify_record};

/// Message ids and the anti-entropy digest hash the way the status socket's `members_digest`
/// does: one length-prefixed digest, defined in the contract.
pub use crate::contract::digest::digest;

/// Bumped on any incompatible change; a hello with another version is refused.
/// Version 2: hellos carry a key and a nonce and are answered by a `hello-proof`; member
/// records carry their subject's key and signature.
/// Version 3: `probe-request` and `probe-answer` (indirect probes) on links; a version-2
/// node would close a link on them as bad frames, so the hello refuses it up front instead.
pub const PROTOCOL_VERSION: u32 = 3;

/// Frames above this size are refused and close the connection.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Title of a user broadcast, as in the seed (the node itself takes it from
/// [`crate::contract::default_title`]; the simulator and tests name it here).
#[cfg(any(test, feature = "sim"))]
pub const TITLE_BROADCAST: &str = "#BROADCAST";
pub const TITLE_JOINED: &str = "#JOINED";
pub const TITLE_LEFT: &str = "#LEFT";
pub const TITLE_DEAD: &str = "#DEAD";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Message {
    /// First frame in each direction of every connection.
    Hello(Hello),
    /// Second frame in each direction: the sender's signature over the nonce of the
    /// other side's hello (see [`crate::node::identity`]). A connection is identified only
    /// once it verifies.
    HelloProof {
        /// Ed25519 signature, hex.
        sig: String,
        /// With a network key (`--network-key`): HMAC-SHA256 of the other side's nonce and
        /// the sender's id under it, hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// Asked of a genesis: one random living member other than you and the asker, or null.
    AskRandomNode,
    RandomNode {
        node: Option<MemberRecord>,
    },
    /// Asked of the random peer: some of your neighbours plus yourself.
    AskNodesToConnect,
    NodesToConnect {
        nodes: Vec<MemberRecord>,
    },
    /// Asks for the whole member list; the asker may push its own list first (push-pull).
    GiveNodesInNetwork,
    /// The member list, in chunks of bounded size (see `limits::MEMBER_LIST_CHUNK_BYTES`):
    /// every chunk but the last says `more`, so that the receiver compares its table with
    /// the whole list only once it has it.
    NodesInNetwork {
        members: Vec<MemberRecord>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// Anti-entropy: a digest of the sender's living membership; a mismatch triggers a
    /// push-pull of the full lists.
    MembersDigest {
        digest: String,
        count: usize,
    },
    /// A flooded message: user broadcasts and membership events.
    Broadcast(Flood),
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// On a link: "is `member` (at `addr`) alive? Ask it with my `nonce`." The receiver
    /// dials the member at the address in its own table (never at `addr` if it differs)
    /// with `nonce` as its hello nonce, and answers with a `probe-answer`. SWIM's ping-req:
    /// a suspect that the asker cannot reach may still be reachable from its neighbours.
    ProbeRequest {
        member: String,
        addr: String,
        /// The asker's fresh nonce (hex, [`crate::node::identity::NONCE_BYTES`] bytes).
        nonce: String,
    },
    /// The answer to a `probe-request`, on the same link: with `proof`, the member's own
    /// `hello-proof` over the asker's nonce; without, the member was not reached (or the
    /// request was refused). Only a proof that verifies under the key the asker holds for
    /// the member counts as life.
    ProbeAnswer {
        member: String,
        nonce: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<ProbeProof>,
    },
    /// Sent before closing on purpose, with a reason the other side logs.
    Disconnect {
        reason: String,
        /// The sender refused a link for lack of room (it is at `--max-peers`): a joiner
        /// asks for other nodes at once instead of backing off, since the network is fine.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        full: bool,
    },
}

impl Message {
    /// A disconnect for any reason but lack of room.
    pub fn disconnect(reason: &str) -> Message {
        Message::Disconnect {
            reason: reason.into(),
            full: false,
        }
    }

    /// The refusal of a node at its link limit.
    pub fn no_room() -> Message {
        Message::Disconnect {
            reason: "no room for another link".into(),
            full: true,
        }
    }

    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::HelloProof { .. } => "hello-proof",
            Message::AskRandomNode => "ask-random-node",
            Message::RandomNode { .. } => "random-node",
            Message::AskNodesToConnect => "ask-nodes-to-connect",
            Message::NodesToConnect { .. } => "nodes-to-connect",
            Message::GiveNodesInNetwork => "give-nodes-in-network",
            Message::NodesInNetwork { .. } => "nodes-in-network",
            Message::MembersDigest { .. } => "members-digest",
            Message::Broadcast(_) => "broadcast",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::ProbeRequest { .. } => "probe-request",
            Message::ProbeAnswer { .. } => "probe-answer",
            Message::Disconnect { .. } => "disconnect",
        }
    }
}

/// A member's `hello-proof` relayed by the node that probed it for someone else: the
/// signature and the hello fields it covers besides the nonce, id and key (which the asker
/// has: its own nonce, the member it asked about, and the key it holds for that member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeProof {
    /// The address the member announced in its hello.
    pub addr: String,
    /// The incarnation the member announced in its hello.
    pub incarnation: u64,
    /// The intent of the member's hello (the relaying node's query).
    pub intent: Intent,
    /// The member's signature (hex) over the asker's nonce and those fields.
    pub sig: String,
}

/// Why a connection was opened. A query connection asks and hangs up; a link connection
/// makes the two nodes neighbours (one connection per pair, used in both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Intent {
    Query,
    Link,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub id: String,
    /// The sender's advertised address ("I connected to you, reach me here").
    pub addr: String,
    pub incarnation: u64,
    pub intent: Intent,
    /// The sender's public key (ed25519, hex): the key its id is bound to.
    pub key: String,
    /// Fresh random bytes (hex) the other side must sign in its `hello-proof`.
    pub nonce: String,
    /// The sender's signature of its own alive record (id, addr, incarnation, key), so
    /// that what it says here can be passed on as a signed record.
    pub sig: String,
}

impl Hello {
    /// The sender's own record, as signed by it.
    pub fn record(&self) -> MemberRecord {
        MemberRecord {
            id: self.id.clone(),
            addr: self.addr.clone(),
            incarnation: self.incarnation,
            state: MemberState::Alive,
            key: self.key.clone(),
            sig: self.sig.clone(),
        }
    }
}

impl Intent {
    /// The wire name, as signed in a hello proof.
    pub fn name(self) -> &'static str {
        match self {
            Intent::Query => "query",
            Intent::Link => "link",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberState {
    Alive,
    /// Confirmed dead by failure detection.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// The wire name, as signed in a member record.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

/// One member as the protocol exchanges it. The incarnation orders records about the same
/// member: only the member itself raises it (on start and to refute a false death).
///
/// Signed by its subject over (id, addr, incarnation, state, key). A death cannot be
/// signed by the dead: a `dead` record carries the subject's signature of its `alive`
/// record at that incarnation, so a death report can name only an address and an
/// incarnation the member itself announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: String,
    pub addr: String,
    pub incarnation: u64,
    pub state: MemberState,
    /// The subject's public key (ed25519, hex).
    pub key: String,
    /// The subject's signature (hex), see above.
    pub sig: String,
}

impl MemberRecord {
    /// A record with no key and no signature: what a forger without the key sends, and
    /// the start of one that [`MemberRecord::signed`] completes.
    pub fn unsigned(
        id: impl Into<String>,
        addr: impl Into<String>,
        incarnation: u64,
        state: MemberState,
    ) -> Self {
        MemberRecord {
            id: id.into(),
            addr: addr.into(),
            incarnation,
            state,
            key: String::new(),
            sig: String::new(),
        }
    }

    /// This record with `identity`'s key and signature.
    pub fn signed(mut self, identity: &Identity) -> Self {
        self.key = identity.public_hex().to_string();
        self.sig = identity.sign_record(
            &self.id,
            &self.addr,
            self.incarnation,
            self.signed_state().name(),
        );
        self
    }

    /// The state the subject signed: its own `alive` record for a death.
    fn signed_state(&self) -> MemberState {
        match self.state {
            MemberState::Dead => MemberState::Alive,
            other => other,
        }
    }

    /// Is the signature the subject's (made with the key the record names)?
    pub fn verify(&self) -> bool {
        verify_record(
            &self.id,
            &self.addr,
            self.incarnation,
            self.signed_state().name(),
            &self.key,
            &self.sig,
        )
    }
}

/// Membership change carried by a flood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MemberEvent {
    Joined { member: MemberRecord },
    Left { member: MemberRecord },
    Dead { member: MemberRecord },
}

/// A flooded message: the seed's `id`, `title`, `message`, `time`, plus origin and hops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flood {
    /// SHA-256 hex digest; the de-duplication key network-wide.
    pub id: String,
    pub title: String,
    pub message: String,
    /// Unix seconds (fractional) at the origin.
    pub time: f64,
    /// Id of the originating node.
    pub origin: String,
    /// Links crossed so far.
    pub hops: u32,
    /// Set for membership floods; user broadcasts carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<MemberEvent>,
}

impl Flood {
    /// A membership flood. Its id depends only on the event, so the same event flooded by
    /// several nodes (a revival seen by many) is de-duplicated like one message.
    pub fn membership(event: MemberEvent, origin: &str, time: f64) -> Flood {
        let (title, member) = match &event {
            MemberEvent::Joined { member } => (TITLE_JOINED, member),
            MemberEvent::Left { member } => (TITLE_LEFT, member),
            MemberEvent::Dead { member } => (TITLE_DEAD, member),
        };
        let id = digest(&[title, &member.id, &member.incarnation.to_string()]);
        Flood {
            id,
            title: title.to_string(),
            message: member.addr.clone(),
            time,
            origin: origin.to_string(),
            hops: 0,
            event: Some(event),
        }
    }
}

impl Flood {
    /// A `#JOINED` flood for a member that a node (the witness) just heard from first-hand
    /// after it had been declared dead. Its id names the witness, so it is not mistaken for
    /// the member's own, long-seen join flood of the same incarnation.
    pub fn revival(member: MemberRecord, witness: &str, time: f64) -> Flood {
        let mut flood = Flood::membership(MemberEvent::Joined { member }, witness, time);
        if let Some(MemberEvent::Joined { member }) = &flood.event {
            flood.id = digest(&[
                TITLE_JOINED,
                &member.id,
                &member.incarnation.to_string(),
                "witnessed-by",
                witness,
            ]);
        }
        flood
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_for_room_says_full() {
        let full = serde_json::to_value(Message::no_room()).expect("serialise");
        assert_eq!(full["type"], "disconnect");
        assert_eq!(full["full"], true);
        let other = serde_json::to_value(Message::disconnect("thanks")).expect("serialise");
        assert_eq!(
            other,
            serde_json::json!({"type": "disconnect", "reason": "thanks"})
        );
        let parsed: Message =
            serde_json::from_str(r#"{"type":"disconnect","reason":"bye"}"#).expect("parse");
        assert_eq!(parsed, Message::disconnect("bye"));
    }

    #[test]
    fn broadcast_frame_keeps_the_seed_fields() {
        let flood = Flood {
            id: "ab".into(),
            title: TITLE_BROADCAST.into(),
            message: "Hello world".into(),
            time: 1617555967.12,
            origin: "n1".into(),
            hops: 2,
            event: None,
        };
        let json = serde_json::to_value(Message::Broadcast(flood)).expect("serialise");
        assert_eq!(json["type"], "broadcast");
        assert_eq!(json["title"], "#BROADCAST");
        assert_eq!(json["message"], "Hello world");
        assert_eq!(json["time"], 1617555967.12);
        assert_eq!(json["hops"], 2);
        assert!(json.get("event").is_none());
    }

    #[test]
    fn membership_ids_depend_on_the_event_only() {
        let member = MemberRecord::unsigned("n7", "127.0.0.1:1", 3, MemberState::Dead);
        let a = Flood::membership(
            MemberEvent::Dead {
                member: member.clone(),
            },
            "n1",
            1.0,
        );
        let b = Flood::membership(
            MemberEvent::Dead {
                member: member.clone(),
            },
            "n2",
            2.0,
        );
        let c = Flood::membership(MemberEvent::Left { member }, "n1", 1.0);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.id.len(), 64);
    }

    #[test]
    fn a_revival_is_not_mistaken_for_the_original_join() {
        let member = MemberRecord::unsigned("n7", "127.0.0.1:1", 3, MemberState::Alive);
        let join = Flood::membership(
            MemberEvent::Joined {
                member: member.clone(),
            },
            "n7",
            1.0,
        );
        let by_a = Flood::revival(member.clone(), "a", 2.0);
        let by_b = Flood::revival(member, "b", 2.0);
        assert_ne!(join.id, by_a.id);
        assert_ne!(by_a.id, by_b.id);
        assert_eq!(by_a.title, TITLE_JOINED);
        assert_eq!(by_a.origin, "a");
    }

    #[test]
    fn a_death_carries_the_subjects_alive_signature() {
        let subject = Identity::from_secret([3; 32]);
        let alive = MemberRecord::unsigned("n7", "h:1", 3, MemberState::Alive).signed(&subject);
        assert!(alive.verify());
        let dead = MemberRecord {
            state: MemberState::Dead,
            ..alive.clone()
        };
        assert!(dead.verify(), "a death names what the subject announced");
        let moved = MemberRecord {
            addr: "h:2".into(),
            ..dead.clone()
        };
        assert!(!moved.verify(), "but no address of its own");
        let left = MemberRecord {
            state: MemberState::Left,
            ..alive
        };
        assert!(!left.verify(), "a leave needs the subject's own signature");
        let left = left.signed(&subject);
        assert!(left.verify());
        assert!(!MemberRecord::unsigned("n7", "h:1", 3, MemberState::Alive).verify());
    }

    #[test]
    fn probe_frames_have_the_documented_shape() {
        let request = Message::ProbeRequest {
            member: "n7".into(),
            addr: "h:1".into(),
            nonce: "00ff".into(),
        };
        assert_eq!(
            serde_json::to_value(&request).expect("serialise"),
            serde_json::json!({"type": "probe-request", "member": "n7", "addr": "h:1", "nonce": "00ff"})
        );
        let unreached = Message::ProbeAnswer {
            member: "n7".into(),
            nonce: "00ff".into(),
            proof: None,
        };
        assert_eq!(
            serde_json::to_value(&unreached).expect("serialise"),
            serde_json::json!({"type": "probe-answer", "member": "n7", "nonce": "00ff"})
        );
        let parsed: Message = serde_json::from_str(
            r#"{"type":"probe-answer","member":"n7","nonce":"00ff",
                "proof":{"addr":"h:1","incarnation":3,"intent":"query","sig":"ab"}}"#,
        )
        .expect("parse");
        assert_eq!(
            parsed,
            Message::ProbeAnswer {
                member: "n7".into(),
                nonce: "00ff".into(),
                proof: Some(ProbeProof {
                    addr: "h:1".into(),
                    incarnation: 3,
                    intent: Intent::Query,
                    sig: "ab".into(),
                }),
            }
        );
    }

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
    }
}
