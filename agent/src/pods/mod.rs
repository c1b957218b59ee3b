//! Agent-side kubelet: pods (capsules) kept on the agent's disk and reconciled.
//!
//! ```text
//!  ApplyPod ─▶ Kubelet::apply ─▶ store (disk) ─▶ wake the pod's worker
//!  worker (one task per pod): loop { reconcile pass; report status if changed;
//!                                    sleep until woken, a backoff ends, or resync }
//!  status changes ─▶ broadcast ─▶ relay session (ContainerEvent::Pod)
//! ```
//!
//! Workers run whether or not the relay is connected, and a restarted agent loads the
//! store and carries on (restart counts and backoff included). Pod containers carry
//! `berth.instance` and `berth.pod*` labels but never `berth.container`, so the
//! per-container observation leaves them alone.

pub mod backoff;
mod health;
pub mod probes;
mod reconcile;
mod status;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::pod::{PodPhase, PodSpec, PodStatus};
use berth_proto::{AgentError, AgentErrorKind, ContainerEvent};
use chrono::Utc;
use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

use crate::runtime::Runtime;
use store::{PodRecord, PodStore};

/// How the kubelet runs.
#[derive(Debug, Clone)]
pub struct PodSettings {
    /// Where pod records are kept (`<dir>/pods/<uuid>.json`); `None`: a directory
    /// named after the instance under the system's temporary directory.
    pub state_dir: Option<PathBuf>,
    /// First crash-loop back-off period (kubelet: 10 s).
    pub backoff_base: Duration,
    /// Longest back-off period (kubelet: 300 s).
    pub backoff_max: Duration,
    /// A container that ran this long starts its back-off afresh (kubelet: 600 s).
    pub backoff_reset: Duration,
    /// Image of each pod's infra container, which holds the network namespace and
    /// the published ports.
    pub infra_image: String,
    /// Command of the infra container; `None` keeps the image's (right for pause
    /// images). It must block forever.
    pub infra_command: Option<Vec<String>>,
    /// Longest time between two reconcile passes of a pod (kubelet relists every 1 s).
    pub resync: Duration,
    /// How long a container may take to stop after SIGTERM before SIGKILL (when
    /// killed for a failed probe or replaced by an update).
    pub stop_grace: Duration,
}

/// Kubernetes' pause image: holds namespaces and does nothing else.
pub const DEFAULT_INFRA_IMAGE: &str = "registry.k8s.io/pause:3.10";

impl Default for PodSettings {
    fn default() -> Self {
        PodSettings {
            state_dir: None,
            backoff_base: backoff::DEFAULT_BASE,
            backoff_max: backoff::DEFAULT_MAX,
            backoff_reset: backoff::DEFAULT_MAX * 2,
            infra_image: DEFAULT_INFRA_IMAGE.to_owned(),
            infra_command: None,
            resync: Duration::from_secs(1),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// One pod's worker and its record.
struct Worker {
    record: Arc<tokio::sync::Mutex<PodRecord>>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// State shared by the kubelet handle and the pod workers.
pub(crate) struct Shared {
    engine: Runtime,
    store: PodStore,
    settings: PodSettings,
    workers: Mutex<HashMap<Uuid, Worker>>,
    statuses: Mutex<HashMap<Uuid, PodStatus>>,
    events: broadcast::Sender<ContainerEvent>,
}

impl Shared {
    /// Record and broadcast a new status.
    fn publish(&self, status: PodStatus) {
        self.statuses
            .lock()
            .expect("statuses lock")
            .insert(status.uuid, status.clone());
        // Nobody listening (no relay connection) is fine: the session sends every
        // status when it connects.
        let _ = self.events.send(ContainerEvent::Pod {
            status: Box::new(status),
        });
    }
}

/// The agent's kubelet. Cheap to clone.
#[derive(Clone)]
pub struct Kubelet {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("instance", &self.shared.engine.instance())
            .finish_non_exhaustive()
    }
}

/// Stops every pod worker when dropped (the containers stay on the engine; a new
/// agent picks them up from the store).
pub struct KubeletGuard {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KubeletGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletGuard").finish_non_exhaustive()
    }
}

impl Drop for KubeletGuard {
    fn drop(&mut self) {
        for (_, worker) in self.shared.workers.lock().expect("workers lock").drain() {
            worker.task.abort();
        }
    }
}

fn internal(err: anyhow::Error) -> AgentError {
    AgentError::new(AgentErrorKind::Runtime, format!("{err:#}"))
}

impl Kubelet {
    /// Open the store, remove containers of pods it does not know, and start a worker
    /// per stored pod.
    pub(crate) async fn start(
        engine: Runtime,
        mut settings: PodSettings,
    ) -> anyhow::Result<(Kubelet, KubeletGuard)> {
        let instance = engine.instance();
        let state_dir = settings
            .state_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("berth-agent-{instance}")));
        settings.state_dir = Some(state_dir.clone());
        let store = PodStore::open(&state_dir)?;
        let records = store.load_all()?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            engine,
            store,
            settings,
            workers: Mutex::default(),
            statuses: Mutex::default(),
            events,
        });
        let known: Vec<Uuid> = records.iter().map(|r| r.spec.uuid).collect();
        if let Err(err) = reconcile::remove_unknown_pods(&shared, &known).await {
            tracing::warn!(instance.id = %instance, error = %format!("{err:#}"), "could not clean up the containers of forgotten pods");
        }
        tracing::info!(
            instance.id = %instance,
            pods = records.len(),
            state_dir = %state_dir.display(),
            "pod manager started"
        );
        let kubelet = Kubelet {
            shared: Arc::clone(&shared),
        };
        for mut record in records {
            let s = &shared.settings;
            record
                .backoff
                .set_limits(s.backoff_base, s.backoff_max, s.backoff_reset);
            shared.publish(reconcile::initial_status(&record));
            kubelet.spawn(record);
        }
        Ok((kubelet, KubeletGuard { shared }))
    }

    fn spawn(&self, record: PodRecord) {
        let uuid = record.spec.uuid;
        let record = Arc::new(tokio::sync::Mutex::new(record));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(reconcile::run_worker(
            Arc::clone(&self.shared),
            Arc::clone(&record),
            Arc::clone(&wake),
        ));
        let old = self
            .shared
            .workers
            .lock()
            .expect("workers lock")
            .insert(uuid, Worker { record, wake, task });
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// Take a desired spec: store it and let the pod's worker converge.
    ///
    /// Re-applying the spec in force, or a generation the agent rolled back, changes
    /// nothing. Answers the status as it is now (later changes follow as events).
    pub(crate) async fn apply(&self, spec: PodSpec) -> Result<PodStatus, AgentError> {
        let uuid = spec.uuid;
        let existing = {
            let workers = self.shared.workers.lock().expect("workers lock");
            workers
                .get(&uuid)
                .map(|w| (Arc::clone(&w.record), Arc::clone(&w.wake)))
        };
        let Some((record, wake)) = existing else {
            let s = &self.shared.settings;
            let record = PodRecord {
                spec,
                previous: None,
                applied_at: Utc::now(),
                start_time: None,
                containers: BTreeMap::new(),
                backoff: backoff::Backoff::with_reset(
                    s.backoff_base,
                    s.backoff_max,
                    s.backoff_reset,
                ),
                rollback: None,
            };
            self.shared.store.save(&record).map_err(internal)?;
            let status = reconcile::initial_status(&record);
            self.shared.publish(status.clone());
            tracing::info!(pod.id = %uuid, generation = record.spec.generation, "pod accepted");
            self.spawn(record);
            return Ok(status);
        };
        {
            let mut record = record.lock().await;
            let rolled_back = record
                .rollback
                .as_ref()
                .is_some_and(|r| r.failed_generation == spec.generation);
            if record.spec == spec || rolled_back || spec.generation < record.spec.generation {
                tracing::debug!(pod.id = %uuid, generation = spec.generation, "pod spec unchanged, rolled back or stale");
            } else {
                tracing::info!(
                    pod.id = %uuid,
                    from = record.spec.generation,
                    to = spec.generation,
                    "pod update accepted"
                );
                let old = std::mem::replace(&mut record.spec, spec);
                record.previous = (record.spec.rollback_window_secs > 0).then_some(old);
                record.applied_at = Utc::now();
                record.rollback = None;
                self.shared.store.save(&record).map_err(internal)?;
            }
        }
        wake.notify_one();
        Ok(self.status(uuid).unwrap_or_else(|| PodStatus {
            uuid,
            generation: 0,
            phase: PodPhase::Pending,
            conditions: Vec::new(),
            init_container_statuses: Vec::new(),
            container_statuses: Vec::new(),
            pod_ip: None,
            ports: Vec::new(),
            start_time: None,
            rollback: None,
            message: None,
        }))
    }

    /// Stop and remove the pod's containers and volumes and forget it.
    pub(crate) async fn delete(&self, pod: Uuid) -> Result<(), AgentError> {
        let worker = self
            .shared
            .workers
            .lock()
            .expect("workers lock")
            .remove(&pod);
        if let Some(worker) = worker {
            worker.task.abort();
            // Wait until the worker let go of the record, so it cannot act any more.
            let _ = worker.record.lock().await;
        }
        reconcile::remove_pod(&self.shared, pod)
            .await
            .map_err(internal)?;
        self.shared.store.remove(pod).map_err(internal)?;
        let known = self
            .shared
            .statuses
            .lock()
            .expect("statuses lock")
            .remove(&pod)
            .is_some();
        if known {
            tracing::info!(pod.id = %pod, "pod deleted");
            let _ = self
                .shared
                .events
                .send(ContainerEvent::PodRemoved { uuid: pod });
        }
        Ok(())
    }

    /// The pod's status and each container's engine inspect data.
    pub(crate) async fn inspect(
        &self,
        pod: Uuid,
    ) -> Result<(PodStatus, BTreeMap<String, serde_json::Value>), AgentError> {
        let status = self.status(pod).ok_or_else(|| {
            AgentError::new(
                AgentErrorKind::NotFound,
                format!(
                    "pod {pod} is not on instance {}; apply it first",
                    self.shared.engine.instance()
                ),
            )
        })?;
        let containers = reconcile::inspect_pod(&self.shared, pod)
            .await
            .map_err(internal)?;
        Ok((status, containers))
    }

    /// The last status of one pod.
    pub(crate) fn status(&self, pod: Uuid) -> Option<PodStatus> {
        self.shared
            .statuses
            .lock()
            .expect("statuses lock")
            .get(&pod)
            .cloned()
    }

    /// The last status of every pod.
    pub(crate) fn statuses(&self) -> Vec<PodStatus> {
        let mut all: Vec<PodStatus> = self
            .shared
            .statuses
            .lock()
            .expect("statuses lock")
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|s| s.uuid);
        all
    }

    /// Pod events from now on (`Pod` on every status change, `PodRemoved`).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.shared.events.subscribe()
    }
}
