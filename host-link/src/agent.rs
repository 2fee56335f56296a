//! The agent's side of a host link: it dials out, upgrades, and answers
//! the control plane's calls and streams ([`serve`]); its own calls on the
//! control plane go through [`LinkControl`] on the same connection.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pinacle_host_api::control::{ControlPlane, ControlPlaneError, ImageSetup, RepositoryConfigOutcome};
use pinacle_host_api::wire::{ControlAnswer, ControlCall, HostCall, HostReport, StreamOpen};
use pinacle_host_api::{HostApi, HostError};
use pinacle_orchestrator::pod::RepositorySource;
use pinacle_orchestrator::{PodEvent, PodRecord, PodState};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::remote::{Answer, Numbered, Pending, Reply};
use crate::{frame, path, pipe, LinkBody, LinkError};

/// What the agent reports on each heartbeat.
pub type Reporter = Arc<dyn Fn() -> HostReport + Send + Sync>;

/// The agent's [`ControlPlane`]: each call travels over the current link
/// (waiting a while for one when the link is down).
pub struct LinkControl {
    current: Mutex<Option<(u64, mpsc::Sender<Numbered<ControlCall>>)>>,
    pending: Pending,
    connected: watch::Sender<u64>,
    /// How long a call waits for a link.
    wait: Duration,
}

impl std::fmt::Debug for LinkControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkControl").finish_non_exhaustive()
    }
}

impl LinkControl {
    /// A control plane reached over links as they come; calls wait up to
    /// `wait` for one.
    pub fn new(wait: Duration) -> Arc<Self> {
        Arc::new(Self { current: Mutex::new(None), pending: Pending::default(), connected: watch::channel(0).0, wait })
    }

    fn sender(&self) -> Option<mpsc::Sender<Numbered<ControlCall>>> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|(_, tx)| tx.clone())
    }

    async fn call(&self, call: ControlCall) -> Result<ControlAnswer, ControlPlaneError> {
        let down = || ControlPlaneError::Backend("the control plane cannot be reached now (the host link is down)".into());
        let tx = match self.sender() {
            Some(tx) => tx,
            None => {
                let mut rx = self.connected.subscribe();
                let _ = tokio::time::timeout(self.wait, rx.wait_for(|_| self.sender().is_some())).await;
                self.sender().ok_or_else(down)?
            }
        };
        let (id, answer) = self.pending.add();
        if tx.send(Numbered { id, body: call }).await.is_err() {
            self.pending.forget(id);
            return Err(down());
        }
        match answer.await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(fault)) => Err(fault.into()),
            Err(_) => Err(down()),
        }
    }

    fn unexpected(answer: &ControlAnswer) -> ControlPlaneError {
        ControlPlaneError::Backend(format!("the control plane answered the wrong kind: {answer:?}"))
    }
}

#[async_trait]
impl ControlPlane for LinkControl {
    async fn pod(&self, id: Uuid) -> Result<Option<PodRecord>, ControlPlaneError> {
        match self.call(ControlCall::Pod { id }).await? {
            ControlAnswer::Pod(p) => Ok(p.map(|p| *p)),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn pods_on_host(&self, _host: &str) -> Result<Vec<PodRecord>, ControlPlaneError> {
        // the control plane answers for the host the link belongs to
        match self.call(ControlCall::PodsOnHost).await? {
            ControlAnswer::Pods(p) => Ok(p),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn record(&self, id: Uuid, event: PodEvent, message: &str) -> Result<PodState, ControlPlaneError> {
        match self.call(ControlCall::Record { id, event, message: message.to_owned() }).await? {
            ControlAnswer::State(s) => Ok(s),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn pod_environment(&self, id: Uuid) -> Result<Vec<String>, ControlPlaneError> {
        match self.call(ControlCall::PodEnvironment { id }).await? {
            ControlAnswer::Env(e) => Ok(e),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn platform_token(&self, id: Uuid) -> Result<Option<pinacle_host_api::wire::PlatformToken>, ControlPlaneError> {
        match self.call(ControlCall::PlatformToken { id }).await? {
            ControlAnswer::PlatformToken(t) => Ok(t),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn git_token(&self, id: Uuid) -> Result<Option<pinacle_host_api::wire::PlatformToken>, ControlPlaneError> {
        match self.call(ControlCall::GitToken { id }).await? {
            ControlAnswer::PlatformToken(t) => Ok(t),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn snapshot_taken(&self, id: Uuid, snapshot: &str) -> Result<(), ControlPlaneError> {
        match self.call(ControlCall::SnapshotTaken { id, snapshot: snapshot.to_owned() }).await? {
            ControlAnswer::Done => Ok(()),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn registry_environment(&self, id: Uuid) -> Result<Vec<String>, ControlPlaneError> {
        match self.call(ControlCall::RegistryEnvironment { id }).await? {
            ControlAnswer::Env(e) => Ok(e),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn progress(&self, id: Uuid, message: &str) {
        if let Err(e) = self.call(ControlCall::Progress { id, message: message.to_owned() }).await {
            tracing::warn!(pod = %id, error = %e, "progress note not recorded");
        }
    }

    async fn repository(&self, id: Uuid) -> Result<Option<RepositorySource>, ControlPlaneError> {
        match self.call(ControlCall::Repository { id }).await? {
            ControlAnswer::Repository(r) => Ok(r),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn apply_repository_config(&self, id: Uuid, file: &str, text: &str) -> Result<RepositoryConfigOutcome, ControlPlaneError> {
        match self.call(ControlCall::ApplyRepositoryConfig { id, file: file.to_owned(), text: text.to_owned() }).await? {
            ControlAnswer::Outcome(o) => Ok(o),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn image_setup(&self, id: Uuid) -> Result<ImageSetup, ControlPlaneError> {
        match self.call(ControlCall::ImageSetup { id }).await? {
            ControlAnswer::ImageSetup(s) => Ok(s),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn set_built_image(&self, id: Uuid, image: &str) -> Result<(), ControlPlaneError> {
        match self.call(ControlCall::SetBuiltImage { id, image: image.to_owned() }).await? {
            ControlAnswer::Done => Ok(()),
            other => Err(Self::unexpected(&other)),
        }
    }
}

/// Everything the agent's side of a link answers with.
#[derive(Clone)]
pub struct AgentSide {
    pub host: Arc<dyn HostApi>,
    pub control: Arc<LinkControl>,
    pub report: Reporter,
    /// What the agent presents on connecting, renewed by the control plane.
    pub credential: Credential,
}

/// Keeps a renewed credential where the agent finds it on its next start.
pub type KeepCredential = Arc<dyn Fn(&str) -> std::io::Result<()> + Send + Sync>;

/// The agent's credential: presented on each connect, replaced (and kept
/// first) when the control plane renews it.
#[derive(Clone)]
pub struct Credential {
    current: Arc<Mutex<String>>,
    keep: KeepCredential,
}

/// The longest credential a control plane may hand an agent.
const MAX_CREDENTIAL: usize = 200;

impl Credential {
    pub fn new(secret: String, keep: KeepCredential) -> Self {
        Self { current: Arc::new(Mutex::new(secret)), keep }
    }

    /// What the agent presents now.
    pub fn current(&self) -> String {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Keeps `secret`, then presents it from now on.
    fn renew(&self, secret: &str) -> Result<(), HostError> {
        if secret.is_empty() || secret.len() > MAX_CREDENTIAL || !secret.chars().all(|c| c.is_ascii_graphic()) {
            return Err(HostError::Invalid("a host credential is 1 to 200 printable characters".into()));
        }
        (self.keep)(secret).map_err(|e| HostError::Failed(format!("keeping the renewed credential: {e}")))?;
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = secret.to_owned();
        Ok(())
    }
}

/// Serves one link on `io` (already upgraded) until it ends.
pub async fn serve<I>(io: I, side: AgentSide) -> Result<(), LinkError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let side = side.clone();
        async move { Ok::<_, Infallible>(route(req, side).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_concurrent_streams(4096)
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .serve_connection(TokioIo::new(io), service)
        .await?;
    Ok(())
}

fn respond(status: StatusCode, body: LinkBody) -> Response<LinkBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

fn answer<T: Serialize>(result: Result<T, HostError>) -> Response<LinkBody> {
    let body = match result {
        Ok(v) => serde_json::to_vec(&Answer::Ok(v)),
        Err(e) => serde_json::to_vec(&Answer::<()>::Err(e)),
    };
    match body {
        Ok(b) => respond(StatusCode::OK, crate::full(b)),
        Err(e) => respond(StatusCode::INTERNAL_SERVER_ERROR, crate::full(e.to_string())),
    }
}

async fn route(req: Request<Incoming>, side: AgentSide) -> Response<LinkBody> {
    match req.uri().path() {
        path::CALL => {
            let bytes = match http_body_util::Limited::new(req.into_body(), frame::MAX_FRAME).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return respond(StatusCode::BAD_REQUEST, crate::full(e.to_string())),
            };
            match serde_json::from_slice::<HostCall>(&bytes) {
                Ok(call) => dispatch(&side, call).await,
                // a call this agent does not know (a newer control plane)
                Err(e) => answer::<()>(Err(HostError::Unsupported(format!("this host does not know that call: {e}")))),
            }
        }
        path::STREAM => {
            let (tx, body) = pipe::outgoing();
            let stream = pipe::join(tx, req.into_body());
            tokio::spawn(run_stream(stream, side));
            respond(StatusCode::OK, body)
        }
        path::CONTROL => {
            let (tx, body) = pipe::outgoing();
            let stream = pipe::join(tx, req.into_body());
            tokio::spawn(run_control(stream, side.control));
            respond(StatusCode::OK, body)
        }
        _ => respond(StatusCode::NOT_FOUND, crate::full("no such path on a host link")),
    }
}

async fn dispatch(side: &AgentSide, call: HostCall) -> Response<LinkBody> {
    let host = side.host.as_ref();
    match call {
        HostCall::Report => answer(Ok((side.report)())),
        HostCall::Handle { job } => answer(host.handle(job).await),
        HostCall::Logs { pod, max_bytes } => answer(host.logs(pod, max_bytes).await),
        HostCall::Usage { pod } => answer(host.usage(pod).await),
        HostCall::PodPorts { pod } => answer(host.pod_ports(pod).await),
        HostCall::HasSupervisor { pod } => answer(host.supervisor(pod).await.map(|s| s.is_some())),
        HostCall::SetEgress { pod, egress } => answer(host.set_egress(pod, &egress).await),
        HostCall::HasImage { name } => answer(host.has_image(&name).await),
        HostCall::ResolveImage { image, env } => answer(host.resolve_image(&image, &env).await),
        HostCall::StoredImages => answer(host.stored_images().await),
        HostCall::GcImages { keep } => answer(host.gc_images(&keep).await),
        HostCall::Snapshots { pod } => answer(host.snapshots(pod).await),
        HostCall::TakeSnapshot { pod, name } => answer(host.take_snapshot(&pod, &name).await),
        HostCall::RestoreSnapshot { pod, id } => answer(host.restore_snapshot(&pod, &id).await),
        HostCall::DeleteSnapshot { pod, id } => answer(host.delete_snapshot(pod, &id).await),
        HostCall::PodKey { pod } => answer(host.pod_key(&pod).await),
        HostCall::RotatePodKey { pod } => answer(host.rotate_pod_key(&pod).await),
        HostCall::RenewCredential { secret } => {
            let kept = side.credential.renew(&secret.0);
            if kept.is_ok() {
                tracing::info!("host credential renewed by the control plane");
            }
            answer(kept)
        }
    }
}

async fn run_stream(mut stream: crate::pipe::LinkStream, side: AgentSide) {
    let open = match frame::read::<StreamOpen, _>(&mut stream).await {
        Ok(Some(open)) => open,
        Ok(None) => return,
        Err(e) => {
            let _ = frame::write(&mut stream, &Answer::<()>::Err(HostError::Invalid(e.to_string()))).await;
            return;
        }
    };
    let host = side.host.as_ref();
    match open {
        StreamOpen::Exec { pod, req } => match host.exec(&pod, req).await {
            Ok(mut rx) => {
                if frame::write(&mut stream, &Answer::Ok(())).await.is_err() {
                    return;
                }
                while let Some(out) = rx.recv().await {
                    if frame::write(&mut stream, &out).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = frame::write(&mut stream, &Answer::<()>::Err(e)).await;
            }
        },
        StreamOpen::Supervisor { pod, op } => {
            let opened = match host.supervisor(pod).await {
                Ok(Some(client)) => client.open(op).await.map_err(|e| HostError::NotRunning(e.to_string())),
                Ok(None) => Err(HostError::NotRunning(format!("pod {pod} runs without a supervisor"))),
                Err(e) => Err(e),
            };
            splice(stream, opened).await;
        }
        StreamOpen::Connect { pod, port } => splice(stream, host.connect(pod, port).await).await,
    }
}

/// Answers the open, then copies bytes both ways until both sides end.
/// The directions end on their own: a write that fails one way (a command
/// that exited and closed its socket while the caller still sent its end
/// of input) does not cut the other, so what the pod said last, an exec's
/// exit status among it, still reaches the caller. (`copy_bidirectional`
/// gives up on both at the first error.)
async fn splice(mut stream: crate::pipe::LinkStream, opened: Result<pinacle_host_api::BoxedStream, HostError>) {
    match opened {
        Ok(inner) => {
            if frame::write(&mut stream, &Answer::Ok(())).await.is_ok() {
                copy_both_ways(stream, inner).await;
            }
        }
        Err(e) => {
            let _ = frame::write(&mut stream, &Answer::<()>::Err(e)).await;
        }
    }
}

/// Copies `a`'s bytes to `b` and `b`'s to `a`, each direction until its
/// reader ends or fails, then shuts that direction's writer down; returns
/// when both are done.
pub(crate) async fn copy_both_ways<A, B>(a: A, b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    tokio::join!(copy_one_way(a_read, b_write), copy_one_way(b_read, a_write));
}

/// Every byte read is written before the next read, so a read that fails
/// (a socket closed with input unread answers ECONNRESET after its last
/// bytes) loses nothing already read; `tokio::io::copy` reads ahead while
/// a write waits and gives up with what it holds.
async fn copy_one_way<R, W>(mut from: R, mut to: W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn run_control(stream: crate::pipe::LinkStream, control: Arc<LinkControl>) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Numbered<ControlCall>>(64);
    let generation = {
        let mut current = control.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = current.as_ref().map_or(1, |(g, _)| g + 1);
        *current = Some((generation, tx));
        generation
    };
    control.connected.send_replace(generation);
    let writing = async {
        while let Some(call) = rx.recv().await {
            if frame::write(&mut writer, &call).await.is_err() {
                break;
            }
        }
    };
    let reading = async {
        while let Ok(Some(reply)) = frame::read::<Reply, _>(&mut reader).await {
            control.pending.answer(reply);
        }
    };
    tokio::select! {
        _ = writing => {}
        _ = reading => {}
    }
    {
        let mut current = control.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
    control.pending.fail_all();
}

/// How long dialing and upgrading may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an agent could not upgrade its connection to a link.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The control plane refused the credential (a removed host, a
    /// replaced credential): trying again cannot help.
    #[error("the control plane refused this host's credential ({0}): join again with a new token (pinacle host add)")]
    Refused(String),
    #[error("the control plane answered {0}")]
    Status(String),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Upgrades `io`, a fresh connection to the control plane at `authority`,
/// to a link, authenticated by the host's `secret`.
pub async fn upgrade<I>(io: I, authority: &str, secret: &str) -> Result<TokioIo<hyper::upgrade::Upgraded>, UpgradeError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let path = format!("{}?v={}", crate::CONNECT_PATH, pinacle_host_api::PROTOCOL_VERSION);
    upgrade_at(io, authority, &path, secret).await
}

/// [`upgrade`] at another path of the control plane (a server relaying a
/// host link it holds to another server).
pub async fn upgrade_at<I>(io: I, authority: &str, path: &str, secret: &str) -> Result<TokioIo<hyper::upgrade::Upgraded>, UpgradeError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, LinkBody>(TokioIo::new(io)).await.map_err(LinkError::from)?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let req = Request::builder()
        .method(hyper::Method::GET)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, crate::UPGRADE)
        .body(crate::full(bytes::Bytes::new()))
        .map_err(|e| UpgradeError::Status(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(LinkError::from)?;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let upgraded = hyper::upgrade::on(resp).await.map_err(LinkError::from)?;
        return Ok(TokioIo::new(upgraded));
    }
    let text = http_body_util::Limited::new(resp.into_body(), 4096)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(UpgradeError::Refused(format!("{status}: {}", text.trim())));
    }
    Err(UpgradeError::Status(format!("{status}: {}", text.trim())))
}

/// Keeps a link up: dials with `dial`, upgrades, serves, and dials again
/// after a pause when the link drops, until `shutdown` or a refused
/// credential (returned).
pub async fn run<D, F, I>(
    dial: D,
    authority: String,
    side: AgentSide,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), UpgradeError>
where
    D: Fn() -> F + Send,
    F: Future<Output = std::io::Result<I>> + Send,
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut pause = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let attempt = async {
            // a control plane (or a balancer in front) that accepts and
            // never answers must not hold the agent forever
            let link = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let io = dial().await.map_err(LinkError::from)?;
                upgrade(io, &authority, &side.credential.current()).await
            })
            .await
            .map_err(|_| UpgradeError::Status(format!("no answer in {} s", CONNECT_TIMEOUT.as_secs())))??;
            tracing::info!(server = %authority, "connected to the control plane");
            serve(link, side.clone()).await?;
            Ok::<(), UpgradeError>(())
        };
        let started = tokio::time::Instant::now();
        tokio::select! {
            r = attempt => match r {
                Ok(()) => tracing::warn!(server = %authority, "the link to the control plane ended; connecting again"),
                Err(e @ UpgradeError::Refused(_)) => return Err(e),
                Err(e) => tracing::warn!(server = %authority, error = %e, "no link to the control plane; trying again"),
            },
            _ = shutdown.changed() => return Ok(()),
        }
        // a link that lasted a while starts the pauses over
        if started.elapsed() > Duration::from_secs(30) {
            pause = Duration::from_millis(200);
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests;
