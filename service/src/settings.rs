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
