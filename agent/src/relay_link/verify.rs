//! Checking the service's signature on every command and stream open.
//!
//! The relay, and anyone else on the path, only carries commands; the service signs
//! each one ([`CommandClaims`], ES256 with its credential key). Before running anything
//! the agent checks that the token
//!
//! - is signed by the service's key (ES256 only, whatever the header claims),
//! - is a command token (audience [`COMMAND_AUDIENCE`], header `typ`), not a credential,
//! - names this agent's instance, this request (or stream) id and this action,
//! - carries the digest of exactly the command received,
//! - has not expired (with [`CLOCK_SKEW`] of leeway), and
//! - was not seen before: request ids are remembered until their token expires.
//!
//! A refusal is an [`AgentError`] reply naming what was wrong; the token itself is
//! never logged nor echoed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use berth_proto::auth::{
    payload_digest, AgentClaims, CommandClaims, CommandTokenKind, AGENT_AUDIENCE, COMMAND_AUDIENCE,
};
use berth_proto::{AgentError, AgentErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use uuid::Uuid;

/// How far the service's and the agent's clocks may disagree.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The JWT header `typ` of command tokens (as the service sets it).
pub(crate) const COMMAND_TOKEN_TYPE: &str = "berth-command+jwt";
/// Request ids remembered at once. With the default 60 s token lifetime this allows
/// several hundred commands a second; beyond it commands are refused as retriable
/// rather than forgetting an id whose token is still valid.
const MAX_SEEN: usize = 65_536;
/// Expired ids are swept after this many new ones, so the table stays small.
const SWEEP_EVERY: usize = 1024;

/// What a verified token said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// The payload digest, which [`super::actions`] keys retries by.
    pub(crate) digest: String,
}

/// Request ids already run, with the expiry of their token.
#[derive(Default)]
struct Seen {
    expiries: HashMap<(CommandTokenKind, Uuid), i64>,
    since_sweep: usize,
}

/// Verifies command tokens for one instance.
pub(crate) struct Verifier {
    key: DecodingKey,
    instance: Uuid,
    validation: Validation,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The service's public key from PEM (`BEGIN PUBLIC KEY`) or from the one-line base64
/// body of that PEM (as `berth-service register-host` prints it).
pub(crate) fn parse_service_key(text: &str) -> anyhow::Result<DecodingKey> {
    let text = text.trim();
    let pem = if text.contains("-----BEGIN") {
        text.to_owned()
    } else {
        let body: String = text.split_whitespace().collect();
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    };
    DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "the service key is not a P-256 public key in PEM ({e}); give the output of \
             `berth-service relay-key` (or the service_key line of `register-host`)"
        )
    })
}

impl Verifier {
    /// A verifier for the agent of `instance` trusting the service key `service_key`
    /// (see [`parse_service_key`]).
    ///
    /// When `credential` is a JWT, it must verify with that key and be bound to
    /// `instance`: a mismatch means the agent was given the wrong key or the wrong
    /// instance, and every command would be refused, so it stops here with the reason.
    pub(crate) fn new(service_key: &str, instance: Uuid, credential: &str) -> anyhow::Result<Self> {
        let key = parse_service_key(service_key)?;
        if credential.split('.').count() == 3 {
            let mut v = Validation::new(Algorithm::ES256);
            v.set_audience(&[AGENT_AUDIENCE]);
            // The relay judges expiry; here only whose credential it is matters.
            v.validate_exp = false;
            v.required_spec_claims.clear();
            let claims = jsonwebtoken::decode::<AgentClaims>(credential, &key, &v)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the agent credential does not verify with the service key ({e}); the \
                         service key must be the one of the service that issued the credential \
                         (`berth-service relay-key`)"
                    )
                })?
                .claims;
            anyhow::ensure!(
                claims.instance == instance,
                "the agent credential is for instance {}, but this agent is configured for \
                 instance {instance}; give the credential issued for this instance",
                claims.instance
            );
        } else {
            tracing::debug!(instance.id = %instance, "the credential is not a JWT; not checking it against the service key");
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[COMMAND_AUDIENCE]);
        validation.leeway = CLOCK_SKEW.as_secs();
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "aud"]);
        Ok(Verifier {
            key,
            instance,
            validation,
            seen: Mutex::default(),
        })
    }

    /// Check `token` for the payload `payload` of kind `kind` sent as `request` (the
    /// stream id for stream opens) with `action`, and remember the request id.
    pub(crate) fn verify<T: serde::Serialize>(
        &self,
        kind: CommandTokenKind,
        request: Uuid,
        action: Option<Uuid>,
        payload: &T,
        token: &str,
    ) -> Result<Verified, AgentError> {
        self.verify_at(
            kind,
            request,
            action,
            payload,
            token,
            chrono::Utc::now().timestamp(),
        )
    }

    fn verify_at<T: serde::Serialize>(
        &self,
        kind: CommandTokenKind,
        request: Uuid,
        action: Option<Uuid>,
        payload: &T,
        token: &str,
        now: i64,
    ) -> Result<Verified, AgentError> {
        let refuse = |why: String| {
            AgentError::new(
                AgentErrorKind::Runtime,
                format!(
                    "the agent of instance {} refused {} {request}: {why}",
                    self.instance,
                    what(kind)
                ),
            )
        };
        if token.is_empty() {
            return Err(refuse(
                "it carries no service signature; only commands signed by the Berth service run \
                 (is the service older than the agent?)"
                    .to_owned(),
            ));
        }
        let data = match jsonwebtoken::decode::<CommandClaims>(token, &self.key, &self.validation) {
            Ok(data) => data,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                return Err(match e.kind() {
                    ErrorKind::ExpiredSignature => AgentError::new(
                        AgentErrorKind::Unavailable,
                        format!(
                            "the agent of instance {} refused {} {request}: its signature expired \
                             before it arrived (it waited too long, or the clocks of service and \
                             instance differ by more than {} s); retry, which signs it afresh",
                            self.instance,
                            what(kind),
                            CLOCK_SKEW.as_secs()
                        ),
                    ),
                    ErrorKind::InvalidSignature => refuse(
                        "its signature is not the Berth service's (forged, or the agent was given \
                         another service's key)"
                            .to_owned(),
                    ),
                    ErrorKind::InvalidAudience => {
                        refuse("its token is not a command token".to_owned())
                    }
                    _ => refuse(format!("its token is not a valid command token ({e})")),
                });
            }
        };
        if data.header.typ.as_deref() != Some(COMMAND_TOKEN_TYPE) {
            return Err(refuse("its token is not a command token".to_owned()));
        }
        let claims = data.claims;
        if claims.kind != kind {
            return Err(refuse(format!(
                "its token signs {}, not {}",
                what(claims.kind),
                what(kind)
            )));
        }
        if claims.instance != self.instance {
            return Err(refuse(format!(
                "it was signed for instance {}, not this one",
                claims.instance
            )));
        }
        if claims.request != request {
            return Err(refuse(format!(
                "its token was signed for request {}",
                claims.request
            )));
        }
        if claims.action != action {
            return Err(refuse("its token was signed for another action".to_owned()));
        }
        let digest = payload_digest(payload).map_err(|e| refuse(format!("{e}")))?;
        if claims.digest != digest {
            return Err(refuse(
                "its content differs from what the service signed".to_owned(),
            ));
        }
        if claims.iat > now + CLOCK_SKEW.as_secs() as i64 {
            return Err(refuse(format!(
                "its token was issued {} s in the future; check the clocks of service and instance",
                claims.iat - now
            )));
        }
        self.remember(kind, request, claims.exp, now)
            .map_err(|(kind_, why)| AgentError::new(kind_, refuse(why).message))?;
        Ok(Verified { digest })
    }

    /// Record `request` as run until its token expires; refuse one seen before.
    fn remember(
        &self,
        kind: CommandTokenKind,
        request: Uuid,
        exp: i64,
        now: i64,
    ) -> Result<(), (AgentErrorKind, String)> {
        let skew = CLOCK_SKEW.as_secs() as i64;
        let mut seen = self.seen.lock().expect("seen lock");
        if seen.expiries.contains_key(&(kind, request)) {
            return Err((
                AgentErrorKind::Runtime,
                "it was already received once; a replayed command never runs twice (a retry \
                 must use a fresh request id)"
                    .to_owned(),
            ));
        }
        seen.since_sweep += 1;
        if seen.since_sweep >= SWEEP_EVERY || seen.expiries.len() >= MAX_SEEN {
            seen.since_sweep = 0;
            seen.expiries.retain(|_, exp| *exp + skew >= now);
        }
        if seen.expiries.len() >= MAX_SEEN {
            return Err((
                AgentErrorKind::Unavailable,
                format!(
                    "more than {MAX_SEEN} commands arrived within their tokens' lifetime; retry \
                     shortly"
                ),
            ));
        }
        seen.expiries.insert((kind, request), exp);
        Ok(())
    }

    /// Request ids remembered right now (for tests).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.seen.lock().expect("seen lock").expiries.len()
    }
}

/// What stands between the relay and the engine: the signature check, and the
/// outcomes retries are answered from. One per agent process, shared by every
/// connection.
#[derive(Debug)]
pub(crate) struct CommandGuard {
    /// Checks each command's and stream open's token.
    pub(crate) verifier: Verifier,
    /// Outcomes of recent action-bearing commands.
    pub(crate) actions: super::actions::Actions,
}

impl CommandGuard {
    /// A guard for the agent of `instance` (see [`Verifier::new`]).
    pub(crate) fn new(service_key: &str, instance: Uuid, credential: &str) -> anyhow::Result<Self> {
        Ok(CommandGuard {
            verifier: Verifier::new(service_key, instance, credential)?,
            actions: super::actions::Actions::default(),
        })
    }
}

fn what(kind: CommandTokenKind) -> &'static str {
    match kind {
        CommandTokenKind::Command => "command",
        CommandTokenKind::StreamOpen => "stream",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use berth_proto::Command;
    use jsonwebtoken::{EncodingKey, Header};

    /// The service's key pair, for tests.
    pub(crate) struct TestKey {
        pub(crate) encoding: EncodingKey,
    }

    // A throw-away P-256 key made for these tests only (never used anywhere else).
    const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeasBuAyTF/KvMo1L
i5PU9y0bw+pBRaZ6ofFw/dkckN2hRANCAASueUyW0gel3NJz2SPREtka9tlr8Kgp
9d9beXS/ftLwYlFarpmNrO+rNixDKHe1n9kHD0+uu5BF09jA+tIjq+n/
-----END PRIVATE KEY-----
";
    const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErnlMltIHpdzSc9kj0RLZGvbZa/Co
KfXfW3l0v37S8GJRWq6ZjazvqzYsQyh3tZ/ZBw9PrruQRdPYwPrSI6vp/w==
-----END PUBLIC KEY-----
";
    // A second, unrelated key, standing in for a forger.
    const OTHER_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXMxIdR9DULlQbHfr
bW67kngWUFIWtuXFKGKkMMJLvvChRANCAARWhlGlYIwsTLEayLUeJOLYHyAVBwGR
GRifBgX7GvGHo8yOpAeEPnBA8q7Ad/Jh3jBMuFZtsXmgFA8KhP+12GbV
-----END PRIVATE KEY-----
";

    impl TestKey {
        pub(crate) fn service() -> TestKey {
            TestKey {
                encoding: EncodingKey::from_ec_pem(PRIVATE_PEM.as_bytes()).unwrap(),
            }
        }

        fn forger() -> TestKey {
            TestKey {
                encoding: EncodingKey::from_ec_pem(OTHER_PRIVATE_PEM.as_bytes()).unwrap(),
            }
        }

        pub(crate) fn sign(&self, claims: &CommandClaims) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.typ = Some(COMMAND_TOKEN_TYPE.to_owned());
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }

        pub(crate) fn sign_command(
            &self,
            instance: Uuid,
            request: Uuid,
            action: Option<Uuid>,
            command: &Command,
        ) -> String {
            let now = chrono::Utc::now().timestamp();
            self.sign(&claims(instance, request, action, command, now, now + 60))
        }
    }

    fn claims(
        instance: Uuid,
        request: Uuid,
        action: Option<Uuid>,
        command: &Command,
        iat: i64,
        exp: i64,
    ) -> CommandClaims {
        CommandClaims {
            aud: COMMAND_AUDIENCE.to_owned(),
            kind: CommandTokenKind::Command,
            instance,
            request,
            action,
            digest: payload_digest(command).unwrap(),
            iat,
            exp,
        }
    }

    fn start() -> Command {
        Command::Start {
            container: Uuid::new_v4(),
        }
    }

    fn verifier(instance: Uuid) -> Verifier {
        Verifier::new(PUBLIC_PEM, instance, "not-a-jwt").unwrap()
    }

    fn check(
        v: &Verifier,
        request: Uuid,
        action: Option<Uuid>,
        command: &Command,
        token: &str,
    ) -> Result<Verified, AgentError> {
        v.verify(CommandTokenKind::Command, request, action, command, token)
    }

    /// Asserts that a refusal says `what`.
    fn assert_says(err: &AgentError, what: &str) {
        assert!(err.message.contains(what), "{}", err.message);
    }

    #[test]
    fn a_command_signed_by_the_service_for_this_instance_passes() {
        let instance = Uuid::new_v4();
        let v = verifier(instance);
        let (request, action, command) = (Uuid::new_v4(), Some(Uuid::new_v4()), start());
        let token = TestKey::service().sign_command(instance, request, action, &command);
        let verified = check(&v, request, action, &command, &token).unwrap();
        assert_eq!(verified.digest, payload_digest(&command).unwrap());
    }

    #[test]
    fn a_forged_signature_is_refused() {
        let instance = Uuid::new_v4();
        let v = verifier(instance);
        let (request, command) = (Uuid::new_v4(), start());
        let token = TestKey::forger().sign_command(instance, request, None, &command);
        let err = check(&v, request, None, &command, &token).unwrap_err();
        assert_eq!(err.kind, AgentErrorKind::Runtime);
        assert_says(&err, "not the Berth service's");
        assert_eq!(v.remembered(), 0, "a refused command is not recorded");
    }

    #[test]
    fn a_token_for_another_instance_is_refused() {
        let v = verifier(Uuid::new_v4());
        let (request, command) = (Uuid::new_v4(), start());
        let token = TestKey::service().sign_command(Uuid::new_v4(), request, None, &command);
        let err = check(&v, request, None, &command, &token).unwrap_err();
        assert_says(&err, "signed for instance");
    }

    #[test]
    fn a_token_moved_onto_another_command_is_refused() {
        let instance = Uuid::new_v4();
        let v = verifier(instance);
        let request = Uuid::new_v4();
        let signed = start();
        let token = TestKey::service().sign_command(instance, request, None, &signed);
        let other = Command::Remove {
            container: Uuid::new_v4(),
            force: true,
        };
        let err = check(&v, request, None, &other, &token).unwrap_err();
        assert_says(&err, "differs from what the service signed");
        // Nor onto another request id, action or kind.
        let err = check(&v, Uuid::new_v4(), None, &signed, &token).unwrap_err();
        assert_says(&err, "signed for request");
        let err = check(&v, request, Some(Uuid::new_v4()), &signed, &token).unwrap_err();
        assert_says(&err, "another action");
        let err = v
            .verify(CommandTokenKind::StreamOpen, request, None, &signed, &token)
            .unwrap_err();
        assert_says(&err, "signs command");
        // The untouched command still runs: the refusals did not use its id up.
        check(&v, request, None, &signed, &token).unwrap();
    }

    #[test]
    fn an_expired_token_is_refused_as_retriable_and_skew_is_tolerated() {
        let instance = Uuid::new_v4();
        let v = verifier(instance);
        let now = chrono::Utc::now().timestamp();
        let command = start();
        let request = Uuid::new_v4();
        let skew = CLOCK_SKEW.as_secs() as i64;
        let old = TestKey::service().sign(&claims(
            instance,
            request,
            None,
            &command,
            now - 200,
            now - skew - 5,
        ));
        let err = check(&v, request, None, &command, &old).unwrap_err();
        assert_eq!(err.kind, AgentErrorKind::Unavailable);
        assert_says(&err, "expired");
        // Expired a little, within the allowed skew: runs.
        let request = Uuid::new_v4();
        let late = TestKey::service().sign(&claims(
            instance,
            request,
            None,
            &command,
            now - 70,
            now - 10,
        ));
        check(&v, request, None, &command, &late).unwrap();
    }

    #[test]
    fn a_replayed_request_is_refused() {
        let instance = Uuid::new_v4();
        let v = verifier(instance);
        let (request, command) = (Uuid::new_v4(), start());
        let token = TestKey::service().sign_command(instance, request, None, &command);
        check(&v, request, None, &command, &token).unwrap();
        let err = check(&v, request, None, &command, &token).unwrap_err();
        assert_says(&err, "already received once");
        assert!(!err.message.contains(&token), "the token is never echoed");
    }

    #[test]
    fn an_agent_credential_does_not_pass_as_a_command_token() {
        let instance = Uuid::new_v4();
        let v = verifier(instance);
        let now = chrono::Utc::now().timestamp();
        let credential = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &AgentClaims {
                sub: format!("agent:{instance}"),
                instance,
                aud: AGENT_AUDIENCE.to_owned(),
                iat: now,
                exp: now + 60,
            },
            &TestKey::service().encoding,
        )
        .unwrap();
        let err = check(&v, Uuid::new_v4(), None, &start(), &credential).unwrap_err();
        assert!(
            err.message.contains("not a command token")
                || err.message.contains("not a valid command token"),
            "{}",
            err.message
        );
        // An unsigned command is refused too.
        let err = check(&v, Uuid::new_v4(), None, &start(), "").unwrap_err();
        assert_says(&err, "no service signature");
    }

    #[test]
    fn expired_ids_are_forgotten_and_live_ones_kept() {
        let v = verifier(Uuid::new_v4());
        let now = 1_000_000;
        v.remember(CommandTokenKind::Command, Uuid::new_v4(), now - 100, now)
            .unwrap();
        let live = Uuid::new_v4();
        v.remember(CommandTokenKind::Command, live, now + 60, now)
            .unwrap();
        for _ in 0..SWEEP_EVERY {
            v.remember(CommandTokenKind::Command, Uuid::new_v4(), now + 60, now)
                .unwrap();
        }
        assert_eq!(v.remembered(), SWEEP_EVERY + 1, "the expired id was swept");
        assert!(v
            .remember(CommandTokenKind::Command, live, now + 60, now)
            .is_err());
    }

    #[test]
    fn a_credential_for_another_instance_or_key_stops_the_agent_at_start() {
        let instance = Uuid::new_v4();
        let now = chrono::Utc::now().timestamp();
        let credential = |key: &TestKey, for_instance: Uuid| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::ES256),
                &AgentClaims {
                    sub: format!("agent:{for_instance}"),
                    instance: for_instance,
                    aud: AGENT_AUDIENCE.to_owned(),
                    iat: now,
                    exp: now + 60,
                },
                &key.encoding,
            )
            .unwrap()
        };
        Verifier::new(
            PUBLIC_PEM,
            instance,
            &credential(&TestKey::service(), instance),
        )
        .unwrap();
        let err = Verifier::new(
            PUBLIC_PEM,
            instance,
            &credential(&TestKey::service(), Uuid::new_v4()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("is for instance"), "{err}");
        let err = Verifier::new(
            PUBLIC_PEM,
            instance,
            &credential(&TestKey::forger(), instance),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("does not verify with the service key"),
            "{err}"
        );
        // The one-line form of the key is accepted too.
        let line: String = PUBLIC_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        Verifier::new(&line, instance, &credential(&TestKey::service(), instance)).unwrap();
        assert!(Verifier::new("garbage", instance, "x").is_err());
    }
}
