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
//!
//! Leases die with their runner: a lease names its holder (run id, host, pid) and lives
//! for a short TTL that the holder's heartbeat renews while it works on the cohort
//! (`LEASE_TTL`, renewed every quarter of it). A runner killed with SIGKILL stops renewing,
//! so its lease expires within one TTL; on the same host it is taken over at once, since
//! the holder's process is visibly gone. SIGTERM/SIGINT release leases on the way out.

use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::holder::{Holder, Liveness};
use super::store::{Conditional, StateError, StateStore};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseDoc {
    /// The holder's run id (kept as `owner` for leases written by earlier versions).
    owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder: Option<Holder>,
    acquired_at: DateTime<Utc>,
    /// Moved forward by every heartbeat while the holder works.
    expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renewed_at: Option<DateTime<Utc>>,
}

impl LeaseDoc {
    fn holder(&self) -> Holder {
        self.holder.clone().unwrap_or_else(|| Holder {
            run_id: self.owner.clone(),
            ..Holder::default()
        })
    }
}

/// A held lease; renew it while working, release it when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    key: Path,
    pub holder: Holder,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired(Lease),
    /// Another runner holds it until `expires_at` (unless its heartbeat renews it).
    Held {
        holder: Holder,
        expires_at: DateTime<Utc>,
        liveness: Liveness,
    },
}

/// What a heartbeat found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// The lease is gone or belongs to another runner now: stop working on the cohort.
    Lost {
        now_held_by: Option<Holder>,
    },
}

impl StateStore {
    /// Tries once to take the lease on `id` for `ttl`. A lease that expired, that is this
    /// run's own, or whose holder's process is gone from this host is taken over.
    pub async fn try_lease(
        &self,
        id: &str,
        holder: &Holder,
        ttl: chrono::Duration,
    ) -> Result<LeaseOutcome, StateError> {
        let key = self.doc_key("leases", id);
        let now = crate::clock::now();
        let doc = LeaseDoc {
            owner: holder.run_id.clone(),
            holder: Some(holder.clone()),
            acquired_at: now,
            expires_at: now + ttl,
            renewed_at: None,
        };
        let acquired = || {
            LeaseOutcome::Acquired(Lease {
                key: key.clone(),
                holder: holder.clone(),
                acquired_at: now,
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
        let current_holder = current.holder();
        let liveness = current_holder.liveness();
        let takeover = current.expires_at <= now
            || current.owner == holder.run_id
            || liveness == Liveness::Dead;
        if !takeover {
            return Ok(LeaseOutcome::Held {
                holder: current_holder,
                expires_at: current.expires_at,
                liveness,
            });
        }
        if current.owner != holder.run_id {
            tracing::info!(
                lease = %self.location().describe(&key),
                "taking over the lease of {} ({})",
                current_holder.describe(),
                if liveness == Liveness::Dead {
                    "its process is gone"
                } else {
                    "expired"
                }
            );
        }
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

    /// Moves the lease's expiry to now + `ttl` if it is still ours (heartbeat). Two
    /// renewals of one lease by its holder can cross (the heartbeat and a fence check):
    /// a compare-and-swap that finds the lease changed by its own holder reads it again
    /// and retries; only a lease held by another run (or removed) is lost.
    pub async fn renew(
        &self,
        lease: &mut Lease,
        ttl: chrono::Duration,
    ) -> Result<Renewal, StateError> {
        const ATTEMPTS: usize = 8;
        for _ in 0..ATTEMPTS {
            let Some((current, version)) = self.read::<LeaseDoc>(&lease.key).await? else {
                return Ok(Renewal::Lost { now_held_by: None });
            };
            if current.owner != lease.holder.run_id {
                return Ok(Renewal::Lost {
                    now_held_by: Some(current.holder()),
                });
            }
            let now = crate::clock::now();
            let doc = LeaseDoc {
                expires_at: now + ttl,
                renewed_at: Some(now),
                ..current
            };
            if self.supports_compare_and_swap() {
                if let Conditional::Conflict = self.replace(&lease.key, &doc, version).await? {
                    // Changed since read: by another run (lost, seen on the next read)
                    // or by a crossing renewal of our own (retried).
                    continue;
                }
            } else {
                self.write(&lease.key, &doc).await?;
            }
            lease.expires_at = doc.expires_at;
            return Ok(Renewal::Renewed);
        }
        // Still ours after every attempt, but never written: say so rather than spin.
        let now_held_by = self
            .read::<LeaseDoc>(&lease.key)
            .await?
            .map(|(d, _)| d.holder());
        Ok(Renewal::Lost { now_held_by })
    }

    /// Releases a lease if it is still ours.
    pub async fn release(&self, lease: &Lease) -> Result<(), StateError> {
        if let Some((current, _)) = self.read::<LeaseDoc>(&lease.key).await?
            && current.owner == lease.holder.run_id
        {
            self.delete(&lease.key).await?;
        }
        Ok(())
    }

    /// Run ids holding a live lease of this pipeline (not expired, process not gone).
    pub async fn live_lease_holders(
        &self,
    ) -> Result<std::collections::BTreeSet<String>, StateError> {
        let now = crate::clock::now();
        let mut live = std::collections::BTreeSet::new();
        for key in self.list_folder("leases").await? {
            // A lease released since the listing, or unreadable, holds nothing.
            if let Ok(Some((doc, _))) = self.read::<LeaseDoc>(&key).await
                && doc.expires_at > now
                && doc.holder().liveness() != Liveness::Dead
            {
                live.insert(doc.owner);
            }
        }
        Ok(live)
    }

    async fn held_by(&self, key: &Path) -> Result<LeaseOutcome, StateError> {
        Ok(match self.read::<LeaseDoc>(key).await? {
            Some((doc, _)) => {
                let holder = doc.holder();
                LeaseOutcome::Held {
                    liveness: holder.liveness(),
                    holder,
                    expires_at: doc.expires_at,
                }
            }
            None => LeaseOutcome::Held {
                holder: Holder::unknown(),
                expires_at: crate::clock::now(),
                liveness: Liveness::Unknown,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    fn me(run: &str) -> Holder {
        Holder::this_process(run)
    }

    fn store(dir: &std::path::Path) -> StateStore {
        let loc = storage::open("state", dir).expect("open state dir");
        StateStore::new(loc, "p1")
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_frees_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let ttl = chrono::Duration::minutes(5);
        let LeaseOutcome::Acquired(lease) =
            s.try_lease("c1", &me("run-a"), ttl).await.expect("lease")
        else {
            panic!("first runner must get the lease");
        };
        match s.try_lease("c1", &me("run-b"), ttl).await.expect("lease") {
            LeaseOutcome::Held {
                holder, liveness, ..
            } => {
                assert_eq!(holder.run_id, "run-a");
                assert_eq!(liveness, Liveness::Alive);
            }
            other => panic!("second runner must not get it: {other:?}"),
        }
        s.release(&lease).await.expect("release");
        assert!(matches!(
            s.try_lease("c1", &me("run-b"), ttl).await.expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let gone = chrono::Duration::milliseconds(-1);
        let other_host = Holder {
            host: "elsewhere.example".into(),
            ..me("run-a")
        };
        assert!(matches!(
            s.try_lease("c1", &other_host, gone).await.expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
        assert!(matches!(
            s.try_lease("c1", &me("run-b"), chrono::Duration::minutes(1))
                .await
                .expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn a_dead_holder_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = Holder {
            pid: child.id(),
            ..me("run-dead")
        };
        child.wait().expect("wait");
        let hour = chrono::Duration::hours(1);
        assert!(matches!(
            s.try_lease("c1", &dead, hour).await.expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
        assert!(s.live_lease_holders().await.expect("list").is_empty());
        assert!(matches!(
            s.try_lease("c1", &me("run-b"), hour).await.expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
        let live = s.live_lease_holders().await.expect("list");
        assert_eq!(
            live.into_iter().collect::<Vec<_>>(),
            vec!["run-b".to_string()]
        );
    }

    #[tokio::test]
    async fn renewal_extends_and_detects_a_takeover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let short = chrono::Duration::milliseconds(200);
        let LeaseOutcome::Acquired(mut lease) =
            s.try_lease("c1", &me("run-a"), short).await.expect("lease")
        else {
            panic!("free lease");
        };
        let before = lease.expires_at;
        assert_eq!(
            s.renew(&mut lease, chrono::Duration::minutes(5))
                .await
                .expect("renew"),
            Renewal::Renewed
        );
        assert!(lease.expires_at > before);
        // Someone deletes it and another run takes it: the heartbeat notices.
        s.delete(&s.doc_key("leases", "c1")).await.expect("delete");
        assert!(matches!(
            s.try_lease("c1", &me("run-b"), short).await.expect("lease"),
            LeaseOutcome::Acquired(_)
        ));
        match s.renew(&mut lease, short).await.expect("renew") {
            Renewal::Lost {
                now_held_by: Some(h),
            } => assert_eq!(h.run_id, "run-b"),
            other => panic!("lost expected: {other:?}"),
        }
    }

    /// A renewal records when it happened (for people reading the lease document), and a
    /// holder nobody could name is shown as "another runner", never as an empty run id.
    #[tokio::test]
    async fn a_renewal_is_dated_and_an_unknown_holder_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let ttl = chrono::Duration::minutes(5);
        let LeaseOutcome::Acquired(mut lease) =
            s.try_lease("c1", &me("run-a"), ttl).await.expect("lease")
        else {
            panic!("free lease");
        };
        assert_eq!(
            s.renew(&mut lease, ttl).await.expect("renew"),
            Renewal::Renewed
        );
        let (doc, _) = s
            .read::<serde_json::Value>(&s.doc_key("leases", "c1"))
            .await
            .expect("read")
            .expect("the lease");
        let renewed: chrono::DateTime<Utc> = doc["renewed_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("renewed_at recorded");
        assert!(renewed >= lease.acquired_at, "{doc}");
        assert_eq!(Holder::unknown().describe(), "run another runner");
    }

    /// A lease written by a version before holders were recorded names its run by `owner`
    /// only: it is still reported held by that run.
    #[tokio::test]
    async fn a_lease_of_an_older_version_names_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let soon = Utc::now() + chrono::Duration::minutes(5);
        let old = serde_json::json!({
            "owner": "run-of-v0",
            "acquired_at": Utc::now().to_rfc3339(),
            "expires_at": soon.to_rfc3339(),
        });
        s.write(&s.doc_key("leases", "c1"), &old)
            .await
            .expect("write");
        match s
            .try_lease("c1", &me("run-b"), chrono::Duration::minutes(1))
            .await
            .expect("lease")
        {
            LeaseOutcome::Held { holder, .. } => assert_eq!(holder.run_id, "run-of-v0"),
            other => panic!("held by the old run: {other:?}"),
        }
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
