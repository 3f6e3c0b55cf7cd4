//! What a person sees with Back and Forward after signing out, in a real
//! browser with its back/forward cache on (`browser.rs`), and after a
//! session ended on the server only (`--end-session-command`).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use axum::response::Html;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use url::Url;

use super::browser::{Browser, Engine};
use super::page::squeeze;
use super::visitor::{path_of, Jar};

/// What the browser scenarios need to know about the app.
pub struct Scene<'a> {
    pub login: &'a Url,
    pub user_field: &'a str,
    pub user: &'a str,
    pub password: &'a str,
    pub protected: &'a Url,
    /// Text only the signed-in page shows.
    pub private_text: &'a str,
    /// The sign-out control: a form's action or a link's address.
    pub logout: Logout<'a>,
}

#[derive(Clone, Copy)]
pub enum Logout<'a> {
    Form(&'a Url),
    Link(&'a Url),
}

/// What one scenario saw: where private text showed (empty: nowhere), the
/// steps as evidence, or why it could not tell.
pub enum Outcome {
    Clean {
        steps: Vec<String>,
    },
    Leaked {
        leaks: Vec<String>,
        steps: Vec<String>,
    },
    Unsure {
        why: String,
        steps: Vec<String>,
    },
}

/// The control pages: plain, cacheable, nothing that keeps a page out of
/// the back/forward cache.
const CONTROL_A: &str = "<!doctype html><html><head><title>signoff check: a</title></head>\
                         <body><p>signoff check: control page a</p></body></html>";
const CONTROL_B: &str = "<!doctype html><html><head><title>signoff check: b</title></head>\
                         <body><p>signoff check: control page b</p></body></html>";

impl Outcome {
    /// What a scene's steps saw: the leaks they found, or why they could
    /// not tell.
    fn of(seen: Result<Vec<String>>, steps: Vec<String>) -> Outcome {
        match seen {
            Ok(leaks) if leaks.is_empty() => Outcome::Clean { steps },
            Ok(leaks) => Outcome::Leaked { leaks, steps },
            Err(e) => Outcome::Unsure {
                why: format!("{e:#}"),
                steps,
            },
        }
    }
}

/// Two plain pages of check's own on 127.0.0.1, for the positive control.
struct ControlPages {
    origin: Url,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlPages {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ControlPages {
    async fn start() -> Result<ControlPages> {
        let app = axum::Router::new()
            .route("/a", get(|| async { Html(CONTROL_A) }))
            .route("/b", get(|| async { Html(CONTROL_B) }));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("a port for the control pages")?;
        let origin = Url::parse(&format!("http://{}", listener.local_addr()?))?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ControlPages { origin, task })
    }

    fn url(&self, path: &str) -> Url {
        self.origin.join(path).expect("a fixed path")
    }
}

/// Signs in through the login form, as a person types.
const SIGN_IN: &str = r#"
const [userField, user, password, origin] = arguments;
if (location.origin !== origin) return 'the login page is on another origin (' + location.origin + ')';
const f = [...document.forms].find(f => f.querySelector('input[type=password]'));
if (!f) return 'no login form on the page';
const b = f.querySelector('[type=submit], button:not([type])');
const to = new URL((b && b.formAction) || f.action, location.href);
if (to.origin !== origin) return 'the login form sends the password to another origin (' + to.origin + ')';
const u = f.querySelector('[name="' + CSS.escape(userField) + '"]');
if (u) u.value = user;
f.querySelector('input[type=password]').value = password;
if (b) b.click(); else if (f.requestSubmit) f.requestSubmit(); else f.submit();
return true;"#;

/// Clicks the sign-out control.
const SIGN_OUT: &str = r#"
const [kind, url] = arguments;
if (kind === 'form') {
  const f = [...document.forms].find(f => f.action === url);
  if (!f) return 'the sign-out form is not on the page';
  const b = f.querySelector('[type=submit], button:not([type])');
  if (b) b.click(); else if (f.requestSubmit) f.requestSubmit(); else f.submit();
  return true;
}
const a = [...document.links].find(a => a.href === url);
if (!a) return 'the sign-out link is not on the page';
a.removeAttribute('target');
a.click();
return true;"#;

impl Scene<'_> {
    /// Opens the browser and proves its back/forward cache restores a
    /// plain page; `Err` says why not.
    async fn browser_with_bfcache(engine: Engine) -> Result<(Browser, ControlPages)> {
        let control = ControlPages::start().await?;
        let browser = Browser::open(engine).await?;
        browser.goto(&control.url("/a")).await?;
        browser.name_page("control-a").await?;
        browser.goto(&control.url("/b")).await?;
        browser.back().await?;
        if browser.page_name().await.as_deref() != Some("control-a") {
            bail!(
                "{} did not restore a plain page from its back/forward cache (the positive \
                 control), so a clean Back here would prove nothing",
                engine.title()
            );
        }
        Ok((browser, control))
    }

    /// Whether private text shows now, or within the next second (a page
    /// script may hide it, or a redirect replace it, in that time). `Err`
    /// when no look at the page succeeded: nothing was seen either way.
    async fn shows_private(&self, browser: &Browser) -> Result<bool> {
        let want = squeeze(self.private_text);
        let mut looked = None;
        for wait in [0, 300, 700] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match browser.visible_text().await {
                Ok(text) if squeeze(&text).contains(&want) => return Ok(true),
                Ok(_) => looked = Some(Ok(())),
                Err(e) => {
                    if looked.is_none() {
                        looked = Some(Err(e));
                    }
                }
            }
        }
        match looked {
            Some(Ok(())) => Ok(false),
            Some(Err(e)) => Err(e.context("the page could not be read")),
            None => Err(anyhow!("the page could not be read")),
        }
    }

    /// Signs in, opens the protected page, and checks the private text
    /// shows; the token left on the login page.
    async fn sign_in(&self, browser: &Browser, steps: &mut Vec<String>) -> Result<()> {
        browser.goto(self.login).await?;
        browser
            .submit(
                "signing in",
                SIGN_IN,
                vec![
                    json!(self.user_field),
                    json!(self.user),
                    json!(self.password),
                    json!(self.login.origin().ascii_serialization()),
                ],
            )
            .await?;
        browser.goto(self.protected).await?;
        browser.name_page("private").await?;
        steps.push(format!("signed in, opened {}", path_of(self.protected)));
        if !self.shows_private(browser).await? {
            bail!(
                "signed in through the browser, {} does not show the private text it showed \
                 over HTTP",
                path_of(self.protected)
            );
        }
        Ok(())
    }

    /// Sign in, open the protected page, sign out with the control, then
    /// Back, Back, Forward, Forward: private text must never show.
    pub async fn after_sign_out(&self, engine: Engine) -> Outcome {
        let mut steps = Vec::new();
        let seen = self.after_sign_out_steps(engine, &mut steps).await;
        Outcome::of(seen, steps)
    }

    async fn after_sign_out_steps(
        &self,
        engine: Engine,
        steps: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        let (browser, _control) = Self::browser_with_bfcache(engine).await?;
        steps.push(format!(
            "{} {}: a plain page came back from the back/forward cache (control)",
            engine.title(),
            browser.version
        ));
        self.sign_in(&browser, steps).await?;
        // A second private page, as a person opens more than one: the
        // same page under another address (a query the app ignores).
        let mut second = self.protected.clone();
        second
            .query_pairs_mut()
            .append_pair("signoff-check", "second-page");
        browser.goto(&second).await?;
        if self.shows_private(&browser).await? {
            browser.name_page("private").await?;
            steps.push(format!("opened {}", path_of(&second)));
        } else {
            browser.back().await?;
        }
        let (kind, url) = match self.logout {
            Logout::Form(u) => ("form", u),
            Logout::Link(u) => ("link", u),
        };
        browser
            .submit(
                "signing out",
                SIGN_OUT,
                vec![json!(kind), json!(url.as_str())],
            )
            .await?;
        let landed = browser.url().await?;
        steps.push(format!("signed out, landed on {}", path_of(&landed)));
        if self.shows_private(&browser).await? {
            bail!(
                "after signing out, {} still shows the private text",
                path_of(&landed)
            );
        }
        let mut leaks = Vec::new();
        let mut by_history = false;
        for step in ["Back", "Back", "Forward", "Forward"] {
            // A step that fails leaves nothing seen: the check is unsure.
            match step {
                "Back" => browser.back().await,
                _ => browser.forward().await,
            }
            .with_context(|| format!("{step} after signing out"))?;
            let at = browser.url().await.map(|u| path_of(&u)).unwrap_or_default();
            let cached = browser.page_name().await.as_deref() == Some("private");
            by_history |= browser.came_by_history().await;
            if self.shows_private(&browser).await? {
                let from = if cached {
                    "from the back/forward cache"
                } else {
                    "loaded again (HTTP cache or no check on the server)"
                };
                leaks.push(format!("{step} showed {at} with its private text, {from}"));
                steps.push(format!("{step} → {at}: PRIVATE TEXT SHOWN, {from}"));
            } else {
                steps.push(format!("{step} → {at}: nothing private"));
            }
        }
        browser.close().await;
        if leaks.is_empty() && !by_history {
            bail!(
                "no Back or Forward reached a page of the history (a script of the app may \
                 hold the history), so nothing was seen"
            );
        }
        Ok(leaks)
    }

    /// Sign in, open the protected page, go to another site, end the
    /// session with `command` (on the server only), then Back: private
    /// text must not show. `still_open` tells (over HTTP, with the
    /// browser's cookies) whether the command really ended the session.
    pub async fn after_server_end<F, Fut>(
        &self,
        engine: Engine,
        command: &str,
        still_open: F,
    ) -> Outcome
    where
        F: Fn(Jar) -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let mut steps = Vec::new();
        let seen = self
            .after_server_end_steps(engine, command, still_open, &mut steps)
            .await;
        Outcome::of(seen, steps)
    }

    async fn after_server_end_steps<F, Fut>(
        &self,
        engine: Engine,
        command: &str,
        still_open: F,
        steps: &mut Vec<String>,
    ) -> Result<Vec<String>>
    where
        F: Fn(Jar) -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let (browser, control) = Self::browser_with_bfcache(engine).await?;
        self.sign_in(&browser, steps).await?;
        let cookies = browser.cookies().await?;
        browser.goto(&control.url("/a")).await?;
        steps.push("went to another site's page".to_owned());
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", command])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().context("running --end-session-command")?;
        let group = child.id();
        let ran =
            match tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await {
                Ok(ran) => ran.context("running --end-session-command")?,
                Err(_) => {
                    // The whole group: sh and whatever it started.
                    if let Some(pid) = group {
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", "--", &format!("-{pid}")])
                            .status();
                    }
                    bail!("--end-session-command did not finish in 30 s");
                }
            };
        if !ran.status.success() {
            bail!(
                "--end-session-command failed ({}): {}",
                ran.status,
                String::from_utf8_lossy(&ran.stderr).trim()
            );
        }
        steps.push("ran --end-session-command".to_owned());
        // The app may take a moment to see it (a cache, another process):
        // up to 5 s, polled.
        let ran_at = std::time::Instant::now();
        let still_open = &still_open;
        loop {
            if !still_open(cookies.clone()).await? {
                steps.push(format!(
                    "the session was refused {} ms after the command",
                    ran_at.elapsed().as_millis()
                ));
                break;
            }
            if ran_at.elapsed() > Duration::from_secs(5) {
                bail!(
                    "the session still opens the page 5 s after --end-session-command: it \
                     ended nothing"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser.back().await?;
        let cached = browser.page_name().await.as_deref() == Some("private");
        // Back left check's own page (another origin) for the entry before
        // it: the private page (restored, or loaded and maybe sent on).
        let here = browser.url().await?;
        if here.origin() != self.protected.origin() {
            bail!(
                "Back did not leave check's own page for the private page's history entry, \
                 so nothing was seen"
            );
        }
        let at = path_of(&here);
        let mut leaks = Vec::new();
        if self.shows_private(&browser).await? {
            let from = if cached {
                "from the back/forward cache"
            } else {
                "loaded again"
            };
            leaks.push(format!("Back showed {at} with its private text, {from}"));
            steps.push(format!("Back → {at}: PRIVATE TEXT SHOWN, {from}"));
        } else {
            steps.push(format!("Back → {at}: nothing private"));
        }
        browser.close().await;
        Ok(leaks)
    }
}
