//! The conformance suite every [`SessionStore`] must pass, and the checks
//! every `UserStore` must pass (`user_store_conformance`, feature `accounts`).
//!
//! It is public so that third-party stores can run it too. Each check is an
//! `async fn` that takes a fresh, empty store and panics if the store breaks
//! the contract. [`session_store_conformance!`](crate::session_store_conformance)
//! turns the whole list into one `#[tokio::test]` per check:
//!
//! ```text
//! // tests/conformance.rs of a store crate (needs tokio with "macros" and
//! // "rt-multi-thread" in dev-dependencies)
//! use std::sync::Arc;
//! use signoff::conformance::Fixture;
//!
//! signoff::session_store_conformance!(|| async {
//!     Fixture::new(Arc::new(my_crate::MyStore::connect().await.unwrap()))
//! });
//! ```
//!
//! The checks are grouped by the invariants in docs/security.md: the server decides
//! (1), logout is final (2), nothing resurrects a session (3), only digests
//! are stored (4), and the token rotates at privilege changes (5); then
//! expiry, per-user operations and purge.

use std::any::Any;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::Actor;
#[cfg(feature = "audit")]
use crate::audit::{AuditKind, AuditLog, AuditQuery};
use crate::clock::{Clock, ManualClock, Timestamp};
use crate::policy::{LogoutBehavior, Policy, RememberDevice};
use crate::session::{NewSession, Session, SessionData, SessionError, Sessions, UserId};
use crate::session_keys::SessionKeys;
use crate::session_token::{SessionHandle, SessionToken};
#[cfg(feature = "audit")]
use crate::store::memory::MemoryStore;
use crate::store::{SessionStore, StoreError, WriteOutcome};
#[cfg(feature = "accounts")]
use crate::users::{User, UserStore};

/// A store under test, and whatever must live as long as it (a temporary
/// directory, a database schema guard).
pub struct Fixture {
    /// The store under test; empty.
    pub store: Arc<dyn SessionStore>,
    _keep: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// A fixture around `store`.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self { store, _keep: None }
    }

    /// Keeps `guard` alive until the check ends.
    pub fn keeping(mut self, guard: impl Any + Send + Sync) -> Self {
        self._keep = Some(Box::new(guard));
        self
    }
}

/// Generates one `#[tokio::test]` per conformance check.
///
/// The argument is a closure returning a future of a
/// [`Fixture`](crate::conformance::Fixture) around a fresh, empty store.
#[macro_export]
macro_rules! session_store_conformance {
    ($make:expr) => {
        $crate::session_store_conformance!(@checks $make;
            create_then_validate,
            unknown_token_is_refused,
            malformed_token_is_refused,
            store_is_keyed_by_digest,
            insert_never_overwrites,
            logout_is_final,
            logout_is_idempotent,
            end_by_handle_is_final,
            logout_with_a_rotated_token_ends_its_successor,
            logout_racing_a_rotation_ends_the_session,
            writes_after_removal_change_nothing,
            stale_data_write_loses,
            inflight_write_cannot_resurrect,
            rotate_kills_old_token,
            rotation_race_has_one_winner,
            login_discards_pre_login_token,
            login_never_carries_another_users_data,
            password_change_rotates_and_ends_others,
            logout_carries_only_listed_data_under_new_token,
            idle_timeout_ends_session,
            activity_keeps_session_alive,
            absolute_lifetime_ends_active_session,
            stricter_policy_applies_to_existing_sessions,
            touch_is_throttled,
            touch_never_moves_backwards,
            remove_expired_is_conditional,
            end_all_for_user_can_keep_current,
            writes_after_ending_a_user_change_nothing,
            list_for_user_shows_only_own_live_sessions,
            purge_is_bounded_and_complete,
            concurrent_purges_remove_each_session_once,
            session_data_round_trips_and_is_bounded,
            remembered_session_outlives_the_ordinary_lifetime,
            turning_remember_off_or_shorter_caps_remembered_sessions,
            rotation_keeps_the_remembered_lifetime,
            every_end_ends_a_remembered_session,
        );
    };
    (@checks $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture: $crate::conformance::Fixture = ($make)().await;
                $crate::conformance::$check(::std::sync::Arc::clone(&fixture.store)).await;
                drop(fixture);
            }
        )*
    };
}

const IDLE: Duration = Duration::from_secs(30 * 60);
const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
const TOUCH: Duration = Duration::from_secs(60);

fn policy() -> Policy {
    Policy::builder()
        .idle_timeout(IDLE)
        .absolute_lifetime(ABSOLUTE)
        .touch_interval(TOUCH)
        .build()
        .expect("valid test policy")
}

fn engine(store: &Arc<dyn SessionStore>, policy: Policy) -> (Sessions, ManualClock) {
    let clock = ManualClock::starting_now();
    let sessions = Sessions::with_clock(Arc::clone(store), policy, Arc::new(clock.clone()));
    (sessions, clock)
}

fn alice() -> UserId {
    UserId::new("alice")
}

async fn login(sessions: &Sessions, user: UserId) -> (SessionToken, Session) {
    let issued = sessions
        .login(
            None,
            NewSession::for_user(user)
                .user_agent("conformance")
                .ip("192.0.2.1"),
        )
        .await
        .expect("login");
    (issued.token, issued.session)
}

fn assert_gone(result: Result<Session, SessionError>, what: &str) {
    match result {
        Err(SessionError::NotFound | SessionError::Expired(_)) => {}
        Err(e) => panic!("{what}: expected the session to be gone, got error {e:?}"),
        Ok(_) => panic!("{what}: a session that should be gone was accepted"),
    }
}

// ---- Invariant 1: the server decides ------------------------------------

/// A created session validates, and the store returns every field as written.
pub async fn create_then_validate(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let mut data = SessionData::new();
    data.insert("lang".into(), "de".into());
    let issued = sessions
        .create(
            NewSession::for_user(alice())
                .user_agent("Mozilla/5.0 (X11; Linux x86_64)")
                .ip("2001:db8::1")
                .data(data.clone()),
        )
        .await
        .expect("create");
    let loaded = sessions
        .validate(issued.token.expose())
        .await
        .expect("validate");
    assert_eq!(loaded, issued.session);
    assert_eq!(loaded.user_id, Some(alice()));
    assert_eq!(
        loaded.user_agent.as_deref(),
        Some("Mozilla/5.0 (X11; Linux x86_64)")
    );
    assert_eq!(loaded.ip.as_deref(), Some("2001:db8::1"));
    assert_eq!(loaded.data, data);
    assert_eq!(loaded.generation, 0);
    assert_eq!(loaded.auth_at, Some(loaded.created_at));
    let by_handle = store
        .load_by_handle(&loaded.handle)
        .await
        .expect("load by handle");
    assert_eq!(by_handle, Some(loaded));
}

/// A well-formed token the server never issued opens nothing.
pub async fn unknown_token_is_refused(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    login(&sessions, alice()).await;
    // Sealed by the engine's own keys, so it is the store that answers.
    let stranger = sessions.keys().await.expect("keys").issue(sessions.now());
    assert_gone(sessions.validate(stranger.expose()).await, "unknown token");
}

/// Malformed tokens are refused with a typed error.
pub async fn malformed_token_is_refused(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (token, _) = login(&sessions, alice()).await;
    let text = token.expose();
    let oversized = text.repeat(100);
    for bad in ["", &text[..20], &oversized, &text.replace(|_| true, "%")] {
        match sessions.validate(bad).await {
            Err(SessionError::Token(_)) => {}
            other => panic!("malformed token {bad:?} gave {other:?}"),
        }
    }
}

// ---- Invariant 4: only digests are stored ------------------------------

/// The store is keyed by the token's digest, and the token is nowhere in
/// what it returns. (The store API never receives a token at all; the
/// SQLite test `sqlite_file_never_contains_a_token` checks the bytes on disk.)
pub async fn store_is_keyed_by_digest(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    assert_eq!(session.id, token.id());
    let loaded = store
        .load(&token.id())
        .await
        .expect("load")
        .expect("present");
    let dump = format!("{loaded:?}");
    assert!(
        !dump.contains(token.expose()),
        "the token leaked into the record"
    );
    let listed = store.list_for_user(&alice()).await.expect("list");
    assert!(!format!("{listed:?}").contains(token.expose()));
}

/// Insert never overwrites a record with the same id or handle.
pub async fn insert_never_overwrites(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (_, original) = login(&sessions, alice()).await;
    let mut same_id = original.clone();
    same_id.user_id = Some(UserId::new("mallory"));
    same_id.handle = SessionHandle::generate();
    assert!(matches!(
        store.insert(&same_id).await,
        Err(StoreError::Duplicate)
    ));
    let mut same_handle = original.clone();
    same_handle.id = SessionKeys::ephemeral()
        .issue(Timestamp::from_millis(0))
        .id();
    assert!(matches!(
        store.insert(&same_handle).await,
        Err(StoreError::Duplicate)
    ));
    let loaded = store.load(&original.id).await.expect("load");
    assert_eq!(loaded, Some(original));
    assert!(store.load(&same_handle.id).await.expect("load").is_none());
}

// ---- Invariant 2: logout is final --------------------------------------

/// After logout the token is refused and the record is gone.
pub async fn logout_is_final(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    sessions
        .validate(token.expose())
        .await
        .expect("valid before logout");
    assert!(sessions
        .logout(token.expose())
        .await
        .expect("logout")
        .is_none());
    assert_gone(sessions.validate(token.expose()).await, "after logout");
    assert!(store.load(&session.id).await.expect("load").is_none());
    assert!(store
        .load_by_handle(&session.handle)
        .await
        .expect("load")
        .is_none());
}

/// Logging out twice, or with garbage, is not an error.
pub async fn logout_is_idempotent(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (token, _) = login(&sessions, alice()).await;
    sessions.logout(token.expose()).await.expect("first logout");
    sessions
        .logout(token.expose())
        .await
        .expect("second logout");
    sessions.logout("garbage").await.expect("garbage logout");
    sessions.logout("").await.expect("empty logout");
}

/// Ending a session by its public handle is as final as logout, still
/// finds it after a rotation, and respects the owner when one is given.
pub async fn end_by_handle_is_final(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    let (other, _) = login(&sessions, alice()).await;
    let rotated = sessions
        .rotate(token.expose(), crate::Rotation::Plain)
        .await
        .expect("rotate");
    let mallory = UserId::new("mallory");
    let refused = sessions
        .end_by_handle(&session.handle, Some(&mallory), Actor::Admin)
        .await
        .expect("end as someone else");
    assert!(refused.is_none(), "ended another user's session by handle");
    sessions
        .validate(rotated.token.expose())
        .await
        .expect("untouched by the wrong owner");
    let ended = sessions
        .end_by_handle(&session.handle, Some(&alice()), Actor::Admin)
        .await
        .expect("end");
    assert_eq!(ended.map(|s| s.handle), Some(session.handle));
    assert_gone(
        sessions.validate(rotated.token.expose()).await,
        "after end by handle",
    );
    sessions
        .validate(other.expose())
        .await
        .expect("the other session lives");
    let again = sessions
        .end_by_handle(&session.handle, None, Actor::Admin)
        .await
        .expect("end again");
    assert!(again.is_none());
}

/// Logout with a token that was rotated away (re-authentication, password
/// change, sign-out everywhere else, or a chain of them) ends the session
/// it was rotated into, and records it like any logout. The old token
/// never opens that session, ends nothing else, and a token from before a
/// login ends nothing after it.
pub async fn logout_with_a_rotated_token_ends_its_successor(store: Arc<dyn SessionStore>) {
    let clock = ManualClock::starting_now();
    let sessions = Sessions::with_clock(Arc::clone(&store), policy(), Arc::new(clock.clone()));
    #[cfg(feature = "audit")]
    let audit = AuditLog::new(Arc::new(MemoryStore::new()), crate::AuditEcho::Off);
    #[cfg(feature = "audit")]
    let sessions = sessions.with_audit(audit.clone());
    let (bystander, _) = login(&sessions, alice()).await;

    // Re-authentication, then a chain: every old token ends the newest.
    for depth in 1..=3 {
        let (first, session) = login(&sessions, alice()).await;
        let mut tokens = vec![first];
        for _ in 0..depth {
            let last = tokens.last().expect("a token");
            let issued = sessions
                .rotate(last.expose(), crate::Rotation::AfterPassword)
                .await
                .expect("rotate");
            tokens.push(issued.token);
        }
        let newest = tokens.pop().expect("the newest token");
        for old in &tokens {
            assert_gone(
                sessions.validate(old.expose()).await,
                "a rotated-away token",
            );
            assert!(store.load(&old.id()).await.expect("load").is_none());
            assert_eq!(
                store.successor(&old.id()).await.expect("successor"),
                Some(session.handle),
                "a rotated-away digest must lead to its session's handle"
            );
        }
        assert_eq!(
            store.successor(&newest.id()).await.expect("successor"),
            None,
            "the current token is no rotated-away one"
        );
        // The oldest after a single rotation, a middle one after a chain.
        let old = &tokens[tokens.len() / 2];
        assert!(sessions
            .logout(old.expose())
            .await
            .expect("logout")
            .is_none());
        assert_gone(
            sessions.validate(newest.expose()).await,
            "the successor after a logout with a rotated-away token",
        );
        assert!(store
            .load_by_handle(&session.handle)
            .await
            .expect("load")
            .is_none());
        #[cfg(feature = "audit")]
        {
            let events = audit
                .query(&AuditQuery {
                    kind: Some(AuditKind::Logout),
                    ..AuditQuery::default()
                })
                .await
                .expect("audit");
            assert!(
                events
                    .iter()
                    .any(|e| e.session == Some(session.handle) && e.user_id == Some(alice())),
                "the logout was not recorded"
            );
        }
        // Every token of the chain stays dead; logging out again is a no-op.
        for t in tokens.iter().chain([&newest]) {
            sessions.logout(t.expose()).await.expect("logout again");
            assert_gone(sessions.validate(t.expose()).await, "after the logout");
        }
    }

    sessions
        .validate(bystander.expose())
        .await
        .expect("the user's unrelated session lives");

    // A password change that ends the others, as the account page does.
    let (current, _) = login(&sessions, alice()).await;
    let (other, _) = login(&sessions, alice()).await;
    let changed = sessions
        .password_changed(current.expose(), true)
        .await
        .expect("password changed");
    assert_gone(sessions.validate(other.expose()).await, "another session");
    sessions.logout(current.expose()).await.expect("logout");
    assert_gone(
        sessions.validate(changed.token.expose()).await,
        "the session after a password change",
    );

    // Sign-out everywhere else: rotate without re-authentication, then end
    // the others (the gateway's end-others).
    let (current, _) = login(&sessions, alice()).await;
    let (other, _) = login(&sessions, alice()).await;
    let kept = sessions
        .rotate(current.expose(), crate::Rotation::Plain)
        .await
        .expect("rotate");
    sessions
        .end_all_for_user(&alice(), Some(&kept.session.id), Actor::User, "test")
        .await
        .expect("end others");
    assert_gone(sessions.validate(other.expose()).await, "another session");
    sessions.logout(current.expose()).await.expect("logout");
    assert_gone(
        sessions.validate(kept.token.expose()).await,
        "the session kept by sign-out everywhere else",
    );

    // A token presented at login (a planted one, say) ends nothing after it.
    let planted = sessions
        .create(NewSession::anonymous())
        .await
        .expect("anonymous session");
    let signed_in = sessions
        .login(Some(planted.token.expose()), NewSession::for_user(alice()))
        .await
        .expect("login");
    sessions
        .logout(planted.token.expose())
        .await
        .expect("logout with the planted token");
    sessions
        .validate(signed_in.token.expose())
        .await
        .expect("a pre-login token must not end the session after login");
}

/// A logout with a token racing a rotation of the same token: whichever
/// wins, once both have answered the session is gone under every token.
pub async fn logout_racing_a_rotation_ends_the_session(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    for _ in 0..20 {
        let (token, session) = login(&sessions, alice()).await;
        let rotating = {
            let (sessions, token) = (sessions.clone(), token.expose().to_owned());
            tokio::spawn(async move {
                sessions
                    .rotate(&token, crate::Rotation::AfterPassword)
                    .await
            })
        };
        let logging_out = {
            let (sessions, token) = (sessions.clone(), token.expose().to_owned());
            tokio::spawn(async move { sessions.logout(&token).await })
        };
        logging_out.await.expect("task").expect("logout");
        if let Ok(issued) = rotating.await.expect("task") {
            assert_gone(
                sessions.validate(issued.token.expose()).await,
                "the rotated token after a racing logout",
            );
        }
        assert_gone(sessions.validate(token.expose()).await, "the old token");
        assert!(store
            .load_by_handle(&session.handle)
            .await
            .expect("load")
            .is_none());
    }
}

// ---- Invariant 3: nothing resurrects a session -------------------------

/// Every conditional write against a removed session finds nothing and
/// creates nothing.
pub async fn writes_after_removal_change_nothing(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    sessions
        .end(token.expose(), Actor::Admin)
        .await
        .expect("end");
    clock.advance(TOUCH * 2);
    assert_nothing_finds(&store, &sessions, &session, clock.now()).await;
    assert!(store
        .list_for_user(&alice())
        .await
        .expect("list")
        .is_empty());
    assert_gone(sessions.validate(token.expose()).await, "after writes");
}

/// No read or write of the store or the engine finds `session` (ended
/// before `now`), and none brings it back.
async fn assert_nothing_finds(
    store: &Arc<dyn SessionStore>,
    sessions: &Sessions,
    session: &Session,
    now: Timestamp,
) {
    assert!(!store.touch(&session.id, now).await.expect("touch"));
    let mut data = SessionData::new();
    data.insert("k".into(), "v".into());
    assert_eq!(
        store
            .update_data(&session.id, session.generation, &data)
            .await
            .expect("update"),
        WriteOutcome::Missing
    );
    let new_id = SessionKeys::ephemeral()
        .issue(Timestamp::from_millis(0))
        .id();
    assert!(!store
        .rotate(&session.id, &new_id, Some(now))
        .await
        .expect("rotate"));
    assert!(store
        .remove_by_handle(&session.handle, None)
        .await
        .expect("remove by handle")
        .is_none());
    assert!(store.remove(&session.id).await.expect("remove").is_none());
    // Not even as expired: it ended before.
    for at in [now, now.plus(ABSOLUTE * 2)] {
        assert!(!store
            .remove_expired(&session.id, at)
            .await
            .expect("remove_expired"));
    }
    assert!(store.load(&session.id).await.expect("load").is_none());
    assert!(store.load(&new_id).await.expect("load").is_none());
    assert!(store
        .load_by_handle(&session.handle)
        .await
        .expect("load by handle")
        .is_none());
    assert!(matches!(
        sessions.set_data(session, data).await,
        Err(SessionError::NotFound)
    ));
}

/// A data write based on an old read loses against a newer write.
pub async fn stale_data_write_loses(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (token, read) = login(&sessions, alice()).await;
    let mut first = SessionData::new();
    first.insert("cart".into(), "1 apple".into());
    let written = sessions
        .set_data(&read, first.clone())
        .await
        .expect("first write");
    assert_eq!(written.generation, read.generation + 1);
    let mut second = SessionData::new();
    second.insert("cart".into(), "stale".into());
    assert!(matches!(
        sessions.set_data(&read, second).await,
        Err(SessionError::Conflict)
    ));
    let now = sessions.validate(token.expose()).await.expect("validate");
    assert_eq!(now.data, first);
}

/// Many requests touch and write a session while it is logged out: once
/// logout has answered, no request starting afterwards is accepted, and the
/// record stays gone after all of them finish.
pub async fn inflight_write_cannot_resurrect(store: Arc<dyn SessionStore>) {
    let policy = Policy::builder()
        .idle_timeout(IDLE)
        .absolute_lifetime(ABSOLUTE)
        .touch_interval(Duration::from_millis(1))
        .build()
        .expect("policy");
    let (sessions, clock) = engine(&store, policy);
    let (token, session) = login(&sessions, alice()).await;
    let token = Arc::new(token);
    let logged_out = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));
    let accepted_after = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..8u32 {
        let (sessions, clock, token) = (sessions.clone(), clock.clone(), Arc::clone(&token));
        let (logged_out, stop, writes) = (logged_out.clone(), stop.clone(), writes.clone());
        let (after, accepted_after, store) = (after.clone(), accepted_after.clone(), store.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let started_after = logged_out.load(Ordering::SeqCst);
                clock.advance(Duration::from_millis(2));
                if let Ok(s) = sessions.validate(token.expose()).await {
                    if started_after {
                        accepted_after.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut data = SessionData::new();
                    data.insert(format!("w{worker}"), i.to_string());
                    if sessions.set_data(&s, data).await.is_ok() {
                        writes.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let _ = store.touch(&token.id(), clock.now()).await;
                if started_after {
                    after.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    while writes.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sessions.logout(token.expose()).await.expect("logout");
    logged_out.store(true, Ordering::SeqCst);
    while after.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(
        accepted_after.load(Ordering::SeqCst),
        0,
        "a request that started after logout was accepted"
    );
    assert!(
        store.load(&session.id).await.expect("load").is_none(),
        "the session came back"
    );
    assert!(store
        .load_by_handle(&session.handle)
        .await
        .expect("load")
        .is_none());
    assert!(store
        .list_for_user(&alice())
        .await
        .expect("list")
        .is_empty());
    assert_gone(sessions.validate(token.expose()).await, "after the storm");
}

// ---- Invariant 5: the token rotates at privilege changes ---------------

/// Rotation keeps the session (handle, user, data) under a new token and
/// kills the old token at once.
pub async fn rotate_kills_old_token(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (old, before) = login(&sessions, alice()).await;
    // A data write between login and re-authentication must not block it.
    sessions
        .set_data(&before, SessionData::new())
        .await
        .expect("data write");
    clock.advance(Duration::from_secs(5));
    let issued = sessions
        .rotate(old.expose(), crate::Rotation::AfterPassword)
        .await
        .expect("rotate");
    assert_ne!(issued.token.expose(), old.expose());
    assert_ne!(issued.session.id, before.id);
    assert_eq!(issued.session.handle, before.handle);
    assert_eq!(issued.session.user_id, before.user_id);
    assert_eq!(issued.session.generation, before.generation + 2);
    assert_eq!(issued.session.auth_at, Some(clock.now()));
    assert_gone(
        sessions.validate(old.expose()).await,
        "old token after rotation",
    );
    let now = sessions
        .validate(issued.token.expose())
        .await
        .expect("new token");
    assert_eq!(now.auth_at, Some(clock.now()));
    assert!(store.load(&before.id).await.expect("load").is_none());
}

/// Concurrent rotations of one token: exactly one wins, and only its
/// token works afterwards.
pub async fn rotation_race_has_one_winner(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (old, _) = login(&sessions, alice()).await;
    let old = Arc::new(old);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (sessions, old) = (sessions.clone(), Arc::clone(&old));
            tokio::spawn(async move { sessions.rotate(old.expose(), crate::Rotation::Plain).await })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(issued) => winners.push(issued.token),
            Err(SessionError::NotFound | SessionError::Conflict) => {}
            Err(e) => panic!("unexpected rotation error {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation must win");
    assert_gone(sessions.validate(old.expose()).await, "old token");
    sessions
        .validate(winners[0].expose())
        .await
        .expect("winner's token");
    assert_eq!(store.list_for_user(&alice()).await.expect("list").len(), 1);
}

/// A token planted before login (session fixation) is worthless after it,
/// and of the planted session's data only allow-listed keys come along.
pub async fn login_discards_pre_login_token(store: Arc<dyn SessionStore>) {
    let policy = Policy::builder()
        .idle_timeout(IDLE)
        .absolute_lifetime(ABSOLUTE)
        .carry_on_login(vec!["cart".into()])
        .build()
        .expect("policy");
    let (sessions, _) = engine(&store, policy);
    let mut planted_data = SessionData::new();
    planted_data.insert("cart".into(), "2 pears".into());
    planted_data.insert("csrf".into(), "chosen by the attacker".into());
    let planted = sessions
        .create(NewSession::anonymous().data(planted_data))
        .await
        .expect("anonymous session");
    let issued = sessions
        .login(Some(planted.token.expose()), NewSession::for_user(alice()))
        .await
        .expect("login");
    assert_ne!(issued.token.expose(), planted.token.expose());
    assert_ne!(issued.session.handle, planted.session.handle);
    assert_gone(
        sessions.validate(planted.token.expose()).await,
        "planted token",
    );
    assert!(store
        .load(&planted.session.id)
        .await
        .expect("load")
        .is_none());
    assert_eq!(issued.session.user_id, Some(alice()));
    assert_eq!(
        issued.session.data.get("cart").map(String::as_str),
        Some("2 pears")
    );
    assert!(
        !issued.session.data.contains_key("csrf"),
        "planted data was carried"
    );

    // With the default policy nothing at all is carried.
    let (plain, _) = engine(&store, self::policy());
    let mut cart = SessionData::new();
    cart.insert("cart".into(), "1 fig".into());
    let planted = plain
        .create(NewSession::anonymous().data(cart))
        .await
        .expect("anonymous session");
    let issued = plain
        .login(Some(planted.token.expose()), NewSession::for_user(alice()))
        .await
        .expect("login");
    assert!(issued.session.data.is_empty());
    assert_gone(
        plain.validate(planted.token.expose()).await,
        "planted token",
    );
}

/// A password change rotates the current session (recording the fresh
/// authentication) and ends all the user's others.
pub async fn password_change_rotates_and_ends_others(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (current, before) = login(&sessions, alice()).await;
    let (other, _) = login(&sessions, alice()).await;
    let (bob, _) = login(&sessions, UserId::new("bob")).await;
    clock.advance(Duration::from_secs(10));
    let issued = sessions
        .password_changed(current.expose(), true)
        .await
        .expect("password changed");
    assert_eq!(issued.session.handle, before.handle);
    assert_eq!(issued.session.auth_at, Some(clock.now()));
    assert_gone(
        sessions.validate(current.expose()).await,
        "the pre-change token",
    );
    assert_gone(sessions.validate(other.expose()).await, "another session");
    sessions
        .validate(issued.token.expose())
        .await
        .expect("the rotated session");
    sessions
        .validate(bob.expose())
        .await
        .expect("another user's session");
}

/// Signing in over another user's session ends it and carries nothing.
pub async fn login_never_carries_another_users_data(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (bob_token, bob) = login(&sessions, UserId::new("bob")).await;
    let mut secret = SessionData::new();
    secret.insert("draft".into(), "bob's".into());
    sessions.set_data(&bob, secret).await.expect("set data");
    let issued = sessions
        .login(Some(bob_token.expose()), NewSession::for_user(alice()))
        .await
        .expect("login");
    assert!(issued.session.data.is_empty());
    assert_gone(sessions.validate(bob_token.expose()).await, "bob's token");
}

/// With `CarryData`, logout moves only the listed keys to a fresh anonymous
/// session under a new token; the old token stays dead.
pub async fn logout_carries_only_listed_data_under_new_token(store: Arc<dyn SessionStore>) {
    let policy = Policy::builder()
        .idle_timeout(IDLE)
        .absolute_lifetime(ABSOLUTE)
        .logout(LogoutBehavior::CarryData(vec!["cart".into()]))
        .build()
        .expect("policy");
    let (sessions, _) = engine(&store, policy);
    let (token, session) = login(&sessions, alice()).await;
    let mut data = SessionData::new();
    data.insert("cart".into(), "3 plums".into());
    data.insert("csrf".into(), "secret".into());
    sessions.set_data(&session, data).await.expect("set data");
    let carried = sessions
        .logout(token.expose())
        .await
        .expect("logout")
        .expect("a new anonymous session");
    assert_ne!(carried.token.expose(), token.expose());
    assert_ne!(carried.session.handle, session.handle);
    assert_eq!(carried.session.user_id, None);
    assert_eq!(carried.session.auth_at, None);
    assert_eq!(
        carried.session.data.get("cart").map(String::as_str),
        Some("3 plums")
    );
    assert!(!carried.session.data.contains_key("csrf"));
    assert_gone(sessions.validate(token.expose()).await, "old token");
    assert!(store
        .list_for_user(&alice())
        .await
        .expect("list")
        .is_empty());
    sessions
        .validate(carried.token.expose())
        .await
        .expect("anonymous session");
}

// ---- Expiry, by moving the clock ---------------------------------------

/// No activity for the idle timeout ends the session, and deletes it.
pub async fn idle_timeout_ends_session(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    clock.advance(IDLE - Duration::from_millis(1));
    sessions
        .validate(token.expose())
        .await
        .expect("just before the idle timeout");
    clock.advance(IDLE);
    match sessions.validate(token.expose()).await {
        Err(SessionError::Expired(crate::ExpiredBy::Idle)) => {}
        other => panic!("expected idle expiry, got {other:?}"),
    }
    assert!(store.load(&session.id).await.expect("load").is_none());
}

/// Requests keep resetting the idle timer.
pub async fn activity_keeps_session_alive(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (token, _) = login(&sessions, alice()).await;
    for _ in 0..10 {
        clock.advance(IDLE / 2);
        sessions
            .validate(token.expose())
            .await
            .expect("active session");
    }
}

/// However active, a session ends at its absolute lifetime.
pub async fn absolute_lifetime_ends_active_session(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    let mut elapsed = Duration::ZERO;
    while elapsed + IDLE / 2 < ABSOLUTE {
        clock.advance(IDLE / 2);
        elapsed += IDLE / 2;
        sessions
            .validate(token.expose())
            .await
            .expect("within the lifetime");
    }
    clock.set(session.created_at.plus(ABSOLUTE));
    match sessions.validate(token.expose()).await {
        Err(SessionError::Expired(crate::ExpiredBy::Absolute)) => {}
        other => panic!("expected absolute expiry, got {other:?}"),
    }
    assert!(store.load(&session.id).await.expect("load").is_none());
}

/// Shortening the policy applies to sessions created under the old one.
pub async fn stricter_policy_applies_to_existing_sessions(store: Arc<dyn SessionStore>) {
    let (lenient, clock) = engine(&store, policy());
    let (token, session) = login(&lenient, alice()).await;
    let strict = Policy::builder()
        .idle_timeout(Duration::from_secs(60))
        .absolute_lifetime(Duration::from_secs(600))
        .build()
        .expect("policy");
    // A restart with a stricter policy: same store, same token keys.
    let strict = Sessions::with_clock(Arc::clone(&store), strict, Arc::new(clock.clone()))
        .with_keys(Arc::clone(lenient.keys().await.expect("keys")));
    clock.advance(Duration::from_secs(61));
    assert_gone(
        strict.validate(token.expose()).await,
        "under the stricter idle timeout",
    );
    assert!(store.load(&session.id).await.expect("load").is_none());
}

/// Activity is written at most once per touch interval, and then it is.
pub async fn touch_is_throttled(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    clock.advance(TOUCH / 2);
    sessions.validate(token.expose()).await.expect("validate");
    let stored = store
        .load(&session.id)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        stored.last_seen_at, session.last_seen_at,
        "touched too early"
    );
    clock.advance(TOUCH);
    let seen = sessions.validate(token.expose()).await.expect("validate");
    assert_eq!(seen.last_seen_at, clock.now());
    let stored = store
        .load(&session.id)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        stored.last_seen_at,
        clock.now(),
        "not touched after the interval"
    );
}

/// A late, slow touch never moves `last_seen_at` back.
pub async fn touch_never_moves_backwards(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (_, session) = login(&sessions, alice()).await;
    let early = clock.now();
    clock.advance(TOUCH * 3);
    assert!(store.touch(&session.id, clock.now()).await.expect("touch"));
    assert!(store.touch(&session.id, early).await.expect("late touch"));
    let stored = store
        .load(&session.id)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(stored.last_seen_at, clock.now());
}

/// Deleting for expiry is decided on the store's own record: a session
/// another node kept alive is not deleted on a stale view.
pub async fn remove_expired_is_conditional(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    clock.advance(IDLE - TOUCH);
    // Another node records activity.
    assert!(store.touch(&session.id, clock.now()).await.expect("touch"));
    clock.advance(TOUCH * 2);
    // By the original record the session would be idle; by the store's it is not.
    assert!(!store
        .remove_expired(&session.id, clock.now())
        .await
        .expect("remove_expired"));
    sessions
        .validate(token.expose())
        .await
        .expect("still alive");
    clock.advance(IDLE);
    assert!(store
        .remove_expired(&session.id, clock.now())
        .await
        .expect("remove_expired"));
    assert!(store.load(&session.id).await.expect("load").is_none());
}

// ---- Per-user operations and purge -------------------------------------

/// Sign out everywhere ends all of a user's sessions but the kept one, and
/// no one else's.
pub async fn end_all_for_user_can_keep_current(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (a, current) = login(&sessions, alice()).await;
    let (b, _) = login(&sessions, alice()).await;
    let (c, _) = login(&sessions, alice()).await;
    let (bob, _) = login(&sessions, UserId::new("bob")).await;
    let ended = sessions
        .end_all_for_user(&alice(), Some(&current.id), Actor::User, "test")
        .await
        .expect("end others");
    assert_eq!(ended, 2);
    sessions
        .validate(a.expose())
        .await
        .expect("current session kept");
    assert_gone(sessions.validate(b.expose()).await, "other session b");
    assert_gone(sessions.validate(c.expose()).await, "other session c");
    sessions
        .validate(bob.expose())
        .await
        .expect("bob untouched");
    assert_eq!(
        sessions
            .end_all_for_user(&alice(), None, Actor::Admin, "test")
            .await
            .expect("end all"),
        1
    );
    assert_gone(sessions.validate(a.expose()).await, "current after end all");
    sessions
        .validate(bob.expose())
        .await
        .expect("bob still untouched");
}

/// After all of a user's sessions ended (one write on the SQL stores, the
/// records left for purge), no read or write finds them; sessions made
/// afterwards, the kept one, anonymous ones and other users' live on; a
/// later end takes the kept one too; purge clears the records.
pub async fn writes_after_ending_a_user_change_nothing(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (token, _) = login(&sessions, alice()).await;
    let (kept_token, kept) = login(&sessions, alice()).await;
    let (bob_token, _) = login(&sessions, UserId::new("bob")).await;
    let anonymous = sessions
        .create(NewSession::anonymous())
        .await
        .expect("anonymous session");
    // A digest rotated away before the end.
    let old_token = token.clone();
    let rotated = sessions
        .rotate(token.expose(), crate::Rotation::Plain)
        .await
        .expect("rotate");
    let (token, session) = (rotated.token, rotated.session);
    let ended = sessions
        .end_all_for_user(&alice(), Some(&kept.id), Actor::Admin, "test")
        .await
        .expect("end all");
    assert_eq!(ended, 1);

    clock.advance(TOUCH * 2);
    assert_nothing_finds(&store, &sessions, &session, clock.now()).await;
    assert_gone(sessions.validate(token.expose()).await, "an ended session");
    // Logout with the token from before the rotation follows the
    // successor pointer to the handle, and finds nothing there.
    let old_id = old_token.id();
    assert_eq!(
        store.successor(&old_id).await.expect("successor"),
        Some(session.handle)
    );
    sessions
        .logout(old_token.expose())
        .await
        .expect("logout with the rotated-away token");
    assert_gone(sessions.validate(token.expose()).await, "still ended");

    // What lives on.
    sessions
        .validate(kept_token.expose())
        .await
        .expect("the kept session");
    sessions
        .validate(bob_token.expose())
        .await
        .expect("another user's session");
    sessions
        .validate(anonymous.token.expose())
        .await
        .expect("an anonymous session");
    let (later_token, later) = login(&sessions, alice()).await;
    sessions
        .validate(later_token.expose())
        .await
        .expect("a session made after the end");
    let listed: Vec<SessionHandle> = sessions
        .list_for_user(&alice())
        .await
        .expect("list")
        .iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(listed.len(), 2, "only the kept and the later session");
    assert!(listed.contains(&kept.handle) && listed.contains(&later.handle));

    // A later end keeping the later session takes the kept one.
    assert_eq!(
        sessions
            .end_all_for_user(&alice(), Some(&later.id), Actor::User, "test")
            .await
            .expect("end all again"),
        1
    );
    assert_gone(
        sessions.validate(kept_token.expose()).await,
        "the once-kept session",
    );
    sessions
        .validate(later_token.expose())
        .await
        .expect("the session kept this time");

    // Purge takes every record once its deadline has passed.
    clock.advance(ABSOLUTE);
    while sessions.purge_expired(100).await.expect("purge") > 0 {}
    for user in [alice(), UserId::new("bob")] {
        assert!(store.list_for_user(&user).await.expect("list").is_empty());
    }
    // Nothing came back to life on the way.
    assert!(store.load(&session.id).await.expect("load").is_none());
}

/// Listing shows a user's live sessions, newest first, and nothing else.
pub async fn list_for_user_shows_only_own_live_sessions(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let (_, stale) = login(&sessions, alice()).await;
    clock.advance(IDLE);
    let (_, older) = login(&sessions, alice()).await;
    clock.advance(Duration::from_secs(1));
    let (_, newer) = login(&sessions, alice()).await;
    login(&sessions, UserId::new("bob")).await;
    sessions
        .create(NewSession::anonymous())
        .await
        .expect("anonymous");
    let listed: Vec<SessionHandle> = sessions
        .list_for_user(&alice())
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(listed, vec![newer.handle, older.handle]);
    assert!(!listed.contains(&stale.handle));
    assert!(sessions
        .list_for_user(&UserId::new("nobody"))
        .await
        .expect("list")
        .is_empty());
}

/// Purge deletes expired sessions in bounded batches until none are left,
/// and never a live one.
pub async fn purge_is_bounded_and_complete(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    for i in 0..25 {
        login(&sessions, UserId::new(format!("old{i}"))).await;
    }
    clock.advance(IDLE);
    let mut live = Vec::new();
    for _ in 0..5 {
        live.push(login(&sessions, alice()).await.0);
    }
    let mut batches = Vec::new();
    loop {
        let n = sessions.purge_expired(10).await.expect("purge");
        batches.push(n);
        if n < 10 {
            break;
        }
    }
    assert_eq!(batches, vec![10, 10, 5,]);
    assert_eq!(sessions.purge_expired(10).await.expect("purge"), 0);
    for token in &live {
        sessions
            .validate(token.expose())
            .await
            .expect("live session survived purge");
    }
}

/// Purges running at once on several nodes delete each session once.
pub async fn concurrent_purges_remove_each_session_once(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(&store, policy());
    let mut expired = HashSet::new();
    for i in 0..60 {
        expired.insert(login(&sessions, UserId::new(format!("u{i}"))).await.1.id);
    }
    clock.advance(IDLE);
    let now = clock.now();
    let purgers: Vec<_> = (0..3)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.purge_expired(now, 7).await.expect("purge");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let mut removed = Vec::new();
    for p in purgers {
        removed.extend(p.await.expect("purger"));
    }
    let unique: HashSet<_> = removed.iter().copied().collect();
    assert_eq!(unique.len(), removed.len(), "a session was purged twice");
    assert_eq!(unique, expired);
}

/// Data comes back as written; oversized data is refused and not written.
pub async fn session_data_round_trips_and_is_bounded(store: Arc<dyn SessionStore>) {
    let (sessions, _) = engine(&store, policy());
    let (token, session) = login(&sessions, alice()).await;
    let mut data = SessionData::new();
    data.insert("emoji".into(), "🍐 \"quoted\" \\ \n".into());
    data.insert("empty".into(), String::new());
    let written = sessions
        .set_data(&session, data.clone())
        .await
        .expect("write");
    let mut huge = SessionData::new();
    huge.insert(
        "blob".into(),
        "x".repeat(crate::session::MAX_DATA_BYTES + 1),
    );
    assert!(matches!(
        sessions.set_data(&written, huge).await,
        Err(SessionError::DataTooLarge)
    ));
    let loaded = sessions.validate(token.expose()).await.expect("validate");
    assert_eq!(loaded.data, data);
    assert_eq!(loaded.generation, written.generation);
}

// ---- Remember this device ------------------------------------------------

const DAY: Duration = Duration::from_secs(24 * 3600);
const REMEMBER: Duration = Duration::from_secs(30 * 24 * 3600);
const REMEMBER_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

fn remember_policy(remember: RememberDevice) -> Policy {
    Policy::builder()
        .idle_timeout(IDLE)
        .absolute_lifetime(ABSOLUTE)
        .touch_interval(TOUCH)
        .remember_device(Some(remember))
        .build()
        .expect("valid test policy")
}

async fn login_remembered(sessions: &Sessions, user: UserId) -> (SessionToken, Session) {
    let issued = sessions
        .login(None, NewSession::for_user(user).remember_device())
        .await
        .expect("login");
    (issued.token, issued.session)
}

/// The same store and keys under another policy: a restart with changed
/// settings.
async fn restarted(sessions: &Sessions, clock: &ManualClock, policy: Policy) -> Sessions {
    Sessions::with_clock(
        Arc::clone(sessions.store()),
        policy,
        Arc::new(clock.clone()),
    )
    .with_keys(Arc::clone(sessions.keys().await.expect("keys")))
}

/// A sign-in that asks to remember the device, under a policy that
/// remembers, gets a session with the longer lifetime and idle timeout
/// (stored, so every backend keeps them); it lives past the ordinary
/// lifetime, still ends at its own, and idles out at its own idle timeout.
/// Without asking, with the policy off, or without a user, a sign-in gets
/// an ordinary session.
pub async fn remembered_session_outlives_the_ordinary_lifetime(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(
        &store,
        remember_policy(RememberDevice::new(REMEMBER, REMEMBER_IDLE)),
    );
    let (token, session) = login_remembered(&sessions, alice()).await;
    assert_eq!(session.expires_at, session.created_at.plus(REMEMBER));
    assert_eq!(session.idle_timeout, REMEMBER_IDLE);
    assert!(session.is_remembered(sessions.policy()));
    let stored = store
        .load(&session.id)
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(stored, session, "the store keeps the remembered limits");
    let (ordinary, plain) = login(&sessions, alice()).await;
    assert!(!plain.is_remembered(sessions.policy()));
    let anonymous = sessions
        .create(NewSession::anonymous().remember_device())
        .await
        .expect("create");
    assert_eq!(
        anonymous.session.expires_at,
        anonymous.session.created_at.plus(ABSOLUTE)
    );

    // Active every 6 days (within the remembered idle timeout, far beyond
    // the ordinary one) until its own lifetime ends.
    clock.advance(ABSOLUTE + Duration::from_secs(1));
    sessions
        .validate(token.expose())
        .await
        .expect("remembered past the ordinary lifetime");
    assert_gone(
        sessions.validate(ordinary.expose()).await,
        "the ordinary session",
    );
    while clock.now().plus(6 * DAY) < session.expires_at {
        clock.advance(6 * DAY);
        sessions
            .validate(token.expose())
            .await
            .expect("within the remembered lifetime");
    }
    clock.set(session.expires_at);
    match sessions.validate(token.expose()).await {
        Err(SessionError::Expired(crate::ExpiredBy::Absolute)) => {}
        other => panic!("expected the remembered lifetime to end it, got {other:?}"),
    }
    assert!(store.load(&session.id).await.expect("load").is_none());

    let (idle, idle_session) = login_remembered(&sessions, alice()).await;
    clock.advance(REMEMBER_IDLE - TOUCH);
    sessions
        .validate(idle.expose())
        .await
        .expect("not idle yet");
    clock.advance(REMEMBER_IDLE);
    match sessions.validate(idle.expose()).await {
        Err(SessionError::Expired(crate::ExpiredBy::Idle)) => {}
        other => panic!("expected the remembered idle timeout to end it, got {other:?}"),
    }
    assert!(store.load(&idle_session.id).await.expect("load").is_none());

    let off = restarted(&sessions, &clock, policy()).await;
    let asked = off
        .login(None, NewSession::for_user(alice()).remember_device())
        .await
        .expect("login");
    assert_eq!(
        asked.session.expires_at,
        asked.session.created_at.plus(ABSOLUTE)
    );
    assert_eq!(asked.session.idle_timeout, IDLE);
    assert!(!asked.session.is_remembered(off.policy()));
}

/// An operator who turns remembering off, or shortens it, reaches the
/// sessions already remembered at their next check: they are held to the
/// new limits, and deleted.
pub async fn turning_remember_off_or_shorter_caps_remembered_sessions(
    store: Arc<dyn SessionStore>,
) {
    let (sessions, clock) = engine(
        &store,
        remember_policy(RememberDevice::new(REMEMBER, REMEMBER_IDLE)),
    );
    let (a, a_session) = login_remembered(&sessions, alice()).await;
    let (b, _) = login_remembered(&sessions, alice()).await;
    let (c, c_session) = login_remembered(&sessions, alice()).await;

    // Off: back to the ordinary lifetime and idle timeout.
    let off = restarted(&sessions, &clock, policy()).await;
    clock.advance(IDLE + Duration::from_secs(1));
    assert_gone(
        off.validate(a.expose()).await,
        "idle under the ordinary timeout",
    );
    assert!(store.load(&a_session.id).await.expect("load").is_none());
    sessions
        .validate(b.expose())
        .await
        .expect("the remembering policy still accepts it");

    // Shorter: 2 days, idle 1 day.
    let shorter = restarted(
        &sessions,
        &clock,
        remember_policy(RememberDevice::new(2 * DAY, DAY)),
    )
    .await;
    let mut seen = c_session.created_at;
    while seen.plus(DAY / 2) < c_session.created_at.plus(2 * DAY) {
        clock.set(seen.plus(DAY / 2));
        seen = clock.now();
        shorter
            .validate(c.expose())
            .await
            .expect("within the shortened lifetime");
    }
    clock.set(c_session.created_at.plus(2 * DAY));
    match shorter.validate(c.expose()).await {
        Err(SessionError::Expired(crate::ExpiredBy::Absolute)) => {}
        other => panic!("expected the shortened lifetime to end it, got {other:?}"),
    }
    assert!(store.load(&c_session.id).await.expect("load").is_none());
    clock.advance(DAY);
    assert_gone(
        shorter.validate(b.expose()).await,
        "past the shortened limits",
    );
}

/// Re-authentication and a password change rotate a remembered session
/// into one with the same limits: never a longer life, never a shorter one.
pub async fn rotation_keeps_the_remembered_lifetime(store: Arc<dyn SessionStore>) {
    let (sessions, clock) = engine(
        &store,
        remember_policy(RememberDevice::new(REMEMBER, REMEMBER_IDLE)),
    );
    let (token, session) = login_remembered(&sessions, alice()).await;
    clock.advance(DAY);
    let reauth = sessions
        .rotate(token.expose(), crate::Rotation::AfterPassword)
        .await
        .expect("re-authentication");
    clock.advance(DAY);
    let changed = sessions
        .password_changed(reauth.token.expose(), true)
        .await
        .expect("password change");
    for (what, rotated) in [
        ("re-authentication", &reauth),
        ("password change", &changed),
    ] {
        assert_eq!(rotated.session.expires_at, session.expires_at, "{what}");
        assert_eq!(rotated.session.idle_timeout, REMEMBER_IDLE, "{what}");
        assert!(rotated.session.is_remembered(sessions.policy()), "{what}");
    }
    let stored = store
        .load(&changed.session.id)
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(stored.expires_at, session.expires_at);
    assert_eq!(stored.idle_timeout, REMEMBER_IDLE);
    assert!(
        stored.remembered,
        "the store kept the flag through rotation"
    );
    assert_gone(sessions.validate(token.expose()).await, "the first token");
    while clock.now().plus(6 * DAY) < session.expires_at {
        clock.advance(6 * DAY);
        sessions
            .validate(changed.token.expose())
            .await
            .expect("the rotated token, within the remembered lifetime");
    }
    clock.set(session.expires_at.minus(Duration::from_secs(1)));
    sessions
        .validate(changed.token.expose())
        .await
        .expect("the rotated token, a second before the remembered lifetime ends");
    clock.set(session.expires_at);
    assert_gone(
        sessions.validate(changed.token.expose()).await,
        "the rotated token at the original expiry",
    );
}

/// Every way a session ends ends a remembered one too: logout (also with a
/// token from before a rotation), an end by token or handle, signing out
/// everywhere (also how disabling an account and an admin's end-all work),
/// a password change elsewhere, the per-user limit, and a sign-in over it.
pub async fn every_end_ends_a_remembered_session(store: Arc<dyn SessionStore>) {
    let remember = RememberDevice::new(REMEMBER, REMEMBER_IDLE);
    let (sessions, clock) = engine(&store, remember_policy(remember));
    let mut ends: Vec<(&str, SessionToken)> = Vec::new();

    let (t, _) = login_remembered(&sessions, alice()).await;
    sessions.logout(t.expose()).await.expect("logout");
    ends.push(("logout", t));

    let (t, _) = login_remembered(&sessions, alice()).await;
    let rotated = sessions
        .rotate(t.expose(), crate::Rotation::AfterPassword)
        .await
        .expect("rotate");
    sessions.logout(t.expose()).await.expect("logout");
    ends.push(("logout with a rotated-away token", rotated.token));

    let (t, _) = login_remembered(&sessions, alice()).await;
    assert!(sessions.end(t.expose(), Actor::Admin).await.expect("end"));
    ends.push(("end by token", t));

    let (t, s) = login_remembered(&sessions, alice()).await;
    let ended = sessions
        .end_by_handle(&s.handle, Some(&alice()), Actor::User)
        .await
        .expect("end by handle");
    assert!(ended.is_some());
    ends.push(("end by handle", t));

    let (t, _) = login_remembered(&sessions, alice()).await;
    let (kept, kept_session) = login(&sessions, alice()).await;
    sessions
        .end_all_for_user(&alice(), Some(&kept_session.id), Actor::User, "test")
        .await
        .expect("sign out everywhere else");
    ends.push(("sign out everywhere else", t));

    let (t, _) = login_remembered(&sessions, alice()).await;
    sessions
        .end_all_for_user(&alice(), None, Actor::Admin, "user_disabled")
        .await
        .expect("end all");
    ends.push(("end all (disable, admin)", t));
    assert_gone(
        sessions.validate(kept.expose()).await,
        "the kept session after end all",
    );

    let (t, _) = login_remembered(&sessions, alice()).await;
    let (changer, _) = login(&sessions, alice()).await;
    let changed = sessions
        .password_changed(changer.expose(), true)
        .await
        .expect("password change");
    ends.push(("a password change elsewhere", t));

    let (t, _) = login_remembered(&sessions, alice()).await;
    let again = sessions
        .login(
            Some(t.expose()),
            NewSession::for_user(alice()).remember_device(),
        )
        .await
        .expect("sign in over it");
    ends.push(("a sign-in over it", t));

    for (what, token) in &ends {
        assert_gone(sessions.validate(token.expose()).await, what);
    }
    // The control: a remembered session nobody ended lives on, past the
    // ordinary lifetime.
    clock.advance(ABSOLUTE + Duration::from_secs(1));
    sessions
        .validate(again.token.expose())
        .await
        .expect("the remembered session signed in over the old one");
    assert_gone(
        sessions.validate(changed.token.expose()).await,
        "the ordinary session of the password change",
    );

    // The per-user limit ends the oldest, remembered or not.
    let limited = restarted(
        &sessions,
        &clock,
        Policy::builder()
            .idle_timeout(IDLE)
            .absolute_lifetime(ABSOLUTE)
            .touch_interval(TOUCH)
            .remember_device(Some(remember))
            .max_sessions_per_user(Some(1))
            .build()
            .expect("policy"),
    )
    .await;
    let bob = UserId::new("bob");
    let (oldest, _) = login_remembered(&limited, bob.clone()).await;
    clock.advance(Duration::from_secs(1));
    let (newest, _) = login_remembered(&limited, bob).await;
    assert_gone(
        limited.validate(oldest.expose()).await,
        "beyond the per-user limit",
    );
    limited.validate(newest.expose()).await.expect("the newest");
}

// ---- User stores -------------------------------------------------------------

/// The checks every [`UserStore`] must pass, each on a fresh, empty store;
/// call it from one `#[tokio::test]` per backend. Session stores and user
/// stores are separate traits, so this is not part of
/// [`session_store_conformance!`](crate::session_store_conformance).
#[cfg(feature = "accounts")]
pub async fn user_store_conformance(users: Arc<dyn UserStore>) {
    user_groups_change_only_from_what_was_read(users).await;
}

/// [`UserStore::replace_groups`] is a compare-and-set: it changes a user's
/// groups only from the list it was told to expect, touches nothing else
/// of the user nor anyone else, and never creates a user.
#[cfg(feature = "accounts")]
pub async fn user_groups_change_only_from_what_was_read(users: Arc<dyn UserStore>) {
    let groups = |list: &[&str]| list.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>();
    let user = |id: &str, name: &str, list: &[&str]| User {
        id: UserId::new(id),
        name: name.to_owned(),
        password_hash: format!("$argon2id$hash-of-{id}"),
        disabled: false,
        groups: groups(list),
        created_at: Timestamp::from_millis(1_700_000_000_000),
    };
    let alice = user("u-alice", "alice", &["admins", "ops:eu-1"]);
    let bob = user("u-bob", "bob", &["admins"]);
    users.insert_user(&alice).await.expect("insert alice");
    users.insert_user(&bob).await.expect("insert bob");
    let read = |id: UserId| {
        let users = Arc::clone(&users);
        async move {
            users
                .user_by_id(&id)
                .await
                .expect("read a user")
                .expect("the user exists")
        }
    };

    // From a list that is not the stored one: nothing changes.
    for stale in [groups(&["admins"]), groups(&[]), groups(&["ops:eu-1"])] {
        assert!(
            !users
                .replace_groups(&alice.id, &stale, &groups(&["staff"]))
                .await
                .expect("replace_groups"),
            "replaced groups expected to be {stale:?}"
        );
    }
    assert_eq!(read(alice.id.clone()).await, alice);

    // From the stored list: replaced, and nothing else of the user changes.
    assert!(users
        .replace_groups(&alice.id, &alice.groups, &groups(&["ops:eu-1", "staff"]))
        .await
        .expect("replace_groups"));
    let changed = read(alice.id.clone()).await;
    assert_eq!(
        changed,
        User {
            groups: groups(&["ops:eu-1", "staff"]),
            ..alice.clone()
        }
    );
    assert_eq!(
        users
            .user_by_name("alice")
            .await
            .expect("by name")
            .expect("alice")
            .groups,
        ["ops:eu-1", "staff"]
    );
    // The old list is stale now: a second writer that read it loses.
    assert!(!users
        .replace_groups(&alice.id, &alice.groups, &groups(&["admins"]))
        .await
        .expect("replace_groups"));

    // Down to no group, and back from none.
    assert!(users
        .replace_groups(&alice.id, &changed.groups, &[])
        .await
        .expect("replace_groups"));
    assert!(read(alice.id.clone()).await.groups.is_empty());
    assert!(users
        .replace_groups(&alice.id, &[], &groups(&["admins"]))
        .await
        .expect("replace_groups"));
    assert_eq!(read(alice.id.clone()).await.groups, ["admins"]);

    // Another user is untouched; an unknown user is not created.
    assert_eq!(read(bob.id.clone()).await, bob);
    let ghost = UserId::new("u-ghost");
    assert!(!users
        .replace_groups(&ghost, &[], &groups(&["admins"]))
        .await
        .expect("replace_groups"));
    assert_eq!(users.user_by_id(&ghost).await.expect("read"), None);
}
