//! The router in front of a real local engine: llama.cpp's server (PyPI
//! `xllamacpp`) with SmolLM2-135M, started on loopback, spoken to over its
//! OpenAI and its Anthropic protocols, and driven by the official OpenAI
//! Python client (PyPI `openai`) through the router — streaming and not —
//! and through `/v1/tasks` with its SSE stream.
//!
//! Needs `scripts/install-test-tools.sh` (CI runs it through setup.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/llm_engine.rs"]
mod llm_engine;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{serve, sse_events};
use llm_engine::{llm_dir, start_engine};
use pinacle_aion::budget::MemoryLedger;
use serde_json::{json, Value};

fn registry(port: u16) -> (String, String, String) {
    let models = format!(
        "providers:\n  llama:\n    kind: openai\n    url: http://127.0.0.1:{port}/v1\n    cloud: false\n  llama-messages:\n    kind: anthropic\n    url: http://127.0.0.1:{port}\n    cloud: false\n  cloud:\n    kind: openai\n    url: http://127.0.0.1:9/v1\n    cloud: true\nmodels:\n  smollm2:\n    provider: llama\n    tier: local\n    price: {{input: 0, output: 0}}\n    max_output: 32\n  smollm2-messages:\n    provider: llama-messages\n    upstream: smollm2\n    tier: local\n    price: {{input: 0, output: 0}}\n    max_output: 32\n  gpt:\n    provider: cloud\n    tier: api\n    price: {{input: 1, output: 2}}\n"
    );
    let intents = "intents:\n  chat:\n    description: General chat on the local model\n    default_route: smollm2\n    candidates: [gpt]\n    privacy: local-only\n".to_owned();
    let policies = "default_intent: chat\nlatency_slo_ms: {local: 500}\nstream: {first_token_timeout_ms: 30000, stall_timeout_ms: 30000}\n".to_owned();
    (models, intents, policies)
}

const CLIENT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="user:py")
out = {}
r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Say hello in five words."}], max_tokens=16)
out["text"] = r.choices[0].message.content
out["finish"] = r.choices[0].finish_reason
out["usage"] = r.usage.model_dump()
text, usage, finish = "", None, None
for chunk in client.chat.completions.create(model="intent:chat", messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True, stream_options={"include_usage": True}):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage.model_dump()
out["stream_text"], out["stream_usage"], out["stream_finish"] = text, usage, finish
r = client.chat.completions.create(model="smollm2-messages", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}], max_tokens=8)
out["messages_text"] = r.choices[0].message.content
out["models"] = [m.id for m in client.models.list().data]
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    out["missing"] = "answered"
except Exception as e:
    out["missing"] = type(e).__name__
print(json.dumps(out))
"#;

#[tokio::test]
async fn the_official_openai_client_chats_through_the_router_with_a_real_local_model() {
    let engine = start_engine();
    let (models, intents, policies) = registry(engine.port);
    let dir = tempfile::tempdir().unwrap();
    let aion = common::router_with([Some(&models), Some(&intents), Some(&policies), None], Arc::new(MemoryLedger::default()), dir.path()).await;
    let s = serve(aion.clone()).await;
    let url = s.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg("-c").arg(CLIENT).arg(url).env("PYTHONPATH", llm_dir().join("py")).output().expect("python3")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v["text"].as_str().unwrap().trim().is_empty(), "{v}");
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=16).contains(&completion), "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(!v["stream_text"].as_str().unwrap().trim().is_empty(), "{v}");
    assert!(v["stream_usage"]["completion_tokens"].as_u64().unwrap() >= 1, "usage reached the client: {v}");
    assert!(v["stream_finish"].is_string(), "{v}");
    assert!(!v["messages_text"].as_str().unwrap().trim().is_empty(), "the Anthropic protocol of the real engine: {v}");
    let listed: Vec<&str> = v["models"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(listed.contains(&"smollm2") && listed.contains(&"intent:chat"), "{v}");
    assert_eq!(v["missing"], "NotFoundError");

    // a task: submitted, streamed by id, its envelope complete
    let accepted: Value = s.post("/v1/tasks", "user:py", json!({"input": "Write one short sentence about the sea.", "max_tokens": 24})).send().await.unwrap().json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["engine"]["chosen_by"], "default_route");
    assert_eq!(accepted["engine"]["privacy"], "local-only");
    let t0 = Instant::now();
    let events = sse_events(s.get(&format!("/v1/stream/{id}"), "user:py").send().await.unwrap()).await;
    assert!(t0.elapsed() < Duration::from_secs(60));
    let tokens = events.iter().filter(|e| e.0.as_deref() == Some("token")).count();
    assert!(tokens >= 1, "{events:?}");
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("done"), "{events:?}");
    let env: Value = serde_json::from_str(data).unwrap();
    assert_eq!(env["status"], "succeeded");
    assert_eq!(env["engine"]["route"]["model"], "smollm2");
    assert_eq!(env["usage"]["tokens"]["estimated"], false, "llama.cpp reports usage");
    assert!(env["usage"]["ttft_ms"].as_u64().is_some());
    assert_eq!(env["usage"]["cost_usd"], 0.0);
    // the cloud model of the local-only intent was never a candidate
    assert!(env["engine"]["attempts"].as_array().unwrap().iter().all(|a| a["model"] != "gpt"));
    drop(engine);
}
