//! The `static` provider: hosts an admin registers by hand (`berth-service
//! register-host`, or the host `berth up` runs on, which belongs to the admin project).
//!
//! It never makes a machine: a project with a registered host runs only there.

use uuid::Uuid;

use super::{BoxFuture, InstanceProvider, InstanceShape, ProvisionError};
use crate::db::models::InstanceRow;
use crate::db::{self, instances, Db};

/// The provider name stored in `instances.provider`.
pub const NAME: &str = "static";

/// Hosts registered by an admin.
#[derive(Debug, Clone, Default)]
pub struct StaticHosts;

impl InstanceProvider for StaticHosts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn shape(&self) -> InstanceShape {
        InstanceShape {
            address: String::new(),
            availability_zone: "nova".into(),
            cpus: local_cpus(),
            memory_mib: 0,
            disk_gb: 0,
        }
    }

    fn provision(&self, instance: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>> {
        Box::pin(async move {
            Err(ProvisionError(format!(
                "the static provider cannot make instance {}: static hosts are registered by an admin (berth-service register-host); register one for project {}",
                instance.id, instance.project_id
            )))
        })
    }

    fn release(&self, _instance: InstanceRow) -> BoxFuture<'static, Result<(), ProvisionError>> {
        // A registered host is the admin's machine: releasing it removes nothing.
        Box::pin(async { Ok(()) })
    }
}

fn local_cpus() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0)
}

/// Registers (once) a host of `project` called `name` at `address`, active at once
/// (its agent connects when it is started); returns its id.
pub async fn register(db: &Db, project: &str, name: &str, address: &str) -> anyhow::Result<Uuid> {
    let (project, name, address) = (project.to_owned(), name.to_owned(), address.to_owned());
    let cpus = local_cpus();
    let id = db
        .run(move |c| {
            if let Some(existing) = instances::by_name(c, NAME, &name)? {
                return Ok(existing.id);
            }
            let t = db::now();
            let row = InstanceRow {
                id: Uuid::new_v4().to_string(),
                project_id: project,
                name,
                provider: NAME.into(),
                status: instances::STATUS_ACTIVE.into(),
                status_reason: None,
                address,
                availability_zone: "nova".into(),
                cpus,
                memory_mib: 0,
                disk_gb: 0,
                agent_connected: false,
                agent_seen_at: None,
                created_at: t,
                updated_at: t,
                cpu_used: 0.0,
                memory_used_mib: 0,
                disk_used_gb: 0,
                container_count: 0,
            };
            instances::insert(c, &row)?;
            Ok(row.id)
        })
        .await?;
    Ok(Uuid::parse_str(&id)?)
}
