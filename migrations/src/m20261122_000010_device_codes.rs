//! Device sign-in (`pinacle login --device`): codes a signed-in user
//! approves so another device receives a session.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DeviceCodes {
    Table,
    Id,
    DeviceCodeHash,
    UserCode,
    CreatedAt,
    ExpiresAt,
    ApprovedBy,
    Denied,
    ConsumedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(DeviceCodes::Table)
                .col(string(DeviceCodes::Id).primary_key())
                .col(string_uniq(DeviceCodes::DeviceCodeHash))
                .col(string_uniq(DeviceCodes::UserCode))
                .col(timestamp_with_time_zone(DeviceCodes::CreatedAt))
                .col(timestamp_with_time_zone(DeviceCodes::ExpiresAt))
                .col(string_null(DeviceCodes::ApprovedBy))
                .col(boolean(DeviceCodes::Denied))
                .col(timestamp_with_time_zone_null(DeviceCodes::ConsumedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(DeviceCodes::Table).to_owned()).await
    }
}
