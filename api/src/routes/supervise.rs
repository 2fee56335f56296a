//! What a pod's supervisor answers, through the API: its processes and
//! their logs, listening ports, files, and interactive terminals.

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pinacle_orchestrator::PodState;
use pinacle_supervisor::client::{ClientError, ExecEvent, ExecInput, SupervisorClient};
use pinacle_supervisor::protocol::{Control, ExecSpec, Op, Response as SvResponse, WindowSize};
use serde::Deserialize;

use crate::auth::Principal;
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

/// The running pod `key` (if `who` may take `action` on it) and its
/// supervisor: what terminals, files and the SSH gateway reach it through.
pub async fn supervisor(s: &AppState, who: &Principal, key: &str, action: Action) -> Result<(PodView, SupervisorClient), ApiError> {
    let pod = s.find_pod(who, key, action).await?;
    if pod.state != PodState::Running {
        return Err(ApiError::conflict("pod_not_running", format!("pod {} is {}; start it first", pod.name, pod.state)));
    }
    let agent = s
        .local_agent
        .get()
        .filter(|a| a.host_id() == pod.host)
        .ok_or_else(|| ApiError::not_supported(format!("pods on remote host {} are not reachable from this server yet", pod.host)))?;
    let client = agent.supervisor_of(pod.id).ok_or_else(|| {
        ApiError::conflict("no_supervisor", format!("pod {} runs without a supervisor; restart it (pinacle pod stop/start)", pod.name))
    })?;
    Ok((pod, client))
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
            let owner = s.pod_owner_name(&pod).await?;
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

/// `GET /pods/{pod}/files/content?path=FILE`: a file's bytes.
pub async fn read_file(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> Result<Response, ApiError> {
    let (_, client) = supervisor(&s, &who, &key, Action::Exec).await?;
    let data = client.read_file(&q.path, MAX_FILE_BYTES).await.map_err(supervisor_error)?;
    let etag = etag_of(&data);
    Ok(([(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::ETAG, etag)], Body::from(data)).into_response())
}

/// A file's entity tag: the SHA-256 of its bytes, quoted.
pub fn etag_of(data: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", hex::encode(sha2::Sha256::digest(data)))
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

    /// Whether a file with `current` contents (`None`: no file) may be replaced.
    pub fn allows(&self, current: Option<&[u8]>) -> bool {
        match (self, current) {
            (WritePrecondition::None, _) => true,
            (WritePrecondition::Absent, current) => current.is_none(),
            (WritePrecondition::Matches(_), None) => false,
            (WritePrecondition::Matches(tags), Some(data)) => {
                let tag = etag_of(data);
                tags.iter().any(|t| t == "*" || *t == tag)
            }
        }
    }
}

/// `PUT /pods/{pod}/files/content?path=FILE`: replaces a file (atomically).
pub async fn write_file(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (pod, client) = supervisor(&s, &who, &key, Action::Exec).await?;
    let condition = WritePrecondition::from_headers(&headers);
    if condition != WritePrecondition::None {
        // Checked just before the write: a change in between can still be
        // lost, but never one the editor could have seen for a while.
        let current = match client.read_file(&q.path, MAX_FILE_BYTES).await {
            Ok(data) => Some(data),
            Err(ClientError::Refused(m)) if m.contains("No such file") => None,
            Err(e) => return Err(supervisor_error(e)),
        };
        if !condition.allows(current.as_deref()) {
            let message = match current {
                None => format!("{} no longer exists; save again to create it", q.path),
                Some(_) if condition == WritePrecondition::Absent => format!("{} already exists", q.path),
                Some(_) => format!("{} changed on disk since it was read; reload it or overwrite", q.path),
            };
            return Err(ApiError::new(StatusCode::PRECONDITION_FAILED, "file_changed", message));
        }
    }
    client.write_file(&q.path, &body, None).await.map_err(supervisor_error)?;
    s.audit(&who, "pod.file.write", &format!("pod:{} ({}) {}", pod.id, pod.name, q.path)).await?;
    Ok((StatusCode::NO_CONTENT, [(header::ETAG, etag_of(&body))]).into_response())
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

/// `GET /pods/{pod}/terminal` (WebSocket): a shell on a pseudo-terminal
/// (with `session`, one that survives the connection).
/// Binary messages carry keystrokes in and screen output out; text
/// messages carry JSON: `{"resize":{"rows":R,"cols":C}}` or
/// `{"signal":N}` in, `{"exit":{"code":N}}` out just before the close.
pub async fn terminal(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<TerminalQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if q.session.as_deref().is_some_and(|id| !pinacle_supervisor::protocol::valid_session_id(id)) {
        return Err(ApiError::bad_request("invalid_request", "session must be 1 to 64 letters, digits, - or _"));
    }
    let (pod, client) = supervisor(&s, &who, &key, Action::Exec).await?;
    let size = WindowSize { rows: q.rows.unwrap_or(24).clamp(1, 1000), cols: q.cols.unwrap_or(80).clamp(1, 1000) };
    let argv = match q.command.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(cmd) => vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.to_owned()],
        None => vec!["/bin/sh".to_owned(), "-c".to_owned(), "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi".to_owned()],
    };
    s.audit(&who, "pod.terminal", &format!("pod:{} ({})", pod.id, pod.name)).await?;
    let spec = ExecSpec { argv, env: Vec::new(), cwd: None, tty: Some(size), session: q.session };
    let (input, events) = client.exec(spec).await.map_err(supervisor_error)?;
    // a browser offers `pinacle.terminal` beside its `bearer.` credential
    Ok(ws.protocols(["pinacle.terminal"]).on_upgrade(move |socket| bridge(socket, input, events)))
}

async fn bridge(mut socket: WebSocket, input: tokio::sync::mpsc::Sender<ExecInput>, mut events: tokio::sync::mpsc::Receiver<ExecEvent>) {
    loop {
        tokio::select! {
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
                    if input.send(ExecInput::Stdin(d.to_vec())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(control) = serde_json::from_str::<Control>(t.as_str()) {
                        let _ = input.send(ExecInput::Control(control)).await;
                    }
                }
                Some(Ok(_)) => {}
                // the browser left: dropping input and events ends the shell
                Some(Err(_)) | None => return,
            },
        }
    }
}
