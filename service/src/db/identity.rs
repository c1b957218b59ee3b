//! Projects, users and role assignments of the embedded identity service.

use diesel::prelude::*;

use super::models::{ProjectRow, RoleAssignmentRow, UserRow};
use super::schema::{projects, role_assignments, users};
use super::{DbConnection, DbError};

/// The project with this id.
pub fn project(conn: &mut DbConnection, id: &str) -> Result<Option<ProjectRow>, DbError> {
    Ok(projects::table
        .find(id)
        .select(ProjectRow::as_select())
        .first(conn)
        .optional()?)
}

/// The project called `name`.
pub fn project_by_name(conn: &mut DbConnection, name: &str) -> Result<Option<ProjectRow>, DbError> {
    Ok(projects::table
        .filter(projects::name.eq(name))
        .select(ProjectRow::as_select())
        .first(conn)
        .optional()?)
}

/// The user with this id.
pub fn user(conn: &mut DbConnection, id: &str) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

/// The user called `name`.
pub fn user_by_name(conn: &mut DbConnection, name: &str) -> Result<Option<UserRow>, DbError> {
    Ok(users::table
        .filter(users::name.eq(name))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

/// Role names `user` holds in `project`, with the roles they imply (admin implies
/// member, member implies reader), as Keystone reports them in tokens.
pub fn roles(conn: &mut DbConnection, user: &str, project: &str) -> Result<Vec<String>, DbError> {
    let direct: Vec<String> = role_assignments::table
        .filter(role_assignments::user_id.eq(user))
        .filter(role_assignments::project_id.eq(project))
        .order(role_assignments::role.asc())
        .select(role_assignments::role)
        .load(conn)?;
    Ok(crate::identity::admin::effective_roles(&direct))
}

/// Creates a project.
pub fn insert_project(conn: &mut DbConnection, row: &ProjectRow) -> Result<(), DbError> {
    diesel::insert_into(projects::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Creates a user.
pub fn insert_user(conn: &mut DbConnection, row: &UserRow) -> Result<(), DbError> {
    diesel::insert_into(users::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Grants a role.
pub fn grant(conn: &mut DbConnection, row: &RoleAssignmentRow) -> Result<(), DbError> {
    diesel::insert_into(role_assignments::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Every project, by name, or only the one called `name`.
pub fn projects(conn: &mut DbConnection, name: Option<&str>) -> Result<Vec<ProjectRow>, DbError> {
    let mut query = projects::table
        .select(ProjectRow::as_select())
        .order(projects::name.asc())
        .into_boxed();
    if let Some(name) = name {
        query = query.filter(projects::name.eq(name.to_owned()));
    }
    Ok(query.load(conn)?)
}

/// Every user, by name, or only the one called `name`.
pub fn users(conn: &mut DbConnection, name: Option<&str>) -> Result<Vec<UserRow>, DbError> {
    let mut query = users::table
        .select(UserRow::as_select())
        .order(users::name.asc())
        .into_boxed();
    if let Some(name) = name {
        query = query.filter(users::name.eq(name.to_owned()));
    }
    Ok(query.load(conn)?)
}

/// Writes every field of `row` (found by its id); whether it existed.
pub fn update_project(conn: &mut DbConnection, row: &ProjectRow) -> Result<bool, DbError> {
    let n = diesel::update(projects::table.find(&row.id))
        .set((
            projects::name.eq(&row.name),
            projects::description.eq(&row.description),
            projects::enabled.eq(row.enabled),
        ))
        .execute(conn)?;
    Ok(n > 0)
}

/// Writes every field of `row` (found by its id); whether it existed.
pub fn update_user(conn: &mut DbConnection, row: &UserRow) -> Result<bool, DbError> {
    let n = diesel::update(users::table.find(&row.id))
        .set((
            users::name.eq(&row.name),
            users::password_hash.eq(&row.password_hash),
            users::enabled.eq(row.enabled),
            users::default_project_id.eq(&row.default_project_id),
        ))
        .execute(conn)?;
    Ok(n > 0)
}

/// Why a project could not be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectDeletion {
    /// Deleted, with its role assignments.
    Deleted,
    /// No such project.
    NotFound,
    /// Containers or instances still belong to it.
    InUse {
        /// Its containers (in any state, Deleting included).
        containers: i64,
        /// Its instances.
        instances: i64,
    },
}

/// Deletes a project and its role assignments, unless containers or instances still
/// belong to it (they reference the project, and deleting it would orphan them).
pub fn delete_project(conn: &mut DbConnection, id: &str) -> Result<ProjectDeletion, DbError> {
    use super::schema::{containers, instances};
    conn.transaction(|conn| {
        if project(conn, id)?.is_none() {
            return Ok(ProjectDeletion::NotFound);
        }
        let containers: i64 = containers::table
            .filter(containers::project_id.eq(id))
            .count()
            .get_result(conn)?;
        let instances: i64 = instances::table
            .filter(instances::project_id.eq(id))
            .count()
            .get_result(conn)?;
        if containers > 0 || instances > 0 {
            return Ok(ProjectDeletion::InUse {
                containers,
                instances,
            });
        }
        diesel::delete(role_assignments::table.filter(role_assignments::project_id.eq(id)))
            .execute(conn)?;
        diesel::update(users::table.filter(users::default_project_id.eq(id)))
            .set(users::default_project_id.eq(None::<String>))
            .execute(conn)?;
        diesel::delete(projects::table.find(id)).execute(conn)?;
        Ok(ProjectDeletion::Deleted)
    })
}

/// Deletes a user and its role assignments; whether it existed.
pub fn delete_user(conn: &mut DbConnection, id: &str) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        diesel::delete(role_assignments::table.filter(role_assignments::user_id.eq(id)))
            .execute(conn)?;
        let n = diesel::delete(users::table.find(id)).execute(conn)?;
        Ok(n > 0)
    })
}

/// Grants a role unless it is already held; whether it was new.
pub fn grant_once(conn: &mut DbConnection, row: &RoleAssignmentRow) -> Result<bool, DbError> {
    conn.transaction(|conn| {
        if has_role(conn, row)? {
            return Ok(false);
        }
        grant(conn, row)?;
        Ok(true)
    })
}

/// Whether the assignment exists.
pub fn has_role(conn: &mut DbConnection, row: &RoleAssignmentRow) -> Result<bool, DbError> {
    let n: i64 = role_assignments::table
        .filter(role_assignments::user_id.eq(&row.user_id))
        .filter(role_assignments::project_id.eq(&row.project_id))
        .filter(role_assignments::role.eq(&row.role))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Revokes a role; whether it was held.
pub fn revoke(conn: &mut DbConnection, row: &RoleAssignmentRow) -> Result<bool, DbError> {
    let n = diesel::delete(
        role_assignments::table
            .filter(role_assignments::user_id.eq(&row.user_id))
            .filter(role_assignments::project_id.eq(&row.project_id))
            .filter(role_assignments::role.eq(&row.role)),
    )
    .execute(conn)?;
    Ok(n > 0)
}

/// Direct role assignments, each filter applied when given.
pub fn assignments(
    conn: &mut DbConnection,
    user: Option<&str>,
    project: Option<&str>,
    role: Option<&str>,
) -> Result<Vec<RoleAssignmentRow>, DbError> {
    let mut query = role_assignments::table
        .select(RoleAssignmentRow::as_select())
        .order((
            role_assignments::project_id.asc(),
            role_assignments::user_id.asc(),
            role_assignments::role.asc(),
        ))
        .into_boxed();
    if let Some(user) = user {
        query = query.filter(role_assignments::user_id.eq(user.to_owned()));
    }
    if let Some(project) = project {
        query = query.filter(role_assignments::project_id.eq(project.to_owned()));
    }
    if let Some(role) = role {
        query = query.filter(role_assignments::role.eq(role.to_owned()));
    }
    Ok(query.load(conn)?)
}

/// The projects `user` holds any role in, by name.
pub fn projects_of_user(conn: &mut DbConnection, user: &str) -> Result<Vec<ProjectRow>, DbError> {
    let ids: Vec<String> = role_assignments::table
        .filter(role_assignments::user_id.eq(user))
        .select(role_assignments::project_id)
        .distinct()
        .load(conn)?;
    Ok(projects::table
        .filter(projects::id.eq_any(ids))
        .order(projects::name.asc())
        .select(ProjectRow::as_select())
        .load(conn)?)
}
