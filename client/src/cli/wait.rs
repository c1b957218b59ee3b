//! `--wait`: polling a container until it reaches a status, with a progress line on
//! stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use super::error::CliError;
use crate::capsule::{self, CapsuleView};
use crate::client::Client;
use crate::container::{ContainerStatus, ContainerView};
use crate::error::ClientError;

/// The status a `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Created (plain `container-create`).
    Created,
    /// Running (`container-create --daemon`).
    Running,
}

/// What a polled status means for the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The target is reached.
    Done,
    /// The target can no longer be reached; the text says why.
    Failed(String),
    /// Keep polling.
    Pending,
}

/// Judges one observation of the container against the target.
pub fn judge(target: Target, view: &ContainerView) -> Verdict {
    use ContainerStatus as S;
    let reason = || {
        view.status_reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .or(view.status_detail.as_deref().filter(|d| !d.is_empty()))
            .unwrap_or("no reason given")
            .to_string()
    };
    let failed = |what: &str| {
        Verdict::Failed(format!(
            "container {} {what}: {}",
            view.name.as_deref().unwrap_or(&view.uuid.to_string()),
            reason()
        ))
    };
    match (&view.status, target) {
        (S::Error, _) => failed("went to Error"),
        (S::Dead | S::Deleted | S::Deleting, _) => {
            failed(&format!("went to {} instead of {target:?}", view.status))
        }
        (S::Created | S::Running | S::Stopped | S::Paused, Target::Created) => Verdict::Done,
        (S::Running, Target::Running) => Verdict::Done,
        (S::Stopped, Target::Running) => failed("stopped before it was seen Running"),
        _ => Verdict::Pending,
    }
}

/// A one-line progress indicator on stderr: a spinner redrawn in place on a terminal,
/// one line per change otherwise (so logs of scripted runs stay readable).
pub struct Progress {
    terminal: bool,
    started: Instant,
    frame: usize,
    line: String,
    printed: String,
}

const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

impl Progress {
    /// A progress indicator; `terminal` says whether stderr is a terminal.
    pub fn new(terminal: bool) -> Self {
        Progress {
            terminal,
            started: Instant::now(),
            frame: 0,
            line: String::new(),
            printed: String::new(),
        }
    }

    /// Shows the current state (`waiting for web: Creating (image_pulling)`).
    pub fn update(&mut self, line: String) {
        self.line = line;
        self.draw();
    }

    /// Advances the spinner.
    pub fn tick(&mut self) {
        self.frame = self.frame.wrapping_add(1);
        if self.terminal {
            self.draw();
        }
    }

    fn draw(&mut self) {
        let mut stderr = std::io::stderr().lock();
        // Progress output is best effort: a closed stderr must not fail the command.
        if self.terminal {
            let spinner = SPINNER[self.frame % SPINNER.len()];
            let elapsed = self.started.elapsed().as_secs();
            let _ = write!(stderr, "\r\x1b[2K{spinner} {} {elapsed}s", self.line);
            let _ = stderr.flush();
        } else if self.line != self.printed {
            let _ = writeln!(stderr, "{}", self.line);
            self.printed = self.line.clone();
        }
    }

    /// Clears the progress line.
    pub fn finish(&mut self) {
        if self.terminal {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

fn describe(view: &ContainerView) -> String {
    match view.task_state.as_deref().filter(|t| !t.is_empty()) {
        Some(task) => format!("{} ({task})", view.status),
        None => view.status.to_string(),
    }
}

/// Sleeps about a second between polls, turning the spinner meanwhile.
async fn pause(progress: &mut Progress) {
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        progress.tick();
    }
}

/// Polls `GET /containers/{id}` until `target` is reached, the container fails, or
/// `timeout` passes. Returns the last view.
pub async fn wait_for_status(
    client: &Client,
    id: &str,
    target: Target,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<ContainerView, CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = client.get_container(id).await.map_err(|e| {
            progress.finish();
            CliError::from_api(e).context(format!("waiting for container {id}"))
        })?;
        let label = view.name.as_deref().unwrap_or(id);
        progress.update(format!("waiting for {label}: {}", describe(&view)));
        match judge(target, &view) {
            Verdict::Done => {
                progress.finish();
                return Ok(view);
            }
            Verdict::Failed(why) => {
                progress.finish();
                return Err(CliError::new(why));
            }
            Verdict::Pending if Instant::now() >= deadline => {
                progress.finish();
                return Err(CliError::new(format!(
                    "gave up after {}s: container {label} is still {}",
                    timeout.as_secs(),
                    describe(&view)
                ))
                .with_hint("raise --wait-timeout, or check it later with osc container-show"));
            }
            Verdict::Pending => pause(progress).await,
        }
    }
}

/// What a poll during a deletion saw: the view, or `None` once the server answers
/// 404. Any other error ends the wait, as does the deletion's end.
fn still_there<T>(
    answer: Result<T, ClientError>,
    progress: &mut Progress,
    kind: &str,
    id: &str,
) -> Result<Option<T>, CliError> {
    match answer {
        Ok(view) => Ok(Some(view)),
        Err(err) if err.is_not_found() => {
            progress.finish();
            Ok(None)
        }
        Err(err) => {
            progress.finish();
            Err(CliError::from_api(err).context(format!("waiting for {kind} {id}")))
        }
    }
}

/// Polls until `GET /containers/{id}` answers 404, or the deletion fails or times out.
pub async fn wait_for_deletion(
    client: &Client,
    id: &str,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    let mut seen_deleting = false;
    loop {
        let Some(view) = still_there(client.get_container(id).await, progress, "container", id)?
        else {
            return Ok(());
        };
        progress.update(format!("deleting {id}: {}", describe(&view)));
        match view.status {
            ContainerStatus::Deleting => seen_deleting = true,
            // Error after Deleting means the deletion itself failed.
            ContainerStatus::Error if seen_deleting => {
                progress.finish();
                return Err(CliError::new(format!(
                    "deleting container {id} failed: {}",
                    view.status_reason.as_deref().unwrap_or("no reason given")
                )));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            progress.finish();
            return Err(CliError::new(format!(
                "gave up after {}s: container {id} still exists ({})",
                timeout.as_secs(),
                describe(&view)
            )));
        }
        pause(progress).await;
    }
}

/// Judges one observation of a capsule for `capsule-create --wait` and
/// `capsule-update --wait`: done when it is Running at `generation` (or later), failed on
/// Error, on a rollback of `generation`, or when its pod ended without succeeding.
pub fn judge_capsule(view: &CapsuleView, generation: Option<i64>) -> Verdict {
    let label = capsule::label_of(view, "capsule");
    let reason = || {
        view.get("status_reason")
            .and_then(serde_json::Value::as_str)
            .filter(|r| !r.is_empty())
            .or_else(|| {
                capsule::pod_status_of(view)
                    .and_then(|p| p.get("message"))
                    .and_then(serde_json::Value::as_str)
            })
            .unwrap_or("no reason given")
            .to_string()
    };
    let pod = capsule::pod_status_of(view);
    if let (Some(wanted), Some(rollback)) = (
        generation,
        pod.and_then(|p| p.get("rollback")).filter(|r| !r.is_null()),
    ) {
        if rollback
            .get("failed_generation")
            .and_then(serde_json::Value::as_i64)
            == Some(wanted)
        {
            let why = rollback
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no reason given");
            return Verdict::Failed(format!(
                "capsule {label}: the update was rolled back: {why}"
            ));
        }
    }
    let phase = pod
        .and_then(|p| p.get("phase"))
        .and_then(serde_json::Value::as_str);
    let reported_generation = pod
        .and_then(|p| p.get("generation"))
        .and_then(serde_json::Value::as_i64);
    let at_generation = match generation {
        Some(wanted) => reported_generation.is_some_and(|g| g >= wanted),
        None => true,
    };
    match capsule::status_of(view).to_ascii_lowercase().as_str() {
        "error" => Verdict::Failed(format!("capsule {label} went to Error: {}", reason())),
        "deleting" | "deleted" => Verdict::Failed(format!(
            "capsule {label} went to {} instead of Running",
            capsule::status_of(view)
        )),
        "running" if at_generation => Verdict::Done,
        // A pod whose containers all ran to completion (OnFailure/Never) is done too.
        "stopped" if at_generation && phase == Some("Succeeded") => Verdict::Done,
        "stopped" if at_generation => Verdict::Failed(format!(
            "capsule {label} stopped ({}): {}",
            phase.unwrap_or("Unknown"),
            reason()
        )),
        _ => Verdict::Pending,
    }
}

/// How long every app container must keep running (same start) before a capsule's
/// Running counts for `--wait`.
pub const STEADY_FOR: Duration = Duration::from_secs(3);

/// What identifies the current run of every app container (`name@started_at`), or
/// `None` while one of them is not running (or the view has no container statuses).
pub fn running_signature(view: &CapsuleView) -> Option<Vec<String>> {
    let statuses = capsule::pod_status_of(view)?
        .get("container_statuses")?
        .as_array()?;
    if statuses.is_empty() {
        return None;
    }
    statuses
        .iter()
        .map(|c| {
            let started = c.get("state")?.get("running")?.get("started_at")?;
            let name = c
                .get("name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?");
            Some(format!("{name}@{started}"))
        })
        .collect()
}

/// Polls `GET /capsules/{id}` until [`judge_capsule`] says done or failed, or `timeout`
/// passes. Returns the last view.
pub async fn wait_for_capsule(
    client: &Client,
    id: &str,
    generation: Option<i64>,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<CapsuleView, CliError> {
    let deadline = Instant::now() + timeout;
    // A crash-looping container is Running for a moment after each restart, so Running
    // counts only once every app container has kept running (same start) for a while.
    let mut steady: Option<(Vec<String>, Instant)> = None;
    loop {
        let view = client.get_capsule(id).await.map_err(|e| {
            progress.finish();
            CliError::from_api(e).context(format!("waiting for capsule {id}"))
        })?;
        let label = capsule::label_of(&view, id).to_string();
        progress.update(format!("waiting for {label}: {}", capsule::describe(&view)));
        let mut verdict = judge_capsule(&view, generation);
        if verdict == Verdict::Done && capsule::status_of(&view).eq_ignore_ascii_case("running") {
            verdict = match running_signature(&view) {
                // A server without per-container status: its Running is all there is.
                None if capsule::pod_status_of(&view).is_none() => Verdict::Done,
                None => {
                    steady = None;
                    Verdict::Pending
                }
                Some(signature) => match &steady {
                    Some((seen, since)) if *seen == signature => {
                        if since.elapsed() >= STEADY_FOR {
                            Verdict::Done
                        } else {
                            Verdict::Pending
                        }
                    }
                    _ => {
                        steady = Some((signature, Instant::now()));
                        Verdict::Pending
                    }
                },
            };
        }
        match verdict {
            Verdict::Done => {
                progress.finish();
                return Ok(view);
            }
            Verdict::Failed(why) => {
                progress.finish();
                return Err(CliError::new(why).with_hint(format!(
                    "see osc capsule-show {label} for every container's state"
                )));
            }
            Verdict::Pending if Instant::now() >= deadline => {
                progress.finish();
                return Err(CliError::new(format!(
                    "gave up after {}s: capsule {label} is still {}",
                    timeout.as_secs(),
                    capsule::describe(&view)
                ))
                .with_hint("raise --wait-timeout, or check it later with osc capsule-show"));
            }
            Verdict::Pending => pause(progress).await,
        }
    }
}

/// Polls until `GET /capsules/{id}` answers 404, or `timeout` passes.
pub async fn wait_for_capsule_deletion(
    client: &Client,
    id: &str,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<(), CliError> {
    let deadline = Instant::now() + timeout;
    loop {
        let Some(view) = still_there(client.get_capsule(id).await, progress, "capsule", id)? else {
            return Ok(());
        };
        progress.update(format!("deleting {id}: {}", capsule::describe(&view)));
        if Instant::now() >= deadline {
            progress.finish();
            return Err(CliError::new(format!(
                "gave up after {}s: capsule {id} still exists ({})",
                timeout.as_secs(),
                capsule::describe(&view)
            )));
        }
        pause(progress).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(status: &str, reason: Option<&str>) -> ContainerView {
        serde_json::from_value(json!({
            "uuid": "6f1c7a4e-2d35-4c8b-9a57-0a1f3c7e9b21",
            "name": "web",
            "status": status,
            "status_reason": reason,
        }))
        .unwrap()
    }

    #[test]
    fn waiting_for_created_ends_at_created_and_keeps_polling_while_creating() {
        assert_eq!(
            judge(Target::Created, &view("Creating", None)),
            Verdict::Pending
        );
        assert_eq!(
            judge(Target::Created, &view("Created", None)),
            Verdict::Done
        );
    }

    #[test]
    fn waiting_for_running_passes_created_and_ends_at_running() {
        assert_eq!(
            judge(Target::Running, &view("Created", None)),
            Verdict::Pending
        );
        assert_eq!(
            judge(Target::Running, &view("Restarting", None)),
            Verdict::Pending
        );
        assert_eq!(
            judge(Target::Running, &view("Running", None)),
            Verdict::Done
        );
    }

    #[test]
    fn error_status_fails_the_wait_with_the_status_reason() {
        let verdict = judge(
            Target::Running,
            &view("Error", Some("There are not enough hosts available.")),
        );
        assert_eq!(
            verdict,
            Verdict::Failed(
                "container web went to Error: There are not enough hosts available.".into()
            )
        );
    }

    #[test]
    fn stopping_before_running_fails_a_daemon_wait() {
        assert!(matches!(
            judge(Target::Running, &view("Stopped", None)),
            Verdict::Failed(_)
        ));
        assert_eq!(
            judge(Target::Created, &view("Stopped", None)),
            Verdict::Done
        );
    }

    fn capsule(value: serde_json::Value) -> CapsuleView {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn capsule_wait_ends_at_running_and_fails_on_error_with_the_reason() {
        let creating = capsule(json!({"name": "p", "status": "Creating"}));
        assert_eq!(judge_capsule(&creating, None), Verdict::Pending);
        let running = capsule(json!({"name": "p", "status": "Running"}));
        assert_eq!(judge_capsule(&running, None), Verdict::Done);
        let error = capsule(json!({"name": "p", "status": "Error", "status_reason": "no space"}));
        assert_eq!(
            judge_capsule(&error, None),
            Verdict::Failed("capsule p went to Error: no space".into())
        );
    }

    #[test]
    fn capsule_update_wait_needs_the_new_generation_and_fails_on_its_rollback() {
        let old = capsule(
            json!({"name": "p", "status": "Running", "pod_status": {"generation": 1, "phase": "Running"}}),
        );
        assert_eq!(judge_capsule(&old, Some(2)), Verdict::Pending);
        let new = capsule(
            json!({"name": "p", "status": "Running", "pod_status": {"generation": 2, "phase": "Running"}}),
        );
        assert_eq!(judge_capsule(&new, Some(2)), Verdict::Done);
        let rolled = capsule(json!({"name": "p", "status": "Running", "pod_status": {
            "generation": 1, "phase": "Running",
            "rollback": {"failed_generation": 2, "restored_generation": 1, "reason": "container web: CrashLoopBackOff"}
        }}));
        assert_eq!(
            judge_capsule(&rolled, Some(2)),
            Verdict::Failed(
                "capsule p: the update was rolled back: container web: CrashLoopBackOff".into()
            )
        );
    }

    #[test]
    fn running_signature_needs_every_app_container_running() {
        let both = capsule(json!({"pod_status": {"container_statuses": [
            {"name": "a", "state": {"running": {"started_at": "t1"}}},
            {"name": "b", "state": {"running": {"started_at": "t2"}}}
        ]}}));
        assert_eq!(
            running_signature(&both),
            Some(vec!["a@\"t1\"".to_string(), "b@\"t2\"".to_string()])
        );
        let crashing = capsule(json!({"pod_status": {"container_statuses": [
            {"name": "a", "state": {"running": {"started_at": "t1"}}},
            {"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
        ]}}));
        assert_eq!(running_signature(&crashing), None);
    }

    #[test]
    fn capsule_that_completed_is_done_and_one_that_failed_is_not() {
        let done = capsule(
            json!({"name": "p", "status": "Stopped", "pod_status": {"phase": "Succeeded"}}),
        );
        assert_eq!(judge_capsule(&done, None), Verdict::Done);
        let failed = capsule(
            json!({"name": "p", "status": "Stopped", "pod_status": {"phase": "Failed", "message": "init failed"}}),
        );
        assert!(
            matches!(judge_capsule(&failed, None), Verdict::Failed(why) if why.contains("Failed"))
        );
    }
}
