//! `/v1/images`: Zun's image API over the images on the caller's project's instances.
//!
//! Zun keeps image rows per compute host; Berth asks the instances' agents. An image
//! row is one `repo:tag` on one instance (its `host`); its uuid is derived from the
//! instance and the name, so it is stable while the image is there. List and show
//! read the connected instances of the caller's project; pull (`POST`, 202) pulls onto
//! one of them (`host`: its name or uuid; by default the oldest connected one) and
//! finishes in the background, as in Zun; delete removes the tag from that instance.
//! Search (Docker Hub or Glance) is not available: 501.

use actix_web::{web, HttpRequest, HttpResponse};
use berth_proto::{Command, ImageInfo, Outcome, StreamOpen};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::enforce_own;
use super::error::ApiError;
use super::params::{require_json, Params};
use crate::agents::StreamEvent;
use crate::containers::agent_error;
use crate::db::instances;
use crate::db::models::InstanceRow;
use crate::identity::RequestContext;
use crate::state::AppState;

/// Registers the routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/images", web::get().to(list))
        .route("/images", web::post().to(pull))
        .route("/images/{id}", web::get().to(show))
        .route("/images/{id}", web::delete().to(delete))
        .route("/images/{id}/search", web::get().to(search));
}

/// One `repo:tag` on one instance.
struct ImageRow {
    uuid: String,
    image_id: Option<String>,
    repo: String,
    tag: String,
    size: Option<i64>,
    instance: InstanceRow,
}

/// The stable uuid of `reference` on `instance`.
fn image_uuid(instance: &str, reference: &str) -> String {
    let digest = Sha256::digest(format!("{instance}\n{reference}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// `name[:tag]` → (name, tag), `latest` when there is no tag.
fn split_reference(reference: &str) -> (String, String) {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => {
            let repo = &reference[..reference.len() - tag.len() - 1];
            (repo.to_owned(), tag.to_owned())
        }
        _ => (reference.to_owned(), "latest".to_owned()),
    }
}

fn view(public_url: &str, ctx: &RequestContext, r: &ImageRow) -> Value {
    json!({
        "uuid": r.uuid,
        "links": [
            {"href": format!("{public_url}/v1/images/{}", r.uuid), "rel": "self"},
            {"href": format!("{public_url}/images/{}", r.uuid), "rel": "bookmark"},
        ],
        "image_id": r.image_id,
        "repo": r.repo,
        "tag": r.tag,
        "size": r.size,
        "project_id": ctx.project_id,
        "image_pull_policy": null,
        "host": r.instance.name,
    })
}

/// The caller's project's instances whose agent is connected, oldest first.
async fn connected(state: &AppState, ctx: &RequestContext) -> Result<Vec<InstanceRow>, ApiError> {
    let project = ctx.project_id.clone();
    let rows = state
        .db
        .run(move |c| instances::active_of_project(c, &project))
        .await?;
    Ok(rows.into_iter().filter(|r| r.agent_connected).collect())
}

fn instance_uuid(row: &InstanceRow) -> Result<Uuid, ApiError> {
    Uuid::try_parse(&row.id).map_err(|_| {
        ApiError::Internal(anyhow::anyhow!(
            "instance {} has a malformed id in the database",
            row.id
        ))
    })
}

fn rows_of(instance: &InstanceRow, images: Vec<ImageInfo>) -> Vec<ImageRow> {
    let mut out = Vec::new();
    for image in images {
        for reference in &image.repo_tags {
            if reference == "<none>:<none>" {
                continue;
            }
            let (repo, tag) = split_reference(reference);
            out.push(ImageRow {
                uuid: image_uuid(&instance.id, reference),
                image_id: Some(image.id.clone()),
                repo,
                tag,
                size: Some(image.size),
                instance: instance.clone(),
            });
        }
    }
    out
}

/// Every image row of the caller's project. An instance whose agent fails to answer is
/// skipped (logged); if none answers, the failure is the answer.
async fn all_rows(state: &AppState, ctx: &RequestContext) -> Result<Vec<ImageRow>, ApiError> {
    let mut out = Vec::new();
    let mut failure = None;
    let instances = connected(state, ctx).await?;
    let answered_any = !instances.is_empty();
    let mut answered = 0;
    for inst in instances {
        match state
            .agents
            .call(instance_uuid(&inst)?, None, Command::Images)
            .await
        {
            Ok(Outcome::Images(images)) => {
                answered += 1;
                out.extend(rows_of(&inst, images));
            }
            Ok(other) => {
                tracing::warn!(instance.id = %inst.id, outcome = ?other, "unexpected reply to images");
            }
            Err(e) => {
                tracing::warn!(instance.id = %inst.id, error = %e, "listing images failed");
                failure = Some(e);
            }
        }
    }
    if answered_any && answered == 0 {
        if let Some(e) = failure {
            return Err(agent_error(e));
        }
    }
    out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    Ok(out)
}

async fn list(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "image:get_all")?;
    let p = Params::parse_only(&req, b"", &["limit", "marker", "sort_key", "sort_dir"])?;
    let limit = p.page_limit()?;
    let marker = p.str("marker");
    let rows = all_rows(&state, &ctx).await?;
    let page: Vec<&ImageRow> = rows
        .iter()
        .filter(|r| marker.as_deref().is_none_or(|m| r.uuid.as_str() > m))
        .take(limit as usize)
        .collect();
    let next = (page.len() as i64 == limit).then(|| {
        format!(
            "{}/v1/images?sort_key=id&sort_dir=asc&limit={limit}&marker={}",
            state.public_url,
            page.last().map(|r| r.uuid.as_str()).unwrap_or_default()
        )
    });
    let images: Vec<Value> = page
        .iter()
        .map(|r| view(&state.public_url, &ctx, r))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"images": images, "next": next})))
}

async fn find(state: &AppState, ctx: &RequestContext, key: &str) -> Result<ImageRow, ApiError> {
    all_rows(state, ctx)
        .await?
        .into_iter()
        .find(|r| r.uuid == key)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "Image {key} could not be found; list the images with GET /v1/images (openstack appcontainer image list)."
            ))
        })
}

async fn show(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "image:get_one")?;
    Params::parse(&req, b"")?.only(&[])?;
    let row = find(&state, &ctx, &path).await?;
    Ok(HttpResponse::Ok().json(view(&state.public_url, &ctx, &row)))
}

async fn pull(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "image:pull")?;
    require_json(&req)?;
    let p = Params::parse_only(
        &req,
        &body,
        &[
            "repo",
            "host",
            "tag",
            "image_id",
            "size",
            "image_pull_policy",
        ],
    )?;
    let Some(repo) = p.str("repo").filter(|r| !r.trim().is_empty()) else {
        return Err(ApiError::BadRequest(
            "repo is required: the image to pull, name[:tag], e.g. busybox:latest".into(),
        ));
    };
    let mut reference = repo.trim().to_owned();
    if let Some(tag) = p.str("tag").filter(|t| !t.is_empty()) {
        reference = format!("{}:{tag}", split_reference(&reference).0);
    }
    crate::domain::ImageRef::parse(&reference)?;
    let (name, tag) = split_reference(&reference);
    let reference = format!("{name}:{tag}");
    let instances = connected(&state, &ctx).await?;
    let target = match p.str("host") {
        Some(host) => instances
            .into_iter()
            .find(|i| i.name == host || i.id == host)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Host {host} is not one of your project's instances with a connected agent: name one from `openstack appcontainer host list`, or leave host out"
                ))
            })?,
        None => instances.into_iter().next().ok_or_else(|| {
            ApiError::Conflict(
                "Your project has no instance with a connected agent to pull onto yet: create a container first (which makes one), then pull".into(),
            )
        })?,
    };
    let id = instance_uuid(&target)?;
    let stream = state
        .agents
        .open_stream(
            id,
            None,
            StreamOpen::Pull {
                image: reference.clone(),
                auth: None,
            },
        )
        .await
        .map_err(agent_error)?;
    let mut output = stream.output;
    let (instance_id, image) = (target.id.clone(), reference.clone());
    // The pull finishes in the background (Zun answers 202 and pulls on the host).
    actix_web::rt::spawn(async move {
        let _input = stream.input;
        while let Some(event) = output.next().await {
            if let StreamEvent::End(end) = event {
                tracing::info!(instance.id = %instance_id, image = %image, end = ?end, "image pull ended");
                break;
            }
        }
    });
    tracing::info!(instance.id = %target.id, image = %reference, "image pull started");
    let row = ImageRow {
        uuid: image_uuid(&target.id, &reference),
        image_id: None,
        repo: name,
        tag,
        size: None,
        instance: target,
    };
    Ok(HttpResponse::Accepted()
        .insert_header((
            "Location",
            format!("{}/v1/images/{}", state.public_url, row.uuid),
        ))
        .json(view(&state.public_url, &ctx, &row)))
}

async fn delete(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "image:delete")?;
    Params::parse(&req, b"")?.only(&[])?;
    let row = find(&state, &ctx, &path).await?;
    let reference = format!("{}:{}", row.repo, row.tag);
    let outcome = state
        .agents
        .call(
            instance_uuid(&row.instance)?,
            None,
            Command::ImageRemove {
                reference: reference.clone(),
                force: false,
            },
        )
        .await
        .map_err(agent_error)?;
    tracing::info!(instance.id = %row.instance.id, image = %reference, outcome = ?outcome, "image removed");
    Ok(HttpResponse::NoContent().finish())
}

async fn search(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "image:search")?;
    let p = Params::parse_only(&req, b"", &["image_driver", "exact_match"])?;
    p.bool("exact_match", false)?;
    Err(ApiError::NotImplemented(format!(
        "Searching for image {} is not available: Berth does not query Docker Hub or Glance. Pull the image by name (POST /v1/images) or create a container with it.",
        path.as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(
            split_reference("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_reference("registry:5000/a/b:1.2"),
            ("registry:5000/a/b".into(), "1.2".into())
        );
        assert_eq!(
            split_reference("registry:5000/a"),
            ("registry:5000/a".into(), "latest".into())
        );
    }

    #[test]
    fn an_image_uuid_is_stable_and_per_instance() {
        assert_eq!(image_uuid("i1", "a:1"), image_uuid("i1", "a:1"));
        assert_ne!(image_uuid("i1", "a:1"), image_uuid("i2", "a:1"));
        assert!(Uuid::try_parse(&image_uuid("i1", "a:1")).is_ok());
    }
}
