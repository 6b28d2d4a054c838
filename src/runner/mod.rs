//! The export runner: selects cohorts, decides what to download within the quotas, downloads
//! each through the asynchronous cohort API, streams it to Parquet, publishes, remembers
//! what was done, and reports every request it spent.

pub mod changes;
pub mod cohort_job;
pub mod context;
pub mod export;
pub mod finish;
pub mod forecast;
pub mod history;
pub mod layout;
pub mod leases;
pub mod metrics;
pub mod plan;
pub mod poll;
pub mod progress;
pub mod report;
pub mod run_history;
pub mod select;
pub mod shared_requests;
pub mod staging;
pub mod usage;
