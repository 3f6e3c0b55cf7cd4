//! One SQLite file, several processes: a running gateway with a long
//! --cache-staleness (30 s, so only its watcher of the change log can make
//! it refuse in time) refuses within 50 ms what the CLI or a second
//! `signoff serve` on the same file ends; the guard's status check reads
//! the store, never the cache.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{cookie, get, post_form, signoff_bin, Gateway, Upstream, PASSWORD, USER};

/// The bound for ends made by another process on the same file.
const BOUND: Duration = Duration::from_millis(50);

fn cached_gateway() -> Option<(Upstream, Gateway)> {
    let upstream = Upstream::start()?;
    let gw = Gateway::start(&upstream.url(), &["--cache-staleness", "30s"]);
    Some((upstream, gw))
}

async fn private_status(gw: &Gateway, token: &str) -> u16 {
    get(&gw.url("/private"), &[("cookie", &cookie(token))])
        .await
        .status
}

/// Signs in and opens a private page twice, so the session is cached.
async fn signed_in(gw: &Gateway) -> String {
    let token = gw.login(USER, PASSWORD).await;
    for _ in 0..2 {
        assert_eq!(private_status(gw, &token).await, 200);
    }
    token
}

/// How long after `since` the gateway still let `token` through; fails
/// past a second.
async fn refused_after(gw: &Gateway, token: &str, since: Instant) -> Duration {
    loop {
        match private_status(gw, token).await {
            200 => {}
            401 | 303 => return since.elapsed(),
            other => panic!("unexpected {other}"),
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "still let through"
        );
    }
}

fn cli(args: &[&str], db: &str) {
    let out = Command::new(signoff_bin())
        .args(args)
        .args(["--db", db])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "signoff {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sqlite_ends_by_the_cli_or_another_process_reach_a_cached_gateway_within_50ms() {
    let Some((upstream, gw)) = cached_gateway() else {
        return;
    };
    let mut took = Vec::new();

    let a = signed_in(&gw).await;
    cli(&["sessions", "end", "--user", USER], &gw.db);
    took.push(refused_after(&gw, &a, Instant::now()).await);

    let b = signed_in(&gw).await;
    cli(&["user", "disable", USER], &gw.db);
    took.push(refused_after(&gw, &b, Instant::now()).await);
    cli(&["user", "enable", USER], &gw.db);

    // A second gateway on the same file signs the user out there.
    let dir = tempfile::tempdir().unwrap();
    let other = Gateway::start_on(
        dir,
        &gw.db,
        Some(&upstream.url()),
        &["--cache-staleness", "30s"],
    );
    let c = signed_in(&gw).await;
    assert_eq!(private_status(&other, &c).await, 200);
    let reply = post_form(
        &other.url("/.signoff/logout"),
        &[],
        &[("cookie", &cookie(&c)), ("origin", &other.origin)],
    )
    .await;
    assert_eq!(reply.status, 303);
    took.push(refused_after(&gw, &c, Instant::now()).await);

    eprintln!("refused after {took:?}");
    for t in took {
        assert!(t < BOUND, "took {t:?}");
    }
}

/// A session ended behind the watcher's back (its trigger dropped): the
/// cache may still let a page through, but the guard's status check,
/// which decides whether a page restored by Back stays visible, reads the
/// store and says signed out at once.
#[tokio::test]
async fn guard_status_reads_the_store_not_the_cache() {
    if Command::new("sqlite3").arg("-version").output().is_err() {
        return support::missing("the sqlite3 command").unwrap_or(());
    }
    let Some((_upstream, gw)) = cached_gateway() else {
        return;
    };
    let token = signed_in(&gw).await;
    let (url, jar) = (gw.url("/.signoff/status"), cookie(&token));
    let headers = [("cookie", jar.as_str())];
    let status = || get(&url, &headers);
    assert_eq!(status().await.status, 200);
    let path = gw.db.strip_prefix("sqlite://").unwrap();
    let out = Command::new("sqlite3")
        .args([
            path,
            ".timeout 5000",
            "DROP TRIGGER sessions_change_delete",
            "DELETE FROM sessions",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply = status().await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.json()["signed_in"], false);
    assert_eq!(
        private_status(&gw, &token).await,
        200,
        "the cache still answers for the page (this is what /status must not rely on)"
    );
}
