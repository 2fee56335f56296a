//! Encrypted secrets (user, team or pod scoped) and audit-log anchors.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Secrets {
    Table,
    Id,
    Scope,
    ScopeId,
    Name,
    Sealed,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuditAnchors {
    Table,
    EntryId,
    Hash,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Secrets::Table)
                .col(string(Secrets::Id).primary_key())
                .col(string(Secrets::Scope))
                .col(string(Secrets::ScopeId))
                .col(string(Secrets::Name))
                .col(text(Secrets::Sealed))
                .col(string(Secrets::CreatedBy))
                .col(timestamp_with_time_zone(Secrets::CreatedAt))
                .col(timestamp_with_time_zone(Secrets::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("secrets_scope_name")
                .table(Secrets::Table)
                .col(Secrets::Scope)
                .col(Secrets::ScopeId)
                .col(Secrets::Name)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditAnchors::Table)
                .col(big_integer(AuditAnchors::EntryId).primary_key())
                .col(string(AuditAnchors::Hash))
                .col(timestamp_with_time_zone(AuditAnchors::At))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(AuditAnchors::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Secrets::Table).to_owned()).await
    }
}
