//! The proxy: every request outside the prefix, let through to the
//! upstream with a live session (or on a public path); which headers go
//! through, which are replaced, and what every authenticated response
//! must carry.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{Method, Request, Response, StatusCode, Uri, Version};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use signoff::access::Decision;
pub use signoff::web::no_store;

use super::access::{self as rules, Audience};
use super::apps::{self, AppIndex, Site};
use super::client_addr::{is_trusted, peer_ip};
use super::error_pages::{bad_gateway, error_page, unavailable};
use super::guard::{encoding, PageRequest, Unreadable};
use super::header_names;
use super::identity_headers::is_spoofable;
use super::signed_in::{self, bearer, wants_html, Identity, Who};
use super::tunnel::{self, Upgrade};
use super::{long_response, origin, token_mode, upstream_client, AppState, Gateway};
use crate::listener::{self, UPSTREAM_SLOT_WAIT};

/// The fallback: everything not under the prefix.
pub(super) fn routes(_gw: &Gateway) -> Router<Arc<Gateway>> {
    Router::new().fallback(proxy)
}

async fn proxy(State(gw): AppState, req: Request<Body>) -> Response<Body> {
    // The site by the client's `Host`; the app by the host the upstream
    // will see (the rules match that one too).
    let site = gw.routes.site_of(req.headers());
    let app = match gw.routes.app_for(
        rules::proxied_host(&gw, site, req.headers(), req.uri()),
        req.uri().path(),
    ) {
        Ok(app) => app,
        Err(no_app) => return apps::refuse(&gw, no_app),
    };
    if gw.routes.target(app).is_none() {
        return error_page(
            &gw,
            StatusCode::NOT_FOUND,
            "Not found",
            "This signoff serves forward-auth only here; there is no application behind it.",
        );
    }
    let peer = peer_ip(req.extensions());
    let upgrade = tunnel::requested(&req);
    if upgrade && !tunnel::protocol_allowed(req.headers()) {
        return tunnel::not_tunnelled();
    }
    if upgrade && !tunnel::origin_allowed(&gw, site, req.headers()) {
        return tunnel::cross_site(req.headers());
    }
    // The rules in force: a cheap guard, given back before the request
    // goes upstream (a long response must not hold it).
    let access = gw.rules.load();
    let needs = access.for_app(app).needs(&rules::proxied_facts(
        &gw,
        site,
        req.method().as_str(),
        req.headers(),
        req.uri(),
    ));
    if needs.is_public() {
        drop(needs);
        drop(access);
        return forward(&gw, app, site, req, peer, None).await;
    }
    let who = match bearer(req.headers()) {
        Some(raw) if gw.tokens.is_some() => token_mode::identify_bearer(&gw, raw).await,
        _ => Who::from(signed_in::authenticate(&gw, req.headers()).await),
    };
    let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    // A socket cannot follow a redirect to the login page: 401.
    let audience = if wants_html(req.headers()) && !upgrade {
        Audience::Browser
    } else {
        Audience::Api
    };
    match who {
        Who::Known(identity) => {
            let decision = needs.decide(Some(&identity.member(gw.sessions.now())));
            if decision != Decision::Allow {
                return rules::refuse(&gw, decision, Some(&identity), audience, next, false);
            }
            drop(needs);
            drop(access);
            let asked = tokio::time::Instant::now();
            let response = forward(&gw, app, site, req, peer, Some(&identity)).await;
            long_response::ends_with_session(&gw.watch, response, identity.session, asked)
        }
        Who::Unavailable => unavailable(&gw),
        Who::BadBearer(why) => token_mode::invalid_token(&why),
        Who::Anonymous { stale } => {
            rules::refuse(&gw, needs.decide(None), None, audience, next, stale)
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header_names::KEEP_ALIVE,
    header_names::PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let found = present(headers, &HOP_BY_HOP);
    // HOP_BY_HOP[0] is `Connection`: only then are there more names.
    if found[0] {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    remove_found(headers, &HOP_BY_HOP, found);
}

/// Removes every header named in `names`. One pass over the names the
/// map holds, then a removal only for those there: most messages carry
/// none of them, and a removal hashes its name even when there is nothing
/// to remove (about 120 instructions each, 29 per proxied request before;
/// docs/benchmarks.md, "The gateway's header edits").
pub(super) fn remove_each<const N: usize>(headers: &mut HeaderMap, names: &[HeaderName; N]) {
    let found = present(headers, names);
    remove_found(headers, names, found);
}

/// Which of `names` the map holds (in any case: names are lowercase).
pub(super) fn present<const N: usize>(headers: &HeaderMap, names: &[HeaderName; N]) -> [bool; N] {
    let mut found = [false; N];
    for held in headers.keys() {
        if let Some(i) = names.iter().position(|n| n == held) {
            found[i] = true;
        }
    }
    found
}

fn remove_found<const N: usize>(
    headers: &mut HeaderMap,
    names: &[HeaderName; N],
    found: [bool; N],
) {
    for (name, found) in names.iter().zip(found) {
        if found {
            headers.remove(name);
        }
    }
}

/// Whether a cookie called `cookie` is one of signoff's own, given the
/// session cookie's `name`: the session cookie, or the single sign-on
/// state cookie (`NAME-sso`, docs/apps.md), which an app must neither read
/// nor set.
pub(super) fn is_own_cookie(cookie: &str, name: &str) -> bool {
    cookie == name
        || matches!(
            cookie.strip_prefix(name),
            Some("-sso" | "-oidc" | "-relogin")
        )
}

/// The `Cookie` header without signoff's own cookies: the session token is
/// for signoff only, never for the upstream (which might log it).
fn cookie_without(headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let mut kept_pairs = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !is_own_cookie(pair.split_once('=').map_or(*pair, |(n, _)| n.trim()), name));
    // Most requests carry signoff's cookie alone: nothing to build.
    let first = kept_pairs.next()?;
    let mut joined = String::with_capacity(first.len() + 64);
    joined.push_str(first);
    for pair in kept_pairs {
        joined.push_str("; ");
        joined.push_str(pair);
    }
    HeaderValue::from_str(&joined).ok()
}

fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

/// An IP address as a header value, formatted without a `String`.
fn address_value(ip: IpAddr) -> Option<HeaderValue> {
    use std::io::Write as _;
    // The longest IPv6 text is 45 bytes.
    let mut text = [0u8; 64];
    let mut rest = &mut text[..];
    write!(rest, "{ip}").ok()?;
    let len = 64 - rest.len();
    HeaderValue::from_bytes(&text[..len]).ok()
}

/// Sends the request upstream (to `app`'s, arrived at `site`) and
/// prepares the answer for the client.
pub(super) async fn forward(
    gw: &Gateway,
    app: AppIndex,
    site: Option<&Site>,
    req: Request<Body>,
    peer: IpAddr,
    auth: Option<&Identity>,
) -> Response<Body> {
    let peer_is_trusted = is_trusted(&peer, &gw.settings.trusted_proxies);
    let mut req = req;
    let upgrade = Upgrade::take(&mut req);
    let (parts, body) = req.into_parts();
    let is_head = parts.method == Method::HEAD;
    let max = gw.settings.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return too_large(gw);
    }

    let Some(target) = gw.routes.target(app) else {
        return error_page(
            gw,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page.",
        );
    };
    let authority = target.authority.clone();
    // A clone shares the request's bytes (nothing to copy or parse again).
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let scheme = target.scheme;
    let uri = match Uri::builder()
        .scheme(scheme)
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
    {
        Ok(uri) => uri,
        Err(_) => return error_page(gw, StatusCode::BAD_REQUEST, "Bad request", "Malformed URL."),
    };

    let original_host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| header_value(a.as_str())));
    // The answer may get the guard: it must come in a coding the guard
    // can read (docs/security.md, "the guard under every encoding").
    let page = (auth.is_some() && gw.settings.inject_guard).then(|| PageRequest {
        is_head,
        compress: encoding::for_client(&parts.headers),
        status_url: status_url(gw, site, original_host.as_ref()),
    });
    let mut headers = parts.headers;
    if page.is_some() {
        let offered = encoding::for_upstream(&headers);
        headers.insert(header::ACCEPT_ENCODING, offered);
    }
    strip_hop_by_hop(&mut headers);
    if let Some(upgrade) = &upgrade {
        upgrade.ask(&mut headers);
    }
    let prior_for = if peer_is_trusted {
        headers
            .get_all(header_names::X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let spoofable: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_spoofable(n.as_str()))
        .cloned()
        .collect();
    for name in spoofable {
        headers.remove(name);
    }
    match cookie_without(&headers, &gw.cookie.name) {
        Some(v) => {
            headers.insert(header::COOKIE, v);
        }
        None => {
            headers.remove(header::COOKIE);
        }
    }
    // With a configured public URL the host is known; don't let a
    // client inject another one into the links the upstream builds. An
    // app host of its own is named as browsers see it.
    let host = if let Some(site) = site {
        header_value(origin::host_of(&site.origin))
    } else if gw.settings.public_url_given {
        // Made once (Gateway::new): the same for every request.
        gw.public.host.clone()
    } else {
        original_host
    };
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(header_names::X_FORWARDED_HOST, host);
    }
    // An HTTPS upstream gets its own name, the one its certificate and
    // SNI carry (docs/gateway.md, "HTTPS upstreams").
    if scheme == "https" {
        if let Some(own) = header_value(authority.as_str()) {
            headers.insert(header::HOST, own);
        }
    }
    // Append the address this request really came from.
    let forwarded_for = if prior_for.is_empty() {
        address_value(peer)
    } else {
        header_value(&format!("{prior_for}, {peer}"))
    };
    if let Some(v) = forwarded_for {
        headers.insert(header_names::X_FORWARDED_FOR, v);
    }
    let proto = if gw.settings.secure { "https" } else { "http" };
    headers.insert(
        header_names::X_FORWARDED_PROTO,
        HeaderValue::from_static(proto),
    );
    if let Some(auth) = auth {
        if let Some(v) = header_value(&auth.user) {
            headers.insert(header_names::X_SIGNOFF_USER, v);
        }
        if let Some(v) = header_value(&auth.session.handle.to_string()) {
            headers.insert(header_names::X_SIGNOFF_SESSION, v);
        }
        if let Some(v) = auth.csrf.as_deref().and_then(header_value) {
            headers.insert(header_names::X_SIGNOFF_CSRF, v);
        }
        if let Some(v) = auth.auth_time() {
            headers.insert(header_names::X_SIGNOFF_AUTH_TIME, v);
        }
        if let Some(v) = Some(auth.groups())
            .filter(|g| !g.is_empty())
            .and_then(header_value)
        {
            headers.insert(header_names::X_SIGNOFF_GROUPS, v);
        }
        if let Some(v) = auth
            .session
            .data
            .get(super::oidc::EMAIL_KEY)
            .and_then(|e| header_value(e))
        {
            headers.insert(header_names::X_SIGNOFF_EMAIL, v);
        }
        if auth.strip_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        // The answer will be no-store; a 304 would leave the browser
        // with nothing to show.
        remove_each(
            &mut headers,
            &[header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE],
        );
    }

    // A slot towards the upstream, held until the response body is done.
    let slot = match listener::upstream_slots() {
        Some(slots) => match slots.acquire(auth.is_some()).await {
            Some(slot) => Some(slot),
            None => {
                tracing::warn!(
                    "no upstream slot free within {UPSTREAM_SLOT_WAIT:?}; answering 503"
                );
                let mut r = error_page(
                    gw,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too busy",
                    "The gateway is handling as many requests as it can. Try again in a moment.",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return r;
            }
        },
        None => None,
    };
    let mut upstream_req = Request::new(Body::new(Limited::new(body, max as usize)));
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.version_mut() = Version::HTTP_11;
    *upstream_req.headers_mut() = headers;

    let within = gw.settings.upstream_timeout;
    let response = match tokio::time::timeout(within, gw.client.request(upstream_req)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            if error_chain_has::<LengthLimitError>(&e) {
                return too_large(gw);
            }
            upstream_client::log_failure(&gw.settings, &e);
            return bad_gateway(gw);
        }
        Err(_) => {
            let within = humantime::format_duration(within);
            tracing::warn!(
                "upstream did not send its response headers within {within} \
                 (--upstream-timeout / upstream_timeout); answering 504"
            );
            return error_page(
                gw,
                StatusCode::GATEWAY_TIMEOUT,
                "The application is not answering",
                &format!(
                    "The application behind this gateway did not answer within {within} \
                              (the gateway's upstream_timeout setting). Try again in a moment."
                ),
            );
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return match upgrade {
            Some(upgrade) => tunnel::open(gw, upgrade, response, auth, slot),
            None => {
                tracing::warn!("the upstream switched protocols unasked; refused");
                bad_gateway(gw)
            }
        };
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    drop_own_cookie(&mut parts.headers, &gw.cookie.name);
    if let Some(own) = &target.origin {
        let public = site.map_or(&gw.settings.public_origin, |s| &s.origin);
        own.rewrite_headers(&mut parts.headers, public);
    }
    let mut response = Response::from_parts(parts, Body::new(body.map_err(axum::Error::new)));
    if auth.is_some() {
        no_store(response.headers_mut());
    }
    if let Some(slot) = slot {
        response = response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _held = &slot;
                frame
            }))
        });
    }
    if let Some(page) = page {
        response = match gw.guard.inject_page(response, &page).await.map_err(|u| *u) {
            Ok(response) => response,
            Err(Unreadable { response, coding }) if gw.settings.allow_unguarded_html => {
                tracing::warn!(
                    coding = %coding.0,
                    "a private page went out without the back-button guard: its content \
                     coding cannot be read (allow_unguarded_html is on)"
                );
                response
            }
            Err(Unreadable { coding, .. }) => {
                tracing::error!(
                    coding = %coding.0,
                    "refused a private page the back-button guard cannot read; make the \
                     application use gzip, br or zstd, or set allow_unguarded_html"
                );
                return error_page(
                    gw,
                    StatusCode::BAD_GATEWAY,
                    "This page cannot be shown safely",
                    &format!(
                        "The application sent this page compressed as \"{}\", which signoff \
                         cannot read, so it cannot add the guard that keeps the page from \
                         coming back with the Back button after you sign out. The operator \
                         can make the application use gzip, br or zstd (or turn on \
                         allow_unguarded_html to accept the risk).",
                        coding.0
                    ),
                );
            }
        };
    }
    response
}

/// The status endpoint's absolute URL as the browser sees it, for a
/// CSP source: the public URL's origin, or, without one, the request's
/// own host. `None` for a host a CSP source cannot name (IPv6 literals).
fn status_url(gw: &Gateway, site: Option<&Site>, host: Option<&HeaderValue>) -> Option<Arc<str>> {
    if let Some(site) = site {
        status_url_at(&site.origin, &gw.settings.prefix)
    } else if gw.settings.public_url_given {
        // The same for every request: made once (Gateway::new).
        gw.public.status_url.clone()
    } else {
        let host = host?.to_str().ok()?;
        let scheme = if gw.settings.secure { "https" } else { "http" };
        status_url_at(&format!("{scheme}://{host}"), &gw.settings.prefix)
    }
}

/// [`status_url`] for a browser at `origin`, with signoff's routes under
/// `prefix`.
pub(super) fn status_url_at(origin: &str, prefix: &str) -> Option<Arc<str>> {
    let (_, host) = origin.split_once("://")?;
    let nameable = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    nameable.then(|| format!("{origin}{prefix}/status").into())
}

/// 413 for a body over `max_body_bytes`, naming the setting.
fn too_large(gw: &Gateway) -> Response<Body> {
    let max = gw.settings.max_body_bytes;
    tracing::warn!(
        max_body_bytes = max,
        "refused a request body larger than max_body_bytes ({max} bytes) with 413; \
         raise --max-body-bytes (SIGNOFF_MAX_BODY_BYTES, max_body_bytes) if the app needs \
         larger uploads"
    );
    error_page(
        gw,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request too large",
        &format!(
            "The request body is larger than this site accepts: at most {max} bytes \
             (the gateway's max_body_bytes setting, --max-body-bytes)."
        ),
    )
}

/// The upstream may not set (or clear) signoff's session cookie.
pub(super) fn drop_own_cookie(headers: &mut HeaderMap, name: &str) {
    // Most answers set none of ours: then there is nothing to rebuild.
    if !headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| sets_cookie_named(v.as_bytes(), name))
    {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !sets_cookie_named(v.as_bytes(), name))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Whether a `Set-Cookie` value would come back from the browser as a
/// cookie called `name`: named so, or nameless (`=name=…`, or no `=` at
/// all), which browsers store with an empty name and send back as the bare
/// value, `name=…` (RFC 6265bis §5.6).
fn sets_cookie_named(value: &[u8], name: &str) -> bool {
    let text = String::from_utf8_lossy(value);
    let pair = text.split(';').next().unwrap_or_default();
    let (own_name, own_value) = pair.split_once('=').unwrap_or(("", pair));
    let own_name = own_name.trim();
    if own_name.is_empty() {
        let own_value = own_value.trim();
        is_own_cookie(
            own_value
                .split_once('=')
                .map_or(own_value, |(n, _)| n)
                .trim(),
            name,
        )
    } else {
        is_own_cookie(own_name, name)
    }
}

fn error_chain_has<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<E>() {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `remove_each` leaves the map exactly as removing each name in turn
    /// would: for every subset of names present (standard and custom
    /// names, several values each, sent in upper case), including the
    /// names listed twice, and with headers that must stay.
    #[test]
    fn removing_only_the_names_present_removes_as_one_by_one_would() {
        const NAMES: [HeaderName; 5] = [
            header::IF_NONE_MATCH,
            header::CONNECTION,
            HeaderName::from_static("content-md5"),
            HeaderName::from_static("x-custom"),
            header::IF_NONE_MATCH,
        ];
        let spelt = ["If-None-Match", "CONNECTION", "Content-MD5", "X-Custom"];
        for subset in 0u32..16 {
            let mut h = HeaderMap::new();
            h.append("x-kept", HeaderValue::from_static("1"));
            for (i, name) in spelt.iter().enumerate() {
                if subset & (1 << i) != 0 {
                    let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
                    h.append(name.clone(), HeaderValue::from_static("a"));
                    h.append(name, HeaderValue::from_static("b"));
                }
            }
            h.append("x-kept", HeaderValue::from_static("2"));
            let mut one_by_one = h.clone();
            for name in &NAMES {
                one_by_one.remove(name);
            }
            remove_each(&mut h, &NAMES);
            assert_eq!(h, one_by_one, "subset {subset:04b}");
            assert_eq!(h.get_all("x-kept").iter().count(), 2);
            assert_eq!(h.len(), 2, "subset {subset:04b}: {h:?}");
        }
    }

    #[test]
    fn own_cookie_never_reaches_the_upstream() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; signoff=SECRET; b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("signoff=OTHER"));
        assert_eq!(cookie_without(&h, "signoff").unwrap(), "a=1; b=2");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("signoff=SECRET"));
        assert!(cookie_without(&h, "signoff").is_none());
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("signoff-sso=s; a=1; signoff-ssox=2; signoff=t"),
        );
        assert_eq!(
            cookie_without(&h, "signoff").unwrap(),
            "a=1; signoff-ssox=2",
            "the state cookie is signoff's too"
        );
        assert!(sets_cookie_named(b"signoff-sso=x; Path=/", "signoff"));
        assert!(sets_cookie_named(b"=signoff-sso=x", "signoff"));
        assert!(!sets_cookie_named(b"signoff-other=x", "signoff"));
    }

    #[test]
    fn addresses_become_header_values_as_written() {
        for ip in [
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(address_value(ip).unwrap(), ip.to_string().as_str());
        }
    }

    #[test]
    fn upstream_cannot_set_our_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("signoff=x; Path=/"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark"));
        // Nameless cookies come back from the browser as `signoff=…`.
        for sneaky in [
            "=signoff=x; Path=/",
            " = signoff=x",
            "=signoff",
            "signoff",
            " signoff =x",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(sneaky));
        }
        h.append(header::SET_COOKIE, HeaderValue::from_static("=theme=light"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("signoffx=1"));
        drop_own_cookie(&mut h, "signoff");
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark", "=theme=light", "signoffx=1"]);
        // None of ours (the common case, left as it is), and ours alone.
        let before = h.clone();
        drop_own_cookie(&mut h, "signoff");
        assert_eq!(h, before);
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static("signoff=x"));
        drop_own_cookie(&mut h, "signoff");
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn no_store_replaces_caching_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static("Thu, 01 Jan 2099 00:00:00 GMT"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        no_store(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(h.get(header::ETAG).is_none() && h.get(header::EXPIRES).is_none());
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Cookie"]);
        no_store(&mut h);
        assert_eq!(
            h.get_all(header::VARY).iter().count(),
            2,
            "Cookie added once"
        );
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // Each of RFC 9110's hop-by-hop names, spelt out here rather than
        // taken from HOP_BY_HOP, goes without a Connection header naming it.
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} was passed on");
            assert!(h.contains_key("x-kept"));
        }
    }
}
