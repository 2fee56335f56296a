//! GraphQL for the web app: queries and mutations at `POST /graphql`,
//! subscriptions (pod status, pod events) over WebSocket at `/graphql/ws`
//! (graphql-transport-ws; the `connection_init` payload carries
//! `{"token": ...}`).
//!
//! A thin layer over the same [`AppState`] methods as REST: every resolver
//! takes the caller's [`Principal`] (authenticated by [`auth`](crate::auth),
//! the one place that reads credentials) and the service methods ask the
//! policy, so REST and GraphQL cannot disagree about who may do what.
//! Errors carry the REST error code in `extensions.code` (and the
//! diagnostics of a bad `pinacle.yaml` in `extensions.details`).
//!
//! The schema is kept in `web/schema.graphql`; a test fails when it is stale
//! (`PINACLE_UPDATE_SCHEMA=1 cargo test -p pinacle-api graphql` rewrites it).

use async_graphql::{
    Context, Enum, ErrorExtensions, InputObject, Json, Object, Schema, SimpleObject, Subscription,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use pinacle_config::resolve::ResolvedTab;
use pinacle_orchestrator::{PodEvent as Transition, Tier};

use crate::principal::Principal;
use crate::policy::{Action, Role as TeamRole};
use crate::events::PodEventView;
use crate::service::PodView;
use crate::policy::Scope;
use crate::{ApiError, AppState};

pub mod repo_config;

/// The schema type.
pub type PinacleSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 12;
/// Most complex query accepted (one point per field, lists multiply).
pub const MAX_COMPLEXITY: usize = 5_000;

/// The bearer credential a WebSocket connection signed in with, in each
/// operation's data: subscriptions re-check it while they run.
#[derive(Clone)]
pub struct WsCredential(pub std::sync::Arc<str>);

/// Builds the schema over `state`.
pub fn schema(state: AppState) -> PinacleSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(state)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The schema in SDL, as kept in `web/schema.graphql`.
pub fn sdl() -> String {
    let sdl = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .finish()
        .sdl();
    format!(
        "# Pinacle's GraphQL schema (generated from api/src/graphql.rs; do not edit).\n\n{}\n",
        sdl.trim()
    )
}

type R<T> = async_graphql::Result<T>;

/// An [`ApiError`] as a GraphQL error with `extensions.code`.
pub(crate) fn gql(e: ApiError) -> async_graphql::Error {
    async_graphql::Error::new(e.message.clone()).extend_with(|_, ext| {
        ext.set("code", e.code);
        ext.set("status", e.status.as_u16());
        if let Some(d) = &e.details {
            if let Ok(v) = async_graphql::Value::from_json(d.clone()) {
                ext.set("details", v);
            }
        }
    })
}

trait OrGql<T> {
    fn gql(self) -> R<T>;
}

impl<T> OrGql<T> for Result<T, ApiError> {
    fn gql(self) -> R<T> {
        self.map_err(gql)
    }
}

fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

fn who<'a>(ctx: &Context<'a>) -> R<&'a Principal> {
    ctx.data_opt::<Principal>()
        .ok_or_else(|| gql(ApiError::unauthorized("sign in first")))
}

/// The caller, for a mutation: read-only tokens may query, not change.
fn writer<'a>(ctx: &Context<'a>) -> R<&'a Principal> {
    let p = who(ctx)?;
    if p.scope != Scope::Full {
        return Err(gql(ApiError::forbidden("insufficient_scope",
            "this token is read-only; changes need a token with scope full",
        )));
    }
    Ok(p)
}

// ---------------------------------------------------------------------------
// Types

/// A pod's lifecycle state.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "PodState", remote = "pinacle_orchestrator::PodState")]
pub enum GqlPodState {
    Pending,
    Provisioning,
    Running,
    Stopping,
    Stopped,
    Starting,
    Deleting,
    Deleted,
    Error,
}

/// A role in a team.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "Role", remote = "crate::policy::Role")]
pub enum GqlRole {
    Viewer,
    Member,
    Admin,
    Owner,
}

/// What an API token may do.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "TokenScope", remote = "crate::policy::Scope")]
pub enum GqlScope {
    Full,
    Read,
}

/// What a tab shows.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TabKind {
    /// A terminal in the pod.
    Terminal,
    /// A page served in the pod.
    Pod,
    /// An outside page.
    External,
}

/// The signed-in user.
#[derive(SimpleObject)]
pub struct User {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
}

/// A size of pod.
#[derive(SimpleObject)]
#[graphql(name = "Tier")]
pub struct GqlTier {
    pub name: String,
    pub vcpus: u32,
    pub memory_bytes: f64,
    pub disk_bytes: f64,
    pub pids: u32,
}

impl From<Tier> for GqlTier {
    fn from(t: Tier) -> Self {
        let l = t.limits();
        GqlTier {
            name: t.id().to_owned(),
            vcpus: l.vcpus,
            memory_bytes: l.memory_bytes as f64,
            disk_bytes: l.disk_bytes as f64,
            pids: l.pids,
        }
    }
}

/// A starting point for pods.
#[derive(SimpleObject)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub image: String,
    /// The tier its `pinacle.yaml` asks for.
    pub tier: String,
    pub pinacle_yaml: String,
}

/// A tab of the pod's workspace, from its `pinacle.yaml`.
#[derive(SimpleObject)]
pub struct PodTab {
    pub name: String,
    pub kind: TabKind,
    /// The `pinacle.yaml` service behind the tab.
    pub service: Option<String>,
    /// Terminal: the program (none: a login shell).
    pub command: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    /// External: the page.
    pub url: Option<String>,
}

impl From<&ResolvedTab> for PodTab {
    fn from(t: &ResolvedTab) -> Self {
        let blank = PodTab {
            name: String::new(),
            kind: TabKind::Terminal,
            service: None,
            command: None,
            port: None,
            path: None,
            url: None,
        };
        match t {
            ResolvedTab::Terminal {
                name,
                service,
                command,
            } => PodTab {
                name: name.clone(),
                service: service.clone(),
                command: command.clone(),
                ..blank
            },
            ResolvedTab::Pod {
                name,
                service,
                port,
                path,
            } => PodTab {
                name: name.clone(),
                kind: TabKind::Pod,
                service: service.clone(),
                port: Some(*port),
                path: Some(path.clone()),
                ..blank
            },
            ResolvedTab::External { name, url } => PodTab {
                name: name.clone(),
                kind: TabKind::External,
                url: Some(url.clone()),
                ..blank
            },
        }
    }
}

/// One stored state change of a pod.
#[derive(SimpleObject)]
pub struct PodEvent {
    /// Increases with every event of every pod.
    pub seq: f64,
    pub pod_id: String,
    pub at: DateTime<Utc>,
    pub event: String,
    pub from: Option<GqlPodState>,
    pub to: GqlPodState,
    pub message: String,
}

impl From<PodEventView> for PodEvent {
    fn from(e: PodEventView) -> Self {
        PodEvent {
            seq: e.seq as f64,
            pod_id: e.pod_id.to_string(),
            at: e.at,
            event: e.event,
            from: e.from.map(Into::into),
            to: e.to.into(),
            message: e.message,
        }
    }
}

/// What a running pod uses, against its tier.
#[derive(SimpleObject)]
pub struct PodUsage {
    /// Percent of one CPU (150 = one and a half).
    pub cpu_percent: Option<f64>,
    pub cpu_limit_percent: f64,
    pub memory_bytes: Option<f64>,
    pub memory_limit_bytes: f64,
    pub disk_bytes: Option<f64>,
    pub disk_limit_bytes: f64,
}

/// A saved copy of a pod's volumes.
#[derive(SimpleObject)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub size_bytes: f64,
    pub auto: bool,
}

impl From<pinacle_host_api::SnapshotInfo> for Snapshot {
    fn from(s: pinacle_host_api::SnapshotInfo) -> Self {
        Snapshot {
            id: s.id,
            name: s.name,
            created_at: s.created_at,
            size_bytes: s.size_bytes as f64,
            auto: s.auto,
        }
    }
}

/// One problem in a configuration file.
#[derive(SimpleObject)]
pub struct Diagnostic {
    /// `error` or `warning`.
    pub severity: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The field, e.g. `processes[0].url`.
    pub path: String,
    pub message: String,
    pub suggestion: Option<String>,
}

/// Diagnostics as GraphQL objects.
pub fn diagnostics_of(d: &pinacle_config::Diagnostics) -> Vec<Diagnostic> {
    d.0.iter()
        .map(|d| Diagnostic {
            severity: if d.severity == pinacle_config::diagnostic::Severity::Error {
                "error"
            } else {
                "warning"
            }
            .to_owned(),
            file: d.file.clone(),
            line: d.line as u32,
            column: d.column as u32,
            path: d.path.clone(),
            message: d.message.clone(),
            suggestion: d.suggestion.clone(),
        })
        .collect()
}

/// The verdict on a `pinacle.yaml`.
#[derive(SimpleObject)]
pub struct ConfigCheck {
    /// No errors (warnings allowed).
    pub ok: bool,
    pub diagnostics: Vec<Diagnostic>,
    /// The file in canonical form, when it is valid.
    pub canonical: Option<String>,
    pub tier: Option<String>,
    /// The tabs a pod from it gets.
    pub tabs: Vec<PodTab>,
}

/// The configuration found in a repository.
#[derive(SimpleObject)]
pub struct RepositoryConfig {
    /// Which file was read (`pinacle.yaml`, `.devcontainer/devcontainer.json`, ...).
    pub file: String,
    /// A `pinacle.yaml` for the form (a devcontainer.json is imported).
    pub pinacle_yaml: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// A one-minute sign-in link to a pod's port through the proxy.
#[derive(SimpleObject)]
pub struct OpenLink {
    pub url: String,
    pub origin: String,
}

/// An API token, never with its secret.
#[derive(SimpleObject)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub scope: GqlScope,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<crate::tokens::TokenView> for ApiToken {
    fn from(t: crate::tokens::TokenView) -> Self {
        ApiToken {
            id: t.id,
            name: t.name,
            scope: t.scope.into(),
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
        }
    }
}

/// A new token: its secret is shown this once.
#[derive(SimpleObject)]
pub struct CreatedToken {
    pub token: String,
    pub info: ApiToken,
}

/// A secret's name (values are never shown).
#[derive(SimpleObject)]
pub struct Secret {
    pub name: String,
    /// `user`, `team` or `pod`.
    pub scope: String,
    pub updated_at: DateTime<Utc>,
}

/// A registered SSH public key.
#[derive(SimpleObject)]
pub struct SshKey {
    pub id: String,
    pub name: String,
    pub fingerprint: String,
    pub algorithm: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<crate::workspace::SshKeyView> for SshKey {
    fn from(k: crate::workspace::SshKeyView) -> Self {
        SshKey {
            id: k.id,
            name: k.name,
            fingerprint: k.fingerprint,
            algorithm: k.algorithm,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// A team member.
#[derive(SimpleObject)]
pub struct TeamMember {
    pub user_id: String,
    pub name: String,
    pub role: GqlRole,
    pub since: DateTime<Utc>,
}

impl From<crate::teams::MemberView> for TeamMember {
    fn from(m: crate::teams::MemberView) -> Self {
        TeamMember {
            user_id: m.user_id,
            name: m.name,
            role: m.role.into(),
            since: m.since,
        }
    }
}

/// A team the caller belongs to.
pub struct Team(crate::teams::TeamView);

#[Object]
impl Team {
    async fn id(&self) -> &str {
        &self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The caller's role.
    async fn role(&self) -> GqlRole {
        self.0.role.into()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn members(&self, ctx: &Context<'_>) -> R<Vec<TeamMember>> {
        let (_, members) = state(ctx).teams.show_team(who(ctx)?, &self.0.id).await.gql()?;
        Ok(members.into_iter().map(Into::into).collect())
    }
}

/// A pod, as its viewer sees it.
pub struct Pod(pub PodView);

#[Object]
impl Pod {
    async fn id(&self) -> String {
        self.0.id.to_string()
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The owner's user name.
    async fn owner(&self, ctx: &Context<'_>) -> R<String> {
        state(ctx).pods.pod_owner_name(&self.0).await.gql()
    }
    /// The team's name, for a team pod.
    async fn team(&self, ctx: &Context<'_>) -> R<Option<String>> {
        let Some(id) = &self.0.team_id else {
            return Ok(None);
        };
        Ok(state(ctx)
            .teams.team_name(id)
            .await
            .gql()?
            .or_else(|| Some(id.clone())))
    }
    async fn state(&self) -> GqlPodState {
        self.0.state.into()
    }
    /// Why the pod is in `ERROR`.
    async fn state_reason(&self) -> Option<&str> {
        self.0.state_reason.as_deref()
    }
    /// The pod's host when it is not ready: `cordoned`, `unreachable` or
    /// `lost` (null when ready).
    async fn host_status(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let mut view = [self.0.clone()];
        state(ctx).pods.mark_host_status(&mut view).await.map_err(|e| async_graphql::Error::new(e.message))?;
        Ok(view[0].host_status.map(|s| s.as_str().to_owned()))
    }
    async fn template(&self) -> &str {
        &self.0.template
    }
    async fn image(&self) -> &str {
        &self.0.image
    }
    async fn tier(&self) -> GqlTier {
        self.0.tier.into()
    }
    /// `gvisor` or `youki`.
    async fn runtime(&self) -> String {
        self.0.runtime.to_string()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The last change to the pod (state, settings).
    async fn last_activity_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn public_ports(&self) -> &[u16] {
        &self.0.public_ports
    }
    async fn tabs(&self) -> Vec<PodTab> {
        self.0.tabs.iter().map(Into::into).collect()
    }
    /// The pod's `pinacle.yaml`, canonical form.
    async fn config(&self) -> Option<String> {
        self.0
            .config
            .as_ref()
            .map(pinacle_config::pinacle_yaml::to_canonical_yaml)
    }
    /// The caller's saved workspace layout for this pod.
    async fn layout(&self, ctx: &Context<'_>) -> R<Option<Json<serde_json::Value>>> {
        Ok(state(ctx).workspace.workspace_layout(who(ctx)?, &self.0).await.gql()?.map(Json))
    }
    /// State changes, oldest first: those after `after`, the last `limit`
    /// (200 by default, 1000 at most).
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<f64>,
        limit: Option<u32>,
    ) -> R<Vec<PodEvent>> {
        let limit = limit.unwrap_or(200).clamp(1, 1000) as usize;
        let events = state(ctx)
            .pods.events_since(self.0.id, after.unwrap_or(0.0) as i64)
            .await
            .gql()?;
        let skip = events.len().saturating_sub(limit);
        Ok(events.into_iter().skip(skip).map(Into::into).collect())
    }
    /// Resource use against the tier; null unless the pod runs on this server's host.
    async fn usage(&self, ctx: &Context<'_>) -> Option<PodUsage> {
        let u = state(ctx).workspace.pod_usage(&self.0).await?;
        let l = self.0.limits;
        Some(PodUsage {
            cpu_percent: u.cpu_percent,
            cpu_limit_percent: f64::from(l.vcpus) * 100.0,
            memory_bytes: u.memory_bytes.map(|b| b as f64),
            memory_limit_bytes: l.memory_bytes as f64,
            disk_bytes: u.disk_bytes.map(|b| b as f64),
            disk_limit_bytes: l.disk_bytes as f64,
        })
    }
    async fn snapshots(&self, ctx: &Context<'_>) -> R<Vec<Snapshot>> {
        match state(ctx)
            .pods.list_snapshots(who(ctx)?, &self.0.id.to_string())
            .await
        {
            Ok(list) => Ok(list.into_iter().map(Into::into).collect()),
            // a pod on another host: none known here
            Err(e) if e.code == "not_supported" => Ok(Vec::new()),
            Err(e) => Err(gql(e)),
        }
    }
    /// How to get a shell in the pod from a terminal: `ssh` through the
    /// gateway when one runs, else the CLI.
    async fn ssh_command(&self, ctx: &Context<'_>) -> String {
        let s = state(ctx);
        let Some(site) = s.ssh.site() else {
            return format!("pinacle pod shell {}", self.0.name);
        };
        let login = s.ssh.ssh_login(&self.0).await.unwrap_or_else(|_| self.0.name.to_string());
        match site.port {
            22 => format!("ssh {login}@{}", site.host),
            port => format!("ssh {login}@{} -p {port}", site.host),
        }
    }
}

// ---------------------------------------------------------------------------
// Roots

/// Queries.
pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    async fn me(&self, ctx: &Context<'_>) -> R<User> {
        let p = who(ctx)?;
        Ok(User {
            id: p.user_id.clone(),
            name: p.user_name.clone(),
            is_admin: p.is_admin(),
        })
    }
    /// The caller's pods and their teams' pods.
    async fn pods(&self, ctx: &Context<'_>) -> R<Vec<Pod>> {
        Ok(state(ctx)
            .pods.list_pods(who(ctx)?)
            .await
            .gql()?
            .into_iter()
            .map(Pod)
            .collect())
    }
    /// One pod, by id or name.
    async fn pod(&self, ctx: &Context<'_>, id: String) -> R<Pod> {
        Ok(Pod(state(ctx)
            .pods.find_pod(who(ctx)?, &id, Action::Read)
            .await
            .gql()?))
    }
    async fn templates(&self) -> Vec<Template> {
        pinacle_config::templates::Template::known()
            .iter()
            .map(|t| {
                let tier =
                    pinacle_config::parse("pinacle.yaml", t.pinacle_yaml, Default::default())
                        .map(|(c, _)| c.tier.id().to_owned())
                        .unwrap_or_else(|_| Tier::DevSmall.id().to_owned());
                Template {
                    name: t.id.to_owned(),
                    description: t.description.to_owned(),
                    image: t.image.to_owned(),
                    tier,
                    pinacle_yaml: t.pinacle_yaml.to_owned(),
                }
            })
            .collect()
    }
    async fn tiers(&self) -> Vec<GqlTier> {
        Tier::ALL.iter().copied().map(Into::into).collect()
    }
    async fn tokens(&self, ctx: &Context<'_>) -> R<Vec<ApiToken>> {
        Ok(state(ctx)
            .tokens.list(who(ctx)?)
            .await
            .gql()?
            .into_iter()
            .map(Into::into)
            .collect())
    }
    /// The caller's own secrets (names only).
    async fn secrets(&self, ctx: &Context<'_>) -> R<Vec<Secret>> {
        let list = state(ctx)
            .secrets.list_secrets(who(ctx)?, &Default::default())
            .await
            .gql()?;
        Ok(list
            .into_iter()
            .map(|s| Secret {
                name: s.name,
                scope: s.scope,
                updated_at: s.updated_at,
            })
            .collect())
    }
    async fn ssh_keys(&self, ctx: &Context<'_>) -> R<Vec<SshKey>> {
        Ok(state(ctx)
            .workspace.list_ssh_keys(who(ctx)?)
            .await
            .gql()?
            .into_iter()
            .map(Into::into)
            .collect())
    }
    async fn teams(&self, ctx: &Context<'_>) -> R<Vec<Team>> {
        Ok(state(ctx)
            .teams.list_teams(who(ctx)?)
            .await
            .gql()?
            .into_iter()
            .map(Team)
            .collect())
    }
    /// Checks a `pinacle.yaml` (nothing is created).
    async fn validate_config(&self, ctx: &Context<'_>, yaml: String) -> R<ConfigCheck> {
        who(ctx)?;
        Ok(check_config(pinacle_config::pinacle_yaml::FILE_NAME, &yaml))
    }
    /// Reads a repository's `pinacle.yaml` (or imports its devcontainer.json)
    /// to pre-fill the new-pod form. GitHub repositories only.
    async fn repository_config(&self, ctx: &Context<'_>, url: String) -> R<RepositoryConfig> {
        who(ctx)?;
        repo_config::RepositoryConfigs::new(state(ctx).github.clone()).repository_config(&url).await.gql()
    }
}

/// Parses `text` into a [`ConfigCheck`].
pub fn check_config(file: &str, text: &str) -> ConfigCheck {
    match pinacle_config::parse(file, text, Default::default()) {
        Ok((config, warnings)) => {
            let def = pinacle_config::resolve::resolve(&config);
            ConfigCheck {
                ok: true,
                diagnostics: diagnostics_of(&warnings),
                canonical: Some(pinacle_config::pinacle_yaml::to_canonical_yaml(&config)),
                tier: Some(def.tier.id().to_owned()),
                tabs: def.tabs.iter().map(Into::into).collect(),
            }
        }
        Err(d) => ConfigCheck {
            ok: false,
            diagnostics: diagnostics_of(&d),
            canonical: None,
            tier: None,
            tabs: Vec::new(),
        },
    }
}

/// A new pod.
#[derive(InputObject)]
pub struct CreatePodInput {
    pub name: String,
    pub template: Option<String>,
    pub tier: Option<String>,
    /// Team name or id; none: a personal pod.
    pub team: Option<String>,
    /// A `pinacle.yaml`; without it, the template's own.
    pub config: Option<String>,
    /// The image instead of the configuration's: a host image's name or a
    /// registry reference (`python:3.13`), pinned to its digest at creation.
    pub image: Option<String>,
    /// Clone this repository into /workspace (inside the pod); without a
    /// config and a template, its own pinacle.yaml configures the pod.
    pub repository: Option<RepositoryInput>,
}

/// A repository to clone into a new pod's /workspace.
#[derive(InputObject)]
pub struct RepositoryInput {
    /// `https://…` (or `http://…`), without credentials: a private
    /// repository's token is the secret `GIT_TOKEN`.
    #[graphql(default)]
    pub url: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// `owner/name` of a repository of the GitHub App, instead of `url`.
    pub github: Option<String>,
    /// With the GitHub App: the pod's key as a deploy key, `read` or
    /// `write`.
    #[graphql(name = "deploy_key")]
    pub deploy_key: Option<String>,
}

/// Mutations (each needs a token with scope full).
pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    async fn create_pod(&self, ctx: &Context<'_>, input: CreatePodInput) -> R<Pod> {
        let repository =
            input.repository.map(|r| crate::service::RepositoryRequest { url: r.url, branch: r.branch, commit: r.commit, github: r.github, deploy_key: r.deploy_key });
        let who = writer(ctx)?;
        let req = crate::service::CreatePodRequest {
            name: input.name,
            template: input.template.filter(|t| !t.is_empty()),
            tier: input.tier.filter(|t| !t.is_empty()),
            runtime: None,
            team: input.team.filter(|t| !t.is_empty()),
            install: Vec::new(),
            processes: Vec::new(),
            config: input.config.filter(|c| !c.trim().is_empty()),
            config_file: None,
            strict: false,
            egress: None,
            image: input.image.filter(|i| !i.trim().is_empty()),
            host_labels: Default::default(),
        };
        Ok(Pod(state(ctx).github_apps.create_pod(who, req, repository).await.gql()?))
    }
    async fn start_pod(&self, ctx: &Context<'_>, id: String) -> R<Pod> {
        Ok(Pod(state(ctx)
            .pods.request(writer(ctx)?, &id, Transition::StartRequested)
            .await
            .gql()?))
    }
    async fn stop_pod(&self, ctx: &Context<'_>, id: String) -> R<Pod> {
        Ok(Pod(state(ctx)
            .pods.request(writer(ctx)?, &id, Transition::StopRequested)
            .await
            .gql()?))
    }
    async fn delete_pod(&self, ctx: &Context<'_>, id: String) -> R<Pod> {
        Ok(Pod(state(ctx)
            .pods.request(writer(ctx)?, &id, Transition::DeleteRequested)
            .await
            .gql()?))
    }
    /// Snapshots a stopped pod's volumes.
    async fn create_snapshot(
        &self,
        ctx: &Context<'_>,
        pod: String,
        name: Option<String>,
    ) -> R<Snapshot> {
        let req = crate::service::CreateSnapshot {
            name: name.unwrap_or_default(),
        };
        let who = writer(ctx)?;
        let info = state(ctx).pods.create_snapshot(who, &pod, req).await.gql()?;
        // the memory of the pod's project, as it stands now, goes with it
        state(ctx).memory_access.snapshot_taken(who, &pod, &info.id).await;
        Ok(info.into())
    }
    /// A one-minute sign-in link to the pod's `port` through the proxy;
    /// `embed` for the IDE's iframe.
    async fn open_port(
        &self,
        ctx: &Context<'_>,
        pod: String,
        port: u16,
        path: Option<String>,
        embed: Option<bool>,
    ) -> R<OpenLink> {
        let link = state(ctx)
            .pod_access.open_link(writer(ctx)?, &pod, port, path, embed.unwrap_or(false))
            .await
            .gql()?;
        Ok(OpenLink {
            url: link.url,
            origin: link.origin,
        })
    }
    /// Saves the caller's workspace layout for a pod (a JSON object).
    async fn save_layout(
        &self,
        ctx: &Context<'_>,
        pod: String,
        layout: Json<serde_json::Value>,
    ) -> R<bool> {
        state(ctx)
            .workspace.save_workspace_layout(writer(ctx)?, &pod, &layout.0)
            .await
            .gql()?;
        Ok(true)
    }
    async fn create_token(
        &self,
        ctx: &Context<'_>,
        name: String,
        scope: Option<GqlScope>,
        expires_in_days: Option<u32>,
    ) -> R<CreatedToken> {
        let req = crate::tokens::CreateTokenRequest {
            name,
            scope: scope.map(Into::into),
            expires_in_seconds: expires_in_days.map(|d| i64::from(d) * 86_400),
        };
        let (info, token) = state(ctx).tokens.create(writer(ctx)?, req).await.gql()?;
        Ok(CreatedToken {
            token,
            info: info.into(),
        })
    }
    async fn revoke_token(&self, ctx: &Context<'_>, id: String) -> R<bool> {
        state(ctx).tokens.revoke(writer(ctx)?, &id).await.gql()?;
        Ok(true)
    }
    /// Creates or replaces one of the caller's secrets; the value is never shown again.
    async fn set_secret(&self, ctx: &Context<'_>, name: String, value: String) -> R<Secret> {
        let req = crate::secrets::SetSecretRequest { value };
        let (s, _) = state(ctx)
            .secrets.set_secret(writer(ctx)?, &name, &Default::default(), req)
            .await
            .gql()?;
        Ok(Secret {
            name: s.name,
            scope: s.scope,
            updated_at: s.updated_at,
        })
    }
    async fn delete_secret(&self, ctx: &Context<'_>, name: String) -> R<bool> {
        state(ctx)
            .secrets.delete_secret(writer(ctx)?, &name, &Default::default())
            .await
            .gql()?;
        Ok(true)
    }
    /// Registers an SSH public key with proof of possession: `challenge`
    /// from POST /api/v1/ssh-keys/challenge, `signature` the armored output
    /// of `ssh-keygen -Y sign -n pinacle-ssh-key` over it. Without them the
    /// answer is the clear `proof_required` error.
    async fn add_ssh_key(
        &self,
        ctx: &Context<'_>,
        name: String,
        public_key: String,
        challenge: Option<String>,
        signature: Option<String>,
    ) -> R<SshKey> {
        let s = state(ctx);
        let who = writer(ctx)?;
        let view = match (challenge, signature) {
            (Some(c), Some(sig)) => s.workspace.add_ssh_key_with_proof(who, &name, &public_key, &c, &sig).await,
            _ => s.workspace.add_ssh_key(who, &name, &public_key).await,
        };
        Ok(view.gql()?.into())
    }
    async fn delete_ssh_key(&self, ctx: &Context<'_>, id: String) -> R<bool> {
        state(ctx).workspace.delete_ssh_key(writer(ctx)?, &id).await.gql()?;
        Ok(true)
    }
    async fn create_team(&self, ctx: &Context<'_>, name: String) -> R<Team> {
        Ok(Team(
            state(ctx)
                .teams.create_team(writer(ctx)?, crate::teams::CreateTeamRequest { name })
                .await
                .gql()?,
        ))
    }
    async fn add_team_member(
        &self,
        ctx: &Context<'_>,
        team: String,
        user: String,
        role: GqlRole,
    ) -> R<TeamMember> {
        let req = crate::teams::AddMemberRequest {
            user,
            role: role.into(),
        };
        Ok(state(ctx)
            .teams.add_member(writer(ctx)?, &team, req)
            .await
            .gql()?
            .into())
    }
    async fn set_team_role(
        &self,
        ctx: &Context<'_>,
        team: String,
        user: String,
        role: GqlRole,
    ) -> R<TeamMember> {
        let role: TeamRole = role.into();
        Ok(state(ctx)
            .teams.set_member_role(writer(ctx)?, &team, &user, role)
            .await
            .gql()?
            .into())
    }
    async fn remove_team_member(&self, ctx: &Context<'_>, team: String, user: String) -> R<bool> {
        state(ctx)
            .teams.remove_member(writer(ctx)?, &team, &user)
            .await
            .gql()?;
        Ok(true)
    }
}

/// Subscriptions.
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// A pod the caller may see changed state: its new view, once per
    /// change (`DELETED` last).
    async fn pod_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Pod>> {
        let (s, p) = (state(ctx).clone(), who(ctx)?.clone());
        let credential = ctx.data_opt::<WsCredential>().cloned();
        let live = tokio_stream::wrappers::BroadcastStream::new(s.events.subscribe());
        let seen = std::sync::Arc::new(tokio::sync::Mutex::new(Visibility::new(p)));
        Ok(live
            .then(move |ev| {
                let (s, credential, seen) = (s.clone(), credential.clone(), seen.clone());
                async move {
                    // a lagging subscriber skips to the next change
                    let Ok(ev) = ev else { return Some(None) };
                    let mut seen = seen.lock().await;
                    // the caller as they are now (cached; None ends the stream)
                    if let Some(WsCredential(token)) = &credential {
                        match s.auth.principal_for_bearer(token).await {
                            Ok(now) => seen.caller_is(now),
                            Err(e) if e.status.is_server_error() => {}
                            Err(_) => return None,
                        }
                    }
                    Some(seen.view(&s, ev.pod_id).await.map(Pod))
                }
            })
            .take_while(|item| std::future::ready(item.is_some()))
            .filter_map(|item| std::future::ready(item.flatten())))
    }

    /// The pod's state changes after `after` (all when null), then live
    /// ones; the stream ends when the pod is deleted, or when the caller
    /// may no longer see it.
    async fn pod_events(
        &self,
        ctx: &Context<'_>,
        pod: String,
        after: Option<f64>,
    ) -> async_graphql::Result<impl Stream<Item = PodEvent>> {
        let s = state(ctx).clone();
        let view = s.pods.find_pod(who(ctx)?, &pod, Action::Read).await.gql()?;
        // subscribe before reading history so nothing falls between the two
        let live = s.events.subscribe();
        let history = s
            .pods.events_since(view.id, after.unwrap_or(0.0) as i64)
            .await
            .gql()?;
        let lost: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            match ctx.data_opt::<WsCredential>().cloned() {
                Some(WsCredential(token)) => {
                    let lost = crate::routes::pods::until_access_lost(s.clone(), token.to_string(), view.id, Action::Read);
                    Box::pin(async move {
                        lost.await;
                    })
                }
                None => Box::pin(std::future::pending()),
            };
        Ok(
            crate::routes::pods::pod_event_stream(s, view.id, history, live)
                .map(|e: PodEventView| -> PodEvent { e.into() })
                .take_until(lost),
        )
    }
}

/// Which pods one `podUpdates` subscriber may see. Pods it may not see are
/// remembered, so other tenants' changes cost no query each (only the
/// first one per pod); forgotten when the caller's roles change.
struct Visibility {
    caller: Principal,
    hidden: std::collections::HashSet<uuid::Uuid>,
}

/// Hidden pods remembered per subscriber, at most.
const MAX_HIDDEN: usize = 10_000;

impl Visibility {
    fn new(caller: Principal) -> Self {
        Visibility { caller, hidden: Default::default() }
    }

    /// The caller as they are now: a change of roles forgets what was hidden.
    fn caller_is(&mut self, now: Principal) {
        if now.subject != self.caller.subject {
            self.hidden.clear();
        }
        self.caller = now;
    }

    /// Pod `id`'s view, if the caller may see it.
    async fn view(&mut self, s: &AppState, id: uuid::Uuid) -> Option<PodView> {
        if self.hidden.contains(&id) {
            return None;
        }
        match s.pods.pod_seen_by(&self.caller, id).await {
            Ok(v) => Some(v),
            Err(e) => {
                if e.status == axum::http::StatusCode::NOT_FOUND {
                    if self.hidden.len() >= MAX_HIDDEN {
                        self.hidden.clear();
                    }
                    self.hidden.insert(id);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/schema.graphql");
        let current = sdl();
        if std::env::var_os("PINACLE_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &current).unwrap();
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == current,
            "web/schema.graphql is stale: the GraphQL schema changed. If the change is intended, run \
             `PINACLE_UPDATE_SCHEMA=1 cargo test -p pinacle-api graphql` and update the web app"
        );
    }

    #[test]
    fn a_config_check_reports_positions_and_resolves_tabs() {
        let bad = check_config("pinacle.yaml", "version: \"1.0\"\ntier: dev.smal\n");
        assert!(!bad.ok);
        let d = bad
            .diagnostics
            .iter()
            .find(|d| d.path == "tier")
            .expect("a tier diagnostic");
        assert_eq!((d.line, d.column), (2, 7));
        assert!(
            d.suggestion
                .as_deref()
                .is_some_and(|s| s.contains("dev.small")),
            "{:?}",
            d.suggestion
        );
        let good = check_config(
            "pinacle.yaml",
            pinacle_config::templates::Template::find("vite")
                .unwrap()
                .pinacle_yaml,
        );
        assert!(
            good.ok,
            "{:?}",
            good.diagnostics
                .iter()
                .map(|d| &d.message)
                .collect::<Vec<_>>()
        );
        assert!(
            good.tabs
                .iter()
                .any(|t| t.kind == TabKind::Pod && t.port.is_some()),
            "the vite template has an app tab"
        );
    }
}
