//! The accept loop, with a cap on open connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, field, info_span, warn, Instrument};

use crate::auth::Verifier;
use crate::handler;
use crate::router::Router;

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
    verifier: Arc<Verifier>,
    router: Arc<Router>,
}

impl Listener {
    pub(crate) fn new(
        tcp: TcpListener,
        max_connections: usize,
        verifier: Arc<Verifier>,
        router: Arc<Router>,
    ) -> Self {
        Self {
            tcp,
            limit: Arc::new(Semaphore::new(max_connections)),
            max_connections,
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
                    connections.spawn(
                        async move {
                            handler::serve(socket, conn, verifier, router).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
            }
        }
    }

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
