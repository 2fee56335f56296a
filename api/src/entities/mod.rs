//! sea-orm entities, one module a table (see `migrations/` for the schema).

pub mod api_token;
pub mod audit_entry;
pub mod host;
pub mod idempotency_key;
pub mod pod;
pub mod pod_event;
pub mod user;
