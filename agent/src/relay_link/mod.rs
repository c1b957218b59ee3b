//! The agent's link to the relay: dial out, report, obey, and keep dialling.
//!
//! Agents sit in tenant instances, often behind NAT, so the agent always dials the
//! relay and never listens. Each connection starts with the full state; after any
//! disconnect or refusal the agent reconnects with jittered exponential backoff.

mod backoff;
mod framing;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::runtime::Runtime;
use backoff::Backoff;

/// First reconnect delay.
const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A connection that lasted this long was healthy: the next failure starts the
/// backoff afresh. A relay that accepts and at once drops the agent keeps backing off.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Commands executing at once; more wait their turn, so a burst cannot swamp the engine.
const CONCURRENT_COMMANDS: usize = 32;

/// Where and as whom to connect.
#[derive(Clone)]
pub(crate) struct LinkSettings {
    /// Full WebSocket URL of the relay's agent endpoint.
    pub(crate) url: String,
    /// Bearer credential; never logged.
    pub(crate) credential: String,
    /// The instance the agent acts for.
    pub(crate) instance: Uuid,
}

impl std::fmt::Debug for LinkSettings {
    // Written by hand so that the credential never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("url", &self.url)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl LinkSettings {
    /// Settings for the relay at `relay_url` (scheme, host, port and optional base
    /// path); the agent endpoint path is appended.
    pub(crate) fn new(relay_url: &str, credential: String, instance: Uuid) -> anyhow::Result<Self> {
        let base = relay_url.trim().trim_end_matches('/');
        if base.starts_with("wss://") {
            bail!(
                "the relay URL {base} uses wss://, but this build of berth-agent has no TLS \
                 support; use ws:// (for example behind a TLS-terminating proxy)"
            );
        }
        if !base.starts_with("ws://") || base.len() <= "ws://".len() {
            bail!("the relay URL {base:?} must look like ws://HOST:PORT");
        }
        if credential.trim().is_empty() {
            bail!("the agent credential is empty; give the one issued at enrollment");
        }
        Ok(Self {
            url: format!("{base}{}", berth_proto::RELAY_AGENT_PATH),
            credential,
            instance,
        })
    }
}

/// Stay connected to the relay for as long as the process lives.
pub(crate) async fn run_forever(link: LinkSettings, runtime: Runtime) -> anyhow::Result<()> {
    let commands = Arc::new(Semaphore::new(CONCURRENT_COMMANDS));
    let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_CAP);
    loop {
        let started = Instant::now();
        let mut established = false;
        let result = session::run(&link, &runtime, &commands, &mut established).await;
        match &result {
            Ok(()) => tracing::info!(instance.id = %link.instance, "relay connection closed"),
            Err(err) => tracing::warn!(
                instance.id = %link.instance,
                error = %format!("{err:#}"),
                established,
                "relay connection lost"
            ),
        }
        if established && started.elapsed() >= STABLE_CONNECTION {
            backoff.reset();
        }
        let delay = backoff.next_delay(&mut rand::thread_rng());
        tracing::debug!(instance.id = %link.instance, delay_ms = delay.as_millis() as u64, "reconnecting after a delay");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_path_is_appended_to_the_relay_url() {
        let link = LinkSettings::new("ws://127.0.0.1:9518/", "t".to_owned(), Uuid::nil()).unwrap();
        assert_eq!(link.url, "ws://127.0.0.1:9518/v1/agent");
    }

    #[test]
    fn wss_urls_are_refused_with_an_explanation_because_tls_is_not_built_in() {
        let err = LinkSettings::new("wss://relay:9518", "t".to_owned(), Uuid::nil()).unwrap_err();
        assert!(err.to_string().contains("no TLS support"), "{err}");
    }

    #[test]
    fn urls_that_are_not_websocket_urls_are_refused() {
        assert!(LinkSettings::new("http://relay:9518", "t".to_owned(), Uuid::nil()).is_err());
        assert!(LinkSettings::new("ws://", "t".to_owned(), Uuid::nil()).is_err());
    }

    #[test]
    fn an_empty_credential_is_refused() {
        assert!(LinkSettings::new("ws://relay:9518", " ".to_owned(), Uuid::nil()).is_err());
    }
}
