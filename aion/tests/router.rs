//! The router end to end on loopback: its HTTP API in front of wire-true
//! fake providers with the failoverbench faults, real budgets in SQLite,
//! tasks with their streams, privacy, reloads under load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fake, router_with, serve, sse_events, Fake};
use pinacle_aion::budget::{Ledger, MemoryLedger};
use pinacle_aion::store::{SqlLedger, Store};
use serde_json::{json, Value};

/// models.yml for a local fake and a cloud fake; every model's name on
/// the wire is its fault (see `common`), and each model has a provider of
/// its own (`p-<id>`), so one fault's breaker or back-off leaves the
/// others alone.
fn models(local: &Fake, cloud: &Fake, faults: &[(&str, &str, bool)]) -> String {
    let mut s = format!("providers:\n  claude:\n    kind: anthropic\n    url: {}\n    cloud: true\n  ollama:\n    kind: ollama\n    url: {}\n    cloud: false\n", cloud.url(), local.url());
    for (id, _, on_cloud) in faults {
        let url = if *on_cloud { cloud.url() } else { local.url() };
        s.push_str(&format!("  p-{id}:\n    kind: openai\n    url: {url}/v1\n    cloud: {on_cloud}\n    timeout_ms: 1500\n"));
    }
    s.push_str("models:\n");
    for (id, upstream, on_cloud) in faults {
        s.push_str(&format!("  {id}:\n    provider: p-{id}\n    upstream: \"{upstream}\"\n    tier: {}\n    price: {{input: 1, output: 2}}\n    max_output: 64\n", if *on_cloud { "api" } else { "local" }));
    }
    s.push_str("  claude-ok:\n    provider: claude\n    upstream: \"ok:6\"\n    tier: api\n    price: {input: 3, output: 15}\n  claude-mid:\n    provider: claude\n    upstream: \"overloaded-mid:8\"\n    tier: api\n    price: {input: 3, output: 15}\n");
    s.push_str("  llama:\n    provider: ollama\n    upstream: \"ok:5\"\n    tier: local\n    price: {input: 0, output: 0}\n");
    s
}

/// Adds `fallbacks: [..]` to model `id`.
fn with_fallbacks(models: &str, id: &str, fallbacks: &str) -> String {
    models.replace(&format!("  {id}:\n    provider: p-{id}\n"), &format!("  {id}:\n    provider: p-{id}\n    fallbacks: [{fallbacks}]\n"))
}

const POLICY: &str = "retries: {max: 1, max_retry_after_ms: 2000}\ncircuit_breaker: {failures: 3, open_ms: 60000}\nstream: {first_token_timeout_ms: 600, stall_timeout_ms: 600}\n";

async fn chat(s: &common::Served, who: &str, model: &str, stream: bool, extra: Value) -> reqwest::Response {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    s.post("/v1/chat/completions", who, body).send().await.unwrap()
}

/// The text and the last data of an OpenAI stream.
fn stream_text(events: &[(Option<String>, String)]) -> (String, Option<Value>, bool) {
    let mut text = String::new();
    let mut done = false;
    let mut last = None;
    for (_, data) in events {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(t) = v.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            text.push_str(t);
        }
        last = Some(v);
    }
    (text, last, done)
}

#[tokio::test]
async fn a_stream_relays_every_token_asks_for_usage_and_bills_what_the_provider_counted() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let m = models(&local, &cloud, &[("ok", "ok:12", false)]);
    let aion = router_with([Some(&m), None, Some(POLICY), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    let resp = chat(&s, "user:u1", "ok", true, json!({"stream_options": {"include_usage": true}, "max_tokens": 40})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let task = resp.headers()["x-aion-task"].to_str().unwrap().to_owned();
    let events = sse_events(resp).await;
    let (text, last, done) = stream_text(&events);
    assert_eq!(text, common::words(12).concat());
    assert!(done, "a complete stream ends with [DONE]");
    let usage = last.unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    assert_eq!(usage["aion"]["engine"]["chosen_by"], "client");
    // the upstream was asked for usage and given the output cap
    let sent = local.last_body();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["max_tokens"], 40);
    assert_eq!(sent["model"], "ok:12");
    assert!(sent.get("aion").is_none());
    // the envelope: 10 in at $1/Mtok + 12 out at $2/Mtok = 34 micro-dollars
    tokio::time::sleep(Duration::from_millis(300)).await;
    let env: Value = s.get(&format!("/v1/tasks/{task}"), "user:u1").send().await.unwrap().json().await.unwrap();
    assert_eq!(env["status"], "succeeded");
    assert_eq!(env["usage"]["tokens"], json!({"input": 10, "output": 12, "estimated": false}));
    assert!((env["usage"]["cost_usd"].as_f64().unwrap() - 0.000034).abs() < 1e-12, "{env}");
    // another user's task is absent
    assert_eq!(s.get(&format!("/v1/tasks/{task}"), "user:u2").send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn faults_before_the_first_chunk_fall_back_without_the_client_seeing_them() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let faults = [
        ("s01", "s01-429", false),
        ("s02", "s02-429", false),
        ("s03", "s03-500", false),
        ("s05", "s05-reset", false),
        ("s06", "s06-hang", false),
        ("s07", "s07-slow", false),
        ("s10", "s10-malformed", false),
        ("s12", "s12-context", false),
        ("good", "ok:5", false),
    ];
    let mut m = models(&local, &cloud, &faults);
    for (id, _, _) in &faults[..8] {
        m = with_fallbacks(&m, id, "good");
    }
    let aion = router_with([Some(&m), None, Some(POLICY), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    for (id, fault, _) in &faults[..8] {
        for stream in [true, false] {
            let resp = chat(&s, "user:u1", id, stream, json!({})).await;
            assert_eq!(resp.status(), 200, "{id} stream={stream}");
            let text = if stream {
                let (t, _, done) = stream_text(&sse_events(resp).await);
                assert!(done, "{id}");
                t
            } else {
                let v: Value = resp.json().await.unwrap();
                assert_eq!(v["object"], "chat.completion");
                v["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
            };
            let expected = match *fault {
                // retried on the same provider (after its Retry-After), or straight through
                "s01-429" | "s03-500" => common::words(8).concat(),
                // a whole answer has the provider's whole-call time, not the first-token one
                "s07-slow" if !stream => common::words(8).concat(),
                // fell back to good
                _ => common::words(5).concat(),
            };
            assert_eq!(text, expected, "{id} stream={stream}");
        }
    }
    assert_eq!(local.calls("s01-429"), 3, "429 then the retry, then non-streaming straight through");
    // a Retry-After past the policy's longest wait is not waited for, and
    // the provider is left alone until it passes
    assert_eq!(local.calls("s02-429"), 1);
}

#[tokio::test]
async fn a_stream_cut_after_output_ends_with_an_error_event_never_done_and_bills_an_estimate() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let faults = [("s08", "s08-cut:30", false), ("s09", "s09-stall:10", false), ("s11", "s11-no-done:6", false), ("mid", "mid-error:10", false), ("good", "ok:5", false)];
    let m = models(&local, &cloud, &faults);
    let aion = router_with([Some(&m), None, Some(POLICY), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    for id in ["s08", "s09", "s11", "mid"] {
        let resp = chat(&s, "user:u1", id, true, json!({"stream_options": {"include_usage": true}})).await;
        assert_eq!(resp.status(), 200, "{id}: the first chunk was healthy");
        let task = resp.headers()["x-aion-task"].to_str().unwrap().to_owned();
        let events = sse_events(resp).await;
        let (text, last, done) = stream_text(&events);
        assert!(!done, "{id}: a cut stream never ends with [DONE]");
        assert!(!text.is_empty(), "{id}");
        let err = last.unwrap();
        assert!(err["error"]["message"].as_str().is_some(), "{id}: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let env: Value = s.get(&format!("/v1/tasks/{task}"), "user:u1").send().await.unwrap().json().await.unwrap();
        assert_eq!(env["status"], "failed", "{id}");
        assert_eq!(env["usage"]["tokens"]["estimated"], true, "{id}: partial usage is estimated");
        assert!(env["usage"]["tokens"]["output"].as_u64().unwrap() > 0, "{id}");
        assert!(env["usage"]["cost_usd"].as_f64().unwrap() > 0.0, "{id}: what ran is billed");
        assert_eq!(env["output"]["text"], text.as_str(), "{id}");
    }
}

#[tokio::test]
async fn with_continue_on_failure_a_cut_stream_goes_on_once_on_the_next_route_with_its_partial_output() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let faults = [("cut", "s08-cut:30", false), ("good", "ok:5", false), ("prefill", "s14-prefill:5", false)];
    let faults = [faults[0], faults[1], faults[2], ("cut2", "s08-cut:30", false)];
    let m = with_fallbacks(&with_fallbacks(&models(&local, &cloud, &faults), "cut", "good"), "cut2", "prefill");
    let aion = router_with([Some(&m), None, Some(POLICY), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    let resp = chat(&s, "user:u1", "cut", true, json!({"aion": {"continue_on_failure": true}})).await;
    let (text, _, done) = stream_text(&sse_events(resp).await);
    assert!(done);
    // the partial (what arrived before the reset) then the continuation
    let partial = text.strip_suffix(&common::words(5).concat()).expect("ends with the continuation");
    assert!(!partial.is_empty() && common::words(20).concat().starts_with(partial), "{text}");
    let carried = local.last_body();
    let msgs = carried["messages"].as_array().unwrap();
    assert_eq!(msgs[msgs.len() - 2]["role"], "assistant");
    assert_eq!(msgs[msgs.len() - 2]["content"], partial);
    // S14: the fallback refuses the carried prefill: an explicit error
    let resp = chat(&s, "user:u1", "cut2", true, json!({"aion": {"continue_on_failure": true}})).await;
    let (_, last, done) = stream_text(&sse_events(resp).await);
    assert!(!done);
    assert!(last.unwrap()["error"].is_object());
}

#[tokio::test]
async fn local_only_never_reaches_a_cloud_provider_even_when_every_local_one_fails() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let m = models(&local, &cloud, &[("tiny", "s04-503", false), ("gpt", "ok", true)]);
    let intents = "intents:\n  secret:\n    default_route: tiny\n    candidates: [gpt]\n    privacy: local-only\n  open:\n    default_route: tiny\n    candidates: [gpt]\n    privacy: hybrid\n";
    let aion = router_with([Some(&m), Some(intents), Some(POLICY), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    for stream in [true, false] {
        let resp = chat(&s, "user:u1", "intent:secret", stream, json!({})).await;
        assert_eq!(resp.status(), 502, "stream={stream}");
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["error"]["code"], "upstream_failed");
    }
    // the caller may tighten an open intent to local-only too
    let resp = chat(&s, "user:u1", "intent:open", false, json!({"aion": {"privacy": "local-only"}})).await;
    assert!(resp.status().is_server_error());
    assert_eq!(cloud.total_calls(), 0, "a cloud provider was called for a local-only task");
    // and a hybrid task does fall back to the cloud
    let resp = chat(&s, "user:u1", "intent:open", false, json!({})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(cloud.calls("ok"), 1);
}

#[tokio::test]
async fn a_thousand_concurrent_requests_against_a_five_dollar_cap_never_commit_more_than_five() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    // worst case: (bound of the prompt ~ 80 tokens) * $100 + 64 * $20000 per Mtok ~ $1.29; actual 10 * 100 + 8 * 20000 = $0.161
    let m = models(&local, &cloud, &[("pricey", "ok:8", false)]).replace("price: {input: 1, output: 2}", "price: {input: 100, output: 20000}");
    let policy = format!("{POLICY}budgets:\n  user: {{default_usd: 5, hard_cap_usd: 5, period: month}}\n");
    let store = Store::open(&dir.path().join("budget.db").display().to_string()).await.unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(SqlLedger::new(store));
    let aion = router_with([Some(&m), None, Some(&policy), None], ledger.clone(), dir.path()).await;
    let s = Arc::new(serve(aion).await);
    // at most 256 connections at once (a default descriptor limit is 1,024)
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (s, gate) = (s.clone(), gate.clone());
            tokio::spawn(async move {
                let _slot = gate.acquire().await.unwrap();
                let r = chat(&s, "user:spender", "pricey", i % 2 == 0, json!({})).await;
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                status
            })
        })
        .collect();
    let mut by_status = std::collections::BTreeMap::new();
    for t in tasks {
        *by_status.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let spend = ledger.spend(&[format!("user:spender@{month}")]).await.unwrap();
    assert_eq!(spend[0].reserved_micros, 0, "every hold was settled");
    assert!(spend[0].spent_micros <= 5_000_000, "committed {} micro-dollars against a $5 cap", spend[0].spent_micros);
    let ok = by_status.get(&200).copied().unwrap_or(0);
    assert!(ok >= 3, "{by_status:?}");
    assert_eq!(spend[0].spent_micros, ok * 161_000, "each success billed its actual cost: {by_status:?}");
    assert_eq!(by_status.get(&402).copied().unwrap_or(0) + ok, 1000, "the rest were refused for the budget: {by_status:?}");
    let usage: Value = s.get("/router/usage", "user:spender").send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["budgets"][0]["cap_usd"], 5.0);
}

#[tokio::test]
async fn tasks_are_idempotent_streamed_by_id_and_private_to_their_caller() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let m = models(&local, &cloud, &[("slow", "slow-tokens:10", false)]);
    let intents = "intents:\n  chat:\n    default_route: slow\n    privacy: hybrid\n";
    let aion = router_with([Some(&m), Some(intents), Some(&format!("default_intent: chat\n{POLICY}")), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    let submit = |key: &str, input: &str| s.post("/v1/tasks", "user:u1", json!({"input": input})).header("idempotency-key", key.to_owned());
    let first = submit("k1", "hi").send().await.unwrap();
    assert_eq!(first.status(), 202);
    let env: Value = first.json().await.unwrap();
    let id = env["id"].as_str().unwrap().to_owned();
    assert_eq!(env["status"], "running");
    assert_eq!(env["engine"]["chosen_by"], "default_route");
    let again = submit("k1", "hi").send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id.as_str(), "the same task");
    assert_eq!(submit("k1", "something else").send().await.unwrap().status(), 409);
    let events = sse_events(s.get(&format!("/v1/stream/{id}"), "user:u1").send().await.unwrap()).await;
    let tokens: String = events.iter().filter(|e| e.0.as_deref() == Some("token")).map(|e| serde_json::from_str::<Value>(&e.1).unwrap()["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(tokens, common::words(10).concat());
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("done"));
    let done: Value = serde_json::from_str(data).unwrap();
    assert_eq!(done["output"]["text"], tokens.as_str());
    // a late subscriber to an ended task gets its end, which carries the
    // whole answer; another caller gets nothing
    let late = sse_events(s.get(&format!("/v1/stream/{id}"), "user:u1").send().await.unwrap()).await;
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].0.as_deref(), Some("done"));
    assert_eq!(serde_json::from_str::<Value>(&late[0].1).unwrap()["output"]["text"], tokens.as_str());
    assert_eq!(s.get(&format!("/v1/stream/{id}"), "user:u2").send().await.unwrap().status(), 404);
    let list: Value = s.get("/v1/tasks", "user:u1").send().await.unwrap().json().await.unwrap();
    assert!(list["tasks"].as_array().unwrap().iter().any(|t| t["task"]["id"] == id.as_str()));
    assert_eq!(s.get("/v1/tasks?all=true", "user:u1").send().await.unwrap().status(), 403);

    // the usage feed: one record per ended task, in the order they ended, paged
    for who in ["user:u1", "user:u2"] {
        let r = s.post("/v1/chat/completions", who, json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // (settled by default 5 s after a task ends; this reader asks for everything now)
    let none: Value = s.get("/router/usage/records?settle_ms=60000", "user:u1").send().await.unwrap().json().await.unwrap();
    assert!(none["records"].as_array().unwrap().is_empty(), "none is a minute old yet: {none}");
    let page: Value = s.get("/router/usage/records?limit=1&settle_ms=0", "user:u1").send().await.unwrap().json().await.unwrap();
    let first = &page["records"][0];
    assert_eq!(first["task"], id.as_str(), "{page}");
    assert_eq!((first["subject"].as_str(), first["status"].as_str(), first["model"].as_str()), (Some("user:u1"), Some("succeeded"), Some("slow")), "{page}");
    assert_eq!(first["tokens"]["output"], done["usage"]["tokens"]["output"], "{page}");
    assert_eq!(first["cost_usd"], done["usage"]["cost_usd"], "{page}");
    let next = page["next"].as_str().unwrap();
    let rest: Value = s.get(&format!("/router/usage/records?after={next}&settle_ms=0"), "user:u1").send().await.unwrap().json().await.unwrap();
    let rest = rest["records"].as_array().unwrap();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_ne!(rest[0]["task"], id.as_str(), "a page starts after the cursor");
    let mine: Value = s.get("/router/usage/records?settle_ms=0", "user:u2").send().await.unwrap().json().await.unwrap();
    assert_eq!(mine["records"].as_array().unwrap().len(), 1, "only the caller's own: {mine}");
    assert_eq!(s.get("/router/usage/records?all=true", "user:u1").send().await.unwrap().status(), 403);
    let all: Value = s.get("/router/usage/records?all=true&settle_ms=0", "user:admin:admin").send().await.unwrap().json().await.unwrap();
    assert_eq!(all["records"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(s.get("/router/usage/records?after=yesterday", "user:u1").send().await.unwrap().status(), 400);
}

#[tokio::test]
async fn anthropic_and_ollama_answer_in_openai_shapes_and_errors_after_the_start_are_explicit() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let m = models(&local, &cloud, &[]);
    let aion = router_with([Some(&m), None, Some(POLICY), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    for (model, n) in [("claude-ok", 6), ("llama", 5)] {
        let v: Value = chat(&s, "user:u1", model, false, json!({})).await.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], common::words(n).concat(), "{model}");
        assert_eq!(v["usage"]["completion_tokens"], n, "{model}");
        assert_eq!(v["model"], model);
        let (text, last, done) = stream_text(&sse_events(chat(&s, "user:u1", model, true, json!({"stream_options": {"include_usage": true}})).await).await);
        assert_eq!(text, common::words(n).concat(), "{model}");
        assert!(done);
        assert_eq!(last.unwrap()["usage"]["completion_tokens"], n, "{model}");
    }
    let (_, last, done) = stream_text(&sse_events(chat(&s, "user:u1", "claude-mid", true, json!({})).await).await);
    assert!(!done);
    assert!(last.unwrap()["error"]["message"].as_str().unwrap().contains("Overloaded"));
    let body = cloud.last_body();
    assert_eq!(body["max_tokens"], 4096, "Anthropic is always given its output cap");
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_embeddings_pass_through() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let m = with_fallbacks(&models(&local, &cloud, &[("ok", "ok", false), ("refuses", "bad-request", false), ("good", "ok:5", false)]), "refuses", "good");
    let m = m.replace("models:\n", "models:\n  embed:\n    provider: p-ok\n    upstream: text-embed\n    kind: embedding\n    price: {input: 0.02, output: 0}\n");
    let aion = router_with([Some(&m), None, Some(POLICY), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion).await;
    let r = chat(&s, "user:u1", "gpt-9", false, json!({})).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "model_not_found");
    let r = s.http.post(format!("{}/v1/chat/completions", s.url)).bearer_auth("user:u1").body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_json");
    let r = s.http.post(format!("{}/v1/chat/completions", s.url)).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = chat(&s, "user:u1", "ok", false, json!({"aion": {"privacy": "secret"}})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_privacy");
    // the request's own fault is not retried elsewhere
    let r = chat(&s, "user:u1", "refuses", false, json!({})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(local.calls("ok:5"), 0);
    let v: Value = s.post("/v1/embeddings", "user:u1", json!({"model": "embed", "input": ["a", "b"]})).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["model"], "embed");
    let models: Value = s.get("/v1/models", "user:u1").send().await.unwrap().json().await.unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "ok" && m["object"] == "model"));
    // a local-only default intent keeps embeddings off cloud providers too
    let cloudy = format!("providers:\n  web:\n    kind: openai\n    url: {}/v1\n    cloud: true\nmodels:\n  embed:\n    provider: web\n    upstream: text-embed\n    kind: embedding\n    price: {{input: 0.02, output: 0}}\n  chat:\n    provider: web\n    tier: api\n    price: {{input: 1, output: 1}}\n", cloud.url());
    let dir2 = tempfile::tempdir().unwrap();
    let private = router_with([Some(&cloudy), Some("intents:\n  secret:\n    default_route: chat\n    privacy: local-only\n"), Some("default_intent: secret\n"), None], Arc::new(MemoryLedger::default()), dir2.path()).await;
    let p = serve(private).await;
    let before = cloud.calls("text-embed");
    let r = p.post("/v1/embeddings", "user:u1", json!({"model": "embed", "input": "a secret"})).send().await.unwrap();
    assert!(r.status().is_client_error() || r.status().is_server_error(), "{}", r.status());
    assert_eq!(cloud.calls("text-embed"), before, "the cloud provider never saw it");
}

#[tokio::test]
async fn policy_reloads_are_admin_only_audited_and_lose_no_request_under_load() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    let m = models(&local, &cloud, &[("ok", "ok:4", false)]);
    std::fs::write(reg.join("models.yml"), &m).unwrap();
    std::fs::write(reg.join("policies.yml"), POLICY).unwrap();
    let store = Store::open(&dir.path().join("aion.db").display().to_string()).await.unwrap();
    let aion = pinacle_aion::engine::Aion::new(pinacle_aion::registries::Registries::open(Some(&reg)).unwrap(), Arc::new(MemoryLedger::default()), Some(store), Arc::new(pinacle_aion::engine::NoKeys));
    let s = Arc::new(serve(aion).await);
    assert_eq!(s.post("/router/policy/reload", "user:u1", json!({})).send().await.unwrap().status(), 403);
    std::fs::write(reg.join("models.yml"), m.replace("price: {input: 1, output: 2}\n", "")).unwrap();
    let r = s.post("/router/policy/reload", "user:root:admin", json!({})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["diagnostics"][0]["file"], "models.yml");
    assert!(s.auditor.0.lock().unwrap().is_empty());
    let load: Vec<_> = (0..300)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { chat(&s, "user:u1", "ok", i % 2 == 0, json!({})).await.status().as_u16() })
        })
        .collect();
    for i in 0..10 {
        std::fs::write(reg.join("models.yml"), m.replace("max_output: 64", &format!("max_output: {}", 65 + i))).unwrap();
        let r = s.post("/router/policy/reload", "user:root:admin", json!({})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for t in load {
        assert_eq!(t.await.unwrap(), 200, "a request failed during reloads");
    }
    let audited = s.auditor.0.lock().unwrap().len();
    assert_eq!(audited, 10);
    let r = s.post("/router/policy/rollback", "user:root:admin", json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.get("/router/policy", "user:u1").send().await.unwrap().status(), 403, "the registry is for admins");
    let p: Value = s.get("/router/policy", "user:root:admin").send().await.unwrap().json().await.unwrap();
    assert_eq!(p["registry"]["models"]["ok"]["max_output"], 73);
}

/// Every caller has their own key (a platform secret).
struct OwnKeys;

#[async_trait::async_trait]
impl pinacle_aion::engine::KeySource for OwnKeys {
    async fn key(&self, _: &pinacle_aion::engine::Caller, _: &str) -> Option<String> {
        Some("sk-callers-own".into())
    }
}

#[tokio::test]
async fn one_callers_refused_key_does_not_close_a_provider_for_everyone_but_the_servers_does() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let m = models(&local, &cloud, &[("mine", "bad-key", false), ("servers", "bad-key", false)]);
    let m = m.replace("  p-mine:\n    kind: openai\n", "  p-mine:\n    kind: openai\n    api_key_secret: OPENAI_API_KEY\n");
    let store = Store::open(&dir.path().join("aion.db").display().to_string()).await.unwrap();
    let registries = pinacle_aion::registries::Registries::from_texts([Some(&m), None, Some(POLICY), None]).unwrap();
    let aion = pinacle_aion::engine::Aion::new(registries, Arc::new(MemoryLedger::default()), Some(store), Arc::new(OwnKeys));
    let s = serve(aion.clone()).await;
    for _ in 0..5 {
        assert_eq!(chat(&s, "user:u1", "mine", false, json!({})).await.status(), 502);
    }
    assert_eq!(local.seen.lock().unwrap().keys.last().map(String::as_str), Some("Bearer sk-callers-own"));
    let now = std::time::Instant::now();
    assert_eq!(aion.health.availability("p-mine", now), pinacle_aion::health::Availability::Closed, "a caller's own bad key is theirs alone");
    for _ in 0..3 {
        let _ = chat(&s, "user:u1", "servers", false, json!({})).await;
    }
    assert_eq!(aion.health.availability("p-servers", now), pinacle_aion::health::Availability::Open, "the server's own key failing is the provider's failure");
}

#[tokio::test]
async fn a_provider_that_ignores_the_cap_never_takes_a_budget_past_its_reservation() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let m = models(&local, &cloud, &[("greedy", "ignores-cap:4", false)]);
    let policy = format!("{POLICY}budgets:\n  user: {{default_usd: 5, hard_cap_usd: 5, period: month}}\n");
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
    let aion = router_with([Some(&m), None, Some(&policy), None], ledger.clone(), dir.path()).await;
    let s = serve(aion).await;
    let v: Value = chat(&s, "user:g", "greedy", false, json!({})).await.json().await.unwrap();
    let (cost, reserved) = (v["aion"]["usage"]["cost_usd"].as_f64().unwrap(), v["aion"]["usage"]["reserved_usd"].as_f64().unwrap());
    assert!(cost > reserved, "the record tells what the provider billed: {v}");
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let spent = ledger.spend(&[format!("user:g@{month}")]).await.unwrap()[0].spent_micros;
    assert_eq!(spent, pinacle_aion::cost::usd_to_micros(reserved), "the budget was charged its reservation, no more");
}

#[tokio::test]
async fn a_client_that_leaves_mid_answer_still_has_its_reservation_settled() {
    let (local, cloud) = (fake().await, fake().await);
    let dir = tempfile::tempdir().unwrap();
    let m = models(&local, &cloud, &[("slow", "slow-whole:4", false)]);
    let policy = format!("{POLICY}budgets:\n  user: {{default_usd: 5, hard_cap_usd: 5, period: month}}\n");
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
    let aion = router_with([Some(&m), None, Some(&policy), None], ledger.clone(), dir.path()).await;
    let s = serve(aion).await;
    let hasty = reqwest::Client::builder().timeout(Duration::from_millis(150)).build().unwrap();
    let r = hasty.post(format!("{}/v1/chat/completions", s.url)).bearer_auth("user:h").json(&json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]})).send().await;
    assert!(r.is_err(), "the client gave up first");
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let scope = format!("user:h@{month}");
    let mut settled = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sp = ledger.spend(std::slice::from_ref(&scope)).await.unwrap().remove(0);
        if sp.reserved_micros == 0 && sp.spent_micros > 0 {
            settled = Some(sp);
            break;
        }
    }
    assert!(settled.is_some(), "the call ran to its end and was settled with what it cost");
}
