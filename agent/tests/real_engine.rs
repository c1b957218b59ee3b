//! The agent against the real Docker engine of this machine and an in-process relay
//! that speaks the wire protocol (`berth_proto`) over a real WebSocket.
//!
//! Every test acts for a fresh random instance, so it sees only its own containers,
//! and removes every container labelled with that instance when it ends, pass or fail.
//! The image is `berth-test/busybox:latest`, which the repository's test setup builds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_agent::{Agent, AgentSettings};
use berth_proto::container::Protocol;
use berth_proto::{
    AgentErrorKind, AgentToRelay, Channel, Command, ContainerEvent, ContainerSpec, ExecSpec,
    ObservedContainer, Outcome, PortBinding, RelayToAgent, Reply, RuntimeState, StreamData,
    StreamEnd, StreamMessage, StreamOpen,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

mod signing;
mod specs;
mod tls;

use specs::IMAGE;
const CREDENTIAL: &str = "test-credential";
/// Generous: the engine shares two cores with other builds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Removes every container of the test's instance when dropped.
struct Cleanup {
    instance: Uuid,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={}={}", berth_proto::LABEL_INSTANCE, self.instance);
        let listed = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .expect("the docker CLI runs");
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

async fn agent_for(instance: Uuid, relay_url: &str, pki: &tls::TestPki) -> Agent {
    Agent::connect(AgentSettings {
        relay_url: relay_url.to_owned(),
        tls: pki.agent(instance),
        credential: signing::credential(instance),
        service_key: signing::SERVICE_KEY_PEM.to_owned(),
        instance,
        docker_host: None,
        pods: Default::default(),
    })
    .await
    .expect("the agent connects to the local Docker engine")
}

fn spec(command: &[&str]) -> ContainerSpec {
    let mut spec = specs::container_spec("agent", command);
    spec.environment = BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]);
    spec
}

fn container(reply: Reply) -> ObservedContainer {
    match reply {
        Ok(Outcome::Container(container)) => container,
        other => panic!("expected a container, got {other:?}"),
    }
}

/// A relay endpoint on port 0 that accepts agents like the real relay does.
struct FakeRelay {
    listener: TcpListener,
    url: String,
    /// The relay's TLS, and the CA agents' certificates come from.
    pki: tls::TestPki,
    /// `Authorization` header and path of each handshake.
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeRelay {
    async fn start() -> FakeRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("wss://{}", listener.local_addr().unwrap());
        FakeRelay {
            listener,
            url,
            pki: tls::TestPki::new(),
            seen: Arc::default(),
        }
    }

    /// Accept the next agent connection; `refuse` answers 401 instead.
    // tungstenite's handshake callback returns its large `ErrorResponse` by value.
    #[allow(clippy::result_large_err)]
    async fn accept(&self, refuse: bool) -> Option<AgentConn> {
        let (stream, _) = tokio::time::timeout(DEADLINE, self.listener.accept())
            .await
            .expect("the agent dials the relay in time")
            .unwrap();
        let seen = Arc::clone(&self.seen);
        let callback = move |request: &Request, response: Response| {
            let auth = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            seen.lock()
                .unwrap()
                .push((auth, request.uri().path().to_owned()));
            if refuse {
                let mut refusal = ErrorResponse::new(Some("credential expired".to_owned()));
                *refusal.status_mut() = StatusCode::UNAUTHORIZED;
                Err(refusal)
            } else {
                Ok(response)
            }
        };
        let (stream, certificate) = self.pki.accept(stream).await;
        let ws = tokio_tungstenite::accept_hdr_async(stream, callback).await;
        if refuse {
            assert!(ws.is_err());
            return None;
        }
        let (auth, _) = self.seen.lock().unwrap().last().cloned().unwrap();
        let instance = signing::instance_of(auth.trim_start_matches("Bearer "));
        // As the relay checks: the certificate names the credential's instance.
        assert_eq!(certificate, berth_tls::Identity::Instance(instance));
        Some(AgentConn {
            instance,
            ws: ws.unwrap(),
            events: Vec::new(),
            states: Vec::new(),
            stream_messages: Vec::new(),
            session: None,
        })
    }
}

/// The relay's side of one agent connection.
struct AgentConn {
    /// The instance of the agent on the other end (from its credential).
    instance: Uuid,
    ws: WebSocketStream<berth_tls::ServerStream>,
    /// Events received so far, in order.
    events: Vec<(u64, ContainerEvent)>,
    /// State reports received after the first one.
    states: Vec<Vec<ObservedContainer>>,
    /// Stream messages that arrived while waiting for something else, in order.
    stream_messages: Vec<(Uuid, StreamMessage)>,
    /// The agent's session, from its first state report.
    session: Option<Uuid>,
}

impl AgentConn {
    async fn next_message(&mut self) -> AgentToRelay {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("the agent sends something in time")
                .expect("the connection is open")
                .expect("the frame is readable");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("the agent speaks the protocol")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The first message of a connection, which must be the full state.
    async fn initial_state(&mut self) -> Vec<ObservedContainer> {
        match self.next_message().await {
            AgentToRelay::State {
                containers,
                session,
            } => {
                self.session = session;
                containers
            }
            other => panic!("the first message was not the state: {other:?}"),
        }
    }

    /// Keep whatever is not a reply, so later assertions can see it.
    fn keep(&mut self, message: AgentToRelay) {
        match message {
            AgentToRelay::Event { seq, event, .. } => self.events.push((seq, event)),
            AgentToRelay::State { containers, .. } => self.states.push(containers),
            AgentToRelay::Reply { request, .. } => panic!("unexpected reply to {request}"),
            AgentToRelay::Stream { stream, message } => {
                self.stream_messages.push((stream, message))
            }
        }
    }

    async fn send(&mut self, message: &RelayToAgent) {
        let text = serde_json::to_string(message).unwrap();
        self.ws.send(Message::text(text)).await.unwrap();
    }

    async fn command(&mut self, command: Command) -> Reply {
        self.command_as(Uuid::new_v4(), Some(Uuid::new_v4()), command)
            .await
    }

    /// Send `command` signed as the service would, as `request` of `action`.
    async fn command_as(&mut self, request: Uuid, action: Option<Uuid>, command: Command) -> Reply {
        let token = signing::command_token(self.instance, request, action, &command);
        self.send(&RelayToAgent::Command {
            request,
            action,
            command,
            token,
        })
        .await;
        loop {
            match self.next_message().await {
                AgentToRelay::Reply { request: r, reply } if r == request => return reply,
                other => self.keep(other),
            }
        }
    }

    /// Open a stream on the agent; returns its id.
    async fn open(&mut self, open: StreamOpen) -> Uuid {
        let stream = Uuid::new_v4();
        let action = Some(Uuid::new_v4());
        let token = signing::stream_token(self.instance, stream, action, &open);
        self.send(&RelayToAgent::StreamOpen {
            stream,
            action,
            open,
            token,
        })
        .await;
        stream
    }

    async fn stream_send(&mut self, stream: Uuid, message: StreamMessage) {
        self.send(&RelayToAgent::Stream { stream, message }).await;
    }

    /// The next message the agent sends on `stream`; anything else is kept.
    async fn stream_message(&mut self, stream: Uuid) -> StreamMessage {
        if let Some(at) = self.stream_messages.iter().position(|(s, _)| *s == stream) {
            return self.stream_messages.remove(at).1;
        }
        loop {
            match self.next_message().await {
                AgentToRelay::Stream {
                    stream: got,
                    message,
                } if got == stream => return message,
                other => self.keep(other),
            }
        }
    }

    /// Everything `stream` sends until its end, with the stdin credit it granted.
    async fn stream_to_end(&mut self, stream: Uuid) -> StreamOutput {
        let mut output = StreamOutput::default();
        loop {
            match self.stream_message(stream).await {
                StreamMessage::End(end) => {
                    output.end = Some(end);
                    return output;
                }
                message => output.take(message),
            }
        }
    }

    /// Read `stream` until its stdout contains `text` (ending early fails the test).
    async fn stream_until(&mut self, stream: Uuid, output: &mut StreamOutput, text: &str) {
        while !String::from_utf8_lossy(&output.stdout).contains(text) {
            match self.stream_message(stream).await {
                StreamMessage::End(end) => {
                    panic!("the stream ended ({end:?}) before {text:?} arrived: {output:?}")
                }
                message => output.take(message),
            }
        }
    }

    /// Wait until an event matching `wanted` has arrived; returns its sequence number.
    async fn wait_event(&mut self, wanted: impl Fn(&ContainerEvent) -> bool) -> u64 {
        loop {
            if let Some((seq, _)) = self.events.iter().find(|(_, event)| wanted(event)) {
                return *seq;
            }
            let message = self.next_message().await;
            self.keep(message);
        }
    }

    async fn wait_state(&mut self) -> Vec<ObservedContainer> {
        loop {
            if !self.states.is_empty() {
                return self.states.remove(0);
            }
            let message = self.next_message().await;
            self.keep(message);
        }
    }
}

/// What a stream sent.
#[derive(Debug, Default)]
struct StreamOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    progress: Vec<u8>,
    stdin_credit: u64,
    end: Option<StreamEnd>,
}

impl StreamOutput {
    fn take(&mut self, message: StreamMessage) {
        match message {
            StreamMessage::Data(StreamData { channel, data }) => {
                assert!(
                    data.len() <= berth_proto::stream::MAX_DATA_CHUNK,
                    "a chunk of {} bytes",
                    data.len()
                );
                match channel {
                    Channel::Stdout => self.stdout.extend(data),
                    Channel::Stderr => self.stderr.extend(data),
                    Channel::Progress => self.progress.extend(data),
                    Channel::Stdin => panic!("the agent sent stdin"),
                }
            }
            StreamMessage::Credit { bytes } => self.stdin_credit += u64::from(bytes),
            other => panic!("the agent sent {other:?}"),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn stdin(bytes: &[u8]) -> StreamMessage {
    StreamMessage::Data(StreamData {
        channel: Channel::Stdin,
        data: bytes.to_vec(),
    })
}

fn exec(cmd: &[&str], stdin: bool) -> ExecSpec {
    ExecSpec {
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        workdir: None,
        user: None,
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
        console_size: None,
    }
}

/// A connected agent of a fresh instance, its relay side, and the clean-up guard.
async fn connected() -> (
    AgentConn,
    Cleanup,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let instance = Uuid::new_v4();
    let cleanup = Cleanup { instance };
    let relay = FakeRelay::start().await;
    let agent = agent_for(instance, &relay.url, &relay.pki).await;
    let running = tokio::spawn(agent.run_until_stopped());
    let mut conn = relay.accept(false).await.unwrap();
    conn.initial_state().await;
    (conn, cleanup, running)
}

/// Create and start a container running `command`; returns its uuid.
async fn running(conn: &mut AgentConn, command: &[&str]) -> Uuid {
    let spec = spec(command);
    let uuid = spec.uuid;
    container(
        conn.command(Command::Create {
            spec: Box::new(spec),
        })
        .await,
    );
    let started = container(conn.command(Command::Start { container: uuid }).await);
    assert_eq!(started.state, RuntimeState::Running);
    uuid
}

fn changed_to(uuid: Uuid, state: RuntimeState) -> impl Fn(&ContainerEvent) -> bool {
    move |event| {
        matches!(event, ContainerEvent::Changed { container }
            if container.uuid == uuid && container.state == state)
    }
}

#[tokio::test]
async fn agent_reports_state_runs_commands_and_numbers_events_over_the_relay() {
    let instance = Uuid::new_v4();
    let _cleanup = Cleanup { instance };
    let relay = FakeRelay::start().await;
    let agent = agent_for(instance, &relay.url, &relay.pki).await;
    let running = tokio::spawn(agent.run_until_stopped());

    let mut conn = relay.accept(false).await.unwrap();
    assert_eq!(conn.initial_state().await, Vec::new());
    let (auth, path) = relay.seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/v1/agent");
    // ECDSA signatures differ each time: the credential is checked by what it says.
    assert_eq!(
        signing::instance_of(auth.strip_prefix("Bearer ").unwrap()),
        instance
    );

    let mut spec = spec(&["sh", "-c", "echo $GREETING; echo oops >&2; exec sleep 300"]);
    spec.ports = vec![PortBinding {
        host_port: None,
        container_port: 80,
        protocol: Protocol::Tcp,
    }];
    let uuid = spec.uuid;

    let created = container(
        conn.command(Command::Create {
            spec: Box::new(spec.clone()),
        })
        .await,
    );
    assert_eq!(created.uuid, uuid);
    assert_eq!(
        created.state,
        RuntimeState::Created,
        "create does not start"
    );
    assert_eq!(
        created.ports[0].host_port, None,
        "the engine has not chosen yet"
    );

    let again = container(
        conn.command(Command::Create {
            spec: Box::new(spec.clone()),
        })
        .await,
    );
    assert_eq!(
        again.runtime_id, created.runtime_id,
        "a retried create makes nothing new"
    );

    let started = container(conn.command(Command::Start { container: uuid }).await);
    assert_eq!(started.state, RuntimeState::Running);
    assert!(started.started_at.is_some());
    assert!(
        started.ports[0].host_port.is_some(),
        "the engine-chosen host port is reported: {:?}",
        started.ports
    );
    let restarted = container(conn.command(Command::Start { container: uuid }).await);
    assert_eq!(
        restarted.state,
        RuntimeState::Running,
        "starting a running container succeeds"
    );

    let start_seq = conn
        .wait_event(changed_to(uuid, RuntimeState::Running))
        .await;
    assert!(start_seq >= 1);

    // Logs are read once the process has written them.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let logs = match conn
            .command(Command::Logs {
                container: uuid,
                stdout: true,
                stderr: true,
                timestamps: false,
                tail: None,
                since: None,
            })
            .await
        {
            Ok(Outcome::Logs(text)) => text,
            other => panic!("expected logs, got {other:?}"),
        };
        if logs.contains("hello\n") && logs.contains("oops\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "logs never appeared: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let paused = container(conn.command(Command::Pause { container: uuid }).await);
    assert_eq!(paused.state, RuntimeState::Paused);
    let paused_again = container(conn.command(Command::Pause { container: uuid }).await);
    assert_eq!(
        paused_again.state,
        RuntimeState::Paused,
        "pause is idempotent"
    );
    let unpaused = container(conn.command(Command::Unpause { container: uuid }).await);
    assert_eq!(unpaused.state, RuntimeState::Running);

    let updated = conn
        .command(Command::Update {
            container: uuid,
            cpu: Some(1.0),
            memory_mib: Some(128),
            restart: None,
        })
        .await;
    assert!(updated.is_ok(), "update: {updated:?}");
    let limits = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
            &berth_proto::docker_name(uuid),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&limits.stdout).trim(),
        format!("1000000000 {}", 128 * 1024 * 1024)
    );

    let killed = container(
        conn.command(Command::Kill {
            container: uuid,
            signal: "SIGKILL".to_owned(),
        })
        .await,
    );
    assert_eq!(killed.uuid, uuid);
    conn.wait_event(changed_to(uuid, RuntimeState::Exited))
        .await;
    let observed = container(conn.command(Command::Inspect { container: uuid }).await);
    assert_eq!(observed.state, RuntimeState::Exited);
    assert_eq!(observed.exit_code, Some(137));
    assert!(observed.finished_at.is_some());

    let not_running = conn
        .command(Command::Kill {
            container: uuid,
            signal: "SIGTERM".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_running.kind, AgentErrorKind::Conflict);

    let stopped = container(
        conn.command(Command::Stop {
            container: uuid,
            timeout_secs: Some(1),
        })
        .await,
    );
    assert_eq!(
        stopped.state,
        RuntimeState::Exited,
        "stopping a stopped container succeeds"
    );

    conn.send(&RelayToAgent::Resync).await;
    let state = conn.wait_state().await;
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].uuid, uuid);

    assert_eq!(
        conn.command(Command::Remove {
            container: uuid,
            force: false
        })
        .await,
        Ok(Outcome::Done)
    );
    conn.wait_event(|event| matches!(event, ContainerEvent::Removed { uuid: u } if *u == uuid))
        .await;
    assert_eq!(
        conn.command(Command::Remove {
            container: uuid,
            force: true
        })
        .await,
        Ok(Outcome::Done),
        "removing a missing container succeeds"
    );
    let missing = conn
        .command(Command::Inspect { container: uuid })
        .await
        .unwrap_err();
    assert_eq!(missing.kind, AgentErrorKind::NotFound);
    assert_eq!(
        missing.message,
        format!("container {uuid} does not exist on instance {instance}")
    );

    let seqs: Vec<u64> = conn.events.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "events are numbered 1, 2, 3… without gaps");

    running.abort();
}

#[tokio::test]
async fn agent_reconnects_after_refusal_and_drop_and_reports_state_first_each_time() {
    let instance = Uuid::new_v4();
    let _cleanup = Cleanup { instance };
    let relay = FakeRelay::start().await;
    let agent = agent_for(instance, &relay.url, &relay.pki).await;

    let spec = spec(&["sleep", "300"]);
    let uuid = spec.uuid;
    container(
        agent
            .runtime()
            .execute(Command::Create {
                spec: Box::new(spec),
            })
            .await,
    );
    let running = tokio::spawn(agent.run_until_stopped());

    // A refused handshake is retried.
    assert!(relay.accept(true).await.is_none());
    let mut first = relay.accept(false).await.unwrap();
    let state = first.initial_state().await;
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].uuid, uuid);
    assert_eq!(state[0].state, RuntimeState::Created);

    container(first.command(Command::Start { container: uuid }).await);
    let first_seq = first
        .wait_event(changed_to(uuid, RuntimeState::Running))
        .await;

    // The relay goes away (nothing was acknowledged); the agent comes back, sends its
    // full state first, and goes on numbering within the same session.
    let first_session = first.session;
    drop(first);
    let mut second = relay.accept(false).await.unwrap();
    let state = second.initial_state().await;
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].state, RuntimeState::Running);
    container(
        second
            .command(Command::Stop {
                container: uuid,
                timeout_secs: Some(1),
            })
            .await,
    );
    assert!(first_session.is_some(), "the agent names its session");
    assert_eq!(
        second.session, first_session,
        "one session per agent process"
    );
    let seq = second
        .wait_event(changed_to(uuid, RuntimeState::Exited))
        .await;
    assert!(
        seq > first_seq,
        "numbering goes on across connections ({seq} after {first_seq})"
    );
    assert!(
        second.events.iter().all(|(seq, _)| *seq > first_seq),
        "container events of the first connection are superseded by the full state, \
         not sent again: {:?}",
        second.events
    );

    assert!(relay.seen.lock().unwrap().iter().all(|(auth, path)| auth
        .strip_prefix("Bearer ")
        .is_some_and(|c| signing::instance_of(c) == instance)
        && path == "/v1/agent"));
    running.abort();
}

#[tokio::test]
async fn create_with_a_missing_image_is_image_not_found_and_leaves_nothing_behind() {
    let instance = Uuid::new_v4();
    let _cleanup = Cleanup { instance };
    let agent = agent_for(instance, "wss://127.0.0.1:9", &tls::TestPki::new()).await;
    let mut spec = spec(&[]);
    spec.image = "nosuch:1".to_owned();
    let error = agent
        .runtime()
        .execute(Command::Create {
            spec: Box::new(spec),
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind, AgentErrorKind::ImageNotFound);
    assert!(
        error.message.starts_with(
            "image 'nosuch:1' is not present on the instance and could not be pulled: "
        ),
        "{}",
        error.message
    );
    assert_eq!(agent.runtime().observe_all().await.unwrap(), Vec::new());
}

#[tokio::test]
async fn starting_a_second_container_on_a_taken_host_port_is_a_conflict_naming_the_port() {
    let instance = Uuid::new_v4();
    let _cleanup = Cleanup { instance };
    let agent = agent_for(instance, "wss://127.0.0.1:9", &tls::TestPki::new()).await;
    let runtime = agent.runtime();

    // A port that is free now; the first container takes it.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut specs = Vec::new();
    for _ in 0..2 {
        let mut spec = spec(&["sleep", "300"]);
        spec.ports = vec![PortBinding {
            host_port: Some(port),
            container_port: 8080,
            protocol: Protocol::Tcp,
        }];
        container(
            runtime
                .execute(Command::Create {
                    spec: Box::new(spec.clone()),
                })
                .await,
        );
        specs.push(spec);
    }
    let first = container(
        runtime
            .execute(Command::Start {
                container: specs[0].uuid,
            })
            .await,
    );
    assert_eq!(first.ports[0].host_port, Some(port));

    let error = runtime
        .execute(Command::Start {
            container: specs[1].uuid,
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind, AgentErrorKind::Conflict, "{}", error.message);
    assert!(
        error.message.contains(&port.to_string()),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn an_auto_remove_container_that_is_stopped_reports_done() {
    let instance = Uuid::new_v4();
    let _cleanup = Cleanup { instance };
    let agent = agent_for(instance, "wss://127.0.0.1:9", &tls::TestPki::new()).await;
    let runtime = agent.runtime();
    let mut spec = spec(&["sleep", "300"]);
    spec.auto_remove = true;
    let uuid = spec.uuid;
    container(
        runtime
            .execute(Command::Create {
                spec: Box::new(spec),
            })
            .await,
    );
    container(runtime.execute(Command::Start { container: uuid }).await);
    let stopped = runtime
        .execute(Command::Stop {
            container: uuid,
            timeout_secs: Some(1),
        })
        .await;
    // The engine may report it exited for a moment before removing it.
    match stopped {
        Ok(Outcome::Done) => {}
        Ok(Outcome::Container(c)) => assert_ne!(c.state, RuntimeState::Running),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test]
async fn connect_fails_with_an_explanation_when_docker_is_unreachable() {
    let instance = Uuid::new_v4();
    let error = Agent::connect(AgentSettings {
        relay_url: "wss://127.0.0.1:9".to_owned(),
        tls: tls::TestPki::new().agent(instance),
        credential: CREDENTIAL.to_owned(),
        service_key: signing::SERVICE_KEY_PEM.to_owned(),
        instance,
        docker_host: Some("/nonexistent/docker.sock".to_owned()),
        pods: Default::default(),
    })
    .await
    .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{text}"
    );
}

#[tokio::test]
async fn exec_forwards_stdin_separates_stdout_from_stderr_and_ends_with_the_exit_code() {
    let (mut conn, _cleanup, _agent) = connected().await;
    let uuid = running(&mut conn, &["sleep", "300"]).await;

    let stream = conn
        .open(StreamOpen::Exec {
            container: uuid,
            exec: exec(&["sh", "-c", "cat; echo on-stderr >&2; exit 7"], true),
        })
        .await;
    conn.stream_send(stream, stdin(b"ping\n")).await;
    conn.stream_send(stream, stdin(b"pong\n")).await;
    conn.stream_send(stream, StreamMessage::CloseStdin).await;
    let output = conn.stream_to_end(stream).await;
    assert_eq!(output.text(), "ping\npong\n", "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "on-stderr\n");
    assert_eq!(output.end, Some(StreamEnd::Exited { code: Some(7) }));
    assert_eq!(
        output.stdin_credit, 10,
        "the agent grants back the stdin it wrote"
    );

    // Top and the image commands work on the same instance.
    match conn
        .command(Command::Top {
            container: uuid,
            ps_args: None,
        })
        .await
    {
        Ok(Outcome::Top { titles, processes }) => {
            assert!(titles.iter().any(|t| t == "PID"), "{titles:?}");
            assert!(
                processes
                    .iter()
                    .flatten()
                    .any(|cell| cell.contains("sleep")),
                "{processes:?}"
            );
        }
        other => panic!("expected the processes, got {other:?}"),
    }
    match conn.command(Command::Images).await {
        Ok(Outcome::Images(images)) => assert!(
            images
                .iter()
                .any(|image| image.repo_tags.iter().any(|tag| tag == IMAGE)),
            "{IMAGE} is listed"
        ),
        other => panic!("expected the images, got {other:?}"),
    }
    match conn
        .command(Command::ImageInspect {
            reference: IMAGE.to_owned(),
        })
        .await
    {
        Ok(Outcome::Image(image)) => {
            assert!(image.id.starts_with("sha256:"), "{}", image.id);
            assert!(
                image.labels.contains_key("berth.test"),
                "{:?}",
                image.labels
            );
            assert!(image.config.is_object(), "{}", image.config);
        }
        other => panic!("expected the image, got {other:?}"),
    }
    let missing = conn
        .command(Command::ImageInspect {
            reference: "berth-test/no-such-image:latest".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.kind, AgentErrorKind::ImageNotFound, "{missing}");

    // A container of another instance (or none at all) cannot be exec'd into.
    let stream = conn
        .open(StreamOpen::Exec {
            container: Uuid::new_v4(),
            exec: exec(&["true"], false),
        })
        .await;
    match conn.stream_to_end(stream).await.end {
        Some(StreamEnd::Failed { error }) => {
            assert_eq!(error.kind, AgentErrorKind::NotFound, "{error}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn attach_to_a_created_container_receives_its_output_from_the_start() {
    let (mut conn, _cleanup, _agent) = connected().await;
    let spec = spec(&[
        "sh",
        "-c",
        "echo attached-output; echo attached-error >&2; exit 3",
    ]);
    let uuid = spec.uuid;
    container(
        conn.command(Command::Create {
            spec: Box::new(spec),
        })
        .await,
    );
    let stream = conn
        .open(StreamOpen::Attach {
            container: uuid,
            stdin: false,
            stdout: true,
            stderr: true,
            logs: false,
        })
        .await;
    // Sent right behind the attach, as `docker run` does: the agent must not let the
    // start overtake it.
    conn.command(Command::Start { container: uuid })
        .await
        .expect("the container starts");
    let output = conn.stream_to_end(stream).await;
    assert_eq!(output.text(), "attached-output\n", "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "attached-error\n");
    assert_eq!(output.end, Some(StreamEnd::Exited { code: Some(3) }));
}

#[tokio::test]
async fn logs_follow_sends_lines_written_after_it_opened_and_ends_when_the_container_stops() {
    let (mut conn, _cleanup, _agent) = connected().await;
    let uuid = running(
        &mut conn,
        &[
            "sh",
            "-c",
            "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second",
        ],
    )
    .await;
    let logs = conn
        .open(StreamOpen::Logs {
            container: uuid,
            stdout: true,
            stderr: true,
            timestamps: false,
            tail: None,
            since: None,
            until: None,
            follow: true,
        })
        .await;
    let mut output = StreamOutput::default();
    conn.stream_until(logs, &mut output, "first\n").await;
    assert!(!output.text().contains("second"), "{output:?}");

    // Only now is the second line written.
    let touch = conn
        .open(StreamOpen::Exec {
            container: uuid,
            exec: exec(&["touch", "/tmp/go"], false),
        })
        .await;
    assert_eq!(
        conn.stream_to_end(touch).await.end,
        Some(StreamEnd::Exited { code: Some(0) })
    );
    let rest = conn.stream_to_end(logs).await;
    output.stdout.extend(rest.stdout);
    assert_eq!(output.text(), "first\nsecond\n");
    assert_eq!(rest.end, Some(StreamEnd::Finished));
}

#[tokio::test]
async fn a_stream_is_cancelled_on_request_and_output_waits_for_credit() {
    let (mut conn, _cleanup, _agent) = connected().await;
    let uuid = running(&mut conn, &["sleep", "300"]).await;
    // Far more output than the initial credit.
    let stream = conn
        .open(StreamOpen::Exec {
            container: uuid,
            exec: exec(
                &["sh", "-c", "yes 0123456789abcdef | head -c 2000000"],
                false,
            ),
        })
        .await;
    let mut received = 0usize;
    while received < berth_proto::stream::INITIAL_CREDIT as usize {
        match conn.stream_message(stream).await {
            StreamMessage::Data(data) => received += data.data.len(),
            other => panic!("expected output, got {other:?}"),
        }
    }
    assert_eq!(
        received,
        berth_proto::stream::INITIAL_CREDIT as usize,
        "never beyond the credit"
    );
    // More credit lets exactly that much more through.
    conn.stream_send(stream, StreamMessage::Credit { bytes: 1000 })
        .await;
    let mut more = 0usize;
    while more < 1000 {
        match conn.stream_message(stream).await {
            StreamMessage::Data(data) => more += data.data.len(),
            other => panic!("expected output, got {other:?}"),
        }
    }
    assert_eq!(more, 1000);
    // After a cancel the agent sends nothing more on the stream, even with credit:
    // nothing arrives on it before the reply to a later command.
    conn.stream_send(stream, StreamMessage::Cancel).await;
    conn.stream_send(stream, StreamMessage::Credit { bytes: 1 << 20 })
        .await;
    container(conn.command(Command::Inspect { container: uuid }).await);
    assert!(
        conn.stream_messages.is_empty(),
        "{} messages after the cancel",
        conn.stream_messages.len()
    );
}

#[tokio::test]
async fn pulling_from_an_unreachable_registry_ends_failed() {
    let (mut conn, _cleanup, _agent) = connected().await;
    // Port 1 on loopback: nothing listens, so the engine is refused at once.
    let stream = conn
        .open(StreamOpen::Pull {
            image: "127.0.0.1:1/berth-test/absent:latest".to_owned(),
            auth: None,
        })
        .await;
    let output = conn.stream_to_end(stream).await;
    match &output.end {
        Some(StreamEnd::Failed { error }) => {
            assert!(
                matches!(
                    error.kind,
                    AgentErrorKind::Runtime | AgentErrorKind::ImageNotFound
                ),
                "{error:?}"
            );
            assert!(error.message.contains("127.0.0.1:1"), "{error}");
        }
        other => panic!("expected the pull to fail, got {other:?} after {output:?}"),
    }
}

#[tokio::test]
async fn a_tty_exec_is_resized_before_later_input_and_sends_everything_as_stdout() {
    let (mut conn, _cleanup, _agent) = connected().await;
    let uuid = running(&mut conn, &["sleep", "300"]).await;
    let mut spec = exec(&["sh", "-c", "read line; stty size; echo err >&2"], true);
    spec.tty = true;
    let stream = conn
        .open(StreamOpen::Exec {
            container: uuid,
            exec: spec,
        })
        .await;
    conn.stream_send(
        stream,
        StreamMessage::Resize {
            height: 31,
            width: 101,
        },
    )
    .await;
    conn.stream_send(stream, stdin(b"go\r")).await;
    let output = conn.stream_to_end(stream).await;
    let text = output.text();
    assert!(text.contains("31 101"), "{output:?}");
    assert!(
        text.contains("err"),
        "with a TTY stderr is stdout: {output:?}"
    );
    assert!(output.stderr.is_empty(), "{output:?}");
    assert_eq!(output.end, Some(StreamEnd::Exited { code: Some(0) }));
}

#[tokio::test]
async fn a_registry_login_the_engine_cannot_complete_is_refused_with_its_reason() {
    let (mut conn, _cleanup, _agent) = connected().await;
    let error = conn
        .command(Command::RegistryLogin {
            auth: berth_proto::RegistryAuth {
                username: Some("someone".to_owned()),
                password: Some("secret-password".to_owned()),
                server_address: Some("127.0.0.1:1".to_owned()),
                identity_token: None,
            },
        })
        .await
        .unwrap_err();
    assert_eq!(error.kind, AgentErrorKind::Runtime, "{error}");
    assert!(error.message.contains("127.0.0.1:1"), "{error}");
    assert!(!error.message.contains("secret-password"), "{error}");
}
