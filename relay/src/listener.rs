//! The accept loop, with a cap on open connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, field, info, info_span, warn, Instrument};

use crate::auth::Verifier;
use crate::handler;
use crate::router::Router;

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest pause between attempts when `accept` keeps failing.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections and runs a handler task for each.
pub(crate) struct Listener {
    tcp: TcpListener,
    /// One permit per open connection. When none is left the relay stops accepting and
    /// new clients wait in the kernel's backlog, as in mini-redis: past the cap the
    /// relay degrades by making clients wait instead of running out of memory or file
    /// descriptors.
    limit: Arc<Semaphore>,
    max_connections: usize,
    /// Every connection is TLS with a client certificate of the deployment's CA.
    tls: berth_tls::ServerTls,
    verifier: Arc<Verifier>,
    router: Arc<Router>,
}

impl Listener {
    pub(crate) fn new(
        tcp: TcpListener,
        max_connections: usize,
        tls: berth_tls::ServerTls,
        verifier: Arc<Verifier>,
        router: Arc<Router>,
    ) -> Self {
        Self {
            tcp,
            limit: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            tls,
            verifier,
            router,
        }
    }

    /// Serve until the future is dropped. The connection tasks live in a `JoinSet`
    /// owned here, so dropping this future closes every connection too.
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                // Reap finished handlers so the set does not grow with closed connections.
                Some(finished) = connections.join_next() => {
                    if let Err(failure) = finished {
                        if failure.is_panic() {
                            error!(error = %failure, "a connection handler panicked");
                        }
                    }
                }
                (socket, permit) = self.accept() => {
                    let conn = self.router.next_conn_id();
                    let span = info_span!(
                        "connection",
                        connection.id = conn,
                        peer.addr = field::Empty,
                        instance.id = field::Empty,
                        service.name = field::Empty,
                    );
                    if let Ok(peer) = socket.peer_addr() {
                        span.record("peer.addr", field::display(peer));
                    }
                    let verifier = Arc::clone(&self.verifier);
                    let router = Arc::clone(&self.router);
                    let tls = self.tls.clone();
                    connections.spawn(
                        async move {
                            // The TLS handshake runs here, not in the accept loop, so a
                            // slow client holds only its own slot.
                            if let Some((socket, identity)) = handshake(&tls, socket).await {
                                handler::serve(socket, identity, conn, verifier, router).await;
                            }
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
            }
        }
    }
}

/// The TLS handshake, within [`TLS_HANDSHAKE_TIMEOUT`]: the client must present a
/// certificate of the deployment's CA (rustls refuses the handshake otherwise); what
/// it names is checked against the credential at the upgrade.
async fn handshake(
    tls: &berth_tls::ServerTls,
    socket: TcpStream,
) -> Option<(
    berth_tls::ServerStream,
    Result<berth_tls::Identity, berth_tls::IdentityError>,
)> {
    if let Err(error) = socket.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(socket)).await {
        Ok(Ok(accepted)) => Some(accepted),
        // A plain ws:// client, a certificate of another CA or none at all.
        Ok(Err(error)) => {
            info!(%error, "refused a connection at the TLS handshake");
            None
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            None
        }
    }
}

impl Listener {
    /// Wait for a free connection slot, then for a client. Cancel-safe: a slot taken
    /// before cancellation is returned when its permit drops.
    async fn accept(&self) -> (TcpStream, OwnedSemaphorePermit) {
        let permit = match Arc::clone(&self.limit).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                warn!(
                    max_connections = self.max_connections,
                    "connection limit reached; new clients wait until a connection closes"
                );
                Arc::clone(&self.limit)
                    .acquire_owned()
                    .await
                    .expect("the connection semaphore is never closed")
            }
        };
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.tcp.accept().await {
                Ok((socket, _)) => return (socket, permit),
                // Failures here are about this moment (out of file descriptors, a client
                // that reset before being accepted), not the listener, so the relay keeps
                // going rather than dropping every connected agent.
                Err(error) => {
                    warn!(%error, retry.ms = backoff.as_millis() as u64, "accepting a connection failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}
