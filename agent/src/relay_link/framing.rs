//! Messages to and from the relay as JSON text frames.

use berth_proto::{AgentError, AgentErrorKind, AgentToRelay, RelayToAgent, RequestId};

/// The largest frame the agent sends. tungstenite's default maximum frame size on
/// the receiving side is 16 MiB; a larger frame would make the relay drop the whole
/// connection, so an oversized reply is replaced by an error reply instead.
pub(crate) const MAX_FRAME_BYTES: usize = 15 * 1024 * 1024;

/// A frame from the relay, as far as the agent understood it.
#[derive(Debug, PartialEq)]
pub(crate) enum Inbound {
    /// A message of the protocol.
    Message(RelayToAgent),
    /// Not a message this agent understands (for example a command added by a newer
    /// service). When it carries a request id, the sender should get an error reply
    /// rather than a timeout.
    Unknown {
        /// The `request` field, when there is one.
        request: Option<RequestId>,
        /// Why it could not be understood.
        error: String,
    },
}

/// Decode one text (or binary) frame's payload.
pub(crate) fn decode(payload: &[u8]) -> Inbound {
    match serde_json::from_slice::<RelayToAgent>(payload) {
        Ok(message) => Inbound::Message(message),
        Err(err) => {
            let request = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|value| value.get("request")?.as_str()?.parse().ok());
            Inbound::Unknown {
                request,
                error: err.to_string(),
            }
        }
    }
}

/// The reply to a command the agent could not understand.
pub(crate) fn not_understood(request: RequestId, error: &str) -> AgentToRelay {
    AgentToRelay::Reply {
        request,
        reply: Err(AgentError::new(
            AgentErrorKind::Runtime,
            format!(
                "the agent could not understand this command ({error}); it may be older than \
                 the service, so upgrade the agent on this instance"
            ),
        )),
    }
}

/// Encode one message as the text of a frame.
///
/// A reply too large for one frame becomes an error reply naming the problem, so the
/// service gets an answer and the connection survives.
pub(crate) fn encode(message: &AgentToRelay) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string(message)?;
    match message {
        AgentToRelay::Reply { request, .. } if text.len() > MAX_FRAME_BYTES => {
            serde_json::to_string(&AgentToRelay::Reply {
                request: *request,
                reply: Err(AgentError::new(
                    AgentErrorKind::Runtime,
                    format!(
                        "the reply is {} bytes, more than the {MAX_FRAME_BYTES} bytes one \
                         message may carry; ask for less (for logs, use tail or since)",
                        text.len()
                    ),
                )),
            })
        }
        _ => Ok(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::{Command, Outcome};
    use uuid::Uuid;

    #[test]
    fn a_command_frame_decodes_to_the_command() {
        let request = Uuid::new_v4();
        let container = Uuid::new_v4();
        let text = format!(
            r#"{{"type":"command","request":"{request}","action":null,
                "command":{{"op":"start","container":"{container}"}},"token":"t"}}"#
        );
        assert_eq!(
            decode(text.as_bytes()),
            Inbound::Message(RelayToAgent::Command {
                request,
                action: None,
                command: Command::Start { container },
                token: "t".to_owned(),
            })
        );
    }

    #[test]
    fn resync_decodes() {
        assert_eq!(
            decode(br#"{"type":"resync"}"#),
            Inbound::Message(RelayToAgent::Resync)
        );
    }

    #[test]
    fn an_unknown_command_keeps_its_request_id_for_an_error_reply() {
        let request = Uuid::new_v4();
        let text = format!(
            r#"{{"type":"command","request":"{request}","action":null,
                "command":{{"op":"teleport","container":"x"}}}}"#
        );
        match decode(text.as_bytes()) {
            Inbound::Unknown { request: got, .. } => assert_eq!(got, Some(request)),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn garbage_is_unknown_without_a_request_id() {
        assert!(matches!(
            decode(b"not json"),
            Inbound::Unknown { request: None, .. }
        ));
    }

    #[test]
    fn messages_round_trip_through_the_proto_types() {
        let message = AgentToRelay::Reply {
            request: Uuid::new_v4(),
            reply: Ok(Outcome::Logs("hello\n".to_owned())),
        };
        let text = encode(&message).unwrap();
        assert_eq!(
            serde_json::from_str::<AgentToRelay>(&text).unwrap(),
            message
        );
    }

    #[test]
    fn an_oversized_reply_becomes_an_error_reply_that_fits() {
        let request = Uuid::new_v4();
        let message = AgentToRelay::Reply {
            request,
            reply: Ok(Outcome::Logs("x".repeat(MAX_FRAME_BYTES + 1))),
        };
        let text = encode(&message).unwrap();
        assert!(text.len() < 1024);
        match serde_json::from_str::<AgentToRelay>(&text).unwrap() {
            AgentToRelay::Reply {
                request: got,
                reply: Err(error),
            } => {
                assert_eq!(got, request);
                assert_eq!(error.kind, AgentErrorKind::Runtime);
            }
            other => panic!("encoded {other:?}"),
        }
    }
}
