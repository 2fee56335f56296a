//! Hosts' credentials are renewed over their links: while a renewal is in
//! flight the next credential is valid too (`hosts.next_secret_hash`, its
//! SHA-256; empty: none), so an agent that kept the new one and a control
//! plane that has not yet switched to it still agree.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Hosts {
    Table,
    NextSecretHash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Hosts::Table).add_column(text(Hosts::NextSecretHash).default("")).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Hosts::Table).drop_column(Hosts::NextSecretHash).to_owned()).await
    }
}
