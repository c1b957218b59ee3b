//! Instance providers: where a project's instances come from.
//!
//! An [`InstanceProvider`] makes the machine of an instance and starts its agent. Two
//! exist: [`static_hosts`] (hosts an admin registers, such as the host `berth up` runs
//! on, which belongs to the admin project) and [`docker`] (an instance is a container
//! running berth-agent on a host instance's engine, made through that host's agent).
//!
//! The [`Provisioner`] decides when: the scheduler asks it for an instance when a
//! container fits none of its project's instances ([`Provisioner::begin`]). It records
//! the instance as `building` (inside the create's transaction, under the project's
//! lock, so concurrent creates that fit it are placed on it rather than each starting
//! a machine);
//! once a container placed there is recorded, the lifecycle has it start making it
//! ([`Provisioner::ensure_making`]): it asks the provider for the machine, and waits for the instance's agent to connect;
//! the reconciler then marks the instance `active` and resumes the containers waiting
//! for it. If anything fails, the instance goes to `error` and its waiting containers
//! to Error with a reason that says what to do.

pub mod docker;
pub mod nova;
pub mod static_hosts;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::db::models::InstanceRow;
use crate::db::{self, instances, Db, DbConnection, DbError};

/// A boxed future, so that providers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a provider could not make (or release) an instance. The message says what was
/// wrong and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ProvisionError(pub String);

/// What a new instance of a provider looks like before it exists.
#[derive(Debug, Clone)]
pub struct InstanceShape {
    /// The address its published ports are reached at.
    pub address: String,
    /// Availability zone.
    pub availability_zone: String,
    /// CPU cores.
    pub cpus: f64,
    /// Memory in MiB (0: not known).
    pub memory_mib: i64,
    /// Disk in GB (0: not known).
    pub disk_gb: i64,
}

/// A source of instances.
pub trait InstanceProvider: Send + Sync + 'static {
    /// The name stored in `instances.provider`.
    fn name(&self) -> &'static str;

    /// What an instance it makes looks like.
    fn shape(&self) -> InstanceShape;

    /// Makes the machine of `instance` and starts its agent. Returns once the agent is
    /// started; it connects on its own. Called for a new instance (recorded as
    /// `building`), and again after the service restarts for each instance of the
    /// provider, whose agent may then need the service's new relay address or
    /// credentials: so it must leave one working agent however often it is called.
    fn provision(&self, instance: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>>;

    /// Removes the machine of `instance` (no-op when it does not exist).
    fn release(&self, instance: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>>;

    /// What the provider sees of the machine of `instance` now. The instances monitor
    /// asks this of each active instance; the default, for providers that cannot tell,
    /// is [`MachineStatus::Unknown`] (the agent's connection is then all there is).
    fn status(
        &self,
        _instance: InstanceRow,
    ) -> BoxFuture<'static, Result<MachineStatus, ProvisionError>> {
        Box::pin(async { Ok(MachineStatus::Unknown) })
    }
}

/// The state of an instance's machine as its provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineStatus {
    /// It runs (or is starting).
    Running,
    /// It exists but does not run (Nova `ERROR`, an exited agent container); the text
    /// says what the provider reports.
    Failed(String),
    /// It no longer exists (Nova 404, the agent container removed); the text says so.
    Gone(String),
    /// The provider cannot tell.
    Unknown,
}

/// Starts instances on demand through the configured provider.
#[derive(Clone)]
pub struct Provisioner {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    provider: RwLock<Option<Arc<dyn InstanceProvider>>>,
    connect_timeout: Duration,
    runtime: tokio::runtime::Handle,
    /// Instances this process is making now.
    making: Mutex<HashSet<String>>,
    /// How containers are placed, and the size of instances made on demand.
    placement: RwLock<crate::settings::PlacementSettings>,
}

/// How long a new instance's agent has to connect before the instance is given up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(90);

impl Provisioner {
    /// A provisioner with no provider: projects without instances get none. Must be
    /// called inside the tokio runtime it will spawn its work on.
    pub fn new(db: Db) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                provider: RwLock::new(None),
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                runtime: tokio::runtime::Handle::current(),
                making: Mutex::default(),
                placement: RwLock::default(),
            }),
        }
    }

    /// Makes instances with `provider` for every project that has none (and no
    /// registered host). Instances of that provider from an earlier run are taken up
    /// again: those being made are made, and active ones get their agent started anew,
    /// so that it reaches this run's relay with a credential of this run.
    pub async fn enable(&self, provider: Arc<dyn InstanceProvider>) -> Result<(), DbError> {
        let name = provider.name();
        *self.inner.provider.write().expect("provider lock") = Some(provider.clone());
        let earlier = self
            .inner
            .db
            .run(move |c| instances::of_provider(c, name))
            .await?;
        for instance in earlier {
            match instance.status.as_str() {
                instances::STATUS_BUILDING => {
                    tracing::info!(instance.id = %instance.id, project.id = %instance.project_id, "resuming the making of an instance");
                    self.ensure_making(instance);
                }
                instances::STATUS_ACTIVE => {
                    let provider = provider.clone();
                    self.inner.runtime.spawn(async move {
                        let id = instance.id.clone();
                        tracing::info!(instance.id = %id, "restarting the agent of an instance");
                        if let Err(e) = provider.provision(instance).await {
                            tracing::warn!(instance.id = %id, error = %e, "could not restart the agent of an instance; its containers wait for it");
                        }
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sets how containers are placed and the size of the instances made from now on.
    pub fn set_placement(&self, placement: crate::settings::PlacementSettings) {
        *self.inner.placement.write().expect("placement lock") = placement;
    }

    /// How containers are placed.
    pub fn placement(&self) -> crate::settings::PlacementSettings {
        self.inner.placement.read().expect("placement lock").clone()
    }

    /// What a new instance would look like: the provider's shape with the configured
    /// size. `None` when no provider is configured.
    pub fn new_instance_shape(&self) -> Option<InstanceShape> {
        let mut shape = self.provider()?.shape();
        let p = self.inner.placement.read().expect("placement lock");
        if let Some(cpus) = p.instance_cpus {
            shape.cpus = cpus;
        }
        if let Some(m) = p.instance_memory_mib {
            shape.memory_mib = m;
        }
        if let Some(d) = p.instance_disk_gb {
            shape.disk_gb = d;
        }
        Some(shape)
    }

    /// The provider instances are made with, if any.
    pub fn provider(&self) -> Option<Arc<dyn InstanceProvider>> {
        self.inner.provider.read().expect("provider lock").clone()
    }

    /// Records a new `building` instance for `project`. `None` when no provider is
    /// configured.
    ///
    /// Called by the scheduler inside the create's transaction; the making starts
    /// once the container is recorded ([`Provisioner::ensure_making`]).
    pub fn begin(
        &self,
        conn: &mut DbConnection,
        project: &str,
    ) -> Result<Option<InstanceRow>, DbError> {
        let (Some(provider), Some(shape)) = (self.provider(), self.new_instance_shape()) else {
            return Ok(None);
        };
        let id = Uuid::new_v4();
        let t = db::now();
        let row = InstanceRow {
            id: id.to_string(),
            project_id: project.to_owned(),
            name: format!("{}-{}", provider.name(), &id.simple().to_string()[..12]),
            provider: provider.name().to_owned(),
            status: instances::STATUS_BUILDING.to_owned(),
            status_reason: None,
            address: shape.address,
            availability_zone: shape.availability_zone,
            cpus: shape.cpus,
            memory_mib: shape.memory_mib,
            disk_gb: shape.disk_gb,
            agent_connected: false,
            agent_seen_at: None,
            created_at: t,
            updated_at: t,
            cpu_used: 0.0,
            memory_used_mib: 0,
            disk_used_gb: 0,
            container_count: 0,
        };
        let (instance, created) = instances::insert_building(conn, &row)?;
        if created {
            tracing::info!(instance.id = %instance.id, project.id = %project, provider = provider.name(), "recorded a new instance for the project");
        }
        Ok(Some(instance))
    }

    /// Starts making `instance` (in status `building`) unless this process is making it
    /// already. The lifecycle calls this for each container placed on it, once the
    /// container is recorded; so a create refused after placement (over quota, say)
    /// makes no machine.
    pub fn ensure_making(&self, instance: InstanceRow) {
        if instance.status != instances::STATUS_BUILDING {
            return;
        }
        if !self
            .inner
            .making
            .lock()
            .expect("making lock")
            .insert(instance.id.clone())
        {
            return;
        }
        let this = self.clone();
        self.inner.runtime.spawn(async move {
            let id = instance.id.clone();
            if let Err(e) = this.provision(instance).await {
                tracing::error!(instance.id = %id, error = %e, "the outcome of making an instance could not be recorded");
            }
            this.inner.making.lock().expect("making lock").remove(&id);
        });
    }

    async fn provision(&self, instance: InstanceRow) -> Result<(), DbError> {
        let Some(provider) = self.provider() else {
            return Ok(());
        };
        let made = match provider.provision(instance.clone()).await {
            Ok(()) => self.await_agent(&instance).await,
            Err(e) => Err(e),
        };
        let Err(e) = made else {
            return Ok(());
        };
        tracing::warn!(instance.id = %instance.id, project.id = %instance.project_id, error = %e, "could not make an instance");
        if let Err(release) = provider.release(instance.clone()).await {
            tracing::warn!(instance.id = %instance.id, error = %release, "could not remove what was made of a failed instance");
        }
        let reason = format!("Could not make an instance for the project: {e}");
        let id = instance.id.clone();
        let failed = self
            .inner
            .db
            .run(move |c| instances::fail_building(c, &id, &reason))
            .await?;
        if !failed.is_empty() {
            tracing::warn!(instance.id = %instance.id, containers = failed.len(), "containers waiting for the instance failed");
        }
        Ok(())
    }

    /// Waits until the reconciler has marked the instance active (its agent connected).
    async fn await_agent(&self, instance: &InstanceRow) -> Result<(), ProvisionError> {
        let deadline = Instant::now() + self.inner.connect_timeout;
        loop {
            let id = instance.id.clone();
            let now = self.inner.db.run(move |c| instances::get(c, &id)).await;
            match now {
                Ok(Some(row)) if row.status != instances::STATUS_BUILDING => return Ok(()),
                Ok(None) => return Ok(()),
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(instance.id = %instance.id, error = %e, "could not read the instance's status")
                }
            }
            if Instant::now() > deadline {
                return Err(ProvisionError(format!(
                    "the agent of instance {} did not connect within {} s; look at the agent's logs and check that it reaches the relay",
                    instance.id,
                    self.inner.connect_timeout.as_secs(),
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::containers as q;
    use crate::db::instances::tests::{container, db};
    use crate::db::models::ActionRow;
    use crate::scheduler::{self, WAITING_FOR_INSTANCE};

    /// A provider whose machines can never be made (as when the agent image is missing).
    struct Broken;

    impl InstanceProvider for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn shape(&self) -> InstanceShape {
            InstanceShape {
                address: "127.0.0.1".into(),
                availability_zone: "nova".into(),
                cpus: 1.0,
                memory_mib: 0,
                disk_gb: 0,
            }
        }
        fn provision(&self, _: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>> {
            Box::pin(async {
                Err(ProvisionError(
                    "no image; build it with scripts/build-agent-image".into(),
                ))
            })
        }
        fn release(&self, _: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn containers_waiting_for_an_instance_that_cannot_be_made_end_in_error_saying_what_to_do()
    {
        let (_dir, db) = db();
        let providers = Provisioner::new(db.clone());
        providers.enable(Arc::new(Broken)).await.unwrap();
        let p = providers.clone();
        let (first, second) = db
            .run(move |c| {
                let mut placed = Vec::new();
                for id in ["c1", "c2"] {
                    let placement = scheduler::place(c, "p1", &scheduler::Ask::default(), &p)?
                        .expect("a container asking for nothing is placed");
                    assert_eq!(placement.task_state, Some(WAITING_FOR_INSTANCE));
                    let instance = placement.instance.expect("an instance is being made");
                    q::insert(c, &container(id, "p1", Some(&instance.id)), &[])?;
                    q::insert_action(
                        c,
                        &ActionRow {
                            id: format!("a-{id}"),
                            container_id: id.into(),
                            project_id: "p1".into(),
                            user_id: "u1".into(),
                            action: "create".into(),
                            start_time: db::now(),
                            finish_time: None,
                            result: None,
                            message: None,
                        },
                    )?;
                    placed.push(instance);
                }
                Ok((placed[0].clone(), placed[1].clone()))
            })
            .await
            .unwrap();
        assert_eq!(
            first.id, second.id,
            "both creates wait for the same instance"
        );
        providers.ensure_making(first.clone());

        let deadline = Instant::now() + Duration::from_secs(10);
        let failed = loop {
            let row = db.run(|c| q::get(c, "c2")).await.unwrap().unwrap();
            if row.status == "Error" {
                break row;
            }
            assert!(
                Instant::now() < deadline,
                "the container never failed: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let reason = failed.status_reason.unwrap();
        assert!(reason.contains("scripts/build-agent-image"), "{reason}");
        assert_eq!(
            failed.instance_id, None,
            "nothing was ever made on an instance"
        );
        assert_eq!(failed.task_state, None);
        let c1 = db.run(|c| q::get(c, "c1")).await.unwrap().unwrap();
        assert_eq!(c1.status, "Error");
        let actions = db.run(|c| q::actions_of(c, "c1")).await.unwrap();
        assert_eq!(actions[0].result.as_deref(), Some("Error"));
        let id = first.id.clone();
        let instance = db
            .run(move |c| instances::get(c, &id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(instance.status, instances::STATUS_ERROR);
        // The next create gets a fresh attempt rather than the failed instance.
        let p = providers.clone();
        let retry = db
            .run(move |c| scheduler::place(c, "p1", &scheduler::Ask::default(), &p))
            .await
            .unwrap()
            .unwrap()
            .instance
            .unwrap();
        assert_ne!(retry.id, first.id);
    }
}
