//! SQLite as a revocation bus, and who may read its file. Two stores on one
//! file stand for two processes (a gateway and the CLI, or two gateways):
//! what one ends, the other's long-lived cache drops within 50 ms, heard
//! from the change log the triggers fill, not from the cache's age.
#![cfg(feature = "sqlite")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use signoff::revocation::{self, BusHandle, BusOptions};
use signoff::{
    CacheOptions, CachedStore, NewSession, Policy, SessionData, SessionError, Sessions,
    SqliteOptions, SqliteStore, StoreError, SystemClock, UserId,
};

/// The bound the watcher promises for ends made by another process.
const BOUND: Duration = Duration::from_millis(50);

/// A gateway's view: a cache that would serve a session for 30 s, kept
/// honest only by the watcher.
struct Node {
    cache: Arc<CachedStore<Arc<SqliteStore>>>,
    sessions: Sessions,
    bus: BusHandle,
}

async fn node(path: &std::path::Path) -> Node {
    let store = Arc::new(SqliteStore::open(path).await.unwrap());
    let mut o = CacheOptions::default();
    o.max_staleness = Duration::from_secs(30);
    let cache = Arc::new(CachedStore::with_options(
        store.clone(),
        o,
        Arc::new(SystemClock),
    ));
    let bus = revocation::run(store, cache.clone(), BusOptions::default());
    let start = Instant::now();
    while !bus.stats().connected() {
        assert!(start.elapsed() < Duration::from_secs(5), "never watching");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sessions = Sessions::new(cache.clone(), Policy::default());
    Node {
        cache,
        sessions,
        bus,
    }
}

/// A session made by `other`, then checked twice on `node` so the second
/// check is answered from its cache.
async fn cached_on(node: &Node, other: &Sessions, user: &str) -> String {
    let issued = other
        .login(None, NewSession::for_user(UserId::new(user)))
        .await
        .unwrap();
    let token = issued.token.expose().to_owned();
    node.sessions.validate(&token).await.unwrap();
    let hits = node.cache.stats().hits();
    node.sessions.validate(&token).await.unwrap();
    assert_eq!(node.cache.stats().hits(), hits + 1, "not cached");
    token
}

/// How long after `ended` returned `node` still accepted `token`; fails
/// past a second.
async fn refused_after(node: &Node, token: &str, ended: Instant) -> Duration {
    loop {
        match node.sessions.validate(token).await {
            Err(SessionError::NotFound) => return ended.elapsed(),
            Ok(_) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(ended.elapsed() < Duration::from_secs(1), "still accepted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_watcher_drops_what_another_process_ends_within_50ms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let gateway = node(&path).await;
    let cli = Sessions::new(
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        Policy::default(),
    );
    let mut worst = Duration::ZERO;

    // Logout.
    let t = cached_on(&gateway, &cli, "alice").await;
    cli.logout(&t).await.unwrap();
    worst = worst.max(refused_after(&gateway, &t, Instant::now()).await);

    // Every session of a user (sign-out everywhere, user disabled).
    let t1 = cached_on(&gateway, &cli, "bob").await;
    let t2 = cached_on(&gateway, &cli, "bob").await;
    let ended = Instant::now();
    let n = cli
        .end_all_for_user(&UserId::new("bob"), None, signoff::Actor::Operator, "test")
        .await
        .unwrap();
    assert_eq!(n, 2);
    worst = worst.max(refused_after(&gateway, &t1, ended).await);
    worst = worst.max(refused_after(&gateway, &t2, ended).await);

    // Rotation: the old token dies.
    let t = cached_on(&gateway, &cli, "carol").await;
    cli.rotate(&t, signoff::Rotation::AfterPassword)
        .await
        .unwrap();
    worst = worst.max(refused_after(&gateway, &t, Instant::now()).await);

    // A data change is seen too (not an end, so the cache re-reads it).
    let t = cached_on(&gateway, &cli, "dave").await;
    let session = cli.validate(&t).await.unwrap();
    let mut data = SessionData::new();
    data.insert("k".to_owned(), "v".to_owned());
    cli.set_data(&session, data).await.unwrap();
    let changed = Instant::now();
    loop {
        let seen = gateway.sessions.validate(&t).await.unwrap();
        if seen.data.get("k").map(String::as_str) == Some("v") {
            break;
        }
        assert!(changed.elapsed() < Duration::from_secs(1), "change unseen");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    worst = worst.max(changed.elapsed());

    assert!(worst < BOUND, "took {worst:?}");
    // Logout, the user's end (one change for both sessions), rotation,
    // data change.
    assert!(gateway.bus.stats().invalidations() >= 4);
    eprintln!("sqlite watcher: worst {worst:?}");
}

/// Ending 1 200 sessions of one user is one change; more changes than one
/// poll reads (an operator's bulk `DELETE`) flush the cache, and the watch
/// goes on from where the log ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_watcher_survives_a_mass_sign_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let gateway = node(&path).await;
    let cli_store = SqliteStore::open(&path).await.unwrap();
    let cli = Sessions::new(Arc::new(cli_store.clone()), Policy::default());
    let watched = cached_on(&gateway, &cli, "mallory").await;
    for _ in 0..1200 {
        cli.create(NewSession::for_user(UserId::new("mallory")))
            .await
            .unwrap();
    }
    let changes = |pool: sqlx::SqlitePool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM session_changes")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = changes(cli_store.pool().clone()).await;
    let ended = Instant::now();
    let n = cli
        .end_all_for_user(
            &UserId::new("mallory"),
            None,
            signoff::Actor::Operator,
            "test",
        )
        .await
        .unwrap();
    assert_eq!(n, 1201);
    let took = refused_after(&gateway, &watched, ended).await;
    assert!(took < BOUND, "took {took:?}");
    assert_eq!(changes(cli_store.pool().clone()).await, before + 1);
    // The counter that keeps them ended cannot be deleted.
    assert!(sqlx::query("DELETE FROM user_ends")
        .execute(cli_store.pool())
        .await
        .is_err());

    // An operator deletes 1 200 rows by hand: 1 200 changes, more than
    // one poll reads.
    let watched = cached_on(&gateway, &cli, "oscar").await;
    for _ in 0..1200 {
        cli.create(NewSession::for_user(UserId::new("oscar")))
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM sessions WHERE user_id = 'oscar'")
        .execute(cli_store.pool())
        .await
        .unwrap();
    // From the commit: deleting 1 200 rows takes a while itself.
    let ended = Instant::now();
    let took = refused_after(&gateway, &watched, ended).await;
    assert!(took < BOUND, "after a bulk delete: took {took:?}");
    let next = cached_on(&gateway, &cli, "trent").await;
    cli.logout(&next).await.unwrap();
    let took = refused_after(&gateway, &next, Instant::now()).await;
    assert!(took < BOUND, "after the flush: took {took:?}");
}

/// A watcher that cannot read the log stops the cache from answering, so
/// a session ended meanwhile is refused at once (read from the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_watcher_that_cannot_read_withdraws_trust() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let gateway = node(&path).await;
    let other = SqliteStore::open(&path).await.unwrap();
    let cli = Sessions::new(Arc::new(other.clone()), Policy::default());
    let t = cached_on(&gateway, &cli, "alice").await;
    // The log goes away (and with it the triggers' target): reads fail.
    sqlx::query("DROP TRIGGER sessions_change_delete")
        .execute(other.pool())
        .await
        .unwrap();
    sqlx::query("DROP TABLE session_changes")
        .execute(other.pool())
        .await
        .unwrap();
    let start = Instant::now();
    while gateway.cache.is_trusted() {
        assert!(start.elapsed() < Duration::from_secs(2), "still trusted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cli.logout(&t).await.unwrap();
    assert!(matches!(
        gateway.sessions.validate(&t).await,
        Err(SessionError::NotFound)
    ));
    assert!(gateway.cache.stats().bypassed() >= 1);
    assert!(gateway.bus.stats().losses() >= 1);
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The file holds password hashes and token signing keys: a new database
/// and the -wal and -shm beside it are for this user only.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_new_database_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
    sessions
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("signoff.db{suffix}"));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    store.close().await;
}

/// A database other users can read, or in a directory they can write, is
/// refused with the fix in the message, unless explicitly allowed.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_database_open_to_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    chmod(&path, 0o644);
    let err = SqliteStore::open(&path).await.unwrap_err();
    let text = err_text(&err);
    assert!(matches!(err, StoreError::Backend(_)));
    assert!(text.contains("mode 0644"), "{text}");
    assert!(
        text.contains(&format!("chmod 600 {}", path.display())),
        "{text}"
    );
    let mut allowed = SqliteOptions::new(&path);
    allowed.allow_readable = true;
    SqliteStore::open_with(allowed).await.unwrap().close().await;

    chmod(&path, 0o600);
    for companion in ["-wal", "-shm"] {
        let file = dir.path().join(format!("signoff.db{companion}"));
        if file.exists() {
            chmod(&file, 0o600);
        }
    }
    SqliteStore::open(&path).await.unwrap().close().await;
    chmod(dir.path(), 0o777);
    let text = err_text(&SqliteStore::open(&path).await.unwrap_err());
    chmod(dir.path(), 0o700);
    assert!(text.contains("writable by other users"), "{text}");
}

fn err_text(e: &StoreError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
