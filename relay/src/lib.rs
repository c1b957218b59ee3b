//! Berth's agent relay.
//!
//! Agents sit in tenant instances, often behind NAT, so they dial out to the relay; the
//! service dials in too, and the relay routes between them:
//!
//! ```text
//!  service ──ServiceToRelay──▶ relay ──RelayToAgent──▶ agent
//!  service ◀─RelayToService─── relay ◀─AgentToRelay─── agent
//! ```
//!
//! Both sides speak JSON text WebSocket frames of the [`berth_proto::relay`] enums over
//! TLS (`wss://`), and authenticate twice: with a client certificate of the
//! deployment's CA, required at the TLS handshake, and with an ES256 credential signed
//! by the service (see [`berth_proto::auth`]). The certificate's identity
//! ([`berth_tls::Identity`]) must match the credential: an agent's certificate names
//! the instance its credential names, and only the service's certificate opens the
//! service endpoint. The relay keeps no durable state: everything it knows is who
//! is connected right now and which requests are waiting for a reply, so any number of
//! relays can run side by side and a restarted relay loses nothing the agents and the
//! service cannot rebuild by reconnecting.
//!
//! The crate is shaped like tokio's mini-redis:
//!
//! - `listener`: the accept loop, with a cap on open connections;
//! - `handler`: one task per connection: handshake and credential check, then a
//!   reader and a writer pumping frames;
//! - `auth`: credential verification at the WebSocket upgrade;
//! - `router`: the shared, in-memory routing tables (instance → agent connection,
//!   request → service connection);
//! - `frame`: JSON encoding of the wire enums.
//!
//! ```no_run
//! # async fn example(pem: String, tls: berth_tls::ServerTls) -> anyhow::Result<()> {
//! let settings = berth_relay::RelaySettings::new("127.0.0.1:0".parse()?, pem, tls);
//! let relay = berth_relay::Relay::bind(settings).await?;
//! println!("relay listening on {}", relay.local_addr());
//! relay.run_until_stopped().await
//! # }
//! ```

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use tokio::net::TcpListener;

mod auth;
mod frame;
mod handler;
mod listener;
mod router;

/// Everything the relay needs to run. The binary fills it from flags, environment and a
/// config file; tests and `berth up` build it directly.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Address to listen on; port 0 picks a free port (see [`Relay::local_addr`]).
    pub listen: SocketAddr,
    /// PEM (SPKI, "BEGIN PUBLIC KEY") of the service's ES256 key that signs agent and service credentials.
    pub credential_public_key_pem: String,
    /// The relay's server certificate, and the CA every peer's client certificate must
    /// chain to. There is no plain listener.
    pub tls: berth_tls::ServerTls,
    /// Most connections (agents and services together) open at once; further clients
    /// wait in the listen backlog until one closes. Default 20 000.
    pub max_connections: usize,
    /// How long a command may wait for the agent's reply before the relay answers the
    /// service with a retriable `Unavailable` error. Default 120 s.
    pub request_timeout: Duration,
}

impl RelaySettings {
    /// Default for [`RelaySettings::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
    /// Default for [`RelaySettings::request_timeout`].
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

    /// Settings with the default connection cap and request timeout.
    pub fn new(
        listen: SocketAddr,
        credential_public_key_pem: impl Into<String>,
        tls: berth_tls::ServerTls,
    ) -> Self {
        Self {
            listen,
            credential_public_key_pem: credential_public_key_pem.into(),
            tls,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A bound relay, ready to serve.
pub struct Relay {
    listener: listener::Listener,
    local_addr: SocketAddr,
}

impl Relay {
    /// Check the settings, parse the credential key and bind the TCP listener.
    ///
    /// Fails when the key is not a PEM-encoded EC public key, when a limit is zero, or
    /// when the address cannot be bound.
    pub async fn bind(settings: RelaySettings) -> anyhow::Result<Relay> {
        ensure!(
            settings.max_connections > 0,
            "max_connections must be at least 1"
        );
        ensure!(
            !settings.request_timeout.is_zero(),
            "request_timeout must be longer than zero"
        );
        let verifier = auth::Verifier::from_pem(&settings.credential_public_key_pem)?;
        let tcp = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let local_addr = tcp.local_addr()?;
        let router = Arc::new(router::Router::new(settings.request_timeout));
        let listener = listener::Listener::new(
            tcp,
            settings.max_connections,
            settings.tls,
            Arc::new(verifier),
            router,
        );
        Ok(Relay {
            listener,
            local_addr,
        })
    }

    /// The address the listener is bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accept and serve connections until the future is dropped or accepting fails for
    /// good. Dropping the future closes every connection the relay holds.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(listen = %self.local_addr, "relay listening");
        self.listener.run().await
    }
}
