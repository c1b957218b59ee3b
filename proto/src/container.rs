//! Containers as the agent is asked to make them and as it observes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Everything an agent needs to make one container. Already validated by the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Berth's uuid of the container; the Docker name is [`crate::docker_name`] of it.
    pub uuid: Uuid,
    /// Image reference, `repo[:tag]` or `repo@digest`.
    pub image: String,
    /// Command (Docker `Cmd`); empty means the image's default.
    pub command: Vec<String>,
    /// Entrypoint override (Docker `Entrypoint`); `None` keeps the image's.
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables.
    pub environment: BTreeMap<String, String>,
    /// User labels; the agent adds its own `berth.*` labels on top.
    pub labels: BTreeMap<String, String>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    /// Hostname inside the container.
    pub hostname: Option<String>,
    /// CPU limit in cores (Docker `NanoCpus` = cpu × 1e9).
    pub cpu: f64,
    /// Memory limit in MiB.
    pub memory_mib: i64,
    /// Ports to publish on the instance.
    pub ports: Vec<PortBinding>,
    /// Docker restart policy name: `no`, `always`, `on-failure`, `unless-stopped`.
    pub restart_policy: String,
    /// Maximum retries for `on-failure`.
    pub restart_max_retries: i64,
    /// Keep stdin open (Docker `OpenStdin`).
    pub interactive: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// Remove the container when it exits. The service does it, after recording the
    /// exit code: the agent never sets the engine's AutoRemove.
    pub auto_remove: bool,
    /// Close stdin after the first attached client detaches (Docker `StdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
    /// The user the command runs as (Docker `User`); `None` keeps the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Host access that a policy rule granted to this tenant container (privileged,
    /// host namespaces, host mounts, devices, capabilities, security options). `None`
    /// for every container whose creator was granted nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Privileges>,
    /// Infrastructure-only options (host mounts, host networking) for the containers
    /// Berth itself runs, such as the agent of a `docker`-provider instance.
    ///
    /// Never set for a tenant's container: the service builds tenant specs from stored
    /// rows, which have no such fields, and only the instance providers set this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra: Option<InfraOptions>,
    /// Credentials to pull the image with when it is not on the instance (Zun's
    /// `registry`). Travels only inside the signed command; never logged or stored by
    /// the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<crate::stream::RegistryAuth>,
}

/// Host access granted by policy to a tenant's container. Each field is Docker's
/// HostConfig field of the same meaning; empty or `false` grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Privileges {
    /// Docker `Privileged`: every capability and device of the instance.
    #[serde(default)]
    pub privileged: bool,
    /// Docker `NetworkMode` (`host`, `container:ID`) when not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// Docker `PidMode` (`host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    /// Docker `IpcMode` (`host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
    /// Docker `UTSMode` (`host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts_mode: Option<String>,
    /// Docker `UsernsMode` (`host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    /// Docker `Binds`: `HOST_PATH:CONTAINER_PATH[:OPTIONS]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<String>,
    /// Docker `Devices`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
    /// Docker `DeviceCgroupRules`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    /// Docker `CapAdd` beyond the engine's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Docker `SecurityOpt` that weaken confinement (`seccomp=unconfined`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
}

/// A host device made available in a container (Docker `DeviceMapping`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// Device path on the instance.
    pub path_on_host: String,
    /// Device path in the container.
    pub path_in_container: String,
    /// Cgroup permissions, e.g. `rwm`.
    pub cgroup_permissions: String,
}

/// Privileged settings of an infrastructure container. Tenants can never ask for these:
/// they would reach the instance's engine (a bind-mounted Docker socket) or its network
/// stack (host networking).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InfraOptions {
    /// Host paths bind-mounted into the container.
    #[serde(default)]
    pub binds: Vec<BindMount>,
    /// Share the instance's network namespace (Docker `NetworkMode: host`).
    #[serde(default)]
    pub host_network: bool,
}

/// One host path mounted into an infrastructure container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Path on the instance.
    pub host_path: String,
    /// Path inside the container.
    pub container_path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// One published port: `host_port` on the instance forwards to `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortBinding {
    /// Port on the instance; `None` lets the engine choose one.
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The lower-case name Docker uses (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The runtime's own state names (Docker's `State.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeState {
    /// Made, never started.
    Created,
    /// Running.
    Running,
    /// Frozen by pause.
    Paused,
    /// Being restarted by the engine's restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Exited (stopped, killed or finished).
    Exited,
    /// Dead: the engine could not remove it completely.
    Dead,
}

/// A container as the agent sees it on its engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedContainer {
    /// Berth's uuid, from the container's label.
    pub uuid: Uuid,
    /// The engine's 64-hex id.
    pub runtime_id: String,
    /// Current state.
    pub state: RuntimeState,
    /// Exit code of the last run, when it has exited.
    pub exit_code: Option<i64>,
    /// Whether the last run was killed for running out of memory.
    pub oom_killed: bool,
    /// The engine's error text for the last start, if any.
    pub error: Option<String>,
    /// When the current or last run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last run finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Ports actually published (host ports filled in).
    pub ports: Vec<PortBinding>,
    /// How many times the engine restarted it.
    pub restart_count: i64,
}

/// Something that happened to a container, reported by the agent as it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContainerEvent {
    /// The container's state changed (start, die, oom, pause, unpause, restart…).
    Changed {
        /// The container as observed right after the change.
        container: ObservedContainer,
    },
    /// The container no longer exists on the engine.
    Removed {
        /// Berth's uuid.
        uuid: Uuid,
    },
    /// A pod's status changed (phase, a container's state, readiness, restart count,
    /// a rollback). Also sent for every pod right after the full state on each
    /// connection.
    Pod {
        /// The pod as the agent sees it now.
        status: Box<crate::pod::PodStatus>,
    },
    /// The agent no longer has this pod (deleted).
    PodRemoved {
        /// The pod's uuid.
        uuid: Uuid,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            uuid: Uuid::nil(),
            image: "img".into(),
            command: Vec::new(),
            entrypoint: None,
            environment: BTreeMap::new(),
            labels: BTreeMap::new(),
            workdir: None,
            hostname: None,
            cpu: 0.0,
            memory_mib: 0,
            ports: Vec::new(),
            restart_policy: "no".into(),
            restart_max_retries: 0,
            interactive: false,
            tty: false,
            auto_remove: false,
            stdin_once: false,
            user: None,
            privileges: None,
            infra: None,
            registry_auth: None,
        }
    }

    #[test]
    fn a_spec_without_infra_options_says_nothing_of_them_on_the_wire() {
        let wire = serde_json::to_value(spec()).unwrap();
        assert!(wire.get("infra").is_none(), "{wire}");
        // And a spec from a peer that knows no infra options reads as having none.
        let back: ContainerSpec = serde_json::from_value(wire).unwrap();
        assert_eq!(back.infra, None);
    }

    #[test]
    fn infra_options_round_trip() {
        let mut s = spec();
        s.infra = Some(InfraOptions {
            binds: vec![BindMount {
                host_path: "/var/run/docker.sock".into(),
                container_path: "/var/run/docker.sock".into(),
                read_only: false,
            }],
            host_network: true,
        });
        let back: ContainerSpec =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
