//! Reverse pipelines: read a CRM source list, diff it against a cohort baseline, and apply the minimal membership calls.

pub mod bytes;
pub mod csv_scan;
pub mod diff;
pub mod idset;
pub mod lists;
pub mod local_diff;
pub mod normalize;
pub mod parquet_ids;
pub mod source;
