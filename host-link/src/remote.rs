//! The control plane's side of a host link: [`RemoteHost`], the
//! `dyn HostApi` of a host whose agent dialed in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pinacle_host_api::control::ControlPlane;
use pinacle_host_api::wire::{ControlAnswer, ControlCall, ControlFault, HostCall, HostReport, StreamOpen};
use pinacle_host_api::{
    BoxedStream, ExecOutput, ExecRequest, HostApi, HostError, ImageGcReport, PodKey, PodPorts, PodUsage, SnapshotInfo, StoredImage,
};
use pinacle_orchestrator::{PodJob, PodRecord};
use pinacle_supervisor::client::{ClientError, Connector, OpenFuture, SupervisorClient};
use pinacle_supervisor::protocol::Op;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::{frame, path, pipe, LinkBody, LinkError};

/// The largest call a host may make on the control plane (a repository's
/// configuration file is the largest thing in one).
pub const MAX_CALL: usize = 2 << 20;

/// The longest event or progress message a host may record (longer ones
/// are cut).
pub const MAX_MESSAGE: usize = 4096;

/// A host's calls on the control plane answered at once, at most.
pub const MAX_CALLS_IN_FLIGHT: usize = 64;

/// How a link is kept.
#[derive(Debug, Clone, Copy)]
pub struct LinkOptions {
    /// HTTP/2 pings this often; a link silent for two is closed.
    pub keep_alive: Duration,
    /// How long a one-shot call may take (a job may take longer: it waits
    /// for as long as the host works on it).
    pub call_timeout: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self { keep_alive: Duration::from_secs(5), call_timeout: Duration::from_secs(120) }
    }
}

/// A host whose agent is connected over a link: its `dyn HostApi`.
/// Clones share the link.
#[derive(Clone, Debug)]
pub struct RemoteHost(Arc<Link>);

struct Link {
    id: String,
    sender: SendRequest<LinkBody>,
    options: LinkOptions,
    ready: AtomicBool,
    report: Mutex<Option<HostReport>>,
    closed: watch::Receiver<bool>,
    close: watch::Sender<bool>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("id", &self.id).finish_non_exhaustive()
    }
}

/// An answer to a [`HostCall`] as it crosses.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Answer<T> {
    Ok(T),
    Err(HostError),
}

/// A call of the agent on the control plane, with its number.
#[derive(Serialize, Deserialize)]
pub(crate) struct Numbered<T> {
    pub id: u64,
    pub body: T,
}

/// The control plane's answer to call `id`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Reply {
    pub id: u64,
    pub result: Result<ControlAnswer, ControlFault>,
}

/// Starts a link on `io`, a connection host `host_id`'s agent opened and
/// the control plane authenticated and upgraded: the control plane speaks
/// HTTP/2 to it as a client; the agent's calls are answered from
/// `control`, for this host's pods only. The link lives until the
/// connection ends or [`RemoteHost::close`].
pub async fn accept<I>(io: I, host_id: &str, control: Arc<dyn ControlPlane>, options: LinkOptions) -> Result<RemoteHost, LinkError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let kill = Arc::new(Kill::default());
    let io = KillableIo { io, kill: kill.clone() };
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .keep_alive_interval(options.keep_alive)
        .keep_alive_timeout(options.keep_alive * 2)
        .keep_alive_while_idle(true)
        .max_concurrent_reset_streams(1024)
        .handshake::<_, LinkBody>(TokioIo::new(io))
        .await?;
    let (close, mut close_rx) = watch::channel(false);
    let (closed_tx, closed) = watch::channel(false);
    let id = host_id.to_owned();
    tokio::spawn(async move {
        tokio::select! {
            r = connection => if let Err(e) = r { tracing::info!(host = %id, error = %e, "host link ended") },
            _ = close_rx.wait_for(|c| *c) => {
                // the connection's I/O runs on its own task: end it there
                kill.kill();
                tracing::info!(host = %id, "host link closed by the control plane");
            }
        }
        let _ = closed_tx.send(true);
    });
    let host = RemoteHost(Arc::new(Link {
        id: host_id.to_owned(),
        sender,
        options,
        ready: AtomicBool::new(false),
        report: Mutex::new(None),
        closed,
        close,
    }));
    host.0.clone().serve_control(control).await?;
    if let Err(e) = host.report().await {
        host.close();
        return Err(LinkError::Io(std::io::Error::other(format!("the host's first report: {e}"))));
    }
    Ok(host)
}

impl RemoteHost {
    /// Asks the host for its report (the heartbeat) and remembers it.
    pub async fn report(&self) -> Result<HostReport, HostError> {
        let report: HostReport = self.0.call(HostCall::Report).await?;
        self.0.set_report(report.clone());
        Ok(report)
    }

    /// Hands the host `secret` as its credential from now on; `Ok` once its
    /// agent kept it.
    pub async fn renew_credential(&self, secret: &str) -> Result<(), HostError> {
        self.0.call(HostCall::RenewCredential { secret: pinacle_host_api::wire::Secret(secret.to_owned()) }).await
    }

    /// The last report the host gave.
    pub fn last_report(&self) -> Option<HostReport> {
        self.0.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Ends the link now (a host removed, a newer link of the same host).
    pub fn close(&self) {
        let _ = self.0.close.send(true);
    }

    /// Whether the link has ended.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Waits until the link ends.
    pub async fn closed(&self) {
        let mut rx = self.0.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Whether `other` is this same link.
    pub fn same_link(&self, other: &RemoteHost) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Link {
    fn set_report(&self, report: HostReport) {
        self.ready.store(report.ready, Ordering::Relaxed);
        *self.report.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report);
    }

    fn close(&self) {
        let _ = self.close.send(true);
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> HostError {
        tracing::debug!(host = %self.id, error = %why, "host link call failed");
        HostError::Unreachable(self.id.clone())
    }

    async fn send(&self, path: &str, body: LinkBody) -> Result<hyper::Response<hyper::body::Incoming>, HostError> {
        if self.is_closed() {
            return Err(HostError::Unreachable(self.id.clone()));
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://agent{path}"))
            .body(body)
            .map_err(|e| HostError::Internal(e.to_string()))?;
        let mut sender = self.sender.clone();
        sender.ready().await.map_err(|e| self.unreachable(e))?;
        let resp = sender.send_request(req).await.map_err(|e| self.unreachable(e))?;
        if resp.status() != StatusCode::OK {
            return Err(HostError::Internal(format!("host {} answered {} on the link", self.id, resp.status())));
        }
        Ok(resp)
    }

    /// A one-shot call and its answer.
    async fn call<T: DeserializeOwned>(&self, call: HostCall) -> Result<T, HostError> {
        let timeout = match call {
            // a job takes as long as the host works on it (an image pull,
            // a clone): the link's keep-alive notices a dead host
            HostCall::Handle { .. } => Duration::from_secs(24 * 3600),
            _ => self.options.call_timeout,
        };
        let body = serde_json::to_vec(&call).map_err(|e| HostError::Internal(e.to_string()))?;
        let work = async {
            let resp = self.send(path::CALL, crate::full(body)).await?;
            let bytes = http_body_util::Limited::new(resp.into_body(), frame::MAX_FRAME)
                .collect()
                .await
                .map_err(|e| self.unreachable(e))?
                .to_bytes();
            match serde_json::from_slice::<Answer<T>>(&bytes) {
                Ok(Answer::Ok(v)) => Ok(v),
                Ok(Answer::Err(e)) => Err(e),
                Err(e) => Err(HostError::Internal(format!("host {} answered something unreadable: {e}", self.id))),
            }
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| self.unreachable("no answer in time"))?
    }

    /// Opens a stream: `open` goes first; the host's answer to it comes back
    /// first, then the stream is the operation's.
    async fn open(&self, open: &StreamOpen) -> Result<BoxedStream, HostError> {
        let first = frame::encode(open).map_err(|e| HostError::Invalid(e.to_string()))?;
        let (tx, body) = pipe::outgoing();
        tx.send(Ok(Frame::data(Bytes::from(first)))).await.map_err(|e| self.unreachable(e))?;
        let resp = self.send(path::STREAM, body).await?;
        let mut stream = pipe::join(tx, resp.into_body());
        let answer: Answer<()> = tokio::time::timeout(self.options.call_timeout, frame::read(&mut stream))
            .await
            .map_err(|_| self.unreachable("no answer in time"))?
            .map_err(|e| self.unreachable(e))?
            .ok_or_else(|| self.unreachable("the stream ended before its answer"))?;
        match answer {
            Answer::Ok(()) => Ok(Box::new(stream)),
            Answer::Err(e) => Err(e),
        }
    }

    /// Opens the stream the agent's calls come on and answers them.
    async fn serve_control(self: Arc<Self>, control: Arc<dyn ControlPlane>) -> Result<(), LinkError> {
        let (tx, body) = pipe::outgoing();
        let resp = self.send(path::CONTROL, body).await.map_err(|e| LinkError::Io(std::io::Error::other(e.to_string())))?;
        let stream = pipe::join(tx, resp.into_body());
        let (mut reader, writer) = tokio::io::split(stream);
        let (reply_tx, mut reply_rx) = mpsc::channel::<Reply>(64);
        let host = self.id.clone();
        tokio::spawn(async move {
            let mut writer = writer;
            while let Some(reply) = reply_rx.recv().await {
                if frame::write(&mut writer, &reply).await.is_err() {
                    break;
                }
            }
        });
        // at most this many of a host's calls are answered at once; more
        // wait unread (a misbehaving host cannot pile up work here)
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CALLS_IN_FLIGHT));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let call = match frame::read_limited::<Numbered<ControlCall>, _>(&mut reader, MAX_CALL).await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(host = %host, error = %e, "host link: unreadable call; closing the link");
                        self.close();
                        break;
                    }
                };
                let (control, host, reply_tx) = (control.clone(), host.clone(), reply_tx.clone());
                tokio::spawn(async move {
                    let result = answer_control(control.as_ref(), &host, call.body).await;
                    let _ = reply_tx.send(Reply { id: call.id, result }).await;
                    drop(permit);
                });
            }
        });
        Ok(())
    }
}

/// The pod a call is about, if any.
fn pod_of(call: &ControlCall) -> Option<Uuid> {
    match call {
        ControlCall::PodsOnHost => None,
        ControlCall::Pod { id }
        | ControlCall::Record { id, .. }
        | ControlCall::PodEnvironment { id }
        | ControlCall::RegistryEnvironment { id }
        | ControlCall::Progress { id, .. }
        | ControlCall::Repository { id }
        | ControlCall::ApplyRepositoryConfig { id, .. }
        | ControlCall::ImageSetup { id }
        | ControlCall::SetBuiltImage { id, .. }
        | ControlCall::PlatformToken { id }
        | ControlCall::GitToken { id }
        | ControlCall::SnapshotTaken { id, .. } => Some(*id),
    }
}

/// Answers a host's call: only about that host's own pods (any other is
/// not found, as if it never existed).
pub async fn answer_control(control: &dyn ControlPlane, host: &str, call: ControlCall) -> Result<ControlAnswer, ControlFault> {
    let fault = |e: pinacle_host_api::control::ControlPlaneError| ControlFault::from(&e);
    if let Some(id) = pod_of(&call) {
        let pod = control.pod(id).await.map_err(fault)?;
        match (pod, &call) {
            (Some(p), _) if p.host == host => {
                if let ControlCall::Pod { .. } = call {
                    return Ok(ControlAnswer::Pod(Some(Box::new(p))));
                }
            }
            // a pod of another host (or none): this host must not know it
            (_, ControlCall::Pod { .. }) => return Ok(ControlAnswer::Pod(None)),
            _ => return Err(ControlFault::NotFound { pod: id }),
        }
    }
    Ok(match call {
        ControlCall::Pod { .. } => unreachable_answer(),
        ControlCall::PodsOnHost => ControlAnswer::Pods(control.pods_on_host(host).await.map_err(fault)?),
        ControlCall::Record { id, event, message } => ControlAnswer::State(control.record(id, event, cut(&message)).await.map_err(fault)?),
        ControlCall::PodEnvironment { id } => ControlAnswer::Env(control.pod_environment(id).await.map_err(fault)?),
        ControlCall::RegistryEnvironment { id } => ControlAnswer::Env(control.registry_environment(id).await.map_err(fault)?),
        ControlCall::Progress { id, message } => {
            control.progress(id, cut(&message)).await;
            ControlAnswer::Done
        }
        ControlCall::Repository { id } => ControlAnswer::Repository(control.repository(id).await.map_err(fault)?),
        ControlCall::ApplyRepositoryConfig { id, file, text } => {
            ControlAnswer::Outcome(control.apply_repository_config(id, &file, &text).await.map_err(fault)?)
        }
        ControlCall::ImageSetup { id } => ControlAnswer::ImageSetup(control.image_setup(id).await.map_err(fault)?),
        ControlCall::SetBuiltImage { id, image } => {
            control.set_built_image(id, &image).await.map_err(fault)?;
            ControlAnswer::Done
        }
        ControlCall::PlatformToken { id } => ControlAnswer::PlatformToken(control.platform_token(id).await.map_err(fault)?),
        ControlCall::GitToken { id } => ControlAnswer::PlatformToken(control.git_token(id).await.map_err(fault)?),
        ControlCall::SnapshotTaken { id, snapshot } => {
            control.snapshot_taken(id, cut(&snapshot)).await.map_err(fault)?;
            ControlAnswer::Done
        }
    })
}

/// `message` cut to [`MAX_MESSAGE`] bytes (on a character boundary).
fn cut(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// `Pod` is answered before the match (with the ownership check).
fn unreachable_answer() -> ControlAnswer {
    ControlAnswer::Pod(None)
}

/// A pod's supervisor, reached through its host's link.
#[derive(Debug)]
struct LinkSupervisor {
    host: Arc<Link>,
    pod: Uuid,
}

impl Connector for LinkSupervisor {
    fn open(&self, op: Op) -> OpenFuture<'_> {
        Box::pin(async move {
            self.host.open(&StreamOpen::Supervisor { pod: self.pod, op }).await.map_err(|e| match e {
                HostError::Unreachable(h) => ClientError::Unreachable { path: format!("host {h}"), why: "the host's link is down".into() },
                other => ClientError::Refused(other.to_string()),
            })
        })
    }
}

#[async_trait]
impl HostApi for RemoteHost {
    fn host_id(&self) -> &str {
        &self.0.id
    }

    fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed) && !self.0.is_closed()
    }

    async fn handle(&self, job: PodJob) -> Result<(), HostError> {
        self.0.call(HostCall::Handle { job }).await
    }

    async fn exec(&self, pod: &PodRecord, req: ExecRequest) -> Result<mpsc::Receiver<ExecOutput>, HostError> {
        let mut stream = self.0.open(&StreamOpen::Exec { pod: Box::new(pod.clone()), req }).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match frame::read::<ExecOutput, _>(&mut stream).await {
                    Ok(Some(out)) => {
                        let last = matches!(out, ExecOutput::Exit(_));
                        if tx.send(out).await.is_err() || last {
                            return;
                        }
                    }
                    // the link dropped mid-command: its end is unknown
                    _ => {
                        let _ = tx.send(ExecOutput::Stderr(b"pinacle: the pod's host link dropped\n".to_vec())).await;
                        let _ = tx.send(ExecOutput::Exit(255)).await;
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn logs(&self, pod: Uuid, max_bytes: u64) -> Result<String, HostError> {
        self.0.call(HostCall::Logs { pod, max_bytes }).await
    }

    async fn usage(&self, pod: Uuid) -> Result<PodUsage, HostError> {
        self.0.call(HostCall::Usage { pod }).await
    }

    async fn pod_ports(&self, pod: Uuid) -> Result<PodPorts, HostError> {
        // the pod's address means nothing here: its host opens streams
        Ok(match self.0.call::<PodPorts>(HostCall::PodPorts { pod }).await? {
            PodPorts::None => PodPorts::None,
            PodPorts::Direct(_) | PodPorts::ViaHost => PodPorts::ViaHost,
        })
    }

    async fn connect(&self, pod: Uuid, port: u16) -> Result<BoxedStream, HostError> {
        self.0.open(&StreamOpen::Connect { pod, port }).await
    }

    async fn supervisor(&self, pod: Uuid) -> Result<Option<SupervisorClient>, HostError> {
        let has: bool = self.0.call(HostCall::HasSupervisor { pod }).await?;
        Ok(has.then(|| SupervisorClient::with_connector(Arc::new(LinkSupervisor { host: self.0.clone(), pod }))))
    }

    async fn set_egress(&self, pod: Uuid, egress: &str) -> Result<bool, HostError> {
        self.0.call(HostCall::SetEgress { pod, egress: egress.to_owned() }).await
    }

    async fn has_image(&self, name: &str) -> Result<bool, HostError> {
        self.0.call(HostCall::HasImage { name: name.to_owned() }).await
    }

    async fn resolve_image(&self, image: &str, env: &[String]) -> Result<String, HostError> {
        self.0.call(HostCall::ResolveImage { image: image.to_owned(), env: env.to_vec() }).await
    }

    async fn stored_images(&self) -> Result<Vec<StoredImage>, HostError> {
        self.0.call(HostCall::StoredImages).await
    }

    async fn gc_images(&self, keep: &[String]) -> Result<ImageGcReport, HostError> {
        self.0.call(HostCall::GcImages { keep: keep.to_vec() }).await
    }

    async fn snapshots(&self, pod: Uuid) -> Result<Vec<SnapshotInfo>, HostError> {
        self.0.call(HostCall::Snapshots { pod }).await
    }

    async fn take_snapshot(&self, pod: &PodRecord, name: &str) -> Result<SnapshotInfo, HostError> {
        self.0.call(HostCall::TakeSnapshot { pod: Box::new(pod.clone()), name: name.to_owned() }).await
    }

    async fn restore_snapshot(&self, pod: &PodRecord, id: &str) -> Result<SnapshotInfo, HostError> {
        self.0.call(HostCall::RestoreSnapshot { pod: Box::new(pod.clone()), id: id.to_owned() }).await
    }

    async fn delete_snapshot(&self, pod: Uuid, id: &str) -> Result<SnapshotInfo, HostError> {
        self.0.call(HostCall::DeleteSnapshot { pod, id: id.to_owned() }).await
    }

    async fn pod_key(&self, pod: &PodRecord) -> Result<Option<PodKey>, HostError> {
        self.0.call(HostCall::PodKey { pod: Box::new(pod.clone()) }).await
    }

    async fn rotate_pod_key(&self, pod: &PodRecord) -> Result<PodKey, HostError> {
        self.0.call(HostCall::RotatePodKey { pod: Box::new(pod.clone()) }).await
    }
}

/// Numbers calls and matches answers (the agent's side of the control stream).
#[derive(Default)]
pub(crate) struct Pending {
    next: std::sync::atomic::AtomicU64,
    waiting: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Result<ControlAnswer, ControlFault>>>>,
}

impl Pending {
    pub fn add(&self) -> (u64, tokio::sync::oneshot::Receiver<Result<ControlAnswer, ControlFault>>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, tx);
        (id, rx)
    }

    pub fn answer(&self, reply: Reply) {
        if let Some(tx) = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&reply.id) {
            let _ = tx.send(reply.result);
        }
    }

    pub fn forget(&self, id: u64) {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
    }

    /// Fails every waiting call (the link dropped).
    pub fn fail_all(&self) {
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (_, tx) in waiting {
            let _ = tx.send(Err(ControlFault::Backend { message: "the link to the control plane dropped".into() }));
        }
    }
}

/// Ends a connection from outside the task that drives it.
#[derive(Default)]
struct Kill {
    killed: AtomicBool,
    read: futures::task::AtomicWaker,
    write: futures::task::AtomicWaker,
}

impl Kill {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.read.wake();
        self.write.wake();
    }

    fn check(&self) -> std::io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "host link closed"));
        }
        Ok(())
    }
}

/// An I/O that fails once its [`Kill`] is pulled.
struct KillableIo<I> {
    io: I,
    kill: Arc<Kill>,
}

impl<I: AsyncRead + Unpin> AsyncRead for KillableIo<I> {
    fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.kill.read.register(cx.waker());
        self.kill.check()?;
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for KillableIo<I> {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        self.kill.write.register(cx.waker());
        self.kill.check()?;
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.kill.check()?;
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The control plane of a relayed link: a server serving another server
/// a host link it holds makes no calls on the control plane (the host's
/// own calls go to the server holding its link), so every call is refused.
#[derive(Debug, Default)]
pub struct NoCalls;

#[async_trait]
impl ControlPlane for NoCalls {
    async fn pod(&self, id: Uuid) -> Result<Option<PodRecord>, pinacle_host_api::control::ControlPlaneError> {
        Err(pinacle_host_api::control::ControlPlaneError::NotFound(id))
    }

    async fn pods_on_host(&self, _host: &str) -> Result<Vec<PodRecord>, pinacle_host_api::control::ControlPlaneError> {
        Err(pinacle_host_api::control::ControlPlaneError::Backend("a relayed link makes no calls".into()))
    }

    async fn record(&self, id: Uuid, _: pinacle_orchestrator::PodEvent, _: &str) -> Result<pinacle_orchestrator::PodState, pinacle_host_api::control::ControlPlaneError> {
        Err(pinacle_host_api::control::ControlPlaneError::NotFound(id))
    }
}
