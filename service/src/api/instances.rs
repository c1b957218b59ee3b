//! `/v1/instances` (a Berth extension): the caller's own project's instances, with
//! their capacity, usage and status. Readers may look; other projects' instances are
//! never shown.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::Params;
use super::views::zun_time;
use crate::db::models::InstanceRow;
use crate::db::monitor::{self, Usage};
use crate::identity::RequestContext;
use crate::state::AppState;

/// Registers the instance routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/instances", web::get().to(list))
        .route("/instances/", web::get().to(list));
}

/// An instance as its project sees it.
fn instance_view(public_url: &str, row: &InstanceRow, usage: &Usage) -> Value {
    json!({
        "uuid": row.id,
        "links": [
            {"href": format!("{public_url}/v1/instances/{}", row.id), "rel": "self"},
        ],
        "name": row.name,
        "project_id": row.project_id,
        "provider": row.provider,
        "status": row.status,
        "status_reason": row.status_reason,
        "availability_zone": row.availability_zone,
        "address": row.address,
        "cpus": row.cpus,
        "cpu_used": usage.cpu,
        "mem_total": row.memory_mib,
        "mem_used": usage.memory_mib,
        "disk_total": row.disk_gb,
        "total_containers": usage.containers,
        "agent_connected": row.agent_connected,
        "agent_seen_at": row.agent_seen_at.map(zun_time),
        "created_at": zun_time(row.created_at),
    })
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Whoever may list the project's containers may see where they run.
    enforce_own(&state, &ctx, "container:get_all")?;
    Params::parse(&req, b"")?.only(&[])?;
    let project = ctx.project_id.clone();
    let (rows, usage) = state
        .db
        .run(move |c| {
            Ok((
                monitor::live_instances_of_project(c, &project)?,
                monitor::usage(c)?,
            ))
        })
        .await?;
    let empty = Usage::default();
    let instances: Vec<Value> = rows
        .iter()
        .filter(|r| r.project_id == ctx.project_id)
        .map(|r| instance_view(&state.public_url, r, usage.get(&r.id).unwrap_or(&empty)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"instances": instances, "next": null})))
}
