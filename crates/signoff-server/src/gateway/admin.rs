//! The admin API under `PREFIX/admin/`: users, their groups, their
//! sessions, ending them, disabling accounts, and the audit trail. JSON in
//! and out.
//!
//! Off unless `--admin-token-sha256` is set; then every request needs
//! `Authorization: Bearer TOKEN` whose SHA-256 matches. The check hashes
//! whatever was sent (nothing, if nothing was) and compares digests in
//! constant time, so a missing, short or wrong token costs the same.
//! Cookies are ignored here, so a browser's session cannot be ridden
//! (no CSRF). The OpenAPI document at `openapi.json` is generated from the
//! handlers below by utoipa and needs no token.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get};
use axum::Router;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use signoff::{
    AccountError, Actor, AuditEvent, AuditKind, AuditQuery, Session, SessionHandle, User,
};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::own_body::{self, BodyError};
use super::{single_sign_on, AppState, Gateway};
use crate::display;

/// Largest JSON body accepted.
const MAX_JSON_BYTES: usize = 16 * 1024;
/// Most audit events one request returns.
const MAX_AUDIT_LIMIT: usize = 10_000;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "signoff admin API",
        description = "Users, their sessions, and the audit trail of a signoff gateway. \
                       Every endpoint needs `Authorization: Bearer TOKEN`."
    ),
    paths(
        list_users,
        get_user,
        patch_user,
        user_groups,
        change_user_groups,
        user_sessions,
        end_user_sessions,
        end_session,
        audit
    ),
    components(schemas(
        UserJson,
        SessionJson,
        PatchUser,
        Ended,
        ApiError,
        AuditEventJson,
        GroupsJson,
        ChangeGroups,
        GroupsChangedJson
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, with the server URL for this prefix.
pub fn openapi(prefix: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.servers = Some(vec![utoipa::openapi::Server::new(format!(
        "{prefix}/admin"
    ))]);
    doc
}

/// The admin API, at `PREFIX/admin`.
pub(super) fn routes(gw: &Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new().nest(&format!("{}/admin", gw.settings.prefix), router(gw))
}

/// The admin routes, to be nested at `PREFIX/admin`.
fn router(gw: &Arc<Gateway>) -> Router<Arc<Gateway>> {
    // The token check wraps each method's handler, not the route: a method
    // the route does not serve gets 405 before the token is looked at.
    let token = || middleware::from_fn_with_state(gw.clone(), require_token);
    Router::new()
        .route("/users", get(list_users).route_layer(token()))
        .route(
            "/users/{name}",
            get(get_user).patch(patch_user).route_layer(token()),
        )
        .route(
            "/users/{name}/groups",
            get(user_groups)
                .post(change_user_groups)
                .route_layer(token()),
        )
        .route(
            "/users/{name}/sessions",
            get(user_sessions)
                .delete(end_user_sessions)
                .route_layer(token()),
        )
        .route(
            "/sessions/{handle}",
            delete(end_session).route_layer(token()),
        )
        .route("/audit", get(audit).route_layer(token()))
        .route("/openapi.json", get(openapi_json))
        // A route, not a fallback: the outer router's catch-all for the
        // prefix would otherwise answer with an HTML page.
        .route("/", any(unknown_route))
        .route("/{*rest}", any(unknown_route))
        .layer(middleware::from_fn_with_state(gw.clone(), enabled))
        .layer(middleware::map_response(json_errors_for_axum))
}

/// A JSON error: `{"error": "unknown_user", "message": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
struct ApiError {
    /// A stable machine-readable code.
    error: &'static str,
    /// For people.
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let mut r = (
        status,
        json(&ApiError {
            error: code,
            message: message.into(),
        }),
    )
        .into_response();
    set_json(r.headers_mut());
    r
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn set_json(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

fn ok<T: Serialize>(value: &T) -> Response {
    let mut r = (StatusCode::OK, json(value)).into_response();
    set_json(r.headers_mut());
    r
}

/// The API is off without a configured token: everything under it is 404.
async fn enabled(State(gw): AppState, req: Request, next: Next) -> Response {
    if gw.settings.admin_token_sha256.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the admin API is off (set --admin-token-sha256 to turn it on)",
        );
    }
    next.run(req).await
}

/// The bearer token's SHA-256 must match, compared in constant time.
async fn require_token(State(gw): AppState, req: Request, next: Next) -> Response {
    if gw.settings.admin_token_sha256.is_none() {
        return unknown_route().await;
    }
    if !admin_token_ok(&gw, req.headers()) {
        tracing::warn!(target: "signoff::admin", "refused an admin request without the right token");
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer with the admin token",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"signoff-admin\""),
        );
        return r;
    }
    next.run(req).await
}

/// Whether the request carries the admin token (`Authorization: Bearer`),
/// by SHA-256 compared in constant time; always false when the admin API is
/// off.
pub(super) fn admin_token_ok(gw: &Gateway, headers: &HeaderMap) -> bool {
    let Some(expected) = gw.settings.admin_token_sha256 else {
        return false;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .unwrap_or("");
    let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    bool::from(digest.ct_eq(&expected))
}

async fn unknown_route() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// axum's own refusals (a wrong method, a bad query string) as JSON too.
async fn json_errors_for_axum(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = response.status();
    if is_json || status.is_success() {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed here"),
        StatusCode::BAD_REQUEST => ("bad_request", "the request could not be read"),
        _ => ("error", "the request failed"),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut r = error(status, code, message);
    if let Some(allow) = allow {
        r.headers_mut().insert(header::ALLOW, allow);
    }
    r
}

async fn openapi_json(State(gw): AppState) -> Response {
    match openapi(&gw.settings.prefix).to_json() {
        Ok(text) => {
            let mut r = (StatusCode::OK, text).into_response();
            set_json(r.headers_mut());
            r
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "error",
            "the OpenAPI document could not be written",
        ),
    }
}

/// A user account.
#[derive(Debug, Serialize, ToSchema)]
struct UserJson {
    /// Login name.
    name: String,
    /// Stable id (sessions and audit events refer to it).
    id: String,
    /// A disabled user cannot sign in.
    disabled: bool,
    /// The user's groups, sorted.
    groups: Vec<String>,
    /// RFC 3339.
    created_at: String,
}

impl From<&User> for UserJson {
    fn from(u: &User) -> Self {
        Self {
            name: u.name.clone(),
            id: u.id.as_str().to_owned(),
            disabled: u.disabled,
            groups: u.groups.clone(),
            created_at: display::rfc3339(u.created_at),
        }
    }
}

/// A user's groups.
#[derive(Debug, Serialize, ToSchema)]
struct GroupsJson {
    /// Login name.
    name: String,
    /// The groups, sorted.
    groups: Vec<String>,
}

/// A change to a user's groups. Removing a group the user is in ends all
/// of their sessions (they carry the groups they signed in with); an added
/// group applies from the user's next sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangeGroups {
    /// Groups to put the user in: 1 to 64 characters from
    /// `A-Z a-z 0-9 . _ - :`; one already held is left as it is.
    #[serde(default)]
    add: Vec<String>,
    /// Groups to take the user out of; one not held is left as it is.
    #[serde(default)]
    remove: Vec<String>,
}

/// A user's groups after a change, and what it did.
#[derive(Debug, Serialize, ToSchema)]
struct GroupsChangedJson {
    /// Login name.
    name: String,
    /// The groups now, sorted.
    groups: Vec<String>,
    /// Groups the user joined with this change.
    added: Vec<String>,
    /// Groups the user left with this change.
    removed: Vec<String>,
    /// Sessions ended: all of the user's if any group was removed, else 0.
    ended: usize,
}

/// A live session.
#[derive(Debug, Serialize, ToSchema)]
struct SessionJson {
    /// Public handle: names the session, cannot be used to act as it.
    handle: String,
    /// "Firefox 128 on Linux", from the User-Agent at sign-in.
    device: String,
    /// The User-Agent at sign-in.
    user_agent: Option<String>,
    /// The client address at sign-in.
    ip: Option<String>,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339; written at most once a minute.
    last_seen_at: String,
    /// RFC 3339: last sign-in or password re-entry.
    auth_at: Option<String>,
    /// RFC 3339: the absolute end.
    expires_at: String,
}

impl From<&Session> for SessionJson {
    fn from(s: &Session) -> Self {
        Self {
            handle: s.handle.to_string(),
            device: display::device(s.user_agent.as_deref()),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            created_at: display::rfc3339(s.created_at),
            last_seen_at: display::rfc3339(s.last_seen_at),
            auth_at: s.auth_at.map(display::rfc3339),
            expires_at: display::rfc3339(s.expires_at),
        }
    }
}

/// How many sessions an action ended.
#[derive(Debug, Serialize, ToSchema)]
struct Ended {
    /// Sessions ended.
    ended: usize,
}

/// A change to a user. Disabling ends all of the user's sessions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    /// `true` disables the account and ends its sessions; `false` enables it.
    disabled: bool,
}

/// An audit event.
#[derive(Debug, Serialize, ToSchema)]
struct AuditEventJson {
    /// Order of writing.
    seq: i64,
    /// RFC 3339.
    at: String,
    /// login_succeeded, login_failed, reauthenticated, logout, session_ended,
    /// password_changed, user_disabled, user_enabled or groups_changed.
    kind: String,
    user_id: Option<String>,
    user_name: Option<String>,
    /// Session handle.
    session: Option<String>,
    /// user, admin, operator, policy or timeout.
    by: Option<String>,
    /// Reason class, e.g. wrong_password, idle, max_sessions, groups_removed.
    reason: Option<String>,
    ip: Option<String>,
    /// Sessions ended by the action.
    count: Option<u64>,
}

impl From<AuditEvent> for AuditEventJson {
    fn from(e: AuditEvent) -> Self {
        Self {
            seq: e.seq,
            at: display::rfc3339(e.at),
            kind: e.kind.to_string(),
            user_id: e.user_id.map(|u| u.as_str().to_owned()),
            user_name: e.user_name,
            session: e.session.map(|h| h.to_string()),
            by: e.by.map(|a| a.to_string()),
            reason: e.reason,
            ip: e.ip,
            count: e.count,
        }
    }
}

/// Why a user named in a request could not be had.
enum NoUser {
    /// 404: no user has this name.
    Unknown,
    /// 503: the store could not answer (logged).
    Unavailable,
}

impl IntoResponse for NoUser {
    fn into_response(self) -> Response {
        match self {
            NoUser::Unknown => error(
                StatusCode::NOT_FOUND,
                "unknown_user",
                "no user has this name",
            ),
            NoUser::Unavailable => unavailable_answer(),
        }
    }
}

async fn find_user(gw: &Gateway, name: &str) -> Result<User, NoUser> {
    match gw.accounts.user(name).await {
        Ok(u) => Ok(u),
        Err(AccountError::UnknownUser) => Err(NoUser::Unknown),
        Err(e) => {
            log_unavailable(&e);
            Err(NoUser::Unavailable)
        }
    }
}

/// The user the path names (`/users/{name}`).
struct NamedUser(User);

impl FromRequestParts<Arc<Gateway>> for NamedUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Response> {
        let Path(name) = Path::<String>::from_request_parts(parts, gw)
            .await
            .map_err(IntoResponse::into_response)?;
        find_user(gw, &name)
            .await
            .map(NamedUser)
            .map_err(IntoResponse::into_response)
    }
}

/// Whose sessions a `/users/{name}/sessions` route means: a local user, or
/// a provider's user named `oidc:PROVIDER:SUB` (docs/oidc.md), who has no
/// account here (no local name has a `:`).
struct SessionOwner {
    id: signoff::UserId,
    name: String,
}

impl FromRequestParts<Arc<Gateway>> for SessionOwner {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Response> {
        let Path(name) = Path::<String>::from_request_parts(parts, gw)
            .await
            .map_err(IntoResponse::into_response)?;
        if name.starts_with("oidc:") && name.split(':').count() >= 3 {
            return Ok(SessionOwner {
                id: signoff::UserId::new(name.clone()),
                name,
            });
        }
        find_user(gw, &name)
            .await
            .map(|u| SessionOwner {
                id: u.id,
                name: u.name,
            })
            .map_err(IntoResponse::into_response)
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    log_unavailable(e);
    unavailable_answer()
}

fn log_unavailable(e: &dyn std::fmt::Display) {
    tracing::error!(error = %e, "admin request failed: the store is unavailable");
}

fn unavailable_answer() -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the store is unavailable; nothing was changed",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// List all users.
#[utoipa::path(get, path = "/users", responses(
    (status = 200, description = "All users, by name", body = [UserJson]),
    (status = 401, description = "Missing or wrong token", body = ApiError),
))]
async fn list_users(State(gw): AppState) -> Response {
    match gw.accounts.list().await {
        Ok(users) => ok(&users.iter().map(UserJson::from).collect::<Vec<_>>()),
        Err(e) => unavailable(&e),
    }
}

/// One user.
#[utoipa::path(get, path = "/users/{name}", params(("name" = String, Path, description = "Login name")), responses(
    (status = 200, description = "The user", body = UserJson),
    (status = 401, description = "Missing or wrong token", body = ApiError),
    (status = 404, description = "Unknown user", body = ApiError),
))]
async fn get_user(NamedUser(user): NamedUser) -> Response {
    ok(&UserJson::from(&user))
}

/// Disable (ending all sessions) or enable a user.
#[utoipa::path(patch, path = "/users/{name}", params(("name" = String, Path, description = "Login name")),
    request_body(content = PatchUser, content_type = "application/json"),
    responses(
        (status = 200, description = "The user as changed", body = UserJson),
        (status = 400, description = "Bad JSON", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 404, description = "Unknown user", body = ApiError),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 415, description = "Not application/json", body = ApiError),
))]
async fn patch_user(
    State(gw): AppState,
    Path(name): Path<String>,
    AdminJson(patch): AdminJson<PatchUser>,
) -> Response {
    // Looked up after the body is read: a bad body is 400 whoever it names.
    let user = match find_user(&gw, &name).await {
        Ok(u) => u,
        Err(no) => return no.into_response(),
    };
    let changed = if patch.disabled {
        gw.accounts.disable(&user.name).await
    } else {
        gw.accounts.enable(&user.name).await
    };
    let user = match changed {
        Ok(u) => u,
        Err(AccountError::UnknownUser) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_user",
                "no user has this name",
            )
        }
        Err(e) => return unavailable(&e),
    };
    let kind = if patch.disabled {
        AuditKind::UserDisabled
    } else {
        AuditKind::UserEnabled
    };
    gw.audit(
        AuditEvent::new(kind, gw.sessions.now())
            .user(Some(&user.id), Some(&user.name))
            .by(Actor::Admin),
    )
    .await;
    if patch.disabled {
        if let Err(e) = gw
            .sessions
            .end_all_for_user(&user.id, None, Actor::Admin, "user_disabled")
            .await
        {
            // Disabled, but sessions may live: say so rather than claim done.
            tracing::error!(error = %e, "a user was disabled, but their sessions could not be ended");
            return sessions_not_ended(
                "the user is disabled, but their sessions could not be ended; repeat the request",
            );
        }
    }
    tracing::info!(target: "signoff::admin", user = %user.name, disabled = user.disabled, "admin changed a user");
    ok(&UserJson::from(&user))
}

/// 503 for a change made whose sessions could not be ended: the client
/// must not take it as done.
fn sessions_not_ended(message: impl Into<String>) -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "sessions_not_ended",
        message,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// A user's groups.
#[utoipa::path(get, path = "/users/{name}/groups", params(("name" = String, Path, description = "Login name")), responses(
    (status = 200, description = "The user's groups", body = GroupsJson),
    (status = 401, description = "Missing or wrong token", body = ApiError),
    (status = 404, description = "Unknown user", body = ApiError),
))]
async fn user_groups(NamedUser(user): NamedUser) -> Response {
    ok(&GroupsJson {
        name: user.name,
        groups: user.groups,
    })
}

/// Add a user to groups and remove them from others. Removing a group the
/// user is in ends all of their sessions, on every node; an added group
/// applies from the user's next sign-in.
#[utoipa::path(post, path = "/users/{name}/groups", params(("name" = String, Path, description = "Login name")),
    request_body(content = ChangeGroups, content_type = "application/json"),
    responses(
        (status = 200, description = "The groups as changed, and how many sessions ended", body = GroupsChangedJson),
        (status = 400, description = "Bad JSON, a bad group name, too many groups, or a group both added and removed", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 404, description = "Unknown user", body = ApiError),
        (status = 409, description = "The groups kept changing meanwhile; nothing was changed", body = ApiError),
        (status = 413, description = "Body too large", body = ApiError),
        (status = 415, description = "Not application/json", body = ApiError),
        (status = 503, description = "The store is unavailable, or the groups changed but the sessions could not be ended", body = ApiError),
))]
async fn change_user_groups(
    State(gw): AppState,
    Path(name): Path<String>,
    AdminJson(body): AdminJson<ChangeGroups>,
) -> Response {
    let change = match gw
        .accounts
        .change_groups(&name, &body.add, &body.remove)
        .await
    {
        Ok(change) => change,
        Err(AccountError::UnknownUser) => return NoUser::Unknown.into_response(),
        Err(e @ (AccountError::InvalidGroup | AccountError::GroupAddedAndRemoved)) => {
            return error(StatusCode::BAD_REQUEST, "invalid_groups", e.to_string())
        }
        Err(e @ AccountError::GroupsBusy) => {
            return error(StatusCode::CONFLICT, "groups_busy", e.to_string())
        }
        Err(e) => return unavailable(&e),
    };
    let user = &change.user;
    let mut ended = 0;
    if change.changed() {
        let reason = if change.removed_any() {
            "groups_removed"
        } else {
            "groups_added"
        };
        gw.audit(
            AuditEvent::new(AuditKind::GroupsChanged, gw.sessions.now())
                .user(Some(&user.id), Some(&user.name))
                .by(Actor::Admin)
                .reason(reason),
        )
        .await;
    }
    if change.removed_any() {
        match gw
            .sessions
            .end_all_for_user(&user.id, None, Actor::Admin, "groups_removed")
            .await
        {
            Ok(n) => ended = n,
            Err(e) => {
                // Changed, but sessions with the old groups may live: say so
                // rather than claim done.
                tracing::error!(error = %e, "a user left a group, but their sessions could not be ended");
                return sessions_not_ended(format!(
                    "the groups changed, but the user's sessions (which carry the old \
                     groups) could not be ended; end them with DELETE /users/{}/sessions",
                    user.name
                ));
            }
        }
    }
    if change.changed() {
        tracing::info!(
            target: "signoff::admin",
            user = %user.name,
            added = ?change.added(),
            removed = ?change.removed(),
            ended,
            "admin changed a user's groups"
        );
    }
    ok(&GroupsChangedJson {
        name: user.name.clone(),
        groups: user.groups.clone(),
        added: change.added(),
        removed: change.removed(),
        ended,
    })
}

/// A user's live sessions, newest first.
#[utoipa::path(get, path = "/users/{name}/sessions", params(("name" = String, Path, description = "Login name, or oidc:PROVIDER:SUB for a provider's user")), responses(
    (status = 200, description = "Live sessions, newest first", body = [SessionJson]),
    (status = 401, description = "Missing or wrong token", body = ApiError),
    (status = 404, description = "Unknown user", body = ApiError),
))]
async fn user_sessions(State(gw): AppState, user: SessionOwner) -> Response {
    match gw.sessions.list_for_user(&user.id).await {
        Ok(list) => ok(&list.iter().map(SessionJson::from).collect::<Vec<_>>()),
        Err(e) => unavailable(&e),
    }
}

/// End all of a user's sessions.
#[utoipa::path(delete, path = "/users/{name}/sessions", params(("name" = String, Path, description = "Login name, or oidc:PROVIDER:SUB for a provider's user")), responses(
    (status = 200, description = "How many ended", body = Ended),
    (status = 401, description = "Missing or wrong token", body = ApiError),
    (status = 404, description = "Unknown user", body = ApiError),
))]
async fn end_user_sessions(State(gw): AppState, user: SessionOwner) -> Response {
    match gw
        .sessions
        .end_all_for_user(&user.id, None, Actor::Admin, "admin")
        .await
    {
        Ok(ended) => {
            tracing::info!(target: "signoff::admin", user = %user.name, ended, "admin ended a user's sessions");
            ok(&Ended { ended })
        }
        Err(e) => unavailable(&e),
    }
}

/// End one session by its handle.
#[utoipa::path(delete, path = "/sessions/{handle}", params(("handle" = String, Path, description = "Session handle")), responses(
    (status = 200, description = "Ended", body = Ended),
    (status = 400, description = "Not a session handle", body = ApiError),
    (status = 401, description = "Missing or wrong token", body = ApiError),
    (status = 404, description = "No live session has this handle", body = ApiError),
))]
async fn end_session(State(gw): AppState, Path(handle): Path<String>) -> Response {
    let Ok(handle) = handle.parse::<SessionHandle>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_handle",
            "not a session handle",
        );
    };
    let ended = match gw.sessions.end_by_handle(&handle, None, Actor::Admin).await {
        // Ending a session ends its whole sign-in (docs/apps.md).
        Ok(Some(session)) => single_sign_on::end_linked(&gw, &session, Actor::Admin)
            .await
            .map(|_| Some(session)),
        other => other,
    };
    match ended {
        Ok(Some(_)) => {
            tracing::info!(target: "signoff::admin", session = %handle, "admin ended a session");
            ok(&Ended { ended: 1 })
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no live session has this handle",
        ),
        Err(e) => unavailable(&e),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Only this user's events (login name).
    user: Option<String>,
    /// Only events this recent, e.g. `1h`, `7d`.
    since: Option<String>,
    /// Only events of this kind, e.g. `login_failed`.
    kind: Option<String>,
    /// At most this many (default 1000, at most 10000).
    limit: Option<usize>,
}

/// The audit trail, newest first.
#[utoipa::path(get, path = "/audit", params(AuditParams), responses(
    (status = 200, description = "Events, newest first", body = [AuditEventJson]),
    (status = 400, description = "A bad parameter", body = ApiError),
    (status = 401, description = "Missing or wrong token", body = ApiError),
    (status = 404, description = "Unknown user", body = ApiError),
))]
async fn audit(State(gw): AppState, Query(p): Query<AuditParams>) -> Response {
    let Some(log) = gw.sessions.audit() else {
        return ok(&Vec::<AuditEventJson>::new());
    };
    let mut query = AuditQuery {
        limit: Some(p.limit.unwrap_or(1000).min(MAX_AUDIT_LIMIT)),
        ..AuditQuery::default()
    };
    if let Some(name) = &p.user {
        match find_user(&gw, name).await {
            Ok(u) => query.user_id = Some(u.id),
            Err(no) => return no.into_response(),
        }
    }
    if let Some(since) = &p.since {
        match crate::config::parse_duration(since) {
            Ok(d) => query.since = Some(gw.sessions.now().minus(d)),
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_since", format!("{e:#}")),
        }
    }
    if let Some(kind) = &p.kind {
        match kind.parse::<AuditKind>() {
            Ok(k) => query.kind = Some(k),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_kind",
                    "unknown event kind",
                )
            }
        }
    }
    match log.query(&query).await {
        Ok(events) => ok(&events
            .into_iter()
            .map(AuditEventJson::from)
            .collect::<Vec<_>>()),
        Err(e) => unavailable(&e),
    }
}

/// A JSON body of at most [`MAX_JSON_BYTES`].
struct AdminJson<T>(T);

impl<S: Send + Sync, T: for<'de> Deserialize<'de>> FromRequest<S> for AdminJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Response> {
        let bytes = own_body::read(req, "application/json", MAX_JSON_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::WrongType => error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send Content-Type: application/json",
                ),
                BodyError::TooLarge => error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the body must be at most {MAX_JSON_BYTES} bytes"),
                ),
                BodyError::TooSlow => error(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the body took too long to arrive",
                ),
            })?;
        serde_json::from_slice(&bytes).map(AdminJson).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not the expected JSON: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route() {
        let doc = openapi("/.signoff");
        let mut found: Vec<String> = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("patch", &item.patch),
                ("delete", &item.delete),
                ("post", &item.post),
                ("put", &item.put),
            ] {
                if op.is_some() {
                    found.push(format!("{method} {path}"));
                }
            }
        }
        found.sort();
        assert_eq!(
            found,
            [
                "delete /sessions/{handle}",
                "delete /users/{name}/sessions",
                "get /audit",
                "get /users",
                "get /users/{name}",
                "get /users/{name}/groups",
                "get /users/{name}/sessions",
                "patch /users/{name}",
                "post /users/{name}/groups",
            ]
        );
        assert_eq!(
            doc.servers.as_ref().unwrap()[0].url,
            "/.signoff/admin",
            "paths are relative to the admin prefix"
        );
        let text = doc.to_json().unwrap();
        assert!(text.contains("\"bearer\""), "security scheme: {text}");
    }
}
