//! `/v1/quotas` and `/v1/quota_classes`: Zun's quota API (microversion 1.26 and later).
//!
//! A project's limit of a resource is its own, else the `default` quota class's, else
//! Zun's built-in default; -1 is unlimited. Limits are enforced when a container is
//! created, in the transaction that places it. Berth adds one resource to Zun's four:
//! `instances` (default 10), how many instances the project may have at once; a create
//! that would need one more is refused with 403 like any quota.

use std::collections::BTreeMap;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::Params;
use super::version::ApiVersion;
use crate::db::quotas::{self as q, Limits, Resource, Usage};
use crate::identity::RequestContext;
use crate::policy::Target;
use crate::state::AppState;

/// The first microversion with quotas.
const QUOTA_VERSION: ApiVersion = ApiVersion(1, 26);

/// Registers the quota routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/quotas/{project_id}", web::get().to(get))
        .route("/quotas/{project_id}", web::put().to(update))
        .route("/quotas/{project_id}", web::delete().to(delete))
        .route("/quotas/{project_id}/defaults", web::get().to(defaults))
        .route("/quota_classes/{name}", web::get().to(class_get))
        .route("/quota_classes/{name}", web::put().to(class_update));
}

/// Quotas exist from microversion 1.26; older requests do not see the routes.
fn require_version(req: &HttpRequest) -> Result<(), ApiError> {
    let v = req
        .extensions()
        .get::<ApiVersion>()
        .copied()
        .unwrap_or(super::version::MIN);
    if v < QUOTA_VERSION {
        return Err(ApiError::NotFound(format!(
            "Quotas need API microversion {QUOTA_VERSION} or later (this request is {v}): send the header 'OpenStack-API-Version: container {QUOTA_VERSION}'."
        )));
    }
    Ok(())
}

fn limits_json(l: &Limits) -> Value {
    let mut m = Map::new();
    for r in Resource::ALL {
        m.insert(r.name().into(), json!(l.get(r)));
    }
    Value::Object(m)
}

/// A limit with its usage. Serialised straight from the struct so that `limit` comes
/// before `in_use`, as in Zun: zunclient prints the values in the body's order under
/// the headings "limit, in_use".
#[derive(serde::Serialize)]
struct UsageView {
    limit: i64,
    in_use: i64,
}

fn usages_view(l: &Limits, u: &Usage) -> BTreeMap<&'static str, UsageView> {
    Resource::ALL
        .into_iter()
        .map(|r| {
            (
                r.name(),
                UsageView {
                    limit: l.get(r),
                    in_use: u.of(r),
                },
            )
        })
        .collect()
}

/// Parses the limits of a PUT body: integers (or digit strings) of at least -1.
fn parse_values(p: &Params) -> Result<Vec<(Resource, i64)>, ApiError> {
    let names: Vec<&str> = Resource::ALL.iter().map(|r| r.name()).collect();
    p.only(&names)?;
    let mut out = Vec::new();
    for r in Resource::ALL {
        let Some(v) = p.get(r.name()) else { continue };
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= -1 => out.push((r, n)),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "Invalid {} quota {v}: use a whole number, 0 or more, or -1 for unlimited",
                    r.name()
                )))
            }
        }
    }
    Ok(out)
}

fn check_id(kind: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 255 {
        return Err(ApiError::BadRequest(format!(
            "Invalid {kind} '{id}': it is 1 to 255 characters"
        )));
    }
    Ok(())
}

async fn get(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_version(&req)?;
    let project = path.into_inner();
    state
        .policy
        .enforce("quota:get", &ctx, &Target::project(&project))?;
    let p = Params::parse_only(&req, b"", &["usages"])?;
    let usages = p.bool("usages", false)?;
    let (limits, usage) = state
        .db
        .run(move |c| {
            let limits = q::project_limits(c, &project)?;
            let usage = usages.then(|| q::usage(c, &project)).transpose()?;
            Ok((limits, usage))
        })
        .await?;
    Ok(match usage {
        Some(u) => HttpResponse::Ok().json(usages_view(&limits, &u)),
        None => HttpResponse::Ok().json(limits_json(&limits)),
    })
}

async fn defaults(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_version(&req)?;
    let project = path.into_inner();
    state
        .policy
        .enforce("quota:get_default", &ctx, &Target::project(&project))?;
    Params::parse(&req, b"")?.only(&[])?;
    let limits = state
        .db
        .run(|c| q::class_limits(c, q::DEFAULT_CLASS))
        .await?;
    Ok(HttpResponse::Ok().json(limits_json(&limits)))
}

async fn update(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_version(&req)?;
    let project = path.into_inner();
    state
        .policy
        .enforce("quota:update", &ctx, &Target::project(&project))?;
    check_id("project id", &project)?;
    let values = parse_values(&Params::parse(&req, &body)?)?;
    tracing::info!(project.id = %project, user.id = %ctx.user_id, ?values, "quota updated");
    let limits = state
        .db
        .run(move |c| {
            q::set_project(c, &project, &values)?;
            q::project_limits(c, &project)
        })
        .await?;
    Ok(HttpResponse::Ok().json(limits_json(&limits)))
}

async fn delete(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_version(&req)?;
    let project = path.into_inner();
    state
        .policy
        .enforce("quota:delete", &ctx, &Target::project(&project))?;
    Params::parse(&req, b"")?.only(&[])?;
    tracing::info!(project.id = %project, user.id = %ctx.user_id, "quota reset to the defaults");
    state
        .db
        .run(move |c| q::delete_project(c, &project))
        .await?;
    Ok(HttpResponse::Ok().json(Value::Null))
}

async fn class_get(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_version(&req)?;
    enforce_own(&state, &ctx, "quota_class:get")?;
    let class = path.into_inner();
    check_id("quota class name", &class)?;
    Params::parse(&req, b"")?.only(&[])?;
    let limits = state.db.run(move |c| q::class_limits(c, &class)).await?;
    Ok(HttpResponse::Ok().json(limits_json(&limits)))
}

async fn class_update(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_version(&req)?;
    enforce_own(&state, &ctx, "quota_class:update")?;
    let class = path.into_inner();
    check_id("quota class name", &class)?;
    let values = parse_values(&Params::parse(&req, &body)?)?;
    tracing::info!(quota_class = %class, user.id = %ctx.user_id, ?values, "quota class updated");
    let limits = state
        .db
        .run(move |c| {
            q::set_class(c, &class, &values)?;
            q::class_limits(c, &class)
        })
        .await?;
    Ok(HttpResponse::Ok().json(limits_json(&limits)))
}
