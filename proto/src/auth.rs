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
