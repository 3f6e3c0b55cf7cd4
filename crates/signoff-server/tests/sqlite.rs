//! One SQLite file, several processes: a running gateway with a long
//! --cache-staleness (30 s, so only its watcher of the change log can make
//! it refuse in time) refuses within 50 ms what the CLI or a second
//! `signoff serve` on the same file ends; the guard's status check reads
//! the store, never the cache.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{cli, cookie, get, post_form, signoff_bin, Gateway, Upstream, PASSWORD, USER};

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

#[cfg(unix)]
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `signoff serve` expecting it to stop by itself; kills it after 20 s.
fn serve_exits(db: &str, extra: &[&str]) -> (bool, String) {
    let mut child = Command::new(signoff_bin())
        .args(["serve", "--db", db, "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("SIGNOFF_CONFIG")
        .env_remove("SIGNOFF_ALLOW_READABLE_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut text = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            return (status.success(), text);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("signoff serve kept running on {db}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The file holds password hashes and the token signing keys: the CLI
/// creates it for this user only, and `signoff serve` (like the CLI)
/// refuses one that other users can read, naming the fix, unless
/// --allow-readable-db says to go on with a warning.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_file_open_to_other_users_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let db = format!("sqlite://{}", path.display());
    support::add_user(&db, USER, PASSWORD);
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("signoff.db{suffix}"));
        if let Ok(meta) = std::fs::metadata(&file) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{suffix}");
        }
    }

    chmod(&path, 0o644);
    let (ok, stderr) = serve_exits(&db, &["--upstream", "http://127.0.0.1:9"]);
    assert!(!ok, "started on a readable database: {stderr}");
    assert!(stderr.contains("mode 0644"), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 600 {}", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-readable-db"), "{stderr}");
    // The CLI too.
    let out = Command::new(signoff_bin())
        .args(["user", "list", "--db", &db])
        .env_remove("SIGNOFF_ALLOW_READABLE_DB")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    // A directory that does not exist is named, with the command to make it.
    let missing = dir.path().join("not-yet");
    let (ok, stderr) = serve_exits(
        &format!("sqlite://{}", missing.join("signoff.db").display()),
        &["--upstream", "http://127.0.0.1:9"],
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!("mkdir -p {}", missing.display())),
        "{stderr}"
    );

    // Allowed: it starts, and says so loudly.
    let gw = Gateway::start_on(dir, &db, None, &["--allow-readable-db"]);
    let log = gw.proc.log_text();
    assert!(log.contains("OPEN TO OTHER USERS"), "{log}");
}
