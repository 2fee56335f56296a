//! The memory service (issue 18) against a real `pinacle server`: memory
//! tokens minted by the platform and signed with its JWKS keys, every REST
//! operation, tenant and project isolation on every endpoint, roles, and
//! no acknowledged write lost to kill -9. The REST scenario, the isolation
//! checks and the crash run on both stores: the embedded SQLite file and
//! PostgreSQL with pgvector (`--memory-database-url`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../memory-service/tests/common/pgvector.rs"]
mod pgvector;

use common::Pinacle;
use pgvector::PgVector;
use reqwest::Method;
use serde_json::{json, Value};

const M: &str = "/api/v1/memory";

async fn memory_token(p: &Pinacle, access: &str, project: &str, team: Option<&str>) -> String {
    let mut body = json!({ "project": project });
    if let Some(t) = team {
        body["team"] = json!(t);
    }
    let (s, b) = p.call_as(access, Method::POST, "/api/v1/memory/tokens", Some(body)).await;
    assert_eq!(s, 200, "{b}");
    b["token"].as_str().unwrap().to_owned()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

async fn add(p: &Pinacle, t: &str, body: Value) -> (u16, Value) {
    p.call_as(t, Method::POST, &format!("{M}/memories"), Some(body)).await
}

async fn search(p: &Pinacle, t: &str, body: Value) -> Vec<Value> {
    let (s, b) = p.call_as(t, Method::POST, &format!("{M}/search"), Some(body)).await;
    assert_eq!(s, 200, "{b}");
    b["results"].as_array().unwrap().clone()
}

/// A server on the embedded store, or (with `pg`) on PostgreSQL.
async fn server(pg: Option<&PgVector>) -> Pinacle {
    match pg {
        None => Pinacle::start_role("server").await,
        Some(pg) => Pinacle::start_role_with("server", &["--memory-database-url", &pg.url()]).await,
    }
}

#[tokio::test]
async fn an_agent_remembers_searches_revises_and_proves_its_history() {
    remembers_searches_revises_and_proves(None).await;
}

#[tokio::test]
async fn on_postgres_an_agent_remembers_searches_revises_and_proves_its_history() {
    let pg = PgVector::start();
    remembers_searches_revises_and_proves(Some(&pg)).await;
}

async fn remembers_searches_revises_and_proves(pg: Option<&PgVector>) {
    let p = server(pg).await;
    let access = p.signup_and_login("alice").await;
    // any URL form of the repository names one project
    let t = memory_token(&p, &access, "https://github.com/acme/shop.git", None).await;
    let claims: Value = {
        let payload = t.split('.').nth(1).unwrap();
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    assert_eq!(claims["project"], "github.com/acme/shop");
    assert_eq!(claims["aud"], "pinacle-memory");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 900, "{claims}");

    let (s, a) = add(&p, &t, json!({"content": "The shop's checkout service is written in Go and uses PostgreSQL", "metadata": {"topic": "architecture"}})).await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["created"], true);
    let id = a["memory"]["id"].as_str().unwrap().to_owned();
    assert_eq!(a["memory"]["layer"], "semantic");
    assert_eq!(a["memory"]["embedder"], "hash-v1-384");
    // the same content again (case and spacing aside) is an exact duplicate
    let (s, d) = add(&p, &t, json!({"content": "the shop's checkout   service is written in Go and uses PostgreSQL"})).await;
    assert_eq!((s, d["created"].clone(), d["duplicate"].clone()), (200, json!(false), json!("exact")), "{d}");
    assert_eq!(d["memory"]["id"], id.as_str());
    // a batch, in several layers
    let (s, b) = p
        .call_as(&t, Method::POST, &format!("{M}/memories/batch"), Some(json!({"memories": [
            {"layer": "procedural", "content": "To deploy: run make release, then tag the commit with the version", "metadata": {"topic": "deploy"}},
            {"layer": "episodic", "content": "Fixed the flaky payment test by freezing the clock", "occurred_at": 1_700_000_000_000_i64},
            {"layer": "session", "session_id": "s-1", "content": "user asked to rename the cart module"},
            {"layer": "working", "content": "currently editing cart/rename.go", "ttl_secs": 600}
        ]}))).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["results"].as_array().unwrap().iter().all(|r| r["created"] == true), "{b}");
    // the same words in another session are that session's own turn
    let (s, other) = add(&p, &t, json!({"layer": "session", "session_id": "s-2", "content": "user asked to rename the cart module"})).await;
    assert_eq!((s, other["created"].clone()), (201, json!(true)), "{other}");

    // hybrid search ranks the relevant memory first; filters narrow it
    let hits = search(&p, &t, json!({"query": "how do I deploy a release", "top_k": 3})).await;
    assert_eq!(hits[0]["memory"]["layer"], "procedural", "{hits:?}");
    let hits = search(&p, &t, json!({"query": "database of checkout", "layers": ["semantic"]})).await;
    assert!(!hits.is_empty() && hits.iter().all(|h| h["memory"]["layer"] == "semantic"), "{hits:?}");
    let hits = search(&p, &t, json!({"query": "deploy", "metadata": {"topic": "architecture"}})).await;
    assert!(hits.iter().all(|h| h["memory"]["metadata"]["topic"] == "architecture"), "{hits:?}");
    let hits = search(&p, &t, json!({"query": "payment test clock", "until": 1_700_000_000_001_i64, "since": 1_600_000_000_000_i64})).await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["memory"]["layer"], "episodic");
    let hits = search(&p, &t, json!({"query": "checkout", "threshold": 0.99})).await;
    assert!(hits.iter().all(|h| h["similarity"].as_f64().unwrap() >= 0.99), "{hits:?}");

    // an update supersedes; the history keeps both versions with their hashes
    let (s, u) = p.call_as(&t, Method::PATCH, &format!("{M}/memories/{id}"), Some(json!({"content": "The checkout service is written in Rust and uses PostgreSQL"}))).await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["version"], 2);
    let (s, g) = p.call_as(&t, Method::GET, &format!("{M}/memories/{id}"), None).await;
    assert_eq!((s, g["content"].as_str().unwrap().contains("Rust")), (200, true), "{g}");
    let (s, h) = p.call_as(&t, Method::GET, &format!("{M}/memories/{id}/history"), None).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["versions"].as_array().unwrap().len(), 2, "{h}");
    assert_eq!(h["versions"][0]["current"], false);
    let changes = h["changes"].as_array().unwrap();
    assert_eq!(changes.iter().map(|c| c["record"]["action"].as_str().unwrap()).collect::<Vec<_>>(), ["add", "update"]);
    // the changelog records the SHA-256 of each version's content as stored
    let sha = |v: &Value| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(v["content"].as_str().unwrap().as_bytes()))
    };
    assert_eq!(changes[1]["record"]["before"], sha(&h["versions"][0]));
    assert_eq!(changes[1]["record"]["after"], sha(&h["versions"][1]));
    // the old wording is no longer found as current
    let hits = search(&p, &t, json!({"query": "written in Go", "layers": ["semantic"]})).await;
    assert!(hits.iter().all(|h| !h["memory"]["content"].as_str().unwrap().contains(" Go ")), "{hits:?}");

    // a document becomes rag chunks with their offsets; ingesting it again replaces them
    let doc = "# Runbook\n\n".to_owned() + &"The payment gateway retries three times before it gives up. ".repeat(40) + "\n\nRotate the API keys every ninety days.";
    let (s, i) = p.call_as(&t, Method::POST, &format!("{M}/documents"), Some(json!({"source": "docs/runbook.md", "content": doc, "chunk_chars": 400, "overlap": 40}))).await;
    assert_eq!(s, 201, "{i}");
    let chunks = i["chunks"].as_u64().unwrap();
    assert!(chunks >= 5, "{i}");
    let hits = search(&p, &t, json!({"query": "rotate API keys", "layers": ["rag"], "top_k": 1})).await;
    let src = &hits[0]["memory"]["source"];
    assert_eq!(src["document"], "docs/runbook.md");
    let (start, end) = (src["start"].as_u64().unwrap() as usize, src["end"].as_u64().unwrap() as usize);
    assert_eq!(&doc[start..end], hits[0]["memory"]["content"].as_str().unwrap());
    let (s, again) = p.call_as(&t, Method::POST, &format!("{M}/documents"), Some(json!({"source": "docs/runbook.md", "content": "Rotate the keys yearly now."}))).await;
    assert_eq!((s, again["replaced"].as_u64()), (201, Some(chunks)), "{again}");

    // lists page through current memories
    let (s, page) = p.call_as(&t, Method::GET, &format!("{M}/memories?limit=2"), None).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["memories"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page2) = p.call_as(&t, Method::GET, &format!("{M}/memories?limit=200&cursor={cursor}"), None).await;
    let total = 2 + page2["memories"].as_array().unwrap().len();
    assert_eq!(total, 7, "{page2}"); // 1 semantic, 4 from the batch, 1 more session turn, 1 rag chunk
    let (_, sess) = p.call_as(&t, Method::GET, &format!("{M}/memories?layers=session&session_id=s-1"), None).await;
    assert_eq!(sess["memories"].as_array().unwrap().len(), 1, "{sess}");

    // delete: gone from reads, still in history
    let (s, _) = p.call_as(&t, Method::DELETE, &format!("{M}/memories/{id}"), None).await;
    assert_eq!(s, 200);
    let (s, b) = p.call_as(&t, Method::GET, &format!("{M}/memories/{id}"), None).await;
    assert_error(s, &b, 404, "not_found");
    let (_, h) = p.call_as(&t, Method::GET, &format!("{M}/memories/{id}/history"), None).await;
    assert_eq!(h["changes"].as_array().unwrap().last().unwrap()["record"]["action"], "delete");

    // both chains verify; the events log saw the reads
    for log in ["changelog", "events"] {
        let (s, v) = p.call_as(&t, Method::GET, &format!("{M}/logs/{log}/verify"), None).await;
        assert_eq!((s, v["ok"].clone()), (200, json!(true)), "{v}");
        assert!(v["entries"].as_i64().unwrap() > 3, "{v}");
    }
    let (_, ev) = p.call_as(&t, Method::GET, &format!("{M}/logs/events?limit=1000"), None).await;
    let actions: Vec<&str> = ev["entries"].as_array().unwrap().iter().map(|e| e["record"]["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"search") && actions.contains(&"get"), "{actions:?}");
    // no content in the logs
    assert!(!ev.to_string().contains("checkout"), "{ev}");

    // export, import elsewhere, purge
    let (s, export) = p.call_as(&t, Method::GET, &format!("{M}/export"), None).await;
    assert_eq!(s, 200);
    assert_eq!(export["memories"].as_array().unwrap().len(), 6, "{export}");
    // an import is checked whole before anything is written
    let mut bad = export.clone();
    bad["memories"][1]["session_id"] = Value::Null;
    bad["memories"][1]["layer"] = json!("session");
    let other_bad = memory_token(&p, &access, "github.com/acme/bad-import", None).await;
    let (s, b) = p.call_as(&other_bad, Method::POST, &format!("{M}/import"), Some(bad)).await;
    assert_error(s, &b, 400, "missing_session_id");
    let (_, none) = p.call_as(&other_bad, Method::GET, &format!("{M}/memories"), None).await;
    assert_eq!(none["memories"].as_array().unwrap().len(), 0, "{none}");
    let other = memory_token(&p, &access, "github.com/acme/other", None).await;
    let (s, imp) = p.call_as(&other, Method::POST, &format!("{M}/import"), Some(export.clone())).await;
    assert_eq!((s, imp["added"].as_u64()), (200, Some(6)), "{imp}");
    let (_, imp2) = p.call_as(&other, Method::POST, &format!("{M}/import"), Some(export)).await;
    assert_eq!(imp2["duplicates"].as_u64(), Some(6), "{imp2}");
    let (s, pg) = p.call_as(&t, Method::DELETE, &format!("{M}/project"), None).await;
    assert_eq!(s, 200, "{pg}");
    let (_, page) = p.call_as(&t, Method::GET, &format!("{M}/memories"), None).await;
    assert_eq!(page["memories"].as_array().unwrap().len(), 0, "{page}");
    // the chain survives the purge, with the tombstone last
    let (_, v) = p.call_as(&t, Method::GET, &format!("{M}/logs/changelog/verify"), None).await;
    assert_eq!(v["ok"], true, "{v}");
    let (_, log) = p.call_as(&t, Method::GET, &format!("{M}/logs/changelog?limit=1000"), None).await;
    assert_eq!(log["entries"].as_array().unwrap().last().unwrap()["record"]["action"], "purge");
    // the other project kept its copy
    let (_, page) = p.call_as(&other, Method::GET, &format!("{M}/memories"), None).await;
    assert_eq!(page["memories"].as_array().unwrap().len(), 6);

    // metrics per layer and operation
    let (_, metrics) = p.call(Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    for needle in [
        "pinacle_memory_memories{op=\"current\",layer=\"semantic\"}",
        "pinacle_memory_operation_seconds_count{op=\"search\",layer=\"\"}",
        "pinacle_memory_writes_total{op=\"add\",layer=\"procedural\"}",
        "pinacle_memory_index_vectors",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
    // the OpenAPI document is published and names the routes
    let (s, doc) = p.call_as("", Method::GET, &format!("{M}/openapi.json"), None).await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/search"]["post"].is_object() && doc["components"]["schemas"]["SearchRequest"].is_object(), "{doc}");
    // every memory has the server's embedder: nothing to re-embed, and a
    // run started anyway finishes with nothing done
    let (s, r) = p.call_as(&t, Method::GET, &format!("{M}/reembed"), None).await;
    assert_eq!((s, r["state"].as_str(), r["total"].as_i64()), (200, Some("idle"), Some(0)), "{r}");
    let (s, r) = p.call_as(&t, Method::POST, &format!("{M}/reembed"), None).await;
    assert_eq!((s, r["total"].as_i64()), (202, Some(0)), "{r}");
    assert!(doc["paths"]["/reembed"]["post"].is_object(), "{doc}");
}

#[tokio::test]
async fn no_tenant_or_project_reaches_another_and_roles_hold() {
    isolation_and_roles(None).await;
}

#[tokio::test]
async fn on_postgres_no_tenant_or_project_reaches_another_and_roles_hold() {
    let pg = PgVector::start();
    isolation_and_roles(Some(&pg)).await;
}

async fn isolation_and_roles(pg: Option<&PgVector>) {
    let p = server(pg).await;
    let alice = p.signup_and_login("alice").await;
    let bob = p.signup_and_login("bob").await;
    let a = memory_token(&p, &alice, "github.com/acme/shop", None).await;
    let a_other_project = memory_token(&p, &alice, "github.com/acme/blog", None).await;
    let b_same_project = memory_token(&p, &bob, "github.com/acme/shop", None).await;
    let (_, added) = add(&p, &a, json!({"content": "alice's secret plan: launch on Friday", "metadata": {"k": "v"}})).await;
    let id = added["memory"]["id"].as_str().unwrap().to_owned();

    for intruder in [&a_other_project, &b_same_project] {
        for (method, path, body) in [
            (Method::GET, format!("{M}/memories/{id}"), None),
            (Method::PATCH, format!("{M}/memories/{id}"), Some(json!({"content": "hijacked"}))),
            (Method::DELETE, format!("{M}/memories/{id}"), None),
            (Method::GET, format!("{M}/memories/{id}/history"), None),
        ] {
            let (s, b) = p.call_as(intruder, method.clone(), &path, body).await;
            assert_error(s, &b, 404, "not_found");
        }
        assert!(search(&p, intruder, json!({"query": "secret plan launch Friday"})).await.is_empty());
        let (_, page) = p.call_as(intruder, Method::GET, &format!("{M}/memories?meta.k=v"), None).await;
        assert_eq!(page["memories"].as_array().unwrap().len(), 0, "{page}");
        let (_, export) = p.call_as(intruder, Method::GET, &format!("{M}/export"), None).await;
        assert_eq!(export["memories"].as_array().unwrap().len(), 0);
        let (_, log) = p.call_as(intruder, Method::GET, &format!("{M}/logs/changelog"), None).await;
        assert_eq!(log["entries"].as_array().unwrap().len(), 0, "{log}");
        // an exact duplicate in another scope is a new memory there, not a hit on alice's
        let (s, d) = add(&p, intruder, json!({"content": "alice's secret plan: launch on Friday"})).await;
        assert_eq!((s, d["created"].clone()), (201, json!(true)), "{d}");
        // a purge there leaves alice's memory alone
        let (s, _) = p.call_as(intruder, Method::DELETE, &format!("{M}/project"), None).await;
        assert_eq!(s, 200);
    }
    let (s, g) = p.call_as(&a, Method::GET, &format!("{M}/memories/{id}"), None).await;
    assert_eq!((s, g["content"].as_str()), (200, Some("alice's secret plan: launch on Friday")), "{g}");

    // tokens that are not memory tokens, or none, are refused
    for bad in ["", "garbage", alice.as_str(), &format!("{}x", &a[..a.len() - 1])] {
        let (s, b) = p.call_as(bad, Method::GET, &format!("{M}/memories"), None).await;
        assert_error(s, &b, 401, "unauthorized");
    }
    // a team's memory: shared by members, read-only for viewers, hidden from others
    let (s, _) = p.call_as(&alice, Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, 201);
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/teams/acme/members", Some(json!({"user": "bob", "role": "viewer"}))).await;
    assert_eq!(s, 201, "{b}");
    let team_a = memory_token(&p, &alice, "github.com/acme/shop", Some("acme")).await;
    let team_b = memory_token(&p, &bob, "github.com/acme/shop", Some("acme")).await;
    let (s, _) = add(&p, &team_a, json!({"content": "team convention: squash merges only"})).await;
    assert_eq!(s, 201);
    assert_eq!(search(&p, &team_b, json!({"query": "squash merges"})).await.len(), 1);
    let (s, b) = add(&p, &team_b, json!({"content": "viewers cannot write"})).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = p.call_as(&team_b, Method::DELETE, &format!("{M}/project"), None).await;
    assert_error(s, &b, 403, "forbidden");
    // signing out stops the memory tokens minted in that session
    let dave = p.signup_and_login("dave").await;
    let td = memory_token(&p, &dave, "github.com/dave/x", None).await;
    let (s, _) = p.call_as(&td, Method::GET, &format!("{M}/memories"), None).await;
    assert_eq!(s, 200);
    let (s, b) = p.call_as(&dave, Method::POST, "/api/v1/auth/logout", None).await;
    assert!(s < 300, "{b}");
    let (s, b) = p.call_as(&td, Method::GET, &format!("{M}/memories"), None).await;
    assert_error(s, &b, 401, "unauthorized");
    // a member demoted or removed loses the team's memory at once, token or not
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/teams/acme/members", Some(json!({"user": "dave", "role": "member"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, login) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(json!({"name": "dave", "password": "correct horse battery"}))).await;
    assert_eq!(s, 200, "{login}");
    let dave = login["access_token"].as_str().unwrap().to_owned();
    let team_d = memory_token(&p, &dave, "github.com/acme/shop", Some("acme")).await;
    let (s, _) = add(&p, &team_d, json!({"content": "dave was here"})).await;
    assert_eq!(s, 201);
    let (s, _) = p.call_as(&alice, Method::PATCH, "/api/v1/teams/acme/members/dave", Some(json!({"role": "viewer"}))).await;
    assert!(s < 300);
    let (s, b) = add(&p, &team_d, json!({"content": "dave again"})).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, _) = p.call_as(&alice, Method::DELETE, "/api/v1/teams/acme/members/dave", None).await;
    assert!(s < 300);
    let (s, b) = p.call_as(&team_d, Method::GET, &format!("{M}/memories"), None).await;
    assert_error(s, &b, 401, "unauthorized");
    let carol = p.signup_and_login("carol").await;
    let (s, b) = p.call_as(&carol, Method::POST, "/api/v1/memory/tokens", Some(json!({"project": "x", "team": "acme"}))).await;
    assert_eq!(s, 404, "{b}");
    // a memory token minted with an API token stops when that token is revoked
    let (s, api) = p.call_as(&alice, Method::POST, "/api/v1/tokens", Some(json!({"name": "agent"}))).await;
    assert_eq!(s, 201, "{api}");
    let via_api = memory_token(&p, api["token"].as_str().unwrap(), "github.com/acme/shop", None).await;
    let (s, b) = p.call_as(&via_api, Method::GET, &format!("{M}/memories"), None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = p.call_as(&alice, Method::DELETE, &format!("/api/v1/tokens/{}", api["id"].as_str().unwrap()), None).await;
    assert!(s < 300, "{b}");
    let (s, b) = p.call_as(&via_api, Method::GET, &format!("{M}/memories"), None).await;
    assert_error(s, &b, 401, "unauthorized");
    // bad input: clear 4xx, nothing written
    for (body, code) in [
        (json!({"content": ""}), "empty_content"),
        (json!({"content": "x", "layer": "events"}), "invalid_layer"),
        (json!({"content": "x", "layer": "nope"}), "invalid_layer"),
        (json!({"content": "x", "layer": "session"}), "missing_session_id"),
        (json!({"content": "x", "ttl_secs": 5}), "invalid_ttl"),
        (json!({"content": "x", "metadata": {"bad key": 1}}), "invalid_metadata"),
        (json!({"content": "x", "surprise": 1}), "invalid_json"),
    ] {
        let (s, b) = add(&p, &a, body.clone()).await;
        assert_error(s, &b, 400, code);
    }
    let (s, b) = add(&p, &a, json!({"content": "x".repeat(40_000)})).await;
    assert_error(s, &b, 413, "too_large");
    let (s, b) = p.call_as(&a, Method::POST, &format!("{M}/search"), Some(json!({"query": "x", "top_k": 0}))).await;
    assert_error(s, &b, 400, "invalid_top_k");
    let (s, b) = p.call_as(&a, Method::POST, &format!("{M}/memories/batch"), Some(json!({"memories": vec![json!({"content": "x"}); 1001]}))).await;
    assert_error(s, &b, 413, "too_large");
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/memory/tokens", Some(json!({"project": "has space"}))).await;
    assert_error(s, &b, 400, "invalid_project");
    let (_, page) = p.call_as(&a, Method::GET, &format!("{M}/memories"), None).await;
    assert_eq!(page["memories"].as_array().unwrap().len(), 1, "{page}");
}

#[tokio::test]
async fn kill_9_during_batch_adds_loses_no_acknowledged_write() {
    kill_9_during_batch_adds(None).await;
}

#[tokio::test]
async fn on_postgres_kill_9_during_batch_adds_loses_no_acknowledged_write() {
    let pg = PgVector::start();
    kill_9_during_batch_adds(Some(&pg)).await;
}

async fn kill_9_during_batch_adds(pg: Option<&PgVector>) {
    let mut p = server(pg).await;
    let access = p.signup_and_login("alice").await;
    let t = memory_token(&p, &access, "github.com/acme/crash", None).await;
    // writers add batches until the server dies under them
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (url, http, t, acked) = (p.url.clone(), p.http.clone(), t.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for round in 0..200 {
                let batch: Vec<Value> = (0..20).map(|i| json!({"dedup": "off", "content": format!("writer {w} round {round} item {i}: the quick brown fox {}", w * 10_000 + round * 20 + i)})).collect();
                let Ok(resp) = http.post(format!("{url}{M}/memories/batch")).bearer_auth(&t).json(&json!({"memories": batch})).send().await else { return };
                if resp.status() != 200 {
                    return;
                }
                let Ok(body) = resp.json::<Value>().await else { return };
                let mut a = acked.lock().unwrap();
                for r in body["results"].as_array().unwrap() {
                    assert_eq!(r["created"], true, "{r}");
                    a.push((r["memory"]["id"].as_str().unwrap().to_owned(), r["memory"]["content"].as_str().unwrap().to_owned()));
                }
            }
        }));
    }
    // let some batches land, then crash
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    p.kill();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300, "only {} writes acknowledged before the kill", acked.len());
    p.restart().await;
    // every acknowledged memory is there, and the rebuilt index finds it
    for (id, _) in &acked {
        let (s, b) = p.call_as(&t, Method::GET, &format!("{M}/memories/{id}"), None).await;
        assert_eq!(s, 200, "acknowledged {id} lost: {b}");
    }
    for (id, content) in acked.iter().step_by(37) {
        let hits = search(&p, &t, json!({"query": content, "mode": "vector", "top_k": 3})).await;
        assert!(hits.iter().any(|h| h["memory"]["id"] == id.as_str()), "{content} not found by vector after restart: {hits:?}");
    }
    let (_, v) = p.call_as(&t, Method::GET, &format!("{M}/logs/changelog/verify"), None).await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["entries"].as_u64().unwrap() >= acked.len() as u64);
}

#[tokio::test]
async fn an_agent_in_a_gvisor_pod_reaches_memory_at_pinacle_internal_in_its_own_name() {
    const BR: &str = "pncmem0";
    let _cleanup = common::HostCleanup(BR);
    let p = Pinacle::start_with(&["--pod-network", "bridge", "--pod-bridge", BR, "--pod-subnet", "10.231.160.0/24"]).await;
    let pod = p.create_running("mem", "blank", "gvisor").await;
    let pod_id = pod["id"].as_str().unwrap().to_owned();
    let sh = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let run = |script: String| {
        let p = &p;
        async move {
            let argv = sh(&script);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            p.exec("mem", &argv).await
        }
    };
    // where memory is, and a token for it, are in the pod's environment
    let (out, err, code) = run("echo $PINAK_URL; echo $PINAK_MCP_URL; test -s \"$PINAK_TOKEN_FILE\" && echo token".into()).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["http://pinacle.internal/api/v1/memory", "http://pinacle.internal/mcp", "token"], "{out}");
    // the token is the pod's own: its owner's tenant, the pod's project
    let (token, _, _) = run("cat \"$PINAK_TOKEN_FILE\"".into()).await;
    let claims: Value = {
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim().split('.').nth(1).unwrap()).unwrap()).unwrap()
    };
    assert_eq!(claims["pod"], pod_id.as_str(), "{claims}");
    assert_eq!(claims["project"], format!("pod:{pod_id}"));
    assert_eq!(claims["role"], "editor");
    // the agent adds a memory with its token, and without one (the gateway adds the pod's)
    let post = r#"curl -s -o /dev/stderr -w '%{http_code}' -X POST http://pinacle.internal/api/v1/memory/memories -H 'Content-Type: application/json'"#;
    let (status, body, _) = run(format!(r#"{post} -H "Authorization: Bearer $(cat $PINAK_TOKEN_FILE)" -d '{{"content": "the build needs protoc 25"}}'"#)).await;
    assert_eq!(status, "201", "{body}");
    let (status, body, _) = run(format!(r#"{post} -d '{{"content": "tests run with cargo nextest", "layer": "procedural"}}'"#)).await;
    assert_eq!(status, "201", "{body}");
    let (out, err, _) = run(r#"curl -s -X POST http://pinacle.internal/api/v1/memory/search -H 'Content-Type: application/json' -d '{"query": "which protoc does the build need"}'"#.into()).await;
    let hits: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out} {err}"));
    assert_eq!(hits["results"][0]["memory"]["content"], "the build needs protoc 25", "{hits}");
    // the owner sees the pod's memory from outside with a token for that project
    let (s, t) = p.call(Method::POST, "/api/v1/memory/tokens", Some(json!({"project": format!("pod:{pod_id}")}))).await;
    assert_eq!(s, 200, "{t}");
    let (_, page) = p.call_as(t["token"].as_str().unwrap(), Method::GET, &format!("{M}/memories"), None).await;
    assert_eq!(page["memories"].as_array().unwrap().len(), 2, "{page}");
    // nothing else on the host is reachable through the gateway, or around it
    let (code, _, _) = run("curl -s -o /dev/null -w '%{http_code}' http://pinacle.internal/api/v1/pods".into()).await;
    assert_eq!(code, "404");
    let (code, _, _) = run("curl -s -o /dev/null -w '%{http_code}' http://pinacle.internal/api/v1/memory/tokens -X POST".into()).await;
    assert_eq!(code, "404");
    let port = p.url.rsplit(':').next().unwrap().to_owned();
    let (_, _, code) = run(format!("curl -s -m 3 -o /dev/null http://pinacle.internal:{port}/healthz")).await;
    assert_ne!(code, 0, "the API server's own port answered the pod");
    // a token that is not this pod's is refused at the gateway
    let forged = {
        use base64::Engine;
        let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.x", e(&json!({"alg": "EdDSA"})), e(&json!({"pod": uuid::Uuid::new_v4().to_string()})))
    };
    let (code, _, _) = run(format!("curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {forged}' http://pinacle.internal/api/v1/memory/memories")).await;
    assert_eq!(code, "403");

    // a snapshot records where the project's memory stood; restoring it
    // brings the memory back there too: first the one the host takes on
    // its own at stop, then one asked for
    let owner = t["token"].as_str().unwrap().to_owned();
    let (s, b) = p.call(Method::PATCH, "/api/v1/pods/mem", Some(json!({"snapshot_on_stop": true}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = p.call(Method::POST, "/api/v1/pods/mem/stop", None).await;
    assert!(s < 300, "stop: {s}");
    p.wait_state("mem", "stopped", 60).await;
    let (_, list) = p.call(Method::GET, "/api/v1/pods/mem/snapshots", None).await;
    let auto = list["snapshots"].as_array().unwrap().iter().find(|s| s["auto"] == true).unwrap_or_else(|| panic!("no automatic snapshot: {list}")).clone();
    let (s, _) = add(&p, &owner, json!({"content": "written after the automatic snapshot"})).await;
    assert_eq!(s, 201);
    let (s, restored) = p.call(Method::POST, &format!("/api/v1/pods/mem/snapshots/{}/restore", auto["id"].as_str().unwrap()), None).await;
    assert_eq!(s, 200, "{restored}");
    assert_eq!(restored["memory"]["deleted"], 1, "the automatic snapshot's position was recorded: {restored}");
    let (s, snap) = p.call(Method::POST, "/api/v1/pods/mem/snapshots", Some(json!({"name": "before"}))).await;
    assert_eq!(s, 201, "{snap}");
    let (s, _) = add(&p, &owner, json!({"content": "written after the snapshot"})).await;
    assert_eq!(s, 201);
    let (s, restored) = p.call(Method::POST, &format!("/api/v1/pods/mem/snapshots/{}/restore", snap["id"].as_str().unwrap()), None).await;
    assert_eq!(s, 200, "{restored}");
    assert_eq!(restored["memory"]["deleted"], 1, "{restored}");
    let (_, page) = p.call_as(&owner, Method::GET, &format!("{M}/memories"), None).await;
    let contents: Vec<&str> = page["memories"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents.len(), 2, "{contents:?}");
    assert!(!contents.contains(&"written after the snapshot"));
}

/// Runs the official MCP Python SDK against a memory MCP server
/// (`cli/tests/tools/mcp_client.py`): what it saw.
fn mcp_client(args: &[&str], env: &[(&str, &str)]) -> Value {
    let tools = std::env::var("PINACLE_TEST_TOOLS_PY").unwrap_or_else(|_| "/opt/pinacle-test-tools/python".into());
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/mcp_client.py"))
        .args(args)
        .env("PYTHONPATH", tools)
        .envs(env.iter().copied())
        .output()
        .expect("python3 (scripts/install-test-tools.sh installs the MCP SDK)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("mcp client: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
}

fn assert_scenario(seen: &Value) {
    assert_eq!(seen["exception"], Value::Null, "{seen}");
    let tools: Vec<&str> = seen["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tools, ["add_memory", "delete_memory", "get_memory", "list_memories", "memory_history", "search_memory", "update_memory"]);
    assert_eq!(seen["schemas_have_query"], true);
    assert_eq!(seen["add_error"], false, "{seen}");
    assert_eq!(seen["search_first"], true, "{seen}");
    assert_eq!(seen["get_content"], "the staging database is on port 5433");
    assert_eq!(seen["update_version"], 2);
    assert_eq!(seen["history_versions"], 2);
    assert_eq!(seen["delete_error"], false);
    assert_eq!(seen["get_after_delete_error"], true);
    assert!(seen["get_after_delete_text"].as_str().unwrap().contains("not_found"), "{seen}");
    assert_eq!(seen["empty_add_error"], true);
}

#[tokio::test]
async fn the_official_mcp_client_uses_the_tools_over_http_and_stdio_with_the_callers_scope() {
    let p = Pinacle::start_role("server").await;
    let alice = p.signup_and_login("alice").await;
    let t = memory_token(&p, &alice, "github.com/acme/mcp", None).await;
    let url = format!("{}{M}/mcp", p.url);
    let seen = mcp_client(&["http", &url, &t], &[]);
    assert_scenario(&seen);
    assert_eq!(seen["listed"], 1, "{seen}");
    // no token: every tool answers unauthorized, nothing is written
    let seen = mcp_client(&["http", &url, ""], &[]);
    assert_eq!(seen["add_error"], true, "{seen}");
    assert!(seen["add_text"].as_str().unwrap().contains("unauthorized"), "{seen}");
    // another tenant's token sees none of alice's memories
    let (_, a) = add(&p, &t, json!({"content": "alice only: the release train leaves on Thursdays"})).await;
    let bob = p.signup_and_login("bob").await;
    let tb = memory_token(&p, &bob, "github.com/acme/mcp", None).await;
    let seen = mcp_client(&["http", &url, &tb], &[]);
    assert_scenario(&seen);
    assert_eq!(seen["listed"], 1, "bob saw more than his own memory: {seen}");
    let (s, _) = p.call_as(&t, Method::GET, &format!("{M}/memories/{}", a["memory"]["id"].as_str().unwrap()), None).await;
    assert_eq!(s, 200);
    // stdio: `pinacle memory mcp`, signed in as the admin, for a project
    let bin = common::pinacle_bin();
    let seen = mcp_client(
        &["stdio", bin.to_str().unwrap(), "memory", "mcp", "--project", "github.com/acme/stdio"],
        &[("PINACLE_API", &p.url), ("PINACLE_TOKEN", common::TOKEN), ("PINACLE_CONFIG", "/nonexistent/none.json")],
    );
    assert_scenario(&seen);
}
