//! The store and service over a real SQLite file: tampering with a stored
//! log row or a memory's content is detected and named; working memories
//! expire; the vector index is rebuilt from the file by a new service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use pinacle_memory_service::embedding::Embedding;
use pinacle_memory_service::metrics::MemoryMetrics;
use pinacle_memory_service::model::*;
use pinacle_memory_service::store::SqliteStore;
use pinacle_memory_service::{Caller, MemoryService, Role, Scope};

fn caller(tenant: &str, project: &str) -> Caller {
    Caller { scope: Scope { tenant: tenant.into(), project: project.into() }, role: Role::Admin, subject: "user:test".into() }
}

async fn service(path: &std::path::Path) -> MemoryService {
    let store = SqliteStore::open(path).await.unwrap();
    MemoryService::new(store, Embedding::hashing(), Default::default(), Arc::new(MemoryMetrics::new()))
}

fn note(content: &str) -> NewMemory {
    NewMemory { content: content.into(), ..Default::default() }
}

#[tokio::test]
async fn tampering_with_a_log_row_or_a_memory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir.path().join("memory.db")).await;
    let c = caller("user:a", "p");
    let other = caller("user:b", "p");
    let mut ids = Vec::new();
    for text in ["alpha fact about compilers", "beta fact about linkers", "gamma fact about loaders"] {
        ids.push(svc.add(&c, vec![note(text)]).await.unwrap().remove(0).memory.id);
    }
    svc.add(&other, vec![note("someone else's fact")]).await.unwrap();
    assert!(svc.verify(&c, LogName::Changelog).await.unwrap().ok);
    let pool = svc.store().pool();

    // editing what an entry records breaks the chain at that entry
    sqlx::query("UPDATE chain SET record = replace(record, '\"add\"', '\"update\"') WHERE tenant = 'user:a' AND log = 'changelog' AND seq = 2")
        .execute(pool)
        .await
        .unwrap();
    let v = svc.verify(&c, LogName::Changelog).await.unwrap();
    assert_eq!((v.ok, v.broken_at), (false, Some(2)), "{v:?}");
    assert!(v.reason.unwrap().contains("hash"));
    // another tenant's chain is untouched
    assert!(svc.verify(&other, LogName::Changelog).await.unwrap().ok);
    sqlx::query("UPDATE chain SET record = replace(record, '\"update\"', '\"add\"') WHERE tenant = 'user:a' AND log = 'changelog' AND seq = 2")
        .execute(pool)
        .await
        .unwrap();
    assert!(svc.verify(&c, LogName::Changelog).await.unwrap().ok);

    // removing an entry is named too
    sqlx::query("DELETE FROM chain WHERE tenant = 'user:a' AND log = 'changelog' AND seq = 1").execute(pool).await.unwrap();
    let v = svc.verify(&c, LogName::Changelog).await.unwrap();
    assert_eq!((v.ok, v.broken_at), (false, Some(1)), "{v:?}");
}

#[tokio::test]
async fn a_memory_edited_behind_the_services_back_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir.path().join("memory.db")).await;
    let c = caller("user:a", "p");
    let id = svc.add(&c, vec![note("the deploy key lives in the vault")]).await.unwrap().remove(0).memory.id;
    // a change of case only (the duplicate hash would not see it)
    sqlx::query("UPDATE memories SET content = 'The Deploy Key lives in the vault' WHERE id = ?").bind(&id).execute(svc.store().pool()).await.unwrap();
    let v = svc.verify(&c, LogName::Changelog).await.unwrap();
    assert!(!v.ok);
    assert_eq!(v.broken_at, Some(1));
    assert!(v.reason.unwrap().contains(&id));
}

#[tokio::test]
async fn working_memories_expire_and_a_new_service_rebuilds_the_index_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let c = caller("user:a", "p");
    {
        let svc = service(&path).await;
        let items: Vec<NewMemory> = (0..500).map(|i| NewMemory { dedup: Some(DedupMode::Off), ..note(&format!("fact number {i} about subject {}", i * 7919 % 1000)) }).collect();
        svc.add(&c, items).await.unwrap();
        let scratch = NewMemory { layer: Some("working".into()), ttl_secs: Some(1), ..note("scratch: half-done refactor") };
        svc.add(&c, vec![scratch]).await.unwrap();
        assert_eq!(svc.list(&c, &Filters { layers: vec!["working".into()], ..Default::default() }, None, None).await.unwrap().memories.len(), 1);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let svc = service(&path).await;
    let page = svc.list(&c, &Filters { layers: vec!["working".into()], ..Default::default() }, None, None).await.unwrap();
    assert!(page.memories.is_empty(), "expired working memory still listed");
    let hits = svc
        .search(&c, &SearchRequest { query: "fact number 123 about subject 37".into(), mode: Some(SearchMode::Vector), top_k: Some(1), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(hits[0].memory.content, format!("fact number 123 about subject {}", 123 * 7919 % 1000));
    assert_eq!(svc.index_stats(), (1, 500));
}

#[tokio::test]
async fn a_restore_brings_back_each_memory_as_it_stood_and_keeps_all_history() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir.path().join("memory.db")).await;
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
    assert!(matches!(svc.get(&c, &later).await, Err(pinacle_memory_service::MemoryError::NotFound(_))));
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
