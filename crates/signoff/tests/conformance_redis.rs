//! The conformance suite on Redis (or Valkey), bare and behind the cache.
//!
//! These tests always need a server: `SIGNOFF_TEST_REDIS` (default
//! `redis://127.0.0.1:6379`). Each check uses a fresh random key prefix and
//! deletes its keys afterwards.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use signoff::conformance::Fixture;
use signoff::{CacheOptions, CachedStore, RedisOptions, RedisStore, SystemClock};

/// Deletes every key under a test prefix when dropped (best effort).
struct Cleanup {
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

fn redis_url() -> String {
    std::env::var("SIGNOFF_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A store on a fresh prefix, and the guard that deletes its keys.
async fn redis() -> (RedisStore, Cleanup) {
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

/// A cache whose entries never age out during a test, so that only
/// invalidation keeps it correct.
fn cached<S: signoff::SessionStore>(store: S) -> CachedStore<S> {
    let mut options = CacheOptions::default();
    options.max_staleness = Duration::from_secs(3600);
    CachedStore::with_options(store, options, Arc::new(SystemClock))
}

mod redis {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, cleanup) = redis().await;
        Fixture::new(Arc::new(store)).keeping(cleanup)
    });
}

mod cached_redis {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, cleanup) = redis().await;
        Fixture::new(Arc::new(cached(store))).keeping(cleanup)
    });
}
