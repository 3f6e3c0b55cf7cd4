//! Sessions in an axum app (feature `axum`): a layer, extractors, and
//! sign-in and sign-out done completely right.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{routing::get, Router};
//! use signoff::web::{SignedIn, WebSessions};
//!
//! let deployment = signoff::Deployment::open("sqlite://app.db").await?;
//! let web = WebSessions::new(&deployment);
//! let app: Router = Router::new()
//!     .route("/dashboard", get(|who: SignedIn| async move { format!("Hello, {}", who.user) }))
//!     .merge(web.routes())
//!     .layer(web.layer());
//! # Ok(()) }
//! ```
//!
//! - [`WebSessions`]: the sessions of one app: its [`layer`](WebSessions::layer)
//!   checks each request's session cookie once and makes every answer to a
//!   signed-in request `no-store`; [`sign_in`](WebSessions::sign_in) and
//!   [`sign_out`](WebSessions::sign_out) answer a login or a logout form;
//!   [`routes`](WebSessions::routes) serve the back-button guard.
//! - Extractors: [`SignedIn`] (the handler runs only for a live session),
//!   [`MaybeSignedIn`], [`CsrfForm`] (a form whose sender is shown to mean
//!   it), [`ClientAddr`] (the client's address, believing only trusted
//!   proxies).
//! - [`Gate`]: what the extractors ask of whoever checks sessions. The app
//!   gets it from [`WebSessions`]; the signoff gateway implements it
//!   itself, and runs on the same extractors.
//!
//! A handler gets the user only through an extractor (a `compile_fail`
//! doctest in [`signed_in`] holds this).

pub mod body;
pub mod client_addr;
pub mod cookies;
pub mod csrf_form;
pub mod guard;
pub mod origin;
pub mod redirect;
pub mod signed_in;
mod web_sessions;

use std::sync::Arc;

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::SessionToken;

pub use client_addr::ClientAddr;
pub use csrf_form::{CsrfForm, FormRefusal, IntentForm, Proof};
pub use signed_in::{Auth, Authenticated, BackTo, Here, MaybeSignedIn, NotSignedIn, SignedIn};
pub use web_sessions::{SessionFuture, SessionLayer, SessionService, WebOptions, WebSessions};

/// What the extractors ask of whoever checks sessions: [`WebSessions`] in
/// an app, the gateway in signoff itself. It reaches them through the
/// request's extensions, as a [`GateRef`] ([`WebSessions::layer`] puts it
/// there), so the extractors work with any router state.
#[async_trait::async_trait]
pub trait Gate: Send + Sync + 'static {
    /// The request's session, checked against the store (asked only when
    /// no layer before checked it: [`WebSessions::layer`] hands what it
    /// found to the first extractor itself).
    async fn check(&self, parts: &mut Parts) -> Auth;
    /// The answer to a request without a live session.
    fn refuse(&self, why: NotSignedIn, parts: &Parts) -> Response;
    /// The origin a form sent to this request (its headers and URI) must
    /// come from (`https://host:port`).
    fn origin_for(&self, headers: &HeaderMap, uri: &Uri) -> String;
    /// The session token in the request's cookie, if any.
    fn session_token(&self, headers: &HeaderMap) -> Option<SessionToken>;
    /// The answer to a form refused.
    fn refuse_form(&self, why: FormRefusal) -> Response;
    /// The proxies whose `X-Forwarded-For` entries are believed.
    fn trusted_proxies(&self) -> &[ipnet::IpNet];
}

/// The [`Gate`] of a request, as its extensions carry it, with what a
/// layer already found out about the request's session.
#[derive(Clone)]
pub struct GateRef {
    gate: Arc<dyn Gate>,
    found: Option<Auth>,
}

impl GateRef {
    /// `gate`, which the extractors ask to check each request's session.
    pub fn new(gate: Arc<dyn Gate>) -> Self {
        Self { gate, found: None }
    }

    /// `gate`, with the request's session as a layer already checked it:
    /// the first extractor takes it without asking again (a second one on
    /// the same request asks the gate). Not public: a `found` an app could
    /// set would be a user without a check.
    pub(crate) fn with_found(gate: Arc<dyn Gate>, found: Auth) -> Self {
        Self {
            gate,
            found: Some(found),
        }
    }

    /// The request's session: what a layer found, or the gate's check.
    #[allow(clippy::result_large_err)]
    pub(crate) async fn check(parts: &mut Parts) -> Result<Auth, Response> {
        let gate = match parts.extensions.get_mut::<GateRef>() {
            Some(r) => match r.found.take() {
                Some(found) => return Ok(found),
                None => r.gate.clone(),
            },
            None => return Err(missing_gate()),
        };
        Ok(gate.check(parts).await)
    }

    /// The gate of the request whose parts these are; without one, a 500
    /// that says what is missing (a route outside the layer).
    // A rejection, the way axum's extractors return one.
    #[allow(clippy::result_large_err)]
    pub fn of(parts: &Parts) -> Result<Arc<dyn Gate>, Response> {
        match parts.extensions.get::<GateRef>() {
            Some(g) => Ok(g.gate.clone()),
            None => Err(missing_gate()),
        }
    }
}

/// The answer of an extractor on a route outside the layer: a 500 that
/// says what is missing.
fn missing_gate() -> Response {
    tracing::error!(
        "a signoff extractor on a route without a gate: add WebSessions::layer() \
         (signoff::web) to the router, after the routes that use it"
    );
    let mut r = (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: this route is not behind signoff's session layer\n",
    )
        .into_response();
    no_store(r.headers_mut());
    r
}

/// Makes a response unstorable, by the browser or anything between:
/// `no-store`, no validators, `Vary: Cookie`.
pub fn no_store(headers: &mut HeaderMap) {
    // Every answer to a signed-in request comes here: one pass over the
    // names, and the removals only for headers that are there.
    let (mut validators, mut vary) = (false, false);
    for name in headers.keys() {
        if [
            &header::EXPIRES,
            &header::ETAG,
            &header::LAST_MODIFIED,
            &header::AGE,
            &header::PRAGMA,
        ]
        .contains(&name)
        {
            validators = true;
        } else if name == header::VARY {
            vary = true;
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if validators {
        headers.remove(header::EXPIRES);
        headers.remove(header::ETAG);
        headers.remove(header::LAST_MODIFIED);
        headers.remove(header::AGE);
        headers.remove(header::PRAGMA);
    }
    let has_cookie = vary
        && headers
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| matches!(v.trim(), "*") || v.trim().eq_ignore_ascii_case("cookie"));
    if !has_cookie {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
    }
}

/// Whether the client takes HTML (a browser navigating).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_store_removes_each_validator_and_adds_vary_cookie_once() {
        let validators = [
            header::EXPIRES,
            header::ETAG,
            header::LAST_MODIFIED,
            header::AGE,
            header::PRAGMA,
        ];
        // Each one alone, and all of them, beside headers that stay.
        for only in validators.iter().map(Some).chain([None]) {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60"),
            );
            for v in &validators {
                if only.is_none_or(|o| o == v) {
                    h.insert(v.clone(), HeaderValue::from_static("x"));
                }
            }
            no_store(&mut h);
            for v in &validators {
                assert!(h.get(v).is_none(), "{v} left ({only:?})");
            }
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            assert_eq!(h[header::CONTENT_TYPE], "text/html");
            assert_eq!(h.get_all(header::VARY).iter().count(), 1);
            assert_eq!(h[header::VARY], "Cookie");
        }
    }

    #[test]
    fn no_store_keeps_a_vary_that_already_covers_the_cookie() {
        let cases: &[(&[&'static str], &[&str])] = &[
            (&[], &["Cookie"]),
            (&["*"], &["*"]),
            (&["cookie"], &["cookie"]),
            (&["Accept-Encoding, COOKIE"], &["Accept-Encoding, COOKIE"]),
            (
                &["Accept-Encoding", " Cookie "],
                &["Accept-Encoding", " Cookie "],
            ),
            (&["Accept-Encoding"], &["Accept-Encoding", "Cookie"]),
            (&["Cookies"], &["Cookies", "Cookie"]),
        ];
        for (before, after) in cases {
            let mut h = HeaderMap::new();
            for v in *before {
                h.append(header::VARY, HeaderValue::from_static(v));
            }
            no_store(&mut h);
            let got: Vec<_> = h.get_all(header::VARY).iter().collect();
            assert_eq!(got, *after, "{before:?}");
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
        }
    }
}
