//! `/api/v1/pods` and friends.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use futures::Stream;
use pinacle_host_api::{ExecOutput, ExecRequest};
use pinacle_config::templates::Template;
use pinacle_orchestrator::{PodEvent, PodState, Tier};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::principal::Principal;
use crate::policy::Action;
use crate::error::{ApiJson, ApiPath, ApiQuery};
use crate::service::{CreatePodRequest, PodView};
use crate::{ApiError, AppState};

pub async fn me(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(serde_json::json!({
        "id": who.user_id,
        "name": who.user_name,
        "admin": who.is_admin(),
        "scope": who.scope,
        "session": who.session_id,
        "teams": s.teams.list_teams(&who).await?,
    })))
}

pub async fn templates() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "templates": Template::known() }))
}

/// `GET /api/v1/schemas/pinacle.json`: the JSON Schema of `pinacle.yaml` (public).
pub async fn schema() -> Json<serde_json::Value> {
    Json(pinacle_config::schema::schema())
}

/// `POST /api/v1/config/validate` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// The `pinacle.yaml` text.
    pub config: String,
    /// Its name in problems (default `pinacle.yaml`).
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub strict: bool,
}

/// Checks a `pinacle.yaml` without creating anything: 400 `invalid_config`
/// with every problem, or the file's warnings and what a pod from it runs.
pub async fn validate_config(ApiJson(req): ApiJson<ValidateConfig>) -> Result<Json<serde_json::Value>, ApiError> {
    let (config, warnings) = crate::service::read_config(&req.config, req.file.as_deref(), req.strict)?;
    let def = pinacle_config::resolve::resolve(&config);
    Ok(Json(serde_json::json!({
        "valid": true,
        "warnings": warnings,
        "config": config,
        "resolved": {
            "image": def.image,
            "tier": def.tier,
            "limits": def.tier.limits(),
            "install": def.processes.install,
            "processes": def.processes.processes,
            "env": def.processes.env.iter().filter_map(|kv| kv.split_once('=').map(|(k, _)| k)).collect::<Vec<_>>(),
            "secrets": def.secrets,
            "public_ports": def.public_ports,
            "tabs": def.tabs,
            "idle_timeout_secs": def.idle_timeout_secs,
        },
    })))
}

pub async fn tiers() -> Json<serde_json::Value> {
    let tiers: Vec<_> = Tier::ALL.iter().map(|t| serde_json::json!({"id": t.id(), "limits": t.limits()})).collect();
    Json(serde_json::json!({ "tiers": tiers }))
}

/// `GET /api/v1/pods` answer, serialised straight from the views.
#[derive(serde::Serialize)]
pub struct PodList {
    pub pods: Vec<PodView>,
}

/// The answer is cached per viewer (see [`crate::cache`]): polling clients
/// cost one map lookup until a pod changes.
pub async fn list(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<Response, ApiError> {
    let key = format!("{}|{}", who.user_id, who.teams.keys().cloned().collect::<Vec<_>>().join(","));
    let body = match s.pod_lists.get(&key) {
        Some(body) => body,
        None => {
            let read = s.pod_lists.begin_read();
            let mut pods = s.pods.list_pods(&who).await?;
            add_github(&s, &mut pods).await?;
            let body = axum::body::Bytes::from(serde_json::to_vec(&PodList { pods }).map_err(ApiError::internal)?);
            s.pod_lists.insert(key, body.clone(), read);
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `POST /api/v1/pods`: a [`CreatePodRequest`], and optionally
/// `repository` (a [`crate::service::RepositoryRequest`]).
pub async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(mut body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<(StatusCode, Json<PodView>), ApiError> {
    let fits = |what: &str, e: serde_json::Error| ApiError::bad_request("invalid_request", format!("{what} does not fit: {e}"));
    let repository = match body.remove("repository") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(serde_json::from_value::<crate::service::RepositoryRequest>(v).map_err(|e| fits("repository", e))?),
    };
    let req: CreatePodRequest = serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| fits("request body", e))?;
    let mut pod = s.github_apps.create_pod(&who, req, repository).await?;
    add_github(&s, std::slice::from_mut(&mut pod)).await?;
    Ok((StatusCode::ACCEPTED, Json(pod)))
}

/// Sets each pod's `github` (its link to a repository of the GitHub App).
pub async fn add_github(s: &AppState, pods: &mut [PodView]) -> Result<(), ApiError> {
    let ids: Vec<uuid::Uuid> = pods.iter().map(|p| p.id).collect();
    let mut links = s.github_apps.links(&ids).await?;
    for p in pods {
        p.github = links.remove(&p.id).and_then(|l| serde_json::to_value(l).ok());
    }
    Ok(())
}

pub async fn show(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<PodView>, ApiError> {
    let mut pod = [s.pods.find_pod(&who, &key, Action::Read).await?];
    s.pods.mark_host_status(&mut pod).await?;
    add_github(&s, &mut pod).await?;
    let [pod] = pod;
    Ok(Json(pod))
}

/// Changes a pod's public ports and egress policy.
pub async fn configure(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiJson(change): ApiJson<crate::service::PodSettings>,
) -> Result<Json<PodView>, ApiError> {
    Ok(Json(s.pods.configure_pod(&who, &key, change).await?))
}

/// `POST /pods/{pod}/open` body: which of the pod's web services.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenBody {
    /// A port in the pod.
    pub port: u16,
    /// Where to land on the pod's host (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// For a page embedded in an iframe (the IDE's preview tab): the
    /// cookie is `SameSite=None; Partitioned`.
    #[serde(default)]
    pub embed: bool,
}

/// A sign-in link for a browser: the pod host's `/.pinacle/auth` with a
/// one-minute, single-use token scoped to this pod.
pub async fn open(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<OpenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(serde_json::to_value(s.pod_access.open_link(&who, &key, body.port, body.path, body.embed).await?).map_err(ApiError::internal)?))
}

pub async fn start(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
) -> Result<(StatusCode, Json<PodView>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(s.pods.request(&who, &key, PodEvent::StartRequested).await?)))
}

pub async fn stop(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
) -> Result<(StatusCode, Json<PodView>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(s.pods.request(&who, &key, PodEvent::StopRequested).await?)))
}

pub async fn delete(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
) -> Result<(StatusCode, Json<PodView>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(s.pods.request(&who, &key, PodEvent::DeleteRequested).await?)))
}

/// `POST /pods/{pod}/exec` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Text fed to the command's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
}

/// Runs a command in a running pod. The answer streams as NDJSON lines:
/// `{"stream":"stdout"|"stderr","data":"<base64>"}` while it runs, then
/// `{"exit_code":N}`.
pub async fn exec(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ExecBody>,
) -> Result<Response, ApiError> {
    if body.command.is_empty() || body.command[0].is_empty() {
        return Err(ApiError::bad_request("invalid_request", "command must name a program, e.g. [\"uname\", \"-a\"]"));
    }
    if let Some(bad) = body.env.keys().find(|k| k.is_empty() || k.contains('=') || k.contains('\0')) {
        return Err(ApiError::bad_request("invalid_request", format!("invalid environment variable name {bad:?}")));
    }
    if body.command.iter().chain(body.env.values()).any(|a| a.contains('\0')) {
        return Err(ApiError::bad_request("invalid_request", "arguments may not contain NUL bytes"));
    }
    let token = crate::routes::middleware::bearer_of(&headers)?;
    let pod = s.pods.find_pod(&who, &key, Action::Exec).await?;
    if pod.state != PodState::Running {
        let hint = match pod.state {
            PodState::Stopped | PodState::Error => format!("start it with `pinacle pod start {}`", pod.name),
            _ => "wait until it is running".to_owned(),
        };
        return Err(ApiError::conflict(
            "pod_not_running",
            format!("pod {} is {}; exec needs a running pod ({hint})", pod.name, pod.state),
        ));
    }
    let host = s.links.host(&pod.host)?;
    let req = ExecRequest {
        argv: body.command,
        env: body.env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: body.cwd,
        stdin: body.stdin.map(String::into_bytes),
    };
    let record = pod.record()?;
    // The program only: arguments may carry secrets.
    s.audit.record(&who, "pod.exec", &format!("pod:{} ({}) {}", pod.id, pod.name, req.argv[0])).await?;
    let rx = host.exec(&record, req).await.map_err(|e| match e {
        pinacle_host_api::HostError::NotRunning(_) => ApiError::conflict(
            "pod_not_running",
            format!("pod {}'s sandbox is not running; the agent will restart it shortly", pod.name),
        ),
        other => crate::hosts::host_error(other),
    })?;
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let out = rx.recv().await?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let v = match out {
            ExecOutput::Stdout(d) => serde_json::json!({"stream": "stdout", "data": b64.encode(d)}),
            ExecOutput::Stderr(d) => serde_json::json!({"stream": "stderr", "data": b64.encode(d)}),
            ExecOutput::Exit(code) => serde_json::json!({"exit_code": code}),
        };
        Some((Ok::<_, Infallible>(format!("{v}\n")), rx))
    });
    // a command outlives no credential: its output stops (and the command
    // ends) once the caller may no longer exec in the pod
    let lines = futures::StreamExt::take_until(lines, until_access_lost(s.clone(), token, pod.id, Action::Exec));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// `GET /pods/{pod}/logs` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// How much of the end of the log to return (default 64 KiB, at most 4 MiB).
    #[serde(default)]
    pub tail_bytes: Option<u64>,
}

pub async fn logs(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let pod = s.pods.find_pod(&who, &key, Action::Read).await?;
    let host = s.links.host(&pod.host)?;
    let max = q.tail_bytes.unwrap_or(64 * 1024).min(4 * 1024 * 1024);
    let text = host.logs(pod.id, max).await.map_err(crate::hosts::host_error)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Server-Sent Events of the pod's state changes: stored history first
/// (after `Last-Event-ID` if given), then live ones; ends once the pod is
/// deleted, or once the caller's credential stops working or they may no
/// longer read the pod (checked every [`crate::principal::RECHECK_INTERVAL`]
/// and at the credential's expiry).
pub async fn events(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(key): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let pod = s.pods.find_pod(&who, &key, Action::Read).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    // Subscribe before reading history so nothing falls between the two.
    let live = s.events.subscribe();
    let history = s.pods.events_since(pod.id, after).await?;
    let pod_id = pod.id;
    let state = s.clone();
    use futures::StreamExt;
    let lost = until_access_lost(s.clone(), crate::routes::middleware::bearer_of(&headers)?, pod_id, Action::Read);
    let stream = pod_event_stream(state, pod_id, history, live).take_until(lost).map(|ev| {
        Ok(Event::default()
            .event("state")
            .id(ev.seq.to_string())
            .json_data(&ev)
            .unwrap_or_else(|_| Event::default().comment("unencodable event")))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Resolves once `token` stops working or its caller may no longer take
/// `action` on pod `pod_id`: what ends a long-lived answer about that pod.
/// (Reading covers a deleted pod too, so an event stream still delivers
/// the deletion.)
pub fn until_access_lost(s: AppState, token: String, pod_id: uuid::Uuid, action: Action) -> std::pin::Pin<Box<dyn std::future::Future<Output = ApiError> + Send>> {
    Box::pin(async move {
        s.auth.access_lost(&token, |now| {
            let s = s.clone();
            async move {
                if action == Action::Read {
                    s.pods.pod_seen_by(&now, pod_id).await.map(|_| ())
                } else {
                    s.pods.find_pod(&now, &pod_id.to_string(), action).await.map(|_| ())
                }
            }
        })
        .await
    })
}

/// A pod's events: `history`, then those arriving on `live` (caught up
/// from the database if the broadcast left it behind), each once, in
/// order; the stream ends after the pod's deletion.
pub fn pod_event_stream(
    state: AppState,
    pod_id: uuid::Uuid,
    history: Vec<crate::events::PodEventView>,
    live: tokio::sync::broadcast::Receiver<crate::events::PodEventView>,
) -> impl Stream<Item = crate::events::PodEventView> {
    struct Cursor {
        state: AppState,
        pod_id: uuid::Uuid,
        pending: std::collections::VecDeque<crate::events::PodEventView>,
        live: tokio::sync::broadcast::Receiver<crate::events::PodEventView>,
        last_seq: i64,
        done: bool,
    }
    let cursor = Cursor { state, pod_id, pending: history.into(), live, last_seq: 0, done: false };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if c.done {
                return None;
            }
            if let Some(ev) = c.pending.pop_front() {
                if ev.seq <= c.last_seq {
                    continue;
                }
                c.last_seq = ev.seq;
                c.done = ev.to == PodState::Deleted;
                return Some((ev, c));
            }
            match c.live.recv().await {
                Ok(ev) if ev.pod_id == c.pod_id => c.pending.push_back(ev),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // Fell behind the broadcast: catch up from the database.
                    if let Ok(missed) = c.state.pods.events_since(c.pod_id, c.last_seq).await {
                        c.pending.extend(missed);
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

pub async fn snapshots(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(pod): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(serde_json::json!({ "snapshots": s.pods.list_snapshots(&who, &pod).await? })))
}

pub async fn create_snapshot(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath(pod): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<pinacle_host_api::SnapshotInfo>), ApiError> {
    // the body is optional: no name, no body
    let req: crate::service::CreateSnapshot = if body.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_request", format!("request body does not fit: {e}")))?
    };
    let info = s.pods.create_snapshot(&who, &pod, req).await?;
    // the memory of the pod's project, as it stands now, goes with it
    s.memory_access.snapshot_taken(&who, &pod, &info.id).await;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn restore_snapshot(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((pod, id)): ApiPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let info = s.pods.restore_snapshot(&who, &pod, &id).await?;
    // the project's memory goes back to where it stood then (`memory`:
    // what changed; null for a snapshot taken without a position)
    let memory = s.memory_access.snapshot_restored(&who, &pod, &id).await?;
    let mut body = serde_json::to_value(info).map_err(ApiError::internal)?;
    body["memory"] = serde_json::to_value(memory).map_err(ApiError::internal)?;
    Ok(Json(body))
}

pub async fn delete_snapshot(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiPath((pod, id)): ApiPath<(String, String)>,
) -> Result<Json<pinacle_host_api::SnapshotInfo>, ApiError> {
    Ok(Json(s.pods.delete_snapshot(&who, &pod, &id).await?))
}
