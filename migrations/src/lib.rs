//! Database schema migrations, run by every server on start.
//!
//! Written with sea-query's schema builder so the same migrations serve
//! SQLite (`pinacle up`) and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_initial;
mod m20261122_000002_audit_log;
mod m20261122_000003_token_scope;
mod m20261122_000004_user_password;
mod m20261122_000005_idempotency;
mod m20261122_000006_teams;
mod m20261122_000007_sessions;
mod m20261122_000008_secrets;
mod m20261122_000009_identities;
mod m20261122_000010_device_codes;
mod m20261122_000011_route_key;
mod m20261122_000012_pod_access;
mod m20261122_000013_pod_processes;
mod m20261122_000014_pod_config;
mod m20261122_000015_pod_snapshot_on_stop;
mod m20261122_000016_ssh_keys_and_layouts;
mod m20261206_000017_pod_repository;
mod m20261206_000018_host_join;
mod m20261206_000019_host_pools;
mod m20261206_000020_host_credential_renewal;
mod m20261207_000021_github;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_initial::Migration),
            Box::new(m20261122_000002_audit_log::Migration),
            Box::new(m20261122_000003_token_scope::Migration),
            Box::new(m20261122_000004_user_password::Migration),
            Box::new(m20261122_000005_idempotency::Migration),
            Box::new(m20261122_000006_teams::Migration),
            Box::new(m20261122_000007_sessions::Migration),
            Box::new(m20261122_000008_secrets::Migration),
            Box::new(m20261122_000009_identities::Migration),
            Box::new(m20261122_000010_device_codes::Migration),
            Box::new(m20261122_000011_route_key::Migration),
            Box::new(m20261122_000012_pod_access::Migration),
            Box::new(m20261122_000013_pod_processes::Migration),
            Box::new(m20261122_000014_pod_config::Migration),
            Box::new(m20261122_000015_pod_snapshot_on_stop::Migration),
            Box::new(m20261122_000016_ssh_keys_and_layouts::Migration),
            Box::new(m20261206_000017_pod_repository::Migration),
            Box::new(m20261206_000018_host_join::Migration),
            Box::new(m20261206_000019_host_pools::Migration),
            Box::new(m20261206_000020_host_credential_renewal::Migration),
            Box::new(m20261207_000021_github::Migration),
        ]
    }
}
