//! Hosts joining in numbers (a Kubernetes DaemonSet's nodes): a join token
//! may be reusable (`host_joins.reusable`), each use joining the host name
//! the agent gives; a host it joined remembers it (`hosts.joined_by`), so
//! only that token can join the name again. Hosts' labels as their agents
//! report them (`hosts.labels`, a JSON object). Which API server holds a
//! host's link now (`hosts.link_server`, its address for other servers;
//! empty: none).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Hosts {
    Table,
    JoinedBy,
    Labels,
    LinkServer,
}

#[derive(DeriveIden)]
enum HostJoins {
    Table,
    Reusable,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(HostJoins::Table).add_column(boolean(HostJoins::Reusable).default(false)).to_owned()).await?;
        m.alter_table(Table::alter().table(Hosts::Table).add_column(text(Hosts::JoinedBy).default("")).to_owned()).await?;
        m.alter_table(Table::alter().table(Hosts::Table).add_column(text(Hosts::Labels).default("{}")).to_owned()).await?;
        m.alter_table(Table::alter().table(Hosts::Table).add_column(text(Hosts::LinkServer).default("")).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Hosts::Table).drop_column(Hosts::LinkServer).to_owned()).await?;
        m.alter_table(Table::alter().table(Hosts::Table).drop_column(Hosts::Labels).to_owned()).await?;
        m.alter_table(Table::alter().table(Hosts::Table).drop_column(Hosts::JoinedBy).to_owned()).await?;
        m.alter_table(Table::alter().table(HostJoins::Table).drop_column(HostJoins::Reusable).to_owned()).await
    }
}
