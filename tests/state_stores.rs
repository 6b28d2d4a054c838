//! What each state store guarantees, step by step: the same sequences of state writes on
//! S3 (moto on loopback), Azure Blob Storage (Azurite on loopback) and a local directory.
//! The object stores refuse every write made from a stale read (compare-and-swap); a local
//! directory refuses a second *create* (exclusive files) but lets the last writer win a
//! *replace* — the one gap README states, shown here exactly: where it can bite, and how
//! the loser learns of it.

mod common;

use cohort_sync::amplitude::types::IdKind;
use cohort_sync::reverse::journal::{
    ChunkEntry, ChunkOp, ChunkState, Journal, JournalDoc, JournalError, JournalStatus,
};
use cohort_sync::state::{Conditional, Holder, LeaseOutcome, Renewal, StateStore};
use cohort_sync::storage;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    S3,
    Azure,
    LocalDir,
}

/// A fresh, empty state store of the kind; the temporary directory lives as long as it.
fn open(kind: Store) -> (StateStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match kind {
        Store::S3 => format!("s3://{}/state", common::s3::create_bucket("stores")),
        Store::Azure => format!("az://{}/state", common::azure::create_container("stores")),
        Store::LocalDir => "state".to_string(),
    };
    let loc = storage::open(&url, dir.path()).expect("open state");
    (StateStore::new(loc, "crm"), dir)
}

fn plan(run: &str, chunks: usize) -> JournalDoc {
    JournalDoc {
        version: 1,
        target: "c1".into(),
        cohort_id: Some("c1".into()),
        upload: None,
        id_kind: IdKind::UserId,
        planned_by: run.into(),
        planned_at: chrono::Utc::now(),
        plan_summary: format!("planned by {run}"),
        status: JournalStatus::Open,
        closed_at: None,
        ended_reason: None,
        fingerprint: None,
        chunks: (0..chunks)
            .map(|i| ChunkEntry::pending(i, ChunkOp::Add, 1))
            .collect(),
    }
}

fn ids(n: usize) -> Vec<Vec<String>> {
    (0..n).map(|i| vec![format!("id-{i}")]).collect()
}

/// The head as the store holds it now.
async fn stored(state: &StateStore) -> JournalDoc {
    Journal::load(state, "c1")
        .await
        .expect("load")
        .expect("a journal")
        .doc
}

fn assert_conflict_names_the_journal(result: Result<impl std::fmt::Debug, JournalError>) {
    match result {
        Err(e @ JournalError::Conflict { .. }) => {
            let message = e.to_string();
            assert!(message.contains("journals/c1.json"), "{message}");
            assert!(message.contains("changed by another run"), "{message}");
        }
        other => panic!("a conflict was expected: {other:?}"),
    }
}

async fn two_first_journals_of_one_target_one_is_created(kind: Store) {
    let (state, _dir) = open(kind);
    let first = Journal::create(&state, plan("run-a", 2), ids(2), None)
        .await
        .expect("the first plan is recorded");
    assert_eq!(first.doc.planned_by, "run-a");
    assert_conflict_names_the_journal(
        Journal::create(&state, plan("run-b", 3), ids(3), None).await,
    );
    assert_eq!(stored(&state).await, first.doc, "the first plan stands");
}

#[tokio::test]
async fn s3_two_first_journals_of_one_target_one_is_created() {
    two_first_journals_of_one_target_one_is_created(Store::S3).await;
}

#[tokio::test]
async fn azure_two_first_journals_of_one_target_one_is_created() {
    two_first_journals_of_one_target_one_is_created(Store::Azure).await;
}

#[tokio::test]
async fn local_dir_two_first_journals_of_one_target_one_is_created() {
    two_first_journals_of_one_target_one_is_created(Store::LocalDir).await;
}

/// Two runs hold the same open journal; one records a chunk applied, then the other
/// writes from its older read. S3 refuses the stale write; a local directory takes it
/// (the later writer wins): there, only the target's lease keeps two runs apart.
async fn a_journal_head_written_from_a_stale_read(kind: Store) {
    let (state, _dir) = open(kind);
    Journal::create(&state, plan("run-a", 2), ids(2), None)
        .await
        .expect("create");
    let mut a = Journal::load(&state, "c1").await.expect("load").expect("a");
    let mut b = Journal::load(&state, "c1").await.expect("load").expect("b");
    a.doc.chunks[0].state = ChunkState::Applied;
    a.doc.chunks[0].applied_by = Some("run-a".into());
    a.save().await.expect("the first writer saves");
    assert_eq!(a.doc.remaining(), 1);
    b.doc.chunks[1].state = ChunkState::Sending;
    let stale = b.save().await;
    match kind {
        Store::S3 | Store::Azure => {
            assert_conflict_names_the_journal(stale);
            assert_eq!(stored(&state).await, a.doc, "the first write stands");
            // The first writer goes on writing from its own (current) version.
            a.doc.chunks[1].state = ChunkState::Applied;
            a.save().await.expect("the holder keeps writing");
            assert_eq!(stored(&state).await.remaining(), 0);
        }
        Store::LocalDir => {
            stale.expect("a local directory takes the later write");
            let now = stored(&state).await;
            assert_eq!(now, b.doc, "the later writer won");
            assert_eq!(
                now.chunks[0].state,
                ChunkState::Pending,
                "run-a's record lost"
            );
            assert_eq!(now.remaining(), 2);
        }
    }
}

#[tokio::test]
async fn s3_a_journal_head_written_from_a_stale_read_is_refused() {
    a_journal_head_written_from_a_stale_read(Store::S3).await;
}

#[tokio::test]
async fn azure_a_journal_head_written_from_a_stale_read_is_refused() {
    a_journal_head_written_from_a_stale_read(Store::Azure).await;
}

#[tokio::test]
async fn local_dir_a_journal_head_written_from_a_stale_read_wins() {
    a_journal_head_written_from_a_stale_read(Store::LocalDir).await;
}

/// A new plan replaces an ended journal it read; if another run replaced it meanwhile,
/// S3 refuses the second plan, a local directory takes it.
async fn a_new_plan_over_a_journal_that_changed_since_read(kind: Store) {
    let (state, _dir) = open(kind);
    let mut old = Journal::create(&state, plan("run-0", 1), ids(1), None)
        .await
        .expect("create");
    old.close().await.expect("close");
    let read_by_a = Journal::load(&state, "c1").await.expect("load");
    let read_by_b = Journal::load(&state, "c1").await.expect("load");
    let b = Journal::create(&state, plan("run-b", 2), ids(2), read_by_b)
        .await
        .expect("run-b replaces the ended journal");
    let a = Journal::create(&state, plan("run-a", 3), ids(3), read_by_a).await;
    match kind {
        Store::S3 | Store::Azure => {
            assert_conflict_names_the_journal(a);
            assert_eq!(stored(&state).await, b.doc);
        }
        Store::LocalDir => {
            let a = a.expect("a local directory takes the later plan");
            assert_eq!(stored(&state).await, a.doc);
        }
    }
}

#[tokio::test]
async fn s3_a_new_plan_over_a_journal_that_changed_since_read_is_refused() {
    a_new_plan_over_a_journal_that_changed_since_read(Store::S3).await;
}

#[tokio::test]
async fn azure_a_new_plan_over_a_journal_that_changed_since_read_is_refused() {
    a_new_plan_over_a_journal_that_changed_since_read(Store::Azure).await;
}

#[tokio::test]
async fn local_dir_a_new_plan_over_a_journal_that_changed_since_read_wins() {
    a_new_plan_over_a_journal_that_changed_since_read(Store::LocalDir).await;
}

/// Two runners find the same expired lease; B takes it over first. C decided to take it
/// over on the same (now stale) read. On S3 C's swap is refused and B keeps the lease. In
/// a local directory a takeover is delete-then-create, so C's goes through: both believe
/// they hold it until B's next heartbeat or fence check reports the lease lost (before B
/// publishes anything) — but a quota request B sent in between is spent.
async fn a_lease_takeover_decided_on_a_stale_read(kind: Store) {
    let (state, _dir) = open(kind);
    let key = state.doc_key("leases", "c1");
    let expired = chrono::Duration::milliseconds(-1);
    let five_minutes = chrono::Duration::minutes(5);
    let other_host = |run: &str| Holder {
        host: "elsewhere.example".into(),
        ..Holder::this_process(run)
    };
    assert!(matches!(
        state
            .try_lease("c1", &other_host("run-old"), expired)
            .await
            .expect("lease"),
        LeaseOutcome::Acquired(_)
    ));
    // What C read: the expired lease and its version.
    let (seen_by_c, version_seen_by_c) = state
        .read::<Value>(&key)
        .await
        .expect("read")
        .expect("the expired lease");
    let LeaseOutcome::Acquired(mut lease_b) = state
        .try_lease("c1", &Holder::this_process("run-b"), five_minutes)
        .await
        .expect("lease")
    else {
        panic!("B takes the expired lease over");
    };
    // C's takeover, the way try_lease makes it on each store.
    let mut lease_c = seen_by_c.clone();
    lease_c["owner"] = "run-c".into();
    lease_c["holder"] = serde_json::to_value(Holder::this_process("run-c")).expect("holder");
    lease_c["expires_at"] = (chrono::Utc::now() + five_minutes).to_rfc3339().into();
    assert_eq!(state.supports_compare_and_swap(), kind != Store::LocalDir);
    let written = if state.supports_compare_and_swap() {
        state
            .replace(&key, &lease_c, version_seen_by_c)
            .await
            .expect("replace")
    } else {
        state.delete(&key).await.expect("delete");
        state.create(&key, &lease_c).await.expect("create")
    };
    match kind {
        Store::S3 | Store::Azure => {
            assert!(matches!(written, Conditional::Conflict), "{written:?}");
            assert_eq!(
                state
                    .renew(&mut lease_b, five_minutes)
                    .await
                    .expect("renew"),
                Renewal::Renewed,
                "B keeps the lease"
            );
        }
        Store::LocalDir => {
            assert!(matches!(written, Conditional::Written(_)), "{written:?}");
            match state
                .renew(&mut lease_b, five_minutes)
                .await
                .expect("renew")
            {
                Renewal::Lost {
                    now_held_by: Some(h),
                } => assert_eq!(h.run_id, "run-c"),
                other => panic!("B must learn it lost the lease: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn s3_a_lease_takeover_decided_on_a_stale_read_is_refused() {
    a_lease_takeover_decided_on_a_stale_read(Store::S3).await;
}

#[tokio::test]
async fn azure_a_lease_takeover_decided_on_a_stale_read_is_refused() {
    a_lease_takeover_decided_on_a_stale_read(Store::Azure).await;
}

#[tokio::test]
async fn local_dir_a_lease_takeover_decided_on_a_stale_read_goes_through_and_b_learns_it() {
    a_lease_takeover_decided_on_a_stale_read(Store::LocalDir).await;
}
