//! The database: one diesel layer over PostgreSQL and SQLite.
//!
//! Queries are written once against [`DbConnection`], a `MultiConnection` over both
//! backends; only connection set-up and migrations differ per backend.

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

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// No connection could be had from the pool in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
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
