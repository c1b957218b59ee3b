//! `/v1/services`: Zun's service list (admins), as Berth's services are.
//!
//! One row for the Berth service itself (`berth-service`, up: it is answering) and one
//! per live instance for its agent (`berth-agent`, Zun's `zun-compute`): `up` while
//! the agent is connected to a relay, `down` otherwise, `last_seen_up` when it was last
//! heard from. Berth has no per-service switch, so enable, disable, force_down and
//! delete answer 501 (after checking that the service exists: an unknown one is 404,
//! as in Zun); an instance leaves service when it is released.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::Params;
use super::views::zun_time;
use crate::db::monitor;
use crate::identity::RequestContext;
use crate::state::AppState;

/// The binary name of the Berth service's own row.
pub const SERVICE_BINARY: &str = "berth-service";
/// The binary name of an instance's agent rows.
pub const AGENT_BINARY: &str = "berth-agent";

/// The handler of a switch Berth's services do not have: [`refuse`] with the policy
/// `rule`, the `known` parameters and `what` the switch would do.
macro_rules! refusal {
    ($rule:literal, [$($known:literal),*], $what:literal) => {
        |state: web::Data<AppState>, ctx: RequestContext, req: HttpRequest, body: web::Bytes| {
            refuse(state, ctx, req, body, $rule, &[$($known),*], $what)
        }
    };
}

/// Registers the routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/services", web::get().to(list))
        .route(
            "/services",
            web::delete().to(refusal!("zun-service:delete", ["host", "binary"], "delete")),
        )
        .route(
            "/services/enable",
            web::put().to(refusal!("zun-service:enable", ["host", "binary"], "enable")),
        )
        .route(
            "/services/disable",
            web::put().to(refusal!(
                "zun-service:disable",
                ["host", "binary", "disabled_reason"],
                "disable"
            )),
        )
        .route(
            "/services/force_down",
            web::put().to(refusal!(
                "zun-service:force_down",
                ["host", "binary", "forced_down"],
                "force down"
            )),
        );
}

/// The machine's host name (the service row's `host`).
fn own_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berth".to_owned())
}

/// Every service row, in Zun's view.
async fn rows(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let instances = state.db.run(monitor::live_instances).await?;
    let now = zun_time(crate::db::now());
    let zone = state
        .providers
        .new_instance_shape()
        .map(|s| s.availability_zone)
        .unwrap_or_else(|| "nova".to_owned());
    let mut out = vec![json!({
        "id": 1,
        "binary": SERVICE_BINARY,
        "host": own_host(),
        "state": "up",
        "disabled": false,
        "disabled_reason": null,
        "forced_down": false,
        "report_count": 0,
        "last_seen_up": now,
        "availability_zone": zone,
        "created_at": null,
        "updated_at": now,
    })];
    for (i, r) in instances.into_iter().enumerate() {
        out.push(json!({
            "id": i + 2,
            "binary": AGENT_BINARY,
            "host": r.name,
            "state": if r.agent_connected { "up" } else { "down" },
            "disabled": false,
            "disabled_reason": null,
            "forced_down": false,
            "report_count": 0,
            "last_seen_up": r.agent_seen_at.map(zun_time),
            "availability_zone": r.availability_zone,
            "created_at": zun_time(r.created_at),
            "updated_at": zun_time(r.updated_at),
            "instance_id": r.id,
            "instance_status": r.status,
        }));
    }
    Ok(out)
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "zun-service:get_all")?;
    Params::parse(&req, b"")?.only(&["limit", "marker", "sort_key", "sort_dir"])?;
    let services = rows(&state).await?;
    Ok(HttpResponse::Ok().json(json!({"services": services})))
}

/// The service named by `host` and `binary` (both required), or 404.
async fn named(state: &AppState, p: &Params) -> Result<Value, ApiError> {
    let (Some(host), Some(binary)) = (p.str("host"), p.str("binary")) else {
        return Err(ApiError::BadRequest(
            "host and binary are required: name the service as `openstack appcontainer service list` shows it".into(),
        ));
    };
    rows(state)
        .await?
        .into_iter()
        .find(|s| s["host"] == host.as_str() && s["binary"] == binary.as_str())
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "Service {binary} on host {host} could not be found; list the services with GET /v1/services."
            ))
        })
}

async fn refuse(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    rule: &str,
    known: &[&str],
    what: &str,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, rule)?;
    let p = Params::parse(&req, &body)?;
    p.only(known)?;
    if let Some(v) = p.get("forced_down") {
        super::params::flex_bool("forced_down", v)?;
    }
    let service = named(&state, &p).await?;
    Err(ApiError::NotImplemented(format!(
        "Berth cannot {what} {} on {}: its services have no switch. An instance's agent is up while connected; release an instance to take it out of service.",
        service["binary"].as_str().unwrap_or_default(),
        service["host"].as_str().unwrap_or_default()
    )))
}
