//! Host lifecycle against a real `pinacle up` and a second `pinacle agent`
//! process (a remote host joined with a token, reached over its link): hosts listed with their
//! status, cordon and drain, a killed agent turning unreachable within
//! three heartbeats, placement avoiding hosts that are not ready, and a
//! host removed only once it holds no pods.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{cli, Pinacle};
use reqwest::Method;
use serde_json::{json, Value};

async fn host(p: &Pinacle, id: &str) -> Option<Value> {
    let (s, list) = p.call(Method::GET, "/api/v1/admin/hosts", None).await;
    assert_eq!(s, 200, "{list}");
    list.as_array().unwrap().iter().find(|h| h["id"] == id).cloned()
}

/// Waits (at most `secs`) until host `id` has `status`; returns how long it took.
async fn wait_status(p: &Pinacle, id: &str, status: &str, secs: u64) -> Duration {
    let t0 = Instant::now();
    loop {
        let h = host(p, id).await;
        if h.as_ref().is_some_and(|h| h["status"] == status) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "host {id} is not {status}: {h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn hosts_are_cordoned_drained_removed_and_turn_unreachable_when_silent() {
    let p = Pinacle::start_with(&["--heartbeat-interval", "1", "--pod-network", "none"]).await;
    let local = host(&p, "local").await.expect("the local host is registered");
    assert_eq!((local["status"].as_str(), local["connected"].as_bool()), (Some("ready"), Some(true)), "{local}");

    // a second host: an agent process of its own, joined with a token
    // offering less than the machine has, as an operator keeping room
    let agent = p.spawn_host("h2", &["--pod-network", "none", "--reconcile-interval", "3600", "--vcpus", "3", "--memory-gib", "5"]);
    wait_status(&p, "h2", "ready", 60).await;
    let h2 = host(&p, "h2").await.unwrap();
    assert_eq!((h2["vcpus"].as_u64(), h2["memory_bytes"].as_u64()), (Some(3), Some(5 << 30)), "{h2}");
    let (code, out, err) = cli(&p, &["host", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("h2 ") && l.contains("ready") && !l.contains("not connected")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("local ") && l.contains("ready") && !l.contains("not connected")), "{out}");

    // cordoned, the local host takes no new pods; heartbeats keep the cordon
    let (code, out, err) = cli(&p, &["host", "cordon", "local"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("host local is cordoned"), "{out}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(host(&p, "local").await.unwrap()["status"], "cordoned");
    let (s, far) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "far", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!(s, 202, "{far}");
    assert_eq!(far["host"], "h2", "{far}");
    p.wait_state("far", "running", 120).await;
    // this server reaches h2 over its link
    let (out, _, code) = p.exec("far", &["echo", "on h2"]).await;
    assert_eq!((out.as_str(), code), ("on h2\n", 0));

    // killed (-9), h2 turns unreachable within three heartbeats (plus the
    // poll's slack); with local cordoned nothing takes new pods
    drop(agent);
    let took = wait_status(&p, "h2", "unreachable", 10).await;
    eprintln!("h2 unreachable {} ms after its agent was killed (heartbeat 1 s)", took.as_millis());
    // its pods say so, in the API and the CLI, and their operations answer 503
    let (s, b) = p.call(Method::POST, "/api/v1/pods/far/exec", Some(json!({"command": ["true"]}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("host_unreachable")), "{b}");
    let (s, b) = p.call(Method::GET, "/api/v1/pods/far/logs", None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("host_unreachable")), "{b}");
    let far_now = p.pod("far").await;
    assert_eq!(far_now["host_status"], "unreachable", "{far_now}");
    // (lists are cached for up to a second)
    let t0 = Instant::now();
    loop {
        let (_, list) = p.call(Method::GET, "/api/v1/pods", None).await;
        if list["pods"].as_array().unwrap().iter().any(|p| p["name"] == "far" && p["host_status"] == "unreachable") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, err) = cli(&p, &["pod", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("far ") && l.contains("(host unreachable)")), "{out}");
    let (_, out, _) = cli(&p, &["pod", "show", "far"]);
    assert!(out.contains("on host h2 (unreachable)"), "{out}");
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "nowhere", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("no_capacity")), "{b}");
    let (s, list) = p.call(Method::GET, "/api/v1/pods", None).await;
    assert_eq!(s, 200);
    assert!(!list.to_string().contains("nowhere"), "a refused pod was created: {list}");

    // uncordoned, local takes pods again; a drain stops them, every
    // tenant's (here another user's, which the admin does not see)
    let (code, _, err) = cli(&p, &["host", "uncordon", "local"]);
    assert_eq!(code, 0, "{err}");
    let bob = p.signup_and_login("bob").await;
    let (s, near) = p.call_as(&bob, Method::POST, "/api/v1/pods", Some(json!({"name": "near", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!((s, near["host"].as_str()), (202, Some("local")), "{near}");
    p.wait_state_as(&bob, "near", "running", 120).await;
    let (code, out, err) = cli(&p, &["host", "drain", "local"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stopping 1 pod(s): near"), "{out}");
    p.wait_state_as(&bob, "near", "stopped", 120).await;
    assert_eq!(host(&p, "local").await.unwrap()["status"], "cordoned");

    // a host is removed only once it holds no pods
    let (code, _, err) = cli(&p, &["host", "remove", "h2"]);
    assert_ne!(code, 0);
    assert!(err.contains("host_in_use") || err.contains("still holds 1 pod"), "{err}");
    // h2 comes back: its pod is carried out (deleted), then it can go
    let (s, _) = p.call(Method::DELETE, "/api/v1/pods/far", None).await;
    assert_eq!(s, 202);
    let agent = p.spawn_host("h2", &["--pod-network", "none", "--reconcile-interval", "1"]);
    wait_status(&p, "h2", "ready", 60).await;
    p.wait_state(far["id"].as_str().unwrap(), "deleted", 120).await;
    drop(agent);
    let (code, out, err) = cli(&p, &["host", "remove", "h2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(host(&p, "h2").await.is_none());
    // the local host, removed while its agent runs, is not brought back by
    // its heartbeats
    let (s, _) = p.call_as(&bob, Method::DELETE, "/api/v1/pods/near", None).await;
    assert_eq!(s, 202);
    p.wait_state_as(&bob, near["id"].as_str().unwrap(), "deleted", 120).await;
    let (code, out, err) = cli(&p, &["host", "remove", "local"]);
    assert_eq!(code, 0, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(host(&p, "local").await.is_none(), "a heartbeat brought the removed host back");
    // every change is audited
    let (_, audit) = p.call(Method::GET, "/api/v1/audit?limit=100", None).await;
    for action in ["host.cordon", "host.uncordon", "host.drain", "host.remove"] {
        assert!(audit.to_string().contains(action), "{action} not audited");
    }
    let (s, b) = p.call(Method::POST, "/api/v1/admin/hosts/nope/cordon", None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")), "{b}");
}

#[tokio::test]
async fn a_host_joins_once_with_its_token_and_a_removed_host_is_refused_at_once() {
    let p = Pinacle::start_with(&["--pod-network", "none"]).await;
    let join = |token: &str| {
        let (p, token) = (&p, token.to_owned());
        async move { p.http.post(format!("{}/api/v1/agents/join", p.url)).json(&json!({ "token": token })).send().await.unwrap() }
    };
    let me = |secret: &str| {
        let (p, secret) = (&p, secret.to_owned());
        async move { p.http.get(format!("{}/api/v1/agents/me", p.url)).bearer_auth(secret).send().await.unwrap() }
    };

    let (s, b) = p.call(Method::POST, "/api/v1/admin/hosts", Some(json!({"name": "Bad Name"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_host")), "{b}");
    let (code, token, err) = cli(&p, &["host", "add", "h3"]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("pnj_") && err.contains("shown once"), "{token} {err}");
    // added but never heard from: lost, and given no pods
    assert_eq!(host(&p, "h3").await.unwrap()["status"], "lost");
    let (s, pod) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "here", "template": "minimal", "runtime": "gvisor"}))).await;
    assert_eq!((s, pod["host"].as_str()), (202, Some("local")), "{pod}");

    // the token is exchanged once for the host's credential
    let r = join(&token).await;
    assert_eq!(r.status(), 200);
    let cred: Value = r.json().await.unwrap();
    assert_eq!(cred["host"], "h3");
    let secret = cred["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("pnh_"), "{cred}");
    for reused in [token.as_str(), "pnj_made-up", "not-a-token", ""] {
        let r = join(reused).await;
        assert_eq!(r.status(), 401, "{reused}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "invalid_join_token", "{b}");
    }
    let r = me(&secret).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["host"], "h3");
    for wrong in ["pnh_made-up", common::TOKEN, ""] {
        let r = me(wrong).await;
        assert_eq!(r.status(), 401, "{wrong}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_host_credential");
    }

    // a new token (an agent reinstalled) replaces the credential when used
    let (_, second, _) = cli(&p, &["host", "add", "h3"]);
    let r = join(second.trim()).await;
    assert_eq!(r.status(), 200);
    let newer = r.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    assert_eq!(me(&secret).await.status(), 401, "the old credential still works");
    assert_eq!(me(&newer).await.status(), 200);

    // a reusable token joins many hosts, each naming itself, and may only
    // join again the names it joined
    let (code, pool, err) = cli(&p, &["host", "token", "--expires-in", "600"]);
    assert_eq!(code, 0, "{err}");
    let pool = pool.trim().to_owned();
    let join_as = |token: &str, host: Option<&str>| {
        let (p, token, host) = (&p, token.to_owned(), host.map(str::to_owned));
        async move {
            let r = p.http.post(format!("{}/api/v1/agents/join", p.url)).json(&json!({ "token": token, "host": host })).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = join_as(&pool, None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("host_name_required")), "{b}");
    let (s, b) = join_as(&pool, Some("Node 1")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_host")), "{b}");
    let (s, n1) = join_as(&pool, Some("node-1")).await;
    assert_eq!((s, n1["host"].as_str()), (200, Some("node-1")), "{n1}");
    let (s, n2) = join_as(&pool, Some("node-2")).await;
    assert_eq!((s, n2["host"].as_str()), (200, Some("node-2")), "{n2}");
    assert_eq!(host(&p, "node-2").await.unwrap()["status"], "lost", "known, not heard from yet");
    let (s, again) = join_as(&pool, Some("node-1")).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(me(n1["secret"].as_str().unwrap()).await.status(), 401, "a node that joins again replaces its credential");
    assert_eq!(me(again["secret"].as_str().unwrap()).await.status(), 200);
    let (s, b) = join_as(&pool, Some("h3")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("host_exists")), "another host's name is not the token's: {b}");
    let (_, one_time, _) = cli(&p, &["host", "add", "h4"]);
    let (s, b) = join_as(one_time.trim(), Some("node-9")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("host_name_mismatch")), "{b}");
    let (s, b) = join_as(one_time.trim(), Some("h4")).await;
    assert_eq!((s, b["host"].as_str()), (200, Some("h4")), "{b}");

    // removed: its credential and its unused tokens are refused at once
    let (_, unused, _) = cli(&p, &["host", "add", "h3"]);
    let (code, out, err) = cli(&p, &["host", "remove", "h3"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(me(&newer).await.status(), 401);
    assert_eq!(join(unused.trim()).await.status(), 401);
    // secrets never reach the audit log, the actions do
    let (_, audit) = p.call(Method::GET, "/api/v1/audit?limit=100", None).await;
    let text = audit.to_string();
    assert!(text.contains("host.add") && text.contains("host.join") && text.contains("host.remove") && text.contains("host.token"), "{text}");
    for secret in [&token, &secret, &newer, &pool] {
        assert!(!text.contains(secret.as_str()) && !p.server_log().contains(secret.as_str()), "a secret was recorded");
    }
}

#[test]
fn migrate_brings_a_database_to_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        std::process::Command::new(common::pinacle_bin())
            .args(["migrate", "--data-dir"])
            .arg(dir.path())
            .env_remove("PINACLE_DATABASE_URL")
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(out.starts_with("applied ") && out.contains("m20261206_000019_host_pools"), "{out}");
    let again = run();
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), "the database is current\n");
    // nothing listens on port 1: a clear error, without the password
    let bad = std::process::Command::new(common::pinacle_bin()).args(["migrate", "--database-url", "postgres://nobody:hunter2@127.0.0.1:1/none"]).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("opening database postgres://nobody:***@127.0.0.1:1/none") && !err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_connected_hosts_credential_is_renewed_over_its_link_and_the_old_one_stops_working() {
    let p = Pinacle::start_with(&["--pod-network", "none", "--heartbeat-interval", "1", "--host-credential-renewal", "2"]).await;
    let me = |secret: String| {
        let p = &p;
        async move { p.http.get(format!("{}/api/v1/agents/me", p.url)).bearer_auth(secret).send().await.unwrap().status().as_u16() }
    };
    let kept = || -> Option<String> {
        let text = std::fs::read_to_string(p.host_dir("h4").join("host-credential.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()?["secret"].as_str().map(str::to_owned)
    };
    let args = ["--pod-network", "none", "--reconcile-interval", "3600"];
    let agent = p.spawn_host("h4", &args);
    wait_status(&p, "h4", "ready", 60).await;
    let first = kept().expect("the agent keeps its credential");
    // renewed over the link (as it opened, then every 2 s): the agent keeps
    // each new one, and the one before stops working
    let t0 = Instant::now();
    let second = loop {
        if let Some(s) = kept().filter(|s| *s != first) {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never renewed:\n{}", p.host_log("h4"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(second.starts_with("pnh_"));
    let t0 = Instant::now();
    while me(first.clone()).await != 401 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the first credential still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // whatever the agent keeps now works, and the host stays connected
    assert_eq!(me(kept().unwrap()).await, 200);
    let h = host(&p, "h4").await.unwrap();
    assert_eq!((h["status"].as_str(), h["connected"].as_bool()), (Some("ready"), Some(true)), "{h}");
    assert!(!p.server_log().contains(&second) && !p.host_log("h4").contains(&second), "a credential reached a log");

    // restarted, the agent connects with the newest credential it kept
    drop(agent);
    wait_status(&p, "h4", "unreachable", 15).await;
    let _agent = p.spawn_host("h4", &args);
    wait_status(&p, "h4", "ready", 60).await;
}

