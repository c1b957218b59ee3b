//! The relay's routing tables, shared by every connection.
//!
//! One `std::sync::Mutex` guards everything, as mini-redis guards its `Db`: no
//! operation awaits while holding it (messages are queued with `try_send`), each one is
//! a few hash-map operations, and taking one lock keeps the tables mutually consistent:
//! a service that registers sees exactly the agents registered before it, and every
//! broadcast after it.
//!
//! Streams (attach, exec, logs, pull) are routed like commands: opened to the agent of
//! an instance, remembered as stream → (service connection, instance, agent
//! connection) until the agent ends the stream or the service cancels it, and failed
//! or cancelled when either end's connection goes. Only the agent a stream was opened
//! to may send on it. Credit between the ends keeps each stream's traffic small.
//!
//! Outbound queues are bounded. A peer that does not read fast enough to keep its
//! queue from filling is closed instead of letting relay memory grow: its messages are
//! not dropped silently, and it rebuilds its view by reconnecting (services get
//! `Agents` and fresh state, agents report state again).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use berth_proto::{
    AgentError, AgentErrorKind, AgentToRelay, Command, ContainerEvent, ObservedContainer,
    RelayToAgent, RelayToService, Reply, RequestId, ServiceToRelay, StreamEnd, StreamId,
    StreamMessage, StreamOpen,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::frame;

/// Messages a connection may have queued before the relay gives up on it.
pub(crate) const QUEUE_CAPACITY: usize = 256;

/// How many agents a new service's resync asks at a time; the next batch waits until the
/// service's queue has room for a whole batch of reports again.
const RESYNC_BATCH: usize = 64;

/// How often a paced resync looks at the new service's queue.
const RESYNC_POLL: Duration = Duration::from_millis(10);

/// How long a paced resync waits for a batch's reports before asking the next batch.
const RESYNC_PATIENCE: Duration = Duration::from_secs(1);

/// Identifies one connection for the life of the process.
pub(crate) type ConnId = u64;

/// Why the relay closes a connection on its own initiative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// A newer connection for the same instance took over.
    Replaced,
    /// The outbound queue filled up.
    Overflow,
    /// The agent's instance was deleted: its credential no longer works.
    Revoked,
}

/// The router's end of a connection: where its outbound messages go.
struct Outbox {
    conn: ConnId,
    messages: mpsc::Sender<Message>,
    kick: watch::Sender<Option<Kick>>,
    /// Messages queued so far, for pacing a new service's resync.
    delivered: Arc<AtomicU64>,
}

/// The connection handler's end: what to write, and whether to hang up.
pub(crate) struct Inbox {
    pub(crate) messages: mpsc::Receiver<Message>,
    pub(crate) kick: KickSignal,
    // Held so that `messages` never reports closed: the relay ends a connection only
    // through `kick`, which says why.
    _keep_open: mpsc::Sender<Message>,
}

/// Tells a connection handler when the router wants its connection closed, and why.
pub(crate) struct KickSignal(watch::Receiver<Option<Kick>>);

impl KickSignal {
    /// Completes when the router asks this connection to close.
    pub(crate) async fn kicked(&mut self) -> Kick {
        let kick = self.0.wait_for(Option::is_some).await.map(|kick| *kick);
        match kick {
            Ok(Some(kick)) => kick,
            // The router dropped the connection's entry without a kick, which happens
            // only after the connection itself ended; nothing left to wait for.
            _ => std::future::pending().await,
        }
    }
}

fn outbox(conn: ConnId) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let (kick_tx, kick_rx) = watch::channel(None);
    let outbox = Outbox {
        conn,
        messages: tx.clone(),
        kick: kick_tx,
        delivered: Arc::new(AtomicU64::new(0)),
    };
    let inbox = Inbox {
        messages: rx,
        kick: KickSignal(kick_rx),
        _keep_open: tx,
    };
    (outbox, inbox)
}

impl Outbox {
    /// Queue a message without waiting. Returns false when it was not queued: the
    /// connection is closing, or its queue was full and it is now being closed.
    fn deliver(&self, message: Message) -> bool {
        match self.messages.try_send(message) {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) => {
                if self.kick(Kick::Overflow) {
                    warn!(
                        connection.id = self.conn,
                        queue.capacity = QUEUE_CAPACITY,
                        "closing a connection that is not reading its messages fast enough"
                    );
                }
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Ask the connection to close. True the first time only, so the reason logged and
    /// sent is the first one.
    fn kick(&self, why: Kick) -> bool {
        self.kick.send_if_modified(|kick| {
            if kick.is_none() {
                *kick = Some(why);
                true
            } else {
                false
            }
        })
    }
}

struct AgentEntry {
    outbox: Outbox,
}

struct Pending {
    /// The service connection waiting for the reply.
    service: ConnId,
    /// The instance the command was sent to; only its agent may answer.
    instance: Uuid,
    /// The agent connection the command went out on; if it closes, the request fails.
    agent_conn: ConnId,
    /// The timeout task, stopped when the request is answered.
    timer: AbortHandle,
}

/// Where one open stream runs: who opened it and which agent connection serves it.
struct StreamRoute {
    /// The service connection that opened the stream; the agent's output goes there.
    service: ConnId,
    /// The instance the stream was opened to; only its agent may send on it.
    instance: Uuid,
    /// The agent connection the stream went out on; if it closes, the stream fails.
    agent_conn: ConnId,
}

#[derive(Default)]
struct Tables {
    agents: HashMap<Uuid, AgentEntry>,
    services: HashMap<ConnId, Outbox>,
    pending: HashMap<RequestId, Pending>,
    /// Open streams. Bytes are never buffered here: each message is queued on the
    /// peer's bounded outbox or the peer is closed, and credit keeps the flow small.
    streams: HashMap<StreamId, StreamRoute>,
    /// Instances whose agents may not connect (deleted or released), as services said.
    revoked: HashSet<Uuid>,
}

impl Tables {
    fn to_all_services(&self, message: &RelayToService) {
        // Encoded once: the frame's payload is reference-counted, so each service's
        // queue holds a cheap clone.
        let frame = frame::encode(message);
        for service in self.services.values() {
            service.deliver(frame.clone());
        }
    }

    fn to_service(&self, service: ConnId, message: &RelayToService) {
        if let Some(outbox) = self.services.get(&service) {
            outbox.deliver(frame::encode(message));
        }
    }

    fn reply(&self, service: ConnId, request: RequestId, reply: Reply) {
        self.to_service(service, &RelayToService::Reply { request, reply });
    }

    /// End `stream` for the service that opened it, with this failure.
    fn fail_stream(&self, service: ConnId, stream: StreamId, kind: AgentErrorKind, why: String) {
        self.to_service(
            service,
            &RelayToService::Stream {
                stream,
                message: StreamMessage::End(StreamEnd::Failed {
                    error: AgentError::new(kind, why),
                }),
            },
        );
    }
}

/// The shared routing state of one relay.
pub(crate) struct Router {
    tables: Mutex<Tables>,
    request_timeout: Duration,
    next_conn: AtomicU64,
}

impl Router {
    pub(crate) fn new(request_timeout: Duration) -> Self {
        Self {
            tables: Mutex::new(Tables::default()),
            request_timeout,
            next_conn: AtomicU64::new(1),
        }
    }

    /// A fresh connection id.
    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic elsewhere while holding the lock cannot leave a map half-updated in a
        // way that breaks routing for everyone else, so keep serving.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register the agent of `instance`, replacing (and closing) an older connection
    /// for the same instance: the newer one is the agent that is alive.
    ///
    /// An agent of a revoked instance gets an inbox that is already told to close: the
    /// check at the upgrade and a revocation arriving meanwhile cannot race past it,
    /// since both are decided under the one lock.
    pub(crate) fn agent_connected(&self, conn: ConnId, instance: Uuid) -> Inbox {
        let (outbox, inbox) = outbox(conn);
        let mut tables = self.lock();
        if tables.revoked.contains(&instance) {
            outbox.kick(Kick::Revoked);
            return inbox;
        }
        if let Some(old) = tables.agents.insert(instance, AgentEntry { outbox }) {
            info!(
                instance.id = %instance,
                connection.replaced = old.outbox.conn,
                "a newer connection replaces the agent's previous one"
            );
            old.outbox.kick(Kick::Replaced);
        }
        inbox
    }

    /// Route one message from the agent of `instance` on connection `conn`.
    pub(crate) fn agent_message(&self, conn: ConnId, instance: Uuid, message: AgentToRelay) {
        match message {
            AgentToRelay::State {
                containers,
                session,
            } => {
                let tables = self.lock();
                if is_current(&tables, conn, instance) {
                    debug!(instance.id = %instance, containers = containers.len(), "agent state");
                    tables.to_all_services(&agent_connected(instance, containers, session));
                }
            }
            AgentToRelay::Event {
                seq,
                event,
                session,
            } => {
                let tables = self.lock();
                if is_current(&tables, conn, instance) {
                    tables.to_all_services(&agent_event(instance, seq, event, session));
                }
            }
            AgentToRelay::Reply { request, reply } => self.agent_replied(instance, request, reply),
            AgentToRelay::Stream { stream, message } => {
                self.agent_stream(conn, instance, stream, message);
            }
        }
    }

    /// Route an agent's stream message to the service that opened the stream.
    fn agent_stream(&self, conn: ConnId, instance: Uuid, stream: StreamId, message: StreamMessage) {
        let mut tables = self.lock();
        let Some(route) = tables.streams.get(&stream) else {
            debug!(instance.id = %instance, stream.id = %stream, "dropping a message on a stream that is not open (ended, cancelled, or its service left)");
            return;
        };
        if route.instance != instance || route.agent_conn != conn {
            // An agent acts only on streams opened to it, on this connection.
            warn!(
                instance.id = %instance,
                stream.id = %stream,
                stream.instance = %route.instance,
                "ignoring an agent's message on a stream not opened to it"
            );
            return;
        }
        let service = route.service;
        if matches!(message, StreamMessage::End(_)) {
            tables.streams.remove(&stream);
            debug!(instance.id = %instance, stream.id = %stream, "stream ended");
        }
        tables.to_service(service, &RelayToService::Stream { stream, message });
    }

    fn agent_replied(&self, instance: Uuid, request: RequestId, reply: Reply) {
        let mut tables = self.lock();
        match tables.pending.get(&request) {
            None => {
                debug!(
                    instance.id = %instance,
                    request.id = %request,
                    "dropping a reply nobody waits for (timed out, failed, or its service left)"
                );
            }
            Some(pending) if pending.instance != instance => {
                // An agent acts only for its own instance: it may not answer, and so
                // steal or forge the result of, a command sent to another one.
                warn!(
                    instance.id = %instance,
                    request.id = %request,
                    request.instance = %pending.instance,
                    "ignoring an agent's reply to a request addressed to another instance"
                );
            }
            Some(_) => {
                let pending = tables
                    .pending
                    .remove(&request)
                    .expect("the entry was just found");
                pending.timer.abort();
                debug!(instance.id = %instance, request.id = %request, "reply");
                tables.reply(pending.service, request, reply);
            }
        }
    }

    /// Forget the agent connection `conn`: fail its unanswered requests and, unless a
    /// newer connection already took over the instance, tell the services it is gone.
    pub(crate) fn agent_disconnected(&self, conn: ConnId, instance: Uuid) {
        let mut tables = self.lock();
        // A scan rather than an index per connection: pending requests are few (one per
        // command in flight), and disconnects are rare next to commands.
        let failed: Vec<RequestId> = tables
            .pending
            .iter()
            .filter(|(_, pending)| pending.agent_conn == conn)
            .map(|(request, _)| *request)
            .collect();
        for request in failed {
            let pending = tables.pending.remove(&request).expect("just listed");
            pending.timer.abort();
            info!(
                instance.id = %instance,
                request.id = %request,
                "failing a request: its agent disconnected before replying"
            );
            tables.reply(
                pending.service,
                request,
                unavailable(format!(
                    "the agent of instance {instance} disconnected before replying; the command is safe to retry"
                )),
            );
        }
        let cut: Vec<(StreamId, ConnId)> = tables
            .streams
            .iter()
            .filter(|(_, route)| route.agent_conn == conn)
            .map(|(stream, route)| (*stream, route.service))
            .collect();
        for (stream, service) in cut {
            tables.streams.remove(&stream);
            info!(instance.id = %instance, stream.id = %stream, "failing a stream: its agent disconnected");
            tables.fail_stream(
                service,
                stream,
                AgentErrorKind::Unavailable,
                format!("the agent of instance {instance} disconnected while the stream was open; retry"),
            );
        }
        if is_current(&tables, conn, instance) {
            tables.agents.remove(&instance);
            tables.to_all_services(&RelayToService::AgentDisconnected { instance });
            info!(instance.id = %instance, "agent disconnected");
        }
    }

    /// Register a service connection. It first learns which agents are connected, and
    /// each of those agents is asked to report its full state again so that the new
    /// service hears it too.
    ///
    /// The resync requests are paced by the new service's queue: a relay holding
    /// thousands of agents would otherwise fill it with their reports faster than any
    /// service reads, and close it — on every retry.
    pub(crate) fn service_connected(self: &Arc<Self>, conn: ConnId) -> Inbox {
        let (outbox, inbox) = outbox(conn);
        let mut tables = self.lock();
        let mut instances: Vec<Uuid> = tables.agents.keys().copied().collect();
        instances.sort_unstable();
        outbox.deliver(frame::encode(&RelayToService::Agents {
            instances: instances.clone(),
        }));
        let queue = outbox.messages.downgrade();
        let delivered = Arc::clone(&outbox.delivered);
        tables.services.insert(conn, outbox);
        drop(tables);
        let router = Arc::downgrade(self);
        tokio::spawn(async move {
            // Messages the service must have been given before the next batch is asked:
            // the previous batch's reports (or, after RESYNC_PATIENCE without progress,
            // whatever arrived — an agent may be slow or gone); and its queue must have
            // room for a whole batch.
            let mut expected = 0;
            for batch in instances.chunks(RESYNC_BATCH) {
                let mut progress = (delivered.load(Ordering::Relaxed), Instant::now());
                loop {
                    let Some(queue) = queue.upgrade() else { return };
                    let now = delivered.load(Ordering::Relaxed);
                    if now != progress.0 {
                        progress = (now, Instant::now());
                    }
                    let reported = now >= expected || progress.1.elapsed() >= RESYNC_PATIENCE;
                    if reported && queue.capacity() >= QUEUE_CAPACITY - RESYNC_BATCH {
                        expected = now + batch.len() as u64;
                        break;
                    }
                    drop(queue);
                    tokio::time::sleep(RESYNC_POLL).await;
                }
                let Some(router) = router.upgrade() else {
                    return;
                };
                let tables = router.lock();
                let resync = frame::encode(&RelayToAgent::Resync);
                for instance in batch {
                    if let Some(agent) = tables.agents.get(instance) {
                        agent.outbox.deliver(resync.clone());
                    }
                }
            }
        });
        inbox
    }

    /// Route one message from service connection `conn`.
    pub(crate) fn service_message(self: &Arc<Self>, conn: ConnId, message: ServiceToRelay) {
        match message {
            ServiceToRelay::Command {
                request,
                instance,
                action,
                command,
                token,
            } => self.command(conn, request, instance, action, command, token),
            ServiceToRelay::Revoke { instances } => self.revoke(instances),
            ServiceToRelay::Ack {
                instance,
                session,
                seq,
            } => {
                // Best effort: an ack that finds no agent is repeated by the next one.
                let tables = self.lock();
                if let Some(agent) = tables.agents.get(&instance) {
                    agent
                        .outbox
                        .deliver(frame::encode(&RelayToAgent::Ack { session, seq }));
                }
            }
            ServiceToRelay::StreamOpen {
                stream,
                instance,
                action,
                open,
                token,
            } => self.open_stream(conn, stream, instance, action, open, token),
            ServiceToRelay::Stream {
                stream,
                instance,
                message,
            } => self.service_stream(conn, stream, instance, message),
        }
    }

    /// Send a service's new stream to the agent of `instance`, or end it at once.
    fn open_stream(
        &self,
        service: ConnId,
        stream: StreamId,
        instance: Uuid,
        action: Option<Uuid>,
        open: StreamOpen,
        // The service's signature; passed on untouched, only the agent checks it.
        token: String,
    ) {
        let mut tables = self.lock();
        if tables.streams.contains_key(&stream) {
            warn!(instance.id = %instance, stream.id = %stream, "refusing a stream whose id is already open");
            tables.fail_stream(
                service,
                stream,
                AgentErrorKind::Conflict,
                format!("stream id {stream} is already open; use a fresh id for every stream"),
            );
            return;
        }
        let kind = open.name();
        let Some(agent) = tables.agents.get(&instance) else {
            debug!(instance.id = %instance, stream.id = %stream, stream.kind = kind, "no agent for the stream");
            tables.fail_stream(
                service,
                stream,
                AgentErrorKind::Unavailable,
                format!("no agent is connected for instance {instance}; retry when it reconnects"),
            );
            return;
        };
        let agent_conn = agent.outbox.conn;
        let sent = agent
            .outbox
            .deliver(frame::encode(&RelayToAgent::StreamOpen {
                stream,
                action,
                open,
                token,
            }));
        if !sent {
            tables.fail_stream(
                service,
                stream,
                AgentErrorKind::Unavailable,
                format!(
                    "the agent of instance {instance} is not keeping up and is being disconnected; retry when it reconnects"
                ),
            );
            return;
        }
        debug!(instance.id = %instance, stream.id = %stream, stream.kind = kind, "stream opened");
        tables.streams.insert(
            stream,
            StreamRoute {
                service,
                instance,
                agent_conn,
            },
        );
    }

    /// Route a service's message on an open stream to the agent serving it.
    fn service_stream(
        &self,
        conn: ConnId,
        stream: StreamId,
        instance: Uuid,
        message: StreamMessage,
    ) {
        let mut tables = self.lock();
        let Some(route) = tables.streams.get(&stream) else {
            debug!(instance.id = %instance, stream.id = %stream, "dropping a message on a stream that is not open");
            return;
        };
        if route.service != conn || route.instance != instance {
            warn!(instance.id = %instance, stream.id = %stream, "ignoring a service's message on a stream it did not open");
            return;
        }
        let agent_conn = route.agent_conn;
        if matches!(message, StreamMessage::Cancel) {
            tables.streams.remove(&stream);
            debug!(instance.id = %instance, stream.id = %stream, "stream cancelled");
        }
        if let Some(agent) = tables
            .agents
            .get(&instance)
            .filter(|agent| agent.outbox.conn == agent_conn)
        {
            agent
                .outbox
                .deliver(frame::encode(&RelayToAgent::Stream { stream, message }));
        }
    }

    /// Whether the agent of `instance` is refused (its instance was deleted).
    pub(crate) fn is_revoked(&self, instance: Uuid) -> bool {
        self.lock().revoked.contains(&instance)
    }

    /// Refuse the agents of `instances` from now on and close those connected.
    fn revoke(&self, instances: Vec<Uuid>) {
        let mut tables = self.lock();
        for instance in instances {
            if !tables.revoked.insert(instance) {
                continue;
            }
            if let Some(agent) = tables.agents.get(&instance) {
                if agent.outbox.kick(Kick::Revoked) {
                    info!(instance.id = %instance, "closing the connection of a deleted instance's agent");
                }
            }
        }
    }

    fn command(
        self: &Arc<Self>,
        service: ConnId,
        request: RequestId,
        instance: Uuid,
        action: Option<Uuid>,
        command: Command,
        // The service's signature; passed on untouched, only the agent checks it.
        token: String,
    ) {
        let mut tables = self.lock();
        if tables.pending.contains_key(&request) {
            warn!(
                instance.id = %instance,
                request.id = %request,
                "refusing a command whose request id is already in flight"
            );
            tables.reply(
                service,
                request,
                Err(AgentError::new(
                    AgentErrorKind::Conflict,
                    format!("request id {request} is already in flight; use a fresh id for every request"),
                )),
            );
            return;
        }
        let name = command.name();
        let Some(agent) = tables.agents.get(&instance) else {
            debug!(instance.id = %instance, request.id = %request, command = name, "no agent for the command");
            tables.reply(
                service,
                request,
                unavailable(format!(
                    "no agent is connected for instance {instance}; retry when it reconnects"
                )),
            );
            return;
        };
        let agent_conn = agent.outbox.conn;
        let sent = agent.outbox.deliver(frame::encode(&RelayToAgent::Command {
            request,
            action,
            command,
            token,
        }));
        if !sent {
            tables.reply(
                service,
                request,
                unavailable(format!(
                    "the agent of instance {instance} is not keeping up and is being disconnected; retry when it reconnects"
                )),
            );
            return;
        }
        debug!(instance.id = %instance, request.id = %request, command = name, "command sent to the agent");
        let timer = tokio::spawn(expire_later(
            Arc::downgrade(self),
            request,
            self.request_timeout,
        ))
        .abort_handle();
        tables.pending.insert(
            request,
            Pending {
                service,
                instance,
                agent_conn,
                timer,
            },
        );
    }

    fn expire(&self, request: RequestId) {
        let mut tables = self.lock();
        let Some(pending) = tables.pending.remove(&request) else {
            return;
        };
        let instance = pending.instance;
        let waited = seconds(self.request_timeout);
        warn!(instance.id = %instance, request.id = %request, timeout.secs = waited, "the agent did not reply in time");
        tables.reply(
            pending.service,
            request,
            unavailable(format!(
                "timed out after {waited} s waiting for the agent of instance {instance}"
            )),
        );
    }

    /// Forget service connection `conn` and its requests: replies to them have nowhere
    /// to go.
    pub(crate) fn service_disconnected(&self, conn: ConnId) {
        let mut tables = self.lock();
        tables.services.remove(&conn);
        // Its streams have nobody to read them: the agents stop serving them.
        let orphaned: Vec<(StreamId, Uuid, ConnId)> = tables
            .streams
            .iter()
            .filter(|(_, route)| route.service == conn)
            .map(|(stream, route)| (*stream, route.instance, route.agent_conn))
            .collect();
        for (stream, instance, agent_conn) in orphaned {
            tables.streams.remove(&stream);
            if let Some(agent) = tables
                .agents
                .get(&instance)
                .filter(|agent| agent.outbox.conn == agent_conn)
            {
                agent.outbox.deliver(frame::encode(&RelayToAgent::Stream {
                    stream,
                    message: StreamMessage::Cancel,
                }));
            }
        }
        tables.pending.retain(|_, pending| {
            let keep = pending.service != conn;
            if !keep {
                pending.timer.abort();
            }
            keep
        });
    }
}

async fn expire_later(router: Weak<Router>, request: RequestId, after: Duration) {
    tokio::time::sleep(after).await;
    // A relay that stopped meanwhile has nobody left to tell.
    if let Some(router) = router.upgrade() {
        router.expire(request);
    }
}

/// Whether `conn` is still the registered connection of `instance`. A replaced
/// connection's state and events are stale next to the newer connection's, so they are
/// not forwarded.
fn is_current(tables: &Tables, conn: ConnId, instance: Uuid) -> bool {
    tables
        .agents
        .get(&instance)
        .is_some_and(|agent| agent.outbox.conn == conn)
}

fn agent_connected(
    instance: Uuid,
    containers: Vec<ObservedContainer>,
    session: Option<Uuid>,
) -> RelayToService {
    RelayToService::AgentConnected {
        instance,
        containers,
        session,
    }
}

fn agent_event(
    instance: Uuid,
    seq: u64,
    event: ContainerEvent,
    session: Option<Uuid>,
) -> RelayToService {
    RelayToService::Event {
        instance,
        seq,
        event,
        session,
    }
}

fn unavailable(message: String) -> Reply {
    Err(AgentError::new(AgentErrorKind::Unavailable, message))
}

/// `120` for two minutes, `0.3` for 300 ms.
fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_outbound_queue_closes_its_connection_instead_of_growing() {
        let (outbox, mut inbox) = outbox(7);
        for _ in 0..QUEUE_CAPACITY {
            assert!(outbox.deliver(Message::text("x")));
        }
        assert!(!outbox.deliver(Message::text("one too many")));
        assert_eq!(inbox.kick.kicked().await, Kick::Overflow);
        assert_eq!(inbox.messages.len(), QUEUE_CAPACITY);
    }

    #[tokio::test]
    async fn the_first_reason_to_close_a_connection_is_the_one_kept() {
        let (outbox, mut inbox) = outbox(7);
        assert!(outbox.kick(Kick::Replaced));
        assert!(!outbox.kick(Kick::Overflow));
        assert_eq!(inbox.kick.kicked().await, Kick::Replaced);
    }

    #[test]
    fn timeouts_are_written_in_seconds_without_needless_decimals() {
        assert_eq!(seconds(Duration::from_secs(120)).to_string(), "120");
        assert_eq!(seconds(Duration::from_millis(300)).to_string(), "0.3");
    }
}
