//! Engine behaviour that is not about one store: malformed input, the cache
//! and its staleness bound, SQLite durability, and what the file holds.
#![cfg(feature = "sqlite")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use signoff::store::{SessionStore, StoreError, WriteOutcome};
use signoff::{
    CacheOptions, CachedStore, ManualClock, MemoryStore, NewSession, Policy, Session, SessionData,
    SessionError, SessionHandle, SessionId, Sessions, SqliteStore, Timestamp, UserId,
};
use tokio::sync::Notify;

/// Counts loads, and can hold one load after it has read the record until
/// released: enough to replay the cache-fill race deterministically.
#[derive(Default)]
struct Probe {
    inner: MemoryStore,
    loads: AtomicUsize,
    hold_next_load: std::sync::atomic::AtomicBool,
    /// Loads fail as an unreachable store does (after any hold).
    fail_loads: std::sync::atomic::AtomicBool,
    loaded: Notify,
    release: Notify,
}

/// The cause of a [`Probe`]'s failed loads, a type of its own so that a
/// test can tell the original error from a copy.
#[derive(Debug)]
struct ProbeDown;

impl std::fmt::Display for ProbeDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the probe is down")
    }
}

impl std::error::Error for ProbeDown {}

impl Probe {
    /// Store reads so far.
    fn reads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SessionStore for Probe {
    async fn insert(&self, s: &Session) -> Result<(), StoreError> {
        self.inner.insert(s).await
    }
    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.load(id).await;
        if self.hold_next_load.swap(false, Ordering::SeqCst) {
            self.loaded.notify_one();
            self.release.notified().await;
        }
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(Box::new(ProbeDown)));
        }
        found
    }
    async fn load_by_handle(&self, h: &SessionHandle) -> Result<Option<Session>, StoreError> {
        self.inner.load_by_handle(h).await
    }
    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.touch(id, at).await
    }
    async fn update_data(
        &self,
        id: &SessionId,
        g: u64,
        d: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.update_data(id, g, d).await
    }
    async fn rotate(
        &self,
        id: &SessionId,
        n: &SessionId,
        a: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        self.inner.rotate(id, n, a).await
    }
    async fn remove_by_handle(
        &self,
        h: &SessionHandle,
        o: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        self.inner.remove_by_handle(h, o).await
    }
    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.inner.remove(id).await
    }
    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        self.inner.remove_expired(id, now).await
    }
    async fn list_for_user(&self, u: &UserId) -> Result<Vec<Session>, StoreError> {
        self.inner.list_for_user(u).await
    }
    async fn end_for_user(&self, u: &UserId, k: Option<&SessionId>) -> Result<usize, StoreError> {
        self.inner.end_for_user(u, k).await
    }
    async fn purge_expired(&self, now: Timestamp, l: usize) -> Result<Vec<SessionId>, StoreError> {
        self.inner.purge_expired(now, l).await
    }
    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        self.inner.successor(old).await
    }
}

/// A cache in front of `store`, on `clock`, whose entries stay an hour.
fn hour_long_cache<S: SessionStore>(store: S, clock: &ManualClock) -> Arc<CachedStore<S>> {
    Arc::new(CachedStore::with_options(
        store,
        cache_options(Duration::from_secs(3600)),
        Arc::new(clock.clone()),
    ))
}

fn cache_options(max_staleness: Duration) -> CacheOptions {
    let mut options = CacheOptions::default();
    options.max_staleness = max_staleness;
    options
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_store() {
    let probe = Arc::new(Probe::default());
    let sessions = Sessions::new(probe.clone(), Policy::default());
    let long = "A".repeat(10_000);
    for bad in [
        "",
        "short",
        long.as_str(),
        "%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%",
    ] {
        assert!(matches!(
            sessions.validate(bad).await,
            Err(SessionError::Token(_))
        ));
        assert!(matches!(
            sessions.rotate(bad, signoff::Rotation::Plain).await,
            Err(SessionError::Token(_))
        ));
    }
    assert_eq!(probe.loads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn cache_hit_costs_no_store_read() {
    let probe = Probe::default();
    let cached = Arc::new(CachedStore::new(probe));
    let sessions = Sessions::new(cached.clone(), Policy::default());
    let issued = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    for _ in 0..10 {
        sessions.validate(issued.token.expose()).await.unwrap();
    }
    assert_eq!(cached.inner().loads.load(Ordering::SeqCst), 1);
}

/// `Sessions::validate_now` (the axum layer's path without a future)
/// answers only where `validate_token` would answer the same without
/// waiting: a forged seal, and a cached session that is neither due for
/// its activity write nor expired. Everything else is left to the store:
/// a logout, the idle limit, the touch, keys not yet opened.
#[tokio::test]
async fn an_answer_without_waiting_is_the_one_validate_gives() {
    let clock = ManualClock::starting_now();
    let cached = hour_long_cache(Probe::default(), &clock);
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(600))
        .touch_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let sessions = Sessions::with_clock(cached.clone(), policy.clone(), Arc::new(clock.clone()));
    let loads = || cached.inner().loads.load(Ordering::SeqCst);

    // Keys not opened yet: nothing can be said without the store.
    let elsewhere = Sessions::with_clock(
        Arc::new(MemoryStore::new()),
        policy.clone(),
        Arc::new(clock.clone()),
    );
    let foreign = elsewhere
        .login(None, NewSession::for_user(UserId::new("mallory")))
        .await
        .unwrap()
        .token;
    assert!(sessions.validate_now(&foreign).is_none());

    let issued = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    let token = &issued.token;
    // Once the keys are open, a seal made elsewhere is refused at once.
    assert!(matches!(
        sessions.validate_now(&foreign),
        Some(Err(SessionError::Token(signoff::TokenError::BadSeal)))
    ));
    assert!(matches!(
        sessions.validate_token(&foreign).await,
        Err(SessionError::Token(signoff::TokenError::BadSeal))
    ));
    // Not cached yet: the store is asked.
    let before = loads();
    assert!(sessions.validate_now(token).is_none());
    let read = sessions.validate_token(token).await.unwrap();
    assert_eq!(loads(), before + 1);
    // Cached: the same session, without a read.
    let now = sessions.validate_now(token).unwrap().unwrap();
    assert_eq!(now, read);
    assert_eq!(loads(), before + 1);

    // Due for its activity write: left to `validate_token`, which writes it.
    clock.advance(Duration::from_secs(61));
    assert!(sessions.validate_now(token).is_none());
    let touched = sessions.validate_token(token).await.unwrap();
    assert!(touched.last_seen_at > read.last_seen_at);
    // The write dropped the cache's entry: read once more, then cached.
    assert!(sessions.validate_now(token).is_none());
    sessions.validate_token(token).await.unwrap();
    assert_eq!(
        sessions.validate_now(token).unwrap().unwrap().last_seen_at,
        touched.last_seen_at
    );

    // Idle past the limit: never a session without waiting.
    clock.advance(Duration::from_secs(601));
    assert!(sessions.validate_now(token).is_none());
    assert!(matches!(
        sessions.validate_token(token).await,
        Err(SessionError::Expired(_))
    ));

    // Signed out: the cache no longer answers, the store refuses.
    let again = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    sessions.validate_token(&again.token).await.unwrap();
    assert!(sessions.validate_now(&again.token).unwrap().is_ok());
    sessions.logout(again.token.expose()).await.unwrap();
    assert!(sessions.validate_now(&again.token).is_none());
    assert!(matches!(
        sessions.validate_token(&again.token).await,
        Err(SessionError::NotFound)
    ));
}

/// A session at its absolute end, freshly touched and freshly cached, is
/// never answered without waiting: only the expiry check stands between
/// that cache entry and a session outliving its lifetime.
#[tokio::test]
async fn an_answer_without_waiting_never_outlives_the_absolute_end() {
    let clock = ManualClock::starting_now();
    let cached = hour_long_cache(MemoryStore::new(), &clock);
    let policy = Policy::builder()
        .absolute_lifetime(Duration::from_secs(100))
        .idle_timeout(Duration::from_secs(90))
        .touch_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let sessions = Sessions::with_clock(cached, policy, Arc::new(clock.clone()));
    let issued = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    let token = &issued.token;
    clock.advance(Duration::from_secs(80));
    sessions.validate_token(token).await.unwrap(); // touched at 80 s
    sessions.validate_token(token).await.unwrap(); // cached again
    assert!(sessions.validate_now(token).unwrap().is_ok());
    // 101 s: past the absolute end, 21 s after the touch (none due).
    clock.advance(Duration::from_secs(21));
    assert!(sessions.validate_now(token).is_none());
    assert!(matches!(
        sessions.validate_token(token).await,
        Err(SessionError::Expired(signoff::ExpiredBy::Absolute))
    ));
}

/// A load that read the record before a logout must not put it into the
/// cache after the logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_load_cannot_recache_a_logged_out_session() {
    let cached = Arc::new(CachedStore::with_options(
        Probe::default(),
        cache_options(Duration::from_secs(3600)),
        Arc::new(signoff::SystemClock),
    ));
    let sessions = Sessions::new(cached.clone(), Policy::default());
    let issued = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    let id = issued.token.id();
    cached.inner().hold_next_load.store(true, Ordering::SeqCst);
    let slow = {
        let cached = cached.clone();
        tokio::spawn(async move { cached.load(&id).await })
    };
    cached.inner().loaded.notified().await;
    // The slow read has the live record in hand; now log out.
    sessions.logout(issued.token.expose()).await.unwrap();
    cached.inner().release.notify_one();
    let stale = slow.await.unwrap().unwrap();
    assert!(
        stale.is_some(),
        "the slow load read the record before logout"
    );
    assert!(cached.is_empty(), "the dead session was cached");
    assert!(matches!(
        sessions.validate(issued.token.expose()).await,
        Err(SessionError::NotFound)
    ));
}

/// Two engines with their own caches on one SQLite file stand for two
/// processes (the gateway and the CLI). A logout in one is seen by the
/// other once its cache entry is older than `max_staleness`: that is the
/// bound invariant 2 (docs/security.md) asks to state. Measured here with a clock.
#[tokio::test]
async fn logout_elsewhere_is_seen_within_the_staleness_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let clock = ManualClock::starting_now();
    let bound = Duration::from_secs(1);
    let node = |store: SqliteStore| {
        let cached =
            CachedStore::with_options(store, cache_options(bound), Arc::new(clock.clone()));
        Sessions::with_clock(Arc::new(cached), Policy::default(), Arc::new(clock.clone()))
    };
    let a = node(SqliteStore::open(&path).await.unwrap());
    let b = node(SqliteStore::open(&path).await.unwrap());
    let issued = a
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    let token = issued.token.expose();
    a.validate(token).await.unwrap(); // now cached on A
    b.logout(token).await.unwrap();
    // Direct mode (no cache) would refuse at once; B itself does.
    assert!(b.validate(token).await.is_err());
    clock.advance(bound - Duration::from_millis(1));
    assert!(
        a.validate(token).await.is_ok(),
        "within the bound A may still answer from its cache"
    );
    clock.advance(Duration::from_millis(1));
    assert!(
        matches!(a.validate(token).await, Err(SessionError::NotFound)),
        "past the bound A must refuse"
    );
}

#[tokio::test]
async fn sqlite_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    let kept = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    let ended = sessions
        .login(None, NewSession::for_user(UserId::new("bob")))
        .await
        .unwrap();
    sessions.logout(ended.token.expose()).await.unwrap();
    store.close().await;
    drop(sessions);

    let reopened = SqliteStore::open(&path).await.unwrap();
    let sessions = Sessions::new(Arc::new(reopened), Policy::default());
    let session = sessions.validate(kept.token.expose()).await.unwrap();
    assert_eq!(session.handle, kept.session.handle);
    assert!(sessions.validate(ended.token.expose()).await.is_err());
}

/// A leaked database (file and WAL) holds no usable token, in text or raw.
#[tokio::test]
async fn sqlite_file_never_contains_a_token() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("signoff.db"))
        .await
        .unwrap();
    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    let mut tokens = Vec::new();
    for i in 0..50 {
        let issued = sessions
            .login(None, NewSession::for_user(UserId::new(format!("u{i}"))))
            .await
            .unwrap();
        let rotated = sessions
            .rotate(issued.token.expose(), signoff::Rotation::AfterPassword)
            .await
            .unwrap();
        tokens.push(issued.token);
        tokens.push(rotated.token);
    }
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(bytes.len() > 4096);
    for token in &tokens {
        let text = token.expose().as_bytes();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .unwrap();
        assert!(
            !bytes.windows(text.len()).any(|w| w == text),
            "token text in the file"
        );
        assert!(
            !bytes.windows(raw.len()).any(|w| w == raw),
            "raw token in the file"
        );
        // The digest is there: that is what the store is keyed by.
        let id = token.id();
        let _ = id.as_bytes();
    }
    store.close().await;
}

#[tokio::test]
async fn sqlite_purge_runs_in_batches_until_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    let clock = ManualClock::starting_now();
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let sessions = Sessions::with_clock(store, policy, Arc::new(clock.clone()));
    for _ in 0..30 {
        sessions.create(NewSession::anonymous()).await.unwrap();
    }
    clock.advance(Duration::from_secs(60));
    let mut total = 0;
    loop {
        let n = sessions.purge_expired(8).await.unwrap();
        total += n;
        if n < 8 {
            break;
        }
    }
    assert_eq!(total, 30);
}

mod support;

/// Rotated-away digests are kept (for logout) until their session's
/// absolute expiry, then purged: in memory and in SQLite.
#[tokio::test]
async fn rotated_digests_are_kept_until_expiry_then_purged() {
    support::rotated_digest_is_kept_until_expiry(Arc::new(MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
    support::rotated_digest_is_kept_until_expiry(Arc::new(store)).await;
}

/// A session made from another one (`NewSession::linked_to`: the same user
/// on a second host) keeps the first one's password time and ends no later
/// than it; ending any session of such a sign-in ends all of it, and
/// nothing else of the user's.
#[tokio::test]
async fn linked_sessions_share_a_password_time_an_end_and_a_sign_out() {
    let clock = Arc::new(ManualClock::starting_now());
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let sessions = Sessions::with_clock(store, Policy::default(), clock.clone());
    let user = UserId::new("u1");
    let parent = sessions
        .create(NewSession::for_user(user.clone()))
        .await
        .unwrap()
        .session;
    clock.advance(Duration::from_secs(600));
    let link = || NewSession::for_user(user.clone()).linked_to(&parent, sessions.policy());
    let a = sessions.create(link()).await.unwrap().session;
    let b = sessions.create(link()).await.unwrap().session;
    let other_device = sessions
        .create(NewSession::for_user(user.clone()))
        .await
        .unwrap()
        .session;
    // Ten minutes on, the password was still typed at the parent's sign-in.
    assert_eq!(a.auth_at, parent.auth_at);
    assert_eq!(
        a.expires_at, parent.expires_at,
        "no later end than its parent"
    );
    assert_eq!(
        a.data.get(signoff::LINKED_TO_KEY),
        Some(&parent.handle.to_string())
    );
    // A later `ends_by` is cut to the policy's own limit; an earlier one
    // holds.
    let soon = sessions
        .create(NewSession::anonymous().ends_by(sessions.now().plus(Duration::from_secs(60))))
        .await
        .unwrap()
        .session;
    assert_eq!(
        soon.expires_at,
        sessions.now().plus(Duration::from_secs(60))
    );
    // A password time in the future is taken as now.
    let future = sessions
        .create(
            NewSession::for_user(user.clone())
                .authenticated_at(sessions.now().plus(Duration::from_secs(3600))),
        )
        .await
        .unwrap()
        .session;
    assert_eq!(future.auth_at, Some(sessions.now()));

    // Ending one linked session ends its parent and its sibling.
    let ended = sessions
        .end_by_handle(&a.handle, None, signoff::Actor::User)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sessions
            .end_linked(&ended, signoff::Actor::User)
            .await
            .unwrap(),
        2
    );
    for gone in [&parent, &b] {
        assert!(sessions.validate_handle(&gone.handle).await.is_err());
    }
    // The user's other sign-in is untouched.
    assert!(sessions.validate_handle(&other_device.handle).await.is_ok());
    // Ending a parent ends its linked sessions too.
    let p2 = sessions
        .create(NewSession::for_user(user.clone()))
        .await
        .unwrap()
        .session;
    let c2 = sessions
        .create(NewSession::for_user(user.clone()).linked_to(&p2, sessions.policy()))
        .await
        .unwrap()
        .session;
    let ended = sessions
        .end_by_handle(&p2.handle, None, signoff::Actor::Admin)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sessions
            .end_linked(&ended, signoff::Actor::Admin)
            .await
            .unwrap(),
        1
    );
    assert!(sessions.validate_handle(&c2.handle).await.is_err());
    assert!(sessions.validate_handle(&other_device.handle).await.is_ok());
}

/// The per-user limit counts sign-ins: sessions linked to one do not use up
/// the limit, and when a sign-in is ended for a newer one, its linked
/// sessions end with it.
#[tokio::test]
async fn the_session_limit_counts_sign_ins_and_ends_them_whole() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let policy = Policy::builder()
        .max_sessions_per_user(Some(1))
        .build()
        .unwrap();
    // Sign-ins a second apart: the limit ends the older (two in the same
    // millisecond are ordered by their random handles).
    let clock = Arc::new(ManualClock::starting_now());
    let sessions = Sessions::with_clock(store, policy, clock.clone());
    let user = UserId::new("u1");
    let first = sessions
        .login(None, NewSession::for_user(user.clone()))
        .await
        .unwrap()
        .session;
    let linked = sessions
        .login(
            None,
            NewSession::for_user(user.clone()).linked_to(&first, sessions.policy()),
        )
        .await
        .unwrap()
        .session;
    assert!(
        sessions.validate_handle(&first.handle).await.is_ok(),
        "a linked session is no second sign-in"
    );
    assert!(sessions.validate_handle(&linked.handle).await.is_ok());
    clock.advance(Duration::from_secs(1));
    let second = sessions
        .login(None, NewSession::for_user(user.clone()))
        .await
        .unwrap()
        .session;
    assert!(sessions.validate_handle(&first.handle).await.is_err());
    assert!(
        sessions.validate_handle(&linked.handle).await.is_err(),
        "ended with its sign-in"
    );
    assert!(sessions.validate_handle(&second.handle).await.is_ok());
}

/// `take_once`: a short-lived anonymous record with its marker is taken by
/// one request only; a signed-in session, a record of another kind, an
/// expired one and a made-up token are never taken (and nothing is
/// removed).
#[tokio::test]
async fn a_one_time_record_is_taken_once_and_nothing_else_is() {
    let clock = Arc::new(ManualClock::starting_now());
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let sessions = Sessions::with_clock(store, Policy::default(), clock.clone());
    let record = |key: &str| {
        let mut data = SessionData::new();
        data.insert(key.to_owned(), "x".to_owned());
        NewSession::anonymous()
            .data(data)
            .ends_by(sessions.now().plus(Duration::from_secs(60)))
    };
    let one = sessions.create(record("m")).await.unwrap().token;
    assert!(sessions
        .take_once(one.expose(), "m")
        .await
        .unwrap()
        .is_some());
    assert!(
        sessions
            .take_once(one.expose(), "m")
            .await
            .unwrap()
            .is_none(),
        "once"
    );
    let other = sessions.create(record("other")).await.unwrap().token;
    assert!(sessions
        .take_once(other.expose(), "m")
        .await
        .unwrap()
        .is_none());
    assert!(
        sessions.validate_token(&other).await.is_ok(),
        "another kind is left alone"
    );
    let mut data = SessionData::new();
    data.insert("m".to_owned(), "x".to_owned());
    let user = sessions
        .create(NewSession::for_user(UserId::new("u")).data(data))
        .await
        .unwrap()
        .token;
    assert!(sessions
        .take_once(user.expose(), "m")
        .await
        .unwrap()
        .is_none());
    assert!(
        sessions.validate_token(&user).await.is_ok(),
        "a signed-in session is left alone"
    );
    let late = sessions.create(record("m")).await.unwrap().token;
    clock.advance(Duration::from_secs(61));
    assert!(
        sessions
            .take_once(late.expose(), "m")
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(sessions
        .take_once(&"A".repeat(64), "m")
        .await
        .unwrap()
        .is_none());
}

/// signoff's own entries (`signoff.*`: the user's name, a refresh token's
/// state, a session's link) live beside the application's data, which can
/// neither set nor overwrite them, nor carry them through a login.
#[tokio::test]
async fn application_data_cannot_touch_signoffs_own_entries() {
    let policy = Policy::builder()
        .carry_on_login(vec!["cart".into(), "signoff.user".into()])
        .build()
        .unwrap();
    let sessions = Sessions::new(Arc::new(MemoryStore::new()), policy);
    let app = |pairs: &[(&str, &str)]| -> SessionData {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };

    // Not through the application's data, and only `signoff.*` as reserved.
    let refused = sessions
        .create(NewSession::for_user(UserId::new("u")).data(app(&[("signoff.user", "root")])))
        .await;
    assert!(matches!(refused, Err(SessionError::ReservedKey(k)) if k == "signoff.user"));
    let refused = sessions
        .create(NewSession::for_user(UserId::new("u")).reserved("cart", "x"))
        .await;
    assert!(matches!(refused, Err(SessionError::ReservedKey(k)) if k == "cart"));

    let issued = sessions
        .create(
            NewSession::for_user(UserId::new("u"))
                .user_name("alice")
                .data(app(&[("cart", "2 pears")])),
        )
        .await
        .unwrap();
    assert_eq!(issued.session.user_name(), Some("alice"));

    // Replacing the application's data keeps signoff's; naming one is refused.
    let written = sessions
        .set_data(&issued.session, app(&[("lang", "de")]))
        .await
        .unwrap();
    assert_eq!(written.user_name(), Some("alice"));
    assert_eq!(written.data.get("lang").map(String::as_str), Some("de"));
    assert!(!written.data.contains_key("cart"));
    let refused = sessions
        .set_data(&written, app(&[("signoff.user", "mallory")]))
        .await;
    assert!(matches!(refused, Err(SessionError::ReservedKey(_))));
    let reloaded = sessions.validate(issued.token.expose()).await.unwrap();
    assert_eq!(reloaded.user_name(), Some("alice"));
    // A copy of the session's data with one entry added works: signoff's
    // entries may be repeated unchanged.
    let mut copy = reloaded.data.clone();
    copy.insert("theme".into(), "dark".into());
    let written = sessions.set_data(&reloaded, copy).await.unwrap();
    assert_eq!(written.user_name(), Some("alice"));
    // What counts is the store's copy, not the caller's (a public struct).
    let mut forged = written.clone();
    forged.data.insert("signoff.user".into(), "mallory".into());
    let written = sessions
        .set_data(&forged, app(&[("lang", "fr")]))
        .await
        .unwrap();
    assert_eq!(written.user_name(), Some("alice"));
    assert_eq!(
        sessions
            .validate(issued.token.expose())
            .await
            .unwrap()
            .user_name(),
        Some("alice")
    );

    // A login carries the allow-listed application data, never signoff's
    // own entries, even when the policy lists one.
    let planted = sessions
        .create(NewSession::anonymous().data(app(&[("cart", "3 figs")])))
        .await
        .unwrap();
    let next = sessions
        .login(
            Some(planted.token.expose()),
            NewSession::for_user(UserId::new("v")).user_name("victor"),
        )
        .await
        .unwrap();
    assert_eq!(next.session.user_name(), Some("victor"));
    assert_eq!(
        next.session.data.get("cart").map(String::as_str),
        Some("3 figs")
    );
    let from_alice = sessions
        .login(
            Some(issued.token.expose()),
            NewSession::for_user(UserId::new("u")),
        )
        .await
        .unwrap();
    assert_eq!(
        from_alice.session.user_name(),
        None,
        "a user name was carried"
    );
}

/// A cached store whose entries stay `max_staleness` (on `clock`), in
/// front of a [`Probe`], and a session signed in on it, not cached yet.
async fn probed_session_with(
    clock: Arc<dyn signoff::Clock>,
    max_staleness: Duration,
) -> (Arc<CachedStore<Probe>>, SessionId) {
    let cached = Arc::new(CachedStore::with_options(
        Probe::default(),
        cache_options(max_staleness),
        clock,
    ));
    let sessions = Sessions::new(cached.clone(), Policy::default());
    let issued = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    let id = issued.token.id();
    cached.invalidate(&id);
    (cached, id)
}

/// [`probed_session_with`] an hour's staleness on the system clock.
async fn probed_session() -> (Arc<CachedStore<Probe>>, SessionId) {
    probed_session_with(Arc::new(signoff::SystemClock), Duration::from_secs(3600)).await
}

type Load = tokio::task::JoinHandle<Result<Option<Session>, StoreError>>;

/// Waits at most 10 s for `what`: these tests fail, never hang, when the
/// cache waits where it must not (or not where it must).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("still waiting after 10 s: {what}"))
}

/// The answer of a spawned load.
async fn answer(load: Load) -> Result<Option<Session>, StoreError> {
    within("a load's answer", load).await.unwrap()
}

/// The answer of a load that must not wait for the held read.
async fn not_waiting(load: Load) -> Option<Session> {
    within("a load that must not wait for an older read", load)
        .await
        .unwrap()
        .unwrap()
}

/// Spawns a load of `id` whose store read is held until released.
async fn held_load(cached: &Arc<CachedStore<Probe>>, id: SessionId) -> Load {
    cached.inner().hold_next_load.store(true, Ordering::SeqCst);
    let load = {
        let cached = cached.clone();
        tokio::spawn(async move { cached.load(&id).await })
    };
    within(
        "the held load's store read",
        cached.inner().loaded.notified(),
    )
    .await;
    load
}

/// Spawns `n` loads of `id` and returns once each has missed (on this
/// one-thread runtime a load joins a read, or starts one, in the same poll
/// that counts its miss).
async fn more_loads(cached: &Arc<CachedStore<Probe>>, id: SessionId, n: u64) -> Vec<Load> {
    let misses = cached.stats().misses();
    let loads = (0..n)
        .map(|_| {
            let cached = cached.clone();
            tokio::spawn(async move { cached.load(&id).await })
        })
        .collect();
    within("the loads' misses", async {
        while cached.stats().misses() < misses + n {
            tokio::task::yield_now().await;
        }
    })
    .await;
    loads
}

/// Loads of one session that miss together (a page's requests just after
/// its entry aged out) make one store read, and all get its answer.
#[tokio::test]
async fn concurrent_misses_of_one_session_share_one_store_read() {
    let (cached, id) = probed_session().await;
    let before = cached.inner().reads();
    let first = held_load(&cached, id).await;
    let others = more_loads(&cached, id, 20).await;
    assert_eq!(cached.reads_in_flight(), 1);
    cached.inner().release.notify_one();
    let session = answer(first).await.unwrap().unwrap();
    for other in others {
        assert_eq!(answer(other).await.unwrap().as_ref(), Some(&session));
    }
    assert_eq!(
        cached.inner().reads(),
        before + 1,
        "one store read for 21 loads"
    );
    assert_eq!(cached.stats().shared(), 20);
    assert_eq!(cached.reads_in_flight(), 0);
    // The read filled the cache as a load of its own would.
    cached.load(&id).await.unwrap().unwrap();
    assert_eq!(cached.inner().reads(), before + 1);
}

/// A load that starts after a logout never takes the answer of a read
/// that started before it: it reads the store itself and is refused, while
/// the older read (concurrent with the logout) neither shares nor caches
/// what it found.
#[tokio::test]
async fn a_load_after_a_logout_does_not_take_an_older_read() {
    let (cached, id) = probed_session().await;
    let before = cached.inner().reads();
    let older = held_load(&cached, id).await;
    // Ended here (`remove` invalidates), as a logout or an end-all does.
    cached.remove(&id).await.unwrap().unwrap();
    let later = more_loads(&cached, id, 3).await;
    for load in later {
        assert_eq!(not_waiting(load).await, None);
    }
    // Each read the store itself (the memory store answers at once, so
    // their reads did not overlap): none took the older read's answer.
    assert_eq!(cached.inner().reads(), before + 4);
    assert_eq!(cached.stats().shared(), 0);
    cached.inner().release.notify_one();
    assert!(
        answer(older).await.unwrap().is_some(),
        "read before the end"
    );
    assert!(cached.is_empty());
    assert_eq!(cached.load(&id).await.unwrap(), None);
    assert_eq!(cached.reads_in_flight(), 0);

    // The same for an end announced by the bus (`invalidate`), with the
    // record gone behind the cache's back.
    let (cached, id) = probed_session().await;
    let older = held_load(&cached, id).await;
    cached.inner().inner.remove(&id).await.unwrap().unwrap();
    cached.invalidate(&id);
    let later = more_loads(&cached, id, 1).await;
    for load in later {
        assert_eq!(not_waiting(load).await, None);
    }
    cached.inner().release.notify_one();
    assert!(answer(older).await.unwrap().is_some());
    assert!(cached.is_empty());
}

/// Without any announcement (no bus, or one that has not arrived), a
/// session ended on another node is refused here once the cache's bound
/// has passed. A read still under way after that bound is not joined:
/// its answer could be older than anything the cache may serve.
#[tokio::test]
async fn a_shared_read_older_than_the_staleness_bound_is_not_joined() {
    let clock = ManualClock::starting_now();
    let (cached, id) =
        probed_session_with(Arc::new(clock.clone()), Duration::from_secs(3600)).await;
    let older = held_load(&cached, id).await;
    // A load within the bound joins.
    let within_bound = more_loads(&cached, id, 1).await;
    // Ended on another node, unannounced; the bound (an hour here) passes.
    cached.inner().inner.remove(&id).await.unwrap().unwrap();
    clock.advance(Duration::from_secs(3600));
    let later = more_loads(&cached, id, 1).await;
    for load in later {
        assert_eq!(not_waiting(load).await, None);
    }
    cached.inner().release.notify_one();
    assert!(answer(older).await.unwrap().is_some());
    for load in within_bound {
        assert!(answer(load).await.unwrap().is_some());
    }
    assert_eq!(cached.stats().shared(), 1);
}

/// A load that starts after the shared read answered reads the store
/// itself, even while a load that joined in time is still to take its
/// answer. (A digest never comes back in real use; putting the record back
/// is only the plainest way to tell a fresh read from the old answer.)
#[tokio::test]
async fn a_load_after_the_shared_read_answered_reads_the_store_itself() {
    let (cached, id) = probed_session().await;
    let record = cached.inner().inner.remove(&id).await.unwrap().unwrap();
    let older = held_load(&cached, id).await;
    // Joined in time, then not polled again until the end.
    let mut slow = Box::pin(cached.load(&id));
    std::future::poll_fn(|cx| {
        assert!(std::future::Future::poll(slow.as_mut(), cx).is_pending());
        std::task::Poll::Ready(())
    })
    .await;
    cached.inner().release.notify_one();
    assert_eq!(answer(older).await.unwrap(), None);
    assert_eq!(cached.reads_in_flight(), 1, "the slow load is still seated");
    cached.inner().inner.insert(&record).await.unwrap();
    let fresh = within("a load after the answer", cached.load(&id)).await;
    assert_eq!(fresh.unwrap(), Some(record));
    assert_eq!(within("the slow load", slow).await.unwrap(), None);
    assert_eq!(cached.stats().shared(), 1);
    assert_eq!(cached.reads_in_flight(), 0);
}

/// When the load doing the shared read is dropped (its client went away),
/// a waiting load reads instead, and nothing is left behind.
#[tokio::test]
async fn a_dropped_read_is_taken_over_by_a_waiting_load() {
    let (cached, id) = probed_session().await;
    let before = cached.inner().reads();
    let first = held_load(&cached, id).await;
    let mut others = more_loads(&cached, id, 2).await;
    first.abort();
    assert!(within("the dropped load", first)
        .await
        .unwrap_err()
        .is_cancelled());
    let b = answer(others.pop().unwrap()).await.unwrap();
    let a = answer(others.pop().unwrap()).await.unwrap();
    assert!(a.is_some() && a == b);
    assert_eq!(
        cached.inner().reads(),
        before + 2,
        "the dropped read and the one that took over"
    );
    assert_eq!(cached.stats().shared(), 1);
    assert_eq!(cached.reads_in_flight(), 0);
}

/// A shared read that fails fails every load that waited for it, at once
/// and alike (each fails closed), and caches nothing.
#[tokio::test]
async fn a_failed_shared_read_fails_each_waiting_load() {
    let (cached, id) = probed_session().await;
    let before = cached.inner().reads();
    cached.inner().fail_loads.store(true, Ordering::SeqCst);
    let first = held_load(&cached, id).await;
    let others = more_loads(&cached, id, 5).await;
    cached.inner().release.notify_one();
    for (i, load) in std::iter::once(first).chain(others).enumerate() {
        let err = answer(load).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let cause = std::error::Error::source(&err).unwrap();
        assert_eq!(cause.to_string(), "the probe is down");
        // The load that read has the store's own error; the others a copy.
        assert_eq!(cause.is::<ProbeDown>(), i == 0, "load {i}: {err:?}");
    }
    assert_eq!(cached.inner().reads(), before + 1);
    assert!(cached.is_empty());
    assert_eq!(cached.reads_in_flight(), 0);
    // The store is back: the next load reads it.
    cached.inner().fail_loads.store(false, Ordering::SeqCst);
    assert!(cached.load(&id).await.unwrap().is_some());
}

/// With no staleness allowed (`--cache-staleness 0s` builds no cache at
/// all; a library user may still ask for 0), every load reads the store:
/// nothing is shared either.
#[tokio::test]
async fn with_no_staleness_allowed_no_read_is_shared() {
    let (cached, id) = probed_session_with(Arc::new(signoff::SystemClock), Duration::ZERO).await;
    let before = cached.inner().reads();
    let older = held_load(&cached, id).await;
    let later = more_loads(&cached, id, 2).await;
    for load in later {
        assert!(not_waiting(load).await.is_some());
    }
    cached.inner().release.notify_one();
    assert!(answer(older).await.unwrap().is_some());
    assert_eq!(cached.inner().reads(), before + 3);
    assert_eq!(cached.stats().shared(), 0);
}
