//! Test support: wire-true fake providers (OpenAI SSE with a usage chunk,
//! Anthropic events, Ollama NDJSON) on loopback, whose faults are chosen
//! by the model name (the failoverbench catalogue), and a router serving
//! its API on loopback with a header-based test verifier.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use pinacle_aion::engine::{Aion, Caller, NoKeys};
use pinacle_aion::error::AionError;
use pinacle_aion::http::{AionApi, Auditor, Verifier};
use pinacle_aion::registries::{Change, Registries};
use serde_json::{json, Value};

/// What a fake provider saw.
#[derive(Default)]
pub struct Seen {
    /// Calls per model.
    pub calls: HashMap<String, u32>,
    /// Bodies, in order.
    pub bodies: Vec<Value>,
    /// Authorization-like headers, in order.
    pub keys: Vec<String>,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
}

impl Fake {
    pub fn calls(&self, model: &str) -> u32 {
        self.seen.lock().unwrap().calls.get(model).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> u32 {
        self.seen.lock().unwrap().calls.values().sum()
    }

    pub fn last_body(&self) -> Value {
        self.seen.lock().unwrap().bodies.last().cloned().unwrap_or(Value::Null)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Words the fake answers with (`t0 t1 …`), `n` of them.
pub fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i} ")).collect()
}

fn sse_body(frames: Vec<(Duration, Option<String>)>, then_fail: bool) -> Body {
    let stream = futures::stream::unfold((frames.into_iter(), then_fail), |(mut it, fail)| async move {
        match it.next() {
            Some((wait, frame)) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let bytes = frame.map(Bytes::from).unwrap_or_default();
                Some((Ok::<Bytes, std::io::Error>(bytes), (it, fail)))
            }
            None if fail => Some((Err(std::io::Error::other("reset")), (it, false))),
            None => None,
        }
    });
    Body::from_stream(stream)
}

fn openai_chunk(model: &str, content: Option<&str>, finish: Option<&str>) -> String {
    let delta = match content {
        Some(c) => json!({"content": c}),
        None => json!({}),
    };
    format!("data: {}\n\n", json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null}))
}

fn openai_usage(model: &str, input: u64, output: u64) -> String {
    format!("data: {}\n\n", json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}}))
}

fn error(status: StatusCode, message: &str, retry_after: Option<&str>) -> Response {
    let mut r = (status, Json(json!({"error": {"message": message, "type": "server_error", "code": null}}))).into_response();
    if let Some(ra) = retry_after {
        r.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    r
}

/// The fault a model name selects: `name` or `name:N` (N tokens, default 8).
fn parse_model(model: &str) -> (String, usize) {
    match model.split_once(':') {
        Some((m, n)) => (m.to_owned(), n.parse().unwrap_or(8)),
        None => (model.to_owned(), 8),
    }
}

async fn openai(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let n = {
        let mut s = seen.lock().unwrap();
        let c = s.calls.entry(model.clone()).or_default();
        *c += 1;
        let n = *c;
        s.bodies.push(body.clone());
        s.keys.push(headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned());
        n
    };
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let (fault, count) = parse_model(&model);
    let max = body["max_tokens"].as_u64().or(body["max_completion_tokens"].as_u64()).unwrap_or(1000) as usize;
    let count = count.min(max);
    let input = 10;
    match fault.as_str() {
        "s01-429" if n == 1 => return error(StatusCode::TOO_MANY_REQUESTS, "slow down", Some("1")),
        "s02-429" => return error(StatusCode::TOO_MANY_REQUESTS, "quota", Some("120")),
        "s03-500" if n == 1 => return error(StatusCode::INTERNAL_SERVER_ERROR, "boom", None),
        "s04-503" => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
        "s06-hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        "s12-context" => return error(StatusCode::BAD_REQUEST, "This model's maximum context length is 8 tokens (context_length_exceeded)", None),
        "s14-prefill" if body["messages"].as_array().is_some_and(|m| m.iter().any(|x| x["role"] == "assistant")) => {
            return error(StatusCode::BAD_REQUEST, "assistant prefill is not supported", None)
        }
        "s15-flap" if n % 2 == 0 => return error(StatusCode::INTERNAL_SERVER_ERROR, "flap", None),
        "bad-request" => return error(StatusCode::BAD_REQUEST, "temperature must be at most 2", None),
        "bad-key" => return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided", None),
        "slow-whole" => tokio::time::sleep(Duration::from_millis(600)).await,
        _ => {}
    }
    let text: Vec<String> = words(count);
    if !stream {
        if fault == "s05-reset" {
            return Response::builder().status(200).body(sse_body(Vec::new(), true)).unwrap();
        }
        if fault == "s10-malformed" {
            return Response::builder().status(200).header("content-type", "application/json").body(Body::from("{\"choices\": [")).unwrap();
        }
        let content: String = text.concat();
        let finish = if fault == "s13-filter" { "content_filter" } else { "stop" };
        // a provider that ignores the output cap bills far more than asked
        let billed = if fault == "ignores-cap" { 100_000 } else { count };
        return Json(json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish, "logprobs": null}],
            "usage": {"prompt_tokens": input, "completion_tokens": billed, "total_tokens": input as usize + billed}}))
        .into_response();
    }
    let mut frames: Vec<(Duration, Option<String>)> = Vec::new();
    let mut fail = false;
    let first_wait = match fault.as_str() {
        "s07-slow" => Duration::from_millis(1500),
        _ => Duration::ZERO,
    };
    frames.push((first_wait, Some(format!("data: {}\n\n", json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})))));
    match fault.as_str() {
        "s05-reset" => {
            return Response::builder().status(200).header("content-type", "text/event-stream").body(sse_body(frames, true)).unwrap();
        }
        "s10-malformed" => {
            frames.push((Duration::ZERO, Some("data: {\"choices\": [{\"delta\": \n\n".into())));
            return Response::builder().status(200).header("content-type", "text/event-stream").body(sse_body(frames, false)).unwrap();
        }
        _ => {}
    }
    frames.push((Duration::ZERO, Some(": keep-alive\n\n".into())));
    for (i, w) in text.iter().enumerate() {
        if fault == "s08-cut" && i == count * 2 / 3 {
            fail = true;
            break;
        }
        if fault == "s09-stall" && i == count / 2 {
            frames.push((Duration::from_secs(3600), None));
        }
        if fault == "mid-error" && i == count / 2 {
            frames.push((Duration::ZERO, Some(format!("data: {}\n\n", json!({"error": {"message": "overloaded mid-stream", "type": "server_error"}})))));
            break;
        }
        frames.push((Duration::from_millis(if fault == "slow-tokens" { 20 } else { 0 }), Some(openai_chunk(&model, Some(w), None))));
    }
    if !fail && fault != "mid-error" {
        let finish = if fault == "s13-filter" { "content_filter" } else { "stop" };
        frames.push((Duration::ZERO, Some(openai_chunk(&model, None, Some(finish)))));
        if include_usage {
            frames.push((Duration::ZERO, Some(openai_usage(&model, input, count as u64))));
        }
        if fault != "s11-no-done" {
            frames.push((Duration::ZERO, Some("data: [DONE]\n\n".into())));
        }
    }
    Response::builder().status(200).header("content-type", "text/event-stream").body(sse_body(frames, fail)).unwrap()
}

async fn anthropic(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    {
        let mut s = seen.lock().unwrap();
        *s.calls.entry(model.clone()).or_default() += 1;
        s.bodies.push(body.clone());
        s.keys.push(headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned());
    }
    let (fault, count) = parse_model(&model);
    let count = count.min(body["max_tokens"].as_u64().unwrap_or(1000) as usize);
    if fault == "overloaded-first" {
        return (StatusCode::from_u16(529).unwrap(), Json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))).into_response();
    }
    if !body["stream"].as_bool().unwrap_or(false) {
        return Json(json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [{"type": "text", "text": words(count).concat()}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": count}}))
        .into_response();
    }
    let ev = |name: &str, data: Value| Some(format!("event: {name}\ndata: {data}\n\n"));
    let mut frames = vec![
        (Duration::ZERO, ev("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}))),
        (Duration::ZERO, ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))),
        (Duration::ZERO, ev("ping", json!({"type": "ping"}))),
    ];
    for (i, w) in words(count).iter().enumerate() {
        if fault == "overloaded-mid" && i == count / 2 {
            frames.push((Duration::ZERO, ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))));
            return Response::builder().status(200).header("content-type", "text/event-stream").body(sse_body(frames, false)).unwrap();
        }
        frames.push((Duration::ZERO, ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}))));
    }
    frames.push((Duration::ZERO, ev("content_block_stop", json!({"type": "content_block_stop", "index": 0}))));
    frames.push((Duration::ZERO, ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": count}}))));
    frames.push((Duration::ZERO, ev("message_stop", json!({"type": "message_stop"}))));
    Response::builder().status(200).header("content-type", "text/event-stream").body(sse_body(frames, false)).unwrap()
}

async fn ollama(State(seen): State<Arc<Mutex<Seen>>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    {
        let mut s = seen.lock().unwrap();
        *s.calls.entry(model.clone()).or_default() += 1;
        s.bodies.push(body.clone());
    }
    let (_, count) = parse_model(&model);
    let count = count.min(body.pointer("/options/num_predict").and_then(Value::as_u64).unwrap_or(1000) as usize);
    let done = json!({"model": model, "created_at": "2026-12-06T00:00:00Z", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop",
        "total_duration": 1000, "load_duration": 10, "prompt_eval_count": 11, "prompt_eval_duration": 100, "eval_count": count, "eval_duration": 500});
    if body["stream"].as_bool() == Some(false) {
        let mut d = done.clone();
        d["message"]["content"] = words(count).concat().into();
        return Json(d).into_response();
    }
    let mut frames: Vec<(Duration, Option<String>)> = words(count)
        .iter()
        .map(|w| (Duration::ZERO, Some(format!("{}\n", json!({"model": model, "created_at": "2026-12-06T00:00:00Z", "message": {"role": "assistant", "content": w}, "done": false})))))
        .collect();
    frames.push((Duration::ZERO, Some(format!("{done}\n"))));
    Response::builder().status(200).header("content-type", "application/x-ndjson").body(sse_body(frames, false)).unwrap()
}

async fn embeddings(State(seen): State<Arc<Mutex<Seen>>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    *seen.lock().unwrap().calls.entry(model.clone()).or_default() += 1;
    let inputs = match &body["input"] {
        Value::Array(a) => a.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]})).collect();
    Json(json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 7, "total_tokens": 7}})).into_response()
}

/// Starts a fake provider on loopback.
pub async fn fake() -> Fake {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(anthropic))
        .route("/api/chat", post(ollama))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake { addr, seen }
}

/// Callers by their bearer: `user:<id>[:team=<t>][:key=<k>][:admin]`.
pub struct TestVerifier;

#[async_trait::async_trait]
impl Verifier for TestVerifier {
    async fn verify(&self, headers: &HeaderMap) -> Result<Caller, AionError> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| AionError::Unauthenticated("sign in".into()))?;
        let mut parts = token.split(':');
        if parts.next() != Some("user") {
            return Err(AionError::Unauthenticated("not a test token".into()));
        }
        let user = parts.next().unwrap_or_default().to_owned();
        let mut c = Caller { subject: format!("user:{user}"), user_id: user, team_id: None, key_id: None, admin: false, user_budget: true };
        for p in parts {
            match p.split_once('=') {
                Some(("team", t)) => c.team_id = Some(t.to_owned()),
                Some(("key", k)) => c.key_id = Some(k.to_owned()),
                _ if p == "admin" => c.admin = true,
                _ => {}
            }
        }
        Ok(c)
    }
}

/// Keeps the audit entries.
#[derive(Default)]
pub struct TestAuditor(pub Mutex<Vec<(String, String, Change)>>);

#[async_trait::async_trait]
impl Auditor for TestAuditor {
    async fn registry_changed(&self, who: &Caller, action: &str, change: &Change) {
        self.0.lock().unwrap().push((who.subject.clone(), action.to_owned(), change.clone()));
    }
}

/// A router serving on loopback.
pub struct Served {
    pub url: String,
    pub aion: Arc<Aion>,
    pub auditor: Arc<TestAuditor>,
    pub http: reqwest::Client,
}

impl Served {
    pub fn post(&self, path: &str, who: &str, body: Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url)).bearer_auth(who).json(&body)
    }

    pub fn get(&self, path: &str, who: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(who)
    }
}

/// Serves `aion` on loopback.
pub async fn serve(aion: Arc<Aion>) -> Served {
    let auditor = Arc::new(TestAuditor::default());
    let api = AionApi { aion: aion.clone(), verifier: Arc::new(TestVerifier), auditor: auditor.clone() };
    let app: Router = pinacle_aion::http::router(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served { url: format!("http://{addr}"), aion, auditor, http: reqwest::Client::new() }
}

/// A router on `texts` with budgets kept in `ledger`, tasks in a fresh
/// SQLite file.
pub async fn router_with(texts: [Option<&str>; 4], ledger: Arc<dyn pinacle_aion::budget::Ledger>, dir: &std::path::Path) -> Arc<Aion> {
    let store = pinacle_aion::store::Store::open(&dir.join("aion.db").display().to_string()).await.unwrap();
    Aion::new(Registries::from_texts(texts).unwrap(), ledger, Some(store), Arc::new(NoKeys))
}

/// Reads an SSE body into `(event name, data)` pairs.
pub async fn sse_events(resp: reqwest::Response) -> Vec<(Option<String>, String)> {
    let text = resp.text().await.unwrap_or_default();
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut name = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = Some(n.trim().to_owned());
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
            }
        }
        if name.is_some() || !data.is_empty() {
            out.push((name, data.join("\n")));
        }
    }
    out
}

pub fn _unused(_: Infallible) {}
