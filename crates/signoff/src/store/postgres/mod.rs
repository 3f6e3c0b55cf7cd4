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

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::{Connection, Executor};

use super::sql::{backend, store_error, Sql, SqlBackend};
use super::StoreError;
use crate::clock::duration_millis;
#[cfg(doc)]
use crate::revocation::RevocationBus;

mod bus;
mod dialect;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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
            .map_err(store_error::<Postgres>)?;
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
        let mut conn = pool
            .acquire()
            .await
            .map_err(store_error::<Postgres>)?
            .detach();
        let migrated = async {
            conn.execute("SET statement_timeout = 0")
                .await
                .map_err(store_error::<Postgres>)?;
            if let Some(schema) = &options.schema {
                // Validated by the caller.
                conn.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str())
                    .await
                    .map_err(store_error::<Postgres>)?;
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
            .map_err(store_error::<Postgres>)?;
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

impl SqlBackend for PostgresStore {
    type Db = Postgres;

    fn sql(&self) -> Sql<'_, Postgres> {
        Sql::new(&self.pool, self.op_timeout)
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
