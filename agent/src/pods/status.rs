//! The pod's status as the kubelet reports it: phase, conditions, and per-container
//! states with reasons. Pure functions over what the reconciler saw.

use berth_proto::pod::{
    ContainerState, PodCondition, PodContainerStatus, PodPhase, PodRestartPolicy, PodStatus,
};
use chrono::{DateTime, Utc};

/// One container as the reconciler left it after a pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerView {
    /// Name in the pod.
    pub(crate) name: String,
    /// Image as given.
    pub(crate) image: String,
    /// Hash of the spec this view is about.
    pub(crate) spec_hash: String,
    /// Current state (Waiting with a reason when there is no live container).
    pub(crate) state: ContainerState,
    /// The previous run's end.
    pub(crate) last_state: Option<ContainerState>,
    /// Passing readiness (or running without a readiness probe).
    pub(crate) ready: bool,
    /// Running and past its startup probe.
    pub(crate) started: bool,
    /// Restarts by the agent.
    pub(crate) restart_count: i64,
    /// Engine id.
    pub(crate) container_id: Option<String>,
}

impl ContainerView {
    /// Into the wire type.
    pub(crate) fn status(&self) -> PodContainerStatus {
        PodContainerStatus {
            name: self.name.clone(),
            state: self.state.clone(),
            last_state: self.last_state.clone(),
            ready: self.ready,
            started: self.started,
            restart_count: self.restart_count,
            image: self.image.clone(),
            container_id: self
                .container_id
                .as_ref()
                .map(|id| format!("docker://{id}")),
            spec_hash: self.spec_hash.clone(),
        }
    }
}

/// The reason kubelet gives a terminated container: `OOMKilled`, `Completed` or `Error`.
pub(crate) fn terminated_reason(exit_code: i64, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// Whether the policy restarts a container that exited with `exit_code`.
pub(crate) fn should_restart(policy: PodRestartPolicy, exit_code: i64) -> bool {
    match policy {
        PodRestartPolicy::Always => true,
        PodRestartPolicy::OnFailure => exit_code != 0,
        PodRestartPolicy::Never => false,
    }
}

/// The exit code of a state, or of the last state behind a waiting one.
fn exit_code_of(view: &ContainerView) -> Option<i64> {
    match (&view.state, &view.last_state) {
        (ContainerState::Terminated { exit_code, .. }, _) => Some(*exit_code),
        (ContainerState::Waiting { .. }, Some(ContainerState::Terminated { exit_code, .. })) => {
            Some(*exit_code)
        }
        _ => None,
    }
}

/// Kubelet's phase over the app containers, given whether initialisation is done and
/// whether an init container failed for good.
pub(crate) fn phase(
    policy: PodRestartPolicy,
    initialized: bool,
    init_failed: bool,
    containers: &[ContainerView],
) -> PodPhase {
    if init_failed {
        return PodPhase::Failed;
    }
    if !initialized {
        return PodPhase::Pending;
    }
    let mut running = 0;
    let mut waiting = 0;
    let mut stopped = 0;
    let mut succeeded = 0;
    for view in containers {
        match &view.state {
            ContainerState::Running { .. } => running += 1,
            ContainerState::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            ContainerState::Waiting { .. } => match exit_code_of(view) {
                // A container waiting to be restarted counts as stopped.
                Some(code) => {
                    stopped += 1;
                    if code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            },
        }
    }
    if waiting > 0 {
        PodPhase::Pending
    } else if running > 0 {
        PodPhase::Running
    } else if stopped > 0 {
        if policy == PodRestartPolicy::Always {
            PodPhase::Running
        } else if stopped == succeeded {
            PodPhase::Succeeded
        } else if policy == PodRestartPolicy::Never {
            PodPhase::Failed
        } else {
            PodPhase::Running
        }
    } else {
        PodPhase::Pending
    }
}

/// One condition, keeping the previous transition time when the status did not change.
fn condition(
    previous: Option<&PodStatus>,
    kind: &str,
    ok: bool,
    reason: &str,
    now: DateTime<Utc>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let before = previous.and_then(|p| p.conditions.iter().find(|c| c.kind == kind));
    let last_transition_time = match before {
        Some(c) if c.status == status => c.last_transition_time,
        _ => now,
    };
    PodCondition {
        kind: kind.to_owned(),
        status: status.to_owned(),
        reason: (!ok).then(|| reason.to_owned()),
        last_transition_time,
    }
}

/// Kubelet's four conditions.
pub(crate) fn conditions(
    previous: Option<&PodStatus>,
    phase: PodPhase,
    initialized: bool,
    containers: &[ContainerView],
    now: DateTime<Utc>,
) -> Vec<PodCondition> {
    let completed = phase == PodPhase::Succeeded || phase == PodPhase::Failed;
    let ready = !completed && containers.iter().all(|c| c.ready);
    let not_ready_reason = if completed {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    vec![
        condition(previous, "PodScheduled", true, "", now),
        condition(
            previous,
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            now,
        ),
        condition(previous, "ContainersReady", ready, not_ready_reason, now),
        condition(previous, "Ready", ready, not_ready_reason, now),
    ]
}

/// Whether two statuses differ in anything but bookkeeping, so the agent reports only
/// real changes.
pub(crate) fn changed(old: Option<&PodStatus>, new: &PodStatus) -> bool {
    old != Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: ContainerState, last: Option<ContainerState>) -> ContainerView {
        ContainerView {
            name: "c".to_owned(),
            image: "i".to_owned(),
            spec_hash: "h".to_owned(),
            state,
            last_state: last,
            ready: false,
            started: false,
            restart_count: 0,
            container_id: None,
        }
    }

    fn terminated(code: i64) -> ContainerState {
        ContainerState::Terminated {
            exit_code: code,
            reason: terminated_reason(code, false).to_owned(),
            message: None,
            started_at: None,
            finished_at: None,
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState::Waiting {
            reason: reason.to_owned(),
            message: None,
        }
    }

    #[test]
    fn reasons_follow_the_exit_and_the_oom_flag() {
        assert_eq!(terminated_reason(0, false), "Completed");
        assert_eq!(terminated_reason(2, false), "Error");
        assert_eq!(terminated_reason(137, true), "OOMKilled");
    }

    #[test]
    fn restart_policies_decide_on_the_exit_code() {
        use PodRestartPolicy::*;
        assert!(should_restart(Always, 0) && should_restart(Always, 1));
        assert!(!should_restart(OnFailure, 0) && should_restart(OnFailure, 1));
        assert!(!should_restart(Never, 0) && !should_restart(Never, 1));
    }

    #[test]
    fn phases_follow_kubelet() {
        use PodRestartPolicy::*;
        let running = view(
            ContainerState::Running {
                started_at: Utc::now(),
            },
            None,
        );
        assert_eq!(
            phase(Always, false, false, std::slice::from_ref(&running)),
            PodPhase::Pending
        );
        assert_eq!(phase(Never, true, true, &[]), PodPhase::Failed);
        assert_eq!(
            phase(
                Always,
                true,
                false,
                &[view(waiting("ContainerCreating"), None)]
            ),
            PodPhase::Pending
        );
        assert_eq!(
            phase(Always, true, false, std::slice::from_ref(&running)),
            PodPhase::Running
        );
        assert_eq!(
            phase(Never, true, false, &[view(terminated(0), None)]),
            PodPhase::Succeeded
        );
        assert_eq!(
            phase(OnFailure, true, false, &[view(terminated(0), None)]),
            PodPhase::Succeeded
        );
        assert_eq!(
            phase(Never, true, false, &[view(terminated(1), None)]),
            PodPhase::Failed
        );
        assert_eq!(
            phase(Always, true, false, &[view(terminated(0), None)]),
            PodPhase::Running
        );
        // Crash-looping: waiting with a last state counts as stopped.
        assert_eq!(
            phase(
                OnFailure,
                true,
                false,
                &[view(waiting("CrashLoopBackOff"), Some(terminated(1)))]
            ),
            PodPhase::Running
        );
        assert_eq!(
            phase(Never, true, false, &[running, view(terminated(1), None)]),
            PodPhase::Running
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let t0 = Utc::now() - chrono::Duration::seconds(30);
        let mut ready = view(ContainerState::Running { started_at: t0 }, None);
        ready.ready = true;
        let first = conditions(None, PodPhase::Running, true, &[ready.clone()], t0);
        let status = PodStatus {
            uuid: uuid::Uuid::nil(),
            generation: 1,
            phase: PodPhase::Running,
            conditions: first,
            init_container_statuses: Vec::new(),
            container_statuses: Vec::new(),
            pod_ip: None,
            ports: Vec::new(),
            start_time: None,
            rollback: None,
            message: None,
        };
        let now = Utc::now();
        let again = conditions(
            Some(&status),
            PodPhase::Running,
            true,
            &[ready.clone()],
            now,
        );
        assert!(again
            .iter()
            .all(|c| c.last_transition_time == t0 && c.status == "True"));
        ready.ready = false;
        let after = conditions(Some(&status), PodPhase::Running, true, &[ready], now);
        let r = after.iter().find(|c| c.kind == "Ready").unwrap();
        assert_eq!((r.status.as_str(), r.last_transition_time), ("False", now));
        assert_eq!(r.reason.as_deref(), Some("ContainersNotReady"));
    }
}
