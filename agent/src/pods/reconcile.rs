//! The per-pod worker: a level-triggered reconcile pass from (desired spec, what the
//! engine shows), as the kubelet computes pod actions.
//!
//! Each pass: make sure the infra container (network + IPC namespaces, published
//! ports, volumes) runs with the current sandbox hash — else remove everything and
//! make it again; run init containers in order, each to a successful exit; then
//! for each app container replace it when its spec hash changed, start it when absent,
//! run its probes while it runs, and restart it after an exit when the restart policy
//! says so, subject to the crash-loop backoff. Then judge a recent update (rollback),
//! and compute the status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_proto::pod::{
    ContainerState, PodContainer, PodPhase, PodSpec, PodStatus, Rollback, VolumeSource, LABEL_POD,
    LABEL_POD_CONTAINER, LABEL_POD_SPEC_HASH,
};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    PortBinding as EnginePortBinding, PortMap, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StopContainerOptions, UploadToContainerOptions,
};
use chrono::{DateTime, Utc};
use sha2::Digest as _;
use tokio::sync::Notify;
use uuid::Uuid;

use super::backoff::{BackoffKey, Delay};
use super::health::ProbeSet;
use super::status::{self, ContainerView};
use super::store::{ContainerRecord, PodRecord};
use super::Shared;
use crate::runtime::errors::{engine_message, is_not_found};
use crate::runtime::observe::{docker_time, ports_from_map};
use crate::runtime::spec::{memory_bytes, nano_cpus, port_key};

/// The pod-container name of the infra container.
pub(crate) const INFRA: &str = "POD";
/// Where the infra container mounts file volumes, to fill them.
const FILES_ROOT: &str = "/berth-files";

/// What one engine container of the pod is doing.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    /// Its name in the pod (`POD` for infra).
    name: String,
    /// Its spec hash label.
    hash: String,
    inspect: ContainerInspectResponse,
}

#[derive(Debug, Clone, PartialEq)]
enum Obs {
    Created,
    Running {
        started_at: DateTime<Utc>,
    },
    Exited {
        exit_code: i64,
        oom: bool,
        error: Option<String>,
        started_at: Option<DateTime<Utc>>,
        finished_at: Option<DateTime<Utc>>,
    },
}

impl Seen {
    fn obs(&self) -> Obs {
        use ContainerStateStatusEnum as S;
        let Some(state) = self.inspect.state.as_ref() else {
            return Obs::Created;
        };
        let started_at = docker_time(state.started_at.as_deref());
        match state.status {
            Some(S::CREATED) => Obs::Created,
            Some(S::RUNNING) | Some(S::PAUSED) | Some(S::RESTARTING) | Some(S::STOPPING) => {
                Obs::Running {
                    started_at: started_at.unwrap_or_else(Utc::now),
                }
            }
            _ if state.running == Some(true) => Obs::Running {
                started_at: started_at.unwrap_or_else(Utc::now),
            },
            _ => Obs::Exited {
                exit_code: state.exit_code.unwrap_or(-1),
                oom: state.oom_killed.unwrap_or(false),
                error: state.error.clone().filter(|e| !e.is_empty()),
                started_at,
                finished_at: docker_time(state.finished_at.as_deref()),
            },
        }
    }
}

/// The kubelet's view of an exited container.
fn terminated(obs: &Obs) -> Option<ContainerState> {
    match obs {
        Obs::Exited {
            exit_code,
            oom,
            error,
            started_at,
            finished_at,
        } => Some(ContainerState::Terminated {
            exit_code: *exit_code,
            reason: status::terminated_reason(*exit_code, *oom).to_owned(),
            message: error.clone(),
            started_at: *started_at,
            finished_at: *finished_at,
        }),
        _ => None,
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState::Waiting {
        reason: reason.to_owned(),
        message,
    }
}

/// The engine's name of a pod's container.
pub(crate) fn docker_name(pod: Uuid, container: &str) -> String {
    format!("berth-pod-{pod}-{container}")
}

/// The engine's name of a pod's volume.
pub(crate) fn volume_name(pod: Uuid, volume: &str) -> String {
    format!("berth-pod-{pod}-{volume}")
}

/// The hash of everything the sandbox is made from: a change recreates the pod.
fn sandbox_hash(spec: &PodSpec, shared: &Shared) -> String {
    let json = serde_json::to_vec(&(
        &spec.name,
        &spec.ports,
        &spec.volumes,
        &shared.settings.infra_image,
        &shared.settings.infra_command,
    ))
    .expect("sandbox parts serialise");
    hex::encode(&sha2::Sha256::digest(&json)[..8])
}

fn label_filters(shared: &Shared, pod: Option<Uuid>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!(
        "{}={}",
        berth_proto::LABEL_INSTANCE,
        shared.engine.instance()
    )];
    labels.push(match pod {
        Some(pod) => format!("{LABEL_POD}={pod}"),
        None => LABEL_POD.to_owned(),
    });
    HashMap::from([("label".to_owned(), labels)])
}

/// Every engine container of the pod, inspected.
async fn seen_containers(shared: &Shared, pod: Uuid) -> anyhow::Result<Vec<Seen>> {
    let docker = shared.engine.docker();
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filters(shared, Some(pod))),
            ..Default::default()
        }))
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "could not list the containers of pod {pod}: {}",
                engine_message(&err)
            )
        })?;
    let mut seen = Vec::new();
    for summary in listed {
        let Some(id) = summary.id else { continue };
        let inspect = match docker.inspect_container(&id, None).await {
            Ok(inspect) => inspect,
            Err(err) if is_not_found(&err) => continue,
            Err(err) => anyhow::bail!(
                "could not inspect container {id} of pod {pod}: {}",
                engine_message(&err)
            ),
        };
        let labels = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        seen.push(Seen {
            id,
            name: labels.get(LABEL_POD_CONTAINER).cloned().unwrap_or_default(),
            hash: labels.get(LABEL_POD_SPEC_HASH).cloned().unwrap_or_default(),
            inspect,
        });
    }
    Ok(seen)
}

async fn remove_container(shared: &Shared, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match shared
        .engine
        .docker()
        .remove_container(id, Some(options))
        .await
    {
        Ok(()) => {}
        Err(err) if is_not_found(&err) => {}
        Err(err) => {
            tracing::warn!(container = %id, error = %engine_message(&err), "could not remove a pod container")
        }
    }
}

/// Stop (SIGTERM, then SIGKILL after the grace period) and remove.
async fn stop_and_remove(shared: &Shared, id: &str) {
    let grace = i32::try_from(shared.settings.stop_grace.as_secs()).unwrap_or(i32::MAX);
    let _ = shared
        .engine
        .docker()
        .clone()
        .with_timeout(shared.settings.stop_grace + Duration::from_secs(60))
        .stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(grace),
                ..Default::default()
            }),
        )
        .await;
    remove_container(shared, id).await;
}

/// The labels of a pod container: the pod's own (never `berth.*`), then the agent's.
fn labels(spec: &PodSpec, shared: &Shared, name: &str, hash: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .filter(|(key, _)| !key.starts_with("berth."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(
        berth_proto::LABEL_INSTANCE.to_owned(),
        shared.engine.instance().to_string(),
    );
    labels.insert(LABEL_POD.to_owned(), spec.uuid.to_string());
    labels.insert(LABEL_POD_CONTAINER.to_owned(), name.to_owned());
    labels.insert(LABEL_POD_SPEC_HASH.to_owned(), hash.to_owned());
    labels
}

fn no_restart() -> Option<RestartPolicy> {
    Some(RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    })
}

/// A minimal POSIX ustar archive of `files` (relative path → content), for the
/// engine's archive upload.
pub(crate) fn tar(files: &BTreeMap<String, String>) -> Vec<u8> {
    fn octal(field: &mut [u8], value: u64) {
        let text = format!("{:0width$o}\0", value, width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    }
    let mut out = Vec::new();
    for (path, content) in files {
        let path = path.trim_start_matches("./");
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|part| part == ".." || part.is_empty())
        {
            tracing::warn!(path = %path, "skipping a file volume entry with an unsafe path");
            continue;
        }
        let (prefix, name) = if path.len() <= 100 {
            ("", path)
        } else {
            match path[..path.len().min(156)].rfind('/') {
                Some(cut) if path.len() - cut - 1 <= 100 => (&path[..cut], &path[cut + 1..]),
                _ => {
                    tracing::warn!(path = %path, "skipping a file volume entry with a path too long for the archive");
                    continue;
                }
            }
        };
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut header[100..108], 0o644);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], content.len() as u64);
        octal(&mut header[136..148], 0);
        header[148..156].copy_from_slice(b"        ");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(content.as_bytes());
        let pad = (512 - content.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Make the pod's volumes and its infra container; fill file volumes; start it.
async fn create_sandbox(shared: &Shared, spec: &PodSpec, hash: &str) -> anyhow::Result<String> {
    let docker = shared.engine.docker();
    let pod = spec.uuid;
    for volume in &spec.volumes {
        let name = volume_name(pod, &volume.name);
        if matches!(volume.source, VolumeSource::Files { .. }) {
            // Fresh content every time the sandbox is made.
            let _ = docker
                .remove_volume(&name, Some(RemoveVolumeOptions { force: true }))
                .await;
        }
        let mut labels = HashMap::new();
        labels.insert(
            berth_proto::LABEL_INSTANCE.to_owned(),
            shared.engine.instance().to_string(),
        );
        labels.insert(LABEL_POD.to_owned(), pod.to_string());
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|err| {
                anyhow::anyhow!("could not create volume {name}: {}", engine_message(&err))
            })?;
    }
    shared
        .engine
        .ensure_image(&shared.settings.infra_image)
        .await
        .map_err(|err| anyhow::anyhow!("infra image: {}", err.message))?;
    let mut port_map: PortMap = HashMap::new();
    let mut exposed = Vec::new();
    for port in &spec.ports {
        let key = port_key(port.container_port, port.protocol);
        exposed.push(key.clone());
        port_map
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(EnginePortBinding {
                host_ip: Some("0.0.0.0".to_owned()),
                host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }
    exposed.sort();
    exposed.dedup();
    let file_binds: Vec<String> = spec
        .volumes
        .iter()
        .filter(|v| matches!(v.source, VolumeSource::Files { .. }))
        .map(|v| format!("{}:{FILES_ROOT}/{}", volume_name(pod, &v.name), v.name))
        .collect();
    let name = docker_name(pod, INFRA);
    let body = ContainerCreateBody {
        image: Some(shared.settings.infra_image.clone()),
        cmd: shared.settings.infra_command.clone(),
        labels: Some(labels(spec, shared, INFRA, hash)),
        hostname: Some(spec.name.clone()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            port_bindings: (!port_map.is_empty()).then_some(port_map),
            ipc_mode: Some("shareable".to_owned()),
            binds: (!file_binds.is_empty()).then_some(file_binds),
            restart_policy: no_restart(),
            auto_remove: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "could not create the infra container: {}",
                engine_message(&err)
            )
        })?;
    for volume in &spec.volumes {
        if let VolumeSource::Files { files } = &volume.source {
            docker
                .upload_to_container(
                    &created.id,
                    Some(UploadToContainerOptions {
                        path: format!("{FILES_ROOT}/{}", volume.name),
                        ..Default::default()
                    }),
                    bollard::body_full(tar(files).into()),
                )
                .await
                .map_err(|err| {
                    anyhow::anyhow!(
                        "could not fill volume {}: {}",
                        volume.name,
                        engine_message(&err)
                    )
                })?;
        }
    }
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "could not start the infra container: {}",
                engine_message(&err)
            )
        })?;
    tracing::info!(pod.id = %pod, runtime_id = %created.id, "pod sandbox started");
    Ok(created.id)
}

/// Create and start one (init or app) container in the sandbox. On failure, the
/// kubelet's waiting reason and a message.
async fn run_container(
    shared: &Shared,
    spec: &PodSpec,
    container: &PodContainer,
    hash: &str,
    infra_id: &str,
) -> Result<String, (&'static str, String)> {
    let docker = shared.engine.docker();
    shared
        .engine
        .ensure_image(&container.image)
        .await
        .map_err(|err| ("ErrImagePull", err.message))?;
    let volumes: HashMap<&str, &VolumeSource> = spec
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), &v.source))
        .collect();
    let binds: Vec<String> = container
        .volume_mounts
        .iter()
        .map(|mount| {
            let files = matches!(
                volumes.get(mount.name.as_str()),
                Some(VolumeSource::Files { .. })
            );
            let ro = if mount.read_only || files { ":ro" } else { "" };
            format!(
                "{}:{}{ro}",
                volume_name(spec.uuid, &mount.name),
                mount.mount_path
            )
        })
        .collect();
    let name = docker_name(spec.uuid, &container.name);
    let body = ContainerCreateBody {
        image: Some(container.image.clone()),
        entrypoint: container.command.clone(),
        cmd: container.args.clone(),
        env: Some(
            container
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        working_dir: container.workdir.clone(),
        labels: Some(labels(spec, shared, &container.name, hash)),
        tty: Some(container.tty),
        open_stdin: Some(container.stdin),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{infra_id}")),
            ipc_mode: Some(format!("container:{infra_id}")),
            nano_cpus: nano_cpus(container.cpu),
            memory: memory_bytes(container.memory_mib),
            binds: (!binds.is_empty()).then_some(binds),
            restart_policy: no_restart(),
            auto_remove: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = || {
        Some(CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        })
    };
    let created = match docker.create_container(options(), body.clone()).await {
        Ok(created) => created,
        Err(err) if crate::runtime::errors::status_code(&err) == Some(409) => {
            // A leftover with the name (a crash between remove and create): replace it.
            remove_container(shared, &name).await;
            docker
                .create_container(options(), body)
                .await
                .map_err(|err| ("CreateContainerError", engine_message(&err)))?
        }
        Err(err) => return Err(("CreateContainerError", engine_message(&err))),
    };
    if let Err(err) = docker.start_container(&created.id, None).await {
        return Err(("RunContainerError", engine_message(&err)));
    }
    tracing::info!(pod.id = %spec.uuid, container = %container.name, runtime_id = %created.id, "pod container started");
    Ok(created.id)
}

/// A container with no live engine container yet: Waiting for `reason`, with the
/// restarts and last run the agent remembers of it.
fn waiting_view(
    c: &PodContainer,
    hash: String,
    cr: &ContainerRecord,
    reason: &str,
) -> ContainerView {
    ContainerView {
        name: c.name.clone(),
        image: c.image.clone(),
        spec_hash: hash,
        state: waiting(reason, None),
        last_state: cr.last_state.clone(),
        ready: false,
        started: false,
        restart_count: cr.restart_count,
        container_id: None,
    }
}

/// Counts a restart of a container whose last run ended as `term`.
fn count_restart(cr: &mut ContainerRecord, term: ContainerState, view: &mut ContainerView) {
    cr.last_state = Some(term.clone());
    cr.restart_count += 1;
    view.last_state = Some(term);
    view.restart_count = cr.restart_count;
}

/// Keeps a failed container down until `delay` has passed: Waiting in
/// CrashLoopBackOff, its last run ended as `term`.
fn back_off(
    cr: &mut ContainerRecord,
    term: ContainerState,
    view: &mut ContainerView,
    delay: &Delay,
) {
    cr.last_state = Some(term.clone());
    view.last_state = Some(term);
    view.state = waiting("CrashLoopBackOff", Some(delay.message(&view.name)));
}

/// The status of a pod the agent has not reconciled yet.
pub(crate) fn initial_status(record: &PodRecord) -> PodStatus {
    let spec = &record.spec;
    let view = |c: &PodContainer, reason: &str| {
        let cr = record.containers.get(&c.name).cloned().unwrap_or_default();
        waiting_view(c, c.spec_hash(), &cr, reason).status()
    };
    PodStatus {
        uuid: spec.uuid,
        generation: spec.generation,
        phase: PodPhase::Pending,
        conditions: Vec::new(),
        init_container_statuses: spec
            .init_containers
            .iter()
            .map(|c| view(c, "PodInitializing"))
            .collect(),
        container_statuses: spec
            .containers
            .iter()
            .map(|c| view(c, "ContainerCreating"))
            .collect(),
        pod_ip: None,
        ports: Vec::new(),
        start_time: record.start_time,
        rollback: record.rollback.clone(),
        message: None,
    }
}

/// When to try a failed image pull again.
struct PullRetry {
    at: std::time::Instant,
    period: Duration,
}

/// Waiting reasons that count against an update: it cannot get its containers going.
const START_FAILURES: &[&str] = &[
    "ImagePullBackOff",
    "CreateContainerError",
    "RunContainerError",
];

/// A sentence for a container stuck in one of [`START_FAILURES`].
fn start_failure(view: &ContainerView) -> Option<String> {
    match &view.state {
        ContainerState::Waiting { reason, message }
            if START_FAILURES.contains(&reason.as_str()) =>
        {
            Some(format!(
                "container {}: {reason}{}",
                view.name,
                message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ))
        }
        _ => None,
    }
}

/// Per-worker memory that is not persisted.
struct WorkerState {
    last: Option<PodStatus>,
    probes: ProbeSet,
    /// Image pulls that failed, by container name: kubelet's image pull backoff.
    pulls: HashMap<String, PullRetry>,
    /// Whether the last pass failed (to log a failure once, not every second).
    failing: bool,
}

/// The worker of one pod: reconcile, report, sleep; forever (aborted on delete or
/// when the agent stops).
pub(crate) async fn run_worker(
    shared: Arc<Shared>,
    record: Arc<tokio::sync::Mutex<PodRecord>>,
    wake: Arc<Notify>,
) {
    let mut state = WorkerState {
        last: None,
        probes: ProbeSet::new(Arc::clone(&wake)),
        pulls: HashMap::new(),
        failing: false,
    };
    loop {
        let wait = {
            let mut rec = record.lock().await;
            let before = rec.clone();
            let result = pass(&shared, &mut rec, &mut state).await;
            if *rec != before {
                if let Err(err) = shared.store.save(&rec) {
                    tracing::error!(pod.id = %rec.spec.uuid, error = %format!("{err:#}"), "could not persist the pod record");
                }
            }
            match result {
                Ok((status, wait)) => {
                    if state.failing {
                        tracing::info!(pod.id = %rec.spec.uuid, "pod reconcile works again");
                        state.failing = false;
                    }
                    if status::changed(state.last.as_ref(), &status) {
                        tracing::debug!(pod.id = %status.uuid, phase = ?status.phase, "pod status changed");
                        state.last = Some(status.clone());
                        shared.publish(status);
                    }
                    wait
                }
                Err(err) => {
                    if !state.failing {
                        tracing::warn!(pod.id = %rec.spec.uuid, error = %format!("{err:#}"), "pod reconcile failed; retrying");
                        state.failing = true;
                    }
                    shared.settings.resync
                }
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One reconcile pass. Returns the status and how long until the next pass is due.
async fn pass(
    shared: &Shared,
    rec: &mut PodRecord,
    state: &mut WorkerState,
) -> anyhow::Result<(PodStatus, Duration)> {
    let now = Utc::now();
    let spec = rec.spec.clone();
    let pod = spec.uuid;
    let mut wait = shared.settings.resync;
    let mut seen = seen_containers(shared, pod).await?;

    // The sandbox.
    let sandbox = sandbox_hash(&spec, shared);
    let infra = seen
        .iter()
        .find(|s| s.name == INFRA && s.hash == sandbox && matches!(s.obs(), Obs::Running { .. }))
        .cloned();
    let infra = match infra {
        Some(infra) => infra,
        None => {
            if !seen.is_empty() {
                tracing::info!(pod.id = %pod, "pod sandbox missing, stopped or changed; recreating the pod");
            }
            for s in &seen {
                if s.name != INFRA {
                    if let Some(term) = terminated(&s.obs()) {
                        rec.containers.entry(s.name.clone()).or_default().last_state = Some(term);
                    }
                }
                remove_container(shared, &s.id).await;
            }
            seen.clear();
            state.probes.clear();
            match create_sandbox(shared, &spec, &sandbox).await {
                Ok(id) => {
                    rec.start_time.get_or_insert(now);
                    let inspect = shared
                        .engine
                        .docker()
                        .inspect_container(&id, None)
                        .await
                        .context("could not inspect the new infra container")?;
                    Seen {
                        id,
                        name: INFRA.to_owned(),
                        hash: sandbox.clone(),
                        inspect,
                    }
                }
                Err(err) => {
                    let message = format!("{err:#}");
                    tracing::warn!(pod.id = %pod, error = %message, "could not make the pod sandbox");
                    remove_container(shared, &docker_name(pod, INFRA)).await;
                    let mut status = initial_status(rec);
                    status.message = Some(format!("cannot create the pod sandbox: {message}"));
                    for c in &mut status.container_statuses {
                        c.state = waiting("CreateContainerError", Some(message.clone()));
                    }
                    return Ok((status, wait.max(Duration::from_secs(1))));
                }
            }
        }
    };
    // Stray containers: duplicates of the infra, names not in the spec.
    let wanted: Vec<&str> = spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .map(|c| c.name.as_str())
        .collect();
    let mut by_name: HashMap<String, Seen> = HashMap::new();
    for s in seen {
        if s.id == infra.id {
            continue;
        }
        if !wanted.contains(&s.name.as_str()) || by_name.contains_key(&s.name) {
            tracing::info!(pod.id = %pod, container = %s.name, "removing a container that is not in the pod spec");
            stop_and_remove(shared, &s.id).await;
            continue;
        }
        by_name.insert(s.name.clone(), s);
    }
    let pod_ip = infra
        .inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|nets| {
            nets.values()
                .filter_map(|e| e.ip_address.clone())
                .find(|ip| !ip.is_empty())
        });
    let ports = ports_from_map(
        infra
            .inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref()),
    );

    let mut failures: Vec<String> = Vec::new();

    // Init containers, in order.
    let mut initialized = true;
    let mut init_failed = false;
    let mut init_views = Vec::new();
    for c in &spec.init_containers {
        let hash = c.spec_hash();
        let cr = rec.containers.entry(c.name.clone()).or_default().clone();
        let mut view = waiting_view(c, hash.clone(), &cr, "PodInitializing");
        let mut current = by_name.remove(&c.name);
        if let Some(s) = &current {
            if s.hash != hash {
                stop_and_remove(shared, &s.id).await;
                current = None;
            }
        }
        if cr.completed_hash.as_deref() == Some(hash.as_str()) {
            view.state = current
                .as_ref()
                .and_then(|s| terminated(&s.obs()))
                .unwrap_or_else(|| ContainerState::Terminated {
                    exit_code: 0,
                    reason: "Completed".to_owned(),
                    message: None,
                    started_at: None,
                    finished_at: None,
                });
            view.container_id = current.map(|s| s.id);
            view.ready = true;
            init_views.push(view);
            continue;
        }
        if !initialized || init_failed {
            init_views.push(view);
            continue;
        }
        initialized = false;
        match current.as_ref().map(|s| (s.obs(), s)) {
            Some((Obs::Running { started_at }, s)) => {
                view.state = ContainerState::Running { started_at };
                view.started = true;
                view.container_id = Some(s.id.clone());
            }
            Some((
                obs @ Obs::Exited {
                    exit_code,
                    finished_at,
                    ..
                },
                s,
            )) => {
                let term = terminated(&obs).expect("exited");
                view.container_id = Some(s.id.clone());
                if exit_code == 0 {
                    rec.containers
                        .entry(c.name.clone())
                        .or_default()
                        .completed_hash = Some(hash.clone());
                    view.state = term;
                    view.ready = true;
                    // The next init container may go at once.
                    wait = Duration::ZERO;
                } else if spec.restart_policy == berth_proto::pod::PodRestartPolicy::Never {
                    init_failed = true;
                    failures.push(format!(
                        "init container {} failed with exit code {exit_code}",
                        c.name
                    ));
                    view.state = term;
                } else {
                    let key = BackoffKey::new(pod, &c.name, &hash);
                    let delay = rec
                        .backoff
                        .next_delay(&key, now, finished_at.unwrap_or(now));
                    if delay.is_zero() {
                        remove_container(shared, &s.id).await;
                        count_restart(
                            rec.containers.entry(c.name.clone()).or_default(),
                            term,
                            &mut view,
                        );
                        view.state = start(
                            shared,
                            &spec,
                            c,
                            &hash,
                            &infra.id,
                            &mut view,
                            &mut state.pulls,
                        )
                        .await;
                    } else {
                        back_off(
                            rec.containers.entry(c.name.clone()).or_default(),
                            term,
                            &mut view,
                            &delay,
                        );
                        failures.push(format!("init container {}: CrashLoopBackOff", c.name));
                        wait = wait.min(delay.remaining);
                    }
                }
            }
            created_or_none @ (Some((Obs::Created, _)) | None) => {
                // A container created but never started is made again.
                if let Some((_, s)) = created_or_none {
                    remove_container(shared, &s.id).await;
                }
                view.state = start(
                    shared,
                    &spec,
                    c,
                    &hash,
                    &infra.id,
                    &mut view,
                    &mut state.pulls,
                )
                .await;
            }
        }
        failures.extend(start_failure(&view));
        init_views.push(view);
    }

    // App containers.
    let mut app_views = Vec::new();
    for c in &spec.containers {
        let hash = c.spec_hash();
        let cr = rec.containers.entry(c.name.clone()).or_default().clone();
        let mut view = waiting_view(c, hash.clone(), &cr, "PodInitializing");
        let mut current = by_name.remove(&c.name);
        if let Some(s) = &current {
            if s.hash != hash {
                tracing::info!(pod.id = %pod, container = %c.name, "container spec changed; replacing it");
                stop_and_remove(shared, &s.id).await;
                state.probes.forget(&c.name);
                current = None;
            }
        }
        if !initialized || init_failed {
            app_views.push(view);
            continue;
        }
        match current.as_ref().map(|s| (s.obs(), s)) {
            Some((Obs::Running { started_at }, s)) => {
                view.state = ContainerState::Running { started_at };
                view.container_id = Some(s.id.clone());
                let outcome =
                    state
                        .probes
                        .check(shared, c, &s.id, pod_ip.as_deref(), started_at, now);
                view.ready = outcome.ready;
                view.started = outcome.started;
                if let Some(reason) = outcome.kill {
                    tracing::info!(pod.id = %pod, container = %c.name, reason = %reason, "probe failed; killing the container");
                    failures.push(format!("container {}: {reason}", c.name));
                    kill_for_probe(shared, s).await;
                    state.probes.forget(&c.name);
                    // Restarted on the next pass, per policy and backoff.
                    wait = Duration::ZERO;
                } else if outcome.failing_readiness && rec.previous.is_some() {
                    failures.push(format!("container {}: readiness probe failing", c.name));
                }
            }
            Some((
                obs @ Obs::Exited {
                    exit_code,
                    finished_at,
                    ..
                },
                s,
            )) => {
                let term = terminated(&obs).expect("exited");
                view.container_id = Some(s.id.clone());
                state.probes.forget(&c.name);
                if status::should_restart(spec.restart_policy, exit_code) {
                    let key = BackoffKey::new(pod, &c.name, &hash);
                    let delay = rec
                        .backoff
                        .next_delay(&key, now, finished_at.unwrap_or(now));
                    if delay.is_zero() {
                        remove_container(shared, &s.id).await;
                        count_restart(
                            rec.containers.entry(c.name.clone()).or_default(),
                            term,
                            &mut view,
                        );
                        tracing::info!(pod.id = %pod, container = %c.name, exit_code, restarts = view.restart_count, "restarting a pod container");
                        view.state = start(
                            shared,
                            &spec,
                            c,
                            &hash,
                            &infra.id,
                            &mut view,
                            &mut state.pulls,
                        )
                        .await;
                    } else {
                        back_off(
                            rec.containers.entry(c.name.clone()).or_default(),
                            term,
                            &mut view,
                            &delay,
                        );
                        failures.push(format!("container {}: CrashLoopBackOff", c.name));
                        wait = wait.min(delay.remaining);
                    }
                } else {
                    if exit_code != 0 {
                        failures.push(format!("container {} exited with code {exit_code}", c.name));
                    }
                    view.state = term;
                }
            }
            created_or_none @ (Some((Obs::Created, _)) | None) => {
                // A container created but never started is made again.
                if let Some((_, s)) = created_or_none {
                    remove_container(shared, &s.id).await;
                }
                view.state = start(
                    shared,
                    &spec,
                    c,
                    &hash,
                    &infra.id,
                    &mut view,
                    &mut state.pulls,
                )
                .await;
            }
        }
        failures.extend(start_failure(&view));
        app_views.push(view);
    }

    // Judge a recent update.
    if let Some(previous) = rec.previous.clone() {
        let window = Duration::from_secs(u64::from(spec.rollback_window_secs));
        let age = (now - rec.applied_at).to_std().unwrap_or_default();
        if age > window {
            tracing::info!(pod.id = %pod, generation = spec.generation, "pod update held through its rollback window; keeping it");
            rec.previous = None;
        } else if let Some(failure) = failures.first() {
            let reason = format!(
                "{failure} within {} s of the update to generation {}",
                spec.rollback_window_secs, spec.generation
            );
            tracing::warn!(pod.id = %pod, failed = spec.generation, restored = previous.generation, reason = %reason, "rolling the pod update back");
            rec.rollback = Some(Rollback {
                failed_generation: spec.generation,
                restored_generation: previous.generation,
                reason,
                at: now,
            });
            rec.spec = previous;
            rec.previous = None;
            rec.applied_at = now;
            wait = Duration::ZERO;
        }
    }

    rec.backoff.gc(now);
    let phase = status::phase(spec.restart_policy, initialized, init_failed, &app_views);
    let conditions = status::conditions(state.last.as_ref(), phase, initialized, &app_views, now);
    let message = match phase {
        PodPhase::Failed => failures.first().cloned(),
        _ => None,
    };
    let status = PodStatus {
        uuid: pod,
        generation: spec.generation,
        phase,
        conditions,
        init_container_statuses: init_views.iter().map(ContainerView::status).collect(),
        container_statuses: app_views.iter().map(ContainerView::status).collect(),
        pod_ip,
        ports,
        start_time: rec.start_time,
        rollback: rec.rollback.clone(),
        message,
    };
    Ok((status, wait))
}

/// Start a container; the state to show (Running, or Waiting with the error).
async fn start(
    shared: &Shared,
    spec: &PodSpec,
    container: &PodContainer,
    hash: &str,
    infra_id: &str,
    view: &mut ContainerView,
    pulls: &mut HashMap<String, PullRetry>,
) -> ContainerState {
    if let Some(retry) = pulls.get(&container.name) {
        if std::time::Instant::now() < retry.at {
            return waiting(
                "ImagePullBackOff",
                Some(format!("Back-off pulling image \"{}\"", container.image)),
            );
        }
    }
    match run_container(shared, spec, container, hash, infra_id).await {
        Ok(id) => {
            pulls.remove(&container.name);
            view.container_id = Some(id);
            ContainerState::Running {
                started_at: Utc::now(),
            }
        }
        Err((reason, message)) => {
            if reason == "ErrImagePull" {
                // Kubelet's image pull backoff: the same base and cap as crash loops.
                let period = pulls
                    .get(&container.name)
                    .map_or(shared.settings.backoff_base, |r| {
                        (r.period * 2).min(shared.settings.backoff_max)
                    });
                pulls.insert(
                    container.name.clone(),
                    PullRetry {
                        at: std::time::Instant::now() + period,
                        period,
                    },
                );
            }
            tracing::warn!(pod.id = %spec.uuid, container = %container.name, reason, error = %message, "could not start a pod container");
            waiting(reason, Some(message))
        }
    }
}

/// Kill a container that failed its liveness or startup probe. It is left exited, so
/// the next pass restarts it per policy and backoff, as kubelet does.
async fn kill_for_probe(shared: &Shared, seen: &Seen) {
    let grace = i32::try_from(shared.settings.stop_grace.as_secs()).unwrap_or(i32::MAX);
    if let Err(err) = shared
        .engine
        .docker()
        .clone()
        .with_timeout(shared.settings.stop_grace + Duration::from_secs(60))
        .stop_container(
            &seen.id,
            Some(StopContainerOptions {
                t: Some(grace),
                ..Default::default()
            }),
        )
        .await
    {
        tracing::warn!(container = %seen.id, error = %engine_message(&err), "could not stop a container that failed its probe");
    }
}

/// Remove every container and volume of a pod.
pub(crate) async fn remove_pod(shared: &Shared, pod: Uuid) -> anyhow::Result<()> {
    let seen = seen_containers(shared, pod).await?;
    // App containers first, the sandbox last.
    for s in seen.iter().filter(|s| s.name != INFRA) {
        remove_container(shared, &s.id).await;
    }
    for s in seen.iter().filter(|s| s.name == INFRA) {
        remove_container(shared, &s.id).await;
    }
    remove_volumes(shared, Some(pod), &[]).await
}

async fn remove_volumes(shared: &Shared, pod: Option<Uuid>, keep: &[Uuid]) -> anyhow::Result<()> {
    let docker = shared.engine.docker();
    let listed = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(label_filters(shared, pod)),
        }))
        .await
        .map_err(|err| anyhow::anyhow!("could not list pod volumes: {}", engine_message(&err)))?;
    for volume in listed.volumes.unwrap_or_default() {
        let owner = volume
            .labels
            .get(LABEL_POD)
            .and_then(|v| Uuid::parse_str(v).ok());
        if owner.is_some_and(|o| keep.contains(&o)) {
            continue;
        }
        if let Err(err) = docker
            .remove_volume(&volume.name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            if !is_not_found(&err) {
                tracing::warn!(volume = %volume.name, error = %engine_message(&err), "could not remove a pod volume");
            }
        }
    }
    Ok(())
}

/// Remove the containers and volumes of pods this agent has no record of (deleted
/// while the agent was down, or a record lost).
pub(crate) async fn remove_unknown_pods(shared: &Shared, known: &[Uuid]) -> anyhow::Result<()> {
    let docker = shared.engine.docker();
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filters(shared, None)),
            ..Default::default()
        }))
        .await
        .map_err(|err| {
            anyhow::anyhow!("could not list pod containers: {}", engine_message(&err))
        })?;
    for summary in listed {
        let owner = summary
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_POD))
            .and_then(|v| Uuid::parse_str(v).ok());
        if let (Some(owner), Some(id)) = (owner, summary.id) {
            if !known.contains(&owner) {
                tracing::info!(pod.id = %owner, "removing a container of a pod this agent does not know");
                remove_container(shared, &id).await;
            }
        }
    }
    remove_volumes(shared, None, known).await
}

/// Each container's engine inspect data, by its name in the pod (`POD`: infra).
pub(crate) async fn inspect_pod(
    shared: &Shared,
    pod: Uuid,
) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for s in seen_containers(shared, pod).await? {
        out.insert(
            s.name.clone(),
            serde_json::to_value(&s.inspect).context("could not encode inspect data")?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_ustar_with_valid_checksums_and_padding() {
        let files = BTreeMap::from([
            ("a.txt".to_owned(), "hello".to_owned()),
            ("dir/b.conf".to_owned(), "x".repeat(600)),
            ("../evil".to_owned(), "no".to_owned()),
        ]);
        let archive = tar(&files);
        // a.txt: header + 1 block; dir/b.conf: header + 2 blocks; end: 2 blocks.
        assert_eq!(archive.len(), 512 * (2 + 3 + 2));
        assert_eq!(&archive[..5], b"a.txt");
        assert_eq!(&archive[257..263], b"ustar\0");
        let header = &archive[..512];
        let mut copy = header.to_vec();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
        let stored = std::str::from_utf8(&header[148..154]).unwrap();
        assert_eq!(u64::from_str_radix(stored, 8).unwrap(), sum);
        assert_eq!(&archive[512..517], b"hello");
        assert_eq!(&archive[1024..1034], b"dir/b.conf");
        assert!(!archive.windows(4).any(|w| w == b"evil"));
    }

    #[test]
    fn engine_names_carry_the_pod_and_the_container() {
        let pod = Uuid::nil();
        assert_eq!(
            docker_name(pod, "web"),
            "berth-pod-00000000-0000-0000-0000-000000000000-web"
        );
        assert_eq!(
            volume_name(pod, "data"),
            "berth-pod-00000000-0000-0000-0000-000000000000-data"
        );
    }
}
