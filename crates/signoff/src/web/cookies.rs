//! The session cookie: reading it from a request, and the `Set-Cookie`
//! values that issue and expire it.

use axum::http::header::{self, HeaderMap, HeaderValue};

use crate::{CookiePolicy, Issued, SessionToken, Sessions};

/// The value of the cookie called `name`, if the request carries one.
pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    // Every request comes here: plain loops, and ASCII trimming (a
    // `to_str` value is visible ASCII, spaces and tabs).
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for pair in value.split(';') {
            if let Some((n, v)) = pair.trim_ascii().split_once('=') {
                if n == name {
                    return Some(v.trim_ascii().trim_matches('"'));
                }
            }
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_named_cookie_is_found_in_any_header_and_position() {
        let cases: &[(&[&'static str], Option<&str>)] = &[
            (&[], None),
            (&["signoff=abc"], Some("abc")),
            (&["a=1; signoff=abc; b=2"], Some("abc")),
            (&["a=1;signoff=abc"], Some("abc")),
            (&["a=1;\tsignoff=abc \t"], Some("abc")),
            // No space around `=` (RFC 6265's cookie-pair), as before.
            (&["signoff =abc"], None),
            (&["signoff=\"abc\""], Some("abc")),
            (&["a=1", "signoff=abc"], Some("abc")),
            // The first one wins, as before.
            (&["signoff=first; signoff=second"], Some("first")),
            (&["signoff="], Some("")),
            // Other names, however close, are not it.
            (&["xsignoff=abc; signoff2=def; Signoff=ghi"], None),
            (&["signoff"], None),
            (&["; ;;"], None),
        ];
        for (values, want) in cases {
            assert_eq!(read(&with(values), "signoff"), *want, "{values:?}");
        }
    }

    #[test]
    fn a_header_that_is_not_text_is_passed_over() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"signoff=\xff\xfe").unwrap(),
        );
        h.append(header::COOKIE, HeaderValue::from_static("signoff=abc"));
        assert_eq!(read(&h, "signoff"), Some("abc"));
    }
}
