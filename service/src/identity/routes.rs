//! The embedded Keystone v3 subset under `/identity`: version discovery, password
//! authentication scoped to a project, and token validation. The administrative
//! routes (projects, users, roles, assignments, catalog) are in `admin.rs`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::password;
use crate::db;
use crate::state::AppState;

/// Registers the identity routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/identity", web::get().to(versions))
        .route("/identity/", web::get().to(versions))
        .route("/identity/v3", web::get().to(version_v3))
        .route("/identity/v3/", web::get().to(version_v3))
        .route("/identity/v3/auth/tokens", web::post().to(issue_token))
        .route("/identity/v3/auth/tokens", web::get().to(validate_token))
        .route("/identity/v3/auth/tokens", web::head().to(check_token))
        .configure(super::admin::configure);
}

/// A Keystone-format error: `{"error": {"code", "title", "message"}}`.
fn keystone_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": {
            "code": status.as_u16(),
            "title": status.canonical_reason().unwrap_or(""),
            "message": message,
        }
    }))
}

fn v3_document(state: &AppState) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/identity/v3/", state.public_url)}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

async fn versions(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::MultipleChoices().json(json!({"versions": {"values": [v3_document(&state)]}}))
}

async fn version_v3(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"version": v3_document(&state)}))
}

#[derive(Deserialize)]
struct AuthRequest {
    auth: Auth,
}

#[derive(Deserialize)]
struct Auth {
    identity: AuthIdentity,
    scope: Option<AuthScope>,
}

#[derive(Deserialize)]
struct AuthIdentity {
    methods: Vec<String>,
    password: Option<PasswordMethod>,
}

#[derive(Deserialize)]
struct PasswordMethod {
    user: PasswordUser,
}

#[derive(Deserialize)]
struct PasswordUser {
    id: Option<String>,
    name: Option<String>,
    domain: Option<DomainRef>,
    password: String,
}

#[derive(Deserialize)]
struct DomainRef {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct AuthScope {
    project: Option<ProjectRef>,
}

#[derive(Deserialize)]
struct ProjectRef {
    id: Option<String>,
    name: Option<String>,
    domain: Option<DomainRef>,
}

/// Only the `Default` domain exists.
fn is_default_domain(d: &Option<DomainRef>) -> bool {
    match d {
        None => true,
        Some(d) => {
            d.id.as_deref().is_none_or(|id| id == "default")
                && d.name
                    .as_deref()
                    .is_none_or(|n| n.eq_ignore_ascii_case("default"))
        }
    }
}

async fn issue_token(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let req: AuthRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return keystone_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid authentication request: {e}. Send {{\"auth\": {{\"identity\": {{\"methods\": [\"password\"], ...}}}}}}."),
            )
        }
    };
    if !req.auth.identity.methods.iter().any(|m| m == "password") {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "Only the password method is supported.",
        );
    }
    let Some(pw) = req.auth.identity.password else {
        return keystone_error(
            StatusCode::BAD_REQUEST,
            "The password method needs identity.password.user.",
        );
    };
    if !is_default_domain(&pw.user.domain) {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        );
    }
    let scope = req.auth.scope.and_then(|s| s.project);
    if let Some(p) = &scope {
        if !is_default_domain(&p.domain) {
            return keystone_error(
                StatusCode::UNAUTHORIZED,
                "Only projects of the Default domain exist.",
            );
        }
    }
    let lookup_state = state.clone();
    let found = lookup_state
        .db
        .run(move |conn| {
            let user = match (&pw.user.id, &pw.user.name) {
                (Some(id), _) => db::identity::user(conn, id)?,
                (None, Some(name)) => db::identity::user_by_name(conn, name)?,
                (None, None) => None,
            };
            let Some(user) = user.filter(|u| u.enabled) else {
                return Ok(Err("The request you have made requires authentication."));
            };
            let project = match &scope {
                Some(ProjectRef { id: Some(id), .. }) => db::identity::project(conn, id)?,
                Some(ProjectRef {
                    name: Some(name), ..
                }) => db::identity::project_by_name(conn, name)?,
                _ => match &user.default_project_id {
                    Some(id) => db::identity::project(conn, id)?,
                    None => None,
                },
            };
            Ok(Ok((user, project, pw.user.password)))
        })
        .await;
    let (user, project, given) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(msg)) => return keystone_error(StatusCode::UNAUTHORIZED, msg),
        Err(e) => {
            tracing::error!(error = %e, "identity lookup failed");
            return keystone_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity database is unavailable; retry.",
            );
        }
    };
    // Hashing is deliberately slow; keep it off the async workers.
    let stored = user.password_hash.clone();
    let ok = tokio::task::spawn_blocking(move || password::verify(&given, &stored))
        .await
        .unwrap_or(false);
    if !ok {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        );
    }
    let Some(project) = project.filter(|p| p.enabled) else {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "A project scope is required: set OS_PROJECT_NAME (or scope.project in the request) to a project you have a role in.",
        );
    };
    let user_id = user.id.clone();
    let project_id = project.id.clone();
    let roles = match state
        .db
        .run(move |conn| db::identity::roles(conn, &user_id, &project_id))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "role lookup failed");
            return keystone_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity database is unavailable; retry.",
            );
        }
    };
    if roles.is_empty() {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "User {} has no role in project {}.",
                user.name, project.name
            ),
        );
    }
    let issued = match state.tokens.issue(&user.id, &project.id, "password") {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "token signing failed");
            return keystone_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The token could not be signed.",
            );
        }
    };
    tracing::info!(user.id = %user.id, project.id = %project.id, "token issued");
    let body = token_body(&state, &issued.claims, &user, &project, &roles);
    HttpResponse::Created()
        .insert_header(("X-Subject-Token", issued.token))
        .json(body)
}

async fn validate_token(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(caller), Some(subject)) = (header("X-Auth-Token"), header("X-Subject-Token")) else {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "Send your token in X-Auth-Token and the token to validate in X-Subject-Token.",
        );
    };
    if super::authenticate(&state, &caller).await.is_err() {
        return keystone_error(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        );
    }
    let Some(claims) = state.tokens.verify(&subject) else {
        return keystone_error(StatusCode::NOT_FOUND, "Could not find token.");
    };
    let Ok(ctx) = super::authenticate(&state, &subject).await else {
        return keystone_error(StatusCode::NOT_FOUND, "Could not find token.");
    };
    let lookup = state
        .db
        .run(move |conn| {
            Ok((
                db::identity::user(conn, &ctx.user_id)?,
                db::identity::project(conn, &ctx.project_id)?,
                ctx.roles,
            ))
        })
        .await;
    match lookup {
        Ok((Some(user), Some(project), roles)) => HttpResponse::Ok()
            .insert_header(("X-Subject-Token", subject))
            .json(token_body(&state, &claims, &user, &project, &roles)),
        Ok(_) => keystone_error(StatusCode::NOT_FOUND, "Could not find token."),
        Err(e) => {
            tracing::error!(error = %e, "token validation lookup failed");
            keystone_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity database is unavailable; retry.",
            )
        }
    }
}

/// `HEAD /auth/tokens`: validation without the body.
async fn check_token(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    validate_token(state, req).await
}

fn iso(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn token_body(
    state: &AppState,
    claims: &super::tokens::TokenClaims,
    user: &db::models::UserRow,
    project: &db::models::ProjectRow,
    roles: &[String],
) -> Value {
    json!({
        "token": {
            "methods": claims.openstack_methods,
            "audit_ids": claims.openstack_audit_ids,
            "expires_at": iso(claims.exp),
            "issued_at": iso(claims.iat),
            "is_domain": false,
            "user": {
                "id": user.id,
                "name": user.name,
                "domain": {"id": "default", "name": "Default"},
                "password_expires_at": null,
            },
            "project": {
                "id": project.id,
                "name": project.name,
                "domain": {"id": "default", "name": "Default"},
            },
            "roles": roles
                .iter()
                .map(|r| {
                    let id = super::admin::role_by_name(r).map_or(r.as_str(), |role| role.id);
                    json!({"id": id, "name": r})
                })
                .collect::<Vec<_>>(),
            "catalog": catalog(state),
        }
    })
}

/// The service catalog: the container API and this identity service, each with a
/// public, internal and admin endpoint in the service's region.
pub(crate) fn catalog(state: &AppState) -> Value {
    let endpoints = |service: &str, url: String| {
        ["public", "internal", "admin"]
            .iter()
            .map(|i| {
                json!({
                    "id": format!("{service}-{i}"),
                    "interface": i,
                    "region": state.region,
                    "region_id": state.region,
                    "url": url,
                })
            })
            .collect::<Vec<_>>()
    };
    let container_url = format!("{}/v1", state.public_url);
    let identity_url = format!("{}/identity", state.public_url);
    json!([
        {"type": "container", "name": "zun", "id": "berth-container", "endpoints": endpoints("container", container_url)},
        {"type": "identity", "name": "keystone", "id": "berth-identity", "endpoints": endpoints("identity", identity_url)},
    ])
}
