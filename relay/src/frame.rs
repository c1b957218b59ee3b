//! Framing: every relay message is one JSON text WebSocket frame of a proto enum.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Largest message (and frame) the relay reads. Replies carrying logs are the big ones.
pub(crate) const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Bytes read from the socket at a time, and kept (zero-filled, so resident) by every
/// connection while it lives. Larger messages are read in several calls.
const READ_BUFFER: usize = 2 << 10;

/// WebSocket limits for every connection.
///
/// Buffers are small because the relay is meant to hold tens of thousands of mostly
/// idle connections: tungstenite's default 128 KiB read buffer is allocated eagerly per
/// connection. The write-buffer cap must still fit one whole outbound message, which can
/// be a little larger than the biggest inbound one (the relay wraps it in an envelope).
pub(crate) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(READ_BUFFER)
        .max_write_buffer_size(2 * MAX_MESSAGE_SIZE + (64 << 10))
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE))
}

/// One frame carrying `message`.
pub(crate) fn encode<T: Serialize>(message: &T) -> Message {
    // The proto types are plain structs and enums with string map keys, for which
    // serde_json cannot fail.
    let json = serde_json::to_string(message).expect("proto messages always serialize to JSON");
    Message::text(json)
}

/// The message in a text frame.
pub(crate) fn decode<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    use super::*;

    /// A relay-side socket with the relay's limits and a peer without any, joined by an
    /// in-memory pipe.
    async fn pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (relay_end, peer_end) = tokio::io::duplex(64 << 10);
        let relay =
            WebSocketStream::from_raw_socket(relay_end, Role::Server, Some(websocket_config()))
                .await;
        let unlimited = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let peer = WebSocketStream::from_raw_socket(peer_end, Role::Client, Some(unlimited)).await;
        (relay, peer)
    }

    #[tokio::test]
    async fn a_message_over_the_cap_is_refused_without_being_buffered_whole() {
        let (mut relay, mut peer) = pair().await;
        let sender = tokio::spawn(async move {
            // The relay stops reading at the frame header; the rest may never be taken.
            let _ = peer
                .send(Message::text("x".repeat(MAX_MESSAGE_SIZE + 1)))
                .await;
            peer
        });
        match relay.next().await {
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                assert_eq!(max_size, MAX_MESSAGE_SIZE);
                assert!(size > MAX_MESSAGE_SIZE, "{size}");
            }
            other => panic!("expected MessageTooLong, got {other:?}"),
        }
        sender.abort();
    }

    #[tokio::test]
    async fn a_message_split_into_frames_is_capped_as_a_whole() {
        let (mut relay, mut peer) = pair().await;
        // Many frames each under the cap, together over it: the cap is on the message.
        let sender = tokio::spawn(async move {
            let chunk = vec![b'x'; 4 << 20];
            use tokio_tungstenite::tungstenite::protocol::frame::{
                coding::{Data, OpCode},
                Frame,
            };
            let mut first = true;
            for _ in 0..5 {
                let opcode = if first {
                    OpCode::Data(Data::Text)
                } else {
                    OpCode::Data(Data::Continue)
                };
                first = false;
                let frame = Frame::message(chunk.clone(), opcode, false);
                if peer.send(Message::Frame(frame)).await.is_err() {
                    break;
                }
            }
            peer
        });
        match relay.next().await {
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { max_size, .. }))) => {
                assert_eq!(max_size, MAX_MESSAGE_SIZE);
            }
            other => panic!("expected MessageTooLong, got {other:?}"),
        }
        sender.abort();
    }

    #[tokio::test]
    async fn a_message_under_the_cap_gets_through() {
        let (mut relay, mut peer) = pair().await;
        let text = "y".repeat(1 << 20);
        let sent = text.clone();
        let sender = tokio::spawn(async move {
            peer.send(Message::text(sent)).await.expect("send");
            peer
        });
        match relay.next().await {
            Some(Ok(Message::Text(got))) => assert_eq!(got.as_str(), text),
            other => panic!("expected the text message, got {other:?}"),
        }
        let _peer = sender.await.expect("sender");
    }
}
