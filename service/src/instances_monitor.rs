//! The instances monitor: a background loop that gives idle instances back to their
//! provider and notices instances that are lost.
//!
//! Every round it looks at each instance that is not released:
//! - **Release.** An instance made on demand (any provider but `static`) that has held
//!   no container row — in any status; a row placed there is its reservation — for the
//!   idle grace period is released: the check and the status change are one
//!   transaction ([`monitor::release_if_idle`]), so a create racing with it either
//!   lands first (no release) or finds the instance gone. Then the provider removes the
//!   machine and the relay drops the agent's credential.
//! - **Failure.** The provider's view of the machine ([`InstanceProvider::status`]): a
//!   machine that failed marks the instance `error` and its containers Unknown; a
//!   machine that is gone marks them Error, since nothing of them is left. An agent
//!   disconnected for longer than `agent_lost_after` marks the containers Unknown. Each
//!   reason names the instance and says why. When the agent reports again, the
//!   reconciler marks the instance active and records the truth of each container.
//!
//! One replica runs the loop: on PostgreSQL it holds a session advisory lock; SQLite
//! is used by a single process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use uuid::Uuid;

use crate::db::models::InstanceRow;
use crate::db::{self, instances, monitor, Db, DbConnection, DbError};
use crate::providers::{static_hosts, InstanceProvider, MachineStatus};
use crate::state::AppState;

/// Key of the PostgreSQL advisory lock that elects the replica running the monitor.
const ADVISORY_LOCK_KEY: i64 = 0x6265_7274_685f_6d6f; // "berth_mo"

/// How long a machine must look failed or gone before the monitor acts on it: a
/// provider re-making an agent (after a service restart) removes it for a moment.
const SETTLE: Duration = Duration::from_secs(3);

/// Timing of the monitor.
#[derive(Debug, Clone, Copy)]
pub struct MonitorSettings {
    /// How long an instance may hold no container before it is released.
    pub idle_grace: Duration,
    /// How long an agent may stay disconnected before its containers are Unknown.
    pub agent_lost_after: Duration,
}

impl MonitorSettings {
    /// Time between rounds: often enough to honour the shorter of the two periods
    /// closely, never busier than twice a second nor lazier than every 10 s.
    fn tick(&self) -> Duration {
        (self.idle_grace.min(self.agent_lost_after) / 4)
            .clamp(Duration::from_millis(500), Duration::from_secs(10))
    }
}

/// Runs the monitor until the runtime stops.
pub async fn run(state: AppState, settings: MonitorSettings) {
    let mut monitor = Monitor {
        state,
        settings,
        started: db::now(),
        empty_since: HashMap::new(),
        failing_since: HashMap::new(),
        leader: std::sync::Mutex::new(None),
    };
    let mut interval = tokio::time::interval(settings.tick());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = monitor.round().await {
            tracing::warn!(error = %e, "instances monitor round failed; trying again next round");
        }
    }
}

struct Monitor {
    state: AppState,
    settings: MonitorSettings,
    /// When this process started watching: an agent away since before then counts as
    /// away since then, so a restart of the service does not condemn every instance.
    started: NaiveDateTime,
    /// Instances seen holding no container, and since when (by this process).
    empty_since: HashMap<String, Instant>,
    /// Instances whose machine the provider reported failed or gone, and since when.
    failing_since: HashMap<String, Instant>,
    /// On PostgreSQL, the connection holding the advisory lock (in a mutex only so that
    /// the monitor is `Sync`: a SQLite connection is not).
    leader: std::sync::Mutex<Option<diesel::r2d2::PooledConnection<db::Manager>>>,
}

impl Monitor {
    async fn round(&mut self) -> Result<(), DbError> {
        if !self.elected().await? {
            return Ok(());
        }
        let (live, counts, unfinished) = self
            .state
            .db
            .run(|c| {
                Ok((
                    monitor::live_instances(c)?,
                    monitor::container_counts(c)?,
                    monitor::release_unfinished(c)?,
                ))
            })
            .await?;
        let now = Instant::now();
        self.empty_since
            .retain(|id, _| live.iter().any(|i| &i.id == id) && !counts.contains_key(id));
        self.failing_since
            .retain(|id, _| live.iter().any(|i| &i.id == id));
        for instance in unfinished {
            self.remove_machine(instance).await;
        }
        for instance in live {
            let held = counts.get(&instance.id).copied().unwrap_or(0);
            if held == 0 {
                let since = *self.empty_since.entry(instance.id.clone()).or_insert(now);
                if now.duration_since(since) >= self.settings.idle_grace {
                    self.release(&instance).await?;
                    continue;
                }
            }
            self.watch(&instance, held).await?;
        }
        Ok(())
    }

    /// Whether this replica runs the monitor. SQLite: always (one process). PostgreSQL:
    /// while it holds the advisory lock on a connection it keeps.
    async fn elected(&mut self) -> Result<bool, DbError> {
        if self.state.db.backend() == db::Backend::Sqlite {
            return Ok(true);
        }
        let held = self.leader.get_mut().expect("leader lock").take();
        if let Some(conn) = held {
            let (conn, alive) = tokio::task::spawn_blocking(move || {
                let mut conn = conn;
                let alive =
                    diesel::connection::SimpleConnection::batch_execute(&mut *conn, "SELECT 1")
                        .is_ok();
                (conn, alive)
            })
            .await
            .map_err(|e| DbError::Unavailable(format!("database task failed: {e}")))?;
            if alive {
                *self.leader.get_mut().expect("leader lock") = Some(conn);
                return Ok(true);
            }
            tracing::warn!("lost the connection holding the instances monitor's lock");
        }
        let db = self.state.db.clone();
        let won = tokio::task::spawn_blocking(move || try_lock(&db))
            .await
            .map_err(|e| DbError::Unavailable(format!("database task failed: {e}")))??;
        if won.is_some() {
            tracing::info!("this replica runs the instances monitor");
        }
        let elected = won.is_some();
        *self.leader.get_mut().expect("leader lock") = won;
        Ok(elected)
    }

    fn provider_of(&self, instance: &InstanceRow) -> Option<Arc<dyn InstanceProvider>> {
        self.state
            .providers
            .provider()
            .filter(|p| p.name() == instance.provider)
    }

    /// Releases an idle instance: marks it released if it still holds nothing, then
    /// has its provider remove the machine.
    async fn release(&mut self, instance: &InstanceRow) -> Result<(), DbError> {
        if instance.provider == static_hosts::NAME
            || !matches!(
                instance.status.as_str(),
                instances::STATUS_ACTIVE | instances::STATUS_ERROR
            )
        {
            return Ok(());
        }
        // Without its provider here (configured otherwise now), the machine could not
        // be removed: leave the instance as it is.
        if self.provider_of(instance).is_none() {
            return Ok(());
        }
        let id = instance.id.clone();
        let status = instance.status.clone();
        let released = self
            .state
            .db
            .run(move |c| monitor::release_if_idle(c, &id, &status))
            .await?;
        self.empty_since.remove(&instance.id);
        let Some(released) = released else {
            tracing::debug!(instance.id = %instance.id, "a container was placed on the idle instance; not released");
            return Ok(());
        };
        tracing::info!(
            instance.id = %released.id,
            project.id = %released.project_id,
            provider = %released.provider,
            idle_grace_secs = self.settings.idle_grace.as_secs(),
            "releasing an idle instance"
        );
        if let Ok(uuid) = Uuid::parse_str(&released.id) {
            self.state.agents.revoke(vec![uuid]).await;
        }
        self.remove_machine(released).await;
        Ok(())
    }

    /// Has the provider remove the machine of a released instance, recording a failure
    /// on the instance so that the next round tries again.
    async fn remove_machine(&self, instance: InstanceRow) {
        let Some(provider) = self.provider_of(&instance) else {
            return;
        };
        let id = instance.id.clone();
        let error = match provider.release(instance).await {
            Ok(()) => {
                tracing::info!(instance.id = %id, "released instance's machine removed");
                None
            }
            Err(e) => {
                tracing::warn!(instance.id = %id, error = %e, "could not remove the machine of a released instance; trying again next round");
                Some(format!("Could not remove its machine: {e}"))
            }
        };
        let result = self
            .state
            .db
            .run(move |c| monitor::set_release_error(c, &id, error.as_deref()))
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record the outcome of removing a machine");
        }
    }

    /// Checks an instance that is not released: its machine, then its agent.
    async fn watch(&mut self, instance: &InstanceRow, held: i64) -> Result<(), DbError> {
        if instance.status == instances::STATUS_BUILDING || instance.agent_connected {
            // The provisioner waits for new agents; a connected agent speaks for itself.
            self.failing_since.remove(&instance.id);
            return Ok(());
        }
        if instance.status == instances::STATUS_ERROR && held == 0 {
            // Nothing left to mark; it is released after the grace period.
            return Ok(());
        }
        let machine = match self.provider_of(instance) {
            Some(p) => match p.status(instance.clone()).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(instance.id = %instance.id, error = %e, "could not ask the provider about an instance");
                    MachineStatus::Unknown
                }
            },
            None => MachineStatus::Unknown,
        };
        let now = Instant::now();
        match machine {
            MachineStatus::Failed(why) | MachineStatus::Gone(why)
                if now.duration_since(
                    *self.failing_since.entry(instance.id.clone()).or_insert(now),
                ) < SETTLE =>
            {
                tracing::debug!(instance.id = %instance.id, why, "the instance's machine looks lost; waiting to be sure");
            }
            MachineStatus::Gone(why) => {
                let reason = format!(
                    "Instance {} is gone: {why}. Its containers are lost; delete them and create them again.",
                    instance.id
                );
                let id = instance.id.clone();
                let r = reason.clone();
                let failed = self
                    .state
                    .db
                    .run(move |c| monitor::mark_gone(c, &id, &r))
                    .await?;
                if !failed.is_empty() {
                    tracing::warn!(instance.id = %instance.id, containers = failed.len(), reason, "instance gone: its containers are in Error");
                }
            }
            MachineStatus::Failed(why) => {
                let reason = format!(
                    "Instance {} failed: {why}. Its containers' state is unknown until its agent reports again.",
                    instance.id
                );
                self.mark_lost(instance, Some(instances::STATUS_ERROR), reason)
                    .await?;
            }
            MachineStatus::Running | MachineStatus::Unknown => {
                self.failing_since.remove(&instance.id);
                let away = monitor::away_since(instance).max(self.started);
                let lost_after = chrono::Duration::from_std(self.settings.agent_lost_after)
                    .unwrap_or(chrono::Duration::MAX);
                if db::now() - away >= lost_after && instance.status == instances::STATUS_ACTIVE {
                    let reason = format!(
                        "The agent of instance {} has been disconnected since {} UTC; the containers' state is unknown until it reports again.",
                        instance.id,
                        away.format("%Y-%m-%d %H:%M:%S"),
                    );
                    self.mark_lost(instance, None, reason).await?;
                }
            }
        }
        Ok(())
    }

    async fn mark_lost(
        &self,
        instance: &InstanceRow,
        status: Option<&'static str>,
        reason: String,
    ) -> Result<(), DbError> {
        let id = instance.id.clone();
        let r = reason.clone();
        let marked = self
            .state
            .db
            .run(move |c| monitor::mark_lost(c, &id, status, &r))
            .await?;
        if !marked.is_empty() {
            tracing::warn!(instance.id = %instance.id, containers = marked.len(), reason, "instance lost: its containers are Unknown");
        }
        Ok(())
    }
}

/// Takes the monitor's advisory lock on a connection of its own, which then holds it
/// for as long as it lives. `None` when another replica holds it.
fn try_lock(db: &Db) -> Result<Option<diesel::r2d2::PooledConnection<db::Manager>>, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let mut conn = db.conn()?;
    let locked = match &mut *conn {
        DbConnection::Pg(pg) => {
            use diesel::RunQueryDsl;
            diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
                .bind::<diesel::sql_types::BigInt, _>(ADVISORY_LOCK_KEY)
                .get_result::<Locked>(pg)?
                .locked
        }
        DbConnection::Sqlite(_) => true,
    };
    Ok(locked.then_some(conn))
}
