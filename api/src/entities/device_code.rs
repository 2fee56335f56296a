//! `device_codes`: pending device sign-ins.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "device_codes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// SHA-256 of the secret the device polls with.
    pub device_code_hash: String,
    /// The short code a person types to approve (`BCDF-GHJK`).
    pub user_code: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// The user who approved; the device signs in as them.
    pub approved_by: Option<String>,
    pub denied: bool,
    pub consumed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
