//! The administrative part of the embedded Keystone v3 subset: projects, users, the
//! fixed roles and their assignments, the Default domain, and the catalog as services
//! and endpoints — what python-openstackclient's identity commands call.
//!
//! Shapes, status codes and the `{"error": {...}}` body follow Keystone. Writes, and
//! reading other users or every project, need the admin role in the token's project;
//! a user may always read itself and the projects it has roles in.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{password, RequestContext};
use crate::db::identity::ProjectDeletion;
use crate::db::models::{ProjectRow, RoleAssignmentRow, UserRow};
use crate::db::{self, DbError};
use crate::state::AppState;

/// One of the fixed roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// Stable id (the same in every deployment).
    pub id: &'static str,
    /// Name, as role assignments and tokens carry it.
    pub name: &'static str,
    /// The role this one implies, as Keystone's default implied roles.
    pub implies: Option<&'static str>,
    /// What it is for.
    pub description: &'static str,
}

/// The roles there are: admin implies member, member implies reader (Keystone's
/// defaults after `keystone-manage bootstrap`).
pub const ROLES: &[Role] = &[
    Role {
        id: "cd458642e37a4bd1bc84c9abd68c2084",
        name: "admin",
        implies: Some("member"),
        description: "Everything, in every project.",
    },
    Role {
        id: "be04763c460f41dc9250290d359370d7",
        name: "member",
        implies: Some("reader"),
        description: "Everything on the resources of its own project.",
    },
    Role {
        id: "dfbe63891f754c8499f7d7850f168e87",
        name: "reader",
        implies: None,
        description: "Lists and shows the resources of its own project.",
    },
];

/// The role with this id.
pub fn role_by_id(id: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.id == id)
}

/// The role with this name.
pub fn role_by_name(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.name == name)
}

/// `direct` role names with every role they imply, in the order of [`ROLES`]; names
/// that are not roles are kept as they are.
pub fn effective_roles(direct: &[String]) -> Vec<String> {
    let mut held: Vec<String> = direct.to_vec();
    let mut i = 0;
    while i < held.len() {
        if let Some(implied) = role_by_name(&held[i]).and_then(|r| r.implies) {
            if !held.iter().any(|h| h == implied) {
                held.push(implied.to_owned());
            }
        }
        i += 1;
    }
    let rank = |n: &String| {
        ROLES
            .iter()
            .position(|r| r.name == n)
            .unwrap_or(ROLES.len())
    };
    held.sort_by_key(rank);
    held
}

/// Registers the routes under `/identity/v3`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Plain routes rather than a scope: a scope would answer 404 for the paths of
    // `routes.rs` under the same prefix instead of letting them match.
    let routes = [
        ("/auth/catalog", web::get().to(auth_catalog)),
        ("/auth/projects", web::get().to(auth_projects)),
        ("/auth/domains", web::get().to(auth_domains)),
        ("/projects", web::post().to(create_project)),
        ("/projects", web::get().to(list_projects)),
        ("/projects/{id}", web::get().to(get_project)),
        ("/projects/{id}", web::patch().to(update_project)),
        ("/projects/{id}", web::delete().to(delete_project)),
        ("/projects/{p}/users/{u}/roles", web::get().to(list_grants)),
        ("/projects/{p}/users/{u}/roles/{r}", web::put().to(grant)),
        (
            "/projects/{p}/users/{u}/roles/{r}",
            web::head().to(check_grant),
        ),
        (
            "/projects/{p}/users/{u}/roles/{r}",
            web::get().to(check_grant),
        ),
        (
            "/projects/{p}/users/{u}/roles/{r}",
            web::delete().to(revoke),
        ),
        ("/users", web::post().to(create_user)),
        ("/users", web::get().to(list_users)),
        ("/users/{id}", web::get().to(get_user)),
        ("/users/{id}", web::patch().to(update_user)),
        ("/users/{id}", web::delete().to(delete_user)),
        ("/users/{id}/projects", web::get().to(user_projects)),
        ("/roles", web::get().to(list_roles)),
        ("/roles/{id}", web::get().to(get_role)),
        ("/role_assignments", web::get().to(list_assignments)),
        ("/domains", web::get().to(list_domains)),
        ("/domains/{id}", web::get().to(get_domain)),
        ("/services", web::get().to(list_services)),
        ("/services/{id}", web::get().to(get_service)),
        ("/endpoints", web::get().to(list_endpoints)),
        ("/endpoints/{id}", web::get().to(get_endpoint)),
        ("/regions", web::get().to(list_regions)),
        ("/regions/{id}", web::get().to(get_region)),
    ];
    for (path, route) in routes {
        cfg.route(&format!("/identity/v3{path}"), route);
    }
}

/// A failure in Keystone's format: `{"error": {"code", "title", "message"}}`.
#[derive(Debug)]
pub struct KeystoneError {
    status: StatusCode,
    message: String,
}

impl KeystoneError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        KeystoneError {
            status,
            message: message.into(),
        }
    }

    fn not_found(kind: &str, id: &str) -> Self {
        KeystoneError::new(
            StatusCode::NOT_FOUND,
            format!("Could not find {kind}: {id}."),
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        KeystoneError::new(StatusCode::BAD_REQUEST, message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        KeystoneError::new(StatusCode::CONFLICT, message)
    }
}

impl std::fmt::Display for KeystoneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for KeystoneError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.insert_header(("WWW-Authenticate", "Keystone uri=\"/identity/v3\""));
        }
        resp.json(json!({
            "error": {
                "code": self.status.as_u16(),
                "title": self.status.canonical_reason().unwrap_or(""),
                "message": self.message,
            }
        }))
    }
}

impl From<DbError> for KeystoneError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(msg) => KeystoneError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("The identity database is unavailable ({msg}); retry shortly."),
            ),
            other => {
                let correlation = Uuid::new_v4();
                tracing::error!(error.correlation_id = %correlation, error = %other, "identity request failed");
                KeystoneError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("An unexpected error prevented the server from fulfilling your request. Error Correlation id is: {correlation}"),
                )
            }
        }
    }
}

type Result<T> = std::result::Result<T, KeystoneError>;

/// The caller, from `X-Auth-Token`, or 401 in Keystone's format.
async fn caller(state: &AppState, req: &HttpRequest) -> Result<RequestContext> {
    let token = req
        .headers()
        .get("X-Auth-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            KeystoneError::new(
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication: send a token in X-Auth-Token.",
            )
        })?;
    super::authenticate(state, token)
        .await
        .map_err(|e| KeystoneError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// 403 unless the caller holds the admin role in its token's project.
fn require_admin(ctx: &RequestContext, action: &str) -> Result<()> {
    if ctx.is_admin() {
        Ok(())
    } else {
        Err(KeystoneError::new(
            StatusCode::FORBIDDEN,
            format!(
                "You are not authorized to perform the requested action: identity:{action}. \
                 It needs the admin role in your token's project (yours: {} in {}).",
                ctx.roles.join(", "),
                ctx.project_name
            ),
        ))
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        KeystoneError::bad_request(format!(
            "Invalid input for the request body: {e}. Expected {example}."
        ))
    })
}

/// Keystone's reading of a boolean query flag: present means true unless `0`/`false`.
fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no"))
}

fn list_links(state: &AppState, req: &HttpRequest) -> Value {
    let query = req.query_string();
    let path = req.path();
    let href = if query.is_empty() {
        format!("{}{path}", state.public_url)
    } else {
        format!("{}{path}?{query}", state.public_url)
    };
    json!({"self": href, "previous": null, "next": null})
}

fn v3_url(state: &AppState, rest: &str) -> String {
    format!("{}/identity/v3/{rest}", state.public_url)
}

fn check_domain(domain_id: Option<&str>) -> Result<()> {
    match domain_id {
        None | Some("default") => Ok(()),
        Some(other) => Err(KeystoneError::bad_request(format!(
            "Only the Default domain (id \"default\") exists; {other:?} does not."
        ))),
    }
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.len() > 64 || trimmed != name {
        return Err(KeystoneError::bad_request(format!(
            "Invalid {kind} name {name:?}: it must be 1 to 64 characters with no leading or trailing spaces."
        )));
    }
    Ok(())
}

// ---- views ----

fn domain_view(state: &AppState) -> Value {
    json!({
        "id": "default",
        "name": "Default",
        "description": "The default domain",
        "enabled": true,
        "tags": [],
        "options": {},
        "links": {"self": v3_url(state, "domains/default")},
    })
}

fn project_view(state: &AppState, p: &ProjectRow) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "domain_id": p.domain_id,
        "description": p.description,
        "enabled": p.enabled,
        "parent_id": p.domain_id,
        "is_domain": false,
        "tags": [],
        "options": {},
        "links": {"self": v3_url(state, &format!("projects/{}", p.id))},
    })
}

fn user_view(state: &AppState, u: &UserRow) -> Value {
    let mut v = json!({
        "id": u.id,
        "name": u.name,
        "domain_id": u.domain_id,
        "enabled": u.enabled,
        "password_expires_at": null,
        "options": {},
        "links": {"self": v3_url(state, &format!("users/{}", u.id))},
    });
    if let Some(p) = &u.default_project_id {
        v["default_project_id"] = json!(p);
    }
    v
}

fn role_view(state: &AppState, r: &Role) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "domain_id": null,
        "description": r.description,
        "options": {},
        "links": {"self": v3_url(state, &format!("roles/{}", r.id))},
    })
}

// ---- auth ----

async fn auth_catalog(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    Ok(HttpResponse::Ok().json(json!({
        "catalog": super::routes::catalog(&state),
        "links": list_links(&state, &req),
    })))
}

async fn auth_projects(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    let rows = state
        .db
        .run(move |c| db::identity::projects_of_user(c, &ctx.user_id))
        .await?;
    let projects: Vec<Value> = rows
        .iter()
        .filter(|p| p.enabled)
        .map(|p| project_view(&state, p))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"projects": projects, "links": list_links(&state, &req)})))
}

async fn auth_domains(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    // Roles are only ever held on projects, so no domain is a scope target.
    Ok(HttpResponse::Ok().json(json!({"domains": [], "links": list_links(&state, &req)})))
}

// ---- projects ----

#[derive(Deserialize)]
struct ProjectBody<T> {
    project: T,
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    is_domain: Option<bool>,
}

#[derive(Deserialize)]
struct ProjectPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

fn duplicate(kind: &str, name: &str) -> KeystoneError {
    KeystoneError::conflict(format!(
        "Conflict occurred attempting to store {kind} - a {kind} named {name:?} already exists in the Default domain; choose another name."
    ))
}

async fn create_project(
    state: web::Data<AppState>,
    req: HttpRequest,
    bytes: web::Bytes,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "create_project")?;
    let ProjectBody { project: new } = body::<ProjectBody<NewProject>>(
        &bytes,
        r#"{"project": {"name": "NAME", "domain_id": "default"}}"#,
    )?;
    check_name("project", &new.name)?;
    check_domain(new.domain_id.as_deref())?;
    check_domain(new.parent_id.as_deref()).map_err(|_| {
        KeystoneError::bad_request(
            "Projects cannot be nested: leave parent_id out or set it to \"default\".",
        )
    })?;
    if new.is_domain == Some(true) {
        return Err(KeystoneError::bad_request(
            "Only the Default domain exists; projects acting as domains are not supported.",
        ));
    }
    let row = ProjectRow {
        id: Uuid::new_v4().simple().to_string(),
        name: new.name,
        domain_id: "default".into(),
        description: new.description.unwrap_or_default(),
        enabled: new.enabled.unwrap_or(true),
        created_at: db::now(),
    };
    let insert = row.clone();
    let result = state
        .db
        .run(move |c| {
            if db::identity::project_by_name(c, &insert.name)?.is_some() {
                return Ok(false);
            }
            db::identity::insert_project(c, &insert)?;
            Ok(true)
        })
        .await;
    match result {
        Ok(true) => {}
        Ok(false) => return Err(duplicate("project", &row.name)),
        Err(e) if db::is_unique_violation(&e) => return Err(duplicate("project", &row.name)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(project.id = %row.id, project.name = %row.name, user.id = %ctx.user_id, "project created");
    Ok(HttpResponse::Created().json(json!({"project": project_view(&state, &row)})))
}

async fn list_projects(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "list_projects")?;
    let name = query.get("name").cloned();
    let rows = state
        .db
        .run(move |c| db::identity::projects(c, name.as_deref()))
        .await?;
    let domain = query.get("domain_id").cloned();
    let enabled = query.get("enabled").map(|v| v != "false" && v != "0");
    let projects: Vec<Value> = rows
        .iter()
        .filter(|p| domain.as_deref().is_none_or(|d| d == p.domain_id))
        .filter(|p| enabled.is_none_or(|e| e == p.enabled))
        .map(|p| project_view(&state, p))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"projects": projects, "links": list_links(&state, &req)})))
}

async fn find_project(state: &AppState, id: String) -> Result<ProjectRow> {
    let shown = id.clone();
    state
        .db
        .run(move |c| db::identity::project(c, &id))
        .await?
        .ok_or_else(|| KeystoneError::not_found("project", &shown))
}

async fn find_user(state: &AppState, id: String) -> Result<UserRow> {
    let shown = id.clone();
    state
        .db
        .run(move |c| db::identity::user(c, &id))
        .await?
        .ok_or_else(|| KeystoneError::not_found("user", &shown))
}

async fn get_project(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    let id = id.into_inner();
    // Anyone may read the project of their token; other projects are the admin's.
    if id != ctx.project_id {
        require_admin(&ctx, "get_project")?;
    }
    let row = find_project(&state, id).await?;
    Ok(HttpResponse::Ok().json(json!({"project": project_view(&state, &row)})))
}

async fn update_project(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "update_project")?;
    let ProjectBody { project: patch } = body::<ProjectBody<ProjectPatch>>(
        &bytes,
        r#"{"project": {"name": "NEW", "description": "...", "enabled": true}}"#,
    )?;
    let mut row = find_project(&state, id.into_inner()).await?;
    if let Some(name) = patch.name {
        check_name("project", &name)?;
        row.name = name;
    }
    if let Some(d) = patch.description {
        row.description = d;
    }
    if let Some(e) = patch.enabled {
        row.enabled = e;
    }
    let update = row.clone();
    let result = state
        .db
        .run(move |c| {
            if let Some(other) = db::identity::project_by_name(c, &update.name)? {
                if other.id != update.id {
                    return Ok(None);
                }
            }
            db::identity::update_project(c, &update).map(Some)
        })
        .await;
    match result {
        Ok(Some(true)) => {}
        Ok(Some(false)) => return Err(KeystoneError::not_found("project", &row.id)),
        Ok(None) => return Err(duplicate("project", &row.name)),
        Err(e) if db::is_unique_violation(&e) => return Err(duplicate("project", &row.name)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(project.id = %row.id, user.id = %ctx.user_id, "project updated");
    Ok(HttpResponse::Ok().json(json!({"project": project_view(&state, &row)})))
}

async fn delete_project(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "delete_project")?;
    let id = id.into_inner();
    let target = id.clone();
    let outcome = state
        .db
        .run(move |c| db::identity::delete_project(c, &target))
        .await;
    match outcome {
        Ok(ProjectDeletion::Deleted) => {
            tracing::info!(project.id = %id, user.id = %ctx.user_id, "project deleted");
            Ok(HttpResponse::NoContent().finish())
        }
        Ok(ProjectDeletion::NotFound) => Err(KeystoneError::not_found("project", &id)),
        Ok(ProjectDeletion::InUse {
            containers,
            instances,
        }) => Err(KeystoneError::conflict(format!(
            "Project {id} still has {containers} container(s) and {instances} instance(s), which belong to it; \
             delete its containers (and let its instances be released) before deleting the project."
        ))),
        Err(DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _,
        ))) => Err(KeystoneError::conflict(format!(
            "Project {id} is still referenced by other records (such as its quotas or instances); remove them first."
        ))),
        Err(e) => Err(e.into()),
    }
}

// ---- users ----

#[derive(Deserialize)]
struct UserBody<T> {
    user: T,
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    default_project_id: Option<String>,
}

#[derive(Deserialize)]
struct UserPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    /// `null` clears it; absent leaves it.
    #[serde(default, with = "double_option")]
    default_project_id: Option<Option<String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

async fn hash_password(password: Option<String>) -> Result<String> {
    match password {
        // With no password nobody can authenticate as the user (Keystone allows that).
        None => Ok(String::new()),
        Some(p) => tokio::task::spawn_blocking(move || password::hash(&p))
            .await
            .map_err(|e| DbError::Unavailable(format!("hashing failed: {e}")).into()),
    }
}

async fn check_default_project(state: &AppState, id: &Option<String>) -> Result<()> {
    if let Some(id) = id {
        let wanted = id.clone();
        let found = state
            .db
            .run(move |c| db::identity::project(c, &wanted))
            .await?;
        if found.is_none() {
            return Err(KeystoneError::bad_request(format!(
                "default_project_id {id} is not a project: give the id of an existing project."
            )));
        }
    }
    Ok(())
}

async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    bytes: web::Bytes,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "create_user")?;
    let UserBody { user: new } = body::<UserBody<NewUser>>(
        &bytes,
        r#"{"user": {"name": "NAME", "password": "...", "default_project_id": "ID"}}"#,
    )?;
    check_name("user", &new.name)?;
    check_domain(new.domain_id.as_deref())?;
    check_default_project(&state, &new.default_project_id).await?;
    let row = UserRow {
        id: Uuid::new_v4().simple().to_string(),
        name: new.name,
        domain_id: "default".into(),
        password_hash: hash_password(new.password).await?,
        enabled: new.enabled.unwrap_or(true),
        default_project_id: new.default_project_id,
        created_at: db::now(),
    };
    let insert = row.clone();
    let result = state
        .db
        .run(move |c| {
            if db::identity::user_by_name(c, &insert.name)?.is_some() {
                return Ok(false);
            }
            db::identity::insert_user(c, &insert)?;
            Ok(true)
        })
        .await;
    match result {
        Ok(true) => {}
        Ok(false) => return Err(duplicate("user", &row.name)),
        Err(e) if db::is_unique_violation(&e) => return Err(duplicate("user", &row.name)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(target.user.id = %row.id, user.id = %ctx.user_id, "user created");
    Ok(HttpResponse::Created().json(json!({"user": user_view(&state, &row)})))
}

async fn list_users(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "list_users")?;
    let name = query.get("name").cloned();
    let rows = state
        .db
        .run(move |c| db::identity::users(c, name.as_deref()))
        .await?;
    let domain = query.get("domain_id").cloned();
    let enabled = query.get("enabled").map(|v| v != "false" && v != "0");
    let users: Vec<Value> = rows
        .iter()
        .filter(|u| domain.as_deref().is_none_or(|d| d == u.domain_id))
        .filter(|u| enabled.is_none_or(|e| e == u.enabled))
        .map(|u| user_view(&state, u))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"users": users, "links": list_links(&state, &req)})))
}

async fn get_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    let id = id.into_inner();
    if id != ctx.user_id {
        require_admin(&ctx, "get_user")?;
    }
    let row = find_user(&state, id).await?;
    Ok(HttpResponse::Ok().json(json!({"user": user_view(&state, &row)})))
}

async fn update_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "update_user")?;
    let UserBody { user: patch } = body::<UserBody<UserPatch>>(
        &bytes,
        r#"{"user": {"password": "...", "enabled": true, "default_project_id": "ID"}}"#,
    )?;
    let mut row = find_user(&state, id.into_inner()).await?;
    if let Some(name) = patch.name {
        check_name("user", &name)?;
        row.name = name;
    }
    if let Some(e) = patch.enabled {
        row.enabled = e;
    }
    if let Some(p) = patch.default_project_id {
        check_default_project(&state, &p).await?;
        row.default_project_id = p;
    }
    if patch.password.is_some() {
        row.password_hash = hash_password(patch.password).await?;
    }
    let update = row.clone();
    let result = state
        .db
        .run(move |c| {
            if let Some(other) = db::identity::user_by_name(c, &update.name)? {
                if other.id != update.id {
                    return Ok(None);
                }
            }
            db::identity::update_user(c, &update).map(Some)
        })
        .await;
    match result {
        Ok(Some(true)) => {}
        Ok(Some(false)) => return Err(KeystoneError::not_found("user", &row.id)),
        Ok(None) => return Err(duplicate("user", &row.name)),
        Err(e) if db::is_unique_violation(&e) => return Err(duplicate("user", &row.name)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(target.user.id = %row.id, user.id = %ctx.user_id, "user updated");
    Ok(HttpResponse::Ok().json(json!({"user": user_view(&state, &row)})))
}

async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "delete_user")?;
    let id = id.into_inner();
    let target = id.clone();
    if !state
        .db
        .run(move |c| db::identity::delete_user(c, &target))
        .await?
    {
        return Err(KeystoneError::not_found("user", &id));
    }
    tracing::info!(target.user.id = %id, user.id = %ctx.user_id, "user deleted");
    Ok(HttpResponse::NoContent().finish())
}

async fn user_projects(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    let id = id.into_inner();
    if id != ctx.user_id {
        require_admin(&ctx, "list_user_projects")?;
    }
    find_user(&state, id.clone()).await?;
    let rows = state
        .db
        .run(move |c| db::identity::projects_of_user(c, &id))
        .await?;
    let projects: Vec<Value> = rows.iter().map(|p| project_view(&state, p)).collect();
    Ok(HttpResponse::Ok().json(json!({"projects": projects, "links": list_links(&state, &req)})))
}

// ---- roles and assignments ----

async fn list_roles(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    let roles: Vec<Value> = ROLES
        .iter()
        .filter(|r| query.get("name").is_none_or(|n| n == r.name))
        // Domain-specific roles do not exist.
        .filter(|_| query.get("domain_id").is_none_or(|d| d.is_empty()))
        .map(|r| role_view(&state, r))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"roles": roles, "links": list_links(&state, &req)})))
}

async fn get_role(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    let role = role_by_id(&id).ok_or_else(|| KeystoneError::not_found("role", &id))?;
    Ok(HttpResponse::Ok().json(json!({"role": role_view(&state, role)})))
}

/// Resolves the project, user and role of an assignment route, or 404 naming which
/// one is missing.
async fn assignment_target(
    state: &AppState,
    path: (String, String, String),
) -> Result<(ProjectRow, UserRow, &'static Role)> {
    let (p, u, r) = path;
    let role = role_by_id(&r).ok_or_else(|| KeystoneError::not_found("role", &r))?;
    let project = find_project(state, p).await?;
    let user = find_user(state, u).await?;
    Ok((project, user, role))
}

async fn grant(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "create_grant")?;
    let (project, user, role) = assignment_target(&state, path.into_inner()).await?;
    let row = RoleAssignmentRow {
        user_id: user.id.clone(),
        project_id: project.id.clone(),
        role: role.name.to_owned(),
    };
    let result = state
        .db
        .run(move |c| db::identity::grant_once(c, &row))
        .await;
    match result {
        Ok(_) => {}
        // Two grants of the same role at once: the other one made it.
        Err(e) if db::is_unique_violation(&e) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(project.id = %project.id, target.user.id = %user.id, role = role.name, user.id = %ctx.user_id, "role granted");
    Ok(HttpResponse::NoContent().finish())
}

async fn check_grant(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    let (p, u, r) = path.into_inner();
    if u != ctx.user_id {
        require_admin(&ctx, "check_grant")?;
    }
    let (project, user, role) = assignment_target(&state, (p, u, r)).await?;
    let row = RoleAssignmentRow {
        user_id: user.id.clone(),
        project_id: project.id.clone(),
        role: role.name.to_owned(),
    };
    if state
        .db
        .run(move |c| db::identity::has_role(c, &row))
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(KeystoneError::new(
            StatusCode::NOT_FOUND,
            format!(
                "Could not find role assignment: user {} has no role {} in project {}.",
                user.id, role.id, project.id
            ),
        ))
    }
}

async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    require_admin(&ctx, "revoke_grant")?;
    let (project, user, role) = assignment_target(&state, path.into_inner()).await?;
    let row = RoleAssignmentRow {
        user_id: user.id.clone(),
        project_id: project.id.clone(),
        role: role.name.to_owned(),
    };
    if !state.db.run(move |c| db::identity::revoke(c, &row)).await? {
        return Err(KeystoneError::new(
            StatusCode::NOT_FOUND,
            format!(
                "Could not find role assignment: user {} has no role {} in project {}.",
                user.id, role.id, project.id
            ),
        ));
    }
    tracing::info!(project.id = %project.id, target.user.id = %user.id, role = role.name, user.id = %ctx.user_id, "role revoked");
    Ok(HttpResponse::NoContent().finish())
}

async fn list_grants(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    let (p, u) = path.into_inner();
    if u != ctx.user_id {
        require_admin(&ctx, "list_grants")?;
    }
    let project = find_project(&state, p).await?;
    let user = find_user(&state, u).await?;
    let (uid, pid) = (user.id.clone(), project.id.clone());
    let rows = state
        .db
        .run(move |c| db::identity::assignments(c, Some(&uid), Some(&pid), None))
        .await?;
    let roles: Vec<Value> = rows
        .iter()
        .filter_map(|a| role_by_name(&a.role))
        .map(|r| role_view(&state, r))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"roles": roles, "links": list_links(&state, &req)})))
}

async fn list_assignments(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse> {
    let ctx = caller(&state, &req).await?;
    let user = query.get("user.id").cloned();
    // Anyone may list their own assignments; everyone's are the admin's.
    if user.as_deref() != Some(ctx.user_id.as_str()) {
        require_admin(&ctx, "list_role_assignments")?;
    }
    let links = list_links(&state, &req);
    // Groups, domains and the system never hold roles here: such filters match nothing.
    let impossible = ["group.id", "scope.domain.id", "scope.system"]
        .iter()
        .any(|k| query.contains_key(*k));
    if impossible {
        return Ok(HttpResponse::Ok().json(json!({"role_assignments": [], "links": links})));
    }
    let project = query.get("scope.project.id").cloned();
    let role_filter = match query.get("role.id") {
        Some(id) => match role_by_id(id) {
            Some(r) => Some(r),
            None => {
                return Ok(HttpResponse::Ok().json(json!({"role_assignments": [], "links": links})))
            }
        },
        None => None,
    };
    let effective = flag(&query, "effective");
    let include_names = flag(&query, "include_names");
    let (rows, users, projects) = state
        .db
        .run(move |c| {
            let rows = db::identity::assignments(c, user.as_deref(), project.as_deref(), None)?;
            let (users, projects) = if include_names {
                (
                    db::identity::users(c, None)?,
                    db::identity::projects(c, None)?,
                )
            } else {
                (Vec::new(), Vec::new())
            };
            Ok((rows, users, projects))
        })
        .await?;
    let user_names: HashMap<&str, &str> = users
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str()))
        .collect();
    let project_names: HashMap<&str, &str> = projects
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_str()))
        .collect();
    let domain = json!({"id": "default", "name": "Default"});
    let mut out = Vec::new();
    for row in &rows {
        let Some(direct) = role_by_name(&row.role) else {
            continue;
        };
        // With `effective`, an assignment stands for its role and every role implied.
        let mut expanded = vec![(direct, None::<&Role>)];
        if effective {
            let mut cur = direct;
            while let Some(next) = cur.implies.and_then(role_by_name) {
                expanded.push((next, Some(direct)));
                cur = next;
            }
        }
        for (role, prior) in expanded {
            if role_filter.is_some_and(|f| f.id != role.id) {
                continue;
            }
            let mut role_ref = json!({"id": role.id});
            let mut user_ref = json!({"id": row.user_id});
            let mut project_ref = json!({"id": row.project_id});
            if include_names {
                role_ref["name"] = json!(role.name);
                user_ref["name"] = json!(user_names.get(row.user_id.as_str()));
                user_ref["domain"] = domain.clone();
                project_ref["name"] = json!(project_names.get(row.project_id.as_str()));
                project_ref["domain"] = domain.clone();
            }
            let mut links = json!({"assignment": v3_url(
                &state,
                &format!("projects/{}/users/{}/roles/{}", row.project_id, row.user_id, direct.id),
            )});
            let mut entry = json!({
                "role": role_ref,
                "user": user_ref,
                "scope": {"project": project_ref},
            });
            if let Some(prior) = prior {
                links["prior_role"] = json!(v3_url(&state, &format!("roles/{}", prior.id)));
                entry["prior_role"] = json!({"id": prior.id});
            }
            entry["links"] = links;
            out.push(entry);
        }
    }
    Ok(HttpResponse::Ok().json(json!({"role_assignments": out, "links": links})))
}

// ---- domains ----

async fn list_domains(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    let matches = query.get("name").is_none_or(|n| n == "Default");
    let domains = if matches {
        vec![domain_view(&state)]
    } else {
        Vec::new()
    };
    Ok(HttpResponse::Ok().json(json!({"domains": domains, "links": list_links(&state, &req)})))
}

async fn get_domain(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    if id.as_str() != "default" {
        return Err(KeystoneError::not_found("domain", &id));
    }
    Ok(HttpResponse::Ok().json(json!({"domain": domain_view(&state)})))
}

// ---- the catalog as services, endpoints and regions ----

fn services(state: &AppState) -> Vec<Value> {
    super::routes::catalog(state)
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|entry| {
            json!({
                "id": entry["id"],
                "type": entry["type"],
                "name": entry["name"],
                "enabled": true,
                "description": "",
                "links": {"self": v3_url(state, &format!("services/{}", entry["id"].as_str().unwrap_or_default()))},
            })
        })
        .collect()
}

fn endpoints(state: &AppState) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in super::routes::catalog(state)
        .as_array()
        .into_iter()
        .flatten()
    {
        for e in entry["endpoints"].as_array().into_iter().flatten() {
            let mut e = e.clone();
            e["service_id"] = entry["id"].clone();
            e["enabled"] = json!(true);
            e["links"] = json!({"self": v3_url(state, &format!("endpoints/{}", e["id"].as_str().unwrap_or_default()))});
            out.push(e);
        }
    }
    out
}

async fn list_services(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    let services: Vec<Value> = services(&state)
        .into_iter()
        .filter(|s| query.get("type").is_none_or(|t| s["type"] == json!(t)))
        .filter(|s| query.get("name").is_none_or(|n| s["name"] == json!(n)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"services": services, "links": list_links(&state, &req)})))
}

async fn get_service(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    let service = services(&state)
        .into_iter()
        .find(|s| s["id"] == json!(id.as_str()))
        .ok_or_else(|| KeystoneError::not_found("service", &id))?;
    Ok(HttpResponse::Ok().json(json!({"service": service})))
}

async fn list_endpoints(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    let endpoints: Vec<Value> = endpoints(&state)
        .into_iter()
        .filter(|e| {
            query
                .get("interface")
                .is_none_or(|i| e["interface"] == json!(i))
        })
        .filter(|e| {
            query
                .get("service_id")
                .is_none_or(|s| e["service_id"] == json!(s))
        })
        .filter(|e| {
            query
                .get("region_id")
                .is_none_or(|r| e["region_id"] == json!(r))
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"endpoints": endpoints, "links": list_links(&state, &req)})))
}

async fn get_endpoint(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    let endpoint = endpoints(&state)
        .into_iter()
        .find(|e| e["id"] == json!(id.as_str()))
        .ok_or_else(|| KeystoneError::not_found("endpoint", &id))?;
    Ok(HttpResponse::Ok().json(json!({"endpoint": endpoint})))
}

fn region_view(state: &AppState) -> Value {
    json!({
        "id": state.region,
        "description": "",
        "parent_region_id": null,
        "links": {"self": v3_url(state, &format!("regions/{}", state.region))},
    })
}

async fn list_regions(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"regions": [region_view(&state)], "links": list_links(&state, &req)})))
}

async fn get_region(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    caller(&state, &req).await?;
    if id.as_str() != state.region {
        return Err(KeystoneError::not_found("region", &id));
    }
    Ok(HttpResponse::Ok().json(json!({"region": region_view(&state)})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_implies_reader_and_admin_implies_both() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(effective_roles(&s(&["member"])), s(&["member", "reader"]));
        assert_eq!(
            effective_roles(&s(&["admin"])),
            s(&["admin", "member", "reader"])
        );
        assert_eq!(effective_roles(&s(&["reader"])), s(&["reader"]));
        assert_eq!(
            effective_roles(&s(&["reader", "admin"])),
            s(&["admin", "member", "reader"])
        );
        assert!(effective_roles(&[]).is_empty());
    }

    #[test]
    fn role_ids_are_distinct_and_found_by_id_and_name() {
        for r in ROLES {
            assert_eq!(role_by_id(r.id), Some(r));
            assert_eq!(role_by_name(r.name), Some(r));
            assert_eq!(ROLES.iter().filter(|o| o.id == r.id).count(), 1);
        }
        assert!(role_by_id("admin").is_none());
    }
}
