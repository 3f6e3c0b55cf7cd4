//! The engine's side of the audit trail and of the per-user session limit:
//! every end of a session is recorded once, with who ended it and why.
#![cfg(all(feature = "sqlite", feature = "accounts", feature = "audit"))]

use std::sync::Arc;
use std::time::Duration;

use signoff::{
    Actor, AuditKind, AuditLog, AuditQuery, AuditStore, ManualClock, MemoryStore, NewSession,
    Policy, SessionError, Sessions, SqliteStore, UserId,
};

fn alice() -> UserId {
    UserId::new("alice")
}

fn engine(policy: Policy) -> (Sessions, Arc<MemoryStore>, ManualClock) {
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::starting_now();
    let sessions = Sessions::with_clock(store.clone(), policy, Arc::new(clock.clone()))
        .with_audit(AuditLog::new(store.clone(), signoff::AuditEcho::Off));
    (sessions, store, clock)
}

async fn events(store: &dyn AuditStore) -> Vec<signoff::AuditEvent> {
    let mut e = store.query(&AuditQuery::default()).await.unwrap();
    e.reverse();
    e
}

#[tokio::test]
async fn the_limit_ends_the_oldest_and_records_it() {
    let policy = Policy::builder()
        .max_sessions_per_user(Some(2))
        .build()
        .unwrap();
    let (sessions, store, clock) = engine(policy);
    let login = || sessions.login(None, NewSession::for_user(alice()));
    let first = login().await.unwrap();
    clock.advance(Duration::from_millis(5));
    let second = login().await.unwrap();
    clock.advance(Duration::from_millis(5));
    let bob = sessions
        .login(None, NewSession::for_user(UserId::new("bob")))
        .await
        .unwrap();
    // Same millisecond as `second`'s successor: the new one is never the
    // one ended, whatever the clock says.
    let third = login().await.unwrap();
    assert!(matches!(
        sessions.validate(first.token.expose()).await,
        Err(SessionError::NotFound)
    ));
    for live in [&second, &third, &bob] {
        sessions.validate(live.token.expose()).await.unwrap();
    }
    let e = events(store.as_ref()).await;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].kind, AuditKind::SessionEnded);
    assert_eq!(e[0].by, Some(Actor::Policy));
    assert_eq!(e[0].reason.as_deref(), Some("max_sessions"));
    assert_eq!(e[0].session, Some(first.session.handle));
    // A burst in one millisecond: no sign-in ever ends its own session.
    for _ in 0..5 {
        let s = login().await.unwrap();
        sessions.validate(s.token.expose()).await.unwrap();
    }
    // The next millisecond's sign-in brings the count back to the limit.
    clock.advance(Duration::from_millis(1));
    let last = login().await.unwrap();
    assert_eq!(sessions.list_for_user(&alice()).await.unwrap().len(), 2);
    sessions.validate(last.token.expose()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sign_ins_at_once_cannot_end_each_other() {
    let policy = Policy::builder()
        .max_sessions_per_user(Some(1))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("l.db")).await.unwrap());
    let sessions = Sessions::new(store, policy);
    for round in 0..20 {
        let user = UserId::new(format!("user{round}"));
        let (a, b) = tokio::join!(
            sessions.login(None, NewSession::for_user(user.clone())),
            sessions.login(None, NewSession::for_user(user.clone())),
        );
        a.unwrap();
        b.unwrap();
        let left = sessions.list_for_user(&user).await.unwrap();
        // Never none; one over the limit when neither saw the other yet,
        // until the user's next sign-in.
        assert!(
            (1..=2).contains(&left.len()),
            "round {round}: {} sessions left",
            left.len()
        );
    }
}

#[tokio::test]
async fn a_limit_of_zero_is_refused() {
    assert!(Policy::builder()
        .max_sessions_per_user(Some(0))
        .build()
        .is_err());
    assert!(Policy::builder()
        .recent_auth(Duration::ZERO)
        .build()
        .is_err());
}

#[tokio::test]
async fn expiry_is_recorded_once_even_when_requests_race() {
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (sessions, store, clock) = engine(policy);
    let s = sessions
        .login(None, NewSession::for_user(alice()))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(61));
    let token = s.token.expose();
    let results = futures_join(
        sessions.validate(token),
        sessions.validate(token),
        sessions.validate(token),
    )
    .await;
    assert!(results.iter().all(Result::is_err));
    let e = events(store.as_ref()).await;
    let ended: Vec<_> = e
        .iter()
        .filter(|e| e.kind == AuditKind::SessionEnded)
        .collect();
    assert_eq!(ended.len(), 1, "{e:?}");
    assert_eq!(ended[0].by, Some(Actor::Timeout));
    assert_eq!(ended[0].reason.as_deref(), Some("idle"));
    assert_eq!(ended[0].user_id, Some(alice()));
}

async fn futures_join<T>(
    a: impl std::future::Future<Output = T>,
    b: impl std::future::Future<Output = T>,
    c: impl std::future::Future<Output = T>,
) -> Vec<T> {
    let (a, b, c) = tokio::join!(a, b, c);
    vec![a, b, c]
}

/// Kind, actor, reason, count.
type Row = (AuditKind, Option<Actor>, Option<String>, Option<u64>);

#[tokio::test]
async fn each_way_of_ending_records_who_and_how_many() {
    let (sessions, store, clock) = engine(Policy::default());
    let login = || sessions.login(None, NewSession::for_user(alice()));
    let a = login().await.unwrap();
    let b = login().await.unwrap();
    let c = login().await.unwrap();
    sessions.logout(a.token.expose()).await.unwrap();
    sessions.logout(a.token.expose()).await.unwrap(); // already gone: no event
    sessions
        .end_by_handle(
            &b.session.handle,
            Some(&UserId::new("mallory")),
            Actor::User,
        )
        .await
        .unwrap(); // not mallory's: nothing ended, no event
    sessions
        .end_by_handle(&b.session.handle, None, Actor::Admin)
        .await
        .unwrap();
    sessions
        .end(c.token.expose(), Actor::Operator)
        .await
        .unwrap();
    let d = login().await.unwrap();
    let _e = login().await.unwrap();
    let kept = sessions
        .password_changed(d.token.expose(), true)
        .await
        .unwrap();
    let n = sessions
        .end_all_for_user(&alice(), None, Actor::Admin, "admin")
        .await
        .unwrap();
    assert_eq!(n, 1);
    sessions.validate(kept.token.expose()).await.unwrap_err();
    // Purge: a batch of expired anonymous sessions is one event.
    for _ in 0..3 {
        sessions.create(NewSession::anonymous()).await.unwrap();
    }
    clock.advance(Duration::from_secs(13 * 3600));
    assert_eq!(sessions.purge_expired(100).await.unwrap(), 3);
    assert_eq!(sessions.purge_expired(100).await.unwrap(), 0);

    let got: Vec<Row> = events(store.as_ref())
        .await
        .into_iter()
        .map(|e| (e.kind, e.by, e.reason, e.count))
        .collect();
    let s = |r: &str| Some(r.to_owned());
    assert_eq!(
        got,
        vec![
            (AuditKind::Logout, Some(Actor::User), None, None),
            (
                AuditKind::SessionEnded,
                Some(Actor::Admin),
                s("ended"),
                Some(1)
            ),
            (
                AuditKind::SessionEnded,
                Some(Actor::Operator),
                s("ended"),
                Some(1)
            ),
            (
                AuditKind::SessionEnded,
                Some(Actor::User),
                s("password_change"),
                Some(1)
            ),
            (
                AuditKind::SessionEnded,
                Some(Actor::Admin),
                s("admin"),
                Some(1)
            ),
            (
                AuditKind::SessionEnded,
                Some(Actor::Timeout),
                s("purge"),
                Some(3)
            ),
        ]
    );
}

#[tokio::test]
async fn recent_auth_follows_the_policy_and_reauthentication() {
    let policy = Policy::builder()
        .recent_auth(Duration::from_secs(60))
        .build()
        .unwrap();
    let (sessions, _store, clock) = engine(policy);
    let s = sessions
        .login(None, NewSession::for_user(alice()))
        .await
        .unwrap();
    assert!(sessions.is_recent_auth(&s.session));
    clock.advance(Duration::from_secs(60));
    let seen = sessions.validate(s.token.expose()).await.unwrap();
    assert!(!sessions.is_recent_auth(&seen));
    let plain = sessions
        .rotate(s.token.expose(), signoff::Rotation::Plain)
        .await
        .unwrap();
    assert!(
        !sessions.is_recent_auth(&plain.session),
        "a plain rotation is no proof"
    );
    let proved = sessions
        .rotate(plain.token.expose(), signoff::Rotation::AfterPassword)
        .await
        .unwrap();
    let seen = sessions.validate(proved.token.expose()).await.unwrap();
    assert!(sessions.is_recent_auth(&seen));
    let anonymous = sessions.create(NewSession::anonymous()).await.unwrap();
    assert!(!sessions.is_recent_auth(&anonymous.session));
}

#[tokio::test]
async fn sqlite_keeps_filters_and_purges_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("a.db")).await.unwrap());
    let accounts = signoff::Accounts::new(store.clone(), signoff::Passwords::new());
    let user = accounts
        .add_user("alice", "correct horse battery")
        .await
        .unwrap();
    let log = AuditLog::new(store.clone(), signoff::AuditEcho::Off);
    let t = signoff::Timestamp::from_millis;
    let handle = signoff::SessionHandle::generate();
    log.record(
        signoff::AuditEvent::new(AuditKind::LoginSucceeded, t(1_000))
            .user(Some(&user.id), None)
            .session(&handle)
            .by(Actor::User)
            .ip("192.0.2.1"),
    )
    .await;
    log.record(signoff::AuditEvent::new(AuditKind::LoginFailed, t(2_000)).reason("unknown_user"))
        .await;
    log.record(
        signoff::AuditEvent::new(AuditKind::SessionEnded, t(3_000))
            .user(Some(&user.id), Some("alice"))
            .by(Actor::Admin)
            .count(4),
    )
    .await;
    let all = log.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].kind, AuditKind::SessionEnded, "newest first");
    assert_eq!(all[0].count, Some(4));
    assert_eq!(
        all[2].user_name.as_deref(),
        Some("alice"),
        "the name is filled in"
    );
    assert_eq!(all[2].session, Some(handle));
    assert_eq!(all[2].ip.as_deref(), Some("192.0.2.1"));
    let mine = log
        .query(&AuditQuery {
            user_id: Some(user.id.clone()),
            since: Some(t(1_500)),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    let failed = log
        .query(&AuditQuery {
            kind: Some(AuditKind::LoginFailed),
            limit: Some(10),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(log.purge_before(t(2_500)).await.unwrap(), 2);
    assert_eq!(log.query(&AuditQuery::default()).await.unwrap().len(), 1);
}
