//! The agent's own record of its pods, on its disk: the desired spec, the previous spec
//! (for rollback), restart counts, last terminations and the crash-loop backoff.
//!
//! One JSON file per pod under `<state dir>/pods/<uuid>.json`, written atomically
//! (temporary file, fsync, rename), so a crash at any moment leaves either the old or
//! the new record, never a torn one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use berth_proto::pod::{ContainerState, PodSpec, Rollback};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backoff::Backoff;

/// What the agent remembers about one container of a pod, across its own restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    /// Restarts by the agent (not counting replacements for a changed spec).
    #[serde(default)]
    pub(crate) restart_count: i64,
    /// The last run's end, kept after its engine container is replaced.
    #[serde(default)]
    pub(crate) last_state: Option<ContainerState>,
    /// For init containers: the spec hash that ran to a successful exit.
    #[serde(default)]
    pub(crate) completed_hash: Option<String>,
}

/// Everything persisted about one pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PodRecord {
    /// The spec being reconciled towards.
    pub(crate) spec: PodSpec,
    /// The spec before the last update, kept until the update is judged good (the
    /// rollback window passed) or rolled back.
    #[serde(default)]
    pub(crate) previous: Option<PodSpec>,
    /// When `spec` was applied.
    pub(crate) applied_at: DateTime<Utc>,
    /// When the pod first started on this agent.
    #[serde(default)]
    pub(crate) start_time: Option<DateTime<Utc>>,
    /// Per container name (init and app).
    #[serde(default)]
    pub(crate) containers: BTreeMap<String, ContainerRecord>,
    /// Kubelet's crash-loop backoff, keyed by (pod, container, spec hash).
    pub(crate) backoff: Backoff,
    /// The last rollback, reported in the status.
    #[serde(default)]
    pub(crate) rollback: Option<Rollback>,
}

/// The directory of pod records.
#[derive(Debug, Clone)]
pub(crate) struct PodStore {
    dir: PathBuf,
}

impl PodStore {
    /// Open (creating) `<state_dir>/pods`.
    pub(crate) fn open(state_dir: &Path) -> anyhow::Result<PodStore> {
        let dir = state_dir.join("pods");
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "cannot create the pod state directory {}; give the agent a writable state \
                 directory (--state-dir or BERTH_AGENT_STATE_DIR)",
                dir.display()
            )
        })?;
        Ok(PodStore { dir })
    }

    fn path(&self, pod: Uuid) -> PathBuf {
        self.dir.join(format!("{pod}.json"))
    }

    /// Every record on disk. A record that cannot be read is logged and skipped (kept
    /// on disk for a human to look at), so one bad file does not stop the others.
    pub(crate) fn load_all(&self) -> anyhow::Result<Vec<PodRecord>> {
        let mut records = Vec::new();
        let entries = std::fs::read_dir(&self.dir).with_context(|| {
            format!("cannot list the pod state directory {}", self.dir.display())
        })?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<PodRecord>(&bytes)?));
            match parsed {
                Ok(record) => records.push(record),
                Err(err) => tracing::error!(
                    path = %path.display(),
                    error = %format!("{err:#}"),
                    "skipping an unreadable pod record; move it away or fix it"
                ),
            }
        }
        Ok(records)
    }

    /// Write the record atomically.
    pub(crate) fn save(&self, record: &PodRecord) -> anyhow::Result<()> {
        let path = self.path(record.spec.uuid);
        let tmp = self.dir.join(format!(".{}.json.tmp", record.spec.uuid));
        let bytes = serde_json::to_vec_pretty(record).context("cannot encode a pod record")?;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("cannot write the pod record {}", path.display()))
    }

    /// Forget a pod (no error when it is not there).
    pub(crate) fn remove(&self, pod: Uuid) -> anyhow::Result<()> {
        match std::fs::remove_file(self.path(pod)) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| {
                format!("cannot remove the pod record {}", self.path(pod).display())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::pod::{PodContainer, PodRestartPolicy};
    use std::time::Duration;

    fn spec() -> PodSpec {
        PodSpec {
            uuid: Uuid::new_v4(),
            name: "p".to_owned(),
            generation: 1,
            restart_policy: PodRestartPolicy::Always,
            init_containers: Vec::new(),
            containers: vec![serde_json::from_value::<PodContainer>(serde_json::json!({
                "name": "a", "image": "img"
            }))
            .unwrap()],
            volumes: Vec::new(),
            ports: Vec::new(),
            labels: BTreeMap::new(),
            rollback_window_secs: 60,
        }
    }

    #[test]
    fn records_survive_a_save_and_load_and_removal_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("berth-pod-store-{}", Uuid::new_v4()));
        let store = PodStore::open(&dir).unwrap();
        let mut record = PodRecord {
            spec: spec(),
            previous: None,
            applied_at: Utc::now(),
            start_time: None,
            containers: BTreeMap::new(),
            backoff: Backoff::new(Duration::from_secs(10), Duration::from_secs(300)),
            rollback: None,
        };
        record.containers.insert(
            "a".to_owned(),
            ContainerRecord {
                restart_count: 4,
                ..Default::default()
            },
        );
        store.save(&record).unwrap();
        std::fs::write(dir.join("pods").join("garbage.json"), b"{").unwrap();
        let loaded = store.load_all().unwrap();
        assert_eq!(loaded.len(), 1, "the unreadable file is skipped");
        assert_eq!(loaded[0].spec, record.spec);
        assert_eq!(loaded[0].containers["a"].restart_count, 4);
        store.remove(record.spec.uuid).unwrap();
        store.remove(record.spec.uuid).unwrap();
        assert!(store.load_all().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
