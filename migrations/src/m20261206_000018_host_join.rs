//! Hosts joining with one-time tokens: `host_joins` (token hashes, expiry,
//! use) and each host's credential (`hosts.secret_hash`, empty: none).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Hosts {
    Table,
    SecretHash,
}

#[derive(DeriveIden)]
enum HostJoins {
    Table,
    TokenHash,
    HostId,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Hosts::Table).add_column(text(Hosts::SecretHash).default("")).to_owned()).await?;
        m.create_index(Index::create().name("hosts_secret_hash").table(Hosts::Table).col(Hosts::SecretHash).to_owned()).await?;
        m.create_table(
            Table::create()
                .table(HostJoins::Table)
                .col(string(HostJoins::TokenHash).primary_key())
                .col(string(HostJoins::HostId))
                .col(string(HostJoins::CreatedBy))
                .col(timestamp_with_time_zone(HostJoins::CreatedAt))
                .col(timestamp_with_time_zone(HostJoins::ExpiresAt))
                .col(timestamp_with_time_zone_null(HostJoins::UsedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(HostJoins::Table).to_owned()).await?;
        m.drop_index(Index::drop().name("hosts_secret_hash").table(Hosts::Table).to_owned()).await?;
        m.alter_table(Table::alter().table(Hosts::Table).drop_column(Hosts::SecretHash).to_owned()).await
    }
}
