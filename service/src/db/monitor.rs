//! Queries of the instances monitor ([`crate::instances_monitor`]): idle instances and
//! their release, and what happens to containers when an instance is lost.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::InstanceRow;
use super::schema::{container_ports, containers, instances};
use super::{enrollment, instances as inst, now, quotas, DbConnection, DbError};
use crate::domain::ContainerStatus;

/// Status of an instance given back to its provider. The row stays, so that its agent's
/// credential stays refused ([`enrollment::GONE_STATUSES`]) and the admin can see it.
pub const STATUS_RELEASED: &str = "released";

/// Every instance not released or deleted, oldest first.
pub fn live_instances(conn: &mut DbConnection) -> Result<Vec<InstanceRow>, DbError> {
    Ok(instances::table
        .filter(instances::status.ne_all(enrollment::GONE_STATUSES))
        .order(instances::created_at.asc())
        .select(InstanceRow::as_select())
        .load(conn)?)
}

/// Released instances whose machine could not be removed yet (their `status_reason`
/// says why): the monitor tries again.
pub fn release_unfinished(conn: &mut DbConnection) -> Result<Vec<InstanceRow>, DbError> {
    Ok(instances::table
        .filter(instances::status.eq(STATUS_RELEASED))
        .filter(instances::status_reason.is_not_null())
        .select(InstanceRow::as_select())
        .load(conn)?)
}

/// How many container rows each instance holds, in any status. A row placed on an
/// instance is its reservation, so this counts reservations too.
pub fn container_counts(conn: &mut DbConnection) -> Result<HashMap<String, i64>, DbError> {
    let rows: Vec<(Option<String>, i64)> = containers::table
        .filter(containers::instance_id.is_not_null())
        .group_by(containers::instance_id)
        .select((containers::instance_id, diesel::dsl::count_star()))
        .load(conn)?;
    let mut counts: HashMap<String, i64> = rows
        .into_iter()
        .filter_map(|(id, n)| id.map(|id| (id, n)))
        .collect();
    // A capsule holds its instance as a container does.
    let capsules: Vec<Option<String>> = super::schema::capsules::table
        .filter(super::schema::capsules::instance_id.is_not_null())
        .select(super::schema::capsules::instance_id)
        .load(conn)?;
    for id in capsules.into_iter().flatten() {
        *counts.entry(id).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Locks the instance's row (PostgreSQL; SQLite's single connection is already serial)
/// and its project's row, which creates lock before they insert a container. So a
/// create racing with a release either commits first (and the release sees its row)
/// or waits and then sees the instance released.
fn lock_instance(conn: &mut DbConnection, row: &InstanceRow) -> Result<(), DbError> {
    quotas::lock_project(conn, &row.project_id)?;
    if let DbConnection::Pg(pg) = conn {
        instances::table
            .find(&row.id)
            .select(instances::id)
            .for_update()
            .first::<String>(pg)
            .optional()?;
    }
    Ok(())
}

/// Marks the instance released if, in the same transaction, it holds no container row
/// and is still in `expected_status` (`active`, or `error` for a machine that failed).
/// Its agent credential is revoked. Returns the released row, or `None` when a
/// container was placed on it in the meantime (or its status changed): then nothing
/// changed.
pub fn release_if_idle(
    conn: &mut DbConnection,
    id: &str,
    expected_status: &str,
) -> Result<Option<InstanceRow>, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let Some(row) = inst::get(conn, id)? else {
            return Ok(None);
        };
        lock_instance(conn, &row)?;
        let Some(row) = inst::get(conn, id)? else {
            return Ok(None);
        };
        if row.status != expected_status {
            return Ok(None);
        }
        let held: i64 = containers::table
            .filter(containers::instance_id.eq(id))
            .count()
            .get_result(conn)?;
        let capsules: i64 = super::schema::capsules::table
            .filter(super::schema::capsules::instance_id.eq(id))
            .count()
            .get_result(conn)?;
        if held + capsules > 0 {
            return Ok(None);
        }
        diesel::update(instances::table.find(id))
            .set((
                instances::status.eq(STATUS_RELEASED),
                instances::status_reason.eq(None::<String>),
                instances::updated_at.eq(now()),
            ))
            .execute(conn)?;
        enrollment::revoke(conn, id)?;
        inst::get(conn, id)
    })
}

/// Records on a released instance whether removing its machine failed (`Some`, the
/// monitor tries again) or finished (`None`).
pub fn set_release_error(
    conn: &mut DbConnection,
    id: &str,
    error: Option<&str>,
) -> Result<(), DbError> {
    diesel::update(
        instances::table
            .find(id)
            .filter(instances::status.eq(STATUS_RELEASED)),
    )
    .set(instances::status_reason.eq(error))
    .execute(conn)?;
    Ok(())
}

/// Statuses a lost instance's containers are left in: those being created or deleted
/// are driven by their operation, and those in Error stay so.
fn settled(status: &str) -> bool {
    matches!(
        ContainerStatus::from_db(status),
        ContainerStatus::Creating | ContainerStatus::Deleting | ContainerStatus::Error
    )
}

/// The instance's machine or agent is lost but may come back: if its agent is still
/// disconnected (checked in the transaction, so a reconnect that raced this call wins),
/// records `reason` on the instance (with `instance_status`, e.g. `error`, when given)
/// and marks its containers Unknown with `reason`. Returns the containers marked.
pub fn mark_lost(
    conn: &mut DbConnection,
    id: &str,
    instance_status: Option<&str>,
    reason: &str,
) -> Result<Vec<String>, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let Some(row) = inst::get(conn, id)? else {
            return Ok(Vec::new());
        };
        lock_instance(conn, &row)?;
        let Some(row) = inst::get(conn, id)? else {
            return Ok(Vec::new());
        };
        if row.agent_connected || row.status == STATUS_RELEASED {
            return Ok(Vec::new());
        }
        let t = now();
        if row.status_reason.as_deref() != Some(reason)
            || instance_status.is_some_and(|s| s != row.status)
        {
            diesel::update(instances::table.find(id))
                .set((
                    instances::status.eq(instance_status.unwrap_or(&row.status)),
                    instances::status_reason.eq(Some(reason)),
                    instances::updated_at.eq(t),
                ))
                .execute(conn)?;
        }
        let marked: Vec<String> = containers::table
            .filter(containers::instance_id.eq(id))
            .select((containers::id, containers::status))
            .load::<(String, String)>(conn)?
            .into_iter()
            .filter(|(_, s)| !settled(s) && ContainerStatus::from_db(s) != ContainerStatus::Unknown)
            .map(|(id, _)| id)
            .collect();
        diesel::update(containers::table.filter(containers::id.eq_any(&marked)))
            .set((
                containers::status.eq(ContainerStatus::Unknown.as_str()),
                containers::status_reason.eq(Some(reason)),
                containers::updated_at.eq(t),
            ))
            .execute(conn)?;
        // Capsules on it: their agent cannot tell how their pods are.
        {
            use super::schema::capsules as k;
            diesel::update(
                k::table
                    .filter(k::instance_id.eq(id))
                    .filter(k::status.ne_all(["Deleting", "Error", "Unknown"])),
            )
            .set((
                k::status.eq("Unknown"),
                k::status_reason.eq(Some(reason)),
                k::updated_at.eq(t),
            ))
            .execute(conn)?;
        }
        Ok(marked)
    })
}

/// The instance's machine no longer exists: if its agent is still disconnected, the
/// instance goes to `error` with `reason`, and its containers to Error with `reason`
/// (those waiting to be created fail, those being deleted are removed), taken off the
/// instance and freed of its ports, since nothing of them is left. Returns the
/// containers that went to Error.
pub fn mark_gone(conn: &mut DbConnection, id: &str, reason: &str) -> Result<Vec<String>, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let Some(row) = inst::get(conn, id)? else {
            return Ok(Vec::new());
        };
        lock_instance(conn, &row)?;
        let Some(row) = inst::get(conn, id)? else {
            return Ok(Vec::new());
        };
        if row.agent_connected || row.status == STATUS_RELEASED {
            return Ok(Vec::new());
        }
        let t = now();
        diesel::update(instances::table.find(id))
            .set((
                instances::status.eq(inst::STATUS_ERROR),
                instances::status_reason.eq(Some(reason)),
                instances::updated_at.eq(t),
            ))
            .execute(conn)?;
        // Creates and deletes in flight end as when an instance could not be made.
        let mut failed = inst::fail_waiting_containers(conn, id, reason)?;
        let rest: Vec<String> = containers::table
            .filter(containers::instance_id.eq(id))
            .select(containers::id)
            .load(conn)?;
        diesel::delete(container_ports::table.filter(container_ports::container_id.eq_any(&rest)))
            .execute(conn)?;
        diesel::update(containers::table.filter(containers::id.eq_any(&rest)))
            .set((
                containers::status.eq(ContainerStatus::Error.as_str()),
                containers::status_reason.eq(Some(reason)),
                containers::task_state.eq(None::<String>),
                containers::instance_id.eq(None::<String>),
                containers::updated_at.eq(t),
            ))
            .execute(conn)?;
        failed.extend(rest);
        // Capsules on it are gone with it: those being deleted are done, the others
        // go to Error, off the instance and freed of its ports.
        {
            use super::schema::{capsule_ports as kp, capsules as k};
            let on: Vec<String> = k::table
                .filter(k::instance_id.eq(id))
                .select(k::id)
                .load(conn)?;
            diesel::delete(kp::table.filter(kp::capsule_id.eq_any(&on))).execute(conn)?;
            diesel::delete(
                k::table
                    .filter(k::instance_id.eq(id))
                    .filter(k::status.eq("Deleting")),
            )
            .execute(conn)?;
            diesel::update(k::table.filter(k::instance_id.eq(id)))
                .set((
                    k::status.eq("Error"),
                    k::status_reason.eq(Some(reason)),
                    k::instance_id.eq(None::<String>),
                    k::updated_at.eq(t),
                ))
                .execute(conn)?;
        }
        Ok(failed)
    })
}

/// An agent that reports again after its instance was marked lost or failed: the
/// instance is `active` again and its reason cleared. The reconciler's full-state pass
/// then records the truth about each container. Returns whether anything changed.
pub fn recovered(conn: &mut DbConnection, id: &str) -> Result<bool, DbError> {
    let n = diesel::update(
        instances::table
            .find(id)
            .filter(instances::status.eq_any([inst::STATUS_ACTIVE, inst::STATUS_ERROR]))
            .filter(instances::status_reason.is_not_null()),
    )
    .set((
        instances::status.eq(inst::STATUS_ACTIVE),
        instances::status_reason.eq(None::<String>),
        instances::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(n > 0)
}

/// Since when the instance's agent is known to be away: its last sighting, or when the
/// instance was recorded if it never connected.
pub fn away_since(row: &InstanceRow) -> NaiveDateTime {
    row.agent_seen_at.unwrap_or(row.created_at)
}

/// What the containers placed on an instance use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Container rows on it, in any status.
    pub containers: i64,
    /// Their CPU limits, summed.
    pub cpu: f64,
    /// Their memory limits in MiB, summed.
    pub memory_mib: i64,
}

/// Usage of every instance holding a container.
pub fn usage(conn: &mut DbConnection) -> Result<HashMap<String, Usage>, DbError> {
    let rows: Vec<(Option<String>, f64, i64)> = containers::table
        .filter(containers::instance_id.is_not_null())
        .select((
            containers::instance_id,
            containers::cpu,
            containers::memory_mib,
        ))
        .load(conn)?;
    let mut out: HashMap<String, Usage> = HashMap::new();
    for (id, cpu, memory) in rows {
        let Some(id) = id else { continue };
        let u = out.entry(id).or_default();
        u.containers += 1;
        u.cpu += cpu;
        u.memory_mib += memory;
    }
    Ok(out)
}

/// The project's instances, not released or deleted, oldest first.
pub fn live_instances_of_project(
    conn: &mut DbConnection,
    project: &str,
) -> Result<Vec<InstanceRow>, DbError> {
    Ok(instances::table
        .filter(instances::project_id.eq(project))
        .filter(instances::status.ne_all(enrollment::GONE_STATUSES))
        .order(instances::created_at.asc())
        .select(InstanceRow::as_select())
        .load(conn)?)
}

/// The host (instance) with this uuid or, failing that, this name; released ones
/// included, so that the admin can still see what became of them.
pub fn host_by_id_or_name(
    conn: &mut DbConnection,
    key: &str,
) -> Result<Option<InstanceRow>, DbError> {
    if let Some(row) = inst::get(conn, key)? {
        return Ok(Some(row));
    }
    Ok(instances::table
        .filter(instances::name.eq(key))
        .order(instances::created_at.desc())
        .select(InstanceRow::as_select())
        .first(conn)
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::containers as q;
    use crate::db::instances::tests::{container, db, instance};

    #[test]
    fn an_instance_holding_any_container_is_never_released_and_an_empty_one_is() {
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        inst::insert(&mut conn, &instance("i1", "p1", inst::STATUS_ACTIVE)).unwrap();
        let mut stopped = container("c1", "p1", Some("i1"));
        stopped.status = "Stopped".into();
        q::insert(&mut conn, &stopped, &[]).unwrap();
        assert!(release_if_idle(&mut conn, "i1", inst::STATUS_ACTIVE)
            .unwrap()
            .is_none());
        assert_eq!(
            inst::get(&mut conn, "i1").unwrap().unwrap().status,
            inst::STATUS_ACTIVE
        );
        q::delete(&mut conn, "c1").unwrap();
        // A status that changed since the monitor looked (here: still building) wins.
        assert!(release_if_idle(&mut conn, "i1", inst::STATUS_BUILDING)
            .unwrap()
            .is_none());
        let released = release_if_idle(&mut conn, "i1", inst::STATUS_ACTIVE)
            .unwrap()
            .expect("an empty instance is released");
        assert_eq!(released.status, STATUS_RELEASED);
        assert!(enrollment::GONE_STATUSES.contains(&released.status.as_str()));
        assert!(live_instances(&mut conn).unwrap().is_empty());
        assert!(release_if_idle(&mut conn, "i1", inst::STATUS_ACTIVE)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_lost_instance_marks_its_running_containers_unknown_unless_its_agent_is_back() {
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        inst::insert(&mut conn, &instance("i1", "p1", inst::STATUS_ACTIVE)).unwrap();
        let mut running = container("c1", "p1", Some("i1"));
        running.status = "Running".into();
        q::insert(&mut conn, &running, &[]).unwrap();
        let creating = container("c2", "p1", Some("i1"));
        q::insert(&mut conn, &creating, &[]).unwrap();

        inst::set_agent_connected(&mut conn, "i1", true).unwrap();
        assert!(mark_lost(&mut conn, "i1", None, "lost").unwrap().is_empty());
        assert_eq!(q::get(&mut conn, "c1").unwrap().unwrap().status, "Running");

        inst::set_agent_connected(&mut conn, "i1", false).unwrap();
        let marked = mark_lost(&mut conn, "i1", Some(inst::STATUS_ERROR), "lost").unwrap();
        assert_eq!(marked, vec!["c1".to_owned()]);
        let c1 = q::get(&mut conn, "c1").unwrap().unwrap();
        assert_eq!(c1.status, "Unknown");
        assert_eq!(c1.status_reason.as_deref(), Some("lost"));
        assert_eq!(
            q::get(&mut conn, "c2").unwrap().unwrap().status,
            "Creating",
            "a create in flight is left to its operation"
        );
        let i1 = inst::get(&mut conn, "i1").unwrap().unwrap();
        assert_eq!(i1.status, inst::STATUS_ERROR);
        assert_eq!(i1.status_reason.as_deref(), Some("lost"));

        // The agent reports again: the instance is active, its reason cleared.
        assert!(recovered(&mut conn, "i1").unwrap());
        let i1 = inst::get(&mut conn, "i1").unwrap().unwrap();
        assert_eq!(i1.status, inst::STATUS_ACTIVE);
        assert_eq!(i1.status_reason, None);
        assert!(!recovered(&mut conn, "i1").unwrap());
    }

    #[test]
    fn a_gone_instance_puts_its_containers_in_error_and_frees_them() {
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        inst::insert(&mut conn, &instance("i1", "p1", inst::STATUS_ACTIVE)).unwrap();
        let mut running = container("c1", "p1", Some("i1"));
        running.status = "Running".into();
        q::insert(&mut conn, &running, &[]).unwrap();
        let failed = mark_gone(&mut conn, "i1", "gone").unwrap();
        assert_eq!(failed, vec!["c1".to_owned()]);
        let c1 = q::get(&mut conn, "c1").unwrap().unwrap();
        assert_eq!(c1.status, "Error");
        assert_eq!(c1.status_reason.as_deref(), Some("gone"));
        assert_eq!(c1.instance_id, None);
        let i1 = inst::get(&mut conn, "i1").unwrap().unwrap();
        assert_eq!(i1.status, inst::STATUS_ERROR);
        assert_eq!(i1.status_reason.as_deref(), Some("gone"));
        // Now empty, it can be released after the grace period.
        assert!(release_if_idle(&mut conn, "i1", inst::STATUS_ERROR)
            .unwrap()
            .is_some());
    }

    /// Runs `f` on a fresh PostgreSQL database (on the cluster scripts/test starts) with
    /// project `p1`, dropping the database afterwards.
    fn with_pg(f: impl FnOnce(&crate::db::Db) + std::panic::UnwindSafe) {
        use diesel::{Connection, RunQueryDsl};
        let admin_url = std::env::var("BERTH_TEST_DATABASE_URL").expect(
            "BERTH_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
        );
        let name = format!("berth_monitor_{}", uuid::Uuid::new_v4().simple());
        let mut admin = diesel::PgConnection::establish(&admin_url).unwrap();
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0.to_owned();
        let url = format!("{base}/{name}");
        let result = std::panic::catch_unwind(move || {
            let db = crate::db::Db::connect(&url).unwrap();
            crate::db::identity::insert_project(
                &mut db.conn().unwrap(),
                &crate::db::models::ProjectRow {
                    id: "p1".into(),
                    name: "p1".into(),
                    domain_id: "default".into(),
                    description: String::new(),
                    enabled: true,
                    created_at: now(),
                },
            )
            .unwrap();
            f(&db);
        });
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .unwrap();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn on_postgresql_a_release_and_a_create_on_the_same_instance_never_both_succeed() {
        with_pg(|db| {
            let mut conn = db.conn().unwrap();
            inst::insert(&mut conn, &instance("i1", "p1", inst::STATUS_ACTIVE)).unwrap();

            // A create in flight (project locked, its row inserted, not committed):
            // the release waits for it, then sees the row and leaves the instance.
            let mut other = db.conn().unwrap();
            let release = conn
                .transaction::<_, DbError, _>(|c| {
                    quotas::lock_project(c, "p1")?;
                    q::insert(c, &container("c1", "p1", Some("i1")), &[])?;
                    let release = std::thread::spawn(move || {
                        release_if_idle(&mut other, "i1", inst::STATUS_ACTIVE).unwrap()
                    });
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    assert!(
                        !release.is_finished(),
                        "the release did not wait for the create's transaction"
                    );
                    Ok(release)
                })
                .unwrap();
            assert!(
                release.join().unwrap().is_none(),
                "an instance was released under a container placed on it"
            );
            assert_eq!(
                inst::get(&mut conn, "i1").unwrap().unwrap().status,
                inst::STATUS_ACTIVE
            );

            // A release in flight: a create that takes the project's lock waits for
            // it, then finds the instance released (so placement skips it).
            q::delete(&mut conn, "c1").unwrap();
            let mut other = db.conn().unwrap();
            let create = conn
                .transaction::<_, DbError, _>(|c| {
                    assert!(release_if_idle(c, "i1", inst::STATUS_ACTIVE)?.is_some());
                    let create = std::thread::spawn(move || {
                        other
                            .transaction::<_, DbError, _>(|c| {
                                quotas::lock_project(c, "p1")?;
                                Ok(inst::get(c, "i1")?.unwrap().status)
                            })
                            .unwrap()
                    });
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    assert!(
                        !create.is_finished(),
                        "the create did not wait for the release's transaction"
                    );
                    Ok(create)
                })
                .unwrap();
            assert_eq!(create.join().unwrap(), STATUS_RELEASED);
        });
    }
}
