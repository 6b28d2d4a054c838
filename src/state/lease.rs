//! Leases: a runner must hold a cohort's lease before it spends quota on it, so two runners
//! sharing one state URL never both request the same cohort.
//!
//! A lease is a small JSON document created with create-if-absent (`If-None-Match: *` on
//! S3, `O_EXCL` on a local directory). An expired lease is taken over with compare-and-swap
//! on stores that support it (S3: `If-Match` on the ETag), so exactly one contender wins.
//! A local directory has no compare-and-swap: an expired lease is deleted and re-created,
//! and two runners that find the same expired lease at the same instant could both take it.
//! Runners on one machine sharing a local state dir are the only ones exposed to that; use
//! an `s3://` state URL for runners on different machines.

use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::store::{Conditional, StateError, StateStore};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseDoc {
    owner: String,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A held lease; release it when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    key: Path,
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired(Lease),
    /// Another runner holds it until `expires_at`.
    Held {
        owner: String,
        expires_at: DateTime<Utc>,
    },
}

impl StateStore {
    /// Tries once to take the lease on `id` for `ttl`.
    pub async fn try_lease(
        &self,
        id: &str,
        owner: &str,
        ttl: chrono::Duration,
    ) -> Result<LeaseOutcome, StateError> {
        let key = self.doc_key("leases", id);
        let now = Utc::now();
        let doc = LeaseDoc {
            owner: owner.to_string(),
            acquired_at: now,
            expires_at: now + ttl,
        };
        let acquired = || {
            LeaseOutcome::Acquired(Lease {
                key: key.clone(),
                owner: owner.to_string(),
                expires_at: doc.expires_at,
            })
        };
        if let Conditional::Written(_) = self.create(&key, &doc).await? {
            return Ok(acquired());
        }
        let Some((current, version)) = self.read::<LeaseDoc>(&key).await? else {
            // Released between our create and read: one more try.
            return Ok(match self.create(&key, &doc).await? {
                Conditional::Written(_) => acquired(),
                Conditional::Conflict => self.held_by(&key).await?,
            });
        };
        if current.expires_at > now && current.owner != owner {
            return Ok(LeaseOutcome::Held {
                owner: current.owner,
                expires_at: current.expires_at,
            });
        }
        // Expired (or our own from an earlier attempt): take it over.
        let outcome = if self.supports_compare_and_swap() {
            self.replace(&key, &doc, version).await?
        } else {
            self.delete(&key).await?;
            self.create(&key, &doc).await?
        };
        match outcome {
            Conditional::Written(_) => Ok(acquired()),
            Conditional::Conflict => self.held_by(&key).await,
        }
    }

    /// Releases a lease if it is still ours.
    pub async fn release(&self, lease: &Lease) -> Result<(), StateError> {
        if let Some((current, _)) = self.read::<LeaseDoc>(&lease.key).await?
            && current.owner == lease.owner
        {
            self.delete(&lease.key).await?;
        }
        Ok(())
    }

    async fn held_by(&self, key: &Path) -> Result<LeaseOutcome, StateError> {
        Ok(match self.read::<LeaseDoc>(key).await? {
            Some((doc, _)) => LeaseOutcome::Held {
                owner: doc.owner,
                expires_at: doc.expires_at,
            },
            None => LeaseOutcome::Held {
                owner: "another runner".into(),
                expires_at: Utc::now(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    fn store(dir: &std::path::Path) -> StateStore {
        let loc = storage::open("state", dir).expect("open state dir");
        StateStore::new(loc, "p1")
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let ttl = chrono::Duration::minutes(5);
        let LeaseOutcome::Acquired(lease) = s.try_lease("c1", "run-a", ttl).await.expect("lease")
        else {
            panic!("first runner must get the lease");
        };
        match s.try_lease("c1", "run-b", ttl).await.expect("lease") {
            LeaseOutcome::Held { owner, .. } => assert_eq!(owner, "run-a"),
            other => panic!("second runner must not get it: {other:?}"),
        }
        s.release(&lease).await.expect("release");
        assert!(matches!(
            s.try_lease("c1", "run-b", ttl).await.expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let gone = chrono::Duration::milliseconds(-1);
        assert!(matches!(
            s.try_lease("c1", "run-a", gone).await.expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
        assert!(matches!(
            s.try_lease("c1", "run-b", chrono::Duration::minutes(1))
                .await
                .expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn cohort_ids_cannot_escape_their_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let key = s.doc_key("cohorts", "../../etc/passwd");
        assert_eq!(key.parts().count(), 3, "{key}");
        assert!(key.as_ref().starts_with("p1/cohorts/"), "{key}");
    }
}
