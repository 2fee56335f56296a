//! Hybrid search's merge: reciprocal-rank fusion (Cormack et al., 2009) of
//! rankings from different retrievers (vector and BM25), which needs no
//! calibration of their scores against each other.

use std::collections::HashMap;
use std::hash::Hash;

/// The usual constant: dampens the weight of the very first ranks.
pub const RRF_K: f32 = 60.0;

/// Fuses `rankings` (each best first): an item scores the sum over the
/// rankings it is in of `1 / (k + rank)` (rank from 1). Best first; ties
/// keep the order in which items were first seen.
pub fn reciprocal_rank_fusion<T: Clone + Eq + Hash>(rankings: &[Vec<T>], k: f32) -> Vec<(T, f32)> {
    let mut scores: HashMap<T, (f32, usize)> = HashMap::new();
    let mut seen = 0usize;
    for ranking in rankings {
        for (i, item) in ranking.iter().enumerate() {
            let add = 1.0 / (k + (i + 1) as f32);
            let e = scores.entry(item.clone()).or_insert_with(|| {
                seen += 1;
                (0.0, seen)
            });
            e.0 += add;
        }
    }
    let mut fused: Vec<(T, f32, usize)> = scores.into_iter().map(|(t, (s, first))| (t, s, first)).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    fused.into_iter().map(|(t, s, _)| (t, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_both_retrievers_rank_well_come_first() {
        let vector = vec!["a", "b", "c", "d"];
        let bm25 = vec!["c", "a", "e"];
        let fused = reciprocal_rank_fusion(&[vector, bm25], RRF_K);
        let order: Vec<&str> = fused.iter().map(|(t, _)| *t).collect();
        // a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, e: 1/63, d: 1/64
        assert_eq!(order, ["a", "c", "b", "e", "d"]);
        assert!((fused[0].1 - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-6);
        // one ranking alone keeps its order; none gives nothing
        let one = reciprocal_rank_fusion(&[vec![3, 1, 2]], RRF_K);
        assert_eq!(one.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [3, 1, 2]);
        assert!(reciprocal_rank_fusion::<u8>(&[], RRF_K).is_empty());
    }

    #[test]
    fn equal_scores_keep_the_order_first_seen() {
        let fused = reciprocal_rank_fusion(&[vec!["x"], vec!["y"]], RRF_K);
        assert_eq!(fused.iter().map(|(t, _)| *t).collect::<Vec<_>>(), ["x", "y"]);
    }
}
