//! Per-pod network settings: ports anyone may reach through the proxy
//! without signing in, and the pod's egress policy.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Pods {
    Table,
    PublicPorts,
    Egress,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Comma-separated port numbers; empty: none.
        m.alter_table(Table::alter().table(Pods::Table).add_column(string(Pods::PublicPorts).default("")).to_owned()).await?;
        // `allow-all`, `deny-all` or a comma-separated allow list of CIDRs.
        m.alter_table(Table::alter().table(Pods::Table).add_column(string(Pods::Egress).default("allow-all")).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Pods::Table).drop_column(Pods::Egress).to_owned()).await?;
        m.alter_table(Table::alter().table(Pods::Table).drop_column(Pods::PublicPorts).to_owned()).await
    }
}
