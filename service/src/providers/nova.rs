//! The `nova` provider: an instance is a Nova server booted from an image that has
//! Docker, cloud-init and berth-agent (docs/nova.md), through the `openstack` crate.
//!
//! The server is named `berth-<instance id>` and carries the instance id in its
//! metadata, so Berth needs no column of its own for Nova's id: a retried provision
//! finds the server the first attempt booted, and release finds what to delete.
//!
//! Its cloud-init user_data writes `/etc/berth/agent.toml` (relay URL, instance id,
//! the service URL and a one-time enrollment token) and `/etc/berth/ca.pem` (the
//! deployment's CA, which the relay's certificate must chain to), and starts the agent,
//! which trades the token and a CSR for its credential and TLS client certificate at
//! `POST {service_url}/agents/enroll`.
//!
//! Every failure (Nova refuses the create, the server goes to ERROR, it does not
//! become ACTIVE in time) deletes what was made and waits until Nova no longer shows
//! it before returning the error, so no server is left behind; the [`Provisioner`]
//! then fails the waiting containers with the error's text, which carries Nova's own
//! message (the server's fault, or the API's answer).
//!
//! [`Provisioner`]: super::Provisioner

use std::time::{Duration, Instant};

use base64::Engine as _;
use openstack::Cloud;
use osauth::services::COMPUTE;
use osauth::Session;
use serde::Deserialize;
use uuid::Uuid;

use super::{BoxFuture, InstanceProvider, InstanceShape, MachineStatus, ProvisionError};
use crate::db::models::InstanceRow;
use crate::db::Db;
use crate::settings::NovaSettings;

/// The provider name stored in `instances.provider`.
pub const NAME: &str = "nova";

/// Server metadata key holding the Berth instance id.
pub const METADATA_INSTANCE: &str = "berth_instance";

/// Where cloud-init writes the agent's configuration on the instance.
pub const AGENT_CONFIG_PATH: &str = "/etc/berth/agent.toml";

/// Where cloud-init writes the deployment's CA certificate on the instance.
pub const CA_CERT_PATH: &str = "/etc/berth/ca.pem";

/// How long a delete may take before it is reported as failed.
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);

/// The Nova server name of `instance`.
pub fn server_name(instance: &str) -> String {
    format!("berth-{instance}")
}

/// What the agent on a new instance is told, written to [`AGENT_CONFIG_PATH`]. The
/// keys are berth-agent's `--config` keys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentBootstrap {
    /// The relay the agent dials.
    pub relay_url: String,
    /// The instance it acts for.
    pub instance: String,
    /// The API it enrolls at.
    pub service_url: String,
    /// The one-time token it trades for its credential.
    pub enrollment_token: String,
    /// Where it keeps that credential (and its TLS key and certificate).
    pub credential_file: String,
    /// Where the CA certificate is ([`CA_CERT_PATH`]).
    pub ca_cert: String,
    /// The CA certificate (PEM), written to `ca_cert`; not a key of agent.toml.
    #[serde(skip)]
    pub ca_pem: String,
}

/// The `#cloud-config` user_data that configures and starts the agent (plain text;
/// Nova wants it base64-encoded).
pub fn user_data(bootstrap: &AgentBootstrap) -> String {
    let agent_toml = toml::to_string(bootstrap).expect("the agent configuration is plain strings");
    let config = serde_json::json!({
        "write_files": [{
            "path": AGENT_CONFIG_PATH,
            "owner": "root:root",
            // It holds the enrollment token.
            "permissions": "0600",
            "content": agent_toml,
        }, {
            "path": bootstrap.ca_cert,
            "owner": "root:root",
            // Public: the CA the relay's certificate is verified against.
            "permissions": "0644",
            "content": bootstrap.ca_pem,
        }],
        "runcmd": [
            ["mkdir", "-p", "/var/lib/berth"],
            // A systemd unit shipped in the image wins; otherwise start it directly.
            ["sh", "-c", format!(
                "systemctl enable --now berth-agent.service 2>/dev/null || nohup berth-agent --config {AGENT_CONFIG_PATH} >>/var/log/berth-agent.log 2>&1 &"
            )],
        ],
    });
    let yaml = serde_yaml::to_string(&config).expect("JSON values are valid YAML");
    format!(
        "#cloud-config\n# Written by Berth for instance {}.\n{yaml}",
        bootstrap.instance
    )
}

/// Boots instances as Nova servers.
#[derive(Clone)]
pub struct NovaProvider {
    cloud: Cloud,
    session: Session,
    db: Db,
    settings: NovaSettings,
    relay_url: String,
    service_url: String,
    /// The deployment's CA certificate (PEM), for each agent to verify the relay.
    ca_pem: String,
    shape: InstanceShape,
}

/// What the compute API says about a server (the parts the provider reads).
#[derive(Debug, Deserialize)]
struct ServerBody {
    server: ServerView,
}

#[derive(Debug, Deserialize)]
struct ServerView {
    id: String,
    status: String,
    #[serde(default)]
    fault: Option<Fault>,
    #[serde(rename = "OS-EXT-AZ:availability_zone", default)]
    availability_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Fault {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

impl NovaProvider {
    /// Authenticates to the cloud (see [`NovaSettings`] for where credentials come
    /// from) and reads the flavor, so that instances have a known capacity.
    /// `relay_url` and `service_url` are the service's, unless the settings name others.
    pub async fn connect(
        settings: NovaSettings,
        db: Db,
        relay_url: &str,
        service_url: &str,
        ca_pem: &str,
    ) -> Result<NovaProvider, ProvisionError> {
        if settings.image.is_empty() || settings.flavor.is_empty() {
            return Err(ProvisionError(
                "the nova provider needs an image and a flavor: set image and flavor in [nova] (or --nova-image and --nova-flavor)".into(),
            ));
        }
        let session = session(&settings).await?;
        let cloud = Cloud::from(session.clone());
        let flavor = cloud.get_flavor(&settings.flavor).await.map_err(|e| {
            ProvisionError(format!(
                "cannot read flavor '{}' from Nova: {e}; check [nova] flavor and that the user may see it",
                settings.flavor
            ))
        })?;
        let shape = InstanceShape {
            // Known once the server has an address; the fake driver gives none.
            address: String::new(),
            availability_zone: settings
                .availability_zone
                .clone()
                .unwrap_or_else(|| "nova".into()),
            cpus: f64::from(flavor.vcpu_count()),
            memory_mib: flavor.ram_size() as i64,
            disk_gb: flavor.root_size() as i64,
        };
        tracing::info!(flavor = %flavor.name(), cpus = shape.cpus, memory_mib = shape.memory_mib, image = %settings.image, "nova provider ready");
        Ok(NovaProvider {
            cloud,
            session,
            db,
            ca_pem: ca_pem.to_owned(),
            relay_url: settings
                .relay_url
                .clone()
                .unwrap_or_else(|| relay_url.to_owned()),
            service_url: settings
                .service_url
                .clone()
                .unwrap_or_else(|| service_url.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            settings,
            shape,
        })
    }

    /// The servers named for `instance` (normally none or one).
    async fn servers_of(&self, instance: &str) -> Result<Vec<String>, ProvisionError> {
        let name = server_name(instance);
        let found = self
            .cloud
            .find_servers()
            .with_name(format!("^{name}$"))
            .all()
            .await
            .map_err(|e| ProvisionError(format!("cannot list Nova servers: {e}")))?;
        Ok(found
            .into_iter()
            .filter(|s| s.name() == &name)
            .map(|s| s.id().clone())
            .collect())
    }

    async fn show(&self, id: &str) -> Result<Option<ServerView>, ProvisionError> {
        match self
            .session
            .get_json::<_, _, ServerBody>(COMPUTE, ["servers", id])
            .await
        {
            Ok(body) => Ok(Some(body.server)),
            Err(e) if e.kind() == openstack::ErrorKind::ResourceNotFound => Ok(None),
            Err(e) => Err(ProvisionError(format!("cannot read Nova server {id}: {e}"))),
        }
    }

    /// Deletes server `id` and waits until Nova no longer shows it.
    async fn delete_server(&self, id: &str) -> Result<(), ProvisionError> {
        match self.cloud.get_server(id).await {
            Ok(server) => {
                if let Err(e) = server.delete().await {
                    if e.kind() != openstack::ErrorKind::ResourceNotFound {
                        return Err(ProvisionError(format!(
                            "cannot delete Nova server {id}: {e}"
                        )));
                    }
                }
            }
            Err(e) if e.kind() == openstack::ErrorKind::ResourceNotFound => return Ok(()),
            Err(e) => {
                return Err(ProvisionError(format!(
                    "cannot read Nova server {id} to delete it: {e}"
                )))
            }
        }
        let deadline = Instant::now() + DELETE_TIMEOUT;
        while self.show(id).await?.is_some() {
            if Instant::now() > deadline {
                return Err(ProvisionError(format!(
                    "Nova server {id} was still there {} s after its delete; delete it by hand (openstack server delete {id})",
                    DELETE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
        tracing::info!(server.id = %id, "Nova server deleted");
        Ok(())
    }

    /// Deletes every server of `instance`, keeping the first error.
    async fn delete_all(&self, instance: &str) -> Result<(), ProvisionError> {
        let mut first = None;
        for id in self.servers_of(instance).await? {
            if let Err(e) = self.delete_server(&id).await {
                tracing::warn!(instance.id = %instance, server.id = %id, error = %e, "could not delete a Nova server");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms.max(100))
    }

    async fn boot(&self, instance: &InstanceRow) -> Result<String, ProvisionError> {
        let id = Uuid::parse_str(&instance.id).map_err(|e| {
            ProvisionError(format!("instance id {} is not a uuid: {e}", instance.id))
        })?;
        let token = crate::enrollment::issue(
            &self.db,
            id,
            Duration::from_secs(self.settings.enrollment_ttl_secs),
        )
        .await
        .map_err(|e| {
            ProvisionError(format!("cannot issue the instance's enrollment token: {e}"))
        })?;
        let data = user_data(&AgentBootstrap {
            relay_url: self.relay_url.clone(),
            instance: instance.id.clone(),
            service_url: self.service_url.clone(),
            enrollment_token: token,
            credential_file: self.settings.credential_file.clone(),
            ca_cert: CA_CERT_PATH.to_owned(),
            ca_pem: self.ca_pem.clone(),
        });
        let mut new = self
            .cloud
            .new_server(server_name(&instance.id), self.settings.flavor.clone())
            .with_image(self.settings.image.clone())
            .with_metadata(METADATA_INSTANCE, instance.id.clone())
            .with_metadata("berth_project", instance.project_id.clone())
            .with_user_data(base64::engine::general_purpose::STANDARD.encode(data));
        if let Some(network) = &self.settings.network {
            new = new.with_network(network.clone());
        }
        if let Some(key) = &self.settings.key_name {
            new = new.with_keypair(key.clone());
        }
        if let Some(az) = &self.settings.availability_zone {
            new = new.with_availability_zone(az.clone());
        }
        let waiter = new.create().await.map_err(|e| {
            ProvisionError(format!(
                "Nova refused to boot a server (image '{}', flavor '{}'): {}",
                self.settings.image,
                self.settings.flavor,
                e.to_string().trim()
            ))
        })?;
        let server = waiter.current_state().id().clone();
        tracing::info!(instance.id = %instance.id, server.id = %server, "Nova server created");
        Ok(server)
    }

    /// Polls `server` until ACTIVE; ERROR and the boot timeout are errors.
    async fn await_active(&self, server: &str) -> Result<Option<String>, ProvisionError> {
        let timeout = Duration::from_secs(self.settings.boot_timeout_secs);
        let deadline = Instant::now() + timeout;
        loop {
            match self.show(server).await? {
                None => {
                    return Err(ProvisionError(format!(
                        "Nova server {server} disappeared while booting"
                    )))
                }
                Some(s) if s.status == "ACTIVE" => return Ok(s.availability_zone),
                Some(s) if s.status == "ERROR" => {
                    let fault = s.fault.map_or_else(
                        || "no fault recorded".to_owned(),
                        |f| match f.code {
                            Some(code) => format!("{} (fault code {code})", f.message.trim()),
                            None => f.message.trim().to_owned(),
                        },
                    );
                    return Err(ProvisionError(format!(
                        "Nova server {} went to ERROR: {fault}",
                        s.id
                    )));
                }
                Some(_) => {}
            }
            if Instant::now() > deadline {
                return Err(ProvisionError(format!(
                    "Nova server {server} was not ACTIVE within {} s ([nova] boot_timeout_secs)",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }

    async fn provision_now(&self, instance: InstanceRow) -> Result<(), ProvisionError> {
        // A server from an earlier attempt (or an earlier run of the service) is
        // waited for rather than booted twice; its agent keeps its credential.
        let existing = self.servers_of(&instance.id).await?;
        let made = match existing.first() {
            Some(server) => {
                tracing::info!(instance.id = %instance.id, server.id = %server, "found the instance's Nova server");
                Ok(server.clone())
            }
            None => self.boot(&instance).await,
        };
        let outcome = match made {
            Ok(server) => self.await_active(&server).await.map(|az| (server, az)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok((server, az)) => {
                tracing::info!(instance.id = %instance.id, server.id = %server, availability_zone = ?az, "Nova server ACTIVE");
                Ok(())
            }
            Err(e) => {
                // A create that failed half-way may still have left a server; so may
                // a server in ERROR or one that never booted.
                if let Err(cleanup) = self.delete_all(&instance.id).await {
                    return Err(ProvisionError(format!(
                        "{e}; and the server could not be deleted: {cleanup}"
                    )));
                }
                Err(ProvisionError(format!("{e}; no server was left behind")))
            }
        }
    }
}

async fn session(settings: &NovaSettings) -> Result<Session, ProvisionError> {
    let made = if let Some(cloud) = &settings.cloud {
        Session::from_config(cloud).await
    } else if let Some(url) = &settings.auth_url {
        let auth = osauth::identity::Password::new(
            url,
            settings.username.clone(),
            settings.password.clone(),
            settings.user_domain_name.clone(),
        )
        .map_err(|e| ProvisionError(format!("[nova] auth_url '{url}' is not usable: {e}")))?
        .with_project_scope(
            osauth::common::IdOrName::from_name(settings.project_name.clone()),
            Some(osauth::common::IdOrName::from_name(
                settings.project_domain_name.clone(),
            )),
        );
        Session::new(auth).await
    } else {
        Session::from_env().await
    };
    let mut session = made.map_err(|e| {
        ProvisionError(format!(
            "cannot authenticate to the cloud for the nova provider: {e}; set [nova] cloud, or auth_url with username, password and project_name, or the OS_* variables (OS_CLOUD)"
        ))
    })?;
    if let Some(region) = &settings.region_name {
        session.set_region(region.clone());
    }
    Ok(session)
}

impl InstanceProvider for NovaProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn shape(&self) -> InstanceShape {
        self.shape.clone()
    }

    fn provision(&self, instance: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>> {
        let this = self.clone();
        Box::pin(async move { this.provision_now(instance).await })
    }

    fn release(&self, instance: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>> {
        let this = self.clone();
        Box::pin(async move { this.delete_all(&instance.id).await })
    }

    fn status(
        &self,
        instance: InstanceRow,
    ) -> BoxFuture<'static, Result<MachineStatus, ProvisionError>> {
        let this = self.clone();
        Box::pin(async move {
            let servers = this.servers_of(&instance.id).await?;
            let Some(id) = servers.first() else {
                return Ok(MachineStatus::Gone(format!(
                    "Nova has no server {}",
                    server_name(&instance.id)
                )));
            };
            Ok(match this.show(id).await? {
                None => MachineStatus::Gone(format!("Nova server {id} no longer exists")),
                Some(s) if s.status == "ERROR" => MachineStatus::Failed(format!(
                    "Nova server {id} is in ERROR: {}",
                    s.fault
                        .map_or_else(|| "no fault recorded".to_owned(), |f| f.message)
                )),
                Some(s) if s.status == "DELETED" || s.status == "SOFT_DELETED" => {
                    MachineStatus::Gone(format!("Nova server {id} is {}", s.status))
                }
                Some(_) => MachineStatus::Running,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_writes_the_agent_configuration_and_starts_the_agent() {
        let b = AgentBootstrap {
            relay_url: "wss://relay:9518".into(),
            instance: "3f0c".into(),
            service_url: "http://api:9517".into(),
            enrollment_token: "tok\"en".into(),
            credential_file: "/var/lib/berth/agent-credential".into(),
            ca_cert: CA_CERT_PATH.into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
        };
        let text = user_data(&b);
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let file = &doc["write_files"][0];
        assert_eq!(file["path"].as_str(), Some(AGENT_CONFIG_PATH));
        assert_eq!(file["permissions"].as_str(), Some("0600"));
        let agent: toml::Table = file["content"].as_str().unwrap().parse().unwrap();
        assert_eq!(agent["relay_url"].as_str(), Some("wss://relay:9518"));
        // The agent verifies the relay with the CA written beside its configuration.
        assert_eq!(agent["ca_cert"].as_str(), Some(CA_CERT_PATH));
        assert!(
            agent.get("ca_pem").is_none(),
            "the PEM is a file, not a key"
        );
        let ca = &doc["write_files"][1];
        assert_eq!(ca["path"].as_str(), Some(CA_CERT_PATH));
        assert_eq!(ca["content"].as_str(), Some(b.ca_pem.as_str()));
        assert_eq!(agent["instance"].as_str(), Some("3f0c"));
        assert_eq!(agent["service_url"].as_str(), Some("http://api:9517"));
        assert_eq!(agent["enrollment_token"].as_str(), Some("tok\"en"));
        let run = serde_json::to_string(&serde_json::to_value(&doc["runcmd"]).unwrap()).unwrap();
        assert!(
            run.contains("berth-agent --config /etc/berth/agent.toml"),
            "{run}"
        );
    }
}
