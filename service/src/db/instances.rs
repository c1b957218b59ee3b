//! Instance queries.

use diesel::prelude::*;

use super::models::InstanceRow;
use super::schema::instances;
use super::{now, DbConnection, DbError};

/// The instance with this id.
pub fn get(conn: &mut DbConnection, id: &str) -> Result<Option<InstanceRow>, DbError> {
    Ok(instances::table
        .find(id)
        .select(InstanceRow::as_select())
        .first(conn)
        .optional()?)
}

/// The instance of `provider` called `name`, if registered.
pub fn by_name(
    conn: &mut DbConnection,
    provider: &str,
    name: &str,
) -> Result<Option<InstanceRow>, DbError> {
    Ok(instances::table
        .filter(instances::provider.eq(provider))
        .filter(instances::name.eq(name))
        .select(InstanceRow::as_select())
        .first(conn)
        .optional()?)
}

/// Registers an instance.
pub fn insert(conn: &mut DbConnection, row: &InstanceRow) -> Result<(), DbError> {
    diesel::insert_into(instances::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Active instances of a project, oldest first.
pub fn active_of_project(
    conn: &mut DbConnection,
    project: &str,
) -> Result<Vec<InstanceRow>, DbError> {
    Ok(instances::table
        .filter(instances::project_id.eq(project))
        .filter(instances::status.eq("active"))
        .order(instances::created_at.asc())
        .select(InstanceRow::as_select())
        .load(conn)?)
}

/// Records whether the instance's agent is connected.
pub fn set_agent_connected(
    conn: &mut DbConnection,
    id: &str,
    connected: bool,
) -> Result<(), DbError> {
    let t = now();
    diesel::update(instances::table.find(id))
        .set((
            instances::agent_connected.eq(connected),
            instances::agent_seen_at.eq(Some(t)),
            instances::updated_at.eq(t),
        ))
        .execute(conn)?;
    Ok(())
}

/// Marks every instance's agent as disconnected (at start-up, before relays report).
pub fn mark_all_disconnected(conn: &mut DbConnection) -> Result<(), DbError> {
    diesel::update(instances::table)
        .set(instances::agent_connected.eq(false))
        .execute(conn)?;
    Ok(())
}
