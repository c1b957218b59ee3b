//! Black-box tests: a real relay on port 0, with WebSocket clients playing agents and
//! services over mutual TLS, credentials signed by a key made for the test, and
//! certificates of a CA made for the test.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use berth_proto::auth::{AgentClaims, ServiceClaims, AGENT_AUDIENCE, SERVICE_AUDIENCE};
use berth_proto::container::{ContainerEvent, ObservedContainer, RuntimeState};
use berth_proto::{
    AgentError, AgentErrorKind, AgentToRelay, Channel, Command, Outcome, RelayToAgent,
    RelayToService, ServiceToRelay, StreamData, StreamEnd, StreamMessage, StreamOpen,
    RELAY_AGENT_PATH, RELAY_SERVICE_PATH,
};
use berth_relay::{Relay, RelaySettings};
use berth_tls::{Ca, ClientTls, Identity, ServerTls};
use futures_util::{FutureExt as _, SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

/// How long a test waits for something that should happen promptly.
const DEADLINE: Duration = Duration::from_secs(10);

/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A throw-away ES256 key standing in for the service's credential key.
struct SigningKey {
    encoding: EncodingKey,
    public_pem: String,
}

impl SigningKey {
    fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("parse the generated key");
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
        let public_pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        Self {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public_pem,
        }
    }

    fn sign<T: Serialize>(&self, claims: &T) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding)
            .expect("sign the credential")
    }

    /// An agent credential for `instance`, expiring `ttl_secs` from now (negative: in the past).
    fn agent_token(&self, instance: Uuid, ttl_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(&AgentClaims {
            sub: format!("agent:{instance}"),
            instance,
            aud: AGENT_AUDIENCE.to_owned(),
            iat: now,
            exp: now + ttl_secs,
        })
    }

    fn service_token(&self, ttl_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(&ServiceClaims {
            sub: "service-test".to_owned(),
            aud: SERVICE_AUDIENCE.to_owned(),
            iat: now,
            exp: now + ttl_secs,
        })
    }
}

const DAY: Duration = Duration::from_secs(86_400);

/// A relay running in the background for one test; stopped when dropped.
struct TestRelay {
    addr: SocketAddr,
    key: SigningKey,
    /// The test deployment's CA: the relay's certificate and the peers' come from it.
    ca: Ca,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A CA made for the test and the relay's server TLS (for 127.0.0.1) from it.
fn test_ca() -> (Ca, ServerTls) {
    let ca = Ca::generate("test CA", DAY).unwrap();
    let cert = ca
        .server_certificate(&["127.0.0.1".to_owned()], DAY)
        .unwrap();
    let tls = ServerTls::from_pem(ca.pem(), &cert.cert_pem, &cert.key_pem).unwrap();
    (ca, tls)
}

/// A client certificate of `ca` naming `identity`, with `trusted` as the CA the relay's
/// certificate is checked against.
fn client_tls(trusted: &Ca, ca: &Ca, identity: Identity) -> ClientTls {
    let made = ca.identity_certificate(identity, DAY).unwrap();
    ClientTls::from_pem(trusted.pem(), &made.cert_pem, &made.key_pem).unwrap()
}

/// The identity a well-behaved peer presents with `authorization` on `path`: an
/// agent's certificate names its credential's instance, the service's is the
/// service's.
fn identity_for(path: &str, authorization: Option<&str>) -> Identity {
    if path != RELAY_AGENT_PATH {
        return Identity::Service;
    }
    let instance = authorization
        .and_then(|a| a.split_once(' '))
        .and_then(|(_, jwt)| jwt.split('.').nth(1))
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|claims| claims["instance"].as_str().and_then(|i| i.parse().ok()))
        .unwrap_or_else(Uuid::new_v4);
    Identity::Instance(instance)
}

impl TestRelay {
    async fn start() -> Self {
        Self::start_with_timeout(Duration::from_secs(120)).await
    }

    async fn start_with_timeout(request_timeout: Duration) -> Self {
        Self::start_with(|settings| settings.request_timeout = request_timeout).await
    }

    async fn start_with(adjust: impl FnOnce(&mut RelaySettings)) -> Self {
        let key = SigningKey::generate();
        let (ca, tls) = test_ca();
        let mut settings =
            RelaySettings::new("127.0.0.1:0".parse().unwrap(), key.public_pem.clone(), tls);
        adjust(&mut settings);
        let relay = Relay::bind(settings).await.expect("bind the relay");
        let addr = relay.local_addr();
        let task = tokio::spawn(relay.run_until_stopped());
        Self {
            addr,
            key,
            ca,
            task,
        }
    }

    /// Open a WebSocket to `path`, with `Authorization: <authorization>` when given,
    /// presenting the certificate a well-behaved peer would ([`identity_for`]).
    async fn connect(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Peer, tokio_tungstenite::tungstenite::Error> {
        let tls = client_tls(&self.ca, &self.ca, identity_for(path, authorization));
        self.connect_with(&tls, path, authorization).await
    }

    /// Open a WebSocket to `path` presenting `tls`'s certificate.
    async fn connect_with(
        &self,
        tls: &ClientTls,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Peer, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("wss://{}{path}", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        let (ws, _) =
            tokio::time::timeout(DEADLINE, berth_tls::connect_websocket(request, tls, None))
                .await
                .expect("the relay answers the upgrade in time")?;
        Ok(Peer { ws })
    }

    /// The HTTP status the relay answers an upgrade with, when it refuses it.
    async fn refusal(&self, path: &str, authorization: Option<&str>) -> StatusCode {
        let tls = client_tls(&self.ca, &self.ca, identity_for(path, authorization));
        self.refusal_with(&tls, path, authorization).await
    }

    /// The same, presenting `tls`'s certificate.
    async fn refusal_with(
        &self,
        tls: &ClientTls,
        path: &str,
        authorization: Option<&str>,
    ) -> StatusCode {
        match self.connect_with(tls, path, authorization).await {
            Ok(_) => panic!("the relay accepted a connection to {path} it should refuse"),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status(),
            Err(other) => panic!("expected an HTTP refusal, got {other}"),
        }
    }

    /// An agent of `instance` that has connected and reported `containers`.
    async fn agent(&self, instance: Uuid, containers: Vec<ObservedContainer>) -> Peer {
        let token = self.key.agent_token(instance, 3600);
        let mut agent = self
            .connect(RELAY_AGENT_PATH, Some(&format!("Bearer {token}")))
            .await
            .expect("an agent with a valid credential connects");
        agent
            .send(&AgentToRelay::State {
                containers,
                session: None,
            })
            .await;
        agent
    }

    /// A service that has connected and read the relay's `Agents` greeting.
    async fn service(&self) -> (Peer, Vec<Uuid>) {
        let token = self.key.service_token(3600);
        let mut service = self
            .connect(RELAY_SERVICE_PATH, Some(&format!("Bearer {token}")))
            .await
            .expect("a service with a valid credential connects");
        match service.recv::<RelayToService>().await {
            RelayToService::Agents { instances } => (service, instances),
            other => panic!("a service's first message should be Agents, got {other:?}"),
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection, agent or service.
struct Peer {
    ws: WebSocketStream<berth_tls::ClientStream>,
}

impl Peer {
    async fn send<T: Serialize>(&mut self, message: &T) {
        let text = serde_json::to_string(message).unwrap();
        self.ws
            .send(Message::text(text))
            .await
            .expect("send a frame");
    }

    /// The next relay message, skipping pings; fails the test after [`DEADLINE`].
    async fn recv<T: DeserializeOwned>(&mut self) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a message arrives before the deadline")
                .expect("the connection is still open")
                .expect("the connection reads cleanly");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("a relay message")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Wait for the relay to close this connection; returns the close code it sent.
    async fn closed(&mut self) -> Option<CloseCode> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("the relay closes the connection before the deadline")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

fn observed(uuid: Uuid, state: RuntimeState) -> ObservedContainer {
    ObservedContainer {
        uuid,
        runtime_id: "0123456789abcdef".repeat(4),
        state,
        exit_code: None,
        oom_killed: false,
        error: None,
        started_at: None,
        finished_at: None,
        ports: Vec::new(),
        restart_count: 0,
    }
}

fn start(container: Uuid) -> Command {
    Command::Start { container }
}

fn command_for(request: Uuid, instance: Uuid, command: Command) -> ServiceToRelay {
    ServiceToRelay::Command {
        request,
        instance,
        action: Some(Uuid::new_v4()),
        command,
        token: format!("signed-{request}"),
    }
}

/// Assert that `reply` is the relay's `Unavailable` error, and return its message.
fn unavailable_message(reply: RelayToService, request: Uuid) -> String {
    match reply {
        RelayToService::Reply {
            request: answered,
            reply: Err(AgentError { kind, message }),
        } if answered == request => {
            assert_eq!(kind, AgentErrorKind::Unavailable, "{message}");
            message
        }
        other => panic!("expected an Unavailable reply to {request}, got {other:?}"),
    }
}

/// Make `service` and `agent` exchange one command, proving that nothing else was
/// queued for either of them before it.
async fn round_trip(service: &mut Peer, agent: &mut Peer, instance: Uuid) {
    let request = Uuid::new_v4();
    let container = Uuid::new_v4();
    service
        .send(&command_for(request, instance, start(container)))
        .await;
    match agent.recv::<RelayToAgent>().await {
        RelayToAgent::Command {
            request: got,
            command,
            ..
        } => {
            assert_eq!(got, request);
            assert_eq!(command, start(container));
        }
        other => panic!("expected the round-trip command, got {other:?}"),
    }
    agent
        .send(&AgentToRelay::Reply {
            request,
            reply: Ok(Outcome::Done),
        })
        .await;
    assert_eq!(
        service.recv::<RelayToService>().await,
        RelayToService::Reply {
            request,
            reply: Ok(Outcome::Done)
        }
    );
}

#[tokio::test]
async fn a_command_reaches_the_agent_of_its_instance_and_the_reply_returns_only_to_its_sender() {
    let relay = TestRelay::start().await;
    let (mut sender, _) = relay.service().await;
    let (mut bystander, _) = relay.service().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut agent_a = relay.agent(a, Vec::new()).await;
    let mut agent_b = relay.agent(b, Vec::new()).await;
    // Both services hear both agents connect: the agents are now registered.
    for service in [&mut sender, &mut bystander] {
        for _ in 0..2 {
            assert!(matches!(
                service.recv::<RelayToService>().await,
                RelayToService::AgentConnected { .. }
            ));
        }
    }

    let request = Uuid::new_v4();
    let action = Some(Uuid::new_v4());
    let container = Uuid::new_v4();
    sender
        .send(&ServiceToRelay::Command {
            request,
            instance: a,
            action,
            command: Command::Inspect { container },
            token: "the.service's.signature".to_owned(),
        })
        .await;
    assert_eq!(
        agent_a.recv::<RelayToAgent>().await,
        RelayToAgent::Command {
            request,
            action,
            command: Command::Inspect { container },
            token: "the.service's.signature".to_owned(),
        }
    );
    let outcome = Outcome::Container(observed(container, RuntimeState::Running));
    agent_a
        .send(&AgentToRelay::Reply {
            request,
            reply: Ok(outcome.clone()),
        })
        .await;
    assert_eq!(
        sender.recv::<RelayToService>().await,
        RelayToService::Reply {
            request,
            reply: Ok(outcome)
        }
    );

    // Agent B got nothing before its own command, and the bystander got no copy of the
    // reply before its own.
    round_trip(&mut bystander, &mut agent_b, b).await;
}

#[tokio::test]
async fn an_agent_credential_is_refused_on_the_service_path_and_a_service_credential_on_the_agent_path(
) {
    let relay = TestRelay::start().await;
    let agent_token = relay.key.agent_token(Uuid::new_v4(), 3600);
    let service_token = relay.key.service_token(3600);
    assert_eq!(
        relay
            .refusal(RELAY_SERVICE_PATH, Some(&format!("Bearer {agent_token}")))
            .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        relay
            .refusal(RELAY_AGENT_PATH, Some(&format!("Bearer {service_token}")))
            .await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_agent_certificate_for_another_instance_is_refused_with_the_agents_own_credential() {
    let relay = TestRelay::start().await;
    let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());
    let token = relay.key.agent_token(mine, 3600);
    let auth = format!("Bearer {token}");
    let others = client_tls(&relay.ca, &relay.ca, Identity::Instance(other));
    assert_eq!(
        relay
            .refusal_with(&others, RELAY_AGENT_PATH, Some(&auth))
            .await,
        StatusCode::UNAUTHORIZED
    );
    // With its own instance's certificate the same credential is admitted.
    let own = client_tls(&relay.ca, &relay.ca, Identity::Instance(mine));
    relay
        .connect_with(&own, RELAY_AGENT_PATH, Some(&auth))
        .await
        .expect("the matching certificate and credential are admitted");
}

#[tokio::test]
async fn the_services_certificate_is_refused_on_the_agent_path_and_an_agents_on_the_service_path() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let agent_auth = format!("Bearer {}", relay.key.agent_token(instance, 3600));
    let service_auth = format!("Bearer {}", relay.key.service_token(3600));
    let service_cert = client_tls(&relay.ca, &relay.ca, Identity::Service);
    let agent_cert = client_tls(&relay.ca, &relay.ca, Identity::Instance(instance));
    assert_eq!(
        relay
            .refusal_with(&service_cert, RELAY_AGENT_PATH, Some(&agent_auth))
            .await,
        StatusCode::UNAUTHORIZED,
        "a service certificate with an agent credential"
    );
    assert_eq!(
        relay
            .refusal_with(&agent_cert, RELAY_SERVICE_PATH, Some(&service_auth))
            .await,
        StatusCode::UNAUTHORIZED,
        "an agent certificate with the service credential"
    );
    // Each with its own kind of certificate is admitted.
    relay
        .connect_with(&agent_cert, RELAY_AGENT_PATH, Some(&agent_auth))
        .await
        .expect("an agent with its certificate");
    relay
        .connect_with(&service_cert, RELAY_SERVICE_PATH, Some(&service_auth))
        .await
        .expect("the service with its certificate");
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_at_the_tls_handshake() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let auth = format!("Bearer {}", relay.key.agent_token(instance, 3600));
    let other = Ca::generate("another CA", DAY).unwrap();
    // The relay's certificate is trusted, the client's is not the deployment's.
    let foreign = client_tls(&relay.ca, &other, Identity::Instance(instance));
    match relay
        .connect_with(&foreign, RELAY_AGENT_PATH, Some(&auth))
        .await
    {
        Ok(_) => panic!("a certificate of another CA was admitted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            panic!(
                "refused only at the upgrade ({}), not the handshake",
                response.status()
            )
        }
        Err(_) => {}
    }
    // And a client that trusts another CA does not accept the relay's certificate.
    let wary = client_tls(&other, &relay.ca, Identity::Instance(instance));
    let err = relay
        .connect_with(&wary, RELAY_AGENT_PATH, Some(&auth))
        .await
        .err()
        .expect("the relay's certificate is not trusted");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
}

#[tokio::test]
async fn a_plain_websocket_without_tls_is_refused() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let mut request = format!("ws://{}{RELAY_AGENT_PATH}", relay.addr)
        .into_client_request()
        .unwrap();
    let auth = format!("Bearer {}", relay.key.agent_token(instance, 3600));
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
    let plain = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
        .await
        .expect("the relay answers in time");
    assert!(plain.is_err(), "a plain ws:// connection was upgraded");
    // The dialer itself refuses a ws:// URL before connecting.
    let tls = client_tls(&relay.ca, &relay.ca, Identity::Instance(instance));
    let dialled =
        berth_tls::connect_websocket(format!("ws://{}{RELAY_AGENT_PATH}", relay.addr), &tls, None)
            .await;
    let Err(err) = dialled else {
        panic!("ws:// was dialled")
    };
    assert!(err.to_string().contains("wss://"), "{err}");
    // The relay still serves TLS clients.
    relay.agent(instance, Vec::new()).await;
}

#[tokio::test]
async fn missing_malformed_expired_and_foreign_credentials_get_401() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let expired = relay.key.agent_token(instance, -3600);
    let foreign = SigningKey::generate().agent_token(instance, 3600);
    let valid = relay.key.agent_token(instance, 3600);
    let cases = [
        ("missing", None),
        ("not a JWT", Some("Bearer not-a-token".to_owned())),
        ("expired", Some(format!("Bearer {expired}"))),
        ("signed by another key", Some(format!("Bearer {foreign}"))),
        ("not a Bearer scheme", Some(format!("Basic {valid}"))),
    ];
    for (case, authorization) in cases {
        for path in [RELAY_AGENT_PATH, RELAY_SERVICE_PATH] {
            assert_eq!(
                relay.refusal(path, authorization.as_deref()).await,
                StatusCode::UNAUTHORIZED,
                "{case} credential on {path}"
            );
        }
    }
    // The same relay admits the valid credential, so the refusals above were about the
    // credentials.
    relay.agent(instance, Vec::new()).await;
}

#[tokio::test]
async fn a_path_other_than_the_agent_and_service_paths_gets_404() {
    let relay = TestRelay::start().await;
    let token = relay.key.service_token(3600);
    assert_eq!(
        relay
            .refusal("/v1/other", Some(&format!("Bearer {token}")))
            .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(relay.refusal("/", None).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_command_for_an_instance_without_an_agent_gets_unavailable_at_once() {
    let relay = TestRelay::start().await;
    let (mut service, instances) = relay.service().await;
    assert!(instances.is_empty());
    let (request, instance) = (Uuid::new_v4(), Uuid::new_v4());
    service
        .send(&command_for(request, instance, start(Uuid::new_v4())))
        .await;
    let message = unavailable_message(service.recv().await, request);
    assert_eq!(
        message,
        format!("no agent is connected for instance {instance}; retry when it reconnects")
    );
}

#[tokio::test]
async fn an_agent_disconnecting_with_a_pending_request_yields_unavailable_and_agent_disconnected() {
    let relay = TestRelay::start().await;
    let (mut service, _) = relay.service().await;
    let instance = Uuid::new_v4();
    let mut agent = relay.agent(instance, Vec::new()).await;
    assert!(matches!(
        service.recv().await,
        RelayToService::AgentConnected { .. }
    ));

    let request = Uuid::new_v4();
    service
        .send(&command_for(request, instance, start(Uuid::new_v4())))
        .await;
    assert!(matches!(
        agent.recv().await,
        RelayToAgent::Command { request: got, .. } if got == request
    ));
    agent.ws.close(None).await.unwrap();
    drop(agent);

    let message = unavailable_message(service.recv().await, request);
    assert_eq!(
        message,
        format!("the agent of instance {instance} disconnected before replying; the command is safe to retry")
    );
    assert_eq!(
        service.recv::<RelayToService>().await,
        RelayToService::AgentDisconnected { instance }
    );
    // And the instance is now unreachable.
    let next = Uuid::new_v4();
    service
        .send(&command_for(next, instance, start(Uuid::new_v4())))
        .await;
    unavailable_message(service.recv().await, next);
}

#[tokio::test]
async fn agent_state_events_and_disconnection_reach_every_service() {
    let relay = TestRelay::start().await;
    let (mut first, _) = relay.service().await;
    let (mut second, _) = relay.service().await;
    let instance = Uuid::new_v4();
    let container = Uuid::new_v4();
    let state = vec![observed(container, RuntimeState::Running)];
    let mut agent = relay.agent(instance, state.clone()).await;
    let exited = ContainerEvent::Changed {
        container: observed(container, RuntimeState::Exited),
    };
    let session = Uuid::new_v4();
    agent
        .send(&AgentToRelay::Event {
            seq: 1,
            event: exited.clone(),
            session: Some(session),
        })
        .await;
    agent
        .send(&AgentToRelay::Event {
            seq: 2,
            event: ContainerEvent::Removed { uuid: container },
            session: Some(session),
        })
        .await;
    agent.ws.close(None).await.unwrap();

    for service in [&mut first, &mut second] {
        assert_eq!(
            service.recv::<RelayToService>().await,
            RelayToService::AgentConnected {
                instance,
                containers: state.clone(),
                session: None,
            }
        );
        assert_eq!(
            service.recv::<RelayToService>().await,
            RelayToService::Event {
                instance,
                seq: 1,
                event: exited.clone(),
                session: Some(session),
            }
        );
        assert_eq!(
            service.recv::<RelayToService>().await,
            RelayToService::Event {
                instance,
                seq: 2,
                event: ContainerEvent::Removed { uuid: container },
                session: Some(session),
            }
        );
        assert_eq!(
            service.recv::<RelayToService>().await,
            RelayToService::AgentDisconnected { instance }
        );
    }
}

#[tokio::test]
async fn a_new_service_learns_the_connected_agents_and_each_agent_is_asked_to_resync() {
    let relay = TestRelay::start().await;
    let (mut first, _) = relay.service().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut agent_a = relay.agent(a, Vec::new()).await;
    let mut agent_b = relay.agent(b, Vec::new()).await;
    for _ in 0..2 {
        assert!(matches!(
            first.recv().await,
            RelayToService::AgentConnected { .. }
        ));
    }

    let (mut late, mut instances) = relay.service().await;
    instances.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(instances, expected);
    for agent in [&mut agent_a, &mut agent_b] {
        assert_eq!(agent.recv::<RelayToAgent>().await, RelayToAgent::Resync);
    }

    // The resynced state reaches the late service.
    let container = Uuid::new_v4();
    let state = vec![observed(container, RuntimeState::Paused)];
    agent_a
        .send(&AgentToRelay::State {
            containers: state.clone(),
            session: None,
        })
        .await;
    assert_eq!(
        late.recv::<RelayToService>().await,
        RelayToService::AgentConnected {
            instance: a,
            containers: state,
            session: None,
        }
    );
}

#[tokio::test]
async fn a_command_the_agent_does_not_answer_in_time_gets_unavailable_and_a_late_reply_is_dropped()
{
    let relay = TestRelay::start_with_timeout(Duration::from_millis(300)).await;
    let (mut service, _) = relay.service().await;
    let instance = Uuid::new_v4();
    let mut agent = relay.agent(instance, Vec::new()).await;
    assert!(matches!(
        service.recv().await,
        RelayToService::AgentConnected { .. }
    ));

    let request = Uuid::new_v4();
    service
        .send(&command_for(request, instance, start(Uuid::new_v4())))
        .await;
    assert!(matches!(agent.recv().await, RelayToAgent::Command { .. }));
    let message = unavailable_message(service.recv().await, request);
    assert_eq!(
        message,
        format!("timed out after 0.3 s waiting for the agent of instance {instance}")
    );

    agent
        .send(&AgentToRelay::Reply {
            request,
            reply: Ok(Outcome::Done),
        })
        .await;
    // The service's next message is the reply to its next command, not the late one.
    round_trip(&mut service, &mut agent, instance).await;
}

#[tokio::test]
async fn an_agent_cannot_answer_a_request_sent_to_another_instance() {
    let relay = TestRelay::start().await;
    let (mut service, _) = relay.service().await;
    let (victim, intruder) = (Uuid::new_v4(), Uuid::new_v4());
    let mut victim_agent = relay.agent(victim, Vec::new()).await;
    let mut intruder_agent = relay.agent(intruder, Vec::new()).await;
    for _ in 0..2 {
        assert!(matches!(
            service.recv().await,
            RelayToService::AgentConnected { .. }
        ));
    }

    let request = Uuid::new_v4();
    service
        .send(&command_for(request, victim, start(Uuid::new_v4())))
        .await;
    assert!(matches!(
        victim_agent.recv().await,
        RelayToAgent::Command { .. }
    ));
    intruder_agent
        .send(&AgentToRelay::Reply {
            request,
            reply: Ok(Outcome::Logs("forged".to_owned())),
        })
        .await;
    // The intruder's frame is handled before the victim's reply is even sent; the
    // service must still get the victim's answer.
    round_trip(&mut service, &mut intruder_agent, intruder).await;
    victim_agent
        .send(&AgentToRelay::Reply {
            request,
            reply: Ok(Outcome::Done),
        })
        .await;
    assert_eq!(
        service.recv::<RelayToService>().await,
        RelayToService::Reply {
            request,
            reply: Ok(Outcome::Done)
        }
    );
}

#[tokio::test]
async fn a_newer_agent_connection_replaces_and_closes_the_older_one() {
    let relay = TestRelay::start().await;
    let (mut service, _) = relay.service().await;
    let instance = Uuid::new_v4();
    let mut old = relay.agent(instance, Vec::new()).await;
    assert!(matches!(
        service.recv().await,
        RelayToService::AgentConnected { .. }
    ));
    let mut new = relay.agent(instance, Vec::new()).await;
    assert_eq!(old.closed().await, Some(CloseCode::Normal));
    assert!(matches!(
        service.recv().await,
        RelayToService::AgentConnected { instance: got, .. } if got == instance
    ));
    // Commands now reach the new connection, and the old one's closing did not make
    // the relay announce the instance as disconnected.
    round_trip(&mut service, &mut new, instance).await;
}

#[tokio::test]
async fn a_connection_that_sends_something_other_than_relay_json_is_closed() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let mut agent = relay.agent(instance, Vec::new()).await;
    agent
        .ws
        .send(Message::text("{\"type\":\"no_such_message\"}"))
        .await
        .unwrap();
    assert_eq!(agent.closed().await, Some(CloseCode::Invalid));
}

#[tokio::test]
async fn a_client_over_the_connection_cap_waits_until_a_connection_closes() {
    let relay = std::sync::Arc::new(TestRelay::start_with(|s| s.max_connections = 1).await);
    let (mut first, _) = relay.service().await;
    let mut second = tokio::spawn({
        let relay = std::sync::Arc::clone(&relay);
        async move { relay.service().await }
    });
    // Proving that something does not happen takes a bounded wait; the cap holds the
    // second client in the backlog for as long as the first one stays.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut second)
            .await
            .is_err(),
        "a second client was served while the only slot was taken"
    );
    first.ws.close(None).await.unwrap();
    let (_second, instances) = tokio::time::timeout(DEADLINE, second)
        .await
        .expect("the waiting client is served once the slot frees")
        .unwrap();
    assert!(instances.is_empty());
}

#[tokio::test]
async fn binding_with_a_key_that_is_not_a_pem_public_key_fails() {
    let (_, tls) = test_ca();
    let settings = RelaySettings::new("127.0.0.1:0".parse().unwrap(), "not a key", tls);
    let error = Relay::bind(settings)
        .await
        .err()
        .expect("bind refuses the key");
    assert!(
        error
            .to_string()
            .contains("not a PEM-encoded EC public key"),
        "{error:#}"
    );
}

#[tokio::test]
async fn a_revoked_instances_agent_is_closed_and_refused_while_other_agents_stay() {
    let relay = TestRelay::start().await;
    let (mut service, _) = relay.service().await;
    let (gone, kept) = (Uuid::new_v4(), Uuid::new_v4());
    let mut gone_agent = relay.agent(gone, Vec::new()).await;
    let mut kept_agent = relay.agent(kept, Vec::new()).await;
    for _ in 0..2 {
        assert!(matches!(
            service.recv().await,
            RelayToService::AgentConnected { .. }
        ));
    }

    service
        .send(&ServiceToRelay::Revoke {
            instances: vec![gone],
        })
        .await;
    assert_eq!(gone_agent.closed().await, Some(CloseCode::Policy));
    assert_eq!(
        service.recv::<RelayToService>().await,
        RelayToService::AgentDisconnected { instance: gone }
    );

    // Its still validly signed credential no longer opens a connection.
    let token = relay.key.agent_token(gone, 3600);
    assert_eq!(
        relay
            .refusal(RELAY_AGENT_PATH, Some(&format!("Bearer {token}")))
            .await,
        StatusCode::UNAUTHORIZED
    );
    // Commands for it find no agent, while the other instance is served as before.
    let request = Uuid::new_v4();
    service
        .send(&command_for(request, gone, start(Uuid::new_v4())))
        .await;
    let message = unavailable_message(service.recv().await, request);
    assert!(message.contains("no agent is connected"), "{message}");
    round_trip(&mut service, &mut kept_agent, kept).await;
}

#[tokio::test]
async fn a_revocation_outlives_the_service_connection_that_sent_it() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    {
        let (mut service, _) = relay.service().await;
        service
            .send(&ServiceToRelay::Revoke {
                instances: vec![instance],
            })
            .await;
        // The relay handles one connection's messages in order, so the reply to a
        // later command shows the revocation was taken in.
        let request = Uuid::new_v4();
        service
            .send(&command_for(request, instance, start(Uuid::new_v4())))
            .await;
        unavailable_message(service.recv().await, request);
    }
    let token = relay.key.agent_token(instance, 3600);
    assert_eq!(
        relay
            .refusal(RELAY_AGENT_PATH, Some(&format!("Bearer {token}")))
            .await,
        StatusCode::UNAUTHORIZED
    );
    // Another instance's agent still connects.
    let (mut service, _) = relay.service().await;
    let other = Uuid::new_v4();
    let mut agent = relay.agent(other, Vec::new()).await;
    assert!(matches!(
        service.recv().await,
        RelayToService::AgentConnected { instance: got, .. } if got == other
    ));
    round_trip(&mut service, &mut agent, other).await;
}

fn logs_open(container: Uuid) -> StreamOpen {
    StreamOpen::Logs {
        container,
        stdout: true,
        stderr: true,
        timestamps: false,
        tail: None,
        since: None,
        until: None,
        follow: true,
    }
}

fn data(channel: Channel, bytes: &[u8]) -> StreamMessage {
    StreamMessage::Data(StreamData {
        channel,
        data: bytes.to_vec(),
    })
}

/// A service and the agents of `instances`, with the service having heard each connect.
async fn service_and_agents(relay: &TestRelay, instances: &[Uuid]) -> (Peer, Vec<Peer>) {
    let (mut service, _) = relay.service().await;
    let mut agents = Vec::new();
    for instance in instances {
        agents.push(relay.agent(*instance, Vec::new()).await);
        assert!(matches!(
            service.recv().await,
            RelayToService::AgentConnected { .. }
        ));
    }
    (service, agents)
}

/// Open a stream from `service` to the agent of `instance` and check that it arrives.
async fn open_stream(service: &mut Peer, agent: &mut Peer, instance: Uuid) -> Uuid {
    let stream = Uuid::new_v4();
    let action = Some(Uuid::new_v4());
    let open = logs_open(Uuid::new_v4());
    service
        .send(&ServiceToRelay::StreamOpen {
            stream,
            instance,
            action,
            open: open.clone(),
            token: format!("signed-stream-{stream}"),
        })
        .await;
    assert_eq!(
        agent.recv::<RelayToAgent>().await,
        RelayToAgent::StreamOpen {
            stream,
            action,
            open,
            token: format!("signed-stream-{stream}"),
        }
    );
    stream
}

/// Assert that `message` ends `stream` with an `Unavailable` failure; returns its text.
fn unavailable_end(message: RelayToService, stream: Uuid) -> String {
    match message {
        RelayToService::Stream {
            stream: got,
            message:
                StreamMessage::End(StreamEnd::Failed {
                    error: AgentError { kind, message },
                }),
        } if got == stream => {
            assert_eq!(kind, AgentErrorKind::Unavailable, "{message}");
            message
        }
        other => panic!("expected stream {stream} to end Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_travels_both_ways_between_its_service_and_agent_and_is_forgotten_on_end() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let (mut service, mut agents) = service_and_agents(&relay, &[instance]).await;
    let agent = &mut agents[0];
    let (mut bystander, _) = relay.service().await;
    assert!(matches!(agent.recv().await, RelayToAgent::Resync));
    let stream = open_stream(&mut service, agent, instance).await;

    agent
        .send(&AgentToRelay::Stream {
            stream,
            message: data(Channel::Stdout, b"hello\n"),
        })
        .await;
    assert_eq!(
        service.recv::<RelayToService>().await,
        RelayToService::Stream {
            stream,
            message: data(Channel::Stdout, b"hello\n")
        }
    );
    for message in [
        data(Channel::Stdin, b"typed"),
        StreamMessage::Credit { bytes: 6 },
        StreamMessage::Resize {
            height: 24,
            width: 80,
        },
        StreamMessage::CloseStdin,
    ] {
        service
            .send(&ServiceToRelay::Stream {
                stream,
                instance,
                message: message.clone(),
            })
            .await;
        assert_eq!(
            agent.recv::<RelayToAgent>().await,
            RelayToAgent::Stream { stream, message }
        );
    }
    let end = StreamMessage::End(StreamEnd::Exited { code: Some(3) });
    agent
        .send(&AgentToRelay::Stream {
            stream,
            message: end.clone(),
        })
        .await;
    assert_eq!(
        service.recv::<RelayToService>().await,
        RelayToService::Stream {
            stream,
            message: end
        }
    );

    // Once ended, the stream is gone: late output and input go nowhere.
    agent
        .send(&AgentToRelay::Stream {
            stream,
            message: data(Channel::Stdout, b"late"),
        })
        .await;
    service
        .send(&ServiceToRelay::Stream {
            stream,
            instance,
            message: data(Channel::Stdin, b"late"),
        })
        .await;
    round_trip(&mut service, agent, instance).await;
    // The bystander heard nothing of the stream.
    round_trip(&mut bystander, agent, instance).await;
}

#[tokio::test]
async fn a_stream_to_an_instance_without_an_agent_ends_unavailable_at_once() {
    let relay = TestRelay::start().await;
    let (mut service, _) = relay.service().await;
    let (stream, instance) = (Uuid::new_v4(), Uuid::new_v4());
    service
        .send(&ServiceToRelay::StreamOpen {
            stream,
            instance,
            action: None,
            open: logs_open(Uuid::new_v4()),
            token: String::new(),
        })
        .await;
    let message = unavailable_end(service.recv().await, stream);
    assert!(message.contains(&instance.to_string()), "{message}");
}

#[tokio::test]
async fn an_agent_disconnecting_ends_its_open_streams_unavailable() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let (mut service, mut agents) = service_and_agents(&relay, &[instance]).await;
    let mut agent = agents.pop().unwrap();
    let first = open_stream(&mut service, &mut agent, instance).await;
    let second = open_stream(&mut service, &mut agent, instance).await;
    agent.ws.close(None).await.unwrap();
    drop(agent);

    let mut ended = Vec::new();
    for _ in 0..2 {
        match service.recv::<RelayToService>().await {
            RelayToService::Stream { stream, message } => {
                let text = unavailable_end(RelayToService::Stream { stream, message }, stream);
                assert!(text.contains("retry"), "{text}");
                ended.push(stream);
            }
            other => panic!("expected the streams to end first, got {other:?}"),
        }
    }
    ended.sort();
    let mut opened = vec![first, second];
    opened.sort();
    assert_eq!(ended, opened);
    assert_eq!(
        service.recv::<RelayToService>().await,
        RelayToService::AgentDisconnected { instance }
    );
}

#[tokio::test]
async fn an_agent_cannot_send_on_a_stream_opened_to_another_instance() {
    let relay = TestRelay::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (mut service, mut agents) = service_and_agents(&relay, &[a, b]).await;
    let (agent_a, agent_b) = agents.split_at_mut(1);
    let (agent_a, agent_b) = (&mut agent_a[0], &mut agent_b[0]);
    let stream = open_stream(&mut service, agent_a, a).await;

    agent_b
        .send(&AgentToRelay::Stream {
            stream,
            message: data(Channel::Stdout, b"forged"),
        })
        .await;
    agent_b
        .send(&AgentToRelay::Stream {
            stream,
            message: StreamMessage::End(StreamEnd::Finished),
        })
        .await;
    // The service heard nothing from B, and the stream still works for A.
    round_trip(&mut service, agent_b, b).await;
    agent_a
        .send(&AgentToRelay::Stream {
            stream,
            message: data(Channel::Stdout, b"real"),
        })
        .await;
    assert_eq!(
        service.recv::<RelayToService>().await,
        RelayToService::Stream {
            stream,
            message: data(Channel::Stdout, b"real")
        }
    );
    // Nor can a service address the stream as if it ran on another instance.
    service
        .send(&ServiceToRelay::Stream {
            stream,
            instance: b,
            message: data(Channel::Stdin, b"misrouted"),
        })
        .await;
    round_trip(&mut service, agent_b, b).await;
    round_trip(&mut service, agent_a, a).await;
}

#[tokio::test]
async fn a_service_leaving_cancels_its_streams_on_the_agents() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let (mut service, mut agents) = service_and_agents(&relay, &[instance]).await;
    let agent = &mut agents[0];
    let stream = open_stream(&mut service, agent, instance).await;
    service.ws.close(None).await.unwrap();
    drop(service);
    assert_eq!(
        agent.recv::<RelayToAgent>().await,
        RelayToAgent::Stream {
            stream,
            message: StreamMessage::Cancel
        }
    );
}

#[tokio::test]
async fn a_service_that_stops_reading_a_stream_is_closed_instead_of_growing_the_relay() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let (mut service, mut agents) = service_and_agents(&relay, &[instance]).await;
    let agent = &mut agents[0];
    let stream = open_stream(&mut service, agent, instance).await;

    // The agent floods the stream (ignoring credit, as a broken agent might) while the
    // service reads nothing: the relay's bounded queue fills, it closes the service,
    // forgets the service's stream and tells the agent to stop.
    let chunk = data(
        Channel::Stdout,
        &[b'x'; berth_proto::stream::MAX_DATA_CHUNK],
    );
    let mut cancelled = false;
    for _ in 0..100_000 {
        agent
            .send(&AgentToRelay::Stream {
                stream,
                message: chunk.clone(),
            })
            .await;
        if let Some(frame) = agent.ws.next().now_or_never() {
            let frame = frame
                .expect("the agent stays connected")
                .expect("reads cleanly");
            let Message::Text(text) = frame else { continue };
            match serde_json::from_str::<RelayToAgent>(&text).expect("a relay message") {
                RelayToAgent::Stream {
                    stream: got,
                    message: StreamMessage::Cancel,
                } if got == stream => {
                    cancelled = true;
                    break;
                }
                RelayToAgent::Resync => {}
                other => panic!("expected the stream's cancel, got {other:?}"),
            }
        }
    }
    assert!(cancelled, "the relay never gave up on the stalled service");
    assert_eq!(service.closed().await, Some(CloseCode::Again));
}

/// The relay carries the service's command tokens byte for byte: it cannot sign, so it
/// must not touch them (the agent checks them against the command it receives).
#[tokio::test]
async fn command_and_stream_tokens_pass_through_the_relay_unchanged() {
    let relay = TestRelay::start().await;
    let instance = Uuid::new_v4();
    let (mut service, mut agents) = service_and_agents(&relay, &[instance]).await;
    let agent = &mut agents[0];
    // A real ES256 JWS shape, with characters JSON must escape around it.
    let token = format!(
        "{}.{}.{}",
        relay.key.service_token(60),
        "\"quoted\"\\back/slash\u{e9}",
        Uuid::new_v4()
    );
    let request = Uuid::new_v4();
    service
        .send(&ServiceToRelay::Command {
            request,
            instance,
            action: None,
            command: start(Uuid::new_v4()),
            token: token.clone(),
        })
        .await;
    match agent.recv::<RelayToAgent>().await {
        RelayToAgent::Command {
            request: got,
            token: carried,
            ..
        } => {
            assert_eq!(got, request);
            assert_eq!(carried, token);
        }
        other => panic!("expected the command, got {other:?}"),
    }
    let stream = Uuid::new_v4();
    service
        .send(&ServiceToRelay::StreamOpen {
            stream,
            instance,
            action: None,
            open: logs_open(Uuid::new_v4()),
            token: token.clone(),
        })
        .await;
    match agent.recv::<RelayToAgent>().await {
        RelayToAgent::StreamOpen {
            stream: got,
            token: carried,
            ..
        } => {
            assert_eq!(got, stream);
            assert_eq!(carried, token);
        }
        other => panic!("expected the stream open, got {other:?}"),
    }
}

#[tokio::test]
async fn an_ack_from_a_service_reaches_the_agent_of_its_instance_only() {
    let relay = TestRelay::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (mut service, mut agents) = service_and_agents(&relay, &[a, b]).await;
    let session = Uuid::new_v4();
    service
        .send(&ServiceToRelay::Ack {
            instance: b,
            session,
            seq: 7,
        })
        .await;
    assert_eq!(
        agents[1].recv::<RelayToAgent>().await,
        RelayToAgent::Ack { session, seq: 7 }
    );
    // The other agent still gets its own traffic next, and no ack before it.
    round_trip(&mut service, &mut agents[0], a).await;
}

/// A service connecting to a relay that already holds more agents than a connection's
/// queue has room for still hears every agent's report, even when it reads nothing for
/// a while: the relay asks the agents to resync only as fast as the service reads.
#[tokio::test]
async fn a_late_service_hears_every_agent_even_when_there_are_more_than_its_queue_holds() {
    let relay = TestRelay::start().await;
    // More than a connection's queue holds (256 messages, relay/src/router.rs).
    let count = 800;
    let mut instances = Vec::with_capacity(count);
    let mut answering = tokio::task::JoinSet::new();
    for _ in 0..count {
        let instance = Uuid::new_v4();
        instances.push(instance);
        let mut agent = relay.agent(instance, Vec::new()).await;
        // Each agent answers every resync with its (empty) state, as a real one does.
        answering.spawn(async move {
            loop {
                match agent.recv::<RelayToAgent>().await {
                    RelayToAgent::Resync => {
                        agent
                            .send(&AgentToRelay::State {
                                containers: Vec::new(),
                                session: None,
                            })
                            .await
                    }
                    other => panic!("expected only resyncs, got {other:?}"),
                }
            }
        });
    }

    let (mut late, mut listed) = relay.service().await;
    listed.sort();
    instances.sort();
    assert_eq!(listed, instances);
    // Read nothing for a while: an unpaced resync would overflow the queue now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut heard = Vec::with_capacity(count);
    while heard.len() < count {
        match late.recv::<RelayToService>().await {
            RelayToService::AgentConnected { instance, .. } => heard.push(instance),
            other => panic!("expected the agents' reports, got {other:?}"),
        }
    }
    heard.sort();
    assert_eq!(heard, instances, "every agent was heard exactly once");
    answering.abort_all();
}
