//! `cohort-sync run FILE... [--dry-run] [--force] [--report FILE]` and
//! `cohort-sync plan FILE...`: load every pipeline (all must be valid before anything runs),
//! execute them concurrently (pipelines for the same app share its rate limits), print a
//! summary per pipeline and write the JSON run report.

use std::path::{Path, PathBuf};

use clap::Args;
use cohort_sync::config::{self, Pipeline, PipelineSpec};
use cohort_sync::exit;
use cohort_sync::export::{ConvertOptions, ParquetOptions};
use cohort_sync::quota::time_scale_from_env;
use cohort_sync::runner::context::{RunContext, RunMode};
use cohort_sync::runner::export::{ExportSettings, execute as execute_export, request_validity};
use cohort_sync::runner::plan::PlanOptions;
use cohort_sync::runner::report::{PipelineReport, RunReport, combine_exit_codes};
use cohort_sync::text::escape;

use super::summary;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Decide and report what would be done (and write reverse id lists) without doing it.
    #[arg(long)]
    dry_run: bool,
    /// Download unchanged cohorts again; apply reverse plans the removal guard refused.
    #[arg(long)]
    force: bool,
    /// Write the JSON run report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Plan as `run --force` would run.
    #[arg(long)]
    force: bool,
    /// Write the JSON plan report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also forecast the month from each export pipeline's run history: when the budget
    /// runs out under today's settings, the shortest `refresh` that lasts the month, and
    /// what `pace = "even"` would defer.
    #[arg(long)]
    month: bool,
}

pub async fn run(args: RunArgs) -> u8 {
    let mode = if args.dry_run {
        RunMode::DryRun
    } else {
        RunMode::Apply
    };
    execute(&args.files, mode, args.force, false, args.report.as_deref()).await
}

pub async fn plan(args: PlanArgs) -> u8 {
    execute(
        &args.files,
        RunMode::Plan,
        args.force,
        args.month,
        args.report.as_deref(),
    )
    .await
}

/// A pipeline ready to execute.
enum Prepared {
    Export(Box<ExportSettings>),
    Reverse(Box<Pipeline>),
}

async fn execute(
    files: &[PathBuf],
    mode: RunMode,
    force: bool,
    month: bool,
    report_path: Option<&Path>,
) -> u8 {
    let prepared = match prepare_all(files) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("{}", escape(&e.to_string()));
            }
            return exit::USAGE;
        }
    };
    let base_dir = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read the current directory: {e}");
            return exit::FAILED;
        }
    };
    let mut ctx = RunContext::new(mode, force, time_scale_from_env(), base_dir);
    ctx.forecast = month;
    tracing::info!(run_id = %ctx.run_id, mode = mode.as_str(), pipelines = prepared.len(), "starting");
    let signals = super::signals::stop_on_signals(ctx.clone());

    let runs = prepared.iter().map(|p| {
        let ctx = &ctx;
        async move {
            match p {
                Prepared::Export(settings) => execute_export(settings, ctx).await,
                Prepared::Reverse(pipeline) => cohort_sync::reverse::execute(pipeline, ctx).await,
            }
        }
    });
    let pipelines: Vec<PipelineReport> = futures::future::join_all(runs).await;
    signals.abort();
    let mut exit_code = combine_exit_codes(pipelines.iter().map(|p| p.exit_code));
    if let Some(signal) = ctx.stopped_by() {
        exit_code = exit::stopped_by_signal(signal);
    }
    let report = RunReport {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        run_id: ctx.run_id.clone(),
        mode: mode.as_str().to_string(),
        started_at: ctx.started_at,
        finished_at: cohort_sync::clock::now(),
        pipelines,
        exit_code,
    };
    summary::print(&report);
    cohort_sync::crash::point("run.report.before");
    if let Some(path) = report_path
        && let Err(e) = write_report(path, &report)
    {
        eprintln!("error: writing the report to {}: {e}", path.display());
        return exit::FAILED.max(exit_code);
    }
    exit_code
}

/// Loads and checks every file; all errors are collected so the user sees them at once.
fn prepare_all(files: &[PathBuf]) -> Result<Vec<Prepared>, Vec<String>> {
    let mut prepared = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match prepare(file) {
            Ok(p) => prepared.push(p),
            Err(e) => errors.push(e),
        }
    }
    // The files against each other: two exports writing the same files, shared state.
    let loaded: Vec<Pipeline> = files.iter().filter_map(|f| config::load(f).ok()).collect();
    errors.extend(
        config::check_together(&loaded)
            .iter()
            .map(ToString::to_string),
    );
    if errors.is_empty() {
        Ok(prepared)
    } else {
        Err(errors)
    }
}

fn prepare(file: &Path) -> Result<Prepared, String> {
    let pipeline = config::load(file).map_err(|e| e.to_string())?;
    let mut resolved = pipeline.connection.resolve().map_err(|e| e.to_string())?;
    if pipeline.connection.insecure() {
        tracing::warn!(
            pipeline = %pipeline.name,
            "base_url {} is plain http:// to a host that is not loopback (connection.allow_insecure_http = true): the API key and secret travel unencrypted",
            pipeline.connection.base_url()
        );
    }
    resolved.options.transfer = pipeline.download.transfer_limits(time_scale_from_env());
    match &pipeline.spec {
        PipelineSpec::Reverse(_) => Ok(Prepared::Reverse(Box::new(pipeline))),
        PipelineSpec::Export(spec) => {
            let time_scale = time_scale_from_env();
            let download = &pipeline.download;
            let settings = ExportSettings {
                file: file.display().to_string(),
                name: pipeline.name.clone(),
                connection: resolved.options,
                app_key: resolved.app_key,
                app_id: pipeline.connection.app_id,
                selection: spec.select.selection(),
                plan: PlanOptions {
                    skip_unchanged: spec.quota.skip_unchanged,
                    force: false,
                    props: download.wants_props(),
                    prop_keys: download.prop_keys.clone(),
                    reserve: spec.quota.reserve,
                    priority: spec.quota.priority,
                    request_validity: request_validity(time_scale),
                    refresh: spec.refresh_targets(),
                    pace: spec.quota.pace,
                },
                poll: download.poll_settings(),
                max_parallel: spec.quota.max_parallel,
                output_url: spec.output.url.as_str().to_string(),
                layout: spec.output.layout.as_str().to_string(),
                state_url: pipeline.state.url.as_str().to_string(),
                convert: convert_options(download, &spec.output),
            };
            Ok(Prepared::Export(Box::new(settings)))
        }
    }
}

/// The parser and Parquet settings of an export pipeline (the source name, gzip hint and
/// footer metadata are set per cohort by the runner).
fn convert_options(download: &config::Download, output: &config::Output) -> ConvertOptions {
    let mut opts = ConvertOptions::new("");
    opts.column_types = download.column_types.clone();
    opts.on_bad_row = download.on_bad_row;
    opts.batch_rows = download.batch_rows;
    opts.limits = download.limits.csv_limits();
    opts.parquet = ParquetOptions {
        compression: output.compression(),
        row_group_rows: output.row_group_rows,
    };
    opts
}

/// Writes the report next to its final name, then renames: never a half-written report.
/// It lists skipped and invalid ids: readable by its owner only (0600).
fn write_report(path: &Path, report: &RunReport) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    cohort_sync::storage::write_private(path, &text)
}
