//! Instance queries.

use std::collections::HashMap;

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

/// The instances with these ids, keyed by id; an id repeated is read once
/// and an id with no instance is left out.
pub fn get_many(
    conn: &mut DbConnection,
    ids: impl IntoIterator<Item = String>,
) -> Result<HashMap<String, InstanceRow>, DbError> {
    let mut found = HashMap::new();
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(slot) = found.entry(id) {
            if let Some(row) = get(conn, slot.key())? {
                slot.insert(row);
            }
        }
    }
    Ok(found)
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

/// The project's instance being made, if one is.
pub fn building_of_project(
    conn: &mut DbConnection,
    project: &str,
) -> Result<Option<InstanceRow>, DbError> {
    Ok(instances::table
        .filter(instances::project_id.eq(project))
        .filter(instances::status.eq(STATUS_BUILDING))
        .select(InstanceRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every instance of `provider`, oldest first (to take them up again after a restart).
pub fn of_provider(conn: &mut DbConnection, provider: &str) -> Result<Vec<InstanceRow>, DbError> {
    Ok(instances::table
        .filter(instances::provider.eq(provider))
        .order(instances::created_at.asc())
        .select(InstanceRow::as_select())
        .load(conn)?)
}

/// Whether the project has a host registered by an admin (`static` provider). Such a
/// project runs only on its registered hosts: none is made for it on demand.
pub fn has_static(conn: &mut DbConnection, project: &str) -> Result<bool, DbError> {
    let n: i64 = instances::table
        .filter(instances::project_id.eq(project))
        .filter(instances::provider.eq("static"))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Records a new instance in status `building`. A project may have several being
/// made (each for containers that fit none of its other instances); the scheduler
/// calls this under the project's lock, within the `instances` quota. Returns the row
/// and `true` (the caller must make the machine).
pub fn insert_building(
    conn: &mut DbConnection,
    row: &InstanceRow,
) -> Result<(InstanceRow, bool), DbError> {
    debug_assert_eq!(row.status, STATUS_BUILDING);
    insert(conn, row)?;
    Ok((row.clone(), true))
}

/// Records that the instance's agent connected: an instance being made becomes
/// `active`. Returns whether this call activated it.
pub fn agent_connected(conn: &mut DbConnection, id: &str) -> Result<bool, DbError> {
    set_agent_connected(conn, id, true)?;
    let activated = diesel::update(
        instances::table
            .find(id)
            .filter(instances::status.eq(STATUS_BUILDING)),
    )
    .set((
        instances::status.eq(STATUS_ACTIVE),
        instances::status_reason.eq(None::<String>),
        instances::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(activated > 0)
}

/// Records that making the instance failed: it goes to `error` with `reason`, and the
/// containers waiting for it fail too ([`fail_waiting_containers`]). Does nothing to
/// an instance that is no longer being made (its agent connected in the meantime).
/// Returns the containers that failed.
pub fn fail_building(
    conn: &mut DbConnection,
    id: &str,
    reason: &str,
) -> Result<Vec<String>, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let changed = diesel::update(
            instances::table
                .find(id)
                .filter(instances::status.eq(STATUS_BUILDING)),
        )
        .set((
            instances::status.eq(STATUS_ERROR),
            instances::status_reason.eq(Some(reason)),
            instances::updated_at.eq(now()),
        ))
        .execute(conn)?;
        if changed == 0 {
            return Ok(Vec::new());
        }
        fail_waiting_containers(conn, id, reason)
    })
}

/// Ends the containers still waiting for an instance that will never come: those in
/// Creating go to Error with `reason` (their create action fails with it), those in
/// Deleting are removed. Both are taken off the instance and release its ports, since
/// nothing was ever made on it. Returns the containers that went to Error.
pub fn fail_waiting_containers(
    conn: &mut DbConnection,
    instance: &str,
    reason: &str,
) -> Result<Vec<String>, DbError> {
    use super::schema::{container_actions, container_ports, containers};
    use crate::domain::ContainerStatus;
    conn.transaction::<_, DbError, _>(|conn| {
        let t = now();
        let on_instance = containers::table.filter(containers::instance_id.eq(instance));
        let deleting: Vec<String> = on_instance
            .filter(containers::status.eq(ContainerStatus::Deleting.as_str()))
            .select(containers::id)
            .load(conn)?;
        let creating: Vec<String> = on_instance
            .filter(containers::status.eq(ContainerStatus::Creating.as_str()))
            .select(containers::id)
            .load(conn)?;
        let ended: Vec<&String> = deleting.iter().chain(&creating).collect();
        diesel::delete(container_ports::table.filter(container_ports::container_id.eq_any(&ended)))
            .execute(conn)?;
        diesel::delete(containers::table.filter(containers::id.eq_any(&deleting))).execute(conn)?;
        diesel::update(containers::table.filter(containers::id.eq_any(&creating)))
            .set((
                containers::status.eq(ContainerStatus::Error.as_str()),
                containers::status_reason.eq(Some(reason)),
                containers::task_state.eq(None::<String>),
                containers::instance_id.eq(None::<String>),
                containers::updated_at.eq(t),
            ))
            .execute(conn)?;
        diesel::update(
            container_actions::table
                .filter(container_actions::container_id.eq_any(&creating))
                .filter(container_actions::action.eq("create"))
                .filter(container_actions::finish_time.is_null()),
        )
        .set((
            container_actions::finish_time.eq(Some(t)),
            container_actions::result.eq(Some("Error")),
            container_actions::message.eq(Some(reason)),
        ))
        .execute(conn)?;
        Ok(creating)
    })
}

/// Status of an instance whose machine is being made; its agent has not connected yet.
pub const STATUS_BUILDING: &str = "building";
/// Status of an instance that takes containers.
pub const STATUS_ACTIVE: &str = "active";
/// Status of an instance that could not be made; `status_reason` says why.
pub const STATUS_ERROR: &str = "error";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::db::containers as q;
    use crate::db::models::{ContainerRow, ProjectRow};
    use crate::db::{identity, Db};

    /// A fresh SQLite database with projects `p1` and `p2`.
    pub(crate) fn db() -> (tempfile::TempDir, Db) {
        let (dir, db) = crate::db::testing::sqlite();
        let mut conn = db.conn().unwrap();
        for p in ["p1", "p2"] {
            identity::insert_project(
                &mut conn,
                &ProjectRow {
                    id: p.into(),
                    name: p.into(),
                    domain_id: "default".into(),
                    description: String::new(),
                    enabled: true,
                    created_at: now(),
                },
            )
            .unwrap();
        }
        drop(conn);
        (dir, db)
    }

    pub(crate) fn instance(id: &str, project: &str, status: &str) -> InstanceRow {
        let t = now();
        InstanceRow {
            id: id.into(),
            project_id: project.into(),
            name: format!("host-{id}"),
            provider: "docker".into(),
            status: status.into(),
            status_reason: None,
            address: "127.0.0.1".into(),
            availability_zone: "nova".into(),
            cpus: 1.0,
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
        }
    }

    pub(crate) fn container(id: &str, project: &str, instance: Option<&str>) -> ContainerRow {
        let t = now();
        ContainerRow {
            id: id.into(),
            project_id: project.into(),
            user_id: "u1".into(),
            name: id.into(),
            image: "busybox".into(),
            command: "[]".into(),
            entrypoint: None,
            status: "Creating".into(),
            status_reason: None,
            status_detail: None,
            task_state: None,
            cpu: 0.0,
            memory_mib: 0,
            environment: "{}".into(),
            labels: "{}".into(),
            requested_ports: "[]".into(),
            workdir: None,
            hostname: None,
            restart_policy: "no".into(),
            restart_max_retries: 0,
            interactive: false,
            tty: false,
            auto_remove: false,
            run_requested: true,
            instance_id: instance.map(str::to_owned),
            runtime_id: None,
            started_at: None,
            created_at: t,
            updated_at: t,
            exit_code: None,
            finished_at: None,
            stdin_once: false,
            run_user: None,
            docker_config: None,
            privileges: None,
            registry_id: None,
        }
    }

    #[test]
    fn the_database_refuses_a_container_on_an_instance_of_another_project() {
        use super::super::schema::containers;
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        insert(&mut conn, &instance("i1", "p1", STATUS_ACTIVE)).unwrap();
        // Its own project's container is placed there...
        q::insert(&mut conn, &container("c1", "p1", Some("i1")), &[]).unwrap();
        // ...another project's is refused on insert, and nothing is left of it.
        let err = q::insert(&mut conn, &container("c2", "p2", Some("i1")), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("containers_instance_of_own_project"),
            "{err}"
        );
        assert!(q::get(&mut conn, "c2").unwrap().is_none());
        // Moving an unplaced container onto it afterwards is refused too.
        q::insert(&mut conn, &container("c3", "p2", None), &[]).unwrap();
        let moved = diesel::update(containers::table.find("c3"))
            .set(containers::instance_id.eq(Some("i1")))
            .execute(&mut *conn);
        assert!(moved.is_err(), "a cross-project move was accepted");
        assert_eq!(q::get(&mut conn, "c3").unwrap().unwrap().instance_id, None);
    }

    #[test]
    fn a_project_may_have_several_instances_being_made() {
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        let (first, made) =
            insert_building(&mut conn, &instance("i1", "p1", STATUS_BUILDING)).unwrap();
        assert!(made);
        let (second, made) =
            insert_building(&mut conn, &instance("i2", "p1", STATUS_BUILDING)).unwrap();
        assert!(made);
        assert_ne!(second.id, first.id);
        assert!(agent_connected(&mut conn, "i1").unwrap());
        assert!(
            !agent_connected(&mut conn, "i1").unwrap(),
            "activated only once"
        );
        assert_eq!(
            get(&mut conn, "i2").unwrap().unwrap().status,
            STATUS_BUILDING
        );
    }
}
