//! Each pod's route key (`{pod}-{owner}`, the part of its host names it
//! owns), so that pod creation can refuse keys that would make host names
//! ambiguous.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Pods {
    Table,
    RouteKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Pods::Table).add_column(string_null(Pods::RouteKey)).to_owned()).await?;
        let db = m.get_connection();
        db.execute_unprepared(
            "UPDATE pods SET route_key = name || '-' || COALESCE(\
               (SELECT teams.name FROM teams WHERE teams.id = pods.team_id), \
               (SELECT users.name FROM users WHERE users.id = pods.owner_id))",
        )
        .await?;
        db.execute_unprepared("CREATE INDEX pods_route_key ON pods (route_key)").await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection().execute_unprepared("DROP INDEX pods_route_key").await?;
        m.alter_table(Table::alter().table(Pods::Table).drop_column(Pods::RouteKey).to_owned()).await
    }
}
