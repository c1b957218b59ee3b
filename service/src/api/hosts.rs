//! `/v1/hosts`: Zun's host API (microversion 1.4 and later, admins only). A host is a
//! Berth instance: Zun's host view (capacity, usage) plus who owns it, where it comes
//! from, its status and reason, and whether its agent is connected.

use std::collections::HashMap;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::Params;
use super::version::ApiVersion;
use super::views::zun_time;
use crate::db::models::InstanceRow;
use crate::db::monitor::{self, Usage};
use crate::identity::RequestContext;
use crate::state::AppState;

/// The first microversion with hosts.
const HOSTS_VERSION: ApiVersion = ApiVersion(1, 4);
/// The first microversion whose host view has `enable_cpu_pinning`.
const CPU_PINNING_VERSION: ApiVersion = ApiVersion(1, 29);

/// Registers the host routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/hosts", web::get().to(list))
        .route("/hosts/", web::get().to(list))
        .route("/hosts/{id}", web::get().to(show));
}

fn version(req: &HttpRequest) -> ApiVersion {
    req.extensions()
        .get::<ApiVersion>()
        .copied()
        .unwrap_or(super::version::MIN)
}

/// Hosts exist from microversion 1.4; older requests are refused as Zun does (406).
fn require_version(req: &HttpRequest) -> Result<ApiVersion, ApiError> {
    let v = version(req);
    if v < HOSTS_VERSION {
        return Err(ApiError::NotAcceptable(format!(
            "Version {v} was requested but the requested API is not supported for this version. Hosts need API microversion {HOSTS_VERSION} or later: send the header 'OpenStack-API-Version: container {HOSTS_VERSION}'."
        )));
    }
    Ok(v)
}

/// An instance as Zun's host view, with Berth's fields.
pub fn host_view(public_url: &str, row: &InstanceRow, usage: &Usage, v: ApiVersion) -> Value {
    let mut view = json!({
        "uuid": row.id,
        "links": [
            {"href": format!("{public_url}/v1/hosts/{}", row.id), "rel": "self"},
            {"href": format!("{public_url}/hosts/{}", row.id), "rel": "bookmark"},
        ],
        "hostname": row.name,
        "mem_total": row.memory_mib,
        "mem_used": usage.memory_mib,
        "cpus": row.cpus,
        "cpu_used": usage.cpu,
        "disk_total": row.disk_gb,
        "disk_used": 0,
        "disk_quota_supported": false,
        "total_containers": usage.containers,
        "architecture": Value::Null,
        "os_type": "linux",
        "os": Value::Null,
        "kernel_version": Value::Null,
        "labels": {},
        "runtimes": ["runc"],
        "project_id": row.project_id,
        "provider": row.provider,
        "status": row.status,
        "status_reason": row.status_reason,
        "availability_zone": row.availability_zone,
        "address": row.address,
        "agent_connected": row.agent_connected,
        "agent_seen_at": row.agent_seen_at.map(zun_time),
        "created_at": zun_time(row.created_at),
        "updated_at": zun_time(row.updated_at),
    });
    if v >= CPU_PINNING_VERSION {
        view["enable_cpu_pinning"] = json!(false);
    }
    view
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "host:get_all")?;
    let v = require_version(&req)?;
    Params::parse_only(&req, b"", &["limit", "marker", "sort_key", "sort_dir"])?;
    let (rows, usage) = state
        .db
        .run(|c| Ok((monitor::live_instances(c)?, monitor::usage(c)?)))
        .await?;
    let empty = Usage::default();
    let mut rows = rows;
    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let hosts: Vec<Value> = rows
        .iter()
        .map(|r| host_view(&state.public_url, r, usage.get(&r.id).unwrap_or(&empty), v))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"hosts": hosts, "next": null})))
}

async fn show(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "host:get")?;
    let v = require_version(&req)?;
    Params::parse(&req, b"")?.only(&[])?;
    let key = path.into_inner();
    let k = key.clone();
    let found = state
        .db
        .run(move |c| {
            let Some(row) = monitor::host_by_id_or_name(c, &k)? else {
                return Ok(None);
            };
            let usage: HashMap<String, Usage> = monitor::usage(c)?;
            let u = usage.get(&row.id).cloned().unwrap_or_default();
            Ok(Some((row, u)))
        })
        .await?;
    let Some((row, usage)) = found else {
        return Err(ApiError::NotFound(format!(
            "Host {key} could not be found; list the hosts with GET /v1/hosts (osc host-list)."
        )));
    };
    Ok(HttpResponse::Ok().json(host_view(&state.public_url, &row, &usage, v)))
}
