//! Framing: every relay message is one JSON text WebSocket frame of a proto enum.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Largest message (and frame) the relay reads. Replies carrying logs are the big ones.
pub(crate) const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// WebSocket limits for every connection.
///
/// Buffers are small because the relay is meant to hold tens of thousands of mostly
/// idle connections: tungstenite's default 128 KiB read buffer is allocated eagerly per
/// connection. The write-buffer cap must still fit one whole outbound message, which can
/// be a little larger than the biggest inbound one (the relay wraps it in an envelope).
pub(crate) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 << 10)
        .write_buffer_size(8 << 10)
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
