//! The Zun-compatible REST API.

pub mod actions;
pub mod availability_zones;
pub mod capsules;
pub mod container_ops;
pub mod containers;
pub mod docker_credentials;
pub mod error;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod networks;
pub mod params;
pub mod quotas;
pub mod registries;
pub mod services;
pub mod stats;
pub mod version;
pub mod views;
pub mod zun_ws;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next, NormalizePath};
use actix_web::{guard, web, HttpMessage, HttpResponse, ResponseError};
use serde_json::json;

use crate::state::AppState;
use error::ApiError;
use version::{ApiVersion, MAX, MIN};

/// The first path segments of the resources under `/v1`, which Zun also serves without
/// the `/v1` prefix (`/containers` is `/v1/containers`).
const RESOURCES: &[&str] = &[
    "containers",
    "capsules",
    "quotas",
    "quota_classes",
    "hosts",
    "instances",
    "docker",
    "images",
    "services",
    "networks",
    "availability_zones",
    "registries",
];

/// Registers `/`, `/v1` and everything under `/v1`, and the same resources without the
/// prefix, as Zun serves them. A trailing `/` is ignored (`/v1/containers/`).
/// Refuses, in Zun's words, unless policy lets the caller do `rule` in its own project:
/// the opening of most handlers.
pub(crate) fn enforce_own(
    state: &AppState,
    ctx: &crate::identity::RequestContext,
    rule: &str,
) -> Result<(), ApiError> {
    state
        .policy
        .enforce(rule, ctx, &crate::policy::Target::own(ctx))?;
    Ok(())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .service(
            web::scope("/v1")
                .wrap(from_fn(microversion))
                .wrap(NormalizePath::trim())
                .route("", web::get().to(v1))
                .configure(resources),
        )
        .service(
            web::scope("")
                .guard(guard::fn_guard(|ctx| {
                    let path = ctx.head().uri.path();
                    let first = path.trim_start_matches('/').split('/').next();
                    first.is_some_and(|f| RESOURCES.contains(&f))
                }))
                .wrap(from_fn(microversion))
                .wrap(NormalizePath::trim())
                .configure(resources),
        );
}

/// The resources under `/v1`, relative to it.
fn resources(cfg: &mut web::ServiceConfig) {
    cfg.configure(container_ops::configure)
        .configure(containers::configure)
        .configure(capsules::configure)
        .configure(quotas::configure)
        .configure(hosts::configure)
        .configure(instances::configure)
        .configure(docker_credentials::configure)
        .configure(networks::configure)
        .configure(images::configure)
        .configure(registries::configure)
        .configure(services::configure)
        .configure(availability_zones::configure)
        .configure(stats::configure);
}

/// Negotiates the microversion and stamps the version headers on every `/v1` response.
async fn microversion(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let header = req
        .headers()
        .get("OpenStack-API-Version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match ApiVersion::negotiate(header.as_deref()) {
        Err(e) => {
            let mut res = req.into_response(e.error_response());
            // The refusal still tells the client which versions exist.
            for (name, value) in MIN.response_headers().into_iter().take(2) {
                res.headers_mut().insert(name, value);
            }
            Ok(res.map_into_right_body())
        }
        Ok(v) => {
            req.extensions_mut().insert(v);
            let mut res = next.call(req).await?;
            for (name, value) in v.response_headers() {
                res.headers_mut().insert(name, value);
            }
            Ok(res.map_into_left_body())
        }
    }
}

fn version_document(state: &AppState) -> serde_json::Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{}/v1/", state.public_url), "rel": "self"}],
        "status": "CURRENT",
        "max_version": MAX.to_string(),
        "min_version": MIN.to_string(),
    })
}

async fn root(state: web::Data<AppState>) -> HttpResponse {
    let v = version_document(&state);
    HttpResponse::Ok().json(json!({
        "name": "OpenStack Zun API",
        "description": "Berth: a multi-tenant containers service with a Zun-compatible API.",
        "versions": [v.clone()],
        "default_version": v,
    }))
}

async fn v1(state: web::Data<AppState>) -> HttpResponse {
    let base = &state.public_url;
    let mut doc = json!({
        "id": "v1",
        "media_types": [{"base": "application/json", "type": "application/vnd.openstack.zun.v1+json"}],
        "links": [
            {"href": format!("{base}/v1/"), "rel": "self"},
            {"href": "https://docs.openstack.org/developer/zun/dev/api-spec-v1.html", "rel": "describedby", "type": "text/html"},
        ],
    });
    // The resources Berth serves, as Zun lists them (`networks` is absent: Berth
    // has no Neutron networks to create or delete).
    for res in [
        "services",
        "containers",
        "images",
        "hosts",
        "capsules",
        "availability_zones",
        "quotas",
        "quota_classes",
        "registries",
    ] {
        doc[res] = json!([
            {"href": format!("{base}/v1/{res}/"), "rel": "self"},
            {"href": format!("{base}/{res}/"), "rel": "bookmark"},
        ]);
    }
    HttpResponse::Ok().json(doc)
}

/// Any route that does not exist.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "The resource {} {} could not be found.",
        req.method(),
        req.path()
    )))
}
