//! Docker ids ⇄ Berth uuids, and Docker's way of naming a container.
//!
//! A Docker container id is 64 lowercase hex digits. Berth's is a uuid. The Docker id
//! of a container is its uuid's 32 hex digits followed by the first 32 hex digits of
//! SHA-256 over a fixed prefix and the uuid: deterministic, so it needs no column, and
//! its first 32 digits give the uuid back. Short ids (`docker ps` prints 12 digits) are
//! prefixes of the uuid's digits, which the database can match on either backend.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use hyper::StatusCode;
use sha2::{Digest, Sha256};

use super::{Cx, DockerError};
use crate::db::models::ContainerRow;
use crate::db::schema::containers;
use crate::db::{DbConnection, DbError};

/// Mixed into the second half of every Docker id, so it cannot be mistaken for a
/// uuid's digits.
const ID_PREFIX: &[u8] = b"berth docker container id\0";

/// The 64-hex Docker id of the container with this uuid.
pub fn docker_id(uuid: &str) -> String {
    let digits: String = uuid
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut hash = Sha256::new();
    hash.update(ID_PREFIX);
    hash.update(digits.as_bytes());
    let tail = hex::encode(hash.finalize());
    format!("{digits}{}", &tail[..32])
}

/// The uuid (with dashes) whose digits are these 32 hex digits.
fn uuid_of(digits: &str) -> Option<String> {
    uuid::Uuid::try_parse(digits).ok().map(|u| u.to_string())
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How one identifier resolves.
#[derive(Debug)]
enum Found {
    One(Box<ContainerRow>),
    None,
    /// Several containers have this name (possible for containers made through the
    /// Zun API, where names need not be unique).
    SameName,
    /// Several ids start with this prefix.
    AmbiguousPrefix,
}

/// Looks `ident` up in `project` the way moby does: an exact full id, then an exact
/// name (with or without the leading `/`), then a unique id prefix. Berth also takes the
/// uuid itself, as `osc container-list` shows it.
fn resolve(conn: &mut DbConnection, project: &str, ident: &str) -> Result<Found, DbError> {
    let own = || {
        containers::table
            .filter(containers::project_id.eq(project.to_owned()))
            .into_boxed()
    };
    let by_id = |conn: &mut DbConnection, uuid: &str| -> Result<Option<ContainerRow>, DbError> {
        Ok(own()
            .filter(containers::id.eq(uuid.to_owned()))
            .select(ContainerRow::as_select())
            .first(conn)
            .optional()?)
    };
    let lower = ident.to_ascii_lowercase();
    // An exact full Docker id.
    if lower.len() == 64 && is_hex(&lower) {
        if let Some(uuid) = uuid_of(&lower[..32]) {
            if let Some(row) = by_id(conn, &uuid)? {
                if docker_id(&row.id) == lower {
                    return Ok(Found::One(Box::new(row)));
                }
            }
        }
    }
    // A Berth uuid.
    if lower.len() == 36 {
        if let Ok(u) = uuid::Uuid::try_parse(&lower) {
            if let Some(row) = by_id(conn, &u.to_string())? {
                return Ok(Found::One(Box::new(row)));
            }
        }
    }
    // An exact name.
    let name = ident.strip_prefix('/').unwrap_or(ident);
    let mut named: Vec<ContainerRow> = own()
        .filter(containers::name.eq(name.to_owned()))
        .select(ContainerRow::as_select())
        .limit(2)
        .load(conn)?;
    match named.len() {
        0 => {}
        1 => return Ok(Found::One(Box::new(named.remove(0)))),
        _ => return Ok(Found::SameName),
    }
    // A unique prefix of the id.
    if !is_hex(&lower) || lower.len() > 64 {
        return Ok(Found::None);
    }
    if lower.len() > 32 {
        // Longer than the uuid's digits: the uuid is known, the rest must match.
        let Some(uuid) = uuid_of(&lower[..32]) else {
            return Ok(Found::None);
        };
        return Ok(match by_id(conn, &uuid)? {
            Some(row) if docker_id(&row.id).starts_with(&lower) => Found::One(Box::new(row)),
            _ => Found::None,
        });
    }
    // Only hex digits reach this point, so the pattern holds no LIKE wildcard.
    let mut rows: Vec<ContainerRow> = own()
        .filter(
            sql::<Bool>("replace(containers.id, '-', '') LIKE ")
                .bind::<Text, _>(format!("{lower}%")),
        )
        .select(ContainerRow::as_select())
        .limit(2)
        .load(conn)?;
    Ok(match rows.len() {
        0 => Found::None,
        1 => Found::One(Box::new(rows.remove(0))),
        _ => Found::AmbiguousPrefix,
    })
}

/// The container `ident` names, as the caller's project sees it: exact full id, exact
/// name, unique id prefix (moby's order). Not found, or another project's: 404
/// `No such container: IDENT`; an ambiguous prefix: 400 as moby answers it.
pub async fn find(cx: &Cx, ident: &str) -> Result<ContainerRow, DockerError> {
    let ident = ident.trim();
    if ident.is_empty() {
        return Err(DockerError::no_such_container(ident));
    }
    let project = cx.ctx.project_id.clone();
    let owned = ident.to_owned();
    match cx
        .state()
        .db
        .run(move |c| resolve(c, &project, &owned))
        .await?
    {
        Found::One(row) => Ok(*row),
        Found::None => Err(DockerError::no_such_container(ident)),
        Found::SameName => Err(DockerError::conflict(format!(
            "several containers are named {ident:?} (made through the Zun API, where names need not be unique); use the container's id instead"
        ))),
        Found::AmbiguousPrefix => Err(DockerError::new(
            StatusCode::BAD_REQUEST,
            format!("multiple IDs found with provided prefix: {ident}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_id_is_64_hex_digits_starting_with_the_uuid() {
        let uuid = "0b3f5c1e-7d2a-4e9b-8c6d-1f2e3a4b5c6d";
        let id = docker_id(uuid);
        assert_eq!(id.len(), 64);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(id.starts_with("0b3f5c1e7d2a4e9b8c6d1f2e3a4b5c6d"));
        assert_eq!(uuid_of(&id[..32]).as_deref(), Some(uuid));
    }

    /// Moby's lookup order on a database with three of p1's containers (two sharing
    /// the prefix `aaaa`) and one of p2's.
    fn lookups_follow_mobys_order(conn: &mut DbConnection) {
        use crate::db::containers as q;
        use crate::db::instances::tests::container;
        let a1 = "aaaaaaaa-0000-4000-8000-000000000001";
        let a2 = "aaaaaaaa-1111-4000-8000-000000000002";
        let b = "bbbbbbbb-0000-4000-8000-000000000003";
        let foreign = "cccccccc-0000-4000-8000-000000000004";
        for (id, project, name) in [
            (a1, "p1", "web"),
            (a2, "p1", "db"),
            (b, "p1", "aaaa"),
            (foreign, "p2", "other"),
        ] {
            let mut row = container(id, project, None);
            row.name = name.into();
            q::insert(conn, &row, &[]).unwrap();
        }
        fn one(conn: &mut DbConnection, ident: &str) -> String {
            match resolve(conn, "p1", ident).unwrap() {
                Found::One(row) => row.id,
                other => panic!("{ident}: {other:?}"),
            }
        }
        assert_eq!(one(conn, &docker_id(a1)), a1);
        assert_eq!(one(conn, &docker_id(a1).to_uppercase()), a1);
        assert_eq!(one(conn, a2), a2);
        assert_eq!(one(conn, "web"), a1);
        assert_eq!(one(conn, "/db"), a2);
        // A name wins over an id prefix.
        assert_eq!(one(conn, "aaaa"), b);
        assert_eq!(one(conn, "aaaaaaaa0"), a1);
        assert_eq!(one(conn, &docker_id(a2)[..12]), a2);
        assert_eq!(one(conn, &docker_id(a2)[..40]), a2);
        assert_eq!(one(conn, "bb"), b);
        assert!(matches!(
            resolve(conn, "p1", "aaa").unwrap(),
            Found::AmbiguousPrefix
        ));
        // Another project's container is not found by id, prefix or name.
        for ident in [
            docker_id(foreign),
            "ccc".into(),
            "other".into(),
            foreign.into(),
        ] {
            assert!(
                matches!(resolve(conn, "p1", &ident).unwrap(), Found::None),
                "{ident}"
            );
        }
        // A full id whose second half is wrong is no id of ours.
        let mut forged = docker_id(a1);
        forged.replace_range(40..41, if &forged[40..41] == "0" { "1" } else { "0" });
        assert!(matches!(resolve(conn, "p1", &forged).unwrap(), Found::None));
        assert!(matches!(resolve(conn, "p1", "xyz").unwrap(), Found::None));
    }

    #[test]
    fn lookups_follow_mobys_order_on_sqlite() {
        let (_dir, db) = crate::db::instances::tests::db();
        lookups_follow_mobys_order(&mut db.conn().unwrap());
    }

    #[test]
    fn lookups_follow_mobys_order_on_postgresql() {
        use diesel::Connection;
        let admin_url = std::env::var("BERTH_TEST_DATABASE_URL").expect(
            "BERTH_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
        );
        let name = format!("berth_ids_{}", uuid::Uuid::new_v4().simple());
        let mut admin = diesel::PgConnection::establish(&admin_url).unwrap();
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0.to_owned();
        let url = format!("{base}/{name}");
        let result = std::panic::catch_unwind(move || {
            let db = crate::db::Db::connect(&url).unwrap();
            let mut conn = db.conn().unwrap();
            for p in ["p1", "p2"] {
                crate::db::identity::insert_project(
                    &mut conn,
                    &crate::db::models::ProjectRow {
                        id: p.into(),
                        name: p.into(),
                        domain_id: "default".into(),
                        description: String::new(),
                        enabled: true,
                        created_at: crate::db::now(),
                    },
                )
                .unwrap();
            }
            lookups_follow_mobys_order(&mut conn);
        });
        diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .unwrap();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn a_docker_id_is_the_same_every_time_and_differs_per_uuid() {
        let a = "0b3f5c1e-7d2a-4e9b-8c6d-1f2e3a4b5c6d";
        let b = "0b3f5c1e-7d2a-4e9b-8c6d-1f2e3a4b5c6e";
        assert_eq!(docker_id(a), docker_id(a));
        assert_ne!(docker_id(a)[32..], docker_id(b)[32..]);
        // The dashes do not matter.
        assert_eq!(docker_id(a), docker_id(&a.replace('-', "")));
    }
}
