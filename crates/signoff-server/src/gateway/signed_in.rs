//! Who a request is from: its session (cookie or bearer token) checked
//! against the store, the gateway as the [`Gate`] of the library's
//! extractors (`SignedIn`, `CsrfForm`, `ClientAddr`), and the answer to a
//! request without a live session.

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use signoff::web::{BackTo, FormRefusal, Gate, NotSignedIn};
use signoff::{Session, SessionError, SessionToken, Sessions};

use super::apps::Site;
use super::error_pages::unavailable;
use super::proxy::no_store;
use super::{cookies, sign_in, Gateway, SITE_KEY, USER_NAME_KEY};

pub(super) use signoff::web::{wants_html, Auth, Authenticated, SignedIn};

/// Who a proxied or forward-auth request is from.
pub struct Identity {
    /// The user's login name.
    pub user: String,
    /// The session, as just validated: what a long response or a tunnel
    /// is watched under.
    pub session: Session,
    /// With a session cookie: the CSRF token the upstream may put in forms.
    pub csrf: Option<String>,
    /// The request carried a session token in `Authorization`, which the
    /// upstream must not see (like the cookie).
    pub strip_authorization: bool,
}

impl Identity {
    /// When the user last entered their password (login or
    /// re-authentication), in whole seconds since the Unix epoch: the
    /// `X-Signoff-Auth-Time` header, which lets an app ask for a fresh
    /// sign-in before a sensitive action (docs/gateway.md).
    /// Absent when it is not known (a provider that did not say).
    pub fn auth_time(&self) -> Option<HeaderValue> {
        self.session
            .auth_at
            .filter(|at| at.as_millis() > 0)
            .map(|at| HeaderValue::from(at.as_millis().div_euclid(1000)))
    }

    fn of_cookie(auth: Authenticated) -> Self {
        Self {
            csrf: Some(signoff::csrf::token_for(&auth.token)),
            user: auth.user,
            session: auth.session,
            strip_authorization: false,
        }
    }
}

/// The outcome of checking a request's credentials.
// Lives on the stack for one request; boxing the identity would cost an
// allocation on every signed-in request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Who {
    Known(Identity),
    /// No usable session; `stale` if the client sent a cookie anyway.
    Anonymous {
        stale: bool,
    },
    /// A bearer token that is not (or no longer) good, and why.
    BadBearer(String),
    /// The store could not answer: fail closed.
    Unavailable,
}

impl From<Auth> for Who {
    fn from(auth: Auth) -> Self {
        match auth {
            Auth::SignedIn(a) => Who::Known(Identity::of_cookie(a)),
            Auth::Anonymous { stale } => Who::Anonymous { stale },
            Auth::Unavailable => Who::Unavailable,
        }
    }
}

/// The request's session cookie, checked for the site its `Host` names.
pub(super) async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Auth {
    let site = gw.routes.site_of(headers);
    validate(
        gw,
        &gw.sessions,
        cookies::read(headers, &gw.cookie.name),
        site,
    )
    .await
}

/// Checks a presented session token (cookie value or bearer token) with a
/// given engine (cached or not), for a request that arrived at `site`
/// (`None`: the central host). A session made for one site is good on
/// that site alone (docs/apps.md, "One sign-in across hosts").
pub(super) async fn validate(
    gw: &Gateway,
    sessions: &Sessions,
    raw: Option<&str>,
    site: Option<&Site>,
) -> Auth {
    let auth = check_token(gw, sessions, raw, site).await;
    if matches!(auth, Auth::Anonymous { .. }) {
        // A connection pinned by a session that has ended is pinned no more.
        crate::listener::note_no_live_session();
    }
    auth
}

async fn check_token(
    gw: &Gateway,
    sessions: &Sessions,
    raw: Option<&str>,
    site: Option<&Site>,
) -> Auth {
    let Some(raw) = raw else {
        return Auth::Anonymous { stale: false };
    };
    let Ok(token) = SessionToken::parse(raw) else {
        return Auth::Anonymous { stale: true };
    };
    match sessions.validate_token(&token).await {
        Ok(session) => match session.data.get(USER_NAME_KEY) {
            Some(user)
                if session.user_id.is_some()
                    && session.data.get(SITE_KEY).map(String::as_str)
                        == site.map(|s| s.host.as_str()) =>
            {
                // An app host's session lives only while the central one
                // it was made from does (docs/apps.md).
                if let Some(parent) = session.data.get(signoff::LINKED_TO_KEY) {
                    match linked_parent_lives(gw, sessions, &session, parent).await {
                        Ok(true) => {}
                        Ok(false) => return Auth::Anonymous { stale: true },
                        Err(()) => return Auth::Unavailable,
                    }
                }
                crate::listener::note_live_session();
                Auth::SignedIn(Authenticated {
                    user: user.clone(),
                    token,
                    session,
                })
            }
            _ => Auth::Anonymous { stale: true },
        },
        Err(SessionError::Store(e)) => {
            gw.count_store_error();
            tracing::error!(error = %e, "session store unavailable; refusing the request");
            Auth::Unavailable
        }
        Err(_) => Auth::Anonymous { stale: true },
    }
}

/// Whether the central session a linked session was made from is live
/// (read through `sessions`, so activity on an app host keeps the central
/// session from idling out). If it is not, the linked session is ended
/// here, so what runs under it (a WebSocket) ends too.
async fn linked_parent_lives(
    gw: &Gateway,
    sessions: &Sessions,
    session: &Session,
    parent: &str,
) -> Result<bool, ()> {
    let live = match parent.parse::<signoff::SessionHandle>() {
        Ok(handle) => match sessions.validate_handle(&handle).await {
            Ok(p) => p.user_id == session.user_id && !p.data.contains_key(SITE_KEY),
            Err(SessionError::Store(e)) => {
                gw.count_store_error();
                tracing::error!(error = %e, "session store unavailable; refusing the request");
                return Err(());
            }
            Err(_) => false,
        },
        Err(_) => false,
    };
    if !live {
        if let Err(e) = sessions
            .end_by_handle(&session.handle, None, signoff::Actor::Policy)
            .await
        {
            tracing::warn!(error = %e, "could not end a session whose central session has ended");
        }
    }
    Ok(live)
}

/// The token in `Authorization: Bearer`, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The answer to a request without a live session: browsers (`html`)
/// are sent to the login page, other clients get 401. Either way a
/// stale cookie is expired.
pub(super) fn sign_in_first(gw: &Gateway, html: bool, next: &str, stale: bool) -> Response {
    let prefix = &gw.settings.prefix;
    let mut response = if html {
        let mut r = StatusCode::SEE_OTHER.into_response();
        if let Ok(v) = HeaderValue::from_str(&login_url(prefix, next)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    } else {
        let mut r = (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge(prefix));
        r
    };
    no_store(response.headers_mut());
    if stale {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookies::expire(&gw.cookie));
    }
    response
}

fn challenge(prefix: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "Signoff realm=\"signoff\", login=\"{prefix}/login\""
    ))
    .unwrap_or_else(|_| unreachable!("the prefix is checked ASCII"))
}

/// The login page, coming back to `next`.
pub(super) fn login_url(prefix: &str, next: &str) -> String {
    let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    format!("{prefix}/login?next={next}")
}

/// Back to the sessions page.
pub(super) struct ToSessions;

impl BackTo for ToSessions {
    const PATH: Option<&'static str> = Some("/sessions");
}

/// Back to the password page.
pub(super) struct ToPassword;

impl BackTo for ToPassword {
    const PATH: Option<&'static str> = Some("/password");
}

#[async_trait::async_trait]
impl Gate for Gateway {
    async fn check(&self, parts: &mut Parts) -> Auth {
        authenticate(self, &parts.headers).await
    }

    fn refuse(&self, why: NotSignedIn, parts: &Parts) -> Response {
        match why {
            NotSignedIn::Anonymous { back_to, stale } => {
                let here = match back_to {
                    Some(path) => format!("{}{path}", self.settings.prefix),
                    None => parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned(),
                };
                sign_in_first(self, true, &here, stale)
            }
            NotSignedIn::Unavailable => unavailable(self),
        }
    }

    fn origin_for(&self, headers: &HeaderMap, _: &axum::http::Uri) -> String {
        self.routes
            .site_of(headers)
            .map_or(&self.settings.public_origin, |s| &s.origin)
            .clone()
    }

    fn session_token(&self, headers: &HeaderMap) -> Option<SessionToken> {
        cookies::token(headers, &self.cookie.name)
    }

    fn refuse_form(&self, why: FormRefusal) -> Response {
        sign_in::refuse_form(self, why)
    }

    fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.settings.trusted_proxies
    }
}
