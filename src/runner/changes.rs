//! Membership change files: when a cohort is exported and an earlier snapshot of it is in
//! the output, one Parquet file (`output.changes_layout`, by default
//! `_changes/cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet`) lists every member
//! that entered or exited since that snapshot — Amplitude's entering/exiting view, from the
//! download API, at no quota cost.
//!
//! ```text
//! previous snapshot ─┐  amplitude_id ─▶ IdCollector ─┐
//!                    │                                ├─▶ diff both ways (reverse::diff,
//! new snapshot ──────┘  amplitude_id ─▶ IdCollector ─┘     spills past its memory budget)
//!   ─▶ second pass over the new file: entered ids with their user_id
//!   ─▶ second pass over the previous file: exited ids with their user_id
//!   ─▶ Parquet rows (amplitude_id, user_id, change, previous_snapshot_date, snapshot_date,
//!      previous_last_computed, last_computed), streamed to the staged change file
//! ```
//!
//! Memory: the two id sets are the diff's, each spilled to temporary files past
//! [`CHANGE_MEMORY_MIB`] (or `COHORT_SYNC_DIFF_MEMORY_MIB`); what stays in memory is one
//! hash partition at a time and the changed ids, and the output is written batch by batch.
//!
//! Which snapshot is "previous": the newest snapshot of the cohort (by `lastComputed` in its
//! footer, see [`crate::reverse::snapshot`]) that is not the file of the request being
//! exported — so a rerun after a kill that already published the new file still compares
//! with the one before. On S3 the new file is uploaded straight to its final key; when the
//! previous snapshot sits at that same key (two exports on one day with a `{date}` layout)
//! it is first copied aside to `_staging/{pipeline}/_previous/{cohort}.{request}.parquet`,
//! a key a rerun of the same request finds again, and deleted once the change file is done.
//! A copy whose run was stopped and whose request is never resumed is deleted by the
//! cohort's next export.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Builder, RecordBatch, StringArray, StringBuilder, TimestampSecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures::{FutureExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::KeyValue;
use serde::{Deserialize, Serialize};

use super::layout::sanitize;
use super::staging::STAGING_DIR;
use crate::amplitude::types::IdKind;
use crate::export::ParquetOptions;
use crate::reverse::bytes::FileRef;
use crate::reverse::diff::diff;
use crate::reverse::idset::{IdCollector, IdList, budget_from_env};
use crate::reverse::parquet_ids::{ColumnError, check_chunks, open, read_column};
use crate::reverse::snapshot::{
    COHORT_ID_KEY, KIND_CHANGES, KIND_KEY, Snapshot, newest_in, read_snapshot,
};
use crate::storage::Location;

/// Where change files go unless `output.changes_layout` says otherwise.
pub const DEFAULT_CHANGES_LAYOUT: &str =
    "_changes/cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet";

/// Rows per written batch.
const BATCH_ROWS: usize = 64 * 1024;

/// MiB of ids each side of the change keeps in memory before spilling its hash partitions
/// to temporary files, unless [`crate::reverse::idset::MEMORY_ENV`] says otherwise: small, so that computing the
/// change stays within the export's own memory (a 2,000,000-member cohort's ids are
/// ~50 MB a side; spilled, the diff loads 1/64 of them at a time).
pub const CHANGE_MEMORY_MIB: usize = 16;

/// The snapshot a change file compares the new one with.
#[derive(Debug, Clone)]
pub struct Previous {
    pub snapshot: Snapshot,
    /// Where it was published (reported), whatever copy is read.
    pub url: String,
    /// The copy set aside on S3 (see the module notes), deleted by [`Previous::release`].
    side_copy: Option<Path>,
}

impl Previous {
    /// Deletes the copy set aside, if any (a failure is logged: the copy is under
    /// `_staging/`, which no reader looks at).
    pub async fn release(&self, output: &Location) {
        if let Some(key) = &self.side_copy {
            match output.store.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(
                    "removing the copy of the previous snapshot {}: {e}",
                    output.describe(key)
                ),
            }
        }
    }
}

fn side_key(output: &Location, pipeline: &str, cohort_id: &str, request_id: &str) -> Path {
    output.key(&format!(
        "{STAGING_DIR}/{}/_previous/{}.{}.parquet",
        sanitize(pipeline),
        sanitize(cohort_id),
        sanitize(request_id)
    ))
}

/// Deletes this pipeline's copies of `cohort_id`'s previous snapshot set aside for other
/// requests than the one of `own` (S3). A run killed after the copy and never resumed
/// (its request expired or failed, and a new one was made) leaves its copy, a whole
/// snapshot of people's ids, where no reader looks and no later run of that request would
/// delete it. The run exporting the cohort holds its lease, so no other run is using one;
/// and the new request's previous snapshot is found without them (see the module notes).
/// Cohort and request ids may both hold a `.`, so only names that cannot be another
/// cohort's are touched: `{cohort}.{request}.parquet` with no `.` in `{request}`. A
/// failure is logged: the copies only take room.
async fn remove_stranded_side_copies(
    output: &Location,
    pipeline: &str,
    cohort_id: &str,
    own: &Path,
) {
    let dir = output.key(&format!("{STAGING_DIR}/{}/_previous", sanitize(pipeline)));
    let mine = format!("{}.", sanitize(cohort_id));
    let listed: Vec<_> = match output.store.list(Some(&dir)).try_collect().await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(
                "listing {} for stranded copies of previous snapshots: {e}",
                output.describe(&dir)
            );
            return;
        }
    };
    for meta in listed {
        let key = meta.location;
        let stranded = key.filename().is_some_and(|name| {
            name.strip_prefix(&mine)
                .and_then(|rest| rest.strip_suffix(".parquet"))
                .is_some_and(|request| !request.is_empty() && !request.contains('.'))
        }) && key != *own;
        if !stranded {
            continue;
        }
        match output.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => tracing::info!(
                "removed {}: a copy of cohort {cohort_id}'s previous snapshot left by a run that was stopped",
                output.describe(&key)
            ),
            Err(e) => tracing::warn!(
                "removing {}, a copy left by a stopped run: {e}",
                output.describe(&key)
            ),
        }
    }
}

fn store_file(output: &Location, key: &Path) -> FileRef {
    FileRef::Store {
        store: Arc::clone(&output.store),
        key: key.clone(),
        url: output.describe(key),
    }
}

/// The snapshot to compare the file of `request_id` with (see the module notes); `None`
/// on a cohort's first export. Call before the new file is written.
pub async fn find_previous(
    output: &Location,
    pipeline: &str,
    layout: &str,
    cohort_id: &str,
    request_id: &str,
    final_key: &Path,
) -> Result<Option<Previous>, String> {
    if !output.is_local {
        let side = side_key(output, pipeline, cohort_id, request_id);
        remove_stranded_side_copies(output, pipeline, cohort_id, &side).await;
        match output.store.head(&side).await {
            Ok(meta) => {
                if let Some(snapshot) =
                    read_snapshot(store_file(output, &side), meta.last_modified, cohort_id).await
                {
                    return Ok(Some(Previous {
                        snapshot,
                        url: output.describe(final_key),
                        side_copy: Some(side),
                    }));
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("reading {}: {e}", output.describe(&side))),
        }
    }
    let Some(mut snapshot) = newest_in(output, layout, cohort_id, Some(request_id)).await? else {
        return Ok(None);
    };
    let url = snapshot.file.label();
    let same_key = matches!(&snapshot.file, FileRef::Store { key, .. } if key == final_key);
    if output.is_local || !same_key {
        return Ok(Some(Previous {
            snapshot,
            url,
            side_copy: None,
        }));
    }
    let side = side_key(output, pipeline, cohort_id, request_id);
    output.store.copy(final_key, &side).await.map_err(|e| {
        format!(
            "copying the previous snapshot {url} aside to {} before it is overwritten: {e}",
            output.describe(&side)
        )
    })?;
    crate::crash::point("export.changes.previous_copied");
    snapshot.file = store_file(output, &side);
    Ok(Some(Previous {
        snapshot,
        url,
        side_copy: Some(side),
    }))
}

/// What a change file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeCounts {
    pub entered: u64,
    pub exited: u64,
}

/// The change file of one export, for the report and the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeFile {
    /// Where it was published.
    pub key: String,
    pub entered: u64,
    pub exited: u64,
    /// The snapshot it compares with.
    pub previous_snapshot: String,
    pub previous_snapshot_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_last_computed: Option<String>,
    /// Time spent computing and writing it.
    pub duration_ms: u64,
}

/// The values every row of one change file carries.
#[derive(Debug, Clone)]
pub struct ChangeMeta<'a> {
    pub cohort_id: &'a str,
    pub previous_date: &'a str,
    pub date: &'a str,
    pub previous_last_computed: Option<i64>,
    pub last_computed: Option<i64>,
    pub parquet: &'a ParquetOptions,
}

/// Computes the changes from `previous` to `new` and writes them at `key` of `output`
/// (complete when this returns `Ok`; a failed or killed write leaves no object at `key`
/// on S3 and a temporary file under `_staging/` locally). A panic of the Parquet reader
/// on a crafted file is an error, as in [`crate::reverse::parquet_ids`].
pub async fn write(
    previous: &FileRef,
    new: &FileRef,
    meta: &ChangeMeta<'_>,
    output: &Location,
    key: &Path,
) -> Result<ChangeCounts, String> {
    let run = std::panic::AssertUnwindSafe(write_unguarded(previous, new, meta, output, key));
    match run.catch_unwind().await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the Parquet reader failed on {} or {}; are they valid Parquet files?",
            previous.label(),
            new.label()
        )),
    }
}

async fn write_unguarded(
    previous: &FileRef,
    new: &FileRef,
    meta: &ChangeMeta<'_>,
    output: &Location,
    key: &Path,
) -> Result<ChangeCounts, String> {
    let (old_ids, new_ids) = tokio::try_join!(collect_ids(previous), collect_ids(new))?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let d = tokio::task::spawn_blocking(move || diff(&new_ids, &old_ids, threads))
        .await
        .map_err(|e| format!("computing the change: {e}"))?
        .map_err(|e| format!("computing the change: {e}"))?;
    let mut stream = pairs(new).await?;
    let id_type = stream.id_type.clone();
    let schema = Arc::new(schema(&id_type));
    let props = crate::export::writer_properties(meta.parquet, None)?
        .into_builder()
        .set_key_value_metadata(Some(vec![
            KeyValue::new(KIND_KEY.to_string(), KIND_CHANGES.to_string()),
            KeyValue::new(COHORT_ID_KEY.to_string(), meta.cohort_id.to_string()),
            KeyValue::new(
                "cohort_sync.tool_version".into(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ]))
        .build();
    let sink = object_store::buffered::BufWriter::new(Arc::clone(&output.store), key.clone());
    let mut writer = AsyncArrowWriter::try_new(sink, Arc::clone(&schema), Some(props))
        .map_err(|e| format!("writing {}: {e}", output.describe(key)))?;
    let mut rows = Rows::new(meta, Arc::clone(&schema));
    let mut counts = ChangeCounts::default();
    let described = output.describe(key);
    counts.entered = attach(
        &mut stream,
        &d.add,
        "entered",
        &mut rows,
        &mut writer,
        &described,
    )
    .await?;
    let mut old_stream = pairs(previous).await?;
    counts.exited = attach(
        &mut old_stream,
        &d.remove,
        "exited",
        &mut rows,
        &mut writer,
        &described,
    )
    .await?;
    rows.flush(&mut writer, &described).await?;
    writer
        .close()
        .await
        .map_err(|e| format!("writing {described}: {e}"))?;
    Ok(counts)
}

/// The amplitude ids of a snapshot (nulls and blanks left out).
async fn collect_ids(file: &FileRef) -> Result<IdCollector, String> {
    let mut ids = IdCollector::with_budget(budget_from_env(CHANGE_MEMORY_MIB));
    read_column(file, "amplitude_id", IdKind::AmplitudeId, |_, v| match v {
        Some(v) if !v.is_empty() => ids.push(v),
        _ => Ok(()),
    })
    .await
    .map_err(|e| match e {
        ColumnError::File(m) => format!("{}: {m}", file.label()),
        ColumnError::Sink(e) => format!("{}: {e}", file.label()),
    })?;
    ids.finish().map_err(|e| format!("{}: {e}", file.label()))?;
    Ok(ids)
}

fn schema(id_type: &DataType) -> Schema {
    let ts = DataType::Timestamp(TimeUnit::Second, Some("UTC".into()));
    Schema::new(vec![
        Field::new("amplitude_id", id_type.clone(), false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("change", DataType::Utf8, false),
        Field::new("previous_snapshot_date", DataType::Date32, true),
        Field::new("snapshot_date", DataType::Date32, true),
        Field::new("previous_last_computed", ts.clone(), true),
        Field::new("last_computed", ts, true),
    ])
}

/// A snapshot read as `(amplitude_id, user_id)` text pairs, batch by batch.
struct Pairs {
    stream: parquet::arrow::async_reader::ParquetRecordBatchStream<
        Box<dyn parquet::arrow::async_reader::AsyncFileReader>,
    >,
    label: String,
    /// The `amplitude_id` column's type in the file (integers stay integers).
    id_type: DataType,
    has_user_id: bool,
}

async fn pairs(file: &FileRef) -> Result<Pairs, String> {
    let label = file.label();
    let err = |e: &dyn std::fmt::Display| format!("{label}: {e}");
    let reader = open(file).await.map_err(|e| err(&e))?;
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| err(&e))?;
    check_chunks(builder.metadata()).map_err(|e| err(&e))?;
    let fields = builder.schema().fields();
    let index = |name: &str| fields.iter().position(|f| f.name() == name);
    let Some(id_index) = index("amplitude_id") else {
        return Err(err(&"no column \"amplitude_id\"; is it a cohort snapshot?"));
    };
    let id_type = match fields[id_index].data_type() {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        t => t.clone(),
    };
    let user_index = index("user_id");
    let roots: Vec<usize> = std::iter::once(id_index).chain(user_index).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let stream = builder
        .with_projection(mask)
        .with_batch_size(16 * 1024)
        .build()
        .map_err(|e| err(&e))?;
    Ok(Pairs {
        stream,
        label,
        id_type,
        has_user_id: user_index.is_some(),
    })
}

/// A column as text (integers in decimal, dictionaries unpacked).
fn as_text(col: &ArrayRef, label: &str, name: &str) -> Result<StringArray, String> {
    let cast = arrow::compute::cast(col, &DataType::Utf8)
        .map_err(|e| format!("{label}: column {name:?} cannot be read as text: {e}"))?;
    cast.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| format!("{label}: column {name:?} cannot be read as text"))
}

/// Writes the rows of `ids` found in `pairs` (each once, in file order) as `change`;
/// returns how many.
async fn attach(
    pairs: &mut Pairs,
    ids: &IdList,
    change: &'static str,
    rows: &mut Rows<'_>,
    writer: &mut AsyncArrowWriter<object_store::buffered::BufWriter>,
    described: &str,
) -> Result<u64, String> {
    let mut wanted: HashSet<&[u8], ahash::RandomState> =
        HashSet::with_capacity_and_hasher(ids.len(), ahash::RandomState::new());
    wanted.extend(ids.iter());
    let mut written = 0u64;
    while let Some(batch) = pairs
        .stream
        .try_next()
        .await
        .map_err(|e| format!("{}: {e}", pairs.label))?
    {
        if wanted.is_empty() {
            break;
        }
        let Some(id_col) = batch.column_by_name("amplitude_id") else {
            return Err(format!("{}: no column \"amplitude_id\"", pairs.label));
        };
        let id_text = as_text(id_col, &pairs.label, "amplitude_id")?;
        let user_text = match (pairs.has_user_id, batch.column_by_name("user_id")) {
            (true, Some(c)) => Some(as_text(c, &pairs.label, "user_id")?),
            _ => None,
        };
        for i in 0..id_text.len() {
            if id_text.is_null(i) {
                continue;
            }
            let id = id_text.value(i);
            if !wanted.remove(id.as_bytes()) {
                continue;
            }
            let user = user_text
                .as_ref()
                .and_then(|u| (!u.is_null(i)).then(|| u.value(i)));
            rows.push(id, user, change);
            written += 1;
            if rows.len() >= BATCH_ROWS {
                rows.flush(writer, described).await?;
            }
        }
    }
    if !wanted.is_empty() {
        return Err(format!(
            "{}: {} id(s) seen in the first pass are missing in the second (was the file replaced meanwhile?)",
            pairs.label,
            wanted.len()
        ));
    }
    Ok(written)
}

/// Rows waiting to be written.
struct Rows<'a> {
    meta: &'a ChangeMeta<'a>,
    schema: Arc<Schema>,
    previous_date: Option<i32>,
    date: Option<i32>,
    ids: StringBuilder,
    users: StringBuilder,
    changes: StringBuilder,
    n: usize,
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn date32(text: &str) -> Option<i32> {
    let d = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((d - epoch).num_days()).ok()
}

impl<'a> Rows<'a> {
    fn new(meta: &'a ChangeMeta<'a>, schema: Arc<Schema>) -> Self {
        Rows {
            previous_date: date32(meta.previous_date),
            date: date32(meta.date),
            meta,
            schema,
            ids: StringBuilder::new(),
            users: StringBuilder::new(),
            changes: StringBuilder::new(),
            n: 0,
        }
    }

    fn len(&self) -> usize {
        self.n
    }

    fn push(&mut self, id: &str, user: Option<&str>, change: &str) {
        self.ids.append_value(id);
        self.users.append_option(user);
        self.changes.append_value(change);
        self.n += 1;
    }

    async fn flush(
        &mut self,
        writer: &mut AsyncArrowWriter<object_store::buffered::BufWriter>,
        described: &str,
    ) -> Result<(), String> {
        if self.n == 0 {
            return Ok(());
        }
        let n = std::mem::take(&mut self.n);
        let ids: ArrayRef = Arc::new(self.ids.finish());
        let id_type = self.schema.field(0).data_type();
        let ids = if id_type == &DataType::Utf8 {
            ids
        } else {
            arrow::compute::cast(&ids, id_type)
                .map_err(|e| format!("writing {described}: amplitude ids as {id_type}: {e}"))?
        };
        let dates = |d: Option<i32>| -> ArrayRef {
            let mut b = Date32Builder::with_capacity(n);
            (0..n).for_each(|_| b.append_option(d));
            Arc::new(b.finish())
        };
        let times = |t: Option<i64>| -> ArrayRef {
            let mut b = TimestampSecondBuilder::with_capacity(n).with_timezone("UTC");
            (0..n).for_each(|_| b.append_option(t));
            Arc::new(b.finish())
        };
        let columns: Vec<ArrayRef> = vec![
            ids,
            Arc::new(self.users.finish()),
            Arc::new(self.changes.finish()),
            dates(self.previous_date),
            dates(self.date),
            times(self.meta.previous_last_computed),
            times(self.meta.last_computed),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| format!("writing {described}: {e}"))?;
        writer
            .write(&batch)
            .await
            .map_err(|e| format!("writing {described}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_since_the_epoch() {
        assert_eq!(date32("1970-01-02"), Some(1));
        assert_eq!(date32("2026-11-29"), Some(20_786));
        assert_eq!(date32("soon"), None);
    }
}
