//! Long-lived connections end with their session (invariant 10 of
//! docs/security.md).
//!
//! A [`SessionWatch`] is a per-node registry of the sessions that open
//! connections (WebSockets, event streams, long downloads) were opened
//! under. [`SessionWatch::watch`] registers a session just validated and
//! returns a [`Watch`], whose [`Watch::ended`] resolves when the session
//! has ended, with the reason when this node knows it. Every watcher of one
//! session shares one entry, found by the session's public handle, which
//! stays the same across rotations.
//!
//! Nothing is believed blindly. Whatever says a session may have ended (a
//! revocation bus announcement of its digest or of "everything", the bus
//! being lost, an end through a [`crate::Sessions`] the watch is attached
//! to, a deadline passing) makes the entry read the session from the store
//! itself again, by handle. Then:
//!
//! - gone: the watch ends (with the reason the local end gave, if any);
//! - present but past its idle or absolute timeout (the stricter of its own
//!   and the policy's): the watch ends as [`EndReason::Expired`];
//! - present and alive, maybe under a new digest (re-authentication and
//!   password changes rotate the session but keep the user signed in): the
//!   watch goes on, now keyed by the new digest.
//!
//! Deadlines: each entry is due at the earlier of the session's idle
//! deadline and its absolute expiry, on the engine's [`Clock`]. Activity on
//! the connection ([`Watch::touch`]) is written to the store at most once per
//! [`Policy::touch_interval`], like [`crate::Sessions::validate`] does, so
//! it pushes the idle deadline out for the whole session. A due entry reads
//! the store (another request may have been seen meanwhile) before it ends.
//!
//! Polling: while the registry is not trusted ([`SessionWatch::set_trusted`];
//! the revocation bus runner sets it, and it starts untrusted), every entry
//! reads the store each [`WatchOptions::poll_interval`]. While trusted, an
//! idle watched session costs no store read at all. A store that fails for
//! longer than [`WatchOptions::unconfirmed_grace`] when a check is needed
//! ends the watch as [`EndReason::Unconfirmed`]: fail closed.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use signoff::{
//!     EndReason, MemoryStore, NewSession, Policy, SessionWatch, Sessions, SystemClock, UserId,
//!     WatchOptions,
//! };
//!
//! let store = Arc::new(MemoryStore::new());
//! let watch = SessionWatch::new(
//!     store.clone(),
//!     Policy::default(),
//!     Arc::new(SystemClock),
//!     WatchOptions::default(),
//! );
//! let sessions = Sessions::new(store, Policy::default()).with_watch(watch.clone());
//! let issued = sessions.login(None, NewSession::for_user(UserId::new("alice"))).await.unwrap();
//! let session = sessions.validate(issued.token.expose()).await.unwrap();
//!
//! let socket = watch.watch(&session);
//! sessions.logout(issued.token.expose()).await.unwrap();
//! assert_eq!(socket.ended().await, EndReason::Logout);
//! # }
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::audit::Actor;
use crate::clock::{Clock, Timestamp};
use crate::policy::Policy;
use crate::session::{ExpiredBy, Session, UserId};
use crate::session_token::{SessionHandle, SessionId};
use crate::store::SessionStore;

/// Options for a [`SessionWatch`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WatchOptions {
    /// While untrusted, how often every watched session is read from the
    /// store. Default 500 ms; keep it under the close bound (1 s).
    pub poll_interval: Duration,
    /// Longest the registry sleeps before looking at the clock again, so a
    /// clock that jumps (or a test's [`crate::ManualClock`]) is noticed.
    /// Costs no store read. Default 1 s.
    pub clock_check: Duration,
    /// How long a needed check may keep failing on store errors before the
    /// watch ends as [`EndReason::Unconfirmed`]. Default 1 s.
    pub unconfirmed_grace: Duration,
    /// Most store reads in flight at once. Default 64.
    pub max_concurrent_checks: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            clock_check: Duration::from_secs(1),
            unconfirmed_grace: Duration::from_secs(1),
            max_concurrent_checks: 64,
        }
    }
}

/// Why a watched session ended, as far as this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The holder signed out through this node's engine.
    Logout,
    /// Ended through this node's engine by someone: the user from another
    /// session, an admin, an operator, or a policy (the per-user limit, a
    /// reused refresh token).
    EndedBy(Actor),
    /// The idle or absolute timeout passed.
    Expired(ExpiredBy),
    /// The store no longer has the session: ended on another node or by
    /// another process, or how is not known here.
    Gone,
    /// The store could not be read for longer than
    /// [`WatchOptions::unconfirmed_grace`] when the session needed checking.
    Unconfirmed,
}

/// Counters of a [`SessionWatch`], for metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    store_reads: AtomicU64,
    store_errors: AtomicU64,
    touches_written: AtomicU64,
    ended: AtomicU64,
    polls: AtomicU64,
}

impl WatchStats {
    /// Sessions read from the store to check them.
    pub fn store_reads(&self) -> u64 {
        self.store_reads.load(Ordering::Relaxed)
    }
    /// Those reads that failed.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }
    /// Activity written to the store by [`Watch::touch`].
    pub fn touches_written(&self) -> u64 {
        self.touches_written.load(Ordering::Relaxed)
    }
    /// Watched sessions found ended.
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }
    /// Polling rounds (each reads every watched session).
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }
}

/// The per-node registry of watched sessions. Cheap to clone; clones share
/// it. See the [module documentation](self).
#[derive(Clone)]
pub struct SessionWatch {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionWatch")
            .field("sessions", &self.sessions())
            .field("trusted", &self.is_trusted())
            .finish_non_exhaustive()
    }
}

/// One connection's hold on a watched session. Dropping it stops watching
/// (the session's entry goes when its last watcher does). Clones are
/// further watchers of the same entry.
pub struct Watch {
    shared: Arc<Shared>,
    entry: Arc<Entry>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("handle", &self.entry.handle)
            .field("ended", &self.end_reason())
            .finish()
    }
}

struct Shared {
    /// Read directly: never a cache.
    store: Arc<dyn SessionStore>,
    policy: Policy,
    clock: Arc<dyn Clock>,
    options: WatchOptions,
    trusted: AtomicBool,
    table: Mutex<Table>,
    /// Wakes the driver task.
    wake: Arc<Notify>,
    checks: Arc<Semaphore>,
    stats: WatchStats,
}

/// What every watcher of one session shares.
struct Entry {
    handle: SessionHandle,
    user: Option<UserId>,
    /// The latest `last_seen_at` known to be in the store (millis).
    last_seen: AtomicI64,
    /// When a touch was last sent to the store (millis): the throttle.
    touch_sent: AtomicI64,
    /// Set once, when the session is found ended; then `ended` wakes
    /// every waiter.
    reason: OnceLock<EndReason>,
    ended: Notify,
}

/// The registry's view of one watched session.
struct Slot {
    entry: Arc<Entry>,
    /// The session's current digest, as last read.
    id: SessionId,
    watchers: u32,
    /// The stricter of the session's and the policy's absolute end.
    absolute: Timestamp,
    /// The stricter of the session's and the policy's idle timeout.
    idle: Duration,
    /// When the deadline queue next looks at this slot.
    next_check: Timestamp,
    checking: bool,
    /// Check again once the read in flight is done: it may predate a change.
    again: bool,
    /// Since when checks have failed on store errors.
    failing_since: Option<Instant>,
    /// The reason a local end gave, used if the check finds the session gone.
    hint: Option<EndReason>,
}

impl Slot {
    /// The earlier of the idle deadline and the absolute end.
    fn deadline(&self) -> Timestamp {
        let last_seen = Timestamp::from_millis(self.entry.last_seen.load(Ordering::SeqCst));
        last_seen.plus(self.idle).min(self.absolute)
    }
}

#[derive(Default)]
struct Table {
    slots: HashMap<SessionHandle, Slot>,
    by_id: HashMap<SessionId, SessionHandle>,
    /// Slots to read from the store.
    dirty: HashSet<SessionHandle>,
    /// Read every slot.
    all_dirty: bool,
    /// Slots with a read in flight.
    checking: HashSet<SessionHandle>,
    /// Slots whose checks fail: retried each poll interval.
    failing: HashSet<SessionHandle>,
    /// (when, slot), earliest first; an item whose time is no longer the
    /// slot's `next_check` is stale and skipped.
    deadlines: BinaryHeap<Reverse<(Timestamp, SessionHandle)>>,
}

impl Table {
    /// Marks a slot for a check, or for another one after the read in flight.
    fn mark(&mut self, handle: SessionHandle) {
        if let Some(slot) = self.slots.get_mut(&handle) {
            if slot.checking {
                slot.again = true;
            } else {
                self.dirty.insert(handle);
            }
        }
    }

    fn schedule(&mut self, handle: SessionHandle) {
        if let Some(slot) = self.slots.get_mut(&handle) {
            let at = slot.deadline();
            if at != slot.next_check {
                slot.next_check = at;
                self.deadlines.push(Reverse((at, handle)));
            }
        }
    }

    /// Ends the slot's watch and forgets the slot.
    fn end(&mut self, handle: SessionHandle, reason: EndReason, stats: &WatchStats) {
        if let Some(slot) = self.slots.remove(&handle) {
            self.forget(&handle, &slot);
            let _ = slot.entry.reason.set(reason);
            slot.entry.ended.notify_waiters();
            stats.ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn forget(&mut self, handle: &SessionHandle, slot: &Slot) {
        if self.by_id.get(&slot.id) == Some(handle) {
            self.by_id.remove(&slot.id);
        }
        self.dirty.remove(handle);
        self.checking.remove(handle);
        self.failing.remove(handle);
    }

    /// The slot of `entry`, if it is still the one registered.
    fn slot_of(&mut self, entry: &Arc<Entry>) -> Option<&mut Slot> {
        self.slots
            .get_mut(&entry.handle)
            .filter(|s| Arc::ptr_eq(&s.entry, entry))
    }
}

impl SessionWatch {
    /// A registry that checks sessions in `store` under `policy` on
    /// `clock`. Give it the store itself, not a [`crate::CachedStore`] in
    /// front of it, and the policy and clock of the engine that validates
    /// the sessions. It starts untrusted (polling); see
    /// [`SessionWatch::set_trusted`]. Needs a Tokio runtime.
    pub fn new(
        store: Arc<dyn SessionStore>,
        policy: Policy,
        clock: Arc<dyn Clock>,
        options: WatchOptions,
    ) -> Self {
        let mut options = options;
        options.poll_interval = options.poll_interval.max(Duration::from_millis(1));
        options.clock_check = options.clock_check.max(Duration::from_millis(1));
        options.max_concurrent_checks = options.max_concurrent_checks.max(1);
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            store,
            policy,
            clock,
            options,
            trusted: AtomicBool::new(false),
            table: Mutex::new(Table::default()),
            wake: wake.clone(),
            checks: Arc::new(Semaphore::new(options.max_concurrent_checks)),
            stats: WatchStats::default(),
        });
        tokio::spawn(drive(Arc::downgrade(&shared), wake));
        Self { shared }
    }

    /// Starts watching a session the caller has just validated. The store
    /// is read once more right after registering (unless the session is
    /// already watched), so an end that raced the validation is not missed.
    pub fn watch(&self, session: &Session) -> Watch {
        let shared = &self.shared;
        let mut table = shared.table();
        let entry = match table.slots.get_mut(&session.handle) {
            Some(slot) => {
                slot.watchers += 1;
                slot.entry.clone()
            }
            None => {
                let last_seen = session.last_seen_at.as_millis();
                let entry = Arc::new(Entry {
                    handle: session.handle,
                    user: session.user_id.clone(),
                    last_seen: AtomicI64::new(last_seen),
                    touch_sent: AtomicI64::new(last_seen),
                    reason: OnceLock::new(),
                    ended: Notify::new(),
                });
                let slot = Slot {
                    entry: entry.clone(),
                    id: session.id,
                    watchers: 1,
                    absolute: session.absolute_end(&shared.policy),
                    idle: session.idle_limit(&shared.policy),
                    next_check: Timestamp::from_millis(i64::MIN),
                    checking: false,
                    again: false,
                    failing_since: None,
                    hint: None,
                };
                table.slots.insert(session.handle, slot);
                table.by_id.insert(session.id, session.handle);
                table.schedule(session.handle);
                table.dirty.insert(session.handle);
                entry
            }
        };
        drop(table);
        shared.wake.notify_one();
        Watch {
            shared: shared.clone(),
            entry,
        }
    }

    /// Something about the session with digest `id` changed or it ended
    /// (what a revocation bus announces): its watchers read it again.
    pub fn recheck(&self, id: &SessionId) {
        self.shared.notify(id, None);
    }

    /// Every watched session is read again (the bus said "everything", or
    /// announcements may have been missed).
    pub fn recheck_all(&self) {
        self.shared.table().all_dirty = true;
        self.shared.wake.notify_one();
    }

    /// Whether every end made anywhere reaches [`SessionWatch::recheck`]
    /// (a trusted revocation bus; or a single process whose every end goes
    /// through a [`crate::Sessions`] with this watch attached). While not,
    /// every watched session is read each poll interval. Becoming trusted
    /// reads every watched session once, in case an end was missed.
    pub fn set_trusted(&self, trusted: bool) {
        let was = self.shared.trusted.swap(trusted, Ordering::SeqCst);
        if trusted && !was {
            self.shared.table().all_dirty = true;
        }
        self.shared.wake.notify_one();
    }

    /// Whether the registry relies on notifications instead of polling.
    pub fn is_trusted(&self) -> bool {
        self.shared.trusted.load(Ordering::SeqCst)
    }

    /// Sessions watched.
    pub fn sessions(&self) -> usize {
        self.shared.table().slots.len()
    }

    /// Watchers, over every watched session.
    pub fn watchers(&self) -> usize {
        self.shared
            .table()
            .slots
            .values()
            .map(|s| s.watchers as usize)
            .sum()
    }

    /// Counters.
    pub fn stats(&self) -> &WatchStats {
        &self.shared.stats
    }

    /// A local end of the session with digest `id` (through
    /// [`crate::Sessions`]): check it, and if it is gone, end with `reason`.
    pub(crate) fn ended_here(&self, id: &SessionId, reason: Option<EndReason>) {
        self.shared.notify(id, reason);
    }

    /// A local end of every session of `user`: check each of theirs.
    pub(crate) fn user_ended_here(&self, user: &UserId, reason: EndReason) {
        self.shared.notify_user(user, Some(reason));
    }

    /// Every session of `user` ended elsewhere (what a revocation bus
    /// announces): their watchers read them again.
    pub fn recheck_user(&self, user: &UserId) {
        self.shared.notify_user(user, None);
    }
}

impl crate::revocation::CacheControl for SessionWatch {
    fn invalidate(&self, id: &SessionId) {
        self.recheck(id);
    }
    fn invalidate_all(&self) {
        self.recheck_all();
    }
    fn invalidate_user(&self, user: &UserId) {
        self.recheck_user(user);
    }
    fn set_trusted(&self, trusted: bool) {
        SessionWatch::set_trusted(self, trusted);
    }
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Every change to the table is completed under the lock before it
        // is released; a panic cannot leave it half-done.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, id: &SessionId, hint: Option<EndReason>) {
        let mut table = self.table();
        match table.by_id.get(id).copied() {
            Some(handle) => {
                if let Some(slot) = table.slots.get_mut(&handle) {
                    if slot.hint.is_none() {
                        slot.hint = hint;
                    }
                }
                table.mark(handle);
            }
            None => {
                // A digest we do not know may be the new digest of a
                // session whose rotation we are reading right now, from
                // before this change: read those again. (While polling,
                // the next poll does.)
                if self.trusted.load(Ordering::SeqCst) && !table.checking.is_empty() {
                    let checking: Vec<SessionHandle> = table.checking.iter().copied().collect();
                    for handle in checking {
                        table.mark(handle);
                    }
                }
                return;
            }
        }
        drop(table);
        self.wake.notify_one();
    }

    fn notify_user(&self, user: &UserId, hint: Option<EndReason>) {
        let mut table = self.table();
        let theirs: Vec<SessionHandle> = table
            .slots
            .iter()
            .filter(|(_, slot)| slot.entry.user.as_ref() == Some(user))
            .map(|(handle, _)| *handle)
            .collect();
        if theirs.is_empty() {
            return;
        }
        for handle in theirs {
            if let Some(slot) = table.slots.get_mut(&handle) {
                if slot.hint.is_none() {
                    slot.hint = hint;
                }
            }
            table.mark(handle);
        }
        drop(table);
        self.wake.notify_one();
    }

    /// One round of the driver: starts what is due, and says how long to
    /// sleep at most.
    fn tick(
        self: &Arc<Self>,
        next_poll: &mut Option<Instant>,
        next_retry: &mut Instant,
    ) -> Duration {
        let now = self.clock.now();
        let real_now = Instant::now();
        let mut sleep = self.options.clock_check;
        let mut start = Vec::new();
        {
            let mut guard = self.table();
            let table = &mut *guard;
            if self.trusted.load(Ordering::SeqCst) {
                *next_poll = None;
            } else {
                let due = next_poll.is_none_or(|at| real_now >= at);
                if due {
                    if !table.slots.is_empty() {
                        table.all_dirty = true;
                        self.stats.polls.fetch_add(1, Ordering::Relaxed);
                    }
                    *next_poll = Some(real_now + self.options.poll_interval);
                }
                if let Some(at) = *next_poll {
                    sleep = sleep.min(at.saturating_duration_since(real_now));
                }
            }
            if !table.failing.is_empty() {
                if real_now >= *next_retry {
                    let failing: Vec<SessionHandle> = table.failing.iter().copied().collect();
                    for handle in failing {
                        table.mark(handle);
                    }
                    *next_retry = real_now + self.options.poll_interval;
                }
                sleep = sleep.min(next_retry.saturating_duration_since(real_now));
            }
            if table.deadlines.len() > 2 * table.slots.len() + 64 {
                // Mostly stale items (slots gone or rescheduled): rebuild.
                let live = table
                    .slots
                    .iter()
                    .filter(|(_, s)| s.next_check != Timestamp::from_millis(i64::MIN))
                    .map(|(h, s)| Reverse((s.next_check, *h)));
                table.deadlines = live.collect();
            }
            while let Some(&Reverse((at, handle))) = table.deadlines.peek() {
                if at > now {
                    sleep = sleep.min(at.since(now));
                    break;
                }
                table.deadlines.pop();
                let Some(slot) = table.slots.get_mut(&handle) else {
                    continue;
                };
                if slot.next_check != at {
                    continue;
                }
                // Popped: the next `schedule` must push again.
                slot.next_check = Timestamp::from_millis(i64::MIN);
                if slot.deadline() > now {
                    // Activity moved the deadline out.
                    table.schedule(handle);
                } else {
                    // Due by what we know; the store may know of later
                    // activity, and decides.
                    table.mark(handle);
                }
            }
            if table.all_dirty {
                table.all_dirty = false;
                let all: Vec<SessionHandle> = table.slots.keys().copied().collect();
                for handle in all {
                    table.mark(handle);
                }
            }
            for handle in std::mem::take(&mut table.dirty) {
                if let Some(slot) = table.slots.get_mut(&handle) {
                    if slot.checking {
                        slot.again = true;
                    } else {
                        slot.checking = true;
                        slot.again = false;
                        start.push(slot.entry.clone());
                        table.checking.insert(handle);
                    }
                }
            }
        }
        for entry in start {
            tokio::spawn(self.clone().check(entry));
        }
        sleep
    }

    /// Reads the entry's session from the store until no change arrived
    /// during the read, and acts on what it finds.
    async fn check(self: Arc<Self>, entry: Arc<Entry>) {
        let Ok(_permit) = self.checks.clone().acquire_owned().await else {
            return;
        };
        loop {
            {
                let mut table = self.table();
                let Some(slot) = table.slot_of(&entry) else {
                    return;
                };
                slot.again = false;
            }
            self.stats.store_reads.fetch_add(1, Ordering::Relaxed);
            let loaded = self.store.load_by_handle(&entry.handle).await;
            let now = self.clock.now();
            let mut guard = self.table();
            let table = &mut *guard;
            let Some(slot) = table.slot_of(&entry) else {
                return;
            };
            let verdict = match loaded {
                Ok(Some(s)) if s.handle == entry.handle && s.user_id == entry.user => {
                    match s.expiry(now, &self.policy) {
                        Some(by) => Verdict::End(EndReason::Expired(by)),
                        None => Verdict::Alive(Alive {
                            id: s.id,
                            absolute: s.absolute_end(&self.policy),
                            idle: s.idle_limit(&self.policy),
                            last_seen: s.last_seen_at,
                        }),
                    }
                }
                Ok(_) => Verdict::End(slot.hint.unwrap_or(EndReason::Gone)),
                Err(e) => {
                    self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "session watch: cannot read a watched session");
                    let since = *slot.failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.options.unconfirmed_grace {
                        Verdict::End(EndReason::Unconfirmed)
                    } else {
                        Verdict::Retry
                    }
                }
            };
            match verdict {
                Verdict::End(reason) => {
                    table.end(entry.handle, reason, &self.stats);
                    return;
                }
                Verdict::Retry => {
                    table.failing.insert(entry.handle);
                }
                Verdict::Alive(session) => {
                    slot.failing_since = None;
                    slot.hint = None;
                    slot.absolute = session.absolute;
                    slot.idle = session.idle;
                    let old = std::mem::replace(&mut slot.id, session.id);
                    entry
                        .last_seen
                        .fetch_max(session.last_seen.as_millis(), Ordering::SeqCst);
                    table.failing.remove(&entry.handle);
                    if old != session.id {
                        // Rotated: from now on, announcements name the new digest.
                        if table.by_id.get(&old) == Some(&entry.handle) {
                            table.by_id.remove(&old);
                        }
                        table.by_id.insert(session.id, entry.handle);
                    }
                    table.schedule(entry.handle);
                }
            }
            let Some(slot) = table.slot_of(&entry) else {
                return;
            };
            if !slot.again {
                slot.checking = false;
                table.checking.remove(&entry.handle);
                return;
            }
        }
    }
}

/// What the registry keeps of a session found alive.
struct Alive {
    id: SessionId,
    absolute: Timestamp,
    idle: Duration,
    last_seen: Timestamp,
}

/// What a check found.
enum Verdict {
    End(EndReason),
    Alive(Alive),
    Retry,
}

/// The registry's one task: deadlines, polling, and starting checks. It
/// holds the registry weakly and stops once nothing else holds it.
async fn drive(shared: Weak<Shared>, wake: Arc<Notify>) {
    let mut next_poll = None;
    let mut next_retry = Instant::now();
    loop {
        let sleep = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.tick(&mut next_poll, &mut next_retry)
        };
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

impl Watch {
    /// The watched session's public handle.
    pub fn handle(&self) -> SessionHandle {
        self.entry.handle
    }

    /// Resolves when the session has ended; at once if it already has.
    pub async fn ended(&self) -> EndReason {
        loop {
            // Registered before looking, so an end in between still wakes us.
            let notified = self.entry.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.entry.reason.get() {
                return *reason;
            }
            notified.await;
        }
    }

    /// [`Watch::ended`] as a future that owns this watch, for a response
    /// body or task that must hold it without borrowing.
    pub async fn into_ended(self) -> EndReason {
        self.ended().await
    }

    /// Why the session ended, if it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.entry.reason.get().copied()
    }

    /// Records activity from the client (a frame it sent): written to the
    /// store, in the background, at most once per
    /// [`Policy::touch_interval`], which pushes the idle deadline out for
    /// the session. Cheap when not due: two atomic reads. Activity from the
    /// upstream must not be counted.
    pub fn touch(&self) {
        let entry = &self.entry;
        let shared = &self.shared;
        let now = shared.clock.now();
        let sent = entry.touch_sent.load(Ordering::SeqCst);
        let base = sent.max(entry.last_seen.load(Ordering::SeqCst));
        if now.since(Timestamp::from_millis(base)) < shared.policy.touch_interval() {
            return;
        }
        if entry
            .touch_sent
            .compare_exchange(sent, now.as_millis(), Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        if self.end_reason().is_some() {
            return;
        }
        let Some(id) = shared.table().slot_of(entry).map(|s| s.id) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = shared.clone();
        let entry = entry.clone();
        runtime.spawn(async move {
            match shared.store.touch(&id, now).await {
                Ok(true) => {
                    shared.stats.touches_written.fetch_add(1, Ordering::Relaxed);
                    entry.last_seen.fetch_max(now.as_millis(), Ordering::SeqCst);
                }
                // Gone, or rotated to a digest we have not read yet.
                Ok(false) => shared.notify(&id, None),
                Err(e) => {
                    tracing::debug!(error = %e, "session watch: activity not written");
                }
            }
        });
    }
}

impl Clone for Watch {
    fn clone(&self) -> Self {
        if let Some(slot) = self.shared.table().slot_of(&self.entry) {
            slot.watchers += 1;
        }
        Self {
            shared: self.shared.clone(),
            entry: self.entry.clone(),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut guard = self.shared.table();
        let table = &mut *guard;
        let Some(slot) = table.slot_of(&self.entry) else {
            return;
        };
        slot.watchers = slot.watchers.saturating_sub(1);
        if slot.watchers == 0 {
            if let Some(slot) = table.slots.remove(&self.entry.handle) {
                table.forget(&self.entry.handle, &slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one watched session costs the registry, beside the heap
    /// blocks of its user id and of the maps' spare capacity.
    #[test]
    fn an_entry_is_a_few_hundred_bytes() {
        let slot = std::mem::size_of::<(SessionHandle, Slot)>();
        let by_id = std::mem::size_of::<(SessionId, SessionHandle)>();
        // The Arc's two counters beside the entry.
        let entry = std::mem::size_of::<Entry>() + 16;
        let total = slot + by_id + entry;
        println!("session watch: slot {slot} B, index {by_id} B, entry {entry} B: {total} B");
        assert!(total <= 400, "{total}");
        assert!(std::mem::size_of::<Watch>() <= 16);
    }

    #[tokio::test]
    async fn short_lived_watches_leave_no_deadlines_behind() {
        use crate::{MemoryStore, NewSession, Sessions, SystemClock};
        let store = Arc::new(MemoryStore::new());
        let watch = SessionWatch::new(
            store.clone(),
            Policy::default(),
            Arc::new(SystemClock),
            WatchOptions::default(),
        );
        let sessions = Sessions::new(store, Policy::default());
        let issued = sessions.create(NewSession::anonymous()).await.unwrap();
        let _kept = watch.watch(&issued.session);
        for _ in 0..1000 {
            let issued = sessions.create(NewSession::anonymous()).await.unwrap();
            drop(watch.watch(&issued.session));
            let mut next_poll = None;
            let mut next_retry = Instant::now();
            watch.shared.tick(&mut next_poll, &mut next_retry);
        }
        let table = watch.shared.table();
        assert_eq!(table.slots.len(), 1);
        assert!(table.deadlines.len() <= 2 + 64, "{}", table.deadlines.len());
    }
}
