//! The back button after logout, in a real browser with the back/forward
//! cache on: `signoff demo` (gateway + built-in app) driven over WebDriver,
//! over plain HTTP on 127.0.0.1 and over HTTPS with a self-signed
//! certificate. One scenario list; each engine is one more driver in
//! `support::browser` (Chromium today).
//!
//! Screenshots of what each scenario ends on go to
//! `target/browser-artifacts/`.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::browser::{Browser, Engine, Error, Result};
use support::{signoff_bin, spawn_reading_lines, Proc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Http,
    Https,
}

/// A running `signoff demo`.
struct Demo {
    _proc: Proc,
    origin: String,
    password: String,
    db: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(transport: Transport) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("demo.db").display());
        let mut cmd = Command::new(signoff_bin());
        cmd.args(["demo", "--listen", "127.0.0.1:0", "--db", &db])
            .env("SIGNOFF_LOG", "info");
        if transport == Transport::Https {
            let cert = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
            ])
            .unwrap();
            let cert_path = dir.path().join("cert.pem");
            let key_path = dir.path().join("key.pem");
            std::fs::write(&cert_path, cert.cert.pem()).unwrap();
            std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
            cmd.arg("--tls-cert")
                .arg(&cert_path)
                .arg("--tls-key")
                .arg(&key_path);
        }
        let (proc, lines) = spawn_reading_lines(cmd, dir.path().join("demo.log"), 3);
        let origin = lines[0]
            .strip_prefix("signoff demo is running at ")
            .unwrap_or_else(|| panic!("unexpected {lines:?}"))
            .trim_end_matches('/')
            .to_owned();
        let password = lines[2]
            .trim()
            .strip_prefix("password:")
            .unwrap_or_else(|| panic!("unexpected {lines:?}"))
            .trim()
            .to_owned();
        let scheme = if transport == Transport::Https {
            "https://"
        } else {
            "http://"
        };
        assert!(origin.starts_with(scheme), "{origin}");
        Demo {
            _proc: proc,
            origin,
            password,
            db,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

fn artifact(engine: Engine, transport: Transport, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/browser-artifacts")
        .join(format!("{}-{transport:?}-{name}.png", engine.name()).to_lowercase())
}

fn check(ok: bool, what: impl Into<String>) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::new(what))
    }
}

async fn path_of(b: &Browser) -> Result<String> {
    let url = b.current_url().await?;
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    Ok(after_scheme
        .find('/')
        .map_or("/".to_owned(), |i| after_scheme[i..].to_owned()))
}

/// Nothing private on screen, after the guard had time to act.
async fn nothing_private(b: &Browser, step: &str) -> Result<()> {
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

async fn sign_in(b: &Browser, demo: &Demo) -> Result<()> {
    b.goto(&demo.url("/private/a")).await?;
    b.wait_for_path(
        "/.signoff/login?next=%2Fprivate%2Fa",
        Duration::from_secs(10),
    )
    .await?;
    b.submit_login("demo", &demo.password).await?;
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
async fn logout_then_back(engine: Engine, transport: Transport) -> Result<()> {
    let demo = Demo::start(transport);
    let Some(b) = Browser::open(engine).await else {
        return Ok(());
    };
    sign_in(&b, &demo).await?;
    b.goto(&demo.url("/private/b")).await?;
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
        b.screenshot(artifact(
            engine,
            transport,
            &format!("logout-step{}", i + 1),
        ))
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
    b.screenshot(artifact(engine, transport, "logout-reload"))
        .await?;
    b.close().await
}

/// The session ends on the server only (the CLI disables the user): no
/// cookie changes in the browser, so only the guard can act. First, as a
/// control, Back with the session alive restores the private page from
/// the back/forward cache and the guard leaves it alone.
async fn server_side_end_then_back(engine: Engine, transport: Transport) -> Result<()> {
    let demo = Demo::start(transport);
    let Some(b) = Browser::open(engine).await else {
        return Ok(());
    };
    sign_in(&b, &demo).await?;
    b.goto(&demo.url("/private/b")).await?;
    b.goto(&demo.url("/public")).await?;

    // Control: alive session, restored page, guard shows it.
    b.back().await?;
    b.wait_for_path("/private/b", Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    check(
        b.last_pageshow_persisted().await? == Some(true),
        "the private page was not restored from the back/forward cache; the test would prove nothing",
    )?;
    check(
        b.visible_text().await?.contains("PRIVATE-B"),
        "the guard hid a page whose session is alive",
    )?;
    b.forward().await?;
    b.wait_for_path("/public", Duration::from_secs(10)).await?;

    // End the session from outside, then wait out the gateway's cache
    // staleness bound (1 s, documented).
    let out = Command::new(signoff_bin())
        .args(["user", "disable", "demo", "--db", &demo.db])
        .output()
        .unwrap();
    check(out.status.success(), format!("user disable: {:?}", out))?;
    tokio::time::sleep(Duration::from_millis(1200)).await;

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
    b.screenshot(artifact(engine, transport, "server-side-end"))
        .await?;
    b.close().await
}

/// Positive control: a public cacheable page comes back from the
/// back/forward cache (`persisted == true`), so the harness really
/// exercises it in this engine.
async fn bfcache_is_on(engine: Engine, transport: Transport) -> Result<()> {
    let demo = Demo::start(transport);
    let Some(b) = Browser::open(engine).await else {
        return Ok(());
    };
    b.goto(&demo.url("/public")).await?;
    check(
        b.last_pageshow_persisted().await? == Some(false),
        "fresh load",
    )?;
    b.goto(&demo.url("/")).await?;
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

async fn logout_then_back_http(e: Engine) -> Result<()> {
    logout_then_back(e, Transport::Http).await
}
async fn logout_then_back_https(e: Engine) -> Result<()> {
    logout_then_back(e, Transport::Https).await
}
async fn server_side_end_then_back_http(e: Engine) -> Result<()> {
    server_side_end_then_back(e, Transport::Http).await
}
async fn server_side_end_then_back_https(e: Engine) -> Result<()> {
    server_side_end_then_back(e, Transport::Https).await
}
async fn bfcache_is_on_http(e: Engine) -> Result<()> {
    bfcache_is_on(e, Transport::Http).await
}
async fn bfcache_is_on_https(e: Engine) -> Result<()> {
    bfcache_is_on(e, Transport::Https).await
}

engine_tests!(
    logout_then_back_http,
    logout_then_back_https,
    server_side_end_then_back_http,
    server_side_end_then_back_https,
    bfcache_is_on_http,
    bfcache_is_on_https,
);
