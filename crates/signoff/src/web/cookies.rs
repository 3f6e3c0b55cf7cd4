//! The session cookie: reading it from a request, and the `Set-Cookie`
//! values that issue and expire it.

use axum::http::header::{self, HeaderMap, HeaderValue};

use crate::{CookiePolicy, Issued, SessionToken, Sessions};

/// The value of the cookie called `name`, if the request carries one.
pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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
pub fn token(headers: &HeaderMap, name: &str) -> Option<SessionToken> {
    read(headers, name).and_then(|t| SessionToken::parse(t).ok())
}

/// `Set-Cookie` issuing the token of a session just created or rotated.
/// An ordinary session gets a browser-session cookie (no expiry: gone when
/// the browser closes). A remembered session's cookie is kept until the
/// session's end (`Max-Age`), so the device stays signed in across browser
/// restarts; a rotation sends what is left, never more. The server still
/// decides: the cookie's expiry extends nothing.
pub fn issue(sessions: &Sessions, issued: &Issued) -> HeaderValue {
    let policy = sessions.policy();
    let expiry = if issued.session.is_remembered(policy) {
        let left = issued.session.absolute_end(policy).since(sessions.now());
        // Whole seconds, rounded up: a cookie never ends before its session.
        format!("; Max-Age={}", left.as_millis().div_ceil(1000))
    } else {
        String::new()
    };
    header_value(policy.cookie(), issued.token.expose(), &expiry)
}

/// `Set-Cookie` expiring the session cookie, with the same attributes
/// so the browser replaces the very cookie it holds.
pub fn expire(policy: &CookiePolicy) -> HeaderValue {
    header_value(
        policy,
        "",
        "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
    )
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
