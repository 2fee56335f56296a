//! Duplicates: the same content (after normalising case and whitespace)
//! has the same [`content_hash`]; near duplicates are vectors of the same
//! embedder at least [`NEAR_DUPLICATE`] alike.

use sha2::{Digest, Sha256};

/// The default cosine similarity from which two memories are near
/// duplicates.
pub const NEAR_DUPLICATE: f32 = 0.95;

/// SHA-256 (hex) of `content` lower-cased with its whitespace collapsed.
pub fn content_hash(content: &str) -> String {
    let normalised = content.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ");
    hex::encode(Sha256::digest(normalised.as_bytes()))
}

/// Whether a new memory duplicates an existing one.
#[derive(Debug, Clone, PartialEq)]
pub enum Duplicate<Id> {
    /// The same content.
    Exact(Id),
    /// Alike by at least the threshold (the most alike one and how much).
    Near(Id, f32),
}

/// Looks for `hash`/`vector` among `existing` (id, content hash, vector of
/// the same embedder): an exact match first, else the most alike vector at
/// or above `threshold`.
pub fn find_duplicate<'a, Id: Clone + 'a>(
    hash: &str,
    vector: &[f32],
    existing: impl IntoIterator<Item = (&'a Id, &'a str, &'a [f32])>,
    threshold: f32,
) -> Option<Duplicate<Id>> {
    let mut best: Option<(Id, f32)> = None;
    for (id, h, v) in existing {
        if h == hash {
            return Some(Duplicate::Exact(id.clone()));
        }
        let sim = crate::embed::cosine(vector, v);
        if sim >= threshold && best.as_ref().is_none_or(|(_, s)| sim > *s) {
            best = Some((id.clone(), sim));
        }
    }
    best.map(|(id, s)| Duplicate::Near(id, s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::embed::{Embedder, HashingEmbedder};

    #[test]
    fn the_same_content_matches_exactly_and_a_rephrasing_nearly() {
        assert_eq!(content_hash("Use  cargo\nnextest"), content_hash("use cargo nextest "));
        assert_ne!(content_hash("use cargo nextest"), content_hash("use cargo test"));
        let e = HashingEmbedder::new(384);
        let texts = ["The API listens on port 7070", "Deploys go through the staging cluster first"];
        let vs = e.embed(&texts).unwrap();
        let ids = [1u32, 2];
        let hashes: Vec<String> = texts.iter().map(|t| content_hash(t)).collect();
        let existing = || ids.iter().zip(hashes.iter().map(String::as_str)).zip(vs.iter().map(Vec::as_slice)).map(|((i, h), v)| (i, h, v));

        let same = "the api listens on  port 7070";
        let v = e.embed(&[same]).unwrap().remove(0);
        assert_eq!(find_duplicate(&content_hash(same), &v, existing(), NEAR_DUPLICATE), Some(Duplicate::Exact(1)));
        let near = "The API listens on port 7070.";
        let v = e.embed(&[near]).unwrap().remove(0);
        assert!(matches!(find_duplicate(&content_hash(near), &v, existing(), 0.9), Some(Duplicate::Exact(1) | Duplicate::Near(1, _))));
        let other = "Pods run under gVisor by default";
        let v = e.embed(&[other]).unwrap().remove(0);
        assert_eq!(find_duplicate(&content_hash(other), &v, existing(), NEAR_DUPLICATE), None);
    }
}
