//! What the hosts service does.

use super::*;

/// Hosts as a service: the registry the operator manages (list, cordon,
/// drain, remove), join tokens and credentials, and the links agents open
/// (each served here while it lasts: reports, the host's job worker).
#[derive(Clone)]
pub struct Hosts {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    hosts: Arc<HostDirectory>,
    links: crate::peers::HostLinks,
    pods: crate::service::Pods,
    queue: pinacle_queue::JobQueue,
    /// What a link's agent calls.
    control: crate::control::Control,
    /// How often hosts report.
    heartbeat: std::time::Duration,
    /// How long a host's credential lives on a connected host.
    credential_renewal: std::time::Duration,
}

/// What [`Hosts`] is built from.
pub struct HostsDeps {
    pub db: sea_orm::DatabaseConnection,
    pub write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    pub hosts: Arc<HostDirectory>,
    pub links: crate::peers::HostLinks,
    pub pods: crate::service::Pods,
    pub queue: pinacle_queue::JobQueue,
    pub control: crate::control::Control,
    pub heartbeat: std::time::Duration,
    pub credential_renewal: std::time::Duration,
}

impl Hosts {
    pub fn new(d: HostsDeps) -> Self {
        Self {
            db: d.db,
            write_lock: d.write_lock,
            hosts: d.hosts,
            links: d.links,
            pods: d.pods,
            queue: d.queue,
            control: d.control,
            heartbeat: d.heartbeat,
            credential_renewal: d.credential_renewal,
        }
    }
}

impl Hosts {
    /// Every host with its status and what it holds.
    pub async fn list_hosts(&self, who: &Principal) -> Result<Vec<HostView>, ApiError> {
        who.authorize(Action::Configure, &Resource::Instance, "hosts")?;
        let hosts = host::Entity::find().order_by_asc(host::Column::Id).all(&self.db).await?;
        let capacities = self.pods.host_capacities().await?;
        let live = pod::Entity::find().filter(pod::Column::State.ne(PodState::Deleted.as_str())).all(&self.db).await?;
        let now = chrono::Utc::now();
        Ok(hosts
            .into_iter()
            .map(|h| {
                let used = capacities.iter().find(|c| c.id == h.id);
                HostView {
                    status: self.links.host_status(&h, now),
                    cordoned: !h.schedulable,
                    runtimes: h.runtimes.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect(),
                    vcpus: h.vcpus.max(0) as u32,
                    memory_bytes: h.memory_bytes.max(0) as u64,
                    vcpus_used: used.map_or(0, |c| c.vcpus_used),
                    memory_used: used.map_or(0, |c| c.memory_used),
                    pods: live.iter().filter(|p| p.host_id == h.id).count(),
                    last_seen_at: h.last_seen_at,
                    connected: self.hosts.get(&h.id).is_some()
                        || (self.links.is_shared() && !h.link_server.is_empty() && self.links.host_status(&h, now).is_reachable()),
                    link_server: Some(h.link_server.clone()).filter(|s| !s.is_empty()),
                    labels: serde_json::from_str(&h.labels).unwrap_or_default(),
                    id: h.id,
                }
            })
            .collect())
    }

    async fn host_row(&self, id: &str) -> Result<host::Model, ApiError> {
        host::Entity::find_by_id(id.to_owned()).one(&self.db).await?.ok_or_else(|| ApiError::not_found(format!("host {id} not found")))
    }

    /// Keeps new pods off host `id` (`cordon`), or lets them on again.
    pub async fn cordon_host(&self, who: &Principal, id: &str, cordon: bool) -> Result<HostView, ApiError> {
        who.authorize(Action::Configure, &Resource::Instance, "hosts")?;
        {
            let _w = self.write_lock.lock().await;
            let txn = self.db.begin().await?;
            let row = host::Entity::find_by_id(id.to_owned()).one(&txn).await?.ok_or_else(|| ApiError::not_found(format!("host {id} not found")))?;
            let mut m: host::ActiveModel = row.into();
            m.schedulable = Set(!cordon);
            m.update(&txn).await?;
            crate::audit::append(&txn, who, if cordon { "host.cordon" } else { "host.uncordon" }, &format!("host:{id}")).await?;
            txn.commit().await?;
        }
        self.host_view(who, id).await
    }

    /// Cordons host `id` and asks every pod running on it to stop; returns
    /// the host, the pods stopping and those that could not be asked now
    /// (still starting: drain again once they run).
    pub async fn drain_host(&self, who: &Principal, id: &str) -> Result<(HostView, Vec<String>, Vec<String>), ApiError> {
        self.cordon_host(who, id, true).await?;
        let pods = pod::Entity::find()
            .filter(pod::Column::HostId.eq(id))
            .filter(pod::Column::State.is_in([PodState::Running.as_str(), PodState::Provisioning.as_str(), PodState::Pending.as_str(), PodState::Starting.as_str()]))
            .all(&self.db)
            .await?;
        // every tenant's pods (the operator's request, not a user's: no
        // visibility filter); one still starting cannot stop yet and is
        // reported as not stopped
        let (mut stopped, mut not_stopped) = (Vec::new(), Vec::new());
        for p in pods {
            let Ok(pod_id) = uuid::Uuid::parse_str(&p.id) else { continue };
            match self.pods.transition(pod_id, PodEvent::StopRequested, &format!("host {id} is drained by {}", who.user_name)).await {
                Ok(view) => {
                    self.pods.enqueue(&view.host, pinacle_orchestrator::PodJob::Stop(view.id)).await;
                    stopped.push(p.name);
                }
                Err(e) => {
                    tracing::info!(pod = %p.name, error = ?e, "not stopped by the drain");
                    not_stopped.push(p.name);
                }
            }
        }
        self.audit_host(who, "host.drain", &format!("host:{id} stopping: {} not stopped: {}", stopped.join(" "), not_stopped.join(" "))).await?;
        Ok((self.host_view(who, id).await?, stopped, not_stopped))
    }

    /// Forgets host `id`; refused (409 `host_in_use`) while pods are placed
    /// on it.
    pub async fn remove_host(&self, who: &Principal, id: &str) -> Result<(), ApiError> {
        who.authorize(Action::Configure, &Resource::Instance, "hosts")?;
        let row = self.host_row(id).await?;
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let pods = pod::Entity::find().filter(pod::Column::HostId.eq(id)).filter(pod::Column::State.ne(PodState::Deleted.as_str())).count(&txn).await?;
        if pods > 0 {
            return Err(ApiError::conflict("host_in_use", format!("host {id} still holds {pods} pod(s); delete them first (or drain it)")));
        }
        host::Entity::delete_by_id(row.id).exec(&txn).await?;
        // its credential goes with the row; unused join tokens too
        host_join::Entity::delete_many().filter(host_join::Column::HostId.eq(id)).exec(&txn).await?;
        crate::audit::append(&txn, who, "host.remove", &format!("host:{id}")).await?;
        txn.commit().await?;
        // no longer reached, and its heartbeats no longer bring it back
        self.hosts.detach(id);
        Ok(())
    }

    async fn host_view(&self, who: &Principal, id: &str) -> Result<HostView, ApiError> {
        self.list_hosts(who).await?.into_iter().find(|h| h.id == id).ok_or_else(|| ApiError::not_found(format!("host {id} not found")))
    }

    async fn audit_host(&self, who: &Principal, action: &str, target: &str) -> Result<(), ApiError> {
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        crate::audit::append(&txn, who, action, target).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Adds host `id` (if new) and issues a one-time join token for its
    /// agent, valid [`JOIN_TOKEN_TTL_SECS`]. A host that joined before keeps
    /// its credential until the new token is used.
    pub async fn add_host(&self, who: &Principal, id: &str) -> Result<HostJoin, ApiError> {
        who.authorize(Action::Configure, &Resource::Instance, "hosts")?;
        if !valid_host_id(id) {
            return Err(ApiError::bad_request("invalid_host", format!("{id:?} cannot name a host: use 1 to 253 lower-case letters, digits, -, _ and ., starting and ending with a letter or digit")));
        }
        let token = crate::principal::random_secret(JOIN_PREFIX);
        let now = chrono::Utc::now();
        let expires_at = now + chrono::Duration::seconds(JOIN_TOKEN_TTL_SECS);
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        // a new token replaces any unused earlier one
        host_join::Entity::delete_many()
            .filter(host_join::Column::HostId.eq(id))
            .filter(host_join::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if host::Entity::find_by_id(id.to_owned()).one(&txn).await?.is_none() {
            // silent until its agent reports: lost, so nothing is placed on it
            host::ActiveModel {
                id: Set(id.to_owned()),
                runtimes: Set(String::new()),
                vcpus: Set(0),
                memory_bytes: Set(0),
                schedulable: Set(true),
                last_seen_at: Set(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
                secret_hash: Set(String::new()),
                next_secret_hash: Set(String::new()),
                joined_by: Set(String::new()),
                labels: Set("{}".into()),
                link_server: Set(String::new()),
            }
            .insert(&txn)
            .await?;
        }
        host_join::ActiveModel {
            token_hash: Set(crate::principal::hash_token(&token)),
            host_id: Set(id.to_owned()),
            created_by: Set(who.user_id.clone()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
            reusable: Set(false),
        }
        .insert(&txn)
        .await?;
        crate::audit::append(&txn, who, "host.add", &format!("host:{id} join token valid until {}", expires_at.to_rfc3339())).await?;
        txn.commit().await?;
        Ok(HostJoin { host: id.to_owned(), join_token: token, expires_at })
    }

    /// Exchanges a join token (once, before it expires) for the host's
    /// credential (`pnh_…`, replacing any earlier one). 401
    /// `invalid_join_token` otherwise.
    pub async fn join_host(&self, token: &str, name: Option<&str>) -> Result<HostCredential, ApiError> {
        let invalid = || ApiError::unauthorized("join token is unknown, used or expired; ask the operator for a new one (pinacle host add NAME)");
        let invalid = move || ApiError { code: "invalid_join_token", ..invalid() };
        if !token.starts_with(JOIN_PREFIX) || token.len() > 200 {
            return Err(invalid());
        }
        let now = chrono::Utc::now();
        let secret = crate::principal::random_secret(HOST_SECRET_PREFIX);
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        let join = host_join::Entity::find_by_id(crate::principal::hash_token(token))
            .one(&txn)
            .await?
            .filter(|j| j.used_at.is_none() && j.expires_at > now)
            .ok_or_else(invalid)?;
        let row = if join.reusable {
            // a pool token: the agent names its host (a node name); a name
            // another token joined, or the operator added, is not its to take
            let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
                ApiError::bad_request("host_name_required", "this join token joins many hosts: give the host's name (pinacle agent --host-name NAME)")
            })?;
            if !valid_host_id(name) {
                return Err(ApiError::bad_request("invalid_host", format!("{name:?} cannot name a host: use 1 to 253 lower-case letters, digits, -, _ and ., starting and ending with a letter or digit")));
            }
            match host::Entity::find_by_id(name.to_owned()).one(&txn).await? {
                Some(h) if h.joined_by == join.token_hash => {
                    let mut m: host::ActiveModel = h.into();
                    m.secret_hash = Set(crate::principal::hash_token(&secret));
                    m.next_secret_hash = Set(String::new());
                    m.update(&txn).await?
                }
                Some(_) => {
                    return Err(ApiError::conflict("host_exists", format!("host {name} exists and was not joined with this token; pick another name, or remove it first")))
                }
                None => {
                    host::ActiveModel {
                        id: Set(name.to_owned()),
                        runtimes: Set(String::new()),
                        vcpus: Set(0),
                        memory_bytes: Set(0),
                        schedulable: Set(true),
                        last_seen_at: Set(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
                        secret_hash: Set(crate::principal::hash_token(&secret)),
                        next_secret_hash: Set(String::new()),
                        joined_by: Set(join.token_hash.clone()),
                        labels: Set("{}".into()),
                        link_server: Set(String::new()),
                    }
                    .insert(&txn)
                    .await?
                }
            }
        } else {
            let Some(row) = host::Entity::find_by_id(join.host_id.clone()).one(&txn).await? else {
                return Err(invalid());
            };
            if let Some(name) = name.filter(|n| !n.is_empty() && *n != row.id) {
                return Err(ApiError::bad_request("host_name_mismatch", format!("this join token is for host {}, not {name}", row.id)));
            }
            // taken in one conditional update: of two joins racing (on two
            // API servers), exactly one gets the token
            let taken = host_join::Entity::update_many()
                .col_expr(host_join::Column::UsedAt, sea_orm::sea_query::Expr::value(now))
                .filter(host_join::Column::TokenHash.eq(join.token_hash.clone()))
                .filter(host_join::Column::UsedAt.is_null())
                .filter(host_join::Column::ExpiresAt.gt(now))
                .exec(&txn)
                .await?;
            if taken.rows_affected != 1 {
                return Err(invalid());
            }
            let mut m: host::ActiveModel = row.into();
            m.secret_hash = Set(crate::principal::hash_token(&secret));
            m.next_secret_hash = Set(String::new());
            m.update(&txn).await?
        };
        let system = Principal::system("", &format!("host {}", row.id), "host join");
        let how = if join.reusable { " (reusable token)" } else { "" };
        crate::audit::append(&txn, &system, "host.join", &format!("host:{}{how}", row.id)).await?;
        txn.commit().await?;
        // a new credential ends the link of the old one
        self.hosts.detach(&row.id);
        Ok(HostCredential { host: row.id, secret })
    }

    /// Issues a reusable join token (shown once): each agent that joins
    /// with it names its own host (`pinacle agent --host-name`), until it
    /// expires — for machines that come and go in numbers, such as a
    /// Kubernetes DaemonSet's nodes.
    pub async fn add_host_pool_token(&self, who: &Principal, ttl_secs: i64) -> Result<HostJoin, ApiError> {
        who.authorize(Action::Configure, &Resource::Instance, "hosts")?;
        if !(60..=MAX_POOL_TOKEN_TTL_SECS).contains(&ttl_secs) {
            return Err(ApiError::bad_request("invalid_expiry", format!("a reusable join token lives 60 s to {} days", MAX_POOL_TOKEN_TTL_SECS / 86_400)));
        }
        let token = crate::principal::random_secret(JOIN_PREFIX);
        let now = chrono::Utc::now();
        let expires_at = now + chrono::Duration::seconds(ttl_secs);
        let _w = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        host_join::ActiveModel {
            token_hash: Set(crate::principal::hash_token(&token)),
            host_id: Set(String::new()),
            created_by: Set(who.user_id.clone()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
            reusable: Set(true),
        }
        .insert(&txn)
        .await?;
        crate::audit::append(&txn, who, "host.token", &format!("reusable join token valid until {}", expires_at.to_rfc3339())).await?;
        txn.commit().await?;
        Ok(HostJoin { host: String::new(), join_token: token, expires_at })
    }

    /// The host whose credential `secret` is; 401 `invalid_host_credential`
    /// for any other (a removed host's included).
    pub async fn authenticate_host(&self, secret: &str) -> Result<String, ApiError> {
        let invalid = || ApiError { code: "invalid_host_credential", ..ApiError::unauthorized("unknown or revoked host credential") };
        if !secret.starts_with(HOST_SECRET_PREFIX) || secret.len() > 200 {
            return Err(invalid());
        }
        let hash = crate::principal::hash_token(secret);
        if let Some(h) = host::Entity::find().filter(host::Column::SecretHash.eq(hash.clone())).one(&self.db).await? {
            return Ok(h.id);
        }
        // the credential a renewal handed the agent, which kept it before
        // this control plane switched: the renewal completes now
        let _w = self.write_lock.lock().await;
        let Some(h) = host::Entity::find().filter(host::Column::NextSecretHash.eq(hash.clone())).one(&self.db).await? else {
            return Err(invalid());
        };
        host::Entity::update_many()
            .col_expr(host::Column::SecretHash, sea_orm::sea_query::Expr::value(hash.clone()))
            .col_expr(host::Column::NextSecretHash, sea_orm::sea_query::Expr::value(String::new()))
            .filter(host::Column::Id.eq(h.id.clone()))
            .filter(host::Column::NextSecretHash.eq(hash))
            .exec(&self.db)
            .await?;
        tracing::info!(host = %h.id, "host credential renewal completed by the agent's reconnect");
        Ok(h.id)
    }

    /// Renews host `host`'s credential over its `link`: a new one is valid
    /// alongside the current one (`current_hash`), the agent keeps it, then
    /// it replaces the current one. The new credential's hash; an error
    /// leaves the current credential as it was (and the new one valid
    /// until the next renewal replaces it). An error with `true`: whether
    /// the agent kept the new one is unknown (its answer was lost).
    async fn renew_credential(&self, host: &str, current_hash: &str, link: &RemoteHost) -> Result<String, (ApiError, bool)> {
        let known = |e: ApiError| (e, false);
        let secret = crate::principal::random_secret(HOST_SECRET_PREFIX);
        let next = crate::principal::hash_token(&secret);
        let staged = {
            let _w = self.write_lock.lock().await;
            host::Entity::update_many()
                .col_expr(host::Column::NextSecretHash, sea_orm::sea_query::Expr::value(next.clone()))
                .filter(host::Column::Id.eq(host))
                .filter(host::Column::SecretHash.eq(current_hash))
                .exec(&self.db)
                .await
                .map_err(|e| known(e.into()))?
        };
        if staged.rows_affected != 1 {
            return Err(known(ApiError::conflict("host_credential_replaced", format!("host {host} was removed or joined again"))));
        }
        match link.renew_credential(&secret).await {
            Ok(()) => {}
            // no answer: the agent may hold the new one or the old one
            Err(e @ HostError::Unreachable(_)) => return Err((crate::hosts::host_error(e), true)),
            // it answered: it kept nothing
            Err(e) => return Err(known(crate::hosts::host_error(e))),
        }
        let _w = self.write_lock.lock().await;
        let done = host::Entity::update_many()
            .col_expr(host::Column::SecretHash, sea_orm::sea_query::Expr::value(next.clone()))
            .col_expr(host::Column::NextSecretHash, sea_orm::sea_query::Expr::value(String::new()))
            .filter(host::Column::Id.eq(host))
            .filter(host::Column::NextSecretHash.eq(next.clone()))
            .exec(&self.db)
            .await
            .map_err(|e| (e.into(), true))?;
        if done.rows_affected != 1 {
            // the agent may have connected with it meanwhile, which
            // completed the renewal (see `authenticate_host`)
            let now = host::Entity::find_by_id(host.to_owned()).one(&self.db).await.map_err(|e| (e.into(), true))?;
            if now.is_none_or(|h| h.secret_hash != next) {
                return Err(known(ApiError::conflict("host_credential_replaced", format!("host {host} was removed or joined again"))));
            }
        }
        Ok(next)
    }

    /// The running pod `key` (if `who` may take `action` on it) and its
    /// supervisor: what terminals, files and the SSH gateway reach it through.
    pub async fn pod_supervisor(&self, who: &Principal, key: &str, action: Action) -> Result<(crate::service::PodView, pinacle_supervisor::client::SupervisorClient), ApiError> {
        let pod = self.pods.find_pod(who, key, action).await?;
        if pod.state != PodState::Running {
            return Err(ApiError::conflict("pod_not_running", format!("pod {} is {}; start it first", pod.name, pod.state)));
        }
        let host = self.links.host(&pod.host)?;
        let client = host.supervisor(pod.id).await.map_err(crate::hosts::host_error)?.ok_or_else(|| {
            ApiError::conflict("no_supervisor", format!("pod {} runs without a supervisor; restart it (pinacle pod stop/start)", pod.name))
        })?;
        Ok((pod, client))
    }

    /// Serves the link host `host`'s agent just opened (`io`, upgraded and
    /// authenticated): the host is reachable through it, its job queue is
    /// worked here and it reports every heartbeat, until the link ends or
    /// the host is removed.
    pub async fn run_host_link<I>(&self, host: String, secret_hash: String, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let control: Arc<dyn pinacle_host_api::control::ControlPlane> = Arc::new(self.control.clone());
        let options = pinacle_host_link::remote::LinkOptions { keep_alive: self.heartbeat.max(std::time::Duration::from_millis(500)), ..Default::default() };
        let link = match pinacle_host_link::remote::accept(io, &host, control, options).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(host = %host, error = %e, "host link failed to start");
                return;
            }
        };
        let report = link.last_report().unwrap_or_default();
        if report.host != host {
            tracing::warn!(host = %host, reported = %report.host, "refusing a link whose agent calls itself another host; closing it");
            link.close();
            return;
        }
        match self.pods.record_host_report(&host, &secret_hash, &report).await {
            Ok(true) => {}
            Ok(false) => {
                link.close();
                return;
            }
            Err(e) => tracing::warn!(host = %host, error = %e.message, "recording the host's report failed"),
        }
        self.hosts.attach_link(link.clone());
        self.links.set_link_server(&host, true).await;
        tracing::info!(host = %host, protocol = report.protocol, runtimes = ?report.runtimes, "host connected");
        // a credential lives at most one renewal interval on a connected
        // host: renewed as the link opens, then every interval
        let mut secret_hash = secret_hash;
        let mut renew_at = tokio::time::Instant::now();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (queue, worker) = (self.queue.clone(), Arc::new(link.clone()));
        let jobs = tokio::spawn(async move {
            if let Err(e) = queue.run_worker(worker, stop_rx).await {
                tracing::error!(error = %e, "job worker of a remote host stopped");
            }
        });
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.heartbeat) => {}
                _ = link.closed() => break,
            }
            if tokio::time::Instant::now() >= renew_at {
                match self.renew_credential(&host, &secret_hash, &link).await {
                    Ok(renewed) => {
                        secret_hash = renewed;
                        renew_at = tokio::time::Instant::now() + self.credential_renewal;
                        tracing::info!(host = %host, "host credential renewed");
                    }
                    Err((e, true)) => {
                        // the agent holds the old credential or the new
                        // one, both valid now: its reconnect settles which
                        // (a later renewal on this link could strand it)
                        tracing::warn!(host = %host, error = %e.message, "renewing the host's credential got no answer; closing the link so the agent reconnects");
                        link.close();
                        break;
                    }
                    Err((e, false)) => {
                        // the agent kept nothing: tried again a few heartbeats later
                        renew_at = tokio::time::Instant::now() + self.heartbeat * 10;
                        tracing::warn!(host = %host, error = %e.message, "renewing the host's credential failed; the current one stays");
                    }
                }
            }
            match link.report().await {
                Ok(r) => match self.pods.record_host_report(&host, &secret_hash, &r).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(host = %host, "host removed, or its credential replaced; closing its link");
                        link.close();
                        break;
                    }
                    Err(e) => tracing::warn!(host = %host, error = %e.message, "recording a heartbeat failed"),
                },
                Err(e) => tracing::debug!(host = %host, error = %e, "no heartbeat"),
            }
        }
        let _ = stop.send(true);
        let abort = jobs.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(10), jobs).await.is_err() {
            abort.abort();
        }
        if self.hosts.link(&host).is_none_or(|l| l.same_link(&link)) {
            self.links.set_link_server(&host, false).await;
        }
        self.hosts.detach_link(&link);
        tracing::info!(host = %host, "host link ended");
    }
}
