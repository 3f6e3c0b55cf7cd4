//! A bounded in-process cache in front of any store.
//!
//! A hit costs no store read. Correctness does not rest on the cache:
//!
//! - every write through it (touch, data, rotate, remove, purge) drops the
//!   entry at once, so a logout on this node is seen on this node at once;
//! - a read that started before an invalidation never puts its (possibly
//!   dead) result into the cache after it: the fill checks an invalidation
//!   epoch and inserts under the same lock that invalidation takes;
//! - entries age on a monotonic clock, so a wall-clock step cannot keep
//!   them alive;
//! - a change made elsewhere (another process, another node) is seen when
//!   the entry's age passes `max_staleness`, or sooner when a revocation bus
//!   calls [`CachedStore::invalidate`]. That age is the stated bound of
//!   invariant 2 (docs/security.md) for cached deployments;
//! - an untrusted cache ([`CachedStore::set_trusted`], which the revocation
//!   bus uses while it cannot be sure it hears every announcement) serves
//!   nothing and keeps nothing: every load reads the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use quick_cache::sync::Cache;

use crate::clock::{Clock, MonotonicClock, Timestamp};
use crate::session::{Session, SessionData, UserId};
use crate::store::{SessionStore, StoreError, WriteOutcome};

/// Invalidation epochs are kept per shard of the digest space, so an
/// invalidation only spoils concurrent fills of sessions in its shard.
const SHARDS: usize = 64;

fn shard(id: &SessionId) -> usize {
    usize::from(id.as_bytes()[0]) % SHARDS
}
use crate::session_token::{SessionHandle, SessionId};

#[derive(Clone)]
struct Entry {
    session: Session,
    cached_at: Timestamp,
}

/// Options for [`CachedStore`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CacheOptions {
    /// Most sessions kept. Default 100 000.
    pub capacity: usize,
    /// Oldest entry served; bounds how long a change made by another node
    /// or process can go unseen here. Default 1 s.
    pub max_staleness: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_staleness: Duration::from_secs(1),
        }
    }
}

/// A [`SessionStore`] that answers repeated loads from memory.
///
/// ```
/// use std::sync::Arc;
/// use signoff::{CachedStore, MemoryStore, Policy, Sessions};
///
/// let cached = Arc::new(CachedStore::new(MemoryStore::new()));
/// let sessions = Sessions::new(cached.clone(), Policy::default());
/// // A revocation bus keeps `cached` and calls `cached.invalidate(&id)`.
/// ```
pub struct CachedStore<S> {
    inner: S,
    cache: Cache<SessionId, Entry>,
    /// Which digest a handle was last seen under: a hint only, for
    /// [`SessionStore::load_by_handle`]; the session itself is read through
    /// `cache` (and its invalidations) by that digest.
    handles: Cache<SessionHandle, SessionId>,
    /// Invalidation counts per shard; fills and invalidations hold the lock.
    epochs: Mutex<[u64; SHARDS]>,
    max_staleness: Duration,
    clock: Arc<dyn Clock>,
    trusted: AtomicBool,
    stats: CacheStats,
}

/// Counters of a [`CachedStore`], for metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    bypassed: AtomicU64,
}

impl CacheStats {
    /// Loads answered from memory.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    /// Loads that read the store because the entry was missing or too old.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
    /// Loads that read the store because the cache was not trusted.
    pub fn bypassed(&self) -> u64 {
        self.bypassed.load(Ordering::Relaxed)
    }
}

impl<S> std::fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("entries", &self.cache.len())
            .field("max_staleness", &self.max_staleness)
            .finish_non_exhaustive()
    }
}

impl<S: SessionStore> CachedStore<S> {
    /// A cache with default options, aging entries on a monotonic clock.
    pub fn new(inner: S) -> Self {
        Self::with_options(
            inner,
            CacheOptions::default(),
            Arc::new(MonotonicClock::new()),
        )
    }

    /// A cache with the given options and clock. The clock only ages
    /// entries; use a [`MonotonicClock`] outside tests.
    pub fn with_options(inner: S, options: CacheOptions, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            cache: Cache::new(options.capacity.max(1)),
            handles: Cache::new(options.capacity.max(1)),
            epochs: Mutex::new([0; SHARDS]),
            max_staleness: options.max_staleness,
            clock,
            trusted: AtomicBool::new(true),
            stats: CacheStats::default(),
        }
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn epochs(&self) -> std::sync::MutexGuard<'_, [u64; SHARDS]> {
        // The guarded value is plain counters: a panic elsewhere cannot
        // leave them inconsistent.
        self.epochs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets one session: the next load reads the store.
    pub fn invalidate(&self, id: &SessionId) {
        let mut epochs = self.epochs();
        epochs[shard(id)] += 1;
        self.cache.remove(id);
    }

    /// Forgets everything (for example when a revocation bus was lost and
    /// invalidations may have been missed).
    pub fn invalidate_all(&self) {
        let mut epochs = self.epochs();
        for epoch in epochs.iter_mut() {
            *epoch += 1;
        }
        self.cache.clear();
        self.handles.clear();
    }

    /// Serve from memory (`true`, the default) or read the store on every
    /// load. Turning trust off also empties the cache; turning it back on
    /// starts empty too.
    pub fn set_trusted(&self, trusted: bool) {
        let mut epochs = self.epochs();
        for epoch in epochs.iter_mut() {
            *epoch += 1;
        }
        self.cache.clear();
        self.handles.clear();
        self.trusted.store(trusted, Ordering::SeqCst);
    }

    /// Whether loads are served from memory.
    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::SeqCst)
    }

    /// Hit and miss counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Number of sessions cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// After a bulk removal: forget what it removed, or, if it failed
    /// (it may have deleted rows before failing), forget everything.
    fn invalidate_result(&self, removed: &Result<Vec<SessionId>, StoreError>) {
        match removed {
            Ok(ids) => ids.iter().for_each(|id| self.invalidate(id)),
            Err(_) => self.invalidate_all(),
        }
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for CachedStore<S> {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.insert(session).await
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        if !self.trusted.load(Ordering::SeqCst) {
            self.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            return self.inner.load(id).await;
        }
        let now = self.clock.now();
        if let Some(entry) = self.cache.get(id) {
            if now.since(entry.cached_at) < self.max_staleness {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(entry.session));
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let epoch = self.epochs()[shard(id)];
        let loaded = self.inner.load(id).await?;
        if let Some(session) = &loaded {
            let epochs = self.epochs();
            // An invalidation since we started reading may have been for
            // this session: then what we read may be dead, so keep it out.
            // Trust withdrawn meanwhile bumped every epoch, so this also
            // keeps an untrusted cache empty.
            if epochs[shard(id)] == epoch && self.trusted.load(Ordering::SeqCst) {
                let entry = Entry {
                    session: session.clone(),
                    cached_at: now,
                };
                self.cache.insert(*id, entry);
            }
        }
        Ok(loaded)
    }

    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        // The handle's last known digest, read through the digest cache, so
        // a revocation announced for that digest is seen here too. If the
        // session is gone from that digest (ended, or rotated to another),
        // the store decides.
        if self.trusted.load(Ordering::SeqCst) {
            if let Some(id) = self.handles.get(handle) {
                if let Some(session) = self.load(&id).await? {
                    if session.handle == *handle {
                        return Ok(Some(session));
                    }
                }
            }
        }
        let loaded = self.inner.load_by_handle(handle).await?;
        match &loaded {
            Some(session) => self.handles.insert(*handle, session.id),
            None => {
                self.handles.remove(handle);
            }
        }
        Ok(loaded)
    }

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let result = self.inner.touch(id, at).await;
        self.invalidate(id);
        result
    }

    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        let result = self.inner.update_data(id, generation, data).await;
        self.invalidate(id);
        result
    }

    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        // Drop the old token before and after: no read may serve it once
        // rotation starts, whatever the outcome.
        self.invalidate(id);
        let result = self.inner.rotate(id, new_id, auth_at).await;
        self.invalidate(id);
        result
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.invalidate(id);
        let result = self.inner.remove(id).await;
        self.invalidate(id);
        result
    }

    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        let removed = self.inner.remove_by_handle(handle, owner).await;
        match &removed {
            Ok(Some(session)) => self.invalidate(&session.id),
            Ok(None) => {}
            // It may have been deleted before the error: forget everything.
            Err(_) => self.invalidate_all(),
        }
        removed
    }

    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        let result = self.inner.remove_expired(id, now).await;
        self.invalidate(id);
        result
    }

    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        self.inner.list_for_user(user).await
    }

    async fn remove_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<Vec<SessionId>, StoreError> {
        let removed = self.inner.remove_for_user(user, keep).await;
        self.invalidate_result(&removed);
        removed
    }

    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        let removed = self.inner.purge_expired(now, limit).await;
        self.invalidate_result(&removed);
        removed
    }

    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        // Not cached: read once per logout with a rotated-away token.
        self.inner.successor(old).await
    }

    fn engine_state(&self) -> Option<Arc<dyn crate::store::StateStore>> {
        self.inner.engine_state()
    }
}

impl<S: SessionStore> crate::revocation::CacheControl for CachedStore<S> {
    fn invalidate(&self, id: &SessionId) {
        CachedStore::invalidate(self, id);
    }
    fn invalidate_all(&self) {
        CachedStore::invalidate_all(self);
    }
    fn set_trusted(&self, trusted: bool) {
        CachedStore::set_trusted(self, trusted);
    }
}
