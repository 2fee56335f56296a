//! The router's benchmark parts (driven by `scripts/bench/router.sh`):
//!
//! - `fake PORT`: a fake OpenAI provider on loopback (a fixed answer, or
//!   10 streamed chunks with a usage chunk), as fast as it can answer.
//! - `router PORT FAKE_URL`: the router's HTTP API on loopback in front of
//!   it (model `ok`; any bearer is accepted as user `bench`).
//! - `load URL RPS SECS [stream]`: an open-loop load at a fixed rate —
//!   each request's latency counts from when it was due, so a server that
//!   falls behind is charged its queueing (no coordinated omission).
//! - `closed URL CONNS SECS`: as fast as `CONNS` connections go.
//! - `ttft URL N`: `N` streamed requests one after another: time to the
//!   first content chunk.
//! - `wasm DIR N` (feature `wasm`): a WAT module of `DIR` instantiated and
//!   called `N` times (a fresh instance each, as the router does), and a
//!   runaway loop stopped by its 50 ms deadline: by how much it overshoots.
//!
//! Each load mode prints one JSON line of figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"ok","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}"#;

async fn fake_chat(Json(body): Json<Value>) -> Response {
    if !body["stream"].as_bool().unwrap_or(false) {
        return ([("content-type", "application/json")], ANSWER).into_response();
    }
    let mut frames = String::new();
    frames.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"ok\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    for w in ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog", "."] {
        frames.push_str(&format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"ok\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":null}}]}}\n\n"));
    }
    frames.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"ok\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    if body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true) {
        frames.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"ok\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":10,\"total_tokens\":22}}\n\n");
    }
    frames.push_str("data: [DONE]\n\n");
    Response::builder().header("content-type", "text/event-stream").body(Body::from(frames)).unwrap()
}

async fn serve(port: u16, app: Router) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    println!("ready");
    axum::serve(listener, app).await.unwrap();
}

struct AnyBearer;

#[async_trait::async_trait]
impl pinacle_aion::http::Verifier for AnyBearer {
    async fn verify(&self, headers: &HeaderMap) -> Result<pinacle_aion::engine::Caller, pinacle_aion::error::AionError> {
        if headers.get("authorization").is_none() {
            return Err(pinacle_aion::error::AionError::Unauthenticated("no bearer".into()));
        }
        Ok(pinacle_aion::engine::Caller { subject: "user:bench".into(), user_id: "bench".into(), team_id: None, key_id: Some("token:bench".into()), admin: false, user_budget: true })
    }
}

struct NoAudit;

#[async_trait::async_trait]
impl pinacle_aion::http::Auditor for NoAudit {
    async fn registry_changed(&self, _: &pinacle_aion::engine::Caller, _: &str, _: &pinacle_aion::registries::Change) {}
}

async fn router(port: u16, fake: &str, db: &str) {
    let mut models = format!("providers:\n  fake:\n    kind: openai\n    url: {fake}/v1\n    cloud: false\n");
    if let Ok(llama) = std::env::var("AION_BENCH_LLAMA_URL") {
        models.push_str(&format!("  llama:\n    kind: openai\n    url: {llama}/v1\n    cloud: false\n"));
    }
    models.push_str("models:\n  ok:\n    provider: fake\n    tier: local\n    price: {input: 0.15, output: 0.6}\n    max_output: 256\n");
    if std::env::var("AION_BENCH_LLAMA_URL").is_ok() {
        models.push_str("  smollm2:\n    provider: llama\n    tier: local\n    price: {input: 0, output: 0}\n    max_output: 64\n");
    }
    let policies = "budgets:\n  key: {default_usd: 1000000, hard_cap_usd: 1000000, period: month}\n";
    let with_budget = std::env::var("AION_BENCH_BUDGET").is_ok();
    let registries = pinacle_aion::registries::Registries::from_texts([Some(&models), None, with_budget.then_some(policies), None]).unwrap();
    let store = pinacle_aion::store::Store::open(db).await.unwrap();
    let ledger: Arc<dyn pinacle_aion::budget::Ledger> = Arc::new(pinacle_aion::store::SqlLedger::new(store.clone()));
    let aion = pinacle_aion::engine::Aion::new(registries, ledger, Some(store), Arc::new(pinacle_aion::engine::NoKeys));
    let app: Router = pinacle_aion::http::router(pinacle_aion::http::AionApi { aion, verifier: Arc::new(AnyBearer), auditor: Arc::new(NoAudit) });
    serve(port, app).await;
}

fn body(stream: bool) -> Value {
    body_for("ok", 64, stream)
}

fn body_for(model: &str, max_tokens: u64, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Tell me about foxes."}], "max_tokens": max_tokens, "stream": stream})
}

/// The bearer sent (`BENCH_BEARER`, default `sk-bench`).
fn bearer() -> String {
    std::env::var("BENCH_BEARER").unwrap_or_else(|_| "sk-bench".into())
}

/// Whether `buf` holds a chunk with non-empty content.
fn has_content(buf: &[u8]) -> bool {
    let needle = b"\"content\":\"";
    buf.windows(needle.len() + 1).any(|w| &w[..needle.len()] == needle && w[needle.len()] != b'"')
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(4096).tcp_nodelay(true).timeout(Duration::from_secs(30)).build().unwrap()
}

async fn one(http: &reqwest::Client, url: &str, stream: bool) -> bool {
    let Ok(resp) = http.post(format!("{url}/v1/chat/completions")).bearer_auth(bearer()).json(&body(stream)).send().await else { return false };
    let ok = resp.status().is_success();
    let bytes = resp.bytes().await;
    ok && bytes.is_ok_and(|b| if stream { b.windows(12).any(|w| w == b"data: [DONE]") } else { b.starts_with(b"{") })
}

async fn load(url: &str, rps: f64, secs: f64, stream: bool) -> Value {
    let http = client();
    let n = (rps * secs) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rps);
        tokio::time::sleep_until(due).await;
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let ok = one(&http, &url, stream).await;
            (ok, due.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        let (ok, ms) = t.await.unwrap();
        if ok {
            lat.push(ms);
        } else {
            errors += 1;
        }
    }
    let took = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    json!({"rps": rps, "secs": secs, "sent": n, "ok": lat.len(), "errors": errors, "achieved_rps": lat.len() as f64 / took, "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99)})
}

async fn closed(url: &str, conns: usize, secs: f64) -> Value {
    let http = client();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < until {
                    let t0 = Instant::now();
                    if one(&http, &url, false).await {
                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    lat.sort_by(f64::total_cmp);
    json!({"conns": conns, "rps": lat.len() as f64 / secs, "errors": errors, "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99)})
}

async fn ttft(url: &str, n: usize, model: &str, max_tokens: u64) -> Value {
    let http = client();
    let mut first = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        let Ok(resp) = http.post(format!("{url}/v1/chat/completions")).bearer_auth(bearer()).json(&body_for(model, max_tokens, true)).send().await else {
            errors += 1;
            continue;
        };
        let mut s = resp.bytes_stream();
        let mut seen = false;
        let mut buf = Vec::new();
        let mut broke = false;
        while let Some(chunk) = s.next().await {
            let Ok(chunk) = chunk else {
                broke = true;
                break;
            };
            buf.extend_from_slice(&chunk);
            if !seen && has_content(&buf) {
                first.push(t0.elapsed().as_secs_f64() * 1000.0);
                seen = true;
            }
        }
        if broke || !seen {
            errors += 1;
            continue;
        }
        total.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    first.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    json!({"n": n, "errors": errors, "ttft_p50_ms": pct(&first, 0.5), "ttft_p99_ms": pct(&first, 0.99), "total_p50_ms": pct(&total, 0.5), "total_p95_ms": pct(&total, 0.95), "seen": first.len()})
}

#[cfg(feature = "wasm")]
fn wasm(dir: &str, n: usize) -> Value {
    let host = pinacle_aion::modules::ModuleHost::new().unwrap();
    let manifest = |name: &str, timeout: u64| {
        let text = format!("modules:\n  {name}:\n    runtime: wasm\n    source: {name}.wat\n    resources: {{memory_mb: 8, fuel: 100000000000, timeout_ms: {timeout}}}\n");
        let (reg, _) = pinacle_aion::registry::Registry::parse([None, None, None, Some(&text)]).unwrap();
        reg.modules[name].clone()
    };
    let redact = host.compile(&manifest("redact", 100), Some(std::path::Path::new(dir))).unwrap();
    let input = json!({"intent": "chat", "messages": [{"role": "user", "content": "refund order 12345 to card 4111 1111 1111 1111"}]});
    for _ in 0..200 {
        redact.call(&input).unwrap();
    }
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        redact.call(&input).unwrap();
        us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    let runaway = host.compile(&manifest("runaway", 50), Some(std::path::Path::new(dir))).unwrap();
    let mut over = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let _ = runaway.call(&json!({}));
        over.push(t0.elapsed().as_secs_f64() * 1000.0 - 50.0);
    }
    over.sort_by(f64::total_cmp);
    json!({"calls": n, "call_p50_us": pct(&us, 0.5), "call_p99_us": pct(&us, 0.99), "runaway_timeout_ms": 50, "overshoot_p50_ms": pct(&over, 0.5), "overshoot_max_ms": over.last()})
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "fake" => serve(arg(1).parse().unwrap(), Router::new().route("/v1/chat/completions", post(fake_chat))).await,
        "router" => router(arg(1).parse().unwrap(), &arg(2), &arg(3)).await,
        "load" => println!("{}", load(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap(), arg(4) == "stream").await),
        "closed" => println!("{}", closed(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap()).await),
        "ttft" => {
            let model = if arg(3).is_empty() { "ok".to_owned() } else { arg(3) };
            println!("{}", ttft(&arg(1), arg(2).parse().unwrap(), &model, arg(4).parse().unwrap_or(64)).await)
        }
        #[cfg(feature = "wasm")]
        "wasm" => println!("{}", wasm(&arg(1), arg(2).parse().unwrap())),
        _ => eprintln!("usage: router_bench fake PORT | router PORT FAKE_URL DB | load URL RPS SECS [stream] | closed URL CONNS SECS | ttft URL N [MODEL MAXTOK] | wasm DIR N"),
    }
}
