//! Placement: which of a project's instances a new container goes to.
//!
//! Architecture invariant: only instances owned by the container's project are ever
//! candidates, so two projects' containers never share an instance. The database
//! enforces the same (a container row naming another project's instance is refused).
//!
//! This scheduler filters on ownership and status and packs onto the oldest active
//! instance. A project with none gets one on demand from the instance provider
//! ([`crate::providers`]); its containers wait for it in Creating. Capacity filters and
//! weighers are not built yet.

use crate::db::models::InstanceRow;
use crate::db::{instances, DbConnection, DbError};
use crate::providers::Provisioner;

/// Task state of a container placed on an instance that is still being made.
pub const WAITING_FOR_INSTANCE: &str = "waiting_for_instance";

/// Where a new container goes.
#[derive(Debug)]
pub struct Placement {
    /// The instance, or none when the project has none and none can be made.
    pub instance: Option<InstanceRow>,
    /// The container's task state when it must wait (for an instance being made);
    /// `None` keeps the caller's.
    pub task_state: Option<&'static str>,
}

/// The instance a new container of `project` goes to, if any fits.
pub fn select_instance(
    conn: &mut DbConnection,
    project: &str,
) -> Result<Option<InstanceRow>, DbError> {
    let candidates = instances::active_of_project(conn, project)?;
    debug_assert!(candidates.iter().all(|i| i.project_id == project));
    Ok(candidates.into_iter().next())
}

/// Places a new container of `project`: on an active instance of the project if it has
/// one; else on the instance being made for it; else on a new instance that
/// `provisioner` starts making now. A project with a registered (static) host never
/// gets one on demand.
pub fn place(
    conn: &mut DbConnection,
    project: &str,
    provisioner: &Provisioner,
) -> Result<Placement, DbError> {
    if let Some(instance) = select_instance(conn, project)? {
        return Ok(Placement {
            instance: Some(instance),
            task_state: None,
        });
    }
    let waiting = |instance: InstanceRow| Placement {
        instance: Some(instance),
        task_state: Some(WAITING_FOR_INSTANCE),
    };
    if let Some(building) = instances::building_of_project(conn, project)? {
        return Ok(waiting(building));
    }
    if instances::has_static(conn, project)? {
        return Ok(Placement {
            instance: None,
            task_state: None,
        });
    }
    Ok(match provisioner.begin(conn, project)? {
        Some(instance) => {
            debug_assert_eq!(instance.project_id, project);
            waiting(instance)
        }
        None => Placement {
            instance: None,
            task_state: None,
        },
    })
}
