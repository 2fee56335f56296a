//! Where vectors come from: a local embedder (the hashing fallback, or a
//! model) or an OpenAI-compatible `/v1/embeddings` endpoint.

use std::sync::Arc;

use pinacle_memory::embed::{normalize, EmbedError, Embedder, HashingEmbedder};
use serde::{Deserialize, Serialize};

/// Where `scripts/install-model.sh` puts the built-in model.
pub const DEFAULT_MODEL_DIR: &str = "/opt/pinacle/models/all-minilm-l6-v2";

/// Texts per request to a provider.
const PROVIDER_BATCH: usize = 128;

/// The configured embedder.
pub enum Embedding {
    Local(Arc<dyn Embedder>),
    OpenAi(OpenAiEmbedder),
}

impl Embedding {
    /// The no-model default: feature hashing into 384 dimensions.
    pub fn hashing() -> Self {
        Embedding::Local(Arc::new(HashingEmbedder::new(384)))
    }

    /// Parses `--memory-embedder`: `hash` (or `hash:DIM`), `minilm` (or
    /// `minilm:DIR`: the built-in model, from [`DEFAULT_MODEL_DIR`] or DIR),
    /// or `openai:URL#MODEL:DIM` (an OpenAI-compatible endpoint; the key,
    /// if any, from `api_key`).
    pub fn from_spec(spec: &str, api_key: Option<String>) -> Result<Self, String> {
        if spec == "hash" {
            return Ok(Self::hashing());
        }
        if spec == "minilm" || spec.starts_with("minilm:") {
            let dir = spec.strip_prefix("minilm:").filter(|d| !d.is_empty()).unwrap_or(DEFAULT_MODEL_DIR);
            return Self::model(std::path::Path::new(dir));
        }
        if let Some(dim) = spec.strip_prefix("hash:") {
            let d: usize = dim.parse().map_err(|_| format!("{spec}: hash:DIM takes a number of dimensions"))?;
            if !(8..=4096).contains(&d) {
                return Err(format!("{spec}: 8 to 4096 dimensions"));
            }
            return Ok(Embedding::Local(Arc::new(HashingEmbedder::new(d))));
        }
        if let Some(rest) = spec.strip_prefix("openai:") {
            let (url, model_dim) = rest.rsplit_once('#').ok_or_else(|| format!("{spec}: write openai:URL#MODEL:DIM"))?;
            let (model, dim) = model_dim.rsplit_once(':').ok_or_else(|| format!("{spec}: write openai:URL#MODEL:DIM"))?;
            let dimension: usize = dim.parse().map_err(|_| format!("{spec}: DIM must be a number"))?;
            if !(8..=4096).contains(&dimension) || model.is_empty() {
                return Err(format!("{spec}: a model name and 8 to 4096 dimensions"));
            }
            let url = url.trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{spec}: the URL must start with http:// or https://"));
            }
            return Ok(Embedding::OpenAi(OpenAiEmbedder::new(url, model, dimension, api_key)));
        }
        Err(format!("{spec}: use hash, hash:DIM, minilm, minilm:DIR or openai:URL#MODEL:DIM"))
    }

    /// The built-in model in `dir`.
    #[cfg(feature = "minilm")]
    fn model(dir: &std::path::Path) -> Result<Self, String> {
        if !dir.join("model.safetensors").is_file() {
            return Err(format!("minilm: no model in {} (bash scripts/install-model.sh puts it there)", dir.display()));
        }
        let started = std::time::Instant::now();
        let m = crate::minilm::MiniLm::load(dir)?;
        tracing::info!(dir = %dir.display(), id = m.id(), ms = started.elapsed().as_millis() as u64, "memory embedding model loaded");
        Ok(Embedding::Local(Arc::new(m)))
    }

    #[cfg(not(feature = "minilm"))]
    fn model(_dir: &std::path::Path) -> Result<Self, String> {
        Err("minilm: this build has no built-in model; build with `--features minilm` (cargo build --release -p pinacle --features minilm)".into())
    }

    pub fn id(&self) -> &str {
        match self {
            Embedding::Local(e) => e.id(),
            Embedding::OpenAi(e) => &e.id,
        }
    }

    /// One unit vector per text, in order.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self {
            Embedding::Local(e) => {
                let e = e.clone();
                let run = move || {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    e.embed(&refs)
                };
                // a large batch would hold up the runtime's worker
                tokio::task::spawn_blocking(run).await.map_err(|e| EmbedError::Unavailable(e.to_string()))?
            }
            Embedding::OpenAi(e) => e.embed(&texts).await,
        }
    }
}

/// An OpenAI-compatible `/v1/embeddings` provider (OpenAI, the AI router,
/// a local server).
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
    dimension: usize,
    api_key: Option<String>,
    id: String,
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    pub fn new(url: &str, model: &str, dimension: usize, api_key: Option<String>) -> Self {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap_or_default();
        Self { client, url: url.to_owned(), model: model.to_owned(), dimension, api_key, id: format!("openai:{model}-{dimension}") }
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(PROVIDER_BATCH) {
            let mut req = self
                .client
                .post(format!("{}/v1/embeddings", self.url))
                .json(&EmbeddingsRequest { model: &self.model, input: batch, encoding_format: "float" });
            if let Some(k) = &self.api_key {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.map_err(|e| EmbedError::Unavailable(format!("{}: {e}", self.url)))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(EmbedError::Unavailable(format!("{} answered {status}", self.url)));
            }
            let body: EmbeddingsResponse = resp.json().await.map_err(|e| EmbedError::BadAnswer(e.to_string()))?;
            if body.data.len() != batch.len() {
                return Err(EmbedError::BadAnswer(format!("{} vectors for {} texts", body.data.len(), batch.len())));
            }
            let mut vectors: Vec<Option<Vec<f32>>> = vec![None; batch.len()];
            for item in body.data {
                if item.embedding.len() != self.dimension {
                    return Err(EmbedError::BadAnswer(format!("{} dimensions, configured {}", item.embedding.len(), self.dimension)));
                }
                let slot = vectors.get_mut(item.index).ok_or_else(|| EmbedError::BadAnswer(format!("index {} out of range", item.index)))?;
                let mut v = item.embedding;
                normalize(&mut v);
                *slot = Some(v);
            }
            for v in vectors {
                out.push(v.ok_or_else(|| EmbedError::BadAnswer("a text got no vector".into()))?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_how_to_write_them() {
        assert_eq!(Embedding::from_spec("hash", None).map(|e| e.id().to_owned()), Ok("hash-v1-384".into()));
        assert_eq!(Embedding::from_spec("hash:512", None).map(|e| e.id().to_owned()), Ok("hash-v1-512".into()));
        assert_eq!(
            Embedding::from_spec("openai:http://127.0.0.1:9/#text-embedding-3-small:1536", None).map(|e| e.id().to_owned()),
            Ok("openai:text-embedding-3-small-1536".into())
        );
        for bad in ["", "hash:x", "hash:2", "openai:127.0.0.1#m:3", "openai:http://x#m", "minilm-l6", "minilm:/nonexistent/model"] {
            assert!(Embedding::from_spec(bad, None).is_err(), "{bad}");
        }
    }
}
