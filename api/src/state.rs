//! Shared server state and start-up (database, migrations, admin bootstrap).

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use chrono::Utc;
use pinacle_queue::JobQueue;
use pinacle_migrations::{Migrator, MigratorTrait};
use pinacle_orchestrator::RuntimeKind;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectOptions, Database, DatabaseConnection, EntityTrait, QueryFilter, Set};

use crate::principal::{generate_token, hash_token};
use crate::cache::ReadCache;
use crate::crypto::MasterKey;
use crate::sessions::SessionConfig;
use crate::entities::{api_token, user};
use crate::metrics::Metrics;

/// Name of the admin token that comes from `PINACLE_ADMIN_TOKEN`.
const ENV_TOKEN_NAME: &str = "PINACLE_ADMIN_TOKEN";

pub use crate::principal::ADMIN_USER;

/// Everything a request handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    pub db: DatabaseConnection,
    pub queue: JobQueue,
    /// Pod events: subscribers here, the other servers, stale caches.
    pub events: crate::events::PodEvents,
    pub metrics: Arc<Metrics>,
    /// The hosts this control plane reaches (the agent in this process,
    /// when there is one): every operation on a pod goes through them.
    pub hosts: Arc<crate::hosts::HostDirectory>,
    /// How hosts are reached (directly, or relayed by another server).
    pub links: crate::peers::HostLinks,
    /// Pods: their life, placement and the hosts' registry.
    pub pods: crate::service::Pods,
    /// Users', teams' and pods' secrets.
    pub secrets: crate::secrets::ops::Secrets,
    /// Pod events to the other servers (Redis), or to this one only.
    pub bus: Arc<crate::bus::Bus>,
    /// Load balancers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<crate::ratelimit::Cidr>,
    /// Serialises write transactions: SQLite allows one writer, and a
    /// transaction that reads before it writes cannot wait for the lock.
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Sign-up mode, youki access, quotas.
    pub settings: crate::settings::InstanceSettings,
    /// Request limits on `/api`; `None`: unlimited.
    pub rate_limiter: Option<crate::ratelimit::RateLimiter>,
    /// Seals secrets and signing keys.
    pub master_key: Arc<MasterKey>,
    /// Sign-in sessions, access tokens and their signing keys.
    pub sessions: crate::sessions::Sessions,
    /// Who a bearer credential is.
    pub auth: crate::auth::Authenticator,
    /// Teams, members, invitations.
    pub teams: crate::teams::Teams,
    /// Local accounts: sign-up and password sign-in.
    pub accounts: crate::accounts::Accounts,
    /// Sign-in from devices without a browser.
    pub devices: crate::device::DeviceSignIn,
    /// Sign-in with GitHub.
    pub github_sign_in: crate::github::GithubAuth,
    /// The audit log.
    pub audit: crate::audit::AuditLog,
    /// GitHub sign-in, when configured (set once the callback URL is known).
    pub github: Arc<OnceLock<crate::github::GithubConfig>>,
    /// Bearer token hash → (principal, credential expiry); cleared by every
    /// change to tokens, sessions or team membership.
    pub principals: Arc<crate::tokens::PrincipalCache>,
    /// API tokens.
    pub tokens: crate::tokens::ApiTokens,
    /// Serialised `GET /api/v1/pods` answers by viewer; cleared by every pod
    /// write.
    pub pod_lists: Arc<crate::events::PodLists>,
    /// Sign-in links and session cookies for pods' ports (see [`crate::pod_access`]).
    pub pod_access: crate::pod_access::PodAccess,
    /// Where browsers reach the proxy, when one serves this control plane.
    pub proxy_site: Arc<OnceLock<crate::pod_access::ProxySite>>,
    /// SSH certificates, the CAs, pods' own keys.
    pub ssh: crate::ssh::SshAccess,
    /// Users' SSH keys, IDE layouts, pods' usage.
    pub workspace: crate::workspace::Workspaces,
    /// What host agents call.
    pub control: crate::control::Control,
    /// Hosts: registry, join tokens, links.
    pub host_registry: crate::hosts::ops::Hosts,
    /// The agents' memory service (Pinak), served under `/api/v1/memory`.
    pub memory: pinacle_memory_service::MemoryService,
    /// Memory tokens: minted for users and pods, verified for the memory API.
    pub memory_access: crate::memory::MemoryAccess,
    /// The AI router (AION), served at `/v1/…` and `/router/…`.
    pub aion: std::sync::Arc<pinacle_aion::engine::Aion>,
    /// Who may call the router, and whose keys it uses.
    pub aion_access: crate::aion_access::AionAccess,
    /// The GitHub App: installations, webhooks, pull-request previews.
    pub github_apps: crate::github::app::GithubApps,
}

/// Where the AI router reads its registry and keeps its records.
#[derive(Debug, Clone, Default)]
pub struct RouterConfig {
    /// The directory of `models.yml`, `intents.yml`, `policies.yml` and
    /// `modules.yml` (none: nothing is routed until one is given).
    pub dir: Option<PathBuf>,
    /// Its budgets and task records: `sqlite://FILE` or `postgres://…`
    /// (none: the platform's PostgreSQL database when it has one, which
    /// several servers share, else `aion.db` beside the platform's file).
    pub database_url: Option<String>,
    /// `aion.db` in the data directory.
    pub default_path: PathBuf,
    /// Installed module packages, where they come from, and the sandbox
    /// subprocess modules run in.
    pub modules: pinacle_aion::registries::ModuleEnv,
}

impl RouterConfig {
    pub fn in_dir(dir: &std::path::Path) -> Self {
        Self { dir: None, database_url: None, default_path: dir.join("aion.db"), modules: Default::default() }
    }
}

/// Where the memory service keeps its data and what embeds it.
pub struct MemoryConfig {
    /// Its SQLite file (unless `database_url` is set).
    pub path: PathBuf,
    /// A PostgreSQL database with pgvector instead (what several API
    /// servers share).
    pub database_url: Option<String>,
    /// `--memory-embedder`: `hash`, `hash:DIM` or `openai:URL#MODEL:DIM`.
    pub embedder: String,
    /// The provider's API key (`PINACLE_MEMORY_EMBEDDER_KEY`).
    pub embedder_key: Option<String>,
}

impl MemoryConfig {
    /// `memory.db` in `dir`, the hashing embedder.
    pub fn in_dir(dir: &std::path::Path) -> Self {
        Self { path: dir.join("memory.db"), database_url: None, embedder: "hash".into(), embedder_key: None }
    }
}

/// What [`AppState::open`] needs.
pub struct ServerConfig {
    /// sea-orm URL (`sqlite://...`).
    pub database_url: String,
    /// The SQLite file of the job queue.
    pub queue_path: PathBuf,
    /// A PostgreSQL database for the job queue instead of `queue_path`
    /// (what several API servers share).
    pub queue_url: Option<String>,
    pub default_runtime: Option<RuntimeKind>,
    pub limits: Option<crate::ratelimit::Limits>,
    pub master_key: MasterKey,
    pub sessions: SessionConfig,
    pub anchor_file: Option<PathBuf>,
    /// How long cached reads may be served (0: no caching). Bounds how
    /// long a write by another process takes to show.
    pub read_cache_ttl: std::time::Duration,
    /// How often hosts report (a host silent for three intervals is
    /// unreachable).
    pub heartbeat: std::time::Duration,
    /// How long a connected host's credential lives before it is renewed
    /// over its link.
    pub host_credential_renewal: std::time::Duration,
    /// `--advertise-url`: see [`Inner::advertise_url`].
    pub advertise_url: Option<String>,
    /// `--redis-url`: pod events shared with the other servers.
    pub redis_url: Option<String>,
    /// `--trusted-proxy`.
    pub trusted_proxies: Vec<crate::ratelimit::Cidr>,
    pub memory: MemoryConfig,
    pub router: RouterConfig,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The result of preparing the admin user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// A new token was generated; show it once.
    Generated(String),
    /// The token from `PINACLE_ADMIN_TOKEN` is registered.
    FromEnv,
    /// The admin already existed and no token was given.
    Existing,
}

pub use crate::redact::redacted_url;

/// Brings the database at `database_url` to the current schema and closes
/// it (`pinacle migrate`: a deployment's migration step); the pending
/// migrations' names.
pub async fn migrate(database_url: &str) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let mut opts = ConnectOptions::new(database_url.to_owned());
    opts.sqlx_logging(false).connect_timeout(std::time::Duration::from_secs(10)).acquire_timeout(std::time::Duration::from_secs(10));
    let db = Database::connect(opts).await.with_context(|| format!("opening database {}", redacted_url(database_url)))?;
    let pending: Vec<String> = Migrator::get_pending_migrations(&db).await?.iter().map(|m| m.name().to_owned()).collect();
    Migrator::up(&db, None).await.context("running database migrations")?;
    db.close().await?;
    Ok(pending)
}

impl AppState {
    /// Opens the database (migrating it) and the job queue, and loads the
    /// token-signing keys.
    pub async fn open(cfg: ServerConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let database_url = cfg.database_url.as_str();
        let mut opts = ConnectOptions::new(database_url.to_owned());
        opts.sqlx_logging(false).max_connections(8).map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            // WAL with NORMAL sync: a crash of the process loses nothing; a
            // power cut can lose the last commits, never corrupt the file.
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(10))
        });
        let db = Database::connect(opts).await.with_context(|| format!("opening database {}", redacted_url(database_url)))?;
        Migrator::up(&db, None).await.context("running database migrations")?;
        let queue = match &cfg.queue_url {
            Some(url) => JobQueue::open_postgres(url).await.context("opening the job queue")?,
            None => JobQueue::open(&cfg.queue_path).await.context("opening the job queue")?,
        };
        let bus = match &cfg.redis_url {
            Some(url) => Arc::new(crate::bus::Bus::redis(url).await?),
            None => Arc::new(crate::bus::Bus::local()),
        };
        let pod_lists = Arc::new(ReadCache::new(cfg.read_cache_ttl));
        let events = crate::events::PodEvents::new(bus.clone(), pod_lists.clone());
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let principals = Arc::new(ReadCache::new(cfg.read_cache_ttl));
        // the services, each given what it needs
        let settings = crate::settings::InstanceSettings::new(db.clone(), write_lock.clone());
        let audit = crate::audit::AuditLog::new(db.clone(), write_lock.clone(), cfg.anchor_file);
        let tokens = crate::tokens::ApiTokens::new(db.clone(), write_lock.clone(), principals.clone());
        let master_key = Arc::new(cfg.master_key);
        let sessions = crate::sessions::Sessions::new(db.clone(), write_lock.clone(), cfg.sessions, master_key.clone(), principals.clone());
        let vault = crate::secrets::SecretVault::new(db.clone(), master_key.clone());
        let hosts = Arc::new(crate::hosts::HostDirectory::default());
        let advertise_url = cfg.advertise_url.map(|u| u.trim_end_matches('/').to_owned());
        let links = crate::peers::HostLinks::new(db.clone(), hosts.clone(), advertise_url, master_key.clone(), cfg.heartbeat);
        let teams = crate::teams::Teams::new(db.clone(), write_lock.clone(), principals.clone());
        let memory_metrics = Arc::new(pinacle_memory_service::metrics::MemoryMetrics::new());
        let aion_metrics = pinacle_aion::metrics::AionMetrics::default();
        let metrics = {
            let mut m = Metrics::default();
            memory_metrics.register(&mut m.registry);
            aion_metrics.register(&mut m.registry);
            Arc::new(m)
        };
        let embedding = pinacle_memory_service::embedding::Embedding::from_spec(&cfg.memory.embedder, cfg.memory.embedder_key)
            .map_err(|e| anyhow::anyhow!("--memory-embedder {e}"))?;
        let memory_store: Arc<dyn pinacle_memory_service::backend::MemoryStore> = match &cfg.memory.database_url {
            Some(url) => Arc::new(
                pinacle_memory_service::postgres::PgStore::connect(url).await.context("opening the memory store in PostgreSQL (--memory-database-url)")?,
            ),
            None => Arc::new(
                pinacle_memory_service::embedded::EmbeddedStore::open(&cfg.memory.path, memory_metrics.clone())
                    .await
                    .with_context(|| format!("opening the memory store {}", cfg.memory.path.display()))?,
            ),
        };
        tracing::info!(store = memory_store.kind(), embedder = embedding.id(), "memory store opened");
        let memory = pinacle_memory_service::MemoryService::new(memory_store, embedding, memory_metrics);
        let pods = crate::service::Pods::new(crate::service::PodsDeps {
            db: db.clone(),
            write_lock: write_lock.clone(),
            queue: queue.clone(),
            events: events.clone(),
            pod_lists: pod_lists.clone(),
            metrics: metrics.clone(),
            settings: settings.clone(),
            teams: teams.clone(),
            vault: vault.clone(),
            links: links.clone(),
            default_runtime: cfg.default_runtime,
        });
        let auth = crate::auth::Authenticator::new(db.clone(), principals.clone(), sessions.clone());
        let accounts = crate::accounts::Accounts::new(db.clone(), write_lock.clone(), settings.clone(), sessions.clone(), teams.clone());
        let devices = crate::device::DeviceSignIn::new(db.clone(), write_lock.clone(), sessions.clone());
        let github = Arc::new(OnceLock::new());
        let github_sign_in = crate::github::GithubAuth::new(
            db.clone(),
            write_lock.clone(),
            github.clone(),
            master_key.clone(),
            settings.clone(),
            sessions.clone(),
            teams.clone(),
        );
        let secrets = crate::secrets::ops::Secrets::new(db.clone(), write_lock.clone(), master_key.clone(), teams.clone(), pods.clone());
        let proxy_site = Arc::new(OnceLock::new());
        let pod_access = crate::pod_access::PodAccess::new(crate::pod_access::PodAccessDeps {
            db: db.clone(),
            pods: pods.clone(),
            sessions: sessions.clone(),
            auth: auth.clone(),
            bus: bus.clone(),
            proxy_site: proxy_site.clone(),
        });
        let ssh = crate::ssh::SshAccess::new(db.clone(), master_key.clone(), pods.clone(), audit.clone(), auth.clone());
        let workspace = crate::workspace::Workspaces::new(db.clone(), write_lock.clone(), master_key.clone(), pods.clone(), links.clone(), audit.clone());
        let memory_access = crate::memory::MemoryAccess::new(sessions.clone(), auth.clone(), pods.clone(), teams.clone(), memory.clone());
        let control = crate::control::Control::new(db.clone(), pods.clone(), vault.clone(), memory_access.clone());
        let aion_access = crate::aion_access::AionAccess::new(auth.clone(), memory_access.clone(), pods.clone(), audit.clone(), vault.clone());
        let aion_url = match (&cfg.router.database_url, database_url.starts_with("postgres")) {
            (Some(url), _) => url.clone(),
            (None, true) => database_url.to_owned(),
            (None, false) => cfg.router.default_path.display().to_string(),
        };
        let aion_store = pinacle_aion::store::Store::open(&aion_url).await.map_err(|e| anyhow::anyhow!("opening the router's store: {e}"))?;
        let registries = pinacle_aion::registries::Registries::open_with(cfg.router.dir.as_deref(), cfg.router.modules.clone())
            .map_err(|e| anyhow::anyhow!("the router's registry ({}):\n{e}", cfg.router.dir.as_deref().map_or("none".into(), |d| d.display().to_string())))?;
        // a SQLite file has one server: its budgets are held in memory and
        // written behind; PostgreSQL's are shared by every server
        let ledger: Arc<dyn pinacle_aion::budget::Ledger> = match &aion_store {
            pinacle_aion::store::Store::Sqlite(_) => {
                let file = aion_url.strip_prefix("sqlite://").unwrap_or(&aion_url);
                pinacle_aion::store::WriteBehindLedger::open(aion_store.clone(), std::path::Path::new(file)).await.map_err(|e| anyhow::anyhow!("the router's budgets: {e}"))?
            }
            pinacle_aion::store::Store::Postgres(_) => Arc::new(pinacle_aion::store::SqlLedger::new(aion_store.clone())),
        };
        let aion = pinacle_aion::engine::Aion::with_metrics(
            registries,
            ledger,
            Some(aion_store),
            Arc::new(aion_access.clone()),
            aion_metrics,
        );
        aion.spawn_sweeper();
        let host_registry = crate::hosts::ops::Hosts::new(crate::hosts::ops::HostsDeps {
            db: db.clone(),
            write_lock: write_lock.clone(),
            hosts: hosts.clone(),
            links: links.clone(),
            pods: pods.clone(),
            queue: queue.clone(),
            control: control.clone(),
            heartbeat: cfg.heartbeat,
            credential_renewal: cfg.host_credential_renewal,
        });
        let github_apps = crate::github::app::GithubApps::new(crate::github::app::GithubAppsDeps {
            db: db.clone(),
            pods: pods.clone(),
            hosts: host_registry.clone(),
            ssh: ssh.clone(),
            audit: audit.clone(),
            proxy_site: proxy_site.clone(),
            master_key: master_key.clone(),
            sign_in: github.clone(),
            events: events.clone(),
            write_lock: write_lock.clone(),
        });
        control.set_git_tokens(Arc::new(github_apps.clone()));
        let state = Self(Arc::new(Inner {
            settings,
            audit,
            tokens,
            db,
            queue,
            events,
            metrics,
            secrets,
            pods,
            hosts: hosts.clone(),
            write_lock: write_lock.clone(),
            rate_limiter: cfg.limits.map(crate::ratelimit::RateLimiter::new),
            master_key,
            auth,
            teams,
            accounts,
            devices,
            github_sign_in,
            sessions,
            github,
            links,
            bus,
            trusted_proxies: cfg.trusted_proxies,
            principals,
            pod_lists,
            pod_access,
            proxy_site,
            ssh,
            workspace,
            control,
            host_registry,
            memory,
            memory_access,
            aion,
            aion_access,
            github_apps,
        }));
        state.sessions.load_signing_keys().await.map_err(|e| anyhow::anyhow!("loading token-signing keys: {e}"))?;
        Ok(state)
    }

    /// Background upkeep: anchors the audit log and rotates the signing key
    /// when it is due, every `every`.
    pub fn spawn_maintenance(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = state.audit.anchor().await {
                    tracing::warn!(error = %e, "audit anchor failed");
                }
                if let Err(e) = state.sessions.load_signing_keys().await {
                    tracing::warn!(error = %e, "signing key check failed");
                }
            }
        })
    }

    /// Attaches a host (the agent running in this process, say).
    pub fn attach_host(&self, host: Arc<dyn pinacle_host_api::HostApi>) {
        self.hosts.attach(host);
    }

    /// Makes sure the `admin` user exists with a usable token: the one in
    /// `env_token` if given, else a generated one on first start.
    pub async fn bootstrap_admin(&self, env_token: Option<&str>) -> anyhow::Result<AdminToken> {
        let _w = self.write_lock.lock().await;
        let now = Utc::now();
        let admin = match user::Entity::find().filter(user::Column::Name.eq(ADMIN_USER)).one(&self.db).await? {
            Some(u) => u,
            None => {
                user::ActiveModel {
                    id: Set(uuid::Uuid::new_v4().to_string()),
                    name: Set(ADMIN_USER.to_owned()),
                    created_at: Set(now),
                    password_hash: Set(None),
                }
                .insert(&self.db)
                .await?
            }
        };
        let has_tokens = api_token::Entity::find()
            .filter(api_token::Column::UserId.eq(admin.id.clone()))
            .one(&self.db)
            .await?
            .is_some();
        let (token, outcome) = match env_token {
            Some(t) if t.trim().len() < 16 => anyhow::bail!("PINACLE_ADMIN_TOKEN is too short: use at least 16 characters"),
            Some(t) => (t.trim().to_owned(), AdminToken::FromEnv),
            None if has_tokens => return Ok(AdminToken::Existing),
            None => {
                let t = generate_token();
                (t.clone(), AdminToken::Generated(t))
            }
        };
        let hash = hash_token(&token);
        if outcome == AdminToken::FromEnv {
            // A changed PINACLE_ADMIN_TOKEN replaces the previous one.
            api_token::Entity::delete_many()
                .filter(api_token::Column::UserId.eq(admin.id.clone()))
                .filter(api_token::Column::Name.eq(ENV_TOKEN_NAME))
                .filter(api_token::Column::TokenHash.ne(hash.clone()))
                .exec(&self.db)
                .await?;
        }
        if api_token::Entity::find().filter(api_token::Column::TokenHash.eq(hash.clone())).one(&self.db).await?.is_none() {
            api_token::ActiveModel {
                id: Set(uuid::Uuid::new_v4().to_string()),
                user_id: Set(admin.id),
                name: Set(if outcome == AdminToken::FromEnv { ENV_TOKEN_NAME } else { "bootstrap" }.to_owned()),
                token_hash: Set(hash),
                created_at: Set(now),
                last_used_at: Set(None),
                scope: Set(crate::policy::Scope::Full.as_str().to_owned()),
                expires_at: Set(None),
            }
            .insert(&self.db)
            .await?;
        }
        self.principals.clear();
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_never_reach_messages() {
        assert_eq!(super::redacted_url("postgres://pinacle:s3cr:et@db:5432/p"), "postgres://pinacle:***@db:5432/p");
        assert_eq!(super::redacted_url("postgres://pinacle@db/p"), "postgres://pinacle@db/p");
        assert_eq!(super::redacted_url("sqlite:///var/lib/pinacle/pinacle.db?mode=rwc"), "sqlite:///var/lib/pinacle/pinacle.db?mode=rwc");
        assert_eq!(super::redacted_url("postgres://u:p@ss@db/p"), "postgres://u:***@db/p");
    }
}
