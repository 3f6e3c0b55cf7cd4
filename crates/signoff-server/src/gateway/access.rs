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

/// The method the access rules read for a request, and the one its
/// override headers (`X-HTTP-Method-Override` and its kin) ask the app to
/// take instead, if any: the request must pass the rules for both. An app
/// may read any one of those headers, and any of its values, so when they
/// do not all name the same method (or one is not text), the method is
/// taken as unknown (`(None, None)`): the request must then pass the rules
/// for every method.
pub(super) fn methods<'a>(
    method: Option<&'a str>,
    headers: &'a HeaderMap,
) -> (Option<&'a str>, Option<&'a str>) {
    // One pass over the names the request holds (most hold none of these)
    // instead of a lookup for each.
    let found = super::proxy::present(headers, &header_names::METHOD_OVERRIDES);
    let mut named: Option<&str> = None;
    for (name, found) in header_names::METHOD_OVERRIDES.iter().zip(found) {
        if !found {
            continue;
        }
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else {
                return (None, None);
            };
            let text = text.trim();
            match named {
                Some(first) if !first.eq_ignore_ascii_case(text) => return (None, None),
                Some(_) => {}
                None => named = Some(text),
            }
        }
    }
    (method, named)
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
    let (method, method_override) = methods(Some(method), headers);
    RequestFacts::new(
        method,
        proxied_host(gw, site, headers, uri),
        Some(uri.path()),
    )
    .method_override(method_override)
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
    fn method_overrides_are_read_and_must_agree() {
        let header = |name: &str| axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert_eq!(methods(Some("POST"), &h), (Some("POST"), None));
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
        ] {
            let mut h = h.clone();
            h.insert(header(name), HeaderValue::from_static(" DELETE "));
            assert_eq!(
                methods(Some("POST"), &h),
                (Some("POST"), Some("DELETE")),
                "{name}"
            );
        }
        // Two of them naming the same method, in any case: that one.
        let mut same = h.clone();
        same.insert("x-method-override", HeaderValue::from_static("delete"));
        same.insert("x-http-method", HeaderValue::from_static("DELETE"));
        assert_eq!(methods(Some("POST"), &same).0, Some("POST"));
        assert!(methods(Some("POST"), &same)
            .1
            .is_some_and(|m| m.eq_ignore_ascii_case("delete")));
        // Every pair of names disagreeing, either way round; a repeated
        // header disagreeing with itself; a value that is not text: the
        // method is unknown, whichever one an app would read.
        let names = [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ];
        for first in names {
            for second in names.iter().filter(|n| **n != first) {
                let mut two = h.clone();
                two.insert(header(first), HeaderValue::from_static("GET"));
                two.insert(header(second), HeaderValue::from_static("DELETE"));
                assert_eq!(
                    methods(Some("POST"), &two),
                    (None, None),
                    "{first} {second}"
                );
            }
            let mut repeated = h.clone();
            repeated.append(header(first), HeaderValue::from_static("GET"));
            repeated.append(header(first), HeaderValue::from_static("DELETE"));
            assert_eq!(methods(Some("POST"), &repeated), (None, None), "{first}");
            let mut unreadable = h.clone();
            unreadable.insert(
                header(first),
                HeaderValue::from_bytes(b"DEL\xffETE").unwrap(),
            );
            assert_eq!(methods(Some("POST"), &unreadable), (None, None), "{first}");
        }
    }
}
