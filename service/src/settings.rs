//! The service's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Everything the service needs to start. Built by the binary from a file and the
/// environment; the library reads neither.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSettings {
    /// Where the API listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The URL clients reach the API at; defaults to `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// `sqlite://PATH` (or a path) or `postgres://...`.
    pub database_url: String,
    /// The relay to reach agents through, e.g. `ws://127.0.0.1:9518`.
    pub relay_url: String,
    /// Directory holding the token and credential signing keys (made on first start).
    pub keys_dir: PathBuf,
    /// How long issued tokens stay valid.
    #[serde(default = "default_token_ttl", with = "secs")]
    pub token_ttl: Duration,
    /// Region name shown in the catalog.
    #[serde(default = "default_region")]
    pub region: String,
    /// A policy file (YAML or JSON, rule name → rule) overriding the default policy.
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// Where tokens come from: the embedded identity service (the default) or an
    /// external Keystone.
    #[serde(default)]
    pub identity: IdentitySettings,
}

/// The `[identity]` section. With `keystone_url` set, Berth validates tokens against
/// that Keystone (as keystonemiddleware does) and serves no tokens of its own.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct IdentitySettings {
    /// Keystone's v3 endpoint, e.g. `http://keystone:5000/v3` (`/v3` is added when
    /// missing). None: the embedded identity service issues and checks tokens.
    pub keystone_url: Option<String>,
    /// Berth's service user in Keystone; it needs the `service` (or `admin`) role to
    /// validate other users' tokens.
    pub username: String,
    /// The service user's password.
    pub password: String,
    /// The project the service user's token is scoped to.
    pub project_name: String,
    /// The service user's domain id.
    pub user_domain_id: String,
    /// The service project's domain id.
    pub project_domain_id: String,
    /// How long a validated token is trusted without asking Keystone again, in
    /// seconds (never past the token's own expiry); 0 disables the cache.
    pub cache_ttl_secs: u64,
    /// A directory of Keystone's JWS public keys (PEM; every file is tried): JWS
    /// tokens are then checked offline first, so forged, tampered or expired tokens
    /// are refused without asking Keystone.
    pub jws_public_keys_dir: Option<PathBuf>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            keystone_url: None,
            username: "berth".into(),
            password: String::new(),
            project_name: "service".into(),
            user_domain_id: "default".into(),
            project_domain_id: "default".into(),
            cache_ttl_secs: 300,
            jws_public_keys_dir: None,
        }
    }
}

// By hand, so that the password never reaches a log line.
impl std::fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("keystone_url", &self.keystone_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("project_name", &self.project_name)
            .field("user_domain_id", &self.user_domain_id)
            .field("project_domain_id", &self.project_domain_id)
            .field("cache_ttl_secs", &self.cache_ttl_secs)
            .field("jws_public_keys_dir", &self.jws_public_keys_dir)
            .finish()
    }
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_region() -> String {
    "RegionOne".into()
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
