//! Driving containers through their lifecycle: each operation sends one command to
//! the container's agent and records what the agent observed afterwards.
//!
//! Operations run in the background after the API has answered (Zun's API is
//! asynchronous). At most one operation runs per container at a time in this process.
//! Creates and deletes interrupted by a crash or an unreachable agent are resumed by
//! the reconciler when the agent (re)connects: commands are idempotent, so resuming
//! never makes a second container.
//!
//! A command that meets an unavailable agent (its relay died with the command in
//! flight, or the agent is between relays) is sent again for a short while
//! ([`RETRY_WINDOW`]) with the same action id, which the agent uses to answer a
//! repeat with the outcome it recorded instead of acting twice; an agent moving to
//! another relay is thus found there. After the window the container waits for the
//! reconciler as above.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::{
    AgentError, AgentErrorKind, Command, ContainerSpec, ObservedContainer, Outcome, Reply,
    RuntimeState,
};
use uuid::Uuid;

use crate::agents::Agents;
use crate::db::containers::{self as q, ContainerChange};
use crate::db::models::{ContainerRow, PortRow};
use crate::db::{instances, Db, DbError};
use crate::domain::{ContainerStatus, TaskState};
use crate::providers::Provisioner;
use crate::scheduler::WAITING_FOR_INSTANCE;
use crate::watch::ContainerWatch;

/// How the status reason of a container whose image could not be found begins.
pub const IMAGE_NOT_FOUND: &str = "No such image: ";

/// How long a command that found its agent unavailable is retried before the
/// operation gives up (or waits for the agent's reconnection). Long enough for an
/// agent to notice a dead relay and report through another (backoff starts at
/// 200 ms; its read timeout is the long case, covered by the reconciler's resume).
pub const RETRY_WINDOW: Duration = Duration::from_secs(20);

/// First pause between retries; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(250);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(4);

/// Runs container operations in the background.
#[derive(Clone)]
pub struct Lifecycle {
    db: Db,
    agents: Agents,
    providers: Provisioner,
    watch: ContainerWatch,
    busy: Arc<Mutex<HashSet<String>>>,
    /// Opens registry passwords for create commands; none: containers with a registry
    /// fail their create with a reason.
    registry_key: Option<crate::secrets::SecretKey>,
}

/// Releases a container's busy mark when an operation ends, however it ends.
struct BusyGuard {
    busy: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.busy.lock().expect("busy lock").remove(&self.id);
    }
}

/// A runtime operation on an existing container.
#[derive(Debug, Clone)]
pub enum Operation {
    Start,
    Stop { timeout_secs: Option<u32> },
    Reboot { timeout_secs: Option<u32> },
    Kill { signal: String },
    Pause,
    Unpause,
}

impl Lifecycle {
    /// A lifecycle driver over `db` and `agents`; containers placed on an instance
    /// still being made have `providers` make it. Every change it makes to a row is
    /// published on `watch`.
    pub fn new(db: Db, agents: Agents, providers: Provisioner, watch: ContainerWatch) -> Self {
        Self {
            db,
            agents,
            providers,
            watch,
            busy: Arc::default(),
            registry_key: None,
        }
    }

    /// The same, opening registry passwords with `key` when a container's image is
    /// pulled from a Zun registry.
    pub fn with_registry_key(mut self, key: crate::secrets::SecretKey) -> Self {
        self.registry_key = Some(key);
        self
    }

    /// The pull credentials of the container's registry (Zun's `registry`), opened
    /// only to go into the signed create command. A registry deleted since the create
    /// was accepted gives none: the image may well be present already.
    async fn registry_auth(
        &self,
        row: &ContainerRow,
    ) -> Result<Result<Option<berth_proto::RegistryAuth>, String>, DbError> {
        let Some(registry) = row.registry_id.clone() else {
            return Ok(Ok(None));
        };
        let project = row.project_id.clone();
        let key = registry.clone();
        let found = self
            .db
            .run(move |c| crate::db::zun::find_registries(c, &project, &key))
            .await?
            .into_iter()
            .find(|r| r.id == registry);
        let Some(r) = found else {
            tracing::warn!(container.id = %row.id, registry.id = %registry, "the container's registry was deleted; creating without its credentials");
            return Ok(Ok(None));
        };
        // A registry whose domain changed since: its credentials are not sent to the
        // image's (other) host.
        if crate::api::registries::image_in(&row.image, &r)
            .ok()
            .as_deref()
            != Some(&row.image)
        {
            tracing::warn!(container.id = %row.id, registry.id = %registry, "the container's image is not on its registry's domain any more; creating without its credentials");
            return Ok(Ok(None));
        }
        let password = match (&r.password, &self.registry_key) {
            (None, _) => None,
            (Some(sealed), Some(k)) => match k.open(&r.id, sealed) {
                Ok(p) => Some(p),
                Err(e) => return Ok(Err(format!("registry {}: {e}", r.id))),
            },
            (Some(_), None) => {
                return Ok(Err(format!(
                    "registry {}: the service has no registry key to read its password",
                    r.id
                )))
            }
        };
        Ok(Ok(Some(berth_proto::RegistryAuth {
            username: r.username,
            password,
            server_address: Some(r.domain),
            identity_token: None,
        })))
    }

    /// Publishes the row of `id` as it is now (nothing when it is gone).
    pub async fn notify(&self, id: &str) -> Result<(), DbError> {
        if let Some(row) = self.row(id).await? {
            self.watch.changed(&row);
        }
        Ok(())
    }

    /// Deletes the row of `id` and publishes that it is gone, with the exit code of
    /// its last run (`docker run --rm` reads it from `wait?condition=removed`).
    pub async fn forget(&self, id: &str) -> Result<(), DbError> {
        let id = id.to_owned();
        let gone = self
            .db
            .run(move |c| {
                let row = q::get(c, &id)?;
                q::delete(c, &id)?;
                Ok(row)
            })
            .await?;
        if let Some(row) = gone {
            self.watch.removed(&row);
        }
        Ok(())
    }

    /// After an observation: a container made with `auto_remove` that has exited is
    /// deleted, its row last. The engine's own AutoRemove is never used, so that the
    /// exit code is recorded before the container goes.
    pub async fn auto_remove_if_exited(&self, id: &str) -> Result<(), DbError> {
        let id_owned = id.to_owned();
        let marked = self
            .db
            .run(move |c| {
                let Some(row) = q::get(c, &id_owned)? else {
                    return Ok(false);
                };
                let status = ContainerStatus::from_db(&row.status);
                // An exit observed while an operation runs (the stop half of a
                // restart) is that operation's business; it calls this again when it
                // ends.
                if !row.auto_remove
                    || row.task_state.is_some()
                    || !matches!(status, ContainerStatus::Stopped | ContainerStatus::Dead)
                {
                    return Ok(false);
                }
                let change = ContainerChange {
                    status: Some(ContainerStatus::Deleting.as_str().into()),
                    task_state: Some(Some(TaskState::ContainerDeleting.as_str().into())),
                    ..Default::default()
                };
                q::update(c, &id_owned, change)
            })
            .await?;
        if marked {
            tracing::info!(container.id = %id, "auto_remove: the container exited; removing it");
            self.notify(id).await?;
            self.spawn_delete(id.to_owned(), false);
        }
        Ok(())
    }

    fn claim(&self, id: &str) -> Option<BusyGuard> {
        let mut busy = self.busy.lock().expect("busy lock");
        busy.insert(id.to_owned()).then(|| BusyGuard {
            busy: self.busy.clone(),
            id: id.to_owned(),
        })
    }

    /// Makes (and with `run_requested`, starts) a container that is in Creating.
    pub fn spawn_create(&self, id: String, action: Option<String>) {
        let this = self.clone();
        tokio::spawn(async move {
            // A create queued behind another waits its turn rather than being dropped:
            // the one before may have just decided to wait for the instance, which
            // this one (resumed when the instance's agent connected) must not miss.
            // Creates are idempotent and a finished one leaves Creating, so the queued
            // one then does nothing.
            let _guard = loop {
                if let Some(g) = this.claim(&id) {
                    break g;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            until_recorded(&id, "create", || this.create(&id, action.as_deref())).await;
        });
    }

    /// Runs `op` on a container.
    pub fn spawn_operation(&self, id: String, action: String, op: Operation) {
        let this = self.clone();
        tokio::spawn(async move {
            // An operation queued behind another on the same container waits its turn.
            let _guard = loop {
                if let Some(g) = this.claim(&id) {
                    break g;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            until_recorded(&id, "operation", || this.operate(&id, &action, op.clone())).await;
        });
    }

    /// Removes a container that is in Deleting, then its row.
    pub fn spawn_delete(&self, id: String, stop_first: bool) {
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = loop {
                if let Some(g) = this.claim(&id) {
                    break g;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            until_recorded(&id, "delete", || this.delete(&id, stop_first)).await;
        });
    }

    /// Sends `command` to the agent of `instance`, again and again with the same
    /// action id while the agent is unavailable, for at most [`RETRY_WINDOW`]. The
    /// last reply is returned: an `Unavailable` error names the relay or the reason.
    async fn call(&self, instance: Uuid, action: Option<Uuid>, command: Command) -> Reply {
        let started = tokio::time::Instant::now();
        let mut pause = RETRY_PAUSE_FIRST;
        loop {
            let reply = self.agents.call(instance, action, command.clone()).await;
            match &reply {
                Err(e)
                    if e.kind == AgentErrorKind::Unavailable
                        && started.elapsed() + pause < RETRY_WINDOW =>
                {
                    tracing::info!(
                        instance.id = %instance,
                        action.id = action.map(tracing::field::display),
                        command = command.name(),
                        error = %e,
                        "agent unavailable; sending the command again with the same action id"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                _ => return reply,
            }
        }
    }

    async fn row(&self, id: &str) -> Result<Option<ContainerRow>, DbError> {
        let id = id.to_owned();
        self.db.run(move |c| q::get(c, &id)).await
    }

    async fn create(&self, id: &str, action: Option<&str>) -> Result<(), DbError> {
        let Some(row) = self.row(id).await? else {
            return Ok(());
        };
        if ContainerStatus::from_db(&row.status) != ContainerStatus::Creating {
            return Ok(());
        }
        let Some(instance) = row
            .instance_id
            .as_deref()
            .and_then(|i| Uuid::parse_str(i).ok())
        else {
            return Ok(());
        };
        // A create resumed by the reconciler finishes the create action it belongs to.
        let open_action = match action {
            Some(_) => None,
            None => self.open_create_action(id).await?,
        };
        let action = action.or(open_action.as_deref());
        if !self.instance_ready(&row).await? {
            return Ok(());
        }
        let mut spec = spec_from_row(&row);
        spec.registry_auth = match self.registry_auth(&row).await? {
            Ok(auth) => auth,
            Err(reason) => return self.fail(id, action, &reason).await,
        };
        let action_uuid = action.and_then(|a| Uuid::parse_str(a).ok());
        let created = self
            .call(
                instance,
                action_uuid,
                Command::Create {
                    spec: Box::new(spec),
                },
            )
            .await;
        let observed = match created {
            Ok(Outcome::Container(obs)) => obs,
            Ok(other) => {
                return self
                    .fail(
                        id,
                        action,
                        &format!("the agent answered create with {other:?}"),
                    )
                    .await
            }
            Err(e) if e.kind == AgentErrorKind::Unavailable => {
                return self.wait_for_agent(id, &e).await
            }
            // Docker's words first: the Docker endpoint answers its create with 404
            // from this reason, which makes the docker CLI pull and retry.
            Err(e) if e.kind == AgentErrorKind::ImageNotFound => {
                let reason = format!("{IMAGE_NOT_FOUND}{}. {}", row.image, e.message);
                return self.fail(id, action, &reason).await;
            }
            Err(e) => return self.fail(id, action, &e.message).await,
        };
        let next_task = row.run_requested.then_some("container_starting");
        self.record(id, &instance, &observed, next_task).await?;
        if !row.run_requested {
            return self.finish(action, None).await;
        }
        let container = Uuid::parse_str(id).expect("stored ids are uuids");
        match self
            .call(instance, action_uuid, Command::Start { container })
            .await
        {
            Ok(Outcome::Container(obs)) => {
                self.record(id, &instance, &obs, None).await?;
                self.finish(action, None).await?;
                self.auto_remove_if_exited(id).await
            }
            Ok(_) => self.finish(action, None).await,
            Err(e) => {
                self.fail(
                    id,
                    action,
                    &format!("the container was made but could not start: {}", e.message),
                )
                .await
            }
        }
    }

    /// Whether the container's instance takes containers now. An instance still being
    /// made is made (if this process is not at it already) and the container keeps
    /// waiting: the reconciler resumes it when the instance's agent connects. A
    /// container on an instance that could not be made fails with the instance's reason
    /// (and its create action with it).
    async fn instance_ready(&self, row: &ContainerRow) -> Result<bool, DbError> {
        let Some(instance_id) = row.instance_id.clone() else {
            return Ok(false);
        };
        let instance = self
            .db
            .run(move |c| instances::get(c, &instance_id))
            .await?;
        let Some(instance) = instance else {
            // Not known here: let the agent call say what is wrong.
            return Ok(true);
        };
        match instance.status.as_str() {
            instances::STATUS_BUILDING => {
                tracing::info!(container.id = %row.id, instance.id = %instance.id, "waiting for the instance to be made");
                self.providers.ensure_making(instance);
                Ok(false)
            }
            instances::STATUS_ERROR => {
                // The instance's reason already says what failed and what to do.
                let reason = instance.status_reason.clone().unwrap_or_else(|| {
                    "Could not make an instance for the project; create the container again"
                        .to_owned()
                });
                let id = instance.id.clone();
                self.db
                    .run(move |c| instances::fail_waiting_containers(c, &id, &reason))
                    .await?;
                self.notify(&row.id).await?;
                tracing::warn!(container.id = %row.id, instance.id = %instance.id, "the container's instance could not be made");
                Ok(false)
            }
            _ => {
                if row.task_state.as_deref() == Some(WAITING_FOR_INSTANCE) {
                    let id = row.id.clone();
                    let change = ContainerChange {
                        task_state: Some(Some(TaskState::ContainerCreating.as_str().into())),
                        ..Default::default()
                    };
                    self.db.run(move |c| q::update(c, &id, change)).await?;
                }
                Ok(true)
            }
        }
    }

    /// The unfinished create action of a container, if any.
    async fn open_create_action(&self, id: &str) -> Result<Option<String>, DbError> {
        let id = id.to_owned();
        let actions = self.db.run(move |c| q::actions_of(c, &id)).await?;
        Ok(actions
            .into_iter()
            .find(|a| a.action == "create" && a.finish_time.is_none())
            .map(|a| a.id))
    }

    async fn operate(&self, id: &str, action: &str, op: Operation) -> Result<(), DbError> {
        let Some(row) = self.row(id).await? else {
            return Ok(());
        };
        let Some(instance) = row
            .instance_id
            .as_deref()
            .and_then(|i| Uuid::parse_str(i).ok())
        else {
            return self.end_operation(id, action, Err(no_instance())).await;
        };
        let container = Uuid::parse_str(id).expect("stored ids are uuids");
        let command = match op {
            Operation::Start => Command::Start { container },
            Operation::Stop { timeout_secs } => Command::Stop {
                container,
                timeout_secs,
            },
            Operation::Reboot { timeout_secs } => Command::Restart {
                container,
                timeout_secs,
            },
            Operation::Kill { signal } => Command::Kill { container, signal },
            Operation::Pause => Command::Pause { container },
            Operation::Unpause => Command::Unpause { container },
        };
        let reply = self
            .call(instance, Uuid::parse_str(action).ok(), command)
            .await;
        if let Ok(Outcome::Container(obs)) = &reply {
            self.record(id, &instance, obs, None).await?;
        }
        self.end_operation(id, action, reply.map(|_| ())).await
    }

    async fn end_operation(
        &self,
        id: &str,
        action: &str,
        result: Result<(), AgentError>,
    ) -> Result<(), DbError> {
        let id_owned = id.to_owned();
        match result {
            Ok(()) => {
                self.db
                    .run(move |c| {
                        q::update(
                            c,
                            &id_owned,
                            ContainerChange {
                                task_state: Some(None),
                                ..Default::default()
                            },
                        )
                    })
                    .await?;
                self.finish(Some(action), None).await?;
                self.notify(id).await?;
                self.auto_remove_if_exited(id).await
            }
            Err(e) => {
                tracing::warn!(container.id = %id, error = %e, "operation failed");
                let mut change = ContainerChange {
                    task_state: Some(None),
                    status_reason: Some(Some(e.message.clone())),
                    ..Default::default()
                };
                if e.kind == AgentErrorKind::NotFound {
                    change.status = Some(ContainerStatus::Error.as_str().into());
                }
                self.db
                    .run(move |c| q::update(c, &id_owned, change))
                    .await?;
                self.finish(Some(action), Some(e.message)).await?;
                self.notify(id).await
            }
        }
    }

    async fn delete(&self, id: &str, stop_first: bool) -> Result<(), DbError> {
        let Some(row) = self.row(id).await? else {
            return Ok(());
        };
        let id_owned = id.to_owned();
        let Some(instance) = row
            .instance_id
            .as_deref()
            .and_then(|i| Uuid::parse_str(i).ok())
        else {
            // Never placed, so nothing exists on any engine.
            return self.forget(id).await;
        };
        let container = Uuid::parse_str(id).expect("stored ids are uuids");
        if stop_first {
            let stopped = self
                .call(
                    instance,
                    None,
                    Command::Stop {
                        container,
                        timeout_secs: Some(10),
                    },
                )
                .await;
            if let Err(e) = stopped {
                if e.kind == AgentErrorKind::Unavailable {
                    return self.wait_for_agent(id, &e).await;
                }
            }
        }
        match self
            .call(
                instance,
                None,
                Command::Remove {
                    container,
                    force: true,
                },
            )
            .await
        {
            Ok(_) => {
                tracing::info!(container.id = %id, "container deleted");
                self.forget(id).await
            }
            Err(e) if e.kind == AgentErrorKind::Unavailable => self.wait_for_agent(id, &e).await,
            Err(e) => {
                let change = ContainerChange {
                    status: Some(ContainerStatus::Error.as_str().into()),
                    status_reason: Some(Some(format!("delete failed: {}", e.message))),
                    task_state: Some(None),
                    ..Default::default()
                };
                self.db
                    .run(move |c| q::update(c, &id_owned, change))
                    .await?;
                self.notify(id).await
            }
        }
    }

    /// The agent is not reachable now: say so on the container and leave it in its
    /// transitional status; the reconciler resumes it when the agent reconnects.
    async fn wait_for_agent(&self, id: &str, e: &AgentError) -> Result<(), DbError> {
        tracing::warn!(container.id = %id, error = %e, "agent unavailable; will resume when it reconnects");
        let id_owned = id.to_owned();
        let change = ContainerChange {
            status_reason: Some(Some(format!(
                "Waiting for the instance's agent: {}",
                e.message
            ))),
            ..Default::default()
        };
        self.db
            .run(move |c| q::update(c, &id_owned, change))
            .await?;
        self.notify(id).await
    }

    async fn fail(&self, id: &str, action: Option<&str>, reason: &str) -> Result<(), DbError> {
        tracing::warn!(container.id = %id, reason, "container failed");
        let id_owned = id.to_owned();
        let change = ContainerChange {
            status: Some(ContainerStatus::Error.as_str().into()),
            status_reason: Some(Some(reason.to_owned())),
            task_state: Some(None),
            ..Default::default()
        };
        self.db
            .run(move |c| q::update(c, &id_owned, change))
            .await?;
        self.finish(action, Some(reason.to_owned())).await?;
        self.notify(id).await
    }

    async fn finish(&self, action: Option<&str>, error: Option<String>) -> Result<(), DbError> {
        let Some(action) = action.map(str::to_owned) else {
            return Ok(());
        };
        self.db
            .run(move |c| {
                let result = if error.is_some() { "Error" } else { "Success" };
                q::finish_action(c, &action, result, error)
            })
            .await
    }

    /// Records an observation of a container and sets its task state.
    async fn record(
        &self,
        id: &str,
        instance: &Uuid,
        observed: &ObservedContainer,
        task_state: Option<&str>,
    ) -> Result<(), DbError> {
        let id_owned = id.to_owned();
        let instance = instance.to_string();
        let observed = observed.clone();
        let task_state = task_state.map(str::to_owned);
        self.db
            .run(move |c| {
                let mut change = observation_change(&observed);
                change.task_state = Some(task_state);
                q::update(c, &id_owned, change)?;
                q::record_ports(c, &port_rows(&id_owned, &instance, &observed))
            })
            .await?;
        self.notify(id).await
    }
}

fn no_instance() -> AgentError {
    AgentError::new(
        AgentErrorKind::NotFound,
        "the container was never placed on an instance",
    )
}

/// The Zun status for a runtime state.
pub fn status_of(state: RuntimeState) -> ContainerStatus {
    match state {
        RuntimeState::Created => ContainerStatus::Created,
        RuntimeState::Running => ContainerStatus::Running,
        RuntimeState::Paused => ContainerStatus::Paused,
        RuntimeState::Restarting => ContainerStatus::Restarting,
        RuntimeState::Removing => ContainerStatus::Deleting,
        RuntimeState::Exited => ContainerStatus::Stopped,
        RuntimeState::Dead => ContainerStatus::Dead,
    }
}

/// The changes an observation makes to a container's row.
pub fn observation_change(o: &ObservedContainer) -> ContainerChange {
    let status = status_of(o.state);
    let reason = match o.state {
        RuntimeState::Exited | RuntimeState::Dead if o.oom_killed => {
            Some("OOMKilled: the container ran out of memory; raise its memory limit".to_owned())
        }
        RuntimeState::Exited | RuntimeState::Dead => o.error.clone().filter(|e| !e.is_empty()),
        _ => None,
    };
    let detail = match o.state {
        RuntimeState::Running => match o.started_at {
            Some(t) => format!("Up since {}", t.format("%Y-%m-%d %H:%M:%S")),
            None => "Up".to_owned(),
        },
        RuntimeState::Paused => "Up (Paused)".to_owned(),
        RuntimeState::Exited => {
            let code = o.exit_code.unwrap_or(0);
            let mut s = format!("Exited({code})");
            if let Some(t) = o.finished_at {
                s.push_str(&format!(" at {}", t.format("%Y-%m-%d %H:%M:%S")));
            }
            if o.oom_killed {
                s.push_str(" (OOMKilled)");
            }
            s
        }
        RuntimeState::Created => "Created".to_owned(),
        RuntimeState::Restarting => "Restarting".to_owned(),
        RuntimeState::Removing => "Removing".to_owned(),
        RuntimeState::Dead => "Dead".to_owned(),
    };
    ContainerChange {
        status: Some(status.as_str().to_owned()),
        status_reason: Some(reason),
        status_detail: Some(Some(detail)),
        runtime_id: Some(Some(o.runtime_id.clone())),
        started_at: Some(o.started_at.map(|t| t.naive_utc())),
        exit_code: Some(o.exit_code),
        finished_at: Some(o.finished_at.map(|t| t.naive_utc())),
        ..Default::default()
    }
}

/// Port rows for the host ports an observation shows.
pub fn port_rows(id: &str, instance: &str, o: &ObservedContainer) -> Vec<PortRow> {
    o.ports
        .iter()
        .filter_map(|p| {
            p.host_port.map(|h| PortRow {
                instance_id: instance.to_owned(),
                protocol: p.protocol.as_str().to_owned(),
                host_port: i32::from(h),
                container_id: id.to_owned(),
                container_port: i32::from(p.container_port),
            })
        })
        .collect()
}

/// The agent's spec for a stored container.
pub fn spec_from_row(row: &ContainerRow) -> ContainerSpec {
    let list = |s: &str| serde_json::from_str::<Vec<String>>(s).unwrap_or_default();
    let map = |s: &str| serde_json::from_str::<BTreeMap<String, String>>(s).unwrap_or_default();
    ContainerSpec {
        uuid: Uuid::parse_str(&row.id).expect("stored ids are uuids"),
        image: row.image.clone(),
        command: list(&row.command),
        entrypoint: row.entrypoint.as_deref().map(list),
        environment: map(&row.environment),
        labels: map(&row.labels),
        workdir: row.workdir.clone(),
        hostname: row.hostname.clone(),
        cpu: row.cpu,
        memory_mib: row.memory_mib,
        ports: serde_json::from_str(&row.requested_ports).unwrap_or_default(),
        restart_policy: row.restart_policy.clone(),
        restart_max_retries: row.restart_max_retries,
        interactive: row.interactive,
        tty: row.tty,
        auto_remove: row.auto_remove,
        stdin_once: row.stdin_once,
        user: row.run_user.clone(),
        // Host access a policy rule granted when the container was made, as recorded
        // then; none for almost every container.
        privileges: row
            .privileges
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok()),
        // Tenant containers never get host mounts or host networking: only instance
        // providers build specs with infra options.
        infra: None,
        // Filled in from the container's registry when the create command is built.
        registry_auth: None,
    }
}

/// Runs one container's `work` (a create, an operation or a delete) to the end. While the
/// database is unavailable (restarting, unreachable) the work is run again from the start
/// — each step is idempotent, and a finished one leaves nothing to do — so a container
/// whose work met an outage is not left in a task state that nothing resumes.
async fn until_recorded<F, Fut>(id: &str, what: &'static str, work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), DbError>>,
{
    if let Err(e) = crate::db::retry_while_unavailable(what, work).await {
        tracing::error!(container.id = %id, operation = what, error = %e, "could not be recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(state: RuntimeState) -> ObservedContainer {
        ObservedContainer {
            uuid: Uuid::nil(),
            runtime_id: "abc".into(),
            state,
            exit_code: Some(137),
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
            ports: vec![],
            restart_count: 0,
        }
    }

    #[test]
    fn runtime_states_map_to_zun_statuses() {
        assert_eq!(status_of(RuntimeState::Exited), ContainerStatus::Stopped);
        assert_eq!(status_of(RuntimeState::Running), ContainerStatus::Running);
        assert_eq!(status_of(RuntimeState::Paused), ContainerStatus::Paused);
        assert_eq!(status_of(RuntimeState::Created), ContainerStatus::Created);
    }

    #[test]
    fn an_oom_kill_is_recorded_as_the_reason() {
        let mut o = observed(RuntimeState::Exited);
        o.oom_killed = true;
        let change = observation_change(&o);
        assert_eq!(change.status.as_deref(), Some("Stopped"));
        assert!(change
            .status_reason
            .unwrap()
            .unwrap()
            .starts_with("OOMKilled"));
        assert!(change
            .status_detail
            .unwrap()
            .unwrap()
            .contains("Exited(137)"));
    }

    #[test]
    fn a_tenant_spec_never_carries_infra_options() {
        // Whatever a tenant stored (labels and environment naming mounts or networks),
        // the spec built from its row asks for no host mount and no host network.
        let mut row =
            crate::db::instances::tests::container(&Uuid::new_v4().to_string(), "p1", Some("i1"));
        row.labels = r#"{"infra":"{\"host_network\":true}"}"#.into();
        row.environment = r#"{"DOCKER_HOST":"unix:///var/run/docker.sock"}"#.into();
        let spec = spec_from_row(&row);
        assert_eq!(spec.infra, None);
        let wire = serde_json::to_value(&spec).unwrap();
        assert!(wire.get("infra").is_none(), "{wire}");
    }

    #[test]
    fn an_exit_is_recorded_with_its_code_and_time() {
        let mut o = observed(RuntimeState::Exited);
        o.finished_at = Some(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        let change = observation_change(&o);
        assert_eq!(change.exit_code, Some(Some(137)));
        assert_eq!(
            change.finished_at,
            Some(Some(
                chrono::DateTime::from_timestamp(1_700_000_000, 0)
                    .unwrap()
                    .naive_utc()
            ))
        );
    }

    #[test]
    fn a_tenant_spec_carries_the_privileges_recorded_at_create() {
        let mut row =
            crate::db::instances::tests::container(&Uuid::new_v4().to_string(), "p1", Some("i1"));
        assert_eq!(spec_from_row(&row).privileges, None);
        row.privileges = Some(r#"{"privileged":true}"#.into());
        row.run_user = Some("nobody".into());
        row.stdin_once = true;
        let spec = spec_from_row(&row);
        assert!(spec.privileges.unwrap().privileged);
        assert_eq!(spec.user.as_deref(), Some("nobody"));
        assert!(spec.stdin_once);
    }

    #[test]
    fn a_running_container_has_no_reason() {
        let change = observation_change(&observed(RuntimeState::Running));
        assert_eq!(change.status_reason, Some(None));
    }
}
