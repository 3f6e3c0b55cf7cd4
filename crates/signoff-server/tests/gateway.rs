//! The gateway over HTTP: a real `signoff serve` process in front of a
//! real upstream process (Python). Each test names the invariant of
//! docs/security.md it guards.

mod support;

// The list `signoff serve` strips, as the examples do.
#[allow(dead_code)]
#[path = "../src/gateway/identity_headers.rs"]
mod identity_headers;

use std::time::{Duration, Instant};

use http::Method;
use support::{
    cookie, get, post_form, raw_get, request, seen, Gateway, Reply, Upstream, PASSWORD, USER,
};

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

fn start(extra: &[&str]) -> Option<(Upstream, Gateway)> {
    let upstream = Upstream::start()?;
    let gateway = Gateway::start(&upstream.url(), extra);
    Some((upstream, gateway))
}

async fn alive(gw: &Gateway, token: &str) -> bool {
    let reply = get(&gw.url("/echo"), &[("cookie", &cookie(token))]).await;
    match reply.status {
        200 => true,
        401 => false,
        other => panic!("unexpected {other}: {}", reply.text()),
    }
}

#[tokio::test]
async fn unauthenticated_requests_never_reach_the_upstream() {
    let Some((_up, gw)) = start(&[]) else { return };
    let browser = get(&gw.url("/private/x?a=1&b=2"), &[HTML]).await;
    assert_eq!(browser.status, 303);
    assert_eq!(
        browser.header("location"),
        Some("/.signoff/login?next=%2Fprivate%2Fx%3Fa%3D1%26b%3D2")
    );
    assert_eq!(browser.header("cache-control"), Some("no-store"));
    assert!(!browser.text().contains("PRIVATE"));

    let api = get(&gw.url("/echo"), &[("accept", "application/json")]).await;
    assert_eq!(api.status, 401);
    assert!(api
        .header("www-authenticate")
        .is_some_and(|v| v.contains("realm=\"signoff\"")));
    assert_eq!(api.header("cache-control"), Some("no-store"));

    // A made-up or malformed cookie is no better, and gets expired.
    // "A" x 64 has a token's shape, with a seal that does not verify; 43
    // characters was the shape of tokens before seals.
    for bad in [
        "A".repeat(64),
        "A".repeat(43),
        "x".to_owned(),
        "%00".repeat(5000),
    ] {
        let r = get(&gw.url("/echo"), &[("cookie", &cookie(&bad))]).await;
        assert_eq!(r.status, 401, "{bad:.20}");
        assert!(r.all("set-cookie").iter().any(|c| c.contains("Max-Age=0")));
    }
}

#[tokio::test]
async fn login_sets_a_fresh_cookie_and_redirects_to_next() {
    let Some((_up, gw)) = start(&[]) else { return };
    let page = get(&gw.url("/.signoff/login?next=/private/a"), &[]).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
    assert!(html.contains("value=\"/private/a\""));
    assert_eq!(page.header("cache-control"), Some("no-store"));

    let reply = post_form(
        &gw.url("/.signoff/login"),
        &[
            ("username", USER),
            ("password", PASSWORD),
            ("next", "/private/a?x=1"),
        ],
        &[("origin", &gw.origin)],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/private/a?x=1"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let set = reply.all("set-cookie").join("\n");
    assert!(set.starts_with("signoff="), "{set}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP on loopback drops Secure"
    );
    let token = reply.new_cookie("signoff").unwrap();

    let echo = get(&gw.url("/echo"), &[("cookie", &cookie(&token))]).await;
    assert_eq!(seen(&echo, "x-signoff-user"), [USER]);
    assert_eq!(seen(&echo, "x-signoff-session")[0].len(), 12);
    assert_eq!(seen(&echo, "x-signoff-csrf")[0].len(), 43);
    assert!(
        gw.proc
            .log_text()
            .contains("plain HTTP on a loopback address"),
        "the insecure cookie is warned about"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let Some((_up, gw)) = start(&[]) else { return };
    let attempt = |user: &'static str, password: &'static str| {
        let url = gw.url("/.signoff/login");
        let origin = gw.origin.clone();
        async move {
            let start = Instant::now();
            let r = post_form(
                &url,
                &[("username", user), ("password", password)],
                &[("origin", &origin)],
            )
            .await;
            (r, start.elapsed())
        }
    };
    let (wrong, _) = attempt(USER, "not the password").await;
    let (unknown, _) = attempt("mallory", "not the password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert!(wrong.new_cookie("signoff").is_none() && unknown.new_cookie("signoff").is_none());
    assert_eq!(
        wrong.text().replace(USER, "NAME"),
        unknown.text().replace("mallory", "NAME"),
        "the page must not tell which one was wrong"
    );
    // Timing: both do one full Argon2id verification. Compare medians.
    let mut t_wrong = Vec::new();
    let mut t_unknown = Vec::new();
    for i in 0..5 {
        // Distinct names keep the per-account limit out of the way.
        let user: &'static str = ["u1", "u2", "u3", "u4", "u5"][i];
        t_unknown.push(attempt(user, "x-password").await.1);
        t_wrong.push(attempt(USER, "y-password").await.1);
    }
    t_wrong.sort();
    t_unknown.sort();
    let (a, b) = (t_wrong[2].as_secs_f64(), t_unknown[2].as_secs_f64());
    assert!(
        a / b < 2.0 && b / a < 2.0,
        "wrong password {a:.3}s vs unknown user {b:.3}s"
    );
}

/// An account whose stored hash cannot be verified (garbled, or an imported
/// hash beyond the cost bounds) answers like a wrong password, counts
/// towards the throttle, and the log says how to fix it.
#[tokio::test]
async fn an_unreadable_stored_hash_answers_like_a_wrong_password() {
    let Some((_up, gw)) = start(&[]) else { return };
    let file = gw.db.strip_prefix("sqlite://").unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute(\"UPDATE users SET password_hash = 'pbkdf2:sha256:99999999$salt$00' WHERE name = ?\", (sys.argv[2],))\n\
             c.commit()",
            file,
            USER,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attempt = |user: &'static str| {
        let url = gw.url("/.signoff/login");
        let origin = gw.origin.clone();
        async move {
            post_form(
                &url,
                &[("username", user), ("password", "whatever password")],
                &[("origin", &origin)],
            )
            .await
        }
    };
    let corrupt = attempt(USER).await;
    let unknown = attempt("mallory").await;
    assert_eq!(corrupt.status, 401, "{}", corrupt.text());
    assert_eq!(
        corrupt.text().replace(USER, "NAME"),
        unknown.text().replace("mallory", "NAME")
    );
    assert!(gw.proc.log_text().contains("signoff user passwd"));
    // Throttled like wrong passwords: the default gives 5 free failures.
    let mut throttled = false;
    for _ in 0..8 {
        if attempt(USER).await.status == 429 {
            throttled = true;
            break;
        }
    }
    assert!(
        throttled,
        "failures on an unreadable hash are never throttled"
    );
}

#[tokio::test]
async fn repeated_failures_are_slowed_per_account_without_locking_the_owner_out() {
    let Some((_up, gw)) = start(&["--trusted-proxy", "127.0.0.1"]) else {
        return;
    };
    let url = gw.url("/.signoff/login");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = post_form(
            &url,
            &[("username", USER), ("password", "guess-guess")],
            &[("origin", &gw.origin)],
        )
        .await;
        statuses.push(r.status);
        if r.status == 429 {
            let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=30).contains(&wait), "{wait}");
            // "1 second", "2 seconds": never "1 seconds".
            let says = match wait {
                1 => "Try again in 1 second.".to_owned(),
                n => format!("Try again in {n} seconds."),
            };
            assert!(r.text().contains(&says), "{says}: {}", r.text());
        }
    }
    assert_eq!(&statuses[..5], [401; 5], "five free failures");
    assert_eq!(
        statuses[5], 401,
        "the sixth is checked, then the delays start"
    );
    assert_eq!(statuses[6], 429);
    // Too early, even with the right password: refused without a check.
    let r = post_form(
        &url,
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &gw.origin)],
    )
    .await;
    assert_eq!(r.status, 429);
    // The owner, from their own address, is not slowed by the attacker.
    let r = post_form(
        &url,
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &gw.origin), ("x-forwarded-for", "203.0.113.5")],
    )
    .await;
    assert_eq!(r.status, 303, "the owner was locked out: {}", r.text());
    // After the (capped, short) delay the attacker's address may try again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = post_form(
        &url,
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &gw.origin)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
}

#[tokio::test]
async fn every_open_redirect_vector_lands_on_the_home_page() {
    let Some((_up, gw)) = start(&[]) else { return };
    let vectors = [
        "//evil.example",
        "//evil.example/x",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/\t/evil.example",
        "%2F%2Fevil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "%252F%252Fevil.example",
        "/%09/evil.example",
    ];
    for next in vectors {
        // The form keeps only a safe value...
        let q: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let page = get(&gw.url(&format!("/.signoff/login?next={q}")), &[]).await;
        assert!(
            page.text().contains("name=\"next\" value=\"/\""),
            "{next:?}"
        );
        // ...and a forged form post is redirected home, not away.
        let r = post_form(
            &gw.url("/.signoff/login"),
            &[("username", USER), ("password", PASSWORD), ("next", next)],
            &[("origin", &gw.origin)],
        )
        .await;
        assert_eq!(r.status, 303, "{next:?}");
        assert_eq!(r.header("location"), Some("/"), "{next:?}");
    }
}

#[tokio::test]
async fn pre_login_cookie_is_worthless_after_login() {
    let Some((_up, gw)) = start(&[]) else { return };
    let first = gw.login(USER, PASSWORD).await;
    // Logging in again while presenting the old cookie rotates it away.
    let reply = post_form(
        &gw.url("/.signoff/login"),
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &gw.origin), ("cookie", &cookie(&first))],
    )
    .await;
    let second = reply.new_cookie("signoff").unwrap();
    assert_ne!(first, second);
    assert!(
        !alive(&gw, &first).await,
        "the planted/pre-login token died at login"
    );
    assert!(alive(&gw, &second).await);
    // A value the attacker made up is never adopted.
    let planted = "B".repeat(64);
    let reply = post_form(
        &gw.url("/.signoff/login"),
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &gw.origin), ("cookie", &cookie(&planted))],
    )
    .await;
    assert_ne!(reply.new_cookie("signoff").unwrap(), planted);
    assert!(!alive(&gw, &planted).await);
}

#[tokio::test]
async fn logout_is_final_and_clears_the_browser() {
    let Some((_up, gw)) = start(&[]) else { return };
    let token = gw.login(USER, PASSWORD).await;
    assert!(alive(&gw, &token).await);
    let reply = post_form(
        &gw.url("/.signoff/logout"),
        &[],
        &[("origin", &gw.origin), ("cookie", &cookie(&token))],
    )
    .await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/.signoff/signed-out"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(
        reply.header("clear-site-data"),
        Some("\"cache\", \"cookies\", \"storage\", \"prefetchCache\", \"prerenderCache\"")
    );
    let expired = reply.all("set-cookie").join("\n");
    assert!(expired.starts_with("signoff=;"), "{expired}");
    for attr in ["Max-Age=0", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(expired.contains(attr), "{expired} lacks {attr}");
    }
    // Replaying the captured cookie is refused.
    assert!(!alive(&gw, &token).await);
    let replay = get(&gw.url("/private/a"), &[HTML, ("cookie", &cookie(&token))]).await;
    assert_eq!(replay.status, 303);
    assert!(!replay.text().contains("PRIVATE"));
    // The signed-out page is public and unstorable.
    let out = get(&gw.url("/.signoff/signed-out"), &[]).await;
    assert_eq!(out.status, 200);
    assert_eq!(out.header("cache-control"), Some("no-store"));

    // Idempotent: again, or with garbage, it still clears the browser.
    for c in [cookie(&token), cookie("garbage"), String::new()] {
        let again = post_form(
            &gw.url("/.signoff/logout"),
            &[],
            &[("origin", &gw.origin), ("cookie", &c)],
        )
        .await;
        assert_eq!(again.status, 303, "{c}");
        assert!(again.header("clear-site-data").is_some());
        assert!(again.all("set-cookie").join("").contains("Max-Age=0"));
    }
}

#[tokio::test]
async fn forged_logouts_leave_the_session_alive() {
    let Some((_up, gw)) = start(&[]) else { return };
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    let echo = get(&gw.url("/echo"), &[("cookie", &c)]).await;
    let csrf = seen(&echo, "x-signoff-csrf").remove(0);
    let url = gw.url("/.signoff/logout");

    // GET changes nothing.
    let r = get(&url, &[("cookie", &c)]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("clear-site-data").is_none());
    assert!(alive(&gw, &token).await);

    // Cross-site POSTs, header-less POSTs, wrong tokens: 403.
    let forgeries: [&[(&str, &str)]; 6] = [
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[],
        &[(
            "x-signoff-csrf",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
    ];
    for extra in forgeries {
        let mut headers = vec![("cookie", c.as_str())];
        headers.extend_from_slice(extra);
        let r = post_form(&url, &[], &headers).await;
        assert_eq!(r.status, 403, "{extra:?}");
        assert!(r.header("clear-site-data").is_none(), "{extra:?}");
        assert!(r.all("set-cookie").is_empty(), "{extra:?}");
        assert!(alive(&gw, &token).await, "{extra:?} ended the session");
    }
    // A valid token from a cross-site page is still refused.
    let r = post_form(
        &url,
        &[("csrf", &csrf)],
        &[("cookie", &c), ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(alive(&gw, &token).await);
    // A token for another session does not work either.
    let other = gw.login(USER, PASSWORD).await;
    let other_csrf = seen(
        &get(&gw.url("/echo"), &[("cookie", &cookie(&other))]).await,
        "x-signoff-csrf",
    )
    .remove(0);
    let r = post_form(&url, &[("csrf", &other_csrf)], &[("cookie", &c)]).await;
    assert_eq!(r.status, 403);
    assert!(alive(&gw, &token).await);

    // The real thing, with only the CSRF token (no Origin): accepted.
    let r = post_form(&url, &[("csrf", &csrf)], &[("cookie", &c)]).await;
    assert_eq!(r.status, 303);
    assert!(!alive(&gw, &token).await);
    // And with only Sec-Fetch-Site: same-origin (a plain upstream form).
    let r = post_form(
        &url,
        &[],
        &[
            ("cookie", &cookie(&other)),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(!alive(&gw, &other).await);
}

#[tokio::test]
async fn cross_site_login_posts_are_refused() {
    let Some((_up, gw)) = start(&[]) else { return };
    let r = post_form(
        &gw.url("/.signoff/login"),
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.new_cookie("signoff").is_none());
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let Some((_up, gw)) = start(&["--public-path", "/public/"]) else {
        return;
    };
    let token = gw.login(USER, PASSWORD).await;
    let spoofed = [
        ("x-signoff-user", "admin"),
        ("X-Signoff-Session", "AAAAAAAAAAAA"),
        ("x-signoff-csrf", "forged"),
        ("x-signoff-auth-time", "4102444800"),
        ("remote-user", "admin"),
        ("x-forwarded-user", "admin"),
        ("x-auth-request-user", "admin"),
        ("x-auth-request-email", "admin@example.com"),
        ("x-forwarded-for", "10.9.9.9"),
        ("x-real-ip", "10.9.9.9"),
        // Some app servers read `_` as `-`.
        ("remote_user", "admin"),
        ("x_signoff_user", "admin"),
        ("x_forwarded_for", "10.9.9.9"),
        // Some frameworks route by these.
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-forwarded-prefix", "/evil"),
    ];
    let c = cookie(&token);
    let mut headers = vec![("cookie", format!("{c}; theme=dark"))];
    headers.extend(spoofed.iter().map(|(k, v)| (*k, v.to_string())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let echo = get(&gw.url("/echo"), &headers).await;
    assert_eq!(seen(&echo, "x-signoff-user"), [USER]);
    let handle = seen(&echo, "x-signoff-session");
    assert!(
        handle.len() == 1 && handle[0].len() == 12 && handle[0] != "AAAAAAAAAAAA",
        "{handle:?}"
    );
    let csrf = seen(&echo, "x-signoff-csrf");
    assert!(csrf.len() == 1 && csrf[0].len() == 43, "{csrf:?}");
    let auth_time = seen(&echo, "x-signoff-auth-time");
    assert!(
        auth_time.len() == 1 && auth_time[0] != "4102444800",
        "{auth_time:?}"
    );
    for name in [
        "remote-user",
        "x-forwarded-user",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-real-ip",
        "remote_user",
        "x_signoff_user",
        "x_forwarded_for",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-prefix",
    ] {
        assert!(seen(&echo, name).is_empty(), "{name} reached the upstream");
    }
    assert_eq!(
        seen(&echo, "x-forwarded-for"),
        ["127.0.0.1"],
        "not from a trusted proxy"
    );
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["http"]);
    // The session token is for signoff only; the app's own cookies pass.
    assert_eq!(seen(&echo, "cookie"), ["theme=dark"]);

    // Public paths: no session needed, and still no spoofing.
    let public = get(&gw.url("/public/echo"), &headers).await;
    assert!(seen(&public, "x-signoff-user").is_empty());
    assert!(seen(&public, "remote-user").is_empty());
    assert_eq!(seen(&public, "cookie"), ["theme=dark"]);
    let anonymous = get(&gw.url("/public/echo"), &[("x-signoff-user", "admin")]).await;
    assert!(seen(&anonymous, "x-signoff-user").is_empty());

    // Every name on the list, in every spelling, signed in and on a public
    // path with and without a session: nothing the client sent arrives.
    for name in identity_headers::concrete_names() {
        let (plain, mixed) = identity_headers::spellings(&name);
        for (path, session) in [
            ("/echo", true),
            ("/public/echo", false),
            ("/public/echo", true),
        ] {
            let mut headers = vec![("x-control", "kept")];
            if session {
                headers.push(("cookie", &c));
            }
            headers.extend(plain.iter().chain(&mixed).map(|n| (n.as_str(), "mallory")));
            let echo = get(&gw.url(path), &headers).await;
            assert_eq!(seen(&echo, "x-control"), ["kept"]);
            for pair in echo.json()["headers"].as_array().unwrap() {
                assert!(
                    !pair[1].as_str().unwrap().contains("mallory"),
                    "{path}: {pair} reached the upstream"
                );
            }
            let user = seen(&echo, "x-signoff-user");
            if path == "/echo" {
                assert_eq!(user, [USER], "{name}");
            } else {
                assert!(user.is_empty(), "{name}");
            }
        }
    }
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let Some((_up, gw)) = start(&["--trusted-proxy", "127.0.0.1"]) else {
        return;
    };
    let token = gw.login(USER, PASSWORD).await;
    let echo = get(
        &gw.url("/echo"),
        &[
            ("cookie", &cookie(&token)),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    )
    .await;
    assert_eq!(seen(&echo, "x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
}

#[tokio::test]
async fn public_paths_need_no_session_but_tricks_do_not_widen_them() {
    let Some((_up, gw)) = start(&["--public-path", "/public/,/health"]) else {
        return;
    };
    let page = get(&gw.url("/public/page"), &[HTML]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("cache-control"),
        Some("public, max-age=600"),
        "anonymous public pages keep their caching"
    );
    assert_eq!(get(&gw.url("/health"), &[]).await.status, 200);
    for sneaky in [
        "/health/x",
        "/healthx",
        "/public/../echo",
        "/public/%2e%2e/echo",
        "/public/%2E%2E/echo",
        "/public/..%2Fecho",
        "/public//echo/../../echo",
        "/public/.%2e/echo",
        "/public/..;/echo",
        "/public/%252e%252e/echo",
        "/public/x;/../echo",
        // Overlong UTF-8, IIS %u and full-width forms of the dot.
        "/public/%c0%ae%c0%ae/echo",
        "/public/%C0%AE./echo",
        "/public/%e0%80%ae%e0%80%ae/echo",
        "/public/%u002e%u002e/echo",
        "/public/%ef%bc%8e%ef%bc%8e/echo",
        "/public/%2e%2e%5cecho",
    ] {
        let r = get(&gw.url(sneaky), &[]).await;
        assert_eq!(r.status, 401, "{sneaky} passed without a session");
    }
}

#[tokio::test]
async fn authenticated_responses_are_never_stored() {
    let Some((_up, gw)) = start(&[]) else { return };
    let token = gw.login(USER, PASSWORD).await;
    let r = get(
        &gw.url("/cacheable"),
        &[("cookie", &cookie(&token)), ("if-none-match", "\"v1\"")],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "a validator must not earn a 304 for an unstorable page"
    );
    assert_eq!(r.all("cache-control"), ["no-store"]);
    for gone in ["etag", "last-modified", "expires"] {
        assert!(r.header(gone).is_none(), "{gone} survived");
    }
    assert!(r
        .all("vary")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("cookie")));
    // Own pages, redirects and errors too.
    for (path, status) in [
        ("/.signoff/login", 200),
        ("/.signoff/status", 200),
        ("/.signoff/healthz", 200),
        ("/.signoff/nope", 404),
    ] {
        let r = get(&gw.url(path), &[("cookie", &cookie(&token))]).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }
    // A wrong method on an own route (405) is unstorable too.
    let r = request(Method::PUT, &gw.url("/.signoff/login"), &[], None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // The upstream cannot set (or steal) signoff's cookie.
    let r = get(&gw.url("/set-cookie"), &[("cookie", &cookie(&token))]).await;
    assert_eq!(r.all("set-cookie"), ["theme=dark; Path=/"]);
}

/// `--brand-*`: the name on every page, the logo and the accent served from
/// signoff's own origin with headers that keep them inert, the sessions
/// page's times and script, and no inline code anywhere.
#[tokio::test]
async fn branding_shows_and_its_files_are_served_inert() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("logo.svg");
    std::fs::write(
        &svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
    )
    .unwrap();
    let svg = svg.to_str().unwrap();
    let Some((_up, gw)) = start(&[
        "--brand-name",
        "Acme <Wiki>",
        "--brand-logo",
        svg,
        "--brand-accent",
        "#7B2CBF",
    ]) else {
        return;
    };
    let login = get(&gw.url("/.signoff/login"), &[]).await;
    let html = login.text();
    assert!(
        html.contains("<title>Sign in · Acme &#60;Wiki&#62;</title>"),
        "{html}"
    );
    assert!(html.contains("<span>Acme &#60;Wiki&#62;</span>"), "{html}");
    assert!(html.contains("Protected by signoff"), "{html}");
    let csp = login.header("content-security-policy").unwrap().to_owned();
    assert!(
        !csp.contains("script-src") && csp.contains("img-src 'self'"),
        "{csp}"
    );

    let img_at = html.find("<img src=\"").unwrap() + 10;
    let logo_url = &html[img_at..img_at + html[img_at..].find('"').unwrap()];
    assert!(
        logo_url.starts_with("/.signoff/brand/logo?v="),
        "{logo_url}"
    );
    let logo = get(&gw.url(logo_url), &[]).await;
    assert_eq!(logo.status, 200);
    assert_eq!(logo.header("content-type"), Some("image/svg+xml"));
    assert_eq!(logo.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        logo.header("content-security-policy"),
        Some("default-src 'none'; style-src 'unsafe-inline'; sandbox")
    );
    assert_eq!(
        logo.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(logo.text().contains("<svg"));

    assert!(html.contains("<link rel=\"stylesheet\" href=\"/.signoff/brand.css?v=7b2cbf\">"));
    let css = get(&gw.url("/.signoff/brand.css?v=7b2cbf"), &[]).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("x-content-type-options"), Some("nosniff"));
    let (_, rules) = css
        .text()
        .split_once("*/")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    assert_eq!(
        rules.trim(),
        ":root {\n  --accent: #7b2cbf;\n  --on-accent: #ffffff;\n}"
    );
    // Not given: not served.
    let none = get(&gw.url("/.signoff/brand/extra.css"), &[]).await;
    assert_eq!(none.status, 404);

    // The sessions page: <time datetime>, English, and its one script.
    let token = gw.login(USER, PASSWORD).await;
    let page = get(
        &gw.url("/.signoff/sessions"),
        &[("cookie", &cookie(&token))],
    )
    .await;
    let html = page.text();
    assert!(html.contains("<time datetime=\"20"), "{html}");
    assert!(html.contains(">just now</time>"), "{html}");
    assert!(
        html.contains("<script src=\"/.signoff/signoff.js\" defer></script>"),
        "{html}"
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let js = get(&gw.url("/.signoff/signoff.js"), &[]).await;
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(js.header("x-content-type-options"), Some("nosniff"));
    assert!(js.text().contains("Intl.RelativeTimeFormat"));
}

/// `--template-dir`: its stylesheet replaces the built-in one, its extra
/// stylesheet and raster logo are served with their types.
#[tokio::test]
async fn a_template_dir_restyles_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signoff.css"), "body { color: teal }").unwrap();
    std::fs::write(dir.path().join("extra.css"), ".brand { gap: 0 }").unwrap();
    std::fs::write(dir.path().join("logo.png"), b"\x89PNG\r\n\x1a\nrest").unwrap();
    let Some((_up, gw)) = start(&["--template-dir", dir.path().to_str().unwrap()]) else {
        return;
    };
    let css = get(&gw.url("/.signoff/signoff.css"), &[]).await;
    assert_eq!(css.text(), "body { color: teal }");
    let html = get(&gw.url("/.signoff/login"), &[]).await.text();
    assert!(html.contains("<span>signoff</span>"), "{html}");
    let at = html.find("/.signoff/brand/extra.css?v=").unwrap();
    let extra_url = &html[at..at + html[at..].find('"').unwrap()];
    let extra = get(&gw.url(extra_url), &[]).await;
    assert_eq!(extra.text(), ".brand { gap: 0 }");
    assert_eq!(
        extra.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    let at = html.find("/.signoff/brand/logo?v=").unwrap();
    let logo_url = &html[at..at + html[at..].find('"').unwrap()];
    let logo = get(&gw.url(logo_url), &[]).await;
    assert_eq!(logo.header("content-type"), Some("image/png"));
    assert_eq!(logo.header("x-content-type-options"), Some("nosniff"));
    assert!(logo.header("content-security-policy").is_none());
    // No accent given: no accent stylesheet.
    assert!(!html.contains("brand.css"), "{html}");
    assert_eq!(get(&gw.url("/.signoff/brand.css"), &[]).await.status, 404);
}

/// `--template-dir` with page overrides: the login page is the operator's
/// and still signs in through its form, under the built-in page's headers;
/// the sessions page lists sessions.
#[tokio::test]
async fn a_template_dir_overrides_whole_pages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("login.html"),
        r#"<!doctype html>
<html lang="en">
<head><title>Sign in to {{ brand.name }}</title>
{% for href in brand.stylesheets %}<link rel="stylesheet" href="{{ href }}">{% endfor %}
</head>
<body>
<h1>Welcome to the Acme portal</h1>
{% if error %}<p role="alert">{{ error }} ({{ username }})</p>{% endif %}
<form method="post" action="{{ prefix }}/login">
<input type="hidden" name="next" value="{{ next }}">
<input name="username" value="{{ username }}" autocomplete="username" required>
<input name="password" type="password" autocomplete="current-password" required>
{% if remember %}<label><input name="remember" type="checkbox" value="1"> Remember me for {{ remember }}</label>{% endif %}
<button>Sign in</button>
</form>
</body>
</html>
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sessions.html"),
        r#"<h1>Acme sessions of {{ user }}</h1>
<ul>{% for s in rows %}<li>{{ s.device }} from {{ s.ip }}{% if s.current %} (here){% endif %}</li>{% endfor %}</ul>
<form method="post" action="{{ prefix }}/sessions/end-others"><input type="hidden" name="csrf" value="{{ csrf }}"><button>Sign out everywhere else</button></form>
"#,
    )
    .unwrap();
    let Some((_up, plain)) = start(&[]) else {
        return;
    };
    let built_in = get(&plain.url("/.signoff/login?next=%2Fdocs"), &[]).await;
    let Some((_up2, gw)) = start(&["--template-dir", dir.path().to_str().unwrap()]) else {
        return;
    };
    let page = get(&gw.url("/.signoff/login?next=%2Fdocs"), &[]).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains("<h1>Welcome to the Acme portal</h1>"),
        "{html}"
    );
    assert!(html.contains("<title>Sign in to signoff</title>"), "{html}");
    assert!(
        html.contains("<input type=\"hidden\" name=\"next\" value=\"&#x2f;docs\">"),
        "{html}"
    );
    assert!(
        html.contains("<link rel=\"stylesheet\" href=\"&#x2f;.signoff&#x2f;signoff.css\">"),
        "{html}"
    );
    assert!(!html.contains("Protected by signoff"), "{html}");
    for header in [
        "content-security-policy",
        "content-type",
        "x-frame-options",
        "referrer-policy",
        "cache-control",
    ] {
        assert_eq!(page.header(header), built_in.header(header), "{header}");
    }
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .starts_with("default-src 'none';"));

    // A wrong password: the override again, with what the client sent
    // escaped.
    let origin = [("origin", gw.origin.as_str())];
    let wrong = post_form(
        &gw.url("/.signoff/login"),
        &[
            ("next", "/docs"),
            ("username", "<script>alert(1)</script>"),
            ("password", "wrong"),
        ],
        &origin,
    )
    .await;
    let html = wrong.text();
    assert!(html.contains("Welcome to the Acme portal"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    assert_eq!(
        wrong.header("content-security-policy"),
        built_in.header("content-security-policy")
    );

    // The override's form signs in.
    let signed_in = post_form(
        &gw.url("/.signoff/login"),
        &[
            ("next", "/docs"),
            ("username", USER),
            ("password", PASSWORD),
        ],
        &origin,
    )
    .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    assert_eq!(signed_in.header("location"), Some("/docs"));
    let token = signed_in.new_cookie("signoff").expect("a session cookie");
    let other = gw.login(USER, PASSWORD).await;
    assert_ne!(token, other);

    // The sessions page lists both sessions, and ends the other one.
    let c = cookie(&token);
    let sessions = get(&gw.url("/.signoff/sessions"), &[("cookie", &c)]).await;
    assert_eq!(sessions.status, 200);
    let html = sessions.text();
    assert!(html.contains("<h1>Acme sessions of alice</h1>"), "{html}");
    assert_eq!(html.matches("<li>").count(), 2, "{html}");
    assert_eq!(html.matches(" (here)</li>").count(), 1, "{html}");
    assert!(
        sessions
            .header("content-security-policy")
            .unwrap()
            .contains("script-src 'self';"),
        "the sessions page keeps its own CSP"
    );
    let ended = post_form(
        &gw.url("/.signoff/sessions/end-others"),
        &[("csrf", &support::csrf_in(&html))],
        &[("cookie", &c), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(ended.status, 303, "{}", ended.text());
    // Ending the others renews this session's token.
    let renewed = cookie(&ended.new_cookie("signoff").expect("a renewed cookie"));
    let html = get(
        &gw.url("/.signoff/sessions?ended=1"),
        &[("cookie", &renewed)],
    )
    .await
    .text();
    assert_eq!(html.matches("<li>").count(), 1, "{html}");
    assert_eq!(html.matches(" (here)</li>").count(), 1, "{html}");
}

#[tokio::test]
async fn status_tells_the_guard_whether_the_session_lives() {
    let Some((_up, gw)) = start(&[]) else { return };
    let token = gw.login(USER, PASSWORD).await;
    let url = gw.url("/.signoff/status");
    let r = get(&url, &[("cookie", &cookie(&token))]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "{\"signed_in\":true}"));
    assert!(!r.text().contains(&token));
    let r = get(&url, &[]).await;
    assert_eq!(r.status, 401);
    let js = get(&gw.url("/.signoff/guard.js"), &[]).await;
    assert_eq!(js.status, 200);
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.text().contains("pageshow"));
}

#[tokio::test]
async fn guard_is_injected_under_a_strict_csp_and_nothing_else_is_allowed() {
    let Some((_up, gw)) = start(&[]) else { return };
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    let js = get(&gw.url("/.signoff/guard.js"), &[]).await.text();
    let tag = format!("<script>{js}</script>");
    let r = get(&gw.url("/csp"), &[("cookie", &c)]).await;
    let body = r.text();
    assert_eq!(body.matches(&tag).count(), 1, "{body}");
    assert!(body.starts_with(&format!("<!doctype html><html><head>{tag}<title>")));
    // A small page that arrives whole keeps a length, the tag's included.
    // The upstream writes its headers and its body apart: a body later
    // than the gateway waits for (250 ms, on a loaded machine) streams
    // without one. Never a wrong length; the right one at least once.
    let mut lengths = vec![r.header("content-length").map(str::to_owned)];
    for _ in 0..2 {
        let again = get(&gw.url("/csp"), &[("cookie", &c)]).await;
        assert_eq!(again.text(), body);
        lengths.push(again.header("content-length").map(str::to_owned));
    }
    let right = body.len().to_string();
    assert!(lengths.iter().flatten().all(|n| *n == right), "{lengths:?}");
    assert!(
        lengths.iter().any(|n| n.as_deref() == Some(&right)),
        "{lengths:?}"
    );
    let csp = r.header("content-security-policy").unwrap();
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(js.as_bytes()));
    // The policy blocks requests (default-src 'none'): the guard's status
    // request, exactly that URL, is let through too.
    assert_eq!(
        csp,
        format!(
            "default-src 'none'; script-src 'self' 'sha256-{hash}'; style-src 'self'; \
             connect-src {}/.signoff/status",
            gw.origin
        ),
        "only the guard's hash and status request are added"
    );

    // Not injected when turned off.
    let Some((_up2, plain)) = start(&["--inject-guard", "false"]) else {
        return;
    };
    let t = plain.login(USER, PASSWORD).await;
    let r = get(&plain.url("/csp"), &[("cookie", &cookie(&t))]).await;
    assert!(!r.text().contains("<script>"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; script-src 'self'; style-src 'self'")
    );
}

#[tokio::test]
async fn gzip_pages_are_rewritten_and_other_bodies_pass_byte_for_byte() {
    let Some((_up, gw)) = start(&[]) else { return };
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    let r = get(
        &gw.url("/gzip"),
        &[("cookie", &c), ("accept-encoding", "identity")],
    )
    .await;
    assert!(
        r.header("content-encoding").is_none(),
        "decoded for the rewrite, and sent as the client asked"
    );
    let body = r.text();
    assert!(body.contains("PRIVATE upstream page /gzip"), "{body:?}");
    assert_eq!(body.matches("<script>").count(), 1);

    let expected: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(16);
    let r = get(&gw.url("/binary"), &[("cookie", &c)]).await;
    assert_eq!(r.body.as_ref(), expected.as_slice());
    assert_eq!(r.header("content-length"), Some("4096"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let r = get(&gw.url("/echo"), &[("cookie", &c)]).await;
    assert!(!r.text().contains("<script>"), "JSON is not touched");
    // HEAD of an HTML page: headers only, nothing injected.
    let r = request(Method::HEAD, &gw.url("/csp"), &[("cookie", &c)], None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn bodies_are_streamed_with_a_limit() {
    let Some((_up, gw)) = start(&["--max-body-bytes", "100000"]) else {
        return;
    };
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    let ok = request(
        Method::POST,
        &gw.url("/echo"),
        &[("cookie", &c)],
        Some(("application/octet-stream", vec![7; 99_000])),
    )
    .await;
    assert_eq!(ok.json()["body_size"], 99_000);
    let big = request(
        Method::POST,
        &gw.url("/echo"),
        &[("cookie", &c)],
        Some(("application/octet-stream", vec![7; 100_001])),
    )
    .await;
    assert_eq!(big.status, 413);
    assert_eq!(big.header("cache-control"), Some("no-store"));
    // Login and logout forms are small; a huge one is refused early.
    let huge = "x".repeat(20_000);
    let r = post_form(
        &gw.url("/.signoff/login"),
        &[("username", USER), ("password", &huge)],
        &[("origin", &gw.origin)],
    )
    .await;
    assert_eq!(r.status, 413);
    let r = request(
        Method::POST,
        &gw.url("/.signoff/login"),
        &[("origin", &gw.origin)],
        Some(("application/json", b"{}".to_vec())),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = request(
        Method::POST,
        &gw.url("/.signoff/login"),
        &[("origin", &gw.origin)],
        Some((
            "application/x-www-form-urlencoded",
            vec![0xff, 0xfe, b'=', 0x80],
        )),
    )
    .await;
    assert!(r.status == 400 || r.status == 401, "{}", r.status);
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_sessions() {
    let Some((_up, gw)) = start(&["--idle-timeout", "2s", "--absolute-timeout", "4s"]) else {
        return;
    };
    // Idle: two quiet seconds end the session.
    let idle = gw.login(USER, PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(!alive(&gw, &idle).await, "idle timeout");
    // Absolute: activity every ~0.7 s keeps it alive, but not past 4 s.
    let busy = gw.login(USER, PASSWORD).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        assert!(
            alive(&gw, &busy).await,
            "died early at {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!alive(&gw, &busy).await, "absolute timeout");
}

#[tokio::test]
async fn sessions_survive_a_gateway_restart() {
    let Some((_up, gw)) = start(&[]) else { return };
    let token = gw.login(USER, PASSWORD).await;
    let gw = gw.restart();
    assert!(alive(&gw, &token).await);
}

/// `keys rotate-session-key` keeps every live session: the key it stages
/// seals nothing for 90 s, and the key it replaces keeps verifying (the
/// retirement of the oldest key is timed in `tests/session_keys.rs`).
#[tokio::test]
async fn rotating_the_session_key_keeps_sessions() {
    let Some((_up, gw)) = start(&[]) else { return };
    let token = gw.login(USER, PASSWORD).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(support::signoff_bin())
            .args(args)
            .args(["--db", &gw.db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let said = run(&["keys", "rotate-session-key"]);
    assert!(said.contains("new session token key 1"), "{said}");
    let listed = run(&["keys", "list"]);
    assert!(listed.contains("SESSION KEY"), "{listed}");
    assert_eq!(
        listed.lines().filter(|l| l.starts_with(['0', '1'])).count(),
        2,
        "{listed}"
    );
    assert!(alive(&gw, &token).await, "the running node");
    let gw = gw.restart();
    assert!(alive(&gw, &token).await, "a node that loaded both keys");
    let fresh = gw.login(USER, PASSWORD).await;
    assert!(alive(&gw, &fresh).await);
}

#[tokio::test]
async fn unreachable_upstream_gets_a_plain_502() {
    // A port nobody listens on.
    let port = support::services::free_port();
    let gw = Gateway::start(&format!("http://127.0.0.1:{port}"), &[]);
    assert!(
        gw.proc.log_text().contains("not reachable"),
        "{}",
        gw.proc.log_text()
    );
    let token = gw.login(USER, PASSWORD).await;
    let r = get(&gw.url("/x"), &[("cookie", &cookie(&token))]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.text().contains("not reachable"));
}

#[tokio::test]
async fn a_login_flood_does_not_stall_signed_in_users() {
    let Some((_up, gw)) = start(&["--trusted-proxy", "127.0.0.1"]) else {
        return;
    };
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    let measure = |n: usize| {
        let url = gw.url("/echo");
        let c = c.clone();
        async move {
            let mut times = Vec::new();
            for _ in 0..n {
                let start = Instant::now();
                let r = get(&url, &[("cookie", &c)]).await;
                assert_eq!(r.status, 200);
                times.push(start.elapsed());
            }
            times.sort();
            times[times.len() * 99 / 100]
        }
    };
    let idle = measure(100).await;
    // 64 concurrent failing logins, each from its own address and for its
    // own name so that every one costs a full password hash.
    let flood: Vec<_> = (0..64)
        .map(|i| {
            let url = gw.url("/.signoff/login");
            let origin = gw.origin.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for j in 0..3 {
                    let ip = format!("198.51.{i}.{j}");
                    let user = format!("nobody{i}x{j}");
                    let r = post_form(
                        &url,
                        &[("username", &user), ("password", "wrong-password")],
                        &[("origin", &origin), ("x-forwarded-for", &ip)],
                    )
                    .await;
                    statuses.push(r.status);
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let busy = measure(100).await;
    let mut still_running = 0;
    for f in &flood {
        still_running += usize::from(!f.is_finished());
    }
    for f in flood {
        assert_eq!(
            f.await.unwrap(),
            [401, 401, 401],
            "every attempt was really checked"
        );
    }
    assert!(still_running > 0, "the flood ended before the measurement");
    // Idle p99 is well under a millisecond on loopback; allow 5x or 50 ms,
    // whichever is larger, for a debug build on a 2-core machine.
    let bound = (idle * 5).max(Duration::from_millis(50));
    assert!(
        busy <= bound,
        "p99 idle {idle:?}, during the flood {busy:?}"
    );
}

#[tokio::test]
async fn metrics_are_off_unless_asked_for() {
    let Some((_up, gw)) = start(&[]) else {
        return;
    };
    assert_eq!(get(&gw.url("/.signoff/metrics"), &[]).await.status, 404);
    let Some((_up, gw)) = start(&["--metrics"]) else {
        return;
    };
    let reply = get(&gw.url("/.signoff/metrics"), &[]).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(
        text.contains("signoff_store_info{backend=\"sqlite\"} 1"),
        "{text}"
    );
    assert!(text.contains("signoff_session_cache_hits_total"), "{text}");
    assert!(
        text.contains("signoff_session_cache_shared_total 0"),
        "{text}"
    );
    // On SQLite the revocation bus is the watcher of the change log.
    assert!(text.contains("signoff_bus_connected"), "{text}");
    assert!(reply
        .header("cache-control")
        .unwrap_or("")
        .contains("no-store"));
}

/// Decodes a body the gateway compressed for the client.
async fn decoded(reply: &Reply) -> String {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    use tokio::io::AsyncReadExt as _;
    let body: &[u8] = reply.body.as_ref();
    let mut out = Vec::new();
    match reply.header("content-encoding") {
        None => out.extend_from_slice(body),
        Some("zstd") => {
            ZstdDecoder::new(body).read_to_end(&mut out).await.unwrap();
        }
        Some("br") => {
            BrotliDecoder::new(body)
                .read_to_end(&mut out)
                .await
                .unwrap();
        }
        Some("gzip") => {
            GzipDecoder::new(body).read_to_end(&mut out).await.unwrap();
        }
        Some(other) => panic!("unexpected coding {other}"),
    }
    String::from_utf8(out).unwrap()
}

/// Invariant 6 (the guard, docs/security.md): a private HTML page never
/// leaves the gateway without the guard, whatever coding the upstream
/// prefers. The upstream is asked only for codings the gateway reads, the
/// page is compressed again for the client, and a page that still comes in
/// an unreadable coding is refused (or, when the operator accepts the risk,
/// passed on).
#[tokio::test]
async fn a_private_page_never_goes_out_without_its_guard() {
    let Some((_up, gw)) = start(&["--public-path", "/public/"]) else {
        return;
    };
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    // Chromium 156's Accept-Encoding, plus the dictionary codings it may add.
    let chromium = ("accept-encoding", "gzip, deflate, br, zstd, dcb, dcz");
    let echo = get(&gw.url("/echo"), &[("cookie", &c), chromium]).await;
    assert_eq!(seen(&echo, "accept-encoding"), ["zstd, br, gzip, deflate"]);
    let echo = get(
        &gw.url("/echo"),
        &[("cookie", &c), ("accept-encoding", "gzip;q=0.5, dcz")],
    )
    .await;
    assert_eq!(seen(&echo, "accept-encoding"), ["gzip;q=0.5"]);
    // Anonymous requests to public pages get no guard: nothing changes.
    let echo = get(&gw.url("/public/echo"), &[chromium]).await;
    assert_eq!(seen(&echo, "accept-encoding"), [chromium.1]);

    // A server that prefers dcz falls back to gzip, which is decoded,
    // rewritten, and compressed again in the client's best coding.
    for (accept, coding) in [
        ("gzip, deflate, br, zstd, dcb, dcz", Some("zstd")),
        ("gzip, deflate, br, dcz", Some("br")),
        ("gzip, dcz", Some("gzip")),
        ("identity", None),
    ] {
        let r = get(
            &gw.url("/negotiated"),
            &[("cookie", &c), ("accept-encoding", accept)],
        )
        .await;
        assert_eq!(r.status, 200, "{accept}");
        assert_eq!(r.header("content-encoding"), coding, "{accept}");
        assert!(r
            .all("vary")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("accept-encoding")));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let body = decoded(&r).await;
        assert!(body.contains("PRIVATE upstream page /negotiated"), "{body}");
        assert_eq!(body.matches("pageshow").count(), 1, "{accept}: {body}");
    }

    // Still unreadable: refused, with a page that names the coding.
    let r = get(&gw.url("/dcz"), &[("cookie", &c), chromium]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("content-encoding").is_none());
    let text = r.text();
    assert!(
        text.contains("dcz") && text.contains("allow_unguarded_html"),
        "{text}"
    );
    assert!(
        !text.contains("not really"),
        "the upstream body leaked: {text}"
    );

    // Downloads and UTF-16 pages pass untouched (and still unstorable).
    let r = get(&gw.url("/download"), &[("cookie", &c)]).await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("<script>"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = get(&gw.url("/utf16"), &[("cookie", &c)]).await;
    assert_eq!(&r.body[..2], b"\xff\xfe");
    assert!(!r.body.windows(8).any(|w| w == b"<script>"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // An operator who accepts the risk gets the page as it came.
    let Some((_up2, lax)) = start(&["--allow-unguarded-html"]) else {
        return;
    };
    let t = lax.login(USER, PASSWORD).await;
    let r = get(&lax.url("/dcz"), &[("cookie", &cookie(&t)), chromium]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("dcz"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

/// HSTS on HTTPS answers: on by default when signoff serves TLS itself,
/// configurable, and never on plain HTTP.
#[tokio::test]
async fn https_answers_carry_hsts() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        support::missing::<()>("curl (for an HTTPS client)");
        return;
    }
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let (cert_path, key_path) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
    let hsts = |origin: &str, path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-k", "-s", "-o", "/dev/null", "-D", "-", "--max-time", "10"])
            .arg(format!("{origin}{path}"))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(head.starts_with("http/"), "{origin}{path}: {head}");
        head.lines()
            .find_map(|l| l.strip_prefix("strict-transport-security:"))
            .map(|v| v.trim().to_owned())
    };
    let tls = Gateway::start(
        &upstream.url(),
        &[
            "--tls-cert",
            cert_path,
            "--tls-key",
            key_path,
            "--public-path",
            "/public/",
        ],
    );
    assert!(tls.origin.starts_with("https://"), "{}", tls.origin);
    for path in [
        "/.signoff/login",
        "/public/page",
        "/private",
        "/.signoff/nope",
    ] {
        assert_eq!(
            hsts(&tls.origin, path).as_deref(),
            Some("max-age=31536000"),
            "{path}"
        );
    }
    let custom = Gateway::start(
        &upstream.url(),
        &[
            "--tls-cert",
            cert_path,
            "--tls-key",
            key_path,
            "--hsts",
            "max-age=60; includeSubDomains",
        ],
    );
    assert_eq!(
        hsts(&custom.origin, "/.signoff/login").as_deref(),
        Some("max-age=60; includesubdomains")
    );
    let off = Gateway::start(
        &upstream.url(),
        &[
            "--tls-cert",
            cert_path,
            "--tls-key",
            key_path,
            "--hsts",
            "off",
        ],
    );
    assert_eq!(hsts(&off.origin, "/.signoff/login"), None);
    // Plain HTTP: none, since browsers ignore it there anyway.
    let plain = Gateway::start(&upstream.url(), &[]);
    let r = get(&plain.url("/.signoff/login"), &[]).await;
    assert!(r.header("strict-transport-security").is_none());
}

#[tokio::test]
async fn own_pages_use_the_one_stylesheet_and_no_inline_style() {
    let Some((_up, gw)) = start(&[]) else { return };
    let css = get(&gw.url("/.signoff/signoff.css"), &[]).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("cache-control"), Some("public, max-age=86400"));
    assert_eq!(css.header("x-content-type-options"), Some("nosniff"));
    assert!(css.text().contains("label.check"), "{}", css.text());
    // Only the stylesheet itself is cacheable: a wrong method is not.
    let wrong = request(Method::POST, &gw.url("/.signoff/signoff.css"), &[], None).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("cache-control"), Some("no-store"));

    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    for path in [
        "/.signoff/login",
        "/.signoff/logout",
        "/.signoff/signed-out",
        "/.signoff/no-such-page",
        "/.signoff/sessions",
        "/.signoff/reauth",
        "/.signoff/password",
    ] {
        let page = get(&gw.url(path), &[("cookie", &c)]).await;
        assert!([200, 404].contains(&page.status), "{path}: {}", page.status);
        let html = page.text();
        assert!(
            html.contains("<link rel=\"stylesheet\" href=\"/.signoff/signoff.css\">"),
            "{path}: {html}"
        );
        assert!(
            !html.contains("style=") && !html.contains("<style"),
            "{path}: {html}"
        );
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("style-src 'self';"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    }
}

/// A request path may hold characters that read as a line break or a
/// field separator (U+2028, NEL, a no-break space) or that reorder text
/// (U+202E): the access log writes them percent-encoded, so a path cannot
/// forge a line of its own.
#[tokio::test]
async fn a_path_cannot_forge_access_log_lines() {
    let Some((_up, gw)) = start(&[]) else { return };
    // No ASCII space: that would end the request's target.
    let path = "/x\u{2028}2026-12-06T00:00:00.000000Z\u{a0}\u{a0}INFO\u{a0}signoff::access:\u{a0}\
                method=GET\u{a0}path=/admin\u{85}status=200\u{a0}latency_us=1\u{202e}y";
    let answer = raw_get(&gw.origin, path, "");
    // Taken as a request (not refused as malformed), so it is logged.
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = gw.proc.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("path=/x%E2%80%A8")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no access line:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        line.contains("%C2%85status=200%C2%A0latency_us=1%E2%80%AEy status=401"),
        "{line}"
    );
    let log = gw.proc.log_text();
    for c in ['\u{2028}', '\u{85}', '\u{a0}', '\u{202e}'] {
        assert!(!log.contains(c), "{c:?} reached the log:\n{log}");
    }
    assert!(!log.lines().any(|l| l.starts_with("2026-12-06T00:00:00")));
}
