//! Access rules (`[access]` in the config file) on real processes: a
//! `signoff serve` in front of the Python upstream, and forward-auth.
//! docs/security.md, "Access rules".

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    add_user_in_groups, cookie, get, post_form, raw_get, reauth, seen, signoff_bin, Gateway,
    Upstream, PASSWORD, USER,
};

const HTML: (&str, &str) = ("accept", "text/html");
const JSON: (&str, &str) = ("accept", "application/json");
/// In group `admins` (alice is in none).
const ADMIN: &str = "carol";

const RULES: &str = r#"
public_paths = ["/static/"]

[access]
default = "signed_in"

[[access.rule]]
name = "admin area"
path_prefix = "/admin"
groups = ["admins"]

[[access.rule]]
name = "closed"
path_prefix = "/blocked"
policy = "deny"

[[access.rule]]
name = "reports"
path_prefix = "/reports"
users = ["alice"]
"#;

/// A gateway (in front of `upstream`, or forward-auth only) whose config
/// file holds `rules`, with alice and carol (in `admins`).
fn start(upstream: Option<&Upstream>, rules: &str, extra: &[&str]) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signoff.toml");
    std::fs::write(&config, rules).unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    add_user_in_groups(&db, ADMIN, PASSWORD, &["admins"]);
    let config = config.display().to_string();
    let mut args = vec!["--config", config.as_str()];
    args.extend_from_slice(extra);
    let url = upstream.map(Upstream::url);
    Gateway::start_on(dir, &db, url.as_deref(), &args)
}

/// The status of a request sent as raw bytes, so that paths an HTTP
/// library would refuse or tidy (`\`, `..`) go out exactly as written.
fn raw_status(origin: &str, path: &str, token: Option<&str>) -> u16 {
    let cookie_line = token
        .map(|t| format!("Cookie: {}\r\n", cookie(t)))
        .unwrap_or_default();
    let text = raw_get(origin, path, &format!("Accept: text/html\r\n{cookie_line}"));
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status for {path}: {text:?}"))
}

/// Spellings of `/admin` (and under it) that some upstream reads as the
/// admin area, through the public `/static/` or plainly.
const TRICKY_ADMIN: &[&str] = &[
    "/static/../admin",
    "/static/%2e%2e/admin",
    "/static/%2E%2E/admin/x",
    "/static/%252e%252e/admin",
    "/static%2f..%2fadmin",
    "/static/..;/admin",
    "/static/..%3b/admin",
    "/admin;jsessionid=x",
    "//admin",
    "/ADMIN",
    "/Admin/x",
    "/static/.%2e/admin",
    // Dots resolved before decoding, or without merging `//` (WHATWG).
    "/x%2fy/../%61dmin",
    "/static/x//../../admin",
    // A format suffix and a trailing slash (Rails, Spring, Express).
    "/admin.json",
    "/admin/",
];

#[tokio::test]
async fn rules_decide_who_reaches_what_through_the_gateway() {
    let Some(up) = Upstream::start() else { return };
    let gw = start(Some(&up), RULES, &[]);
    let alice = gw.login(USER, PASSWORD).await;
    let carol = gw.login(ADMIN, PASSWORD).await;
    let as_ = |token: &str| cookie(token);

    // Public: nobody needs a session, and no identity goes upstream.
    let public = get(&gw.url("/static/echo"), &[]).await;
    assert_eq!(public.status, 200);
    // Signed in (the default): alice and carol, not nobody.
    assert_eq!(
        get(&gw.url("/anything"), &[("cookie", &as_(&alice))])
            .await
            .status,
        200
    );
    let nobody = get(&gw.url("/anything"), &[HTML]).await;
    assert_eq!(nobody.status, 303);

    // Groups: carol (admins) passes and the upstream learns her groups.
    let echo = get(&gw.url("/admin/echo"), &[("cookie", &as_(&carol))]).await;
    assert_eq!(echo.status, 200, "{}", echo.text());
    let carol_echo = get(
        &gw.url("/echo"),
        &[("cookie", &as_(&carol)), ("x-signoff-groups", "forged")],
    )
    .await;
    assert_eq!(seen(&carol_echo, "x-signoff-groups"), ["admins"]);
    assert_eq!(seen(&carol_echo, "x-signoff-user"), [ADMIN]);
    // alice is in no group: no header, and a forged one does not pass.
    let alice_echo = get(
        &gw.url("/echo"),
        &[("cookie", &as_(&alice)), ("x-signoff-groups", "admins")],
    )
    .await;
    assert!(seen(&alice_echo, "x-signoff-groups").is_empty());

    // alice is refused the admin area: a no-store page naming her, with a
    // way to switch account; JSON for an API client.
    let page = get(&gw.url("/admin/x"), &[HTML, ("cookie", &as_(&alice))]).await;
    assert_eq!(page.status, 403);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let text = page.text();
    assert!(
        text.contains("signed in as <strong>alice</strong>"),
        "{text}"
    );
    assert!(
        text.contains("/.signoff/logout") && text.contains("Switch account"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE"), "{text}");
    let api = get(&gw.url("/admin/x"), &[JSON, ("cookie", &as_(&alice))]).await;
    assert_eq!(api.status, 403);
    assert_eq!(api.json()["error"], "forbidden");
    assert_eq!(api.json()["user"], USER);
    assert_eq!(api.header("cache-control"), Some("no-store"));
    // Nobody signed in is sent to sign in first, not told 403.
    let anonymous = get(&gw.url("/admin/x"), &[HTML]).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(
        anonymous.header("location"),
        Some("/.signoff/login?next=%2Fadmin%2Fx")
    );

    // users = [...]: alice passes, carol does not.
    assert_eq!(
        get(&gw.url("/reports/1"), &[("cookie", &as_(&alice))])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&gw.url("/reports/1"), &[("cookie", &as_(&carol))])
            .await
            .status,
        403
    );
    // deny: nobody, whoever they are.
    for token in [Some(&alice), Some(&carol), None] {
        let mut headers = vec![HTML];
        let c;
        if let Some(t) = token {
            c = as_(t);
            headers.push(("cookie", &c));
        }
        assert_eq!(get(&gw.url("/blocked/x"), &headers).await.status, 403);
    }

    // No spelling of the admin area gets alice in, or anyone unsigned
    // through the public /static/.
    for path in TRICKY_ADMIN {
        let status = raw_status(&gw.origin, path, Some(&alice));
        assert!(matches!(status, 400 | 403 | 404), "alice {path}: {status}");
        let status = raw_status(&gw.origin, path, None);
        assert!(
            matches!(status, 303 | 400 | 401 | 404),
            "nobody {path}: {status}"
        );
    }
    // An escaped public path is public only to an app that decodes it:
    // one routing on the raw target serves something else there.
    let status = raw_status(&gw.origin, "/%73tatic/echo", None);
    assert!(
        matches!(status, 303 | 401),
        "nobody /%73tatic/echo: {status}"
    );
    // The plain admin path still works for carol.
    assert_eq!(raw_status(&gw.origin, "/admin", Some(&carol)), 200);
    drop(up);
}

#[tokio::test]
async fn rules_decide_at_forward_auth_on_the_forwarded_request() {
    let gw = start(None, RULES, &[]);
    let alice = gw.login(USER, PASSWORD).await;
    let carol = gw.login(ADMIN, PASSWORD).await;
    let check =
        |uri: &'static str, token: Option<String>, extra: Vec<(&'static str, &'static str)>| {
            let url = gw.url("/.signoff/auth");
            async move {
                let c = token.map(|t| cookie(&t));
                let mut headers = vec![("x-forwarded-uri", uri), ("x-forwarded-method", "GET")];
                headers.extend(extra);
                if let Some(c) = &c {
                    headers.push(("cookie", c.as_str()));
                }
                get(&url, &headers).await
            }
        };
    // Public: 200 with no identity.
    let public = check("/static/app.css", None, vec![]).await;
    assert_eq!(public.status, 200);
    assert!(public.header("x-signoff-user").is_none());
    // Groups reach the proxy for it to copy upstream.
    let ok = check("/admin/x", Some(carol.clone()), vec![]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-signoff-groups"), Some("admins"));
    assert_eq!(ok.header("x-signoff-user"), Some(ADMIN));
    let plain = check("/x", Some(alice.clone()), vec![]).await;
    assert_eq!(plain.status, 200);
    assert!(plain.header("x-signoff-groups").is_none());
    // alice: 403, however the path is spelled.
    for path in TRICKY_ADMIN
        .iter()
        .chain(["/admin", "/admin/x", "/admin#/x.png"].iter())
    {
        let r = check(path, Some(alice.clone()), vec![]).await;
        assert_eq!(r.status, 403, "alice {path}");
        let r = check(path, None, vec![]).await;
        assert_eq!(r.status, 401, "nobody {path}");
    }
    // A browser (nginx style) is told where to sign in.
    let nobody = check("/admin/x", None, vec![HTML]).await;
    assert_eq!(nobody.status, 401);
    assert_eq!(
        nobody.header("x-signoff-login"),
        Some("/.signoff/login?next=%2Fadmin%2Fx")
    );
    // No forwarded path: the public rule cannot apply, the others do.
    // (Here the deny rule may apply, so nobody passes: a proxy must
    // forward the URI for path rules to work, docs/forward-auth.md.)
    for token in [Some(&alice), Some(&carol), None] {
        let c = token.map(|t| cookie(t));
        let headers: Vec<(&str, &str)> = c.iter().map(|c| ("cookie", c.as_str())).collect();
        let unknown = get(&gw.url("/.signoff/auth"), &headers).await;
        assert_eq!(unknown.status, 403, "{}", unknown.text());
    }
}

#[tokio::test]
async fn host_and_method_rules_at_forward_auth() {
    let rules = r#"
[access]
default = "signed_in"
[[access.rule]]
host = "admin.example.test"
groups = ["admins"]
[[access.rule]]
methods = ["DELETE", "PUT"]
path_prefix = "/api"
policy = "deny"
"#;
    let gw = start(None, rules, &[]);
    let alice = gw.login(USER, PASSWORD).await;
    let c = cookie(&alice);
    let url = gw.url("/.signoff/auth");
    let check = |headers| signed_in_status(&url, &c, headers);
    let base = |method: &'static str, host: &'static str| {
        vec![
            ("x-forwarded-uri", "/api/x"),
            ("x-forwarded-method", method),
            ("x-forwarded-host", host),
        ]
    };
    assert_eq!(check(base("GET", "app.example.test")).await, 200);
    assert_eq!(check(base("GET", "admin.example.test")).await, 403);
    assert_eq!(check(base("GET", "ADMIN.example.test:443")).await, 403);
    assert_eq!(check(base("DELETE", "app.example.test")).await, 403);
    assert_eq!(check(base("delete", "app.example.test")).await, 403);
    // A POST the app may treat as a DELETE.
    let mut over = base("POST", "app.example.test");
    over.push(("x-http-method-override", "DELETE"));
    assert_eq!(check(over).await, 403);
    // Two override headers that disagree: the app may read either, so
    // the request must pass the rules for every method.
    let mut two = base("POST", "app.example.test");
    two.push(("x-http-method-override", "GET"));
    two.push(("x-method-override", "DELETE"));
    assert_eq!(check(two).await, 403);
    let mut agreeing = base("POST", "app.example.test");
    agreeing.push(("x-http-method-override", "GET"));
    agreeing.push(("x-method-override", "get"));
    assert_eq!(check(agreeing).await, 200);
    assert_eq!(check(base("POST", "app.example.test")).await, 200);
    // The host given twice, or as a list: the client's may be the one
    // that comes first, so the request is refused either way round.
    for (a, b) in [
        ("app.example.test", "admin.example.test"),
        ("admin.example.test", "app.example.test"),
    ] {
        let mut twice = base("GET", a);
        twice.push(("x-forwarded-host", b));
        assert_eq!(check(twice).await, 403, "{a} then {b}");
    }
    // A list was refused before as a host no rule names (it must then
    // pass them all), and is now refused as two hosts.
    let list = base("GET", "app.example.test, admin.example.test");
    assert_eq!(check(list).await, 403);
    let mut same = base("GET", "app.example.test");
    same.push(("x-forwarded-host", "app.example.test"));
    assert_eq!(check(same).await, 200);
    // No host forwarded: the host rule may apply, so it must be passed.
    assert_eq!(
        check(vec![
            ("x-forwarded-uri", "/x"),
            ("x-forwarded-method", "GET")
        ])
        .await,
        403
    );
}

/// The status of a GET of `url` with `headers` and the session cookie `c`.
async fn signed_in_status(url: &str, c: &str, mut headers: Vec<(&str, &str)>) -> u16 {
    headers.push(("cookie", c));
    get(url, &headers).await.status
}

/// The same reading of method overrides on a proxied request: one
/// naming a denied method is refused, and so are two that disagree (the
/// app may read either); two that agree are read as that method.
#[tokio::test]
async fn method_overrides_through_the_gateway() {
    let Some(up) = Upstream::start() else { return };
    let rules = r#"
[access]
default = "signed_in"
[[access.rule]]
methods = ["DELETE"]
path_prefix = "/echo"
policy = "deny"
"#;
    let gw = start(Some(&up), rules, &[]);
    let alice = gw.login(USER, PASSWORD).await;
    let c = cookie(&alice);
    let url = gw.url("/echo");
    let status = |overrides| signed_in_status(&url, &c, overrides);
    assert_eq!(status(vec![]).await, 200);
    assert_eq!(status(vec![("x-method-override", "DELETE")]).await, 403);
    assert_eq!(
        status(vec![
            ("x-http-method-override", "GET"),
            ("x-method-override", "DELETE")
        ])
        .await,
        403
    );
    assert_eq!(
        status(vec![("x-http-method", "GET"), ("x-method-override", "get")]).await,
        200
    );
}

#[tokio::test]
async fn a_fresh_rule_sends_an_old_sign_in_to_enter_the_password_again() {
    let Some(up) = Upstream::start() else { return };
    let rules = r#"
[access]
default = "signed_in"
[[access.rule]]
path_prefix = "/admin"
groups = ["admins"]
fresh = "2s"
"#;
    let gw = start(Some(&up), rules, &[]);
    let carol = gw.login(ADMIN, PASSWORD).await;
    let with = |t: &str| cookie(t);
    // Just signed in: fresh.
    assert_eq!(
        get(&gw.url("/admin/page"), &[HTML, ("cookie", &with(&carol))])
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    // Now too old: a browser goes to enter the password, coming back here.
    let stale = get(
        &gw.url("/admin/page?x=1"),
        &[HTML, ("cookie", &with(&carol))],
    )
    .await;
    assert_eq!(stale.status, 303, "{}", stale.text());
    assert_eq!(
        stale.header("location"),
        Some("/.signoff/reauth?next=%2Fadmin%2Fpage%3Fx%3D1")
    );
    assert_eq!(stale.header("cache-control"), Some("no-store"));
    // An API client is told how recent the password must be.
    let api = get(&gw.url("/admin/page"), &[JSON, ("cookie", &with(&carol))]).await;
    assert_eq!(api.status, 401);
    assert_eq!(api.json()["error"], "insufficient_user_authentication");
    assert_eq!(api.json()["max_age"], 2);
    assert!(api
        .header("www-authenticate")
        .is_some_and(|v| v.contains("insufficient_user_authentication")));
    // Other paths do not care.
    assert_eq!(
        get(&gw.url("/other"), &[("cookie", &with(&carol))])
            .await
            .status,
        200
    );

    // A forged re-authentication form (another site, no CSRF token) is
    // refused and makes nothing fresh.
    let forged = post_form(
        &gw.url("/.signoff/reauth"),
        &[("password", PASSWORD), ("next", "/admin/page")],
        &[
            ("cookie", &with(&carol)),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(forged.status, 403, "{}", forged.text());
    assert_eq!(
        get(&gw.url("/admin/page"), &[HTML, ("cookie", &with(&carol))])
            .await
            .status,
        303
    );

    // The real form: back to the same path, with a new token, and in.
    let back = reauth(&gw.origin, &carol, PASSWORD, "/admin/page?x=1").await;
    assert_eq!(back.status, 303, "{}", back.text());
    assert_eq!(back.header("location"), Some("/admin/page?x=1"));
    let rotated = back.new_cookie("signoff").expect("a rotated cookie");
    let page = get(
        &gw.url("/admin/page?x=1"),
        &[HTML, ("cookie", &with(&rotated))],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("PRIVATE upstream page /admin/page"));
    // A fresh password does not lift a group rule: alice still cannot.
    let alice = gw.login(USER, PASSWORD).await;
    assert_eq!(
        get(&gw.url("/admin/page"), &[HTML, ("cookie", &with(&alice))])
            .await
            .status,
        403
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_rules_without_dropping_sessions_or_allowed_requests() {
    let Some(up) = Upstream::start() else { return };
    let before = "[access]\ndefault = \"signed_in\"\n[[access.rule]]\npath_prefix = \"/later\"\npolicy = \"deny\"\n";
    let after = "[access]\ndefault = \"signed_in\"\n[[access.rule]]\npath_prefix = \"/now-closed\"\npolicy = \"deny\"\n";
    let gw = start(Some(&up), before, &[]);
    let config = gw.dir.path().join("signoff.toml");
    let alice = gw.login(USER, PASSWORD).await;
    let c = cookie(&alice);
    assert_eq!(get(&gw.url("/later"), &[("cookie", &c)]).await.status, 403);
    assert_eq!(
        get(&gw.url("/now-closed"), &[("cookie", &c)]).await.status,
        200
    );

    // Requests both rule sets allow, in a loop through the reload.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, c, stop) = (gw.url("/echo"), c.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(get(&url, &[("cookie", &c)]).await.status);
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A file that does not check keeps the rules in force.
    std::fs::write(&config, "[access]\ndefault = \"maybe\"\n").unwrap();
    hangup(&gw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&gw.url("/later"), &[("cookie", &c)]).await.status, 403);
    assert!(
        gw.proc
            .log_text()
            .contains("the access rules in force are kept"),
        "{}",
        gw.proc.log_text()
    );
    // The new rules.
    std::fs::write(&config, after).unwrap();
    hangup(&gw);
    let mut waited = 0;
    while get(&gw.url("/now-closed"), &[("cookie", &c)]).await.status != 403 {
        waited += 1;
        assert!(waited < 100, "the new rules never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let statuses = task.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    assert!(total > 20, "only {total} requests under load");
    // The session is the same one, and /later is open now.
    assert_eq!(get(&gw.url("/later"), &[("cookie", &c)]).await.status, 200);
}

#[cfg(unix)]
fn hangup(gw: &Gateway) {
    let status = Command::new("kill")
        .args(["-HUP", &gw.proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn the_rules_commands_explain_and_test() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signoff.toml");
    std::fs::write(
        &config,
        format!("{RULES}\n[[access.rule]]\npath = \"/reports/x\"\npolicy = \"public\"\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, ADMIN, PASSWORD, &["admins"]);
    let run = |args: &[&str]| {
        let out = Command::new(signoff_bin())
            .args(args)
            .env_remove("SIGNOFF_CONFIG")
            .env_remove("SIGNOFF_DB")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["rules", "check", "--config", &config]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("--public-path /static/: path_glob /static/** -> public"),
        "{out}"
    );
    assert!(
        out.contains("rule 1 \"admin area\": /admin and under -> signed in, and members of admins"),
        "{out}"
    );
    assert!(out.contains("otherwise: any signed-in user"), "{out}");
    assert!(
        out.contains("warning: rule 4 can never decide: rule 3 \"reports\" comes first"),
        "{out}"
    );

    // carol's groups come from the store.
    let (code, out, err) = run(&[
        "rules",
        "test",
        "--config",
        &config,
        "--db",
        &db,
        "--user",
        ADMIN,
        "GET",
        "https://app.example.test/admin/x",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("for carol (groups admins): passes"), "{out}");
    let (code, out, _) = run(&[
        "rules",
        "test",
        "--config",
        &config,
        "--user",
        "bob",
        "--group",
        "staff",
        "GET",
        "/static/../admin",
    ]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("the path is not plain"), "{out}");
    assert!(
        out.contains("refused, 403: rule 1 \"admin area\" does not let this user in"),
        "{out}"
    );
    let (code, out, _) = run(&[
        "rules",
        "test",
        "--config",
        &config,
        "GET",
        "/static/app.css",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("passes (public"), "{out}");
    let (code, out, _) = run(&["rules", "test", "--config", &config, "GET", "/blocked"]);
    assert_eq!(code, Some(3), "{out}");
    // Errors say what to do.
    let (code, _, err) = run(&[
        "rules", "test", "--config", &config, "--db", &db, "--user", "nobody", "GET", "/x",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("give --group to test without the store"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("bad.toml"),
        "[access]\n[[access.rule]]\npath = \"/x\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&[
        "rules",
        "check",
        "--config",
        &dir.path().join("bad.toml").display().to_string(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("say what the rule allows"), "{err}");
    let (code, _, err) = run(&["rules", "check"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("signoff rules check --config PATH"), "{err}");
}

#[test]
fn the_documented_example_is_the_example_file() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/access-rules.md")).unwrap();
    let block = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in docs/access-rules.md");
    let file = std::fs::read_to_string(root.join("examples/access-rules.toml")).unwrap();
    assert!(
        file.ends_with(block),
        "examples/access-rules.toml and the first toml block of docs/access-rules.md differ"
    );
}
