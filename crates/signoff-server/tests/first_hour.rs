//! The first hour with signoff (issue 24): a set-up mistake is named where
//! it shows, with the setting that fixes it, and never by weakening the
//! checks that guard users. Real `signoff serve` processes, forward-auth
//! only (no upstream needed).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{add_user, get, post_form, signoff_bin, Gateway, Reply, PASSWORD, USER};

const SIGN_IN: &[(&str, &str)] = &[("username", USER), ("password", PASSWORD)];

/// The port of `http://127.0.0.1:PORT`.
fn port(origin: &str) -> &str {
    origin.rsplit(':').next().unwrap()
}

/// The log line of `gw` holding `needle`, waited for a moment.
fn log_line(gw: &Gateway, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = gw.proc.log_text();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_refused(r: &Reply, why: &str) {
    assert_eq!(r.status, 403, "{why}: {}", r.text());
    assert!(r.new_cookie("signoff").is_none(), "{why}: a cookie");
    assert!(r.header("location").is_none(), "{why}: a redirect");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{why}");
}

#[tokio::test]
async fn a_sign_in_from_another_origin_names_both_origins_and_the_flag() {
    let gw = Gateway::start_forward_auth(&[]);
    let login = gw.url("/.signoff/login");
    // A proxy in front that signoff was not told about (--public-url
    // forgotten): the browser's page and form are the proxy's.
    let proxy = "https://login.example.com";
    let r = post_form(
        &login,
        SIGN_IN,
        &[("origin", proxy), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_refused(&r, "a forgotten --public-url");
    let page = r.text();
    assert!(page.contains(&gw.origin), "the expected origin: {page}");
    assert!(page.contains(proxy), "the origin that arrived: {page}");
    assert!(
        page.contains(&format!("--public-url {proxy}")),
        "the flag that fixes it: {page}"
    );
    assert!(
        page.contains(&format!("href=\"{}/.signoff/login\"", gw.origin)),
        "a way forward: {page}"
    );
    assert!(!page.contains("was sent from another site"), "{page}");
    let line = log_line(&gw, "refused a sign-in form from another origin");
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("expected={}", gw.origin)),
        "expected: {line}"
    );
    assert!(
        line.contains(&format!("arrived=\"{proxy}\"")),
        "arrived: {line}"
    );
    assert!(
        line.contains(&format!("--public-url {proxy}")),
        "flag: {line}"
    );

    // `--public-url https://…` with nothing terminating TLS: the browser
    // is on plain HTTP at the same host.
    let tls = Gateway::start_forward_auth(&["--public-url", "https://127.0.0.1"]);
    let plain = format!("http://127.0.0.1:{}", port(&tls.origin));
    let r = post_form(&tls.url("/.signoff/login"), SIGN_IN, &[("origin", &plain)]).await;
    assert_refused(&r, "https public URL, no TLS");
    let page = r.text();
    assert!(
        page.contains("https://127.0.0.1") && page.contains(&plain),
        "{page}"
    );
    assert!(page.contains("--tls-cert"), "{page}");
    let line = log_line(&tls, "refused a sign-in form from another origin");
    assert!(
        line.contains("expected=https://127.0.0.1") && line.contains("--tls-cert"),
        "{line}"
    );
}

#[tokio::test]
async fn a_cross_site_sign_in_is_still_refused() {
    let gw = Gateway::start_forward_auth(&[]);
    let login = gw.url("/.signoff/login");
    let host = format!("localhost:{}", port(&gw.origin));
    let twin = format!("http://{host}");
    let other_port = "http://localhost:1";
    for (why, headers) in [
        (
            "another site",
            vec![
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "another site, old browser",
            vec![("origin", "http://evil.example")],
        ),
        (
            "a loopback origin marked cross-site",
            vec![
                ("origin", twin.as_str()),
                ("host", host.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "another loopback port",
            vec![("origin", other_port), ("host", host.as_str())],
        ),
        (
            "a loopback origin posting to another host than its page's",
            vec![("origin", twin.as_str())],
        ),
        ("a hidden origin", vec![("origin", "null")]),
        (
            "markup in the origin",
            vec![("origin", "http://x\"><script>alert(1)</script>")],
        ),
    ] {
        let r = post_form(&login, SIGN_IN, &headers).await;
        assert_refused(&r, why);
        let page = r.text();
        assert!(!page.contains("<script>alert"), "{why}: {page}");
        assert!(page.contains(&gw.origin), "{why}: {page}");
    }
    let line = log_line(&gw, "arrived=\"http://evil.example\"");
    assert!(
        line.contains("WARN") && line.contains("cross-site"),
        "{line}"
    );
    // Another site's form is not a set-up mistake: no setting is offered.
    let r = post_form(
        &login,
        SIGN_IN,
        &[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert!(!r.text().contains("--public-url"), "{}", r.text());
    // The same form from signoff's own origin signs in.
    let r = post_form(&login, SIGN_IN, &[("origin", &gw.origin)]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.new_cookie("signoff").is_some());
}

#[tokio::test]
async fn localhost_for_127_0_0_1_goes_to_the_public_origin() {
    let gw = Gateway::start_forward_auth(&[]);
    let port = port(&gw.origin).to_owned();
    let host = format!("localhost:{port}");
    let twin = format!("http://{host}");
    let page = gw.url("/.signoff/login?next=/private/x");

    // The sign-in page asked for at `localhost`.
    let r = get(&page, &[("host", &host)]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{}/.signoff/login?next=%2Fprivate%2Fx", gw.origin).as_str())
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Not for another port, another host, or the public origin itself.
    for other in [format!("localhost:{}", u16::MAX), "evil.example".to_owned()] {
        let r = get(&page, &[("host", &other)]).await;
        assert_eq!(r.status, 200, "{other}: {:?}", r.header("location"));
    }
    assert_eq!(get(&page, &[]).await.status, 200);

    // A form posted from a page already open at `localhost`: sent to the
    // sign-in page at the public origin, nothing carried, no session.
    let r = post_form(
        &gw.url("/.signoff/login"),
        SIGN_IN,
        &[
            ("origin", &twin),
            ("host", &host),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").unwrap().to_owned();
    assert_eq!(location, format!("{}/.signoff/login", gw.origin));
    assert!(r.new_cookie("signoff").is_none());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let line = log_line(&gw, "a sign-in form came from a loopback address");
    assert!(
        line.contains("WARN")
            && line.contains(&format!("expected={}", gw.origin))
            && line.contains(&format!("arrived=\"{twin}\"")),
        "{line}"
    );
    // And there the sign-in works.
    assert_eq!(get(&location, &[]).await.status, 200);
    let r = post_form(&location, SIGN_IN, &[("origin", &gw.origin)]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.new_cookie("signoff").is_some());
}

/// `signoff serve ARGS` on a fresh database with `alice`: the process and
/// the first `n` lines it printed.
fn serve(dir: &tempfile::TempDir, args: &[&str], n: usize) -> (support::Proc, Vec<String>) {
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user(&db, USER, PASSWORD);
    let mut cmd = Command::new(signoff_bin());
    cmd.args(["serve", "--db", &db, "--listen", "127.0.0.1:0"])
        .args(args)
        .env("SIGNOFF_LOG", "info")
        .env_remove("SIGNOFF_CONFIG");
    support::spawn_reading_lines(cmd, dir.path().join("serve.log"), n)
}

/// `http://127.0.0.1:PORT` from `signoff listening on http://127.0.0.1:PORT/`.
fn bound(line: &str) -> String {
    line.strip_prefix("signoff listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{line:?}"))
        .trim_end_matches('/')
        .parse::<u16>()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[tokio::test]
async fn the_start_up_line_names_what_is_bound_and_the_public_url_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (proc, lines) = serve(&dir, &["--public-url", "https://app.example.com"], 2);
    let at = bound(&lines[0]);
    assert_eq!(lines[1], "public URL: https://app.example.com/");
    let r = get(&format!("{at}/.signoff/login"), &[]).await;
    assert_eq!(r.status, 200, "what is printed is what answers");
    let log = proc.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("the public URL is https, but signoff serves plain HTTP"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    for needle in [
        "public_url=https://app.example.com",
        &format!("listening={at}"),
        "--trusted-proxy",
        "--tls-cert",
    ] {
        assert!(warning.contains(needle), "{needle}: {warning}");
    }
    // The store it opened, by its full path.
    let db = dir.path().join("signoff.db").canonicalize().unwrap();
    assert!(
        log.lines().any(|l| l.contains("session store ready")
            && l.contains(&format!("db=sqlite://{}", db.display()))),
        "{log}"
    );
    drop(proc);

    // A TLS proxy in front, named: no warning.
    let dir = tempfile::tempdir().unwrap();
    let (proc, lines) = serve(
        &dir,
        &[
            "--public-url",
            "https://app.example.com",
            "--trusted-proxy",
            "127.0.0.1",
        ],
        2,
    );
    bound(&lines[0]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !proc.log_text().contains("serves plain HTTP here"),
        "{}",
        proc.log_text()
    );
    drop(proc);

    // Forward-auth behind a proxy on another port: the proxy's port is the
    // public URL's, not what signoff listens on.
    let dir = tempfile::tempdir().unwrap();
    let (proc, lines) = serve(&dir, &["--public-url", "http://127.0.0.1:8000"], 2);
    let at = bound(&lines[0]);
    assert_ne!(at, "http://127.0.0.1:8000");
    assert_eq!(lines[1], "public URL: http://127.0.0.1:8000/");
    assert_eq!(get(&format!("{at}/.signoff/login"), &[]).await.status, 200);
    drop(proc);

    // Without --public-url: one line, the bound address.
    let dir = tempfile::tempdir().unwrap();
    let (proc, lines) = serve(&dir, &[], 1);
    let at = bound(&lines[0]);
    assert_eq!(get(&format!("{at}/.signoff/login"), &[]).await.status, 200);
    drop(proc);
}
