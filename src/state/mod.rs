//! Run state kept through `object_store` (a local directory or `s3://`): per cohort what was
//! last exported and which download request is in flight, leases that stop two runners from
//! spending quota on the same cohort, and journals of reverse work in flight.
//!
//! Layout under the state URL, one folder per pipeline name:
//! `{pipeline}/cohorts/{cohort_id}.json`, `{pipeline}/leases/{cohort_id}.json`,
//! `{pipeline}/journals/{cohort_id}.json`, `{pipeline}/runs/{time}-{run_id}.json` (run
//! history for `plan --month`); a reverse pipeline's derived baseline
//! (`reverse-derived/`, `reverse-derived-ids/`, see `reverse::derived`), ownership ledger
//! (`owned/`, `owned-deltas/`, see `reverse::owned`) and rejected-ids ledger
//! (`reverse/rejected.json`, `reverse/identity.json`, see `reverse::rejected`).

mod history;
mod holder;
mod lease;
mod ledger;
mod records;
mod store;

pub use history::{History, RunRecord};
pub use holder::{Holder, Liveness, host_name};
pub use lease::{Lease, LeaseOutcome, Renewal};
pub use ledger::{Ledger, LedgerEntry, LedgerOutcome, MonthCount};
pub use records::{CohortRecord, REQUEST_VALIDITY_DAYS, RequestRecord};
pub use store::{Conditional, StateError, StateStore};
