//! `github_pods`: pods linked to a GitHub repository through the App
//! (installation tokens for git, deploy keys, pull-request previews).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "github_pods")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub pod_id: String,
    pub installation_id: i64,
    /// `owner/name` as GitHub writes it.
    pub repository: String,
    /// Set for a pull request's preview pod.
    pub pull_request: Option<i64>,
    pub head_sha: String,
    /// The pull request's `updated_at` of the head in force: an older
    /// `synchronize` arriving late changes nothing.
    pub head_updated_at: Option<DateTimeUtc>,
    /// The head is from a fork (untrusted code): no secrets, no registry
    /// credentials, read-only git, no agent memory.
    pub fork: bool,
    /// The owner's secrets reach the pod (false for a pull request's pod
    /// unless `previews.secrets`; never for a fork's).
    pub with_secrets: bool,
    /// The pod's git token may push (`contents: write`).
    pub git_write: bool,
    pub deploy_key_id: Option<i64>,
    /// A deploy key asked for: `read` or `write` (registered once the pod
    /// runs; `deploy_key_id` then set).
    pub deploy_key_access: Option<String>,
    pub comment_id: Option<i64>,
    pub check_run_id: Option<i64>,
    /// A push moved the pod's branch past what it holds.
    pub behind_sha: Option<String>,
    pub behind_since: Option<DateTimeUtc>,
    /// The pull request was closed.
    pub closed_at: Option<DateTimeUtc>,
    /// When the closed preview's pod is deleted.
    pub delete_after: Option<DateTimeUtc>,
    /// Stop the preview after this long without a change to the pull
    /// request.
    pub stale_after_secs: Option<i64>,
    /// `previews.retention` as the base branch had it when the pull
    /// request opened.
    pub retention_secs: i64,
    /// `previews.pullOnPush`: pushes are fetched into the pod.
    pub pull_on_push: bool,
    /// The default branch's prebuild pod (`previews.prebuild`).
    pub prebuild: bool,
    /// The commit the prebuild finished (image pulled, install steps
    /// done) and stopped at.
    pub ready_sha: Option<String>,
    pub last_activity_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
