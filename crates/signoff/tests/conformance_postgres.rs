//! The conformance suite on PostgreSQL, bare and behind the cache.
//!
//! Needs a PostgreSQL server: `SIGNOFF_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each check runs in a fresh
//! schema, dropped afterwards.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Duration;

use signoff::conformance::Fixture;
use signoff::{CacheOptions, CachedStore, PostgresOptions, PostgresStore, SystemClock};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test server's URL. These tests always need PostgreSQL: a missing
/// server is a failure, never a silent pass.
async fn postgres_url() -> String {
    let url = std::env::var("SIGNOFF_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let reachable = tokio::time::timeout(
        Duration::from_secs(5),
        <sqlx::PgConnection as sqlx::Connection>::connect(&url),
    )
    .await;
    match reachable {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            url
        }
        Ok(Err(e)) => panic!(
            "these tests need PostgreSQL; cannot connect ({e}). \
             Set SIGNOFF_TEST_POSTGRES to a postgres:// URL of a server where the user may \
             create schemas (default {DEFAULT_URL})"
        ),
        Err(_) => panic!(
            "these tests need PostgreSQL; no answer within 5 s. \
             Set SIGNOFF_TEST_POSTGRES to a postgres:// URL (default {DEFAULT_URL})"
        ),
    }
}

/// Drops its schema when dropped, best effort.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let work = async {
                    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
                    sqlx::Executor::execute(&mut conn, sql.as_str()).await?;
                    sqlx::Connection::close(conn).await
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
            });
        });
        let _ = dropper.join();
    }
}

/// A store in a fresh schema, and the guard that drops it.
async fn postgres() -> (PostgresStore, DropSchema) {
    let url = postgres_url().await;
    let schema = format!("signoff_t_{:016x}", rand::random::<u64>());
    let guard = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let mut options = PostgresOptions::new(url);
    options.schema = Some(schema);
    options.max_connections = 4;
    let store = PostgresStore::connect_with(options)
        .await
        .expect("connect to PostgreSQL");
    (store, guard)
}

/// A cache whose entries never age out during a test, so that only
/// invalidation keeps it correct.
fn cached<S: signoff::SessionStore>(store: S) -> CachedStore<S> {
    let mut options = CacheOptions::default();
    options.max_staleness = Duration::from_secs(3600);
    CachedStore::with_options(store, options, Arc::new(SystemClock))
}

mod postgres {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, guard) = postgres().await;
        Fixture::new(Arc::new(store)).keeping(guard)
    });
}

mod cached_postgres {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, guard) = postgres().await;
        Fixture::new(Arc::new(cached(store))).keeping(guard)
    });
}
