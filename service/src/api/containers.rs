//! `/v1/containers`: Zun's container routes.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use berth_proto::{PortBinding, Privileges};
use serde::Deserialize;
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::{flex_bool, flex_f64, flex_i64, require_json, Params};
use super::views;
use crate::containers::{self as service, find, NewContainer, Op, Scope};
use crate::db::containers::{self as q, ListFilter};
use crate::db::instances;
use crate::db::models::{ContainerRow, PortRow};
use crate::domain::{
    ContainerName, CpuLimit, ImageRef, MemoryMib, PortMapping, RestartPolicy, Signal,
};
use crate::identity::RequestContext;
use crate::policy::Target;
use crate::state::AppState;

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
        .route("/containers/{id}/container_actions", web::get().to(actions))
        .route(
            "/containers/{id}/container_actions/{request_id}",
            web::get().to(super::actions::show),
        );
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
        if b.runtime.is_some() || b.healthcheck.is_some() || b.host.is_some() {
            return Err(unsupported(
                "runtime/healthcheck/host",
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
            ports,
            disk_gb,
            availability_zone,
            stdin_once: false,
            user: None,
            docker_config: None,
            // Granted only if policy allows it (checked by the create handler).
            privileges: privileged.then(|| Privileges {
                privileged: true,
                ..Privileges::default()
            }),
            unique_name: false,
            // Looked up in the caller's project when the container is recorded.
            registry: b.registry.filter(|r| !r.is_empty()),
        })
    }
}

async fn create(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:create")?;
    require_json(&req)?;
    let query = Params::parse(&req, b"")?;
    query.only(&["run"])?;
    let run = query.bool("run", false)?;
    // Fields newer than the request's microversion are refused (400), as Zun does.
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) {
        super::version::check_create_fields(super::version::of(&req), &fields)?;
    }
    let parsed: CreateBody = serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::BadRequest(format!("Invalid container: {e}"))
        }
        _ => ApiError::BadRequest(format!("The request body is not valid JSON: {e}")),
    })?;
    let new = NewContainer::try_from(parsed)?;
    if new.privileges.is_some() {
        enforce_own(&state, &ctx, "container:create:privileged")?;
    }
    let created = service::create(&state, &ctx, new, run).await?;
    let id = created.row.id.clone();
    let view = views::container(
        &state.public_url,
        &created.row,
        &created.ports,
        created.instance.as_ref(),
        ctx.is_admin(),
    );
    Ok(HttpResponse::Accepted()
        .insert_header((
            "Location",
            format!("{}/v1/containers/{id}", state.public_url),
        ))
        .json(view))
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
            let insts = instances::get_many(c, instance_ids)?;
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
    enforce_own(&state, &ctx, "container:get_all")?;
    let p = Params::parse_only(
        &req,
        b"",
        &[
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
        ],
    )?;
    let all_projects = p.bool("all_projects", false)?;
    if all_projects {
        enforce_own(&state, &ctx, "container:get_all_all_projects")?;
    }
    let limit = p.page_limit()?;
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
    enforce_own(&state, &ctx, "container:get_one")?;
    let p = Params::parse_only(&req, b"", &["all_projects"])?;
    let scope = Scope::of(
        p.bool("all_projects", false)?,
        "container:get_one_all_projects",
    );
    let row = find(&state, &ctx, &path, scope).await?;
    let mut views = render(&state, &ctx, vec![row]).await?;
    Ok(HttpResponse::Ok().json(views.remove(0)))
}

async fn operation(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    ident: String,
    what: Kind,
) -> Result<HttpResponse, ApiError> {
    let rule = match what {
        Kind::Start => "container:start",
        Kind::Stop => "container:stop",
        Kind::Reboot => "container:reboot",
        Kind::Kill => "container:kill",
        Kind::Pause => "container:pause",
        Kind::Unpause => "container:unpause",
    };
    enforce_own(&state, &ctx, rule)?;
    let p = Params::parse(&req, &body)?;
    let op = match what {
        Kind::Start => {
            p.only(&[])?;
            Op::Start
        }
        Kind::Stop => {
            p.only(&["timeout"])?;
            Op::Stop {
                timeout_secs: timeout(&p)?,
            }
        }
        Kind::Reboot => {
            p.only(&["timeout"])?;
            Op::Reboot {
                timeout_secs: timeout(&p)?,
            }
        }
        Kind::Kill => {
            p.only(&["signal"])?;
            let signal = Signal::parse(p.str("signal").as_deref())?;
            Op::Kill {
                signal: signal.as_str().to_owned(),
            }
        }
        Kind::Pause => {
            p.only(&[])?;
            Op::Pause
        }
        Kind::Unpause => {
            p.only(&[])?;
            Op::Unpause
        }
    };
    let row = find(&state, &ctx, &ident, Scope::Own).await?;
    service::operate(&state, &ctx, &row, op).await?;
    Ok(HttpResponse::Accepted().json(Value::Null))
}

fn timeout(p: &Params) -> Result<Option<u32>, ApiError> {
    p.uint("timeout")?
        .map(|t| u32::try_from(t).map_err(|_| ApiError::BadRequest(format!("Invalid timeout {t}"))))
        .transpose()
}

#[derive(Debug, Clone, Copy)]
enum Kind {
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

op_handler!(start, Kind::Start);
op_handler!(stop, Kind::Stop);
op_handler!(reboot, Kind::Reboot);
op_handler!(kill, Kind::Kill);
op_handler!(pause, Kind::Pause);
op_handler!(unpause, Kind::Unpause);

async fn delete(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:delete")?;
    let p = Params::parse_only(&req, b"", &["force", "stop", "all_projects"])?;
    let v = super::version::of(&req);
    if p.get("force").is_some() {
        super::version::require_param(v, "force", super::version::ApiVersion(1, 7))?;
    }
    if p.get("stop").is_some() {
        super::version::require_param(v, "stop", super::version::ApiVersion(1, 12))?;
    }
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
    service::delete(&state, &row, force, stop).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn update(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:update")?;
    let p = Params::parse_only(&req, &body, &["name", "cpu", "memory", "auto_heal"])?;
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
    let up = service::Update {
        name,
        cpu,
        memory,
        restart: None,
    };
    let updated = service::update(&state, &row, up).await?;
    let mut views = render(&state, &ctx, vec![updated]).await?;
    Ok(HttpResponse::Ok().json(views.remove(0)))
}

async fn logs(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:logs")?;
    let p = Params::parse_only(
        &req,
        b"",
        &["stdout", "stderr", "timestamps", "tail", "since"],
    )?;
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
    let text = service::logs(
        &state,
        &row,
        service::LogsRequest {
            stdout,
            stderr,
            timestamps,
            tail,
            since,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(text))
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
    enforce_own(&state, &ctx, "container:actions")?;
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
