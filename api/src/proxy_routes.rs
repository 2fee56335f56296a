//! The proxy's [`Resolver`]: host name → pod → the caller's right to use
//! it → the pod's address. Access goes through the same principal and
//! policy as the API (acting on a pod's web service is `Exec`-level use).

use pinacle_orchestrator::{hostname, PodState};
use pinacle_host_api::{HostError, PodPorts};
use pinacle_proxy::{Credentials, Dial, DialError, PodSession, Resolver, RouteError, Upstream, UpstreamIo, Via};

use crate::pod_access::PodTokenKind;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::cache::ReadCache;
use crate::entities::{pod, team, user};
use crate::policy::{Action, Denied};
use crate::AppState;

/// Routes for the pods of this control plane under `domain`.
pub struct PodRoutes {
    pub state: AppState,
    pub domain: String,
    /// Granted routes by host and credential, with the generations of the
    /// principal and pod caches they were computed under: any change to
    /// pods, tokens, sessions or memberships in this process invalidates
    /// them at once; the time limit bounds changes made elsewhere.
    cache: ReadCache<(String, String), (u64, u64, Upstream)>,
}

impl PodRoutes {
    pub fn new(state: AppState, domain: String) -> Self {
        let cache = ReadCache::new(state.pod_lists.ttl());
        Self { state, domain, cache }
    }

    fn generations(&self) -> (u64, u64) {
        (self.state.principals.generation(), self.state.pod_lists.generation())
    }
}

#[async_trait::async_trait]
impl Resolver for PodRoutes {
    async fn resolve(&self, host: &str, credentials: Credentials<'_>) -> Result<Upstream, RouteError> {
        let credential = credentials.bearer.or(credentials.cookie);
        let key = (host.to_ascii_lowercase(), credential.map(crate::principal::hash_token).unwrap_or_default());
        if let Some((p, g, upstream)) = self.cache.get(&key) {
            if (p, g) == self.generations() {
                return Ok(upstream);
            }
        }
        let read = self.cache.begin_read();
        let (p, g) = self.generations();
        let upstream = self.resolve_fresh(host, credentials).await?;
        self.cache.insert(key, (p, g, upstream.clone()), read);
        Ok(upstream)
    }

    async fn sign_in(&self, host: &str, login_token: &str) -> Result<PodSession, RouteError> {
        let internal = |e: crate::ApiError| RouteError::Internal(e.to_string());
        let (model, _) = self.find_route(host).await?.ok_or(RouteError::NotFound)?;
        let who = self
            .state
            .pod_access.pod_token_principal(login_token, &model.id, PodTokenKind::Login)
            .await
            .map_err(internal)?
            .ok_or(RouteError::Unauthorized)?;
        allowed(&who, &model)?;
        let (value, ttl) = self.state.pod_access.mint_pod_token(&who, &model.id, PodTokenKind::Session).map_err(internal)?;
        tracing::info!(user = %who.user_name, pod = %model.name, %host, "browser signed in to a pod host");
        Ok(PodSession { value, max_age_secs: u64::try_from(ttl).unwrap_or(0) })
    }

    async fn may_issue_certificate(&self, host: &str) -> Option<String> {
        let (model, split) = self.find_route(host).await.ok()??;
        // Only the one canonical spelling (no leading zeros in a port)...
        let canonical = hostname::host_for(&split.target, &split.pod, &split.owner, &self.domain).ok()?;
        if hostname::pod_label(host, &self.domain).ok()? != hostname::pod_label(&canonical, &self.domain).ok()? {
            return None;
        }
        // ...of something the pod serves.
        routes_somewhere(&model, &split.target).then(|| model.id.clone())
    }
}

/// Whether `target` names something `model` serves: a defined service (a
/// process with a port), a port one of its processes declares, or a port
/// its owner made public. Other ports work through the proxy too, but get
/// no certificate of their own on demand (a wildcard certificate covers
/// them).
fn routes_somewhere(model: &pod::Model, target: &hostname::Target) -> bool {
    match target {
        hostname::Target::Service(_) => target_port(model, target).is_some(),
        hostname::Target::Port(port) => {
            hostname::parse_ports(&model.public_ports).is_ok_and(|ports| ports.contains(port))
                || serde_json::from_str::<pinacle_orchestrator::processes::PodProcesses>(&model.processes)
                    .is_ok_and(|p| p.processes.iter().any(|p| p.port == Some(*port)))
        }
    }
}

/// The port a host name's target means: the port itself, or the port of
/// the pod's process of that name.
fn target_port(model: &pod::Model, target: &hostname::Target) -> Option<u16> {
    match target {
        hostname::Target::Port(p) => Some(*p),
        hostname::Target::Service(name) => serde_json::from_str::<pinacle_orchestrator::processes::PodProcesses>(&model.processes)
            .ok()?
            .processes
            .into_iter()
            .find(|p| &p.name == name)
            .and_then(|p| p.port),
    }
}

fn allowed(who: &crate::principal::Principal, model: &pod::Model) -> Result<(), RouteError> {
    match crate::policy::decide(&who.subject, Action::Exec, &crate::service::pod_resource(model)) {
        Ok(()) => Ok(()),
        Err(Denied::Hidden) => Err(RouteError::NotFound),
        Err(Denied::Forbidden(why)) => Err(RouteError::Forbidden(why)),
    }
}

impl PodRoutes {
    /// The live pod a host name routes to, and how the name split.
    async fn find_route(&self, host: &str) -> Result<Option<(pod::Model, hostname::PodHost)>, RouteError> {
        let internal = |e: crate::ApiError| RouteError::Internal(e.to_string());
        let Ok(label) = hostname::pod_label(host, &self.domain) else { return Ok(None) };
        let splits = hostname::splits(&label);
        if splits.is_empty() {
            return Ok(None);
        }
        let keys: Vec<String> = splits.iter().map(|h| hostname::route_key(&h.pod, &h.owner)).collect();
        let found = pod::Entity::find()
            .filter(pod::Column::RouteKey.is_in(keys))
            .filter(pod::Column::State.ne(PodState::Deleted.as_str()))
            .all(&self.state.db)
            .await
            .map_err(|e| internal(e.into()))?;
        // Route keys of live pods never conflict, so at most one split matches.
        let [model] = found.as_slice() else { return Ok(None) };
        let Some(split) = splits.iter().find(|h| model.route_key.as_deref() == Some(hostname::route_key(&h.pod, &h.owner).as_str())).cloned() else {
            return Ok(None);
        };
        // The owner part must name the pod's real owner (user or team).
        let owner_name = match &model.team_id {
            Some(t) => team::Entity::find_by_id(t.clone()).one(&self.state.db).await.map_err(|e| internal(e.into()))?.map(|t| t.name),
            None => user::Entity::find_by_id(model.owner_id.clone()).one(&self.state.db).await.map_err(|e| internal(e.into()))?.map(|u| u.name),
        };
        if owner_name.as_deref() != Some(split.owner.as_str()) || model.name != split.pod {
            return Ok(None);
        }
        Ok(Some((model.clone(), split)))
    }

    async fn resolve_fresh(&self, host: &str, credentials: Credentials<'_>) -> Result<Upstream, RouteError> {
        let internal = |e: crate::ApiError| RouteError::Internal(e.to_string());
        let found = self.find_route(host).await?;
        // a port the pod's owner made public needs no credential
        let public = found.as_ref().is_some_and(|(m, split)| {
            target_port(m, &split.target).is_some_and(|port| hostname::parse_ports(&m.public_ports).is_ok_and(|ports| ports.contains(&port)))
        });
        let (model, split) = if public {
            found.ok_or(RouteError::NotFound)?
        } else {
            // Who first: without a valid credential nothing about pods is told.
            let who = match (credentials.bearer, credentials.cookie, &found) {
                (Some(token), _, _) => self.state.auth.principal_for_bearer(token).await.map_err(|_| RouteError::Unauthorized)?,
                (None, Some(cookie), Some((m, _))) => self
                    .state
                    .pod_access.pod_token_principal(cookie, &m.id, PodTokenKind::Session)
                    .await
                    .map_err(internal)?
                    .ok_or(RouteError::Unauthorized)?,
                _ => return Err(RouteError::Unauthorized),
            };
            let (model, split) = found.ok_or(RouteError::NotFound)?;
            allowed(&who, &model)?;
            (model, split)
        };
        if model.state != PodState::Running.as_str() {
            return Err(RouteError::NotRunning { pod: model.name, state: model.state });
        }
        let port = match (target_port(&model, &split.target), split.target) {
            (Some(port), _) => port,
            (None, hostname::Target::Service(service)) => return Err(RouteError::UnknownService { pod: model.name, service }),
            (None, hostname::Target::Port(_)) => return Err(RouteError::NotFound),
        };
        let id = uuid::Uuid::parse_str(&model.id).map_err(|e| RouteError::Internal(e.to_string()))?;
        let host = self.state.links.reach(&model.host_id).ok_or_else(|| RouteError::NotRunning {
            pod: model.name.clone(),
            state: format!("on host {}, which cannot be reached now", model.host_id),
        })?;
        let via = match host.pod_ports(id).await {
            Ok(PodPorts::Direct(ip)) => Via::Tcp(ip.into()),
            Ok(PodPorts::ViaHost) => Via::Host(std::sync::Arc::new(HostDial { state: self.state.clone(), host: model.host_id.clone(), pod: id, port })),
            Ok(PodPorts::None) => {
                return Err(RouteError::NotRunning {
                    pod: model.name.clone(),
                    state: "running without a network (start Pinacle with --pod-network bridge)".into(),
                })
            }
            Err(HostError::Unreachable(h)) => {
                return Err(RouteError::NotRunning { pod: model.name.clone(), state: format!("on host {h}, which cannot be reached now") })
            }
            Err(e) => return Err(RouteError::Internal(e.to_string())),
        };
        Ok(Upstream { port, via, pod: model.name, owner: split.owner })
    }
}

/// Opens a stream to a pod's port through its host (looked up at each
/// dial, so a host that reconnected is reached on its new link).
struct HostDial {
    state: AppState,
    host: String,
    pod: uuid::Uuid,
    port: u16,
}

impl std::fmt::Debug for HostDial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDial").field("host", &self.host).field("pod", &self.pod).field("port", &self.port).finish()
    }
}

#[async_trait::async_trait]
impl Dial for HostDial {
    fn key(&self) -> String {
        format!("{}/{}/{}", self.host, self.pod, self.port)
    }

    async fn dial(&self) -> Result<Box<dyn UpstreamIo>, DialError> {
        let host = self.state.links.reach(&self.host).ok_or_else(|| DialError::Unavailable(format!("host {} cannot be reached now", self.host)))?;
        match host.connect(self.pod, self.port).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(HostError::Refused(why)) => Err(DialError::Refused(why)),
            Err(e) => Err(DialError::Unavailable(e.to_string())),
        }
    }
}
