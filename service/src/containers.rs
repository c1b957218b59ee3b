//! The container service layer: what both front doors (the Zun API in [`crate::api`]
//! and the Docker endpoint in [`crate::docker_api`]) do to containers. Functions take
//! the caller and typed, already parsed input, check the container's state, record
//! the change and hand runtime work to the lifecycle; front doors only parse requests
//! and render their own views.
//!
//! Policy on the action itself is checked by the front door first (its rule names
//! are the same on both); lookups here are always scoped to the caller's project
//! unless a policy rule grants every project.

use std::collections::BTreeMap;

use berth_proto::{AgentErrorKind, Command, Outcome, PortBinding, Privileges};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::db::containers::{self as q, ContainerChange, Lookup};
use crate::db::models::{ActionRow, ContainerRow, InstanceRow, PortRow};
use crate::db::{self, now};
use crate::domain::{
    ContainerName, ContainerStatus, CpuLimit, ImageRef, MemoryMib, RestartPolicy, TaskState,
};
use crate::identity::RequestContext;
use crate::lifecycle::Operation;
use crate::policy::Target;
use crate::scheduler;
use crate::state::AppState;

use ContainerStatus as S;

/// A parsed create request.
pub struct NewContainer {
    pub name: ContainerName,
    pub image: ImageRef,
    pub command: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cpu: CpuLimit,
    pub memory: MemoryMib,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub environment: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    pub interactive: bool,
    pub tty: bool,
    pub auto_remove: bool,
    pub ports: Vec<PortBinding>,
    /// Zun's `disk`, GB (0: none asked), reserved on the instance.
    pub disk_gb: i64,
    /// Zun's `availability_zone`: the zone of the instance it goes to.
    pub availability_zone: Option<String>,
    /// Close stdin when the first attached client detaches (Docker `StdinOnce`).
    pub stdin_once: bool,
    /// The user the command runs as (Docker `User`).
    pub user: Option<String>,
    /// JSON of Docker create fields Berth does not model, for Docker's inspect.
    pub docker_config: Option<String>,
    /// Host access granted by policy (the front door checked the rules).
    pub privileges: Option<Privileges>,
    /// Refuse the name when another container of the project has it (Docker's rule;
    /// Zun allows several).
    pub unique_name: bool,
    /// Zun's `registry`: uuid or name of one of the project's registries, whose
    /// credentials pull the image. Another project's is not found (404).
    pub registry: Option<String>,
}

/// A container just recorded: its row, the host ports it reserved and its instance
/// (none when it waits for one or could not be placed).
pub struct Created {
    pub row: ContainerRow,
    pub ports: Vec<PortRow>,
    pub instance: Option<InstanceRow>,
    /// The create action, finished by the lifecycle.
    pub action_id: String,
}

/// Records a new container within the project's quota and places it, in one
/// transaction under the project's lock, then has the lifecycle make it (and start it
/// with `run`). Nothing is recorded when the request is refused.
pub async fn create(
    state: &AppState,
    ctx: &RequestContext,
    new: NewContainer,
    run: bool,
) -> Result<Created, ApiError> {
    let id = Uuid::new_v4().to_string();
    let action_id = Uuid::new_v4().to_string();
    let t = now();
    let mut row = ContainerRow {
        id: id.clone(),
        project_id: ctx.project_id.clone(),
        user_id: ctx.user_id.clone(),
        name: new.name.as_str().to_owned(),
        image: new.image.as_str().to_owned(),
        command: serde_json::to_string(&new.command).expect("strings serialise"),
        entrypoint: new
            .entrypoint
            .as_ref()
            .map(|e| serde_json::to_string(e).expect("strings serialise")),
        status: S::Creating.as_str().into(),
        status_reason: None,
        status_detail: None,
        task_state: Some(TaskState::ContainerCreating.as_str().into()),
        cpu: new.cpu.cores(),
        memory_mib: new.memory.mib(),
        environment: serde_json::to_string(&new.environment).expect("strings serialise"),
        labels: serde_json::to_string(&new.labels).expect("strings serialise"),
        requested_ports: serde_json::to_string(&new.ports).expect("ports serialise"),
        workdir: new.workdir,
        hostname: new.hostname,
        restart_policy: new.restart.name().to_owned(),
        restart_max_retries: new.restart.max_retries(),
        interactive: new.interactive,
        tty: new.tty,
        auto_remove: new.auto_remove,
        run_requested: run,
        instance_id: None,
        runtime_id: None,
        started_at: None,
        created_at: t,
        updated_at: t,
        exit_code: None,
        finished_at: None,
        stdin_once: new.stdin_once,
        run_user: new.user,
        docker_config: new.docker_config,
        privileges: new
            .privileges
            .as_ref()
            .map(|p| serde_json::to_string(p).expect("privileges serialise")),
        registry_id: None,
    };
    let unique_name = new.unique_name;
    let registry = new.registry;
    let ports = new.ports;
    let action = ActionRow {
        id: action_id.clone(),
        container_id: id.clone(),
        project_id: ctx.project_id.clone(),
        user_id: ctx.user_id.clone(),
        action: "create".into(),
        start_time: t,
        finish_time: None,
        result: None,
        message: None,
    };
    let project = ctx.project_id.clone();
    let providers = state.providers.clone();
    let ask = scheduler::Ask {
        cpu: row.cpu,
        memory_mib: row.memory_mib,
        disk_gb: new.disk_gb,
        host_ports: ports
            .iter()
            .filter_map(|p| {
                p.host_port
                    .map(|h| (p.protocol.as_str().to_owned(), i32::from(h)))
            })
            .collect(),
        availability_zone: new.availability_zone,
    };
    let placed = state
        .db
        .run(move |c| {
            // One transaction under the project's lock: the quota check, the placement
            // (which may record a new instance) and the container row that reserves
            // its room. A refusal rolls it all back, so no instance is left recorded
            // for a container that was never made.
            use diesel::Connection as _;
            let result = c.transaction::<_, CreateAbort, _>(|c| {
                crate::db::quotas::lock_project(c, &project)?;
                if let Some(key) = &registry {
                    let rows = crate::db::zun::find_registries(c, &project, key)?;
                    let found = crate::api::registries::pick(rows, key)
                        .map_err(CreateAbort::Refused)?;
                    row.image = crate::api::registries::image_in(&row.image, &found)
                        .map_err(CreateAbort::Refused)?;
                    row.registry_id = Some(found.id);
                }
                if unique_name {
                    if let Some(other) = name_holder(c, &project, &row.name)? {
                        return Err(CreateAbort::Refused(ApiError::Conflict(format!(
                            "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                            row.name,
                            crate::docker_api::ids::docker_id(&other.id)
                        ))));
                    }
                }
                let over = crate::db::quotas::exceeded_by_one_more(
                    c,
                    &project,
                    row.cpu,
                    row.memory_mib,
                    ask.disk_gb,
                )?;
                if !over.is_empty() {
                    return Err(CreateAbort::Refused(over_quota(&over)));
                }
                // A container that fits none of the project's instances gets a new one
                // made (within the `instances` quota); it waits for it in Creating.
                let placement = scheduler::place(c, &project, &ask, &providers)?
                    .map_err(|r| CreateAbort::Refused(refused_placement(r, "container")))?;
                if let Some(task) = placement.task_state {
                    row.task_state = Some(task.into());
                }
                let instance = placement.instance;
                let port_rows: Vec<PortRow> = match &instance {
                    Some(i) => ports
                        .iter()
                        .filter_map(|p| {
                            p.host_port.map(|h| PortRow {
                                instance_id: i.id.clone(),
                                protocol: p.protocol.as_str().into(),
                                host_port: i32::from(h),
                                container_id: row.id.clone(),
                                container_port: i32::from(p.container_port),
                            })
                        })
                        .collect(),
                    None => Vec::new(),
                };
                match &instance {
                    Some(i) => row.instance_id = Some(i.id.clone()),
                    None => {
                        row.status = S::Error.as_str().into();
                        row.task_state = None;
                        row.status_reason = Some("There are not enough hosts available.".into());
                    }
                }
                match q::insert_reservation(c, &row, ask.disk_gb, &port_rows) {
                    Ok(()) => {}
                    // A port the engine chose for another container, recorded since
                    // the placement read (that write does not take the project lock).
                    Err(e) if db::is_unique_violation(&e) => {
                        let inst = instance.as_ref().expect("ports are only reserved on an instance");
                        for p in &port_rows {
                            if let Some(holder) = q::port_holder(c, &inst.id, &p.protocol, p.host_port)? {
                                return Err(CreateAbort::Refused(ApiError::Conflict(format!(
                                    "Host port {}/{} is already published on instance {} by container {holder}; choose another host port, or give only the container port to let the engine pick one",
                                    p.host_port, p.protocol, inst.id
                                ))));
                            }
                        }
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                }
                q::insert_action(c, &action)?;
                let ports = q::ports_of(c, std::slice::from_ref(&row.id))?;
                Ok((row, ports, instance))
            });
            CreateAbort::split(result)
        })
        .await??;
    let (row, ports, instance) = placed;
    tracing::info!(container.id = %id, project.id = %ctx.project_id, run, "container accepted");
    if row.instance_id.is_some() {
        state
            .lifecycle
            .spawn_create(id.clone(), Some(action_id.clone()));
    }
    Ok(Created {
        row,
        ports,
        instance,
        action_id,
    })
}

/// How the API answers a placement refusal; an impossible ask is named as the
/// `what` (container or capsule) that asked.
pub(crate) fn refused_placement(refusal: scheduler::Refusal, what: &str) -> ApiError {
    match refusal {
        scheduler::Refusal::Quota(e) => over_quota(std::slice::from_ref(&e)),
        scheduler::Refusal::Impossible(why) => {
            ApiError::BadRequest(why.replace("The container asks", &format!("The {what} asks")))
        }
        scheduler::Refusal::PortTaken(why) => ApiError::Conflict(why),
    }
}

/// Why a create's transaction was rolled back.
pub(crate) enum CreateAbort {
    /// The request cannot be met; the error says why.
    Refused(ApiError),
    /// The database failed.
    Db(crate::db::DbError),
}

impl CreateAbort {
    /// A rolled-back transaction's end as `Db::run` returns it: a refusal is the
    /// answer to give, a database failure the run's own error.
    pub(crate) fn split<T>(
        result: Result<T, CreateAbort>,
    ) -> Result<Result<T, ApiError>, crate::db::DbError> {
        match result {
            Ok(done) => Ok(Ok(done)),
            Err(CreateAbort::Refused(e)) => Ok(Err(e)),
            Err(CreateAbort::Db(e)) => Err(e),
        }
    }
}

impl From<crate::db::DbError> for CreateAbort {
    fn from(e: crate::db::DbError) -> Self {
        CreateAbort::Db(e)
    }
}

impl From<diesel::result::Error> for CreateAbort {
    fn from(e: diesel::result::Error) -> Self {
        CreateAbort::Db(e.into())
    }
}

/// Zun's answer to a create over quota: `Quota exceeded for resources: ['containers']`,
/// followed by what is used and what to do.
pub fn over_quota(over: &[crate::db::quotas::Exceeded]) -> ApiError {
    let names: Vec<String> = over
        .iter()
        .map(|e| format!("'{}'", e.resource.name()))
        .collect();
    let detail: Vec<String> = over
        .iter()
        .map(|e| {
            format!(
                "{} {} in use + {} requested > limit {}",
                e.resource.name(),
                e.in_use,
                e.requested,
                e.limit
            )
        })
        .collect();
    ApiError::OverQuota(format!(
        "Quota exceeded for resources: [{}]. ({}.) Delete containers, or ask an admin to raise the project's quota (zun quota-update, or PUT /v1/quotas/PROJECT_ID).",
        names.join(", "),
        detail.join("; ")
    ))
}

/// Which projects a lookup searches.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Only the caller's project: another project's container is not found.
    Own,
    /// Every project (`all_projects=true`), allowed by this policy rule.
    AllProjects(&'static str),
}

impl Scope {
    pub fn of(all_projects: bool, rule: &'static str) -> Scope {
        if all_projects {
            Scope::AllProjects(rule)
        } else {
            Scope::Own
        }
    }

    /// The project a lookup is limited to (`None`: every project), after checking
    /// that policy lets the caller search every project when it asks to.
    pub fn project(
        self,
        state: &AppState,
        ctx: &RequestContext,
    ) -> Result<Option<String>, ApiError> {
        match self {
            Scope::Own => Ok(Some(ctx.project_id.clone())),
            Scope::AllProjects(rule) => {
                state.policy.enforce(rule, ctx, &Target::own(ctx))?;
                Ok(None)
            }
        }
    }
}

/// Looks a container up as the caller may see it: only its own project's, unless policy
/// lets the caller search every project. Another project's container is simply not
/// found (404), never forbidden.
pub async fn find(
    state: &AppState,
    ctx: &RequestContext,
    ident: &str,
    scope: Scope,
) -> Result<ContainerRow, ApiError> {
    let project = scope.project(state, ctx)?;
    let ident_owned = ident.to_owned();
    match state
        .db
        .run(move |c| q::lookup(c, project.as_deref(), &ident_owned))
        .await?
    {
        Lookup::Found(row) => Ok(*row),
        Lookup::NotFound => Err(ApiError::NotFound(format!(
            "Container {ident} could not be found."
        ))),
        Lookup::Ambiguous => Err(ApiError::Conflict(
            "Multiple containers exist with same name. Please use the container uuid instead."
                .into(),
        )),
    }
}

/// Refuses an action the container's status does not allow, as Zun does.
pub fn require_status(
    row: &ContainerRow,
    allowed: &[ContainerStatus],
    action: &str,
) -> Result<(), ApiError> {
    let status = ContainerStatus::from_db(&row.status);
    if allowed.contains(&status) {
        Ok(())
    } else {
        Err(ApiError::InvalidState(format!(
            "Cannot {action} container {} in {status} state.",
            row.id
        )))
    }
}

/// Records an action and sets the task state, unless another operation is in progress.
pub async fn begin(
    state: &AppState,
    ctx: &RequestContext,
    row: &ContainerRow,
    action: &str,
    change: ContainerChange,
) -> Result<String, ApiError> {
    if let Some(task) = &row.task_state {
        return Err(ApiError::InvalidState(format!(
            "Cannot {action} container {} while it is busy ({task}); wait for it to finish and retry.",
            row.id
        )));
    }
    let action_row = ActionRow {
        id: Uuid::new_v4().to_string(),
        container_id: row.id.clone(),
        project_id: ctx.project_id.clone(),
        user_id: ctx.user_id.clone(),
        action: action.to_owned(),
        start_time: now(),
        finish_time: None,
        result: None,
        message: None,
    };
    let id = action_row.id.clone();
    let container = row.id.clone();
    state
        .db
        .run(move |c| {
            q::insert_action(c, &action_row)?;
            q::update(c, &container, change)
        })
        .await?;
    Ok(id)
}

/// Maps an agent's failure during a synchronous call.
pub fn agent_error(e: berth_proto::AgentError) -> ApiError {
    match e.kind {
        AgentErrorKind::Unavailable => ApiError::Unavailable(format!(
            "{} Retry when the instance's agent is connected.",
            e.message
        )),
        AgentErrorKind::NotFound => ApiError::NotFound(e.message),
        AgentErrorKind::Conflict => ApiError::Conflict(e.message),
        AgentErrorKind::ImageNotFound => ApiError::BadRequest(e.message),
        AgentErrorKind::Runtime => {
            ApiError::Internal(anyhow::anyhow!("agent runtime error: {}", e.message))
        }
    }
}

/// The container of `project` named `name`, if any.
fn name_holder(
    c: &mut db::DbConnection,
    project: &str,
    name: &str,
) -> Result<Option<ContainerRow>, db::DbError> {
    use db::schema::containers;
    use diesel::prelude::*;
    Ok(containers::table
        .filter(containers::project_id.eq(project))
        .filter(containers::name.eq(name))
        .select(ContainerRow::as_select())
        .first(c)
        .optional()?)
}

/// A runtime operation a caller asks for: the lifecycle's own operation type, with
/// the rules both front doors apply to it.
pub use crate::lifecycle::Operation as Op;

impl Op {
    /// The policy rule of this operation (the same for both front doors).
    pub fn rule(&self) -> &'static str {
        match self {
            Op::Start => "container:start",
            Op::Stop { .. } => "container:stop",
            Op::Reboot { .. } => "container:reboot",
            Op::Kill { .. } => "container:kill",
            Op::Pause => "container:pause",
            Op::Unpause => "container:unpause",
        }
    }

    /// The statuses it may start from (Zun's state table).
    pub fn allowed(&self) -> &'static [ContainerStatus] {
        match self {
            Op::Start => &[S::Created, S::Stopped, S::Error],
            Op::Stop { .. } | Op::Kill { .. } | Op::Pause => &[S::Running],
            Op::Reboot { .. } => &[S::Created, S::Running, S::Stopped, S::Error],
            Op::Unpause => &[S::Paused],
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop { .. } => "stop",
            Op::Reboot { .. } => "reboot",
            Op::Kill { .. } => "kill",
            Op::Pause => "pause",
            Op::Unpause => "unpause",
        }
    }
}

/// Checks the container's status, records the action and has the lifecycle run it.
/// Returns the action's id; the action row says when and how it ended.
pub async fn operate(
    state: &AppState,
    ctx: &RequestContext,
    row: &ContainerRow,
    op: Op,
) -> Result<String, ApiError> {
    let name = op.name();
    require_status(row, op.allowed(), name)?;
    let task = match &op {
        Op::Start => TaskState::ContainerStarting,
        Op::Stop { .. } => TaskState::ContainerStopping,
        Op::Reboot { .. } => TaskState::ContainerRebooting,
        Op::Kill { .. } => TaskState::ContainerKilling,
        Op::Pause => TaskState::ContainerPausing,
        Op::Unpause => TaskState::ContainerUnpausing,
    };
    let operation = op;
    let mut change = ContainerChange {
        task_state: Some(Some(task.as_str().into())),
        ..Default::default()
    };
    if matches!(operation, Operation::Reboot { .. }) {
        change.status = Some(S::Restarting.as_str().into());
    }
    let action = begin(state, ctx, row, name, change).await?;
    tracing::info!(container.id = %row.id, action = name, "action accepted");
    state
        .lifecycle
        .spawn_operation(row.id.clone(), action.clone(), operation);
    Ok(action)
}

/// Deletes a container: without `force` only from a status that allows it (with
/// `stop`, a running one is stopped first) and when no operation is in progress.
/// The lifecycle removes it from its instance, then its row.
pub async fn delete(
    state: &AppState,
    row: &ContainerRow,
    force: bool,
    stop: bool,
) -> Result<(), ApiError> {
    if !force {
        let allowed: &[ContainerStatus] = if stop {
            &[S::Running, S::Created, S::Error, S::Stopped, S::Dead]
        } else {
            &[S::Created, S::Error, S::Stopped, S::Dead]
        };
        require_status(row, allowed, "delete")?;
        if let Some(task) = &row.task_state {
            return Err(ApiError::InvalidState(format!(
                "Cannot delete container {} while it is busy ({task}); wait for it to finish, or delete with force.",
                row.id
            )));
        }
    }
    let id = row.id.clone();
    let change = ContainerChange {
        status: Some(S::Deleting.as_str().into()),
        task_state: Some(Some(TaskState::ContainerDeleting.as_str().into())),
        status_reason: Some(None),
        ..Default::default()
    };
    state.db.run(move |c| q::update(c, &id, change)).await?;
    tracing::info!(container.id = %row.id, force, stop, "delete accepted");
    state.lifecycle.spawn_delete(row.id.clone(), stop);
    Ok(())
}

/// What an update changes; `None` keeps a field.
#[derive(Debug, Default, Clone)]
pub struct Update {
    pub name: Option<ContainerName>,
    pub cpu: Option<CpuLimit>,
    pub memory: Option<MemoryMib>,
    pub restart: Option<RestartPolicy>,
}

/// Renames and resizes a container. Growth counts against the quota: the new size is
/// checked and recorded under the project lock first, and put back if the agent
/// cannot apply it. Returns the row as it is afterwards.
pub async fn update(
    state: &AppState,
    row: &ContainerRow,
    up: Update,
) -> Result<ContainerRow, ApiError> {
    let Update {
        name,
        cpu,
        memory,
        restart,
    } = up;
    if cpu.is_some() || memory.is_some() || restart.is_some() {
        require_status(
            row,
            &[S::Created, S::Running, S::Stopped, S::Paused],
            "update",
        )?;
        let (instance, container) = placement_or(row, "is not placed on an instance")?;
        let (id, project) = (row.id.clone(), row.project_id.clone());
        let (new_cpu, new_mem) = (cpu.map(CpuLimit::cores), memory.map(MemoryMib::mib));
        let previous = state
            .db
            .run(move |c| {
                crate::db::quotas::resize_within_quota(c, &project, &id, new_cpu, new_mem)
            })
            .await?
            .map_err(|over| over_quota(&over))?;
        let cmd = Command::Update {
            container,
            cpu: new_cpu,
            memory_mib: new_mem,
            restart: restart
                .as_ref()
                .map(|r| (r.name().to_owned(), r.max_retries())),
        };
        if let Err(e) = state.agents.call(instance, None, cmd).await {
            if let Some((old_cpu, old_mem)) = previous {
                let id = row.id.clone();
                let undo = ContainerChange {
                    cpu: Some(old_cpu),
                    memory_mib: Some(old_mem),
                    ..Default::default()
                };
                state.db.run(move |c| q::update(c, &id, undo)).await?;
            }
            return Err(agent_error(e));
        }
    }
    let id = row.id.clone();
    let change = ContainerChange {
        name: name.map(|n| n.as_str().to_owned()),
        cpu: cpu.map(CpuLimit::cores),
        memory_mib: memory.map(MemoryMib::mib),
        // Applied by the engine above; recorded so that a re-create keeps it.
        restart_policy: restart.as_ref().map(|r| r.name().to_owned()),
        restart_max_retries: restart.as_ref().map(RestartPolicy::max_retries),
        ..Default::default()
    };
    let updated = state
        .db
        .run(move |c| {
            q::update(c, &id, change)?;
            q::get(c, &id)
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Container {} could not be found.", row.id)))?;
    state.watch.changed(&updated);
    Ok(updated)
}

/// Which logs to read.
#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    pub stdout: bool,
    pub stderr: bool,
    pub timestamps: bool,
    pub tail: Option<u64>,
    pub since: Option<i64>,
}

/// A container's logs so far, read from its agent.
pub async fn logs(
    state: &AppState,
    row: &ContainerRow,
    req: LogsRequest,
) -> Result<String, ApiError> {
    require_status(
        row,
        &[
            S::Created,
            S::Error,
            S::Paused,
            S::Running,
            S::Stopped,
            S::Unknown,
        ],
        "logs",
    )?;
    let (instance, container) = placement_or(row, "was never placed; it has no logs.")?;
    let cmd = Command::Logs {
        container,
        stdout: req.stdout,
        stderr: req.stderr,
        timestamps: req.timestamps,
        tail: req.tail,
        since: req.since,
    };
    match state.agents.call(instance, None, cmd).await {
        Ok(Outcome::Logs(text)) => Ok(text),
        Ok(other) => Err(ApiError::Internal(anyhow::anyhow!(
            "unexpected reply to logs: {other:?}"
        ))),
        Err(e) => Err(agent_error(e)),
    }
}

/// Readings of a container's resource usage, as its agent's engine reports them.
pub struct Stats {
    output: crate::agents::StreamOutput,
    /// Bytes received and not yet a whole line.
    pending: Vec<u8>,
    container: String,
}

/// Longest reading accepted (the engine's are a few KiB); more without a newline means
/// the stream is not what the agent promised.
const MAX_STATS_READING: usize = 1 << 20;

impl Stats {
    /// The next reading: Docker's stats JSON for the container, unchanged. `None` once
    /// the stream is over (after the one reading of a snapshot, or when a followed
    /// container stops).
    pub async fn next(&mut self) -> Option<Result<serde_json::Value, ApiError>> {
        use crate::agents::StreamEvent;
        use berth_proto::StreamEnd;
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!(
                        "the agent sent a resource usage reading of container {} that is not JSON: {e}",
                        self.container
                    ))
                }));
            }
            if self.pending.len() > MAX_STATS_READING {
                self.pending.clear();
                return Some(Err(ApiError::Internal(anyhow::anyhow!(
                    "the agent sent a resource usage reading of container {} over {MAX_STATS_READING} bytes",
                    self.container
                ))));
            }
            match self.output.next().await? {
                StreamEvent::Data(data) => self.pending.extend_from_slice(&data.data),
                StreamEvent::End(StreamEnd::Failed { error }) => {
                    return Some(Err(agent_error(error)))
                }
                StreamEvent::End(_) => {
                    // A last reading without its newline still counts.
                    let rest = std::mem::take(&mut self.pending);
                    if rest.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    self.pending = rest;
                    self.pending.push(b'\n');
                }
            }
        }
    }
}

/// A container's resource usage from its agent: one reading (`stream == false`) or a
/// reading about every second until the container stops. The caller checks the
/// container's status as its front door requires; a container that was never placed
/// has no usage to read (409).
pub async fn stats(state: &AppState, row: &ContainerRow, stream: bool) -> Result<Stats, ApiError> {
    let (instance, container) =
        placement_or(row, "was never placed; it has no resource usage to read.")?;
    let open = berth_proto::StreamOpen::Stats { container, stream };
    let stream = state
        .agents
        .open_stream(instance, None, open)
        .await
        .map_err(agent_error)?;
    Ok(Stats {
        output: stream.output,
        pending: Vec::new(),
        container: row.id.clone(),
    })
}

// ---------------------------------------------------------------------------------
// Operations on a running container's processes and files (Zun's execute, top,
// resize, rename, rebuild, commit, get/put archive). The Zun routes are in
// `api/container_ops.rs`, the WebSocket of attach and interactive exec in
// `api/zun_ws.rs`.

/// Largest output a non-interactive exec returns; the rest is cut (and said so).
pub const MAX_EXEC_OUTPUT: usize = 1 << 20;

/// The instance and engine-side uuid of a placed container.
pub fn placement_of(row: &ContainerRow) -> Result<(Uuid, Uuid), ApiError> {
    placement_or(
        row,
        "is not placed on an instance yet; wait until it is created.",
    )
}

/// The instance and engine-side uuid of a placed container; an unplaced one is a 409
/// "Container <id> <unplaced>".
fn placement_or(row: &ContainerRow, unplaced: &str) -> Result<(Uuid, Uuid), ApiError> {
    let instance = row
        .instance_id
        .as_deref()
        .and_then(|i| Uuid::parse_str(i).ok())
        .ok_or_else(|| ApiError::InvalidState(format!("Container {} {unplaced}", row.id)))?;
    let container = Uuid::parse_str(&row.id).map_err(|e| ApiError::Internal(e.into()))?;
    Ok((instance, container))
}

/// Runs `cmd` in a running container to the end and returns its output (stdout and
/// stderr as they came, cut at [`MAX_EXEC_OUTPUT`]) and exit code.
pub async fn exec_run(
    state: &AppState,
    row: &ContainerRow,
    cmd: Vec<String>,
) -> Result<(String, Option<i64>), ApiError> {
    require_status(row, &[S::Running], "execute")?;
    let (instance, container) = placement_of(row)?;
    let open = berth_proto::StreamOpen::Exec {
        container,
        exec: berth_proto::ExecSpec {
            cmd,
            env: Vec::new(),
            workdir: None,
            user: None,
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
            console_size: None,
        },
    };
    let crate::agents::AgentStream { input, mut output } = state
        .agents
        .open_stream(instance, None, open)
        .await
        .map_err(agent_error)?;
    input.close_stdin().await;
    let mut out = Vec::new();
    let mut cut = false;
    let code = loop {
        match output.next().await {
            Some(crate::agents::StreamEvent::Data(d)) => {
                let room = MAX_EXEC_OUTPUT.saturating_sub(out.len());
                cut |= d.data.len() > room;
                out.extend_from_slice(&d.data[..d.data.len().min(room)]);
            }
            Some(crate::agents::StreamEvent::End(berth_proto::StreamEnd::Exited { code })) => {
                break code
            }
            Some(crate::agents::StreamEvent::End(berth_proto::StreamEnd::Failed { error })) => {
                return Err(agent_error(error))
            }
            Some(crate::agents::StreamEvent::End(berth_proto::StreamEnd::Finished)) | None => {
                break None
            }
        }
    };
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if cut {
        text.push_str(&format!(
            "\n[Berth: output cut at {} MiB]\n",
            MAX_EXEC_OUTPUT >> 20
        ));
    }
    tracing::info!(container.id = %row.id, exit_code = ?code, "exec ran");
    Ok((text, code))
}

/// The container's processes (`ps` with `ps_args`).
pub async fn top(
    state: &AppState,
    row: &ContainerRow,
    ps_args: Option<String>,
) -> Result<(Vec<String>, Vec<Vec<String>>), ApiError> {
    require_status(row, &[S::Running], "top")?;
    let (instance, container) = placement_of(row)?;
    match state
        .agents
        .call(instance, None, Command::Top { container, ps_args })
        .await
    {
        Ok(Outcome::Top { titles, processes }) => Ok((titles, processes)),
        Ok(other) => Err(ApiError::Internal(anyhow::anyhow!(
            "unexpected reply to top: {other:?}"
        ))),
        // `ps` refusing its arguments is the caller's mistake.
        Err(e) if e.kind == AgentErrorKind::Runtime => Err(ApiError::BadRequest(format!(
            "The processes of container {} could not be listed: {}. Check ps_args.",
            row.id, e.message
        ))),
        Err(e) => Err(agent_error(e)),
    }
}

/// Sets the TTY size of the container's main process.
pub async fn resize_tty(
    state: &AppState,
    row: &ContainerRow,
    height: u16,
    width: u16,
) -> Result<(), ApiError> {
    require_status(row, &[S::Running], "resize")?;
    if !row.tty {
        return Err(ApiError::BadRequest(format!(
            "Container {} has no TTY to resize; create it with tty (openstack appcontainer run --tty).",
            row.id
        )));
    }
    let (instance, container) = placement_of(row)?;
    state
        .agents
        .call(
            instance,
            None,
            Command::Resize {
                container,
                height,
                width,
            },
        )
        .await
        .map_err(agent_error)?;
    Ok(())
}

/// Zun's rename: the same name again is a conflict.
pub async fn rename(
    state: &AppState,
    row: &ContainerRow,
    name: ContainerName,
) -> Result<ContainerRow, ApiError> {
    if row.name == name.as_str() {
        return Err(ApiError::Conflict(format!(
            "The new name for the container is the same as the old name {}; choose another name.",
            row.name
        )));
    }
    update(
        state,
        row,
        Update {
            name: Some(name),
            ..Default::default()
        },
    )
    .await
}

/// Rebuilds a container: removes its engine container and makes it again (same uuid,
/// optionally from another image), started again when it was running. Recorded as a
/// `rebuild` action, finished by the lifecycle's create. The row is in Creating
/// (task `container_rebuilding`) before the engine container is removed, so the
/// removal's event is not mistaken for a loss, and a crash half-way is resumed as a
/// create by the reconciler.
pub async fn rebuild(
    state: &AppState,
    ctx: &RequestContext,
    row: &ContainerRow,
    image: Option<ImageRef>,
) -> Result<String, ApiError> {
    const REBUILDING: &str = "container_rebuilding";
    require_status(
        row,
        &[S::Created, S::Running, S::Stopped, S::Error],
        "rebuild",
    )?;
    let (instance, container) = placement_of(row)?;
    let run = ContainerStatus::from_db(&row.status) == S::Running;
    let change = ContainerChange {
        status: Some(S::Creating.as_str().into()),
        status_reason: Some(None),
        task_state: Some(Some(REBUILDING.into())),
        ..Default::default()
    };
    let action = begin(state, ctx, row, "rebuild", change).await?;
    let id = row.id.clone();
    let image = image.map(|i| i.as_str().to_owned());
    state
        .db
        .run(move |c| {
            use db::schema::containers as t;
            use diesel::prelude::*;
            if let Some(image) = &image {
                diesel::update(t::table.filter(t::id.eq(&id)))
                    .set(t::image.eq(image))
                    .execute(c)?;
            }
            diesel::update(t::table.filter(t::id.eq(&id)))
                .set(t::run_requested.eq(run))
                .execute(c)?;
            Ok(())
        })
        .await?;
    // Removed first: a create finds an existing container and keeps it.
    if let Err(e) = state
        .agents
        .call(
            instance,
            Uuid::parse_str(&action).ok(),
            Command::Remove {
                container,
                force: true,
            },
        )
        .await
    {
        // Nothing was removed: the container is as it was.
        let (id, aid, msg) = (row.id.clone(), action.clone(), e.message.clone());
        let previous = row.status.clone();
        state
            .db
            .run(move |c| {
                q::finish_action(c, &aid, "error", Some(msg))?;
                q::update(
                    c,
                    &id,
                    ContainerChange {
                        status: Some(previous),
                        task_state: Some(None),
                        ..Default::default()
                    },
                )
            })
            .await?;
        return Err(agent_error(e));
    }
    let id = row.id.clone();
    let cleared = ContainerChange {
        status_detail: Some(None),
        runtime_id: Some(None),
        started_at: Some(None),
        exit_code: Some(None),
        finished_at: Some(None),
        ..Default::default()
    };
    let updated = state
        .db
        .run(move |c| {
            q::update(c, &id, cleared)?;
            q::get(c, &id)
        })
        .await?;
    if let Some(updated) = &updated {
        state.watch.changed(updated);
    }
    tracing::info!(container.id = %row.id, run, "rebuild accepted");
    state
        .lifecycle
        .spawn_create(row.id.clone(), Some(action.clone()));
    Ok(action)
}

/// Makes an image on the container's instance from its filesystem. Recorded as a
/// `commit` action; returns the action's id and the image's content id.
pub async fn commit(
    state: &AppState,
    ctx: &RequestContext,
    row: &ContainerRow,
    repository: String,
    tag: Option<String>,
) -> Result<(String, String), ApiError> {
    require_status(row, &[S::Running, S::Stopped, S::Paused], "commit")?;
    let (instance, container) = placement_of(row)?;
    let action = begin(state, ctx, row, "commit", ContainerChange::default()).await?;
    let result = state
        .agents
        .call(
            instance,
            Uuid::parse_str(&action).ok(),
            Command::Commit {
                container,
                repository: repository.clone(),
                tag: tag.clone(),
            },
        )
        .await;
    let (outcome, message) = match &result {
        Ok(Outcome::Committed { image_id }) => (
            "success",
            format!(
                "{repository}:{} is image {image_id}",
                tag.as_deref().unwrap_or("latest")
            ),
        ),
        Ok(other) => ("error", format!("unexpected reply to commit: {other:?}")),
        Err(e) => ("error", e.message.clone()),
    };
    let aid = action.clone();
    state
        .db
        .run(move |c| q::finish_action(c, &aid, outcome, Some(message)))
        .await?;
    match result {
        Ok(Outcome::Committed { image_id }) => {
            tracing::info!(container.id = %row.id, image.id = %image_id, "container committed");
            Ok((action, image_id))
        }
        Ok(other) => Err(ApiError::Internal(anyhow::anyhow!(
            "unexpected reply to commit: {other:?}"
        ))),
        Err(e) => Err(agent_error(e)),
    }
}

/// The statuses Zun copies files in and out of.
const ARCHIVE_STATUSES: &[ContainerStatus] = &[S::Created, S::Paused, S::Running, S::Stopped];

/// A tar archive of `path` in the container, and the path's stat.
pub async fn get_archive(
    state: &AppState,
    row: &ContainerRow,
    path: &str,
) -> Result<(Vec<u8>, serde_json::Value), ApiError> {
    require_status(row, ARCHIVE_STATUSES, "get_archive")?;
    let (instance, container) = placement_of(row)?;
    let cmd = Command::GetArchive {
        container,
        path: path.to_owned(),
    };
    match state.agents.call(instance, None, cmd).await {
        Ok(Outcome::Archive { data, stat }) => Ok((data, stat)),
        Ok(other) => Err(ApiError::Internal(anyhow::anyhow!(
            "unexpected reply to get_archive: {other:?}"
        ))),
        // Zun answers a missing path with 400 (Invalid).
        Err(e) if e.kind == AgentErrorKind::NotFound && e.message.contains(path) => {
            Err(ApiError::BadRequest(e.message))
        }
        Err(e) => Err(agent_error(e)),
    }
}

/// Extracts a tar archive into the directory `path` of the container.
pub async fn put_archive(
    state: &AppState,
    row: &ContainerRow,
    path: &str,
    data: Vec<u8>,
) -> Result<(), ApiError> {
    require_status(row, ARCHIVE_STATUSES, "put_archive")?;
    let (instance, container) = placement_of(row)?;
    let cmd = Command::PutArchive {
        container,
        path: path.to_owned(),
        data,
    };
    match state.agents.call(instance, None, cmd).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind == AgentErrorKind::NotFound && e.message.contains(path) => {
            Err(ApiError::BadRequest(e.message))
        }
        // The engine refuses an archive it cannot read with a 400 (a runtime error here).
        Err(e) if e.kind == AgentErrorKind::Runtime => Err(ApiError::BadRequest(format!(
            "The archive could not be extracted into {path}: {}. Send a tar archive.",
            e.message
        ))),
        Err(e) => Err(agent_error(e)),
    }
}
