//! Container, port and action queries.

use diesel::prelude::*;

use super::models::{ActionRow, ContainerRow, PortRow};
use super::schema::{container_actions, container_ports, containers};
use super::{now, DbConnection, DbError};

/// Fields of a container that change after it is made. `None` leaves a field as it is.
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = containers)]
pub struct ContainerChange {
    pub name: Option<String>,
    pub status: Option<String>,
    pub status_reason: Option<Option<String>>,
    pub status_detail: Option<Option<String>>,
    pub task_state: Option<Option<String>>,
    pub cpu: Option<f64>,
    pub memory_mib: Option<i64>,
    pub runtime_id: Option<Option<String>>,
    pub started_at: Option<Option<chrono::NaiveDateTime>>,
    pub updated_at: Option<chrono::NaiveDateTime>,
    pub exit_code: Option<Option<i64>>,
    pub finished_at: Option<Option<chrono::NaiveDateTime>>,
    pub restart_policy: Option<String>,
    pub restart_max_retries: Option<i64>,
}

/// The result of looking a container up by uuid or name.
#[derive(Debug)]
pub enum Lookup {
    /// Exactly one.
    Found(Box<ContainerRow>),
    /// None visible to the caller.
    NotFound,
    /// Several containers share the name.
    Ambiguous,
}

/// Inserts a container and the host ports it reserves, atomically: a port already
/// published on the instance fails the whole insert with a unique violation.
pub fn insert(
    conn: &mut DbConnection,
    row: &ContainerRow,
    ports: &[PortRow],
) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        diesel::insert_into(containers::table)
            .values(row)
            .execute(conn)?;
        for port in ports {
            diesel::insert_into(container_ports::table)
                .values(port)
                .execute(conn)?;
        }
        Ok(())
    })
}

/// Like [`insert`], but only if the container fits its project's quota: the project
/// is locked, its usage counted and the rows inserted in one transaction, so concurrent
/// creates at the limit never exceed it. Returns the resources that would be exceeded,
/// in which case nothing is inserted.
pub fn insert_within_quota(
    conn: &mut DbConnection,
    row: &ContainerRow,
    ports: &[PortRow],
) -> Result<Vec<super::quotas::Exceeded>, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        super::quotas::lock_project(conn, &row.project_id)?;
        let over =
            super::quotas::exceeded_by_one_more(conn, &row.project_id, row.cpu, row.memory_mib, 0)?;
        if over.is_empty() {
            insert(conn, row, ports)?;
        }
        Ok(over)
    })
}

/// Inserts a container placed on its instance with the disk (GB) it asks for: the row
/// reserves its cpu, memory and disk there from now on, and `ports` its host ports (a
/// port already published on the instance fails with a unique violation). The caller
/// runs this in the transaction that placed it, under the project's lock
/// ([`crate::scheduler::place`]).
pub fn insert_reservation(
    conn: &mut DbConnection,
    row: &ContainerRow,
    disk_gb: i64,
    ports: &[PortRow],
) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        insert(conn, row, ports)?;
        if disk_gb != 0 {
            // Not a field of ContainerRow, so that code building rows need not know it.
            diesel::update(containers::table.find(&row.id))
                .set(containers::disk_gb.eq(disk_gb))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// The container with this uuid, in any project.
pub fn get(conn: &mut DbConnection, id: &str) -> Result<Option<ContainerRow>, DbError> {
    Ok(containers::table
        .find(id)
        .select(ContainerRow::as_select())
        .first(conn)
        .optional()?)
}

/// The container `ident` (uuid or name) as seen from `project` (`None`: every project).
pub fn lookup(
    conn: &mut DbConnection,
    project: Option<&str>,
    ident: &str,
) -> Result<Lookup, DbError> {
    let mut by_id = containers::table
        .filter(containers::id.eq(ident))
        .into_boxed();
    if let Some(p) = project {
        by_id = by_id.filter(containers::project_id.eq(p.to_owned()));
    }
    if let Some(row) = by_id
        .select(ContainerRow::as_select())
        .first(conn)
        .optional()?
    {
        return Ok(Lookup::Found(Box::new(row)));
    }
    let mut by_name = containers::table
        .filter(containers::name.eq(ident))
        .into_boxed();
    if let Some(p) = project {
        by_name = by_name.filter(containers::project_id.eq(p.to_owned()));
    }
    let mut rows: Vec<ContainerRow> = by_name
        .select(ContainerRow::as_select())
        .limit(2)
        .load(conn)?;
    Ok(match rows.len() {
        0 => Lookup::NotFound,
        1 => Lookup::Found(Box::new(rows.remove(0))),
        _ => Lookup::Ambiguous,
    })
}

/// Filters of a container listing.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    /// Only this project's (`None`: every project).
    pub project: Option<String>,
    pub name: Option<String>,
    pub image: Option<String>,
    pub status: Option<String>,
    /// Only containers whose uuid sorts after this one.
    pub marker: Option<String>,
    pub limit: i64,
}

/// Containers matching `filter`, ordered by uuid.
pub fn list(conn: &mut DbConnection, filter: &ListFilter) -> Result<Vec<ContainerRow>, DbError> {
    let mut q = containers::table.into_boxed();
    if let Some(p) = &filter.project {
        q = q.filter(containers::project_id.eq(p.clone()));
    }
    if let Some(v) = &filter.name {
        q = q.filter(containers::name.eq(v.clone()));
    }
    if let Some(v) = &filter.image {
        q = q.filter(containers::image.eq(v.clone()));
    }
    if let Some(v) = &filter.status {
        q = q.filter(containers::status.eq(v.clone()));
    }
    if let Some(m) = &filter.marker {
        q = q.filter(containers::id.gt(m.clone()));
    }
    Ok(q.order(containers::id.asc())
        .limit(filter.limit)
        .select(ContainerRow::as_select())
        .load(conn)?)
}

/// Every container placed on `instance`.
pub fn on_instance(conn: &mut DbConnection, instance: &str) -> Result<Vec<ContainerRow>, DbError> {
    Ok(containers::table
        .filter(containers::instance_id.eq(instance))
        .select(ContainerRow::as_select())
        .load(conn)?)
}

/// Applies `change` (and bumps `updated_at`). Returns false when the row is gone.
pub fn update(
    conn: &mut DbConnection,
    id: &str,
    mut change: ContainerChange,
) -> Result<bool, DbError> {
    change.updated_at = Some(now());
    let n = diesel::update(containers::table.find(id))
        .set(&change)
        .execute(conn)?;
    Ok(n == 1)
}

/// Deletes a container with its ports and actions.
pub fn delete(conn: &mut DbConnection, id: &str) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        diesel::delete(container_ports::table.filter(container_ports::container_id.eq(id)))
            .execute(conn)?;
        diesel::delete(container_actions::table.filter(container_actions::container_id.eq(id)))
            .execute(conn)?;
        diesel::delete(containers::table.find(id)).execute(conn)?;
        Ok(())
    })
}

/// Host ports published by these containers.
pub fn ports_of(conn: &mut DbConnection, ids: &[String]) -> Result<Vec<PortRow>, DbError> {
    Ok(container_ports::table
        .filter(container_ports::container_id.eq_any(ids))
        .order((container_ports::container_id, container_ports::host_port))
        .select(PortRow::as_select())
        .load(conn)?)
}

/// Records host ports the engine chose for a container, unless already recorded.
pub fn record_ports(conn: &mut DbConnection, ports: &[PortRow]) -> Result<(), DbError> {
    for port in ports {
        let exists: i64 = container_ports::table
            .filter(container_ports::instance_id.eq(&port.instance_id))
            .filter(container_ports::protocol.eq(&port.protocol))
            .filter(container_ports::host_port.eq(port.host_port))
            .count()
            .get_result(conn)?;
        if exists == 0 {
            diesel::insert_into(container_ports::table)
                .values(port)
                .execute(conn)?;
        }
    }
    Ok(())
}

/// Who holds `host_port` on `instance`, if anyone.
pub fn port_holder(
    conn: &mut DbConnection,
    instance: &str,
    protocol: &str,
    host_port: i32,
) -> Result<Option<String>, DbError> {
    Ok(container_ports::table
        .filter(container_ports::instance_id.eq(instance))
        .filter(container_ports::protocol.eq(protocol))
        .filter(container_ports::host_port.eq(host_port))
        .select(container_ports::container_id)
        .first(conn)
        .optional()?)
}

/// Records the start of an action.
pub fn insert_action(conn: &mut DbConnection, row: &ActionRow) -> Result<(), DbError> {
    diesel::insert_into(container_actions::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Records how an action ended.
pub fn finish_action(
    conn: &mut DbConnection,
    id: &str,
    result: &str,
    message: Option<String>,
) -> Result<(), DbError> {
    diesel::update(container_actions::table.find(id))
        .set((
            container_actions::finish_time.eq(Some(now())),
            container_actions::result.eq(Some(result.to_owned())),
            container_actions::message.eq(message),
        ))
        .execute(conn)?;
    Ok(())
}

/// The actions of a container, oldest first.
pub fn actions_of(conn: &mut DbConnection, container: &str) -> Result<Vec<ActionRow>, DbError> {
    Ok(container_actions::table
        .filter(container_actions::container_id.eq(container))
        .order(container_actions::start_time.asc())
        .select(ActionRow::as_select())
        .load(conn)?)
}
