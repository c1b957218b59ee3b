//! One error type for the Zun API, rendered in Zun's format:
//! `{"errors": [{"request_id", "code", "status", "title", "detail", "links"}]}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::db::DbError;
use crate::domain::ParseError;

/// Everything a Zun API request can fail with. Each message says what was wrong and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input → 400.
    #[error("{0}")]
    BadRequest(String),
    /// No valid token → 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Policy refused → 403.
    #[error("{0}")]
    Forbidden(String),
    /// A quota would be exceeded → 403, as Zun answers.
    #[error("{0}")]
    OverQuota(String),
    /// Not found, or not visible to the caller → 404.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with another resource → 409.
    #[error("{0}")]
    Conflict(String),
    /// Not allowed in the container's current state → 409.
    #[error("{0}")]
    InvalidState(String),
    /// Unsupported microversion → 406.
    #[error("{0}")]
    NotAcceptable(String),
    /// Wrong content type → 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A backend (database, agent) is unreachable; retrying may work → 503.
    #[error("{0}")]
    Unavailable(String),
    /// A Zun feature Berth does not have (e.g. Neutron networks) → 501.
    #[error("{0}")]
    NotImplemented(String),
    /// A bug or an unexpected failure → 500, with an opaque body.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// Zun's `code` suffix (the kebab-case exception name).
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid-value",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "policy-not-authorized",
            ApiError::OverQuota(_) => "over-quota",
            ApiError::NotFound(_) => "container-not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::InvalidState(_) => "invalid-state-exception",
            ApiError::NotAcceptable(_) => "microversion-unsupported",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::Unavailable(_) => "service-unavailable",
            ApiError::NotImplemented(_) => "not-implemented",
            ApiError::Internal(_) => "",
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(msg) => ApiError::Unavailable(format!(
                "The database is unavailable ({msg}); retry shortly."
            )),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::OverQuota(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::InvalidState(_) => StatusCode::CONFLICT,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (title, detail) = match self {
            ApiError::Internal(cause) => {
                let correlation = uuid::Uuid::new_v4();
                tracing::error!(error.correlation_id = %correlation, error = ?cause, "request failed");
                (
                    "Internal Server Error".to_owned(),
                    format!(
                        "Your request could not be handled because of a problem in the server. Error Correlation id is: {correlation}"
                    ),
                )
            }
            other => (other.to_string(), other.to_string()),
        };
        let mut resp = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            resp.insert_header(("WWW-Authenticate", "Keystone uri=\"/identity/v3\""));
        }
        resp.json(json!({
            "errors": [{
                "request_id": "",
                "code": format!("container.{}", self.code()),
                "status": status.as_u16(),
                "title": title,
                "detail": detail,
                "links": [],
            }]
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_its_status_and_zun_code() {
        let cases = [
            (
                ApiError::BadRequest("x".into()),
                400,
                "container.invalid-value",
            ),
            (
                ApiError::Unauthorized("x".into()),
                401,
                "container.unauthorized",
            ),
            (
                ApiError::Forbidden("x".into()),
                403,
                "container.policy-not-authorized",
            ),
            (
                ApiError::NotFound("x".into()),
                404,
                "container.container-not-found",
            ),
            (
                ApiError::InvalidState("x".into()),
                409,
                "container.invalid-state-exception",
            ),
            (ApiError::Conflict("x".into()), 409, "container.conflict"),
            (
                ApiError::NotAcceptable("x".into()),
                406,
                "container.microversion-unsupported",
            ),
            (
                ApiError::Unavailable("x".into()),
                503,
                "container.service-unavailable",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status_code().as_u16(), status);
            assert_eq!(format!("container.{}", e.code()), code);
        }
    }

    #[test]
    fn an_internal_error_does_not_leak_its_cause() {
        let e = ApiError::Internal(anyhow::anyhow!("secret detail"));
        let body = actix_web::body::to_bytes(e.error_response().into_body());
        let bytes = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(!text.contains("secret detail"));
        assert!(text.contains("Correlation id"));
    }
}
