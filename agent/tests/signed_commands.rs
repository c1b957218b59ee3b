//! Signed commands and idempotent retries, end to end: a real agent on this machine's
//! Docker engine, dialled by a relay played by the test over a real WebSocket.
//!
//! Every test acts for a fresh instance and removes that instance's containers when
//! it ends. The image is `berth-test/busybox:latest` (built by scripts/build-test-image).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_agent::{Agent, AgentSettings};
use berth_proto::{
    AgentErrorKind, AgentToRelay, Command, ContainerSpec, Outcome, RelayToAgent, Reply,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

mod signing;
mod specs;
mod tls;

/// Generous: the engine is shared with other builds and tests.
const DEADLINE: Duration = Duration::from_secs(60);

/// The containers of `instance` on the engine, by `docker ps -a`.
fn containers_of(instance: Uuid) -> Vec<String> {
    let filter = format!("label={}={instance}", berth_proto::LABEL_INSTANCE);
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Removes every container of the test's instance when dropped.
struct Cleanup(Uuid);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = containers_of(self.0);
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

fn spec() -> ContainerSpec {
    specs::container_spec("signed", &["sleep", "300"])
}

/// The relay's end of one agent's connection.
struct Relay {
    instance: Uuid,
    ws: WebSocketStream<berth_tls::ServerStream>,
    _agent: tokio::task::JoinHandle<anyhow::Result<()>>,
    _cleanup: Cleanup,
}

impl Relay {
    /// Start an agent for a fresh instance and accept its connection.
    async fn connect() -> Relay {
        let instance = Uuid::new_v4();
        let cleanup = Cleanup(instance);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pki = tls::TestPki::new();
        let agent = Agent::connect(AgentSettings {
            relay_url: format!("wss://{}", listener.local_addr().unwrap()),
            tls: pki.agent(instance),
            credential: signing::credential(instance),
            service_key: signing::SERVICE_KEY_PEM.to_owned(),
            instance,
            docker_host: None,
            pods: Default::default(),
        })
        .await
        .expect("the agent connects to the local Docker engine");
        let agent = tokio::spawn(agent.run_until_stopped());
        let (socket, _) = tokio::time::timeout(DEADLINE, listener.accept())
            .await
            .expect("the agent dials in time")
            .unwrap();
        let (socket, _) = pki.accept(socket).await;
        let ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        let mut relay = Relay {
            instance,
            ws,
            _agent: agent,
            _cleanup: cleanup,
        };
        match relay.next().await {
            AgentToRelay::State { .. } => {}
            other => panic!("the first message was not the state: {other:?}"),
        }
        relay
    }

    async fn next(&mut self) -> AgentToRelay {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("the agent sends something in time")
                .expect("the connection is open")
                .expect("the frame is readable");
            if let Message::Text(text) = frame {
                return serde_json::from_str(&text).expect("the agent speaks the protocol");
            }
        }
    }

    async fn send(&mut self, request: Uuid, action: Option<Uuid>, command: Command, token: String) {
        let message = RelayToAgent::Command {
            request,
            action,
            command,
            token,
        };
        let text = serde_json::to_string(&message).unwrap();
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Send `command` as the service would: a fresh request id and its own token.
    async fn send_signed(&mut self, action: Option<Uuid>, command: Command) -> Uuid {
        let request = Uuid::new_v4();
        let token = signing::command_token(self.instance, request, action, &command);
        self.send(request, action, command, token).await;
        request
    }

    /// The replies to `requests`, in that order; events in between are skipped.
    async fn replies(&mut self, requests: &[Uuid]) -> Vec<Reply> {
        let mut got: BTreeMap<Uuid, Reply> = BTreeMap::new();
        while got.len() < requests.len() {
            if let AgentToRelay::Reply { request, reply } = self.next().await {
                assert!(
                    requests.contains(&request),
                    "a reply to {request}, never sent"
                );
                got.insert(request, reply);
            }
        }
        requests.iter().map(|r| got.remove(r).unwrap()).collect()
    }
}

#[tokio::test]
async fn a_retried_create_with_the_same_action_makes_one_container_and_answers_alike() {
    let mut relay = Relay::connect().await;
    let action = Some(Uuid::new_v4());
    let create = Command::Create {
        spec: Box::new(spec()),
    };
    // The retry arrives while the first attempt still runs (new request id, new token)…
    let first = relay.send_signed(action, create.clone()).await;
    let overlapping = relay.send_signed(action, create.clone()).await;
    let replies = relay.replies(&[first, overlapping]).await;
    let outcome = match &replies[0] {
        Ok(Outcome::Container(c)) => c.clone(),
        other => panic!("the create failed: {other:?}"),
    };
    assert_eq!(
        replies[1], replies[0],
        "the overlapping retry answers alike"
    );
    assert_eq!(outcome.state, berth_proto::RuntimeState::Created);
    // The container moves on (another action starts it)…
    let start = relay
        .send_signed(
            Some(Uuid::new_v4()),
            Command::Start {
                container: outcome.uuid,
            },
        )
        .await;
    match &relay.replies(&[start]).await[0] {
        Ok(Outcome::Container(c)) => assert_eq!(c.state, berth_proto::RuntimeState::Running),
        other => panic!("the start failed: {other:?}"),
    }
    // …and a late retry of the create gets the create's own outcome: it did not run
    // again (running it would observe the container running).
    let later = relay.send_signed(action, create.clone()).await;
    let replies = relay.replies(&[later]).await;
    assert_eq!(replies[0], Ok(Outcome::Container(outcome.clone())));

    let containers = containers_of(relay.instance);
    assert_eq!(
        containers.len(),
        1,
        "one container, not one per attempt: {containers:?}"
    );
    assert!(
        outcome.runtime_id.starts_with(&containers[0]),
        "{} vs {containers:?}",
        outcome.runtime_id
    );
}

#[tokio::test]
async fn commands_without_a_valid_signature_are_refused_and_nothing_runs() {
    let mut relay = Relay::connect().await;
    let instance = relay.instance;
    let create = || Command::Create {
        spec: Box::new(spec()),
    };

    // No token at all.
    let request = Uuid::new_v4();
    relay.send(request, None, create(), String::new()).await;
    // Signed for another instance.
    let other = Uuid::new_v4();
    let command = create();
    let token = signing::command_token(Uuid::new_v4(), other, None, &command);
    relay.send(other, None, command, token).await;
    // A genuine token moved onto another command.
    let moved = Uuid::new_v4();
    let token = signing::command_token(instance, moved, None, &create());
    relay.send(moved, None, create(), token).await;
    // An agent credential passed off as a command token.
    let credential = Uuid::new_v4();
    relay
        .send(credential, None, create(), signing::credential(instance))
        .await;
    let replies = relay.replies(&[request, other, moved, credential]).await;
    for (reply, why) in replies.iter().zip([
        "no service signature",
        "signed for instance",
        "differs from what the service signed",
        "command token",
    ]) {
        match reply {
            Err(e) => {
                assert_eq!(e.kind, AgentErrorKind::Runtime, "{}", e.message);
                assert!(e.message.contains(why), "{why}: {}", e.message);
            }
            Ok(outcome) => panic!("an unsigned command ran: {outcome:?}"),
        }
    }
    assert!(containers_of(instance).is_empty(), "nothing was made");

    // A replay of a genuine command (same request id, same token) runs once.
    let command = Command::Create {
        spec: Box::new(spec()),
    };
    let request = Uuid::new_v4();
    let token = signing::command_token(instance, request, None, &command);
    relay
        .send(request, None, command.clone(), token.clone())
        .await;
    assert!(matches!(
        relay.replies(&[request]).await[0],
        Ok(Outcome::Container(_))
    ));
    let removed = relay
        .send_signed(
            None,
            Command::Remove {
                container: match &command {
                    Command::Create { spec } => spec.uuid,
                    _ => unreachable!(),
                },
                force: true,
            },
        )
        .await;
    assert!(relay.replies(&[removed]).await[0].is_ok());
    assert!(containers_of(instance).is_empty());
    relay.send(request, None, command, token).await;
    match &relay.replies(&[request]).await[0] {
        Err(e) => assert!(e.message.contains("already received once"), "{}", e.message),
        Ok(outcome) => panic!("a replayed command ran again: {outcome:?}"),
    }
    assert!(
        containers_of(instance).is_empty(),
        "the replay made nothing"
    );
}
