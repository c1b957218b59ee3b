//! The service's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Everything the service needs to start. Built by the binary from a file and the
/// environment; the library reads neither.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSettings {
    /// Where the API listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The URL clients reach the API at; defaults to `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// `sqlite://PATH` (or a path) or `postgres://...`.
    pub database_url: String,
    /// The relay to reach agents through, e.g. `ws://127.0.0.1:9518`, or several
    /// separated by commas: the service connects to each, agents to any one (agents
    /// get the same list at enrollment). See [`ServiceSettings::relay_urls`].
    pub relay_url: String,
    /// Directory holding the token and credential signing keys (made on first start).
    pub keys_dir: PathBuf,
    /// How long issued tokens stay valid.
    #[serde(default = "default_token_ttl", with = "secs")]
    pub token_ttl: Duration,
    /// How long the signed token of each command sent to an agent stays valid
    /// (seconds in the file; default 60). Agents allow 30 s of clock skew on top.
    #[serde(default = "default_command_token_ttl", with = "secs")]
    pub command_token_ttl: Duration,
    /// Region name shown in the catalog.
    #[serde(default = "default_region")]
    pub region: String,
    /// A policy file (YAML or JSON, rule name → rule) overriding the default policy.
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// Where tokens come from: the embedded identity service (the default) or an
    /// external Keystone.
    #[serde(default)]
    pub identity: IdentitySettings,
    /// Where new instances come from: `nova` boots Nova servers ([`NovaSettings`]);
    /// unset, projects run only on registered hosts (and `berth up`'s docker
    /// instances).
    #[serde(default)]
    pub instance_provider: Option<String>,
    /// The `[nova]` section, used when `instance_provider = "nova"`.
    #[serde(default)]
    pub nova: NovaSettings,
    /// How long an instance made on demand may hold no container before it is
    /// released through its provider (seconds in the file).
    #[serde(default = "default_instance_idle_grace", with = "secs")]
    pub instance_idle_grace: Duration,
    /// How long an instance's agent may stay disconnected before its containers are
    /// marked Unknown (seconds in the file).
    #[serde(default = "default_agent_lost_after", with = "secs")]
    pub agent_lost_after: Duration,
    /// How containers are placed on instances, and the size of instances made on demand.
    #[serde(default)]
    pub placement: PlacementSettings,
    /// The Docker-compatible endpoint's listeners (`[docker]`); both off by default.
    #[serde(default)]
    pub docker: DockerSettings,
    /// The `[tls]` section: the deployment's CA and the service's certificate for the
    /// mutually authenticated TLS to relays (required; see [`TlsSettings`]).
    #[serde(default)]
    pub tls: TlsSettings,
    /// The `[docker_instances]` section, used when `instance_provider = "docker"`.
    #[serde(default)]
    pub docker_instances: DockerInstancesSettings,
}

/// The `[docker_instances]` section: how the `docker` provider makes instances — one
/// berth-agent container per instance, made through a registered host instance's agent
/// on that host's engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DockerInstancesSettings {
    /// The registered host instance whose agent makes the agent containers (see
    /// `berth-service register-host`). Required with `instance_provider = "docker"`.
    pub host_instance: Option<uuid::Uuid>,
    /// The host's address: instances publish their containers' ports there.
    pub address: String,
    /// The berth-agent image (`berth-agent:dev`, built by scripts/build-agent-image).
    pub image: String,
    /// The relay URL the agent containers dial (default: the service's `relay_url`).
    /// With `network` set it must be an address reachable from that network.
    pub relay_url: Option<String>,
    /// Path of the engine's socket on the host, mounted into each agent container.
    pub docker_socket: String,
    /// A Docker network the agent containers join instead of the host's network
    /// (None: host networking). On their own network they reach the relay and the
    /// service only through it, so `docker network disconnect` partitions an agent.
    pub network: Option<String>,
    /// More labels on every agent container (e.g. `{ "berth.test" = "<run id>" }`,
    /// so a test run's clean-up finds them); Berth's own labels win on a clash.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Default for DockerInstancesSettings {
    fn default() -> Self {
        DockerInstancesSettings {
            host_instance: None,
            address: "127.0.0.1".into(),
            image: "berth-agent:dev".into(),
            relay_url: None,
            docker_socket: "/var/run/docker.sock".into(),
            network: None,
            labels: Default::default(),
        }
    }
}

/// The `[docker]` section: the Docker-compatible endpoint.
///
/// The plain listener must be a loopback address (token headers travel in clear);
/// other hosts use the TLS listener, whose certificates come from `tls_dir` (a CA and
/// server certificate made there) or from the deployment's own files (`ca_cert`,
/// `ca_key`, `server_cert`, `server_key`, all four).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DockerSettings {
    /// Plain HTTP listener (loopback only), e.g. `127.0.0.1:2375`.
    pub listen: Option<SocketAddr>,
    /// TLS listener, e.g. `0.0.0.0:2376`.
    pub tls_listen: Option<SocketAddr>,
    /// Where a CA of the endpoint's own (`ca.pem`, `ca-key.pem`) and its server
    /// certificate are made and kept; unset (and no `ca_cert`…): the deployment's CA
    /// (`[tls]`) signs the endpoint's certificates, one CA for the whole deployment.
    pub tls_dir: Option<PathBuf>,
    /// The deployment's CA certificate (PEM), which signs client certificates.
    pub ca_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub ca_key: Option<PathBuf>,
    /// The TLS listener's certificate chain (PEM).
    pub server_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub server_key: Option<PathBuf>,
    /// The host name or address clients reach the TLS listener at: `docker_host` in
    /// issued credentials, and a name of the generated server certificate (default:
    /// the listener's address, or the API's host when it listens on all addresses).
    pub public_host: Option<String>,
    /// More names (DNS or IP) for the generated server certificate.
    pub server_names: Vec<String>,
    /// How long client certificates are valid, in days.
    pub client_cert_days: u32,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            listen: None,
            tls_listen: None,
            tls_dir: None,
            ca_cert: None,
            ca_key: None,
            server_cert: None,
            server_key: None,
            public_host: None,
            server_names: Vec::new(),
            client_cert_days: 365,
        }
    }
}

/// The `[tls]` section: relay connections are TLS with client certificates, all of
/// one CA (docs/TLS.md).
///
/// Either `dir`, a PKI directory (`berth-service pki init --dir DIR` makes one; the CA
/// is made there if missing), or the deployment's own `ca_cert` and `ca_key` (the
/// service signs agents' client certificates at enrollment with them). The service's
/// own client certificate (URI `urn:berth:service`) is `cert`/`key` when given, else
/// made by the CA at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// A PKI directory: `ca.pem`, `ca-key.pem`, ….
    pub dir: Option<PathBuf>,
    /// The CA certificate (PEM): relays' certificates must chain to it.
    pub ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM).
    pub ca_key: Option<PathBuf>,
    /// The service's client certificate chain (PEM), naming `urn:berth:service`.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// Which of the instances a container fits on it goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weigher {
    /// The most used instance first, so that fewer instances hold the project's
    /// containers and idle ones can be released.
    #[default]
    Pack,
    /// The least used instance first, so that one instance's failure hits fewer
    /// containers.
    Spread,
}

/// The `[placement]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PlacementSettings {
    /// Pack (default) or spread.
    pub weigher: Weigher,
    /// Virtual CPUs placed per CPU of an instance. Container CPU limits are shares of
    /// time rather than reservations, so they are overcommitted like Nova's default
    /// `cpu_allocation_ratio` (16.0).
    pub cpu_allocation_ratio: f64,
    /// MiB of container memory limits placed per MiB of an instance (1.0: no
    /// overcommit; an instance that swaps slows every container on it).
    pub memory_allocation_ratio: f64,
    /// CPUs of instances made on demand (None: what the provider says).
    pub instance_cpus: Option<f64>,
    /// Memory of instances made on demand, MiB (None: what the provider says).
    pub instance_memory_mib: Option<i64>,
    /// Disk of instances made on demand, GB (None: what the provider says).
    pub instance_disk_gb: Option<i64>,
    /// How long an active instance whose agent is disconnected still takes new
    /// containers (they wait for the agent to come back): the service's
    /// `agent_lost_after`, set at start-up, so a relay restart or a short partition
    /// does not make the project a new instance.
    #[serde(skip)]
    pub agent_lost_after: Duration,
}

impl Default for PlacementSettings {
    fn default() -> Self {
        PlacementSettings {
            weigher: Weigher::Pack,
            cpu_allocation_ratio: 16.0,
            memory_allocation_ratio: 1.0,
            instance_cpus: None,
            instance_memory_mib: None,
            instance_disk_gb: None,
            agent_lost_after: DEFAULT_AGENT_LOST_AFTER,
        }
    }
}

/// Default of [`ServiceSettings::instance_idle_grace`].
pub const DEFAULT_INSTANCE_IDLE_GRACE: Duration = Duration::from_secs(300);
/// Default of [`ServiceSettings::agent_lost_after`].
pub const DEFAULT_AGENT_LOST_AFTER: Duration = Duration::from_secs(120);

fn default_instance_idle_grace() -> Duration {
    DEFAULT_INSTANCE_IDLE_GRACE
}

fn default_agent_lost_after() -> Duration {
    DEFAULT_AGENT_LOST_AFTER
}

/// The `[nova]` section: how the `nova` provider boots instances.
///
/// Credentials: `cloud` (a clouds.yaml entry), else `auth_url` with `username`,
/// `password` and `project_name`, else the `OS_*` environment (including
/// `OS_CLOUD`), as the openstack CLI reads it.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct NovaSettings {
    /// A cloud in clouds.yaml (as `OS_CLOUD`).
    pub cloud: Option<String>,
    /// Keystone's URL, e.g. `https://keystone.example.com/v3`.
    pub auth_url: Option<String>,
    /// The user Berth boots servers as.
    pub username: String,
    /// That user's password.
    pub password: String,
    /// The project the servers belong to (and count against the quota of).
    pub project_name: String,
    /// The user's domain name.
    pub user_domain_name: String,
    /// The project's domain name.
    pub project_domain_name: String,
    /// Region of the compute endpoint (none: the catalog's only one).
    pub region_name: Option<String>,
    /// Image (id or name) with Docker, cloud-init and berth-agent (docs/nova.md).
    pub image: String,
    /// Flavor (id or name).
    pub flavor: String,
    /// Network (id or name); none: Nova's choice (the only network the project
    /// sees, or none).
    pub network: Option<String>,
    /// Key pair for SSH into instances.
    pub key_name: Option<String>,
    /// Availability zone (none: Nova's default).
    pub availability_zone: Option<String>,
    /// How long a server may take to become ACTIVE before it is deleted and its
    /// waiting containers fail.
    pub boot_timeout_secs: u64,
    /// How often the server's status is read while it boots, in milliseconds.
    pub poll_interval_ms: u64,
    /// How long an instance's enrollment token stays valid (it must cover the boot).
    pub enrollment_ttl_secs: u64,
    /// The API URL the agent enrolls at (default: the service's public URL).
    pub service_url: Option<String>,
    /// The relay URL the agent dials (default: the service's `relay_url`).
    pub relay_url: Option<String>,
    /// Where the agent keeps the credential it gets at enrollment.
    pub credential_file: String,
}

impl Default for NovaSettings {
    fn default() -> Self {
        NovaSettings {
            cloud: None,
            auth_url: None,
            username: String::new(),
            password: String::new(),
            project_name: String::new(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            region_name: None,
            image: String::new(),
            flavor: String::new(),
            network: None,
            key_name: None,
            availability_zone: None,
            boot_timeout_secs: 600,
            poll_interval_ms: 2000,
            enrollment_ttl_secs: 1800,
            service_url: None,
            relay_url: None,
            credential_file: "/var/lib/berth/agent-credential".into(),
        }
    }
}

// By hand, so that the password never reaches a log line.
impl std::fmt::Debug for NovaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NovaSettings")
            .field("cloud", &self.cloud)
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("project_name", &self.project_name)
            .field("region_name", &self.region_name)
            .field("image", &self.image)
            .field("flavor", &self.flavor)
            .field("network", &self.network)
            .field("key_name", &self.key_name)
            .field("availability_zone", &self.availability_zone)
            .field("boot_timeout_secs", &self.boot_timeout_secs)
            .field("service_url", &self.service_url)
            .field("relay_url", &self.relay_url)
            .finish_non_exhaustive()
    }
}

/// The `[identity]` section. With `keystone_url` set, Berth validates tokens against
/// that Keystone (as keystonemiddleware does) and serves no tokens of its own.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct IdentitySettings {
    /// Keystone's v3 endpoint, e.g. `http://keystone:5000/v3` (`/v3` is added when
    /// missing). None: the embedded identity service issues and checks tokens.
    pub keystone_url: Option<String>,
    /// Berth's service user in Keystone; it needs the `service` (or `admin`) role to
    /// validate other users' tokens.
    pub username: String,
    /// The service user's password.
    pub password: String,
    /// The project the service user's token is scoped to.
    pub project_name: String,
    /// The service user's domain id.
    pub user_domain_id: String,
    /// The service project's domain id.
    pub project_domain_id: String,
    /// How long a validated token is trusted without asking Keystone again, in
    /// seconds (never past the token's own expiry); 0 disables the cache.
    pub cache_ttl_secs: u64,
    /// A directory of Keystone's JWS public keys (PEM; every file is tried): JWS
    /// tokens are then checked offline first, so forged, tampered or expired tokens
    /// are refused without asking Keystone.
    pub jws_public_keys_dir: Option<PathBuf>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            keystone_url: None,
            username: "berth".into(),
            password: String::new(),
            project_name: "service".into(),
            user_domain_id: "default".into(),
            project_domain_id: "default".into(),
            cache_ttl_secs: 300,
            jws_public_keys_dir: None,
        }
    }
}

// By hand, so that the password never reaches a log line.
impl std::fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("keystone_url", &self.keystone_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("project_name", &self.project_name)
            .field("user_domain_id", &self.user_domain_id)
            .field("project_domain_id", &self.project_domain_id)
            .field("cache_ttl_secs", &self.cache_ttl_secs)
            .field("jws_public_keys_dir", &self.jws_public_keys_dir)
            .finish()
    }
}

impl ServiceSettings {
    /// Every relay named in `relay_url` (comma-separated), trimmed, in order.
    pub fn relay_urls(&self) -> Vec<String> {
        split_relay_urls(&self.relay_url)
    }
}

/// The relays of a comma-separated list, trimmed, empty entries skipped.
pub fn split_relay_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty())
        .collect()
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_command_token_ttl() -> Duration {
    crate::command_signing::DEFAULT_COMMAND_TOKEN_TTL
}

fn default_region() -> String {
    "RegionOne".into()
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
