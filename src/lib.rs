//! The all-in-one deployment behind `berth up`: the service, a relay and an agent for
//! this host in one process, with SQLite under a data directory by default.
//!
//! Relay connections are mutually authenticated TLS even here: `<data>/pki` holds the
//! deployment's CA (made on first start) and the relay's certificate; the service and
//! the local agent get client certificates of the same CA (docs/TLS.md).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_agent::{Agent, AgentSettings, PodSettings};
use berth_relay::{Relay, RelaySettings};
use berth_service::identity::keys::{write_private, SigningKey};
use berth_service::providers::docker::DockerOptions;
use berth_service::settings::DockerSettings;
use berth_service::startup::{generate_password, CREDENTIAL_KEY_FILE};
use berth_service::{Application, ServiceSettings};
use uuid::Uuid;

/// How to run the embedded deployment.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Where state lives: the SQLite database, keys, openrc and clouds.yaml.
    pub data_dir: PathBuf,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where the relay listens.
    pub relay_listen: SocketAddr,
    /// The address at which published ports of this host's containers are reached.
    pub advertise_address: IpAddr,
    /// A database other than SQLite under the data directory.
    pub database_url: Option<String>,
    /// The Docker engine to drive (default: DOCKER_HOST or the local socket).
    pub docker_host: Option<String>,
    /// The berth-agent image of other projects' instances (the `docker` provider).
    pub agent_image: String,
    /// A policy file overriding the default policy.
    pub policy_file: Option<PathBuf>,
    /// How long the embedded identity's tokens stay valid.
    pub token_ttl: Duration,
    /// How long an instance made on demand may stay empty before it is released.
    pub instance_idle_grace: Duration,
    /// How long an instance's agent may stay disconnected before its containers are
    /// marked Unknown.
    pub agent_lost_after: Duration,
    /// How containers are placed (pack or spread) and the size of the instances the
    /// `docker` provider makes (`--instance-cpus`, `--instance-memory-mib`).
    pub placement: berth_service::settings::PlacementSettings,
    /// The Docker endpoint's plain listener (loopback only); None: off.
    pub docker_listen: Option<SocketAddr>,
    /// The Docker endpoint's TLS listener (the deployment's CA, `<data>/pki`); None: off.
    pub docker_tls_listen: Option<SocketAddr>,
    /// The local agent's pods: crash-loop backoff (kubelet's by default; tests scale it
    /// down, the algorithm stays the same) and infra image. A `state_dir` of `None`
    /// means `<data>/agent`, so pods and restart counts survive a restart of berth up.
    pub pods: PodSettings,
}

/// A started embedded deployment: listening, agent connecting.
pub struct Embedded {
    app: Application,
    relay: Relay,
    agent: Agent,
    /// The API's base URL.
    pub public_url: String,
    /// The relay's URL.
    pub relay_url: String,
    /// The instance id of this host.
    pub instance: Uuid,
    /// The canonical data directory.
    pub data_dir: PathBuf,
    /// The admin's password.
    pub admin_password: String,
    /// Where the Docker endpoint's plain listener is bound.
    pub docker_addr: Option<SocketAddr>,
    /// Where the Docker endpoint's TLS listener is bound.
    pub docker_tls_addr: Option<SocketAddr>,
}

impl Embedded {
    /// Starts everything, creating the admin account and writing openrc and
    /// clouds.yaml on the way.
    pub async fn start(opts: UpOptions) -> anyhow::Result<Embedded> {
        let data = opts.data_dir.clone();
        std::fs::create_dir_all(&data)
            .with_context(|| format!("creating the data directory {}", data.display()))?;
        let data = data.canonicalize()?;
        let keys_dir = data.join("keys");
        let credential_key = SigningKey::load_or_create(&keys_dir.join(CREDENTIAL_KEY_FILE))?;

        // One CA for the deployment; the relay's certificate names every address it is
        // dialled at (agent containers share the host's network: loopback).
        let pki_dir = data.join("pki");
        let mut relay_names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            opts.advertise_address.to_string(),
        ];
        if !opts.relay_listen.ip().is_unspecified() {
            relay_names.push(opts.relay_listen.ip().to_string());
        }
        let ca = berth_service::pki::init_dir(&pki_dir, &relay_names)
            .context("setting up the deployment's CA and certificates")?;
        let relay_tls =
            berth_tls::ServerTls::from_files(&berth_service::pki::relay_files(&pki_dir))?;
        let relay = Relay::bind(RelaySettings::new(
            opts.relay_listen,
            credential_key.public_key_pem(),
            relay_tls,
        ))
        .await
        .with_context(|| format!("starting the relay on {}", opts.relay_listen))?;
        // Dialled on loopback when the relay listens on all addresses.
        let relay_ip = if opts.relay_listen.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            opts.relay_listen.ip()
        };
        let relay_url = format!(
            "wss://{}",
            SocketAddr::new(relay_ip, relay.local_addr().port())
        );

        let database_url = opts
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data.join("berth.sqlite").display()));
        let public_ip = if opts.listen.ip().is_unspecified() {
            opts.advertise_address
        } else {
            opts.listen.ip()
        };
        let app = Application::build(ServiceSettings {
            listen: opts.listen,
            // With port 0 the port is known only after binding; the service then
            // derives its URL from the listener.
            public_url: (opts.listen.port() != 0)
                .then(|| format!("http://{}", SocketAddr::new(public_ip, opts.listen.port()))),
            database_url,
            relay_url: relay_url.clone(),
            keys_dir,
            token_ttl: opts.token_ttl,
            command_token_ttl: berth_service::command_signing::DEFAULT_COMMAND_TOKEN_TTL,
            region: "RegionOne".into(),
            policy_file: opts.policy_file.clone(),
            identity: Default::default(),
            instance_provider: None,
            nova: Default::default(),
            instance_idle_grace: opts.instance_idle_grace,
            agent_lost_after: opts.agent_lost_after,
            placement: opts.placement.clone(),
            docker: DockerSettings {
                listen: opts.docker_listen,
                tls_listen: opts.docker_tls_listen,
                // None: the deployment's CA ([tls]), one CA for everything.
                tls_dir: None,
                // On all addresses, clients reach the listener where they reach this
                // host's containers.
                public_host: opts
                    .docker_tls_listen
                    .filter(|a| a.ip().is_unspecified())
                    .map(|_| opts.advertise_address.to_string()),
                server_names: vec![opts.advertise_address.to_string()],
                ..DockerSettings::default()
            },
            // berth up enables the docker provider itself, below.
            docker_instances: Default::default(),
            tls: berth_service::settings::TlsSettings {
                dir: Some(pki_dir.clone()),
                ..Default::default()
            },
        })
        .await?;
        let public_url = app.public_url().to_owned();

        let admin_password = admin_password(&data)?;
        let admin = app.ensure_admin(&admin_password).await?;
        let instance = app
            .ensure_static_instance(
                &admin.project_id,
                "local",
                &opts.advertise_address.to_string(),
            )
            .await?;
        let credential =
            app.mint_agent_credential(instance, Duration::from_secs(10 * 365 * 24 * 3600))?;
        let agent_cert = ca.identity_certificate(
            berth_tls::Identity::Instance(instance),
            berth_service::pki::CERT_VALIDITY,
        )?;
        let agent = Agent::connect(AgentSettings {
            relay_url: relay_url.clone(),
            tls: berth_tls::ClientTls::from_pem(
                ca.pem(),
                &agent_cert.cert_pem,
                &agent_cert.key_pem,
            )?,
            credential,
            // The service signs commands with its credential key.
            service_key: app.credential_public_key_pem(),
            instance,
            docker_host: opts.docker_host.clone(),
            pods: PodSettings {
                state_dir: Some(
                    opts.pods
                        .state_dir
                        .clone()
                        .unwrap_or_else(|| data.join("agent")),
                ),
                ..opts.pods.clone()
            },
        })
        .await
        .context("connecting to the local Docker engine")?;
        // Every project but admin (which has this host) gets an instance of its own on
        // its first container: an agent container on this host's engine.
        app.enable_docker_instances(DockerOptions {
            host_instance: instance,
            address: opts.advertise_address.to_string(),
            image: opts.agent_image.clone(),
            relay_url: relay_url.clone(),
            docker_socket: docker_socket_path(opts.docker_host.as_deref()),
            network: None,
            labels: Default::default(),
        })
        .await
        .context("enabling instances on demand")?;
        write_client_config(&data, &public_url, &admin_password)?;
        let (docker_addr, docker_tls_addr) = (app.docker_addr(), app.docker_tls_addr());
        Ok(Embedded {
            app,
            relay,
            agent,
            public_url,
            relay_url,
            instance,
            data_dir: data,
            admin_password,
            docker_addr,
            docker_tls_addr,
        })
    }

    /// Runs until one part stops (which is an error) .
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tokio::select! {
            r = self.app.run_until_stopped() => r.context("the API stopped"),
            r = self.relay.run_until_stopped() => r.context("the relay stopped"),
            r = self.agent.run_until_stopped() => r.context("the agent stopped"),
        }
    }
}

/// The path of the engine's socket on this host, to mount into agent containers: that of
/// a `unix://` (or plain path) engine address, else the engine's default.
fn docker_socket_path(docker_host: Option<&str>) -> String {
    match docker_host {
        Some(h) if h.starts_with("unix://") => h.trim_start_matches("unix://").to_owned(),
        Some(h) if h.starts_with('/') => h.to_owned(),
        _ => "/var/run/docker.sock".to_owned(),
    }
}

/// The admin password: made on first start and kept in the data directory.
fn admin_password(data: &Path) -> anyhow::Result<String> {
    let path = data.join("admin-password");
    if let Ok(p) = std::fs::read_to_string(&path) {
        return Ok(p.trim().to_owned());
    }
    let p = generate_password();
    write_private(&path, p.as_bytes())?;
    Ok(p)
}

/// Writes `openrc` and `clouds.yaml` for the current API address.
fn write_client_config(data: &Path, public_url: &str, password: &str) -> anyhow::Result<()> {
    let auth_url = format!("{public_url}/identity/v3");
    let openrc = format!(
        "# Berth admin credentials: source this file.\n\
         export OS_AUTH_URL={auth_url}\n\
         export OS_USERNAME=admin\n\
         export OS_PASSWORD='{password}'\n\
         export OS_PROJECT_NAME=admin\n\
         export OS_USER_DOMAIN_NAME=Default\n\
         export OS_PROJECT_DOMAIN_NAME=Default\n\
         export OS_IDENTITY_API_VERSION=3\n\
         export OS_REGION_NAME=RegionOne\n"
    );
    write_private(&data.join("openrc"), openrc.as_bytes())?;
    let clouds = format!(
        "clouds:\n  berth:\n    auth:\n      auth_url: {auth_url}\n      username: admin\n      password: '{password}'\n      project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    identity_api_version: 3\n"
    );
    write_private(&data.join("clouds.yaml"), clouds.as_bytes())?;
    Ok(())
}
