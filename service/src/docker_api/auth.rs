//! Who is calling the Docker endpoint.
//!
//! Two ways in, as the docker CLI can present them:
//! - a TLS client certificate (`DOCKER_CERT_PATH` / `--tlscert`) issued by
//!   `POST /v1/docker/credentials` and registered by its fingerprint: the handshake has
//!   already checked it is signed by the endpoint's CA, and the registration says for
//!   which user and project it acts;
//! - a Keystone token in `X-Auth-Token` or `Authorization: Bearer` (config.json
//!   `HttpHeaders`), checked exactly as the Zun API checks it.
//!
//! A certificate wins over a header: it is what the connection proves.

use hyper::header::{HeaderMap, AUTHORIZATION};
use hyper::StatusCode;

use super::certs::fingerprint;
use super::{DockerError, DockerShared};
use crate::db::docker_credentials::{self, DockerCredentialRow};
use crate::identity::RequestContext;

/// What the connection tells about the caller: the TLS client certificate, if any.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// DER of the client certificate the TLS handshake presented.
    pub certificate: Option<Vec<u8>>,
}

/// The 401 for a certificate that verified against the CA but is not (or no longer)
/// registered.
pub const UNREGISTERED_CERTIFICATE: &str = "this client certificate is not registered with Berth or was revoked; get a new one with `osc docker-credentials`";

/// The 401 for a call without any credential.
pub const AUTHENTICATION_REQUIRED: &str = "authentication required: use a client certificate from `osc docker-credentials` (DOCKER_HOST=tcp://HOST:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=DIR), or send a Keystone token (`osc token-issue`) as an X-Auth-Token header through \"HttpHeaders\" in the docker CLI's config.json";

/// Resolves the caller of one request, or 401 in Docker's format.
pub async fn identify(
    shared: &DockerShared,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<RequestContext, DockerError> {
    if let Some(der) = &peer.certificate {
        return by_certificate(shared, der).await;
    }
    let Some(token) = token(headers) else {
        return Err(unauthorized(AUTHENTICATION_REQUIRED));
    };
    crate::identity::authenticate(&shared.state, &token)
        .await
        .map_err(DockerError::from)
}

/// The token of `X-Auth-Token`, else of `Authorization: Bearer`.
fn token(headers: &HeaderMap) -> Option<String> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    if let Some(t) = header("X-Auth-Token") {
        return Some(t.to_owned());
    }
    let auth = header(AUTHORIZATION.as_str())?;
    let (scheme, rest) = auth.split_once(' ')?;
    let rest = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty()).then(|| rest.to_owned())
}

async fn by_certificate(shared: &DockerShared, der: &[u8]) -> Result<RequestContext, DockerError> {
    let fp = fingerprint(der);
    let state = &shared.state;
    let embedded = state.keystone.is_none();
    let found = state
        .db
        .run(move |conn| {
            let Some(row) = docker_credentials::find_valid(conn, &fp)? else {
                return Ok(None);
            };
            if !embedded {
                return Ok(Some(snapshot(&row)));
            }
            // The embedded identity knows its users: a disabled user or project, or a
            // revoked role, stops the certificate at once, as it stops tokens.
            crate::identity::current_context(conn, &row.user_id, &row.project_id)
        })
        .await?;
    found.ok_or_else(|| unauthorized(UNREGISTERED_CERTIFICATE))
}

/// With an external Keystone, Berth cannot ask about a user without their token: the
/// certificate carries what was true when it was issued (revoke it to end it sooner).
fn snapshot(row: &DockerCredentialRow) -> RequestContext {
    RequestContext {
        user_id: row.user_id.clone(),
        user_name: row.user_name.clone(),
        project_id: row.project_id.clone(),
        project_name: row.project_name.clone(),
        roles: row.role_names(),
    }
}

fn unauthorized(message: &str) -> DockerError {
    DockerError::new(StatusCode::UNAUTHORIZED, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_token_comes_from_x_auth_token_or_a_bearer_authorization() {
        assert_eq!(
            token(&headers(&[("x-auth-token", " abc ")])),
            Some("abc".into())
        );
        assert_eq!(
            token(&headers(&[("authorization", "Bearer xyz")])),
            Some("xyz".into())
        );
        assert_eq!(
            token(&headers(&[
                ("x-auth-token", "abc"),
                ("authorization", "Bearer xyz")
            ])),
            Some("abc".into())
        );
        assert_eq!(token(&headers(&[("authorization", "Basic Zm9v")])), None);
        assert_eq!(token(&headers(&[("x-auth-token", "  ")])), None);
        assert_eq!(token(&HeaderMap::new()), None);
    }
}
