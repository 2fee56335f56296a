//! The tamper-evident audit log: every mutating action is appended as an
//! entry that carries the hash of the entry before it. Editing, removing or
//! reordering any stored entry breaks the chain from that entry on, and
//! [`verify`] names the first broken one.
//!
//! `hash = hex(SHA-256(prev_hash || canonical JSON of the entry's fields))`,
//! where canonical JSON is serde_json's rendering of a map with sorted keys
//! and no whitespace.

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::principal::Principal;
use crate::entities::{audit_anchor, audit_entry};
use crate::ApiError;

/// The hash the first entry chains from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of an entry that its hash covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryFields {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_id: String,
    pub actor_name: String,
    pub action: String,
    pub target: String,
    pub source: String,
}

/// An entry as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(flatten)]
    pub fields: EntryFields,
    pub prev_hash: String,
    pub hash: String,
}

/// The canonical JSON of `fields`: sorted keys, no whitespace, timestamps
/// in RFC 3339 with nanoseconds.
pub fn canonical_json(f: &EntryFields) -> String {
    let v = serde_json::json!({
        "action": f.action,
        "actor_id": f.actor_id,
        "actor_name": f.actor_name,
        "at": f.at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        "id": f.id,
        "source": f.source,
        "target": f.target,
    });
    v.to_string()
}

/// The hash of an entry with `fields` following an entry hashed `prev`.
pub fn entry_hash(prev: &str, fields: &EntryFields) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(canonical_json(fields).as_bytes());
    hex::encode(h.finalize())
}

/// Where the chain breaks, if it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub entries: usize,
    /// Id of the first entry whose link or hash does not hold.
    pub first_broken: Option<i64>,
    pub reason: Option<String>,
    /// Hash of the last entry (the head), to compare with a saved anchor.
    pub head: String,
}

/// Checks a chain given oldest first.
pub fn verify(entries: &[AuditEntry]) -> Verification {
    let mut chain = ChainCheck::default();
    for e in entries {
        chain.push(e);
    }
    chain.finish()
}

impl From<audit_entry::Model> for AuditEntry {
    fn from(m: audit_entry::Model) -> Self {
        AuditEntry {
            fields: EntryFields {
                id: m.id,
                at: m.at,
                actor_id: m.actor_id,
                actor_name: m.actor_name,
                action: m.action,
                target: m.target,
                source: m.source,
            },
            prev_hash: m.prev_hash,
            hash: m.hash,
        }
    }
}

/// How many times [`append`] tries for a free id before giving up.
const APPEND_ATTEMPTS: usize = 32;

/// Appends an entry on `db` (a transaction, so it commits with the action
/// it records, or the connection itself).
///
/// The id is the head's id plus one and the primary key makes it unique,
/// so two writers (two API processes, or the server and an agent on one
/// database) can never both extend the same head: the second one's insert
/// fails on the key, and it reads the new head and tries again. An entry
/// once stored is never changed, so the head read is the entry the new one
/// chains from. Within one process the write lock already serialises
/// appends; the retry is for writers in other processes. (On SQLite a
/// transaction that already wrote holds the database's write lock, so its
/// read of the head is current; one that only read and went stale fails
/// its first write instead, before this point or here, and rolls back.)
pub async fn append<C: ConnectionTrait>(
    db: &C,
    who: &Principal,
    action: &str,
    target: &str,
) -> Result<AuditEntry, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = audit_entry::Entity::find().order_by_desc(audit_entry::Column::Id).one(db).await?;
        let (prev, id) = match last {
            Some(l) => (l.hash, l.id + 1),
            None => (GENESIS.to_owned(), 1),
        };
        let fields = EntryFields {
            id,
            // stored with microsecond precision by some databases: truncate so
            // what is hashed is what is stored
            at: truncate_micros(Utc::now()),
            actor_id: who.user_id.clone(),
            actor_name: who.user_name.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            source: who.source.clone(),
        };
        let hash = entry_hash(&prev, &fields);
        let inserted = audit_entry::ActiveModel {
            id: Set(id),
            at: Set(fields.at),
            actor_id: Set(fields.actor_id.clone()),
            actor_name: Set(fields.actor_name.clone()),
            action: Set(fields.action.clone()),
            target: Set(fields.target.clone()),
            source: Set(fields.source.clone()),
            prev_hash: Set(prev.clone()),
            hash: Set(hash.clone()),
        }
        .insert(db)
        .await;
        match inserted {
            Ok(_) => return Ok(AuditEntry { fields, prev_hash: prev, hash }),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) && attempt < APPEND_ATTEMPTS => {
                // another process took this id: chain from its entry instead
                tracing::debug!(id, attempt, "audit id taken by another writer; retrying");
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The audit log as a service: records outside other transactions, pages,
/// verification and anchors. (Inside a transaction, [`append`] records.)
#[derive(Clone)]
pub struct AuditLog {
    db: sea_orm::DatabaseConnection,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Append-only copy of the anchors outside the database.
    anchor_file: Option<std::path::PathBuf>,
}

impl AuditLog {
    /// `write_lock`: the one that serialises the database's writers.
    pub fn new(db: sea_orm::DatabaseConnection, write_lock: std::sync::Arc<tokio::sync::Mutex<()>>, anchor_file: Option<std::path::PathBuf>) -> Self {
        Self { db, write_lock, anchor_file }
    }

    /// Records an action outside any other transaction.
    pub async fn record(&self, who: &Principal, action: &str, target: &str) -> Result<(), ApiError> {
        let _w = self.write_lock.lock().await;
        append(&self.db, who, action, target).await.map(|_| ())
    }

    /// One page of the log, oldest first: the newest `limit` entries with
    /// an id below `before` (all ids when `None`), only `actor`'s when
    /// given. Also the cursor of the next (older) page, when there is one.
    pub async fn page(
        &self,
        actor: Option<&str>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<(Vec<AuditEntry>, Option<i64>), ApiError> {
        let mut q = audit_entry::Entity::find();
        if let Some(actor) = actor {
            q = q.filter(audit_entry::Column::ActorId.eq(actor));
        }
        if let Some(before) = before {
            q = q.filter(audit_entry::Column::Id.lt(before));
        }
        let mut rows = q.order_by_desc(audit_entry::Column::Id).limit(limit.saturating_add(1)).all(&self.db).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next = if more { rows.last().map(|r| r.id) } else { None };
        rows.reverse();
        Ok((rows.into_iter().map(AuditEntry::from).collect(), next))
    }

    /// Entries with an id above `after`, oldest first, at most `limit`.
    async fn after(&self, after: i64, limit: u64) -> Result<Vec<AuditEntry>, ApiError> {
        Ok(audit_entry::Entity::find()
            .filter(audit_entry::Column::Id.gt(after))
            .order_by_asc(audit_entry::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(AuditEntry::from)
            .collect())
    }

    /// Every entry, oldest first (tests and small logs; the routes page).
    pub async fn entries(&self) -> Result<Vec<AuditEntry>, ApiError> {
        let mut all = Vec::new();
        loop {
            let page = self.after(all.last().map_or(0, |e: &AuditEntry| e.fields.id), VERIFY_PAGE).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// [`verify_with_anchors`] over the stored log, read [`VERIFY_PAGE`]
    /// entries at a time: memory stays bounded however long the log is.
    pub async fn verify(&self) -> Result<Verification, ApiError> {
        let anchors = self.anchors().await?;
        let anchored: std::collections::HashSet<i64> = anchors.iter().map(|a| a.entry_id).collect();
        let mut chain = ChainCheck::default();
        let mut hashes = std::collections::HashMap::new();
        let mut after = 0;
        loop {
            let page = self.after(after, VERIFY_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.fields.id;
            for e in &page {
                chain.push(e);
                if anchored.contains(&e.fields.id) {
                    hashes.insert(e.fields.id, e.hash.clone());
                }
            }
        }
        Ok(check_anchors(chain.finish(), &anchors, |id| hashes.get(&id).map(String::as_str)))
    }
}

/// Entries read per query by [`AuditLog::verify`].
pub const VERIFY_PAGE: u64 = 1000;

/// [`verify`], one entry at a time.
#[derive(Debug)]
pub struct ChainCheck {
    prev: String,
    entries: usize,
    broken: Option<(i64, &'static str)>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        Self { prev: GENESIS.to_owned(), entries: 0, broken: None }
    }
}

impl ChainCheck {
    /// The next entry, in id order.
    pub fn push(&mut self, e: &AuditEntry) {
        self.entries += 1;
        if self.broken.is_some() {
            return;
        }
        let broken = if e.prev_hash != self.prev {
            Some("its previous-hash link does not match the entry before it (an entry was removed, reordered or edited)")
        } else if entry_hash(&self.prev, &e.fields) != e.hash {
            Some("its contents do not match its hash (the entry was edited)")
        } else {
            None
        };
        match broken {
            Some(reason) => self.broken = Some((e.fields.id, reason)),
            None => self.prev.clone_from(&e.hash),
        }
    }

    pub fn finish(self) -> Verification {
        Verification {
            ok: self.broken.is_none(),
            entries: self.entries,
            first_broken: self.broken.map(|(id, _)| id),
            reason: self.broken.map(|(_, r)| r.to_owned()),
            head: self.prev,
        }
    }
}

/// A recorded head of the chain: entry `entry_id` had hash `hash` at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub entry_id: i64,
    pub hash: String,
    pub at: DateTime<Utc>,
}

/// [`verify`], then checks the chain against anchors: an anchored entry
/// must still exist with the anchored hash. This catches a rewrite that
/// recomputed every hash after an edit, as long as the anchor itself was
/// kept outside the attacker's reach (the anchor file, the server log).
pub fn verify_with_anchors(entries: &[AuditEntry], anchors: &[Anchor]) -> Verification {
    check_anchors(verify(entries), anchors, |id| {
        entries.binary_search_by_key(&id, |e| e.fields.id).ok().map(|i| entries[i].hash.as_str())
    })
}

/// The anchor half of [`verify_with_anchors`]: `hash_of` gives the stored
/// hash of an entry by id.
fn check_anchors<'h>(mut v: Verification, anchors: &[Anchor], hash_of: impl Fn(i64) -> Option<&'h str>) -> Verification {
    let mut sorted: Vec<&Anchor> = anchors.iter().collect();
    sorted.sort_by_key(|a| a.entry_id);
    for a in sorted {
        if v.first_broken.is_some_and(|b| b <= a.entry_id) {
            break;
        }
        let problem = match hash_of(a.entry_id) {
            None => Some(format!("entry {} was anchored at {} but is gone", a.entry_id, a.at)),
            Some(h) if h != a.hash => Some(format!(
                "its hash differs from the anchor recorded at {} (the log was rewritten up to here)",
                a.at
            )),
            Some(_) => None,
        };
        if let Some(reason) = problem {
            v.ok = false;
            v.first_broken = Some(a.entry_id);
            v.reason = Some(reason);
            break;
        }
    }
    v
}

impl AuditLog {
    /// Records the chain's head as an anchor (in the database, the anchor
    /// file if configured, and the log), unless it is already anchored.
    pub async fn anchor(&self) -> Result<Option<Anchor>, ApiError> {
        let _w = self.write_lock.lock().await;
        let Some(head) = audit_entry::Entity::find().order_by_desc(audit_entry::Column::Id).one(&self.db).await? else {
            return Ok(None);
        };
        if audit_anchor::Entity::find_by_id(head.id).one(&self.db).await?.is_some() {
            return Ok(None);
        }
        let anchor = Anchor { entry_id: head.id, hash: head.hash, at: truncate_micros(Utc::now()) };
        audit_anchor::ActiveModel { entry_id: Set(anchor.entry_id), hash: Set(anchor.hash.clone()), at: Set(anchor.at) }
            .insert(&self.db)
            .await?;
        if let Some(path) = &self.anchor_file {
            use std::io::Write;
            let line = serde_json::to_string(&anchor).map_err(ApiError::internal)?;
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}").and_then(|()| f.sync_data()));
            if let Err(e) = written {
                tracing::error!(path = %path.display(), error = %e, "could not append the audit anchor");
            }
        }
        tracing::info!(entry = anchor.entry_id, hash = %anchor.hash, "audit log anchored");
        Ok(Some(anchor))
    }

    /// Every anchor: the database's and the anchor file's.
    pub async fn anchors(&self) -> Result<Vec<Anchor>, ApiError> {
        let mut anchors: Vec<Anchor> = audit_anchor::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|a| Anchor { entry_id: a.entry_id, hash: a.hash, at: a.at })
            .collect();
        if let Some(path) = &self.anchor_file {
            if let Ok(text) = std::fs::read_to_string(path) {
                anchors.extend(text.lines().filter_map(|l| serde_json::from_str::<Anchor>(l).ok()));
            }
        }
        Ok(anchors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|id| {
                let fields = EntryFields {
                    id,
                    at: DateTime::from_timestamp(1_700_000_000 + id, 0).unwrap(),
                    actor_id: "u1".into(),
                    actor_name: "admin".into(),
                    action: "pod.create".into(),
                    target: format!("pod:{id}"),
                    source: "127.0.0.1".into(),
                };
                let hash = entry_hash(&prev, &fields);
                let e = AuditEntry { fields, prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let c = chain(5);
        let v = verify(&c);
        assert!(v.ok);
        assert_eq!((v.entries, v.head.as_str()), (5, c[4].hash.as_str()));
        assert!(verify(&[]).ok);
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut c = chain(5);
        c[2].fields.target = "pod:someone-else".into();
        let v = verify(&c);
        assert_eq!((v.ok, v.first_broken), (false, Some(3)));
        assert!(v.reason.unwrap().contains("edited"));
    }

    #[test]
    fn an_edited_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let mut c = chain(5);
        c[1].fields.action = "pod.delete".into();
        c[1].hash = entry_hash(&c[1].prev_hash, &c[1].fields);
        assert_eq!(verify(&c).first_broken, Some(3));
    }

    #[test]
    fn removed_and_reordered_entries_are_found() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify(&c).first_broken, Some(3));
        let mut c = chain(5);
        c.swap(2, 3);
        assert_eq!(verify(&c).first_broken, Some(4));
    }

    #[test]
    fn canonical_json_is_stable() {
        let c = chain(1);
        assert_eq!(
            canonical_json(&c[0].fields),
            r#"{"action":"pod.create","actor_id":"u1","actor_name":"admin","at":"2023-11-14T22:13:21.000000000Z","id":1,"source":"127.0.0.1","target":"pod:1"}"#
        );
    }

    #[test]
    fn anchors_catch_a_rewritten_chain() {
        let c = chain(5);
        let anchor = Anchor { entry_id: 4, hash: c[3].hash.clone(), at: DateTime::from_timestamp(1_800_000_000, 0).unwrap() };
        assert!(verify_with_anchors(&c, std::slice::from_ref(&anchor)).ok);
        // Edit entry 2 and recompute every hash after it: the chain alone verifies...
        let mut forged = c.clone();
        forged[1].fields.target = "pod:forged".into();
        let mut prev = forged[0].hash.clone();
        for e in forged.iter_mut().skip(1) {
            e.prev_hash = prev.clone();
            e.hash = entry_hash(&prev, &e.fields);
            prev = e.hash.clone();
        }
        assert!(verify(&forged).ok);
        // ...but not against the anchor.
        let v = verify_with_anchors(&forged, std::slice::from_ref(&anchor));
        assert_eq!((v.ok, v.first_broken), (false, Some(4)));
        assert!(v.reason.unwrap().contains("anchor"));
        // Truncating the log past an anchor is caught too.
        let v = verify_with_anchors(&c[..3], &[anchor]);
        assert_eq!((v.ok, v.first_broken), (false, Some(4)));
    }
}
