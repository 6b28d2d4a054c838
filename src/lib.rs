//! cohort-sync: moves Amplitude behavioral cohorts to Parquet and CRM lists back into cohorts.

pub mod amplitude;
pub mod clock;
pub mod config;
pub mod crash;
pub mod ddl;
pub mod emulator;
pub mod exit;
pub mod export;
pub mod lineage;
pub mod memory;
pub mod panics;
pub mod quota;
pub mod reverse;
pub mod runner;
pub mod state;
pub mod storage;
pub mod text;
