//! `/v1/containers`: Zun's container routes.

use std::collections::{BTreeMap, HashMap};

use actix_web::{web, HttpRequest, HttpResponse};
use berth_proto::{AgentErrorKind, Command, Outcome, PortBinding};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::params::{flex_bool, flex_f64, flex_i64, Params};
use super::views;
use crate::db::containers::{self as q, ContainerChange, ListFilter, Lookup};
use crate::db::models::{ActionRow, ContainerRow, InstanceRow, PortRow};
use crate::db::{self, instances, now};
use crate::domain::{
    ContainerName, ContainerStatus, CpuLimit, ImageRef, MemoryMib, PortMapping, RestartPolicy,
    Signal, TaskState,
};
use crate::identity::RequestContext;
use crate::lifecycle::Operation;
use crate::policy::Target;
use crate::scheduler;
use crate::state::AppState;

use ContainerStatus as S;

/// Registers the container routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/containers", web::post().to(create))
        .route("/containers", web::get().to(list))
        .route("/containers/{id}", web::get().to(show))
        .route("/containers/{id}", web::patch().to(update))
        .route("/containers/{id}", web::delete().to(delete))
        .route("/containers/{id}/start", web::post().to(start))
        .route("/containers/{id}/stop", web::post().to(stop))
        .route("/containers/{id}/reboot", web::post().to(reboot))
        .route("/containers/{id}/kill", web::post().to(kill))
        .route("/containers/{id}/pause", web::post().to(pause))
        .route("/containers/{id}/unpause", web::post().to(unpause))
        .route("/containers/{id}/logs", web::get().to(logs))
        .route("/containers/{id}/container_actions", web::get().to(actions));
}

/// The create body as Zun 1.40 defines it, plus Berth's `published_ports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    image: Option<String>,
    name: Option<String>,
    command: Option<Value>,
    entrypoint: Option<Vec<String>>,
    cpu: Option<Value>,
    memory: Option<Value>,
    disk: Option<Value>,
    workdir: Option<String>,
    hostname: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    environment: Option<BTreeMap<String, String>>,
    restart_policy: Option<RestartPolicyBody>,
    interactive: Option<Value>,
    tty: Option<Value>,
    auto_remove: Option<Value>,
    auto_heal: Option<Value>,
    image_pull_policy: Option<String>,
    image_driver: Option<String>,
    security_groups: Option<Vec<String>>,
    nets: Option<Vec<Value>>,
    mounts: Option<Vec<Value>>,
    hints: Option<BTreeMap<String, Value>>,
    availability_zone: Option<String>,
    runtime: Option<String>,
    privileged: Option<Value>,
    healthcheck: Option<Value>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    registry: Option<String>,
    host: Option<String>,
    cpu_policy: Option<String>,
    /// Berth: ports to publish on the instance, `[pub:][HOST:]CONTAINER[/proto]`.
    published_ports: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartPolicyBody {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "MaximumRetryCount")]
    max_retries: Option<Value>,
}

/// A parsed create request.
struct NewContainer {
    name: ContainerName,
    image: ImageRef,
    command: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cpu: CpuLimit,
    memory: MemoryMib,
    workdir: Option<String>,
    hostname: Option<String>,
    labels: BTreeMap<String, String>,
    environment: BTreeMap<String, String>,
    restart: RestartPolicy,
    interactive: bool,
    tty: bool,
    auto_remove: bool,
    privileged: bool,
    ports: Vec<PortBinding>,
    /// Zun's `disk`, GB (0: none asked), reserved on the instance.
    disk_gb: i64,
    /// Zun's `availability_zone`: the zone of the instance it goes to.
    availability_zone: Option<String>,
}

fn unsupported(field: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("'{field}' is not supported by Berth: {why}"))
}

impl TryFrom<CreateBody> for NewContainer {
    type Error = ApiError;

    fn try_from(b: CreateBody) -> Result<Self, ApiError> {
        let image = ImageRef::parse(b.image.as_deref().ok_or_else(|| {
            ApiError::BadRequest("'image' is required, e.g. \"image\": \"busybox\"".into())
        })?)?;
        let name = match b.name.as_deref() {
            Some(n) => ContainerName::parse(n)?,
            None => ContainerName::generate(),
        };
        // Microversions before 1.20 send the command as one string; later ones as a list.
        let command = match b.command {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => shell_words::split(&s)
                .map_err(|e| ApiError::BadRequest(format!("Invalid command '{s}': {e}")))?,
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s),
                    other => Err(ApiError::BadRequest(format!(
                        "Invalid command: element {other} is not a string"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid command {other}: use a list of strings"
                )))
            }
        };
        let cpu = match &b.cpu {
            Some(v) => CpuLimit::parse(flex_f64("cpu", v)?)?,
            None => CpuLimit::DEFAULT,
        };
        let memory = match &b.memory {
            Some(Value::Number(n)) => MemoryMib::parse(&n.to_string())?,
            Some(Value::String(s)) => MemoryMib::parse(s)?,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid memory {other}: use a number of MiB"
                )))
            }
            None => MemoryMib::DEFAULT,
        };
        let mut disk_gb = 0;
        if let Some(d) = &b.disk {
            let gb = flex_i64("disk", d)?;
            if !(1..=160).contains(&gb) {
                return Err(ApiError::BadRequest(format!(
                    "Invalid disk {gb}: disk is 1 to 160 GB"
                )));
            }
            disk_gb = gb;
        }
        let restart = match &b.restart_policy {
            Some(p) => {
                let retries = p
                    .max_retries
                    .as_ref()
                    .map(|v| flex_i64("MaximumRetryCount", v))
                    .transpose()?;
                RestartPolicy::parse(&p.name, retries.unwrap_or(0))?
            }
            None => RestartPolicy::none(),
        };
        let flag =
            |key: &str, v: &Option<Value>| v.as_ref().map_or(Ok(false), |v| flex_bool(key, v));
        let interactive = flag("interactive", &b.interactive)?;
        let tty = flag("tty", &b.tty)?;
        let auto_remove = flag("auto_remove", &b.auto_remove)?;
        let privileged = flag("privileged", &b.privileged)?;
        if flag("auto_heal", &b.auto_heal)? {
            return Err(unsupported(
                "auto_heal",
                "use restart_policy to keep a container running",
            ));
        }
        if b.nets.as_ref().is_some_and(|n| !n.is_empty()) {
            return Err(unsupported("nets", "containers are reached through published ports on their instance; use published_ports"));
        }
        if b.mounts.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(unsupported("mounts", "volumes are not available yet"));
        }
        if b.security_groups.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported(
                "security_groups",
                "instances are private to the project; publish ports instead",
            ));
        }
        if b.runtime.is_some()
            || b.healthcheck.is_some()
            || b.registry.is_some()
            || b.host.is_some()
        {
            return Err(unsupported(
                "runtime/healthcheck/registry/host",
                "these options are not available yet",
            ));
        }
        if let Some(d) = &b.image_driver {
            if d != "docker" {
                return Err(unsupported(
                    "image_driver",
                    "only the docker image driver exists",
                ));
            }
        }
        if let Some(p) = &b.cpu_policy {
            if p != "shared" {
                return Err(unsupported(
                    "cpu_policy",
                    "only the shared CPU policy exists",
                ));
            }
        }
        if let Some(p) = &b.image_pull_policy {
            if !matches!(
                p.to_ascii_lowercase().as_str(),
                "ifnotpresent" | "always" | "never"
            ) {
                return Err(ApiError::BadRequest(format!(
                    "Invalid image_pull_policy '{p}': use ifnotpresent, always or never"
                )));
            }
        }
        let _ = &b.hints;
        let availability_zone = b.availability_zone.filter(|z| !z.is_empty());
        let mut ports: Vec<PortBinding> = Vec::new();
        for spec in b.published_ports.iter().flatten() {
            ports.push(PortMapping::parse(spec)?.binding());
        }
        for key in b.exposed_ports.iter().flat_map(|m| m.keys()) {
            // Zun's exposed_ports ("80/tcp") opens a port to the network; on Berth a
            // container is reached through its instance, so the port is published on a
            // host port the engine chooses.
            let binding = PortMapping::parse(key)
                .map_err(|e| ApiError::BadRequest(format!("Invalid exposed_ports key: {}", e.0)))?
                .binding();
            if binding.host_port.is_some() {
                return Err(ApiError::BadRequest(format!(
                    "Invalid exposed_ports key '{key}': use PORT/PROTOCOL, e.g. 80/tcp"
                )));
            }
            if !ports.iter().any(|p| {
                p.container_port == binding.container_port && p.protocol == binding.protocol
            }) {
                ports.push(binding);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for p in &ports {
            if let Some(h) = p.host_port {
                if !seen.insert((h, p.protocol)) {
                    return Err(ApiError::BadRequest(format!(
                        "Host port {h}/{} is published twice in this request",
                        p.protocol.as_str()
                    )));
                }
            }
        }
        Ok(NewContainer {
            name,
            image,
            command,
            entrypoint: b.entrypoint,
            cpu,
            memory,
            workdir: b.workdir.filter(|w| !w.is_empty()),
            hostname: b.hostname.filter(|h| !h.is_empty()),
            labels: b.labels.unwrap_or_default(),
            environment: b.environment.unwrap_or_default(),
            restart,
            interactive,
            tty,
            auto_remove,
            privileged,
            ports,
            disk_gb,
            availability_zone,
        })
    }
}

fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "The request body must be JSON: send Content-Type: application/json (got '{ct}')"
        )))
    }
}

async fn create(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    state
        .policy
        .enforce("container:create", &ctx, &Target::own(&ctx))?;
    require_json(&req)?;
    let query = Params::parse(&req, b"")?;
    query.only(&["run"])?;
    let run = query.bool("run", false)?;
    let parsed: CreateBody = serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::BadRequest(format!("Invalid container: {e}"))
        }
        _ => ApiError::BadRequest(format!("The request body is not valid JSON: {e}")),
    })?;
    let new = NewContainer::try_from(parsed)?;
    if new.privileged {
        state
            .policy
            .enforce("container:create:privileged", &ctx, &Target::own(&ctx))?;
        // Even where policy allows it, the agent does not run privileged containers.
        return Err(unsupported(
            "privileged",
            "containers share their instance with the project's other containers",
        ));
    }
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
    };
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
                let placement = match scheduler::place(c, &project, &ask, &providers)? {
                    Ok(p) => p,
                    Err(scheduler::Refusal::Quota(e)) => {
                        return Err(CreateAbort::Refused(over_quota(std::slice::from_ref(&e))))
                    }
                    Err(scheduler::Refusal::Impossible(why)) => {
                        return Err(CreateAbort::Refused(ApiError::BadRequest(why)))
                    }
                    Err(scheduler::Refusal::PortTaken(why)) => {
                        return Err(CreateAbort::Refused(ApiError::Conflict(why)))
                    }
                };
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
            match result {
                Ok(placed) => Ok(Ok(placed)),
                Err(CreateAbort::Refused(e)) => Ok(Err(e)),
                Err(CreateAbort::Db(e)) => Err(e),
            }
        })
        .await??;
    let (row, ports, instance) = placed;
    tracing::info!(container.id = %id, project.id = %ctx.project_id, run, "container accepted");
    if row.instance_id.is_some() {
        state.lifecycle.spawn_create(id.clone(), Some(action_id));
    }
    let view = views::container(
        &state.public_url,
        &row,
        &ports,
        instance.as_ref(),
        ctx.is_admin(),
    );
    Ok(HttpResponse::Accepted()
        .insert_header((
            "Location",
            format!("{}/v1/containers/{id}", state.public_url),
        ))
        .json(view))
}

/// Why a create's transaction was rolled back.
enum CreateAbort {
    /// The request cannot be met; the error says why.
    Refused(ApiError),
    /// The database failed.
    Db(crate::db::DbError),
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
fn over_quota(over: &[crate::db::quotas::Exceeded]) -> ApiError {
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
enum Scope {
    /// Only the caller's project: another project's container is not found.
    Own,
    /// Every project (`all_projects=true`), allowed by this policy rule.
    AllProjects(&'static str),
}

impl Scope {
    fn of(all_projects: bool, rule: &'static str) -> Scope {
        if all_projects {
            Scope::AllProjects(rule)
        } else {
            Scope::Own
        }
    }
}

/// Looks a container up as the caller may see it: only its own project's, unless policy
/// lets the caller search every project. Another project's container is simply not
/// found (404), never forbidden.
async fn find(
    state: &AppState,
    ctx: &RequestContext,
    ident: &str,
    scope: Scope,
) -> Result<ContainerRow, ApiError> {
    let project = match scope {
        Scope::Own => Some(ctx.project_id.clone()),
        Scope::AllProjects(rule) => {
            state.policy.enforce(rule, ctx, &Target::own(ctx))?;
            None
        }
    };
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

/// Renders rows with their ports and instances.
async fn render(
    state: &AppState,
    ctx: &RequestContext,
    rows: Vec<ContainerRow>,
) -> Result<Vec<Value>, ApiError> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let instance_ids: Vec<String> = rows.iter().filter_map(|r| r.instance_id.clone()).collect();
    let (ports, insts) = state
        .db
        .run(move |c| {
            let ports = q::ports_of(c, &ids)?;
            let mut insts: HashMap<String, InstanceRow> = HashMap::new();
            for id in instance_ids {
                if let std::collections::hash_map::Entry::Vacant(slot) = insts.entry(id) {
                    if let Some(i) = instances::get(c, slot.key())? {
                        slot.insert(i);
                    }
                }
            }
            Ok((ports, insts))
        })
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let own: Vec<PortRow> = ports
                .iter()
                .filter(|p| p.container_id == r.id)
                .cloned()
                .collect();
            let inst = r.instance_id.as_ref().and_then(|i| insts.get(i));
            views::container(&state.public_url, r, &own, inst, ctx.is_admin())
        })
        .collect())
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state
        .policy
        .enforce("container:get_all", &ctx, &Target::own(&ctx))?;
    let p = Params::parse(&req, b"")?;
    p.only(&[
        "limit",
        "marker",
        "sort_key",
        "sort_dir",
        "all_projects",
        "name",
        "image",
        "project_id",
        "user_id",
        "memory",
        "host",
        "task_state",
        "status",
        "auto_remove",
    ])?;
    let all_projects = p.bool("all_projects", false)?;
    if all_projects {
        state
            .policy
            .enforce("container:get_all_all_projects", &ctx, &Target::own(&ctx))?;
    }
    let limit = match p.uint("limit")? {
        Some(0) => {
            return Err(ApiError::BadRequest(
                "Invalid limit 0: limit must be a positive integer".into(),
            ))
        }
        Some(n) => n.min(1000) as i64,
        None => 1000,
    };
    if let Some(k) = p.str("sort_key") {
        if k != "id" && k != "uuid" {
            return Err(ApiError::BadRequest(format!(
                "Invalid sort_key '{k}': only id is supported"
            )));
        }
    }
    if let Some(d) = p.str("sort_dir") {
        if d != "asc" {
            return Err(ApiError::BadRequest(format!(
                "Invalid sort_dir '{d}': only asc is supported"
            )));
        }
    }
    let project = if all_projects {
        p.str("project_id")
    } else {
        Some(ctx.project_id.clone())
    };
    let filter = ListFilter {
        project,
        name: p.str("name"),
        image: p.str("image"),
        status: p.str("status"),
        marker: p.str("marker"),
        limit,
    };
    let rows = state.db.run(move |c| q::list(c, &filter)).await?;
    let next = (rows.len() as i64 == limit).then(|| {
        format!(
            "{}/v1/containers?sort_key=id&sort_dir=asc&limit={limit}&marker={}",
            state.public_url,
            rows.last().map(|r| r.id.as_str()).unwrap_or_default()
        )
    });
    let views = render(&state, &ctx, rows).await?;
    Ok(HttpResponse::Ok().json(json!({"containers": views, "next": next})))
}

async fn show(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .policy
        .enforce("container:get_one", &ctx, &Target::own(&ctx))?;
    let p = Params::parse(&req, b"")?;
    p.only(&["all_projects"])?;
    let scope = Scope::of(
        p.bool("all_projects", false)?,
        "container:get_one_all_projects",
    );
    let row = find(&state, &ctx, &path, scope).await?;
    let mut views = render(&state, &ctx, vec![row]).await?;
    Ok(HttpResponse::Ok().json(views.remove(0)))
}

/// Refuses an action the container's status does not allow, as Zun does.
fn require_status(
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
async fn begin(
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

async fn operation(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    ident: String,
    what: Op,
) -> Result<HttpResponse, ApiError> {
    let rule = match what {
        Op::Start => "container:start",
        Op::Stop => "container:stop",
        Op::Reboot => "container:reboot",
        Op::Kill => "container:kill",
        Op::Pause => "container:pause",
        Op::Unpause => "container:unpause",
    };
    state.policy.enforce(rule, &ctx, &Target::own(&ctx))?;
    let p = Params::parse(&req, &body)?;
    let (allowed, name, task, op): (&[ContainerStatus], &str, TaskState, Operation) = match what {
        Op::Start => {
            p.only(&[])?;
            (
                &[S::Created, S::Stopped, S::Error],
                "start",
                TaskState::ContainerStarting,
                Operation::Start,
            )
        }
        Op::Stop => {
            p.only(&["timeout"])?;
            let timeout_secs = timeout(&p)?;
            (
                &[S::Running],
                "stop",
                TaskState::ContainerStopping,
                Operation::Stop { timeout_secs },
            )
        }
        Op::Reboot => {
            p.only(&["timeout"])?;
            let timeout_secs = timeout(&p)?;
            (
                &[S::Created, S::Running, S::Stopped, S::Error],
                "reboot",
                TaskState::ContainerRebooting,
                Operation::Reboot { timeout_secs },
            )
        }
        Op::Kill => {
            p.only(&["signal"])?;
            let signal = Signal::parse(p.str("signal").as_deref())?;
            (
                &[S::Running],
                "kill",
                TaskState::ContainerKilling,
                Operation::Kill {
                    signal: signal.as_str().to_owned(),
                },
            )
        }
        Op::Pause => {
            p.only(&[])?;
            (
                &[S::Running],
                "pause",
                TaskState::ContainerPausing,
                Operation::Pause,
            )
        }
        Op::Unpause => {
            p.only(&[])?;
            (
                &[S::Paused],
                "unpause",
                TaskState::ContainerUnpausing,
                Operation::Unpause,
            )
        }
    };
    let row = find(&state, &ctx, &ident, Scope::Own).await?;
    require_status(&row, allowed, name)?;
    let mut change = ContainerChange {
        task_state: Some(Some(task.as_str().into())),
        ..Default::default()
    };
    if matches!(what, Op::Reboot) {
        change.status = Some(S::Restarting.as_str().into());
    }
    let action = begin(&state, &ctx, &row, name, change).await?;
    tracing::info!(container.id = %row.id, action = name, "action accepted");
    state.lifecycle.spawn_operation(row.id, action, op);
    Ok(HttpResponse::Accepted().json(Value::Null))
}

fn timeout(p: &Params) -> Result<Option<u32>, ApiError> {
    p.uint("timeout")?
        .map(|t| u32::try_from(t).map_err(|_| ApiError::BadRequest(format!("Invalid timeout {t}"))))
        .transpose()
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Start,
    Stop,
    Reboot,
    Kill,
    Pause,
    Unpause,
}

macro_rules! op_handler {
    ($name:ident, $op:expr) => {
        async fn $name(
            state: web::Data<AppState>,
            ctx: RequestContext,
            req: HttpRequest,
            body: web::Bytes,
            path: web::Path<String>,
        ) -> Result<HttpResponse, ApiError> {
            operation(state, ctx, req, body, path.into_inner(), $op).await
        }
    };
}

op_handler!(start, Op::Start);
op_handler!(stop, Op::Stop);
op_handler!(reboot, Op::Reboot);
op_handler!(kill, Op::Kill);
op_handler!(pause, Op::Pause);
op_handler!(unpause, Op::Unpause);

async fn delete(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .policy
        .enforce("container:delete", &ctx, &Target::own(&ctx))?;
    let p = Params::parse(&req, b"")?;
    p.only(&["force", "stop", "all_projects"])?;
    let force = p.bool("force", false)?;
    let stop = p.bool("stop", false)?;
    let all_projects = p.bool("all_projects", false)?;
    if force {
        state
            .policy
            .enforce("container:delete_force", &ctx, &Target::own(&ctx))
            .map_err(|d| {
                ApiError::Forbidden(format!(
                    "{d} To delete a running container without force, use stop=true."
                ))
            })?;
    }
    let scope = Scope::of(all_projects, "container:delete_all_projects");
    let row = find(&state, &ctx, &path, scope).await?;
    if !force {
        let allowed: &[ContainerStatus] = if stop {
            &[S::Running, S::Created, S::Error, S::Stopped, S::Dead]
        } else {
            &[S::Created, S::Error, S::Stopped, S::Dead]
        };
        require_status(&row, allowed, "delete")?;
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
    state.lifecycle.spawn_delete(row.id, stop);
    Ok(HttpResponse::NoContent().finish())
}

async fn update(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .policy
        .enforce("container:update", &ctx, &Target::own(&ctx))?;
    let p = Params::parse(&req, &body)?;
    p.only(&["name", "cpu", "memory", "auto_heal"])?;
    let name = p
        .str("name")
        .map(|n| ContainerName::parse(&n))
        .transpose()?;
    let cpu = p
        .get("cpu")
        .map(|v| flex_f64("cpu", v).and_then(|c| Ok(CpuLimit::parse(c)?)))
        .transpose()?;
    let memory = p.str("memory").map(|m| MemoryMib::parse(&m)).transpose()?;
    if p.get("auto_heal")
        .map(|v| flex_bool("auto_heal", v))
        .transpose()?
        == Some(true)
    {
        return Err(unsupported(
            "auto_heal",
            "use restart_policy to keep a container running",
        ));
    }
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    if cpu.is_some() || memory.is_some() {
        require_status(
            &row,
            &[S::Created, S::Running, S::Stopped, S::Paused],
            "update",
        )?;
        let instance = row
            .instance_id
            .as_deref()
            .and_then(|i| Uuid::parse_str(i).ok())
            .ok_or_else(|| {
                ApiError::InvalidState(format!("Container {} is not placed on an instance", row.id))
            })?;
        let container = Uuid::parse_str(&row.id).map_err(|e| ApiError::Internal(e.into()))?;
        // Growth counts against the quota: the new size is checked and recorded under
        // the project lock first, and put back if the agent cannot apply it.
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
        ..Default::default()
    };
    let updated = state
        .db
        .run(move |c| {
            q::update(c, &id, change)?;
            q::get(c, &id)
        })
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("Container {} could not be found.", path.as_str()))
        })?;
    let mut views = render(&state, &ctx, vec![updated]).await?;
    Ok(HttpResponse::Ok().json(views.remove(0)))
}

/// Maps an agent's failure during a synchronous call.
fn agent_error(e: berth_proto::AgentError) -> ApiError {
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

async fn logs(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .policy
        .enforce("container:logs", &ctx, &Target::own(&ctx))?;
    let p = Params::parse(&req, b"")?;
    p.only(&["stdout", "stderr", "timestamps", "tail", "since"])?;
    let mut stdout = p.bool("stdout", true)?;
    let mut stderr = p.bool("stderr", true)?;
    if !stdout && !stderr {
        // Zun shows both when neither is asked for.
        stdout = true;
        stderr = true;
    }
    let timestamps = p.bool("timestamps", false)?;
    let tail = match p.str("tail").as_deref() {
        None | Some("all") | Some("") => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "Invalid tail '{t}': use a number of lines or 'all'"
            ))
        })?),
    };
    let since = match p.str("since") {
        None => None,
        Some(s) => Some(parse_since(&s)?),
    };
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    require_status(
        &row,
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
    let instance = row
        .instance_id
        .as_deref()
        .and_then(|i| Uuid::parse_str(i).ok())
        .ok_or_else(|| {
            ApiError::InvalidState(format!(
                "Container {} was never placed; it has no logs.",
                row.id
            ))
        })?;
    let container = Uuid::parse_str(&row.id).map_err(|e| ApiError::Internal(e.into()))?;
    let cmd = Command::Logs {
        container,
        stdout,
        stderr,
        timestamps,
        tail,
        since,
    };
    match state.agents.call(instance, None, cmd).await {
        Ok(Outcome::Logs(text)) => Ok(HttpResponse::Ok().json(text)),
        Ok(other) => Err(ApiError::Internal(anyhow::anyhow!(
            "unexpected reply to logs: {other:?}"
        ))),
        Err(e) => Err(agent_error(e)),
    }
}

/// `since` is Unix seconds or an ISO 8601 / Zun timestamp.
fn parse_since(s: &str) -> Result<i64, ApiError> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp());
        }
    }
    Err(ApiError::BadRequest(format!(
        "Invalid since '{s}': use Unix seconds or a timestamp like 2026-01-31T12:00:00Z"
    )))
}

async fn actions(
    state: web::Data<AppState>,
    ctx: RequestContext,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .policy
        .enforce("container:actions", &ctx, &Target::own(&ctx))?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    let id = row.id.clone();
    let rows = state.db.run(move |c| q::actions_of(c, &id)).await?;
    let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|a| {
            json!({
                "action": a.action,
                "container_uuid": a.container_id,
                "request_id": a.id,
                "user_id": a.user_id,
                "project_id": a.project_id,
                "start_time": fmt(a.start_time),
                "finish_time": a.finish_time.map(fmt),
                "message": a.message,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"containerActions": items})))
}
