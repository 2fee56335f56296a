//! Pinak, the agents' memory service (issue 18), over the pure core in
//! `pinacle-memory`:
//!
//! - [`backend`]: the one contract the service drives a store through;
//! - [`store`]: the SQLite store (rows, FTS5 BM25, the hash chains);
//! - [`index`]: the per-project HNSW graphs, rebuilt from the store;
//! - [`embedded`]: SQLite and the graphs together, for `pinacle up`;
//! - [`postgres`]: PostgreSQL with pgvector and row-level security;
//! - [`records`]: the log records and checks both stores share;
//! - [`embedding`]: the hashing fallback or an OpenAI-compatible provider;
//! - [`service`]: validation, duplicates, hybrid search, the access log;
//! - [`http`]: the REST API and its [`http::TokenVerifier`] seam;
//! - [`mcp`]: the same operations as MCP tools (Streamable HTTP and stdio);
//! - [`openapi`]: the REST API's OpenAPI document;
//! - [`metrics`]: Prometheus metrics.

pub mod backend;
pub mod embedded;
pub mod embedding;
pub mod error;
pub mod http;
pub mod index;
pub mod mcp;
pub mod metrics;
#[cfg(feature = "minilm")]
pub mod minilm;
pub mod model;
pub mod openapi;
pub mod postgres;
pub mod records;
pub mod service;
pub mod store;

pub use error::MemoryError;
pub use model::{Caller, Role, Scope};
pub use service::MemoryService;
