//! Pinak, the long-term memory of the agents in pods (issue 18): this crate
//! is its pure core, with no I/O, that the service's stores and API are
//! built on.
//!
//! - [`layer`]: the eight layers a tenant's project memory has.
//! - [`embed`]: the [`embed::Embedder`] seam and the deterministic hashing
//!   embedder used when no model is configured.
//! - [`fusion`]: reciprocal-rank fusion of the vector and BM25 rankings.
//! - [`chunk`]: documents cut into overlapping chunks with their offsets.
//! - [`dedup`]: exact (content hash) and near (cosine) duplicates.
//! - [`chain`]: the hash chains of the `events` and `changelog` logs.
//! - [`project`]: project names from repository URLs.

pub mod chain;
pub mod chunk;
pub mod dedup;
pub mod embed;
pub mod fusion;
pub mod layer;
pub mod project;
