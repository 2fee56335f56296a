//! The hash chains of the `events` and `changelog` logs: each entry's hash
//! covers its sequence number, the previous entry's hash and its payload,
//! so editing, removing, inserting or reordering an entry breaks the chain
//! at that entry, and [`verify`] names it.

use sha2::{Digest, Sha256};

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored entry, as the chain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// 1, 2, 3… with no gaps.
    pub seq: u64,
    pub prev_hash: String,
    /// The entry's canonical bytes (what it records).
    pub payload: Vec<u8>,
    pub hash: String,
}

/// The hash of entry `seq` after `prev_hash` recording `payload`.
pub fn link_hash(seq: u64, prev_hash: &str, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(seq.to_be_bytes());
    h.update(prev_hash.as_bytes());
    h.update((payload.len() as u64).to_be_bytes());
    h.update(payload);
    hex::encode(h.finalize())
}

/// The entry that follows `prev` (`None`: the first) recording `payload`.
pub fn next(prev: Option<&Link>, payload: Vec<u8>) -> Link {
    let (seq, prev_hash) = prev.map_or((1, GENESIS.to_owned()), |p| (p.seq + 1, p.hash.clone()));
    let hash = link_hash(seq, &prev_hash, &payload);
    Link { seq, prev_hash, payload, hash }
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the chain breaks at entry {seq}: {reason}")]
pub struct Broken {
    pub seq: u64,
    pub reason: &'static str,
}

/// Checks `links` (in stored order, from the first): the number of entries
/// and the last hash, or the first broken entry.
pub fn verify<'a>(links: impl IntoIterator<Item = &'a Link>) -> Result<(u64, String), Broken> {
    let (mut count, mut prev) = (0u64, GENESIS.to_owned());
    for l in links {
        let expected = count + 1;
        if l.seq != expected {
            return Err(Broken { seq: expected, reason: "an entry is missing or out of order" });
        }
        if l.prev_hash != prev {
            return Err(Broken { seq: l.seq, reason: "it does not follow the entry before it" });
        }
        if link_hash(l.seq, &l.prev_hash, &l.payload) != l.hash {
            return Err(Broken { seq: l.seq, reason: "its content does not match its hash" });
        }
        count = l.seq;
        prev = l.hash.clone();
    }
    Ok((count, prev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Link> {
        let mut out: Vec<Link> = Vec::new();
        for i in 0..n {
            let l = next(out.last(), format!("{{\"op\":\"add\",\"i\":{i}}}").into_bytes());
            out.push(l);
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies_and_every_tampering_is_named() {
        let c = chain(5);
        assert_eq!(verify(&c).map(|(n, _)| n), Ok(5));
        assert_eq!(verify(&[] as &[Link]), Ok((0, GENESIS.to_owned())));

        let mut edited = c.clone();
        edited[2].payload = b"{\"op\":\"delete\"}".to_vec();
        assert_eq!(verify(&edited), Err(Broken { seq: 3, reason: "its content does not match its hash" }));

        // edited and re-hashed: the next entry no longer follows it
        let mut rehashed = c.clone();
        rehashed[2].payload = b"{}".to_vec();
        rehashed[2].hash = link_hash(3, &rehashed[2].prev_hash, b"{}");
        assert_eq!(verify(&rehashed).unwrap_err().seq, 4);

        let mut removed = c.clone();
        removed.remove(1);
        assert_eq!(verify(&removed).unwrap_err(), Broken { seq: 2, reason: "an entry is missing or out of order" });

        let mut swapped = c;
        swapped.swap(3, 4);
        assert_eq!(verify(&swapped).unwrap_err().seq, 4);
    }

    #[test]
    fn payload_boundaries_are_part_of_the_hash() {
        // the length prefix keeps ("ab","c") and ("a","bc") apart when chained
        assert_ne!(link_hash(1, "ab", b"c"), link_hash(1, "a", b"bc"));
        assert_ne!(link_hash(1, GENESIS, b"x"), link_hash(2, GENESIS, b"x"));
    }
}
