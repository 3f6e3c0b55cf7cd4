//! The session cookie as the gateway issues it (reading and expiring it
//! are the library's, [`signoff::web::cookies`]), and signoff's own
//! short-lived helper cookies.

use axum::http::header::HeaderValue;
use signoff::Issued;

pub(super) use signoff::web::cookies::{expire, read, token};

use super::Gateway;

/// `Set-Cookie` issuing the token of a session just created or rotated
/// ([`signoff::web::cookies::issue`]).
pub(super) fn issue(gw: &Gateway, issued: &Issued) -> HeaderValue {
    signoff::web::cookies::issue(&gw.sessions, issued)
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
