//! `/v1/capsules`: Zun's capsule routes (create, list, show, delete) and Berth's update
//! (`PATCH /v1/capsules/{id}` with `{"template": …}`).
//!
//! The view is Zun's capsule view (the ≥1.32 shape; the legacy fields below 1.32) plus
//! Berth's: `generation`, `instance_id`, `published_ports`, `pod_status` (phase,
//! conditions, container statuses with restart counts, as the agent reports them) and
//! `rollback`; per container its state, reason, restart count and readiness; `show`
//! adds each container's runtime inspect data from the agent (best effort: when the
//! agent cannot be reached, `inspect_error` says why and the rest is shown).

use std::collections::BTreeMap;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use berth_proto::pod::{ContainerState, PodContainer, PodRestartPolicy, PodSpec, PodStatus};
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::{require_json, Params};
use super::version::ApiVersion;
use super::views::zun_time;
use crate::containers::Scope;
use crate::db::capsules as q;
use crate::db::instances;
use crate::db::models::{CapsulePortRow, CapsuleRow, InstanceRow};
use crate::identity::RequestContext;
use crate::pods::{manifest, service};
use crate::policy::Target;
use crate::state::AppState;

/// Registers the capsule routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/capsules", web::post().to(create))
        .route("/capsules", web::get().to(list))
        .route("/capsules/{id}", web::get().to(show))
        .route("/capsules/{id}", web::patch().to(update))
        .route("/capsules/{id}", web::delete().to(delete));
}

/// The `template` of a create or update body: `{"template": <object or JSON/YAML
/// string>}`, nothing else.
fn template_of(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(mut map) = v else {
        return Err(ApiError::BadRequest(
            "The request body must be an object: {\"template\": {...}}".into(),
        ));
    };
    if let Some(extra) = map.keys().find(|k| k.as_str() != "template") {
        return Err(ApiError::BadRequest(format!(
            "Additional properties are not allowed ('{extra}' was unexpected): send only {{\"template\": {{...}}}}"
        )));
    }
    match map.remove("template") {
        Some(t @ (Value::Object(_) | Value::String(_))) => Ok(t),
        Some(other) => Err(ApiError::BadRequest(format!(
            "template: must be an object or a JSON/YAML string, got {other}"
        ))),
        None => Err(ApiError::BadRequest(
            "template: is required, e.g. {\"template\": {\"kind\": \"capsule\", \"metadata\": {...}, \"spec\": {...}}}".into(),
        )),
    }
}

fn version(req: &HttpRequest) -> ApiVersion {
    req.extensions()
        .get::<ApiVersion>()
        .copied()
        .unwrap_or(super::version::MAX)
}

async fn create(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "capsule:create")?;
    require_json(&req)?;
    Params::parse(&req, b"")?.only(&[])?;
    let template = template_of(&body)?;
    let created = service::create(&state, &ctx, template).await?;
    let view = render_one(
        &state,
        &ctx,
        version(&req),
        &created.row,
        &created.ports,
        created.instance.as_ref(),
        None,
    );
    Ok(HttpResponse::Accepted()
        .insert_header((
            "Location",
            format!("{}/v1/capsules/{}", state.public_url, created.row.id),
        ))
        .json(view))
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "capsule:get_all")?;
    let p = Params::parse_only(
        &req,
        b"",
        &["limit", "marker", "sort_key", "sort_dir", "all_projects"],
    )?;
    let all_projects = p.bool("all_projects", false)?;
    if all_projects {
        enforce_own(&state, &ctx, "capsule:get_all_all_projects")?;
    }
    let limit = p.page_limit()?;
    let project = (!all_projects).then(|| ctx.project_id.clone());
    let marker = p.str("marker");
    let rows = state
        .db
        .run(move |c| q::list(c, project.as_deref(), marker.as_deref(), limit))
        .await?;
    let next = (rows.len() as i64 == limit).then(|| {
        format!(
            "{}/v1/capsules?sort_key=id&sort_dir=asc&limit={limit}&marker={}",
            state.public_url,
            rows.last().map(|r| r.id.as_str()).unwrap_or_default()
        )
    });
    let views = render(&state, &ctx, version(&req), rows).await?;
    Ok(HttpResponse::Ok().json(json!({"capsules": views, "next": next})))
}

async fn show(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "capsule:get")?;
    let p = Params::parse_only(&req, b"", &["all_projects"])?;
    let scope = Scope::of(
        p.bool("all_projects", false)?,
        "capsule:get_one_all_projects",
    );
    let row = service::find(&state, &ctx, &path, scope).await?;
    let inspect = match &row.instance_id {
        Some(_) if row.status != service::DELETING => Some(service::inspect(&state, &row).await),
        _ => None,
    };
    let view = render_row(&state, &ctx, version(&req), &row, inspect).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn update(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "capsule:update")?;
    require_json(&req)?;
    Params::parse(&req, b"")?.only(&[])?;
    let template = template_of(&body)?;
    let row = service::find(&state, &ctx, &path, Scope::Own).await?;
    let updated = service::update(&state, &row, template).await?;
    let view = render_row(&state, &ctx, version(&req), &updated, None).await?;
    Ok(HttpResponse::Accepted().json(view))
}

async fn delete(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "capsule:delete")?;
    let p = Params::parse_only(&req, b"", &["all_projects"])?;
    let scope = Scope::of(
        p.bool("all_projects", false)?,
        "capsule:delete_all_projects",
    );
    let row = service::find(&state, &ctx, &path, scope).await?;
    service::delete(&state, &row).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// One capsule's view, after reading its host ports and instance.
async fn render_row(
    state: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    row: &CapsuleRow,
    inspect: Option<Inspect>,
) -> Result<Value, ApiError> {
    let id = row.id.clone();
    let instance = row.instance_id.clone();
    let (ports, instance) = state
        .db
        .run(move |c| {
            let ports = q::ports_of(c, std::slice::from_ref(&id))?;
            let inst = match instance {
                Some(i) => instances::get(c, &i)?,
                None => None,
            };
            Ok((ports, inst))
        })
        .await?;
    Ok(render_one(
        state,
        ctx,
        v,
        row,
        &ports,
        instance.as_ref(),
        inspect,
    ))
}

async fn render(
    state: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    rows: Vec<CapsuleRow>,
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
            let own: Vec<CapsulePortRow> = ports
                .iter()
                .filter(|p| p.capsule_id == r.id)
                .cloned()
                .collect();
            let inst = r.instance_id.as_ref().and_then(|i| insts.get(i));
            render_one(state, ctx, v, r, &own, inst, None)
        })
        .collect())
}

type Inspect = Result<(PodStatus, BTreeMap<String, Value>), ApiError>;

fn render_one(
    state: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    row: &CapsuleRow,
    ports: &[CapsulePortRow],
    instance: Option<&InstanceRow>,
    inspect: Option<Inspect>,
) -> Value {
    let show_host = state
        .policy
        .allows("capsule:get:host", ctx, &Target::own(ctx));
    capsule_view(
        &state.public_url,
        v,
        row,
        ports,
        instance,
        show_host,
        inspect,
    )
}

/// Zun's restart policy name for a pod's.
fn restart_name(p: PodRestartPolicy) -> &'static str {
    match p {
        PodRestartPolicy::Always => "always",
        PodRestartPolicy::OnFailure => "on-failure",
        PodRestartPolicy::Never => "no",
    }
}

/// A pod container's state as a Zun container status and reason.
fn container_status(
    s: Option<&berth_proto::pod::PodContainerStatus>,
) -> (&'static str, Option<String>) {
    let Some(s) = s else {
        return ("Creating", None);
    };
    match &s.state {
        ContainerState::Running { .. } => ("Running", None),
        ContainerState::Waiting { reason, message } => {
            let status = match reason.as_str() {
                "CrashLoopBackOff" => "Restarting",
                "ErrImagePull"
                | "ImagePullBackOff"
                | "CreateContainerError"
                | "CreateContainerConfigError"
                | "InvalidImageName" => "Error",
                _ => "Creating",
            };
            let why = match message {
                Some(m) => format!("{reason}: {m}"),
                None => reason.clone(),
            };
            (status, Some(why))
        }
        ContainerState::Terminated {
            exit_code,
            reason,
            message,
            ..
        } => {
            let status = if *exit_code == 0 { "Stopped" } else { "Error" };
            let why = match message {
                Some(m) => format!("{reason} (exit code {exit_code}): {m}"),
                None => format!("{reason} (exit code {exit_code})"),
            };
            (status, Some(why))
        }
    }
}

fn container_view(
    c: &PodContainer,
    status: Option<&berth_proto::pod::PodContainerStatus>,
    inspect: Option<&Value>,
) -> Value {
    let mut command: Vec<String> = c.command.clone().unwrap_or_default();
    command.extend(c.args.clone().unwrap_or_default());
    let (zun, reason) = container_status(status);
    let mut v = json!({
        "name": c.name,
        "image": c.image,
        "command": command,
        "cpu": c.cpu,
        "memory": c.memory_mib.to_string(),
        "environment": c.env,
        "workdir": c.workdir,
        "interactive": c.stdin,
        "tty": c.tty,
        "status": zun,
        "status_reason": reason,
        "restart_count": status.map(|s| s.restart_count).unwrap_or(0),
        "ready": status.is_some_and(|s| s.ready),
        "started": status.is_some_and(|s| s.started),
        "state": status.map(|s| json!(s.state)),
        "last_state": status.and_then(|s| s.last_state.as_ref()).map(|s| json!(s)),
        "runtime_id": status.and_then(|s| s.container_id.clone()),
        "spec_hash": c.spec_hash(),
    });
    if let Some(i) = inspect {
        v["inspect"] = i.clone();
    }
    v
}

/// The capsule as the API shows it.
pub fn capsule_view(
    public_url: &str,
    v: ApiVersion,
    row: &CapsuleRow,
    ports: &[CapsulePortRow],
    instance: Option<&InstanceRow>,
    show_host: bool,
    inspect: Option<Inspect>,
) -> Value {
    let spec: Option<PodSpec> = serde_json::from_str(&row.spec).ok();
    let stored: Option<PodStatus> = row
        .pod_status
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let (status, inspected, inspect_error) = match inspect {
        Some(Ok((s, containers))) => (Some(s), containers, None),
        Some(Err(e)) => (stored, BTreeMap::new(), Some(e.to_string())),
        None => (stored, BTreeMap::new(), None),
    };
    // Labels and annotations as the template gave them.
    let template: Value = serde_json::from_str(&row.template).unwrap_or(Value::Null);
    let annotations = manifest::parse(&template)
        .map(|p| p.annotations)
        .unwrap_or_default();
    let labels = spec.as_ref().map(|s| s.labels.clone()).unwrap_or_default();
    let address = instance.map(|i| i.address.clone());
    let addresses = match &address {
        Some(addr) => json!({"berth": [{
            "addr": addr,
            "version": if addr.contains(':') { 6 } else { 4 },
            "port": null,
            "subnet_id": null,
            "preserve_on_delete": false,
        }]}),
        None => json!({}),
    };
    let published: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({
                "host_ip": address,
                "host_port": p.host_port,
                "container_port": p.container_port,
                "protocol": p.protocol,
            })
        })
        .collect();
    let find = |list: Option<&Vec<berth_proto::pod::PodContainerStatus>>, name: &str| {
        list.and_then(|l| l.iter().find(|s| s.name == name).cloned())
    };
    let containers: Vec<Value> = spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let st = find(status.as_ref().map(|s| &s.container_statuses), &c.name);
            container_view(c, st.as_ref(), inspected.get(&c.name))
        })
        .collect();
    let init_containers: Vec<Value> = spec
        .iter()
        .flat_map(|s| &s.init_containers)
        .map(|c| {
            let st = find(status.as_ref().map(|s| &s.init_container_statuses), &c.name);
            container_view(c, st.as_ref(), inspected.get(&c.name))
        })
        .collect();
    let restart = spec.as_ref().map(|s| s.restart_policy).unwrap_or_default();
    let mut view = json!({
        "uuid": row.id,
        "links": [
            {"href": format!("{public_url}/v1/capsules/{}", row.id), "rel": "self"},
            {"href": format!("{public_url}/capsules/{}", row.id), "rel": "bookmark"},
        ],
        "name": row.name,
        "labels": labels,
        "annotations": annotations,
        "status": row.status,
        "status_reason": row.status_reason,
        "restart_policy": {"Name": restart_name(restart), "MaximumRetryCount": "0"},
        "cpu": row.cpu,
        "memory": row.memory_mib.to_string(),
        "addresses": addresses,
        "user_id": row.user_id,
        "project_id": row.project_id,
        "created_at": zun_time(row.created_at),
        "updated_at": zun_time(row.updated_at),
        "containers": containers,
        "init_containers": init_containers,
        // Berth.
        "generation": row.generation,
        "instance_id": row.instance_id,
        "published_ports": published,
        "pod_status": status.as_ref().map(|s| json!(s)),
        "rollback": status.as_ref().and_then(|s| s.rollback.as_ref()).map(|r| json!(r)),
    });
    if let Some(infra) = inspected.get("POD") {
        view["infra_container"] = json!({"name": "POD", "inspect": infra});
    }
    if let Some(e) = inspect_error {
        view["inspect_error"] = json!(format!("The runtime's inspect data is left out: {e}"));
    }
    if show_host {
        view["host"] = json!(instance.map(|i| i.name.clone()));
    }
    if v < ApiVersion(1, 32) {
        view["restart_policy"] = json!(restart_name(restart));
        view["meta_name"] = json!(row.name);
        view["meta_labels"] = view["labels"].clone();
        view["volumes_info"] = json!({});
        view["containers_uuids"] = json!([]);
        view["init_containers_uuids"] = json!([]);
        view["capsule_version"] = json!("");
    }
    view
}
