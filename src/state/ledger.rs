//! The monthly quota ledger: every download request this tool issued — and every request
//! whose outcome is unknown (sent, no answer) — recorded with its time, per app, in the
//! state store. The month's budget is the larger of what Amplitude's usage endpoint says
//! and what the ledger counts, so a missing or lagging usage endpoint never lets a run
//! overspend; runners sharing one state URL share one ledger.
//!
//! Layout: `{state}/_ledger/{app}/{YYYY-MM}/{time}-{run_id}-{n}.json`, one object per
//! request, never rewritten: two runners appending at once cannot lose each other's
//! entries (no read-modify-write), and a month is counted by listing its folder. `{app}`
//! is the app id, or a hash of the api key when no app id is configured (a key never
//! appears in a path). Months follow Amplitude's reset: the 1st, UTC. Under even pacing a
//! request writes its entry ahead (a ticket, outcome unknown), counts the month by
//! listing, and withdraws the ticket once its own entry is written or when it is not sent.

use chrono::{DateTime, Datelike, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::StateError;
use crate::storage::Location;

/// Whether Amplitude is known to have counted a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerOutcome {
    /// Answered with a request id: counted.
    Spent,
    /// Sent without an answer (timeout, cut connection, 5xx, a kill before the answer was
    /// saved): maybe counted. The budget counts it.
    Unknown,
}

/// One request in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub at: DateTime<Utc>,
    pub cohort_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub outcome: LedgerOutcome,
    pub pipeline: String,
    pub run_id: String,
}

/// What the ledger holds for one month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MonthCount {
    pub spent: u32,
    pub unknown: u32,
}

impl MonthCount {
    /// Requests the budget must assume were counted.
    pub fn total(&self) -> u32 {
        self.spent + self.unknown
    }
}

/// The ledger of one app under a state location.
#[derive(Debug, Clone)]
pub struct Ledger {
    location: Location,
    app: String,
}

impl Ledger {
    /// `app_id` when configured, else the api key (hashed into the path).
    pub fn new(location: Location, app_id: Option<u64>, api_key: &str) -> Self {
        let app = match app_id {
            Some(id) => id.to_string(),
            None => {
                let digest = Sha256::digest(api_key.as_bytes());
                let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("key-{hex}")
            }
        };
        Ledger { location, app }
    }

    /// Appends one entry (a new object; never overwrites another).
    pub async fn record(&self, entry: &LedgerEntry) -> Result<(), StateError> {
        self.reserve(entry).await.map(|_| ())
    }

    /// Appends one entry and returns its key (so that an entry written ahead of a request
    /// that then is not sent can be withdrawn with [`Ledger::release`]).
    pub async fn reserve(&self, entry: &LedgerEntry) -> Result<Path, StateError> {
        let name = format!(
            "{}-{}-{:08x}.json",
            entry.at.format("%Y%m%dT%H%M%S%.3fZ"),
            crate::runner::layout::sanitize(&entry.run_id),
            fastrand::u32(..)
        );
        let key = self.month_dir(entry.at).join(name.as_str());
        let body = serde_json::to_vec_pretty(entry).map_err(|source| StateError::Encode {
            location: self.location.describe(&key),
            source,
        })?;
        self.location
            .store
            .put(&key, body.into())
            .await
            .map_err(|source| StateError::Store {
                location: self.location.describe(&key),
                source,
            })?;
        Ok(key)
    }

    /// How many entries the month of `at` holds, counted by listing (every entry stands
    /// for one request, whatever its outcome; no entry is read).
    pub async fn count(&self, at: DateTime<Utc>) -> Result<u32, StateError> {
        Ok(self.month_keys(at).await?.len() as u32)
    }

    /// The keys of the entries of the month `at` falls in (listed, not read).
    async fn month_keys(&self, at: DateTime<Utc>) -> Result<Vec<Path>, StateError> {
        let dir = self.month_dir(at);
        let keys: Vec<Path> = self
            .location
            .store
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|source| StateError::Store {
                location: self.location.describe(&dir),
                source,
            })?;
        Ok(keys)
    }

    /// Removes an entry written by [`Ledger::reserve`] that no request followed.
    pub async fn release(&self, key: &Path) -> Result<(), StateError> {
        match self.location.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StateError::Store {
                location: self.location.describe(key),
                source,
            }),
        }
    }

    /// The entries of the month `now` falls in.
    pub async fn month(&self, now: DateTime<Utc>) -> Result<MonthCount, StateError> {
        let keys = self.month_keys(now).await?;
        let mut count = MonthCount::default();
        for key in keys {
            let got = match self.location.store.get(&key).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(source) => {
                    return Err(StateError::Store {
                        location: self.location.describe(&key),
                        source,
                    });
                }
            };
            let bytes = got.bytes().await.map_err(|source| StateError::Store {
                location: self.location.describe(&key),
                source,
            })?;
            // An unreadable entry still stands for a request: count it as unknown.
            match serde_json::from_slice::<LedgerEntry>(&bytes).map(|e| e.outcome) {
                Ok(LedgerOutcome::Spent) => count.spent += 1,
                Ok(LedgerOutcome::Unknown) | Err(_) => count.unknown += 1,
            }
        }
        Ok(count)
    }

    /// Where the ledger lives (for messages).
    pub fn describe(&self) -> String {
        self.location
            .describe(&self.location.key(&format!("_ledger/{}", self.app)))
    }

    fn month_dir(&self, at: DateTime<Utc>) -> Path {
        self.location.key(&format!(
            "_ledger/{}/{:04}-{:02}",
            self.app,
            at.year(),
            at.month()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    fn entry(at: &str, outcome: LedgerOutcome) -> LedgerEntry {
        LedgerEntry {
            at: at.parse().expect("time"),
            cohort_id: "c1".into(),
            request_id: None,
            outcome,
            pipeline: "p".into(),
            run_id: "r1".into(),
        }
    }

    #[tokio::test]
    async fn counts_the_month_of_now_spent_and_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(
            storage::open("state", dir.path()).expect("open"),
            Some(42),
            "k",
        );
        for e in [
            entry("2026-10-31T23:59:59Z", LedgerOutcome::Spent),
            entry("2026-11-01T00:00:00Z", LedgerOutcome::Spent),
            entry("2026-11-01T00:00:00Z", LedgerOutcome::Spent),
            entry("2026-11-15T10:00:00Z", LedgerOutcome::Unknown),
        ] {
            ledger.record(&e).await.expect("record");
        }
        let nov = ledger
            .month("2026-11-29T12:00:00Z".parse().expect("time"))
            .await
            .expect("count");
        assert_eq!(
            nov,
            MonthCount {
                spent: 2,
                unknown: 1
            }
        );
        assert_eq!(nov.total(), 3);
        let oct = ledger
            .month("2026-10-02T00:00:00Z".parse().expect("time"))
            .await
            .expect("count");
        assert_eq!(oct.total(), 1);
        assert!(dir.path().join("state/_ledger/42/2026-11").is_dir());
    }

    #[test]
    fn an_api_key_never_appears_in_a_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(
            storage::open("state", dir.path()).expect("open"),
            None,
            "secret-api-key",
        );
        assert!(!ledger.describe().contains("secret-api-key"));
        assert!(ledger.describe().contains("_ledger/key-"));
    }
}
