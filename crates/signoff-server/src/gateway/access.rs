//! Access rules on proxied and forward-auth requests: what the rules
//! need of a request (`[access]`, `--public-path`; the engine's
//! [`signoff::access`]), and the answers when they refuse it: 403 (a page
//! naming who is signed in, or JSON), or a fresh password first.

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use signoff::access::{Decision, Member, RequestFacts};

use super::apps::Site;
use super::header_names;
use super::pages::{self, ForbiddenPage};
use super::proxy::no_store;
use super::signed_in::{sign_in_first, Identity};
use super::{Gateway, GROUPS_KEY};

/// The method a request asks the app to take instead of its own, if any.
pub(super) fn method_override(headers: &HeaderMap) -> Option<&str> {
    // One pass over the names the request holds (most hold none of these)
    // instead of a lookup for each; the first in the list's order wins.
    let found = super::proxy::present(headers, &header_names::METHOD_OVERRIDES);
    let first = found.iter().position(|&f| f)?;
    headers
        .get(&header_names::METHOD_OVERRIDES[first])
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The host rules match for a proxied request: the one the upstream will
/// see. With `--public-url` that is the public host, whatever the client
/// sent ([`super::proxy`] sets it), so a client cannot pick a host rule
/// by its `Host` header; without, the client's own.
/// An app host of its own (`site`) is that host.
pub(super) fn proxied_host<'a>(
    gw: &'a Gateway,
    site: Option<&'a Site>,
    headers: &'a HeaderMap,
    uri: &'a axum::http::Uri,
) -> Option<&'a str> {
    if let Some(site) = site {
        return Some(&site.host);
    }
    if gw.settings.public_url_given {
        return Some(&gw.public.host_name);
    }
    request_host(headers, uri)
}

/// The host a request names: its `Host` header, or the authority of an
/// absolute URI (HTTP/2).
pub(super) fn request_host<'a>(
    headers: &'a HeaderMap,
    uri: &'a axum::http::Uri,
) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// The facts of a proxied request.
pub(super) fn proxied_facts<'a>(
    gw: &'a Gateway,
    site: Option<&'a Site>,
    method: &'a str,
    headers: &'a HeaderMap,
    uri: &'a axum::http::Uri,
) -> RequestFacts<'a> {
    RequestFacts::new(
        Some(method),
        proxied_host(gw, site, headers, uri),
        Some(uri.path()),
    )
    .method_override(method_override(headers))
}

impl Identity {
    /// The user as the rules see them.
    pub fn member(&self, now: signoff::Timestamp) -> Member<'_> {
        Member::new(&self.user, self.groups()).authenticated(self.session.auth_at, now)
    }

    /// The user's groups at sign-in, comma-separated (`""`: none).
    pub fn groups(&self) -> &str {
        self.session.data.get(GROUPS_KEY).map_or("", String::as_str)
    }
}

/// How a refusal is told: a browser gets pages and redirects; other
/// clients get JSON; an nginx `auth_request` gets 401 and the page to go
/// to in `X-Signoff-Login`.
#[derive(Clone, Copy)]
pub(super) enum Audience {
    Browser,
    Api,
    /// nginx style forward-auth, for a browser's GET or HEAD.
    LoginHeader,
}

/// The answer to a request the rules do not let through, as decided for
/// `who`. `next` is where a sign-in or re-authentication returns to (a
/// same-origin path).
pub(super) fn refuse(
    gw: &Gateway,
    decision: Decision<'_>,
    who: Option<&Identity>,
    audience: Audience,
    next: &str,
    stale: bool,
) -> Response {
    let user = who.map(|w| w.user.as_str());
    match decision {
        // Not a refusal for a signed-in user; for nobody, sign in first.
        Decision::Allow | Decision::SignIn => {
            let mut r = sign_in_first(gw, matches!(audience, Audience::Browser), next, stale);
            if matches!(audience, Audience::LoginHeader) {
                if let Ok(v) =
                    HeaderValue::from_str(&super::signed_in::login_url(&gw.settings.prefix, next))
                {
                    r.headers_mut().insert(super::forward_auth::LOGIN_HEADER, v);
                }
            }
            r
        }
        Decision::Forbidden { by } => {
            tracing::info!(target: "signoff::access", user = user.unwrap_or("-"), rule = %by, "refused by the access rules");
            forbidden(gw, audience, who)
        }
        Decision::Fresh { within, by } => {
            tracing::info!(target: "signoff::access", user = user.unwrap_or("-"), rule = %by, "a fresh password is needed");
            fresh_first(gw, audience, next, within)
        }
    }
}

/// 403: a page saying who is signed in (with a way to switch account), or
/// JSON for an API client.
fn forbidden(gw: &Gateway, audience: Audience, who: Option<&Identity>) -> Response {
    let mut r = match audience {
        Audience::Browser | Audience::LoginHeader => pages::render(
            StatusCode::FORBIDDEN,
            &ForbiddenPage {
                prefix: &gw.settings.prefix,
                brand: &gw.settings.branding,
                user: who.map(|w| w.user.as_str()),
                csrf: who.and_then(|w| w.csrf.as_deref()),
            },
        ),
        Audience::Api => (
            StatusCode::FORBIDDEN,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            serde_json::json!({
                "error": "forbidden",
                "message": match who {
                    Some(_) => "the access rules do not let this user reach this resource",
                    None => "the access rules let nobody reach this resource",
                },
                "user": who.map(|w| w.user.as_str()),
            })
            .to_string(),
        )
            .into_response(),
    };
    no_store(r.headers_mut());
    r
}

/// The password again first: a browser goes to the re-authentication page
/// (coming back to `next`); an API client gets 401 with a challenge
/// saying how recent the password must be (as RFC 9470's
/// `insufficient_user_authentication`); nginx gets 401 naming the page.
fn fresh_first(
    gw: &Gateway,
    audience: Audience,
    next: &str,
    within: std::time::Duration,
) -> Response {
    let prefix = &gw.settings.prefix;
    let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let reauth = format!("{prefix}/reauth?next={encoded}");
    let mut r = match audience {
        Audience::Browser => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&reauth) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Audience::Api | Audience::LoginHeader => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                serde_json::json!({
                    "error": "insufficient_user_authentication",
                    "message": "enter the password again: this resource needs a recent sign-in",
                    "max_age": within.as_secs(),
                    "reauth": reauth,
                })
                .to_string(),
            )
                .into_response();
            let challenge = format!(
                "Signoff realm=\"signoff\", error=\"insufficient_user_authentication\", max_age={}, login=\"{prefix}/reauth\"",
                within.as_secs()
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            if matches!(audience, Audience::LoginHeader) {
                if let Ok(v) = HeaderValue::from_str(&reauth) {
                    r.headers_mut().insert(super::forward_auth::LOGIN_HEADER, v);
                }
            }
            r
        }
    };
    no_store(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_override_is_read_and_the_first_listed_wins() {
        let mut h = HeaderMap::new();
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert_eq!(method_override(&h), None);
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
        ] {
            let mut h = h.clone();
            h.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(" DELETE "),
            );
            assert_eq!(method_override(&h), Some("DELETE"), "{name}");
        }
        // Sent in the reverse of the list's order: the list decides.
        let mut both = h.clone();
        both.insert("x-method-override", HeaderValue::from_static("PUT"));
        both.insert("x-http-method-override", HeaderValue::from_static("DELETE"));
        assert_eq!(method_override(&both), Some("DELETE"));
    }
}
