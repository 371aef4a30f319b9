//! Digests both sides of the contract compute the same way: SHA-256 over length-prefixed
//! parts. The protocol uses [`digest`] for message ids and membership anti-entropy; the
//! status socket serves [`members_digest`] so that a checker compares member sets without
//! moving the lists.

use sha2::{Digest, Sha256};

/// SHA-256 (hex) over the parts, each prefixed by its length, so that ("ab","c") and
/// ("a","bc") differ.
pub fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// An order-independent digest of a set of member ids: [`digest`] over the sorted,
/// de-duplicated ids, so that no two sets share a digest.
pub fn members_digest<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let sorted: std::collections::BTreeSet<&str> = ids.into_iter().collect();
    let parts: Vec<&str> = sorted.into_iter().collect();
    digest(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
    }

    #[test]
    fn members_digest_ignores_order_and_separates_ids() {
        assert_eq!(members_digest(["b", "a"]), members_digest(["a", "b", "a"]));
        assert_ne!(members_digest(["ab", "c"]), members_digest(["a", "bc"]));
        assert_ne!(members_digest(["a"]), members_digest(["a", "b"]));
    }
}
