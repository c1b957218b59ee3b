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
    /// TOML file with keys relay_url, credential, instance, docker_host, service_url,
    /// enrollment_token and credential_file.
    #[arg(long, value_name = "FILE", env = "BERTH_AGENT_CONFIG")]
    config: Option<PathBuf>,

    /// Relay base URL, e.g. ws://127.0.0.1:9518.
    #[arg(long, value_name = "URL", env = "BERTH_AGENT_RELAY_URL")]
    relay_url: Option<String>,

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
    credential: Option<String>,
    instance: Option<Uuid>,
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
    Ok(Config {
        pods,
        relay_url: cli.relay_url.or(file.relay_url),
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
    Ok(AgentSettings {
        relay_url: config
            .relay_url
            .or(obtained.relay_url)
            .ok_or_else(|| missing("relay_url", "relay-url", "BERTH_AGENT_RELAY_URL"))?,
        credential: obtained.credential,
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
        let settings =
            settings(config(cli(&["--config", &path, "--relay-url", "ws://flag:2"])).unwrap())
                .await
                .unwrap();
        assert_eq!(settings.relay_url, "ws://flag:2");
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
        let instance = Uuid::new_v4().to_string();
        let config = config(cli(&["--instance", &instance, "--credential", "c"])).unwrap();
        let text = settings(config).await.unwrap_err().to_string();
        assert!(text.contains("BERTH_AGENT_RELAY_URL"), "{text}");
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
