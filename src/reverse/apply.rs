//! Applies a journaled plan: its chunks one after another (ADD and REMOVE for one cohort
//! are never concurrent — Amplitude answers 429 to that), each marked `sending` in the
//! journal before its call and `applied` after. A chunk found `sending` by a later run is
//! in doubt and sent again: membership ADD/REMOVE and an upload over an existing cohort are
//! idempotent; a creating upload in doubt is first looked for among the cohorts by name so
//! that a second cohort is never created.

use chrono::Utc;
use serde::Serialize;

use super::journal::{ChunkOp, ChunkState, Journal, JournalError};
use crate::amplitude::AmplitudeClient;
use crate::amplitude::types::{Membership, MembershipOperation, MembershipRequest, UploadRequest};

/// Most skipped ids kept in memory for the report and the skipped list.
const MAX_SKIPPED_KEPT: usize = 1_000_000;

/// What happened to one chunk in this run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallReport {
    pub index: usize,
    pub op: ChunkOp,
    pub ids: usize,
    /// `applied`, `already_applied` (by an earlier run), `failed`, `not_sent`.
    pub status: &'static str,
    /// Sent again because an earlier run crashed during its call.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resent_in_doubt: bool,
    pub skipped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of applying a journal.
#[derive(Debug, Default, Serialize)]
pub struct ApplyOutcome {
    pub calls: Vec<CallReport>,
    /// Calls sent by this run.
    pub sent: usize,
    /// Ids Amplitude skipped (membership) or reported invalid (upload), in order.
    pub skipped_ids: Vec<String>,
    pub skipped_total: u64,
    /// `invalid_ids_sample` of the uploads.
    pub invalid_ids_sample: Vec<String>,
    /// Set when an upload created the cohort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_cohort_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Settings of the calls.
pub struct ApplySettings<'a> {
    pub client: &'a AmplitudeClient,
    pub app_id: Option<u64>,
    pub skip_invalid_ids: bool,
    pub run_id: &'a str,
}

/// Sends every chunk not yet applied; stops at the first failure (recorded in the journal
/// and the outcome). Closes the journal when every chunk is applied.
pub async fn apply(journal: &mut Journal, s: &ApplySettings<'_>) -> ApplyOutcome {
    let mut out = ApplyOutcome::default();
    for i in 0..journal.doc.chunks.len() {
        let entry = journal.doc.chunks[i].clone();
        if entry.state == ChunkState::Applied {
            out.calls.push(CallReport {
                index: i,
                op: entry.op,
                ids: entry.ids,
                status: "already_applied",
                resent_in_doubt: false,
                skipped: entry.skipped,
                error: None,
            });
            continue;
        }
        if out.error.is_some() {
            out.calls.push(CallReport {
                index: i,
                op: entry.op,
                ids: entry.ids,
                status: "not_sent",
                resent_in_doubt: false,
                skipped: 0,
                error: None,
            });
            continue;
        }
        let in_doubt = entry.state == ChunkState::Sending;
        let result = apply_chunk(journal, i, in_doubt, s, &mut out).await;
        let entry = &journal.doc.chunks[i];
        match result {
            Ok(()) => out.calls.push(CallReport {
                index: i,
                op: entry.op,
                ids: entry.ids,
                status: "applied",
                resent_in_doubt: in_doubt,
                skipped: entry.skipped,
                error: None,
            }),
            Err(e) => {
                out.calls.push(CallReport {
                    index: i,
                    op: entry.op,
                    ids: entry.ids,
                    status: "failed",
                    resent_in_doubt: in_doubt,
                    skipped: 0,
                    error: Some(e.clone()),
                });
                out.error = Some(format!(
                    "chunk {} ({:?}, {} ids): {e}",
                    i + 1,
                    entry.op,
                    entry.ids
                ));
            }
        }
    }
    if out.error.is_none()
        && let Err(e) = journal.close().await
    {
        out.error = Some(format!(
            "every chunk was applied, but closing the journal failed: {e}"
        ));
    }
    out
}

async fn apply_chunk(
    journal: &mut Journal,
    i: usize,
    in_doubt: bool,
    s: &ApplySettings<'_>,
    out: &mut ApplyOutcome,
) -> Result<(), String> {
    let op = journal.doc.chunks[i].op;
    if in_doubt
        && op == ChunkOp::Upload
        && journal.doc.cohort_id.is_none()
        && let Some(found) = created_earlier(journal, i, s.client).await
    {
        tracing::warn!(
            "chunk {}: the creating upload of an earlier run did create cohort {found}; not uploading again",
            i + 1
        );
        journal.doc.cohort_id = Some(found.clone());
        out.created_cohort_id = Some(found);
        return mark(journal, i, ChunkState::Applied, None, 0, s.run_id).await;
    }
    let ids = journal.chunk_ids(i).await.map_err(|e| e.to_string())?;
    {
        let c = &mut journal.doc.chunks[i];
        c.state = ChunkState::Sending;
        c.attempts += 1;
        c.sent_at = Some(Utc::now());
        c.error = None;
    }
    journal.save().await.map_err(|e| e.to_string())?;
    out.sent += 1;
    let kind = journal.doc.id_kind;
    let result: Result<(Vec<String>, Vec<String>), String> = match op {
        ChunkOp::Add | ChunkOp::Remove => {
            let cohort_id =
                journal.doc.cohort_id.clone().ok_or(
                    "no cohort id for a membership call (the creating upload did not run)",
                )?;
            let body = MembershipRequest {
                cohort_id,
                count_group: None,
                memberships: vec![Membership {
                    ids,
                    id_type: kind.membership_id_type(),
                    operation: if op == ChunkOp::Add {
                        MembershipOperation::Add
                    } else {
                        MembershipOperation::Remove
                    },
                }],
                skip_invalid_ids: Some(s.skip_invalid_ids),
            };
            s.client
                .update_membership(&body)
                .await
                .map(|r| {
                    let skipped = r
                        .memberships_result
                        .into_iter()
                        .flat_map(|m| m.skipped_ids)
                        .collect();
                    (skipped, Vec::new())
                })
                .map_err(|e| e.to_string())
        }
        ChunkOp::Upload => {
            let meta = journal
                .doc
                .upload
                .clone()
                .ok_or("no cohort name/owner recorded for the upload")?;
            let app_id = s
                .app_id
                .ok_or("uploading needs connection.app_id (the Amplitude project id)")?;
            let body = UploadRequest {
                name: meta.name,
                app_id: app_id as i64,
                id_type: kind.upload_id_type(),
                cg: None,
                ids,
                owner: meta.owner,
                published: meta.published,
                skip_save: None,
                skip_invalid_ids: Some(s.skip_invalid_ids),
                existing_cohort_id: journal.doc.cohort_id.clone(),
            };
            match s.client.upload(&body).await {
                Ok(r) => {
                    if journal.doc.cohort_id.is_none() {
                        out.created_cohort_id = Some(r.cohort_id.clone());
                        journal.doc.cohort_id = Some(r.cohort_id.clone());
                    }
                    let invalid = r.metadata.map(|m| m.invalid_ids_sample).unwrap_or_default();
                    Ok((invalid.clone(), invalid))
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match result {
        Ok((skipped, invalid)) => {
            let n = skipped.len() as u64;
            out.skipped_total += n;
            let room = MAX_SKIPPED_KEPT.saturating_sub(out.skipped_ids.len());
            out.skipped_ids.extend(skipped.into_iter().take(room));
            out.invalid_ids_sample.extend(invalid);
            mark(journal, i, ChunkState::Applied, None, n, s.run_id).await
        }
        Err(e) => {
            mark(journal, i, ChunkState::Failed, Some(e.clone()), 0, s.run_id).await?;
            Err(e)
        }
    }
}

async fn mark(
    journal: &mut Journal,
    i: usize,
    state: ChunkState,
    error: Option<String>,
    skipped: u64,
    run_id: &str,
) -> Result<(), String> {
    {
        let c = &mut journal.doc.chunks[i];
        c.state = state;
        c.error = error;
        c.skipped = skipped;
        if state == ChunkState::Applied {
            c.applied_at = Some(Utc::now());
            c.applied_by = Some(run_id.to_string());
        }
    }
    journal
        .save()
        .await
        .map_err(|e: JournalError| e.to_string())
}

/// A cohort with the journal's name created since the in-doubt upload was sent.
async fn created_earlier(journal: &Journal, i: usize, client: &AmplitudeClient) -> Option<String> {
    let name = journal.doc.upload.as_ref()?.name.clone();
    let sent = journal.doc.chunks[i].sent_at?.timestamp();
    let list = client.list_cohorts(false).await.ok()?;
    list.cohorts
        .into_iter()
        .filter(|c| c.name == name)
        .filter(|c| {
            c.created_at
                .as_ref()
                .and_then(|t| t.epoch_seconds())
                .is_none_or(|t| t >= sent - 5)
        })
        .map(|c| c.id)
        .next()
}
