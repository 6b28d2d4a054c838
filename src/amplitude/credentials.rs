//! API credentials and where requests go. `Debug` and `Display` never show a secret.

use std::fmt;

/// HTTP Basic credentials `api_key:secret_key`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    api_key: String,
    secret_key: String,
}

impl Credentials {
    pub fn new(api_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Credentials {
            api_key: api_key.into(),
            secret_key: secret_key.into(),
        }
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials { api_key: <redacted>, secret_key: <redacted> }")
    }
}

/// Amplitude data residency; each has its own REST host.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Us,
    Eu,
}

impl Region {
    pub fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://amplitude.com",
            Region::Eu => "https://analytics.eu.amplitude.com",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::new("key-123", "secret-456");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("key-123") && !shown.contains("secret-456"),
            "{shown}"
        );
    }

    #[test]
    fn regions_have_documented_hosts() {
        assert_eq!(Region::Us.base_url(), "https://amplitude.com");
        assert_eq!(Region::Eu.base_url(), "https://analytics.eu.amplitude.com");
    }
}
