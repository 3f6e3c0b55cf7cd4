//! The SQL that the SQLite and PostgreSQL stores share, written once:
//! the statements, the decoding of rows into sessions, users and audit
//! events, and the sorting of driver errors into [`StoreError`].
//!
//! A backend names its [`Dialect`] (the few statements that differ between
//! the two databases, and which errors mean "try again later") and hands
//! over its pool ([`SqlBackend`]); the store traits are implemented here,
//! once, for every such backend.
//!
//! Statements use `$1`-style placeholders, which both PostgreSQL and
//! SQLite (through sqlx) read; a placeholder used twice is one value.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use super::StoreError;
use crate::clock::Timestamp;
use crate::session_token::SessionId;

#[cfg(feature = "audit")]
mod audit;
mod rows;
mod sessions;
mod state;
#[cfg(feature = "accounts")]
mod users;

use rows::Column as _;
pub(crate) use rows::{user_columns, SqlRow};
pub(crate) use sessions::alive;

/// What differs between the SQL databases the stores run on.
pub(crate) trait Dialect: Run + Database<Row: SqlRow> {
    /// Sets a session's `last_seen_at` to the later of itself and `$2`.
    /// Binds: id, at.
    const TOUCH: &'static str;

    /// Deletes at most `$2` sessions whose deadline is at or before `$1`,
    /// returning their ids; safe to run on many nodes at once.
    const PURGE_SESSIONS: &'static str;

    /// Deletes at most `$2` rotated-away digests whose session expired at
    /// or before `$1`.
    const PURGE_ROTATED: &'static str;

    /// Every user, ordered by name byte by byte.
    #[cfg_attr(not(feature = "accounts"), allow(dead_code))]
    const LIST_USERS: &'static str;

    /// The statements of [`crate::SessionStore::rotate`]: together they
    /// move the session from `id` to `new_id` and keep `id` as a pointer to
    /// its handle, in one transaction; the last one's count of changed rows
    /// is 1 if the session moved.
    fn rotate<'a>(
        id: &'a SessionId,
        new_id: &'a SessionId,
        auth_at: Option<Timestamp>,
    ) -> Vec<Statement<'a>>;

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Whether `e` means the store could not be reached or was too busy,
    /// beyond what every backend counts so (see [`store_error`]).
    fn transient(e: &sqlx::Error) -> bool;
}

/// A SQL store: its pool and limits, for the shared statements. With it,
/// the type is a [`crate::SessionStore`], [`crate::UserStore`],
/// [`crate::AuditStore`] and [`crate::StateStore`].
pub(crate) trait SqlBackend: Send + Sync + 'static {
    /// The database the pool connects to.
    type Db: Dialect;

    /// The pool and the limit on each operation.
    fn sql(&self) -> Sql<'_, Self::Db>;
}

/// A value bound to a statement.
enum Value<'a> {
    Bytes(Option<&'a [u8]>),
    Int(Option<i64>),
    Text(Option<Cow<'a, str>>),
    Flag(bool),
}

/// A statement with its values, in placeholder order.
pub(crate) struct Statement<'a> {
    sql: &'static str,
    values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    pub(crate) fn new(sql: &'static str) -> Self {
        Self {
            sql,
            values: Vec::new(),
        }
    }

    pub(crate) fn bytes(mut self, value: impl Into<Option<&'a [u8]>>) -> Self {
        self.values.push(Value::Bytes(value.into()));
        self
    }

    pub(crate) fn int(mut self, value: impl Into<Option<i64>>) -> Self {
        self.values.push(Value::Int(value.into()));
        self
    }

    pub(crate) fn text(mut self, value: Option<&'a str>) -> Self {
        self.values.push(Value::Text(value.map(Cow::Borrowed)));
        self
    }

    pub(crate) fn owned_text(mut self, value: Option<String>) -> Self {
        self.values.push(Value::Text(value.map(Cow::Owned)));
        self
    }

    pub(crate) fn flag(mut self, value: bool) -> Self {
        self.values.push(Value::Flag(value));
        self
    }
}

/// A boxed future that can cross threads, as sqlx's executors give.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// Running statements on a pool; every sqlx database that takes the
/// statements' values has it.
pub(crate) trait Run: Database {
    /// Runs `st`.
    fn execute<'q>(
        pool: &'q Pool<Self>,
        st: &'q Statement<'q>,
    ) -> BoxFuture<'q, Result<Self::QueryResult, sqlx::Error>>;

    /// Runs `st` and returns the row it gives, if any.
    fn fetch_optional<'q>(
        pool: &'q Pool<Self>,
        st: &'q Statement<'q>,
    ) -> BoxFuture<'q, Result<Option<Self::Row>, sqlx::Error>>;

    /// Runs `st` and returns every row it gives.
    fn fetch_all<'q>(
        pool: &'q Pool<Self>,
        st: &'q Statement<'q>,
    ) -> BoxFuture<'q, Result<Vec<Self::Row>, sqlx::Error>>;

    /// Runs `sts` in one transaction (one alone runs as it is) and returns
    /// what the last one did.
    fn execute_all<'q>(
        pool: &'q Pool<Self>,
        sts: &'q [Statement<'q>],
    ) -> BoxFuture<'q, Result<Self::QueryResult, sqlx::Error>>;

    /// Runs `writes`, then `read`, in one transaction; the rows of `read`.
    fn fetch_after<'q>(
        pool: &'q Pool<Self>,
        writes: &'q [Statement<'q>],
        read: &'q Statement<'q>,
    ) -> BoxFuture<'q, Result<Vec<Self::Row>, sqlx::Error>>;
}

impl<DB> Run for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
{
    fn execute<'q>(
        pool: &'q Pool<Self>,
        st: &'q Statement<'q>,
    ) -> BoxFuture<'q, Result<Self::QueryResult, sqlx::Error>> {
        Box::pin(query(st).execute(pool))
    }

    fn fetch_optional<'q>(
        pool: &'q Pool<Self>,
        st: &'q Statement<'q>,
    ) -> BoxFuture<'q, Result<Option<Self::Row>, sqlx::Error>> {
        Box::pin(query(st).fetch_optional(pool))
    }

    fn fetch_all<'q>(
        pool: &'q Pool<Self>,
        st: &'q Statement<'q>,
    ) -> BoxFuture<'q, Result<Vec<Self::Row>, sqlx::Error>> {
        Box::pin(query(st).fetch_all(pool))
    }

    fn execute_all<'q>(
        pool: &'q Pool<Self>,
        sts: &'q [Statement<'q>],
    ) -> BoxFuture<'q, Result<Self::QueryResult, sqlx::Error>> {
        Box::pin(async move {
            if let [st] = sts {
                return query(st).execute(pool).await;
            }
            let mut tx = pool.begin().await?;
            let mut last = Self::QueryResult::default();
            for st in sts {
                last = query(st).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(last)
        })
    }

    fn fetch_after<'q>(
        pool: &'q Pool<Self>,
        writes: &'q [Statement<'q>],
        read: &'q Statement<'q>,
    ) -> BoxFuture<'q, Result<Vec<Self::Row>, sqlx::Error>> {
        Box::pin(async move {
            let mut tx = pool.begin().await?;
            for st in writes {
                query(st).execute(&mut *tx).await?;
            }
            let rows = query(read).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(rows)
        })
    }
}

/// `st` as a sqlx query with its values bound.
fn query<'q, DB>(st: &'q Statement<'q>) -> Query<'q, DB>
where
    DB: Database,
    Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
{
    st.values
        .iter()
        .fold(sqlx::query(st.sql), |q, value| match value {
            Value::Bytes(v) => q.bind(*v),
            Value::Int(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.as_deref()),
            Value::Flag(v) => q.bind(*v),
        })
}

/// A backend's pool with the limit on each of its operations.
pub(crate) struct Sql<'a, D: Database> {
    pool: &'a Pool<D>,
    timeout: Option<Duration>,
}

impl<'a, D: Dialect> Sql<'a, D> {
    /// `pool`, with every operation limited to `timeout` if one is given.
    pub(crate) fn new(pool: &'a Pool<D>, timeout: Option<Duration>) -> Self {
        Self { pool, timeout }
    }

    /// Runs `work` within the limit, sorting its error.
    async fn timed<T>(&self, work: BoxFuture<'_, Result<T, sqlx::Error>>) -> Result<T, StoreError> {
        match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(result) => result.map_err(store_error::<D>),
                Err(_) => Err(StoreError::Unavailable(Box::new(TimedOut(
                    <D as Database>::NAME,
                    limit,
                )))),
            },
            None => work.await.map_err(store_error::<D>),
        }
    }

    /// Runs `st` and returns how many rows it changed.
    pub(crate) async fn exec(&self, st: Statement<'_>) -> Result<u64, StoreError> {
        let done = self.timed(D::execute(self.pool, &st)).await?;
        Ok(D::rows_affected(&done))
    }

    /// Runs `sts` in one transaction (one alone runs as it is) and returns
    /// how many rows the last one changed.
    pub(crate) async fn exec_all(&self, sts: Vec<Statement<'_>>) -> Result<u64, StoreError> {
        let done = self.timed(D::execute_all(self.pool, &sts)).await?;
        Ok(D::rows_affected(&done))
    }

    /// Runs `writes` and then the count `read` in one transaction; the count.
    pub(crate) async fn count_after(
        &self,
        writes: Vec<Statement<'_>>,
        read: Statement<'_>,
    ) -> Result<i64, StoreError> {
        let rows = self
            .timed(D::fetch_after(self.pool, &writes, &read))
            .await?;
        match rows.first() {
            Some(row) => row.column(0),
            None => Err(StoreError::Corrupt("a count returned no row")),
        }
    }

    /// Runs `st` and reads the row it returns, if any, with `read`.
    pub(crate) async fn one<T>(
        &self,
        st: Statement<'_>,
        read: fn(&D::Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let row = self.timed(D::fetch_optional(self.pool, &st)).await?;
        row.as_ref().map(read).transpose()
    }

    /// Runs `st` and reads every row it returns with `read`.
    pub(crate) async fn all<T>(
        &self,
        st: Statement<'_>,
        read: fn(&D::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.timed(D::fetch_all(self.pool, &st)).await?;
        rows.iter().map(read).collect()
    }
}

/// The error for an operation that ran out of time on the client side.
#[derive(Debug, thiserror::Error)]
#[error("{0} did not answer within {1:?}")]
pub(crate) struct TimedOut(pub(crate) &'static str, pub(crate) Duration);

/// A driver error as a failure of the backend.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Maps a driver error onto what callers need to know: retry later
/// (unavailable), a key already taken, or a real failure.
pub(crate) fn store_error<D: Dialect>(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
        _ if D::transient(&e) => StoreError::Unavailable(Box::new(e)),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Backend(Box::new(e)),
    }
}
