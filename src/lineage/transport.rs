//! Sending a pipeline's events: an HTTP POST (with the optional bearer key) or an append
//! to a local NDJSON file, each bounded by the pipeline's `timeout_secs`. A failure is
//! warned about once and the pipeline's later events are dropped: lineage never fails a
//! sync, and a dead endpoint costs at most one timeout.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::event::{Dataset, Ended, JobInfo, run_uuid};
use crate::config::{LineageTransport, Pipeline, PipelineSpec, Secret, Target};
use crate::runner::context::RunContext;
use crate::runner::report::PipelineReport;

enum Sink {
    Http {
        client: reqwest::Client,
        url: String,
        key: Option<Secret>,
    },
    File {
        path: PathBuf,
    },
}

/// The lineage of one pipeline: what its events say and where they go.
pub struct Emitter {
    job: JobInfo,
    pipeline: String,
    /// The pipeline file, named in the warning.
    file: String,
    sink: Sink,
    timeout: Duration,
    /// Set by the first failure: later events are dropped.
    failed: AtomicBool,
}

impl Emitter {
    /// The pipeline's emitter, if it has a `[lineage]` section (`None` too when the HTTP
    /// client cannot be built: warned about, the sync goes on).
    pub fn new(pipeline: &Pipeline, base_dir: &Path) -> Option<Emitter> {
        let l = pipeline.lineage.as_ref()?;
        let timeout = Duration::from_secs(l.timeout_secs.clamp(1, 60));
        let sink = match l.transport()? {
            LineageTransport::Http { url } => {
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .user_agent(concat!("cohort-sync/", env!("CARGO_PKG_VERSION")))
                    .build();
                match client {
                    Ok(client) => Sink::Http {
                        client,
                        url,
                        key: l.api_key.clone(),
                    },
                    Err(e) => {
                        tracing::warn!(pipeline = %pipeline.name, "lineage: cannot set up the HTTP client ({e}); this run emits no lineage events");
                        return None;
                    }
                }
            }
            LineageTransport::File { path } => Sink::File {
                path: if path.is_absolute() {
                    path
                } else {
                    base_dir.join(path)
                },
            },
        };
        let (job_type, source, target_cohort) = match &pipeline.spec {
            PipelineSpec::Export(_) => ("EXPORT", None, None),
            PipelineSpec::Reverse(r) => (
                "REVERSE",
                Some(Dataset::of_location(r.source.url.as_str(), base_dir)),
                match &r.target {
                    Target::Existing { cohort_id } => Some(cohort_id.clone()),
                    Target::Create(_) => None,
                },
            ),
        };
        Some(Emitter {
            job: JobInfo {
                namespace: l.namespace.clone(),
                name: l.job_name.clone().unwrap_or_else(|| pipeline.name.clone()),
                job_type,
                base_url: pipeline.connection.base_url().to_string(),
                source,
                target_cohort,
                base_dir: base_dir.to_path_buf(),
            },
            pipeline: pipeline.name.clone(),
            file: pipeline.file.display().to_string(),
            sink,
            timeout,
            failed: AtomicBool::new(false),
        })
    }

    fn run_uuid(&self, ctx: &RunContext) -> String {
        run_uuid(ctx.started_at, &ctx.run_id, &self.pipeline)
    }

    /// Sends START (before the pipeline's work).
    pub async fn start(&self, ctx: &RunContext) {
        let event = self
            .job
            .start(&self.run_uuid(ctx), &ctx.run_id, crate::clock::now());
        self.send("START", &event).await;
        crate::crash::point("lineage.start.sent");
    }

    /// Sends the end event of the pipeline's report.
    pub async fn finish(&self, ctx: &RunContext, report: &PipelineReport) {
        crate::crash::point("lineage.end.before");
        let ended = Ended::of(report.exit_code, ctx.stopped_by().is_some());
        let event = self
            .job
            .end(&self.run_uuid(ctx), &ctx.run_id, report, ended);
        self.send(ended.as_str(), &event).await;
    }

    async fn send(&self, what: &str, event: &Value) {
        if self.failed.load(Ordering::Relaxed) {
            tracing::debug!(pipeline = %self.pipeline, "lineage: {what} event dropped (an earlier event of this run could not be sent)");
            return;
        }
        let sent = match tokio::time::timeout(self.timeout, self.deliver(event)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", self.timeout.as_secs())),
        };
        match sent {
            Ok(()) => {
                tracing::debug!(pipeline = %self.pipeline, "lineage: {what} event sent to {}", self.destination())
            }
            Err(e) => {
                if !self.failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        pipeline = %self.pipeline,
                        "lineage: the {what} event could not be sent to {}: {e}; the sync goes on, and this pipeline's later lineage events of the run are dropped (check [lineage] in {} and that the receiver is up)",
                        self.destination(),
                        self.file,
                    );
                }
            }
        }
    }

    /// Where events go, for messages: a URL without its query, or the file's path.
    fn destination(&self) -> String {
        match &self.sink {
            Sink::Http { url, .. } => url.split(['?', '#']).next().unwrap_or(url).to_string(),
            Sink::File { path } => path.display().to_string(),
        }
    }

    async fn deliver(&self, event: &Value) -> Result<(), String> {
        match &self.sink {
            Sink::Http { client, url, key } => {
                let mut request = client.post(url).json(event);
                if let Some(key) = key {
                    request = request.bearer_auth(key.expose());
                }
                let answer = request.send().await.map_err(|e| {
                    // reqwest's message names the URL; it holds no key (a header).
                    let mut msg = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        msg.push_str(": ");
                        msg.push_str(&s.to_string());
                        source = s.source();
                    }
                    msg
                })?;
                let status = answer.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("the receiver answered HTTP {status}"))
                }
            }
            Sink::File { path } => {
                let mut line = serde_json::to_vec(event).map_err(|e| e.to_string())?;
                line.push(b'\n');
                let path = path.clone();
                tokio::task::spawn_blocking(move || append_line(&path, &line))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

/// Appends one line (creating the file and its folder if missing) in a single write to a file opened for appending (so lines of
/// concurrent writers never interleave), after a line break if the file's last line was
/// left unfinished (a full disk, a killed writer), then syncs it.
fn append_line(path: &Path, line: &[u8]) -> Result<(), String> {
    let shown = path.display();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create the folder of {shown}: {e}"))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| format!("cannot open {shown} for appending: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    let mut buf = Vec::with_capacity(line.len() + 1);
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if last[0] != b'\n' {
            buf.push(b'\n');
        }
    }
    buf.extend_from_slice(line);
    file.write_all(&buf)
        .and_then(|()| file.sync_data())
        .map_err(|e| format!("cannot append to {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_last_line_is_closed_before_the_next() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("new/events.ndjson");
        append_line(&path, b"{\"torn\":")?;
        append_line(&path, b"{\"a\":1}\n")?;
        append_line(&path, b"{\"b\":2}\n")?;
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        assert_eq!(text, "{\"torn\":\n{\"a\":1}\n{\"b\":2}\n");
        Ok(())
    }
}
