//! The GitHub App (issue 20): its installations and their repositories,
//! the webhook deliveries received, and the pods linked to a GitHub
//! repository (pull-request previews among them).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum GithubInstallations {
    Table,
    Id,
    Account,
    AccountType,
    Suspended,
    InstallerUserId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum GithubRepositories {
    Table,
    NameKey,
    FullName,
    RepoId,
    InstallationId,
    Private,
    DefaultBranch,
    Previews,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum GithubDeliveries {
    Table,
    Id,
    Event,
    Action,
    Repository,
    Outcome,
    Detail,
    Body,
    Attempts,
    ReceivedAt,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum GithubPods {
    Table,
    PodId,
    InstallationId,
    Repository,
    PullRequest,
    HeadSha,
    HeadUpdatedAt,
    Fork,
    WithSecrets,
    GitWrite,
    DeployKeyId,
    DeployKeyAccess,
    CommentId,
    CheckRunId,
    BehindSha,
    BehindSince,
    ClosedAt,
    DeleteAfter,
    StaleAfterSecs,
    RetentionSecs,
    PullOnPush,
    Prebuild,
    ReadySha,
    LastActivityAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(GithubInstallations::Table)
                .col(big_integer(GithubInstallations::Id).primary_key())
                .col(string(GithubInstallations::Account))
                .col(string(GithubInstallations::AccountType))
                .col(boolean(GithubInstallations::Suspended).default(false))
                .col(string_null(GithubInstallations::InstallerUserId))
                .col(timestamp_with_time_zone(GithubInstallations::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(GithubRepositories::Table)
                .col(string(GithubRepositories::NameKey).primary_key())
                .col(string(GithubRepositories::FullName))
                .col(big_integer(GithubRepositories::RepoId))
                .col(big_integer(GithubRepositories::InstallationId))
                .col(boolean(GithubRepositories::Private).default(true))
                .col(string_null(GithubRepositories::DefaultBranch))
                .col(boolean(GithubRepositories::Previews).default(false))
                .col(timestamp_with_time_zone(GithubRepositories::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("github_repositories_installation").table(GithubRepositories::Table).col(GithubRepositories::InstallationId).to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(GithubDeliveries::Table)
                .col(string(GithubDeliveries::Id).primary_key())
                .col(string(GithubDeliveries::Event))
                .col(string_null(GithubDeliveries::Action))
                .col(string_null(GithubDeliveries::Repository))
                .col(string(GithubDeliveries::Outcome))
                .col(text(GithubDeliveries::Detail).default(""))
                .col(text(GithubDeliveries::Body).default(""))
                .col(integer(GithubDeliveries::Attempts).default(0))
                .col(timestamp_with_time_zone(GithubDeliveries::ReceivedAt))
                .col(timestamp_with_time_zone_null(GithubDeliveries::ProcessedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("github_deliveries_received").table(GithubDeliveries::Table).col(GithubDeliveries::ReceivedAt).to_owned())
            .await?;
        m.create_table(
            Table::create()
                .table(GithubPods::Table)
                .col(string(GithubPods::PodId).primary_key())
                .col(big_integer(GithubPods::InstallationId))
                .col(string(GithubPods::Repository))
                .col(big_integer_null(GithubPods::PullRequest))
                .col(string(GithubPods::HeadSha).default(""))
                .col(timestamp_with_time_zone_null(GithubPods::HeadUpdatedAt))
                .col(boolean(GithubPods::Fork).default(false))
                .col(boolean(GithubPods::WithSecrets).default(true))
                .col(boolean(GithubPods::GitWrite).default(false))
                .col(big_integer_null(GithubPods::DeployKeyId))
                .col(string_null(GithubPods::DeployKeyAccess))
                .col(big_integer_null(GithubPods::CommentId))
                .col(big_integer_null(GithubPods::CheckRunId))
                .col(string_null(GithubPods::BehindSha))
                .col(timestamp_with_time_zone_null(GithubPods::BehindSince))
                .col(timestamp_with_time_zone_null(GithubPods::ClosedAt))
                .col(timestamp_with_time_zone_null(GithubPods::DeleteAfter))
                .col(big_integer_null(GithubPods::StaleAfterSecs))
                .col(big_integer(GithubPods::RetentionSecs).default(0))
                .col(boolean(GithubPods::PullOnPush).default(false))
                .col(boolean(GithubPods::Prebuild).default(false))
                .col(string_null(GithubPods::ReadySha))
                .col(timestamp_with_time_zone(GithubPods::LastActivityAt))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("github_pods_repository").table(GithubPods::Table).col(GithubPods::Repository).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [GithubPods::Table.into_iden(), GithubDeliveries::Table.into_iden(), GithubRepositories::Table.into_iden(), GithubInstallations::Table.into_iden()] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
