//! Parquet writer settings for a file: compression, row-group size, and which columns get
//! dictionary encoding. Dictionary encoding pays off for repetitive columns (countries,
//! plans) and is wasted work for nearly unique ones (ids): every value is hashed into the
//! dictionary until it overflows, in every row group. So the first batch is sampled and a
//! column whose sampled values are mostly distinct is written without a dictionary.

use std::collections::HashSet;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::options::{Compression, ParquetOptions};

/// A column's dictionary may grow to this many bytes per row group before the column
/// falls back to plain pages (parquet's default is 1 MiB). Repetitive columns stay far
/// below it; a column that outgrows it gains little from a dictionary, and its fallback
/// (compressing the dictionary page, re-encoding the buffered values) is a memory spike
/// in every row group.
pub const DICTIONARY_PAGE_BYTES: usize = 256 * 1024;

/// Values sampled per column from the first batch.
pub const DICTIONARY_SAMPLE: usize = 8192;

/// A column with more distinct values than this share of the sample gets no dictionary.
pub const DICTIONARY_MAX_DISTINCT: f64 = 0.5;

/// Writer settings; `first` (the first batch, if any) decides the dictionary per column.
pub fn writer_properties(
    opts: &ParquetOptions,
    first: Option<&RecordBatch>,
) -> Result<WriterProperties, String> {
    let compression = match opts.compression {
        Compression::Zstd(level) => PqCompression::ZSTD(
            ZstdLevel::try_new(level).map_err(|e| format!("zstd level {level}: {e}"))?,
        ),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .set_created_by(concat!("cohort-sync ", env!("CARGO_PKG_VERSION")).to_string());
    if let Some(batch) = first {
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            if mostly_distinct(column.as_ref()) {
                builder = builder
                    .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
            }
        }
    }
    Ok(builder.build())
}

/// Whether most sampled non-null values of the column differ from each other. Only
/// strings and 64-bit integers are looked at (the types the parser produces in bulk).
fn mostly_distinct(column: &dyn Array) -> bool {
    let any = column.as_any();
    let (seen, distinct) = if let Some(a) = any.downcast_ref::<StringArray>() {
        let mut set = HashSet::new();
        let mut seen = 0;
        for v in a.iter().flatten().take(DICTIONARY_SAMPLE) {
            seen += 1;
            set.insert(v);
        }
        (seen, set.len())
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        let mut set = HashSet::new();
        let mut seen = 0;
        for v in a.iter().flatten().take(DICTIONARY_SAMPLE) {
            seen += 1;
            set.insert(v);
        }
        (seen, set.len())
    } else {
        return false;
    };
    // Too few values to judge: keep the default (dictionary on).
    seen >= 256 && distinct as f64 > seen as f64 * DICTIONARY_MAX_DISTINCT
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn unique_columns_lose_the_dictionary() {
        let ids: Vec<i64> = (0..1000).collect();
        let plans: Vec<&str> = (0..1000).map(|i| ["free", "pro"][i % 2]).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("plan", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(plans)),
            ],
        )
        .expect("batch");
        let props = writer_properties(&ParquetOptions::default(), Some(&batch)).expect("props");
        assert!(!props.dictionary_enabled(&ColumnPath::from("id")));
        assert!(props.dictionary_enabled(&ColumnPath::from("plan")));
    }
}
