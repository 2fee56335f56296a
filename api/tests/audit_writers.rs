//! Two API processes on one database (security review finding #21): audit
//! entries appended by both at once get distinct ids and one intact chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use pinacle_api::principal::Principal;
use pinacle_api::policy::Subject;
use pinacle_api::state::ServerConfig;
use pinacle_api::AppState;

#[path = "../../cli/tests/common/postgres.rs"]
mod postgres;

async fn open(dir: &std::path::Path, name: &str) -> AppState {
    open_at(dir, name, &format!("sqlite://{}?mode=rwc", dir.join("pinacle.db").display())).await
}

async fn open_at(dir: &std::path::Path, name: &str, database_url: &str) -> AppState {
    AppState::open(ServerConfig {
        database_url: database_url.to_owned(),
        queue_path: dir.join(format!("queue-{name}.db")),
        queue_url: None,
        advertise_url: None,
        redis_url: None,
        trusted_proxies: Vec::new(),
        default_runtime: None,
        limits: None,
        // both processes read one master key, as they would from the data dir
        master_key: pinacle_api::crypto::MasterKey::load_or_create(&dir.join("master.key")).unwrap(),
        sessions: Default::default(),
        anchor_file: None,
        read_cache_ttl: Duration::ZERO,
        heartbeat: Duration::from_secs(5),
        host_credential_renewal: Duration::from_secs(86_400),
        memory: pinacle_api::state::MemoryConfig { path: dir.join(format!("memory-{name}.db")), ..pinacle_api::state::MemoryConfig::in_dir(dir) },
        router: pinacle_api::state::RouterConfig { default_path: dir.join(format!("aion-{name}.db")), ..pinacle_api::state::RouterConfig::in_dir(dir) },
    })
    .await
    .unwrap()
}

fn principal(name: &str) -> Principal {
    Principal {
        subject: Subject {
            user_id: format!("id-{name}"),
            instance_admin: false,
            scope: pinacle_api::policy::Scope::Full,
            teams: BTreeMap::new(),
        },
        user_name: name.to_owned(),
        source: "127.0.0.1".into(),
        session_id: None,
        token_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_database_keep_one_chain_with_unique_ids() {
    let dir = tempfile::tempdir().unwrap();
    // the first opens (and migrates) the database, then the second joins
    let a = open(dir.path(), "a").await;
    let b = open(dir.path(), "b").await;
    two_writers(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_postgresql_database_keep_one_chain_with_unique_ids() {
    let pg = postgres::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let a = open_at(dir.path(), "a", &pg.url()).await;
    let b = open_at(dir.path(), "b", &pg.url()).await;
    two_writers(a, b).await;
}

async fn two_writers(a: AppState, b: AppState) {
    let (tasks, per_task) = (4, 25);
    let mut set = tokio::task::JoinSet::new();
    for (state, name) in [(a.clone(), "a"), (b.clone(), "b")] {
        for t in 0..tasks {
            let state = state.clone();
            let who = principal(name);
            set.spawn(async move {
                for i in 0..per_task {
                    state.audit.record(&who, "test.append", &format!("{}:{t}:{i}", who.user_name)).await.unwrap();
                }
            });
        }
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    let entries = a.audit.entries().await.unwrap();
    let total = 2 * tasks * per_task;
    assert_eq!(entries.len(), total);
    let ids: Vec<i64> = entries.iter().map(|e| e.fields.id).collect();
    assert_eq!(ids, (1..=total as i64).collect::<Vec<_>>());
    // both writers really interleaved
    let from_b = entries.iter().filter(|e| e.fields.actor_name == "b").count();
    assert_eq!(from_b, total / 2);
    let v = b.audit.verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, total);
    assert_eq!(v, pinacle_api::audit::verify(&entries));
}

#[tokio::test]
async fn pages_walk_the_log_newest_page_first_and_verification_reads_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "a").await;
    let (alice, bob) = (principal("alice"), principal("bob"));
    let n = pinacle_api::audit::VERIFY_PAGE as usize + 250;
    for i in 0..n {
        s.audit.record(if i % 2 == 0 { &alice } else { &bob }, "test.append", &i.to_string()).await.unwrap();
    }
    // every entry exactly once, in pages of 300, newest page first
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let (page, next) = s.audit.page(None, before, 300).await.unwrap();
        assert!(page.len() <= 300);
        assert!(page.windows(2).all(|w| w[0].fields.id < w[1].fields.id), "oldest first within a page");
        seen.splice(0..0, page.iter().map(|e| e.fields.id));
        match next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1..=n as i64).collect::<Vec<_>>());
    // one actor's entries only
    let (page, _) = s.audit.page(Some("id-bob"), None, 1000).await.unwrap();
    assert_eq!(page.len(), n / 2);
    assert!(page.iter().all(|e| e.fields.actor_name == "bob"));
    // the paged verification sees the whole chain
    let v = s.audit.verify().await.unwrap();
    assert!(v.ok && v.entries == n, "{v:?}");
}
