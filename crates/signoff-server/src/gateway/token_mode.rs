//! Token mode (`--tokens`): sign-in for API and mobile clients, the OAuth
//! token, revocation (RFC 7009) and introspection (RFC 7662) endpoints, the
//! JWKS, and bearer access tokens on proxied and forward-auth requests.
//!
//! Every token belongs to a server-side session ([`signoff::token_mode`]), so
//! the sessions page, "sign out everywhere", the CLI and the admin API end
//! token clients exactly as they end browsers. Errors follow RFC 6749 §5.2
//! (`{"error": "invalid_grant", "error_description": "…"}`); every answer
//! here is `Cache-Control: no-store` (the prefix's middleware sees to it).

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use signoff::token_mode::{
    kind_of, AccessError, GrantError, Requester, TokenKind, TokenPair, Tokens, DEFAULT_CLIENT,
};
use signoff::Actor;
use subtle::ConstantTimeEq;

use super::client_addr::ClientAddr;
use super::csrf_form::read_form;
use super::origin::{self, Intent};
use super::own_body::{self, BodyError};
use super::proxy::no_store;
use super::sign_in::{sign_in, SignInError};
use super::signed_in::{self, bearer, Identity, Who};
use super::{admin, single_sign_on, AppState, Gateway, USER_NAME_KEY};

/// Largest JSON body of `api/login`.
const MAX_JSON_BYTES: usize = 8 * 1024;

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &'static str, description: &str) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'static str,
        error_description: &'a str,
    }
    let body = serde_json::to_string(&Body {
        error,
        error_description: description,
    })
    .unwrap_or_default();
    json_response(status, body)
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(r.headers_mut());
    r
}

fn token_response(pair: &TokenPair) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        access_token: &'a str,
        token_type: &'static str,
        expires_in: u64,
        refresh_token: &'a str,
    }
    let body = serde_json::to_string(&Body {
        access_token: &pair.access_token,
        token_type: "Bearer",
        expires_in: pair.expires_in,
        refresh_token: &pair.refresh_token,
    })
    .unwrap_or_default();
    json_response(StatusCode::OK, body)
}

fn unavailable() -> Response {
    let mut r = oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the session store is unavailable; try again in a moment",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Token mode's routes; each answers 404 while token mode is off.
pub(super) fn routes(gw: &Gateway) -> Router<Arc<Gateway>> {
    let p = &gw.settings.prefix;
    Router::new()
        .route(&format!("{p}/api/login"), post(api_login))
        .route(&format!("{p}/api/logout"), post(api_logout))
        .route(&format!("{p}/token"), post(token))
        .route(&format!("{p}/revoke"), post(revoke))
        .route(&format!("{p}/introspect"), post(introspect))
        .route(&format!("{p}/jwks.json"), get(jwks))
}

/// Token mode's engine, when token mode is on; else the request is
/// refused with [`Off`].
struct On(Arc<Tokens>);

/// Token mode is off: 404.
struct Off;

impl IntoResponse for Off {
    fn into_response(self) -> Response {
        oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "token mode is off (start signoff with --tokens)",
        )
    }
}

impl FromRequestParts<Arc<Gateway>> for On {
    type Rejection = Off;

    async fn from_request_parts(_: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Off> {
        gw.tokens.clone().map(On).ok_or(Off)
    }
}

/// A form body as RFC 6749 wants it, with its errors as `invalid_request`.
struct OAuthForm<T>(T);

impl<S: Send + Sync, T: for<'de> Deserialize<'de>> FromRequest<S> for OAuthForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        read_form(req).await.map(OAuthForm).map_err(|status| {
            let (status, text) = match status {
                StatusCode::PAYLOAD_TOO_LARGE => (status, "the request body is too large"),
                StatusCode::REQUEST_TIMEOUT => (status, "the request body took too long to arrive"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                    StatusCode::BAD_REQUEST,
                    "expected application/x-www-form-urlencoded",
                ),
                _ => (
                    StatusCode::BAD_REQUEST,
                    "the form could not be read (a parameter given twice?)",
                ),
            };
            oauth_error(status, "invalid_request", text)
        })
    }
}

/// The answer to a bearer token that is not good (RFC 6750 §3).
pub(super) fn invalid_token(why: &str) -> Response {
    let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", why);
    let challenge = format!(
        "Bearer realm=\"signoff\", error=\"invalid_token\", error_description=\"{}\"",
        why.replace(['"', '\\'], "'")
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Checks a bearer token: an access token (signature and claims here,
/// then its session through the cache and revocation bus) or a session
/// token.
pub(super) async fn identify_bearer(gw: &Gateway, raw: &str) -> Who {
    match kind_of(raw) {
        TokenKind::Access => {
            let Some(tokens) = &gw.tokens else {
                return Who::BadBearer("access tokens need token mode (--tokens)".into());
            };
            match tokens.authenticate(raw).await {
                Ok((_, session)) => match session.data.get(USER_NAME_KEY).cloned() {
                    // Not passed on: the upstream gets the identity
                    // headers, and a token in its logs could be replayed.
                    Some(user) => {
                        crate::listener::note_live_session();
                        Who::Known(Identity {
                            user,
                            session,
                            csrf: None,
                            strip_authorization: true,
                        })
                    }
                    None => Who::BadBearer("the token's session has no user".into()),
                },
                Err(AccessError::Store(e)) => {
                    gw.count_store_error();
                    tracing::error!(error = %e, "session store unavailable; refusing the request");
                    Who::Unavailable
                }
                Err(e) => Who::BadBearer(e.to_string()),
            }
        }
        TokenKind::Session => {
            // A bearer session token is a central one (`api/login` makes it).
            match Who::from(signed_in::validate(gw, &gw.sessions, Some(raw), None).await) {
                Who::Known(identity) => Who::Known(Identity {
                    csrf: None,
                    strip_authorization: true,
                    ..identity
                }),
                Who::Anonymous { .. } => {
                    Who::BadBearer("the session has ended or does not exist".into())
                }
                other => other,
            }
        }
        TokenKind::Refresh => Who::BadBearer(
            "a refresh token is not an access token; exchange it at the token endpoint".into(),
        ),
        TokenKind::Unknown => Who::BadBearer("not a token issued here".into()),
    }
}

/// Who calls `introspect` or `revoke` with credentials: the admin token
/// (`Bearer`), or a configured client (`Basic`, RFC 6749 §2.3.1).
enum Caller {
    Admin,
    Client(String),
}

/// Credentials were sent, and are wrong: 401 `invalid_client`.
struct BadClient;

impl IntoResponse for BadClient {
    fn into_response(self) -> Response {
        invalid_client("client authentication failed")
    }
}

/// 401 `invalid_client`, asking for `Basic` credentials.
fn invalid_client(description: &str) -> Response {
    let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"signoff\""),
    );
    r
}

/// The caller of a request. `Ok(None)`: no credentials sent.
fn caller(gw: &Gateway, headers: &HeaderMap) -> Result<Option<Caller>, BadClient> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        if admin::admin_token_ok(gw, headers) {
            return Ok(Some(Caller::Admin));
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        if let Some(id) = client_credentials(gw, credentials.trim()) {
            return Ok(Some(Caller::Client(id)));
        }
    }
    tracing::warn!(target: "signoff::auth", "refused a token endpoint request with wrong credentials");
    Err(BadClient)
}

/// Credentials optional: a wrong one is refused, none is `None`.
impl OptionalFromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = BadClient;

    async fn from_request_parts(
        parts: &mut Parts,
        gw: &Arc<Gateway>,
    ) -> Result<Option<Self>, BadClient> {
        caller(gw, &parts.headers)
    }
}

/// Credentials required (introspection): none is 401 too.
impl FromRequestParts<Arc<Gateway>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Response> {
        match caller(gw, &parts.headers) {
            Ok(Some(caller)) => Ok(caller),
            Ok(None) => Err(invalid_client(
                "introspection needs client credentials (Basic) or the admin token (Bearer)",
            )),
            Err(bad) => Err(bad.into_response()),
        }
    }
}

/// The client whose `Basic` credentials these are. Every configured
/// client's digest is compared, in constant time, so the answer takes
/// as long for a wrong id as for a wrong secret.
fn client_credentials(gw: &Gateway, encoded: &str) -> Option<String> {
    let clients = &gw.settings.tokens.as_ref()?.clients;
    let decoded = STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (decode(id), decode(secret));
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let mut found = None;
    for (client, expected) in clients {
        let id_ok = client.as_bytes().ct_eq(id.as_bytes());
        let secret_ok = expected.ct_eq(&digest);
        if bool::from(id_ok & secret_ok) {
            found = Some(client.clone());
        }
    }
    found
}

/// Whether `id` is a configured (confidential) client, which must
/// authenticate with `Basic` to act as itself.
fn is_confidential(gw: &Gateway, id: &str) -> bool {
    gw.settings
        .tokens
        .as_ref()
        .is_some_and(|t| t.clients.iter().any(|(c, _)| c == id))
}

fn client_must_authenticate() -> Response {
    invalid_client("this client must authenticate (Authorization: Basic)")
}

#[derive(Deserialize)]
struct LoginJson {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    client_id: Option<String>,
}

/// The body of `api/login`, from no browser on another site.
impl FromRequest<Arc<Gateway>> for LoginJson {
    type Rejection = Response;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, Response> {
        // A browser on another site cannot send JSON here without a CORS
        // preflight we never grant; refuse what it can send anyway.
        if origin::intent(req.headers(), &gw.settings.public_origin) == Intent::Foreign {
            return Err(oauth_error(
                StatusCode::FORBIDDEN,
                "invalid_request",
                "sign-in requests from other sites are refused",
            ));
        }
        let body = own_body::read(req, "application/json", MAX_JSON_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::WrongType => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "expected a JSON body (Content-Type: application/json)",
                ),
                BodyError::TooLarge => oauth_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    "the request body is too large",
                ),
                BodyError::TooSlow => oauth_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request",
                    "the request body took too long to arrive",
                ),
            })?;
        serde_json::from_slice(&body).map_err(|_| {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "expected {\"username\": \"…\", \"password\": \"…\"}",
            )
        })
    }
}

/// `POST PREFIX/api/login`: JSON `{"username", "password", "client_id"?}`
/// → a token pair for a new session. Same limits and audit as the form.
async fn api_login(
    State(gw): AppState,
    On(tokens): On,
    ClientAddr(client_ip): ClientAddr,
    headers: HeaderMap,
    login: LoginJson,
) -> Response {
    let client = login.client_id.as_deref().unwrap_or(DEFAULT_CLIENT);
    if is_confidential(&gw, client) {
        match caller(&gw, &headers) {
            Ok(Some(Caller::Client(id))) if id == client => {}
            Err(bad) => return bad.into_response(),
            _ => return client_must_authenticate(),
        }
    }
    if !signoff::token_mode::valid_client_id(client) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id must be 1 to 64 characters of A-Z a-z 0-9 . _ : -",
        );
    }
    if !gw.settings.oidc.password_sign_in {
        return oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            "passwords are not used here (password_sign_in = false)",
        );
    }
    // No `previous`: an API client has no cookie to replace. Never
    // remembered: a client's refresh tokens live as long as its session.
    let issued = match sign_in(
        &gw,
        client_ip,
        &headers,
        &login.username,
        &login.password,
        None,
        false,
    )
    .await
    {
        Ok((_, issued)) => issued,
        Err(SignInError::Throttled(secs)) => {
            let mut r = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                &format!(
                    "too many failed attempts; try again in {}",
                    crate::display::count(secs, "second", "seconds")
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Err(SignInError::Refused) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "wrong user name or password",
            )
        }
        Err(SignInError::Unavailable) => return unavailable(),
    };
    let pair = match tokens.issue(&issued.session, client).await {
        Ok(pair) => pair,
        Err(e) => {
            // Leave no session behind that no client holds.
            let _ = gw.sessions.end(issued.token.expose(), Actor::User).await;
            gw.count_store_error();
            tracing::error!(error = %e, "could not issue tokens");
            return unavailable();
        }
    };
    tracing::info!(target: "signoff::auth", session = %pair.session.handle, client, "tokens issued");
    token_response(&pair)
}

/// `POST PREFIX/api/logout` with `Authorization: Bearer` (an access token
/// or a session token): ends the session, and with it every token of it.
async fn api_logout(State(gw): AppState, _: On, headers: HeaderMap) -> Response {
    let Some(raw) = bearer(&headers) else {
        return invalid_token("send the access token as Authorization: Bearer");
    };
    let handle = match identify_bearer(&gw, raw).await {
        Who::Known(identity) => identity.session.handle,
        Who::BadBearer(why) => return invalid_token(&why),
        Who::Unavailable => return unavailable(),
        Who::Anonymous { .. } => return invalid_token("no session"),
    };
    let ended = match gw.sessions.end_by_handle(&handle, None, Actor::User).await {
        // Its whole sign-in ends with it (docs/apps.md).
        Ok(Some(session)) => single_sign_on::end_linked(&gw, &session, Actor::User)
            .await
            .map(drop),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match ended {
        Ok(()) => {
            tracing::info!(target: "signoff::auth", session = %handle, "API logout");
            json_response(StatusCode::OK, "{\"signed_out\":true}".to_owned())
        }
        Err(e) => {
            // Not done: say so, so the client does not believe it is out.
            gw.count_store_error();
            tracing::error!(error = %e, "API logout failed: the store is unavailable");
            unavailable()
        }
    }
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
}

/// `POST PREFIX/token`: `grant_type=refresh_token` (RFC 6749 §6).
async fn token(
    State(gw): AppState,
    On(tokens): On,
    caller: Option<Caller>,
    OAuthForm(form): OAuthForm<TokenForm>,
) -> Response {
    // The client: authenticated (`Basic`), or a public one naming itself.
    let client = match (&caller, form.client_id.as_deref()) {
        (Some(Caller::Client(id)), named) => {
            if named.is_some_and(|n| n != id) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id differs from the authenticated client",
                );
            }
            Some(id.as_str())
        }
        (Some(Caller::Admin), _) => return client_must_authenticate(),
        (None, Some(named)) if is_confidential(&gw, named) => return client_must_authenticate(),
        (None, named) => named,
    };
    match form.grant_type.as_deref() {
        Some("refresh_token") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=refresh_token is supported here; sign in at api/login",
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            )
        }
    }
    let Some(refresh_token) = form.refresh_token.as_deref().filter(|t| !t.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is missing",
        );
    };
    match tokens.refresh(refresh_token, client).await {
        Ok(pair) => token_response(&pair),
        Err(GrantError::Store(e)) => {
            gw.count_store_error();
            tracing::error!(error = %e, "refresh failed: the store is unavailable");
            unavailable()
        }
        Err(e) => {
            tracing::info!(target: "signoff::auth", reason = %e, "refresh refused");
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &e.to_string())
        }
    }
}

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
    // RFC 7009 §2.1 / RFC 7662 §2.1: a hint we may ignore; we tell the
    // kinds apart by their shape.
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
}

/// The form of `revoke` and `introspect`, with its `token`.
struct TokenRequest {
    token: String,
    client_id: Option<String>,
}

impl<S: Send + Sync> FromRequest<S> for TokenRequest {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let OAuthForm(form) = OAuthForm::<TokenParam>::from_request(req, state).await?;
        match form.token.filter(|t| !t.is_empty()) {
            Some(token) => Ok(TokenRequest {
                token,
                client_id: form.client_id,
            }),
            None => Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "token is missing",
            )),
        }
    }
}

/// `POST PREFIX/revoke` (RFC 7009): `token` (+ `token_type_hint`). Ends the
/// token's session if the token is live and was issued to the caller: a
/// configured client (`Basic`), the admin token (any client's), or a public
/// client naming itself with `client_id` (default `default`). Answers 200
/// whatever the token was, so nothing is learnt about other clients' tokens.
async fn revoke(
    State(gw): AppState,
    On(tokens): On,
    caller: Option<Caller>,
    form: TokenRequest,
) -> Response {
    let token = form.token.as_str();
    let requester = match &caller {
        Some(Caller::Admin) => Requester::Admin,
        Some(Caller::Client(id)) => Requester::Client(id),
        None => {
            let named = form.client_id.as_deref().unwrap_or(DEFAULT_CLIENT);
            if is_confidential(&gw, named) {
                return client_must_authenticate();
            }
            Requester::Client(named)
        }
    };
    match tokens.revoke(token, requester).await {
        Ok(ended) => {
            if ended {
                tracing::info!(target: "signoff::auth", "token revoked; its session ended");
            }
            let mut r = StatusCode::OK.into_response();
            no_store(r.headers_mut());
            r
        }
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "revocation failed: the store is unavailable");
            unavailable()
        }
    }
}

/// `POST PREFIX/introspect` (RFC 7662), for the admin token or a configured
/// client: what a token is, or exactly `{"active":false}`.
async fn introspect(
    State(gw): AppState,
    On(tokens): On,
    _: Caller,
    form: TokenRequest,
) -> Response {
    let token = form.token.as_str();
    match tokens.introspect(token).await {
        Ok(info) => json_response(
            StatusCode::OK,
            serde_json::to_string(&info).unwrap_or_else(|_| "{\"active\":false}".to_owned()),
        ),
        Err(e) => {
            gw.count_store_error();
            tracing::error!(error = %e, "introspection failed: the store is unavailable");
            unavailable()
        }
    }
}

/// `GET PREFIX/jwks.json`: the public keys that verify access tokens.
async fn jwks(On(tokens): On) -> Response {
    let mut r = json_response(StatusCode::OK, tokens.jwks().await.to_string());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    r
}
