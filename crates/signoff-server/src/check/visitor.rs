//! The HTTP side of `signoff check`: requests as a browser sends them, a
//! cookie jar per visitor, redirects followed by hand (each one is
//! evidence), and a budget that caps how many requests a run may make.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use url::Url;

use crate::outbound::{self, OutboundClient};

/// The most requests one run may send (`--help` says so).
pub const REQUEST_BUDGET: usize = 500;
/// Of those, kept for signing out the sessions the run made.
const RESERVE: usize = 60;
/// The most of a body `check` reads.
const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Redirects followed in a row.
const MAX_REDIRECTS: usize = 10;
/// The User-Agent `check` sends, so the app's logs say who it was.
const USER_AGENT: &str = concat!("signoff-check/", env!("CARGO_PKG_VERSION"));

/// One request and its answer, kept as evidence.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: Method,
    pub url: Url,
    /// `url`'s path and query with any secret of the run blanked out, for
    /// evidence (a GET login form puts the password in the query).
    pub shown: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Exchange {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie`, parsed; values that do not parse are left out.
    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(SetCookie::parse)
            .collect()
    }

    /// Where a redirect points, resolved against the request's URL (as
    /// a browser resolves it: WHATWG URL rules).
    pub fn location(&self) -> Option<Url> {
        let to = self.header("location")?;
        self.url.join(to).ok()
    }

    /// `GET /path → 302 Location: /login`, for evidence lines.
    pub fn summary(&self) -> String {
        let mut s = format!("{} {} → {}", self.method, self.shown, self.status);
        if let Some(to) = self.header("location") {
            s.push_str(&format!(" Location: {}", hide_tokens(to)));
        }
        s
    }
}

/// A URL's path and query, for evidence (token-like values hidden).
pub fn path_of(url: &Url) -> String {
    hide_tokens(&match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
}

/// `text` (an address) with the values of token-like parameters and path
/// parameters (`;jsessionid=…`) replaced by `…`: evidence never shows a
/// session id an app put in an address.
pub fn hide_tokens(text: &str) -> String {
    const TOKENISH: &[&str] = &[
        "token",
        "session",
        "sid",
        "jsessionid",
        "phpsessid",
        "sessionid",
        "code",
        "key",
        "auth",
        "ticket",
        "nonce",
        "sig",
        "signature",
        "secret",
        "password",
        "jwt",
    ];
    // By whole words of the name: `csrf_token`, `JSESSIONID`, not
    // `signoff-check`.
    let tokenish = |name: &str| {
        name.split(|c: char| !c.is_ascii_alphanumeric())
            .map(str::to_ascii_lowercase)
            .any(|w| TOKENISH.contains(&w.as_str()) || w.ends_with("token"))
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    // Path parameters: ";name=value" after a segment.
    let path = path
        .split(';')
        .enumerate()
        .map(|(i, part)| match part.split_once('=') {
            Some((k, _)) if i > 0 && tokenish(k) => format!("{k}=…"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";");
    match query {
        None => path,
        Some(q) => {
            let q = q
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if tokenish(k) => format!("{k}=…"),
                    _ => pair.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{path}?{q}")
        }
    }
}

/// A `Set-Cookie` header: the raw text and what it says.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub raw: String,
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Lax`, `Strict` or `None` as sent; `None` here when absent.
    pub same_site: Option<String>,
    pub path: Option<String>,
    pub domain: Option<String>,
    /// `Max-Age` ≤ 0 or `Expires` in the past: the browser deletes it.
    pub removes: bool,
}

impl SetCookie {
    pub fn parse(raw: &str) -> Option<SetCookie> {
        let c = cookie::Cookie::parse(raw.to_owned()).ok()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        // Max-Age wins over Expires (RFC 6265bis 5.6.2).
        let removes = match c.max_age() {
            Some(age) => age.whole_seconds() <= 0,
            None => c
                .expires_datetime()
                .is_some_and(|t| t.unix_timestamp() <= now),
        };
        // cookie's SameSite parser folds unknown values into None; read the
        // attribute as sent.
        // The last one counts, as in browsers.
        let same_site = raw
            .split(';')
            .skip(1)
            .filter_map(|a| {
                let (k, v) = a.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("samesite")
                    .then(|| v.trim().to_owned())
            })
            .last();
        Some(SetCookie {
            raw: raw.to_owned(),
            name: c.name().to_owned(),
            value: c.value().to_owned(),
            http_only: c.http_only().unwrap_or(false),
            secure: c.secure().unwrap_or(false),
            same_site,
            path: c.path().map(str::to_owned),
            domain: c.domain().map(str::to_owned),
            removes,
        })
    }

    /// The attributes that decide which stored cookie a `Set-Cookie`
    /// replaces or deletes: name, domain and path (RFC 6265bis 5.6).
    /// A missing `Path` counts as `/` and a leading dot of `Domain` as
    /// nothing, close enough for cookies set and deleted by one app.
    pub fn same_slot(&self, other: &SetCookie) -> bool {
        let domain = |c: &SetCookie| {
            c.domain
                .as_deref()
                .map(|d| d.trim_start_matches('.').to_ascii_lowercase())
        };
        let path = |c: &SetCookie| match c.path.as_deref() {
            None | Some("") => "/".to_owned(),
            Some(p) => p.to_owned(),
        };
        self.name == other.name && domain(self) == domain(other) && path(self) == path(other)
    }

    /// The raw header with its value hidden: evidence never prints a
    /// session token.
    pub fn redacted(&self) -> String {
        let rest = self.raw.split_once(';').map_or("", |(_, r)| r);
        let shown = if self.value.is_empty() { "" } else { "…" };
        if rest.is_empty() {
            format!("{}={shown}", self.name)
        } else {
            format!("{}={shown};{rest}", self.name)
        }
    }
}

/// The cookies one visitor holds: name → value. `check` talks to one
/// origin, so domain and path scoping are not modelled; a cookie the app
/// deletes is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jar(pub Vec<(String, String)>);

impl Jar {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.0.push((name.to_owned(), value.to_owned())),
        }
    }

    fn take(&mut self, set: &SetCookie) {
        if set.removes {
            self.0.retain(|(n, _)| *n != set.name);
        } else {
            self.set(&set.name, &set.value);
        }
    }

    fn header(&self) -> Option<HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        let text = self
            .0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        HeaderValue::from_str(&text).ok()
    }
}

/// Where a request seems to come from, as a browser says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// A page of the app itself: `Origin` (on POST) and `Sec-Fetch-Site:
    /// same-origin`, `Referer` of the app.
    Own,
    /// Another site's page: `Origin: https://evil.example` on POST and
    /// `Sec-Fetch-Site: cross-site`.
    Foreign,
    /// Typed into the address bar: `Sec-Fetch-Site: none`.
    AddressBar,
}

/// The foreign origin forged requests claim.
pub const OTHER_SITE: &str = "https://evil.example";

/// One request to send.
#[derive(Debug, Clone)]
pub struct Ask {
    pub method: Method,
    pub url: Url,
    pub form: Option<Vec<(String, String)>>,
    /// A JSON body instead of a form (token mode's sign-in).
    pub json: Option<serde_json::Value>,
    /// `Authorization: Bearer` (token mode).
    pub bearer: Option<String>,
    pub from: Site,
}

impl Ask {
    pub fn get(url: Url, from: Site) -> Ask {
        Ask {
            method: Method::GET,
            url,
            form: None,
            json: None,
            bearer: None,
            from,
        }
    }

    pub fn post(url: Url, form: Vec<(String, String)>, from: Site) -> Ask {
        Ask {
            form: Some(form),
            method: Method::POST,
            ..Ask::get(url, from)
        }
    }

    /// A POST of `body` as JSON, as an API client sends it.
    pub fn post_json(url: Url, body: serde_json::Value) -> Ask {
        Ask {
            json: Some(body),
            method: Method::POST,
            ..Ask::get(url, Site::AddressBar)
        }
    }

    /// The same request with `Authorization: Bearer token`.
    pub fn with_bearer(self, token: &str) -> Ask {
        Ask {
            bearer: Some(token.to_owned()),
            ..self
        }
    }
}

/// The client all visitors of one run share, with the request budget.
#[derive(Clone)]
pub struct Web {
    client: OutboundClient,
    origin: Url,
    timeout: Duration,
    sent: Arc<AtomicUsize>,
    /// The checks may send up to this many; the sign-out at the end may use
    /// the reserve too.
    limit: Arc<AtomicUsize>,
    /// Texts no report may show: the password, as typed and as encoded in
    /// a URL or form.
    secrets: Arc<Vec<String>>,
}

impl Web {
    /// A client for `origin` (crate::outbound: HTTPS checked against the
    /// system's roots);
    /// each request may take `timeout`. `secret` (the password) is blanked
    /// out of everything this client reports.
    pub fn new(origin: Url, timeout: Duration, secret: Option<&str>) -> Result<Web> {
        Ok(Web {
            client: outbound::client(Duration::from_secs(10))?,
            origin,
            timeout,
            sent: Arc::new(AtomicUsize::new(0)),
            limit: Arc::new(AtomicUsize::new(REQUEST_BUDGET - RESERVE)),
            secrets: Arc::new(secret.map(secret_forms).unwrap_or_default()),
        })
    }

    /// Lets the rest of the run use the reserve of the budget.
    pub fn allow_the_reserve(&self) {
        self.limit.store(REQUEST_BUDGET, Ordering::Relaxed);
    }

    /// `text` with every secret of the run blanked out.
    pub fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    /// How many requests this run has sent.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// The app's origin, `http://host:port`.
    pub fn origin(&self) -> String {
        self.origin.origin().ascii_serialization()
    }

    /// Whether `url` is on the app's origin.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.origin.origin()
    }

    /// Sends one request with `cookies` (updated from the answer when
    /// `keep` is true). No redirect is followed.
    pub async fn send(&self, ask: &Ask, cookies: &mut Jar, keep: bool) -> Result<Exchange> {
        let limit = self.limit.load(Ordering::Relaxed);
        if self.sent.fetch_add(1, Ordering::Relaxed) >= limit {
            bail!("stopped at {limit} requests (of the {REQUEST_BUDGET} one run may send)");
        }
        let mut req = Request::builder()
            .method(ask.method.clone())
            .uri(ask.url.as_str())
            .header(header::USER_AGENT, USER_AGENT)
            .header(
                header::ACCEPT,
                "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
            );
        let headers = req.headers_mut().expect("a valid request so far");
        // The app's cookies go to the app only.
        if self.same_origin(&ask.url) {
            if let Some(c) = cookies.header() {
                headers.insert(header::COOKIE, c);
            }
        }
        let site = match ask.from {
            Site::Own => "same-origin",
            Site::Foreign => "cross-site",
            Site::AddressBar => "none",
        };
        headers.insert(
            HeaderName::from_static("sec-fetch-site"),
            HeaderValue::from_static(site),
        );
        let origin = match ask.from {
            Site::Own => Some(self.origin()),
            Site::Foreign => Some(OTHER_SITE.to_owned()),
            Site::AddressBar => None,
        };
        if let Some(origin) = origin {
            if ask.method != Method::GET {
                headers.insert(header::ORIGIN, HeaderValue::from_str(&origin)?);
            }
            headers.insert(
                header::REFERER,
                HeaderValue::from_str(&format!("{origin}/"))?,
            );
        }
        if let Some(token) = &ask.bearer {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| anyhow!("the app gave a token that is not header text"))?,
            );
        }
        let body = match &ask.form {
            None if ask.json.is_some() => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
                Bytes::from(serde_json::to_vec(&ask.json)?)
            }
            Some(form) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                let mut enc = form_urlencoded::Serializer::new(String::new());
                for (k, v) in form {
                    enc.append_pair(k, v);
                }
                Bytes::from(enc.finish())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body))?;
        let url = ask.url.clone();
        let shown = self.scrub(&path_of(&url));
        let timeout = self.timeout;
        let answer = tokio::time::timeout(timeout, async {
            let res = self.client.request(req).await?;
            let (parts, mut body) = res.into_parts();
            // The first BODY_LIMIT bytes; the rest is not read.
            let mut bytes = Vec::new();
            while bytes.len() < BODY_LIMIT {
                let Some(frame) = body.frame().await else {
                    break;
                };
                if let Ok(data) = frame
                    .map_err(|e| anyhow!("reading the body: {e}"))?
                    .into_data()
                {
                    bytes.extend_from_slice(&data);
                }
            }
            bytes.truncate(BODY_LIMIT);
            anyhow::Ok((parts, bytes))
        })
        .await
        .map_err(|_| {
            anyhow!(
                "{} {shown}: no answer in {}s",
                ask.method,
                timeout.as_secs()
            )
        })?
        .map_err(|e| anyhow!("{} {shown}: {}", ask.method, self.scrub(&format!("{e:#}"))))?;
        let (parts, bytes) = answer;
        let exchange = Exchange {
            method: ask.method.clone(),
            url,
            shown,
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        };
        if keep {
            for set in exchange.set_cookies() {
                cookies.take(&set);
            }
        }
        Ok(exchange)
    }

    /// Sends `ask` and follows redirects on the app's origin, as a browser
    /// would (a 301/302/303 after a POST becomes a GET). A 307 or 308 that
    /// would send a form body (a password) to another address is not
    /// followed. Every exchange, in order; the jar is updated along the way.
    pub async fn follow(&self, ask: Ask, cookies: &mut Jar) -> Result<Vec<Exchange>> {
        let mut chain = Vec::new();
        let mut ask = ask;
        for _ in 0..=MAX_REDIRECTS {
            let ex = self.send(&ask, cookies, true).await?;
            let next = match ex.status {
                301 | 302 | 303 | 307 | 308 => ex.location(),
                _ => None,
            };
            let status = ex.status;
            chain.push(ex);
            let Some(next) = next.filter(|u| self.same_origin(u)) else {
                return Ok(chain);
            };
            ask = if matches!(status, 307 | 308) {
                if ask.form.is_some() && next.path() != ask.url.path() {
                    return Ok(chain);
                }
                Ask { url: next, ..ask }
            } else {
                Ask::get(next, Site::Own)
            };
        }
        bail!(
            "more than {MAX_REDIRECTS} redirects from {}",
            chain[0].shown
        )
    }
}

/// A secret as typed, and as a form or URL query encodes it.
pub fn secret_forms(secret: &str) -> Vec<String> {
    if secret.is_empty() {
        return Vec::new();
    }
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    // RFC 3986's unreserved characters left as they are (Python's quote,
    // JavaScript's encodeURIComponent), or every non-alphanumeric encoded.
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut all = vec![
        secret.to_owned(),
        form.clone(),
        form.replace('+', "%20"),
        percent_encoding::utf8_percent_encode(secret, UNRESERVED).to_string(),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        html_escape::encode_text(secret).into_owned(),
        html_escape::encode_double_quoted_attribute(secret).into_owned(),
    ];
    all.sort();
    all.dedup();
    // Longest first, so a shorter form never splits a longer one.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all
}

/// `text` with each of `secrets` replaced by `…`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        out = out.replace(s.as_str(), "…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_blanked_as_typed_and_as_encoded() {
        let forms = secret_forms("p@ss word&1");
        let text = "GET /login?u=a&password=p%40ss+word%261 and p@ss word&1 and \
                    p%40ss%20word%261 and p@ss word&amp;1";
        let out = scrub(text, &forms);
        assert!(!out.contains("p@ss") && !out.contains("p%40ss"), "{out}");
        let tilde = secret_forms("a~b*c");
        assert!(!scrub("x=a~b%2Ac y=a%7Eb%2Ac", &tilde).contains("a~b"));
        assert!(!scrub("x=a~b%2Ac y=a%7Eb%2Ac", &tilde).contains("a%7Eb"));
        assert!(secret_forms("").is_empty());
    }

    #[test]
    fn set_cookie_reads_what_browsers_act_on() {
        let c = SetCookie::parse("session=abc; HttpOnly; Path=/; SameSite=Lax").unwrap();
        assert!(c.http_only && !c.secure && !c.removes);
        assert_eq!(c.same_site.as_deref(), Some("Lax"));
        let gone = SetCookie::parse(
            "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/",
        )
        .unwrap();
        assert!(gone.removes && gone.same_slot(&c));
        let other_path = SetCookie::parse("session=; Max-Age=0; Path=/app").unwrap();
        assert!(other_path.removes && !other_path.same_slot(&c));
        assert_eq!(c.redacted(), "session=…; HttpOnly; Path=/; SameSite=Lax");
        assert!(SetCookie::parse("no equals sign").is_none());
    }

    #[test]
    fn addresses_in_evidence_hide_session_ids() {
        assert_eq!(
            hide_tokens("/app;jsessionid=ABC123?next=%2F&token=xyz&page=2"),
            "/app;jsessionid=…?next=%2F&token=…&page=2"
        );
        assert_eq!(hide_tokens("/login?next=%2F"), "/login?next=%2F");
        assert_eq!(
            hide_tokens("/?signoff-check=second-page&csrf_token=x&accessToken=y"),
            "/?signoff-check=second-page&csrf_token=…&accessToken=…"
        );
        let c = SetCookie::parse("a=1; SameSite=Strict; SameSite=None").unwrap();
        assert_eq!(c.same_site.as_deref(), Some("None"));
    }

    #[test]
    fn the_jar_drops_what_the_app_deletes() {
        let mut jar = Jar::default();
        jar.take(&SetCookie::parse("a=1").unwrap());
        jar.take(&SetCookie::parse("b=2").unwrap());
        jar.take(&SetCookie::parse("a=3").unwrap());
        assert_eq!(jar.get("a"), Some("3"));
        jar.take(&SetCookie::parse("a=; Max-Age=0").unwrap());
        assert_eq!(jar.get("a"), None);
        assert_eq!(jar.header().unwrap(), "b=2");
    }
}
