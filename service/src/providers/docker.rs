//! The `docker` provider: an instance is a container running berth-agent on the
//! engine of a host instance (in `berth up`, the admin project's host).
//!
//! The service never talks to Docker: the agent container is made and started with
//! ordinary [`Command`]s sent to the host instance's agent. Its spec carries
//! [`InfraOptions`] — the engine's socket bind-mounted and host networking, so the new
//! agent reaches the relay on loopback and its containers publish ports on the host's
//! address. Only this provider sets those options; tenant specs never carry them.
//! With a `network` (berth-service's `[docker_instances] network`) the agent container
//! joins that Docker network instead of the host's, and dials the relay and the service
//! at addresses on it, so the fault drills can partition one agent
//! (`docker network disconnect`).
//!
//! The agent container's Berth uuid is the instance's id, so a retried provision finds
//! the container the first attempt made, and the host's reconciler knows it is not an
//! orphan. The new agent manages only the containers labelled with its own instance.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_proto::{
    AgentError, AgentErrorKind, BindMount, Command, ContainerSpec, InfraOptions, Outcome,
    Privileges, RuntimeState,
};
use uuid::Uuid;

use super::{BoxFuture, InstanceProvider, InstanceShape, MachineStatus, ProvisionError};
use crate::agents::Agents;
use crate::db::models::InstanceRow;
use crate::db::Db;

/// The provider name stored in `instances.provider`.
pub const NAME: &str = "docker";

/// The agent image `berth up` uses unless told otherwise.
pub const DEFAULT_IMAGE: &str = "berth-agent:dev";

/// Where the engine's socket is inside the agent container (bollard's default).
const SOCKET_IN_CONTAINER: &str = "/var/run/docker.sock";

/// How long the host's agent may stay unreachable while an instance is being made.
const HOST_AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Labels on agent containers, to tell them apart on the engine.
pub const LABEL_ROLE: &str = "berth.role";
/// Value of [`LABEL_ROLE`] on an instance's agent container.
pub const ROLE_INSTANCE_AGENT: &str = "instance-agent";
/// Label naming the project an agent container's instance belongs to.
pub const LABEL_PROJECT: &str = "berth.project";

/// How the docker provider makes instances.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The instance whose agent runs the agent containers (the admin's host).
    pub host_instance: Uuid,
    /// The host's address: new instances publish their ports there.
    pub address: String,
    /// The berth-agent image (`berth-agent:dev`, built by scripts/build-agent-image).
    pub image: String,
    /// The relay URL the new agents dial (they share the host's network).
    pub relay_url: String,
    /// Path of the engine's socket on the host, mounted into each agent container.
    pub docker_socket: String,
    /// A Docker network the agent containers join instead of the host's network
    /// (None: host networking, as `berth up` runs them). `relay_url` and the service
    /// URL must then be reachable from that network.
    pub network: Option<String>,
    /// More labels on each agent container (`[docker_instances] labels`); Berth's own
    /// labels win on a clash.
    pub labels: BTreeMap<String, String>,
}

impl DockerOptions {
    /// The options `berth-service` reads from its `[docker_instances]` section;
    /// `relay_url` is the service's own, used when the section names none.
    pub fn from_settings(
        settings: &crate::settings::DockerInstancesSettings,
        relay_url: &str,
    ) -> anyhow::Result<DockerOptions> {
        let Some(host_instance) = settings.host_instance else {
            anyhow::bail!(
                "instance_provider = \"docker\" needs [docker_instances] host_instance: the id of a registered host (berth-service register-host prints it) whose agent makes the agent containers"
            );
        };
        Ok(DockerOptions {
            host_instance,
            address: settings.address.clone(),
            image: settings.image.clone(),
            relay_url: settings
                .relay_url
                .clone()
                .unwrap_or_else(|| relay_url.to_owned()),
            docker_socket: settings.docker_socket.clone(),
            network: settings.network.clone().filter(|n| !n.is_empty()),
            labels: settings.labels.clone(),
        })
    }
}

/// How long an agent container's enrollment token works: long enough for a slow image
/// start, short enough that a leaked token is soon useless.
const ENROLLMENT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// Where an agent container keeps the credential it enrolled for, so that a restart of
/// the container (its token already used) reconnects without enrolling again.
const CREDENTIAL_FILE_IN_CONTAINER: &str = "/var/lib/berth-agent/credential";

/// Makes instances as agent containers on a host instance.
#[derive(Clone)]
pub struct DockerProvider {
    agents: Agents,
    db: Db,
    service_url: String,
    options: DockerOptions,
    /// The deployment's CA certificate (PEM): each agent verifies the relay with it.
    ca_pem: String,
}

impl DockerProvider {
    /// A provider that sends commands through `agents` and gives each new agent a
    /// one-time enrollment token (recorded in `db`) to trade at `service_url` for its
    /// credential, as a Nova instance's agent does.
    /// Each agent gets the deployment's CA certificate `ca_pem` to verify the relay
    /// with; its own client certificate comes with its enrollment.
    pub fn new(
        agents: Agents,
        db: Db,
        service_url: String,
        options: DockerOptions,
        ca_pem: String,
    ) -> Self {
        Self {
            agents,
            db,
            service_url,
            options,
            ca_pem,
        }
    }

    /// Sends `command` to the host's agent, retrying while it is unreachable.
    async fn call_host(&self, command: Command) -> Result<Outcome, AgentError> {
        let deadline = Instant::now() + HOST_AGENT_TIMEOUT;
        loop {
            match self
                .agents
                .call(self.options.host_instance, None, command.clone())
                .await
            {
                Err(e) if e.kind == AgentErrorKind::Unavailable && Instant::now() < deadline => {
                    tracing::debug!(instance.id = %self.options.host_instance, error = %e, "host agent unavailable; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    async fn provision_now(&self, instance: InstanceRow) -> Result<(), ProvisionError> {
        let id = Uuid::parse_str(&instance.id).map_err(|e| {
            ProvisionError(format!("instance id {} is not a uuid: {e}", instance.id))
        })?;
        // The agent enrolls like a Nova instance's: a fresh one-time token for every
        // agent container made, since the container (and its stored credential) is
        // made anew below.
        let token = crate::enrollment::issue(&self.db, id, ENROLLMENT_TOKEN_TTL)
            .await
            .map_err(|e| {
                ProvisionError(format!(
                    "could not record the agent's enrollment token: {e}"
                ))
            })?;
        let mut spec = agent_spec(&self.options, &self.service_url, &instance, token);
        // Public: the CA certificate the agent verifies the relay with.
        spec.environment
            .insert("BERTH_AGENT_CA_CERT_PEM".to_owned(), self.ca_pem.clone());
        let host = self.options.host_instance;
        // An agent container from an earlier run knows an earlier relay address and
        // credential; a create would find it as it is, so it goes first.
        self.call_host(Command::Remove {
            container: id,
            force: true,
        })
        .await
        .map_err(|e| {
            ProvisionError(format!(
                "host instance {host} could not remove the earlier agent container berth-{id}: {}",
                e.message
            ))
        })?;
        match self.call_host(Command::Create { spec: Box::new(spec) }).await {
            Ok(_) => {}
            Err(e) if e.kind == AgentErrorKind::ImageNotFound => {
                return Err(ProvisionError(format!(
                    "the agent image '{}' is not on host instance {host}: {}. Build it with scripts/build-agent-image (or start berth up with --agent-image IMAGE naming one that exists), then create the container again",
                    self.options.image, e.message
                )))
            }
            Err(e) => {
                return Err(ProvisionError(format!(
                    "host instance {host} could not make the agent container from image '{}': {}",
                    self.options.image, e.message
                )))
            }
        }
        self.call_host(Command::Start { container: id })
            .await
            .map_err(|e| {
                ProvisionError(format!(
                    "host instance {host} could not start the agent container berth-{id}: {}",
                    e.message
                ))
            })?;
        tracing::info!(instance.id = %id, project.id = %instance.project_id, host.instance = %host, "agent container started");
        Ok(())
    }
}

impl DockerProvider {
    /// Asks the host's agent how the instance's agent container is (one call, no
    /// retries: the monitor asks again on its next round).
    async fn status_now(&self, instance: &InstanceRow) -> Result<MachineStatus, ProvisionError> {
        let id = Uuid::parse_str(&instance.id).map_err(|e| {
            ProvisionError(format!("instance id {} is not a uuid: {e}", instance.id))
        })?;
        let host = self.options.host_instance;
        match self
            .agents
            .call(host, None, Command::Inspect { container: id })
            .await
        {
            Ok(Outcome::Container(o)) => Ok(match o.state {
                RuntimeState::Running | RuntimeState::Restarting | RuntimeState::Created => {
                    MachineStatus::Running
                }
                RuntimeState::Paused => MachineStatus::Failed(format!(
                    "its agent container berth-{id} is paused on host instance {host}"
                )),
                RuntimeState::Exited | RuntimeState::Dead | RuntimeState::Removing => {
                    MachineStatus::Failed(format!(
                        "its agent container berth-{id} exited (code {}) on host instance {host}",
                        o.exit_code
                            .map_or_else(|| "unknown".to_owned(), |c| c.to_string())
                    ))
                }
            }),
            Ok(_) => Ok(MachineStatus::Unknown),
            Err(e) if e.kind == AgentErrorKind::NotFound => Ok(MachineStatus::Gone(format!(
                "its agent container berth-{id} no longer exists on host instance {host}"
            ))),
            Err(e) if e.kind == AgentErrorKind::Unavailable => Ok(MachineStatus::Unknown),
            Err(e) => Err(ProvisionError(format!(
                "host instance {host} could not inspect the agent container berth-{id}: {}",
                e.message
            ))),
        }
    }
}

impl InstanceProvider for DockerProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn shape(&self) -> InstanceShape {
        InstanceShape {
            address: self.options.address.clone(),
            availability_zone: "nova".into(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            memory_mib: 0,
            disk_gb: 0,
        }
    }

    fn provision(&self, instance: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>> {
        let this = self.clone();
        Box::pin(async move { this.provision_now(instance).await })
    }

    fn status(
        &self,
        instance: InstanceRow,
    ) -> BoxFuture<'static, Result<MachineStatus, ProvisionError>> {
        let this = self.clone();
        Box::pin(async move { this.status_now(&instance).await })
    }

    fn release(&self, instance: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>> {
        let this = self.clone();
        Box::pin(async move {
            let id = Uuid::parse_str(&instance.id).map_err(|e| {
                ProvisionError(format!("instance id {} is not a uuid: {e}", instance.id))
            })?;
            this.call_host(Command::Remove {
                container: id,
                force: true,
            })
            .await
            .map(|_| ())
            .map_err(|e| {
                ProvisionError(format!(
                    "could not remove the agent container berth-{id}: {}",
                    e.message
                ))
            })
        })
    }
}

/// The spec of the agent container of `instance`: the only kind of spec with
/// [`InfraOptions`].
pub fn agent_spec(
    options: &DockerOptions,
    service_url: &str,
    instance: &InstanceRow,
    enrollment_token: String,
) -> ContainerSpec {
    let environment = BTreeMap::from([
        (
            "BERTH_AGENT_RELAY_URL".to_owned(),
            options.relay_url.clone(),
        ),
        ("BERTH_AGENT_SERVICE_URL".to_owned(), service_url.to_owned()),
        ("BERTH_AGENT_ENROLLMENT_TOKEN".to_owned(), enrollment_token),
        (
            "BERTH_AGENT_CREDENTIAL_FILE".to_owned(),
            CREDENTIAL_FILE_IN_CONTAINER.to_owned(),
        ),
        ("BERTH_AGENT_INSTANCE".to_owned(), instance.id.clone()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
        // Pods: records kept beside the credential (survive agent restarts); the
        // agent's own image serves as the pods' infra container (`berth-agent pause`).
        (
            "BERTH_AGENT_STATE_DIR".to_owned(),
            "/var/lib/berth-agent/state".to_owned(),
        ),
        (
            "BERTH_AGENT_POD_INFRA_IMAGE".to_owned(),
            options.image.clone(),
        ),
        (
            "BERTH_AGENT_POD_INFRA_COMMAND".to_owned(),
            "pause".to_owned(),
        ),
    ]);
    let mut labels = options.labels.clone();
    labels.extend([
        (LABEL_ROLE.to_owned(), ROLE_INSTANCE_AGENT.to_owned()),
        (LABEL_PROJECT.to_owned(), instance.project_id.clone()),
    ]);
    ContainerSpec {
        uuid: Uuid::parse_str(&instance.id).expect("instance ids are uuids"),
        image: options.image.clone(),
        command: Vec::new(),
        entrypoint: None,
        environment,
        labels,
        workdir: None,
        hostname: None,
        cpu: 0.0,
        memory_mib: 0,
        ports: Vec::new(),
        // The agent keeps running across engine restarts, as a host's agent would.
        restart_policy: "unless-stopped".into(),
        restart_max_retries: 0,
        interactive: false,
        tty: false,
        auto_remove: false,
        stdin_once: false,
        user: None,
        // On a network of its own the agent container joins it by Docker's
        // NetworkMode (the one field of the spec that names a network).
        privileges: options.network.as_ref().map(|network| Privileges {
            network_mode: Some(network.clone()),
            ..Privileges::default()
        }),
        infra: Some(InfraOptions {
            binds: vec![BindMount {
                host_path: options.docker_socket.clone(),
                container_path: SOCKET_IN_CONTAINER.into(),
                read_only: false,
            }],
            host_network: options.network.is_none(),
        }),
        registry_auth: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> InstanceRow {
        let t = crate::db::now();
        InstanceRow {
            id: Uuid::new_v4().to_string(),
            project_id: "p1".into(),
            name: "docker-1".into(),
            provider: NAME.into(),
            status: "building".into(),
            status_reason: None,
            address: "127.0.0.1".into(),
            availability_zone: "nova".into(),
            cpus: 1.0,
            memory_mib: 0,
            disk_gb: 0,
            agent_connected: false,
            agent_seen_at: None,
            created_at: t,
            updated_at: t,
            cpu_used: 0.0,
            memory_used_mib: 0,
            disk_used_gb: 0,
            container_count: 0,
        }
    }

    #[test]
    fn the_agent_container_gets_the_socket_host_networking_and_its_instance() {
        let options = DockerOptions {
            host_instance: Uuid::new_v4(),
            address: "127.0.0.1".into(),
            image: DEFAULT_IMAGE.into(),
            relay_url: "ws://127.0.0.1:9518".into(),
            docker_socket: "/run/docker.sock".into(),
            network: None,
            labels: BTreeMap::from([("berth.test".to_owned(), "run".to_owned())]),
        };
        let instance = instance();
        let spec = agent_spec(&options, "http://127.0.0.1:9517", &instance, "tok".into());
        assert_eq!(spec.uuid.to_string(), instance.id);
        assert_eq!(spec.image, "berth-agent:dev");
        assert_eq!(spec.environment["BERTH_AGENT_INSTANCE"], instance.id);
        assert_eq!(
            spec.environment["BERTH_AGENT_RELAY_URL"],
            "ws://127.0.0.1:9518"
        );
        assert_eq!(spec.environment["BERTH_AGENT_ENROLLMENT_TOKEN"], "tok");
        assert_eq!(
            spec.environment["BERTH_AGENT_SERVICE_URL"],
            "http://127.0.0.1:9517"
        );
        assert!(!spec.environment.contains_key("BERTH_AGENT_CREDENTIAL"));
        let infra = spec.infra.expect("the agent container is infrastructure");
        assert!(infra.host_network);
        assert_eq!(infra.binds[0].host_path, "/run/docker.sock");
        assert_eq!(infra.binds[0].container_path, "/var/run/docker.sock");
        assert!(spec.privileges.is_none());
        // The configured labels, and Berth's own.
        assert_eq!(spec.labels["berth.test"], "run");
        assert_eq!(spec.labels[LABEL_ROLE], ROLE_INSTANCE_AGENT);
    }

    #[test]
    fn on_a_network_of_its_own_the_agent_container_leaves_the_host_network() {
        let options = DockerOptions {
            host_instance: Uuid::new_v4(),
            address: "172.30.0.1".into(),
            image: DEFAULT_IMAGE.into(),
            relay_url: "ws://172.30.0.1:9518".into(),
            docker_socket: "/run/docker.sock".into(),
            network: Some("berth-agents".into()),
            labels: BTreeMap::new(),
        };
        let spec = agent_spec(&options, "http://172.30.0.1:9517", &instance(), "t".into());
        let infra = spec.infra.expect("the agent container is infrastructure");
        assert!(!infra.host_network);
        assert_eq!(infra.binds[0].host_path, "/run/docker.sock");
        let privileges = spec.privileges.expect("the network is named");
        assert_eq!(privileges.network_mode.as_deref(), Some("berth-agents"));
        assert!(!privileges.privileged);
        assert!(privileges.binds.is_empty());
    }

    #[test]
    fn settings_need_a_host_instance_and_default_the_relay_url() {
        let mut settings = crate::settings::DockerInstancesSettings::default();
        let e = DockerOptions::from_settings(&settings, "ws://r:1").unwrap_err();
        assert!(e.to_string().contains("host_instance"), "{e}");
        settings.host_instance = Some(Uuid::new_v4());
        settings.network = Some("net".into());
        let o = DockerOptions::from_settings(&settings, "ws://r:1").unwrap();
        assert_eq!(o.relay_url, "ws://r:1");
        assert_eq!(o.network.as_deref(), Some("net"));
        settings.relay_url = Some("ws://172.30.0.1:2".into());
        let o = DockerOptions::from_settings(&settings, "ws://r:1").unwrap();
        assert_eq!(o.relay_url, "ws://172.30.0.1:2");
    }
}
