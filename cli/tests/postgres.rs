//! `pinacle up --database-url postgres://…` against a real PostgreSQL
//! (Debian's, started by the harness on a private port): the same
//! migrations make the schema, and identity, teams, secrets, pods, events,
//! the audit chain and hosts work and persist across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use common::Pinacle;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn pinacle_runs_on_postgresql() {
    let pg = postgres::Postgres::start();
    let mut p = Pinacle::start_with(&["--database-url", &pg.url()]).await;

    // every migration ran on PostgreSQL; nothing went to a SQLite file
    let migrations: u32 = pg.query("SELECT count(*) FROM seaql_migrations").trim().parse().unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/src")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("m2")).count();
    assert_eq!(migrations as usize, files);
    assert!(!p.data.path().join("pinacle.db").exists(), "a SQLite database was made");

    // a user, a team, a secret, a pod that gets the secret
    let alice = p.signup_and_login("alice").await;
    let (s, b) = p.call_as(&alice, Method::POST, "/api/v1/teams", Some(json!({"name": "core"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = p.call_as(&alice, Method::PUT, "/api/v1/secrets/GREETING", Some(json!({"value": "hello from postgres"}))).await;
    assert!(s == 200 || s == 201, "{b}");
    let config = "version: \"1.0\"\ntemplate: minimal\nsecrets: [GREETING]\n";
    let (s, pod) = p.call_as(&alice, Method::POST, "/api/v1/pods", Some(json!({"name": "pg", "config": config, "runtime": "gvisor"}))).await;
    assert_eq!(s, 202, "{pod}");
    p.wait_state_as(&alice, "pg", "running", 120).await;
    let (out, err, code) = p.exec_as(&alice, "pg", &["sh", "-c", "echo $GREETING"]).await;
    assert_eq!((code, out.trim()), (0, "hello from postgres"), "{err}");
    // the rows are PostgreSQL's
    assert_eq!(pg.query("SELECT state FROM pods WHERE name = 'pg'").trim(), "running");
    assert!(pg.query("SELECT count(*) FROM pod_events").trim().parse::<u32>().unwrap() >= 3);
    assert_eq!(pg.query("SELECT id FROM hosts").trim(), "local");

    // a restart reads it all back
    p.restart().await;
    let alice = {
        let creds = json!({"name": "alice", "password": "correct horse battery"});
        let (s, b) = p.call_as("", Method::POST, "/api/v1/auth/login", Some(creds)).await;
        assert_eq!(s, 200, "{b}");
        b["access_token"].as_str().unwrap().to_owned()
    };
    let (s, list) = p.call_as(&alice, Method::GET, "/api/v1/pods", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["pods"][0]["name"], "pg", "{list}");
    let (s, teams) = p.call_as(&alice, Method::GET, "/api/v1/teams", None).await;
    assert_eq!(s, 200);
    assert!(teams.to_string().contains("core"), "{teams}");

    // stop and delete, then the audit chain verifies
    let (s, _) = p.call_as(&alice, Method::POST, "/api/v1/pods/pg/stop", None).await;
    assert_eq!(s, 202);
    p.wait_state_as(&alice, "pg", "stopped", 120).await;
    let (s, _) = p.call_as(&alice, Method::DELETE, "/api/v1/pods/pg", None).await;
    assert_eq!(s, 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.query("SELECT state FROM pods WHERE name = 'pg'").trim() != "deleted" {
        assert!(Instant::now() < deadline, "the pod was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, verify) = p.call(Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!(s, 200);
    assert_eq!(verify["ok"], true, "{verify}");
    let entries: u32 = pg.query("SELECT count(*) FROM audit_log").trim().parse().unwrap();
    assert!(entries >= 5, "{entries} audit entries");
    assert_eq!(verify["entries"].as_u64(), Some(u64::from(entries)), "{verify}");
}
