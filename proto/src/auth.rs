//! Credentials presented to the relay.
//!
//! Both kinds are ES256 JWS tokens signed by the service; the relay holds the service's
//! public key and verifies them without a database. They travel in the
//! `Authorization: Bearer <token>` header of the WebSocket upgrade request.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Claims of an agent credential: the bearer may act for exactly one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaims {
    /// `agent:<instance uuid>`.
    pub sub: String,
    /// The instance this agent acts for.
    pub instance: Uuid,
    /// Always [`AGENT_AUDIENCE`].
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

/// Claims of a service credential: the bearer may send commands to any agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    /// A name for the service replica, for logs.
    pub sub: String,
    /// Always [`SERVICE_AUDIENCE`].
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

/// Audience of agent credentials.
pub const AGENT_AUDIENCE: &str = "berth-agent";
/// Audience of service credentials.
pub const SERVICE_AUDIENCE: &str = "berth-service";

/// Audience of command tokens: a token with this audience authorises exactly one
/// command or stream open, never a connection.
pub const COMMAND_AUDIENCE: &str = "berth-command";

/// What a [`CommandClaims`] token authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandTokenKind {
    /// A [`crate::Command`]; `request` is the request id.
    Command,
    /// A [`crate::StreamOpen`]; `request` is the stream id.
    StreamOpen,
}

/// Claims of a command token: the service's signature over one command (or stream
/// open) for one agent.
///
/// The token travels next to the command through the relay; the agent runs the
/// command only when the signature is the service's, the instance is its own, the
/// payload digest matches the command it received, the token has not expired and the
/// request id was not seen before. So a relay, or anyone else on the path, can neither
/// forge, redirect nor replay a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandClaims {
    /// Always [`COMMAND_AUDIENCE`]; agent and service credentials have other
    /// audiences, so neither can pass as a command token (nor the reverse).
    pub aud: String,
    /// Whether this signs a command or a stream open.
    pub kind: CommandTokenKind,
    /// The instance whose agent may run it.
    pub instance: Uuid,
    /// The request id of the command, or the stream id of the stream open.
    pub request: Uuid,
    /// The Berth action it belongs to, if any.
    pub action: Option<Uuid>,
    /// [`payload_digest`] of the command or stream open.
    pub digest: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

/// SHA-256 (lower-case hex) of the canonical JSON of `payload`: serde_json's text of
/// its JSON value, whose object keys are sorted. Service and agent compute it from the
/// typed value, so both arrive at the same text whatever order fields had on the wire.
pub fn payload_digest<T: Serialize>(payload: &T) -> Result<String, serde_json::Error> {
    use sha2::Digest as _;
    let value = serde_json::to_value(payload)?;
    let text = serde_json::to_string(&value)?;
    Ok(hex::encode(sha2::Sha256::digest(text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    #[test]
    fn the_digest_differs_between_commands_and_is_stable_for_one() {
        let a = Command::Start {
            container: Uuid::from_u128(1),
        };
        let b = Command::Start {
            container: Uuid::from_u128(2),
        };
        assert_eq!(
            payload_digest(&a).unwrap(),
            payload_digest(&a.clone()).unwrap()
        );
        assert_ne!(payload_digest(&a).unwrap(), payload_digest(&b).unwrap());
        assert_eq!(payload_digest(&a).unwrap().len(), 64);
    }

    #[test]
    fn the_digest_does_not_depend_on_key_order_on_the_wire() {
        let c = Uuid::from_u128(7);
        let one: Command =
            serde_json::from_str(&format!(r#"{{"op":"start","container":"{c}"}}"#)).unwrap();
        let two: Command =
            serde_json::from_str(&format!(r#"{{"container":"{c}","op":"start"}}"#)).unwrap();
        assert_eq!(payload_digest(&one).unwrap(), payload_digest(&two).unwrap());
    }
}
