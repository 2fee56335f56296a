//! The pod's checked pinacle.yaml (JSON): tabs, secrets to inject, idle timeout.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Pods {
    Table,
    Config,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Pods::Table).add_column(text(Pods::Config).default("")).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Pods::Table).drop_column(Pods::Config).to_owned()).await
    }
}
