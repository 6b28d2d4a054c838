//! `[connection]`: where the Amplitude API is and which credentials to use. Credentials not
//! written in the file come from `AMPLITUDE_API_KEY` / `AMPLITUDE_SECRET_KEY` at run time.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ConfigError;
use super::values::{BaseUrl, Secret};
use crate::amplitude::{ClientOptions, Credentials, Region};

/// Environment variable holding the api key when the file has none.
pub const API_KEY_VAR: &str = "AMPLITUDE_API_KEY";
/// Environment variable holding the secret key when the file has none.
pub const SECRET_KEY_VAR: &str = "AMPLITUDE_SECRET_KEY";

/// How to reach the Amplitude project.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Data residency: `us` (`https://amplitude.com`) or `eu`. Default `us`. Exclusive with
    /// `base_url`.
    #[serde(default)]
    pub region: Option<Region>,
    /// API root overriding the region, e.g. the emulator's `http://127.0.0.1:8080`.
    /// `https://`; plain `http://` only to a loopback host unless `allow_insecure_http`.
    #[serde(default)]
    pub base_url: Option<BaseUrl>,
    /// Accept a plain `http://` base_url on a host that is not loopback (the API key and
    /// secret then travel unencrypted); every run warns. Default false.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// API key; default: the `AMPLITUDE_API_KEY` environment variable at run time.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Secret key; default: the `AMPLITUDE_SECRET_KEY` environment variable at run time.
    #[serde(default)]
    pub secret_key: Option<Secret>,
    /// Amplitude app (project) id. Keys the per-app rate limits (default: the api key);
    /// required to create or replace a cohort by upload.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub app_id: Option<u64>,
    /// Seconds allowed to establish a connection (1..=600).
    #[serde(default = "default_connect_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub connect_timeout_secs: u64,
    /// Longest silence in seconds while reading a response (1..=3600).
    #[serde(default = "default_read_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub read_timeout_secs: u64,
    /// The pipeline file, named in resolution errors (set by [`super::load`]).
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) file: PathBuf,
}

fn default_connect_timeout() -> u64 {
    30
}

fn default_read_timeout() -> u64 {
    120
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            region: None,
            base_url: None,
            allow_insecure_http: false,
            api_key: None,
            secret_key: None,
            app_id: None,
            connect_timeout_secs: default_connect_timeout(),
            read_timeout_secs: default_read_timeout(),
            file: PathBuf::new(),
        }
    }
}

/// A connection ready for [`crate::amplitude::AmplitudeClient::new`].
#[derive(Debug, Clone)]
pub struct ResolvedConnection {
    pub options: ClientOptions,
    /// Identifies the app for the shared rate limits: `app:<app_id>`, or
    /// `key:<sha256 prefix of the api key>` when no app id is given (never the key itself).
    pub app_key: String,
}

impl Connection {
    /// Whether the API is reached over plain HTTP on a host that is not loopback (allowed
    /// only with `allow_insecure_http`; warned about on every run).
    pub fn insecure(&self) -> bool {
        self.base_url.as_ref().is_some_and(BaseUrl::is_insecure)
    }

    /// The API root: `base_url`, else the region's host.
    pub fn base_url(&self) -> &str {
        match &self.base_url {
            Some(url) => url.as_str(),
            None => self.region.unwrap_or(Region::Us).base_url(),
        }
    }

    /// Credentials from the file, else from the environment; the error names the missing
    /// variable (and the pipeline file).
    pub fn resolve(&self) -> Result<ResolvedConnection, ConfigError> {
        self.resolve_with(&|name| std::env::var(name).ok())
    }

    /// [`Connection::resolve`] with an explicit environment lookup.
    pub fn resolve_with(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ResolvedConnection, ConfigError> {
        let file = self.file.as_path();
        let get = |field: &Option<Secret>, var: &str, key: &str| -> Result<String, ConfigError> {
            if let Some(s) = field {
                return Ok(s.expose().to_string());
            }
            match lookup(var) {
                Some(v) if !v.trim().is_empty() => Ok(v),
                _ => Err(ConfigError::new(
                    file,
                    format!(
                        "no credentials: connection.{key} is not in the file and the environment variable {var} is not set"
                    ),
                )),
            }
        };
        let api_key = get(&self.api_key, API_KEY_VAR, "api_key")?;
        let secret_key = get(&self.secret_key, SECRET_KEY_VAR, "secret_key")?;
        let app_key = match self.app_id {
            Some(id) => format!("app:{id}"),
            None => {
                let digest = Sha256::digest(api_key.as_bytes());
                let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("key:{hex}")
            }
        };
        let mut options =
            ClientOptions::new(self.base_url(), Credentials::new(api_key, secret_key));
        // Checked by `validate`; bounded here too, as the client needs instants it can reach.
        options.connect_timeout = Duration::from_secs(self.connect_timeout_secs.clamp(1, 600));
        options.read_timeout = Duration::from_secs(self.read_timeout_secs.clamp(1, 3_600));
        Ok(ResolvedConnection { options, app_key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            API_KEY_VAR => Some("env-key".into()),
            SECRET_KEY_VAR => Some("env-secret".into()),
            _ => None,
        }
    }

    #[test]
    fn credentials_default_to_the_environment() {
        let c = Connection::default();
        let r = c.resolve_with(&env).expect("resolve");
        assert_eq!(r.options.credentials.api_key(), "env-key");
        assert_eq!(r.options.base_url, "https://amplitude.com");
        assert!(r.app_key.starts_with("key:") && !r.app_key.contains("env-key"));
        assert_eq!(r.options.read_timeout, Duration::from_secs(120));
    }

    #[test]
    fn missing_credentials_name_the_variable() {
        let c = Connection {
            file: PathBuf::from("p.toml"),
            api_key: Some(Secret::try_from("k".to_string()).expect("secret")),
            region: Some(Region::Eu),
            app_id: Some(42),
            ..Connection::default()
        };
        let err = c.resolve_with(&|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.toml: no credentials: connection.secret_key is not in the file and the environment variable AMPLITUDE_SECRET_KEY is not set"
        );
        let r = c
            .resolve_with(&|n| (n == SECRET_KEY_VAR).then(|| "s".to_string()))
            .expect("resolve");
        assert_eq!(r.app_key, "app:42");
        assert_eq!(r.options.base_url, "https://analytics.eu.amplitude.com");
    }
}
