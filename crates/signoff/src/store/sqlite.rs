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

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::broadcast;

use super::{SessionStore, StoreError, WriteOutcome};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditQuery, AuditStore};
use crate::clock::{duration_millis, Timestamp};
use crate::revocation::{BusSubscription, RevocationBus};
use crate::session::{Session, SessionData, UserId};
use crate::session_token::{SessionHandle, SessionId};
use crate::users::{User, UserStore};

/// Why [`SqliteStore::open_with`] refused a database: it, a file beside it
/// or its directory is open to other users. The message names each and the
/// command that fixes it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenToOthers(String);

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The session columns, in the order [`session_from_row`] reads them.
macro_rules! session_columns {
    () => {
        "id, handle, user_id, created_at, last_seen_at, auth_at, expires_at, \
         idle_timeout_ms, user_agent, ip, data, generation"
    };
}
/// The user columns, in the order [`user_from_row`] reads them.
macro_rules! user_columns {
    () => {
        "id, name, password_hash, disabled, created_at"
    };
}

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

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Maps a driver error onto what callers need to know: retry later
/// (unavailable), a key already taken, or a real failure.
fn store_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with extended codes.
        sqlx::Error::Database(db)
            if db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6)) =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Backend(Box::new(e)),
    }
}

fn digest(row: &SqliteRow, col: usize) -> Result<SessionId, StoreError> {
    let bytes: Vec<u8> = row.try_get(col).map_err(backend)?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("session id is not 32 bytes"))?;
    Ok(SessionId::from_digest(array))
}

fn session_id_from_row(row: &SqliteRow) -> Result<SessionId, StoreError> {
    digest(row, 0)
}

fn session_from_row(row: &SqliteRow) -> Result<Session, StoreError> {
    let handle: Vec<u8> = row.try_get(1).map_err(backend)?;
    let idle_ms: i64 = row.try_get(7).map_err(backend)?;
    let data: Option<String> = row.try_get(10).map_err(backend)?;
    let data: SessionData = match data {
        Some(json) => {
            serde_json::from_str(&json).map_err(|_| StoreError::Corrupt("session data"))?
        }
        None => SessionData::new(),
    };
    let generation: i64 = row.try_get(11).map_err(backend)?;
    Ok(Session {
        id: digest(row, 0)?,
        handle: SessionHandle::from_slice(&handle)
            .map_err(|_| StoreError::Corrupt("session handle"))?,
        user_id: row
            .try_get::<Option<String>, _>(2)
            .map_err(backend)?
            .map(UserId::new),
        created_at: Timestamp::from_millis(row.try_get(3).map_err(backend)?),
        last_seen_at: Timestamp::from_millis(row.try_get(4).map_err(backend)?),
        auth_at: row
            .try_get::<Option<i64>, _>(5)
            .map_err(backend)?
            .map(Timestamp::from_millis),
        expires_at: Timestamp::from_millis(row.try_get(6).map_err(backend)?),
        idle_timeout: Duration::from_millis(
            u64::try_from(idle_ms).map_err(|_| StoreError::Corrupt("idle timeout"))?,
        ),
        user_agent: row.try_get(8).map_err(backend)?,
        ip: row.try_get(9).map_err(backend)?,
        data,
        generation: u64::try_from(generation).map_err(|_| StoreError::Corrupt("generation"))?,
    })
}

fn generation_param(generation: u64) -> Result<i64, StoreError> {
    i64::try_from(generation).map_err(|_| StoreError::Corrupt("generation out of range"))
}

fn data_param(data: &SessionData) -> Result<Option<String>, StoreError> {
    if data.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(data)
        .map(Some)
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

impl SqliteStore {
    /// Runs `query` and reads the row it returns, if any, with `read`.
    async fn one<T>(
        &self,
        query: Query<'_>,
        read: fn(&SqliteRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let row = query
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(read).transpose()
    }

    /// Runs `query` and reads every row it returns with `read`.
    async fn all<T>(
        &self,
        query: Query<'_>,
        read: fn(&SqliteRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = query.fetch_all(&self.pool).await.map_err(store_error)?;
        rows.iter().map(read).collect()
    }

    /// After a conditional write matched nothing: did the record go, or change?
    async fn missing_or_stale(&self, id: &SessionId) -> Result<WriteOutcome, StoreError> {
        let exists = sqlx::query("SELECT 1 FROM sessions WHERE id = ?1")
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .is_some();
        Ok(if exists {
            WriteOutcome::Stale
        } else {
            WriteOutcome::Missing
        })
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert(&self, s: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, handle, user_id, created_at, last_seen_at, auth_at, \
             expires_at, idle_timeout_ms, user_agent, ip, data, generation) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .bind(s.id.as_bytes().as_slice())
        .bind(s.handle.as_bytes())
        .bind(s.user_id.as_ref().map(UserId::as_str))
        .bind(s.created_at.as_millis())
        .bind(s.last_seen_at.as_millis())
        .bind(s.auth_at.map(Timestamp::as_millis))
        .bind(s.expires_at.as_millis())
        .bind(duration_millis(s.idle_timeout))
        .bind(s.user_agent.as_deref())
        .bind(s.ip.as_deref())
        .bind(data_param(&s.data)?)
        .bind(generation_param(s.generation)?)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE id = ?1"
            ))
            .bind(id.as_bytes().as_slice()),
            session_from_row,
        )
        .await
    }

    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE handle = ?1"
            ))
            .bind(handle.as_bytes()),
            session_from_row,
        )
        .await
    }

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE sessions SET last_seen_at = max(last_seen_at, ?2) WHERE id = ?1")
                .bind(id.as_bytes().as_slice())
                .bind(at.as_millis())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET data = ?3, generation = generation + 1 \
             WHERE id = ?1 AND generation = ?2",
        )
        .bind(id.as_bytes().as_slice())
        .bind(generation_param(generation)?)
        .bind(data_param(data)?)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        if done.rows_affected() == 1 {
            return Ok(WriteOutcome::Applied);
        }
        self.missing_or_stale(id).await
    }

    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        // One transaction: the old digest is kept (for logout) exactly
        // when the record moves. Its first statement writes, so the write
        // lock is taken before anything is read.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query(
            "INSERT INTO rotated_tokens (id, handle, expires_at) \
             SELECT id, handle, expires_at FROM sessions WHERE id = ?1",
        )
        .bind(id.as_bytes().as_slice())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let done = sqlx::query(
            "UPDATE sessions SET id = ?2, generation = generation + 1, \
             auth_at = coalesce(?3, auth_at) WHERE id = ?1",
        )
        .bind(id.as_bytes().as_slice())
        .bind(new_id.as_bytes().as_slice())
        .bind(auth_at.map(Timestamp::as_millis))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "DELETE FROM sessions WHERE id = ?1 RETURNING ",
                session_columns!(),
                ""
            ))
            .bind(id.as_bytes().as_slice()),
            session_from_row,
        )
        .await
    }

    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "DELETE FROM sessions WHERE handle = ?1 AND (?2 IS NULL OR user_id = ?2) RETURNING ",
                session_columns!()
            ))
            .bind(handle.as_bytes())
            .bind(owner.map(UserId::as_str)),
            session_from_row,
        )
        .await
    }

    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = ?1 AND deadline <= ?2")
            .bind(id.as_bytes().as_slice())
            .bind(now.as_millis())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        self.all(
            sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE user_id = ?1"
            ))
            .bind(user.as_str()),
            session_from_row,
        )
        .await
    }

    async fn remove_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<Vec<SessionId>, StoreError> {
        self.all(
            sqlx::query("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2 RETURNING id")
                .bind(user.as_str())
                .bind(keep.map(|k| k.as_bytes().to_vec())),
            session_id_from_row,
        )
        .await
    }

    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let purged = self
            .all(
                sqlx::query(
                    "DELETE FROM sessions WHERE rowid IN \
                 (SELECT rowid FROM sessions WHERE deadline <= ?1 ORDER BY deadline LIMIT ?2) \
                 RETURNING id",
                )
                .bind(now.as_millis())
                .bind(limit),
                session_id_from_row,
            )
            .await?;
        sqlx::query(
            "DELETE FROM rotated_tokens WHERE rowid IN \
             (SELECT rowid FROM rotated_tokens WHERE expires_at <= ?1 LIMIT ?2)",
        )
        .bind(now.as_millis())
        .bind(limit)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(purged)
    }

    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        self.one(
            sqlx::query("SELECT handle FROM rotated_tokens WHERE id = ?1")
                .bind(old.as_bytes().as_slice()),
            |row| {
                let handle: Vec<u8> = row.try_get(0).map_err(backend)?;
                SessionHandle::from_slice(&handle)
                    .map_err(|_| StoreError::Corrupt("rotated token handle"))
            },
        )
        .await
    }
}

fn user_from_row(row: &SqliteRow) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::new(row.try_get::<String, _>(0).map_err(backend)?),
        name: row.try_get(1).map_err(backend)?,
        password_hash: row.try_get(2).map_err(backend)?,
        disabled: row.try_get(3).map_err(backend)?,
        created_at: Timestamp::from_millis(row.try_get(4).map_err(backend)?),
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, name, password_hash, disabled, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(user.id.as_str())
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.disabled)
        .bind(user.created_at.as_millis())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE name = ?1"
            ))
            .bind(name),
            user_from_row,
        )
        .await
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = ?1"
            ))
            .bind(id.as_str()),
            user_from_row,
        )
        .await
    }

    async fn set_password_hash(&self, id: &UserId, phc: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = ?2 WHERE id = ?1")
            .bind(id.as_str())
            .bind(phc)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        expected: &str,
        phc: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2")
                .bind(id.as_str())
                .bind(expected)
                .bind(phc)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET disabled = ?2 WHERE id = ?1")
            .bind(id.as_str())
            .bind(disabled)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.all(
            sqlx::query(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users ORDER BY name"
            )),
            user_from_row,
        )
        .await
    }
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEvent, StoreError> {
    let kind: String = row.try_get(2).map_err(backend)?;
    let session: Option<String> = row.try_get(5).map_err(backend)?;
    let actor: Option<String> = row.try_get(6).map_err(backend)?;
    let count: Option<i64> = row.try_get(9).map_err(backend)?;
    Ok(AuditEvent {
        seq: row.try_get(0).map_err(backend)?,
        at: Timestamp::from_millis(row.try_get(1).map_err(backend)?),
        kind: kind.parse()?,
        user_id: row
            .try_get::<Option<String>, _>(3)
            .map_err(backend)?
            .map(UserId::new),
        user_name: row.try_get(4).map_err(backend)?,
        session: session
            .map(|h| {
                h.parse()
                    .map_err(|_| StoreError::Corrupt("audit session handle"))
            })
            .transpose()?,
        by: actor.map(|a| a.parse()).transpose()?,
        reason: row.try_get(7).map_err(backend)?,
        ip: row.try_get(8).map_err(backend)?,
        count: count
            .map(|c| u64::try_from(c).map_err(|_| StoreError::Corrupt("audit count")))
            .transpose()?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, e: &AuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (at, kind, user_id, user_name, session, actor, reason, ip, count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(e.at.as_millis())
        .bind(e.kind.as_str())
        .bind(e.user_id.as_ref().map(UserId::as_str))
        .bind(e.user_name.as_deref())
        .bind(e.session.map(|h| h.to_string()))
        .bind(e.by.map(Actor::as_str))
        .bind(e.reason.as_deref())
        .bind(e.ip.as_deref())
        .bind(e.count.map(|c| i64::try_from(c).unwrap_or(i64::MAX)))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let limit =
            i64::try_from(q.limit.unwrap_or(crate::audit::DEFAULT_LIMIT)).unwrap_or(i64::MAX);
        self.all(
            sqlx::query(
                "SELECT a.seq, a.at, a.kind, a.user_id, coalesce(a.user_name, u.name), a.session, \
                 a.actor, a.reason, a.ip, a.count \
                 FROM audit a LEFT JOIN users u ON u.id = a.user_id \
                 WHERE (?1 IS NULL OR a.user_id = ?1) AND (?2 IS NULL OR a.at >= ?2) \
                 AND (?3 IS NULL OR a.kind = ?3) \
                 ORDER BY a.seq DESC LIMIT ?4",
            )
            .bind(q.user_id.as_ref().map(UserId::as_str))
            .bind(q.since.map(Timestamp::as_millis))
            .bind(q.kind.map(AuditKind::as_str))
            .bind(limit),
            audit_from_row,
        )
        .await
    }

    async fn purge_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit WHERE at < ?1")
            .bind(before.as_millis())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl super::StateStore for SqliteStore {
    async fn get_state(&self, name: &str) -> Result<Option<super::Versioned>, StoreError> {
        self.one(
            sqlx::query("SELECT value, version FROM engine_state WHERE name = ?1").bind(name),
            |row| {
                let version: i64 = row.try_get("version").map_err(backend)?;
                Ok(super::Versioned {
                    value: row.try_get("value").map_err(backend)?,
                    version: u64::try_from(version)
                        .map_err(|_| StoreError::Corrupt("negative state version"))?,
                })
            },
        )
        .await
    }

    async fn put_state(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let query = match expected {
            None => sqlx::query(
                "INSERT INTO engine_state (name, value, version) VALUES (?1, ?2, 1) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value),
            Some(v) => sqlx::query(
                "UPDATE engine_state SET value = ?2, version = version + 1 \
                 WHERE name = ?1 AND version = ?3",
            )
            .bind(name)
            .bind(value)
            .bind(i64::try_from(v).map_err(|_| StoreError::Corrupt("state version too large"))?),
        };
        let done = query.execute(&self.pool).await.map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }
}

/// Changes read in one poll at most; a larger backlog (a mass sign-out)
/// is answered by forgetting everything.
const CHANGES_PER_POLL: usize = 1000;

/// A watch on the change log, on a connection of its own.
struct SqliteSubscription {
    conn: SqliteConnection,
    /// The highest change read.
    last: i64,
    /// `PRAGMA data_version` at the last read: it moves when another
    /// connection commits, so an idle poll costs no table read.
    data_version: i64,
    ready: VecDeque<String>,
    local: broadcast::Receiver<String>,
    ticker: tokio::time::Interval,
}

/// The error for a change log that cannot be followed.
#[derive(Debug, thiserror::Error)]
#[error("this process's own announcements were dropped")]
struct LocalClosed;

impl SqliteSubscription {
    async fn poll(&mut self) -> Result<(), StoreError> {
        let version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut self.conn)
            .await
            .map_err(unavailable)?;
        if version == self.data_version {
            return Ok(());
        }
        self.data_version = version;
        let limit = i64::try_from(CHANGES_PER_POLL + 1).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, id FROM session_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(self.last)
        .bind(limit)
        .fetch_all(&mut self.conn)
        .await
        .map_err(unavailable)?;
        if rows.is_empty() {
            // The log never shrinks below what was read unless the file was
            // replaced (a restore): start over from what it holds now.
            let top = self.top().await?;
            if top < self.last {
                self.last = top;
                self.ready.push_back("*".to_owned());
            }
            return Ok(());
        }
        let gap = rows.first().is_some_and(|(seq, _)| *seq != self.last + 1);
        if gap || rows.len() > CHANGES_PER_POLL {
            // Rows not read yet were pruned, or too many to read now.
            self.last = self.top().await?;
            self.ready.push_back("*".to_owned());
            return Ok(());
        }
        for (seq, id) in rows {
            self.last = seq;
            match <[u8; 32]>::try_from(id.as_slice()) {
                Ok(digest) => self
                    .ready
                    .push_back(crate::revocation::invalidation_payload(
                        &SessionId::from_digest(digest),
                    )),
                Err(_) => self.ready.push_back("*".to_owned()),
            }
        }
        Ok(())
    }

    async fn top(&mut self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM session_changes")
            .fetch_one(&mut self.conn)
            .await
            .map_err(unavailable)
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

#[async_trait]
impl BusSubscription for SqliteSubscription {
    async fn next(&mut self) -> Result<String, StoreError> {
        loop {
            if let Some(payload) = self.ready.pop_front() {
                return Ok(payload);
            }
            // The heartbeats that come back here pass through this same
            // loop, so a poll that hangs makes them late and the bus runner
            // stops trusting the cache; a poll that fails ends the
            // subscription (the same).
            tokio::select! {
                biased;
                local = self.local.recv() => match local {
                    Ok(payload) => return Ok(payload),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(StoreError::Unavailable(Box::new(LocalClosed)))
                    }
                },
                _ = self.ticker.tick() => self.poll().await?,
            }
        }
    }
}

#[async_trait]
impl RevocationBus for SqliteStore {
    /// A watch on the change log the triggers fill. Returns once it knows
    /// where the log ends, so every change committed afterwards (by any
    /// process) is delivered.
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, StoreError> {
        let mut conn = SqliteConnection::connect_with(&self.connect)
            .await
            .map_err(unavailable)?;
        let data_version: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut ticker = tokio::time::interval(self.watch_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut subscription = SqliteSubscription {
            conn,
            last: 0,
            data_version,
            ready: VecDeque::new(),
            local: self.local.subscribe(),
            ticker,
        };
        subscription.last = subscription.top().await?;
        Ok(Box::new(subscription))
    }

    /// Delivers `payload` to this process's subscriptions only (the bus
    /// runner's heartbeats). Other processes learn of changes to sessions
    /// from the change log, not from here.
    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        // No subscriber yet is no error: the runner subscribes in its own time.
        let _ = self.local.send(payload.to_owned());
        Ok(())
    }
}

/// Who may read the database file.
#[cfg(unix)]
mod permissions {
    use std::fs::{self, OpenOptions};
    use std::io::ErrorKind;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use super::OpenToOthers;
    use crate::store::StoreError;

    /// Refuses (or, with `allow`, warns about) a directory other users can
    /// write or files they can open, and creates a missing database file
    /// with mode 0600 before SQLite opens it. SQLite gives the `-wal` and
    /// `-shm` it creates the main file's mode.
    pub(super) fn prepare(path: &Path, allow: bool) -> Result<(), StoreError> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut problems = Vec::new();
        if let Ok(meta) = fs::metadata(&dir) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                problems.push(format!(
                    "the directory {} is writable by other users (mode {mode:04o}), who could \
                     replace the database or plant its -wal file; use a directory only this \
                     user can write (chmod go-w {})",
                    dir.display(),
                    shell_quote(&dir)
                ));
            }
        }
        if problems.is_empty() || allow {
            // create_new: never follows a planted link, never changes a file
            // that exists. The umask can only take bits away from 0600.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == ErrorKind::NotFound && !dir.exists() => {
                    return Err(StoreError::Unavailable(Box::new(std::io::Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "the directory {} does not exist; create it first (mkdir -p {}) \
                             or choose another path",
                            dir.display(),
                            shell_quote(&dir)
                        ),
                    ))))
                }
                Err(e) => return Err(StoreError::Unavailable(Box::new(e))),
            }
        }
        let mut open = Vec::new();
        for file in companions(path) {
            if let Ok(meta) = fs::metadata(&file) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    open.push((file, mode));
                }
            }
        }
        if !open.is_empty() {
            let names: Vec<String> = open
                .iter()
                .map(|(f, mode)| format!("{} (mode {mode:04o})", f.display()))
                .collect();
            let fix: Vec<String> = companions(path).iter().map(|f| shell_quote(f)).collect();
            problems.push(format!(
                "other users can read or write {}, and the database holds password hashes \
                 and the keys that sign access tokens; fix: chmod 600 {}",
                names.join(", "),
                fix.join(" ")
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        let message = problems.join("; ");
        if allow {
            tracing::warn!(
                "SQLITE DATABASE OPEN TO OTHER USERS (allowed by the settings): {message}"
            );
            return Ok(());
        }
        Err(StoreError::Backend(Box::new(OpenToOthers(message))))
    }

    /// The database file and the two SQLite keeps beside it in WAL mode.
    fn companions(path: &Path) -> [PathBuf; 3] {
        let with = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        [path.to_path_buf(), with("-wal"), with("-shm")]
    }

    /// The path as one shell word.
    fn shell_quote(path: &Path) -> String {
        let text = path.display().to_string();
        if text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@:,".contains(&b))
        {
            text
        } else {
            format!("'{}'", text.replace('\'', "'\\''"))
        }
    }
}
