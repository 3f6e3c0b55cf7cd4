//! The session watch (invariant 10 of docs/security.md, engine part): a
//! watch ends when its session ends, whatever ended it, and on whichever
//! node; a rotation moves it to the new digest; other sessions of the same
//! user stay watched; timeouts end it; without a trusted bus it polls, and
//! with one an idle watch costs no store read.
//!
//! The figures each test measures (end to resolution) are printed; run
//! with `--nocapture` to see them.
#![cfg(all(feature = "sqlite", feature = "tokens"))]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use signoff::revocation::{self, BusOptions, BusSubscription, Fanout, RevocationBus};
use signoff::{
    Actor, CacheOptions, CachedStore, Clock, EndReason, ExpiredBy, ManualClock, MemoryStore,
    NewSession, Policy, Session, SessionData, SessionHandle, SessionId, SessionStore, SessionWatch,
    Sessions, SqliteStore, StoreError, SystemClock, Timestamp, UserId, Watch, WatchOptions,
    WriteOutcome,
};
use tokio::sync::broadcast;

// ---- Fixtures ----------------------------------------------------------------

/// A store that counts reads and can be made to fail.
struct Counting {
    inner: Arc<dyn SessionStore>,
    reads: AtomicU64,
    failing: AtomicBool,
}

impl Counting {
    fn new(inner: Arc<dyn SessionStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            reads: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test: store down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for Counting {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.insert(session).await
    }
    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.load(id).await
    }
    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.load_by_handle(handle).await
    }
    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.touch(id, at).await
    }
    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.update_data(id, generation, data).await
    }
    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        self.inner.rotate(id, new_id, auth_at).await
    }
    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.inner.remove(id).await
    }
    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        self.inner.remove_by_handle(handle, owner).await
    }
    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        self.inner.remove_expired(id, now).await
    }
    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        self.inner.list_for_user(user).await
    }
    async fn end_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<usize, StoreError> {
        self.inner.end_for_user(user, keep).await
    }
    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        self.inner.purge_expired(now, limit).await
    }
    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        self.inner.successor(old).await
    }
}

/// A bus in memory whose connections the test can break.
struct TestBus {
    tx: broadcast::Sender<String>,
    deaf: AtomicBool,
    subscriptions: AtomicUsize,
    closer: Mutex<broadcast::Sender<()>>,
}

impl TestBus {
    fn new() -> Arc<TestBus> {
        Arc::new(TestBus {
            tx: broadcast::channel(1024).0,
            deaf: AtomicBool::new(false),
            subscriptions: AtomicUsize::new(0),
            closer: Mutex::new(broadcast::channel(1).0),
        })
    }

    /// Breaks every open subscription, and refuses new ones.
    fn cut(&self) {
        self.deaf.store(true, Ordering::SeqCst);
        let _ = self.closer.lock().unwrap().send(());
    }

    async fn announce(&self, id: &SessionId) {
        self.publish(&revocation::invalidation_payload(id))
            .await
            .unwrap();
    }
}

struct TestSubscription {
    rx: broadcast::Receiver<String>,
    closed: broadcast::Receiver<()>,
}

#[async_trait]
impl BusSubscription for TestSubscription {
    async fn next(&mut self) -> Result<String, StoreError> {
        tokio::select! {
            _ = self.closed.recv() => Err(StoreError::Unavailable("connection closed".into())),
            m = self.rx.recv() => m.map_err(|_| StoreError::Unavailable("lagged".into())),
        }
    }
}

#[async_trait]
impl RevocationBus for TestBus {
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, StoreError> {
        if self.deaf.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("refused".into()));
        }
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(TestSubscription {
            rx: self.tx.subscribe(),
            closed: self.closer.lock().unwrap().subscribe(),
        }))
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let _ = self.tx.send(payload.to_owned());
        Ok(())
    }
}

fn bus_options() -> BusOptions {
    let mut o = BusOptions::default();
    o.heartbeat_interval = Duration::from_millis(20);
    o.retry_initial = Duration::from_millis(10);
    o
}

/// Defaults, except that a test's manual clock is looked at often.
fn options() -> WatchOptions {
    let mut o = WatchOptions::default();
    o.clock_check = Duration::from_millis(10);
    o
}

fn user(name: &str) -> UserId {
    UserId::new(name)
}

async fn sign_in(sessions: &Sessions, name: &str) -> (String, Session) {
    let issued = sessions
        .login(None, NewSession::for_user(user(name)))
        .await
        .unwrap();
    let token = issued.token.expose().to_owned();
    let session = sessions.validate(&token).await.unwrap();
    (token, session)
}

/// Waits for the watch to end, at most `limit`; returns why and how long
/// it took from `since`.
async fn ends_within(watch: &Watch, since: Instant, limit: Duration) -> (EndReason, Duration) {
    match tokio::time::timeout(limit, watch.ended()).await {
        Ok(reason) => (reason, since.elapsed()),
        Err(_) => panic!("the watch did not end within {limit:?}"),
    }
}

/// Asserts the watch is still open after `wait`.
async fn stays_open(watch: &Watch, wait: Duration, what: &str) {
    if let Ok(reason) = tokio::time::timeout(wait, watch.ended()).await {
        panic!("{what}: the watch ended ({reason:?})");
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn report(what: &str, figures: &mut [Duration]) {
    figures.sort();
    let worst = figures.last().copied().unwrap_or_default();
    let median = figures.get(figures.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "session watch: {what}: median {median:?}, worst {worst:?} over {}",
        figures.len()
    );
}

/// Registers a watch on `s` and waits until the registry's own first read
/// of a new session has finished, so that an end made right after is told
/// by the engine (with its reason) rather than found by that read ("gone").
async fn registered(watch: &SessionWatch, s: &Session) -> Watch {
    let (sessions, reads) = (watch.sessions(), watch.stats().store_reads());
    let w = watch.watch(s);
    if watch.sessions() > sessions {
        wait_until("the registration read", || {
            watch.stats().store_reads() > reads
        })
        .await;
        // Counted as it starts; a memory or SQLite read ends well within this.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w
}

/// A watch over `store` with the default policy and the system clock.
fn watch_over(store: Arc<dyn SessionStore>, options: WatchOptions) -> SessionWatch {
    SessionWatch::new(store, Policy::default(), Arc::new(SystemClock), options)
}

/// A watch and an engine attached to it over `store`. Trusted: only what
/// the engine tells it (no bus, no polling), so the local path is what is
/// tested.
fn local(store: Arc<dyn SessionStore>) -> (SessionWatch, Sessions) {
    let watch = watch_over(store.clone(), options());
    watch.set_trusted(true);
    let sessions = Sessions::new(store, Policy::default()).with_watch(watch.clone());
    (watch, sessions)
}

// ---- Ends through this node's engine ------------------------------------------

/// Every way the engine ends a session resolves that session's watch (with
/// the reason), and never the watch of another session of the same user;
/// a rotation (re-authentication, password change) moves the watch to the
/// new digest, which a later logout then ends.
async fn every_local_end(store: Arc<dyn SessionStore>) {
    let (watch, sessions) = local(store);
    let bound = Duration::from_secs(1);
    let mut figures = Vec::new();

    // Logout; a second watcher of the same session shares its entry.
    let (token, s) = sign_in(&sessions, "alice").await;
    let (_, other) = sign_in(&sessions, "alice").await;
    let kept = registered(&watch, &other).await;
    let w = registered(&watch, &s).await;
    let w2 = registered(&watch, &s).await;
    assert_eq!(watch.sessions(), 2);
    assert_eq!(watch.watchers(), 3);
    let t = Instant::now();
    sessions.logout(&token).await.unwrap();
    let (reason, took) = ends_within(&w, t, bound).await;
    assert_eq!(reason, EndReason::Logout);
    assert_eq!(ends_within(&w2, t, bound).await.0, EndReason::Logout);
    figures.push(took);

    // End by token, by an operator.
    let (token, s) = sign_in(&sessions, "alice").await;
    let w = registered(&watch, &s).await;
    let t = Instant::now();
    assert!(sessions.end(&token, Actor::Operator).await.unwrap());
    let (reason, took) = ends_within(&w, t, bound).await;
    assert_eq!(reason, EndReason::EndedBy(Actor::Operator));
    figures.push(took);

    // "Sign out" on one row of the sessions page.
    let (_, s) = sign_in(&sessions, "alice").await;
    let w = registered(&watch, &s).await;
    let t = Instant::now();
    sessions
        .end_by_handle(&s.handle, Some(&user("alice")), Actor::User)
        .await
        .unwrap()
        .expect("ended");
    let (reason, took) = ends_within(&w, t, bound).await;
    assert_eq!(reason, EndReason::EndedBy(Actor::User));
    figures.push(took);

    // An admin ends it by handle.
    let (_, s) = sign_in(&sessions, "alice").await;
    let w = registered(&watch, &s).await;
    let t = Instant::now();
    sessions
        .end_by_handle(&s.handle, None, Actor::Admin)
        .await
        .unwrap()
        .expect("ended");
    assert_eq!(
        ends_within(&w, t, bound).await.0,
        EndReason::EndedBy(Actor::Admin)
    );
    figures.push(t.elapsed());

    // Re-authentication rotates: the watch stays, and follows.
    let (token, s) = sign_in(&sessions, "alice").await;
    let w = registered(&watch, &s).await;
    let rotated = sessions
        .rotate(&token, signoff::Rotation::AfterPassword)
        .await
        .unwrap();
    stays_open(&w, Duration::from_millis(200), "re-authentication").await;
    // Password change: rotates this one, ends the user's others.
    let (_, victim) = sign_in(&sessions, "alice").await;
    let doomed = registered(&watch, &victim).await;
    let t = Instant::now();
    let changed = sessions
        .password_changed(rotated.token.expose(), true)
        .await
        .unwrap();
    assert_eq!(
        ends_within(&doomed, t, bound).await.0,
        EndReason::EndedBy(Actor::User)
    );
    figures.push(t.elapsed());
    stays_open(&w, Duration::from_millis(200), "password change").await;
    assert!(kept.end_reason().is_some(), "the change ended every other");
    // Logout with the current token, two rotations later, ends it.
    let t = Instant::now();
    sessions.logout(changed.token.expose()).await.unwrap();
    assert_eq!(ends_within(&w, t, bound).await.0, EndReason::Logout);
    figures.push(t.elapsed());

    // Logout with a token rotated away still ends the session it became.
    let (token, s) = sign_in(&sessions, "alice").await;
    let w = registered(&watch, &s).await;
    sessions
        .rotate(&token, signoff::Rotation::Plain)
        .await
        .unwrap();
    stays_open(&w, Duration::from_millis(100), "rotation").await;
    let t = Instant::now();
    sessions.logout(&token).await.unwrap();
    assert_eq!(ends_within(&w, t, bound).await.0, EndReason::Logout);
    figures.push(t.elapsed());

    // Sign out everywhere else keeps this one; then the user is disabled.
    let (_, here) = sign_in(&sessions, "bob").await;
    let (_, there) = sign_in(&sessions, "bob").await;
    let (_, carol) = sign_in(&sessions, "carol").await;
    let w_here = registered(&watch, &here).await;
    let w_there = registered(&watch, &there).await;
    let w_carol = registered(&watch, &carol).await;
    let t = Instant::now();
    sessions
        .end_all_for_user(&user("bob"), Some(&here.id), Actor::User, "sign_out_others")
        .await
        .unwrap();
    assert_eq!(
        ends_within(&w_there, t, bound).await.0,
        EndReason::EndedBy(Actor::User)
    );
    figures.push(t.elapsed());
    stays_open(&w_here, Duration::from_millis(200), "the kept session").await;
    let t = Instant::now();
    sessions
        .end_all_for_user(&user("bob"), None, Actor::Admin, "user_disabled")
        .await
        .unwrap();
    assert_eq!(
        ends_within(&w_here, t, bound).await.0,
        EndReason::EndedBy(Actor::Admin)
    );
    figures.push(t.elapsed());
    stays_open(&w_carol, Duration::from_millis(100), "another user").await;

    drop((w, w2, kept, doomed, w_here, w_there, w_carol));
    assert_eq!(watch.sessions(), 0, "dropped watches leave nothing behind");
    report("local end to resolution", &mut figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_every_local_end_resolves_its_watch_only() {
    every_local_end(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_local_end_resolves_its_watch_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    every_local_end(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_limit_and_a_reused_refresh_token_end_their_watches() {
    use signoff::token_mode::{TokenOptions, Tokens};
    let memory = Arc::new(MemoryStore::new());
    let watch = watch_over(memory.clone(), options());
    watch.set_trusted(true);
    let limited = Policy::builder()
        .max_sessions_per_user(Some(1))
        .build()
        .unwrap();
    let sessions = Sessions::new(memory.clone(), limited).with_watch(watch.clone());

    let (_, first) = sign_in(&sessions, "dave").await;
    let w = registered(&watch, &first).await;
    // The limit ends sessions created strictly before the new one.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = Instant::now();
    let (_, second) = sign_in(&sessions, "dave").await;
    assert_eq!(
        ends_within(&w, t, Duration::from_secs(1)).await.0,
        EndReason::EndedBy(Actor::Policy)
    );

    let tokens = Tokens::open(
        sessions.clone(),
        memory,
        TokenOptions::new("https://auth.example.test", "api.example.test"),
    )
    .await
    .unwrap();
    let w = registered(&watch, &second).await;
    let pair = tokens.issue(&second, "app").await.unwrap();
    let next = tokens.refresh(&pair.refresh_token, None).await.unwrap();
    stays_open(&w, Duration::from_millis(100), "a refresh").await;
    let t = Instant::now();
    assert!(tokens.refresh(&pair.refresh_token, None).await.is_err());
    assert_eq!(
        ends_within(&w, t, Duration::from_secs(1)).await.0,
        EndReason::EndedBy(Actor::Policy)
    );
    assert!(tokens.refresh(&next.refresh_token, None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_future_keeps_the_session_watched() {
    // A response body holds `into_ended()` without borrowing the watch; the
    // future alone keeps the entry registered.
    let (watch, sessions) = local(Arc::new(MemoryStore::new()));
    let (token, s) = sign_in(&sessions, "ned").await;
    let w = registered(&watch, &s).await;
    let ended = tokio::spawn(w.clone().into_ended());
    drop(w);
    assert_eq!(watch.sessions(), 1);
    assert_eq!(watch.watchers(), 1);
    sessions.logout(&token).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(1), ended)
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(reason, EndReason::Logout);
    assert_eq!(watch.sessions(), 0);
}

// ---- Timeouts ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_absolute_timeouts_end_the_watch_and_activity_defers_idle() {
    let clock = ManualClock::at(Timestamp::from_millis(1_000_000));
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(60))
        .absolute_lifetime(Duration::from_secs(300))
        .touch_interval(Duration::from_secs(5))
        .build()
        .unwrap();
    let store = Counting::new(Arc::new(MemoryStore::new()));
    let watch = SessionWatch::new(
        store.clone(),
        policy.clone(),
        Arc::new(clock.clone()),
        options(),
    );
    watch.set_trusted(true);
    let sessions = Sessions::with_clock(store.clone(), policy, Arc::new(clock.clone()))
        .with_watch(watch.clone());

    // Idle: nothing for 60 s ends it; the watch reads the store once at
    // the deadline and once when registered, not in between.
    let (_, s) = sign_in(&sessions, "erin").await;
    let w = watch.watch(&s);
    wait_until("registered and checked", || store.reads() >= 2).await;
    let reads = store.reads();
    clock.advance(Duration::from_secs(59));
    stays_open(&w, Duration::from_millis(100), "59 s idle").await;
    assert_eq!(store.reads(), reads, "no read before the deadline");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        ends_within(&w, Instant::now(), Duration::from_secs(1))
            .await
            .0,
        EndReason::Expired(ExpiredBy::Idle)
    );

    // Activity on the socket defers the idle timeout, for the session too.
    let (token, s) = sign_in(&sessions, "erin").await;
    let w = watch.watch(&s);
    let start = clock.now();
    for step in 1..=5u64 {
        clock.advance(Duration::from_secs(50));
        w.touch();
        wait_until("the touch is written", || {
            watch.stats().touches_written() >= step
        })
        .await;
        stays_open(&w, Duration::from_millis(50), "active").await;
    }
    // 250 s in, the session is alive over HTTP too.
    sessions.validate(&token).await.expect("alive by activity");
    // Touches within the interval write nothing.
    let written = watch.stats().touches_written();
    for _ in 0..100 {
        w.touch();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(watch.stats().touches_written(), written);
    // The absolute lifetime ends it however active it is.
    clock.set(start.plus(Duration::from_secs(299)));
    w.touch();
    stays_open(&w, Duration::from_millis(100), "299 s").await;
    clock.set(start.plus(Duration::from_secs(300)));
    assert_eq!(
        ends_within(&w, Instant::now(), Duration::from_secs(1))
            .await
            .0,
        EndReason::Expired(ExpiredBy::Absolute)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_deadline_follows_activity_seen_elsewhere() {
    // Another request (HTTP, another node) touched the session: at the
    // watch's deadline the store says it is alive, so the watch goes on.
    let clock = ManualClock::at(Timestamp::from_millis(1_000_000));
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(60))
        .touch_interval(Duration::from_secs(5))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let watch = SessionWatch::new(
        store.clone(),
        policy.clone(),
        Arc::new(clock.clone()),
        options(),
    );
    watch.set_trusted(true);
    let sessions = Sessions::with_clock(store, policy, Arc::new(clock.clone()));
    let (token, s) = sign_in(&sessions, "fay").await;
    let w = watch.watch(&s);
    clock.advance(Duration::from_secs(40));
    sessions.validate(&token).await.unwrap();
    clock.advance(Duration::from_secs(30));
    stays_open(&w, Duration::from_millis(200), "touched elsewhere").await;
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        ends_within(&w, Instant::now(), Duration::from_secs(1))
            .await
            .0,
        EndReason::Expired(ExpiredBy::Idle)
    );
}

// ---- The revocation bus -------------------------------------------------------

/// A node: a watch (and a cache) on the bus, over a store another "node"
/// (the test) changes directly.
struct Node {
    store: Arc<Counting>,
    watch: SessionWatch,
    other: Sessions,
    _bus: revocation::BusHandle,
}

async fn node_on(bus: Arc<TestBus>) -> Node {
    let memory: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let store = Counting::new(memory.clone());
    let watch = watch_over(store.clone(), WatchOptions::default());
    let mut o = CacheOptions::default();
    o.max_staleness = Duration::from_secs(3600);
    let cache = Arc::new(CachedStore::with_options(
        memory.clone(),
        o,
        Arc::new(SystemClock),
    ));
    let listeners = Arc::new(Fanout::new(vec![cache, Arc::new(watch.clone())]));
    let handle = revocation::run(bus, listeners, bus_options());
    wait_until("subscribed", || handle.stats().connected()).await;
    assert!(watch.is_trusted());
    // The other node's engine: not attached to this watch.
    let other = Sessions::new(memory, Policy::default());
    Node {
        store,
        watch,
        other,
        _bus: handle,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_end_watches_and_an_idle_trusted_watch_reads_nothing() {
    let bus = TestBus::new();
    let n = node_on(bus.clone()).await;

    let mut sessions = Vec::new();
    let mut watches = Vec::new();
    for i in 0..10 {
        let (token, s) = sign_in(&n.other, if i % 2 == 0 { "gus" } else { "hal" }).await;
        for _ in 0..10 {
            watches.push(watch_of(&n.watch, &s));
        }
        sessions.push((token, s));
    }
    assert_eq!(n.watch.sessions(), 10);
    assert_eq!(n.watch.watchers(), 100);
    wait_until("registration checks done", || n.store.reads() >= 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reads = n.store.reads();
    assert_eq!(reads, 10, "one read per session, not per watcher");
    // Idle, trusted: nothing is read, however long.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(n.store.reads(), reads, "an idle watch reads nothing");
    // Announcements about sessions nobody watches read nothing either.
    for _ in 0..20 {
        let (token, _) = sign_in(&n.other, "gus").await;
        let id = signoff::SessionToken::parse(&token).unwrap().id();
        n.other.logout(&token).await.unwrap();
        bus.announce(&id).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(n.store.reads(), reads);
    // A data change is announced: one read, and the watch goes on.
    let (token0, s0) = &sessions[0];
    n.other.set_data(s0, SessionData::new()).await.unwrap();
    bus.announce(&s0.id).await;
    wait_until("the change is checked", || n.store.reads() > reads).await;
    stays_open(&watches[0], Duration::from_millis(100), "a data change").await;

    // Ended elsewhere and announced: that session's watchers end, the
    // same user's other sessions do not.
    let mut figures = Vec::new();
    let t = Instant::now();
    n.other.logout(token0).await.unwrap();
    bus.announce(&s0.id).await;
    for w in &watches[0..10] {
        let (reason, took) = ends_within(w, t, Duration::from_secs(1)).await;
        assert_eq!(
            reason,
            EndReason::Gone,
            "ended elsewhere: how is not known here"
        );
        figures.push(took);
    }
    for w in &watches[10..] {
        assert_eq!(w.end_reason(), None);
    }
    stays_open(
        &watches[20],
        Duration::from_millis(100),
        "same user, other session",
    )
    .await;

    // A rotation elsewhere moves the watch; a logout with the new token
    // (announced under the new digest) ends it.
    let (token1, s1) = &sessions[1];
    let rotated = n
        .other
        .rotate(token1, signoff::Rotation::AfterPassword)
        .await
        .unwrap();
    bus.announce(&s1.id).await;
    stays_open(
        &watches[10],
        Duration::from_millis(200),
        "rotated elsewhere",
    )
    .await;
    let t = Instant::now();
    n.other.logout(rotated.token.expose()).await.unwrap();
    bus.announce(&rotated.session.id).await;
    figures.push(ends_within(&watches[10], t, Duration::from_secs(1)).await.1);

    // "Forget everything" checks every watched session: only ended ones end.
    let (token2, _) = &sessions[2];
    n.other.logout(token2).await.unwrap();
    let t = Instant::now();
    bus.publish("*").await.unwrap();
    figures.push(ends_within(&watches[20], t, Duration::from_secs(1)).await.1);
    stays_open(&watches[30], Duration::from_millis(100), "after *").await;
    report("announced end to resolution (in-process bus)", &mut figures);
}

fn watch_of(watch: &SessionWatch, s: &Session) -> Watch {
    watch.watch(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bus_falls_back_to_polling_within_the_bound() {
    let bus = TestBus::new();
    let n = node_on(bus.clone()).await;
    let (token, s) = sign_in(&n.other, "ida").await;
    let (_, kept) = sign_in(&n.other, "ida").await;
    let w = n.watch.watch(&s);
    let k = n.watch.watch(&kept);
    // The bus breaks: the watch stops trusting it, and polls.
    bus.cut();
    wait_until("untrusted", || !n.watch.is_trusted()).await;
    let polls = n.watch.stats().polls();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        n.watch.stats().polls() >= polls + 2,
        "polls about every 500 ms"
    );
    // An end that is never announced is still seen within the bound.
    let mut figures = Vec::new();
    let t = Instant::now();
    n.other.logout(&token).await.unwrap();
    let (reason, took) = ends_within(&w, t, Duration::from_secs(1)).await;
    assert_eq!(reason, EndReason::Gone);
    figures.push(took);
    assert_eq!(k.end_reason(), None, "the other session is still watched");
    // A rotation unannounced is followed by polling too.
    let (token, s) = sign_in(&n.other, "ida").await;
    let w = n.watch.watch(&s);
    let rotated = n
        .other
        .rotate(&token, signoff::Rotation::AfterPassword)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(w.end_reason(), None, "followed, not ended");
    let t = Instant::now();
    n.other.logout(rotated.token.expose()).await.unwrap();
    figures.push(ends_within(&w, t, Duration::from_secs(1)).await.1);
    report(
        "unannounced end to resolution while polling (500 ms)",
        &mut figures,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_bus_an_end_by_another_engine_is_found_by_polling() {
    // MemoryStore, no bus, nothing attached: the watch polls from the start.
    let store = Arc::new(MemoryStore::new());
    let watch = watch_over(store.clone(), WatchOptions::default());
    assert!(!watch.is_trusted());
    let sessions = Sessions::new(store, Policy::default());
    let mut figures = Vec::new();
    for i in 0..5u64 {
        let (token, s) = sign_in(&sessions, "jon").await;
        let w = watch.watch(&s);
        // Past the read at registration, at a different point of the
        // polling cycle each time.
        tokio::time::sleep(Duration::from_millis(100 + 90 * i)).await;
        assert_eq!(w.end_reason(), None);
        let t = Instant::now();
        sessions.logout(&token).await.unwrap();
        figures.push(ends_within(&w, t, Duration::from_secs(1)).await.1);
    }
    report(
        "end to resolution, no bus (polling every 500 ms)",
        &mut figures,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_racing_the_registration_is_not_missed() {
    // Validated, then ended (announced to nobody yet watching), then
    // registered: the read at registration catches it, even when trusted.
    let store = Arc::new(MemoryStore::new());
    let watch = watch_over(store.clone(), options());
    watch.set_trusted(true);
    let sessions = Sessions::new(store, Policy::default()).with_watch(watch.clone());
    let (token, s) = sign_in(&sessions, "kim").await;
    sessions.logout(&token).await.unwrap();
    let w = watch.watch(&s);
    assert_eq!(
        ends_within(&w, Instant::now(), Duration::from_secs(1))
            .await
            .0,
        EndReason::Gone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stays_down_ends_the_watch_a_blip_does_not() {
    let store = Counting::new(Arc::new(MemoryStore::new()));
    let watch = watch_over(store.clone(), WatchOptions::default());
    let sessions = Sessions::new(store.clone(), Policy::default());
    let (_, s) = sign_in(&sessions, "lee").await;
    let w = watch.watch(&s);
    // Polling: one failed read is retried, and the watch goes on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.failing.store(false, Ordering::SeqCst);
    stays_open(&w, Duration::from_millis(1200), "a short outage").await;
    assert!(watch.stats().store_errors() >= 1);
    // Down for longer than the grace: fail closed.
    let t = Instant::now();
    store.failing.store(true, Ordering::SeqCst);
    let (reason, took) = ends_within(&w, t, Duration::from_secs(3)).await;
    assert_eq!(reason, EndReason::Unconfirmed);
    eprintln!("session watch: store down to Unconfirmed: {took:?}");
}

// ---- Real stores' buses ---------------------------------------------------------

/// A watch on node A (its own store connection and bus subscription); node
/// B ends sessions through its own engine. Returns the figures.
async fn across_nodes(
    a_store: Arc<dyn SessionStore>,
    a_bus: Arc<dyn RevocationBus>,
    b_store: Arc<dyn SessionStore>,
) -> Vec<Duration> {
    let watch = watch_over(a_store, WatchOptions::default());
    let handle = revocation::run(a_bus, Arc::new(watch.clone()), BusOptions::default());
    wait_until("subscribed", || handle.stats().connected()).await;
    let b = Sessions::new(b_store, Policy::default());
    let mut figures = Vec::new();
    for _ in 0..10 {
        let (token, s) = sign_in(&b, "mia").await;
        let (_, kept) = sign_in(&b, "mia").await;
        let w = watch.watch(&s);
        let k = watch.watch(&kept);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        b.logout(&token).await.unwrap();
        figures.push(ends_within(&w, t, Duration::from_secs(1)).await.1);
        assert_eq!(k.end_reason(), None);
    }
    // A password change on B keeps the watch (on the new digest) and ends
    // the other session of the user; then a logout on B ends it.
    let (token, s) = sign_in(&b, "mia").await;
    let (_, other) = sign_in(&b, "mia").await;
    let w = watch.watch(&s);
    let o = watch.watch(&other);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = Instant::now();
    let changed = b.password_changed(&token, true).await.unwrap();
    figures.push(ends_within(&o, t, Duration::from_secs(1)).await.1);
    stays_open(&w, Duration::from_millis(300), "password change elsewhere").await;
    let t = Instant::now();
    b.end_by_handle(&s.handle, None, Actor::Admin)
        .await
        .unwrap();
    figures.push(ends_within(&w, t, Duration::from_secs(1)).await.1);
    drop(changed);
    assert!(watch.is_trusted(), "no polling was needed");
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_ends_by_another_process_reach_the_watch_through_the_change_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let a = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b = Arc::new(SqliteStore::open(&path).await.unwrap());
    let mut figures = across_nodes(a.clone(), a, b).await;
    report("SQLite, another process's end to resolution", &mut figures);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ends_on_another_node_reach_the_watch() {
    let (a, _cleanup) = support::redis::store().await;
    let a = Arc::new(a);
    let b = Arc::new(a.as_ref().clone());
    let mut figures = across_nodes(a.clone(), a, b).await;
    report("Redis, another node's end to resolution", &mut figures);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ends_on_another_node_reach_the_watch() {
    let (a, _guard) = support::postgres::fresh().await;
    let a = Arc::new(a);
    let b = Arc::new(a.as_ref().clone());
    let mut figures = across_nodes(a.clone(), a, b).await;
    report("PostgreSQL, another node's end to resolution", &mut figures);
}

// ---- Size ----------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn a_watch_is_small() {
    let size = std::mem::size_of::<Watch>();
    eprintln!("session watch: a Watch is {size} bytes");
    assert!(size <= 32, "{size}");
}
