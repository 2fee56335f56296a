//! Users' SSH public keys, and each user's workspace layout (the IDE's
//! tabs) per pod.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SshKeys {
    Table,
    Id,
    UserId,
    Name,
    Algorithm,
    Fingerprint,
    PublicKey,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum WorkspaceLayouts {
    Table,
    UserId,
    PodId,
    Layout,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SshKeys::Table)
                .col(string(SshKeys::Id).primary_key())
                .col(string(SshKeys::UserId))
                .col(string(SshKeys::Name))
                .col(string(SshKeys::Algorithm))
                .col(string(SshKeys::Fingerprint))
                .col(text(SshKeys::PublicKey))
                .col(timestamp_with_time_zone(SshKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(SshKeys::LastUsedAt))
                .to_owned(),
        )
        .await?;
        // one account per key: the key alone says who signs in over SSH
        m.create_index(
            Index::create()
                .name("ssh_keys_fingerprint")
                .table(SshKeys::Table)
                .col(SshKeys::Fingerprint)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(WorkspaceLayouts::Table)
                .col(string(WorkspaceLayouts::UserId))
                .col(string(WorkspaceLayouts::PodId))
                .col(text(WorkspaceLayouts::Layout))
                .col(timestamp_with_time_zone(WorkspaceLayouts::UpdatedAt))
                .primary_key(
                    Index::create()
                        .col(WorkspaceLayouts::UserId)
                        .col(WorkspaceLayouts::PodId),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(WorkspaceLayouts::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(SshKeys::Table).to_owned())
            .await
    }
}
