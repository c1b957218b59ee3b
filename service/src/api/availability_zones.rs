//! `GET /v1/availability_zones`: the zones containers can be placed in — the zone new
//! instances are made in (the provider's) and the zones of the live instances
//! (registered hosts, other providers), without duplicates. Zun lists its services'
//! zones; Berth's compute hosts are its instances.

use std::collections::BTreeSet;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::enforce_own;
use super::error::ApiError;
use super::params::Params;
use crate::db::monitor;
use crate::identity::RequestContext;
use crate::state::AppState;

/// Registers the route (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/availability_zones", web::get().to(list));
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "availability_zones:get_all")?;
    Params::parse(&req, b"")?.only(&["limit", "marker", "sort_key", "sort_dir"])?;
    let rows = state.db.run(monitor::live_instances).await?;
    let mut zones: BTreeSet<String> = rows
        .into_iter()
        .map(|r| r.availability_zone)
        .filter(|z| !z.is_empty())
        .collect();
    if let Some(shape) = state.providers.new_instance_shape() {
        zones.insert(shape.availability_zone);
    }
    let zones: Vec<_> = zones
        .into_iter()
        .map(|z| json!({"availability_zone": z}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"availability_zones": zones, "next": null})))
}
