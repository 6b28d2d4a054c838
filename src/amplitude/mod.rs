//! Typed HTTP client for Amplitude's Behavioral Cohorts API (see
//! `reference/behavioral-cohorts-api.md`): serde types, typed errors, credentials.

mod client;
mod credentials;
mod error;
pub mod types;

pub use client::{AmplitudeClient, ClientOptions, FileDownload, JobState};
pub use credentials::{Credentials, Region};
pub use error::ApiError;
