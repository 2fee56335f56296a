//! Pinacle's API server: REST over axum, state in a sea-orm database, pod
//! work handed to host agents through per-host job queues.
//!
//! - Services are structs given their dependencies (see ARCHITECTURE.md):
//!   [`service::Pods`] is the pod logic shared by REST, GraphQL and the
//!   [`pinacle_host_api::control::ControlPlane`] implementation in [`control`].
//! - [`AppState`] assembles them (with the database, the queue and the bus)
//!   for the HTTP edge.
//! - [`routes::router`] is the HTTP surface; authentication happens once, in
//!   [`routes::middleware::require_principal`].

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod control;
pub mod crypto;
pub mod device;
pub mod entities;
pub mod error;
pub mod events;
pub mod github;
pub mod graphql;
pub mod hosts;
pub mod lease;
pub mod memory;
pub mod peers;
pub mod metrics;
pub mod pod_access;
pub mod policy;
pub mod principal;
pub mod proxy_routes;
pub mod ratelimit;
pub mod redact;
pub mod aion_access;
pub mod routes;
pub mod secrets;
pub mod service;
pub mod sessions;
pub mod settings;
pub mod ssh;
pub mod state;
pub mod teams;
pub mod tokens;
pub mod web_assets;
pub mod workspace;

pub use error::ApiError;
pub use routes::router;
pub use state::{AdminToken, AppState};
