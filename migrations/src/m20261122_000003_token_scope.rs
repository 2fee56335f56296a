//! API tokens get a scope and an optional expiry.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Scope,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // one column per statement: SQLite alters one at a time
        m.alter_table(
            Table::alter().table(ApiTokens::Table).add_column(string(ApiTokens::Scope).default("full")).to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter().table(ApiTokens::Table).add_column(timestamp_with_time_zone_null(ApiTokens::ExpiresAt)).to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(ApiTokens::Table).drop_column(ApiTokens::ExpiresAt).to_owned()).await?;
        m.alter_table(Table::alter().table(ApiTokens::Table).drop_column(ApiTokens::Scope).to_owned()).await
    }
}
