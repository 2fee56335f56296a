//! What both stores write into and read out of the logs, as plain data:
//! the changelog records of each change, each memory's version at a
//! changelog position (what a restore goes back to), and the check of
//! stored content against the hashes the changelog recorded.

use std::collections::HashMap;

use crate::model::{Memory, Record};
use crate::store::{integrity_hash, NewRow};

/// The changelog record of a new version (`add`, `update`, `restore`).
pub fn written(actor: &str, action: &str, row: &NewRow, before: Option<&str>, detail: Option<String>) -> Record {
    Record {
        at: row.created_at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        memory_id: Some(row.id.clone()),
        version: Some(row.version),
        layer: Some(row.layer.as_str().into()),
        before: before.map(integrity_hash),
        after: Some(integrity_hash(&row.content)),
        detail,
    }
}

/// The changelog record of a version leaving the current set for good
/// (`delete`, or `restore` of a memory added after the position).
pub fn retired(actor: &str, action: &str, old: &Memory, at: i64, detail: Option<String>) -> Record {
    Record {
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        memory_id: Some(old.id.clone()),
        version: Some(old.version),
        layer: Some(old.layer.as_str().into()),
        before: Some(integrity_hash(&old.content)),
        after: None,
        detail,
    }
}

/// The tombstone a purge leaves in both logs.
pub fn purge(actor: &str, at: i64, removed: u64) -> Record {
    Record {
        at,
        actor: actor.to_owned(),
        action: "purge".into(),
        memory_id: None,
        version: None,
        layer: None,
        before: None,
        after: None,
        detail: Some(format!("{removed} versions removed")),
    }
}

/// The detail of a chunk's `add` entry.
pub fn chunk_detail(start: i64, end: i64) -> String {
    format!("chunk {start}..{end}")
}

/// Each memory's version after the changelog entries `records` (oldest
/// first, up to the position): `None` when it was deleted by then. A purge
/// forgets everything before it.
pub fn versions_at<'a>(records: impl IntoIterator<Item = &'a str>) -> HashMap<String, Option<i64>> {
    let mut then: HashMap<String, Option<i64>> = HashMap::new();
    for text in records {
        let Ok(rec) = serde_json::from_str::<Record>(text) else { continue };
        if rec.action == "purge" {
            then.clear();
        }
        if let Some(id) = rec.memory_id {
            then.insert(id, rec.after.is_some().then_some(rec.version).flatten());
        }
    }
    then
}

/// A position past the project's changelog (`head`, its last entry).
pub fn invalid_position(head: i64) -> crate::MemoryError {
    crate::MemoryError::invalid("invalid_position", format!("changelog_seq: 0 to {head} (the project's changelog)"))
}

/// The content hash each version's changelog entry recorded, with the
/// entry's number, from a whole changelog.
pub fn recorded_hashes<'a>(entries: impl IntoIterator<Item = (i64, &'a [u8])>) -> HashMap<(String, i64), (i64, String)> {
    let mut recorded = HashMap::new();
    for (seq, payload) in entries {
        if let Ok(rec) = serde_json::from_slice::<Record>(payload) {
            if let (Some(id), Some(v), Some(after)) = (rec.memory_id, rec.version, rec.after) {
                recorded.insert((id, v), (seq, after));
            }
        }
    }
    recorded
}

/// Why a stored version fails verification, if it does: the entry that
/// recorded it (when there is one) and the reason.
pub fn content_fault(recorded: &HashMap<(String, i64), (i64, String)>, id: &str, version: i64, content: &str) -> Option<(Option<i64>, String)> {
    match recorded.get(&(id.to_owned(), version)) {
        None => Some((None, format!("memory {id} version {version} has no changelog entry"))),
        Some((seq, h)) if *h != integrity_hash(content) => {
            Some((Some(*seq), format!("memory {id} version {version}: its content does not match the hash recorded at entry {seq}")))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(action: &str, id: Option<&str>, version: Option<i64>, after: bool) -> String {
        serde_json::to_string(&Record {
            at: 0,
            actor: "user:a".into(),
            action: action.into(),
            memory_id: id.map(Into::into),
            version,
            layer: None,
            before: None,
            after: after.then(|| "h".into()),
            detail: None,
        })
        .unwrap()
    }

    #[test]
    fn versions_at_a_position_follow_updates_deletes_and_purges() {
        let log = [
            rec("add", Some("a"), Some(1), true),
            rec("add", Some("b"), Some(1), true),
            rec("update", Some("a"), Some(2), true),
            rec("delete", Some("b"), Some(1), false),
        ];
        let then = versions_at(log.iter().map(String::as_str));
        assert_eq!(then.get("a"), Some(&Some(2)));
        assert_eq!(then.get("b"), Some(&None));
        let mut with_purge: Vec<String> = log.to_vec();
        with_purge.push(rec("purge", None, None, false));
        with_purge.push(rec("add", Some("c"), Some(1), true));
        let then = versions_at(with_purge.iter().map(String::as_str));
        assert_eq!(then.len(), 1);
        assert_eq!(then.get("c"), Some(&Some(1)));
    }

    #[test]
    fn a_content_change_of_any_kind_is_a_fault_named_at_its_entry() {
        let entry = serde_json::to_vec(&Record {
            at: 0,
            actor: "user:a".into(),
            action: "add".into(),
            memory_id: Some("m".into()),
            version: Some(1),
            layer: None,
            before: None,
            after: Some(integrity_hash("Deploy on Fridays")),
            detail: None,
        })
        .unwrap();
        let recorded = recorded_hashes([(7, entry.as_slice())]);
        assert_eq!(content_fault(&recorded, "m", 1, "Deploy on Fridays"), None);
        assert_eq!(content_fault(&recorded, "m", 1, "deploy on fridays").unwrap().0, Some(7));
        assert_eq!(content_fault(&recorded, "m", 2, "Deploy on Fridays").unwrap().0, None);
    }
}
