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

/// Role names `user` holds in `project`.
pub fn roles(conn: &mut DbConnection, user: &str, project: &str) -> Result<Vec<String>, DbError> {
    Ok(role_assignments::table
        .filter(role_assignments::user_id.eq(user))
        .filter(role_assignments::project_id.eq(project))
        .order(role_assignments::role.asc())
        .select(role_assignments::role)
        .load(conn)?)
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
