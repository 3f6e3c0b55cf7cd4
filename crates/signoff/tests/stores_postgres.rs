//! The PostgreSQL store's users, audit trail and revocation bus.
//!
//! Needs a PostgreSQL server: `SIGNOFF_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test runs in a fresh
//! schema, dropped afterwards.
#![cfg(all(feature = "postgres", feature = "accounts", feature = "audit"))]

use std::time::Duration;

use signoff::revocation::{invalidation_payload, user_end_payload, RevocationBus};
use signoff::{
    Actor, AuditEvent, AuditKind, AuditQuery, AuditStore, PostgresOptions, PostgresStore, Session,
    SessionData, SessionHandle, SessionStore, StoreError, Timestamp, User, UserId, UserStore,
    WriteOutcome,
};

mod support;
use support::next_within;
use support::postgres::{fresh, postgres_url, store_in};

fn user(id: &str, name: &str) -> User {
    User {
        id: UserId::new(id),
        name: name.to_owned(),
        password_hash: format!("$argon2id$hash-of-{id}"),
        disabled: false,
        // Groups come back as they went in.
        groups: vec!["admins".to_owned(), "ops:eu-1".to_owned()],
        created_at: Timestamp::from_millis(1_700_000_000_000),
    }
}

fn session(user: &str) -> Session {
    let now = Timestamp::from_millis(1_700_000_000_000);
    Session {
        id: signoff::SessionKeys::ephemeral()
            .issue(Timestamp::from_millis(0))
            .id(),
        handle: SessionHandle::generate(),
        user_id: Some(UserId::new(user)),
        created_at: now,
        last_seen_at: now,
        auth_at: Some(now),
        expires_at: Timestamp::from_millis(now.as_millis() + 3_600_000),
        idle_timeout: Duration::from_secs(600),
        user_agent: Some("test".to_owned()),
        ip: None,
        data: SessionData::new(),
        generation: 0,
        remembered: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_round_trip_and_writes_are_conditional() {
    let (store, _guard) = fresh().await;
    let alice = user("u1", "alice");
    store.insert_user(&alice).await.unwrap();
    store.insert_user(&user("u2", "bob")).await.unwrap();
    store.insert_user(&user("u3", "Carol")).await.unwrap();

    // Neither a taken name nor a taken id goes in.
    assert!(matches!(
        store.insert_user(&user("u9", "alice")).await,
        Err(StoreError::Duplicate)
    ));
    assert!(matches!(
        store.insert_user(&user("u1", "alicia")).await,
        Err(StoreError::Duplicate)
    ));

    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_id(&UserId::new("u1")).await.unwrap(),
        Some(alice)
    );
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);
    assert_eq!(store.user_by_id(&UserId::new("u9")).await.unwrap(), None);

    let u1 = UserId::new("u1");
    assert!(store.set_password_hash(&u1, "$argon2id$new").await.unwrap());
    assert!(!store
        .set_password_hash(&UserId::new("u9"), "$argon2id$x")
        .await
        .unwrap());
    // Replacement only from the expected hash.
    assert!(!store
        .replace_password_hash(&u1, "$argon2id$hash-of-u1", "$argon2id$rehash")
        .await
        .unwrap());
    assert_eq!(
        store.user_by_id(&u1).await.unwrap().unwrap().password_hash,
        "$argon2id$new"
    );
    assert!(store
        .replace_password_hash(&u1, "$argon2id$new", "$argon2id$rehash")
        .await
        .unwrap());
    assert_eq!(
        store.user_by_id(&u1).await.unwrap().unwrap().password_hash,
        "$argon2id$rehash"
    );

    assert!(store.set_disabled(&u1, true).await.unwrap());
    assert!(store.user_by_id(&u1).await.unwrap().unwrap().disabled);
    assert!(store.set_disabled(&u1, false).await.unwrap());
    assert!(!store.user_by_id(&u1).await.unwrap().unwrap().disabled);
    assert!(!store.set_disabled(&UserId::new("u9"), true).await.unwrap());

    // By name, in byte order as SQLite sorts.
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["Carol", "alice", "bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_appends_filters_and_purges() {
    let (store, _guard) = fresh().await;
    store.insert_user(&user("u1", "alice")).await.unwrap();
    let handle = SessionHandle::generate();
    let at = Timestamp::from_millis;
    let u1 = UserId::new("u1");
    let u2 = UserId::new("u2");
    let events = [
        AuditEvent::new(AuditKind::LoginSucceeded, at(100))
            .user(Some(&u1), None)
            .session(&handle)
            .by(Actor::User)
            .ip("192.0.2.1"),
        AuditEvent::new(AuditKind::LoginFailed, at(200))
            .user(Some(&u2), Some("bob"))
            .reason("wrong_password"),
        AuditEvent::new(AuditKind::SessionEnded, at(300))
            .user(Some(&u1), Some("alice-then"))
            .by(Actor::Admin)
            .count(3),
        AuditEvent::new(AuditKind::Logout, at(400)).user(Some(&u1), None),
    ];
    for e in &events {
        store.append(e).await.unwrap();
    }

    let all = store.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 4);
    // Newest first, seq assigned in order.
    let kinds: Vec<AuditKind> = all.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::Logout,
            AuditKind::SessionEnded,
            AuditKind::LoginFailed,
            AuditKind::LoginSucceeded
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
    // Every field comes back; a missing name is filled in from users, a
    // recorded one is kept.
    let first = &all[3];
    let mut expected = events[0].clone();
    expected.seq = first.seq;
    expected.user_name = Some("alice".to_owned());
    assert_eq!(first, &expected);
    assert_eq!(all[1].user_name.as_deref(), Some("alice-then"));
    assert_eq!(all[1].count, Some(3));
    assert_eq!(all[1].by, Some(Actor::Admin));
    assert_eq!(all[2].user_name.as_deref(), Some("bob"));
    assert_eq!(all[2].reason.as_deref(), Some("wrong_password"));

    let query = |user: Option<&UserId>, since: Option<i64>, kind, limit| AuditQuery {
        user_id: user.cloned(),
        since: since.map(at),
        kind,
        limit,
    };
    let seen = |events: Vec<AuditEvent>| events.into_iter().map(|e| e.at).collect::<Vec<_>>();
    assert_eq!(
        seen(
            store
                .query(&query(Some(&u1), None, None, None))
                .await
                .unwrap()
        ),
        [at(400), at(300), at(100)]
    );
    assert_eq!(
        seen(
            store
                .query(&query(None, Some(200), None, None))
                .await
                .unwrap()
        ),
        [at(400), at(300), at(200)]
    );
    assert_eq!(
        seen(
            store
                .query(&query(None, None, Some(AuditKind::LoginFailed), None))
                .await
                .unwrap()
        ),
        [at(200)]
    );
    assert_eq!(
        seen(
            store
                .query(&query(None, None, None, Some(2)))
                .await
                .unwrap()
        ),
        [at(400), at(300)]
    );
    assert_eq!(
        seen(
            store
                .query(&query(
                    Some(&u1),
                    Some(150),
                    Some(AuditKind::Logout),
                    Some(5)
                ))
                .await
                .unwrap()
        ),
        [at(400)]
    );

    assert_eq!(store.purge_before(at(300)).await.unwrap(), 2);
    assert_eq!(
        seen(store.query(&AuditQuery::default()).await.unwrap()),
        [at(400), at(300)]
    );
    assert_eq!(store.purge_before(at(300)).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_announce_changes_but_touches_do_not() {
    let (store, _guard) = fresh().await;
    let mut sub = store.subscribe().await.unwrap();
    let second = Duration::from_secs(1);
    let quiet = Duration::from_millis(300);

    let a = session("alice");
    store.insert(&a).await.unwrap();
    assert_eq!(
        next_within(&mut sub, quiet).await,
        None,
        "insert announces nothing"
    );

    // A touch moves last_seen_at only: nothing to announce.
    let later = Timestamp::from_millis(a.last_seen_at.as_millis() + 1000);
    assert!(store.touch(&a.id, later).await.unwrap());
    assert_eq!(
        next_within(&mut sub, quiet).await,
        None,
        "touch must not announce"
    );

    // A data write announces the (unchanged) digest.
    let mut data = SessionData::new();
    data.insert("theme".to_owned(), "dark".to_owned());
    assert_eq!(
        store.update_data(&a.id, 0, &data).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        next_within(&mut sub, second).await,
        Some(invalidation_payload(&a.id))
    );
    // A stale data write changes nothing and announces nothing.
    assert_eq!(
        store.update_data(&a.id, 0, &data).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(next_within(&mut sub, quiet).await, None, "stale write");

    // A rotation announces the old digest.
    let rotated = signoff::SessionKeys::ephemeral()
        .issue(Timestamp::from_millis(0))
        .id();
    assert!(store.rotate(&a.id, &rotated, None).await.unwrap());
    assert_eq!(
        next_within(&mut sub, second).await,
        Some(invalidation_payload(&a.id))
    );

    // A removal announces the digest it removed.
    let removed = store.remove(&rotated).await.unwrap().expect("removed");
    assert_eq!(removed.generation, 2);
    assert_eq!(
        next_within(&mut sub, second).await,
        Some(invalidation_payload(&rotated))
    );
    // Removing nothing announces nothing.
    assert!(store.remove(&rotated).await.unwrap().is_none());
    assert_eq!(next_within(&mut sub, quiet).await, None, "nothing removed");

    // Ending all of a user's sessions is one write, announced once for
    // the user, whatever their count.
    let b = session("bob");
    let c = session("bob");
    store.insert(&b).await.unwrap();
    store.insert(&c).await.unwrap();
    assert_eq!(
        store.end_for_user(&UserId::new("bob"), None).await.unwrap(),
        2
    );
    assert_eq!(
        next_within(&mut sub, second).await,
        Some(user_end_payload(&UserId::new("bob")))
    );
    assert_eq!(next_within(&mut sub, quiet).await, None, "one announcement");
    // Keeping one: the same single announcement.
    let d = session("bob");
    let e = session("bob");
    store.insert(&d).await.unwrap();
    store.insert(&e).await.unwrap();
    assert_eq!(
        store
            .end_for_user(&UserId::new("bob"), Some(&e.id))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        next_within(&mut sub, second).await,
        Some(user_end_payload(&UserId::new("bob")))
    );
    assert_eq!(next_within(&mut sub, quiet).await, None, "one announcement");
    assert!(store.load(&d.id).await.unwrap().is_none());
    assert_eq!(store.load(&e.id).await.unwrap().map(|s| s.id), Some(e.id));
}

/// A write that waits for the row lock of the session an end keeps (the
/// end's transaction moves it to the new counter) still finds it alive
/// once the end commits: a logout racing "sign out everywhere else" ends
/// the kept session, and a touch lands. The end's statements are run by
/// hand here to hold its transaction open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_waiting_for_the_kept_session_still_find_it() {
    let (store, _guard) = fresh().await;
    for write in ["remove by handle", "touch"] {
        let kept = session("alice");
        let ended = session("alice");
        store.insert(&kept).await.unwrap();
        store.insert(&ended).await.unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query(
            "INSERT INTO user_ends (user_id, epoch) VALUES ($1, 1) \
             ON CONFLICT (user_id) DO UPDATE SET epoch = user_ends.epoch + 1",
        )
        .bind("alice")
        .execute(&mut *tx)
        .await
        .unwrap();
        let moved = sqlx::query("UPDATE sessions SET user_epoch = user_epoch + 1 WHERE id = $1")
            .bind(kept.id.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(moved.rows_affected(), 1);
        let waiting = tokio::spawn({
            let store = store.clone();
            let kept = kept.clone();
            async move {
                match write {
                    "touch" => {
                        let later = Timestamp::from_millis(kept.last_seen_at.as_millis() + 1);
                        store.touch(&kept.id, later).await.unwrap()
                    }
                    _ => store
                        .remove_by_handle(&kept.handle, None)
                        .await
                        .unwrap()
                        .is_some(),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "{write}: waits for the end's lock");
        tx.commit().await.unwrap();
        assert!(waiting.await.unwrap(), "{write}: found the kept session");
        assert!(store.load(&ended.id).await.unwrap().is_none(), "{write}");
    }
}

/// A user id too long for a NOTIFY payload: the end still happens, and
/// every node is told to forget everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_user_with_a_very_long_id_announces_forget_everything() {
    let (store, _guard) = fresh().await;
    let mut sub = store.subscribe().await.unwrap();
    let long = "x".repeat(5000);
    let s = session(&long);
    store.insert(&s).await.unwrap();
    assert_eq!(
        store.end_for_user(&UserId::new(&long), None).await.unwrap(),
        1
    );
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some("*".to_owned())
    );
    assert!(store.load(&s.id).await.unwrap().is_none());
    // The counter cannot be deleted to bring the session back.
    assert!(sqlx::query("DELETE FROM user_ends")
        .execute(store.pool())
        .await
        .is_err());
    assert!(sqlx::query("TRUNCATE user_ends")
        .execute(store.pool())
        .await
        .is_err());
    assert!(store.load(&s.id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_writes_announce_nothing() {
    let (store, _guard) = fresh().await;
    let mut sub = store.subscribe().await.unwrap();
    let a = session("alice");
    store.insert(&a).await.unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(a.id.as_bytes().as_slice())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        next_within(&mut sub, Duration::from_millis(300)).await,
        None
    );
    assert!(store.load(&a.id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_the_sessions_table_tells_every_node_to_forget_everything() {
    let (store, _guard) = fresh().await;
    let mut sub = store.subscribe().await.unwrap();
    store.insert(&session("alice")).await.unwrap();
    sqlx::query("TRUNCATE sessions")
        .execute(store.pool())
        .await
        .unwrap();
    let heard = next_within(&mut sub, Duration::from_secs(1)).await;
    assert_eq!(heard.as_deref(), Some("*"));
    assert_eq!(
        signoff::revocation::parse("*"),
        Some(signoff::revocation::BusMessage::InvalidateAll)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscribers_of_the_same_schema_only() {
    let (store, _guard) = fresh().await;
    let (other, _other_guard) = fresh().await;
    assert_ne!(store.channel(), other.channel());
    assert!(store.channel().starts_with("signoff_signoff_t_"));
    let mut sub = store.subscribe().await.unwrap();
    let mut other_sub = other.subscribe().await.unwrap();
    store.publish("hb:1:2").await.unwrap();
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1))
            .await
            .as_deref(),
        Some("hb:1:2")
    );
    assert_eq!(
        next_within(&mut other_sub, Duration::from_millis(300)).await,
        None
    );
    // Another store on the same schema (another node) hears it too.
    let mut options = PostgresOptions::new(postgres_url().await);
    options.schema = store.schema().map(str::to_owned);
    let node2 = PostgresStore::connect_with(options).await.unwrap();
    assert_eq!(node2.channel(), store.channel());
    let mut sub2 = node2.subscribe().await.unwrap();
    let a = session("alice");
    node2.insert(&a).await.unwrap();
    store.remove(&a.id).await.unwrap().expect("removed");
    let payload = Some(invalidation_payload(&a.id));
    assert_eq!(next_within(&mut sub, Duration::from_secs(1)).await, payload);
    assert_eq!(
        next_within(&mut sub2, Duration::from_secs(1)).await,
        payload
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_schema_names_get_a_hashed_channel() {
    // 63 bytes: `signoff_` + it would exceed the identifier limit.
    let (store, _guard) = store_in(&format!("signoff_t_{}_", "x".repeat(36))).await;
    let schema = store.schema().unwrap();
    assert_eq!(schema.len(), 63);
    assert!(store.channel().len() <= 63);
    assert!(!store.channel().contains(schema));
    let mut sub = store.subscribe().await.unwrap();
    let a = session("alice");
    store.insert(&a).await.unwrap();
    store.remove(&a.id).await.unwrap().expect("removed");
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some(invalidation_payload(&a.id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_connection_ends_the_subscription() {
    let (store, _guard) = fresh().await;
    let mut sub = store.subscribe().await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query = 'LISTEN \"' || $1 || '\"' AND pid <> pg_backend_pid()",
    )
    .bind(store.channel())
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        Ok(Err(StoreError::Unavailable(_))) => {}
        other => panic!("expected the subscription to report its loss, got {other:?}"),
    }
    // Subscribing again works.
    let mut sub = store.subscribe().await.unwrap();
    store.publish("hb:1:1").await.unwrap();
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1))
            .await
            .as_deref(),
        Some("hb:1:1")
    );
}

#[tokio::test]
async fn bad_schema_names_and_dead_servers_are_refused() {
    let mut options = PostgresOptions::new(postgres_url().await);
    options.schema = Some("x\"; DROP SCHEMA public; --".to_owned());
    assert!(matches!(
        PostgresStore::connect_with(options).await,
        Err(StoreError::Backend(_))
    ));
    // Nothing listens on port 1.
    let mut options = PostgresOptions::new("postgres://postgres:hunter2@127.0.0.1:1/test");
    options.connect_timeout = Duration::from_millis(500);
    assert!(!format!("{options:?}").contains("hunter2"));
    let started = std::time::Instant::now();
    assert!(matches!(
        PostgresStore::connect_with(options).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Rotated-away digests are kept (for logout) until their session's
/// absolute expiry, then purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_digests_are_kept_until_expiry_then_purged() {
    let (store, _guard) = fresh().await;
    support::rotated_digest_is_kept_until_expiry(std::sync::Arc::new(store)).await;
}
