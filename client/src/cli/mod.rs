//! The `osc` command line: argument definitions ([`Cli`]) and [`run`], which executes
//! one parsed command. The binary only parses, builds a runtime and calls [`run`].

mod auth_args;
mod error;
pub mod identity;
mod wait;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use auth_args::{AuthArgs, ConfigDirs};
pub use error::{usage_error_line, CliError};
pub use wait::{judge, Progress, Target, Verdict};

use crate::client::Client;
use crate::container::{
    parse_cpu, CreateContainer, DeleteOptions, KeyValue, LogsOptions, MemoryMib, PortSpec,
    RestartPolicy, UpdateContainer,
};
use crate::hosts;
use crate::output::{self, Format};

/// `osc`: manage Berth containers (OpenStack Zun API) from the command line.
#[derive(Debug, Parser)]
#[command(
    name = "osc",
    version,
    about = "Manage Berth containers through the OpenStack Zun-compatible API",
    after_help = "Authenticate with OS_* variables (as python-openstackclient), --os-cloud NAME \
                  from clouds.yaml, or --os-token with --os-endpoint."
)]
pub struct Cli {
    /// Authentication options.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// `-f` and `-c`, as python-openstackclient spells them.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Output format
    #[arg(short = 'f', long = "format", value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Column to show (repeat for several); the default is all fields (show) or
    /// uuid, name, image, status, task_state, ports (list)
    #[arg(short = 'c', long = "column", value_name = "COLUMN", global = true)]
    pub columns: Vec<String>,
}

/// The commands of `osc`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container (and start it with --daemon)
    ContainerCreate(Box<CreateArgs>),
    /// Show a container's details
    ContainerShow {
        /// Container uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
    },
    /// List containers
    ContainerList {
        /// List the containers of every project (administrators only)
        #[arg(long)]
        all_projects: bool,
    },
    /// Delete containers
    ContainerDelete(DeleteArgs),
    /// Start a container
    ContainerStart {
        /// Container uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
    },
    /// Stop a container
    ContainerStop {
        /// Container uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
        /// Seconds to wait for it to stop before killing it
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
    },
    /// Restart a container
    ContainerRestart {
        /// Container uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
        /// Seconds to wait for it to stop before killing it
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
    },
    /// Send a signal to a container (default SIGKILL)
    ContainerKill {
        /// Container uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
        /// Signal to send, e.g. SIGTERM, TERM or 15
        #[arg(long, short = 's', value_name = "SIGNAL")]
        signal: Option<String>,
    },
    /// Pause a container
    ContainerPause {
        /// Container uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
    },
    /// Unpause a container
    ContainerUnpause {
        /// Container uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
    },
    /// Print a container's logs
    ContainerLogs(LogsArgs),
    /// Rename or resize a container
    ContainerUpdate(UpdateArgs),
    /// Create a capsule (a pod) from a template file: a Zun capsule, a container
    /// manifest v1beta1/v1beta2, or a Kubernetes v1 Pod, in YAML or JSON
    #[command(
        after_help = "-f FILE names the template (as kubectl); -f table|json|yaml|value \
                            still chooses the output format."
    )]
    CapsuleCreate(CapsuleFileArgs),
    /// List capsules
    CapsuleList {
        /// List the capsules of every project (administrators only)
        #[arg(long)]
        all_projects: bool,
    },
    /// Show a capsule: its pod status and each container's runtime details
    CapsuleShow {
        /// Capsule uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
    },
    /// Replace a capsule's spec; only containers whose spec changed are restarted, and
    /// an update that fails is rolled back
    #[command(
        after_help = "-f FILE names the template (as kubectl); -f table|json|yaml|value \
                            still chooses the output format."
    )]
    CapsuleUpdate {
        /// Capsule uuid or name
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
        /// The template and --wait options.
        #[command(flatten)]
        args: CapsuleFileArgs,
    },
    /// Delete capsules and their containers
    CapsuleDelete {
        /// Capsule uuids or names
        #[arg(value_name = "ID", required = true, value_parser = parse_id)]
        ids: Vec<String>,
        /// Wait until the capsules are gone
        #[arg(long)]
        wait: bool,
        /// Seconds --wait waits at most for each capsule
        #[arg(long, value_name = "SECONDS", default_value_t = 120, requires = "wait")]
        wait_timeout: u64,
    },
    /// List hosts: every project's instances (administrators only)
    HostList,
    /// Show a host's details and why it is in its status (administrators only)
    HostShow {
        /// Host uuid or hostname
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: String,
    },
    /// List the instances of your project
    InstanceList,
    /// Issue a token (expires, id, project_id, user_id)
    TokenIssue,
    /// Get a client certificate for the Docker endpoint and write a DOCKER_CERT_PATH directory
    #[command(
        after_help = "Prints the DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH lines to export: \
                      eval \"$(osc docker-credentials)\" && docker ps"
    )]
    DockerCredentials {
        /// Directory for ca.pem, cert.pem and key.pem (default: ~/.berth/docker)
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// List your project's Docker client certificates
    DockerCredentialsList,
    /// Revoke a Docker client certificate of your project
    DockerCredentialsRevoke {
        /// The certificate's fingerprint (SHA-256, hex)
        #[arg(value_name = "FINGERPRINT")]
        fingerprint: String,
    },
    /// Projects, users, roles and the catalog.
    #[command(flatten)]
    Identity(identity::IdentityCommand),
}

/// Arguments of `container-create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Image, e.g. nginx:1.27
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// Container name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Command, split like a shell would, e.g. "/usr/sbin/sshd -D"
    #[arg(long, value_name = "COMMAND", conflicts_with = "command")]
    pub cmd: Option<String>,
    /// Port to publish: pub:HOST:CONTAINER, HOST:CONTAINER or CONTAINER, optionally /tcp or /udp (repeatable)
    #[arg(long = "port", short = 'p', value_name = "SPEC")]
    pub ports: Vec<PortSpec>,
    /// Environment variable KEY=VALUE (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<KeyValue>,
    /// Label KEY=VALUE (repeatable)
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<KeyValue>,
    /// CPU cores, e.g. 0.5
    #[arg(long, value_name = "CORES", value_parser = parse_cpu)]
    pub cpu: Option<f64>,
    /// Memory limit in MiB, e.g. 256 (256M and 1G are understood too)
    #[arg(long, value_name = "MIB")]
    pub memory: Option<MemoryMib>,
    /// Working directory inside the container
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Restart policy: no, always, on-failure[:N] or unless-stopped
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<RestartPolicy>,
    /// Keep stdin open
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub auto_remove: bool,
    /// Start the container too (like `docker run -d`)
    #[arg(long, short = 'd')]
    pub daemon: bool,
    /// Wait until the container is Created (Running with --daemon); fail if it goes to Error
    #[arg(long)]
    pub wait: bool,
    /// Seconds --wait waits at most
    #[arg(long, value_name = "SECONDS", default_value_t = 600, requires = "wait")]
    pub wait_timeout: u64,
    /// Command and arguments, as an alternative to --cmd: `-- sh -c 'echo hi'`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl CreateArgs {
    /// The request body: only what was given is sent.
    pub fn body(&self) -> Result<CreateContainer, CliError> {
        let command = match (&self.cmd, self.command.is_empty()) {
            (Some(cmd), _) => {
                let argv = crate::shell::split(cmd)?;
                if argv.is_empty() {
                    return Err(CliError::new("--cmd is empty")
                        .with_hint("leave it out to run the image's default command"));
                }
                Some(argv)
            }
            (None, false) => Some(self.command.clone()),
            (None, true) => None,
        };
        let map = |pairs: &[KeyValue]| -> Option<BTreeMap<String, String>> {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.value.clone()))
                    .collect()
            })
        };
        Ok(CreateContainer {
            image: self.image.clone(),
            command,
            name: self.name.clone(),
            environment: map(&self.env),
            labels: map(&self.labels),
            cpu: self.cpu,
            memory: self.memory,
            workdir: self.workdir.clone(),
            published_ports: (!self.ports.is_empty()).then(|| self.ports.clone()),
            restart_policy: self.restart.clone(),
            interactive: self.interactive.then_some(true),
            auto_remove: self.auto_remove.then_some(true),
        })
    }
}

/// Arguments of `container-delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Container uuids or names
    #[arg(value_name = "ID", required = true, value_parser = parse_id)]
    pub ids: Vec<String>,
    /// Delete whatever the container's state
    #[arg(long)]
    pub force: bool,
    /// Stop a running container before deleting it
    #[arg(long)]
    pub stop: bool,
    /// Wait until the containers are gone
    #[arg(long)]
    pub wait: bool,
    /// Seconds --wait waits at most for each container
    #[arg(long, value_name = "SECONDS", default_value_t = 120, requires = "wait")]
    pub wait_timeout: u64,
}

/// Arguments of `capsule-create` and `capsule-update`.
#[derive(Debug, Args)]
pub struct CapsuleFileArgs {
    /// Template file, YAML or JSON ("-" for stdin); also -f FILE
    #[arg(long = "file", value_name = "FILE", required = true)]
    pub file: std::path::PathBuf,
    /// Show progress until the pod is Running (or has run to completion), and fail with
    /// the reason if it fails or the update is rolled back
    #[arg(long)]
    pub wait: bool,
    /// Seconds --wait waits at most
    #[arg(long, value_name = "SECONDS", default_value_t = 600, requires = "wait")]
    pub wait_timeout: u64,
}

const CAPSULE_FILE_COMMANDS: [&str; 2] = ["capsule-create", "capsule-update"];
const FORMAT_NAMES: [&str; 4] = ["table", "json", "yaml", "value"];

/// Lets `capsule-create -f FILE` name the template, as the issue and kubectl spell it,
/// while `-f table|json|yaml|value` keeps choosing the output format everywhere: after
/// `capsule-create` or `capsule-update`, a `-f` whose value is not a format name becomes
/// `--file`. (A file called `json` is still reachable as `./json` or `--file json`.)
pub fn normalize_args<I, S>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    let mut in_file_command = false;
    let mut iter = args.into_iter().map(Into::into).peekable();
    while let Some(arg) = iter.next() {
        let text = arg.to_str().unwrap_or_default().to_string();
        if text == "--" {
            out.push(arg);
            out.extend(iter);
            break;
        }
        if CAPSULE_FILE_COMMANDS.contains(&text.as_str()) {
            in_file_command = true;
        }
        if in_file_command && text == "-f" {
            let value_is_file = iter
                .peek()
                .and_then(|v| v.to_str())
                .is_some_and(|v| !FORMAT_NAMES.contains(&v));
            if value_is_file {
                out.push("--file".into());
                continue;
            }
        }
        if in_file_command {
            if let Some(value) = text.strip_prefix("-f") {
                let value = value.strip_prefix('=').unwrap_or(value);
                if !value.is_empty() && !text.starts_with("--") && !FORMAT_NAMES.contains(&value) {
                    out.push(format!("--file={value}").into());
                    continue;
                }
            }
        }
        out.push(arg);
    }
    out
}

/// Arguments of `container-logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Container uuid or name
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: String,
    /// Only stdout (with neither --stdout nor --stderr, both are shown)
    #[arg(long)]
    pub stdout: bool,
    /// Only stderr
    #[arg(long)]
    pub stderr: bool,
    /// Prefix each line with its timestamp
    #[arg(long)]
    pub timestamps: bool,
    /// Only the last N lines ("all" for everything)
    #[arg(long, value_name = "N", value_parser = parse_tail)]
    pub tail: Option<String>,
    /// Only lines since this time (epoch seconds or timestamp)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

impl LogsArgs {
    /// The query: with neither stream chosen, both are asked for.
    pub fn options(&self) -> LogsOptions {
        let both = !self.stdout && !self.stderr;
        LogsOptions {
            stdout: self.stdout || both,
            stderr: self.stderr || both,
            timestamps: self.timestamps,
            tail: self.tail.clone(),
            since: self.since.clone(),
        }
    }
}

fn parse_id(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("a container uuid or name is needed".to_string())
    } else {
        Ok(text.to_string())
    }
}

fn parse_tail(text: &str) -> Result<String, String> {
    if text == "all" || text.parse::<u64>().is_ok() {
        Ok(text.to_string())
    } else {
        Err("expected a number of lines or \"all\"".to_string())
    }
}

/// Arguments of `container-update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Container uuid or name
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: String,
    /// New name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// New CPU cores
    #[arg(long, value_name = "CORES", value_parser = parse_cpu)]
    pub cpu: Option<f64>,
    /// New memory limit in MiB
    #[arg(long, value_name = "MIB")]
    pub memory: Option<MemoryMib>,
}

/// What `run` needs from the process besides the arguments.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Where to look for clouds.yaml.
    pub config_dirs: ConfigDirs,
    /// Whether stderr is a terminal (the progress line is redrawn in place then).
    pub stderr_is_terminal: bool,
}

/// Runs one parsed command, printing its output on stdout.
pub async fn run(cli: Cli, env: &Environment) -> Result<(), CliError> {
    let Cli {
        auth,
        output,
        command,
    } = cli;
    // Bad input is reported before anything is sent.
    let create_body = match &command {
        Command::ContainerCreate(args) => Some(args.body()?),
        _ => None,
    };
    if let Command::ContainerUpdate(args) = &command {
        if update_body(args).is_empty() {
            return Err(
                CliError::new("nothing to update").with_hint("give --name, --cpu or --memory")
            );
        }
    }

    // A template that cannot be read or is not YAML/JSON is reported before anything
    // is sent; the server judges the rest and names the field of any error.
    let template = match &command {
        Command::CapsuleCreate(args) | Command::CapsuleUpdate { args, .. } => {
            Some(crate::capsule::read_template(&args.file)?)
        }
        _ => None,
    };

    // Where the certificate directory goes is settled before anything is sent.
    let cert_dir = match &command {
        Command::DockerCredentials { dir } => Some(match dir {
            Some(dir) => dir.clone(),
            None => env
                .config_dirs
                .home
                .as_ref()
                .map(|home| home.join(".berth").join("docker"))
                .ok_or_else(|| {
                    CliError::new("no home directory to put the certificates in")
                        .with_hint("give --dir DIR")
                })?,
        }),
        _ => None,
    };

    let config = auth.resolve(&env.config_dirs)?;
    let client = Client::authenticate(config)
        .await
        .map_err(CliError::from_auth)?;
    let show = |view: &crate::container::ContainerView| {
        print(&output::render_one(
            &output::container_record(view),
            output.format,
            &output.columns,
        )?)
    };

    let show_capsule = |view: &crate::capsule::CapsuleView| {
        print(&output::render_one(
            &crate::capsule::capsule_record(view),
            output.format,
            &output.columns,
        )?)
    };

    match command {
        Command::ContainerCreate(args) => {
            let body = create_body.unwrap_or_default();
            let view = client
                .create_container(&body, args.daemon)
                .await
                .map_err(CliError::from_api)?;
            let view = if args.wait {
                let target = if args.daemon {
                    Target::Running
                } else {
                    Target::Created
                };
                let id = view.uuid.to_string();
                let mut progress = Progress::new(env.stderr_is_terminal);
                wait::wait_for_status(
                    &client,
                    &id,
                    target,
                    Duration::from_secs(args.wait_timeout),
                    &mut progress,
                )
                .await?
            } else {
                view
            };
            show(&view)
        }
        Command::ContainerShow { id } => {
            let view = client
                .get_container(&id)
                .await
                .map_err(CliError::from_api)?;
            show(&view)
        }
        Command::ContainerList { all_projects } => {
            let views = if all_projects {
                client.list_all_containers().await
            } else {
                client.list_containers().await
            }
            .map_err(CliError::from_api)?;
            let records: Vec<_> = views.iter().map(output::container_record).collect();
            print(&output::render_many(
                &records,
                output::CONTAINER_FIELDS,
                output::CONTAINER_LIST_COLUMNS,
                output.format,
                &output.columns,
            )?)
        }
        Command::ContainerDelete(args) => delete(&client, &args, env).await,
        Command::ContainerStart { id } => client
            .start_container(&id)
            .await
            .map_err(CliError::from_api),
        Command::ContainerStop { id, timeout } => client
            .stop_container(&id, timeout)
            .await
            .map_err(CliError::from_api),
        Command::ContainerRestart { id, timeout } => client
            .reboot_container(&id, timeout)
            .await
            .map_err(CliError::from_api),
        Command::ContainerKill { id, signal } => client
            .kill_container(&id, signal.as_deref())
            .await
            .map_err(CliError::from_api),
        Command::ContainerPause { id } => client
            .pause_container(&id)
            .await
            .map_err(CliError::from_api),
        Command::ContainerUnpause { id } => client
            .unpause_container(&id)
            .await
            .map_err(CliError::from_api),
        Command::ContainerLogs(args) => {
            let logs = client
                .container_logs(&args.id, &args.options())
                .await
                .map_err(CliError::from_api)?;
            print(&logs)
        }
        Command::ContainerUpdate(args) => {
            let view = client
                .update_container(&args.id, &update_body(&args))
                .await
                .map_err(CliError::from_api)?;
            show(&view)
        }
        Command::CapsuleCreate(args) => {
            let template = template.expect("read above");
            let view = client
                .create_capsule(&template)
                .await
                .map_err(CliError::from_api)?;
            show_capsule(&settle_capsule(&client, view, &args, env).await?)
        }
        Command::CapsuleList { all_projects } => {
            let views = client
                .list_capsules(all_projects)
                .await
                .map_err(CliError::from_api)?;
            let records: Vec<_> = views.iter().map(crate::capsule::capsule_record).collect();
            print(&output::render_many(
                &records,
                crate::capsule::CAPSULE_FIELDS,
                crate::capsule::CAPSULE_LIST_COLUMNS,
                output.format,
                &output.columns,
            )?)
        }
        Command::CapsuleShow { id } => {
            let view = client.get_capsule(&id).await.map_err(CliError::from_api)?;
            show_capsule(&view)
        }
        Command::CapsuleUpdate { id, args } => {
            let template = template.expect("read above");
            let view = client
                .update_capsule(&id, &template)
                .await
                .map_err(CliError::from_api)?;
            show_capsule(&settle_capsule(&client, view, &args, env).await?)
        }
        Command::CapsuleDelete {
            ids,
            wait,
            wait_timeout,
        } => {
            let mut failures = Vec::new();
            for id in &ids {
                let result = match client.delete_capsule(id).await {
                    Err(err) => {
                        Err(CliError::from_api(err).context(format!("deleting capsule {id}")))
                    }
                    Ok(()) if wait => {
                        let mut progress = Progress::new(env.stderr_is_terminal);
                        wait::wait_for_capsule_deletion(
                            &client,
                            id,
                            Duration::from_secs(wait_timeout),
                            &mut progress,
                        )
                        .await
                    }
                    Ok(()) => Ok(()),
                };
                if let Err(err) = result {
                    failures.push(err);
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(CliError::many(failures))
            }
        }
        Command::HostList => {
            let views = client.list_hosts().await.map_err(CliError::from_api)?;
            let records: Vec<_> = views
                .iter()
                .map(|v| hosts::object_record(v, hosts::HOST_FIELDS))
                .collect();
            print(&output::render_many(
                &records,
                hosts::HOST_FIELDS,
                hosts::HOST_LIST_COLUMNS,
                output.format,
                &output.columns,
            )?)
        }
        Command::HostShow { id } => {
            let view = client.get_host(&id).await.map_err(CliError::from_api)?;
            print(&output::render_one(
                &hosts::object_record(&view, hosts::HOST_FIELDS),
                output.format,
                &output.columns,
            )?)
        }
        Command::InstanceList => {
            let views = client.list_instances().await.map_err(CliError::from_api)?;
            let records: Vec<_> = views
                .iter()
                .map(|v| hosts::object_record(v, hosts::INSTANCE_FIELDS))
                .collect();
            print(&output::render_many(
                &records,
                hosts::INSTANCE_FIELDS,
                hosts::INSTANCE_LIST_COLUMNS,
                output.format,
                &output.columns,
            )?)
        }
        Command::TokenIssue => print(&output::render_one(
            &output::token_record(client.token()),
            output.format,
            &output.columns,
        )?),
        Command::DockerCredentials { .. } => {
            let dir = cert_dir.expect("settled above");
            let (key, csr) = crate::docker::key_and_csr()
                .map_err(|e| CliError::new(format!("could not make a key and CSR: {e}")))?;
            let issued = client
                .create_docker_credentials(&csr)
                .await
                .map_err(CliError::from_api)?;
            let dir = crate::docker::write_cert_dir(&dir, &issued, &key).map_err(|e| {
                CliError::new(format!(
                    "could not write the certificates to {}: {e}",
                    dir.display()
                ))
            })?;
            eprintln!(
                "Wrote ca.pem, cert.pem and key.pem to {} (certificate {}, expires {}).",
                dir.display(),
                issued.fingerprint,
                issued.expires_at
            );
            print(&crate::docker::exports(&issued.docker_host, &dir))
        }
        Command::DockerCredentialsList => {
            let views = client
                .list_docker_credentials()
                .await
                .map_err(CliError::from_api)?;
            let records: Vec<_> = views
                .iter()
                .map(|v| hosts::object_record(v, crate::docker::CREDENTIAL_FIELDS))
                .collect();
            print(&output::render_many(
                &records,
                crate::docker::CREDENTIAL_FIELDS,
                crate::docker::CREDENTIAL_LIST_COLUMNS,
                output.format,
                &output.columns,
            )?)
        }
        Command::DockerCredentialsRevoke { fingerprint } => client
            .revoke_docker_credentials(&fingerprint)
            .await
            .map_err(CliError::from_api),
        Command::Identity(command) => {
            print(&identity::run(&client, command, output.format, &output.columns).await?)
        }
    }
}

/// The uuid of a capsule the server just answered with (names are not unique).
/// With `--wait`, the capsule once its spec has settled (waiting with progress);
/// else the server's answer as it is.
async fn settle_capsule(
    client: &Client,
    view: crate::capsule::CapsuleView,
    args: &CapsuleFileArgs,
    env: &Environment,
) -> Result<crate::capsule::CapsuleView, CliError> {
    if !args.wait {
        return Ok(view);
    }
    let id = capsule_id(&view)?;
    let mut progress = Progress::new(env.stderr_is_terminal);
    wait::wait_for_capsule(
        client,
        &id,
        crate::capsule::generation_of(&view),
        Duration::from_secs(args.wait_timeout),
        &mut progress,
    )
    .await
}

fn capsule_id(view: &crate::capsule::CapsuleView) -> Result<String, CliError> {
    view.get("uuid")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CliError::new("the server's answer has no capsule uuid to wait for"))
}

fn update_body(args: &UpdateArgs) -> UpdateContainer {
    UpdateContainer {
        name: args.name.clone(),
        cpu: args.cpu,
        memory: args.memory,
    }
}

/// Deletes each container, going on after a failure; every failure is reported.
async fn delete(client: &Client, args: &DeleteArgs, env: &Environment) -> Result<(), CliError> {
    let options = DeleteOptions {
        force: args.force,
        stop: args.stop,
    };
    let mut failures = Vec::new();
    for id in &args.ids {
        let result = match client.delete_container(id, options).await {
            Err(err) => Err(CliError::from_api(err).context(format!("deleting container {id}"))),
            Ok(()) if args.wait => {
                let mut progress = Progress::new(env.stderr_is_terminal);
                wait::wait_for_deletion(
                    client,
                    id,
                    Duration::from_secs(args.wait_timeout),
                    &mut progress,
                )
                .await
            }
            Ok(()) => Ok(()),
        };
        if let Err(err) = result {
            failures.push(err);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::many(failures))
    }
}

/// The subcommand named in `args` (without the program name), for pointing at its help.
pub fn subcommand_of<S: AsRef<str>>(args: &[S]) -> Option<&str> {
    let command = <Cli as clap::CommandFactory>::command();
    args.iter()
        .map(AsRef::as_ref)
        .find(|arg| command.get_subcommands().any(|sub| sub.get_name() == *arg))
}

/// Writes to stdout. A closed pipe (`osc container-list | head -1`) is not an error.
fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(CliError::new(format!("could not write the output: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("osc").chain(args.iter().copied()))
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        match parse(args).unwrap().command {
            Command::ContainerCreate(create) => *create,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seed_spelling_of_container_create_parses_to_a_run_request() {
        let args = create_args(&[
            "container-create",
            "--port",
            "pub:222:22",
            "--daemon",
            "--image",
            "IMG",
            "--cmd",
            "/usr/sbin/sshd -D",
        ]);
        assert!(args.daemon);
        assert!(!args.wait);
        assert_eq!(
            serde_json::to_value(args.body().unwrap()).unwrap(),
            json!({"image": "IMG", "command": ["/usr/sbin/sshd", "-D"], "published_ports": ["pub:222:22"]})
        );
    }

    #[test]
    fn container_create_with_every_option_builds_the_full_body() {
        let args = create_args(&[
            "container-create",
            "--image",
            "nginx",
            "--name",
            "web",
            "--port",
            "8080:80",
            "--port",
            "53/udp",
            "--env",
            "A=b",
            "--env",
            "C=d=e",
            "--label",
            "team=x",
            "--cpu",
            "0.5",
            "--memory",
            "256",
            "--workdir",
            "/srv",
            "--restart",
            "on-failure:3",
            "--interactive",
            "--auto-remove",
            "--wait",
        ]);
        assert_eq!(
            serde_json::to_value(args.body().unwrap()).unwrap(),
            json!({
                "image": "nginx", "name": "web",
                "environment": {"A": "b", "C": "d=e"}, "labels": {"team": "x"},
                "cpu": 0.5, "memory": "256", "workdir": "/srv",
                "published_ports": ["8080:80", "53/udp"],
                "restart_policy": {"Name": "on-failure", "MaximumRetryCount": "3"},
                "interactive": true, "auto_remove": true
            })
        );
        assert_eq!(args.wait_timeout, 600);
    }

    #[test]
    fn command_after_double_dash_is_taken_verbatim() {
        let args = create_args(&[
            "container-create",
            "--image",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo hi",
        ]);
        assert_eq!(
            args.body().unwrap().command,
            Some(vec!["sh".to_string(), "-c".into(), "echo hi".into()])
        );
        assert!(parse(&["container-create", "--image", "b", "--cmd", "x", "--", "y"]).is_err());
    }

    #[test]
    fn malformed_input_is_rejected_before_anything_is_sent() {
        for bad in [
            vec!["container-create", "--image", "x", "--port", "pub:80"],
            vec!["container-create", "--image", "x", "--restart", "sometimes"],
            vec!["container-create", "--image", "x", "--env", "NOVALUE"],
            vec!["container-create", "--image", "x", "--cpu", "-1"],
            vec!["container-create", "--image", "x", "--memory", "lots"],
            vec!["container-create", "--port", "80"],
            vec!["container-logs", "x", "--tail", "some"],
            vec!["container-delete"],
            vec!["container-delete", "a", ""],
            vec!["container-show", " "],
        ] {
            let err = parse(&bad).expect_err(&bad.join(" "));
            let line = usage_error_line(&err.render().to_string(), subcommand_of(&bad));
            assert!(line.starts_with("Error: "), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        let args = create_args(&[
            "container-create",
            "--image",
            "x",
            "--cmd",
            "echo 'unclosed",
        ]);
        assert!(args
            .body()
            .unwrap_err()
            .to_string()
            .contains("quote is not closed"));
        let args = create_args(&["container-create", "--image", "x", "--cmd", "  "]);
        assert!(args
            .body()
            .unwrap_err()
            .to_string()
            .contains("--cmd is empty"));
    }

    #[test]
    fn output_options_work_before_and_after_the_command() {
        let cli = parse(&[
            "-f",
            "value",
            "container-show",
            "web",
            "-c",
            "status",
            "-c",
            "ports",
        ])
        .unwrap();
        assert_eq!(cli.output.format, Format::Value);
        assert_eq!(cli.output.columns, ["status", "ports"]);
        let cli = parse(&["container-list", "--format", "json"]).unwrap();
        assert_eq!(cli.output.format, Format::Json);
    }

    #[test]
    fn logs_ask_for_both_streams_unless_one_is_chosen() {
        let Command::ContainerLogs(args) = parse(&["container-logs", "web", "--tail", "10"])
            .unwrap()
            .command
        else {
            panic!("expected container-logs");
        };
        let options = args.options();
        assert!(options.stdout && options.stderr);
        assert_eq!(options.tail.as_deref(), Some("10"));
        let Command::ContainerLogs(args) = parse(&["container-logs", "web", "--stderr"])
            .unwrap()
            .command
        else {
            panic!("expected container-logs");
        };
        assert!(!args.options().stdout && args.options().stderr);
    }

    #[test]
    fn delete_takes_several_ids_and_flags() {
        let Command::ContainerDelete(args) =
            parse(&["container-delete", "a", "b", "--force", "--stop", "--wait"])
                .unwrap()
                .command
        else {
            panic!("expected container-delete");
        };
        assert_eq!(args.ids, ["a", "b"]);
        assert!(args.force && args.stop && args.wait);
    }

    #[test]
    fn auth_flags_are_accepted_after_the_command() {
        let cli = parse(&[
            "token-issue",
            "--os-auth-url",
            "http://h/identity/v3",
            "--os-username",
            "u",
        ])
        .unwrap();
        assert_eq!(cli.auth.auth_url.as_deref(), Some("http://h/identity/v3"));
        assert_eq!(cli.auth.username.as_deref(), Some("u"));
    }

    fn capsule_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let argv = normalize_args(std::iter::once("osc").chain(args.iter().copied()));
        Cli::try_parse_from(argv)
    }

    #[test]
    fn capsule_create_takes_the_template_with_dash_f_and_the_format_too() {
        let cli =
            capsule_parse(&["capsule-create", "-f", "pod.yaml", "--wait", "-f", "json"]).unwrap();
        assert_eq!(cli.output.format, Format::Json);
        let Command::CapsuleCreate(args) = cli.command else {
            panic!("expected capsule-create");
        };
        assert_eq!(args.file, std::path::PathBuf::from("pod.yaml"));
        assert!(args.wait);
        let cli = capsule_parse(&["-f", "value", "capsule-update", "web", "-fnew.json"]).unwrap();
        assert_eq!(cli.output.format, Format::Value);
        let Command::CapsuleUpdate { id, args } = cli.command else {
            panic!("expected capsule-update");
        };
        assert_eq!((id.as_str(), args.file.to_str()), ("web", Some("new.json")));
        // Elsewhere -f is only the format, as before.
        assert_eq!(
            normalize_args(["osc", "container-show", "-f", "x"]),
            ["osc", "container-show", "-f", "x"].map(std::ffi::OsString::from)
        );
    }

    #[test]
    fn capsule_create_without_a_file_is_a_usage_error() {
        let err = capsule_parse(&["capsule-create"]).unwrap_err();
        let line = usage_error_line(&err.render().to_string(), Some("capsule-create"));
        assert!(line.contains("--file"), "{line}");
        assert!(capsule_parse(&["capsule-delete"]).is_err());
    }
}
