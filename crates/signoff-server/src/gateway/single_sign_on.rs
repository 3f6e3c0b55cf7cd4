//! One sign-in and one sign-out across app hosts (`[[app]]`s on hosts of
//! their own; docs/apps.md, "One sign-in across hosts").
//!
//! Users sign in on the central host (the public URL's). Every other app
//! host keeps its own session, in its own host-only cookie, made from the
//! central one without a password:
//!
//! 1. `PREFIX/login` on an app host sets a short-lived, host-only *state*
//!    cookie and sends the browser to `PREFIX/sso` on the central host.
//! 2. There, a signed-in user gets a *hand-over*: an anonymous session
//!    good for [`HANDOVER_LIFETIME`], holding the site, the central
//!    session's handle, the state and where to go next, and the browser is
//!    sent to `PREFIX/sso/callback` on the app host with its token. (A user
//!    not signed in signs in first and comes back.)
//! 3. The callback takes the hand-over out of the store (once: a replay
//!    finds nothing), checks the state against the browser's cookie (so
//!    nobody can sign a victim in as someone else), and makes the app
//!    host's session: same user and groups, the central session's
//!    password time and no later end, linked to it
//!    ([`signoff::NewSession::linked_to`]). If
//!    the central session ended meanwhile, the new one is ended at once.
//!
//! Signing out on any host ends the central session and every session
//! made from it ([`end_linked`]), on every node.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use signoff::{Actor, AuditEvent, AuditKind, NewSession, Session, SessionData, SessionHandle};

use super::apps::Site;
use super::client_addr::ClientAddr;
use super::error_pages::{error_page, unavailable};
use super::signed_in::{self, Auth};
use super::{cookies, redirect, AppState, Gateway, GROUPS_KEY, SITE_KEY, USER_NAME_KEY};

/// How long a hand-over may wait to be taken on the app host.
const HANDOVER_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the state cookie lives: the time to sign in on the central
/// host, if the user must.
const STATE_LIFETIME_SECS: u64 = 600;

/// The hand-over's data keys. A hand-over is an anonymous session, so it
/// signs nobody in anywhere, even presented as a cookie.
const HANDOVER_SITE: &str = "signoff.handover.site";
const HANDOVER_PARENT: &str = "signoff.handover.parent";
const HANDOVER_STATE: &str = "signoff.handover.state";
const HANDOVER_NEXT: &str = "signoff.handover.next";

/// The single sign-on routes: `PREFIX/sso` (central host) and
/// `PREFIX/sso/callback` (app hosts).
pub(super) fn routes(gw: &Gateway) -> Router<Arc<Gateway>> {
    let p = &gw.settings.prefix;
    Router::new()
        .route(&format!("{p}/sso"), get(hand_over))
        .route(&format!("{p}/sso/callback"), get(take_over))
}

/// The state cookie's name: the session cookie's, with `-sso` (so a
/// `__Host-` name keeps its prefix).
fn state_cookie_name(gw: &Gateway) -> String {
    format!("{}-sso", gw.cookie.name)
}

/// `Set-Cookie` for the state cookie.
fn state_cookie(gw: &Gateway, value: &str, max_age: u64) -> HeaderValue {
    cookies::helper(&state_cookie_name(gw), value, max_age, gw.cookie.secure)
}

/// Where an app host sends a browser on the central host.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    /// `PREFIX/login`: signed in there already, or sign in first.
    SignIn,
    /// `PREFIX/reauth` (a rule's `fresh`): the password again first, even
    /// when signed in.
    Reauthenticate,
}

/// `PREFIX/login` or `PREFIX/reauth` on an app host: no password is typed
/// here; the browser goes to the central host with a fresh state, `next`
/// kept, and comes back with a hand-over.
pub(super) fn start(gw: &Gateway, site: &Site, next: Option<&str>, entry: Entry) -> Response {
    let next = redirect::next_or_root(next);
    let state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hand_over = format!(
        "{}/sso?site={}&state={state}&next={}",
        gw.settings.prefix,
        redirect::encode(&site.host),
        redirect::encode(next)
    );
    let location = match entry {
        Entry::SignIn => format!("{}{hand_over}", gw.settings.public_origin),
        Entry::Reauthenticate => format!(
            "{}{}/reauth?next={}",
            gw.settings.public_origin,
            gw.settings.prefix,
            redirect::encode(&hand_over)
        ),
    };
    let mut r = redirect::away(&location);
    r.headers_mut().append(
        header::SET_COOKIE,
        state_cookie(gw, &state, STATE_LIFETIME_SECS),
    );
    r
}

#[derive(Deserialize)]
struct HandOverQuery {
    site: Option<String>,
    state: Option<String>,
    next: Option<String>,
}

/// A state as [`start`] makes them: 43 base64url characters.
fn plausible_state(state: &str) -> bool {
    state.len() == 43
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `PREFIX/sso` on the central host: a hand-over for a signed-in user,
/// sent to the app host; anyone else signs in first.
async fn hand_over(
    State(gw): AppState,
    ClientAddr(client_ip): ClientAddr,
    Query(q): Query<HandOverQuery>,
    headers: HeaderMap,
) -> Response {
    let site = q.site.as_deref().and_then(|h| gw.routes.site_named(h));
    let (Some(site), Some(state)) = (site, q.state.as_deref().filter(|s| plausible_state(s)))
    else {
        return error_page(
            &gw,
            StatusCode::BAD_REQUEST,
            "Sign-in link not valid",
            "This sign-in link does not name an application of this site. Open the \
             application's address and sign in from there.",
        );
    };
    let next = redirect::next_or_root(q.next.as_deref());
    let identity = match signed_in::authenticate(&gw, &headers).await {
        Auth::SignedIn(a) => a,
        Auth::Unavailable => return unavailable(&gw),
        Auth::Anonymous { .. } => {
            // Sign in here first, then come back to this very request.
            let back = format!(
                "{}/sso?site={}&state={state}&next={}",
                gw.settings.prefix,
                redirect::encode(&site.host),
                redirect::encode(next)
            );
            return redirect::away(&signed_in::login_url(&gw.settings.prefix, &back));
        }
    };
    let mut data = SessionData::new();
    data.insert(HANDOVER_SITE.to_owned(), site.host.clone());
    data.insert(
        HANDOVER_PARENT.to_owned(),
        identity.session.handle.to_string(),
    );
    data.insert(HANDOVER_STATE.to_owned(), state.to_owned());
    data.insert(HANDOVER_NEXT.to_owned(), next.to_owned());
    let until = gw.sessions.now().plus(HANDOVER_LIFETIME);
    let new = NewSession::anonymous()
        .reserved_data(data)
        .ip(client_ip.to_string())
        .ends_by(until);
    let issued = match gw.sessions.create(new).await {
        Ok(issued) => issued,
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not make a single sign-on hand-over");
            return unavailable(&gw);
        }
    };
    redirect::away(&format!(
        "{}{}/sso/callback?code={}&state={state}",
        site.origin,
        gw.settings.prefix,
        issued.token.expose()
    ))
}

#[derive(Deserialize)]
struct TakeOverQuery {
    code: Option<String>,
    state: Option<String>,
}

/// Why a hand-over was not taken.
fn refused(gw: &Gateway, why: &'static str) -> Response {
    tracing::info!(target: "signoff::auth", why, "refused a single sign-on hand-over");
    let mut r = error_page(
        gw,
        StatusCode::BAD_REQUEST,
        "Sign-in link not valid",
        "This sign-in link has been used, has expired, or was not started in this browser. \
         Open the application's address again to sign in.",
    );
    r.headers_mut()
        .append(header::SET_COOKIE, state_cookie(gw, "", 0));
    r
}

/// `PREFIX/sso/callback` on an app host: takes the hand-over and makes
/// this host's session.
async fn take_over(
    State(gw): AppState,
    ClientAddr(client_ip): ClientAddr,
    Query(q): Query<TakeOverQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(site) = gw.routes.site_of(&headers) else {
        return error_page(
            &gw,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page.",
        );
    };
    let expected_state = cookies::read(&headers, &state_cookie_name(&gw)).unwrap_or("");
    let (Some(code), Some(state)) = (q.code.as_deref(), q.state.as_deref()) else {
        return refused(&gw, "no code or state");
    };
    // Taken out of the store before anything else is checked: a
    // hand-over shown to this callback is used up, whatever the outcome,
    // and only one request ever gets it. A session's own token sent as
    // `code` ends nothing.
    let handover = match gw.uncached.take_once(code, HANDOVER_SITE).await {
        Ok(Some(s)) => s,
        Ok(None) => return refused(&gw, "used, expired, unknown or not a hand-over"),
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not take a single sign-on hand-over");
            return unavailable(&gw);
        }
    };
    // The state ties the hand-over to this browser: without it, anyone
    // could send a victim here with a hand-over of their own account.
    if !plausible_state(state)
        || !bool::from(subtle::ConstantTimeEq::ct_eq(
            state.as_bytes(),
            expected_state.as_bytes(),
        ))
    {
        return refused(&gw, "the state is not this browser's");
    }
    let now = gw.sessions.now();
    let data = &handover.data;
    let fits = data.get(HANDOVER_SITE) == Some(&site.host)
        && data.get(HANDOVER_STATE).map(String::as_str) == Some(state);
    let parent_handle = data
        .get(HANDOVER_PARENT)
        .and_then(|h| h.parse::<SessionHandle>().ok());
    let (true, Some(parent_handle)) = (fits, parent_handle) else {
        return refused(&gw, "expired, or for another host or browser");
    };
    let next = redirect::next_or_root(data.get(HANDOVER_NEXT).map(String::as_str)).to_owned();
    let parent = match live_central(&gw, &parent_handle).await {
        Ok(Some(parent)) => parent,
        Ok(None) => return refused(&gw, "the central session has ended"),
        Err(()) => return unavailable(&gw),
    };
    let Some(user_id) = parent.user_id.clone() else {
        return refused(&gw, "the central session has no user");
    };
    let mut child_data = SessionData::new();
    for key in [USER_NAME_KEY, GROUPS_KEY]
        .into_iter()
        .chain(super::oidc::COPIED_KEYS)
    {
        if let Some(v) = parent.data.get(key) {
            child_data.insert(key.to_owned(), v.clone());
        }
    }
    child_data.insert(SITE_KEY.to_owned(), site.host.clone());
    let mut new = NewSession::for_user(user_id)
        .reserved_data(child_data)
        .linked_to(&parent, gw.sessions.policy())
        .ip(client_ip.to_string());
    if let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        new = new.user_agent(super::sign_in::truncate(ua, signoff::MAX_USER_AGENT_BYTES));
    }
    // A session this browser already had on this host is replaced.
    let previous = cookies::read(&headers, &gw.cookie.name);
    let issued = match gw.sessions.login(previous, new).await {
        Ok(issued) => issued,
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not create a session");
            return unavailable(&gw);
        }
    };
    // A sign-out that ended the central session after the look above has
    // missed this new session when it ended the linked ones: look again
    // before the token leaves, and end it if so.
    match live_central(&gw, &parent_handle).await {
        Ok(Some(_)) => {}
        outcome => {
            if let Err(e) = gw.sessions.end(issued.token.expose(), Actor::Policy).await {
                tracing::warn!(error = %e, "could not end a session whose central session ended");
            }
            return match outcome {
                Err(()) => unavailable(&gw),
                _ => refused(&gw, "the central session ended during the hand-over"),
            };
        }
    }
    tracing::info!(target: "signoff::auth", site = %site.host, session = %issued.session.handle, "single sign-on");
    gw.audit(
        AuditEvent::new(AuditKind::LoginSucceeded, now)
            .user(
                issued.session.user_id.as_ref(),
                parent.data.get(USER_NAME_KEY).map(String::as_str),
            )
            .session(&issued.session.handle)
            .by(Actor::User)
            .reason("single_sign_on")
            .ip(client_ip),
    )
    .await;
    let mut r = redirect::away(&next);
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, cookies::issue(&gw, &issued));
    h.append(header::SET_COOKIE, state_cookie(&gw, "", 0));
    r
}

/// The central session with this handle, if it is live: read from the
/// store, never a cache. `Err` when the store cannot answer.
async fn live_central(gw: &Gateway, handle: &SessionHandle) -> Result<Option<Session>, ()> {
    match gw.uncached.validate_handle(handle).await {
        Ok(s) if s.user_id.is_some() && !s.data.contains_key(SITE_KEY) => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(signoff::SessionError::Store(e)) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not read a central session");
            Err(())
        }
        Err(_) => Ok(None),
    }
}

/// Ends the rest of the sign-in of a session that has just ended
/// (`ended`, as read before): the central session and every app host's
/// session made from it, on every node (each end goes over the revocation
/// bus). A no-op without app hosts of their own.
///
/// # Errors
/// A store error: then not all of them may have ended, and the sign-out
/// must not be reported as done.
pub(super) async fn end_linked(
    gw: &Gateway,
    ended: &Session,
    by: Actor,
) -> Result<usize, signoff::SessionError> {
    if !gw.routes.has_sites() {
        return Ok(0);
    }
    gw.sessions.end_linked(ended, by).await
}

/// The gate in front of signoff's own pages on an app host: `login`
/// starts a single sign-on; what [`served_on_app_hosts`] names is
/// answered; any other page is the central host's (a GET goes there).
pub(super) async fn app_host_gate(
    State(gw): AppState,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(site) = gw.routes.site_of(req.headers()) else {
        return next.run(req).await;
    };
    let prefix = &gw.settings.prefix;
    let path = req.uri().path();
    let readable = req.method() == Method::GET || req.method() == Method::HEAD;
    let entry = match path.strip_prefix(prefix.as_str()) {
        Some("/login") => Some(Entry::SignIn),
        Some("/reauth") => Some(Entry::Reauthenticate),
        _ => None,
    };
    if let (Some(entry), true) = (entry, readable) {
        #[derive(Deserialize)]
        struct NextQuery {
            next: Option<String>,
        }
        let q = Query::<NextQuery>::try_from_uri(req.uri()).ok();
        return start(&gw, site, q.as_ref().and_then(|q| q.next.as_deref()), entry);
    }
    if served_on_app_hosts(prefix, path, req.method()) {
        return next.run(req).await;
    }
    if readable {
        let pq = req.uri().path_and_query().map_or(path, |pq| pq.as_str());
        return redirect::away(&format!("{}{pq}", gw.settings.public_origin));
    }
    error_page(
        &gw,
        StatusCode::NOT_FOUND,
        "Not found",
        "This page is on the sign-in host, not on this application's.",
    )
}

/// Whether a request to `PREFIX/…` on an app host may be answered there:
/// what the guard, the sign-out, the hand-over and the pages' assets need.
/// Everything else (the sessions page, password, admin, token mode) lives
/// on the central host.
pub(super) fn served_on_app_hosts(prefix: &str, path: &str, method: &Method) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    match rest {
        "/logout" => true,
        "/signed-out" | "/status" | "/guard.js" | "/sso/callback" | "/signoff.css"
        | "/signoff.js" | "/brand.css" | "/brand/extra.css" | "/brand/logo" | "/healthz"
        | "/auth" => method == Method::GET || method == Method::HEAD || rest == "/auth",
        _ => false,
    }
}
