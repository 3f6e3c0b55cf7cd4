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
//!   nothing and keeps nothing: every load reads the store;
//! - loads of one session that miss at the same time share one store read
//!   (a page's many requests when its entry has just aged out), but a load
//!   joins only a read asked for after the last invalidation of its shard,
//!   not answered yet and younger than `max_staleness`: a load that starts
//!   after a logout here, or after an announcement, never takes the answer
//!   of a read asked for before it ([`Flight`]).
//!
//! An entry is the session packed into one byte string (no per-field
//! `String`s, no `BTreeMap` node, numbers as variable-length integers),
//! kept inside the entry itself when it is short, as a gateway session's
//! is, and found by the first 128 bits of the digest ([`Key`]): about 135
//! bytes per gateway session with the cache's own bookkeeping, against
//! 1.2 KB for a cloned `Session` (docs/benchmarks.md, "Issue 19,
//! 2026-12-07 (evening): a record inside its entry"). Its user agent is
//! kept once for all entries that share it, and the cache is bounded both
//! in entries and in bytes ([`CacheOptions`]). A hit copies the packed
//! bytes out into the `Session` the caller gets; nothing it does to that
//! copy reaches the cache.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use quick_cache::sync::Cache;

use crate::clock::{Clock, MonotonicClock, Timestamp};
use crate::session::{Session, SessionData, UserId, RESERVED_PREFIX};
use crate::store::{SessionStore, StoreError, WriteOutcome};

/// Invalidation epochs are kept per shard of the digest space, so an
/// invalidation only spoils concurrent fills of sessions in its shard.
const SHARDS: usize = 64;

fn shard(id: &SessionId) -> usize {
    usize::from(id.as_bytes()[0]) % SHARDS
}
use crate::session_token::{SessionHandle, SessionId, HANDLE_BYTES};

/// What a cached session is found by: the first 128 bits of its digest,
/// half the bytes of the whole one in each of the cache's slots. Two
/// sessions that shared a key would be served each other's record under
/// the digest asked for, so it matters that they cannot: by chance the
/// odds are one in 2^128 per pair (about 10^-25 among ten million
/// sessions), and no one can aim at a key, even knowing the digest (the
/// revocation bus announces digests): a token reaches the cache only with
/// the server's seal over its random part, so the random part is one the
/// server drew, never one an attacker chose (docs/security.md,
/// invariant 2's notes).
type Key = [u8; 16];

fn key(id: &SessionId) -> Key {
    let mut key = [0; 16];
    key.copy_from_slice(&id.as_bytes()[..16]);
    key
}

/// A user agent shared by every entry that has the same one ([`Agents`]):
/// a thin pointer, 8 bytes of an [`Entry`].
type SharedAgent = Arc<Box<str>>;

/// A cached session: when it was read, the record packed by [`pack`], and
/// its user agent when that is shared with other entries ([`Agents`]; one
/// that could not be shared is in the record, [`OWN_AGENT`]). Cloning it
/// (what a cache hit does) copies an inline record and bumps reference
/// counts.
#[derive(Clone)]
struct Entry {
    cached_at: Timestamp,
    packed: Packed,
    agent: Option<SharedAgent>,
}

/// Longest record kept inside its [`Entry`]. A gateway session's record
/// (a user id, an address, the user name; the user agent kept apart) is
/// 60 to 90 bytes (53 plus its address and user name), so most live in
/// the cache's own slots, with no allocation of their own: one fewer
/// block per session, and none left between the short-lived blocks of
/// the miss path, where freed space could not be given back
/// (docs/benchmarks.md, "a record inside its entry"). 86 makes an
/// [`Entry`] 104 bytes.
const INLINE: usize = 86;

/// A packed record: inside the entry when it is at most [`INLINE`] bytes,
/// in one shared allocation when longer (a session with much data).
#[derive(Clone)]
enum Packed {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<[u8]>),
}

impl Packed {
    fn new(record: Vec<u8>) -> Self {
        match u8::try_from(record.len()) {
            Ok(len) if record.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..record.len()].copy_from_slice(&record);
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(record.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Shared(record) => record,
        }
    }
}

/// Bytes an entry costs: the key, the entry itself and the cache's
/// bookkeeping (an estimate; `bench/load.sh` measures the real figure),
/// plus a record too long to be inline, with its reference counts
/// ([`SHARED_COUNTS`]). A shared user agent is not counted ([`Agents`]
/// bounds the distinct ones); one of the entry's own is in its record, so
/// it is.
const ENTRY_OVERHEAD: u64 = 136;

/// The reference counts in front of a [`Packed::Shared`] record.
const SHARED_COUNTS: u64 = 16;

/// Most distinct user agents kept for sharing: at most
/// [`crate::session::MAX_USER_AGENT_BYTES`] each, so about 2 MiB.
const AGENTS_MAX: usize = 4096;

/// User agents shared between cache entries: most sessions come from a
/// few hundred browser versions, and a user agent (often over 100 bytes)
/// is the largest part of a gateway session's record. Filled on the miss
/// path only; a hit does not look here.
#[derive(Default)]
struct Agents {
    table: Mutex<AgentTable>,
}

#[derive(Default)]
struct AgentTable {
    set: HashSet<AgentKey>,
    /// Fills to go before the next sweep of a full table.
    sweep_in: usize,
}

/// A [`SharedAgent`] looked up by its text.
struct AgentKey(SharedAgent);

impl std::borrow::Borrow<str> for AgentKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for AgentKey {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for AgentKey {}

impl std::hash::Hash for AgentKey {
    // The same hash as the `str` it borrows as.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self.0).hash(state);
    }
}

impl Agents {
    /// The shared copy of `agent`, or `None` while the table is full of
    /// user agents still in use (the entry then keeps a copy of its own).
    fn share(&self, agent: &str) -> Option<SharedAgent> {
        // Only shared strings: a panic elsewhere cannot leave it wrong.
        let mut table = lock(&self.table);
        if let Some(shared) = table.set.get(agent) {
            return Some(Arc::clone(&shared.0));
        }
        if table.set.len() >= AGENTS_MAX {
            if table.sweep_in == 0 {
                // Forget the ones no entry holds any more. If most are
                // still held, wait a while before sweeping again, so a
                // full table is not swept on every fill.
                table.set.retain(|a| Arc::strong_count(&a.0) > 1);
                if table.set.len() >= AGENTS_MAX * 3 / 4 {
                    table.sweep_in = AGENTS_MAX / 4;
                }
            } else {
                table.sweep_in -= 1;
            }
        }
        if table.set.len() >= AGENTS_MAX {
            return None;
        }
        let shared: SharedAgent = Arc::new(Box::from(agent));
        table.set.insert(AgentKey(Arc::clone(&shared)));
        Some(shared)
    }
}

/// Weighs entries in bytes, but never less than `floor`
/// (`max_bytes / capacity`), so that the one weight bound keeps both
/// [`CacheOptions::capacity`] and [`CacheOptions::max_bytes`].
#[derive(Clone)]
struct Weight {
    floor: u64,
}

impl quick_cache::Weighter<Key, Entry> for Weight {
    fn weight(&self, _: &Key, entry: &Entry) -> u64 {
        entry_bytes(entry).max(self.floor)
    }
}

fn entry_bytes(entry: &Entry) -> u64 {
    match &entry.packed {
        Packed::Inline { .. } => ENTRY_OVERHEAD,
        Packed::Shared(record) => u64::try_from(record.len())
            .unwrap_or(u64::MAX)
            .saturating_add(ENTRY_OVERHEAD + SHARED_COUNTS),
    }
}

/// Options for [`CachedStore`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CacheOptions {
    /// Most sessions kept. Default 100 000.
    pub capacity: usize,
    /// Most memory the cached sessions take, in bytes (their packed
    /// records, user agents not shared with other entries, and an estimate
    /// of the cache's own cost per entry).
    /// Whichever of this and `capacity` is reached first evicts. Default
    /// 32 MiB, about 100 000 sessions with a 200-byte user agent and a
    /// little data; a session with the most data allowed
    /// ([`crate::session::MAX_DATA_BYTES`]) weighs about 5 KB.
    pub max_bytes: usize,
    /// Oldest entry served; bounds how long a change made by another node
    /// or process can go unseen here. Default 1 s.
    pub max_staleness: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_bytes: 32 << 20,
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
    cache: Cache<Key, Entry, Weight>,
    /// Which digest a handle was last seen under: a hint only, for
    /// [`SessionStore::load_by_handle`]; the session itself is read through
    /// `cache` (and its invalidations) by that digest.
    handles: Cache<SessionHandle, SessionId>,
    /// Invalidation counts per shard; fills and invalidations hold the lock.
    epochs: Mutex<[u64; SHARDS]>,
    /// The store reads under way, by digest ([`Flight`]); taken inside
    /// `epochs` when a load joins or starts one.
    flights: Mutex<HashMap<SessionId, Arc<Flight>>>,
    agents: Agents,
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
    shared: AtomicU64,
    bypassed: AtomicU64,
}

impl CacheStats {
    /// Loads answered from memory.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    /// Loads that found no entry, or one too old. Each read the store,
    /// except the [`CacheStats::shared`] ones.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
    /// Misses that took the answer of a store read of the same session
    /// that another load made ([`Flight`]), instead of reading themselves.
    pub fn shared(&self) -> u64 {
        self.shared.load(Ordering::Relaxed)
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
        let capacity = options.capacity.max(1);
        let max_bytes = u64::try_from(options.max_bytes).unwrap_or(u64::MAX).max(1);
        let floor = max_bytes / u64::try_from(capacity).unwrap_or(u64::MAX);
        Self {
            inner,
            cache: Cache::with_weighter(capacity, max_bytes, Weight { floor }),
            handles: Cache::new(options.capacity.max(1)),
            epochs: Mutex::new([0; SHARDS]),
            flights: Mutex::default(),
            agents: Agents::default(),
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
        lock(&self.epochs)
    }

    /// Forgets one session: the next load reads the store.
    pub fn invalidate(&self, id: &SessionId) {
        let mut epochs = self.epochs();
        epochs[shard(id)] += 1;
        self.cache.remove(&key(id));
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

    /// Forgets every session of `user` (all of them ended elsewhere). It
    /// reads each entry's user in place (no unpacking): about 2 ms per
    /// 100 000 entries, once per such end.
    pub fn invalidate_user(&self, user: &UserId) {
        {
            let mut epochs = self.epochs();
            // The user's sessions may be in any shard: spoil every fill
            // that started before this. A fill that starts after it reads
            // the store after the end, so the scan need not hold the lock
            // (and fills elsewhere do not wait for it).
            for epoch in epochs.iter_mut() {
                *epoch += 1;
            }
        }
        self.cache.retain(|_, entry| {
            packed_user(entry.packed.as_bytes()) != Some(user.as_str().as_bytes())
        });
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

    /// Memory the cached sessions take, in bytes, as counted against
    /// [`CacheOptions::max_bytes`] (their packed records, user agents of
    /// their own, and an estimate of the cache's cost per entry).
    pub fn bytes(&self) -> u64 {
        self.cache
            .iter()
            .map(|(_, entry)| entry_bytes(&entry))
            .sum()
    }

    /// After a bulk removal: forget what it removed, or, if it failed
    /// (it may have deleted rows before failing), forget everything.
    fn invalidate_result(&self, removed: &Result<Vec<SessionId>, StoreError>) {
        match removed {
            Ok(ids) => ids.iter().for_each(|id| self.invalidate(id)),
            Err(_) => self.invalidate_all(),
        }
    }

    /// Shared store reads ([`Flight`]) that loads are still part of: a
    /// gauge, for tests and monitoring. One is gone once its last load has
    /// its answer or was dropped.
    pub fn reads_in_flight(&self) -> usize {
        lock(&self.flights).len()
    }

    /// A place in the shared store read of `id` ([`Flight`]) if there is
    /// one that loads may still join: asked for after the last
    /// invalidation of the shard, not answered yet, and younger than
    /// `max_staleness` (the age a cache entry filled by it could be served
    /// at); otherwise in a new one. The epoch is read and the flight
    /// joined under the epochs lock, so the rule holds exactly at the
    /// moment of joining.
    fn seat(&self, id: &SessionId) -> Seat<'_> {
        let now = self.clock.now();
        let epochs = self.epochs();
        let epoch = epochs[shard(id)];
        let mut flights = lock(&self.flights);
        let flight = match flights.get(id) {
            Some(f)
                if f.epoch == epoch
                    && !f.answer.initialized()
                    && now.since(f.asked_at) < self.max_staleness =>
            {
                f.clone()
            }
            _ => {
                let f = Arc::new(Flight {
                    epoch,
                    asked_at: now,
                    answer: tokio::sync::OnceCell::new(),
                });
                flights.insert(*id, f.clone());
                f
            }
        };
        drop(flights);
        drop(epochs);
        Seat {
            flights: &self.flights,
            id: *id,
            flight: Some(flight),
        }
    }

    /// One store read of `id` for a [`Flight`] asked for at `epoch`, and
    /// the cache's fill: only if no invalidation of the shard came since
    /// `epoch` (the read may have seen a session ended meanwhile) and the
    /// cache is still trusted. A failure is handed back whole in
    /// `failure`, and as [`SharedFailure`] to the loads that waited.
    async fn read_and_fill(
        &self,
        id: &SessionId,
        epoch: u64,
        failure: &mut Option<StoreError>,
    ) -> Result<Option<Session>, SharedFailure> {
        let now = self.clock.now();
        let loaded = match self.inner.load(id).await {
            Ok(loaded) => loaded,
            Err(e) => {
                let shared = SharedFailure::of(&e);
                *failure = Some(e);
                return Err(shared);
            }
        };
        if let Some(session) = loaded.as_ref().filter(|s| s.id == *id) {
            let agent = session
                .user_agent
                .as_deref()
                .and_then(|a| self.agents.share(a));
            let own_agent = match agent {
                Some(_) => None,
                None => session.user_agent.as_deref(),
            };
            let packed = Packed::new(pack(session, own_agent));
            let epochs = self.epochs();
            // Trust withdrawn meanwhile bumped every epoch, so this also
            // keeps an untrusted cache empty.
            let fresh = epochs[shard(id)] == epoch && self.trusted.load(Ordering::SeqCst);
            if fresh {
                let entry = Entry {
                    cached_at: now,
                    packed,
                    agent,
                };
                self.cache.insert(key(id), entry);
            }
        }
        Ok(loaded)
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for CachedStore<S> {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.insert(session).await
    }

    fn load_now(&self, id: &SessionId) -> Option<Session> {
        if !self.trusted.load(Ordering::SeqCst) {
            return None;
        }
        let entry = self.cache.get(&key(id))?;
        if self.clock.now().since(entry.cached_at) >= self.max_staleness {
            return None;
        }
        let session = unpack(
            id,
            entry.packed.as_bytes(),
            entry.agent.as_deref().map(|a| &**a),
        )?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(session)
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        if !self.trusted.load(Ordering::SeqCst) {
            self.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            return self.inner.load(id).await;
        }
        if let Some(session) = self.load_now(id) {
            return Ok(Some(session));
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let seat = self.seat(id);
        let flight = seat.flight();
        let mut read_here = false;
        let mut failure = None;
        let answer = flight
            .answer
            .get_or_init(|| {
                read_here = true;
                self.read_and_fill(id, flight.epoch, &mut failure)
            })
            .await;
        if !read_here {
            self.stats.shared.fetch_add(1, Ordering::Relaxed);
        }
        match answer {
            Ok(loaded) => Ok(loaded.clone()),
            // The load that read has the error itself; the others a copy.
            Err(shared) => Err(failure.unwrap_or_else(|| shared.to_error())),
        }
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

    async fn end_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<usize, StoreError> {
        let ended = self.inner.end_for_user(user, keep).await;
        match &ended {
            Ok(_) => self.invalidate_user(user),
            // It may have ended them before the error: forget everything.
            Err(_) => self.invalidate_all(),
        }
        ended
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

/// One store read of a session that the loads missing it meanwhile share,
/// instead of reading too: a page's requests when the entry has just aged
/// out make one read, not one each. A load joins only a flight that was
/// asked for after the last invalidation of its shard, has not answered,
/// and is younger than `max_staleness` ([`CachedStore::seat`]): it never
/// takes an answer across a logout or an announcement seen here, nor one
/// older than the cache would serve. If the load doing the read is dropped
/// (its client went away), a waiting load reads instead
/// (`tokio::sync::OnceCell`). A failure is shared too, so each waiting load
/// fails closed at once rather than one after another.
struct Flight {
    epoch: u64,
    /// When it was asked for, on the cache's clock.
    asked_at: Timestamp,
    answer: tokio::sync::OnceCell<Result<Option<Session>, SharedFailure>>,
}

/// A load's place in a [`Flight`]. The last load to leave, answered or
/// dropped, takes the flight off the table: every count of the flight's
/// holders changes under the table's lock.
struct Seat<'a> {
    flights: &'a Mutex<HashMap<SessionId, Arc<Flight>>>,
    id: SessionId,
    flight: Option<Arc<Flight>>,
}

impl Seat<'_> {
    fn flight(&self) -> &Flight {
        self.flight
            .as_deref()
            .unwrap_or_else(|| unreachable!("a seat holds its flight until dropped"))
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut flights = lock(self.flights);
        self.flight = None;
        // Held by the table alone: no load is in it any more (a newer
        // flight for the same digest has its own loads, and stays).
        if flights
            .get(&self.id)
            .is_some_and(|f| Arc::strong_count(f) == 1)
        {
            flights.remove(&self.id);
            // A burst of misses of many sessions leaves no large table.
            if flights.is_empty() && flights.capacity() > 64 {
                flights.shrink_to_fit();
            }
        }
    }
}

/// Locks `mutex`, also after a panic elsewhere while it was held: every
/// value the cache guards this way (the epochs, the shared user agents,
/// the flights) is changed in single steps (a counter, one insert or one
/// remove), so a panic cannot leave it half-changed.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A failed shared read, as the loads that waited for it get it: the same
/// kind of [`StoreError`] (each fails closed alike) with its causes as
/// text. The load that read gets the error itself.
#[derive(Debug, Clone)]
struct SharedFailure {
    kind: FailureKind,
    causes: Arc<str>,
}

#[derive(Debug, Clone, Copy)]
enum FailureKind {
    Duplicate,
    Corrupt(&'static str),
    Unavailable,
    Backend,
}

impl SharedFailure {
    fn of(e: &StoreError) -> Self {
        let kind = match e {
            StoreError::Duplicate => FailureKind::Duplicate,
            StoreError::Corrupt(what) => FailureKind::Corrupt(what),
            StoreError::Unavailable(_) => FailureKind::Unavailable,
            StoreError::Backend(_) => FailureKind::Backend,
        };
        let mut causes = Vec::new();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            causes.push(c.to_string());
            cause = c.source();
        }
        Self {
            kind,
            causes: causes.join(": ").into(),
        }
    }

    fn to_error(&self) -> StoreError {
        let cause = || Box::new(SharedCause(self.causes.clone()));
        match self.kind {
            FailureKind::Duplicate => StoreError::Duplicate,
            FailureKind::Corrupt(what) => StoreError::Corrupt(what),
            FailureKind::Unavailable => StoreError::Unavailable(cause()),
            FailureKind::Backend => StoreError::Backend(cause()),
        }
    }
}

/// The causes of a [`SharedFailure`], as text (the error types stay with
/// the load that read).
#[derive(Debug)]
struct SharedCause(Arc<str>);

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SharedCause {}

/// Flag bits of a packed record: `auth_at` follows; the session is
/// remembered; the user agent is in the record (it could not be shared,
/// [`Agents`]).
const AUTH_AT: u8 = 1;
const REMEMBERED: u8 = 2;
const OWN_AGENT: u8 = 4;

/// A session as one byte string, kept small because a gateway caches a
/// hundred thousand of them (docs/benchmarks.md, "Issue 19, 2026-12-07
/// (midday): a smaller cached session"):
///
/// 1. the handle's bytes;
/// 2. `created_at`, then `last_seen_at` and `expires_at` as differences
///    from it (milliseconds, [`zigzag`] then [`put_varint`]);
/// 3. a flags byte ([`AUTH_AT`], [`REMEMBERED`], [`OWN_AGENT`]); with
///    [`AUTH_AT`], `auth_at` as a difference from `created_at`;
/// 4. the idle timeout (seconds, then nanoseconds) and the generation;
/// 5. the user id and the address, each as 0 when absent or its length
///    plus one, then its bytes; with [`OWN_AGENT`], the user agent's
///    length and bytes;
/// 6. the data's entry count, then each key (its length shifted left by
///    one, the low bit set when [`RESERVED_PREFIX`] was taken off it, then
///    its bytes) and value (length, bytes).
///
/// Every number is a [`put_varint`]. The digest is not in the record (its
/// first half is the cache's [`Key`]); a shared user agent is kept beside
/// the record.
fn pack(session: &Session, own_agent: Option<&str>) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, value: &str) {
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value.as_bytes());
    }
    fn optional(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            Some(v) => {
                put_varint(out, v.len() as u64 + 1);
                out.extend_from_slice(v.as_bytes());
            }
            None => out.push(0),
        }
    }
    let handle = session.handle.as_bytes();
    let created = session.created_at.as_millis();
    let since_created = |t: Timestamp| zigzag(t.as_millis().wrapping_sub(created));
    let text_len = session.user_id.as_ref().map_or(0, |u| u.as_str().len())
        + session.ip.as_ref().map_or(0, String::len)
        + own_agent.map_or(0, str::len)
        + session
            .data
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>();
    let mut out = Vec::with_capacity(handle.len() + 40 + text_len);
    out.extend_from_slice(handle);
    put_varint(&mut out, zigzag(created));
    put_varint(&mut out, since_created(session.last_seen_at));
    put_varint(&mut out, since_created(session.expires_at));
    let mut flags = 0;
    if session.auth_at.is_some() {
        flags |= AUTH_AT;
    }
    if session.remembered {
        flags |= REMEMBERED;
    }
    if own_agent.is_some() {
        flags |= OWN_AGENT;
    }
    out.push(flags);
    if let Some(t) = session.auth_at {
        put_varint(&mut out, since_created(t));
    }
    put_varint(&mut out, session.idle_timeout.as_secs());
    put_varint(&mut out, u64::from(session.idle_timeout.subsec_nanos()));
    put_varint(&mut out, session.generation);
    optional(&mut out, session.user_id.as_ref().map(UserId::as_str));
    optional(&mut out, session.ip.as_deref());
    if let Some(agent) = own_agent {
        text(&mut out, agent);
    }
    put_varint(&mut out, session.data.len() as u64);
    for (key, value) in &session.data {
        match key.strip_prefix(RESERVED_PREFIX) {
            Some(rest) => {
                put_varint(&mut out, (rest.len() as u64) << 1 | 1);
                out.extend_from_slice(rest.as_bytes());
            }
            None => {
                put_varint(&mut out, (key.len() as u64) << 1);
                out.extend_from_slice(key.as_bytes());
            }
        }
        text(&mut out, value);
    }
    out
}

/// Appends `value` in 7-bit groups, low first, the high bit of each byte
/// set when another follows (LEB128): 1 byte below 128, at most 10.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Interleaves negative and positive numbers (0, -1, 1, -2, ...) so that a
/// small difference of either sign is a short [`put_varint`].
fn zigzag(value: i64) -> u64 {
    (value << 1 ^ value >> 63) as u64
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// Reads a record packed by [`pack`]; every read is `None` past its end or
/// on a malformed number, never a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A [`put_varint`]; `None` for one longer than 10 bytes or above
    /// `u64::MAX`.
    fn varint(&mut self) -> Option<u64> {
        // Most numbers in a record are one byte.
        if let Some((&first, rest)) = self.0.split_first() {
            if first < 0x80 {
                self.0 = rest;
                return Some(u64::from(first));
            }
        }
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    /// `n` bytes as text.
    fn text(&mut self, n: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// A time written as a difference from `base`.
    fn time_since(&mut self, base: i64) -> Option<Timestamp> {
        Some(Timestamp::from_millis(
            base.wrapping_add(unzigzag(self.varint()?)),
        ))
    }

    /// An optional text: `Some(None)` when absent, `None` if unreadable.
    fn optional(&mut self) -> Option<Option<&'a [u8]>> {
        match self.len()? {
            0 => Some(None),
            n => Some(Some(self.take(n - 1)?)),
        }
    }
}

/// The record's fixed part: everything before the user id.
struct Head {
    handle: SessionHandle,
    created_at: Timestamp,
    last_seen_at: Timestamp,
    expires_at: Timestamp,
    flags: u8,
    auth_at: Option<Timestamp>,
    idle_timeout: Duration,
    generation: u64,
}

impl Reader<'_> {
    fn head(&mut self) -> Option<Head> {
        let handle = SessionHandle::from_slice(self.take(HANDLE_BYTES)?).ok()?;
        let created = unzigzag(self.varint()?);
        let last_seen_at = self.time_since(created)?;
        let expires_at = self.time_since(created)?;
        let flags = self.byte()?;
        if flags & !(AUTH_AT | REMEMBERED | OWN_AGENT) != 0 {
            return None;
        }
        let auth_at = match flags & AUTH_AT {
            0 => None,
            _ => Some(self.time_since(created)?),
        };
        let secs = self.varint()?;
        // Duration::new panics on an overflowing pair: a corrupt record is a miss.
        let nanos = u32::try_from(self.varint()?)
            .ok()
            .filter(|&n| n < 1_000_000_000)?;
        let generation = self.varint()?;
        Some(Head {
            handle,
            created_at: Timestamp::from_millis(created),
            last_seen_at,
            expires_at,
            flags,
            auth_at,
            idle_timeout: Duration::new(secs, nanos),
            generation,
        })
    }
}

/// The user id's bytes in a record packed by [`pack`], read in place;
/// `None` for an anonymous session or a record that does not read back.
fn packed_user(packed: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(packed);
    r.head()?;
    r.optional()?
}

/// The session packed by [`pack`], under digest `id`, with `shared_agent`
/// as its user agent unless the record holds its own; `None` (served as a
/// miss) if the record does not read back, which [`pack`] never causes.
fn unpack(id: &SessionId, packed: &[u8], shared_agent: Option<&str>) -> Option<Session> {
    let mut r = Reader(packed);
    let head = r.head()?;
    let text = |bytes: Option<&[u8]>| -> Option<Option<String>> {
        match bytes {
            None => Some(None),
            Some(b) => Some(Some(std::str::from_utf8(b).ok()?.to_owned())),
        }
    };
    let user_id = text(r.optional()?)?.map(UserId::new);
    let ip = text(r.optional()?)?;
    let user_agent = if head.flags & OWN_AGENT != 0 {
        // A record with an agent of its own has none shared beside it.
        if shared_agent.is_some() {
            return None;
        }
        let n = r.len()?;
        Some(r.text(n)?.to_owned())
    } else {
        shared_agent.map(str::to_owned)
    };
    let mut data = SessionData::new();
    for _ in 0..r.varint()? {
        let key = r.varint()?;
        let key_text = r.text(usize::try_from(key >> 1).ok()?)?;
        let key = match key & 1 {
            1 => [RESERVED_PREFIX, key_text].concat(),
            _ => key_text.to_owned(),
        };
        let n = r.len()?;
        data.insert(key, r.text(n)?.to_owned());
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(Session {
        id: *id,
        handle: head.handle,
        user_id,
        created_at: head.created_at,
        last_seen_at: head.last_seen_at,
        auth_at: head.auth_at,
        expires_at: head.expires_at,
        idle_timeout: head.idle_timeout,
        user_agent,
        ip,
        data,
        generation: head.generation,
        remembered: head.flags & REMEMBERED != 0,
    })
}

impl<S: SessionStore> crate::revocation::CacheControl for CachedStore<S> {
    fn invalidate(&self, id: &SessionId) {
        CachedStore::invalidate(self, id);
    }
    fn invalidate_all(&self) {
        CachedStore::invalidate_all(self);
    }
    fn invalidate_user(&self, user: &UserId) {
        CachedStore::invalidate_user(self, user);
    }
    fn set_trusted(&self, trusted: bool) {
        CachedStore::set_trusted(self, trusted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::memory::MemoryStore;

    fn session(n: u32, data_bytes: usize) -> Session {
        let mut digest = [0u8; 32];
        digest[..4].copy_from_slice(&n.to_le_bytes());
        let mut data = SessionData::new();
        data.insert("signoff.user".to_owned(), format!("user-{n}"));
        if data_bytes > 0 {
            data.insert("cart".to_owned(), "x".repeat(data_bytes));
        }
        Session {
            id: SessionId::from_digest(digest),
            handle: SessionHandle::generate(),
            user_id: Some(UserId::new(format!("u-{n}"))),
            created_at: Timestamp::from_millis(1_000),
            last_seen_at: Timestamp::from_millis(2_000),
            auth_at: Some(Timestamp::from_millis(1_500)),
            expires_at: Timestamp::from_millis(-3),
            idle_timeout: Duration::new(1_800, 7),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101".to_owned()),
            ip: Some("2001:db8::1".to_owned()),
            data,
            generation: u64::MAX - 1,
            remembered: true,
        }
    }

    fn cached(options: CacheOptions) -> CachedStore<MemoryStore> {
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(0)));
        CachedStore::with_options(MemoryStore::new(), options, clock)
    }

    /// Where the flags byte of a [`session`]'s record is: after the handle
    /// and three 2-byte numbers (created 1 000 ms: zigzag 2 000; last seen
    /// 1 000 ms later: 2 000; expires 1 003 ms before: 2 005).
    const FLAGS_AT: usize = HANDLE_BYTES + 6;

    #[test]
    fn packing_keeps_every_field() {
        let full = session(7, 100);
        let packed = pack(&full, None);
        assert_eq!(
            unpack(&full.id, &packed, full.user_agent.as_deref()),
            Some(full.clone())
        );
        // The user agent in the record instead of beside it.
        let own = pack(&full, full.user_agent.as_deref());
        assert_eq!(unpack(&full.id, &own, None), Some(full.clone()));
        assert_eq!(unpack(&full.id, &own, Some("other")), None);

        let mut bare = full;
        bare.user_id = None;
        bare.auth_at = None;
        bare.user_agent = None;
        bare.ip = Some(String::new());
        bare.data.clear();
        let packed = pack(&bare, None);
        assert_eq!(unpack(&bare.id, &packed, None), Some(bare.clone()));
        let mut ordinary = bare.clone();
        ordinary.remembered = false;
        let ordinary_packed = pack(&ordinary, None);
        assert_eq!(unpack(&ordinary.id, &ordinary_packed, None), Some(ordinary));
        // Unknown flag bits are a miss.
        assert_eq!(packed[FLAGS_AT], REMEMBERED);
        assert_eq!(ordinary_packed[FLAGS_AT], 0);
        let mut flags = ordinary_packed.clone();
        flags[FLAGS_AT] |= 0x80;
        assert_eq!(unpack(&bare.id, &flags, None), None);
        // A cut or padded record is a miss, never a different session.
        assert_eq!(
            unpack(
                &SessionId::from_digest([0; 32]),
                &packed[..packed.len() - 1],
                None
            ),
            None
        );
        let mut longer = packed.clone();
        longer.push(0);
        assert_eq!(
            unpack(&SessionId::from_digest([0; 32]), &longer, None),
            None
        );
    }

    /// The extremes of every field come back as they went in; a record cut
    /// anywhere is a miss; a changed byte is never a panic.
    #[test]
    fn packing_keeps_extreme_values() {
        let times = [
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            1_765_000_000_000,
            i64::MAX,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            // xorshift64: a fixed sequence, so a failure repeats.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..400 {
            let mut s = session(round, 0);
            let mut pick = || times[(next() % times.len() as u64) as usize];
            s.created_at = Timestamp::from_millis(pick());
            s.last_seen_at = Timestamp::from_millis(pick());
            s.expires_at = Timestamp::from_millis(pick());
            s.auth_at = (round % 3 != 0).then(|| Timestamp::from_millis(pick()));
            s.idle_timeout = match round % 4 {
                0 => Duration::ZERO,
                1 => Duration::new(u64::MAX, 999_999_999),
                _ => Duration::new(next(), (next() % 1_000_000_000) as u32),
            };
            s.generation = [0, 127, 128, u64::MAX][round as usize % 4];
            s.remembered = round % 2 == 0;
            s.user_id = (round % 5 != 0).then(|| UserId::new("é".repeat(round as usize % 70)));
            s.ip = (round % 7 != 0).then(|| "x".repeat(round as usize % 130));
            s.data.clear();
            for key in [
                "signoff.",
                "signoff",
                "",
                "signoff.user",
                "ü",
                "a.signoff.b",
            ] {
                if next() % 2 == 0 {
                    let value = format!("{key}={}", "v".repeat(round as usize % 200));
                    s.data.insert(key.to_owned(), value);
                }
            }
            let agent = "y".repeat(round as usize % 600);
            let (own, shared) = match round % 3 {
                0 => (Some(agent.as_str()), None),
                1 => (None, Some(agent.as_str())),
                _ => (None, None),
            };
            s.user_agent = own.or(shared).map(str::to_owned);
            let packed = pack(&s, own);
            assert_eq!(
                unpack(&s.id, &packed, shared),
                Some(s.clone()),
                "round {round}"
            );
            assert_eq!(
                packed_user(&packed),
                s.user_id.as_ref().map(|u| u.as_str().as_bytes())
            );
            for cut in 0..packed.len() {
                assert_eq!(unpack(&s.id, &packed[..cut], shared), None, "cut at {cut}");
            }
            let mut changed = packed.clone();
            let at = (next() % changed.len() as u64) as usize;
            changed[at] ^= (next() % 255 + 1) as u8;
            let _ = unpack(&s.id, &changed, shared);
            let _ = packed_user(&changed);
        }
        // Numbers that do not fit 64 bits, or run on past the record.
        for bad in [
            &[0xff; 11][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0x80],
        ] {
            assert_eq!(Reader(bad).varint(), None, "{bad:?}");
        }
        assert_eq!(
            Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).varint(),
            Some(u64::MAX)
        );
    }

    /// A gateway session (16-character user id, IPv4 address, the user
    /// name under a reserved key, a shared user agent) packs into about 70
    /// bytes, so it is kept inside its entry, with no allocation of its own
    /// (docs/benchmarks.md).
    #[test]
    fn a_gateway_session_packs_small() {
        let mut s = session(1, 0);
        s.user_id = Some(UserId::new("neicW20lgMbZb_ue"));
        s.ip = Some("203.0.113.77".to_owned());
        s.created_at = Timestamp::from_millis(1_765_000_000_000);
        s.last_seen_at = s.created_at;
        s.auth_at = Some(s.created_at);
        s.expires_at = s.created_at.plus(Duration::from_secs(12 * 3600));
        s.idle_timeout = Duration::from_secs(30 * 60);
        s.generation = 0;
        s.data.clear();
        s.data.insert("signoff.user".to_owned(), "alice".to_owned());
        let packed = pack(&s, None);
        assert!(packed.len() <= 72, "{} bytes", packed.len());
        assert!(matches!(Packed::new(packed), Packed::Inline { .. }));
    }

    /// What one cached session costs in the cache's slots: its entry and
    /// its key (quick_cache adds about 16 bytes of its own). A field added
    /// to `Entry` or a longer `INLINE` shows here before it shows in
    /// `bench/load.sh`'s memory figure.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_entry_and_its_key_stay_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 104);
        assert_eq!(std::mem::size_of::<Key>(), 16);
    }

    /// An entry held inline weighs what its slot costs, a longer record
    /// that plus its own allocation: the byte bound counts both.
    #[test]
    fn an_entry_weighs_its_slot_and_its_own_allocation() {
        let entry = |record: Vec<u8>| Entry {
            cached_at: Timestamp::from_millis(0),
            packed: Packed::new(record),
            agent: None,
        };
        assert_eq!(entry_bytes(&entry(vec![1; INLINE])), ENTRY_OVERHEAD);
        assert_eq!(
            entry_bytes(&entry(vec![1; 1_000])),
            ENTRY_OVERHEAD + SHARED_COUNTS + 1_000
        );
    }

    /// The key is all of the digest's first 128 bits: sessions whose
    /// digests differ in only one of those bytes (the first, the eighth,
    /// the last) are cached apart, each served as itself.
    #[tokio::test]
    async fn digests_that_differ_in_one_byte_of_the_key_are_cached_apart() {
        let cache = cached(CacheOptions::default());
        let base = session(1, 0);
        let mut sessions = vec![base.clone()];
        for (at, n) in [(0, 2), (7, 3), (8, 4), (15, 5)] {
            let mut digest = *base.id.as_bytes();
            digest[at] ^= 0x01;
            let mut s = session(n, 0);
            s.id = SessionId::from_digest(digest);
            sessions.push(s);
        }
        for s in &sessions {
            cache.inner().insert(s).await.unwrap();
            cache.load(&s.id).await.unwrap();
        }
        assert_eq!(cache.len(), sessions.len());
        for s in &sessions {
            assert_eq!(cache.load_now(&s.id).as_ref(), Some(s));
        }
    }

    /// A record is kept inside its entry up to `INLINE` bytes and in an
    /// allocation of its own beyond; either way the bytes read back are
    /// the bytes packed, at every length around the boundary.
    #[test]
    fn records_inline_and_shared_read_back_whole() {
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 255, 256, 5_000] {
            let record: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let packed = Packed::new(record.clone());
            assert_eq!(packed.as_bytes(), &record[..], "{len} bytes");
            assert_eq!(
                matches!(packed, Packed::Inline { .. }),
                len <= INLINE,
                "{len} bytes"
            );
        }
    }

    /// Through the cache: sessions whose records are just inside and just
    /// past `INLINE` are served whole from memory, and each is kept the
    /// way its length says.
    #[tokio::test]
    async fn sessions_at_the_inline_boundary_are_served_whole() {
        let cache = cached(CacheOptions::default());
        for (n, len) in [(1001, INLINE - 1), (1002, INLINE), (1003, INLINE + 1)] {
            let mut s = session(n, 1);
            let base = pack(&s, None).len();
            assert!(base < INLINE);
            s.data.insert("cart".to_owned(), "x".repeat(1 + len - base));
            assert_eq!(pack(&s, None).len(), len);
            cache.inner().insert(&s).await.unwrap();
            assert_eq!(cache.load(&s.id).await.unwrap().as_ref(), Some(&s));
            let entry = cache.cache.get(&key(&s.id)).unwrap();
            assert_eq!(entry.packed.as_bytes().len(), len);
            assert_eq!(
                matches!(entry.packed, Packed::Inline { .. }),
                len <= INLINE,
                "{len} bytes"
            );
            let hits = cache.stats().hits();
            assert_eq!(cache.load(&s.id).await.unwrap(), Some(s));
            assert_eq!(cache.stats().hits(), hits + 1);
        }
    }

    #[tokio::test]
    async fn entries_share_a_user_agent_and_serve_their_own() {
        let cache = cached(CacheOptions::default());
        let (a, b) = (session(1, 0), session(2, 0));
        let mut c = session(3, 0);
        c.user_agent = Some("curl/8.0".to_owned());
        let mut d = session(4, 0);
        d.user_agent = None;
        for s in [&a, &b, &c, &d] {
            cache.inner().insert(s).await.unwrap();
            cache.load(&s.id).await.unwrap().unwrap();
        }
        let agent = |s: &Session| cache.cache.get(&key(&s.id)).unwrap().agent;
        assert!(Arc::ptr_eq(&agent(&a).unwrap(), &agent(&b).unwrap()));
        assert_eq!(agent(&c).as_deref().map(|a| &**a), Some("curl/8.0"));
        assert!(agent(&d).is_none());
        for s in [a, b, c, d] {
            assert_eq!(cache.load(&s.id).await.unwrap(), Some(s));
        }
        assert_eq!(cache.stats().hits(), 4);
    }

    #[tokio::test]
    async fn the_shared_user_agents_stay_bounded() {
        let agents = Agents::default();
        let share = |a: &str| agents.share(a);
        let held: Vec<SharedAgent> = (0..AGENTS_MAX / 2)
            .map(|i| share(&format!("held/{i}")).unwrap())
            .collect();
        for i in 0..AGENTS_MAX * 3 {
            share(&format!("dropped/{i}"));
            let len = agents.table.lock().unwrap().set.len();
            assert!(len <= AGENTS_MAX, "{len}");
        }
        // What entries still hold stays shared, and new ones are shared
        // again once the unheld ones are swept.
        for (i, h) in held.iter().enumerate() {
            assert!(Arc::ptr_eq(h, &share(&format!("held/{i}")).unwrap()));
        }
        let new = share("new").unwrap();
        assert!(Arc::ptr_eq(&new, &share("new").unwrap()));

        // Full of agents still held: a new one is not shared.
        let more: Vec<SharedAgent> = (held.len()..AGENTS_MAX)
            .filter_map(|i| share(&format!("held/{i}")))
            .collect();
        assert!(
            share(&"x".repeat(300)).is_none(),
            "{} agents held, {} more",
            held.len(),
            more.len()
        );

        // A cache whose table is full keeps such an agent in the entry's
        // record, serves it, and weighs its bytes.
        let cache = cached(CacheOptions::default());
        let held: Vec<SharedAgent> = (0..AGENTS_MAX)
            .filter_map(|i| cache.agents.share(&format!("held/{i}")))
            .collect();
        let (mut own, mut plain) = (session(1, 0), session(2, 0));
        own.user_agent = Some("x".repeat(300));
        plain.user_agent = None;
        for s in [&own, &plain] {
            cache.inner().insert(s).await.unwrap();
            cache.load(&s.id).await.unwrap().unwrap();
        }
        let entry = |s: &Session| cache.cache.get(&key(&s.id)).unwrap();
        assert!(entry(&own).agent.is_none(), "{} held", held.len());
        assert!(entry_bytes(&entry(&own)) >= entry_bytes(&entry(&plain)) + 300);
        assert_eq!(cache.load(&own.id).await.unwrap(), Some(own));
        assert_eq!(cache.stats().hits(), 1);
    }

    #[test]
    fn the_user_is_read_in_place() {
        let full = session(7, 100);
        assert_eq!(packed_user(&pack(&full, None)), Some("u-7".as_bytes()));
        let mut other = full.clone();
        // The flags byte holds REMEMBERED without AUTH_AT: no time follows.
        other.auth_at = None;
        other.remembered = true;
        other.user_id = Some(UserId::new(""));
        assert_eq!(packed_user(&pack(&other, Some("agent"))), Some(&b""[..]));
        other.user_id = None;
        assert_eq!(packed_user(&pack(&other, None)), None);
        // Cut anywhere, a record gives no user or the whole one, never
        // a wrong one (and no panic).
        let packed = pack(&full, None);
        for cut in 0..packed.len() {
            let user = packed_user(&packed[..cut]);
            assert!(
                user.is_none() || user == Some("u-7".as_bytes()),
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn ending_a_users_sessions_drops_only_theirs() {
        let cache = cached(CacheOptions::default());
        let (a, b) = (session(1, 0), session(2, 0));
        let mut a2 = session(3, 0);
        a2.user_id = a.user_id.clone();
        for s in [&a, &b, &a2] {
            cache.inner().insert(s).await.unwrap();
            cache.load(&s.id).await.unwrap().unwrap();
        }
        assert_eq!(cache.len(), 3);
        let ended = cache
            .end_for_user(a.user_id.as_ref().unwrap(), Some(&a2.id))
            .await
            .unwrap();
        assert_eq!(ended, 1);
        // Both of the user's entries are gone (the kept one is read again),
        // the other user's stays.
        assert_eq!(cache.len(), 1);
        assert!(cache.load(&a.id).await.unwrap().is_none());
        assert_eq!(cache.load(&a2.id).await.unwrap(), Some(a2));
        assert_eq!(cache.load(&b.id).await.unwrap(), Some(b));
    }

    #[tokio::test]
    async fn a_hit_serves_the_stored_session_and_nothing_shared() {
        let cache = cached(CacheOptions::default());
        let stored = session(1, 10);
        cache.inner().insert(&stored).await.unwrap();
        let mut first = cache.load(&stored.id).await.unwrap().unwrap();
        assert_eq!(cache.stats().misses(), 1);
        first
            .data
            .insert("changed".to_owned(), "by the caller".to_owned());
        let second = cache.load(&stored.id).await.unwrap().unwrap();
        assert_eq!(cache.stats().hits(), 1);
        assert_eq!(second, stored);
    }

    /// `load_now` (the request path's hit without a future) answers only
    /// what `load` would answer from the cache: never an entry ended here
    /// or announced ended by the bus, never one past `max_staleness`,
    /// nothing while the cache is not trusted.
    #[tokio::test]
    async fn an_answer_without_waiting_is_never_one_load_would_not_give() {
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(0)));
        let cache =
            CachedStore::with_options(MemoryStore::new(), CacheOptions::default(), clock.clone());
        let stored = session(1, 10);
        cache.inner().insert(&stored).await.unwrap();
        assert_eq!(cache.load_now(&stored.id), None, "not cached yet");
        cache.load(&stored.id).await.unwrap();
        assert_eq!(cache.load_now(&stored.id), Some(stored.clone()));
        // Ended on another node: the bus invalidates the entry.
        cache.invalidate(&stored.id);
        assert_eq!(cache.load_now(&stored.id), None);
        // Ended here: gone from the cache with the record.
        cache.load(&stored.id).await.unwrap();
        cache.remove(&stored.id).await.unwrap();
        assert_eq!(cache.load_now(&stored.id), None);
        assert_eq!(cache.load(&stored.id).await.unwrap(), None);
        // Too old to trust.
        cache.inner().insert(&stored).await.unwrap();
        cache.load(&stored.id).await.unwrap();
        clock.advance(CacheOptions::default().max_staleness);
        assert_eq!(cache.load_now(&stored.id), None);
        // The bus went silent: nothing from the cache at all.
        cache.load(&stored.id).await.unwrap();
        assert!(cache.load_now(&stored.id).is_some());
        cache.set_trusted(false);
        assert_eq!(cache.load_now(&stored.id), None);
    }

    /// Sessions of about 2 KB each: far fewer than `capacity` fit in
    /// `max_bytes`, and the cache keeps to `max_bytes`.
    #[tokio::test]
    async fn the_cache_keeps_to_its_byte_bound() {
        let cache = cached(CacheOptions {
            max_bytes: 64 << 10,
            ..CacheOptions::default()
        });
        for n in 0..200 {
            let s = session(n, 2_000);
            cache.inner().insert(&s).await.unwrap();
            assert!(cache.load(&s.id).await.unwrap().is_some());
            assert!(
                cache.bytes() <= 64 << 10,
                "{} bytes after {n} sessions",
                cache.bytes()
            );
        }
        assert!(cache.len() >= 10, "{} cached", cache.len());
        assert!(cache.len() <= 32, "{} cached", cache.len());
        // Small sessions: the count bound holds too.
        let cache = cached(CacheOptions {
            capacity: 50,
            ..CacheOptions::default()
        });
        for n in 0..500 {
            let s = session(n, 0);
            cache.inner().insert(&s).await.unwrap();
            cache.load(&s.id).await.unwrap();
        }
        assert!(cache.len() <= 50, "{} cached", cache.len());
        assert!(cache.len() >= 25, "{} cached", cache.len());
    }
}
