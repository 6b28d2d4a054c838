//! JSON documents on an object store: atomic writes, create-if-absent and
//! compare-and-swap where the store supports them.

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::records::CohortRecord;
use crate::storage::Location;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {location}: {source}")]
    Store {
        location: String,
        source: object_store::Error,
    },
    #[error("state document {location} is corrupt ({source}); fix or delete it")]
    Corrupt {
        location: String,
        source: serde_json::Error,
    },
    #[error("cannot encode state document {location}: {source}")]
    Encode {
        location: String,
        source: serde_json::Error,
    },
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    Written(UpdateVersion),
    /// The object exists (create) or changed since it was read (update).
    Conflict,
}

/// Run state of one pipeline under a state URL.
#[derive(Debug, Clone)]
pub struct StateStore {
    location: Location,
    pipeline: String,
}

impl StateStore {
    pub fn new(location: Location, pipeline: &str) -> Self {
        StateStore {
            location,
            pipeline: pipeline.to_string(),
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether the store can replace an object only if unchanged (S3 can, a local dir cannot).
    pub fn supports_compare_and_swap(&self) -> bool {
        !self.location.is_local
    }

    /// Key of a document of this pipeline: `{pipeline}/{folder}/{id}.json`, `id` escaped so
    /// that no cohort id can leave its folder.
    pub fn doc_key(&self, folder: &str, id: &str) -> Path {
        let mut parts: Vec<String> = self
            .location
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.push(
            object_store::path::PathPart::from(self.pipeline.as_str())
                .as_ref()
                .to_string(),
        );
        parts.push(folder.to_string());
        parts.push(
            object_store::path::PathPart::from(format!("{id}.json").as_str())
                .as_ref()
                .to_string(),
        );
        Path::from_iter(parts)
    }

    /// The keys of every document in `folder` of this pipeline.
    pub async fn list_folder(&self, folder: &str) -> Result<Vec<Path>, StateError> {
        use futures::TryStreamExt;
        let probe = self.doc_key(folder, "x");
        let mut parts: Vec<String> = probe.parts().map(|p| p.as_ref().to_string()).collect();
        parts.pop();
        let prefix = Path::from_iter(parts);
        self.location
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|source| self.store_err(&prefix, source))
    }

    /// Reads a document and its version; `None` when absent.
    pub async fn read<T: DeserializeOwned>(
        &self,
        key: &Path,
    ) -> Result<Option<(T, UpdateVersion)>, StateError> {
        let got = match self.location.store.get(key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(self.store_err(key, source)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|source| self.store_err(key, source))?;
        let value = serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
            location: self.location.describe(key),
            source,
        })?;
        Ok(Some((value, version)))
    }

    /// Writes a document atomically (readers see the old or the new one, never a mix).
    pub async fn write<T: Serialize>(&self, key: &Path, value: &T) -> Result<(), StateError> {
        let payload = self.encode(key, value)?;
        self.location
            .store
            .put(key, payload)
            .await
            .map_err(|source| self.store_err(key, source))?;
        self.restrict(key);
        Ok(())
    }

    /// Writes raw bytes atomically (readers see the old or the new object, never a mix):
    /// for state too large to be one JSON document, such as a list of ids.
    pub async fn write_bytes(&self, key: &Path, bytes: Vec<u8>) -> Result<(), StateError> {
        self.location
            .store
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(|source| self.store_err(key, source))?;
        self.restrict(key);
        Ok(())
    }

    /// Reads raw bytes; `None` when absent.
    pub async fn read_bytes(&self, key: &Path) -> Result<Option<bytes::Bytes>, StateError> {
        let got = match self.location.store.get(key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(self.store_err(key, source)),
        };
        got.bytes()
            .await
            .map(Some)
            .map_err(|source| self.store_err(key, source))
    }

    /// On a local state directory, makes a document readable by its owner only (0600):
    /// journals hold the ids of a plan's calls. A failure is logged: the document is
    /// written, and the directory's own permissions still apply.
    fn restrict(&self, key: &Path) {
        #[cfg(unix)]
        if let Some(dir) = &self.location.local_dir {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.join(key.as_ref());
            if let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!("making {} private: {e}", file.display());
            }
        }
    }

    /// Creates a document only if none exists at `key`.
    pub async fn create<T: Serialize>(
        &self,
        key: &Path,
        value: &T,
    ) -> Result<Conditional, StateError> {
        self.put_mode(key, value, PutMode::Create).await
    }

    /// Replaces a document only if it is still at `version`. Stores without
    /// compare-and-swap (a local directory) answer `Conflict` never; see `supports_compare_and_swap`.
    pub async fn replace<T: Serialize>(
        &self,
        key: &Path,
        value: &T,
        version: UpdateVersion,
    ) -> Result<Conditional, StateError> {
        self.put_mode(key, value, PutMode::Update(version)).await
    }

    pub async fn delete(&self, key: &Path) -> Result<(), StateError> {
        match self.location.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.store_err(key, source)),
        }
    }

    /// The record of one cohort of this pipeline (default when never exported).
    pub async fn cohort(&self, cohort_id: &str) -> Result<CohortRecord, StateError> {
        let key = self.doc_key("cohorts", cohort_id);
        Ok(match self.read::<CohortRecord>(&key).await? {
            Some((rec, _)) => rec,
            None => CohortRecord {
                cohort_id: cohort_id.to_string(),
                ..CohortRecord::default()
            },
        })
    }

    pub async fn save_cohort(&self, record: &CohortRecord) -> Result<(), StateError> {
        let key = self.doc_key("cohorts", &record.cohort_id);
        self.write(&key, record).await
    }

    async fn put_mode<T: Serialize>(
        &self,
        key: &Path,
        value: &T,
        mode: PutMode,
    ) -> Result<Conditional, StateError> {
        let payload = self.encode(key, value)?;
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self.location.store.put_opts(key, payload, opts).await {
            Ok(r) => {
                self.restrict(key);
                Ok(Conditional::Written(UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                }))
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Conditional::Conflict),
            Err(source) => Err(self.store_err(key, source)),
        }
    }

    fn encode<T: Serialize>(&self, key: &Path, value: &T) -> Result<PutPayload, StateError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Encode {
            location: self.location.describe(key),
            source,
        })?;
        Ok(PutPayload::from(bytes))
    }

    fn store_err(&self, key: &Path, source: object_store::Error) -> StateError {
        StateError::Store {
            location: self.location.describe(key),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    #[cfg(unix)]
    #[tokio::test]
    async fn documents_on_a_local_state_dir_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(storage::open("state", dir.path()).expect("open"), "p");
        let key = state.doc_key("journal-chunks", "c1.run.00000");
        state
            .write(&key, &serde_json::json!({"ids": ["a", "b"]}))
            .await
            .expect("write");
        let created = state.doc_key("leases", "c1");
        state
            .create(&created, &serde_json::json!({"owner": "r"}))
            .await
            .expect("create");
        for k in [&key, &created] {
            let mode = std::fs::metadata(dir.path().join("state").join(k.as_ref()))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{k}");
        }
    }
}
