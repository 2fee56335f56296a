//! Whether a pod's volumes are snapshotted each time it stops.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Pods {
    Table,
    SnapshotOnStop,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Pods::Table).add_column(boolean(Pods::SnapshotOnStop).default(false)).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Pods::Table).drop_column(Pods::SnapshotOnStop).to_owned()).await
    }
}
