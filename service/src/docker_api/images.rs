//! Images: pull, list, inspect, remove, and registry login.
//!
//! A project's images live on its instances' engines, where its containers run. A pull
//! goes to every instance of the caller's project whose agent is connected (so a
//! later `docker run` finds the image wherever it is placed); list merges what those
//! instances hold; inspect and remove look on each of them.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use berth_proto::{
    AgentErrorKind, Command, ImageInfo, Outcome, RegistryAuth, StreamEnd, StreamOpen,
};
use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use super::streams::{agent_error, channel_body, streaming_response};
use super::{json, Call, Cx, DockerError, Response};
use crate::agents::{AgentStream, StreamEvent, StreamOutput};
use crate::db::models::InstanceRow;

/// Docker's `AuthConfig`, as the CLI sends it in `X-Registry-Auth` and `POST /auth`.
/// Go's JSON decoding ignores case; the CLI writes lower case.
#[derive(Default, Deserialize)]
#[serde(default)]
struct AuthConfig {
    #[serde(alias = "Username")]
    username: Option<String>,
    #[serde(alias = "Password")]
    password: Option<String>,
    /// `base64(username:password)`, as config.json stores it.
    #[serde(alias = "Auth")]
    auth: Option<String>,
    #[serde(alias = "ServerAddress")]
    serveraddress: Option<String>,
    #[serde(alias = "IdentityToken")]
    identitytoken: Option<String>,
}

impl AuthConfig {
    /// The credentials, or `None` when there are none (`{}`, the CLI's anonymous pull).
    fn into_registry_auth(self) -> Option<RegistryAuth> {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let mut username = non_empty(self.username);
        let mut password = non_empty(self.password);
        if username.is_none() && password.is_none() {
            if let Some(pair) = non_empty(self.auth)
                .and_then(|a| {
                    base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .ok()
                })
                .and_then(|raw| String::from_utf8(raw).ok())
            {
                if let Some((u, p)) = pair.split_once(':') {
                    username = non_empty(Some(u.to_owned()));
                    password = non_empty(Some(p.to_owned()));
                }
            }
        }
        let identity_token = non_empty(self.identitytoken);
        if username.is_none() && password.is_none() && identity_token.is_none() {
            return None;
        }
        Some(RegistryAuth {
            username,
            password,
            server_address: non_empty(self.serveraddress),
            identity_token,
        })
    }
}

/// Decodes `X-Registry-Auth`: base64url (padded or not) of a JSON `AuthConfig`.
/// Absent or empty credentials are `None`. The header's content is never logged.
fn registry_auth(headers: &HeaderMap) -> Result<Option<RegistryAuth>, DockerError> {
    let Some(raw) = headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    let raw = raw.to_str().unwrap_or("").trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || {
        DockerError::bad_request(
            "invalid X-Registry-Auth header: expected base64url-encoded JSON credentials; run `docker login` again",
        )
    };
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let decoded = URL_SAFE
        .decode(raw)
        .or_else(|_| URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| STANDARD.decode(raw))
        .map_err(|_| bad())?;
    let config: AuthConfig = serde_json::from_slice(&decoded).map_err(|_| bad())?;
    Ok(config.into_registry_auth())
}

/// The image reference a pull asks for: `fromImage` with `tag` (a digest when the tag
/// is one), `latest` when there is none.
fn pull_reference(from_image: &str, tag: &str) -> String {
    if from_image.contains('@') {
        return from_image.to_owned();
    }
    let has_tag = from_image
        .rsplit_once('/')
        .map_or(from_image, |(_, last)| last)
        .contains(':');
    match tag {
        "" if has_tag => from_image.to_owned(),
        "" => format!("{from_image}:latest"),
        t if t.starts_with("sha256:") => format!("{from_image}@{t}"),
        t => format!("{from_image}:{t}"),
    }
}

/// The caller's project's instances whose agent is connected, oldest first.
async fn connected_instances(cx: &Cx) -> Result<Vec<InstanceRow>, DockerError> {
    let project = cx.ctx.project_id.clone();
    let rows = cx
        .state()
        .db
        .run(move |c| crate::db::instances::active_of_project(c, &project))
        .await?;
    Ok(rows.into_iter().filter(|r| r.agent_connected).collect())
}

fn instance_uuid(row: &InstanceRow) -> Result<Uuid, DockerError> {
    Uuid::try_parse(&row.id).map_err(|_| {
        DockerError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("instance {} has a malformed id in the database", row.id),
        )
    })
}

fn no_instance(what: &str) -> DockerError {
    DockerError::conflict(format!(
        "your project has no running instance yet, so there is nowhere to {what}; `docker run` or `docker create` makes one (pulling the image there), then try again"
    ))
}

/// A line of Docker's JSON progress stream that reports an error.
fn error_line(message: &str) -> Bytes {
    let line = serde_json::json!({ "errorDetail": { "message": message }, "error": message });
    let mut bytes = serde_json::to_vec(&line).expect("JSON values serialise");
    bytes.extend_from_slice(b"\r\n");
    Bytes::from(bytes)
}

/// A status line of Docker's JSON progress stream.
fn status_line(status: &str) -> Bytes {
    let mut bytes = serde_json::to_vec(&serde_json::json!({ "status": status }))
        .expect("JSON values serialise");
    bytes.extend_from_slice(b"\r\n");
    Bytes::from(bytes)
}

/// `POST /images/create?fromImage=&tag=`: pulls to every connected instance of the
/// project, streaming the engines' progress lines.
pub async fn pull(cx: &Cx, call: Call) -> Result<Response, DockerError> {
    let from_image = call.query.get("fromImage").unwrap_or("").trim().to_owned();
    if from_image.is_empty() {
        if call.query.get("fromSrc").is_some() {
            return Err(DockerError::not_implemented(
                "importing an image (docker import)",
            ));
        }
        return Err(DockerError::bad_request(
            "fromImage is required: name the image to pull",
        ));
    }
    let reference = pull_reference(&from_image, call.query.get("tag").unwrap_or("").trim());
    let auth = registry_auth(&call.headers)?;
    let instances = connected_instances(cx).await?;
    if instances.is_empty() {
        return Err(no_instance("pull an image to"));
    }
    let mut targets = Vec::with_capacity(instances.len());
    for row in &instances {
        targets.push((instance_uuid(row)?, row.name.clone()));
    }
    tracing::info!(project.id = %cx.ctx.project_id, image = %reference, instances = targets.len(), "pull");
    let agents = cx.state().agents.clone();
    let open = |reference: &str| StreamOpen::Pull {
        image: reference.to_owned(),
        auth: auth.clone(),
    };
    // The first instance's first event decides between an HTTP error (nothing pulled
    // anywhere yet) and a 200 stream.
    let (first, first_name) = targets.remove(0);
    let mut output = agents
        .open_stream(first, None, open(&reference))
        .await
        .map_err(agent_error)?
        .output;
    let first_event = output.next().await;
    if let Some(StreamEvent::End(StreamEnd::Failed { error })) = &first_event {
        return Err(agent_error(error.clone()));
    }
    let several = !targets.is_empty();
    let opens: Vec<(Uuid, String, StreamOpen)> = targets
        .into_iter()
        .map(|(id, name)| (id, name, open(&reference)))
        .collect();
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        if several
            && tx
                .send(status_line(&format!("Pulling to instance {first_name}")))
                .await
                .is_err()
        {
            return;
        }
        if !forward_progress(first_event, output, &tx).await {
            return;
        }
        for (instance, name, open) in opens {
            if tx
                .send(status_line(&format!("Pulling to instance {name}")))
                .await
                .is_err()
            {
                return;
            }
            let output = match agents.open_stream(instance, None, open).await {
                Ok(AgentStream { output, .. }) => output,
                Err(e) => {
                    let _ = tx.send(error_line(&e.message)).await;
                    return;
                }
            };
            if !forward_progress(None, output, &tx).await {
                return;
            }
        }
    });
    Ok(streaming_response("application/json", body))
}

/// Passes one pull's progress lines to the client (after `first`, already read);
/// returns whether it succeeded and the client is still there.
async fn forward_progress(
    first: Option<StreamEvent>,
    mut output: StreamOutput,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> bool {
    let mut next = first;
    loop {
        let event = match next.take() {
            Some(event) => event,
            None => match output.next().await {
                Some(event) => event,
                None => return true,
            },
        };
        match event {
            StreamEvent::Data(d) => {
                if tx.send(Bytes::from(d.data)).await.is_err() {
                    return false;
                }
            }
            StreamEvent::End(StreamEnd::Failed { error }) => {
                tracing::warn!(error = %error, "image pull failed");
                let _ = tx.send(error_line(&error.message)).await;
                return false;
            }
            StreamEvent::End(_) => return true,
        }
    }
}

/// Runs `command` on the agent of `instance`.
async fn call_agent(
    cx: &Cx,
    instance: &InstanceRow,
    command: Command,
) -> Result<Outcome, berth_proto::AgentError> {
    let Ok(id) = Uuid::try_parse(&instance.id) else {
        return Err(berth_proto::AgentError::new(
            AgentErrorKind::Runtime,
            format!(
                "instance {} has a malformed id in the database",
                instance.id
            ),
        ));
    };
    cx.state().agents.call(id, None, command).await
}

/// `GET /images/json`: the images on the project's instances, merged by id.
pub async fn list(cx: &Cx, call: Call) -> Result<Response, DockerError> {
    let filters = call.query.filters()?;
    let mut merged: BTreeMap<String, ImageInfo> = BTreeMap::new();
    let mut failure = None;
    let instances = connected_instances(cx).await?;
    for instance in &instances {
        match call_agent(cx, instance, Command::Images).await {
            Ok(Outcome::Images(images)) => {
                for image in images {
                    merge_image(&mut merged, image);
                }
            }
            Ok(other) => {
                tracing::warn!(instance.id = %instance.id, outcome = ?other, "unexpected reply to images");
            }
            Err(e) => {
                tracing::warn!(instance.id = %instance.id, error = %e, "listing images failed");
                failure = Some(e);
            }
        }
    }
    if merged.is_empty() {
        if let Some(e) = failure {
            return Err(agent_error(e));
        }
    }
    let mut images: Vec<ImageInfo> = merged
        .into_values()
        .filter(|i| image_matches(i, &filters))
        .map(|i| only_matching_tags(i, &filters))
        .collect();
    images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    let summaries: Vec<serde_json::Value> = images.iter().map(image_summary).collect();
    Ok(json(StatusCode::OK, &summaries))
}

/// Adds `image` to `merged`, joining its names with those another instance reported.
fn merge_image(merged: &mut BTreeMap<String, ImageInfo>, image: ImageInfo) {
    match merged.get_mut(&image.id) {
        None => {
            merged.insert(image.id.clone(), image);
        }
        Some(known) => {
            for tag in image.repo_tags {
                if !known.repo_tags.contains(&tag) {
                    known.repo_tags.push(tag);
                }
            }
            for digest in image.repo_digests {
                if !known.repo_digests.contains(&digest) {
                    known.repo_digests.push(digest);
                }
            }
        }
    }
}

/// Whether `tag` (`repo:tag`) matches a `reference` filter: the whole of it, or its
/// repository alone.
fn tag_matches(pattern: &str, tag: &str) -> bool {
    // The tag is after the last `:` unless that `:` belongs to a registry's port.
    let repo = match tag.rsplit_once(':') {
        Some((repo, t)) if !t.contains('/') => repo,
        _ => tag,
    };
    glob(pattern, tag) || glob(pattern, repo)
}

/// With a `reference` filter, moby lists only the names that match it.
fn only_matching_tags(mut image: ImageInfo, filters: &HashMap<String, Vec<String>>) -> ImageInfo {
    if let Some(patterns) = filters.get("reference").filter(|p| !p.is_empty()) {
        image
            .repo_tags
            .retain(|tag| patterns.iter().any(|p| tag_matches(p, tag)));
    }
    image
}

/// moby's image list filters: `reference` (glob on `repo[:tag]`), `dangling`, `label`.
/// Other filters are ignored.
fn image_matches(image: &ImageInfo, filters: &HashMap<String, Vec<String>>) -> bool {
    if let Some(patterns) = filters.get("reference").filter(|p| !p.is_empty()) {
        let any = patterns
            .iter()
            .any(|p| image.repo_tags.iter().any(|tag| tag_matches(p, tag)));
        if !any {
            return false;
        }
    }
    if let Some(values) = filters.get("dangling") {
        let untagged = image.repo_tags.iter().all(|t| t == "<none>:<none>");
        for v in values {
            let want = matches!(v.as_str(), "true" | "1");
            if want != untagged {
                return false;
            }
        }
    }
    if let Some(labels) = filters.get("label") {
        for l in labels {
            let ok = match l.split_once('=') {
                Some((k, v)) => image.labels.get(k).is_some_and(|have| have == v),
                None => image.labels.contains_key(l),
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// Shell-style `*` matching (the only wildcard image references use in practice).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// moby's `ImageSummary`.
fn image_summary(image: &ImageInfo) -> serde_json::Value {
    serde_json::json!({
        "Id": image.id,
        "ParentId": "",
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Created": image.created,
        "Size": image.size,
        "SharedSize": -1,
        "Labels": image.labels,
        "Containers": -1,
    })
}

/// moby's image inspect body.
fn image_inspect_view(image: &ImageInfo) -> serde_json::Value {
    let created = chrono::DateTime::from_timestamp(image.created, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    serde_json::json!({
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": "",
        "Comment": "",
        "Created": created,
        "DockerVersion": "",
        "Author": "",
        "Config": image.config,
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "RootFS": { "Type": "layers" },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    })
}

fn no_such_image(name: &str) -> DockerError {
    DockerError::new(StatusCode::NOT_FOUND, format!("No such image: {name}"))
}

fn is_absent(kind: AgentErrorKind) -> bool {
    matches!(
        kind,
        AgentErrorKind::ImageNotFound | AgentErrorKind::NotFound
    )
}

/// The image `name` on each connected instance of the project that has it.
async fn find_image(cx: &Cx, name: &str) -> Result<Vec<(InstanceRow, ImageInfo)>, DockerError> {
    let mut found = Vec::new();
    for instance in connected_instances(cx).await? {
        let command = Command::ImageInspect {
            reference: name.to_owned(),
        };
        match call_agent(cx, &instance, command).await {
            Ok(Outcome::Image(image)) => found.push((instance, image)),
            Ok(other) => {
                tracing::warn!(instance.id = %instance.id, outcome = ?other, "unexpected reply to image inspect");
            }
            Err(e) if is_absent(e.kind) => {}
            Err(e) => {
                tracing::warn!(instance.id = %instance.id, error = %e, "image inspect failed");
            }
        }
    }
    Ok(found)
}

/// `GET /images/{name}/json`.
pub async fn inspect(cx: &Cx, name: &str, _call: Call) -> Result<Response, DockerError> {
    let found = find_image(cx, name).await?;
    let (_, image) = found.first().ok_or_else(|| no_such_image(name))?;
    Ok(json(StatusCode::OK, &image_inspect_view(image)))
}

/// The name moby reports as untagged: `busybox` is `busybox:latest`; ids are not names.
fn untagged_name(name: &str, id: &str) -> Option<String> {
    let bare = id.strip_prefix("sha256:").unwrap_or(id);
    let looks_like_id = name.starts_with("sha256:")
        || (name.len() >= 4
            && name.bytes().all(|b| b.is_ascii_hexdigit())
            && bare.starts_with(name));
    if looks_like_id {
        return None;
    }
    if name.contains('@') {
        return Some(name.to_owned());
    }
    let last = name.rsplit_once('/').map_or(name, |(_, l)| l);
    Some(if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    })
}

/// `DELETE /images/{name}?force=`: removes the image from every instance of the
/// project that has it.
pub async fn remove(cx: &Cx, name: &str, call: Call) -> Result<Response, DockerError> {
    let force = call.query.bool("force", false);
    let found = find_image(cx, name).await?;
    let Some((_, first)) = found.first() else {
        return Err(no_such_image(name));
    };
    let id = first.id.clone();
    let mut deleted = false;
    for (instance, image) in &found {
        let command = Command::ImageRemove {
            reference: name.to_owned(),
            force,
        };
        match call_agent(cx, instance, command).await {
            Ok(_) => {
                // Removing one of several names only untags: the image stays.
                let still_there = Command::ImageInspect {
                    reference: image.id.clone(),
                };
                if matches!(call_agent(cx, instance, still_there).await, Err(e) if is_absent(e.kind))
                {
                    deleted = true;
                }
            }
            Err(e) if is_absent(e.kind) => {}
            Err(e) if e.kind == AgentErrorKind::Conflict => {
                return Err(DockerError::conflict(e.message));
            }
            Err(e) => return Err(agent_error(e)),
        }
    }
    tracing::info!(project.id = %cx.ctx.project_id, image = %name, instances = found.len(), "image removed");
    let mut answer = Vec::new();
    if let Some(untagged) = untagged_name(name, &id) {
        answer.push(serde_json::json!({ "Untagged": untagged }));
    }
    if deleted {
        answer.push(serde_json::json!({ "Deleted": id }));
    }
    Ok(json(StatusCode::OK, &answer))
}

/// `POST /auth` (`docker login`): the project's instance's engine checks the
/// credentials with the registry.
pub async fn login(cx: &Cx, call: Call) -> Result<Response, DockerError> {
    let config: AuthConfig = call.json()?;
    let auth = config.into_registry_auth().ok_or_else(|| {
        DockerError::bad_request(
            "no credentials given: pass a username and password to `docker login`",
        )
    })?;
    let instances = connected_instances(cx).await?;
    let instance = instances
        .first()
        .ok_or_else(|| no_instance("check registry credentials"))?;
    match call_agent(cx, instance, Command::RegistryLogin { auth }).await {
        Ok(_) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "Status": "Login Succeeded", "IdentityToken": "" }),
        )),
        Err(e) if e.kind == AgentErrorKind::Unavailable => Err(agent_error(e)),
        Err(e) => Err(DockerError::new(StatusCode::UNAUTHORIZED, e.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("X-Registry-Auth", HeaderValue::from_str(auth).unwrap());
        h
    }

    fn b64url(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE.encode(json)
    }

    #[test]
    fn an_empty_registry_auth_header_is_no_credentials() {
        assert!(registry_auth(&HeaderMap::new()).unwrap().is_none());
        assert!(registry_auth(&headers("e30=")).unwrap().is_none());
        assert!(registry_auth(&headers("")).unwrap().is_none());
    }

    #[test]
    fn registry_auth_decodes_base64url_json() {
        // `?` and `>` in the password encode to `_` and `-` in base64url.
        let raw = r#"{"username":"alice","password":"s3cr?t>>","serveraddress":"127.0.0.1:5000"}"#;
        let encoded = b64url(raw);
        assert!(encoded.contains('_') || encoded.contains('-'), "{encoded}");
        let auth = registry_auth(&headers(&encoded)).unwrap().unwrap();
        assert_eq!(auth.username.as_deref(), Some("alice"));
        assert_eq!(auth.password.as_deref(), Some("s3cr?t>>"));
        assert_eq!(auth.server_address.as_deref(), Some("127.0.0.1:5000"));
        let unpadded = encoded.trim_end_matches('=');
        assert_eq!(registry_auth(&headers(unpadded)).unwrap().unwrap(), auth);
    }

    #[test]
    fn registry_auth_takes_the_auth_field_of_config_json() {
        let pair = base64::engine::general_purpose::STANDARD.encode("bob:pw");
        let raw = format!(r#"{{"auth":"{pair}","serveraddress":"reg.example"}}"#);
        let auth = registry_auth(&headers(&b64url(&raw))).unwrap().unwrap();
        assert_eq!(auth.username.as_deref(), Some("bob"));
        assert_eq!(auth.password.as_deref(), Some("pw"));
    }

    #[test]
    fn a_malformed_registry_auth_header_is_a_400_without_its_content() {
        let e = registry_auth(&headers("not base64 at all!")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(!e.message.contains("not base64"), "{}", e.message);
        let e = registry_auth(&headers(&b64url("[1,2]"))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn pull_references_join_image_and_tag() {
        assert_eq!(
            pull_reference("docker.io/library/alpine", "latest"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/app", ""),
            "127.0.0.1:5000/app:latest"
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/app:v1", ""),
            "127.0.0.1:5000/app:v1"
        );
        assert_eq!(pull_reference("alpine", "sha256:abc"), "alpine@sha256:abc");
        assert_eq!(pull_reference("alpine@sha256:abc", ""), "alpine@sha256:abc");
    }

    #[test]
    fn a_pull_error_line_has_both_error_fields() {
        let line = error_line("unauthorized: authentication required");
        assert!(line.ends_with(b"\r\n"));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["error"], "unauthorized: authentication required");
        assert_eq!(
            v["errorDetail"]["message"],
            "unauthorized: authentication required"
        );
    }

    fn image(id: &str, tags: &[&str], created: i64) -> ImageInfo {
        ImageInfo {
            id: id.to_owned(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            created,
            size: 100,
            labels: BTreeMap::from([("berth.test".to_owned(), "1".to_owned())]),
            architecture: "amd64".into(),
            os: "linux".into(),
            config: serde_json::Value::Null,
        }
    }

    #[test]
    fn images_of_several_instances_merge_by_id() {
        let mut merged = BTreeMap::new();
        merge_image(&mut merged, image("sha256:a", &["busybox:latest"], 1));
        merge_image(
            &mut merged,
            image("sha256:a", &["busybox:latest", "bb:1"], 1),
        );
        merge_image(&mut merged, image("sha256:b", &["alpine:3"], 2));
        assert_eq!(merged.len(), 2);
        assert_eq!(merged["sha256:a"].repo_tags, vec!["busybox:latest", "bb:1"]);
        let s = image_summary(&merged["sha256:b"]);
        assert_eq!(s["Id"], "sha256:b");
        assert_eq!(s["SharedSize"], -1);
        assert_eq!(s["Containers"], -1);
        assert_eq!(s["ParentId"], "");
    }

    #[test]
    fn image_filters_match_references_labels_and_dangling() {
        let i = image("sha256:a", &["berth-test/busybox:latest"], 1);
        let f = |k: &str, v: &str| HashMap::from([(k.to_owned(), vec![v.to_owned()])]);
        assert!(image_matches(&i, &f("reference", "berth-test/busybox")));
        assert!(image_matches(
            &i,
            &f("reference", "berth-test/busybox:latest")
        ));
        assert!(image_matches(&i, &f("reference", "berth-test/*")));
        assert!(!image_matches(&i, &f("reference", "alpine")));
        assert!(image_matches(&i, &f("label", "berth.test")));
        assert!(image_matches(&i, &f("label", "berth.test=1")));
        assert!(!image_matches(&i, &f("label", "berth.test=2")));
        assert!(!image_matches(&i, &f("dangling", "true")));
        let reg = image("sha256:c", &["127.0.0.1:5000/app:v1"], 1);
        assert!(image_matches(&reg, &f("reference", "127.0.0.1:5000/app")));
        assert!(!image_matches(&reg, &f("reference", "127.0.0.1")));
        // An image with several names is listed under the matching ones only.
        let both = image("sha256:d", &["127.0.0.1:5000/app:v1", "busybox:latest"], 1);
        let listed = only_matching_tags(both, &f("reference", "127.0.0.1:5000/app"));
        assert_eq!(listed.repo_tags, vec!["127.0.0.1:5000/app:v1"]);
    }

    #[test]
    fn removing_by_name_reports_the_tag_and_by_id_only_the_deletion() {
        assert_eq!(
            untagged_name("busybox", "sha256:abcd12"),
            Some("busybox:latest".into())
        );
        assert_eq!(
            untagged_name("127.0.0.1:5000/app", "sha256:ab"),
            Some("127.0.0.1:5000/app:latest".into())
        );
        assert_eq!(untagged_name("app:v1", "sha256:ab"), Some("app:v1".into()));
        assert_eq!(untagged_name("abcd", "sha256:abcd12"), None);
        assert_eq!(untagged_name("sha256:abcd12", "sha256:abcd12"), None);
    }
}
