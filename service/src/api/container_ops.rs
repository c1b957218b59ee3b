//! Zun's container operations on processes and files: execute (and its resize),
//! attach, top, resize, rename, rebuild, commit, get/put archive. Parameters come from
//! the query string and the JSON body alike; each route checks its Zun policy rule
//! first, then the container's status (409 otherwise); the service layer
//! (`crate::containers`) does the work through the container's agent.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::{flex_i64, Params};
use super::version::{self, ApiVersion};
use super::zun_ws;
use crate::containers::{self as service, find, require_status, Scope};
use crate::domain::{ContainerName, ContainerStatus, ImageRef};
use crate::identity::RequestContext;
use crate::state::AppState;

/// Registers the routes (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/containers/{id}/execute", web::post().to(execute))
        .route(
            "/containers/{id}/execute_resize",
            web::post().to(execute_resize),
        )
        .route("/containers/{id}/attach", web::get().to(attach))
        .route("/containers/{id}/top", web::get().to(top))
        .route("/containers/{id}/resize", web::post().to(resize))
        .route("/containers/{id}/rename", web::post().to(rename))
        .route("/containers/{id}/rebuild", web::post().to(rebuild))
        .route("/containers/{id}/commit", web::post().to(commit))
        .route("/containers/{id}/get_archive", web::get().to(get_archive))
        .route("/containers/{id}/put_archive", web::post().to(put_archive))
        .configure(zun_ws::configure);
}

/// Base64 of archives from microversion 1.25 on; raw (Latin-1) text before.
const BASE64_ARCHIVES: ApiVersion = ApiVersion(1, 25);

/// `h` and `w` of a TTY size, each 1 to 65535 (Zun's schema wants positive integers).
fn tty_size(p: &Params) -> Result<(u16, u16), ApiError> {
    let dim = |name: &str| -> Result<u16, ApiError> {
        let v = p.get(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "'{name}' is required: give the terminal size as h (rows) and w (columns)"
            ))
        })?;
        let n = flex_i64(name, v)?;
        u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::BadRequest(format!("Invalid {name} {n}: a terminal size is 1 to 65535"))
        })
    };
    Ok((dim("h")?, dim("w")?))
}

/// `POST …/execute?command=&run=&interactive=`: with run (the default) the command runs
/// to the end and its output and exit code are returned; with interactive it is
/// started when the returned `proxy_url` WebSocket connects.
async fn execute(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:execute")?;
    let p = Params::parse_only(&req, &body, &["command", "run", "interactive"])?;
    let run = p.bool("run", true)?;
    let interactive = p.bool("interactive", false)?;
    let command = p.str("command").unwrap_or_default();
    let cmd = shell_words::split(&command)
        .map_err(|e| ApiError::BadRequest(format!("Invalid command '{command}': {e}")))?;
    if cmd.is_empty() {
        return Err(ApiError::BadRequest(
            "'command' is required, e.g. command=\"ls -l /\"".into(),
        ));
    }
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    require_status(&row, &[ContainerStatus::Running], "execute")?;
    if interactive {
        let (exec_id, url) = zun_ws::create_exec(&state.public_url, &row, cmd)?;
        tracing::info!(container.id = %row.id, "interactive exec created");
        return Ok(HttpResponse::Ok().json(json!({
            "output": null, "exit_code": null, "exec_id": exec_id, "proxy_url": url,
        })));
    }
    if !run {
        return Err(ApiError::BadRequest(
            "run=false needs interactive=true: Berth runs a non-interactive command at once".into(),
        ));
    }
    let (output, exit_code) = service::exec_run(&state, &row, cmd).await?;
    Ok(HttpResponse::Ok().json(json!({
        "output": output, "exit_code": exit_code, "exec_id": null, "proxy_url": null,
    })))
}

/// `POST …/execute_resize?exec_id=&h=&w=`.
async fn execute_resize(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:execute_resize")?;
    let p = Params::parse_only(&req, &body, &["exec_id", "h", "w"])?;
    let exec_id = p
        .str("exec_id")
        .ok_or_else(|| ApiError::BadRequest("'exec_id' is required".into()))?;
    let (h, w) = tty_size(&p)?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    require_status(&row, &[ContainerStatus::Running], "execute_resize")?;
    zun_ws::resize_exec(&row, &exec_id, h, w).await?;
    Ok(HttpResponse::Ok().json(Value::Null))
}

/// `GET …/attach`: the WebSocket URL of the container's main process, as a JSON
/// string. Only an interactive container can be attached (400 otherwise, as Zun).
async fn attach(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:attach")?;
    Params::parse(&req, b"")?.only(&[])?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    require_status(&row, &[ContainerStatus::Running], "attach")?;
    if !row.interactive {
        return Err(ApiError::BadRequest(
            "Container doesn't support to be attached, please check the interactive set properly (create it with --interactive)."
                .into(),
        ));
    }
    let url = zun_ws::attach_url(&state.public_url, &row)?;
    Ok(HttpResponse::Ok().json(url))
}

/// `GET …/top?ps_args=`.
async fn top(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:top")?;
    let p = Params::parse_only(&req, b"", &["ps_args"])?;
    let ps_args = p.str("ps_args").filter(|a| !a.trim().is_empty());
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    let (titles, processes) = service::top(&state, &row, ps_args).await?;
    Ok(HttpResponse::Ok().json(json!({"Titles": titles, "Processes": processes})))
}

/// `POST …/resize?h=&w=`: the TTY size of the main process.
async fn resize(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:resize")?;
    let p = Params::parse_only(&req, &body, &["h", "w"])?;
    let (h, w) = tty_size(&p)?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    service::resize_tty(&state, &row, h, w).await?;
    Ok(HttpResponse::Ok().json(Value::Null))
}

/// `POST …/rename?name=` (microversions 1.1 to 1.13; later ones rename with PATCH).
async fn rename(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    version::require_route(
        &req,
        "POST /containers/{id}/rename",
        ApiVersion(1, 1),
        Some(ApiVersion(1, 13)),
    )?;
    enforce_own(&state, &ctx, "container:rename")?;
    let p = Params::parse_only(&req, &body, &["name"])?;
    let name = p
        .str("name")
        .ok_or_else(|| ApiError::BadRequest("'name' is required".into()))?;
    let name = ContainerName::parse(&name)?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    let updated = service::rename(&state, &row, name).await?;
    Ok(HttpResponse::Ok().json(render_one(&state, &ctx, updated).await?))
}

/// The container's full view (ports, addresses).
async fn render_one(
    state: &AppState,
    ctx: &RequestContext,
    row: crate::db::models::ContainerRow,
) -> Result<Value, ApiError> {
    let id = row.id.clone();
    let instance_id = row.instance_id.clone();
    let (ports, inst) = state
        .db
        .run(move |c| {
            let ports = crate::db::containers::ports_of(c, std::slice::from_ref(&id))?;
            let inst = match instance_id {
                Some(i) => crate::db::instances::get(c, &i)?,
                None => None,
            };
            Ok((ports, inst))
        })
        .await?;
    Ok(super::views::container(
        &state.public_url,
        &row,
        &ports,
        inst.as_ref(),
        ctx.is_admin(),
    ))
}

/// `POST …/rebuild?image=&image_driver=`: 202; the container is made again (same
/// uuid) and started again if it was running.
async fn rebuild(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:rebuild")?;
    let p = Params::parse_only(&req, &body, &["image", "image_driver"])?;
    if let Some(d) = p.str("image_driver") {
        if d != "docker" {
            return Err(ApiError::BadRequest(format!(
                "Invalid image_driver '{d}': Berth has only the docker image driver"
            )));
        }
    }
    let image = p
        .str("image")
        .filter(|i| !i.is_empty())
        .map(|i| ImageRef::parse(&i))
        .transpose()?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    service::rebuild(&state, &ctx, &row, image).await?;
    Ok(HttpResponse::Accepted().json(Value::Null))
}

/// `POST …/commit?repository=&tag=`: 202 `{"uuid": <the commit action's request id>}`;
/// the image is made on the container's instance before the answer (Zun answers with
/// a Glance image uuid; Berth has no Glance, the image lives on the instance).
async fn commit(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:commit")?;
    let p = Params::parse_only(&req, &body, &["repository", "tag"])?;
    let repository = p
        .str("repository")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest("'repository' is required, e.g. repository=myimage".into())
        })?;
    let tag = p.str("tag").filter(|t| !t.is_empty());
    // The same rules as an image reference a container is created from.
    let reference = match &tag {
        Some(t) => format!("{repository}:{t}"),
        None => repository.clone(),
    };
    ImageRef::parse(&reference)?;
    if repository.contains('@')
        || (tag.is_some()
            && repository
                .rsplit('/')
                .next()
                .is_some_and(|l| l.contains(':')))
    {
        return Err(ApiError::BadRequest(format!(
            "Invalid repository '{repository}': give the tag separately (tag=...)"
        )));
    }
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    let (action, image_id) = service::commit(&state, &ctx, &row, repository, tag).await?;
    Ok(HttpResponse::Accepted().json(json!({"uuid": action, "image_id": image_id})))
}

fn archive_path(p: &Params) -> Result<String, ApiError> {
    let path = p
        .str("path")
        .filter(|x| !x.is_empty())
        .ok_or_else(|| ApiError::BadRequest("'path' is required, e.g. path=/etc/hosts".into()))?;
    if !path.starts_with('/') {
        return Err(ApiError::BadRequest(format!(
            "Invalid path '{path}': give an absolute path in the container"
        )));
    }
    Ok(path)
}

/// `GET …/get_archive?path=`: `{"data": tar (base64 from 1.25), "stat": {...}}`.
async fn get_archive(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:get_archive")?;
    let p = Params::parse_only(&req, b"", &["path"])?;
    let file = archive_path(&p)?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    let (data, stat) = service::get_archive(&state, &row, &file).await?;
    let data = if version::of(&req) >= BASE64_ARCHIVES {
        base64::engine::general_purpose::STANDARD.encode(&data)
    } else {
        // Before 1.25 the tar went out as text, one character per byte.
        data.iter().map(|b| char::from(*b)).collect()
    };
    Ok(HttpResponse::Ok().json(json!({"data": data, "stat": stat})))
}

/// `POST …/put_archive?path=` with `{"data": tar (base64 from 1.25)}`.
async fn put_archive(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    body: web::Bytes,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:put_archive")?;
    let p = Params::parse_only(&req, &body, &["path", "data"])?;
    let dir = archive_path(&p)?;
    let text = p
        .str("data")
        .ok_or_else(|| ApiError::BadRequest("'data' is required: a tar archive".into()))?;
    let data = if version::of(&req) >= BASE64_ARCHIVES {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| ApiError::BadRequest(format!("Invalid data: not base64 ({e})")))?
    } else {
        text.chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| {
                    ApiError::BadRequest("Invalid data: a character above U+00FF".into())
                })
            })
            .collect::<Result<Vec<u8>, _>>()?
    };
    if data.len() > 8 << 20 {
        return Err(ApiError::BadRequest(
            "The archive is larger than 8 MiB; copy less at a time".into(),
        ));
    }
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    service::put_archive(&state, &row, &dir, data).await?;
    Ok(HttpResponse::Ok().json(Value::Null))
}
