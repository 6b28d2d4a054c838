//! Criterion micro-benchmarks of the export's stages on their own, so a regression shows
//! which stage caused it: CSV → Arrow (the export's record splitter, against a csv-async
//! reader filling the same column builders as the baseline) and Arrow → Parquet
//! (zstd level 3, and no compression to isolate the encoder).
//!
//! The CSV → Arrow group measures the benchmark thread's CPU time (from
//! `/proc/thread-self/schedstat`, nanoseconds) on a single-threaded runtime, so other
//! processes on a busy machine do not blur the comparison; the encode group (several
//! threads) measures wall time.
//!
//! The workload is generated in memory: 100,000 Amplitude-like rows (quoted fields,
//! commas, doubled quotes, non-ASCII, ~6% empty user ids), the same shape as the
//! end-to-end benchmark's file (scripts/bench/gen.py).

use std::collections::BTreeMap;
use std::hint::black_box;

use bytes::Bytes;
use cohort_sync::export::{
    BatchBuilder, Compression, ConvertOptions, DEFAULT_BATCH_ROWS, ParquetOptions,
    columns_from_header, encode_to_parquet, parse_batches, parse_to_batches,
};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ROWS: usize = 100_000;

fn workload() -> Vec<u8> {
    let countries = [
        "United States",
        "Germany",
        "Côte d'Ivoire",
        "Japan",
        "España",
    ];
    let cities = [
        "New York",
        "Berlin",
        "東京",
        "São Paulo",
        "Kraków",
        "Zürich",
    ];
    let plans = ["free", "pro", "enterprise, annual", "trial"];
    let devices = [
        "iPhone 15 \"\"Pro\"\"",
        "Pixel 8",
        "ThinkPad, X1",
        "Chromebook",
    ];
    let mut s = String::from(
        "\"amplitude_id\",\"user_id\",\"country\",\"city\",\"plan\",\"device\",\"ltv\"\n",
    );
    let mut x: u64 = 20240601;
    for i in 0..ROWS as u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = x >> 11;
        let user = if r % 100 < 6 {
            String::new()
        } else {
            format!("u{:010x}@mail.io", (r >> 7) & 0xFF_FFFF_FFFF)
        };
        s.push_str(&format!(
            "\"{}\",\"{user}\",\"{}\",\"{}\",\"{}\",\"{}\",\"{:.2}\"\n",
            100_000_000_000 + i * 37 + (r & 31),
            countries[(r >> 20) as usize % countries.len()],
            cities[(r >> 24) as usize % cities.len()],
            plans[(r >> 28) as usize % plans.len()],
            devices[(r >> 32) as usize % devices.len()],
            ((r >> 36) % 100_000) as f64 / 100.0,
        ));
    }
    s.into_bytes()
}

fn chunks(body: &[u8]) -> Vec<Result<Bytes, std::io::Error>> {
    body.chunks(256 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

/// The baseline: csv-async's byte records (from the same chunk stream) pushed field by
/// field into the same column builders, each field's UTF-8 checked on its own.
async fn csv_async_rows(body: &[u8]) -> usize {
    let reader = tokio_util::io::StreamReader::new(futures::stream::iter(chunks(body)));
    let mut rdr = csv_async::AsyncReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .create_reader(reader);
    let mut record = csv_async::ByteRecord::new();
    let mut header = Vec::new();
    if rdr.read_byte_record(&mut record).await.unwrap_or(false) {
        header = record
            .iter()
            .map(|f| String::from_utf8_lossy(f).to_string())
            .collect();
    }
    let columns = columns_from_header(&header, &BTreeMap::new()).expect("columns");
    let mut builder = BatchBuilder::new(&columns, DEFAULT_BATCH_ROWS);
    let mut rows = 0;
    while rdr.read_byte_record(&mut record).await.unwrap_or(false) {
        let ok = record.len() == builder.width()
            && record
                .iter()
                .enumerate()
                .all(|(i, f)| builder.push_bytes(i, f).is_ok());
        if ok {
            builder.end_row();
        } else {
            builder.rollback_row();
        }
        if builder.is_full() {
            rows += black_box(builder.finish().expect("batch")).num_rows();
        }
    }
    rows + builder.finish().expect("batch").num_rows()
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .expect("/proc/thread-self/schedstat")
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        for v in values {
            *v /= 1e6;
        }
        "ms (thread CPU)"
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let bytes = match t {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => *b as f64,
            Throughput::Bits(b) => *b as f64 / 8.0,
            _ => 0.0,
        };
        for v in values {
            *v = bytes / (*v / 1e9) / (1024.0 * 1024.0);
        }
        "MiB/s (per CPU second)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn parse_bench(c: &mut Criterion<ThreadCpu>) {
    let body = workload();
    // One thread does everything, so its CPU time is the whole cost.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let mut g = c.benchmark_group("csv_to_arrow");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(20);
    g.bench_function("export_splitter", |b| {
        b.iter(|| {
            let opts = ConvertOptions::new("bench");
            let mut rows = 0;
            rt.block_on(parse_batches(
                futures::stream::iter(chunks(&body)),
                &opts,
                |batch| rows += black_box(batch).num_rows(),
            ))
            .expect("parse");
            assert_eq!(rows, ROWS);
        })
    });
    g.bench_function("csv_async_baseline", |b| {
        b.iter(|| {
            let rows = rt.block_on(csv_async_rows(&body));
            assert_eq!(rows, ROWS);
        })
    });
    g.finish();
}

fn encode_bench(c: &mut Criterion) {
    let body = workload();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (schema, batches) = rt
        .block_on(parse_to_batches(
            futures::stream::iter(chunks(&body)),
            &ConvertOptions::new("bench"),
        ))
        .expect("parse");
    let mut g = c.benchmark_group("arrow_to_parquet");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(10);
    for (name, compression) in [("zstd3", Compression::Zstd(3)), ("none", Compression::None)] {
        let opts = ParquetOptions {
            compression,
            ..ParquetOptions::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let out = encode_to_parquet(schema.clone(), batches.clone(), &opts, Vec::new())
                    .expect("encode");
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = parse;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = parse_bench
}
criterion_group!(encode, encode_bench);
criterion_main!(parse, encode);
