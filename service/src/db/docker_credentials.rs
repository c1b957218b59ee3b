//! Client certificates registered with the Docker endpoint, by fingerprint.
//!
//! A row ties one certificate (the SHA-256 of its DER) to the user and project it was
//! issued for. Deleting the row revokes the certificate: the endpoint looks the
//! fingerprint up on every call.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::docker_credentials;
use super::{now, DbConnection, DbError};

/// A registered client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = docker_credentials)]
pub struct DockerCredentialRow {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
    /// The user it was issued to.
    pub user_id: String,
    /// That user's name at issue.
    pub user_name: String,
    /// The project it acts in.
    pub project_id: String,
    /// That project's name at issue.
    pub project_name: String,
    /// The roles at issue, a JSON array of names.
    pub roles: String,
    /// When it was issued.
    pub created_at: NaiveDateTime,
    /// When the certificate stops being valid.
    pub expires_at: NaiveDateTime,
}

impl DockerCredentialRow {
    /// The roles snapshot taken at issue.
    pub fn role_names(&self) -> Vec<String> {
        serde_json::from_str(&self.roles).unwrap_or_default()
    }
}

/// Records an issued certificate.
pub fn insert(conn: &mut DbConnection, row: &DockerCredentialRow) -> Result<(), DbError> {
    diesel::insert_into(docker_credentials::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// The certificate with this fingerprint, if it is registered and not expired.
pub fn find_valid(
    conn: &mut DbConnection,
    fingerprint: &str,
) -> Result<Option<DockerCredentialRow>, DbError> {
    Ok(docker_credentials::table
        .find(fingerprint)
        .filter(docker_credentials::expires_at.gt(now()))
        .select(DockerCredentialRow::as_select())
        .first(conn)
        .optional()?)
}

/// The certificates of `project`, newest first (expired ones included, until revoked).
pub fn list_of_project(
    conn: &mut DbConnection,
    project: &str,
) -> Result<Vec<DockerCredentialRow>, DbError> {
    Ok(docker_credentials::table
        .filter(docker_credentials::project_id.eq(project))
        .order((
            docker_credentials::created_at.desc(),
            docker_credentials::fingerprint,
        ))
        .select(DockerCredentialRow::as_select())
        .load(conn)?)
}

/// Revokes the certificate with this fingerprint if it belongs to `project`; whether
/// one was.
pub fn revoke(conn: &mut DbConnection, project: &str, fingerprint: &str) -> Result<bool, DbError> {
    let n = diesel::delete(
        docker_credentials::table
            .filter(docker_credentials::fingerprint.eq(fingerprint))
            .filter(docker_credentials::project_id.eq(project)),
    )
    .execute(conn)?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fingerprint: &str, project: &str, expires_at: NaiveDateTime) -> DockerCredentialRow {
        DockerCredentialRow {
            fingerprint: fingerprint.to_owned(),
            user_id: "u1".into(),
            user_name: "alice".into(),
            project_id: project.to_owned(),
            project_name: "demo".into(),
            roles: r#"["member"]"#.into(),
            created_at: now(),
            expires_at,
        }
    }

    #[test]
    fn a_fingerprint_is_found_until_it_expires_or_is_revoked_by_its_own_project() {
        let (_dir, db) = crate::db::testing::sqlite();
        let mut conn = db.conn().unwrap();
        let later = now() + chrono::Duration::days(1);
        let earlier = now() - chrono::Duration::seconds(1);
        insert(&mut conn, &row("aa", "p1", later)).unwrap();
        insert(&mut conn, &row("bb", "p1", earlier)).unwrap();

        let found = find_valid(&mut conn, "aa").unwrap().expect("registered");
        assert_eq!(found.role_names(), vec!["member".to_owned()]);
        assert_eq!(find_valid(&mut conn, "bb").unwrap(), None, "expired");
        assert_eq!(find_valid(&mut conn, "cc").unwrap(), None, "unknown");
        assert_eq!(list_of_project(&mut conn, "p1").unwrap().len(), 2);
        assert!(list_of_project(&mut conn, "p2").unwrap().is_empty());

        assert!(!revoke(&mut conn, "p2", "aa").unwrap(), "another project's");
        assert!(find_valid(&mut conn, "aa").unwrap().is_some());
        assert!(revoke(&mut conn, "p1", "aa").unwrap());
        assert_eq!(find_valid(&mut conn, "aa").unwrap(), None, "revoked");
    }
}
