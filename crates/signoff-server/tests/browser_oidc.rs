//! Sign-in with a real OpenID provider and logout both ways, in real
//! Chromium with the back/forward cache on (the HTTP-level version is
//! tests/oidc_sign_in.rs; the provider is panva's oidc-provider,
//! tests/support/oidc.rs).
//!
//! signoff serves the upstream on its own host name, `signoff.test`
//! (Chromium maps it to 127.0.0.1, `--host-resolver-rules`), and the
//! provider is at `127.0.0.1`: two sites, as they are in a deployment, so
//! neither's cookies are the other's (on one host, the `Clear-Site-Data:
//! "cookies"` of signoff's sign-out would clear the provider's cookies too,
//! since cookies know no ports, and the provider would never ask "Sign
//! out?"). The test proves, in the browser:
//!
//! 1. a private page sends a signed-out browser to signoff's login page,
//!    whose "Sign in with Test ID" leads to the provider's own login form;
//!    signed in there as carol, the browser is back on the page it asked
//!    for, and the app saw carol and her groups;
//! 2. the provider ends carol's session (its back-channel logout): Back,
//!    and Back again, never show a private page, not even one the
//!    back/forward cache had kept (first shown to be kept, while signed
//!    in), whose guard sends it to the login page;
//! 3. signed in again (the provider asks for the password again), signoff's
//!    own sign-out form leads to the provider's "Sign out?" page
//!    (RP-initiated logout), and, confirmed, to signoff's signed-out page;
//!    Back never shows a private page; the next sign-in asks the provider
//!    for the password again.
//!
//! Screenshots of each step go to `target/browser-artifacts/chromium-oidc-*`.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use support::browser::{Browser, Engine, Error, Result, CSP_RECORDER, PAGESHOW_RECORDER};
use support::oidc::OidcProvider;
use support::scenarios::check;
use support::services::free_port;
use support::{Gateway, Upstream};

/// signoff's host name; the provider is on 127.0.0.1.
const HOST: &str = "signoff.test";
/// `HOST` is this machine.
const RESOLVER_RULES: &str = "--host-resolver-rules=MAP signoff.test 127.0.0.1";

/// What the upstream writes on each of its pages.
const PRIVATE: &str = "PRIVATE upstream page";

fn artifact(step: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/browser-artifacts")
        .join(format!("chromium-oidc-{step}.png"))
}

/// signoff as the browser sees it.
struct Site {
    port: u16,
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.port)
    }

    fn login_for(&self, next: &str) -> String {
        self.url(&format!("/.signoff/login?next=%2F{}", &next[1..]))
    }
}

/// A provider whose client points at signoff on `port` (the back-channel
/// by address: the provider cannot resolve `HOST`).
fn provider_for(port: u16) -> Option<OidcProvider> {
    let site = Site { port };
    OidcProvider::start(
        &site.url("/.signoff/oidc/callback"),
        &format!("http://127.0.0.1:{port}/.signoff/oidc/backchannel-logout"),
        &site.url("/.signoff/signed-out"),
    )
}

/// signoff at `HOST:port`, signing in with `provider` alone.
fn node(
    dir: tempfile::TempDir,
    port: u16,
    provider: &OidcProvider,
    upstream: &Upstream,
) -> Gateway {
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, &provider.client_secret).unwrap();
    let secret = secret.display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let public = Site { port }.url("");
    Gateway::start_on(
        dir,
        &db,
        Some(&upstream.url()),
        &[
            "--listen",
            &listen,
            "--public-url",
            &public,
            "--allow-insecure-http",
            "--oidc-issuer",
            &provider.issuer,
            "--oidc-client-id",
            &provider.client_id,
            "--oidc-client-secret-file",
            &secret,
            "--oidc-scopes",
            "profile,email,groups",
            "--oidc-name",
            "Test ID",
        ],
    )
}

/// The browser at `url`, the upstream's page shown.
async fn shows_private(b: &Browser, step: &str, url: &str) -> Result<()> {
    let at = b.wait_for_url(url).await?;
    check(at == url, format!("{step}: at {at}, not {url}"))?;
    let path = &url[url.find("/page").unwrap_or(0)..];
    let text = b.visible_text().await?;
    check(
        text.contains(&format!("{PRIVATE} {path}")),
        format!("{step}: {url} shows {text:.200}"),
    )?;
    b.screenshot(artifact(step)).await
}

/// No private text visible: at once (the guard hides a restored page in
/// the very `pageshow` that restores it) and once the browser has come
/// to rest on a page starting with `lands_on` (any page when `None`).
async fn nothing_private(b: &Browser, step: &str, lands_on: Option<&str>) -> Result<String> {
    let now = b.visible_text().await.unwrap_or_default();
    check(
        !now.contains(PRIVATE),
        format!(
            "{step}: private text visible at {}: {now:.200}",
            b.current_url().await?
        ),
    )?;
    if let Some(prefix) = lands_on {
        b.wait_for_url(prefix)
            .await
            .map_err(|e| Error::new(format!("{step}: {e}")))?;
    }
    // The guard navigates after one round trip: give it that before
    // looking again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.wait_ready().await?;
    let text = b.visible_text().await?;
    let at = b.current_url().await?;
    b.screenshot(artifact(step)).await?;
    check(
        !text.contains(PRIVATE),
        format!("{step}: private text visible at {at}: {text:.200}"),
    )?;
    Ok(at)
}

/// On signoff's login page for `next`: its "Sign in with Test ID" leads to
/// the provider's own login form (not a silent sign-in).
async fn to_the_providers_form(
    b: &Browser,
    site: &Site,
    provider: &OidcProvider,
    step: &str,
    next: &str,
) -> Result<()> {
    b.wait_for_url(&site.login_for(next)).await?;
    let text = b.visible_text().await?;
    check(
        text.contains("Sign in with Test ID") && !text.contains(PRIVATE),
        format!("{step}: the login page says {text:.300}"),
    )?;
    b.screenshot(artifact(&format!("{step}-login"))).await?;
    let link = "a[href*='/.signoff/oidc/start?provider=default']";
    b.click_and_wait(link).await?;
    let at = b.current_url().await?;
    check(
        provider.owns(&at),
        format!(
            "{step}: \"Sign in with Test ID\" led to {at}, not the provider; CSP violations: {}",
            b.csp_violations().await
        ),
    )?;
    b.wait_for_js(
        "document.readyState === 'complete' && !!document.querySelector('input[name=login]')",
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| Error::new(format!("{step}: no login form at the provider ({at}): {e}")))?;
    b.screenshot(artifact(&format!("{step}-provider-form")))
        .await
}

/// What the upstream's `/echo`, opened in the browser, says it received
/// as `header`.
async fn echoed(b: &Browser, site: &Site, header: &str) -> Result<Vec<String>> {
    b.goto(&site.url("/echo")).await?;
    let text = b
        .eval("(document.querySelector('pre') || document.body).textContent")
        .await?;
    let text = text.as_str().unwrap_or_default();
    let echo: Value = serde_json::from_str(text)
        .map_err(|e| Error::new(format!("/echo in the browser: {e}: {text:.300}")))?;
    Ok(echo["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h[0] == header)
        .filter_map(|h| h[1].as_str().map(str::to_owned))
        .collect())
}

/// When signoff's sign-out form did not lead to the provider: what the
/// form page's policy is, and what is left of the two sessions.
async fn after_a_stuck_sign_out(
    b: &Browser,
    site: &Site,
    gw: &Gateway,
    provider: &OidcProvider,
) -> String {
    let page = support::get(&gw.url("/.signoff/logout"), &[("accept", "text/html")]).await;
    let csp = page
        .header("content-security-policy")
        .unwrap_or("none")
        .to_owned();
    let left = provider.sessions_of("carol").await.len();
    let mut next = String::new();
    if b.goto(&site.url("/page-a")).await.is_ok() {
        let at = b.current_url().await.unwrap_or_default();
        next = format!("/page-a then led to {at}");
        if at.starts_with(&site.login_for("/page-a")) {
            let link = "a[href*='/.signoff/oidc/start?provider=default']";
            if b.click_and_wait(link).await.is_ok() {
                let _ = b.screenshot(artifact("3-stuck-sign-in-again")).await;
                let at = b.current_url().await.unwrap_or_default();
                let text = b.visible_text().await.unwrap_or_default();
                next = format!(
                    "{next}; \"Sign in with Test ID\" then led to {at}, which says {text:.120}"
                );
            }
        }
    }
    format!(
        "the sign-out page's Content-Security-Policy: {csp}\n\
         provider sessions of carol left: {left}\n{next}"
    )
}

/// The whole walk.
async fn scenario(b: &Browser, site: &Site, gw: &Gateway, provider: &OidcProvider) -> Result<()> {
    // Every document records its `pageshow` (so Back waits for it, and the
    // control below can tell a restore from the back/forward cache) and
    // its CSP violations.
    let recorder = PAGESHOW_RECORDER
        .trim()
        .trim_start_matches("<script>")
        .trim_end_matches("</script>");
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": format!("{recorder}\n{CSP_RECORDER}") }),
    )
    .await?;
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

    // 1. Signed out: signoff's login page, the provider's form, then the
    // page asked for, with the user and groups reaching the app.
    b.goto(&site.url("/page-a")).await?;
    to_the_providers_form(b, site, provider, "1", "/page-a").await?;
    provider.sign_in_in_browser(b, "carol").await?;
    shows_private(b, "1-page-a", &site.url("/page-a")).await?;
    let user = echoed(b, site, "x-signoff-user").await?;
    check(user == ["carol"], format!("the app saw the user {user:?}"))?;
    let groups = echoed(b, site, "x-signoff-groups").await?;
    check(
        groups == ["admins,staff"],
        format!("the app saw the groups {groups:?}"),
    )?;

    // Control: signed in, Back restores a private page from the
    // back/forward cache and the guard leaves it alone. Its guard asked
    // about the session, and the answer is `no-store`: Chromium keeps that
    // page out of the cache from now on, so it is /page-c, and /page-a and
    // /page-b are loaded afresh after it.
    b.goto(&site.url("/page-c")).await?;
    shows_private(b, "control-page-c", &site.url("/page-c")).await?;
    b.goto(&site.url("/page-a")).await?;
    b.back().await?;
    check(
        b.last_pageshow_persisted().await? == Some(true),
        format!(
            "/page-c was not restored from the back/forward cache, \
             so the Backs below would prove nothing: {}",
            b.not_restored_reasons().await?
        ),
    )?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    shows_private(b, "control-page-c-restored", &site.url("/page-c")).await?;

    // 2. The provider ends carol's session (its back-channel logout).
    b.goto(&site.url("/page-a")).await?;
    shows_private(b, "2-page-a", &site.url("/page-a")).await?;
    b.goto(&site.url("/page-b")).await?;
    shows_private(b, "2-page-b", &site.url("/page-b")).await?;
    let sids = provider.end_sessions_of("carol").await;
    check(!sids.is_empty(), "the provider had no session of carol")?;
    // Back: /page-a comes back from the back/forward cache to its guard,
    // which finds the session ended and sends it to the login page.
    let refusals = gw.guard_refusals();
    b.back().await?;
    nothing_private(b, "2-back-1", Some(&site.login_for("/page-a"))).await?;
    check(
        gw.guard_refusals() == refusals + 1,
        "2-back-1: /page-a did not come back from the back/forward cache to its guard",
    )?;
    // Back again: /page-c, which the cache no longer keeps, asks signoff.
    b.back().await?;
    nothing_private(b, "2-back-2", Some(&site.login_for("/page-c"))).await?;

    // 3. Signed in again: the provider, its session ended, asks again.
    b.goto(&site.url("/page-a")).await?;
    to_the_providers_form(b, site, provider, "3", "/page-a").await?;
    provider.sign_in_in_browser(b, "carol").await?;
    shows_private(b, "3-page-a", &site.url("/page-a")).await?;
    b.goto(&site.url("/page-b")).await?;
    shows_private(b, "3-page-b", &site.url("/page-b")).await?;
    // signoff's own sign-out form, then the provider's "Sign out?".
    b.goto(&site.url("/.signoff/logout")).await?;
    b.screenshot(artifact("3-logout-form")).await?;
    let sent = b.click_and_wait("form [type=submit]").await;
    let at = b.current_url().await?;
    if sent.is_err() || !at.starts_with(&provider.url("/session/end")) {
        let text = b.visible_text().await.unwrap_or_default();
        let csp = b.csp_violations().await;
        b.screenshot(artifact("3-after-logout-form")).await?;
        let after = after_a_stuck_sign_out(b, site, gw, provider).await;
        return Err(Error::new(format!(
            "signoff's sign-out form led to {at}, not the provider's end_session_endpoint \
             ({sent:?}); CSP violations: {csp}; the page says: {text:.300}\n{after}"
        )));
    }
    check(
        at.contains("id_token_hint="),
        format!("no id_token_hint: {at}"),
    )?;
    b.screenshot(artifact("3-provider-sign-out")).await?;
    provider.confirm_logout_in_browser(b).await?;
    nothing_private(b, "3-signed-out", Some(&site.url("/.signoff/signed-out"))).await?;
    check(
        provider.sessions_of("carol").await.is_empty(),
        "the provider still has a session of carol",
    )?;
    // Back, page after page, down to the private pages: nothing private.
    for step in ["3-back-1", "3-back-2", "3-back-3", "3-back-4"] {
        b.back().await?;
        nothing_private(b, step, None).await?;
    }
    // The next sign-in asks the provider for the password again.
    b.goto(&site.url("/page-a")).await?;
    to_the_providers_form(b, site, provider, "3-again", "/page-a").await?;
    b.back().await?;
    nothing_private(b, "3-again-back", None).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_logout_both_ways_with_a_real_provider() -> Result<()> {
    let Some(b) = Browser::open_with_args(Engine::Chromium, &[RESOLVER_RULES]).await else {
        return Ok(());
    };
    let Some(upstream) = Upstream::start() else {
        return Ok(());
    };
    let port = free_port();
    let Some(provider) = provider_for(port) else {
        return Ok(());
    };
    let gw = node(tempfile::tempdir().unwrap(), port, &provider, &upstream);
    let site = Site { port };

    if let Err(e) = scenario(&b, &site, &gw, &provider).await {
        let shot = artifact("failure");
        let _ = b.screenshot(&shot).await;
        let log = gw.proc.log_text();
        let tail: Vec<&str> = log.lines().rev().take(16).collect();
        return Err(Error::new(format!(
            "{e}\nthe browser is at {}\nscreenshot: {}\ngateway log, newest first:\n{}\n\
             provider log:\n{}",
            b.current_url().await.unwrap_or_default(),
            shot.display(),
            tail.join("\n"),
            provider.proc.log_text()
        )));
    }
    b.close().await
}
