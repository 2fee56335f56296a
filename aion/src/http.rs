//! The router's HTTP API:
//! - OpenAI-compatible: `POST /v1/chat/completions` (streaming too),
//!   `POST /v1/embeddings`, `GET /v1/models` — any OpenAI client works by
//!   setting its base URL; the router's own options ride in `"aion"`.
//! - Tasks: `POST /v1/tasks` (with `Idempotency-Key`), `GET /v1/tasks`,
//!   `GET /v1/tasks/{id}`, `GET /v1/stream/{id}` (SSE `token`, `partial`,
//!   `done`, `error`), and `GET /v1/ws` (the same over a WebSocket).
//! - Operating: `GET /router/policy`, `POST /router/policy/reload` and
//!   `/rollback` (admins), `GET /router/usage`; modules installed from OCI
//!   registries: `GET`/`POST /router/modules`, `DELETE /router/modules/{name}`
//!   (admins); the usage feed `GET /router/usage/records` (one record per
//!   ended task, paged by cursor, for metering and billing).
//!
//! - gRPC (feature `grpc`): `aion.v1.AionTasks` (see `crate::grpc`).
//!
//! Every request is authenticated by the platform ([`Verifier`]); a
//! stream that stays open re-checks its caller every minute.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{aion_summary, Aion, Caller, Options, Out, TaskEvent};
use crate::envelope::{Envelope, Status};
use crate::error::AionError;
use crate::registries::{Change, LoadError};

/// Who is calling: the platform's credentials, checked by the platform.
#[async_trait::async_trait]
pub trait Verifier: Send + Sync {
    async fn verify(&self, headers: &HeaderMap) -> Result<Caller, AionError>;
}

/// Where registry changes are written down.
#[async_trait::async_trait]
pub trait Auditor: Send + Sync {
    async fn registry_changed(&self, who: &Caller, action: &str, change: &Change);
}

/// The API's parts.
#[derive(Clone)]
pub struct AionApi {
    pub aion: Arc<Aion>,
    pub verifier: Arc<dyn Verifier>,
    pub auditor: Arc<dyn Auditor>,
}

/// Largest request body accepted (long prompts fit; nothing unbounded).
pub const BODY_LIMIT: usize = 8 << 20;

/// Tasks one WebSocket follows at once.
pub const MAX_WS_FOLLOWS: usize = 32;

/// How often a long-lived stream re-checks its caller.
pub const RECHECK: Duration = Duration::from_secs(60);

/// The routes, to merge into a server.
pub fn router<S: Clone + Send + Sync + 'static>(api: AionApi) -> Router<S> {
    #[cfg(feature = "grpc")]
    let grpc = crate::grpc::routes(api.clone());
    let http = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/tasks", post(submit).get(list_tasks))
        .route("/v1/tasks/{id}", get(task))
        .route("/v1/stream/{id}", get(stream_task))
        .route("/v1/ws", get(websocket))
        .route("/router/policy", get(policy))
        .route("/router/policy/reload", post(reload))
        .route("/router/policy/rollback", post(rollback))
        .route("/router/usage", get(usage))
        .route("/router/usage/records", get(usage_records))
        .route("/router/modules", get(list_modules).post(install_module))
        .route("/router/modules/{name}", axum::routing::delete(remove_module))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api);
    #[cfg(feature = "grpc")]
    let http = http.merge(grpc.with_state(()));
    http
}

fn json_body(bytes: &[u8]) -> Result<Value, AionError> {
    serde_json::from_slice(bytes).map_err(|e| AionError::bad("invalid_json", format!("the body is not valid JSON: {e}")))
}

fn options(body: &Value) -> Result<Options, AionError> {
    match body.get("aion") {
        None | Some(Value::Null) => Ok(Options::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| AionError::bad("invalid_options", format!("aion: {e}"))),
    }
}

fn header(v: &str) -> HeaderValue {
    let clean: String = v.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).take(512).collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn chunk(task: &str, created: i64, model: &str, delta: Value, finish_reason: Option<String>) -> Value {
    json!({
        "id": format!("chatcmpl-{task}"),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}],
    })
}

async fn chat(State(api): State<AionApi>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    match chat_inner(&api, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(api: &AionApi, headers: &HeaderMap, body: &[u8]) -> Result<Response, AionError> {
    let caller = api.verifier.verify(headers).await?;
    let body = json_body(body)?;
    let opts = options(&body)?;
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let (task, answer) = api.aion.chat(caller, body, opts, stream).await?;
    let mut rx = match answer {
        crate::engine::Chat::Whole(body) => {
            let mut resp = Json(body).into_response();
            resp.headers_mut().insert("x-aion-task", header(&task));
            return Ok(resp);
        }
        crate::engine::Chat::Stream(rx) => rx,
    };
    // the gate: the answer's status waits for the first healthy chunk
    let first = rx.recv().await.ok_or_else(|| AionError::Internal("the task ended without an answer".into()))?;
    if let Out::Done(env) = &first {
        if env.status != Status::Succeeded {
            return Err(envelope_error(env));
        }
    }
    let created = chrono::Utc::now().timestamp();
    let task_id = task.clone();
    let events = futures::stream::unfold((Some(first), rx, false), move |(pending, mut rx, ended)| {
        let task = task_id.clone();
        async move {
            if ended {
                return None;
            }
            let out = match pending {
                Some(o) => o,
                None => rx.recv().await?,
            };
            let mut frames: Vec<Result<SseEvent, Infallible>> = Vec::new();
            let mut end = false;
            match out {
                Out::Delta { delta, finish_reason, model } => {
                    frames.push(Ok(SseEvent::default().data(chunk(&task, created, &model, delta, finish_reason).to_string())));
                }
                // the continuation carries on in the same answer
                Out::Partial { .. } => {}
                Out::Done(env) => {
                    end = true;
                    if env.status == Status::Succeeded {
                        if include_usage {
                            let model = env.engine.route.as_ref().map_or(String::new(), |r| r.model.clone());
                            let u = &env.usage.tokens;
                            let usage = json!({"id": format!("chatcmpl-{task}"), "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                                "usage": {"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output}, "aion": aion_summary(&env)});
                            frames.push(Ok(SseEvent::default().data(usage.to_string())));
                        }
                        frames.push(Ok(SseEvent::default().data("[DONE]")));
                    } else {
                        // never a clean end for a cut stream
                        let e = env.error.clone().unwrap_or(crate::envelope::ErrorBody { code: "upstream_failed".into(), message: "the stream failed".into() });
                        frames.push(Ok(SseEvent::default().data(json!({"error": {"code": e.code, "message": e.message, "type": "api_error"}, "aion": aion_summary(&env)}).to_string())));
                    }
                }
            }
            Some((futures::stream::iter(frames), (None, rx, end)))
        }
    })
    .flatten();
    let mut resp = Sse::new(events).into_response();
    resp.headers_mut().insert("x-aion-task", header(&task));
    Ok(resp)
}

fn envelope_error(env: &Envelope) -> AionError {
    let e = env.error.clone().unwrap_or(crate::envelope::ErrorBody { code: "upstream_failed".into(), message: "no route answered".into() });
    match e.code.as_str() {
        "upstream_refused" => AionError::bad("upstream_refused", e.message),
        "client_closed" => AionError::Upstream(e.message),
        _ => AionError::Upstream(e.message),
    }
}

async fn embeddings(State(api): State<AionApi>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Json<Value>, AionError> {
    let caller = api.verifier.verify(&headers).await?;
    let body = json_body(&body)?;
    Ok(Json(api.aion.embeddings(&caller, body).await?))
}

async fn models(State(api): State<AionApi>, headers: HeaderMap) -> Result<Json<Value>, AionError> {
    api.verifier.verify(&headers).await?;
    let loaded = api.aion.registries.current();
    let reg = &loaded.registry;
    let now = std::time::Instant::now();
    let mut data: Vec<Value> = reg
        .models
        .values()
        .map(|m| {
            json!({
                "id": m.id, "object": "model", "created": loaded.loaded_at.timestamp(), "owned_by": m.provider,
                "aion": {"kind": m.kind, "tier": m.tier, "price_per_mtok_usd": m.price, "context": m.context, "max_output": m.max_output,
                         "cloud": reg.providers.get(&m.provider).is_some_and(|p| p.cloud), "health": api.aion.health.snapshot(&m.provider, now)},
            })
        })
        .collect();
    for i in reg.intents.values() {
        data.push(json!({"id": format!("intent:{}", i.id), "object": "model", "created": loaded.loaded_at.timestamp(), "owned_by": "aion",
            "aion": {"kind": "intent", "description": i.description, "privacy": i.privacy, "candidates": i.candidates}}));
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `POST /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    intent: Option<String>,
    /// Chat messages, or
    #[serde(default)]
    messages: Option<Value>,
    /// one user prompt.
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    privacy: Option<String>,
    #[serde(default)]
    budget_usd: Option<f64>,
    #[serde(default)]
    continue_on_failure: Option<bool>,
}

impl TaskRequest {
    /// The chat body and options it stands for.
    fn into_chat(self) -> Result<(Value, Options), AionError> {
        let messages = match (self.messages, self.input) {
            (Some(m), None) => m,
            (None, Some(i)) => json!([{"role": "user", "content": i}]),
            _ => return Err(AionError::bad("invalid_request", "give either messages or input")),
        };
        let mut body = json!({"messages": messages});
        if let Some(m) = self.model {
            body["model"] = m.into();
        }
        if let Some(t) = self.max_tokens {
            body["max_tokens"] = t.into();
        }
        if let Some(t) = self.temperature {
            body["temperature"] = t.into();
        }
        Ok((body, Options { intent: self.intent, privacy: self.privacy, budget_usd: self.budget_usd, continue_on_failure: self.continue_on_failure }))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AionError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let s = v.to_str().map_err(|_| AionError::bad("invalid_idempotency_key", "Idempotency-Key must be printable ASCII"))?;
    if s.is_empty() || s.len() > 255 {
        return Err(AionError::bad("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters"));
    }
    Ok(Some(s.to_owned()))
}

async fn submit(State(api): State<AionApi>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response, AionError> {
    let caller = api.verifier.verify(&headers).await?;
    let req: TaskRequest = serde_json::from_slice(&body).map_err(|e| AionError::bad("invalid_request", format!("the task is not valid: {e}")))?;
    let (chat, opts) = req.into_chat()?;
    let key = idempotency_key(&headers)?;
    let (env, new) = api.aion.submit(&caller, chat, opts, key).await?;
    let status = if new { StatusCode::ACCEPTED } else { StatusCode::OK };
    let mut resp = (status, Json(&env)).into_response();
    resp.headers_mut().insert(axum::http::header::LOCATION, header(&format!("/v1/tasks/{}", env.id)));
    Ok(resp)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    all: Option<bool>,
}

async fn list_tasks(State(api): State<AionApi>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Result<Json<Value>, AionError> {
    let caller = api.verifier.verify(&headers).await?;
    let tasks = api.aion.recent(&caller, q.all.unwrap_or(false), q.limit.unwrap_or(50)).await?;
    Ok(Json(json!({"tasks": tasks})))
}

async fn task(State(api): State<AionApi>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Envelope>, AionError> {
    let caller = api.verifier.verify(&headers).await?;
    Ok(Json(api.aion.task(&caller, &id).await?))
}

fn sse(ev: &TaskEvent) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event(ev.event).data(ev.data.to_string()))
}

/// The events of task `id` for `caller`: replayed and live from this
/// process, else followed in the store until it ends (another server runs
/// it). Ends after `done` or `error`, or when the caller's credentials
/// stop working.
pub(crate) fn task_events(api: AionApi, caller: Caller, headers: HeaderMap, id: String) -> impl Stream<Item = TaskEvent> + Send {
    enum Src {
        Start,
        Live(std::vec::IntoIter<TaskEvent>, tokio::sync::broadcast::Receiver<TaskEvent>),
        Poll(u32),
        End,
    }
    let mut recheck = tokio::time::Instant::now() + RECHECK;
    futures::stream::unfold(Src::Start, move |src| {
        let (api, caller, headers, id) = (api.clone(), caller.clone(), headers.clone(), id.clone());
        let recheck_at = &mut recheck;
        let due = *recheck_at <= tokio::time::Instant::now();
        if due {
            *recheck_at = tokio::time::Instant::now() + RECHECK;
        }
        async move {
            if due && !matches!(src, Src::End) && api.verifier.verify(&headers).await.is_err() {
                let ev = TaskEvent { event: "error", data: json!({"error": {"code": "unauthenticated", "message": "the credentials of this stream stopped working"}}) };
                return Some((ev, Src::End));
            }
            let mut src = src;
            loop {
                src = match src {
                    Src::End => return None,
                    Src::Start => match api.aion.subscribe(&caller, &id) {
                        Some((past, rx)) => Src::Live(past.into_iter(), rx),
                        None => Src::Poll(0),
                    },
                    Src::Live(mut past, mut rx) => {
                        if let Some(ev) = past.next() {
                            let end = ev.event == "done" || ev.event == "error";
                            return Some((ev, if end { Src::End } else { Src::Live(past, rx) }));
                        }
                        match tokio::time::timeout(RECHECK, rx.recv()).await {
                            Ok(Ok(ev)) => {
                                let end = ev.event == "done" || ev.event == "error";
                                return Some((ev, if end { Src::End } else { Src::Live(past, rx) }));
                            }
                            // fell behind, or the task's sender is gone: the stored end
                            Ok(Err(_)) => Src::Poll(0),
                            Err(_) => {
                                if api.verifier.verify(&headers).await.is_err() {
                                    let ev = TaskEvent { event: "error", data: json!({"error": {"code": "unauthenticated", "message": "the credentials of this stream stopped working"}}) };
                                    return Some((ev, Src::End));
                                }
                                Src::Live(past, rx)
                            }
                        }
                    }
                    Src::Poll(n) => match api.aion.task(&caller, &id).await {
                        Ok(env) if env.status.is_final() => {
                            let event = if env.status == Status::Succeeded { "done" } else { "error" };
                            return Some((TaskEvent { event, data: serde_json::to_value(&env).unwrap_or(Value::Null) }, Src::End));
                        }
                        Ok(_) if n < 1200 => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            Src::Poll(n + 1)
                        }
                        Ok(_) => {
                            return Some((TaskEvent { event: "error", data: json!({"error": {"code": "timeout", "message": "the task did not end within 10 minutes of following it"}}) }, Src::End));
                        }
                        Err(e) => return Some((TaskEvent { event: "error", data: e.body() }, Src::End)),
                    },
                };
            }
        }
    })
}

async fn stream_task(State(api): State<AionApi>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, AionError> {
    let caller = api.verifier.verify(&headers).await?;
    // a task of another caller is as absent as one that never was
    if api.aion.subscribe(&caller, &id).is_none() {
        api.aion.task(&caller, &id).await?;
    }
    let events = task_events(api, caller, headers, id).map(|ev| sse(&ev));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

async fn websocket(State(api): State<AionApi>, headers: HeaderMap, ws: WebSocketUpgrade) -> Result<Response, AionError> {
    let caller = api.verifier.verify(&headers).await?;
    Ok(ws.max_message_size(BODY_LIMIT).on_upgrade(move |socket| serve_ws(api, caller, headers, socket)))
}

/// What a WebSocket client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WsIn {
    Submit {
        task: Value,
        #[serde(default)]
        idempotency_key: Option<String>,
    },
    Subscribe {
        id: String,
    },
}

async fn serve_ws(api: AionApi, caller: Caller, headers: HeaderMap, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(256);
    let writer = tokio::spawn(async move {
        use futures::SinkExt;
        while let Some(v) = rx.recv().await {
            if sink.send(Message::Text(v.to_string().into())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.tick().await;
    let mut followers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    loop {
        let msg = tokio::select! {
            m = incoming.next() => m,
            _ = recheck.tick() => {
                if api.verifier.verify(&headers).await.is_err() {
                    let _ = tx.send(json!({"type": "error", "error": {"code": "unauthenticated", "message": "the credentials of this connection stopped working"}})).await;
                    break;
                }
                continue;
            }
        };
        let Some(Ok(msg)) = msg else { break };
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        let cmd: WsIn = match serde_json::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(json!({"type": "error", "error": {"code": "invalid_message", "message": format!("{e}; send {{\"type\": \"submit\", \"task\": {{...}}}} or {{\"type\": \"subscribe\", \"id\": \"...\"}}")}})).await;
                continue;
            }
        };
        let id = match cmd {
            WsIn::Submit { task, idempotency_key } => {
                let accepted = async {
                    let req: TaskRequest = serde_json::from_value(task).map_err(|e| AionError::bad("invalid_request", format!("the task is not valid: {e}")))?;
                    let (chat, opts) = req.into_chat()?;
                    api.aion.submit(&caller, chat, opts, idempotency_key).await
                }
                .await;
                match accepted {
                    Ok((env, _)) => {
                        let _ = tx.send(json!({"type": "accepted", "task": env})).await;
                        env.id
                    }
                    Err(e) => {
                        let _ = tx.send(json!({"type": "error", "error": e.body()["error"]})).await;
                        continue;
                    }
                }
            }
            WsIn::Subscribe { id } => id,
        };
        followers.retain(|f: &tokio::task::JoinHandle<()>| !f.is_finished());
        if followers.len() >= MAX_WS_FOLLOWS {
            let _ = tx.send(json!({"type": "error", "id": id, "error": {"code": "too_many_subscriptions", "message": format!("at most {MAX_WS_FOLLOWS} tasks are followed at once on one connection")}})).await;
            continue;
        }
        let (api2, caller2, headers2, tx2) = (api.clone(), caller.clone(), headers.clone(), tx.clone());
        followers.push(tokio::spawn(async move {
            let mut events = Box::pin(task_events(api2, caller2, headers2, id.clone()));
            while let Some(ev) = events.next().await {
                if tx2.send(json!({"type": ev.event, "id": id, "data": ev.data})).await.is_err() {
                    return;
                }
            }
        }));
    }
    for f in followers {
        f.abort();
    }
    drop(tx);
    let _ = writer.await;
}

async fn policy(State(api): State<AionApi>, headers: HeaderMap) -> Result<Json<Value>, AionError> {
    // the whole registry names subjects and keys' variables: admins only
    admin(&api.verifier.verify(&headers).await?)?;
    let l = api.aion.registries.current();
    Ok(Json(json!({
        "version": l.version, "digest": l.registry.digest, "loaded_at": l.loaded_at, "directory": api.aion.registries.dir(),
        "warnings": l.warnings.0, "providers_with_server_keys": l.env_keys.keys().collect::<Vec<_>>(), "registry": l.registry,
    })))
}

fn admin(caller: &Caller) -> Result<(), AionError> {
    if caller.admin {
        Ok(())
    } else {
        Err(AionError::Forbidden("only an instance admin changes the router's policy".into()))
    }
}

fn load_error(e: LoadError) -> Response {
    match e {
        LoadError::Invalid(d) => {
            let body = json!({"error": {"code": "invalid_registry", "message": format!("the registry has {} error(s); the version in force stays", d.errors().count()), "diagnostics": d.0}});
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
        LoadError::NoPrevious => AionError::bad("no_previous_version", e.to_string()).into_response(),
        LoadError::Io { .. } => AionError::bad("registry_unreadable", e.to_string()).into_response(),
    }
}

async fn reload(State(api): State<AionApi>, headers: HeaderMap) -> Response {
    let caller = match api.verifier.verify(&headers).await.and_then(|c| admin(&c).map(|()| c)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match api.aion.registries.reload() {
        Ok(change) => {
            if !change.unchanged {
                api.auditor.registry_changed(&caller, "router.policy.reload", &change).await;
            }
            Json(json!({"change": change})).into_response()
        }
        Err(e) => {
            api.aion.metrics.reload_failures.inc();
            load_error(e)
        }
    }
}

async fn rollback(State(api): State<AionApi>, headers: HeaderMap) -> Response {
    let caller = match api.verifier.verify(&headers).await.and_then(|c| admin(&c).map(|()| c)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match api.aion.registries.rollback() {
        Ok(change) => {
            api.auditor.registry_changed(&caller, "router.policy.rollback", &change).await;
            Json(json!({"change": change})).into_response()
        }
        Err(e) => load_error(e),
    }
}

fn package_error(e: crate::packages::PackageError) -> Response {
    use crate::packages::PackageError as P;
    let unprocessable = |code: &str, message: String| (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": {"code": code, "message": message}}))).into_response();
    match e {
        P::Invalid(d) => load_error(LoadError::Invalid(d)),
        P::Quarantined { .. } => unprocessable("package_quarantined", e.to_string()),
        P::Malformed(_) => unprocessable("bad_package", e.to_string()),
        P::Reference(_) => AionError::bad("bad_reference", e.to_string()).into_response(),
        P::NotFound(_) | P::Fetch(pinacle_oci::OciError::NotFound { .. }) => AionError::NotFound(e.to_string()).into_response(),
        P::Fetch(_) => (StatusCode::BAD_GATEWAY, Json(json!({"error": {"code": "registry_error", "message": e.to_string()}}))).into_response(),
        P::Key(_) | P::Io { .. } => AionError::Internal(e.to_string()).into_response(),
    }
}

/// Why a package change did not stand.
enum ChangeFailed {
    Package(crate::packages::PackageError),
    /// The registry did not load with it (the change was undone).
    Load(LoadError),
}

impl IntoResponse for ChangeFailed {
    fn into_response(self) -> Response {
        match self {
            ChangeFailed::Package(e) => package_error(e),
            ChangeFailed::Load(e) => load_error(e),
        }
    }
}

async fn admin_caller(api: &AionApi, headers: &HeaderMap) -> Result<Caller, Response> {
    api.verifier.verify(headers).await.and_then(|c| admin(&c).map(|()| c)).map_err(IntoResponse::into_response)
}

/// Installed and quarantined packages, and every module loaded (admins).
async fn list_modules(State(api): State<AionApi>, headers: HeaderMap) -> Response {
    if let Err(r) = admin_caller(&api, &headers).await {
        return r;
    }
    let l = api.aion.registries.current();
    let modules: Vec<Value> = l.registry.modules.values().map(|m| json!({"name": m.name, "version": m.version, "runtime": m.runtime, "package": m.package, "intents": m.intents, "image": m.image})).collect();
    let packages = match api.aion.registries.packages().map(|p| p.list()).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return package_error(e),
    };
    let keys: Vec<String> = api.aion.registries.package_source().map(|s| s.keys.iter().map(|k| k.id.clone()).collect()).unwrap_or_default();
    Json(json!({"modules": modules, "packages": packages, "trusted_keys": keys})).into_response()
}

#[derive(Deserialize)]
struct InstallBody {
    reference: String,
    /// Registry credentials (never stored nor logged).
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl std::fmt::Debug for InstallBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallBody").field("reference", &self.reference).field("username", &self.username).finish_non_exhaustive()
    }
}

/// Fetches a package, checks its signature and installs it, or puts it
/// in quarantine (admins). The registry is rebuilt with it at once.
async fn install_module(State(api): State<AionApi>, headers: HeaderMap, body: Result<Json<InstallBody>, axum::extract::rejection::JsonRejection>) -> Response {
    let caller = match admin_caller(&api, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return AionError::bad("bad_request", format!("the body must be {{\"reference\": \"registry/repo:tag\"}}: {e}")).into_response(),
    };
    let (Some(store), Some(source)) = (api.aion.registries.packages().cloned(), api.aion.registries.package_source().cloned()) else {
        return AionError::NotSupported("installing modules on a server without a packages directory".into()).into_response();
    };
    let creds = match (body.username, body.password) {
        (Some(username), Some(password)) => pinacle_oci::Credentials::Basic { username, password },
        (None, None) => pinacle_oci::Credentials::Anonymous,
        _ => return AionError::bad("bad_request", "give both username and password, or neither").into_response(),
    };
    let verified = match crate::packages::fetch_verified(&store, &source.oci, &body.reference, &creds, &source.keys).await {
        Ok(v) => v,
        Err(e) => {
            if let crate::packages::PackageError::Quarantined { reason, .. } = &e {
                tracing::warn!(reference = %body.reference, reason = %reason, "a module package was quarantined");
                let cur = api.aion.registries.current();
                let (v, d) = (cur.version, cur.short_digest().to_owned());
                let change = Change { from_version: v, from_digest: d.clone(), to_version: v, to_digest: d, unchanged: true, note: Some(format!("quarantined {}: {reason}", body.reference)) };
                api.auditor.registry_changed(&caller, "router.module.quarantine", &change).await;
            }
            return package_error(e);
        }
    };
    // unpacking, checking (every module compiles) and the swap are slow
    // and blocking: off the async workers, as one step no reload interleaves with
    let aion = api.aion.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<(crate::packages::PackageRecord, Change), ChangeFailed> {
        let registries = &aion.registries;
        let check = |p: &crate::registry::PackageText| {
            registries.check_package(p).map_err(|e| match e {
                LoadError::Invalid(d) => crate::packages::PackageError::Invalid(d),
                LoadError::Io { path, message } => crate::packages::PackageError::Io { path, message },
                LoadError::NoPrevious => crate::packages::PackageError::Malformed(e.to_string()),
            })
        };
        let swaps = registries.lock_swaps();
        let installed = store.install(&verified.reference, &verified.digest, &verified.signed_by, &verified.layer, &check).map_err(ChangeFailed::Package)?;
        match registries.reload_packages_locked(&swaps) {
            Ok(change) => Ok((store.keep(installed), change)),
            Err(e) => {
                if let Err(u) = store.undo(installed) {
                    tracing::error!(error = %u, "a package whose registry did not load could not be taken back out");
                }
                Err(ChangeFailed::Load(e))
            }
        }
    })
    .await;
    let (record, mut change) = match done {
        Ok(Ok(x)) => x,
        Ok(Err(f)) => return f.into_response(),
        Err(e) => return AionError::Internal(format!("the install stopped: {e}")).into_response(),
    };
    change.note = Some(format!("installed module {} from {} ({}), signed by key {}", record.name, record.reference, record.digest, record.signed_by.as_deref().unwrap_or("?")));
    api.auditor.registry_changed(&caller, "router.module.install", &change).await;
    (StatusCode::CREATED, Json(json!({"package": record, "change": change}))).into_response()
}

/// Removes an installed or quarantined package (admins); the registry is
/// rebuilt without it. One an intent still names cannot be removed.
async fn remove_module(State(api): State<AionApi>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let caller = match admin_caller(&api, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(store) = api.aion.registries.packages().cloned() else {
        return AionError::NotFound(format!("no installed or quarantined package is named {name}")).into_response();
    };
    let current = api.aion.registries.current();
    if let Some(intent) = current.registry.intents.values().find(|i| i.modules.contains(&name) && current.registry.modules.get(&name).is_some_and(|m| m.package.is_some())) {
        return (StatusCode::CONFLICT, Json(json!({"error": {"code": "module_in_use", "message": format!("intent {} runs module {name}; take it out of intents.yml first", intent.id)}}))).into_response();
    }
    let aion = api.aion.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<(crate::packages::PackageRecord, Change), ChangeFailed> {
        let registries = &aion.registries;
        let swaps = registries.lock_swaps();
        let taken = store.take(&name).map_err(ChangeFailed::Package)?;
        let record = taken.record.clone();
        match registries.reload_packages_locked(&swaps) {
            Ok(change) => {
                store.finish(taken);
                Ok((record, change))
            }
            Err(e) => {
                if let Err(u) = store.restore(taken) {
                    tracing::error!(error = %u, "a package whose removal broke the registry could not be put back");
                }
                Err(ChangeFailed::Load(e))
            }
        }
    })
    .await;
    let (record, mut change) = match done {
        Ok(Ok(x)) => x,
        Ok(Err(f)) => return f.into_response(),
        Err(e) => return AionError::Internal(format!("the removal stopped: {e}")).into_response(),
    };
    change.note = Some(format!("removed {} package {} ({})", if record.state == crate::packages::PackageState::Installed { "installed" } else { "quarantined" }, record.name, record.digest));
    api.auditor.registry_changed(&caller, "router.module.remove", &change).await;
    Json(json!({"removed": record, "change": change})).into_response()
}

#[derive(Deserialize)]
struct RecordsQuery {
    after: Option<String>,
    limit: Option<i64>,
    all: Option<bool>,
    /// Only records at least this old (ms; default [`USAGE_SETTLE_MS`]).
    settle_ms: Option<i64>,
}

/// How old a usage record must be before the feed hands it out: records
/// are stamped when written and committed an instant later (in batches,
/// by several servers), so a cursor past the newest could skip one that
/// commits late.
pub const USAGE_SETTLE_MS: i64 = 5_000;

/// The usage feed for metering and billing: one record per ended task
/// (subject, model, provider, tokens, cost), in the order they ended,
/// paged by the opaque `next` cursor. Everyone's for instance admins
/// (`all=true`), else the caller's own. Only records older than
/// `settle_ms` (default 5 s, at most a minute) are handed out, so a
/// reader that follows `next` misses none.
async fn usage_records(State(api): State<AionApi>, headers: HeaderMap, Query(q): Query<RecordsQuery>) -> Result<Json<Value>, AionError> {
    let caller = api.verifier.verify(&headers).await?;
    let after = match q.after.as_deref() {
        None | Some("") => (0, String::new()),
        Some(c) => crate::store::parse_cursor(c).ok_or_else(|| AionError::bad("invalid_cursor", format!("after={c:?} is not a cursor this API gave (MILLIS:TASK)")))?,
    };
    let limit = q.limit.unwrap_or(100);
    let settle = q.settle_ms.unwrap_or(USAGE_SETTLE_MS).clamp(0, 60_000);
    let until = chrono::Utc::now().timestamp_millis() - settle;
    let records = api.aion.usage_records(&caller, q.all.unwrap_or(false), &after, until, limit).await?;
    let next = records.last().map(|r| crate::store::cursor_text(&(r.recorded_at, r.task.clone())));
    let rows: Vec<Value> = records
        .iter()
        .map(|r| json!({"task": r.task, "subject": r.subject, "recorded_at": r.recorded_at, "status": r.status, "model": r.model, "provider": r.provider,
                        "tokens": {"input": r.tokens_in, "output": r.tokens_out, "estimated": r.estimated}, "cost_usd": crate::cost::micros_to_usd(r.cost_micros), "cost_micros": r.cost_micros}))
        .collect();
    Ok(Json(json!({"records": rows, "next": next.or(q.after)})))
}

/// The caller's spend against each budget that applies to them now.
async fn usage(State(api): State<AionApi>, headers: HeaderMap) -> Result<Json<Value>, AionError> {
    let caller = api.verifier.verify(&headers).await?;
    let l = api.aion.registries.current();
    let b = &l.registry.policy.budgets;
    let wanted: Vec<(&str, String, f64)> =
        caller.budgets(b, chrono::Utc::now()).into_iter().map(|(kind, c)| (kind, c.scope, crate::cost::micros_to_usd(c.cap_micros))).collect();
    let scopes: Vec<String> = wanted.iter().map(|w| w.1.clone()).collect();
    let spend = api.aion.ledger().spend(&scopes).await?;
    let budgets: Vec<Value> = wanted
        .iter()
        .zip(spend)
        .map(|((kind, scope, cap), s)| {
            json!({"kind": kind, "scope": scope, "cap_usd": cap, "spent_usd": crate::cost::micros_to_usd(s.spent_micros), "reserved_usd": crate::cost::micros_to_usd(s.reserved_micros)})
        })
        .collect();
    let task = b.task.as_ref().map(|t| json!({"default_usd": t.default_usd, "hard_cap_usd": t.hard_cap_usd}));
    Ok(Json(json!({"budgets": budgets, "task": task})))
}
