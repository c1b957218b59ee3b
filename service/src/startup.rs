//! Building and running the service: `Application::build(settings)` binds the listener
//! and connects everything; `run_until_stopped()` serves until shutdown.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use berth_proto::auth::{AgentClaims, ServiceClaims, AGENT_AUDIENCE, SERVICE_AUDIENCE};
use jsonwebtoken::{Algorithm, Header};
use uuid::Uuid;

use crate::agents::Agents;
use crate::db::models::{ProjectRow, RoleAssignmentRow, UserRow};
use crate::db::{self, instances, Db};
use crate::docker_api::certs::{self, Issuer, TlsSource};
use crate::docker_api::DockerShared;
use crate::identity::keys::SigningKey;
use crate::identity::keystone::{self, KeystoneValidator};
use crate::identity::password;
use crate::identity::tokens::TokenSigner;
use crate::lifecycle::Lifecycle;
use crate::providers::docker::{DockerOptions, DockerProvider};
use crate::providers::{static_hosts, Provisioner};
use crate::settings::{DockerSettings, ServiceSettings};
use crate::state::AppState;
use crate::{api, identity, reconciler};

/// File names inside the keys directory.
pub const TOKEN_KEY_FILE: &str = "token-signing.pk8";
/// Signs agent and service credentials; relays hold its public key.
pub const CREDENTIAL_KEY_FILE: &str = "credential-signing.pk8";

/// A built service, listening, not yet serving.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
    state: AppState,
    credential_key: SigningKey,
    /// The deployment's CA and the service's relay TLS.
    pki: crate::pki::Pki,
    docker_addr: Option<SocketAddr>,
    docker_tls_addr: Option<SocketAddr>,
    /// The Docker endpoint's accept loops, stopped with the application.
    _docker_tasks: AbortOnDrop,
}

/// The result of making sure the admin account exists.
pub struct AdminAccount {
    /// The admin project's id.
    pub project_id: String,
    /// Whether this call created it.
    pub created: bool,
}

impl Application {
    /// Connects the database (applying migrations), loads or makes the signing keys,
    /// starts the relay connection and the reconciler, and binds the API listener.
    pub async fn build(settings: ServiceSettings) -> anyhow::Result<Application> {
        // A bad policy file stops start-up before anything else is touched.
        let policy = crate::policy::Policy::load(settings.policy_file.as_deref())
            .context("loading the policy")?;
        let keystone = match settings.identity.keystone_url {
            Some(_) => Some(
                KeystoneValidator::new(&settings.identity)
                    .context("configuring the external Keystone ([identity])")?,
            ),
            None => None,
        };
        let url = settings.database_url.clone();
        let db = tokio::task::spawn_blocking(move || Db::connect(&url))
            .await?
            .context("connecting to the database")?;
        let token_key = SigningKey::load_or_create(&settings.keys_dir.join(TOKEN_KEY_FILE))?;
        let credential_key =
            SigningKey::load_or_create(&settings.keys_dir.join(CREDENTIAL_KEY_FILE))?;
        // Until relays say otherwise, no agent is known to be connected.
        db.run(instances::mark_all_disconnected).await?;

        // Relay connections are mutually authenticated TLS of the deployment's CA.
        let pki = crate::pki::Pki::load(&settings.tls)
            .context("setting up TLS for the relay connections ([tls])")?;
        for url in settings.relay_urls() {
            anyhow::ensure!(
                url.trim().starts_with("wss://"),
                "relay_url {url} must be wss://HOST:PORT: relays accept mutually authenticated TLS connections only (docs/TLS.md)"
            );
        }
        let service_credential = mint_service_credential(&credential_key)?;
        // Commands are signed with the credential key too: agents get its public half
        // at enrollment, and the token's audience keeps the two uses apart.
        let signer =
            crate::command_signing::CommandSigner::new(&credential_key, settings.command_token_ttl);
        let (agents, notes) = Agents::start(
            settings.relay_urls(),
            service_credential,
            pki.client_tls().clone(),
            signer,
            Some(db.clone()),
        );
        // Relays learn the deleted instances before any agent command goes out.
        crate::enrollment::load_revoked(&db, &agents).await?;
        let enrollment = crate::enrollment::Enrollment::new(
            db.clone(),
            credential_key.clone(),
            settings.relay_url.clone(),
            pki.ca().clone(),
        );
        let providers = Provisioner::new(db.clone());
        providers.set_placement(crate::settings::PlacementSettings {
            agent_lost_after: settings.agent_lost_after,
            ..settings.placement.clone()
        });
        let watch = crate::watch::ContainerWatch::new();
        let registry_key = crate::secrets::SecretKey::load_or_create(
            &settings.keys_dir.join(crate::secrets::REGISTRY_KEY_FILE),
        )?;
        let lifecycle =
            Lifecycle::new(db.clone(), agents.clone(), providers.clone(), watch.clone())
                .with_registry_key(registry_key.clone());

        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding the API listener on {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| {
                let ip = settings.listen.ip();
                let host = if ip.is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    ip.to_string()
                };
                format!("http://{host}:{port}")
            })
            .trim_end_matches('/')
            .to_owned();
        let docker = DockerListeners::bind(&settings.docker, &public_url, pki.ca()).await?;
        let state = AppState {
            db,
            tokens: TokenSigner::new(token_key, settings.token_ttl),
            agents,
            lifecycle,
            providers,
            public_url,
            region: settings.region.clone(),
            policy: std::sync::Arc::new(policy),
            keystone,
            watch,
            docker_issuer: docker.issuer.clone(),
            registry_key,
        };
        tokio::spawn(reconciler::run(state.clone(), notes));
        tokio::spawn(crate::instances_monitor::run(
            state.clone(),
            crate::instances_monitor::MonitorSettings {
                idle_grace: settings.instance_idle_grace,
                agent_lost_after: settings.agent_lost_after,
            },
        ));

        // Instances on demand from Nova, when configured (`instance_provider = "nova"`).
        match settings.instance_provider.as_deref() {
            None => {}
            // Agent containers made through a registered host's agent
            // (`[docker_instances]`), as `berth up` makes them.
            Some(crate::providers::docker::NAME) => {
                let options =
                    DockerOptions::from_settings(&settings.docker_instances, &settings.relay_url)
                        .context("starting the docker instance provider ([docker_instances])")?;
                let provider = DockerProvider::new(
                    state.agents.clone(),
                    state.db.clone(),
                    state.public_url.clone(),
                    options,
                    pki.ca_pem().to_owned(),
                );
                state
                    .providers
                    .enable(std::sync::Arc::new(provider))
                    .await?;
            }
            Some(crate::providers::nova::NAME) => {
                let provider = crate::providers::nova::NovaProvider::connect(
                    settings.nova.clone(),
                    state.db.clone(),
                    &settings.relay_url,
                    &state.public_url,
                    pki.ca_pem(),
                )
                .await
                .context("starting the nova instance provider ([nova])")?;
                state
                    .providers
                    .enable(std::sync::Arc::new(provider))
                    .await?;
            }
            Some(other) => anyhow::bail!(
                "unknown instance_provider '{other}': berth-service knows 'nova' and 'docker' (or leave it unset for registered hosts only)"
            ),
        }
        let app_state = web::Data::new(state.clone());
        let external_identity = state.keystone.as_ref().map(|k| k.keystone_url().to_owned());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .configure(|cfg| match &external_identity {
                    // Keystone is the identity service: Berth serves no tokens.
                    Some(url) => keystone::configure_external(cfg, url.clone()),
                    None => identity::routes::configure(cfg),
                })
                .configure(api::configure)
                .configure(|cfg| enrollment.clone().configure(cfg))
                .default_service(web::to(api::not_found))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(port, url = %state.public_url, "API listening");
        let docker_addr = docker.plain.as_ref().map(|l| l.local_addr()).transpose()?;
        let docker_tls_addr = docker
            .tls
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()?;
        let docker_tasks = docker.spawn(&state);
        Ok(Application {
            server,
            port,
            state,
            credential_key,
            pki,
            docker_addr,
            docker_tls_addr,
            _docker_tasks: docker_tasks,
        })
    }

    /// The deployment's CA (it signs agents' client certificates) and the service's
    /// relay TLS.
    pub fn pki(&self) -> &crate::pki::Pki {
        &self.pki
    }

    /// The port the API listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the Docker endpoint's plain (loopback) listener is bound, if it is on.
    pub fn docker_addr(&self) -> Option<SocketAddr> {
        self.docker_addr
    }

    /// Where the Docker endpoint's TLS listener is bound, if it is on.
    pub fn docker_tls_addr(&self) -> Option<SocketAddr> {
        self.docker_tls_addr
    }

    /// The URL clients reach the API at.
    pub fn public_url(&self) -> &str {
        &self.state.public_url
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// PEM public key that relays verify agent and service credentials with.
    pub fn credential_public_key_pem(&self) -> String {
        self.credential_key.public_key_pem()
    }

    /// A credential with which an agent may act for `instance` (and nothing else).
    pub fn mint_agent_credential(&self, instance: Uuid, ttl: Duration) -> anyhow::Result<String> {
        mint_agent_credential(&self.credential_key, instance, ttl)
    }

    /// Makes `instance`'s agent credentials stop working (see [`crate::enrollment::revoke`]).
    pub async fn revoke_instance(&self, instance: Uuid) -> anyhow::Result<()> {
        crate::enrollment::revoke(&self.state.db, &self.state.agents, instance).await?;
        Ok(())
    }

    /// Makes sure the `admin` project and user exist, with the admin role.
    pub async fn ensure_admin(&self, admin_password: &str) -> anyhow::Result<AdminAccount> {
        ensure_admin(&self.state.db, admin_password).await
    }

    /// Registers (once) a static instance of `project` called `name`, returning its id.
    pub async fn ensure_static_instance(
        &self,
        project: &str,
        name: &str,
        address: &str,
    ) -> anyhow::Result<Uuid> {
        ensure_static_instance(&self.state.db, project, name, address).await
    }

    /// Makes an instance for each project that has none (and no registered host) with
    /// the `docker` provider: an agent container on `options.host_instance`'s engine.
    pub async fn enable_docker_instances(&self, options: DockerOptions) -> anyhow::Result<()> {
        let provider = DockerProvider::new(
            self.state.agents.clone(),
            self.state.db.clone(),
            self.state.public_url.clone(),
            options,
            self.pki.ca_pem().to_owned(),
        );
        self.state
            .providers
            .enable(std::sync::Arc::new(provider))
            .await?;
        Ok(())
    }

    /// Serves until the server is stopped.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The Docker endpoint's listeners, bound, not yet serving.
struct DockerListeners {
    plain: Option<tokio::net::TcpListener>,
    tls: Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>,
    issuer: Option<Arc<Issuer>>,
}

impl DockerListeners {
    /// Binds what `settings` asks for. A plain listener off loopback is refused: token
    /// headers would cross the network in clear.
    async fn bind(
        settings: &DockerSettings,
        public_url: &str,
        ca: &Arc<berth_tls::Ca>,
    ) -> anyhow::Result<DockerListeners> {
        let plain = match settings.listen {
            None => None,
            Some(addr) if !addr.ip().is_loopback() => anyhow::bail!(
                "the Docker endpoint's plain listener may only listen on a loopback address (127.0.0.1 or ::1), not {addr}: tokens would travel in clear; use the TLS listener (--docker-tls-listen / [docker] tls_listen) for other hosts"
            ),
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the Docker listener on {addr}"))?,
            ),
        };
        let Some(addr) = settings.tls_listen else {
            return Ok(DockerListeners {
                plain,
                tls: None,
                issuer: None,
            });
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the Docker TLS listener on {addr}"))?;
        let bound = listener.local_addr()?;
        let host = match &settings.public_host {
            Some(h) => h.clone(),
            None if bound.ip().is_unspecified() => url::Url::parse(public_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "127.0.0.1".to_owned()),
            None => bound.ip().to_string(),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let source = tls_source(settings, &host, bound.ip(), ca)?;
        let (ca, config) = tokio::task::spawn_blocking(move || certs::load(&source))
            .await?
            .context("setting up the Docker endpoint's TLS certificates")?;
        let shown_host = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => host,
        };
        let issuer = Issuer {
            ca,
            validity: std::time::Duration::from_secs(
                u64::from(settings.client_cert_days.max(1)) * 24 * 3600,
            ),
            docker_host: format!("tcp://{shown_host}:{}", bound.port()),
        };
        Ok(DockerListeners {
            plain,
            tls: Some((listener, config)),
            issuer: Some(Arc::new(issuer)),
        })
    }

    /// Starts the accept loops on the current runtime.
    fn spawn(self, state: &AppState) -> AbortOnDrop {
        let shared = DockerShared::new(state.clone());
        let mut tasks = Vec::new();
        if let Some(listener) = self.plain {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "Docker endpoint listening (plain, loopback)");
            }
            tasks.push(tokio::spawn(crate::docker_api::server::serve_plain(
                listener,
                shared.clone(),
            )));
        }
        if let Some((listener, config)) = self.tls {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "Docker endpoint listening (TLS)");
            }
            tasks.push(tokio::spawn(crate::docker_api::server::serve_tls(
                listener, config, shared,
            )));
        }
        AbortOnDrop(tasks)
    }
}

/// Where the TLS listener's certificates come from: the deployment's four files, or
/// a directory where they are made.
fn tls_source(
    settings: &DockerSettings,
    host: &str,
    bound: IpAddr,
    ca: &Arc<berth_tls::Ca>,
) -> anyhow::Result<TlsSource> {
    let files = [
        &settings.ca_cert,
        &settings.ca_key,
        &settings.server_cert,
        &settings.server_key,
    ];
    if files.iter().any(|f| f.is_some()) {
        let [Some(ca_cert), Some(ca_key), Some(server_cert), Some(server_key)] = files else {
            anyhow::bail!(
                "[docker] needs all of ca_cert, ca_key, server_cert and server_key, or none of them (then tls_dir)"
            );
        };
        return Ok(TlsSource::Files {
            ca_cert: ca_cert.clone(),
            ca_key: ca_key.clone(),
            server_cert: server_cert.clone(),
            server_key: server_key.clone(),
        });
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        host.to_owned(),
    ];
    if !bound.is_unspecified() {
        names.push(bound.to_string());
    }
    names.extend(settings.server_names.iter().cloned());
    // Without a directory of its own, the endpoint uses the deployment's CA ([tls]):
    // one CA for the whole deployment.
    Ok(match settings.tls_dir.clone() {
        Some(dir) => TlsSource::Generated { dir, names },
        None => TlsSource::Deployment {
            ca: Arc::clone(ca),
            names,
        },
    })
}

/// Aborts its tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn mint_service_credential(key: &SigningKey) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = ServiceClaims {
        sub: format!("service-{}", Uuid::new_v4().simple()),
        aud: SERVICE_AUDIENCE.into(),
        iat: now,
        exp: now + 10 * 365 * 24 * 3600,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &key.encoding_key(),
    )?)
}

/// Signs an agent credential bound to `instance`.
pub fn mint_agent_credential(
    key: &SigningKey,
    instance: Uuid,
    ttl: Duration,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = AgentClaims {
        sub: format!("agent:{instance}"),
        instance,
        aud: AGENT_AUDIENCE.into(),
        iat: now,
        exp: now + ttl.as_secs() as i64,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &key.encoding_key(),
    )?)
}

/// Makes sure the `admin` project and user exist, with the admin role.
pub async fn ensure_admin(db: &Db, admin_password: &str) -> anyhow::Result<AdminAccount> {
    let hash = password::hash(admin_password);
    let account = db
        .run(move |c| {
            if let Some(p) = db::identity::project_by_name(c, "admin")? {
                return Ok(AdminAccount {
                    project_id: p.id,
                    created: false,
                });
            }
            let t = db::now();
            let project = ProjectRow {
                id: Uuid::new_v4().simple().to_string(),
                name: "admin".into(),
                domain_id: "default".into(),
                description: "Bootstrap project for initializing the cloud.".into(),
                enabled: true,
                created_at: t,
            };
            let user = UserRow {
                id: Uuid::new_v4().simple().to_string(),
                name: "admin".into(),
                domain_id: "default".into(),
                password_hash: hash,
                enabled: true,
                default_project_id: Some(project.id.clone()),
                created_at: t,
            };
            db::identity::insert_project(c, &project)?;
            db::identity::insert_user(c, &user)?;
            db::identity::grant(
                c,
                &RoleAssignmentRow {
                    user_id: user.id.clone(),
                    project_id: project.id.clone(),
                    role: "admin".into(),
                },
            )?;
            Ok(AdminAccount {
                project_id: project.id,
                created: true,
            })
        })
        .await?;
    Ok(account)
}

/// Registers (once) a static instance of `project` called `name`, returning its id.
pub async fn ensure_static_instance(
    db: &Db,
    project: &str,
    name: &str,
    address: &str,
) -> anyhow::Result<Uuid> {
    static_hosts::register(db, project, name, address).await
}

/// A random password for a new admin account.
pub fn generate_password() -> String {
    password::generate()
}
