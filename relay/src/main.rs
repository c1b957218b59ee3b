//! `berth-relay`: reads its configuration, sets up logging and runs the relay library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use berth_relay::{Relay, RelaySettings};
use clap::Parser;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

const DEFAULT_LISTEN: &str = "127.0.0.1:9518";

/// Berth's agent relay: agents dial out to it, the service's commands reach them through it.
///
/// Settings come from flags, then environment variables, then the config file, then
/// defaults. Logging follows RUST_LOG (default `info`).
#[derive(Debug, Parser)]
#[command(name = "berth-relay", version)]
struct Cli {
    /// TOML file with any of: listen, credential_public_key, tls_dir, ca_cert,
    /// tls_cert, tls_key, max_connections, request_timeout_secs. Relative paths in it
    /// are relative to the file.
    #[arg(long, env = "BERTH_RELAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9518].
    #[arg(long, env = "BERTH_RELAY_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// PEM file with the service's ES256 public key (BEGIN PUBLIC KEY), which signs agent
    /// and service credentials. Required.
    #[arg(long, env = "BERTH_RELAY_CREDENTIAL_PUBLIC_KEY", value_name = "FILE")]
    credential_public_key: Option<PathBuf>,
    /// PKI directory (`berth-service pki init --dir DIR` makes one): ca.pem,
    /// relay-cert.pem and relay-key.pem. Or give the three files one by one.
    #[arg(long, env = "BERTH_RELAY_TLS_DIR", value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The deployment's CA certificate (PEM): every peer's client certificate must
    /// chain to it.
    #[arg(long, env = "BERTH_RELAY_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The relay's server certificate chain (PEM), naming the host peers dial.
    #[arg(long, env = "BERTH_RELAY_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "BERTH_RELAY_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Most connections open at once [default: 20000].
    #[arg(long, env = "BERTH_RELAY_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Seconds a command may wait for the agent's reply [default: 120].
    #[arg(long, env = "BERTH_RELAY_REQUEST_TIMEOUT_SECS", value_name = "SECONDS")]
    request_timeout_secs: Option<u64>,
}

/// The config file's contents; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    credential_public_key: Option<PathBuf>,
    tls_dir: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_connections: Option<usize>,
    request_timeout_secs: Option<u64>,
}

impl FileConfig {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let mut config: FileConfig = toml::from_str(&text)
            .with_context(|| format!("the config file {} is not valid", path.display()))?;
        if let Some(dir) = path.parent() {
            for file in [
                &mut config.credential_public_key,
                &mut config.tls_dir,
                &mut config.ca_cert,
                &mut config.tls_cert,
                &mut config.tls_key,
            ] {
                if let Some(relative) = file.take() {
                    *file = Some(dir.join(relative));
                }
            }
        }
        Ok(config)
    }
}

fn settings(cli: Cli) -> anyhow::Result<RelaySettings> {
    let file = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let listen = match cli.listen.or(file.listen) {
        Some(listen) => listen,
        None => DEFAULT_LISTEN.parse()?,
    };
    let Some(key_path) = cli.credential_public_key.or(file.credential_public_key) else {
        bail!(
            "no credential public key: pass --credential-public-key FILE, set \
             BERTH_RELAY_CREDENTIAL_PUBLIC_KEY, or set credential_public_key in the config file"
        );
    };
    let pem = std::fs::read_to_string(&key_path).with_context(|| {
        format!(
            "cannot read the credential public key {}",
            key_path.display()
        )
    })?;
    let files = match (
        cli.tls_dir.or(file.tls_dir),
        cli.ca_cert.or(file.ca_cert),
        cli.tls_cert.or(file.tls_cert),
        cli.tls_key.or(file.tls_key),
    ) {
        (_, Some(ca_cert), Some(cert), Some(key)) => berth_tls::TlsFiles { ca_cert, cert, key },
        (Some(dir), None, None, None) => berth_tls::TlsFiles::in_dir(&dir, "relay"),
        _ => bail!(
            "the relay serves TLS only: pass --tls-dir DIR (BERTH_RELAY_TLS_DIR; `berth-service pki init --dir DIR` \
             makes one), or all of --ca-cert, --tls-cert and --tls-key"
        ),
    };
    let tls = berth_tls::ServerTls::from_files(&files)?;
    let mut settings = RelaySettings::new(listen, pem, tls);
    if let Some(max) = cli.max_connections.or(file.max_connections) {
        settings.max_connections = max;
    }
    if let Some(secs) = cli.request_timeout_secs.or(file.request_timeout_secs) {
        settings.request_timeout = Duration::from_secs(secs);
    }
    Ok(settings)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let settings = settings(Cli::parse())?;
    let relay = Relay::bind(settings).await?;
    tokio::select! {
        result = relay.run_until_stopped() => result,
        () = shutdown_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}

/// Completes on Ctrl-C or SIGTERM. Agents and services reconnect to another relay (or
/// this one, restarted); nothing is lost because the relay holds no durable state.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
