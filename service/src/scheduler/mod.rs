//! Placement: which of a project's instances a new container goes to.
//!
//! Architecture invariant: only instances owned by the container's project are ever
//! candidates, so two projects' containers never share an instance.
//!
//! This first scheduler filters on ownership and status and packs onto the oldest
//! instance. Capacity filters, weighers and instances on demand come with the
//! instances-on-demand work.

use crate::db::models::InstanceRow;
use crate::db::{instances, DbConnection, DbError};

/// The instance a new container of `project` goes to, if any fits.
pub fn select_instance(
    conn: &mut DbConnection,
    project: &str,
) -> Result<Option<InstanceRow>, DbError> {
    let candidates = instances::active_of_project(conn, project)?;
    debug_assert!(candidates.iter().all(|i| i.project_id == project));
    Ok(candidates.into_iter().next())
}
