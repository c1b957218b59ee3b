//! One task per connection: the upgrade (with its credential check), then a reader and
//! a writer pumping frames until either side hangs up.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::{AgentToRelay, ServiceToRelay};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn, Span};
use uuid::Uuid;

use crate::auth::{Peer, Rejection, Verifier};
use crate::frame;
use crate::router::{ConnId, Inbox, Kick, Router, QUEUE_CAPACITY};

/// How long a client may take to complete the upgrade, so that half-open or slow
/// clients cannot hold connection slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the relay pings each peer (agents and the service ping the relay as
/// often), so a silent peer is noticed within [`IDLE_TIMEOUT`].
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A peer that sends nothing (not even a pong to the relay's pings) for this long is
/// gone, whatever TCP believes: three ping intervals, well within the 30 s in which a
/// partitioned agent must be known disconnected (and reconnect elsewhere).
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the relay tries to say goodbye with a close frame before dropping the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<berth_tls::ServerStream>;

/// Serve one connection, past its TLS handshake, until it ends. `certificate` is what
/// the verified client certificate names; the credential must agree with it.
pub(crate) async fn serve(
    socket: berth_tls::ServerStream,
    certificate: Result<berth_tls::Identity, berth_tls::IdentityError>,
    conn: ConnId,
    verifier: Arc<Verifier>,
    router: Arc<Router>,
) {
    let mut admitted = None;
    let mut rejected = None;
    // The callback's shape, with an HTTP response as its error, is tungstenite's.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, response: Response| match verifier
        .admit(request, &certificate)
        .and_then(|peer| refuse_revoked(peer, &router))
    {
        Ok(peer) => {
            admitted = Some(peer);
            Ok(response)
        }
        Err(rejection) => {
            let refusal = rejection.response();
            rejected = Some(rejection);
            Err(refusal)
        }
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        socket,
        check,
        Some(frame::websocket_config()),
    );
    let outcome = timeout(HANDSHAKE_TIMEOUT, handshake).await;
    let ws = match outcome {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            match rejected {
                Some(rejection @ Rejection::NotFound(_)) => {
                    debug!(reason = %rejection, "refused an upgrade")
                }
                Some(rejection @ Rejection::Unauthorized(_)) => {
                    info!(reason = %rejection, "refused a connection without a valid credential")
                }
                None => debug!(%error, "WebSocket handshake failed"),
            }
            return;
        }
        Err(_) => {
            debug!("WebSocket handshake timed out");
            return;
        }
    };
    match admitted {
        Some(Peer::Agent { instance }) => {
            Span::current().record("instance.id", tracing::field::display(instance));
            agent_session(ws, conn, instance, router).await;
        }
        Some(Peer::Service { name }) => {
            Span::current().record("service.name", name.as_str());
            service_session(ws, conn, router).await;
        }
        None => {
            unreachable!("the upgrade succeeds only after the credential check admits the peer")
        }
    }
}

/// Turns away the agent of a deleted instance: its credential is still validly signed,
/// but a service said the instance is gone.
fn refuse_revoked(peer: Peer, router: &Router) -> Result<Peer, Rejection> {
    match peer {
        Peer::Agent { instance } if router.is_revoked(instance) => Err(Rejection::Unauthorized(
            format!("instance {instance} was deleted: its agent credential no longer works"),
        )),
        peer => Ok(peer),
    }
}

async fn agent_session(ws: Ws, conn: ConnId, instance: Uuid, router: Arc<Router>) {
    let inbox = router.agent_connected(conn, instance);
    info!("agent connected");
    // Deregistration is a drop guard so that it also happens when the task is aborted
    // (relay shutdown) or a panic unwinds through it.
    let registration = Registration {
        router: &router,
        conn,
        instance: Some(instance),
    };
    let (end, sink) = pump(ws, inbox, |message: AgentToRelay| {
        router.agent_message(conn, instance, message)
    })
    .await;
    // Forget the connection before saying goodbye: by the time the agent sees the close
    // frame, its pending requests have been failed and the services told.
    drop(registration);
    goodbye(sink, end).await;
}

async fn service_session(ws: Ws, conn: ConnId, router: Arc<Router>) {
    let inbox = router.service_connected(conn);
    info!("service connected");
    let registration = Registration {
        router: &router,
        conn,
        instance: None,
    };
    let (end, sink) = pump(ws, inbox, |message: ServiceToRelay| {
        router.service_message(conn, message)
    })
    .await;
    drop(registration);
    goodbye(sink, end).await;
}

/// Removes a connection from the routing tables when dropped.
struct Registration<'a> {
    router: &'a Arc<Router>,
    conn: ConnId,
    /// The agent's instance; `None` for a service.
    instance: Option<Uuid>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        match self.instance {
            Some(instance) => self.router.agent_disconnected(self.conn, instance),
            None => {
                self.router.service_disconnected(self.conn);
                info!("service disconnected");
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    Idle,
    Undecodable(serde_json::Error),
    Binary,
    ReadFailed(WsError),
    WriteFailed(WsError),
    Kicked(Kick),
}

impl End {
    /// The close frame the relay sends, when the socket is still usable and there is
    /// something to say.
    fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            End::PeerClosed | End::WriteFailed(_) => return None,
            End::ReadFailed(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                (CloseCode::Size, "message larger than 16 MiB")
            }
            End::ReadFailed(_) => return None,
            End::Idle => (CloseCode::Policy, "nothing received for 15 s"),
            End::Undecodable(_) => (
                CloseCode::Invalid,
                "a message was not JSON of the expected relay message type",
            ),
            End::Binary => (CloseCode::Unsupported, "only JSON text frames are accepted"),
            End::Kicked(Kick::Replaced) => (
                CloseCode::Normal,
                "replaced by a newer connection for the same instance",
            ),
            End::Kicked(Kick::Overflow) => (
                CloseCode::Again,
                "too many unread messages; reconnect and read faster",
            ),
            End::Kicked(Kick::Revoked) => (
                CloseCode::Policy,
                "the instance was deleted: its credential no longer works",
            ),
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })
    }

    fn log(&self) {
        match self {
            End::PeerClosed => debug!("the peer closed the connection"),
            End::ReadFailed(error @ WsError::Capacity(_)) => warn!(
                %error,
                limit.bytes = frame::MAX_MESSAGE_SIZE,
                "closing a connection that sent a message over the size limit"
            ),
            End::ReadFailed(error) | End::WriteFailed(error) => {
                debug!(%error, "the connection failed")
            }
            End::Idle => warn!(
                idle.secs = IDLE_TIMEOUT.as_secs(),
                "closing a connection that went silent"
            ),
            End::Undecodable(error) => warn!(
                %error,
                "closing a connection that sent a message the relay cannot decode"
            ),
            End::Binary => warn!("closing a connection that sent a binary frame"),
            // Logged where the decision was made.
            End::Kicked(_) => {}
        }
    }
}

/// Read and route inbound messages while writing queued outbound ones, until either
/// side ends the connection.
async fn pump<In, F>(ws: Ws, mut inbox: Inbox, mut on_message: F) -> (End, SplitSink<Ws, Message>)
where
    In: DeserializeOwned,
    F: FnMut(In),
{
    // Reading and writing run concurrently so that a peer slow to read its messages
    // does not stop the relay from hearing it (and the other way round).
    let (mut sink, mut stream) = ws.split();
    let end = tokio::select! {
        end = read(&mut stream, &mut on_message) => end,
        end = write(&mut sink, &mut inbox.messages) => end,
        kick = inbox.kick.kicked() => End::Kicked(kick),
    };
    end.log();
    (end, sink)
}

/// Close the connection with a close frame saying why, if there is still someone to
/// hear it.
async fn goodbye(mut sink: SplitSink<Ws, Message>, end: End) {
    let goodbye = async {
        match end.close_frame() {
            Some(frame) => sink.send(Message::Close(Some(frame))).await,
            // Flushes the close reply tungstenite queues when the peer closes first.
            None => sink.close().await,
        }
    };
    // The socket may be wedged (that is often why the connection ends), so bound it.
    let _ = timeout(CLOSE_TIMEOUT, goodbye).await;
}

async fn read<In, F>(stream: &mut SplitStream<Ws>, on_message: &mut F) -> End
where
    In: DeserializeOwned,
    F: FnMut(In),
{
    loop {
        let message = match timeout(IDLE_TIMEOUT, stream.next()).await {
            Err(_) => return End::Idle,
            Ok(None) => return End::PeerClosed,
            Ok(Some(Err(error))) => return End::ReadFailed(error),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => match frame::decode::<In>(&text) {
                Ok(message) => on_message(message),
                Err(error) => return End::Undecodable(error),
            },
            Message::Binary(_) => return End::Binary,
            Message::Close(_) => return End::PeerClosed,
            // tungstenite answers pings itself; any frame at all shows the peer is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

async fn write(sink: &mut SplitSink<Ws, Message>, messages: &mut mpsc::Receiver<Message>) -> End {
    let mut ping = interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let sent = tokio::select! {
            Some(message) = messages.recv() => send_batch(sink, message, messages).await,
            _ = ping.tick() => sink.send(Message::Ping(Default::default())).await,
        };
        if let Err(error) = sent {
            return End::WriteFailed(error);
        }
    }
}

/// Write `first` and whatever else is already queued, then flush once: a burst of
/// events costs one flush rather than one per message.
async fn send_batch(
    sink: &mut SplitSink<Ws, Message>,
    first: Message,
    messages: &mut mpsc::Receiver<Message>,
) -> Result<(), WsError> {
    sink.feed(first).await?;
    // Bounded so that a peer fed as fast as it reads still gets flushes.
    for _ in 0..QUEUE_CAPACITY {
        let Ok(message) = messages.try_recv() else {
            break;
        };
        sink.feed(message).await?;
    }
    sink.flush().await
}
