//! Serde types for every request and response body of the Behavioral Cohorts API.
//!
//! Responses are parsed tolerantly: Amplitude sends `null` for many fields and omits others
//! (see the sample in the reference), so every field that is not essential is optional or
//! defaulted, and unknown fields are ignored. Request bodies are serialized exactly as the
//! reference documents them.

use serde::{Deserialize, Deserializer, Serialize};

/// A point in time as Amplitude reports it: epoch seconds in cohort objects
/// (`lastComputed`, `lastMod`, ...) and ISO-8601 text in sync metadata.
/// Kept as sent so that "unchanged since the last export" is an exact comparison.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    Seconds(i64),
    Text(String),
}

impl Timestamp {
    /// Epoch seconds when the value is numeric or RFC 3339 / `YYYY-MM-DDTHH:MM:SS` text.
    pub fn epoch_seconds(&self) -> Option<i64> {
        match self {
            Timestamp::Seconds(s) => Some(*s),
            Timestamp::Text(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp())
                .ok()
                .or_else(|| {
                    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                        .ok()
                        .map(|d| d.and_utc().timestamp())
                }),
        }
    }
}

impl Timestamp {
    /// For people: `2024-06-01 00:00:00 UTC` when the instant is known, else as sent.
    pub fn readable(&self) -> String {
        self.epoch_seconds()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| self.to_string())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Timestamp::Seconds(s) => write!(f, "{s}"),
            Timestamp::Text(t) => f.write_str(t),
        }
    }
}

/// `null` and a missing field both become the type's default (an empty list, `false`, ...).
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// `GET /api/3/cohorts` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CohortList {
    #[serde(default, deserialize_with = "null_as_default")]
    pub cohorts: Vec<Cohort>,
}

/// One COHORT_OBJECT of the list answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cohort {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(rename = "appId", default)]
    pub app_id: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub archived: bool,
    #[serde(default)]
    pub definition: Option<serde_json::Value>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub finished: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub owners: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub viewers: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub published: bool,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(rename = "type", default)]
    pub cohort_type: Option<String>,
    #[serde(rename = "lastMod", default)]
    pub last_mod: Option<Timestamp>,
    #[serde(rename = "createdAt", default)]
    pub created_at: Option<Timestamp>,
    #[serde(rename = "lastComputed", default)]
    pub last_computed: Option<Timestamp>,
    #[serde(default)]
    pub hidden: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Vec<String>>,
    #[serde(default)]
    pub view_count: Option<i64>,
    #[serde(default)]
    pub popularity: Option<i64>,
    #[serde(default)]
    pub last_viewed: Option<Timestamp>,
    #[serde(default)]
    pub chart_id: Option<String>,
    #[serde(default)]
    pub edit_id: Option<String>,
    #[serde(default)]
    pub is_predictive: Option<bool>,
    #[serde(default)]
    pub is_official_content: Option<bool>,
    #[serde(default)]
    pub location_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub shortcut_ids: Vec<String>,
    #[serde(rename = "syncMetadata", default)]
    pub sync_metadata: Option<Vec<SyncMetadata>>,
}

/// COHORT_SYNC_METADATA, present with `includeSyncInfo=true`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncMetadata {
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub frequency: Option<String>,
    #[serde(default)]
    pub last_successful: Option<Timestamp>,
    #[serde(default)]
    pub last_failure: Option<Timestamp>,
    #[serde(default)]
    pub params: Option<serde_json::Value>,
}

/// `GET /api/5/cohorts/request/:id` answer (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortRequest {
    pub request_id: String,
    #[serde(default)]
    pub cohort_id: Option<String>,
}

/// `GET /api/5/cohorts/request-status/:request_id` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStatus {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub cohort_id: Option<String>,
    pub async_status: String,
}

/// The two documented values of `async_status`.
pub const JOB_IN_PROGRESS: &str = "JOB INPROGRESS";
pub const JOB_COMPLETED: &str = "JOB COMPLETED";

/// `GET /api/3/cohorts/usage` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageResponse {
    pub rest_download: RestDownloadUsage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestDownloadUsage {
    pub limit: u32,
    pub usage: u32,
    #[serde(default)]
    pub resets_at: Option<String>,
}

impl RestDownloadUsage {
    /// Downloads left this month (never negative).
    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.usage)
    }
}

/// Id kinds accepted by `POST /api/3/cohorts/upload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UploadIdType {
    #[serde(rename = "BY_AMP_ID")]
    ByAmpId,
    #[serde(rename = "BY_USER_ID")]
    ByUserId,
}

/// Id kinds accepted by `POST /api/3/cohorts/membership`.
/// For the `User` count group `BY_ID` is the Amplitude ID and `BY_NAME` the user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MembershipIdType {
    #[serde(rename = "BY_ID")]
    ById,
    #[serde(rename = "BY_NAME")]
    ByName,
}

/// Which Amplitude identifier a list of ids holds. The one place where it maps to the
/// endpoint-specific id types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    UserId,
    AmplitudeId,
}

impl IdKind {
    pub fn upload_id_type(self) -> UploadIdType {
        match self {
            IdKind::UserId => UploadIdType::ByUserId,
            IdKind::AmplitudeId => UploadIdType::ByAmpId,
        }
    }

    pub fn membership_id_type(self) -> MembershipIdType {
        match self {
            IdKind::UserId => MembershipIdType::ByName,
            IdKind::AmplitudeId => MembershipIdType::ById,
        }
    }
}

/// `POST /api/3/cohorts/upload` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRequest {
    pub name: String,
    pub app_id: i64,
    pub id_type: UploadIdType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cg: Option<String>,
    pub ids: Vec<String>,
    pub owner: String,
    pub published: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_save: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_invalid_ids: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_cohort_id: Option<String>,
}

/// `POST /api/3/cohorts/upload` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadResponse {
    #[serde(rename = "cohortId")]
    pub cohort_id: String,
    #[serde(default)]
    pub metadata: Option<UploadMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadMetadata {
    #[serde(default)]
    pub matched: Option<i64>,
    #[serde(default)]
    pub totals: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub invalid_ids_sample: Vec<String>,
}

/// Membership operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MembershipOperation {
    #[serde(rename = "ADD")]
    Add,
    #[serde(rename = "REMOVE")]
    Remove,
}

impl std::fmt::Display for MembershipOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MembershipOperation::Add => "ADD",
            MembershipOperation::Remove => "REMOVE",
        })
    }
}

/// `POST /api/3/cohorts/membership` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipRequest {
    pub cohort_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_group: Option<String>,
    pub memberships: Vec<Membership>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_invalid_ids: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub ids: Vec<String>,
    pub id_type: MembershipIdType,
    pub operation: MembershipOperation,
}

/// `POST /api/3/cohorts/membership` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MembershipResponse {
    #[serde(default)]
    pub cohort_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub memberships_result: Vec<MembershipResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MembershipResult {
    #[serde(default, deserialize_with = "null_as_default")]
    pub skipped_ids: Vec<String>,
    #[serde(default)]
    pub id_type: Option<MembershipIdType>,
    #[serde(default)]
    pub operation: Option<MembershipOperation>,
}

/// Amplitude's error JSON: `{"error": {"http_code", "type", "message", "metadata"}}`.
/// Also accepted flat (without the `error` wrapper), as some endpoints answer that way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub http_code: Option<u16>,
    #[serde(rename = "type", default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorBody {
    /// Parses either `{"error": {...}}` or a flat error object; `None` when the text is neither.
    pub fn parse(text: &str) -> Option<ErrorBody> {
        if let Ok(env) = serde_json::from_str::<ErrorEnvelope>(text) {
            return Some(env.error);
        }
        serde_json::from_str::<ErrorBody>(text)
            .ok()
            .filter(|b| b.message.is_some() || b.error_type.is_some())
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(t) = &self.error_type {
            write!(f, "{t}: ")?;
        }
        f.write_str(self.message.as_deref().unwrap_or("(no message)"))?;
        if let Some(m) = &self.metadata {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reference_sample_with_its_nulls() {
        let text = r#"{"cohorts": [{
            "appId": 123456, "archived": false,
            "definition": {"version": 3, "countGroup": {"name": "User", "is_computed": false}},
            "description": "test description", "finished": true, "id": "id_12345",
            "name": "Test Cohort 1", "owners": ["demo@amplitude.com"], "viewers": [],
            "published": true, "size": 111, "type": "redshift", "lastMod": 1679437294,
            "createdAt": 1679437288, "lastComputed": 1679440233, "hidden": false,
            "metadata": null, "view_count": null, "popularity": null, "last_viewed": null,
            "chart_id": null, "edit_id": null, "is_predictive": false,
            "is_official_content": false, "location_id": null, "shortcut_ids": [],
            "syncMetadata": [{"target": "braze", "frequency": "hourly",
                "last_successful": "2023-03-21T16:09:58.848454-07:00", "last_failure": null,
                "params": {"user_id": "demo@amplitude.com"}}]
        }]}"#;
        let list: CohortList = serde_json::from_str(text).expect("sample parses");
        let c = &list.cohorts[0];
        assert_eq!(c.id, "id_12345");
        assert_eq!(c.size, Some(111));
        assert_eq!(c.last_computed, Some(Timestamp::Seconds(1679440233)));
        let sync = &c.sync_metadata.as_ref().expect("sync info")[0];
        assert_eq!(
            sync.last_successful
                .as_ref()
                .and_then(Timestamp::epoch_seconds),
            Some(1679440198)
        );
        assert!(sync.last_failure.is_none());
    }

    #[test]
    fn tolerates_missing_and_null_fields() {
        let c: Cohort = serde_json::from_str(r#"{"id":"a","name":null,"owners":null}"#)
            .expect("minimal cohort parses");
        assert_eq!(c.name, "");
        assert!(c.owners.is_empty());
        assert!(!c.published);
    }

    #[test]
    fn error_json_wrapped_or_flat() {
        let wrapped = r#"{"error":{"http_code":400,"type":"invalid_ids","message":"bad","metadata":{"ids":["x"]}}}"#;
        let e = ErrorBody::parse(wrapped).expect("wrapped");
        assert_eq!(e.http_code, Some(400));
        assert_eq!(e.error_type.as_deref(), Some("invalid_ids"));
        let flat = r#"{"http_code":401,"type":"unauthorized","message":"Invalid credentials"}"#;
        assert_eq!(ErrorBody::parse(flat).and_then(|e| e.http_code), Some(401));
        assert!(ErrorBody::parse("<html>").is_none());
    }

    #[test]
    fn id_kinds_map_to_endpoint_types() {
        assert_eq!(IdKind::UserId.upload_id_type(), UploadIdType::ByUserId);
        assert_eq!(IdKind::AmplitudeId.upload_id_type(), UploadIdType::ByAmpId);
        assert_eq!(
            IdKind::UserId.membership_id_type(),
            MembershipIdType::ByName
        );
        assert_eq!(
            IdKind::AmplitudeId.membership_id_type(),
            MembershipIdType::ById
        );
        let json = serde_json::to_string(&IdKind::UserId.upload_id_type()).unwrap_or_default();
        assert_eq!(json, "\"BY_USER_ID\"");
    }
}
