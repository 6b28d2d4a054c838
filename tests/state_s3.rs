//! State store and leases on a real S3-compatible server (moto on loopback): conditional
//! create and compare-and-swap decide one winner among concurrent runners.

mod common;

use cohort_sync::state::{Holder, LeaseOutcome, Renewal, StateStore};
use cohort_sync::storage;

fn s3_state(bucket: &str) -> StateStore {
    // scripts/test.sh exports AWS_ENDPOINT_URL (the moto server) and AWS_* test keys.
    assert_eq!(
        std::env::var("AWS_ENDPOINT_URL").ok(),
        Some(common::s3::endpoint()),
        "run with `make test`"
    );
    let loc = storage::open(&format!("s3://{bucket}/state"), std::path::Path::new("."))
        .expect("open s3 state");
    StateStore::new(loc, "nightly")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runners_get_one_lease() {
    let bucket = common::s3::create_bucket("lease");
    let state = s3_state(&bucket);
    let ttl = chrono::Duration::minutes(10);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = state.clone();
        tasks.push(tokio::spawn(async move {
            s.try_lease(
                "cohort-1",
                &Holder::this_process(&format!("runner-{i}")),
                ttl,
            )
            .await
        }));
    }
    let mut acquired = 0;
    for t in tasks {
        if let LeaseOutcome::Acquired(_) = t.await.expect("join").expect("lease call") {
            acquired += 1;
        }
    }
    assert_eq!(acquired, 1, "exactly one runner may hold the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lease_taken_over_by_exactly_one() {
    let bucket = common::s3::create_bucket("takeover");
    let state = s3_state(&bucket);
    let expired = chrono::Duration::milliseconds(-1);
    assert!(matches!(
        state
            .try_lease("c", &Holder::this_process("old-runner"), expired)
            .await
            .expect("lease"),
        LeaseOutcome::Acquired(_)
    ));
    let ttl = chrono::Duration::minutes(10);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = state.clone();
        tasks.push(tokio::spawn(async move {
            s.try_lease("c", &Holder::this_process(&format!("runner-{i}")), ttl)
                .await
        }));
    }
    let mut acquired = Vec::new();
    for t in tasks {
        if let LeaseOutcome::Acquired(l) = t.await.expect("join").expect("lease call") {
            acquired.push(l.holder.run_id);
        }
    }
    assert_eq!(acquired.len(), 1, "one takeover winner, got {acquired:?}");
}

/// A heartbeat moves the expiry with compare-and-swap; a lease taken over after it
/// expired is reported lost to its late holder, whose renewal does not overwrite it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_renew_and_a_late_holder_learns_it_lost() {
    let bucket = common::s3::create_bucket("renew");
    let state = s3_state(&bucket);
    let short = chrono::Duration::milliseconds(300);
    let LeaseOutcome::Acquired(mut lease) = state
        .try_lease("c", &Holder::this_process("slow"), short)
        .await
        .expect("lease")
    else {
        panic!("a free lease is acquired");
    };
    let first = lease.expires_at;
    assert_eq!(
        state.renew(&mut lease, short).await.expect("renew"),
        Renewal::Renewed
    );
    assert!(lease.expires_at > first);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // Expired without a heartbeat: another runner takes it over.
    assert!(matches!(
        state
            .try_lease(
                "c",
                &Holder::this_process("fast"),
                chrono::Duration::minutes(5)
            )
            .await
            .expect("lease"),
        LeaseOutcome::Acquired(_)
    ));
    match state.renew(&mut lease, short).await.expect("renew") {
        Renewal::Lost {
            now_held_by: Some(h),
        } => assert_eq!(h.run_id, "fast"),
        other => panic!("the late holder must learn it lost the lease: {other:?}"),
    }
    // The takeover stands: the late holder's renewal wrote nothing.
    assert!(matches!(
        state
            .try_lease("c", &Holder::this_process("third"), short)
            .await
            .expect("lease"),
        LeaseOutcome::Held { holder, .. } if holder.run_id == "fast"
    ));
}

#[tokio::test]
async fn cohort_records_round_trip_on_s3() {
    let bucket = common::s3::create_bucket("records");
    let state = s3_state(&bucket);
    let mut rec = state.cohort("abc").await.expect("read absent");
    assert_eq!(rec.cohort_id, "abc");
    assert!(rec.request.is_none());
    rec.cohort_name = "Paid users".into();
    rec.exported_rows = Some(42);
    state.save_cohort(&rec).await.expect("write");
    assert_eq!(state.cohort("abc").await.expect("read"), rec);
}

/// Renewals of one lease by its own holder can cross (the heartbeat and the fence check
/// before a write): each reads the lease, then swaps it with the version it read. The one
/// that finds the version changed by its own holder reads again and renews; it never
/// reports the lease lost to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossing_renewals_by_the_holder_all_renew() {
    let bucket = common::s3::create_bucket("crossing");
    let state = s3_state(&bucket);
    let ttl = chrono::Duration::minutes(5);
    let LeaseOutcome::Acquired(lease) = state
        .try_lease("c", &Holder::this_process("holder"), ttl)
        .await
        .expect("lease")
    else {
        panic!("a free lease is acquired");
    };
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, mut l) = (state.clone(), lease.clone());
            tokio::spawn(async move { s.renew(&mut l, ttl).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect("renew"),
            Renewal::Renewed,
            "a crossing renewal was taken for a lost lease"
        );
    }
}
