//! Docker's error format: `{"message": "..."}` with `Content-Type: application/json`
//! exactly (the CLI compares the string), and the status codes moby uses.

use hyper::StatusCode;

use super::{json, Response};
use crate::api::error::ApiError;

/// A failed Docker API call.
#[derive(Debug)]
pub struct DockerError {
    /// HTTP status.
    pub status: StatusCode,
    /// What was wrong and what to do.
    pub message: String,
}

impl DockerError {
    /// An error with this status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> DockerError {
        DockerError {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> DockerError {
        DockerError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 `No such container: X`.
    pub fn no_such_container(ident: &str) -> DockerError {
        DockerError::new(StatusCode::NOT_FOUND, format!("No such container: {ident}"))
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> DockerError {
        DockerError::new(StatusCode::CONFLICT, message)
    }

    /// 501 for a Docker API feature Berth does not offer; says so, so `docker` prints
    /// a clear line instead of hanging or guessing.
    pub fn not_implemented(what: &str) -> DockerError {
        DockerError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{what} is not supported by Berth's Docker endpoint"),
        )
    }

    /// The response.
    pub fn into_response(self) -> Response {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

impl std::fmt::Display for DockerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The service layer's errors in Docker's terms. Not-found messages of the service
/// layer are Zun's; callers that know the identifier the user typed should map
/// not-found themselves (`No such container: X`).
impl From<ApiError> for DockerError {
    fn from(e: ApiError) -> DockerError {
        let status = match &e {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::OverQuota(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::InvalidState(_) => StatusCode::CONFLICT,
            ApiError::NotAcceptable(_) | ApiError::UnsupportedMediaType(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(err) => {
                tracing::error!(error = %err, "internal error in the Docker endpoint");
                return DockerError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error in Berth; the service log has the details",
                );
            }
        };
        DockerError::new(status, e.to_string())
    }
}

impl From<crate::db::DbError> for DockerError {
    fn from(e: crate::db::DbError) -> DockerError {
        ApiError::from(e).into()
    }
}
