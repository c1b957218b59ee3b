//! The database: one diesel layer over PostgreSQL and SQLite.
//!
//! Queries are written once against [`DbConnection`], a `MultiConnection` over both
//! backends; only connection set-up and migrations differ per backend.

pub mod agent_links;
pub mod capsules;
pub mod containers;
pub mod docker_credentials;
pub mod enrollment;
pub mod identity;
pub mod instances;
pub mod models;
pub mod monitor;
pub mod quotas;
pub mod schema;
pub mod zun;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// PostgreSQL, for clouds: shared by every service replica.
    Pg(PgConnection),
    /// SQLite, for the embedded default.
    Sqlite(SqliteConnection),
}

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");

/// Runs `work` again and again while it fails with [`DbError::Unavailable`], pausing
/// 250 ms, doubling to 5 s, between runs; returns its first other result. For work that
/// must not be dropped during a database outage (a restart, a lost connection) and is
/// safe to run again from the start.
pub async fn retry_while_unavailable<T, F, Fut>(what: &str, mut work: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let mut pause = std::time::Duration::from_millis(250);
    loop {
        match work().await {
            Err(DbError::Unavailable(e)) => {
                tracing::warn!(
                    work = what,
                    error = %e,
                    retry.after_ms = pause.as_millis() as u64,
                    "the database is unavailable; running the work again shortly"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A query failed.
    #[error(transparent)]
    Query(diesel::result::Error),
    /// No connection could be had from the pool in time, or the connection was
    /// dropped or refused (the server shut down, restarted or is unreachable): the
    /// request may be retried shortly.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
}

impl From<diesel::result::Error> for DbError {
    /// A query error, unless it only says the connection to the server is gone (then
    /// the database is [`DbError::Unavailable`], not the query wrong).
    fn from(e: diesel::result::Error) -> Self {
        if is_connection_failure(&e) {
            DbError::Unavailable(e.to_string())
        } else {
            DbError::Query(e)
        }
    }
}

/// Whether a diesel error reports a dropped, refused or closed connection rather than
/// a problem with the query: diesel's `ClosedConnection`, and libpq's messages for a
/// server that shut down (`57P01` admin shutdown, `57P02` crash shutdown, `57P03`
/// cannot connect now) or a socket that broke mid-query.
fn is_connection_failure(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    let Error::DatabaseError(kind, info) = e else {
        return false;
    };
    if matches!(kind, DatabaseErrorKind::ClosedConnection) {
        return true;
    }
    let message = info.message().to_ascii_lowercase();
    [
        "terminating connection due to administrator command",
        "terminating connection because of crash of another server process",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
        "server closed the connection unexpectedly",
        "no connection to the server",
        "connection refused",
        "could not connect to server",
        "connection to server",
        "could not receive data from server",
        "could not send data to server",
        "ssl connection has been closed unexpectedly",
        "broken pipe",
        "connection reset by peer",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite://PATH`, or a plain file path.
    Sqlite,
}

impl Backend {
    /// The backend of `url`, and the string to hand to the driver.
    pub fn of(url: &str) -> (Backend, &str) {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url)
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            (Backend::Sqlite, path)
        } else {
            (Backend::Sqlite, url)
        }
    }
}

/// Opens connections for the pool, choosing the backend from the URL's scheme.
#[derive(Debug, Clone)]
pub struct Manager {
    url: String,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        let (backend, target) = Backend::of(&self.url);
        match backend {
            Backend::Postgres => PgConnection::establish(target)
                .map(DbConnection::Pg)
                .map_err(r2d2::Error::ConnectionError),
            Backend::Sqlite => {
                let mut conn =
                    SqliteConnection::establish(target).map_err(r2d2::Error::ConnectionError)?;
                // Foreign keys are off by default in SQLite; WAL lets readers run
                // beside the writer; the busy timeout covers the CLI's short writes.
                conn.batch_execute(
                    "PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

/// A pool of connections, used from async code through [`Db::run`].
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<Manager>,
    backend: Backend,
}

impl Db {
    /// Connects to `url` and applies pending migrations.
    ///
    /// SQLite gets a single connection: it has one writer, and one connection never
    /// meets `SQLITE_BUSY` when a read transaction upgrades to a write.
    pub fn connect(url: &str) -> Result<Db, DbError> {
        let (backend, _) = Backend::of(url);
        let size = match backend {
            Backend::Postgres => 10,
            Backend::Sqlite => 1,
        };
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .connection_timeout(Duration::from_secs(30))
            .build(Manager {
                url: url.to_owned(),
            })
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        let db = Db { pool, backend };
        db.migrate_up()?;
        Ok(db)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for synchronous use (tests, start-up).
    pub fn conn(&self) -> Result<r2d2::PooledConnection<Manager>, DbError> {
        self.pool
            .get()
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// Runs `f` with a connection on the blocking thread pool.
    pub async fn run<F, T>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| DbError::Unavailable(format!("database task failed: {e}")))?
    }

    /// Applies every pending migration.
    pub fn migrate_up(&self) -> Result<(), DbError> {
        let mut conn = self.conn()?;
        let result = match &mut *conn {
            DbConnection::Pg(c) => c.run_pending_migrations(PG_MIGRATIONS).map(|_| ()),
            DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ()),
        };
        result.map_err(|e| DbError::Migration(e.to_string()))
    }

    /// Reverts every applied migration (used by the migration round-trip test).
    pub fn migrate_down_all(&self) -> Result<(), DbError> {
        let mut conn = self.conn()?;
        let result = match &mut *conn {
            DbConnection::Pg(c) => c.revert_all_migrations(PG_MIGRATIONS).map(|_| ()),
            DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS).map(|_| ()),
        };
        result.map_err(|e| DbError::Migration(e.to_string()))
    }
}

/// Whether `e` is a unique-constraint violation.
pub fn is_unique_violation(e: &DbError) -> bool {
    matches!(
        e,
        DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _
        ))
    )
}

/// The current time as stored in the database (UTC, naive).
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// Databases for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Db;
    use diesel::connection::SimpleConnection;

    /// A fresh SQLite database in a temporary directory (keep the directory).
    pub(crate) fn sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!(
            "sqlite://{}",
            dir.path().join("t.sqlite").display()
        ))
        .unwrap();
        (dir, db)
    }

    /// [`sqlite`] with the foreign keys off on its one pooled connection: rows that
    /// reference an instance need no instance row.
    pub(crate) fn sqlite_without_foreign_keys() -> (tempfile::TempDir, Db) {
        let (dir, db) = sqlite();
        db.conn()
            .unwrap()
            .batch_execute("PRAGMA foreign_keys = OFF;")
            .unwrap();
        (dir, db)
    }
}

#[cfg(test)]
mod unavailable_tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    fn db_error(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[tokio::test]
    async fn work_met_by_an_outage_runs_again_until_the_database_answers() {
        let runs = std::sync::atomic::AtomicU32::new(0);
        let result = retry_while_unavailable("test", || async {
            match runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 | 1 => Err(DbError::Unavailable("restarting".to_owned())),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(
            result.unwrap(),
            2,
            "two outages, then the third run answers"
        );

        // Any other failure ends it at once.
        let runs = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), DbError> = retry_while_unavailable("test", || async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(DbError::Query(Error::NotFound))
        })
        .await;
        assert!(matches!(result, Err(DbError::Query(Error::NotFound))));
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_dropped_or_refused_connection_is_unavailable_and_a_bad_query_is_not() {
        for e in [
            db_error(DatabaseErrorKind::ClosedConnection, "connection closed"),
            db_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            db_error(
                DatabaseErrorKind::Unknown,
                "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
            ),
            db_error(
                DatabaseErrorKind::Unknown,
                "connection to server at \"127.0.0.1\", port 5432 failed: Connection refused",
            ),
            db_error(DatabaseErrorKind::Unknown, "FATAL:  the database system is shutting down"),
        ] {
            assert!(
                matches!(DbError::from(e), DbError::Unavailable(_)),
                "a lost connection must be Unavailable"
            );
        }
        for e in [
            Error::NotFound,
            db_error(DatabaseErrorKind::UniqueViolation, "duplicate key value"),
            db_error(
                DatabaseErrorKind::Unknown,
                "syntax error at or near \"SELEC\"",
            ),
        ] {
            assert!(
                matches!(DbError::from(e), DbError::Query(_)),
                "a query's own error stays a query error"
            );
        }
    }

    #[test]
    fn both_front_doors_answer_a_lost_database_with_503_and_a_code() {
        use actix_web::body::MessageBody;
        use actix_web::ResponseError;
        let lost = || {
            DbError::from(db_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ))
        };
        let zun = crate::api::error::ApiError::from(lost());
        let resp = zun.error_response();
        assert_eq!(resp.status().as_u16(), 503);
        let body = resp.into_body().try_into_bytes().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], "container.service-unavailable");
        let detail = body["errors"][0]["detail"].as_str().unwrap();
        assert!(detail.contains("retry shortly"), "{detail}");

        // Docker's format is `{"message": ...}` with the status, built from these.
        let docker = crate::docker_api::error::DockerError::from(lost());
        assert_eq!(docker.status.as_u16(), 503);
        assert!(
            docker.message.contains("retry shortly"),
            "{}",
            docker.message
        );
    }

    /// The real thing: a PostgreSQL backend terminated by the administrator (what a
    /// server shutdown does to every connection) fails the next query as Unavailable.
    #[test]
    fn a_postgres_connection_terminated_by_the_server_is_unavailable() {
        use diesel::{Connection, RunQueryDsl};
        let url = std::env::var("BERTH_TEST_DATABASE_URL").expect(
            "BERTH_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
        );
        #[derive(diesel::QueryableByName)]
        struct Pid {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
        }
        let mut victim = diesel::PgConnection::establish(&url).unwrap();
        let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(&mut victim)
            .unwrap()
            .pid;
        let mut admin = diesel::PgConnection::establish(&url).unwrap();
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
            .execute(&mut admin)
            .unwrap();
        let err = diesel::sql_query("SELECT 1")
            .execute(&mut victim)
            .expect_err("the terminated connection cannot run a query");
        match DbError::from(err) {
            DbError::Unavailable(_) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
