//! Many apps on many hosts, one sign-in and one sign-out, in real
//! Chromium with the back/forward cache on (the HTTP-level version is
//! tests/apps.rs).
//!
//! `signoff serve` puts two `[[app]]`s on hosts of their own, `wiki.test`
//! and `grafana.test`, with the central sign-in host `login.test`; Chromium
//! maps all three to 127.0.0.1 (`--host-resolver-rules`). The test proves,
//! in the browser itself:
//!
//! 1. a private page on `wiki.test` sends a signed-out browser through the
//!    central sign-in form and, once the password is typed, back to the
//!    page it asked for;
//! 2. `grafana.test` then signs the browser in without any form;
//! 3. each host's session cookie is host-only: three `signoff` cookies,
//!    one per host, none with a `Domain`, each seen on its own host alone;
//! 4. one sign-out on `grafana.test` ends all of them: Back never shows a
//!    private page of either app again, not even one the back/forward
//!    cache had kept (first shown to be kept, while signed in), and
//!    `wiki.test` asks for the password again.
//!
//! Screenshots of each step go to `target/browser-artifacts/chromium-apps-*`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use support::browser::{Browser, Engine, Error, Result, CSP_RECORDER};
use support::scenarios::check;
use support::{add_user_in_groups, Gateway, Upstream, PASSWORD, USER};

/// Every `.test` host name is this machine.
const RESOLVER_RULES: &str = "--host-resolver-rules=MAP *.test 127.0.0.1";

/// Two apps on hosts of their own, the same upstream behind both.
const APPS: &str = r#"
[[app]]
name = "wiki"
host = "wiki.test"
upstream = "UPSTREAM"

[[app]]
name = "grafana"
host = "grafana.test"
upstream = "UPSTREAM"
"#;

/// What the upstream writes on each of its pages.
const PRIVATE: &str = "PRIVATE upstream page";

/// A node serving the apps, the central host `login.test`, on `db`.
fn node(dir: tempfile::TempDir, db: &str, upstream: &Upstream) -> (Gateway, u16) {
    Gateway::start_with_hosts(
        dir,
        db,
        upstream,
        &APPS.replace("UPSTREAM", &upstream.url()),
    )
}

/// The three hosts, all on the gateway's port.
struct Hosts {
    port: u16,
}

impl Hosts {
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    /// Where an app host's sign-in ends up for a browser not signed in:
    /// the central form, which comes back to the hand-over for `app`.
    fn central_login_for(&self, app: &str) -> String {
        self.url(
            "login.test",
            &format!("/.signoff/login?next=%2F.signoff%2Fsso%3Fsite%3D{app}%26"),
        )
    }
}

fn artifact(step: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/browser-artifacts")
        .join(format!("chromium-apps-{step}.png"))
}

/// The browser at `url`, an upstream page shown signed in, no password form on it.
async fn shows_private(b: &Browser, step: &str, url: &str) -> Result<()> {
    let at = b.wait_for_url(url).await?;
    check(at == url, format!("{step}: at {at}, not {url}"))?;
    let path = &url[url.find("/page").unwrap_or(0)..];
    let text = b.visible_text().await?;
    check(
        text.contains(&format!("{PRIVATE} {path}")),
        format!("{step}: {url} shows {text:.200}"),
    )?;
    let form = b
        .eval("!!document.querySelector('input[type=password]')")
        .await?;
    check(form == false, format!("{step}: a password form on {url}"))?;
    b.screenshot(artifact(step)).await
}

/// No private text visible: at once (the guard hides a restored page in
/// the very `pageshow` that restores it) and once the browser has come
/// to rest on a page starting with `lands_on`.
async fn nothing_private(b: &Browser, step: &str, lands_on: &str) -> Result<String> {
    let now = b.visible_text().await.unwrap_or_default();
    check(
        !now.contains(PRIVATE),
        format!(
            "{step}: private text visible at {}: {now:.200}",
            b.current_url().await?
        ),
    )?;
    let at = b
        .wait_for_url(lands_on)
        .await
        .map_err(|e| Error::new(format!("{step}: {e}")))?;
    // The guard navigates after one round trip: give it that before
    // looking again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.wait_ready().await?;
    let text = b.visible_text().await?;
    b.screenshot(artifact(step)).await?;
    check(
        !text.contains(PRIVATE),
        format!("{step}: private text visible at {at}: {text:.200}"),
    )?;
    b.current_url().await
}

/// The `signoff` cookies WebDriver shows on the current page's host:
/// exactly one, that host's own.
async fn own_cookie_only(b: &Browser, host: &str) -> Result<()> {
    let cookies = b
        .client()
        .get_all_cookies()
        .await
        .map_err(|e| Error::new(format!("get cookies on {host}: {e}")))?;
    let seen: Vec<String> = cookies
        .iter()
        .map(|c| format!("{}@{}", c.name(), c.domain().unwrap_or("?")))
        .collect();
    check(
        seen == [format!("signoff@{host}")],
        format!("cookies seen on {host}: {seen:?}"),
    )?;
    check(
        cookies[0].http_only() == Some(true),
        format!("{host}'s cookie is not HttpOnly"),
    )
}

/// Every cookie in the browser, from the DevTools protocol, which shows
/// `Domain` as set (a leading dot for a domain cookie): one host-only
/// `signoff` cookie per host, each its own session.
async fn one_host_only_cookie_per_host(b: &Browser) -> Result<()> {
    let all = b.cdp("Network.getAllCookies", json!({})).await?;
    let cookies = all["cookies"].as_array().cloned().unwrap_or_default();
    let mut seen: Vec<(String, String)> = cookies
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("?").to_owned();
            (s("name"), s("domain"))
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = ["grafana.test", "login.test", "wiki.test"]
        .iter()
        .map(|h| ("signoff".to_owned(), (*h).to_owned()))
        .collect();
    check(seen == want, format!("the browser's cookies: {seen:?}"))?;
    check(
        cookies.iter().all(|c| c["httpOnly"] == true),
        "a cookie without HttpOnly",
    )?;
    let mut values: Vec<&str> = cookies.iter().filter_map(|c| c["value"].as_str()).collect();
    values.sort_unstable();
    values.dedup();
    check(values.len() == 3, "two hosts share a session")
}

/// Types the password into the central form and waits for where it leads.
async fn sign_in(b: &Browser) -> Result<()> {
    b.exec(CSP_RECORDER).await?;
    if let Err(e) = b.submit_login(USER, PASSWORD).await {
        let csp = b.csp_violations().await;
        return Err(Error::new(format!(
            "{e}; CSP violations on the sign-in form: {csp}"
        )));
    }
    Ok(())
}

/// The whole walk.
async fn scenario(b: &Browser, h: &Hosts, gw: &Gateway) -> Result<()> {
    // Every document records its `pageshow`, so Back waits for it and the
    // control below can tell a restore from the back/forward cache.
    b.record_every_pageshow().await?;
    // The upstream answers /favicon.ico with a page, which the gateway
    // marks `no-store` like every private answer; Chromium keeps no page
    // whose favicon came so in its back/forward cache. Without one, the
    // private pages are kept, and the guard must handle them.
    b.cdp("Network.enable", json!({})).await?;
    b.cdp(
        "Network.setBlockedURLs",
        json!({ "urls": ["*/favicon.ico"] }),
    )
    .await?;

    // 1. The wiki, signed out: the central form, then the page asked for.
    b.goto(&h.url("wiki.test", "/page-a")).await?;
    let form = b.wait_for_url(&h.central_login_for("wiki.test")).await?;
    check(
        form.ends_with("%26next%3D%252Fpage-a"),
        format!("the central form forgot the page: {form}"),
    )?;
    check(
        !b.visible_text().await?.contains(PRIVATE),
        "private text on the sign-in form",
    )?;
    b.screenshot(artifact("1-central-form")).await?;
    sign_in(b).await?;
    shows_private(b, "1-wiki-a", &h.url("wiki.test", "/page-a")).await?;
    b.goto(&h.url("wiki.test", "/page-b")).await?;
    shows_private(b, "1-wiki-b", &h.url("wiki.test", "/page-b")).await?;
    own_cookie_only(b, "wiki.test").await?;

    // 2. Grafana: signed in without a form (the walk would stop on one).
    b.goto(&h.url("grafana.test", "/page-a")).await?;
    shows_private(b, "2-grafana-a", &h.url("grafana.test", "/page-a")).await?;
    b.goto(&h.url("grafana.test", "/page-b")).await?;
    shows_private(b, "2-grafana-b", &h.url("grafana.test", "/page-b")).await?;

    // 3. Host-only cookies: grafana sees its own alone, and the browser
    // holds one per host, none for a whole domain.
    own_cookie_only(b, "grafana.test").await?;
    one_host_only_cookie_per_host(b).await?;

    // Control: signed in, Back restores a private page from the
    // back/forward cache and the guard leaves it alone. Its guard asked
    // about the session, and the answer is `no-store`: Chromium keeps the
    // page out of the cache from now on, so it is grafana's /page-a, and
    // /page-b is loaded afresh.
    b.back().await?;
    check(
        b.last_pageshow_persisted().await? == Some(true),
        format!(
            "grafana's /page-a was not restored from the back/forward cache, \
             so the Backs below would prove nothing: {}",
            b.not_restored_reasons().await?
        ),
    )?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    shows_private(b, "control-grafana-a", &h.url("grafana.test", "/page-a")).await?;
    b.goto(&h.url("grafana.test", "/page-b")).await?;
    shows_private(b, "control-grafana-b", &h.url("grafana.test", "/page-b")).await?;

    // 4. One sign-out, on grafana, with its own form.
    b.goto(&h.url("grafana.test", "/.signoff/logout")).await?;
    b.click_and_wait("form [type=submit]").await?;
    nothing_private(
        b,
        "4-signed-out",
        &h.url("grafana.test", "/.signoff/signed-out"),
    )
    .await?;
    // Back, page after page: the sign-out form, then the private pages,
    // each sent to the central form. Those the back/forward cache kept
    // (all but grafana's /page-a, see the control) come back to their
    // guard, which finds the session ended on the wiki too.
    b.back().await?;
    nothing_private(b, "4-back-1", &h.url("grafana.test", "/.signoff/logout")).await?;
    for (step, app, kept) in [
        ("4-back-2-grafana-b", "grafana.test", true),
        ("4-back-3-grafana-a", "grafana.test", false),
        ("4-back-4-wiki-b", "wiki.test", true),
        ("4-back-5-wiki-a", "wiki.test", true),
    ] {
        let refusals = gw.guard_refusals();
        b.back().await?;
        nothing_private(b, step, &h.central_login_for(app)).await?;
        if kept {
            check(
                gw.guard_refusals() == refusals + 1,
                format!(
                    "{step}: the page did not come back from the back/forward cache to its guard"
                ),
            )?;
        }
    }
    // The wiki asks for the password again; Back from there shows nothing
    // private either, nor does a reload.
    b.goto(&h.url("wiki.test", "/page-b")).await?;
    let at = nothing_private(b, "4-wiki-b-again", &h.central_login_for("wiki.test")).await?;
    check(
        b.eval("!!document.querySelector('input[type=password]')")
            .await?
            == true,
        format!("no password form at {at}"),
    )?;
    b.back().await?;
    nothing_private(b, "4-back-6", &h.central_login_for("wiki.test")).await?;
    b.refresh().await?;
    nothing_private(b, "4-reload", &h.central_login_for("wiki.test")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sign_in_and_one_sign_out_across_app_hosts() -> Result<()> {
    let Some(b) = Browser::open_with_args(Engine::Chromium, &[RESOLVER_RULES]).await else {
        return Ok(());
    };
    let Some(upstream) = Upstream::start() else {
        return Ok(());
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user_in_groups(&db, USER, PASSWORD, &[]);
    let (gw, port) = node(dir, &db, &upstream);

    if let Err(e) = scenario(&b, &Hosts { port }, &gw).await {
        let shot = artifact("failure");
        let _ = b.screenshot(&shot).await;
        let log = gw.proc.log_text();
        let tail: Vec<&str> = log.lines().rev().take(12).collect();
        return Err(Error::new(format!(
            "{e}\nthe browser is at {}\nscreenshot: {}\ngateway log, newest first:\n{}",
            b.current_url().await.unwrap_or_default(),
            shot.display(),
            tail.join("\n")
        )));
    }
    b.close().await
}
