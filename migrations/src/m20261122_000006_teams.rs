//! Teams and their members, invitations, instance settings, and pods that
//! belong to a team. Pod names are unique per owner for personal pods and
//! per team for team pods.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Teams {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum TeamMembers {
    Table,
    TeamId,
    UserId,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Invites {
    Table,
    Id,
    CodeHash,
    TeamId,
    Role,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    UsedBy,
    UsedAt,
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Pods {
    Table,
    TeamId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Teams::Table)
                .col(string(Teams::Id).primary_key())
                .col(string_uniq(Teams::Name))
                .col(timestamp_with_time_zone(Teams::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(TeamMembers::Table)
                .col(string(TeamMembers::TeamId))
                .col(string(TeamMembers::UserId))
                .col(string(TeamMembers::Role))
                .col(timestamp_with_time_zone(TeamMembers::CreatedAt))
                .primary_key(Index::create().col(TeamMembers::TeamId).col(TeamMembers::UserId))
                .foreign_key(
                    ForeignKey::create()
                        .from(TeamMembers::Table, TeamMembers::TeamId)
                        .to(Teams::Table, Teams::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(TeamMembers::Table, TeamMembers::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("team_members_user").table(TeamMembers::Table).col(TeamMembers::UserId).to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Invites::Table)
                .col(string(Invites::Id).primary_key())
                .col(string_uniq(Invites::CodeHash))
                .col(string_null(Invites::TeamId))
                .col(string_null(Invites::Role))
                .col(string(Invites::CreatedBy))
                .col(timestamp_with_time_zone(Invites::CreatedAt))
                .col(timestamp_with_time_zone(Invites::ExpiresAt))
                .col(string_null(Invites::UsedBy))
                .col(timestamp_with_time_zone_null(Invites::UsedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Invites::Table, Invites::TeamId)
                        .to(Teams::Table, Teams::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Settings::Table)
                .col(string(Settings::Key).primary_key())
                .col(text(Settings::Value))
                .to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table(Pods::Table).add_column(string_null(Pods::TeamId)).to_owned()).await?;
        let db = m.get_connection();
        db.execute_unprepared("DROP INDEX pods_owner_live_name").await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX pods_personal_live_name ON pods (owner_id, name) \
             WHERE state <> 'deleted' AND team_id IS NULL",
        )
        .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX pods_team_live_name ON pods (team_id, name) \
             WHERE state <> 'deleted' AND team_id IS NOT NULL",
        )
        .await?;
        db.execute_unprepared("CREATE INDEX pods_team ON pods (team_id)").await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared("DROP INDEX pods_team").await?;
        db.execute_unprepared("DROP INDEX pods_team_live_name").await?;
        db.execute_unprepared("DROP INDEX pods_personal_live_name").await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX pods_owner_live_name ON pods (owner_id, name) WHERE state <> 'deleted'",
        )
        .await?;
        m.alter_table(Table::alter().table(Pods::Table).drop_column(Pods::TeamId).to_owned()).await?;
        m.drop_table(Table::drop().table(Settings::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Invites::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(TeamMembers::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Teams::Table).to_owned()).await
    }
}
