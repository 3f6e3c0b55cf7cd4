//! Sign-in with OpenID Connect providers, and logout both ways
//! (docs/oidc.md):
//!
//! - `PREFIX/oidc/start?provider=ID&next=PATH`: the authorization code
//!   flow with PKCE, `state` and `nonce`, all kept server-side in a
//!   short-lived, single-use record whose token is in a host-only cookie,
//!   so a callback works once, in the browser that started it.
//! - `PREFIX/oidc/callback`: the code traded for tokens, the ID token
//!   checked in full ([`jwt::id_token`]), the allow-lists applied, and a
//!   session made like a password sign-in (rotation, fixation-proof).
//! - `PREFIX/oidc/backchannel-logout`: the provider's logout token checked
//!   in full ([`jwt::logout_token`]), replays refused on every node (the
//!   shared store remembers each `jti`), and the matching sessions ended.
//! - Sign-out ends the provider's session too (RP-initiated logout), or
//!   makes the next sign-in ask the provider for the password again.

mod jwt;
mod provider;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use sha2::Digest as _;
use signoff::{Actor, AuditEvent, AuditKind, NewSession, Session, SessionData, StateStore, UserId};

use super::client_addr::ClientAddr;
use super::error_pages::{error_page, unavailable};
use super::proxy::no_store;
use super::{cookies, redirect, single_sign_on, AppState, Gateway, GROUPS_KEY, USER_NAME_KEY};
use crate::config::{Provider, UserClaim};
use provider::ProviderState;

/// The session data keys of a provider's user.
pub const EMAIL_KEY: &str = "signoff.email";
pub(super) const PROVIDER_KEY: &str = "signoff.oidc.provider";
pub(super) const SUB_KEY: &str = "signoff.oidc.sub";
pub(super) const SID_KEY: &str = "signoff.oidc.sid";
pub(super) const ID_TOKEN_KEY: &str = "signoff.oidc.id_token";
/// Every key an app host's session copies from the central one.
pub(super) const COPIED_KEYS: [&str; 5] = [EMAIL_KEY, PROVIDER_KEY, SUB_KEY, SID_KEY, ID_TOKEN_KEY];

/// The pending sign-in's keys (an anonymous record).
const PENDING_PROVIDER: &str = "signoff.oidc.pending.provider";
const PENDING_STATE: &str = "signoff.oidc.pending.state";
const PENDING_NONCE: &str = "signoff.oidc.pending.nonce";
const PENDING_VERIFIER: &str = "signoff.oidc.pending.verifier";
const PENDING_NEXT: &str = "signoff.oidc.pending.next";
/// Present when the sign-in must prove a password typed now (`max_age=0`).
const PENDING_FRESH: &str = "signoff.oidc.pending.fresh";
/// How long a sign-in at the provider may take.
const PENDING_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The providers, as configured, and the shared store for `jti`s and `sid`s.
pub(super) struct Providers {
    list: Vec<Arc<ProviderState>>,
    state: Option<Arc<dyn StateStore>>,
}

impl Providers {
    /// The configured providers; the shared store comes with
    /// [`Providers::set_state_store`].
    pub(super) fn new(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        let list = if settings.oidc.providers.is_empty() {
            Vec::new()
        } else {
            let client = provider::client()?;
            settings
                .oidc
                .providers
                .iter()
                .map(|p| Arc::new(ProviderState::new(p.clone(), client.clone())))
                .collect()
        };
        Ok(Self { list, state: None })
    }

    /// The origins a sign-out form may lead on to: each provider's that
    /// signs out there (its issuer's, and its `end_session_endpoint`'s
    /// once discovery has read it).
    pub(super) async fn form_targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.list.iter().filter(|p| p.config.logout_at_provider) {
            let mut urls = vec![p.config.issuer.clone()];
            if let Some(end) = p
                .discovery_if_read()
                .await
                .and_then(|d| d.end_session_endpoint.clone())
            {
                urls.push(end);
            }
            for url in urls {
                if let Some(origin) = origin_of(&url) {
                    if !out.contains(&origin) {
                        out.push(origin);
                    }
                }
            }
        }
        out
    }

    /// The shared store for `jti`, `sid` and name records.
    pub(super) fn set_state_store(&mut self, state: Arc<dyn StateStore>) {
        self.state = Some(state);
    }

    /// Whether any provider is configured.
    pub(super) fn any(&self) -> bool {
        !self.list.is_empty()
    }

    fn by_id(&self, id: &str) -> Option<&Arc<ProviderState>> {
        self.list.iter().find(|p| p.config.id == id)
    }

    /// The sign-in links for the login page.
    pub(super) fn links(&self, prefix: &str, next: &str) -> Vec<super::pages::ProviderLink> {
        self.list
            .iter()
            .map(|p| super::pages::ProviderLink {
                href: format!(
                    "{prefix}/oidc/start?provider={}&next={}",
                    redirect::encode(&p.config.id),
                    redirect::encode(next)
                ),
                name: p.config.name.clone(),
            })
            .collect()
    }
}

/// `scheme://host[:port]` of a URL, if it has them (and nothing a CSP
/// source could not hold).
fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    let plain = authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    plain.then(|| format!("{scheme}://{authority}"))
}

fn random_text() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The routes.
pub(super) fn routes(gw: &Gateway) -> Router<Arc<Gateway>> {
    let p = &gw.settings.prefix;
    Router::new()
        .route(&format!("{p}/oidc/start"), get(start))
        .route(&format!("{p}/oidc/callback"), get(callback))
        .route(
            &format!("{p}/oidc/backchannel-logout"),
            post(backchannel_logout),
        )
}

/// The pending sign-in's cookie: the session cookie's name with `-oidc`.
fn pending_cookie_name(gw: &Gateway) -> String {
    format!("{}-oidc", gw.cookie.name)
}

/// The cookie saying the next sign-in must ask the provider for the
/// password (a sign-out the provider could not be told of).
fn relogin_cookie_name(gw: &Gateway) -> String {
    format!("{}-relogin", gw.cookie.name)
}

fn redirect_uri(gw: &Gateway) -> String {
    format!(
        "{}{}/oidc/callback",
        gw.settings.public_origin, gw.settings.prefix
    )
}

#[derive(Deserialize)]
struct StartQuery {
    provider: Option<String>,
    next: Option<String>,
    /// `login`: the provider asks for the password even if its own
    /// session lives (re-authentication for a `fresh` rule).
    prompt: Option<String>,
}

/// `PREFIX/oidc/start`: to the provider, with a new pending sign-in.
async fn start(State(gw): AppState, Query(q): Query<StartQuery>, headers: HeaderMap) -> Response {
    let Some(provider) = q
        .provider
        .as_deref()
        .and_then(|id| gw.oidc.by_id(id))
        .cloned()
    else {
        return error_page(
            &gw,
            StatusCode::NOT_FOUND,
            "Unknown sign-in",
            "This site has no such sign-in. Go back to the sign-in page and choose one it offers.",
        );
    };
    let next = redirect::next_or_root(q.next.as_deref());
    let discovery = match provider.discovery().await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(provider = %provider.config.id, error = format!("{e:#}"), "cannot reach the OpenID provider");
            return provider_unreachable(&gw, &provider.config);
        }
    };
    // After a sign-out the provider was not told of, ask it for the
    // password again; for a `fresh` rule, also prove it was typed now.
    let fresh = q.prompt.as_deref() == Some("login");
    let relogin = cookies::read(&headers, &relogin_cookie_name(&gw)).is_some() || fresh;
    let (state, nonce, verifier) = (random_text(), random_text(), random_text());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut data = SessionData::new();
    data.insert(PENDING_PROVIDER.to_owned(), provider.config.id.clone());
    data.insert(PENDING_STATE.to_owned(), state.clone());
    data.insert(PENDING_NONCE.to_owned(), nonce.clone());
    data.insert(PENDING_VERIFIER.to_owned(), verifier);
    data.insert(PENDING_NEXT.to_owned(), next.to_owned());
    if fresh {
        data.insert(PENDING_FRESH.to_owned(), "1".to_owned());
    }
    let until = gw.sessions.now().plus(PENDING_LIFETIME);
    let pending = match gw
        .sessions
        .create(NewSession::anonymous().reserved_data(data).ends_by(until))
        .await
    {
        Ok(issued) => issued,
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not start an OpenID sign-in");
            return unavailable(&gw);
        }
    };
    let mut url =
        format!(
        "{}{}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}\
         &code_challenge={challenge}&code_challenge_method=S256",
        discovery.authorization_endpoint,
        if discovery.authorization_endpoint.contains('?') { '&' } else { '?' },
        redirect::encode(&provider.config.client_id),
        redirect::encode(&redirect_uri(&gw)),
        redirect::encode(&provider.config.scopes.join(" ")),
    );
    if relogin {
        url.push_str("&prompt=login");
    }
    if fresh {
        // The ID token then carries `auth_time`, checked at the callback.
        url.push_str("&max_age=0");
    }
    let mut r = redirect::away(&url);
    r.headers_mut().append(
        header::SET_COOKIE,
        cookies::helper(
            &pending_cookie_name(&gw),
            pending.token.expose(),
            PENDING_LIFETIME.as_secs(),
            gw.cookie.secure,
        ),
    );
    r
}

fn provider_unreachable(gw: &Gateway, provider: &Provider) -> Response {
    error_page(
        gw,
        StatusCode::BAD_GATEWAY,
        "Sign-in is not possible right now",
        &format!(
            "The sign-in service ({}) cannot be reached. Try again in a moment.",
            provider.name
        ),
    )
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    /// The provider's name for itself (RFC 9207), when it sends one.
    iss: Option<String>,
}

/// A sign-in refused at the callback: said plainly, logged with why.
fn refused(gw: &Gateway, why: &str) -> Response {
    tracing::info!(target: "signoff::auth", why, "refused an OpenID sign-in");
    let mut r = error_page(
        gw,
        StatusCode::BAD_REQUEST,
        "Sign-in failed",
        "This sign-in could not be completed: it was used already, took too long, or was \
         not started in this browser. Go back to the sign-in page and try again.",
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        cookies::helper(&pending_cookie_name(gw), "", 0, gw.cookie.secure),
    );
    r
}

/// `PREFIX/oidc/callback`: the provider's answer.
async fn callback(
    State(gw): AppState,
    ClientAddr(client_ip): ClientAddr,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    // The pending sign-in this browser started: taken out of the store,
    // so a callback works once.
    let Some(raw) = cookies::read(&headers, &pending_cookie_name(&gw)) else {
        return refused(&gw, "no pending sign-in in this browser");
    };
    let pending = match gw.uncached.take_once(raw, PENDING_STATE).await {
        Ok(Some(s)) => s,
        Ok(None) => return refused(&gw, "used, expired, unknown or not a pending sign-in"),
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not take a pending sign-in");
            return unavailable(&gw);
        }
    };
    let now = gw.sessions.now();
    let data = &pending.data;
    let expected_state = data.get(PENDING_STATE).map_or("", String::as_str);
    let state = q.state.as_deref().unwrap_or("");
    if state.is_empty()
        || !bool::from(subtle::ConstantTimeEq::ct_eq(
            state.as_bytes(),
            expected_state.as_bytes(),
        ))
    {
        return refused(
            &gw,
            "the state is not this browser's sign-in's, or it expired",
        );
    }
    let Some(provider) = data
        .get(PENDING_PROVIDER)
        .and_then(|id| gw.oidc.by_id(id))
        .cloned()
    else {
        return refused(&gw, "the provider is no longer configured");
    };
    if let Some(error) = q.error.as_deref() {
        // Only the characters an error code has reach the log.
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(64)
            .collect();
        tracing::info!(target: "signoff::auth", provider = %provider.config.id, error = %code, "the provider refused the sign-in");
        return refused(&gw, "the provider refused the sign-in");
    }
    // A code from another provider, relayed by one that is not honest
    // (mix-up): the answer names who issued it.
    if q.iss
        .as_deref()
        .is_some_and(|iss| iss != provider.config.issuer)
    {
        return refused(&gw, "the answer names another issuer");
    }
    let Some(code) = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 4096)
    else {
        return refused(&gw, "no code");
    };
    let verifier = data.get(PENDING_VERIFIER).map_or("", String::as_str);
    let answer = match provider.exchange(code, &redirect_uri(&gw), verifier).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(provider = %provider.config.id, error = format!("{e:#}"), "the code could not be traded for tokens");
            return refused(&gw, "the provider did not take the code");
        }
    };
    let Some(id_token) = answer.get("id_token").and_then(|v| v.as_str()) else {
        return refused(&gw, "the provider sent no ID token");
    };
    let nonce = data.get(PENDING_NONCE).map_or("", String::as_str);
    let claims = match jwt::id_token(&provider, id_token, nonce, now.as_millis() / 1000).await {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(target: "signoff::auth", provider = %provider.config.id, why, "refused an ID token");
            return refused(&gw, why);
        }
    };
    // When the password was typed at the provider: its `auth_time`. A
    // sign-in for a `fresh` rule must show it was just now; without
    // `auth_time` a session counts as long ago (never fresh).
    let auth_time = claims.get("auth_time").and_then(|v| v.as_i64());
    if data.contains_key(PENDING_FRESH) {
        let asked_at = pending.created_at.as_millis() / 1000;
        if auth_time.is_none_or(|t| t < asked_at - 60) {
            tracing::warn!(target: "signoff::auth", provider = %provider.config.id, "the provider did not ask for the password again (no recent auth_time)");
            return refused(&gw, "the provider did not ask for the password again");
        }
    }
    let authenticated_at =
        signoff::Timestamp::from_millis(auth_time.unwrap_or(0).saturating_mul(1000).max(0));
    let who = match Who::of(&provider.config, &claims) {
        Ok(who) => who,
        Err(why) => {
            tracing::info!(target: "signoff::auth", provider = %provider.config.id, why, "an OpenID user may not sign in here");
            let mut r = error_page(
                &gw,
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                &format!("You signed in at {}, but {why}.", provider.config.name),
            );
            no_store(r.headers_mut());
            return r;
        }
    };
    // A provider's user may not take a local account's name (in any
    // letter case): the app would take them for that user
    // (X-Signoff-User).
    let mut local = gw.accounts.user(&who.name).await;
    if matches!(local, Err(signoff::AccountError::UnknownUser))
        && who.name != who.name.to_lowercase()
    {
        local = gw.accounts.user(&who.name.to_lowercase()).await;
    }
    match local {
        Err(signoff::AccountError::UnknownUser | signoff::AccountError::InvalidName) => {}
        Ok(_) => {
            tracing::warn!(target: "signoff::auth", provider = %provider.config.id, user = %who.name, "refused an OpenID sign-in: a local account has this name");
            let mut r = error_page(
                &gw,
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                &format!(
                    "You signed in at {} as {:?}, but a local account of this site has that \
                     name. Ask the site's operator.",
                    provider.config.name, who.name
                ),
            );
            no_store(r.headers_mut());
            return r;
        }
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not check the user name");
            return unavailable(&gw);
        }
    }
    // Nor may two provider users share a name (two providers, or a name
    // given up and taken by another): the first to sign in keeps it.
    match claim_name(&gw, &who.name, &user_id(&provider.config.id, &who.sub)).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(target: "signoff::auth", provider = %provider.config.id, user = %who.name, "refused an OpenID sign-in: another provider user has this name");
            let mut r = error_page(
                &gw,
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                &format!(
                    "You signed in at {} as {:?}, but another sign-in of this site has that \
                     name. Ask the site's operator.",
                    provider.config.name, who.name
                ),
            );
            no_store(r.headers_mut());
            return r;
        }
        Err(()) => return unavailable(&gw),
    }
    let next = redirect::next_or_root(data.get(PENDING_NEXT).map(String::as_str)).to_owned();
    let mut session_data = SessionData::new();
    session_data.insert(USER_NAME_KEY.to_owned(), who.name.clone());
    if !who.groups.is_empty() {
        session_data.insert(GROUPS_KEY.to_owned(), who.groups.join(","));
    }
    if let Some(email) = &who.email {
        session_data.insert(EMAIL_KEY.to_owned(), email.clone());
    }
    session_data.insert(PROVIDER_KEY.to_owned(), provider.config.id.clone());
    session_data.insert(SUB_KEY.to_owned(), who.sub.clone());
    if let Some(sid) = &who.sid {
        session_data.insert(SID_KEY.to_owned(), sid.clone());
    }
    // For the provider's logout, if it fits beside the rest.
    if id_token.len() <= 2048 {
        session_data.insert(ID_TOKEN_KEY.to_owned(), id_token.to_owned());
    }
    let user_id = user_id(&provider.config.id, &who.sub);
    let mut new = NewSession::for_user(user_id.clone())
        .ip(client_ip.to_string())
        .reserved_data(session_data)
        .authenticated_at(authenticated_at);
    if let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        new = new.user_agent(super::sign_in::truncate(ua, signoff::MAX_USER_AGENT_BYTES));
    }
    // A `sid`-only logout token finds the user through this record.
    if let (Some(sid), Some(state)) = (&who.sid, &gw.oidc.state) {
        let name = sid_record(&provider.config.id, sid);
        if let Err(e) = state.put_state(&name, who.sub.as_bytes(), None).await {
            gw.count_store_error();
            tracing::error!(error = %e, "could not record the provider's session id");
            return unavailable(&gw);
        }
    }
    let previous = cookies::read(&headers, &gw.cookie.name);
    let issued = match gw.sessions.login(previous, new).await {
        Ok(issued) => issued,
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not create a session");
            return unavailable(&gw);
        }
    };
    tracing::info!(target: "signoff::auth", user = %who.name, provider = %provider.config.id, session = %issued.session.handle, "login");
    gw.audit(
        AuditEvent::new(AuditKind::LoginSucceeded, now)
            .user(Some(&user_id), Some(&who.name))
            .session(&issued.session.handle)
            .by(Actor::User)
            .reason("openid_connect")
            .ip(client_ip),
    )
    .await;
    let mut r = redirect::away(&next);
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, cookies::issue(&gw, &issued));
    h.append(
        header::SET_COOKIE,
        cookies::helper(&pending_cookie_name(&gw), "", 0, gw.cookie.secure),
    );
    if cookies::read(&headers, &relogin_cookie_name(&gw)).is_some() {
        h.append(
            header::SET_COOKIE,
            cookies::helper(&relogin_cookie_name(&gw), "", 0, gw.cookie.secure),
        );
    }
    r
}

/// A provider's user as a session id: the provider and its `sub`, never a
/// local user's id (those have no `:`).
fn user_id(provider: &str, sub: &str) -> UserId {
    UserId::new(format!("oidc:{provider}:{sub}"))
}

/// Binds a user name (any letter case) to the provider user who first
/// signed in with it; whether `owner` has it.
async fn claim_name(gw: &Gateway, name: &str, owner: &UserId) -> Result<bool, ()> {
    let Some(state) = &gw.oidc.state else {
        return Ok(true);
    };
    let record = format!(
        "oidc.name.{:x}",
        sha2::Sha256::digest(name.to_lowercase().as_bytes())
    );
    for _ in 0..2 {
        match state.get_state(&record).await {
            Ok(Some(v)) => return Ok(v.value == owner.as_str().as_bytes()),
            Ok(None) => match state
                .put_state(&record, owner.as_str().as_bytes(), None)
                .await
            {
                Ok(true) => return Ok(true),
                // Another sign-in wrote it meanwhile: read it.
                Ok(false) => continue,
                Err(e) => {
                    gw.count_store_error();
                    tracing::error!(error = %e, "could not record a user name");
                    return Err(());
                }
            },
            Err(e) => {
                gw.count_store_error();
                tracing::error!(error = %e, "could not read a user name");
                return Err(());
            }
        }
    }
    Err(())
}

/// The shared record from a provider's session id to its `sub`.
fn sid_record(provider: &str, sid: &str) -> String {
    format!(
        "oidc.sid.{provider}.{:x}",
        sha2::Sha256::digest(sid.as_bytes())
    )
}

/// The shared record that a logout token's `jti` was seen.
fn jti_record(provider: &str, jti: &str) -> String {
    format!(
        "oidc.jti.{provider}.{:x}",
        sha2::Sha256::digest(jti.as_bytes())
    )
}

/// Who an ID token names, once the provider's rules let them in.
struct Who {
    sub: String,
    sid: Option<String>,
    name: String,
    email: Option<String>,
    groups: Vec<String>,
}

impl Who {
    fn of(
        provider: &Provider,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Who, String> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let sub = text("sub").ok_or("the provider named no user")?;
        let email = text("email");
        let email_verified = claims
            .get("email_verified")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let name = match provider.user_claim {
            UserClaim::Email if !email_verified => None,
            claim => text(claim.name()),
        }
        // A local user name's characters only: nothing a header parser
        // could trim or fold into another user's name.
        .filter(|n| signoff::check_name(n).is_ok())
        .ok_or_else(|| {
            format!(
                "it did not give a {} this site can use as your user name (letters, digits and . _ @ + - only)",
                provider.user_claim.name()
            )
        })?;
        let groups: Vec<String> = match claims.get(&provider.groups_claim) {
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|g| g.as_str())
                .map(str::to_owned)
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        }
        .into_iter()
        // Names that could not travel in X-Signoff-Groups are left out.
        .filter(|g| signoff::check_groups(std::slice::from_ref(g)).is_ok())
        .collect();
        if !provider.allowed_email_domains.is_empty() {
            let domain = email
                .as_deref()
                .filter(|_| email_verified)
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase());
            if !domain.is_some_and(|d| provider.allowed_email_domains.contains(&d)) {
                return Err("your email address is not in a domain this site allows".to_owned());
            }
        }
        if !provider.allowed_groups.is_empty()
            && !groups.iter().any(|g| provider.allowed_groups.contains(g))
        {
            return Err("you are in none of the groups this site allows".to_owned());
        }
        Ok(Who {
            sid: text("sid"),
            sub,
            name,
            email: email.filter(|_| email_verified),
            groups,
        })
    }
}

#[derive(Deserialize)]
struct BackchannelForm {
    logout_token: Option<String>,
}

fn backchannel_answer(status: StatusCode, body: &'static str) -> Response {
    let mut r = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    no_store(r.headers_mut());
    r
}

/// `PREFIX/oidc/backchannel-logout`: the provider ends sessions.
async fn backchannel_logout(State(gw): AppState, body: axum::body::Bytes) -> Response {
    const BAD: &str = "{\"error\":\"invalid_request\"}";
    let refuse = |why: &str| {
        tracing::warn!(target: "signoff::auth", why, "refused a back-channel logout");
        backchannel_answer(StatusCode::BAD_REQUEST, BAD)
    };
    let Ok(form) = serde_urlencoded::from_bytes::<BackchannelForm>(&body) else {
        return refuse("the body is not a form");
    };
    let Some(token) = form.logout_token.as_deref() else {
        return refuse("no logout_token");
    };
    let Some(issuer) = jwt::claimed_issuer(token) else {
        return refuse("not a JWT with an iss");
    };
    let Some(provider) = gw
        .oidc
        .list
        .iter()
        .find(|p| p.config.issuer == issuer)
        .cloned()
    else {
        return refuse("from an issuer that is not configured");
    };
    let now_secs = gw.sessions.now().as_millis() / 1000;
    let logout = match jwt::logout_token(&provider, token, now_secs).await {
        Ok(l) => l,
        Err(why) => return refuse(why),
    };
    let Some(state) = &gw.oidc.state else {
        tracing::error!("back-channel logout needs the shared store, which is not open");
        return backchannel_answer(StatusCode::SERVICE_UNAVAILABLE, BAD);
    };
    // Each logout token is taken once, by whichever node sees it first; it
    // is recorded only once its sessions have ended, so a provider that
    // tries again after a failure (503) is not refused as a replay.
    let record = jti_record(&provider.config.id, &logout.jti);
    match state.get_state(&record).await {
        Ok(None) => {}
        Ok(Some(_)) => return refuse("the jti was seen before (a replay)"),
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "could not read the logout tokens taken");
            return backchannel_answer(StatusCode::SERVICE_UNAVAILABLE, BAD);
        }
    }
    let ended = match end_for_logout(&gw, &provider.config.id, &logout, state.as_ref()).await {
        Ok(n) => state
            .put_state(&record, b"1", None)
            .await
            .map(|_| n)
            .map_err(Into::into),
        Err(e) => Err(e),
    };
    match ended {
        Ok(n) => {
            tracing::info!(target: "signoff::auth", provider = %provider.config.id, ended = n, "back-channel logout");
            backchannel_answer(StatusCode::OK, "{}")
        }
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "back-channel logout could not end the sessions");
            backchannel_answer(StatusCode::SERVICE_UNAVAILABLE, BAD)
        }
    }
}

/// Ends what a logout token names: with `sid`, that provider session's
/// sessions; with `sub` alone, the user's sessions made before its `iat`.
async fn end_for_logout(
    gw: &Gateway,
    provider: &str,
    logout: &jwt::Logout,
    state: &dyn StateStore,
) -> Result<usize, signoff::SessionError> {
    let sub = match (&logout.sub, &logout.sid) {
        (Some(sub), _) => sub.clone(),
        (None, Some(sid)) => match state.get_state(&sid_record(provider, sid)).await? {
            Some(record) => String::from_utf8_lossy(&record.value).into_owned(),
            None => return Ok(0),
        },
        (None, None) => return Ok(0),
    };
    let user = user_id(provider, &sub);
    let before = signoff::Timestamp::from_millis(logout.iat.saturating_mul(1000));
    let mut ended = 0;
    for s in gw.uncached.list_for_user(&user).await? {
        let matches = match &logout.sid {
            Some(sid) => s.data.get(SID_KEY) == Some(sid),
            None => s.created_at < before,
        };
        if matches {
            if let Some(gone) = gw
                .sessions
                .end_by_handle(&s.handle, Some(&user), Actor::Provider)
                .await?
            {
                ended += 1;
                ended += single_sign_on::end_linked(gw, &gone, Actor::Provider).await?;
            }
        }
    }
    Ok(ended)
}

/// For a sign-out of `ended` (read just before): where the browser goes
/// to end the provider's session too, if the provider offers it; else
/// whether the next sign-in must ask the provider for the password again
/// (`Err(true)`). `Err(false)`: not a provider's session.
pub(super) async fn logout_at_provider(gw: &Gateway, ended: &Session) -> Result<String, bool> {
    let Some(provider) = ended
        .data
        .get(PROVIDER_KEY)
        .and_then(|id| gw.oidc.by_id(id))
    else {
        return Err(false);
    };
    if !provider.config.logout_at_provider {
        return Err(true);
    }
    let Ok(discovery) = provider.discovery().await else {
        return Err(true);
    };
    let Some(end) = &discovery.end_session_endpoint else {
        return Err(true);
    };
    // The ID token as a hint when it was small enough to keep; `client_id`
    // alone otherwise (RP-Initiated Logout 1.0 allows either).
    let hint = ended
        .data
        .get(ID_TOKEN_KEY)
        .map(|t| format!("id_token_hint={}&", redirect::encode(t)))
        .unwrap_or_default();
    Ok(format!(
        "{end}{}{hint}client_id={}&post_logout_redirect_uri={}",
        if end.contains('?') { '&' } else { '?' },
        redirect::encode(&provider.config.client_id),
        redirect::encode(&format!(
            "{}{}/signed-out",
            gw.settings.public_origin, gw.settings.prefix
        )),
    ))
}

/// For a provider's user asked to prove who they are again (a `fresh`
/// rule, or before ending other sessions): a sign-in at their provider
/// that asks for the password (`prompt=login`), coming back to `next`.
/// `None` for a local user.
pub(super) fn reauthenticate_at_provider(
    gw: &Gateway,
    session: &Session,
    next: &str,
) -> Option<String> {
    let id = session.data.get(PROVIDER_KEY)?;
    gw.oidc.by_id(id)?;
    Some(format!(
        "{}/oidc/start?provider={}&next={}&prompt=login",
        gw.settings.prefix,
        redirect::encode(id),
        redirect::encode(next)
    ))
}

/// The answer to a password page for a provider's user: their password
/// is the provider's. `None` for a local user.
pub(super) fn password_elsewhere(gw: &Gateway, session: &Session) -> Option<Response> {
    let provider = gw.oidc.by_id(session.data.get(PROVIDER_KEY)?)?;
    Some(error_page(
        gw,
        StatusCode::NOT_FOUND,
        "No password here",
        &format!(
            "You sign in with {}; change your password there.",
            provider.config.name
        ),
    ))
}

/// `Set-Cookie` making the next sign-in ask the provider for the password.
pub(super) fn relogin_cookie(gw: &Gateway) -> HeaderValue {
    cookies::helper(
        &relogin_cookie_name(gw),
        "1",
        30 * 24 * 3600,
        gw.cookie.secure,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::ClientSecret;

    fn provider(domains: &[&str], groups: &[&str], claim: UserClaim) -> Provider {
        Provider {
            id: "default".into(),
            name: "Test".into(),
            issuer: "https://id.example.com".into(),
            client_id: "c".into(),
            client_secret: ClientSecret::for_tests("s"),
            user_claim: claim,
            groups_claim: "groups".into(),
            scopes: vec!["openid".into()],
            allowed_email_domains: domains.iter().map(|d| d.to_string()).collect(),
            allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
            logout_at_provider: true,
        }
    }

    fn claims(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn claims_name_the_user_and_the_allow_lists_decide() {
        let carol = claims(json!({
            "sub": "u-1", "sid": "s-1", "preferred_username": "carol",
            "email": "carol@Example.com", "email_verified": true,
            "groups": ["admins", "staff", "bad,name", ""],
        }));
        let who = Who::of(&provider(&[], &[], UserClaim::PreferredUsername), &carol).unwrap();
        assert_eq!(who.name, "carol");
        assert_eq!(who.sub, "u-1");
        assert_eq!(who.sid.as_deref(), Some("s-1"));
        assert_eq!(who.email.as_deref(), Some("carol@Example.com"));
        assert_eq!(
            who.groups,
            ["admins", "staff"],
            "names that cannot travel are left out"
        );
        let by_email = Who::of(&provider(&[], &[], UserClaim::Email), &carol).unwrap();
        assert_eq!(by_email.name, "carol@Example.com");
        let by_sub = Who::of(&provider(&[], &[], UserClaim::Sub), &carol).unwrap();
        assert_eq!(by_sub.name, "u-1");
        // Allow-lists: the domain of a verified email (any case), a group.
        assert!(Who::of(&provider(&["example.com"], &[], UserClaim::Sub), &carol).is_ok());
        assert!(Who::of(&provider(&["other.com"], &[], UserClaim::Sub), &carol).is_err());
        assert!(Who::of(&provider(&[], &["staff"], UserClaim::Sub), &carol).is_ok());
        assert!(Who::of(&provider(&[], &["ops"], UserClaim::Sub), &carol).is_err());

        // An unverified email names nobody and opens no domain.
        let unverified = claims(json!({
            "sub": "u-2", "preferred_username": "dave",
            "email": "dave@example.com", "email_verified": false, "groups": "staff",
        }));
        assert!(Who::of(&provider(&[], &[], UserClaim::Email), &unverified).is_err());
        assert!(Who::of(
            &provider(&["example.com"], &[], UserClaim::Sub),
            &unverified
        )
        .is_err());
        let dave = Who::of(
            &provider(&[], &[], UserClaim::PreferredUsername),
            &unverified,
        )
        .unwrap();
        assert_eq!(dave.email, None);
        assert_eq!(dave.groups, ["staff"], "one group as a string");
        // No usable name: refused, never an empty user.
        for bad in [
            json!({"sub": "u-3"}),
            json!({"sub": "u-3", "preferred_username": ""}),
            json!({"sub": "u-3", "preferred_username": "a\nb"}),
            json!({"sub": "u-3", "preferred_username": "x".repeat(300)}),
            json!({"preferred_username": "nosub"}),
        ] {
            assert!(
                Who::of(
                    &provider(&[], &[], UserClaim::PreferredUsername),
                    &claims(bad.clone())
                )
                .is_err(),
                "{bad}"
            );
        }
    }
}
