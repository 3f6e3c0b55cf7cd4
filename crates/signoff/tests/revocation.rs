//! The revocation bus runner against an in-process bus whose connection
//! the test can break or silence: the cache is trusted only while the bus
//! is known to deliver, and is emptied whenever trust comes back. (The real
//! Redis and PostgreSQL buses are tested in stores_redis.rs,
//! stores_postgres.rs and the gateway's multinode tests.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use signoff::revocation::{self, BusOptions, BusSubscription, RevocationBus};
use signoff::{
    CacheOptions, CachedStore, MemoryStore, NewSession, Policy, SessionError, SessionStore,
    Sessions, StoreError, SystemClock, UserId,
};
use tokio::sync::broadcast;

/// A bus in memory. `deaf` makes new subscriptions fail; `mute` drops
/// every message (a connection that stays open but delivers nothing).
struct TestBus {
    tx: broadcast::Sender<String>,
    deaf: AtomicBool,
    mute: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    subscriptions: AtomicUsize,
    /// Closes every open subscription when its value changes.
    generation: Mutex<broadcast::Sender<()>>,
}

impl TestBus {
    fn new() -> Arc<TestBus> {
        Arc::new(TestBus {
            tx: broadcast::channel(1024).0,
            deaf: AtomicBool::new(false),
            mute: Arc::new(AtomicBool::new(false)),
            slow: Arc::new(AtomicBool::new(false)),
            subscriptions: AtomicUsize::new(0),
            generation: Mutex::new(broadcast::channel(1).0),
        })
    }

    /// Breaks every open subscription.
    fn break_connections(&self) {
        let _ = self.generation.lock().unwrap().send(());
    }
}

struct TestSubscription {
    rx: broadcast::Receiver<String>,
    closed: broadcast::Receiver<()>,
    mute: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
}

#[async_trait]
impl BusSubscription for TestSubscription {
    async fn next(&mut self) -> Result<String, StoreError> {
        if self.slow.load(Ordering::SeqCst) {
            // Delivers, but each message late: a backlog builds up.
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        loop {
            tokio::select! {
                _ = self.closed.recv() => {
                    return Err(StoreError::Unavailable("connection closed".into()));
                }
                m = self.rx.recv() => match m {
                    Ok(m) if !self.mute.load(Ordering::SeqCst) => return Ok(m),
                    Ok(_) => continue,
                    Err(_) => return Err(StoreError::Unavailable("lagged".into())),
                },
            }
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
            closed: self.generation.lock().unwrap().subscribe(),
            mute: self.mute.clone(),
            slow: self.slow.clone(),
        }))
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        let _ = self.tx.send(payload.to_owned());
        Ok(())
    }
}

/// Fast heartbeats and retries. The silence limit stays at a second, so a
/// test machine that stalls for a moment does not lose the bus by itself;
/// the tests about silence and lag use [`quick_to_notice`].
fn options() -> BusOptions {
    let mut o = BusOptions::default();
    o.heartbeat_interval = Duration::from_millis(20);
    o.silence_limit = Duration::from_secs(1);
    o.retry_initial = Duration::from_millis(10);
    o
}

/// [`options`] with a short silence limit, for the tests that wait for it.
fn quick_to_notice() -> BusOptions {
    let mut o = options();
    o.silence_limit = Duration::from_millis(150);
    o
}

/// One node: a long-lived cache over a store that another "node" (the
/// test) changes directly, as a shared store would be changed.
struct Node {
    cache: Arc<CachedStore<Arc<MemoryStore>>>,
    sessions: Sessions,
    store: Arc<MemoryStore>,
}

fn node() -> Node {
    let store = Arc::new(MemoryStore::new());
    let mut o = CacheOptions::default();
    o.max_staleness = Duration::from_secs(3600);
    let cache = Arc::new(CachedStore::with_options(
        store.clone(),
        o,
        Arc::new(SystemClock),
    ));
    let sessions = Sessions::new(cache.clone(), Policy::default());
    Node {
        cache,
        sessions,
        store,
    }
}

/// A new session, checked once so this node has it cached (or, with an
/// untrusted cache, read from the store); returns its token.
async fn cached_session(n: &Node) -> String {
    let issued = n
        .sessions
        .create(NewSession::for_user(UserId::new("u")))
        .await
        .unwrap();
    let token = issued.token.expose().to_owned();
    n.sessions.validate(&token).await.unwrap();
    token
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Ends a session behind the node's back (as another node would), and
/// announces it unless `announce` is false.
async fn end_elsewhere(node: &Node, bus: &TestBus, token: &str, announce: bool) {
    let id = signoff::SessionToken::parse(token).unwrap().id();
    assert!(node.store.remove(&id).await.unwrap().is_some());
    if announce {
        bus.publish(&revocation::invalidation_payload(&id))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_reach_the_cache_and_a_lost_bus_withdraws_trust() {
    let bus = TestBus::new();
    let n = node();
    // The bus refuses at first, so "untrusted until subscribed" is seen
    // for certain rather than raced.
    bus.deaf.store(true, Ordering::SeqCst);
    let handle = revocation::run(bus.clone(), n.cache.clone(), options());
    assert!(!n.cache.is_trusted(), "untrusted until subscribed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!n.cache.is_trusted(), "untrusted while subscribing fails");
    assert!(!handle.stats().connected());
    bus.deaf.store(false, Ordering::SeqCst);
    wait_until("subscribed", || handle.stats().connected()).await;
    assert!(n.cache.is_trusted());

    // Cached, ended elsewhere, announced: refused here.
    let a = cached_session(&n).await;
    assert_eq!(n.cache.len(), 1);
    end_elsewhere(&n, &bus, &a, true).await;
    wait_until("invalidated", || n.cache.is_empty()).await;
    assert!(matches!(
        n.sessions.validate(&a).await,
        Err(SessionError::NotFound)
    ));

    // Own heartbeats come back and are timed.
    wait_until("heartbeats", || handle.stats().heartbeats() >= 3).await;
    assert!(handle.stats().max_lag() < Duration::from_secs(1));

    // The connection breaks and cannot be reopened: untrusted, so a
    // session ended without an announcement is still refused.
    bus.deaf.store(true, Ordering::SeqCst);
    let b = cached_session(&n).await;
    bus.break_connections();
    wait_until("untrusted", || !n.cache.is_trusted()).await;
    end_elsewhere(&n, &bus, &b, false).await;
    assert!(matches!(
        n.sessions.validate(&b).await,
        Err(SessionError::NotFound)
    ));
    assert!(n.cache.stats().bypassed() >= 1);
    assert_eq!(handle.stats().losses(), 1);

    // Back: trusted again, and it starts empty, so nothing missed survives.
    cached_session(&n).await;
    assert!(n.cache.is_empty(), "an untrusted cache keeps nothing");
    bus.deaf.store(false, Ordering::SeqCst);
    wait_until("resubscribed", || n.cache.is_trusted()).await;
    assert!(n.cache.is_empty());
    drop(handle);
    assert!(
        !n.cache.is_trusted(),
        "a stopped bus leaves the cache untrusted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_bus_is_treated_as_lost() {
    let bus = TestBus::new();
    let n = node();
    let handle = revocation::run(bus.clone(), n.cache.clone(), quick_to_notice());
    wait_until("subscribed", || handle.stats().connected()).await;
    let first = bus.subscriptions.load(Ordering::SeqCst);
    let s = cached_session(&n).await;

    // The connection stays open but delivers nothing, not even heartbeats:
    // after the silence limit the cache is no longer trusted, and an end
    // whose announcement was swallowed is seen.
    bus.mute.store(true, Ordering::SeqCst);
    end_elsewhere(&n, &bus, &s, true).await;
    wait_until("silence noticed", || !n.cache.is_trusted()).await;
    assert!(matches!(
        n.sessions.validate(&s).await,
        Err(SessionError::NotFound)
    ));

    // Heard again: it has subscribed again (perhaps already while muted:
    // a new subscription is trusted until it too falls silent) and trusts
    // an empty cache.
    bus.mute.store(false, Ordering::SeqCst);
    wait_until("resubscribed and trusted", || {
        bus.subscriptions.load(Ordering::SeqCst) > first && n.cache.is_trusted()
    })
    .await;
    assert!(n.cache.is_empty());
    assert!(handle.stats().losses() >= 1);
}

#[tokio::test]
async fn garbage_on_the_bus_is_counted_and_ignored() {
    let bus = TestBus::new();
    let n = node();
    let handle = revocation::run(bus.clone(), n.cache.clone(), options());
    wait_until("subscribed", || handle.stats().connected()).await;
    cached_session(&n).await;
    for junk in ["", "hb:x", "zz", &"0".repeat(5000)] {
        bus.publish(junk).await.unwrap();
    }
    wait_until("counted", || handle.stats().malformed() == 4).await;
    assert!(n.cache.is_trusted());
    assert_eq!(n.cache.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_falls_behind_is_treated_as_lost() {
    let bus = TestBus::new();
    let n = node();
    let handle = revocation::run(bus.clone(), n.cache.clone(), quick_to_notice());
    wait_until("subscribed", || handle.stats().connected()).await;
    // Messages keep coming (so it is never silent), but ever later: this
    // node's own heartbeats come back after more than the silence limit.
    bus.slow.store(true, Ordering::SeqCst);
    wait_until("lag noticed", || !n.cache.is_trusted()).await;
    assert!(handle.stats().losses() >= 1);
    bus.slow.store(false, Ordering::SeqCst);
    bus.break_connections();
    wait_until("trusted again", || n.cache.is_trusted()).await;
}
