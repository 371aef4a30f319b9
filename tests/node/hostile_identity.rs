//! Issue 11, identity: an attacker with raw TCP against a five-node network of real
//! `peerlab node` processes. It completes the handshake with a key of its own (the crate's
//! public identity code signs for it), then forges what used to do lasting harm: a `#LEFT`
//! for a live member, a `#DEAD` and a member list at incarnation `u64::MAX`, a hello with a
//! stolen id. Every node must keep the full, correct membership (ids and addresses), a new
//! node must still join, and a broadcast must still reach every node.

use std::collections::BTreeSet;
use std::time::Duration;

use peerlab::node::identity::Identity;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::support::attacker::{Attacker, membership_flood, read_frame_within, send, until_closed};
use crate::support::cluster::{Cluster, Spec};
use crate::support::poll_until;

const WITHIN: Duration = Duration::from_secs(60);
const ATTACKER: &str = "attacker";
/// Nobody listens there: once the attacker hangs up, the network declares it dead.
const ATTACKER_ADDR: &str = "127.0.0.1:9";

fn flood(kind: &str, title: &str, member: Value) -> Value {
    let flood_id = format!("{:064x}", rand_id(&member, title));
    membership_flood(&flood_id, ATTACKER, title, kind, member)
}

/// A flood id of the attacker's choosing, distinct per forgery.
fn rand_id(member: &Value, title: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (member.to_string(), title).hash(&mut h);
    u128::from(h.finish())
}

/// (id, addr) of every member each node lists, as expected: exactly `expect`.
async fn membership_is(cluster: &Cluster, expect: &BTreeSet<(String, String)>) -> Option<()> {
    for status in cluster.statuses().await? {
        let seen: BTreeSet<(String, String)> = status
            .members
            .iter()
            .map(|m| (m.id.clone(), m.addr.clone()))
            .collect();
        if &seen != expect {
            return None;
        }
    }
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identities_change_no_membership() {
    let mut cluster = Cluster::new();
    cluster.genesis_and_peers(4, &[]).await;
    let statuses = cluster.wait_formed(2, WITHIN).await;
    let expect: BTreeSet<(String, String)> = statuses
        .iter()
        .map(|s| (s.id.clone(), s.addr.clone()))
        .collect();
    assert_eq!(expect.len(), 5);
    for s in &statuses {
        assert_eq!(s.public_key.len(), 64, "{} reports its public key", s.id);
    }
    let target = &cluster.nodes[1];
    let victim = cluster.nodes[2].id().to_string();
    let me = Attacker::with_key(Identity::from_secret([0x5a; 32]), ATTACKER, ATTACKER_ADDR);

    // The victim's genuine signed record, as any member hands it out.
    let mut query = me.handshake(target.ports.listen, "query").await;
    send(&mut query, &json!({"type": "give-nodes-in-network"})).await;
    let list = read_frame_within(&mut query, Duration::from_secs(10))
        .await
        .expect("the member list");
    let genuine = list["members"]
        .as_array()
        .and_then(|m| m.iter().find(|r| r["id"] == victim.as_str()))
        .cloned()
        .expect("the victim in the list");

    // A member list that moves the victim to our address at u64::MAX, signed by us.
    let mut moved = genuine.clone();
    moved["addr"] = json!(ATTACKER_ADDR);
    moved["incarnation"] = json!(u64::MAX);
    moved["key"] = json!(me.key.public_hex());
    moved["sig"] = json!(
        me.key
            .sign_record(&victim, ATTACKER_ADDR, u64::MAX, "alive")
    );
    send(
        &mut query,
        &json!({"type": "nodes-in-network", "members": [moved]}),
    )
    .await;
    drop(query);

    // Over a link: a forged leave (the victim's alive signature on a leave), a forged
    // death at u64::MAX, and an unsigned leave.
    let mut link = me.handshake(target.ports.listen, "link").await;
    let mut left = genuine.clone();
    left["state"] = json!("left");
    let mut dead = genuine.clone();
    dead["state"] = json!("dead");
    dead["incarnation"] = json!(u64::MAX);
    let mut unsigned = genuine.clone();
    unsigned["state"] = json!("left");
    unsigned["sig"] = json!("");
    for (kind, title, member) in [
        ("left", "#LEFT", left),
        ("dead", "#DEAD", dead),
        ("left", "#LEFT", unsigned),
    ] {
        send(&mut link, &flood(kind, title, member)).await;
    }

    // A hello that steals a living id, with another key and the last incarnation.
    for intent in ["query", "link"] {
        let mut thief = TcpStream::connect(target.ports.listen)
            .await
            .expect("connect");
        let claim =
            Attacker::with_key(me.key.clone(), &victim, ATTACKER_ADDR).incarnation(u64::MAX);
        send(&mut thief, &claim.hello(intent)).await;
        let answer = until_closed(&mut thief).await;
        assert!(
            matches!(answer.as_slice(), [d] if d["type"] == "disconnect"),
            "a stolen id is refused: {answer:?}"
        );
    }
    drop(link);

    poll_until(WITHIN, "identity refusals counted", || async {
        let n = target.status().await?.counters.identity_refused;
        (n >= 5).then_some(())
    })
    .await;
    // The attacker itself was a member for as long as its link lasted; then only the five.
    poll_until(WITHIN, "the full, correct membership on every node", || {
        membership_is(&cluster, &expect)
    })
    .await;

    // A new node still joins, and a broadcast reaches every node.
    let genesis = cluster.nodes[0].addr();
    cluster.start(Spec::new("p005").genesis(&genesis)).await;
    cluster.wait_formed(2, WITHIN).await;
    let id = cluster.nodes[5]
        .client
        .broadcast("#BROADCAST", "still one network")
        .await
        .expect("broadcast accepted");
    poll_until(WITHIN, "the broadcast everywhere", || async {
        for node in &cluster.nodes {
            if !node.messages().await?.iter().any(|m| m.id == id) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let statuses = cluster.statuses().await.expect("statuses");
    for s in &statuses {
        let addrs: Vec<&str> = s.members.iter().map(|m| m.addr.as_str()).collect();
        assert!(
            !addrs.contains(&ATTACKER_ADDR),
            "{} lists the attacker's address: {addrs:?}",
            s.id
        );
        assert_eq!(s.members.len(), 6, "{}: {:?}", s.id, s.members);
    }
}
