//! Holding a lease while working: take it (waiting out a holder that may be dead), renew
//! it with a heartbeat every quarter of its TTL, and learn at once when it was lost. Used
//! by the export for each cohort and by the reverse for its target cohort, so that two
//! runners sharing one state never both spend quota on one cohort or both apply one plan.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::{Holder, Lease, LeaseOutcome, Renewal, StateStore};

/// How long a lease lives without a heartbeat (renewed every quarter of it).
pub const LEASE_TTL: Duration = Duration::from_secs(120);

/// The lease TTL at a run's time scale (never under one second).
pub fn lease_ttl(time_scale: f64) -> chrono::Duration {
    let ttl = LEASE_TTL
        .mul_f64(time_scale.clamp(0.0, 1.0))
        .max(Duration::from_secs(1));
    chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(2))
}

/// How often a held lease is renewed: four times per TTL.
pub fn heartbeat_interval(ttl: chrono::Duration) -> Duration {
    ttl.to_std()
        .map(|t| t / 4)
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_millis(50))
}

/// Why a lease was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRefused {
    /// A live runner holds it (the message names it).
    Held(String),
    /// The run is stopping.
    Stopped,
    /// The state store failed.
    Failed(String),
}

/// Takes and keeps leases of one pipeline's state for this process.
pub struct LeaseKeeper<'a> {
    pub state: &'a StateStore,
    pub holder: &'a Holder,
    pub ttl: chrono::Duration,
    pub stop: &'a CancellationToken,
}

impl LeaseKeeper<'_> {
    /// Takes the lease on `id`. A lease whose holder is gone from this host is taken at
    /// once. With `wait`, one held elsewhere is waited for — at most one TTL past its
    /// expiry as first seen: a holder that keeps renewing it is alive and working.
    pub async fn take(&self, id: &str, wait: bool) -> Result<Lease, LeaseRefused> {
        let started = crate::clock::now();
        let mut first_expiry = None;
        loop {
            let outcome = self
                .state
                .try_lease(id, self.holder, self.ttl)
                .await
                .map_err(|e| LeaseRefused::Failed(format!("taking the lease on {id}: {e}")))?;
            let (holder, expires_at) = match outcome {
                LeaseOutcome::Acquired(lease) => return Ok(lease),
                LeaseOutcome::Held {
                    holder, expires_at, ..
                } => (holder, expires_at),
            };
            let deadline = *first_expiry.get_or_insert(expires_at.min(started + self.ttl));
            let now = crate::clock::now();
            if !wait || now >= deadline + self.ttl {
                return Err(LeaseRefused::Held(format!(
                    "{} is working on it (its lease is renewed, now until {expires_at}); waited {:.1}s",
                    holder.describe(),
                    (now - started).num_milliseconds() as f64 / 1000.0
                )));
            }
            tracing::info!(
                lease = id,
                "{} holds the lease until {expires_at}; waiting",
                holder.describe()
            );
            tokio::select! {
                _ = tokio::time::sleep(heartbeat_interval(self.ttl)) => {}
                _ = self.stop.cancelled() => return Err(LeaseRefused::Stopped),
            }
        }
    }

    /// Renews `lease` every quarter TTL; returns (only) when it is lost, saying how.
    pub async fn heartbeat(&self, lease: &mut Lease) -> String {
        let interval = heartbeat_interval(self.ttl);
        loop {
            tokio::time::sleep(interval).await;
            match self.state.renew(lease, self.ttl).await {
                Ok(Renewal::Renewed) => {}
                Ok(Renewal::Lost { now_held_by }) => {
                    return match now_held_by {
                        Some(h) => format!("now held by {}", h.describe()),
                        None => "it was removed".to_string(),
                    };
                }
                Err(e) => {
                    tracing::warn!("renewing the lease: {e}");
                    if crate::clock::now() >= lease.expires_at {
                        return format!("it expired while renewals failed: {e}");
                    }
                }
            }
        }
    }

    /// Releases `lease` (a failure is logged: the lease expires within one TTL anyway).
    pub async fn release(&self, lease: &Lease) {
        if let Err(e) = self.state.release(lease).await {
            tracing::warn!("releasing the lease: {e}");
        }
    }
}

/// A held lease, checked against the store right before a write only its holder may make
/// (spending a request, publishing a file, recording an export): a holder that was paused
/// past its lease's expiry — and taken over — learns it there and writes nothing. The
/// check renews the lease with compare-and-swap on S3; between the check and the write
/// only milliseconds pass, against a TTL of two minutes.
pub struct Fence {
    state: StateStore,
    lease: tokio::sync::Mutex<Lease>,
    ttl: chrono::Duration,
}

impl Fence {
    pub fn new(state: &StateStore, lease: &Lease, ttl: chrono::Duration) -> Self {
        Fence {
            state: state.clone(),
            lease: tokio::sync::Mutex::new(lease.clone()),
            ttl,
        }
    }

    /// Ok when the lease is still ours (and renewed); else why not.
    pub async fn check(&self, before: &str) -> Result<(), String> {
        let mut lease = self.lease.lock().await;
        match self.state.renew(&mut lease, self.ttl).await {
            Ok(Renewal::Renewed) => Ok(()),
            Ok(Renewal::Lost { now_held_by }) => Err(format!(
                "not {before}: the lease was lost ({}) while this run was paused or slow",
                now_held_by.map_or("it was removed".to_string(), |h| format!(
                    "now held by {}",
                    h.describe()
                ))
            )),
            Err(e) => Err(format!("not {before}: the lease cannot be confirmed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_short_and_scale_with_time() {
        assert_eq!(lease_ttl(1.0), chrono::Duration::seconds(120));
        assert_eq!(lease_ttl(0.01), chrono::Duration::milliseconds(1200));
        assert_eq!(lease_ttl(0.0001), chrono::Duration::seconds(1));
        assert_eq!(heartbeat_interval(lease_ttl(1.0)), Duration::from_secs(30));
    }
}
