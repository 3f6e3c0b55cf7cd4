//! Many apps behind one signoff (`[[app]]`, docs/apps.md) on real
//! processes: apps on host names of their own, each with its own rules;
//! one sign-in on the central host signs the user in on every app host
//! without a password, and one sign-out on any host ends them all, on
//! every node. Host names are sent in `Host` to 127.0.0.1 (the browser
//! test in tests/browser/ maps them with `--host-resolver-rules`).

mod support;

use support::services;
use support::{add_user_in_groups, get, post_form, seen, Gateway, Reply, Upstream, PASSWORD, USER};

const HTML: (&str, &str) = ("accept", "text/html");

/// Two apps on hosts of their own, one under a prefix of the central
/// host; the grafana app keeps `/admin` for group `admins`.
const APPS: &str = r#"
[[app]]
name = "wiki"
host = "wiki.test"
upstream = "UPSTREAM"
[app.access]
default = "signed_in"
[[app.access.rule]]
path_prefix = "/settings"
policy = "signed_in"
fresh = "2s"

[[app]]
name = "grafana"
host = "grafana.test"
upstream = "UPSTREAM"
[app.access]
default = "signed_in"
[[app.access.rule]]
path_prefix = "/admin"
groups = ["admins"]

[[app]]
name = "tools"
host = "tools.test"
path_prefix = "/tools"
upstream = "UPSTREAM"

[[app]]
name = "docs"
host = "login.test"
path_prefix = "/docs"
upstream = "UPSTREAM"
[app.access]
[[app.access.rule]]
policy = "public"
"#;

/// A node serving the apps, the central host `login.test`, on `db`.
fn node(dir: tempfile::TempDir, db: &str, upstream: &Upstream) -> (Gateway, u16) {
    Gateway::start_with_hosts(
        dir,
        db,
        upstream,
        &APPS.replace("UPSTREAM", &upstream.url()),
    )
}

/// A client of one node, naming hosts in `Host`.
struct Browser {
    base: String,
    port: u16,
}

impl Browser {
    fn of(gw: &Gateway, port: u16) -> Browser {
        Browser {
            base: gw.origin.clone(),
            port,
        }
    }

    fn host(&self, name: &str) -> String {
        format!("{name}:{}", self.port)
    }

    fn origin(&self, name: &str) -> String {
        format!("http://{name}:{}", self.port)
    }

    async fn get(&self, host: &str, path_and_query: &str, cookies: &str) -> Reply {
        let host = self.host(host);
        let mut headers = vec![("host", host.as_str()), HTML];
        if !cookies.is_empty() {
            headers.push(("cookie", cookies));
        }
        get(&format!("{}{path_and_query}", self.base), &headers).await
    }

    async fn logout(&self, host: &str, cookies: &str, origin: &str) -> Reply {
        let host = self.host(host);
        post_form(
            &format!("{}/.signoff/logout", self.base),
            &[],
            &[
                ("host", host.as_str()),
                ("cookie", cookies),
                ("origin", origin),
            ],
        )
        .await
    }

    /// The path and query of a `Location` on `host`'s origin.
    fn on(&self, host: &str, reply: &Reply) -> String {
        let location = reply
            .header("location")
            .unwrap_or_else(|| panic!("no Location ({}): {}", reply.status, reply.text()));
        location
            .strip_prefix(&self.origin(host))
            .unwrap_or_else(|| panic!("{location} is not on {host}"))
            .to_owned()
    }

    /// From an app host's sign-in page to its session, through the central
    /// host where `central` is signed in: the app host's session token.
    async fn single_sign_on(&self, host: &str, next: &str, central: &str) -> String {
        let start = self
            .get(host, &format!("/.signoff/login?next={next}"), "")
            .await;
        assert_eq!(start.status, 303, "{}", start.text());
        let state = start.new_cookie("signoff-sso").expect("a state cookie");
        let hand_over = self
            .get(
                "login.test",
                &self.on("login.test", &start),
                &format!("signoff={central}"),
            )
            .await;
        assert_eq!(hand_over.status, 303, "{}", hand_over.text());
        assert_eq!(hand_over.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(hand_over.header("cache-control"), Some("no-store"));
        let callback = self.on(host, &hand_over);
        assert!(
            callback.starts_with("/.signoff/sso/callback?code="),
            "{callback}"
        );
        let taken = self
            .get(host, &callback, &format!("signoff-sso={state}"))
            .await;
        assert_eq!(taken.status, 303, "{}", taken.text());
        assert_eq!(taken.header("location"), Some(next));
        // Replayed, the hand-over is gone.
        let again = self
            .get(host, &callback, &format!("signoff-sso={state}"))
            .await;
        assert_eq!(again.status, 400, "a hand-over is taken once");
        taken.new_cookie("signoff").expect("the app host's session")
    }

    /// Whether `token` is signed in on `host` (a private page is served).
    async fn signed_in(&self, host: &str, token: &str) -> bool {
        let reply = self.get(host, "/page", &format!("signoff={token}")).await;
        match reply.status {
            200 => {
                assert!(reply.text().contains("PRIVATE upstream page"));
                true
            }
            303 => false,
            other => panic!("{host}: {other} {}", reply.text()),
        }
    }
}

/// Signs in on the central host, password and all; its session token.
async fn sign_in_centrally(b: &Browser, user: &str) -> String {
    let origin = b.origin("login.test");
    let host = b.host("login.test");
    let reply = post_form(
        &format!("{}/.signoff/login", b.base),
        &[("username", user), ("password", PASSWORD)],
        &[("host", host.as_str()), ("origin", origin.as_str())],
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    reply.new_cookie("signoff").unwrap()
}

#[tokio::test]
async fn one_sign_in_and_one_sign_out_across_app_hosts() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    let (gw, port) = node(dir, &db, &upstream);
    let b = Browser::of(&gw, port);

    // An app host sends a browser with no session to sign in, and its
    // sign-in page sends it on to the central host with a state.
    let first = b.get("wiki.test", "/page", "").await;
    assert_eq!(first.status, 303);
    assert_eq!(
        first.header("location"),
        Some("/.signoff/login?next=%2Fpage")
    );
    let start = b.get("wiki.test", "/.signoff/login?next=%2Fpage", "").await;
    assert_eq!(start.status, 303);
    let central_path = b.on("login.test", &start);
    assert!(central_path.starts_with("/.signoff/sso?site=wiki.test&state="));
    let state_cookie = start
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("signoff-sso="))
        .unwrap();
    assert!(state_cookie.contains("HttpOnly") && state_cookie.contains("SameSite=Lax"));
    assert!(
        !state_cookie.contains("Domain"),
        "host-only: {state_cookie}"
    );
    // Not signed in centrally: sign in first, then back to the hand-over.
    let anonymous = b.get("login.test", &central_path, "").await;
    assert_eq!(anonymous.status, 303);
    assert!(anonymous
        .header("location")
        .unwrap()
        .starts_with("/.signoff/login?next=%2F.signoff%2Fsso%3Fsite%3Dwiki.test"));

    // The sign-in form's redirects may lead on to the app hosts: Chromium
    // holds redirects after a form to its page's `form-action`.
    let login_page = b.get("login.test", "/.signoff/login", "").await;
    let csp = login_page.header("content-security-policy").unwrap();
    let form_action = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("form-action "))
        .unwrap();
    let mut sources: Vec<&str> = form_action.split(' ').skip(1).collect();
    sources.sort_unstable();
    let mut expected = vec![
        "'self'".to_owned(),
        b.origin("wiki.test"),
        b.origin("grafana.test"),
        b.origin("tools.test"),
    ];
    expected.sort_unstable();
    assert_eq!(sources, expected, "{csp}");
    let central = sign_in_centrally(&b, USER).await;
    let wiki = b.single_sign_on("wiki.test", "/page", &central).await;
    assert!(b.signed_in("wiki.test", &wiki).await);
    // The upstream is told who it is, on its own host.
    let echo = b
        .get("wiki.test", "/echo", &format!("signoff={wiki}"))
        .await;
    assert_eq!(seen(&echo, "x-signoff-user"), [USER]);
    assert_eq!(seen(&echo, "host"), [b.host("wiki.test")]);
    // Under the public URL itself, and whatever other `Host` the client
    // names (not an app's), the upstream is sent the public URL's host,
    // and a strict CSP lets through the status URL under it (both made
    // once when the gateway starts).
    for named in ["login.test", "EVIL.test"] {
        let echo = b.get(named, "/echo", &format!("signoff={central}")).await;
        assert_eq!(seen(&echo, "x-signoff-user"), [USER], "{named}");
        assert_eq!(seen(&echo, "host"), [b.host("login.test")], "{named}");
        assert_eq!(
            seen(&echo, "x-forwarded-host"),
            [b.host("login.test")],
            "{named}"
        );
        let page = b.get(named, "/csp", &format!("signoff={central}")).await;
        let csp = page.header("content-security-policy").unwrap();
        assert!(
            csp.ends_with(&format!(
                "connect-src {}/.signoff/status",
                b.origin("login.test")
            )),
            "{named}: {csp}"
        );
    }
    // The second app: no password.
    let grafana = b.single_sign_on("grafana.test", "/page", &central).await;
    assert!(b.signed_in("grafana.test", &grafana).await);

    // Each session is good on its own host alone.
    assert!(!b.signed_in("grafana.test", &wiki).await);
    assert!(!b.signed_in("login.test", &wiki).await);
    assert!(!b.signed_in("wiki.test", &central).await);
    assert!(b.signed_in("login.test", &central).await);

    // Each app has its own rules: grafana keeps /admin for admins.
    let admin = b
        .get("grafana.test", "/admin", &format!("signoff={grafana}"))
        .await;
    assert_eq!(admin.status, 403, "{}", admin.text());
    let wiki_admin = b
        .get("wiki.test", "/admin", &format!("signoff={wiki}"))
        .await;
    assert_eq!(wiki_admin.status, 200);
    // An app under a prefix of the central host, public by its rules.
    let docs = b.get("login.test", "/docs/intro", "").await;
    assert_eq!(docs.status, 200, "{}", docs.text());

    // The central host's other pages are not served on app hosts.
    let sessions = b
        .get(
            "wiki.test",
            "/.signoff/sessions",
            &format!("signoff={wiki}"),
        )
        .await;
    assert_eq!(sessions.status, 303);
    assert_eq!(
        sessions.header("location").unwrap(),
        format!("{}/.signoff/sessions", b.origin("login.test"))
    );

    // A sign-out forged from another site changes nothing.
    let forged = b
        .logout("wiki.test", &format!("signoff={wiki}"), "http://evil.test")
        .await;
    assert_eq!(forged.status, 403);
    assert!(b.signed_in("wiki.test", &wiki).await);
    // Nor does one from the central host's origin: the form is the app
    // host's own.
    let cross = b
        .logout(
            "wiki.test",
            &format!("signoff={wiki}"),
            &b.origin("login.test"),
        )
        .await;
    assert_eq!(cross.status, 403);

    // One sign-out, on one app host, ends them all.
    let out = b
        .logout(
            "grafana.test",
            &format!("signoff={grafana}"),
            &b.origin("grafana.test"),
        )
        .await;
    assert_eq!(out.status, 303, "{}", out.text());
    assert!(out.header("clear-site-data").is_some());
    assert!(!b.signed_in("grafana.test", &grafana).await);
    assert!(!b.signed_in("wiki.test", &wiki).await);
    assert!(!b.signed_in("login.test", &central).await);
}

#[tokio::test]
async fn a_hand_over_is_bound_to_its_browser_its_host_and_a_live_sign_in() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    add_user_in_groups(&db, "mallory", PASSWORD, &[]);
    let (gw, port) = node(dir, &db, &upstream);
    let b = Browser::of(&gw, port);
    let hand_over = |state: &'static str, central: String| {
        let b = &b;
        async move {
            let path = format!("/.signoff/sso?site=wiki.test&state={state}&next=%2Fpage");
            let reply = b
                .get("login.test", &path, &format!("signoff={central}"))
                .await;
            assert_eq!(reply.status, 303, "{}", reply.text());
            b.on("wiki.test", &reply)
        }
    };
    const STATE: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const OTHER: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    // Login CSRF: mallory's hand-over, sent to a victim whose browser
    // holds another state (or none), signs nobody in.
    let mallory = sign_in_centrally(&b, "mallory").await;
    let callback = hand_over(STATE, mallory.clone()).await;
    for cookies in [String::new(), format!("signoff-sso={OTHER}")] {
        let reply = b.get("wiki.test", &callback, &cookies).await;
        assert_eq!(reply.status, 400, "{cookies:?}");
        assert!(reply.new_cookie("signoff").is_none());
    }
    // Taken on another app host than its own: refused.
    let callback = hand_over(STATE, mallory.clone()).await;
    let reply = b
        .get("grafana.test", &callback, &format!("signoff-sso={STATE}"))
        .await;
    assert_eq!(reply.status, 400);
    // On the central host, the callback is not served; a made-up site or
    // a state of the wrong shape gets no hand-over.
    let reply = b
        .get("login.test", &callback, &format!("signoff-sso={STATE}"))
        .await;
    assert_eq!(reply.status, 404);
    for path in [
        format!("/.signoff/sso?site=evil.test&state={STATE}"),
        "/.signoff/sso?site=wiki.test&state=short".to_owned(),
        format!("/.signoff/sso?site=login.test&state={STATE}"),
    ] {
        let reply = b
            .get("login.test", &path, &format!("signoff={mallory}"))
            .await;
        assert_eq!(reply.status, 400, "{path}");
    }
    // `next` stays a path on the app host.
    let reply = b
        .get(
            "login.test",
            &format!("/.signoff/sso?site=wiki.test&state={STATE}&next=%2F%2Fevil.test%2F"),
            &format!("signoff={mallory}"),
        )
        .await;
    let taken = b
        .get(
            "wiki.test",
            &b.on("wiki.test", &reply),
            &format!("signoff-sso={STATE}"),
        )
        .await;
    assert_eq!(taken.status, 303);
    assert_eq!(taken.header("location"), Some("/"));

    // A hand-over made before a sign-out is worthless after it.
    let alice = sign_in_centrally(&b, USER).await;
    let callback = hand_over(STATE, alice.clone()).await;
    let out = b
        .logout(
            "login.test",
            &format!("signoff={alice}"),
            &b.origin("login.test"),
        )
        .await;
    assert_eq!(out.status, 303);
    let reply = b
        .get("wiki.test", &callback, &format!("signoff-sso={STATE}"))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.new_cookie("signoff").is_none());
}

#[tokio::test]
async fn redis_a_sign_out_on_one_node_ends_every_host_on_the_other() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let Some(base) = services::shared_redis() else {
        return;
    };
    let prefix = services::unique("signoff-test-apps-");
    let db = format!("{base}?prefix={prefix}");
    let _clean = Unlink {
        base: base.clone(),
        prefix: prefix.clone(),
    };
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    let (a, port_a) = node(tempfile::tempdir().unwrap(), &db, &upstream);
    let (b_node, port_b) = node(tempfile::tempdir().unwrap(), &db, &upstream);
    let a = Browser::of(&a, port_a);
    let b = Browser::of(&b_node, port_b);

    let central = sign_in_centrally(&a, USER).await;
    let wiki = a.single_sign_on("wiki.test", "/page", &central).await;
    let grafana = a.single_sign_on("grafana.test", "/page", &central).await;
    // Node B knows them all (and caches them).
    assert!(b.signed_in("wiki.test", &wiki).await);
    assert!(b.signed_in("grafana.test", &grafana).await);
    assert!(b.signed_in("login.test", &central).await);

    let out = a
        .logout(
            "wiki.test",
            &format!("signoff={wiki}"),
            &a.origin("wiki.test"),
        )
        .await;
    assert_eq!(out.status, 303);
    // Within the revocation bus's bound (docs/deploy-multi-node.md), every host
    // refuses on node B too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let still = [
            b.signed_in("wiki.test", &wiki).await,
            b.signed_in("grafana.test", &grafana).await,
            b.signed_in("login.test", &central).await,
        ];
        if still == [false; 3] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node B still lets in {still:?} 2 s after the sign-out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Removes a test's keys from the machine's Redis, also when it fails.
struct Unlink {
    base: String,
    prefix: String,
}

impl Drop for Unlink {
    fn drop(&mut self) {
        let (base, prefix) = (&self.base, &self.prefix);
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                &format!(
                    "redis-cli -u '{base}' --scan --pattern '{prefix}:*' | xargs -r redis-cli -u '{base}' unlink"
                ),
            ])
            .output();
    }
}

#[tokio::test]
async fn fresh_rules_forward_auth_and_the_sessions_page_across_app_hosts() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    let (gw, port) = node(dir, &db, &upstream);
    let b = Browser::of(&gw, port);
    let central = sign_in_centrally(&b, USER).await;
    let wiki = b.single_sign_on("wiki.test", "/page", &central).await;

    // `fresh` on an app host: the app host's session carries the central
    // sign-in's password time, so a hand-over is no fresh password.
    let settings = b
        .get("wiki.test", "/settings", &format!("signoff={wiki}"))
        .await;
    assert_eq!(settings.status, 200, "the password was just typed");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let stale = b
        .get("wiki.test", "/settings", &format!("signoff={wiki}"))
        .await;
    assert_eq!(stale.status, 303);
    assert_eq!(
        stale.header("location"),
        Some("/.signoff/reauth?next=%2Fsettings")
    );
    // A new hand-over without the password still is not fresh.
    let again = b.single_sign_on("wiki.test", "/settings", &central).await;
    let still = b
        .get("wiki.test", "/settings", &format!("signoff={again}"))
        .await;
    assert_eq!(still.status, 303, "a hand-over made the password fresh");
    // The app host's re-authentication is the central host's, then a
    // hand-over back.
    let reauth = b
        .get(
            "wiki.test",
            "/.signoff/reauth?next=%2Fsettings",
            &format!("signoff={again}"),
        )
        .await;
    assert_eq!(reauth.status, 303);
    let state = reauth.new_cookie("signoff-sso").unwrap();
    let central_reauth = b.on("login.test", &reauth);
    assert!(
        central_reauth.starts_with("/.signoff/reauth?next=%2F.signoff%2Fsso%3Fsite%3Dwiki.test"),
        "{central_reauth}"
    );
    let page = b
        .get("login.test", &central_reauth, &format!("signoff={central}"))
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let csrf = support::csrf_in(&page.text());
    let next = central_reauth
        .split_once("next=")
        .map(|(_, n)| {
            form_urlencoded::parse(format!("n={n}").as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned()
        })
        .unwrap();
    let host = b.host("login.test");
    let origin = b.origin("login.test");
    let cookie = format!("signoff={central}");
    let entered = post_form(
        &format!("{}/.signoff/reauth", b.base),
        &[("csrf", &csrf), ("password", PASSWORD), ("next", &next)],
        &[("host", &host), ("cookie", &cookie), ("origin", &origin)],
    )
    .await;
    assert_eq!(entered.status, 303, "{}", entered.text());
    let central = entered
        .new_cookie("signoff")
        .expect("a rotated central token");
    let hand_over = b
        .get(
            "login.test",
            entered.header("location").unwrap(),
            &format!("signoff={central}"),
        )
        .await;
    assert_eq!(hand_over.status, 303);
    let taken = b
        .get(
            "wiki.test",
            &b.on("wiki.test", &hand_over),
            &format!("signoff={again}; signoff-sso={state}"),
        )
        .await;
    assert_eq!(taken.status, 303);
    assert_eq!(taken.header("location"), Some("/settings"));
    let fresh = taken.new_cookie("signoff").unwrap();
    let settings = b
        .get("wiki.test", "/settings", &format!("signoff={fresh}"))
        .await;
    assert_eq!(settings.status, 200, "fresh after the central password");
    // The session it replaced on this host has ended.
    assert!(!b.signed_in("wiki.test", &again).await);

    // Forward-auth picks the app by X-Forwarded-Host and checks the
    // session against that host.
    let grafana = b.single_sign_on("grafana.test", "/page", &central).await;
    let auth = |host: Option<&'static str>, uri: &'static str, token: String| {
        let url = format!("{}/.signoff/auth", b.base);
        async move {
            let cookie = format!("signoff={token}");
            let mut headers = vec![
                ("cookie", cookie.as_str()),
                ("x-forwarded-uri", uri),
                ("x-forwarded-method", "GET"),
            ];
            if let Some(host) = host {
                headers.push(("x-forwarded-host", host));
            }
            get(&url, &headers).await
        }
    };
    let ok = auth(Some("grafana.test"), "/page", grafana.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("x-signoff-user"), Some(USER));
    let admin = auth(Some("grafana.test"), "/admin", grafana.clone()).await;
    assert_eq!(admin.status, 403, "grafana's own rule");
    let elsewhere = auth(Some("wiki.test"), "/page", grafana.clone()).await;
    assert_eq!(elsewhere.status, 401, "grafana's session is not wiki's");
    let central_there = auth(Some("grafana.test"), "/page", central.clone()).await;
    assert_eq!(
        central_there.status, 401,
        "the central session is not grafana's"
    );
    let unnamed = auth(None, "/page", grafana.clone()).await;
    assert_eq!(unnamed.status, 403, "with [[app]]s the host must be named");

    // Ending the central session on the sessions page ends the sign-in on
    // every host.
    let other_device = sign_in_centrally(&b, USER).await;
    let sessions = b
        .get(
            "login.test",
            "/.signoff/sessions",
            &format!("signoff={other_device}"),
        )
        .await;
    assert_eq!(sessions.status, 200);
    let csrf = support::csrf_in(&sessions.text());
    let cookie = format!("signoff={other_device}");
    let handle = {
        let echo = b
            .get("login.test", "/echo", &format!("signoff={central}"))
            .await;
        seen(&echo, "x-signoff-session").pop().unwrap()
    };
    let ended = post_form(
        &format!("{}/.signoff/sessions/end", b.base),
        &[("csrf", &csrf), ("handle", &handle)],
        &[("host", &host), ("cookie", &cookie), ("origin", &origin)],
    )
    .await;
    assert_eq!(ended.status, 303, "{}", ended.text());
    assert!(!b.signed_in("login.test", &central).await);
    assert!(!b.signed_in("wiki.test", &fresh).await);
    assert!(!b.signed_in("grafana.test", &grafana).await);
    assert!(b.signed_in("login.test", &other_device).await);
}

/// `signoff rules check` lists each app's rules, and `signoff rules test`
/// decides with the rules of the app the URL is for.
#[test]
fn the_rules_commands_know_the_apps() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signoff.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"https://login.example.com\"\n{}",
            APPS.replace("UPSTREAM", "http://127.0.0.1:9")
                .replace(".test", ".example.com")
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let run = |args: &[&str]| {
        std::process::Command::new(support::signoff_bin())
            .args(args)
            .env_remove("SIGNOFF_PUBLIC_URL")
            .output()
            .unwrap()
    };
    let check = run(&["rules", "check", "--config", &config]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    for line in [
        "the top-level upstream (what no [[app]] serves):",
        "app \"grafana\" (grafana.example.com):",
        "app \"docs\" (login.example.com/docs):",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let test = |url: &str| {
        run(&[
            "rules", "test", "--config", &config, "--user", "alice", "--group", "staff", "GET", url,
        ])
    };
    let admin = test("https://grafana.example.com/admin");
    let text = String::from_utf8_lossy(&admin.stdout);
    assert_eq!(admin.status.code(), Some(3), "{text}");
    assert!(
        text.contains("app \"grafana\": its own rules decide"),
        "{text}"
    );
    let wiki = test("https://wiki.example.com/admin");
    assert_eq!(
        wiki.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&wiki.stdout)
    );
    let docs = test("https://login.example.com/docs/x");
    let text = String::from_utf8_lossy(&docs.stdout);
    assert!(text.contains("public"), "{text}");
}

/// The example of docs/apps.md is examples/apps.toml, and `serve --check`
/// accepts it.
#[test]
fn the_documented_example_is_the_example_file_and_checks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/apps.md")).unwrap();
    let block = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in docs/apps.md");
    let example = root.join("examples/apps.toml");
    let file = std::fs::read_to_string(&example).unwrap();
    assert!(
        file.ends_with(block),
        "examples/apps.toml and the toml block of docs/apps.md differ"
    );
    let out = std::process::Command::new(support::signoff_bin())
        .args(["serve", "--check", "--config"])
        .arg(&example)
        .env_remove("SIGNOFF_PUBLIC_URL")
        .env_remove("SIGNOFF_UPSTREAM")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "app           grafana at https://grafana.example.com -> http://127.0.0.1:3000/, 2 access rules",
        "app           docs at https://login.example.com/docs -> http://127.0.0.1:4000/",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

/// `SIGHUP` reloads each app's rules without ending sessions; a file whose
/// apps changed keeps the rules in force and says a restart is needed.
#[tokio::test]
async fn sighup_reloads_app_rules_and_refuses_changed_apps() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    let config = dir.path().join("signoff.toml");
    let (gw, port) = node(dir, &db, &upstream);
    let b = Browser::of(&gw, port);
    let central = sign_in_centrally(&b, USER).await;
    let wiki = b.single_sign_on("wiki.test", "/page", &central).await;
    let status = |path: &'static str| {
        let b = &b;
        let cookie = format!("signoff={wiki}");
        async move { b.get("wiki.test", path, &cookie).await.status }
    };
    assert_eq!(status("/reports").await, 200);
    let hangup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &gw.proc.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let wait_for_log = |needle: &'static str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if gw.proc.log_text().contains(needle) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in the log"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // wiki closes /reports.
    let text = std::fs::read_to_string(&config).unwrap();
    let closed = text.replacen(
        "[[app.access.rule]]\npath_prefix = \"/settings\"",
        "[[app.access.rule]]\npath_prefix = \"/reports\"\npolicy = \"deny\"\n\n[[app.access.rule]]\npath_prefix = \"/settings\"",
        1,
    );
    assert_ne!(closed, text);
    std::fs::write(&config, &closed).unwrap();
    hangup();
    wait_for_log("SIGHUP: access rules reloaded");
    assert_eq!(status("/reports").await, 403);
    assert!(b.signed_in("wiki.test", &wiki).await, "sessions are kept");
    // A new app needs a restart: the rules in force stay.
    std::fs::write(
        &config,
        format!("{}\n[[app]]\nname = \"new\"\nhost = \"new.test\"\n", text),
    )
    .unwrap();
    hangup();
    wait_for_log("restart signoff to apply them");
    assert_eq!(status("/reports").await, 403, "the rules in force are kept");
}

/// An HTTP/2 request names its host in `:authority`, with no `Host`
/// header: it reaches the same app, under the same session binding, as
/// HTTP/1.1.
#[tokio::test]
async fn http2_requests_are_told_apart_by_their_authority() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    let (gw, port) = node(dir, &db, &upstream);
    let b = Browser::of(&gw, port);
    let central = sign_in_centrally(&b, USER).await;
    let grafana = b.single_sign_on("grafana.test", "/page", &central).await;
    let h2 = |authority: String, path: &'static str, token: String| {
        let addr = format!("127.0.0.1:{port}");
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let req = http::Request::builder()
                .uri(format!("http://{authority}{path}"))
                .header("cookie", format!("signoff={token}"))
                .header("accept", "text/html")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            assert!(!res.headers().contains_key("host"));
            res.status().as_u16()
        }
    };
    assert_eq!(
        h2(b.host("grafana.test"), "/page", grafana.clone()).await,
        200
    );
    assert_eq!(
        h2(b.host("grafana.test"), "/admin", grafana.clone()).await,
        403,
        "grafana's rules"
    );
    assert_eq!(
        h2(b.host("wiki.test"), "/page", grafana.clone()).await,
        303,
        "not wiki's session"
    );
    assert_eq!(
        h2(b.host("grafana.test"), "/page", central.clone()).await,
        303,
        "not the central session"
    );
    assert_eq!(
        h2(b.host("login.test"), "/page", central.clone()).await,
        200
    );
}

/// A path that reads as two apps' paths is refused, wherever it is read
/// (`/docs/../admin` is `/admin` to a proxy that resolves dots), and a
/// path no app of an app host serves is not the top-level upstream's.
#[tokio::test]
async fn paths_that_two_apps_could_claim_are_refused() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    let (gw, port) = node(dir, &db, &upstream);
    let b = Browser::of(&gw, port);
    let central = sign_in_centrally(&b, USER).await;
    let cookie = format!("signoff={central}");
    // The docs app is public and lives under /docs on the central host.
    assert_eq!(b.get("login.test", "/docs/x", "").await.status, 200);
    assert_eq!(
        b.get("login.test", "/DOCS/x", "").await.status,
        200,
        "case as a proxy may route"
    );
    for tricky in [
        "/docs/../admin",
        "/docs/%2e%2e/admin",
        "/docs/..%2fadmin",
        "/docs%2f..%2fadmin",
        "/x/../docs/a",
        "/%64ocs/a",
        "/docs;x/../../admin",
    ] {
        let anonymous = b.get("login.test", tricky, "").await;
        assert_eq!(anonymous.status, 400, "{tricky} without a session");
        let signed_in = b.get("login.test", tricky, &cookie).await;
        assert_eq!(signed_in.status, 400, "{tricky} signed in");
    }
    // Forward-auth decides the same way, and an unknown forwarded host is
    // refused.
    let auth = |host: &'static str, uri: &'static str| {
        let url = format!("{}/.signoff/auth", b.base);
        async move {
            get(
                &url,
                &[
                    ("x-forwarded-host", host),
                    ("x-forwarded-uri", uri),
                    ("x-forwarded-method", "GET"),
                ],
            )
            .await
            .status
        }
    };
    assert_eq!(auth("login.test", "/docs/a").await, 200);
    assert_eq!(auth("login.test", "/docs/../admin").await, 400);
    assert_eq!(auth("LOGIN.test", "/docs/a").await, 200, "letter case");
    // A final dot names the same host, and the rules do not know what an
    // app would make of it: refused, never the top-level rules.
    assert_eq!(auth("login.test.", "/docs/a").await, 403);
    assert_eq!(auth("grafana.test.", "/page").await, 403);
    assert_eq!(auth("other.test", "/docs/a").await, 403);
}

/// What the outside review of the single sign-on found, each closed: an
/// app host's session dies with its central session even when that one
/// ended without a sign-out; a hand-over shown with the wrong state is used
/// up; a session's own token sent as a hand-over ends nothing; the state
/// cookie never reaches an app, nor can an app set it; a path no app of an
/// app host serves is nobody's.
#[tokio::test]
async fn what_the_review_found_stays_closed() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("signoff.db");
    let db = format!("sqlite://{}", db_path.display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    let (gw, port) = node(dir, &db, &upstream);
    let b = Browser::of(&gw, port);
    let central = sign_in_centrally(&b, USER).await;
    let wiki = b.single_sign_on("wiki.test", "/page", &central).await;

    // A hand-over refused for its state is gone: the right state later
    // finds nothing.
    const STATE: &str = "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";
    const OTHER: &str = "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD";
    let reply = b
        .get(
            "login.test",
            &format!("/.signoff/sso?site=grafana.test&state={STATE}&next=%2F"),
            &format!("signoff={central}"),
        )
        .await;
    let callback = b.on("grafana.test", &reply);
    let wrong = b
        .get("grafana.test", &callback, &format!("signoff-sso={OTHER}"))
        .await;
    assert_eq!(wrong.status, 400);
    let right = b
        .get("grafana.test", &callback, &format!("signoff-sso={STATE}"))
        .await;
    assert_eq!(right.status, 400, "a hand-over shown once is used up");
    // A real session's token as the code ends nothing.
    let as_code = b
        .get(
            "wiki.test",
            &format!("/.signoff/sso/callback?code={wiki}&state={STATE}"),
            &format!("signoff-sso={STATE}"),
        )
        .await;
    assert_eq!(as_code.status, 400);
    assert!(b.signed_in("wiki.test", &wiki).await);

    // The state cookie is signoff's: the app neither sees nor sets it.
    let echo = b
        .get(
            "wiki.test",
            "/echo",
            &format!("signoff={wiki}; signoff-sso={STATE}; theme=dark"),
        )
        .await;
    assert_eq!(seen(&echo, "cookie"), ["theme=dark"]);

    // An app host with prefixed apps only: other paths are nobody's.
    assert_eq!(b.get("tools.test", "/tools/x", "").await.status, 303);
    assert_eq!(b.get("tools.test", "/other", "").await.status, 404);

    // The central session ends without a sign-out (here: straight in the
    // store, as a timeout would): the app host's session is refused, and
    // ended, at its next request.
    let handle = {
        let echo = b
            .get("login.test", "/echo", &format!("signoff={central}"))
            .await;
        seen(&echo, "x-signoff-session").pop().unwrap()
    };
    let store = signoff::SqliteStore::open(&db_path).await.unwrap();
    let engine = signoff::Sessions::new(std::sync::Arc::new(store), signoff::Policy::default());
    let ended = engine
        .end_by_handle(&handle.parse().unwrap(), None, signoff::Actor::Operator)
        .await
        .unwrap();
    assert!(ended.is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while b.signed_in("wiki.test", &wiki).await {
        assert!(
            std::time::Instant::now() < deadline,
            "wiki's session outlives its central session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let wiki_session = {
        let token = signoff::SessionToken::parse(&wiki).unwrap();
        engine.store().load(&token.id()).await.unwrap()
    };
    assert!(
        wiki_session.is_none(),
        "the orphan was ended, not only refused"
    );
}
