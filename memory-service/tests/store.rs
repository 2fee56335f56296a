//! The memory suite, run against both stores: the embedded one (a real
//! SQLite file and in-process graphs) and PostgreSQL with pgvector (a real
//! server, see `common/pgvector.rs`). Tampering with a stored log row or a
//! memory's content is detected and named; working memories expire; a
//! new service over the same data finds everything (the graphs are rebuilt
//! from the file); restores bring memories back; another scope's ids are
//! never found. PostgreSQL's row-level security and its serialised writes
//! from several servers are checked on their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use pinacle_memory_service::backend::MemoryStore;
use pinacle_memory_service::embedded::EmbeddedStore;
use pinacle_memory_service::embedding::Embedding;
use pinacle_memory_service::metrics::MemoryMetrics;
use pinacle_memory_service::model::*;
use pinacle_memory_service::postgres::PgStore;
use pinacle_memory_service::{Caller, MemoryError, MemoryService, Role, Scope};

use common::pgvector::PgVector;

fn caller(tenant: &str, project: &str) -> Caller {
    Caller { scope: Scope { tenant: tenant.into(), project: project.into() }, role: Role::Admin, subject: "user:test".into() }
}

fn note(content: &str) -> NewMemory {
    NewMemory { content: content.into(), ..Default::default() }
}

/// Where a test's memories live.
enum Fixture {
    Sqlite(tempfile::TempDir),
    Postgres(PgVector),
}

impl Fixture {
    fn sqlite() -> Self {
        Fixture::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Self {
        Fixture::Postgres(PgVector::start())
    }

    async fn store(&self) -> Arc<dyn MemoryStore> {
        let metrics = Arc::new(MemoryMetrics::new());
        match self {
            Fixture::Sqlite(dir) => Arc::new(EmbeddedStore::open(&dir.path().join("memory.db"), metrics).await.unwrap()),
            Fixture::Postgres(pg) => Arc::new(PgStore::connect(&pg.url()).await.unwrap()),
        }
    }

    /// A service over the fixture's data (a new one is a restart).
    async fn service(&self) -> MemoryService {
        self.service_with(Embedding::hashing()).await
    }

    async fn service_with(&self, embedding: Embedding) -> MemoryService {
        MemoryService::new(self.store().await, embedding, Arc::new(MemoryMetrics::new()))
    }

    /// Runs `sql` behind the service's back (the same text for both: the
    /// tables have the same names and columns).
    async fn tamper(&self, sql: &str) {
        match self {
            Fixture::Sqlite(dir) => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("memory.db").display())).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Fixture::Postgres(pg) => {
                pg.query(sql);
            }
        }
    }

    fn is_embedded(&self) -> bool {
        matches!(self, Fixture::Sqlite(_))
    }
}

/// Each test of the suite, once per store.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Fixture::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Fixture::postgres()).await })*
        }
    };
}

suite!(
    tampering_with_a_log_row_or_a_memory_is_named,
    a_memory_edited_behind_the_services_back_fails_verification,
    working_memories_expire_and_a_new_service_finds_everything,
    a_restore_brings_back_each_memory_as_it_stood_and_keeps_all_history,
    another_scopes_ids_are_never_found_and_its_search_sees_nothing,
    filtered_search_returns_k_results_from_a_small_share,
    a_purge_removes_every_version_and_leaves_a_tombstone,
    a_new_embedder_reembeds_the_project_in_the_background,
    a_fork_copies_another_projects_memories_as_they_stood,
    metadata_filters_compare_json_types_too,
);

async fn tampering_with_a_log_row_or_a_memory_is_named(fx: Fixture) {
    let svc = fx.service().await;
    let c = caller("user:a", "p");
    let other = caller("user:b", "p");
    let mut ids = Vec::new();
    for text in ["alpha fact about compilers", "beta fact about linkers", "gamma fact about loaders"] {
        ids.push(svc.add(&c, vec![note(text)]).await.unwrap().remove(0).memory.id);
    }
    svc.add(&other, vec![note("someone else's fact")]).await.unwrap();
    assert!(svc.verify(&c, LogName::Changelog).await.unwrap().ok);

    // editing what an entry records breaks the chain at that entry
    fx.tamper("UPDATE chain SET record = replace(record, '\"add\"', '\"update\"') WHERE tenant = 'user:a' AND log = 'changelog' AND seq = 2").await;
    let v = svc.verify(&c, LogName::Changelog).await.unwrap();
    assert_eq!((v.ok, v.broken_at), (false, Some(2)), "{v:?}");
    assert!(v.reason.unwrap().contains("hash"));
    // another tenant's chain is untouched
    assert!(svc.verify(&other, LogName::Changelog).await.unwrap().ok);
    fx.tamper("UPDATE chain SET record = replace(record, '\"update\"', '\"add\"') WHERE tenant = 'user:a' AND log = 'changelog' AND seq = 2").await;
    assert!(svc.verify(&c, LogName::Changelog).await.unwrap().ok);

    // removing an entry is named too
    fx.tamper("DELETE FROM chain WHERE tenant = 'user:a' AND log = 'changelog' AND seq = 1").await;
    let v = svc.verify(&c, LogName::Changelog).await.unwrap();
    assert_eq!((v.ok, v.broken_at), (false, Some(1)), "{v:?}");
}

async fn a_memory_edited_behind_the_services_back_fails_verification(fx: Fixture) {
    let svc = fx.service().await;
    let c = caller("user:a", "p");
    let id = svc.add(&c, vec![note("the deploy key lives in the vault")]).await.unwrap().remove(0).memory.id;
    // a change of case only (the duplicate hash would not see it)
    fx.tamper(&format!("UPDATE memories SET content = 'The Deploy Key lives in the vault' WHERE id = '{id}'")).await;
    let v = svc.verify(&c, LogName::Changelog).await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.broken_at, Some(1));
    assert!(v.reason.unwrap().contains(&id));
}

async fn working_memories_expire_and_a_new_service_finds_everything(fx: Fixture) {
    let c = caller("user:a", "p");
    {
        let svc = fx.service().await;
        let items: Vec<NewMemory> = (0..500).map(|i| NewMemory { dedup: Some(DedupMode::Off), ..note(&format!("fact number {i} about subject {}", i * 7919 % 1000)) }).collect();
        svc.add(&c, items).await.unwrap();
        let scratch = NewMemory { layer: Some("working".into()), ttl_secs: Some(1), ..note("scratch: half-done refactor") };
        svc.add(&c, vec![scratch]).await.unwrap();
        assert_eq!(svc.list(&c, &Filters { layers: vec!["working".into()], ..Default::default() }, None, None).await.unwrap().memories.len(), 1);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let svc = fx.service().await;
    let page = svc.list(&c, &Filters { layers: vec!["working".into()], ..Default::default() }, None, None).await.unwrap();
    assert!(page.memories.is_empty(), "expired working memory still listed");
    let hits = svc
        .search(&c, &SearchRequest { query: "fact number 123 about subject 37".into(), mode: Some(SearchMode::Vector), top_k: Some(1), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(hits[0].memory.content, format!("fact number 123 about subject {}", 123 * 7919 % 1000));
    if fx.is_embedded() {
        // the graph was rebuilt from the file, without the expired memory
        assert_eq!(svc.index_stats(), (1, 500));
    }
}

async fn a_restore_brings_back_each_memory_as_it_stood_and_keeps_all_history(fx: Fixture) {
    let svc = fx.service().await;
    let c = caller("user:a", "p");
    let kept = svc.add(&c, vec![note("the API listens on port 7070")]).await.unwrap().remove(0).memory.id;
    let changed = svc.add(&c, vec![note("deploys happen on Fridays")]).await.unwrap().remove(0).memory.id;
    let removed = svc.add(&c, vec![note("the cache is redis")]).await.unwrap().remove(0).memory.id;
    let mark = svc.mark_position(&c.scope, "snapshot:one").await.unwrap();
    assert_eq!(mark.changelog_seq, 3);
    // after the mark: an update, a delete, an add
    svc.update(&c, &changed, Patch { content: Some("deploys happen on Mondays".into()), metadata: None }).await.unwrap();
    svc.delete(&c, &removed).await.unwrap();
    let later = svc.add(&c, vec![note("a memory from after the snapshot")]).await.unwrap().remove(0).memory.id;

    let r = svc.restore_marked(&c.scope, "user:a", "snapshot:one").await.unwrap().unwrap();
    assert_eq!((r.changelog_seq, r.restored, r.deleted, r.missing), (3, 2, 1, 0), "{r:?}");
    assert_eq!(svc.get(&c, &kept).await.unwrap().version, 1);
    let back = svc.get(&c, &changed).await.unwrap();
    assert_eq!((back.content.as_str(), back.version), ("deploys happen on Fridays", 3));
    assert_eq!(svc.get(&c, &removed).await.unwrap().content, "the cache is redis");
    assert!(matches!(svc.get(&c, &later).await, Err(MemoryError::NotFound(_))));
    // nothing erased: the Monday version is still in the history, and the
    // chain (restores included) verifies
    let h = svc.history(&c, &changed).await.unwrap();
    assert_eq!(h.versions.iter().map(|v| v.content.as_str()).collect::<Vec<_>>(), ["deploys happen on Fridays", "deploys happen on Mondays", "deploys happen on Fridays"]);
    assert_eq!(h.changes.last().unwrap().record.action, "restore");
    assert!(svc.verify(&c, LogName::Changelog).await.unwrap().ok);
    // search sees the restored state (the graph was rebuilt)
    let hits = svc.search(&c, &SearchRequest { query: "when are deploys".into(), ..Default::default() }).await.unwrap();
    assert!(hits.iter().all(|h| !h.memory.content.contains("Mondays") && h.memory.id != later), "{hits:?}");
    // restoring again changes nothing; a position past the end is refused
    let again = svc.restore_marked(&c.scope, "user:a", "snapshot:one").await.unwrap().unwrap();
    assert_eq!((again.restored, again.deleted), (0, 0));
    assert!(svc.restore(&c, 10_000).await.is_err());
    assert_eq!(svc.restore_marked(&c.scope, "user:a", "snapshot:none").await.unwrap(), None);
}

async fn another_scopes_ids_are_never_found_and_its_search_sees_nothing(fx: Fixture) {
    let svc = fx.service().await;
    let owner = caller("user:a", "github.com/acme/api");
    let id = svc.add(&owner, vec![note("the staging database password rotates monthly")]).await.unwrap().remove(0).memory.id;
    // another tenant with the same project name, and the same tenant's other project
    for other in [caller("user:b", "github.com/acme/api"), caller("user:a", "github.com/acme/web")] {
        assert!(matches!(svc.get(&other, &id).await, Err(MemoryError::NotFound(_))));
        assert!(matches!(svc.history(&other, &id).await, Err(MemoryError::NotFound(_))));
        let patch = Patch { content: Some("overwritten".into()), metadata: None };
        assert!(matches!(svc.update(&other, &id, patch).await, Err(MemoryError::NotFound(_))));
        assert!(matches!(svc.delete(&other, &id).await, Err(MemoryError::NotFound(_))));
        let hits = svc.search(&other, &SearchRequest { query: "staging database password".into(), ..Default::default() }).await.unwrap();
        assert!(hits.is_empty(), "{hits:?}");
        assert!(svc.list(&other, &Filters::default(), None, None).await.unwrap().memories.is_empty());
        assert!(svc.export(&other).await.unwrap().memories.is_empty());
        assert_eq!(svc.log(&other, LogName::Changelog, 0, 100).await.unwrap().entries.len(), 0);
    }
    // untouched for its owner
    let m = svc.get(&owner, &id).await.unwrap();
    assert_eq!((m.version, m.content.as_str()), (1, "the staging database password rotates monthly"));
    assert!(svc.verify(&owner, LogName::Changelog).await.unwrap().ok);
}

async fn filtered_search_returns_k_results_from_a_small_share(fx: Fixture) {
    let svc = fx.service().await;
    let c = caller("team:t", "p");
    let items: Vec<NewMemory> = (0..2000)
        .map(|i| {
            let mut m = NewMemory { dedup: Some(DedupMode::Off), ..note(&format!("note {i}: service {} talks to queue {}", i % 37, i % 11)) };
            // 1% carry the label, another 1% are episodic
            if i % 100 == 7 {
                m.metadata.insert("owner".into(), serde_json::json!("payments"));
            }
            if i % 100 == 50 {
                m.layer = Some("episodic".into());
            }
            m
        })
        .collect();
    for batch in items.chunks(1000) {
        svc.add(&c, batch.to_vec()).await.unwrap();
    }
    let query = "service 12 talks to queue 3";
    let mut filters = Filters::default();
    filters.metadata.insert("owner".into(), serde_json::json!("payments"));
    let req = SearchRequest { query: query.into(), mode: Some(SearchMode::Vector), top_k: Some(10), filters, ..Default::default() };
    let hits = svc.search(&c, &req).await.unwrap();
    assert_eq!(hits.len(), 10, "a 1% filter still returns k");
    assert!(hits.iter().all(|h| h.memory.metadata.get("owner") == Some(&serde_json::json!("payments"))));
    let filters = Filters { layers: vec!["episodic".into()], ..Default::default() };
    let req = SearchRequest { query: query.into(), mode: Some(SearchMode::Vector), top_k: Some(10), filters, ..Default::default() };
    let hits = svc.search(&c, &req).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h.memory.layer.as_str() == "episodic"));
    // best first, and the best is the exact text when it is in the share
    assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity - 1e-6), "{hits:?}");
    let hits = svc.search(&c, &SearchRequest { query: "note 1250: service 29 talks to queue 7".into(), mode: Some(SearchMode::Vector), top_k: Some(3), ..Default::default() }).await.unwrap();
    assert_eq!(hits[0].memory.content, "note 1250: service 29 talks to queue 7");
    // keywords alone find it too
    let hits = svc.search(&c, &SearchRequest { query: "1250".into(), mode: Some(SearchMode::Keyword), ..Default::default() }).await.unwrap();
    assert_eq!(hits[0].memory.content, "note 1250: service 29 talks to queue 7");
}

async fn a_purge_removes_every_version_and_leaves_a_tombstone(fx: Fixture) {
    let svc = fx.service().await;
    let c = caller("user:a", "p");
    let keep = caller("user:a", "q");
    let id = svc.add(&c, vec![note("the build uses sccache")]).await.unwrap().remove(0).memory.id;
    svc.update(&c, &id, Patch { content: Some("the build uses sccache and mold".into()), metadata: None }).await.unwrap();
    svc.add(&keep, vec![note("another project's memory")]).await.unwrap();
    let purged = svc.purge(&c).await.unwrap();
    assert_eq!(purged.memories, 2, "both versions");
    assert!(matches!(svc.history(&c, &id).await, Err(MemoryError::NotFound(_))));
    assert!(svc.search(&c, &SearchRequest { query: "sccache".into(), ..Default::default() }).await.unwrap().is_empty());
    let v = svc.verify(&c, LogName::Changelog).await.unwrap();
    assert!(v.ok, "{v:?}");
    let log = svc.log(&c, LogName::Changelog, 0, 100).await.unwrap().entries;
    assert_eq!(log.last().unwrap().record.action, "purge");
    assert_eq!(svc.position(&c).await.unwrap().memories, 0);
    assert_eq!(svc.list(&keep, &Filters::default(), None, None).await.unwrap().memories.len(), 1);
}

/// PostgreSQL only: a query without its scope filter, run as the service's
/// role, still sees one project; a row for another scope cannot be written.
#[tokio::test]
async fn postgres_row_level_security_is_a_second_wall() {
    let fx = Fixture::postgres();
    let svc = fx.service().await;
    svc.add(&caller("user:a", "p"), vec![note("a's memory"), note("a's other memory")]).await.unwrap();
    svc.add(&caller("user:b", "p"), vec![note("b's memory")]).await.unwrap();
    let Fixture::Postgres(pg) = &fx else { unreachable!() };
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('pinak.tenant', 'user:a', true), set_config('pinak.project', 'p', true)").execute(&mut *tx).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pinak.memories").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(n, 2, "only user:a's rows");
    let chain: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pinak.chain WHERE tenant = 'user:b'").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(chain, 0);
    let forged = sqlx::query("INSERT INTO pinak.chain (tenant, project, log, seq, record, prev_hash, hash) VALUES ('user:b', 'p', 'changelog', 99, '{}', '', '')")
        .execute(&mut *tx)
        .await;
    assert!(forged.is_err(), "a row of another scope was written");
    drop(tx);
    // no scope set: nothing at all
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pinak.memories").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 0);
    // the superuser sees all three (what RLS hides is there)
    assert_eq!(pg.query("SELECT COUNT(*) FROM memories").trim(), "3");
}

/// PostgreSQL only: two API servers writing one project at once keep one
/// unbroken chain, and each sees the other's memories.
#[tokio::test]
async fn postgres_two_servers_writing_one_project_keep_one_chain() {
    let fx = Fixture::postgres();
    let (one, two) = (fx.service().await, fx.service().await);
    let c = caller("team:t", "github.com/acme/api");
    let mut tasks = tokio::task::JoinSet::new();
    for (n, svc) in [(0, one.clone()), (1, two.clone())] {
        for i in 0..25 {
            let (svc, c) = (svc.clone(), c.clone());
            tasks.spawn(async move { svc.add(&c, vec![note(&format!("server {n} wrote fact {i}"))]).await.unwrap() });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let v = one.verify(&c, LogName::Changelog).await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 50);
    assert_eq!(two.position(&c).await.unwrap().memories, 50);
    let hits = two.search(&c, &SearchRequest { query: "server 0 wrote fact 17".into(), top_k: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(hits[0].memory.content, "server 0 wrote fact 17");
}

async fn a_new_embedder_reembeds_the_project_in_the_background(fx: Fixture) {
    let c = caller("user:a", "p");
    let old = fx.service().await;
    let items: Vec<NewMemory> = (0..300).map(|i| NewMemory { dedup: Some(DedupMode::Off), ..note(&format!("fact {i}: module {} depends on crate {}", i % 17, i % 23)) }).collect();
    old.add(&c, items).await.unwrap();
    let gone = old.add(&c, vec![note("a memory deleted before the change")]).await.unwrap().remove(0).memory.id;
    old.delete(&c, &gone).await.unwrap();
    drop(old);

    // the server's embedder changes: old vectors are never compared with new ones
    let svc = fx.service_with(Embedding::from_spec("hash:256", None).unwrap()).await;
    let wanted = "fact 123: module 4 depends on crate 8";
    let by_vector = SearchRequest { query: wanted.into(), mode: Some(SearchMode::Vector), top_k: Some(3), ..Default::default() };
    assert!(svc.search(&c, &by_vector).await.unwrap().is_empty());
    let by_words = SearchRequest { query: "fact 123".into(), mode: Some(SearchMode::Keyword), top_k: Some(3), ..Default::default() };
    assert_eq!(svc.search(&c, &by_words).await.unwrap()[0].memory.content, wanted);
    let idle = svc.reembedding(&c).await.unwrap();
    assert_eq!((idle.state, idle.total, idle.done), (JobState::Idle, 300, 0));

    let viewer = Caller { role: Role::Viewer, ..c.clone() };
    assert!(matches!(svc.reembed(&viewer).await, Err(MemoryError::Forbidden(_))));
    let started = svc.reembed(&c).await.unwrap();
    assert_eq!((started.state, started.total, started.embedder.as_str()), (JobState::Running, 300, svc.embedder_id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let job = loop {
        let j = svc.reembedding(&c).await.unwrap();
        if j.state != JobState::Running {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "re-embedding still running: {j:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!((job.state, job.done, job.error.as_deref()), (JobState::Done, 300, None));
    let hits = svc.search(&c, &by_vector).await.unwrap();
    assert_eq!(hits[0].memory.content, wanted);
    assert!(hits[0].similarity > 0.99, "{hits:?}");
    assert_eq!(hits[0].memory.embedder, svc.embedder_id());
    // nothing left; the content and its chain are untouched
    assert_eq!(svc.store().stale_count(&c.scope, svc.embedder_id()).await.unwrap(), 0);
    let v = svc.verify(&c, LogName::Changelog).await.unwrap();
    assert!(v.ok && v.entries == 302, "{v:?}");
}

async fn a_fork_copies_another_projects_memories_as_they_stood(fx: Fixture) {
    let svc = fx.service().await;
    let main = caller("user:a", "github.com/acme/api");
    let branch = caller("user:a", "github.com/acme/api-experiment");
    let port = svc.add(&main, vec![note("the API listens on port 7070")]).await.unwrap().remove(0).memory.id;
    let day = svc.add(&main, vec![note("deploys happen on Fridays")]).await.unwrap().remove(0).memory.id;
    // a session's turns repeat on purpose: both are copied
    let turn = || NewMemory { layer: Some("session".into()), session_id: Some("s1".into()), ..note("ok") };
    svc.add(&main, vec![turn(), turn()]).await.unwrap();
    let mark = svc.position(&main).await.unwrap();
    svc.update(&main, &day, Patch { content: Some("deploys happen on Mondays".into()), metadata: None }).await.unwrap();
    svc.add(&main, vec![note("a memory from after the mark")]).await.unwrap();

    let req = |seq| ForkRequest { from_project: "https://github.com/acme/api.git".into(), changelog_seq: seq };
    let forked = svc.fork(&branch, req(Some(mark.changelog_seq))).await.unwrap();
    assert_eq!((forked.from_project.as_str(), forked.changelog_seq, forked.added, forked.duplicates), ("github.com/acme/api", 4, 4, 0));
    let session = Filters { layers: vec!["session".into()], ..Default::default() };
    assert_eq!(svc.list(&branch, &session, None, None).await.unwrap().memories.len(), 2);
    let not_session = Filters { layers: vec!["semantic".into()], ..Default::default() };
    let mut copied: Vec<Memory> = svc.list(&branch, &not_session, None, None).await.unwrap().memories;
    copied.sort_by(|a, b| a.content.cmp(&b.content));
    assert_eq!(copied.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["deploys happen on Fridays", "the API listens on port 7070"]);
    assert!(copied.iter().all(|m| m.id != port && m.id != day && m.version == 1), "new ids: {copied:?}");
    // searchable there (the vectors came along); the source is untouched
    let hits = svc.search(&branch, &SearchRequest { query: "when do deploys happen".into(), mode: Some(SearchMode::Vector), top_k: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(hits[0].memory.content, "deploys happen on Fridays");
    let now = svc.get(&main, &day).await.unwrap();
    assert_eq!((now.content.as_str(), now.version), ("deploys happen on Mondays", 2));
    assert!(svc.verify(&branch, LogName::Changelog).await.unwrap().ok);
    assert!(svc.verify(&main, LogName::Changelog).await.unwrap().ok);
    // again: nothing new; from now: the later state
    let again = svc.fork(&branch, req(Some(mark.changelog_seq))).await.unwrap();
    assert_eq!((again.added, again.duplicates), (2, 2), "the session's turns again, the rest skipped");
    let latest = svc.fork(&caller("user:a", "github.com/acme/api-2"), req(None)).await.unwrap();
    assert_eq!((latest.added, latest.changelog_seq), (5, 6));

    // the tenant is the token's: another user's fork of that name reads their own (empty) project
    let other = svc.fork(&caller("user:b", "github.com/b/x"), req(None)).await.unwrap();
    assert_eq!(other.added, 0);
    // a pod's token reaches its own project only
    let pod = Caller { subject: "pod:7".into(), ..branch.clone() };
    assert!(matches!(svc.fork(&pod, req(None)).await, Err(MemoryError::Forbidden(_))));
    assert!(matches!(svc.fork(&main, req(None)).await, Err(MemoryError::Invalid { code: "same_project", .. })));
    assert!(matches!(svc.fork(&branch, req(Some(99))).await, Err(MemoryError::Invalid { code: "invalid_position", .. })));
    let viewer = Caller { role: Role::Viewer, ..branch.clone() };
    assert!(matches!(svc.fork(&viewer, req(None)).await, Err(MemoryError::Forbidden(_))));
}

async fn metadata_filters_compare_json_types_too(fx: Fixture) {
    let svc = fx.service().await;
    let c = caller("user:a", "p");
    let tagged = |content: &str, v: serde_json::Value| {
        let mut m = note(content);
        m.metadata.insert("flag".into(), v);
        m
    };
    svc.add(&c, vec![tagged("flag as a boolean", serde_json::json!(true)), tagged("flag as a number", serde_json::json!(1)), tagged("flag as a string", serde_json::json!("1"))])
        .await
        .unwrap();
    for (value, want) in [(serde_json::json!(true), "flag as a boolean"), (serde_json::json!(1), "flag as a number"), (serde_json::json!(1.0), "flag as a number"), (serde_json::json!("1"), "flag as a string")] {
        let mut filters = Filters::default();
        filters.metadata.insert("flag".into(), value.clone());
        let page = svc.list(&c, &filters, None, None).await.unwrap();
        assert_eq!(page.memories.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), [want], "filter {value}");
    }
}

/// PostgreSQL only: a search of a project goes through the embedder's HNSW
/// index (the partial index's predicate matches the query), when the
/// planner is kept off the table scans.
#[tokio::test]
async fn postgres_searches_use_the_embedders_hnsw_index() {
    let fx = Fixture::postgres();
    let Fixture::Postgres(pg) = &fx else { unreachable!() };
    pg.query("ALTER DATABASE pinak SET enable_seqscan = off");
    let svc = fx.service().await;
    let c = caller("user:a", "p");
    let items: Vec<NewMemory> = (0..300).map(|i| NewMemory { dedup: Some(DedupMode::Off), ..note(&format!("note {i} about crate {}", i % 13)) }).collect();
    svc.add(&c, items).await.unwrap();
    assert!(pg.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'pinak'").contains("memories_hnsw_"), "no HNSW index was made");
    let scans = || pg.query("SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE indexrelname LIKE 'memories_hnsw_%'").trim().parse::<i64>().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let hits = svc.search(&c, &SearchRequest { query: "note 42 about crate 3".into(), mode: Some(SearchMode::Vector), top_k: Some(5), ..Default::default() }).await.unwrap();
        assert_eq!(hits[0].memory.content, "note 42 about crate 3");
        // statistics reach the view within a few seconds of a transaction
        if scans() > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the HNSW index was never scanned");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
