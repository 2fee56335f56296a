//! The tamper-evident audit log: every mutating action is appended as an
//! entry that carries the hash of the entry before it. Editing, removing or
//! reordering any stored entry breaks the chain from that entry on, and
//! [`verify`] names the first broken one.
//!
//! `hash = hex(SHA-256(prev_hash || canonical JSON of the entry's fields))`,
//! where canonical JSON is serde_json's rendering of a map with sorted keys
//! and no whitespace.

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::entities::{audit_anchor, audit_entry};
use crate::{ApiError, AppState};

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
    let mut prev = GENESIS.to_owned();
    for e in entries {
        let broken = if e.prev_hash != prev {
            Some("its previous-hash link does not match the entry before it (an entry was removed, reordered or edited)")
        } else if entry_hash(&prev, &e.fields) != e.hash {
            Some("its contents do not match its hash (the entry was edited)")
        } else {
            None
        };
        if let Some(reason) = broken {
            return Verification {
                ok: false,
                entries: entries.len(),
                first_broken: Some(e.fields.id),
                reason: Some(reason.to_owned()),
                head: prev,
            };
        }
        prev = e.hash.clone();
    }
    Verification { ok: true, entries: entries.len(), first_broken: None, reason: None, head: prev }
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

/// Appends an entry on `db` (a transaction, so it commits with the action
/// it records). The caller holds the write lock, so the chain has one head.
pub async fn append<C: ConnectionTrait>(
    db: &C,
    who: &Principal,
    action: &str,
    target: &str,
) -> Result<AuditEntry, ApiError> {
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
    audit_entry::ActiveModel {
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
    .await?;
    Ok(AuditEntry { fields, prev_hash: prev, hash })
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl AppState {
    /// Records an action outside any other transaction.
    pub async fn audit(&self, who: &Principal, action: &str, target: &str) -> Result<(), ApiError> {
        let _w = self.write_lock.lock().await;
        append(&self.db, who, action, target).await.map(|_| ())
    }

    /// Every entry, oldest first.
    pub async fn audit_entries(&self) -> Result<Vec<AuditEntry>, ApiError> {
        Ok(audit_entry::Entity::find()
            .order_by_asc(audit_entry::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(AuditEntry::from)
            .collect())
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
    let mut v = verify(entries);
    let mut sorted: Vec<&Anchor> = anchors.iter().collect();
    sorted.sort_by_key(|a| a.entry_id);
    for a in sorted {
        if v.first_broken.is_some_and(|b| b <= a.entry_id) {
            break;
        }
        let problem = match entries.binary_search_by_key(&a.entry_id, |e| e.fields.id) {
            Err(_) => Some(format!("entry {} was anchored at {} but is gone", a.entry_id, a.at)),
            Ok(i) if entries[i].hash != a.hash => Some(format!(
                "its hash differs from the anchor recorded at {} (the log was rewritten up to here)",
                a.at
            )),
            Ok(_) => None,
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

impl AppState {
    /// Records the chain's head as an anchor (in the database, the anchor
    /// file if configured, and the log), unless it is already anchored.
    pub async fn anchor_audit(&self) -> Result<Option<Anchor>, ApiError> {
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
    pub async fn audit_anchors(&self) -> Result<Vec<Anchor>, ApiError> {
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
