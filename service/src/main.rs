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
    /// PKI directory for the relay TLS ([tls] dir): the deployment's CA (made there if
    /// missing); `pki init` makes one with the relay's certificate too.
    #[arg(long, env = "BERTH_SERVICE_TLS_DIR", global = true)]
    tls_dir: Option<PathBuf>,
    /// URL clients reach the API at.
    #[arg(long, env = "BERTH_SERVICE_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    /// An external Keystone's v3 URL ([identity] keystone_url): Berth then validates
    /// tokens there and issues none itself.
    #[arg(long, env = "BERTH_SERVICE_KEYSTONE_URL", global = true)]
    keystone_url: Option<String>,
    /// Berth's service user in that Keystone (default `berth`).
    #[arg(long, env = "BERTH_SERVICE_KEYSTONE_USERNAME", global = true)]
    keystone_username: Option<String>,
    /// The service user's password (prefer the variable or the file to the flag).
    #[arg(
        long,
        env = "BERTH_SERVICE_KEYSTONE_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    keystone_password: Option<String>,
    /// The service user's project (default `service`).
    #[arg(long, env = "BERTH_SERVICE_KEYSTONE_PROJECT", global = true)]
    keystone_project: Option<String>,
    /// The service user's domain id (default `default`).
    #[arg(long, env = "BERTH_SERVICE_KEYSTONE_USER_DOMAIN_ID", global = true)]
    keystone_user_domain_id: Option<String>,
    /// The service project's domain id (default `default`).
    #[arg(long, env = "BERTH_SERVICE_KEYSTONE_PROJECT_DOMAIN_ID", global = true)]
    keystone_project_domain_id: Option<String>,
    /// Seconds a validated Keystone token is trusted before asking again (default
    /// 300, never past the token's expiry; 0: ask every time).
    #[arg(long, env = "BERTH_SERVICE_TOKEN_CACHE_TTL", global = true)]
    token_cache_ttl: Option<u64>,
    /// Directory of Keystone's JWS public keys, for checking JWS tokens offline first.
    #[arg(long, env = "BERTH_SERVICE_JWS_PUBLIC_KEYS_DIR", global = true)]
    jws_public_keys_dir: Option<PathBuf>,
    /// Where new instances come from: `nova` boots a Nova server per instance
    /// ([nova] in the file; credentials from it or from OS_* / OS_CLOUD).
    #[arg(long, env = "BERTH_SERVICE_INSTANCE_PROVIDER", global = true)]
    instance_provider: Option<String>,
    /// [nova] image (id or name): Docker, cloud-init and berth-agent (docs/nova.md).
    #[arg(long, env = "BERTH_SERVICE_NOVA_IMAGE", global = true)]
    nova_image: Option<String>,
    /// [nova] flavor (id or name).
    #[arg(long, env = "BERTH_SERVICE_NOVA_FLAVOR", global = true)]
    nova_flavor: Option<String>,
    /// [nova] network (id or name).
    #[arg(long, env = "BERTH_SERVICE_NOVA_NETWORK", global = true)]
    nova_network: Option<String>,
    /// [nova] key pair.
    #[arg(long, env = "BERTH_SERVICE_NOVA_KEY_NAME", global = true)]
    nova_key_name: Option<String>,
    /// [nova] availability zone.
    #[arg(long, env = "BERTH_SERVICE_NOVA_AVAILABILITY_ZONE", global = true)]
    nova_availability_zone: Option<String>,
    /// [nova] seconds a server may take to become ACTIVE (default 600).
    #[arg(long, env = "BERTH_SERVICE_NOVA_BOOT_TIMEOUT", global = true)]
    nova_boot_timeout: Option<u64>,
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
        /// The project the host belongs to (default: the admin project). With an
        /// external Keystone this is required: a Keystone project id.
        #[arg(long)]
        project_id: Option<String>,
        /// The project's name, recorded with an external Keystone's project id until
        /// a token of the project brings the name Keystone has.
        #[arg(long, requires = "project_id")]
        project_name: Option<String>,
        /// Directory to write the agent's TLS files into: ca.pem, agent-cert.pem and
        /// agent-key.pem (mode 0600), a client certificate naming the instance. Their
        /// paths are printed as ca_cert=, tls_cert= and tls_key=.
        #[arg(long, value_name = "DIR")]
        agent_tls_dir: PathBuf,
    },
    /// The deployment's PKI (docs/TLS.md).
    #[command(subcommand)]
    Pki(PkiCmd),
    /// Print the public key relays verify credentials with.
    RelayKey,
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Make (or complete) a PKI directory: ca.pem and ca-key.pem (kept when present),
    /// relay-cert.pem/relay-key.pem for the relay's names and
    /// service-cert.pem/service-key.pem (both made afresh). Point the relay at it with
    /// --tls-dir, the service with --tls-dir ([tls] dir).
    Init {
        /// The directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A DNS name or IP address agents and services dial the relay at (repeat);
        /// default: localhost and 127.0.0.1.
        #[arg(long = "relay-name", value_name = "NAME")]
        relay_names: Vec<String>,
    },
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
    if let Some(dir) = &cli.tls_dir {
        let section = table
            .entry("tls")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .context("`tls` in the settings file must be a table ([tls])")?;
        section.insert("dir".into(), toml::Value::String(dir.display().to_string()));
    }
    let identity = [
        (
            "keystone_url",
            cli.keystone_url.clone().map(toml::Value::String),
        ),
        (
            "username",
            cli.keystone_username.clone().map(toml::Value::String),
        ),
        (
            "password",
            cli.keystone_password.clone().map(toml::Value::String),
        ),
        (
            "project_name",
            cli.keystone_project.clone().map(toml::Value::String),
        ),
        (
            "user_domain_id",
            cli.keystone_user_domain_id.clone().map(toml::Value::String),
        ),
        (
            "project_domain_id",
            cli.keystone_project_domain_id
                .clone()
                .map(toml::Value::String),
        ),
        (
            "cache_ttl_secs",
            cli.token_cache_ttl
                .map(|t| toml::Value::Integer(t.min(i64::MAX as u64) as i64)),
        ),
        (
            "jws_public_keys_dir",
            cli.jws_public_keys_dir
                .as_ref()
                .map(|p| toml::Value::String(p.display().to_string())),
        ),
    ];
    if identity.iter().any(|(_, v)| v.is_some()) {
        let section = table
            .entry("identity")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .context("`identity` in the settings file must be a table ([identity])")?;
        for (k, v) in identity {
            if let Some(v) = v {
                section.insert(k.into(), v);
            }
        }
    }
    if let Some(p) = &cli.instance_provider {
        table.insert("instance_provider".into(), toml::Value::String(p.clone()));
    }
    let nova = [
        ("image", cli.nova_image.clone().map(toml::Value::String)),
        ("flavor", cli.nova_flavor.clone().map(toml::Value::String)),
        ("network", cli.nova_network.clone().map(toml::Value::String)),
        (
            "key_name",
            cli.nova_key_name.clone().map(toml::Value::String),
        ),
        (
            "availability_zone",
            cli.nova_availability_zone.clone().map(toml::Value::String),
        ),
        (
            "boot_timeout_secs",
            cli.nova_boot_timeout
                .map(|t| toml::Value::Integer(t.min(i64::MAX as u64) as i64)),
        ),
    ];
    if nova.iter().any(|(_, v)| v.is_some()) {
        let section = table
            .entry("nova")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .context("`nova` in the settings file must be a table ([nova])")?;
        for (k, v) in nova {
            if let Some(v) = v {
                section.insert(k.into(), v);
            }
        }
    }
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
    // Making a PKI directory needs no settings, database or relay.
    if let Some(Cmd::Pki(PkiCmd::Init { dir, relay_names })) = &cli.command {
        let names = if relay_names.is_empty() {
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
        } else {
            relay_names.clone()
        };
        berth_service::pki::init_dir(dir, &names)?;
        println!("{}", dir.display());
        return Ok(());
    }
    let settings = settings(&cli)?;
    let external_keystone = settings.identity.keystone_url.clone();
    let app = Application::build(settings).await?;
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => {
            tokio::select! {
                r = app.run_until_stopped() => r?,
                _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
            }
        }
        Cmd::Bootstrap { .. } if external_keystone.is_some() => {
            anyhow::bail!(
                "nothing to bootstrap: identity comes from the Keystone at {}; create projects and users there",
                external_keystone.unwrap_or_default()
            );
        }
        Cmd::Bootstrap { admin_password } => {
            let account = app.ensure_admin(&admin_password).await?;
            println!(
                "admin project {} ({})",
                account.project_id,
                if account.created { "created" } else { "exists" }
            );
        }
        Cmd::RegisterHost {
            name,
            address,
            project_id,
            project_name,
            agent_tls_dir,
        } => {
            let project = match (project_id, &external_keystone) {
                (Some(id), Some(_)) => {
                    // The project lives in Keystone; its shadow row is what the
                    // instance references until the project's first request.
                    let (pid, name) = (id.clone(), project_name.unwrap_or_else(|| id.clone()));
                    app.db()
                        .run(move |c| {
                            berth_service::identity::keystone::shadow::upsert_project(
                                c, &pid, &name, "default",
                            )
                        })
                        .await?;
                    id
                }
                (Some(id), None) => {
                    let pid = id.clone();
                    let known = app
                        .db()
                        .run(move |c| berth_service::db::identity::project(c, &pid))
                        .await?;
                    anyhow::ensure!(known.is_some(), "no project has the id {id}");
                    id
                }
                (None, Some(url)) => anyhow::bail!(
                    "--project-id is required: with the external Keystone at {url}, a host belongs to one of its projects"
                ),
                (None, None) => {
                    app.ensure_admin(&berth_service::startup::generate_password())
                        .await?
                        .project_id
                }
            };
            let id = app
                .ensure_static_instance(&project, &name, &address)
                .await?;
            let credential =
                app.mint_agent_credential(id, Duration::from_secs(10 * 365 * 24 * 3600))?;
            // The key that signs commands, as one line of base64 (the PEM body): give it
            // to the agent as BERTH_AGENT_SERVICE_KEY (it also takes the PEM).
            let pem = app.credential_public_key_pem();
            let service_key: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            println!("instance={id}\ncredential={credential}\nservice_key={service_key}");
            // The agent's TLS: a client certificate naming the instance, and the CA
            // that the relay's certificate chains to.
            let made = app.pki().ca().identity_certificate(
                berth_tls::Identity::Instance(id),
                // As long as the credential printed above.
                Duration::from_secs(10 * 365 * 24 * 3600),
            )?;
            let files = berth_tls::TlsFiles::in_dir(&agent_tls_dir, "agent");
            std::fs::create_dir_all(&agent_tls_dir)
                .with_context(|| format!("creating {}", agent_tls_dir.display()))?;
            std::fs::write(&files.ca_cert, app.pki().ca_pem())
                .with_context(|| format!("writing {}", files.ca_cert.display()))?;
            berth_service::pki::write_pair(&files, &made.cert_pem, &made.key_pem)?;
            println!(
                "ca_cert={}\ntls_cert={}\ntls_key={}",
                files.ca_cert.display(),
                files.cert.display(),
                files.key.display()
            );
        }
        Cmd::RelayKey => print!("{}", app.credential_public_key_pem()),
        Cmd::Pki(_) => unreachable!("handled before the settings are read"),
    }
    Ok(())
}
