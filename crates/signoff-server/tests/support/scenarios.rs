//! The back-button scenarios, for any site that puts signoff in front of an
//! app with the demo's pages: `/public` (cacheable), `/private/a` and
//! `/private/b` (marked PRIVATE-A/B, with a `#logout` button), and a
//! `pageshow` recorder. `signoff demo` is one such site; the Flask example
//! behind nginx or Caddy is another.

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::browser::{Browser, Engine, Error, Result};
use super::signoff_bin;

/// Where the scenarios run.
pub struct Site {
    /// e.g. `http://127.0.0.1:40123`
    pub origin: String,
    pub user: String,
    pub password: String,
    /// signoff's database, for the CLI.
    pub db: String,
    /// Names the screenshots: `{engine}-{label}-{step}.png`.
    pub label: String,
}

impl Site {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn https(&self) -> bool {
        self.origin.starts_with("https://")
    }

    fn artifact(&self, engine: Engine, name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/browser-artifacts")
            .join(format!("{}-{}-{name}.png", engine.name(), self.label).to_lowercase())
    }
}

tokio::task_local! {
    static FINDINGS: Arc<Mutex<Vec<String>>>;
}

/// Runs `scenario`, collecting what it [`note`]s about the engine along
/// the way (e.g. whether a page came from the back/forward cache).
pub async fn with_findings<F: Future>(scenario: F) -> (F::Output, Vec<String>) {
    let findings = Arc::new(Mutex::new(Vec::new()));
    let out = FINDINGS.scope(findings.clone(), scenario).await;
    let list = findings.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (out, list)
}

/// Records a fact about this run for [`with_findings`] (a no-op outside it).
pub fn note(finding: impl Into<String>) {
    let finding = finding.into();
    let _ = FINDINGS.try_with(|f| f.lock().unwrap_or_else(|e| e.into_inner()).push(finding));
}

/// Whether `engine` keeps a `Cache-Control: no-store` page in its
/// back/forward cache, as measured (docs/gateway.md, "Browser facts"): Chromium does,
/// Firefox does not, WebKit does over HTTP only. Where it does, a restored
/// private page is the guard's to handle, and the tests insist on seeing
/// the restore; where it does not, Back asks the server.
pub fn keeps_no_store_pages(engine: Engine, https: bool) -> bool {
    match engine {
        Engine::Chromium => true,
        Engine::Firefox => false,
        Engine::WebKit => !https,
    }
}

pub fn check(ok: bool, what: impl Into<String>) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::new(what))
    }
}

pub async fn path_of(b: &Browser) -> Result<String> {
    let url = b.current_url().await?;
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    Ok(after_scheme
        .find('/')
        .map_or("/".to_owned(), |i| after_scheme[i..].to_owned()))
}

/// Nothing private on screen, after the guard had time to act.
pub async fn nothing_private(b: &Browser, step: &str) -> Result<()> {
    // The guard hides a restored page at once and navigates after one
    // round trip; give it that round trip before looking.
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.wait_ready().await?;
    let text = b.visible_text().await?;
    let path = path_of(b).await?;
    check(
        !text.contains("PRIVATE-"),
        format!("{step}: private text visible at {path}: {text:.200}"),
    )
}

pub async fn sign_in(b: &Browser, site: &Site) -> Result<()> {
    b.goto(&site.url("/private/a")).await?;
    b.wait_for_path(
        "/.signoff/login?next=%2Fprivate%2Fa",
        Duration::from_secs(10),
    )
    .await?;
    b.submit_login(&site.user, &site.password).await?;
    if let Err(e) = b.wait_for_path("/private/a", Duration::from_secs(10)).await {
        let text = b.visible_text().await?;
        return Err(Error::new(format!(
            "{e:?}; at {}: {text:.300}",
            path_of(b).await?
        )));
    }
    check(
        b.visible_text().await?.contains("PRIVATE-A"),
        "page A after sign-in",
    )
}

/// Log in, open two private pages, click the app's logout button, then
/// Back ×2, Forward ×2: no private text is ever visible; Back once more
/// and reload: the login page.
pub async fn logout_then_back(engine: Engine, site: &Site) -> Result<()> {
    let Some(b) = Browser::open(engine).await else {
        return Ok(());
    };
    sign_in(&b, site).await?;
    b.goto(&site.url("/private/b")).await?;
    check(b.visible_text().await?.contains("PRIVATE-B"), "page B")?;
    b.click_and_wait("#logout").await?;
    b.wait_for_path("/.signoff/signed-out", Duration::from_secs(10))
        .await?;
    nothing_private(&b, "after logout").await?;
    for (i, forward) in [false, false, true, true].into_iter().enumerate() {
        if forward {
            b.forward().await?;
        } else {
            b.back().await?;
        }
        let step = format!(
            "step {} ({})",
            i + 1,
            if forward { "Forward" } else { "Back" }
        );
        nothing_private(&b, &step).await?;
        b.screenshot(site.artifact(engine, &format!("logout-step{}", i + 1)))
            .await?;
    }
    b.back().await?;
    nothing_private(&b, "Back again").await?;
    b.refresh().await?;
    nothing_private(&b, "reload").await?;
    let path = path_of(&b).await?;
    check(
        path.starts_with("/.signoff/login?next=%2Fprivate%2F"),
        format!("reload landed on {path}"),
    )?;
    b.screenshot(site.artifact(engine, "logout-reload")).await?;
    b.close().await
}

/// How a session is ended from outside the browser that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEnd {
    /// `signoff user disable` (another process: the gateway's cache may
    /// answer for up to its 1 s staleness bound).
    CliDisable,
    /// The same user on another device presses "Sign out everywhere else"
    /// on the sessions page (plain HTTP only: the client has no TLS).
    OtherDevice,
}

/// The session ends on the server only (the CLI disables the user): no
/// cookie changes in the browser, so only the guard can act. First, as a
/// control, Back with the session alive restores the private page from
/// the back/forward cache and the guard leaves it alone.
pub async fn server_side_end_then_back(engine: Engine, site: &Site) -> Result<()> {
    server_side_end_then_back_by(engine, site, ServerEnd::CliDisable).await
}

/// [`server_side_end_then_back`], with the session ended by `how`; then
/// Back, Forward and reload show nothing private either.
pub async fn server_side_end_then_back_by(
    engine: Engine,
    site: &Site,
    how: ServerEnd,
) -> Result<()> {
    let Some(b) = Browser::open(engine).await else {
        return Ok(());
    };
    sign_in(&b, site).await?;
    b.goto(&site.url("/private/b")).await?;
    b.goto(&site.url("/public")).await?;

    // Control: alive session, Back shows page B again. Where the engine
    // keeps no-store pages it must come from the back/forward cache, with
    // the guard leaving it alone; otherwise the test would prove nothing.
    b.back().await?;
    b.wait_for_path("/private/b", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let restored = b.last_pageshow_persisted().await? == Some(true);
    if keeps_no_store_pages(engine, site.https()) {
        check(
            restored,
            "the private page was not restored from the back/forward cache; the test would prove nothing",
        )?;
        note("private page restored from bfcache while alive; after the server-side end the guard sent it to the login page");
    } else if restored {
        note("private page restored from bfcache (not expected in this engine); after the server-side end the guard sent it to the login page");
    } else {
        note("private page not kept in bfcache (no-store); Back asked the server, which sent the login page");
    }
    check(
        b.visible_text().await?.contains("PRIVATE-B"),
        "the guard hid a page whose session is alive",
    )?;
    b.forward().await?;
    b.wait_for_path("/public", Duration::from_secs(10)).await?;

    match how {
        ServerEnd::CliDisable => {
            // End the session from outside, then press Back once the
            // gateway's watcher of the file has had its 50 ms (documented):
            // well within the cache's 1 s, which must not matter. The
            // guard's status check reads the store in any case.
            let out = Command::new(signoff_bin())
                .args(["user", "disable", &site.user, "--db", &site.db])
                .output()
                .unwrap();
            check(out.status.success(), format!("user disable: {out:?}"))?;
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        ServerEnd::OtherDevice => {
            let other = super::login_at(&site.origin, &site.user, &site.password).await;
            let reply = super::sessions_action(&site.origin, &other, "end-others", &[]).await;
            check(
                reply.status == 303
                    && reply
                        .header("location")
                        .is_some_and(|l| l.ends_with("/.signoff/sessions?ended=1")),
                format!(
                    "sign out everywhere else: {} {:?}",
                    reply.status, reply.headers
                ),
            )?;
        }
    }

    b.back().await?;
    b.wait_for_path(
        "/.signoff/login?next=%2Fprivate%2Fb",
        Duration::from_secs(10),
    )
    .await?;
    nothing_private(&b, "Back after the server ended the session").await?;
    let path = path_of(&b).await?;
    check(
        path == "/.signoff/login?next=%2Fprivate%2Fb",
        format!("the guard went to {path}"),
    )?;
    b.screenshot(site.artifact(engine, &format!("server-side-end-{how:?}")))
        .await?;
    if how == ServerEnd::OtherDevice {
        for (i, forward) in [true, false, true].into_iter().enumerate() {
            if forward {
                b.forward().await?;
            } else {
                b.back().await?;
            }
            nothing_private(&b, &format!("after the other device, step {}", i + 1)).await?;
        }
        b.refresh().await?;
        nothing_private(&b, "after the other device, reload").await?;
    }
    b.close().await
}

/// The idle timeout passes while private page B is open; then Back (to A),
/// Forward, Back, Forward and reload show nothing private. `idle` is the
/// site's idle timeout.
pub async fn idle_timeout_then_back(engine: Engine, site: &Site, idle: Duration) -> Result<()> {
    let Some(b) = Browser::open(engine).await else {
        return Ok(());
    };
    sign_in(&b, site).await?;
    b.goto(&site.url("/private/b")).await?;
    check(b.visible_text().await?.contains("PRIVATE-B"), "page B")?;
    // No request for longer than the idle timeout (plus the last-seen
    // write interval, a tenth of it, and some slack).
    tokio::time::sleep(idle + idle / 10 + Duration::from_millis(800)).await;
    b.back().await?;
    b.wait_for_path(
        "/.signoff/login?next=%2Fprivate%2Fa",
        Duration::from_secs(10),
    )
    .await?;
    nothing_private(&b, "Back after the idle timeout").await?;
    b.screenshot(site.artifact(engine, "idle-timeout-back"))
        .await?;
    for (i, forward) in [true, false, true].into_iter().enumerate() {
        if forward {
            b.forward().await?;
        } else {
            b.back().await?;
        }
        let step = format!(
            "after the idle timeout, step {} ({})",
            i + 2,
            if forward { "Forward" } else { "Back" }
        );
        nothing_private(&b, &step).await?;
    }
    b.refresh().await?;
    nothing_private(&b, "after the idle timeout, reload").await?;
    let path = path_of(&b).await?;
    check(
        path.starts_with("/.signoff/login?next=%2Fprivate%2F"),
        format!("reload after the idle timeout landed on {path}"),
    )?;
    b.close().await
}

/// Positive control: a public cacheable page comes back from the
/// back/forward cache (`persisted == true`), so the harness really
/// exercises it in this engine.
pub async fn bfcache_is_on(engine: Engine, site: &Site) -> Result<()> {
    let Some(b) = Browser::open(engine).await else {
        return Ok(());
    };
    b.goto(&site.url("/public")).await?;
    check(
        b.last_pageshow_persisted().await? == Some(false),
        "fresh load",
    )?;
    b.goto(&site.url("/private/a")).await?;
    b.back().await?;
    b.wait_for_path("/public", Duration::from_secs(10)).await?;
    check(
        b.last_pageshow_persisted().await? == Some(true),
        format!(
            "the public page was not restored from the back/forward cache: {}",
            b.not_restored_reasons().await?
        ),
    )?;
    b.close().await
}
