//! Pod operations shared by the REST handlers and the control-plane side the
//! host agents use. Every state change goes through [`Pods::transition`].

use chrono::{DateTime, Utc};
use pinacle_orchestrator::{
    hostname, place_on, HostCapacity, InvalidTransition, PodEvent, PodJob, PodName, PodRecord, PodState, RuntimeKind, Tier,
    TierLimits,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, SqlErr, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use pinacle_config::templates::Template;
use pinacle_orchestrator::pod::RepositorySource;
use pinacle_orchestrator::processes::PodProcesses;

use crate::events::PodEventView;
use crate::principal::Principal;
use crate::entities::{host, pod, pod_event};
use crate::policy::{Action, Resource};
use crate::ApiError;

/// A pod as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodView {
    pub id: Uuid,
    pub name: String,
    pub owner_id: String,
    /// The team the pod belongs to; `None` for a personal pod.
    pub team_id: Option<String>,
    pub state: PodState,
    /// Why the pod is in `error`, if it is.
    pub state_reason: Option<String>,
    pub template: String,
    pub image: String,
    pub tier: Tier,
    pub limits: TierLimits,
    pub runtime: RuntimeKind,
    pub host: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Ports anyone may reach through the proxy without signing in.
    #[serde(default)]
    pub public_ports: Vec<u16>,
    /// Egress policy: `allow-all`, `deny-all` or an allow list of CIDRs.
    #[serde(default)]
    pub egress: String,
    /// What the pod's supervisor runs.
    #[serde(default)]
    pub processes: PodProcesses,
    /// The pod's checked `pinacle.yaml` (absent for pods created before it was kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<pinacle_config::PinacleConfig>,
    /// The IDE's tabs, from the configuration (written or generated).
    pub tabs: Vec<pinacle_config::resolve::ResolvedTab>,
    /// Snapshot the pod's volumes each time it stops.
    pub snapshot_on_stop: bool,
    /// The repository `/workspace` is cloned from when the pod first runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositorySource>,
    /// The pod's host, when it is not `ready` (`cordoned`, `unreachable`,
    /// `lost`); set in pod lists and `GET /pods/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_status: Option<pinacle_orchestrator::host::HostStatus>,
    /// The pod's link to a repository of the GitHub App (its pull request,
    /// whether it is behind); set in pod lists and `GET /pods/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<serde_json::Value>,
}

/// `repository` in `POST /api/v1/pods`: what to clone into `/workspace`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryRequest {
    /// An `http://` or `https://` URL, without credentials (a private
    /// repository's token is the secret `GIT_TOKEN`).
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    /// `owner/name` of a repository of the GitHub App (instead of `url`):
    /// cloned with a short-lived installation token.
    #[serde(default)]
    pub github: Option<String>,
    /// With the GitHub App: register the pod's own key as a deploy key,
    /// `read` or `write`.
    #[serde(default)]
    pub deploy_key: Option<String>,
}

/// The most bytes of a request's repository object.
const MAX_REPOSITORY_REQUEST: usize = 4096;

/// `POST /api/v1/pods`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePodRequest {
    pub name: String,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub runtime: Option<String>,
    /// Team (name or id) the pod belongs to; none: a personal pod.
    #[serde(default)]
    pub team: Option<String>,
    /// Commands run once before the processes start.
    #[serde(default)]
    pub install: Vec<pinacle_orchestrator::processes::Step>,
    /// Processes the pod's supervisor keeps running.
    #[serde(default)]
    pub processes: Vec<pinacle_orchestrator::processes::ProcessSpec>,
    /// A `pinacle.yaml`, as text. `template` and `tier` in the request
    /// override the file's; `install` and `processes` add to it. Without
    /// it, the template's own `pinacle.yaml` is used.
    #[serde(default)]
    pub config: Option<String>,
    /// The file name shown in problems with `config` (default `pinacle.yaml`).
    #[serde(default)]
    pub config_file: Option<String>,
    /// Unknown fields in `config` are errors rather than warnings.
    #[serde(default)]
    pub strict: bool,
    /// Egress policy from the first start: `allow-all` (default), `deny-all`
    /// or IPv4 CIDRs.
    #[serde(default)]
    pub egress: Option<String>,
    /// The image, overriding the configuration's: a host image's name or
    /// any registry reference (pinned to its digest at creation).
    #[serde(default)]
    pub image: Option<String>,
    /// Only hosts whose agents carry all these labels (`pinacle agent
    /// --label region=eu`) may take the pod.
    #[serde(default)]
    pub host_labels: std::collections::BTreeMap<String, String>,
}

/// Reads a `pinacle.yaml` sent with a request: 400 `invalid_config` with
/// every problem, or the checked file and its warnings.
pub fn read_config(
    text: &str,
    file: Option<&str>,
    strict: bool,
) -> Result<(pinacle_config::PinacleConfig, pinacle_config::Diagnostics), ApiError> {
    let file = file.filter(|f| !f.is_empty() && f.len() <= 200).unwrap_or(pinacle_config::pinacle_yaml::FILE_NAME);
    pinacle_config::parse(file, text, pinacle_config::ParseOptions { strict }).map_err(|d| ApiError::invalid_config(&d))
}

/// `PATCH /api/v1/pods/{pod}` body: what to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSettings {
    /// Ports reachable through the proxy without signing in (replaces the list).
    #[serde(default)]
    pub public_ports: Option<Vec<u16>>,
    /// `allow-all`, `deny-all`, or a comma-separated list of IPv4 CIDRs.
    #[serde(default)]
    pub egress: Option<String>,
    /// Another image (the pod must be stopped): `/workspace` and the home
    /// directory stay, the rest of the root filesystem comes from the new image.
    #[serde(default)]
    pub image: Option<String>,
    /// Snapshot the pod's volumes each time it stops.
    #[serde(default)]
    pub snapshot_on_stop: Option<bool>,
}

/// The template a pod gets when the request names none.
pub const DEFAULT_TEMPLATE: &str = "blank";


/// Snapshots a pod may keep that its users took (automatic ones on stop are
/// pruned separately): they live on the host's data filesystem.
pub const MAX_MANUAL_SNAPSHOTS: usize = 10;

fn corrupt(what: &str, value: &str) -> ApiError {
    ApiError::internal(format!("stored {what} {value:?} is not valid"))
}

impl TryFrom<pod::Model> for PodView {
    type Error = ApiError;
    fn try_from(m: pod::Model) -> Result<Self, ApiError> {
        let tier: Tier = m.tier.parse().map_err(|_| corrupt("tier", &m.tier))?;
        let config: Option<pinacle_config::PinacleConfig> = if m.config.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&m.config).map_err(|_| corrupt("config", "(json)"))?)
        };
        Ok(PodView {
            id: Uuid::parse_str(&m.id).map_err(|_| corrupt("pod id", &m.id))?,
            state: m.state.parse().map_err(|_| corrupt("state", &m.state))?,
            runtime: m.runtime.parse().map_err(|_| corrupt("runtime", &m.runtime))?,
            limits: tier.limits(),
            tier,
            name: m.name,
            owner_id: m.owner_id,
            team_id: m.team_id,
            state_reason: m.state_reason,
            template: m.template,
            image: m.image,
            host: m.host_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
            public_ports: pinacle_orchestrator::hostname::parse_ports(&m.public_ports).map_err(|_| corrupt("public ports", &m.public_ports))?,
            egress: m.egress,
            processes: if m.processes.trim().is_empty() {
                PodProcesses::default()
            } else {
                serde_json::from_str(&m.processes).map_err(|_| corrupt("processes", &m.processes))?
            },
            tabs: config.as_ref().map(pinacle_config::resolve::tabs).unwrap_or_default(),
            config,
            snapshot_on_stop: m.snapshot_on_stop,
            repository: if m.repository.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&m.repository).map_err(|_| corrupt("repository", "(json)"))?)
            },
            host_status: None,
            github: None,
        })
    }
}

impl TryFrom<pod_event::Model> for PodEventView {
    type Error = ApiError;
    fn try_from(m: pod_event::Model) -> Result<Self, ApiError> {
        Ok(PodEventView {
            seq: m.id,
            pod_id: Uuid::parse_str(&m.pod_id).map_err(|_| corrupt("pod id", &m.pod_id))?,
            at: m.at,
            event: m.event,
            from: m.from_state.as_deref().map(str::parse).transpose().map_err(|_| corrupt("state", "from"))?,
            to: m.to_state.parse().map_err(|_| corrupt("state", &m.to_state))?,
            message: m.message,
        })
    }
}

impl PodView {
    /// The record a host agent works from.
    pub fn record(&self) -> Result<PodRecord, ApiError> {
        Ok(PodRecord {
            id: self.id,
            name: PodName::parse(&self.name).map_err(|_| corrupt("pod name", &self.name))?,
            owner: self.owner_id.clone(),
            state: self.state,
            image: self.image.clone(),
            template: self.template.clone(),
            tier: self.tier,
            runtime: self.runtime,
            host: self.host.clone(),
            egress: self.egress.clone(),
            processes: self.processes.clone(),
            snapshot_on_stop: self.snapshot_on_stop,
        })
    }
}

/// A request's repository, checked: 400 `invalid_repository` in the user's
/// terms (only http(s), no credentials in the URL, git's ref rules).
pub fn checked_repository(r: RepositoryRequest, use_repository_config: bool) -> Result<RepositorySource, ApiError> {
    let size = r.url.len() + r.branch.as_ref().map_or(0, String::len) + r.commit.as_ref().map_or(0, String::len);
    if size > MAX_REPOSITORY_REQUEST {
        return Err(ApiError::bad_request("invalid_repository", format!("the repository is described in more than {MAX_REPOSITORY_REQUEST} bytes")));
    }
    RepositorySource { url: r.url, branch: r.branch, commit: r.commit, use_repository_config }
        .validated()
        .map_err(|e| ApiError::bad_request("invalid_repository", e.to_string()))
}

/// A repository's own configuration file as a `pinacle.yaml`: read as one,
/// or a devcontainer.json imported (a `build` there is built by the pod's
/// host from the clone).
fn repository_config(file: &str, text: &str) -> Result<pinacle_config::PinacleConfig, ApiError> {
    if file.ends_with(".json") {
        let imported = pinacle_config::devcontainer::import(file, text).map_err(|d| ApiError::invalid_config(&d))?;
        let yaml = pinacle_config::pinacle_yaml::to_canonical_yaml(&imported.config);
        return Ok(read_config(&yaml, Some(&format!("{file} (converted)")), false)?.0);
    }
    Ok(read_config(text, Some(file), false)?.0)
}

/// A pod request that the state machine refused, in user terms.
fn refused(name: &str, e: InvalidTransition) -> ApiError {
    let hint = match (e.event, e.state) {
        (PodEvent::StartRequested, PodState::Running) => " (it is already running)",
        (PodEvent::StopRequested, PodState::Stopped) => " (it is already stopped)",
        (_, PodState::Deleting) => " (it is being deleted)",
        (_, PodState::Pending | PodState::Provisioning | PodState::Starting | PodState::Stopping) => {
            " (wait until it settles; follow `pinacle pod show` or the events stream)"
        }
        _ => "",
    };
    ApiError::conflict("invalid_state", format!("cannot {} pod {name}: it is {}{hint}", e.event, e.state))
}

/// Pods as a service: created (placed on a host, within quotas), listed,
/// found for a caller, configured, requested to start, stop or be deleted,
/// moved through their states (`transition`), snapshotted; and the hosts'
/// registry that placement reads.
#[derive(Clone)]
pub struct Pods {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    queue: pinacle_queue::JobQueue,
    events: crate::events::PodEvents,
    /// Dropped by every pod write.
    pod_lists: std::sync::Arc<crate::events::PodLists>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    settings: crate::settings::InstanceSettings,
    teams: crate::teams::Teams,
    vault: crate::secrets::SecretVault,
    links: crate::peers::HostLinks,
    /// Runtime for pods that name none; `None`: gVisor where offered.
    default_runtime: Option<RuntimeKind>,
}

/// What [`Pods`] is built from.
pub struct PodsDeps {
    pub db: sea_orm::DatabaseConnection,
    pub write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    pub queue: pinacle_queue::JobQueue,
    pub events: crate::events::PodEvents,
    pub pod_lists: std::sync::Arc<crate::events::PodLists>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub settings: crate::settings::InstanceSettings,
    pub teams: crate::teams::Teams,
    pub vault: crate::secrets::SecretVault,
    pub links: crate::peers::HostLinks,
    pub default_runtime: Option<RuntimeKind>,
}

impl Pods {
    pub fn new(d: PodsDeps) -> Self {
        Self {
            db: d.db,
            write_lock: d.write_lock,
            queue: d.queue,
            events: d.events,
            pod_lists: d.pod_lists,
            metrics: d.metrics,
            settings: d.settings,
            teams: d.teams,
            vault: d.vault,
            links: d.links,
            default_runtime: d.default_runtime,
        }
    }
    /// Validates and records a new pod, then queues its provisioning.
    pub async fn create_pod(&self, who: &Principal, req: CreatePodRequest) -> Result<PodView, ApiError> {
        self.create_pod_from(who, req, None).await
    }

    /// [`Self::create_pod`] with a repository cloned into `/workspace` when
    /// the pod first runs. Without `config` and `template` in the request,
    /// the repository's own `pinacle.yaml` (or devcontainer.json) configures
    /// the pod once cloned (see [`Self::apply_repository_config`]).
    pub async fn create_pod_from(&self, who: &Principal, req: CreatePodRequest, repository: Option<RepositoryRequest>) -> Result<PodView, ApiError> {
        self.create_pod_linked(who, req, repository, None).await
    }

    /// [`Self::create_pod_from`], recording the pod's link to a repository
    /// of the GitHub App (`github`, its `pod_id` set here) in the same
    /// transaction: the pod is never seen, by its host or the secret vault,
    /// without it.
    pub async fn create_pod_linked(
        &self,
        who: &Principal,
        req: CreatePodRequest,
        repository: Option<RepositoryRequest>,
        github: Option<crate::entities::github_pod::ActiveModel>,
    ) -> Result<PodView, ApiError> {
        let req_host_labels = req.host_labels.clone();
        if req_host_labels.len() > 16 || req_host_labels.iter().any(|(k, v)| k.is_empty() || k.len() > 63 || v.len() > 63) {
            return Err(ApiError::bad_request("invalid_host_labels", "host_labels: at most 16 labels, keys of 1 to 63 and values of at most 63 characters"));
        }
        let repository = match repository {
            Some(r) => Some(checked_repository(r, req.config.is_none() && req.template.is_none())?),
            None => None,
        };
        let repository_json = match &repository {
            Some(r) => serde_json::to_string(r).map_err(ApiError::internal)?,
            None => String::new(),
        };
        let name = PodName::parse(&req.name)
            .map_err(|e| ApiError::bad_request("invalid_name", format!("invalid pod name {:?}: {e}", req.name)))?;
        if let Some(t) = req.template.as_deref() {
            if Template::find(t).is_none() {
                return Err(ApiError::bad_request(
                    "unknown_template",
                    format!("unknown template {t:?}; choose one of {}", Template::known_ids()),
                ));
            }
        }
        let mut config = match &req.config {
            Some(text) => read_config(text, req.config_file.as_deref(), req.strict)?.0,
            None => {
                let id = req.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
                let t = Template::find(id).ok_or_else(|| ApiError::internal(format!("template {id} missing")))?;
                read_config(t.pinacle_yaml, Some(&format!("templates/{id}/pinacle.yaml")), false)?.0
            }
        };
        if let Some(t) = &req.template {
            if config.template.as_ref() != Some(t) {
                config.template = Some(t.clone());
                config.image = None;
            }
        }
        if let Some(image) = req.image.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
            pinacle_config::image_ref::check(image).map_err(|why| ApiError::bad_request("invalid_image", why))?;
            config.image = Some(image.to_owned());
            config.image_build = None;
        }
        if config.image_build.is_some() && repository.is_none() {
            return Err(ApiError::bad_request(
                "build_needs_repository",
                "`image: {build: …}` builds from the pod's repository: give a repository, or build the image first with `pinacle image build NAME --dockerfile FILE` and name it",
            ));
        }
        if let Some(t) = req.tier.as_deref() {
            config.tier = t.parse().map_err(|e: pinacle_orchestrator::tier::UnknownTier| {
                ApiError::bad_request("unknown_tier", e.to_string())
            })?;
        }
        let definition = pinacle_config::resolve::resolve(&config);
        if definition.gpus > 0 {
            return Err(ApiError::not_supported(format!(
                "this server has no GPU hosts; remove `gpu` from the pod's configuration (asked for {})",
                definition.gpus
            )));
        }
        let tier = definition.tier;
        let template_id = config.template.clone().unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
        let mut processes = definition.processes.clone();
        processes.install.extend(req.install.iter().cloned());
        processes.processes.extend(req.processes.iter().cloned());
        processes.validate().map_err(|e| ApiError::bad_request("invalid_processes", e))?;
        let processes_json = serde_json::to_string(&processes).map_err(ApiError::internal)?;
        let config_json = serde_json::to_string(&config).map_err(ApiError::internal)?;
        let public_ports = pinacle_orchestrator::hostname::format_ports(&definition.public_ports);
        let egress = req.egress.as_deref().map(str::trim).unwrap_or("allow-all").to_owned();
        pinacle_orchestrator::egress::Egress::parse(&egress).map_err(|e| {
            ApiError::bad_request("invalid_request", format!("egress: {e}; use allow-all, deny-all or a comma-separated list of IPv4 CIDRs"))
        })?;
        let (team_id, owner_name) = match &req.team {
            Some(t) => {
                let team = self.teams.find_team(who, t, crate::policy::Action::Read).await?;
                (Some(team.id), team.name)
            }
            None => (None, who.user_name.clone()),
        };
        let team_name = team_id.as_ref().map(|_| owner_name.clone());
        let route_key = hostname::route_key(name.as_str(), &owner_name);
        if route_key.len() > hostname::MAX_ROUTE_KEY {
            return Err(ApiError::bad_request(
                "name_too_long",
                format!(
                    "pod name {name} is too long for host names of {owner_name}: pod and owner names together may have at most {} characters",
                    hostname::MAX_ROUTE_KEY - 1
                ),
            ));
        }
        who.authorize(
            crate::policy::Action::Create,
            &crate::policy::Resource::Pod { owner: &who.user_id, team: team_id.as_deref() },
            "team",
        )?;
        let requested_runtime = req
            .runtime
            .as_deref()
            .map(str::parse::<RuntimeKind>)
            .transpose()
            .map_err(|e| ApiError::bad_request("unknown_runtime", e))?;

        // a registry image is pinned to the digest its tag names now: a
        // restart never changes the pod's image silently
        let image = if pinacle_config::image_ref::is_registry_reference(&definition.image) {
            self.pin_registry_image(&definition.image, &who.user_id, team_id.as_deref(), None).await?
        } else {
            definition.image.clone()
        };
        let youki_allowed = self.settings.youki_access().await?.allows(team_name.as_deref(), tier.id());
        let quotas = self.settings.quotas().await?;
        let _w = self.write_lock.lock().await;
        self.check_quota(&quotas, &who.user_id, team_id.as_deref(), 1, tier.limits().vcpus).await?;
        let hosts = self.host_capacities().await?;
        let gvisor_here = hosts.iter().any(|h| h.schedulable && h.runtimes.contains(&RuntimeKind::Gvisor));
        let runtime = match requested_runtime.or(self.default_runtime) {
            // the operator's default youki, for a tenant who may not have it
            Some(RuntimeKind::Youki) if requested_runtime.is_none() && !youki_allowed && gvisor_here => RuntimeKind::Gvisor,
            Some(r) => r,
            None if gvisor_here || !youki_allowed => RuntimeKind::Gvisor,
            None => RuntimeKind::Youki,
        };
        if runtime == RuntimeKind::Youki && !youki_allowed {
            return Err(ApiError::forbidden("runtime_not_allowed",
                format!(
                    "the youki runtime (the host's kernel) is not allowed for this pod ({} on tier {}); use gvisor, or ask the administrator to allow youki for your team or tier (admin settings: youki)",
                    team_name.as_deref().map_or_else(|| "a personal pod".to_owned(), |t| format!("team {t}")),
                    tier.id()
                ),
            ));
        }
        let host = place_on(&hosts, runtime, &tier.limits(), &req_host_labels)
            .map_err(|e| ApiError::unavailable("no_capacity", e.to_string()))?
            .id
            .clone();

        let id = Uuid::new_v4();
        let now = Utc::now();
        let txn = self.db.begin().await?;
        // Several servers place at once on PostgreSQL: the host's row is
        // locked and its use counted again inside the transaction, so two
        // placements never both take its last room (one server alone is
        // serialised by its write lock already).
        if self.db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            self.reserve_on(&txn, &host, &tier.limits()).await?;
        }
        self.check_route_key(&txn, &route_key, name.as_str(), &who.user_id, team_id.as_deref()).await?;
        let inserted = pod::ActiveModel {
            id: Set(id.to_string()),
            owner_id: Set(who.user_id.clone()),
            name: Set(name.to_string()),
            state: Set(PodState::Pending.as_str().to_owned()),
            state_reason: Set(None),
            template: Set(template_id.clone()),
            image: Set(image.clone()),
            tier: Set(tier.id().to_owned()),
            runtime: Set(runtime.as_str().to_owned()),
            host_id: Set(host.clone()),
            created_at: Set(now),
            updated_at: Set(now),
            team_id: Set(team_id.clone()),
            route_key: Set(Some(route_key.clone())),
            public_ports: Set(public_ports),
            egress: Set(egress),
            processes: Set(processes_json.clone()),
            config: Set(config_json),
            snapshot_on_stop: Set(false),
            repository: Set(repository_json),
        }
        .insert(&txn)
        .await;
        let model = match inserted {
            Ok(m) => m,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                let whose = if team_id.is_some() { "this team already has" } else { "you already have" };
                return Err(ApiError::conflict("name_taken", format!("{whose} a pod named {name}")));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(mut link) = github {
            link.pod_id = Set(id.to_string());
            link.insert(&txn).await?;
        }
        let event = insert_event(&txn, id, now, "created", None, PodState::Pending, &format!("requested by {}", who.user_name)).await?;
        crate::audit::append(&txn, who, "pod.create", &format!("pod:{id} ({name})")).await?;
        txn.commit().await?;
        self.pod_lists.clear();
        drop(_w);
        self.events.publish(event).await;
        self.metrics.transitions.get_or_create(&crate::metrics::StateLabels { state: "pending".into() }).inc();
        self.enqueue(&host, PodJob::Provision(id)).await;
        tracing::info!(pod = %id, %name, owner = %who.user_name, %runtime, %host, "pod requested");
        model.try_into()
    }

    /// Refuses a route key that conflicts with a live pod's (see
    /// [`hostname::keys_conflict`]), so every host name names at most one
    /// pod. The same name under the same owner is left to the unique index
    /// (answered `name_taken`). The answer does not say whose pod it is.
    async fn check_route_key<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
        key: &str,
        name: &str,
        owner_id: &str,
        team_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let dash_suffixes: Vec<String> = key.match_indices('-').map(|(i, _)| key[i + 1..].to_owned()).collect();
        let candidates = pod::Entity::find()
            .filter(pod::Column::State.ne(PodState::Deleted.as_str()))
            .filter(
                sea_orm::Condition::any()
                    .add(pod::Column::RouteKey.eq(key))
                    .add(pod::Column::RouteKey.is_in(dash_suffixes))
                    .add(pod::Column::RouteKey.like(format!("%-{key}"))),
            )
            .all(db)
            .await?;
        let same_pod = |p: &pod::Model| p.name == name && p.team_id.as_deref() == team_id && (team_id.is_some() || p.owner_id == owner_id);
        if candidates.iter().any(|p| !same_pod(p) && p.route_key.as_deref().is_some_and(|k| hostname::keys_conflict(k, key))) {
            return Err(ApiError::conflict(
                "host_name_conflict",
                format!("the host names of this pod (…-{key}.domain) could be confused with another pod's; choose another pod name"),
            ));
        }
        Ok(())
    }

    /// Queues a job; a failure is logged, not returned: the pod is already
    /// recorded in a transitional state and the agent's reconcile pass
    /// re-drives it. When the pod's host is the agent in this process, the
    /// job also starts right away: the queued copy is the durable record and
    /// finds the pod settled when the worker takes it (jobs are idempotent).
    pub(crate) async fn enqueue(&self, host: &str, job: PodJob) {
        if let Err(e) = self.queue.push(host, job).await {
            tracing::error!(?job, %host, error = %e, "could not queue job; reconcile will pick the pod up");
        }
        if let Some(agent) = self.links.local(host) {
            tokio::spawn(async move {
                if let Err(e) = agent.handle(job).await {
                    tracing::warn!(?job, error = %e, "job failed");
                }
            });
        }
    }

    /// The live pods the caller can see (their own and their teams'),
    /// oldest first.
    pub async fn list_pods(&self, who: &Principal) -> Result<Vec<PodView>, ApiError> {
        let mut views = pod::Entity::find()
            .filter(visible_pods(who))
            .filter(pod::Column::State.ne(PodState::Deleted.as_str()))
            .order_by_asc(pod::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|p| who.authorize(Action::Read, &pod_resource(p), "pod").is_ok())
            .map(PodView::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.mark_host_status(&mut views).await?;
        Ok(views)
    }

    /// Sets `host_status` on `views` whose host is not ready (one read of
    /// the hosts).
    pub async fn mark_host_status(&self, views: &mut [PodView]) -> Result<(), ApiError> {
        if views.is_empty() {
            return Ok(());
        }
        let hosts = host::Entity::find().all(&self.db).await?;
        let now = Utc::now();
        for v in views.iter_mut() {
            let status = match hosts.iter().find(|h| h.id == v.host) {
                Some(h) => self.links.host_status(h, now),
                None => pinacle_orchestrator::host::HostStatus::Lost,
            };
            v.host_status = (status != pinacle_orchestrator::host::HostStatus::Ready).then_some(status);
        }
        Ok(())
    }

    /// The name in a pod's host names: its team's, or its owner's.
    pub async fn pod_owner_name(&self, view: &PodView) -> Result<String, ApiError> {
        let name = match &view.team_id {
            Some(t) => crate::entities::team::Entity::find_by_id(t.clone()).one(&self.db).await?.map(|t| t.name),
            None => crate::entities::user::Entity::find_by_id(view.owner_id.clone()).one(&self.db).await?.map(|u| u.name),
        };
        name.ok_or_else(|| ApiError::internal(format!("pod {} has no owner", view.name)))
    }

    /// Changes a pod's network settings: its public ports and egress policy
    /// (both effective at once for a running pod on this server's agent;
    /// on another host the policy applies when the pod next starts).
    pub async fn configure_pod(&self, who: &Principal, key: &str, change: PodSettings) -> Result<PodView, ApiError> {
        let view = self.find_pod(who, key, Action::Configure).await?;
        let mut row: pod::ActiveModel = pod::Entity::find_by_id(view.id.to_string())
            .one(&self.db)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("pod {key} not found")))?
            .into();
        let mut what = Vec::new();
        if let Some(ports) = &change.public_ports {
            if let Some(bad) = ports.iter().find(|p| **p == 0) {
                return Err(ApiError::bad_request("invalid_request", format!("public_ports: {bad} is not a port number (1 to 65535)")));
            }
            let mut ports = ports.clone();
            ports.sort_unstable();
            ports.dedup();
            let stored = pinacle_orchestrator::hostname::format_ports(&ports);
            what.push(format!("public_ports=[{stored}]"));
            row.public_ports = Set(stored);
        }
        if let Some(egress) = &change.egress {
            let egress = egress.trim();
            pinacle_orchestrator::egress::Egress::parse(egress).map_err(|e| {
                ApiError::bad_request("invalid_request", format!("egress: {e}; use allow-all, deny-all or a comma-separated list of IPv4 CIDRs"))
            })?;
            what.push(format!("egress={egress}"));
            row.egress = Set(egress.to_owned());
        }
        if let Some(asked) = &change.image {
            let image = &match pinacle_config::image_ref::check(asked) {
                Ok(pinacle_config::image_ref::ImageName::Local(name)) => name,
                Ok(pinacle_config::image_ref::ImageName::Registry(r)) => {
                    self.pin_registry_image(&r, &view.owner_id, view.team_id.as_deref(), Some(view.id)).await?
                }
                Err(why) => return Err(ApiError::bad_request("invalid_image", why)),
            };
            if view.state != PodState::Stopped {
                return Err(ApiError::conflict("invalid_state", format!("pod {} is {}; stop it before changing its image", view.name, view.state)));
            }
            if let Some(host) = self.links.reach(&view.host).filter(|_| !pinacle_config::image_ref::is_registry_reference(image)) {
                if !host.has_image(image).await.map_err(crate::hosts::host_error)? {
                    return Err(ApiError::bad_request(
                        "unknown_image",
                        format!("image {image:?} is not built on the pod's host; build it with `pinacle image build {image}`"),
                    ));
                }
            }
            what.push(format!("image={image}"));
            row.image = Set(image.clone());
            // an image chosen by hand replaces a build from the repository
            if let Some(mut config) = self.pod_config(view.id).await?.filter(|c| c.image_build.is_some()) {
                config.image_build = None;
                config.image = Some(asked.clone());
                row.config = Set(serde_json::to_string(&config).map_err(ApiError::internal)?);
            }
        }
        if let Some(on) = change.snapshot_on_stop {
            what.push(format!("snapshot_on_stop={on}"));
            row.snapshot_on_stop = Set(on);
        }
        if what.is_empty() {
            return Err(ApiError::bad_request("invalid_request", "nothing to change: send public_ports, egress, image or snapshot_on_stop"));
        }
        row.updated_at = Set(Utc::now());
        let updated = {
            let _w = self.write_lock.lock().await;
            let txn = self.db.begin().await?;
            // decided again under the lock every state change takes: the pod
            // may have started (or gone) since it was read
            let now = pod::Entity::find_by_id(view.id.to_string())
                .one(&txn)
                .await?
                .filter(|p| p.state != PodState::Deleted.as_str())
                .ok_or_else(|| ApiError::not_found(format!("pod {key} not found")))?;
            if change.image.is_some() && now.state != PodState::Stopped.as_str() {
                return Err(ApiError::conflict(
                    "invalid_state",
                    format!("pod {} is {}; stop it before changing its image", view.name, now.state),
                ));
            }
            let updated = row.update(&txn).await?;
            crate::audit::append(&txn, who, "pod.configure", &format!("pod:{} ({}) {}", view.id, view.name, what.join(" "))).await?;
            txn.commit().await?;
            updated
        };
        self.pod_lists.clear();
        let view = PodView::try_from(updated)?;
        if change.egress.is_some() {
            if let Some(host) = self.links.reach(&view.host) {
                match host.set_egress(view.id, &view.egress).await {
                    Ok(applied) => tracing::info!(pod = %view.name, egress = %view.egress, applied_now = applied, "egress policy changed"),
                    Err(e) => tracing::warn!(pod = %view.name, error = %e, "egress policy stored; applying it failed, it applies on the next start"),
                }
            }
        }
        Ok(view)
    }

    /// The live pod with id, name or `team/name` `key`, if the caller may
    /// take `action` on it. Pods the caller cannot see and deleted pods are
    /// "not found", never "forbidden". A bare name means the caller's own
    /// personal pod, else the one team pod of that name.
    pub async fn find_pod(&self, who: &Principal, key: &str, action: Action) -> Result<PodView, ApiError> {
        let not_found = || ApiError::not_found(format!("pod {key} not found"));
        let mut q = pod::Entity::find()
            .filter(visible_pods(who))
            .filter(pod::Column::State.ne(PodState::Deleted.as_str()));
        q = match (Uuid::parse_str(key), key.split_once('/')) {
            (Ok(id), _) => q.filter(pod::Column::Id.eq(id.to_string())),
            (Err(_), Some((team, name))) => {
                let team = self.teams.find_team(who, team, Action::Read).await.map_err(|_| not_found())?;
                q.filter(pod::Column::TeamId.eq(team.id)).filter(pod::Column::Name.eq(name))
            }
            (Err(_), None) => q.filter(pod::Column::Name.eq(key)),
        };
        let mut found = q.all(&self.db).await?;
        // A personal pod wins over team pods of the same name.
        found.sort_by_key(|p| p.team_id.is_some());
        if found.len() > 1 && found[0].team_id.is_some() {
            return Err(ApiError::conflict(
                "ambiguous_pod",
                format!("more than one team pod is named {key}; use TEAM/{key} or the pod id"),
            ));
        }
        let model = found.into_iter().next().ok_or_else(not_found)?;
        who.authorize(action, &pod_resource(&model), &format!("pod {key}"))?;
        model.try_into()
    }

    /// Pod `id` in whatever state (a deleted one too), if `who` may read
    /// it: what change notifications show.
    pub async fn pod_seen_by(&self, who: &Principal, id: Uuid) -> Result<PodView, ApiError> {
        let model = pod::Entity::find_by_id(id.to_string())
            .filter(visible_pods(who))
            .one(&self.db)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("pod {id} not found")))?;
        who.authorize(Action::Read, &pod_resource(&model), &format!("pod {id}"))?;
        model.try_into()
    }

    /// Refuses (429 `quota_exceeded`) when the tenant of a pod (the team,
    /// or the owner for a personal pod) would hold more than `quotas` with
    /// `more_pods` more pods and `more_vcpus` more vCPUs not stopped.
    async fn check_quota(&self, quotas: &crate::settings::Quotas, owner_id: &str, team_id: Option<&str>, more_pods: u32, more_vcpus: u32) -> Result<(), ApiError> {
        let q = pod::Entity::find().filter(pod::Column::State.ne(PodState::Deleted.as_str()));
        let q = match team_id {
            Some(t) => q.filter(pod::Column::TeamId.eq(t)),
            None => q.filter(pod::Column::OwnerId.eq(owner_id)).filter(pod::Column::TeamId.is_null()),
        };
        let pods = q.all(&self.db).await?;
        let vcpus: u32 = pods
            .iter()
            .filter(|p| p.state != PodState::Stopped.as_str())
            .filter_map(|p| p.tier.parse::<Tier>().ok())
            .map(|t| t.limits().vcpus)
            .sum();
        match quotas.refusal(team_id.is_some(), u32::try_from(pods.len()).unwrap_or(u32::MAX), vcpus, more_pods, more_vcpus) {
            Some(why) => Err(ApiError::too_many_requests("quota_exceeded", why)),
            None => Ok(()),
        }
    }

    /// A user's request (stop, start, delete) on one of their pods.
    pub async fn request(&self, who: &Principal, key: &str, event: PodEvent) -> Result<PodView, ApiError> {
        let needed = if event == PodEvent::DeleteRequested { Action::Delete } else { Action::Operate };
        let pod = self.find_pod(who, key, needed).await?;
        if event == PodEvent::StartRequested && pod.state == PodState::Stopped {
            // a stopped pod holds no vCPUs yet; starting it takes them
            let quotas = self.settings.quotas().await?;
            self.check_quota(&quotas, &pod.owner_id, pod.team_id.as_deref(), 0, pod.tier.limits().vcpus).await?;
        }
        let (job, action) = match event {
            PodEvent::StopRequested => (PodJob::Stop(pod.id), "pod.stop"),
            PodEvent::StartRequested => (PodJob::Start(pod.id), "pod.start"),
            PodEvent::DeleteRequested => (PodJob::Delete(pod.id), "pod.delete"),
            other => return Err(ApiError::internal(format!("{other:?} is not a user request"))),
        };
        let msg = format!("requested by {}", who.user_name);
        let updated = self.transition_as(pod.id, event, &msg, Some((who, action))).await.map_err(|e| match e {
            TransitionError::Refused(e) => refused(&pod.name, e),
            TransitionError::NotFound => ApiError::not_found(format!("pod {key} not found")),
            TransitionError::Api(e) => e,
        })?;
        // a start asked for while stopping is queued once the stop is done
        // (see `transition_as`); a second stop only nudges the first
        if !(event == PodEvent::StartRequested && updated.state == PodState::Stopping) {
            self.enqueue(&updated.host, job).await;
        }
        Ok(updated)
    }

    /// Applies `event` to pod `id` through the state machine and stores it.
    pub async fn transition(&self, id: Uuid, event: PodEvent, message: &str) -> Result<PodView, TransitionError> {
        self.transition_as(id, event, message, None).await
    }

    /// [`Pods::transition`], recording it in the audit log in the same
    /// transaction when a user caused it (`actor`: who, and the action name).
    pub async fn transition_as(
        &self,
        id: Uuid,
        event: PodEvent,
        message: &str,
        actor: Option<(&Principal, &str)>,
    ) -> Result<PodView, TransitionError> {
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await.map_err(ApiError::from)?;
        let model = pod::Entity::find_by_id(id.to_string())
            .one(&txn)
            .await
            .map_err(ApiError::from)?
            .ok_or(TransitionError::NotFound)?;
        let view = PodView::try_from(model)?;
        let from = view.state;
        let to = from.apply(event).map_err(TransitionError::Refused)?;
        let now = Utc::now();
        // A start asked for while the pod was stopping is carried out now,
        // in the same transaction: the pod goes on to `starting` and never
        // rests in `stopped` (its vCPUs stay taken, so no quota check).
        let deferred_start = match (event, to) {
            (PodEvent::SandboxStopped, PodState::Stopped) => deferred_start(&txn, id).await?,
            _ => None,
        };
        let (last, last_to) = match &deferred_start {
            Some(_) => (PodEvent::StartRequested, to.apply(PodEvent::StartRequested).map_err(TransitionError::Refused)?),
            None => (event, to),
        };
        let reason = (last_to == PodState::Error).then(|| message.to_owned());
        pod::Entity::update_many()
            .col_expr(pod::Column::State, Expr::value(last_to.as_str()))
            .col_expr(pod::Column::StateReason, Expr::value(reason.clone()))
            .col_expr(pod::Column::UpdatedAt, Expr::value(now))
            .filter(pod::Column::Id.eq(id.to_string()))
            .exec(&txn)
            .await
            .map_err(ApiError::from)?;
        let stored = insert_event(&txn, id, now, event.as_str(), Some(from), to, message).await?;
        let started = match &deferred_start {
            Some(asked) => {
                let msg = format!("{asked} while it was stopping");
                Some(insert_event(&txn, id, now, last.as_str(), Some(to), last_to, &msg).await?)
            }
            None => None,
        };
        if let Some((who, action)) = actor {
            crate::audit::append(&txn, who, action, &format!("pod:{id} ({})", view.name)).await?;
        }
        if to == PodState::Deleted {
            crate::secrets::delete_scope(&txn, "pod", &id.to_string()).await?;
        }
        txn.commit().await.map_err(ApiError::from)?;
        self.pod_lists.clear();
        drop(_w);
        self.events.publish(stored).await;
        self.metrics.transitions.get_or_create(&crate::metrics::StateLabels { state: to.as_str().into() }).inc();
        if to == PodState::Running && from == PodState::Provisioning {
            let took = (now - view.created_at).num_milliseconds() as f64 / 1000.0;
            self.metrics.provision_seconds.observe(took);
        }
        tracing::info!(pod = %id, name = %view.name, %from, %to, %message, "pod state changed");
        if let Some(started) = started {
            self.events.publish(started).await;
            self.metrics.transitions.get_or_create(&crate::metrics::StateLabels { state: last_to.as_str().into() }).inc();
            tracing::info!(pod = %id, name = %view.name, from = %to, to = %last_to, "start asked for while stopping carried out");
            self.enqueue(&view.host, PodJob::Start(id)).await;
        }
        Ok(PodView { state: last_to, state_reason: reason, updated_at: now, ..view })
    }

    /// `image` (a registry reference) pinned to the manifest digest it names
    /// now, resolved with the owner's registry credentials; errors in the
    /// user's terms (unknown image, credentials refused, no linux/amd64
    /// variant, registry unreachable). Nothing is downloaded yet.
    pub async fn pin_registry_image(&self, image: &str, owner_id: &str, team_id: Option<&str>, pod: Option<Uuid>) -> Result<String, ApiError> {
        if pinacle_oci::Reference::parse(image).is_ok_and(|r| r.registry() == "localhost" && r.repository().starts_with(pinacle_host_api::POD_BUILDS_PREFIX)) {
            return Err(ApiError::bad_request("invalid_image", format!("{image} is an image built for a pod; name a registry image, or give the pod the repository and its `image: {{build: …}}`")));
        }
        // any host can ask the registry (a pod is pinned before it is placed)
        let host = self
            .links
            .any_connected()
            .ok_or_else(|| ApiError::unavailable("host_unreachable", "no host can be reached to resolve registry images; try again later"))?;
        let env = self.vault.registry_secret_env(owner_id, team_id, pod).await?;
        host.resolve_image(image, &env).await.map_err(|e| match e {
            pinacle_host_api::HostError::Failed(m) => ApiError::bad_gateway("registry_error", m),
            other => crate::hosts::host_error(other),
        })
    }

    /// The stored configuration of pod `id` (`None`: no such pod).
    pub async fn pod_config(&self, id: Uuid) -> Result<Option<pinacle_config::PinacleConfig>, ApiError> {
        let Some(model) = pod::Entity::find_by_id(id.to_string()).one(&self.db).await? else { return Ok(None) };
        if model.config.is_empty() {
            return Ok(Some(pinacle_config::PinacleConfig::empty()));
        }
        serde_json::from_str(&model.config).map(Some).map_err(|_| corrupt("config", "(not a configuration)"))
    }

    /// Records `image`, built by the pod's host from its repository
    /// (`localhost/pinacle/pods/…@sha256:…`), as pod `id`'s image.
    pub async fn set_built_image(&self, id: Uuid, image: &str) -> Result<(), ApiError> {
        let built = pinacle_oci::Reference::parse(image)
            .is_ok_and(|r| r.registry() == "localhost" && r.repository().starts_with(pinacle_host_api::POD_BUILDS_PREFIX) && r.digest().is_some());
        if !built {
            return Err(ApiError::bad_request("invalid_image", format!("{image} is not a pinned image built for a pod")));
        }
        let _w = self.write_lock.lock().await;
        let Some(model) = pod::Entity::find_by_id(id.to_string()).one(&self.db).await? else {
            return Err(ApiError::not_found(format!("pod {id} not found")));
        };
        let mut row: pod::ActiveModel = model.into();
        row.image = Set(image.to_owned());
        row.updated_at = Set(Utc::now());
        row.update(&self.db).await?;
        self.pod_lists.clear();
        Ok(())
    }

    /// Moves the pod's repository to `commit` (a pull request's new head):
    /// its host checks it out at the pod's next start.
    pub async fn set_repository_commit(&self, id: Uuid, commit: &str) -> Result<(), ApiError> {
        let _w = self.write_lock.lock().await;
        let Some(model) = pod::Entity::find_by_id(id.to_string()).one(&self.db).await? else {
            return Err(ApiError::not_found(format!("pod {id} not found")));
        };
        let mut source: RepositorySource = serde_json::from_str(&model.repository).map_err(|_| corrupt("repository", "(json)"))?;
        source.commit = Some(commit.to_owned());
        let source = source.validated().map_err(|e| ApiError::bad_request("invalid_repository", e.to_string()))?;
        let mut m: pod::ActiveModel = model.into();
        m.repository = Set(serde_json::to_string(&source).map_err(ApiError::internal)?);
        m.update(&self.db).await?;
        self.pod_lists.clear();
        Ok(())
    }

    /// Whether the pod is a pull request's preview that runs a fork's
    /// (untrusted) code: no secrets, no agent memory.
    pub async fn untrusted_preview(&self, id: Uuid) -> Result<bool, ApiError> {
        Ok(crate::entities::github_pod::Entity::find_by_id(id.to_string()).one(&self.db).await?.is_some_and(|g| g.fork))
    }

    /// Whether the pod may have its owner's secrets and registry
    /// credentials (not a fork's pull request, nor another pull request
    /// unless `previews.secrets`).
    pub async fn secrets_allowed(&self, id: Uuid) -> Result<bool, ApiError> {
        Ok(!crate::entities::github_pod::Entity::find_by_id(id.to_string()).one(&self.db).await?.is_some_and(|g| g.fork || !g.with_secrets))
    }

    /// Forgets the cached pod lists (something they show changed).
    pub fn forget_lists(&self) {
        self.pod_lists.clear();
    }

    /// Records a note in the pod's events without changing its state (an
    /// image pull's progress) and sends it to event followers.
    pub async fn record_progress(&self, id: Uuid, message: &str) -> Result<(), ApiError> {
        let Some(model) = pod::Entity::find_by_id(id.to_string()).one(&self.db).await? else {
            return Ok(());
        };
        let state: PodState = model.state.parse().map_err(|_| corrupt("state", &model.state))?;
        // one writer at a time, like every other write (SQLite)
        let stored = {
            let _w = self.write_lock.lock().await;
            insert_event(&self.db, id, Utc::now(), "progress", Some(state), state, message).await?
        };
        self.events.publish(stored).await;
        Ok(())
    }

    /// Configures a pod from its repository's own file (`pinacle.yaml`,
    /// `.devcontainer/devcontainer.json` or `.devcontainer.json`, read by
    /// the agent after the clone), checked exactly as a request's `config`
    /// is: image (a registry image pinned by digest), processes, public
    /// ports and the configuration are stored on the pod. The tier and the
    /// runtime stay as created. `Ok(true)`: the image or the processes
    /// changed, so the sandbox must start again. A refused file changes
    /// nothing and answers `invalid_config` with every problem (file:line).
    pub async fn apply_repository_config(&self, id: Uuid, file: &str, text: &str) -> Result<bool, ApiError> {
        let Some(model) = pod::Entity::find_by_id(id.to_string()).one(&self.db).await? else {
            return Err(ApiError::not_found(format!("pod {id} not found")));
        };
        let mut config = repository_config(file, text)?;
        // the tier was chosen (and counted against quotas) at creation
        config.tier = model.tier.parse().map_err(|_| corrupt("tier", &model.tier))?;
        let definition = pinacle_config::resolve::resolve(&config);
        if definition.gpus > 0 {
            return Err(ApiError::not_supported(format!("{file}: this server has no GPU hosts; remove `gpu` from the repository's configuration")));
        }
        let processes = definition.processes.clone();
        processes.validate().map_err(|e| ApiError::bad_request("invalid_processes", format!("{file}: {e}")))?;
        let image = if config.image_build.is_some() {
            // built by the pod's host from the clone, then recorded
            // (set_built_image); until then the pod keeps its image
            model.image.clone()
        } else if pinacle_config::image_ref::is_registry_reference(&definition.image) {
            self.pin_registry_image(&definition.image, &model.owner_id, model.team_id.as_deref(), Some(id)).await?
        } else {
            definition.image.clone()
        };
        let processes_json = serde_json::to_string(&processes).map_err(ApiError::internal)?;
        let restart = image != model.image || processes_json != model.processes;
        let _w = self.write_lock.lock().await;
        let mut row: pod::ActiveModel = model.into();
        row.image = Set(image);
        row.processes = Set(processes_json);
        row.config = Set(serde_json::to_string(&config).map_err(ApiError::internal)?);
        row.public_ports = Set(pinacle_orchestrator::hostname::format_ports(&definition.public_ports));
        if let Some(t) = &config.template {
            row.template = Set(t.clone());
        }
        row.updated_at = Set(Utc::now());
        row.update(&self.db).await?;
        self.pod_lists.clear();
        Ok(restart)
    }

    /// Stored events of a pod with `seq` above `after`, oldest first.
    pub async fn events_since(&self, id: Uuid, after: i64) -> Result<Vec<PodEventView>, ApiError> {
        pod_event::Entity::find()
            .filter(pod_event::Column::PodId.eq(id.to_string()))
            .filter(pod_event::Column::Id.gt(after))
            .order_by_asc(pod_event::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(PodEventView::try_from)
            .collect()
    }

    /// Records (or refreshes) a host and what it offers: when its agent
    /// starts.
    pub async fn register_host(&self, id: &str, runtimes: &[RuntimeKind], vcpus: u32, memory_bytes: u64) -> Result<(), ApiError> {
        self.record_host(id, runtimes, vcpus, memory_bytes, None, true).await.map(|_| ())
    }

    /// A host's heartbeat: refreshes its record; `false` (nothing written)
    /// when the host was removed meanwhile (a heartbeat never brings a
    /// removed host back).
    pub async fn heartbeat_host(&self, id: &str, runtimes: &[RuntimeKind], vcpus: u32, memory_bytes: u64) -> Result<bool, ApiError> {
        self.record_host(id, runtimes, vcpus, memory_bytes, None, false).await
    }

    /// A remote host's report (its heartbeat, with its labels); `false`
    /// when the host was removed meanwhile.
    /// The credential must still be `secret_hash` (a host joined again
    /// elsewhere, or removed, answers `false`: its old link must close).
    pub async fn record_host_report(&self, id: &str, secret_hash: &str, report: &pinacle_host_api::wire::HostReport) -> Result<bool, ApiError> {
        let labels = serde_json::to_string(&report.labels).map_err(ApiError::internal)?;
        let runtimes = report.runtimes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
        let _w = self.write_lock.lock().await;
        let done = host::Entity::update_many()
            .col_expr(host::Column::Runtimes, Expr::value(runtimes))
            .col_expr(host::Column::Vcpus, Expr::value(report.vcpus as i32))
            .col_expr(host::Column::MemoryBytes, Expr::value(report.memory_bytes as i64))
            .col_expr(host::Column::Labels, Expr::value(labels))
            .col_expr(host::Column::LastSeenAt, Expr::value(Utc::now()))
            .filter(host::Column::Id.eq(id))
            .filter(host::Column::SecretHash.eq(secret_hash))
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }

    async fn record_host(&self, id: &str, runtimes: &[RuntimeKind], vcpus: u32, memory_bytes: u64, labels: Option<String>, create: bool) -> Result<bool, ApiError> {
        let _w = self.write_lock.lock().await;
        let runtimes = runtimes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
        let now = Utc::now();
        let mut model = host::ActiveModel {
            id: Set(id.to_owned()),
            runtimes: Set(runtimes),
            vcpus: Set(vcpus as i32),
            memory_bytes: Set(memory_bytes as i64),
            schedulable: Set(true),
            last_seen_at: Set(now),
            secret_hash: sea_orm::ActiveValue::NotSet,
            next_secret_hash: sea_orm::ActiveValue::NotSet,
            joined_by: sea_orm::ActiveValue::NotSet,
            labels: labels.map_or(sea_orm::ActiveValue::NotSet, Set),
            link_server: sea_orm::ActiveValue::NotSet,
        };
        if host::Entity::find_by_id(id.to_owned()).one(&self.db).await?.is_some() {
            // a heartbeat never lifts the operator's cordon
            model.schedulable = sea_orm::ActiveValue::NotSet;
            model.update(&self.db).await?;
        } else if create {
            // every column given: a new row's answer never depends on the
            // database filling defaults in
            if model.labels.is_not_set() {
                model.labels = Set("{}".into());
            }
            model.secret_hash = Set(String::new());
            model.next_secret_hash = Set(String::new());
            model.joined_by = Set(String::new());
            model.link_server = Set(String::new());
            model.insert(&self.db).await?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Locks host `host`'s row in `txn` and checks that `limits` still fit
    /// on it (PostgreSQL: `SELECT … FOR UPDATE`); 503 `no_capacity` if not.
    async fn reserve_on(&self, txn: &sea_orm::DatabaseTransaction, host: &str, limits: &TierLimits) -> Result<(), ApiError> {
        use sea_orm::QuerySelect;
        let full = || ApiError::unavailable("no_capacity", format!("host {host} was filled meanwhile; try again"));
        let row = host::Entity::find_by_id(host.to_owned()).lock_exclusive().one(txn).await?.ok_or_else(full)?;
        let live = pod::Entity::find()
            .filter(pod::Column::HostId.eq(host))
            .filter(pod::Column::State.is_not_in([PodState::Deleted.as_str(), PodState::Stopped.as_str(), PodState::Error.as_str()]))
            .all(txn)
            .await?;
        let (mut vcpus, mut memory) = (limits.vcpus, limits.memory_bytes);
        for p in &live {
            if let Ok(t) = p.tier.parse::<Tier>() {
                vcpus += t.limits().vcpus;
                memory += t.limits().memory_bytes;
            }
        }
        let cap_vcpus = (row.vcpus.max(0) as u32) * pinacle_orchestrator::placement::CPU_OVERCOMMIT;
        let cap_memory = (row.memory_bytes.max(0) as u64) * pinacle_orchestrator::placement::MEMORY_OVERCOMMIT;
        if vcpus > cap_vcpus || memory > cap_memory {
            return Err(full());
        }
        Ok(())
    }

    /// Every host with what its live pods already use.
    pub async fn host_capacities(&self) -> Result<Vec<HostCapacity>, ApiError> {
        let hosts = host::Entity::find().all(&self.db).await?;
        let live = pod::Entity::find()
            // a failed pod runs nothing: it holds no host capacity (its
            // tenant's quota still counts it)
            .filter(pod::Column::State.is_not_in([PodState::Deleted.as_str(), PodState::Stopped.as_str(), PodState::Error.as_str()]))
            .all(&self.db)
            .await?;
        let now = Utc::now();
        Ok(hosts
            .into_iter()
            .map(|h| {
                let (mut vcpus_used, mut memory_used) = (0, 0);
                for p in live.iter().filter(|p| p.host_id == h.id) {
                    if let Ok(t) = p.tier.parse::<Tier>() {
                        vcpus_used += t.limits().vcpus;
                        memory_used += t.limits().memory_bytes;
                    }
                }
                HostCapacity {
                    schedulable: self.links.host_status(&h, now).accepts_pods(),
                    runtimes: h.runtimes.split(',').filter_map(|r| r.parse().ok()).collect(),
                    vcpus: h.vcpus.max(0) as u32,
                    memory_bytes: h.memory_bytes.max(0) as u64,
                    vcpus_used,
                    memory_used,
                    labels: serde_json::from_str(&h.labels).unwrap_or_default(),
                    id: h.id,
                }
            })
            .collect())
    }

    /// Live pods placed on `host`.
    pub async fn pods_on_host(&self, host_id: &str) -> Result<Vec<PodView>, ApiError> {
        pod::Entity::find()
            .filter(pod::Column::HostId.eq(host_id))
            .filter(pod::Column::State.ne(PodState::Deleted.as_str()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(PodView::try_from)
            .collect()
    }

    /// Any pod by id, deleted ones included.
    pub async fn pod_by_id(&self, id: Uuid) -> Result<Option<PodView>, ApiError> {
        pod::Entity::find_by_id(id.to_string()).one(&self.db).await?.map(PodView::try_from).transpose()
    }
}

/// The policy's view of a stored pod.
pub fn pod_resource(m: &pod::Model) -> Resource<'_> {
    Resource::Pod { owner: &m.owner_id, team: m.team_id.as_deref() }
}

/// The rows a caller might see: personal pods they own, and pods of their
/// teams. A pre-filter for the query; the policy has the last word.
///
/// Without teams there is no `team_id IN ()` term: sea-query renders an
/// empty `IN` as `1 = 2`, and SQLite cannot use an index for an `OR` with
/// it (a full table scan per request; see `scripts/bench/api-list.sh`).
fn visible_pods(who: &Principal) -> sea_orm::Condition {
    let personal = sea_orm::Condition::all()
        .add(pod::Column::OwnerId.eq(who.user_id.clone()))
        .add(pod::Column::TeamId.is_null());
    if who.teams.is_empty() {
        return personal;
    }
    sea_orm::Condition::any()
        .add(personal)
        .add(pod::Column::TeamId.is_in(who.teams.keys().cloned().collect::<Vec<_>>()))
}

/// Why [`Pods::transition`] did not apply an event.
#[derive(Debug)]
pub enum TransitionError {
    NotFound,
    Refused(InvalidTransition),
    Api(ApiError),
}

impl From<ApiError> for TransitionError {
    fn from(e: ApiError) -> Self {
        TransitionError::Api(e)
    }
}

/// The message of a start asked for while pod `id` was stopping, if that
/// is still due: its newest start or stop request is that start (see
/// [`pinacle_orchestrator::state::start_due_after_stop`]).
async fn deferred_start<C: sea_orm::ConnectionTrait>(db: &C, id: Uuid) -> Result<Option<String>, ApiError> {
    let names = [PodEvent::StartRequested, PodEvent::StopRequested];
    let newest = pod_event::Entity::find()
        .filter(pod_event::Column::PodId.eq(id.to_string()))
        .filter(pod_event::Column::Event.is_in(names.map(PodEvent::as_str)))
        .order_by_desc(pod_event::Column::Id)
        .one(db)
        .await?;
    Ok(newest.and_then(|m| {
        let event = names.into_iter().find(|e| e.as_str() == m.event)?;
        let made_in = m.from_state.as_deref()?.parse::<PodState>().ok()?;
        pinacle_orchestrator::state::start_due_after_stop(Some((event, made_in))).then_some(m.message)
    }))
}

async fn insert_event<C: sea_orm::ConnectionTrait>(
    db: &C,
    pod_id: Uuid,
    at: DateTime<Utc>,
    event: &str,
    from: Option<PodState>,
    to: PodState,
    message: &str,
) -> Result<PodEventView, ApiError> {
    let model = pod_event::ActiveModel {
        pod_id: Set(pod_id.to_string()),
        at: Set(at),
        event: Set(event.to_owned()),
        from_state: Set(from.map(|s| s.as_str().to_owned())),
        to_state: Set(to.as_str().to_owned()),
        message: Set(message.to_owned()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    model.try_into()
}

/// `POST /api/v1/pods/{pod}/snapshots` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// A label (default: the snapshot's id).
    #[serde(default)]
    pub name: String,
}

fn snapshot_error(e: pinacle_host_api::HostError) -> ApiError {
    use pinacle_host_api::HostError;
    match e {
        HostError::Busy(m) => ApiError::conflict("invalid_state", m),
        HostError::Failed(m) => ApiError::conflict("snapshot_failed", m),
        other => crate::hosts::host_error(other),
    }
}

impl Pods {
    /// The agent in this process that runs `view`, or "not supported" for
    /// a pod on another host.
    pub(crate) fn agent_of(&self, view: &PodView) -> Result<std::sync::Arc<dyn pinacle_host_api::HostApi>, ApiError> {
        self.links.host(&view.host)
    }

    async fn audit_now(&self, who: &Principal, action: &str, target: &str) -> Result<(), ApiError> {
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        crate::audit::append(&txn, who, action, target).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The pod's snapshots, oldest first.
    pub async fn list_snapshots(&self, who: &Principal, key: &str) -> Result<Vec<pinacle_host_api::SnapshotInfo>, ApiError> {
        let view = self.find_pod(who, key, Action::Read).await?;
        self.agent_of(&view)?.snapshots(view.id).await.map_err(snapshot_error)
    }

    /// Archives a stopped pod's `/workspace` and home directory (at most
    /// [`MAX_MANUAL_SNAPSHOTS`] taken by hand per pod; automatic ones are
    /// pruned to their own count).
    pub async fn create_snapshot(&self, who: &Principal, key: &str, req: CreateSnapshot) -> Result<pinacle_host_api::SnapshotInfo, ApiError> {
        let view = self.find_pod(who, key, Action::Configure).await?;
        if req.name.chars().count() > 64 || req.name.chars().any(char::is_control) {
            return Err(ApiError::bad_request("invalid_request", "name: at most 64 printable characters"));
        }
        if view.state != PodState::Stopped {
            return Err(ApiError::conflict("invalid_state", format!("pod {} is {}; stop it first (`pinacle pod stop {}`)", view.name, view.state, view.name)));
        }
        let agent = self.agent_of(&view)?;
        // manual snapshots share the host's data filesystem: a bound per pod
        let manual = agent.snapshots(view.id).await.map_err(snapshot_error)?.iter().filter(|s| !s.auto).count();
        if manual >= MAX_MANUAL_SNAPSHOTS {
            return Err(ApiError::conflict(
                "too_many_snapshots",
                format!("pod {} has {manual} snapshots, the most a pod may keep; delete one first (`pinacle pod snapshot delete`)", view.name),
            ));
        }
        let info = agent.take_snapshot(&view.record()?, &req.name).await.map_err(snapshot_error)?;
        self.audit_now(who, "pod.snapshot.create", &format!("pod:{} ({}) snapshot {} {} bytes sha256 {}", view.id, view.name, info.id, info.size_bytes, info.sha256)).await?;
        Ok(info)
    }

    /// Replaces a stopped pod's volumes with a snapshot's.
    pub async fn restore_snapshot(&self, who: &Principal, key: &str, id: &str) -> Result<pinacle_host_api::SnapshotInfo, ApiError> {
        let view = self.find_pod(who, key, Action::Configure).await?;
        if view.state != PodState::Stopped {
            return Err(ApiError::conflict("invalid_state", format!("pod {} is {}; stop it before restoring a snapshot", view.name, view.state)));
        }
        let agent = self.agent_of(&view)?;
        let info = agent.restore_snapshot(&view.record()?, id).await.map_err(snapshot_error)?;
        self.audit_now(who, "pod.snapshot.restore", &format!("pod:{} ({}) snapshot {}", view.id, view.name, info.id)).await?;
        Ok(info)
    }

    /// Deletes a snapshot.
    pub async fn delete_snapshot(&self, who: &Principal, key: &str, id: &str) -> Result<pinacle_host_api::SnapshotInfo, ApiError> {
        let view = self.find_pod(who, key, Action::Configure).await?;
        let agent = self.agent_of(&view)?;
        let info = agent.delete_snapshot(view.id, id).await.map_err(snapshot_error)?;
        self.audit_now(who, "pod.snapshot.delete", &format!("pod:{} ({}) snapshot {}", view.id, view.name, info.id)).await?;
        Ok(info)
    }
}

#[cfg(test)]
mod repository_tests {
    use super::*;

    fn request(url: &str) -> RepositoryRequest {
        RepositoryRequest { url: url.into(), branch: None, commit: None, github: None, deploy_key: None }
    }

    #[test]
    fn repositories_are_refused_in_the_users_terms() {
        let refused = |r: RepositoryRequest| checked_repository(r, false).unwrap_err();
        let e = refused(request("https://me:ghp_x@github.com/a/b"));
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_repository"));
        assert!(e.message.contains("GIT_TOKEN") && !e.message.contains("ghp_x"), "{}", e.message);
        assert!(refused(request("file:///srv/repo")).message.contains("only http:// and https://"));
        assert!(refused(RepositoryRequest { branch: Some("x y".into()), ..request("https://h/a") }).message.contains("invalid branch"));
        assert!(refused(request(&format!("https://h/{}", "a".repeat(MAX_REPOSITORY_REQUEST)))).message.contains("bytes"));
        let ok = checked_repository(RepositoryRequest { commit: Some("ABCDEF0".into()), ..request(" https://h/a.git ") }, true).unwrap();
        assert_eq!(ok, RepositorySource { url: "https://h/a.git".into(), branch: None, commit: Some("abcdef0".into()), use_repository_config: true });
    }

    #[test]
    fn a_repositorys_file_is_read_as_pinacle_yaml_or_imported_from_devcontainer_json() {
        let c = repository_config("pinacle.yaml", "version: \"1.0\"\nenv:\n  A: b\n").unwrap();
        assert_eq!(c.env.get("A").map(String::as_str), Some("b"));
        let c = repository_config(".devcontainer/devcontainer.json", "{ // jsonc\n \"containerEnv\": {\"D\": \"e\"} }").unwrap();
        assert_eq!(c.env.get("D").map(String::as_str), Some("e"));
        let e = repository_config("pinacle.yaml", "version: \"1.0\"\nservices:\n  - postgress\n").unwrap_err();
        assert_eq!(e.code, "invalid_config");
        assert!(e.message.contains("pinacle.yaml:3"), "{}", e.message);
        let e = repository_config(".devcontainer.json", "{ \"image\": 5 }").unwrap_err();
        assert!(e.message.contains(".devcontainer.json:1"), "{}", e.message);
    }
}
