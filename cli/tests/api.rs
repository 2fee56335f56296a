//! The REST surface: authentication, bad input, health, metrics and the
//! event stream, against a real `pinacle up`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Pinacle, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

async fn pod_count(p: &Pinacle) -> usize {
    let (_, v) = p.call(Method::GET, "/api/v1/pods", None).await;
    v["pods"].as_array().unwrap().len()
}

#[tokio::test]
async fn health_readiness_and_metrics_need_no_token() {
    let p = Pinacle::start().await;
    for path in ["/healthz", "/readyz"] {
        let r = p.http.get(format!("{}{path}", p.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let (status, _) = p.call(Method::GET, "/api/v1/templates", None).await;
    assert_eq!(status, 200);
    let metrics = p.http.get(format!("{}/metrics", p.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pinacle_http_requests_total{method=\"GET\",route=\"/api/v1/templates\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("pinacle_pods{state=\"running\"} 0"), "{metrics}");
    // a made-up method is counted as "other", not as a new label
    let r = p.http.request(Method::from_bytes(b"BREW").unwrap(), format!("{}/healthz", p.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let metrics = p.http.get(format!("{}/metrics", p.url)).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("BREW") && metrics.contains("method=\"other\""), "{metrics}");
}

#[tokio::test]
async fn every_api_route_requires_a_valid_token() {
    let p = Pinacle::start().await;
    for (method, path) in [
        (Method::GET, "/api/v1/pods"),
        (Method::POST, "/api/v1/pods"),
        (Method::GET, "/api/v1/pods/x"),
        (Method::DELETE, "/api/v1/pods/x"),
        (Method::POST, "/api/v1/pods/x/exec"),
        (Method::GET, "/api/v1/pods/x/events"),
        (Method::GET, "/api/v1/pods/x/logs"),
        (Method::POST, "/api/v1/pods/x/start"),
        (Method::POST, "/api/v1/pods/x/stop"),
        (Method::GET, "/api/v1/templates"),
        (Method::GET, "/api/v1/tiers"),
        (Method::GET, "/api/v1/me"),
        (Method::GET, "/api/v1/tokens"),
        (Method::POST, "/api/v1/tokens"),
        (Method::DELETE, "/api/v1/tokens/x"),
        (Method::GET, "/api/v1/audit"),
        (Method::GET, "/api/v1/audit/verify"),
    ] {
        let r = p.http.request(method.clone(), format!("{}{path}", p.url)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let (status, body) = p.call_as("pnc_wrong", method.clone(), path, None).await;
        assert_error(status, &body, 401, "unauthorized");
    }
    let (status, me) = p.call_as(TOKEN, Method::GET, "/api/v1/me", None).await;
    assert_eq!((status, me["name"].as_str()), (200, Some("admin")));
}

#[tokio::test]
async fn bad_pod_requests_get_clear_errors_and_create_nothing() {
    let p = Pinacle::start().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"name": "Demo", "template": "minimal"}), 400, "invalid_name"),
        (json!({"name": "", "template": "minimal"}), 400, "invalid_name"),
        (json!({"name": "a".repeat(41), "template": "minimal"}), 400, "invalid_name"),
        (json!({"name": "a.b", "template": "minimal"}), 400, "invalid_name"),
        (json!({"name": "-ab", "template": "minimal"}), 400, "invalid_name"),
        (json!({"name": "0123456789abcdef0123456789abcdef", "template": "minimal"}), 400, "invalid_name"),
        (json!({"name": "ok", "template": "nope"}), 400, "unknown_template"),
        (json!({"name": "ok", "template": "minimal", "tier": "dev.huge"}), 400, "unknown_tier"),
        (json!({"name": "ok", "template": "minimal", "runtime": "docker"}), 400, "unknown_runtime"),
        (json!({"template": "minimal"}), 400, "invalid_request"),
        (json!({"name": 5}), 400, "invalid_request"),
        (json!({"name": "ok", "colour": "red"}), 400, "invalid_request"),
        (json!(["not", "an", "object"]), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(body.clone())).await;
        assert_error(s, &b, status, code);
    }
    // not JSON at all, and JSON without its content type
    let r = p.http.post(format!("{}/api/v1/pods", p.url)).bearer_auth(TOKEN)
        .header("content-type", "application/json").body("{name: oops").send().await.unwrap();
    let s = r.status().as_u16();
    assert_error(s, &r.json().await.unwrap(), 400, "invalid_json");
    let r = p.http.post(format!("{}/api/v1/pods", p.url)).bearer_auth(TOKEN).body("{}").send().await.unwrap();
    let s = r.status().as_u16();
    assert_error(s, &r.json().await.unwrap(), 415, "unsupported_media_type");
    // oversized body
    let big = json!({"name": "x".repeat(400_000)});
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(big)).await;
    assert_error(s, &b, 413, "payload_too_large");
    assert_eq!(pod_count(&p).await, 0, "nothing was created");

    // unknown routes and methods answer in the same shape
    let (s, b) = p.call(Method::GET, "/api/v1/nothing-here", None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = p.call(Method::PUT, "/api/v1/pods", None).await;
    assert_error(s, &b, 405, "method_not_allowed");
    let (s, b) = p.call(Method::GET, "/api/v1/pods/ghost", None).await;
    assert_error(s, &b, 404, "not_found");
}

#[tokio::test]
async fn wrong_state_requests_are_refused_clearly() {
    let p = Pinacle::start().await;
    let pod = p.create_running("st", "minimal", "gvisor").await;
    let id = pod["id"].as_str().unwrap().to_owned();
    let metrics = p.http.get(format!("{}/metrics", p.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pinacle_pods{state=\"running\"} 1"), "{metrics}");
    // duplicate name
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "st", "template": "minimal"}))).await;
    assert_error(s, &b, 409, "name_taken");
    assert_eq!(pod_count(&p).await, 1);
    // start a running pod
    let (s, b) = p.call(Method::POST, "/api/v1/pods/st/start", None).await;
    assert_error(s, &b, 409, "invalid_state");
    // exec with nothing to run, or bad env
    let (s, b) = p.call(Method::POST, "/api/v1/pods/st/exec", Some(json!({"command": []}))).await;
    assert_error(s, &b, 400, "invalid_request");
    let (s, b) = p.call(Method::POST, "/api/v1/pods/st/exec", Some(json!({"command": ["true"], "env": {"A=B": "c"}}))).await;
    assert_error(s, &b, 400, "invalid_request");
    // stop twice, exec into a stopped pod
    let (s, _) = p.call(Method::POST, "/api/v1/pods/st/stop", None).await;
    assert_eq!(s, 202);
    p.wait_state("st", "stopped", 60).await;
    let (s, b) = p.call(Method::POST, "/api/v1/pods/st/stop", None).await;
    assert_error(s, &b, 409, "invalid_state");
    assert!(b["error"]["message"].as_str().unwrap().contains("already stopped"), "{b}");
    let (s, b) = p.call(Method::POST, "/api/v1/pods/st/exec", Some(json!({"command": ["true"]}))).await;
    assert_error(s, &b, 409, "pod_not_running");
    // delete twice: the second is refused while deleting, and 404 once gone
    let (s, _) = p.call(Method::DELETE, "/api/v1/pods/st", None).await;
    assert_eq!(s, 202);
    let (s, b) = p.call(Method::DELETE, &format!("/api/v1/pods/{id}"), None).await;
    assert!(s == 409 || s == 404, "{s} {b}");
    p.wait_state(&id, "deleted", 60).await;
    let (s, b) = p.call(Method::DELETE, &format!("/api/v1/pods/{id}"), None).await;
    assert_error(s, &b, 404, "not_found");
    // the server is still fine
    let r = p.http.get(format!("{}/healthz", p.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn events_stream_every_state_change_in_order() {
    let p = Pinacle::start().await;
    let pod = p.create("ev", "minimal", "gvisor").await;
    let id = pod["id"].as_str().unwrap().to_owned();
    let mut resp = p
        .http
        .get(format!("{}/api/v1/pods/{id}/events", p.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut seen: Vec<String> = Vec::new();
    let mut buf = String::new();
    let mut stopped = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !seen.ends_with(&["deleted".to_owned()]) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.expect("events timed out").unwrap();
        let Some(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                let v: Value = serde_json::from_str(data.trim()).unwrap();
                seen.push(v["to"].as_str().unwrap().to_owned());
                // drive the pod through its life as events arrive
                match (v["to"].as_str().unwrap(), stopped) {
                    ("running", false) => {
                        stopped = true;
                        p.call(Method::POST, &format!("/api/v1/pods/{id}/stop"), None).await;
                    }
                    ("stopped", _) => {
                        p.call(Method::DELETE, &format!("/api/v1/pods/{id}"), None).await;
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(seen, ["pending", "provisioning", "running", "stopping", "stopped", "deleting", "deleted"]);
}

#[tokio::test]
async fn cli_drives_the_whole_pod_life_cycle() {
    let p = Pinacle::start().await;
    let cli = |args: &[&str]| {
        std::process::Command::new(common::pinacle_bin())
            .args(args)
            .env("PINACLE_API", &p.url)
            .env("PINACLE_TOKEN", TOKEN)
            .env("PINACLE_CONFIG", p.data.path().join("none.json"))
            .output()
            .unwrap()
    };
    let out = cli(&["pod", "create", "cli", "--template", "minimal", "--runtime", "gvisor", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["pod", "exec", "cli", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let out = cli(&["pod", "list"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.lines().any(|l| l.starts_with("cli ") && l.contains("running")), "{listing}");
    let out = cli(&["pod", "show", "cli", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["limits"]["vcpus"], 1);
    let out = cli(&["pod", "stop", "cli", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["pod", "exec", "cli", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pod cli is stopped"));
    let out = cli(&["pod", "start", "cli", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["pod", "exec", "cli", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "start --wait returns only once running");
    let out = cli(&["pod", "logs", "cli"]);
    assert!(out.status.success());
    let out = cli(&["pod", "delete", "cli", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["pod", "show", "cli"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // without a server configured the CLI says how to configure one
    let out = std::process::Command::new(common::pinacle_bin())
        .args(["pod", "list"])
        .env_remove("PINACLE_API")
        .env_remove("PINACLE_TOKEN")
        .env("PINACLE_CONFIG", p.data.path().join("missing.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pinacle login"));
}

#[tokio::test]
async fn a_changed_admin_token_replaces_the_old_one() {
    let mut p = Pinacle::start().await;
    p.admin_token = "pnc_rotated-admin-token-9876543210".to_owned();
    p.restart().await;
    let (s, _) = p.call_as("pnc_rotated-admin-token-9876543210", Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200);
    let (s, b) = p.call_as(TOKEN, Method::GET, "/api/v1/me", None).await;
    assert_error(s, &b, 401, "unauthorized");
}

#[tokio::test]
async fn audit_log_records_actions_and_detects_tampering() {
    use sea_orm::ConnectionTrait;
    let p = Pinacle::start().await;
    let pod = p.create_running("au", "minimal", "gvisor").await;
    let id = pod["id"].as_str().unwrap().to_owned();
    p.exec("au", &["echo", "secret-argument"]).await;
    let (s, _) = p.call(Method::POST, "/api/v1/pods/au/stop", None).await;
    assert_eq!(s, 202);
    p.wait_state("au", "stopped", 60).await;

    let (s, v) = p.call(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(s, 200);
    let entries = v["entries"].as_array().unwrap();
    // (the harness's own settings change comes first)
    let logged = entries.len() as u64;
    let entries: Vec<_> = entries.iter().filter(|e| e["action"] != "settings.update").collect();
    let actions: Vec<_> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["pod.create", "pod.exec", "pod.stop"]);
    for e in entries {
        assert_eq!(e["actor_name"], "admin");
        assert_eq!(e["source"], "127.0.0.1");
        assert!(e["target"].as_str().unwrap().contains(&id), "{e}");
    }
    assert!(!v.to_string().contains("secret-argument"), "exec arguments stay out of the log");
    let (_, ok) = p.call(Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!((ok["ok"].as_bool(), ok["entries"].as_u64()), (Some(true), Some(logged)), "{ok}");

    let cli = |args: &[&str]| {
        std::process::Command::new(common::pinacle_bin())
            .args(args)
            .env("PINACLE_API", &p.url)
            .env("PINACLE_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    assert!(cli(&["audit", "verify"]).status.success());

    // Someone edits the database behind Pinacle's back.
    let db_path = p.data.path().join("pinacle.db");
    let db = sea_orm::Database::connect(format!("sqlite://{}?mode=rw", db_path.display())).await.unwrap();
    db.execute_unprepared("UPDATE audit_log SET target = 'pod:nothing-to-see' WHERE id = 2").await.unwrap();
    let (_, broken) = p.call(Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!((broken["ok"].as_bool(), broken["first_broken"].as_i64()), (Some(false), Some(2)), "{broken}");
    let out = cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN at entry 2"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn api_tokens_are_scoped_expiring_and_revocable() {
    let p = Pinacle::start().await;
    // bad requests first: nothing is created
    for (body, code) in [
        (json!({"name": ""}), "invalid_name"),
        (json!({"name": "ci", "expires_in_seconds": 0}), "invalid_expiry"),
        (json!({"name": "ci", "scope": "god"}), "invalid_request"),
    ] {
        let (s, b) = p.call(Method::POST, "/api/v1/tokens", Some(body)).await;
        assert_error(s, &b, 400, code);
    }
    let (s, created) = p.call(Method::POST, "/api/v1/tokens", Some(json!({"name": "reader", "scope": "read"}))).await;
    assert_eq!(s, 201, "{created}");
    let reader = created["token"].as_str().unwrap().to_owned();
    let reader_id = created["id"].as_str().unwrap().to_owned();
    // a read-only token reads, and cannot change anything
    let (s, _) = p.call_as(&reader, Method::GET, "/api/v1/pods", None).await;
    assert_eq!(s, 200);
    let (s, b) = p.call_as(&reader, Method::POST, "/api/v1/pods", Some(json!({"name": "nope", "template": "minimal"}))).await;
    assert_error(s, &b, 403, "insufficient_scope");
    let (s, b) = p.call_as(&reader, Method::POST, "/api/v1/tokens", Some(json!({"name": "escalate"}))).await;
    assert_error(s, &b, 403, "insufficient_scope");
    // listing shows use, never secrets
    let (_, list) = p.call(Method::GET, "/api/v1/tokens", None).await;
    let text = list.to_string();
    assert!(!text.contains(&reader) && !text.contains(TOKEN), "secrets listed: {text}");
    let entry = list["tokens"].as_array().unwrap().iter().find(|t| t["id"] == reader_id.as_str()).unwrap().clone();
    assert_eq!(entry["scope"], "read");
    assert!(entry["last_used_at"].is_string(), "{entry}");
    // revoke: refused from then on; revoking again is "not found"
    let (s, _) = p.call(Method::DELETE, &format!("/api/v1/tokens/{reader_id}"), None).await;
    assert_eq!(s, 204);
    let (s, b) = p.call_as(&reader, Method::GET, "/api/v1/pods", None).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = p.call(Method::DELETE, &format!("/api/v1/tokens/{reader_id}"), None).await;
    assert_error(s, &b, 404, "not_found");
    // an expiring token stops working at its expiry
    let (_, short) = p.call(Method::POST, "/api/v1/tokens", Some(json!({"name": "short", "expires_in_seconds": 1}))).await;
    let short = short["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, b) = p.call_as(&short, Method::GET, "/api/v1/me", None).await;
    assert_error(s, &b, 401, "unauthorized");
    // both changes are in the audit log
    let (_, audit) = p.call(Method::GET, "/api/v1/audit", None).await;
    let actions: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .filter(|a| a != "settings.update") // the harness's own
        .collect();
    assert_eq!(actions, ["token.create", "token.revoke", "token.create"]);
    // the CLI prints a new secret once, on stdout
    let out = std::process::Command::new(common::pinacle_bin())
        .args(["token", "create", "cli", "--exp", "30m", "--read-only"])
        .env("PINACLE_API", &p.url)
        .env("PINACLE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (s, me) = p.call_as(&secret, Method::GET, "/api/v1/me", None).await;
    assert_eq!((s, me["name"].as_str()), (200, Some("admin")));
}

async fn signup_and_login(p: &Pinacle, name: &str) -> String {
    let creds = json!({"name": name, "password": "correct horse battery"});
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(creds.clone())).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(creds)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["expires_in"], 900);
    b["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn accounts_sign_up_and_in_with_clear_errors() {
    let p = Pinacle::start().await;
    for (body, status, code) in [
        (json!({"name": "Bad Name", "password": "correct horse battery"}), 400, "invalid_name"),
        (json!({"name": "carol", "password": "short"}), 400, "weak_password"),
        (json!({"name": "carol", "password": "carolcarol123"}), 400, "weak_password"),
        (json!({"name": "carol"}), 400, "invalid_request"),
    ] {
        let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(body)).await;
        assert_error(s, &b, status, code);
    }
    let token = signup_and_login(&p, "carol").await;
    let (s, me) = p.call_as(&token, Method::GET, "/api/v1/me", None).await;
    assert_eq!((s, me["name"].as_str()), (200, Some("carol")));
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "carol", "password": "another good one"}))).await;
    assert_error(s, &b, 409, "name_taken");
    // wrong password and unknown user answer alike
    for body in [json!({"name": "carol", "password": "not the password"}), json!({"name": "nobody", "password": "whatever123"})] {
        let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(body)).await;
        assert_error(s, &b, 401, "invalid_credentials");
        assert_eq!(b["error"]["message"], "wrong user name or password");
    }
    // the admin has no password: no password sign-in for it
    let (s, _) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": "admin", "password": "anything at all"}))).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn tenants_cannot_reach_each_others_pods_tokens_or_audit() {
    let p = Pinacle::start().await;
    let alice = signup_and_login(&p, "alice").await;
    let bob = signup_and_login(&p, "bob").await;
    let (s, pod) = p
        .call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "secret", "template": "minimal", "runtime": "youki"})))
        .await;
    assert_eq!(s, 202, "{pod}");
    let id = pod["id"].as_str().unwrap().to_owned();
    // bob may use the same name: names are per owner
    let (s, _) = p
        .call_as(&bob, Method::POST, "/api/v1/pods", Some(json!({"name": "secret", "template": "minimal", "runtime": "youki"})))
        .await;
    assert_eq!(s, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = p.call_as(&alice, Method::GET, &format!("/api/v1/pods/{id}"), None).await;
        if v["state"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything bob tries on alice's pod answers 404, as if it did not exist.
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/pods/{id}"), None),
        (Method::POST, format!("/api/v1/pods/{id}/stop"), None),
        (Method::POST, format!("/api/v1/pods/{id}/start"), None),
        (Method::DELETE, format!("/api/v1/pods/{id}"), None),
        (Method::POST, format!("/api/v1/pods/{id}/exec"), Some(json!({"command": ["true"]}))),
        (Method::GET, format!("/api/v1/pods/{id}/events"), None),
        (Method::GET, format!("/api/v1/pods/{id}/logs"), None),
    ] {
        let (s, b) = p.call_as(&bob, method.clone(), &path, body).await;
        assert_error(s, &b, 404, "not_found");
    }
    let (_, list) = p.call_as(&bob, Method::GET, "/api/v1/pods", None).await;
    let ids: Vec<_> = list["pods"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
    assert!(!ids.contains(&id) && ids.len() == 1, "{list}");
    // tokens: bob neither sees nor revokes alice's
    let (s, _) = p.call_as(&alice, Method::POST, "/api/v1/tokens", Some(json!({"name": "ci"}))).await;
    assert_eq!(s, 201);
    let (_, toks) = p.call_as(&alice, Method::GET, "/api/v1/tokens", None).await;
    let alice_token_id = toks["tokens"][0]["id"].as_str().unwrap().to_owned();
    let (_, bob_toks) = p.call_as(&bob, Method::GET, "/api/v1/tokens", None).await;
    assert!(!bob_toks.to_string().contains(&alice_token_id));
    let (s, b) = p.call_as(&bob, Method::DELETE, &format!("/api/v1/tokens/{alice_token_id}"), None).await;
    assert_error(s, &b, 404, "not_found");
    // audit: bob sees only his own entries and cannot verify the whole log
    let (_, audit) = p.call_as(&bob, Method::GET, "/api/v1/audit", None).await;
    assert!(audit["entries"].as_array().unwrap().iter().all(|e| e["actor_name"] == "bob"), "{audit}");
    let (s, b) = p.call_as(&bob, Method::GET, "/api/v1/audit/verify", None).await;
    assert_error(s, &b, 403, "forbidden");
    // and alice's pod is untouched
    let (_, v) = p.call_as(&alice, Method::GET, &format!("/api/v1/pods/{id}"), None).await;
    assert_eq!(v["state"], "running");
}

#[tokio::test]
async fn requests_over_the_rate_limit_get_429_with_retry_after() {
    let p = Pinacle::start_with(&["--rate-limit", "60", "--rate-burst", "5"]).await;
    for i in 0..5 {
        let (s, _) = p.call(Method::GET, "/api/v1/pods", None).await;
        assert_eq!(s, 200, "request {i} is within the burst");
    }
    let r = p.http.get(format!("{}/api/v1/pods", p.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // health checks and metrics are not limited
    for _ in 0..10 {
        assert_eq!(p.http.get(format!("{}/healthz", p.url)).send().await.unwrap().status(), 200);
    }
    // one token a second comes back
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _) = p.call(Method::GET, "/api/v1/pods", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_create_happen_once() {
    let p = Pinacle::start().await;
    let post = |key: &'static str, body: Value| {
        p.http
            .post(format!("{}/api/v1/pods", p.url))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let body = json!({"name": "once", "template": "minimal", "runtime": "youki"});
    let first = post("k-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let retry = post("k-1", body.clone()).await.unwrap();
    assert_eq!(retry.status(), 202, "the retry gets the first answer, not name_taken");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(pod_count(&p).await, 1, "created once");
    // the same key for another request is refused
    let other = post("k-1", json!({"name": "twice", "template": "minimal"})).await.unwrap();
    let status = other.status().as_u16();
    assert_error(status, &other.json().await.unwrap(), 422, "idempotency_key_reused");
    assert_eq!(pod_count(&p).await, 1);
    // without a key a second create is a second request
    let (s, b) = p.call(Method::POST, "/api/v1/pods", Some(body)).await;
    assert_error(s, &b, 409, "name_taken");
}

#[tokio::test]
async fn pods_never_take_host_names_that_could_be_confused() {
    let p = Pinacle::start().await;
    let jo = signup_and_login(&p, "jo").await;
    // an owner name that ends with `-` + another's (or that another ends
    // with) would let one tenant's host names be confused with another's,
    // and a refused pod name tell whether the other's pod exists: refused
    // at sign-up and for teams, whoever asks
    for near in ["b-jo", "x-b-jo"] {
        let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": near, "password": "correct horse battery"}))).await;
        assert_error(s, &b, 409, "name_taken");
        let (s, b) = p.call(Method::POST, "/api/v1/teams", Some(json!({"name": near}))).await;
        assert_error(s, &b, 409, "name_taken");
    }
    let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/signup", Some(json!({"name": "j", "password": "correct horse battery"}))).await;
    assert_eq!(s, 201, "a name that only looks alike is fine: {b}");
    let carol = signup_and_login(&p, "carol").await;
    let create = |token: &str, name: &str| {
        let body = json!({"name": name, "template": "minimal", "runtime": "youki"});
        let (p, token) = (&p, token.to_owned());
        async move { p.call_as(&token, Method::POST, "/api/v1/pods", Some(body)).await }
    };
    // jo's `a-b` owns `…-a-b-jo`
    let (s, ab) = create(&jo, "a-b").await;
    assert_eq!(s, 202, "{ab}");
    // jo's own `b` would be `…-b-jo`, a suffix of it
    let (s, b) = create(&jo, "b").await;
    assert_error(s, &b, 409, "host_name_conflict");
    // another tenant's pods never conflict with jo's: nothing to learn
    for name in ["a-b", "b-jo"] {
        assert_eq!(create(&carol, name).await.0, 202, "{name}");
    }
    // names that only look alike are fine, and the same name stays `name_taken`
    assert_eq!(create(&jo, "bb").await.0, 202);
    let (s, b) = create(&jo, "a-b").await;
    assert_error(s, &b, 409, "name_taken");
    // once the pod is gone its host names are free
    let id = ab["id"].as_str().unwrap();
    p.call_as(&jo, Method::DELETE, &format!("/api/v1/pods/{id}"), None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while p.call_as(&jo, Method::GET, &format!("/api/v1/pods/{id}"), None).await.0 != 404 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(create(&jo, "b").await.0, 202);
    // a host-name label must fit DNS
    let long = signup_and_login(&p, &"l".repeat(32)).await;
    let (s, b) = create(&long, &"p".repeat(20)).await;
    assert_error(s, &b, 400, "name_too_long");
}
