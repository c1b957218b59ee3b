//! Capsule operations: create, update, delete, lookup, and the background work that
//! hands a capsule's spec to its instance's agent.
//!
//! A capsule lands on one instance of its project as a unit: its summed cpu and memory
//! (Zun's sums: Σ app containers, max with each init container) and its host ports are
//! checked against the quota and placed by the scheduler in one transaction under the
//! project lock, exactly as a container create is; the capsule row is the reservation
//! (triggers count it on the instance, `capsule_ports` holds its ports).
//!
//! The agent owns the pod's runtime state: `ApplyPod` stores the spec on its disk and
//! it reconciles on its own. The service only delivers specs (retrying while the agent
//! is unavailable, and again on each agent (re)connection, see [`resume_instance`]) and
//! records the statuses the agent reports ([`record_status`]). Every command is
//! idempotent by the capsule's uuid: the same spec twice is a no-op, a delete of an
//! unknown pod is done.

use std::time::Duration;

use berth_proto::pod::{ContainerState, PodPhase, PodSpec, PodStatus};
use berth_proto::{AgentErrorKind, Command, Outcome};
use serde_json::Value;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::containers::{agent_error, over_quota, refused_placement, CreateAbort, Scope};
use crate::db::capsules::{self as q, CapsuleChange, Lookup};
use crate::db::models::{CapsulePortRow, CapsuleRow, InstanceRow};
use crate::db::{self, instances, now, DbError};
use crate::identity::RequestContext;
use crate::scheduler;
use crate::state::AppState;

use super::manifest;

/// Capsule statuses (Zun's container status names).
pub const CREATING: &str = "Creating";
pub const RUNNING: &str = "Running";
pub const STOPPED: &str = "Stopped";
pub const ERROR: &str = "Error";
pub const UNKNOWN: &str = "Unknown";
pub const DELETING: &str = "Deleting";

/// Zun's reason when nothing can hold the capsule.
const NO_HOST: &str = "There are not enough hosts available.";

/// How long a delivery waits between attempts while the agent is unavailable: from
/// the first value, doubling, up to the second.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A capsule with its instance, as created or looked up.
pub struct Capsule {
    pub row: CapsuleRow,
    pub ports: Vec<CapsulePortRow>,
    pub instance: Option<InstanceRow>,
}

/// What a pod asks of its instance, Zun's way: the app containers' sums, raised to any
/// init container's own ask (init containers run one at a time, before the others).
pub fn pod_resources(spec: &PodSpec) -> (f64, i64) {
    let mut cpu: f64 = spec.containers.iter().map(|c| c.cpu).sum();
    let mut mem: i64 = spec.containers.iter().map(|c| c.memory_mib).sum();
    for i in &spec.init_containers {
        cpu = cpu.max(i.cpu);
        mem = mem.max(i.memory_mib);
    }
    (cpu, mem)
}

fn host_ports(spec: &PodSpec) -> Vec<(String, i32)> {
    spec.ports
        .iter()
        .filter_map(|p| {
            p.host_port
                .map(|h| (p.protocol.as_str().to_owned(), i32::from(h)))
        })
        .collect()
}

fn port_rows(spec: &PodSpec, capsule: &str, instance: &str) -> Vec<CapsulePortRow> {
    spec.ports
        .iter()
        .filter_map(|p| {
            p.host_port.map(|h| CapsulePortRow {
                instance_id: instance.to_owned(),
                protocol: p.protocol.as_str().to_owned(),
                host_port: i32::from(h),
                capsule_id: capsule.to_owned(),
                container_port: i32::from(p.container_port),
            })
        })
        .collect()
}

/// Parses a template (any accepted format); a bad template is a 400 naming the field.
fn parse(template: &Value) -> Result<manifest::ParsedPod, ApiError> {
    manifest::parse(template)
        .map_err(|e| ApiError::BadRequest(format!("Invalid capsule template: {e}")))
}

/// A refused port reservation: which port and who holds it.
fn port_conflict(
    c: &mut db::DbConnection,
    instance: &str,
    ports: &[CapsulePortRow],
) -> Result<Option<ApiError>, DbError> {
    for p in ports {
        let holder = match q::port_holder(c, instance, &p.protocol, p.host_port)? {
            Some(h) if h != p.capsule_id => Some(format!("capsule {h}")),
            _ => crate::db::containers::port_holder(c, instance, &p.protocol, p.host_port)?
                .map(|h| format!("container {h}")),
        };
        if let Some(holder) = holder {
            return Ok(Some(ApiError::Conflict(format!(
                "Host port {}/{} is already published on instance {instance} by {holder}; choose another hostPort, or leave hostPort out",
                p.host_port, p.protocol
            ))));
        }
    }
    Ok(None)
}

/// Records a new capsule within the project's quota and places it on one instance, in
/// one transaction under the project's lock, then has its spec delivered to the
/// instance's agent in the background. Nothing is recorded when it is refused.
pub async fn create(
    state: &AppState,
    ctx: &RequestContext,
    template: Value,
) -> Result<Capsule, ApiError> {
    let parsed = parse(&template)?;
    let id = Uuid::new_v4();
    let availability_zone = parsed.availability_zone.clone();
    let (cpu, memory_mib) = (parsed.cpu, parsed.memory_mib);
    let spec = parsed.into_spec(id, 1);
    let t = now();
    let mut row = CapsuleRow {
        id: id.to_string(),
        project_id: ctx.project_id.clone(),
        user_id: ctx.user_id.clone(),
        name: spec.name.clone(),
        template: template.to_string(),
        spec: serde_json::to_string(&spec).expect("pod specs serialise"),
        previous_spec: None,
        generation: 1,
        status: CREATING.into(),
        status_reason: None,
        instance_id: None,
        cpu,
        memory_mib,
        pod_status: None,
        created_at: t,
        updated_at: t,
    };
    let ask = scheduler::Ask {
        cpu,
        memory_mib,
        disk_gb: 0,
        host_ports: host_ports(&spec),
        availability_zone,
    };
    let project = ctx.project_id.clone();
    let providers = state.providers.clone();
    let placed = state
        .db
        .run(move |c| {
            use diesel::Connection as _;
            let result = c.transaction::<_, CreateAbort, _>(|c| {
                crate::db::quotas::lock_project(c, &project)?;
                let over = crate::db::quotas::exceeded_by_one_more(
                    c,
                    &project,
                    row.cpu,
                    row.memory_mib,
                    0,
                )?;
                if !over.is_empty() {
                    return Err(CreateAbort::Refused(over_quota(&over)));
                }
                let placement = scheduler::place(c, &project, &ask, &providers)?
                    .map_err(|r| CreateAbort::Refused(refused_placement(r, "capsule")))?;
                let instance = placement.instance;
                let ports = match &instance {
                    Some(i) => {
                        row.instance_id = Some(i.id.clone());
                        if placement.task_state.is_some() {
                            row.status_reason =
                                Some(format!("Waiting for instance {} to be made.", i.id));
                        }
                        port_rows(&spec, &row.id, &i.id)
                    }
                    None => {
                        row.status = ERROR.into();
                        row.status_reason = Some(NO_HOST.into());
                        Vec::new()
                    }
                };
                match q::insert(c, &row, &ports) {
                    Ok(()) => {}
                    Err(e) if db::is_unique_violation(&e) => {
                        let inst = instance.as_ref().expect("ports only on an instance");
                        if let Some(refusal) = port_conflict(c, &inst.id, &ports)? {
                            return Err(CreateAbort::Refused(refusal));
                        }
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                }
                Ok(Capsule {
                    row,
                    ports,
                    instance,
                })
            });
            CreateAbort::split(result)
        })
        .await??;
    tracing::info!(capsule.id = %placed.row.id, project.id = %ctx.project_id, instance.id = ?placed.row.instance_id, "capsule accepted");
    if placed
        .instance
        .as_ref()
        .is_some_and(|i| i.status == instances::STATUS_ACTIVE)
    {
        spawn_apply(state.clone(), placed.row.id.clone(), 1);
    }
    Ok(placed)
}

/// Looks a capsule up by uuid or name as the caller may see it: only its own
/// project's, unless `scope` lets it search every project (policy checked here).
/// Another project's capsule is not found (404), never forbidden.
pub async fn find(
    state: &AppState,
    ctx: &RequestContext,
    ident: &str,
    scope: Scope,
) -> Result<CapsuleRow, ApiError> {
    let project = scope.project(state, ctx)?;
    let ident_owned = ident.to_owned();
    match state
        .db
        .run(move |c| q::lookup(c, project.as_deref(), &ident_owned))
        .await?
    {
        Lookup::Found(row) => Ok(*row),
        Lookup::NotFound => Err(ApiError::NotFound(format!(
            "Capsule {ident} could not be found."
        ))),
        Lookup::Ambiguous => Err(ApiError::Conflict(
            "Multiple capsules exist with same name. Please use the capsule uuid instead.".into(),
        )),
    }
}

/// Replaces a capsule's spec with the one `template` describes: the generation goes
/// up by one, the current spec is kept as `previous_spec`, growth is checked against
/// the quota and against the room left on the capsule's instance (a capsule never
/// moves), and the agent is given the new spec. It replaces only the containers whose
/// spec changed, and rolls back on its own when the update fails.
pub async fn update(
    state: &AppState,
    row: &CapsuleRow,
    template: Value,
) -> Result<CapsuleRow, ApiError> {
    if row.status == DELETING {
        return Err(ApiError::InvalidState(format!(
            "Cannot update capsule {} while it is being deleted.",
            row.id
        )));
    }
    let Some(instance_id) = row.instance_id.clone() else {
        return Err(ApiError::InvalidState(format!(
            "Cannot update capsule {}: it was never placed on an instance ({}). Delete it and create it again.",
            row.id,
            row.status_reason.as_deref().unwrap_or("no reason recorded")
        )));
    };
    let parsed = parse(&template)?;
    let (cpu, memory_mib) = (parsed.cpu, parsed.memory_mib);
    let uuid = Uuid::parse_str(&row.id).map_err(|e| ApiError::Internal(e.into()))?;
    let mut spec = parsed.into_spec(uuid, row.generation + 1);
    // The name is the capsule's identity: an update keeps it.
    spec.name = row.name.clone();
    let id = row.id.clone();
    let project = row.project_id.clone();
    let generation = spec.generation;
    let new_spec = serde_json::to_string(&spec).expect("pod specs serialise");
    let ports = port_rows(&spec, &row.id, &instance_id);
    let placement = state.providers.placement();
    let template_text = template.to_string();
    let updated = state
        .db
        .run(move |c| {
            use diesel::Connection as _;
            let result = c.transaction::<_, CreateAbort, _>(|c| {
                crate::db::quotas::lock_project(c, &project)?;
                let Some(current) = q::get(c, &id)? else {
                    return Err(CreateAbort::Refused(ApiError::NotFound(format!(
                        "Capsule {id} could not be found."
                    ))));
                };
                if current.generation + 1 != generation {
                    return Err(CreateAbort::Refused(ApiError::Conflict(format!(
                        "Capsule {id} was updated meanwhile (generation {}); retry the update.",
                        current.generation
                    ))));
                }
                // Growth only: the capsule's own reservation is already counted.
                let over = crate::db::quotas::exceeded_by_one_more(
                    c,
                    &project,
                    (cpu - current.cpu).max(0.0),
                    (memory_mib - current.memory_mib).max(0),
                    0,
                )?
                .into_iter()
                .filter(|e| e.resource != crate::db::quotas::Resource::Containers)
                .collect::<Vec<_>>();
                if !over.is_empty() {
                    return Err(CreateAbort::Refused(over_quota(&over)));
                }
                if let Some(inst) = instances::get(c, &instance_id)? {
                    let cand = scheduler::Candidate {
                        used: scheduler::Used {
                            cpu: (inst.cpu_used - current.cpu).max(0.0),
                            memory_mib: inst.memory_used_mib - current.memory_mib,
                            disk_gb: inst.disk_used_gb,
                            containers: inst.container_count,
                        },
                        port_taken: false,
                        instance: InstanceRow {
                            // Room is what is checked here, not whether its agent is up.
                            status: instances::STATUS_BUILDING.into(),
                            ..inst.clone()
                        },
                    };
                    let ask = scheduler::Ask {
                        cpu,
                        memory_mib,
                        ..Default::default()
                    };
                    if !scheduler::fits(&cand, &ask, &placement) {
                        return Err(CreateAbort::Refused(ApiError::Conflict(format!(
                            "The updated capsule asks for {cpu} vCPU and {memory_mib} MiB, more than its instance {} has room for ({} vCPU × {} allocation ratio, {} MiB; {} vCPU and {} MiB used by others); ask for less",
                            inst.id,
                            inst.cpus,
                            placement.cpu_allocation_ratio,
                            inst.memory_mib,
                            cand.used.cpu,
                            cand.used.memory_mib
                        ))));
                    }
                }
                q::replace_ports(c, &id, &[])?;
                if let Some(refusal) = port_conflict(c, &instance_id, &ports)? {
                    return Err(CreateAbort::Refused(refusal));
                }
                q::replace_ports(c, &id, &ports)?;
                q::update(
                    c,
                    &id,
                    CapsuleChange {
                        template: Some(template_text),
                        previous_spec: Some(Some(current.spec.clone())),
                        spec: Some(new_spec),
                        generation: Some(generation),
                        cpu: Some(cpu),
                        memory_mib: Some(memory_mib),
                        status_reason: Some(Some(format!(
                            "Updating to generation {generation}."
                        ))),
                        ..Default::default()
                    },
                )?;
                Ok(q::get(c, &id)?.expect("updated in this transaction"))
            });
            CreateAbort::split(result)
        })
        .await??;
    tracing::info!(capsule.id = %updated.id, generation, "capsule update accepted");
    spawn_apply(state.clone(), updated.id.clone(), generation);
    Ok(updated)
}

/// Marks a capsule Deleting and has its pod removed from its instance in the
/// background; the row goes once the agent confirms (or at once when it was never
/// placed, or its instance is gone).
pub async fn delete(state: &AppState, row: &CapsuleRow) -> Result<(), ApiError> {
    let id = row.id.clone();
    state
        .db
        .run(move |c| {
            q::update(
                c,
                &id,
                CapsuleChange {
                    status: Some(DELETING.into()),
                    status_reason: Some(None),
                    ..Default::default()
                },
            )
        })
        .await?;
    tracing::info!(capsule.id = %row.id, "capsule delete accepted");
    spawn_delete(state.clone(), row.id.clone());
    Ok(())
}

/// The pod's status and each container's inspect data from its agent.
pub async fn inspect(
    state: &AppState,
    row: &CapsuleRow,
) -> Result<(PodStatus, std::collections::BTreeMap<String, Value>), ApiError> {
    let instance = row
        .instance_id
        .as_deref()
        .and_then(|i| Uuid::parse_str(i).ok())
        .ok_or_else(|| {
            ApiError::InvalidState(format!("Capsule {} is not placed on an instance.", row.id))
        })?;
    let pod = Uuid::parse_str(&row.id).map_err(|e| ApiError::Internal(e.into()))?;
    match state
        .agents
        .call(instance, None, Command::InspectPod { pod })
        .await
    {
        Ok(Outcome::PodInspect { status, containers }) => Ok((status, containers)),
        Ok(other) => Err(ApiError::Internal(anyhow::anyhow!(
            "unexpected reply to inspect_pod: {other:?}"
        ))),
        Err(e) => Err(agent_error(e)),
    }
}

/// What a delivery attempt found.
enum Delivery {
    Done,
    /// Retry later.
    Wait(String),
    /// Stop: the capsule is gone, superseded or failed (recorded).
    Stop,
}

/// Deliveries running in this process, so that a reconnecting agent does not start a
/// second loop beside one still retrying (a second would be harmless, every command
/// being idempotent, but useless).
static IN_FLIGHT: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Holds a delivery's key while it runs.
struct Claim(String);

impl Claim {
    fn take(key: String) -> Option<Claim> {
        IN_FLIGHT
            .lock()
            .expect("in-flight lock")
            .insert(key.clone())
            .then_some(Claim(key))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        IN_FLIGHT.lock().expect("in-flight lock").remove(&self.0);
    }
}

/// Delivers generation `generation` of capsule `id` to its agent, retrying while the
/// agent is unavailable, until it is delivered, a newer generation supersedes it, the
/// capsule is being deleted or gone, or its instance is gone.
pub fn spawn_apply(state: AppState, id: String, generation: i64) {
    let Some(claim) = Claim::take(format!("apply {id} {generation}")) else {
        return;
    };
    tokio::spawn(async move {
        let _claim = claim;
        let mut wait = RETRY_FIRST;
        loop {
            match apply_once(&state, &id, generation).await {
                Ok(Delivery::Done) | Ok(Delivery::Stop) => return,
                Ok(Delivery::Wait(why)) => {
                    tracing::warn!(capsule.id = %id, generation, reason = %why, "capsule spec not delivered yet; retrying");
                }
                Err(e) => {
                    tracing::error!(capsule.id = %id, error = %e, "could not deliver a capsule spec; retrying");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    });
}

/// Capsule `id` and the instance it is placed on, if the capsule still exists.
async fn with_instance(
    state: &AppState,
    id: &str,
) -> Result<Option<(CapsuleRow, Option<InstanceRow>)>, DbError> {
    let id = id.to_owned();
    state
        .db
        .run(move |c| {
            let Some(row) = q::get(c, &id)? else {
                return Ok(None);
            };
            let instance = match &row.instance_id {
                Some(i) => instances::get(c, i)?,
                None => None,
            };
            Ok(Some((row, instance)))
        })
        .await
}

async fn apply_once(state: &AppState, id: &str, generation: i64) -> Result<Delivery, DbError> {
    let Some((row, instance)) = with_instance(state, id).await? else {
        return Ok(Delivery::Stop);
    };
    if row.status == DELETING || row.generation != generation {
        return Ok(Delivery::Stop);
    }
    let Some(instance) = instance else {
        return Ok(Delivery::Stop);
    };
    match instance.status.as_str() {
        instances::STATUS_ACTIVE => {}
        instances::STATUS_BUILDING => return Ok(Delivery::Stop), // resumed on connect
        other => {
            fail(
                state,
                id,
                &format!(
                    "The capsule's instance {} is {other}: {}",
                    instance.id,
                    instance
                        .status_reason
                        .as_deref()
                        .unwrap_or("no reason recorded")
                ),
            )
            .await?;
            return Ok(Delivery::Stop);
        }
    }
    let spec: PodSpec = match serde_json::from_str(&row.spec) {
        Ok(s) => s,
        Err(e) => {
            fail(state, id, &format!("The stored spec cannot be read: {e}")).await?;
            return Ok(Delivery::Stop);
        }
    };
    let instance_uuid = Uuid::parse_str(&instance.id).expect("stored ids are uuids");
    let reply = state
        .agents
        .call(
            instance_uuid,
            None,
            Command::ApplyPod {
                spec: Box::new(spec),
            },
        )
        .await;
    match reply {
        Ok(Outcome::Pod(status)) => {
            record_status(state, &instance.id, status).await?;
            Ok(Delivery::Done)
        }
        Ok(other) => {
            fail(
                state,
                id,
                &format!("the agent answered apply_pod with {other:?}"),
            )
            .await?;
            Ok(Delivery::Stop)
        }
        Err(e) if e.kind == AgentErrorKind::Unavailable => {
            let reason = format!("Waiting for the instance's agent: {}", e.message);
            set_reason(state, id, reason.clone()).await?;
            Ok(Delivery::Wait(reason))
        }
        Err(e) => {
            fail(state, id, &e.message).await?;
            Ok(Delivery::Stop)
        }
    }
}

/// Sets capsule `id`'s status reason, keeping its status.
async fn set_reason(state: &AppState, id: &str, reason: String) -> Result<(), DbError> {
    let id = id.to_owned();
    let change = CapsuleChange {
        status_reason: Some(Some(reason)),
        ..Default::default()
    };
    state.db.run(move |c| q::update(c, &id, change)).await?;
    Ok(())
}

async fn fail(state: &AppState, id: &str, reason: &str) -> Result<(), DbError> {
    tracing::warn!(capsule.id = %id, reason, "capsule failed");
    let id = id.to_owned();
    let change = CapsuleChange {
        status: Some(ERROR.into()),
        status_reason: Some(Some(reason.to_owned())),
        ..Default::default()
    };
    state.db.run(move |c| q::update(c, &id, change)).await?;
    Ok(())
}

/// Removes capsule `id`'s pod from its instance and then its row, retrying while the
/// agent is unavailable.
pub fn spawn_delete(state: AppState, id: String) {
    let Some(claim) = Claim::take(format!("delete {id}")) else {
        return;
    };
    tokio::spawn(async move {
        let _claim = claim;
        let mut wait = RETRY_FIRST;
        loop {
            match delete_once(&state, &id).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(capsule.id = %id, error = %e, "could not delete a capsule; retrying")
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    });
}

async fn delete_once(state: &AppState, id: &str) -> Result<bool, DbError> {
    let Some((row, instance)) = with_instance(state, id).await? else {
        return Ok(true);
    };
    if row.status != DELETING {
        return Ok(true);
    }
    // Never placed, or on an instance that no longer runs anything: nothing to remove.
    let on_agent = instance.filter(|i| {
        matches!(
            i.status.as_str(),
            instances::STATUS_ACTIVE | instances::STATUS_BUILDING
        )
    });
    if let Some(instance) = on_agent {
        let pod = Uuid::parse_str(&row.id).expect("stored ids are uuids");
        let instance_uuid = Uuid::parse_str(&instance.id).expect("stored ids are uuids");
        match state
            .agents
            .call(instance_uuid, None, Command::DeletePod { pod })
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind == AgentErrorKind::Unavailable => {
                tracing::warn!(capsule.id = %id, error = %e, "agent unavailable; the capsule's delete waits for it");
                let reason = format!("Waiting for the instance's agent: {}", e.message);
                set_reason(state, id, reason).await?;
                return Ok(false);
            }
            Err(e) => {
                tracing::warn!(capsule.id = %id, error = %e, "the agent could not delete the pod; retrying");
                let reason = format!("Delete failed, retrying: {}", e.message);
                set_reason(state, id, reason).await?;
                return Ok(false);
            }
        }
    }
    let id_owned = id.to_owned();
    state.db.run(move |c| q::delete(c, &id_owned)).await?;
    tracing::info!(capsule.id = %id, "capsule deleted");
    Ok(true)
}

/// After an agent (re)connects: delivers what its capsules still need (a spec the
/// agent has not acknowledged, a delete not done). Idempotent, so resending is safe.
pub async fn resume_instance(state: &AppState, instance: &str) -> Result<(), DbError> {
    let inst = instance.to_owned();
    let rows = state.db.run(move |c| q::on_instance(c, &inst)).await?;
    for row in rows {
        if row.status == DELETING {
            spawn_delete(state.clone(), row.id.clone());
            continue;
        }
        let acknowledged = row
            .pod_status
            .as_deref()
            .and_then(|s| serde_json::from_str::<PodStatus>(s).ok())
            .is_some_and(|s| applied_generation(&row) == Some(s.generation));
        if !acknowledged && row.status != ERROR {
            spawn_apply(state.clone(), row.id.clone(), row.generation);
        }
    }
    Ok(())
}

/// The generation of the spec the row holds (after a rollback, the restored one).
fn applied_generation(row: &CapsuleRow) -> Option<i64> {
    serde_json::from_str::<PodSpec>(&row.spec)
        .ok()
        .map(|s| s.generation)
}

/// The capsule status and reason a pod status maps to.
pub fn zun_status(status: &PodStatus) -> (&'static str, Option<String>) {
    let s = match status.phase {
        PodPhase::Pending => CREATING,
        PodPhase::Running => RUNNING,
        PodPhase::Succeeded => STOPPED,
        PodPhase::Failed => ERROR,
        PodPhase::Unknown => UNKNOWN,
    };
    let mut reasons = Vec::new();
    if let Some(r) = &status.rollback {
        reasons.push(format!(
            "Update to generation {} rolled back to generation {}: {}",
            r.failed_generation, r.restored_generation, r.reason
        ));
    }
    for c in status
        .init_container_statuses
        .iter()
        .chain(&status.container_statuses)
    {
        match &c.state {
            ContainerState::Waiting { reason, message }
                if !matches!(reason.as_str(), "PodInitializing" | "ContainerCreating") =>
            {
                reasons.push(match message {
                    Some(m) => format!("{}: {reason} ({m})", c.name),
                    None => format!("{}: {reason}", c.name),
                })
            }
            ContainerState::Terminated {
                reason, exit_code, ..
            } if *exit_code != 0 || status.phase == PodPhase::Failed => {
                reasons.push(format!("{}: {reason} (exit code {exit_code})", c.name))
            }
            _ => {}
        }
    }
    if let Some(m) = &status.message {
        reasons.push(m.clone());
    }
    (s, (!reasons.is_empty()).then(|| reasons.join("; ")))
}

/// Records a pod status reported by the agent of `instance`: the status itself, the
/// capsule status and reason it maps to, and — when the agent rolled an update back —
/// the restored spec as the capsule's spec (so that the failed one is never sent
/// again; the generation counter stays, so the next update is newer than both).
pub async fn record_status(
    state: &AppState,
    instance: &str,
    status: PodStatus,
) -> Result<(), DbError> {
    let instance = instance.to_owned();
    state
        .db
        .run(move |c| fold_status(c, &instance, &status))
        .await
}

/// [`record_status`] on a connection.
pub fn fold_status(
    c: &mut db::DbConnection,
    instance: &str,
    status: &PodStatus,
) -> Result<(), DbError> {
    let id = status.uuid.to_string();
    let Some(row) = q::get(c, &id)? else {
        return Ok(());
    };
    if row.instance_id.as_deref() != Some(instance) || row.status == DELETING {
        return Ok(());
    }
    let (zun, reason) = zun_status(status);
    let mut change = CapsuleChange {
        status: Some(zun.to_owned()),
        status_reason: Some(reason),
        pod_status: Some(Some(
            serde_json::to_string(&status).expect("pod statuses serialise"),
        )),
        ..Default::default()
    };
    let current = applied_generation(&row);
    if let Some(rb) = &status.rollback {
        // The row still holds the failed spec: put the restored one back.
        if current == Some(rb.failed_generation) && status.generation == rb.restored_generation {
            if let Some(prev) = row
                .previous_spec
                .as_deref()
                .and_then(|p| serde_json::from_str::<PodSpec>(p).ok())
                .filter(|p| p.generation == rb.restored_generation)
            {
                let (cpu, mem) = pod_resources(&prev);
                change.spec = Some(serde_json::to_string(&prev).expect("pod specs serialise"));
                change.previous_spec = Some(Some(row.spec.clone()));
                change.cpu = Some(cpu);
                change.memory_mib = Some(mem);
                // Ports go back too (the restored ones were held before).
                q::replace_ports(c, &id, &port_rows(&prev, &id, instance))?;
                tracing::warn!(capsule.id = %id, failed = rb.failed_generation, restored = rb.restored_generation, reason = %rb.reason, "capsule update rolled back by its agent");
            }
        }
    } else if current.is_some_and(|g| status.generation < g) {
        // An older generation still runs while the new one is being applied.
        change.status_reason = Some(Some(format!(
            "Updating from generation {} to {}.",
            status.generation,
            current.unwrap_or_default()
        )));
    }
    q::update(c, &id, change)?;
    Ok(())
}

/// Records that the agent of `instance` no longer has the pod: a capsule being
/// deleted is gone; any other is marked Error (its spec is delivered again when the
/// agent reconnects only if it is not in Error, so this is visible, not hidden).
pub async fn record_removed(state: &AppState, instance: &str, pod: Uuid) -> Result<(), DbError> {
    let id = pod.to_string();
    let instance = instance.to_owned();
    state
        .db
        .run(move |c| {
            let Some(row) = q::get(c, &id)? else {
                return Ok(());
            };
            if row.instance_id.as_deref() != Some(&*instance) {
                return Ok(());
            }
            if row.status == DELETING {
                q::delete(c, &id)?;
            } else {
                q::update(
                    c,
                    &id,
                    CapsuleChange {
                        status: Some(ERROR.into()),
                        status_reason: Some(Some(format!(
                            "The pod is no longer on instance {instance}; delete the capsule, or update it to apply its spec again."
                        ))),
                        ..Default::default()
                    },
                )?;
            }
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::instances::tests::{db, instance};
    use serde_json::json;

    fn spec(uuid: Uuid, generation: i64, cpus: &[f64], init_cpu: Option<f64>) -> PodSpec {
        let containers: Vec<Value> = cpus
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"name": format!("c{i}"), "image": "busybox", "cpu": c, "memory_mib": 100}))
            .collect();
        let init: Vec<Value> = init_cpu
            .iter()
            .map(|c| json!({"name": "init", "image": "busybox", "cpu": c, "memory_mib": 1000}))
            .collect();
        serde_json::from_value(json!({
            "uuid": uuid, "name": "web", "generation": generation, "restart_policy": "Always",
            "containers": containers, "init_containers": init,
            "ports": [{"host_port": 8080 + generation, "container_port": 80, "protocol": "tcp"}],
        }))
        .unwrap()
    }

    fn status(
        uuid: Uuid,
        generation: i64,
        phase: &str,
        containers: Value,
        rollback: Value,
    ) -> PodStatus {
        serde_json::from_value(json!({
            "uuid": uuid, "generation": generation, "phase": phase, "conditions": [],
            "init_container_statuses": [], "container_statuses": containers,
            "pod_ip": null, "start_time": null, "rollback": rollback,
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_asks_for_the_sum_of_its_containers_raised_to_any_init_container() {
        let u = Uuid::new_v4();
        assert_eq!(pod_resources(&spec(u, 1, &[0.5, 0.25], None)), (0.75, 200));
        assert_eq!(
            pod_resources(&spec(u, 1, &[0.5, 0.25], Some(2.0))),
            (2.0, 1000)
        );
        assert_eq!(
            pod_resources(&spec(u, 1, &[0.5, 0.25], Some(0.1))),
            (0.75, 1000)
        );
    }

    #[test]
    fn phases_map_to_zun_statuses_and_reasons_name_the_container() {
        let u = Uuid::new_v4();
        let waiting = json!([{
            "name": "web", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}},
            "ready": false, "started": false, "restart_count": 3, "image": "busybox", "spec_hash": "ab",
        }]);
        let (s, why) = zun_status(&status(u, 1, "Running", waiting, Value::Null));
        assert_eq!(s, RUNNING);
        let why = why.unwrap();
        assert!(why.starts_with("web: CrashLoopBackOff"), "{why}");
        let (s, why) = zun_status(&status(u, 1, "Pending", json!([]), Value::Null));
        assert_eq!((s, why), (CREATING, None));
        assert_eq!(
            zun_status(&status(u, 1, "Succeeded", json!([]), Value::Null)).0,
            STOPPED
        );
        assert_eq!(
            zun_status(&status(u, 1, "Failed", json!([]), Value::Null)).0,
            ERROR
        );
    }

    #[test]
    fn a_rollback_puts_the_restored_spec_back_and_says_so() {
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        instances::insert(&mut conn, &instance("i1", "p1", instances::STATUS_ACTIVE)).unwrap();
        let u = Uuid::new_v4();
        let good = spec(u, 1, &[0.5], None);
        let bad = spec(u, 2, &[1.5], None);
        let t = now();
        let row = CapsuleRow {
            id: u.to_string(),
            project_id: "p1".into(),
            user_id: "u1".into(),
            name: "web".into(),
            template: "{}".into(),
            spec: serde_json::to_string(&bad).unwrap(),
            previous_spec: Some(serde_json::to_string(&good).unwrap()),
            generation: 2,
            status: RUNNING.into(),
            status_reason: None,
            instance_id: Some("i1".into()),
            cpu: 1.5,
            memory_mib: 100,
            pod_status: None,
            created_at: t,
            updated_at: t,
        };
        let ports = port_rows(&bad, &row.id, "i1");
        q::insert(&mut conn, &row, &ports).unwrap();

        // A report from another instance is not this capsule's.
        let rb = json!({"failed_generation": 2, "restored_generation": 1, "reason": "container c0 is in CrashLoopBackOff", "at": "2026-11-23T23:00:00Z"});
        fold_status(
            &mut conn,
            "i2",
            &status(u, 1, "Running", json!([]), rb.clone()),
        )
        .unwrap();
        assert_eq!(q::get(&mut conn, &row.id).unwrap().unwrap().generation, 2);
        assert!(q::get(&mut conn, &row.id)
            .unwrap()
            .unwrap()
            .pod_status
            .is_none());

        fold_status(&mut conn, "i1", &status(u, 1, "Running", json!([]), rb)).unwrap();
        let after = q::get(&mut conn, &row.id).unwrap().unwrap();
        let restored: PodSpec = serde_json::from_str(&after.spec).unwrap();
        assert_eq!(restored, good);
        let failed: PodSpec =
            serde_json::from_str(after.previous_spec.as_deref().unwrap()).unwrap();
        assert_eq!(failed, bad);
        assert_eq!(after.generation, 2, "the next update is newer than both");
        assert_eq!((after.cpu, after.status.as_str()), (0.5, RUNNING));
        let why = after.status_reason.unwrap();
        assert!(why.contains("rolled back to generation 1"), "{why}");
        let held = q::ports_of(&mut conn, std::slice::from_ref(&row.id)).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].host_port, 8081, "the restored spec's port");
        let inst = instances::get(&mut conn, "i1").unwrap().unwrap();
        assert!((inst.cpu_used - 0.5).abs() < 1e-9);

        // The same report again changes nothing more.
        let rb = json!({"failed_generation": 2, "restored_generation": 1, "reason": "x", "at": "2026-11-23T23:00:00Z"});
        fold_status(&mut conn, "i1", &status(u, 1, "Running", json!([]), rb)).unwrap();
        let again = q::get(&mut conn, &row.id).unwrap().unwrap();
        assert_eq!(again.spec, after.spec);
    }
}
