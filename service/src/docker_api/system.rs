//! `_ping`, `version` and `info`.
//!
//! Berth is not one Docker engine: a project's containers run on its instances, each
//! with an engine of its own. `info` therefore describes the caller's project as one
//! virtual engine — its containers as the database has them, the CPUs and memory of its
//! instances, the images the connected instances hold — and says whose it is in
//! `DriverStatus`, as sdc-docker does.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_proto::{Command, Outcome};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::{json, Call, Cx, DockerError, Response, API_VERSION, MIN_API_VERSION};
use crate::db::containers::{self, ListFilter};
use crate::db::monitor;
use crate::domain::ContainerStatus;
use crate::policy::Target;

/// Berth's version, reported as the engine's.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long `info` waits for an instance to list its images; `docker info` should not
/// hang on one slow agent.
const IMAGES_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /version`.
pub async fn version(cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    let api = API_VERSION.to_string();
    let min = MIN_API_VERSION.to_string();
    let name = &cx.shared.server_name;
    let details = json!({
        "ApiVersion": api,
        "MinAPIVersion": min,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": "",
        "Experimental": "false",
        "BuildTime": "",
    });
    Ok(json(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": name},
            "Components": [{"Name": "Engine", "Version": VERSION, "Details": details}],
            "Version": VERSION,
            "ApiVersion": api,
            "MinAPIVersion": min,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": "",
            "Experimental": false,
            "BuildTime": "",
        }),
    ))
}

/// `GET /info`: the caller's project as one engine.
pub async fn info(cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    let ctx = &cx.ctx;
    // Whoever may list the project's containers may see this summary of them.
    cx.state()
        .policy
        .enforce("container:get_all", ctx, &Target::own(ctx))
        .map_err(crate::api::error::ApiError::from)?;
    let project = ctx.project_id.clone();
    let (rows, instances) = cx
        .state()
        .db
        .run(move |c| {
            let rows = containers::list(
                c,
                &ListFilter {
                    project: Some(project.clone()),
                    limit: i64::MAX,
                    ..ListFilter::default()
                },
            )?;
            Ok((rows, monitor::live_instances_of_project(c, &project)?))
        })
        .await?;
    let (mut running, mut paused, mut stopped) = (0, 0, 0);
    for row in &rows {
        match ContainerStatus::from_db(&row.status) {
            ContainerStatus::Running | ContainerStatus::Restarting => running += 1,
            ContainerStatus::Paused => paused += 1,
            _ => stopped += 1,
        }
    }
    let ncpu: f64 = instances.iter().map(|i| i.cpus).sum();
    let mem_mib: i64 = instances.iter().map(|i| i.memory_mib.max(0)).sum();

    // Images live on the instances' engines: ask each connected one.
    let mut images = BTreeSet::new();
    let mut warnings = Vec::new();
    for instance in instances.iter().filter(|i| i.agent_connected) {
        let Ok(id) = instance.id.parse() else {
            continue;
        };
        let call = cx.state().agents.call(id, None, Command::Images);
        match tokio::time::timeout(IMAGES_TIMEOUT, call).await {
            Ok(Ok(Outcome::Images(list))) => images.extend(list.into_iter().map(|i| i.id)),
            Ok(Ok(_)) => warnings.push(format!(
                "instance {} answered the image listing with something else",
                instance.name
            )),
            Ok(Err(e)) => warnings.push(format!(
                "the images of instance {} could not be listed: {}",
                instance.name, e.message
            )),
            Err(_) => warnings.push(format!(
                "the images of instance {} could not be listed within {} s",
                instance.name,
                IMAGES_TIMEOUT.as_secs()
            )),
        }
    }
    let disconnected = instances.iter().filter(|i| !i.agent_connected).count();
    if disconnected > 0 {
        warnings.push(format!(
            "{disconnected} of the project's instances are not connected; their images are not counted"
        ));
    }

    let name = &cx.shared.server_name;
    Ok(json(
        StatusCode::OK,
        &json!({
            "ID": ctx.project_id,
            "Name": format!("{name} ({})", ctx.project_name),
            "Containers": rows.len(),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": stopped,
            "Images": images.len(),
            "Driver": "berth",
            "DriverStatus": [
                ["Project", ctx.project_name],
                ["User", ctx.user_name],
                ["Instances", instances.len().to_string()],
            ],
            "Plugins": {"Volume": [], "Network": [], "Authorization": null, "Log": []},
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": false,
                "Error": "",
                "RemoteManagers": null,
            },
            "Runtimes": {},
            "DefaultRuntime": "",
            "SecurityOptions": [],
            "ServerVersion": VERSION,
            "OperatingSystem": format!("{name} (containers on the project's instances)"),
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            // Whole CPUs, as Docker counts them; instances may have fractional ones.
            "NCPU": ncpu.floor() as i64,
            "MemTotal": mem_mib * 1024 * 1024,
            "KernelVersion": "",
            "IndexServerAddress": "https://index.docker.io/v1/",
            "Debug": false,
            "ExperimentalBuild": false,
            "LiveRestoreEnabled": false,
            "Labels": [],
            "Warnings": warnings,
            "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        }),
    ))
}

/// `HEAD|GET /_ping`.
pub fn ping(method: &Method) -> Response {
    let mut resp = if method == Method::HEAD {
        super::empty(StatusCode::OK)
    } else {
        let mut r = hyper::Response::new(super::full("OK"));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    resp
}

/// The architecture in Go's names, as `docker version` shows it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
