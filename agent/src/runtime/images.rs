//! Images on the instance's engine: list, inspect, remove, and checking registry
//! credentials (Docker login).
//!
//! Images are not labelled per instance: the engine of an instance belongs to that
//! instance, so every image on it is the instance's.

use berth_proto::{AgentError, AgentErrorKind, ImageInfo, Outcome, RegistryAuth, Reply};
use bollard::auth::DockerCredentials;
use bollard::models::{ImageInspect, ImageSummary};
use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};

use tokio_tungstenite::tungstenite::http;

use super::errors::{engine_message, is_not_found, status_code};
use super::Runtime;

impl Runtime {
    /// Every image on the instance (tagged and dangling, not intermediate layers).
    pub(super) async fn images(&self) -> Reply {
        let options = ListImagesOptions {
            all: false,
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|err| {
                AgentError::new(
                    AgentErrorKind::Runtime,
                    format!(
                        "could not list the images of instance {}: {}",
                        self.instance,
                        engine_message(&err)
                    ),
                )
            })?;
        Ok(Outcome::Images(
            summaries.into_iter().map(summary_info).collect(),
        ))
    }

    /// One image by reference; absent is `ImageNotFound`.
    pub(super) async fn image_inspect(&self, reference: &str) -> Reply {
        match self.docker.inspect_image(reference).await {
            Ok(inspect) => Ok(Outcome::Image(inspect_info(inspect))),
            Err(err) if is_not_found(&err) => Err(no_such_image(reference, self.instance)),
            Err(err) => Err(AgentError::new(
                AgentErrorKind::Runtime,
                format!(
                    "could not inspect image '{reference}' on instance {}: {}",
                    self.instance,
                    engine_message(&err)
                ),
            )),
        }
    }

    /// Remove an image; absent is `ImageNotFound`, in use is `Conflict`.
    pub(super) async fn image_remove(&self, reference: &str, force: bool) -> Reply {
        let options = RemoveImageOptions {
            force,
            noprune: false,
            ..Default::default()
        };
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => {
                tracing::info!(instance.id = %self.instance, image = %reference, "removed image");
                Ok(Outcome::Done)
            }
            Err(err) if is_not_found(&err) => Err(no_such_image(reference, self.instance)),
            Err(err) if status_code(&err) == Some(409) => Err(AgentError::new(
                AgentErrorKind::Conflict,
                format!(
                    "could not remove image '{reference}' on instance {}: {}",
                    self.instance,
                    engine_message(&err)
                ),
            )),
            Err(err) => Err(AgentError::new(
                AgentErrorKind::Runtime,
                format!(
                    "could not remove image '{reference}' on instance {}: {}",
                    self.instance,
                    engine_message(&err)
                ),
            )),
        }
    }

    /// Check registry credentials with the engine (its `POST /auth`).
    ///
    /// bollard has no call for this endpoint, so a one-off handle rewrites a plain
    /// `GET /version` into the `POST /auth` request; the answer decodes into the
    /// version struct (every field optional) and only success or failure matters.
    pub(super) async fn registry_login(&self, auth: &RegistryAuth) -> Reply {
        let body = serde_json::json!({
            "username": auth.username.clone().unwrap_or_default(),
            "password": auth.password.clone().unwrap_or_default(),
            "serveraddress": auth.server_address.clone().unwrap_or_default(),
            "identitytoken": auth.identity_token.clone().unwrap_or_default(),
        })
        .to_string();
        let docker = self.docker.clone().with_request_modifier(move |request| {
            let (mut parts, _) = request.into_parts();
            let path = parts.uri.path().replace("/version", "/auth");
            let mut uri = parts.uri.clone().into_parts();
            uri.path_and_query = path.parse().ok();
            if let Ok(rewritten) = http::Uri::from_parts(uri) {
                parts.uri = rewritten;
            }
            parts.method = http::Method::POST;
            parts.headers.insert(
                "content-type",
                "application/json".parse().expect("static header value"),
            );
            parts.headers.remove("content-length");
            bollard::BollardRequest::from_parts(
                parts,
                bollard::body_full(body.clone().into_bytes().into()),
            )
        });
        let server = auth.server_address.clone().unwrap_or_default();
        match docker.version().await {
            Ok(_) => {
                tracing::info!(instance.id = %self.instance, registry = %server, "registry credentials accepted");
                Ok(Outcome::Done)
            }
            Err(err) => Err(AgentError::new(
                AgentErrorKind::Runtime,
                format!(
                    "the registry {server} refused the login from instance {}: {}",
                    self.instance,
                    engine_message(&err)
                ),
            )),
        }
    }
}

/// Registry credentials as bollard sends them to the engine.
pub(super) fn credentials(auth: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: auth.username.clone(),
        password: auth.password.clone(),
        serveraddress: auth.server_address.clone(),
        identitytoken: auth.identity_token.clone(),
        ..Default::default()
    }
}

fn no_such_image(reference: &str, instance: uuid::Uuid) -> AgentError {
    AgentError::new(
        AgentErrorKind::ImageNotFound,
        format!("No such image: {reference} (on instance {instance})"),
    )
}

fn summary_info(summary: ImageSummary) -> ImageInfo {
    ImageInfo {
        id: summary.id,
        repo_tags: summary.repo_tags,
        repo_digests: summary.repo_digests,
        created: summary.created,
        size: summary.size,
        labels: summary.labels.into_iter().collect(),
        architecture: String::new(),
        os: String::new(),
        config: serde_json::Value::Null,
    }
}

fn inspect_info(inspect: ImageInspect) -> ImageInfo {
    let created = inspect
        .created
        .as_deref()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .map_or(0, |time| time.timestamp());
    let labels = inspect
        .config
        .as_ref()
        .and_then(|config| config.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    ImageInfo {
        id: inspect.id.unwrap_or_default(),
        repo_tags: inspect.repo_tags.unwrap_or_default(),
        repo_digests: inspect.repo_digests.unwrap_or_default(),
        created,
        size: inspect.size.unwrap_or_default(),
        labels,
        architecture: inspect.architecture.unwrap_or_default(),
        os: inspect.os.unwrap_or_default(),
        config: inspect
            .config
            .and_then(|config| serde_json::to_value(config).ok())
            .unwrap_or(serde_json::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_login_answer_decodes_where_the_version_was_expected() {
        // `registry_login` reads the answer to `POST /auth` as the version struct, so
        // a successful login must not fail to decode.
        let answer = r#"{"Status":"Login Succeeded","IdentityToken":""}"#;
        assert!(serde_json::from_str::<bollard::models::SystemVersion>(answer).is_ok());
    }

    #[test]
    fn an_inspected_image_keeps_its_config_labels_and_creation_time() {
        let inspect: ImageInspect = serde_json::from_value(serde_json::json!({
            "Id": "sha256:abc",
            "RepoTags": ["berth-test/busybox:latest"],
            "Created": "2026-01-02T03:04:05.123456789Z",
            "Size": 1234,
            "Architecture": "amd64",
            "Os": "linux",
            "Config": {"Labels": {"berth.test": "1"}, "Cmd": ["sh"]}
        }))
        .unwrap();
        let info = inspect_info(inspect);
        assert_eq!(info.id, "sha256:abc");
        assert_eq!(info.created, 1_767_323_045);
        assert_eq!(info.labels.get("berth.test").map(String::as_str), Some("1"));
        assert_eq!(info.config["Cmd"][0], "sh");
        assert_eq!(
            (info.architecture.as_str(), info.os.as_str()),
            ("amd64", "linux")
        );
    }
}
