//! The one harness of the integration tests, a module per concern:
//!
//! - [`emulator`]: the in-process Amplitude emulator — its cohorts, apps and config, and
//!   its admin API (request log, members, usage, faults), waited on by event, never by time;
//! - [`log`]: what a test counts in the emulator's request log, each defined once (a spent
//!   request, a request attempt, a membership change, ...);
//! - [`harness`]: an emulator, a temporary directory and the real `cohort-sync` binary run
//!   as a user runs it (pipeline files, `run`, `plan`, crash points);
//! - [`peers`]: the independent readers and writers under `tests/py` (pyarrow, DuckDB);
//! - [`s3`]: the S3-compatible server `scripts/test.sh` starts (buckets, objects, uploads);
//! - [`azure`]: the Azure Blob Storage emulator it starts (containers, objects);
//! - [`expect`]: what an output must hold, computed without the code under test (the
//!   emulator's universe, SHA-256 of the bytes);
//! - [`files`]: input files the tests write (gzip, id lists);
//! - [`changes`]: membership change files (churn between exports, DuckDB `EXCEPT` check).
#![allow(dead_code)]

pub mod azure;
pub mod changes;
pub mod emulator;
pub mod expect;
pub mod files;
pub mod harness;
pub mod log;
pub mod peers;
pub mod s3;
