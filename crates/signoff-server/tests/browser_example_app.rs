//! The axum example app (examples/axum-app) in Chromium, with the
//! back/forward cache on: after its sign-out button, and after a session
//! ended on the server only (`signoff sessions end`), Back and Forward show
//! no private page. The library's guard script (`/.signoff/guard.js`) is
//! what acts when the page comes back from the cache.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::browser::{Browser, Engine, Error, Result};
use support::scenarios::check;
use support::{add_user, ExampleApp, PASSWORD, USER};

const PRIVATE: &str = "Signed in as";

fn artifact(step: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/browser-artifacts")
        .join(format!("chromium-example-app-{step}.png"))
}

/// `path` is shown with the user's name on it.
async fn shows_private(b: &Browser, step: &str, path: &str) -> Result<()> {
    b.wait_for_path(path, Duration::from_secs(10)).await?;
    let text = b.visible_text().await?;
    check(
        text.contains(&format!("{PRIVATE} {USER}")),
        format!("{step}: {path} shows {text:.200}"),
    )?;
    b.screenshot(artifact(step)).await
}

/// Nothing private on screen, once the guard has had its round trip, and
/// the browser ends on a path starting with `lands_on`.
async fn nothing_private(b: &Browser, step: &str, lands_on: &str) -> Result<()> {
    let now = b.visible_text().await.unwrap_or_default();
    check(
        !now.contains(PRIVATE),
        format!("{step}: private text visible: {now:.200}"),
    )?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.wait_ready().await?;
    let text = b.visible_text().await?;
    b.screenshot(artifact(step)).await?;
    check(
        !text.contains(PRIVATE),
        format!("{step}: private text visible: {text:.200}"),
    )?;
    let path = support::scenarios::path_of(b).await?;
    check(
        path.starts_with(lands_on),
        format!("{step}: at {path}, not {lands_on}…"),
    )
}

async fn sign_in(b: &Browser, app: &ExampleApp) -> Result<()> {
    b.goto(&format!("{}/dashboard", app.origin)).await?;
    b.wait_for_path("/login?next=%2Fdashboard", Duration::from_secs(10))
        .await?;
    b.submit_login(USER, PASSWORD).await?;
    shows_private(b, "signed-in", "/dashboard").await
}

async fn run(b: &Browser, app: &ExampleApp, db: &str) -> Result<()> {
    b.record_every_pageshow().await?;
    let url = |p: &str| format!("{}{p}", app.origin);

    // Signed in, two private pages; as a control, Back with the session
    // alive restores the first from the back/forward cache and the guard
    // lets it be.
    sign_in(b, app).await?;
    b.goto(&url("/dashboard/other")).await?;
    shows_private(b, "other", "/dashboard/other").await?;
    b.back().await?;
    check(
        b.last_pageshow_persisted().await? == Some(true),
        format!(
            "/dashboard was not restored from the back/forward cache, so the Backs \
             below would prove nothing: {}",
            b.not_restored_reasons().await?
        ),
    )?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    shows_private(b, "control-back", "/dashboard").await?;
    b.forward().await?;
    shows_private(b, "control-forward", "/dashboard/other").await?;

    // The app's sign-out button.
    b.click_and_wait("nav form [type=submit]").await?;
    nothing_private(b, "signed-out", "/login").await?;
    for (i, forward) in [false, false, true, true].into_iter().enumerate() {
        if forward {
            b.forward().await?;
        } else {
            b.back().await?;
        }
        nothing_private(b, &format!("after-sign-out-{}", i + 1), "/login").await?;
    }
    b.refresh().await?;
    nothing_private(b, "after-sign-out-reload", "/login").await?;

    // Signed in again; the session ends on the server only: no cookie
    // changes in this browser, so only the guard can act.
    sign_in(b, app).await?;
    b.goto(&url("/dashboard/other")).await?;
    shows_private(b, "again-other", "/dashboard/other").await?;
    support::cli(&["sessions", "end", "--user", USER], db);
    b.back().await?;
    nothing_private(b, "server-end-back", "/login?next=%2Fdashboard").await?;
    b.goto(&url("/dashboard/other")).await?;
    nothing_private(b, "server-end-visit", "/login").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_shows_nothing_after_the_example_apps_sign_out() -> Result<()> {
    let Some(b) = Browser::open(Engine::Chromium).await else {
        return Ok(());
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("app.db").display());
    add_user(&db, USER, PASSWORD);
    let app = ExampleApp::start(&db, dir.path());
    let outcome = run(&b, &app, &db).await;
    let closed = b.close().await;
    outcome.map_err(|e| Error::new(format!("{e:?}\nthe app's log:\n{}", app.proc.log_text())))?;
    closed
}
