//! Forward-auth: `{prefix}/auth` answers a proxy (nginx `auth_request`,
//! Caddy `forward_auth`, Traefik `ForwardAuth`) whether the request it is
//! holding may go to the app.
//!
//! - 200: a live session. The answer carries `X-Signoff-User`,
//!   `X-Signoff-Session` (the public handle), `X-Signoff-Auth-Time` (when
//!   the password was last entered) and `X-Signoff-Csrf` for the
//!   proxy to copy onto the upstream request, and `Cache-Control: no-store`
//!   for it to put on the upstream's response.
//! - 401 (nginx style, the default): no live session. For a browser's GET
//!   or HEAD it names the login page, `next` included, in `X-Signoff-Login`,
//!   which an nginx `error_page` can redirect to.
//! - 303 to the login page instead, for browsers' GET and HEAD, when the
//!   proxy asks with `?redirect=1` (Caddy and Traefik hand the answer to
//!   the browser as it is).
//! - 200 without identity headers: the access rules make the forwarded
//!   request public (`--public-path`, `policy = "public"`), as `signoff
//!   serve` forwards public paths.
//! - 403 when the access rules refuse the request (`docs/access-rules.md`),
//!   401 naming the re-authentication page when a `fresh` rule wants the
//!   password again.
//! - 503 when the store cannot answer: the proxy must refuse the request.
//! - 403 when the request still carries a header only signoff may set
//!   ([`identity_headers::escaped_the_proxy`]): the proxy would pass it to
//!   the app, so its configuration missed one (nginx cannot delete by
//!   prefix, Caddy sees `X-Signoff_User` as its own name).
//!
//! Granted checks are logged at `debug` (the proxy logs the request it
//! lets through); refusals at `info`, like every other request.
//!
//! The original request is read from `X-Forwarded-Method`/`-Uri` (Caddy,
//! Traefik) or `X-Original-Method`/`-URI` (nginx). The proxy must set the
//! URI header itself, raw, as it forwards the request to the app
//! (`$request_uri`, `{uri}`): the access rules are decided on its path
//! (and on `X-Forwarded-Host`) exactly as `signoff serve` decides them
//! ([`signoff::access`]: every reading of a tricky path must pass, and only
//! a plain path can be public), so they follow the path the app receives,
//! not the proxy's decoded one. These headers also choose between a
//! redirect and a 401 and where the login page returns to. The forwarded
//! URI is used as `next` only if it is a same-origin path
//! ([`redirect::safe_next`]).

use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use signoff::token_mode::{kind_of, TokenKind};

use super::access;
use super::access::{methods, Audience};
use super::apps;
use super::error_pages::{error_page, unavailable};
use super::header_names::{
    self, X_FORWARDED_METHOD, X_FORWARDED_URI, X_ORIGINAL_METHOD, X_ORIGINAL_URI,
};
use super::layers::QuietLog;
use super::signed_in::{self, bearer, wants_html, Who};
use super::{cookies, identity_headers, redirect, token_mode, tunnel, AppState, Gateway};
use signoff::access::{Decision, RequestFacts};

/// The header naming the login page (with `next`) on a 401.
pub(super) const LOGIN_HEADER: &str = "x-signoff-login";

/// What the proxy told us about the request it holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Original<'a> {
    /// The original method, if the proxy sent one that parses.
    pub method: Option<Method>,
    /// Where the login page should return to: a same-origin path.
    pub next: &'a str,
}

/// The first of `names` present as visible ASCII.
fn first<'a>(headers: &'a HeaderMap, names: &[HeaderName]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(n))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Reads the original request from the forwarded headers.
pub(super) fn original(headers: &HeaderMap) -> Original<'_> {
    let method = first(headers, &[X_FORWARDED_METHOD, X_ORIGINAL_METHOD])
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let next = redirect::next_or_root(first(headers, &[X_FORWARDED_URI, X_ORIGINAL_URI]));
    Original { method, next }
}

/// The path of the original request, raw, as the proxy forwards it to the
/// app; `None` if the proxy sent no URI or not an origin-form one.
fn forwarded_path(headers: &HeaderMap) -> Option<&str> {
    let uri = first(headers, &[X_FORWARDED_URI, X_ORIGINAL_URI])?;
    // Query and fragment are not the path (nginx passes a raw `#` on in
    // `$request_uri`; the app cuts it).
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    path.starts_with('/').then_some(path)
}

/// Whether the proxy's headers naming the original request disagree:
///
/// - the two spellings of the URI or of the method: a proxy that sets one
///   and passes the client's other on (nginx's usual `auth_request` recipe
///   sets only `X-Original-URI`) must not let the client choose which one
///   decides;
/// - one of them, or `X-Forwarded-Host`, given twice with different values,
///   a host given as a list (`a, b`), or a URI holding a space or tab (two
///   joined into one line): a proxy that adds its value beside the
///   client's (HAProxy's `add-header`, a chain of proxies each appending)
///   must not let the client's come first and decide.
fn spellings_disagree(headers: &HeaderMap) -> bool {
    let two_spellings = [
        [X_FORWARDED_URI, X_ORIGINAL_URI],
        [X_FORWARDED_METHOD, X_ORIGINAL_METHOD],
    ]
    .into_iter()
    .any(
        |[a, b]| match (first(headers, &[a]), first(headers, &[b])) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        },
    );
    let given_twice_or_joined = [
        X_FORWARDED_URI,
        X_ORIGINAL_URI,
        X_FORWARDED_METHOD,
        X_ORIGINAL_METHOD,
        header_names::X_FORWARDED_HOST,
    ]
    .iter()
    .any(|name| {
        // A host holds no comma: one is a list. A URI may hold one.
        let list = *name == header_names::X_FORWARDED_HOST;
        // A request target holds no space or tab: a URI with one inside is
        // two joined into one line (`/x, /admin`, as a hop may join
        // repeated lines). Joined without a space they cannot be told from
        // one path.
        let uri = *name == X_FORWARDED_URI || *name == X_ORIGINAL_URI;
        let joined = |v: &[u8]| uri && v.iter().any(|b| matches!(b, b' ' | b'\t'));
        let mut values = headers.get_all(name).iter().flat_map(|v| {
            v.as_bytes()
                .split(move |&b| list && b == b',')
                .map(<[u8]>::trim_ascii)
        });
        values
            .next()
            .is_some_and(|one| joined(one) || values.any(|other| other != one || joined(other)))
    });
    two_spellings || given_twice_or_joined
}

/// Whether the query asks for a redirect instead of a 401.
fn redirect_mode(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "redirect" && !matches!(&*v, "0" | "false" | "no"))
    })
}

/// `{prefix}/auth`, any method.
pub(super) fn routes(gw: &Gateway) -> Router<Arc<Gateway>> {
    Router::new().route(&format!("{}/auth", gw.settings.prefix), any(check))
}

/// The check itself.
async fn check(State(gw): AppState, RawQuery(query): RawQuery, req: Request) -> Response {
    let headers = req.headers();
    if let Some(name) = headers
        .keys()
        .find(|n| identity_headers::escaped_the_proxy(n.as_str()))
    {
        tracing::info!(header = %name, "refused: the proxy passed on a header only signoff may set");
        return error_page(
            &gw,
            StatusCode::FORBIDDEN,
            "Request refused",
            "The request carries a header that only the sign-in gateway may set.",
        );
    }
    if spellings_disagree(headers) {
        tracing::warn!(
            "refused: the proxy's headers naming the original request disagree \
             (X-Forwarded-Uri/-Method and X-Original-URI/-Method, one of them or \
             X-Forwarded-Host given twice, a host list, or two URIs in one line); \
             the proxy must set one of each and clear what the client sent \
             (docs/forward-auth.md)"
        );
        return error_page(
            &gw,
            StatusCode::FORBIDDEN,
            "Request refused",
            "The proxy in front sent two different original requests.",
        );
    }
    // A WebSocket from another site's page would carry the user's cookie
    // into a socket that page drives: refused like `signoff serve`
    // refuses it. Proxies pass the client's headers to the check (nginx's
    // auth_request drops `Upgrade` but keeps `Sec-WebSocket-Key` and
    // `Origin`). Without --public-url the `Host` here is signoff's, not
    // the browser's: only what the browser marks cross-site is known.
    // With `[[app]]`s, the app and the site are the forwarded host's.
    let forwarded_host = first(headers, &[header_names::X_FORWARDED_HOST]);
    let site = gw.routes.site_of_host(forwarded_host);
    let foreign = if gw.settings.public_url_given {
        !tunnel::origin_allowed(&gw, site, headers)
    } else {
        tunnel::marked_cross_site(headers)
    };
    if tunnel::opens_a_socket(headers) && foreign {
        return tunnel::cross_site(headers);
    }
    // The rules decide on the request the proxy holds: its method, host
    // (`X-Forwarded-Host`) and raw path. What the proxy did not send
    // counts as any value and as none, so the request must pass both.
    let original = original(headers);
    let method = original.method.as_ref().unwrap_or(req.method()).clone();
    let path = forwarded_path(headers);
    let unknown_host = forwarded_host.is_some_and(|h| !gw.routes.knows_host(h));
    if gw.routes.has_apps() && (forwarded_host.is_none() || path.is_none() || unknown_host) {
        tracing::warn!(
            "refused: with [[app]]s the proxy must send X-Forwarded-Host, naming the public \
             host or an app's, and the original URI (X-Forwarded-Uri or X-Original-URI), or \
             the app is not known (docs/apps.md)"
        );
        return error_page(
            &gw,
            StatusCode::FORBIDDEN,
            "Request refused",
            "The proxy in front did not say which host and path the request is for.",
        );
    }
    let app = match gw.routes.app_for(
        forwarded_host.or_else(|| gw.settings.public_url_given.then(|| &*gw.public.host_name)),
        path.unwrap_or("/"),
    ) {
        Ok(app) => app,
        Err(no_app) => return apps::refuse(&gw, no_app),
    };
    let access = gw.rules.load();
    let (rules_method, method_override) =
        methods(original.method.as_ref().map(Method::as_str), headers);
    let needs = access.for_app(app).needs(
        &RequestFacts::new(rules_method, forwarded_host, path).method_override(method_override),
    );
    // Public, like `signoff serve`: no session needed, none looked up, and
    // no identity for the app.
    if needs.is_public() {
        let mut r = StatusCode::OK.into_response();
        r.extensions_mut().insert(QuietLog);
        return r;
    }
    let cookie = cookies::read(headers, &gw.cookie.name);
    let presented = cookie.or_else(|| bearer(headers));
    // An access token (token mode): checked like on proxied requests.
    let who = match (cookie, presented) {
        (None, Some(raw)) if kind_of(raw) == TokenKind::Access => {
            token_mode::identify_bearer(&gw, raw).await
        }
        _ => Who::from(signed_in::validate(&gw, &gw.sessions, presented, site).await),
    };
    let navigable = wants_html(headers) && matches!(method, Method::GET | Method::HEAD);
    let audience = match (navigable, redirect_mode(query.as_deref())) {
        (true, true) => Audience::Browser,
        (true, false) => Audience::LoginHeader,
        (false, _) => Audience::Api,
    };
    match who {
        Who::Known(identity) => match needs.decide(Some(&identity.member(gw.sessions.now()))) {
            Decision::Allow => granted(identity),
            refused => access::refuse(
                &gw,
                refused,
                Some(&identity),
                audience,
                original.next,
                false,
            ),
        },
        Who::Unavailable => unavailable(&gw),
        Who::BadBearer(why) => token_mode::invalid_token(&why),
        Who::Anonymous { stale } => {
            // Only a stale cookie is expired: a bad bearer token is the
            // client's to drop.
            let stale = stale && cookie.is_some();
            access::refuse(
                &gw,
                needs.decide(None),
                None,
                audience,
                original.next,
                stale,
            )
        }
    }
}

/// 200 with the identity headers for the proxy to copy upstream.
fn granted(identity: signed_in::Identity) -> Response {
    let mut r = StatusCode::OK.into_response();
    // The proxy logs the request it let through; a second info
    // line per request here would double the log for nothing.
    r.extensions_mut().insert(QuietLog);
    let h = r.headers_mut();
    // Room for the identity and what the way out adds (no-store,
    // nosniff, the length): one allocation, no regrowth.
    h.reserve(12);
    if let Some(v) = identity.auth_time() {
        h.insert(header_names::X_SIGNOFF_AUTH_TIME, v);
    }
    let groups = Some(identity.groups())
        .filter(|g| !g.is_empty())
        .map(str::to_owned);
    let email = identity.session.data.get(super::oidc::EMAIL_KEY).cloned();
    for (name, value) in [
        (header_names::X_SIGNOFF_USER, Some(identity.user)),
        (
            header_names::X_SIGNOFF_SESSION,
            Some(identity.session.handle.to_string()),
        ),
        (header_names::X_SIGNOFF_CSRF, identity.csrf),
        (header_names::X_SIGNOFF_GROUPS, groups),
        (header_names::X_SIGNOFF_EMAIL, email),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn each_forwarded_header_form_is_read() {
        let caddy = headers(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/a?b=1"),
        ]);
        assert_eq!(
            original(&caddy),
            Original {
                method: Some(Method::POST),
                next: "/a?b=1"
            }
        );
        let nginx = headers(&[("x-original-method", "GET"), ("x-original-uri", "/n")]);
        assert_eq!(
            original(&nginx),
            Original {
                method: Some(Method::GET),
                next: "/n"
            }
        );
        // X-Forwarded-* wins when both are present.
        let both = headers(&[("x-original-uri", "/n"), ("x-forwarded-uri", "/f")]);
        assert_eq!(original(&both).next, "/f");
        // Missing headers: no method, back to the root.
        assert_eq!(
            original(&HeaderMap::new()),
            Original {
                method: None,
                next: "/"
            }
        );
        // Blank values count as missing.
        let blank = headers(&[("x-forwarded-uri", "  "), ("x-original-uri", "/n")]);
        assert_eq!(original(&blank).next, "/");
        assert_eq!(
            original(&headers(&[("x-forwarded-method", "GE T")])).method,
            None
        );
    }

    #[test]
    fn hostile_forwarded_uris_become_the_root() {
        for hostile in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "/%2F%2Fevil.example",
            "/%252F%252Fevil.example",
            "/%5Cevil.example",
            "javascript:alert(1)",
            "evil.example",
            "/\t/evil.example",
        ] {
            let h = headers(&[("x-forwarded-uri", hostile)]);
            assert_eq!(original(&h).next, "/", "{hostile:?}");
        }
        let long = format!("/{}", "a".repeat(signoff::web::redirect::MAX_NEXT_LEN));
        assert_eq!(original(&headers(&[("x-forwarded-uri", &long)])).next, "/");
    }

    #[test]
    fn the_forwarded_path_is_raw_and_origin_form() {
        let path = |v: &str| forwarded_path(&headers(&[("x-original-uri", v)])).map(str::to_owned);
        assert_eq!(path("/public?a=1").as_deref(), Some("/public"));
        assert_eq!(path("/admin#/x.png").as_deref(), Some("/admin"));
        assert_eq!(path("/admin#x?y").as_deref(), Some("/admin"));
        assert_eq!(
            path("/private/a/..%2F..%2Fpublic").as_deref(),
            Some("/private/a/..%2F..%2Fpublic")
        );
        assert_eq!(path("http://host/public"), None);
        assert_eq!(path("public"), None);
        assert_eq!(path(" "), None);
        assert_eq!(forwarded_path(&HeaderMap::new()), None);
        let both = headers(&[("x-original-uri", "/public"), ("x-forwarded-uri", "/p")]);
        assert_eq!(forwarded_path(&both), Some("/p"));
    }

    #[test]
    fn original_request_headers_must_agree() {
        let disagree = |pairs: &[(&str, &str)]| spellings_disagree(&headers(pairs));
        assert!(!disagree(&[]));
        assert!(!disagree(&[
            ("x-forwarded-uri", "/a"),
            ("x-original-uri", "/a")
        ]));
        assert!(disagree(&[
            ("x-forwarded-uri", "/a"),
            ("x-original-uri", "/b")
        ]));
        assert!(disagree(&[
            ("x-forwarded-method", "GET"),
            ("x-original-method", "PUT")
        ]));
        for name in [
            "x-forwarded-uri",
            "x-original-uri",
            "x-forwarded-method",
            "x-original-method",
            "x-forwarded-host",
        ] {
            assert!(!disagree(&[(name, "a")]), "{name}");
            assert!(!disagree(&[(name, "a"), (name, " a ")]), "{name}");
            assert!(disagree(&[(name, "a"), (name, "b")]), "{name}");
            assert!(disagree(&[(name, "b"), (name, "a"), (name, "b")]), "{name}");
            assert!(disagree(&[(name, "a"), (name, "")]), "{name}");
        }
        // A host list is two hosts; a comma in a URI is just a comma.
        assert!(disagree(&[("x-forwarded-host", "evil.test, app.test")]));
        assert!(!disagree(&[("x-forwarded-host", "app.test, app.test")]));
        assert!(!disagree(&[("x-forwarded-uri", "/a,b")]));
        assert!(!disagree(&[
            ("x-original-uri", "/a,b"),
            ("x-original-uri", "/a,b")
        ]));
        // Two URIs joined into one line.
        assert!(disagree(&[("x-forwarded-uri", "/x, /admin")]));
        assert!(disagree(&[("x-original-uri", " /x,\t/admin ")]));
        assert!(!disagree(&[("x-original-uri", " /x ")]));
    }

    #[test]
    fn the_redirect_flag() {
        assert!(!redirect_mode(None));
        assert!(!redirect_mode(Some("")));
        assert!(redirect_mode(Some("redirect=1")));
        assert!(redirect_mode(Some("x=2&redirect")));
        assert!(redirect_mode(Some("redirect=true")));
        assert!(!redirect_mode(Some("redirect=0")));
        assert!(!redirect_mode(Some("redirect=false")));
        assert!(!redirect_mode(Some("redirects=1")));
    }

    #[test]
    fn bearer_tokens() {
        let h = |v: &str| headers(&[("authorization", v)]);
        assert_eq!(bearer(&h("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&h("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&h("Basic abc")), None);
        assert_eq!(bearer(&h("Bearer")), None);
        assert_eq!(bearer(&h("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
