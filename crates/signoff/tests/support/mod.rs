//! Fixtures shared by the engine's store tests: a fresh PostgreSQL schema
//! or Redis key prefix per test, removed afterwards. These tests always
//! need the server; a missing one is a failure with a message saying how
//! to point them at one, never a silent pass.
#![allow(dead_code)]

/// The next message on `sub` within `wait`, or `None`; a lost subscription
/// fails the test.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub async fn next_within(
    sub: &mut Box<dyn signoff::revocation::BusSubscription>,
    wait: std::time::Duration,
) -> Option<String> {
    match tokio::time::timeout(wait, sub.next()).await {
        Ok(Ok(payload)) => Some(payload),
        Ok(Err(e)) => panic!("subscription lost: {e:?}"),
        Err(_) => None,
    }
}

#[cfg(feature = "postgres")]
pub mod postgres {
    use std::time::Duration;

    use signoff::{PostgresOptions, PostgresStore};

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// The test server's URL. These tests always need PostgreSQL: a missing
    /// server is a failure, never a silent pass.
    pub async fn postgres_url() -> String {
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
    pub struct DropSchema {
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
                        let mut conn =
                            <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
                        sqlx::Executor::execute(&mut conn, sql.as_str()).await?;
                        sqlx::Connection::close(conn).await
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
                });
            });
            let _ = dropper.join();
        }
    }

    /// A store in a fresh schema named `<prefix><16 hex>`, and its guard.
    pub async fn store_in(prefix: &str) -> (PostgresStore, DropSchema) {
        let url = postgres_url().await;
        let schema = format!("{prefix}{:016x}", rand::random::<u64>());
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

    /// A store in a fresh schema `signoff_t_<16 hex>`, and its guard.
    pub async fn fresh() -> (PostgresStore, DropSchema) {
        store_in("signoff_t_").await
    }
}

#[cfg(feature = "redis")]
pub mod redis {
    use std::time::Duration;

    use signoff::{RedisOptions, RedisStore};

    /// Deletes every key under a test prefix when dropped (best effort).
    pub struct Cleanup {
        url: String,
        prefix: String,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let url = self.url.clone();
            let pattern = format!("{}:*", self.prefix);
            let cleaner = std::thread::spawn(move || {
                let Ok(client) = ::redis::Client::open(url.as_str()) else {
                    return;
                };
                let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
                    return;
                };
                let mut cursor: u64 = 0;
                loop {
                    let Ok((next, keys)) = ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query::<(u64, Vec<String>)>(&mut con)
                    else {
                        return;
                    };
                    if !keys.is_empty() {
                        let _ = ::redis::cmd("UNLINK").arg(&keys).query::<i64>(&mut con);
                    }
                    if next == 0 {
                        return;
                    }
                    cursor = next;
                }
            });
            let _ = cleaner.join();
        }
    }

    pub fn redis_url() -> String {
        std::env::var("SIGNOFF_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    /// A store on a fresh prefix, and the guard that deletes its keys.
    pub async fn store() -> (RedisStore, Cleanup) {
        let url = redis_url();
        let prefix = format!("signoff-test-{:016x}", rand::random::<u64>());
        let mut options = RedisOptions::new(url.clone());
        options.prefix = prefix.clone();
        let store = RedisStore::connect_with(options).await.unwrap_or_else(|e| {
            panic!(
                "these tests need a Redis or Valkey server (7.0 or later) at {url}: {e:?}. \
                 Start one (e.g. `redis-server` or `docker run -p 6379:6379 redis:7`) or set \
                 SIGNOFF_TEST_REDIS=redis://host:port to point at one."
            )
        });
        (store, Cleanup { url, prefix })
    }
}

/// A rotated-away digest leads to its session's handle through every purge
/// while the session can live (up to its absolute expiry, activity or not),
/// and a purge after that expiry removes it. For the stores that purge
/// these pointers; Redis expires them natively (see `stores_redis.rs`).
pub async fn rotated_digest_is_kept_until_expiry(store: std::sync::Arc<dyn signoff::SessionStore>) {
    use std::sync::Arc;
    use std::time::Duration;

    use signoff::{ManualClock, NewSession, Policy, Sessions, UserId};

    let clock = ManualClock::starting_now();
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(30 * 60))
        .absolute_lifetime(Duration::from_secs(2 * 3600))
        .build()
        .expect("policy");
    let sessions = Sessions::with_clock(Arc::clone(&store), policy, Arc::new(clock.clone()));
    let alice = || NewSession::for_user(UserId::new("alice"));
    let active = sessions.login(None, alice()).await.expect("login");
    let idle = sessions.login(None, alice()).await.expect("login");
    let active_new = sessions
        .rotate(active.token.expose(), signoff::Rotation::AfterPassword)
        .await
        .expect("rotate");
    sessions
        .rotate(idle.token.expose(), signoff::Rotation::AfterPassword)
        .await
        .expect("rotate");
    // Kept alive until just before its absolute expiry; the other one
    // idles out and is purged, and its pointer is harmless until expiry.
    for _ in 0..5 {
        clock.advance(Duration::from_secs(20 * 60));
        sessions
            .validate(active_new.token.expose())
            .await
            .expect("active");
        sessions.purge_expired(1000).await.expect("purge");
        for old in [&active, &idle] {
            assert_eq!(
                store.successor(&old.token.id()).await.expect("successor"),
                Some(old.session.handle),
                "a pointer was purged before its session's absolute expiry"
            );
        }
    }
    sessions
        .logout(active.token.expose())
        .await
        .expect("logout");
    assert!(sessions.validate(active_new.token.expose()).await.is_err());
    clock.set(active.session.expires_at);
    sessions.purge_expired(1000).await.expect("purge");
    for old in [&active, &idle] {
        assert_eq!(
            store.successor(&old.token.id()).await.expect("successor"),
            None,
            "a pointer outlived its session's absolute expiry"
        );
    }
}
