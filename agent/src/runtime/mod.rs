//! The bollard boundary: the only module that talks to the Docker engine.
//!
//! [`Runtime`] executes each [`Command`] against the local engine and observes the
//! containers this instance manages. Every Berth container is found by its Docker
//! name ([`berth_proto::docker_name`]) and must carry this instance's
//! [`berth_proto::LABEL_INSTANCE`]; a container labelled for another instance is treated
//! as absent, so an agent can only ever act for its own instance.

mod archive;
pub(crate) mod errors;
mod events;
mod images;
pub(crate) mod observe;
mod ops;
pub(crate) mod spec;
mod stats;
pub(crate) mod streams;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use berth_proto::{
    AgentError, AgentErrorKind, Command, ContainerEvent, ContainerSpec, ObservedContainer, Outcome,
    Reply, RuntimeState,
};
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, KillContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, ResizeContainerTTYOptions,
    RestartContainerOptions, StopContainerOptions, TopOptions,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt as _};
use uuid::Uuid;

use errors::{classify, engine_message, is_not_found, not_found};
use observe::{container_instance, container_uuid, observed, runtime_state};

/// Where bollard looks for the engine when neither settings nor `DOCKER_HOST` say.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long a pull may take before the create gives up with `ImageNotFound`.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

/// Request timeout for ordinary engine calls (bollard's default, stated here).
const ENGINE_TIMEOUT: Duration = Duration::from_secs(120);

/// Extra time beyond a stop timeout before the agent stops waiting for the engine,
/// since the engine answers a stop only after the process is gone.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The engine's stop timeout when a command does not give one.
const ENGINE_DEFAULT_STOP_SECS: u64 = 10;

/// Logs larger than this are cut to their most recent part, so one reply always fits
/// in a WebSocket frame the relay accepts.
const MAX_LOG_BYTES: usize = 4 * 1024 * 1024;

/// How far back the event subscription starts. The engine replays events it buffered
/// since then, which closes the gap between subscribing and the state snapshot (and
/// covers a little clock skew to a remote engine). Replays are harmless: every
/// change is re-inspected, and removals are idempotent.
const EVENTS_REPLAY: Duration = Duration::from_secs(2);

use events::EngineChange;

/// The local container engine, seen as the containers of one instance.
///
/// Cheap to clone: clones share one connection pool to the engine.
#[derive(Clone)]
pub struct Runtime {
    docker: Docker,
    instance: Uuid,
    /// The kubelet, once [`Runtime::start_pods`] ran; pod commands fail before that.
    pods: std::sync::Arc<std::sync::OnceLock<crate::pods::Kubelet>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Connect to the engine and agree on an API version.
    ///
    /// `docker_host` is `None` for bollard's defaults (`DOCKER_HOST`, else
    /// `/var/run/docker.sock`), a `unix://`, `tcp://` or `http://` URL, or a bare socket
    /// path. Fails with an explanation when the engine cannot be reached, so a
    /// misconfigured agent stops at start-up instead of failing every command.
    pub async fn connect(docker_host: Option<&str>, instance: Uuid) -> anyhow::Result<Runtime> {
        let (docker, shown) = match docker_host {
            None => (
                Docker::connect_with_defaults(),
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_owned()),
            ),
            Some(host) => {
                let host = if host.starts_with('/') {
                    format!("unix://{host}")
                } else {
                    host.to_owned()
                };
                (Docker::connect_with_host(&host), host)
            }
        };
        let docker = docker
            .with_context(|| {
                format!(
                    "cannot reach the Docker engine at {shown}; give a unix:// or tcp:// address \
                     or the path of an existing socket"
                )
            })?
            .with_timeout(ENGINE_TIMEOUT);
        // The engine on an instance may be older than bollard's API version; asking
        // for a newer one fails every request, so settle on the engine's.
        let docker = docker.negotiate_version().await.with_context(|| {
            format!(
                "cannot reach the Docker engine at {shown}; check that dockerd is running \
                 and that this user may use its socket"
            )
        })?;
        let version = docker.client_version();
        tracing::info!(
            instance.id = %instance,
            docker.host = %shown,
            docker.api_version = %format!("{}.{}", version.major_version, version.minor_version),
            "connected to the Docker engine"
        );
        Ok(Runtime {
            docker,
            instance,
            pods: Default::default(),
        })
    }

    /// Start the agent-side kubelet: load the pods kept on disk and reconcile them from
    /// now on, connected to the relay or not. The returned guard stops every pod worker
    /// when dropped (the pods' containers keep running on the engine).
    pub async fn start_pods(
        &self,
        settings: crate::pods::PodSettings,
    ) -> anyhow::Result<crate::pods::KubeletGuard> {
        // The kubelet gets a runtime without the pod slot, so no reference cycle forms.
        let engine = Runtime {
            docker: self.docker.clone(),
            instance: self.instance,
            pods: Default::default(),
        };
        let (kubelet, guard) = crate::pods::Kubelet::start(engine, settings).await?;
        self.pods
            .set(kubelet)
            .map_err(|_| anyhow::anyhow!("the pods of this runtime are already started"))?;
        Ok(guard)
    }

    /// The kubelet, when started.
    pub(crate) fn pods(&self) -> Option<&crate::pods::Kubelet> {
        self.pods.get()
    }

    /// The engine connection (for the kubelet).
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    async fn pod_command(&self, command: Command) -> Reply {
        let Some(kubelet) = self.pods() else {
            return Err(AgentError::new(
                AgentErrorKind::Runtime,
                format!(
                    "the agent of instance {} was started without its pod manager; restart \
                     it with a writable state directory",
                    self.instance
                ),
            ));
        };
        match command {
            Command::ApplyPod { spec } => kubelet.apply(*spec).await.map(Outcome::Pod),
            Command::DeletePod { pod } => kubelet.delete(pod).await.map(|()| Outcome::Done),
            Command::InspectPod { pod } => kubelet
                .inspect(pod)
                .await
                .map(|(status, containers)| Outcome::PodInspect { status, containers }),
            _ => unreachable!("only pod commands are passed here"),
        }
    }

    /// The instance whose containers this runtime manages.
    pub fn instance(&self) -> Uuid {
        self.instance
    }

    /// Run one command to completion and produce its reply.
    ///
    /// Every command is idempotent: creating a container that exists returns it,
    /// starting a running one or removing a missing one succeeds. After a command
    /// that changes a container the reply carries the container as observed right
    /// after; if it vanished meanwhile (an `auto_remove` container that exited) the
    /// reply is [`Outcome::Done`] and a [`ContainerEvent::Removed`] follows.
    pub async fn execute(&self, command: Command) -> Reply {
        match command {
            command @ (Command::ApplyPod { .. }
            | Command::DeletePod { .. }
            | Command::InspectPod { .. }) => self.pod_command(command).await,
            Command::Create { spec } => self.create(&spec).await,
            Command::Start { container } => self.start(container).await,
            Command::Stop {
                container,
                timeout_secs,
            } => self.stop(container, timeout_secs).await,
            Command::Restart {
                container,
                timeout_secs,
            } => self.restart(container, timeout_secs).await,
            Command::Kill { container, signal } => self.kill(container, &signal).await,
            Command::Pause { container } => self.pause(container).await,
            Command::Unpause { container } => self.unpause(container).await,
            Command::Remove { container, force } => self.remove(container, force).await,
            Command::Logs {
                container,
                stdout,
                stderr,
                timestamps,
                tail,
                since,
            } => {
                self.logs(container, stdout, stderr, timestamps, tail, since)
                    .await
            }
            Command::Update {
                container,
                cpu,
                memory_mib,
                restart,
            } => self.update(container, cpu, memory_mib, restart).await,
            Command::Inspect { container } => {
                let inspect = self.require(container).await?;
                Ok(Outcome::Container(observed(container, &inspect)))
            }
            Command::Top { container, ps_args } => self.top(container, ps_args).await,
            Command::Resize {
                container,
                height,
                width,
            } => self.resize(container, height, width).await,
            Command::Commit {
                container,
                repository,
                tag,
            } => self.commit(container, &repository, tag.as_deref()).await,
            Command::GetArchive { container, path } => self.get_archive(container, &path).await,
            Command::PutArchive {
                container,
                path,
                data,
            } => self.put_archive(container, &path, data).await,
            Command::Images => self.images().await,
            Command::ImageInspect { reference } => self.image_inspect(&reference).await,
            Command::ImageRemove { reference, force } => self.image_remove(&reference, force).await,
            Command::RegistryLogin { auth } => self.registry_login(&auth).await,
        }
    }

    /// Every container labelled for this instance, observed now.
    ///
    /// Containers without a parseable Berth uuid are skipped (nothing could address
    /// them), as are containers that disappear between listing and inspecting.
    pub async fn observe_all(&self) -> Result<Vec<ObservedContainer>, AgentError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(
                [(
                    "label".to_owned(),
                    vec![format!("{}={}", berth_proto::LABEL_INSTANCE, self.instance)],
                )]
                .into(),
            ),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|err| {
                AgentError::new(
                    AgentErrorKind::Runtime,
                    format!(
                        "could not list the containers of instance {}: {}",
                        self.instance,
                        engine_message(&err)
                    ),
                )
            })?;
        let mut containers = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let (Some(id), Some(uuid)) = (summary.id, container_uuid(summary.labels.as_ref()))
            else {
                tracing::debug!(instance.id = %self.instance, "skipping a container without a Berth uuid label");
                continue;
            };
            match self.docker.inspect_container(&id, None).await {
                Ok(inspect) => containers.push(observed(uuid, &inspect)),
                Err(err) if is_not_found(&err) => continue,
                Err(err) => return Err(classify("inspect", uuid, self.instance, &err)),
            }
        }
        Ok(containers)
    }

    /// The engine's event stream for this instance's containers, starting a moment in
    /// the past so that subscribing and then snapshotting misses nothing.
    pub(crate) fn engine_events(
        &self,
    ) -> impl Stream<Item = Result<EventMessage, EngineError>> + Send + 'static {
        let since = SystemTime::now()
            .checked_sub(EVENTS_REPLAY)
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let options = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters: Some(events::filters(self.instance)),
        };
        self.docker.events(Some(options))
    }

    /// What an engine event means for the relay, inspecting the container when its
    /// state may have changed. `None` when the event does not matter or the container
    /// is already gone (its `destroy` event will report that).
    pub(crate) async fn container_event(
        &self,
        event: &EventMessage,
    ) -> Result<Option<ContainerEvent>, AgentError> {
        match events::engine_change(event) {
            None => Ok(None),
            Some(EngineChange::Removed { uuid }) => Ok(Some(ContainerEvent::Removed { uuid })),
            Some(EngineChange::Observe { runtime_id }) => {
                match self.docker.inspect_container(&runtime_id, None).await {
                    Ok(inspect) => {
                        Ok(self
                            .owned_uuid(&inspect)
                            .map(|uuid| ContainerEvent::Changed {
                                container: observed(uuid, &inspect),
                            }))
                    }
                    Err(err) if is_not_found(&err) => Ok(None),
                    Err(err) => Err(AgentError::new(
                        AgentErrorKind::Runtime,
                        format!(
                            "could not inspect container {runtime_id} after an engine event: {}",
                            engine_message(&err)
                        ),
                    )),
                }
            }
        }
    }

    /// The Berth uuid of an inspected container when it belongs to this instance.
    fn owned_uuid(&self, inspect: &ContainerInspectResponse) -> Option<Uuid> {
        let labels = inspect.config.as_ref().and_then(|c| c.labels.as_ref());
        (container_instance(labels) == Some(self.instance))
            .then(|| container_uuid(labels))
            .flatten()
    }

    /// Inspect the container with this Berth uuid; `None` when it does not exist here
    /// or belongs to another instance.
    async fn find(&self, container: Uuid) -> Result<Option<ContainerInspectResponse>, AgentError> {
        match self
            .docker
            .inspect_container(&berth_proto::docker_name(container), None)
            .await
        {
            Ok(inspect) if self.owned_uuid(&inspect) == Some(container) => Ok(Some(inspect)),
            Ok(_) => Ok(None),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(classify("inspect", container, self.instance, &err)),
        }
    }

    /// Like [`Runtime::find`], but a missing container is a `NotFound` error.
    async fn require(&self, container: Uuid) -> Result<ContainerInspectResponse, AgentError> {
        self.find(container)
            .await?
            .ok_or_else(|| not_found(container, self.instance))
    }

    /// The outcome after a command changed the container: the container as it is now,
    /// or `Done` when it went away meanwhile (auto-remove).
    async fn observed_after(&self, container: Uuid) -> Reply {
        Ok(match self.find(container).await? {
            Some(inspect) => Outcome::Container(observed(container, &inspect)),
            None => Outcome::Done,
        })
    }

    /// A handle whose request timeout leaves room for a stop that waits `timeout_secs`.
    fn docker_waiting(&self, timeout_secs: Option<u32>) -> Docker {
        let wait = Duration::from_secs(timeout_secs.map_or(ENGINE_DEFAULT_STOP_SECS, u64::from))
            + STOP_GRACE;
        self.docker.clone().with_timeout(wait.max(ENGINE_TIMEOUT))
    }

    async fn create(&self, spec: &ContainerSpec) -> Reply {
        let container = spec.uuid;
        let name = berth_proto::docker_name(container);
        // Idempotency: the name is derived from the uuid, so a retried create finds
        // what the first attempt made.
        match self.docker.inspect_container(&name, None).await {
            Ok(inspect) => return self.existing(container, &inspect),
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(classify("inspect", container, self.instance, &err)),
        }

        self.ensure_image_with(&spec.image, spec.registry_auth.as_ref())
            .await?;

        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = match self
            .docker
            .create_container(Some(options), spec::create_body(spec, self.instance))
            .await
        {
            Ok(created) => created,
            // A concurrent create of the same uuid won the race for the name.
            Err(err) if errors::status_code(&err) == Some(409) => {
                return match self.docker.inspect_container(&name, None).await {
                    Ok(inspect) => self.existing(container, &inspect),
                    Err(_) => Err(classify("create", container, self.instance, &err)),
                };
            }
            Err(err) if is_not_found(&err) => {
                return Err(AgentError::new(
                    AgentErrorKind::ImageNotFound,
                    format!(
                        "image '{}' disappeared from instance {} while container {container} \
                         was being created: {}",
                        spec.image,
                        self.instance,
                        engine_message(&err)
                    ),
                ))
            }
            Err(err) => return Err(classify("create", container, self.instance, &err)),
        };
        tracing::info!(container.id = %container, instance.id = %self.instance, runtime_id = %created.id, "created container");

        match self.docker.inspect_container(&created.id, None).await {
            Ok(inspect) => Ok(Outcome::Container(observed(container, &inspect))),
            Err(err) => {
                // The caller is told the create failed, so nothing may be left behind
                // that no database row knows about.
                let error = classify("inspect", container, self.instance, &err);
                let force = RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                };
                if let Err(remove_err) =
                    self.docker.remove_container(&created.id, Some(force)).await
                {
                    tracing::warn!(
                        container.id = %container,
                        instance.id = %self.instance,
                        error = %engine_message(&remove_err),
                        "could not remove a container whose create failed half-way"
                    );
                }
                Err(error)
            }
        }
    }

    /// The reply to a create that found a container with the spec's name already there.
    fn existing(&self, container: Uuid, inspect: &ContainerInspectResponse) -> Reply {
        if self.owned_uuid(inspect) == Some(container) {
            return Ok(Outcome::Container(observed(container, inspect)));
        }
        Err(AgentError::new(
            AgentErrorKind::Conflict,
            format!(
                "a container named {} already exists on the engine of instance {} but is not \
                 Berth container {container} of this instance; remove it or use another uuid",
                berth_proto::docker_name(container),
                self.instance
            ),
        ))
    }

    /// Make sure `image` is present locally, pulling it when it is not.
    pub(crate) async fn ensure_image(&self, image: &str) -> Result<(), AgentError> {
        self.ensure_image_with(image, None).await
    }

    /// Like [`Runtime::ensure_image`], pulling with `auth` (a private registry's
    /// credentials, never logged) when the image is missing.
    pub(crate) async fn ensure_image_with(
        &self,
        image: &str,
        auth: Option<&berth_proto::RegistryAuth>,
    ) -> Result<(), AgentError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(err) if is_not_found(&err) => {}
            Err(err) => {
                return Err(AgentError::new(
                    AgentErrorKind::Runtime,
                    format!(
                        "could not look up image '{image}' on instance {}: {}",
                        self.instance,
                        engine_message(&err)
                    ),
                ))
            }
        }
        let unavailable = |reason: String| {
            AgentError::new(
                AgentErrorKind::ImageNotFound,
                format!(
                    "image '{image}' is not present on the instance and could not be pulled: \
                     {reason}"
                ),
            )
        };
        let reference = spec::pull_reference(image);
        tracing::info!(
            instance.id = %self.instance,
            image = %reference,
            with_credentials = auth.is_some(),
            "pulling image"
        );
        let options = CreateImageOptions {
            from_image: Some(reference),
            ..Default::default()
        };
        let pull = async {
            let mut progress =
                self.docker
                    .create_image(Some(options), None, auth.map(images::credentials));
            while let Some(step) = progress.next().await {
                step?;
            }
            Ok::<(), EngineError>(())
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(unavailable(engine_message(&err))),
            Err(_) => {
                return Err(unavailable(format!(
                    "the pull did not finish within {} s",
                    PULL_TIMEOUT.as_secs()
                )))
            }
        }
        // A pull can "succeed" for a different platform or tag spelling; only a
        // present image lets the create go ahead.
        self.docker
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|err| unavailable(engine_message(&err)))
    }

    async fn start(&self, container: Uuid) -> Reply {
        let inspect = self.require(container).await?;
        if current_state(&inspect) == RuntimeState::Running {
            return Ok(Outcome::Container(observed(container, &inspect)));
        }
        self.docker
            .start_container(&berth_proto::docker_name(container), None)
            .await
            .map_err(|err| classify("start", container, self.instance, &err))?;
        self.observed_after(container).await
    }

    async fn stop(&self, container: Uuid, timeout_secs: Option<u32>) -> Reply {
        let inspect = self.require(container).await?;
        if !observe::is_live(current_state(&inspect)) {
            return Ok(Outcome::Container(observed(container, &inspect)));
        }
        let options = StopContainerOptions {
            t: timeout_secs.map(clamp_secs),
            ..Default::default()
        };
        match self
            .docker_waiting(timeout_secs)
            .stop_container(&berth_proto::docker_name(container), Some(options))
            .await
        {
            Ok(()) => {}
            // Gone while stopping: an auto-remove container does exactly this.
            Err(err) if is_not_found(&err) => return Ok(Outcome::Done),
            Err(err) => return Err(classify("stop", container, self.instance, &err)),
        }
        self.observed_after(container).await
    }

    async fn restart(&self, container: Uuid, timeout_secs: Option<u32>) -> Reply {
        self.require(container).await?;
        let options = RestartContainerOptions {
            t: timeout_secs.map(clamp_secs),
            ..Default::default()
        };
        self.docker_waiting(timeout_secs)
            .restart_container(&berth_proto::docker_name(container), Some(options))
            .await
            .map_err(|err| classify("restart", container, self.instance, &err))?;
        self.observed_after(container).await
    }

    async fn kill(&self, container: Uuid, signal: &str) -> Reply {
        let inspect = self.require(container).await?;
        if !observe::is_live(current_state(&inspect)) {
            return Err(AgentError::new(
                AgentErrorKind::Conflict,
                format!(
                    "container {container} is not running on instance {}, so there is no \
                     process to signal; start it first",
                    self.instance
                ),
            ));
        }
        let options = KillContainerOptions {
            signal: signal.to_owned(),
        };
        self.docker
            .kill_container(&berth_proto::docker_name(container), Some(options))
            .await
            .map_err(|err| classify("kill", container, self.instance, &err))?;
        self.observed_after(container).await
    }

    async fn pause(&self, container: Uuid) -> Reply {
        let inspect = self.require(container).await?;
        if current_state(&inspect) == RuntimeState::Paused {
            return Ok(Outcome::Container(observed(container, &inspect)));
        }
        self.docker
            .pause_container(&berth_proto::docker_name(container))
            .await
            .map_err(|err| classify("pause", container, self.instance, &err))?;
        self.observed_after(container).await
    }

    async fn unpause(&self, container: Uuid) -> Reply {
        let inspect = self.require(container).await?;
        if current_state(&inspect) != RuntimeState::Paused {
            return Ok(Outcome::Container(observed(container, &inspect)));
        }
        self.docker
            .unpause_container(&berth_proto::docker_name(container))
            .await
            .map_err(|err| classify("unpause", container, self.instance, &err))?;
        self.observed_after(container).await
    }

    async fn remove(&self, container: Uuid, force: bool) -> Reply {
        let Some(inspect) = self.find(container).await? else {
            return Ok(Outcome::Done);
        };
        if !force && observe::is_live(current_state(&inspect)) {
            return Err(AgentError::new(
                AgentErrorKind::Conflict,
                format!(
                    "container {container} is running on instance {}; stop it first or \
                     remove it with force",
                    self.instance
                ),
            ));
        }
        let options = RemoveContainerOptions {
            force,
            // Anonymous volumes belong to the container; keeping them would leak disk.
            v: true,
            ..Default::default()
        };
        match self
            .docker
            .remove_container(&berth_proto::docker_name(container), Some(options))
            .await
        {
            Ok(()) => Ok(Outcome::Done),
            Err(err) if is_not_found(&err) => Ok(Outcome::Done),
            Err(err) if errors::is_removal_in_progress(&engine_message(&err)) => Ok(Outcome::Done),
            Err(err) => Err(classify("remove", container, self.instance, &err)),
        }
    }

    async fn logs(
        &self,
        container: Uuid,
        stdout: bool,
        stderr: bool,
        timestamps: bool,
        tail: Option<u64>,
        since: Option<i64>,
    ) -> Reply {
        self.require(container).await?;
        if !stdout && !stderr {
            // The engine refuses a request for no stream; the answer is plainly empty.
            return Ok(Outcome::Logs(String::new()));
        }
        let options = LogsOptions {
            follow: false,
            stdout,
            stderr,
            since: since.map_or(0, |s| i32::try_from(s.max(0)).unwrap_or(i32::MAX)),
            until: 0,
            timestamps,
            tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
        };
        let mut stream = self
            .docker
            .logs(&berth_proto::docker_name(container), Some(options));
        let mut buffer = LogBuffer::new(MAX_LOG_BYTES);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(LogOutput::StdOut { message })
                | Ok(LogOutput::StdErr { message })
                | Ok(LogOutput::Console { message }) => buffer.push(&message),
                Ok(LogOutput::StdIn { .. }) => {}
                Err(err) => {
                    return Err(classify("read the logs of", container, self.instance, &err))
                }
            }
        }
        if buffer.truncated() {
            tracing::warn!(container.id = %container, instance.id = %self.instance, limit = MAX_LOG_BYTES, "log reply cut to its most recent part");
        }
        Ok(Outcome::Logs(buffer.into_text()))
    }

    async fn top(&self, container: Uuid, ps_args: Option<String>) -> Reply {
        let inspect = self.require(container).await?;
        if current_state(&inspect) != RuntimeState::Running
            && current_state(&inspect) != RuntimeState::Paused
        {
            return Err(AgentError::new(
                AgentErrorKind::Conflict,
                format!(
                    "container {container} is not running on instance {}; start it to see its \
                     processes",
                    self.instance
                ),
            ));
        }
        let options = ps_args.map(|ps_args| TopOptions { ps_args });
        let top = self
            .docker
            .top_processes(&berth_proto::docker_name(container), options)
            .await
            .map_err(|err| classify("list the processes of", container, self.instance, &err))?;
        Ok(Outcome::Top {
            titles: top.titles.unwrap_or_default(),
            processes: top.processes.unwrap_or_default(),
        })
    }

    async fn resize(&self, container: Uuid, height: u16, width: u16) -> Reply {
        self.require(container).await?;
        let options = ResizeContainerTTYOptions {
            h: i32::from(height),
            w: i32::from(width),
        };
        self.docker
            .resize_container_tty(&berth_proto::docker_name(container), options)
            .await
            .map_err(|err| classify("resize the TTY of", container, self.instance, &err))?;
        Ok(Outcome::Done)
    }

    async fn update(
        &self,
        container: Uuid,
        cpu: Option<f64>,
        memory_mib: Option<i64>,
        restart: Option<(String, i64)>,
    ) -> Reply {
        self.require(container).await?;
        self.docker
            .update_container(
                &berth_proto::docker_name(container),
                spec::update_body(cpu, memory_mib, restart.as_ref()),
            )
            .await
            .map_err(|err| classify("update", container, self.instance, &err))?;
        self.observed_after(container).await
    }
}

/// The Berth container a command acts on (for a create, the one it makes); `None`
/// for commands on images or the engine.
pub(crate) fn command_container(command: &Command) -> Option<Uuid> {
    Some(match command {
        Command::Create { spec } => spec.uuid,
        Command::Start { container }
        | Command::Stop { container, .. }
        | Command::Restart { container, .. }
        | Command::Kill { container, .. }
        | Command::Pause { container }
        | Command::Unpause { container }
        | Command::Remove { container, .. }
        | Command::Logs { container, .. }
        | Command::Update { container, .. }
        | Command::Inspect { container }
        | Command::Top { container, .. }
        | Command::Commit { container, .. }
        | Command::GetArchive { container, .. }
        | Command::PutArchive { container, .. }
        | Command::Resize { container, .. } => *container,
        Command::Images
        | Command::ImageInspect { .. }
        | Command::ImageRemove { .. }
        | Command::RegistryLogin { .. } => return None,
        Command::ApplyPod { spec } => spec.uuid,
        Command::DeletePod { pod } | Command::InspectPod { pod } => *pod,
    })
}

/// The state of an inspected container.
fn current_state(inspect: &ContainerInspectResponse) -> RuntimeState {
    inspect
        .state
        .as_ref()
        .map_or(RuntimeState::Dead, runtime_state)
}

/// A stop timeout as the engine's query parameter takes it.
fn clamp_secs(secs: u32) -> i32 {
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// Log bytes collected in order, keeping only the most recent `limit` bytes.
struct LogBuffer {
    bytes: Vec<u8>,
    limit: usize,
    dropped: bool,
}

impl LogBuffer {
    fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            dropped: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        // Trim in batches, not on every chunk, so a long log costs linear time.
        if self.bytes.len() > self.limit.saturating_mul(2) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.bytes.len() > self.limit {
            let excess = self.bytes.len() - self.limit;
            self.bytes.drain(..excess);
            self.dropped = true;
        }
    }

    fn truncated(&self) -> bool {
        self.dropped || self.bytes.len() > self.limit
    }

    /// The text, lossily decoded; when cut, it starts at a line boundary behind a note
    /// saying so, so the reader is not misled into thinking the log starts there.
    fn into_text(mut self) -> String {
        self.trim();
        if !self.dropped {
            return String::from_utf8_lossy(&self.bytes).into_owned();
        }
        let start = self
            .bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1);
        format!(
            "[berth: earlier output omitted; showing the last {} bytes]\n{}",
            self.bytes.len() - start,
            String::from_utf8_lossy(&self.bytes[start..])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_of_a_create_is_the_container_it_makes() {
        let container = Uuid::new_v4();
        assert_eq!(
            command_container(&Command::Pause { container }),
            Some(container)
        );
        assert_eq!(command_container(&Command::Images), None);
        let spec = ContainerSpec {
            uuid: container,
            image: "img".to_owned(),
            command: Vec::new(),
            entrypoint: None,
            environment: Default::default(),
            labels: Default::default(),
            workdir: None,
            hostname: None,
            cpu: 0.0,
            memory_mib: 0,
            ports: Vec::new(),
            restart_policy: "no".to_owned(),
            restart_max_retries: 0,
            interactive: false,
            tty: false,
            auto_remove: false,
            stdin_once: false,
            user: None,
            privileges: None,
            infra: None,
            registry_auth: None,
        };
        assert_eq!(
            command_container(&Command::Create {
                spec: Box::new(spec)
            }),
            Some(container)
        );
    }

    #[test]
    fn small_logs_are_returned_whole_and_lossily_decoded() {
        let mut buffer = LogBuffer::new(100);
        buffer.push(b"out\n");
        buffer.push(b"err \xff\n");
        assert!(!buffer.truncated());
        assert_eq!(buffer.into_text(), "out\nerr \u{fffd}\n");
    }

    #[test]
    fn a_multibyte_character_split_across_chunks_survives() {
        let mut buffer = LogBuffer::new(100);
        let snowman = "☃".as_bytes();
        buffer.push(&snowman[..1]);
        buffer.push(&snowman[1..]);
        assert_eq!(buffer.into_text(), "☃");
    }

    #[test]
    fn oversized_logs_keep_the_most_recent_whole_lines_behind_a_note() {
        let mut buffer = LogBuffer::new(10);
        for line in ["first line\n", "second\n", "third\n", "last\n"] {
            buffer.push(line.as_bytes());
        }
        assert!(buffer.truncated());
        let text = buffer.into_text();
        assert!(text.starts_with("[berth: earlier output omitted"), "{text}");
        assert!(text.ends_with("\nlast\n"), "{text}");
        assert!(!text.contains("first"), "{text}");
    }

    #[test]
    fn stop_timeouts_beyond_the_query_range_are_clamped() {
        assert_eq!(clamp_secs(30), 30);
        assert_eq!(clamp_secs(u32::MAX), i32::MAX);
    }
}
