//! The service's side of the relay: one WebSocket connection to a relay, over which
//! commands go out to agents and replies, state reports and events come back.
//!
//! Replies are matched to callers by request id. Stream messages are matched to the
//! open stream by stream id (see [`Agents::open_stream`]). Everything else the relay
//! sends (agent connected / disconnected, events) goes, in order, to one channel that
//! the reconciler drains.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::{
    AgentError, AgentErrorKind, Command, RelayToService, Reply, RequestId, ServiceToRelay,
    StreamData, StreamEnd, StreamId, StreamMessage, StreamOpen,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// How long a caller waits for a reply before giving up. Longer than the relay's own
/// timeout, so the relay's clearer error normally arrives first.
const CALL_TIMEOUT: Duration = Duration::from_secs(150);

type Pending = Arc<Mutex<HashMap<RequestId, oneshot::Sender<Reply>>>>;

/// Instances whose agents relays must refuse; sent in full on every relay connection,
/// since relays keep it only in memory.
type Revoked = Arc<Mutex<BTreeSet<Uuid>>>;

/// Messages queued for one stream's reader. The agent never has more than
/// [`berth_proto::stream::INITIAL_CREDIT`] bytes in flight, and it merges output that
/// is ready at once, so this only overflows when it sends a great many tiny chunks
/// (under 16 bytes on average) to a reader that stopped reading; the stream then
/// fails rather than growing the service's memory. The channel allocates slots as they
/// fill, so the capacity costs nothing while unused.
const STREAM_QUEUE: usize = 16 * 1024;

/// The reader grants credit back once it has consumed this many bytes.
const CREDIT_BATCH: u32 = berth_proto::stream::INITIAL_CREDIT / 4;

/// One open stream, as the connection loop sees it.
struct StreamEntry {
    /// The agent's output (data and the end), to the stream's reader.
    output: mpsc::Sender<StreamMessage>,
    /// Bytes of stdin the agent has granted and not yet been sent.
    stdin_credit: Arc<Semaphore>,
}

type Streams = Arc<Mutex<HashMap<StreamId, StreamEntry>>>;

/// Forget a stream; anyone waiting for stdin credit on it is released with an error.
fn forget_stream(streams: &Streams, stream: StreamId) -> Option<StreamEntry> {
    let entry = streams.lock().expect("streams lock").remove(&stream);
    if let Some(entry) = &entry {
        entry.stdin_credit.close();
    }
    entry
}

/// A handle for sending commands to agents. Cheap to clone.
#[derive(Clone)]
pub struct Agents {
    outbound: mpsc::Sender<ServiceToRelay>,
    pending: Pending,
    revoked: Revoked,
    streams: Streams,
}

impl Agents {
    /// Starts the connection loop to `relay_url` (e.g. `ws://127.0.0.1:9518`),
    /// authenticating with `credential`, and returns the handle and the channel of
    /// notifications for the reconciler.
    pub fn start(
        relay_url: String,
        credential: String,
    ) -> (Agents, mpsc::Receiver<RelayToService>) {
        let (out_tx, out_rx) = mpsc::channel(1024);
        let (note_tx, note_rx) = mpsc::channel(4096);
        let pending: Pending = Arc::default();
        let revoked: Revoked = Arc::default();
        let streams: Streams = Arc::default();
        tokio::spawn(connection_loop(
            relay_url,
            credential,
            out_rx,
            note_tx,
            pending.clone(),
            revoked.clone(),
            streams.clone(),
        ));
        (
            Agents {
                outbound: out_tx,
                pending,
                revoked,
                streams,
            },
            note_rx,
        )
    }

    /// Tells the relay that the agents of `instances` may no longer act (their
    /// instances were deleted): it closes their connections and refuses new ones. The
    /// list is also sent again on every later relay connection.
    pub async fn revoke(&self, instances: Vec<Uuid>) {
        let fresh: Vec<Uuid> = {
            let mut revoked = self.revoked.lock().expect("revoked lock");
            instances
                .into_iter()
                .filter(|i| revoked.insert(*i))
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        // When the relay connection is down the message waits in the queue; the full
        // list goes out on reconnection anyway.
        let _ = self
            .outbound
            .send(ServiceToRelay::Revoke { instances: fresh })
            .await;
    }

    /// Sends `command` to the agent of `instance` and waits for its reply.
    pub async fn call(&self, instance: Uuid, action: Option<Uuid>, command: Command) -> Reply {
        let request = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(request, tx);
        let op = command.name();
        let msg = ServiceToRelay::Command {
            request,
            instance,
            action,
            command,
        };
        if self.outbound.send(msg).await.is_err() {
            self.pending.lock().expect("pending lock").remove(&request);
            return Err(unavailable("the relay connection is shut down"));
        }
        tracing::debug!(request.id = %request, instance.id = %instance, command = op, "command sent");
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(unavailable("the relay connection closed before the agent replied; the command is safe to retry")),
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&request);
                Err(unavailable(&format!(
                    "no reply from the agent of instance {instance} within {} s",
                    CALL_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Opens a stream to the agent of `instance`. Returns at once; failures (agent not
    /// connected, unknown container…) arrive as the stream's `End(Failed)`.
    pub async fn open_stream(
        &self,
        instance: Uuid,
        action: Option<Uuid>,
        open: StreamOpen,
    ) -> Result<AgentStream, AgentError> {
        let stream = Uuid::new_v4();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stdin_credit = Arc::new(Semaphore::new(berth_proto::stream::INITIAL_CREDIT as usize));
        self.streams.lock().expect("streams lock").insert(
            stream,
            StreamEntry {
                output: tx,
                stdin_credit: stdin_credit.clone(),
            },
        );
        let kind = open.name();
        let msg = ServiceToRelay::StreamOpen {
            stream,
            instance,
            action,
            open,
        };
        if self.outbound.send(msg).await.is_err() {
            forget_stream(&self.streams, stream);
            return Err(unavailable("the relay connection is shut down"));
        }
        tracing::debug!(stream.id = %stream, instance.id = %instance, stream.kind = kind, "stream opened");
        let link = Arc::new(StreamLink {
            stream,
            instance,
            outbound: self.outbound.clone(),
            streams: self.streams.clone(),
        });
        Ok(AgentStream {
            input: StreamInput {
                link: link.clone(),
                stdin_credit,
            },
            output: StreamOutput {
                link,
                rx,
                consumed: 0,
                ended: false,
            },
        })
    }
}

/// What both halves of a stream need to talk to the relay.
struct StreamLink {
    stream: StreamId,
    instance: Uuid,
    outbound: mpsc::Sender<ServiceToRelay>,
    streams: Streams,
}

impl StreamLink {
    async fn send(&self, message: StreamMessage) -> Result<(), AgentError> {
        self.outbound
            .send(ServiceToRelay::Stream {
                stream: self.stream,
                instance: self.instance,
                message,
            })
            .await
            .map_err(|_| unavailable("the relay connection is shut down"))
    }

    /// Stop the stream: forget it here and tell the agent, unless it already ended.
    fn cancel_now(&self) {
        if forget_stream(&self.streams, self.stream).is_none() {
            return;
        }
        let msg = ServiceToRelay::Stream {
            stream: self.stream,
            instance: self.instance,
            message: StreamMessage::Cancel,
        };
        match self.outbound.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                // The queue drains as the relay connection writes; never block a drop.
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    let outbound = self.outbound.clone();
                    handle.spawn(async move {
                        let _ = outbound.send(msg).await;
                    });
                }
            }
        }
    }
}

/// An open stream to an agent: the two halves can be used from different tasks.
pub struct AgentStream {
    /// Towards the agent: stdin, half-close, resize, cancel.
    pub input: StreamInput,
    /// From the agent: output and the end.
    pub output: StreamOutput,
}

/// The sending half of a stream. Cheap to clone.
#[derive(Clone)]
pub struct StreamInput {
    link: Arc<StreamLink>,
    stdin_credit: Arc<Semaphore>,
}

impl StreamInput {
    /// Sends `bytes` to the process's stdin, split into chunks of at most
    /// [`berth_proto::stream::MAX_DATA_CHUNK`], each waiting for the agent's credit. Fails when
    /// the stream has ended or the relay connection is gone.
    pub async fn stdin(&self, bytes: Vec<u8>) -> Result<(), AgentError> {
        for chunk in bytes.chunks(berth_proto::stream::MAX_DATA_CHUNK) {
            // `chunk.len()` ≤ MAX_DATA_CHUNK, far below u32::MAX.
            let permits = self
                .stdin_credit
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| {
                    AgentError::new(
                        AgentErrorKind::Unavailable,
                        format!(
                            "the stream to instance {} has ended; no more input is accepted",
                            self.link.instance
                        ),
                    )
                })?;
            permits.forget();
            self.link
                .send(StreamMessage::Data(StreamData {
                    channel: berth_proto::Channel::Stdin,
                    data: chunk.to_vec(),
                }))
                .await?;
        }
        Ok(())
    }

    /// Tells the agent no more stdin follows (the client half-closed).
    pub async fn close_stdin(&self) {
        let _ = self.link.send(StreamMessage::CloseStdin).await;
    }

    /// Tells the agent the TTY changed size.
    pub async fn resize(&self, height: u16, width: u16) {
        let _ = self
            .link
            .send(StreamMessage::Resize { height, width })
            .await;
    }

    /// Stops the stream; the output half sees its end.
    pub async fn cancel(&self) {
        self.link.cancel_now();
    }
}

/// The receiving half of a stream; dropping it cancels the stream.
pub struct StreamOutput {
    link: Arc<StreamLink>,
    rx: mpsc::Receiver<StreamMessage>,
    /// Bytes taken by the reader and not yet granted back to the agent.
    consumed: u32,
    ended: bool,
}

/// What a stream produced.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Output bytes.
    Data(StreamData),
    /// The stream is over; nothing follows.
    End(StreamEnd),
}

impl StreamOutput {
    /// Next output chunk; grants credit back as it is consumed. `None` after the end.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        if self.ended {
            return None;
        }
        loop {
            let Some(message) = self.rx.recv().await else {
                // The connection loop dropped the stream without an end: the relay
                // connection went away or the reader fell too far behind.
                self.ended = true;
                return Some(StreamEvent::End(StreamEnd::Failed {
                    error: unavailable(&format!(
                        "the stream to the agent of instance {} was cut off; retry",
                        self.link.instance
                    )),
                }));
            };
            match message {
                StreamMessage::Data(data) => {
                    let len = u32::try_from(data.data.len()).unwrap_or(u32::MAX);
                    self.consumed = self.consumed.saturating_add(len);
                    if self.consumed >= CREDIT_BATCH {
                        let bytes = std::mem::take(&mut self.consumed);
                        let _ = self.link.send(StreamMessage::Credit { bytes }).await;
                    }
                    return Some(StreamEvent::Data(data));
                }
                StreamMessage::End(end) => {
                    self.ended = true;
                    return Some(StreamEvent::End(end));
                }
                // Credit is handled by the connection loop; the rest only go the other way.
                _ => {}
            }
        }
    }
}

impl Drop for StreamOutput {
    fn drop(&mut self) {
        if !self.ended {
            self.link.cancel_now();
        }
    }
}

/// Hand one stream message from the relay to its stream. Never blocks the
/// connection loop: a reader too far behind loses its stream.
fn route_stream_message(streams: &Streams, stream: StreamId, message: StreamMessage) {
    match message {
        StreamMessage::Credit { bytes } => {
            if let Some(entry) = streams.lock().expect("streams lock").get(&stream) {
                // Stay far below the semaphore's limit whatever the agent grants.
                if entry.stdin_credit.available_permits() < (1 << 30) {
                    entry.stdin_credit.add_permits(bytes as usize);
                }
            }
        }
        StreamMessage::End(end) => {
            if let Some(entry) = forget_stream(streams, stream) {
                let _ = entry.output.try_send(StreamMessage::End(end));
            }
        }
        message @ StreamMessage::Data(_) => {
            let full = {
                let streams = streams.lock().expect("streams lock");
                match streams.get(&stream) {
                    Some(entry) => matches!(
                        entry.output.try_send(message),
                        Err(mpsc::error::TrySendError::Full(_))
                    ),
                    None => false,
                }
            };
            if full {
                tracing::warn!(stream.id = %stream, "stream reader too far behind; dropping the stream");
                forget_stream(streams, stream);
            }
        }
        other => {
            tracing::debug!(stream.id = %stream, message = ?other, "ignoring a stream message only the service sends");
        }
    }
}

/// Ends every open stream: the relay connection they travelled on is gone.
fn fail_streams(streams: &Streams) {
    let drained: Vec<_> = streams.lock().expect("streams lock").drain().collect();
    for (_, entry) in drained {
        entry.stdin_credit.close();
        let _ = entry.output.try_send(StreamMessage::End(StreamEnd::Failed {
            error: unavailable("the relay connection was lost while the stream was open; retry"),
        }));
    }
}

fn unavailable(msg: &str) -> AgentError {
    AgentError::new(AgentErrorKind::Unavailable, msg)
}

/// Fails every pending call: its request may or may not have reached the agent, and
/// commands are idempotent, so the caller may retry.
fn fail_pending(pending: &Pending, why: &str) {
    let drained: Vec<_> = pending.lock().expect("pending lock").drain().collect();
    for (_, tx) in drained {
        let _ = tx.send(Err(unavailable(why)));
    }
}

async fn connection_loop(
    relay_url: String,
    credential: String,
    mut outbound: mpsc::Receiver<ServiceToRelay>,
    notes: mpsc::Sender<RelayToService>,
    pending: Pending,
    revoked: Revoked,
    streams: Streams,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(&relay_url, &credential).await {
            Ok(ws) => {
                tracing::info!(relay.url = %relay_url, "connected to relay");
                backoff = Duration::from_millis(100);
                let (mut sink, mut stream) = ws.split();
                let instances: Vec<Uuid> = revoked
                    .lock()
                    .expect("revoked lock")
                    .iter()
                    .copied()
                    .collect();
                if !instances.is_empty() {
                    let text = serde_json::to_string(&ServiceToRelay::Revoke { instances })
                        .expect("proto serialises");
                    if let Err(e) = sink.send(Message::text(text)).await {
                        // The loop below notices the broken connection and reconnects.
                        tracing::warn!(relay.url = %relay_url, error = %e, "cannot send the revoked instances to the relay");
                    }
                }
                let mut ping = tokio::time::interval(Duration::from_secs(15));
                loop {
                    tokio::select! {
                        msg = outbound.recv() => {
                            let Some(msg) = msg else { return };
                            let text = serde_json::to_string(&msg).expect("proto serialises");
                            if sink.send(Message::text(text)).await.is_err() {
                                break;
                            }
                        }
                        frame = stream.next() => {
                            match frame {
                                Some(Ok(Message::Text(text))) => {
                                    match serde_json::from_str::<RelayToService>(&text) {
                                        Ok(RelayToService::Reply { request, reply }) => {
                                            let tx = pending.lock().expect("pending lock").remove(&request);
                                            if let Some(tx) = tx {
                                                let _ = tx.send(reply);
                                            }
                                        }
                                        Ok(RelayToService::Stream { stream, message }) => {
                                            route_stream_message(&streams, stream, message);
                                        }
                                        Ok(note) => {
                                            if notes.send(note).await.is_err() {
                                                return;
                                            }
                                        }
                                        Err(e) => tracing::warn!(error = %e, "unreadable message from relay"),
                                    }
                                }
                                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                                Some(Ok(_)) => {}
                            }
                        }
                        _ = ping.tick() => {
                            if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!(relay.url = %relay_url, "relay connection lost; reconnecting");
                fail_pending(&pending, "the relay connection was lost before the agent replied; the command is safe to retry");
                fail_streams(&streams);
            }
            Err(e) => {
                tracing::warn!(relay.url = %relay_url, error = %e, "cannot connect to relay; retrying");
            }
        }
        let jitter = rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn connect(
    relay_url: &str,
    credential: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let url = format!(
        "{}{}",
        relay_url.trim_end_matches('/'),
        berth_proto::RELAY_SERVICE_PATH
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {credential}").parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::stream::{INITIAL_CREDIT, MAX_DATA_CHUNK};
    use berth_proto::Channel;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::WebSocketStream;

    /// A relay endpoint that accepts the service's connection.
    struct FakeRelay {
        ws: WebSocketStream<TcpStream>,
        // Held so the connection loop's notes channel stays open.
        _notes: mpsc::Receiver<RelayToService>,
    }

    impl FakeRelay {
        async fn start() -> (FakeRelay, Agents) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}", listener.local_addr().unwrap());
            let (agents, notes) = Agents::start(url, "credential".to_owned());
            let (socket, _) = listener.accept().await.unwrap();
            let ws = tokio_tungstenite::accept_async(socket).await.unwrap();
            (FakeRelay { ws, _notes: notes }, agents)
        }

        async fn recv(&mut self) -> ServiceToRelay {
            loop {
                match self.ws.next().await.unwrap().unwrap() {
                    Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                    _ => continue,
                }
            }
        }

        async fn send(&mut self, stream: StreamId, message: StreamMessage) {
            let text = serde_json::to_string(&RelayToService::Stream { stream, message }).unwrap();
            self.ws.send(Message::text(text)).await.unwrap();
        }

        async fn opened(&mut self) -> StreamId {
            match self.recv().await {
                ServiceToRelay::StreamOpen { stream, .. } => stream,
                other => panic!("expected a stream open, got {other:?}"),
            }
        }
    }

    fn open() -> StreamOpen {
        StreamOpen::Attach {
            container: Uuid::new_v4(),
            stdin: true,
            stdout: true,
            stderr: true,
            logs: false,
        }
    }

    fn stdout(bytes: Vec<u8>) -> StreamMessage {
        StreamMessage::Data(StreamData {
            channel: Channel::Stdout,
            data: bytes,
        })
    }

    #[tokio::test]
    async fn output_is_delivered_and_credited_back_in_batches() {
        let (mut relay, agents) = FakeRelay::start().await;
        let mut s = agents
            .open_stream(Uuid::new_v4(), None, open())
            .await
            .unwrap();
        let stream = relay.opened().await;
        let chunks = (CREDIT_BATCH as usize).div_ceil(MAX_DATA_CHUNK);
        for _ in 0..chunks {
            relay.send(stream, stdout(vec![b'x'; MAX_DATA_CHUNK])).await;
        }
        for _ in 0..chunks {
            match s.output.next().await {
                Some(StreamEvent::Data(data)) => assert_eq!(data.data.len(), MAX_DATA_CHUNK),
                other => panic!("expected data, got {other:?}"),
            }
        }
        match relay.recv().await {
            ServiceToRelay::Stream {
                stream: got,
                message: StreamMessage::Credit { bytes },
                ..
            } => {
                assert_eq!(got, stream);
                assert_eq!(bytes as usize, chunks * MAX_DATA_CHUNK);
            }
            other => panic!("expected credit, got {other:?}"),
        }
        relay
            .send(
                stream,
                StreamMessage::End(StreamEnd::Exited { code: Some(0) }),
            )
            .await;
        assert_eq!(
            s.output.next().await,
            Some(StreamEvent::End(StreamEnd::Exited { code: Some(0) }))
        );
        assert_eq!(s.output.next().await, None);
    }

    #[tokio::test]
    async fn stdin_waits_for_the_agents_credit_and_is_split_into_chunks() {
        let (mut relay, agents) = FakeRelay::start().await;
        let s = agents
            .open_stream(Uuid::new_v4(), None, open())
            .await
            .unwrap();
        let stream = relay.opened().await;
        let total = INITIAL_CREDIT as usize + 10;
        let input = s.input.clone();
        let writer = tokio::spawn(async move { input.stdin(vec![b'y'; total]).await });
        let mut sent = 0;
        while sent < INITIAL_CREDIT as usize {
            match relay.recv().await {
                ServiceToRelay::Stream {
                    message: StreamMessage::Data(data),
                    ..
                } => {
                    assert!(data.data.len() <= MAX_DATA_CHUNK);
                    sent += data.data.len();
                }
                other => panic!("expected stdin, got {other:?}"),
            }
        }
        assert_eq!(sent, INITIAL_CREDIT as usize, "never beyond the credit");
        assert!(!writer.is_finished());
        relay
            .send(stream, StreamMessage::Credit { bytes: 10 })
            .await;
        match relay.recv().await {
            ServiceToRelay::Stream {
                message: StreamMessage::Data(data),
                ..
            } => assert_eq!(data.data.len(), 10),
            other => panic!("expected the rest of stdin, got {other:?}"),
        }
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dropping_the_output_cancels_the_stream() {
        let (mut relay, agents) = FakeRelay::start().await;
        let s = agents
            .open_stream(Uuid::new_v4(), None, open())
            .await
            .unwrap();
        let stream = relay.opened().await;
        drop(s.output);
        match relay.recv().await {
            ServiceToRelay::Stream {
                stream: got,
                message: StreamMessage::Cancel,
                ..
            } => assert_eq!(got, stream),
            other => panic!("expected a cancel, got {other:?}"),
        }
        // Input on a cancelled stream is refused instead of waiting forever.
        assert!(s
            .input
            .stdin(vec![b'z'; INITIAL_CREDIT as usize + 1])
            .await
            .is_err());
    }

    #[tokio::test]
    async fn losing_the_relay_connection_fails_open_streams_as_retryable() {
        let (mut relay, agents) = FakeRelay::start().await;
        let mut s = agents
            .open_stream(Uuid::new_v4(), None, open())
            .await
            .unwrap();
        relay.opened().await;
        relay.ws.close(None).await.unwrap();
        drop(relay);
        match s.output.next().await {
            Some(StreamEvent::End(StreamEnd::Failed { error })) => {
                assert_eq!(error.kind, AgentErrorKind::Unavailable);
                assert!(error.message.contains("retry"), "{}", error.message);
            }
            other => panic!("expected a retryable failure, got {other:?}"),
        }
        assert_eq!(s.output.next().await, None);
    }
}
