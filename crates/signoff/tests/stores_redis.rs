//! The Redis store's user accounts, audit trail and revocation bus.
//!
//! These tests always need a server: `SIGNOFF_TEST_REDIS` (default
//! `redis://127.0.0.1:6379`). Each test uses a fresh random key prefix and
//! deletes its keys afterwards.
#![cfg(all(feature = "redis", feature = "accounts", feature = "audit"))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use signoff::revocation::{invalidation_payload, BusSubscription, RevocationBus};
use signoff::{
    Actor, AuditEvent, AuditKind, AuditQuery, AuditStore, NewSession, Policy, RedisOptions,
    RedisStore, SessionData, SessionStore, Sessions, StoreError, Timestamp, User, UserId,
    UserStore, WriteOutcome,
};

mod support;
use support::next_within;
use support::redis::{redis_url, store};

fn user(id: &str, name: &str, hash: &str, at: i64) -> User {
    User {
        id: UserId::new(id),
        name: name.to_owned(),
        password_hash: hash.to_owned(),
        disabled: false,
        // Groups come back as they went in.
        groups: vec!["admins".to_owned(), "ops:eu-1".to_owned()],
        created_at: Timestamp::from_millis(at),
    }
}

// ---- Connection ------------------------------------------------------------

#[tokio::test]
async fn options_and_names() {
    let (store, _cleanup) = store().await;
    assert!(store.prefix().starts_with("signoff-test-"));
    assert_eq!(store.channel(), format!("{}:revoked", store.prefix()));
    let options = RedisOptions::new("redis://:s3cret@127.0.0.1:6379");
    assert_eq!(options.prefix, "signoff");
    assert!(!format!("{options:?}").contains("s3cret"));
    let mut bad = RedisOptions::new(redis_url());
    bad.prefix = "has{brace}".to_owned();
    assert!(matches!(
        RedisStore::connect_with(bad).await,
        Err(StoreError::Backend(_))
    ));
}

#[tokio::test]
async fn a_dead_server_is_unavailable_quickly() {
    let mut options = RedisOptions::new("redis://127.0.0.1:1");
    options.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let result = RedisStore::connect_with(options).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

// ---- Users -----------------------------------------------------------------

#[tokio::test]
async fn users_insert_find_and_refuse_duplicates() {
    let (store, _cleanup) = store().await;
    let alice = user("u-1", "alice", "$argon2id$old", 10);
    store.insert_user(&alice).await.unwrap();
    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user_by_id(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);
    assert_eq!(store.user_by_id(&UserId::new("u-9")).await.unwrap(), None);

    // The name is taken, whatever the id.
    let same_name = user("u-2", "alice", "$x", 11);
    assert!(matches!(
        store.insert_user(&same_name).await,
        Err(StoreError::Duplicate)
    ));
    // The id is taken: refused, and the new name is not left claimed.
    let same_id = user("u-1", "mallory", "$x", 12);
    assert!(matches!(
        store.insert_user(&same_id).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.user_by_name("mallory").await.unwrap(), None);
    store
        .insert_user(&user("u-3", "mallory", "$y", 13))
        .await
        .unwrap();
    assert_eq!(store.user_by_id(&alice.id).await.unwrap(), Some(alice));
}

#[tokio::test]
async fn passwords_and_disabling_are_conditional() {
    let (store, _cleanup) = store().await;
    let id = UserId::new("u-1");
    store
        .insert_user(&user("u-1", "alice", "$old", 1))
        .await
        .unwrap();
    let ghost = UserId::new("ghost");

    assert!(store.set_password_hash(&id, "$new").await.unwrap());
    assert!(!store.set_password_hash(&ghost, "$new").await.unwrap());
    assert_eq!(
        store.user_by_id(&ghost).await.unwrap(),
        None,
        "a write to a missing user must not create it"
    );
    // Rehash only if the hash is still the one read.
    assert!(!store
        .replace_password_hash(&id, "$old", "$rehashed")
        .await
        .unwrap());
    assert!(store
        .replace_password_hash(&id, "$new", "$rehashed")
        .await
        .unwrap());
    assert!(!store
        .replace_password_hash(&ghost, "$new", "$x")
        .await
        .unwrap());
    assert_eq!(
        store.user_by_id(&id).await.unwrap().unwrap().password_hash,
        "$rehashed"
    );

    assert!(store.set_disabled(&id, true).await.unwrap());
    assert!(store.user_by_name("alice").await.unwrap().unwrap().disabled);
    assert!(store.set_disabled(&id, false).await.unwrap());
    assert!(!store.user_by_id(&id).await.unwrap().unwrap().disabled);
    assert!(!store.set_disabled(&ghost, true).await.unwrap());
    assert_eq!(store.user_by_id(&ghost).await.unwrap(), None);
}

/// A user written before users had groups (no `groups` field) reads back
/// in no group, and its groups change from none; a user with no groups
/// round-trips as such.
#[tokio::test]
async fn users_without_a_groups_field_are_in_no_group() {
    let (store, _cleanup) = store().await;
    let alice = user("u1", "alice", "$argon2id$old", 10);
    store.insert_user(&alice).await.unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let removed: i64 = redis::cmd("HDEL")
        // The id u1, in base64url.
        .arg(format!("{}:user:{{dTE}}", store.prefix()))
        .arg("groups")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the groups field was not where expected");
    let read = store.user_by_name("alice").await.unwrap().unwrap();
    assert!(read.groups.is_empty());
    assert_eq!(read.password_hash, alice.password_hash);
    // No field is no group: a change from no group applies, from the
    // groups it had once does not.
    let admins = vec!["admins".to_owned()];
    assert!(!store
        .replace_groups(&alice.id, &alice.groups, &admins)
        .await
        .unwrap());
    assert!(store.replace_groups(&alice.id, &[], &admins).await.unwrap());
    assert_eq!(
        store.user_by_id(&alice.id).await.unwrap().unwrap().groups,
        admins
    );
    let none = User {
        groups: Vec::new(),
        ..user("u-2", "bob", "$x", 11)
    };
    store.insert_user(&none).await.unwrap();
    assert_eq!(store.user_by_id(&none.id).await.unwrap(), Some(none));
}

#[tokio::test]
async fn users_are_listed_by_name() {
    let (store, _cleanup) = store().await;
    assert!(store.list_users().await.unwrap().is_empty());
    for (id, name) in [("3", "carol"), ("1", "alice"), ("2", "bob")] {
        store.insert_user(&user(id, name, "$h", 1)).await.unwrap();
    }
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
}

#[tokio::test]
async fn awkward_user_ids_work() {
    let (store, _cleanup) = store().await;
    let ids = ["{a}", "}{", "a:b:{c}", "ünïcødé-ユーザー", "", "{u:x}"];
    for (i, id) in ids.iter().enumerate() {
        store
            .insert_user(&user(id, &format!("name{i}"), "$h", 1))
            .await
            .unwrap();
        assert_eq!(
            store
                .user_by_id(&UserId::new(*id))
                .await
                .unwrap()
                .map(|u| u.name),
            Some(format!("name{i}"))
        );
    }
    assert_eq!(store.list_users().await.unwrap().len(), ids.len());

    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    for id in ids {
        let user = UserId::new(id);
        let a = sessions
            .login(None, NewSession::for_user(user.clone()))
            .await
            .unwrap();
        let b = sessions
            .login(None, NewSession::for_user(user.clone()))
            .await
            .unwrap();
        let listed = store.list_for_user(&user).await.unwrap();
        assert_eq!(listed.len(), 2, "{id:?}");
        assert!(listed.iter().all(|s| s.user_id.as_ref() == Some(&user)));
        // Wrong owner: nothing happens.
        assert_eq!(
            store
                .remove_by_handle(&a.session.handle, Some(&UserId::new("other")))
                .await
                .unwrap(),
            None
        );
        assert!(store
            .remove_by_handle(&a.session.handle, Some(&user))
            .await
            .unwrap()
            .is_some());
        assert_eq!(store.end_for_user(&user, None).await.unwrap(), 1);
        assert!(store.list_for_user(&user).await.unwrap().is_empty());
        assert_eq!(store.load(&b.session.id).await.unwrap(), None);
    }
}

// ---- Audit -----------------------------------------------------------------

#[tokio::test]
async fn audit_query_filters_orders_and_limits() {
    let (store, _cleanup) = store().await;
    store
        .insert_user(&user("u1", "alice", "$h", 1))
        .await
        .unwrap();
    let alice = UserId::new("u1");
    let bob = UserId::new("u2");
    let events = [
        AuditEvent::new(AuditKind::LoginSucceeded, Timestamp::from_millis(1000))
            .user(Some(&alice), None),
        AuditEvent::new(AuditKind::LoginFailed, Timestamp::from_millis(2000))
            .user(Some(&bob), Some("bob"))
            .reason("wrong_password")
            .ip("192.0.2.1"),
        AuditEvent::new(AuditKind::Logout, Timestamp::from_millis(3000))
            .user(Some(&alice), None)
            .by(Actor::User),
        // Equal events must not collapse into one.
        AuditEvent::new(AuditKind::Logout, Timestamp::from_millis(3000))
            .user(Some(&alice), None)
            .by(Actor::User),
        AuditEvent::new(AuditKind::SessionEnded, Timestamp::from_millis(4000))
            .by(Actor::Timeout)
            .count(3),
    ];
    for e in &events {
        store.append(e).await.unwrap();
    }

    let all = store.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 5);
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seqs, sorted, "newest first, sequence numbers unique");
    assert_eq!(all[0].kind, AuditKind::SessionEnded);
    assert_eq!(all[0].count, Some(3));
    assert_eq!(all[4].kind, AuditKind::LoginSucceeded);
    // The user name is filled in from the account where the event lacks it.
    assert_eq!(all[4].user_name.as_deref(), Some("alice"));
    assert_eq!(all[3].user_name.as_deref(), Some("bob"));
    assert_eq!(all[3].ip.as_deref(), Some("192.0.2.1"));

    let mut q = AuditQuery {
        user_id: Some(alice.clone()),
        ..AuditQuery::default()
    };
    assert_eq!(store.query(&q).await.unwrap().len(), 3);
    q.kind = Some(AuditKind::Logout);
    assert_eq!(store.query(&q).await.unwrap().len(), 2);
    q.limit = Some(1);
    let one = store.query(&q).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].seq, all[1].seq);

    let mut q = AuditQuery {
        since: Some(Timestamp::from_millis(2000)),
        ..AuditQuery::default()
    };
    assert_eq!(store.query(&q).await.unwrap().len(), 4);
    q.since = Some(Timestamp::from_millis(2001));
    assert_eq!(store.query(&q).await.unwrap().len(), 3);

    assert_eq!(
        store
            .purge_before(Timestamp::from_millis(3000))
            .await
            .unwrap(),
        2
    );
    let left = store.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|e| e.at >= Timestamp::from_millis(3000)));
    assert_eq!(
        store
            .purge_before(Timestamp::from_millis(3000))
            .await
            .unwrap(),
        0
    );
}

// ---- The revocation bus ----------------------------------------------------

/// Asserts that `sub` hears nothing now, and is still alive.
async fn assert_silent(store: &RedisStore, sub: &mut Box<dyn BusSubscription>, what: &str) {
    if let Some(p) = next_within(sub, Duration::from_millis(300)).await {
        panic!("{what} announced {p:?}");
    }
    store.publish("probe").await.unwrap();
    assert_eq!(
        next_within(sub, Duration::from_secs(1)).await.as_deref(),
        Some("probe"),
        "the subscription went deaf"
    );
}

#[tokio::test]
async fn publish_reaches_subscribers() {
    let (store, _cleanup) = store().await;
    let mut first = store.subscribe().await.unwrap();
    let mut second = store.subscribe().await.unwrap();
    store.publish("hb:1:2").await.unwrap();
    for sub in [&mut first, &mut second] {
        assert_eq!(
            next_within(sub, Duration::from_secs(1)).await.as_deref(),
            Some("hb:1:2")
        );
    }
}

#[tokio::test]
async fn writes_that_end_or_change_a_session_are_announced() {
    let (store, _cleanup) = store().await;
    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    let mut sub = store.subscribe().await.unwrap();
    let alice = UserId::new("alice");
    let issued = sessions
        .login(None, NewSession::for_user(alice.clone()))
        .await
        .unwrap();
    let id = issued.session.id;
    assert_silent(&store, &mut sub, "login").await;

    // Touch changes nothing anyone caches: no announcement.
    assert!(store
        .touch(
            &id,
            issued.session.last_seen_at.plus(Duration::from_secs(5))
        )
        .await
        .unwrap());
    assert_silent(&store, &mut sub, "touch").await;

    // Data writes announce the digest they changed.
    let mut data = SessionData::new();
    data.insert("k".into(), "v".into());
    assert_eq!(
        store.update_data(&id, 0, &data).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some(invalidation_payload(&id))
    );
    assert_silent(&store, &mut sub, "a data write (twice)").await;
    // A stale data write changes nothing and announces nothing.
    assert_eq!(
        store.update_data(&id, 0, &data).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_silent(&store, &mut sub, "a stale data write").await;

    // Rotation announces the old digest.
    let new_id = signoff::SessionKeys::ephemeral()
        .issue(signoff::Timestamp::from_millis(0))
        .id();
    assert!(store
        .rotate(&id, &new_id, Some(Timestamp::from_millis(5)))
        .await
        .unwrap());
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some(invalidation_payload(&id))
    );
    assert_silent(&store, &mut sub, "a rotation (twice)").await;
    assert!(!store.rotate(&id, &new_id, None).await.unwrap());
    assert!(store.remove(&id).await.unwrap().is_none());
    assert_silent(&store, &mut sub, "writes to a rotated-away digest").await;

    // Removal announces the digest it removed.
    let removed = store.remove(&new_id).await.unwrap().expect("removed");
    assert_eq!(removed.auth_at, Some(Timestamp::from_millis(5)));
    assert_eq!(removed.data, data);
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some(invalidation_payload(&new_id))
    );
    assert_silent(&store, &mut sub, "a removal (twice)").await;

    // So do removal by handle, per user, and by expiry.
    let a = sessions
        .login(None, NewSession::for_user(alice.clone()))
        .await
        .unwrap();
    let b = sessions
        .login(None, NewSession::for_user(alice.clone()))
        .await
        .unwrap();
    let c = sessions
        .login(None, NewSession::for_user(alice.clone()))
        .await
        .unwrap();
    store
        .remove_by_handle(&a.session.handle, Some(&alice))
        .await
        .unwrap()
        .expect("removed by handle");
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some(invalidation_payload(&a.session.id))
    );
    assert_eq!(
        store
            .end_for_user(&alice, Some(&c.session.id))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some(invalidation_payload(&b.session.id))
    );
    assert!(store
        .remove_expired(&c.session.id, c.session.expires_at)
        .await
        .unwrap());
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some(invalidation_payload(&c.session.id))
    );
    assert_silent(&store, &mut sub, "the removals (twice)").await;
}

#[tokio::test]
async fn purge_announces_what_it_removes() {
    let (store, _cleanup) = store().await;
    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    let issued = sessions.create(NewSession::anonymous()).await.unwrap();
    let mut sub = store.subscribe().await.unwrap();
    let purged = store
        .purge_expired(issued.session.expires_at, 10)
        .await
        .unwrap();
    assert_eq!(purged, vec![issued.session.id]);
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1)).await,
        Some(invalidation_payload(&issued.session.id))
    );
    assert!(store
        .purge_expired(issued.session.expires_at, 10)
        .await
        .unwrap()
        .is_empty());
    assert_silent(&store, &mut sub, "an empty purge").await;
}

// ---- Pointers are only hints -----------------------------------------------

/// A digest pointer left behind (as by a crash between a rotation's script
/// and its cleanup) leads to the record, but the record answers only to its
/// current digest: the old token stays dead for every operation.
#[tokio::test]
async fn a_stale_pointer_never_revives_a_digest() {
    let (store, _cleanup) = store().await;
    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    let issued = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    let old = issued.session.id;
    let new = signoff::SessionKeys::ephemeral()
        .issue(signoff::Timestamp::from_millis(0))
        .id();
    assert!(store.rotate(&old, &new, None).await.unwrap());

    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let p = store.prefix().to_owned();
    let record: String = redis::cmd("GET")
        .arg(format!("{p}:d:{}", invalidation_payload(&new)))
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{p}:d:{}", invalidation_payload(&old)))
        .arg(&record)
        .query_async(&mut con)
        .await
        .unwrap();

    let far = issued.session.expires_at.plus(Duration::from_secs(1));
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert!(!store.touch(&old, far).await.unwrap());
    assert_eq!(
        store
            .update_data(&old, 1, &SessionData::new())
            .await
            .unwrap(),
        WriteOutcome::Missing
    );
    let other = signoff::SessionKeys::ephemeral()
        .issue(signoff::Timestamp::from_millis(0))
        .id();
    assert!(!store.rotate(&old, &other, None).await.unwrap());
    assert!(!store.remove_expired(&old, far).await.unwrap());
    assert_eq!(store.remove(&old).await.unwrap(), None);
    // The session itself is untouched, under its new digest only.
    let current = store.load(&new).await.unwrap().expect("still there");
    assert_eq!(current.generation, 1);
    assert_eq!(current.last_seen_at, issued.session.last_seen_at);
    assert_eq!(store.load(&other).await.unwrap(), None);
}

/// With its handle pointer lost, a record still cannot be overwritten by an
/// insert that names the same handle.
#[tokio::test]
async fn insert_never_overwrites_even_without_pointers() {
    let (store, _cleanup) = store().await;
    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    let original = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap()
        .session;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{}:h:{}", store.prefix(), original.handle))
        .query_async(&mut con)
        .await
        .unwrap();
    let mut twin = original.clone();
    twin.id = signoff::SessionKeys::ephemeral()
        .issue(signoff::Timestamp::from_millis(0))
        .id();
    twin.generation = 7;
    assert!(matches!(
        store.insert(&twin).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.load(&original.id).await.unwrap(), Some(original));
    assert_eq!(store.load(&twin.id).await.unwrap(), None);
}

/// A server that goes away makes operations fail as unavailable within the
/// timeouts, and a subscription report the loss, instead of hanging.
/// A `redis-server` of the test's own, killed when dropped.
/// A `redis-server` of the test's own, writing its files (an append-only
/// log, when asked for) in a temporary directory, never in the checkout.
struct OwnRedis {
    child: std::process::Child,
    /// Kept until the server is gone.
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a `redis-server` on a free port, with `args`.
fn own_redis(args: &[&str]) -> (OwnRedis, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let server = OwnRedis {
        child: std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server (the tests need the redis-server binary)"),
        _dir: dir,
    };
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("redis-server did not start on port {port}");
}

#[tokio::test]
async fn settings_that_can_undo_a_logout_are_reported() {
    let (mut unsafe_server, port) =
        own_redis(&["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"]);
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap();
    let warnings = store.deployment_warnings().await.unwrap();
    unsafe_server.kill();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("appendonly no"), "{warnings:?}");
    assert!(warnings[1].contains("allkeys-lru"), "{warnings:?}");

    let (mut everysec, port) = own_redis(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap();
    let warnings = store.deployment_warnings().await.unwrap();
    everysec.kill();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("everysec"), "{warnings:?}");

    let (mut safe, port) = own_redis(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap();
    let warnings = store.deployment_warnings().await.unwrap();
    safe.kill();
    assert_eq!(warnings, Vec::<String>::new());
}

#[tokio::test]
async fn a_server_that_dies_is_unavailable_not_hanging() {
    let (mut server, port) = own_redis(&["--appendonly", "no"]);
    let mut options = RedisOptions::new(format!("redis://127.0.0.1:{port}"));
    options.connect_timeout = Duration::from_millis(500);
    options.response_timeout = Duration::from_millis(500);
    let store = RedisStore::connect_with(options).await.unwrap();
    let mut sub = store.subscribe().await.unwrap();
    store.publish("x").await.unwrap();
    assert_eq!(
        next_within(&mut sub, Duration::from_secs(1))
            .await
            .as_deref(),
        Some("x")
    );
    server.kill();
    let lost = tokio::time::timeout(Duration::from_secs(3), sub.next()).await;
    assert!(
        matches!(lost, Ok(Err(StoreError::Unavailable(_)))),
        "{lost:?}"
    );
    let started = Instant::now();
    let id = signoff::SessionKeys::ephemeral()
        .issue(signoff::Timestamp::from_millis(0))
        .id();
    let result = store.load(&id).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A rotated-away digest's successor pointer holds only the handle and
/// expires natively with the session's own keys (its `expires_at` plus the
/// clock margin), so it lasts as long as the session can.
#[tokio::test]
async fn rotated_digests_expire_with_their_session() {
    let (store, _cleanup) = store().await;
    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    let issued = sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    let rotated = sessions
        .rotate(issued.token.expose(), signoff::Rotation::AfterPassword)
        .await
        .unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let p = store.prefix().to_owned();
    let key = format!("{p}:r:{}", invalidation_payload(&issued.session.id));
    let held: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(held, issued.session.handle.to_string());
    let pointer_expiry: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    let record: String = redis::cmd("GET")
        .arg(format!(
            "{p}:d:{}",
            invalidation_payload(&rotated.session.id)
        ))
        .query_async(&mut con)
        .await
        .unwrap();
    let record_expiry: i64 = redis::cmd("PEXPIRETIME")
        .arg(&record)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(record_expiry > issued.session.expires_at.as_millis());
    assert_eq!(pointer_expiry, record_expiry);
    // The pointer opens nothing; logout through it ends the session.
    assert_eq!(store.load(&issued.session.id).await.unwrap(), None);
    sessions.logout(issued.token.expose()).await.unwrap();
    assert!(sessions.validate(rotated.token.expose()).await.is_err());
}
