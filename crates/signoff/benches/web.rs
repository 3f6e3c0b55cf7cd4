//! The axum layer on the hot path (docs/benchmarks.md, "The axum layer").
//!
//! | figure | baseline |
//! |---|---|
//! | `web/signed_in_page` | `web/bare_handler` (the same small page, no layer, no session) |
//! | `web/cached_check` (the engine's part: `Sessions::validate` through the cache) | `web/bare_handler` |
//!
//! Both run the whole axum router in process (no sockets, so the machine's
//! network noise stays out): `signed_in_page` is a `SignedIn` handler behind
//! `WebSessions::layer` with a live session cookie, over a cached
//! SQLite store, as `examples/axum-app` runs.

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use signoff::web::{SignedIn, WebOptions, WebSessions};
use signoff::{CachedStore, CookiePolicy, NewSession, Policy, Sessions, SqliteStore, UserId};
use tower::ServiceExt as _;

const PAGE: &str = "<!doctype html><title>Dashboard</title><p>Hello</p>";

fn web(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (router, cookie, sessions, token) = rt.block_on(async {
        let store = SqliteStore::open(dir.path().join("bench.db"))
            .await
            .unwrap();
        let cached = Arc::new(CachedStore::new(Arc::new(store)));
        let policy = Policy::builder()
            .cookie(CookiePolicy::insecure_loopback())
            .build()
            .unwrap();
        let sessions = Sessions::new(cached, policy);
        let issued = sessions
            .create(NewSession::for_user(UserId::new("u-alice")).user_name("alice"))
            .await
            .unwrap();
        let web = WebSessions::of(sessions.clone(), sessions.clone(), WebOptions::default());
        let router: Router = Router::new()
            .route(
                "/dashboard",
                get(|who: SignedIn| async move {
                    black_box(&who.user);
                    axum::response::Html(PAGE)
                }),
            )
            .layer(web.layer());
        let token = issued.token.expose().to_owned();
        (router, format!("signoff={token}"), sessions, token)
    });
    let bare: Router =
        Router::new().route("/dashboard", get(|| async { axum::response::Html(PAGE) }));

    let call = |router: &Router, cookie: Option<&str>| {
        let mut req = Request::get("/dashboard");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let router = router.clone();
        async move {
            let r = router
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r
        }
    };
    c.bench_function("web/bare_handler", |b| {
        b.to_async(&rt).iter(|| call(&bare, None))
    });
    c.bench_function("web/signed_in_page", |b| {
        b.to_async(&rt).iter(|| call(&router, Some(&cookie)))
    });
    c.bench_function("web/cached_check", |b| {
        b.to_async(&rt)
            .iter(|| async { sessions.validate(black_box(&token)).await.unwrap() })
    });
}

criterion_group!(benches, web);
criterion_main!(benches);
