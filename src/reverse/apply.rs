//! Applies a journaled plan: its chunks one after another (ADD and REMOVE for one cohort
//! are never concurrent — Amplitude answers 429 to that), each marked `sending` in the
//! journal before its call and `applied` after.
//!
//! What a failed call does to the plan:
//! - refused for good (400, 404, 413, 422...: [`ApiError::InvalidRequest`] or
//!   [`ApiError::NotFound`]), or its ids missing from the state store: the chunk is marked
//!   `failed` and the journal `failed` — sending it again cannot help, so the next run plans
//!   afresh from the current source;
//! - anything else (429 after the client's retries, 5xx, transport, 401/403, a state-store
//!   error): the journal stays open and the next run sends the remaining calls.
//!
//! Resends: a chunk found `sending` by a later run is in doubt — its answer may have arrived
//! while the process died before writing it to the journal — and is sent again (counted as
//! `resent_in_doubt`). Membership ADD/REMOVE and an upload over an existing cohort are
//! idempotent, so membership still ends exact; a creating upload in doubt is first looked for
//! among the cohorts by name, so a second cohort is never created. No other call is repeated.
//!
//! Crash points (`crate::crash::point`, armed only by tests through `COHORT_SYNC_CRASH_AT`):
//! - `reverse.journal.created`: the plan's head is written, no call sent yet (in `execute`);
//! - `reverse.journal.superseded`: an open journal was marked superseded, the new plan not
//!   yet written (in `execute`);
//! - `reverse.chunk.sending`: a chunk is journaled `sending`, its call not yet made;
//! - `reverse.chunk.answered`: the call's answer (success or error) arrived, not journaled;
//! - `reverse.chunk.journaled`: the chunk's outcome is written to the journal;
//! - `reverse.owned.recorded`: (`mirror_owned`) an applied chunk's ids are recorded in the
//!   ownership ledger;
//! - `reverse.owned.folded`: the ownership deltas are folded into the ledger's base, not
//!   yet deleted (in `owned`);
//! - `reverse.journal.closed`: every chunk applied and the journal closed;
//! - `reverse.derived.ids_written`: the derived baseline's ids are written, its head not
//!   yet (in `derived`);
//! - `reverse.derived.written`: the derived baseline's head is written (in `derived`).

use chrono::Utc;
use serde::Serialize;

use super::journal::{ChunkOp, ChunkState, Journal, JournalError, JournalStatus};
use crate::amplitude::types::{Membership, MembershipOperation, MembershipRequest, UploadRequest};
use crate::amplitude::{AmplitudeClient, ApiError};
use crate::crash;

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
    /// Sent again because an earlier run died between sending it and journaling its answer.
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
    /// Calls sent again because their outcome was in doubt (see the module doc).
    pub resent_in_doubt: usize,
    /// Ids Amplitude skipped (membership) or reported invalid (upload), in order.
    pub skipped_ids: Vec<String>,
    /// The operation of the call that skipped them: `(op, n)` runs over `skipped_ids`.
    #[serde(skip)]
    pub skipped_ops: Vec<(ChunkOp, usize)>,
    pub skipped_total: u64,
    /// `invalid_ids_sample` of the uploads.
    pub invalid_ids_sample: Vec<String>,
    /// Set when an upload created the cohort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_cohort_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error ended the plan: the journal is marked `failed`, the next run re-plans.
    /// `false` with an error: the journal stays open, the next run sends the rest.
    pub plan_failed: bool,
    /// Calls of the plan left unsent when it stopped.
    pub not_sent: usize,
}

/// Settings of the calls.
pub struct ApplySettings<'a> {
    pub client: &'a AmplitudeClient,
    pub app_id: Option<u64>,
    pub skip_invalid_ids: bool,
    pub run_id: &'a str,
    /// The run's stop token (SIGTERM/SIGINT): no chunk is sent once it is cancelled.
    pub stop: &'a tokio_util::sync::CancellationToken,
    /// Record each applied chunk in the ownership ledger (`mirror_owned`, see
    /// [`super::owned`]).
    pub record_owned: bool,
    /// The live display: told which chunk is being sent.
    pub progress: Option<&'a crate::runner::progress::ReverseProgress>,
}

/// Why one chunk did not get applied.
struct ChunkError {
    message: String,
    /// The journal was marked `failed` (the chunk was refused for good).
    plan_failed: bool,
}

impl ChunkError {
    fn open(message: impl Into<String>) -> Self {
        ChunkError {
            message: message.into(),
            plan_failed: false,
        }
    }
}

/// Whether Amplitude refused the call for good: the same call can never succeed, so the
/// plan is abandoned (auth failures are not: the plan is right once credentials are fixed).
fn refused_for_good(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::InvalidRequest { .. } | ApiError::NotFound { .. }
    )
}

/// What to tell the user beyond Amplitude's answer.
fn hint(e: &ApiError) -> &'static str {
    match e {
        ApiError::InvalidRequest { status: 413, .. } => {
            "; the request was too large: lower [reconcile] chunk_size"
        }
        _ => "",
    }
}

/// Sends every chunk not yet applied; stops at the first failure (recorded in the journal
/// and the outcome). Closes the journal when every chunk is applied; marks it `failed` when
/// Amplitude refused a chunk for good.
pub async fn apply(journal: &mut Journal, s: &ApplySettings<'_>) -> ApplyOutcome {
    let mut out = ApplyOutcome::default();
    let total = journal.doc.chunks.len();
    for i in 0..total {
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
        if out.error.is_none() && s.stop.is_cancelled() {
            out.error = Some(format!(
                "stopped by a signal before {}; the journal keeps the plan and the next run sends the remaining calls",
                chunk_name(journal, i)
            ));
        }
        if out.error.is_some() {
            out.not_sent += 1;
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
        if let Some(p) = s.progress {
            p.step(crate::runner::progress::ReverseStep::Applying {
                chunk: i + 1,
                of: total,
            });
        }
        let in_doubt = entry.state == ChunkState::Sending;
        let resent_before = out.resent_in_doubt;
        let result = apply_chunk(journal, i, in_doubt, s, &mut out).await;
        let resent_in_doubt = out.resent_in_doubt > resent_before;
        let entry = &journal.doc.chunks[i];
        match result {
            Ok(()) => out.calls.push(CallReport {
                index: i,
                op: entry.op,
                ids: entry.ids,
                status: "applied",
                resent_in_doubt,
                skipped: entry.skipped,
                error: None,
            }),
            Err(e) => {
                out.calls.push(CallReport {
                    index: i,
                    op: entry.op,
                    ids: entry.ids,
                    status: "failed",
                    resent_in_doubt,
                    skipped: 0,
                    error: Some(e.message.clone()),
                });
                out.plan_failed = e.plan_failed;
                out.error = Some(e.message);
            }
        }
    }
    if out.error.is_none() {
        match journal.close().await {
            Ok(()) => crash::point("reverse.journal.closed"),
            Err(e) => {
                out.error = Some(format!(
                    "every chunk was applied, but closing the journal failed: {e}"
                ))
            }
        }
    }
    out
}

/// `chunk 3 of 5 (ADD, 500 ids)`.
fn chunk_name(journal: &Journal, i: usize) -> String {
    let c = &journal.doc.chunks[i];
    format!(
        "chunk {} of {} ({}, {} ids)",
        i + 1,
        journal.doc.chunks.len(),
        c.op.label(),
        c.ids
    )
}

async fn apply_chunk(
    journal: &mut Journal,
    i: usize,
    in_doubt: bool,
    s: &ApplySettings<'_>,
    out: &mut ApplyOutcome,
) -> Result<(), ChunkError> {
    let op = journal.doc.chunks[i].op;
    let name = chunk_name(journal, i);
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
        mark(journal, i, ChunkState::Applied, None, 0, s.run_id)
            .await
            .map_err(|e| ChunkError::open(format!("{name}: {e}")))?;
        crash::point("reverse.chunk.journaled");
        return Ok(());
    }
    let ids = match journal.chunk_ids(i).await {
        Ok(ids) => ids,
        Err(e @ JournalError::MissingChunk { .. }) => {
            // The plan cannot be finished: end it so that the next run plans afresh.
            let message = format!("{name}: {e}");
            journal.doc.chunks[i].state = ChunkState::Failed;
            journal.doc.chunks[i].error = Some(e.to_string());
            return Err(end_failed(journal, message).await);
        }
        Err(e) => return Err(ChunkError::open(format!("{name}: {e}"))),
    };
    {
        let c = &mut journal.doc.chunks[i];
        c.state = ChunkState::Sending;
        c.attempts += 1;
        c.sent_at = Some(crate::clock::now());
        c.error = None;
    }
    journal
        .save()
        .await
        .map_err(|e| ChunkError::open(format!("{name}: {e}")))?;
    crash::point("reverse.chunk.sending");
    out.sent += 1;
    if in_doubt {
        out.resent_in_doubt += 1;
        tracing::warn!(
            "{name}: an earlier run sent it but did not journal the answer; sending it again"
        );
    }
    let owned_ids = s.record_owned.then(|| ids.clone());
    let result = match send(journal, op, ids, s).await {
        Ok(r) => Ok(r),
        Err(Refusal::Setup(msg)) => Err((msg.to_string(), false)),
        Err(Refusal::Api(e)) => Err((format!("{e}{}", hint(&e)), refused_for_good(&e))),
    };
    crash::point("reverse.chunk.answered");
    match result {
        Ok((created, skipped, invalid)) => {
            if let Some(id) = created {
                tracing::Span::current().record("cohort_id", id.as_str());
                out.created_cohort_id = Some(id.clone());
                journal.doc.cohort_id = Some(id);
            }
            let n = skipped.len() as u64;
            out.skipped_total += n;
            let room = MAX_SKIPPED_KEPT.saturating_sub(out.skipped_ids.len());
            let kept = skipped.len().min(room);
            out.skipped_ids.extend(skipped.into_iter().take(room));
            out.skipped_ops.push((op, kept));
            out.invalid_ids_sample.extend(invalid);
            mark(journal, i, ChunkState::Applied, None, n, s.run_id)
                .await
                .map_err(|e| {
                    ChunkError::open(format!(
                        "{name} was applied, but journaling it failed: {e} (the next run sends it again)"
                    ))
                })?;
            crash::point("reverse.chunk.journaled");
            if let Some(ids) = owned_ids {
                let skipped = &out.skipped_ids[out.skipped_ids.len().saturating_sub(n as usize)..];
                super::owned::record_chunk(journal.state(), &journal.doc, i, &ids, skipped)
                    .await
                    .map_err(|e| {
                        ChunkError::open(format!(
                            "{name} was applied, but {e}; the journal stays open and the next run records it from the journal"
                        ))
                    })?;
                crash::point("reverse.owned.recorded");
            }
            Ok(())
        }
        Err((e, true)) => {
            journal.doc.chunks[i].state = ChunkState::Failed;
            journal.doc.chunks[i].error = Some(e.clone());
            Err(end_failed(journal, format!("Amplitude refused {name}: {e}")).await)
        }
        Err((e, false)) => {
            let message = format!("{name}: {e}");
            mark(journal, i, ChunkState::Failed, Some(e), 0, s.run_id)
                .await
                .map_err(|w| {
                    ChunkError::open(format!(
                        "{message} (and journaling the failure failed: {w})"
                    ))
                })?;
            crash::point("reverse.chunk.journaled");
            Err(ChunkError::open(message))
        }
    }
}

/// Marks the journal `failed` with `message` as the reason. When even that write fails the
/// journal stays open (the next run resumes it) and the error says so.
async fn end_failed(journal: &mut Journal, message: String) -> ChunkError {
    match journal.end(JournalStatus::Failed, &message).await {
        Ok(()) => {
            crash::point("reverse.chunk.journaled");
            ChunkError {
                message,
                plan_failed: true,
            }
        }
        Err(e) => ChunkError::open(format!(
            "{message}; marking the journal failed did not work either ({e}), so it stays open"
        )),
    }
}

/// Why a call was not answered with success.
enum Refusal {
    /// The journal lacks what the call needs (no request was sent).
    Setup(&'static str),
    Api(ApiError),
}

/// The cohort created (by a creating upload), the skipped ids, the invalid ids sample.
type Answer = (Option<String>, Vec<String>, Vec<String>);

/// Sends one chunk's call.
async fn send(
    journal: &Journal,
    op: ChunkOp,
    ids: Vec<String>,
    s: &ApplySettings<'_>,
) -> Result<Answer, Refusal> {
    let kind = journal.doc.id_kind;
    match op {
        ChunkOp::Add | ChunkOp::Remove => {
            let cohort_id = journal.doc.cohort_id.clone().ok_or(Refusal::Setup(
                "no cohort id for a membership call (the creating upload did not run)",
            ))?;
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
            let r = s
                .client
                .update_membership(&body)
                .await
                .map_err(Refusal::Api)?;
            let skipped = r
                .memberships_result
                .into_iter()
                .flat_map(|m| m.skipped_ids)
                .collect();
            Ok((None, skipped, Vec::new()))
        }
        ChunkOp::Upload => {
            let meta = journal.doc.upload.clone().ok_or(Refusal::Setup(
                "no cohort name/owner recorded for the upload",
            ))?;
            let app_id = s.app_id.ok_or(Refusal::Setup(
                "uploading needs connection.app_id (the Amplitude project id)",
            ))?;
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
            let r = s.client.upload(&body).await.map_err(Refusal::Api)?;
            let created = journal.doc.cohort_id.is_none().then(|| r.cohort_id.clone());
            let invalid = r.metadata.map(|m| m.invalid_ids_sample).unwrap_or_default();
            Ok((created, invalid.clone(), invalid))
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
            c.applied_at = Some(crate::clock::now());
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
    let sent = journal.doc.chunks[i].sent_at?;
    created_since(client, &name, sent).await
}

/// A cohort named `name` created since `sent` (less a few seconds of clock skew).
pub(crate) async fn created_since(
    client: &AmplitudeClient,
    name: &str,
    sent: chrono::DateTime<Utc>,
) -> Option<String> {
    let sent = sent.timestamp();
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
