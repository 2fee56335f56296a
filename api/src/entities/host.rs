//! `hosts`: machines whose agents run pods.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "hosts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Comma-separated runtime names (`gvisor,youki`).
    pub runtimes: String,
    pub vcpus: i32,
    pub memory_bytes: i64,
    pub schedulable: bool,
    pub last_seen_at: DateTimeUtc,
    /// SHA-256 of the host's credential (`pnh_…`); empty: none issued.
    pub secret_hash: String,
    /// SHA-256 of the reusable join token that joined it; empty: joined
    /// with its own one-time token.
    pub joined_by: String,
    /// Labels its agent reports (a JSON object of strings).
    pub labels: String,
    /// The address of the API server holding its link (other servers
    /// reach the host through it); empty: no server does.
    pub link_server: String,
    /// SHA-256 of the credential a renewal in flight hands the agent: valid
    /// too until the renewal completes; empty: none.
    pub next_secret_hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
