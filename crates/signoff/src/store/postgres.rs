//! A shared store: sessions, users and the audit trail in PostgreSQL, and
//! the revocation bus on `LISTEN`/`NOTIFY`.
//!
//! - Every write after insert is one conditional statement (`UPDATE ...
//!   WHERE id = $1 AND generation = $2`, `DELETE ... RETURNING`), so there is
//!   no read-then-write window for a concurrent logout to fall into; purge
//!   takes its rows with `FOR UPDATE SKIP LOCKED`, so many nodes can purge at
//!   once and each session is deleted exactly once.
//! - Announcements come from triggers on `sessions`: every delete, and every
//!   update that changes the digest, data, generation or authentication
//!   time, calls `pg_notify` inside the writing transaction. PostgreSQL
//!   delivers it if and only if that transaction commits, so no write can
//!   commit unannounced. A touch (only `last_seen_at`) announces nothing.
//! - With [`PostgresOptions::schema`], the tables, the migration history
//!   and the notification channel all live in that schema, so several
//!   deployments (or test runs) can share one database without seeing each
//!   other.
//!
//! The channel is `signoff_<schema>`, where `<schema>` is the schema that
//! holds the `sessions` table (`signoff_public` by default); if that name
//! would be longer than PostgreSQL's 63-byte identifier limit, it is
//! `signoff_<md5 of the schema name in hex>` instead. See
//! [`PostgresStore::channel`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow, Postgres,
};
use sqlx::{Connection, Executor, Row};

use super::{SessionStore, StoreError, WriteOutcome};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditQuery, AuditStore};
use crate::clock::{duration_millis, Timestamp};
use crate::revocation::{BusSubscription, RevocationBus};
use crate::session::{Session, SessionData, UserId};
use crate::session_token::{SessionHandle, SessionId};
use crate::users::{User, UserStore};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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

/// Options for [`PostgresStore::connect_with`].
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// A `postgres://` connection URL.
    pub url: String,
    /// The schema to keep everything in: created if missing, and put alone
    /// on every connection's `search_path`. Must match
    /// `[a-z_][a-z0-9_]{0,62}`. `None` (the default) uses the server's
    /// `search_path` as it is, usually `public`.
    pub schema: Option<String>,
    /// Connections in the pool. Default 8. Each subscription to the bus
    /// holds one more connection of its own.
    pub max_connections: u32,
    /// How long to wait for a connection (new or from the pool) before
    /// reporting the store unavailable. Default 1 s: while the server is
    /// down, requests are refused after this long, so keep it short.
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every pooled connection, and
    /// with [`connect_timeout`](Self::connect_timeout) plus one second the
    /// client-side limit on every operation, after which it reports the
    /// store unavailable. Default 5 s; `None` sets neither.
    pub statement_timeout: Option<Duration>,
}

impl PostgresOptions {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 8,
            connect_timeout: Duration::from_secs(1),
            statement_timeout: Some(Duration::from_secs(5)),
        }
    }

    /// Sets [`PostgresOptions::schema`].
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &super::redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// Whether `name` matches `[a-z_][a-z0-9_]{0,62}`.
fn valid_schema_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && name.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Sessions, users and the audit trail in PostgreSQL; also a
/// [`RevocationBus`] on the channel its triggers announce on.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use signoff::{Policy, PostgresStore, Sessions};
///
/// let store = PostgresStore::connect("postgres://signoff@db/signoff").await.unwrap();
/// let sessions = Sessions::new(Arc::new(store), Policy::default());
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// For the bus's own connections.
    connect: PgConnectOptions,
    schema: Option<String>,
    channel: String,
    connect_timeout: Duration,
    /// Client-side limit on every operation.
    op_timeout: Option<Duration>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the connect options: they hold the password.
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("channel", &self.channel)
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` with default options and applies
    /// pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached in time,
    /// [`StoreError::Backend`] if the URL is invalid, the server refuses the
    /// connection, or migrations fail.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PostgresOptions::new(url)).await
    }

    /// Connects with the given options, creates the schema if one is named
    /// and missing, and applies pending migrations in it.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`]; also [`StoreError::Backend`] for a
    /// schema name outside `[a-z_][a-z0-9_]{0,62}`.
    pub async fn connect_with(options: PostgresOptions) -> Result<Self, StoreError> {
        if let Some(schema) = &options.schema {
            if !valid_schema_name(schema) {
                return Err(StoreError::Backend(
                    "invalid schema name: use 1 to 63 of a-z 0-9 _, not starting with a digit"
                        .into(),
                ));
            }
        }
        let connect = PgConnectOptions::from_str(&options.url).map_err(backend)?;
        // Both values are checked above or formatted from integers: safe to
        // put in the statement text.
        let mut setup = String::new();
        if let Some(schema) = &options.schema {
            setup.push_str(&format!("SET search_path TO \"{schema}\";"));
        }
        if let Some(timeout) = options.statement_timeout {
            let ms = duration_millis(timeout).max(1);
            setup.push_str(&format!("SET statement_timeout = {ms};"));
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .after_connect(move |conn, _meta| {
                let setup = setup.clone();
                Box::pin(async move {
                    if !setup.is_empty() {
                        conn.execute(setup.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect.clone())
            .await
            .map_err(store_error)?;
        let result = Self::prepare(&pool, &options).await;
        let channel = match result {
            Ok(channel) => channel,
            Err(e) => {
                pool.close().await;
                return Err(e);
            }
        };
        Ok(Self {
            pool,
            connect,
            schema: options.schema,
            channel,
            connect_timeout: options.connect_timeout,
            op_timeout: options
                .statement_timeout
                .map(|t| t + options.connect_timeout + Duration::from_secs(1)),
        })
    }

    /// Creates the schema, migrates, and reads back the channel name.
    async fn prepare(pool: &PgPool, options: &PostgresOptions) -> Result<String, StoreError> {
        // Migrations run on a connection of their own without a statement
        // timeout, which a long migration of a large table could exceed.
        let mut conn = pool.acquire().await.map_err(store_error)?.detach();
        let migrated = async {
            conn.execute("SET statement_timeout = 0")
                .await
                .map_err(store_error)?;
            if let Some(schema) = &options.schema {
                // Validated by the caller.
                conn.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
                    .await
                    .map_err(store_error)?;
            }
            MIGRATIONS
                .run(&mut conn)
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
            // The same rule as the trigger function in
            // migrations/postgres/0003_revocation_announcements.sql.
            let channel: String = sqlx::query_scalar(
                "SELECT CASE WHEN octet_length('signoff_' || n.nspname) <= 63 \
                 THEN 'signoff_' || n.nspname ELSE 'signoff_' || md5(n.nspname) END \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = 'sessions'::regclass",
            )
            .fetch_one(&mut conn)
            .await
            .map_err(store_error)?;
            Ok(channel)
        }
        .await;
        let _ = conn.close().await;
        migrated
    }

    /// The notification channel this store's triggers announce on and its
    /// [`RevocationBus`] uses: `signoff_<schema>` for the schema holding
    /// the tables (`signoff_public` by default), or `signoff_<md5(schema)>`
    /// if that would exceed 63 bytes.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The schema named in the options, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The connection pool, for maintenance queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to be returned.
    /// Bus subscriptions have connections of their own and stay open.
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
        sqlx::Error::Database(db) if db.code().is_some_and(|c| transient_sqlstate(&c)) => {
            StoreError::Unavailable(Box::new(e))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Backend(Box::new(e)),
    }
}

/// SQLSTATEs after which the operation did not happen and may work later.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, ...)
        || matches!(
            code,
            "57014" // query_canceled (statement_timeout)
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
        )
}

fn digest(row: &PgRow, col: usize) -> Result<SessionId, StoreError> {
    let bytes: Vec<u8> = row.try_get(col).map_err(backend)?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("session id is not 32 bytes"))?;
    Ok(SessionId::from_digest(array))
}

fn session_id_from_row(row: &PgRow) -> Result<SessionId, StoreError> {
    digest(row, 0)
}

fn session_from_row(row: &PgRow) -> Result<Session, StoreError> {
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

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// The error for an operation that ran out of time on the client side.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL did not answer within {0:?}")]
struct TimedOut(Duration);

impl PostgresStore {
    /// Runs `work` within the operation timeout, if there is one.
    async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match self.op_timeout {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(result) => result.map_err(store_error),
                Err(_) => Err(StoreError::Unavailable(Box::new(TimedOut(limit)))),
            },
            None => work.await.map_err(store_error),
        }
    }

    /// Runs `query` and returns how many rows it changed.
    async fn exec(&self, query: Query<'_>) -> Result<u64, StoreError> {
        let done = self.timed(query.execute(&self.pool)).await?;
        Ok(done.rows_affected())
    }

    /// Runs `query` and reads the row it returns, if any, with `read`.
    async fn one<T>(
        &self,
        query: Query<'_>,
        read: fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let row = self.timed(query.fetch_optional(&self.pool)).await?;
        row.as_ref().map(read).transpose()
    }

    /// Runs `query` and reads every row it returns with `read`.
    async fn all<T>(
        &self,
        query: Query<'_>,
        read: fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.timed(query.fetch_all(&self.pool)).await?;
        rows.iter().map(read).collect()
    }

    /// After a conditional write matched nothing: did the record go, or change?
    async fn missing_or_stale(&self, id: &SessionId) -> Result<WriteOutcome, StoreError> {
        let exists = self
            .one(
                sqlx::query("SELECT 1 FROM sessions WHERE id = $1").bind(id.as_bytes().as_slice()),
                |_| Ok(()),
            )
            .await?
            .is_some();
        Ok(if exists {
            WriteOutcome::Stale
        } else {
            WriteOutcome::Missing
        })
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn insert(&self, s: &Session) -> Result<(), StoreError> {
        self.exec(
            sqlx::query(
                "INSERT INTO sessions (id, handle, user_id, created_at, last_seen_at, auth_at, \
                 expires_at, idle_timeout_ms, user_agent, ip, data, generation) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
            .bind(generation_param(s.generation)?),
        )
        .await?;
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE id = $1"
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
                " FROM sessions WHERE handle = $1"
            ))
            .bind(handle.as_bytes()),
            session_from_row,
        )
        .await
    }

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE sessions SET last_seen_at = greatest(last_seen_at, $2) WHERE id = $1",
                )
                .bind(id.as_bytes().as_slice())
                .bind(at.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE sessions SET data = $3, generation = generation + 1 \
                     WHERE id = $1 AND generation = $2",
                )
                .bind(id.as_bytes().as_slice())
                .bind(generation_param(generation)?)
                .bind(data_param(data)?),
            )
            .await?;
        if n == 1 {
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
        // One statement: the old digest is kept (for logout) exactly when
        // the record moves.
        let n = self
            .exec(
                sqlx::query(
                    "WITH moved AS (UPDATE sessions SET id = $2, generation = generation + 1, \
                     auth_at = coalesce($3, auth_at) WHERE id = $1 RETURNING handle, expires_at) \
                     INSERT INTO rotated_tokens (id, handle, expires_at) \
                     SELECT $1, handle, expires_at FROM moved",
                )
                .bind(id.as_bytes().as_slice())
                .bind(new_id.as_bytes().as_slice())
                .bind(auth_at.map(Timestamp::as_millis)),
            )
            .await?;
        Ok(n == 1)
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "DELETE FROM sessions WHERE id = $1 RETURNING ",
                session_columns!()
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
                "DELETE FROM sessions WHERE handle = $1 \
                 AND ($2::text IS NULL OR user_id = $2::text) RETURNING ",
                session_columns!()
            ))
            .bind(handle.as_bytes())
            .bind(owner.map(UserId::as_str)),
            session_from_row,
        )
        .await
    }

    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM sessions WHERE id = $1 AND deadline <= $2")
                    .bind(id.as_bytes().as_slice())
                    .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        self.all(
            sqlx::query(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE user_id = $1"
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
            sqlx::query(
                "DELETE FROM sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2::bytea \
                 RETURNING id",
            )
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
        // SKIP LOCKED: purges running at once on several nodes take
        // disjoint rows instead of queueing behind each other.
        let purged = self
            .all(
                sqlx::query(
                    "DELETE FROM sessions WHERE id IN \
                     (SELECT id FROM sessions WHERE deadline <= $1 ORDER BY deadline LIMIT $2 \
                      FOR UPDATE SKIP LOCKED) \
                     RETURNING id",
                )
                .bind(now.as_millis())
                .bind(limit),
                session_id_from_row,
            )
            .await?;
        self.exec(
            sqlx::query(
                "DELETE FROM rotated_tokens WHERE id IN \
                 (SELECT id FROM rotated_tokens WHERE expires_at <= $1 LIMIT $2 \
                  FOR UPDATE SKIP LOCKED)",
            )
            .bind(now.as_millis())
            .bind(limit),
        )
        .await?;
        Ok(purged)
    }

    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        self.one(
            sqlx::query("SELECT handle FROM rotated_tokens WHERE id = $1")
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

fn user_from_row(row: &PgRow) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::new(row.try_get::<String, _>(0).map_err(backend)?),
        name: row.try_get(1).map_err(backend)?,
        password_hash: row.try_get(2).map_err(backend)?,
        disabled: row.try_get(3).map_err(backend)?,
        created_at: Timestamp::from_millis(row.try_get(4).map_err(backend)?),
    })
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        self.exec(
            sqlx::query(
                "INSERT INTO users (id, name, password_hash, disabled, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user.id.as_str())
            .bind(&user.name)
            .bind(&user.password_hash)
            .bind(user.disabled)
            .bind(user.created_at.as_millis()),
        )
        .await?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.one(
            sqlx::query(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE name = $1"
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
                " FROM users WHERE id = $1"
            ))
            .bind(id.as_str()),
            user_from_row,
        )
        .await
    }

    async fn set_password_hash(&self, id: &UserId, phc: &str) -> Result<bool, StoreError> {
        let n = self
            .exec(
                sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
                    .bind(id.as_str())
                    .bind(phc),
            )
            .await?;
        Ok(n == 1)
    }

    async fn replace_password_hash(
        &self,
        id: &UserId,
        expected: &str,
        phc: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
                )
                .bind(id.as_str())
                .bind(expected)
                .bind(phc),
            )
            .await?;
        Ok(n == 1)
    }

    async fn set_disabled(&self, id: &UserId, disabled: bool) -> Result<bool, StoreError> {
        let n = self
            .exec(
                sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
                    .bind(id.as_str())
                    .bind(disabled),
            )
            .await?;
        Ok(n == 1)
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the
        // database's collation.
        self.all(
            sqlx::query(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users ORDER BY name COLLATE \"C\""
            )),
            user_from_row,
        )
        .await
    }
}

fn audit_from_row(row: &PgRow) -> Result<AuditEvent, StoreError> {
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
impl AuditStore for PostgresStore {
    async fn append(&self, e: &AuditEvent) -> Result<(), StoreError> {
        self.exec(
            sqlx::query(
                "INSERT INTO audit (at, kind, user_id, user_name, session, actor, reason, ip, \
                 count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(e.at.as_millis())
            .bind(e.kind.as_str())
            .bind(e.user_id.as_ref().map(UserId::as_str))
            .bind(e.user_name.as_deref())
            .bind(e.session.map(|h| h.to_string()))
            .bind(e.by.map(Actor::as_str))
            .bind(e.reason.as_deref())
            .bind(e.ip.as_deref())
            .bind(e.count.map(|c| i64::try_from(c).unwrap_or(i64::MAX))),
        )
        .await?;
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
                 WHERE ($1::text IS NULL OR a.user_id = $1::text) \
                 AND ($2::bigint IS NULL OR a.at >= $2::bigint) \
                 AND ($3::text IS NULL OR a.kind = $3::text) \
                 ORDER BY a.seq DESC LIMIT $4",
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
        self.exec(sqlx::query("DELETE FROM audit WHERE at < $1").bind(before.as_millis()))
            .await
    }
}

/// A `LISTEN` on the store's channel, on a connection of its own.
struct PgSubscription {
    listener: PgListener,
    /// Keeps the listener's private pool open.
    _pool: PgPool,
}

/// The error for a notification connection that went away.
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL notification connection was lost")]
struct ConnectionLost;

#[async_trait]
impl BusSubscription for PgSubscription {
    async fn next(&mut self) -> Result<String, StoreError> {
        // try_recv, not recv: recv reconnects silently, and whatever was
        // announced while it was away would be lost without a trace. Here a
        // lost connection ends the subscription, and the bus distrusts its
        // cache until it has subscribed again.
        match self.listener.try_recv().await {
            Ok(Some(notification)) => Ok(notification.payload().to_owned()),
            Ok(None) => Err(StoreError::Unavailable(Box::new(ConnectionLost))),
            Err(e) => Err(StoreError::Unavailable(Box::new(e))),
        }
    }
}

#[async_trait]
impl RevocationBus for PostgresStore {
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, StoreError> {
        // A private pool of one connection, so that a subscription never
        // takes a connection the sessions need, and is never handed back
        // to serve queries while still listening.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(self.connect_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.connect.clone());
        let listen = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.eager_reconnect(false);
            listener.ignore_pool_close_event(true);
            // Returns once the server has run LISTEN: anything committed
            // from now on reaches this subscription.
            listener.listen(&self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let listener = match tokio::time::timeout(self.connect_timeout * 2, listen).await {
            Ok(result) => result.map_err(|e| match store_error(e) {
                StoreError::Backend(e) => StoreError::Unavailable(e),
                other => other,
            })?,
            Err(_) => {
                return Err(StoreError::Unavailable(Box::new(TimedOut(
                    self.connect_timeout * 2,
                ))))
            }
        };
        Ok(Box::new(PgSubscription {
            listener,
            _pool: pool,
        }))
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let channel = self.channel.as_str();
        self.timed(
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&self.pool),
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl super::StateStore for PostgresStore {
    async fn get_state(&self, name: &str) -> Result<Option<super::Versioned>, StoreError> {
        self.one(
            sqlx::query("SELECT value, version FROM engine_state WHERE name = $1").bind(name),
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
                "INSERT INTO engine_state (name, value, version) VALUES ($1, $2, 1) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value),
            Some(v) => sqlx::query(
                "UPDATE engine_state SET value = $2, version = version + 1 \
                 WHERE name = $1 AND version = $3",
            )
            .bind(name)
            .bind(value)
            .bind(i64::try_from(v).map_err(|_| StoreError::Corrupt("state version too large"))?),
        };
        Ok(self.exec(query).await? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords() {
        for (url, shown) in [
            (
                "postgres://alice:s3cret@db:5432/app",
                "postgres://alice:***@db:5432/app",
            ),
            (
                "postgres://alice:p@ss@db/app?sslmode=require",
                "postgres://alice:***@db/app?sslmode=require",
            ),
            (
                "postgres://db/app?user=alice&password=s3cret&sslmode=disable",
                "postgres://db/app?user=alice&password=***&sslmode=disable",
            ),
            ("postgres://alice@db/app", "postgres://alice@db/app"),
            ("postgres://db", "postgres://db"),
        ] {
            assert_eq!(super::super::redact_url(url), shown);
            let debug = format!("{:?}", PostgresOptions::new(url));
            assert!(
                !debug.contains("s3cret") && !debug.contains("p@ss"),
                "{debug}"
            );
        }
    }

    #[test]
    fn schema_names_are_checked() {
        for good in ["a", "_", "signoff_t_0123456789abcdef", &"a".repeat(63)] {
            assert!(valid_schema_name(good), "{good}");
        }
        for bad in [
            "",
            "1a",
            "A",
            "a-b",
            "a\"; DROP TABLE x; --",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }
}
