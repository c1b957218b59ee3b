//! The service's side of the relay: one WebSocket connection to a relay, over which
//! commands go out to agents and replies, state reports and events come back.
//!
//! Replies are matched to callers by request id. Everything else the relay sends
//! (agent connected / disconnected, events) goes, in order, to one channel that the
//! reconciler drains.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::{
    AgentError, AgentErrorKind, Command, RelayToService, Reply, RequestId, ServiceToRelay,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
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

/// A handle for sending commands to agents. Cheap to clone.
#[derive(Clone)]
pub struct Agents {
    outbound: mpsc::Sender<ServiceToRelay>,
    pending: Pending,
    revoked: Revoked,
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
        tokio::spawn(connection_loop(
            relay_url,
            credential,
            out_rx,
            note_tx,
            pending.clone(),
            revoked.clone(),
        ));
        (
            Agents {
                outbound: out_tx,
                pending,
                revoked,
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
