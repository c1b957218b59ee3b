//! Listeners of the Docker endpoint: an accept loop per listener, one task per
//! connection, hyper's HTTP/1.1 with upgrades (attach and exec hijack the connection).
//!
//! Over TLS the handshake comes first, bounded by [`HANDSHAKE_TIMEOUT`]; the client
//! certificate it presented (if any) goes with every request of the connection. After a
//! hijack hyper hands the raw stream (TCP, or TLS whose `close_notify` reads as end of
//! input) to the handler, which may keep writing after the client half-closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::auth::Peer;
use super::{router, DockerShared};

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves plain HTTP on `listener` (meant for loopback: nothing protects the token
/// headers on the wire). Runs until the task is dropped.
pub async fn serve_plain(listener: TcpListener, shared: Arc<DockerShared>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the Docker listener could not accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, remote, Peer::default(), shared).await;
        });
    }
}

/// Serves HTTPS on `listener` with `config` (client certificates optional). Runs until
/// the task is dropped.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shared: Arc<DockerShared>,
) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the Docker TLS listener could not accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "Docker TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "Docker TLS handshake timed out");
                    return;
                }
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| der.as_ref().to_vec());
            serve_connection(tls, remote, Peer { certificate }, shared).await;
        });
    }
}

/// One HTTP/1.1 connection, upgrades allowed, until the client closes it.
async fn serve_connection<S>(io: S, remote: SocketAddr, peer: Peer, shared: Arc<DockerShared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(router::handle(shared, req, peer).await) }
    });
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
    {
        // Clients drop connections all the time (`docker run -d` abandons its /wait):
        // nothing to act on.
        tracing::debug!(%remote, error = %e, "Docker connection ended with an error");
    }
}
