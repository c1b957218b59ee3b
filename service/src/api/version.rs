//! Zun microversions: `OpenStack-API-Version: container X.Y`.

use actix_web::http::header::{HeaderName, HeaderValue};

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
}
