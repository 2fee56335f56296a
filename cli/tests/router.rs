//! The AI router (issue 19) in a real Pinacle: its API behind the
//! platform's authentication, policy, rate limits and audit log, and an
//! agent in a gVisor pod calling it through `pinacle.internal` with the
//! pod's own token, in front of a real llama.cpp engine on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../aion/tests/support/llm_engine.rs"]
mod llm_engine;

use common::Pinacle;
use reqwest::Method;
use serde_json::{json, Value};

/// A registry directory routing to the engine on `port`; `chat` is the
/// default intent, local-only.
fn registry(port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("models.yml"),
        format!("providers:\n  llama:\n    kind: openai\n    url: http://127.0.0.1:{port}/v1\n    cloud: false\nmodels:\n  smollm2:\n    provider: llama\n    tier: local\n    price: {{input: 0.1, output: 0.2}}\n    max_output: 16\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("intents.yml"), "intents:\n  chat:\n    default_route: smollm2\n    privacy: local-only\n").unwrap();
    std::fs::write(dir.path().join("policies.yml"), "default_intent: chat\nbudgets:\n  key: {default_usd: 1, hard_cap_usd: 5, period: day}\n").unwrap();
    dir
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "stream": stream})
}

#[tokio::test]
async fn users_call_the_router_under_the_platforms_policy_and_only_admins_change_it() {
    let engine = llm_engine::start_engine();
    let reg = registry(engine.port);
    let dir = reg.path().display().to_string();
    let p = Pinacle::start_role_with("server", &["--router-dir", &dir, "--rate-limit", "60", "--rate-burst", "40"]).await;
    // no credentials, a read-only token: refused
    let (s, b) = p.call_as("", Method::POST, "/v1/chat/completions", Some(chat_body(false))).await;
    assert_eq!(s, 401, "{b}");
    let (s, created) = p.call(Method::POST, "/api/v1/tokens", Some(json!({"name": "reader", "scope": "read"}))).await;
    assert_eq!(s, 201, "{created}");
    let reader = created["token"].as_str().unwrap().to_owned();
    let (s, b) = p.call_as(&reader, Method::POST, "/v1/chat/completions", Some(chat_body(false))).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "forbidden");
    // a full API token: answered, charged to its key's budget
    let (s, created) = p.call(Method::POST, "/api/v1/tokens", Some(json!({"name": "agent"}))).await;
    assert_eq!(s, 201, "{created}");
    let key = created["token"].as_str().unwrap().to_owned();
    let (s, b) = p.call_as(&key, Method::POST, "/v1/chat/completions", Some(chat_body(false))).await;
    assert_eq!(s, 200, "{b}");
    assert!(!b["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{b}");
    assert_eq!(b["aion"]["engine"]["route"]["model"], "smollm2");
    let (s, usage) = p.call_as(&key, Method::GET, "/router/usage", None).await;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(usage["budgets"][0]["kind"], "key");
    assert!(usage["budgets"][0]["spent_usd"].as_f64().unwrap() > 0.0, "{usage}");
    // a signed-in user who is not the administrator cannot reload the policy
    let user = p.signup_and_login("ursula").await;
    let (s, b) = p.call_as(&user, Method::POST, "/router/policy/reload", None).await;
    assert_eq!(s, 403, "{b}");
    // the administrator can; a broken file is refused with where it is broken
    std::fs::write(reg.path().join("intents.yml"), "intents:\n  chat:\n    default_route: smollm3\n    privacy: local-only\n").unwrap();
    let (s, b) = p.call(Method::POST, "/router/policy/reload", None).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["diagnostics"][0]["file"], "intents.yml");
    assert_eq!(b["error"]["diagnostics"][0]["suggestion"], "did you mean \"smollm2\"?");
    std::fs::write(reg.path().join("intents.yml"), "intents:\n  chat:\n    description: changed\n    default_route: smollm2\n    privacy: local-only\n").unwrap();
    let (s, b) = p.call(Method::POST, "/router/policy/reload", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["change"]["to_version"], 2, "{b}");
    let (_, log) = p.call(Method::GET, "/api/v1/audit", None).await;
    let entries = log["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "router.policy.reload"), "{log}");
    // the platform's rate limit covers the router: a burst past 40 is refused with Retry-After
    let mut limited = None;
    for _ in 0..60 {
        let r = p.http.get(format!("{}/v1/models", p.url)).bearer_auth(&key).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r.headers().get("retry-after").cloned());
            break;
        }
    }
    assert!(limited.flatten().is_some(), "no 429 with Retry-After within 60 requests");
    drop(engine);
}

#[tokio::test]
async fn an_agent_in_a_gvisor_pod_calls_the_router_with_its_openai_settings_and_the_pods_token() {
    const BR: &str = "pncaion0";
    let _cleanup = common::HostCleanup(BR);
    let engine = llm_engine::start_engine();
    let reg = registry(engine.port);
    let dir = reg.path().display().to_string();
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.161.0/24", "--router-dir", &dir]).await;
    p.create_running("agent", "blank", "gvisor").await;
    let run = |script: String| {
        let p = &p;
        async move { p.exec("agent", &["sh", "-c", &script]).await }
    };
    let (out, err, code) = run("echo $OPENAI_BASE_URL; echo $OPENAI_API_KEY; echo $AION_URL".into()).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["http://pinacle.internal/v1", "pinacle-pod", "http://pinacle.internal"], "{out}");
    // what an OpenAI client in the pod sends: its base URL and its key
    let post = r#"curl -s -w '\n%{http_code}' "$OPENAI_BASE_URL/chat/completions" -H "Authorization: Bearer $OPENAI_API_KEY" -H 'Content-Type: application/json'"#;
    let (out, err, _) = run(format!(r#"{post} -d '{{"messages": [{{"role": "user", "content": "Say hi."}}], "max_tokens": 8}}'"#)).await;
    let (body, status) = out.trim_end().rsplit_once('\n').unwrap_or_else(|| panic!("{out} {err}"));
    assert_eq!(status, "200", "{body}");
    let answer: Value = serde_json::from_str(body).unwrap();
    assert_eq!(answer["aion"]["engine"]["chosen_by"], "default_route", "{answer}");
    // streaming through the gateway, ending with [DONE]
    let (out, _, _) = run(format!(r#"{post} -d '{{"model": "intent:chat", "messages": [{{"role": "user", "content": "Count."}}], "max_tokens": 8, "stream": true}}'"#)).await;
    assert!(out.contains("data: [DONE]"), "{out}");
    assert!(out.contains("chat.completion.chunk"), "{out}");
    // the task WebSocket through the gateway: a submit, then its events to `done`
    // (a plain-socket client: the image has Python but no WebSocket library)
    let (out, err, code) = run(format!("python3 -c '{WS_CLIENT}'")).await;
    assert_eq!(code, 0, "{out} {err}");
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{out}"))).collect();
    assert_eq!(events.first().map(|e| e["type"].clone()), Some(json!("accepted")), "{out}");
    let done = events.iter().find(|e| e["type"] == "done").unwrap_or_else(|| panic!("no done event: {out}"));
    assert_eq!(done["data"]["engine"]["route"]["model"], "smollm2", "{done}");
    assert!(events.iter().any(|e| e["type"] == "token"), "{out}");
    // the policy is not the pod's to change
    let (out, _, _) = run("curl -s -o /dev/null -w '%{http_code}' -X POST http://pinacle.internal/router/policy/reload".into()).await;
    assert_eq!(out, "404");
    // the pod's tasks are the pod's: listed through its gateway, and not in
    // its owner's own list (whoever can run code in a pod reads the pod's
    // tasks, never its owner's)
    let (out, err, _) = run("curl -s http://pinacle.internal/v1/tasks".into()).await;
    let listed: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out} {err}"));
    let tasks = listed["tasks"].as_array().unwrap();
    assert!(tasks.len() >= 2, "{listed}");
    assert!(tasks.iter().all(|t| t["task"]["engine"]["route"]["model"] == "smollm2"), "{listed}");
    let (s, own) = p.call(Method::GET, "/v1/tasks", None).await;
    assert_eq!(s, 200, "{own}");
    assert!(own["tasks"].as_array().unwrap().is_empty(), "{own}");
    // once the pod is deleted its token stops working
    let token = run("cat $AION_TOKEN_FILE".into()).await.0;
    let (s, _) = p.call(Method::DELETE, "/api/v1/pods/agent", None).await;
    assert!(s < 300);
    for _ in 0..120 {
        let (s, pod) = p.call(Method::GET, "/api/v1/pods/agent", None).await;
        if s == 404 || pod["state"] == "deleted" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (s, b) = p.call_as(token.trim(), Method::POST, "/v1/chat/completions", Some(chat_body(false))).await;
    assert_eq!(s, 401, "{b}");
    drop(engine);
}

/// A WebSocket client in the Python standard library: the upgrade to
/// `ws://pinacle.internal/v1/ws` with the pod's placeholder key, one
/// masked text frame submitting a task, then each text frame printed as a
/// line until `done` or `error`. No single quotes (it runs in `sh -c '…'`).
const WS_CLIENT: &str = r#"
import base64, json, os, socket, struct
s = socket.create_connection(("pinacle.internal", 80), timeout=120)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /v1/ws HTTP/1.1\r\nHost: pinacle.internal\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer " + os.environ["OPENAI_API_KEY"] + "\r\n\r\n").encode())
f = s.makefile("rb")
status = f.readline()
assert b" 101 " in status, status
while f.readline() not in (b"\r\n", b""):
    pass
msg = json.dumps({"type": "submit", "task": {"input": "Say hi.", "max_tokens": 8}}).encode()
mask = os.urandom(4)
head = bytes([0x81]) + (bytes([0x80 | len(msg)]) if len(msg) < 126 else bytes([0x80 | 126]) + struct.pack(">H", len(msg)))
s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
while True:
    b0, b1 = f.read(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    data = f.read(n)
    if b0 & 0x0F != 1:
        continue
    print(data.decode(), flush=True)
    if json.loads(data)["type"] in ("done", "error"):
        break
"#;
