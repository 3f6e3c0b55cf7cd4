//! Sessions users can see and end, password change, the per-user limit,
//! the CLI, the admin API and the audit trail, against real `signoff serve`
//! processes and real clients (each with its own cookie).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use support::{
    add_user, admin_token, cli, cookie, csrf_in, get, post_form, reauth, request, sessions_action,
    sessions_page, signoff_bin, Admin, Gateway, Reply, Upstream, PASSWORD, USER,
};

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// Signs in with a given User-Agent; returns the token.
async fn login_as(gw: &Gateway, user: &str, password: &str, ua: &str) -> String {
    let reply = post_form(
        &gw.url("/.signoff/login"),
        &[("username", user), ("password", password)],
        &[("origin", &gw.origin), ("user-agent", ua)],
    )
    .await;
    assert_eq!(reply.status, 303, "login: {}", reply.text());
    reply.new_cookie("signoff").expect("a session cookie")
}

/// Whether `token` still opens a private upstream page.
async fn alive(gw: &Gateway, token: &str) -> bool {
    let reply = get(&gw.url("/private"), &[("cookie", &cookie(token))]).await;
    match reply.status {
        200 => true,
        401 | 303 => false,
        other => panic!("unexpected {other}: {}", reply.text()),
    }
}

/// Polls until `token` is refused; panics after `limit`.
async fn refused_within(gw: &Gateway, token: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while alive(gw, token).await {
        assert!(start.elapsed() < limit, "still alive after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The audit trail as JSON objects, oldest first.
fn audit(db: &str) -> Vec<serde_json::Value> {
    let out = cli(&["audit", "--json"], db);
    let mut events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    events.reverse();
    events
}

fn count(events: &[serde_json::Value], kind: &str, pairs: &[(&str, &str)]) -> usize {
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter(|e| pairs.iter().all(|(k, v)| e[*k] == *v))
        .count()
}

fn setup(extra: &[&str]) -> Option<(Upstream, Gateway)> {
    let upstream = Upstream::start()?;
    let gw = Gateway::start(&upstream.url(), extra);
    Some((upstream, gw))
}

/// The handle of the session on the page that is not the current one.
fn other_handle(page: &str) -> String {
    let rows: Vec<&str> = page.split("<li class=\"session\"").skip(1).collect();
    let row = rows
        .iter()
        .find(|r| !r.contains("data-current"))
        .unwrap_or_else(|| panic!("no other session on {page}"));
    let start = row.find("data-handle=\"").unwrap() + 13;
    row[start..start + 12].to_owned()
}

#[tokio::test]
async fn sessions_page_lists_devices_and_marks_the_current_one() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let _b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let page = sessions_page(&gw.origin, &a).await;
    assert_eq!(page.matches("<li class=\"session\"").count(), 2, "{page}");
    assert!(
        page.contains("Chrome 156 on Linux</b> (this device)"),
        "{page}"
    );
    assert!(page.contains("Safari 17 on iPhone"), "{page}");
    assert!(page.contains("Signed in from 127.0.0.1"), "{page}");
    assert!(page.contains("Sign out everywhere else") && page.contains("Sign out everywhere"));
    // Not signed in: to the login page, coming back here.
    let r = get(&gw.url("/.signoff/sessions"), &[("accept", "text/html")]).await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/.signoff/login?next=%2F.signoff%2Fsessions")
    );
    // The page is private: never cached.
    let r = get(&gw.url("/.signoff/sessions"), &[("cookie", &cookie(&a))]).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn sign_out_everywhere_else_ends_b_keeps_and_rotates_a() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    assert!(alive(&gw, &a).await && alive(&gw, &b).await);
    let reply = sessions_action(&gw.origin, &a, "end-others", &[]).await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/.signoff/sessions?ended=1"));
    let a2 = reply.new_cookie("signoff").expect("A's token is rotated");
    assert_ne!(a2, a);
    assert!(!alive(&gw, &b).await, "B was signed out at once");
    assert!(
        !alive(&gw, &a).await,
        "A's old token died with the rotation"
    );
    assert!(alive(&gw, &a2).await, "A goes on");
    let page = sessions_page(&gw.origin, &a2).await;
    assert_eq!(page.matches("<li class=\"session\"").count(), 1, "{page}");
}

#[tokio::test]
async fn signing_out_one_other_session_and_everywhere() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let handle_b = other_handle(&sessions_page(&gw.origin, &a).await);
    let reply = sessions_action(&gw.origin, &a, "end", &[("handle", &handle_b)]).await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert!(!alive(&gw, &b).await);
    assert!(
        alive(&gw, &a).await,
        "ending one other session keeps A's token"
    );

    // Another user's handle ends nothing, whoever asks.
    add_user(&gw.db, "bob", PASSWORD);
    let bob = login_as(&gw, "bob", PASSWORD, CHROME).await;
    let bob_handle = stdout(&cli(&["sessions", "list", "--user", "bob"], &gw.db))
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let reply = sessions_action(&gw.origin, &a, "end", &[("handle", &bob_handle)]).await;
    assert_eq!(reply.header("location"), Some("/.signoff/sessions?ended=0"));
    assert!(alive(&gw, &bob).await, "alice cannot end bob's session");
    // The current session's own handle is refused (Sign out is for that).
    let own = sessions_page(&gw.origin, &a).await;
    let start = own.find("data-handle=\"").unwrap() + 13;
    let reply = sessions_action(
        &gw.origin,
        &a,
        "end",
        &[("handle", &own[start..start + 12])],
    )
    .await;
    assert_eq!(reply.status, 400);
    let reply = sessions_action(&gw.origin, &a, "end", &[("handle", "not a handle")]).await;
    assert_eq!(reply.status, 400);

    // Everywhere: like logout.
    let c = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let reply = sessions_action(&gw.origin, &a, "end-all", &[]).await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/.signoff/signed-out"));
    assert!(reply
        .header("set-cookie")
        .is_some_and(|c| c.starts_with("signoff=;") && c.contains("Max-Age=0")));
    assert!(reply
        .header("clear-site-data")
        .is_some_and(|v| v.contains("\"cache\"")));
    assert!(!alive(&gw, &a).await && !alive(&gw, &c).await);
    assert!(alive(&gw, &bob).await);
}

/// What is wrong, the form, the headers.
type Forgery<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<(&'a str, String)>);

#[tokio::test]
async fn forged_session_actions_are_refused() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let csrf_a = csrf_in(&sessions_page(&gw.origin, &a).await);
    let csrf_b = csrf_in(&sessions_page(&gw.origin, &b).await);
    let url = gw.url("/.signoff/sessions/end-others");
    let cases: [Forgery; 5] = [
        ("no CSRF token", vec![], vec![("origin", gw.origin.clone())]),
        (
            "another session's CSRF token",
            vec![("csrf", csrf_b.as_str())],
            vec![("origin", gw.origin.clone())],
        ),
        (
            "foreign origin",
            vec![("csrf", csrf_a.as_str())],
            vec![("origin", "https://evil.example".to_owned())],
        ),
        (
            "cross-site fetch",
            vec![("csrf", csrf_a.as_str())],
            vec![("sec-fetch-site", "cross-site".to_owned())],
        ),
        ("garbage CSRF token", vec![("csrf", "x")], vec![]),
    ];
    for (what, form, headers) in cases {
        let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let c = cookie(&a);
        h.push(("cookie", &c));
        let reply = post_form(&url, &form, &h).await;
        assert_eq!(reply.status, 403, "{what}: {}", reply.text());
        assert!(alive(&gw, &b).await, "{what}: B must live");
    }
    // A GET changes nothing.
    let reply = get(&url, &[("cookie", &cookie(&a))]).await;
    assert_eq!(reply.status, 405);
    // Without a session: to the login page, nothing ended.
    let reply = post_form(&url, &[("csrf", &csrf_a)], &[("origin", &gw.origin)]).await;
    assert!(matches!(reply.status, 303 | 401), "{}", reply.status);
    assert!(alive(&gw, &b).await);
}

#[tokio::test]
async fn ending_other_sessions_needs_a_recent_password() {
    let Some((_up, gw)) = setup(&["--recent-auth", "1s"]) else {
        return;
    };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for action in ["end-others", "end-all"] {
        let reply = sessions_action(&gw.origin, &a, action, &[]).await;
        assert_eq!(reply.status, 303, "{action}");
        assert_eq!(
            reply.header("location"),
            Some("/.signoff/reauth?next=%2F.signoff%2Fsessions"),
            "{action}"
        );
        assert!(alive(&gw, &b).await && alive(&gw, &a).await, "{action}");
    }
    // The re-entry page; a wrong password changes nothing.
    let page = get(
        &gw.url("/.signoff/reauth?next=%2F.signoff%2Fsessions"),
        &[("cookie", &cookie(&a))],
    )
    .await;
    assert_eq!(page.status, 200);
    let csrf = csrf_in(&page.text());
    let url = gw.url("/.signoff/reauth");
    let c = cookie(&a);
    let headers = [("cookie", c.as_str()), ("origin", gw.origin.as_str())];
    let wrong = post_form(
        &url,
        &[
            ("csrf", &csrf),
            ("password", "wrong password"),
            ("next", "/.signoff/sessions"),
        ],
        &headers,
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.new_cookie("signoff").is_none());
    // An open redirect is not possible through `next`.
    let right = post_form(
        &url,
        &[
            ("csrf", &csrf),
            ("password", PASSWORD),
            ("next", "//evil.example/"),
        ],
        &headers,
    )
    .await;
    assert_eq!(right.status, 303);
    assert_eq!(right.header("location"), Some("/"));
    let a2 = right
        .new_cookie("signoff")
        .expect("re-entry rotates the session");
    assert!(!alive(&gw, &a).await, "the pre-re-entry token is dead");
    let reply = sessions_action(&gw.origin, &a2, "end-others", &[]).await;
    assert_eq!(reply.header("location"), Some("/.signoff/sessions?ended=1"));
    assert!(!alive(&gw, &b).await);
}

#[tokio::test]
async fn password_change_ends_the_others_and_rotates() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let page = get(&gw.url("/.signoff/password"), &[("cookie", &cookie(&a))]).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains("name=\"keep_others\" type=\"checkbox\" value=\"on\">"),
        "keeping the others is unticked by default: {html}"
    );
    let csrf = csrf_in(&html);
    let url = gw.url("/.signoff/password");
    let c = cookie(&a);
    let headers = [("cookie", c.as_str()), ("origin", gw.origin.as_str())];
    let new_password = "a much better passphrase";
    let tries: [(&str, &str, &str, u16); 3] = [
        (
            "wrong current password",
            "nope nope nope",
            new_password,
            401,
        ),
        (
            "confirmation differs",
            PASSWORD,
            "something else entirely",
            422,
        ),
        ("too short", PASSWORD, "short", 422),
    ];
    for (what, current, confirm, status) in tries {
        let new = if what == "too short" {
            "short"
        } else {
            new_password
        };
        let reply = post_form(
            &url,
            &[
                ("csrf", &csrf),
                ("current", current),
                ("new", new),
                ("confirm", confirm),
            ],
            &headers,
        )
        .await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert!(alive(&gw, &b).await, "{what}: nothing changed");
    }
    let reply = post_form(
        &url,
        &[
            ("csrf", &csrf),
            ("current", PASSWORD),
            ("new", new_password),
            ("confirm", new_password),
        ],
        &headers,
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some("/.signoff/password?changed=1")
    );
    let a2 = reply.new_cookie("signoff").expect("rotated");
    assert!(!alive(&gw, &b).await, "the other session ended");
    assert!(
        !alive(&gw, &a).await,
        "the old token of this session is dead"
    );
    assert!(alive(&gw, &a2).await);
    // The new password signs in, the old one does not.
    let _ = login_as(&gw, USER, new_password, CHROME).await;
    let old = post_form(
        &gw.url("/.signoff/login"),
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &gw.origin)],
    )
    .await;
    assert_eq!(old.status, 401);

    // "Keep my other sessions" ticked: the others stay.
    let c = login_as(&gw, USER, new_password, IPHONE).await;
    let csrf = csrf_in(
        &get(&gw.url("/.signoff/password"), &[("cookie", &cookie(&a2))])
            .await
            .text(),
    );
    let c2 = cookie(&a2);
    let reply = post_form(
        &url,
        &[
            ("csrf", &csrf),
            ("current", new_password),
            ("new", PASSWORD),
            ("confirm", PASSWORD),
            ("keep_others", "on"),
        ],
        &[("cookie", &c2), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert_eq!(
        reply.header("location"),
        Some("/.signoff/password?changed=0")
    );
    assert!(alive(&gw, &c).await, "kept: the other session stays");
    // A form without the field (an override that left it out, a client
    // that never sent it) ends the others: never kept by omission.
    let a3 = reply.new_cookie("signoff").expect("rotated");
    let csrf = csrf_in(
        &get(&gw.url("/.signoff/password"), &[("cookie", &cookie(&a3))])
            .await
            .text(),
    );
    let reply = post_form(
        &url,
        &[
            ("csrf", &csrf),
            ("current", PASSWORD),
            ("new", new_password),
            ("confirm", new_password),
        ],
        &[("cookie", &cookie(&a3)), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert!(!alive(&gw, &c).await, "no field: the other session ends");
}

#[tokio::test]
async fn the_oldest_session_ends_beyond_the_limit() {
    let Some((_up, gw)) = setup(&["--max-sessions", "2"]) else {
        return;
    };
    let first = login_as(&gw, USER, PASSWORD, CHROME).await;
    let second = login_as(&gw, USER, PASSWORD, IPHONE).await;
    assert!(alive(&gw, &first).await);
    let third = login_as(&gw, USER, PASSWORD, CHROME).await;
    assert!(!alive(&gw, &first).await, "the oldest ended");
    assert!(alive(&gw, &second).await && alive(&gw, &third).await);
    let events = audit(&gw.db);
    assert_eq!(
        count(
            &events,
            "session_ended",
            &[("by", "policy"), ("reason", "max_sessions")]
        ),
        1,
        "{events:#?}"
    );
    // Another user's sessions do not count.
    add_user(&gw.db, "bob", PASSWORD);
    let bob = login_as(&gw, "bob", PASSWORD, CHROME).await;
    assert!(alive(&gw, &second).await && alive(&gw, &third).await && alive(&gw, &bob).await);
}

#[tokio::test]
async fn the_cli_lists_and_ends_sessions() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let list = stdout(&cli(&["sessions", "list", "--user", USER], &gw.db));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "header and two sessions: {list}");
    assert!(lines[0].starts_with("HANDLE\tUSER\tDEVICE"));
    assert!(list.contains("Safari 17 on iPhone") && list.contains("Chrome 156 on Linux"));
    // B's handle is the iPhone's.
    let handle_b = lines
        .iter()
        .find(|l| l.contains("iPhone"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap();
    let out = cli(&["sessions", "end", handle_b], &gw.db);
    assert!(stdout(&out).contains("ended session"));
    let took = refused_within(&gw, &b, Duration::from_millis(1500)).await;
    eprintln!("the CLI's end reached the gateway after {took:?}");
    assert!(alive(&gw, &a).await, "A goes on");
    // JSON lines, and every user without --user.
    let json = stdout(&cli(&["sessions", "list", "--json"], &gw.db));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["user"], USER);
    // Unknown handles and users are errors with a message.
    for args in [
        &["sessions", "end", "AAAAAAAAAAAA"][..],
        &["sessions", "end", "tooshort"],
        &["sessions", "end", "--user", "nobody"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--db", &gw.db]);
        let out = Command::new(signoff_bin()).args(&all).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    let out = cli(&["sessions", "end", "--user", USER], &gw.db);
    assert!(
        stdout(&out).contains("ended 1 session of"),
        "{}",
        stdout(&out)
    );
    refused_within(&gw, &a, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_disabled_user_is_out_at_once() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let out = cli(&["user", "disable", USER], &gw.db);
    assert!(stdout(&out).contains("ended 2 sessions"));
    // Another process: the gateway hears of it through the SQLite change
    // log (tests/sqlite.rs holds it to 50 ms with a 30 s cache).
    refused_within(&gw, &a, Duration::from_millis(1500)).await;
    assert!(!alive(&gw, &b).await);
    let reply = post_form(
        &gw.url("/.signoff/login"),
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &gw.origin)],
    )
    .await;
    assert_eq!(reply.status, 401, "a disabled user cannot sign in");
}

// ---------------------------------------------------------------- admin API

fn admin() -> Option<Admin> {
    let admin = Admin::start()?;
    assert!(
        !admin.gw.proc.log_text().contains(&admin.token),
        "the token is never logged"
    );
    Some(admin)
}

#[tokio::test]
async fn admin_api_lists_and_ends_sessions() {
    let Some(admin) = admin() else { return };
    let gw = &admin.gw;
    let a = login_as(gw, USER, PASSWORD, CHROME).await;
    let b = login_as(gw, USER, PASSWORD, IPHONE).await;
    let users = admin.call(Method::GET, "/users", None).await;
    assert_eq!(users.status, 200, "{}", users.text());
    assert_eq!(users.header("content-type"), Some("application/json"));
    assert_eq!(users.header("cache-control"), Some("no-store"));
    assert_eq!(users.json()[0]["name"], USER);
    assert_eq!(users.json()[0]["disabled"], false);
    let one = admin
        .call(Method::GET, &format!("/users/{USER}"), None)
        .await;
    assert_eq!(one.json()["name"], USER);

    let list = admin
        .call(Method::GET, &format!("/users/{USER}/sessions"), None)
        .await
        .json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let b_handle = list
        .iter()
        .find(|s| s["device"] == "Safari 17 on iPhone")
        .unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = admin
        .call(Method::DELETE, &format!("/sessions/{b_handle}"), None)
        .await;
    assert_eq!(ended.status, 200);
    assert_eq!(ended.json()["ended"], 1);
    assert!(!alive(gw, &b).await, "B refused at once");
    assert!(alive(gw, &a).await, "A goes on");
    let again = admin
        .call(Method::DELETE, &format!("/sessions/{b_handle}"), None)
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.json()["error"], "unknown_session");

    let c = login_as(gw, USER, PASSWORD, IPHONE).await;
    let all = admin
        .call(Method::DELETE, &format!("/users/{USER}/sessions"), None)
        .await;
    assert_eq!(all.json()["ended"], 2);
    assert!(!alive(gw, &a).await && !alive(gw, &c).await);

    // Disable: sessions die at once, sign-in refused; enable again.
    let d = login_as(gw, USER, PASSWORD, CHROME).await;
    let off = admin
        .call(
            Method::PATCH,
            &format!("/users/{USER}"),
            Some(r#"{"disabled":true}"#),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.text());
    assert_eq!(off.json()["disabled"], true);
    assert!(!alive(gw, &d).await);
    let refused = post_form(
        &gw.url("/.signoff/login"),
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &gw.origin)],
    )
    .await;
    assert_eq!(refused.status, 401);
    let on = admin
        .call(
            Method::PATCH,
            &format!("/users/{USER}"),
            Some(r#"{"disabled":false}"#),
        )
        .await;
    assert_eq!(on.json()["disabled"], false);
    let _ = login_as(gw, USER, PASSWORD, CHROME).await;

    // The audit trail through the API.
    let events = admin
        .call(
            Method::GET,
            &format!("/audit?user={USER}&kind=session_ended"),
            None,
        )
        .await;
    assert_eq!(events.status, 200, "{}", events.text());
    let events = events.json();
    let by_admin = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["by"] == "admin")
        .count();
    assert_eq!(by_admin, 3, "one, all, disable: {events:#}");
}

#[tokio::test]
async fn admin_api_refuses_bad_tokens_and_bad_input_with_json() {
    let Some(admin) = admin() else { return };
    let gw = &admin.gw;
    let url = gw.url("/.signoff/admin/users");
    let wrong = format!("Bearer {}x", admin.token);
    let basic = format!("Basic {}", admin.token);
    let cookie_only = login_as(gw, USER, PASSWORD, CHROME).await;
    let c = cookie(&cookie_only);
    for (what, headers) in [
        ("no token", vec![]),
        ("wrong token", vec![("authorization", wrong.as_str())]),
        ("Basic scheme", vec![("authorization", basic.as_str())]),
        ("empty bearer", vec![("authorization", "Bearer ")]),
        ("a session cookie", vec![("cookie", c.as_str())]),
    ] {
        let reply = get(&url, &headers).await;
        assert_eq!(reply.status, 401, "{what}");
        assert_eq!(reply.json()["error"], "unauthorized", "{what}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"signoff-admin\""),
            "{what}"
        );
    }
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let lower = format!("bearer {}", admin.token);
    assert_eq!(get(&url, &[("authorization", &lower)]).await.status, 200);
    let upper_token = format!("Bearer {}", admin.token.to_uppercase());
    assert_eq!(
        get(&url, &[("authorization", &upper_token)]).await.status,
        401
    );
    // Each endpoint's bad inputs.
    let cases: [(Method, &str, Option<&str>, u16, &str); 11] = [
        (Method::GET, "/users/nobody", None, 404, "unknown_user"),
        (
            Method::GET,
            "/users/nobody/sessions",
            None,
            404,
            "unknown_user",
        ),
        (
            Method::DELETE,
            "/users/nobody/sessions",
            None,
            404,
            "unknown_user",
        ),
        (
            Method::PATCH,
            "/users/nobody",
            Some(r#"{"disabled":true}"#),
            404,
            "unknown_user",
        ),
        (
            Method::PATCH,
            "/users/alice",
            Some("{not json"),
            400,
            "invalid_json",
        ),
        (
            Method::PATCH,
            "/users/alice",
            Some(r#"{"disabled":"yes"}"#),
            400,
            "invalid_json",
        ),
        (
            Method::PATCH,
            "/users/alice",
            Some(r#"{"disabled":true,"admin":true}"#),
            400,
            "invalid_json",
        ),
        (
            Method::DELETE,
            "/sessions/tooshort",
            None,
            400,
            "invalid_handle",
        ),
        (
            Method::DELETE,
            "/sessions/AAAAAAAAAAAA",
            None,
            404,
            "unknown_session",
        ),
        (
            Method::GET,
            "/audit?kind=nonsense",
            None,
            400,
            "invalid_kind",
        ),
        (Method::GET, "/nothing-here", None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let reply = admin.call(method.clone(), path, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text());
        assert_eq!(reply.json()["error"], code, "{method} {path}");
    }
    let reply = admin.call(Method::POST, "/users", None).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["error"], "method_not_allowed");
    // Without any token too: a wrong method gets 405 before the token is
    // checked, as docs/admin-api.md says.
    for (method, path) in [
        (Method::POST, "/users"),
        (Method::PUT, "/users/alice"),
        (Method::POST, "/users/alice/sessions"),
        (Method::GET, "/sessions/AAAAAAAAAAAA"),
        (Method::DELETE, "/audit"),
    ] {
        let url = gw.url(&format!("/.signoff/admin{path}"));
        let reply = request(method.clone(), &url, &[], None).await;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text());
        assert_eq!(
            reply.json()["error"],
            "method_not_allowed",
            "{method} {path}"
        );
    }
    let auth = format!("Bearer {}", admin.token);
    let reply = request(
        Method::PATCH,
        &gw.url("/.signoff/admin/users/alice"),
        &[("authorization", &auth)],
        Some(("text/plain", b"{\"disabled\":true}".to_vec())),
    )
    .await;
    assert_eq!(reply.status, 415);
    let big = format!("{{\"disabled\":true,\"pad\":\"{}\"}}", "x".repeat(20_000));
    let reply = admin.call(Method::PATCH, "/users/alice", Some(&big)).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"], "too_large");
    // None of that disabled alice.
    assert!(alive(gw, &cookie_only).await);
}

#[tokio::test]
async fn admin_token_checks_take_the_same_time() {
    let Some(admin) = admin() else { return };
    let url = admin.gw.url("/.signoff/admin/users");
    let wrong_same_length = format!("Bearer {}", "A".repeat(admin.token.len()));
    // Change the last character (to one it is not: tokens can end in `A`).
    let (head, last) = admin.token.split_at(admin.token.len() - 1);
    let wrong_prefix = format!("Bearer {head}{}", if last == "A" { "B" } else { "A" });
    let short = "Bearer x".to_owned();
    let kinds: [(&str, Option<&str>); 4] = [
        ("missing", None),
        ("short", Some(&short)),
        ("wrong, same length", Some(&wrong_same_length)),
        ("right but for the last character", Some(&wrong_prefix)),
    ];
    // Interleaved rounds, so machine noise hits every kind alike.
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    for _ in 0..150 {
        for (i, (_, auth)) in kinds.iter().enumerate() {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
            let start = Instant::now();
            let reply = get(&url, &headers).await;
            times[i].push(start.elapsed());
            assert_eq!(reply.status, 401);
        }
    }
    let medians: Vec<Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    eprintln!(
        "median refusal times: {:?}",
        kinds.iter().map(|k| k.0).zip(&medians).collect::<Vec<_>>()
    );
    let fastest = *medians.iter().min().unwrap();
    let slowest = *medians.iter().max().unwrap();
    // A slow check on one path only (say, a password hash for a wrong
    // token) would show as many times the others; loopback noise is well
    // under this.
    assert!(
        slowest < fastest * 2 + Duration::from_micros(300),
        "refusals differ in time: {medians:?}"
    );
}

#[tokio::test]
async fn admin_api_is_off_without_a_token_and_documents_itself() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let reply = get(&gw.url("/.signoff/admin/users"), &[]).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"], "not_found");
    let reply = get(&gw.url("/.signoff/admin/openapi.json"), &[]).await;
    assert_eq!(reply.status, 404, "no document either while the API is off");

    let Some(admin) = admin() else { return };
    let doc = get(&admin.gw.url("/.signoff/admin/openapi.json"), &[]).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["servers"][0]["url"], "/.signoff/admin");
    // Every documented operation exists: calling it with the token never
    // gets the router's "no such endpoint" or "method not allowed".
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 6, "{paths:?}");
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{name}", USER)
                .replace("{handle}", "AAAAAAAAAAAA");
            let m: Method = method.to_uppercase().parse().unwrap();
            let body = match m {
                Method::PATCH => Some(r#"{"disabled":false}"#),
                Method::POST => Some("{}"),
                _ => None,
            };
            let reply = admin.call(m.clone(), &concrete, body).await;
            assert!(
                reply.status != 405
                    && !(reply.status == 404 && reply.json()["error"] == "not_found"),
                "{method} {path} is documented but not served: {} {}",
                reply.status,
                reply.text()
            );
        }
    }
}

// ------------------------------------------------------------- audit trail

#[tokio::test]
async fn every_audit_event_is_written_once_per_action() {
    let (token, hash) = admin_token();
    let Some((_up, gw)) = setup(&["--admin-token-sha256", &hash, "--max-sessions", "3"]) else {
        return;
    };
    let wrong_password = "Tr0ub4dor&3-not-it";
    // login_failed ×2 (unknown user, wrong password)
    for (user, password) in [("mallory", "whatever123"), (USER, wrong_password)] {
        let r = post_form(
            &gw.url("/.signoff/login"),
            &[("username", user), ("password", password)],
            &[("origin", &gw.origin)],
        )
        .await;
        assert_eq!(r.status, 401);
    }
    // login_succeeded ×3
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let b = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let c = login_as(&gw, USER, PASSWORD, IPHONE).await;
    // session_ended by policy ×1 (the fourth sign-in ends the oldest, a)
    let d = login_as(&gw, USER, PASSWORD, CHROME).await;
    assert!(!alive(&gw, &a).await);
    // session_ended by user ×1 (sign out everywhere else, from d: ends b, c)
    let r = sessions_action(&gw.origin, &d, "end-others", &[]).await;
    assert_eq!(r.status, 303);
    let d = r.new_cookie("signoff").unwrap();
    assert!(!alive(&gw, &b).await && !alive(&gw, &c).await);
    // logout ×1
    let csrf = csrf_in(&sessions_page(&gw.origin, &d).await);
    let r = post_form(
        &gw.url("/.signoff/logout"),
        &[("csrf", &csrf)],
        &[("cookie", &cookie(&d)), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(r.status, 303);
    // login_succeeded ×2 more; password_changed ×1 (+ session_ended by user)
    let e = login_as(&gw, USER, PASSWORD, CHROME).await;
    let _f = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let csrf = csrf_in(
        &get(&gw.url("/.signoff/password"), &[("cookie", &cookie(&e))])
            .await
            .text(),
    );
    let new_password = "the new secret passphrase";
    let r = post_form(
        &gw.url("/.signoff/password"),
        &[
            ("csrf", &csrf),
            ("current", PASSWORD),
            ("new", new_password),
            ("confirm", new_password),
        ],
        &[("cookie", &cookie(&e)), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(r.status, 303);
    let e = r.new_cookie("signoff").unwrap();
    // reauthenticated ×1
    let r = reauth(&gw.origin, &e, new_password, "/").await;
    assert_eq!(r.status, 303);
    let e = r.new_cookie("signoff").unwrap();
    // session_ended by admin ×1; user_disabled ×1 by admin (+ session_ended
    // by admin for its sessions, none left); user_enabled ×1
    let auth = format!("Bearer {token}");
    let list = request(
        Method::GET,
        &gw.url(&format!("/.signoff/admin/users/{USER}/sessions")),
        &[("authorization", &auth)],
        None,
    )
    .await
    .json();
    let handle = list[0]["handle"].as_str().unwrap().to_owned();
    let r = request(
        Method::DELETE,
        &gw.url(&format!("/.signoff/admin/sessions/{handle}")),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!alive(&gw, &e).await);
    for body in [r#"{"disabled":true}"#, r#"{"disabled":false}"#] {
        let r = request(
            Method::PATCH,
            &gw.url(&format!("/.signoff/admin/users/{USER}")),
            &[("authorization", &auth)],
            Some(("application/json", body.as_bytes().to_vec())),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    // By the CLI: user_disabled, session_ended by operator, user_enabled.
    let g = login_as(&gw, USER, new_password, CHROME).await;
    cli(&["user", "disable", USER], &gw.db);
    cli(&["user", "enable", USER], &gw.db);
    refused_within(&gw, &g, Duration::from_millis(1500)).await;

    let events = audit(&gw.db);
    let kinds = |kind: &str, pairs: &[(&str, &str)]| count(&events, kind, pairs);
    assert_eq!(
        kinds("login_failed", &[("reason", "unknown_user")]),
        1,
        "{events:#?}"
    );
    assert_eq!(
        kinds(
            "login_failed",
            &[("reason", "wrong_password"), ("user_name", USER)]
        ),
        1
    );
    assert_eq!(kinds("login_failed", &[]), 2);
    assert_eq!(kinds("login_succeeded", &[]), 7, "{events:#?}");
    assert_eq!(kinds("session_ended", &[("by", "policy")]), 1);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "session_ended"
                && e["by"] == "user"
                && e["reason"] == "sign_out_everywhere_else"
                && e["count"] == 2)
            .count(),
        1,
        "{events:#?}"
    );
    assert_eq!(kinds("logout", &[("by", "user")]), 1);
    assert_eq!(kinds("password_changed", &[("by", "user")]), 1);
    assert_eq!(
        kinds(
            "session_ended",
            &[("by", "user"), ("reason", "password_change")]
        ),
        1
    );
    assert_eq!(kinds("reauthenticated", &[]), 1);
    assert_eq!(
        kinds("session_ended", &[("by", "admin"), ("reason", "ended")]),
        1
    );
    assert_eq!(kinds("user_disabled", &[("by", "admin")]), 1);
    assert_eq!(
        kinds(
            "session_ended",
            &[("by", "admin"), ("reason", "user_disabled")]
        ),
        1
    );
    assert_eq!(kinds("user_enabled", &[("by", "admin")]), 1);
    assert_eq!(kinds("user_disabled", &[("by", "operator")]), 1);
    assert_eq!(
        kinds(
            "session_ended",
            &[("by", "operator"), ("reason", "user_disabled")]
        ),
        1
    );
    assert_eq!(kinds("user_enabled", &[("by", "operator")]), 1);
    // No secrets anywhere in the trail or the database file.
    let raw = std::fs::read(gw.db.strip_prefix("sqlite://").unwrap()).unwrap();
    let wal = std::fs::read(format!("{}-wal", gw.db.strip_prefix("sqlite://").unwrap()))
        .unwrap_or_default();
    for secret in [
        wrong_password,
        PASSWORD,
        new_password,
        "whatever123",
        token.as_str(),
    ] {
        for bytes in [&raw, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} is stored"
            );
        }
    }
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains("mallory"),
        "a name no account has is not kept"
    );
    // The CLI's filters.
    let since = stdout(&cli(
        &["audit", "--user", USER, "--since", "1h", "--kind", "logout"],
        &gw.db,
    ));
    assert_eq!(since.lines().count(), 1, "{since}");
    assert!(since.contains("\tlogout\tuser=alice\tby=user"), "{since}");
}

#[tokio::test]
async fn timeouts_are_audited_once_and_json_lines_are_optional() {
    let Some((_up, gw)) = setup(&["--idle-timeout", "1s", "--audit-log"]) else {
        return;
    };
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Two requests race to find it expired; one ends it.
    let (x, y) = tokio::join!(alive(&gw, &a), alive(&gw, &a));
    assert!(!x && !y);
    assert!(!alive(&gw, &a).await);
    let events = audit(&gw.db);
    assert_eq!(
        count(
            &events,
            "session_ended",
            &[("by", "timeout"), ("reason", "idle")]
        ),
        1,
        "{events:#?}"
    );
    let log = gw.proc.log_text();
    assert!(
        log.contains(r#""kind":"login_succeeded""#) && log.contains(r#""reason":"idle""#),
        "JSON audit lines: {log}"
    );
    assert!(!log.contains(&a), "the token is never logged");
}

/// A logout sent with the cookie from before a rotation (another tab
/// re-authenticated, signed out everywhere else or changed the password
/// meanwhile) answers like any logout and ends the rotated session too:
/// the browser drops the new cookie with the old one, so a copy of the new
/// cookie must not keep working.
#[tokio::test]
async fn logout_with_the_cookie_from_before_a_rotation_ends_the_rotated_session() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let logout = |old: String, csrf: Option<String>| {
        let url = gw.url("/.signoff/logout");
        let origin = gw.origin.clone();
        async move {
            let form: Vec<(&str, &str)> = csrf.iter().map(|c| ("csrf", c.as_str())).collect();
            post_form(
                &url,
                &form,
                &[("cookie", &cookie(&old)), ("origin", &origin)],
            )
            .await
        }
    };
    let signed_out = |r: &Reply, how: &str| {
        assert_eq!(r.status, 303, "{how}: {}", r.text());
        assert_eq!(r.header("location"), Some("/.signoff/signed-out"), "{how}");
        assert!(r.header("clear-site-data").is_some(), "{how}");
        assert!(
            r.all("set-cookie").join("\n").starts_with("signoff=;"),
            "{how}"
        );
    };

    // Re-authentication in one tab; the other tab's logout form still
    // carries the old cookie and its CSRF token.
    let a = login_as(&gw, USER, PASSWORD, CHROME).await;
    let bystander = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let old_csrf = csrf_in(&sessions_page(&gw.origin, &a).await);
    let r = reauth(&gw.origin, &a, PASSWORD, "/").await;
    assert_eq!(r.status, 303, "{}", r.text());
    let a2 = r.new_cookie("signoff").expect("re-entry rotates");
    assert!(alive(&gw, &a2).await);
    signed_out(&logout(a.clone(), Some(old_csrf)).await, "after re-entry");
    assert!(
        !alive(&gw, &a2).await,
        "the re-entered session outlived logout"
    );
    assert!(!alive(&gw, &a).await);
    assert!(alive(&gw, &bystander).await, "another session was ended");

    // Sign-out everywhere else, then a same-origin logout with the old cookie.
    let b = login_as(&gw, USER, PASSWORD, CHROME).await;
    let r = sessions_action(&gw.origin, &b, "end-others", &[]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let b2 = r.new_cookie("signoff").expect("end-others rotates");
    assert!(alive(&gw, &b2).await && !alive(&gw, &bystander).await);
    signed_out(&logout(b, None).await, "after end-others");
    assert!(!alive(&gw, &b2).await, "the kept session outlived logout");

    // A password change.
    let c = login_as(&gw, USER, PASSWORD, CHROME).await;
    let csrf = csrf_in(
        &get(&gw.url("/.signoff/password"), &[("cookie", &cookie(&c))])
            .await
            .text(),
    );
    let new_password = "a rotated passphrase";
    let r = post_form(
        &gw.url("/.signoff/password"),
        &[
            ("csrf", &csrf),
            ("current", PASSWORD),
            ("new", new_password),
            ("confirm", new_password),
        ],
        &[("cookie", &cookie(&c)), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let c2 = r.new_cookie("signoff").expect("a password change rotates");
    assert!(alive(&gw, &c2).await);
    signed_out(&logout(c, None).await, "after a password change");
    assert!(!alive(&gw, &c2).await, "the session outlived logout");

    // Each is in the audit trail as a logout by the user.
    let events = audit(&gw.db);
    assert_eq!(
        count(
            &events,
            "logout",
            &[("reason", "rotated_token"), ("by", "user")]
        ),
        3,
        "{events:#?}"
    );
}

/// Signs in with the form's `remember` field set to `remember`; returns the
/// reply (303 checked).
async fn login_remembering(gw: &Gateway, remember: &str) -> Reply {
    let reply = post_form(
        &gw.url("/.signoff/login"),
        &[
            ("username", USER),
            ("password", PASSWORD),
            ("remember", remember),
        ],
        &[("origin", &gw.origin), ("user-agent", CHROME)],
    )
    .await;
    assert_eq!(reply.status, 303, "login: {}", reply.text());
    reply
}

/// The session cookie a reply sets, and its `Max-Age` if it has one.
fn session_cookie(reply: &Reply) -> (String, Option<u64>) {
    let set = reply
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("signoff="))
        .expect("a session cookie");
    assert!(
        !set.to_ascii_lowercase().contains("expires="),
        "Max-Age alone says how long: {set}"
    );
    let max_age = set
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .map(|v| v.parse().unwrap());
    (set, max_age)
}

/// The attributes of a `Set-Cookie` other than its value and expiry.
fn cookie_attributes(set: &str) -> Vec<String> {
    let mut attrs: Vec<String> = set
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.starts_with("Max-Age=") && !a.starts_with("Expires="))
        .collect();
    attrs.sort();
    attrs
}

#[tokio::test]
async fn remember_is_off_by_default_and_a_posted_remember_is_ignored() {
    let Some((_up, gw)) = setup(&[]) else { return };
    let page = get(&gw.url("/.signoff/login"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(!page.text().contains("remember"), "{}", page.text());
    let reply = login_remembering(&gw, "1").await;
    let (set, max_age) = session_cookie(&reply);
    assert_eq!(max_age, None, "a browser-session cookie: {set}");
    let token = reply.new_cookie("signoff").unwrap();
    let page = sessions_page(&gw.origin, &token).await;
    assert!(!page.contains("remembered until"), "{page}");
    assert_eq!(
        count(
            &audit(&gw.db),
            "login_succeeded",
            &[("reason", "remember_device")]
        ),
        0
    );
}

/// A remembered device outlives the ordinary absolute and idle timeouts,
/// with a cookie that lasts as long as its session; it still idles out at
/// its own idle timeout, ends at its own lifetime, and logout ends it and
/// expires the cookie with the same attributes. Ordinary sign-ins next to
/// it, and a `remember` field of any other value, get ordinary sessions.
#[tokio::test]
async fn a_remembered_device_outlives_the_absolute_timeout_until_it_signs_out() {
    let Some((_up, gw)) = setup(&[
        "--idle-timeout",
        "1s",
        "--absolute-timeout",
        "2s",
        "--remember-device",
        "8s",
        "--remember-device-idle",
        "3s",
    ]) else {
        return;
    };
    let page = get(&gw.url("/.signoff/login"), &[]).await.text();
    assert!(
        page.contains(
            "name=\"remember\" type=\"checkbox\" value=\"1\"> Remember this device for 8 seconds"
        ),
        "{page}"
    );
    for odd in ["yes", "on", "0", "", "11", &"1".repeat(2000)] {
        let reply = login_remembering(&gw, odd).await;
        assert_eq!(session_cookie(&reply).1, None, "remember={odd:?}");
    }
    // Each session was created between the two instants around its sign-in.
    let timed = |reply_at: Instant| move |secs: f64| reply_at + Duration::from_secs_f64(secs);
    let r1 = login_remembering(&gw, "1").await;
    let before_r2 = Instant::now();
    let r2 = login_remembering(&gw, "1").await;
    let after_r2 = Instant::now();
    let r3 = login_remembering(&gw, "1").await;
    let after_r3 = Instant::now();
    let (issued, max_age) = session_cookie(&r1);
    assert!(
        max_age.is_some_and(|m| (7..=8).contains(&m)),
        "Max-Age ≈ 8 s: {issued}"
    );
    let [r1, r2, r3] = [r1, r2, r3].map(|r| r.new_cookie("signoff").unwrap());
    let before_ordinary = Instant::now();
    let ordinary = gw.login(USER, PASSWORD).await;
    let after_ordinary = Instant::now();
    let page = sessions_page(&gw.origin, &r1).await;
    assert_eq!(page.matches("; remembered until ").count(), 3, "{page}");

    // All active for 4 s: the ordinary one ends at 2 s, the remembered live.
    let mut r3_seen = None;
    while Instant::now() < timed(after_r3)(4.0) {
        assert!(alive(&gw, &r1).await && alive(&gw, &r2).await);
        if Instant::now() < timed(before_ordinary)(1.7) {
            assert!(alive(&gw, &ordinary).await, "ordinary, early");
        } else if Instant::now() > timed(after_ordinary)(2.3) {
            assert!(!alive(&gw, &ordinary).await, "ordinary, past 2 s");
        }
        if r3_seen.is_none() && Instant::now() > timed(after_r3)(1.5) {
            // Quiet for over the ordinary idle timeout, and still in.
            assert!(alive(&gw, &r3).await, "remembered, quiet for 1.5 s");
            r3_seen = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!alive(&gw, &ordinary).await, "ordinary, at the end");

    // Logout: the cookie expires with the attributes it was issued with.
    let reply = post_form(
        &gw.url("/.signoff/logout"),
        &[],
        &[("origin", &gw.origin), ("cookie", &cookie(&r1))],
    )
    .await;
    assert_eq!(reply.status, 303);
    let expired = reply
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("signoff=;"))
        .expect("the cookie expired");
    assert!(expired.contains("Max-Age=0"), "{expired}");
    assert_eq!(cookie_attributes(&expired), cookie_attributes(&issued));
    assert!(!alive(&gw, &r1).await, "the replayed cookie is refused");

    // Its own idle timeout: quiet for 3.4 s, out.
    let r3_seen = r3_seen.expect("r3 was checked");
    tokio::time::sleep_until(timed(r3_seen)(3.4).into()).await;
    assert!(!alive(&gw, &r3).await, "remembered, quiet for 3.4 s");

    // Its own lifetime: active to the end, out at 8 s.
    while Instant::now() < timed(before_r2)(7.2) {
        assert!(alive(&gw, &r2).await, "within the remembered lifetime");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep_until(timed(after_r2)(8.3).into()).await;
    assert!(!alive(&gw, &r2).await, "past the remembered lifetime");
}

/// Re-entering the password rotates a remembered session's cookie without
/// lengthening it; "Sign out everywhere" ends remembered devices like any
/// other; the audit trail says which sign-in was remembered.
#[tokio::test]
async fn rotation_keeps_a_remembered_cookie_and_sign_out_everywhere_ends_it() {
    let Some((_up, gw)) = setup(&["--remember-device", "30d"]) else {
        return;
    };
    let first = login_remembering(&gw, "1").await;
    let (issued, max_age) = session_cookie(&first);
    let max_age = max_age.expect("a persistent cookie");
    assert!(
        (30 * 86_400 - 5..=30 * 86_400).contains(&max_age),
        "{issued}"
    );
    let a = first.new_cookie("signoff").unwrap();
    let b = login_remembering(&gw, "1")
        .await
        .new_cookie("signoff")
        .unwrap();
    let plain = login_as(&gw, USER, PASSWORD, IPHONE).await;
    let page = sessions_page(&gw.origin, &a).await;
    assert_eq!(page.matches("; remembered until ").count(), 2, "{page}");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = reauth(&gw.origin, &a, PASSWORD, "/.signoff/sessions").await;
    assert_eq!(rotated.status, 303, "{}", rotated.text());
    let (set, again) = session_cookie(&rotated);
    let again = again.expect("the rotated cookie stays persistent");
    assert!(again < max_age, "never longer than the first: {set}");
    assert_eq!(cookie_attributes(&set), cookie_attributes(&issued));
    let a2 = rotated.new_cookie("signoff").unwrap();
    assert!(!alive(&gw, &a).await, "the pre-rotation token");

    let reply = sessions_action(&gw.origin, &a2, "end-all", &[]).await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/.signoff/signed-out"));
    let expired = reply.header("set-cookie").unwrap();
    assert!(expired.contains("Max-Age=0"), "{expired}");
    assert_eq!(cookie_attributes(expired), cookie_attributes(&issued));
    for (what, token) in [
        ("this device", &a2),
        ("the other remembered", &b),
        ("ordinary", &plain),
    ] {
        assert!(!alive(&gw, token).await, "{what}");
    }
    let events = audit(&gw.db);
    assert_eq!(
        count(&events, "login_succeeded", &[("reason", "remember_device")]),
        2
    );
    assert_eq!(count(&events, "login_succeeded", &[]), 3);
}
