//! `pod_events`: every state change of every pod, in order.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pod_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub pod_id: String,
    pub at: DateTimeUtc,
    pub event: String,
    pub from_state: Option<String>,
    pub to_state: String,
    pub message: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
