//! The session cookie: reading it from a request, and the `Set-Cookie`
//! values that issue and expire it.

use axum::http::header::{self, HeaderMap, HeaderValue};
use signoff::{CookiePolicy, Issued, SessionToken};

use super::Gateway;

/// The value of the cookie called `name`, if the request carries one.
pub(super) fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
}

/// The session token in the request's cookie, if it parses.
pub(super) fn token(headers: &HeaderMap, name: &str) -> Option<SessionToken> {
    read(headers, name).and_then(|t| SessionToken::parse(t).ok())
}

/// `Set-Cookie` issuing the token of a session just created or rotated.
/// An ordinary session gets a browser-session cookie (no expiry: gone when
/// the browser closes). A remembered session's cookie is kept until the
/// session's end (`Max-Age`), so the device stays signed in across browser
/// restarts; a rotation sends what is left, never more. The server still
/// decides: the cookie's expiry extends nothing.
pub(super) fn issue(gw: &Gateway, issued: &Issued) -> HeaderValue {
    let policy = gw.sessions.policy();
    let expiry = if issued.session.is_remembered(policy) {
        let left = issued.session.absolute_end(policy).since(gw.sessions.now());
        // Whole seconds, rounded up: a cookie never ends before its session.
        format!("; Max-Age={}", left.as_millis().div_ceil(1000))
    } else {
        String::new()
    };
    header_value(&gw.cookie, issued.token.expose(), &expiry)
}

/// `Set-Cookie` expiring the session cookie, with the same attributes
/// so the browser replaces the very cookie it holds.
pub(super) fn expire(policy: &CookiePolicy) -> HeaderValue {
    header_value(
        policy,
        "",
        "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
    )
}

/// `Set-Cookie` for one of signoff's short-lived helper cookies (the
/// single sign-on state, a pending OpenID sign-in, the provider re-login
/// mark): host-only, `HttpOnly`, and `SameSite=Lax` whatever the session
/// cookie's, since each must come back on a navigation from another site
/// (the central host, the provider). `max_age` 0 expires it.
pub(super) fn helper(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let expires = if max_age == 0 {
        "; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}{expires}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| unreachable!("cookie names and signoff's values are ASCII"))
}

fn header_value(c: &CookiePolicy, value: &str, expiry: &str) -> HeaderValue {
    let secure = if c.secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path={}{expiry}; HttpOnly; SameSite={}{secure}",
        c.name,
        c.path,
        c.same_site.as_str()
    ))
    .unwrap_or_else(|_| unreachable!("cookie names, paths and tokens are checked ASCII"))
}
