//! The service's side of signed commands, for tests that play the relay: a fixed
//! throw-away ES256 key, agent credentials and command tokens signed with it.
//!
//! Used as `mod signing;` by the agent's integration tests.
#![allow(dead_code)]

use berth_proto::auth::{
    payload_digest, AgentClaims, CommandClaims, CommandTokenKind, AGENT_AUDIENCE, COMMAND_AUDIENCE,
};
use berth_proto::{Command, StreamOpen};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use uuid::Uuid;

/// A P-256 key made for these tests only.
const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeasBuAyTF/KvMo1L
i5PU9y0bw+pBRaZ6ofFw/dkckN2hRANCAASueUyW0gel3NJz2SPREtka9tlr8Kgp
9d9beXS/ftLwYlFarpmNrO+rNixDKHe1n9kHD0+uu5BF09jA+tIjq+n/
-----END PRIVATE KEY-----
";

/// Its public half: what the agent is given as the service key.
pub const SERVICE_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErnlMltIHpdzSc9kj0RLZGvbZa/Co
KfXfW3l0v37S8GJRWq6ZjazvqzYsQyh3tZ/ZBw9PrruQRdPYwPrSI6vp/w==
-----END PUBLIC KEY-----
";

/// The `typ` the service puts in command tokens' headers.
const COMMAND_TOKEN_TYPE: &str = "berth-command+jwt";

fn sign<T: serde::Serialize>(header: Header, claims: &T) -> String {
    let key = EncodingKey::from_ec_pem(PRIVATE_PEM.as_bytes()).expect("the test key parses");
    jsonwebtoken::encode(&header, claims, &key).expect("signing works")
}

/// An agent credential for `instance`, the same every time (fixed times).
pub fn credential(instance: Uuid) -> String {
    sign(
        Header::new(Algorithm::ES256),
        &AgentClaims {
            sub: format!("agent:{instance}"),
            instance,
            aud: AGENT_AUDIENCE.to_owned(),
            iat: 0,
            exp: 4_102_444_800,
        },
    )
}

/// The instance a credential made by [`credential`] is for.
pub fn instance_of(credential: &str) -> Uuid {
    let key = DecodingKey::from_ec_pem(SERVICE_KEY_PEM.as_bytes()).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[AGENT_AUDIENCE]);
    jsonwebtoken::decode::<AgentClaims>(credential, &key, &v)
        .expect("a credential made by signing::credential")
        .claims
        .instance
}

fn token<T: serde::Serialize>(
    kind: CommandTokenKind,
    instance: Uuid,
    request: Uuid,
    action: Option<Uuid>,
    payload: &T,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(COMMAND_TOKEN_TYPE.to_owned());
    sign(
        header,
        &CommandClaims {
            aud: COMMAND_AUDIENCE.to_owned(),
            kind,
            instance,
            request,
            action,
            digest: payload_digest(payload).unwrap(),
            iat: now,
            exp: now + 60,
        },
    )
}

/// The service's token for `command`, sent as `request` to the agent of `instance`.
pub fn command_token(
    instance: Uuid,
    request: Uuid,
    action: Option<Uuid>,
    command: &Command,
) -> String {
    token(
        CommandTokenKind::Command,
        instance,
        request,
        action,
        command,
    )
}

/// The service's token for opening `stream` on the agent of `instance`.
pub fn stream_token(
    instance: Uuid,
    stream: Uuid,
    action: Option<Uuid>,
    open: &StreamOpen,
) -> String {
    token(CommandTokenKind::StreamOpen, instance, stream, action, open)
}
