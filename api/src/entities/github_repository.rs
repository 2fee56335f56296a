//! `github_repositories`: the repositories each installation may see.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "github_repositories")]
pub struct Model {
    /// `owner/name`, lower case.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name_key: String,
    /// `owner/name` as GitHub writes it.
    pub full_name: String,
    pub repo_id: i64,
    pub installation_id: i64,
    pub private: bool,
    pub default_branch: Option<String>,
    /// Pull-request previews enabled by an admin (besides `previews:` in
    /// the repository's pinacle.yaml).
    pub previews: bool,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
