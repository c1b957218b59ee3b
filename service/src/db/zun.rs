//! Zun API records with no other home: container action events and private registry
//! credentials (migration 000011).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::ActionRow;
use super::schema::{container_action_events, container_actions, registries};
use super::{now, DbConnection, DbError};

/// One event of a container action (kept by triggers from the action row).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = container_action_events)]
pub struct ActionEventRow {
    pub action_id: String,
    pub event: String,
    pub start_time: NaiveDateTime,
    pub finish_time: Option<NaiveDateTime>,
    pub result: Option<String>,
    pub traceback: Option<String>,
}

/// The action `request_id` of `container` with its events, if it exists.
pub fn action_with_events(
    conn: &mut DbConnection,
    container: &str,
    request_id: &str,
) -> Result<Option<(ActionRow, Vec<ActionEventRow>)>, DbError> {
    let action = container_actions::table
        .filter(container_actions::container_id.eq(container))
        .filter(container_actions::id.eq(request_id))
        .select(ActionRow::as_select())
        .first(conn)
        .optional()?;
    let Some(action) = action else {
        return Ok(None);
    };
    let events = container_action_events::table
        .filter(container_action_events::action_id.eq(&action.id))
        .order(container_action_events::start_time.asc())
        .select(ActionEventRow::as_select())
        .load(conn)?;
    Ok(Some((action, events)))
}

/// A project's private registry credentials.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = registries)]
pub struct RegistryRow {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: String,
    pub domain: String,
    pub username: Option<String>,
    /// Never shown by the API, never logged.
    pub password: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Filters of a registry listing.
#[derive(Debug, Default, Clone)]
pub struct RegistryFilter {
    /// `None`: every project (admins with `all_projects`).
    pub project: Option<String>,
    pub name: Option<String>,
    pub domain: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub marker: Option<String>,
    pub limit: i64,
}

/// Records a registry.
pub fn insert_registry(conn: &mut DbConnection, row: &RegistryRow) -> Result<(), DbError> {
    diesel::insert_into(registries::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Registries matching `f`, in uuid order.
pub fn list_registries(
    conn: &mut DbConnection,
    f: &RegistryFilter,
) -> Result<Vec<RegistryRow>, DbError> {
    let mut q = registries::table.into_boxed();
    if let Some(p) = &f.project {
        q = q.filter(registries::project_id.eq(p.clone()));
    }
    if let Some(n) = &f.name {
        q = q.filter(registries::name.eq(n.clone()));
    }
    if let Some(d) = &f.domain {
        q = q.filter(registries::domain.eq(d.clone()));
    }
    if let Some(u) = &f.username {
        q = q.filter(registries::username.eq(u.clone()));
    }
    if let Some(u) = &f.user_id {
        q = q.filter(registries::user_id.eq(u.clone()));
    }
    if let Some(m) = &f.marker {
        q = q.filter(registries::id.gt(m.clone()));
    }
    Ok(q.order(registries::id.asc())
        .limit(f.limit)
        .select(RegistryRow::as_select())
        .load(conn)?)
}

/// The registries of `project` whose uuid or name is `key`.
pub fn find_registries(
    conn: &mut DbConnection,
    project: &str,
    key: &str,
) -> Result<Vec<RegistryRow>, DbError> {
    Ok(registries::table
        .filter(registries::project_id.eq(project))
        .filter(registries::id.eq(key).or(registries::name.eq(key)))
        .select(RegistryRow::as_select())
        .load(conn)?)
}

/// The changes a registry update makes (`None`: unchanged; `Some(None)`: cleared).
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = registries)]
pub struct RegistryChange {
    pub name: Option<String>,
    pub domain: Option<String>,
    pub username: Option<Option<String>>,
    pub password: Option<Option<String>>,
    pub updated_at: Option<NaiveDateTime>,
}

/// Applies `change` to registry `id` and returns the row.
pub fn update_registry(
    conn: &mut DbConnection,
    id: &str,
    mut change: RegistryChange,
) -> Result<RegistryRow, DbError> {
    change.updated_at = Some(now());
    diesel::update(registries::table.find(id))
        .set(&change)
        .execute(conn)?;
    Ok(registries::table
        .find(id)
        .select(RegistryRow::as_select())
        .first(conn)?)
}

/// Deletes registry `id`.
pub fn delete_registry(conn: &mut DbConnection, id: &str) -> Result<(), DbError> {
    diesel::delete(registries::table.find(id)).execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::containers as q;
    use crate::db::instances::tests::{container, db};

    #[test]
    fn an_action_has_an_event_that_follows_it_and_goes_with_it() {
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        q::insert(&mut conn, &container("c1", "p1", None), &[]).unwrap();
        let action = ActionRow {
            id: "req-1".into(),
            container_id: "c1".into(),
            project_id: "p1".into(),
            user_id: "u1".into(),
            action: "start".into(),
            start_time: now(),
            finish_time: None,
            result: None,
            message: None,
        };
        q::insert_action(&mut conn, &action).unwrap();
        let (_, events) = action_with_events(&mut conn, "c1", "req-1")
            .unwrap()
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "compute__do_container_start");
        assert!(events[0].finish_time.is_none());

        q::finish_action(&mut conn, "req-1", "Error", Some("engine said no".into())).unwrap();
        let (a, events) = action_with_events(&mut conn, "c1", "req-1")
            .unwrap()
            .unwrap();
        assert_eq!(a.result.as_deref(), Some("Error"));
        assert_eq!(events[0].result.as_deref(), Some("Error"));
        assert_eq!(events[0].traceback.as_deref(), Some("engine said no"));
        assert!(events[0].finish_time.is_some());
        // Another container's action is not found through this one.
        assert!(action_with_events(&mut conn, "c2", "req-1")
            .unwrap()
            .is_none());

        q::delete(&mut conn, "c1").unwrap();
        let left: i64 = container_action_events::table
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn registries_are_found_by_uuid_or_name_within_their_project() {
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        let t = now();
        let row = |id: &str, project: &str, name: &str| RegistryRow {
            id: id.into(),
            project_id: project.into(),
            user_id: "u".into(),
            name: name.into(),
            domain: "r.example.com".into(),
            username: Some("me".into()),
            password: Some("pw".into()),
            created_at: t,
            updated_at: t,
        };
        insert_registry(&mut conn, &row("r1", "p1", "reg")).unwrap();
        insert_registry(&mut conn, &row("r2", "p2", "reg")).unwrap();
        assert_eq!(find_registries(&mut conn, "p1", "reg").unwrap().len(), 1);
        assert_eq!(find_registries(&mut conn, "p1", "r2").unwrap().len(), 0);
        let changed = update_registry(
            &mut conn,
            "r1",
            RegistryChange {
                username: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(changed.username, None);
        assert_eq!(changed.password.as_deref(), Some("pw"));
        let mine = list_registries(
            &mut conn,
            &RegistryFilter {
                project: Some("p1".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(mine.len(), 1);
        delete_registry(&mut conn, "r1").unwrap();
        assert!(find_registries(&mut conn, "p1", "r1").unwrap().is_empty());
    }
}
