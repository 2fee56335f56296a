//! The upstreams, one adapter per wire protocol, each normalised to
//! OpenAI's chat completion shapes: a whole `chat.completion`, or a stream
//! of [`Event`]s (deltas as OpenAI's `choices[].delta`, and usage).
//!
//! The adapters keep the raw bytes in hand (reqwest plus a bounded SSE and
//! NDJSON reader) so that in-band errors, cut streams and missing usage are
//! seen for what they are, never taken for a clean end:
//! - OpenAI-compatible (OpenAI, Azure, vLLM, llama.cpp): `data:` chunks,
//!   `[DONE]`, usage asked for with `stream_options.include_usage` (a usage
//!   chunk with `choices: []` or `null`, or usage merged into the last
//!   chunk), `data: {"error":…}` mid-stream, `:` comments.
//! - Anthropic Messages: `message_start` (input tokens), `content_block_*`,
//!   `ping`, `message_delta` (stop reason, output tokens), `message_stop`,
//!   and `error` events after the 200.
//! - Ollama: NDJSON lines, the last with `done: true` and the counts.
//!
//! A stream that ends without its protocol's end marker is
//! [`ProviderError::Cut`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};

use crate::cost::Tokens;
use crate::registry::{Provider, ProviderKind};

/// Largest SSE event or NDJSON line accepted from an upstream.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Largest whole (non-streamed) upstream answer accepted.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// One piece of a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// OpenAI's `choices[0].delta` (`{"content": "…"}`, `{"role": …}`,
    /// tool calls as they come), and the finish reason once it is known.
    Delta { delta: Value, finish_reason: Option<String> },
    /// Usage as the provider counted it.
    Usage(Tokens),
}

impl Event {
    /// The text a delta adds.
    pub fn text(&self) -> &str {
        match self {
            Event::Delta { delta, .. } => delta.get("content").and_then(Value::as_str).unwrap_or(""),
            Event::Usage(_) => "",
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// An HTTP error answer.
    #[error("{provider} answered {status}: {message}")]
    Status { provider: String, status: u16, message: String, retry_after: Option<Duration> },
    /// The prompt is longer than the model's context.
    #[error("{provider}: the prompt does not fit the model's context: {message}")]
    ContextOverflow { provider: String, message: String },
    /// Could not connect, or the connection broke.
    #[error("{provider} could not be reached: {message}")]
    Connect { provider: String, message: String },
    #[error("{provider} did not answer in time")]
    Timeout { provider: String },
    /// Something that is not the protocol.
    #[error("{provider} sent something malformed: {message}")]
    Malformed { provider: String, message: String },
    /// An error sent inside a stream that had started.
    #[error("{provider} reported an error mid-stream: {message}")]
    InBand { provider: String, message: String },
    /// The stream ended without its end marker.
    #[error("{provider}'s stream ended before it was complete")]
    Cut { provider: String },
}

impl ProviderError {
    /// Whether trying the same provider again may work (and after how long).
    pub fn retry(&self) -> Option<Option<Duration>> {
        match self {
            ProviderError::Status { status, retry_after, .. } if *status == 429 || *status == 408 || *status >= 500 => Some(*retry_after),
            ProviderError::Connect { .. } | ProviderError::Timeout { .. } => Some(None),
            _ => None,
        }
    }

    /// Whether the request itself is at fault (another provider would
    /// refuse it too): a 400 or 422 that is not a context overflow.
    pub fn is_callers_fault(&self) -> bool {
        matches!(self, ProviderError::Status { status: 400 | 422, .. })
    }

    /// Whether it says only that the key was refused or is out of quota.
    pub fn is_about_the_key(&self) -> bool {
        matches!(self, ProviderError::Status { status: 401 | 402 | 403 | 429, .. })
    }

    /// Whether it counts against the provider's health.
    pub fn counts_against_provider(&self) -> bool {
        !self.is_callers_fault() && !matches!(self, ProviderError::ContextOverflow { .. })
    }

    /// A short code for records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Status { status: 429, .. } => "rate_limited",
            ProviderError::Status { status, .. } if *status >= 500 => "upstream_5xx",
            ProviderError::Status { .. } => "upstream_4xx",
            ProviderError::ContextOverflow { .. } => "context_overflow",
            ProviderError::Connect { .. } => "connect",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Malformed { .. } => "malformed",
            ProviderError::InBand { .. } => "in_band_error",
            ProviderError::Cut { .. } => "cut",
        }
    }
}

/// A stream of events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, ProviderError>> + Send>>;

/// A whole answer, as OpenAI's `chat.completion`, with its usage.
#[derive(Debug, Clone)]
pub struct Completion {
    pub body: Value,
    pub usage: Option<Tokens>,
}

/// Calls providers.
#[derive(Clone, Debug)]
pub struct Upstreams {
    http: reqwest::Client,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstreams {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self { http }
    }

    /// The request for `body` (OpenAI's chat request with the upstream's
    /// model name and output cap already set).
    fn request(&self, p: &Provider, key: Option<&str>, body: &Value, stream: bool) -> reqwest::RequestBuilder {
        let (url, wire) = match p.kind {
            ProviderKind::Openai => (format!("{}/chat/completions", p.url), openai_body(body, stream)),
            ProviderKind::Azure => {
                let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
                let version = p.api_version.as_deref().unwrap_or_default();
                (format!("{}/openai/deployments/{model}/chat/completions?api-version={version}", p.url), openai_body(body, stream))
            }
            ProviderKind::Anthropic => (format!("{}/v1/messages", p.url), anthropic_body(body, stream)),
            ProviderKind::Ollama => (format!("{}/api/chat", p.url), ollama_body(body, stream)),
        };
        let mut req = self.http.post(url).json(&wire);
        if let Some(key) = key {
            req = match p.kind {
                ProviderKind::Openai | ProviderKind::Ollama => req.bearer_auth(key),
                ProviderKind::Azure => req.header("api-key", key),
                ProviderKind::Anthropic => req.header("x-api-key", key),
            };
        }
        if p.kind == ProviderKind::Anthropic {
            req = req.header("anthropic-version", "2023-06-01");
        }
        if !stream {
            req = req.timeout(Duration::from_millis(p.timeout_ms));
        }
        req
    }

    /// One whole answer.
    pub async fn complete(&self, p: &Provider, key: Option<&str>, body: &Value) -> Result<Completion, ProviderError> {
        let resp = self.request(p, key, body, false).send().await.map_err(|e| send_error(p, &e))?;
        let resp = check_status(p, resp).await?;
        let bytes = read_bounded(p, resp).await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| malformed(p, format!("not JSON: {e}")))?;
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            return Err(ProviderError::InBand { provider: p.id.clone(), message: error_message(e) });
        }
        let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
        match p.kind {
            ProviderKind::Openai | ProviderKind::Azure => {
                if v.get("choices").and_then(Value::as_array).is_none() {
                    return Err(malformed(p, "no choices in the answer".into()));
                }
                let usage = openai_usage(v.get("usage"));
                Ok(Completion { body: v, usage })
            }
            ProviderKind::Anthropic => anthropic_completion(p, &v, model),
            ProviderKind::Ollama => ollama_completion(p, &v, model),
        }
    }

    /// A stream. The answer's status is checked before it returns; the
    /// events then come as the provider sends them.
    pub async fn stream(&self, p: &Provider, key: Option<&str>, body: &Value) -> Result<EventStream, ProviderError> {
        let resp = self.request(p, key, body, true).send().await.map_err(|e| send_error(p, &e))?;
        let resp = check_status(p, resp).await?;
        let provider = p.id.clone();
        let bytes = resp.bytes_stream().map(move |r| r.map_err(|e| e.to_string()));
        Ok(match p.kind {
            ProviderKind::Openai | ProviderKind::Azure => Box::pin(openai_events(provider, bytes)),
            ProviderKind::Anthropic => Box::pin(anthropic_events(provider, bytes)),
            ProviderKind::Ollama => Box::pin(ollama_events(provider, bytes)),
        })
    }

    /// `/v1/embeddings` of an OpenAI-compatible provider, passed through.
    pub async fn embeddings(&self, p: &Provider, key: Option<&str>, body: &Value) -> Result<Value, ProviderError> {
        if !matches!(p.kind, ProviderKind::Openai | ProviderKind::Azure) {
            return Err(ProviderError::Status { provider: p.id.clone(), status: 501, message: "embeddings are served by OpenAI-compatible providers only".into(), retry_after: None });
        }
        let url = match p.kind {
            ProviderKind::Azure => {
                let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
                format!("{}/openai/deployments/{model}/embeddings?api-version={}", p.url, p.api_version.as_deref().unwrap_or_default())
            }
            _ => format!("{}/embeddings", p.url),
        };
        let mut req = self.http.post(url).json(body).timeout(Duration::from_millis(p.timeout_ms));
        if let Some(key) = key {
            req = if p.kind == ProviderKind::Azure { req.header("api-key", key) } else { req.bearer_auth(key) };
        }
        let resp = req.send().await.map_err(|e| send_error(p, &e))?;
        let resp = check_status(p, resp).await?;
        let bytes = read_bounded(p, resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| malformed(p, format!("not JSON: {e}")))
    }
}

fn malformed(p: &Provider, message: String) -> ProviderError {
    ProviderError::Malformed { provider: p.id.clone(), message }
}

fn send_error(p: &Provider, e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout { provider: p.id.clone() }
    } else {
        // the error's text carries the URL, never a key
        ProviderError::Connect { provider: p.id.clone(), message: e.without_url_string() }
    }
}

trait WithoutUrl {
    fn without_url_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_string(&self) -> String {
        let mut s = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(self);
        while let Some(e) = source {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&e.to_string());
            source = e.source();
        }
        s
    }
}

async fn read_bounded(p: &Provider, resp: reqwest::Response) -> Result<Bytes, ProviderError> {
    let mut out = BytesMut::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| if e.is_timeout() { ProviderError::Timeout { provider: p.id.clone() } } else { ProviderError::Cut { provider: p.id.clone() } })?;
        if out.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(malformed(p, format!("the answer is over {MAX_BODY_BYTES} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// An error answer as a [`ProviderError`], reading at most 64 KiB of it.
async fn check_status(p: &Provider, resp: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let mut text = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        text.extend_from_slice(&chunk);
        if text.len() > 64 * 1024 {
            break;
        }
    }
    let message = serde_json::from_slice::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").map(error_message))
        .unwrap_or_else(|| String::from_utf8_lossy(&text[..text.len().min(500)]).into_owned());
    let lower = message.to_ascii_lowercase();
    if (status.as_u16() == 400 || status.as_u16() == 413)
        && (lower.contains("context_length") || lower.contains("context length") || lower.contains("maximum context") || lower.contains("too many tokens") || lower.contains("exceeds the context") || lower.contains("prompt is too long"))
    {
        return Err(ProviderError::ContextOverflow { provider: p.id.clone(), message });
    }
    Err(ProviderError::Status { provider: p.id.clone(), status: status.as_u16(), message, retry_after })
}

/// `Retry-After` in seconds (HTTP dates are rare from APIs and read as 1 s).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    (!v.is_empty()).then_some(Duration::from_secs(1))
}

fn error_message(e: &Value) -> String {
    match e {
        Value::String(s) => s.clone(),
        _ => e.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| e.to_string()),
    }
}

fn openai_usage(u: Option<&Value>) -> Option<Tokens> {
    let u = u.filter(|u| u.is_object())?;
    let input = u.get("prompt_tokens").and_then(Value::as_u64)?;
    let output = u.get("completion_tokens").and_then(Value::as_u64)?;
    Some(Tokens { input, output, estimated: false })
}

/// OpenAI's body for an OpenAI-compatible upstream: usage always asked for
/// when streaming.
fn openai_body(body: &Value, stream: bool) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        o.insert("stream".into(), stream.into());
        if stream {
            let opts = o.entry("stream_options").or_insert_with(|| json!({}));
            if let Some(opts) = opts.as_object_mut() {
                opts.insert("include_usage".into(), true.into());
            } else {
                *opts = json!({"include_usage": true});
            }
        } else {
            o.remove("stream_options");
        }
    }
    b
}

fn max_tokens(body: &Value) -> Option<u64> {
    body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).and_then(Value::as_u64)
}

/// OpenAI messages as Anthropic's: system messages go to `system`; text
/// parts are joined.
fn anthropic_body(body: &Value, stream: bool) -> Value {
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let text = content_text(m.get("content"));
        match role {
            "system" | "developer" => system.push(text),
            "assistant" => messages.push(json!({"role": "assistant", "content": text})),
            _ => messages.push(json!({"role": "user", "content": text})),
        }
    }
    let mut b = json!({
        "model": body.get("model").cloned().unwrap_or(Value::Null),
        "messages": messages,
        "max_tokens": max_tokens(body).unwrap_or(1024),
        "stream": stream,
    });
    if !system.is_empty() {
        b["system"] = system.join("\n\n").into();
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = body.get(k) {
            b[k] = v.clone();
        }
    }
    if let Some(stop) = body.get("stop") {
        b["stop_sequences"] = if stop.is_string() { json!([stop]) } else { stop.clone() };
    }
    b
}

fn ollama_body(body: &Value, stream: bool) -> Value {
    let messages: Vec<Value> = body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| json!({"role": m.get("role").and_then(Value::as_str).unwrap_or("user"), "content": content_text(m.get("content"))}))
        .collect();
    let mut options = json!({});
    if let Some(n) = max_tokens(body) {
        options["num_predict"] = n.into();
    }
    if let Some(t) = body.get("temperature") {
        options["temperature"] = t.clone();
    }
    json!({"model": body.get("model").cloned().unwrap_or(Value::Null), "messages": messages, "stream": stream, "options": options})
}

/// A message's text: a string, or the text parts of a list.
pub fn content_text(c: Option<&Value>) -> String {
    match c {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// OpenAI's `chat.completion` for a text answer.
pub fn completion_body(model: &str, text: &str, finish_reason: &str, usage: Option<Tokens>) -> Value {
    let mut v = json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason, "logprobs": null}],
    });
    if let Some(u) = usage {
        v["usage"] = json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output});
    }
    v
}

fn anthropic_completion(p: &Provider, v: &Value, model: &str) -> Result<Completion, ProviderError> {
    let Some(content) = v.get("content").and_then(Value::as_array) else { return Err(malformed(p, "no content in the answer".into())) };
    let text: String = content.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
    let finish = anthropic_stop(v.get("stop_reason").and_then(Value::as_str));
    let usage = v.get("usage").and_then(|u| {
        Some(Tokens { input: u.get("input_tokens")?.as_u64()?, output: u.get("output_tokens")?.as_u64()?, estimated: false })
    });
    Ok(Completion { body: completion_body(model, &text, finish, usage), usage })
}

fn anthropic_stop(s: Option<&str>) -> &'static str {
    match s {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

fn ollama_completion(p: &Provider, v: &Value, model: &str) -> Result<Completion, ProviderError> {
    let Some(text) = v.pointer("/message/content").and_then(Value::as_str) else { return Err(malformed(p, "no message in the answer".into())) };
    let usage = ollama_usage(v);
    let finish = if v.get("done_reason").and_then(Value::as_str) == Some("length") { "length" } else { "stop" };
    Ok(Completion { body: completion_body(model, text, finish, usage), usage })
}

fn ollama_usage(v: &Value) -> Option<Tokens> {
    Some(Tokens { input: v.get("prompt_eval_count")?.as_u64()?, output: v.get("eval_count")?.as_u64()?, estimated: false })
}

/// Splits a byte stream into lines, each at most [`MAX_EVENT_BYTES`];
/// the last item is `Err` when the bytes stop with an error or an
/// unfinished line is over the limit.
fn lines<S>(bytes: S) -> impl Stream<Item = Result<String, String>> + Send
where
    S: Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    futures::stream::unfold((Box::pin(bytes), BytesMut::new(), false), |(mut bytes, mut buf, mut ended)| async move {
        loop {
            if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(i + 1);
                let text = String::from_utf8_lossy(&line[..i]).trim_end_matches('\r').to_owned();
                return Some((Ok(text), (bytes, buf, ended)));
            }
            if ended {
                if buf.is_empty() {
                    return None;
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                buf.clear();
                return Some((Ok(text), (bytes, buf, ended)));
            }
            if buf.len() > MAX_EVENT_BYTES {
                buf.clear();
                ended = true;
                return Some((Err(format!("a line over {MAX_EVENT_BYTES} bytes")), (bytes, buf, ended)));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    ended = true;
                    buf.clear();
                    return Some((Err(e), (bytes, buf, ended)));
                }
                None => ended = true,
            }
        }
    })
}

/// SSE events (`event:` name and joined `data:`), comments skipped.
fn sse<S>(bytes: S) -> impl Stream<Item = Result<(Option<String>, String), String>> + Send
where
    S: Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    futures::stream::unfold((Box::pin(lines(bytes)), None::<String>, String::new(), false), |(mut lines, mut name, mut data, mut done)| async move {
        if done {
            return None;
        }
        loop {
            match lines.next().await {
                Some(Ok(line)) if line.is_empty() => {
                    if data.is_empty() && name.is_none() {
                        continue;
                    }
                    let event = (name.take(), std::mem::take(&mut data));
                    return Some((Ok(event), (lines, name, data, done)));
                }
                Some(Ok(line)) => {
                    if line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').map_or((line.as_str(), ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
                    match field {
                        "event" => name = Some(value.to_owned()),
                        "data" => {
                            if data.len() + value.len() > MAX_EVENT_BYTES {
                                done = true;
                                return Some((Err(format!("an event over {MAX_EVENT_BYTES} bytes")), (lines, name, data, done)));
                            }
                            if !data.is_empty() {
                                data.push('\n');
                            }
                            data.push_str(value);
                        }
                        _ => {}
                    }
                }
                Some(Err(e)) => {
                    done = true;
                    return Some((Err(e), (lines, name, data, done)));
                }
                None => {
                    done = true;
                    if data.is_empty() {
                        return None;
                    }
                    let event = (name.take(), std::mem::take(&mut data));
                    return Some((Ok(event), (lines, name, data, done)));
                }
            }
        }
    })
}

/// Reads protocol items (`T`) into events with `step`, which appends the
/// events of one item and says whether it was the end marker. The stream
/// ends at the marker; input that stops before it is [`ProviderError::Cut`].
fn decode<T, S, F>(provider: String, input: S, step: F) -> impl Stream<Item = Result<Event, ProviderError>> + Send
where
    T: Send + 'static,
    S: Stream<Item = Result<T, String>> + Send + 'static,
    F: FnMut(T, &mut VecDeque<Event>) -> Result<bool, ProviderError> + Send + 'static,
{
    struct St<S, F> {
        input: Pin<Box<S>>,
        step: F,
        pending: VecDeque<Event>,
        finished: bool,
        failed: bool,
        provider: String,
    }
    let st = St { input: Box::pin(input), step, pending: VecDeque::new(), finished: false, failed: false, provider };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok(e), st));
            }
            if st.failed || st.finished {
                return None;
            }
            match st.input.next().await {
                Some(Ok(item)) => match (st.step)(item, &mut st.pending) {
                    Ok(done) => st.finished = done,
                    Err(e) => {
                        st.failed = true;
                        return Some((Err(e), st));
                    }
                },
                Some(Err(_)) | None => {
                    st.failed = true;
                    let e = ProviderError::Cut { provider: st.provider.clone() };
                    return Some((Err(e), st));
                }
            }
        }
    })
}

fn openai_events<S>(provider: String, bytes: S) -> impl Stream<Item = Result<Event, ProviderError>> + Send
where
    S: Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    let p = provider.clone();
    decode(provider, sse(bytes), move |(_, data): (Option<String>, String), out: &mut VecDeque<Event>| {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        let v: Value = serde_json::from_str(data).map_err(|e| ProviderError::Malformed { provider: p.clone(), message: format!("a chunk that is not JSON: {e}") })?;
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            return Err(ProviderError::InBand { provider: p.clone(), message: error_message(e) });
        }
        let choices = v.get("choices");
        match choices {
            Some(Value::Array(items)) => {
                for c in items.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) {
                    let delta = c.get("delta").cloned().unwrap_or_else(|| json!({}));
                    let finish_reason = c.get("finish_reason").and_then(Value::as_str).map(str::to_owned);
                    out.push_back(Event::Delta { delta, finish_reason });
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => return Err(ProviderError::Malformed { provider: p.clone(), message: "choices is not a list".into() }),
        }
        if let Some(u) = openai_usage(v.get("usage")) {
            out.push_back(Event::Usage(u));
        }
        Ok(false)
    })
}

fn anthropic_events<S>(provider: String, bytes: S) -> impl Stream<Item = Result<Event, ProviderError>> + Send
where
    S: Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    let p = provider.clone();
    let mut input_tokens = 0u64;
    let mut started = false;
    decode(provider, sse(bytes), move |(name, data): (Option<String>, String), out: &mut VecDeque<Event>| {
        let v: Value = serde_json::from_str(&data).map_err(|e| ProviderError::Malformed { provider: p.clone(), message: format!("an event that is not JSON: {e}") })?;
        let kind = name.as_deref().or_else(|| v.get("type").and_then(Value::as_str)).unwrap_or_default().to_owned();
        match kind.as_str() {
            "message_start" => {
                input_tokens = v.pointer("/message/usage/input_tokens").and_then(Value::as_u64).unwrap_or(0);
                started = true;
                out.push_back(Event::Delta { delta: json!({"role": "assistant", "content": ""}), finish_reason: None });
            }
            "content_block_delta" => {
                if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                    out.push_back(Event::Delta { delta: json!({"content": t}), finish_reason: None });
                }
            }
            "message_delta" => {
                let stop = anthropic_stop(v.pointer("/delta/stop_reason").and_then(Value::as_str));
                out.push_back(Event::Delta { delta: json!({}), finish_reason: Some(stop.to_owned()) });
                if let Some(o) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    out.push_back(Event::Usage(Tokens { input: input_tokens, output: o, estimated: false }));
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let m = v.get("error").map(error_message).unwrap_or_else(|| "error".into());
                return Err(ProviderError::InBand { provider: p.clone(), message: m });
            }
            "ping" | "content_block_start" | "content_block_stop" => {}
            _ if !started => return Err(ProviderError::Malformed { provider: p.clone(), message: format!("unexpected event {kind:?} before message_start") }),
            _ => {}
        }
        Ok(false)
    })
}

fn ollama_events<S>(provider: String, bytes: S) -> impl Stream<Item = Result<Event, ProviderError>> + Send
where
    S: Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    let p = provider.clone();
    decode(provider, lines(bytes), move |line: String, out: &mut VecDeque<Event>| {
        if line.trim().is_empty() {
            return Ok(false);
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| ProviderError::Malformed { provider: p.clone(), message: format!("a line that is not JSON: {e}") })?;
        if let Some(e) = v.get("error") {
            return Err(ProviderError::InBand { provider: p.clone(), message: error_message(e) });
        }
        if let Some(t) = v.pointer("/message/content").and_then(Value::as_str) {
            if !t.is_empty() {
                out.push_back(Event::Delta { delta: json!({"content": t}), finish_reason: None });
            }
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            let finish = if v.get("done_reason").and_then(Value::as_str) == Some("length") { "length" } else { "stop" };
            out.push_back(Event::Delta { delta: json!({}), finish_reason: Some(finish.to_owned()) });
            if let Some(u) = ollama_usage(&v) {
                out.push_back(Event::Usage(u));
            }
            return Ok(true);
        }
        Ok(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn events<S>(s: S) -> Vec<Result<Event, ProviderError>>
    where
        S: Stream<Item = Result<Event, ProviderError>>,
    {
        s.collect().await
    }

    fn chunks(parts: &[&str]) -> impl Stream<Item = Result<Bytes, String>> + Send + 'static {
        let owned: Vec<Result<Bytes, String>> = parts.iter().map(|p| Ok(Bytes::from(p.to_string()))).collect();
        futures::stream::iter(owned)
    }

    #[tokio::test]
    async fn openai_chunks_split_anywhere_with_comments_and_a_usage_chunk() {
        let s = chunks(&[
            ": keep-alive\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"He\"},\"finish_reason\":null}]}\n",
            "\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\r\n\r\n",
            "data: {\"choices\":null,\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\ndata: [DO",
            "NE]\n\n",
        ]);
        let got = events(openai_events("p".into(), s)).await;
        let text: String = got.iter().filter_map(|e| e.as_ref().ok()).map(Event::text).collect();
        assert_eq!(text, "Hello");
        assert_eq!(got.last().cloned(), Some(Ok(Event::Usage(Tokens { input: 5, output: 2, estimated: false }))));
    }

    #[tokio::test]
    async fn an_openai_stream_without_done_is_cut_and_an_in_band_error_is_an_error() {
        let s = chunks(&["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"]);
        let got = events(openai_events("p".into(), s)).await;
        assert_eq!(got.last().cloned(), Some(Err(ProviderError::Cut { provider: "p".into() })));
        let s = chunks(&["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\n"]);
        let got = events(openai_events("p".into(), s)).await;
        assert!(matches!(got.last(), Some(Err(ProviderError::InBand { message, .. })) if message == "overloaded"));
        let s = chunks(&["data: {not json\n\n"]);
        assert!(matches!(events(openai_events("p".into(), s)).await.last(), Some(Err(ProviderError::Malformed { .. }))));
    }

    #[tokio::test]
    async fn anthropic_events_map_to_deltas_and_usage() {
        let s = chunks(&[
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ]);
        let got: Vec<Event> = events(anthropic_events("a".into(), s)).await.into_iter().map(|e| e.expect("ok")).collect();
        assert_eq!(got.iter().map(Event::text).collect::<String>(), "Hi");
        assert!(got.contains(&Event::Usage(Tokens { input: 9, output: 3, estimated: false })));
        let s = chunks(&["event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"]);
        assert!(matches!(events(anthropic_events("a".into(), s)).await.last(), Some(Err(ProviderError::InBand { .. }))));
    }

    #[tokio::test]
    async fn ollama_lines_end_at_done_with_counts() {
        let s = chunks(&[
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"O\"},\"done\":false}\n{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"k\"},\"done\":false}\n",
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":4,\"eval_count\":2}\n",
        ]);
        let got: Vec<Event> = events(ollama_events("o".into(), s)).await.into_iter().map(|e| e.expect("ok")).collect();
        assert_eq!(got.iter().map(Event::text).collect::<String>(), "Ok");
        assert_eq!(got.last(), Some(&Event::Usage(Tokens { input: 4, output: 2, estimated: false })));
    }

    #[tokio::test]
    async fn an_endless_line_is_refused_at_the_limit() {
        let big = "x".repeat(MAX_EVENT_BYTES / 4);
        let parts: Vec<&str> = std::iter::repeat_n(big.as_str(), 6).collect();
        let got = events(openai_events("p".into(), chunks(&parts))).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_errors_say_whether_to_retry() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::from_secs(1)));
        let e = ProviderError::Status { provider: "p".into(), status: 429, message: String::new(), retry_after: Some(Duration::from_secs(1)) };
        assert_eq!(e.retry(), Some(Some(Duration::from_secs(1))));
        let e = ProviderError::Status { provider: "p".into(), status: 400, message: String::new(), retry_after: None };
        assert!(e.retry().is_none() && e.is_callers_fault());
    }

    #[test]
    fn anthropic_bodies_take_system_messages_apart() {
        let b = anthropic_body(&json!({"model": "c", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 9, "stop": "x"}), true);
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!((b["max_tokens"].as_u64(), b["stop_sequences"].clone()), (Some(9), json!(["x"])));
    }
}
