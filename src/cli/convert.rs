//! `cohort-sync convert IN.csv[.gz] OUT.parquet`: the export's CSV→Parquet path on a
//! local file (OUT may be `s3://bucket/key.parquet`).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use clap::Args;
use cohort_sync::exit;
use cohort_sync::export::{
    BadRowPolicy, ColumnType, Compression, ConvertOptions, DEFAULT_BATCH_ROWS,
    DEFAULT_ROW_GROUP_ROWS, GzipHint, convert_stream,
};
use cohort_sync::storage;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio_util::io::ReaderStream;

#[derive(Args, Debug)]
#[command(after_help = "\
Columns: `amplitude_id` is int64 (an empty one is a bad row), every other column utf8
unless --column-type says otherwise; an empty field is null. A repeated column name gets a
suffix: the second `amplitude_id` becomes `amplitude_id_2`.
Output: the file appears at OUT only when complete (S3: multipart upload; local: a staging
file `OUT#N` renamed into place). The footer carries --metadata pairs and cohort_sync.rows.
Exit codes: 0 done, 1 bad input or write failure (the message names the file, row and
line), 2 bad usage.")]
pub struct ConvertArgs {
    /// CSV input (gzip is detected by its magic bytes); `-` reads stdin.
    input: PathBuf,
    /// Parquet output: a local path or `s3://bucket/key.parquet`.
    output: String,
    /// Page compression: zstd, zstd:LEVEL (1-22), snappy, lz4 or none.
    #[arg(long, default_value = "zstd", value_parser = parse_compression)]
    compression: Compression,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = DEFAULT_ROW_GROUP_ROWS)]
    row_group_rows: usize,
    /// Rows per Arrow batch between parser and encoder.
    #[arg(long, default_value_t = DEFAULT_BATCH_ROWS, hide = true)]
    batch_rows: usize,
    /// What to do with a malformed row: fail (default) or skip (counted and reported).
    #[arg(long, default_value = "fail", value_parser = parse_policy)]
    on_bad_row: BadRowPolicy,
    /// Declare a column's type: NAME=int64|float64|boolean|utf8 (repeatable).
    #[arg(long = "column-type", value_name = "NAME=TYPE", value_parser = parse_column_type)]
    column_types: Vec<(String, ColumnType)>,
    /// Extra footer metadata: KEY=VALUE (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_pair)]
    metadata: Vec<(String, String)>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
}

fn parse_policy(s: &str) -> Result<BadRowPolicy, String> {
    s.parse()
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_column_type(s: &str) -> Result<(String, ColumnType), String> {
    let (name, ty) = parse_pair(s)?;
    Ok((name, ty.parse()?))
}

/// Where the output goes.
fn destination(output: &str) -> Result<(Arc<dyn ObjectStore>, Path, String), String> {
    if let Some(rest) = output.strip_prefix("s3://") {
        let (dir, name) = match rest.rsplit_once('/') {
            Some((dir, name)) if !name.is_empty() && !dir.is_empty() => (dir, name),
            _ => return Err(format!("{output}: expected s3://bucket/key.parquet")),
        };
        let loc =
            storage::open(&format!("s3://{dir}"), FsPath::new(".")).map_err(|e| e.to_string())?;
        let key = loc.key(name);
        let shown = loc.describe(&key);
        return Ok((loc.store, key, shown));
    }
    let (loc, key) = storage::open_local_file(FsPath::new(output)).map_err(|e| e.to_string())?;
    let shown = loc.describe(&key);
    Ok((loc.store, key, shown))
}

pub async fn convert(args: ConvertArgs) -> u8 {
    let mut column_types = BTreeMap::new();
    for (name, ty) in &args.column_types {
        if column_types.insert(name.clone(), *ty).is_some() {
            eprintln!("error: --column-type {name} is given twice");
            return exit::USAGE;
        }
    }
    let (store, key, shown) = match destination(&args.output) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let source_name = args.input.display().to_string();
    let mut opts = ConvertOptions::new(source_name.clone());
    opts.gzip = GzipHint::Auto;
    opts.column_types = column_types;
    opts.on_bad_row = args.on_bad_row;
    opts.batch_rows = args.batch_rows.max(1);
    opts.parquet.compression = args.compression;
    opts.parquet.row_group_rows = args.row_group_rows.max(1);
    opts.metadata = args.metadata.clone();

    let result = if args.input.as_os_str() == "-" {
        let body = ReaderStream::with_capacity(tokio::io::stdin(), 256 * 1024);
        convert_stream(body, &opts, store, &key).await
    } else {
        let file = match tokio::fs::File::open(&args.input).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: cannot open {source_name}: {e}");
                return exit::FAILED;
            }
        };
        let body = ReaderStream::with_capacity(file, 256 * 1024);
        convert_stream(body, &opts, store, &key).await
    };
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    for s in &stats.skipped_sample {
        eprintln!(
            "warning: {source_name}: skipped row {} (line {}): {}",
            s.row, s.line, s.reason
        );
    }
    if stats.skipped_rows > stats.skipped_sample.len() as u64 {
        eprintln!(
            "warning: {source_name}: {} more rows skipped",
            stats.skipped_rows - stats.skipped_sample.len() as u64
        );
    }
    let secs = stats.duration.as_secs_f64();
    if args.json {
        let v = serde_json::json!({
            "input": source_name,
            "output": shown,
            "rows": stats.rows,
            "skipped_rows": stats.skipped_rows,
            "skipped_sample": stats.skipped_sample.iter().map(|s| serde_json::json!({
                "row": s.row, "line": s.line, "reason": s.reason,
            })).collect::<Vec<_>>(),
            "body_bytes": stats.body_bytes,
            "bytes_written": stats.bytes_written,
            "sha256": stats.sha256,
            "columns": stats.columns,
            "duration_s": secs,
        });
        println!("{v}");
    } else {
        println!(
            "{shown}: {} rows ({} skipped), {} bytes read, {} bytes written in {secs:.3} s, sha256 {}",
            stats.rows, stats.skipped_rows, stats.body_bytes, stats.bytes_written, stats.sha256
        );
    }
    exit::OK
}
