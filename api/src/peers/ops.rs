//! What the host-links service does.

use super::*;

impl HostLinks {
    /// A host this server reaches directly, any (for what every host can
    /// do, such as asking a registry).
    pub fn any_connected(&self) -> Option<Arc<dyn HostApi>> {
        self.hosts.all().into_iter().next()
    }

    /// Whether several servers share the hosts (this one advertises an
    /// address to the others).
    pub fn is_shared(&self) -> bool {
        self.advertise_url.is_some()
    }

    /// Host `id` when it is the agent in this process.
    pub fn local(&self, id: &str) -> Option<Arc<dyn HostApi>> {
        self.hosts.local(id)
    }

    /// The status of `h` at `now` (see [`pinacle_orchestrator::host`]).
    pub fn host_status(&self, h: &host::Model, now: chrono::DateTime<chrono::Utc>) -> pinacle_orchestrator::host::HostStatus {
        let silent = (now - h.last_seen_at).num_seconds().max(0) as u64;
        pinacle_orchestrator::host::host_status(h.schedulable, silent, self.heartbeat.as_secs_f64().ceil() as u64)
    }

    /// The host `id` (a pod's `host`), or 503 `host_unreachable`.
    pub fn host(&self, id: &str) -> Result<Arc<dyn HostApi>, ApiError> {
        self.reach(id).ok_or_else(|| ApiError::unavailable("host_unreachable", format!("host {id} cannot be reached now; try again later")))
    }

    /// The host `id` as this server reaches it: its own agent or a link
    /// ending here, else (with several servers) through the server holding
    /// its link; `None` when it cannot be reached from here at all.
    pub fn reach(&self, id: &str) -> Option<Arc<dyn HostApi>> {
        if let Some(h) = self.hosts.get(id) {
            return Some(h);
        }
        self.advertise_url.as_ref()?;
        Some(Arc::new(PeerHost { links: self.clone(), host: id.to_owned() }))
    }

    /// Records that this server holds (or no longer holds) `host`'s link.
    pub(crate) async fn set_link_server(&self, host: &str, held: bool) {
        let Some(me) = self.advertise_url.clone() else { return };
        let update = host::Entity::update_many().filter(host::Column::Id.eq(host));
        let done = if held {
            update.col_expr(host::Column::LinkServer, sea_orm::sea_query::Expr::value(me)).exec(&self.db).await
        } else {
            // only if no other server took it meanwhile
            update
                .filter(host::Column::LinkServer.eq(me))
                .col_expr(host::Column::LinkServer, sea_orm::sea_query::Expr::value(String::new()))
                .exec(&self.db)
                .await
        };
        if let Err(e) = done {
            tracing::warn!(host, error = %e, "recording the server of a host's link failed");
        }
    }

    /// Whether `presented` is the credential servers relay links with.
    pub fn is_peer(&self, presented: &str) -> bool {
        self.master_key.verify_derived(RELAY_PURPOSE, presented)
    }

    /// Relays the link of `host` (which must end here) on `io`, upgraded
    /// for another server: the same protocol, this server standing in for
    /// the agent.
    pub fn relayable(&self, host: &str) -> Result<RemoteHost, ApiError> {
        self.hosts.link(host).ok_or_else(|| ApiError::not_found(format!("host {host}'s link does not end at this server")))
    }

    /// The link of `host` relayed from the server holding it.
    async fn relayed(&self, host: &str) -> Result<RemoteHost, HostError> {
        let unreachable = || HostError::Unreachable(host.to_owned());
        let row = host::Entity::find_by_id(host.to_owned()).one(&self.db).await.map_err(|e| HostError::Internal(e.to_string()))?.ok_or_else(unreachable)?;
        let server = row.link_server;
        if server.is_empty() || Some(&server) == self.advertise_url.as_ref() {
            return Err(unreachable());
        }
        if let Some(link) = self.relays.get(host, &server) {
            return Ok(link);
        }
        let _dialing = self.relays.dialing.lock().await;
        if let Some(link) = self.relays.get(host, &server) {
            return Ok(link);
        }
        let authority = authority(&server)?;
        let io = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(&authority))
            .await
            .map_err(|_| unreachable())?
            .map_err(|_| unreachable())?;
        let _ = io.set_nodelay(true);
        let id: String = form_urlencoded::byte_serialize(host.as_bytes()).collect();
        let path = format!("/api/v1/internal/hosts/{id}/relay?v={}", pinacle_host_api::PROTOCOL_VERSION);
        let credential = self.master_key.derive(RELAY_PURPOSE);
        let upgrade = pinacle_host_link::agent::upgrade_at(io, &authority, &path, &credential);
        let upgraded = tokio::time::timeout(std::time::Duration::from_secs(10), upgrade).await.map_err(|_| unreachable())?.map_err(|e| {
            tracing::warn!(host, server = %server, error = %e, "relaying a host's link from another server failed");
            unreachable()
        })?;
        let options = LinkOptions { keep_alive: self.heartbeat.max(std::time::Duration::from_millis(500)), ..Default::default() };
        let link = pinacle_host_link::remote::accept(upgraded, host, Arc::new(NoCalls), options).await.map_err(|e| {
            tracing::warn!(host, server = %server, error = %e, "relayed link failed to start");
            unreachable()
        })?;
        self.relays.put(host, &server, link.clone());
        Ok(link)
    }
}

/// A host whose link ends at another server.
struct PeerHost {
    links: HostLinks,
    host: String,
}

impl PeerHost {
    async fn link(&self) -> Result<RemoteHost, HostError> {
        self.links.relayed(&self.host).await
    }
}

#[async_trait]
impl HostApi for PeerHost {
    fn host_id(&self) -> &str {
        &self.host
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn handle(&self, job: PodJob) -> Result<(), HostError> {
        self.link().await?.handle(job).await
    }

    async fn exec(&self, pod: &PodRecord, req: ExecRequest) -> Result<mpsc::Receiver<ExecOutput>, HostError> {
        self.link().await?.exec(pod, req).await
    }

    async fn logs(&self, pod: Uuid, max_bytes: u64) -> Result<String, HostError> {
        self.link().await?.logs(pod, max_bytes).await
    }

    async fn usage(&self, pod: Uuid) -> Result<PodUsage, HostError> {
        self.link().await?.usage(pod).await
    }

    async fn pod_ports(&self, pod: Uuid) -> Result<PodPorts, HostError> {
        self.link().await?.pod_ports(pod).await
    }

    async fn connect(&self, pod: Uuid, port: u16) -> Result<BoxedStream, HostError> {
        self.link().await?.connect(pod, port).await
    }

    async fn supervisor(&self, pod: Uuid) -> Result<Option<pinacle_supervisor::client::SupervisorClient>, HostError> {
        self.link().await?.supervisor(pod).await
    }

    async fn set_egress(&self, pod: Uuid, egress: &str) -> Result<bool, HostError> {
        self.link().await?.set_egress(pod, egress).await
    }

    async fn has_image(&self, name: &str) -> Result<bool, HostError> {
        self.link().await?.has_image(name).await
    }

    async fn resolve_image(&self, image: &str, env: &[String]) -> Result<String, HostError> {
        self.link().await?.resolve_image(image, env).await
    }

    async fn stored_images(&self) -> Result<Vec<StoredImage>, HostError> {
        self.link().await?.stored_images().await
    }

    async fn gc_images(&self, keep: &[String]) -> Result<ImageGcReport, HostError> {
        self.link().await?.gc_images(keep).await
    }

    async fn snapshots(&self, pod: Uuid) -> Result<Vec<SnapshotInfo>, HostError> {
        self.link().await?.snapshots(pod).await
    }

    async fn take_snapshot(&self, pod: &PodRecord, name: &str) -> Result<SnapshotInfo, HostError> {
        self.link().await?.take_snapshot(pod, name).await
    }

    async fn restore_snapshot(&self, pod: &PodRecord, id: &str) -> Result<SnapshotInfo, HostError> {
        self.link().await?.restore_snapshot(pod, id).await
    }

    async fn delete_snapshot(&self, pod: Uuid, id: &str) -> Result<SnapshotInfo, HostError> {
        self.link().await?.delete_snapshot(pod, id).await
    }

    async fn pod_key(&self, pod: &PodRecord) -> Result<Option<PodKey>, HostError> {
        self.link().await?.pod_key(pod).await
    }

    async fn rotate_pod_key(&self, pod: &PodRecord) -> Result<PodKey, HostError> {
        self.link().await?.rotate_pod_key(pod).await
    }
}
