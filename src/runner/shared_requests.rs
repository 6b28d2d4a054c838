//! Download requests issued during one run, shared by its pipelines: a cohort that two
//! pipelines of one run select with the same columns is requested once. The first
//! pipeline to get there spends the request; the other waits for its id and downloads the
//! same file (a request's `/file` link is valid for 7 days), spending nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// What makes two requests interchangeable: the same app, cohort, data and columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub app: String,
    pub cohort_id: String,
    pub last_computed: Option<String>,
    pub props: bool,
    pub prop_keys: Vec<String>,
}

/// A request id and the pipeline that issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub request_id: String,
    pub issuer: String,
}

#[derive(Default)]
pub struct SharedRequests {
    cells: Mutex<HashMap<RequestKey, Arc<OnceCell<Issued>>>>,
}

impl std::fmt::Debug for SharedRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRequests").finish_non_exhaustive()
    }
}

impl SharedRequests {
    /// The request for `key`: the one this run already issued, or the one `issue` makes
    /// now (on behalf of `issuer`). Concurrent callers wait for the first; if `issue`
    /// fails, the next caller tries again.
    pub async fn get_or_issue<F, Fut, E>(
        &self,
        key: &RequestKey,
        issuer: &str,
        issue: F,
    ) -> Result<Issued, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        let cell = self.cell(key);
        cell.get_or_try_init(|| async {
            issue().await.map(|request_id| Issued {
                request_id,
                issuer: issuer.to_string(),
            })
        })
        .await
        .cloned()
    }

    /// Forgets the request of `key` if it is `request_id` (Amplitude reported it failed or
    /// unknown), so that the next caller issues a new one.
    pub fn forget(&self, key: &RequestKey, request_id: &str) {
        let mut cells = self.lock();
        if cells
            .get(key)
            .and_then(|c| c.get())
            .is_some_and(|i| i.request_id == request_id)
        {
            cells.remove(key);
        }
    }

    fn cell(&self, key: &RequestKey) -> Arc<OnceCell<Issued>> {
        Arc::clone(self.lock().entry(key.clone()).or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestKey, Arc<OnceCell<Issued>>>> {
        self.cells.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cohort: &str) -> RequestKey {
        RequestKey {
            app: "1".into(),
            cohort_id: cohort.into(),
            last_computed: Some("5".into()),
            props: false,
            prop_keys: vec![],
        }
    }

    #[tokio::test]
    async fn a_cohort_is_requested_once_per_run() {
        let shared = SharedRequests::default();
        let first: Result<Issued, String> = shared
            .get_or_issue(&key("a"), "p1", || async { Ok("r1".to_string()) })
            .await;
        let second: Result<Issued, String> = shared
            .get_or_issue(&key("a"), "p2", || async { Ok("r2".to_string()) })
            .await;
        assert_eq!(first, second);
        assert_eq!(second.map(|i| i.issuer), Ok("p1".to_string()));
        let other: Result<Issued, String> = shared
            .get_or_issue(&key("b"), "p2", || async { Ok("r3".to_string()) })
            .await;
        assert_eq!(other.map(|i| i.request_id), Ok("r3".to_string()));
    }

    #[tokio::test]
    async fn a_failed_issue_or_a_forgotten_request_is_issued_again() {
        let shared = SharedRequests::default();
        let failed: Result<Issued, String> = shared
            .get_or_issue(&key("a"), "p1", || async { Err("timeout".to_string()) })
            .await;
        assert!(failed.is_err());
        let ok: Result<Issued, String> = shared
            .get_or_issue(&key("a"), "p2", || async { Ok("r2".to_string()) })
            .await;
        assert_eq!(ok.map(|i| i.request_id), Ok("r2".to_string()));
        shared.forget(&key("a"), "r2");
        let again: Result<Issued, String> = shared
            .get_or_issue(&key("a"), "p1", || async { Ok("r9".to_string()) })
            .await;
        assert_eq!(again.map(|i| i.request_id), Ok("r9".to_string()));
    }
}
