//! The real-browser checks of `signoff check`: Chromium (chromedriver) or
//! Firefox (geckodriver), headless, with the back/forward cache on, driven
//! over W3C WebDriver with fantoccini.
//!
//! Before it looks at the app, a positive control proves the browser's
//! back/forward cache is on: a page of check's own (on 127.0.0.1) is left
//! and restored with Back, and must say it came back `persisted`. Without
//! that proof, a clean Back proves nothing, and the check says so.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use url::Url;

use super::visitor::Jar;

/// A browser engine `check` can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    pub fn title(self) -> &'static str {
        match self {
            Engine::Chromium => "Chromium",
            Engine::Firefox => "Firefox",
        }
    }

    /// `Err(why)` when this machine cannot run the engine.
    pub fn available(self) -> Result<()> {
        self.binaries().map(|_| ())
    }

    /// The driver and the browser binaries, found on `PATH` (geckodriver
    /// also in `~/.cargo/bin`, where `cargo install` puts it).
    fn binaries(self) -> Result<(PathBuf, PathBuf)> {
        let (drivers, browsers, install): (&[&str], &[&str], &str) = match self {
            Engine::Chromium => (
                &["chromedriver"],
                &["chromium", "chromium-browser", "google-chrome"],
                "Debian: apt-get install chromium chromium-driver",
            ),
            Engine::Firefox => (
                &["geckodriver"],
                &["firefox-esr", "firefox"],
                "Debian: apt-get install firefox-esr; cargo install geckodriver",
            ),
        };
        let driver = drivers.iter().find_map(|d| on_path(d));
        let browser = browsers.iter().find_map(|b| on_path(b));
        match (driver, browser) {
            (Some(d), Some(b)) => Ok((d, b)),
            (None, _) => bail!("{} not found on PATH ({install})", drivers.join(" or ")),
            (_, None) => bail!("{} not found on PATH ({install})", browsers.join(" or ")),
        }
    }

    fn capabilities(self, browser: &Path, profile: &Path) -> serde_json::Map<String, Value> {
        let caps = match self {
            Engine::Chromium => json!({
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "timeouts": { "pageLoad": 20_000, "script": 10_000, "implicit": 0 },
                "goog:chromeOptions": {
                    "binary": browser,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }),
            Engine::Firefox => json!({
                "browserName": "firefox",
                "pageLoadStrategy": "normal",
                "timeouts": { "pageLoad": 20_000, "script": 10_000, "implicit": 0 },
                "moz:firefoxOptions": {
                    "binary": browser,
                    "args": ["-headless", "-profile", profile],
                    "prefs": {
                        // The back/forward cache on, with room for a few pages.
                        "browser.sessionhistory.max_total_viewers": 8,
                        "dom.security.https_first": false,
                        "network.captive-portal-service.enabled": false,
                        "network.connectivity-service.enabled": false,
                        "app.update.disabledForTesting": true,
                        "datareporting.policy.dataSubmissionEnabled": false,
                        "toolkit.telemetry.enabled": false,
                    },
                },
            }),
        };
        match caps {
            Value::Object(map) => map,
            _ => unreachable!("capabilities are an object"),
        }
    }
}

/// `name` in a directory of `PATH` (or `~/.cargo/bin`).
fn on_path(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// A WebDriver command, with its deadline.
async fn within<T>(
    command: impl std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
) -> Result<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, command)
        .await
        .map_err(|_| anyhow!("the browser did not answer in {COMMAND_TIMEOUT:?}"))?
        .map_err(|e| anyhow!("in the browser: {e}"))
}

/// How long the driver and the browser may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(45);
/// Every WebDriver command's deadline.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A headless browser and its driver; dropping it ends both (the driver
/// runs in a process group of its own, killed whole) and removes the
/// profile.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    _dir: tempfile::TempDir,
    pub version: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts `engine` headless with an empty profile.
    pub async fn open(engine: Engine) -> Result<Browser> {
        let (driver_bin, browser_bin) = engine.binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("signoff-check-")
            .tempdir()
            .context("a temporary profile directory")?;
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).context("a temporary profile directory")?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("a free port for the WebDriver server")?
            .port();
        let mut cmd = Command::new(&driver_bin);
        match engine {
            Engine::Chromium => cmd.arg(format!("--port={port}")),
            Engine::Firefox => cmd
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--websocket-port", "0"])
                .arg("--profile-root")
                .arg(dir.path()),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .with_context(|| format!("starting {}", driver_bin.display()))?;
        let mut browser = Browser {
            client: None,
            driver,
            _dir: dir,
            version: String::new(),
        };
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(engine.capabilities(&browser_bin, &profile));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + START_TIMEOUT;
        let client = loop {
            if let Some(status) = browser.driver.try_wait()? {
                bail!("{} exited at start ({status})", driver_bin.display());
            }
            match tokio::time::timeout(START_TIMEOUT, builder.connect(&url)).await {
                Ok(Ok(client)) => break client,
                // The driver is not listening yet.
                Ok(Err(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => bail!("{} did not start: {e}", engine.title()),
                Err(_) => bail!("{} did not start in {START_TIMEOUT:?}", engine.title()),
            }
        };
        browser.version = client
            .session_creation_response()
            .and_then(|r| r.capabilities())
            .and_then(|c| c.get("browserVersion"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        browser.client = Some(client);
        Ok(browser)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("opened")
    }

    /// Runs `body` as a function of `args` in the page; its value.
    pub async fn exec(&self, body: &str, args: Vec<Value>) -> Result<Value> {
        within(self.client().execute(body, args)).await
    }

    /// The page's rendered text (what a person sees: hidden text is left
    /// out).
    pub async fn visible_text(&self) -> Result<String> {
        let v = self
            .exec(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn url(&self) -> Result<Url> {
        let url = within(self.client().current_url()).await?;
        Ok(Url::parse(url.as_str())?)
    }

    /// Marks the current document with a fresh token; the token.
    pub async fn mark(&self) -> Result<String> {
        let token = format!("{:016x}", rand::random::<u64>());
        self.exec(
            "window.__signoffCheck = arguments[0]; return true;",
            vec![json!(token)],
        )
        .await?;
        Ok(token)
    }

    /// Names the current document: a later [`Browser::page_name`] that
    /// gives the same name is this very document, restored from the
    /// back/forward cache (a page loaded again starts without it).
    pub async fn name_page(&self, name: &str) -> Result<()> {
        self.exec(
            "window.__signoffPage = arguments[0]; return true;",
            vec![json!(name)],
        )
        .await
        .map(|_| ())
    }

    /// The name [`Browser::name_page`] gave the current document, if any.
    pub async fn page_name(&self) -> Option<String> {
        self.exec("return window.__signoffPage || null;", vec![])
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    /// Whether the current document was reached through the history
    /// (Back or Forward), as a restore or as a load of its own.
    pub async fn came_by_history(&self) -> bool {
        self.exec(
            "var n = performance.getEntriesByType('navigation')[0]; \
             return !!(window.__signoffPage || (n && n.type === 'back_forward'));",
            vec![],
        )
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
    }

    /// Does `act` (a navigation of some kind) and waits until the marked
    /// document is gone and the new one has loaded; the token left on the
    /// document it left.
    pub async fn navigate<F, Fut>(&self, what: &str, act: F) -> Result<String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let token = self.mark().await?;
        act().await?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let state = self
                .exec(
                    "return [document.readyState, window.__signoffCheck || null];",
                    vec![],
                )
                .await;
            if let Ok(Value::Array(v)) = &state {
                if v.first().and_then(Value::as_str) == Some("complete")
                    && v.get(1).and_then(Value::as_str) != Some(token.as_str())
                {
                    return Ok(token);
                }
            }
            if Instant::now() > deadline {
                bail!("{what}: the page did not change in {COMMAND_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn goto(&self, url: &Url) -> Result<String> {
        let c = self.client();
        self.navigate(&format!("opening {}", url.path()), || {
            within(c.goto(url.as_str()))
        })
        .await
    }

    pub async fn back(&self) -> Result<String> {
        let c = self.client();
        self.navigate("Back", || within(c.back())).await
    }

    pub async fn forward(&self) -> Result<String> {
        let c = self.client();
        self.navigate("Forward", || within(c.forward())).await
    }

    /// Runs `script` (which submits a form or clicks a link) and waits for
    /// the page it leads to.
    pub async fn submit(&self, what: &str, script: &str, args: Vec<Value>) -> Result<String> {
        self.navigate(what, || async move {
            let done = self.exec(script, args).await?;
            if done == Value::Bool(true) {
                Ok(())
            } else {
                Err(anyhow!(
                    "{what}: {}",
                    done.as_str().unwrap_or("nothing to click")
                ))
            }
        })
        .await
    }

    /// The cookies the browser holds for the current page, as a jar.
    pub async fn cookies(&self) -> Result<Jar> {
        let all = within(self.client().get_all_cookies()).await?;
        let mut jar = Jar::default();
        for c in all {
            jar.set(c.name(), c.value());
        }
        Ok(jar)
    }

    /// Ends the session with the driver (the process goes with Drop).
    pub async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
        }
    }
}
