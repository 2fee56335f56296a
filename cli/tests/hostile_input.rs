//! Hostile input against a real `pinacle up` (security review finding #5):
//! a YAML alias bomb posted everywhere a `pinacle.yaml` is read is refused
//! with a located error, without the server's memory growing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Pinacle;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The review's bomb: `name: &x "AAAA…128KiB"`, then `refs` aliases of it
/// (each one a 128 KiB copy once loaded: 43k of them is 5.7 GB).
fn alias_bomb(refs: usize) -> String {
    let mut s = format!("name: &x \"{}\"\nenv:\n  A: [", "A".repeat(128 << 10));
    s.push_str(&vec!["*x"; refs].join(","));
    s.push_str("]\n");
    s
}

/// The server's peak resident memory so far (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Asserts `diag` is the expansion refusal, located in the aliases' list.
fn assert_refusal(diag: &Value) {
    assert!(diag["message"].as_str().unwrap().contains("expand this file to more than"), "{diag}");
    assert_eq!(diag["line"], 3, "{diag}");
    assert!(diag["path"].as_str().unwrap().starts_with("env.A["), "{diag}");
    assert!(diag["suggestion"].as_str().is_some_and(|s| !s.is_empty()), "{diag}");
}

#[tokio::test]
async fn a_yaml_alias_bomb_is_refused_everywhere_without_memory_growth() {
    let p = Pinacle::start().await;
    let pid = p.pid();
    // one harmless request first, so the baseline includes a warm server
    let (s, _) = p.call(Method::POST, "/api/v1/config/validate", Some(json!({"config": "name: x\n"}))).await;
    assert_eq!(s, 200);
    let before = peak_rss_kib(pid);

    // 256 KiB: as large as a REST or GraphQL body may be
    let bomb = alias_bomb(40_000);
    assert!(bomb.len() > 240 << 10 && bomb.len() < 250 << 10, "{}", bomb.len());
    for round in 0..3 {
        let t = Instant::now();
        let (s, b) = p.call(Method::POST, "/api/v1/config/validate", Some(json!({"config": bomb}))).await;
        println!("REST /config/validate, {} KiB bomb, round {round}: answered in {:?}", bomb.len() >> 10, t.elapsed());
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_config")), "{b}");
        assert_refusal(&b["error"]["details"][0]);
        println!("  peak RSS now {} KiB", peak_rss_kib(pid));
    }
    let t = Instant::now();
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "bomb", "config": bomb}))).await;
    println!("REST POST /pods with the bomb: answered in {:?}", t.elapsed());
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_config")), "{b}");
    let (_, pods) = p.call(Method::GET, "/api/v1/pods", None).await;
    assert_eq!(pods["pods"], json!([]));

    let query = "query($y: String!) { validateConfig(yaml: $y) { ok diagnostics { severity message line column path suggestion } } }";
    let t = Instant::now();
    let r = p
        .http
        .post(format!("{}/graphql", p.url))
        .bearer_auth(common::TOKEN)
        .json(&json!({"query": query, "variables": {"y": bomb}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    println!("POST /graphql validateConfig with the bomb: answered in {:?}", t.elapsed());
    assert_eq!(b["data"]["validateConfig"]["ok"], false, "{b}");
    assert_refusal(&b["data"]["validateConfig"]["diagnostics"][0]);
    println!("  peak RSS now {} KiB", peak_rss_kib(pid));

    // 1 MiB (the largest file read) through the WebSocket, whose messages
    // may be larger than an HTTP body
    let big = alias_bomb(297_000);
    assert!(big.len() > 990 << 10 && big.len() <= 1 << 20, "{}", big.len());
    let (mut ws, _) = {
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("{}/graphql/ws", p.url.replace("http://", "ws://"))).unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap()
    };
    ws.send(Message::Text(json!({"type": "connection_init", "payload": {"token": common::TOKEN}}).to_string().into())).await.unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    let t = Instant::now();
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"y": big}}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    let answer = loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.unwrap().unwrap().unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["type"] == "next" {
            break v;
        }
        assert_ne!(v["type"], "error", "{v}");
    };
    println!("/graphql/ws validateConfig with the {} KiB bomb: answered in {:?}", big.len() >> 10, t.elapsed());
    assert_eq!(answer["payload"]["data"]["validateConfig"]["ok"], false, "{answer}");
    assert_refusal(&answer["payload"]["data"]["validateConfig"]["diagnostics"][0]);

    // the server is still there, and its peak memory barely moved
    let (s, _) = p.call(Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200);
    let after = peak_rss_kib(pid);
    println!("server peak RSS: {} MiB before the bombs, {} MiB after", before >> 10, after >> 10);
    assert!(after.saturating_sub(before) < 50 << 10, "peak RSS grew from {before} KiB to {after} KiB");
}

#[tokio::test]
async fn deeply_nested_configs_are_refused_with_a_position() {
    let p = Pinacle::start().await;
    for (text, what) in [("[".repeat(200_000), "flow"), ("- ".repeat(100_000), "block"), (format!("a: &a {}1{}\nb: {}*a{}\n", "[".repeat(40), "]".repeat(40), "[".repeat(40), "]".repeat(40)), "alias")] {
        let (s, b) = p.call(Method::POST, "/api/v1/config/validate", Some(json!({"config": text}))).await;
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_config")), "{what}: {b}");
        let d = &b["error"]["details"][0];
        let m = d["message"].as_str().unwrap();
        assert!(m.contains("nesting deeper than") || m.contains("recursion limit"), "{what}: {d}");
        assert!(d["line"].as_u64().unwrap() >= 1 && d["column"].as_u64().unwrap() >= 1, "{d}");
    }
    // and a devcontainer-style JSON nesting is refused by the YAML reader too
    let (s, _) = p.call(Method::POST, "/api/v1/config/validate", Some(json!({"config": "{\"a\":".repeat(30_000)}))).await;
    assert_eq!(s, 400);
    let (s, _) = p.call(Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn the_audit_log_is_read_in_pages() {
    let p = Pinacle::start().await;
    let n = 230;
    for i in 0..n {
        let (s, b) = p.call(Method::POST, "/api/v1/tokens", Some(json!({"name": format!("t{i}")}))).await;
        assert_eq!(s, 201, "{b}");
    }
    let alice = p.signup_and_login("alice").await;
    let (s, _) = p.call_as(&alice, Method::POST, "/api/v1/tokens", Some(json!({"name": "mine"}))).await;
    assert_eq!(s, 201);
    let (_, v) = p.call(Method::GET, "/api/v1/audit/verify", None).await;
    let total = v["entries"].as_u64().unwrap();
    assert!(v["ok"] == true && total >= n + 2, "{v}");

    // the default page: the newest 100, oldest first, and a cursor
    let (s, page) = p.call(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(s, 200, "{page}");
    let ids = |v: &Value| v["entries"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect::<Vec<_>>();
    let first = ids(&page);
    assert_eq!(first.len(), 100);
    assert_eq!(*first.last().unwrap(), total as i64);
    assert!(first.windows(2).all(|w| w[0] + 1 == w[1]), "{first:?}");
    assert_eq!(page["next_before"], first[0]);
    // walking the cursor reads every entry once
    let mut all = first;
    let mut before = page["next_before"].as_i64();
    while let Some(b) = before {
        let (s, page) = p.call(Method::GET, &format!("/api/v1/audit?limit=70&before={b}"), None).await;
        assert_eq!(s, 200, "{page}");
        let got = ids(&page);
        assert!(got.len() <= 70 && !got.is_empty());
        all.splice(0..0, got);
        before = page["next_before"].as_i64();
    }
    assert_eq!(all, (1..=total as i64).collect::<Vec<_>>());
    // bounds
    for bad in ["limit=0", "limit=1001", "limit=-1", "before=x", "colour=red"] {
        let (s, b) = p.call(Method::GET, &format!("/api/v1/audit?{bad}"), None).await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert!(b["error"]["code"].is_string(), "{b}");
    }
    let (s, page) = p.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    assert_eq!((s, ids(&page).len() as u64), (200, total));
    assert!(page["next_before"].is_null());
    // a user reads their own entries only, paged the same way
    let (_, mine) = p.call_as(&alice, Method::GET, "/api/v1/audit?limit=1", None).await;
    assert_eq!(mine["entries"][0]["action"], "token.create", "{mine}");
    assert!(mine["next_before"].is_i64(), "{mine}");
    let (_, rest) = p.call_as(&alice, Method::GET, &format!("/api/v1/audit?before={}", mine["next_before"]), None).await;
    let rest = rest["entries"].as_array().unwrap();
    assert!(!rest.is_empty() && rest.iter().all(|e| e["actor_name"] == "alice"), "{rest:?}");
    // the CLI still lists (the newest page)
    let out = std::process::Command::new(common::pinacle_bin())
        .args(["audit", "list"])
        .env("PINACLE_API", &p.url)
        .env("PINACLE_TOKEN", common::TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 101, "{text}");
    assert!(text.contains("token.create"), "{text}");
    // ... or a page of its size, or every entry, walking the pages
    let list = |args: &[&str]| {
        let out = std::process::Command::new(common::pinacle_bin())
            .args(["audit", "list"])
            .args(args)
            .env("PINACLE_API", &p.url)
            .env("PINACLE_TOKEN", common::TOKEN)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(list(&["--limit", "5"]).lines().count(), 6);
    let every = list(&["--all", "--limit", "50"]);
    assert_eq!(every.lines().count() as u64, total + 1, "{every}");
    let listed: Vec<u64> = every.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "oldest first, no repeats");
}

/// Seeded, so a failing run repeats.
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }
    fn next(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        rand::Rng::gen_range(&mut self.0, 0..n.max(1))
    }
}

#[tokio::test]
async fn mangled_json_bodies_get_4xx_in_the_error_shape_never_5xx() {
    const PIECES: &[&str] = &[
        "{", "}", "[", "]", ":", ",", "\"", "\\", "null", "true", "-1", "1e999", "18446744073709551616", "\"\\u0000\"", "\"\\ud800\"",
        "[]", "{}", "\"a\":1", "\"name\":", "\"role\":\"owner\"", "\"scope\":\"god\"", "\"config\":\"a: &x [1]\\nb: *x\"",
    ];
    let p = Pinacle::start().await;
    let targets: &[(Method, &str, Value)] = &[
        (Method::POST, "/api/v1/config/validate", json!({"config": "name: x\ntier: dev.small\n", "strict": true})),
        (Method::POST, "/api/v1/tokens", json!({"name": "ci", "scope": "read", "expires_in_seconds": 60})),
        (Method::POST, "/api/v1/teams", json!({"name": "core"})),
        (Method::POST, "/api/v1/invites", json!({"role": "member", "expires_in_seconds": 3600})),
        (Method::PUT, "/api/v1/secrets/API_KEY", json!({"value": "s"})),
        (Method::PATCH, "/api/v1/pods/nope", json!({"public_ports": [3000], "egress": "deny-all"})),
        (Method::POST, "/api/v1/pods/nope/exec", json!({"command": ["ls"], "env": {"A": "b"}})),
        (Method::POST, "/api/v1/auth/login", json!({"name": "admin", "password": "x"})),
        (Method::POST, "/api/v1/auth/refresh", json!({"refresh_token": "x.y.z"})),
    ];
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let rounds = 40;
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..rounds {
        for (method, path, sample) in targets {
            let mut bytes = serde_json::to_vec(sample).unwrap();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(3) {
                    0 if at < bytes.len() => {
                        let end = (at + 1 + rng.below(6)).min(bytes.len());
                        bytes.drain(at..end);
                    }
                    1 => {
                        let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                        bytes.splice(at..at, piece.iter().copied());
                    }
                    _ if at < bytes.len() => bytes[at] = rng.next() as u8,
                    _ => {}
                }
            }
            let r = p
                .http
                .request(method.clone(), format!("{}{path}", p.url))
                .bearer_auth(common::TOKEN)
                .header("content-type", "application/json")
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            *statuses.entry(status).or_insert(0) += 1;
            let body = r.text().await.unwrap();
            assert!(status < 500, "{method} {path} with {}: {status} {body}", String::from_utf8_lossy(&bytes));
            if status >= 400 {
                let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status} not JSON: {body}"));
                assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
            }
        }
    }
    println!("statuses over {} mangled bodies: {statuses:?}", rounds * targets.len());
    assert!(statuses.keys().any(|s| *s >= 400), "{statuses:?}");
    let (s, _) = p.call(Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200);
}

/// A fake GitHub contents API serving one repository, `evil/bomb`, whose
/// `pinacle.yaml` is `yaml`, and `evil/deep`, whose devcontainer.json nests
/// `json`.
async fn fake_github(yaml: String, json: String) -> String {
    use axum::extract::Path;
    use axum::response::IntoResponse;
    use base64::Engine;
    let files = std::sync::Arc::new([("bomb", "pinacle.yaml", yaml), ("deep", ".devcontainer/devcontainer.json", json)]);
    let app = axum::Router::new().route(
        "/repos/{owner}/{repo}/contents/{*path}",
        axum::routing::get(move |Path((owner, repo, path)): Path<(String, String, String)>| {
            let files = files.clone();
            async move {
                let Some((_, _, text)) = files.iter().find(|(r, p, _)| owner == "evil" && *r == repo && *p == path) else {
                    return (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found", "status": "404"}))).into_response();
                };
                let b64 = base64::engine::general_purpose::STANDARD.encode(text);
                let content = b64.as_bytes().chunks(60).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\n");
                let url = format!("https://api.github.com/repos/{owner}/{repo}/contents/{path}?ref=main");
                let git = format!("https://api.github.com/repos/{owner}/{repo}/git/blobs/3d21ec53a331a6f037a91c368710b99387d012c1");
                let html = format!("https://github.com/{owner}/{repo}/blob/main/{path}");
                axum::Json(json!({
                    "type": "file", "encoding": "base64", "size": text.len(), "name": path.rsplit('/').next().unwrap(), "path": path,
                    "content": content, "sha": "3d21ec53a331a6f037a91c368710b99387d012c1", "url": url, "git_url": git, "html_url": html,
                    "download_url": format!("https://raw.githubusercontent.com/{owner}/{repo}/main/{path}"),
                    "_links": {"self": url, "git": git, "html": html}
                }))
                .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn a_repository_holding_an_alias_bomb_or_deep_json_is_refused() {
    let gh = fake_github(alias_bomb(297_000), format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000))).await;
    let p = Pinacle::start_with_env(
        &["--github-client-id", "Iv1.test", "--github-url", &gh, "--github-api-url", &gh],
        &[("PINACLE_GITHUB_CLIENT_SECRET", "fake-client-secret-0123456789abcdef")],
    )
    .await;
    let (s, _) = p.call(Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200);
    let before = peak_rss_kib(p.pid());
    let query = "query($u: String!) { repositoryConfig(url: $u) { file diagnostics { severity message line path } } }";
    for (repo, file, want) in [("bomb", "pinacle.yaml", "expand this file"), ("deep", ".devcontainer/devcontainer.json", "not valid JSON")] {
        let t = Instant::now();
        let r = p
            .http
            .post(format!("{}/graphql", p.url))
            .bearer_auth(common::TOKEN)
            .json(&json!({"query": query, "variables": {"u": format!("{gh}/evil/{repo}")}}))
            .send()
            .await
            .unwrap();
        let b: Value = r.json().await.unwrap();
        println!("repositoryConfig of evil/{repo}: answered in {:?}", t.elapsed());
        let rc = &b["data"]["repositoryConfig"];
        assert_eq!(rc["file"], file, "{b}");
        let d = &rc["diagnostics"][0];
        assert_eq!(d["severity"], "error", "{b}");
        assert!(d["message"].as_str().unwrap().contains(want), "{b}");
    }
    let after = peak_rss_kib(p.pid());
    println!("server peak RSS: {} MiB before, {} MiB after", before >> 10, after >> 10);
    assert!(after.saturating_sub(before) < 50 << 10, "peak RSS grew from {before} KiB to {after} KiB");
}
