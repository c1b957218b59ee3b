//! Byte streams between the service and an agent, multiplexed over the agent's relay
//! connection: attach, exec, logs that follow, image pulls with progress.
//!
//! A stream is opened by the service ([`StreamOpen`]) and identified by a [`StreamId`]
//! the service chooses. Bytes flow both ways as [`StreamData`]; each direction is
//! flow-controlled by credit: a sender may have at most the bytes the receiver has
//! granted in flight ([`StreamMessage::Credit`]), starting from [`INITIAL_CREDIT`], so
//! a stalled reader stops the writer instead of growing a buffer anywhere on the path.
//! The agent ends a stream with [`StreamMessage::End`]; the service cancels one with
//! [`StreamMessage::Cancel`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identifies one stream; chosen by the service, unique across its streams.
pub type StreamId = Uuid;

/// Bytes each side may send before the first credit arrives, and the size of the
/// receive window each side keeps.
pub const INITIAL_CREDIT: u32 = 256 * 1024;

/// Largest payload of one [`StreamMessage::Data`]; bigger writes are split.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;

/// What a stream runs on the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamOpen {
    /// Attach to the container's main process (Docker attach).
    Attach {
        /// Berth uuid.
        container: Uuid,
        /// Forward the client's bytes to the process's stdin.
        stdin: bool,
        /// Receive stdout.
        stdout: bool,
        /// Receive stderr.
        stderr: bool,
        /// Replay the logs so far before live output.
        logs: bool,
    },
    /// Run a command in the container (Docker exec create + start), attached.
    Exec {
        /// Berth uuid.
        container: Uuid,
        /// The command and its options.
        exec: ExecSpec,
    },
    /// The container's logs, following new output until the container stops (or not).
    Logs {
        /// Berth uuid.
        container: Uuid,
        /// Include stdout.
        stdout: bool,
        /// Include stderr.
        stderr: bool,
        /// Prefix each line with its RFC 3339 timestamp (nanoseconds).
        timestamps: bool,
        /// Only the last N lines.
        tail: Option<u64>,
        /// Only lines since this Unix time (seconds).
        since: Option<i64>,
        /// Only lines before this Unix time (seconds).
        until: Option<i64>,
        /// Keep the stream open and send new output as it comes.
        follow: bool,
    },
    /// The container's resource usage: the engine's stats documents (Docker's stats
    /// JSON, unchanged), one per line on [`Channel::Stdout`], about one a second.
    Stats {
        /// Berth uuid.
        container: Uuid,
        /// Keep sending readings until the container stops or the stream is
        /// cancelled; `false` sends one reading (with CPU figures over a short
        /// interval, like `docker stats --no-stream`) and ends.
        stream: bool,
    },
    /// Pull an image, sending the engine's progress messages as JSON lines on
    /// [`Channel::Progress`].
    Pull {
        /// `repo[:tag]` or `repo@digest`, fully qualified as the Docker CLI sends it.
        image: String,
        /// Registry credentials, when the registry needs them.
        auth: Option<RegistryAuth>,
    },
}

impl StreamOpen {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            StreamOpen::Attach { .. } => "attach",
            StreamOpen::Exec { .. } => "exec",
            StreamOpen::Logs { .. } => "logs",
            StreamOpen::Pull { .. } => "pull",
            StreamOpen::Stats { .. } => "stats",
        }
    }
}

/// A command to run in a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// `KEY=value` entries added to the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; empty for the container's.
    #[serde(default)]
    pub workdir: Option<String>,
    /// User to run as; empty for the container's.
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a TTY.
    pub tty: bool,
    /// Forward stdin.
    pub stdin: bool,
    /// Receive stdout.
    pub stdout: bool,
    /// Receive stderr.
    pub stderr: bool,
    /// Initial TTY size `(height, width)`.
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}

/// Credentials for a private registry (Docker's `AuthConfig`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password. Never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// Registry host (`127.0.0.1:5000`).
    #[serde(default)]
    pub server_address: Option<String>,
    /// An identity token instead of a password.
    #[serde(default)]
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

/// Which output a chunk of bytes belongs to. The numbers are Docker's stream ids in a
/// multiplexed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// To the process (service → agent).
    Stdin,
    /// The process's stdout; with a TTY, all of its output.
    Stdout,
    /// The process's stderr.
    Stderr,
    /// Pull progress: one JSON object per line, as the engine writes them.
    Progress,
}

/// Bytes on one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamData {
    /// Which output (or stdin).
    pub channel: Channel,
    /// The bytes, base64 (standard alphabet, padded) on the wire.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum StreamEnd {
    /// The process exited (exec, attach) with this code.
    Exited {
        /// Exit code; `None` when the engine did not say.
        code: Option<i64>,
    },
    /// The stream finished normally (logs reached the end, pull completed).
    Finished,
    /// It failed; the error says why (e.g. `NotFound` for an unknown container).
    Failed {
        /// What went wrong.
        error: crate::AgentError,
    },
}

/// One message on a stream, in either direction unless noted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StreamMessage {
    /// Bytes; counts against the sender's credit.
    Data(StreamData),
    /// The receiver consumed `bytes`: the sender may send that many more.
    Credit {
        /// Bytes granted.
        bytes: u32,
    },
    /// service → agent: no more stdin (the client half-closed).
    CloseStdin,
    /// service → agent: the TTY changed size.
    Resize {
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
    /// service → agent: stop the stream and free what it holds (the client went away).
    Cancel,
    /// agent → service: the stream is over; nothing follows.
    End(StreamEnd),
}

pub(crate) mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_travels_as_base64_and_comes_back_byte_for_byte() {
        let m = StreamMessage::Data(StreamData {
            channel: Channel::Stdout,
            data: vec![0, 255, b'\n', 27],
        });
        let wire = serde_json::to_string(&m).unwrap();
        assert!(wire.contains("\"AP8KGw==\""), "{wire}");
        assert_eq!(serde_json::from_str::<StreamMessage>(&wire).unwrap(), m);
    }

    #[test]
    fn registry_passwords_never_reach_debug_output() {
        let a = RegistryAuth {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            server_address: None,
            identity_token: Some("tok".into()),
        };
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok\""),
            "{shown}"
        );
    }
}
