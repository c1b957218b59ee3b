//! Envelopes on the two kinds of relay connection.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::command::{Command, Reply};
use crate::container::{ContainerEvent, ObservedContainer};
use crate::stream::{StreamId, StreamMessage, StreamOpen};

/// Correlates a command with its reply. Chosen by the service, unique per request.
pub type RequestId = Uuid;

/// Service → relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServiceToRelay {
    /// Deliver a command to the agent of `instance`.
    Command {
        /// Correlation id of this request.
        request: RequestId,
        /// The instance whose agent runs the command.
        instance: Uuid,
        /// The Berth action this command belongs to, for idempotency and audit.
        action: Option<Uuid>,
        /// What to run.
        command: Command,
        /// The service's signature over this command for this instance
        /// ([`crate::auth::CommandClaims`]); the relay passes it on untouched.
        token: String,
    },
    /// Open a stream to the agent of `instance`. The relay remembers which service
    /// connection opened it (in memory) to route the agent's messages back.
    StreamOpen {
        /// The stream's id.
        stream: StreamId,
        /// The instance whose agent serves it.
        instance: Uuid,
        /// The Berth action the stream belongs to, if any.
        action: Option<Uuid>,
        /// What to run.
        open: StreamOpen,
        /// The service's signature over this stream open for this instance
        /// ([`crate::auth::CommandClaims`]); the relay passes it on untouched.
        token: String,
    },
    /// A message on an open stream, for the agent of `instance`.
    Stream {
        /// The stream.
        stream: StreamId,
        /// The instance whose agent serves it.
        instance: Uuid,
        /// The message.
        message: StreamMessage,
    },
    /// The agents of these instances may no longer connect: their instances were
    /// deleted or released. Sent with the full list on every service connection and
    /// again whenever an instance goes; the relay closes their connections and refuses
    /// new ones. Relays keep the list in memory only.
    Revoke {
        /// Instances whose credentials no longer work.
        instances: Vec<Uuid>,
    },
    /// The service recorded the events of `instance`'s agent up to and including
    /// `seq` of `session`; the agent may forget them. Cumulative, like a TCP ack.
    Ack {
        /// The agent's instance.
        instance: Uuid,
        /// The agent's session (one per agent process).
        session: Uuid,
        /// The highest event sequence number recorded.
        seq: u64,
    },
}

/// Relay → service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayToService {
    /// The agent's reply to a command (or the relay's own `Unavailable` error when the
    /// agent is not connected or went away before replying).
    Reply {
        /// The request this answers.
        request: RequestId,
        /// The result.
        reply: Reply,
    },
    /// An agent connected (or reconnected) and reported every container it manages.
    AgentConnected {
        /// The agent's instance.
        instance: Uuid,
        /// The agent's full state.
        containers: Vec<ObservedContainer>,
        /// The agent's session; `None` from agents older than sessions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<Uuid>,
    },
    /// An agent's connection closed.
    AgentDisconnected {
        /// The agent's instance.
        instance: Uuid,
    },
    /// Something happened on an agent's instance.
    Event {
        /// The agent's instance.
        instance: Uuid,
        /// Sequence number within the agent's session, starting at 1 and increasing
        /// across reconnects; a re-sent event keeps its number.
        seq: u64,
        /// What happened.
        event: ContainerEvent,
        /// The agent's session; `None` from agents older than sessions (then `seq`
        /// counts per connection and is not used to drop duplicates).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<Uuid>,
    },
    /// A message on a stream this service connection opened. When the agent goes away
    /// the relay ends its streams itself with an `Unavailable` failure.
    Stream {
        /// The stream.
        stream: StreamId,
        /// The message.
        message: StreamMessage,
    },
    /// The agents connected to this relay right now, sent once when a service connects.
    Agents {
        /// Instances with a live agent connection.
        instances: Vec<Uuid>,
    },
}

/// Relay → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayToAgent {
    /// Run a command and reply with the same request id.
    Command {
        /// Correlation id.
        request: RequestId,
        /// The Berth action this command belongs to.
        action: Option<Uuid>,
        /// What to run.
        command: Command,
        /// The service's signature over the command, as the service sent it; the
        /// agent runs nothing it cannot verify. Missing on the wire reads as empty
        /// (and is refused with a reason, not as an unreadable frame).
        #[serde(default)]
        token: String,
    },
    /// Open a stream; the agent answers with stream messages, ending with `End`.
    StreamOpen {
        /// The stream's id.
        stream: StreamId,
        /// The Berth action it belongs to.
        action: Option<Uuid>,
        /// What to run.
        open: StreamOpen,
        /// The service's signature over the stream open, as the service sent it.
        #[serde(default)]
        token: String,
    },
    /// A message on an open stream.
    Stream {
        /// The stream.
        stream: StreamId,
        /// The message.
        message: StreamMessage,
    },
    /// Ask the agent to send a fresh [`AgentToRelay::State`].
    Resync,
    /// The service recorded this session's events up to and including `seq`.
    Ack {
        /// The session the events belong to; an ack for another session is ignored.
        session: Uuid,
        /// The highest sequence number recorded.
        seq: u64,
    },
}

/// Agent → relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentToRelay {
    /// The agent's full state: sent first on every connection, and on [`RelayToAgent::Resync`].
    State {
        /// Every container the agent manages.
        containers: Vec<ObservedContainer>,
        /// The agent's session: a fresh id each time the agent process starts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<Uuid>,
    },
    /// The reply to a command.
    Reply {
        /// The request this answers.
        request: RequestId,
        /// The result.
        reply: Reply,
    },
    /// A message on a stream the service opened.
    Stream {
        /// The stream.
        stream: StreamId,
        /// The message.
        message: StreamMessage,
    },
    /// Something happened.
    Event {
        /// Sequence number within the session, starting at 1 and increasing across
        /// reconnects; unacknowledged events are sent again after the next `State`.
        seq: u64,
        /// What happened.
        event: ContainerEvent,
        /// The agent's session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<Uuid>,
    },
}
