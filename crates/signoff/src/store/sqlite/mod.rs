//! The embedded default: sessions and users in one SQLite file.
//!
//! - WAL mode, migrations applied on open, and every write after insert a
//!   single conditional statement, so there is no read-then-write window
//!   for a concurrent logout to fall into.
//! - The file holds password hashes and the keys that sign access tokens:
//!   it is created mode 0600 (SQLite gives its `-wal` and `-shm` the same
//!   mode), and opening a file that other users can read or write, or one
//!   in a directory they can write, is refused unless
//!   [`SqliteOptions::allow_readable`] is set.
//! - Other processes on the same file (the CLI, a second gateway) are heard
//!   of through a change log that triggers fill inside each writing
//!   transaction (`migrations/sqlite/0004_session_changes.sql`). The store
//!   is a [`RevocationBus`] whose subscription polls that log every
//!   [`SqliteOptions::watch_interval`] on a connection of its own, so
//!   [`crate::revocation::run`] keeps a [`crate::CachedStore`] honest as it does
//!   for Redis and PostgreSQL.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::broadcast;

use super::sql::{backend, Sql, SqlBackend};
use super::StoreError;
#[cfg(doc)]
use crate::revocation::RevocationBus;

mod bus;
mod dialect;
#[cfg(unix)]
mod permissions;
#[cfg(unix)]
pub use permissions::problems as permission_problems;

/// Why [`SqliteStore::open_with`] refused a database: it, a file beside it
/// or its directory is open to other users. The message names each and the
/// command that fixes it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenToOthers(String);

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How hard SQLite works to keep a commit through a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL`: a commit (a logout, a revocation) survives power
    /// loss once it returns. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL`: a commit survives a crash of the process, but
    /// the last ones may roll back after a power cut, including logouts.
    Normal,
}

/// Options for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// The database file; created if missing.
    pub path: PathBuf,
    /// See [`Durability`].
    pub durability: Durability,
    /// Connections in the pool. Default 4.
    pub max_connections: u32,
    /// SQLite's page cache per connection, in KiB (`PRAGMA cache_size`).
    /// Default 256, against SQLite's 2 000: the operating system caches
    /// the file as well, and a session check reads a few pages of it, so
    /// a larger cache per connection costs memory on every node for
    /// little (docs/benchmarks.md: at most 1 MiB less over the default
    /// four connections than at 512; a miss at 1 000 000 sessions cost
    /// about what it did, within the benchmark's noise).
    pub cache_kib: u32,
    /// How long to wait for a lock or a free connection before reporting
    /// the store unavailable. Default 5 s.
    pub busy_timeout: Duration,
    /// How often a bus subscription ([`RevocationBus::subscribe`]) looks
    /// for changes made by other processes. Default 10 ms; each look is one
    /// `PRAGMA data_version`, plus one indexed read when something changed.
    pub watch_interval: Duration,
    /// Open the file even if other users can read or write it (or its
    /// `-wal`/`-shm`), or can write its directory; a warning is logged
    /// instead. Default `false`: such a file is refused, because it holds
    /// password hashes and the keys that sign access tokens.
    pub allow_readable: bool,
}

impl SqliteOptions {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Full,
            max_connections: 4,
            cache_kib: 256,
            busy_timeout: Duration::from_secs(5),
            watch_interval: Duration::from_millis(10),
            allow_readable: false,
        }
    }
}

/// Sessions and users in a SQLite file.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use signoff::{Policy, Sessions, SqliteStore};
///
/// let store = SqliteStore::open("signoff.db").await.unwrap();
/// let sessions = Sessions::new(Arc::new(store), Policy::default());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// For the watcher's own connection.
    connect: SqliteConnectOptions,
    watch_interval: Duration,
    /// [`RevocationBus::publish`]: reaches this process's subscriptions
    /// (heartbeats); other processes hear of changes through the triggers.
    local: broadcast::Sender<String>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` with default options.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the file cannot be opened or created,
    /// [`StoreError::Backend`] if migrations fail.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(SqliteOptions::new(path.as_ref())).await
    }

    /// Opens (or creates) a database with the given options and applies
    /// pending migrations.
    ///
    /// # Errors
    /// As [`SqliteStore::open`]; also [`StoreError::Backend`] with a message
    /// naming the fix if the file or its directory is open to other users
    /// (see [`SqliteOptions::allow_readable`]).
    pub async fn open_with(options: SqliteOptions) -> Result<Self, StoreError> {
        #[cfg(unix)]
        permissions::prepare(&options.path, options.allow_readable)?;
        let connect = SqliteConnectOptions::from_str("sqlite:")
            .map_err(backend)?
            .filename(&options.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(options.busy_timeout)
            .pragma("cache_size", format!("-{}", options.cache_kib.max(64)))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.busy_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        MIGRATIONS
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self {
            pool,
            connect: connect.create_if_missing(false),
            watch_interval: options.watch_interval.max(Duration::from_millis(1)),
            local: broadcast::channel(256).0,
        })
    }

    /// The connection pool, for maintenance queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqlBackend for SqliteStore {
    type Db = sqlx::Sqlite;

    fn sql(&self) -> Sql<'_, sqlx::Sqlite> {
        Sql::new(&self.pool, None)
    }
}
