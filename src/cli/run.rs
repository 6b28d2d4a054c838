//! `cohort-sync run FILE... [--dry-run] [--force] [--retry-rejected] [--report FILE] [--metrics-file PATH]` and
//! `cohort-sync plan FILE...`: load every pipeline (all must be valid before anything runs),
//! execute them concurrently (pipelines for the same app share its rate limits), print a
//! summary per pipeline and write the JSON run report.

use std::path::{Path, PathBuf};

use clap::Args;
use cohort_sync::config::{self, Pipeline, PipelineSpec};
use cohort_sync::exit;
use cohort_sync::export::{ConvertOptions, ParquetOptions};
use cohort_sync::lineage::Emitter;
use cohort_sync::quota::time_scale_from_env;
use cohort_sync::runner::context::{RunContext, RunMode};
use cohort_sync::runner::export::{ExportSettings, execute as execute_export, request_validity};
use cohort_sync::runner::plan::PlanOptions;
use cohort_sync::runner::report::{PipelineReport, RunReport, combine_exit_codes};
use cohort_sync::text::escape;
use tracing::Instrument;

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
    /// Send again the ids Amplitude rejected in earlier runs (held back otherwise).
    #[arg(long)]
    retry_rejected: bool,
    /// Write the JSON run report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write Prometheus metrics of the run here (text format, for node_exporter's textfile
    /// collector: name it `*.prom` in its directory). Replaced whole at the end of the run.
    #[arg(long, value_name = "PATH", env = "COHORT_SYNC_METRICS_FILE")]
    metrics_file: Option<PathBuf>,
    /// No live progress display (it is shown only when stderr is a terminal and logs are
    /// human; logs and the summary are unchanged).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Plan as `run --force` would run.
    #[arg(long)]
    force: bool,
    /// Plan as `run --retry-rejected` would run.
    #[arg(long)]
    retry_rejected: bool,
    /// Write the JSON plan report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also forecast the month from each export pipeline's run history: when the budget
    /// runs out under today's settings, the shortest `refresh` that lasts the month, and
    /// what `pace = "even"` would defer.
    #[arg(long)]
    month: bool,
}

pub async fn run(args: RunArgs, log_format: super::LogFormat) -> u8 {
    let mode = if args.dry_run {
        RunMode::DryRun
    } else {
        RunMode::Apply
    };
    let outputs = Outputs {
        report: args.report.as_deref(),
        metrics: args.metrics_file.as_deref(),
        progress: super::progress::wanted(args.quiet, log_format == super::LogFormat::Json),
    };
    let flags = Flags {
        force: args.force,
        retry_rejected: args.retry_rejected,
        month: false,
    };
    execute(&args.files, mode, flags, outputs).await
}

/// Where a command writes what it did, besides the summary.
#[derive(Default)]
struct Outputs<'a> {
    report: Option<&'a Path>,
    metrics: Option<&'a Path>,
    /// Show the live progress display on stderr (a terminal).
    progress: bool,
}

/// The run's switches.
#[derive(Debug, Clone, Copy)]
struct Flags {
    force: bool,
    retry_rejected: bool,
    /// `plan --month`: add the month's forecast.
    month: bool,
}

pub async fn plan(args: PlanArgs) -> u8 {
    let outputs = Outputs {
        report: args.report.as_deref(),
        ..Outputs::default()
    };
    let flags = Flags {
        force: args.force,
        retry_rejected: args.retry_rejected,
        month: args.month,
    };
    execute(&args.files, RunMode::Plan, flags, outputs).await
}

/// A pipeline ready to execute.
enum Prepared {
    Export(Box<ExportSettings>),
    Reverse(Box<Pipeline>),
}

impl Prepared {
    fn name(&self) -> &str {
        match self {
            Prepared::Export(s) => &s.name,
            Prepared::Reverse(p) => &p.name,
        }
    }
}

async fn execute(files: &[PathBuf], mode: RunMode, flags: Flags, outputs: Outputs<'_>) -> u8 {
    let (prepared, pipelines): (Vec<Prepared>, Vec<Pipeline>) = match prepare_all(files) {
        Ok(p) => p.into_iter().unzip(),
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
    let mut ctx = RunContext::new(mode, flags.force, time_scale_from_env(), base_dir);
    ctx.retry_rejected = flags.retry_rejected;
    ctx.forecast = flags.month;
    let display = outputs.progress.then(super::progress::Display::start);
    if let Some(d) = &display {
        ctx.progress = cohort_sync::runner::progress::Progress::to(d.sink());
    }
    tracing::info!(run_id = %ctx.run_id, mode = mode.as_str(), pipelines = prepared.len(), "starting");
    let signals = super::signals::stop_on_signals(ctx.clone());
    // OpenLineage events: only a run that applies emits them (plan / dry run: none).
    let lineage: Vec<Option<Emitter>> = pipelines
        .iter()
        .map(|p| {
            mode.applies()
                .then(|| Emitter::new(p, &ctx.base_dir))
                .flatten()
        })
        .collect();

    let runs = prepared.iter().zip(&lineage).map(|(p, lineage)| {
        let ctx = &ctx;
        // Every event of a pipeline's work carries the run id and the pipeline's name.
        let span = tracing::info_span!("pipeline", run_id = %ctx.run_id, pipeline = %p.name());
        async move {
            if let Some(emitter) = lineage {
                emitter.start(ctx).await;
            }
            match p {
                Prepared::Export(settings) => execute_export(settings, ctx).await,
                Prepared::Reverse(pipeline) => cohort_sync::reverse::execute(pipeline, ctx).await,
            }
        }
        .instrument(span)
    });
    let pipelines: Vec<PipelineReport> = futures::future::join_all(runs).await;
    signals.abort();
    if let Some(d) = display {
        d.finish();
    }
    let mut report = RunReport {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        run_id: ctx.run_id.clone(),
        mode: mode.as_str().to_string(),
        started_at: ctx.started_at,
        finished_at: cohort_sync::clock::now(),
        pipelines,
        rate_limited_responses: ctx.answers_429.load(std::sync::atomic::Ordering::Relaxed),
        exit_code: 0,
    };
    if mode.applies() {
        append_history(&prepared, &mut report, &ctx).await;
    }
    report.exit_code = combine_exit_codes(report.pipelines.iter().map(|p| p.exit_code));
    if let Some(signal) = ctx.stopped_by() {
        report.exit_code = exit::stopped_by_signal(signal);
    }
    let ends = lineage
        .iter()
        .zip(&report.pipelines)
        .filter_map(|(l, p)| l.as_ref().map(|l| l.finish(&ctx, p)));
    futures::future::join_all(ends).await;
    let mut exit_code = report.exit_code;
    if let Some(path) = outputs.metrics {
        if mode.applies() {
            if let Err(e) = cohort_sync::runner::metrics::write(path, &report) {
                tracing::error!(
                    "writing the metrics file {}: {e}; check that its folder exists and is writable (the data of this run is written: its report and history say what was done)",
                    path.display()
                );
                exit_code = exit::FAILED.max(exit_code);
            }
        } else {
            tracing::info!(
                "a dry run writes no metrics: {} is left as it was",
                path.display()
            );
        }
    }
    summary::print(&report);
    cohort_sync::crash::point("run.report.before");
    if let Some(path) = outputs.report
        && let Err(e) = write_report(path, &report)
    {
        eprintln!("error: writing the report to {}: {e}", path.display());
        return exit::FAILED.max(exit_code);
    }
    exit_code
}

/// Adds each pipeline's rows to its sync history (`runner::history`): an export's under its
/// output, a reverse's under `reconcile.snapshots` (the export output it reads) or, without
/// one, under its state. A failed write fails the pipeline (exit 1): its data is written,
/// but the record a warehouse reads of it is missing.
async fn append_history(prepared: &[Prepared], report: &mut RunReport, ctx: &RunContext) {
    let run = report.clone();
    for (p, pipeline) in prepared.iter().zip(report.pipelines.iter_mut()) {
        let url = match p {
            Prepared::Export(s) => s.output_url.clone(),
            Prepared::Reverse(pl) => match &pl.spec {
                PipelineSpec::Reverse(spec) => spec.reconcile.snapshots.as_ref().map_or_else(
                    || pl.state.url.as_str().to_string(),
                    |s| s.as_str().to_string(),
                ),
                PipelineSpec::Export(_) => continue,
            },
        };
        let written = match cohort_sync::storage::open(&url, &ctx.base_dir) {
            Ok(location) => cohort_sync::runner::history::append(&location, &run, pipeline).await,
            Err(e) => Err(e.to_string()),
        };
        match written {
            Ok(described) => pipeline.history = Some(described),
            Err(e) => {
                let message = format!(
                    "the sync history of this run was not written ({e}); the cohorts' data is, as the report says: check access to {url} — the next run writes its own history file"
                );
                tracing::error!(pipeline = %pipeline.name, "{message}");
                pipeline.error.get_or_insert(message);
                if pipeline.exit_code != exit::USAGE {
                    pipeline.exit_code = exit::FAILED;
                }
            }
        }
    }
}

/// Loads and checks every file; all errors are collected so the user sees them at once.
fn prepare_all(files: &[PathBuf]) -> Result<Vec<(Prepared, Pipeline)>, Vec<String>> {
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

fn prepare(file: &Path) -> Result<(Prepared, Pipeline), String> {
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
        PipelineSpec::Reverse(_) => Ok((Prepared::Reverse(Box::new(pipeline.clone())), pipeline)),
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
                changes_layout: spec
                    .output
                    .changes
                    .then(|| spec.output.changes_layout.as_str().to_string()),
                state_url: pipeline.state.url.as_str().to_string(),
                convert: convert_options(download, &spec.output),
            };
            Ok((Prepared::Export(Box::new(settings)), pipeline))
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
