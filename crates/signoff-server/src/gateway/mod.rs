//! The gateway: signoff's own pages under the prefix, and a reverse proxy
//! for everything else that lets only live sessions through.

mod account;
mod admin;
mod forward_auth;
mod guard;
mod identity_headers;
mod own_body;
pub mod pages;
mod proxy;
pub mod redirect;
pub mod throttle;
mod token_mode;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::uri::Authority;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use signoff::token_mode::Tokens;
use signoff::{
    AccountError, Accounts, Actor, AuditEvent, AuditKind, CookiePolicy, NewSession, Session,
    SessionData, SessionError, SessionHandle, SessionToken, Sessions,
};

pub use guard::Guard;
use proxy::no_store;
use throttle::Throttle;

use crate::config::Settings;

/// The session data key holding the signed-in user's name (sent upstream
/// as `X-Signoff-User`), so no request needs a user lookup.
pub const USER_NAME_KEY: &str = "signoff.user";
/// Largest login or logout form accepted.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// A request with a live, signed-in session.
pub struct Authenticated {
    /// The token the client presented.
    pub token: SessionToken,
    /// Its session.
    pub session: Session,
    /// The user's login name.
    pub user: String,
}

/// Who a proxied or forward-auth request is from.
pub struct Identity {
    /// The user's login name.
    pub user: String,
    /// The session's public handle.
    pub handle: SessionHandle,
    /// With a session cookie: the CSRF token the upstream may put in forms.
    pub csrf: Option<String>,
    /// The request carried a session token in `Authorization`, which the
    /// upstream must not see (like the cookie).
    pub strip_authorization: bool,
}

impl Identity {
    fn of_cookie(auth: &Authenticated) -> Self {
        Self {
            user: auth.user.clone(),
            handle: auth.session.handle,
            csrf: Some(signoff::csrf::token_for(&auth.token)),
            strip_authorization: false,
        }
    }
}

/// The outcome of checking a request's credentials.
enum Who {
    Known(Identity),
    /// No usable session; `stale` if the client sent a cookie anyway.
    Anonymous {
        stale: bool,
    },
    /// A bearer token that is not (or no longer) good, and why.
    BadBearer(String),
    /// The store could not answer: fail closed.
    Unavailable,
}

impl From<Auth> for Who {
    fn from(auth: Auth) -> Self {
        match auth {
            Auth::SignedIn(a) => Who::Known(Identity::of_cookie(&a)),
            Auth::Anonymous { stale } => Who::Anonymous { stale },
            Auth::Unavailable => Who::Unavailable,
        }
    }
}

enum Auth {
    SignedIn(Box<Authenticated>),
    /// No usable session; `stale` if the client sent a cookie anyway.
    Anonymous {
        stale: bool,
    },
    /// The store could not answer: fail closed.
    Unavailable,
}

/// Everything the handlers share.
pub struct Gateway {
    settings: Arc<Settings>,
    sessions: Sessions,
    /// The same engine without the local cache: for the guard's status
    /// check, which must see a session ended anywhere at once.
    uncached: Sessions,
    accounts: Accounts,
    cookie: CookiePolicy,
    client: Client<HttpConnector, Body>,
    /// `None` in forward-auth-only mode.
    upstream_authority: Option<Authority>,
    guard: Guard,
    throttle: Throttle,
    metrics: crate::metrics::Sources,
    counters: crate::metrics::Counters,
    /// Token mode, if on.
    tokens: Option<Arc<Tokens>>,
}

impl Gateway {
    /// A gateway over these parts. `cookie` must match the policy inside
    /// `sessions`.
    pub fn new(settings: Settings, sessions: Sessions, accounts: Accounts) -> anyhow::Result<Self> {
        let upstream_authority = match &settings.upstream {
            Some(uri) => Some(
                uri.authority()
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("upstream has no host"))?,
            ),
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(connector);
        let guard = Guard::new(&settings.prefix);
        if settings.inject_guard {
            tracing::info!(
                csp_source = guard.csp_source(),
                "injecting the back-button guard into upstream HTML; a CSP in a <meta> tag must allow this hash"
            );
        }
        Ok(Self {
            cookie: sessions.policy().cookie().clone(),
            guard,
            throttle: Throttle::new(settings.login.clone()),
            settings: Arc::new(settings),
            uncached: sessions.clone(),
            sessions,
            accounts,
            client,
            upstream_authority,
            metrics: crate::metrics::Sources::default(),
            counters: crate::metrics::Counters::default(),
            tokens: None,
        })
    }

    /// Where `PREFIX/metrics` (served with `--metrics`) reads its figures.
    pub fn with_metrics(mut self, sources: crate::metrics::Sources) -> Self {
        self.metrics = sources;
        self
    }

    /// The engine over the store itself, bypassing the local cache, that
    /// `PREFIX/status` asks (by default the cached one).
    pub fn with_uncached_sessions(mut self, uncached: Sessions) -> Self {
        self.uncached = uncached;
        self
    }

    /// Turns on token mode (`PREFIX/api/login`, `/token`, … and bearer
    /// access tokens).
    pub fn with_tokens(mut self, tokens: Option<Arc<Tokens>>) -> Self {
        self.tokens = tokens;
        self
    }

    /// Counts a store failure for the metrics.
    fn count_store_error(&self) {
        self.counters
            .store_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The axum app: own routes, then the proxy for everything else.
    pub fn router(self: Arc<Self>) -> Router {
        let p = self.settings.prefix.clone();
        let within = self.settings.connections.client_timeout;
        let own = Router::new()
            .route(&format!("{p}/login"), get(login_page).post(login_submit))
            .route(&format!("{p}/logout"), get(logout_page).post(logout))
            .route(&format!("{p}/signed-out"), get(signed_out))
            .route(&format!("{p}/status"), get(status))
            .route(&format!("{p}/auth"), any(forward_auth::check))
            .route(&format!("{p}/guard.js"), get(guard_js))
            .route(&format!("{p}/signoff.css"), get(pages::stylesheet))
            .route(&format!("{p}/healthz"), get(healthz))
            .route(&format!("{p}/metrics"), get(metrics))
            .route(&format!("{p}/sessions"), get(account::sessions_page))
            .route(&format!("{p}/sessions/end"), post(account::end_one))
            .route(
                &format!("{p}/sessions/end-others"),
                post(account::end_others),
            )
            .route(&format!("{p}/sessions/end-all"), post(account::end_all))
            .route(
                &format!("{p}/reauth"),
                get(account::reauth_page).post(account::reauth_submit),
            )
            .route(
                &format!("{p}/password"),
                get(account::password_page).post(account::password_submit),
            )
            .route(&format!("{p}/api/login"), post(token_mode::api_login))
            .route(&format!("{p}/api/logout"), post(token_mode::api_logout))
            .route(&format!("{p}/token"), post(token_mode::token))
            .route(&format!("{p}/revoke"), post(token_mode::revoke))
            .route(&format!("{p}/introspect"), post(token_mode::introspect))
            .route(&format!("{p}/jwks.json"), get(token_mode::jwks))
            .route(&format!("{p}/{{*rest}}"), any(not_found))
            .route(&p, any(not_found))
            .nest(&format!("{p}/admin"), admin::router(&self))
            .layer(middleware::map_request(move |req: Request| async move {
                own_body::with_deadline(req, within)
            }))
            // `layer`, not `route_layer`: 405s for a wrong method get it too.
            .layer(middleware::map_response(own_response));
        let hsts = self.settings.hsts.clone();
        own.fallback(proxy)
            .layer(middleware::map_response(move |response: Response| {
                let hsts = hsts.clone();
                async move { with_hsts(response, hsts) }
            }))
            .layer(middleware::from_fn(access_log))
            .with_state(self)
    }

    fn session_cookie<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie.name)
            .map(|(_, value)| value.trim().trim_matches('"'))
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Auth {
        self.validate(self.session_cookie(headers)).await
    }

    /// Checks a presented session token (cookie value or bearer token).
    async fn validate(&self, raw: Option<&str>) -> Auth {
        self.validate_in(&self.sessions, raw).await
    }

    /// [`Gateway::validate`] with a given engine (cached or not).
    async fn validate_in(&self, sessions: &Sessions, raw: Option<&str>) -> Auth {
        let auth = self.check_token(sessions, raw).await;
        if matches!(auth, Auth::Anonymous { .. }) {
            // A connection pinned by a session that has ended is pinned no more.
            crate::listener::note_no_live_session();
        }
        auth
    }

    async fn check_token(&self, sessions: &Sessions, raw: Option<&str>) -> Auth {
        let Some(raw) = raw else {
            return Auth::Anonymous { stale: false };
        };
        let Ok(token) = SessionToken::parse(raw) else {
            return Auth::Anonymous { stale: true };
        };
        match sessions.validate(token.expose()).await {
            Ok(session) => match session.data.get(USER_NAME_KEY) {
                Some(user) if session.user_id.is_some() => {
                    crate::listener::note_live_session();
                    Auth::SignedIn(Box::new(Authenticated {
                        user: user.clone(),
                        token,
                        session,
                    }))
                }
                _ => Auth::Anonymous { stale: true },
            },
            Err(SessionError::Store(e)) => {
                self.count_store_error();
                tracing::error!(error = %e, "session store unavailable; refusing the request");
                Auth::Unavailable
            }
            Err(_) => Auth::Anonymous { stale: true },
        }
    }

    /// `Set-Cookie` issuing a session token.
    fn set_cookie(&self, token: &SessionToken) -> HeaderValue {
        self.cookie_header(token.expose(), "")
    }

    /// `Set-Cookie` expiring the session cookie, with the same attributes
    /// so the browser replaces the very cookie it holds.
    fn expire_cookie(&self) -> HeaderValue {
        self.cookie_header("", "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    }

    fn cookie_header(&self, value: &str, expiry: &str) -> HeaderValue {
        let c = &self.cookie;
        let secure = if c.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path={}{expiry}; HttpOnly; SameSite={}{secure}",
            c.name,
            c.path,
            c.same_site.as_str()
        ))
        .unwrap_or_else(|_| unreachable!("cookie names, paths and tokens are checked ASCII"))
    }

    fn is_trusted_proxy(&self, ip: &IpAddr) -> bool {
        is_trusted(ip, &self.settings.trusted_proxies)
    }

    /// The client's address: the peer, or, when the peer is a trusted
    /// proxy, the rightmost untrusted `X-Forwarded-For` entry.
    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(peer, headers, &self.settings.trusted_proxies)
    }

    fn same_origin(&self, headers: &HeaderMap) -> Intent {
        // `Origin: null` (privacy-sensitive contexts, `no-referrer` pages)
        // says nothing either way; Sec-Fetch-Site then decides.
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|o| *o != "null");
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if matches!(site, Some("cross-site" | "same-site")) {
            return Intent::Foreign;
        }
        match origin {
            Some(o) if o.eq_ignore_ascii_case(&self.settings.public_origin) => Intent::SameOrigin,
            Some(_) => Intent::Foreign,
            None if site == Some("same-origin") => Intent::SameOrigin,
            None => Intent::Unknown,
        }
    }

    /// The host (and port) of the public URL.
    fn public_host(&self) -> &str {
        let origin = &self.settings.public_origin;
        origin.split_once("://").map_or(origin.as_str(), |(_, h)| h)
    }

    /// The answer to a request without a live session: browsers (`html`)
    /// are sent to the login page, other clients get 401. Either way a
    /// stale cookie is expired.
    fn sign_in_first(&self, html: bool, next: &str, stale: bool) -> Response {
        let mut response = if html {
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&self.login_url(next)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        } else {
            let mut r = (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, self.challenge());
            r
        };
        no_store(response.headers_mut());
        if stale {
            response
                .headers_mut()
                .append(header::SET_COOKIE, self.expire_cookie());
        }
        response
    }

    /// What logout answers: 303 to the signed-out page, the cookie
    /// expired, and `Clear-Site-Data`.
    fn signed_out_response(&self) -> Response {
        let mut r = StatusCode::SEE_OTHER.into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("{}/signed-out", self.settings.prefix)) {
            h.insert(header::LOCATION, v);
        }
        h.insert(header::SET_COOKIE, self.expire_cookie());
        if let Some(csd) = &self.settings.clear_site_data {
            if let Ok(v) = HeaderValue::from_str(csd) {
                h.insert("clear-site-data", v);
            }
        }
        r
    }

    /// Records an audit event, if the engine has an audit log.
    async fn audit(&self, event: AuditEvent) {
        if let Some(audit) = self.sessions.audit() {
            audit.record(event).await;
        }
    }

    /// Records a failed sign-in. The name typed is kept only if an account
    /// has it (a password typed into the name field is not); a wrong
    /// password and an unknown name are told apart here, never to the client.
    async fn record_login_failure(&self, name: &str, ip: IpAddr, disabled: bool) {
        if self.sessions.audit().is_none() {
            return;
        }
        let user = self.accounts.user(name).await.ok();
        let reason = match (&user, disabled) {
            (_, true) => "disabled",
            (Some(_), false) => "wrong_password",
            (None, false) => "unknown_user",
        };
        let event = AuditEvent::new(AuditKind::LoginFailed, self.sessions.now())
            .user(
                user.as_ref().map(|u| &u.id),
                user.as_ref().map(|u| u.name.as_str()),
            )
            .reason(reason)
            .ip(ip);
        self.audit(event).await;
    }

    fn challenge(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "Signoff realm=\"signoff\", login=\"{}/login\"",
            self.settings.prefix
        ))
        .unwrap_or_else(|_| unreachable!("the prefix is checked ASCII"))
    }

    fn login_url(&self, next: &str) -> String {
        let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        format!("{}/login?next={next}", self.settings.prefix)
    }

    fn error_page(&self, status: StatusCode, heading: &str, text: &str) -> Response {
        let mut r = pages::message(
            status,
            &pages::MessagePage {
                prefix: &self.settings.prefix,
                heading,
                text,
            },
        );
        no_store(r.headers_mut());
        r
    }

    fn bad_gateway(&self) -> Response {
        self.error_page(
            StatusCode::BAD_GATEWAY,
            "The application is not reachable",
            "The application behind this gateway is not answering. Try again in a moment.",
        )
    }

    fn unavailable(&self) -> Response {
        let mut r = self.error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "Sessions cannot be checked right now. Try again in a moment.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        r
    }

    /// Whether `path` needs no session: it is one of the public paths and
    /// can mean nothing else to the upstream ([`is_plain_path`]).
    fn is_public(&self, path: &str) -> bool {
        if self.settings.public_paths.is_empty() || !is_plain_path(path) {
            return false;
        }
        self.settings.public_paths.iter().any(|p| {
            if p.len() > 1 && p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == p
            }
        })
    }
}

/// Whether a request path means the same to every upstream, however it
/// decodes and normalises it: only when it holds no dot segment, empty
/// segment, backslash or `;` (`/static/..;/admin` in Java servers),
/// neither as it is nor once percent-decoded, and every escape is a plain
/// `%XX` of a printable ASCII character other than `%` (so no double
/// encoding, no IIS `%u002e`, no overlong UTF-8 such as `%c0%ae`, no
/// full-width dots). Anything else may reach another path upstream, so it
/// is never public; it still works for a signed-in user.
pub fn is_plain_path(path: &str) -> bool {
    let raw = path.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) else {
                return false;
            };
            let byte = (hi * 16 + lo) as u8;
            // An escaped separator or dot means something else to each server.
            if !(0x20..0x7f).contains(&byte) || b"%/\\.;?#".contains(&byte) {
                return false;
            }
            decoded.push(byte);
            i += 3;
        } else {
            if !(0x21..0x7f).contains(&b) {
                return false;
            }
            decoded.push(b);
            i += 1;
        }
    }
    if decoded.first() != Some(&b'/') || decoded.iter().any(|b| matches!(b, b'\\' | b';')) {
        return false;
    }
    let segments: Vec<&[u8]> = decoded[1..].split(|b| *b == b'/').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(n, segment)| {
        // Only the last segment may be empty: `/static/` is a directory.
        if segment.is_empty() {
            n == last
        } else {
            *segment != b"." && !segment.starts_with(b"..")
        }
    })
}

/// Whether `ip` (IPv4-mapped addresses as IPv4) is one of the proxies.
fn is_trusted(ip: &IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the rightmost `X-Forwarded-For` entry that is not a trusted proxy.
/// Walking from the right (the entries our proxies appended) means a client
/// cannot choose its own address; an entry that is not an address ends the
/// walk at the last trusted hop.
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(&client, trusted) {
        return client;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in entries.iter().rev() {
        match forwarded_address(entry) {
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client, trusted) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// The address in one `X-Forwarded-For` entry: `203.0.113.5`, `2001:db8::1`,
/// and, as some proxies (Azure Application Gateway, IIS) write them, with a
/// port (`203.0.113.5:40001`, `[2001:db8::1]:443`) or brackets alone.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[derive(Debug, PartialEq, Eq)]
enum Intent {
    /// Origin or Sec-Fetch-Site says this origin.
    SameOrigin,
    /// A browser says another site sent it.
    Foreign,
    /// No such header: not a browser, or an old one.
    Unknown,
}

/// Every answer on an HTTPS site: `Strict-Transport-Security`, when on
/// (it replaces the upstream's own).
fn with_hsts(mut response: Response, hsts: Option<HeaderValue>) -> Response {
    if let Some(value) = hsts {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    response
}

/// Every response of signoff's own routes: no-store (but a [`pages::StaticAsset`]), and nosniff.
async fn own_response(mut response: Response) -> Response {
    if response.extensions().get::<pages::StaticAsset>().is_none() {
        no_store(response.headers_mut());
    }
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// One line per request: method, path (never the query, which may hold
/// secrets), status, latency; at `info`, except granted forward-auth
/// checks ([`QuietLog`]), which are `debug`.
async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let path = path.chars().take(200).collect::<String>();
    let status = response.status().as_u16();
    let latency_us = start.elapsed().as_micros() as u64;
    if response.extensions().get::<QuietLog>().is_some() {
        tracing::debug!(target: "signoff::access", %method, %path, status, latency_us);
    } else {
        tracing::info!(target: "signoff::access", %method, %path, status, latency_us);
    }
    response
}

/// Marks a response whose access-log line is only worth `debug`: granted
/// forward-auth checks, which the proxy in front logs as the request itself.
#[derive(Clone, Copy)]
struct QuietLog;

type AppState = State<Arc<Gateway>>;

fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// The token in `Authorization: Bearer`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

async fn proxy(State(gw): AppState, req: Request) -> Response {
    if gw.upstream_authority.is_none() {
        return gw.error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "This signoff serves forward-auth only; there is no application behind it.",
        );
    }
    let peer = peer_ip(&req);
    if gw.is_public(req.uri().path()) {
        return gw.forward(req, peer, None).await;
    }
    let who = match bearer(req.headers()) {
        Some(raw) if gw.tokens.is_some() => gw.identify_bearer(raw).await,
        _ => Who::from(gw.authenticate(req.headers()).await),
    };
    match who {
        Who::Known(identity) => gw.forward(req, peer, Some(&identity)).await,
        Who::Unavailable => gw.unavailable(),
        Who::BadBearer(why) => gw.invalid_token(&why),
        Who::Anonymous { stale } => {
            let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            gw.sign_in_first(wants_html(req.headers()), next, stale)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page(
    State(gw): AppState,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    let next = redirect::next_or_root(q.next.as_deref());
    pages::login(
        StatusCode::OK,
        &pages::LoginPage {
            prefix: &gw.settings.prefix,
            next,
            username: "",
            error: None,
        },
    )
}

#[derive(Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// Reads a urlencoded form of at most [`MAX_FORM_BYTES`].
async fn read_form<T: for<'de> Deserialize<'de>>(req: Request) -> Result<T, StatusCode> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let bytes = own_body::read(req.into_body(), MAX_FORM_BYTES)
        .await
        .map_err(|e| match e {
            own_body::BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            own_body::BodyError::TooSlow => StatusCode::REQUEST_TIMEOUT,
        })?;
    serde_urlencoded::from_bytes(&bytes).map_err(|_| StatusCode::BAD_REQUEST)
}

fn form_error(gw: &Gateway, status: StatusCode) -> Response {
    let text = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The form is too large.",
        StatusCode::REQUEST_TIMEOUT => "The form took too long to arrive.",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "Expected an HTML form (application/x-www-form-urlencoded)."
        }
        _ => "The form could not be read.",
    };
    gw.error_page(status, "Bad request", text)
}

async fn login_submit(State(gw): AppState, req: Request) -> Response {
    let client_ip = gw.client_ip(peer_ip(&req), req.headers());
    let headers = req.headers().clone();
    // `Origin: null` without Sec-Fetch-Site may be an old browser on an
    // attacker's no-referrer page: refuse it here (login CSRF).
    let null_origin = headers.get(header::ORIGIN).is_some_and(|o| o == "null")
        && !headers.contains_key("sec-fetch-site");
    if gw.same_origin(&headers) == Intent::Foreign || null_origin {
        return gw.error_page(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "This sign-in form was sent from another site.",
        );
    }
    let form: LoginForm = match read_form(req).await {
        Ok(f) => f,
        Err(status) => return form_error(&gw, status),
    };
    let next = redirect::next_or_root(form.next.as_deref()).to_owned();
    let prefix = &gw.settings.prefix;
    let retry = |status: StatusCode, message: &str| {
        pages::login(
            status,
            &pages::LoginPage {
                prefix,
                next: &next,
                username: &form.username,
                error: Some(message),
            },
        )
    };
    let previous = gw.session_cookie(&headers);
    match gw
        .sign_in(
            client_ip,
            &headers,
            &form.username,
            &form.password,
            previous,
        )
        .await
    {
        Ok((_, issued)) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&next) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::SET_COOKIE, gw.set_cookie(&issued.token));
            r
        }
        Err(SignInError::Throttled(secs)) => {
            let mut r = retry(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many failed attempts. Try again in {secs} seconds."),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        // A disabled account answers like a wrong password: the form must
        // not confirm that a password is right.
        Err(SignInError::Refused) => {
            retry(StatusCode::UNAUTHORIZED, "Wrong user name or password.")
        }
        Err(SignInError::Unavailable) => retry(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is not possible right now. Try again in a moment.",
        ),
    }
}

/// Why [`Gateway::sign_in`] made no session.
enum SignInError {
    /// Too many failures: wait this many seconds (nothing was checked).
    Throttled(u64),
    /// A wrong name or password, or a disabled account: one answer for all.
    Refused,
    /// The store could not answer.
    Unavailable,
}

impl Gateway {
    /// The sign-in the form and `api/login` share: the failure delays, the
    /// password check (a disabled account fails like a wrong password), the
    /// audit trail, and a new session that replaces `previous` (so a token
    /// planted before sign-in is worthless after it).
    async fn sign_in(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
        username: &str,
        password: &str,
        previous: Option<&str>,
    ) -> Result<(signoff::User, signoff::Issued), SignInError> {
        if let Err(wait) = self
            .throttle
            .attempt(client_ip, username, std::time::Instant::now())
        {
            tracing::info!(target: "signoff::auth", ip = %client_ip, "login refused: too many failures");
            return Err(SignInError::Throttled(wait.as_secs().max(1)));
        }
        let user = match self.accounts.authenticate(username, password).await {
            Ok(user) => user,
            Err(e @ (AccountError::InvalidCredentials | AccountError::Disabled)) => {
                tracing::info!(target: "signoff::auth", ip = %client_ip, "login failed");
                self.record_login_failure(username, client_ip, matches!(e, AccountError::Disabled))
                    .await;
                return Err(SignInError::Refused);
            }
            Err(e) => {
                // Not the client's failure: give the attempt back.
                self.throttle.succeeded(client_ip, username);
                self.count_store_error();
                tracing::error!(error = %e, "login could not be checked");
                return Err(SignInError::Unavailable);
            }
        };
        self.throttle.succeeded(client_ip, username);
        let mut data = SessionData::new();
        data.insert(USER_NAME_KEY.to_owned(), user.name.clone());
        let mut new = NewSession::for_user(user.id.clone())
            .ip(client_ip.to_string())
            .data(data);
        if let Some(ua) = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            new = new.user_agent(truncate(ua, signoff::MAX_USER_AGENT_BYTES));
        }
        let issued = match self.sessions.login(previous, new).await {
            Ok(issued) => issued,
            Err(e) => {
                self.count_store_error();
                tracing::error!(error = %e, "could not create a session");
                return Err(SignInError::Unavailable);
            }
        };
        tracing::info!(target: "signoff::auth", user = %user.name, session = %issued.session.handle, "login");
        self.audit(
            AuditEvent::new(AuditKind::LoginSucceeded, self.sessions.now())
                .user(Some(&user.id), Some(&user.name))
                .session(&issued.session.handle)
                .by(Actor::User)
                .ip(client_ip),
        )
        .await;
        Ok((user, issued))
    }
}

async fn logout_page(State(gw): AppState, headers: HeaderMap) -> Response {
    let csrf = gw
        .session_cookie(&headers)
        .and_then(|t| SessionToken::parse(t).ok())
        .map(|t| signoff::csrf::token_for(&t));
    pages::logout(&pages::LogoutPage {
        prefix: &gw.settings.prefix,
        csrf: csrf.as_deref(),
    })
}

#[derive(Default, Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

async fn logout(State(gw): AppState, req: Request) -> Response {
    let headers = req.headers().clone();
    let token = gw
        .session_cookie(&headers)
        .and_then(|t| SessionToken::parse(t).ok());
    let header_csrf = headers
        .get("x-signoff-csrf")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let has_body = headers.contains_key(header::CONTENT_TYPE);
    let form: LogoutForm = if has_body {
        match read_form(req).await {
            Ok(f) => f,
            Err(status) => return form_error(&gw, status),
        }
    } else {
        LogoutForm::default()
    };
    let csrf_ok = token.as_ref().is_some_and(|t| {
        [form.csrf.as_deref(), header_csrf.as_deref()]
            .into_iter()
            .flatten()
            .any(|c| signoff::csrf::verify(t, c))
    });
    let intent = gw.same_origin(&headers);
    if intent == Intent::Foreign || !(csrf_ok || intent == Intent::SameOrigin) {
        tracing::warn!(target: "signoff::auth", "refused a sign-out without proof of intent");
        return gw.error_page(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "This sign-out request did not come from this site, so nothing was changed.",
        );
    }
    if let Some(token) = &token {
        if let Err(e) = gw.sessions.logout(token.expose()).await {
            gw.count_store_error();
            tracing::error!(error = %e, "logout failed: the store is unavailable");
            return gw.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-out failed",
                "Your session could not be ended because the session store is unavailable. \
                 You are still signed in. Try again in a moment.",
            );
        }
        tracing::info!(target: "signoff::auth", "logout");
    }
    gw.signed_out_response()
}

async fn signed_out(State(gw): AppState) -> Response {
    pages::signed_out(&pages::SignedOutPage {
        prefix: &gw.settings.prefix,
    })
}

/// For the guard: is this browser's session alive? No secrets in the answer.
/// Read from the store, never the cache: a page restored by Back right
/// after a sign-out elsewhere must not be kept on a cached answer.
async fn status(State(gw): AppState, headers: HeaderMap) -> Response {
    let auth = gw
        .validate_in(&gw.uncached, gw.session_cookie(&headers))
        .await;
    let (code, body) = match auth {
        Auth::SignedIn(_) => (StatusCode::OK, "{\"signed_in\":true}"),
        Auth::Anonymous { .. } => (StatusCode::UNAUTHORIZED, "{\"signed_in\":false}"),
        Auth::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "{\"signed_in\":null}"),
    };
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn guard_js(State(gw): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        gw.guard.script().to_owned(),
    )
        .into_response()
}

async fn metrics(State(gw): AppState) -> Response {
    if !gw.settings.metrics {
        return not_found(State(gw)).await;
    }
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&gw.metrics, &gw.counters),
    )
        .into_response();
    no_store(r.headers_mut());
    r
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn not_found(State(gw): AppState) -> Response {
    gw.error_page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right() {
        let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let outsider: IpAddr = "192.0.2.50".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Untrusted peers are the client, whatever they claim.
        assert_eq!(
            client_ip(outsider, &xff(&["203.0.113.9"]), &proxies),
            outsider
        );
        // A trusted proxy's last appended entry wins over client-sent ones.
        assert_eq!(
            client_ip(proxy, &xff(&["6.6.6.6, 203.0.113.9"]), &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(proxy, &xff(&["6.6.6.6", "203.0.113.9, 10.0.0.2"]), &proxies),
            ip("203.0.113.9")
        );
        // Garbage cannot cut the list short in the client's favour.
        assert_eq!(
            client_ip(proxy, &xff(&["6.6.6.6, x, 203.0.113.9"]), &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(proxy, &xff(&["6.6.6.6, x"]), &proxies), proxy);
        assert_eq!(client_ip(proxy, &xff(&[]), &proxies), proxy);
        // Entries with a port (Azure Application Gateway, IIS) are the
        // address, not garbage that ends the walk at the proxy.
        for entry in [
            "203.0.113.5:40001",
            "[2001:db8::1]:443",
            "[2001:db8::1]",
            " 203.0.113.5 ",
        ] {
            let expected = if entry.contains("2001") {
                ip("2001:db8::1")
            } else {
                ip("203.0.113.5")
            };
            assert_eq!(
                client_ip(proxy, &xff(&[&format!("6.6.6.6, {entry}")]), &proxies),
                expected,
                "{entry}"
            );
        }
        // A trusted proxy with a port is still walked past.
        assert_eq!(
            client_ip(proxy, &xff(&["203.0.113.5:1, 10.0.0.2:8080"]), &proxies),
            ip("203.0.113.5")
        );
        for garbage in [
            "203.0.113.5:x",
            "[2001:db8::1",
            "2001:db8::1]:443",
            "unknown",
        ] {
            assert_eq!(
                client_ip(proxy, &xff(&[garbage]), &proxies),
                proxy,
                "{garbage}"
            );
        }
        // IPv4-mapped peers match IPv4 ranges.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &xff(&["203.0.113.9"]), &proxies),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn only_plain_paths_can_be_public() {
        for plain in [
            "/",
            "/public",
            "/static/",
            "/static/app.js",
            "/a%20b",
            "/.well-known/x",
            "/a/b.c",
        ] {
            assert!(is_plain_path(plain), "{plain}");
        }
        for tricky in [
            // Dot segments, plain and encoded in every spelling.
            "/static/../admin",
            "/static/./x",
            "/static/%2e%2e/admin",
            "/static/%2E./admin",
            "/static/.%2e/admin",
            // Overlong UTF-8 and IIS %u forms of a dot or slash.
            "/static/%c0%ae%c0%ae/admin",
            "/static/%c0%2e%c0%2e/admin",
            "/static/%e0%80%ae/admin",
            "/static/%c0%af",
            "/static/%u002e%u002e/admin",
            "/static/%U002E",
            // Full-width dots and slashes, which some servers fold.
            "/static/%ef%bc%8e%ef%bc%8e/admin",
            "/static/%ef%bc%8fadmin",
            // Encoded separators, double encoding, broken escapes.
            "/static%2fadmin",
            "/static/%5c..%5cadmin",
            "/static/%252e%252e/admin",
            "/static/%2",
            "/static/%zz",
            "/static/%00",
            "/static/%0a",
            "/static/%3b/admin",
            // Separators that Java and Windows servers honour.
            "/static/..;/admin",
            "/static;/x",
            "/static\\..\\admin",
            "//static/x",
            "/static//x",
            "static/x",
            "",
        ] {
            assert!(!is_plain_path(tricky), "{tricky}");
        }
    }
}
