//! `cohort-sync convert IN.csv[.gz] OUT.parquet`: the export's CSV→Parquet path on a
//! local file (OUT may be `s3://bucket/key.parquet`).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use clap::Args;
use cohort_sync::exit;
use cohort_sync::export::{
    BadRowPolicy, ColumnType, Compression, ConvertOptions, CsvLimits, DEFAULT_BATCH_ROWS,
    DEFAULT_MAX_COLUMNS, DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_GZIP_RATIO, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_ROW_BYTES, DEFAULT_ROW_GROUP_ROWS, GzipHint, RaiseWith, convert_stream, read_ahead,
};
use cohort_sync::storage;
use cohort_sync::text::escape;
use object_store::ObjectStore;
use object_store::path::Path;

#[derive(Args, Debug)]
#[command(after_help = "\
Columns: `amplitude_id` is int64 (an empty one is a bad row), every other column utf8
unless --column-type says otherwise; an empty field is null. A repeated column name gets a
suffix: the second `amplitude_id` becomes `amplitude_id_2`.
Output: the file appears at OUT only when complete (S3: multipart upload; local: a staging
file `OUT#N` renamed into place). The footer carries --metadata pairs and cohort_sync.rows.
OUT must name the file itself: a directory (or a path ending in `/`) is refused, and so is
OUT being IN (also through `./`, symbolic or hard links).
Limits: a field, a row, the header or the gzip expansion past its --max-… limit stops the
conversion (naming the limit, row, line and column) before more of that record is read,
so memory stays bounded whatever the input; the defaults are far above any cohort file.
Exit codes: 0 done, 1 bad input or write failure (the message names the file, row and
line), 2 bad usage.

Examples:
  cohort-sync convert cohort.csv.gz cohort.parquet
  cohort-sync convert - s3://warehouse/cohorts/c.parquet --compression zstd:9 < cohort.csv")]
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
    /// Longest field, in bytes as written (quotes included).
    #[arg(long, default_value_t = DEFAULT_MAX_FIELD_BYTES, value_parser = at_least_one)]
    max_field_bytes: usize,
    /// Longest row, in bytes as written.
    #[arg(long, default_value_t = DEFAULT_MAX_ROW_BYTES, value_parser = at_least_one)]
    max_row_bytes: usize,
    /// Longest header row, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_HEADER_BYTES, value_parser = at_least_one)]
    max_header_bytes: usize,
    /// Most columns in the header.
    #[arg(long, default_value_t = DEFAULT_MAX_COLUMNS, value_parser = at_least_one)]
    max_columns: usize,
    /// Most bytes a gzip input may expand to per compressed byte (checked after 8 MiB).
    #[arg(long, default_value_t = DEFAULT_MAX_GZIP_RATIO, value_parser = clap::value_parser!(u64).range(1..))]
    max_gzip_ratio: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got {s:?}")),
    }
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

/// Refuses an input that is a directory, an output that is a directory (or written as
/// one), and an output that is the input itself.
fn check_paths(input: &FsPath, output: &str) -> Result<(), String> {
    let stdin = input.as_os_str() == "-";
    if !stdin && input.is_dir() {
        return Err(format!(
            "{} is a directory: give the CSV file to convert",
            input.display()
        ));
    }
    if output.starts_with("s3://") {
        return Ok(());
    }
    let out = FsPath::new(output.strip_prefix("file://").unwrap_or(output));
    if output.ends_with('/') || out.is_dir() {
        let stem = if stdin {
            "out".to_string()
        } else {
            input_stem(input)
        };
        return Err(format!(
            "{output} is a directory: give the Parquet file's path, e.g. {}",
            out.join(format!("{stem}.parquet")).display()
        ));
    }
    if !stdin && same_file(input, out) {
        return Err(format!(
            "{output} is the input file: convert writes a new file, choose another output path"
        ));
    }
    Ok(())
}

/// The input's file name without `.gz` and `.csv`.
fn input_stem(input: &FsPath) -> String {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let name = name.strip_suffix(".csv").unwrap_or(name);
    name.to_string()
}

/// Whether both paths exist and are one file: the same canonical path (`./`, `..`,
/// symbolic links), or on unix the same device and inode (hard links).
fn same_file(a: &FsPath, b: &FsPath) -> bool {
    let (Ok(ca), Ok(cb)) = (std::fs::canonicalize(a), std::fs::canonicalize(b)) else {
        return false;
    };
    if ca == cb {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(&ca), std::fs::metadata(&cb)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    false
}

/// Where the output goes.
fn destination(output: &str) -> Result<(Arc<dyn ObjectStore>, Path, String), String> {
    storage::check_location(output)?;
    if storage::is_cloud_url(output) {
        let scheme = output.split("://").next().unwrap_or("s3");
        let (dir, name) = match output.rsplit_once('/') {
            Some((dir, name)) if !name.is_empty() && dir.len() > scheme.len() + 3 => (dir, name),
            _ => return Err(format!("{output}: expected {scheme}://bucket/key.parquet")),
        };
        let loc = storage::open(dir, FsPath::new(".")).map_err(|e| e.to_string())?;
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
    if let Err(e) = check_paths(&args.input, &args.output) {
        eprintln!("error: {}", escape(&e.to_string()));
        return exit::USAGE;
    }
    let (store, key, shown) = match destination(&args.output) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}", escape(&e.to_string()));
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
    opts.limits = CsvLimits {
        max_field_bytes: args.max_field_bytes,
        max_row_bytes: args.max_row_bytes,
        max_header_bytes: args.max_header_bytes,
        max_columns: args.max_columns,
        max_gzip_ratio: args.max_gzip_ratio,
        raise_with: RaiseWith::ConvertFlags,
    };

    let input: Box<dyn std::io::Read + Send> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(&args.input) {
            Ok(file) => Box::new(file),
            Err(e) => {
                eprintln!("error: cannot open {source_name}: {e}");
                return exit::FAILED;
            }
        }
    };
    let result = match read_ahead(input) {
        Ok(body) => convert_stream(body, &opts, store, &key).await,
        Err(e) => {
            eprintln!("error: cannot start reading {source_name}: {e}");
            return exit::FAILED;
        }
    };
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", escape(&e.to_string()));
            return exit::FAILED;
        }
    };
    for s in &stats.skipped_sample {
        eprintln!(
            "warning: {}: skipped row {} (line {}): {}",
            escape(&source_name),
            s.row,
            s.line,
            escape(&s.reason.to_string())
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
