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
use crate::entities::audit_entry;
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
}
