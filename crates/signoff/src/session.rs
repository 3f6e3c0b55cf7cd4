//! Sessions and the engine that creates, validates, rotates and ends them.
//!
//! Read this file top to bottom to check invariants 1–5 of docs/security.md:
//!
//! - A session is alive only while its record is in the store and within
//!   both its own timeouts and the current policy's
//!   ([`Sessions::validate`]). The client sends a token and nothing else;
//!   cookie expiry, unknown tokens and replays change nothing.
//! - Logout deletes the record ([`Sessions::logout`]). Later writes are
//!   conditional on the record (see [`crate::store`]), so nothing in flight
//!   brings it back.
//! - Login always issues a new token and deletes the one presented before
//!   it ([`Sessions::login`]); re-authentication rotates ([`Sessions::rotate`]).
//!   A rotated-away token opens nothing, but logout with it still ends the
//!   session it was rotated into.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "audit")]
use crate::audit::AuditLog;
use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::policy::{LogoutBehavior, Policy};
use crate::session_keys::KeysError;
use crate::session_keys::SessionKeys;
use crate::session_token::{SessionHandle, SessionId, SessionToken, TokenError};
use crate::session_watch::{EndReason, SessionWatch};
use crate::store::{SessionStore, StoreError, WriteOutcome};

/// Longest user agent kept with a session; longer ones are cut.
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// Longest client address kept with a session; longer ones are cut.
pub const MAX_IP_BYTES: usize = 64;
/// Largest total size of a session's data (keys plus values).
pub const MAX_DATA_BYTES: usize = 4096;
/// Most keys a session's data may hold.
pub const MAX_DATA_KEYS: usize = 64;

/// The namespace of signoff's own session data keys. The application's
/// data ([`NewSession::data`], [`Sessions::set_data`]) cannot set or change
/// such a key, so it cannot overwrite the user's name, a refresh token's
/// state or a session's link by accident or from user input; signoff's own
/// code sets them with [`NewSession::reserved`]. (The store itself,
/// [`Sessions::store`], takes whatever it is given.)
pub const RESERVED_PREFIX: &str = "signoff.";

/// Whether `key` is in signoff's own namespace ([`RESERVED_PREFIX`]).
pub fn is_reserved_key(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The data key that links a session to the one it was made from
/// ([`NewSession::linked_to`]): that session's handle.
pub const LINKED_TO_KEY: &str = "signoff.parent";

/// The data key naming the gateway's app host a session was made for
/// (docs/apps.md); such a session is good on that host alone.
pub const SITE_KEY: &str = "signoff.site";

/// The data key holding the signed-in user's login name, as the gateway
/// and [`web::WebSessions`](crate::web::WebSessions) write it.
pub const USER_NAME_KEY: &str = "signoff.user";

/// Non-authentication data kept with a session (a cart, a language choice).
pub type SessionData = BTreeMap<String, String>;

/// Identifies a user to the engine. Opaque: the application chooses it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Wraps an application's user identifier.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a session ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpiredBy {
    /// No activity for the idle timeout.
    Idle,
    /// The absolute lifetime ran out.
    Absolute,
}

/// A session as the store keeps it. `Debug` shows the data's keys, not
/// its values, which may be secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// Digest of the current token: the store's key.
    pub id: SessionId,
    /// Public name, stable across rotation.
    pub handle: SessionHandle,
    /// The signed-in user, or `None` for an anonymous session.
    pub user_id: Option<UserId>,
    /// When the session was created.
    pub created_at: Timestamp,
    /// Last recorded activity (written at most once per touch interval).
    pub last_seen_at: Timestamp,
    /// When the user last proved who they are (login or re-authentication).
    pub auth_at: Option<Timestamp>,
    /// The absolute end of the session.
    pub expires_at: Timestamp,
    /// The idle timeout the session was created with.
    pub idle_timeout: Duration,
    /// Signed in with "remember this device" ([`NewSession::remember_device`]
    /// under a policy that offers it): the policy's
    /// [`Policy::remember_device`] limits apply instead of the ordinary ones,
    /// while the policy still offers it.
    pub remembered: bool,
    /// User agent at login, cut to [`MAX_USER_AGENT_BYTES`].
    pub user_agent: Option<String>,
    /// Client address at login, cut to [`MAX_IP_BYTES`].
    pub ip: Option<String>,
    /// Non-authentication data.
    pub data: SessionData,
    /// Bumped by every rotation and data write; guards conditional writes.
    pub generation: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("handle", &self.handle)
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("auth_at", &self.auth_at)
            .field("expires_at", &self.expires_at)
            .field("idle_timeout", &self.idle_timeout)
            .field("remembered", &self.remembered)
            .field("user_agent", &self.user_agent)
            .field("ip", &self.ip)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("generation", &self.generation)
            .finish()
    }
}

impl Session {
    /// When the session ends if nothing else happens: the earlier of the
    /// idle deadline and the absolute expiry.
    pub fn deadline(&self) -> Timestamp {
        self.last_seen_at
            .plus(self.idle_timeout)
            .min(self.expires_at)
    }

    /// The signed-in user's login name, if signoff recorded one
    /// ([`NewSession::user_name`]).
    pub fn user_name(&self) -> Option<&str> {
        self.data.get(USER_NAME_KEY).map(String::as_str)
    }

    /// Whether the session was signed in with "remember this device" and
    /// `policy` still remembers devices. Its limits are then the policy's
    /// [`Policy::remember_device`] ones.
    pub fn is_remembered(&self, policy: &Policy) -> bool {
        policy.remember_device().is_some() && self.remembered
    }

    /// The lifetime and idle timeout `policy` allows this session: the
    /// remember-device ones for a remembered session, else the ordinary
    /// ones (also for a remembered session once remembering is off).
    fn policy_limits(&self, policy: &Policy) -> (Duration, Duration) {
        match policy.remember_device() {
            Some(r) if self.remembered => (r.lifetime(), r.idle_timeout()),
            _ => (policy.absolute_lifetime(), policy.idle_timeout()),
        }
    }

    /// The absolute end of the session under its own expiry and `policy`
    /// (whichever is earlier).
    pub fn absolute_end(&self, policy: &Policy) -> Timestamp {
        let (lifetime, _) = self.policy_limits(policy);
        self.expires_at.min(self.created_at.plus(lifetime))
    }

    /// The idle timeout in force: the session's own or `policy`'s,
    /// whichever is shorter.
    pub fn idle_limit(&self, policy: &Policy) -> Duration {
        let (_, idle) = self.policy_limits(policy);
        self.idle_timeout.min(idle)
    }

    /// Whether, and why, the session has ended at `now` under its own
    /// timeouts and under `policy` (whichever is stricter).
    pub fn expiry(&self, now: Timestamp, policy: &Policy) -> Option<ExpiredBy> {
        if now >= self.absolute_end(policy) {
            return Some(ExpiredBy::Absolute);
        }
        if now >= self.last_seen_at.plus(self.idle_limit(policy)) {
            return Some(ExpiredBy::Idle);
        }
        None
    }
}

/// What the client tells about itself at login, kept for the sessions list.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    user_id: Option<UserId>,
    user_agent: Option<String>,
    ip: Option<String>,
    data: SessionData,
    reserved: SessionData,
    remember_device: bool,
    auth_at: Option<Timestamp>,
    ends_by: Option<Timestamp>,
}

impl NewSession {
    /// A session for a signed-in user.
    pub fn for_user(user: UserId) -> Self {
        Self {
            user_id: Some(user),
            ..Self::default()
        }
    }

    /// A session with no user (for data kept before login or after logout).
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The client's user agent; cut to [`MAX_USER_AGENT_BYTES`].
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(cut(ua.into(), MAX_USER_AGENT_BYTES));
        self
    }

    /// The client's address; cut to [`MAX_IP_BYTES`].
    pub fn ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = Some(cut(ip.into(), MAX_IP_BYTES));
        self
    }

    /// The application's initial data. A key in signoff's namespace
    /// ([`RESERVED_PREFIX`]) makes [`Sessions::create`] and
    /// [`Sessions::login`] fail with [`SessionError::ReservedKey`].
    pub fn data(mut self, data: SessionData) -> Self {
        self.data = data;
        self
    }

    /// One of signoff's own entries (the user's name, a site, a pending
    /// sign-in's state): its key must be in the [`RESERVED_PREFIX`]
    /// namespace, or creating the session fails with
    /// [`SessionError::ReservedKey`]. For signoff's own crates (the
    /// gateway, [`web`](crate::web)); an application keeps its data in
    /// [`NewSession::data`].
    pub fn reserved(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.reserved.insert(key.into(), value.into());
        self
    }

    /// [`NewSession::reserved`] for several entries.
    pub fn reserved_data(mut self, data: SessionData) -> Self {
        self.reserved.extend(data);
        self
    }

    /// The signed-in user's login name ([`USER_NAME_KEY`], read back with
    /// [`Session::user_name`]).
    pub fn user_name(self, name: impl Into<String>) -> Self {
        self.reserved(USER_NAME_KEY, name)
    }

    /// Asks for the longer limits of [`Policy::remember_device`] ("remember
    /// this device"). Only a signed-in user's session gets them, and only
    /// while the policy has them on; otherwise the session is an ordinary
    /// one ([`Session::is_remembered`] tells which it got).
    pub fn remember_device(mut self) -> Self {
        self.remember_device = true;
        self
    }

    /// When the user last proved who they are, for a session made from
    /// another one without a password (a signed-in user's session on a
    /// second host takes the first one's), instead of now. Rules that ask
    /// for a recent password then see the real age of the last one.
    pub fn authenticated_at(mut self, at: Timestamp) -> Self {
        self.auth_at = Some(at);
        self
    }

    /// A session made from `parent` without a password (the same user on
    /// another host): it records `parent`'s handle under
    /// [`LINKED_TO_KEY`], keeps `parent`'s password time
    /// ([`NewSession::authenticated_at`]) and ends no later than `parent`
    /// would ([`NewSession::ends_by`]). [`Sessions::end_linked`] ends them
    /// together.
    pub fn linked_to(mut self, parent: &Session, policy: &Policy) -> Self {
        self.reserved
            .insert(LINKED_TO_KEY.to_owned(), parent.handle.to_string());
        self.auth_at = parent.auth_at;
        self.ends_by = Some(parent.absolute_end(policy));
        self
    }

    /// Ends the session no later than `end`, even if the policy's limits
    /// would keep it longer (a session made from another one ends with
    /// it; a short-lived hand-over ends within seconds).
    pub fn ends_by(mut self, end: Timestamp) -> Self {
        self.ends_by = Some(end);
        self
    }
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// How far [`Sessions::validate_token`] got without waiting.
// Made once per request and matched at once, never stored.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Early {
    /// The answer.
    Decided(Result<Session, SessionError>),
    /// The seal is good and a cache had the session, which is due for its
    /// activity write or looks expired: [`Sessions::check_loaded`] decides.
    Loaded(Session),
    /// The seal is good; the store must be read.
    Sealed,
    /// The keys must be opened or re-read before the seal can be checked.
    Unsealed,
}

/// The entries of `data` whose keys are listed in `keys`, never one of
/// signoff's own (a session's user name or link does not travel).
fn keep_keys(data: SessionData, keys: &[String]) -> SessionData {
    data.into_iter()
        .filter(|(k, _)| keys.contains(k) && !is_reserved_key(k))
        .collect()
}

/// The application's `data` with the `reserved` entries of signoff's own:
/// refused if the application's holds a reserved key, or a reserved entry
/// is not in the namespace.
fn with_reserved(
    mut data: SessionData,
    reserved: SessionData,
) -> Result<SessionData, SessionError> {
    if let Some(key) = data.keys().find(|k| is_reserved_key(k)) {
        return Err(SessionError::ReservedKey(key.clone()));
    }
    if let Some(key) = reserved.keys().find(|k| !is_reserved_key(k)) {
        return Err(SessionError::ReservedKey(key.clone()));
    }
    data.extend(reserved);
    check_data(&data)?;
    Ok(data)
}

fn check_data(data: &SessionData) -> Result<(), SessionError> {
    let bytes: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if data.len() > MAX_DATA_KEYS || bytes > MAX_DATA_BYTES {
        return Err(SessionError::DataTooLarge);
    }
    Ok(())
}

/// Why a session's token is rotated ([`Sessions::rotate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The user just entered their password (re-authentication, a
    /// password change): the session records it as its `auth_at`.
    AfterPassword,
    /// Another privilege change (signing out the other sessions): the
    /// token changes, the password time does not.
    Plain,
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The token is malformed; no store was asked.
    #[error("malformed session token")]
    Token(#[from] TokenError),
    /// No live session has this token: unknown, ended or rotated away.
    #[error("no such session")]
    NotFound,
    /// The session has ended by timeout (and has been deleted).
    #[error("the session has expired ({0:?})")]
    Expired(ExpiredBy),
    /// Another write changed the session first; nothing was written.
    #[error("the session was changed concurrently")]
    Conflict,
    /// The data exceeds [`MAX_DATA_BYTES`] or [`MAX_DATA_KEYS`].
    #[error("session data too large")]
    DataTooLarge,
    /// The application's data holds a key of signoff's own namespace
    /// ([`RESERVED_PREFIX`]), or a reserved entry is outside it.
    #[error("session data key {0:?}: keys starting with `signoff.` are signoff's own (NewSession::reserved), and only those")]
    ReservedKey(String),
    /// The store failed. Callers must treat the request as unauthenticated.
    #[error("session store error")]
    Store(#[from] StoreError),
}

/// A token just issued to a client, with its session.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The secret to send to the client.
    pub token: SessionToken,
    /// The session it opens.
    pub session: Session,
}

/// The session engine: policy and clock over a [`SessionStore`].
///
/// Cheap to clone; clones share the store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use signoff::{MemoryStore, NewSession, Policy, Sessions, UserId};
///
/// let sessions = Sessions::new(Arc::new(MemoryStore::new()), Policy::default());
/// let issued = sessions.login(None, NewSession::for_user(UserId::new("alice"))).await.unwrap();
/// let token = issued.token.expose();
///
/// assert!(sessions.validate(token).await.is_ok());
/// sessions.logout(token).await.unwrap();
/// assert!(sessions.validate(token).await.is_err());
/// # }
/// ```
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    policy: Arc<Policy>,
    clock: Arc<dyn Clock>,
    #[cfg(feature = "audit")]
    audit: Option<AuditLog>,
    watch: Option<SessionWatch>,
    /// Set by [`Sessions::with_keys`], or opened from the store on first use.
    keys: Arc<tokio::sync::OnceCell<Arc<SessionKeys>>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// An engine on the system clock.
    ///
    /// It seals tokens with the keys the store keeps
    /// ([`SessionStore::engine_state`], [`SessionKeys::open`]), opened on
    /// first use, so its sessions survive a restart and every engine over
    /// the same store accepts them. Over a store that keeps no state, it
    /// draws a key in memory. [`Sessions::with_keys`] sets them instead.
    pub fn new(store: Arc<dyn SessionStore>, policy: Policy) -> Self {
        Self::with_clock(store, policy, Arc::new(SystemClock))
    }

    /// An engine on the given clock (tests move a [`crate::ManualClock`]).
    pub fn with_clock(store: Arc<dyn SessionStore>, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            policy: Arc::new(policy),
            clock,
            #[cfg(feature = "audit")]
            audit: None,
            watch: None,
            keys: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// Seals and checks tokens with `keys` instead of the ones the store
    /// keeps: engines in one process over the same store can share one
    /// `Arc` (one re-read every 30 s between them), and a test can use
    /// [`SessionKeys::ephemeral`].
    pub fn with_keys(mut self, keys: Arc<SessionKeys>) -> Self {
        self.keys = Arc::new(tokio::sync::OnceCell::new_with(Some(keys)));
        self
    }

    /// The keys that seal this engine's tokens, opened from the store on
    /// first use (a store read, once per engine).
    ///
    /// # Errors
    /// A store error, or keys the store holds but cannot be read.
    pub async fn keys(&self) -> Result<&Arc<SessionKeys>, SessionError> {
        self.keys
            .get_or_try_init(|| async {
                let Some(state) = self.store.engine_state() else {
                    return Ok(Arc::new(SessionKeys::ephemeral()));
                };
                match SessionKeys::open(state, self.clock.now()).await {
                    Ok(keys) => Ok(Arc::new(keys)),
                    Err(KeysError::Store(e)) => Err(SessionError::Store(e)),
                    Err(e) => Err(SessionError::Store(StoreError::Backend(Box::new(e)))),
                }
            })
            .await
    }

    /// Parses a token a client presented and checks its seal, in memory:
    /// what every method taking a token's text does before it asks the
    /// store, so a made-up token never costs a store read.
    ///
    /// # Errors
    /// [`SessionError::Token`]: malformed, or [`TokenError::BadSeal`].
    pub async fn check_token(&self, text: &str) -> Result<SessionToken, SessionError> {
        let token = SessionToken::parse(text)?;
        self.check_seal(&token).await?;
        Ok(token)
    }

    /// The seal of a parsed token, under keys re-read if due.
    async fn check_seal(&self, token: &SessionToken) -> Result<(), SessionError> {
        // Every request comes here: the rare paths (opening the keys,
        // re-reading them) are boxed, so this future stays small.
        let keys = match self.keys.get() {
            Some(keys) => keys,
            None => Box::pin(self.keys()).await?,
        };
        if keys.due() {
            Box::pin(keys.refresh()).await;
        }
        if keys.verify(token) {
            Ok(())
        } else {
            Err(SessionError::Token(TokenError::BadSeal))
        }
    }

    #[cfg(feature = "audit")]
    /// Records every session end into `audit`: logouts, ends by the user,
    /// an admin or an operator, the per-user limit, and timeouts.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Tells `watch` of every session this engine ends or rotates, so the
    /// connections watching it check it at once (and learn why it ended),
    /// bus or no bus. See [`crate::session_watch`].
    pub fn with_watch(mut self, watch: SessionWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// The session watch, if one is attached.
    pub fn watch(&self) -> Option<&SessionWatch> {
        self.watch.as_ref()
    }

    /// Tells the attached watch, if any, that the session with digest `id`
    /// was ended here (with `reason`) or changed (`None`).
    fn tell_watch(&self, id: &SessionId, reason: Option<EndReason>) {
        if let Some(watch) = &self.watch {
            watch.ended_here(id, reason);
        }
    }

    #[cfg(feature = "audit")]
    /// The audit log, if one is attached.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// The current time on the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Whether the session's last authentication (login or re-entry of the
    /// password) is within [`Policy::recent_auth`].
    pub fn is_recent_auth(&self, session: &Session) -> bool {
        session
            .auth_at
            .is_some_and(|at| self.clock.now().since(at) < self.policy.recent_auth())
    }

    #[cfg(feature = "audit")]
    async fn record(&self, event: impl FnOnce(AuditEvent) -> AuditEvent, kind: AuditKind) {
        if let Some(audit) = &self.audit {
            audit
                .record(event(AuditEvent::new(kind, self.clock.now())))
                .await;
        }
    }

    /// Without the audit trail, nothing is recorded.
    #[cfg(not(feature = "audit"))]
    async fn record(&self, _: impl FnOnce(AuditEvent) -> AuditEvent, _: AuditKind) {}

    /// Records that sessions ended, by whom and why.
    async fn record_ended(
        &self,
        user: Option<&UserId>,
        handle: Option<&SessionHandle>,
        by: Actor,
        reason: &str,
        count: u64,
    ) {
        self.record(
            |e| {
                let e = e.user(user, None).by(by).reason(reason).count(count);
                match handle {
                    Some(h) => e.session(h),
                    None => e,
                }
            },
            AuditKind::SessionEnded,
        )
        .await;
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Creates a session and issues its token. For a sign-in, use
    /// [`Sessions::login`], which also ends the session presented before.
    ///
    /// # Errors
    /// [`SessionError::DataTooLarge`] or a store error.
    pub async fn create(&self, new: NewSession) -> Result<Issued, SessionError> {
        let data = with_reserved(new.data, new.reserved)?;
        let now = self.clock.now();
        let (lifetime, idle_timeout, remembered) = match self.policy.remember_device() {
            Some(r) if new.remember_device && new.user_id.is_some() => {
                (r.lifetime(), r.idle_timeout(), true)
            }
            _ => (
                self.policy.absolute_lifetime(),
                self.policy.idle_timeout(),
                false,
            ),
        };
        let mut session = Session {
            id: SessionId::from_digest([0; 32]),
            handle: SessionHandle::generate(),
            auth_at: new
                .user_id
                .as_ref()
                .map(|_| new.auth_at.map_or(now, |at| at.min(now))),
            user_id: new.user_id,
            created_at: now,
            last_seen_at: now,
            expires_at: new
                .ends_by
                .map_or(now.plus(lifetime), |end| end.min(now.plus(lifetime))),
            idle_timeout,
            remembered,
            user_agent: new.user_agent,
            ip: new.ip,
            data,
            generation: 0,
        };
        // A collision of 256-bit tokens or 72-bit handles is not expected;
        // if one happens, insert refuses it and we draw again.
        let keys = self.keys().await?;
        keys.refresh().await;
        let mut attempts = 0;
        loop {
            let token = keys.issue(now);
            session.id = token.id();
            match self.store.insert(&session).await {
                Ok(()) => return Ok(Issued { token, session }),
                Err(StoreError::Duplicate) if attempts < 3 => {
                    attempts += 1;
                    session.handle = SessionHandle::generate();
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Checks a token presented by a client: the per-request operation.
    ///
    /// The session must exist and be within its idle and absolute limits.
    /// An expired session is deleted. Activity is written at most once per
    /// [`Policy::touch_interval`], and only to a record that still exists.
    ///
    /// # Errors
    /// [`SessionError::Token`] for a malformed or made-up token (no store
    /// access: see [`Sessions::check_token`]),
    /// [`SessionError::NotFound`], [`SessionError::Expired`], or a store
    /// error, which callers must treat as "not signed in".
    pub async fn validate(&self, token: &str) -> Result<Session, SessionError> {
        self.validate_token(&SessionToken::parse(token)?).await
    }

    /// [`Sessions::validate`] for a token already parsed: checks its seal,
    /// then the session.
    ///
    /// # Errors
    /// As [`Sessions::validate`].
    pub async fn validate_token(&self, token: &SessionToken) -> Result<Session, SessionError> {
        self.validate_from(token, self.early(token)).await
    }

    /// [`Sessions::validate_token`] from where [`Sessions::early`] got.
    pub(crate) async fn validate_from(
        &self,
        token: &SessionToken,
        early: Early,
    ) -> Result<Session, SessionError> {
        match early {
            Early::Decided(answer) => answer,
            Early::Loaded(session) => self.check_loaded(session).await,
            // The cache had nothing: straight to the store.
            Early::Sealed => {
                let id = token.id();
                let session = self.store.load(&id).await?.ok_or(SessionError::NotFound)?;
                self.check_loaded(session).await
            }
            Early::Unsealed => {
                self.check_seal(token).await?;
                self.validate_id(&token.id()).await
            }
        }
    }

    /// [`Sessions::validate_token`]'s answer when it can be given without
    /// waiting: the seal checked with keys already in memory, and a cache's
    /// fresh entry that is neither expired nor due for its activity write.
    /// `None` when the store (or the key record) must be asked: call
    /// [`Sessions::validate_token`] then. Never another answer than
    /// `validate_token` would give: `validate_token` starts with this same
    /// step.
    pub fn validate_now(&self, token: &SessionToken) -> Option<Result<Session, SessionError>> {
        match self.early(token) {
            Early::Decided(answer) => Some(answer),
            Early::Loaded(_) | Early::Sealed | Early::Unsealed => None,
        }
    }

    /// The part of validating `token` that needs no waiting.
    pub(crate) fn early(&self, token: &SessionToken) -> Early {
        let Some(keys) = self.keys.get() else {
            return Early::Unsealed;
        };
        if keys.due() {
            return Early::Unsealed;
        }
        if !keys.verify(token) {
            return Early::Decided(Err(SessionError::Token(TokenError::BadSeal)));
        }
        let Some(session) = self.store.load_now(&token.id()) else {
            return Early::Sealed;
        };
        let now = self.clock.now();
        if session.expiry(now, &self.policy).is_none()
            && now.since(session.last_seen_at) < self.policy.touch_interval()
        {
            Early::Decided(Ok(session))
        } else {
            Early::Loaded(session)
        }
    }

    /// [`Sessions::validate`] for a digest whose token was already parsed
    /// and its seal checked ([`Sessions::check_token`]); the seal is not
    /// checked again here.
    ///
    /// # Errors
    /// As [`Sessions::validate`].
    pub async fn validate_id(&self, id: &SessionId) -> Result<Session, SessionError> {
        // A cache's fresh entry without a boxed future (the hot path).
        let session = match self.store.load_now(id) {
            Some(session) => session,
            None => self.store.load(id).await?.ok_or(SessionError::NotFound)?,
        };
        self.check_loaded(session).await
    }

    /// [`Sessions::validate`] for a session named by its public handle:
    /// for credentials that carry the handle rather than the token, such as
    /// the `sid` of an access token ([`crate::token_mode`]). The same checks and
    /// the same activity writes as a token.
    ///
    /// # Errors
    /// As [`Sessions::validate`].
    pub async fn validate_handle(&self, handle: &SessionHandle) -> Result<Session, SessionError> {
        let session = self
            .store
            .load_by_handle(handle)
            .await?
            .ok_or(SessionError::NotFound)?;
        self.check_loaded(session).await
    }

    /// Timeouts and activity for a session just read.
    async fn check_loaded(&self, mut session: Session) -> Result<Session, SessionError> {
        let now = self.clock.now();
        let id = &session.id.clone();
        if let Some(reason) = session.expiry(now, &self.policy) {
            // Rare: boxed, so the hot path's future stays small.
            session = Box::pin(self.confirm_expiry(&session, now, reason)).await?;
        }
        if now.since(session.last_seen_at) >= self.policy.touch_interval() {
            if !self.store.touch(id, now).await? {
                return Err(SessionError::NotFound);
            }
            session.last_seen_at = session.last_seen_at.max(now);
        }
        Ok(session)
    }

    /// The record we read says the session has expired, but that record may
    /// be stale (a cache, or another node's touch we have not seen). Deletion
    /// is therefore decided by the store on its own record; if the store
    /// disagrees, we judge its fresh record instead.
    async fn confirm_expiry(
        &self,
        stale: &Session,
        now: Timestamp,
        reason: ExpiredBy,
    ) -> Result<Session, SessionError> {
        let id = &stale.id;
        if self.store.remove_expired(id, now).await? {
            self.tell_watch(id, Some(EndReason::Expired(reason)));
            self.record_expired(stale, reason).await;
            return Err(SessionError::Expired(reason));
        }
        let fresh = self.store.load(id).await?.ok_or(SessionError::NotFound)?;
        match fresh.expiry(now, &self.policy) {
            // Expired by a policy stricter than the one it was created under.
            Some(reason) => {
                if self.store.remove(id).await?.is_some() {
                    self.tell_watch(id, Some(EndReason::Expired(reason)));
                    self.record_expired(&fresh, reason).await;
                }
                Err(SessionError::Expired(reason))
            }
            None => Ok(fresh),
        }
    }

    async fn record_expired(&self, session: &Session, reason: ExpiredBy) {
        let reason = match reason {
            ExpiredBy::Idle => "idle",
            ExpiredBy::Absolute => "absolute",
        };
        self.record_ended(
            session.user_id.as_ref(),
            Some(&session.handle),
            Actor::Timeout,
            reason,
            1,
        )
        .await;
    }

    /// Signs a user in: deletes the session presented before (if any) and
    /// issues a new token, so a token planted before login is worthless
    /// after it. Of the previous session's data, only the keys listed in
    /// [`Policy::carry_on_login`] are carried over, and only if that session
    /// was anonymous or the same user's: an attacker who planted a session
    /// chooses nothing else in the victim's.
    ///
    /// # Errors
    /// As [`Sessions::create`].
    pub async fn login(
        &self,
        previous: Option<&str>,
        new: NewSession,
    ) -> Result<Issued, SessionError> {
        let mut new = new;
        let previous = match previous {
            Some(text) => self.check_token(text).await.ok(),
            None => None,
        };
        if let Some(old) = previous {
            if let Some(old) = self.store.remove(&old.id()).await? {
                self.tell_watch(&old.id, Some(EndReason::EndedBy(Actor::User)));
                let same_user = old.user_id.is_none() || old.user_id == new.user_id;
                let live = old.expiry(self.clock.now(), &self.policy).is_none();
                if old.user_id.is_some() {
                    self.record_ended(
                        old.user_id.as_ref(),
                        Some(&old.handle),
                        Actor::User,
                        "login",
                        1,
                    )
                    .await;
                }
                if same_user && live {
                    for (key, value) in keep_keys(old.data, self.policy.carry_on_login()) {
                        new.data.entry(key).or_insert(value);
                    }
                }
            }
        }
        let issued = self.create(new).await?;
        if let (Some(max), Some(user)) = (
            self.policy.max_sessions_per_user(),
            issued.session.user_id.as_ref(),
        ) {
            self.enforce_limit(user, &issued.session, max).await?;
        }
        Ok(issued)
    }

    /// Ends the user's oldest sessions (by creation) until, with the one
    /// just created (`newest`), at most `max` are live. Only sessions older
    /// than `newest` (by creation time, then handle) are candidates, so two
    /// sign-ins at once cannot end each other: the later one wins.
    async fn enforce_limit(
        &self,
        user: &UserId,
        newest: &Session,
        max: usize,
    ) -> Result<(), SessionError> {
        let key = |s: &Session| (s.created_at, s.handle);
        // The limit counts sign-ins: a session linked to another
        // ([`NewSession::linked_to`]) is part of that one's.
        if newest.data.contains_key(LINKED_TO_KEY) {
            return Ok(());
        }
        let others: Vec<Session> = self
            .list_for_user(user)
            .await?
            .into_iter()
            .filter(|s| s.id != newest.id && !s.data.contains_key(LINKED_TO_KEY))
            .collect();
        let excess = (others.len() + 1).saturating_sub(max);
        let mut older: Vec<&Session> = others.iter().filter(|s| key(s) < key(newest)).collect();
        older.sort_by_key(|s| key(s));
        let mut ended = 0;
        for old in older.into_iter().take(excess) {
            if let Some(removed) = self.store.remove_by_handle(&old.handle, Some(user)).await? {
                self.tell_watch(&removed.id, Some(EndReason::EndedBy(Actor::Policy)));
                ended += 1;
                self.record_ended(
                    Some(user),
                    Some(&old.handle),
                    Actor::Policy,
                    "max_sessions",
                    1,
                )
                .await;
                // The rest of that sign-in goes with it.
                self.end_linked(&removed, Actor::Policy).await?;
            }
        }
        if ended > 0 {
            tracing::info!(target: "signoff::auth", user = %user, ended, "per-user session limit: ended the oldest sessions");
        }
        Ok(())
    }

    /// Issues a new token for the same session; the old token stops working
    /// at once, except that [`Sessions::logout`] with it still ends the
    /// session. [`Rotation::AfterPassword`] also records that the user just
    /// proved who they are (password re-entry, password change).
    ///
    /// # Errors
    /// [`SessionError::NotFound`] if the session is gone, or another
    /// rotation of the same token won.
    pub async fn rotate(&self, token: &str, why: Rotation) -> Result<Issued, SessionError> {
        let old = self.check_token(token).await?;
        let mut session = self.validate_id(&old.id()).await?;
        let now = self.clock.now();
        let auth_at = (why == Rotation::AfterPassword).then_some(now);
        let new = self.keys().await?.issue(now);
        if !self.store.rotate(&old.id(), &new.id(), auth_at).await? {
            // Another rotation or a logout got there first.
            return Err(SessionError::NotFound);
        }
        // Not an end: the watch follows the session to its new digest.
        self.tell_watch(&old.id(), None);
        session.id = new.id();
        session.generation += 1;
        if auth_at.is_some() {
            session.auth_at = auth_at;
        }
        Ok(Issued {
            token: new,
            session,
        })
    }

    /// After the user changed their password in this session: rotates it
    /// (recording a fresh authentication) and, with `end_others`, ends every
    /// other session of the user. Returns the new token.
    ///
    /// # Errors
    /// As [`Sessions::rotate`]; if ending the others fails, the error is
    /// returned after the rotation has happened.
    pub async fn password_changed(
        &self,
        token: &str,
        end_others: bool,
    ) -> Result<Issued, SessionError> {
        let issued = self.rotate(token, Rotation::AfterPassword).await?;
        if end_others {
            if let Some(user) = &issued.session.user_id {
                self.end_all_for_user(
                    user,
                    Some(&issued.session.id),
                    Actor::User,
                    "password_change",
                )
                .await?;
            }
        }
        Ok(issued)
    }

    /// Replaces the application's data of a session, only if nothing
    /// changed it since `session` was read; signoff's own entries
    /// ([`RESERVED_PREFIX`]) stay as the store holds them, whatever
    /// `session` (a public struct) says. `data` may repeat them unchanged
    /// (a copy of `session.data` with one entry added); a reserved entry
    /// that differs, or is new, is refused. Returns the session as written.
    ///
    /// # Errors
    /// [`SessionError::Conflict`] if it changed, [`SessionError::NotFound`]
    /// if it ended (nothing is recreated), [`SessionError::DataTooLarge`],
    /// [`SessionError::ReservedKey`] if `data` changes one of signoff's keys.
    pub async fn set_data(
        &self,
        session: &Session,
        mut data: SessionData,
    ) -> Result<Session, SessionError> {
        let stored = match self.store.load(&session.id).await? {
            Some(stored) if stored.generation == session.generation => stored,
            Some(_) => return Err(SessionError::Conflict),
            None => return Err(SessionError::NotFound),
        };
        let reserved: SessionData = stored
            .data
            .into_iter()
            .filter(|(k, _)| is_reserved_key(k))
            .collect();
        let mut repeated = Vec::new();
        for (key, value) in &data {
            if is_reserved_key(key) {
                if reserved.get(key) != Some(value) {
                    return Err(SessionError::ReservedKey(key.clone()));
                }
                repeated.push(key.clone());
            }
        }
        for key in repeated {
            data.remove(&key);
        }
        let data = with_reserved(data, reserved)?;
        self.write_data(session, data).await
    }

    /// Replaces a session's whole data, signoff's own entries included
    /// (token mode's refresh state), only if nothing changed it since
    /// `session` was read.
    pub(crate) async fn write_data(
        &self,
        session: &Session,
        data: SessionData,
    ) -> Result<Session, SessionError> {
        check_data(&data)?;
        match self
            .store
            .update_data(&session.id, session.generation, &data)
            .await?
        {
            WriteOutcome::Applied => Ok(Session {
                data,
                generation: session.generation + 1,
                ..session.clone()
            }),
            WriteOutcome::Stale => Err(SessionError::Conflict),
            WriteOutcome::Missing => Err(SessionError::NotFound),
        }
    }

    /// Takes out of the store, once, a short-lived record made with
    /// [`NewSession::anonymous`] whose data holds the key `marker` (a
    /// sign-in's pending state, a hand-over between hosts): the request
    /// that gets it is the only one. `Ok(None)` for a token the deployment
    /// did not seal (no store read), an unknown, used or expired record, and
    /// any other kind of session, which is left alone.
    ///
    /// # Errors
    /// A store error.
    pub async fn take_once(
        &self,
        token: &str,
        marker: &str,
    ) -> Result<Option<Session>, SessionError> {
        let Ok(token) = self.check_token(token).await else {
            return Ok(None);
        };
        match self.store.load(&token.id()).await? {
            Some(s) if s.user_id.is_none() && s.data.contains_key(marker) => {}
            _ => return Ok(None),
        }
        let Some(taken) = self.store.remove(&token.id()).await? else {
            return Ok(None);
        };
        Ok(taken
            .expiry(self.clock.now(), &self.policy)
            .is_none()
            .then_some(taken))
    }

    /// Signs out: deletes the session. Idempotent: an unknown, ended or
    /// malformed token is not an error, so the caller can always clear the
    /// browser. With [`LogoutBehavior::CarryData`], the listed keys move to
    /// a fresh anonymous session, whose new token is returned.
    ///
    /// A token that was rotated away ([`Sessions::rotate`]) ends the session
    /// it was rotated into, through any number of rotations, until that
    /// session's absolute expiry; then nothing is carried. A token from
    /// before [`Sessions::login`] ends nothing after it: login starts a new
    /// session, and a planted token must not sign the victim out.
    ///
    /// # Errors
    /// Only a store error: then the logout did not happen and must not be
    /// reported as done.
    pub async fn logout(&self, token: &str) -> Result<Option<Issued>, SessionError> {
        let Ok(token) = self.check_token(token).await else {
            return Ok(None);
        };
        let Some(old) = self.store.remove(&token.id()).await? else {
            // A token rotated away (by a request racing this logout, say)
            // still ends what it became. Nothing is carried: the old token
            // must not reach the successor's data.
            if let Some(ended) = self.end_successor(&token.id()).await? {
                let expired = ended.expiry(self.clock.now(), &self.policy);
                self.tell_watch(
                    &ended.id,
                    Some(expired.map_or(EndReason::Logout, EndReason::Expired)),
                );
                match expired {
                    Some(reason) => self.record_expired(&ended, reason).await,
                    None => self.record_logout(&ended, Some("rotated_token")).await,
                }
            }
            return Ok(None);
        };
        // From here on the logout has happened; nothing below may report
        // otherwise. A session that had already expired ended by timeout.
        let expired = old.expiry(self.clock.now(), &self.policy);
        self.tell_watch(
            &old.id,
            Some(expired.map_or(EndReason::Logout, EndReason::Expired)),
        );
        if let Some(reason) = expired {
            self.record_expired(&old, reason).await;
            return Ok(None);
        }
        self.record_logout(&old, None).await;
        let LogoutBehavior::CarryData(keys) = self.policy.logout() else {
            return Ok(None);
        };
        let kept = keep_keys(old.data, keys);
        if kept.is_empty() {
            return Ok(None);
        }
        let mut new = NewSession::anonymous().data(kept);
        new.user_agent = old.user_agent;
        new.ip = old.ip;
        match self.create(new).await {
            Ok(issued) => Ok(Some(issued)),
            Err(e) => {
                tracing::warn!(error = %e, "logged out, but could not carry data into a new session");
                Ok(None)
            }
        }
    }

    async fn record_logout(&self, ended: &Session, reason: Option<&str>) {
        self.record(
            |e| {
                let e = e
                    .user(ended.user_id.as_ref(), None)
                    .session(&ended.handle)
                    .by(Actor::User);
                match reason {
                    Some(r) => e.reason(r),
                    None => e,
                }
            },
            AuditKind::Logout,
        )
        .await;
    }

    /// Ends the session that the digest `old` was rotated into (found by
    /// its handle, so chains of rotations are followed), if it is still in
    /// the store; returns it.
    async fn end_successor(&self, old: &SessionId) -> Result<Option<Session>, SessionError> {
        let Some(handle) = self.store.successor(old).await? else {
            return Ok(None);
        };
        Ok(self.store.remove_by_handle(&handle, None).await?)
    }

    /// Ends the session with this token on behalf of `by`, or the one it
    /// was rotated into; returns whether there was one.
    ///
    /// # Errors
    /// [`SessionError::Token`] or a store error.
    pub async fn end(&self, token: &str, by: Actor) -> Result<bool, SessionError> {
        let token = self.check_token(token).await?;
        let removed = match self.store.remove(&token.id()).await? {
            Some(old) => Some(old),
            None => self.end_successor(&token.id()).await?,
        };
        let Some(old) = removed else {
            return Ok(false);
        };
        self.tell_watch(&old.id, Some(EndReason::EndedBy(by)));
        self.record_ended(old.user_id.as_ref(), Some(&old.handle), by, "ended", 1)
            .await;
        Ok(true)
    }

    /// Ends the session with this public handle; returns it if there was
    /// one. With `owner`, only if it is that user's (the sessions page
    /// passes the signed-in user, so nobody ends another's session by
    /// guessing a handle); `None` is for the CLI and admins.
    ///
    /// # Errors
    /// A store error.
    pub async fn end_by_handle(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
        by: Actor,
    ) -> Result<Option<Session>, SessionError> {
        self.end_handle_because(handle, owner, by, "ended").await
    }

    /// [`Sessions::end_by_handle`], recording `reason` in the audit trail.
    pub(crate) async fn end_handle_because(
        &self,
        handle: &SessionHandle,
        owner: Option<&UserId>,
        by: Actor,
        reason: &str,
    ) -> Result<Option<Session>, SessionError> {
        let ended = self.store.remove_by_handle(handle, owner).await?;
        if let Some(old) = &ended {
            self.tell_watch(&old.id, Some(EndReason::EndedBy(by)));
            self.record_ended(old.user_id.as_ref(), Some(&old.handle), by, reason, 1)
                .await;
        }
        Ok(ended)
    }

    /// For a session that has just ended (`ended`, as read before): ends
    /// the rest of its sign-in, that is the session it was linked to
    /// ([`NewSession::linked_to`]) or, if none, itself as the parent, and
    /// every other session linked to that one. Returns how many ended.
    ///
    /// Safe against a link made at the same time, if the maker checks the
    /// parent is still live after creating the linked session (and ends it
    /// if not): the parent ends first here, and the linked sessions are
    /// listed after.
    ///
    /// # Errors
    /// A store error: then some may not have ended.
    pub async fn end_linked(&self, ended: &Session, by: Actor) -> Result<usize, SessionError> {
        let Some(user) = &ended.user_id else {
            return Ok(0);
        };
        let parent = match ended.data.get(LINKED_TO_KEY) {
            Some(text) => match text.parse::<SessionHandle>() {
                Ok(h) => h,
                Err(_) => return Ok(0),
            },
            None => ended.handle,
        };
        let mut count = 0;
        if parent != ended.handle
            && self
                .end_handle_because(&parent, Some(user), by, "linked_session_ended")
                .await?
                .is_some()
        {
            count += 1;
        }
        let parent_text = parent.to_string();
        for s in self.store.list_for_user(user).await? {
            if s.handle != ended.handle
                && s.data.get(LINKED_TO_KEY) == Some(&parent_text)
                && self
                    .end_handle_because(&s.handle, Some(user), by, "linked_session_ended")
                    .await?
                    .is_some()
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Signs a user out everywhere, except the session `keep` if given, on
    /// behalf of `by` for `reason` (a short class such as
    /// `user_disabled`, recorded in the audit trail). Returns how many
    /// sessions ended. The action is recorded even when none did. On the
    /// SQL stores this is one write whatever the user's session count
    /// ([`SessionStore::end_for_user`]).
    ///
    /// # Errors
    /// A store error.
    pub async fn end_all_for_user(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
        by: Actor,
        reason: &str,
    ) -> Result<usize, SessionError> {
        let ended = self.store.end_for_user(user, keep).await;
        if let Some(watch) = &self.watch {
            // Even after an error: the end may have been written.
            watch.user_ended_here(user, EndReason::EndedBy(by));
        }
        let n = ended?;
        self.record_ended(Some(user), None, by, reason, n as u64)
            .await;
        Ok(n)
    }

    /// A user's live sessions, newest first.
    ///
    /// # Errors
    /// A store error.
    pub async fn list_for_user(&self, user: &UserId) -> Result<Vec<Session>, SessionError> {
        let now = self.clock.now();
        let mut live: Vec<Session> = self
            .store
            .list_for_user(user)
            .await?
            .into_iter()
            .filter(|s| s.expiry(now, &self.policy).is_none())
            .collect();
        live.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(a.handle.cmp(&b.handle))
        });
        Ok(live)
    }

    /// Deletes up to `limit` expired sessions; returns how many. Run it
    /// repeatedly (on any number of nodes) until it returns less than `limit`.
    ///
    /// # Errors
    /// A store error.
    pub async fn purge_expired(&self, limit: usize) -> Result<usize, SessionError> {
        let now = self.clock.now();
        let purged = self.store.purge_expired(now, limit).await?;
        for id in &purged {
            self.tell_watch(id, None);
        }
        let n = purged.len();
        if n > 0 {
            self.record_ended(None, None, Actor::Timeout, "purge", n as u64)
                .await;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_at(created: i64) -> Session {
        Session {
            id: SessionId::from_digest([1; 32]),
            handle: SessionHandle::generate(),
            user_id: None,
            created_at: Timestamp::from_millis(created),
            last_seen_at: Timestamp::from_millis(created),
            auth_at: None,
            expires_at: Timestamp::from_millis(created + 10_000),
            idle_timeout: Duration::from_secs(4),
            remembered: false,
            user_agent: None,
            ip: None,
            data: SessionData::new(),
            generation: 0,
        }
    }

    #[test]
    fn client_strings_are_cut_on_a_character_boundary() {
        let ua = "é".repeat(MAX_USER_AGENT_BYTES); // 2 bytes each
        let new = NewSession::anonymous().user_agent(ua).ip("x".repeat(1000));
        let cut_ua = new.user_agent.unwrap();
        assert!(cut_ua.len() <= MAX_USER_AGENT_BYTES);
        assert!(cut_ua.chars().all(|c| c == 'é'));
        assert_eq!(new.ip.unwrap().len(), MAX_IP_BYTES);
    }

    #[test]
    fn data_limits_count_keys_and_bytes() {
        let mut data = SessionData::new();
        for i in 0..MAX_DATA_KEYS {
            data.insert(format!("k{i}"), String::new());
        }
        assert!(check_data(&data).is_ok());
        data.insert("one more".into(), String::new());
        assert!(matches!(check_data(&data), Err(SessionError::DataTooLarge)));
        let mut big = SessionData::new();
        big.insert("k".into(), "v".repeat(MAX_DATA_BYTES - 1));
        assert!(check_data(&big).is_ok());
        big.insert("k".into(), "v".repeat(MAX_DATA_BYTES));
        assert!(check_data(&big).is_err());
    }

    #[test]
    fn expiry_uses_the_stricter_of_record_and_policy() {
        let s = session_at(0);
        let lenient = Policy::default();
        let at = Timestamp::from_millis;
        assert_eq!(s.expiry(at(3_999), &lenient), None);
        assert_eq!(s.expiry(at(4_000), &lenient), Some(ExpiredBy::Idle));
        let mut active = s.clone();
        active.last_seen_at = at(9_000);
        assert_eq!(active.expiry(at(9_999), &lenient), None);
        assert_eq!(
            active.expiry(at(10_000), &lenient),
            Some(ExpiredBy::Absolute)
        );
        let strict = Policy::builder()
            .idle_timeout(Duration::from_secs(2))
            .absolute_lifetime(Duration::from_secs(3))
            .build()
            .unwrap();
        assert_eq!(s.expiry(at(2_000), &strict), Some(ExpiredBy::Idle));
        assert_eq!(active.expiry(at(3_000), &strict), Some(ExpiredBy::Absolute));
        assert_eq!(s.deadline(), at(4_000));
        assert_eq!(active.deadline(), at(10_000));
    }

    #[test]
    fn remembered_sessions_follow_the_remember_limits_in_force() {
        use crate::policy::RememberDevice;
        let at = Timestamp::from_millis;
        let secs = Duration::from_secs;
        let ordinary = |remember: Option<RememberDevice>| {
            Policy::builder()
                .idle_timeout(secs(2))
                .absolute_lifetime(secs(5))
                .touch_interval(Duration::from_millis(100))
                .remember_device(remember)
                .build()
                .unwrap()
        };
        let on = ordinary(Some(RememberDevice::new(secs(20), secs(8))));
        let off = ordinary(None);
        let shorter = ordinary(Some(RememberDevice::new(secs(6), secs(3))));
        // Created remembered: lifetime 10 s (> 5 s), idle 4 s.
        let s = Session {
            remembered: true,
            ..session_at(0)
        };
        assert!(s.is_remembered(&on));
        assert!(!s.is_remembered(&off));
        assert_eq!(s.absolute_end(&on), at(10_000));
        assert_eq!(s.idle_limit(&on), secs(4));
        let mut active = s.clone();
        active.last_seen_at = at(9_000);
        assert_eq!(active.expiry(at(9_999), &on), None);
        assert_eq!(active.expiry(at(10_000), &on), Some(ExpiredBy::Absolute));
        assert_eq!(s.expiry(at(4_000), &on), Some(ExpiredBy::Idle));
        // Turned off: the ordinary 5 s and 2 s.
        assert_eq!(active.expiry(at(5_000), &off), Some(ExpiredBy::Absolute));
        assert_eq!(s.expiry(at(2_000), &off), Some(ExpiredBy::Idle));
        // Shortened: 6 s and 3 s.
        assert_eq!(active.expiry(at(5_999), &shorter), None);
        assert_eq!(
            active.expiry(at(6_000), &shorter),
            Some(ExpiredBy::Absolute)
        );
        assert_eq!(s.expiry(at(3_000), &shorter), Some(ExpiredBy::Idle));
        // An ordinary session is not remembered, whatever the remember
        // policy says; and one created under a longer absolute lifetime
        // than today's is cut to today's (the operator shortened it), not
        // taken for a remembered one.
        let plain = session_at(0);
        assert!(!plain.is_remembered(&on));
        assert_eq!(plain.absolute_end(&on), at(5_000));
        assert_eq!(plain.idle_limit(&on), secs(2));
        assert_eq!(plain.expiry(at(5_000), &on), Some(ExpiredBy::Absolute));
    }
}
