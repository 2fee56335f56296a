//! AION, the AI decision router (issue 19).
//!
//! - [`registry`]: the four registry files, checked with located problems.
//! - [`decide`]: the routing decision (pure).
//! - [`cost`]: money in micro-dollars and token bounds (pure).
//! - [`health`]: circuit breakers and latency per provider.
//! - [`budget`]: the [`budget::Ledger`] seam (reserve the worst case, settle the actual).
//! - [`store`]: the router's tables in SQLite or PostgreSQL.
//! - [`provider`]: one adapter per upstream protocol, normalised to OpenAI's shapes.
//! - `modules` (feature `wasm`): AgentPackage modules in wasmtime.
//! - [`engine`]: running tasks; [`http`]: the API.

pub mod budget;
pub mod engine;
pub mod envelope;
pub mod error;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod metrics;
#[cfg(feature = "wasm")]
pub mod modules;
pub mod packages;
pub mod registries;
pub mod sandbox;
pub mod cost;
pub mod decide;
pub mod health;
pub mod http;
pub mod provider;
pub mod registry;
pub mod store;
