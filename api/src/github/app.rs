//! The GitHub App inside the control plane (issue 20): installations and
//! their repositories, webhook deliveries (verified, recorded, processed
//! in the background, deduplicated after success), repository access for
//! users, git tokens for pods, deploy keys, and pull-request previews.
//!
//! GitHub itself is reached only through [`pinacle_github::app::GithubApp`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Duration, Utc};
use pinacle_github::app::{GithubApp, RepoRole, TokenScope};
use pinacle_github::preview::{self, Preview, PreviewState};
use pinacle_github::repo::FullName;
use pinacle_github::webhook::{self, Event};
use pinacle_orchestrator::{PodEvent, PodState};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use serde::Serialize;
use uuid::Uuid;

use crate::entities::{github_delivery as delivery, github_installation as installation, github_pod as gpod, github_repository as grepo, user_identity};
use crate::principal::Principal;
use crate::service::{CreatePodRequest, PodView, RepositoryRequest};
use crate::ApiError;

mod manifest;

pub use manifest::{AppSite, ManifestRequest};

/// How the App is configured. Debug hides the secret.
pub struct AppConfig {
    pub client: Arc<GithubApp>,
    pub webhook_secret: String,
    /// Where repositories are cloned from: `https://github.com`.
    pub git_url: String,
    /// Where users install the App (`https://github.com/apps/SLUG/installations/new`).
    pub install_url: Option<String>,
    /// This server's public URL (links in comments).
    pub public_url: String,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig").field("client", &self.client).field("webhook_secret", &"<redacted>").field("git_url", &self.git_url).finish()
    }
}

/// Outcomes of a delivery.
pub const QUEUED: &str = "queued";
pub const PROCESSING: &str = "processing";
pub const PROCESSED: &str = "processed";
pub const IGNORED: &str = "ignored";
pub const FAILED: &str = "failed";

/// How many times a delivery is tried before it stays `failed`
/// (GitHub's redelivery, or an admin's, tries it again).
const MAX_ATTEMPTS: i32 = 3;

/// The longest one delivery's processing may take; past it, it fails.
const PROCESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// A delivery left `processing` this long was abandoned by a server that
/// stopped: it is queued again.
const ABANDONED_AFTER_MINUTES: i64 = 10;

/// A failed try waits this long before the next.
const RETRY_AFTER_SECS: i64 = 5;

/// How often stale previews, expired retentions and old deliveries are
/// swept.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How often GitHub is asked for deliveries that never reached this
/// server (GitHub does not retry them itself).
const REDELIVER_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// How long the server following previews keeps that job without
/// renewing it (another server takes over after a crash within this).
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a deleted pod's deploy-key removal waits after a failure,
/// and after GitHub refused it.
const KEY_CLEANUP_RETRY: std::time::Duration = std::time::Duration::from_secs(60);
const KEY_CLEANUP_REFUSED_RETRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// GitHub redelivers deliveries of the last 3 days; a margin is kept.
const REDELIVER_WITHIN_HOURS: i64 = 71;

/// Most redeliveries asked for in one pass.
const MAX_REDELIVERIES: usize = 50;

/// Deliveries kept for the admin page.
const KEEP_DELIVERIES_DAYS: i64 = 14;

/// The answer to a delivery.
#[derive(Debug, Serialize)]
pub struct Received {
    pub id: String,
    pub outcome: &'static str,
}

/// A repository as the picker shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryView {
    pub full_name: String,
    pub private: bool,
    pub default_branch: Option<String>,
    pub installation_id: i64,
    pub previews: bool,
}

/// A pod's GitHub link as pod views show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PodGithub {
    pub repository: String,
    pub pull_request: Option<i64>,
    pub head_sha: String,
    pub behind: Option<serde_json::Value>,
    pub deploy_key: bool,
    /// The default branch's prebuild pod.
    pub prebuild: bool,
}

/// A repository a user's pod will clone through the App.
#[derive(Debug, Clone)]
pub struct ResolvedRepo {
    pub installation: i64,
    pub repo: FullName,
    pub git_write: bool,
    pub deploy_key: Option<bool>,
}

/// (user id, repository key) → (role, when checked).
type RoleCache = HashMap<(String, String), (RepoRole, DateTime<Utc>)>;

/// The GitHub App service.
#[derive(Clone)]
pub struct GithubApps {
    db: sea_orm::DatabaseConnection,
    config: Arc<OnceLock<AppConfig>>,
    pods: crate::service::Pods,
    hosts: crate::hosts::ops::Hosts,
    ssh: crate::ssh::SshAccess,
    audit: crate::audit::AuditLog,
    /// Where browsers reach pods' ports (for the preview's URLs).
    proxy_site: Arc<OnceLock<crate::pod_access::ProxySite>>,
    wake: Arc<tokio::sync::Notify>,
    /// One preview's comment written at a time.
    showing: Arc<tokio::sync::Mutex<()>>,
    /// Seals the App's credentials made by the manifest flow.
    master_key: Arc<crate::crypto::MasterKey>,
    /// GitHub sign-in, set from an App made by the manifest flow.
    sign_in: Arc<OnceLock<crate::github::GithubConfig>>,
    /// Where GitHub and this server are.
    site: Arc<OnceLock<AppSite>>,
    /// Preview state last shown on GitHub, by pod.
    shown: Arc<Mutex<HashMap<Uuid, String>>>,
    /// Repository access checks, cached a minute.
    roles: Arc<Mutex<RoleCache>>,
    /// Tokens handed to fork previews, revoked when the preview stops.
    untrusted_tokens: Arc<Mutex<UntrustedTokens>>,
    events: crate::events::PodEvents,
    /// Deleted pods whose deploy keys could not be removed: when to try
    /// again.
    key_cleanup_retry: Arc<Mutex<HashMap<Uuid, tokio::time::Instant>>>,
    /// Held by the one server (of those sharing the database) that
    /// follows previews onto GitHub, sweeps and asks for redeliveries;
    /// every server works deliveries (each claims its own).
    lease: Arc<crate::lease::Lease>,
}

/// The live installation tokens each untrusted (fork) preview was given:
/// its code may have copied them out, so they are revoked at GitHub when
/// the preview stops, closes or goes, not left to expire. Kept in memory
/// by the server that minted them (a restarted server leaves them to their
/// one-hour expiry); bounded per pod and in pods.
#[derive(Default)]
struct UntrustedTokens(HashMap<Uuid, Vec<(pinacle_github::app::Token, i64)>>);

impl UntrustedTokens {
    const PER_POD: usize = 32;
    const PODS: usize = 4096;

    /// Remembers `token`, minted for `pod` at `now_ms` (milliseconds since
    /// the epoch), forgetting expired ones; past the bounds the oldest goes.
    fn record(&mut self, pod: Uuid, token: pinacle_github::app::Token, now_ms: i64) {
        let now = now_ms.div_euclid(1000);
        if !self.0.contains_key(&pod) && self.0.len() >= Self::PODS {
            self.0.retain(|_, ts| {
                ts.retain(|(t, _)| t.expires_at > now);
                !ts.is_empty()
            });
            if self.0.len() >= Self::PODS {
                tracing::warn!(pod = %pod, "too many fork previews hold live tokens: this one's is left to its one-hour expiry");
                return;
            }
        }
        let ts = self.0.entry(pod).or_default();
        ts.retain(|(t, _)| t.expires_at > now && t.token != token.token);
        if ts.len() >= Self::PER_POD {
            tracing::warn!(pod = %pod, "a fork preview holds {} live tokens: the oldest is left to its one-hour expiry", Self::PER_POD);
            ts.remove(0);
        }
        ts.push((token, now_ms));
    }

    /// The pods whose tokens are remembered.
    fn pods(&self) -> Vec<Uuid> {
        self.0.keys().copied().collect()
    }

    /// Whether any token of `pod` is remembered.
    fn holds(&self, pod: Uuid) -> bool {
        self.0.contains_key(&pod)
    }

    /// The pod's tokens minted at or before `minted_by_ms` and still alive
    /// at `now_ms`, forgotten here; later ones stay (a pod started again
    /// after the stop that revokes keeps the token it was just given).
    fn take(&mut self, pod: Uuid, now_ms: i64, minted_by_ms: i64) -> Vec<pinacle_github::app::Token> {
        let now = now_ms.div_euclid(1000);
        let Some(ts) = self.0.remove(&pod) else { return Vec::new() };
        let (old, newer): (Vec<_>, Vec<_>) = ts.into_iter().partition(|(_, minted)| *minted <= minted_by_ms);
        if !newer.is_empty() {
            self.0.insert(pod, newer);
        }
        old.into_iter().map(|(t, _)| t).filter(|t| t.expires_at > now).collect()
    }
}

fn not_configured() -> ApiError {
    ApiError::not_supported("the GitHub App is not configured on this server; start it with --github-app-id, --github-app-key-file and PINACLE_GITHUB_WEBHOOK_SECRET")
}

fn github_failed(e: pinacle_github::GithubError) -> ApiError {
    match e {
        pinacle_github::GithubError::NotFound(m) => ApiError::not_found(m),
        other => {
            tracing::warn!(error = %other, "GitHub call failed");
            ApiError::bad_gateway("github_unavailable", format!("GitHub: {other}"))
        }
    }
}

/// What [`GithubApps`] works with.
pub struct GithubAppsDeps {
    pub db: sea_orm::DatabaseConnection,
    pub pods: crate::service::Pods,
    pub hosts: crate::hosts::ops::Hosts,
    pub ssh: crate::ssh::SshAccess,
    pub audit: crate::audit::AuditLog,
    pub proxy_site: Arc<OnceLock<crate::pod_access::ProxySite>>,
    pub master_key: Arc<crate::crypto::MasterKey>,
    pub sign_in: Arc<OnceLock<crate::github::GithubConfig>>,
    pub events: crate::events::PodEvents,
    /// The one that serialises the database's writers (the preview lease
    /// takes it).
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl GithubApps {
    pub fn new(d: GithubAppsDeps) -> Self {
        Self {
            db: d.db.clone(),
            config: Arc::default(),
            pods: d.pods,
            hosts: d.hosts,
            ssh: d.ssh,
            audit: d.audit,
            proxy_site: d.proxy_site,
            wake: Arc::default(),
            showing: Arc::default(),
            master_key: d.master_key,
            sign_in: d.sign_in,
            site: Arc::default(),
            shown: Arc::default(),
            roles: Arc::default(),
            untrusted_tokens: Arc::default(),
            events: d.events,
            key_cleanup_retry: Arc::default(),
            lease: Arc::new(crate::lease::Lease::new(d.db.clone(), "github-app", LEASE_TTL, d.write_lock)),
        }
    }

    /// Configures the App (once, at start) and starts its workers.
    pub fn configure(&self, config: AppConfig) {
        if self.config.set(config).is_ok() {
            let me = self.clone();
            tokio::spawn(async move { me.work_deliveries().await });
            let me = self.clone();
            tokio::spawn(async move { me.watch_previews().await });
            let me = self.clone();
            tokio::spawn(async move { me.revoke_when_stopped().await });
            let me = self.clone();
            tokio::spawn(async move {
                let mut last_redelivery = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(SWEEP_EVERY).await;
                    if !me.lease.held().await {
                        continue;
                    }
                    me.sweep().await;
                    if last_redelivery.elapsed() >= REDELIVER_EVERY {
                        last_redelivery = tokio::time::Instant::now();
                        if let Err(e) = me.redeliver_failed().await {
                            tracing::warn!(error = %e.message, "asking GitHub for failed deliveries");
                        }
                    }
                }
            });
        }
    }

    pub fn config(&self) -> Option<&AppConfig> {
        self.config.get()
    }

    fn app(&self) -> Result<&AppConfig, ApiError> {
        self.config.get().ok_or_else(not_configured)
    }

    // ---- webhooks ----------------------------------------------------

    /// Takes one delivery: checks the signature (401), the headers and
    /// the payload (400), records it and queues it. A delivery already
    /// processed is acknowledged as a duplicate and not run again.
    pub async fn receive(&self, event: Option<&str>, id: Option<&str>, signature: Option<&str>, body: &[u8]) -> Result<Received, ApiError> {
        let app = self.app()?;
        webhook::verify(app.webhook_secret.as_bytes(), signature, body).map_err(|e| ApiError::unauthenticated("bad_signature", e.to_string()))?;
        let (Some(event), Some(id)) = (event, id) else {
            return Err(ApiError::bad_request("invalid_delivery", webhook::WebhookError::MissingHeader.to_string()));
        };
        if id.is_empty() || id.len() > 100 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ApiError::bad_request("invalid_delivery", "X-GitHub-Delivery is not a delivery id"));
        }
        let parsed = Event::parse(event, body).map_err(|e| ApiError::bad_request("malformed_payload", e.to_string()))?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("malformed_payload", "the payload is not UTF-8"))?;
        let now = Utc::now();
        if let Some(seen) = delivery::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
            if seen.outcome == PROCESSED || seen.outcome == IGNORED {
                return Ok(Received { id: id.to_owned(), outcome: "duplicate" });
            }
            if seen.outcome == QUEUED || seen.outcome == PROCESSING {
                return Ok(Received { id: id.to_owned(), outcome: QUEUED });
            }
            // a failed delivery sent again (GitHub's redelivery) runs again
            let mut m = seen.into_active_model();
            m.outcome = Set(QUEUED.into());
            m.body = Set(text);
            m.attempts = Set(0);
            m.received_at = Set(now);
            m.update(&self.db).await?;
        } else {
            let row = delivery::ActiveModel {
                id: Set(id.to_owned()),
                event: Set(event.chars().take(64).collect()),
                action: Set(parsed.action().map(str::to_owned)),
                repository: Set(parsed.repository().map(str::to_owned)),
                outcome: Set(QUEUED.into()),
                detail: Set(String::new()),
                body: Set(text),
                attempts: Set(0),
                received_at: Set(now),
                processed_at: Set(None),
            };
            if let Err(e) = row.insert(&self.db).await {
                // the same delivery twice at once: the other one has it;
                // anything else is this server's failure (GitHub may redeliver)
                if delivery::Entity::find_by_id(id.to_owned()).one(&self.db).await?.is_some() {
                    return Ok(Received { id: id.to_owned(), outcome: "duplicate" });
                }
                return Err(e.into());
            }
        }
        self.wake.notify_one();
        Ok(Received { id: id.to_owned(), outcome: QUEUED })
    }

    /// Works the queued deliveries, oldest first, until the server stops.
    async fn work_deliveries(&self) {
        loop {
            // deliveries a stopped server left half done run again
            let _ = delivery::Entity::update_many()
                .col_expr(delivery::Column::Outcome, Expr::value(QUEUED))
                .filter(delivery::Column::Outcome.eq(PROCESSING))
                .filter(delivery::Column::ProcessedAt.lt(Utc::now() - Duration::minutes(ABANDONED_AFTER_MINUTES)))
                .exec(&self.db)
                .await;
            match self.next_delivery().await {
                Ok(Some(d)) => {
                    // a panic fails this delivery, not the worker
                    let me = self.clone();
                    let (id, event, attempts) = (d.id.clone(), d.event.clone(), d.attempts);
                    if let Err(e) = tokio::spawn(async move { me.process(d).await }).await {
                        tracing::error!(delivery = %id, event = %event, error = %e, "processing a delivery panicked");
                        let _ = delivery::Entity::update_many()
                            .col_expr(delivery::Column::Outcome, Expr::value(FAILED))
                            .col_expr(delivery::Column::Detail, Expr::value("processing it failed inside Pinacle; see the server's log"))
                            .col_expr(delivery::Column::Attempts, Expr::value(attempts + 1))
                            .filter(delivery::Column::Id.eq(id))
                            .exec(&self.db)
                            .await;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e.message, "reading the webhook queue"),
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.wake.notified()).await;
        }
    }

    /// Claims the oldest queued delivery that is due (a failed try waits
    /// [`RETRY_AFTER_SECS`]); another server's claim wins.
    async fn next_delivery(&self) -> Result<Option<delivery::Model>, ApiError> {
        loop {
            let now = Utc::now();
            let due = sea_orm::Condition::any()
                .add(delivery::Column::ProcessedAt.is_null())
                .add(delivery::Column::ProcessedAt.lt(now - Duration::seconds(RETRY_AFTER_SECS)));
            let Some(d) = delivery::Entity::find()
                .filter(delivery::Column::Outcome.eq(QUEUED))
                .filter(due)
                .order_by_asc(delivery::Column::ReceivedAt)
                .limit(1)
                .one(&self.db)
                .await?
            else {
                return Ok(None);
            };
            let claimed = delivery::Entity::update_many()
                .col_expr(delivery::Column::Outcome, Expr::value(PROCESSING))
                .col_expr(delivery::Column::ProcessedAt, Expr::value(now))
                .filter(delivery::Column::Id.eq(d.id.clone()))
                .filter(delivery::Column::Outcome.eq(QUEUED))
                .exec(&self.db)
                .await?;
            if claimed.rows_affected == 1 {
                return Ok(Some(d));
            }
        }
    }

    async fn process(&self, d: delivery::Model) {
        let started = std::time::Instant::now();
        let result = match Event::parse(&d.event, d.body.as_bytes()) {
            Ok(event) => match tokio::time::timeout(PROCESS_TIMEOUT, self.handle(event)).await {
                Ok(r) => r,
                Err(_) => Err(format!("processing took longer than {} s", PROCESS_TIMEOUT.as_secs())),
            },
            Err(e) => Err(e.to_string()),
        };
        let attempts = d.attempts + 1;
        let (outcome, detail, keep_body) = match result {
            Ok(Handled::Done(detail)) => (PROCESSED, detail, false),
            Ok(Handled::Ignored(detail)) => (IGNORED, detail, false),
            Err(e) if attempts < MAX_ATTEMPTS => (QUEUED, e, true),
            Err(e) => (FAILED, e, true),
        };
        tracing::info!(delivery = %d.id, event = %d.event, outcome, ms = started.elapsed().as_millis() as u64, detail = %detail, "GitHub delivery");
        let mut m = d.into_active_model();
        m.outcome = Set(outcome.into());
        m.detail = Set(detail.chars().take(1000).collect());
        m.attempts = Set(attempts);
        m.processed_at = Set(Some(Utc::now()));
        if !keep_body {
            m.body = Set(String::new());
        }
        if let Err(e) = m.update(&self.db).await {
            tracing::warn!(error = %e, "recording a delivery's outcome");
        }
        if outcome == QUEUED {
            // due again after a pause (see `next_delivery`)
            let wake = self.wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(RETRY_AFTER_SECS as u64 + 1)).await;
                wake.notify_one();
            });
        }
    }

    async fn handle(&self, event: Event) -> Result<Handled, String> {
        match event {
            Event::Ping => Ok(Handled::Ignored("ping".into())),
            Event::Other { event } => Ok(Handled::Ignored(format!("{event} events are not used"))),
            Event::Installation(e) => self.on_installation(e).await.map_err(|e| e.message),
            Event::InstallationRepositories(e) => self.on_installation_repositories(e).await.map_err(|e| e.message),
            Event::PullRequest(e) => self.on_pull_request(*e).await.map_err(|e| e.message),
            Event::Push(e) => self.on_push(*e).await.map_err(|e| e.message),
        }
    }

    /// Asks GitHub to send again the deliveries of the last 3 days that
    /// never reached this server (every attempt failed, and none is
    /// recorded here): what GitHub's documentation advises, as it does
    /// not retry. Answers how many were asked for.
    pub async fn redeliver_failed(&self) -> Result<usize, ApiError> {
        let app = self.app()?;
        let since = Utc::now() - Duration::hours(REDELIVER_WITHIN_HOURS);
        let failed = pinacle_github::app::with_retries(2, || app.client.failed_deliveries(since, MAX_REDELIVERIES)).await.map_err(github_failed)?;
        let mut asked = 0;
        for d in failed {
            if delivery::Entity::find_by_id(d.guid.clone()).one(&self.db).await?.is_some() {
                // it arrived (on a later try, or another server took it)
                continue;
            }
            match app.client.redeliver(d.id).await {
                Ok(()) => asked += 1,
                Err(e) => tracing::warn!(delivery = %d.guid, error = %e, "asking GitHub to redeliver"),
            }
        }
        if asked > 0 {
            tracing::info!(asked, "asked GitHub to redeliver deliveries that never arrived");
        }
        Ok(asked)
    }

    // ---- installations -----------------------------------------------

    async fn linked_user(&self, github_id: u64) -> Result<Option<String>, ApiError> {
        Ok(user_identity::Entity::find()
            .filter(user_identity::Column::Provider.eq("github"))
            .filter(user_identity::Column::Subject.eq(github_id.to_string()))
            .one(&self.db)
            .await?
            .map(|l| l.user_id))
    }

    async fn on_installation(&self, e: webhook::InstallationEvent) -> Result<Handled, ApiError> {
        let app = self.app()?;
        let id = e.installation.id as i64;
        match e.action.as_str() {
            "created" | "new_permissions_accepted" | "unsuspend" => {
                let installer = match &e.sender {
                    Some(s) => self.linked_user(s.id).await?,
                    None => None,
                };
                let account = e.installation.account.clone();
                let existing = installation::Entity::find_by_id(id).one(&self.db).await?;
                let row = installation::ActiveModel {
                    id: Set(id),
                    account: Set(account.as_ref().map(|a| a.login.clone()).unwrap_or_default()),
                    account_type: Set(account.as_ref().and_then(|a| a.kind.clone()).unwrap_or_else(|| "User".into())),
                    suspended: Set(false),
                    installer_user_id: Set(installer.clone().or_else(|| existing.as_ref().and_then(|x| x.installer_user_id.clone()))),
                    created_at: Set(existing.as_ref().map_or_else(Utc::now, |x| x.created_at)),
                };
                if existing.is_some() {
                    row.update(&self.db).await?;
                } else {
                    row.insert(&self.db).await?;
                }
                let repos = match e.repositories {
                    Some(r) if e.action == "created" => r,
                    _ => pinacle_github::app::with_retries(3, || app.client.installation_repositories(id as u64, 5000))
                        .await
                        .map_err(github_failed)?
                        .into_iter()
                        .map(|r| webhook::RepoRef { id: r.id, full_name: r.full_name, private: r.private, default_branch: r.default_branch })
                        .collect(),
                };
                let n = repos.len();
                for r in repos {
                    self.upsert_repo(id, &r).await?;
                }
                Ok(Handled::Done(format!("installation {id} on {} with {n} repositories", account.map(|a| a.login).unwrap_or_default())))
            }
            "deleted" | "suspend" => {
                let stopped = self.stop_installation_pods(id, &format!("the GitHub App was {}", if e.action == "deleted" { "uninstalled" } else { "suspended" })).await?;
                let revoked = app.client.revoke_installation_tokens(id as u64).await.unwrap_or(0);
                if e.action == "deleted" {
                    grepo::Entity::delete_many().filter(grepo::Column::InstallationId.eq(id)).exec(&self.db).await?;
                    installation::Entity::delete_by_id(id).exec(&self.db).await?;
                } else if let Some(i) = installation::Entity::find_by_id(id).one(&self.db).await? {
                    let mut m = i.into_active_model();
                    m.suspended = Set(true);
                    m.update(&self.db).await?;
                }
                Ok(Handled::Done(format!("installation {id} {}: {stopped} pull-request pods stopped, {revoked} tokens revoked", e.action)))
            }
            other => Ok(Handled::Ignored(format!("installation {other}"))),
        }
    }

    async fn upsert_repo(&self, installation_id: i64, r: &webhook::RepoRef) -> Result<(), ApiError> {
        let Ok(name) = FullName::parse(&r.full_name) else { return Ok(()) };
        let existing = grepo::Entity::find_by_id(name.key()).one(&self.db).await?;
        let row = grepo::ActiveModel {
            name_key: Set(name.key()),
            full_name: Set(name.to_string()),
            repo_id: Set(r.id as i64),
            installation_id: Set(installation_id),
            private: Set(r.private),
            default_branch: Set(r.default_branch.clone().or_else(|| existing.as_ref().and_then(|x| x.default_branch.clone()))),
            previews: Set(existing.as_ref().is_some_and(|x| x.previews)),
            updated_at: Set(Utc::now()),
        };
        if existing.is_some() {
            row.update(&self.db).await?;
        } else {
            row.insert(&self.db).await?;
        }
        Ok(())
    }

    async fn on_installation_repositories(&self, e: webhook::InstallationRepositoriesEvent) -> Result<Handled, ApiError> {
        let id = e.installation.id as i64;
        if installation::Entity::find_by_id(id).one(&self.db).await?.is_none() {
            return Err(ApiError::conflict("unknown_installation", format!("installation {id} is not recorded yet (its installation event comes first)")));
        }
        for r in &e.repositories_added {
            self.upsert_repo(id, r).await?;
        }
        let mut stopped = 0;
        for r in &e.repositories_removed {
            let Ok(name) = FullName::parse(&r.full_name) else { continue };
            stopped += self.stop_repo_pods(&name, "the repository was removed from the GitHub App").await?;
            grepo::Entity::delete_by_id(name.key()).exec(&self.db).await?;
        }
        Ok(Handled::Done(format!("{} added, {} removed, {stopped} pull-request pods stopped", e.repositories_added.len(), e.repositories_removed.len())))
    }

    async fn stop_installation_pods(&self, installation_id: i64, why: &str) -> Result<usize, ApiError> {
        let rows = gpod::Entity::find().filter(gpod::Column::InstallationId.eq(installation_id)).all(&self.db).await?;
        self.stop_previews(rows, why).await
    }

    async fn stop_repo_pods(&self, repo: &FullName, why: &str) -> Result<usize, ApiError> {
        let rows = gpod::Entity::find().filter(gpod::Column::Repository.eq(repo.to_string())).all(&self.db).await?;
        self.stop_previews(rows, why).await
    }

    async fn stop_previews(&self, rows: Vec<gpod::Model>, why: &str) -> Result<usize, ApiError> {
        let mut n = 0;
        for row in rows.into_iter().filter(|r| r.pull_request.is_some()) {
            let Ok(id) = Uuid::parse_str(&row.pod_id) else { continue };
            if let Some(pod) = self.pods.pod_by_id(id).await? {
                if matches!(pod.state, PodState::Running | PodState::Starting | PodState::Provisioning | PodState::Pending) {
                    let _ = self.pods.record_progress(id, why).await;
                    if self.request_as_owner(&pod, PodEvent::StopRequested).await.is_ok() {
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }

    async fn owner_principal(&self, user_id: &str) -> Result<Principal, ApiError> {
        self.ssh
            .principal_for_user(user_id, "github")
            .await?
            .ok_or_else(|| ApiError::conflict("owner_gone", format!("user {user_id} no longer exists")))
    }

    async fn request_as_owner(&self, pod: &PodView, event: PodEvent) -> Result<PodView, ApiError> {
        let who = self.owner_principal(&pod.owner_id).await?;
        self.pods.request(&who, &pod.id.to_string(), event).await
    }

    // ---- pull requests -----------------------------------------------

    async fn on_pull_request(&self, e: webhook::PullRequestEvent) -> Result<Handled, ApiError> {
        match e.action.as_str() {
            "opened" | "reopened" | "ready_for_review" => self.open_preview(e).await,
            "synchronize" => self.sync_preview(e).await,
            "closed" => self.close_preview(e).await,
            other => Ok(Handled::Ignored(format!("pull_request {other}"))),
        }
    }

    /// The repository's previews settings, read from its `pinacle.yaml`
    /// on the *base* branch (a pull request cannot turn previews on for
    /// itself), or the admin's switch (defaults).
    async fn previews_of(&self, installation_id: i64, repo: &FullName, base_ref: &str) -> Result<Option<pinacle_config::Previews>, ApiError> {
        let app = self.app()?;
        let row = grepo::Entity::find_by_id(repo.key()).one(&self.db).await?;
        let text = pinacle_github::app::with_retries(3, || app.client.file(installation_id as u64, repo, "pinacle.yaml", base_ref, 1 << 20))
            .await
            .map_err(github_failed)?;
        let from_file = text.and_then(|t| {
            pinacle_config::parse("pinacle.yaml", &t, pinacle_config::ParseOptions { strict: false }).ok().and_then(|(c, _)| c.previews)
        });
        Ok(from_file.or_else(|| row.filter(|r| r.previews).map(|_| pinacle_config::Previews::default())))
    }

    async fn preview_row(&self, repo: &FullName, number: u64) -> Result<Option<gpod::Model>, ApiError> {
        Ok(gpod::Entity::find()
            .filter(gpod::Column::Repository.eq(repo.to_string()))
            .filter(gpod::Column::PullRequest.eq(number as i64))
            .filter(gpod::Column::ClosedAt.is_null())
            .one(&self.db)
            .await?)
    }

    async fn open_preview(&self, e: webhook::PullRequestEvent) -> Result<Handled, ApiError> {
        let app = self.app()?;
        let repo = FullName::parse(&e.repository.full_name).map_err(|m| ApiError::bad_request("malformed_payload", m.to_string()))?;
        let Some(inst) = e.installation.as_ref().map(|i| i.id as i64) else {
            return Ok(Handled::Ignored("no installation in the delivery".into()));
        };
        if let Some(row) = self.preview_row(&repo, e.number).await? {
            return Ok(Handled::Ignored(format!("pull request #{} already has pod {}", e.number, row.pod_id)));
        }
        let pr = &e.pull_request;
        let Some(previews) = self.previews_of(inst, &repo, &pr.base.git_ref).await? else {
            return Ok(Handled::Ignored(format!("{repo} has no previews (pinacle.yaml `previews:` on {}, or the admin switch)", pr.base.git_ref)));
        };
        let fork = pr.from_fork();
        if fork && !previews.forks {
            return Ok(Handled::Ignored(format!("#{} comes from a fork, and previews.forks is off", e.number)));
        }
        let Some(owner) = installation::Entity::find_by_id(inst).one(&self.db).await?.and_then(|i| i.installer_user_id) else {
            return Err(ApiError::conflict("no_owner", "no Pinacle user is linked to the GitHub account that installed the App: sign in to Pinacle with GitHub, then reinstall or redeliver"));
        };
        let who = self.owner_principal(&owner).await?;
        let mut row = link_row(inst, &repo, Some(e.number as i64), false, None);
        row.head_sha = Set(pr.head.sha.clone());
        row.head_updated_at = Set(pr.updated_at);
        // a fork's code is untrusted; secrets only where the base branch's
        // pinacle.yaml says so, and never a fork's
        row.fork = Set(fork);
        row.with_secrets = Set(!fork && previews.secrets);
        row.stale_after_secs = Set(previews.stale_after.map(|s| s as i64));
        row.retention_secs = Set(previews.retention.min(i64::MAX as u64) as i64);
        row.pull_on_push = Set(previews.pull_on_push);
        let repository = RepositoryRequest { url: repo.clone_url(&app.git_url), branch: None, commit: Some(pr.head.sha.clone()), github: None, deploy_key: None };
        let base_name = preview_name(e.number, repo.name());
        let mut pod = None;
        for attempt in 0..3 {
            // a name taken (a closed pull request's pod kept for its
            // retention, another repository's) gets a suffix
            let name = if attempt == 0 { base_name.clone() } else { format!("{}-{}", base_name.chars().take(34).collect::<String>().trim_end_matches('-'), &Uuid::new_v4().simple().to_string()[..4]) };
            match self.pods.create_pod_linked(&who, preview_request(name), Some(repository.clone()), Some(row.clone())).await {
                Ok(p) => {
                    pod = Some(p);
                    break;
                }
                Err(e) if e.code == "name_taken" => continue,
                Err(e) => return Err(e),
            }
        }
        let pod = pod.ok_or_else(|| ApiError::conflict("name_taken", format!("no free pod name for {base_name}")))?;
        self.pods.forget_lists();
        // the first word on the pull request at once; the watcher follows
        let row = gpod::Entity::find_by_id(pod.id.to_string()).one(&self.db).await?.ok_or_else(|| ApiError::internal("preview row gone"))?;
        self.show_preview(&row, &pod, PreviewState::Starting).await;
        Ok(Handled::Done(format!("pod {} for #{} at {}", pod.name, e.number, short(&pr.head.sha))))
    }

    async fn sync_preview(&self, e: webhook::PullRequestEvent) -> Result<Handled, ApiError> {
        let repo = FullName::parse(&e.repository.full_name).map_err(|m| ApiError::bad_request("malformed_payload", m.to_string()))?;
        let Some(row) = self.preview_row(&repo, e.number).await? else {
            // previews may have been turned on since it opened
            return self.open_preview(e).await;
        };
        let pr = &e.pull_request;
        if row.head_sha == pr.head.sha {
            return Ok(Handled::Ignored(format!("#{} is already at {}", e.number, short(&pr.head.sha))));
        }
        if let (Some(seen), Some(this)) = (row.head_updated_at, pr.updated_at) {
            if this < seen {
                return Ok(Handled::Ignored(format!("an older synchronize of #{} ({}) arrived after a newer one; the pod keeps {}", e.number, short(&pr.head.sha), short(&row.head_sha))));
            }
        }
        let id = Uuid::parse_str(&row.pod_id).map_err(ApiError::internal)?;
        let Some(pod) = self.pods.pod_by_id(id).await? else { return Ok(Handled::Ignored("the preview pod is gone".into())) };
        self.pods.set_repository_commit(id, &pr.head.sha).await?;
        let mut m = row.clone().into_active_model();
        m.head_sha = Set(pr.head.sha.clone());
        m.head_updated_at = Set(pr.updated_at);
        // the new head gets its own check run
        m.check_run_id = Set(None);
        m.last_activity_at = Set(Utc::now());
        m.update(&self.db).await?;
        let _ = self.pods.record_progress(id, &format!("pull request #{} moved to {}: fetching it and restarting", e.number, short(&pr.head.sha))).await;
        // stop, then start: the start waits for the stop, and the agent
        // fetches the new head before the processes run again
        if matches!(pod.state, PodState::Running | PodState::Starting) {
            self.request_as_owner(&pod, PodEvent::StopRequested).await?;
        }
        let pod = self.request_as_owner(&pod, PodEvent::StartRequested).await?;
        let row = gpod::Entity::find_by_id(row.pod_id.clone()).one(&self.db).await?.ok_or_else(|| ApiError::internal("preview row gone"))?;
        self.shown.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.show_preview(&row, &pod, PreviewState::Updating).await;
        Ok(Handled::Done(format!("pod {} moves to {}", pod.name, short(&pr.head.sha))))
    }

    async fn close_preview(&self, e: webhook::PullRequestEvent) -> Result<Handled, ApiError> {
        let repo = FullName::parse(&e.repository.full_name).map_err(|m| ApiError::bad_request("malformed_payload", m.to_string()))?;
        let Some(row) = self.preview_row(&repo, e.number).await? else {
            return Ok(Handled::Ignored(format!("#{} has no preview pod", e.number)));
        };
        let id = Uuid::parse_str(&row.pod_id).map_err(ApiError::internal)?;
        // from the base branch, as read when the pull request opened (the
        // head's own file is the pull request's to write)
        let retention = row.retention_secs.max(0);
        let now = Utc::now();
        let mut m = row.clone().into_active_model();
        m.closed_at = Set(Some(now));
        m.delete_after = Set(Some(now + Duration::seconds(retention)));
        let row = m.update(&self.db).await?;
        let merged = e.pull_request.merged;
        self.revoke_untrusted(id).await;
        if let Some(pod) = self.pods.pod_by_id(id).await? {
            let _ = self.pods.record_progress(id, &format!("pull request #{} was {}", e.number, if merged { "merged" } else { "closed" })).await;
            self.show_preview(&row, &pod, PreviewState::Closed { merged }).await;
            let event = if retention == 0 { PodEvent::DeleteRequested } else { PodEvent::StopRequested };
            if pod.state != PodState::Deleted {
                if let Err(err) = self.request_as_owner(&pod, event).await {
                    tracing::warn!(pod = %pod.id, error = %err.message, "removing a closed pull request's pod");
                }
            }
        }
        Ok(Handled::Done(format!("#{} {}: pod {}", e.number, if merged { "merged" } else { "closed" }, if retention == 0 { "deleted" } else { "stopped, deleted after the retention" })))
    }

    /// Edits the sticky comment and the check run to show `state` (once
    /// per state); failures become pod events.
    async fn show_preview(&self, row: &gpod::Model, pod: &PodView, state: PreviewState) {
        let Some(number) = row.pull_request else { return };
        let Ok(app) = self.app() else { return };
        let Ok(repo) = FullName::parse(&row.repository) else { return };
        // the lease holder's watcher shows previews (two servers would both
        // post a first comment); the closing word, which the watcher does not
        // write, comes from the server that saw the pull request close
        if !matches!(state, PreviewState::Closed { .. }) && !self.lease.held().await {
            return;
        }
        let _one = self.showing.lock().await;
        // the row as it is now (the worker and the watcher both write it)
        let Ok(Some(row)) = gpod::Entity::find_by_id(row.pod_id.clone()).one(&self.db).await else { return };
        let key = format!("{state:?}@{}", row.head_sha);
        if self.shown.lock().unwrap_or_else(|p| p.into_inner()).get(&pod.id) == Some(&key) {
            return;
        }
        // a closed pull request's comment is final
        if row.closed_at.is_some() && !matches!(state, PreviewState::Closed { .. }) {
            return;
        }
        let p = self.preview_text(&row, pod, state).await;
        let inst = row.installation_id as u64;
        let body = preview::comment(&p);
        let comment = match row.comment_id {
            Some(c) => pinacle_github::app::with_retries(3, || app.client.update_comment(inst, &repo, c as u64, &body)).await.map(|()| c as u64),
            None => pinacle_github::app::with_retries(3, || app.client.create_comment(inst, &repo, number as u64, &body)).await,
        };
        let run = preview::check_run(&p);
        let check_id = row.check_run_id;
        let check = pinacle_github::app::with_retries(3, || app.client.check_run(inst, &repo, check_id.map(|c| c as u64), &run)).await;
        let ok = comment.is_ok() && check.is_ok();
        let mut m = row.clone().into_active_model();
        match comment {
            Ok(c) => m.comment_id = Set(Some(c as i64)),
            Err(e) => {
                let _ = self.pods.record_progress(pod.id, &format!("the pull request's comment could not be written: {e}")).await;
            }
        }
        match check {
            Ok(c) => m.check_run_id = Set(Some(c as i64)),
            Err(e) => {
                let _ = self.pods.record_progress(pod.id, &format!("the check run could not be written: {e}")).await;
            }
        }
        if let Err(e) = m.update(&self.db).await {
            tracing::warn!(error = %e, "recording the preview's comment");
        }
        if ok {
            // written: not again for this state (a failure is tried again)
            self.shown.lock().unwrap_or_else(|p| p.into_inner()).insert(pod.id, key);
        }
    }

    async fn preview_text(&self, row: &gpod::Model, pod: &PodView, state: PreviewState) -> Preview {
        let public = self.app().map(|a| a.public_url.trim_end_matches('/').to_owned()).unwrap_or_default();
        let login = self.ssh.ssh_login(pod).await.ok();
        let ssh_command = match (self.ssh.site(), login) {
            (Some(site), Some(login)) => Some(format!("ssh {login}@{} -p {}", site.host, site.port)),
            _ => None,
        };
        // the proxy's address of each process's port (never the process's
        // own URL text: a fork's pinacle.yaml writes it)
        let owner = self.pods.pod_owner_name(pod).await.unwrap_or_default();
        let urls = match (self.proxy_site.get(), &pod.config) {
            (Some(site), Some(c)) => c
                .processes
                .iter()
                .filter_map(|p| Some((p.name.clone(), local_port(p.url.as_deref()?)?)))
                .map(|(name, port)| (name, site.origin(&format!("{port}-{}", pinacle_orchestrator::hostname::route_key(&pod.name, &owner)))))
                .collect(),
            _ => Vec::new(),
        };
        Preview {
            pod: pod.name.clone(),
            state,
            head_sha: row.head_sha.clone(),
            urls,
            ide_url: (!public.is_empty()).then(|| format!("{public}/pods/{}", pod.name)),
            ssh_command,
            fork: row.fork,
        }
    }

    /// Follows the preview pods' states onto GitHub (every second), and
    /// registers deploy keys of pods that asked for one once they run.
    async fn watch_previews(&self) {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if !self.lease.held().await {
                continue;
            }
            let Ok(rows) = gpod::Entity::find().all(&self.db).await else { continue };
            for row in rows {
                // a long pass (GitHub slow, retrying) must not outlive the lease
                if !self.lease.held().await {
                    break;
                }
                let Ok(id) = Uuid::parse_str(&row.pod_id) else { continue };
                let pod = match self.pods.pod_by_id(id).await {
                    Ok(Some(pod)) if pod.state != PodState::Deleted => pod,
                    // a deleted pod: its deploy key goes, then its link
                    Ok(_) => {
                        self.forget_link(&row).await;
                        continue;
                    }
                    Err(_) => continue,
                };
                if row.closed_at.is_some() {
                    continue;
                }
                if row.prebuild {
                    if pod.state == PodState::Running && row.ready_sha.as_deref() != Some(row.head_sha.as_str()) {
                        self.finish_prebuild(&row, &pod).await;
                    }
                    continue;
                }
                if row.deploy_key_id.is_none() && pod.state == PodState::Running && row.pull_request.is_none() {
                    let from_config = pod.config.as_ref().and_then(|c| c.github.as_ref()).and_then(|g| g.deploy_key);
                    match (row.deploy_key_access.as_deref(), from_config) {
                        (Some("read" | "write"), _) => self.register_deploy_key(&row, &pod).await,
                        (None, Some(wanted)) => {
                            // `deployKey: write` only for a user who may push
                            let write = wanted == pinacle_config::DeployKeyAccess::Write && row.git_write;
                            if wanted == pinacle_config::DeployKeyAccess::Write && !write {
                                let _ = self.pods.record_progress(id, "deployKey: write needs push access to the repository; the deploy key is read-only").await;
                            }
                            let mut m = row.clone().into_active_model();
                            m.deploy_key_access = Set(Some(access_name(write)));
                            if let Ok(row) = m.update(&self.db).await {
                                self.register_deploy_key(&row, &pod).await;
                            }
                        }
                        _ => {}
                    }
                }
                if row.pull_request.is_none() {
                    continue;
                }
                let state = match pod.state {
                    PodState::Running => PreviewState::Running,
                    PodState::Error => PreviewState::Failed(pod.state_reason.clone().unwrap_or_else(|| "it failed".into())),
                    PodState::Stopped => PreviewState::Stale,
                    PodState::Deleted => continue,
                    _ => PreviewState::Starting,
                };
                let updating = self.shown.lock().unwrap_or_else(|p| p.into_inner()).get(&id).is_some_and(|s| s.starts_with("Updating"));
                if updating && state == PreviewState::Stale {
                    continue;
                }
                if state == PreviewState::Starting && updating {
                    continue;
                }
                self.show_preview(&row, &pod, state).await;
            }
        }
    }

    /// Every 30 s: stale previews stopped, closed ones deleted after their
    /// retention, links of deleted pods dropped (their deploy keys removed
    /// first, also after a crash), old deliveries forgotten.
    async fn sweep(&self) {
        let now = Utc::now();
        let Ok(rows) = gpod::Entity::find().all(&self.db).await else { return };
        for row in rows {
            if !self.lease.held().await {
                return;
            }
            let Ok(id) = Uuid::parse_str(&row.pod_id) else { continue };
            let pod = self.pods.pod_by_id(id).await.ok().flatten();
            match pod {
                None => {
                    self.forget_link(&row).await;
                }
                Some(p) if p.state == PodState::Deleted => {
                    self.forget_link(&row).await;
                }
                Some(p) => {
                    if row.delete_after.is_some_and(|t| t <= now) && p.state != PodState::Deleting {
                        let _ = self.request_as_owner(&p, PodEvent::DeleteRequested).await;
                    } else if row.closed_at.is_none()
                        && row.pull_request.is_some()
                        && p.state == PodState::Running
                        // a preview its user started again counts from then
                        && row.stale_after_secs.is_some_and(|s| row.last_activity_at.max(p.updated_at) + Duration::seconds(s) <= now)
                    {
                        let _ = self.pods.record_progress(id, "the pull request went quiet: stopping its preview").await;
                        let _ = self.request_as_owner(&p, PodEvent::StopRequested).await;
                    }
                }
            }
        }
        let _ = delivery::Entity::delete_many()
            .filter(delivery::Column::ReceivedAt.lt(now - Duration::days(KEEP_DELIVERIES_DAYS)))
            .exec(&self.db)
            .await;
    }

    /// Removes a deleted pod's deploy keys, then its link. The keys are
    /// found by their title, not only by the recorded id: a key added
    /// just before a crash (or a rotation's new key whose record was lost)
    /// goes too.
    async fn forget_link(&self, row: &gpod::Model) {
        let installed = installation::Entity::find_by_id(row.installation_id).one(&self.db).await.ok().flatten().is_some();
        if let (Some(key), false) = (row.deploy_key_id, installed) {
            tracing::warn!(pod = %row.pod_id, key, repo = %row.repository, "the App is uninstalled: a deleted pod's deploy key stays on GitHub; remove it there");
        }
        // rows hold the ids Pinacle wrote; a damaged one matches no key or token
        let pod = Uuid::parse_str(&row.pod_id).unwrap_or_default();
        if self.key_cleanup_retry.lock().unwrap_or_else(|p| p.into_inner()).get(&pod).is_some_and(|t| *t > tokio::time::Instant::now()) {
            return;
        }
        let wanted_key = row.deploy_key_id.is_some() || row.deploy_key_access.is_some();
        if let (true, true, Ok(app), Ok(repo)) = (wanted_key, installed, self.app(), FullName::parse(&row.repository)) {
            let inst = row.installation_id as u64;
            let title = deploy_key_title(pod);
            let removed = async {
                let mut keys = pinacle_github::app::with_retries(3, || app.client.deploy_keys_titled(inst, &repo, &title)).await?;
                keys.extend(row.deploy_key_id.map(|k| k as u64).filter(|k| !keys.contains(k)));
                for key in keys {
                    pinacle_github::app::with_retries(3, || app.client.delete_deploy_key(inst, &repo, key)).await?;
                }
                Ok::<_, pinacle_github::GithubError>(())
            };
            if let Err(e) = removed.await {
                // tried again, but not at every watcher tick: GitHub's rate
                // limit serves the other pods too; a refusal (the App lost
                // the permission, its key was replaced, a secondary rate
                // limit) waits an hour
                let refused = matches!(e, pinacle_github::GithubError::Forbidden(_) | pinacle_github::GithubError::Unauthorized(_));
                let wait = if refused { KEY_CLEANUP_REFUSED_RETRY } else { KEY_CLEANUP_RETRY };
                self.key_cleanup_retry.lock().unwrap_or_else(|p| p.into_inner()).insert(pod, tokio::time::Instant::now() + wait);
                tracing::warn!(pod = %row.pod_id, repo = %row.repository, error = %e,
                    "removing a deleted pod's deploy keys (titled \"{title}\"); trying again in {} s", wait.as_secs());
                return;
            }
            self.key_cleanup_retry.lock().unwrap_or_else(|p| p.into_inner()).remove(&pod);
        }
        self.revoke_untrusted(pod).await;
        let _ = gpod::Entity::delete_by_id(row.pod_id.clone()).exec(&self.db).await;
        self.shown.lock().unwrap_or_else(|p| p.into_inner()).remove(&pod);
    }

    // ---- pushes ------------------------------------------------------

    async fn on_push(&self, e: webhook::PushEvent) -> Result<Handled, ApiError> {
        let Some(branch) = e.branch() else { return Ok(Handled::Ignored(format!("{} is not a branch", e.git_ref))) };
        if e.deleted {
            return Ok(Handled::Ignored(format!("branch {branch} was deleted")));
        }
        let repo = FullName::parse(&e.repository.full_name).map_err(|m| ApiError::bad_request("malformed_payload", m.to_string()))?;
        let prebuild = if e.repository.default_branch.as_deref() == Some(branch) {
            match self.prebuild(e.installation.as_ref().map(|i| i.id as i64), &repo, &e.after).await {
                Ok(Some(note)) => format!("; {note}"),
                Ok(None) => String::new(),
                Err(err) => format!("; prebuild not started: {}", err.message),
            }
        } else {
            String::new()
        };
        let rows = gpod::Entity::find()
            .filter(gpod::Column::Repository.eq(repo.to_string()))
            .filter(gpod::Column::PullRequest.is_null())
            .filter(gpod::Column::Prebuild.eq(false))
            .all(&self.db)
            .await?;
        let mut behind = 0;
        let mut pulled = 0;
        for row in rows {
            let Ok(id) = Uuid::parse_str(&row.pod_id) else { continue };
            let Some(pod) = self.pods.pod_by_id(id).await? else { continue };
            let pod_branch = pod.repository.as_ref().and_then(|r| r.branch.clone()).or_else(|| {
                // a pod cloned without a branch follows the default one
                e.repository.default_branch.clone()
            });
            if pod_branch.as_deref() != Some(branch) || row.head_sha == e.after {
                continue;
            }
            let mut m = row.clone().into_active_model();
            m.behind_sha = Set(Some(e.after.clone()));
            m.behind_since = Set(Some(Utc::now()));
            m.update(&self.db).await?;
            behind += 1;
            let _ = self.pods.record_progress(id, &format!("{branch} moved to {} on GitHub: the pod is behind", short(&e.after))).await;
            let pull = pod.config.as_ref().and_then(|c| c.previews.as_ref()).is_some_and(|p| p.pull_on_push);
            if pull && pod.state == PodState::Running && self.pull_into(&pod, branch, &e.after).await {
                pulled += 1;
            }
        }
        self.pods.forget_lists();
        Ok(Handled::Done(format!("{branch} at {}: {behind} pods behind, {pulled} pulled{prebuild}", short(&e.after))))
    }

    /// `previews.prebuild` (read at the pushed commit of the default
    /// branch): the repository's prebuild pod, made or moved to `sha` and
    /// started; the watcher stops it once its image is pulled and its
    /// install steps are done. `None` when the repository asks for none.
    async fn prebuild(&self, installation: Option<i64>, repo: &FullName, sha: &str) -> Result<Option<String>, ApiError> {
        let Some(inst) = installation else { return Ok(None) };
        let app = self.app()?;
        let Some(previews) = self.previews_of(inst, repo, sha).await? else { return Ok(None) };
        if !previews.prebuild {
            return Ok(None);
        }
        let existing = gpod::Entity::find()
            .filter(gpod::Column::Repository.eq(repo.to_string()))
            .filter(gpod::Column::Prebuild.eq(true))
            .one(&self.db)
            .await?;
        if let Some(row) = existing {
            if row.head_sha == sha {
                return Ok(Some(format!("the prebuild is at {}", short(sha))));
            }
            let id = Uuid::parse_str(&row.pod_id).map_err(ApiError::internal)?;
            let Some(pod) = self.pods.pod_by_id(id).await? else { return Ok(None) };
            self.pods.set_repository_commit(id, sha).await?;
            let mut m = row.into_active_model();
            m.head_sha = Set(sha.to_owned());
            m.update(&self.db).await?;
            let _ = self.pods.record_progress(id, &format!("prebuilding {}", short(sha))).await;
            if matches!(pod.state, PodState::Running | PodState::Starting) {
                self.request_as_owner(&pod, PodEvent::StopRequested).await?;
            }
            self.request_as_owner(&pod, PodEvent::StartRequested).await?;
            return Ok(Some(format!("prebuild {} moves to {}", pod.name, short(sha))));
        }
        let Some(owner) = installation::Entity::find_by_id(inst).one(&self.db).await?.and_then(|i| i.installer_user_id) else {
            return Err(ApiError::conflict("no_owner", "no Pinacle user is linked to the GitHub account that installed the App"));
        };
        let who = self.owner_principal(&owner).await?;
        let mut row = link_row(inst, repo, None, false, None);
        row.prebuild = Set(true);
        row.head_sha = Set(sha.to_owned());
        row.with_secrets = Set(previews.secrets);
        let repository = RepositoryRequest { url: repo.clone_url(&app.git_url), branch: None, commit: Some(sha.to_owned()), github: None, deploy_key: None };
        let name = fitted_name(&format!("prebuild-{}", repo.name()));
        let pod = self.pods.create_pod_linked(&who, preview_request(name), Some(repository), Some(row)).await?;
        self.pods.forget_lists();
        Ok(Some(format!("prebuild {} started at {}", pod.name, short(sha))))
    }

    /// Stops a running prebuild pod once its install steps are done (its
    /// image is pulled, its dependencies installed): the commit is ready.
    async fn finish_prebuild(&self, row: &gpod::Model, pod: &PodView) {
        let Ok(who) = self.owner_principal(&pod.owner_id).await else { return };
        let Ok((_, client)) = self.hosts.pod_supervisor(&who, &pod.id.to_string(), crate::policy::Action::Read).await else { return };
        let Ok(pinacle_supervisor::protocol::Response::Status { install, .. }) = client.call(pinacle_supervisor::protocol::Op::Status).await else { return };
        if install.iter().any(|s| s.state == "pending" || s.state == "running") {
            return;
        }
        let failed: Vec<&str> = install.iter().filter(|s| s.state == "failed").map(|s| s.name.as_str()).collect();
        let mut m = row.clone().into_active_model();
        m.ready_sha = Set(Some(row.head_sha.clone()));
        if m.update(&self.db).await.is_err() {
            return;
        }
        let note = if failed.is_empty() {
            format!("prebuilt {}: its image and install steps are warm; stopping", short(&row.head_sha))
        } else {
            format!("prebuilt {} with failed install steps ({}); stopping", short(&row.head_sha), failed.join(", "))
        };
        let _ = self.pods.record_progress(pod.id, &note).await;
        let _ = self.request_as_owner(pod, PodEvent::StopRequested).await;
    }

    /// Fetches `branch` into a running pod and fast-forwards a clean work
    /// tree to `sha`; true when the pod is then at `sha`.
    async fn pull_into(&self, pod: &PodView, branch: &str, sha: &str) -> bool {
        let Ok(who) = self.owner_principal(&pod.owner_id).await else { return false };
        let Ok((_, client)) = self.hosts.pod_supervisor(&who, &pod.id.to_string(), crate::policy::Action::Operate).await else { return false };
        let script = r#"cd /workspace && git fetch -q origin "$1" && if [ -z "$(git status --porcelain --untracked-files=no)" ]; then git merge -q --ff-only FETCH_HEAD; else echo "pinacle: local changes: fetched, not merged" >&2; exit 3; fi"#;
        let spec = pinacle_supervisor::protocol::ExecSpec {
            argv: vec!["sh".into(), "-c".into(), script.into(), "sh".into(), branch.into()],
            env: vec!["GIT_TERMINAL_PROMPT=0".into(), "LC_ALL=C".into()],
            cwd: Some("/workspace".into()),
            tty: None,
            session: None,
        };
        let Ok((_, mut events)) = client.exec(spec).await else { return false };
        let mut ok = false;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if let pinacle_supervisor::client::ExecEvent::Exit(status) = ev {
                ok = status.code == 0;
                break;
            }
        }
        let note = if ok { format!("fetched {branch} and moved to {}", short(sha)) } else { format!("fetched {branch}; not moved to {} (local changes or a diverged branch)", short(sha)) };
        let _ = self.pods.record_progress(pod.id, &note).await;
        if ok {
            if let Ok(Some(row)) = gpod::Entity::find_by_id(pod.id.to_string()).one(&self.db).await {
                let mut m = row.into_active_model();
                m.head_sha = Set(sha.to_owned());
                m.behind_sha = Set(None);
                m.behind_since = Set(None);
                let _ = m.update(&self.db).await;
            }
        }
        ok
    }

    // ---- users' repositories ------------------------------------------

    async fn github_login(&self, user_id: &str) -> Result<Option<String>, ApiError> {
        Ok(user_identity::Entity::find()
            .filter(user_identity::Column::Provider.eq("github"))
            .filter(user_identity::Column::UserId.eq(user_id.to_owned()))
            .one(&self.db)
            .await?
            .map(|l| l.login))
    }

    /// What `who` may do in `repo` (through its GitHub login; cached for a
    /// minute). Users without a linked GitHub account see nothing.
    async fn role(&self, who: &Principal, row: &grepo::Model) -> Result<RepoRole, ApiError> {
        self.role_of_user(&who.user_id, row).await
    }

    /// [`Self::role`] of a user by id.
    async fn role_of_user(&self, user_id: &str, row: &grepo::Model) -> Result<RepoRole, ApiError> {
        let app = self.app()?;
        let Some(login) = self.github_login(user_id).await? else { return Ok(RepoRole::None) };
        let key = (user_id.to_owned(), row.name_key.clone());
        if let Some((role, at)) = self.roles.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            if Utc::now() - *at < Duration::seconds(60) {
                return Ok(*role);
            }
        }
        let repo = FullName::parse(&row.full_name).map_err(ApiError::internal)?;
        let role = pinacle_github::app::with_retries(2, || app.client.role_of(row.installation_id as u64, &repo, &login)).await.map_err(github_failed)?;
        let mut roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        if roles.len() > 10_000 {
            roles.clear();
        }
        roles.insert(key, (role, Utc::now()));
        Ok(role)
    }

    /// The installed repositories `who` can read.
    pub async fn repositories(&self, who: &Principal) -> Result<Vec<RepositoryView>, ApiError> {
        self.app()?;
        if self.github_login(&who.user_id).await?.is_none() {
            return Ok(Vec::new());
        }
        let rows = grepo::Entity::find().order_by_asc(grepo::Column::NameKey).limit(500).all(&self.db).await?;
        let suspended: Vec<i64> = installation::Entity::find().filter(installation::Column::Suspended.eq(true)).all(&self.db).await?.into_iter().map(|i| i.id).collect();
        let rows: Vec<grepo::Model> = rows.into_iter().filter(|r| !suspended.contains(&r.installation_id)).collect();
        if who.is_admin() {
            return Ok(rows.iter().map(view).collect());
        }
        // eight checks at a time (each cached a minute); a repository whose
        // check fails is left out rather than failing the list
        use futures::StreamExt;
        let checked: Vec<(grepo::Model, Result<RepoRole, ApiError>)> = futures::stream::iter(rows)
            .map(|row| async move {
                let role = self.role(who, &row).await;
                (row, role)
            })
            .buffered(8)
            .collect()
            .await;
        Ok(checked
            .into_iter()
            .filter_map(|(row, role)| match role {
                Ok(r) if r >= RepoRole::Read => Some(view(&row)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(repo = %row.full_name, error = %e.message, "checking access to a repository");
                    None
                }
            })
            .collect())
    }

    /// The installed repository `name` if `who` can read it; 404 as for
    /// any foreign resource otherwise.
    async fn readable(&self, who: &Principal, name: &str) -> Result<(grepo::Model, RepoRole), ApiError> {
        self.app()?;
        let not_found = || ApiError::not_found(format!("repository {} not found", name.chars().take(120).collect::<String>()));
        let repo = FullName::parse(name).map_err(|_| not_found())?;
        let row = grepo::Entity::find_by_id(repo.key()).one(&self.db).await?.ok_or_else(not_found)?;
        let role = self.role(who, &row).await?;
        if role < RepoRole::Read {
            return Err(not_found());
        }
        Ok((row, role))
    }

    /// The branches of an installed repository `who` can read.
    pub async fn branches(&self, who: &Principal, name: &str) -> Result<Vec<serde_json::Value>, ApiError> {
        let (row, _) = self.readable(who, name).await?;
        let app = self.app()?;
        let repo = FullName::parse(&row.full_name).map_err(ApiError::internal)?;
        let branches = pinacle_github::app::with_retries(2, || app.client.branches(row.installation_id as u64, &repo)).await.map_err(github_failed)?;
        Ok(branches.into_iter().map(|(name, sha)| serde_json::json!({"name": name, "sha": sha})).collect())
    }

    /// Resolves a pod request's `repository`: `github: owner/name` must be
    /// an installed repository `who` can read (404 otherwise); a URL on
    /// GitHub's host of an installed repository they can read is taken the
    /// same way. Anything else is left as it is (public clones, or the
    /// `GIT_TOKEN` secret).
    pub async fn resolve(&self, who: &Principal, r: &mut RepositoryRequest) -> Result<Option<ResolvedRepo>, ApiError> {
        let deploy_key = match r.deploy_key.as_deref() {
            None => None,
            Some("read") => Some(false),
            Some("write") => Some(true),
            Some(other) => return Err(ApiError::bad_request("invalid_repository", format!("deploy_key {other:?}: use read or write"))),
        };
        let Some(app) = self.config.get() else {
            if r.github.is_some() || deploy_key.is_some() {
                return Err(not_configured());
            }
            return Ok(None);
        };
        let (row, role) = match r.github.clone() {
            Some(name) => {
                if !r.url.is_empty() {
                    return Err(ApiError::bad_request("invalid_repository", "give either url or github, not both"));
                }
                self.readable(who, &name).await?
            }
            None => {
                let Some(repo) = FullName::from_clone_url(&r.url, &app.git_url) else {
                    if deploy_key.is_some() {
                        return Err(ApiError::bad_request("invalid_repository", "deploy keys are for repositories of the GitHub App: give github: owner/name"));
                    }
                    return Ok(None);
                };
                match self.readable(who, &repo.to_string()).await {
                    Ok(found) => found,
                    Err(e) if e.status.as_u16() == 404 && deploy_key.is_none() => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        };
        let repo = FullName::parse(&row.full_name).map_err(ApiError::internal)?;
        if deploy_key == Some(true) && role < RepoRole::Write {
            return Err(ApiError::forbidden("forbidden", format!("a write deploy key needs write access to {repo}, and your GitHub account has read access")));
        }
        r.url = repo.clone_url(&app.git_url);
        r.github = None;
        r.deploy_key = None;
        Ok(Some(ResolvedRepo { installation: row.installation_id, repo, git_write: role >= RepoRole::Write, deploy_key }))
    }

    /// Creates a pod (`POST /pods`, GraphQL `createPod`): a repository of
    /// the App the user can read (see [`Self::resolve`]) is linked to the
    /// pod in the same transaction; any other repository is cloned as
    /// before.
    pub async fn create_pod(&self, who: &Principal, req: CreatePodRequest, repository: Option<RepositoryRequest>) -> Result<PodView, ApiError> {
        let Some(mut r) = repository else { return self.pods.create_pod_from(who, req, None).await };
        let Some(link) = self.resolve(who, &mut r).await? else { return self.pods.create_pod_from(who, req, Some(r)).await };
        let row = link_row(link.installation, &link.repo, None, link.git_write, link.deploy_key.map(access_name));
        let pod = self.pods.create_pod_linked(who, req, Some(r), Some(row)).await?;
        self.pods.forget_lists();
        Ok(pod)
    }

    /// Registers the running pod's own key as a deploy key.
    async fn register_deploy_key(&self, row: &gpod::Model, pod: &PodView) {
        let Ok(app) = self.app() else { return };
        let Ok(repo) = FullName::parse(&row.repository) else { return };
        let write = row.deploy_key_access.as_deref() == Some("write");
        let Ok(who) = self.owner_principal(&pod.owner_id).await else { return };
        let key = match self.ssh.pod_ssh_key(&who, &pod.id.to_string()).await {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(pod = %pod.id, error = %e.message, "the pod's key is not readable yet");
                return;
            }
        };
        let title = deploy_key_title(pod.id);
        match pinacle_github::app::with_retries(3, || app.client.add_deploy_key(row.installation_id as u64, &repo, &title, &key.public_key, !write)).await {
            Ok(id) => {
                let mut m = row.clone().into_active_model();
                m.deploy_key_id = Set(Some(id as i64));
                let _ = m.update(&self.db).await;
                self.pods.forget_lists();
                let _ = self.pods.record_progress(pod.id, &format!("the pod's key {} is a {} deploy key of {repo}", key.fingerprint, if write { "read-write" } else { "read-only" })).await;
                let _ = self.audit.record(&who, "github.deploy_key.add", &format!("pod:{} repo:{repo} key:{id}", pod.id)).await;
            }
            Err(e) => {
                // not tried again: a refusal will not change by itself
                let mut m = row.clone().into_active_model();
                m.deploy_key_access = Set(Some("failed".into()));
                let _ = m.update(&self.db).await;
                let _ = self.pods.record_progress(pod.id, &format!("the deploy key could not be added to {repo}: {e}")).await;
            }
        }
    }

    /// After `pinacle pod rotate-keys`: the new key becomes the deploy key
    /// (recorded first), then the old one is removed; a failure to remove
    /// it is a pod event.
    pub async fn rotated(&self, who: &Principal, pod_id: Uuid, public_key: &str) -> Result<(), ApiError> {
        let Some(row) = gpod::Entity::find_by_id(pod_id.to_string()).one(&self.db).await? else { return Ok(()) };
        let Some(old) = row.deploy_key_id else { return Ok(()) };
        let app = self.app()?;
        let repo = FullName::parse(&row.repository).map_err(ApiError::internal)?;
        let write = row.deploy_key_access.as_deref() == Some("write");
        let inst = row.installation_id as u64;
        let title = deploy_key_title(pod_id);
        let new = pinacle_github::app::with_retries(3, || app.client.add_deploy_key(inst, &repo, &title, public_key, !write)).await.map_err(github_failed)?;
        let mut m = row.into_active_model();
        m.deploy_key_id = Set(Some(new as i64));
        m.update(&self.db).await?;
        if let Err(e) = pinacle_github::app::with_retries(3, || app.client.delete_deploy_key(inst, &repo, old as u64)).await {
            let _ = self.pods.record_progress(pod_id, &format!("the old deploy key {old} of {repo} could not be removed: {e}; remove it on GitHub")).await;
        }
        self.audit.record(who, "github.deploy_key.rotate", &format!("pod:{pod_id} repo:{repo} key:{old}→{new}")).await?;
        Ok(())
    }

    /// A short-lived token for the pod's git (its repository only;
    /// `contents: write` only for a user who may push, never for a
    /// preview), or `None` when the pod clones without the App.
    pub async fn git_token(&self, pod_id: Uuid) -> Result<Option<pinacle_github::app::Token>, ApiError> {
        let Some(app) = self.config.get() else { return Ok(None) };
        let Some(row) = gpod::Entity::find_by_id(pod_id.to_string()).one(&self.db).await? else { return Ok(None) };
        let Some(pod) = self.pods.pod_by_id(pod_id).await?.filter(|p| p.state != PodState::Deleted) else { return Ok(None) };
        if installation::Entity::find_by_id(row.installation_id).one(&self.db).await?.is_none_or(|i| i.suspended) {
            return Ok(None);
        }
        let repo = FullName::parse(&row.repository).map_err(ApiError::internal)?;
        let Some(repo_row) = grepo::Entity::find_by_id(repo.key()).one(&self.db).await? else { return Ok(None) };
        let write = if row.pull_request.is_some() {
            false
        } else {
            // the owner's access as it is now: one who lost it gets no token
            let role = self.role_of_user(&pod.owner_id, &repo_row).await?;
            if role < RepoRole::Read {
                return Ok(None);
            }
            row.git_write && role >= RepoRole::Write
        };
        let scope = TokenScope::git(row.installation_id as u64, &repo, write);
        // an untrusted preview's token is its own: never the one trusted
        // pods of the repository share from the cache
        if row.fork {
            // a closed fork's pull request needs no git any more
            if row.closed_at.is_some() {
                return Ok(None);
            }
            // counted from the asking: a stop while GitHub mints it revokes it
            let asked = Utc::now().timestamp_millis();
            let t = pinacle_github::app::with_retries(3, || app.client.fresh_token(&scope)).await.map_err(github_failed)?;
            self.untrusted_tokens.lock().unwrap_or_else(|p| p.into_inner()).record(pod_id, t.clone(), asked);
            return Ok(Some(t));
        }
        pinacle_github::app::with_retries(3, || app.client.token(&scope)).await.map(Some).map_err(github_failed)
    }

    /// Revokes at GitHub the tokens an untrusted preview was given up to
    /// now; a failure is logged (they expire within the hour anyway).
    async fn revoke_untrusted(&self, pod: Uuid) {
        self.revoke_untrusted_by(pod, Utc::now()).await;
    }

    /// Revokes the tokens this server gave the untrusted preview `pod` at
    /// or before `by`.
    async fn revoke_untrusted_by(&self, pod: Uuid, by: DateTime<Utc>) {
        let now = Utc::now().timestamp_millis();
        let tokens = self.untrusted_tokens.lock().unwrap_or_else(|p| p.into_inner()).take(pod, now, by.timestamp_millis());
        let Ok(app) = self.app() else { return };
        let mut revoked = 0;
        for t in tokens {
            match app.client.revoke(&t).await {
                Ok(alive) => revoked += usize::from(alive),
                Err(e) => {
                    // kept for the next stop, close or deletion
                    tracing::warn!(pod = %pod, error = %e, "revoking a fork preview's token failed; tried again at its next stop or deletion");
                    self.untrusted_tokens.lock().unwrap_or_else(|p| p.into_inner()).record(pod, t, by.timestamp_millis());
                }
            }
        }
        if revoked > 0 {
            let _ = self.pods.record_progress(pod, &format!("revoked the {revoked} GitHub token(s) this fork's preview was given")).await;
        }
    }

    /// Gives the preview lease up at a clean stop, so the next server to
    /// start (or this one again) follows previews at once.
    pub async fn release_lease(&self) {
        self.lease.release().await;
    }

    /// Follows pod events, this server's and the others': a fork preview
    /// that stops, fails or goes loses the tokens this server gave it (on
    /// whichever server the stop was asked).
    async fn revoke_when_stopped(&self) {
        let mut events = self.events.subscribe();
        loop {
            let e = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // events were missed: each remembered pod's state as it is now
                    let pods = self.untrusted_tokens.lock().unwrap_or_else(|p| p.into_inner()).pods();
                    for pod in pods {
                        let live = match self.pods.pod_by_id(pod).await {
                            Ok(Some(p)) => matches!(p.state, PodState::Pending | PodState::Provisioning | PodState::Starting | PodState::Running),
                            Ok(None) => false,
                            // unknown: left to the next event
                            Err(_) => true,
                        };
                        if !live {
                            self.revoke_untrusted(pod).await;
                        }
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let stopped = matches!(e.to, PodState::Stopping | PodState::Stopped | PodState::Deleting | PodState::Deleted | PodState::Error);
            if stopped && self.untrusted_tokens.lock().unwrap_or_else(|p| p.into_inner()).holds(e.pod_id) {
                self.revoke_untrusted_by(e.pod_id, e.at).await;
            }
        }
    }

    /// Adds each pod's GitHub link to its view.
    pub async fn links(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, PodGithub>, ApiError> {
        if ids.is_empty() || self.config.get().is_none() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let rows = gpod::Entity::find().filter(gpod::Column::PodId.is_in(keys)).all(&self.db).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id = Uuid::parse_str(&r.pod_id).ok()?;
                Some((
                    id,
                    PodGithub {
                        repository: r.repository,
                        pull_request: r.pull_request,
                        head_sha: r.head_sha,
                        behind: r.behind_sha.map(|sha| serde_json::json!({"sha": sha, "since": r.behind_since})),
                        deploy_key: r.deploy_key_id.is_some(),
                        prebuild: r.prebuild,
                    },
                ))
            })
            .collect())
    }

    // ---- admin -------------------------------------------------------

    pub async fn installations(&self) -> Result<Vec<serde_json::Value>, ApiError> {
        self.app()?;
        let rows = installation::Entity::find().order_by_asc(installation::Column::Account).all(&self.db).await?;
        let mut out = Vec::new();
        for i in rows {
            let n = grepo::Entity::find().filter(grepo::Column::InstallationId.eq(i.id)).count(&self.db).await?;
            out.push(serde_json::json!({"id": i.id, "account": i.account, "account_type": i.account_type, "suspended": i.suspended, "repositories": n}));
        }
        Ok(out)
    }

    pub async fn deliveries(&self, limit: u64) -> Result<Vec<serde_json::Value>, ApiError> {
        self.app()?;
        let rows = delivery::Entity::find().order_by_desc(delivery::Column::ReceivedAt).limit(limit.clamp(1, 500)).all(&self.db).await?;
        Ok(rows
            .into_iter()
            .map(|d| {
                serde_json::json!({"id": d.id, "event": d.event, "action": d.action, "repository": d.repository, "outcome": d.outcome,
                    "detail": d.detail, "attempts": d.attempts, "received_at": d.received_at, "processed_at": d.processed_at})
            })
            .collect())
    }

    pub async fn set_previews(&self, who: &Principal, name: &str, enabled: bool) -> Result<RepositoryView, ApiError> {
        self.app()?;
        let not_found = || ApiError::not_found(format!("repository {} not found", name.chars().take(120).collect::<String>()));
        let repo = FullName::parse(name).map_err(|_| not_found())?;
        let row = grepo::Entity::find_by_id(repo.key()).one(&self.db).await?.ok_or_else(not_found)?;
        let mut m = row.into_active_model();
        m.previews = Set(enabled);
        let row = m.update(&self.db).await?;
        self.audit.record(who, "github.previews", &format!("repo:{repo} enabled:{enabled}")).await?;
        Ok(view(&row))
    }
}

#[async_trait::async_trait]
impl crate::control::GitTokens for GithubApps {
    async fn git_token(&self, pod: Uuid) -> Result<Option<(String, i64)>, ApiError> {
        Ok(GithubApps::git_token(self, pod).await?.map(|t| (t.token, t.expires_at)))
    }
}

/// What processing a delivery came to.
enum Handled {
    Done(String),
    Ignored(String),
}

/// `read` or `write`.
fn access_name(write: bool) -> String {
    if write { "write" } else { "read" }.to_owned()
}

/// A new pod's link (its `pod_id` is set when the pod is inserted).
fn link_row(installation: i64, repo: &FullName, pull_request: Option<i64>, git_write: bool, deploy_key: Option<String>) -> gpod::ActiveModel {
    gpod::ActiveModel {
        pod_id: Set(String::new()),
        installation_id: Set(installation),
        repository: Set(repo.to_string()),
        pull_request: Set(pull_request),
        head_sha: Set(String::new()),
        head_updated_at: Set(None),
        fork: Set(false),
        with_secrets: Set(true),
        git_write: Set(git_write),
        deploy_key_id: Set(None),
        deploy_key_access: Set(deploy_key),
        comment_id: Set(None),
        check_run_id: Set(None),
        behind_sha: Set(None),
        behind_since: Set(None),
        closed_at: Set(None),
        delete_after: Set(None),
        stale_after_secs: Set(None),
        retention_secs: Set(0),
        pull_on_push: Set(false),
        prebuild: Set(false),
        ready_sha: Set(None),
        last_activity_at: Set(Utc::now()),
    }
}

fn view(row: &grepo::Model) -> RepositoryView {
    RepositoryView {
        full_name: row.full_name.clone(),
        private: row.private,
        default_branch: row.default_branch.clone(),
        installation_id: row.installation_id,
        previews: row.previews,
    }
}

/// The port of a process's `http://localhost:PORT[/…]` URL.
fn local_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// A deploy key's title: names the pod, so the reconcile pass knows it.
pub fn deploy_key_title(pod: Uuid) -> String {
    format!("pinacle pod {pod}")
}

/// A pull request's pod: the request (the repository's own pinacle.yaml
/// configures it).
fn preview_request(name: String) -> CreatePodRequest {
    CreatePodRequest {
        name,
        template: None,
        tier: None,
        runtime: None,
        team: None,
        install: Vec::new(),
        processes: Vec::new(),
        config: None,
        config_file: None,
        strict: false,
        egress: None,
        image: None,
        host_labels: Default::default(),
    }
}

/// `pr-{n}-{repo}`, fitted to pod-name rules (lower case, digits, dashes,
/// at most 40); a name already taken (another owner's repository of the
/// same name, a closed pull request's pod kept for its retention) gets a
/// suffix when the pod is made.
pub fn preview_name(number: u64, repo: &str) -> String {
    fitted_name(&format!("pr-{number}-{repo}"))
}

/// `s` fitted to pod-name rules: lower case, `-` for anything but letters
/// and digits, no doubled or trailing dashes, at most 40.
fn fitted_name(s: &str) -> String {
    let mut name: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    name.chars().take(40).collect::<String>().trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_names_are_pod_names() {
        assert_eq!(preview_name(7, "My.App_x"), "pr-7-my-app-x");
        let long = preview_name(123_456, &"r".repeat(100));
        assert!(long.len() <= 40 && long.starts_with("pr-123456-"));
        for n in [preview_name(1, "--a--"), long] {
            assert!(pinacle_orchestrator::PodName::parse(&n).is_ok(), "{n}");
        }
    }

    fn token(name: &str, expires_at: i64) -> pinacle_github::app::Token {
        pinacle_github::app::Token { token: name.into(), expires_at }
    }

    #[test]
    fn a_fork_previews_live_tokens_are_kept_for_revocation_and_bounded() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut t = UntrustedTokens::default();
        t.record(a, token("old", 100), 50_000);
        t.record(a, token("new", 4000), 200_000);
        t.record(a, token("new", 4000), 201_000);
        t.record(b, token("other", 4000), 200_000);
        assert!(t.holds(a) && t.holds(b));
        // expired ones are not revoked, a token given twice is revoked once
        assert_eq!(t.take(a, 300_000, 300_000).iter().map(|t| t.token.as_str()).collect::<Vec<_>>(), ["new"]);
        assert!(t.take(a, 300_000, 300_000).is_empty() && !t.holds(a), "taken once");
        assert_eq!(t.take(b, 300_000, 300_000).len(), 1, "another pod's tokens are its own");
        // a stop revokes what was given before it, not the token the pod's
        // next start was given before the stop's event came through
        t.record(a, token("before", 4000), 300_000);
        t.record(a, token("after", 4000), 300_500);
        assert_eq!(t.take(a, 301_000, 300_200).iter().map(|t| t.token.as_str()).collect::<Vec<_>>(), ["before"]);
        assert_eq!(t.take(a, 301_000, 301_000).iter().map(|t| t.token.as_str()).collect::<Vec<_>>(), ["after"]);
        for i in 0..100 {
            t.record(a, token(&format!("t{i}"), 10_000), 300_000);
        }
        let kept = t.take(a, 300_000, 300_000);
        assert_eq!(kept.len(), UntrustedTokens::PER_POD);
        assert_eq!(kept.last().map(|t| t.token.as_str()), Some("t99"), "the newest are kept");
        for _ in 0..UntrustedTokens::PODS + 10 {
            t.record(Uuid::new_v4(), token("x", 10_000), 300_000);
        }
        assert_eq!(t.0.len(), UntrustedTokens::PODS, "bounded in pods");
    }
}
