//! One relay connection, from handshake to disconnect.
//!
//! ```text
//!  engine events ─▶ forwarder ─▶ event task ─┐
//!  commands ─▶ one task each ────────────────┤
//!  streams ─▶ one task each ─────────────────┼─▶ bounded queue ─▶ writer ─▶ relay
//!  resync ─▶ snapshot task ──────────────────┘        (+ pings)
//!  relay ─▶ reader (this task; 15 s without a frame ends the connection)
//! ```
//!
//! Every outgoing message goes through one bounded queue to a single writer, so
//! frames never interleave and a slow relay slows the agent down instead of growing
//! its memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use berth_proto::auth::CommandTokenKind;
use berth_proto::{
    AgentError, AgentErrorKind, AgentToRelay, ContainerEvent, RelayToAgent, StreamEnd, StreamId,
    StreamMessage,
};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument as _;

use super::actions::Source;
use super::framing::{self, Inbound};
use super::outbox::Outbox;
use super::verify::CommandGuard;
use super::LinkSettings;
use crate::runtime::Runtime;

type Socket = berth_tls::WsClient;

/// How often the agent pings the relay (the relay pings the agent as often), so a
/// silent peer (a partition, a host gone without closing TCP) is noticed within
/// [`READ_IDLE_LIMIT`], well inside the 30 s a partition drill allows.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long without any inbound frame (pongs included) before the connection is dead:
/// three ping intervals, so one or two delayed pongs are tolerated.
pub(crate) const READ_IDLE_LIMIT: Duration = Duration::from_secs(15);
/// How long one outgoing frame may take to be accepted before the connection is dead.
const WRITE_LIMIT: Duration = Duration::from_secs(15);
/// How long the TCP connect and WebSocket handshake may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Outgoing messages queued for the writer before senders wait.
const OUTGOING_QUEUE: usize = 256;
/// Engine events buffered between the engine and the event task.
const EVENT_QUEUE: usize = 1024;
/// Streams open at once on one connection. Counted apart from commands, so a long
/// `logs -f` never takes a command's place.
pub(crate) const MAX_STREAMS: usize = 256;
/// Messages from the service queued for one stream. The service keeps within the
/// stdin credit, so only a misbehaving peer fills it; the stream is then dropped.
const STREAM_INBOUND_QUEUE: usize = 256;

/// The open streams of one connection.
#[derive(Default)]
struct StreamTable {
    /// Where the relay's messages for each open stream go.
    open: HashMap<StreamId, mpsc::Sender<StreamMessage>>,
    /// Attaches being set up, by container: each turns `true` once the engine has
    /// attached (or is dropped when the attach failed).
    attaching: HashMap<uuid::Uuid, Vec<watch::Receiver<bool>>>,
}

impl StreamTable {
    /// The attaches to `container` still being set up, to wait for.
    fn attaches_to(&mut self, container: uuid::Uuid) -> Vec<watch::Receiver<bool>> {
        let Some(pending) = self.attaching.get_mut(&container) else {
            return Vec::new();
        };
        pending.retain(|ready| !*ready.borrow() && ready.has_changed().is_ok());
        if pending.is_empty() {
            self.attaching.remove(&container);
            return Vec::new();
        }
        pending.clone()
    }
}

type Streams = Arc<Mutex<StreamTable>>;

/// Run one connection to the relay until it ends. `established` is set once the
/// handshake succeeds, so the caller can tell a refusal from a dropped connection.
pub(crate) async fn run(
    link: &LinkSettings,
    runtime: &Runtime,
    commands: &Arc<Semaphore>,
    outbox: &Arc<Mutex<Outbox>>,
    guard: &Arc<CommandGuard>,
    established: &mut bool,
) -> anyhow::Result<()> {
    // Whatever happens below, dropping the set aborts this connection's tasks.
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

    // Subscribe before the snapshot, so a change between the two is not lost.
    let (engine_tx, engine_rx) = mpsc::channel(EVENT_QUEUE);
    let events = runtime.engine_events();
    tasks.spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event =
                event.map_err(|err| anyhow!("the Docker engine's event stream failed: {err}"))?;
            if engine_tx.send(event).await.is_err() {
                return Ok(());
            }
        }
        bail!("the Docker engine closed its event stream")
    });

    let snapshot = runtime
        .observe_all()
        .await
        .context("could not take the state snapshot")?;

    let socket = connect(link).await?;
    *established = true;
    tracing::info!(
        instance.id = %link.instance,
        relay.url = %link.url,
        containers = snapshot.len(),
        "connected to the relay"
    );
    let (sink, mut stream) = socket.split();

    let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    // Dropped with this connection: every stream task then sees its inbound end and stops.
    let streams: Streams = Arc::default();
    tasks.spawn(write_loop(sink, out_rx));
    // The state goes first: nothing else can be queued before it. Then the events the
    // service has not acknowledged, under their own numbers, so it can drop those it
    // already applied; container events among them are superseded by this state.
    let (session, resend) = {
        let mut outbox = outbox.lock().expect("outbox lock");
        (outbox.session(), outbox.resend_after_state())
    };
    let closed = || anyhow!("the relay connection closed before the state was sent");
    out_tx
        .send(AgentToRelay::State {
            containers: snapshot,
            session: Some(session),
        })
        .await
        .map_err(|_| closed())?;
    if !resend.is_empty() {
        tracing::info!(instance.id = %link.instance, events = resend.len(), "re-sending unacknowledged events");
    }
    for (seq, event) in resend {
        out_tx
            .send(AgentToRelay::Event {
                seq,
                event,
                session: Some(session),
            })
            .await
            .map_err(|_| closed())?;
    }
    // Pods: every status right after the state, then each change (subscribed before
    // the statuses are read, so no change falls in between).
    let pods = runtime
        .pods()
        .map(|kubelet| (kubelet.subscribe(), kubelet.clone()));
    // A resync asks for every pod's status again, after the state.
    let resend_pods = Arc::new(tokio::sync::Notify::new());
    tasks.spawn(event_loop(
        runtime.clone(),
        engine_rx,
        pods,
        Arc::clone(&resend_pods),
        Arc::clone(outbox),
        out_tx.clone(),
    ));

    loop {
        tokio::select! {
            frame = tokio::time::timeout(READ_IDLE_LIMIT, stream.next()) => {
                let frame = frame.map_err(|_| anyhow!(
                    "no frame from the relay for {} s; the connection is dead",
                    READ_IDLE_LIMIT.as_secs()
                ))?;
                match frame {
                    None => bail!("the relay connection ended"),
                    Some(Err(err)) => return Err(err).context("reading from the relay failed"),
                    Some(Ok(Message::Close(close))) => {
                        tracing::info!(instance.id = %link.instance, close = ?close, "the relay closed the connection");
                        return Ok(());
                    }
                    Some(Ok(Message::Text(text))) => {
                        dispatch(framing::decode(text.as_bytes()), runtime, commands, &streams, &out_tx, &resend_pods, outbox, guard);
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        dispatch(framing::decode(&bytes), runtime, commands, &streams, &out_tx, &resend_pods, outbox, guard);
                    }
                    // Pings are answered by tungstenite; any frame proves the peer alive.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                }
            }
            Some(finished) = tasks.join_next() => {
                // The writer, the event forwarder or the event task ended: the
                // connection cannot go on without any of them.
                return match finished {
                    Ok(Ok(())) => Err(anyhow!("a relay connection task stopped")),
                    Ok(Err(err)) => Err(err),
                    Err(join) => Err(anyhow!("a relay connection task failed: {join}")),
                };
            }
        }
    }
}

/// Open the WebSocket, presenting the credential.
async fn connect(link: &LinkSettings) -> anyhow::Result<Socket> {
    let mut request = link
        .url
        .as_str()
        .into_client_request()
        .with_context(|| format!("the relay URL {} is not a valid WebSocket URL", link.url))?;
    let mut authorization = HeaderValue::from_str(&format!("Bearer {}", link.credential))
        .map_err(|_| anyhow!("the agent credential contains characters not allowed in a header"))?;
    authorization.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, authorization);

    // TLS only: the relay's certificate must chain to the deployment's CA, and the
    // agent presents its own, naming its instance.
    let tls = link.tls.as_ref().ok_or_else(|| {
        anyhow!("the agent has no TLS configuration (CA and certificate) to dial the relay with")
    })?;
    let dial = berth_tls::connect_websocket(request, tls, Some(websocket_config()));
    match tokio::time::timeout(HANDSHAKE_LIMIT, dial).await {
        Err(_) => bail!(
            "the relay at {} did not complete the WebSocket handshake within {} s",
            link.url,
            HANDSHAKE_LIMIT.as_secs()
        ),
        Ok(Err(err)) => Err(anyhow!(describe_handshake_error(&err, link))),
        Ok(Ok((socket, _response))) => Ok(socket),
    }
}

/// Largest message (and frame) the agent reads from the relay: a command, or stdin on
/// a stream. The relay itself refuses anything over 16 MiB; the margin is its envelope.
const MAX_MESSAGE_SIZE: usize = 17 << 20;

/// WebSocket limits for the relay connection: small buffers (an agent is mostly idle)
/// and a cap on message and frame size, so a misbehaving relay cannot make the agent
/// buffer without bound. An oversized message ends the connection with an error.
fn websocket_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(16 << 10)
        .max_write_buffer_size(2 * MAX_MESSAGE_SIZE)
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE))
}

/// A sentence for a failed handshake; refusals name what to check.
fn describe_handshake_error(err: &tungstenite::Error, link: &LinkSettings) -> String {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|body| String::from_utf8_lossy(body).trim().to_owned())
                .filter(|body| !body.is_empty())
                .map(|body| format!(": {body}"))
                .unwrap_or_default();
            match status.as_u16() {
                401 | 403 => format!(
                    "the relay at {} refused the agent's credential for instance {} (HTTP {status}){body}; \
                     check that the credential is current and issued for this instance",
                    link.url, link.instance
                ),
                _ => format!("the relay at {} refused the connection (HTTP {status}){body}", link.url),
            }
        }
        other => format!("could not connect to the relay at {}: {other}", link.url),
    }
}

/// Act on one inbound frame without blocking the reader.
// The parts of one connection, each borrowed; a struct holding them would only move
// the same list elsewhere.
#[allow(clippy::too_many_arguments)]
fn dispatch(
    inbound: Inbound,
    runtime: &Runtime,
    commands: &Arc<Semaphore>,
    streams: &Streams,
    out_tx: &mpsc::Sender<AgentToRelay>,
    resend_pods: &Arc<tokio::sync::Notify>,
    outbox: &Arc<Mutex<Outbox>>,
    guard: &Arc<CommandGuard>,
) {
    match inbound {
        Inbound::Message(RelayToAgent::Command {
            request,
            action,
            command,
            token,
        }) => {
            let span = tracing::info_span!(
                "command",
                request.id = %request,
                action.id = action.map(tracing::field::display),
                instance.id = %runtime.instance(),
                container.id = crate::runtime::command_container(&command).map(tracing::field::display),
                command = command.name(),
            );
            // Nothing runs unless the service signed exactly this command for this
            // instance, recently, and it was not seen before.
            let digest = match guard.verifier.verify(
                CommandTokenKind::Command,
                request,
                action,
                &command,
                &token,
            ) {
                Ok(verified) => verified.digest,
                Err(error) => {
                    let _guard = span.enter();
                    tracing::warn!(error.kind = ?error.kind, error.message = %error.message, "command refused");
                    let out_tx = out_tx.clone();
                    tokio::spawn(async move {
                        let _ = out_tx
                            .send(AgentToRelay::Reply {
                                request,
                                reply: Err(error),
                            })
                            .await;
                    });
                    return;
                }
            };
            // `docker run` attaches, then starts: a start must not overtake an attach the
            // service asked for before it, or the first output would be lost.
            let attaches = match &command {
                berth_proto::Command::Start { container }
                | berth_proto::Command::Restart { container, .. } => streams
                    .lock()
                    .expect("streams lock")
                    .attaches_to(*container),
                _ => Vec::new(),
            };
            let runtime = runtime.clone();
            let commands = Arc::clone(commands);
            let out_tx = out_tx.clone();
            let guard = Arc::clone(guard);
            // Detached on purpose: a command already sent to the engine should finish
            // even if the connection drops; the service retries and finds its result.
            tokio::spawn(
                async move {
                    for mut attach in attaches {
                        // An attach that failed drops its sender: nothing to wait for.
                        let _ = attach.wait_for(|ready| *ready).await;
                    }
                    // A retry of an action that already ran (or is running) gets that
                    // attempt's outcome: never a second container.
                    let run = || async {
                        let Ok(_permit) = commands.acquire_owned().await else {
                            return Err(AgentError::new(
                                AgentErrorKind::Unavailable,
                                "the agent is shutting down; retry",
                            ));
                        };
                        runtime.execute(command.clone()).await
                    };
                    let (reply, source) = guard.actions.run(action, &command, &digest, run).await;
                    match &reply {
                        Ok(_) if source == Source::Recorded => {
                            tracing::info!("command retried: answered with the outcome of the first attempt")
                        }
                        Ok(_) => tracing::info!("command done"),
                        Err(error) => {
                            tracing::info!(error.kind = ?error.kind, error.message = %error.message, "command failed")
                        }
                    }
                    if out_tx
                        .send(AgentToRelay::Reply { request, reply })
                        .await
                        .is_err()
                    {
                        tracing::info!("reply not sent: the relay connection closed; the service will retry");
                    }
                }
                .instrument(span),
            );
        }
        Inbound::Message(RelayToAgent::StreamOpen {
            stream,
            action,
            open,
            token,
        }) => {
            match guard
                .verifier
                .verify(CommandTokenKind::StreamOpen, stream, action, &open, &token)
            {
                Ok(_) => open_stream(stream, action, open, runtime, streams, out_tx),
                Err(error) => {
                    tracing::warn!(
                        stream.id = %stream,
                        instance.id = %runtime.instance(),
                        error.kind = ?error.kind,
                        error.message = %error.message,
                        "stream refused"
                    );
                    let out_tx = out_tx.clone();
                    tokio::spawn(async move {
                        let end = StreamMessage::End(StreamEnd::Failed { error });
                        let _ = out_tx
                            .send(AgentToRelay::Stream {
                                stream,
                                message: end,
                            })
                            .await;
                    });
                }
            }
        }
        Inbound::Message(RelayToAgent::Stream { stream, message }) => {
            let mut table = streams.lock().expect("streams lock");
            let table = &mut table.open;
            let Some(tx) = table.get(&stream) else {
                // Already ended here; the service learns that from the end it gets.
                return;
            };
            let cancel = matches!(message, StreamMessage::Cancel);
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(message) {
                tracing::warn!(stream.id = %stream, "the service sent more than its credit; dropping the stream");
                table.remove(&stream);
            } else if cancel {
                table.remove(&stream);
            }
        }
        Inbound::Message(RelayToAgent::Ack { session, seq }) => {
            outbox.lock().expect("outbox lock").ack(session, seq);
        }
        Inbound::Message(RelayToAgent::Resync) => {
            let runtime = runtime.clone();
            let out_tx = out_tx.clone();
            let resend_pods = Arc::clone(resend_pods);
            let session = outbox.lock().expect("outbox lock").session();
            tokio::spawn(async move {
                match runtime.observe_all().await {
                    Ok(containers) => {
                        let _ = out_tx
                            .send(AgentToRelay::State {
                                containers,
                                session: Some(session),
                            })
                            .await;
                        resend_pods.notify_one();
                    }
                    Err(error) => tracing::warn!(
                        instance.id = %runtime.instance(),
                        error = %error,
                        "could not take the state snapshot the relay asked for"
                    ),
                }
            });
        }
        Inbound::Unknown { request, error } => {
            tracing::warn!(
                instance.id = %runtime.instance(),
                request.id = request.map(tracing::field::display),
                error = %error,
                "ignoring a frame the agent does not understand"
            );
            if let Some(request) = request {
                let out_tx = out_tx.clone();
                tokio::spawn(async move {
                    let _ = out_tx.send(framing::not_understood(request, &error)).await;
                });
            }
        }
    }
}

/// Start serving one stream in its own task, unless too many are open.
fn open_stream(
    stream: StreamId,
    action: Option<uuid::Uuid>,
    open: berth_proto::StreamOpen,
    runtime: &Runtime,
    streams: &Streams,
    out_tx: &mpsc::Sender<AgentToRelay>,
) {
    let span = tracing::info_span!(
        "stream",
        stream.id = %stream,
        action.id = action.map(tracing::field::display),
        instance.id = %runtime.instance(),
        stream.kind = open.name(),
    );
    let (tx, rx) = mpsc::channel(STREAM_INBOUND_QUEUE);
    let (attached_tx, attached_rx) = watch::channel(false);
    let refusal = {
        let mut table = streams.lock().expect("streams lock");
        if table.open.contains_key(&stream) {
            Some(format!("stream {stream} is already open on this agent"))
        } else if table.open.len() >= MAX_STREAMS {
            Some(format!(
                "instance {} already serves {MAX_STREAMS} streams (attach, exec, logs, pull); \
                 close some and retry",
                runtime.instance()
            ))
        } else {
            table.open.insert(stream, tx);
            if let berth_proto::StreamOpen::Attach { container, .. } = &open {
                table
                    .attaching
                    .entry(*container)
                    .or_default()
                    .push(attached_rx);
            }
            None
        }
    };
    let out_tx = out_tx.clone();
    if let Some(refusal) = refusal {
        let _guard = span.enter();
        tracing::warn!(reason = %refusal, "stream refused");
        tokio::spawn(async move {
            let end = StreamMessage::End(StreamEnd::Failed {
                error: AgentError::new(AgentErrorKind::Runtime, refusal),
            });
            let _ = out_tx
                .send(AgentToRelay::Stream {
                    stream,
                    message: end,
                })
                .await;
        });
        return;
    }
    let attach_to = match &open {
        berth_proto::StreamOpen::Attach { container, .. } => Some(*container),
        _ => None,
    };
    let runtime = runtime.clone();
    let streams = Arc::clone(streams);
    tokio::spawn(
        async move {
            tracing::info!("stream opened");
            let end = runtime
                .serve_stream(stream, open, rx, out_tx.clone(), attached_tx)
                .await;
            {
                let mut table = streams.lock().expect("streams lock");
                table.open.remove(&stream);
                if let Some(container) = attach_to {
                    // Forget attaches that are set up, so the table does not grow.
                    table.attaches_to(container);
                }
            }
            match end {
                None => tracing::info!("stream cancelled"),
                Some(end) => {
                    match &end {
                        StreamEnd::Failed { error } => {
                            tracing::info!(error.kind = ?error.kind, error.message = %error.message, "stream failed")
                        }
                        other => tracing::info!(end = ?other, "stream ended"),
                    }
                    let _ = out_tx
                        .send(AgentToRelay::Stream {
                            stream,
                            message: StreamMessage::End(end),
                        })
                        .await;
                }
            }
        }
        .instrument(span),
    );
}

/// Turn engine events and pod status changes into numbered [`AgentToRelay::Event`]s,
/// in engine order; first one `Pod` event per pod the agent runs.
async fn event_loop(
    runtime: Runtime,
    mut engine_rx: mpsc::Receiver<bollard::models::EventMessage>,
    pods: Option<(
        tokio::sync::broadcast::Receiver<ContainerEvent>,
        crate::pods::Kubelet,
    )>,
    resend_pods: Arc<tokio::sync::Notify>,
    outbox: Arc<Mutex<Outbox>>,
    out_tx: mpsc::Sender<AgentToRelay>,
) -> anyhow::Result<()> {
    let (mut pod_rx, kubelet) = match pods {
        Some((rx, kubelet)) => (Some(rx), Some(kubelet)),
        None => (None, None),
    };
    let all_pods = |kubelet: &Option<crate::pods::Kubelet>| -> Vec<ContainerEvent> {
        kubelet
            .iter()
            .flat_map(|k| k.statuses())
            .map(|status| ContainerEvent::Pod {
                status: Box::new(status),
            })
            .collect()
    };
    let mut pending: std::collections::VecDeque<ContainerEvent> = all_pods(&kubelet).into();
    loop {
        let event = if let Some(event) = pending.pop_front() {
            event
        } else {
            tokio::select! {
                engine_event = engine_rx.recv() => {
                    let Some(engine_event) = engine_event else { return Ok(()) };
                    // An event that cannot be inspected ends the connection rather than
                    // being dropped: the reconnect sends the full state, so the relay
                    // never misses a change.
                    let event = runtime
                        .container_event(&engine_event)
                        .await
                        .map_err(|err| anyhow!(err))?;
                    let Some(event) = event else { continue };
                    event
                }
                pod_event = async {
                    match pod_rx.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match pod_event {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        // Changes were dropped: the current status of every pod covers them.
                        tracing::debug!(missed, "pod events lagged; sending every pod's status");
                        pending = all_pods(&kubelet).into();
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        pod_rx = None;
                        continue;
                    }
                },
                () = resend_pods.notified() => {
                    pending = all_pods(&kubelet).into();
                    continue;
                }
            }
        };
        // Numbered and kept until the service acknowledges it, so a connection lost
        // before then sends it again.
        let (session, seq) = {
            let mut outbox = outbox.lock().expect("outbox lock");
            (outbox.session(), outbox.push(event.clone()))
        };
        let container = match &event {
            ContainerEvent::Changed { container } => container.uuid,
            ContainerEvent::Removed { uuid } => *uuid,
            ContainerEvent::Pod { status } => status.uuid,
            ContainerEvent::PodRemoved { uuid } => *uuid,
        };
        tracing::debug!(instance.id = %runtime.instance(), container.id = %container, seq, "container event");
        if out_tx
            .send(AgentToRelay::Event {
                seq,
                event,
                session: Some(session),
            })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

/// The single writer: queued messages as text frames, and a ping every interval.
async fn write_loop(
    mut sink: SplitSink<Socket, Message>,
    mut out_rx: mpsc::Receiver<AgentToRelay>,
) -> anyhow::Result<()> {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    // After a slow write, one ping is enough; a burst of them would only queue up.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            message = out_rx.recv() => match message {
                Some(message) => Message::text(
                    framing::encode(&message).context("could not encode a message for the relay")?,
                ),
                None => return Ok(()),
            },
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        tokio::time::timeout(WRITE_LIMIT, sink.send(frame))
            .await
            .map_err(|_| {
                anyhow!(
                    "the relay did not accept a frame within {} s; the connection is dead",
                    WRITE_LIMIT.as_secs()
                )
            })?
            .context("writing to the relay failed")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::Response;
    use uuid::Uuid;

    fn link() -> LinkSettings {
        LinkSettings {
            url: "wss://relay.example:9518/v1/agent".to_owned(),
            urls: vec!["wss://relay.example:9518/v1/agent".to_owned()],
            credential: "secret-token".to_owned(),
            instance: Uuid::nil(),
            tls: None,
        }
    }

    #[test]
    fn a_401_refusal_says_to_check_the_credential_without_printing_it() {
        let response = Response::builder()
            .status(401)
            .body(Some(b"token expired".to_vec()))
            .unwrap();
        let text = describe_handshake_error(&tungstenite::Error::Http(Box::new(response)), &link());
        assert!(text.contains("refused the agent's credential"), "{text}");
        assert!(text.contains("token expired"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
    }

    #[test]
    fn other_refusals_name_the_status() {
        let response = Response::builder().status(503).body(None).unwrap();
        let text = describe_handshake_error(&tungstenite::Error::Http(Box::new(response)), &link());
        assert!(text.contains("HTTP 503"), "{text}");
    }
}
