//! Fixture files (TOML) for `cohort-sync emulate --fixture FILE`: emulator settings and the
//! apps with their cohorts. Errors are `file:line:col: message`.
//!
//! ```toml
//! time_scale = 1.0              # optional, like every top-level setting
//! job_seconds = 2
//! redirect_threshold_rows = 100000
//! link_ttl_secs = 60
//! gzip = false
//! presign_mb_per_sec = 100       # pace presigned downloads (default: loopback speed)
//! monthly_limit = 500
//!
//! [[apps]]
//! app_id = 100001
//! api_key = "demo-key"
//! secret_key = "demo-secret"
//! usage_used = 0
//!
//! [[apps.cohorts]]
//! id = "abc1234"
//! name = "Trial users"
//! size = 1000                   # members generated from the seed
//! seed = 1
//! published = true
//! archived = false
//! last_computed_ms = 1704067200000
//! owners = ["owner@example.com"]
//! props = ["plan", "country"]   # columns of a props=1 download without propKeys
//! recompute_secs = 3600         # recomputed every hour of the emulator's clock (0: never)
//!
//! [[faults]]                    # armed at start, like POST /_emulator/faults
//! kind = "server_error"
//! path_contains = "request-status"
//! count = 1
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::config::{
    AppSpec, CohortSpec, EmulatorConfig, MAX_TIME_SCALE, setting_mb_per_sec, setting_secs,
};
use super::faults::FaultRule;
use crate::config::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    time_scale: Option<Spanned<f64>>,
    job_seconds: Option<Spanned<f64>>,
    redirect_threshold_rows: Option<u64>,
    link_ttl_secs: Option<Spanned<f64>>,
    gzip: Option<bool>,
    presign_mb_per_sec: Option<Spanned<f64>>,
    monthly_limit: Option<u32>,
    #[serde(default)]
    faults: Vec<Spanned<FaultRule>>,
    apps: Vec<Spanned<FixtureApp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureApp {
    app_id: Spanned<u64>,
    api_key: String,
    secret_key: String,
    #[serde(default)]
    usage_used: u32,
    #[serde(default)]
    cohorts: Vec<Spanned<CohortSpec>>,
}

/// Reads and checks a fixture file.
pub fn load(path: &Path) -> Result<EmulatorConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, format!("cannot read fixture: {e}")))?;
    parse(path, &text)
}

/// Parses fixture `text` (read from `path`, used in messages) over the default config.
pub fn parse(path: &Path, text: &str) -> Result<EmulatorConfig, ConfigError> {
    let file: FixtureFile = toml::from_str(text)
        .map_err(|e| ConfigError::at(path, text, e.span(), e.message().to_string()))?;
    let at =
        |span: std::ops::Range<usize>, msg: String| ConfigError::at(path, text, Some(span), msg);
    let mut config = EmulatorConfig::default();
    if let Some(s) = file.time_scale {
        if !(s.get_ref().is_finite() && *s.get_ref() > 0.0 && *s.get_ref() <= MAX_TIME_SCALE) {
            return Err(at(
                s.span(),
                format!("time_scale must be a positive number up to {MAX_TIME_SCALE}"),
            ));
        }
        config.time_scale = *s.get_ref();
    }
    if let Some(s) = file.job_seconds {
        config.job_duration = seconds(&s).map_err(|m| at(s.span(), format!("job_seconds {m}")))?;
    }
    if let Some(s) = file.link_ttl_secs {
        config.link_ttl = seconds(&s).map_err(|m| at(s.span(), format!("link_ttl_secs {m}")))?;
    }
    if let Some(r) = file.redirect_threshold_rows {
        config.redirect_threshold_rows = r;
    }
    if let Some(g) = file.gzip {
        config.gzip = g;
    }
    if let Some(mb) = file.presign_mb_per_sec {
        config.presign_bytes_per_sec = Some(
            setting_mb_per_sec(*mb.get_ref())
                .map_err(|m| at(mb.span(), format!("presign_mb_per_sec {m}")))?,
        );
    }
    if let Some(m) = file.monthly_limit {
        config.monthly_limit = m;
    }
    for f in file.faults {
        f.get_ref().validate().map_err(|m| at(f.span(), m))?;
        config.faults.push(f.into_inner());
    }
    if file.apps.is_empty() {
        return Err(ConfigError::new(
            path,
            "a fixture needs at least one [[apps]]",
        ));
    }
    let mut apps: Vec<AppSpec> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for app in file.apps {
        let app_span = app.span();
        let app = app.into_inner();
        let app_id = *app.app_id.get_ref();
        if apps.iter().any(|a| a.app_id == app_id) {
            return Err(at(app.app_id.span(), format!("app {app_id} appears twice")));
        }
        if keys.contains(&app.api_key) {
            return Err(at(
                app_span,
                format!("app {app_id} reuses another app's api_key"),
            ));
        }
        keys.push(app.api_key.clone());
        let mut cohorts: Vec<CohortSpec> = Vec::new();
        for c in app.cohorts {
            let span = c.span();
            let c = c.into_inner();
            c.validate().map_err(|m| at(span.clone(), m))?;
            if cohorts.iter().any(|o| o.id == c.id) {
                return Err(at(
                    span,
                    format!("cohort {} appears twice in app {app_id}", c.id),
                ));
            }
            cohorts.push(c);
        }
        apps.push(AppSpec {
            app_id,
            api_key: app.api_key,
            secret_key: app.secret_key,
            usage_used: app.usage_used,
            cohorts,
        });
    }
    config.apps = apps;
    Ok(config)
}

fn seconds(s: &Spanned<f64>) -> Result<Duration, String> {
    setting_secs(*s.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
job_seconds = 0.5
gzip = true

[[apps]]
app_id = 7
api_key = "k"
secret_key = "s"

[[apps.cohorts]]
id = "c1"
name = "One"
size = 10
props = ["plan"]
"#;

    #[test]
    fn reads_settings_and_cohorts_with_defaults() {
        let cfg = parse(Path::new("f.toml"), GOOD).expect("valid fixture");
        assert!(cfg.gzip);
        assert_eq!(cfg.job_duration, Duration::from_millis(500));
        assert_eq!(cfg.apps.len(), 1);
        let c = &cfg.apps[0].cohorts[0];
        assert_eq!((c.id.as_str(), c.size, c.published), ("c1", 10, true));
        assert_eq!(cfg.monthly_limit, 500);
        assert_eq!(cfg.presign_bytes_per_sec, None);
        let paced = GOOD.replace("gzip = true", "presign_mb_per_sec = 50");
        let cfg = parse(Path::new("f.toml"), &paced).expect("valid fixture");
        assert_eq!(cfg.presign_bytes_per_sec, Some(50_000_000));
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let bad_type = GOOD.replace("size = 10", "size = \"ten\"");
        let e = parse(Path::new("f.toml"), &bad_type).expect_err("bad type");
        assert_eq!((e.line(), e.column()), (Some(13), Some(8)), "{e}");
        let too_big = GOOD.replace("size = 10", "size = 2000001");
        let e = parse(Path::new("f.toml"), &too_big).expect_err("too big");
        assert!(e.to_string().starts_with("f.toml:"), "{e}");
        assert!(e.line().is_some() && e.message().contains("2000000"), "{e}");
        let unknown = GOOD.replace("gzip = true", "gzipped = true");
        let e = parse(Path::new("f.toml"), &unknown).expect_err("unknown key");
        assert_eq!(e.line(), Some(3), "{e}");
        let no_link = GOOD.replace("gzip = true", "presign_mb_per_sec = 0");
        let e = parse(Path::new("f.toml"), &no_link).expect_err("zero bandwidth");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.message().contains("presign_mb_per_sec"), "{e}");
    }
}
