//! The service's side of the relays: one WebSocket connection to each configured
//! relay, over which commands go out to agents and replies, state reports and events
//! come back.
//!
//! An agent is connected to one relay at a time, any of them. With several relays the
//! service finds an instance's relay in the database (`agent_links`, kept by the
//! reconciler from each relay's reports, shared by every service replica) and sends
//! through its own connection to that relay; with one relay everything goes there.
//!
//! Replies are matched to callers by request id. Stream messages are matched to the
//! open stream by stream id (see [`Agents::open_stream`]). Everything else a relay
//! sends (agent connected / disconnected, events) goes, in order per relay and tagged
//! with the relay, to one channel that the reconciler drains ([`RelayNote`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How often the service pings each relay (the relay pings as often).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A relay connection with no frame at all (pongs included) for this long is dead,
/// whatever TCP believes: its calls fail as retriable and the loop reconnects.
const IDLE_LIMIT: Duration = Duration::from_secs(15);

/// Calls waiting for a reply, with the relay (index into [`Agents::relays`]) each was
/// sent through, so that losing one relay fails only its own calls.
type Pending = Arc<Mutex<HashMap<RequestId, (usize, oneshot::Sender<Reply>)>>>;

/// What a relay connection tells the reconciler.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayNote {
    /// A message from the relay at `relay` (agent connected / disconnected, events,
    /// the agents present when the connection was made).
    Message {
        /// The relay's URL, as configured.
        relay: String,
        /// What it said (boxed: a state report is large, a loss notice tiny).
        message: Box<RelayToService>,
    },
    /// The connection to the relay at `relay` was lost: its agents are unreachable
    /// through it until they report again (through it or another relay).
    Lost {
        /// The relay's URL, as configured.
        relay: String,
    },
}

/// The service's connection to one relay.
struct RelayConn {
    /// The relay's URL, as configured.
    url: String,
    /// Messages for the relay; the connection loop writes them.
    outbound: mpsc::Sender<ServiceToRelay>,
    /// Whether the connection is up now. Calls and stream opens check it under the
    /// lock they register under, and the loop clears it before failing what is
    /// registered, so nothing is ever sent into a connection that is not up.
    up: Arc<AtomicBool>,
}

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
    /// The relay the stream travels through (index into [`Agents::relays`]).
    relay: usize,
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
    /// One connection per configured relay.
    relays: Arc<Vec<RelayConn>>,
    /// Where to look up an agent's relay when there are several.
    links: Option<crate::db::Db>,
    /// Signs every command and stream open (see [`crate::command_signing`]).
    signer: crate::command_signing::CommandSigner,
    pending: Pending,
    revoked: Revoked,
    streams: Streams,
}

impl Agents {
    /// Starts a connection loop to each of `relay_urls` (e.g. `ws://127.0.0.1:9518`),
    /// authenticating with `credential`, and returns the handle and the channel of
    /// notifications for the reconciler. With several relays, `links` is the database
    /// where the reconciler records which relay each agent is on; without it (or with
    /// one relay) every command goes to the first relay.
    pub fn start(
        relay_urls: Vec<String>,
        credential: String,
        tls: berth_tls::ClientTls,
        signer: crate::command_signing::CommandSigner,
        links: Option<crate::db::Db>,
    ) -> (Agents, mpsc::Receiver<RelayNote>) {
        let (note_tx, note_rx) = mpsc::channel(4096);
        let pending: Pending = Arc::default();
        let revoked: Revoked = Arc::default();
        let streams: Streams = Arc::default();
        let mut relays = Vec::new();
        for (index, relay_url) in relay_urls.into_iter().enumerate() {
            let (out_tx, out_rx) = mpsc::channel(1024);
            let up = Arc::new(AtomicBool::new(false));
            relays.push(RelayConn {
                url: relay_url.clone(),
                outbound: out_tx,
                up: up.clone(),
            });
            tokio::spawn(connection_loop(
                RelayLoop {
                    index,
                    up,
                    relay_url,
                    credential: credential.clone(),
                    tls: tls.clone(),
                    notes: note_tx.clone(),
                    pending: pending.clone(),
                    revoked: revoked.clone(),
                    streams: streams.clone(),
                },
                out_rx,
            ));
        }
        (
            Agents {
                relays: Arc::new(relays),
                links,
                signer,
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
        // When a relay connection is down the message waits in the queue; the full
        // list goes out on reconnection anyway.
        for relay in self.relays.iter() {
            let _ = relay
                .outbound
                .send(ServiceToRelay::Revoke {
                    instances: fresh.clone(),
                })
                .await;
        }
    }

    /// Tells the agent of `instance`, through the relay at `relay` (the one its events
    /// came through), that its events of `session` up to `seq` are recorded.
    pub async fn ack(&self, relay: &str, instance: Uuid, session: Uuid, seq: u64) {
        let Some(conn) = self.relays.iter().find(|r| r.url == relay) else {
            return;
        };
        // Never wait on a full queue: a lost ack only means the agent sends the
        // events again, and the next ack covers them.
        let _ = conn.outbound.try_send(ServiceToRelay::Ack {
            instance,
            session,
            seq,
        });
    }

    /// Waits until every relay connection is up (tests: a call before that fails).
    #[cfg(test)]
    async fn until_connected(&self) {
        while !self.relays.iter().all(|r| r.up.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The relay to reach the agent of `instance` through: the only one, or the one
    /// the database says the agent is connected to now.
    async fn route(&self, instance: Uuid) -> Result<(usize, &RelayConn), AgentError> {
        let (Some(db), true) = (&self.links, self.relays.len() > 1) else {
            return self
                .relays
                .first()
                .map(|r| (0, r))
                .ok_or_else(|| unavailable("no relay is configured"));
        };
        let id = instance.to_string();
        let url = db
            .run(move |c| crate::db::agent_links::relay_of(c, &id))
            .await
            .map_err(|e| {
                unavailable(&format!(
                    "cannot look up the relay of instance {instance}'s agent ({e}); retry"
                ))
            })?;
        let Some(url) = url else {
            return Err(unavailable(&format!(
                "the agent of instance {instance} is not connected to any relay; retry once it reconnects"
            )));
        };
        self.relays
            .iter()
            .enumerate()
            .find(|(_, r)| r.url == url)
            .ok_or_else(|| {
                unavailable(&format!(
                    "the agent of instance {instance} is connected to relay {url}, which this \
                     service is not configured to use; add it to the service's relay_url list"
                ))
            })
    }

    /// Sends `command` to the agent of `instance` and waits for its reply.
    pub async fn call(&self, instance: Uuid, action: Option<Uuid>, command: Command) -> Reply {
        let request = Uuid::new_v4();
        let (relay, conn) = self.route(instance).await?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if !conn.up.load(Ordering::SeqCst) {
                return Err(relay_down(&conn.url));
            }
            pending.insert(request, (relay, tx));
        }
        let op = command.name();
        let token = match self
            .signer
            .sign_command(instance, request, action, &command)
        {
            Ok(token) => token,
            Err(e) => {
                self.pending.lock().expect("pending lock").remove(&request);
                return Err(e);
            }
        };
        let msg = ServiceToRelay::Command {
            request,
            instance,
            action,
            command,
            token,
        };
        if conn.outbound.send(msg).await.is_err() {
            self.pending.lock().expect("pending lock").remove(&request);
            return Err(unavailable("the relay connection is shut down"));
        }
        tracing::debug!(request.id = %request, instance.id = %instance, relay.url = %conn.url, command = op, "command sent");
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(unavailable(&format!("the connection to relay {} closed before the agent replied; the command is safe to retry", conn.url))),
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
        let token = self
            .signer
            .sign_stream_open(instance, stream, action, &open)?;
        let (relay, conn) = self.route(instance).await?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stdin_credit = Arc::new(Semaphore::new(berth_proto::stream::INITIAL_CREDIT as usize));
        {
            let mut streams = self.streams.lock().expect("streams lock");
            if !conn.up.load(Ordering::SeqCst) {
                return Err(relay_down(&conn.url));
            }
            streams.insert(
                stream,
                StreamEntry {
                    relay,
                    output: tx,
                    stdin_credit: stdin_credit.clone(),
                },
            );
        }
        let kind = open.name();
        let msg = ServiceToRelay::StreamOpen {
            stream,
            instance,
            action,
            open,
            token,
        };
        if conn.outbound.send(msg).await.is_err() {
            forget_stream(&self.streams, stream);
            return Err(unavailable("the relay connection is shut down"));
        }
        tracing::debug!(stream.id = %stream, instance.id = %instance, stream.kind = kind, "stream opened");
        let link = Arc::new(StreamLink {
            stream,
            instance,
            outbound: conn.outbound.clone(),
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

/// Ends every open stream through relay `relay`: the connection they travelled on is gone.
fn fail_streams(streams: &Streams, relay: usize, url: &str) {
    let drained: Vec<_> = {
        let mut streams = streams.lock().expect("streams lock");
        let ids: Vec<StreamId> = streams
            .iter()
            .filter(|(_, e)| e.relay == relay)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| streams.remove(&id))
            .collect()
    };
    for entry in drained {
        entry.stdin_credit.close();
        let _ = entry.output.try_send(StreamMessage::End(StreamEnd::Failed {
            error: unavailable(&format!(
                "the connection to relay {url} was lost while the stream was open; retry"
            )),
        }));
    }
}

fn unavailable(msg: &str) -> AgentError {
    AgentError::new(AgentErrorKind::Unavailable, msg)
}

/// The error for a call or stream routed to a relay whose connection is down.
fn relay_down(url: &str) -> AgentError {
    unavailable(&format!(
        "the connection to relay {url} is down (reconnecting); the command was not sent and is safe to retry"
    ))
}

/// Drops what was queued for a relay while its connection was down (or as it went
/// down): the calls and streams among it were already failed to their callers, so
/// sending them later would run commands nobody waits for; revocations go out in full
/// on every connection and a lost ack only means the agent re-sends events.
fn drop_queued(outbound: &mut mpsc::Receiver<ServiceToRelay>, relay_url: &str) {
    let mut dropped = 0usize;
    while let Ok(msg) = outbound.try_recv() {
        if matches!(
            msg,
            ServiceToRelay::Command { .. } | ServiceToRelay::StreamOpen { .. }
        ) {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::info!(relay.url = %relay_url, dropped, "dropped commands queued while the relay connection was down; their callers were told to retry");
    }
}

/// Fails every call pending on relay `relay`: its request may or may not have reached
/// the agent, and commands are idempotent by action id, so the caller may retry.
fn fail_pending(pending: &Pending, relay: usize, why: &str) {
    let drained: Vec<_> = {
        let mut pending = pending.lock().expect("pending lock");
        let ids: Vec<RequestId> = pending
            .iter()
            .filter(|(_, (r, _))| *r == relay)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| pending.remove(&id))
            .collect()
    };
    for (_, tx) in drained {
        let _ = tx.send(Err(unavailable(why)));
    }
}

/// What one relay's connection loop shares with the handle.
struct RelayLoop {
    index: usize,
    /// Shared with [`RelayConn::up`].
    up: Arc<AtomicBool>,
    relay_url: String,
    credential: String,
    /// The CA the relay's certificate must chain to, and the service's certificate.
    tls: berth_tls::ClientTls,
    notes: mpsc::Sender<RelayNote>,
    pending: Pending,
    revoked: Revoked,
    streams: Streams,
}

async fn connection_loop(relay: RelayLoop, mut outbound: mpsc::Receiver<ServiceToRelay>) {
    let RelayLoop {
        index,
        up,
        relay_url,
        credential,
        tls,
        notes,
        pending,
        revoked,
        streams,
    } = relay;
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(&relay_url, &credential, &tls).await {
            Ok(ws) => {
                tracing::info!(relay.url = %relay_url, "connected to relay");
                backoff = Duration::from_millis(100);
                drop_queued(&mut outbound, &relay_url);
                up.store(true, Ordering::SeqCst);
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
                let mut ping = tokio::time::interval(PING_INTERVAL);
                let mut last_frame = tokio::time::Instant::now();
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
                            last_frame = tokio::time::Instant::now();
                            match frame {
                                Some(Ok(Message::Text(text))) => {
                                    match serde_json::from_str::<RelayToService>(&text) {
                                        Ok(RelayToService::Reply { request, reply }) => {
                                            let tx = pending.lock().expect("pending lock").remove(&request);
                                            if let Some((_, tx)) = tx {
                                                let _ = tx.send(reply);
                                            }
                                        }
                                        Ok(RelayToService::Stream { stream, message }) => {
                                            route_stream_message(&streams, stream, message);
                                        }
                                        Ok(message) => {
                                            let note = RelayNote::Message { relay: relay_url.clone(), message: Box::new(message) };
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
                            if last_frame.elapsed() > IDLE_LIMIT {
                                tracing::warn!(relay.url = %relay_url, idle.secs = IDLE_LIMIT.as_secs(), "nothing received from the relay (not even a pong); dropping the connection");
                                break;
                            }
                            if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!(relay.url = %relay_url, "relay connection lost; reconnecting");
                // Down first: a call that registers after this fails at once, one
                // registered before is failed here.
                up.store(false, Ordering::SeqCst);
                drop_queued(&mut outbound, &relay_url);
                fail_pending(&pending, index, &format!("the connection to relay {relay_url} was lost before the agent replied; the command is safe to retry"));
                fail_streams(&streams, index, &relay_url);
                if notes
                    .send(RelayNote::Lost {
                        relay: relay_url.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
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

/// Dials the relay over TLS (`wss://` only): its certificate must chain to the
/// deployment's CA, and the service presents its own (`urn:berth:service`).
async fn connect(
    relay_url: &str,
    credential: &str,
    tls: &berth_tls::ClientTls,
) -> anyhow::Result<berth_tls::WsClient> {
    let url = format!(
        "{}{}",
        relay_url.trim_end_matches('/'),
        berth_proto::RELAY_SERVICE_PATH
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {credential}").parse()?);
    let (ws, _) = berth_tls::connect_websocket(request, tls, Some(websocket_config())).await?;
    Ok(ws)
}

/// Largest message (and frame) the service reads from a relay: an agent's reply or
/// report (the relay refuses anything over 16 MiB from an agent) in the relay's envelope.
const MAX_MESSAGE_SIZE: usize = 17 << 20;

/// WebSocket limits for the relay connection: a cap on message and frame size, so a
/// misbehaving relay cannot make the service buffer without bound.
fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(64 << 10)
        .write_buffer_size(64 << 10)
        .max_write_buffer_size(2 * MAX_MESSAGE_SIZE)
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::stream::{INITIAL_CREDIT, MAX_DATA_CHUNK};
    use berth_proto::Channel;
    use tokio::net::TcpListener;
    use tokio_tungstenite::WebSocketStream;

    /// A relay endpoint that accepts the service's connection.
    struct FakeRelay {
        ws: WebSocketStream<berth_tls::ServerStream>,
        // Held so the connection loop's notes channel stays open.
        _notes: mpsc::Receiver<RelayNote>,
    }

    impl FakeRelay {
        async fn start() -> (FakeRelay, Agents) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("wss://{}", listener.local_addr().unwrap());
            let key = crate::identity::keys::SigningKey::generate().unwrap();
            let signer = crate::command_signing::CommandSigner::new(&key, Duration::from_secs(60));
            let (server, tls) = relay_and_service_tls();
            let (agents, notes) =
                Agents::start(vec![url], "credential".to_owned(), tls, signer, None);
            let (socket, _) = listener.accept().await.unwrap();
            let (socket, identity) = server.accept(socket).await.unwrap();
            assert_eq!(identity, Ok(berth_tls::Identity::Service));
            let ws = tokio_tungstenite::accept_async(socket).await.unwrap();
            agents.until_connected().await;
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

    /// The relay's TLS, as the real one: a server certificate of a test CA, and the
    /// service's client certificate of the same CA.
    fn relay_and_service_tls() -> (berth_tls::ServerTls, berth_tls::ClientTls) {
        let day = Duration::from_secs(86_400);
        let ca = berth_tls::Ca::generate("test", day).unwrap();
        let relay_cert = ca.server_certificate(&["127.0.0.1".into()], day).unwrap();
        let server =
            berth_tls::ServerTls::from_pem(ca.pem(), &relay_cert.cert_pem, &relay_cert.key_pem)
                .unwrap();
        let service = ca
            .identity_certificate(berth_tls::Identity::Service, day)
            .unwrap();
        let tls =
            berth_tls::ClientTls::from_pem(ca.pem(), &service.cert_pem, &service.key_pem).unwrap();
        (server, tls)
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

    /// Two relays as the service sees them, and the database of agent links.
    async fn two_relays(
        db: crate::db::Db,
    ) -> (
        Vec<String>,
        Vec<WebSocketStream<berth_tls::ServerStream>>,
        Agents,
        mpsc::Receiver<RelayNote>,
    ) {
        let (server, tls) = relay_and_service_tls();
        let key = crate::identity::keys::SigningKey::generate().unwrap();
        let signer = crate::command_signing::CommandSigner::new(&key, Duration::from_secs(60));
        let listeners = [
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ];
        let urls: Vec<String> = listeners
            .iter()
            .map(|l| format!("wss://{}", l.local_addr().unwrap()))
            .collect();
        let (agents, notes) =
            Agents::start(urls.clone(), "credential".to_owned(), tls, signer, Some(db));
        let mut sockets = Vec::new();
        for listener in listeners {
            let (socket, _) = listener.accept().await.unwrap();
            let (socket, _) = server.accept(socket).await.unwrap();
            sockets.push(tokio_tungstenite::accept_async(socket).await.unwrap());
        }
        agents.until_connected().await;
        (urls, sockets, agents, notes)
    }

    async fn next_command(ws: &mut WebSocketStream<berth_tls::ServerStream>) -> (RequestId, Uuid) {
        loop {
            if let Message::Text(text) = ws.next().await.unwrap().unwrap() {
                match serde_json::from_str(&text).unwrap() {
                    ServiceToRelay::Command {
                        request, instance, ..
                    } => return (request, instance),
                    _ => continue,
                }
            }
        }
    }

    /// A command for the tests: inspect a container the agent does not know.
    fn inspect() -> Command {
        Command::Inspect {
            container: Uuid::new_v4(),
        }
    }

    #[tokio::test]
    async fn a_command_goes_through_the_relay_the_database_names_and_fails_retriably_naming_it_when_that_relay_dies(
    ) {
        // No instance row is needed without the foreign key.
        let (_dir, db) = crate::db::testing::sqlite_without_foreign_keys();
        let (urls, mut relays, agents, _notes) = two_relays(db.clone()).await;
        let instance = Uuid::new_v4();

        // Known nowhere: a retriable error at once, nothing sent.
        let err = agents.call(instance, None, inspect()).await.unwrap_err();
        assert_eq!(err.kind, AgentErrorKind::Unavailable);
        assert!(
            err.message.contains("not connected to any relay"),
            "{}",
            err.message
        );

        // On the second relay: the command goes there.
        let (id, url) = (instance.to_string(), urls[1].clone());
        db.run(move |c| crate::db::agent_links::connected(c, &id, &url, None))
            .await
            .unwrap();
        let caller = agents.clone();
        let call = tokio::spawn(async move { caller.call(instance, None, inspect()).await });
        let (_, to) = next_command(&mut relays[1]).await;
        assert_eq!(to, instance);

        // That relay dies with the command in flight: a retriable error naming it.
        let dead = relays.pop().unwrap();
        drop(dead);
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.kind, AgentErrorKind::Unavailable);
        assert!(err.message.contains(&urls[1]), "{}", err.message);
        assert!(err.message.contains("safe to retry"), "{}", err.message);

        // The database still names the dead relay (the reconciler has not yet handled
        // the loss): a command now fails at once, naming it, instead of waiting in the
        // queue of a connection that is not up until the call times out.
        let err = agents.call(instance, None, inspect()).await.unwrap_err();
        assert_eq!(err.kind, AgentErrorKind::Unavailable);
        assert!(err.message.contains(&urls[1]), "{}", err.message);
        assert!(err.message.contains("is down"), "{}", err.message);
        let err = agents
            .open_stream(instance, None, open())
            .await
            .err()
            .expect("a stream to a relay that is down fails at once");
        assert_eq!(err.kind, AgentErrorKind::Unavailable);
        assert!(err.message.contains(&urls[1]), "{}", err.message);
    }
}
