//! The rejected-ids ledger: ids Amplitude skipped (membership) or reported invalid (upload)
//! for this pipeline, each with when it was first and last rejected, how many times, and
//! why. The next run holds them back instead of sending them again — unless
//! `--retry-rejected`, or the entry is older than `reconcile.retry_rejected_after_days` —
//! and an id sent again and accepted leaves the ledger. The ledger is written whole after
//! each apply (one atomic write: a kill leaves the previous one, and the next run at worst
//! sends the ids of the lost update once more), and with each run's lists as
//! `{pipeline}-{run}-rejected.jsonl` (one JSON object a line).
//!
//! The ledger is tied to the id kind it was made with: a pipeline that changes
//! `source.id_kind` is refused (its ledgers, derived baseline and ownership hold ids of
//! the other kind) unless `--force`, which starts the ledgers afresh — see [`check_kind`].
//!
//! Keys: `{pipeline}/reverse/rejected.json`, `{pipeline}/reverse/identity.json`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::amplitude::types::IdKind;
use crate::state::StateStore;

/// One rejected id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub times: u32,
    pub reason: String,
}

/// The ledger document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub version: u32,
    pub id_kind: IdKind,
    pub entries: BTreeMap<String, Entry>,
}

impl Ledger {
    pub fn new(id_kind: IdKind) -> Self {
        Ledger {
            version: 1,
            id_kind,
            entries: BTreeMap::new(),
        }
    }

    /// The ids to hold back now: every entry rejected less than `max_age` ago.
    pub fn held_back(&self, now: DateTime<Utc>, max_age: chrono::Duration) -> HashSet<&str> {
        self.entries
            .iter()
            .filter(|(_, e)| now - e.last_seen < max_age)
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// Records `rejected` (id, reason) as seen `now`; ids in `accepted` (sent again and
    /// not rejected) leave the ledger.
    pub fn update<'a>(
        &mut self,
        rejected: impl IntoIterator<Item = (&'a str, &'a str)>,
        accepted: impl IntoIterator<Item = &'a str>,
        now: DateTime<Utc>,
    ) {
        for id in accepted {
            self.entries.remove(id);
        }
        for (id, reason) in rejected {
            let e = self.entries.entry(id.to_string()).or_insert(Entry {
                first_seen: now,
                last_seen: now,
                times: 0,
                reason: String::new(),
            });
            e.last_seen = now;
            e.times += 1;
            e.reason = reason.to_string();
        }
    }

    /// One JSON object a line: `{"id", "first_seen", "last_seen", "times", "reason"}`.
    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, e) in &self.entries {
            let line = serde_json::json!({
                "id": id,
                "first_seen": e.first_seen,
                "last_seen": e.last_seen,
                "times": e.times,
                "reason": e.reason,
            });
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }
}

fn key(state: &StateStore) -> object_store::path::Path {
    state.doc_key("reverse", "rejected")
}

/// The pipeline's ledger for ids of `kind` (empty when none, or kept for another kind).
pub async fn load(state: &StateStore, kind: IdKind) -> Result<Ledger, String> {
    Ok(match state.read::<Ledger>(&key(state)).await {
        Ok(Some((l, _))) if l.id_kind == kind => l,
        Ok(_) => Ledger::new(kind),
        Err(e) => return Err(e.to_string()),
    })
}

pub async fn save(state: &StateStore, ledger: &Ledger) -> Result<(), String> {
    state
        .write(&key(state), ledger)
        .await
        .map_err(|e| e.to_string())
}

/// The id kind a pipeline's state was made with.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    id_kind: IdKind,
    since: DateTime<Utc>,
    run_id: String,
}

fn identity_key(state: &StateStore) -> object_store::path::Path {
    state.doc_key("reverse", "identity")
}

fn kind_name(kind: IdKind) -> &'static str {
    match kind {
        IdKind::UserId => "user_id",
        IdKind::AmplitudeId => "amplitude_id",
    }
}

/// Refuses a change of `source.id_kind` since the pipeline's earlier runs unless `force`;
/// records the kind when `record` (a run that applies). `Ok(Some(note))` when a forced
/// change started the ledgers afresh.
pub async fn check_kind(
    state: &StateStore,
    kind: IdKind,
    force: bool,
    record: bool,
    run_id: &str,
) -> Result<Option<String>, String> {
    let key = identity_key(state);
    let earlier = state
        .read::<Identity>(&key)
        .await
        .map_err(|e| e.to_string())?
        .map(|(i, _)| i);
    let note = match &earlier {
        Some(i) if i.id_kind != kind && !force => {
            return Err(format!(
                "source.id_kind is {} but this pipeline's earlier runs (since run {}, {}) used {}: its rejected-ids ledger, ownership ledger and derived baseline hold {} ids; set id_kind back, or rerun with --force to start them afresh with {}",
                kind_name(kind),
                i.run_id,
                i.since.format("%Y-%m-%d"),
                kind_name(i.id_kind),
                kind_name(i.id_kind),
                kind_name(kind)
            ));
        }
        Some(i) if i.id_kind != kind => Some(format!(
            "source.id_kind changed from {} to {} (--force): the rejected-ids and ownership ledgers start afresh",
            kind_name(i.id_kind),
            kind_name(kind)
        )),
        _ => None,
    };
    let unchanged = earlier.as_ref().is_some_and(|i| i.id_kind == kind);
    if record && !unchanged {
        let doc = Identity {
            id_kind: kind,
            since: crate::clock::now(),
            run_id: run_id.to_string(),
        };
        state.write(&key, &doc).await.map_err(|e| e.to_string())?;
    }
    Ok(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_count_rejections_and_leave_when_accepted() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let day = chrono::Duration::days(1);
        let mut l = Ledger::new(IdKind::UserId);
        l.update([("a", "skipped by ADD"), ("b", "skipped by ADD")], [], t0);
        l.update([("a", "skipped by ADD")], [], t0 + day);
        assert_eq!(l.entries["a"].times, 2);
        assert_eq!(l.entries["a"].first_seen, t0);
        assert_eq!(l.entries["a"].last_seen, t0 + day);
        let held = l.held_back(t0 + day + day, chrono::Duration::hours(36));
        assert!(held.contains("a") && !held.contains("b"), "{held:?}");
        l.update([], ["a"], t0 + day);
        assert!(!l.entries.contains_key("a"));
        let text = String::from_utf8(l.to_jsonl()).expect("utf-8");
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"id\":\"b\""), "{text}");
    }

    #[tokio::test]
    async fn a_changed_id_kind_is_refused_unless_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(crate::storage::open("s", dir.path()).expect("open"), "p");
        assert_eq!(
            check_kind(&state, IdKind::UserId, false, true, "r1").await,
            Ok(None)
        );
        let refused = check_kind(&state, IdKind::AmplitudeId, false, true, "r2")
            .await
            .expect_err("refused");
        assert!(refused.contains("--force"), "{refused}");
        let note = check_kind(&state, IdKind::AmplitudeId, true, true, "r3")
            .await
            .expect("forced");
        assert!(note.is_some());
        assert_eq!(
            check_kind(&state, IdKind::AmplitudeId, false, true, "r4").await,
            Ok(None)
        );
    }
}
