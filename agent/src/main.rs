//! `berth-agent`: reads its configuration, sets up logging and runs the agent library.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use berth_agent::{Agent, AgentSettings, CredentialSource};
use clap::Parser;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

/// Berth's agent: runs in an instance, dials the relay and drives the local Docker engine.
///
/// Settings come from the flags (or their environment variables), then from the
/// configuration file; a flag wins over the file.
#[derive(Debug, Parser)]
#[command(name = "berth-agent", version)]
struct Cli {
    /// TOML file with keys relay_url (or relay_urls, a list), credential, instance, docker_host, service_url,
    /// enrollment_token and credential_file.
    #[arg(long, value_name = "FILE", env = "BERTH_AGENT_CONFIG")]
    config: Option<PathBuf>,

    /// Relay base URL, e.g. wss://127.0.0.1:9518.
    #[arg(long, value_name = "URL", env = "BERTH_AGENT_RELAY_URL")]
    relay_url: Option<String>,

    /// Several relays, separated by commas (wss://a:9518,wss://b:9518); the agent uses
    /// any one and moves to the next when its connection is lost. Wins over --relay-url.
    #[arg(long, value_name = "URLS", env = "BERTH_AGENT_RELAY_URLS")]
    relay_urls: Option<String>,

    /// Credential issued at enrollment (sent as a bearer token).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BERTH_AGENT_CREDENTIAL",
        hide_env_values = true
    )]
    credential: Option<String>,

    /// The instance this agent acts for.
    #[arg(long, value_name = "UUID", env = "BERTH_AGENT_INSTANCE")]
    instance: Option<Uuid>,

    /// The service's public key that signs every command (PEM, or the one-line
    /// service_key that register-host prints); default: the one the enrollment
    /// answer carried.
    #[arg(long, value_name = "KEY", env = "BERTH_AGENT_SERVICE_KEY")]
    service_key: Option<String>,

    /// File with the service's public key (PEM, as `berth-service relay-key` prints it).
    #[arg(long, value_name = "FILE", env = "BERTH_AGENT_SERVICE_KEY_FILE")]
    service_key_file: Option<PathBuf>,

    /// The deployment's CA certificate (PEM file): the relay's certificate must chain
    /// to it. Default: the CA the enrollment answer carried.
    #[arg(long, value_name = "FILE", env = "BERTH_AGENT_CA_CERT")]
    ca_cert: Option<PathBuf>,

    /// The CA certificate itself (PEM text), for agents configured through their
    /// environment (the docker provider's agent containers).
    #[arg(long, value_name = "PEM", env = "BERTH_AGENT_CA_CERT_PEM")]
    ca_cert_pem: Option<String>,

    /// The agent's TLS client certificate (PEM file), naming its instance
    /// (`register-host --agent-tls-dir` writes one). Default: the enrolled one.
    #[arg(long, value_name = "FILE", env = "BERTH_AGENT_TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// Its private key (PEM file).
    #[arg(long, value_name = "FILE", env = "BERTH_AGENT_TLS_KEY")]
    tls_key: Option<PathBuf>,

    /// Docker engine address (unix:///path, tcp://host:port or a socket path);
    /// default: DOCKER_HOST, else /var/run/docker.sock.
    #[arg(long, value_name = "ADDRESS", env = "BERTH_AGENT_DOCKER_HOST")]
    docker_host: Option<String>,

    /// The Berth service's base URL, where the agent enrolls (without a credential).
    #[arg(long, value_name = "URL", env = "BERTH_AGENT_SERVICE_URL")]
    service_url: Option<String>,

    /// One-time enrollment token, traded at the service for a credential.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BERTH_AGENT_ENROLLMENT_TOKEN",
        hide_env_values = true
    )]
    enrollment_token: Option<String>,

    /// File where the credential got at enrollment is kept (mode 0600) and read on
    /// restart, so that the agent does not need a new token.
    #[arg(long, value_name = "FILE", env = "BERTH_AGENT_CREDENTIAL_FILE")]
    credential_file: Option<PathBuf>,

    /// Directory where the agent keeps its pods' desired specs, restart counts and
    /// backoff, so that it reconciles them across its own restarts; default: a
    /// directory named after the instance under the system's temporary directory.
    #[arg(long, value_name = "DIR", env = "BERTH_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// First crash-loop back-off period of pod containers, in milliseconds (kubelet: 10000).
    #[arg(
        long,
        value_name = "MS",
        env = "BERTH_AGENT_POD_BACKOFF_BASE_MS",
        default_value_t = 10_000
    )]
    pod_backoff_base_ms: u64,

    /// Longest crash-loop back-off period, in milliseconds (kubelet: 300000).
    #[arg(
        long,
        value_name = "MS",
        env = "BERTH_AGENT_POD_BACKOFF_MAX_MS",
        default_value_t = 300_000
    )]
    pod_backoff_max_ms: u64,

    /// A pod container that ran this long starts its back-off afresh, in milliseconds
    /// (kubelet: 600000).
    #[arg(
        long,
        value_name = "MS",
        env = "BERTH_AGENT_POD_BACKOFF_RESET_MS",
        default_value_t = 600_000
    )]
    pod_backoff_reset_ms: u64,

    /// Image of each pod's infra container (holds the network namespace and ports).
    #[arg(long, value_name = "IMAGE", env = "BERTH_AGENT_POD_INFRA_IMAGE", default_value = berth_agent::pods::DEFAULT_INFRA_IMAGE)]
    pod_infra_image: String,

    /// Command of the infra container, words separated by spaces (it must block
    /// forever); default: the image's own.
    #[arg(long, value_name = "COMMAND", env = "BERTH_AGENT_POD_INFRA_COMMAND")]
    pod_infra_command: Option<String>,

    /// Seconds a pod container may take to stop after SIGTERM before it is killed.
    #[arg(
        long,
        value_name = "SECS",
        env = "BERTH_AGENT_POD_STOP_GRACE_SECS",
        default_value_t = 10
    )]
    pod_stop_grace_secs: u64,
}

/// The configuration file; every key may instead come from a flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    relay_url: Option<String>,
    relay_urls: Option<Vec<String>>,
    credential: Option<String>,
    instance: Option<Uuid>,
    service_key_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    docker_host: Option<String>,
    service_url: Option<String>,
    enrollment_token: Option<String>,
    credential_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
}

impl FileConfig {
    fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("the configuration file {} is not valid", path.display()))
    }
}

/// The merged configuration, before a credential is obtained.
#[derive(Debug)]
struct Config {
    relay_url: Option<String>,
    instance: Uuid,
    /// The service key given outright or read from its file.
    service_key: Option<String>,
    /// The CA certificate (PEM) given outright or read from its file.
    ca_pem: Option<String>,
    /// The client certificate and key (PEM) read from their files.
    identity: Option<(String, String)>,
    docker_host: Option<String>,
    credentials: CredentialSource,
    pods: berth_agent::PodSettings,
}

fn missing(key: &str, flag: &str, env: &str) -> anyhow::Error {
    anyhow!("no {key} given: pass --{flag}, set {env}, or put `{key}` in the --config file")
}

/// Merge flags over the file; say exactly where a missing setting can be given.
fn config(cli: Cli) -> anyhow::Result<Config> {
    let file = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let pods = berth_agent::PodSettings {
        state_dir: cli.state_dir.or(file.state_dir),
        backoff_base: std::time::Duration::from_millis(cli.pod_backoff_base_ms),
        backoff_max: std::time::Duration::from_millis(cli.pod_backoff_max_ms),
        backoff_reset: std::time::Duration::from_millis(cli.pod_backoff_reset_ms),
        infra_image: cli.pod_infra_image,
        infra_command: cli
            .pod_infra_command
            .map(|c| c.split_whitespace().map(str::to_owned).collect())
            .filter(|words: &Vec<String>| !words.is_empty()),
        stop_grace: std::time::Duration::from_secs(cli.pod_stop_grace_secs),
        ..Default::default()
    };
    let service_key = match (
        cli.service_key,
        cli.service_key_file.or(file.service_key_file),
    ) {
        (Some(key), _) => Some(key),
        (None, Some(path)) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the service key file {}", path.display()))?,
        ),
        (None, None) => None,
    };
    let read = |what: &str, path: PathBuf| {
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let ca_pem = match (cli.ca_cert_pem, cli.ca_cert.or(file.ca_cert)) {
        (Some(pem), _) => Some(pem),
        (None, Some(path)) => Some(read("CA certificate", path)?),
        (None, None) => None,
    };
    let identity = match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some((
            read("TLS certificate", cert)?,
            read("TLS key", key)?,
        )),
        (None, None) => None,
        _ => anyhow::bail!(
            "give both --tls-cert and --tls-key (BERTH_AGENT_TLS_CERT, BERTH_AGENT_TLS_KEY), or neither"
        ),
    };
    Ok(Config {
        pods,
        service_key,
        ca_pem,
        identity,
        relay_url: cli
            .relay_urls
            .or(cli.relay_url)
            .or(file.relay_urls.map(|urls| urls.join(",")))
            .or(file.relay_url),
        instance: cli
            .instance
            .or(file.instance)
            .ok_or_else(|| missing("instance", "instance", "BERTH_AGENT_INSTANCE"))?,
        docker_host: cli.docker_host.or(file.docker_host),
        credentials: CredentialSource {
            credential: cli.credential.or(file.credential),
            credential_file: cli.credential_file.or(file.credential_file),
            enrollment_token: cli.enrollment_token.or(file.enrollment_token),
            service_url: cli.service_url.or(file.service_url),
        },
    })
}

/// Obtain the credential (enrolling if need be) and settle the relay URL: the
/// configured one, else the one the enrollment answer named.
async fn settings(config: Config) -> anyhow::Result<AgentSettings> {
    let obtained = config.credentials.obtain(config.instance).await?;
    // The relay connection is TLS only: the CA and the agent's certificate come from
    // the settings, else from the enrollment.
    let enrolled = obtained.tls.clone();
    let ca_pem = config
        .ca_pem
        .or_else(|| enrolled.as_ref().map(|t| t.ca_pem.clone()))
        .ok_or_else(|| {
            anyhow!(
                "no CA certificate: pass --ca-cert FILE (BERTH_AGENT_CA_CERT, or `ca_cert` in the \
                 --config file); an agent that enrolls gets it from the service"
            )
        })?;
    let (cert_pem, key_pem) = config
        .identity
        .or_else(|| enrolled.map(|t| (t.cert_pem, t.key_pem)))
        .ok_or_else(|| {
            anyhow!(
                "no TLS client certificate: pass --tls-cert and --tls-key (BERTH_AGENT_TLS_CERT, \
                 BERTH_AGENT_TLS_KEY; `register-host --agent-tls-dir` writes them); an agent \
                 that enrolls gets one from the service"
            )
        })?;
    let tls = berth_tls::ClientTls::from_pem(&ca_pem, &cert_pem, &key_pem)
        .context("the agent's TLS configuration")?;
    Ok(AgentSettings {
        tls,
        relay_url: config
            .relay_url
            .or(obtained.relay_url)
            .ok_or_else(|| missing("relay_url", "relay-url", "BERTH_AGENT_RELAY_URL"))?,
        credential: obtained.credential,
        service_key: config.service_key.or(obtained.service_key).ok_or_else(|| {
            anyhow!(
                "no service key given: pass --service-key-file (BERTH_AGENT_SERVICE_KEY_FILE, or \
                 `service_key_file` in the --config file) with the output of \
                 `berth-service relay-key`, or --service-key (BERTH_AGENT_SERVICE_KEY); an \
                 agent that enrolls gets it from the service"
            )
        })?,
        instance: config.instance,
        docker_host: config.docker_host,
        pods: config.pods,
    })
}

/// `berth-agent pause`: do nothing until SIGTERM or SIGINT. The agent's image serves as
/// the infra container of pods this way (it holds the pod's namespaces and ports).
async fn pause() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("pause") {
        return pause().await;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let settings = settings(config(Cli::parse())?).await?;
    let instance = settings.instance;
    let agent = Agent::connect(settings).await?;
    tracing::info!(instance.id = %instance, "berth-agent started");
    tokio::select! {
        result = agent.run_until_stopped() => result,
        signal = tokio::signal::ctrl_c() => {
            signal.context("cannot listen for Ctrl-C")?;
            tracing::info!(instance.id = %instance, "berth-agent stopping");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("berth-agent").chain(args.iter().copied())).unwrap()
    }

    #[tokio::test]
    async fn flags_override_the_configuration_file() {
        let instance = Uuid::new_v4();
        let mut file = tempfile_in_target();
        writeln!(
            file.1,
            "relay_url = \"ws://file:1\"\ncredential = \"from-file\"\ninstance = \"{instance}\""
        )
        .unwrap();
        let path = file.0.to_str().unwrap().to_owned();
        let tls = TestTls::new(instance);
        let mut args = vec![
            "--config",
            &path,
            "--relay-url",
            "wss://flag:2",
            "--service-key",
            "k",
        ];
        args.extend(tls.args());
        let settings = settings(config(cli(&args)).unwrap()).await.unwrap();
        assert_eq!(settings.relay_url, "wss://flag:2");
        assert_eq!(settings.credential, "from-file");
        assert_eq!(settings.instance, instance);
        assert_eq!(settings.docker_host, None);
        std::fs::remove_file(&file.0).unwrap();
    }

    #[test]
    fn a_missing_setting_names_the_flag_the_variable_and_the_key() {
        let err = config(cli(&["--relay-url", "ws://x:1", "--credential", "c"])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--instance") && text.contains("BERTH_AGENT_INSTANCE"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn without_a_relay_url_or_an_enrollment_the_error_names_relay_url() {
        let id = Uuid::new_v4();
        let instance = id.to_string();
        let tls = TestTls::new(id);
        let mut args = vec!["--instance", &instance, "--credential", "c"];
        args.extend(tls.args());
        let config = config(cli(&args)).unwrap();
        let text = settings(config).await.unwrap_err().to_string();
        assert!(text.contains("BERTH_AGENT_RELAY_URL"), "{text}");
    }

    #[tokio::test]
    async fn without_tls_material_or_an_enrollment_the_error_names_the_ca_and_certificate_flags() {
        let instance = Uuid::new_v4().to_string();
        let args = [
            "--instance",
            &instance,
            "--credential",
            "c",
            "--relay-url",
            "wss://r:1",
        ];
        let text = settings(config(cli(&args)).unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("--ca-cert") && text.contains("BERTH_AGENT_CA_CERT"),
            "{text}"
        );
        let tls = TestTls::new(Uuid::new_v4());
        let ca = tls.dir.join("ca.pem").display().to_string();
        let mut args = args.to_vec();
        args.extend(["--ca-cert", &ca]);
        let text = settings(config(cli(&args)).unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("--tls-cert") && text.contains("--tls-key"),
            "{text}"
        );
    }

    /// A CA and a client certificate for an instance, in files.
    struct TestTls {
        dir: PathBuf,
        paths: Vec<String>,
    }

    impl TestTls {
        fn new(instance: Uuid) -> TestTls {
            let day = std::time::Duration::from_secs(86_400);
            let ca = berth_tls::Ca::generate("test", day).unwrap();
            let made = ca
                .identity_certificate(berth_tls::Identity::Instance(instance), day)
                .unwrap();
            let dir = std::env::temp_dir().join(format!("berth-agent-tls-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
            std::fs::write(dir.join("cert.pem"), &made.cert_pem).unwrap();
            std::fs::write(dir.join("key.pem"), &made.key_pem).unwrap();
            let paths = ["ca.pem", "cert.pem", "key.pem"]
                .iter()
                .map(|f| dir.join(f).display().to_string())
                .collect();
            TestTls { dir, paths }
        }

        fn args(&self) -> Vec<&str> {
            vec![
                "--ca-cert",
                &self.paths[0],
                "--tls-cert",
                &self.paths[1],
                "--tls-key",
                &self.paths[2],
            ]
        }
    }

    impl Drop for TestTls {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn enrollment_keys_are_read_from_the_configuration_file() {
        let text = "instance = \"00000000-0000-0000-0000-000000000001\"\n\
                    service_url = \"http://svc:9517\"\n\
                    enrollment_token = \"tok\"\n\
                    credential_file = \"/var/lib/berth-agent/credential\"\n";
        let file: FileConfig = toml::from_str(text).unwrap();
        assert_eq!(file.service_url.as_deref(), Some("http://svc:9517"));
        assert_eq!(file.enrollment_token.as_deref(), Some("tok"));
        assert_eq!(
            file.credential_file.as_deref(),
            Some(Path::new("/var/lib/berth-agent/credential"))
        );
    }

    #[test]
    fn unknown_keys_in_the_configuration_file_are_refused() {
        assert!(toml::from_str::<FileConfig>("relay = \"ws://x\"").is_err());
    }

    /// A scratch file under the system temp directory, unique per test run.
    fn tempfile_in_target() -> (PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!("berth-agent-test-{}.toml", Uuid::new_v4()));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }
}
