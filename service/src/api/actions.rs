//! `GET /v1/containers/{id}/container_actions/{request_id}`: one container action with
//! its events (Zun's action show). The event is the lifecycle's work on the action;
//! its `traceback` (Berth: the error message) is shown only to those allowed
//! `container:action:events` (admins by default), as in Zun.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use crate::containers::{find, Scope};
use crate::db::zun;
use crate::identity::RequestContext;
use crate::policy::Target;
use crate::state::AppState;

fn fmt(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The action `request_id` of the container, with its events.
pub async fn show(
    state: web::Data<AppState>,
    ctx: RequestContext,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:actions")?;
    let (ident, request_id) = path.into_inner();
    let row = find(&state, &ctx, &ident, Scope::Own).await?;
    let container = row.id.clone();
    let rid = request_id.clone();
    let found = state
        .db
        .run(move |c| zun::action_with_events(c, &container, &rid))
        .await?;
    let Some((a, events)) = found else {
        return Err(ApiError::NotFound(format!(
            "Action {request_id} could not be found for container {}; list its actions with GET /v1/containers/{}/container_actions.",
            row.id, row.id
        )));
    };
    let show_traceback = state
        .policy
        .enforce("container:action:events", &ctx, &Target::own(&ctx))
        .is_ok();
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({
                "event": e.event,
                "start_time": fmt(e.start_time),
                "finish_time": e.finish_time.map(fmt),
                "result": e.result,
                "traceback": if show_traceback { e.traceback } else { None },
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "action": a.action,
        "container_uuid": a.container_id,
        "request_id": a.id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": fmt(a.start_time),
        "finish_time": a.finish_time.map(fmt),
        "message": a.message,
        "events": events,
    })))
}
