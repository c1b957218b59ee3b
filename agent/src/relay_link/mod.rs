//! The agent's link to the relay: dial out, report, obey, and keep dialling.
//!
//! Agents sit in tenant instances, often behind NAT, so the agent always dials the
//! relay and never listens. Each connection starts with the full state, then the
//! unacknowledged events of this session ([`outbox`]), then new events; after any
//! disconnect or refusal the agent reconnects with jittered exponential backoff.
//!
//! An agent may be given several relays (any one will do: the service connects to
//! all of them and finds the agent's through the database). It starts with a random
//! one, so a fleet spreads over them, and moves on to the next after each lost or
//! refused connection.

mod actions;
mod backoff;
mod framing;
mod outbox;
mod session;
mod verify;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::runtime::Runtime;
use backoff::Backoff;
use outbox::Outbox;
pub(crate) use verify::CommandGuard;

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
    /// Full WebSocket URL of the relay's agent endpoint dialled now: one of `urls`.
    pub(crate) url: String,
    /// The agent endpoints of every relay the agent may use, in the configured order.
    pub(crate) urls: Vec<String>,
    /// Bearer credential; never logged.
    pub(crate) credential: String,
    /// The instance the agent acts for.
    pub(crate) instance: Uuid,
    /// The CA the relay's certificate must chain to, and the agent's own certificate
    /// (naming its instance); set by [`LinkSettings::with_tls`]. Without it the agent
    /// does not dial: there is no plain connection.
    pub(crate) tls: Option<berth_tls::ClientTls>,
}

impl std::fmt::Debug for LinkSettings {
    // Written by hand so that the credential never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("url", &self.url)
            .field("urls", &self.urls)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl LinkSettings {
    /// Settings for the relays at `relay_urls`: one base URL (scheme, host, port and
    /// optional base path) or several separated by commas; the agent endpoint path is
    /// appended to each.
    pub(crate) fn new(
        relay_urls: &str,
        credential: String,
        instance: Uuid,
    ) -> anyhow::Result<Self> {
        if credential.trim().is_empty() {
            bail!("the agent credential is empty; give the one issued at enrollment");
        }
        let urls = relay_urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(agent_endpoint)
            .collect::<anyhow::Result<Vec<String>>>()?;
        let Some(first) = urls.first().cloned() else {
            bail!("no relay URL given; give at least one, like wss://HOST:PORT");
        };
        Ok(Self {
            url: first,
            urls,
            credential,
            instance,
            tls: None,
        })
    }

    /// These settings with the agent's TLS.
    pub(crate) fn with_tls(mut self, tls: berth_tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// These settings, dialling the `index`-th relay (modulo their number).
    fn at(&self, index: usize) -> Self {
        let mut link = self.clone();
        link.url = self.urls[index % self.urls.len()].clone();
        link
    }
}

/// The agent endpoint of the relay at `relay_url`.
fn agent_endpoint(relay_url: &str) -> anyhow::Result<String> {
    let base = relay_url.trim().trim_end_matches('/');
    if base.starts_with("ws://") {
        bail!(
            "the relay URL {base} uses ws://, but relays accept TLS connections only; \
             use wss://HOST:PORT"
        );
    }
    if !base.starts_with("wss://") || base.len() <= "wss://".len() {
        bail!("the relay URL {base:?} must look like wss://HOST:PORT");
    }
    Ok(format!("{base}{}", berth_proto::RELAY_AGENT_PATH))
}

/// Stay connected to the relay for as long as the process lives.
pub(crate) async fn run_forever(
    link: LinkSettings,
    runtime: Runtime,
    guard: Arc<CommandGuard>,
) -> anyhow::Result<()> {
    let commands = Arc::new(Semaphore::new(CONCURRENT_COMMANDS));
    // One session per process: event numbers go on across connections and relays.
    let outbox = Arc::new(Mutex::new(Outbox::new(outbox::OUTBOX_CAPACITY)));
    let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_CAP);
    // A random first relay spreads a fleet of agents over the relays; after that, the
    // next one after each lost connection, so a dead relay is left at once.
    let mut index = rand::random::<usize>() % link.urls.len();
    loop {
        let link = link.at(index);
        index = index.wrapping_add(1);
        let started = Instant::now();
        let mut established = false;
        let result = session::run(
            &link,
            &runtime,
            &commands,
            &outbox,
            &guard,
            &mut established,
        )
        .await;
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
        // The backoff paces every attempt, whichever relay is next: when all relays are
        // down, a fleet must not hammer them in a tight loop.
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
        let link = LinkSettings::new("wss://127.0.0.1:9518/", "t".to_owned(), Uuid::nil()).unwrap();
        assert_eq!(link.url, "wss://127.0.0.1:9518/v1/agent");
    }

    #[test]
    fn plain_ws_urls_are_refused_with_an_explanation_because_relays_speak_tls_only() {
        let err = LinkSettings::new("ws://relay:9518", "t".to_owned(), Uuid::nil()).unwrap_err();
        assert!(err.to_string().contains("TLS connections only"), "{err}");
    }

    #[test]
    fn urls_that_are_not_websocket_urls_are_refused() {
        assert!(LinkSettings::new("http://relay:9518", "t".to_owned(), Uuid::nil()).is_err());
        assert!(LinkSettings::new("wss://", "t".to_owned(), Uuid::nil()).is_err());
    }

    #[test]
    fn several_relays_are_given_separated_by_commas_and_each_gets_the_agent_path() {
        let link =
            LinkSettings::new(" wss://a:1 , wss://b:2/,", "t".to_owned(), Uuid::nil()).unwrap();
        assert_eq!(link.urls, vec!["wss://a:1/v1/agent", "wss://b:2/v1/agent"]);
        assert_eq!(link.at(1).url, "wss://b:2/v1/agent");
        assert_eq!(
            link.at(2).url,
            "wss://a:1/v1/agent",
            "rotation wraps around"
        );
    }

    #[test]
    fn an_empty_relay_list_is_refused() {
        let err = LinkSettings::new(" , ", "t".to_owned(), Uuid::nil()).unwrap_err();
        assert!(err.to_string().contains("no relay URL"), "{err}");
    }

    #[test]
    fn an_empty_credential_is_refused() {
        assert!(LinkSettings::new("wss://relay:9518", " ".to_owned(), Uuid::nil()).is_err());
    }
}
