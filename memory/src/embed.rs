//! Embeddings: the [`Embedder`] seam (a local model, an OpenAI-compatible
//! provider, or [`HashingEmbedder`]) and the vector maths search needs.
//! Every vector is stored with its embedder's [`Embedder::id`]; vectors of
//! different ids are never compared.

/// What turns texts into vectors.
pub trait Embedder: Send + Sync {
    /// Names the model and dimension (`hash-v1-384`): vectors with another
    /// id are never compared with this one's.
    fn id(&self) -> &str;
    fn dimension(&self) -> usize;
    /// One unit-length vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Why texts were not embedded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The provider could not be reached or failed.
    #[error("embedding provider unavailable: {0}")]
    Unavailable(String),
    /// The provider answered something unusable (wrong count or dimension).
    #[error("embedding provider answered badly: {0}")]
    BadAnswer(String),
}

/// The deterministic fallback when no model is configured: word unigrams
/// and character 3-grams, signed feature hashing into `dimension` buckets,
/// log-scaled term frequencies, then L2 normalisation. Texts sharing words
/// and spellings land near each other; no meaning is understood. Its
/// output never changes between versions (a stable hash, not std's).
#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dimension: usize,
    id: String,
}

impl HashingEmbedder {
    /// `dimension` at least 8.
    pub fn new(dimension: usize) -> Self {
        let dimension = dimension.max(8);
        Self { dimension, id: format!("hash-v1-{dimension}") }
    }

    fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dimension];
        let lower = text.to_lowercase();
        let mut counts: std::collections::HashMap<u64, (usize, f32)> = std::collections::HashMap::new();
        let mut add = |feature: &str, weight: f32| {
            let h = fnv1a(feature.as_bytes());
            let bucket = (h % self.dimension as u64) as usize;
            let sign = if (h >> 63) == 1 { -1.0 } else { 1.0 };
            let e = counts.entry(h).or_insert((bucket, 0.0));
            e.1 += sign * weight;
        };
        for word in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            add(&format!("w:{word}"), 1.0);
            let chars: Vec<char> = format!(" {word} ").chars().collect();
            for gram in chars.windows(3) {
                add(&format!("c:{}", gram.iter().collect::<String>()), 0.5);
            }
        }
        for (bucket, tf) in counts.into_values() {
            // log-scaled frequency, keeping the sign
            v[bucket] += tf.signum() * (1.0 + tf.abs()).ln();
        }
        normalize(&mut v);
        v
    }
}

impl Embedder for HashingEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

/// 64-bit FNV-1a: fixed by its definition, so hashed vectors stay the same
/// across Rust versions (std's hasher promises no such thing).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity; 0 for vectors of different lengths or a zero vector.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (na, nb) = (dot(a, a), dot(b, b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot(a, b) / (na.sqrt() * nb.sqrt())
}

/// The dot product of equally long slices, in eight independent lanes
/// that the compiler turns into SIMD (a plain sum is one serial chain of
/// float additions).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashed_vectors_are_unit_length_stable_and_closer_for_shared_words() {
        let e = HashingEmbedder::new(384);
        assert_eq!((e.id(), e.dimension()), ("hash-v1-384", 384));
        let v = e.embed(&["The build uses cargo nextest", "cargo nextest runs the tests", "Paris is the capital of France", ""]).unwrap();
        assert!(v.iter().all(|x| x.len() == 384));
        for x in &v[..3] {
            assert!((x.iter().map(|a| a * a).sum::<f32>() - 1.0).abs() < 1e-4);
        }
        assert!(v[3].iter().all(|a| *a == 0.0), "an empty text has no features");
        assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.1, "{} vs {}", cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
        // the same text, the same vector, every time
        assert_eq!(e.embed(&["The build uses cargo nextest"]).unwrap()[0], v[0]);
        // case and punctuation do not matter
        let w = e.embed(&["the BUILD uses cargo-nextest!"]).unwrap();
        assert!(cosine(&w[0], &v[0]) > 0.95);
        // FNV-1a's published test vectors pin the hash across versions
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn cosine_of_mismatched_or_zero_vectors_is_zero() {
        assert_eq!(cosine(&[1.0, 0.0], &[1.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
    }
}
