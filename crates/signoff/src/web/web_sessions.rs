//! [`WebSessions`]: the sessions of one axum app, its [`SessionLayer`],
//! and sign-in and sign-out answered completely right.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::csrf_form::FormRefusal;
use super::signed_in::{Auth, Authenticated, NotSignedIn};
use super::{cookies, guard, no_store, origin, redirect, wants_html, Gate, GateRef};
use crate::session::Early;
use crate::{
    Deployment, NewSession, Session, SessionError, SessionToken, Sessions, UserId, SITE_KEY,
};

/// Where an app's pages are, and what it trusts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebOptions {
    /// The login page ([`SignedIn`](super::SignedIn) sends browsers there
    /// with `?next=`). Default `/login`.
    pub login_path: String,
    /// Where a sign-in goes when its `next` is missing or not a path on
    /// this origin. Default `/`.
    pub after_sign_in: String,
    /// Where a sign-out sends the browser. Default: the login page.
    pub after_sign_out: Option<String>,
    /// Where [`WebSessions::routes`] serve `guard.js` and `status`.
    /// Default `/.signoff`.
    pub prefix: String,
    /// The origin forms must come from (`https://app.example`); by default
    /// the request's own (its `Host`, `https` when the cookie is `Secure`).
    pub public_origin: Option<String>,
    /// The proxies whose `X-Forwarded-For` entries are believed. Default:
    /// none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The `Clear-Site-Data` a sign-out sends. Default
    /// `"cache", "cookies", "storage"`.
    pub clear_site_data: String,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            login_path: "/login".to_owned(),
            after_sign_in: "/".to_owned(),
            after_sign_out: None,
            prefix: "/.signoff".to_owned(),
            public_origin: None,
            trusted_proxies: Vec::new(),
            clear_site_data: "\"cache\", \"cookies\", \"storage\"".to_owned(),
        }
    }
}

/// The sessions of one axum app: the [`Gate`] its extractors use.
#[derive(Clone)]
pub struct WebSessions(Arc<Inner>);

struct Inner {
    sessions: Sessions,
    uncached: Sessions,
    options: WebOptions,
}

impl WebSessions {
    /// The sessions of a [`Deployment`], with the default options.
    pub fn new(deployment: &Deployment) -> Self {
        Self::with_options(deployment, WebOptions::default())
    }

    /// The sessions of a [`Deployment`].
    pub fn with_options(deployment: &Deployment, options: WebOptions) -> Self {
        Self::of(
            deployment.sessions.clone(),
            deployment.uncached.clone(),
            options,
        )
    }

    /// Over engines of your own: `sessions` for every request, `uncached`
    /// (the same store without a local cache) for the guard's status
    /// check. With a single engine, pass it twice.
    pub fn of(sessions: Sessions, uncached: Sessions, mut options: WebOptions) -> Self {
        if let Some(origin) = &mut options.public_origin {
            origin.truncate(origin.trim_end_matches('/').len());
        }
        Self(Arc::new(Inner {
            sessions,
            uncached,
            options,
        }))
    }

    /// The engine.
    pub fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }

    /// The layer: checks each request's session once, so the extractors
    /// behind it ask nothing more of the store, and makes every answer to
    /// a request that carried a session cookie `no-store`. Put it after
    /// the routes (`router.layer(web.layer())`).
    pub fn layer(&self) -> SessionLayer {
        SessionLayer { web: self.clone() }
    }

    /// `{prefix}/guard.js` (the back-button guard's script; put
    /// `<script src="/.signoff/guard.js"></script>` in private pages) and
    /// `{prefix}/status` (what it asks: 200 while the session lives, read
    /// from the store itself, never the cache).
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let prefix = &self.0.options.prefix;
        let script: Arc<str> =
            guard::script(&format!("{prefix}/status"), &self.0.options.login_path).into();
        let web = self.clone();
        Router::new()
            .route(
                &format!("{prefix}/guard.js"),
                get(move || {
                    let script = script.clone();
                    async move {
                        (
                            [
                                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                                (header::CACHE_CONTROL, "no-cache"),
                            ],
                            script.to_string(),
                        )
                    }
                }),
            )
            .route(
                &format!("{prefix}/status"),
                get(move |headers: HeaderMap| {
                    let web = web.clone();
                    async move { web.status(&headers).await }
                }),
            )
    }

    async fn status(&self, headers: &HeaderMap) -> Response {
        let auth = self.0.validate(&self.0.uncached, headers).await;
        let (code, body) = match auth {
            Auth::SignedIn(_) => (StatusCode::OK, "{\"signed_in\":true}"),
            Auth::Anonymous { .. } => (StatusCode::UNAUTHORIZED, "{\"signed_in\":false}"),
            Auth::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "{\"signed_in\":null}"),
        };
        let mut r = (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        no_store(r.headers_mut());
        r
    }

    /// Signs in the user `id` (login name `name`), after the app has checked
    /// their password (with [`Accounts::authenticate`](crate::Accounts),
    /// feature `accounts`, or its own): a new
    /// session (the one the browser had, if any, is ended: a token planted
    /// before sign-in is worthless after it), its cookie, and a 303 to
    /// `next` if it is a path on this origin (else
    /// [`WebOptions::after_sign_in`]). `no-store`. When the store cannot
    /// answer, 503 and nobody is signed in.
    pub async fn sign_in(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        id: &UserId,
        name: &str,
        next: Option<&str>,
    ) -> Response {
        match self.open_session(headers, client, id, name).await {
            Ok(issued) => self.signed_in(&issued, next),
            Err(refusal) => refusal,
        }
    }

    /// [`WebSessions::sign_in`] for a user of [`Accounts`](crate::Accounts)
    /// (feature `accounts`), as [`Accounts::authenticate`](crate::Accounts)
    /// returned them: once the session exists, the account is read again,
    /// and if it was disabled, or its password or groups changed, while the
    /// password was being checked, the new session is ended and the
    /// sign-in refused (403): a disable can never miss a sign-in under way.
    #[cfg(feature = "accounts")]
    pub async fn sign_in_account(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        accounts: &crate::Accounts,
        user: &crate::User,
        next: Option<&str>,
    ) -> Response {
        let issued = match self
            .open_session(headers, client, &user.id, &user.name)
            .await
        {
            Ok(issued) => issued,
            Err(refusal) => return refusal,
        };
        let refusal = match accounts.still_signs_in(user).await {
            Ok(true) => return self.signed_in(&issued, next),
            Ok(false) => {
                tracing::info!(target: "signoff::auth", user = %user.name, "sign-in refused: the account changed while it was checked");
                let mut r = (
                    StatusCode::FORBIDDEN,
                    "This account changed while you were signing in (it was disabled, or its \
                     password changed). Sign in again, or ask the site's operator.\n",
                )
                    .into_response();
                no_store(r.headers_mut());
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "sign-in could not be checked: the store is unavailable");
                unavailable("Sign-in failed: the store is unavailable. Try again in a moment.")
            }
        };
        if let Err(e) = self
            .0
            .sessions
            .end(issued.token.expose(), crate::Actor::Policy)
            .await
        {
            tracing::error!(error = %e, "could not end a session whose account changed during sign-in");
        }
        refusal
    }

    /// The new session of a sign-in, or the answer when it cannot be made.
    async fn open_session(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        id: &UserId,
        name: &str,
    ) -> Result<crate::Issued, Response> {
        let inner = &self.0;
        let mut new = NewSession::for_user(id.clone())
            .user_name(name)
            .ip(client.to_string());
        if let Some(ua) = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            new = new.user_agent(ua);
        }
        let previous = cookies::read(headers, &inner.sessions.policy().cookie().name);
        match inner.sessions.login(previous, new).await {
            Ok(issued) => {
                tracing::info!(target: "signoff::auth", user = %name, session = %issued.session.handle, "login");
                Ok(issued)
            }
            Err(SessionError::Store(e)) => {
                tracing::error!(error = %e, "sign-in failed: the session store is unavailable");
                Err(unavailable(
                    "Sign-in failed: the session store is unavailable. Try again in a moment.",
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, user = %name, "sign-in failed");
                let mut r = (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Sign-in failed. Try again; if it keeps failing, tell the site's operator.\n",
                )
                    .into_response();
                no_store(r.headers_mut());
                Err(r)
            }
        }
    }

    /// The answer to a sign-in that made `issued`: its cookie, and a 303 to
    /// `next` if it is a path on this origin.
    fn signed_in(&self, issued: &crate::Issued, next: Option<&str>) -> Response {
        let inner = &self.0;
        let to = next
            .and_then(redirect::safe_next)
            .unwrap_or(&inner.options.after_sign_in);
        let mut r = see_other(to);
        r.headers_mut()
            .insert(header::SET_COOKIE, cookies::issue(&inner.sessions, issued));
        r
    }

    /// Signs out the browser that sent `headers`: its session record is
    /// deleted (on every node: the revocation bus tells the others), the
    /// cookie expired with the attributes it was set with,
    /// `Clear-Site-Data` sent, and a 303 to [`WebOptions::after_sign_out`].
    /// `no-store`. Answer it only to a [`CsrfForm`](super::CsrfForm) (a
    /// POST shown to come from this site): never to a GET. When the store
    /// cannot answer, 503: the user is still signed in, and is told so.
    pub async fn sign_out(&self, headers: &HeaderMap) -> Response {
        let inner = &self.0;
        let policy = inner.sessions.policy().cookie();
        // With `LogoutBehavior::CarryData`, the data the policy lists moves
        // to a new anonymous session, whose cookie replaces this one.
        let mut carried = None;
        if let Some(token) = cookies::token(headers, &policy.name) {
            match inner.sessions.logout(token.expose()).await {
                Ok(next) => carried = next,
                Err(e) => {
                    tracing::error!(error = %e, "sign-out failed: the session store is unavailable");
                    return unavailable(
                        "Sign-out failed: the session store is unavailable. You are still \
                         signed in. Try again in a moment.",
                    );
                }
            }
            tracing::info!(target: "signoff::auth", "logout");
        }
        let to = inner
            .options
            .after_sign_out
            .as_deref()
            .unwrap_or(&inner.options.login_path);
        let mut r = see_other(to);
        let h = r.headers_mut();
        let cookie = match &carried {
            Some(issued) => cookies::issue(&inner.sessions, issued),
            None => cookies::expire(policy),
        };
        h.insert(header::SET_COOKIE, cookie);
        // A carried session's cookie must survive: Chromium clears the
        // cookies a response sets beside `Clear-Site-Data: "cookies"`.
        let clear = match &carried {
            Some(_) => inner
                .options
                .clear_site_data
                .split(',')
                .map(str::trim)
                .filter(|v| *v != "\"cookies\"")
                .collect::<Vec<_>>()
                .join(", "),
            None => inner.options.clear_site_data.clone(),
        };
        if let Ok(v) = HeaderValue::from_str(&clear) {
            if !clear.is_empty() {
                h.insert("clear-site-data", v);
            }
        }
        r
    }

    /// Ends one of the signed-in user's other sessions (from a sessions
    /// page), by its public handle; `false` if it is not theirs, already
    /// over, or the user's own session has ended meanwhile (checked in the
    /// store itself).
    ///
    /// # Errors
    /// The store could not answer.
    pub async fn end_other(&self, who: &Authenticated, handle: &str) -> Result<bool, SessionError> {
        let Ok(handle) = handle.parse::<crate::SessionHandle>() else {
            return Ok(false);
        };
        // The request may have started before its own session ended (its
        // body arrived later): ask the store itself, not the cache.
        match self.0.uncached.validate_token(&who.token).await {
            Ok(_) => {}
            Err(SessionError::Store(e)) => return Err(SessionError::Store(e)),
            Err(_) => return Ok(false),
        }
        // Ends it only if it is this user's (the owner is checked in the
        // same step), without reading or touching it first.
        let Some(owner) = who.session.user_id.as_ref() else {
            return Ok(false);
        };
        self.0
            .sessions
            .end_by_handle(&handle, Some(owner), crate::Actor::User)
            .await
            .map(|ended| ended.is_some())
    }
}

/// The origin a request was sent to, when no public origin is set: its
/// `Host`, or for HTTP/2 the URI's authority, a default port dropped. The
/// scheme: `https` when the cookie is `Secure`, except on a loopback host, where a browser may use
/// either (plain `http://localhost` is a secure context): there the one the
/// browser's `Origin` names.
fn own_origin(headers: &HeaderMap, uri: &Uri, secure_cookie: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_ascii_lowercase();
    let named = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|o| o.split_once("://"))
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    let bare_host = host.rsplit_once(':').map_or(host.as_str(), |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host.as_str()
        }
    });
    let scheme = match named.as_deref() {
        Some(s @ ("http" | "https")) if origin::is_loopback_host(bare_host) => s,
        _ if secure_cookie => "https",
        _ => "http",
    };
    let host = match (scheme, host.strip_suffix(":443"), host.strip_suffix(":80")) {
        ("https", Some(h), _) | ("http", _, Some(h)) => h,
        _ => &host,
    };
    format!("{scheme}://{host}")
}

/// A 303 to `to`, `no-store`.
fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    no_store(r.headers_mut());
    r
}

/// 503 with `text`, `no-store`, to retry in a few seconds.
fn unavailable(text: &'static str) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        text,
    )
        .into_response();
    no_store(r.headers_mut());
    r
}

/// What [`Inner::found_now`] could tell without waiting.
// Made once per request and matched at once, never stored.
#[allow(clippy::large_enum_variant)]
enum Found {
    /// The request's standing.
    Now(Auth),
    /// The token of a session that only the store (a read, a touch, an
    /// expiry) or the key record can tell about, and how far the check got.
    AskTheStore(SessionToken, Early),
}

impl Inner {
    /// The request's session cookie, checked with `sessions`.
    async fn validate(&self, sessions: &Sessions, headers: &HeaderMap) -> Auth {
        let raw = cookies::read(headers, &sessions.policy().cookie().name);
        self.validate_cookie(sessions, raw).await
    }

    /// A session cookie's value (`None`: no cookie), checked with `sessions`.
    async fn validate_cookie(&self, sessions: &Sessions, raw: Option<&str>) -> Auth {
        match self.found_now(sessions, raw) {
            Found::Now(found) => found,
            Found::AskTheStore(token, early) => {
                let answer = sessions.validate_from(&token, early).await;
                self.judge(token, answer)
            }
        }
    }

    /// What [`Inner::validate_cookie`] would answer, when it needs no
    /// waiting (no cookie, a malformed one, a made-up seal, a cache hit);
    /// otherwise the parsed token, for the store to be asked.
    fn found_now(&self, sessions: &Sessions, raw: Option<&str>) -> Found {
        let Some(raw) = raw else {
            return Found::Now(Auth::Anonymous { stale: false });
        };
        let Ok(token) = SessionToken::parse(raw) else {
            return Found::Now(Auth::Anonymous { stale: true });
        };
        match sessions.early(&token) {
            Early::Decided(answer) => Found::Now(self.judge(token, answer)),
            early => Found::AskTheStore(token, early),
        }
    }

    /// The request's standing, from the engine's answer for its `token`.
    fn judge(&self, token: SessionToken, answer: Result<Session, SessionError>) -> Auth {
        match answer {
            // A session the gateway made for one of its app hosts, or
            // linked to another, is good only where the gateway checks it
            // (with its central session): never here.
            Ok(session)
                if session.data.contains_key(SITE_KEY)
                    || session.data.contains_key(crate::LINKED_TO_KEY) =>
            {
                Auth::Anonymous { stale: true }
            }
            Ok(session) => match (&session.user_id, session.user_name()) {
                (Some(_), Some(user)) => Auth::SignedIn(Authenticated {
                    user: user.to_owned(),
                    token,
                    session,
                }),
                _ => Auth::Anonymous { stale: true },
            },
            Err(SessionError::Store(e)) => {
                tracing::error!(error = %e, "session store unavailable; refusing the request");
                Auth::Unavailable
            }
            Err(_) => Auth::Anonymous { stale: true },
        }
    }
}

#[async_trait::async_trait]
impl Gate for Inner {
    async fn check(&self, parts: &mut Parts) -> Auth {
        self.validate(&self.sessions, &parts.headers).await
    }

    fn refuse(&self, why: NotSignedIn, parts: &Parts) -> Response {
        match why {
            NotSignedIn::Anonymous { back_to, stale } => {
                // The whole path, also under `Router::nest`.
                let uri = parts
                    .extensions
                    .get::<axum::extract::OriginalUri>()
                    .map_or(&parts.uri, |o| &o.0);
                let here = uri.path_and_query().map_or("/", |p| p.as_str());
                let next = back_to.unwrap_or(here);
                let mut r = if wants_html(&parts.headers) {
                    let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
                    see_other(&format!("{}?next={next}", self.options.login_path))
                } else {
                    let mut r = (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
                    if let Ok(v) = HeaderValue::from_str(&format!(
                        "Signoff realm=\"app\", login=\"{}\"",
                        self.options.login_path
                    )) {
                        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                    }
                    no_store(r.headers_mut());
                    r
                };
                if stale {
                    r.headers_mut().append(
                        header::SET_COOKIE,
                        cookies::expire(self.sessions.policy().cookie()),
                    );
                }
                r
            }
            NotSignedIn::Unavailable => {
                unavailable("The session store is unavailable. Try again in a moment.")
            }
        }
    }

    fn origin_for(&self, headers: &HeaderMap, uri: &Uri) -> String {
        if let Some(origin) = &self.options.public_origin {
            return origin.clone();
        }
        own_origin(headers, uri, self.sessions.policy().cookie().secure)
    }

    fn session_token(&self, headers: &HeaderMap) -> Option<SessionToken> {
        cookies::token(headers, &self.sessions.policy().cookie().name)
    }

    fn refuse_form(&self, why: FormRefusal) -> Response {
        let mut r = match why {
            FormRefusal::Unreadable(status) => {
                (status, "the form could not be read\n").into_response()
            }
            FormRefusal::NoIntent(_, arrival) => {
                tracing::warn!(from = %arrival.shown(), "form refused: it did not come from this site");
                (
                    StatusCode::FORBIDDEN,
                    "This form did not come from this site, so it was not acted on. Go back, \
                     reload the page and send it again.\n",
                )
                    .into_response()
            }
        };
        no_store(r.headers_mut());
        r
    }

    fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.options.trusted_proxies
    }
}

/// The layer of [`WebSessions::layer`].
#[derive(Clone)]
pub struct SessionLayer {
    web: WebSessions,
}

impl<S> tower_layer::Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> SessionService<S> {
        SessionService {
            web: self.web.clone(),
            inner,
        }
    }
}

/// The service of [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S> {
    web: WebSessions,
    inner: S,
}

impl<S> tower_service::Service<Request> for SessionService<S>
where
    S: tower_service::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = SessionFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let web = &self.web.0;
        let raw = cookies::read(req.headers(), &web.sessions.policy().cookie().name);
        let cookie = raw.is_some();
        // Checked once here; the extractors take what was found (one
        // extension, so one allocation, for both). Most requests are
        // decided without waiting (a cache hit): the app's own future is
        // then the whole of this one, with nothing boxed.
        let (token, early) = match web.found_now(&web.sessions, raw) {
            Found::Now(found) => {
                req.extensions_mut()
                    .insert(GateRef::with_found(web.clone(), found));
                return SessionFuture {
                    state: State::Now {
                        inner: self.inner.call(req),
                        cookie,
                    },
                };
            }
            Found::AskTheStore(token, early) => (token, early),
        };
        // The clone that was made ready is the one that runs.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let web = web.clone();
        let later = Box::pin(async move {
            let answer = web.sessions.validate_from(&token, early).await;
            let found = web.judge(token, answer);
            req.extensions_mut().insert(GateRef::with_found(web, found));
            let mut response = inner.call(req).await?;
            no_store(response.headers_mut());
            Ok(response)
        });
        SessionFuture {
            state: State::Later { future: later },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`SessionService`]: the app's own, when the session
    /// was decided without waiting; otherwise a boxed one that first asks
    /// the store (a read, a touch, an expiry) or the key record.
    pub struct SessionFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        Now {
            #[pin]
            inner: F,
            // The request carried a session cookie: the answer is `no-store`.
            cookie: bool,
        },
        Later {
            future: Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>,
        },
    }
}

impl<F, E> Future for SessionFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Now { inner, cookie } => {
                let mut response = std::task::ready!(inner.poll(cx))?;
                if *cookie {
                    no_store(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Later { future } => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, Policy, SessionData, USER_NAME_KEY};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn the_own_origin_comes_from_the_host_with_the_cookies_scheme() {
        let uri = Uri::from_static("/login");
        let cases = [
            (&[("host", "app.example")][..], true, "https://app.example"),
            (&[("host", "app.example:443")], true, "https://app.example"),
            (
                &[("host", "app.example:8443")],
                true,
                "https://app.example:8443",
            ),
            (&[("host", "App.Example")], false, "http://app.example"),
            // A page elsewhere cannot choose the scheme of a public host.
            (
                &[("host", "app.example"), ("origin", "http://app.example")],
                true,
                "https://app.example",
            ),
            // On loopback, the browser's Origin names it.
            (
                &[
                    ("host", "localhost:3000"),
                    ("origin", "http://localhost:3000"),
                ],
                true,
                "http://localhost:3000",
            ),
            (
                &[("host", "127.0.0.1:80"), ("origin", "http://127.0.0.1")],
                false,
                "http://127.0.0.1",
            ),
        ];
        for (pairs, secure, want) in cases {
            assert_eq!(own_origin(&headers(pairs), &uri, secure), want, "{pairs:?}");
        }
        // HTTP/2: no Host, the authority.
        let h2 = Uri::from_static("https://app.example/login");
        assert_eq!(
            own_origin(&HeaderMap::new(), &h2, true),
            "https://app.example"
        );
    }

    #[tokio::test]
    async fn sessions_the_gateway_made_for_an_app_host_are_not_taken() {
        let policy = Policy::builder()
            .cookie(crate::CookiePolicy::insecure_loopback())
            .build()
            .unwrap();
        let sessions = Sessions::new(Arc::new(MemoryStore::new()), policy);
        let web = WebSessions::of(sessions.clone(), sessions.clone(), WebOptions::default());
        for (extra, taken) in [
            (None, true),
            (Some((SITE_KEY, "wiki.example")), false),
            (Some((crate::LINKED_TO_KEY, "somehandle")), false),
        ] {
            let mut data = SessionData::new();
            data.insert(USER_NAME_KEY.to_owned(), "alice".to_owned());
            if let Some((k, v)) = extra {
                data.insert(k.to_owned(), v.to_owned());
            }
            let issued = sessions
                .create(NewSession::for_user(UserId::new("u1")).reserved_data(data))
                .await
                .unwrap();
            let cookie = format!("signoff={}", issued.token.expose());
            let auth = web
                .0
                .validate(&sessions, &headers(&[("cookie", &cookie)]))
                .await;
            assert_eq!(matches!(auth, Auth::SignedIn(_)), taken, "{extra:?}");
        }
    }

    #[cfg(feature = "accounts")]
    #[tokio::test]
    async fn a_sign_in_under_way_when_the_account_is_disabled_is_refused() {
        let store = Arc::new(MemoryStore::new());
        let policy = Policy::builder()
            .cookie(crate::CookiePolicy::insecure_loopback())
            .build()
            .unwrap();
        let sessions = Sessions::new(store.clone(), policy);
        let web = WebSessions::of(sessions.clone(), sessions.clone(), WebOptions::default());
        let accounts = crate::Accounts::new(store, crate::Passwords::new());
        accounts
            .add_user("alice", "correct horse battery")
            .await
            .unwrap();
        let ip = IpAddr::from([127, 0, 0, 1]);
        // The control: an account that did not change signs in.
        let user = accounts
            .authenticate("alice", "correct horse battery")
            .await
            .unwrap();
        let ok = web
            .sign_in_account(&HeaderMap::new(), ip, &accounts, &user, None)
            .await;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        // Disabled between the password check and the session.
        let user = accounts
            .authenticate("alice", "correct horse battery")
            .await
            .unwrap();
        accounts.disable("alice").await.unwrap();
        let before = sessions.list_for_user(&user.id).await.unwrap().len();
        let refused = web
            .sign_in_account(&HeaderMap::new(), ip, &accounts, &user, None)
            .await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(refused.headers().get(header::SET_COOKIE).is_none());
        let after = sessions.list_for_user(&user.id).await.unwrap().len();
        assert!(after <= before, "the refused sign-in left a session");
    }

    /// A signed-in session's cookie, over `sessions`.
    async fn signed_in_cookie(sessions: &Sessions) -> String {
        let issued = sessions
            .create(NewSession::for_user(crate::UserId::new("u1")).user_name("alice"))
            .await
            .unwrap();
        format!("signoff={}", issued.token.expose())
    }

    fn loopback_policy() -> Policy {
        Policy::builder()
            .cookie(crate::CookiePolicy::insecure_loopback())
            .build()
            .unwrap()
    }

    /// A cache in front of `store` whose entries stay an hour.
    fn hour_long_cache(
        store: &Arc<MemoryStore>,
        clock: Arc<dyn crate::Clock>,
    ) -> Arc<crate::CachedStore<Arc<MemoryStore>>> {
        Arc::new(crate::CachedStore::with_options(
            store.clone(),
            crate::CacheOptions {
                max_staleness: std::time::Duration::from_secs(3600),
                ..crate::CacheOptions::default()
            },
            clock,
        ))
    }

    async fn call(router: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
        let (status, _, body) = call_with_headers(router, path, cookie).await;
        (status, body)
    }

    async fn call_with_headers(
        router: &Router,
        path: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        use tower::ServiceExt as _;
        let mut req = axum::http::Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let r = router
            .clone()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn maybe_signed_in_and_an_optional_signed_in_serve_both() {
        use super::super::{MaybeSignedIn, SignedIn};
        let sessions = Sessions::new(Arc::new(MemoryStore::new()), loopback_policy());
        let web = WebSessions::of(sessions.clone(), sessions.clone(), WebOptions::default());
        let router: Router = Router::new()
            .route(
                "/maybe",
                get(|MaybeSignedIn(who): MaybeSignedIn| async move {
                    who.map_or("anonymous".to_owned(), |a| a.user)
                }),
            )
            .route(
                "/optional",
                get(|who: Option<SignedIn>| async move {
                    who.map_or("anonymous".to_owned(), |a| a.0.user)
                }),
            )
            .layer(web.layer());
        let cookie = signed_in_cookie(&sessions).await;
        for path in ["/maybe", "/optional"] {
            assert_eq!(call(&router, path, None).await.1, "anonymous", "{path}");
            assert_eq!(
                call(&router, path, Some(&cookie)).await.1,
                "alice",
                "{path}"
            );
            // A cookie that is no session's: anonymous, not refused.
            let stale = "signoff=not-a-token";
            assert_eq!(
                call(&router, path, Some(stale)).await.1,
                "anonymous",
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn the_guards_status_reads_the_store_not_the_cache() {
        let store = Arc::new(MemoryStore::new());
        let cache = hour_long_cache(&store, Arc::new(crate::SystemClock));
        let cached = Sessions::new(cache, loopback_policy());
        let uncached = Sessions::new(store.clone(), loopback_policy());
        let web = WebSessions::of(cached.clone(), uncached, WebOptions::default());
        let router: Router = Router::new()
            .route(
                "/page",
                get(|who: super::super::SignedIn| async move { who.0.user }),
            )
            .merge(web.routes())
            .layer(web.layer());
        let cookie = signed_in_cookie(&cached).await;
        assert_eq!(
            call(&router, "/page", Some(&cookie)).await.0,
            StatusCode::OK
        );
        // Ended behind this node's cache (as another node would, before
        // the bus tells it): the page is still served from the cache, the
        // status the guard asks is not.
        let token = crate::SessionToken::parse(cookie.trim_start_matches("signoff=")).unwrap();
        assert!(crate::SessionStore::remove(&*store, &token.id())
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            call(&router, "/page", Some(&cookie)).await.0,
            StatusCode::OK
        );
        let (status, body) = call(&router, "/.signoff/status", Some(&cookie)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    /// The layer decides most requests in `call` (no cookie, a malformed
    /// or forged one, a cache hit) and runs the rest in a boxed future (a
    /// store read, the activity write): both answer alike, `no-store` and
    /// `Vary: Cookie` on every answer to a request with a cookie, the
    /// page's validators gone.
    #[tokio::test]
    async fn the_layer_answers_alike_whether_it_waited_or_not() {
        use super::super::MaybeSignedIn;
        let clock = crate::ManualClock::starting_now();
        let store = Arc::new(MemoryStore::new());
        let cache = hour_long_cache(&store, Arc::new(clock.clone()));
        let policy = loopback_policy();
        let sessions = Sessions::with_clock(cache.clone(), policy.clone(), Arc::new(clock.clone()));
        let web = WebSessions::of(sessions.clone(), sessions.clone(), WebOptions::default());
        let router: Router = Router::new()
            .route(
                "/page",
                get(|MaybeSignedIn(who): MaybeSignedIn| async move {
                    (
                        [(header::ETAG, "\"v1\"")],
                        who.map_or("anonymous".to_owned(), |a| a.user),
                    )
                }),
            )
            .layer(web.layer());
        let get_page = |cookie: Option<String>| {
            let router = router.clone();
            async move {
                let (_, headers, body) =
                    call_with_headers(&router, "/page", cookie.as_deref()).await;
                (headers, body)
            }
        };
        let private = |h: &HeaderMap| {
            h.get(header::CACHE_CONTROL)
                .is_some_and(|v| v == "no-store")
                && h.get(header::VARY).is_some_and(|v| v == "Cookie")
                && h.get(header::ETAG).is_none()
        };

        // No cookie: decided at once, the page as the app made it.
        let (h, body) = get_page(None).await;
        assert_eq!(body, "anonymous");
        assert!(h.get(header::CACHE_CONTROL).is_none() && h.get(header::VARY).is_none());
        assert_eq!(h[header::ETAG], "\"v1\"");

        let cookie = signed_in_cookie(&sessions).await;
        let token = crate::SessionToken::parse(cookie.trim_start_matches("signoff=")).unwrap();
        // Not cached: the boxed future reads the store.
        let hits = cache.stats().hits();
        let (h, body) = get_page(Some(cookie.clone())).await;
        assert_eq!((body.as_str(), private(&h)), ("alice", true));
        assert_eq!(cache.stats().hits(), hits, "read from the store");
        // Cached: decided in `call`.
        let (h, body) = get_page(Some(cookie.clone())).await;
        assert_eq!((body.as_str(), private(&h)), ("alice", true));
        assert_eq!(cache.stats().hits(), hits + 1, "a cache hit");

        // Due for the activity write: the boxed future writes it.
        clock.advance(policy.touch_interval());
        let (h, body) = get_page(Some(cookie.clone())).await;
        assert_eq!((body.as_str(), private(&h)), ("alice", true));
        let record = crate::SessionStore::load(&*store, &token.id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.last_seen_at, sessions.now());

        // Malformed, forged and signed-out cookies: anonymous, and private.
        let elsewhere = Sessions::new(Arc::new(MemoryStore::new()), loopback_policy());
        let forged = signed_in_cookie(&elsewhere).await;
        for bad in ["signoff=not-a-token".to_owned(), forged] {
            let (h, body) = get_page(Some(bad.clone())).await;
            assert_eq!((body.as_str(), private(&h)), ("anonymous", true), "{bad}");
        }
        sessions.logout(token.expose()).await.unwrap();
        let (h, body) = get_page(Some(cookie)).await;
        assert_eq!((body.as_str(), private(&h)), ("anonymous", true));
    }
}
