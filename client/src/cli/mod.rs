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
}
