//! Every backend runs the same conformance suites (sessions, and users for
//! the stores that keep them): memory and SQLite
//! always, Redis and PostgreSQL with their features (the server crate turns
//! them on, so `cargo test --workspace` runs them; they need the servers,
//! see `support/mod.rs`).
#![cfg(all(feature = "sqlite", feature = "accounts"))]

use std::sync::Arc;
use std::time::Duration;

use signoff::conformance::{user_store_conformance, Fixture};

mod support;
use signoff::{CacheOptions, CachedStore, MemoryStore, SqliteStore, SystemClock};

async fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("signoff.db"))
        .await
        .expect("open SQLite");
    (store, dir)
}

/// A cache whose entries never age out during a test, so that only
/// invalidation keeps it correct.
fn cached<S: signoff::SessionStore>(store: S) -> CachedStore<S> {
    let mut options = CacheOptions::default();
    options.max_staleness = Duration::from_secs(3600);
    CachedStore::with_options(store, options, Arc::new(SystemClock))
}

mod memory {
    use super::*;
    signoff::session_store_conformance!(|| async { Fixture::new(Arc::new(MemoryStore::new())) });

    #[tokio::test]
    async fn user_store() {
        user_store_conformance(Arc::new(MemoryStore::new())).await;
    }
}

mod sqlite {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, dir) = sqlite().await;
        Fixture::new(Arc::new(store)).keeping(dir)
    });

    #[tokio::test]
    async fn user_store() {
        let (store, _dir) = sqlite().await;
        user_store_conformance(Arc::new(store)).await;
    }
}

mod cached_memory {
    use super::*;
    signoff::session_store_conformance!(|| async {
        Fixture::new(Arc::new(cached(MemoryStore::new())))
    });
}

mod cached_sqlite {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, dir) = sqlite().await;
        Fixture::new(Arc::new(cached(store))).keeping(dir)
    });
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, guard) = support::postgres::fresh().await;
        Fixture::new(Arc::new(store)).keeping(guard)
    });

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn user_store() {
        let (store, _guard) = support::postgres::fresh().await;
        user_store_conformance(Arc::new(store)).await;
    }
}

#[cfg(feature = "postgres")]
mod cached_postgres {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, guard) = support::postgres::fresh().await;
        Fixture::new(Arc::new(cached(store))).keeping(guard)
    });
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, cleanup) = support::redis::store().await;
        Fixture::new(Arc::new(store)).keeping(cleanup)
    });

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn user_store() {
        let (store, _cleanup) = support::redis::store().await;
        user_store_conformance(Arc::new(store)).await;
    }
}

#[cfg(feature = "redis")]
mod cached_redis {
    use super::*;
    signoff::session_store_conformance!(|| async {
        let (store, cleanup) = support::redis::store().await;
        Fixture::new(Arc::new(cached(store))).keeping(cleanup)
    });
}
