//! Credential checks at the WebSocket upgrade.
//!
//! The path says which kind of peer is knocking and the bearer credential must be of
//! that kind: the audiences differ, so an agent credential is refused on the service
//! path and the other way round. An agent's instance comes only from its verified
//! claims, never from anything else the agent sends, which is what confines an agent
//! to its own instance.
//!
//! The TLS client certificate (already verified against the deployment's CA at the
//! handshake) must agree: on the agent path it must name the credential's instance,
//! on the service path it must be the service's. A stolen credential is useless
//! without the matching key, and a certificate without the credential.

use anyhow::Context;
use berth_proto::auth::{AgentClaims, ServiceClaims, AGENT_AUDIENCE, SERVICE_AUDIENCE};
use berth_tls::{Identity, IdentityError};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::{header, StatusCode};
use uuid::Uuid;

/// Who a connection belongs to, as proven by its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    /// The agent of one instance.
    Agent { instance: Uuid },
    /// A service replica; `name` is the credential's subject, for logs.
    Service { name: String },
}

/// Why an upgrade request was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
}

impl Rejection {
    /// The HTTP response sent instead of upgrading.
    pub(crate) fn response(&self) -> ErrorResponse {
        let (status, body) = match self {
            Rejection::NotFound(path) => (
                StatusCode::NOT_FOUND,
                format!(
                    "no endpoint at {path}: agents connect to {}, services to {}\n",
                    berth_proto::RELAY_AGENT_PATH,
                    berth_proto::RELAY_SERVICE_PATH
                ),
            ),
            Rejection::Unauthorized(why) => (StatusCode::UNAUTHORIZED, format!("{why}\n")),
        };
        let mut response = ErrorResponse::new(None);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::CONTENT_LENGTH, body.len().into());
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        *response.body_mut() = Some(body);
        response
    }
}

/// Verifies agent and service credentials with the service's public key.
pub(crate) struct Verifier {
    key: DecodingKey,
    agent: Validation,
    service: Validation,
}

impl Verifier {
    /// A verifier for credentials signed by the key whose SPKI PEM this is.
    pub(crate) fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let key = DecodingKey::from_ec_pem(pem.as_bytes()).context(
            "the credential public key is not a PEM-encoded EC public key (BEGIN PUBLIC KEY)",
        )?;
        Ok(Self {
            key,
            agent: validation(AGENT_AUDIENCE),
            service: validation(SERVICE_AUDIENCE),
        })
    }

    /// Decide from the upgrade request's path and credential, and the identity of the
    /// TLS client certificate, who the peer is.
    pub(crate) fn admit(
        &self,
        request: &Request,
        certificate: &Result<Identity, IdentityError>,
    ) -> Result<Peer, Rejection> {
        let path = request.uri().path();
        let agent = if path == berth_proto::RELAY_AGENT_PATH {
            true
        } else if path == berth_proto::RELAY_SERVICE_PATH {
            false
        } else {
            return Err(Rejection::NotFound(path.to_owned()));
        };
        let token = bearer_token(request)?;
        if agent {
            let claims = jsonwebtoken::decode::<AgentClaims>(token, &self.key, &self.agent)
                .map_err(|e| explain(e.kind()))?
                .claims;
            match certificate {
                Ok(Identity::Instance(id)) if *id == claims.instance => Ok(Peer::Agent {
                    instance: claims.instance,
                }),
                Ok(Identity::Instance(id)) => Err(Rejection::Unauthorized(format!(
                    "the client certificate is for instance {id} but the credential for instance {}: \
                     an agent presents its own instance's certificate",
                    claims.instance
                ))),
                Ok(Identity::Service) => Err(Rejection::Unauthorized(
                    "the service's client certificate cannot open the agent endpoint".into(),
                )),
                Err(e) => Err(Rejection::Unauthorized(format!(
                    "{e}: agents present the certificate they got at enrollment"
                ))),
            }
        } else {
            let claims = jsonwebtoken::decode::<ServiceClaims>(token, &self.key, &self.service)
                .map_err(|e| explain(e.kind()))?
                .claims;
            match certificate {
                Ok(Identity::Service) => Ok(Peer::Service { name: claims.sub }),
                Ok(Identity::Instance(id)) => Err(Rejection::Unauthorized(format!(
                    "the client certificate is an agent's (instance {id}): only the service's opens {}",
                    berth_proto::RELAY_SERVICE_PATH
                ))),
                Err(e) => Err(Rejection::Unauthorized(format!(
                    "{e}: the service presents its certificate (urn:berth:service)"
                ))),
            }
        }
    }
}

/// ES256 only (never whatever the token's header names), the given audience, and an
/// unexpired `exp` with jsonwebtoken's default 60 s leeway for clock skew.
fn validation(audience: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation
}

fn bearer_token(request: &Request) -> Result<&str, Rejection> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            Rejection::Unauthorized(
                "missing credential: send `Authorization: Bearer <credential>`".into(),
            )
        })?;
    let value = value.to_str().map_err(|_| {
        Rejection::Unauthorized("the Authorization header is not valid text".into())
    })?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Rejection::Unauthorized(
            "the Authorization header must be `Bearer <credential>`".into(),
        )),
    }
}

/// A sentence for the peer; the credential itself is never echoed or logged.
fn explain(kind: &ErrorKind) -> Rejection {
    Rejection::Unauthorized(match kind {
        ErrorKind::ExpiredSignature => {
            "the credential has expired: get a fresh one from the service".to_owned()
        }
        ErrorKind::InvalidAudience => format!(
            "the credential is not for this endpoint: agent credentials go to {}, service credentials to {}",
            berth_proto::RELAY_AGENT_PATH,
            berth_proto::RELAY_SERVICE_PATH
        ),
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidEcdsaKey => {
            "the credential is not signed by the key this relay trusts".to_owned()
        }
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
            "the credential lacks the claims this endpoint requires".to_owned()
        }
        _ => "the credential is malformed".to_owned(),
    })
}
