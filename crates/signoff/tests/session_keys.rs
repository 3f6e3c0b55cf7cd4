//! Sealed session tokens: a token the deployment did not issue is refused
//! in memory, before any store is asked (docs/security.md, "Made-up
//! tokens"); the keys are shared through the store and rotate without
//! refusing a live token.
#![cfg(all(feature = "sqlite", feature = "tokens"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use signoff::session_keys::{self, SIGNING_DELAY};
use signoff::{
    Actor, Clock, ManualClock, NewSession, Policy, Session, SessionData, SessionError,
    SessionHandle, SessionId, SessionKeys, SessionStore, SessionToken, Sessions, SqliteStore,
    StateStore, StoreError, Timestamp, TokenError, UserId, Versioned, WriteOutcome,
};

/// A real store that counts every call made to it.
struct Counted<S> {
    inner: S,
    calls: AtomicUsize,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicUsize::new(0),
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for Counted<S> {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.count();
        self.inner.insert(session).await
    }
    async fn load(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.count();
        self.inner.load(id).await
    }
    async fn load_by_handle(&self, handle: &SessionHandle) -> Result<Option<Session>, StoreError> {
        self.count();
        self.inner.load_by_handle(handle).await
    }
    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        self.count();
        self.inner.touch(id, at).await
    }
    async fn update_data(
        &self,
        id: &SessionId,
        generation: u64,
        data: &SessionData,
    ) -> Result<WriteOutcome, StoreError> {
        self.count();
        self.inner.update_data(id, generation, data).await
    }
    async fn rotate(
        &self,
        id: &SessionId,
        new_id: &SessionId,
        auth_at: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        self.count();
        self.inner.rotate(id, new_id, auth_at).await
    }
    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.count();
        self.inner.remove(id).await
    }
    async fn remove_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
    ) -> Result<Option<Session>, StoreError> {
        self.count();
        self.inner.remove_by_handle(handle, owner).await
    }
    async fn remove_expired(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        self.count();
        self.inner.remove_expired(id, now).await
    }
    async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, StoreError> {
        self.count();
        self.inner.list_for_user(user).await
    }
    async fn end_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> Result<usize, StoreError> {
        self.count();
        self.inner.end_for_user(user, keep).await
    }
    async fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SessionId>, StoreError> {
        self.count();
        self.inner.purge_expired(now, limit).await
    }
    async fn successor(&self, old: &SessionId) -> Result<Option<SessionHandle>, StoreError> {
        self.count();
        self.inner.successor(old).await
    }
}

#[async_trait]
impl<S: StateStore> StateStore for Counted<S> {
    async fn get_state(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        self.count();
        self.inner.get_state(name).await
    }
    async fn put_state(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.count();
        self.inner.put_state(name, value, expected).await
    }
}

async fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
    (dir, store)
}

/// Every way a client can present a token it was not issued: each must be
/// refused without a single store call.
fn made_up_tokens(real: &SessionToken, foreign: &SessionToken) -> Vec<(String, String)> {
    let raw = URL_SAFE_NO_PAD.decode(real.expose()).unwrap();
    let mut out = vec![
        ("all A".to_owned(), "A".repeat(64)),
        (
            "another deployment's".to_owned(),
            foreign.expose().to_owned(),
        ),
    ];
    // Each byte changed in turn: random part, key id, seal.
    for i in [0, 17, 31, 32, 33, 40, 47] {
        let mut bytes = raw.clone();
        bytes[i] ^= 0x01;
        out.push((format!("byte {i} flipped"), URL_SAFE_NO_PAD.encode(bytes)));
    }
    // The real random part under a made-up seal.
    let mut bytes = raw.clone();
    bytes[33..].fill(0);
    out.push(("zero seal".to_owned(), URL_SAFE_NO_PAD.encode(bytes)));
    out
}

#[tokio::test]
async fn made_up_tokens_are_refused_without_a_store_call() {
    let (_dir, store) = sqlite().await;
    let counted = Counted::new(store);
    let sessions = Sessions::new(counted.clone(), Policy::default());
    let real = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap()
        .token;
    let foreign = SessionKeys::ephemeral().issue(sessions.now());
    let before = counted.calls();
    for (what, text) in made_up_tokens(&real, &foreign) {
        assert!(
            matches!(
                sessions.validate(&text).await,
                Err(SessionError::Token(TokenError::BadSeal))
            ),
            "{what}: validate"
        );
        assert!(
            sessions
                .rotate(&text, signoff::Rotation::Plain)
                .await
                .is_err(),
            "{what}: rotate"
        );
        assert!(
            sessions.logout(&text).await.unwrap().is_none(),
            "{what}: logout"
        );
        assert!(
            sessions.end(&text, Actor::User).await.is_err(),
            "{what}: end"
        );
        assert!(
            sessions.check_token(&text).await.is_err(),
            "{what}: check_token"
        );
    }
    assert_eq!(counted.calls(), before, "a made-up token reached the store");
    // A login presenting a made-up previous token asks the store only to
    // create the new session, never to look the made-up one up.
    let before = counted.calls();
    sessions
        .login(
            Some(foreign.expose()),
            NewSession::for_user(UserId::new("alice")),
        )
        .await
        .unwrap();
    assert_eq!(counted.calls(), before + 1, "login: only the insert");
    // The control: the real token does reach the store, and is accepted.
    let before = counted.calls();
    assert!(sessions.validate(real.expose()).await.is_ok());
    assert!(counted.calls() > before, "the counter counts");
}

#[tokio::test]
async fn engines_sharing_the_store_share_the_keys_and_others_are_refused() {
    let (_dir, store) = sqlite().await;
    let store = Arc::new(store);
    let now = ManualClock::starting_now().now();
    // Two nodes starting at once create one set of keys between them.
    let (a, b) = tokio::join!(
        SessionKeys::open(store.clone(), now),
        SessionKeys::open(store.clone(), now)
    );
    let node_a = Sessions::new(store.clone(), Policy::default()).with_keys(Arc::new(a.unwrap()));
    let node_b = Sessions::new(store.clone(), Policy::default()).with_keys(Arc::new(b.unwrap()));
    let issued = node_a
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    assert!(node_b.validate(issued.token.expose()).await.is_ok());
    // A restart opens the same keys: the session survives it.
    let restarted = Sessions::new(store.clone(), Policy::default()).with_keys(Arc::new(
        SessionKeys::open(store.clone(), now).await.unwrap(),
    ));
    assert!(restarted.validate(issued.token.expose()).await.is_ok());
    // A plain engine over the same store opens the store's keys itself.
    let plain = Sessions::new(store.clone(), Policy::default());
    assert!(plain.validate(issued.token.expose()).await.is_ok());
    // An engine with keys of its own refuses the token, as made up.
    let stranger = Sessions::new(store.clone(), Policy::default())
        .with_keys(Arc::new(SessionKeys::ephemeral()));
    assert!(matches!(
        stranger.validate(issued.token.expose()).await,
        Err(SessionError::Token(TokenError::BadSeal))
    ));
}

/// Rotation never refuses a live token on any node: the new key verifies
/// everywhere before it seals anything; the key it replaces keeps
/// verifying; a second rotation retires the oldest, and its tokens die.
#[tokio::test]
async fn rotation_is_staged_and_retires_the_oldest_key() {
    let (_dir, store) = sqlite().await;
    let store = Arc::new(store);
    let clock = ManualClock::starting_now();
    let open = |store: Arc<SqliteStore>| {
        let now = clock.now();
        async move { Arc::new(SessionKeys::open(store, now).await.unwrap()) }
    };
    let engine = |keys: Arc<SessionKeys>| {
        Sessions::with_clock(store.clone(), Policy::default(), Arc::new(clock.clone()))
            .with_keys(keys)
    };
    let node_a = engine(open(store.clone()).await);
    let first = node_a
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap()
        .token;
    let kid = |t: &SessionToken| URL_SAFE_NO_PAD.decode(t.expose()).unwrap()[32];
    assert_eq!(kid(&first), 0);

    let added = session_keys::rotate(store.as_ref(), clock.now())
        .await
        .unwrap();
    assert_eq!(added.kid, 1);
    assert_eq!(added.seals_from, clock.now().plus(SIGNING_DELAY));
    // A node that starts now loads both keys but still seals with the old
    // one, so a node that has not re-read the keys yet accepts its tokens.
    let node_b = engine(open(store.clone()).await);
    let during = node_b
        .login(None, NewSession::for_user(UserId::new("bob")))
        .await
        .unwrap()
        .token;
    assert_eq!(kid(&during), 0, "the new key seals nothing before its time");
    assert!(node_a.validate(during.expose()).await.is_ok());

    // One staged key at a time.
    assert!(matches!(
        session_keys::rotate(store.as_ref(), clock.now()).await,
        Err(signoff::token_mode::KeysError::Staged { seconds: 90 })
    ));

    // After the delay, the new key seals; every node has it by then.
    clock.advance(SIGNING_DELAY);
    let after = node_b
        .login(None, NewSession::for_user(UserId::new("carol")))
        .await
        .unwrap()
        .token;
    assert_eq!(kid(&after), 1);
    assert!(
        node_b.validate(first.expose()).await.is_ok(),
        "the old key still verifies"
    );

    // A second rotation right away keeps key 0: a node that saw key 1
    // late may still seal with key 0 for a while.
    session_keys::rotate(store.as_ref(), clock.now())
        .await
        .unwrap();
    let listed = session_keys::list(store.as_ref()).await.unwrap();
    assert_eq!(listed.iter().map(|k| k.kid).collect::<Vec<_>>(), [0, 1, 2]);
    // Once key 1 has sealed for the delay, the next rotation drops key 0:
    // its tokens are refused from then on.
    clock.advance(SIGNING_DELAY);
    session_keys::rotate(store.as_ref(), clock.now())
        .await
        .unwrap();
    let listed = session_keys::list(store.as_ref()).await.unwrap();
    assert_eq!(listed.iter().map(|k| k.kid).collect::<Vec<_>>(), [1, 2, 3]);
    let node_c = engine(open(store.clone()).await);
    assert!(matches!(
        node_c.validate(first.expose()).await,
        Err(SessionError::Token(TokenError::BadSeal))
    ));
    assert!(node_c.validate(after.expose()).await.is_ok());
}

/// Nothing a client sends makes a node read the keys more often than once
/// per 30 seconds.
#[tokio::test(start_paused = true)]
async fn keys_are_reread_at_most_every_thirty_seconds() {
    // The memory store: paused time would time out a connection pool.
    let counted = Counted::new(signoff::MemoryStore::new());
    let keys = SessionKeys::open(counted.clone(), Timestamp::from_millis(0))
        .await
        .unwrap();
    let made_up = SessionToken::parse(&"A".repeat(64)).unwrap();
    let reads = counted.calls();
    for _ in 0..1000 {
        keys.refresh().await;
        assert!(!keys.verify(&made_up));
    }
    assert_eq!(counted.calls(), reads, "no re-read within 30 seconds");
    tokio::time::advance(Duration::from_secs(31)).await;
    for _ in 0..1000 {
        keys.refresh().await;
    }
    assert_eq!(counted.calls(), reads + 1, "one re-read after 30 seconds");
}

/// A node that runs through a rotation loads the new key on its next
/// re-read (and verifies tokens other nodes seal with it), and seals with
/// it only once it has had it for the signing delay, whatever its clock
/// says.
#[tokio::test(start_paused = true)]
async fn a_running_node_picks_up_a_rotation_and_seals_with_it_late() {
    let store = Arc::new(signoff::MemoryStore::new());
    let clock = ManualClock::starting_now();
    let engine = |keys: SessionKeys| {
        Sessions::with_clock(store.clone(), Policy::default(), Arc::new(clock.clone()))
            .with_keys(Arc::new(keys))
    };
    let running = engine(SessionKeys::open(store.clone(), clock.now()).await.unwrap());
    let kid = |t: &SessionToken| URL_SAFE_NO_PAD.decode(t.expose()).unwrap()[32];
    let login = |s: &Sessions| {
        let s = s.clone();
        async move {
            s.login(None, NewSession::for_user(UserId::new("alice")))
                .await
                .unwrap()
                .token
        }
    };

    session_keys::rotate(store.as_ref(), clock.now())
        .await
        .unwrap();
    // A node started after the rotation, its wall clock past the stage.
    let started = engine(SessionKeys::open(store.clone(), clock.now()).await.unwrap());
    clock.advance(SIGNING_DELAY);
    let sealed_by_new = login(&started).await;
    assert_eq!(kid(&sealed_by_new), 1);

    // Within 30 s of its last read the running node does not know key 1…
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(running.validate(sealed_by_new.expose()).await.is_err());
    // …after that, its next check re-reads the keys and accepts it.
    tokio::time::advance(Duration::from_secs(21)).await;
    assert!(running.validate(sealed_by_new.expose()).await.is_ok());
    // Its wall clock says key 1 may seal, but it has had key 1 for less
    // than the signing delay: it still seals with key 0.
    assert_eq!(kid(&login(&running).await), 0);
    tokio::time::advance(SIGNING_DELAY).await;
    assert_eq!(kid(&login(&running).await), 1);
}
