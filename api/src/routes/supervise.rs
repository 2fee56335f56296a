//! What a pod's supervisor answers, through the API: its processes and
//! their logs, listening ports, files, and interactive terminals.

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pinacle_supervisor::client::{ClientError, ExecEvent, ExecInput, SupervisorClient};
use pinacle_supervisor::protocol::{Control, ExecSpec, Op, Response as SvResponse, WindowSize};
use serde::Deserialize;

use crate::principal::Principal;
use crate::error::{ApiPath, ApiQuery};
use crate::policy::Action;
use crate::service::PodView;
use crate::{ApiError, AppState};

/// Largest file served or accepted through the API.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

fn supervisor_error(e: ClientError) -> ApiError {
    match e {
        ClientError::Refused(m) if m.contains("No such file") || m.starts_with("no process") => ApiError::not_found(m),
        ClientError::Refused(m) => ApiError::bad_request("refused", m),
        other => ApiError::unavailable("supervisor_unavailable", format!("the pod's supervisor did not answer: {other}")),
    }
}

/// The running pod `key` and its supervisor (see
/// [`crate::hosts::ops::Hosts::pod_supervisor`]).
pub async fn supervisor(s: &AppState, who: &Principal, key: &str, action: Action) -> Result<(PodView, SupervisorClient), ApiError> {
    s.host_registry.pod_supervisor(who, key, action).await
}

/// `GET /pods/{pod}/processes`: install steps and processes.
pub async fn processes(State(s): State<AppState>, Extension(who): Extension<Principal>, ApiPath(key): ApiPath<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, client) = supervisor(&s, &who, &key, Action::Read).await?;
    match client.call(Op::Status).await.map_err(supervisor_error)? {
        SvResponse::Status { install, processes } => Ok(Json(serde_json::json!({ "install": install, "processes": processes }))),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// `GET /pods/{pod}/ports`: TCP ports something listens on in the pod.
pub async fn ports(State(s): State<AppState>, Extension(who): Extension<Principal>, ApiPath(key): ApiPath<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let (pod, client) = supervisor(&s, &who, &key, Action::Read).await?;
    match client.call(Op::Ports).await.map_err(supervisor_error)? {
        SvResponse::Ports { ports } => {
            let site = s.proxy_site.get().cloned();
            let owner = s.pods.pod_owner_name(&pod).await?;
            let ports: Vec<_> = ports
                .into_iter()
                .map(|p| {
                    // loopback-only servers cannot be reached through the proxy
                    let reachable = !(p.address.starts_with("127.") || p.address == "::1");
                    let url = site
                        .as_ref()
                        .filter(|_| reachable)
                        .map(|site| site.origin(&format!("{}-{}", p.port, pinacle_orchestrator::hostname::route_key(&pod.name, &owner))));
                    serde_json::json!({ "port": p.port, "address": p.address, "public": pod.public_ports.contains(&p.port), "url": url })
                })
                .collect();
            Ok(Json(serde_json::json!({ "ports": ports })))
        }
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessLogsQuery {
    pub tail_bytes: Option<u64>,
}

/// `GET /pods/{pod}/processes/{name}/logs`: the end of a process's log
/// (`install` for the install steps).
pub async fn process_logs(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((key, process)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ProcessLogsQuery>,
) -> Result<Response, ApiError> {
    let (_, client) = supervisor(&s, &who, &key, Action::Read).await?;
    let tail_bytes = q.tail_bytes.unwrap_or(64 * 1024).min(4 * 1024 * 1024);
    match client.call(Op::Logs { process, tail_bytes }).await.map_err(supervisor_error)? {
        SvResponse::Logs { data } => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], data).into_response()),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Absolute in the pod, or relative to `/workspace`.
    pub path: String,
}

/// `GET /pods/{pod}/files?path=DIR`: a directory's entries.
pub async fn list_files(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, client) = supervisor(&s, &who, &key, Action::Exec).await?;
    match client.call(Op::ListFiles { path: q.path }).await.map_err(supervisor_error)? {
        SvResponse::Files { entries } => Ok(Json(serde_json::json!({ "entries": entries }))),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// Files moving through the API at once, at most; more wait (each holds
/// a few MiB at most: files stream in chunks, never whole).
pub const MAX_FILE_TRANSFERS: usize = 16;
/// How long a file transfer waits for its turn before a 503.
const TRANSFER_WAIT: std::time::Duration = std::time::Duration::from_secs(300);
/// Files up to this size are read once and answered from memory; larger
/// ones are read twice (once for the entity tag, once to stream).
const SMALL_FILE: usize = 1024 * 1024;

static TRANSFERS: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_FILE_TRANSFERS)));

/// A place among the [`MAX_FILE_TRANSFERS`].
async fn transfer_permit() -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(TRANSFER_WAIT, TRANSFERS.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(ApiError::unavailable("busy", "too many file transfers at once; try again shortly")),
    }
}

/// How long a transfer may make no progress (a client that reads or sends
/// nothing) before it gives its place back.
const TRANSFER_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// For a download: `permit` goes back once the answer makes no progress
/// for [`TRANSFER_STALL`] (a client that stops reading cannot hold a place
/// for good; what it holds meanwhile is one chunk), or once it is dropped.
/// Returns the progress counter to tick and the permit's holder.
#[allow(clippy::type_complexity)]
fn release_when_stalled(
    permit: tokio::sync::OwnedSemaphorePermit,
) -> (std::sync::Arc<std::sync::atomic::AtomicU64>, std::sync::Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>) {
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let holder = std::sync::Arc::new(std::sync::Mutex::new(Some(permit)));
    let (watched, weak) = (progress.clone(), std::sync::Arc::downgrade(&holder));
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(TRANSFER_STALL).await;
            let Some(holder) = weak.upgrade() else { return };
            let now = watched.load(std::sync::atomic::Ordering::Relaxed);
            if now == last {
                holder.lock().unwrap_or_else(|p| p.into_inner()).take();
                return;
            }
            last = now;
        }
    });
    (progress, holder)
}

fn too_large(path: &str) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("{path} is larger than {MAX_FILE_BYTES} bytes"))
}

/// A SHA-256 as an entity tag (quoted hex).
fn quoted(digest: impl AsRef<[u8]>) -> String {
    format!("\"{}\"", hex::encode(digest))
}

/// A file's entity tag, read chunk by chunk; with its bytes when it is at
/// most [`SMALL_FILE`] long.
async fn tag_file(client: &SupervisorClient, path: &str) -> Result<(String, Option<Vec<u8>>), ClientError> {
    use sha2::Digest;
    let mut reader = client.open_file(path).await?;
    let (mut hash, mut total, mut small) = (sha2::Sha256::new(), 0usize, Some(Vec::new()));
    while let Some(chunk) = reader.next_chunk().await? {
        total += chunk.len();
        if total > MAX_FILE_BYTES {
            return Err(ClientError::Refused(format!("{path} is larger than {MAX_FILE_BYTES} bytes")));
        }
        hash.update(&chunk);
        small = small.filter(|b| b.len() + chunk.len() <= SMALL_FILE).map(|mut b| {
            b.extend_from_slice(&chunk);
            b
        });
    }
    Ok((quoted(hash.finalize()), small))
}

/// `GET /pods/{pod}/files/content?path=FILE`: a file's bytes, with its
/// entity tag. A large file streams; if it changes while it streams, the
/// answer is cut off (never bytes that do not match the tag).
pub async fn read_file(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> Result<Response, ApiError> {
    let (_, client) = supervisor(&s, &who, &key, Action::Exec).await?;
    let permit = transfer_permit().await?;
    let (etag, small) = tag_file(&client, &q.path).await.map_err(supervisor_error)?;
    let headers = [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::ETAG, etag.clone())];
    if let Some(data) = small {
        return Ok((headers, Body::from(data)).into_response());
    }
    let reader = client.open_file(&q.path).await.map_err(supervisor_error)?;
    struct Pass {
        reader: pinacle_supervisor::client::FileReader,
        hash: sha2::Sha256,
        total: usize,
        etag: String,
        done: bool,
        /// Ticks with every chunk handed on (see [`release_when_stalled`]).
        progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
        _permit: std::sync::Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
    }
    use sha2::Digest;
    let (progress, permit) = release_when_stalled(permit);
    let pass = Pass { reader, hash: sha2::Sha256::new(), total: 0, etag, done: false, progress, _permit: permit };
    let body = futures::stream::unfold(pass, |mut p| async move {
        if p.done {
            return None;
        }
        let next = match p.reader.next_chunk().await {
            Ok(Some(chunk)) => {
                p.progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                p.total += chunk.len();
                p.hash.update(&chunk);
                if p.total > MAX_FILE_BYTES {
                    Err(std::io::Error::other("the file grew past the limit while it was read"))
                } else {
                    Ok(Some(Bytes::from(chunk)))
                }
            }
            Ok(None) if quoted(p.hash.clone().finalize()) == p.etag => Ok(None),
            Ok(None) => Err(std::io::Error::other("the file changed while it was read")),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        match next {
            Ok(Some(chunk)) => Some((Ok(chunk), p)),
            Ok(None) => None,
            Err(e) => {
                p.done = true;
                Some((Err(e), p))
            }
        }
    });
    Ok((headers, Body::from_stream(body)).into_response())
}

/// A file's entity tag: the SHA-256 of its bytes, quoted.
pub fn etag_of(data: &[u8]) -> String {
    use sha2::Digest;
    quoted(sha2::Sha256::digest(data))
}

/// What a write expects of the file it replaces (`If-Match` /
/// `If-None-Match: *`), so an editor never overwrites changes it has not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WritePrecondition {
    None,
    /// The file must have one of these entity tags (`*`: exist).
    Matches(Vec<String>),
    /// The file must not exist.
    Absent,
}

impl WritePrecondition {
    /// From the request's headers.
    pub fn from_headers(h: &axum::http::HeaderMap) -> Self {
        let list = |name| {
            h.get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
                .map(|v| v.split(',').map(|t| t.trim().trim_start_matches("W/").to_owned()).collect::<Vec<_>>())
        };
        if let Some(tags) = list(header::IF_MATCH) {
            return WritePrecondition::Matches(tags);
        }
        if list(header::IF_NONE_MATCH).is_some_and(|t| t.iter().any(|t| t == "*")) {
            return WritePrecondition::Absent;
        }
        WritePrecondition::None
    }

    /// Whether a file with entity tag `current` (`None`: no file) may be
    /// replaced.
    pub fn allows(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (WritePrecondition::None, _) => true,
            (WritePrecondition::Absent, current) => current.is_none(),
            (WritePrecondition::Matches(_), None) => false,
            (WritePrecondition::Matches(tags), Some(tag)) => tags.iter().any(|t| t == "*" || t == tag),
        }
    }

    /// Whether the current file must be looked at.
    fn needs_current(&self) -> bool {
        *self != WritePrecondition::None
    }

    /// Whether only the file's existence matters (no tag to compare).
    fn existence_only(&self) -> bool {
        match self {
            WritePrecondition::None | WritePrecondition::Absent => true,
            WritePrecondition::Matches(tags) => tags.iter().any(|t| t == "*"),
        }
    }
}

/// `PUT /pods/{pod}/files/content?path=FILE`: replaces a file (atomically).
/// The body streams to the pod in chunks; `If-Match` compares the current
/// file's tag, computed chunk by chunk.
pub async fn write_file(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use futures::StreamExt;
    use sha2::Digest;
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_FILE_BYTES as u64)
    {
        return Err(too_large(&q.path));
    }
    let (pod, client) = supervisor(&s, &who, &key, Action::Exec).await?;
    let _permit = transfer_permit().await?;
    let condition = WritePrecondition::from_headers(&headers);
    if condition.needs_current() {
        // Checked just before the write: a change in between can still be
        // lost, but never one the editor could have seen for a while.
        let current = if condition.existence_only() {
            // `*`: whether the file exists is all that matters
            match client.open_file(&q.path).await.map_err(supervisor_error)?.next_chunk().await {
                Ok(_) => Some(String::new()),
                Err(ClientError::Refused(m)) if m.contains("No such file") => None,
                Err(e) => return Err(supervisor_error(e)),
            }
        } else {
            match tag_file(&client, &q.path).await {
                Ok((tag, _)) => Some(tag),
                Err(ClientError::Refused(m)) if m.contains("No such file") => None,
                Err(e) => return Err(supervisor_error(e)),
            }
        };
        if !condition.allows(current.as_deref().map(|t| if t.is_empty() { "*" } else { t })) {
            let message = match current {
                None => format!("{} no longer exists; save again to create it", q.path),
                Some(_) if condition == WritePrecondition::Absent => format!("{} already exists", q.path),
                Some(_) => format!("{} changed on disk since it was read; reload it or overwrite", q.path),
            };
            return Err(ApiError::new(StatusCode::PRECONDITION_FAILED, "file_changed", message));
        }
    }
    // Dropped before `finish` (a failure, a body cut short, one too
    // large), the writer leaves the file as it was.
    let mut writer = client.create_file(&q.path, None).await.map_err(supervisor_error)?;
    let (mut hash, mut total) = (sha2::Sha256::new(), 0usize);
    let mut chunks = body.into_data_stream();
    loop {
        // a client that stops sending gives its place back
        let chunk = match tokio::time::timeout(TRANSFER_STALL, chunks.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", format!("the upload sent nothing for {} s", TRANSFER_STALL.as_secs()))),
        };
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_request", format!("reading the request body failed: {e}")))?;
        total += chunk.len();
        if total > MAX_FILE_BYTES {
            return Err(too_large(&q.path));
        }
        hash.update(&chunk);
        writer.write(&chunk).await.map_err(supervisor_error)?;
    }
    writer.finish().await.map_err(supervisor_error)?;
    s.audit.record(&who, "pod.file.write", &format!("pod:{} ({}) {}", pod.id, pod.name, q.path)).await?;
    Ok((StatusCode::NO_CONTENT, [(header::ETAG, quoted(hash.finalize()))]).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalQuery {
    #[serde(default)]
    pub rows: Option<u16>,
    #[serde(default)]
    pub cols: Option<u16>,
    /// The program (default: bash if the image has it, else sh).
    #[serde(default)]
    pub command: Option<String>,
    /// A terminal session id (`[A-Za-z0-9_-]{1,64}`): the shell outlives
    /// the connection and a later connection with the same id re-attaches.
    #[serde(default)]
    pub session: Option<String>,
}

/// Largest WebSocket message (and frame) a terminal accepts: a bigger one
/// closes the socket with [`CLOSE_TOO_BIG`].
pub const MAX_TERMINAL_MESSAGE: usize = 1024 * 1024;
/// Keystrokes go to the shell in pieces of at most this many bytes, so the
/// queue to the pod (64 deep) holds at most 4 MiB per terminal.
const STDIN_PIECE: usize = 64 * 1024;
/// Close code for a message over [`MAX_TERMINAL_MESSAGE`] (RFC 6455 1009).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code once the caller's credential or access is gone (4403, as
/// graphql-ws uses it).
pub const CLOSE_ACCESS_LOST: u16 = 4403;

/// `GET /pods/{pod}/terminal` (WebSocket): a shell on a pseudo-terminal
/// (with `session`, one that survives the connection).
/// Binary messages carry keystrokes in and screen output out; text
/// messages carry JSON: `{"resize":{"rows":R,"cols":C}}` or
/// `{"signal":N}` in, `{"exit":{"code":N}}` out just before the close.
/// Messages over [`MAX_TERMINAL_MESSAGE`] close it with 1009; it closes
/// with 4403 once the caller's credential stops working or they may no
/// longer exec in the pod.
pub async fn terminal(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<TerminalQuery>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if q.session.as_deref().is_some_and(|id| !pinacle_supervisor::protocol::valid_session_id(id)) {
        return Err(ApiError::bad_request("invalid_request", "session must be 1 to 64 letters, digits, - or _"));
    }
    let token = crate::routes::middleware::bearer_of(&headers)?;
    let (pod, client) = supervisor(&s, &who, &key, Action::Exec).await?;
    let size = WindowSize { rows: q.rows.unwrap_or(24).clamp(1, 1000), cols: q.cols.unwrap_or(80).clamp(1, 1000) };
    let argv = match q.command.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(cmd) => vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.to_owned()],
        None => vec!["/bin/sh".to_owned(), "-c".to_owned(), "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi".to_owned()],
    };
    s.audit.record(&who, "pod.terminal", &format!("pod:{} ({})", pod.id, pod.name)).await?;
    let spec = ExecSpec { argv, env: Vec::new(), cwd: None, tty: Some(size), session: q.session };
    let (input, events) = client.exec(spec).await.map_err(supervisor_error)?;
    let lost = crate::routes::pods::until_access_lost(s.clone(), token, pod.id, Action::Exec);
    // a browser offers `pinacle.terminal` beside its `bearer.` credential
    Ok(ws
        .protocols(["pinacle.terminal"])
        .max_message_size(MAX_TERMINAL_MESSAGE)
        .max_frame_size(MAX_TERMINAL_MESSAGE)
        .on_upgrade(move |socket| bridge(socket, input, events, lost)))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = axum::extract::ws::CloseFrame { code, reason: reason.chars().take(100).collect::<String>().into() };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), socket.send(Message::Close(Some(frame)))).await;
}

async fn bridge(
    mut socket: WebSocket,
    input: tokio::sync::mpsc::Sender<ExecInput>,
    mut events: tokio::sync::mpsc::Receiver<ExecEvent>,
    mut lost: std::pin::Pin<Box<dyn std::future::Future<Output = ApiError> + Send>>,
) {
    loop {
        tokio::select! {
            e = &mut lost => {
                tracing::info!(reason = %e.message, "closing a terminal: its caller lost access");
                close(&mut socket, CLOSE_ACCESS_LOST, &e.message).await;
                return;
            }
            event = events.recv() => match event {
                Some(ExecEvent::Stdout(d)) | Some(ExecEvent::Stderr(d)) => {
                    if socket.send(Message::Binary(d.into())).await.is_err() {
                        return;
                    }
                }
                Some(ExecEvent::Exit(status)) => {
                    let _ = socket.send(Message::Text(serde_json::json!({"exit": status}).to_string().into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                None => return,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(d))) => {
                    for piece in d.chunks(STDIN_PIECE) {
                        if input.send(ExecInput::Stdin(piece.to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(control) = serde_json::from_str::<Control>(t.as_str()) {
                        let _ = input.send(ExecInput::Control(control)).await;
                    }
                }
                Some(Ok(_)) => {}
                // a message over the limit (or a broken frame): say why
                Some(Err(e)) => {
                    tracing::info!(error = %e, "closing a terminal after a bad message");
                    close(&mut socket, CLOSE_TOO_BIG, &format!("messages are limited to {MAX_TERMINAL_MESSAGE} bytes")).await;
                    return;
                }
                // the browser left: dropping input and events ends the shell
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_preconditions_compare_entity_tags() {
        let tag = etag_of(b"hello");
        assert_eq!(tag, "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"");
        let mut h = axum::http::HeaderMap::new();
        assert!(WritePrecondition::from_headers(&h).allows(None));
        h.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
        let absent = WritePrecondition::from_headers(&h);
        assert!(absent.allows(None) && !absent.allows(Some(&tag)));
        h.insert(header::IF_MATCH, format!("W/\"x\", {tag}").parse().unwrap());
        let matches = WritePrecondition::from_headers(&h);
        assert!(matches.allows(Some(&tag)) && !matches.allows(Some("\"other\"")) && !matches.allows(None));
        assert!(!matches.existence_only());
        h.insert(header::IF_MATCH, "*".parse().unwrap());
        let any = WritePrecondition::from_headers(&h);
        assert!(any.existence_only() && any.allows(Some("*")) && !any.allows(None));
    }
}
