//! Identity: the embedded Keystone-compatible token API and the request context every
//! API call is made in. With `[identity] keystone_url`, tokens come from an external
//! Keystone instead and are validated by [`keystone`].

pub mod admin;
pub mod keys;
pub mod keystone;
pub mod password;
pub mod routes;
pub mod tokens;

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use crate::api::error::ApiError;
use crate::db;
use crate::state::AppState;

/// Who is calling, in which project, with which roles.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub user_id: String,
    pub user_name: String,
    pub project_id: String,
    pub project_name: String,
    pub roles: Vec<String>,
}

impl RequestContext {
    /// Whether the caller holds the admin role.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }
}

/// Resolves a token to its context: signature and expiry first, then the user, the
/// project and the roles as they are now, so a deleted user or project, or a revoked
/// role, stops the token working at once.
pub async fn authenticate(state: &AppState, token: &str) -> Result<RequestContext, ApiError> {
    // With an external Keystone, its answer (cached) is the whole truth: no local
    // users or role assignments exist.
    if let Some(keystone) = &state.keystone {
        return keystone.authenticate(&state.db, token).await;
    }
    let Some(claims) = state.tokens.verify(token) else {
        return Err(ApiError::Unauthorized(
            "The token is invalid or has expired. Get a new one with `osc token-issue` (or `openstack token issue`).".into(),
        ));
    };
    let ctx = state
        .db
        .run(move |conn| current_context(conn, &claims.sub, &claims.openstack_project_id))
        .await?;
    ctx.ok_or_else(|| {
        ApiError::Unauthorized(
            "The token's user or project no longer exists, is disabled, or has no role in the project. Authenticate again.".into(),
        )
    })
}

/// The context of `user` in `project` as the database has it now: None when either is
/// gone or disabled, or the user holds no role in the project. Every credential of the
/// embedded identity (tokens, Docker client certificates) is checked through this.
pub fn current_context(
    conn: &mut db::DbConnection,
    user: &str,
    project: &str,
) -> Result<Option<RequestContext>, db::DbError> {
    let user = db::identity::user(conn, user)?;
    let project = db::identity::project(conn, project)?;
    let (Some(user), Some(project)) = (user, project) else {
        return Ok(None);
    };
    if !user.enabled || !project.enabled {
        return Ok(None);
    }
    let roles = db::identity::roles(conn, &user.id, &project.id)?;
    if roles.is_empty() {
        return Ok(None);
    }
    Ok(Some(RequestContext {
        user_id: user.id,
        user_name: user.name,
        project_id: project.id,
        project_name: project.name,
        roles,
    }))
}

impl FromRequest for RequestContext {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            if let Some(ctx) = req.extensions().get::<RequestContext>() {
                return Ok(ctx.clone());
            }
            let state = req
                .app_data::<web::Data<AppState>>()
                .expect("AppState is registered")
                .clone();
            let token = req
                .headers()
                .get("X-Auth-Token")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized(
                        "The request you have made requires authentication: send a token in the X-Auth-Token header (get one with `osc token-issue`).".into(),
                    )
                })?
                .to_owned();
            let ctx = authenticate(&state, &token).await?;
            req.extensions_mut().insert(ctx.clone());
            Ok(ctx)
        })
    }
}
