//! `berth-service`: the API service on its own, as a cloud deploys it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_service::{Application, ServiceSettings};
use clap::{Parser, Subcommand};

/// Berth's API service (Zun-compatible API and embedded identity).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML file with the settings (keys as in `ServiceSettings`); flags and
    /// environment override it.
    #[arg(long, env = "BERTH_SERVICE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Where the API listens.
    #[arg(long, env = "BERTH_SERVICE_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// Database URL: sqlite://PATH or postgres://...
    #[arg(long, env = "BERTH_SERVICE_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Relay URL, e.g. ws://relay:9518.
    #[arg(long, env = "BERTH_SERVICE_RELAY_URL", global = true)]
    relay_url: Option<String>,
    /// Directory of the signing keys.
    #[arg(long, env = "BERTH_SERVICE_KEYS_DIR", global = true)]
    keys_dir: Option<PathBuf>,
    /// URL clients reach the API at.
    #[arg(long, env = "BERTH_SERVICE_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the API (the default).
    Serve,
    /// Create the admin project and user if missing (password from BERTH_ADMIN_PASSWORD).
    Bootstrap {
        #[arg(long, env = "BERTH_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
    },
    /// Register a static host as an instance of the admin project and print the
    /// credential its agent connects with.
    RegisterHost {
        /// A name for the host.
        #[arg(long)]
        name: String,
        /// The address published ports are reached at.
        #[arg(long)]
        address: String,
    },
    /// Print the public key relays verify credentials with.
    RelayKey,
}

fn settings(cli: &Cli) -> anyhow::Result<ServiceSettings> {
    let mut table: toml::Table = match &cli.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?,
        None => toml::Table::new(),
    };
    let mut set = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            table.insert(k.into(), toml::Value::String(v));
        }
    };
    set("listen", cli.listen.map(|l| l.to_string()));
    set("database_url", cli.database_url.clone());
    set("relay_url", cli.relay_url.clone());
    set(
        "keys_dir",
        cli.keys_dir.as_ref().map(|p| p.display().to_string()),
    );
    set("public_url", cli.public_url.clone());
    if !table.contains_key("listen") {
        table.insert(
            "listen".into(),
            toml::Value::String("127.0.0.1:9517".into()),
        );
    }
    toml::Value::Table(table).try_into().context(
        "incomplete settings: database_url, relay_url and keys_dir are required (flags, BERTH_SERVICE_* variables or --config)",
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let app = Application::build(settings(&cli)?).await?;
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => {
            tokio::select! {
                r = app.run_until_stopped() => r?,
                _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
            }
        }
        Cmd::Bootstrap { admin_password } => {
            let account = app.ensure_admin(&admin_password).await?;
            println!(
                "admin project {} ({})",
                account.project_id,
                if account.created { "created" } else { "exists" }
            );
        }
        Cmd::RegisterHost { name, address } => {
            let account = app
                .ensure_admin(&berth_service::startup::generate_password())
                .await?;
            let id = app
                .ensure_static_instance(&account.project_id, &name, &address)
                .await?;
            let credential =
                app.mint_agent_credential(id, Duration::from_secs(10 * 365 * 24 * 3600))?;
            println!("instance={id}\ncredential={credential}");
        }
        Cmd::RelayKey => print!("{}", app.credential_public_key_pem()),
    }
    Ok(())
}
