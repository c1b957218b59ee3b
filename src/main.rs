//! `berth`: the all-in-one binary. `berth up` runs the service, a relay and an agent
//! for this host in one process, with SQLite under a data directory.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use berth::{Embedded, UpOptions};
use berth_service::settings::{PlacementSettings, Weigher};
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
    /// The berth-agent image each project's instance runs (scripts/build-agent-image builds it).
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "berth-agent:dev",
        env = "BERTH_AGENT_IMAGE"
    )]
    agent_image: String,
    /// A policy file (YAML or JSON, like oslo.policy's policy.yaml) overriding the defaults.
    #[arg(long, value_name = "PATH", env = "BERTH_POLICY_FILE")]
    policy_file: Option<PathBuf>,
    /// How long tokens of the embedded identity stay valid, in seconds (at least 1).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(1..),
        env = "BERTH_TOKEN_TTL"
    )]
    token_ttl: u64,
    /// How long an instance made on demand may hold no container before it is released, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        env = "BERTH_INSTANCE_IDLE_GRACE"
    )]
    instance_idle_grace: u64,
    /// How long an instance's agent may stay disconnected before its containers are marked Unknown, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 120,
        env = "BERTH_AGENT_LOST_AFTER"
    )]
    agent_lost_after: u64,
    /// Which instance a container goes to among those it fits: pack (the fullest first) or spread (the emptiest first).
    #[arg(long, value_enum, default_value_t = PlacementArg::Pack, env = "BERTH_PLACEMENT")]
    placement: PlacementArg,
    /// CPUs of each instance made for a project (default: this host's CPUs); containers' cpu is placed against it (× --cpu-allocation-ratio).
    #[arg(long, value_name = "CPUS", env = "BERTH_INSTANCE_CPUS")]
    instance_cpus: Option<f64>,
    /// Memory of each instance made for a project, in MiB (default: not limited).
    #[arg(long, value_name = "MIB", env = "BERTH_INSTANCE_MEMORY_MIB")]
    instance_memory_mib: Option<i64>,
    /// Disk of each instance made for a project, in GB (default: not limited).
    #[arg(long, value_name = "GB", env = "BERTH_INSTANCE_DISK_GB")]
    instance_disk_gb: Option<i64>,
    /// Container vCPUs placed per CPU of an instance.
    #[arg(
        long,
        value_name = "RATIO",
        default_value_t = 16.0,
        env = "BERTH_CPU_ALLOCATION_RATIO"
    )]
    cpu_allocation_ratio: f64,
    /// Where the Docker endpoint listens without TLS (loopback addresses only; `off` to disable).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:2375",
        value_parser = parse_listen,
        env = "BERTH_DOCKER_LISTEN"
    )]
    docker_listen: Listen,
    /// Where the Docker endpoint listens with TLS (client certificates from `osc docker-credentials`; `off` to disable).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:2376",
        value_parser = parse_listen,
        env = "BERTH_DOCKER_TLS_LISTEN"
    )]
    docker_tls_listen: Listen,
    /// Pods: the local agent's first crash-loop delay after the immediate restart, in ms
    /// (kubelet's 10 s; lower it only for tests).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 10_000,
        env = "BERTH_POD_BACKOFF_BASE_MS"
    )]
    pod_backoff_base_ms: u64,
    /// Pods: the longest crash-loop delay, in ms (kubelet's 300 s).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 300_000,
        env = "BERTH_POD_BACKOFF_MAX_MS"
    )]
    pod_backoff_max_ms: u64,
    /// Pods: a container that ran this long (ms) starts its backoff over (default: 2 × max,
    /// as kubelet).
    #[arg(long, value_name = "MS", env = "BERTH_POD_BACKOFF_RESET_MS")]
    pod_backoff_reset_ms: Option<u64>,
    /// Pods: the image of each pod's infra container, which holds the pod's network
    /// namespace and published ports (default: the agent image running `pause`, as
    /// other projects' instances do; or e.g. registry.k8s.io/pause:3.10).
    #[arg(long, value_name = "IMAGE", env = "BERTH_POD_INFRA_IMAGE")]
    pod_infra_image: Option<String>,
    /// Pods: the infra container's command, split on spaces (default: the image's; give
    /// one that blocks forever, e.g. `sleep 2147483647`, for an image that is not a
    /// pause image).
    #[arg(long, value_name = "COMMAND", env = "BERTH_POD_INFRA_COMMAND")]
    pod_infra_command: Option<String>,
}

/// A listen address, or `off`.
#[derive(Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|e| format!("{e}: give ADDRESS:PORT, e.g. 127.0.0.1:2375, or off"))
}

/// `--placement`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PlacementArg {
    Pack,
    Spread,
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
    match Cli::parse().command {
        Cmd::Up(args) => up(args).await,
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let up = Embedded::start(UpOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        relay_listen: args.relay_listen,
        advertise_address: args.advertise_address,
        database_url: args.database_url,
        docker_host: args.docker_host,
        agent_image: args.agent_image.clone(),
        policy_file: args.policy_file,
        token_ttl: std::time::Duration::from_secs(args.token_ttl),
        instance_idle_grace: std::time::Duration::from_secs(args.instance_idle_grace),
        agent_lost_after: std::time::Duration::from_secs(args.agent_lost_after),
        placement: PlacementSettings {
            weigher: match args.placement {
                PlacementArg::Pack => Weigher::Pack,
                PlacementArg::Spread => Weigher::Spread,
            },
            cpu_allocation_ratio: args.cpu_allocation_ratio,
            instance_cpus: args.instance_cpus,
            instance_memory_mib: args.instance_memory_mib,
            instance_disk_gb: args.instance_disk_gb,
            ..PlacementSettings::default()
        },
        docker_listen: args.docker_listen.0,
        docker_tls_listen: args.docker_tls_listen.0,
        pods: berth_agent::PodSettings {
            backoff_base: std::time::Duration::from_millis(args.pod_backoff_base_ms),
            backoff_max: std::time::Duration::from_millis(args.pod_backoff_max_ms),
            backoff_reset: std::time::Duration::from_millis(
                args.pod_backoff_reset_ms
                    .unwrap_or(args.pod_backoff_max_ms.saturating_mul(2)),
            ),
            // Without a pause image of its own, the infra container is the agent image
            // (`berth-agent pause`), which `berth up` needs for other projects anyway.
            infra_command: match (&args.pod_infra_image, args.pod_infra_command) {
                (_, Some(c)) => Some(c.split_whitespace().map(str::to_owned).collect()),
                (None, None) => Some(vec!["pause".to_owned()]),
                (Some(_), None) => None,
            },
            infra_image: args.pod_infra_image.unwrap_or(args.agent_image),
            ..berth_agent::PodSettings::default()
        },
    })
    .await?;
    let (url, data) = (up.public_url.clone(), up.data_dir.clone());
    println!("Berth is up.");
    println!("  API:      {url}/v1 (identity {url}/identity/v3)");
    println!("  relay:    {}", up.relay_url);
    println!(
        "  CA:       {} (relay TLS and the Docker endpoint)",
        data.join("pki").join("ca.pem").display()
    );
    if let Some(addr) = up.docker_addr {
        println!("  docker:   tcp://{addr}");
    }
    if let Some(addr) = up.docker_tls_addr {
        println!("  docker-tls: tcp://{addr}");
    }
    println!("  instance: {} (this host, project admin)", up.instance);
    println!("  openrc:   {}", data.join("openrc").display());
    println!(
        "Try:  source {}/openrc && osc container-list",
        data.display()
    );
    tokio::select! {
        r = up.run_until_stopped() => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}
