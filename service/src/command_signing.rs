//! Signing commands for agents.
//!
//! Every command and every stream open the service sends to an agent carries an ES256
//! token ([`CommandClaims`]) signed with the service's credential key — the key whose
//! public half relays already hold to check agent and service credentials, and which
//! agents receive at enrollment. The token binds the instance, the request (or stream)
//! id, the action id and a digest of the payload, and expires after a short time, so
//! whoever carries the command (a relay, the network) can neither forge it, send it to
//! another instance, swap its payload nor replay it. Its audience
//! ([`COMMAND_AUDIENCE`]) differs from the credentials', so no credential passes as a
//! command token and no command token as a credential.

use std::time::Duration;

use berth_proto::auth::{payload_digest, CommandClaims, CommandTokenKind, COMMAND_AUDIENCE};
use berth_proto::{AgentError, AgentErrorKind, Command, RequestId, StreamId, StreamOpen};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

use crate::identity::keys::SigningKey;

/// How long a command token stays valid by default: long enough for a command queued
/// behind a reconnecting relay, short enough that a captured one is soon useless.
pub const DEFAULT_COMMAND_TOKEN_TTL: Duration = Duration::from_secs(60);

/// The JWT header `typ` of command tokens.
pub const COMMAND_TOKEN_TYPE: &str = "berth-command+jwt";

/// Signs command tokens. Cheap to clone.
#[derive(Clone)]
pub struct CommandSigner {
    key: EncodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for CommandSigner {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CommandSigner {
    /// A signer with `key` (the credential key) whose tokens expire `ttl` after issue.
    pub fn new(key: &SigningKey, ttl: Duration) -> CommandSigner {
        CommandSigner {
            key: key.encoding_key(),
            ttl,
        }
    }

    /// The token for `command`, sent as `request` to the agent of `instance`.
    pub fn sign_command(
        &self,
        instance: Uuid,
        request: RequestId,
        action: Option<Uuid>,
        command: &Command,
    ) -> Result<String, AgentError> {
        self.sign(
            CommandTokenKind::Command,
            instance,
            request,
            action,
            command,
        )
    }

    /// The token for opening stream `stream` on the agent of `instance`.
    pub fn sign_stream_open(
        &self,
        instance: Uuid,
        stream: StreamId,
        action: Option<Uuid>,
        open: &StreamOpen,
    ) -> Result<String, AgentError> {
        self.sign(CommandTokenKind::StreamOpen, instance, stream, action, open)
    }

    fn sign<T: serde::Serialize>(
        &self,
        kind: CommandTokenKind,
        instance: Uuid,
        request: Uuid,
        action: Option<Uuid>,
        payload: &T,
    ) -> Result<String, AgentError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(instance.id = %instance, request.id = %request, error = %e, "{what}");
            AgentError::new(
                AgentErrorKind::Runtime,
                format!("the service could not sign the command for instance {instance}: {what}"),
            )
        };
        let digest = payload_digest(payload)
            .map_err(|e| failed("the command does not serialise to JSON", &e))?;
        let now = chrono::Utc::now().timestamp();
        let claims = CommandClaims {
            aud: COMMAND_AUDIENCE.to_owned(),
            kind,
            instance,
            request,
            action,
            digest,
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(COMMAND_TOKEN_TYPE.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| failed("signing with the credential key failed", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::auth::AgentClaims;
    use jsonwebtoken::Validation;

    fn validation(aud: &str) -> Validation {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        v
    }

    #[test]
    fn a_command_token_binds_instance_request_action_and_payload_and_expires_soon() {
        let key = SigningKey::generate().unwrap();
        let signer = CommandSigner::new(&key, Duration::from_secs(60));
        let (instance, request, action) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let command = Command::Start {
            container: Uuid::new_v4(),
        };
        let token = signer
            .sign_command(instance, request, Some(action), &command)
            .unwrap();
        let data = jsonwebtoken::decode::<CommandClaims>(
            &token,
            &key.decoding_key(),
            &validation(COMMAND_AUDIENCE),
        )
        .unwrap();
        assert_eq!(data.header.typ.as_deref(), Some(COMMAND_TOKEN_TYPE));
        let claims = data.claims;
        assert_eq!(claims.kind, CommandTokenKind::Command);
        assert_eq!(claims.instance, instance);
        assert_eq!(claims.request, request);
        assert_eq!(claims.action, Some(action));
        assert_eq!(claims.digest, payload_digest(&command).unwrap());
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn a_command_token_is_not_an_agent_credential() {
        let key = SigningKey::generate().unwrap();
        let signer = CommandSigner::new(&key, Duration::from_secs(60));
        let instance = Uuid::new_v4();
        let token = signer
            .sign_command(instance, Uuid::new_v4(), None, &Command::Images)
            .unwrap();
        let as_credential = jsonwebtoken::decode::<AgentClaims>(
            &token,
            &key.decoding_key(),
            &validation(berth_proto::auth::AGENT_AUDIENCE),
        );
        assert!(as_credential.is_err());
    }
}
