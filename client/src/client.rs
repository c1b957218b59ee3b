//! [`Client`]: an authenticated handle on one container endpoint.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::auth::{find_container_endpoint, AuthConfig, TokenInfo, TokenResponse};
use crate::container::{
    ContainerView, CreateContainer, DeleteOptions, LogsOptions, UpdateContainer,
};
use crate::error::{ApiErrorBody, ClientError};

/// The microversion every request asks for.
pub const API_VERSION: &str = "container 1.40";
/// Header that carries the microversion.
pub const API_VERSION_HEADER: &str = "OpenStack-API-Version";
/// Header that carries the token.
pub const AUTH_TOKEN_HEADER: &str = "X-Auth-Token";
/// Header in which Keystone returns a new token.
pub const SUBJECT_TOKEN_HEADER: &str = "X-Subject-Token";

/// Guards against a server whose `next` links never end.
const MAX_LIST_PAGES: usize = 1000;

/// An authenticated client of one Berth (Zun-compatible) container endpoint.
///
/// Build it with [`Client::authenticate`] (which asks the identity service for a token
/// and finds the endpoint in the catalog) or [`Client::with_token`]. Every method sends
/// `X-Auth-Token` and `OpenStack-API-Version: container 1.40`. Container ids may be
/// uuids or names.
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    endpoint: Url,
    pub(crate) token: TokenInfo,
    /// The identity API's base (`.../v3`) the token came from; `None` for a client made
    /// with a token alone.
    pub(crate) identity: Option<Url>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ContainerList {
    containers: Vec<ContainerView>,
    #[serde(default)]
    next: Option<String>,
}

impl Client {
    /// Authenticates as `config` says: a password config requests a project-scoped token
    /// and takes the `container` endpoint from its catalog; a token config is used as is.
    pub async fn authenticate(config: AuthConfig) -> Result<Client, ClientError> {
        match config {
            AuthConfig::Token { token, endpoint } => Client::with_token(&endpoint, token),
            AuthConfig::Password(password) => {
                let http = http_client()?;
                let url = password.tokens_url()?;
                let response = http
                    .post(url.clone())
                    .json(&password.token_request())
                    .send()
                    .await
                    .map_err(|e| ClientError::unreachable(&url, &e))?;
                let response = check_status(response).await?;
                let token_id = response
                    .headers()
                    .get(SUBJECT_TOKEN_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ClientError::invalid_response(
                            &url,
                            format!("no {SUBJECT_TOKEN_HEADER} header in the token response"),
                        )
                    })?;
                let body: TokenResponse = decode(response, &url).await?;
                let endpoint = match &password.endpoint_override {
                    Some(endpoint) => endpoint.clone(),
                    None => find_container_endpoint(
                        &body.token.catalog,
                        password.interface.as_deref(),
                        password.region_name.as_deref(),
                    )?,
                };
                let mut identity = url.clone();
                if let Ok(mut segments) = identity.path_segments_mut() {
                    segments.pop().pop();
                }
                Ok(Client {
                    http,
                    endpoint: parse_base_url(&endpoint)?,
                    token: body.token.info(token_id),
                    identity: Some(identity),
                })
            }
        }
    }

    /// A client that uses an already issued token with a fixed endpoint (no identity
    /// service involved). Makes no request.
    pub fn with_token(endpoint: &str, token: impl Into<String>) -> Result<Client, ClientError> {
        Ok(Client {
            http: http_client()?,
            endpoint: parse_base_url(endpoint)?,
            token: TokenInfo {
                id: token.into(),
                ..TokenInfo::default()
            },
            identity: None,
        })
    }

    /// The token in use and what the identity service said about it (only the id is
    /// known for a client made with [`Client::with_token`]).
    pub fn token(&self) -> &TokenInfo {
        &self.token
    }

    /// The container endpoint, e.g. `http://127.0.0.1:9517/v1`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// `POST /containers[?run=true]`: creates a container; `run` also starts it.
    /// The answer comes before the work is done (status `Creating`).
    pub async fn create_container(
        &self,
        body: &CreateContainer,
        run: bool,
    ) -> Result<ContainerView, ClientError> {
        let url = self.url(&["containers"]);
        let mut request = self.request(Method::POST, &url).json(body);
        if run {
            request = request.query(&[("run", "true")]);
        }
        let response = self.send(request, &url).await?;
        decode(response, &url).await
    }

    /// `GET /containers`, following `next` links until the list is complete.
    pub async fn list_containers(&self) -> Result<Vec<ContainerView>, ClientError> {
        self.list_containers_with(false).await
    }

    /// `GET /containers?all_projects=true` (administrators): containers of every project.
    pub async fn list_all_containers(&self) -> Result<Vec<ContainerView>, ClientError> {
        self.list_containers_with(true).await
    }

    async fn list_containers_with(
        &self,
        all_projects: bool,
    ) -> Result<Vec<ContainerView>, ClientError> {
        let mut url = self.url(&["containers"]);
        if all_projects {
            url.query_pairs_mut().append_pair("all_projects", "true");
        }
        let mut containers = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let response = self.send(self.request(Method::GET, &url), &url).await?;
            let page: ContainerList = decode(response, &url).await?;
            containers.extend(page.containers);
            match page.next.filter(|next| !next.is_empty()) {
                None => return Ok(containers),
                Some(next) => {
                    let next = url.join(&next).map_err(|e| {
                        ClientError::invalid_response(&url, format!("bad next link {next:?}: {e}"))
                    })?;
                    if next == url {
                        return Ok(containers);
                    }
                    url = next;
                }
            }
        }
        Err(ClientError::invalid_response(
            &url,
            format!("the list did not end after {MAX_LIST_PAGES} pages"),
        ))
    }

    /// `GET /hosts` (administrators), following `next` links: every instance of every
    /// project, with its capacity, usage, owner, provider and agent status.
    pub async fn list_hosts(&self) -> Result<Vec<crate::hosts::ObjectView>, ClientError> {
        let mut url = self.url(&["hosts"]);
        let mut hosts = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let response = self.send(self.request(Method::GET, &url), &url).await?;
            let page: crate::hosts::HostList = decode(response, &url).await?;
            hosts.extend(page.hosts);
            match page.next.filter(|next| !next.is_empty()) {
                None => return Ok(hosts),
                Some(next) => {
                    let next = url.join(&next).map_err(|e| {
                        ClientError::invalid_response(&url, format!("bad next link {next:?}: {e}"))
                    })?;
                    if next == url {
                        return Ok(hosts);
                    }
                    url = next;
                }
            }
        }
        Err(ClientError::invalid_response(
            &url,
            format!("the list did not end after {MAX_LIST_PAGES} pages"),
        ))
    }

    /// `GET /hosts/{id}` (administrators): one host by uuid or hostname.
    pub async fn get_host(&self, id: &str) -> Result<crate::hosts::ObjectView, ClientError> {
        let url = self.url(&["hosts", id]);
        let response = self.send(self.request(Method::GET, &url), &url).await?;
        decode(response, &url).await
    }

    /// `GET /instances` (Berth): the instances of the caller's project.
    pub async fn list_instances(&self) -> Result<Vec<crate::hosts::ObjectView>, ClientError> {
        let url = self.url(&["instances"]);
        let response = self.send(self.request(Method::GET, &url), &url).await?;
        let list: crate::hosts::InstanceList = decode(response, &url).await?;
        Ok(list.instances)
    }

    /// `POST /docker/credentials` (Berth): a client certificate of the Docker endpoint
    /// for the public key of `csr_pem`, registered to the caller's user and project.
    pub async fn create_docker_credentials(
        &self,
        csr_pem: &str,
    ) -> Result<crate::docker::IssuedCredentials, ClientError> {
        let url = self.url(&["docker", "credentials"]);
        let request = self
            .request(Method::POST, &url)
            .json(&serde_json::json!({ "csr": csr_pem }));
        let response = self.send(request, &url).await?;
        decode(response, &url).await
    }

    /// `GET /docker/credentials` (Berth): the project's Docker client certificates.
    pub async fn list_docker_credentials(
        &self,
    ) -> Result<Vec<crate::docker::CredentialView>, ClientError> {
        let url = self.url(&["docker", "credentials"]);
        let response = self.send(self.request(Method::GET, &url), &url).await?;
        let list: crate::docker::CredentialList = decode(response, &url).await?;
        Ok(list.credentials)
    }

    /// `DELETE /docker/credentials/{fingerprint}` (Berth): revokes a certificate.
    pub async fn revoke_docker_credentials(&self, fingerprint: &str) -> Result<(), ClientError> {
        let url = self.url(&["docker", "credentials", fingerprint]);
        self.send(self.request(Method::DELETE, &url), &url)
            .await
            .map(drop)
    }

    /// `POST /capsules` with `{"template": template}`: creates a capsule (a pod) from a
    /// Zun capsule template, a container manifest or a Kubernetes Pod. The answer comes
    /// before the pod runs (status `Creating`).
    pub async fn create_capsule(
        &self,
        template: &serde_json::Value,
    ) -> Result<crate::capsule::CapsuleView, ClientError> {
        let url = self.url(&["capsules"]);
        let request = self
            .request(Method::POST, &url)
            .json(&serde_json::json!({ "template": template }));
        let response = self.send(request, &url).await?;
        decode(response, &url).await
    }

    /// `GET /capsules[?all_projects=true]`, following `next` links.
    pub async fn list_capsules(
        &self,
        all_projects: bool,
    ) -> Result<Vec<crate::capsule::CapsuleView>, ClientError> {
        let mut url = self.url(&["capsules"]);
        if all_projects {
            url.query_pairs_mut().append_pair("all_projects", "true");
        }
        let mut capsules = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let response = self.send(self.request(Method::GET, &url), &url).await?;
            let page: crate::capsule::CapsuleList = decode(response, &url).await?;
            capsules.extend(page.capsules);
            match page.next.filter(|next| !next.is_empty()) {
                None => return Ok(capsules),
                Some(next) => {
                    let next = url.join(&next).map_err(|e| {
                        ClientError::invalid_response(&url, format!("bad next link {next:?}: {e}"))
                    })?;
                    if next == url {
                        return Ok(capsules);
                    }
                    url = next;
                }
            }
        }
        Err(ClientError::invalid_response(
            &url,
            format!("the list did not end after {MAX_LIST_PAGES} pages"),
        ))
    }

    /// `GET /capsules/{id}`: one capsule by uuid or name, with each container's inspect
    /// data when the agent could be asked.
    pub async fn get_capsule(&self, id: &str) -> Result<crate::capsule::CapsuleView, ClientError> {
        let url = self.url(&["capsules", id]);
        let response = self.send(self.request(Method::GET, &url), &url).await?;
        decode(response, &url).await
    }

    /// `PATCH /capsules/{id}` with `{"template": template}` (a Berth extension): replaces
    /// the capsule's spec; only containers whose spec changed are restarted.
    pub async fn update_capsule(
        &self,
        id: &str,
        template: &serde_json::Value,
    ) -> Result<crate::capsule::CapsuleView, ClientError> {
        let url = self.url(&["capsules", id]);
        let request = self
            .request(Method::PATCH, &url)
            .json(&serde_json::json!({ "template": template }));
        let response = self.send(request, &url).await?;
        decode(response, &url).await
    }

    /// `DELETE /capsules/{id}`. Deletion continues after the answer; the capsule is gone
    /// when GET answers 404.
    pub async fn delete_capsule(&self, id: &str) -> Result<(), ClientError> {
        let url = self.url(&["capsules", id]);
        self.send(self.request(Method::DELETE, &url), &url)
            .await
            .map(drop)
    }

    /// `GET /containers/{id}`.
    pub async fn get_container(&self, id: &str) -> Result<ContainerView, ClientError> {
        let url = self.url(&["containers", id]);
        let response = self.send(self.request(Method::GET, &url), &url).await?;
        decode(response, &url).await
    }

    /// `PATCH /containers/{id}`: renames or resizes.
    pub async fn update_container(
        &self,
        id: &str,
        body: &UpdateContainer,
    ) -> Result<ContainerView, ClientError> {
        let url = self.url(&["containers", id]);
        let request = self.request(Method::PATCH, &url).json(body);
        let response = self.send(request, &url).await?;
        decode(response, &url).await
    }

    /// `DELETE /containers/{id}?force=..&stop=..`. Deletion continues after the answer;
    /// the container is gone when GET answers 404.
    pub async fn delete_container(
        &self,
        id: &str,
        options: DeleteOptions,
    ) -> Result<(), ClientError> {
        let url = self.url(&["containers", id]);
        let request = self.request(Method::DELETE, &url).query(&[
            ("force", bool_str(options.force)),
            ("stop", bool_str(options.stop)),
        ]);
        self.send(request, &url).await.map(drop)
    }

    /// `POST /containers/{id}/start`.
    pub async fn start_container(&self, id: &str) -> Result<(), ClientError> {
        self.action(id, "start", &[]).await
    }

    /// `POST /containers/{id}/stop[?timeout=N]`: stops, killing after `timeout` seconds.
    pub async fn stop_container(&self, id: &str, timeout: Option<u32>) -> Result<(), ClientError> {
        let timeout = timeout.map(|t| t.to_string());
        let query: Vec<(&str, &str)> = timeout.iter().map(|t| ("timeout", t.as_str())).collect();
        self.action(id, "stop", &query).await
    }

    /// `POST /containers/{id}/reboot[?timeout=N]`: restarts.
    pub async fn reboot_container(
        &self,
        id: &str,
        timeout: Option<u32>,
    ) -> Result<(), ClientError> {
        let timeout = timeout.map(|t| t.to_string());
        let query: Vec<(&str, &str)> = timeout.iter().map(|t| ("timeout", t.as_str())).collect();
        self.action(id, "reboot", &query).await
    }

    /// `POST /containers/{id}/kill[?signal=S]`: sends a signal (default SIGKILL).
    pub async fn kill_container(&self, id: &str, signal: Option<&str>) -> Result<(), ClientError> {
        let query: Vec<(&str, &str)> = signal.iter().map(|s| ("signal", *s)).collect();
        self.action(id, "kill", &query).await
    }

    /// `POST /containers/{id}/pause`.
    pub async fn pause_container(&self, id: &str) -> Result<(), ClientError> {
        self.action(id, "pause", &[]).await
    }

    /// `POST /containers/{id}/unpause`.
    pub async fn unpause_container(&self, id: &str) -> Result<(), ClientError> {
        self.action(id, "unpause", &[]).await
    }

    /// `GET /containers/{id}/logs`: the log text.
    pub async fn container_logs(
        &self,
        id: &str,
        options: &LogsOptions,
    ) -> Result<String, ClientError> {
        let url = self.url(&["containers", id, "logs"]);
        let mut query = vec![
            ("stdout", bool_str(options.stdout).to_string()),
            ("stderr", bool_str(options.stderr).to_string()),
            ("timestamps", bool_str(options.timestamps).to_string()),
        ];
        if let Some(tail) = &options.tail {
            query.push(("tail", tail.clone()));
        }
        if let Some(since) = &options.since {
            query.push(("since", since.clone()));
        }
        let request = self.request(Method::GET, &url).query(&query);
        let response = self.send(request, &url).await?;
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::unreachable(&url, &e))?;
        // Zun sends the logs as a JSON string; accept plain text from other servers.
        Ok(match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::String(logs)) => logs,
            Ok(serde_json::Value::Null) => String::new(),
            _ => text,
        })
    }

    async fn action(
        &self,
        id: &str,
        action: &str,
        query: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let url = self.url(&["containers", id, action]);
        let request = self.request(Method::POST, &url).query(query);
        self.send(request, &url).await.map(drop)
    }

    /// The endpoint URL with `segments` appended, each percent-encoded (a container name
    /// can never reach another path).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: &Url) -> RequestBuilder {
        self.http
            .request(method, url.clone())
            .header(AUTH_TOKEN_HEADER, &self.token.id)
            .header(API_VERSION_HEADER, API_VERSION)
    }

    async fn send(&self, request: RequestBuilder, url: &Url) -> Result<Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::unreachable(url, &e))?;
        check_status(response).await
    }
}

fn bool_str(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

pub(crate) fn http_client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .user_agent(concat!("berth-osc/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| ClientError::Setup(crate::error::error_chain(&e)))
}

/// Parses a base URL (auth URL or endpoint): it must be `http` or `https` with a host.
pub(crate) fn parse_base_url(text: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: text.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(text.trim())
        .map_err(|e| invalid(&format!("{e}; expected e.g. http://127.0.0.1:9517/v1")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http and https URLs are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    Ok(url)
}

/// Turns a non-success answer into [`ClientError::Api`]. The URL is left out of the
/// message: the status and the server's words say what was wrong.
pub(crate) async fn check_status(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(ClientError::Api {
        status: status.as_u16(),
        body: ApiErrorBody::parse(&text, reason(status)),
    })
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

pub(crate) async fn decode<T: DeserializeOwned>(
    response: Response,
    url: &Url,
) -> Result<T, ClientError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::unreachable(url, &e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::invalid_response(url, format!("could not decode the body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_urls_are_built_under_the_endpoint_with_encoded_ids() {
        let client = Client::with_token("http://127.0.0.1:9517/v1/", "tok").unwrap();
        assert_eq!(
            client.url(&["containers", "web"]).as_str(),
            "http://127.0.0.1:9517/v1/containers/web"
        );
        assert_eq!(
            client.url(&["containers", "../x y", "logs"]).as_str(),
            "http://127.0.0.1:9517/v1/containers/..%2Fx%20y/logs"
        );
    }

    #[test]
    fn endpoint_must_be_an_http_url_with_a_host() {
        assert!(Client::with_token("http://h/v1", "t").is_ok());
        for bad in ["", "h:9517/v1", "file:///tmp", "mailto:a@b"] {
            let err = Client::with_token(bad, "t").unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidUrl { .. }),
                "{bad}: {err}"
            );
        }
    }
}
