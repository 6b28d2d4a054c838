//! The ownership ledger of `mode = "mirror_owned"`: the ids this pipeline added to its
//! target cohort, so that a later run removes only those — never members someone else or a
//! behavioral computation put there (Census's mirror, drt's tracked mirror).
//!
//! It moves chunk by chunk with the journal: when a chunk is journaled `applied`, a delta
//! (the ids it added, less those Amplitude skipped, or the ids it removed) is written next
//! to it. A kill between the two leaves the journal open, and the next run first writes
//! the deltas of the applied chunks that lack one, from the journal's chunk documents
//! ([`catch_up`]) — so the ledger never misses an applied chunk, and never holds one that
//! was not applied. Each run folds the deltas into the base document ([`fold`]): the base
//! records the last delta it holds, so a kill between the fold and the deletion of the
//! folded deltas applies nothing twice.
//!
//! Keys: `{pipeline}/owned/{target}.json` (the base: id kind, ids, last delta folded) and
//! `{pipeline}/owned-deltas/{target}.{planned_at}.{run}.{index}.json` (one applied chunk),
//! names that sort in the order the chunks were applied.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::journal::{ChunkOp, ChunkState, Journal, JournalDoc};
use crate::amplitude::types::IdKind;
use crate::state::StateStore;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Base {
    #[serde(default)]
    id_kind: Option<IdKind>,
    ids: Vec<String>,
    /// Name of the last delta folded in (deltas up to it are already counted).
    #[serde(default)]
    folded_through: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Delta {
    op: ChunkOp,
    ids: Vec<String>,
}

/// The ids the pipeline owns in its target, of the pipeline's id kind.
#[derive(Debug, Default)]
pub struct Owned {
    pub ids: HashSet<String>,
    /// The ledger held ids of another kind (dropped: they cannot be matched).
    pub other_kind: Option<IdKind>,
}

fn delta_name(doc: &JournalDoc, index: usize) -> String {
    format!(
        "{}.{}.{}.{index:05}",
        doc.target,
        doc.planned_at.format("%Y%m%dT%H%M%S%6fZ"),
        doc.planned_by
    )
}

/// Records the ids of chunk `index` of `doc`, just journaled `applied`: added (`ids` less
/// `skipped`) or removed.
pub async fn record_chunk(
    state: &StateStore,
    doc: &JournalDoc,
    index: usize,
    ids: &[String],
    skipped: &[String],
) -> Result<(), String> {
    let op = doc.chunks[index].op;
    let skipped: HashSet<&str> = skipped.iter().map(String::as_str).collect();
    let ids: Vec<String> = ids
        .iter()
        .filter(|id| op == ChunkOp::Remove || !skipped.contains(id.as_str()))
        .cloned()
        .collect();
    let key = state.doc_key("owned-deltas", &delta_name(doc, index));
    state
        .write(&key, &Delta { op, ids })
        .await
        .map_err(|e| format!("recording the ids chunk {} owns: {e}", index + 1))
}

/// Writes the deltas of the applied chunks of an open journal that have none (a kill came
/// between journaling a chunk and recording it). Answers how many were written.
pub async fn catch_up(state: &StateStore, journal: &Journal) -> Result<usize, String> {
    let existing: HashSet<String> = deltas(state, &journal.doc.target)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut written = 0;
    for (i, c) in journal.doc.chunks.iter().enumerate() {
        if c.state != ChunkState::Applied || existing.contains(&delta_name(&journal.doc, i)) {
            continue;
        }
        let ids = journal.chunk_ids(i).await.map_err(|e| e.to_string())?;
        // The ids Amplitude skipped in that call are not known any more: owning an id
        // Amplitude does not know removes nothing anyone else added.
        record_chunk(state, &journal.doc, i, &ids, &[]).await?;
        written += 1;
    }
    Ok(written)
}

/// The delta documents of `target`, sorted by name (the order they were applied).
async fn deltas(
    state: &StateStore,
    target: &str,
) -> Result<Vec<(String, object_store::path::Path)>, String> {
    let prefix = format!("{target}.");
    let mut out: Vec<(String, object_store::path::Path)> = state
        .list_folder("owned-deltas")
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|key| {
            let name = key.filename()?.strip_suffix(".json")?.to_string();
            name.starts_with(&prefix).then_some((name, key))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The base and the deltas not yet folded into it, applied in order.
async fn current(
    state: &StateStore,
    target: &str,
) -> Result<(Base, Vec<object_store::path::Path>, Option<String>), String> {
    let base = state
        .read::<Base>(&state.doc_key("owned", target))
        .await
        .map_err(|e| e.to_string())?
        .map(|(b, _)| b)
        .unwrap_or_default();
    let mut ids: HashSet<String> = base.ids.iter().cloned().collect();
    let mut folded = Vec::new();
    let mut last = base.folded_through.clone();
    for (name, key) in deltas(state, target).await? {
        folded.push(key.clone());
        if base.folded_through.as_ref().is_some_and(|f| name <= *f) {
            continue;
        }
        let Some((delta, _)) = state.read::<Delta>(&key).await.map_err(|e| e.to_string())? else {
            continue;
        };
        match delta.op {
            ChunkOp::Add | ChunkOp::Upload => ids.extend(delta.ids),
            ChunkOp::Remove => {
                for id in &delta.ids {
                    ids.remove(id);
                }
            }
        }
        last = Some(name);
    }
    let mut all: Vec<String> = ids.into_iter().collect();
    all.sort_unstable();
    Ok((
        Base {
            id_kind: base.id_kind,
            ids: all,
            folded_through: base.folded_through,
        },
        folded,
        last,
    ))
}

/// The ids this pipeline owns in `target`, for ids of `kind`.
pub async fn load(state: &StateStore, target: &str, kind: IdKind) -> Result<Owned, String> {
    let (base, _, _) = current(state, target).await?;
    Ok(match base.id_kind {
        Some(k) if k != kind => Owned {
            ids: HashSet::new(),
            other_kind: Some(k),
        },
        _ => Owned {
            ids: base.ids.into_iter().collect(),
            other_kind: None,
        },
    })
}

/// Folds the deltas into the base (one atomic write), then deletes them.
pub async fn fold(state: &StateStore, target: &str, kind: IdKind) -> Result<(), String> {
    let (mut base, folded, last) = current(state, target).await?;
    if folded.is_empty() && base.id_kind == Some(kind) {
        return Ok(());
    }
    if base.id_kind.is_some_and(|k| k != kind) {
        base.ids.clear();
    }
    base.id_kind = Some(kind);
    base.folded_through = last;
    state
        .write(&state.doc_key("owned", target), &base)
        .await
        .map_err(|e| format!("writing the ownership ledger: {e}"))?;
    crate::crash::point("reverse.owned.folded");
    for key in folded {
        if let Err(e) = state.delete(&key).await {
            tracing::warn!("cannot delete a folded ownership delta: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reverse::journal::ChunkEntry;
    use chrono::Utc;

    fn doc(run: &str, at: i64, op: ChunkOp) -> JournalDoc {
        JournalDoc {
            version: 1,
            target: "c1".into(),
            cohort_id: Some("c1".into()),
            upload: None,
            id_kind: IdKind::UserId,
            planned_by: run.into(),
            planned_at: chrono::DateTime::from_timestamp(at, 0).unwrap_or_else(Utc::now),
            plan_summary: String::new(),
            status: crate::reverse::journal::JournalStatus::Open,
            closed_at: None,
            ended_reason: None,
            fingerprint: None,
            chunks: vec![ChunkEntry::pending(0, op, 2)],
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    async fn owned(state: &StateStore) -> Vec<String> {
        let mut v: Vec<String> = load(state, "c1", IdKind::UserId)
            .await
            .expect("load")
            .ids
            .into_iter()
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn deltas_apply_in_order_and_a_fold_never_applies_one_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(crate::storage::open("s", dir.path()).expect("open"), "p");
        let add = doc("r1", 1_700_000_000, ChunkOp::Add);
        let remove = doc("r2", 1_700_000_100, ChunkOp::Remove);
        record_chunk(&state, &add, 0, &ids(&["a", "b", "x"]), &ids(&["x"]))
            .await
            .expect("add");
        record_chunk(&state, &remove, 0, &ids(&["a"]), &[])
            .await
            .expect("remove");
        assert_eq!(
            owned(&state).await,
            ids(&["b"]),
            "skipped ids are not owned"
        );
        fold(&state, "c1", IdKind::UserId).await.expect("fold");
        assert!(
            state
                .list_folder("owned-deltas")
                .await
                .expect("list")
                .is_empty(),
            "folded deltas are deleted"
        );
        assert_eq!(owned(&state).await, ids(&["b"]));
        // A kill between the fold and the deletion leaves the deltas: the base says it
        // holds them already, so the ADD of `a` is not applied over its later REMOVE.
        record_chunk(&state, &add, 0, &ids(&["a", "b"]), &[])
            .await
            .expect("add again");
        assert_eq!(owned(&state).await, ids(&["b"]));
        fold(&state, "c1", IdKind::UserId)
            .await
            .expect("fold again");
        assert_eq!(owned(&state).await, ids(&["b"]));
        // Ids of another kind are not this kind's.
        let other = load(&state, "c1", IdKind::AmplitudeId).await.expect("load");
        assert!(other.ids.is_empty() && other.other_kind == Some(IdKind::UserId));
    }
}
