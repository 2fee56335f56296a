//! `github_deliveries`: webhook deliveries received, and what came of them.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "github_deliveries")]
pub struct Model {
    /// `X-GitHub-Delivery` (the same on a redelivery).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub repository: Option<String>,
    /// `queued`, `processed`, `ignored` or `failed`.
    pub outcome: String,
    pub detail: String,
    /// The verified body while it waits or failed; emptied once processed.
    pub body: String,
    pub attempts: i32,
    pub received_at: DateTimeUtc,
    pub processed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
