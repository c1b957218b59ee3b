//! `/v1/registries` (microversion 1.30 and later): a project's private registry
//! credentials, as Zun keeps them. The password is sealed at rest (AES-256-GCM under
//! the service's registry key, [`crate::secrets`]) and never shown (`***`). A container
//! created with `registry` (1.31) pulls its image with them: the lifecycle opens the
//! password only to put it into the signed create command.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::enforce_own;
use super::error::ApiError;
use super::params::{require_json, Params};
use super::version::{self, ApiVersion};
use crate::db::now;
use crate::db::zun::{self, RegistryChange, RegistryFilter, RegistryRow};
use crate::identity::RequestContext;
use crate::state::AppState;

const SINCE: ApiVersion = ApiVersion(1, 30);

/// Registers the routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/registries", web::post().to(create))
        .route("/registries", web::get().to(list))
        .route("/registries/{id}", web::get().to(show))
        .route("/registries/{id}", web::patch().to(update))
        .route("/registries/{id}", web::delete().to(delete));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapper {
    registry: Fields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    name: Option<String>,
    domain: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Fields {
    fn validate(&self) -> Result<(), ApiError> {
        if let Some(n) = &self.name {
            let ok = (2..=255).contains(&n.len())
                && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(ApiError::BadRequest(format!(
                    "Invalid registry name '{n}': 2 to 255 letters, digits, '_', '.' or '-', starting with a letter or digit"
                )));
            }
        }
        for (key, v) in [
            ("domain", &self.domain),
            ("username", &self.username),
            ("password", &self.password),
        ] {
            if v.as_deref() == Some("") {
                return Err(ApiError::BadRequest(format!(
                    "Invalid registry {key}: it must not be empty"
                )));
            }
        }
        Ok(())
    }
}

fn parse_body(body: &[u8]) -> Result<Fields, ApiError> {
    let w: Wrapper = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "Invalid registry: {e}. Send {{\"registry\": {{\"domain\": ..., \"name\": ..., \"username\": ..., \"password\": ...}}}}"
        ))
    })?;
    w.registry.validate()?;
    Ok(w.registry)
}

fn view(public_url: &str, r: &RegistryRow) -> Value {
    json!({
        "uuid": r.id,
        "links": [
            {"href": format!("{public_url}/v1/registries/{}", r.id), "rel": "self"},
            {"href": format!("{public_url}/registries/{}", r.id), "rel": "bookmark"},
        ],
        "name": if r.name.is_empty() { None } else { Some(&r.name) },
        "domain": r.domain,
        "username": r.username,
        "password": "***",
        "project_id": r.project_id,
        "user_id": r.user_id,
    })
}

async fn create(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    version::require_route(&req, "registries", SINCE, None)?;
    enforce_own(&state, &ctx, "registry:create")?;
    require_json(&req)?;
    let f = parse_body(&body)?;
    let Some(domain) = f.domain else {
        return Err(ApiError::BadRequest(
            "registry.domain is required: the registry's host, e.g. registry.example.com:5000"
                .into(),
        ));
    };
    let t = now();
    let id = Uuid::new_v4().to_string();
    let password = seal(&state, &id, f.password)?;
    let row = RegistryRow {
        id,
        project_id: ctx.project_id.clone(),
        user_id: ctx.user_id.clone(),
        name: f.name.unwrap_or_default(),
        domain,
        username: f.username,
        password,
        created_at: t,
        updated_at: t,
    };
    let r = row.clone();
    state.db.run(move |c| zun::insert_registry(c, &r)).await?;
    tracing::info!(registry.id = %row.id, project.id = %row.project_id, "registry created");
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("{}/v1/registries/{}", state.public_url, row.id),
        ))
        .json(json!({"registry": view(&state.public_url, &row)})))
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    version::require_route(&req, "registries", SINCE, None)?;
    enforce_own(&state, &ctx, "registry:get_all")?;
    let p = Params::parse_only(
        &req,
        b"",
        &[
            "limit",
            "marker",
            "sort_key",
            "sort_dir",
            "all_projects",
            "name",
            "domain",
            "username",
            "project_id",
            "user_id",
        ],
    )?;
    let all = p.bool("all_projects", false)?;
    if all {
        enforce_own(&state, &ctx, "registry:get_all_all_projects")?;
    }
    let limit = p.page_limit()?;
    let project = if all {
        p.str("project_id")
    } else {
        Some(ctx.project_id.clone())
    };
    if !all && p.str("project_id").is_some_and(|q| q != ctx.project_id) {
        // Another project's registries are not visible: an empty page.
        return Ok(HttpResponse::Ok().json(json!({"registries": [], "next": null})));
    }
    let filter = RegistryFilter {
        project,
        name: p.str("name"),
        domain: p.str("domain"),
        username: p.str("username"),
        user_id: p.str("user_id"),
        marker: p.str("marker"),
        limit,
    };
    let rows = state
        .db
        .run(move |c| zun::list_registries(c, &filter))
        .await?;
    let next = (rows.len() as i64 == limit).then(|| {
        format!(
            "{}/v1/registries?sort_key=id&sort_dir=asc&limit={limit}&marker={}",
            state.public_url,
            rows.last().map(|r| r.id.as_str()).unwrap_or_default()
        )
    });
    let items: Vec<Value> = rows.iter().map(|r| view(&state.public_url, r)).collect();
    Ok(HttpResponse::Ok().json(json!({"registries": items, "next": next})))
}

/// A password as stored: sealed for registry `id`.
fn seal(state: &AppState, id: &str, password: Option<String>) -> Result<Option<String>, ApiError> {
    password
        .map(|p| {
            state.registry_key.seal(id, &p).map_err(|e| {
                tracing::error!(registry.id = %id, error = %e, "sealing a registry password failed");
                ApiError::Internal(anyhow::anyhow!("the registry password could not be stored"))
            })
        })
        .transpose()
}

/// The caller's project's registry with this uuid or name.
async fn find(state: &AppState, ctx: &RequestContext, key: &str) -> Result<RegistryRow, ApiError> {
    let project = ctx.project_id.clone();
    let k = key.to_owned();
    let rows = state
        .db
        .run(move |c| zun::find_registries(c, &project, &k))
        .await?;
    pick(rows, key)
}

/// The image a container made with registry `r` pulls: an image without a registry
/// host is taken from `r` (as Zun does); one naming another registry is refused, so
/// `r`'s credentials are never sent anywhere but to `r`.
pub(crate) fn image_in(image: &str, r: &RegistryRow) -> Result<String, ApiError> {
    let domain = r.domain.trim_end_matches('/');
    let host = image
        .split_once('/')
        .map(|(first, _)| first)
        .filter(|first| first.contains('.') || first.contains(':') || *first == "localhost");
    match host {
        None => Ok(format!("{domain}/{image}")),
        Some(h) if h.eq_ignore_ascii_case(domain) => Ok(image.to_owned()),
        Some(h) => Err(ApiError::BadRequest(format!(
            "Image {image} is on registry {h}, but registry {} is {domain}: name an image of \
             {domain} (or one without a registry host), or choose the registry of {h}",
            if r.name.is_empty() { &r.id } else { &r.name }
        ))),
    }
}

/// Of the project's registries matching `key` (uuid or name), the one it names: the
/// uuid first, then a unique name. None is Zun's 404, several of that name its 409.
pub(crate) fn pick(mut rows: Vec<RegistryRow>, key: &str) -> Result<RegistryRow, ApiError> {
    if let Some(i) = rows.iter().position(|r| r.id == key) {
        return Ok(rows.swap_remove(i));
    }
    match rows.len() {
        0 => Err(ApiError::NotFound(format!(
            "Registry {key} could not be found; list your registries with GET /v1/registries."
        ))),
        1 => Ok(rows.remove(0)),
        _ => Err(ApiError::Conflict(
            "Multiple registries exist with same name. Please use the registry uuid instead."
                .into(),
        )),
    }
}

async fn show(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    version::require_route(&req, "registries", SINCE, None)?;
    enforce_own(&state, &ctx, "registry:get_one")?;
    Params::parse(&req, b"")?.only(&[])?;
    let row = find(&state, &ctx, &path).await?;
    Ok(HttpResponse::Ok().json(json!({"registry": view(&state.public_url, &row)})))
}

async fn update(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    version::require_route(&req, "registries", SINCE, None)?;
    enforce_own(&state, &ctx, "registry:update")?;
    let f = parse_body(&body)?;
    let row = find(&state, &ctx, &path).await?;
    let password = seal(&state, &row.id, f.password)?;
    let change = RegistryChange {
        name: f.name,
        domain: f.domain,
        username: f.username.map(Some),
        password: password.map(Some),
        updated_at: None,
    };
    let id = row.id.clone();
    let updated = state
        .db
        .run(move |c| zun::update_registry(c, &id, change))
        .await?;
    Ok(HttpResponse::Ok().json(json!({"registry": view(&state.public_url, &updated)})))
}

async fn delete(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    version::require_route(&req, "registries", SINCE, None)?;
    enforce_own(&state, &ctx, "registry:delete")?;
    Params::parse(&req, b"")?.only(&["all_projects"])?;
    let row = find(&state, &ctx, &path).await?;
    let id = row.id.clone();
    state.db.run(move |c| zun::delete_registry(c, &id)).await?;
    tracing::info!(registry.id = %row.id, "registry deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, name: &str, domain: &str) -> RegistryRow {
        let t = now();
        RegistryRow {
            id: id.into(),
            project_id: "p".into(),
            user_id: "u".into(),
            name: name.into(),
            domain: domain.into(),
            username: Some("me".into()),
            password: None,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn an_image_is_taken_from_the_registry_and_never_from_another() {
        let r = reg("r1", "mine", "127.0.0.1:5000");
        assert_eq!(
            image_in("team/app:1", &r).unwrap(),
            "127.0.0.1:5000/team/app:1"
        );
        assert_eq!(image_in("busybox", &r).unwrap(), "127.0.0.1:5000/busybox");
        assert_eq!(
            image_in("127.0.0.1:5000/team/app:1", &r).unwrap(),
            "127.0.0.1:5000/team/app:1"
        );
        let other = image_in("quay.io/team/app", &r).unwrap_err();
        assert!(
            matches!(&other, ApiError::BadRequest(m) if m.contains("quay.io")),
            "{other:?}"
        );
        assert!(image_in("localhost/app", &r).is_err());
    }

    #[test]
    fn a_registry_is_picked_by_uuid_then_by_a_unique_name() {
        let a = reg("r1", "same", "a:1");
        let b = reg("r2", "same", "b:1");
        assert_eq!(pick(vec![a.clone(), b.clone()], "r2").unwrap().id, "r2");
        assert!(matches!(
            pick(vec![a.clone(), b], "same"),
            Err(ApiError::Conflict(_))
        ));
        assert_eq!(pick(vec![a], "same").unwrap().id, "r1");
        assert!(matches!(pick(vec![], "nope"), Err(ApiError::NotFound(_))));
    }
}
