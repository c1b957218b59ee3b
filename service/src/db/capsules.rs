//! Capsule (pod) rows and the host ports they publish.
//!
//! A capsule row placed on an instance is its reservation, as a container row is: the
//! database triggers of migration 000009 count its summed cpu and memory on the
//! instance's usage counters, and its host ports are in `capsule_ports`, which
//! placement reads with `container_ports`.

use diesel::prelude::*;

use super::models::{CapsulePortRow, CapsuleRow};
use super::schema::{capsule_ports, capsules};
use super::{now, DbConnection, DbError};

/// Inserts a capsule and the host ports it reserves. Run it in the create's
/// transaction, after the project lock and placement.
pub fn insert(
    conn: &mut DbConnection,
    row: &CapsuleRow,
    ports: &[CapsulePortRow],
) -> Result<(), DbError> {
    diesel::insert_into(capsules::table)
        .values(row)
        .execute(conn)?;
    // One statement per port: the multi-backend connection has no batch insert.
    for p in ports {
        diesel::insert_into(capsule_ports::table)
            .values(p)
            .execute(conn)?;
    }
    Ok(())
}

/// The capsule `id`, in any project.
pub fn get(conn: &mut DbConnection, id: &str) -> Result<Option<CapsuleRow>, DbError> {
    Ok(capsules::table
        .find(id)
        .select(CapsuleRow::as_select())
        .first(conn)
        .optional()?)
}

/// How a lookup by uuid or name ended.
#[derive(Debug)]
pub enum Lookup {
    Found(Box<CapsuleRow>),
    NotFound,
    /// Several capsules of the project have that name.
    Ambiguous,
}

/// The capsule with this uuid or name, in `project` (`None`: any project).
pub fn lookup(
    conn: &mut DbConnection,
    project: Option<&str>,
    ident: &str,
) -> Result<Lookup, DbError> {
    let mut by_id = capsules::table.filter(capsules::id.eq(ident)).into_boxed();
    if let Some(p) = project {
        by_id = by_id.filter(capsules::project_id.eq(p.to_owned()));
    }
    if let Some(row) = by_id
        .select(CapsuleRow::as_select())
        .first(conn)
        .optional()?
    {
        return Ok(Lookup::Found(Box::new(row)));
    }
    let mut by_name = capsules::table
        .filter(capsules::name.eq(ident))
        .into_boxed();
    if let Some(p) = project {
        by_name = by_name.filter(capsules::project_id.eq(p.to_owned()));
    }
    let mut rows: Vec<CapsuleRow> = by_name
        .select(CapsuleRow::as_select())
        .limit(2)
        .load(conn)?;
    Ok(match rows.len() {
        0 => Lookup::NotFound,
        1 => Lookup::Found(Box::new(rows.remove(0))),
        _ => Lookup::Ambiguous,
    })
}

/// Up to `limit` capsules of `project` (`None`: every project) in uuid order, after
/// `marker` (a uuid) when given.
pub fn list(
    conn: &mut DbConnection,
    project: Option<&str>,
    marker: Option<&str>,
    limit: i64,
) -> Result<Vec<CapsuleRow>, DbError> {
    let mut q = capsules::table.into_boxed();
    if let Some(p) = project {
        q = q.filter(capsules::project_id.eq(p.to_owned()));
    }
    if let Some(m) = marker {
        q = q.filter(capsules::id.gt(m.to_owned()));
    }
    Ok(q.order(capsules::id.asc())
        .limit(limit)
        .select(CapsuleRow::as_select())
        .load(conn)?)
}

/// The capsules placed on `instance`.
pub fn on_instance(conn: &mut DbConnection, instance: &str) -> Result<Vec<CapsuleRow>, DbError> {
    Ok(capsules::table
        .filter(capsules::instance_id.eq(instance))
        .select(CapsuleRow::as_select())
        .load(conn)?)
}

/// What a change sets; `None` keeps a column.
#[derive(Debug, Default, Clone)]
pub struct CapsuleChange {
    pub status: Option<String>,
    pub status_reason: Option<Option<String>>,
    pub pod_status: Option<Option<String>>,
    pub template: Option<String>,
    pub spec: Option<String>,
    pub previous_spec: Option<Option<String>>,
    pub generation: Option<i64>,
    pub cpu: Option<f64>,
    pub memory_mib: Option<i64>,
}

#[derive(AsChangeset)]
#[diesel(table_name = capsules)]
struct Changeset {
    status: Option<String>,
    status_reason: Option<Option<String>>,
    pod_status: Option<Option<String>>,
    template: Option<String>,
    spec: Option<String>,
    previous_spec: Option<Option<String>>,
    generation: Option<i64>,
    cpu: Option<f64>,
    memory_mib: Option<i64>,
    updated_at: chrono::NaiveDateTime,
}

/// Applies `change` to capsule `id`; false when it is gone.
pub fn update(conn: &mut DbConnection, id: &str, change: CapsuleChange) -> Result<bool, DbError> {
    let set = Changeset {
        status: change.status,
        status_reason: change.status_reason,
        pod_status: change.pod_status,
        template: change.template,
        spec: change.spec,
        previous_spec: change.previous_spec,
        generation: change.generation,
        cpu: change.cpu,
        memory_mib: change.memory_mib,
        updated_at: now(),
    };
    Ok(diesel::update(capsules::table.find(id))
        .set(&set)
        .execute(conn)?
        == 1)
}

/// Deletes capsule `id` and its ports (the triggers give its room back).
pub fn delete(conn: &mut DbConnection, id: &str) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|c| {
        diesel::delete(capsule_ports::table.filter(capsule_ports::capsule_id.eq(id))).execute(c)?;
        diesel::delete(capsules::table.find(id)).execute(c)?;
        Ok(())
    })
}

/// The host ports of these capsules.
pub fn ports_of(conn: &mut DbConnection, ids: &[String]) -> Result<Vec<CapsulePortRow>, DbError> {
    Ok(capsule_ports::table
        .filter(capsule_ports::capsule_id.eq_any(ids))
        .select(CapsulePortRow::as_select())
        .load(conn)?)
}

/// Replaces the host ports a capsule holds (an update may publish others). Run it
/// under the project lock.
pub fn replace_ports(
    conn: &mut DbConnection,
    id: &str,
    ports: &[CapsulePortRow],
) -> Result<(), DbError> {
    diesel::delete(capsule_ports::table.filter(capsule_ports::capsule_id.eq(id))).execute(conn)?;
    // One statement per port: the multi-backend connection has no batch insert.
    for p in ports {
        diesel::insert_into(capsule_ports::table)
            .values(p)
            .execute(conn)?;
    }
    Ok(())
}

/// The capsule publishing `protocol`/`port` on `instance`, if any.
pub fn port_holder(
    conn: &mut DbConnection,
    instance: &str,
    protocol: &str,
    port: i32,
) -> Result<Option<String>, DbError> {
    Ok(capsule_ports::table
        .filter(capsule_ports::instance_id.eq(instance))
        .filter(capsule_ports::protocol.eq(protocol))
        .filter(capsule_ports::host_port.eq(port))
        .select(capsule_ports::capsule_id)
        .first(conn)
        .optional()?)
}

/// The ports of `instance` held by capsules among `ports` (protocol, port) — for
/// placement, with the containers' ports.
pub fn held_on(
    conn: &mut DbConnection,
    instances: &[&str],
    ports: &[i32],
) -> Result<Vec<(String, String, i32)>, DbError> {
    Ok(capsule_ports::table
        .filter(capsule_ports::instance_id.eq_any(instances))
        .filter(capsule_ports::host_port.eq_any(ports))
        .select((
            capsule_ports::instance_id,
            capsule_ports::protocol,
            capsule_ports::host_port,
        ))
        .load(conn)?)
}

/// Sums of what `project`'s capsules reserve: (count, cpu, memory MiB).
pub fn usage(conn: &mut DbConnection, project: &str) -> Result<(i64, f64, i64), DbError> {
    let rows: Vec<(f64, i64)> = capsules::table
        .filter(capsules::project_id.eq(project))
        .select((capsules::cpu, capsules::memory_mib))
        .load(conn)?;
    Ok((
        rows.len() as i64,
        rows.iter().map(|r| r.0).sum(),
        rows.iter().map(|r| r.1).sum(),
    ))
}
