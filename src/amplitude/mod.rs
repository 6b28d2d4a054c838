//! Typed HTTP client for Amplitude's Behavioral Cohorts API (see
//! `reference/behavioral-cohorts-api.md`): serde types, typed errors, credentials.

mod client;
mod credentials;
mod error;
pub mod ids;
mod transfer;
pub mod types;

pub use client::{
    AmplitudeClient, ClientOptions, FileDownload, JobState, MAX_RETRY_AFTER, is_loopback_host,
    parse_retry_after,
};
pub use credentials::{Credentials, Region};
pub use error::ApiError;
pub use transfer::{
    DEFAULT_DEADLINE_SECS, DEFAULT_MIN_BYTES_PER_SEC, DEFAULT_RATE_WINDOW_SECS, TransferLimits,
};
