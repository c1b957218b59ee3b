//! Authentication settings, the Keystone v3 password-token request, and the service
//! catalog lookup that finds the container endpoint.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ClientError;

/// How to authenticate: with a password against the identity service, or with a token
/// and a fixed container endpoint (no identity service involved).
#[derive(Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// Project-scoped password authentication (Keystone v3).
    Password(PasswordAuth),
    /// A token that is already issued plus the container endpoint to use it with.
    Token {
        /// The token, sent as `X-Auth-Token`.
        token: String,
        /// The container endpoint, e.g. `http://127.0.0.1:9517/v1`.
        endpoint: String,
    },
}

impl std::fmt::Debug for AuthConfig {
    // The token never appears in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthConfig::Password(password) => f.debug_tuple("Password").field(password).finish(),
            AuthConfig::Token { endpoint, .. } => f
                .debug_struct("Token")
                .field("token", &"<redacted>")
                .field("endpoint", endpoint)
                .finish(),
        }
    }
}

/// Settings of project-scoped password authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordAuth {
    /// Identity URL, e.g. `http://127.0.0.1:9517/identity/v3`. A URL without a version
    /// segment gets `/v3` appended.
    pub auth_url: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Project to scope the token to.
    pub project_name: String,
    /// Domain of the user (default `Default`).
    pub user_domain_name: String,
    /// Domain of the project (default `Default`).
    pub project_domain_name: String,
    /// Region of the endpoint to pick from the catalog; any region when `None`.
    pub region_name: Option<String>,
    /// Endpoint interface to pick (`public`, `internal`, `admin`); `public` when `None`.
    pub interface: Option<String>,
    /// Container endpoint to use instead of the catalog's (`--os-endpoint` with a
    /// password).
    pub endpoint_override: Option<String>,
}

impl std::fmt::Debug for PasswordAuth {
    // The password never appears in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordAuth")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("project_name", &self.project_name)
            .field("user_domain_name", &self.user_domain_name)
            .field("project_domain_name", &self.project_domain_name)
            .field("region_name", &self.region_name)
            .field("interface", &self.interface)
            .field("endpoint_override", &self.endpoint_override)
            .finish()
    }
}

impl PasswordAuth {
    /// The body of `POST /v3/auth/tokens`.
    pub fn token_request(&self) -> serde_json::Value {
        json!({"auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {
                    "name": self.username,
                    "domain": {"name": self.user_domain_name},
                    "password": self.password,
                }},
            },
            "scope": {"project": {
                "name": self.project_name,
                "domain": {"name": self.project_domain_name},
            }},
        }})
    }

    /// The URL of the token request: `{auth_url}/auth/tokens`, with `/v3` inserted when
    /// the auth URL names no version (as keystoneauth would discover).
    pub fn tokens_url(&self) -> Result<reqwest::Url, ClientError> {
        let mut url = crate::client::parse_base_url(&self.auth_url)?;
        let last = url
            .path_segments()
            .and_then(|mut s| s.rfind(|seg| !seg.is_empty()).map(str::to_string));
        let versioned = last.is_some_and(|seg| seg == "v3" || seg.starts_with("v3."));
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            if !versioned {
                segments.push("v3");
            }
            segments.extend(["auth", "tokens"]);
        }
        Ok(url)
    }
}

/// What the identity service said about an issued token (`openstack token issue`).
#[derive(Clone, PartialEq, Eq, Default, Serialize)]
pub struct TokenInfo {
    /// The token itself.
    pub id: String,
    /// Expiry time, as the identity service formats it; unknown for a given token.
    pub expires_at: Option<String>,
    /// Issue time.
    pub issued_at: Option<String>,
    /// User id.
    pub user_id: Option<String>,
    /// User name.
    pub user_name: Option<String>,
    /// Project id.
    pub project_id: Option<String>,
    /// Project name.
    pub project_name: Option<String>,
    /// Role names.
    pub roles: Vec<String>,
}

impl std::fmt::Debug for TokenInfo {
    // The token never appears in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenInfo")
            .field("id", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("user_id", &self.user_id)
            .field("project_id", &self.project_id)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Body of a Keystone v3 token response.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The token description.
    pub token: TokenBody,
}

/// The `token` object of a Keystone v3 token response.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenBody {
    /// Expiry time.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Issue time.
    #[serde(default)]
    pub issued_at: Option<String>,
    /// The authenticated user.
    #[serde(default)]
    pub user: Option<NamedRef>,
    /// The project the token is scoped to.
    #[serde(default)]
    pub project: Option<NamedRef>,
    /// Roles on that project.
    #[serde(default)]
    pub roles: Vec<NamedRef>,
    /// The service catalog.
    #[serde(default)]
    pub catalog: Vec<CatalogEntry>,
}

/// An `{id, name}` reference (user, project, role).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NamedRef {
    /// Id.
    #[serde(default)]
    pub id: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
}

/// One service of the catalog.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogEntry {
    /// Service type, e.g. `container`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Service name, e.g. `berth`.
    #[serde(default)]
    pub name: Option<String>,
    /// The service's endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of a catalog service.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Region (Keystone sends both `region` and `region_id`).
    #[serde(default)]
    pub region: Option<String>,
    /// Region id.
    #[serde(default)]
    pub region_id: Option<String>,
    /// Base URL.
    pub url: String,
}

impl TokenBody {
    /// The token's facts, given the token id from `X-Subject-Token`.
    pub fn info(&self, id: String) -> TokenInfo {
        let user = self.user.clone().unwrap_or_default();
        let project = self.project.clone().unwrap_or_default();
        TokenInfo {
            id,
            expires_at: self.expires_at.clone(),
            issued_at: self.issued_at.clone(),
            user_id: user.id,
            user_name: user.name,
            project_id: project.id,
            project_name: project.name,
            roles: self.roles.iter().filter_map(|r| r.name.clone()).collect(),
        }
    }
}

/// The service type of Berth's (and Zun's) API in the catalog.
pub const CONTAINER_SERVICE_TYPE: &str = "container";

/// Finds the URL of the `container` service for `interface` (default `public`; the
/// legacy `publicURL` spelling is accepted) and, if given, `region`.
pub fn find_container_endpoint(
    catalog: &[CatalogEntry],
    interface: Option<&str>,
    region: Option<&str>,
) -> Result<String, ClientError> {
    let interface = normalize_interface(interface.unwrap_or("public"));
    let region = region.filter(|r| !r.is_empty());
    let candidates: Vec<&Endpoint> = catalog
        .iter()
        .filter(|entry| entry.service_type == CONTAINER_SERVICE_TYPE)
        .flat_map(|entry| entry.endpoints.iter())
        .collect();
    let found = candidates.iter().find(|endpoint| {
        normalize_interface(&endpoint.interface) == interface
            && region.is_none_or(|wanted| {
                endpoint.region.as_deref() == Some(wanted)
                    || endpoint.region_id.as_deref() == Some(wanted)
            })
    });
    if let Some(endpoint) = found {
        return Ok(endpoint.url.clone());
    }
    let wanted = match region {
        Some(region) => format!("interface {interface} in region {region}"),
        None => format!("interface {interface}"),
    };
    let available = if candidates.is_empty() {
        "nothing".to_string()
    } else {
        candidates
            .iter()
            .map(|e| {
                let region = e.region.as_deref().or(e.region_id.as_deref());
                format!(
                    "{} ({} in {})",
                    e.url,
                    e.interface,
                    region.unwrap_or("no region")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(ClientError::NoEndpoint { wanted, available })
}

fn normalize_interface(interface: &str) -> String {
    let lower = interface.to_ascii_lowercase();
    lower.strip_suffix("url").unwrap_or(&lower).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(auth_url: &str) -> PasswordAuth {
        PasswordAuth {
            auth_url: auth_url.into(),
            username: "alice".into(),
            password: "s3cret".into(),
            project_name: "demo".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
            region_name: None,
            interface: None,
            endpoint_override: None,
        }
    }

    fn catalog() -> Vec<CatalogEntry> {
        serde_json::from_value(json!([
            {"type": "identity", "name": "keystone", "endpoints": [
                {"interface": "public", "region": "RegionOne", "url": "http://h/identity/v3"}]},
            {"type": "container", "name": "berth", "endpoints": [
                {"interface": "internal", "region": "RegionOne", "url": "http://internal/v1"},
                {"interface": "public", "region": "RegionOne", "url": "http://one/v1"},
                {"interface": "public", "region": "RegionTwo", "url": "http://two/v1"}]}
        ]))
        .unwrap()
    }

    #[test]
    fn token_request_has_keystone_v3_password_shape() {
        let body = password("http://h/identity/v3").token_request();
        assert_eq!(body["auth"]["identity"]["methods"], json!(["password"]));
        assert_eq!(
            body["auth"]["identity"]["password"]["user"],
            json!({"name": "alice", "domain": {"name": "Default"}, "password": "s3cret"})
        );
        assert_eq!(
            body["auth"]["scope"]["project"],
            json!({"name": "demo", "domain": {"name": "Default"}})
        );
    }

    #[test]
    fn tokens_url_appends_auth_tokens_and_adds_v3_when_missing() {
        let url = |u: &str| password(u).tokens_url().unwrap().to_string();
        assert_eq!(
            url("http://127.0.0.1:9517/identity/v3"),
            "http://127.0.0.1:9517/identity/v3/auth/tokens"
        );
        assert_eq!(url("http://h:5000/v3/"), "http://h:5000/v3/auth/tokens");
        assert_eq!(url("http://h:5000"), "http://h:5000/v3/auth/tokens");
        assert_eq!(
            url("http://h/identity/"),
            "http://h/identity/v3/auth/tokens"
        );
    }

    #[test]
    fn tokens_url_rejects_what_is_not_an_http_url() {
        assert!(password("127.0.0.1:9517").tokens_url().is_err());
        assert!(password("ftp://h/v3").tokens_url().is_err());
    }

    #[test]
    fn catalog_lookup_defaults_to_the_public_interface() {
        assert_eq!(
            find_container_endpoint(&catalog(), None, None).unwrap(),
            "http://one/v1"
        );
    }

    #[test]
    fn catalog_lookup_honours_region_and_interface() {
        assert_eq!(
            find_container_endpoint(&catalog(), Some("publicURL"), Some("RegionTwo")).unwrap(),
            "http://two/v1"
        );
        assert_eq!(
            find_container_endpoint(&catalog(), Some("internal"), None).unwrap(),
            "http://internal/v1"
        );
    }

    #[test]
    fn catalog_lookup_failure_lists_what_the_catalog_has() {
        let err = find_container_endpoint(&catalog(), None, Some("Nowhere")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("region Nowhere"), "{text}");
        assert!(
            text.contains("http://two/v1 (public in RegionTwo)"),
            "{text}"
        );
        let empty = find_container_endpoint(&[], None, None).unwrap_err();
        assert!(empty.to_string().ends_with("it lists: nothing"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!("{:?}", AuthConfig::Password(password("http://h/v3")));
        assert!(!text.contains("s3cret"));
        let token = AuthConfig::Token {
            token: "tok-123".into(),
            endpoint: "http://h/v1".into(),
        };
        assert!(!format!("{token:?}").contains("tok-123"));
    }
}
