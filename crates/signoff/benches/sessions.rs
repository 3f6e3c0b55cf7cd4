//! The session hot path and its floors, measured in one run.
//!
//! Each figure the engine issue asks for sits beside a baseline, so the
//! report can give ratios that survive a noisy machine:
//!
//! | figure                               | baseline                        |
//! |--------------------------------------|---------------------------------|
//! | `validate/cache_hit`                 | `baseline/parse_and_hash_token` |
//! | `validate/sqlite_miss/{10k,1m}`      | `baseline/sqlx_select_1`        |
//! | `create/sqlite_full`, `_normal`      | `baseline/sqlx_insert_full`     |
//! | `user_sessions/list_and_end_1000/{10k,1m}` | `baseline/sqlx_select_1`  |
//! | `user_sessions/end_all/{1000,10}_of_{10k,1m}` | `baseline/sqlx_insert_full` |
//!
//! `user_sessions` lists and then ends all 1,000 sessions of one user in a
//! store that also holds the 10k or 1M others, through the cache and with
//! the audit trail on, as the sessions page, the CLI and the admin API do;
//! `end_all` ends them without listing, for a user with 1,000 sessions and
//! one with 10 (the same one write either way). Re-creating the sessions
//! before each run, and checkpointing the WAL after it, is not timed.
//!
//! The 10k and 1M session databases are built once under
//! `target/bench-data/` and reused. `SIGNOFF_BENCH_SIZES=10000` skips the
//! million. The file size per session is printed while building.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::seq::SliceRandom;
use signoff::{
    Actor, AuditLog, CachedStore, Durability, ManualClock, NewSession, Policy, SessionError,
    SessionKeys, SessionToken, Sessions, SqliteOptions, SqliteStore, Timestamp, TokenError, UserId,
};
use tokio::runtime::Runtime;

/// All bench sessions are created at this instant; the bench clock stands
/// one second later, so nothing expires and nothing is touched.
const T0: i64 = 1_790_000_000_000;
const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                  (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// Tokens kept from each database to look up.
const SAMPLE: usize = 1000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at(Timestamp::from_millis(T0 + 1000)))
}

/// The session token keys kept in `store`: the keys the tokens of
/// [`populated`] were sealed with.
async fn keys_of(store: &SqliteStore) -> Arc<SessionKeys> {
    let keys = SessionKeys::open(Arc::new(store.clone()), Timestamp::from_millis(T0))
        .await
        .expect("session token keys");
    Arc::new(keys)
}

/// Builds (or reuses) a database with `n` sessions, and returns the store,
/// a sample of its tokens, and the keys that sealed them.
async fn populated(n: usize) -> (SqliteStore, Vec<SessionToken>, Arc<SessionKeys>) {
    let path = bench_dir().join(format!("sessions-{n}.db"));
    let tokens_path = path.with_extension("tokens");
    if let Ok(text) = std::fs::read_to_string(&tokens_path) {
        let tokens: Vec<_> = text
            .lines()
            .filter_map(|t| SessionToken::parse(t).ok())
            .collect();
        if tokens.len() == SAMPLE && path.exists() {
            let store = SqliteStore::open(&path).await.expect("open");
            let keys = keys_of(&store).await;
            if tokens.iter().all(|t| keys.verify(t)) {
                return (store, tokens, keys);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    let mut options = SqliteOptions::new(&path);
    options.durability = Durability::Normal;
    let store = SqliteStore::open_with(options).await.expect("open");
    let keys = keys_of(&store).await;
    let mut sample = Vec::with_capacity(SAMPLE);
    let every = (n / SAMPLE).max(1);
    let mut tx = store.pool().begin().await.expect("begin");
    for i in 0..n {
        let token = keys.issue(Timestamp::from_millis(T0));
        let handle = signoff::SessionHandle::generate();
        sqlx::query(
            "INSERT INTO sessions (id, handle, user_id, created_at, last_seen_at, auth_at, \
             expires_at, idle_timeout_ms, user_agent, ip, data, generation) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?4, ?5, ?6, ?7, ?8, NULL, 0)",
        )
        .bind(token.id().as_bytes().as_slice())
        .bind(handle.as_bytes())
        // 16-character ids, ten sessions per user, as `Accounts` makes them.
        .bind(format!("user{:012}", i / 10))
        .bind(T0)
        .bind(T0 + 12 * 3600 * 1000)
        .bind(30 * 60 * 1000i64)
        .bind(UA)
        .bind(format!("203.0.{}.{}", (i / 256) % 256, i % 256))
        .execute(&mut *tx)
        .await
        .expect("insert");
        if i % every == 0 && sample.len() < SAMPLE {
            sample.push(token);
        }
        if i % 50_000 == 49_999 {
            tx.commit().await.expect("commit");
            tx = store.pool().begin().await.expect("begin");
        }
    }
    tx.commit().await.expect("commit");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .expect("checkpoint");
    let bytes = std::fs::metadata(&path).expect("size").len();
    eprintln!(
        "sessions-{n}.db: {bytes} bytes, {:.0} bytes per session",
        bytes as f64 / n as f64
    );
    let text: Vec<&str> = sample.iter().map(|t| t.expose()).collect();
    std::fs::write(&tokens_path, text.join("\n")).expect("write tokens");
    (store, sample, keys)
}

fn sizes() -> Vec<usize> {
    std::env::var("SIGNOFF_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 1_000_000])
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn cache_hit(c: &mut Criterion) {
    let rt = runtime();
    let (store, tokens, keys) = rt.block_on(populated(10_000));
    let cached = Arc::new(CachedStore::new(store));
    let sessions = Sessions::with_clock(cached.clone(), Policy::default(), clock()).with_keys(keys);
    let token = tokens[0].expose().to_owned();
    rt.block_on(sessions.validate(&token))
        .expect("warm the cache");

    let mut group = c.benchmark_group("validate");
    group.bench_function("cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { sessions.validate(&token).await.expect("valid") })
    });
    // A made-up token of the right shape (the seal's last character
    // changed): refused on the seal, before the cache or the store.
    let mut forged = token[..63].to_owned();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    group.bench_function("forged_token", |b| {
        b.to_async(&rt).iter(|| async {
            assert!(matches!(
                sessions.validate(&forged).await,
                Err(SessionError::Token(TokenError::BadSeal))
            ))
        })
    });
    // A miss through the cache, one at a time: the entry dropped (as an
    // invalidation drops it), the session read from SQLite, packed and
    // cached again. Beside `validate/sqlite_miss` (no cache), what the
    // cache adds to a miss: the fill, and the table of reads under way
    // that concurrent misses of one session share.
    let id = SessionToken::parse(&token).expect("token").id();
    group.bench_function("cache_miss_refill", |b| {
        b.to_async(&rt).iter(|| async {
            cached.invalidate(&id);
            sessions.validate(&token).await.expect("valid")
        })
    });
    group.finish();
    c.bench_function("baseline/parse_and_hash_token", |b| {
        b.iter(|| {
            SessionToken::parse(std::hint::black_box(&token))
                .expect("token")
                .id()
        })
    });
}

fn cache_miss(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("validate/sqlite_miss");
    group.measurement_time(Duration::from_secs(5));
    let mut floor = None;
    for n in sizes() {
        let (store, mut tokens, keys) = rt.block_on(populated(n));
        tokens.shuffle(&mut rand::thread_rng());
        // Direct mode: no cache, so every validate reads the store.
        let sessions = Sessions::with_clock(Arc::new(store.clone()), Policy::default(), clock())
            .with_keys(keys);
        let mut next = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(label(n)), &n, |b, _| {
            b.to_async(&rt).iter(|| {
                next = (next + 1) % tokens.len();
                let token = tokens[next].expose();
                let sessions = &sessions;
                async move { sessions.validate(token).await.expect("valid") }
            })
        });
        floor.get_or_insert(store);
    }
    group.finish();
    let Some(store) = floor else { return };
    c.bench_function("baseline/sqlx_select_1", |b| {
        b.to_async(&rt).iter(|| async {
            sqlx::query("SELECT 1")
                .fetch_one(store.pool())
                .await
                .expect("select")
        })
    });
}

fn create(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("create");
    let mut floor = None;
    for (name, durability) in [
        ("sqlite_full", Durability::Full),
        ("sqlite_normal", Durability::Normal),
    ] {
        let mut options = SqliteOptions::new(dir.path().join(format!("{name}.db")));
        options.durability = durability;
        let store = rt.block_on(SqliteStore::open_with(options)).expect("open");
        let sessions = Sessions::new(Arc::new(store.clone()), Policy::default());
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                sessions
                    .create(
                        NewSession::for_user(UserId::new("user000000000001"))
                            .user_agent(UA)
                            .ip("203.0.113.9"),
                    )
                    .await
                    .expect("create")
            })
        });
        if durability == Durability::Full {
            floor = Some(store);
        }
    }
    group.finish();
    let Some(store) = floor else { return };
    rt.block_on(sqlx::query("CREATE TABLE scratch (k BLOB PRIMARY KEY)").execute(store.pool()))
        .expect("scratch table");
    c.bench_function("baseline/sqlx_insert_full", |b| {
        b.to_async(&rt).iter(|| async {
            sqlx::query("INSERT INTO scratch (k) VALUES (?1)")
                .bind(
                    SessionKeys::ephemeral()
                        .issue(Timestamp::from_millis(T0))
                        .id()
                        .as_bytes()
                        .to_vec(),
                )
                .execute(store.pool())
                .await
                .expect("insert")
        })
    });
}

/// Gives `user` `n` fresh sessions, in one transaction, after deleting
/// the records of the sessions an earlier iteration ended (so the store
/// keeps its size).
async fn sessions_for(store: &SqliteStore, user: &str, n: usize) {
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("DELETE FROM sessions WHERE user_id = ?1")
        .bind(user)
        .execute(&mut *tx)
        .await
        .expect("delete");
    for i in 0..n {
        let token = SessionKeys::ephemeral().issue(Timestamp::from_millis(T0));
        sqlx::query(
            "INSERT INTO sessions (id, handle, user_id, created_at, last_seen_at, auth_at, \
             expires_at, idle_timeout_ms, user_agent, ip, data, generation, user_epoch) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?4, ?5, ?6, ?7, ?8, NULL, 0, \
             coalesce((SELECT epoch FROM user_ends WHERE user_id = ?3), 0))",
        )
        .bind(token.id().as_bytes().as_slice())
        .bind(signoff::SessionHandle::generate().as_bytes())
        .bind(user)
        .bind(T0 + i as i64)
        .bind(T0 + 12 * 3600 * 1000)
        .bind(30 * 60 * 1000i64)
        .bind(UA)
        .bind("198.51.100.7")
        .execute(&mut *tx)
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");
    // The set-up's WAL pages are checkpointed here, not in the timed
    // commit that happens to cross the checkpoint threshold.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .expect("checkpoint");
}

fn user_sessions(c: &mut Criterion) {
    let rt = runtime();
    // One store per size, for both groups: through the cache, with the
    // audit trail on, as the sessions page, the CLI and the admin API use it.
    let stores: Vec<(usize, SqliteStore, Sessions)> = sizes()
        .into_iter()
        .map(|n| {
            let (store, _, _) = rt.block_on(populated(n));
            let audit = AuditLog::new(Arc::new(store.clone()), signoff::AuditEcho::Off);
            let sessions = Sessions::with_clock(
                Arc::new(CachedStore::new(store.clone())),
                Policy::default(),
                clock(),
            )
            .with_audit(audit);
            (n, store, sessions)
        })
        .collect();
    let heavy = UserId::new("bench-heavy-user");
    let mut group = c.benchmark_group("user_sessions/list_and_end_1000");
    group.sample_size(20);
    for (n, store, sessions) in &stores {
        let n = *n;
        group.bench_with_input(BenchmarkId::from_parameter(label(n)), &n, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let store = store.clone();
                let sessions = sessions.clone();
                let heavy = heavy.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        sessions_for(&store, heavy.as_str(), 1000).await;
                        let start = std::time::Instant::now();
                        let listed = sessions.list_for_user(&heavy).await.expect("list");
                        let ended = sessions
                            .end_all_for_user(&heavy, None, Actor::Admin, "bench")
                            .await
                            .expect("end");
                        total += start.elapsed();
                        assert_eq!((listed.len(), ended), (1000, 1000));
                    }
                    total
                }
            })
        });
    }
    group.finish();

    // Ending alone, for a user with 1 000 sessions and for one with 10:
    // one write either way (docs/benchmarks.md).
    let mut group = c.benchmark_group("user_sessions/end_all");
    group.sample_size(20);
    for (n, store, sessions) in &stores {
        let n = *n;
        for own in [1000, 10] {
            let id = BenchmarkId::from_parameter(format!("{own}_of_{}", label(n)));
            group.bench_with_input(id, &own, |b, &own| {
                b.to_async(&rt).iter_custom(|iters| {
                    let store = store.clone();
                    let sessions = sessions.clone();
                    let heavy = heavy.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            sessions_for(&store, heavy.as_str(), own).await;
                            let start = std::time::Instant::now();
                            let ended = sessions
                                .end_all_for_user(&heavy, None, Actor::Admin, "bench")
                                .await
                                .expect("end");
                            total += start.elapsed();
                            assert_eq!(ended, own);
                        }
                        total
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = cache_hit, cache_miss, create, user_sessions
}
criterion_main!(benches);
