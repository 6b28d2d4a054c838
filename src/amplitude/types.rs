//! Serde types for every request and response body of the Behavioral Cohorts API.
//!
//! Responses are parsed tolerantly, because the published samples disagree with each other
//! and with the reference (see DESIGN.md, "What public clients of the real service show",
//! and `tests/answers/`, one recorded answer per variant):
//! - every field the tool does not rely on is optional: `null`, a missing field and a
//!   value of an unexpected type all become `None` (or an empty list) instead of failing
//!   the whole answer — `viewers` is absent in older samples, `description` is `null`,
//!   `appId` was documented as a string, `metadata` may hold anything;
//! - `lastComputed` and the other timestamps are epoch seconds, epoch milliseconds or
//!   ISO-8601 text ([`Timestamp::epoch_seconds`] tells them apart);
//! - the count group is `definition.countGroup`, a string (`"User"`) in the published
//!   samples and an object (`{"name": "User", ...}`) in the reference ([`Cohort::count_group`]);
//! - the upload answer names the cohort `cohortId` (today), `cohort_id` (docs before
//!   October 2024) or only as the key of `cohortsById` ([`UploadResponse`]);
//! - error bodies are `{"error": {...}}`, flat, or `{"error": "text"}`; the real 403 has
//!   no `message`, only `metadata.details` ([`ErrorBody::parse`]).
//!
//! Unknown fields are ignored. Request bodies are serialized exactly as the reference
//! documents them.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A point in time as Amplitude reports it: a number in cohort objects (`lastComputed`,
/// `lastMod`, ...; epoch seconds in every sample, epoch milliseconds accepted) and
/// ISO-8601 text in sync metadata. Kept as sent so that "unchanged since the last export"
/// is an exact comparison; [`Timestamp::epoch_seconds`] interprets it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Timestamp {
    /// A whole number as sent: epoch seconds or epoch milliseconds.
    Seconds(i64),
    Text(String),
}

/// Numbers at least this large are epoch milliseconds: 10^11 seconds is the year 5138,
/// 10^11 milliseconds is March 1973 — long before any cohort.
const MILLIS_FROM: i64 = 100_000_000_000;

/// Epoch seconds of a number that is epoch seconds or epoch milliseconds.
fn seconds_of(n: i64) -> i64 {
    if n.unsigned_abs() >= MILLIS_FROM as u64 {
        n.div_euclid(1000)
    } else {
        n
    }
}

impl Timestamp {
    /// Epoch seconds when the value is a number (seconds or milliseconds), numeric text, or
    /// RFC 3339 / `YYYY-MM-DDTHH:MM:SS` text.
    pub fn epoch_seconds(&self) -> Option<i64> {
        match self {
            Timestamp::Seconds(s) => Some(seconds_of(*s)),
            Timestamp::Text(t) => {
                let t = t.trim();
                if let Ok(n) = t.parse::<i64>() {
                    return Some(seconds_of(n));
                }
                if let Ok(f) = t.parse::<f64>() {
                    return (f.is_finite() && f.abs() < 1e18).then(|| seconds_of(f.floor() as i64));
                }
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|d| d.timestamp())
                    .ok()
                    .or_else(|| {
                        chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                            .ok()
                            .map(|d| d.and_utc().timestamp())
                    })
            }
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

/// A whole number becomes [`Timestamp::Seconds`]; text, and a number with a fraction (kept
/// as its decimal text), become [`Timestamp::Text`].
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("epoch seconds or milliseconds, or ISO-8601 text")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp::Seconds(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Timestamp, E> {
                Ok(match i64::try_from(v) {
                    Ok(n) => Timestamp::Seconds(n),
                    Err(_) => Timestamp::Text(v.to_string()),
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Timestamp, E> {
                let whole = v.fract() == 0.0 && v.abs() < 9.0e18;
                Ok(if whole {
                    Timestamp::Seconds(v as i64)
                } else {
                    Timestamp::Text(v.to_string())
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<Timestamp, E> {
                Ok(Timestamp::Text(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Timestamp, E> {
                Ok(Timestamp::Text(v))
            }
        }
        de.deserialize_any(TimestampVisitor)
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

/// A field the tool does not rely on: `null` or a value of an unexpected type becomes
/// `None` rather than failing the whole answer.
fn lenient<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(de)?;
    Ok(T::deserialize(value).ok())
}

/// Like [`lenient`], with the type's default (an empty list, `false`) for a value that
/// does not fit.
fn lenient_or_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    Ok(lenient(de)?.unwrap_or_default())
}

/// An integer sent as a number or as numeric text (`appId` was documented as a string).
fn lenient_integer<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(de)? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Text of a string, or of a number (an id sent unquoted); `None` for anything else.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An id that may come as a string or a number.
fn string_or_number<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let value = Value::deserialize(de)?;
    text_of(&value).ok_or_else(|| serde::de::Error::custom(format!("expected an id, got {value}")))
}

/// Like [`string_or_number`] for an optional id.
fn lenient_id<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(text_of(&Value::deserialize(de)?))
}

/// A list of ids (skipped or invalid ids) where numbers are kept as their text, so that
/// none is dropped for its JSON type; `null` or a non-list is empty.
fn id_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(de)? {
        Value::Array(items) => items
            .iter()
            .map(|v| text_of(v).unwrap_or_else(|| v.to_string()))
            .collect(),
        _ => Vec::new(),
    })
}

/// `GET /api/3/cohorts` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CohortList {
    #[serde(default, deserialize_with = "null_as_default")]
    pub cohorts: Vec<Cohort>,
}

/// One COHORT_OBJECT of the list answer (also the values of the upload answer's
/// `cohortsById`). Only `id` is required; see the module notes for what else may vary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cohort {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub name: String,
    #[serde(rename = "appId", default, deserialize_with = "lenient_integer")]
    pub app_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub archived: bool,
    /// Amplitude's internal cohort definition, kept as sent (see [`Cohort::count_group`]).
    #[serde(default, deserialize_with = "lenient")]
    pub definition: Option<Value>,
    #[serde(default, deserialize_with = "lenient")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub finished: Option<bool>,
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub owners: Vec<String>,
    /// Absent in the published samples; empty then.
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub viewers: Vec<String>,
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub published: bool,
    #[serde(default, deserialize_with = "lenient_integer")]
    pub size: Option<i64>,
    /// `redshift` for computed cohorts, `manual_upload` for uploaded ones (samples).
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    pub cohort_type: Option<String>,
    #[serde(rename = "lastMod", default, deserialize_with = "lenient")]
    pub last_mod: Option<Timestamp>,
    #[serde(rename = "createdAt", default, deserialize_with = "lenient")]
    pub created_at: Option<Timestamp>,
    #[serde(rename = "lastComputed", default, deserialize_with = "lenient")]
    pub last_computed: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient")]
    pub hidden: Option<bool>,
    /// Documented as `string[]` ("cohort created from funnel/microscope might have
    /// this"); kept as sent.
    #[serde(default, deserialize_with = "lenient")]
    pub metadata: Option<Value>,
    #[serde(default, deserialize_with = "lenient_integer")]
    pub view_count: Option<i64>,
    #[serde(default, deserialize_with = "lenient_integer")]
    pub popularity: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub last_viewed: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub chart_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub edit_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub is_predictive: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub is_official_content: Option<bool>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub location_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub shortcut_ids: Vec<String>,
    #[serde(rename = "syncMetadata", default, deserialize_with = "lenient")]
    pub sync_metadata: Option<Vec<SyncMetadata>>,
}

impl Cohort {
    /// The cohort's count group (`User` for user cohorts): `definition.countGroup`, a
    /// string in the published samples or an object with a `name` in the reference.
    pub fn count_group(&self) -> Option<&str> {
        let group = self.definition.as_ref()?.get("countGroup")?;
        match group {
            Value::String(name) => Some(name.as_str()),
            Value::Object(fields) => fields.get("name").and_then(Value::as_str),
            _ => None,
        }
    }
}

/// COHORT_SYNC_METADATA, present with `includeSyncInfo=true`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncMetadata {
    #[serde(default, deserialize_with = "lenient")]
    pub target: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub frequency: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub last_successful: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient")]
    pub last_failure: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient")]
    pub params: Option<Value>,
}

/// `GET /api/5/cohorts/request/:id` answer (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortRequest {
    #[serde(deserialize_with = "string_or_number")]
    pub request_id: String,
    #[serde(default, deserialize_with = "lenient_id")]
    pub cohort_id: Option<String>,
}

/// `GET /api/5/cohorts/request-status/:request_id` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStatus {
    #[serde(default, deserialize_with = "lenient_id")]
    pub request_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
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

/// `POST /api/3/cohorts/upload` answer. Amplitude names the cohort in one of three ways —
/// `cohortId` (reference), `cohort_id` (docs before October 2024), or only as the key of
/// `cohortsById` (published sample, next to `cohortId`) — and all three are accepted;
/// an answer that names no cohort is refused (the caller cannot know what it created).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawUploadResponse")]
pub struct UploadResponse {
    #[serde(rename = "cohortId")]
    pub cohort_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<UploadMetadata>,
    /// The `cohortsById` objects, kept as sent (see [`UploadResponse::cohort`]).
    #[serde(rename = "cohortsById", skip_serializing_if = "BTreeMap::is_empty")]
    pub cohorts_by_id: BTreeMap<String, Value>,
}

impl UploadResponse {
    /// The uploaded cohort as `cohortsById` describes it, when it does and parses.
    pub fn cohort(&self) -> Option<Cohort> {
        let value = self.cohorts_by_id.get(&self.cohort_id)?;
        Cohort::deserialize(value).ok()
    }
}

/// Every way an upload answer has been seen to carry its fields.
#[derive(Deserialize)]
struct RawUploadResponse {
    #[serde(rename = "cohortId", default, deserialize_with = "lenient_id")]
    cohort_id_camel: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    cohort_id: Option<String>,
    #[serde(
        rename = "cohortsById",
        default,
        deserialize_with = "lenient_or_default"
    )]
    cohorts_by_id: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "lenient")]
    metadata: Option<UploadMetadata>,
}

impl TryFrom<RawUploadResponse> for UploadResponse {
    type Error = String;

    fn try_from(raw: RawUploadResponse) -> Result<Self, String> {
        let only_key = || {
            let mut keys = raw.cohorts_by_id.keys();
            match (keys.next(), keys.next()) {
                (Some(k), None) => Some(k.clone()),
                _ => None,
            }
        };
        let cohort_id = raw
            .cohort_id_camel
            .clone()
            .or_else(|| raw.cohort_id.clone())
            .or_else(only_key)
            .filter(|id| !id.is_empty())
            .ok_or("the upload answer names no cohort (no cohortId, cohort_id or cohortsById)")?;
        Ok(UploadResponse {
            cohort_id,
            metadata: raw.metadata,
            cohorts_by_id: raw.cohorts_by_id,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadMetadata {
    #[serde(default, deserialize_with = "lenient_integer")]
    pub matched: Option<i64>,
    #[serde(default, deserialize_with = "lenient_integer")]
    pub totals: Option<i64>,
    #[serde(default, deserialize_with = "id_list")]
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
    #[serde(default, deserialize_with = "lenient_id")]
    pub cohort_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_or_default")]
    pub memberships_result: Vec<MembershipResult>,
}

/// One entry of `memberships_result`. Skipped ids are kept whatever their JSON type; an
/// `id_type` or `operation` this client does not know (Segment's samples omit both) is
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MembershipResult {
    #[serde(default, deserialize_with = "id_list")]
    pub skipped_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub id_type: Option<MembershipIdType>,
    #[serde(default, deserialize_with = "lenient")]
    pub operation: Option<MembershipOperation>,
}

/// Amplitude's error JSON: `{"error": {"http_code", "type", "message", "metadata"}}`
/// (the upload error table). The real 403 for bad keys has no `message`, only
/// `metadata.details` ([`ErrorBody::details`]). Also accepted: the object flat (without
/// the `error` wrapper) and `{"error": "text"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub http_code: Option<u16>,
    #[serde(rename = "type", default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorBody {
    /// Parses `{"error": {...}}`, `{"error": "text"}` or a flat error object; `None` when
    /// the text is none of them (plain text, HTML, other JSON).
    pub fn parse(text: &str) -> Option<ErrorBody> {
        let value: Value = serde_json::from_str(text).ok()?;
        let outer = value.as_object()?;
        match outer.get("error") {
            Some(Value::Object(inner)) => Some(ErrorBody::from_fields(inner)),
            Some(Value::String(message)) => {
                let mut body = ErrorBody::from_fields(outer);
                if body.error_type.as_ref() == Some(message) {
                    body.error_type = None;
                }
                body.message = Some(message.clone());
                Some(body)
            }
            _ => Some(ErrorBody::from_fields(outer))
                .filter(|b| b.message.is_some() || b.error_type.is_some() || b.details().is_some()),
        }
    }

    /// Each field taken when it has a usable type (`http_code` also as numeric text; an
    /// inner `error` string stands in for a missing `type`).
    fn from_fields(fields: &serde_json::Map<String, Value>) -> ErrorBody {
        let text = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_string);
        let http_code = match fields.get("http_code") {
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        ErrorBody {
            http_code,
            error_type: text("type").or_else(|| text("error")),
            message: text("message"),
            metadata: fields.get("metadata").filter(|m| !m.is_null()).cloned(),
        }
    }

    /// `metadata.details`, where Amplitude says what was wrong with the keys.
    pub fn details(&self) -> Option<&str> {
        self.metadata.as_ref()?.get("details")?.as_str()
    }
}

/// `type: message: details (other metadata)`, leaving out what is absent, a `details`
/// that repeats the message, and the uninformative type `unspecified`.
/// Longest error text shown (an error body is quoted, not reproduced).
const MAX_SHOWN_ERROR: usize = 2_000;

/// Control characters in what Amplitude sent are escaped ([`crate::text::escape`]).
impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        self.write_raw(&mut text)?;
        if text.len() > MAX_SHOWN_ERROR {
            let mut end = MAX_SHOWN_ERROR;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let total = text.len();
            text.truncate(end);
            text.push_str(&format!("… ({total} bytes)"));
        }
        f.write_str(&crate::text::escape(&text))
    }
}

impl ErrorBody {
    fn write_raw(&self, f: &mut String) -> std::fmt::Result {
        use std::fmt::Write;
        if let Some(t) = self.error_type.as_deref().filter(|t| *t != "unspecified") {
            write!(f, "{t}: ")?;
        }
        let details = self.details();
        match (self.message.as_deref(), details) {
            (Some(m), Some(d)) if m != d => write!(f, "{m}: {d}")?,
            (Some(m), _) => f.write_str(m)?,
            (None, Some(d)) => f.write_str(d)?,
            (None, None) => f.write_str("(no message)")?,
        }
        let rest = match &self.metadata {
            Some(Value::Object(fields)) if details.is_some() => {
                let mut rest = fields.clone();
                rest.remove("details");
                (!rest.is_empty()).then_some(Value::Object(rest))
            }
            Some(Value::Object(fields)) if fields.is_empty() => None,
            other => other.clone(),
        };
        if let Some(m) = rest {
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
    fn values_of_unexpected_types_do_not_fail_the_cohort() {
        let c: Cohort = serde_json::from_str(
            r#"{"id":12345,"appId":"360829","metadata":[{"funnel":1}],"chart_id":42,
                "viewers":null,"size":"2","hidden":"no","syncMetadata":{"odd":true},
                "definition":{"countGroup":"User"},"description":null}"#,
        )
        .expect("odd cohort parses");
        assert_eq!(c.id, "12345");
        assert_eq!(c.app_id, Some(360829));
        assert_eq!(c.size, Some(2));
        assert_eq!(c.chart_id.as_deref(), Some("42"));
        assert!(c.viewers.is_empty() && c.hidden.is_none() && c.sync_metadata.is_none());
        assert_eq!(c.description, None);
        assert_eq!(c.count_group(), Some("User"));
        assert!(serde_json::from_str::<Cohort>(r#"{"name":"no id"}"#).is_err());
    }

    #[test]
    fn count_group_is_a_string_or_an_object() {
        let group = |definition: &str| {
            let text = format!(r#"{{"id":"a","definition":{definition}}}"#);
            let c: Cohort = serde_json::from_str(&text).expect("parses");
            c.count_group().map(str::to_string)
        };
        assert_eq!(group(r#"{"countGroup":"User"}"#).as_deref(), Some("User"));
        assert_eq!(
            group(r#"{"countGroup":{"name":"org id","is_computed":false}}"#).as_deref(),
            Some("org id")
        );
        assert_eq!(group(r#"{"version":3}"#), None);
        assert_eq!(group("null"), None);
    }

    #[test]
    fn timestamps_in_seconds_milliseconds_or_text() {
        let ts = |json: &str| serde_json::from_str::<Timestamp>(json).expect(json);
        assert_eq!(ts("1679440233"), Timestamp::Seconds(1679440233));
        assert_eq!(ts("1679440233").epoch_seconds(), Some(1679440233));
        assert_eq!(ts("1679440233512").epoch_seconds(), Some(1679440233));
        assert_eq!(ts("1679440233.0"), Timestamp::Seconds(1679440233));
        assert_eq!(ts("1679440233.75").epoch_seconds(), Some(1679440233));
        assert_eq!(ts(r#""1679440233000""#).epoch_seconds(), Some(1679440233));
        assert_eq!(
            ts(r#""2023-03-21T23:10:33Z""#).epoch_seconds(),
            Some(1679440233)
        );
        assert_eq!(
            ts(r#""2023-03-21T23:10:33""#).epoch_seconds(),
            Some(1679440233)
        );
        assert_eq!(ts(r#""soon""#).epoch_seconds(), None);
        // Stored state written before keeps its meaning.
        let stored = serde_json::to_string(&Timestamp::Seconds(5)).unwrap_or_default();
        assert_eq!(ts(&stored), Timestamp::Seconds(5));
    }

    #[test]
    fn upload_answer_names_its_cohort_three_ways() {
        let parse = |text: &str| serde_json::from_str::<UploadResponse>(text);
        let today = parse(
            r#"{"cohortId":"a1","metadata":{"matched":1,"totals":2,"invalid_ids_sample":["x",7]}}"#,
        )
        .expect("cohortId");
        assert_eq!(today.cohort_id, "a1");
        let meta = today.metadata.expect("metadata");
        assert_eq!(meta.invalid_ids_sample, ["x", "7"]);
        let old = parse(r#"{"cohort_id":"b2","metadata":null}"#).expect("cohort_id");
        assert_eq!((old.cohort_id.as_str(), old.metadata), ("b2", None));
        let sample = parse(
            r#"{"cohortId":"c3","cohortsById":{"c3":{"id":"c3","name":"Test Cohort","type":"manual_upload","size":2,"description":null}}}"#,
        )
        .expect("cohortsById");
        let made = sample.cohort().expect("cohort object");
        assert_eq!(
            (made.name.as_str(), made.cohort_type.as_deref(), made.size),
            ("Test Cohort", Some("manual_upload"), Some(2))
        );
        let keyed = parse(r#"{"cohortsById":{"d4":{"id":"d4"}}}"#).expect("only the key");
        assert_eq!(keyed.cohort_id, "d4");
        let none = parse(r#"{"metadata":{"matched":0}}"#).expect_err("no cohort named");
        assert!(none.to_string().contains("names no cohort"), "{none}");
        let plain = UploadResponse {
            cohort_id: "a1".into(),
            metadata: None,
            cohorts_by_id: BTreeMap::new(),
        };
        let round = serde_json::to_value(&plain).expect("serializes");
        assert_eq!(round, serde_json::json!({"cohortId": "a1"}));
    }

    #[test]
    fn membership_answer_keeps_every_skipped_id() {
        let r: MembershipResponse = serde_json::from_str(
            r#"{"cohort_id":"c","memberships_result":[
                {"skipped_ids":["a",12],"id_type":"BY_ID","operation":"ADD"},
                {"skipped_ids":null,"operation":"REMOVE"},
                {"skipped_ids":[],"id_type":"BY_AMP_ID","operation":"ADD"}]}"#,
        )
        .expect("parses");
        assert_eq!(r.memberships_result[0].skipped_ids, ["a", "12"]);
        assert!(r.memberships_result[1].skipped_ids.is_empty());
        assert_eq!(r.memberships_result[1].id_type, None);
        assert_eq!(r.memberships_result[2].id_type, None, "unknown id type");
    }

    #[test]
    fn the_real_403_body_shows_its_details() {
        let text = r#"{"error":{"http_code":403,"type":"unspecified","metadata":{"details":"Invalid API/Secret Key combination"}}}"#;
        let e = ErrorBody::parse(text).expect("parses");
        assert_eq!(e.http_code, Some(403));
        assert_eq!(e.details(), Some("Invalid API/Secret Key combination"));
        assert_eq!(e.to_string(), "Invalid API/Secret Key combination");
        let both = r#"{"error":{"type":"invalid_ids","message":"bad ids","metadata":{"details":"3 invalid","ids":["x"]}}}"#;
        assert_eq!(
            ErrorBody::parse(both).map(|e| e.to_string()).as_deref(),
            Some(r#"invalid_ids: bad ids: 3 invalid ({"ids":["x"]})"#)
        );
        let text_only = ErrorBody::parse(r#"{"error":"Invalid API Key"}"#).expect("string");
        assert_eq!(text_only.to_string(), "Invalid API Key");
        let segment = ErrorBody::parse(r#"{"error":{"error":"rate_limited","message":"slow"}}"#)
            .expect("segment's shape");
        assert_eq!(segment.to_string(), "rate_limited: slow");
        assert!(ErrorBody::parse(r#"{"cohorts":[]}"#).is_none());
        assert!(ErrorBody::parse("[1]").is_none());
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
