//! The derived baseline: the membership a reverse run left the cohort with (its baseline +
//! the ids it added − the ids it removed − the ids Amplitude skipped), recorded after the
//! journal closed and tied to the `lastComputed` and `size` the cohort list reported after
//! the last call. The next run uses it instead of a download when nothing else changed the
//! cohort since: the listed `lastComputed` and `size` are still the recorded ones, and the
//! target's journal is still the one that produced it (no later plan sent anything).
//!
//! Why this holds against the real service: every membership or upload call recomputes the
//! cohort and moves its `lastComputed`, and so does any other writer or a behavioral
//! recompute. A derived baseline is only written when the calls did move `lastComputed`
//! (else the service would not show later changes either, and the tie would prove
//! nothing) and when the listed size equals the derived size; a later change of any kind
//! then shows as a moved `lastComputed` or size, and the run falls back to a download.
//!
//! Crash safety: the ids object is written first under a name of its own (the run id),
//! then the head that points at it — each a single atomic put — then the previous ids
//! object is deleted. A kill at any point leaves the old head (with its ids) or the new
//! one; an old head is no longer used once a later journal exists, so a run killed after
//! sending calls never leaves a stale baseline that could be taken for the current one.
//!
//! Keys: `{pipeline}/reverse-derived/{cohort}.json` (the head) and
//! `{pipeline}/reverse-derived-ids/{cohort}.{run_id}.json` (the ids, one JSON string a line).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::diff::diff;
use super::idset::{IdCollector, IdList, IdSetError};
use super::journal::{ChunkOp, JournalDoc, JournalStatus};
use crate::amplitude::types::{Cohort, IdKind};
use crate::crash;
use crate::state::StateStore;

/// The head of a derived baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerivedHead {
    pub version: u32,
    pub cohort_id: String,
    pub id_kind: IdKind,
    /// `planned_by` of the journal whose applied plan produced it.
    pub journal_run: String,
    /// The cohort's `lastComputed` (epoch seconds) listed after the last call.
    pub last_computed: i64,
    /// The cohort's size listed after the last call.
    pub size: u64,
    /// Distinct ids in the ids object.
    pub ids: u64,
    /// Members without an id of `id_kind` (counted in `size`, not matchable).
    pub members_without_id: u64,
    /// The run whose ids object holds the ids (`reverse-derived-ids/{cohort}.{run}`).
    pub ids_run: String,
    pub written_by: String,
    pub written_at: DateTime<Utc>,
}

/// Whether a derived baseline can stand in for a download now.
#[derive(Debug, Clone)]
pub enum Check {
    Usable(DerivedHead),
    /// There is one, but something says the cohort changed since: why.
    Stale(String),
    /// None was ever recorded for this cohort.
    Absent,
}

fn head_key(state: &StateStore, cohort_id: &str) -> object_store::path::Path {
    state.doc_key("reverse-derived", cohort_id)
}

fn ids_key(state: &StateStore, cohort_id: &str, run_id: &str) -> object_store::path::Path {
    state.doc_key("reverse-derived-ids", &format!("{cohort_id}.{run_id}"))
}

/// Decides whether the derived baseline of `cohort` (if any) is still the membership.
pub async fn check(
    state: &StateStore,
    cohort: &Cohort,
    kind: IdKind,
    journal: Option<&JournalDoc>,
) -> Result<Check, String> {
    let head = match state
        .read::<DerivedHead>(&head_key(state, &cohort.id))
        .await
    {
        Ok(Some((h, _))) => h,
        Ok(None) => return Ok(Check::Absent),
        Err(e) => return Err(e.to_string()),
    };
    let lc = cohort
        .last_computed
        .as_ref()
        .and_then(|t| t.epoch_seconds());
    let size = cohort.size.map(|s| s.max(0) as u64);
    let why_not = if head.id_kind != kind {
        Some(format!(
            "the derived baseline holds {:?} ids, the pipeline reads {kind:?}",
            head.id_kind
        ))
    } else if let Some(j) =
        journal.filter(|j| j.planned_by != head.journal_run || j.status != JournalStatus::Closed)
    {
        Some(format!(
            "the derived baseline was recorded after run {}'s plan, and run {}'s plan ({}) came after it",
            head.journal_run,
            j.planned_by,
            j.status.as_str()
        ))
    } else if lc != Some(head.last_computed) {
        Some(format!(
            "the cohort's lastComputed moved from {} (recorded by run {} after its last call) to {}: something else changed the cohort (a recompute or another writer)",
            head.last_computed,
            head.written_by,
            lc.map_or("unknown".into(), |t| t.to_string())
        ))
    } else if size != Some(head.size) {
        Some(format!(
            "the cohort lists {} members, the derived baseline of run {} has {}",
            size.map_or("an unknown number of".into(), |s| s.to_string()),
            head.written_by,
            head.size
        ))
    } else {
        None
    };
    Ok(match why_not {
        Some(reason) => Check::Stale(reason),
        None => Check::Usable(head),
    })
}

/// Reads the ids of `head`; an error when they are missing or do not match the head.
pub async fn load(state: &StateStore, head: &DerivedHead) -> Result<IdCollector, String> {
    let key = ids_key(state, &head.cohort_id, &head.ids_run);
    let where_ = state.location().describe(&key);
    let bytes = state
        .read_bytes(&key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the derived baseline's ids {where_} are missing"))?;
    let mut ids = IdCollector::new();
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let id: String = serde_json::from_slice(line)
            .map_err(|e| format!("{where_}:{}: not a JSON string ({e})", n + 1))?;
        ids.push(id.as_bytes()).map_err(|e| e.to_string())?;
    }
    if ids.total() != head.ids {
        return Err(format!(
            "{where_} holds {} ids, its head says {}",
            ids.total(),
            head.ids
        ));
    }
    Ok(ids)
}

/// The membership an applied plan leaves: `base` (`None` when the plan uploaded over the
/// cohort) + the ids added or uploaded − the ids removed − the ids Amplitude skipped,
/// distinct, computed with the diff (bounded memory: both sides spill past the budget).
pub fn membership<'a>(
    base: Option<&IdCollector>,
    chunks: impl IntoIterator<Item = (ChunkOp, &'a IdList, std::ops::Range<usize>)>,
    skipped: &[String],
    threads: usize,
) -> Result<IdList, IdSetError> {
    let mut keep = IdCollector::new();
    let mut gone = IdCollector::new();
    if let Some(base) = base {
        for p in 0..base.partition_count() {
            for id in base.partition(p)?.iter() {
                keep.push(id)?;
            }
        }
    }
    for (op, list, range) in chunks {
        for i in range {
            match op {
                ChunkOp::Upload | ChunkOp::Add => keep.push(list.get(i))?,
                ChunkOp::Remove => gone.push(list.get(i))?,
            }
        }
    }
    for id in skipped {
        gone.push(id.as_bytes())?;
    }
    keep.finish()?;
    gone.finish()?;
    Ok(diff(&keep, &gone, threads)?.add)
}

/// What the run knows when it records a derived baseline.
pub struct Record<'a> {
    pub cohort_id: &'a str,
    pub kind: IdKind,
    pub journal_run: &'a str,
    pub run_id: &'a str,
    pub ids: &'a IdList,
    pub members_without_id: u64,
    pub last_computed: i64,
    pub size: u64,
}

/// Writes the ids, then the head, then deletes the previous ids object (see the module
/// doc). Returns where the head is.
pub async fn write(state: &StateStore, r: &Record<'_>) -> Result<String, String> {
    let key = head_key(state, r.cohort_id);
    let previous = state
        .read::<DerivedHead>(&key)
        .await
        .map_err(|e| e.to_string())?
        .map(|(h, _)| h.ids_run);
    let ids_at = ids_key(state, r.cohort_id, r.run_id);
    let mut bytes = Vec::with_capacity(r.ids.byte_len() + 3 * r.ids.len());
    for id in r.ids.iter_str() {
        serde_json::to_writer(&mut bytes, id).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
    }
    state
        .write_bytes(&ids_at, bytes)
        .await
        .map_err(|e| e.to_string())?;
    crash::point("reverse.derived.ids_written");
    let head = DerivedHead {
        version: 1,
        cohort_id: r.cohort_id.to_string(),
        id_kind: r.kind,
        journal_run: r.journal_run.to_string(),
        last_computed: r.last_computed,
        size: r.size,
        ids: r.ids.len() as u64,
        members_without_id: r.members_without_id,
        ids_run: r.run_id.to_string(),
        written_by: r.run_id.to_string(),
        written_at: crate::clock::now(),
    };
    state.write(&key, &head).await.map_err(|e| e.to_string())?;
    crash::point("reverse.derived.written");
    // The previous ids, and any a run killed before writing its head left behind.
    let current = ids_at.filename().map(str::to_string);
    let prefix = format!("{}.", r.cohort_id);
    let stale: Vec<object_store::path::Path> = match state.list_folder("reverse-derived-ids").await
    {
        Ok(keys) => keys
            .into_iter()
            .filter(|k| {
                k.filename()
                    .is_some_and(|n| n.starts_with(&prefix) && Some(n) != current.as_deref())
            })
            .collect(),
        Err(e) => {
            tracing::warn!("cannot list the earlier derived baselines: {e}");
            previous
                .filter(|o| *o != head.ids_run)
                .map(|o| ids_key(state, r.cohort_id, &o))
                .into_iter()
                .collect()
        }
    };
    for old in stale {
        if let Err(e) = state.delete(&old).await {
            tracing::warn!(
                "cannot delete the previous derived baseline {}: {e}",
                state.location().describe(&old)
            );
        }
    }
    Ok(state.location().describe(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_membership_is_base_plus_adds_minus_removes_and_skipped() {
        let mut base = IdCollector::new();
        for id in ["a", "b", "c", "c"] {
            base.push(id.as_bytes()).expect("push");
        }
        let adds: IdList = ["d", "e", "x"].into_iter().collect();
        let removes: IdList = ["b"].into_iter().collect();
        let chunks = vec![
            (ChunkOp::Add, &adds, 0..2),
            (ChunkOp::Add, &adds, 2..3),
            (ChunkOp::Remove, &removes, 0..1),
        ];
        let got = membership(Some(&base), chunks, &["x".to_string()], 2).expect("derive");
        let mut got: Vec<&str> = got.iter_str().collect();
        got.sort_unstable();
        assert_eq!(got, vec!["a", "c", "d", "e"]);

        let upload: IdList = ["p", "q"].into_iter().collect();
        let got = membership(None, vec![(ChunkOp::Upload, &upload, 0..2)], &[], 1).expect("derive");
        assert_eq!(got.len(), 2);
    }

    #[tokio::test]
    async fn a_written_baseline_reads_back_and_replaces_the_previous_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(crate::storage::open("s", dir.path()).expect("open"), "p");
        let ids: IdList = ["a", "line\nbreak", "ü"].into_iter().collect();
        let rec = |run: &'static str, ids: &'static IdList| Record {
            cohort_id: "c1",
            kind: IdKind::UserId,
            journal_run: run,
            run_id: run,
            ids,
            members_without_id: 1,
            last_computed: 100,
            size: 4,
        };
        let ids: &'static IdList = Box::leak(Box::new(ids));
        write(&state, &rec("r1", ids)).await.expect("write");
        let head = state
            .read::<DerivedHead>(&head_key(&state, "c1"))
            .await
            .expect("read")
            .expect("head")
            .0;
        let back = load(&state, &head).await.expect("load");
        assert_eq!(back.total(), 3);
        write(&state, &rec("r2", ids)).await.expect("write again");
        assert!(
            state
                .read_bytes(&ids_key(&state, "c1", "r1"))
                .await
                .expect("read")
                .is_none(),
            "the previous ids object is deleted"
        );
    }
}
