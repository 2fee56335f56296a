//! `github_installations`: where the GitHub App is installed.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "github_installations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    /// The user or organisation login.
    pub account: String,
    /// `User` or `Organization`.
    pub account_type: String,
    pub suspended: bool,
    /// The Pinacle user linked to the GitHub account that installed it:
    /// the owner of its pull-request pods.
    pub installer_user_id: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
