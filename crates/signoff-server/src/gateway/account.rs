//! The signed-in user's own pages: their sessions (and ending them),
//! password re-entry, and password change.
//!
//! Every state change is a POST form carrying the CSRF token and refused
//! when a browser says another site sent it. Ending sessions other than the
//! current one needs a recent authentication ([`signoff::Policy::recent_auth`]);
//! without one the browser is sent to the re-entry page first.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use signoff::{AccountError, Actor, AuditEvent, AuditKind, Session, SessionHandle, UserId};

use super::client_addr::ClientAddr;
use super::csrf_form::{CsrfForm, IntentForm, Proof};
use super::error_pages::error_page;
use super::pages;
use super::sign_in::signed_out_response;
use super::signed_in::{sign_in_first, Authenticated, SignedIn, ToPassword, ToSessions};
use super::{cookies, redirect, single_sign_on, AppState, Gateway};
use crate::display;

/// The account family's routes.
pub(super) fn routes(gw: &Gateway) -> Router<Arc<Gateway>> {
    let p = &gw.settings.prefix;
    Router::new()
        .route(&format!("{p}/sessions"), get(sessions_page))
        .route(&format!("{p}/sessions/end"), post(end_one))
        .route(&format!("{p}/sessions/end-others"), post(end_others))
        .route(&format!("{p}/sessions/end-all"), post(end_all))
        .route(&format!("{p}/reauth"), get(reauth_page).post(reauth_submit))
        .route(
            &format!("{p}/password"),
            get(password_page).post(password_submit),
        )
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn sessions_url(gw: &Gateway) -> String {
    format!("{}/sessions", gw.settings.prefix)
}

/// Where to send a user who must enter their password again first.
fn reauth_first(gw: &Gateway) -> Response {
    let next: String = form_urlencoded::byte_serialize(sessions_url(gw).as_bytes()).collect();
    see_other(&format!("{}/reauth?next={next}", gw.settings.prefix))
}

fn store_failed(gw: &Gateway, what: &str, e: &dyn std::fmt::Display) -> Response {
    gw.count_store_error();
    tracing::error!(error = %e, "{what} failed: the store is unavailable");
    error_page(
        gw,
        StatusCode::SERVICE_UNAVAILABLE,
        "Not done",
        "The session store is unavailable, so nothing was changed. Try again in a moment.",
    )
}

/// An audit event done by the signed-in user from `session`.
fn by_user(
    gw: &Gateway,
    kind: AuditKind,
    auth: &Authenticated,
    session: &Session,
    ip: IpAddr,
) -> AuditEvent {
    AuditEvent::new(kind, gw.sessions.now())
        .user(session.user_id.as_ref(), Some(&auth.user))
        .session(&session.handle)
        .by(Actor::User)
        .ip(ip)
}

/// Checks the signed-in user's password, throttled like the login form.
/// `Err` is the status and message for the form to show again.
async fn check_password(
    gw: &Gateway,
    auth: &Authenticated,
    ip: IpAddr,
    password: &str,
    reason: &str,
) -> Result<(), (StatusCode, String)> {
    if let Err(wait) = gw
        .throttle
        .attempt(ip, &auth.user, std::time::Instant::now())
    {
        let secs = wait.as_secs().max(1);
        tracing::info!(target: "signoff::auth", ip = %ip, "password check refused: too many failures");
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed attempts. Try again in {}.",
                display::count(secs, "second", "seconds")
            ),
        ));
    }
    match gw.accounts.authenticate(&auth.user, password).await {
        Ok(_) => {
            gw.throttle.succeeded(ip, &auth.user);
            Ok(())
        }
        Err(
            e @ (AccountError::InvalidCredentials
            | AccountError::Disabled
            | AccountError::CorruptHash),
        ) => {
            super::sign_in::refused_check(&e, ip, &auth.user);
            gw.audit(by_user(gw, AuditKind::LoginFailed, auth, &auth.session, ip).reason(reason))
                .await;
            Err((
                StatusCode::UNAUTHORIZED,
                "That password is not right.".to_owned(),
            ))
        }
        Err(e) => {
            gw.throttle.succeeded(ip, &auth.user);
            tracing::error!(error = %e, "a password could not be checked");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "Your password cannot be checked right now. Try again in a moment.".to_owned(),
            ))
        }
    }
}

fn csrf_token(auth: &Authenticated) -> String {
    signoff::csrf::token_for(&auth.token)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct SessionsQuery {
    ended: Option<u32>,
}

/// `GET /sessions`: the user's live sessions.
async fn sessions_page(
    State(gw): AppState,
    Query(q): Query<SessionsQuery>,
    SignedIn(auth, _): SignedIn<ToSessions>,
) -> Response {
    let Some(user_id) = auth.session.user_id.clone() else {
        return sign_in_first(&gw, true, &sessions_url(&gw), true);
    };
    let list = match gw.sessions.list_for_user(&user_id).await {
        Ok(list) => list,
        Err(e) => return store_failed(&gw, "listing sessions", &e),
    };
    let csrf = csrf_token(&auth);
    let now = gw.sessions.now();
    // The current session first, then newest first.
    let (current, others): (Vec<&Session>, Vec<&Session>) =
        list.iter().partition(|s| s.handle == auth.session.handle);
    let rows = current
        .into_iter()
        .chain(others)
        .map(|s| pages::SessionRow {
            handle: s.handle.to_string(),
            current: s.handle == auth.session.handle,
            device: display::device(s.user_agent.as_deref()),
            ip: s.ip.as_deref().unwrap_or("an unknown address").to_owned(),
            created: pages::Moment::of(s.created_at, now),
            seen: pages::Moment::of(s.last_seen_at, now),
            remembered_until: s
                .is_remembered(gw.sessions.policy())
                .then(|| display::time(s.absolute_end(gw.sessions.policy()))),
        })
        .collect();
    pages::render(
        StatusCode::OK,
        &pages::SessionsPage {
            prefix: &gw.settings.prefix,
            brand: &gw.settings.branding,
            user: &auth.user,
            csrf: &csrf,
            rows,
            ended: q.ended,
        },
    )
}

#[derive(Default, Deserialize)]
struct EndForm {
    csrf: Option<String>,
    handle: Option<String>,
}

impl IntentForm for EndForm {
    const PROOF: Proof = Proof::Token;

    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// A form that ends sessions: from the signed-in user, with intent shown,
/// and a recent authentication (else the browser is sent to enter the
/// password again first).
struct Ending {
    auth: Authenticated,
    form: EndForm,
    user_id: UserId,
}

impl FromRequest<Arc<Gateway>> for Ending {
    type Rejection = Response;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let SignedIn(auth, _) = SignedIn::<ToSessions>::from_request_parts(&mut parts, gw).await?;
        let CsrfForm(form) = CsrfForm::from_request(Request::from_parts(parts, body), gw).await?;
        if !gw.sessions.is_recent_auth(&auth.session) {
            return Err(reauth_first(gw));
        }
        let Some(user_id) = auth.session.user_id.clone() else {
            return Err(sign_in_first(gw, true, &sessions_url(gw), true));
        };
        Ok(Ending {
            auth,
            form,
            user_id,
        })
    }
}

/// `POST /sessions/end`: ends one of the user's other sessions.
async fn end_one(State(gw): AppState, ending: Ending) -> Response {
    let Ending {
        auth,
        form,
        user_id,
    } = ending;
    let Some(handle) = form
        .handle
        .as_deref()
        .and_then(|h| h.parse::<SessionHandle>().ok())
    else {
        return error_page(
            &gw,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form did not name a session.",
        );
    };
    if handle == auth.session.handle {
        return error_page(
            &gw,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "To end this device's session, use Sign out.",
        );
    }
    // Only the user's own sessions: a handle of someone else's ends nothing.
    match gw
        .sessions
        .end_by_handle(&handle, Some(&user_id), Actor::User)
        .await
    {
        Ok(ended) => {
            // Ending a session ends its whole sign-in (docs/apps.md).
            if let Some(ended) = &ended {
                if let Err(e) = single_sign_on::end_linked(&gw, ended, Actor::User).await {
                    return store_failed(&gw, "ending a session", &e);
                }
            }
            let n = u32::from(ended.is_some());
            tracing::info!(target: "signoff::auth", user = %auth.user, ended = n, "ended a session from the sessions page");
            see_other(&format!("{}?ended={n}", sessions_url(&gw)))
        }
        Err(e) => store_failed(&gw, "ending a session", &e),
    }
}

/// `POST /sessions/end-others`: signs out everywhere else, and rotates
/// this session's token.
async fn end_others(State(gw): AppState, ending: Ending) -> Response {
    let Ending { auth, user_id, .. } = ending;
    let issued = match gw
        .sessions
        .rotate(auth.token.expose(), signoff::Rotation::Plain)
        .await
    {
        Ok(issued) => issued,
        Err(signoff::SessionError::Store(e)) => return store_failed(&gw, "rotating a session", &e),
        Err(_) => return sign_in_first(&gw, true, &sessions_url(&gw), true),
    };
    match gw
        .sessions
        .end_all_for_user(
            &user_id,
            Some(&issued.session.id),
            Actor::User,
            "sign_out_everywhere_else",
        )
        .await
    {
        Ok(n) => {
            tracing::info!(target: "signoff::auth", user = %auth.user, ended = n, "signed out everywhere else");
            let mut r = see_other(&format!("{}?ended={n}", sessions_url(&gw)));
            r.headers_mut()
                .insert(header::SET_COOKIE, cookies::issue(&gw, &issued));
            r
        }
        Err(e) => {
            // The rotation happened: the browser must get its new token.
            let mut r = store_failed(&gw, "ending the other sessions", &e);
            r.headers_mut()
                .insert(header::SET_COOKIE, cookies::issue(&gw, &issued));
            r
        }
    }
}

/// `POST /sessions/end-all`: signs out everywhere, this device included;
/// answers like logout.
async fn end_all(State(gw): AppState, ending: Ending) -> Response {
    let Ending { auth, user_id, .. } = ending;
    match gw
        .sessions
        .end_all_for_user(&user_id, None, Actor::User, "sign_out_everywhere")
        .await
    {
        Ok(n) => {
            tracing::info!(target: "signoff::auth", user = %auth.user, ended = n, "signed out everywhere");
            signed_out_response(&gw)
        }
        Err(e) => store_failed(&gw, "signing out everywhere", &e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

fn reauth_form(
    gw: &Gateway,
    auth: &Authenticated,
    next: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    pages::render(
        status,
        &pages::ReauthPage {
            prefix: &gw.settings.prefix,
            brand: &gw.settings.branding,
            user: &auth.user,
            csrf: &csrf_token(auth),
            next,
            error,
        },
    )
}

/// `GET /reauth`: asks for the password again.
async fn reauth_page(
    State(gw): AppState,
    Query(q): Query<NextQuery>,
    SignedIn(auth, _): SignedIn<ToSessions>,
) -> Response {
    let next = redirect::next_or_root(q.next.as_deref()).to_owned();
    // A provider's user proves who they are at the provider.
    if let Some(to) = super::oidc::reauthenticate_at_provider(&gw, &auth.session, &next) {
        return see_other(&to);
    }
    reauth_form(&gw, &auth, &next, StatusCode::OK, None)
}

#[derive(Default, Deserialize)]
struct ReauthForm {
    csrf: Option<String>,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

impl IntentForm for ReauthForm {
    const PROOF: Proof = Proof::Token;

    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /reauth`: checks the password, rotates the session and records
/// the fresh authentication.
async fn reauth_submit(
    State(gw): AppState,
    ClientAddr(ip): ClientAddr,
    SignedIn(auth, _): SignedIn<ToSessions>,
    CsrfForm(form): CsrfForm<ReauthForm>,
) -> Response {
    let next = redirect::next_or_root(form.next.as_deref()).to_owned();
    if let Some(to) = super::oidc::reauthenticate_at_provider(&gw, &auth.session, &next) {
        return see_other(&to);
    }
    let retry =
        |status: StatusCode, message: &str| reauth_form(&gw, &auth, &next, status, Some(message));
    if let Err((status, message)) =
        check_password(&gw, &auth, ip, &form.password, "reauth_wrong_password").await
    {
        return retry(status, &message);
    }
    let issued = match gw
        .sessions
        .rotate(auth.token.expose(), signoff::Rotation::AfterPassword)
        .await
    {
        Ok(issued) => issued,
        Err(signoff::SessionError::Store(e)) => return store_failed(&gw, "re-authentication", &e),
        Err(_) => return sign_in_first(&gw, true, &next, true),
    };
    gw.audit(by_user(
        &gw,
        AuditKind::Reauthenticated,
        &auth,
        &issued.session,
        ip,
    ))
    .await;
    tracing::info!(target: "signoff::auth", user = %auth.user, "re-authenticated");
    let mut r = see_other(&next);
    r.headers_mut()
        .insert(header::SET_COOKIE, cookies::issue(&gw, &issued));
    r
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PasswordQuery {
    changed: Option<u32>,
}

fn password_form(
    gw: &Gateway,
    auth: &Authenticated,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    pages::render(
        status,
        &pages::PasswordPage {
            prefix: &gw.settings.prefix,
            brand: &gw.settings.branding,
            user: &auth.user,
            csrf: &csrf_token(auth),
            min: signoff::MIN_PASSWORD_CHARS,
            notice,
            error,
        },
    )
}

/// `GET /password`: the password change form.
async fn password_page(
    State(gw): AppState,
    Query(q): Query<PasswordQuery>,
    SignedIn(auth, _): SignedIn<ToPassword>,
) -> Response {
    if let Some(refused) = super::oidc::password_elsewhere(&gw, &auth.session) {
        return refused;
    }
    let notice = q.changed.map(|n| match n {
        0 => "Your password was changed.".to_owned(),
        1 => "Your password was changed, and 1 other session was signed out.".to_owned(),
        n => format!("Your password was changed, and {n} other sessions were signed out."),
    });
    password_form(&gw, &auth, StatusCode::OK, notice.as_deref(), None)
}

#[derive(Default, Deserialize)]
struct PasswordForm {
    csrf: Option<String>,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
    /// Ticked: the user's other sessions stay signed in. Absent (the
    /// default, and a form that forgot it): they end. A password change
    /// keeps the others only when asked to, never by omission.
    keep_others: Option<String>,
}

impl IntentForm for PasswordForm {
    const PROOF: Proof = Proof::Token;

    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /password`: changes the password (the current one required),
/// rotates this session and, unless unticked, ends the others.
async fn password_submit(
    State(gw): AppState,
    ClientAddr(ip): ClientAddr,
    SignedIn(auth, _): SignedIn<ToPassword>,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Response {
    if let Some(refused) = super::oidc::password_elsewhere(&gw, &auth.session) {
        return refused;
    }
    let here = format!("{}/password", gw.settings.prefix);
    let retry =
        |status: StatusCode, message: &str| password_form(&gw, &auth, status, None, Some(message));
    if form.new != form.confirm {
        return retry(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The new passwords do not match.",
        );
    }
    if let Err((status, message)) = check_password(
        &gw,
        &auth,
        ip,
        &form.current,
        "password_change_wrong_password",
    )
    .await
    {
        return retry(status, &message);
    }
    match gw.accounts.set_password(&auth.user, &form.new).await {
        Ok(_) => {}
        Err(
            e @ (AccountError::PasswordTooShort
            | AccountError::PasswordTooLong
            | AccountError::UnknownUser),
        ) => {
            return retry(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string());
        }
        Err(e) => return store_failed(&gw, "changing a password", &e),
    }
    gw.audit(by_user(
        &gw,
        AuditKind::PasswordChanged,
        &auth,
        &auth.session,
        ip,
    ))
    .await;
    let end_others = form.keep_others.is_none();
    let Some(user_id) = auth.session.user_id.clone() else {
        return sign_in_first(&gw, true, &here, true);
    };
    // The password has changed: from here on, rotate this session, then end
    // the others, and say plainly if either could not be done.
    let not_updated = |gw: &Gateway, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "password changed, but the sessions could not be updated");
        error_page(
            gw,
            StatusCode::SERVICE_UNAVAILABLE,
            "Password changed, sessions not updated",
            "Your password was changed, but the session store is unavailable, so your \
             other sessions may still be signed in. Sign in again in a moment and use \
             Sign out everywhere on your sessions page.",
        )
    };
    let issued = match gw
        .sessions
        .rotate(auth.token.expose(), signoff::Rotation::AfterPassword)
        .await
    {
        Ok(issued) => issued,
        Err(signoff::SessionError::Store(e)) => return not_updated(&gw, &e),
        Err(_) => {
            // This session ended meanwhile; the others still must.
            if end_others {
                if let Err(e) = gw
                    .sessions
                    .end_all_for_user(&user_id, None, Actor::User, "password_change")
                    .await
                {
                    return not_updated(&gw, &e);
                }
            }
            return sign_in_first(&gw, true, &here, true);
        }
    };
    let ended = if end_others {
        match gw
            .sessions
            .end_all_for_user(
                &user_id,
                Some(&issued.session.id),
                Actor::User,
                "password_change",
            )
            .await
        {
            Ok(n) => n,
            Err(e) => {
                let mut r = not_updated(&gw, &e);
                r.headers_mut()
                    .insert(header::SET_COOKIE, cookies::issue(&gw, &issued));
                return r;
            }
        }
    } else {
        0
    };
    tracing::info!(target: "signoff::auth", user = %auth.user, ended, "password changed");
    let mut r = see_other(&format!("{here}?changed={ended}"));
    r.headers_mut()
        .insert(header::SET_COOKIE, cookies::issue(&gw, &issued));
    r
}
