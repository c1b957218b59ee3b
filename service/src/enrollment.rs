//! Agent enrollment: how a new instance's agent gets its credential, and how a deleted
//! instance's credential stops working.
//!
//! A provider that makes an instance asks [`issue`] for a one-time token bound to it and
//! hands the token to the instance (cloud-init `user_data`, or an agent container's
//! environment). The agent trades it at `POST /agents/enroll` for an agent credential
//! whose claims name that instance, so the relay lets it act for that instance only.
//! The database keeps only the token's SHA-256; redeeming it is a conditional update, so
//! a token works once even when two agents race with it.
//!
//! With the token the agent sends a CSR for a key it made itself; the answer carries,
//! besides the credential, a TLS client certificate signed from it by the deployment's
//! CA ([`crate::pki`]) naming the instance (`urn:berth:instance:<uuid>`), and the CA
//! certificate the agent verifies the relay with. The relay requires both: the
//! certificate's instance must be the credential's.
//!
//! Credentials are ES256 JWTs the relay checks offline, so they cannot be withdrawn one
//! by one: they expire after [`CREDENTIAL_TTL`], and when an instance goes, [`revoke`]
//! records it and tells the relay, which closes the agent's connection and refuses its
//! later ones. The service sends the full list on every relay connection (relays keep
//! it in memory only).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use berth_proto::enroll::{EnrollError, EnrollRequest, EnrollResponse, ENROLL_PATH};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::agents::Agents;
use crate::db::enrollment::{self as queries, Refusal};
use crate::db::{Db, DbError};
use crate::identity::keys::SigningKey;
use crate::startup::mint_agent_credential;

/// How long a credential obtained at enrollment works. An agent that runs longer
/// needs a new enrollment token; a deleted instance's credential is refused by the
/// relays well before this, through [`revoke`].
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Makes a one-time enrollment token for `instance`, valid for `ttl`.
///
/// Only the token's SHA-256 is stored. The caller hands the token to the instance's
/// agent, which trades it for a credential at `POST /agents/enroll`.
pub async fn issue(db: &Db, instance: Uuid, ttl: Duration) -> Result<String, DbError> {
    let token = hex::encode(random_bytes());
    let hash = digest(&token);
    let expires_at = crate::db::now()
        + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::days(3650));
    db.run(move |c| queries::insert_token(c, &hash, &instance.to_string(), expires_at))
        .await?;
    tracing::debug!(instance.id = %instance, ttl.secs = ttl.as_secs(), "enrollment token issued");
    Ok(token)
}

/// Makes `instance`'s agent credentials stop working: records the instance as revoked,
/// drops its unused tokens, and tells the relay to close and refuse its agent.
///
/// Call it when an instance is deleted or released.
pub async fn revoke(db: &Db, agents: &Agents, instance: Uuid) -> Result<(), DbError> {
    db.run(move |c| queries::revoke(c, &instance.to_string()))
        .await?;
    agents.revoke(vec![instance]).await;
    tracing::info!(instance.id = %instance, "instance revoked: its agent may no longer connect");
    Ok(())
}

/// Loads every revoked instance from the database into `agents`, so that relays learn
/// them on connection. Called at start-up.
pub async fn load_revoked(db: &Db, agents: &Agents) -> Result<(), DbError> {
    let ids = db.run(queries::revoked).await?;
    let ids: Vec<Uuid> = ids
        .iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect();
    agents.revoke(ids).await;
    Ok(())
}

/// What the enrollment endpoint needs.
#[derive(Clone)]
pub struct Enrollment {
    db: Db,
    credential_key: SigningKey,
    relay_url: String,
    ca: std::sync::Arc<berth_tls::Ca>,
}

impl Enrollment {
    /// Enrollment answering with credentials signed by `credential_key`, client
    /// certificates signed by `ca`, and pointing agents at `relay_url`.
    pub fn new(
        db: Db,
        credential_key: SigningKey,
        relay_url: String,
        ca: std::sync::Arc<berth_tls::Ca>,
    ) -> Self {
        Self {
            db,
            credential_key,
            relay_url,
            ca,
        }
    }

    /// Registers `POST /agents/enroll`. It needs no Keystone token: the enrollment
    /// token is the proof.
    pub fn configure(self, cfg: &mut web::ServiceConfig) {
        cfg.service(
            web::resource(ENROLL_PATH)
                .app_data(web::Data::new(self))
                .route(web::post().to(enroll)),
        );
    }
}

async fn enroll(state: web::Data<Enrollment>, body: web::Bytes) -> HttpResponse {
    let request: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                HttpResponse::BadRequest(),
                format!(
                    "the body must be JSON {{\"instance\": \"<uuid>\", \"token\": \"<enrollment token>\", \"csr\": \"<PEM certificate request>\"}}: {e}"
                ),
            )
        }
    };
    let instance = request.instance;
    // The certificate is signed before the token is spent, so a bad CSR costs the
    // agent nothing: it may send a good one with the same token.
    let certificate = match state.ca.sign_csr(
        &request.csr,
        berth_tls::Subject::Identity(berth_tls::Identity::Instance(instance)),
        CREDENTIAL_TTL,
    ) {
        Ok(issued) => issued.pem,
        Err(e @ berth_tls::IssueError::BadCsr(_)) => {
            return refuse(HttpResponse::BadRequest(), e.to_string())
        }
        Err(e) => {
            tracing::error!(instance.id = %instance, error = %e, "could not sign an agent certificate");
            return refuse(
                HttpResponse::InternalServerError(),
                "the service could not sign the agent's certificate".into(),
            );
        }
    };
    let hash = digest(&request.token);
    let redeemed = state
        .db
        .run(move |c| queries::redeem(c, &hash, &instance.to_string()))
        .await;
    match redeemed {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => {
            tracing::warn!(instance.id = %instance, reason = ?refusal, "enrollment refused");
            return refuse(HttpResponse::Unauthorized(), explain(refusal, instance));
        }
        Err(e) => {
            tracing::error!(instance.id = %instance, error = %e, "enrollment failed: database");
            return refuse(
                HttpResponse::ServiceUnavailable(),
                "the service cannot reach its database; retry the enrollment shortly".into(),
            );
        }
    }
    match mint_agent_credential(&state.credential_key, instance, CREDENTIAL_TTL) {
        Ok(credential) => {
            tracing::info!(instance.id = %instance, "agent enrolled");
            HttpResponse::Ok().json(EnrollResponse {
                credential,
                relay_url: state.relay_url.clone(),
                // Commands are signed with the same key (see crate::command_signing).
                command_key: state.credential_key.public_key_pem(),
                certificate,
                ca_certificate: state.ca.pem().to_owned(),
            })
        }
        Err(e) => {
            tracing::error!(instance.id = %instance, error = %e, "could not sign an agent credential");
            refuse(
                HttpResponse::InternalServerError(),
                "the service could not sign the credential".into(),
            )
        }
    }
}

fn refuse(mut status: actix_web::HttpResponseBuilder, error: String) -> HttpResponse {
    status.json(EnrollError { error })
}

fn explain(refusal: Refusal, instance: Uuid) -> String {
    match refusal {
        Refusal::Unknown => "the enrollment token is not known: use the token the service issued for this instance".into(),
        Refusal::OtherInstance => format!(
            "the enrollment token was issued for another instance, not {instance}: use the token given to this instance"
        ),
        Refusal::Used => "the enrollment token was already used: a token works once; if the agent lost its credential, make a new instance".into(),
        Refusal::Expired => "the enrollment token has expired: the agent must enroll soon after its instance is made; make a new instance".into(),
        Refusal::InstanceGone => format!(
            "instance {instance} was deleted or released: its agent may no longer enroll"
        ),
    }
}

fn random_bytes() -> [u8; 32] {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator works");
    bytes
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_their_sha256_and_differ_each_time() {
        let (a, b) = (hex::encode(random_bytes()), hex::encode(random_bytes()));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(digest("abc").len(), 64);
        assert_ne!(digest(&a), a);
    }
}
