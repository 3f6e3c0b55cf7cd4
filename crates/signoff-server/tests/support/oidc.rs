//! A real OpenID provider for the OpenID Connect tests: panva's
//! `oidc-provider` from the npm registry, run with Node as
//! `tests/oidc/provider.mjs` (read its header for what it serves).
//!
//! The package comes from `tests/oidc/package-lock.json`, installed by
//! `.ci/run` outside the repository: `$SIGNOFF_OIDC_PROVIDER_DIR`, by default
//! `${XDG_CACHE_HOME:-$HOME/.cache}/signoff-ci/oidc-provider`. Without Node
//! or the package the tests say "skipped", or fail under
//! `SIGNOFF_REQUIRE_SERVICES=1`.
//!
//! Any login name signs in (any password); `carol` is in the groups
//! `admins` and `staff`, everyone else in `staff`. The client is
//! first-party: the provider shows no consent page (the helpers below still
//! get through one if it shows).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::Method;
use rand::Rng as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::browser::{self, Browser};
use super::{get, missing, post_form, request, spawn_reading_lines, Proc, Reply};

/// The client id the provider registers.
pub const CLIENT_ID: &str = "signoff-test";
/// The scopes whose claims the provider has: `sub`; `preferred_username`;
/// `email`, `email_verified`; `groups`.
pub const SCOPES: &str = "openid profile email groups";
/// What the helpers type into the provider's password field (it takes any).
const ANY_PASSWORD: &str = "any password";

/// A running provider; the Node process ends when this is dropped.
pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

/// Where `.ci/run` installs the package (`node_modules/oidc-provider`).
pub fn package_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIGNOFF_OIDC_PROVIDER_DIR").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("signoff-ci/oidc-provider")
}

fn node_runs() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl OidcProvider {
    /// Starts the provider with one confidential client whose URIs are
    /// these. `None` (reported skipped) when Node or the package is missing,
    /// unless `SIGNOFF_REQUIRE_SERVICES=1` (then it panics).
    pub fn start(
        redirect_uri: &str,
        backchannel_logout_uri: &str,
        post_logout_redirect_uri: &str,
    ) -> Option<OidcProvider> {
        if !node_runs() {
            return missing("node (for the OpenID provider)");
        }
        let package = package_dir();
        if !package
            .join("node_modules/oidc-provider/package.json")
            .is_file()
        {
            return missing(&format!(
                "oidc-provider in {} (.ci/run installs it; set SIGNOFF_OIDC_PROVIDER_DIR)",
                package.display()
            ));
        }
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        let client_secret = random_text(32);
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("node");
        cmd.arg(here.join("provider.mjs"))
            .current_dir(&here)
            .env("SIGNOFF_OIDC_PROVIDER_DIR", &package)
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", &client_secret)
            .env("REDIRECT_URI", redirect_uri)
            .env("BACKCHANNEL_LOGOUT_URI", backchannel_logout_uri)
            .env("POST_LOGOUT_REDIRECT_URI", post_logout_redirect_uri)
            .env_remove("PORT")
            .env_remove("NODE_OPTIONS");
        let (proc, lines) = spawn_reading_lines(cmd, dir.path().join("oidc-provider.log"), 1);
        let issuer = lines[0]
            .strip_prefix("issuer ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {:?}; log:\n{}",
                    lines[0],
                    proc.log_text()
                )
            })
            .trim()
            .to_owned();
        Some(OidcProvider {
            issuer,
            client_id: CLIENT_ID.to_owned(),
            client_secret,
            proc,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Whether `url` is on the provider's origin.
    pub fn owns(&self, url: &str) -> bool {
        url == self.issuer || url.starts_with(&format!("{}/", self.issuer))
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Value {
        let reply = get(&self.url("/.well-known/openid-configuration"), &[]).await;
        assert_eq!(reply.status, 200, "discovery: {}", reply.text());
        reply.json()
    }

    /// Makes the provider sign a back-channel logout token for `sub` (with
    /// `sid`, or with `sub` alone when `None`) and POST it to the client's
    /// `backchannel_logout_uri`; `Err` with the provider's message when that
    /// did not answer 200 or 204.
    pub async fn try_send_backchannel_logout(
        &self,
        sub: &str,
        sid: Option<&str>,
    ) -> Result<(), String> {
        let mut query = vec![("sub", sub)];
        if let Some(sid) = sid {
            query.push(("sid", sid));
        }
        let reply = self
            .control(Method::POST, "/test/backchannel", &query)
            .await;
        match reply.status {
            200 if reply.json()["sent"] == true => Ok(()),
            _ => Err(format!("{}: {}", reply.status, reply.text())),
        }
    }

    /// As [`Self::try_send_backchannel_logout`], asserting the client took it.
    pub async fn send_backchannel_logout(&self, sub: &str, sid: Option<&str>) {
        if let Err(e) = self.try_send_backchannel_logout(sub, sid).await {
            panic!(
                "back-channel logout of {sub} ({sid:?}) not taken: {e}\nprovider log:\n{}",
                self.proc.log_text()
            );
        }
    }

    /// Ends every provider session of `sub` the way an administrator's
    /// "sign out" at a provider does: one logout token per session, with
    /// the client's `sid` of that session, then the session is gone.
    /// Returns those sids (asserts the client took every token).
    pub async fn end_sessions_of(&self, sub: &str) -> Vec<String> {
        let reply = self
            .control(Method::POST, "/test/logout", &[("sub", sub)])
            .await;
        assert_eq!(
            reply.status,
            200,
            "ending {sub}'s provider sessions: {}\nprovider log:\n{}",
            reply.text(),
            self.proc.log_text()
        );
        sids(&reply)
    }

    /// The client's `sid` of each live provider session of `sub`.
    pub async fn sessions_of(&self, sub: &str) -> Vec<String> {
        let reply = self
            .control(Method::GET, "/test/sessions", &[("sub", sub)])
            .await;
        assert_eq!(reply.status, 200, "sessions of {sub}: {}", reply.text());
        sids(&reply)
    }

    async fn control(&self, method: Method, path: &str, query: &[(&str, &str)]) -> Reply {
        let query = serde_urlencoded::to_string(query).unwrap();
        request(method, &self.url(&format!("{path}?{query}")), &[], None).await
    }

    /// Completes the provider's own sign-in in a browser that is on (or is
    /// being sent to) the provider's pages: types `login` and any password
    /// into devInteractions' form, continues past a consent page if one
    /// shows, and returns once the browser has left the provider's origin
    /// (at once when the provider signs it in without a form).
    pub async fn sign_in_in_browser(&self, browser: &Browser, login: &str) -> browser::Result<()> {
        const STEP: &str = "document.readyState !== 'complete' ? '' \
            : document.querySelector('input[name=login]') ? 'login' \
            : document.querySelector('input[name=prompt][value=consent]') ? 'consent' : ''";
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = browser.current_url().await?;
            if !self.owns(&url) {
                return Ok(());
            }
            let step = browser.eval(STEP).await.unwrap_or(Value::Null);
            match step.as_str() {
                Some("login") => {
                    browser.fill("input[name=login]", login).await?;
                    browser.fill("input[name=password]", ANY_PASSWORD).await?;
                    browser.click_and_wait("form button[type=submit]").await?;
                    continue;
                }
                Some("consent") => {
                    browser.click_and_wait("form button[type=submit]").await?;
                    continue;
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let text = browser.visible_text().await.unwrap_or_default();
                return Err(browser::Error::new(format!(
                    "still at the provider ({url}) after 20 s; the page says: {text:.500}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Answers the provider's "Sign out?" page (RP-initiated logout at its
    /// `end_session_endpoint`) with "Yes" in a browser that is on it, and
    /// waits for the page that follows (the client's
    /// `post_logout_redirect_uri`, or the provider's "Signed out").
    pub async fn confirm_logout_in_browser(&self, browser: &Browser) -> browser::Result<()> {
        browser
            .wait_for_js(
                "document.readyState === 'complete' && !!document.querySelector('button[name=logout]')",
                browser::DEFAULT_TIMEOUT,
            )
            .await?;
        browser.click_and_wait("button[name=logout]").await
    }

    /// The provider's side of a sign-in by plain HTTP: starts at
    /// `authorize_url` (the authorization request, e.g. where signoff
    /// redirected to), signs in as `login` if the provider asks, and returns
    /// the first URL off the provider's origin it redirects to (the client's
    /// callback with `code` and `state`, or an error). `agent` keeps the
    /// provider's cookies, so a second sign-in with it is silent.
    pub async fn sign_in_by_http(
        &self,
        agent: &mut ProviderAgent,
        authorize_url: &str,
        login: &str,
    ) -> String {
        let mut url = self.absolute(authorize_url);
        for _ in 0..10 {
            let reply = agent.get(&url).await;
            match reply.status {
                301 | 302 | 303 | 307 => {
                    let next = self.absolute(reply.header("location").expect("a Location"));
                    if !self.owns(&next) {
                        return next;
                    }
                    url = next;
                }
                200 => {
                    let html = reply.text();
                    let form: &[(&str, &str)] = if html.contains("name=\"login\"") {
                        &[
                            ("prompt", "login"),
                            ("login", login),
                            ("password", ANY_PASSWORD),
                        ]
                    } else if html.contains("name=\"prompt\" value=\"consent\"") {
                        &[("prompt", "consent")]
                    } else {
                        panic!("unexpected page at {url}: {html:.800}");
                    };
                    // devInteractions' forms post to the page's own URL.
                    let reply = agent.post(&url, form).await;
                    assert_eq!(reply.status, 303, "{url}: {}", reply.text());
                    url = self.absolute(reply.header("location").expect("a Location"));
                }
                status => panic!("{status} at {url}: {}", reply.text()),
            }
        }
        panic!("the provider kept redirecting (last: {url})");
    }

    /// RP-initiated logout by plain HTTP: opens `end_session_url` (the
    /// provider's `end_session_endpoint` with its parameters), answers the
    /// provider's "Sign out?" with "Yes", and returns the final reply: a 303
    /// to the `post_logout_redirect_uri`, or the provider's "Signed out"
    /// page.
    pub async fn end_session_by_http(
        &self,
        agent: &mut ProviderAgent,
        end_session_url: &str,
    ) -> Reply {
        let url = self.absolute(end_session_url);
        let page = agent.get(&url).await;
        assert_eq!(page.status, 200, "{url}: {}", page.text());
        let html = page.text();
        let xsrf = attribute_after(&html, "name=\"xsrf\" value=\"")
            .unwrap_or_else(|| panic!("no logout form at {url}: {html:.800}"));
        let action = attribute_after(&html, "method=\"post\" action=\"")
            .unwrap_or_else(|| self.url("/session/end/confirm"));
        let form: &[(&str, &str)] = if html.contains("name=\"logout\"") {
            &[("xsrf", &xsrf), ("logout", "yes")]
        } else {
            // No provider session: the page posts the form by itself.
            &[("xsrf", &xsrf)]
        };
        agent.post(&self.absolute(&action), form).await
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') {
            self.url(url)
        } else {
            url.to_owned()
        }
    }
}

fn sids(reply: &Reply) -> Vec<String> {
    reply.json()["sids"]
        .as_array()
        .unwrap_or_else(|| panic!("no sids in {}", reply.text()))
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The value of an HTML attribute that follows `marker` (the text up to
/// the next `"`), for the provider's own simple pages.
fn attribute_after(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

/// A browser's cookies at the provider, for [`OidcProvider::sign_in_by_http`]
/// and [`OidcProvider::end_session_by_http`]: every cookie goes back on every
/// request (the provider's cookie paths are left aside; its cookie names do
/// not collide).
#[derive(Default)]
pub struct ProviderAgent {
    cookies: Vec<(String, String)>,
}

impl ProviderAgent {
    pub fn new() -> ProviderAgent {
        ProviderAgent::default()
    }

    /// The provider's session cookie (`_session`), if it set one.
    pub fn session_cookie(&self) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == "_session")
            .map(|(_, v)| v.as_str())
    }

    fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, reply: &Reply) {
        for set in reply.all("set-cookie") {
            let Some((name, rest)) = set.split_once('=') else {
                continue;
            };
            let value = rest.split(';').next().unwrap_or("").to_owned();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value));
            }
        }
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        let cookie = self.header();
        let reply = get(url, &[("cookie", &cookie)]).await;
        self.keep(&reply);
        reply
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Reply {
        let cookie = self.header();
        let reply = post_form(url, form, &[("cookie", &cookie)]).await;
        self.keep(&reply);
        reply
    }
}

/// A random text of `len` URL-safe characters (PKCE verifiers, states,
/// nonces, client secrets).
pub fn random_text(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

/// The PKCE `S256` challenge of `verifier`.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A JWT's header and payload, decoded but NOT verified (to look at what
/// the provider signed).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = |what: &str| -> Value {
        let text = parts
            .next()
            .unwrap_or_else(|| panic!("no {what} in the JWT {token:.80}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .unwrap_or_else(|e| panic!("{what} of the JWT: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{what} of the JWT: {e}"))
    };
    let header = part("header");
    let payload = part("payload");
    (header, payload)
}
