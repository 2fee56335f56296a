//! What the vector benchmarks read (`scripts/bench/memory_ann.py prepare`
//! writes it): little-endian rows of f32 vectors and u32 ground truth.

#![allow(dead_code, clippy::expect_used)]

pub fn read_f32(path: &std::path::Path, dim: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).expect("vectors");
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>().chunks(dim).map(<[f32]>::to_vec).collect()
}

pub fn read_u32(path: &std::path::Path, k: usize) -> Vec<Vec<u32>> {
    let bytes = std::fs::read(path).expect("ground truth");
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>().chunks(k).map(<[u32]>::to_vec).collect()
}

/// The value at fraction `p` of sorted latencies.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
