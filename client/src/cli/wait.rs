//! `--wait`: polling a container until it reaches a status, with a progress line on
//! stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use super::error::CliError;
use crate::client::Client;
use crate::container::{ContainerStatus, ContainerView};

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
        let view = match client.get_container(id).await {
            Ok(view) => view,
            Err(err) if err.is_not_found() => {
                progress.finish();
                return Ok(());
            }
            Err(err) => {
                progress.finish();
                return Err(CliError::from_api(err).context(format!("waiting for container {id}")));
            }
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
}
