//! Kubelet's container probes: startup, liveness and readiness, with exec, httpGet and
//! tcpSocket handlers.
//!
//! # API for the reconciler
//!
//! Start one [`ProbeRunner`] each time a container instance starts (a new engine id),
//! and drop it when that instance stops or is replaced; dropping stops its task.
//!
//! ```text
//! let runner = ProbeRunner::start(
//!     ProbeTarget { docker: docker.clone(), container_id: id.clone(), pod_ip: Some(ip) },
//!     &pod_container,          // its liveness/readiness/startup probes
//!     started_at,              // the engine's State.StartedAt of this instance
//! );
//! let status: ProbeStatus = runner.status();   // started, ready, failed
//! let mut changes = runner.watch();            // tokio watch: await changes.changed()
//! if let Some(failure) = status.failed {
//!     // liveness or startup failed: kill the container (failure.message says why),
//!     // then restart it per restart policy and backoff, with a new runner.
//! }
//! ```
//!
//! A container without probes is started and ready at once (the reconciler still
//! requires it to be running). [`check`] runs one handler once, and
//! [`ContainerProbes`]/[`ProbeState`] are the pure state machines the runner drives,
//! for callers that want to schedule checks themselves.
//!
//! # Semantics (kubelet's, restated)
//!
//! - Times are measured from the container's start. The first check of a probe runs
//!   once `initial_delay_secs` have passed, then one every `period_secs` (a check that
//!   overruns its period is followed at once by the next).
//! - A check that takes longer than `timeout_secs` fails.
//! - A probe's result changes only after `failure_threshold` consecutive failures or
//!   `success_threshold` consecutive successes (liveness and startup use 1 success,
//!   as Kubernetes requires).
//! - Initial results: liveness passing, readiness failing (not ready until a check
//!   succeeds), startup unknown.
//! - While a startup probe has not succeeded, liveness and readiness do not run and
//!   the container is neither started nor ready; once it succeeds it never runs again.
//! - A failed liveness or startup probe reports [`ProbeStatus::failed`] and stops
//!   checking: the reconciler kills the container and a new instance gets a new runner.
//! - A check that cannot be performed at all (the engine refuses the exec, e.g. the
//!   container just stopped) is an error, not a failure, and is discarded, as kubelet
//!   does.
//! - Handlers: exec runs the command in the container through the engine (success:
//!   exit 0); httpGet sends `GET http://<host or pod IP>:<port><path>` without
//!   following redirects (success: 200 ≤ status < 400); tcpSocket opens a TCP
//!   connection to the pod IP and port (success: connected).

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use berth_proto::pod::{PodContainer, Probe, ProbeHandler};
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The most of a check's output (exec output, HTTP body) kept in a failure message.
const MAX_OUTPUT: usize = 1024;

/// Which of a container's three probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeKind {
    /// Gates the other two; failing it restarts the container.
    Startup,
    /// Failing it restarts the container.
    Liveness,
    /// Decides whether the container is ready.
    Readiness,
}

impl ProbeKind {
    /// `Startup`, `Liveness` or `Readiness`, as kubelet's messages name them.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The check passed.
    Success,
    /// The check failed; why, in a sentence.
    Failure(String),
    /// The check could not be performed; discarded by the state machine.
    Error(String),
}

/// A probe's published result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeResult {
    /// Not decided yet (a startup probe before its first verdict).
    Unknown,
    /// Passing.
    Success,
    /// Failing.
    Failure,
}

/// A liveness or startup probe that failed: the container must be killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFailure {
    /// Liveness or startup.
    pub kind: ProbeKind,
    /// E.g. `Liveness probe failed: command exited with 1: …`.
    pub message: String,
}

/// A container's probes as the reconciler needs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// Past its startup probe (or it has none): kubelet's `started`.
    pub started: bool,
    /// Started and passing its readiness probe (or it has none): kubelet's `ready`.
    pub ready: bool,
    /// Set once a liveness or startup probe has failed.
    pub failed: Option<ProbeFailure>,
}

/// One probe of one container instance: kubelet's per-probe worker, without I/O.
///
/// Times are offsets from the container's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    kind: ProbeKind,
    probe: Probe,
    result: ProbeResult,
    /// The last check's verdict and how many in a row agreed.
    last: Option<bool>,
    run: u32,
    next_at: Duration,
    /// Stopped: a liveness/startup failure (until the container is replaced) or a
    /// startup success (for good).
    done: bool,
    message: Option<String>,
}

impl ProbeState {
    /// A probe of a container that has just started.
    pub fn new(kind: ProbeKind, probe: Probe) -> ProbeState {
        let result = match kind {
            ProbeKind::Startup => ProbeResult::Unknown,
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Readiness => ProbeResult::Failure,
        };
        ProbeState {
            kind,
            next_at: Duration::from_secs(u64::from(probe.initial_delay_secs)),
            probe,
            result,
            last: None,
            run: 0,
            done: false,
            message: None,
        }
    }

    /// Which probe.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The probe's spec.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The published result.
    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// Why the last failing check failed.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// When the next check is due, or `None` when this probe checks no more.
    pub fn next_due(&self) -> Option<Duration> {
        (!self.done).then_some(self.next_at)
    }

    /// How long a check may take (at least 1 s).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.probe.timeout_secs.max(1)))
    }

    fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.probe.period_secs.max(1)))
    }

    fn success_threshold(&self) -> u32 {
        match self.kind {
            ProbeKind::Readiness => self.probe.success_threshold.max(1),
            ProbeKind::Liveness | ProbeKind::Startup => 1,
        }
    }

    /// Hold the next check until at least `at` (startup gating).
    fn not_before(&mut self, at: Duration) {
        self.next_at = self.next_at.max(at);
    }

    /// Record a check that started at `at`; returns whether the published result
    /// changed.
    pub fn record(&mut self, at: Duration, outcome: &ProbeOutcome) -> bool {
        if self.done {
            return false;
        }
        self.next_at = (self.next_at + self.period()).max(at);
        let success = match outcome {
            ProbeOutcome::Success => true,
            ProbeOutcome::Failure(message) => {
                self.message = Some(message.clone());
                false
            }
            ProbeOutcome::Error(message) => {
                tracing::debug!(probe = %self.kind, error = %message, "probe check not performed");
                return false;
            }
        };
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.success_threshold()
        } else {
            self.probe.failure_threshold.max(1)
        };
        if self.run < threshold {
            return false;
        }
        let result = if success {
            ProbeResult::Success
        } else {
            ProbeResult::Failure
        };
        let changed = result != self.result;
        self.result = result;
        match (self.kind, result) {
            (ProbeKind::Liveness | ProbeKind::Startup, ProbeResult::Failure) => self.done = true,
            (ProbeKind::Startup, ProbeResult::Success) => self.done = true,
            _ => {}
        }
        changed
    }
}

/// The probes of one container instance, with startup gating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProbes {
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
}

impl ContainerProbes {
    /// The probes of `container`, for an instance that has just started.
    pub fn new(container: &PodContainer) -> ContainerProbes {
        let state = |kind, probe: &Option<Probe>| {
            probe
                .as_ref()
                .map(|probe| ProbeState::new(kind, probe.clone()))
        };
        ContainerProbes {
            startup: state(ProbeKind::Startup, &container.startup_probe),
            liveness: state(ProbeKind::Liveness, &container.liveness_probe),
            readiness: state(ProbeKind::Readiness, &container.readiness_probe),
        }
    }

    /// One of the probes, if the container has it.
    pub fn get(&self, kind: ProbeKind) -> Option<&ProbeState> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }

    fn get_mut(&mut self, kind: ProbeKind) -> Option<&mut ProbeState> {
        match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
        }
    }

    fn started(&self) -> bool {
        self.startup
            .as_ref()
            .is_none_or(|startup| startup.result == ProbeResult::Success)
    }

    /// The probes that may run now: only startup until it has succeeded.
    fn active(&self) -> impl Iterator<Item = &ProbeState> {
        let started = self.started();
        [&self.startup, &self.liveness, &self.readiness]
            .into_iter()
            .flatten()
            .filter(move |state| started || state.kind == ProbeKind::Startup)
    }

    /// When the next check of any probe is due; `None` when none will run again.
    pub fn next_due(&self) -> Option<Duration> {
        if self.status().failed.is_some() {
            return None;
        }
        self.active().filter_map(ProbeState::next_due).min()
    }

    /// The probes whose check is due at `at`.
    pub fn due(&self, at: Duration) -> Vec<ProbeKind> {
        if self.status().failed.is_some() {
            return Vec::new();
        }
        self.active()
            .filter(|state| state.next_due().is_some_and(|due| due <= at))
            .map(ProbeState::kind)
            .collect()
    }

    /// Record a check of `kind` that started at `at`; returns whether
    /// [`ContainerProbes::status`] changed.
    pub fn record(&mut self, kind: ProbeKind, at: Duration, outcome: &ProbeOutcome) -> bool {
        let before = self.status();
        if let Some(state) = self.get_mut(kind) {
            state.record(at, outcome);
        }
        if kind == ProbeKind::Startup && self.started() {
            // Kubelet starts the other probes' clocks at container start; the first
            // checks after startup succeeds happen as soon as their delay allows.
            for state in [&mut self.liveness, &mut self.readiness]
                .into_iter()
                .flatten()
            {
                state.not_before(at);
            }
        }
        self.status() != before
    }

    /// Started, ready, failed.
    pub fn status(&self) -> ProbeStatus {
        let started = self.started();
        let ready = started
            && self
                .readiness
                .as_ref()
                .is_none_or(|readiness| readiness.result == ProbeResult::Success);
        let failed = [&self.startup, &self.liveness]
            .into_iter()
            .flatten()
            .find(|state| state.result == ProbeResult::Failure)
            .map(|state| ProbeFailure {
                kind: state.kind,
                message: format!(
                    "{} probe failed: {}",
                    state.kind,
                    state.message.as_deref().unwrap_or("no detail")
                ),
            });
        ProbeStatus {
            started,
            ready,
            failed,
        }
    }
}

/// Where a container instance's checks go.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The engine, for exec checks.
    pub docker: Docker,
    /// The engine's id (or name) of the container instance, for exec checks.
    pub container_id: String,
    /// The pod's IP (the infra container's), for httpGet and tcpSocket checks.
    pub pod_ip: Option<IpAddr>,
}

/// Run one check of `handler` against `target`, failing after `timeout`.
pub async fn check(
    target: &ProbeTarget,
    handler: &ProbeHandler,
    timeout: Duration,
) -> ProbeOutcome {
    let run = async {
        match handler {
            ProbeHandler::Exec { command } => exec(target, command).await,
            ProbeHandler::HttpGet { path, port, host } => {
                http_get(target, host.as_deref(), *port, path, timeout).await
            }
            ProbeHandler::TcpSocket { port } => tcp_socket(target, *port).await,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Failure(format!(
            "no answer within the timeout of {}",
            seconds(timeout)
        )),
    }
}

fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// Text cut to [`MAX_OUTPUT`] bytes (on a character boundary) and trimmed.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]);
    text.trim().to_owned()
}

async fn exec(target: &ProbeTarget, command: &[String]) -> ProbeOutcome {
    if command.is_empty() {
        return ProbeOutcome::Failure("the exec probe has no command".to_owned());
    }
    let config = ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(command.to_vec()),
        ..Default::default()
    };
    let created = match target
        .docker
        .create_exec(&target.container_id, config)
        .await
    {
        Ok(created) => created,
        Err(err) => {
            return ProbeOutcome::Error(format!(
                "the engine refused to run {command:?} in container {}: {err}",
                target.container_id
            ))
        }
    };
    let options = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: None,
    };
    let mut output = Vec::new();
    match target.docker.start_exec(&created.id, Some(options)).await {
        Ok(StartExecResults::Attached {
            output: mut stream, ..
        }) => {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => {
                        if output.len() < MAX_OUTPUT {
                            output.extend_from_slice(&chunk.into_bytes());
                        }
                    }
                    Err(err) => {
                        return ProbeOutcome::Error(format!(
                            "lost the output of {command:?} in container {}: {err}",
                            target.container_id
                        ))
                    }
                }
            }
        }
        Ok(StartExecResults::Detached) => {
            return ProbeOutcome::Error("the engine ran the probe's command detached".to_owned())
        }
        Err(err) => {
            return ProbeOutcome::Error(format!(
                "the engine could not start {command:?} in container {}: {err}",
                target.container_id
            ))
        }
    }
    let code = match target.docker.inspect_exec(&created.id).await {
        Ok(inspect) => inspect.exit_code,
        Err(err) => {
            return ProbeOutcome::Error(format!(
                "cannot read the exit code of {command:?} in container {}: {err}",
                target.container_id
            ))
        }
    };
    match code {
        Some(0) => ProbeOutcome::Success,
        Some(code) => {
            let output = excerpt(&output);
            ProbeOutcome::Failure(if output.is_empty() {
                format!("command {command:?} exited with {code}")
            } else {
                format!("command {command:?} exited with {code}: {output}")
            })
        }
        None => ProbeOutcome::Error(format!(
            "the engine reports no exit code for {command:?} in container {}",
            target.container_id
        )),
    }
}

fn pod_ip(target: &ProbeTarget, what: &str) -> Result<IpAddr, ProbeOutcome> {
    target.pod_ip.ok_or_else(|| {
        ProbeOutcome::Error(format!(
            "the pod has no IP yet, so its {what} probe cannot be checked"
        ))
    })
}

fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            // Kubelet judges the first answer: 3xx counts as success.
            .redirect(reqwest::redirect::Policy::none())
            // Each check opens its own connection, as kubelet's probes do.
            .pool_max_idle_per_host(0)
            .user_agent(concat!("berth-probe/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client without TLS settings builds")
    })
}

async fn http_get(
    target: &ProbeTarget,
    host: Option<&str>,
    port: u16,
    path: &str,
    timeout: Duration,
) -> ProbeOutcome {
    let host = match host.filter(|host| !host.is_empty()) {
        Some(host) => match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => host.to_owned(),
        },
        None => match pod_ip(target, "httpGet") {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
            Ok(ip) => ip.to_string(),
            Err(outcome) => return outcome,
        },
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let url = format!("http://{host}:{port}{path}");
    let response = match http_client().get(&url).timeout(timeout).send().await {
        Ok(response) => response,
        Err(err) if err.is_timeout() => {
            return ProbeOutcome::Failure(format!(
                "GET {url}: no answer within the timeout of {}",
                seconds(timeout)
            ))
        }
        Err(err) => {
            use std::error::Error as _;
            let cause = err.source().map(ToString::to_string).unwrap_or_default();
            return ProbeOutcome::Failure(
                format!("GET {url}: {err} {cause}").trim_end().to_owned(),
            );
        }
    };
    let status = response.status();
    if (200..400).contains(&status.as_u16()) {
        return ProbeOutcome::Success;
    }
    let body = response
        .bytes()
        .await
        .map(|body| excerpt(&body))
        .unwrap_or_default();
    ProbeOutcome::Failure(if body.is_empty() {
        format!("GET {url} answered {}", status.as_u16())
    } else {
        format!("GET {url} answered {}: {body}", status.as_u16())
    })
}

async fn tcp_socket(target: &ProbeTarget, port: u16) -> ProbeOutcome {
    let ip = match pod_ip(target, "tcpSocket") {
        Ok(ip) => ip,
        Err(outcome) => return outcome,
    };
    match tokio::net::TcpStream::connect((ip, port)).await {
        Ok(_) => ProbeOutcome::Success,
        Err(err) => ProbeOutcome::Failure(format!("cannot connect to {ip}:{port}: {err}")),
    }
}

/// Drives the probes of one container instance in a task, publishing its
/// [`ProbeStatus`]. Dropping it stops the task.
#[derive(Debug)]
pub struct ProbeRunner {
    status: watch::Receiver<ProbeStatus>,
    task: JoinHandle<()>,
}

impl ProbeRunner {
    /// Start probing `container`'s instance in `target`, which started at `started_at`.
    ///
    /// Must be called inside a tokio runtime.
    pub fn start(
        target: ProbeTarget,
        container: &PodContainer,
        started_at: DateTime<Utc>,
    ) -> ProbeRunner {
        let mut probes = ContainerProbes::new(container);
        let (sender, status) = watch::channel(probes.status());
        let since_start = (Utc::now() - started_at).to_std().unwrap_or(Duration::ZERO);
        let origin = Instant::now()
            .checked_sub(since_start)
            .unwrap_or_else(Instant::now);
        let name = container.name.clone();
        let task = tokio::spawn(async move {
            while let Some(due) = probes.next_due() {
                tokio::time::sleep_until(origin + due).await;
                let at = origin.elapsed();
                let kinds = probes.due(at);
                let checks = kinds.iter().filter_map(|kind| {
                    let state = probes.get(*kind)?;
                    let (handler, timeout) = (state.probe().handler.clone(), state.timeout());
                    let target = &target;
                    Some(async move { (*kind, check(target, &handler, timeout).await) })
                });
                let outcomes = futures_util::future::join_all(checks).await;
                for (kind, outcome) in outcomes {
                    if let ProbeOutcome::Failure(message) = &outcome {
                        tracing::debug!(
                            container.id = %target.container_id,
                            pod.container = %name,
                            probe = %kind,
                            %message,
                            "probe check failed"
                        );
                    }
                    if probes.record(kind, at, &outcome) {
                        let status = probes.status();
                        tracing::info!(
                            container.id = %target.container_id,
                            pod.container = %name,
                            started = status.started,
                            ready = status.ready,
                            failed = status.failed.as_ref().map(|failure| failure.message.as_str()),
                            "probe status changed"
                        );
                        sender.send_replace(status);
                    }
                }
            }
        });
        ProbeRunner { status, task }
    }

    /// The current status.
    pub fn status(&self) -> ProbeStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of the status.
    pub fn watch(&self) -> watch::Receiver<ProbeStatus> {
        self.status.clone()
    }
}

impl Drop for ProbeRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(initial: u32, period: u32, success: u32, failure: u32) -> Probe {
        Probe {
            handler: ProbeHandler::TcpSocket { port: 80 },
            initial_delay_secs: initial,
            period_secs: period,
            timeout_secs: 1,
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn fail() -> ProbeOutcome {
        ProbeOutcome::Failure("down".to_owned())
    }

    fn container(
        startup: Option<Probe>,
        liveness: Option<Probe>,
        readiness: Option<Probe>,
    ) -> PodContainer {
        PodContainer {
            name: "web".to_owned(),
            image: "busybox".to_owned(),
            command: None,
            args: None,
            env: Default::default(),
            workdir: None,
            cpu: 0.0,
            memory_mib: 0,
            volume_mounts: Vec::new(),
            stdin: false,
            tty: false,
            liveness_probe: liveness,
            readiness_probe: readiness,
            startup_probe: startup,
        }
    }

    #[test]
    fn kubelet_defaults_come_from_the_contract() {
        let probe: Probe = serde_json::from_value(
            serde_json::json!({"handler": {"kind": "tcp_socket", "port": 80}}),
        )
        .unwrap();
        assert_eq!(probe, probe_defaults());
        fn probe_defaults() -> Probe {
            Probe {
                handler: ProbeHandler::TcpSocket { port: 80 },
                initial_delay_secs: 0,
                period_secs: 10,
                timeout_secs: 1,
                success_threshold: 1,
                failure_threshold: 3,
            }
        }
    }

    #[test]
    fn initial_results_are_kubelets() {
        let p = probe(0, 10, 1, 3);
        assert_eq!(
            ProbeState::new(ProbeKind::Liveness, p.clone()).result(),
            ProbeResult::Success
        );
        assert_eq!(
            ProbeState::new(ProbeKind::Readiness, p.clone()).result(),
            ProbeResult::Failure
        );
        assert_eq!(
            ProbeState::new(ProbeKind::Startup, p).result(),
            ProbeResult::Unknown
        );
    }

    #[test]
    fn first_check_waits_for_the_initial_delay_then_every_period() {
        let mut state = ProbeState::new(ProbeKind::Liveness, probe(5, 3, 1, 3));
        assert_eq!(state.next_due(), Some(secs(5)));
        state.record(secs(5), &ProbeOutcome::Success);
        assert_eq!(state.next_due(), Some(secs(8)));
        state.record(secs(8), &ProbeOutcome::Success);
        assert_eq!(state.next_due(), Some(secs(11)));
    }

    #[test]
    fn a_check_that_overran_its_period_is_followed_at_once() {
        let mut state = ProbeState::new(ProbeKind::Liveness, probe(0, 1, 1, 3));
        state.record(secs(4), &fail());
        assert_eq!(state.next_due(), Some(secs(4)));
    }

    #[test]
    fn liveness_fails_only_after_the_failure_threshold_in_a_row() {
        let mut state = ProbeState::new(ProbeKind::Liveness, probe(0, 1, 1, 3));
        assert!(!state.record(secs(0), &fail()));
        assert!(!state.record(secs(1), &fail()));
        // A success in between starts the count again.
        assert!(!state.record(secs(2), &ProbeOutcome::Success));
        assert!(!state.record(secs(3), &fail()));
        assert!(!state.record(secs(4), &fail()));
        assert_eq!(state.result(), ProbeResult::Success);
        assert!(state.record(secs(5), &fail()));
        assert_eq!(state.result(), ProbeResult::Failure);
        assert_eq!(state.message(), Some("down"));
        // On hold until the container is replaced.
        assert_eq!(state.next_due(), None);
        assert!(!state.record(secs(6), &ProbeOutcome::Success));
        assert_eq!(state.result(), ProbeResult::Failure);
    }

    #[test]
    fn errors_are_discarded_and_do_not_break_a_run() {
        let mut state = ProbeState::new(ProbeKind::Liveness, probe(0, 1, 1, 2));
        state.record(secs(0), &fail());
        state.record(secs(1), &ProbeOutcome::Error("engine busy".to_owned()));
        assert_eq!(state.result(), ProbeResult::Success);
        assert!(state.record(secs(2), &fail()));
        assert_eq!(state.result(), ProbeResult::Failure);
    }

    #[test]
    fn readiness_follows_both_thresholds_and_keeps_checking() {
        let mut state = ProbeState::new(ProbeKind::Readiness, probe(0, 1, 2, 2));
        assert!(!state.record(secs(0), &ProbeOutcome::Success));
        assert_eq!(state.result(), ProbeResult::Failure);
        assert!(state.record(secs(1), &ProbeOutcome::Success));
        assert_eq!(state.result(), ProbeResult::Success);
        assert!(!state.record(secs(2), &fail()));
        assert!(state.record(secs(3), &fail()));
        assert_eq!(state.result(), ProbeResult::Failure);
        assert_eq!(state.next_due(), Some(secs(4)));
        assert!(!state.record(secs(4), &ProbeOutcome::Success));
        assert!(state.record(secs(5), &ProbeOutcome::Success));
    }

    #[test]
    fn liveness_and_startup_need_a_single_success() {
        let mut state = ProbeState::new(ProbeKind::Startup, probe(0, 1, 5, 3));
        assert!(state.record(secs(0), &ProbeOutcome::Success));
        assert_eq!(state.result(), ProbeResult::Success);
        assert_eq!(state.next_due(), None, "startup never runs again");
    }

    #[test]
    fn a_container_without_probes_is_started_and_ready_and_never_checked() {
        let probes = ContainerProbes::new(&container(None, None, None));
        assert_eq!(
            probes.status(),
            ProbeStatus {
                started: true,
                ready: true,
                failed: None
            }
        );
        assert_eq!(probes.next_due(), None);
    }

    #[test]
    fn readiness_alone_makes_the_container_unready_until_it_passes() {
        let mut probes = ContainerProbes::new(&container(None, None, Some(probe(2, 1, 1, 3))));
        assert!(probes.status().started);
        assert!(!probes.status().ready);
        assert_eq!(probes.next_due(), Some(secs(2)));
        assert!(probes.due(secs(1)).is_empty());
        assert_eq!(probes.due(secs(2)), vec![ProbeKind::Readiness]);
        assert!(probes.record(ProbeKind::Readiness, secs(2), &ProbeOutcome::Success));
        assert!(probes.status().ready);
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        let mut probes = ContainerProbes::new(&container(
            Some(probe(0, 1, 1, 10)),
            Some(probe(0, 1, 1, 1)),
            Some(probe(0, 1, 1, 1)),
        ));
        let status = probes.status();
        assert!(!status.started && !status.ready && status.failed.is_none());
        // Only startup runs, however long it takes.
        for t in 0..5 {
            assert_eq!(probes.due(secs(t)), vec![ProbeKind::Startup]);
            probes.record(ProbeKind::Startup, secs(t), &fail());
        }
        assert!(probes.status().failed.is_none(), "below the threshold");
        assert!(probes.record(ProbeKind::Startup, secs(5), &ProbeOutcome::Success));
        let status = probes.status();
        assert!(status.started);
        assert!(!status.ready, "readiness has not passed yet");
        // The other two are due at once, startup no more.
        assert_eq!(probes.next_due(), Some(secs(5)));
        assert_eq!(
            probes.due(secs(5)),
            vec![ProbeKind::Liveness, ProbeKind::Readiness]
        );
        probes.record(ProbeKind::Readiness, secs(5), &ProbeOutcome::Success);
        assert!(probes.status().ready);
    }

    #[test]
    fn gated_probes_still_honour_their_initial_delay() {
        let mut probes = ContainerProbes::new(&container(
            Some(probe(0, 1, 1, 3)),
            Some(probe(30, 10, 1, 3)),
            None,
        ));
        probes.record(ProbeKind::Startup, secs(2), &ProbeOutcome::Success);
        assert_eq!(probes.next_due(), Some(secs(30)));
    }

    #[test]
    fn a_failed_startup_probe_fails_the_container() {
        let mut probes = ContainerProbes::new(&container(
            Some(probe(0, 1, 1, 2)),
            Some(probe(0, 1, 1, 1)),
            None,
        ));
        probes.record(ProbeKind::Startup, secs(0), &fail());
        assert!(probes.record(ProbeKind::Startup, secs(1), &fail()));
        let failure = probes.status().failed.unwrap();
        assert_eq!(failure.kind, ProbeKind::Startup);
        assert_eq!(failure.message, "Startup probe failed: down");
        assert!(!probes.status().started);
        assert_eq!(probes.next_due(), None);
        assert!(probes.due(secs(10)).is_empty());
    }

    #[test]
    fn a_failed_liveness_probe_fails_the_container_and_stops_all_checks() {
        let mut probes = ContainerProbes::new(&container(
            None,
            Some(probe(0, 1, 1, 2)),
            Some(probe(0, 1, 1, 1)),
        ));
        probes.record(ProbeKind::Readiness, secs(0), &ProbeOutcome::Success);
        probes.record(ProbeKind::Liveness, secs(0), &fail());
        assert!(probes.status().failed.is_none());
        assert!(probes.record(ProbeKind::Liveness, secs(1), &fail()));
        let status = probes.status();
        assert_eq!(
            status.failed.map(|failure| failure.kind),
            Some(ProbeKind::Liveness)
        );
        assert_eq!(probes.next_due(), None);
    }

    #[test]
    fn zero_periods_and_timeouts_are_taken_as_one_second() {
        let mut state = ProbeState::new(ProbeKind::Readiness, probe(0, 0, 0, 0));
        assert_eq!(state.timeout(), secs(1));
        assert!(state.record(secs(0), &ProbeOutcome::Success));
        assert_eq!(state.next_due(), Some(secs(1)));
        assert!(state.record(secs(1), &fail()));
    }
}
