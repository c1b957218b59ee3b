//! Dialling the relay: TCP, TLS with the relay's certificate verified, then the
//! WebSocket upgrade.

use std::io;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use crate::config::ClientTls;

/// A TLS stream to the relay.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
/// A WebSocket over TLS to the relay.
pub type WsClient = WebSocketStream<ClientStream>;

/// Opens `request` (a `wss://` URL with any headers) over TLS: the relay's certificate
/// must chain to the CA of `tls` and name the URL's host, and `tls`'s client
/// certificate is presented. A `ws://` URL is refused: relays speak TLS only.
pub async fn connect_websocket(
    request: impl IntoClientRequest,
    tls: &ClientTls,
    config: Option<WebSocketConfig>,
) -> Result<(WsClient, Response), WsError> {
    let request = request.into_client_request()?;
    let uri = request.uri();
    if uri.scheme_str() != Some("wss") {
        return Err(WsError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{uri} is not a wss:// URL: relays accept TLS connections only"),
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| {
            WsError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{uri} has no host"),
            ))
        })?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
        WsError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host} is not a valid server name"),
        ))
    })?;
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    // Commands and replies are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    let stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(name, tcp)
        .await
        .map_err(|e| {
            WsError::Io(io::Error::new(
                e.kind(),
                format!("TLS handshake with {host}:{port} failed: {e}"),
            ))
        })?;
    tokio_tungstenite::client_async_with_config(request, stream, config).await
}
