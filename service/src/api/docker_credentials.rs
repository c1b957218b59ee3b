//! `/v1/docker/credentials` (a Berth extension): client certificates for the Docker
//! endpoint's TLS listener.
//!
//! `POST` signs the caller's CSR (the private key stays with the caller) for the
//! caller's user and project and registers the certificate by its fingerprint; `GET`
//! lists the project's certificates; `DELETE .../{fingerprint}` revokes one at once.
//! Another project's certificate is "not found".

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::Params;
use super::views::zun_time;
use crate::db::docker_credentials::{self, DockerCredentialRow};
use crate::docker_api::certs::{ClientSubject, IssueError};
use crate::identity::RequestContext;
use crate::state::AppState;

/// Largest CSR accepted (an RSA-4096 CSR is under 2 KiB).
const MAX_CSR: usize = 16 * 1024;

/// Registers the routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/docker/credentials", web::post().to(create))
        .route("/docker/credentials", web::get().to(list))
        .route("/docker/credentials/", web::get().to(list))
        .route(
            "/docker/credentials/{fingerprint}",
            web::delete().to(revoke),
        );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    csr: String,
}

fn view(row: &DockerCredentialRow) -> Value {
    json!({
        "fingerprint": row.fingerprint,
        "user_id": row.user_id,
        "user_name": row.user_name,
        "project_id": row.project_id,
        "project_name": row.project_name,
        "created_at": zun_time(row.created_at),
        "expires_at": zun_time(row.expires_at),
    })
}

async fn create(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "docker:credentials:create")?;
    Params::parse(&req, b"")?.only(&[])?;
    let Some(issuer) = state.docker_issuer.clone() else {
        return Err(ApiError::Unavailable(
            "the Docker endpoint's TLS listener is not enabled on this deployment, so it issues no client certificates; use an X-Auth-Token header instead".into(),
        ));
    };
    let parsed: CreateBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "The request body must be {{\"csr\": \"<PEM certificate signing request>\"}}: {e}"
        ))
    })?;
    if parsed.csr.len() > MAX_CSR {
        return Err(ApiError::BadRequest(format!(
            "The CSR is larger than {MAX_CSR} bytes."
        )));
    }
    let issued = issuer
        .ca
        .issue_client(
            &parsed.csr,
            &ClientSubject {
                user_name: &ctx.user_name,
                project_name: &ctx.project_name,
            },
            issuer.validity,
        )
        .map_err(|e| match e {
            IssueError::BadCsr(_) => ApiError::BadRequest(e.to_string()),
            IssueError::Sign(_) => ApiError::Internal(e.into()),
        })?;
    let row = DockerCredentialRow {
        fingerprint: issued.fingerprint.clone(),
        user_id: ctx.user_id.clone(),
        user_name: ctx.user_name.clone(),
        project_id: ctx.project_id.clone(),
        project_name: ctx.project_name.clone(),
        roles: serde_json::to_string(&ctx.roles).expect("names serialise"),
        created_at: crate::db::now(),
        expires_at: issued.expires_at,
    };
    let stored = row.clone();
    state
        .db
        .run(move |c| docker_credentials::insert(c, &stored))
        .await?;
    tracing::info!(
        user.id = %ctx.user_id,
        project.id = %ctx.project_id,
        fingerprint = %issued.fingerprint,
        "issued a Docker client certificate"
    );
    let mut body = view(&row);
    body["certificate"] = json!(issued.pem);
    body["ca"] = json!(issuer.ca.pem());
    body["docker_host"] = json!(issuer.docker_host);
    Ok(HttpResponse::Created().json(body))
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "docker:credentials:get_all")?;
    Params::parse(&req, b"")?.only(&[])?;
    let project = ctx.project_id.clone();
    let rows = state
        .db
        .run(move |c| docker_credentials::list_of_project(c, &project))
        .await?;
    let items: Vec<Value> = rows.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "credentials": items })))
}

async fn revoke(
    state: web::Data<AppState>,
    ctx: RequestContext,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "docker:credentials:delete")?;
    let fingerprint = path.into_inner().to_ascii_lowercase();
    let project = ctx.project_id.clone();
    let fp = fingerprint.clone();
    let revoked = state
        .db
        .run(move |c| docker_credentials::revoke(c, &project, &fp))
        .await?;
    if !revoked {
        return Err(ApiError::NotFound(format!(
            "Docker client certificate {fingerprint} could not be found in your project; `GET /v1/docker/credentials` lists them."
        )));
    }
    tracing::info!(
        user.id = %ctx.user_id,
        project.id = %ctx.project_id,
        fingerprint = %fingerprint,
        "revoked a Docker client certificate"
    );
    Ok(HttpResponse::NoContent().finish())
}
