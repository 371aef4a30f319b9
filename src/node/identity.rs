//! A node's identity: an ed25519 key pair, and the two things it signs.
//!
//! Without it anyone who reaches the peer port can claim to be any member (issue 11). With
//! it a node's id is bound to its public key: the hello proves possession of the key
//! ([`Identity::hello_proof`], over a nonce the other side just chose), and every member
//! record is signed by its subject ([`Identity::sign_record`]), so an address, an
//! incarnation or a leave can only come from the member itself, however many hands the
//! record went through.
//!
//! Signatures cover a domain-separated byte string of length-prefixed fields, so that a
//! signature made for one purpose (or one field split) can never be replayed as another.
//! Keys and signatures travel as lowercase hex. The crate's own identity code is public so
//! that tests and other implementations of the protocol can speak it.

use std::fmt;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngExt;

/// Domain of the hello proof (the version names the handshake, not the crate).
const HELLO_DOMAIN: &str = "peerlab-hello-v2";
/// Domain of member records.
const RECORD_DOMAIN: &str = "peerlab-record-v1";

/// Domain of the network key's MAC over a hello nonce.
const NETWORK_DOMAIN: &str = "peerlab-network-v1";

/// Bytes of a nonce in a hello (hex on the wire: twice as many characters).
pub const NONCE_BYTES: usize = 16;

/// A node's signing key and its public half in the wire form. `Debug` shows only the
/// public key: configurations are logged and printed in tests.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    public_hex: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public_hex)
            .finish()
    }
}

impl Identity {
    /// The identity of a 32-byte secret.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&secret);
        let public_hex = hex::encode(key.verifying_key().as_bytes());
        Identity { key, public_hex }
    }

    /// A fresh identity from the operating system's randomness.
    pub fn generate() -> Self {
        Identity::from_rng(&mut rand::rng())
    }

    /// An identity drawn from `rng` (the simulator's seeded one keeps runs repeatable).
    pub fn from_rng<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        Identity::from_secret(rng.random())
    }

    /// The key kept in `path` (64 hex characters), or a new one written there with mode
    /// 0600 when the file does not exist: a restarted node keeps its identity, so the
    /// network lets it back in at once instead of after its old incarnation dies.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Identity::parse_secret(text.trim())
                .with_context(|| format!("bad key file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity::generate();
                identity
                    .write_secret(path)
                    .with_context(|| format!("cannot create the key file {}", path.display()))?;
                Ok(identity)
            }
            Err(e) => {
                Err(e).with_context(|| format!("cannot read the key file {}", path.display()))
            }
        }
    }

    fn parse_secret(text: &str) -> anyhow::Result<Self> {
        let mut secret = [0u8; 32];
        if hex::decode_to_slice(text, &mut secret).is_err() {
            bail!("expected 64 hex characters (an ed25519 secret key)");
        }
        Ok(Identity::from_secret(secret))
    }

    fn write_secret(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // create_new: two processes racing for one file cannot both write a key.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        writeln!(file, "{}", hex::encode(self.key.to_bytes()))
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> &str {
        &self.public_hex
    }

    /// Signs a member record about this node: `state` is the wire name (`alive`, `left`).
    /// Returns the signature, hex.
    pub fn sign_record(&self, id: &str, addr: &str, incarnation: u64, state: &str) -> String {
        let bytes = record_bytes(id, addr, incarnation, state, &self.public_hex);
        hex::encode(self.key.sign(&bytes).to_bytes())
    }

    /// The answer to a peer's hello: a signature over the peer's nonce and this node's own
    /// hello fields (`intent` by its wire name, `link` or `query`). Returns it, hex.
    pub fn hello_proof(
        &self,
        peer_nonce: &str,
        id: &str,
        addr: &str,
        incarnation: u64,
        intent: &str,
    ) -> String {
        let bytes = hello_bytes(peer_nonce, id, &self.public_hex, addr, incarnation, intent);
        hex::encode(self.key.sign(&bytes).to_bytes())
    }
}

/// An optional network-wide secret, as memberlist's keyring: with one, a hello proof must
/// also carry an HMAC-SHA256 of the other side's nonce under it, so a process without the
/// secret cannot complete a handshake, whatever key it has. `Debug` hides it.
#[derive(Clone)]
pub struct NetworkKey([u8; 32]);

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

impl NetworkKey {
    /// 64 hex characters are the key itself; any other text is a passphrase, whose SHA-256
    /// is the key. Empty text is refused (it would be a secret everyone knows).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        use sha2::Digest;
        let text = text.trim();
        if text.is_empty() {
            bail!("the network key is empty");
        }
        let mut key = [0u8; 32];
        if text.len() == 64 && hex::decode_to_slice(text, &mut key).is_ok() {
            return Ok(NetworkKey(key));
        }
        Ok(NetworkKey(sha2::Sha256::digest(text.as_bytes()).into()))
    }

    fn hmac(&self, nonce: &str, id: &str) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        // Any key length is valid for HMAC: this cannot fail.
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&framed(&[NETWORK_DOMAIN, nonce, id]));
        mac
    }

    /// The MAC a node with id `id` sends in answer to `nonce`, hex.
    pub fn mac(&self, nonce: &str, id: &str) -> String {
        use hmac::Mac;
        hex::encode(self.hmac(nonce, id).finalize().into_bytes())
    }

    /// Is `mac` (hex) the one for `nonce` and `id`? Compared in constant time.
    pub fn verify(&self, nonce: &str, id: &str, mac: &str) -> bool {
        use hmac::Mac;
        let Ok(bytes) = hex::decode(mac) else {
            return false;
        };
        self.hmac(nonce, id).verify_slice(&bytes).is_ok()
    }
}

/// A fresh random nonce for a hello, hex.
pub fn nonce() -> String {
    hex::encode(rand::rng().random::<[u8; NONCE_BYTES]>())
}

/// Does `sig` (hex) sign this record with `key` (hex)?
pub fn verify_record(
    id: &str,
    addr: &str,
    incarnation: u64,
    state: &str,
    key: &str,
    sig: &str,
) -> bool {
    verify(key, sig, &record_bytes(id, addr, incarnation, state, key))
}

/// Does `sig` (hex) prove that the sender of a hello with these fields holds `key`, in
/// answer to `my_nonce`?
pub fn verify_hello_proof(
    my_nonce: &str,
    id: &str,
    key: &str,
    addr: &str,
    incarnation: u64,
    intent: &str,
    sig: &str,
) -> bool {
    verify(
        key,
        sig,
        &hello_bytes(my_nonce, id, key, addr, incarnation, intent),
    )
}

/// Hostile input: malformed keys and signatures are simply not valid.
fn verify(key: &str, sig: &str, bytes: &[u8]) -> bool {
    let mut key_bytes = [0u8; 32];
    let mut sig_bytes = [0u8; 64];
    if hex::decode_to_slice(key, &mut key_bytes).is_err()
        || hex::decode_to_slice(sig, &mut sig_bytes).is_err()
    {
        return false;
    }
    let Ok(key) = VerifyingKey::from_bytes(&key_bytes) else {
        return false;
    };
    key.verify(bytes, &Signature::from_bytes(&sig_bytes))
        .is_ok()
}

fn hello_bytes(
    nonce: &str,
    id: &str,
    key: &str,
    addr: &str,
    incarnation: u64,
    intent: &str,
) -> Vec<u8> {
    let incarnation = incarnation.to_string();
    framed(&[HELLO_DOMAIN, nonce, id, key, addr, &incarnation, intent])
}

fn record_bytes(id: &str, addr: &str, incarnation: u64, state: &str, key: &str) -> Vec<u8> {
    let incarnation = incarnation.to_string();
    framed(&[RECORD_DOMAIN, id, addr, &incarnation, state, key])
}

/// Each part prefixed by its length: ("ab", "c") and ("a", "bc") sign differently.
fn framed(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_verifies_only_as_signed() {
        let me = Identity::from_secret([7; 32]);
        let sig = me.sign_record("n1", "h:1", 5, "alive");
        let key = me.public_hex();
        assert!(verify_record("n1", "h:1", 5, "alive", key, &sig));
        assert!(!verify_record("n1", "h:2", 5, "alive", key, &sig));
        assert!(!verify_record("n1", "h:1", 6, "alive", key, &sig));
        assert!(!verify_record("n1", "h:1", 5, "left", key, &sig));
        let other = Identity::from_secret([8; 32]);
        assert!(!verify_record(
            "n1",
            "h:1",
            5,
            "alive",
            other.public_hex(),
            &sig
        ));
        assert!(!verify_record("n1", "h:1", 5, "alive", "zz", &sig));
        assert!(!verify_record("n1", "h:1", 5, "alive", key, "00"));
    }

    #[test]
    fn a_hello_proof_is_bound_to_the_nonce_and_the_fields() {
        let me = Identity::from_secret([1; 32]);
        let key = me.public_hex();
        let proof = me.hello_proof("abcd", "n1", "h:1", 3, "link");
        assert!(verify_hello_proof(
            "abcd", "n1", key, "h:1", 3, "link", &proof
        ));
        assert!(!verify_hello_proof(
            "abce", "n1", key, "h:1", 3, "link", &proof
        ));
        assert!(!verify_hello_proof(
            "abcd", "n2", key, "h:1", 3, "link", &proof
        ));
        assert!(!verify_hello_proof(
            "abcd", "n1", key, "h:1", 3, "query", &proof
        ));
        // A record signature is no hello proof, whatever the fields.
        let rec = me.sign_record("n1", "h:1", 3, "link");
        assert!(!verify_hello_proof(
            "abcd", "n1", key, "h:1", 3, "link", &rec
        ));
    }

    #[test]
    fn a_network_key_mac_needs_the_secret() {
        let key = NetworkKey::parse("correct horse battery staple").expect("a passphrase");
        let mac = key.mac("abcd", "n1");
        assert!(key.verify("abcd", "n1", &mac));
        assert!(!key.verify("abce", "n1", &mac));
        assert!(!key.verify("abcd", "n2", &mac));
        assert!(!key.verify("abcd", "n1", "zz"));
        let other = NetworkKey::parse(&"ab".repeat(32)).expect("hex");
        assert!(!other.verify("abcd", "n1", &mac));
        assert!(NetworkKey::parse("  ").is_err());
    }

    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let first = Identity::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Identity::load_or_create(&path).expect("load");
        assert_eq!(first.public_hex(), again.public_hex());
        std::fs::write(&path, "not a key").expect("write");
        assert!(Identity::load_or_create(&path).is_err());
    }
}
