//! Agent enrollment: a new instance's agent trades its one-time token for a credential.
//!
//! `POST {service_url}/agents/enroll` with an [`EnrollRequest`]; the answer is an
//! [`EnrollResponse`] (200) or `{"error": "..."}` (401 when the token is unknown, used,
//! expired, bound to another instance, or the instance is gone).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Path of the enrollment endpoint on the service's API listener.
pub const ENROLL_PATH: &str = "/agents/enroll";

/// What an agent sends to enroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The instance the agent runs in.
    pub instance: Uuid,
    /// The one-time enrollment token it was given.
    pub token: String,
    /// A PEM certificate signing request for the agent's own TLS key (made on the
    /// instance; the key never leaves it). The service signs a client certificate
    /// naming the instance (`urn:berth:instance:<uuid>`) from it.
    pub csr: String,
}

/// What the service answers a successful enrollment with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent credential, bound to the instance, to present to the relay.
    pub credential: String,
    /// The relay the agent should dial, e.g. `ws://relay.example:9518`.
    pub relay_url: String,
    /// PEM (`BEGIN PUBLIC KEY`) of the service's ES256 key that signs every command
    /// and stream open; the agent runs only what verifies against it. Empty in answers
    /// stored by agents older than signed commands.
    #[serde(default)]
    pub command_key: String,
    /// The agent's TLS client certificate (PEM), signed from its CSR by the
    /// deployment's CA, naming its instance; presented to the relay.
    pub certificate: String,
    /// The deployment's CA certificate (PEM): the relay's certificate must chain to it.
    pub ca_certificate: String,
}

/// The body of a refused enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollError {
    /// What was wrong and what to do.
    pub error: String,
}
