//! sea-orm entities, one module a table (see `migrations/` for the schema).

pub mod api_token;
pub mod audit_anchor;
pub mod audit_entry;
pub mod device_code;
pub mod github_delivery;
pub mod github_installation;
pub mod github_pod;
pub mod github_repository;
pub mod host;
pub mod host_join;
pub mod idempotency_key;
pub mod invite;
pub mod pod;
pub mod pod_event;
pub mod refresh_token;
pub mod secret;
pub mod session;
pub mod setting;
pub mod signing_key;
pub mod ssh_key;
pub mod team;
pub mod team_member;
pub mod user;
pub mod user_identity;
pub mod workspace_layout;
