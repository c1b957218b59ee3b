//! The Zun-compatible REST API.

pub mod capsules;
pub mod containers;
pub mod docker_credentials;
pub mod error;
pub mod hosts;
pub mod instances;
pub mod params;
pub mod quotas;
pub mod version;
pub mod views;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use serde_json::json;

use crate::state::AppState;
use error::ApiError;
use version::{ApiVersion, MAX, MIN};

/// Registers `/`, `/v1` and everything under `/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root)).service(
        web::scope("/v1")
            .wrap(from_fn(microversion))
            .route("", web::get().to(v1))
            .route("/", web::get().to(v1))
            .configure(containers::configure)
            .configure(capsules::configure)
            .configure(quotas::configure)
            .configure(hosts::configure)
            .configure(instances::configure)
            .configure(docker_credentials::configure),
    );
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
    // Only the resources Berth serves are listed.
    doc["containers"] = json!([
        {"href": format!("{base}/v1/containers/"), "rel": "self"},
        {"href": format!("{base}/containers/"), "rel": "bookmark"},
    ]);
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
