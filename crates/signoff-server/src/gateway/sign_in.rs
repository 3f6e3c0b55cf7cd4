//! Sign-in: the login form, logout, the signed-out page, and for the
//! guard its script and `status`; the sign-in that the form and token
//! mode's `api/login` share.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use signoff::{AccountError, Actor, AuditEvent, AuditKind, NewSession, SessionData};

use super::client_addr::ClientAddr;
use super::csrf_form::{CsrfForm, FormRefusal, IntentForm, Proof};
use super::error_pages::{error_page, form_error, sign_in_refused, to_public_origin};
use super::pages;
use super::signed_in::{self, Auth};
use super::{
    cookies, oidc, origin, redirect, single_sign_on, AppState, Gateway, GROUPS_KEY, USER_NAME_KEY,
};

/// The sign-in family's routes.
pub(super) fn routes(gw: &Gateway) -> Router<Arc<Gateway>> {
    let p = &gw.settings.prefix;
    Router::new()
        .route(&format!("{p}/login"), get(login_page).post(login_submit))
        .route(&format!("{p}/logout"), get(logout_page).post(logout))
        .route(&format!("{p}/signed-out"), get(signed_out))
        .route(&format!("{p}/status"), get(status))
        .route(&format!("{p}/guard.js"), get(guard_js))
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page(
    State(gw): AppState,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let next = redirect::next_or_root(q.next.as_deref());
    // `localhost` while the public URL says `127.0.0.1` (or the other way
    // round): the form would be refused for its origin, so the browser
    // goes to the public origin first, `next` kept.
    let scheme = if gw.settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(host) = origin::Arrival::of(&headers, &uri).host {
        if origin::loopback_twins(&format!("{scheme}://{host}"), &gw.settings.public_origin) {
            tracing::info!(
                target: "signoff::auth",
                expected = %gw.settings.public_origin,
                arrived = ?format!("{scheme}://{host}"),
                "the sign-in page was asked for at a loopback address other than the public \
                 URL's: sent the browser there (--public-url names the address signoff is \
                 reached at)"
            );
            return to_public_origin(&gw, &signed_in::login_url(&gw.settings.prefix, next));
        }
    }
    let remember = remember_offer(&gw);
    let providers = gw.oidc.links(&gw.settings.prefix, next);
    pages::render(
        StatusCode::OK,
        &pages::LoginPage {
            prefix: &gw.settings.prefix,
            brand: &gw.settings.branding,
            next,
            username: "",
            error: None,
            remember: remember.as_deref(),
            providers: &providers,
            password: gw.settings.oidc.password_sign_in,
        },
    )
}

/// How long "Remember this device" keeps a device signed in, as the login
/// page says it; `None` when remembering is off.
fn remember_offer(gw: &Gateway) -> Option<String> {
    gw.sessions
        .policy()
        .remember_device()
        .map(|r| crate::display::duration(r.lifetime()))
}

#[derive(Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
    /// The "Remember this device" checkbox: `1` when ticked. Anything else,
    /// or remembering being off, makes an ordinary session.
    remember: Option<String>,
}

impl IntentForm for LoginForm {
    const PROOF: Proof = Proof::NotForeign;
}

async fn login_submit(
    State(gw): AppState,
    ClientAddr(client_ip): ClientAddr,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Response {
    let next = redirect::next_or_root(form.next.as_deref()).to_owned();
    let prefix = &gw.settings.prefix;
    let remember_offer = remember_offer(&gw);
    let providers = gw.oidc.links(prefix, &next);
    let retry = |status: StatusCode, message: &str| {
        pages::render(
            status,
            &pages::LoginPage {
                prefix,
                brand: &gw.settings.branding,
                next: &next,
                username: &form.username,
                error: Some(message),
                remember: remember_offer.as_deref(),
                providers: &providers,
                password: gw.settings.oidc.password_sign_in,
            },
        )
    };
    if !gw.settings.oidc.password_sign_in {
        return retry(
            StatusCode::FORBIDDEN,
            "Passwords are not used here: sign in with one of the services below.",
        );
    }
    let remember = form.remember.as_deref() == Some("1") && remember_offer.is_some();
    let previous = cookies::read(&headers, &gw.cookie.name);
    match sign_in(
        &gw,
        client_ip,
        &headers,
        &form.username,
        &form.password,
        previous,
        remember,
    )
    .await
    {
        Ok((_, issued)) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&next) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::SET_COOKIE, cookies::issue(&gw, &issued));
            r
        }
        Err(SignInError::Throttled(secs)) => {
            let mut r = retry(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed attempts. Try again in {}.",
                    crate::display::count(secs, "second", "seconds")
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        // A disabled account answers like a wrong password: the form must
        // not confirm that a password is right.
        Err(SignInError::Refused) => {
            retry(StatusCode::UNAUTHORIZED, "Wrong user name or password.")
        }
        Err(SignInError::Unavailable) => retry(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is not possible right now. Try again in a moment.",
        ),
    }
}

/// Why [`Gateway::sign_in`] made no session.
pub(super) enum SignInError {
    /// Too many failures: wait this many seconds (nothing was checked).
    Throttled(u64),
    /// A wrong name or password, or a disabled account: one answer for all.
    Refused,
    /// The store could not answer.
    Unavailable,
}

/// Logs a password check that failed on the client's side. An account whose
/// stored hash cannot be verified (garbled, or an imported hash beyond the
/// cost bounds) fails like a wrong password, so the answer tells nothing
/// about the name; the operator is told how to mend the account.
pub(super) fn refused_check(e: &AccountError, ip: IpAddr, user: &str) {
    if matches!(e, AccountError::CorruptHash) {
        tracing::warn!(target: "signoff::auth", ip = %ip, user = ?user,
            "password check failed: the account's stored password hash cannot be verified; \
             set a new password with `signoff user passwd NAME`");
    } else {
        tracing::info!(target: "signoff::auth", ip = %ip, "login failed");
    }
}

/// The sign-in the form and `api/login` share: the failure delays, the
/// password check (a disabled account fails like a wrong password), the
/// audit trail, and a new session that replaces `previous` (so a token
/// planted before sign-in is worthless after it). With `remember`, the
/// session gets the policy's remember-device limits, if it has them.
pub(super) async fn sign_in(
    gw: &Gateway,
    client_ip: IpAddr,
    headers: &HeaderMap,
    username: &str,
    password: &str,
    previous: Option<&str>,
    remember: bool,
) -> Result<(signoff::User, signoff::Issued), SignInError> {
    if let Err(wait) = gw
        .throttle
        .attempt(client_ip, username, std::time::Instant::now())
    {
        tracing::info!(target: "signoff::auth", ip = %client_ip, "login refused: too many failures");
        return Err(SignInError::Throttled(wait.as_secs().max(1)));
    }
    let user = match gw.accounts.authenticate(username, password).await {
        Ok(user) => user,
        // An unreadable stored hash is answered and throttled like a wrong
        // password (see `refused_check`).
        Err(
            e @ (AccountError::InvalidCredentials
            | AccountError::Disabled
            | AccountError::CorruptHash),
        ) => {
            refused_check(&e, client_ip, username);
            record_login_failure(gw, username, client_ip, matches!(e, AccountError::Disabled))
                .await;
            return Err(SignInError::Refused);
        }
        Err(e) => {
            // Not the client's failure: give the attempt back.
            gw.throttle.succeeded(client_ip, username);
            gw.count_store_error();
            tracing::error!(error = %e, "login could not be checked");
            return Err(SignInError::Unavailable);
        }
    };
    gw.throttle.succeeded(client_ip, username);
    let mut data = SessionData::new();
    data.insert(USER_NAME_KEY.to_owned(), user.name.clone());
    if !user.groups.is_empty() {
        // Fixed at sign-in: removing a group ends the user's sessions
        // (`signoff user groups`), and a change racing this sign-in is
        // caught by `still_signs_in` below.
        data.insert(GROUPS_KEY.to_owned(), user.groups.join(","));
    }
    let mut new = NewSession::for_user(user.id.clone())
        .ip(client_ip.to_string())
        .reserved_data(data);
    if remember {
        new = new.remember_device();
    }
    if let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        new = new.user_agent(truncate(ua, signoff::MAX_USER_AGENT_BYTES));
    }
    let issued = match gw.sessions.login(previous, new).await {
        Ok(issued) => issued,
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not create a session");
            return Err(SignInError::Unavailable);
        }
    };
    // A disable or password change that ended the user's sessions while
    // this sign-in was between its password check and the session's
    // creation has missed the new session: look again before the token
    // leaves. Its token is dropped either way, so even if ending it fails
    // nobody holds it.
    let refused = match gw.accounts.still_signs_in(&user).await {
        Ok(true) => None,
        Ok(false) => Some(SignInError::Refused),
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "login could not be checked");
            Some(SignInError::Unavailable)
        }
    };
    if let Some(refused) = refused {
        tracing::info!(target: "signoff::auth", ip = %client_ip, "login failed: the account changed during sign-in");
        if matches!(refused, SignInError::Refused) {
            gw.audit(
                AuditEvent::new(AuditKind::LoginFailed, gw.sessions.now())
                    .user(Some(&user.id), Some(&user.name))
                    .reason("account_changed")
                    .ip(client_ip),
            )
            .await;
        }
        if let Err(e) = gw.sessions.end(issued.token.expose(), Actor::Policy).await {
            tracing::warn!(error = %e, "could not end the session of a sign-in that was refused");
        }
        return Err(refused);
    }
    let remembered = issued.session.is_remembered(gw.sessions.policy());
    tracing::info!(target: "signoff::auth", user = %user.name, session = %issued.session.handle, remembered, "login");
    let event = AuditEvent::new(AuditKind::LoginSucceeded, gw.sessions.now())
        .user(Some(&user.id), Some(&user.name))
        .session(&issued.session.handle)
        .by(Actor::User)
        .ip(client_ip);
    gw.audit(if remembered {
        event.reason("remember_device")
    } else {
        event
    })
    .await;
    Ok((user, issued))
}

async fn logout_page(State(gw): AppState, headers: HeaderMap) -> Response {
    let csrf = cookies::token(&headers, &gw.cookie.name).map(|t| signoff::csrf::token_for(&t));
    pages::render(
        StatusCode::OK,
        &pages::LogoutPage {
            prefix: &gw.settings.prefix,
            brand: &gw.settings.branding,
            csrf: csrf.as_deref(),
        },
    )
}

#[derive(Default, Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

impl IntentForm for LogoutForm {
    const PROOF: Proof = Proof::TokenOrSameOrigin;

    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

async fn logout(
    State(gw): AppState,
    headers: HeaderMap,
    CsrfForm(_): CsrfForm<LogoutForm>,
) -> Response {
    let token = cookies::token(&headers, &gw.cookie.name);
    let mut at_provider = None;
    if let Some(token) = &token {
        // With app hosts of their own, the sessions linked to this one end
        // too, and a provider's user is signed out there as well: read its
        // record first (expired or not) to know. Only a token the
        // deployment sealed reaches the store.
        let ending = match gw.routes.has_sites() || gw.oidc.any() {
            true => match gw.sessions.check_token(token.expose()).await {
                Ok(token) => gw.uncached.store().load(&token.id()).await.ok().flatten(),
                Err(_) => None,
            },
            false => None,
        };
        let ended = match gw.sessions.logout(token.expose()).await {
            Ok(_) => match &ending {
                Some(s) => single_sign_on::end_linked(&gw, s, Actor::User)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = ended {
            gw.count_store_error();
            tracing::error!(error = %e, "logout failed: the store is unavailable");
            return error_page(
                &gw,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-out failed",
                "Your session could not be ended because the session store is unavailable. \
                 You are still signed in. Try again in a moment.",
            );
        }
        tracing::info!(target: "signoff::auth", "logout");
        if let Some(ended) = &ending {
            at_provider = Some(oidc::logout_at_provider(&gw, ended).await);
        }
    }
    let mut r = signed_out_response(&gw);
    match at_provider {
        // The provider ends its own session, then sends the browser to
        // the signed-out page.
        Some(Ok(location)) => {
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
        }
        // It cannot be told: the next sign-in asks it for the password.
        // That is remembered on the central host, where sign-ins start,
        // by the signed-out page (after this answer's Clear-Site-Data).
        Some(Err(true)) => {
            let to = format!(
                "{}{}/signed-out?relogin=1",
                gw.settings.public_origin, gw.settings.prefix
            );
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
        }
        _ => {}
    }
    r
}

#[derive(Deserialize)]
struct SignedOutQuery {
    /// `1`: the provider could not be signed out of; the next sign-in
    /// asks it for the password (docs/oidc.md).
    relogin: Option<String>,
}

async fn signed_out(State(gw): AppState, Query(q): Query<SignedOutQuery>) -> Response {
    let mut r = pages::render(
        StatusCode::OK,
        &pages::SignedOutPage {
            prefix: &gw.settings.prefix,
            brand: &gw.settings.branding,
        },
    );
    if q.relogin.as_deref() == Some("1") && gw.oidc.any() {
        r.headers_mut()
            .append(header::SET_COOKIE, oidc::relogin_cookie(&gw));
    }
    r
}

/// What logout answers: 303 to the signed-out page, the cookie
/// expired, and `Clear-Site-Data`.
pub(super) fn signed_out_response(gw: &Gateway) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/signed-out", gw.settings.prefix)) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::SET_COOKIE, cookies::expire(&gw.cookie));
    if let Some(csd) = &gw.settings.clear_site_data {
        if let Ok(v) = HeaderValue::from_str(csd) {
            h.insert("clear-site-data", v);
        }
    }
    r
}

/// Records a failed sign-in. The name typed is kept only if an account
/// has it (a password typed into the name field is not); a wrong
/// password and an unknown name are told apart here, never to the client.
async fn record_login_failure(gw: &Gateway, name: &str, ip: IpAddr, disabled: bool) {
    if gw.sessions.audit().is_none() {
        return;
    }
    let user = gw.accounts.user(name).await.ok();
    let reason = match (&user, disabled) {
        (_, true) => "disabled",
        (Some(_), false) => "wrong_password",
        (None, false) => "unknown_user",
    };
    let event = AuditEvent::new(AuditKind::LoginFailed, gw.sessions.now())
        .user(
            user.as_ref().map(|u| &u.id),
            user.as_ref().map(|u| u.name.as_str()),
        )
        .reason(reason)
        .ip(ip);
    gw.audit(event).await;
}

/// For the guard: is this browser's session alive? No secrets in the answer.
/// Read from the store, never the cache: a page restored by Back right
/// after a sign-out elsewhere must not be kept on a cached answer.
async fn status(State(gw): AppState, headers: HeaderMap) -> Response {
    let cookie = cookies::read(&headers, &gw.cookie.name);
    let site = gw.routes.site_of(&headers);
    let auth = signed_in::validate(&gw, &gw.uncached, cookie, site).await;
    let (code, body) = match auth {
        Auth::SignedIn(_) => (StatusCode::OK, "{\"signed_in\":true}"),
        Auth::Anonymous { .. } => (StatusCode::UNAUTHORIZED, "{\"signed_in\":false}"),
        Auth::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "{\"signed_in\":null}"),
    };
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn guard_js(State(gw): AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        gw.guard.script().to_owned(),
    )
        .into_response()
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(super) fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The form refusals of the sign-in and account pages.
pub(super) fn refuse_form(gw: &Gateway, why: FormRefusal) -> Response {
    match why {
        FormRefusal::Unreadable(status) => form_error(gw, status),
        // Login CSRF.
        FormRefusal::NoIntent(Proof::NotForeign, arrival) => sign_in_refused(gw, &arrival),
        FormRefusal::NoIntent(Proof::TokenOrSameOrigin, arrival) => {
            tracing::warn!(
                target: "signoff::auth",
                expected = %gw.settings.public_origin,
                arrived = ?arrival.shown(),
                "refused a sign-out without proof of intent"
            );
            error_page(
                gw,
                StatusCode::FORBIDDEN,
                "Sign-out refused",
                "This sign-out request did not come from this site, so nothing was changed.",
            )
        }
        FormRefusal::NoIntent(Proof::Token, arrival) => {
            tracing::warn!(
                target: "signoff::auth",
                expected = %gw.settings.public_origin,
                arrived = ?arrival.shown(),
                "refused an account change without proof of intent"
            );
            error_page(
                gw,
                StatusCode::FORBIDDEN,
                "Request refused",
                "This request did not come from this site's own page, so nothing was changed.",
            )
        }
    }
}
