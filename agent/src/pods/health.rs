//! The probe runners of one pod's containers, as the reconciler uses them: one
//! [`ProbeRunner`] per running container instance, whose status changes wake the
//! pod's worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::pod::PodContainer;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::probes::{ProbeRunner, ProbeTarget};
use super::Shared;

/// What the probes say about a running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Kubelet's `ready`.
    pub(crate) ready: bool,
    /// Kubelet's `started`.
    pub(crate) started: bool,
    /// A liveness or startup failure: kill the container (why).
    pub(crate) kill: Option<String>,
    /// The readiness probe has had time to pass and has not.
    pub(crate) failing_readiness: bool,
}

struct Running {
    container_id: String,
    runner: ProbeRunner,
    forward: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// The runners of one pod, by container name.
pub(crate) struct ProbeSet {
    wake: Arc<Notify>,
    runners: HashMap<String, Running>,
}

fn has_probes(c: &PodContainer) -> bool {
    c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
}

impl ProbeSet {
    /// Runners whose changes notify `wake`.
    pub(crate) fn new(wake: Arc<Notify>) -> ProbeSet {
        ProbeSet {
            wake,
            runners: HashMap::new(),
        }
    }

    /// The verdict on the running instance `container_id` of `c`, starting its runner
    /// when it is new.
    pub(crate) fn check(
        &mut self,
        shared: &Shared,
        c: &PodContainer,
        container_id: &str,
        pod_ip: Option<&str>,
        started_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Verdict {
        if !has_probes(c) {
            self.runners.remove(&c.name);
            return Verdict {
                ready: true,
                started: true,
                kill: None,
                failing_readiness: false,
            };
        }
        let fresh = self
            .runners
            .get(&c.name)
            .is_none_or(|r| r.container_id != container_id);
        if fresh {
            let runner = ProbeRunner::start(
                ProbeTarget {
                    docker: shared.engine.docker().clone(),
                    container_id: container_id.to_owned(),
                    pod_ip: pod_ip.and_then(|ip| ip.parse::<IpAddr>().ok()),
                },
                c,
                started_at,
            );
            let mut changes = runner.watch();
            let wake = Arc::clone(&self.wake);
            let forward = tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    wake.notify_one();
                }
            });
            self.runners.insert(
                c.name.clone(),
                Running {
                    container_id: container_id.to_owned(),
                    runner,
                    forward,
                },
            );
        }
        let status = self.runners[&c.name].runner.status();
        let failing_readiness = status.started
            && !status.ready
            && c.readiness_probe.as_ref().is_some_and(|p| {
                let grace = Duration::from_secs(
                    u64::from(p.initial_delay_secs)
                        + u64::from(p.period_secs) * u64::from(p.failure_threshold.max(1))
                        + u64::from(p.timeout_secs),
                );
                (now - started_at).to_std().unwrap_or_default() > grace
            });
        Verdict {
            ready: status.ready,
            started: status.started,
            kill: status.failed.map(|f| f.message),
            failing_readiness,
        }
    }

    /// Stop the runner of a container (it stopped or is replaced).
    pub(crate) fn forget(&mut self, name: &str) {
        self.runners.remove(name);
    }

    /// Stop every runner.
    pub(crate) fn clear(&mut self) {
        self.runners.clear();
    }
}
