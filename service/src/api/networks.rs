//! Zun's container networking routes, as far as Berth has networks.
//!
//! Berth has no Neutron: a container is reached at its instance's address, on the
//! ports it publishes there. So `network_list` (≥1.13) shows that one network,
//! `berth`, with the instance's address (the container view's `addresses`), and the
//! Neutron operations — `network_attach` (≥1.8), `network_detach` (≥1.6),
//! `add_security_group`/`remove_security_group` (1.1–1.14), and the admin's
//! `POST /v1/networks` / `DELETE /v1/networks/{id}` (≥1.27) — answer 501 in Zun's error
//! format, after the same version, parameter, policy and lookup checks Zun makes (so a
//! wrong request is still a 4xx and another project's container still a 404).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::Params;
use super::version::{self, ApiVersion};
use super::views;
use crate::containers::{find, Scope};
use crate::db::instances;
use crate::identity::RequestContext;
use crate::state::AppState;

/// Registers the routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/containers/{id}/network_list", web::get().to(list))
        .route("/containers/{id}/network_attach", web::post().to(attach))
        .route("/containers/{id}/network_detach", web::post().to(detach))
        .route(
            "/containers/{id}/add_security_group",
            web::post().to(add_security_group),
        )
        .route(
            "/containers/{id}/remove_security_group",
            web::post().to(remove_security_group),
        )
        .route("/networks", web::post().to(create_network))
        .route("/networks/{id}", web::delete().to(delete_network));
}

fn no_neutron(what: &str) -> ApiError {
    ApiError::NotImplemented(format!(
        "{what} is not available: Berth has no Neutron networks, ports or security groups. A container is reached at its instance's address on the ports it publishes (exposed_ports, or Berth's published_ports at create); see GET /v1/containers/{{id}}/network_list."
    ))
}

/// `GET /v1/containers/{id}/network_list`: the container's networks, from its addresses.
async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let v = version::require_route(&req, "network_list", ApiVersion(1, 13), None)?;
    enforce_own(&state, &ctx, "container:get_one")?;
    Params::parse(&req, b"")?.only(&[])?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    let inst = match row.instance_id.clone() {
        Some(id) => {
            state
                .db
                .run(move |c| Ok(instances::get_many(c, [id.clone()])?.remove(&id)))
                .await?
        }
        None => None,
    };
    let view = views::container(&state.public_url, &row, &[], inst.as_ref(), false);
    let mut networks = Vec::new();
    if let Some(addrs) = view["addresses"].as_object() {
        for (net_id, infos) in addrs {
            for info in infos.as_array().into_iter().flatten() {
                let fixed = json!({
                    "subnet_id": info["subnet_id"],
                    "version": info["version"],
                    "ip_address": info["addr"],
                });
                if v >= ApiVersion(1, 18) {
                    networks.push(json!({
                        "net_id": net_id,
                        "port_id": info["port"],
                        "fixed_ips": [fixed],
                    }));
                } else {
                    networks.push(json!({
                        "net_id": net_id,
                        "subnet_id": info["subnet_id"],
                        "port_id": info["port"],
                        "version": info["version"],
                        "ip_address": info["addr"],
                    }));
                }
            }
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "networks": networks })))
}

/// `network` or `port`, exactly one, as Zun requires.
fn network_or_port(p: &Params) -> Result<(), ApiError> {
    match (p.str("network"), p.str("port")) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "Valid network or port is required, not both: give network=NAME or port=ID".into(),
        )),
        (None, None) => Err(ApiError::BadRequest(
            "Valid network or port is required: give network=NAME or port=ID".into(),
        )),
        _ => Ok(()),
    }
}

async fn attach(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    version::require_route(&req, "network_attach", ApiVersion(1, 8), None)?;
    enforce_own(&state, &ctx, "container:network_attach")?;
    let p = Params::parse_only(&req, &body, &["network", "port", "fixed_ip"])?;
    network_or_port(&p)?;
    find(&state, &ctx, &path, Scope::Own).await?;
    Err(no_neutron("Attaching a network"))
}

async fn detach(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    version::require_route(&req, "network_detach", ApiVersion(1, 6), None)?;
    enforce_own(&state, &ctx, "container:network_detach")?;
    let p = Params::parse_only(&req, &body, &["network", "port"])?;
    network_or_port(&p)?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    // A container has one network, `berth`, and no ports: anything else is not
    // attached to it (Zun's answer, 400).
    if let Some(port) = p.str("port") {
        return Err(ApiError::BadRequest(format!(
            "Port '{port}' is not attached to container '{}': Berth containers have no Neutron ports.",
            row.id
        )));
    }
    match p.str("network").as_deref() {
        Some("berth") => Err(no_neutron("Detaching the berth network")),
        other => Err(ApiError::BadRequest(format!(
            "Network '{}' is not attached to container '{}': its only network is berth (see network_list).",
            other.unwrap_or_default(),
            row.id
        ))),
    }
}

async fn security_group(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    ident: String,
    rule: &'static str,
) -> Result<HttpResponse, ApiError> {
    version::require_route(
        &req,
        rule.trim_start_matches("container:"),
        ApiVersion(1, 1),
        Some(ApiVersion(1, 14)),
    )?;
    enforce_own(&state, &ctx, rule)?;
    let p = Params::parse_only(&req, &body, &["name"])?;
    if p.str("name").is_none() {
        return Err(ApiError::BadRequest(
            "name is required: the security group to add or remove".into(),
        ));
    }
    find(&state, &ctx, &ident, Scope::Own).await?;
    Err(no_neutron("Security groups"))
}

async fn add_security_group(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    security_group(
        state,
        ctx,
        req,
        body,
        path.into_inner(),
        "container:add_security_group",
    )
    .await
}

async fn remove_security_group(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    security_group(
        state,
        ctx,
        req,
        body,
        path.into_inner(),
        "container:remove_security_group",
    )
    .await
}

/// `POST /v1/networks` (admin, Zun-internal: registers a Neutron network).
async fn create_network(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "network:create")?;
    let p = Params::parse_only(&req, &body, &["neutron_net_id", "name"])?;
    let _: Option<&Value> = p.get("neutron_net_id");
    Err(no_neutron("Registering a Neutron network"))
}

/// `DELETE /v1/networks/{id}` (≥1.27, admin).
async fn delete_network(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    version::require_route(&req, "DELETE /v1/networks", ApiVersion(1, 27), None)?;
    enforce_own(&state, &ctx, "network:delete")?;
    Err(no_neutron("Deleting a Neutron network"))
}
