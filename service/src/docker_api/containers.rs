//! Container routes of the Docker endpoint: create, list, inspect, start/stop/…, wait,
//! rename, update, top, remove.
//!
//! Everything goes through the same service layer as the Zun API
//! ([`crate::containers`]): the same rows, policy rules, quotas and placement. Docker's
//! calls are synchronous where Zun's are not, so each one waits, on the container
//! watch ([`crate::watch`]), for the lifecycle to finish what it started before it
//! answers.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth_proto::container::Protocol;
use berth_proto::{Command, DeviceMapping, Outcome, PortBinding, Privileges};
use bytes::Bytes;
use chrono::{NaiveDateTime, Utc};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::ids::{docker_id, find};
use super::{empty, json, Call, Cx, DockerError, Response};
use crate::api::error::ApiError;
use crate::containers::{self as service, NewContainer, Op};
use crate::db::containers::{self as q, ListFilter};
use crate::db::models::{ContainerRow, InstanceRow, PortRow};
use crate::db::{instances, DbError};
use crate::domain::{ContainerName, ContainerStatus, CpuLimit, ImageRef, MemoryMib};
use crate::domain::{RestartPolicy, Signal};
use crate::lifecycle::IMAGE_NOT_FOUND;
use crate::policy::Target;
use crate::watch::ContainerNotice;

use ContainerStatus as S;

// ---------------------------------------------------------------------------------
// The create body (Docker's ContainerConfig with HostConfig), as the API defines it.
// Every field may be null or absent.

/// `Cmd` and `Entrypoint` may be a string or a list of strings.
#[derive(Debug, Clone, PartialEq)]
struct Words(Vec<String>);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Words, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Either::deserialize(d)? {
            Either::One(s) => Words(vec![s]),
            Either::Many(v) => Words(v),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    hostname: Option<String>,
    domainname: Option<String>,
    user: Option<String>,
    attach_stdin: Option<bool>,
    attach_stdout: Option<bool>,
    attach_stderr: Option<bool>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    tty: Option<bool>,
    open_stdin: Option<bool>,
    stdin_once: Option<bool>,
    env: Option<Vec<String>>,
    cmd: Option<Words>,
    entrypoint: Option<Words>,
    image: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    working_dir: Option<String>,
    stop_signal: Option<String>,
    stop_timeout: Option<i64>,
    volumes: Option<BTreeMap<String, Value>>,
    host_config: Option<HostConfigBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfigBody {
    binds: Option<Vec<String>>,
    network_mode: Option<String>,
    port_bindings: Option<BTreeMap<String, Option<Vec<PortBindingBody>>>>,
    restart_policy: Option<RestartPolicyBody>,
    auto_remove: Option<bool>,
    cap_add: Option<Vec<String>>,
    privileged: Option<bool>,
    publish_all_ports: Option<bool>,
    security_opt: Option<Vec<String>>,
    pid_mode: Option<String>,
    ipc_mode: Option<String>,
    #[serde(rename = "UTSMode")]
    uts_mode: Option<String>,
    userns_mode: Option<String>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    devices: Option<Vec<DeviceBody>>,
    device_requests: Option<Vec<Value>>,
    device_cgroup_rules: Option<Vec<String>>,
    mounts: Option<Vec<MountBody>>,
    volumes_from: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBindingBody {
    host_ip: Option<String>,
    host_port: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicyBody {
    name: Option<String>,
    maximum_retry_count: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DeviceBody {
    path_on_host: Option<String>,
    path_in_container: Option<String>,
    cgroup_permissions: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MountBody {
    #[serde(rename = "Type")]
    kind: Option<String>,
    source: Option<String>,
    target: Option<String>,
    read_only: Option<bool>,
}

/// What `docker inspect` echoes back that Berth's container model does not hold;
/// stored as JSON in the row's `docker_config`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
struct DockerConfig {
    /// The image as typed (`busybox`, not `busybox:latest`).
    image: String,
    exposed_ports: Vec<String>,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    domainname: String,
    stop_signal: Option<String>,
    stop_timeout: Option<i64>,
    publish_all_ports: bool,
    network_mode: String,
    /// `PortBindings` as asked for, key → bindings.
    port_bindings: BTreeMap<String, Vec<PortBindingBody>>,
}

// ---------------------------------------------------------------------------------
// Host access: refused unless a policy rule grants it.

/// The capabilities a Docker container has by default; adding one of these grants
/// nothing new.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// One option that needs a policy grant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostAccess {
    /// The option as the user gave it (`--privileged`, `--network host`, …).
    option: String,
    /// Why it reaches beyond the container.
    why: &'static str,
    /// The policy rule that grants it.
    rule: &'static str,
}

fn access(option: String, why: &'static str, rule: &'static str) -> HostAccess {
    HostAccess { option, why, rule }
}

/// The host access `body` asks for, and the privileges to give the agent if it is all
/// granted. Options Berth cannot offer at all are a 400.
fn host_access(body: &CreateBody) -> Result<(Vec<HostAccess>, Privileges), DockerError> {
    let mut asks = Vec::new();
    let mut p = Privileges::default();
    let Some(h) = &body.host_config else {
        return Ok((asks, p));
    };
    if h.privileged == Some(true) {
        asks.push(access(
            "--privileged".into(),
            "it gives the container every capability and device of the instance",
            "container:create:privileged",
        ));
        p.privileged = true;
    }
    match h.network_mode.as_deref().unwrap_or("") {
        "" | "default" | "bridge" => {}
        m if m == "host" || m.starts_with("container:") => {
            asks.push(access(
                format!("--network {m}"),
                "it shares a network stack outside the container",
                "container:create:host_network",
            ));
            p.network_mode = Some(m.to_owned());
        }
        m => {
            return Err(DockerError::bad_request(format!(
                "--network {m} is not supported by Berth: containers use the default network and are reached through published ports (-p)"
            )))
        }
    }
    let namespaces: [(&str, &Option<String>, &mut Option<String>); 4] = [
        ("--pid", &h.pid_mode, &mut p.pid_mode),
        ("--ipc", &h.ipc_mode, &mut p.ipc_mode),
        ("--uts", &h.uts_mode, &mut p.uts_mode),
        ("--userns", &h.userns_mode, &mut p.userns_mode),
    ];
    for (flag, mode, slot) in namespaces {
        let mode = mode.as_deref().unwrap_or("");
        let shared = mode == "host" || mode.starts_with("container:");
        if shared {
            asks.push(access(
                format!("{flag} {mode}"),
                "it shares a namespace of the instance or of another container",
                "container:create:host_namespaces",
            ));
            *slot = Some(mode.to_owned());
        } else if !matches!(mode, "" | "private" | "shareable" | "none" | "default") {
            return Err(DockerError::bad_request(format!(
                "{flag} {mode} is not supported by Berth"
            )));
        }
    }
    for bind in h.binds.iter().flatten() {
        let source = bind.split(':').next().unwrap_or("");
        if source.starts_with('/') {
            asks.push(access(
                format!("-v {bind}"),
                "it mounts a path of the instance into the container",
                "container:create:host_mounts",
            ));
            p.binds.push(bind.clone());
        } else {
            return Err(DockerError::bad_request(format!(
                "-v {bind}: volumes are not available on Berth yet; only host paths can be mounted, where policy allows it"
            )));
        }
    }
    for m in h.mounts.iter().flatten() {
        let kind = m.kind.as_deref().unwrap_or("");
        let (source, target) = (
            m.source.clone().unwrap_or_default(),
            m.target.clone().unwrap_or_default(),
        );
        if kind == "bind" {
            asks.push(access(
                format!("--mount type=bind,source={source},target={target}"),
                "it mounts a path of the instance into the container",
                "container:create:host_mounts",
            ));
            let ro = if m.read_only == Some(true) { ":ro" } else { "" };
            p.binds.push(format!("{source}:{target}{ro}"));
        } else {
            return Err(DockerError::bad_request(format!(
                "--mount type={kind}: volumes and tmpfs mounts are not available on Berth yet"
            )));
        }
    }
    for d in h.devices.iter().flatten() {
        let host = d.path_on_host.clone().unwrap_or_default();
        let inside = d
            .path_in_container
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| host.clone());
        asks.push(access(
            format!("--device {host}"),
            "it gives the container a device of the instance",
            "container:create:devices",
        ));
        p.devices.push(DeviceMapping {
            path_on_host: host,
            path_in_container: inside,
            cgroup_permissions: d
                .cgroup_permissions
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "rwm".into()),
        });
    }
    if h.device_requests.as_ref().is_some_and(|r| !r.is_empty()) {
        asks.push(access(
            "--gpus".into(),
            "it gives the container a device of the instance",
            "container:create:devices",
        ));
    }
    for rule in h.device_cgroup_rules.iter().flatten() {
        asks.push(access(
            format!("--device-cgroup-rule {rule}"),
            "it lets the container use devices of the instance",
            "container:create:devices",
        ));
        p.device_cgroup_rules.push(rule.clone());
    }
    for cap in h.cap_add.iter().flatten() {
        let upper = cap.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if !DEFAULT_CAPS.contains(&bare) {
            asks.push(access(
                format!("--cap-add {cap}"),
                "it is beyond Docker's default capability set",
                "container:create:capabilities",
            ));
        }
        p.cap_add.push(bare.to_owned());
    }
    for opt in h.security_opt.iter().flatten() {
        let norm = opt.replacen(':', "=", 1);
        match norm.as_str() {
            // Tightening is always fine.
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges=false" => {}
            _ => asks.push(access(
                format!("--security-opt {opt}"),
                "it changes or removes the container's confinement",
                "container:create:unconfined",
            )),
        }
        p.security_opt.push(opt.clone());
    }
    if h.volumes_from.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(DockerError::bad_request(
            "--volumes-from is not supported by Berth: volumes are not available yet",
        ));
    }
    if body.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(DockerError::bad_request(
            "anonymous volumes (-v /path) are not available on Berth yet",
        ));
    }
    Ok((asks, p))
}

/// 403 for the first option policy does not grant, naming the option and the rule.
fn refuse(a: &HostAccess) -> DockerError {
    DockerError::new(
        StatusCode::FORBIDDEN,
        format!(
            "{} is not allowed: {}. Berth refuses it for tenants unless policy grants the rule \"{}\"; ask an administrator",
            a.option, a.why, a.rule
        ),
    )
}

// ---------------------------------------------------------------------------------
// Translation of the body into the service layer's request.

/// A port key `80/tcp`, `53/udp` or `80`.
fn port_key(key: &str) -> Result<(u16, Protocol), DockerError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match proto {
        "tcp" | "" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(DockerError::bad_request(format!(
                "invalid port {key:?}: protocol {other} is not supported, use tcp or udp"
            )))
        }
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
        DockerError::bad_request(format!(
            "invalid port {key:?}: use PORT[/PROTOCOL] with one port from 1 to 65535 (ranges are not supported)"
        ))
    })?;
    Ok((port, protocol))
}

/// The ports to publish: `-p` bindings, and with `-P` every exposed port not bound.
fn published(body: &CreateBody) -> Result<Vec<PortBinding>, DockerError> {
    let mut ports = Vec::new();
    let host = body.host_config.as_ref();
    for (key, bindings) in host
        .and_then(|h| h.port_bindings.as_ref())
        .into_iter()
        .flatten()
    {
        let (container_port, protocol) = port_key(key)?;
        let bindings = bindings.clone().unwrap_or_default();
        let bindings = if bindings.is_empty() {
            vec![PortBindingBody::default()]
        } else {
            bindings
        };
        for b in bindings {
            let host_port = match b.host_port.as_deref().unwrap_or("") {
                "" | "0" => None,
                s => Some(s.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    DockerError::bad_request(format!(
                        "invalid host port {s:?} for {key}: use one port from 1 to 65535 (ranges are not supported)"
                    ))
                })?),
            };
            ports.push(PortBinding {
                host_port,
                container_port,
                protocol,
            });
        }
    }
    if host.and_then(|h| h.publish_all_ports) == Some(true) {
        for key in body.exposed_ports.iter().flat_map(|m| m.keys()) {
            let (container_port, protocol) = port_key(key)?;
            if !ports
                .iter()
                .any(|p| p.container_port == container_port && p.protocol == protocol)
            {
                ports.push(PortBinding {
                    host_port: None,
                    container_port,
                    protocol,
                });
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for p in &ports {
        if let Some(h) = p.host_port {
            if !seen.insert((h, p.protocol)) {
                return Err(DockerError::bad_request(format!(
                    "host port {h}/{} is published twice in this request",
                    p.protocol.as_str()
                )));
            }
        }
    }
    Ok(ports)
}

/// Checks the policy rule `rule` for the caller's own project (403 when denied).
fn allow(cx: &Cx, rule: &str) -> Result<(), DockerError> {
    cx.state()
        .policy
        .enforce(rule, &cx.ctx, &Target::own(&cx.ctx))
        .map_err(|d| ApiError::from(d).into())
}

fn api(e: impl Into<ApiError>) -> DockerError {
    DockerError::bad_request(e.into().to_string())
}

/// The service layer's request for a Docker create body (without host access).
fn translate(body: &CreateBody, name: Option<&str>) -> Result<NewContainer, DockerError> {
    let typed = body
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| DockerError::bad_request("Config.Image is required"))?;
    let image = ImageRef::parse(&typed).map_err(api)?;
    let name = match name.map(|n| n.strip_prefix('/').unwrap_or(n)) {
        None | Some("") => ContainerName::generate(),
        Some(n) => ContainerName::parse(n).map_err(|_| {
            DockerError::bad_request(format!(
                "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            ))
        })?,
    };
    let h = body.host_config.as_ref();
    let memory = match h.and_then(|h| h.memory).unwrap_or(0) {
        0 => MemoryMib::DEFAULT,
        bytes if bytes < 0 => return Err(DockerError::bad_request("invalid Memory: negative")),
        bytes => {
            let mib = (bytes + (1 << 20) - 1) >> 20;
            MemoryMib::parse(&mib.to_string()).map_err(api)?
        }
    };
    let cpu = match h.and_then(|h| h.nano_cpus).unwrap_or(0) {
        0 => CpuLimit::DEFAULT,
        n => CpuLimit::parse(n as f64 / 1e9).map_err(api)?,
    };
    let restart = match h.and_then(|h| h.restart_policy.as_ref()) {
        Some(r) => {
            let name = r.name.as_deref().filter(|n| !n.is_empty()).unwrap_or("no");
            RestartPolicy::parse(name, r.maximum_retry_count.unwrap_or(0)).map_err(api)?
        }
        None => RestartPolicy::none(),
    };
    let auto_remove = h.and_then(|h| h.auto_remove).unwrap_or(false);
    if auto_remove && restart.name() != "no" {
        return Err(DockerError::conflict(
            "conflicting options: cannot specify both --restart and --rm",
        ));
    }
    let environment: BTreeMap<String, String> = body
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let ports = published(body)?;
    let mut exposed: Vec<String> = body
        .exposed_ports
        .iter()
        .flat_map(|m| m.keys().cloned())
        .collect();
    for p in &ports {
        let key = format!("{}/{}", p.container_port, p.protocol.as_str());
        if !exposed.contains(&key) {
            exposed.push(key);
        }
    }
    exposed.sort();
    let config = DockerConfig {
        image: typed,
        exposed_ports: exposed,
        attach_stdin: body.attach_stdin.unwrap_or(false),
        attach_stdout: body.attach_stdout.unwrap_or(false),
        attach_stderr: body.attach_stderr.unwrap_or(false),
        domainname: body.domainname.clone().unwrap_or_default(),
        stop_signal: body.stop_signal.clone().filter(|s| !s.is_empty()),
        stop_timeout: body.stop_timeout,
        publish_all_ports: h.and_then(|h| h.publish_all_ports).unwrap_or(false),
        network_mode: h
            .and_then(|h| h.network_mode.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "bridge".into()),
        port_bindings: h
            .and_then(|h| h.port_bindings.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
    };
    Ok(NewContainer {
        registry: None,
        name,
        image,
        command: body.cmd.clone().map(|w| w.0).unwrap_or_default(),
        entrypoint: body.entrypoint.clone().map(|w| w.0),
        cpu,
        memory,
        workdir: body.working_dir.clone().filter(|w| !w.is_empty()),
        hostname: body.hostname.clone().filter(|h| !h.is_empty()),
        labels: body.labels.clone().unwrap_or_default(),
        environment,
        restart,
        interactive: body.open_stdin.unwrap_or(false),
        tty: body.tty.unwrap_or(false),
        auto_remove,
        ports,
        disk_gb: 0,
        availability_zone: None,
        stdin_once: body.stdin_once.unwrap_or(false),
        user: body.user.clone().filter(|u| !u.is_empty()),
        docker_config: Some(serde_json::to_string(&config).expect("config serialises")),
        privileges: None,
        unique_name: true,
    })
}

// ---------------------------------------------------------------------------------
// Waiting for the lifecycle.

/// The row of `id` now (`None`: deleted).
async fn reload(cx: &Cx, id: &str) -> Result<Option<ContainerRow>, DockerError> {
    let id = id.to_owned();
    Ok(cx.state().db.run(move |c| q::get(c, &id)).await?)
}

/// The next notice about `id`; `None` after a lag (re-read the row) or a quiet
/// second (a safety net: re-read anyway).
async fn next_notice(
    rx: &mut broadcast::Receiver<ContainerNotice>,
    id: &str,
) -> Option<ContainerNotice> {
    let deadline = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok(n) if n.id == id => return Some(n),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return None,
                Err(broadcast::error::RecvError::Closed) => {
                    // No publisher left (shutting down): fall back to re-reading.
                    deadline.as_mut().await;
                    return None;
                }
            },
            _ = &mut deadline => return None,
        }
    }
}

/// Waits until the action `action` of container `id` has finished; returns its
/// error message, if it failed. A container deleted meanwhile (auto_remove) counts
/// as finished.
async fn await_action(
    cx: &Cx,
    rx: &mut broadcast::Receiver<ContainerNotice>,
    id: &str,
    action: &str,
) -> Result<Option<String>, DockerError> {
    loop {
        let (cid, aid) = (id.to_owned(), action.to_owned());
        let done = cx
            .state()
            .db
            .run(move |c| {
                Ok::<_, DbError>(
                    q::actions_of(c, &cid)?
                        .into_iter()
                        .find(|a| a.id == aid)
                        .map(|a| (a.finish_time.is_some(), a.result, a.message)),
                )
            })
            .await?;
        match done {
            None => return Ok(None),
            Some((true, result, message)) => {
                return Ok((result.as_deref() == Some("Error"))
                    .then(|| message.unwrap_or_else(|| "the operation failed".into())))
            }
            Some((false, _, _)) => {}
        }
        next_notice(rx, id).await;
    }
}

/// Starts `op` on `row` and waits for it to end.
async fn run_op(cx: &Cx, row: &ContainerRow, op: Op) -> Result<(), DockerError> {
    allow(cx, op.rule())?;
    let mut rx = cx.state().watch.subscribe();
    let action = service::operate(cx.state(), &cx.ctx, row, op).await?;
    match await_action(cx, &mut rx, &row.id, &action).await? {
        None => Ok(()),
        Some(message) => Err(DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, message)),
    }
}

// ---------------------------------------------------------------------------------
// Routes.

/// `POST /containers/create?name=`: records the container through the service layer
/// and answers once the lifecycle has made it (Docker's create is synchronous).
pub async fn create(cx: &Cx, call: Call) -> Result<Response, DockerError> {
    let state = cx.state();
    allow(cx, "container:create")?;
    let body: CreateBody = call.json()?;
    let (asks, privileges) = host_access(&body)?;
    for a in &asks {
        if !state.policy.allows(a.rule, &cx.ctx, &Target::own(&cx.ctx)) {
            tracing::info!(project.id = %cx.ctx.project_id, option = %a.option, rule = a.rule, "create refused: host access not granted");
            return Err(refuse(a));
        }
    }
    if body
        .host_config
        .as_ref()
        .and_then(|h| h.device_requests.as_ref())
        .is_some_and(|r| !r.is_empty())
    {
        return Err(DockerError::bad_request(
            "--gpus (DeviceRequests) is not supported by Berth",
        ));
    }
    let mut new = translate(&body, call.query.get("name"))?;
    let typed_image = body.image.clone().unwrap_or_default();
    if !asks.is_empty() || !privileges.security_opt.is_empty() || !privileges.cap_add.is_empty() {
        new.privileges = Some(privileges);
    }
    let mut rx = state.watch.subscribe();
    let created = service::create(state, &cx.ctx, new, false)
        .await
        .map_err(DockerError::from)?;
    let id = created.row.id.clone();
    let mut row = Some(created.row);
    loop {
        match &row {
            None => {
                return Err(DockerError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the container was removed while it was being created",
                ))
            }
            Some(r) if ContainerStatus::from_db(&r.status) == S::Creating => {}
            Some(r) if ContainerStatus::from_db(&r.status) == S::Error => {
                let reason = r
                    .status_reason
                    .clone()
                    .unwrap_or_else(|| "the container could not be created".into());
                // Nothing is left behind: the CLI pulls and retries on a 404.
                state.lifecycle.forget(&id).await?;
                if reason.starts_with(IMAGE_NOT_FOUND) {
                    return Err(DockerError::new(
                        StatusCode::NOT_FOUND,
                        format!("No such image: {typed_image}"),
                    ));
                }
                return Err(DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, reason));
            }
            Some(_) => break,
        }
        next_notice(&mut rx, &id).await;
        row = reload(cx, &id).await?;
    }
    tracing::info!(container.id = %id, project.id = %cx.ctx.project_id, "docker create: container made");
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": docker_id(&id), "Warnings": []}),
    ))
}

/// Docker's `State.Status` for a row.
fn docker_state(row: &ContainerRow) -> &'static str {
    match ContainerStatus::from_db(&row.status) {
        S::Creating | S::Created => "created",
        S::Running => "running",
        S::Paused => "paused",
        S::Restarting => "restarting",
        S::Deleting => "removing",
        S::Dead => "dead",
        _ => "exited",
    }
}

/// go-units' HumanDuration, which `docker ps` prints.
fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = d.num_minutes();
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.num_seconds() as f64 / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", d.num_seconds() / 3600 / 24 / 365)
}

/// The `Status` column of `docker ps`, as moby words it.
fn status_text(row: &ContainerRow, now: NaiveDateTime) -> String {
    let since = |t: Option<NaiveDateTime>| t.map(|t| human_duration(now - t));
    let code = row.exit_code.unwrap_or(0);
    match docker_state(row) {
        "running" => format!(
            "Up {}",
            since(row.started_at).unwrap_or_else(|| "Less than a second".into())
        ),
        "paused" => format!(
            "Up {} (Paused)",
            since(row.started_at).unwrap_or_else(|| "Less than a second".into())
        ),
        "restarting" => match since(row.finished_at) {
            Some(ago) => format!("Restarting ({code}) {ago} ago"),
            None => format!("Restarting ({code})"),
        },
        "exited" => match since(row.finished_at) {
            Some(ago) => format!("Exited ({code}) {ago} ago"),
            None if row.runtime_id.is_none() => "Created".into(),
            None => format!("Exited ({code})"),
        },
        "removing" => "Removal In Progress".into(),
        "dead" => "Dead".into(),
        _ => "Created".into(),
    }
}

fn rfc3339(t: Option<NaiveDateTime>) -> String {
    match t {
        Some(t) => t
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

fn config_of(row: &ContainerRow) -> DockerConfig {
    row.docker_config
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_else(|| {
            // Made through the Zun API: what Docker would show for it.
            let ports: Vec<PortBinding> =
                serde_json::from_str(&row.requested_ports).unwrap_or_default();
            DockerConfig {
                image: row.image.clone(),
                exposed_ports: ports
                    .iter()
                    .map(|p| format!("{}/{}", p.container_port, p.protocol.as_str()))
                    .collect(),
                network_mode: "bridge".into(),
                ..DockerConfig::default()
            }
        })
}

/// Ports of a container, published (host port on its instance) or only exposed:
/// key `80/tcp` → host ports.
fn port_map(row: &ContainerRow, ports: &[PortRow]) -> BTreeMap<String, Vec<u16>> {
    let mut map: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for key in config_of(row).exposed_ports {
        map.entry(key).or_default();
    }
    for p in ports.iter().filter(|p| p.container_id == row.id) {
        map.entry(format!("{}/{}", p.container_port, p.protocol))
            .or_default()
            .push(p.host_port as u16);
    }
    map
}

fn list_json(row: &str) -> Vec<String> {
    serde_json::from_str(row).unwrap_or_default()
}

fn map_json(row: &str) -> BTreeMap<String, String> {
    serde_json::from_str(row).unwrap_or_default()
}

/// Rows with their ports and instances.
async fn with_context(
    cx: &Cx,
    rows: Vec<ContainerRow>,
) -> Result<
    (
        Vec<ContainerRow>,
        Vec<PortRow>,
        HashMap<String, InstanceRow>,
    ),
    DockerError,
> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let inst_ids: Vec<String> = rows.iter().filter_map(|r| r.instance_id.clone()).collect();
    let (ports, insts) = cx
        .state()
        .db
        .run(move |c| {
            let ports = q::ports_of(c, &ids)?;
            let insts = instances::get_many(c, inst_ids)?;
            Ok::<_, DbError>((ports, insts))
        })
        .await?;
    Ok((rows, ports, insts))
}

/// `docker ps`'s command column.
fn command_line(row: &ContainerRow) -> String {
    let mut words = row.entrypoint.as_deref().map(list_json).unwrap_or_default();
    words.extend(list_json(&row.command));
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) || w.contains('\'') {
                format!("'{}'", w.replace('\'', "'\\''"))
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One item of `GET /containers/json`.
fn summary(
    row: &ContainerRow,
    ports: &[PortRow],
    inst: Option<&InstanceRow>,
    now: NaiveDateTime,
) -> Value {
    let address = inst
        .map(|i| i.address.clone())
        .unwrap_or_else(|| "0.0.0.0".into());
    let mut port_items = Vec::new();
    for (key, hosts) in port_map(row, ports) {
        let (private, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
        let private: u16 = private.parse().unwrap_or(0);
        if hosts.is_empty() {
            port_items.push(json!({"PrivatePort": private, "Type": proto}));
        }
        for h in hosts {
            port_items.push(
                json!({"IP": address, "PrivatePort": private, "PublicPort": h, "Type": proto}),
            );
        }
    }
    let config = config_of(row);
    json!({
        "Id": docker_id(&row.id),
        "Names": [format!("/{}", row.name)],
        "Image": config.image,
        "ImageID": "",
        "Command": command_line(row),
        "Created": row.created_at.and_utc().timestamp(),
        "Ports": port_items,
        "Labels": map_json(&row.labels),
        "State": docker_state(row),
        "Status": status_text(row, now),
        "HostConfig": {"NetworkMode": config.network_mode},
        "NetworkSettings": {"Networks": {}},
        "Mounts": [],
    })
}

/// `GET /containers/json?all&limit&filters`.
pub async fn list(cx: &Cx, call: Call) -> Result<Response, DockerError> {
    allow(cx, "container:get_all")?;
    let limit = call.query.i64("limit")?.filter(|l| *l > 0);
    let all = call.query.bool("all", false) || limit.is_some();
    let filters = call.query.filters()?;
    for key in filters.keys() {
        if !matches!(
            key.as_str(),
            "id" | "name" | "label" | "status" | "exited" | "ancestor"
        ) {
            return Err(DockerError::bad_request(format!(
                "invalid filter '{key}': Berth supports id, name, label, status, exited and ancestor"
            )));
        }
    }
    let filter = ListFilter {
        project: Some(cx.ctx.project_id.clone()),
        limit: 100_000,
        ..Default::default()
    };
    let rows = cx.state().db.run(move |c| q::list(c, &filter)).await?;
    let mut rows: Vec<ContainerRow> = rows
        .into_iter()
        .filter(|r| all || matches!(docker_state(r), "running" | "paused" | "restarting"))
        .filter(|r| matches_filters(r, &filters))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    if let Some(l) = limit {
        rows.truncate(l as usize);
    }
    let (rows, ports, insts) = with_context(cx, rows).await?;
    let now = Utc::now().naive_utc();
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let inst = r.instance_id.as_ref().and_then(|i| insts.get(i));
            summary(r, &ports, inst, now)
        })
        .collect();
    Ok(json(StatusCode::OK, &items))
}

fn matches_filters(row: &ContainerRow, filters: &HashMap<String, Vec<String>>) -> bool {
    let any = |key: &str, f: &dyn Fn(&str) -> bool| -> bool {
        filters
            .get(key)
            .filter(|v| !v.is_empty())
            .is_none_or(|vals| vals.iter().any(|v| f(v)))
    };
    let labels = map_json(&row.labels);
    let id = docker_id(&row.id);
    let config = config_of(row);
    any("id", &|v| id.starts_with(&v.to_ascii_lowercase()))
        && any("name", &|v| row.name.contains(v.trim_start_matches('/')))
        && filters
            .get("label")
            .into_iter()
            .flatten()
            .all(|v| match v.split_once('=') {
                Some((k, val)) => labels.get(k).map(String::as_str) == Some(val),
                None => labels.contains_key(v.as_str()),
            })
        && any("status", &|v| docker_state(row) == v)
        && any("exited", &|v| {
            docker_state(row) == "exited"
                && v.parse::<i64>().ok() == Some(row.exit_code.unwrap_or(0))
        })
        && any("ancestor", &|v| {
            config.image == v || row.image == v || row.image == format!("{v}:latest")
        })
}

/// The body of `GET /containers/{id}/json`.
pub fn inspect_view(row: &ContainerRow, ports: &[PortRow], inst: Option<&InstanceRow>) -> Value {
    let config = config_of(row);
    let address = inst
        .map(|i| i.address.clone())
        .unwrap_or_else(|| "0.0.0.0".into());
    let state = docker_state(row);
    let entrypoint = row.entrypoint.as_deref().map(list_json);
    let command = list_json(&row.command);
    let mut argv: Vec<String> = entrypoint.clone().unwrap_or_default();
    argv.extend(command.iter().cloned());
    let (path, args) = match argv.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let mut network_ports = serde_json::Map::new();
    let mut exposed = serde_json::Map::new();
    for (key, hosts) in port_map(row, ports) {
        exposed.insert(key.clone(), json!({}));
        let value = if hosts.is_empty() {
            Value::Null
        } else {
            Value::Array(
                hosts
                    .iter()
                    .map(|h| json!({"HostIp": address, "HostPort": h.to_string()}))
                    .collect(),
            )
        };
        network_ports.insert(key, value);
    }
    let env: Vec<String> = map_json(&row.environment)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let restarting = state == "restarting";
    let privileges: Privileges = row
        .privileges
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    let binds: Option<Vec<String>> =
        (!privileges.binds.is_empty()).then(|| privileges.binds.clone());
    json!({
        "Id": docker_id(&row.id),
        "Created": rfc3339(Some(row.created_at)),
        "Path": path,
        "Args": args,
        "State": {
            "Status": state,
            "Running": matches!(state, "running" | "paused" | "restarting"),
            "Paused": state == "paused",
            "Restarting": restarting,
            "OOMKilled": row.status_reason.as_deref().is_some_and(|r| r.starts_with("OOMKilled")),
            "Dead": state == "dead",
            "Pid": 0,
            "ExitCode": row.exit_code.unwrap_or(0),
            "Error": if state == "exited" { row.status_reason.clone().unwrap_or_default() } else { String::new() },
            "StartedAt": rfc3339(row.started_at),
            "FinishedAt": rfc3339(row.finished_at),
        },
        "Image": row.image,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": "",
        "Name": format!("/{}", row.name),
        "RestartCount": 0,
        "Driver": "",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": Value::Null,
        "HostConfig": {
            "Binds": binds,
            "NetworkMode": config.network_mode,
            "PortBindings": config.port_bindings,
            "RestartPolicy": {"Name": row.restart_policy, "MaximumRetryCount": row.restart_max_retries},
            "AutoRemove": row.auto_remove,
            "Privileged": privileges.privileged,
            "PublishAllPorts": config.publish_all_ports,
            "CapAdd": (!privileges.cap_add.is_empty()).then(|| privileges.cap_add.clone()),
            "SecurityOpt": (!privileges.security_opt.is_empty()).then(|| privileges.security_opt.clone()),
            "PidMode": privileges.pid_mode.clone().unwrap_or_default(),
            "IpcMode": privileges.ipc_mode.clone().unwrap_or_default(),
            "UTSMode": privileges.uts_mode.clone().unwrap_or_default(),
            "UsernsMode": privileges.userns_mode.clone().unwrap_or_default(),
            "Memory": row.memory_mib * 1024 * 1024,
            "NanoCpus": (row.cpu * 1e9).round() as i64,
        },
        "GraphDriver": {"Name": "", "Data": {}},
        "Mounts": [],
        "Config": {
            "Hostname": row.hostname.clone().unwrap_or_default(),
            "Domainname": config.domainname,
            "User": row.run_user.clone().unwrap_or_default(),
            "AttachStdin": config.attach_stdin,
            "AttachStdout": config.attach_stdout,
            "AttachStderr": config.attach_stderr,
            "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
            "Tty": row.tty,
            "OpenStdin": row.interactive,
            "StdinOnce": row.stdin_once,
            "Env": env,
            "Cmd": if command.is_empty() { Value::Null } else { json!(command) },
            "Image": config.image,
            "WorkingDir": row.workdir.clone().unwrap_or_default(),
            "Entrypoint": entrypoint,
            "Labels": map_json(&row.labels),
            "StopSignal": config.stop_signal,
            "StopTimeout": config.stop_timeout,
        },
        "NetworkSettings": {
            "Ports": network_ports,
            "Networks": {
                "bridge": {
                    "IPAMConfig": Value::Null,
                    "Links": Value::Null,
                    "Aliases": Value::Null,
                    "NetworkID": "",
                    "EndpointID": "",
                    "Gateway": "",
                    "IPAddress": "",
                    "IPPrefixLen": 0,
                    "MacAddress": "",
                }
            },
        },
    })
}

/// `GET /containers/{id}/json`.
pub async fn inspect(cx: &Cx, id: &str, _call: Call) -> Result<Response, DockerError> {
    allow(cx, "container:get_one")?;
    let row = find(cx, id).await?;
    let (rows, ports, insts) = with_context(cx, vec![row]).await?;
    let row = &rows[0];
    let inst = row.instance_id.as_ref().and_then(|i| insts.get(i));
    Ok(json(StatusCode::OK, &inspect_view(row, &ports, inst)))
}

fn not_running(row: &ContainerRow) -> String {
    format!("container {} is not running", docker_id(&row.id))
}

/// `POST /containers/{id}/start`: 204, or 304 when it runs already.
pub async fn start(cx: &Cx, id: &str, _call: Call) -> Result<Response, DockerError> {
    let row = find(cx, id).await?;
    match ContainerStatus::from_db(&row.status) {
        S::Running | S::Restarting => return Ok(empty(StatusCode::NOT_MODIFIED)),
        S::Paused => {
            return Err(DockerError::conflict(
                "cannot start a paused container, try unpause instead",
            ))
        }
        _ => {}
    }
    run_op(cx, &row, Op::Start).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn timeout_of(call: &Call) -> Result<Option<u32>, DockerError> {
    match call.query.i64("t")? {
        None => Ok(None),
        Some(t) if t < 0 => Ok(None),
        Some(t) => Ok(Some(u32::try_from(t).unwrap_or(u32::MAX))),
    }
}

/// `POST /containers/{id}/stop?t=`: 204, or 304 when it is not running.
pub async fn stop(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let timeout_secs = timeout_of(&call)?;
    let row = find(cx, id).await?;
    match ContainerStatus::from_db(&row.status) {
        S::Running => {}
        S::Paused => {
            // The engine cannot stop a frozen process; thaw it first, as dockerd does.
            run_op(cx, &row, Op::Unpause).await?;
        }
        _ => return Ok(empty(StatusCode::NOT_MODIFIED)),
    }
    let row = find(cx, id).await?;
    run_op(cx, &row, Op::Stop { timeout_secs }).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/restart?t=`.
pub async fn restart(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let timeout_secs = timeout_of(&call)?;
    let row = find(cx, id).await?;
    run_op(cx, &row, Op::Reboot { timeout_secs }).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let signal = Signal::parse(call.query.get("signal")).map_err(api)?;
    let row = find(cx, id).await?;
    if !matches!(ContainerStatus::from_db(&row.status), S::Running) {
        return Err(DockerError::conflict(format!(
            "cannot kill container: {id}: {}",
            not_running(&row)
        )));
    }
    run_op(
        cx,
        &row,
        Op::Kill {
            signal: signal.as_str().to_owned(),
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/pause`.
pub async fn pause(cx: &Cx, id: &str, _call: Call) -> Result<Response, DockerError> {
    let row = find(cx, id).await?;
    match ContainerStatus::from_db(&row.status) {
        S::Running => {}
        S::Paused => {
            return Err(DockerError::conflict(format!(
                "container {} is already paused",
                docker_id(&row.id)
            )))
        }
        _ => return Err(DockerError::conflict(not_running(&row))),
    }
    run_op(cx, &row, Op::Pause).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(cx: &Cx, id: &str, _call: Call) -> Result<Response, DockerError> {
    let row = find(cx, id).await?;
    if ContainerStatus::from_db(&row.status) != S::Paused {
        return Err(DockerError::conflict(format!(
            "container {} is not paused",
            docker_id(&row.id)
        )));
    }
    run_op(cx, &row, Op::Unpause).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    allow(cx, "container:rename")?;
    let wanted = call.query.get("name").unwrap_or("");
    let wanted = wanted.strip_prefix('/').unwrap_or(wanted);
    let name = ContainerName::parse(wanted).map_err(|_| {
        DockerError::bad_request(format!(
            "Invalid container name ({wanted}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))
    })?;
    let row = find(cx, id).await?;
    if row.name == name.as_str() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    if let Ok(other) = find(cx, name.as_str()).await {
        if other.name == name.as_str() {
            return Err(DockerError::conflict(format!(
                "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                name.as_str(),
                docker_id(&other.id)
            )));
        }
    }
    service::update(
        cx.state(),
        &row,
        service::Update {
            name: Some(name),
            ..Default::default()
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateBody {
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    restart_policy: Option<RestartPolicyBody>,
}

/// `POST /containers/{id}/update`: memory, CPUs and the restart policy.
pub async fn update(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    allow(cx, "container:update")?;
    let body: UpdateBody = call.json()?;
    let memory = match body.memory.unwrap_or(0) {
        0 => None,
        b if b < 0 => None,
        b => Some(MemoryMib::parse(&((b + (1 << 20) - 1) >> 20).to_string()).map_err(api)?),
    };
    let cpu = match body.nano_cpus.unwrap_or(0) {
        n if n <= 0 => None,
        n => Some(CpuLimit::parse(n as f64 / 1e9).map_err(api)?),
    };
    let restart = match &body.restart_policy {
        Some(r) => match r.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => {
                Some(RestartPolicy::parse(n, r.maximum_retry_count.unwrap_or(0)).map_err(api)?)
            }
            None => None,
        },
        None => None,
    };
    let row = find(cx, id).await?;
    if restart.as_ref().is_some_and(|r| r.name() != "no") && row.auto_remove {
        return Err(DockerError::bad_request(
            "Restart policy cannot be updated because AutoRemove is enabled for the container",
        ));
    }
    service::update(
        cx.state(),
        &row,
        service::Update {
            name: None,
            cpu,
            memory,
            restart,
        },
    )
    .await?;
    Ok(json(StatusCode::OK, &json!({"Warnings": []})))
}

/// When a `wait` is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    NotRunning,
    NextExit,
    Removed,
}

fn condition(raw: Option<&str>) -> Result<Condition, DockerError> {
    match raw.unwrap_or("") {
        "" | "not-running" => Ok(Condition::NotRunning),
        "next-exit" => Ok(Condition::NextExit),
        "removed" => Ok(Condition::Removed),
        other => Err(DockerError::bad_request(format!(
            "invalid condition: \"{other}\""
        ))),
    }
}

fn running_state(status: &str) -> bool {
    matches!(
        ContainerStatus::from_db(status),
        S::Running | S::Paused | S::Restarting | S::Creating
    )
}

/// The exit code `wait` reports once its condition holds.
async fn wait_for(
    cx: &Cx,
    mut rx: broadcast::Receiver<ContainerNotice>,
    first: ContainerRow,
    cond: Condition,
) -> i64 {
    let id = first.id.clone();
    let first_finish = first.finished_at;
    let mut last_code = first.exit_code;
    let mut seen_running = running_state(&first.status);
    if cond == Condition::NotRunning && !running_state(&first.status) {
        return first.exit_code.unwrap_or(0);
    }
    loop {
        let notice = next_notice(&mut rx, &id).await;
        if let Some(n) = &notice {
            if n.exit_code.is_some() {
                last_code = n.exit_code;
            }
            if n.removed {
                return last_code.unwrap_or(0);
            }
        }
        let row = match reload(cx, &id).await {
            Ok(Some(r)) => r,
            // Gone: whatever the condition, it will not run again.
            Ok(None) => return last_code.unwrap_or(0),
            Err(_) => continue,
        };
        if row.exit_code.is_some() {
            last_code = row.exit_code;
        }
        let running = running_state(&row.status);
        seen_running |= running;
        match cond {
            Condition::Removed => {}
            Condition::NotRunning if !running => return last_code.unwrap_or(0),
            Condition::NextExit
                if !running
                    && ContainerStatus::from_db(&row.status) != S::Created
                    && (seen_running || row.finished_at != first_finish) =>
            {
                return last_code.unwrap_or(0)
            }
            _ => {}
        }
    }
}

/// `POST /containers/{id}/wait?condition=`: the status line and headers go out at
/// once (the CLI waits for them before it starts the container); the body follows
/// when the condition holds.
pub async fn wait(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let cond = condition(call.query.get("condition"))?;
    allow(cx, "container:get_one")?;
    let rx = cx.state().watch.subscribe();
    let row = find(cx, id).await?;
    let cx2 = Cx {
        shared: cx.shared.clone(),
        ctx: cx.ctx.clone(),
    };
    let body = futures_util::stream::once(async move {
        let code = wait_for(&cx2, rx, row, cond).await;
        let bytes = serde_json::to_vec(&json!({"StatusCode": code, "Error": null}))
            .expect("JSON serialises");
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(bytes)))
    });
    let mut resp = hyper::Response::new(StreamBody::new(body).boxed());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// `GET /containers/{id}/top?ps_args=`.
pub async fn top(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    allow(cx, "container:top")?;
    let row = find(cx, id).await?;
    if !matches!(
        ContainerStatus::from_db(&row.status),
        S::Running | S::Paused
    ) {
        return Err(DockerError::conflict(not_running(&row)));
    }
    let instance = row
        .instance_id
        .as_deref()
        .and_then(|i| Uuid::parse_str(i).ok())
        .ok_or_else(|| DockerError::conflict(not_running(&row)))?;
    let container =
        Uuid::parse_str(&row.id).map_err(|e| DockerError::from(ApiError::Internal(e.into())))?;
    let ps_args = call
        .query
        .get("ps_args")
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    match cx
        .state()
        .agents
        .call(instance, None, Command::Top { container, ps_args })
        .await
    {
        Ok(Outcome::Top { titles, processes }) => Ok(json(
            StatusCode::OK,
            &json!({"Titles": titles, "Processes": processes}),
        )),
        Ok(other) => {
            Err(ApiError::Internal(anyhow::anyhow!("unexpected reply to top: {other:?}")).into())
        }
        Err(e) => Err(service::agent_error(e).into()),
    }
}

/// `DELETE /containers/{id}?force=`: answers once the container and its row are gone.
pub async fn remove(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    allow(cx, "container:delete")?;
    let force = call.query.bool("force", false);
    let row = find(cx, id).await?;
    let status = ContainerStatus::from_db(&row.status);
    if !force {
        match status {
            S::Running | S::Restarting => {
                return Err(DockerError::conflict(format!(
                    "cannot remove container \"{id}\": container is running: stop the container before removing or force remove"
                )))
            }
            S::Paused => {
                return Err(DockerError::conflict(format!(
                    "cannot remove container \"{id}\": container is paused: unpause and stop the container before removing or force remove"
                )))
            }
            S::Deleting => {
                return Err(DockerError::conflict(format!(
                    "removal of container {id} is already in progress"
                )))
            }
            _ => {}
        }
    }
    let mut rx = cx.state().watch.subscribe();
    // `docker rm -f` is the container owner's ordinary right (the engine kills it):
    // Zun's `container:delete_force` rule is about deleting in any state over the Zun
    // API, where the default is to refuse running containers.
    service::delete(cx.state(), &row, force, false).await?;
    loop {
        match reload(cx, &row.id).await? {
            None => break,
            Some(r) if ContainerStatus::from_db(&r.status) == S::Error => {
                return Err(DockerError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r.status_reason
                        .unwrap_or_else(|| "the container could not be removed".into()),
                ))
            }
            Some(_) => {}
        }
        if let Some(n) = next_notice(&mut rx, &row.id).await {
            if n.removed {
                break;
            }
        }
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> CreateBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_clis_run_body_translates_with_nulls_everywhere() {
        let b = body(json!({
            "Hostname": "", "User": "", "AttachStdin": false, "ExposedPorts": {"80/tcp": {}},
            "Tty": false, "OpenStdin": false, "StdinOnce": false, "Env": null,
            "Cmd": ["nginx", "-g", "daemon off;"], "Image": "alpine:3", "Volumes": {},
            "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": {},
            "HostConfig": {"Binds": null, "NetworkMode": "default",
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "AutoRemove": false,
                "CapAdd": null, "Privileged": false, "SecurityOpt": null, "PidMode": "",
                "UTSMode": "", "Memory": 536870912, "NanoCpus": 1500000000,
                "Devices": [], "DeviceCgroupRules": null, "DeviceRequests": null}
        }));
        let (asks, _) = host_access(&b).unwrap();
        assert!(asks.is_empty(), "{asks:?}");
        let new = translate(&b, Some("web")).unwrap();
        assert_eq!(new.name.as_str(), "web");
        assert_eq!(new.command, vec!["nginx", "-g", "daemon off;"]);
        assert_eq!(new.memory.mib(), 512);
        assert_eq!(new.cpu.cores(), 1.5);
        assert_eq!(
            new.ports,
            vec![PortBinding {
                host_port: Some(8080),
                container_port: 80,
                protocol: Protocol::Tcp
            }]
        );
        let config: DockerConfig =
            serde_json::from_str(new.docker_config.as_deref().unwrap()).unwrap();
        assert_eq!(config.image, "alpine:3");
        assert_eq!(config.exposed_ports, vec!["80/tcp"]);
    }

    #[test]
    fn cmd_and_entrypoint_may_be_strings() {
        let b = body(json!({"Image": "busybox", "Cmd": "echo hi", "Entrypoint": "/bin/sh"}));
        let new = translate(&b, None).unwrap();
        assert_eq!(new.command, vec!["echo hi"]);
        assert_eq!(new.entrypoint, Some(vec!["/bin/sh".to_owned()]));
    }

    #[test]
    fn publish_all_publishes_every_exposed_port_on_an_engine_chosen_port() {
        let b = body(
            json!({"Image": "busybox", "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            "HostConfig": {"PublishAllPorts": true, "PortBindings": {"80/tcp": [{"HostPort": ""}]}}}),
        );
        let mut ports = translate(&b, None).unwrap().ports;
        ports.sort_by_key(|p| p.container_port);
        assert_eq!(ports.len(), 2);
        assert!(ports.iter().all(|p| p.host_port.is_none()));
        assert_eq!(ports[0].protocol, Protocol::Udp);
    }

    #[test]
    fn every_host_option_is_named_with_the_rule_that_grants_it() {
        let cases = [
            (
                json!({"Privileged": true}),
                "--privileged",
                "container:create:privileged",
            ),
            (
                json!({"NetworkMode": "host"}),
                "--network host",
                "container:create:host_network",
            ),
            (
                json!({"NetworkMode": "container:abc"}),
                "--network container:abc",
                "container:create:host_network",
            ),
            (
                json!({"PidMode": "host"}),
                "--pid host",
                "container:create:host_namespaces",
            ),
            (
                json!({"IpcMode": "host"}),
                "--ipc host",
                "container:create:host_namespaces",
            ),
            (
                json!({"UTSMode": "host"}),
                "--uts host",
                "container:create:host_namespaces",
            ),
            (
                json!({"UsernsMode": "host"}),
                "--userns host",
                "container:create:host_namespaces",
            ),
            (
                json!({"Binds": ["/etc:/host-etc"]}),
                "-v /etc:/host-etc",
                "container:create:host_mounts",
            ),
            (
                json!({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}),
                "--mount type=bind",
                "container:create:host_mounts",
            ),
            (
                json!({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "", "CgroupPermissions": "rwm"}]}),
                "--device /dev/sda",
                "container:create:devices",
            ),
            (
                json!({"DeviceCgroupRules": ["c 1:3 rwm"]}),
                "--device-cgroup-rule",
                "container:create:devices",
            ),
            (
                json!({"DeviceRequests": [{"Count": -1}]}),
                "--gpus",
                "container:create:devices",
            ),
            (
                json!({"CapAdd": ["SYS_ADMIN"]}),
                "--cap-add SYS_ADMIN",
                "container:create:capabilities",
            ),
            (
                json!({"CapAdd": ["ALL"]}),
                "--cap-add ALL",
                "container:create:capabilities",
            ),
            (
                json!({"SecurityOpt": ["seccomp=unconfined"]}),
                "--security-opt seccomp=unconfined",
                "container:create:unconfined",
            ),
            (
                json!({"SecurityOpt": ["apparmor=unconfined"]}),
                "apparmor=unconfined",
                "container:create:unconfined",
            ),
            (
                json!({"SecurityOpt": ["label=disable"]}),
                "label=disable",
                "container:create:unconfined",
            ),
        ];
        for (host, option, rule) in cases {
            let b = body(json!({"Image": "x", "HostConfig": host}));
            let (asks, _) = host_access(&b).unwrap();
            assert_eq!(asks.len(), 1, "{option}: {asks:?}");
            assert!(asks[0].option.contains(option), "{option}: {asks:?}");
            assert_eq!(asks[0].rule, rule);
            let e = refuse(&asks[0]);
            assert_eq!(e.status, StatusCode::FORBIDDEN);
            assert!(
                e.message.contains(option) && e.message.contains(rule),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn default_capabilities_and_no_new_privileges_need_no_grant() {
        let b = body(json!({"Image": "x", "HostConfig": {
            "CapAdd": ["CAP_NET_BIND_SERVICE", "chown"],
            "SecurityOpt": ["no-new-privileges", "no-new-privileges:false"]}}));
        let (asks, p) = host_access(&b).unwrap();
        assert!(asks.is_empty(), "{asks:?}");
        assert_eq!(p.cap_add, vec!["NET_BIND_SERVICE", "CHOWN"]);
    }

    #[test]
    fn named_volumes_and_user_networks_are_not_offered() {
        for host in [
            json!({"Binds": ["data:/data"]}),
            json!({"NetworkMode": "mynet"}),
            json!({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}]}),
        ] {
            let b = body(json!({"Image": "x", "HostConfig": host}));
            assert_eq!(host_access(&b).unwrap_err().status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn status_strings_read_as_moby_writes_them() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(0)), "Less than a second");
        assert_eq!(human_duration(d(1)), "1 second");
        assert_eq!(human_duration(d(5)), "5 seconds");
        assert_eq!(human_duration(d(60)), "About a minute");
        assert_eq!(human_duration(d(150)), "2 minutes");
        assert_eq!(human_duration(d(3600)), "About an hour");
        assert_eq!(human_duration(d(3 * 3600)), "3 hours");
        assert_eq!(human_duration(d(3 * 86400)), "3 days");
        assert_eq!(human_duration(d(21 * 86400)), "3 weeks");

        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0)
            .unwrap()
            .naive_utc();
        let mut row = crate::db::instances::tests::container("c", "p", Some("i"));
        row.status = "Running".into();
        row.started_at = Some(t0);
        assert_eq!(status_text(&row, t0 + d(5)), "Up 5 seconds");
        row.status = "Paused".into();
        assert_eq!(status_text(&row, t0 + d(120)), "Up 2 minutes (Paused)");
        row.status = "Stopped".into();
        row.exit_code = Some(0);
        row.runtime_id = Some("r".into());
        row.finished_at = Some(t0);
        assert_eq!(status_text(&row, t0 + d(120)), "Exited (0) 2 minutes ago");
        row.status = "Created".into();
        assert_eq!(status_text(&row, t0), "Created");
    }

    #[test]
    fn wait_conditions_parse_as_moby_names_them() {
        assert_eq!(condition(None).unwrap(), Condition::NotRunning);
        assert_eq!(condition(Some("next-exit")).unwrap(), Condition::NextExit);
        assert_eq!(condition(Some("removed")).unwrap(), Condition::Removed);
        let e = condition(Some("bogus")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "invalid condition: \"bogus\"");
    }

    #[test]
    fn inspect_shows_published_ports_at_the_instance_and_exposed_ones_as_null() {
        let mut row = crate::db::instances::tests::container(
            "0b3f5c1e-7d2a-4e9b-8c6d-1f2e3a4b5c6d",
            "p",
            Some("i"),
        );
        row.docker_config = Some(
            serde_json::to_string(&DockerConfig {
                image: "busybox".into(),
                exposed_ports: vec!["80/tcp".into(), "443/tcp".into()],
                ..Default::default()
            })
            .unwrap(),
        );
        let ports = vec![PortRow {
            instance_id: "i".into(),
            protocol: "tcp".into(),
            host_port: 8080,
            container_id: row.id.clone(),
            container_port: 80,
        }];
        let v = inspect_view(&row, &ports, None);
        assert_eq!(
            v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
            "8080"
        );
        assert_eq!(v["NetworkSettings"]["Ports"]["443/tcp"], Value::Null);
        assert_eq!(v["Config"]["Image"], "busybox");
        assert_eq!(v["State"]["FinishedAt"], "0001-01-01T00:00:00Z");
        assert_eq!(v["Id"].as_str().unwrap().len(), 64);
    }
}
