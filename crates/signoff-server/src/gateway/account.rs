//! The signed-in user's own pages: their sessions (and ending them),
//! password re-entry, and password change.
//!
//! Every state change is a POST form carrying the CSRF token and refused
//! when a browser says another site sent it. Ending sessions other than the
//! current one needs a recent authentication ([`signoff::Policy::recent_auth`]);
//! without one the browser is sent to the re-entry page first.

// Handlers return `Err(response)` to answer early; a `Response` is large,
// but these are not hot paths and boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;

use axum::extract::{Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use signoff::{AccountError, Actor, AuditEvent, AuditKind, Session, SessionHandle, UserId};

use super::pages;
use super::{peer_ip, read_form, redirect, AppState, Auth, Authenticated, Gateway, Intent};
use crate::display;

impl Gateway {
    /// The signed-in user of an HTML page, or the response to send instead
    /// (to the login page, coming back to `here`; or 503).
    async fn page_user(&self, headers: &HeaderMap, here: &str) -> Result<Authenticated, Response> {
        match self.authenticate(headers).await {
            Auth::SignedIn(auth) => Ok(*auth),
            Auth::Anonymous { stale } => Err(self.sign_in_first(true, here, stale)),
            Auth::Unavailable => Err(self.unavailable()),
        }
    }

    /// Refuses a state change a browser says came from another site, or
    /// whose CSRF token does not belong to this session.
    fn check_intent(
        &self,
        headers: &HeaderMap,
        auth: &Authenticated,
        csrf: Option<&str>,
    ) -> Result<(), Response> {
        let csrf_ok = csrf.is_some_and(|c| signoff::csrf::verify(&auth.token, c));
        if self.same_origin(headers) == Intent::Foreign || !csrf_ok {
            tracing::warn!(target: "signoff::auth", "refused an account change without proof of intent");
            return Err(self.error_page(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This request did not come from this site's own page, so nothing was changed.",
            ));
        }
        Ok(())
    }

    fn see_other(&self, location: &str) -> Response {
        let mut r = StatusCode::SEE_OTHER.into_response();
        if let Ok(v) = HeaderValue::from_str(location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }

    fn sessions_url(&self) -> String {
        format!("{}/sessions", self.settings.prefix)
    }

    /// Where to send a user who must enter their password again first.
    fn reauth_first(&self) -> Response {
        let next: String =
            form_urlencoded::byte_serialize(self.sessions_url().as_bytes()).collect();
        self.see_other(&format!("{}/reauth?next={next}", self.settings.prefix))
    }

    fn store_failed(&self, what: &str, e: &dyn std::fmt::Display) -> Response {
        self.count_store_error();
        tracing::error!(error = %e, "{what} failed: the store is unavailable");
        self.error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not done",
            "The session store is unavailable, so nothing was changed. Try again in a moment.",
        )
    }

    /// An audit event done by the signed-in user from `session`.
    fn by_user(
        &self,
        kind: AuditKind,
        auth: &Authenticated,
        session: &Session,
        ip: IpAddr,
    ) -> AuditEvent {
        AuditEvent::new(kind, self.sessions.now())
            .user(session.user_id.as_ref(), Some(&auth.user))
            .session(&session.handle)
            .by(Actor::User)
            .ip(ip)
    }

    /// Records a failed password check by a signed-in user.
    async fn record_password_failure(&self, auth: &Authenticated, ip: IpAddr, reason: &str) {
        self.audit(
            self.by_user(AuditKind::LoginFailed, auth, &auth.session, ip)
                .reason(reason),
        )
        .await;
    }

    /// Checks the signed-in user's password, throttled like the login form.
    /// `Err` is the page to show: `form` with the error filled in.
    async fn check_password(
        &self,
        auth: &Authenticated,
        ip: IpAddr,
        password: &str,
        reason: &str,
        form: impl Fn(StatusCode, &str) -> Response,
    ) -> Result<(), Response> {
        if let Err(wait) = self
            .throttle
            .attempt(ip, &auth.user, std::time::Instant::now())
        {
            let secs = wait.as_secs().max(1);
            tracing::info!(target: "signoff::auth", ip = %ip, "password check refused: too many failures");
            return Err(form(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many failed attempts. Try again in {secs} seconds."),
            ));
        }
        match self.accounts.authenticate(&auth.user, password).await {
            Ok(_) => {
                self.throttle.succeeded(ip, &auth.user);
                Ok(())
            }
            Err(AccountError::InvalidCredentials | AccountError::Disabled) => {
                self.record_password_failure(auth, ip, reason).await;
                Err(form(
                    StatusCode::UNAUTHORIZED,
                    "That password is not right.",
                ))
            }
            Err(e) => {
                self.throttle.succeeded(ip, &auth.user);
                tracing::error!(error = %e, "a password could not be checked");
                Err(form(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Your password cannot be checked right now. Try again in a moment.",
                ))
            }
        }
    }

    fn csrf_token(auth: &Authenticated) -> String {
        signoff::csrf::token_for(&auth.token)
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct SessionsQuery {
    ended: Option<u32>,
}

/// `GET /sessions`: the user's live sessions.
pub(super) async fn sessions_page(
    State(gw): AppState,
    Query(q): Query<SessionsQuery>,
    headers: HeaderMap,
) -> Response {
    let auth = match gw.page_user(&headers, &gw.sessions_url()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(user_id) = auth.session.user_id.clone() else {
        return gw.sign_in_first(true, &gw.sessions_url(), true);
    };
    let list = match gw.sessions.list_for_user(&user_id).await {
        Ok(list) => list,
        Err(e) => return gw.store_failed("listing sessions", &e),
    };
    let csrf = Gateway::csrf_token(&auth);
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
            created: display::time(s.created_at),
            seen: display::time(s.last_seen_at),
        })
        .collect();
    pages::sessions(&pages::SessionsPage {
        prefix: &gw.settings.prefix,
        user: &auth.user,
        csrf: &csrf,
        rows,
        ended: q.ended,
    })
}

#[derive(Default, Deserialize)]
pub(super) struct EndForm {
    csrf: Option<String>,
    handle: Option<String>,
}

/// For the forms that end sessions: reads the form, checks intent, and
/// asks for the password again unless the last authentication is recent.
/// Returns the signed-in user and their id; `Err` is the response to send.
async fn ending_post(
    gw: &Gateway,
    req: Request,
) -> Result<(Authenticated, EndForm, UserId), Response> {
    let headers = req.headers().clone();
    let auth = gw.page_user(&headers, &gw.sessions_url()).await?;
    let form: EndForm = read_form(req)
        .await
        .map_err(|status| super::form_error(gw, status))?;
    gw.check_intent(&headers, &auth, form.csrf.as_deref())?;
    if !gw.sessions.is_recent_auth(&auth.session) {
        return Err(gw.reauth_first());
    }
    let Some(user_id) = auth.session.user_id.clone() else {
        return Err(gw.sign_in_first(true, &gw.sessions_url(), true));
    };
    Ok((auth, form, user_id))
}

/// `POST /sessions/end`: ends one of the user's other sessions.
pub(super) async fn end_one(State(gw): AppState, req: Request) -> Response {
    let (auth, form, user_id) = match ending_post(&gw, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(handle) = form
        .handle
        .as_deref()
        .and_then(|h| h.parse::<SessionHandle>().ok())
    else {
        return gw.error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form did not name a session.",
        );
    };
    if handle == auth.session.handle {
        return gw.error_page(
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
            let n = u32::from(ended.is_some());
            tracing::info!(target: "signoff::auth", user = %auth.user, ended = n, "ended a session from the sessions page");
            gw.see_other(&format!("{}?ended={n}", gw.sessions_url()))
        }
        Err(e) => gw.store_failed("ending a session", &e),
    }
}

/// `POST /sessions/end-others`: signs out everywhere else, and rotates
/// this session's token.
pub(super) async fn end_others(State(gw): AppState, req: Request) -> Response {
    let (auth, _, user_id) = match ending_post(&gw, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let issued = match gw.sessions.rotate(auth.token.expose(), false).await {
        Ok(issued) => issued,
        Err(signoff::SessionError::Store(e)) => return gw.store_failed("rotating a session", &e),
        Err(_) => return gw.sign_in_first(true, &gw.sessions_url(), true),
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
            let mut r = gw.see_other(&format!("{}?ended={n}", gw.sessions_url()));
            r.headers_mut()
                .insert(header::SET_COOKIE, gw.set_cookie(&issued.token));
            r
        }
        Err(e) => {
            // The rotation happened: the browser must get its new token.
            let mut r = gw.store_failed("ending the other sessions", &e);
            r.headers_mut()
                .insert(header::SET_COOKIE, gw.set_cookie(&issued.token));
            r
        }
    }
}

/// `POST /sessions/end-all`: signs out everywhere, this device included;
/// answers like logout.
pub(super) async fn end_all(State(gw): AppState, req: Request) -> Response {
    let (auth, _, user_id) = match ending_post(&gw, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match gw
        .sessions
        .end_all_for_user(&user_id, None, Actor::User, "sign_out_everywhere")
        .await
    {
        Ok(n) => {
            tracing::info!(target: "signoff::auth", user = %auth.user, ended = n, "signed out everywhere");
            gw.signed_out_response()
        }
        Err(e) => gw.store_failed("signing out everywhere", &e),
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
    pages::reauth(
        status,
        &pages::ReauthPage {
            prefix: &gw.settings.prefix,
            user: &auth.user,
            csrf: &Gateway::csrf_token(auth),
            next,
            error,
        },
    )
}

/// `GET /reauth`: asks for the password again.
pub(super) async fn reauth_page(
    State(gw): AppState,
    Query(q): Query<NextQuery>,
    headers: HeaderMap,
) -> Response {
    let next = redirect::next_or_root(q.next.as_deref()).to_owned();
    let auth = match gw.page_user(&headers, &gw.sessions_url()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    reauth_form(&gw, &auth, &next, StatusCode::OK, None)
}

#[derive(Default, Deserialize)]
pub(super) struct ReauthForm {
    csrf: Option<String>,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// `POST /reauth`: checks the password, rotates the session and records
/// the fresh authentication.
pub(super) async fn reauth_submit(State(gw): AppState, req: Request) -> Response {
    let headers = req.headers().clone();
    let ip = gw.client_ip(peer_ip(&req), &headers);
    let auth = match gw.page_user(&headers, &gw.sessions_url()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let form: ReauthForm = match read_form(req).await {
        Ok(f) => f,
        Err(status) => return super::form_error(&gw, status),
    };
    if let Err(r) = gw.check_intent(&headers, &auth, form.csrf.as_deref()) {
        return r;
    }
    let next = redirect::next_or_root(form.next.as_deref()).to_owned();
    let retry =
        |status: StatusCode, message: &str| reauth_form(&gw, &auth, &next, status, Some(message));
    if let Err(r) = gw
        .check_password(&auth, ip, &form.password, "reauth_wrong_password", retry)
        .await
    {
        return r;
    }
    let issued = match gw.sessions.rotate(auth.token.expose(), true).await {
        Ok(issued) => issued,
        Err(signoff::SessionError::Store(e)) => return gw.store_failed("re-authentication", &e),
        Err(_) => return gw.sign_in_first(true, &next, true),
    };
    gw.audit(gw.by_user(AuditKind::Reauthenticated, &auth, &issued.session, ip))
        .await;
    tracing::info!(target: "signoff::auth", user = %auth.user, "re-authenticated");
    let mut r = gw.see_other(&next);
    r.headers_mut()
        .insert(header::SET_COOKIE, gw.set_cookie(&issued.token));
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
    pages::password(
        status,
        &pages::PasswordPage {
            prefix: &gw.settings.prefix,
            user: &auth.user,
            csrf: &Gateway::csrf_token(auth),
            min: signoff::MIN_PASSWORD_CHARS,
            notice,
            error,
        },
    )
}

/// `GET /password`: the password change form.
pub(super) async fn password_page(
    State(gw): AppState,
    Query(q): Query<PasswordQuery>,
    headers: HeaderMap,
) -> Response {
    let here = format!("{}/password", gw.settings.prefix);
    let auth = match gw.page_user(&headers, &here).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let notice = q.changed.map(|n| match n {
        0 => "Your password was changed.".to_owned(),
        1 => "Your password was changed, and 1 other session was signed out.".to_owned(),
        n => format!("Your password was changed, and {n} other sessions were signed out."),
    });
    password_form(&gw, &auth, StatusCode::OK, notice.as_deref(), None)
}

#[derive(Default, Deserialize)]
pub(super) struct PasswordForm {
    csrf: Option<String>,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
    end_others: Option<String>,
}

/// `POST /password`: changes the password (the current one required),
/// rotates this session and, unless unticked, ends the others.
pub(super) async fn password_submit(State(gw): AppState, req: Request) -> Response {
    let headers = req.headers().clone();
    let ip = gw.client_ip(peer_ip(&req), &headers);
    let here = format!("{}/password", gw.settings.prefix);
    let auth = match gw.page_user(&headers, &here).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let form: PasswordForm = match read_form(req).await {
        Ok(f) => f,
        Err(status) => return super::form_error(&gw, status),
    };
    if let Err(r) = gw.check_intent(&headers, &auth, form.csrf.as_deref()) {
        return r;
    }
    let retry =
        |status: StatusCode, message: &str| password_form(&gw, &auth, status, None, Some(message));
    if form.new != form.confirm {
        return retry(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The new passwords do not match.",
        );
    }
    if let Err(r) = gw
        .check_password(
            &auth,
            ip,
            &form.current,
            "password_change_wrong_password",
            retry,
        )
        .await
    {
        return r;
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
        Err(e) => return gw.store_failed("changing a password", &e),
    }
    gw.audit(gw.by_user(AuditKind::PasswordChanged, &auth, &auth.session, ip))
        .await;
    let end_others = form.end_others.is_some();
    let Some(user_id) = auth.session.user_id.clone() else {
        return gw.sign_in_first(true, &here, true);
    };
    // The password has changed: from here on, rotate this session, then end
    // the others, and say plainly if either could not be done.
    let not_updated = |gw: &Gateway, e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "password changed, but the sessions could not be updated");
        gw.error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Password changed, sessions not updated",
            "Your password was changed, but the session store is unavailable, so your \
             other sessions may still be signed in. Sign in again in a moment and use \
             Sign out everywhere on your sessions page.",
        )
    };
    let issued = match gw.sessions.rotate(auth.token.expose(), true).await {
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
            return gw.sign_in_first(true, &here, true);
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
                    .insert(header::SET_COOKIE, gw.set_cookie(&issued.token));
                return r;
            }
        }
    } else {
        0
    };
    tracing::info!(target: "signoff::auth", user = %auth.user, ended, "password changed");
    let mut r = gw.see_other(&format!("{here}?changed={ended}"));
    r.headers_mut()
        .insert(header::SET_COOKIE, gw.set_cookie(&issued.token));
    r
}
