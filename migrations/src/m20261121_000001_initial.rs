//! Users, API tokens, hosts, pods and pod events.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    UserId,
    Name,
    TokenHash,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum Hosts {
    Table,
    Id,
    Runtimes,
    Vcpus,
    MemoryBytes,
    Schedulable,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum Pods {
    Table,
    Id,
    OwnerId,
    Name,
    State,
    StateReason,
    Template,
    Image,
    Tier,
    Runtime,
    HostId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PodEvents {
    Table,
    Id,
    PodId,
    At,
    Event,
    FromState,
    ToState,
    Message,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Users::Table)
                .col(string(Users::Id).primary_key())
                .col(string_uniq(Users::Name))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ApiTokens::Table)
                .col(string(ApiTokens::Id).primary_key())
                .col(string(ApiTokens::UserId))
                .col(string(ApiTokens::Name))
                .col(string_uniq(ApiTokens::TokenHash))
                .col(timestamp_with_time_zone(ApiTokens::CreatedAt))
                .col(timestamp_with_time_zone_null(ApiTokens::LastUsedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(ApiTokens::Table, ApiTokens::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Hosts::Table)
                .col(string(Hosts::Id).primary_key())
                .col(string(Hosts::Runtimes))
                .col(integer(Hosts::Vcpus))
                .col(big_integer(Hosts::MemoryBytes))
                .col(boolean(Hosts::Schedulable))
                .col(timestamp_with_time_zone(Hosts::LastSeenAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Pods::Table)
                .col(string(Pods::Id).primary_key())
                .col(string(Pods::OwnerId))
                .col(string(Pods::Name))
                .col(string(Pods::State))
                .col(text_null(Pods::StateReason))
                .col(string(Pods::Template))
                .col(string(Pods::Image))
                .col(string(Pods::Tier))
                .col(string(Pods::Runtime))
                .col(string(Pods::HostId))
                .col(timestamp_with_time_zone(Pods::CreatedAt))
                .col(timestamp_with_time_zone(Pods::UpdatedAt))
                .foreign_key(ForeignKey::create().from(Pods::Table, Pods::OwnerId).to(Users::Table, Users::Id))
                .to_owned(),
        )
        .await?;
        // One live pod per (owner, name); deleted pods keep their history.
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX pods_owner_live_name ON pods (owner_id, name) WHERE state <> 'deleted'",
            )
            .await?;
        m.create_index(Index::create().name("pods_host_state").table(Pods::Table).col(Pods::HostId).col(Pods::State).to_owned())
            .await?;
        m.create_table(
            Table::create()
                .table(PodEvents::Table)
                .col(big_pk_auto(PodEvents::Id))
                .col(string(PodEvents::PodId))
                .col(timestamp_with_time_zone(PodEvents::At))
                .col(string(PodEvents::Event))
                .col(string_null(PodEvents::FromState))
                .col(string(PodEvents::ToState))
                .col(text(PodEvents::Message))
                .foreign_key(
                    ForeignKey::create()
                        .from(PodEvents::Table, PodEvents::PodId)
                        .to(Pods::Table, Pods::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("pod_events_pod").table(PodEvents::Table).col(PodEvents::PodId).col(PodEvents::Id).to_owned())
            .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["pod_events", "pods", "hosts", "api_tokens", "users"] {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned()).await?;
        }
        Ok(())
    }
}
