//! Reverse pipelines: read a CRM source list, diff it against a cohort baseline, and apply the minimal membership calls.

pub mod apply;
pub mod baseline;
pub mod bytes;
pub mod derived;
pub mod diff;
pub mod execute;
pub mod failure;
pub mod guard;
pub mod idset;
pub mod journal;
pub mod lists;
pub mod local_diff;
pub mod normalize;
pub mod owned;
pub mod parquet_ids;
pub mod rejected;
pub mod report;
pub mod snapshot;
pub mod source;
pub mod spill;
pub mod verify;

pub use execute::execute;
