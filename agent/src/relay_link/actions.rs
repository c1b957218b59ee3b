//! Retries are idempotent by action id.
//!
//! The service retries a command whose reply it did not get (a relay died, the
//! connection dropped, the service restarted) with a new request id and a fresh token
//! but the same action id. The agent remembers, for [`REMEMBER_FOR`], the outcome of
//! each state-changing command that carried an action id, keyed by the action and the
//! command's digest (so the kind and the target are part of the key); a retry gets the
//! recorded outcome instead of running again, and a retry that arrives while the first
//! attempt still runs waits for it. So a retried create never makes a second container
//! (nor races the first attempt for the same Docker name).
//!
//! Failures are not recorded: a retry after a failure runs again (every command is
//! idempotent, so that is safe, and a transient engine error deserves a second try).
//! Read-only commands (inspect, logs, top, images, …) are never recorded: their answer
//! must be current.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::{Command, Outcome, Reply};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// How long an outcome is remembered after it was last asked for.
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(600);
/// Outcomes remembered at once; the oldest finished ones go first.
const MAX_REMEMBERED: usize = 4096;

type Key = (Uuid, String);

struct Slot {
    outcome: Arc<OnceCell<Outcome>>,
    last_used: Instant,
}

/// The outcomes of recent action-bearing commands. Shared by every connection of the
/// agent's life, so a retry over a new connection (or a new relay) finds them.
#[derive(Default)]
pub(crate) struct Actions {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actions").finish_non_exhaustive()
    }
}

/// Whether a retry of `command` should get the first attempt's outcome.
fn remembered(command: &Command) -> bool {
    match command {
        Command::Create { .. }
        | Command::Start { .. }
        | Command::Stop { .. }
        | Command::Restart { .. }
        | Command::Kill { .. }
        | Command::Pause { .. }
        | Command::Unpause { .. }
        | Command::Remove { .. }
        | Command::Update { .. }
        | Command::ImageRemove { .. }
        | Command::ApplyPod { .. }
        | Command::DeletePod { .. }
        | Command::Commit { .. }
        | Command::PutArchive { .. } => true,
        Command::Logs { .. }
        | Command::GetArchive { .. }
        | Command::Inspect { .. }
        | Command::Top { .. }
        | Command::Resize { .. }
        | Command::Images
        | Command::ImageInspect { .. }
        | Command::RegistryLogin { .. }
        | Command::InspectPod { .. } => false,
    }
}

/// Whether the reply came from running the command now or from an earlier attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The command ran (or was not subject to retries).
    Ran,
    /// A retry: the outcome of an earlier attempt of the same action.
    Recorded,
}

impl Actions {
    /// Run `command` (signed with payload digest `digest`) by `run`, unless an attempt
    /// of the same action already succeeded or is under way.
    pub(crate) async fn run<F, Fut>(
        &self,
        action: Option<Uuid>,
        command: &Command,
        digest: &str,
        run: F,
    ) -> (Reply, Source)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Reply>,
    {
        let Some(action) = action.filter(|_| remembered(command)) else {
            return (run().await, Source::Ran);
        };
        let outcome = {
            let mut slots = self.slots.lock().expect("actions lock");
            let now = Instant::now();
            if slots.len() >= MAX_REMEMBERED {
                forget_old(&mut slots, now);
            }
            let slot = slots
                .entry((action, digest.to_owned()))
                .or_insert_with(|| Slot {
                    outcome: Arc::default(),
                    last_used: now,
                });
            slot.last_used = now;
            Arc::clone(&slot.outcome)
        };
        let mut ran = false;
        // The cell runs one initialiser at a time: a retry arriving meanwhile waits
        // for the first attempt; if that fails, the retry runs itself.
        let reply = outcome
            .get_or_try_init(|| {
                ran = true;
                run()
            })
            .await
            .cloned();
        let source = if ran { Source::Ran } else { Source::Recorded };
        (reply, source)
    }

    /// Outcomes remembered right now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().expect("actions lock").len()
    }
}

/// Drop outcomes unused for [`REMEMBER_FOR`]; if still full, the least recently used
/// finished ones. Attempts under way are never dropped (a retry must find them).
fn forget_old(slots: &mut HashMap<Key, Slot>, now: Instant) {
    let in_flight =
        |slot: &Slot| !slot.outcome.initialized() && Arc::strong_count(&slot.outcome) > 1;
    slots.retain(|_, slot| in_flight(slot) || now.duration_since(slot.last_used) < REMEMBER_FOR);
    if slots.len() < MAX_REMEMBERED {
        return;
    }
    let mut finished: Vec<(Instant, Key)> = slots
        .iter()
        .filter(|(_, slot)| !in_flight(slot))
        .map(|(key, slot)| (slot.last_used, key.clone()))
        .collect();
    finished.sort();
    let excess = slots.len() + 1 - MAX_REMEMBERED;
    for (_, key) in finished.into_iter().take(excess.max(MAX_REMEMBERED / 8)) {
        slots.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::{AgentError, AgentErrorKind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn create() -> Command {
        Command::Start {
            container: Uuid::new_v4(),
        }
    }

    #[tokio::test]
    async fn a_retry_with_the_same_action_gets_the_recorded_outcome_without_running() {
        let actions = Actions::default();
        let runs = AtomicUsize::new(0);
        let (action, command) = (Some(Uuid::new_v4()), create());
        let go = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(Outcome::Logs(format!(
                "run {}",
                runs.load(Ordering::SeqCst)
            )))
        };
        let first = actions.run(action, &command, "d", go).await;
        let second = actions.run(action, &command, "d", go).await;
        assert_eq!(first, (Ok(Outcome::Logs("run 1".into())), Source::Ran));
        assert_eq!(
            second,
            (Ok(Outcome::Logs("run 1".into())), Source::Recorded)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another action, or another command of the same action, runs.
        let _ = actions.run(Some(Uuid::new_v4()), &command, "d", go).await;
        let _ = actions.run(action, &command, "e", go).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_retry_while_the_first_attempt_runs_waits_for_it() {
        let actions = Arc::new(Actions::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (action, command) = (Some(Uuid::new_v4()), create());
        let first = {
            let (actions, runs, command) = (actions.clone(), runs.clone(), command.clone());
            tokio::spawn(async move {
                actions
                    .run(action, &command, "d", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        released.await.unwrap();
                        Ok(Outcome::Done)
                    })
                    .await
            })
        };
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let second = {
            let (actions, runs, command) = (actions.clone(), runs.clone(), command.clone());
            tokio::spawn(async move {
                actions
                    .run(action, &command, "d", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(Outcome::Done)
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished(),
            "the retry waits for the first attempt"
        );
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), (Ok(Outcome::Done), Source::Ran));
        assert_eq!(second.await.unwrap(), (Ok(Outcome::Done), Source::Recorded));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failure_is_not_recorded_so_a_retry_runs_again() {
        let actions = Actions::default();
        let (action, command) = (Some(Uuid::new_v4()), create());
        let failed = actions
            .run(action, &command, "d", || async {
                Err(AgentError::new(AgentErrorKind::Runtime, "engine hiccup"))
            })
            .await;
        assert!(failed.0.is_err());
        let retried = actions
            .run(action, &command, "d", || async { Ok(Outcome::Done) })
            .await;
        assert_eq!(retried, (Ok(Outcome::Done), Source::Ran));
    }

    #[tokio::test]
    async fn read_only_commands_and_commands_without_action_always_run() {
        let actions = Actions::default();
        let runs = AtomicUsize::new(0);
        let go = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(Outcome::Done)
        };
        let inspect = Command::Inspect {
            container: Uuid::new_v4(),
        };
        let action = Some(Uuid::new_v4());
        let _ = actions.run(action, &inspect, "d", go).await;
        let _ = actions.run(action, &inspect, "d", go).await;
        let start = create();
        let _ = actions.run(None, &start, "d", go).await;
        let _ = actions.run(None, &start, "d", go).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(actions.len(), 0);
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_attempts_under_way() {
        let mut slots = HashMap::new();
        let now = Instant::now();
        let busy: Arc<OnceCell<Outcome>> = Arc::default();
        let _waiter = Arc::clone(&busy);
        slots.insert(
            (Uuid::new_v4(), "busy".to_owned()),
            Slot {
                outcome: busy,
                last_used: now - REMEMBER_FOR * 2,
            },
        );
        for _ in 0..MAX_REMEMBERED {
            slots.insert(
                (Uuid::new_v4(), "d".to_owned()),
                Slot {
                    outcome: Arc::new(OnceCell::new_with(Some(Outcome::Done))),
                    last_used: now,
                },
            );
        }
        forget_old(&mut slots, now);
        assert!(slots.len() < MAX_REMEMBERED);
        assert!(slots.keys().any(|(_, d)| d == "busy"));
    }
}
