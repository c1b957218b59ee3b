//! Pods: the desired state the service gives an agent, and the status the agent reports
//! as a kubelet would.
//!
//! The service parses every accepted format (Zun capsule templates, the Google container
//! manifest v1beta1/v1beta2, Kubernetes v1 Pods) into one [`PodSpec`]. The agent keeps the
//! spec on its own disk and reconciles towards it on its own — also while the service
//! and relay are away, and across its own restarts — and reports [`PodStatus`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::container::PortBinding;

/// Docker label on every container of a pod (infra and app) with the pod's uuid.
pub const LABEL_POD: &str = "berth.pod";
/// Docker label with the container's name within its pod (`POD` for the infra container).
pub const LABEL_POD_CONTAINER: &str = "berth.pod.container";
/// Docker label with the hash of the container's spec ([`PodContainer::spec_hash`]).
pub const LABEL_POD_SPEC_HASH: &str = "berth.pod.spec-hash";

/// Everything an agent needs to run one pod. Already validated by the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodSpec {
    /// Berth's uuid of the pod (the capsule).
    pub uuid: Uuid,
    /// The pod's name (DNS label).
    pub name: String,
    /// Increases with every update the service accepts; statuses say which they reflect.
    pub generation: i64,
    /// `Always` (default), `OnFailure` or `Never`; applies to app and init containers.
    pub restart_policy: PodRestartPolicy,
    /// Run in order, each to a successful exit, before any app container starts.
    #[serde(default)]
    pub init_containers: Vec<PodContainer>,
    /// The app containers (at least one).
    pub containers: Vec<PodContainer>,
    /// Volumes the containers may mount.
    #[serde(default)]
    pub volumes: Vec<PodVolume>,
    /// Ports published on the instance, held by the pod's infra container (every app
    /// container shares its network namespace).
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// Labels for every container of the pod (the agent adds its own `berth.*`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How an update is judged: a container that crash-loops, or whose probes fail,
    /// within this many seconds after an update makes the agent roll back to the
    /// previous spec. 0 disables rollback.
    #[serde(default = "default_rollback_window")]
    pub rollback_window_secs: u32,
}

fn default_rollback_window() -> u32 {
    60
}

/// Kubernetes' restart policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PodRestartPolicy {
    /// Restart every container whenever it exits.
    #[default]
    Always,
    /// Restart containers that exit with a non-zero code.
    OnFailure,
    /// Never restart.
    Never,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodContainer {
    /// Unique within the pod (DNS label).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Entrypoint override (Kubernetes `command`); `None` keeps the image's.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Arguments (Kubernetes `args`); `None` keeps the image's `CMD`.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// CPU limit in cores (0: none).
    #[serde(default)]
    pub cpu: f64,
    /// Memory limit in MiB (0: none).
    #[serde(default)]
    pub memory_mib: i64,
    /// Volume mounts.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// Keep stdin open.
    #[serde(default)]
    pub stdin: bool,
    /// Allocate a TTY.
    #[serde(default)]
    pub tty: bool,
    /// Restart the container when it fails.
    #[serde(default)]
    pub liveness_probe: Option<Probe>,
    /// Mark the container (and pod) ready only while it succeeds.
    #[serde(default)]
    pub readiness_probe: Option<Probe>,
    /// Holds back the other probes until it first succeeds; failing it restarts.
    #[serde(default)]
    pub startup_probe: Option<Probe>,
}

impl PodContainer {
    /// A stable hash of everything that requires a new container when it changes
    /// (kubelet's container hash): lowercase hex of SHA-256 over the canonical JSON.
    /// Serialisation of this struct is canonical: fields in declaration order, maps
    /// sorted (`BTreeMap`).
    pub fn spec_hash(&self) -> String {
        use sha2::Digest as _;
        let json = serde_json::to_vec(self).expect("pod containers serialise");
        hex::encode(&sha2::Sha256::digest(&json)[..8])
    }
}

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// A volume of the pod.
    pub name: String,
    /// Absolute path inside the container.
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A pod volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodVolume {
    /// Unique within the pod.
    pub name: String,
    /// What it holds.
    pub source: VolumeSource,
}

/// Where a volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VolumeSource {
    /// An empty directory that lives as long as the pod, shared by its containers.
    EmptyDir,
    /// Files shipped with the spec (Kubernetes configMap-like): relative path → content.
    Files {
        /// Relative path (no `..`) → UTF-8 content.
        files: BTreeMap<String, String>,
    },
}

/// A health check, with kubelet's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// What to check.
    pub handler: ProbeHandler,
    /// Seconds after the container started before the first check [0].
    #[serde(default)]
    pub initial_delay_secs: u32,
    /// Seconds between checks [10].
    #[serde(default = "ten")]
    pub period_secs: u32,
    /// Seconds a check may take [1].
    #[serde(default = "one")]
    pub timeout_secs: u32,
    /// Consecutive successes to count as passing [1].
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Consecutive failures to count as failing [3].
    #[serde(default = "three")]
    pub failure_threshold: u32,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn ten() -> u32 {
    10
}

/// How a probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProbeHandler {
    /// Run a command in the container; success is exit code 0.
    Exec {
        /// The command.
        command: Vec<String>,
    },
    /// HTTP GET to the pod; success is 200 ≤ status < 400.
    HttpGet {
        /// Path, e.g. `/healthz`.
        path: String,
        /// Port in the pod.
        port: u16,
        /// `HTTP` (only; `HTTPS` is refused by the service).
        #[serde(default)]
        host: Option<String>,
    },
    /// Open a TCP connection to the pod; success is a connection.
    TcpSocket {
        /// Port in the pod.
        port: u16,
    },
}

/// Kubernetes' pod phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// Accepted; some container has not started (init running, image pulling…).
    Pending,
    /// Bound and at least one container running or restarting.
    Running,
    /// Every container exited 0 and none will restart.
    Succeeded,
    /// Every container exited, at least one failed, and none will restart.
    Failed,
    /// The state could not be obtained.
    Unknown,
}

/// A pod as the agent sees it, reported on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodStatus {
    /// The pod.
    pub uuid: Uuid,
    /// The generation of the spec the agent runs now (after a rollback: the previous one).
    pub generation: i64,
    /// Kubelet's phase.
    pub phase: PodPhase,
    /// `PodScheduled`, `Initialized`, `ContainersReady`, `Ready`.
    pub conditions: Vec<PodCondition>,
    /// Init containers, in order.
    pub init_container_statuses: Vec<PodContainerStatus>,
    /// App containers.
    pub container_statuses: Vec<PodContainerStatus>,
    /// The pod's IP on the instance's container network (the infra container's).
    pub pod_ip: Option<String>,
    /// Ports actually published (host ports filled in).
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// When the agent first started the pod.
    pub start_time: Option<DateTime<Utc>>,
    /// Set when the agent rolled an update back.
    #[serde(default)]
    pub rollback: Option<Rollback>,
    /// A sentence about the pod as a whole (e.g. why it is Failed).
    #[serde(default)]
    pub message: Option<String>,
}

/// One pod condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCondition {
    /// `PodScheduled`, `Initialized`, `ContainersReady`, `Ready`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason when not True.
    #[serde(default)]
    pub reason: Option<String>,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
}

/// One container's status, as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodContainerStatus {
    /// The container's name in the pod.
    pub name: String,
    /// Current state.
    pub state: ContainerState,
    /// The previous run's state, if it ran before.
    #[serde(default)]
    pub last_state: Option<ContainerState>,
    /// Passing its readiness probe (or running without one).
    pub ready: bool,
    /// Started and past its startup probe.
    pub started: bool,
    /// Restarts by the agent, across agent restarts.
    pub restart_count: i64,
    /// Image as given.
    pub image: String,
    /// The engine's id, `docker://<64 hex>`.
    #[serde(default)]
    pub container_id: Option<String>,
    /// The spec hash this container was made from.
    pub spec_hash: String,
}

/// Kubernetes' container states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Not running: `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`,
    /// `ErrImagePull`, `CreateContainerError`, `RunContainerError`…
    Waiting {
        /// Why.
        reason: String,
        /// Details (e.g. "back-off 40s restarting failed container=web").
        #[serde(default)]
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// When it started.
        started_at: DateTime<Utc>,
    },
    /// Exited.
    Terminated {
        /// Exit code.
        exit_code: i64,
        /// `Completed` (0), `Error` (≠0), `OOMKilled`.
        reason: String,
        /// The engine's message, if any.
        #[serde(default)]
        message: Option<String>,
        /// When it started.
        #[serde(default)]
        started_at: Option<DateTime<Utc>>,
        /// When it finished.
        #[serde(default)]
        finished_at: Option<DateTime<Utc>>,
    },
}

/// An update the agent undid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The generation that failed.
    pub failed_generation: i64,
    /// The generation running again.
    pub restored_generation: i64,
    /// Why, e.g. "container web: CrashLoopBackOff within 60 s of the update".
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}
