//! Cache-miss session checks on the shared stores, each beside the
//! round trip it cannot beat, measured in one run:
//!
//! | figure                        | baseline                  |
//! |-------------------------------|---------------------------|
//! | `validate/redis_miss/{n}`     | `baseline/redis_ping`     |
//! | `validate/postgres_miss/{n}`  | `baseline/postgres_select_1` |
//!
//! Direct mode (no local cache), so every check reads the store. The
//! stores are the machine's Redis (`SIGNOFF_TEST_REDIS`, default
//! 127.0.0.1:6379) and PostgreSQL (`SIGNOFF_TEST_POSTGRES`, default
//! postgres://postgres@127.0.0.1:5432/test), under the prefix
//! `signoff-bench` and the schema `signoff_bench`, emptied first.
//! `n` sessions (default 10,000; `SIGNOFF_BENCH_SIZES` as in the sessions
//! bench, first size only) are created for 1,000 users before measuring.
//! Under `SIGNOFF_REQUIRE_SERVICES=1` a missing server fails the run.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::seq::SliceRandom;
use signoff::{
    NewSession, Policy, PostgresOptions, PostgresStore, RedisOptions, RedisStore, SessionStore,
    SessionToken, Sessions, UserId,
};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn size() -> usize {
    std::env::var("SIGNOFF_BENCH_SIZES")
        .ok()
        .and_then(|s| s.split(',').next()?.trim().parse().ok())
        .unwrap_or(10_000)
}

fn label(n: usize) -> String {
    if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) {
    if std::env::var("SIGNOFF_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("{what} is required (SIGNOFF_REQUIRE_SERVICES=1): {e}");
    }
    eprintln!("skipped: {what} is not available: {e}");
}

/// Creates `n` sessions and returns the tokens of up to 1,000 of them.
async fn populate(store: Arc<dyn SessionStore>, n: usize) -> Vec<SessionToken> {
    let sessions = Sessions::new(store, Policy::default());
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for i in (worker..n).step_by(8) {
                let user = UserId::new(format!("user{}", i % 1000));
                let issued = sessions
                    .create(NewSession::for_user(user))
                    .await
                    .expect("create");
                if tokens.len() < 125 {
                    tokens.push(issued.token);
                }
            }
            tokens
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.extend(task.await.expect("populate"));
    }
    tokens.shuffle(&mut rand::thread_rng());
    tokens
}

fn miss(c: &mut Criterion, rt: &Runtime, name: &str, store: Arc<dyn SessionStore>, n: usize) {
    let tokens = rt.block_on(populate(store.clone(), n));
    let sessions = Sessions::new(store, Policy::default());
    let mut group = c.benchmark_group(format!("validate/{name}_miss"));
    group.measurement_time(Duration::from_secs(5));
    let mut next = 0usize;
    group.bench_with_input(BenchmarkId::from_parameter(label(n)), &n, |b, _| {
        b.to_async(rt).iter(|| {
            next = (next + 1) % tokens.len();
            let token = tokens[next].expose();
            let sessions = &sessions;
            async move { sessions.validate(token).await.expect("valid") }
        })
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let rt = runtime();
    let url = std::env::var("SIGNOFF_TEST_REDIS").unwrap_or("redis://127.0.0.1:6379".into());
    let prefix = "signoff-bench";
    let setup = rt.block_on(async {
        let client = redis::Client::open(url.as_str())?;
        let mut con = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut con)
            .await?;
        for chunk in keys.chunks(1000) {
            let _: () = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut con)
                .await?;
        }
        Ok::<_, redis::RedisError>(con)
    });
    let mut con = match setup {
        Ok(con) => con,
        Err(e) => return unavailable("Redis", e),
    };
    let mut options = RedisOptions::new(url);
    options.prefix = prefix.to_owned();
    let store = rt
        .block_on(RedisStore::connect_with(options))
        .expect("connect");
    miss(c, &rt, "redis", Arc::new(store), size());
    c.bench_function("baseline/redis_ping", |b| {
        b.to_async(&rt).iter(|| {
            let mut con = con.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .expect("ping")
            }
        })
    });
    let _ = &mut con;
}

fn postgres(c: &mut Criterion) {
    let rt = runtime();
    let url = std::env::var("SIGNOFF_TEST_POSTGRES")
        .unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
    let schema = "signoff_bench";
    let reset = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await?;
        Ok::<_, sqlx::Error>(())
    });
    if let Err(e) = reset {
        return unavailable("PostgreSQL", e);
    }
    let mut options = PostgresOptions::new(url);
    options.schema = Some(schema.to_owned());
    let store = rt
        .block_on(PostgresStore::connect_with(options))
        .expect("connect");
    let pool = store.pool().clone();
    miss(c, &rt, "postgres", Arc::new(store), size());
    c.bench_function("baseline/postgres_select_1", |b| {
        b.to_async(&rt).iter(|| async {
            sqlx::query("SELECT 1")
                .fetch_one(&pool)
                .await
                .expect("select")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = redis, postgres
}
criterion_main!(benches);
