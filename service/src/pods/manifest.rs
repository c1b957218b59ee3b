//! Pod manifests: a capsule template in any of the three accepted formats becomes one
//! [`PodSpec`].
//!
//! Entry point: [`parse`]`(&template) -> Result<`[`ParsedPod`]`, `[`ManifestError`]`>`;
//! then [`ParsedPod::into_spec`]`(uuid, generation)` for the spec an agent runs.
//!
//! Formats, detected from the document itself:
//! - **Zun capsule** — `kind: capsule` (or `Capsule`): `metadata{name, labels,
//!   annotations}`, `spec{restartPolicy, initContainers, containers, volumes}`. Container
//!   `command` and `args` are concatenated and replace the image's `CMD` (Zun's
//!   semantics); `resources.requests.cpu` in cores, `.memory` in MiB (a number, or a
//!   Kubernetes quantity string such as `"128Mi"`). Zun's `cinder` volumes are refused
//!   (Berth has no block storage); `emptyDir` and `configMap` volumes (below) are accepted.
//!   Unknown fields are refused where Zun's schema refuses them (the template, metadata,
//!   containers); unknown keys directly under `spec` are tolerated as Zun does.
//! - **Google container manifest** — `version: v1beta1 | v1beta2`: `id` (the pod name),
//!   `containers`, `volumes[{name, source}]` (no source: emptyDir), `restartPolicy` as an
//!   object (`{always: {}}`, `{onFailure: {}}`, `{never: {}}`). Container `command`
//!   replaces the image's `CMD` and `entrypoint` its `ENTRYPOINT`; `cpu` in millicores,
//!   `memory` in bytes. v1beta1's aliases `env[].key` and `volumeMounts[].path` are
//!   accepted in both versions.
//! - **Kubernetes v1 Pod** — `apiVersion: v1, kind: Pod`: `metadata{name, labels,
//!   annotations}`, `spec{restartPolicy, initContainers, containers, volumes}`; `command`
//!   replaces `ENTRYPOINT`, `args` replaces `CMD`; `resources.limits` (else `requests`)
//!   with quantities (`"500m"`, `0.5`, `"128Mi"`); liveness/readiness/startup probes
//!   with kubelet's defaults.
//!
//! Inline files (Berth's configMap-like volume, all formats but the Google manifest):
//! `configMap: {data: {KEY: CONTENT}, items: [{key, path}]}` — Berth has no ConfigMap
//! objects, so the data travels in the volume itself (a `name` is accepted and ignored).
//! Without `items` every key becomes a file of that name; with `items` only the listed
//! keys, at their `path` (relative, no `..`).
//!
//! Every published port: each app container's `ports[]` is published on the instance
//! through the pod's infra container (`hostPort` fixed, else chosen by the engine).
//!
//! Rules common to the formats: container names are DNS labels unique in the pod; at
//! least one app container; a `(containerPort, protocol)` or `(hostPort, protocol)`
//! appears once in the pod; every volume mount names a defined volume; volume names are
//! unique; `hostPath`/`hostDir` are refused (tenants may not mount host paths), as is
//! every other volume source; init containers may not have probes or ports. The pod's
//! cpu and memory are summed as Zun does: Σ app containers, then the max with each init
//! container. The annotation `berth.io/rollback-window-seconds` (0–3600, default 60)
//! sets how long after an update a crash loop or failing probe rolls it back.
//!
//! Errors name the field path, e.g. `spec.containers[1].ports[0].containerPort: must be
//! 1..65535, got 70000`.

use std::collections::{BTreeMap, HashMap};

use berth_proto::container::{PortBinding, Protocol};
use berth_proto::pod::{
    PodContainer, PodRestartPolicy, PodSpec, PodVolume, Probe, ProbeHandler, VolumeMount,
    VolumeSource,
};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Annotation (Zun and Kubernetes metadata) setting [`PodSpec::rollback_window_secs`].
pub const ANNOTATION_ROLLBACK_WINDOW: &str = "berth.io/rollback-window-seconds";

/// Default of [`PodSpec::rollback_window_secs`].
pub const DEFAULT_ROLLBACK_WINDOW_SECS: u32 = 60;

/// Largest total size of inline file content in one pod (bytes).
pub const MAX_INLINE_FILES_BYTES: usize = 1024 * 1024;

/// Which format a template was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// Zun capsule template (`kind: capsule`).
    ZunCapsule,
    /// Google container manifest `version: v1beta1`.
    GoogleV1beta1,
    /// Google container manifest `version: v1beta2`.
    GoogleV1beta2,
    /// Kubernetes `apiVersion: v1, kind: Pod`.
    KubernetesPodV1,
}

impl ManifestFormat {
    /// A short name for logs and views (`capsule`, `v1beta1`, `v1beta2`, `v1/Pod`).
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestFormat::ZunCapsule => "capsule",
            ManifestFormat::GoogleV1beta1 => "v1beta1",
            ManifestFormat::GoogleV1beta2 => "v1beta2",
            ManifestFormat::KubernetesPodV1 => "v1/Pod",
        }
    }
}

/// A template that parsed: the pod's spec (without uuid and generation yet), its name,
/// and the resources it needs on one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedPod {
    /// The pod's name from the template (Kubernetes `metadata.name`, Google `id`, Zun
    /// `metadata.name`). `None` only for a Zun template without a name: call
    /// [`default_name`] (or pick one) and pass it on.
    pub name: Option<String>,
    /// The format detected.
    pub format: ManifestFormat,
    /// The spec with `uuid` nil, `generation` 0 and `name` as above (empty when `None`);
    /// use [`ParsedPod::into_spec`] to fill them in.
    pub spec: PodSpec,
    /// Cores the pod needs (Zun's sum; 0 when no container states any).
    pub cpu: f64,
    /// MiB the pod needs (Zun's sum; 0 when no container states any).
    pub memory_mib: i64,
    /// Zun's `availabilityZone`, if given.
    pub availability_zone: Option<String>,
    /// The template's metadata annotations (Zun and Kubernetes; empty otherwise).
    pub annotations: BTreeMap<String, String>,
}

impl ParsedPod {
    /// The spec for an agent: `uuid` and `generation` set, and the name — the template's,
    /// else [`default_name`]`(uuid)`.
    pub fn into_spec(self, uuid: Uuid, generation: i64) -> PodSpec {
        let name = self.name.unwrap_or_else(|| default_name(uuid));
        PodSpec {
            uuid,
            name,
            generation,
            ..self.spec
        }
    }
}

/// The name Berth gives a capsule whose template has none: `capsule-<first 8 hex of
/// the uuid>`.
pub fn default_name(uuid: Uuid) -> String {
    format!("capsule-{}", &uuid.simple().to_string()[..8])
}

/// Why a template was refused: the field path (`spec.containers[1].image`, or
/// `template` for the document as a whole) and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    /// Dotted path of the offending field, with `[i]` for list items.
    pub path: String,
    /// What was wrong and what is accepted.
    pub message: String,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError {
        path: path.to_owned(),
        message: message.into(),
    })
}

/// Parses a capsule template in any of the three formats (see the module docs).
///
/// `template` is the JSON value of the request's `template`: an object, or a string
/// holding a JSON or YAML document (Zun accepts both).
pub fn parse(template: &Value) -> Result<ParsedPod, ManifestError> {
    let owned;
    let doc = match template {
        Value::String(text) => {
            owned = parse_document(text)?;
            &owned
        }
        other => other,
    };
    let top = Obj::new(doc, "")?;
    let kind = top.opt_str("kind")?;
    let version = top.opt_str("version")?;
    let draft = match (kind.as_deref(), version.as_deref()) {
        (Some("capsule" | "Capsule"), _) => zun::parse(&top)?,
        (Some("Pod"), _) => {
            match top.opt_str("apiVersion")?.as_deref() {
                Some("v1") => {}
                Some(other) => {
                    return err("apiVersion", format!("must be v1 for kind Pod, got {other:?}"))
                }
                None => return err("apiVersion", "is required: give apiVersion: v1 for kind Pod"),
            }
            kube::parse(&top)?
        }
        (Some(other), _) => {
            return err(
                "kind",
                format!(
                    "unknown kind {other:?}: give kind: capsule (Zun), kind: Pod with apiVersion: v1 (Kubernetes), or version: v1beta2 without kind (Google container manifest)"
                ),
            )
        }
        (None, Some(v @ ("v1beta1" | "v1beta2"))) => google::parse(&top, v == "v1beta1")?,
        (None, Some(other)) => {
            return err(
                "version",
                format!("unknown container manifest version {other:?}: use v1beta1 or v1beta2"),
            )
        }
        (None, None) => {
            return err(
                "kind",
                "is required: give kind: capsule (Zun), kind: Pod with apiVersion: v1 (Kubernetes), or version: v1beta2 (Google container manifest)",
            )
        }
    };
    finish(draft)
}

/// Parses a JSON or YAML document (the text of a template or manifest file).
pub fn parse_document(text: &str) -> Result<Value, ManifestError> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    serde_yaml::from_str::<Value>(text).or_else(|e| {
        err(
            "template",
            format!("is neither valid JSON nor valid YAML: {e}"),
        )
    })
}

// ---------------------------------------------------------------------------------------
// Format-neutral drafts: each format parses into these; `finish` checks the rules that
// span containers and volumes and builds the spec.

struct PodDraft {
    format: ManifestFormat,
    name: Option<String>,
    restart_policy: PodRestartPolicy,
    init: Vec<ContainerDraft>,
    containers: Vec<ContainerDraft>,
    volumes: Vec<(PodVolume, String)>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    rollback_window_secs: u32,
    availability_zone: Option<String>,
}

struct ContainerDraft {
    path: String,
    container: PodContainer,
    /// Path of each volume mount, aligned with `container.volume_mounts`.
    mount_paths: Vec<String>,
    ports: Vec<PortDraft>,
    /// The container's CPU and memory for Zun's sums (cores, MiB).
    cpu: f64,
    memory_mib: i64,
}

impl ContainerDraft {
    /// The draft of the container parsed from `o`; Zun's sums take its CPU and memory.
    fn new(
        o: &Obj,
        container: PodContainer,
        mount_paths: Vec<String>,
        ports: Vec<PortDraft>,
    ) -> Self {
        ContainerDraft {
            path: o.path.clone(),
            cpu: container.cpu,
            memory_mib: container.memory_mib,
            container,
            mount_paths,
            ports,
        }
    }
}

struct PortDraft {
    path: String,
    name: Option<String>,
    container_port: u16,
    host_port: Option<u16>,
    protocol: Protocol,
}

fn finish(d: PodDraft) -> Result<ParsedPod, ManifestError> {
    // Container names, unique over init and app containers.
    let mut names: HashMap<&str, &str> = HashMap::new();
    for c in d.init.iter().chain(&d.containers) {
        if let Some(first) = names.insert(&c.container.name, &c.path) {
            return err(
                &format!("{}.name", c.path),
                format!(
                    "duplicate container name {:?} (also {first}): names must be unique in the pod",
                    c.container.name
                ),
            );
        }
    }
    // Volumes: unique names.
    let mut volumes: HashMap<&str, &str> = HashMap::new();
    for (v, path) in &d.volumes {
        if let Some(first) = volumes.insert(&v.name, path) {
            return err(
                &format!("{path}.name"),
                format!("duplicate volume name {:?} (also {first})", v.name),
            );
        }
    }
    let files_bytes: usize = d
        .volumes
        .iter()
        .map(|(v, _)| match &v.source {
            VolumeSource::Files { files } => files.values().map(String::len).sum(),
            VolumeSource::EmptyDir => 0,
        })
        .sum();
    if files_bytes > MAX_INLINE_FILES_BYTES {
        let path = if d.format == ManifestFormat::GoogleV1beta1
            || d.format == ManifestFormat::GoogleV1beta2
        {
            "volumes"
        } else {
            "spec.volumes"
        };
        return err(
            path,
            format!(
                "inline file content totals {files_bytes} bytes; at most {MAX_INLINE_FILES_BYTES} bytes are allowed per pod"
            ),
        );
    }
    // Mounts: a defined volume, a mount path used once per container.
    for c in d.init.iter().chain(&d.containers) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, (m, path)) in c
            .container
            .volume_mounts
            .iter()
            .zip(&c.mount_paths)
            .enumerate()
        {
            if !volumes.contains_key(m.name.as_str()) {
                return err(
                    &format!("{path}.name"),
                    format!(
                        "no volume named {:?} in the pod's volumes: define it there (emptyDir or configMap) or fix the name",
                        m.name
                    ),
                );
            }
            if let Some(j) = seen.insert(&m.mount_path, i) {
                return err(
                    &format!("{path}.mountPath"),
                    format!(
                        "{:?} is already mounted by {}.volumeMounts[{j}]",
                        m.mount_path, c.path
                    ),
                );
            }
        }
    }
    // Ports over the app containers (they share one network namespace).
    let mut by_container: HashMap<(u16, Protocol), &str> = HashMap::new();
    let mut by_host: HashMap<(u16, Protocol), &str> = HashMap::new();
    let mut by_name: HashMap<&str, &str> = HashMap::new();
    let mut ports = Vec::new();
    for p in d.containers.iter().flat_map(|c| &c.ports) {
        if let Some(first) = by_container.insert((p.container_port, p.protocol), &p.path) {
            return err(
                &format!("{}.containerPort", p.path),
                format!(
                    "port {}/{} is already declared by {first}: the pod's containers share one network namespace, so each port can be used once",
                    p.container_port,
                    p.protocol.as_str()
                ),
            );
        }
        if let Some(hp) = p.host_port {
            if let Some(first) = by_host.insert((hp, p.protocol), &p.path) {
                return err(
                    &format!("{}.hostPort", p.path),
                    format!(
                        "host port {hp}/{} is already used by {first}",
                        p.protocol.as_str()
                    ),
                );
            }
        }
        if let Some(n) = &p.name {
            if let Some(first) = by_name.insert(n, &p.path) {
                return err(
                    &format!("{}.name", p.path),
                    format!("duplicate port name {n:?} (also {first})"),
                );
            }
        }
        ports.push(PortBinding {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: p.protocol,
        });
    }
    // Zun's sums: Σ app containers, then the max with each init container.
    let mut cpu: f64 = d.containers.iter().map(|c| c.cpu).sum();
    let mut memory_mib: i64 = d.containers.iter().map(|c| c.memory_mib).sum();
    for c in &d.init {
        cpu = cpu.max(c.cpu);
        memory_mib = memory_mib.max(c.memory_mib);
    }
    // Avoid 0.30000000000000004 in views and quota arithmetic: millicore precision.
    cpu = (cpu * 1000.0).round() / 1000.0;
    let spec = PodSpec {
        uuid: Uuid::nil(),
        name: d.name.clone().unwrap_or_default(),
        generation: 0,
        restart_policy: d.restart_policy,
        init_containers: d.init.into_iter().map(|c| c.container).collect(),
        containers: d.containers.into_iter().map(|c| c.container).collect(),
        volumes: d.volumes.into_iter().map(|(v, _)| v).collect(),
        ports,
        labels: d.labels,
        rollback_window_secs: d.rollback_window_secs,
    };
    Ok(ParsedPod {
        name: d.name,
        format: d.format,
        spec,
        cpu,
        memory_mib,
        availability_zone: d.availability_zone,
        annotations: d.annotations,
    })
}

// ---------------------------------------------------------------------------------------
// Walking JSON with paths.

/// An object at a path.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &str) -> Result<Obj<'a>, ManifestError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                path: path.to_owned(),
            }),
            other => err(
                if path.is_empty() { "template" } else { path },
                format!("must be an object, got {}", type_name(other)),
            ),
        }
    }

    fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`; an explicit `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Refuses keys outside `allowed` and `ignored`; `refused` keys get their own message.
    fn check(
        &self,
        allowed: &[&str],
        ignored: &[&str],
        refused: &[(&str, &str)],
    ) -> Result<(), ManifestError> {
        for key in self.map.keys() {
            if let Some((_, why)) = refused.iter().find(|(k, _)| k == key) {
                return err(&self.at(key), *why);
            }
            if !allowed.contains(&key.as_str()) && !ignored.contains(&key.as_str()) {
                return err(
                    &self.at(key),
                    format!(
                        "unknown field; the fields accepted here are: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => err(
                &self.at(key),
                format!("must be a string, got {}", type_name(other)),
            ),
        }
    }

    fn req_str(&self, key: &str) -> Result<String, ManifestError> {
        match self.opt_str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => err(&self.at(key), "must not be empty"),
            None => err(&self.at(key), "is required"),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => err(
                &self.at(key),
                format!("must be true or false, got {}", type_name(other)),
            ),
        }
    }

    fn opt_int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ManifestError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(n) => err(&self.at(key), format!("must be {min}..{max}, got {n}")),
            None => err(
                &self.at(key),
                format!("must be an integer {min}..{max}, got {}", show(v)),
            ),
        }
    }

    fn opt_obj(&self, key: &str) -> Result<Option<Obj<'a>>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Obj::new(v, &self.at(key)).map(Some),
        }
    }

    /// An object whose presence matters more than its content (`emptyDir: {}`): a bare
    /// YAML key (`emptyDir:`) gives `null`, which reads as an empty object.
    fn marker_obj(&self, key: &str) -> Result<Option<Obj<'a>>, ManifestError> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(Obj {
                map: EMPTY.get_or_init(Map::new),
                path: self.at(key),
            })),
            Some(v) => Obj::new(v, &self.at(key)).map(Some),
        }
    }

    /// The items of a list, each with its path.
    fn opt_list(&self, key: &str) -> Result<Option<Vec<(&'a Value, String)>>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v, format!("{}[{i}]", self.at(key))))
                    .collect(),
            )),
            Some(other) => err(
                &self.at(key),
                format!("must be a list, got {}", type_name(other)),
            ),
        }
    }

    fn opt_strings(&self, key: &str) -> Result<Option<Vec<String>>, ManifestError> {
        let Some(items) = self.opt_list(key)? else {
            return Ok(None);
        };
        items
            .into_iter()
            .map(|(v, path)| match v {
                Value::String(s) => Ok(s.clone()),
                other => err(
                    &path,
                    format!("must be a string, got {} (quote it)", type_name(other)),
                ),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn opt_string_map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>, ManifestError> {
        let Some(o) = self.opt_obj(key)? else {
            return Ok(None);
        };
        let mut out = BTreeMap::new();
        for (k, v) in o.map {
            match v {
                Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                other => {
                    return err(
                        &o.at(k),
                        format!("must be a string, got {} (quote it)", type_name(other)),
                    )
                }
            }
        }
        Ok(Some(out))
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Field parsers shared by the formats.

/// DNS label: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS subdomain: ≤253 characters, dot-separated DNS labels.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn dns_label(s: String, path: &str, what: &str) -> Result<String, ManifestError> {
    if is_dns_label(&s) {
        Ok(s)
    } else {
        err(
            path,
            format!(
                "{what} {s:?} is not a DNS label: 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
            ),
        )
    }
}

fn image(o: &Obj) -> Result<String, ManifestError> {
    let s = o.req_str("image")?;
    crate::domain::ImageRef::parse(&s)
        .map(|i| i.as_str().to_owned())
        .or_else(|e| err(&o.at("image"), e.0))
}

fn restart_policy_str(s: &str, path: &str) -> Result<PodRestartPolicy, ManifestError> {
    match s {
        "Always" => Ok(PodRestartPolicy::Always),
        "OnFailure" => Ok(PodRestartPolicy::OnFailure),
        "Never" => Ok(PodRestartPolicy::Never),
        other => err(
            path,
            format!("must be Always, OnFailure or Never, got {other:?}"),
        ),
    }
}

fn port_number(v: &Value, path: &str) -> Result<u16, ManifestError> {
    match v.as_i64() {
        Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => err(path, format!("must be 1..65535, got {}", show(v))),
    }
}

fn protocol(o: &Obj) -> Result<Protocol, ManifestError> {
    match o.opt_str("protocol")?.as_deref() {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some(other) => err(
            &o.at("protocol"),
            format!("must be TCP or UDP, got {other:?}"),
        ),
    }
}

/// `ports[]` of a container (all formats share the shape).
fn ports(o: &Obj, for_init: bool) -> Result<Vec<PortDraft>, ManifestError> {
    let Some(items) = o.opt_list("ports")? else {
        return Ok(Vec::new());
    };
    if for_init && !items.is_empty() {
        return err(
            &o.at("ports"),
            "init containers cannot publish ports: declare the port on an app container",
        );
    }
    let mut out = Vec::new();
    for (v, path) in items {
        let p = Obj::new(v, &path)?;
        p.check(
            &["name", "containerPort", "hostPort", "protocol"],
            &[],
            &[("hostIP", "is not supported: Berth publishes ports on the instance's addresses; remove hostIP")],
        )?;
        let name = match p.opt_str("name")? {
            Some(n) => Some(dns_label(n, &p.at("name"), "port name")?),
            None => None,
        };
        let container_port = match p.get("containerPort") {
            Some(v) => port_number(v, &p.at("containerPort"))?,
            None => return err(&p.at("containerPort"), "is required"),
        };
        let host_port = match p.get("hostPort") {
            // Kubernetes writes 0 for "no host port".
            Some(v) if v.as_i64() == Some(0) => None,
            Some(v) => Some(port_number(v, &p.at("hostPort"))?),
            None => None,
        };
        let protocol = protocol(&p)?;
        out.push(PortDraft {
            path,
            name,
            container_port,
            host_port,
            protocol,
        });
    }
    Ok(out)
}

/// `volumeMounts[]`; with `google`, v1beta1's `path` stands for `mountPath` and `mountType` is read.
fn volume_mounts(o: &Obj, google: bool) -> Result<(Vec<VolumeMount>, Vec<String>), ManifestError> {
    let Some(items) = o.opt_list("volumeMounts")? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut mounts = Vec::new();
    let mut paths = Vec::new();
    for (v, path) in items {
        let m = Obj::new(v, &path)?;
        if google {
            m.check(
                &["name", "mountPath", "path", "readOnly", "mountType"],
                &[],
                &[],
            )?;
            if let Some(t) = m.opt_str("mountType")? {
                if t != "LOCAL" {
                    return err(
                        &m.at("mountType"),
                        format!("{t:?} is refused: tenants may not mount host paths; only LOCAL (the pod's own volumes) is accepted"),
                    );
                }
            }
        } else {
            m.check(
                &["name", "mountPath", "readOnly"],
                &[],
                &[
                    ("subPath", "is not supported: mount the whole volume"),
                    ("subPathExpr", "is not supported: mount the whole volume"),
                    ("mountPropagation", "is not supported"),
                ],
            )?;
        }
        let name = m.req_str("name")?;
        let mount_path = match (m.opt_str("mountPath")?, google) {
            (Some(p), _) => (p, m.at("mountPath")),
            (None, true) if m.has("path") => (m.req_str("path")?, m.at("path")),
            _ => return err(&m.at("mountPath"), "is required"),
        };
        let (mount_path, mp_path) = mount_path;
        if !mount_path.starts_with('/') {
            return err(
                &mp_path,
                format!("must be an absolute path, got {mount_path:?}"),
            );
        }
        if mount_path.len() > 512 || mount_path.contains(':') {
            return err(
                &mp_path,
                "must be at most 512 characters and contain no ':'",
            );
        }
        let read_only = m.opt_bool("readOnly")?.unwrap_or(false);
        mounts.push(VolumeMount {
            name,
            mount_path,
            read_only,
        });
        paths.push(path);
    }
    Ok((mounts, paths))
}

/// `env` as a list of `{name, value}` (Kubernetes, Google; `key` alias when `google`).
fn env_list(o: &Obj, google: bool) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut env = BTreeMap::new();
    let Some(items) = o.opt_list("env")? else {
        return Ok(env);
    };
    for (v, path) in items {
        let e = Obj::new(v, &path)?;
        if google {
            e.check(&["name", "key", "value"], &[], &[])?;
        } else {
            e.check(
                &["name", "value"],
                &[],
                &[("valueFrom", "is not supported: Berth has no secrets or field references here; give the value inline")],
            )?;
        }
        let name = match (e.opt_str("name")?, google) {
            (Some(n), _) => n,
            (None, true) if e.has("key") => e.req_str("key")?,
            _ => return err(&e.at("name"), "is required"),
        };
        env_name(&name, &e.at("name"))?;
        let value = e.opt_str("value")?.unwrap_or_default();
        env.insert(name, value);
    }
    Ok(env)
}

fn env_name(name: &str, path: &str) -> Result<(), ManifestError> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return err(
            path,
            format!("{name:?} is not a valid environment variable name: non-empty, without '='"),
        );
    }
    Ok(())
}

/// A CPU quantity in cores: a number, or a string like `"500m"`, `"0.5"`, `"2"`.
fn cpu_quantity(v: &Value, path: &str) -> Result<f64, ManifestError> {
    let cores = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<u64>().ok().map(|m| m as f64 / 1000.0),
            None => s.parse::<f64>().ok(),
        },
        _ => None,
    };
    match cores {
        Some(c) if c.is_finite() && (0.0..=1024.0).contains(&c) => Ok(c),
        _ => err(
            path,
            format!(
                "must be a CPU quantity in cores such as 0.5, \"500m\" or \"2\", got {}",
                show(v)
            ),
        ),
    }
}

/// A memory quantity in bytes: a number, or a string like `"128Mi"`, `"1G"`, `"5e8"`.
fn memory_quantity_bytes(v: &Value, path: &str) -> Result<f64, ManifestError> {
    let bytes = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            const SUFFIXES: [(&str, f64); 12] = [
                ("Ki", 1024.0),
                ("Mi", 1048576.0),
                ("Gi", 1073741824.0),
                ("Ti", 1099511627776.0),
                ("Pi", 1125899906842624.0),
                ("Ei", 1152921504606846976.0),
                ("k", 1e3),
                ("M", 1e6),
                ("G", 1e9),
                ("T", 1e12),
                ("P", 1e15),
                ("E", 1e18),
            ];
            let (num, mult) = SUFFIXES
                .iter()
                .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
                .unwrap_or((s.as_str(), 1.0));
            num.parse::<f64>().ok().map(|n| n * mult)
        }
        _ => None,
    };
    match bytes {
        Some(b) if (0.0..=1024.0 * 1099511627776.0).contains(&b) => Ok(b),
        _ => err(
            path,
            format!(
                "must be a memory quantity such as \"128Mi\", \"1Gi\" or a number of bytes, got {}",
                show(v)
            ),
        ),
    }
}

/// Bytes → MiB, rounded up; a non-zero amount must reach the engine's 6 MiB minimum.
fn mib_from_bytes(bytes: f64, path: &str) -> Result<i64, ManifestError> {
    let mib = (bytes / 1048576.0).ceil() as i64;
    if mib != 0 && mib < 6 {
        return err(
            path,
            format!("must be at least 6Mi (the engine's minimum), got {mib}Mi"),
        );
    }
    Ok(mib)
}

/// A probe; `ports` resolves named ports of the same container.
fn probe(
    o: &Obj,
    key: &str,
    ports: &[PortDraft],
    liveness_like: bool,
) -> Result<Option<Probe>, ManifestError> {
    let Some(p) = o.opt_obj(key)? else {
        return Ok(None);
    };
    p.check(
        &[
            "exec",
            "httpGet",
            "tcpSocket",
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "successThreshold",
            "failureThreshold",
        ],
        &["terminationGracePeriodSeconds"],
        &[("grpc", "is not supported: use exec, httpGet or tcpSocket")],
    )?;
    let kinds: Vec<&str> = ["exec", "httpGet", "tcpSocket"]
        .into_iter()
        .filter(|k| p.get(k).is_some())
        .collect();
    let handler = match kinds.as_slice() {
        [] => {
            return err(
                &p.path,
                "needs exactly one of exec, httpGet or tcpSocket; none given",
            )
        }
        [_, second, ..] => {
            return err(
                &p.at(second),
                format!(
                    "a probe has exactly one of exec, httpGet or tcpSocket; {} are given",
                    kinds.join(" and ")
                ),
            )
        }
        ["exec"] => {
            let e = p.opt_obj("exec")?.expect("present");
            e.check(&["command"], &[], &[])?;
            match e.opt_strings("command")? {
                Some(c) if !c.is_empty() => ProbeHandler::Exec { command: c },
                _ => {
                    return err(
                        &e.at("command"),
                        "is required: the command to run, e.g. [cat, /tmp/healthy]",
                    )
                }
            }
        }
        ["httpGet"] => {
            let h = p.opt_obj("httpGet")?.expect("present");
            h.check(&["path", "port", "host", "scheme", "httpHeaders"], &[], &[])?;
            if let Some(scheme) = h.opt_str("scheme")? {
                if scheme != "HTTP" {
                    return err(
                        &h.at("scheme"),
                        format!("only HTTP is supported, got {scheme:?}"),
                    );
                }
            }
            if h.opt_list("httpHeaders")?.is_some_and(|l| !l.is_empty()) {
                return err(&h.at("httpHeaders"), "is not supported: remove the headers");
            }
            let path = h.opt_str("path")?.unwrap_or_else(|| "/".to_owned());
            if !path.starts_with('/') {
                return err(&h.at("path"), format!("must start with '/', got {path:?}"));
            }
            let port = probe_port(&h, ports)?;
            let host = h.opt_str("host")?.filter(|s| !s.is_empty());
            ProbeHandler::HttpGet { path, port, host }
        }
        [_] => {
            let t = p.opt_obj("tcpSocket")?.expect("present");
            t.check(
                &["port"],
                &[],
                &[(
                    "host",
                    "is not supported: the probe connects to the pod's own address",
                )],
            )?;
            ProbeHandler::TcpSocket {
                port: probe_port(&t, ports)?,
            }
        }
    };
    let secs = |k: &str, min: i64, default: u32| -> Result<u32, ManifestError> {
        Ok(p.opt_int(k, min, 86_400)?.map_or(default, |n| n as u32))
    };
    let success_threshold = secs("successThreshold", 1, 1)?;
    if liveness_like && success_threshold != 1 {
        return err(
            &p.at("successThreshold"),
            format!("must be 1 for liveness and startup probes, got {success_threshold}"),
        );
    }
    Ok(Some(Probe {
        handler,
        initial_delay_secs: secs("initialDelaySeconds", 0, 0)?,
        period_secs: secs("periodSeconds", 1, 10)?,
        timeout_secs: secs("timeoutSeconds", 1, 1)?,
        success_threshold,
        failure_threshold: secs("failureThreshold", 1, 3)?,
    }))
}

fn probe_port(h: &Obj, ports: &[PortDraft]) -> Result<u16, ManifestError> {
    match h.get("port") {
        None => err(&h.at("port"), "is required"),
        Some(Value::String(name)) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .map_or_else(
                || err(&h.at("port"), format!("no port named {name:?} in this container's ports: give a number or a declared port name")),
                Ok,
            ),
        Some(v) => port_number(v, &h.at("port")),
    }
}

/// `volumes[]` in Kubernetes' shape (also Zun's spec, which adds `cinder`).
fn kube_volumes(spec: &Obj, zun: bool) -> Result<Vec<(PodVolume, String)>, ManifestError> {
    let Some(items) = spec.opt_list("volumes")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (v, path) in items {
        let o = Obj::new(v, &path)?;
        let name = dns_label(o.req_str("name")?, &o.at("name"), "volume name")?;
        let sources: Vec<&String> = o.map.keys().filter(|k| *k != "name").collect();
        let source =
            match sources.as_slice() {
                [] => VolumeSource::EmptyDir,
                [_, second, ..] => {
                    return err(
                        &o.at(second),
                        "a volume has exactly one source (emptyDir or configMap)",
                    )
                }
                [only] => match only.as_str() {
                    "emptyDir" => {
                        let e = o.marker_obj("emptyDir")?.expect("present");
                        e.check(
                            &["medium"],
                            &[],
                            &[(
                                "sizeLimit",
                                "is not supported: Berth does not limit emptyDir sizes; remove it",
                            )],
                        )?;
                        if let Some(m) = e.opt_str("medium")? {
                            if !m.is_empty() {
                                return err(
                                    &e.at("medium"),
                                    format!(
                                        "{m:?} is not supported: only the default (disk) medium"
                                    ),
                                );
                            }
                        }
                        VolumeSource::EmptyDir
                    }
                    "configMap" => {
                        config_map(&o.opt_obj("configMap")?.ok_or_else(|| ManifestError {
                            path: o.at("configMap"),
                            message: "must be an object with data (and optionally items)".into(),
                        })?)?
                    }
                    "hostPath" => return err(
                        &o.at("hostPath"),
                        "is refused: tenants may not mount host paths; use emptyDir or configMap",
                    ),
                    "cinder" if zun => return err(
                        &o.at("cinder"),
                        "is not supported: Berth has no block storage; use emptyDir or configMap",
                    ),
                    other => {
                        return err(
                            &o.at(other),
                            format!(
                            "volume source {other:?} is not supported: use emptyDir or configMap"
                        ),
                        )
                    }
                },
            };
        out.push((PodVolume { name, source }, path));
    }
    Ok(out)
}

/// Berth's inline configMap: `{name?, data: {KEY: CONTENT}, items?: [{key, path}]}`.
fn config_map(c: &Obj) -> Result<VolumeSource, ManifestError> {
    c.check(
        &["name", "data", "items", "defaultMode", "optional"],
        &[],
        &[],
    )?;
    let Some(data) = c.opt_string_map("data")? else {
        return err(
            &c.at("data"),
            "is required: Berth has no ConfigMap objects, so give the files inline as data: {FILENAME: CONTENT}",
        );
    };
    for k in data.keys() {
        if k.is_empty()
            || k.len() > 253
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || k == "."
            || k == ".."
        {
            return err(
                &format!("{}.{k}", c.at("data")),
                "a key is 1 to 253 characters of letters, digits, '-', '_' and '.' (and not '.' or '..')",
            );
        }
    }
    let mut files = BTreeMap::new();
    match c.opt_list("items")? {
        None => files = data,
        Some(items) => {
            for (v, path) in items {
                let i = Obj::new(v, &path)?;
                i.check(&["key", "path"], &["mode"], &[])?;
                let key = i.req_str("key")?;
                let Some(content) = data.get(&key) else {
                    return err(&i.at("key"), format!("no key {key:?} in data"));
                };
                let file = i.req_str("path")?;
                relative_path(&file, &i.at("path"))?;
                if files.insert(file.clone(), content.clone()).is_some() {
                    return err(&i.at("path"), format!("{file:?} is given twice"));
                }
            }
        }
    }
    Ok(VolumeSource::Files { files })
}

fn relative_path(p: &str, path: &str) -> Result<(), ManifestError> {
    if p.is_empty()
        || p.starts_with('/')
        || p.split('/').any(|seg| seg == ".." || seg.is_empty())
        || p.contains('\0')
    {
        return err(
            path,
            format!("must be a relative path without '..' or empty segments, got {p:?}"),
        );
    }
    Ok(())
}

fn labels(meta: &Obj) -> Result<BTreeMap<String, String>, ManifestError> {
    let labels = meta.opt_string_map("labels")?.unwrap_or_default();
    for k in labels.keys() {
        if k.starts_with("berth.") || k.is_empty() {
            return err(
                &format!("{}.{k}", meta.at("labels")),
                "label keys starting with 'berth.' are reserved for Berth; choose another key",
            );
        }
    }
    Ok(labels)
}

fn rollback_window(
    meta: &Obj,
    annotations: &BTreeMap<String, String>,
) -> Result<u32, ManifestError> {
    match annotations.get(ANNOTATION_ROLLBACK_WINDOW) {
        None => Ok(DEFAULT_ROLLBACK_WINDOW_SECS),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n <= 3600 => Ok(n),
            _ => err(
                &format!("{}.{ANNOTATION_ROLLBACK_WINDOW}", meta.at("annotations")),
                format!("must be a number of seconds 0..3600 (0 disables rollback), got {s:?}"),
            ),
        },
    }
}

/// A list of containers at `key`, each parsed by `one(obj, for_init)`.
fn containers(
    o: &Obj,
    key: &str,
    for_init: bool,
    one: impl Fn(&Obj, bool, usize) -> Result<ContainerDraft, ManifestError>,
) -> Result<Vec<ContainerDraft>, ManifestError> {
    let items = o.opt_list(key)?.unwrap_or_default();
    if !for_init && items.is_empty() {
        return err(&o.at(key), "is required: give at least one container");
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, (v, path))| one(&Obj::new(v, &path)?, for_init, i))
        .collect()
}

// ---------------------------------------------------------------------------------------

mod kube {
    //! Kubernetes v1 Pod.
    use super::*;

    pub(super) fn parse(top: &Obj) -> Result<PodDraft, ManifestError> {
        top.check(
            &["apiVersion", "kind", "metadata", "spec"],
            &["status"],
            &[],
        )?;
        let Some(meta) = top.opt_obj("metadata")? else {
            return err("metadata", "is required: give metadata.name");
        };
        meta.check(
            &["name", "namespace", "labels", "annotations"],
            &[
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "selfLink",
                "managedFields",
            ],
            &[("generateName", "is not supported: give metadata.name")],
        )?;
        let name = meta.req_str("name")?;
        if !is_dns_subdomain(&name) {
            return err(
                "metadata.name",
                format!("{name:?} is not a DNS subdomain: lower-case letters, digits, '-' and '.', at most 253 characters"),
            );
        }
        let labels = labels(&meta)?;
        let annotations = meta.opt_string_map("annotations")?.unwrap_or_default();
        let rollback_window_secs = rollback_window(&meta, &annotations)?;
        let Some(spec) = top.opt_obj("spec")? else {
            return err("spec", "is required: give spec.containers");
        };
        const HOST: &str = "is refused: tenants may not use the instance's namespaces; remove it";
        spec.check(
            &["containers", "initContainers", "restartPolicy", "volumes"],
            &[
                "terminationGracePeriodSeconds",
                "dnsPolicy",
                "schedulerName",
                "enableServiceLinks",
                "serviceAccountName",
                "serviceAccount",
                "automountServiceAccountToken",
                "priority",
                "tolerations",
                "securityContext",
            ],
            &[("hostNetwork", HOST), ("hostPID", HOST), ("hostIPC", HOST)],
        )?;
        if spec
            .opt_obj("securityContext")?
            .is_some_and(|s| !s.map.is_empty())
        {
            return err(
                "spec.securityContext",
                "is not supported: remove it (an empty object is accepted)",
            );
        }
        let restart_policy = match spec.opt_str("restartPolicy")? {
            Some(s) => restart_policy_str(&s, "spec.restartPolicy")?,
            None => PodRestartPolicy::Always,
        };
        Ok(PodDraft {
            format: ManifestFormat::KubernetesPodV1,
            name: Some(name),
            restart_policy,
            init: containers(&spec, "initContainers", true, container)?,
            containers: containers(&spec, "containers", false, container)?,
            volumes: kube_volumes(&spec, false)?,
            labels,
            annotations,
            rollback_window_secs,
            availability_zone: None,
        })
    }

    fn container(o: &Obj, for_init: bool, _: usize) -> Result<ContainerDraft, ManifestError> {
        let probes: &[&str] = &["livenessProbe", "readinessProbe", "startupProbe"];
        let mut allowed = vec![
            "name",
            "image",
            "command",
            "args",
            "workingDir",
            "env",
            "ports",
            "resources",
            "volumeMounts",
            "stdin",
            "tty",
        ];
        if !for_init {
            allowed.extend(probes);
        }
        let refused_probe = "is not allowed on init containers: they run to completion";
        let refused: Vec<(&str, &str)> = [
            ("envFrom", "is not supported: list the variables in env"),
            (
                "lifecycle",
                "is not supported: postStart/preStop hooks are not run by Berth",
            ),
        ]
        .into_iter()
        .chain(if for_init {
            probes.iter().map(|p| (*p, refused_probe)).collect()
        } else {
            vec![]
        })
        .collect();
        o.check(
            &allowed,
            &[
                "imagePullPolicy",
                "terminationMessagePath",
                "terminationMessagePolicy",
                "stdinOnce",
                "securityContext",
            ],
            &refused,
        )?;
        if o.opt_obj("securityContext")?
            .is_some_and(|s| !s.map.is_empty())
        {
            return err(
                &o.at("securityContext"),
                "is not supported: remove it (an empty object is accepted)",
            );
        }
        let name = dns_label(o.req_str("name")?, &o.at("name"), "container name")?;
        let image = image(o)?;
        let ports = ports(o, for_init)?;
        let (volume_mounts, mount_paths) = volume_mounts(o, false)?;
        let (cpu, memory_mib) = resources(o)?;
        let container = PodContainer {
            name,
            image,
            command: o.opt_strings("command")?,
            args: o.opt_strings("args")?,
            env: env_list(o, false)?,
            workdir: o.opt_str("workingDir")?.filter(|s| !s.is_empty()),
            cpu,
            memory_mib,
            volume_mounts,
            stdin: o.opt_bool("stdin")?.unwrap_or(false),
            tty: o.opt_bool("tty")?.unwrap_or(false),
            liveness_probe: probe(o, "livenessProbe", &ports, true)?,
            readiness_probe: probe(o, "readinessProbe", &ports, false)?,
            startup_probe: probe(o, "startupProbe", &ports, true)?,
        };
        Ok(ContainerDraft::new(o, container, mount_paths, ports))
    }

    /// `resources{limits, requests}{cpu, memory}`: the limit, else the request.
    fn resources(o: &Obj) -> Result<(f64, i64), ManifestError> {
        let Some(r) = o.opt_obj("resources")? else {
            return Ok((0.0, 0));
        };
        r.check(
            &["limits", "requests"],
            &[],
            &[("claims", "is not supported")],
        )?;
        let read = |key: &str| -> Result<(Option<f64>, Option<f64>), ManifestError> {
            let Some(q) = r.opt_obj(key)? else {
                return Ok((None, None));
            };
            for k in q.map.keys() {
                if k != "cpu" && k != "memory" {
                    return err(&q.at(k), "only cpu and memory are supported");
                }
            }
            let cpu = q
                .get("cpu")
                .map(|v| cpu_quantity(v, &q.at("cpu")))
                .transpose()?;
            let mem = q
                .get("memory")
                .map(|v| memory_quantity_bytes(v, &q.at("memory")))
                .transpose()?;
            Ok((cpu, mem))
        };
        let (lim_cpu, lim_mem) = read("limits")?;
        let (req_cpu, req_mem) = read("requests")?;
        if let (Some(l), Some(q)) = (lim_cpu, req_cpu) {
            if q > l {
                return err(
                    &r.at("requests.cpu"),
                    format!("{q} cores exceeds limits.cpu ({l})"),
                );
            }
        }
        if let (Some(l), Some(q)) = (lim_mem, req_mem) {
            if q > l {
                return err(&r.at("requests.memory"), "exceeds limits.memory");
            }
        }
        let mem_path = if lim_mem.is_some() {
            r.at("limits.memory")
        } else {
            r.at("requests.memory")
        };
        let cpu = lim_cpu.or(req_cpu).unwrap_or(0.0);
        let mem = mib_from_bytes(lim_mem.or(req_mem).unwrap_or(0.0), &mem_path)?;
        Ok((cpu, mem))
    }
}

mod zun {
    //! Zun capsule template.
    use super::*;

    pub(super) fn parse(top: &Obj) -> Result<PodDraft, ManifestError> {
        top.check(
            &[
                "kind",
                "capsuleVersion",
                "metadata",
                "restartPolicy",
                "availabilityZone",
                "spec",
            ],
            &[],
            &[],
        )?;
        if let Some(v) = top.opt_str("capsuleVersion")? {
            if v != "beta" && v != "Beta" {
                return err("capsuleVersion", format!("must be beta, got {v:?}"));
            }
        }
        let Some(meta) = top.opt_obj("metadata")? else {
            return err("metadata", "is required (it may be empty: metadata: {})");
        };
        meta.check(&["name", "labels", "annotations"], &[], &[])?;
        let name = match meta.opt_str("name")? {
            Some(n) => Some(
                crate::domain::ContainerName::parse(&n)
                    .map(|n| n.as_str().to_owned())
                    .or_else(|e| err("metadata.name", e.0))?,
            ),
            None => None,
        };
        let labels = labels(&meta)?;
        let annotations = meta.opt_string_map("annotations")?.unwrap_or_default();
        let rollback_window_secs = rollback_window(&meta, &annotations)?;
        let Some(spec) = top.opt_obj("spec")? else {
            return err("spec", "is required: give spec.containers");
        };
        // Zun's spec schema allows additional properties; the ones we read are checked.
        let restart_policy = match (
            spec.opt_str("restartPolicy")?,
            top.opt_str("restartPolicy")?,
        ) {
            (Some(s), _) => restart_policy_str(&s, "spec.restartPolicy")?,
            (None, Some(s)) => restart_policy_str(&s, "restartPolicy")?,
            (None, None) => PodRestartPolicy::Always,
        };
        Ok(PodDraft {
            format: ManifestFormat::ZunCapsule,
            name,
            restart_policy,
            init: containers(&spec, "initContainers", true, container)?,
            containers: containers(&spec, "containers", false, container)?,
            volumes: kube_volumes(&spec, true)?,
            labels,
            annotations,
            rollback_window_secs,
            availability_zone: top.opt_str("availabilityZone")?,
        })
    }

    fn container(o: &Obj, for_init: bool, i: usize) -> Result<ContainerDraft, ManifestError> {
        o.check(
            &[
                "name",
                "image",
                "command",
                "args",
                "workDir",
                "env",
                "imagePullPolicy",
                "stdin",
                "tty",
                "resources",
                "ports",
                "volumeMounts",
            ],
            &[],
            &[],
        )?;
        let name = match o.opt_str("name")? {
            Some(n) => dns_label(n, &o.at("name"), "container name")?,
            None if for_init => format!("init-{i}"),
            None => format!("container-{i}"),
        };
        let image = image(o)?;
        let ports = ports(o, for_init)?;
        let (volume_mounts, mount_paths) = volume_mounts(o, false)?;
        let (cpu, memory_mib) = resources(o)?;
        // Zun concatenates command and args into the container's command (Docker's Cmd).
        let command = o.opt_strings("command")?;
        let args = o.opt_strings("args")?;
        let cmd = match (command, args) {
            (None, None) => None,
            (c, a) => Some(
                c.into_iter()
                    .flatten()
                    .chain(a.into_iter().flatten())
                    .collect(),
            ),
        };
        let env = o.opt_string_map("env")?.unwrap_or_default();
        for k in env.keys() {
            env_name(k, &format!("{}.{k}", o.at("env")))?;
        }
        let container = PodContainer {
            name,
            image,
            command: None,
            args: cmd,
            env,
            workdir: o.opt_str("workDir")?.filter(|s| !s.is_empty()),
            cpu,
            memory_mib,
            volume_mounts,
            stdin: o.opt_bool("stdin")?.unwrap_or(false),
            tty: o.opt_bool("tty")?.unwrap_or(false),
            liveness_probe: None,
            readiness_probe: None,
            startup_probe: None,
        };
        Ok(ContainerDraft::new(o, container, mount_paths, ports))
    }

    /// `resources.requests{cpu (cores), memory (MiB, or a quantity string)}`.
    fn resources(o: &Obj) -> Result<(f64, i64), ManifestError> {
        let Some(r) = o.opt_obj("resources")? else {
            return Ok((0.0, 0));
        };
        r.check(&["requests"], &[], &[])?;
        let Some(q) = r.opt_obj("requests")? else {
            return Ok((0.0, 0));
        };
        q.check(&["cpu", "memory"], &[], &[])?;
        let cpu = q
            .get("cpu")
            .map(|v| cpu_quantity(v, &q.at("cpu")))
            .transpose()?
            .unwrap_or(0.0);
        let mem = match q.get("memory") {
            None => 0,
            // A bare number (or numeric string) is MiB in Zun.
            Some(Value::Number(n)) => match n.as_f64() {
                Some(m) if (0.0..=1048576.0).contains(&m) => {
                    mib_from_bytes(m * 1048576.0, &q.at("memory"))?
                }
                _ => return err(&q.at("memory"), format!("must be 0..1048576 MiB, got {n}")),
            },
            Some(Value::String(s)) if s.parse::<f64>().is_ok() => {
                mib_from_bytes(s.parse::<f64>().unwrap_or(0.0) * 1048576.0, &q.at("memory"))?
            }
            Some(v) => mib_from_bytes(memory_quantity_bytes(v, &q.at("memory"))?, &q.at("memory"))?,
        };
        Ok((cpu, mem))
    }
}

mod google {
    //! Google container manifest v1beta1/v1beta2.
    use super::*;

    pub(super) fn parse(top: &Obj, v1beta1: bool) -> Result<PodDraft, ManifestError> {
        top.check(
            &[
                "version",
                "id",
                "uuid",
                "volumes",
                "containers",
                "restartPolicy",
                "dnsPolicy",
            ],
            &[],
            &[],
        )?;
        let id = top.req_str("id")?;
        if !is_dns_subdomain(&id) {
            return err(
                "id",
                format!("{id:?} is not a DNS subdomain: lower-case letters, digits, '-' and '.', at most 253 characters"),
            );
        }
        let restart_policy = match top.opt_obj("restartPolicy")? {
            None => PodRestartPolicy::Always,
            Some(rp) => {
                rp.check(&["always", "onFailure", "never"], &[], &[])?;
                match rp
                    .map
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice()
                {
                    ["always"] => PodRestartPolicy::Always,
                    ["onFailure"] => PodRestartPolicy::OnFailure,
                    ["never"] => PodRestartPolicy::Never,
                    _ => {
                        return err(
                            "restartPolicy",
                            "must have exactly one of always: {}, onFailure: {} or never: {}",
                        )
                    }
                }
            }
        };
        Ok(PodDraft {
            format: if v1beta1 {
                ManifestFormat::GoogleV1beta1
            } else {
                ManifestFormat::GoogleV1beta2
            },
            name: Some(id),
            restart_policy,
            init: Vec::new(),
            containers: containers(top, "containers", false, container)?,
            volumes: volumes(top)?,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            rollback_window_secs: DEFAULT_ROLLBACK_WINDOW_SECS,
            availability_zone: None,
        })
    }

    fn container(o: &Obj, _: bool, _: usize) -> Result<ContainerDraft, ManifestError> {
        o.check(
            &[
                "name",
                "image",
                "command",
                "entrypoint",
                "workingDir",
                "ports",
                "env",
                "cpu",
                "memory",
                "volumeMounts",
                "livenessProbe",
                "readinessProbe",
                "privileged",
            ],
            &["imagePullPolicy", "terminationMessagePath"],
            &[(
                "lifecycle",
                "is not supported: postStart/preStop hooks are not run by Berth",
            )],
        )?;
        if o.opt_bool("privileged")? == Some(true) {
            return err(
                &o.at("privileged"),
                "is refused: tenants may not run privileged containers",
            );
        }
        let name = dns_label(o.req_str("name")?, &o.at("name"), "container name")?;
        let image = image(o)?;
        let ports = ports(o, false)?;
        let (volume_mounts, mount_paths) = volume_mounts(o, true)?;
        let cpu = match o.opt_int("cpu", 0, 1_024_000)? {
            Some(milli) => milli as f64 / 1000.0,
            None => 0.0,
        };
        let memory_mib = match o.opt_int("memory", 0, i64::MAX)? {
            Some(bytes) => mib_from_bytes(bytes as f64, &o.at("memory"))?,
            None => 0,
        };
        let container = PodContainer {
            name,
            image,
            // v1beta2's `command` sets Docker's Cmd; `entrypoint` (2015) the Entrypoint.
            command: o.opt_strings("entrypoint")?,
            args: o.opt_strings("command")?,
            env: env_list(o, true)?,
            workdir: o.opt_str("workingDir")?.filter(|s| !s.is_empty()),
            cpu,
            memory_mib,
            volume_mounts,
            stdin: false,
            tty: false,
            liveness_probe: probe(o, "livenessProbe", &ports, true)?,
            readiness_probe: probe(o, "readinessProbe", &ports, false)?,
            startup_probe: None,
        };
        Ok(ContainerDraft::new(o, container, mount_paths, ports))
    }

    fn volumes(top: &Obj) -> Result<Vec<(PodVolume, String)>, ManifestError> {
        let Some(items) = top.opt_list("volumes")? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (v, path) in items {
            let o = Obj::new(v, &path)?;
            o.check(&["name", "source"], &[], &[])?;
            let name = dns_label(o.req_str("name")?, &o.at("name"), "volume name")?;
            // No source: emptyDir (the format's implied default).
            if let Some(src) = o.opt_obj("source")? {
                let keys: Vec<&String> = src.map.keys().collect();
                match keys.as_slice() {
                    [] => {}
                    [k] if k.as_str() == "emptyDir" => {
                        let e = src.marker_obj("emptyDir")?.expect("present");
                        e.check(&["medium"], &[], &[])?;
                        if e.opt_str("medium")?.is_some_and(|m| !m.is_empty()) {
                            return err(
                                &e.at("medium"),
                                "is not supported: only the default (disk) medium",
                            );
                        }
                    }
                    [k] if k.as_str() == "hostDir" => {
                        return err(
                            &src.at("hostDir"),
                            "is refused: tenants may not mount host paths; use emptyDir",
                        )
                    }
                    [k] => {
                        return err(
                            &src.at(k),
                            format!("volume source {k:?} is not supported: use emptyDir"),
                        )
                    }
                    [_, second, ..] => {
                        return err(&src.at(second), "a volume has exactly one source")
                    }
                }
            }
            out.push((
                PodVolume {
                    name,
                    source: VolumeSource::EmptyDir,
                },
                path,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../tests/fixtures/pods/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse_document(&text).unwrap()
    }

    /// The error for `template`, asserting it names `path`.
    fn refused(template: Value, path: &str) -> ManifestError {
        let e = parse(&template).expect_err("template must be refused");
        assert_eq!(e.path, path, "wrong path in {e}");
        e
    }

    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": containers}})
    }

    fn pod_spec(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    const IMG: &str = "berth-test/busybox:latest";

    #[test]
    fn the_seeds_two_container_v1beta2_manifest_parses_into_a_shared_volume_pod() {
        let p = parse(&fixture("v1beta2-two-containers.yaml")).unwrap();
        assert_eq!(p.format, ManifestFormat::GoogleV1beta2);
        assert_eq!(p.name.as_deref(), Some("web-and-writer"));
        let s = &p.spec;
        assert_eq!(s.restart_policy, PodRestartPolicy::Always);
        assert_eq!(s.containers.len(), 2);
        assert_eq!(s.containers[0].name, "web");
        // v1beta2's command replaces CMD, not ENTRYPOINT.
        assert_eq!(s.containers[0].command, None);
        assert_eq!(s.containers[0].args.as_ref().unwrap()[0], "httpd");
        assert_eq!(s.containers[1].env["GREETING"], "hello");
        assert_eq!(
            s.volumes,
            vec![PodVolume {
                name: "shared".into(),
                source: VolumeSource::EmptyDir
            }]
        );
        for c in &s.containers {
            assert_eq!(c.volume_mounts[0].name, "shared");
            assert_eq!(c.volume_mounts[0].mount_path, "/data");
        }
        assert_eq!(
            s.ports,
            vec![PortBinding {
                host_port: Some(28080),
                container_port: 8080,
                protocol: Protocol::Tcp
            }]
        );
        assert_eq!((p.cpu, p.memory_mib), (0.0, 0));
    }

    #[test]
    fn v1beta1_aliases_and_implied_empty_dir_are_accepted() {
        let p = parse(&fixture("v1beta1.yaml")).unwrap();
        assert_eq!(p.format, ManifestFormat::GoogleV1beta1);
        let c = &p.spec.containers[0];
        assert_eq!(c.env["MESSAGE"], "from-v1beta1");
        assert_eq!(c.volume_mounts[0].mount_path, "/scratch");
        assert_eq!(p.spec.volumes[0].source, VolumeSource::EmptyDir);
        assert_eq!(p.spec.restart_policy, PodRestartPolicy::OnFailure);
        // 250 millicores, 64 MiB in bytes.
        assert_eq!((p.cpu, p.memory_mib), (0.25, 64));
        assert_eq!((c.cpu, c.memory_mib), (0.25, 64));
    }

    #[test]
    fn zun_capsule_concatenates_command_and_args_and_sums_requests() {
        let p = parse(&fixture("capsule.yaml")).unwrap();
        assert_eq!(p.format, ManifestFormat::ZunCapsule);
        assert_eq!(p.name.as_deref(), Some("zun-capsule"));
        let s = &p.spec;
        assert_eq!(s.containers[0].command, None);
        assert_eq!(
            s.containers[0].args.as_deref().unwrap(),
            ["httpd", "-f", "-p", "8080", "-h", "/shared"]
        );
        assert_eq!(s.containers[1].env["ROLE"], "client");
        assert_eq!((p.cpu, p.memory_mib), (0.75, 96));
        assert_eq!(s.labels["app"], "demo");
        assert_eq!(s.ports[0].host_port, None);
        assert_eq!(s.rollback_window_secs, DEFAULT_ROLLBACK_WINDOW_SECS);
    }

    #[test]
    fn zun_capsule_in_json_and_as_a_json_string_parse_alike() {
        let v = fixture("capsule.json");
        let from_string = parse(&Value::String(v.to_string())).unwrap();
        let p = parse(&v).unwrap();
        assert_eq!(p, from_string);
        assert_eq!((p.cpu, p.memory_mib), (0.1, 16));
    }

    #[test]
    fn zun_capsule_without_names_gets_generated_ones() {
        let p = parse(&json!({"kind": "Capsule", "metadata": {},
            "spec": {"initContainers": [{"image": IMG}], "containers": [{"image": IMG}, {"image": IMG}]}}))
        .unwrap();
        assert_eq!(p.name, None);
        let names: Vec<_> = p.spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["container-0", "container-1"]);
        assert_eq!(p.spec.init_containers[0].name, "init-0");
        let uuid = Uuid::new_v4();
        let spec = p.into_spec(uuid, 3);
        assert_eq!(spec.uuid, uuid);
        assert_eq!(spec.generation, 3);
        assert_eq!(spec.name, default_name(uuid));
        assert!(spec.name.starts_with("capsule-") && spec.name.len() == 16);
    }

    #[test]
    fn kubernetes_pod_fixture_parses_init_probes_files_and_resources() {
        let p = parse(&fixture("pod-v1.yaml")).unwrap();
        assert_eq!(p.format, ManifestFormat::KubernetesPodV1);
        let s = p.into_spec(Uuid::new_v4(), 1);
        assert_eq!(s.name, "kube-pod");
        assert_eq!(s.rollback_window_secs, 30);
        assert_eq!(s.init_containers[0].name, "prepare");
        let web = &s.containers[0];
        assert_eq!(web.command.as_deref().unwrap(), ["httpd"]);
        assert_eq!(
            web.args.as_deref().unwrap(),
            ["-f", "-p", "8080", "-h", "/www"]
        );
        assert_eq!((web.cpu, web.memory_mib), (0.5, 64));
        let live = web.liveness_probe.as_ref().unwrap();
        assert_eq!(
            live.handler,
            ProbeHandler::HttpGet {
                path: "/index.html".into(),
                port: 8080,
                host: None
            }
        );
        assert_eq!(
            (live.period_secs, live.timeout_secs, live.failure_threshold),
            (5, 1, 3)
        );
        let ready = web.readiness_probe.as_ref().unwrap();
        assert_eq!(ready.handler, ProbeHandler::TcpSocket { port: 8080 });
        assert_eq!(
            (
                ready.initial_delay_secs,
                ready.period_secs,
                ready.success_threshold
            ),
            (0, 10, 1)
        );
        let sidecar = &s.containers[1];
        assert_eq!(
            sidecar.startup_probe.as_ref().unwrap().handler,
            ProbeHandler::Exec {
                command: vec!["true".into()]
            }
        );
        assert_eq!((sidecar.cpu, sidecar.memory_mib), (0.25, 32));
        let files = match &s.volumes[1].source {
            VolumeSource::Files { files } => files.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(files.len(), 1, "only the listed item is projected");
        assert_eq!(files["index.html"], "hello from a configMap\n");
        assert!(s.init_containers[0].volume_mounts[1].read_only);
    }

    #[test]
    fn every_invalid_fixture_is_refused_naming_its_expected_field() {
        let dir = format!("{}/../tests/fixtures/pods", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.starts_with("invalid-") {
                continue;
            }
            let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{name} lacks '# expect: PATH'"));
            let e = parse(&parse_document(&text).unwrap()).expect_err(&name);
            assert_eq!(e.path, expect, "{name}: {e}");
            seen += 1;
        }
        assert!(seen >= 7, "only {seen} invalid fixtures");
    }

    #[test]
    fn every_valid_fixture_parses() {
        for name in [
            "v1beta2-two-containers.yaml",
            "v1beta1.yaml",
            "capsule.yaml",
            "capsule.json",
            "pod-v1.yaml",
        ] {
            parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    // --- format detection and documents ---

    #[test]
    fn unknown_kind_names_kind() {
        let e = refused(json!({"kind": "Deployment"}), "kind");
        assert!(e.message.contains("capsule"), "{e}");
    }

    #[test]
    fn pod_with_another_api_version_names_api_version() {
        refused(json!({"kind": "Pod", "apiVersion": "v2"}), "apiVersion");
        refused(json!({"kind": "Pod"}), "apiVersion");
    }

    #[test]
    fn unknown_manifest_version_names_version() {
        refused(json!({"version": "v1beta3", "id": "x"}), "version");
    }

    #[test]
    fn a_template_without_kind_or_version_names_kind() {
        refused(json!({"spec": {}}), "kind");
    }

    #[test]
    fn a_non_object_template_names_the_template() {
        refused(json!([1, 2]), "template");
        refused(Value::String("{not json: [".into()), "template");
    }

    // --- names ---

    #[test]
    fn container_name_that_is_not_a_dns_label_is_refused() {
        let e = refused(
            pod(json!([{"name": "Web_1", "image": IMG}])),
            "spec.containers[0].name",
        );
        assert!(e.message.contains("DNS label"), "{e}");
    }

    #[test]
    fn duplicate_container_names_across_init_and_app_are_refused() {
        refused(
            pod_spec(json!({"initContainers": [{"name": "a", "image": IMG}],
                            "containers": [{"name": "a", "image": IMG}]})),
            "spec.containers[0].name",
        );
    }

    #[test]
    fn pod_name_must_be_a_dns_subdomain() {
        refused(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad Name"},
                   "spec": {"containers": [{"name": "a", "image": IMG}]}}),
            "metadata.name",
        );
        refused(
            json!({"version": "v1beta2", "id": "UPPER", "containers": []}),
            "id",
        );
        refused(
            json!({"kind": "capsule", "metadata": {"name": "-x"}, "spec": {}}),
            "metadata.name",
        );
    }

    #[test]
    fn missing_required_fields_are_named() {
        refused(pod(json!([{"name": "a"}])), "spec.containers[0].image");
        refused(pod(json!([])), "spec.containers");
        refused(pod_spec(json!({})), "spec.containers");
        refused(
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {}}),
            "metadata",
        );
        refused(json!({"kind": "capsule", "spec": {}}), "metadata");
        refused(json!({"version": "v1beta2", "containers": []}), "id");
    }

    #[test]
    fn a_bad_image_reference_is_refused() {
        refused(
            pod(json!([{"name": "a", "image": "has space"}])),
            "spec.containers[0].image",
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let e = refused(
            pod(json!([{"name": "a", "image": IMG, "command": "sleep 1"}])),
            "spec.containers[0].command",
        );
        assert!(e.message.contains("list"), "{e}");
        refused(
            pod(json!([{"name": "a", "image": IMG, "args": [1]}])),
            "spec.containers[0].args[0]",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG, "tty": "yes"}])),
            "spec.containers[0].tty",
        );
        refused(pod(json!({"name": "a"})), "spec.containers");
    }

    // --- unknown and refused fields ---

    #[test]
    fn unknown_fields_are_refused_where_the_schema_refuses_them() {
        let e = refused(
            pod(json!([{"name": "a", "image": IMG, "imagePullSecretz": 1}])),
            "spec.containers[0].imagePullSecretz",
        );
        assert!(e.message.contains("unknown field"), "{e}");
        refused(
            json!({"kind": "capsule", "metadata": {}, "spec": {"containers": [{"image": IMG}]}, "extra": 1}),
            "extra",
        );
        refused(
            json!({"kind": "capsule", "metadata": {"nme": "x"}, "spec": {}}),
            "metadata.nme",
        );
        refused(
            json!({"version": "v1beta2", "id": "x", "containers": [{"name": "a", "image": IMG, "cpus": 1}]}),
            "containers[0].cpus",
        );
    }

    #[test]
    fn zun_spec_tolerates_additional_properties_as_zun_does() {
        parse(&json!({"kind": "capsule", "metadata": {},
            "spec": {"containers": [{"image": IMG}], "somethingElse": true}}))
        .unwrap();
    }

    #[test]
    fn harmless_kubernetes_fields_are_accepted() {
        parse(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "x"},
            "spec": {"dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 5, "securityContext": {},
                     "containers": [{"name": "a", "image": IMG, "imagePullPolicy": "IfNotPresent"}]},
            "status": {}}))
        .unwrap();
    }

    #[test]
    fn host_namespaces_and_privilege_are_refused() {
        let e = refused(
            pod_spec(json!({"hostNetwork": true, "containers": []})),
            "spec.hostNetwork",
        );
        assert!(e.message.contains("tenants"), "{e}");
        refused(
            pod(json!([{"name": "a", "image": IMG, "securityContext": {"privileged": true}}])),
            "spec.containers[0].securityContext",
        );
        refused(
            json!({"version": "v1beta2", "id": "x", "containers": [{"name": "a", "image": IMG, "privileged": true}]}),
            "containers[0].privileged",
        );
    }

    #[test]
    fn env_value_from_is_refused() {
        refused(
            pod(json!([{"name": "a", "image": IMG, "env": [{"name": "X", "valueFrom": {}}]}])),
            "spec.containers[0].env[0].valueFrom",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG, "env": [{"value": "v"}]}])),
            "spec.containers[0].env[0].name",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG, "env": [{"name": "A=B"}]}])),
            "spec.containers[0].env[0].name",
        );
        refused(
            json!({"kind": "capsule", "metadata": {}, "spec": {"containers": [{"image": IMG, "env": {"PORT": 80}}]}}),
            "spec.containers[0].env.PORT",
        );
    }

    // --- restart policy ---

    #[test]
    fn restart_policies_parse_in_each_format() {
        let k = parse(&pod_spec(
            json!({"restartPolicy": "Never", "containers": [{"name": "a", "image": IMG}]}),
        ))
        .unwrap();
        assert_eq!(k.spec.restart_policy, PodRestartPolicy::Never);
        let z = parse(
            &json!({"kind": "capsule", "metadata": {}, "restartPolicy": "OnFailure",
            "spec": {"containers": [{"image": IMG}]}}),
        )
        .unwrap();
        assert_eq!(z.spec.restart_policy, PodRestartPolicy::OnFailure);
        let g = parse(
            &json!({"version": "v1beta2", "id": "x", "restartPolicy": {"never": null},
            "containers": [{"name": "a", "image": IMG}]}),
        )
        .unwrap();
        assert_eq!(g.spec.restart_policy, PodRestartPolicy::Never);
    }

    #[test]
    fn bad_restart_policies_are_named() {
        refused(
            pod_spec(json!({"restartPolicy": "always", "containers": []})),
            "spec.restartPolicy",
        );
        refused(
            json!({"version": "v1beta2", "id": "x", "restartPolicy": {"always": {}, "never": {}}, "containers": []}),
            "restartPolicy",
        );
        refused(
            json!({"version": "v1beta2", "id": "x", "restartPolicy": {"sometimes": {}}, "containers": []}),
            "restartPolicy.sometimes",
        );
        refused(
            json!({"version": "v1beta2", "id": "x", "restartPolicy": "Always", "containers": []}),
            "restartPolicy",
        );
    }

    // --- resources ---

    #[test]
    fn cpu_and_memory_quantities_convert_to_cores_and_mib() {
        let p = parse(&pod(json!([
            {"name": "a", "image": IMG, "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}},
            {"name": "b", "image": IMG, "resources": {"requests": {"cpu": 0.5, "memory": "100M"}}},
            {"name": "c", "image": IMG, "resources": {"limits": {"cpu": "2", "memory": 134217728}}},
        ])))
        .unwrap();
        let got: Vec<_> = p
            .spec
            .containers
            .iter()
            .map(|c| (c.cpu, c.memory_mib))
            .collect();
        // 100 MB = 95.37 MiB, rounded up.
        assert_eq!(got, [(1.5, 1024), (0.5, 96), (2.0, 128)]);
        assert_eq!((p.cpu, p.memory_mib), (4.0, 1248));
    }

    #[test]
    fn sums_take_the_max_with_each_init_container_as_zun_does() {
        let p = parse(&pod_spec(json!({
            "initContainers": [
                {"name": "big", "image": IMG, "resources": {"limits": {"cpu": 3, "memory": "64Mi"}}},
                {"name": "small", "image": IMG, "resources": {"limits": {"cpu": "100m", "memory": "512Mi"}}}],
            "containers": [
                {"name": "a", "image": IMG, "resources": {"limits": {"cpu": 1, "memory": "128Mi"}}},
                {"name": "b", "image": IMG, "resources": {"limits": {"cpu": "0.5", "memory": "128Mi"}}}]})))
        .unwrap();
        assert_eq!((p.cpu, p.memory_mib), (3.0, 512));
    }

    #[test]
    fn bad_quantities_are_named() {
        refused(
            pod(json!([{"name": "a", "image": IMG, "resources": {"limits": {"cpu": "lots"}}}])),
            "spec.containers[0].resources.limits.cpu",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG, "resources": {"limits": {"memory": "12Qi"}}}])),
            "spec.containers[0].resources.limits.memory",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG, "resources": {"limits": {"memory": "1Mi"}}}])),
            "spec.containers[0].resources.limits.memory",
        );
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "resources": {"limits": {"nvidia.com/gpu": 1}}}]),
            ),
            "spec.containers[0].resources.limits.nvidia.com/gpu",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG,
                "resources": {"limits": {"cpu": "100m"}, "requests": {"cpu": "200m"}}}])),
            "spec.containers[0].resources.requests.cpu",
        );
        refused(
            json!({"kind": "capsule", "metadata": {}, "spec": {"containers": [{"image": IMG, "resources": {"requests": {"memory": -5}}}]}}),
            "spec.containers[0].resources.requests.memory",
        );
        refused(
            json!({"version": "v1beta2", "id": "x", "containers": [{"name": "a", "image": IMG, "cpu": "half"}]}),
            "containers[0].cpu",
        );
    }

    // --- ports ---

    #[test]
    fn out_of_range_ports_are_named() {
        let e = refused(
            pod(
                json!([{"name": "a", "image": IMG}, {"name": "b", "image": IMG, "ports": [{"containerPort": 70000}]}]),
            ),
            "spec.containers[1].ports[0].containerPort",
        );
        assert_eq!(
            e.to_string(),
            "spec.containers[1].ports[0].containerPort: must be 1..65535, got 70000"
        );
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "ports": [{"containerPort": 80, "hostPort": -1}]}]),
            ),
            "spec.containers[0].ports[0].hostPort",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG, "ports": [{"hostPort": 80}]}])),
            "spec.containers[0].ports[0].containerPort",
        );
    }

    #[test]
    fn duplicate_container_ports_in_the_pod_are_refused_but_other_protocols_are_not() {
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "ports": [{"containerPort": 53}]},
                       {"name": "b", "image": IMG, "ports": [{"containerPort": 53, "protocol": "TCP"}]}]),
            ),
            "spec.containers[1].ports[0].containerPort",
        );
        let p = parse(&pod(json!([{"name": "a", "image": IMG,
            "ports": [{"containerPort": 53}, {"containerPort": 53, "protocol": "UDP"}]}])))
        .unwrap();
        assert_eq!(p.spec.ports.len(), 2);
        assert_eq!(p.spec.ports[1].protocol, Protocol::Udp);
    }

    #[test]
    fn duplicate_host_ports_are_refused() {
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "ports": [{"containerPort": 80, "hostPort": 8080}]},
                       {"name": "b", "image": IMG, "ports": [{"containerPort": 81, "hostPort": 8080}]}]),
            ),
            "spec.containers[1].ports[0].hostPort",
        );
    }

    #[test]
    fn duplicate_port_names_and_bad_protocols_are_refused() {
        refused(
            pod(json!([{"name": "a", "image": IMG, "ports": [
                {"name": "http", "containerPort": 80}, {"name": "http", "containerPort": 81}]}])),
            "spec.containers[0].ports[1].name",
        );
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "ports": [{"containerPort": 80, "protocol": "SCTP"}]}]),
            ),
            "spec.containers[0].ports[0].protocol",
        );
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "ports": [{"containerPort": 80, "hostIP": "1.2.3.4"}]}]),
            ),
            "spec.containers[0].ports[0].hostIP",
        );
    }

    #[test]
    fn host_port_zero_means_engine_chosen() {
        let p = parse(&pod(
            json!([{"name": "a", "image": IMG, "ports": [{"containerPort": 80, "hostPort": 0}]}]),
        ))
        .unwrap();
        assert_eq!(p.spec.ports[0].host_port, None);
    }

    #[test]
    fn init_containers_cannot_have_ports_or_probes() {
        refused(
            pod_spec(
                json!({"initContainers": [{"name": "i", "image": IMG, "ports": [{"containerPort": 80}]}],
                            "containers": [{"name": "a", "image": IMG}]}),
            ),
            "spec.initContainers[0].ports",
        );
        refused(
            pod_spec(
                json!({"initContainers": [{"name": "i", "image": IMG, "livenessProbe": {"exec": {"command": ["true"]}}}],
                            "containers": [{"name": "a", "image": IMG}]}),
            ),
            "spec.initContainers[0].livenessProbe",
        );
    }

    // --- volumes ---

    #[test]
    fn host_path_is_refused_for_tenants() {
        let e = refused(
            pod_spec(
                json!({"containers": [{"name": "a", "image": IMG}], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
            ),
            "spec.volumes[0].hostPath",
        );
        assert!(
            e.message.contains("tenants may not mount host paths"),
            "{e}"
        );
        let e = refused(
            json!({"version": "v1beta1", "id": "x", "containers": [{"name": "a", "image": IMG}],
                   "volumes": [{"name": "h", "source": {"hostDir": {"path": "/etc"}}}]}),
            "volumes[0].source.hostDir",
        );
        assert!(
            e.message.contains("tenants may not mount host paths"),
            "{e}"
        );
        refused(
            json!({"version": "v1beta1", "id": "x", "containers": [{"name": "a", "image": IMG,
                   "volumeMounts": [{"name": "v", "path": "/x", "mountType": "HOST"}]}]}),
            "containers[0].volumeMounts[0].mountType",
        );
    }

    #[test]
    fn other_volume_sources_are_refused() {
        refused(
            pod_spec(
                json!({"containers": [{"name": "a", "image": IMG}], "volumes": [{"name": "s", "secret": {"secretName": "x"}}]}),
            ),
            "spec.volumes[0].secret",
        );
        refused(
            json!({"kind": "capsule", "metadata": {}, "spec": {"containers": [{"image": IMG}],
                   "volumes": [{"name": "c", "cinder": {"size": 1}}]}}),
            "spec.volumes[0].cinder",
        );
        refused(
            json!({"version": "v1beta2", "id": "x", "containers": [{"name": "a", "image": IMG}],
                   "volumes": [{"name": "g", "source": {"gitRepo": {"repository": "x"}}}]}),
            "volumes[0].source.gitRepo",
        );
        refused(
            pod_spec(json!({"containers": [{"name": "a", "image": IMG}],
                            "volumes": [{"name": "m", "emptyDir": {"medium": "Memory"}}]})),
            "spec.volumes[0].emptyDir.medium",
        );
        refused(
            pod_spec(json!({"containers": [{"name": "a", "image": IMG}],
                            "volumes": [{"name": "m", "emptyDir": {}, "configMap": {"data": {}}}]})),
            "spec.volumes[0].emptyDir",
        );
    }

    #[test]
    fn undefined_and_duplicate_volumes_are_refused() {
        refused(
            pod_spec(
                json!({"containers": [{"name": "a", "image": IMG, "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}),
            ),
            "spec.containers[0].volumeMounts[0].name",
        );
        refused(
            pod_spec(json!({"containers": [{"name": "a", "image": IMG}],
                            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]})),
            "spec.volumes[1].name",
        );
    }

    #[test]
    fn mount_paths_must_be_absolute_and_unique_per_container() {
        refused(
            pod_spec(
                json!({"containers": [{"name": "a", "image": IMG, "volumeMounts": [{"name": "v", "mountPath": "data"}]}],
                            "volumes": [{"name": "v"}]}),
            ),
            "spec.containers[0].volumeMounts[0].mountPath",
        );
        refused(
            pod_spec(
                json!({"containers": [{"name": "a", "image": IMG, "volumeMounts": [
                                {"name": "v", "mountPath": "/d"}, {"name": "w", "mountPath": "/d"}]}],
                            "volumes": [{"name": "v"}, {"name": "w"}]}),
            ),
            "spec.containers[0].volumeMounts[1].mountPath",
        );
        refused(
            pod_spec(
                json!({"containers": [{"name": "a", "image": IMG, "volumeMounts": [
                                {"name": "v", "mountPath": "/d", "subPath": "x"}]}],
                            "volumes": [{"name": "v"}]}),
            ),
            "spec.containers[0].volumeMounts[0].subPath",
        );
    }

    #[test]
    fn yaml_bare_empty_dir_key_is_an_empty_dir() {
        let v = parse_document(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: busybox}]\n  volumes:\n  - name: v\n    emptyDir:\n",
        )
        .unwrap();
        assert_eq!(
            parse(&v).unwrap().spec.volumes[0].source,
            VolumeSource::EmptyDir
        );
    }

    #[test]
    fn config_map_without_items_projects_every_key() {
        let p = parse(&pod_spec(json!({"containers": [{"name": "a", "image": IMG}],
            "volumes": [{"name": "c", "configMap": {"name": "ignored", "data": {"a.conf": "A", "b.conf": "B"}}}]})))
        .unwrap();
        let VolumeSource::Files { files } = &p.spec.volumes[0].source else {
            panic!()
        };
        assert_eq!(files.len(), 2);
        assert_eq!(files["b.conf"], "B");
    }

    #[test]
    fn config_map_errors_are_named() {
        let vol = |cm: Value| {
            pod_spec(
                json!({"containers": [{"name": "a", "image": IMG}], "volumes": [{"name": "c", "configMap": cm}]}),
            )
        };
        let e = refused(vol(json!({"name": "cm"})), "spec.volumes[0].configMap.data");
        assert!(e.message.contains("inline"), "{e}");
        refused(
            vol(json!({"data": {"a": "x"}, "items": [{"key": "b", "path": "b"}]})),
            "spec.volumes[0].configMap.items[0].key",
        );
        refused(
            vol(json!({"data": {"a": "x"}, "items": [{"key": "a", "path": "../etc/passwd"}]})),
            "spec.volumes[0].configMap.items[0].path",
        );
        refused(
            vol(json!({"data": {"a": "x"}, "items": [{"key": "a", "path": "/abs"}]})),
            "spec.volumes[0].configMap.items[0].path",
        );
        refused(
            vol(json!({"data": {"../x": "x"}})),
            "spec.volumes[0].configMap.data.../x",
        );
        refused(
            vol(json!({"data": {"a": 1}})),
            "spec.volumes[0].configMap.data.a",
        );
    }

    #[test]
    fn oversized_inline_files_are_refused() {
        let big = "x".repeat(MAX_INLINE_FILES_BYTES + 1);
        refused(
            pod_spec(json!({"containers": [{"name": "a", "image": IMG}],
                            "volumes": [{"name": "c", "configMap": {"data": {"big": big}}}]})),
            "spec.volumes",
        );
    }

    // --- probes ---

    #[test]
    fn probe_defaults_are_kubelets() {
        let p = parse(&pod(
            json!([{"name": "a", "image": IMG, "livenessProbe": {"tcpSocket": {"port": 80}}}]),
        ))
        .unwrap();
        let probe = p.spec.containers[0].liveness_probe.clone().unwrap();
        assert_eq!(
            (
                probe.initial_delay_secs,
                probe.period_secs,
                probe.timeout_secs,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (0, 10, 1, 1, 3)
        );
    }

    #[test]
    fn probe_needs_exactly_one_handler() {
        refused(
            pod(json!([{"name": "a", "image": IMG, "livenessProbe": {"periodSeconds": 5}}])),
            "spec.containers[0].livenessProbe",
        );
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}}]),
            ),
            "spec.containers[0].livenessProbe.tcpSocket",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG, "livenessProbe": {"grpc": {"port": 1}}}])),
            "spec.containers[0].livenessProbe.grpc",
        );
        refused(
            pod(json!([{"name": "a", "image": IMG, "livenessProbe": {"exec": {"command": []}}}])),
            "spec.containers[0].livenessProbe.exec.command",
        );
    }

    #[test]
    fn probe_fields_are_checked() {
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "livenessProbe": {"httpGet": {"port": "web"}}}]),
            ),
            "spec.containers[0].livenessProbe.httpGet.port",
        );
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "readinessProbe": {"httpGet": {"port": 80, "scheme": "HTTPS"}}}]),
            ),
            "spec.containers[0].readinessProbe.httpGet.scheme",
        );
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "livenessProbe": {"tcpSocket": {"port": 80}, "successThreshold": 2}}]),
            ),
            "spec.containers[0].livenessProbe.successThreshold",
        );
        refused(
            pod(
                json!([{"name": "a", "image": IMG, "startupProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 0}}]),
            ),
            "spec.containers[0].startupProbe.periodSeconds",
        );
        let p = parse(&pod(json!([{"name": "a", "image": IMG,
            "readinessProbe": {"tcpSocket": {"port": 80}, "successThreshold": 2}}])))
        .unwrap();
        assert_eq!(
            p.spec.containers[0]
                .readiness_probe
                .as_ref()
                .unwrap()
                .success_threshold,
            2
        );
    }

    #[test]
    fn v1beta2_probes_are_accepted() {
        let p = parse(&json!({"version": "v1beta2", "id": "x", "containers": [{"name": "a", "image": IMG,
            "ports": [{"name": "web", "containerPort": 80}],
            "livenessProbe": {"httpGet": {"path": "/", "port": "web"}, "initialDelaySeconds": 3}}]}))
        .unwrap();
        let probe = p.spec.containers[0].liveness_probe.clone().unwrap();
        assert_eq!(probe.initial_delay_secs, 3);
        assert_eq!(
            probe.handler,
            ProbeHandler::HttpGet {
                path: "/".into(),
                port: 80,
                host: None
            }
        );
    }

    // --- metadata ---

    #[test]
    fn reserved_label_keys_and_bad_rollback_windows_are_refused() {
        refused(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"berth.pod": "x"}},
                   "spec": {"containers": [{"name": "a", "image": IMG}]}}),
            "metadata.labels.berth.pod",
        );
        refused(
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "annotations": {ANNOTATION_ROLLBACK_WINDOW: "forever"}},
                   "spec": {"containers": [{"name": "a", "image": IMG}]}}),
            "metadata.annotations.berth.io/rollback-window-seconds",
        );
        refused(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "p-"}, "spec": {}}),
            "metadata.generateName",
        );
    }

    #[test]
    fn rollback_window_annotation_sets_the_window() {
        let p = parse(&json!({"kind": "capsule",
            "metadata": {"annotations": {ANNOTATION_ROLLBACK_WINDOW: "0"}},
            "spec": {"containers": [{"image": IMG}]}}))
        .unwrap();
        assert_eq!(p.spec.rollback_window_secs, 0);
    }

    #[test]
    fn kubernetes_command_and_args_map_to_entrypoint_and_cmd() {
        let p = parse(&pod(json!([{"name": "a", "image": IMG, "command": ["sh"], "args": ["-c", "true"], "workingDir": "/tmp"}]))).unwrap();
        let c = &p.spec.containers[0];
        assert_eq!(c.command.as_deref().unwrap(), ["sh"]);
        assert_eq!(c.args.as_deref().unwrap(), ["-c", "true"]);
        assert_eq!(c.workdir.as_deref(), Some("/tmp"));
        let g = parse(
            &json!({"version": "v1beta2", "id": "x", "containers": [{"name": "a", "image": IMG,
            "entrypoint": ["sh"], "command": ["-c", "true"]}]}),
        )
        .unwrap();
        assert_eq!(g.spec.containers[0].command.as_deref().unwrap(), ["sh"]);
        assert_eq!(
            g.spec.containers[0].args.as_deref().unwrap(),
            ["-c", "true"]
        );
    }

    #[test]
    fn spec_hash_changes_only_for_the_changed_container() {
        let a = parse(&pod(
            json!([{"name": "a", "image": IMG}, {"name": "b", "image": IMG}]),
        ))
        .unwrap();
        let b = parse(&pod(
            json!([{"name": "a", "image": IMG}, {"name": "b", "image": IMG, "args": ["x"]}]),
        ))
        .unwrap();
        assert_eq!(
            a.spec.containers[0].spec_hash(),
            b.spec.containers[0].spec_hash()
        );
        assert_ne!(
            a.spec.containers[1].spec_hash(),
            b.spec.containers[1].spec_hash()
        );
    }
}
