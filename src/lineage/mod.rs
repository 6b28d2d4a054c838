//! OpenLineage run events (`[lineage]` in a pipeline file): for each pipeline of a `run`,
//! START before its work and COMPLETE, FAIL or ABORT after it, to an HTTP endpoint or a
//! file of one JSON event a line.
//!
//! ```text
//! run ─▶ START (job, runId; a reverse pipeline's source and cohort)
//!     ─▶ pipeline work ─▶ report ─▶ COMPLETE | FAIL | ABORT
//!            inputs:  the cohorts read (amplitude://HOST, name = cohort id), or the CRM list
//!            outputs: the Parquet files written (rowCount, size), or the cohort changed
//! ```
//!
//! - Exit 0 and exit 3 (cohorts deferred to next month by quota) are COMPLETE: the run did
//!   all the month allowed; the `cohortSync` run facet lists the deferred cohorts and the
//!   exit code. Exit 1 or 2 is FAIL with the `errorMessage` facet; a run stopped by
//!   SIGTERM/SIGINT is ABORT.
//! - `runId` is a UUIDv7 made from the run's start time and a hash of the run id and the
//!   pipeline name: the same for START and its end event, nothing to store.
//! - Lineage never fails or slows a sync beyond its timeout: each event is given
//!   `timeout_secs`; the first failure is warned about once, and the pipeline's later events
//!   are dropped (a dead endpoint costs one timeout, not one per event).
//! - No secret and no member id is in an event: the API key is a header only, membership
//!   changes are counts. `plan` and `run --dry-run` emit nothing.

mod event;
mod transport;

pub use event::{Dataset, Ended, PRODUCER, run_uuid};
pub use transport::Emitter;
