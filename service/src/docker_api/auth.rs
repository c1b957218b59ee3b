//! Who is calling the Docker endpoint. (Owned by the auth/TLS work; stub until then.)

use hyper::header::HeaderMap;
use hyper::StatusCode;

use super::{DockerError, DockerShared};
use crate::identity::RequestContext;

/// What the connection tells about the caller: the TLS client certificate, if any.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// DER of the client certificate the TLS handshake presented.
    pub certificate: Option<Vec<u8>>,
}

/// Resolves the caller of one request, or 401 in Docker's format.
pub async fn identify(
    shared: &DockerShared,
    headers: &HeaderMap,
    _peer: &Peer,
) -> Result<RequestContext, DockerError> {
    let Some(token) = headers.get("X-Auth-Token").and_then(|v| v.to_str().ok()) else {
        return Err(DockerError::new(
            StatusCode::UNAUTHORIZED,
            "authentication required: send X-Auth-Token",
        ));
    };
    crate::identity::authenticate(&shared.state, token)
        .await
        .map_err(DockerError::from)
}
