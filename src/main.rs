//! `berth`: the all-in-one binary. `berth up` runs the service, a relay and an agent
//! for this host in one process, with SQLite under a data directory.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_agent::{Agent, AgentSettings};
use berth_relay::{Relay, RelaySettings};
use berth_service::identity::keys::{write_private, SigningKey};
use berth_service::startup::{generate_password, CREDENTIAL_KEY_FILE};
use berth_service::{Application, ServiceSettings};
use clap::{Parser, Subcommand};

/// Berth: multi-tenant containers for OpenStack clouds.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run everything on this machine: API, relay and an agent for the local Docker engine.
    Up(UpArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// Where state lives: the SQLite database, keys, openrc and clouds.yaml.
    #[arg(long, default_value = ".berth", env = "BERTH_DATA_DIR")]
    data_dir: PathBuf,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:9517", env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Where the relay listens.
    #[arg(long, default_value = "127.0.0.1:9518", env = "BERTH_RELAY_LISTEN")]
    relay_listen: SocketAddr,
    /// The address at which published ports of this host's containers are reached.
    #[arg(long, default_value = "127.0.0.1", env = "BERTH_ADVERTISE_ADDRESS")]
    advertise_address: IpAddr,
    /// Use this database instead of SQLite under the data directory (postgres://...).
    #[arg(long, env = "BERTH_DATABASE_URL")]
    database_url: Option<String>,
    /// The Docker engine to drive (default: DOCKER_HOST or the local socket).
    #[arg(long, env = "BERTH_DOCKER_HOST")]
    docker_host: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Cmd::Up(args) => up(args).await,
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data = args.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating the data directory {}", data.display()))?;
    let data = data.canonicalize()?;
    let keys_dir = data.join("keys");
    let credential_key = SigningKey::load_or_create(&keys_dir.join(CREDENTIAL_KEY_FILE))?;

    let relay = Relay::bind(RelaySettings::new(
        args.relay_listen,
        credential_key.public_key_pem(),
    ))
    .await
    .with_context(|| format!("starting the relay on {}", args.relay_listen))?;
    let relay_url = format!("ws://{}", relay.local_addr());

    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data.join("berth.sqlite").display()));
    let public_ip = if args.listen.ip().is_unspecified() {
        args.advertise_address
    } else {
        args.listen.ip()
    };
    let app = Application::build(ServiceSettings {
        listen: args.listen,
        // With port 0 the port is known only after binding; the service then derives
        // its URL from the listener.
        public_url: (args.listen.port() != 0)
            .then(|| format!("http://{}", SocketAddr::new(public_ip, args.listen.port()))),
        database_url,
        relay_url: relay_url.clone(),
        keys_dir,
        token_ttl: Duration::from_secs(3600),
        region: "RegionOne".into(),
    })
    .await?;
    let public_url = app.public_url().to_owned();

    let password = admin_password(&data)?;
    let admin = app.ensure_admin(&password).await?;
    let instance = app
        .ensure_static_instance(
            &admin.project_id,
            "local",
            &args.advertise_address.to_string(),
        )
        .await?;
    let credential =
        app.mint_agent_credential(instance, Duration::from_secs(10 * 365 * 24 * 3600))?;
    let agent = Agent::connect(AgentSettings {
        relay_url: relay_url.clone(),
        credential,
        instance,
        docker_host: args.docker_host.clone(),
    })
    .await
    .context("connecting to the local Docker engine")?;
    write_client_config(&data, &public_url, &password)?;

    println!("Berth is up.");
    println!("  API:      {public_url}/v1 (identity {public_url}/identity/v3)");
    println!("  relay:    {relay_url}");
    println!("  instance: {instance} (this host, project admin)");
    println!("  openrc:   {}", data.join("openrc").display());
    println!(
        "Try:  source {}/openrc && osc container-list",
        data.display()
    );

    tokio::select! {
        r = app.run_until_stopped() => r.context("the API stopped")?,
        r = relay.run_until_stopped() => r.context("the relay stopped")?,
        r = agent.run_until_stopped() => r.context("the agent stopped")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
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
