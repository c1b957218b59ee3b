//! Zun microversions: `OpenStack-API-Version: container X.Y`.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};

use super::error::ApiError;

/// The oldest microversion served; also what a request without the header gets.
pub const MIN: ApiVersion = ApiVersion(1, 1);
/// The newest microversion served.
pub const MAX: ApiVersion = ApiVersion(1, 40);

/// A negotiated microversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl ApiVersion {
    /// Negotiates from the request header's value (`None` when absent).
    pub fn negotiate(header: Option<&str>) -> Result<ApiVersion, ApiError> {
        let Some(raw) = header else {
            return Ok(MIN);
        };
        let invalid = || {
            ApiError::NotAcceptable(format!(
                "Invalid OpenStack-API-Version header '{raw}': use 'container X.Y' with a version between {MIN} and {MAX}, or 'container latest'"
            ))
        };
        let parts: Vec<&str> = raw.split_whitespace().collect();
        let [service, version] = parts.as_slice() else {
            return Err(invalid());
        };
        if !service.eq_ignore_ascii_case("container") {
            return Err(invalid());
        }
        if version.eq_ignore_ascii_case("latest") {
            return Ok(MAX);
        }
        let (major, minor) = version.split_once('.').ok_or_else(invalid)?;
        let v = ApiVersion(
            major.parse().map_err(|_| invalid())?,
            minor.parse().map_err(|_| invalid())?,
        );
        if v < MIN || v > MAX {
            return Err(ApiError::NotAcceptable(format!(
                "Version {v} was requested but is not supported: this service supports container {MIN} to {MAX}"
            )));
        }
        Ok(v)
    }

    /// The four headers every `/v1` response carries.
    pub fn response_headers(self) -> [(HeaderName, HeaderValue); 4] {
        let hv = |s: String| HeaderValue::from_str(&s).expect("ASCII header value");
        [
            (
                HeaderName::from_static("openstack-api-minimum-version"),
                hv(format!("container {MIN}")),
            ),
            (
                HeaderName::from_static("openstack-api-maximum-version"),
                hv(format!("container {MAX}")),
            ),
            (
                HeaderName::from_static("openstack-api-version"),
                hv(format!("container {self}")),
            ),
            (
                HeaderName::from_static("vary"),
                hv("OpenStack-API-Version".into()),
            ),
        ]
    }
}

/// The microversion negotiated for `req` (the minimum when no negotiation ran).
pub fn of(req: &HttpRequest) -> ApiVersion {
    req.extensions().get::<ApiVersion>().copied().unwrap_or(MIN)
}

/// Refuses a route that does not exist at the request's version, as Zun does (406):
/// `since` is the first version with it, `until` the last (if it was removed).
pub fn require_route(
    req: &HttpRequest,
    what: &str,
    since: ApiVersion,
    until: Option<ApiVersion>,
) -> Result<ApiVersion, ApiError> {
    let v = of(req);
    if v < since {
        return Err(ApiError::NotAcceptable(format!(
            "Version {v} was requested but the requested API is not supported for this version: {what} needs API microversion {since} or later (send 'OpenStack-API-Version: container {since}')."
        )));
    }
    if let Some(last) = until {
        if v > last {
            return Err(ApiError::NotAcceptable(format!(
                "Version {v} was requested but the requested API is not supported for this version: {what} exists up to API microversion {last} only."
            )));
        }
    }
    Ok(v)
}

/// Refuses a parameter newer than the request's version (400, Zun's
/// `InvalidParamInVersion`).
pub fn require_param(v: ApiVersion, param: &str, since: ApiVersion) -> Result<(), ApiError> {
    if v < since {
        return Err(ApiError::BadRequest(format!(
            "Invalid param {param} because current request version is {v}. {param} is only supported from version {since}"
        )));
    }
    Ok(())
}

/// The container create fields that need a microversion newer than 1.1, as Zun checks
/// them (`auto_remove`, `runtime`, `hostname`, `privileged`, `exposed_ports` whenever
/// given; `mounts`, `healthcheck`, `registry` when not empty; `host` and `entrypoint`
/// exist only in the 1.39 and 1.40 schemas).
pub const CREATE_FIELDS: &[(&str, ApiVersion)] = &[
    ("auto_remove", ApiVersion(1, 3)),
    ("runtime", ApiVersion(1, 5)),
    ("hostname", ApiVersion(1, 9)),
    ("mounts", ApiVersion(1, 11)),
    ("privileged", ApiVersion(1, 21)),
    ("healthcheck", ApiVersion(1, 22)),
    ("exposed_ports", ApiVersion(1, 24)),
    ("registry", ApiVersion(1, 31)),
    ("host", ApiVersion(1, 39)),
    ("entrypoint", ApiVersion(1, 40)),
];

/// Checks a container create body's fields against the request's version.
pub fn check_create_fields(
    v: ApiVersion,
    body: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ApiError> {
    use serde_json::Value;
    for (field, since) in CREATE_FIELDS {
        let given = match body.get(*field) {
            None | Some(Value::Null) => false,
            // Zun skips these checks for empty values.
            Some(Value::Array(a)) if matches!(*field, "mounts") => !a.is_empty(),
            Some(Value::Object(o)) if matches!(*field, "healthcheck") => !o.is_empty(),
            Some(Value::String(s)) if matches!(*field, "registry" | "host") => !s.is_empty(),
            Some(_) => true,
        };
        if given {
            require_param(v, field, *since)?;
        }
    }
    if v >= ApiVersion(1, 20)
        && body.get("security_groups").is_some_and(|s| !s.is_null())
        && body.get("exposed_ports").is_some_and(|s| !s.is_null())
    {
        return Err(ApiError::BadRequest(
            "security_groups and exposed_ports cannot be given together: use one of them".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_header_means_the_minimum_and_latest_means_the_maximum() {
        assert_eq!(ApiVersion::negotiate(None).unwrap(), MIN);
        assert_eq!(
            ApiVersion::negotiate(Some("container latest")).unwrap(),
            MAX
        );
        assert_eq!(
            ApiVersion::negotiate(Some("container 1.12")).unwrap(),
            ApiVersion(1, 12)
        );
    }

    #[test]
    fn versions_outside_the_range_or_malformed_are_not_acceptable() {
        for bad in [
            "container 1.41",
            "container 2.1",
            "container 1.0",
            "compute 1.2",
            "container",
            "container x.y",
        ] {
            assert!(
                matches!(
                    ApiVersion::negotiate(Some(bad)),
                    Err(ApiError::NotAcceptable(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn create_fields_need_their_microversion() {
        let body = |v: serde_json::Value| v.as_object().unwrap().clone();
        let hostname = body(serde_json::json!({"image": "x", "hostname": "h"}));
        assert!(matches!(
            check_create_fields(ApiVersion(1, 8), &hostname),
            Err(ApiError::BadRequest(m)) if m.contains("hostname is only supported from version 1.9")
        ));
        assert!(check_create_fields(ApiVersion(1, 9), &hostname).is_ok());
        let empty_mounts = body(serde_json::json!({"image": "x", "mounts": []}));
        assert!(check_create_fields(MIN, &empty_mounts).is_ok());
        let entrypoint = body(serde_json::json!({"image": "x", "entrypoint": ["sh"]}));
        assert!(check_create_fields(ApiVersion(1, 39), &entrypoint).is_err());
        assert!(check_create_fields(MAX, &entrypoint).is_ok());
    }
}
