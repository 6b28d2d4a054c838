//! Runs only the reverse diff on two local files and writes the two lists, for the
//! benchmark (`scripts/bench/case_diff.py`) and for inspecting a CRM list by hand:
//!
//! `cargo run --release --example diff_bench -- SOURCE BASELINE [--source-column C]
//!  [--baseline-column C] [--id-kind user_id|amplitude_id] [--out DIR] [--threads N]`
//!
//! Prints the counts as one JSON line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use cohort_sync::amplitude::types::IdKind;
use cohort_sync::reverse::lists::write_list;
use cohort_sync::reverse::local_diff::diff_local_files;
use cohort_sync::reverse::source::ColumnSpec;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut files = Vec::new();
    let mut source_column = "user_id".to_string();
    let mut baseline_column: Option<String> = None;
    let mut kind = IdKind::UserId;
    let mut out: Option<PathBuf> = None;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--source-column" => source_column = value()?,
            "--baseline-column" => baseline_column = Some(value()?),
            "--id-kind" => {
                kind = match value()?.as_str() {
                    "user_id" => IdKind::UserId,
                    "amplitude_id" => IdKind::AmplitudeId,
                    other => return Err(format!("unknown id kind {other}")),
                }
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            "--threads" => threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => files.push(PathBuf::from(a)),
        }
    }
    let [source, baseline] = files.as_slice() else {
        return Err("usage: diff_bench SOURCE BASELINE [options]".into());
    };
    let baseline_column = baseline_column.unwrap_or_else(|| match kind {
        IdKind::UserId => "user_id".into(),
        IdKind::AmplitudeId => "amplitude_id".into(),
    });
    let start = Instant::now();
    let mut bspec = ColumnSpec::new(&baseline_column, kind);
    bspec.first_of_repeated = true;
    let d = diff_local_files(
        source,
        &ColumnSpec::new(&source_column, kind),
        baseline,
        &bspec,
        threads,
    )
    .map_err(|e| e.to_string())?;
    let diffed = start.elapsed();
    if let Some(dir) = &out {
        write_list(&dir.join("add.txt"), &d.diff.add).map_err(|e| e.to_string())?;
        write_list(&dir.join("remove.txt"), &d.diff.remove).map_err(|e| e.to_string())?;
    }
    println!(
        "{}",
        serde_json::json!({
            "add": d.diff.add.len(),
            "remove": d.diff.remove.len(),
            "counts": d.diff.counts,
            "source": d.source,
            "baseline": d.baseline,
            "diff_ms": diffed.as_millis() as u64,
            "total_ms": start.elapsed().as_millis() as u64,
        })
    );
    Ok(())
}
