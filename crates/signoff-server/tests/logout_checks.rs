//! The same sign-out checks (tests/support/logout_checks.rs) against the
//! gateway and against the axum example app built on the library's `web`
//! layer (examples/axum-app), and what the example promises besides: it
//! signs in the users `signoff user add` made, on SQLite or Redis, and a
//! sign-out on one of its nodes holds on the others.

mod support;

use std::time::Duration;

use support::services::{self, RedisServer};
use support::{
    add_user, cookie_named, csrf_in, get, post_form, ExampleApp, Gateway, Upstream, PASSWORD, USER,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_passes_the_sign_out_checks() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let gw = Gateway::start(&upstream.url(), &[]);
    support::logout_checks::all(&support::logout_checks::Target {
        origin: gw.origin.clone(),
        login_path: "/.signoff/login",
        logout_path: "/.signoff/logout",
        private_path: "/private/page",
        private_marker: "PRIVATE",
        cookie: "signoff",
        user: USER.to_owned(),
        password: PASSWORD.to_owned(),
    })
    .await;
}

/// A SQLite file with user alice, made by `signoff user add`.
fn sqlite_with_alice() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("app.db").display());
    add_user(&db, USER, PASSWORD);
    (dir, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_app_passes_the_sign_out_checks() {
    let (dir, db) = sqlite_with_alice();
    let app = ExampleApp::start(&db, dir.path());
    support::logout_checks::all(&app.target()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_shows_the_user_on_both_private_pages_and_asks_others_to_sign_in() {
    let (dir, db) = sqlite_with_alice();
    let app = ExampleApp::start(&db, dir.path());
    let t = app.target();
    let url = |p: &str| format!("{}{p}", app.origin);

    // A browser without a session is sent to sign in, coming back here;
    // a client that is not a browser gets 401 with a challenge.
    let page = get(&url("/dashboard/other"), &[("accept", "text/html")]).await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.header("location"),
        Some("/login?next=%2Fdashboard%2Fother")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let api = get(&url("/dashboard"), &[]).await;
    assert_eq!(api.status, 401);
    assert!(api
        .header("www-authenticate")
        .is_some_and(|v| v.contains("login=\"/login\"")));
    // A cookie that is not a session's is expired.
    let stale = get(
        &url("/dashboard"),
        &[("cookie", "signoff=not-a-token"), ("accept", "text/html")],
    )
    .await;
    assert_eq!(stale.status, 303);
    assert!(cookie_named(&stale, "signoff").is_some_and(|c| c.contains("Max-Age=0")));

    let token = t.sign_in().await;
    let c = format!("signoff={token}");
    for path in ["/dashboard", "/dashboard/other"] {
        let page = get(&url(path), &[("cookie", &c)]).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.text()
                .contains(&format!("Signed in as <strong>{USER}</strong>")),
            "{path}: {}",
            page.text()
        );
        assert!(page.text().contains("/.signoff/guard.js"), "{path}");
    }
    // A wrong password signs nobody in.
    let wrong = post_form(
        &url("/login"),
        &[("username", USER), ("password", "wrong")],
        &[("origin", &app.origin)],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(cookie_named(&wrong, "signoff").is_none());

    // The guard's script and the status it asks, read from the store.
    let script = get(&url("/.signoff/guard.js"), &[]).await;
    assert_eq!(script.status, 200);
    assert!(script.text().contains("pageshow"));
    let status = get(&url("/.signoff/status"), &[("cookie", &c)]).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("cache-control"), Some("no-store"));
    let anonymous = get(&url("/.signoff/status"), &[]).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_sessions_page_ends_another_device() {
    let (dir, db) = sqlite_with_alice();
    let app = ExampleApp::start(&db, dir.path());
    let t = app.target();
    let url = |p: &str| format!("{}{p}", app.origin);
    let laptop = t.sign_in().await;
    let phone = t.sign_in().await;
    let c = format!("signoff={laptop}");
    let page = get(&url("/sessions"), &[("cookie", &c)]).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("(this one)"), "{html}");
    let csrf = csrf_in(&html);
    // The handle of the other session: the form's hidden field.
    let marker = "name=\"handle\" value=\"";
    let at = html.find(marker).expect("another session listed") + marker.len();
    let handle = &html[at..at + html[at..].find('"').unwrap()];

    // Without the CSRF token, even from this site's origin: refused.
    let forged = post_form(
        &url("/sessions/end"),
        &[("handle", handle)],
        &[("cookie", &c), ("origin", &app.origin)],
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(
        get(
            &url("/dashboard"),
            &[("cookie", &format!("signoff={phone}"))]
        )
        .await
        .status
            == 200
    );

    let ended = post_form(
        &url("/sessions/end"),
        &[("handle", handle), ("csrf", &csrf)],
        &[("cookie", &c), ("origin", &app.origin)],
    )
    .await;
    assert_eq!(ended.status, 303);
    let phone_page = get(
        &url("/dashboard"),
        &[("cookie", &format!("signoff={phone}"))],
    )
    .await;
    assert_eq!(phone_page.status, 401, "the other device is signed out");
    assert_eq!(get(&url("/dashboard"), &[("cookie", &c)]).await.status, 200);
}

/// On Redis (one flag: `--db redis://…`), two nodes of the example app:
/// a sign-out on one is refused on the other at once, and `signoff
/// sessions end` from the command line reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_app_nodes_on_redis_share_every_sign_out() {
    let Some(redis) = services::shared_redis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "{}/?prefix={}",
        redis.trim_end_matches('/'),
        services::unique("signoff-example-")
    );
    add_user(&db, USER, PASSWORD);
    let a = ExampleApp::start(&db, dir.path());
    let b = ExampleApp::start(&db, dir.path());
    let t = a.target();
    let token = t.sign_in().await;
    let c = format!("signoff={token}");
    // Seen (and cached) on both nodes.
    for app in [&a, &b] {
        let page = get(&format!("{}/dashboard", app.origin), &[("cookie", &c)]).await;
        assert_eq!(page.status, 200);
    }
    let out = post_form(
        &format!("{}/logout", a.origin),
        &[],
        &[("cookie", &c), ("origin", &a.origin)],
    )
    .await;
    assert_eq!(out.status, 303);
    // The other node hears of it over the bus: refused within the cache's
    // staleness bound (1 s), in practice within milliseconds.
    let signed_out = std::time::Instant::now();
    refused_within(&b, &c, Duration::from_secs(1)).await;
    eprintln!(
        "node B refused the session {:?} after the sign-out on A",
        signed_out.elapsed()
    );

    // Ended from the command line: refused on both within the bus's time.
    let token = t.sign_in().await;
    let c = format!("signoff={token}");
    for app in [&a, &b] {
        assert_eq!(
            get(&format!("{}/dashboard", app.origin), &[("cookie", &c)])
                .await
                .status,
            200
        );
    }
    support::cli(&["sessions", "end", "--user", USER], &db);
    for app in [&a, &b] {
        refused_within(app, &c, Duration::from_secs(1)).await;
    }
}

/// Asks `app` for the private page with `cookie` until it answers 401;
/// fails if it still answers 200 after `within`.
async fn refused_within(app: &ExampleApp, cookie: &str, within: Duration) {
    let started = std::time::Instant::now();
    loop {
        let page = get(&format!("{}/dashboard", app.origin), &[("cookie", cookie)]).await;
        if page.status == 401 {
            return;
        }
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(
            started.elapsed() < within,
            "{} still took an ended session after {within:?}",
            app.origin
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When the store cannot answer, a signed-in page is 503 `no-store`,
/// never served on a guess, and sign-out says the user is still signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_fails_closed_when_its_store_is_down() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = redis.url();
    add_user(&db, USER, PASSWORD);
    let app = ExampleApp::start(&db, dir.path());
    let token = app.target().sign_in().await;
    let c = format!("signoff={token}");
    let url = |p: &str| format!("{}{p}", app.origin);
    assert_eq!(get(&url("/dashboard"), &[("cookie", &c)]).await.status, 200);
    redis.kill();
    // The bus notices the loss and the cache is no longer trusted.
    let mut status = 0;
    for _ in 0..100 {
        status = get(&url("/dashboard"), &[("cookie", &c)]).await.status;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 503, "a signed-in page while the store is down");
    let page = get(&url("/dashboard"), &[("cookie", &c)]).await;
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let out = post_form(
        &url("/logout"),
        &[],
        &[("cookie", &c), ("origin", &app.origin)],
    )
    .await;
    assert_eq!(out.status, 503);
    assert!(out.text().contains("still signed"), "{}", out.text());
    assert!(cookie_named(&out, "signoff").is_none());
}
