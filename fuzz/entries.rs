//! The entry points of the fuzz targets, shared with `tests/fuzz_regressions.rs` (which
//! replays every file of `fuzz/regressions/<target>/` through them on stable Rust). Each
//! takes arbitrary bytes and must return without panicking, whatever they are; errors are
//! the expected answer to most inputs and are formatted (their `Display` runs too).
//!
//! - `csv_to_arrow`: the export's CSV reader (`export::parse_to_batches`): the first byte
//!   picks the gzip hint, tight limits, column types and how the body is cut into pieces.
//! - `reverse_source`: the reverse side's source readers (`reverse::source::read_ids`)
//!   on an in-memory object: CSV or Parquet (by name or by sniffing), either id kind.
//! - `pipeline`: a pipeline file's text through `config::parse` with `${VAR}` lookups,
//!   then the checks of files used together and the one-line summary.
//! - `api_answers`: Amplitude's answers into every response type of `amplitude::types`,
//!   `ErrorBody::parse`, timestamps, `Retry-After` values and the id alphabet.
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `fut` to its end on this thread's runtime (built once).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rt = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        });
        rt.block_on(fut)
    })
}

/// `data` cut into pieces of `size` bytes (at least 1), as a body stream.
fn pieces(
    data: &[u8],
    size: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let size = size.max(1);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

pub fn csv_to_arrow(data: &[u8]) {
    use cohort_sync::export::{
        BadRowPolicy, ColumnType, ConvertOptions, CsvLimits, GzipHint, parse_to_batches,
    };
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let mut opts = ConvertOptions::new("fuzz.csv");
    opts.gzip = match flags & 3 {
        0 => GzipHint::Auto,
        1 => GzipHint::Encoded,
        _ => GzipHint::Plain,
    };
    opts.on_bad_row = if flags & 4 != 0 {
        BadRowPolicy::Skip
    } else {
        BadRowPolicy::Fail
    };
    if flags & 8 != 0 {
        opts.limits = CsvLimits {
            max_field_bytes: 16,
            max_row_bytes: 64,
            max_header_bytes: 64,
            max_columns: 4,
            max_gzip_ratio: 2,
            ..CsvLimits::default()
        };
    }
    if flags & 16 != 0 {
        opts.column_types.insert("n".into(), ColumnType::Int64);
        opts.column_types.insert("f".into(), ColumnType::Float64);
        opts.column_types.insert("b".into(), ColumnType::Boolean);
    }
    opts.batch_rows = if flags & 32 != 0 { 3 } else { 1024 };
    let size = if flags & 64 != 0 {
        1
    } else {
        7 + body.len() / 3
    };
    let stream = pieces(body, size);
    block_on(async {
        match parse_to_batches(stream, &opts).await {
            Ok((schema, batches)) => {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                let _ = (schema.fields().len(), rows);
            }
            Err(e) => {
                let _ = e.to_string();
                let _ = (e.is_retryable_download(), e.limit(), e.bad_row());
            }
        }
    });
}

pub fn reverse_source(data: &[u8]) {
    use cohort_sync::amplitude::types::IdKind;
    use cohort_sync::config::SourceFormat;
    use cohort_sync::reverse::bytes::FileRef;
    use cohort_sync::reverse::source::{ColumnSpec, read_ids};
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use object_store::path::Path as KeyPath;

    // The parquet crate panics on some malformed pages; `read_column` catches those and
    // the hook keeps them quiet (`cohort_sync::panics`). Any other panic still aborts.
    cohort_sync::panics::install();
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let name = match flags & 3 {
        0 => "crm.csv",
        1 => "crm.csv.gz",
        2 => "crm.parquet",
        _ => "crm",
    };
    let kind = if flags & 4 != 0 {
        IdKind::AmplitudeId
    } else {
        IdKind::UserId
    };
    let column = if flags & 8 != 0 {
        "amplitude_id"
    } else {
        "user_id"
    };
    let mut spec = ColumnSpec::new(column, kind);
    spec.first_of_repeated = flags & 16 != 0;
    let body = Bytes::copy_from_slice(body);
    block_on(async {
        let store = Arc::new(InMemory::new());
        let key = KeyPath::from(name);
        if store.put(&key, body.into()).await.is_err() {
            return;
        }
        let file = FileRef::Store {
            store,
            key,
            url: format!("mem://{name}"),
        };
        match read_ids(&file, SourceFormat::Auto, &spec).await {
            Ok((_ids, stats)) => {
                let _ = (stats.rows, stats.blank);
            }
            Err(e) => {
                let _ = (e.to_string(), e.is_retryable());
            }
        }
    });
}

pub fn pipeline(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lookup = |name: &str| -> Option<String> {
        match name {
            "KEY" => Some("k".into()),
            "SECRET" => Some("s3cr\"et\n${KEY}".into()),
            "URL" => Some("http://127.0.0.1:8080".into()),
            "OUT" => Some("s3://bucket/out".into()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("$${x}".into()),
            _ => None,
        }
    };
    match cohort_sync::config::parse(Path::new("fuzz.toml"), &text, &lookup) {
        Ok(p) => {
            let _ = p.summary();
            let _ = p.connection.resolve_with(&lookup).map(|r| r.app_key);
            let _ = p.download.poll_settings();
            let _ = p.download.transfer_limits(0.01);
            let errors = cohort_sync::config::check_together(&[p.clone(), p]);
            let _ = errors.iter().map(ToString::to_string).count();
        }
        Err(e) => {
            let _ = (e.to_string(), e.line(), e.column());
        }
    }
}

pub fn api_answers(data: &[u8]) {
    use cohort_sync::amplitude::ids::{IdRole, check_id};
    use cohort_sync::amplitude::parse_retry_after;
    use cohort_sync::amplitude::types::*;

    if let Ok(list) = serde_json::from_slice::<CohortList>(data) {
        for c in &list.cohorts {
            let _ = (c.count_group(), check_id(IdRole::Cohort, &c.id));
            for t in [&c.last_computed, &c.last_mod, &c.created_at, &c.last_viewed]
                .into_iter()
                .flatten()
            {
                let _ = (t.epoch_seconds(), t.readable(), t.to_string());
            }
        }
        let _ = serde_json::to_string(&list);
    }
    if let Ok(c) = serde_json::from_slice::<Cohort>(data) {
        let _ = c.count_group();
    }
    if let Ok(r) = serde_json::from_slice::<CohortRequest>(data) {
        let _ = check_id(IdRole::Request, &r.request_id);
    }
    let _ = serde_json::from_slice::<RequestStatus>(data);
    if let Ok(u) = serde_json::from_slice::<UsageResponse>(data) {
        let _ = u.rest_download.remaining();
    }
    if let Ok(u) = serde_json::from_slice::<UploadResponse>(data) {
        let _ = (u.cohort(), serde_json::to_string(&u));
    }
    let _ = serde_json::from_slice::<MembershipResponse>(data);
    if let Ok(t) = serde_json::from_slice::<Timestamp>(data) {
        let _ = (t.epoch_seconds(), t.readable());
    }
    let text = String::from_utf8_lossy(data);
    if let Some(body) = ErrorBody::parse(&text) {
        let _ = (body.to_string(), body.details());
    }
    let now = chrono::Utc::now();
    let _ = parse_retry_after(&text, now);
    let _ = check_id(IdRole::Request, &text);
    let _ = cohort_sync::text::escape(&text);
}
