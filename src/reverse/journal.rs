//! The apply journal: a reverse plan written to the state store before anything is sent —
//! the chunk list (operation and ids of every call) — and each chunk's state updated before
//! and after its call. A run that crashed is resumed from the journal: the chunks not yet
//! applied are sent, applied ones never again, and the plan is not recomputed against a
//! baseline that the partial apply made stale. A journal ends in one of three ways, its chunk
//! documents deleted and its head kept as the record until the next plan replaces it:
//!
//! - `closed`: every chunk was applied;
//! - `failed`: Amplitude refused a chunk for good (400, 404, 413, 422...): sending it again
//!   cannot help, so the next run plans afresh from the current source;
//! - `superseded`: the plan's inputs changed since it was made (the source object, the
//!   reconcile mode, `chunk_size`, the id column or kind, the target — its
//!   [`PlanFingerprint`]), so the next run plans afresh instead of resuming a stale plan.
//!
//! A failed or superseded head is also copied to `{pipeline}/journal-history/`, so the
//! record outlives the next plan.
//!
//! Keys: `{pipeline}/journals/{target}.json` (the head),
//! `{pipeline}/journal-chunks/{target}.{run_id}.{index}.json` (the ids of one chunk) and
//! `{pipeline}/journal-history/{target}.{run_id}.json` (an ended head kept as record).
//! On S3 the head is replaced with compare-and-swap, so two runners cannot both drive it.

use chrono::{DateTime, Utc};
use object_store::UpdateVersion;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::amplitude::types::IdKind;
use crate::state::{StateError, StateStore};

/// What one call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkOp {
    /// `POST /api/3/cohorts/upload`: creates the cohort, or replaces its members
    /// (`existing_cohort_id`).
    Upload,
    /// `POST /api/3/cohorts/membership` with `ADD`.
    Add,
    /// `POST /api/3/cohorts/membership` with `REMOVE`.
    Remove,
}

impl ChunkOp {
    /// `UPLOAD`, `ADD`, `REMOVE` (as in messages).
    pub fn label(self) -> &'static str {
        match self {
            ChunkOp::Upload => "UPLOAD",
            ChunkOp::Add => "ADD",
            ChunkOp::Remove => "REMOVE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    Pending,
    /// Written just before the call: if a run finds this, the call's outcome is unknown.
    Sending,
    Applied,
    /// The call failed: with a retryable error (429 after retries, 5xx, transport, auth)
    /// the journal stays open and the next run sends it again; refused for good (4xx) the
    /// journal is marked `failed`.
    Failed,
}

/// One call of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub index: usize,
    pub op: ChunkOp,
    pub ids: usize,
    pub state: ChunkState,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<DateTime<Utc>>,
    /// Run that applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_by: Option<String>,
    /// Ids Amplitude skipped or reported invalid.
    #[serde(default)]
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ChunkEntry {
    /// A chunk of `ids` ids planned and not yet sent.
    pub fn pending(index: usize, op: ChunkOp, ids: usize) -> Self {
        ChunkEntry {
            index,
            op,
            ids,
            state: ChunkState::Pending,
            attempts: 0,
            sent_at: None,
            applied_at: None,
            applied_by: None,
            skipped: 0,
            error: None,
        }
    }
}

/// Name, owner and visibility sent with an upload (of a new cohort, or over an existing one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    pub name: String,
    pub owner: String,
    pub published: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalStatus {
    Open,
    /// Every chunk applied.
    Closed,
    /// A chunk was refused for good; the rest of the plan is abandoned.
    Failed,
    /// The plan's inputs changed before it was finished; a new plan replaces it.
    Superseded,
}

impl JournalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalStatus::Open => "open",
            JournalStatus::Closed => "closed",
            JournalStatus::Failed => "failed",
            JournalStatus::Superseded => "superseded",
        }
    }
}

/// What a plan was made from. An open journal whose fingerprint differs from the current
/// one is superseded, not resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFingerprint {
    /// The source as configured.
    pub source_url: String,
    /// The source object as it was read (`head`).
    pub source_size: u64,
    pub source_last_modified: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_e_tag: Option<String>,
    /// `mirror`, `add_only`, `remove_only`, `replace`.
    pub mode: String,
    pub chunk_size: usize,
    pub id_kind: IdKind,
    pub id_column: String,
    /// The target as configured (`cohort X` or `create "name" ...`).
    pub target: String,
}

impl PlanFingerprint {
    /// What differs between the plan's fingerprint (`self`) and the current one, in words;
    /// empty when they are equal.
    pub fn differences(&self, now: &PlanFingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.source_url != now.source_url {
            out.push(format!(
                "the source URL changed ({} -> {})",
                self.source_url, now.source_url
            ));
        } else if self.source_size != now.source_size
            || self.source_last_modified != now.source_last_modified
            || self.source_e_tag != now.source_e_tag
        {
            out.push(format!(
                "the source changed ({} bytes modified {} -> {} bytes modified {})",
                self.source_size,
                self.source_last_modified.to_rfc3339(),
                now.source_size,
                now.source_last_modified.to_rfc3339()
            ));
        }
        let mut field = |name: &str, was: String, is: String| {
            if was != is {
                out.push(format!("{name} changed ({was} -> {is})"));
            }
        };
        field("reconcile.mode", self.mode.clone(), now.mode.clone());
        field(
            "reconcile.chunk_size",
            self.chunk_size.to_string(),
            now.chunk_size.to_string(),
        );
        field(
            "source.id_kind",
            format!("{:?}", self.id_kind),
            format!("{:?}", now.id_kind),
        );
        field(
            "source.id_column",
            self.id_column.clone(),
            now.id_column.clone(),
        );
        field("the target", self.target.clone(), now.target.clone());
        out
    }
}

/// The journal's head document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalDoc {
    pub version: u32,
    /// The target key (cohort id, or `new-<name>` for a cohort to create).
    pub target: String,
    /// The cohort the calls go to; set by the creating upload when there was none.
    pub cohort_id: Option<String>,
    /// Set when the plan has an upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadMeta>,
    pub id_kind: IdKind,
    pub planned_by: String,
    pub planned_at: DateTime<Utc>,
    /// How the plan was made (baseline used, counts), for the report of a resumed run.
    #[serde(default)]
    pub plan_summary: String,
    pub status: JournalStatus,
    /// When the journal ended (closed, failed or superseded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// Why it ended `failed` or `superseded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<String>,
    /// What the plan was made from; `None` in journals of older versions (resumed as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<PlanFingerprint>,
    pub chunks: Vec<ChunkEntry>,
}

impl JournalDoc {
    pub fn remaining(&self) -> usize {
        self.chunks
            .iter()
            .filter(|c| c.state != ChunkState::Applied)
            .count()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkIds {
    ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "the apply journal {key} was changed by another run while this one was applying; stopping (is another cohort-sync run working on this pipeline?)"
    )]
    Conflict { key: String },
    #[error(
        "the apply journal {key} lists chunk {index}, but its ids are missing from the state store ({doc}); delete the journal to plan afresh"
    )]
    MissingChunk {
        key: String,
        index: usize,
        doc: String,
    },
}

/// An open journal being applied.
#[derive(Debug)]
pub struct Journal {
    state: StateStore,
    key: Path,
    pub doc: JournalDoc,
    version: Option<UpdateVersion>,
}

impl Journal {
    pub fn head_key(state: &StateStore, target: &str) -> Path {
        state.doc_key("journals", target)
    }

    fn chunk_key(state: &StateStore, doc: &JournalDoc, index: usize) -> Path {
        state.doc_key(
            "journal-chunks",
            &format!("{}.{}.{index:05}", doc.target, doc.planned_by),
        )
    }

    /// The journal of `target`, open or closed; `None` when there never was one.
    pub async fn load(state: &StateStore, target: &str) -> Result<Option<Journal>, JournalError> {
        let key = Self::head_key(state, target);
        Ok(state
            .read::<JournalDoc>(&key)
            .await?
            .map(|(doc, version)| Journal {
                state: state.clone(),
                key,
                doc,
                version: Some(version),
            }))
    }

    /// Records a new plan: every chunk's ids first, then the head (so a crash in between
    /// leaves no journal). `previous` is the closed journal it replaces, if any.
    /// `chunks` yields each chunk's ids in turn (only one chunk is held at a time).
    pub async fn create(
        state: &StateStore,
        doc: JournalDoc,
        chunks: impl IntoIterator<Item = Vec<String>>,
        previous: Option<Journal>,
    ) -> Result<Journal, JournalError> {
        for (i, ids) in chunks.into_iter().enumerate() {
            let key = Self::chunk_key(state, &doc, i);
            state.write(&key, &ChunkIds { ids }).await?;
        }
        let key = Self::head_key(state, &doc.target);
        let mut journal = Journal {
            state: state.clone(),
            key,
            doc,
            version: None,
        };
        match previous {
            // Replaces the ended journal: compare-and-swap against the version read
            // (where the store has it).
            Some(prev) => {
                journal.version = prev.version;
                journal.save().await?;
            }
            // The first journal of a target: created only if none exists (every store,
            // a local directory included, can create exclusively).
            None => match state.create(&journal.key, &journal.doc).await? {
                crate::state::Conditional::Written(v) => journal.version = Some(v),
                crate::state::Conditional::Conflict => {
                    return Err(JournalError::Conflict {
                        key: journal.describe(),
                    });
                }
            },
        }
        Ok(journal)
    }

    /// The state store the journal lives in.
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// Where the head lives (for messages).
    pub fn describe(&self) -> String {
        self.state.location().describe(&self.key)
    }

    /// The ids of chunk `index`.
    pub async fn chunk_ids(&self, index: usize) -> Result<Vec<String>, JournalError> {
        let key = Self::chunk_key(&self.state, &self.doc, index);
        match self.state.read::<ChunkIds>(&key).await? {
            Some((c, _)) => Ok(c.ids),
            None => Err(JournalError::MissingChunk {
                key: self.describe(),
                index,
                doc: self.state.location().describe(&key),
            }),
        }
    }

    /// Writes the head (compare-and-swap where the store supports it).
    pub async fn save(&mut self) -> Result<(), JournalError> {
        match (&self.version, self.state.supports_compare_and_swap()) {
            (Some(v), true) => match self.state.replace(&self.key, &self.doc, v.clone()).await? {
                crate::state::Conditional::Written(v) => self.version = Some(v),
                crate::state::Conditional::Conflict => {
                    return Err(JournalError::Conflict {
                        key: self.describe(),
                    });
                }
            },
            _ => self.state.write(&self.key, &self.doc).await?,
        }
        Ok(())
    }

    /// Marks the journal done and deletes the chunk documents.
    pub async fn close(&mut self) -> Result<(), JournalError> {
        self.doc.status = JournalStatus::Closed;
        self.doc.closed_at = Some(crate::clock::now());
        self.save().await?;
        self.delete_chunks().await
    }

    /// Ends an unfinished journal as `failed` or `superseded` with the reason: the head is
    /// written (a later run plans afresh), a copy is kept under `journal-history/`, and the
    /// chunk documents are deleted. Only the head write must succeed; the rest is tidying,
    /// logged when it fails.
    pub async fn end(&mut self, status: JournalStatus, reason: &str) -> Result<(), JournalError> {
        self.doc.status = status;
        self.doc.closed_at = Some(crate::clock::now());
        self.doc.ended_reason = Some(reason.to_string());
        self.save().await?;
        let history = self.history_key();
        if let Err(e) = self.state.write(&history, &self.doc).await {
            tracing::warn!(
                "cannot keep a copy of the {} journal at {}: {e}",
                status.as_str(),
                self.state.location().describe(&history)
            );
        }
        if let Err(e) = self.delete_chunks().await {
            tracing::warn!(
                "cannot delete the chunk documents of the {} journal {}: {e}",
                status.as_str(),
                self.describe()
            );
        }
        Ok(())
    }

    fn history_key(&self) -> Path {
        self.state.doc_key(
            "journal-history",
            &format!("{}.{}", self.doc.target, self.doc.planned_by),
        )
    }

    async fn delete_chunks(&self) -> Result<(), JournalError> {
        for i in 0..self.doc.chunks.len() {
            let key = Self::chunk_key(&self.state, &self.doc, i);
            self.state.delete(&key).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    fn doc(target: &str, run: &str, n: usize) -> JournalDoc {
        JournalDoc {
            version: 1,
            target: target.into(),
            cohort_id: Some(target.into()),
            upload: None,
            id_kind: IdKind::UserId,
            planned_by: run.into(),
            planned_at: crate::clock::now(),
            plan_summary: String::new(),
            status: JournalStatus::Open,
            closed_at: None,
            ended_reason: None,
            fingerprint: None,
            chunks: (0..n)
                .map(|i| ChunkEntry::pending(i, ChunkOp::Add, 2))
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_plan_survives_a_restart_and_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(storage::open("s", dir.path()).expect("open"), "p");
        assert!(Journal::load(&state, "c1").await.expect("load").is_none());
        let chunks = vec![
            vec!["a".to_string(), "b".into()],
            vec!["c".into(), "d".into()],
        ];
        let mut j = Journal::create(&state, doc("c1", "run1", 2), chunks, None)
            .await
            .expect("create");
        j.doc.chunks[0].state = ChunkState::Applied;
        j.save().await.expect("save");
        drop(j);

        let j = Journal::load(&state, "c1")
            .await
            .expect("load")
            .expect("present");
        assert_eq!(j.doc.status, JournalStatus::Open);
        assert_eq!(j.doc.remaining(), 1);
        assert_eq!(j.chunk_ids(1).await.expect("ids"), vec!["c", "d"]);
        let mut j = j;
        j.close().await.expect("close");
        let j = Journal::load(&state, "c1")
            .await
            .expect("load")
            .expect("kept");
        assert_eq!(j.doc.status, JournalStatus::Closed);
        assert!(matches!(
            j.chunk_ids(0).await,
            Err(JournalError::MissingChunk { index: 0, .. })
        ));
        let next = Journal::create(
            &state,
            doc("c1", "run2", 1),
            vec![vec!["x".into()]],
            Some(j),
        )
        .await
        .expect("a new plan replaces a closed journal");
        assert_eq!(next.chunk_ids(0).await.expect("ids"), vec!["x"]);
    }

    fn fingerprint() -> PlanFingerprint {
        PlanFingerprint {
            source_url: "crm.csv".into(),
            source_size: 100,
            source_last_modified: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
            source_e_tag: Some("a".into()),
            mode: "mirror".into(),
            chunk_size: 1000,
            id_kind: IdKind::UserId,
            id_column: "user_id".into(),
            target: "cohort c1".into(),
        }
    }

    #[test]
    fn fingerprints_name_what_changed() {
        let a = fingerprint();
        assert!(a.differences(&a.clone()).is_empty());
        let mut b = a.clone();
        b.source_e_tag = Some("b".into());
        b.chunk_size = 500;
        let d = a.differences(&b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("the source changed"), "{d:?}");
        assert_eq!(d[1], "reconcile.chunk_size changed (1000 -> 500)");
        let mut c = a.clone();
        c.source_url = "other.csv".into();
        c.mode = "add_only".into();
        assert_eq!(
            a.differences(&c),
            vec![
                "the source URL changed (crm.csv -> other.csv)".to_string(),
                "reconcile.mode changed (mirror -> add_only)".to_string()
            ]
        );
    }

    #[tokio::test]
    async fn an_ended_journal_is_kept_as_record_and_replaced_by_the_next_plan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(storage::open("s", dir.path()).expect("open"), "p");
        let mut old = doc("c1", "run1", 1);
        old.fingerprint = Some(fingerprint());
        let mut j = Journal::create(&state, old, vec![vec!["a".to_string()]], None)
            .await
            .expect("create");
        j.end(JournalStatus::Superseded, "the source changed")
            .await
            .expect("end");
        let j = Journal::load(&state, "c1")
            .await
            .expect("load")
            .expect("kept");
        assert_eq!(j.doc.status, JournalStatus::Superseded);
        assert_eq!(j.doc.ended_reason.as_deref(), Some("the source changed"));
        assert!(j.doc.closed_at.is_some());
        assert!(matches!(
            j.chunk_ids(0).await,
            Err(JournalError::MissingChunk { .. })
        ));
        let kept = state
            .read::<JournalDoc>(&state.doc_key("journal-history", "c1.run1"))
            .await
            .expect("read")
            .expect("history copy");
        assert_eq!(kept.0.status, JournalStatus::Superseded);
        let next = Journal::create(
            &state,
            doc("c1", "run2", 1),
            vec![vec!["x".into()]],
            Some(j),
        )
        .await
        .expect("a new plan replaces an ended journal");
        assert_eq!(next.doc.status, JournalStatus::Open);
    }

    #[test]
    fn journals_without_a_fingerprint_still_load() {
        let text = r#"{"version":1,"target":"c1","cohort_id":"c1","id_kind":"user_id",
            "planned_by":"r","planned_at":"2024-01-01T00:00:00Z","status":"open","chunks":[]}"#;
        let d: JournalDoc = serde_json::from_str(text).expect("old journal");
        assert!(d.fingerprint.is_none() && d.ended_reason.is_none());
    }
}
