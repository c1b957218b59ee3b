//! Commands the service sends to an agent, and the agent's replies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::container::{ContainerSpec, ObservedContainer};
use crate::stream::RegistryAuth;

/// A runtime operation on the agent's instance. Every command is idempotent: running
/// it twice leaves the same result as running it once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Make the container (pulling its image if it is not present). If a container with
    /// the spec's uuid already exists, it is returned as it is.
    Create {
        /// What to make.
        spec: Box<ContainerSpec>,
    },
    /// Start the container (no-op when running).
    Start {
        /// Berth uuid.
        container: Uuid,
    },
    /// Stop: SIGTERM, then SIGKILL after the timeout (no-op when not running).
    Stop {
        /// Berth uuid.
        container: Uuid,
        /// Seconds to wait before SIGKILL; `None` is the engine's default.
        timeout_secs: Option<u32>,
    },
    /// Stop then start.
    Restart {
        /// Berth uuid.
        container: Uuid,
        /// Seconds to wait before SIGKILL.
        timeout_secs: Option<u32>,
    },
    /// Send a signal.
    Kill {
        /// Berth uuid.
        container: Uuid,
        /// Signal name or number, as Docker takes it (`SIGKILL`, `KILL`, `9`).
        signal: String,
    },
    /// Freeze all processes.
    Pause {
        /// Berth uuid.
        container: Uuid,
    },
    /// Thaw.
    Unpause {
        /// Berth uuid.
        container: Uuid,
    },
    /// Remove the container (no-op when it does not exist).
    Remove {
        /// Berth uuid.
        container: Uuid,
        /// Kill it first if it is running.
        force: bool,
    },
    /// Read the container's logs.
    Logs {
        /// Berth uuid.
        container: Uuid,
        /// Include stdout.
        stdout: bool,
        /// Include stderr.
        stderr: bool,
        /// Prefix each line with its RFC 3339 timestamp.
        timestamps: bool,
        /// Only the last N lines.
        tail: Option<u64>,
        /// Only lines since this Unix time (seconds).
        since: Option<i64>,
    },
    /// Change resource limits of a live container.
    Update {
        /// Berth uuid.
        container: Uuid,
        /// New CPU limit in cores.
        cpu: Option<f64>,
        /// New memory limit in MiB.
        memory_mib: Option<i64>,
        /// New restart policy: Docker's name (`no`, `always`, `on-failure`,
        /// `unless-stopped`) and the retries of `on-failure`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restart: Option<(String, i64)>,
    },
    /// Observe one container now.
    Inspect {
        /// Berth uuid.
        container: Uuid,
    },
    /// List the processes running in the container (Docker top).
    Top {
        /// Berth uuid.
        container: Uuid,
        /// `ps` arguments; `None` is the engine's default (`-ef`).
        ps_args: Option<String>,
    },
    /// Change the size of the container's TTY.
    Resize {
        /// Berth uuid.
        container: Uuid,
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
    /// Make an image from the container's filesystem (Docker commit); replies
    /// [`Outcome::Committed`]. Committing again makes the same tag point at a new image.
    Commit {
        /// Berth uuid.
        container: Uuid,
        /// Repository of the new image.
        repository: String,
        /// Tag; `None` is `latest`.
        tag: Option<String>,
    },
    /// A tar archive of a path in the container (Docker's archive GET); replies
    /// [`Outcome::Archive`].
    GetArchive {
        /// Berth uuid.
        container: Uuid,
        /// Absolute path in the container.
        path: String,
    },
    /// Extract a tar archive into a directory of the container (Docker's archive PUT).
    PutArchive {
        /// Berth uuid.
        container: Uuid,
        /// Absolute path of an existing directory in the container.
        path: String,
        /// The tar archive, base64 on the wire.
        #[serde(with = "crate::stream::base64_bytes")]
        data: Vec<u8>,
    },
    /// Every image on the instance.
    Images,
    /// One image, by reference (`repo:tag`, `repo@digest` or id).
    ImageInspect {
        /// The image reference.
        reference: String,
    },
    /// Remove an image. An image that does not exist is
    /// [`AgentErrorKind::ImageNotFound`], as Docker reports it.
    ImageRemove {
        /// The image reference.
        reference: String,
        /// Remove it even if stopped containers use it or it has several tags.
        force: bool,
    },
    /// Check registry credentials with the instance's engine (Docker login).
    RegistryLogin {
        /// The credentials to check. Never logged.
        auth: RegistryAuth,
    },
    /// Make the pod's desired state this spec: stored on the agent's disk first, then
    /// reconciled continuously. A spec with a higher generation is an update (only
    /// containers whose spec hash changed are replaced; a failing update rolls back).
    /// The same spec again is a no-op. Replies with the status at once.
    ApplyPod {
        /// The desired pod.
        spec: Box<crate::pod::PodSpec>,
    },
    /// Stop and remove the pod's containers and volumes, and forget its spec
    /// (no-op when unknown).
    DeletePod {
        /// The pod's uuid.
        pod: Uuid,
    },
    /// The pod's status and the engine's inspect data of each of its containers.
    InspectPod {
        /// The pod's uuid.
        pod: Uuid,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "create",
            Command::Start { .. } => "start",
            Command::Stop { .. } => "stop",
            Command::Restart { .. } => "restart",
            Command::Kill { .. } => "kill",
            Command::Pause { .. } => "pause",
            Command::Unpause { .. } => "unpause",
            Command::Remove { .. } => "remove",
            Command::Logs { .. } => "logs",
            Command::Update { .. } => "update",
            Command::Inspect { .. } => "inspect",
            Command::Top { .. } => "top",
            Command::Resize { .. } => "resize",
            Command::Commit { .. } => "commit",
            Command::GetArchive { .. } => "get_archive",
            Command::PutArchive { .. } => "put_archive",
            Command::Images => "images",
            Command::ImageInspect { .. } => "image_inspect",
            Command::ImageRemove { .. } => "image_remove",
            Command::RegistryLogin { .. } => "registry_login",
            Command::ApplyPod { .. } => "apply_pod",
            Command::DeletePod { .. } => "delete_pod",
            Command::InspectPod { .. } => "inspect_pod",
        }
    }
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Outcome {
    /// The command took effect; nothing to return.
    Done,
    /// The container as observed after the command.
    Container(ObservedContainer),
    /// Log text (stdout and stderr interleaved as the engine returned them).
    Logs(String),
    /// The container's processes, as `ps` printed them.
    Top {
        /// Column titles (`UID`, `PID`, …).
        titles: Vec<String>,
        /// One row per process, a value per title.
        processes: Vec<Vec<String>>,
    },
    /// The image a commit made: its content id (`sha256:…`).
    Committed {
        /// Content id.
        image_id: String,
    },
    /// A tar archive of a path and what the path is.
    Archive {
        /// The tar archive, base64 on the wire.
        #[serde(with = "crate::stream::base64_bytes")]
        data: Vec<u8>,
        /// Docker's path stat: `name`, `size`, `mode`, `mtime`, `linkTarget`.
        stat: serde_json::Value,
    },
    /// The images on the instance.
    Images(Vec<ImageInfo>),
    /// One image.
    Image(ImageInfo),
    /// A pod's status.
    Pod(crate::pod::PodStatus),
    /// A pod's status and the engine's inspect data per container (by name in the pod;
    /// the infra container is `POD`).
    PodInspect {
        /// The status.
        status: crate::pod::PodStatus,
        /// Container name → the engine's inspect JSON, as the engine returned it.
        containers: std::collections::BTreeMap<String, serde_json::Value>,
    },
}

/// An image as the agent's engine describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Content id, `sha256:…`.
    pub id: String,
    /// `repo:tag` names.
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// `repo@sha256:…` names.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Size in bytes.
    pub size: i64,
    /// The image's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// CPU architecture (`amd64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// The engine's image `Config` object as it is, for inspect; `null` in lists.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// The reply to one command.
pub type Reply = Result<Outcome, AgentError>;

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    /// The class of failure, which decides how the service reacts.
    pub kind: AgentErrorKind,
    /// A sentence a person can act on.
    pub message: String,
}

impl AgentError {
    /// An error of this kind with this message.
    pub fn new(kind: AgentErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AgentError {}

/// Classes of command failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentErrorKind {
    /// No such container on the instance.
    NotFound,
    /// The image does not exist locally and could not be pulled.
    ImageNotFound,
    /// The engine refused because of the container's state or a resource in use
    /// (for example a host port already taken).
    Conflict,
    /// The engine failed for another reason.
    Runtime,
    /// The agent could not be reached (not connected, connection lost, timed out).
    /// Safe to retry: commands are idempotent.
    Unavailable,
}
