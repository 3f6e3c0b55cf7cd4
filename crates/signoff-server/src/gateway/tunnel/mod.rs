//! Upgraded connections (WebSockets, and any other `Upgrade` the upstream
//! accepts) through the proxy: who may open one, the switch of protocols,
//! and the tunnel that carries it until either side closes, it idles out,
//! or its session ends (docs/security.md, invariant 10).
//!
//! Only HTTP/1.1 upgrades are carried. Extended CONNECT over HTTP/2
//! (RFC 8441) is not offered, so browsers open their WebSockets over an
//! HTTP/1.1 connection of their own (docs/gateway.md, "WebSockets").

mod frames;
mod splice;

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Request, Response, StatusCode, Version};
use axum::response::IntoResponse;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::apps::Site;
use super::header_names;
use super::proxy::{drop_own_cookie, no_store, strip_hop_by_hop};
use super::signed_in::Identity;
use super::Gateway;
use crate::listener::{OpenConnection, UpstreamSlot};

/// How long the two ends may take to hand over their connections once the
/// upstream has agreed to switch.
const HANDOVER: Duration = Duration::from_secs(10);

/// Whether `req` asks to switch protocols: HTTP/1.1 with `Upgrade` and
/// `upgrade` among its `Connection` options.
pub(super) fn requested(req: &Request<Body>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|option| option.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether an upgrade may come from where the browser says it comes from.
/// A socket opened with the session cookie is a channel a foreign page
/// could drive (cross-site WebSocket hijacking), and browsers let any page
/// open one: only the public origin may. A client that sends no `Origin`
/// is not a browser and cannot be made to carry someone's cookie.
/// On an app host of its own (`site`), only that host's origin may.
pub(super) fn origin_allowed(gw: &Gateway, site: Option<&Site>, headers: &HeaderMap) -> bool {
    if marked_cross_site(headers) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if let Some(site) = site {
        return origin.eq_ignore_ascii_case(&site.origin);
    }
    let settings = &gw.settings;
    if origin.eq_ignore_ascii_case(&settings.public_origin) {
        return true;
    }
    if settings.public_url_given {
        return false;
    }
    // Without --public-url, the origin is the one the browser used.
    let scheme = if settings.secure { "https" } else { "http" };
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| {
            origin.split_once("://").is_some_and(|(given, rest)| {
                given.eq_ignore_ascii_case(scheme) && rest.eq_ignore_ascii_case(host)
            })
        })
}

/// Whether the protocol asked for is one that is tunnelled: WebSocket,
/// alone. Any protocol that speaks HTTP inside the tunnel (`h2c` and its
/// drafts `h2c-14`, …, `HTTP/2.0`, RFC 2817's `TLS/1.0`) would let a client
/// send requests straight to the upstream, past every per-request check:
/// identity headers unstripped, paths not decided (h2c smuggling). An
/// allow-list, not a deny-list, so no spelling gets through.
pub(super) fn protocol_allowed(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    value
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"websocket")
}

/// The answer to an upgrade to a protocol that is not tunnelled.
pub(super) fn not_tunnelled() -> Response<Body> {
    let mut response = (
        StatusCode::BAD_REQUEST,
        "only WebSocket upgrades are carried through signoff\n",
    )
        .into_response();
    no_store(response.headers_mut());
    response
}

/// Whether a request (or, at forward-auth, the request a proxy asks
/// about) opens a WebSocket. nginx's `auth_request` does not pass
/// `Upgrade` on, but it passes `Sec-WebSocket-Key`, and browsers send
/// `Sec-Fetch-Mode: websocket`.
pub(super) fn opens_a_socket(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers.contains_key(header::SEC_WEBSOCKET_KEY)
        || headers
            .get(header_names::SEC_FETCH_MODE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Whether the browser says another site's page opened it
/// (`Sec-Fetch-Site: cross-site` or `same-site`).
pub(super) fn marked_cross_site(headers: &HeaderMap) -> bool {
    let site = headers
        .get(header_names::SEC_FETCH_SITE)
        .and_then(|v| v.to_str().ok());
    matches!(site, Some("cross-site" | "same-site"))
}

/// The answer to an upgrade from another origin.
pub(super) fn cross_site(headers: &HeaderMap) -> Response<Body> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    tracing::warn!(
        origin = %origin.chars().take(200).collect::<String>(),
        "refused a WebSocket opened from another site; if this origin \
         is where users reach the app, set --public-url to it"
    );
    let mut response = (
        StatusCode::FORBIDDEN,
        "this connection was opened from another site\n",
    )
        .into_response();
    no_store(response.headers_mut());
    response
}

/// A request's side of an upgrade, taken out of it before it goes on.
pub(super) struct Upgrade {
    /// What the client asked to switch to (`websocket`, …).
    protocol: HeaderValue,
    /// The client's connection, once the switch is answered.
    client: OnUpgrade,
    /// The connection's place in the listener (absent in unit tests).
    held: Option<OpenConnection>,
}

impl Upgrade {
    /// Takes the upgrade out of `req`, if it asks for one.
    pub(super) fn take(req: &mut Request<Body>) -> Option<Upgrade> {
        if !requested(req) {
            return None;
        }
        let protocol = req.headers().get(header::UPGRADE)?.clone();
        let held = req.extensions_mut().remove::<OpenConnection>();
        let client = hyper::upgrade::on(&mut *req);
        Some(Upgrade {
            protocol,
            client,
            held,
        })
    }

    /// Puts the upgrade back into headers that lost their hop-by-hop
    /// fields: the upstream is asked to switch too. `Sec-WebSocket-*`
    /// fields are end-to-end and were kept.
    pub(super) fn ask(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    fn is_websocket(&self) -> bool {
        self.protocol
            .to_str()
            .is_ok_and(|p| p.trim().eq_ignore_ascii_case("websocket"))
    }
}

/// The upstream agreed to switch (`response` is its 101): answers the
/// client the same, and carries the connection from then on, under the
/// session of `auth` (none on a public path). The upstream slot `slot` is
/// given back: slots bound requests in progress, and a tunnel is bounded
/// as a connection (`crate::listener::OpenConnection`).
pub(super) fn open(
    gw: &Gateway,
    upgrade: Upgrade,
    mut response: Response<hyper::body::Incoming>,
    auth: Option<&Identity>,
    slot: Option<UpstreamSlot>,
) -> Response<Body> {
    let switched_to = response.headers().get(header::UPGRADE).cloned();
    let same = switched_to.as_ref().is_some_and(|p| {
        p.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(upgrade.protocol.as_bytes().trim_ascii())
    });
    if !same {
        tracing::warn!(
            "the upstream switched to another protocol than the client asked for; refused"
        );
        return super::error_pages::bad_gateway(gw);
    }
    let upstream = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    drop_own_cookie(&mut parts.headers, &gw.cookie.name);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, upgrade.protocol.clone());
    // Watched from now: an end that raced the handshake is seen by the
    // watch's first read of the session.
    let watch = auth.map(|identity| gw.watch.watch(&identity.session));
    let user = auth.map(|identity| identity.user.clone());
    let handle = auth.map(|identity| identity.session.handle);
    drop(slot);
    let limits = splice::Limits {
        watch,
        // Longest a tunnel may carry nothing either way (--tunnel-idle-timeout).
        idle: gw.settings.tunnel_idle_timeout,
        websocket: upgrade.is_websocket(),
        held: upgrade.held,
    };
    let client = upgrade.client;
    tokio::spawn(async move {
        let handover = async { tokio::try_join!(client, upstream) };
        let (client, upstream) = match tokio::time::timeout(HANDOVER, handover).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "an upgrade failed during the handover");
                return;
            }
            Err(_) => {
                tracing::debug!("an upgrade's handover timed out");
                return;
            }
        };
        let started = tokio::time::Instant::now();
        let (ending, carried) =
            splice::run(TokioIo::new(client), TokioIo::new(upstream), limits).await;
        tracing::info!(
            target: "signoff::tunnel",
            user = user.as_deref().unwrap_or("-"),
            session = %handle.map(|h| h.to_string()).unwrap_or_else(|| "-".into()),
            ending = ?ending,
            seconds = started.elapsed().as_secs(),
            bytes_up = carried.up,
            bytes_down = carried.down,
            "tunnel closed"
        );
    });
    Response::from_parts(parts, Body::empty())
}
