//! cohort-sync: moves Amplitude behavioral cohorts to Parquet and CRM lists back into cohorts.

pub mod amplitude;
pub mod exit;
pub mod quota;
pub mod runner;
pub mod state;
pub mod storage;
